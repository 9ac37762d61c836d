// CheckServiceRecord: what the service node accepts from a "service/NAME"
// document before any of it reaches a server. The controller chooses these
// values (service_model.h); the node checks them anyway, so that a record
// written by anything else cannot inject SQL, arguments or paths.
#pragma once

#include <string>

#include "common/result.h"
#include "services/service_model.h"

namespace kato {

constexpr int kMinFilesystemMb = 64;

// Ok when: id is 16 lowercase hex digits; the password 16 to 64 letters and
// digits; username and dbname exactly what the type derives from the id
// ("u"+id, "d"+id or "v"+id, or empty); the port the type's (5432, 3306,
// 5672) or, for redis and memcached, in kServicePortLo..kServicePortHi; the
// plan's memory within 1..65536 MB for redis and memcached (0: 64). A
// filesystem has no password: its username is "u"+id, its port
// kFilesystemSshPort, its size kMinFilesystemMb..65536 MB, and its public key
// one plain ecdsa-sha2-nistp256 authorized_keys line.
Status CheckServiceRecord(const ServiceRecord& s);

// The memory of a redis or memcached instance in MB (plan_mb, or 64 when 0).
int InstanceMemoryMb(const ServiceRecord& s);

// The port of a type's role-wide server (0 for types with their own processes).
int RoleWidePort(const std::string& type);

}  // namespace kato
