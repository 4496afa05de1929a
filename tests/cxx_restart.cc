// A C++ program whose objects outlive it: run under LD_PRELOAD with a key,
// "make" builds polymorphic objects and a table of function pointers in the
// heap and roots them; "use", in a later process, calls through them.
// Built twice (cxx_restart, cxx_restart_b with another VARIANT): the second
// is another build of the same program, which the heap must refuse.
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <memory>
#include <string>
#include <vector>

#ifndef VARIANT
#define VARIANT 1
#endif

struct Shape {
  virtual ~Shape() = default;
  virtual long area() const = 0;
  virtual std::string name() const = 0;
};

struct Rect : Shape {
  long w, h;
  Rect(long w_, long h_) : w(w_), h(h_) {}
  long area() const override { return w * h * VARIANT; }
  std::string name() const override { return "rect"; }
};

struct Square : Rect {
  explicit Square(long s) : Rect(s, s) {}
  std::string name() const override { return "square"; }
};

static long twice(long x) { return 2 * x; }
static long negate(long x) { return -x; }

struct State {
  std::vector<std::unique_ptr<Shape>> shapes;
  long (*ops[2])(long);
  long expect;
};

int main(int argc, char **argv) {
  auto set = reinterpret_cast<int (*)(const char *, const void *)>(dlsym(RTLD_DEFAULT, "shmheap_root_set"));
  auto get = reinterpret_cast<void *(*)(const char *)>(dlsym(RTLD_DEFAULT, "shmheap_root_get"));
  if (!set || !get || argc < 2) {
    std::fprintf(stderr, "cxx_restart: run with LD_PRELOAD=libshmheap.so: cxx_restart make|use\n");
    return 2;
  }
  if (!std::strcmp(argv[1], "make")) {
    auto *st = new State;
    long sum = 0;
    for (long i = 1; i <= 1000; i++) {
      if (i % 3) st->shapes.emplace_back(new Rect(i, i + 1));
      else st->shapes.emplace_back(new Square(i));
      sum += st->shapes.back()->area();
    }
    st->ops[0] = twice;
    st->ops[1] = negate;
    st->expect = sum;
    if (set("cxx.state", st)) return 3;
    std::printf("made %zu shapes, area %ld\n", st->shapes.size(), sum);
    return 0;
  }
  auto *st = static_cast<State *>(get("cxx.state"));
  if (!st) {
    std::fprintf(stderr, "cxx_restart: no root cxx.state\n");
    return 3;
  }
  long sum = 0, squares = 0;
  for (auto &s : st->shapes) {
    sum += s->area();
    squares += s->name() == "square";
  }
  long r = st->ops[1](st->ops[0](21));
  std::printf("used %zu shapes, area %ld (expected %ld), %ld squares, ops %ld\n", st->shapes.size(), sum,
              st->expect, squares, r);
  return sum == st->expect && squares == 333 && r == -42 ? 0 : 3;
}
