// InstanceNetwork: a network namespace per app instance, and the node's
// nftables rules that decide what an instance may reach.
//
// Each instance gets a namespace `kato-TAG-N` (TAG: 8 characters of the DEA's
// node id, N: an index unique on the host) holding one end of a veth pair as
// eth0 with the address BASE+2+N of the instance range (`kato config set dea
// instance_cidr`, default 10.254.0.0/16), and a default route via the gateway
// BASE+1, which every host-side end (`kTAG-N`) carries. Addresses are local to
// the host: traffic leaves NATed and arrives DNATed, so every node may use the
// same range, and DEAs sharing a machine split it (the index is chosen under a
// host-wide lock). Inside, only 127.0.0.1 stays local: the rest of 127/8 is
// routed to the host (route_localnet on both ends), so instances reach
// routers bound to 127.0.N.x on test clusters.
//
// Ingress: the router keeps connecting to NODE_IP:HOST_PORT; the table's
// prerouting and output hooks DNAT that to INSTANCE_IP:HOST_PORT. Egress from
// an instance (`EgressPolicy`): replies, the operator's `egress_allow` rules,
// routers and load balancers on 80/443, the resolvers on 53, its own bound
// services (instance address . service address . port), then refused:
// any cluster node, any instance, any address local to this host; anything
// else (outside the cluster) is allowed and masqueraded.
//
// The table `ip kato_TAG` and the namespaces belong to one DEA: Init() removes
// what an earlier run left (after kill -9), Shutdown() removes everything.
// Commands go through a CommandRunner (ip, nft, sysctl, nsenter). Not
// thread-safe: the DEA calls it from its one loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/ipv4.h"
#include "common/result.h"
#include "dea/command.h"
#include "services/service_model.h"

namespace kato {

struct EgressPolicy {
  std::set<std::string> nodes;    // every cluster node's IP: refused
  std::set<std::string> routers;  // routers and load balancers: 80 and 443 allowed
  std::set<std::string> dns;      // resolvers: 53 allowed
  std::vector<EgressRule> allow;  // the operator's rules, checked first
  bool operator==(const EgressPolicy&) const = default;
};

// The IPv4 nameservers of a resolv.conf text.
std::vector<std::string> Nameservers(const std::string& resolv_conf);

struct NetworkOptions {
  std::string node_id;  // TAG is derived from it
  std::string node_ip;  // the address routers connect to
  std::string instance_cidr = "10.254.0.0/16";
  std::string netns_dir = "/run/netns";  // where `ip netns` keeps its names
  std::string lock_path = "/run/kato-netns.lock";
  // Each DEA's RUN_ROOT/dea-TAG/owner names its process ("PID STARTTIME"),
  // so that a DEA can tell what DEAs that are gone left on the host.
  std::string run_root = "/run/kato";
  std::string owner;  // this DEA's "PID STARTTIME"
  // Whether the process of an owner line still runs. Unset: other DEAs'
  // leftovers are not judged (tools and tests that share a host with DEAs).
  std::function<bool(const std::string& owner)> alive;
};

// A harbor port of an instance: NODE_IP:host_port (tcp or udp) -> INSTANCE_IP:inside_port.
struct PortForward {
  int host_port = 0;
  int inside_port = 0;
  std::string protocol = "tcp";  // tcp | udp
  bool operator==(const PortForward&) const = default;
};

struct Attachment {
  int index = -1;
  std::string netns;       // namespace name
  std::string netns_path;  // for nsenter --net=
  std::string veth;        // the host-side interface
  std::string ip;          // the instance's address
  int port = 0;            // NODE_IP:port -> ip:port
  std::vector<ServiceEndpoint> services;  // its bound services: the only nodes it reaches
  std::vector<PortForward> forwards;      // its harbor ports
};

class InstanceNetwork {
 public:
  InstanceNetwork(CommandRunner& run, NetworkOptions options);

  static std::string TagOf(const std::string& node_id);
  const std::string& tag() const { return tag_; }
  std::string table() const { return "kato_" + tag_; }

  // Records this DEA as the owner of its TAG, removes what an earlier run of
  // this DEA left behind and what DEAs that are gone left (their tags are
  // returned through `swept`, for their disks), enables IPv4 forwarding and
  // installs the table with `policy`.
  Status Init(const EgressPolicy& policy, std::vector<std::string>* swept = nullptr);
  // Replaces the policy's sets atomically (nothing happens when unchanged).
  Status SetPolicy(const EgressPolicy& policy);
  // A namespace with its address and the DNAT of node_ip:port to it; the
  // instance may reach `services` (its bound services' addresses and ports,
  // on nodes it otherwise does not reach). On failure nothing is left behind.
  // `forwards` are DNATed like `port` (harbor's proxy connects to them).
  Result<Attachment> Attach(int port, const std::vector<ServiceEndpoint>& services = {},
                            const std::vector<PortForward>& forwards = {});
  // Removes the DNAT, the services it may reach and the namespace (its veth goes with it).
  Status Detach(const Attachment& a);
  // Every namespace of this DEA and its table.
  Status Shutdown();

  // Rendering, public for tests.
  std::string TableScript(const EgressPolicy& policy) const;
  std::string PolicyScript(const EgressPolicy& policy) const;

 private:
  Status RemoveLeftovers(const std::string& tag);
  Result<std::vector<std::string>> SweepDead();
  Result<int> ClaimIndex();

  CommandRunner& run_;
  NetworkOptions opt_;
  std::string tag_;
  Ipv4Net net_;
  std::string init_error_;
  std::string ip_, nft_, sysctl_, nsenter_;
  EgressPolicy policy_;
};

}  // namespace kato
