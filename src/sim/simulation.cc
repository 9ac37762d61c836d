#include "sim/simulation.h"

#include <pthread.h>

#include <algorithm>
#include <optional>

#include "common/fs.h"
#include "common/ipv4.h"
#include "common/log.h"
#include "common/pki.h"

namespace kato {

struct Simulation::Node {
  explicit Node(HollowNode n) : node(std::move(n)) {}
  HollowNode node;
  std::mutex mu;      // one heartbeat at a time (the schedule's or a watch's)
  bool gone = false;  // the cluster removed it; guarded by mu
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

void Simulation::HeartbeatLoop(int which) {
  // Node i beats at i/N of every interval: the load is even, as real nodes' is.
  const auto start = std::chrono::steady_clock::now();
  const auto n = static_cast<int64_t>(nodes_.size());
  const auto interval = std::chrono::duration_cast<std::chrono::microseconds>(opt_.heartbeat);
  for (int64_t round = 0;; ++round) {
    for (int64_t i = which; i < n; i += opt_.heartbeat_threads) {
      auto due = start + interval * round + interval * i / n;
      if (!WaitUntil(due)) return;
      Node& node = *nodes_[static_cast<size_t>(i)];
      std::lock_guard lock(node.mu);
      if (node.gone) continue;
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

void Simulation::Start() {
  // A watch thread per node, as an agent has: small stacks (a call needs little).
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_setattr_default_np(&attr);
  pthread_attr_destroy(&attr);
  for (int i = 0; i < opt_.heartbeat_threads; ++i)
    threads_.emplace_back([this, i] { HeartbeatLoop(i); });
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
  return Stats{heartbeats_.load(), errors_.load(), wakeups_.load(),
               static_cast<double>(slowest_us_.load()) / 1000.0};
}

}  // namespace kato
