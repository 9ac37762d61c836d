#include "sim/simulation.h"

#include <pthread.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/fs.h"
#include "common/ipv4.h"
#include "common/log.h"
#include "common/pki.h"

namespace kato {

using json = nlohmann::json;

struct Simulation::Node {
  explicit Node(HollowNode n) : node(std::move(n)) {}
  HollowNode node;
  std::mutex mu;      // one heartbeat at a time (the schedule's or a watch's)
  bool gone = false;  // the cluster removed it; guarded by mu
  // As a DEA: its instances (from the last read of the assignments) and when
  // each was first seen; reported at once when they change, and every half
  // heartbeat interval (the controller counts a DEA down after 1.5 s without).
  json instances = json::array();
  std::map<std::string, int64_t> since_ms;
};

Status CheckSimOptions(const SimOptions& o) {
  if (o.nodes < 1 || o.nodes > 65000) return Err("--nodes must be between 1 and 65000");
  auto first = ParseIpv4(o.first_ip);
  if (!first) return Err("--first-ip: " + first.error());
  if ((*first >> 24) != 127) return Err("--first-ip must be a loopback address (127.x.y.z)");
  if ((*first & 0xffffff) + static_cast<uint32_t>(o.nodes) > 0xffffff)
    return Err("--nodes " + std::to_string(o.nodes) + " from " + o.first_ip +
               " runs past 127.255.255.255");
  if (!ParseIpv4(o.core.ip)) return Err("--core: '" + o.core.ip + "' is not an IPv4 address");
  if (auto t = ParseJoinToken(o.token); !t) return Err("--token: " + t.error());
  if (o.heartbeat_threads < 1 || o.join_threads < 1) return Err("thread counts must be positive");
  return Ok();
}

Simulation::Simulation(SimOptions options) : opt_(std::move(options)) {}

Simulation::~Simulation() { (void)Stop(); }

int Simulation::joined() const { return static_cast<int>(nodes_.size()); }

Status Simulation::SaveIdentity(const HollowNode& node) {
  if (opt_.data_dir.empty()) return Ok();
  const std::string dir = opt_.data_dir + "/" + node.ip();
  KATO_TRY(MakeDirs(dir, 0700));
  const ClientTls& c = node.credentials();
  KATO_TRY(WriteFileAtomic(dir + "/node.id", node.id() + "\n", 0644));
  KATO_TRY(WriteFileAtomic(dir + "/ca.crt", c.ca_pem, 0644));
  KATO_TRY(WriteFileAtomic(dir + "/node.crt", c.cert_pem, 0644));
  return WriteFileAtomic(dir + "/node.key", c.key_pem, 0600);
}

Status Simulation::Join(const std::function<void(int)>& progress) {
  KATO_TRY(CheckSimOptions(opt_));
  auto token = ParseJoinToken(opt_.token);
  const uint32_t first = *ParseIpv4(opt_.first_ip);
  std::vector<std::optional<HollowNode>> made(static_cast<size_t>(opt_.nodes));
  std::atomic<int> next{0}, done{0};
  std::mutex err_mu;
  std::string error;  // guarded by err_mu
  auto worker = [&] {
    for (;;) {
      {
        std::lock_guard lock(err_mu);
        if (!error.empty()) return;
      }
      int i = next.fetch_add(1);
      if (i >= opt_.nodes) return;
      auto n = HollowNode::Join(opt_.core, *token, FormatIpv4(first + static_cast<uint32_t>(i)),
                                opt_.roles);
      Status saved = n ? SaveIdentity(*n) : Status(Ok());
      if (!n || !saved) {
        std::lock_guard lock(err_mu);
        if (error.empty()) error = !n ? n.error() : saved.error();
        if (n) made[static_cast<size_t>(i)] = std::move(*n);  // joined: it must leave at Stop
        return;
      }
      made[static_cast<size_t>(i)] = std::move(*n);
      int d = done.fetch_add(1) + 1;
      if (progress && (d % std::max(1, opt_.nodes / 10) == 0)) progress(d);
    }
  };
  std::vector<std::thread> workers;
  for (int i = 0; i < std::min(opt_.join_threads, opt_.nodes); ++i) workers.emplace_back(worker);
  for (auto& w : workers) w.join();
  for (auto& m : made)
    if (m) nodes_.push_back(std::make_unique<Node>(std::move(*m)));
  if (!error.empty()) return Err(error);
  return Ok();
}

bool Simulation::WaitUntil(SteadyTime t) {
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, t, [&] { return stopping_; });
  return !stopping_;
}

void Simulation::HeartbeatLoop(int which, int threads) {
  // Node i beats at i/N of every interval: the load is even, as real nodes' is.
  // Rounds are half an interval: a node heartbeats every other one, a DEA
  // also reports its instances in each.
  const auto start = std::chrono::steady_clock::now();
  const auto n = static_cast<int64_t>(nodes_.size());
  const auto half = std::chrono::duration_cast<std::chrono::microseconds>(opt_.heartbeat) / 2;
  for (int64_t round = 0;; ++round) {
    for (int64_t i = which; i < n; i += threads) {
      auto due = start + half * round + half * i / n;
      if (!WaitUntil(due)) return;
      Node& node = *nodes_[static_cast<size_t>(i)];
      std::lock_guard lock(node.mu);
      if (node.gone) continue;
      if (round % 2 == 0) {
        auto t0 = std::chrono::steady_clock::now();
        auto s = node.node.Heartbeat();
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        int64_t prev = slowest_us_.load();
        while (us > prev && !slowest_us_.compare_exchange_weak(prev, us)) {
        }
        if (s) {
          heartbeats_.fetch_add(1);
        } else {
          errors_.fetch_add(1);
          if (s.error().find("removed") != std::string::npos) node.gone = true;
        }
      }
      if (!node.gone && node.node.is_dea() && !node.node.Report(node.instances, opt_.dea_memory_mb))
        report_errors_.fetch_add(1);
    }
  }
}

void Simulation::WatchLoop(Node& node) {
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    auto changed = node.node.Watch(opt_.watch_timeout);
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (!changed) {
      if (!WaitUntil(std::chrono::steady_clock::now() + Millis(1000))) return;  // core away
      continue;
    }
    if (!*changed) continue;
    wakeups_.fetch_add(1);
    std::lock_guard lock(node.mu);
    if (!node.gone && node.node.Heartbeat()) heartbeats_.fetch_add(1);
  }
}

void Simulation::DeaRound() {
  // One read serves every simulated DEA (a real DEA reads the same list).
  Node* reader = nullptr;
  for (auto& n : nodes_) {
    std::lock_guard lock(n->mu);
    if (!n->gone) {
      reader = n.get();
      break;
    }
  }
  if (!reader) return;
  auto list = reader->node.Assignments();
  if (!list) {
    report_errors_.fetch_add(1);
    return;
  }
  std::map<std::string, std::vector<const json*>> by_node;
  for (const auto& doc : *list) {
    if (!doc.is_object() || !doc.contains("value") || !doc["value"].is_object()) continue;
    const json& a = doc["value"];
    if (a.contains("node_id") && a["node_id"].is_string())
      by_node[a["node_id"].get<std::string>()].push_back(&a);
  }
  uint64_t running = 0;
  const int64_t now = RealClock::instance().wall_ms();
  for (auto& n : nodes_) {
    std::lock_guard lock(n->mu);
    if (n->gone || !n->node.is_dea()) continue;
    json instances = json::array();
    std::map<std::string, int64_t> since;
    for (const json* a : by_node[n->node.id()]) {
      std::string id = a->value("instance_id", "");
      if (id.empty()) continue;
      auto was = n->since_ms.find(id);
      since[id] = was == n->since_ms.end() ? now : was->second;
      int index = a->value("index", 0);
      instances.push_back({{"instance_id", id},
                           {"app", a->value("app", "")},
                           {"index", index},
                           {"version", a->value("version", static_cast<int64_t>(0))},
                           {"state", "RUNNING"},
                           {"port", 20000 + (index % 40000)},  // nothing listens: a hollow DEA
                           {"since_ms", since[id]},
                           {"memory_mb", a->value("memory_mb", 0)},
                           {"message", ""}});
    }
    running += instances.size();
    if (instances == n->instances) continue;
    n->instances = std::move(instances);
    n->since_ms = std::move(since);
    // At once: the controller confirms a placement when the DEA reports it.
    if (!n->node.Report(n->instances, opt_.dea_memory_mb)) report_errors_.fetch_add(1);
  }
  instances_ = running;
}

void Simulation::DeaLoop() {
  while (WaitUntil(std::chrono::steady_clock::now() + opt_.dea_round)) {
    bool any = false;
    for (auto& n : nodes_) {
      std::lock_guard lock(n->mu);
      if ((any = !n->gone && n->node.is_dea())) break;
    }
    if (any) DeaRound();
  }
}

void Simulation::Start() {
  // A watch thread per node, as an agent has: small stacks (a call needs little).
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_setattr_default_np(&attr);
  pthread_attr_destroy(&attr);
  // Thread `which` beats nodes which, which + threads, ...: never more threads than nodes.
  const int beaters = std::min(opt_.heartbeat_threads, static_cast<int>(nodes_.size()));
  for (int i = 0; i < beaters; ++i)
    threads_.emplace_back([this, beaters, i] { HeartbeatLoop(i, beaters); });
  threads_.emplace_back([this] { DeaLoop(); });
  for (auto& n : nodes_) threads_.emplace_back([this, node = n.get()] { WatchLoop(*node); });
}

Status Simulation::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return Ok();
    stopped_ = stopping_ = true;
  }
  cv_.notify_all();
  // Watches wait on the core: the first node's leaving wakes them all.
  std::string error;
  size_t left = 0;
  if (!nodes_.empty()) {
    if (auto s = nodes_.front()->node.Leave(); !s) error = s.error();
    left = 1;
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
  for (size_t i = left; i < nodes_.size(); ++i) {
    auto s = nodes_[i]->node.Leave();
    if (!s && error.empty()) error = s.error();
  }
  if (!error.empty()) return Err(error);
  return Ok();
}

Simulation::Stats Simulation::stats() const {
  return Stats{heartbeats_.load(), errors_.load(),
               wakeups_.load(),    static_cast<double>(slowest_us_.load()) / 1000.0,
               instances_.load(),  report_errors_.load()};
}

}  // namespace kato
