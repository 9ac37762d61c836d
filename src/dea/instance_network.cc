#include "dea/instance_network.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "common/fs.h"

namespace kato {
namespace {

constexpr const char* kNsPrefix = "kato-";

bool AllDigits(const std::string& s) {
  return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string Elements(const std::set<std::string>& ips) {
  std::string s;
  for (const auto& ip : ips) s += (s.empty() ? "" : ", ") + ip;
  return s;
}

std::string RuleElements(const std::vector<EgressRule>& rules) {
  std::string s;
  for (const auto& r : rules) {
    s += (s.empty() ? "" : ", ") + FormatIpv4Net(r.net) + " . " + std::to_string(r.first_port);
    if (r.last_port != r.first_port) s += "-" + std::to_string(r.last_port);
  }
  return s;
}

// Names of the entries of a directory (none when it does not exist).
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
  }
  return names;
}

// The index N of a namespace name kato-TAG-N (any TAG), or -1.
int IndexOf(const std::string& name) {
  if (name.rfind(kNsPrefix, 0) != 0) return -1;
  auto dash = name.rfind('-');
  std::string n = name.substr(dash + 1);
  if (dash <= 5 || !AllDigits(n)) return -1;
  return std::stoi(n);
}

}  // namespace

std::vector<std::string> Nameservers(const std::string& resolv_conf) {
  std::vector<std::string> out;
  std::istringstream in(resolv_conf);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string key, value;
    if (words >> key >> value && key == "nameserver" && ParseIpv4(value)) out.push_back(value);
  }
  return out;
}

std::string InstanceNetwork::TagOf(const std::string& node_id) {
  std::string tag;
  for (char c : node_id)
    if (std::isxdigit(static_cast<unsigned char>(c)) && tag.size() < 8)
      tag += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (tag.size() < 8) tag += '0';
  return tag;
}

InstanceNetwork::InstanceNetwork(CommandRunner& run, NetworkOptions options)
    : run_(run), opt_(std::move(options)), tag_(TagOf(opt_.node_id)) {
  auto net = ParseIpv4Net(opt_.instance_cidr);
  if (!net) {
    init_error_ = "dea instance_cidr: " + net.error();
  } else if (net->prefix > 29) {
    init_error_ = "dea instance_cidr " + opt_.instance_cidr + " is too small (at most /29)";
  } else {
    net_ = *net;
  }
  if (!ParseIpv4(opt_.node_ip))
    init_error_ = "the node's address '" + opt_.node_ip + "' is not IPv4";
  ip_ = FindTool("ip");
  nft_ = FindTool("nft");
  sysctl_ = FindTool("sysctl");
  nsenter_ = FindTool("nsenter");
  for (auto [path, pkg] : {std::pair{&ip_, "iproute2"},
                           {&nft_, "nftables"},
                           {&sysctl_, "procps"},
                           {&nsenter_, "util-linux"}})
    if (path->empty() && init_error_.empty())
      init_error_ = std::string(
                        "instances need their own network namespace, and a tool for it "
                        "is missing: apt-get install ") +
                    pkg;
}

std::string InstanceNetwork::TableScript(const EgressPolicy& p) const {
  std::string t = table(), veths = "\"k" + tag_ + "-*\"";
  std::string gw = FormatIpv4(net_.base + 1);
  std::ostringstream s;
  s << "table ip " << t << " {\n"
    << "  set nodes { type ipv4_addr; flags interval; }\n"
    << "  set routers { type ipv4_addr; flags interval; }\n"
    << "  set dns { type ipv4_addr; flags interval; }\n"
    << "  set instance_nets { type ipv4_addr; flags interval; elements = { " << FormatIpv4Net(net_)
    << " } }\n"
    << "  set allow { type ipv4_addr . inet_service; flags interval; }\n"
    << "  set bound { type ipv4_addr . ipv4_addr . inet_service; }\n"
    << "  map ports { type ipv4_addr . inet_service : ipv4_addr . inet_service; }\n"
    << "  map uports { type ipv4_addr . inet_service : ipv4_addr . inet_service; }\n"
    // Routers reach NODE_IP:PORT, from this host (output) or another (prerouting).
    << "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n"
    << "    dnat ip to ip daddr . tcp dport map @ports\n"
    << "    dnat ip to ip daddr . udp dport map @uports\n  }\n"
    << "  chain output {\n    type nat hook output priority -100; policy accept;\n"
    << "    dnat ip to ip daddr . tcp dport map @ports\n"
    << "    dnat ip to ip daddr . udp dport map @uports\n  }\n"
    // 127.0.0.1 is the instance's own loopback: a client on it gets the gateway's address.
    << "  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n"
    << "    oifname " << veths << " ip saddr 127.0.0.1 snat to " << gw << "\n"
    << "    iifname " << veths << " oifname != " << veths << " masquerade\n  }\n"
    << "  chain input {\n    type filter hook input priority 0; policy accept;\n"
    << "    iifname " << veths << " jump egress\n  }\n"
    << "  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
    << "    iifname " << veths << " jump egress\n"
    << "    oifname " << veths << " ct status dnat accept\n"
    << "    oifname " << veths << " ct state established,related accept\n"
    << "    oifname " << veths << " reject\n  }\n"
    << "  chain egress {\n"
    << "    ct state established,related accept\n"
    << "    meta l4proto { tcp, udp } ip daddr . th dport @allow accept\n"
    << "    ip daddr @routers tcp dport { 80, 443 } accept\n"
    << "    ip daddr @dns meta l4proto { tcp, udp } th dport 53 accept\n"
    << "    ip saddr . ip daddr . tcp dport @bound accept\n"
    << "    ip daddr @nodes reject\n"
    << "    ip daddr @instance_nets reject\n"
    << "    fib daddr type local reject\n"
    << "  }\n}\n";
  return s.str() + PolicyScript(p);
}

std::string InstanceNetwork::PolicyScript(const EgressPolicy& p) const {
  std::string t = "ip " + table();
  std::string s;
  auto set = [&](const char* name, const std::string& elements) {
    s += "flush set " + t + " " + name + "\n";
    if (!elements.empty()) s += "add element " + t + " " + name + " { " + elements + " }\n";
  };
  set("nodes", Elements(p.nodes));
  set("routers", Elements(p.routers));
  set("dns", Elements(p.dns));
  set("allow", RuleElements(p.allow));
  return s;
}

Status InstanceNetwork::RemoveLeftovers(const std::string& tag) {
  std::string mine = kNsPrefix + tag + "-";
  for (const auto& name : ListDir(opt_.netns_dir))
    if (name.rfind(mine, 0) == 0) KATO_TRY(run_.Run({ip_, "netns", "del", name}));
  auto links = run_.Run({ip_, "-o", "link", "show"});
  if (!links) return Err(links.error());
  std::istringstream in(*links);
  for (std::string line; std::getline(in, line);) {
    // "12: kTAG-3@if2: <...>"
    auto a = line.find(": ");
    if (a == std::string::npos) continue;
    std::string name = line.substr(a + 2, line.find_first_of("@:", a + 2) - (a + 2));
    if (name.rfind("k" + tag + "-", 0) != 0) continue;
    // A veth goes with its namespace, asynchronously: gone meanwhile is fine.
    if (auto del = run_.Run({ip_, "link", "del", name});
        !del && run_.Run({ip_, "link", "show", name}))
      return Err(del.error());
  }
  if (run_.Run({nft_, "list", "table", "ip", "kato_" + tag}))
    KATO_TRY(run_.Run({nft_, "delete", "table", "ip", "kato_" + tag}));
  return Ok();
}

Result<std::vector<std::string>> InstanceNetwork::SweepDead() {
  if (!opt_.alive) return std::vector<std::string>();  // not asked to judge other DEAs
  // Every tag with something of ours on the host: namespaces, tables, run dirs.
  std::set<std::string> tags;
  for (const auto& name : ListDir(opt_.netns_dir))
    if (name.rfind(kNsPrefix, 0) == 0 && name.size() > 14 && name[13] == '-' && IndexOf(name) >= 0)
      tags.insert(name.substr(5, 8));
  if (auto tables = run_.Run({nft_, "list", "tables"}); tables) {
    std::istringstream in(*tables);
    for (std::string line; std::getline(in, line);)
      if (auto at = line.find("table ip kato_"); at != std::string::npos && line.size() >= at + 22)
        tags.insert(line.substr(at + 14, 8));
  }
  for (const auto& name : ListDir(opt_.run_root))
    if (name.size() == 12 && name.rfind("dea-", 0) == 0) tags.insert(name.substr(4));
  std::vector<std::string> swept;
  for (const auto& tag : tags) {
    if (tag == tag_ || tag.find_first_not_of("0123456789abcdef") != std::string::npos) continue;
    auto owner = ReadFile(opt_.run_root + "/dea-" + tag + "/owner");
    // A DEA writes its owner line before it makes anything: without one, or
    // with one whose process is gone, what the tag holds is left over.
    if (owner && opt_.alive(*owner)) continue;
    KATO_TRY(RemoveLeftovers(tag));
    swept.push_back(tag);
  }
  return swept;
}

Status InstanceNetwork::Init(const EgressPolicy& policy, std::vector<std::string>* swept) {
  if (!init_error_.empty()) return Err(init_error_);
  std::string dir = opt_.run_root + "/dea-" + tag_;
  KATO_TRY(MakeDirs(dir, 0755));
  KATO_TRY(WriteFileAtomic(dir + "/owner", opt_.owner + "\n", 0644));
  KATO_TRY(RemoveLeftovers(tag_));
  auto dead = SweepDead();
  if (!dead) return Err(dead.error());
  if (swept) *swept = *dead;
  // Egress beyond this host is forwarded (and masqueraded), as container runtimes do.
  KATO_TRY(run_.Run({sysctl_, "-q", "-w", "net.ipv4.ip_forward=1"}));
  KATO_TRY(run_.Run({nft_, "-f", "-"}, TableScript(policy)));
  policy_ = policy;
  return Ok();
}

Status InstanceNetwork::SetPolicy(const EgressPolicy& policy) {
  if (policy == policy_) return Ok();
  KATO_TRY(run_.Run({nft_, "-f", "-"}, PolicyScript(policy)));
  policy_ = policy;
  return Ok();
}

Result<int> InstanceNetwork::ClaimIndex() {
  // The index decides the address: unique on the host, so DEAs sharing it
  // choose under one lock, from the names `ip netns` keeps.
  int fd = ::open(opt_.lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Err("cannot open " + opt_.lock_path + ": " + std::strerror(errno));
  while (::flock(fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  std::set<int> used;
  for (const auto& name : ListDir(opt_.netns_dir))
    if (int i = IndexOf(name); i >= 0) used.insert(i);
  int capacity = static_cast<int>(std::min<uint32_t>(net_.size() - 3, 1u << 20));
  int index = 0;
  while (used.count(index)) ++index;
  Result<int> out = index;
  if (index >= capacity) {
    out =
        Err("the instance range " + FormatIpv4Net(net_) + " is full (" + std::to_string(capacity) +
            " instances on this host); give a larger one with `kato "
            "config set dea instance_cidr`");
  } else if (auto r =
                 run_.Run({ip_, "netns", "add", kNsPrefix + tag_ + "-" + std::to_string(index)});
             !r) {
    out = Err(r.error());
  }
  ::close(fd);  // releases the lock
  return out;
}

namespace {
// The elements of the `bound` set for one instance.
std::string BoundElements(const Attachment& a) {
  std::string e;
  for (const auto& s : a.services)
    e += (e.empty() ? "" : ", ") + a.ip + " . " + s.ip + " . " + std::to_string(s.port);
  return "{ " + e + " }";
}
// "{ NODE_IP . HOST_PORT : INSTANCE_IP . INSIDE_PORT }" of a forward (`with_target`), or its key.
std::string ForwardElement(const std::string& node_ip, const Attachment& a, const PortForward& f,
                           bool with_target) {
  std::string e = "{ " + node_ip + " . " + std::to_string(f.host_port);
  if (with_target) e += " : " + a.ip + " . " + std::to_string(f.inside_port);
  return e + " }";
}
}  // namespace

Result<Attachment> InstanceNetwork::Attach(int port, const std::vector<ServiceEndpoint>& services,
                                           const std::vector<PortForward>& forwards) {
  if (!init_error_.empty()) return Err(init_error_);
  auto index = ClaimIndex();
  if (!index) return Err(index.error());
  Attachment a;
  a.index = *index;
  a.port = port;
  a.netns = kNsPrefix + tag_ + "-" + std::to_string(a.index);
  a.netns_path = opt_.netns_dir + "/" + a.netns;
  a.veth = "k" + tag_ + "-" + std::to_string(a.index);
  a.ip = FormatIpv4(net_.base + 2 + static_cast<uint32_t>(a.index));
  for (const auto& e : services)
    if (ParseIpv4(e.ip) && e.port > 0 && e.port < 65536) a.services.push_back(e);
  for (const auto& f : forwards)
    if (f.host_port > 0 && f.host_port < 65536 && f.inside_port > 0 && f.inside_port < 65536 &&
        (f.protocol == "tcp" || f.protocol == "udp"))
      a.forwards.push_back(f);
  std::string gw = FormatIpv4(net_.base + 1);
  auto setup = [&]() -> Status {
    KATO_TRY(run_.Run({ip_, "-batch", "-"},
                      "link add " + a.veth + " type veth peer name eth0 netns " + a.netns + "\n" +
                          "addr add " + gw + "/32 dev " + a.veth + "\n" + "link set " + a.veth +
                          " up\n" + "route add " + a.ip + "/32 dev " + a.veth + "\n"));
    // -e: hosts without IPv6 have no such key. IPv6 is off on both ends: the
    // table filters IPv4 only, and link-local addresses would bypass it.
    KATO_TRY(run_.Run({sysctl_, "-q", "-e", "-w", "net.ipv4.conf." + a.veth + ".route_localnet=1",
                       "net.ipv6.conf." + a.veth + ".disable_ipv6=1"}));
    KATO_TRY(run_.Run({ip_, "-n", a.netns, "-batch", "-"},
                      "link set lo up\naddr del 127.0.0.1/8 dev lo\naddr add 127.0.0.1/32 dev lo\n"
                      "addr add " +
                          a.ip + "/32 dev eth0\nlink set eth0 up\n" + "route add " + gw +
                          " dev eth0\n" + "route add default via " + gw + " dev eth0\n" +
                          "route add 127.0.0.0/8 via " + gw + " dev eth0\n"));
    KATO_TRY(
        run_.Run({nsenter_, "--net=" + a.netns_path, sysctl_, "-q", "-e", "-w",
                  "net.ipv4.conf.eth0.route_localnet=1", "net.ipv6.conf.eth0.disable_ipv6=1"}));
    KATO_TRY(run_.Run({nft_, "add", "element", "ip", table(), "ports",
                       "{ " + opt_.node_ip + " . " + std::to_string(port) + " : " + a.ip + " . " +
                           std::to_string(port) + " }"}));
    if (!a.services.empty())
      KATO_TRY(run_.Run({nft_, "add", "element", "ip", table(), "bound", BoundElements(a)}));
    for (const auto& f : a.forwards)
      KATO_TRY(run_.Run({nft_, "add", "element", "ip", table(), f.protocol == "udp" ? "uports" : "ports",
                         ForwardElement(opt_.node_ip, a, f, true)}));
    return Ok();
  };
  if (auto s = setup(); !s) {
    (void)run_.Run({ip_, "netns", "del", a.netns});
    return Err("cannot set up the instance's network: " + s.error());
  }
  return a;
}

Status InstanceNetwork::Detach(const Attachment& a) {
  if (a.index < 0) return Ok();
  auto dnat = run_.Run({nft_, "delete", "element", "ip", table(), "ports",
                        "{ " + opt_.node_ip + " . " + std::to_string(a.port) + " }"});
  Result<std::string> bound = std::string();
  for (const auto& f : a.forwards)
    if (auto r = run_.Run({nft_, "delete", "element", "ip", table(),
                           f.protocol == "udp" ? "uports" : "ports",
                           ForwardElement(opt_.node_ip, a, f, false)});
        !r)
      bound = r;
  if (!a.services.empty())
    bound = run_.Run({nft_, "delete", "element", "ip", table(), "bound", BoundElements(a)});
  auto ns = run_.Run({ip_, "netns", "del", a.netns});
  if (!ns) return Err(ns.error());
  if (!dnat) return Err(dnat.error());
  if (!bound) return Err(bound.error());
  return Ok();
}

Status InstanceNetwork::Shutdown() {
  if (!init_error_.empty()) return Ok();
  KATO_TRY(RemoveLeftovers(tag_));
  ::unlink((opt_.run_root + "/dea-" + tag_ + "/owner").c_str());
  ::rmdir((opt_.run_root + "/dea-" + tag_).c_str());  // unless disks still have mount points there
  return Ok();
}

}  // namespace kato
