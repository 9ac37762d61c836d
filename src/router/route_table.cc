#include "router/route_table.h"

#include <algorithm>

namespace kato {

void NormalizeHost(std::string_view host, std::string* out) {
  out->clear();
  size_t end = host.size();
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close != std::string_view::npos) end = close + 1;
  } else {
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos) end = colon;
  }
  while (end > 0 && host[end - 1] == '.') --end;  // "app.example." is "app.example"
  out->reserve(end);
  for (size_t i = 0; i < end; ++i) {
    char c = host[i];
    out->push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
}

RouteTable::RouteTable(const Clock& clock) : clock_(clock), routes_(std::make_shared<Routes>()) {}

void RouteTable::Replace(const RouteMap& routes) {
  auto next = std::make_shared<Routes>();
  std::lock_guard<std::mutex> lock(mu_);
  // Carry failure marks over by backend key.
  std::unordered_map<std::string, int64_t> marks;
  for (const auto& [host, route] : routes_->hosts) {
    for (const auto& slot : route.backends) {
      int64_t until = slot->failed_until.load(std::memory_order_relaxed);
      if (until != 0) marks[slot->key] = until;
    }
  }
  std::string name;
  for (const auto& [host, backends] : routes) {
    NormalizeHost(host, &name);
    HostRoute& route = next->hosts[name];
    for (const Backend& b : backends) {
      auto slot = std::make_unique<BackendSlot>();
      slot->backend = b;
      slot->key = (b.tls ? "tls:" : "") + b.ip + ":" + std::to_string(b.port);
      auto mark = marks.find(slot->key);
      if (mark != marks.end()) slot->failed_until.store(mark->second, std::memory_order_relaxed);
      route.backends.push_back(std::move(slot));
    }
  }
  next->version = routes_->version + 1;
  routes_ = std::move(next);
  version_.store(routes_->version, std::memory_order_release);
}

std::shared_ptr<const Routes> RouteTable::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return routes_;
}

const HostRoute* RouteTable::Find(const Routes& routes, std::string_view host,
                                  std::string* scratch) {
  NormalizeHost(host, scratch);
  auto it = routes.hosts.find(std::string_view(*scratch));
  return it == routes.hosts.end() ? nullptr : &it->second;
}

int RouteTable::Pick(const HostRoute& route, uint64_t tried) const {
  size_t n = std::min<size_t>(route.backends.size(), 64);
  if (n == 0) return -1;
  uint32_t start = route.next.fetch_add(1, std::memory_order_relaxed);
  int64_t now = clock_.now().time_since_epoch().count();
  int fallback = -1;
  for (size_t i = 0; i < n; ++i) {
    size_t idx = (start + i) % n;
    if (tried & (uint64_t{1} << idx)) continue;
    int64_t until = route.backends[idx]->failed_until.load(std::memory_order_relaxed);
    if (until == 0 || until <= now) return static_cast<int>(idx);
    if (fallback < 0) fallback = static_cast<int>(idx);
  }
  return fallback;
}

void RouteTable::MarkFailed(const BackendSlot& slot) const {
  auto until = clock_.now() + kFailedFor;
  slot.failed_until.store(until.time_since_epoch().count(), std::memory_order_relaxed);
}

}  // namespace kato
