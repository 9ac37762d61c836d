// libFuzzer target: arbitrary requests to the primary's cluster API (the
// join endpoint is open to anyone who can reach port 9440). Every request must
// be answered exactly once with a status code, never crash, and leave the
// store usable.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/layout.h"
#include "common/pki.h"
#include "primary/primary.h"
#include "store/store.h"

namespace {

struct World {
  std::string dir;
  std::unique_ptr<kato::Store> store;
  kato::FakeClock clock;
  std::unique_ptr<kato::PrimaryService> service;
  std::string core_id = "c0ffee";

  World() {
    char tmpl[] = "/tmp/kato-primary-fuzz-XXXXXX";
    dir = mkdtemp(tmpl);
    kato::DataLayout layout{dir};
    (void)kato::MakeDirs(layout.pki_dir(), 0700);
    auto ca = kato::CreateCa("fuzz");
    (void)kato::WriteFileAtomic(layout.ca_cert(), ca->cert_pem);
    (void)kato::WriteFileAtomic(layout.ca_key(), ca->key_pem);
    store = std::move(kato::OpenSqliteStore(layout.state_db()).value());
    (void)store->SetSetting("core_ip", "127.0.0.2");
    (void)store->PutNode({core_id, "127.0.0.2", "core", "0.1.0", {"primary", "base"}, 1});
    (void)store->AddToken({kato::Sha256Hex("secret"), 0, 0, false});
    service = std::make_unique<kato::PrimaryService>(
        kato::PrimaryConfig{dir, "127.0.0.2", "0.1.0"}, *store, clock);
  }
};

const std::vector<std::string> kPaths = {
    "/v1/join", "/v1/heartbeat", "/v1/watch?after=0&timeout_ms=10", "/v1/cluster",
    "/v1/nodes/roles", "/v1/nodes/remove", "/v1/nodes/update", "/v1/config/set",
    "/v1/config/get", "/v1/config/del", "/v1/config/list", "/v1/token", "/v1/history?limit=x",
    "/v1/history", "/v1/settings", "/v1/docs", "/v1/docs/assignment?node=n1",
    "/v1/watch?after=0&timeout_ms=10&assignments=1&node=n1", "/v1/cluster?role=dea&processes=0",
    "/nope"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  if (size < 3) return 0;
  kato::HttpRequest req;
  req.method = data[0] % 2 ? "POST" : "GET";
  req.target = kPaths[data[1] % kPaths.size()];
  req.peer_cn = data[2] % 3 == 0 ? "" : data[2] % 3 == 1 ? w.core_id : "stranger";
  req.body.assign(reinterpret_cast<const char*>(data + 3), size - 3);
  int answered = 0;
  int status = 0;
  w.service->Handle(req, [&](kato::HttpResponse r) {
    ++answered;
    status = r.status;
  });
  // A long poll may wait: move time past its deadline.
  w.clock.advance(kato::Millis(100));
  w.service->ExpireWatches();
  if (answered != 1 || status < 200 || status > 599) std::abort();
  if (!w.store->Revision().ok()) std::abort();
  return 0;
}
