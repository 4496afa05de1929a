// A C++ program that is NOT linked with libshmheap: real_cxx.sh runs it with
// and without LD_PRELOAD and compares its output; real_gxx.sh compiles it
// under the preload.  It prints only deterministic results.  With
// CXX_PROG_EXPECT_SHM=1 it also checks (through dlsym, since it does not link
// the library) that its objects are in the shm heap, and exits 3 if not.
#include <dlfcn.h>
#include <stdint.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

static int (*contains)(const void *);
static int not_in_heap;

static void check(const void *p) {
  if (contains && !contains(p)) not_in_heap++;
}

struct alignas(64) Cell {
  long v[8];
};

struct Animal {
  virtual ~Animal() = default;
  virtual std::string speak() const = 0;
  virtual int legs() const { return 4; }
};
struct Dog : Animal {
  std::string name;
  explicit Dog(std::string n) : name(std::move(n)) {}
  std::string speak() const override { return name + " says woof"; }
};
struct Bird : Animal {
  std::vector<std::string> songs{"tweet", "chirp"};
  std::string speak() const override { return songs[0] + "/" + songs[1]; }
  int legs() const override { return 2; }
};

struct ParseError : std::runtime_error {
  int line;
  ParseError(const std::string &m, int l) : std::runtime_error(m), line(l) {}
};

static int parse(const std::string &s, int line) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    throw ParseError("bad number '" + s + "'", line);
  return std::stoi(s);
}

int main() {
  if (const char *e = std::getenv("CXX_PROG_EXPECT_SHM"); e && *e == '1') {
    contains = reinterpret_cast<int (*)(const void *)>(dlsym(RTLD_DEFAULT, "shmheap_contains"));
    if (!contains) {
      std::fprintf(stderr, "cxx_prog: shmheap_contains not found: not preloaded?\n");
      return 3;
    }
  }

  // STL
  std::vector<long> v(300000);
  std::iota(v.begin(), v.end(), 1);
  check(v.data());
  std::reverse(v.begin(), v.end());
  std::sort(v.begin(), v.end());
  std::printf("vector sum %ld first %ld last %ld\n", std::accumulate(v.begin(), v.end(), 0L), v.front(),
              v.back());

  std::map<std::string, std::vector<int>> m;
  for (int i = 0; i < 30000; i++) m["k" + std::to_string(i % 1000)].push_back(i);
  size_t total = 0;
  for (auto &kv : m) total += kv.second.size();
  std::printf("map keys %zu values %zu k7 %zu\n", m.size(), total, m["k7"].size());

  std::unordered_map<std::string, std::string> u;
  for (int i = 0; i < 50000; i++) u[std::to_string(i * 31)] = std::string(i % 40, 'a' + i % 26);
  size_t ulen = 0;
  for (auto &kv : u) ulen += kv.first.size() + kv.second.size();
  std::printf("unordered_map %zu bytes %zu\n", u.size(), ulen);

  std::set<std::string> words;
  std::istringstream in("the quick brown fox jumps over the lazy dog the end");
  for (std::string w; in >> w;) words.insert(w);
  std::string joined;
  for (auto &w : words) joined += w + ",";
  std::printf("set %s\n", joined.c_str());

  // alignas(64)
  int misaligned = 0;
  std::vector<std::unique_ptr<Cell>> cells;
  for (int i = 0; i < 1000; i++) {
    cells.emplace_back(new Cell());
    if (reinterpret_cast<uintptr_t>(cells.back().get()) % 64) misaligned++;
    check(cells.back().get());
  }
  Cell *arr = new Cell[33];
  if (reinterpret_cast<uintptr_t>(arr) % 64) misaligned++;
  delete[] arr;
  std::vector<Cell> vc(77);
  if (reinterpret_cast<uintptr_t>(vc.data()) % 64) misaligned++;
  std::printf("alignas(64) misaligned %d\n", misaligned);

  // virtual classes
  std::vector<std::unique_ptr<Animal>> zoo;
  for (int i = 0; i < 1000; i++) {
    if (i % 3) zoo.emplace_back(new Dog("dog" + std::to_string(i)));
    else zoo.emplace_back(new Bird());
    check(zoo.back().get());
  }
  int legs = 0;
  size_t said = 0;
  for (auto &a : zoo) {
    legs += a->legs();
    said += a->speak().size();
  }
  std::printf("zoo legs %d said %zu first '%s'\n", legs, said, zoo[1]->speak().c_str());

  // exceptions
  int errors = 0, sum = 0, lastline = 0;
  const char *inputs[] = {"12", "7", "x1", "", "40", "3.5", "100"};
  for (int rep = 0; rep < 500; rep++)
    for (int i = 0; i < 7; i++) {
      try {
        sum += parse(inputs[i], i);
      } catch (const ParseError &e) {
        errors++;
        lastline = e.line;
      }
    }
  try {
    throw std::out_of_range(std::string(200, 'o'));
  } catch (const std::exception &e) {
    std::printf("caught %zu-char what\n", std::string(e.what()).size());
  }
  std::printf("parse sum %d errors %d lastline %d\n", sum, errors, lastline);

  // threads allocate too
  std::vector<std::thread> ts;
  std::vector<size_t> res(4);
  for (int t = 0; t < 4; t++)
    ts.emplace_back([t, &res] {
      std::map<int, std::string> local;
      for (int i = 0; i < 20000; i++) local[i] = std::to_string(i * t);
      size_t n = 0;
      for (auto &kv : local) n += kv.second.size();
      res[t] = n;
    });
  for (auto &t : ts) t.join();
  std::printf("threads %zu %zu %zu %zu\n", res[0], res[1], res[2], res[3]);

  if (contains && not_in_heap) {
    std::fprintf(stderr, "cxx_prog: %d objects not in the shm heap\n", not_in_heap);
    return 3;
  }
  return misaligned ? 4 : 0;
}
