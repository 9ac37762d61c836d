// kato-sim's nodes against a real primary service (PrimaryService over HTTPS
// on 127.0.0.1, SQLite), in this process.
#include "sim/simulation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/fs.h"
#include "common/http.h"
#include "common/layout.h"
#include "common/pki.h"
#include "primary/cached_store.h"
#include "primary/primary.h"
#include "store/store.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr char kCoreIp[] = "127.0.0.1";
constexpr char kVersion[] = "0.1.0";

// Waits (bounded) for a condition; the test fails when it never holds.
template <class F>
bool WaitFor(F f, std::chrono::seconds limit = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return f();
}

class SimulationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kato_sim_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    layout_.dir = tmpl;
    ASSERT_TRUE(MakeDirs(layout_.pki_dir(), 0700).ok());
    auto ca = CreateCa("core");
    ASSERT_TRUE(ca.ok()) << ca.error();
    ca_ = *ca;
    ASSERT_TRUE(WriteFileAtomic(layout_.ca_cert(), ca_.cert_pem, 0644).ok());
    ASSERT_TRUE(WriteFileAtomic(layout_.ca_key(), ca_.key_pem, 0600).ok());
    auto store = OpenSqliteStore(layout_.state_db());
    ASSERT_TRUE(store.ok()) << store.error();
    store_ = std::move(*store);
    cached_ = std::make_unique<CachedStore>(*store_);
    auto fp = CertFingerprint(ca_.cert_pem);
    ASSERT_TRUE(fp.ok());
    token_ = JoinToken{*fp, RandomHex(32)};
    core_id_ = RandomHex(16);
    auto kc = CreateKeyAndCsr(core_id_);
    ASSERT_TRUE(kc.ok());
    auto cert = SignCsr(ca_, kc->csr_pem, core_id_, 30);
    ASSERT_TRUE(cert.ok());
    core_tls_ = ClientTls{ca_.cert_pem, *cert, kc->key_pem, ""};
    NodeRecord core{core_id_, kCoreIp, "core", kVersion, {"base", "primary"}, 1};
    for (auto s :
         {cached_->SetSetting("core_ip", kCoreIp), cached_->SetSetting("version", kVersion),
          cached_->SetSetting("endpoint", "api.example.com"), cached_->PutNode(core),
          cached_->AddToken({Sha256Hex(token_.secret), 1, 0, false})})
      ASSERT_TRUE(s.ok()) << s.error();
    service_ = std::make_unique<PrimaryService>(PrimaryConfig{layout_.dir, kCoreIp, kVersion},
                                                *cached_, RealClock::instance());
    server_ = std::make_unique<HttpsServer>(
        ServerTls{ca_.cert_pem, *cert, kc->key_pem, ca_.cert_pem},
        [this](const HttpRequest& req, Responder r) { service_->Handle(req, std::move(r)); });
    ASSERT_TRUE(server_->Start(kCoreIp, 0).ok());
    expirer_ = std::thread([this] {
      while (!done_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        service_->ExpireWatches();
      }
    });
  }
  void TearDown() override {
    done_ = true;
    expirer_.join();
    server_->Stop();
    service_.reset();
    cached_.reset();
    store_.reset();
    std::filesystem::remove_all(layout_.dir);
  }

  SimOptions Options(int nodes) {
    SimOptions o;
    o.core = HollowCore{kCoreIp, server_->port(), kVersion};
    o.token = token_.str();
    o.nodes = nodes;
    o.first_ip = "127.3.0.1";
    o.heartbeat = Millis(200);
    o.watch_timeout = Millis(2000);
    return o;
  }
  json Core(const std::string& method, const std::string& path, const json& body = nullptr) {
    auto r = HttpsCall(core_tls_, kCoreIp, server_->port(), method, path,
                       body.is_null() ? "" : body.dump(), Millis(10000));
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? json::parse(r->body, nullptr, false) : json();
  }
  json Cluster() { return Core("GET", "/v1/cluster"); }

  DataLayout layout_;
  CaBundle ca_;
  JoinToken token_;
  std::string core_id_;
  ClientTls core_tls_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<CachedStore> cached_;
  std::unique_ptr<PrimaryService> service_;
  std::unique_ptr<HttpsServer> server_;
  std::atomic<bool> done_{false};
  std::thread expirer_;
};

TEST_F(SimulationTest, NodesJoinHeartbeatFollowTheirRolesAndLeave) {
  Simulation sim(Options(20));
  int last_progress = 0;
  ASSERT_TRUE(sim.Join([&](int n) { last_progress = n; }).ok());
  EXPECT_EQ(last_progress, 20);
  EXPECT_EQ(sim.joined(), 20);
  json c = Cluster();
  ASSERT_EQ(c["nodes"].size(), 21u);
  std::set<std::string> ips;
  for (const auto& n : c["nodes"]) ips.insert(n["ip"].get<std::string>());
  EXPECT_TRUE(ips.count("127.3.0.1") && ips.count("127.3.0.20"));

  const uint64_t accepted_before = server_->connections_accepted();
  sim.Start();
  // Every node is up and reports being seen again (several rounds of heartbeats).
  ASSERT_TRUE(WaitFor([&] { return sim.stats().heartbeats >= 20 * 4; }));
  EXPECT_EQ(sim.stats().heartbeat_errors, 0u);
  json now = Cluster();
  for (const auto& n : now["nodes"]) {
    if (n["id"] == core_id_) continue;  // the core does not heartbeat here
    EXPECT_EQ(n["state"], "up") << n.dump();
  }
  // Kept connections: about one per node for heartbeats and one for its watch,
  // not one per heartbeat.
  EXPECT_LE(server_->connections_accepted() - accepted_before, 20u * 2 + 5);

  // A role given at the primary reaches the node through its watch, at once.
  std::string target;
  for (const auto& n : now["nodes"])
    if (n["ip"] == "127.3.0.7") target = n["id"];
  ASSERT_FALSE(target.empty());
  const uint64_t woken = sim.stats().wakeups;
  json r = Core("POST", "/v1/nodes/roles", {{"node", target}, {"add", {"dea"}}});
  ASSERT_THAT(r["roles"].get<std::vector<std::string>>(),
              ::testing::UnorderedElementsAre("base", "dea"))
      << r.dump();
  ASSERT_TRUE(WaitFor(
      [&] {
        json c = Cluster();
        for (const auto& n : c["nodes"])
          if (n["id"] == target && !n["processes"].empty() && n["processes"][0]["name"] == "dea")
            return true;
        return false;
      },
      std::chrono::seconds(5)));
  EXPECT_GE(sim.stats().wakeups, woken + 1);
  EXPECT_LE(sim.stats().wakeups, woken + 2);  // the others' watches slept through it

  ASSERT_TRUE(sim.Stop().ok());
  EXPECT_EQ(Cluster()["nodes"].size(), 1u);
  EXPECT_TRUE(sim.Stop().ok());  // idempotent
}

// Simulated DEAs: an empty report first (a place for instances), then their
// share of the assignments as RUNNING, and nothing of another node's.
TEST_F(SimulationTest, SimulatedDeasReportTheirAssignmentsAsRunning) {
  SimOptions o = Options(3);
  o.roles = {"dea"};
  o.dea_round = Millis(50);
  Simulation sim(o);
  ASSERT_TRUE(sim.Join(nullptr).ok());
  sim.Start();
  std::vector<std::string> deas;
  const json cluster = Cluster();
  for (const auto& n : cluster["nodes"])
    if (n["id"] != core_id_) deas.push_back(n["id"]);
  ASSERT_EQ(deas.size(), 3u) << cluster.dump();
  auto report = [&](const std::string& id) {
    auto r = HttpsCall(core_tls_, kCoreIp, server_->port(), "GET", "/v1/docs/instances/" + id, "",
                       Millis(5000));
    if (!r.ok() || r->status != 200) return json();
    return json::parse(r->body, nullptr, false)["value"];
  };
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& id : deas)
      if (!report(id).is_object()) return false;
    return true;
  })) << "every DEA reports, with no instance yet";
  EXPECT_TRUE(report(deas[0])["instances"].empty());
  EXPECT_EQ(report(deas[0])["memory_mb"], o.dea_memory_mb);

  for (int i = 0; i < 2; ++i) {
    std::string id = "inst" + std::to_string(i);
    Core("PUT", "/v1/docs/assignment/web/" + std::to_string(i) + "/" + id,
         {{"value",
           {{"app", "web"},
            {"index", i},
            {"version", 3},
            {"node_id", deas[1]},
            {"instance_id", id}}}});
  }
  ASSERT_TRUE(WaitFor([&] { return report(deas[1])["instances"].size() == 2; }));
  json inst = report(deas[1])["instances"][0];
  EXPECT_EQ(inst["state"], "RUNNING");
  EXPECT_EQ(inst["app"], "web");
  EXPECT_EQ(inst["version"], 3);
  const int64_t since = inst["since_ms"];
  EXPECT_TRUE(report(deas[0])["instances"].empty());
  EXPECT_TRUE(WaitFor([&] { return sim.stats().instances == 2; }));

  // An unassigned instance leaves the report; the other keeps its start time.
  Core("DELETE", "/v1/docs/assignment/web/1/inst1");
  ASSERT_TRUE(WaitFor([&] { return report(deas[1])["instances"].size() == 1; }));
  EXPECT_EQ(report(deas[1])["instances"][0]["instance_id"], "inst0");
  EXPECT_EQ(report(deas[1])["instances"][0]["since_ms"], since);
  EXPECT_EQ(sim.stats().report_errors, 0u);
  ASSERT_TRUE(sim.Stop().ok());
}

TEST_F(SimulationTest, ABadTokenIsRefusedWithTheCoresReason) {
  SimOptions o = Options(3);
  o.token = JoinToken{token_.ca_hash, RandomHex(32)}.str();
  Simulation sim(o);
  auto s = sim.Join(nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("join token is not valid"));
  EXPECT_EQ(sim.joined(), 0);
  EXPECT_TRUE(sim.Stop().ok());
}

TEST(SimOptionsTest, BadOptionsAreNamed) {
  SimOptions o;
  o.core.ip = "127.0.0.1";
  o.token = "KATO1." + std::string(64, 'a') + "." + std::string(64, 'b');
  o.nodes = 10;
  EXPECT_TRUE(CheckSimOptions(o).ok());
  auto bad = [&](auto change, const std::string& what) {
    SimOptions b = o;
    change(b);
    auto s = CheckSimOptions(b);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(s.error(), HasSubstr(what));
  };
  bad([](SimOptions& b) { b.nodes = 0; }, "--nodes");
  bad([](SimOptions& b) { b.first_ip = "10.0.0.1"; }, "loopback");
  bad([](SimOptions& b) { b.first_ip = "127.255.255.250"; }, "runs past");
  bad([](SimOptions& b) { b.first_ip = "nope"; }, "--first-ip");
  bad([](SimOptions& b) { b.core.ip = "core"; }, "--core");
  bad([](SimOptions& b) { b.token = "secret"; }, "--token");
}

}  // namespace
}  // namespace kato
