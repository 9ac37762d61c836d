#include "controller/reconciler.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "controller/app_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using json = nlohmann::json;

// A real (SQLite) store, a fake clock, and two DEAs whose reports the test writes.
class ReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-reconciler-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto s = OpenSqliteStore(dir_ + "/state.db");
    ASSERT_TRUE(s.ok()) << s.error();
    store_ = std::move(*s);
    for (const auto& [id, ip] : {std::pair{"dea-a", "10.0.0.1"}, std::pair{"dea-b", "10.0.0.2"}})
      ASSERT_TRUE(store_->PutNode({id, ip, id, "0.1.0", {"base", "dea"}, 1}).ok());
    reconciler_ = std::make_unique<Reconciler>(*store_, clock_);
  }
  void TearDown() override {
    reconciler_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void PutApp(int instances, int64_t version, const std::string& droplet = "abc",
              int memory_mb = 128) {
    AppRecord a;
    a.name = "web";
    a.instances = instances;
    a.memory_mb = memory_mb;
    a.version = version;
    a.droplet_sha256 = droplet;
    ASSERT_TRUE(store_->PutDoc("app", "web", AppToJson(a)).ok());
  }

  // Each DEA reports every instance assigned to it, in `state`, unless it is down.
  void Report(const std::string& state, std::set<std::string> down = {}) {
    auto docs = store_->ListDocs("assignment");
    ASSERT_TRUE(docs.ok());
    for (std::string dea : {"dea-a", "dea-b"}) {
      if (down.count(dea)) continue;
      json insts = json::array();
      for (const auto& [key, value] : *docs) {
        json a = json::parse(value);
        if (a["node_id"] != dea) continue;
        std::string id = a["instance_id"];
        insts.push_back({{"instance_id", id}, {"app", a["app"]},
                         {"version", a["version"]}, {"index", a["index"]},
                         {"state", states_.count(id) ? states_[id] : state}, {"port", 61000}});
      }
      ASSERT_TRUE(store_->PutDoc("instances", dea, json{{"instances", insts}}.dump()).ok());
      reports_[dea] = clock_.wall_ms();
    }
  }

  // What the controller's loop reads from the primary: the DEAs, their last reports.
  void Feed() {
    std::vector<NodeRecord> deas;
    auto nodes = store_->ListNodes();
    ASSERT_TRUE(nodes.ok());
    for (const auto& n : *nodes)
      if (std::find(n.roles.begin(), n.roles.end(), "dea") != n.roles.end()) deas.push_back(n);
    reconciler_->SetDeas(deas, reports_);
  }

  // Rounds every 250 ms of fake time for `ms`, the DEAs reporting `state` each time.
  void Run(int ms, const std::string& state = "RUNNING", std::set<std::string> down = {}) {
    for (int t = 0; t < ms; t += 250) {
      Report(state, down);
      Feed();
      reconciler_->Round(true);
      clock_.advance(Millis(250));
    }
  }

  std::vector<json> Assignments() {
    std::vector<json> out;
    auto docs = store_->ListDocs("assignment");
    EXPECT_TRUE(docs.ok());
    for (const auto& [key, value] : *docs) {
      json a = json::parse(value);
      EXPECT_EQ(key, "web/" + std::to_string(a["index"].get<int>()) + "/" +
                         a["instance_id"].get<std::string>());
      out.push_back(a);
    }
    return out;
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Reconciler> reconciler_;
  std::map<std::string, int64_t> reports_;
  std::map<std::string, std::string> states_;  // instance id -> reported state, overriding
};

TEST_F(ReconcilerTest, AssignsOneInstancePerIndexSpreadOverDeas) {
  PutApp(2, 1);
  Run(2500);
  auto a = Assignments();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_NE(a[0]["node_id"], a[1]["node_id"]);
  EXPECT_EQ(reconciler_->Health("web").first, "RUNNING");
}

TEST_F(ReconcilerTest, AScaleUpIsPlacedInOneRoundWithBatchedWrites) {
  PutApp(2500, 1, "abc", 1);
  for (int round = 0; round < 20 && Assignments().empty(); ++round) {
    Report("RUNNING");
    Feed();
    int64_t before = *store_->Revision();
    reconciler_->Round(true);
    if (!Assignments().empty()) {
      // 2,500 assignments in batches of Reconciler::kWritesPerBatch: three writes.
      EXPECT_EQ(*store_->Revision() - before, 3);
      break;
    }
    clock_.advance(Millis(250));
  }
  auto a = Assignments();
  ASSERT_EQ(a.size(), 2500u);
  std::map<std::string, int> per_dea;
  std::set<int> indices;
  for (const auto& x : a) ++per_dea[x["node_id"]], indices.insert(x["index"].get<int>());
  EXPECT_EQ(indices.size(), 2500u);
  EXPECT_EQ(per_dea["dea-a"], 1250);
  EXPECT_EQ(per_dea["dea-b"], 1250);
  Run(1000);
  EXPECT_EQ(Assignments().size(), 2500u);
  EXPECT_EQ(reconciler_->Health("web").first, "RUNNING");
}

TEST_F(ReconcilerTest, ARePushKeepsTheOldInstancesUntilTheNewOnesRun) {
  PutApp(2, 1);
  Run(2500);
  ASSERT_EQ(Assignments().size(), 2u);
  PutApp(2, 2);
  Report("RUNNING");  // old ones keep running while ...
  Feed();
  reconciler_->Round(true);
  auto both = Assignments();
  ASSERT_EQ(both.size(), 4u);  // ... new ones start beside them
  int v2 = 0;
  for (const auto& a : both)
    if (a["version"] == 2) ++v2, states_[a["instance_id"]] = "STARTING";
  EXPECT_EQ(v2, 2);
  Run(1000);  // the new ones are not serving yet: the old ones stay
  EXPECT_EQ(Assignments().size(), 4u);
  states_.clear();
  Run(1000);
  auto after = Assignments();
  ASSERT_EQ(after.size(), 2u);
  for (const auto& a : after) EXPECT_EQ(a["version"], 2);
}

TEST_F(ReconcilerTest, AnAssignmentNamesTheDropletOfItsVersion) {
  PutApp(1, 1, "aaa");
  Run(2500);
  ASSERT_EQ(Assignments().size(), 1u);
  EXPECT_EQ(Assignments()[0]["droplet_sha256"], "aaa");
  PutApp(1, 2, "bbb");
  Run(2500);
  auto after = Assignments();
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0]["version"], 2);
  EXPECT_EQ(after[0]["droplet_sha256"], "bbb");
}

TEST_F(ReconcilerTest, ADeadDeasAssignmentsGoAndItsInstancesMove) {
  PutApp(2, 1);
  Run(2500);
  Run(2500, "RUNNING", {"dea-b"});  // dea-b stops reporting
  auto a = Assignments();
  ASSERT_EQ(a.size(), 2u);
  for (const auto& x : a) EXPECT_EQ(x["node_id"], "dea-a");
}

TEST_F(ReconcilerTest, ACrashedInstanceIsReplacedAndItsAssignmentGoes) {
  PutApp(1, 1);
  Run(2500);
  auto first = Assignments();
  ASSERT_EQ(first.size(), 1u);
  states_[first[0]["instance_id"]] = "CRASHED";
  Run(500);  // within the back-off: the crashed one stays (its logs can be read)
  ASSERT_EQ(Assignments().size(), 1u);
  Run(2000);  // restarted after the back-off
  auto now = Assignments();
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0]["instance_id"], first[0]["instance_id"]);
}

TEST_F(ReconcilerTest, ScaleDownAndStopRemoveAssignments) {
  PutApp(2, 1);
  Run(2500);
  PutApp(1, 1);
  Run(500);
  ASSERT_EQ(Assignments().size(), 1u);
  EXPECT_EQ(Assignments()[0]["index"], 0);
  ASSERT_TRUE(store_->DeleteDoc("app", "web").ok());
  Run(500);
  EXPECT_TRUE(Assignments().empty());
}

TEST_F(ReconcilerTest, AStandbyWritesNothingButJudgesHealth) {
  PutApp(2, 1);
  for (int t = 0; t < 3000; t += 250) {
    Report("RUNNING");
    Feed();
    reconciler_->Round(false);
    clock_.advance(Millis(250));
  }
  EXPECT_TRUE(Assignments().empty());
  EXPECT_EQ(reconciler_->Health("web").first, "STARTING");  // it would start them
  Run(250);  // leading now: it acts at once, it has heard from both DEAs
  EXPECT_EQ(Assignments().size(), 2u);
}

TEST_F(ReconcilerTest, UnderstandsKeysOfTheFirstBuilds) {
  PutApp(1, 1);
  ASSERT_TRUE(store_->PutDoc("assignment", "web/0",
                             json{{"app", "web"}, {"index", 0}, {"version", 1},
                                  {"node_id", "dea-a"}, {"instance_id", "old1"}}.dump())
                  .ok());
  ASSERT_TRUE(store_->PutDoc("assignment", "web/5",
                             json{{"app", "web"}, {"index", 5}, {"version", 1},
                                  {"node_id", "dea-a"}, {"instance_id", "old5"}}.dump())
                  .ok());
  // The DEA reports old1 RUNNING: it is kept, and index 5 (beyond 1 instance) goes.
  json insts = json::array({{{"instance_id", "old1"}, {"app", "web"}, {"version", 1},
                             {"index", 0}, {"state", "RUNNING"}, {"port", 61000}}});
  for (int t = 0; t < 2500; t += 250) {
    ASSERT_TRUE(store_->PutDoc("instances", "dea-a", json{{"instances", insts}}.dump()).ok());
    reports_["dea-a"] = clock_.wall_ms();
    Feed();
    reconciler_->Round(true);
    clock_.advance(Millis(250));
  }
  auto docs = store_->ListDocs("assignment");
  ASSERT_TRUE(docs.ok());
  ASSERT_EQ(docs->size(), 1u);
  EXPECT_EQ((*docs)[0].first, "web/0");
}

}  // namespace
}  // namespace kato
