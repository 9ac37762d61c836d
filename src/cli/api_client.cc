#include "cli/api_client.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <map>

#include "cli/login_file.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/layout.h"
#include "common/pki.h"
#include "common/unix_socket.h"

namespace kato {

using json = nlohmann::json;

// Asks the agent; progress goes to stderr so that --json keeps stdout to one document.
Result<json> Ask(const Globals& g, const std::string& cmd, const json& args, Millis wait) {
  DataLayout layout{g.data_dir};
  auto fd = UnixConnect(layout.socket());
  if (!fd)
    return Err("cannot reach the node agent at " + layout.socket() + " (" + fd.error() +
               "): is katod running? Start it with `katod --data-dir " + g.data_dir +
               "`, or point kato at its data dir with --data-dir or KATO_DATA_DIR");
  json req{{"cmd", cmd}, {"args", args}, {"command", g.command_line}};
  if (auto s = WriteAll(*fd, req.dump() + "\n"); !s) {
    ::close(*fd);
    return Err("cannot talk to the node agent: " + s.error());
  }
  std::string buffer;
  for (;;) {
    auto line = ReadLine(*fd, buffer, 64 << 20, wait);
    if (!line) {
      ::close(*fd);
      return Err("no answer from the node agent (" + line.error() + "); see its log");
    }
    json j = json::parse(*line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    if (j.contains("progress")) {
      if (!g.json_out) std::cerr << "  " << j["progress"].get<std::string>() << "\n";
      continue;
    }
    ::close(*fd);
    if (j.value("ok", false)) return j.contains("result") ? j["result"] : json(nullptr);
    return Err(j.value("error", std::string("the node agent failed without a message")));
  }
}

static std::string TrustedCaPem() {
  const char* from_env = std::getenv("SSL_CERT_FILE");
  for (const char* f : {from_env, "/etc/ssl/certs/ca-certificates.crt"})
    if (f && *f)
      if (auto pem = ReadFile(f); pem) return *pem;
  return "";
}

Result<HttpResponse> CallApi(const ApiEndpoint& e, const std::string& token,
                             const std::string& method, const std::string& path,
                             const std::string& body) {
  auto u = ParseApiUrl(e.url);
  if (!u) return Err(u.error());
  std::map<std::string, std::string> headers;
  if (!token.empty()) headers["Authorization"] = "Bearer " + token;
  // Connected to another address (no DNS yet), the request still names the URL's host.
  const std::string& connect = e.address.empty() ? u->host : e.address;
  bool default_port = u->port == (u->tls ? 443 : 80);
  headers["Host"] = default_port ? u->host : u->host + ":" + std::to_string(u->port);
  if (!u->tls) return HttpCall(connect, u->port, method, path, body, Millis(120000), headers);
  ClientTls tls;
  if (!e.pin_ca_sha256.empty()) tls.pin_ca_sha256 = e.pin_ca_sha256;
  else tls.ca_pem = e.ca_pem.empty() ? TrustedCaPem() : e.ca_pem;
  tls.verify_host = u->host;
  return HttpsCall(tls, connect, u->port, method, path, body, Millis(120000), headers);
}

static Result<HttpResponse> RemoteCall(ApiTarget& t, const std::string& method, const std::string& path,
                                const std::string& body) {
  std::string token;
  if (const char* env = std::getenv("KATO_API_TOKEN"); env && *env) token = env;
  ApiEndpoint e;
  if (token.empty() || t.url.empty()) {
    auto login = ReadLogin(LoginFilePath());
    if (!login) return Err(login.error());
    if (!*login)
      return Err("not signed in: run `kato login URL` (or set KATO_API_TOKEN to the admin "
                 "credential, `kato node token --api` on the core)");
    if (t.url.empty()) t.url = (*login)->url;
    if (token.empty()) token = (*login)->token;
    if ((*login)->url == t.url) e = (*login)->Endpoint();
  }
  e.url = t.url;
  return CallApi(e, token, method, path, body);
}

static bool UsesLogin(const ApiTarget& t) {
  if (!t.url.empty()) return true;
  auto login = ReadLogin(LoginFilePath());
  return !login || *login;  // a damaged file says so on the call
}

Result<json> AppApi(const Globals& g, const ApiTarget& t, const std::string& method,
                    const std::string& path, const std::string& body, bool raw,
                    int* status_out) {
  int status = 0;
  json reply;
  ApiTarget target = t;
  if (!UsesLogin(target)) {
    json args{{"method", method}, {"path", path}};
    if (raw)
      args["body_base64"] = Base64Encode(body);
    else
      args["body"] = body;
    auto r = Ask(g, "app.call", args, Millis(120000));
    if (!r) return Err(r.error());
    status = (*r)["status"].get<int>();
    reply = (*r)["body"];
  } else {
    auto r = RemoteCall(target, method, path, body);
    if (!r) return Err(r.error());
    status = r->status;
    reply = json::parse(r->body, nullptr, false);
  }
  if (status_out) *status_out = status;
  if (status >= 300) {
    if (reply.is_object() && reply.contains("error")) return Err(reply["error"].get<std::string>());
    return Err("the API answered HTTP " + std::to_string(status));
  }
  return reply;
}

// The output of a command run without a shell (for `tar`).
Result<std::string> Capture(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) return Err("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return Err("fork failed");
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return Err(argv[0] + " failed");
  return out;
}

std::string Join(const json& arr, const std::string& sep) {
  std::string out;
  if (!arr.is_array()) return out;
  for (const auto& v : arr) {
    if (!out.empty()) out += sep;
    out += v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out;
}

std::string Pad(std::string s, size_t n) {
  if (s.size() < n) s.resize(n, ' ');
  return s;
}

std::string Prompt(const std::string& question) {
  std::cerr << question << ": " << std::flush;
  std::string answer;
  std::getline(std::cin, answer);
  return answer;
}

}  // namespace kato
