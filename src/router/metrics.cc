#include "router/metrics.h"

#include <cstdio>

namespace kato {
namespace {

// Label values in the exposition format: backslash, double quote and newline escaped.
std::string Escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

void Header(std::string& out, const char* name, const char* type, const char* help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

const char* const kErrorKinds[] = {"connect", "timeout", "reset", "malformed"};
static_assert(std::size(kErrorKinds) == static_cast<size_t>(UpstreamError::kCount));

}  // namespace

std::string_view AppOfHost(std::string_view host) { return host.substr(0, host.find('.')); }

AppStats* RouterMetrics::Shard::App(std::string_view app) {
  auto it = apps_.find(app);
  if (it != apps_.end()) return it->second.get();
  std::lock_guard lock(mu_);
  return apps_.emplace(std::string(app), std::make_unique<AppStats>()).first->second.get();
}

void RouterMetrics::Shard::Record(AppStats* app, int status, double seconds) {
  int cls = status / 100 - 1;
  if (cls >= 0 && cls < 5) app->by_class[static_cast<size_t>(cls)].Add(1);
  size_t b = 0;
  while (b < kLatencyBuckets.size() && seconds > kLatencyBuckets[b]) ++b;
  if (b < kLatencyBuckets.size()) app->buckets[b].Add(1);
  app->duration_us.Add(static_cast<uint64_t>(seconds * 1e6));
  app->count.Add(1);
}

RouterMetrics::RouterMetrics(int shards) {
  for (int i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

std::string RouterMetrics::Render(int64_t open_connections, int64_t max_connections) const {
  struct Sum {
    std::array<uint64_t, 5> by_class{};
    std::array<uint64_t, kLatencyBuckets.size()> buckets{};
    uint64_t duration_us = 0, count = 0;
  };
  std::map<std::string, Sum> apps;
  std::array<uint64_t, static_cast<int>(UpstreamError::kCount)> errors{};
  uint64_t retries = 0, received = 0, sent = 0;
  uint64_t refused = refused_.load(std::memory_order_relaxed);
  for (const auto& s : shards_) {
    {
      std::lock_guard lock(s->mu_);
      for (const auto& [name, a] : s->apps_) {
        Sum& sum = apps[name];
        for (size_t i = 0; i < 5; ++i) sum.by_class[i] += a->by_class[i].Get();
        for (size_t i = 0; i < kLatencyBuckets.size(); ++i) sum.buckets[i] += a->buckets[i].Get();
        sum.duration_us += a->duration_us.Get();
        sum.count += a->count.Get();
      }
    }
    for (size_t i = 0; i < errors.size(); ++i) errors[i] += s->upstream_errors_[i].Get();
    retries += s->retries_.Get();
    received += s->received_.Get();
    sent += s->sent_.Get();
  }

  std::string out;
  Header(out, "kato_router_requests_total", "counter",
         "Requests answered, by app and status class.");
  for (const auto& [name, sum] : apps)
    for (size_t i = 0; i < 5; ++i)
      out += "kato_router_requests_total{app=\"" + Escape(name) + "\",code=\"" +
             std::to_string(i + 1) + "xx\"} " + std::to_string(sum.by_class[i]) + "\n";
  Header(out, "kato_router_request_duration_seconds", "histogram",
         "Time from a request's header to the last byte of its answer, by app.");
  for (const auto& [name, sum] : apps) {
    std::string app = "app=\"" + Escape(name) + "\"";
    uint64_t cumulative = 0;
    for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
      cumulative += sum.buckets[i];
      out += "kato_router_request_duration_seconds_bucket{" + app + ",le=\"" +
             Num(kLatencyBuckets[i]) + "\"} " + std::to_string(cumulative) + "\n";
    }
    // Requests recorded between the reads above and this one: count is at
    // least the +Inf bucket, as the format requires.
    out += "kato_router_request_duration_seconds_bucket{" + app + ",le=\"+Inf\"} " +
           std::to_string(std::max(cumulative, sum.count)) + "\n";
    out += "kato_router_request_duration_seconds_sum{" + app + "} " +
           Num(static_cast<double>(sum.duration_us) / 1e6) + "\n";
    out += "kato_router_request_duration_seconds_count{" + app + "} " +
           std::to_string(std::max(cumulative, sum.count)) + "\n";
  }
  Header(out, "kato_router_upstream_errors_total", "counter",
         "Failed exchanges with app instances or controllers, by kind.");
  for (size_t i = 0; i < errors.size(); ++i)
    out += std::string("kato_router_upstream_errors_total{kind=\"") + kErrorKinds[i] + "\"} " +
           std::to_string(errors[i]) + "\n";
  Header(out, "kato_router_retries_total", "counter",
         "Requests sent again to another instance (or again on a fresh connection).");
  out += "kato_router_retries_total " + std::to_string(retries) + "\n";
  Header(out, "kato_router_open_connections", "gauge", "Client connections open now.");
  out += "kato_router_open_connections " + std::to_string(open_connections) + "\n";
  Header(out, "kato_router_max_connections", "gauge",
         "Client connections the router accepts at most.");
  out += "kato_router_max_connections " + std::to_string(max_connections) + "\n";
  Header(out, "kato_router_refused_connections_total", "counter",
         "Client connections refused (503) because the router was at its connection cap.");
  out += "kato_router_refused_connections_total " + std::to_string(refused) + "\n";
  Header(out, "kato_router_received_bytes_total", "counter",
         "Bytes of request bodies received from clients.");
  out += "kato_router_received_bytes_total " + std::to_string(received) + "\n";
  Header(out, "kato_router_sent_bytes_total", "counter",
         "Bytes sent to clients (response headers and bodies).");
  out += "kato_router_sent_bytes_total " + std::to_string(sent) + "\n";
  return out;
}

}  // namespace kato
