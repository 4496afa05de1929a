// Helper of check_free: double frees through the C++ operators.  NOT linked
// with libshmheap: check_free runs it with LD_PRELOAD=$SHMHEAP_LIB and a
// keyed heap, as helper_free.
//
//   helper_free_cxx ok               new and delete a few objects, exit 0
//   helper_free_cxx delete SIZE      p = new char-block object of SIZE bytes;
//                                    delete p; delete p
//   helper_free_cxx delete[] SIZE    p = new char[SIZE]; delete[] p; delete[] p
//   helper_free_cxx sized SIZE       p = operator new(SIZE);
//                                    operator delete(p, SIZE) twice
//
// Prints "ptr=0x..." before the second delete; if it returns, prints
// "survived" and exits 0 (a failure for check_free).  Exit statuses: 0 ok (or
// survived), 2 usage, 3 setup failed.
#include <sys/prctl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

// Every delete goes through it: the compiler emits the second one as written
// and does not warn about it.
template <typename T>
static __attribute__((noinline)) T *launder(T *p) {
  __asm__ volatile("" : "+r"(p));
  return p;
}

struct Small {
  char b[48];
};
struct Large {
  char b[1 << 20];
};

static void say_ptr(const void *p) {
  std::printf("ptr=%p\n", p);
  std::fflush(stdout);
}

static int survived() {
  std::printf("survived\n");
  std::fflush(stdout);
  return 0;
}

template <typename T>
static int delete_twice() {
  T *p = new T;
  std::memset(p->b, 0x5a, sizeof p->b);
  delete launder(p);
  say_ptr(p);
  delete launder(p);
  return survived();
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *mode = argv[1];
  // Nothing may allocate between the two deletes (helper_free.c says why):
  // stdout gets a static buffer, so printf allocates nothing.
  static char outbuf[4096];
  std::setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
  if (!std::strcmp(mode, "ok")) {
    for (int i = 0; i < 100; i++) {
      Small *s = new Small;
      char *a = new char[1000 + i * 500];
      delete s;
      delete[] a;
    }
    std::printf("ok\n");
    return 0;
  }
  if (argc < 3) return 2;
  size_t n = std::strtoul(argv[2], nullptr, 0);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); // the expected SIGABRT leaves no core
  if (!std::strcmp(mode, "delete")) {
    if (n == sizeof(Small)) return delete_twice<Small>();
    if (n == sizeof(Large)) return delete_twice<Large>();
    return 2;
  }
  if (!std::strcmp(mode, "delete[]")) {
    char *p = new char[n];
    std::memset(p, 0x5a, n);
    delete[] launder(p);
    say_ptr(p);
    delete[] launder(p);
    return survived();
  }
  if (!std::strcmp(mode, "sized")) {
    void *p = ::operator new(n);
    std::memset(p, 0x5a, n);
    ::operator delete(launder(p), n);
    say_ptr(p);
    ::operator delete(launder(p), n);
    return survived();
  }
  return 2;
}
