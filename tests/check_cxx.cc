// check_cxx: the 20 C++ operators new/delete of libshmheap, new_handler and
// bad_alloc, and C++ programs' use of the heap (STL, virtual classes,
// exceptions).  Linked with -lshmheap.
#include <check.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <memory>
#include <new>
#include <numeric>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "shmheap.h"
#include "testutil.h"

static size_t in_use() { return mallinfo2().uordblks; }

#define IN_HEAP(p, what) ck_assert_msg(shmheap_contains(p), "%s: %p is not in the heap", what, (void *)(p))
#define ALIGNED(p, a) ((((uintptr_t)(p)) & ((uintptr_t)(a)-1)) == 0)

static volatile size_t v_huge = (size_t)1 << 62; // more than any segment

// ---- the operators, called by name --------------------------------------

START_TEST(t_operators_plain) {
  size_t before = in_use();
  void *p;
  p = ::operator new(100);
  IN_HEAP(p, "new(size)");
  memset(p, 1, 100);
  ::operator delete(p);
  p = ::operator new[](100);
  IN_HEAP(p, "new[](size)");
  ::operator delete[](p);
  p = ::operator new(200);
  IN_HEAP(p, "new(size) for sized delete");
  ::operator delete(p, (size_t)200);
  p = ::operator new[](300);
  ::operator delete[](p, (size_t)300);
  p = ::operator new(100000);
  IN_HEAP(p, "new(100000)");
  ::operator delete(p, (size_t)100000);
  ck_assert_uint_eq(in_use(), before);
}
END_TEST

START_TEST(t_operators_nothrow) {
  size_t before = in_use();
  void *p = ::operator new(100, std::nothrow);
  IN_HEAP(p, "new(size, nothrow)");
  ::operator delete(p, std::nothrow);
  p = ::operator new[](100, std::nothrow);
  IN_HEAP(p, "new[](size, nothrow)");
  ::operator delete[](p, std::nothrow);
  ck_assert_uint_eq(in_use(), before);
}
END_TEST

START_TEST(t_operators_aligned) {
  tu_background_running(); /* the 2 MiB-aligned frees would start it, and its start allocates */
  size_t before = in_use();
  static const size_t al[] = {16, 32, 64, 128, 4096, 65536, 1 << 21};
  for (size_t a : al) {
    std::align_val_t av{a};
    void *p = ::operator new(a + 3, av);
    IN_HEAP(p, "new(size, align)");
    ck_assert_msg(ALIGNED(p, a), "new(size, align %zu) = %p", a, p);
    memset(p, 2, a + 3);
    ::operator delete(p, av);
    p = ::operator new[](a * 2, av);
    IN_HEAP(p, "new[](size, align)");
    ck_assert_msg(ALIGNED(p, a), "new[](size, align %zu) = %p", a, p);
    ::operator delete[](p, av);
    p = ::operator new(50, av, std::nothrow);
    IN_HEAP(p, "new(size, align, nothrow)");
    ck_assert(ALIGNED(p, a));
    ::operator delete(p, av, std::nothrow);
    p = ::operator new[](50, av, std::nothrow);
    IN_HEAP(p, "new[](size, align, nothrow)");
    ck_assert(ALIGNED(p, a));
    ::operator delete[](p, av, std::nothrow);
    p = ::operator new(70, av);
    ::operator delete(p, (size_t)70, av);
    p = ::operator new[](70, av);
    ::operator delete[](p, (size_t)70, av);
  }
  ck_assert_uint_eq(in_use(), before);
}
END_TEST

START_TEST(t_delete_null) {
  ::operator delete(nullptr);
  ::operator delete[](nullptr);
  ::operator delete(nullptr, std::nothrow);
  ::operator delete(nullptr, std::align_val_t{64});
  int *p = nullptr;
  delete p;
  delete[] p;
}
END_TEST

// ---- objects ----------------------------------------------------------------

struct alignas(64) Line {
  char b[64];
};
struct alignas(4096) Page {
  char b[4096];
};

START_TEST(t_alignas_objects) {
  for (int i = 0; i < 50; i++) {
    Line *l = new Line;
    ck_assert_msg(ALIGNED(l, 64), "new alignas(64) = %p", (void *)l);
    IN_HEAP(l, "new Line");
    Page *p = new Page;
    ck_assert_msg(ALIGNED(p, 4096), "new alignas(4096) = %p", (void *)p);
    IN_HEAP(p, "new Page");
    Line *la = new Line[7];
    ck_assert_msg(ALIGNED(la, 64), "new alignas(64)[] = %p", (void *)la);
    Page *pa = new Page[3];
    ck_assert_msg(ALIGNED(pa, 4096), "new alignas(4096)[] = %p", (void *)pa);
    memset(pa, 0, 3 * sizeof(Page));
    delete l;
    delete p;
    delete[] la;
    delete[] pa;
  }
  std::vector<Line> v(100);
  ck_assert(ALIGNED(v.data(), 64));
}
END_TEST

// ---- new_handler / bad_alloc / nothrow --------------------------------------

static int handler_calls;
static void handler() {
  if (++handler_calls == 5) std::set_new_handler(nullptr); // give up: next failure throws
}

START_TEST(t_new_handler_then_bad_alloc) {
  handler_calls = 0;
  std::set_new_handler(handler);
  bool thrown = false;
  try {
    void *p = ::operator new(v_huge);
    ::operator delete(p);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  std::set_new_handler(nullptr);
  ck_assert_msg(thrown, "no bad_alloc for a huge request");
  ck_assert_int_eq(handler_calls, 5);

  handler_calls = 0;
  std::set_new_handler(handler);
  thrown = false;
  try {
    void *p = ::operator new[](v_huge, std::align_val_t{64});
    ::operator delete[](p, std::align_val_t{64});
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  std::set_new_handler(nullptr);
  ck_assert_msg(thrown, "no bad_alloc for a huge aligned request");
  ck_assert_int_eq(handler_calls, 5);
}
END_TEST

static void throwing_handler() {
  handler_calls++;
  throw std::bad_alloc();
}

START_TEST(t_nothrow_returns_null) {
  ck_assert_ptr_null(::operator new(v_huge, std::nothrow));
  ck_assert_ptr_null(::operator new[](v_huge, std::nothrow));
  ck_assert_ptr_null(::operator new(v_huge, std::align_val_t{256}, std::nothrow));
  ck_assert_ptr_null(::operator new[](v_huge, std::align_val_t{256}, std::nothrow));
  /* a handler that throws: nothrow new still returns nullptr */
  handler_calls = 0;
  std::set_new_handler(throwing_handler);
  ck_assert_ptr_null(::operator new(v_huge, std::nothrow));
  std::set_new_handler(nullptr);
  ck_assert_int_eq(handler_calls, 1);
  void *p = ::operator new(10, std::nothrow);
  ck_assert_ptr_nonnull(p);
  ::operator delete(p);
}
END_TEST

// ---- programs -----------------------------------------------------------------

START_TEST(t_stl_containers) {
  size_t before = in_use();
  {
    std::vector<int> v;
    for (int i = 0; i < 200000; i++) v.push_back(i * 7 % 1000);
    IN_HEAP(v.data(), "vector");
    std::sort(v.begin(), v.end());
    ck_assert(std::is_sorted(v.begin(), v.end()));
    std::map<std::string, int> m;
    for (int i = 0; i < 20000; i++) m["key-" + std::to_string(i) + std::string(i % 50, 'x')] = i;
    ck_assert_uint_eq(m.size(), 20000);
    ck_assert_int_eq(m["key-123" + std::string(23, 'x')], 123);
    std::unordered_map<int, std::string> u;
    for (int i = 0; i < 50000; i++) u[i] = std::string(i % 100, 'a' + i % 26);
    for (int i = 0; i < 50000; i += 997) ck_assert_uint_eq(u[i].size(), (size_t)(i % 100));
    std::string s;
    for (int i = 0; i < 100000; i++) s += (char)('a' + i % 26);
    IN_HEAP(s.data(), "string");
    ck_assert_uint_eq(s.size(), 100000);
    auto sp = std::make_shared<std::vector<std::string>>(1000, "shared");
    IN_HEAP(sp.get(), "make_shared");
    auto up = std::make_unique<int[]>(5000);
    IN_HEAP(up.get(), "make_unique");
  }
  ck_assert_msg(in_use() <= before + 1024, "STL left %zu bytes allocated", in_use() - before);
}
END_TEST

struct Shape {
  virtual ~Shape() = default;
  virtual double area() const = 0;
  virtual std::string name() const = 0;
};
struct Rect : Shape {
  double w, h;
  Rect(double a, double b) : w(a), h(b) {}
  double area() const override { return w * h; }
  std::string name() const override { return "rect"; }
};
struct Circle : Shape {
  double r;
  std::vector<double> pad;
  explicit Circle(double x) : r(x), pad(10, x) {}
  double area() const override { return 3 * r * r; }
  std::string name() const override { return "circle"; }
};

START_TEST(t_virtual_classes) {
  std::vector<std::unique_ptr<Shape>> shapes;
  for (int i = 0; i < 10000; i++) {
    if (i % 2) shapes.emplace_back(new Rect(i, 2));
    else shapes.emplace_back(new Circle(i));
  }
  double total = 0;
  size_t names = 0;
  int outside = 0;
  for (auto &s : shapes) {
    outside += !shmheap_contains(s.get());
    total += s->area();
    names += s->name().size();
  }
  ck_assert_msg(outside == 0, "%d objects not in the heap", outside);
  ck_assert(total > 0);
  ck_assert_uint_eq(names, 5000 * 4 + 5000 * 6);
}
END_TEST

struct MyError : std::runtime_error {
  std::vector<int> payload;
  explicit MyError(const std::string &m) : std::runtime_error(m), payload(1000, 7) {}
};

static void thrower(int depth) {
  std::string local(100, 'z');
  if (depth == 0) throw MyError("a long message so that the exception owns a heap string: " + local);
  thrower(depth - 1);
}

START_TEST(t_exceptions) {
  size_t before = in_use();
  int caught = 0;
  for (int i = 0; i < 2000; i++) {
    try {
      thrower(i % 10);
    } catch (const MyError &e) {
      caught++;
      ck_assert_uint_eq(e.payload.size(), 1000);
      ck_assert(strncmp(e.what(), "a long message", 14) == 0);
    }
  }
  ck_assert_int_eq(caught, 2000);
  try {
    std::vector<int> v(10);
    (void)v.at(100);
  } catch (const std::out_of_range &) {
    caught++;
  }
  ck_assert_int_eq(caught, 2001);
  ck_assert_msg(in_use() <= before + 1024, "exceptions left %zu bytes allocated", in_use() - before);
}
END_TEST

// --------------------------------------------------------------------------------

static Suite *cxx_suite() {
  Suite *s = suite_create("cxx");
  TCase *tc;

  TU_TCASE(s, tc, "operators", 20);
  tcase_add_test(tc, t_operators_plain);
  tcase_add_test(tc, t_operators_nothrow);
  tcase_add_test(tc, t_operators_aligned);
  tcase_add_test(tc, t_delete_null);
  tcase_add_test(tc, t_alignas_objects);

  TU_TCASE(s, tc, "failure", 20);
  tcase_add_test(tc, t_new_handler_then_bad_alloc);
  tcase_add_test(tc, t_nothrow_returns_null);

  TU_TCASE(s, tc, "programs", 30);
  tcase_add_test(tc, t_stl_containers);
  tcase_add_test(tc, t_virtual_classes);
  tcase_add_test(tc, t_exceptions);
  return s;
}

int main() {
  tu_init();
  return tu_run_suite(cxx_suite());
}
