// The role catalog: which roles exist, which are implemented and available on
// this node, how role groups expand, the rules between roles, and which
// processes serve each role.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "supervisor/process_spec.h"
#include "common/result.h"

namespace kato {

// Every role name, in catalog order (the guide's list, then base and load_balancer).
const std::vector<std::string>& AllRoles();
bool IsRole(const std::string& name);

// Role groups: "data-services" = mysql, postgresql, redis, mongodb, rabbit, memcached, filesystem.
bool IsRoleGroup(const std::string& name);
const std::vector<std::string>& GroupMembers(const std::string& group);

// Whether a role can run on this node, and why not.
struct Availability {
  bool available = false;
  std::string reason;  // when not available, e.g. "not yet implemented in kato 0.1"
};

// Looks up what a node has (binaries on disk). Injected so tests can fake it.
class RoleEnvironment {
 public:
  virtual ~RoleEnvironment() = default;
  // An absolute path of an executable found by name in PATH and the usual
  // sbin/lib directories, or empty.
  virtual std::string FindExecutable(const std::string& name) const = 0;
  // katod's own environment variable `name`, or empty when unset.
  virtual std::string Getenv(const std::string& name) const = 0;
  // Whether a file (not an executable: a module, a library) is readable.
  virtual bool HasFile(const std::string& path) const;
};
class SystemRoleEnvironment final : public RoleEnvironment {
 public:
  std::string FindExecutable(const std::string& name) const override;
  std::string Getenv(const std::string& name) const override;
};

Availability RoleAvailability(const std::string& role, const RoleEnvironment& env);

// Expands roles and groups given by the user (`-e ROLE[,ROLE...]`, `role add`):
// unknown names are an error naming them and listing the valid ones; a group
// expands to its available members and `skipped` says which members were
// left out and why; an explicitly named role that is not available is an error
// with its reason.
struct Expansion {
  std::vector<std::string> roles;    // catalog order, no duplicates
  std::vector<std::string> skipped;  // "mongodb: no mongod binary found", ...
};
Result<Expansion> ExpandRoles(const std::vector<std::string>& names, const RoleEnvironment& env);

// Splits "a,b c" style lists: commas and spaces both separate.
std::vector<std::string> SplitRoleList(const std::vector<std::string>& args);

// `role add --all` / `--all-but X...`: every available role except load_balancer
// and primary (the primary is placed by `node setup core` only), minus `except`.
Result<Expansion> AllRolesBut(const std::vector<std::string>& except, const RoleEnvironment& env);

// The rules for a node's complete role set: base is always present;
// load_balancer excludes every other role (base aside). `primary_elsewhere` is
// true when another node of the cluster holds primary (then this node may not).
Status CheckNodeRoles(const std::set<std::string>& roles, bool primary_elsewhere);

// `kato node setup load_balancer [ROUTER_IP...] [--force]`: what it would do
// on a node at `own_ip` with `own_roles`, in a cluster of `nodes`, or why it
// must not (the node is the core, has roles other than router, a given
// address is not a router of the cluster, or is the node's own). The pool
// never holds the node's own address.
struct ClusterNodeView {
  std::string ip;
  std::vector<std::string> roles;
};
struct LoadBalancerPlan {
  std::vector<std::string> pool;          // the routers it balances over now, sorted
  bool follow_cluster = true;             // routers attached or removed later join or leave
  std::vector<std::string> remove_roles;  // "router" when the node had it
};
Result<LoadBalancerPlan> PlanLoadBalancer(const std::string& own_ip,
                                          const std::vector<std::string>& own_roles,
                                          const std::vector<ClusterNodeView>& nodes,
                                          const std::vector<std::string>& routers, bool force);

// The processes that serve `roles` on a node. Processes shared by several
// roles appear once. Order follows DESIGN.md: base, primary, controller, dea,
// data services, router.
struct NodeContext {
  std::string data_dir;  // the node's data dir (absolute)
  std::string ip;        // the node's address; servers bind only this
  std::string node_id;
  std::string katod_path;  // absolute path of the katod binary (for the primary)
};
std::vector<ProcessSpec> ProcessesForRoles(const std::set<std::string>& roles,
                                           const NodeContext& node, const RoleEnvironment& env);

// Where Debian's libnginx-mod-stream put nginx's stream module (harbor needs it), or empty.
std::string NginxStreamModule(const RoleEnvironment& env);

// The roles whose service instances `katod services` provisions (postgresql,
// mysql, redis, memcached, rabbit); a node with any of them runs it.
bool ProvisionedRole(const std::string& role);

// RabbitMQ's environment on this node: HOME (its Erlang cookie), node name,
// address, ports and file locations. The rabbitmq server runs with it, and so
// must every rabbitmqctl that talks to it.
std::map<std::string, std::string> RabbitEnv(const NodeContext& node);

// The process names of one role (for `kato role info`), without a node.
std::vector<std::string> RoleProcessNames(const std::string& role);

// Ports kato uses: for the docs' port table and for tests.
constexpr int kPrimaryPort = 9440;  // cluster state service (primary), TLS
constexpr int kAgentPort = 9441;    // node agent API, TLS
constexpr int kControllerPort = 9022;          // controller REST API, HTTP (routers front it)
constexpr int kControllerInternalPort = 9023;  // controller: droplets for DEAs, TLS
constexpr int kControllerRouterPort = 9024;    // controller REST API for routers, TLS
constexpr int kRouterHttpPort = 80;
constexpr int kRouterHttpsPort = 443;
constexpr int kRouterHealthPort = 9444;  // router: GET /health for load balancers
constexpr int kInstancePortLo = 61000;   // app instances on DEAs
constexpr int kInstancePortHi = 64999;

}  // namespace kato
