// The service instance: what the controller's services broker stores, what the
// service node provisions, and what a bound app instance gets (issue "Data
// services for apps").
//
// Documents in the cluster store:
//   "service/NAME"        ServiceRecord, written by the controller (create,
//                         bind, unbind, delete marks it DELETING). The service
//                         node deletes it once it has removed the instance.
//   "service_state/NAME"  ServiceState, written by the service node: whether
//                         the instance is provisioned (READY) or why not.
//
// Names of databases, users, vhosts and directories on the service node come
// from the record's random `id`, never from the user's NAME: nothing a user
// controls reaches the servers' SQL, command lines or paths.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"

namespace kato {

struct ServiceRecord {
  std::string name;   // the user's name for it (a DNS label)
  std::string type;   // postgresql | mysql | redis | memcached | rabbitmq | filesystem | harbor
  std::string id;     // 16 lowercase hex digits, random: names everything on the node
  std::string plan = "free";  // "free", or a size such as "64M" (redis, memcached)
  int plan_mb = 0;            // the plan's size in MB (0 for "free")
  std::string node_id;        // the service node that holds it
  std::string node_ip;        // and its address (the credentials' host)
  int port = 0;               // where clients connect on node_ip
  std::string username;       // empty for redis (a password only)
  std::string password;       // random, 32 hex digits
  std::string dbname;         // database (postgresql, mysql) or vhost (rabbitmq)
  std::vector<std::string> bound_apps;  // sorted
  std::string state = "ACTIVE";         // ACTIVE | DELETING
  int64_t created_ms = 0;
  std::string org;  // the organization that owns it ("": the cluster's own)
  // harbor: "tcp" or "udp". Its port is public on node_ip, forwarded to the
  // bound instances' HARBOR_PORT (the same number, inside their namespaces).
  // A harbor service has no username or password.
  std::string protocol = "tcp";
  // filesystem: the account's key pair, made by the controller. The DEAs
  // mount the service with the private half (sshfs); the node authorizes the
  // public half for the account `username` of its sshd (on `port`). Neither
  // reaches an app: VCAP_SERVICES has the mount point, not the key.
  std::string ssh_key;         // PEM
  std::string ssh_public_key;  // one authorized_keys line
  bool operator==(const ServiceRecord&) const = default;
};

std::string ServiceToJson(const ServiceRecord& s);
Result<ServiceRecord> ServiceFromJson(const std::string& text);

struct ServiceState {
  std::string id;              // the record's id it speaks of (a re-created NAME has another)
  std::string state;           // PROVISIONING | READY | FAILED
  std::string message;         // why FAILED; empty otherwise
  int64_t updated_ms = 0;
  bool operator==(const ServiceState&) const = default;
};
std::string ServiceStateToJson(const ServiceState& s);
Result<ServiceState> ServiceStateFromJson(const std::string& text);

// The types kato provisions, and the role a node needs for each
// (rabbitmq -> rabbit; the others have their own name).
const std::vector<std::string>& ServiceTypes();
bool IsServiceType(const std::string& type);
std::string RoleOfServiceType(const std::string& type);

// The credentials as Cloud Foundry's VCAP_SERVICES shows them:
// {"uri", "host", "port", "username", "password", "name"} (fields that a type
// has no use for are left out: redis has no username or name).
std::string CredentialsJson(const ServiceRecord& s);
// "postgres://USER:PASS@HOST:PORT/DB", "mysql://...", "redis://:PASS@HOST:PORT/0",
// "amqp://USER:PASS@HOST:PORT/VHOST", "memcached://USER:PASS@HOST:PORT".
std::string ServiceUri(const ServiceRecord& s);

// What a bound instance's environment gets from its services: VCAP_SERVICES
// ({"TYPE": [{"name", "label", "plan", "credentials"}...]}) and, from the
// first service of each type (in the order given), DATABASE_URL (postgresql,
// else mysql), REDIS_URL, MEMCACHE_SERVERS/MEMCACHE_USERNAME/MEMCACHE_PASSWORD,
// RABBITMQ_URL, HARBOR_PORT (the first harbor's port, to listen on), and
// STACKATO_FILESYSTEM/KATO_FILESYSTEM (the first filesystem's mount point).
std::map<std::string, std::string> ServiceEnv(const std::vector<ServiceRecord>& services);

// Where a bound instance may connect: each service's node_ip and port
// (harbor services are not connected to: they connect to the instance; a
// filesystem is mounted by the DEA, which connects to it, not the instance).
struct ServiceEndpoint {
  std::string ip;
  int port = 0;
  bool operator==(const ServiceEndpoint&) const = default;
  auto operator<=>(const ServiceEndpoint&) const = default;
};
std::vector<ServiceEndpoint> ServiceEndpoints(const std::vector<ServiceRecord>& services);

// The ACTIVE services that `app` is bound to, by name, from the "service"
// documents of `store` (what a DEA gives a starting instance).
class Store;
Result<std::vector<ServiceRecord>> BoundServices(Store& store, const std::string& app);

// Ports of per-instance servers (redis, memcached) on a service node.
constexpr int kServicePortLo = 42000;
constexpr int kServicePortHi = 42999;
// Harbor's public ports, unless `kato config set harbor port_range LO-HI`.
constexpr int kHarborPortLo = 35000;
constexpr int kHarborPortHi = 40000;
// The filesystem node's sshd (one per node, an account per service).
constexpr int kFilesystemSshPort = 9450;

// Where a bound instance sees a filesystem service: /app/fs/NAME.
std::string FilesystemMountPoint(const std::string& name);

// "fs_host/NODE_ID": the filesystem node's sshd, as its DEAs must know it to
// check the host key (written by the node's services process).
struct FsHost {
  std::string ip;
  int port = 0;
  std::string public_key;  // "ecdsa-sha2-nistp256 BASE64 COMMENT"
  bool operator==(const FsHost&) const = default;
};
std::string FsHostToJson(const FsHost& h);
Result<FsHost> FsHostFromJson(const std::string& text);

}  // namespace kato
