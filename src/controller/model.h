// Plain value types shared by the controller's scheduler, health manager and API.
//
// They carry no behaviour and no I/O: the API layer fills them from the cluster
// store and from DEA heartbeats, and turns Actions into requests to DEAs.
// States are the strings the API shows, so they pass through unchanged.
#pragma once

#include <cstdint>
#include <string>

namespace kato {

// What the operator asked for: the desired state of one app.
struct AppSpec {
  std::string name;
  int instances = 1;
  int memory_mb = 256;            // limit of each instance
  std::string state = "STARTED";  // "STARTED" | "STOPPED"
  // Bumped on every change that needs new instances (bits, env, command); instances of
  // an older version are replaced.
  int64_t version = 1;

  bool operator==(const AppSpec&) const = default;
};

// One DEA node. `up` is an output of the HealthManager (from heartbeat times) and an
// input of the Scheduler.
struct DeaInfo {
  std::string node_id;
  std::string ip;
  int memory_total_mb = 0;  // memory the DEA offers to instances
  bool up = true;

  bool operator==(const DeaInfo&) const = default;
};

// One instance as a DEA reports it. The DEA chooses instance_id; it must be unique in
// the cluster and never reused.
struct InstanceReport {
  std::string instance_id;
  std::string app;
  int64_t app_version = 0;
  int index = 0;
  std::string dea_node_id;
  std::string state;  // "STARTING" | "RUNNING" | "CRASHED" | "STOPPED"
  int port = 0;
  int64_t since_ms = 0;  // wall clock time of the last state change
  int crash_count = 0;   // informational; the health manager counts crashes itself
  // The memory limit the DEA enforces for it. 0 = unknown: the health manager then
  // uses the app's current memory_mb.
  int memory_mb = 0;

  bool operator==(const InstanceReport&) const = default;
};

// A decision of the health manager, for the API layer to carry out.
struct Action {
  enum Kind { kStart, kStop };
  Kind kind = kStart;
  std::string app;
  int index = 0;
  std::string dea_node_id;
  std::string instance_id;  // kStop only: the instance to stop
  std::string reason;       // for logs and events, e.g. "DEA 127.0.0.5 stopped heartbeating"
  int64_t app_version = 0;  // kStart: the version to start (guards against a racing push)

  bool operator==(const Action&) const = default;
};

}  // namespace kato
