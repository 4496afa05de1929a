// Input of the g++ row of make bench: a translation unit that includes much
// of the standard library and instantiates its templates, as application
// code does, so that cc1plus builds and frees large numbers of trees and
// other objects.  It is only compiled (g++ -O1 -c), never run.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

namespace bench {

struct Order {
  std::string customer;
  std::vector<std::pair<std::string, double>> lines;
  std::optional<std::string> note;
  std::chrono::system_clock::time_point when;
};

using Value = std::variant<long, double, std::string, std::vector<long>>;

template <typename K, typename V>
std::map<V, std::vector<K>> invert(const std::unordered_map<K, V> &m) {
  std::map<V, std::vector<K>> out;
  for (const auto &[k, v] : m) out[v].push_back(k);
  for (auto &[v, ks] : out) std::sort(ks.begin(), ks.end());
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= s.size(); i++)
    if (i == s.size() || s[i] == sep) {
      out.emplace_back(s.substr(start, i - start));
      start = i + 1;
    }
  return out;
}

std::map<std::string, double> totals(const std::vector<Order> &orders) {
  std::map<std::string, double> t;
  for (const auto &o : orders)
    t[o.customer] += std::accumulate(o.lines.begin(), o.lines.end(), 0.0,
                                     [](double a, const auto &l) { return a + l.second; });
  return t;
}

std::vector<std::string> grep(const std::vector<std::string> &lines, const std::string &needle) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return s;
  };
  std::vector<std::string> out;
  std::copy_if(lines.begin(), lines.end(), std::back_inserter(out),
               [&](const std::string &l) { return lower(l).find(lower(needle)) != std::string::npos; });
  return out;
}

std::string describe(const Value &v) {
  return std::visit(
      [](const auto &x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        std::ostringstream os;
        if constexpr (std::is_same_v<T, std::vector<long>>) {
          os << '[';
          for (auto e : x) os << e << ',';
          os << ']';
        } else {
          os << std::setprecision(6) << x;
        }
        return os.str();
      },
      v);
}

std::vector<Order> load(const std::filesystem::path &p) {
  std::ifstream in(p);
  std::vector<Order> orders;
  std::string line;
  while (std::getline(in, line)) {
    auto f = split(line, ';');
    if (f.size() < 2) continue;
    Order o;
    o.customer = f[0];
    for (std::size_t i = 1; i + 1 < f.size(); i += 2) o.lines.emplace_back(f[i], std::stod(f[i + 1]));
    if (f.size() % 2 == 0) o.note = f.back();
    o.when = std::chrono::system_clock::now();
    orders.push_back(std::move(o));
  }
  return orders;
}

std::unordered_map<std::string, std::set<std::string>> by_product(const std::vector<Order> &orders) {
  std::unordered_map<std::string, std::set<std::string>> m;
  for (const auto &o : orders)
    for (const auto &l : o.lines) m[l.first].insert(o.customer);
  return m;
}

double parallel_sum(const std::vector<double> &v) {
  std::size_t half = v.size() / 2;
  double a = 0;
  std::thread t([&] { a = std::accumulate(v.begin(), v.begin() + half, 0.0); });
  double b = std::accumulate(v.begin() + half, v.end(), 0.0);
  t.join();
  return a + b;
}

std::vector<double> sample(std::size_t n, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> d(10.0, 2.5);
  std::vector<double> v(n);
  std::generate(v.begin(), v.end(), [&] { return d(gen); });
  return v;
}

class Registry {
 public:
  using Handler = std::function<Value(const std::vector<Value> &)>;
  void add(std::string name, Handler h) {
    std::lock_guard<std::mutex> g(mu_);
    handlers_.emplace(std::move(name), std::move(h));
  }
  std::optional<Value> call(const std::string &name, const std::vector<Value> &args) const {
    std::lock_guard<std::mutex> g(mu_);
    auto it = handlers_.find(name);
    if (it == handlers_.end()) return std::nullopt;
    return it->second(args);
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, Handler> handlers_;
};

template <typename T>
std::deque<T> window(const std::list<T> &in, std::size_t n) {
  std::deque<T> d;
  for (const auto &x : in) {
    d.push_back(x);
    if (d.size() > n) d.pop_front();
  }
  return d;
}

int report(const std::filesystem::path &p) {
  auto orders = load(p);
  auto t = totals(orders);
  std::unordered_map<std::string, double> flat(t.begin(), t.end());
  auto inv = invert(flat);
  auto prods = by_product(orders);
  std::vector<std::string> names;
  for (const auto &[k, v] : prods) names.push_back(k + ":" + std::to_string(v.size()));
  auto hits = grep(names, "A1");
  std::unordered_set<std::string> seen(hits.begin(), hits.end());
  std::list<long> ids;
  for (std::size_t i = 0; i < orders.size(); i++) ids.push_back(long(i));
  auto w = window(ids, 10);
  Registry r;
  r.add("sum", [](const std::vector<Value> &a) -> Value {
    long s = 0;
    for (const auto &v : a)
      if (auto p = std::get_if<long>(&v)) s += *p;
    return s;
  });
  r.add("cat", [](const std::vector<Value> &a) -> Value {
    std::string s;
    for (const auto &v : a) s += describe(v);
    return s;
  });
  auto res = r.call("cat", {Value(1L), Value(2.5), Value(std::string("x")), Value(std::vector<long>{1, 2})});
  std::cout << (res ? describe(*res) : std::string("none")) << ' ' << inv.size() << ' ' << seen.size() << ' '
            << w.size() << ' ' << parallel_sum(sample(1000, 7)) << '\n';
  std::thread th([&] { std::cout << std::quoted(p.string()) << '\n'; });
  th.join();
  return 0;
}

}  // namespace bench

int main(int argc, char **argv) { return argc > 1 ? bench::report(argv[1]) : 1; }
