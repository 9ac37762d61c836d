// RedactCommandLine: a command line with its secrets masked, safe to record
// (`kato history`) or to log.
//
// The CLI masks its own command line before sending it, and the agent and the
// primary mask again whatever a client sends (defence in depth). Masked, each
// replaced by "***":
// - the value of a flag whose name says it is secret (--token, --password,
//   --secret, ... as "--flag VALUE" or "--flag=VALUE");
// - a join token (KATO1.<hex>.<hex>) anywhere;
// - the password of a URL (scheme://USER:PASSWORD@HOST) and its `password=`
//   query parameters;
// - the VALUE of a KEY=VALUE word whose KEY says it is secret (`--env
//   DB_PASSWORD=...`), and of `config set COMPONENT KEY VALUE` for such a KEY.
// Words are separated by single spaces, as the CLI joins argv. Pure; thread-safe.
#pragma once

#include <string>

namespace kato {

std::string RedactCommandLine(const std::string& command_line);

// Whether a flag or key name says its value is secret (token, password,
// passwd, secret; any case).
bool IsSecretName(const std::string& name);

}  // namespace kato
