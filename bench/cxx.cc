// C++ workload for make bench: what an ordinary C++ program asks of the
// allocator through operator new and delete.  Linked with no allocator:
// bench/run.sh preloads each one in turn.  Fixed work; prints
// "seconds peak_rss_kib" as bench/workloads does.
//
// One loop mixes, with lifetimes that overlap the way they do in a program
// that keeps a model and edits it:
//   a scene of polymorphic objects of four classes (16 B .. a few hundred B,
//   some owning a vector or a string), replaced at random through
//   unique_ptr, so each delete goes through a virtual destructor;
//   strings built by appending and concatenating, most beyond the
//   small-string buffer;
//   vectors grown by push_back without reserve;
//   a std::map keyed by strings and a std::unordered_map, churned by insert
//   and erase around a steady size;
//   a std::list grown at both ends, with elements erased from the middle.
// A checksum of the results goes to a volatile, so nothing is optimised out.
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

std::uint64_t rng_state = 0x2545f4914f6cdd1dULL;
inline std::uint64_t rnd() {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

struct Shape {
  virtual ~Shape() = default;
  virtual double area() const = 0;
};

struct Circle final : Shape {
  double r;
  explicit Circle(double r_) : r(r_) {}
  double area() const override { return 3.14159 * r * r; }
};

struct Rect final : Shape {
  double x, y, w, h;
  Rect(double w_, double h_) : x(0), y(0), w(w_), h(h_) {}
  double area() const override { return w * h; }
};

struct Poly final : Shape {
  struct Pt {
    double x, y;
  };
  std::vector<Pt> pts;  // grown one point at a time, as a parser would
  explicit Poly(unsigned n) {
    for (unsigned i = 0; i < n; i++) pts.push_back({double(i), double(i * i % 7)});
  }
  double area() const override {
    double a = 0;
    for (std::size_t i = 0, n = pts.size(); i < n; i++) {
      const Pt &p = pts[i], &q = pts[(i + 1) % n];
      a += p.x * q.y - q.x * p.y;
    }
    return a / 2;
  }
};

struct Label final : Shape {
  std::string text;
  explicit Label(std::string t) : text(std::move(t)) {}
  double area() const override { return double(text.size()); }
};

std::unique_ptr<Shape> make_shape(std::uint64_t r) {
  switch (r % 4) {
    case 0: return std::make_unique<Circle>(double(r % 100));
    case 1: return std::make_unique<Rect>(double(r % 13), double(r % 17));
    case 2: return std::make_unique<Poly>(3 + unsigned(r >> 8) % 24);
    default: return std::make_unique<Label>(std::string(1 + (r >> 8) % 90, char('a' + r % 26)));
  }
}

// A name of 20..80 characters built the way log lines and keys are.
std::string make_name(std::uint64_t r) {
  std::string s = "object/";
  s += std::to_string(r % 100000);
  s += '/';
  for (unsigned i = 0, n = unsigned(r >> 20) % 6; i < n; i++) s += "segment" + std::to_string(i);
  return s;
}

volatile double sink;

void work() {
  enum { ROUNDS = 300000, SCENE = 20000, MAP_SIZE = 20000, HASH_SIZE = 50000 };
  std::vector<std::unique_ptr<Shape>> scene(SCENE);
  std::map<std::string, std::uint64_t> by_name;
  std::unordered_map<std::uint64_t, std::string> by_id;
  std::list<std::uint64_t> queue;
  double sum = 0;

  for (long i = 0; i < ROUNDS; i++) {
    std::uint64_t r = rnd();

    // replace two objects of the scene
    for (int k = 0; k < 2; k++) {
      std::uint64_t q = rnd();
      auto &slot = scene[q % SCENE];
      if (slot) sum += slot->area();
      slot = make_shape(q >> 16);
    }

    // a string map with a steady population: insert one, erase one
    std::string name = make_name(r);
    by_name[name] = r;
    if (by_name.size() > MAP_SIZE) {
      auto it = by_name.lower_bound(make_name(rnd()));
      if (it == by_name.end()) it = by_name.begin();
      sum += double(it->second & 0xff);
      by_name.erase(it);
    }

    // a hash map of records
    by_id.emplace(r % (4 * HASH_SIZE), name.substr(0, 8 + r % 24) + "#record");
    if (by_id.size() > HASH_SIZE) by_id.erase(rnd() % (4 * HASH_SIZE));

    // a queue that grows at the back and is worked from the front and middle
    queue.push_back(r);
    if (r & 1) queue.push_front(r >> 1);
    if (queue.size() > 5000) {
      auto it = queue.begin();
      for (unsigned s = unsigned(r >> 40) % 32; s && it != queue.end(); s--) ++it;
      if (it != queue.end()) queue.erase(it);
      queue.pop_front();
    }

    // temporaries: a vector grown element by element, and a joined string
    if (i % 16 == 0) {
      std::vector<std::uint64_t> v;
      for (unsigned n = 0, len = unsigned(r >> 24) % 2048; n < len; n++) v.push_back(n ^ r);
      std::vector<std::string> parts;
      for (unsigned n = 0; n < 12; n++) parts.push_back(make_name(r + n));
      std::string joined;
      for (const auto &p : parts) joined += p + ",";
      sum += double(v.size() + joined.size());
    }
  }
  for (const auto &s : scene)
    if (s) sum += s->area();
  sink = sum + double(by_name.size() + by_id.size() + queue.size());
}

}  // namespace

int main() {
  auto t0 = std::chrono::steady_clock::now();
  work();
  std::chrono::duration<double> t = std::chrono::steady_clock::now() - t0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  std::printf("%.4f %ld\n", t.count(), ru.ru_maxrss);
  return 0;
}
