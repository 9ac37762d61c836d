#include "controller/health.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

namespace kato {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

auto IsStart() { return Field(&Action::kind, Action::kStart); }
auto IsStop() { return Field(&Action::kind, Action::kStop); }

// A small cluster of fake DEAs that carry out the health manager's actions the way
// real ones would, and heartbeat whenever time passes.
class HealthTest : public ::testing::Test {
 protected:
  struct FakeDea {
    DeaInfo info;
    std::vector<InstanceReport> instances;
    bool alive = true;
  };

  void AddDea(const std::string& id, int memory_mb = 4096) {
    const std::string ip = "10.0.0." + std::to_string(deas_.size() + 1);
    deas_[id] = FakeDea{DeaInfo{id, ip, memory_mb, true}, {}, true};
  }
  AppSpec& AddApp(const std::string& name, int instances, int memory_mb = 256) {
    apps_.push_back(AppSpec{name, instances, memory_mb, "STARTED", 1});
    return apps_.back();
  }
  AppSpec& App(const std::string& name) {
    return *std::find_if(apps_.begin(), apps_.end(), [&](auto& a) { return a.name == name; });
  }

  // Replaces the health manager (call before Boot()).
  void UseOptions(HealthOptions options) { hm_ = std::make_unique<HealthManager>(clock_, options); }
  void Heartbeat() {
    for (auto& [id, dea] : deas_) {
      if (dea.alive) hm_->ObserveDea(dea.info, dea.instances);
    }
  }
  // Moves time on, with a heartbeat from every live DEA at least every 500 ms.
  void Wait(Millis d) {
    while (d > Millis(0)) {
      const Millis step = std::min(d, Millis(500));
      clock_.advance(step);
      d -= step;
      Heartbeat();
    }
  }
  // Past the startup grace, with every DEA heard from.
  void Boot() {
    Heartbeat();
    Wait(milliseconds(1500));
  }
  std::vector<Action> Evaluate() {
    Heartbeat();
    return hm_->Evaluate(apps_);
  }
  // A start becomes a STARTING instance on its DEA; a stop removes the instance.
  void Apply(const std::vector<Action>& actions) {
    for (const Action& a : actions) {
      FakeDea& dea = deas_.at(a.dea_node_id);
      if (a.kind == Action::kStart) {
        InstanceReport r;
        r.instance_id = "i" + std::to_string(++next_id_);
        r.app = a.app;
        r.app_version = a.app_version;
        r.index = a.index;
        r.dea_node_id = a.dea_node_id;
        r.state = "STARTING";
        r.since_ms = clock_.wall_ms();
        dea.instances.push_back(r);  // memory_mb 0: the health manager uses the app's
      } else {
        std::erase_if(dea.instances, [&](auto& r) { return r.instance_id == a.instance_id; });
      }
    }
  }
  void AllRunning() {
    for (auto& [id, dea] : deas_) {
      for (InstanceReport& r : dea.instances) {
        if (r.state == "STARTING") r.state = "RUNNING";
      }
    }
  }
  // Evaluates, carries out and lets every instance come up until nothing is left to do.
  void Converge() {
    for (int round = 0; round < 10; ++round) {
      Wait(milliseconds(500));
      auto actions = Evaluate();
      if (actions.empty()) return;
      Apply(actions);
      AllRunning();
    }
    ADD_FAILURE() << "no convergence in 10 rounds";
  }
  // The STARTING/RUNNING instances of `app` on live DEAs.
  std::vector<InstanceReport> Live(const std::string& app) {
    std::vector<InstanceReport> out;
    for (auto& [id, dea] : deas_) {
      if (!dea.alive) continue;
      for (const InstanceReport& r : dea.instances) {
        if (r.app == app && (r.state == "STARTING" || r.state == "RUNNING")) out.push_back(r);
      }
    }
    return out;
  }
  std::map<int, int> IndexCounts(const std::string& app) {
    std::map<int, int> counts;
    for (const InstanceReport& r : Live(app)) ++counts[r.index];
    return counts;
  }
  std::map<std::string, int> DeaCounts(const std::vector<Action>& actions) {
    std::map<std::string, int> counts;
    for (const Action& a : actions) ++counts[a.dea_node_id];
    return counts;
  }
  InstanceReport* Find(int index, const std::string& app = "web") {
    for (auto& [id, dea] : deas_) {
      for (InstanceReport& r : dea.instances) {
        if (r.app == app && r.index == index) return &r;
      }
    }
    return nullptr;
  }
  // Makes the one instance of `index` crash, as its DEA would report it.
  void Crash(int index) {
    InstanceReport* r = Find(index);
    ASSERT_NE(r, nullptr);
    r->state = "CRASHED";
  }

  FakeClock clock_;
  std::unique_ptr<HealthManager> hm_ = std::make_unique<HealthManager>(clock_);
  std::map<std::string, FakeDea> deas_;
  std::vector<AppSpec> apps_;
  int next_id_ = 0;
};

TEST_F(HealthTest, StartsEveryInstanceSpreadAcrossDeas) {
  AddDea("dea1");
  AddDea("dea2");
  AddDea("dea3");
  AddApp("web", 3);
  Boot();
  auto actions = Evaluate();
  ASSERT_THAT(actions, SizeIs(3));
  EXPECT_THAT(actions,
              Each(AllOf(IsStart(), Field(&Action::app, "web"), Field(&Action::app_version, 1))));
  EXPECT_EQ(DeaCounts(actions),
            (std::map<std::string, int>{{"dea1", 1}, {"dea2", 1}, {"dea3", 1}}));
  std::set<int> indices;
  for (const Action& a : actions) indices.insert(a.index);
  EXPECT_EQ(indices, (std::set<int>{0, 1, 2}));
  EXPECT_EQ(hm_->AppHealth("web").state, "STARTING");

  Apply(actions);
  Wait(milliseconds(500));
  EXPECT_THAT(Evaluate(), IsEmpty());  // STARTING instances cover their indices
  AllRunning();
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(hm_->AppHealth("web"), (AppHealthStatus{"RUNNING", "3 of 3 instances running"}));
  EXPECT_THAT(hm_->Instances("web"), SizeIs(3));
}

TEST_F(HealthTest, DecidesNothingUntilDeasHadTimeToReport) {
  AddDea("dea1");
  AddApp("web", 1);
  Heartbeat();
  clock_.advance(milliseconds(1499));
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(hm_->AppHealth("web").message, "not evaluated yet");
  clock_.advance(milliseconds(1));
  EXPECT_THAT(Evaluate(), SizeIs(1));
}

TEST_F(HealthTest, DeaThatStopsHeartbeatingIsFailedOverToTheOthers) {
  AddDea("dea1");
  AddDea("dea2");
  AddDea("dea3");
  AddApp("web", 6);
  Boot();
  Converge();
  ASSERT_EQ(IndexCounts("web").size(), 6u);
  std::set<int> lost;
  for (const InstanceReport& r : deas_["dea1"].instances) lost.insert(r.index);
  ASSERT_THAT(lost, SizeIs(2));

  deas_["dea1"].alive = false;  // kill -9: no more heartbeats
  Wait(milliseconds(1500));     // its last heartbeat is exactly dea_grace old: still up
  EXPECT_THAT(Evaluate(), IsEmpty());
  clock_.advance(milliseconds(1));
  auto actions = Evaluate();
  ASSERT_THAT(actions, SizeIs(2));
  EXPECT_THAT(actions,
              Each(AllOf(IsStart(), Field(&Action::reason, "DEA 10.0.0.1 stopped heartbeating"))));
  // Spread: one on each remaining DEA.
  EXPECT_EQ(DeaCounts(actions), (std::map<std::string, int>{{"dea2", 1}, {"dea3", 1}}));
  std::set<int> restarted;
  for (const Action& a : actions) restarted.insert(a.index);
  EXPECT_EQ(restarted, lost);
  EXPECT_THAT(hm_->Deas(), ElementsAre(Field(&DeaInfo::up, false), Field(&DeaInfo::up, true),
                                       Field(&DeaInfo::up, true)));

  Apply(actions);
  AllRunning();
  Converge();
  EXPECT_EQ(IndexCounts("web"),
            (std::map<int, int>{{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}}));
  EXPECT_EQ(hm_->AppHealth("web").state, "RUNNING");

  // It comes back with its old instances still RUNNING: they are the duplicates.
  deas_["dea1"].alive = true;
  auto stops = Evaluate();
  ASSERT_THAT(stops, SizeIs(2));
  EXPECT_THAT(stops, Each(AllOf(IsStop(), Field(&Action::dea_node_id, "dea1"))));
  Apply(stops);
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(IndexCounts("web"),
            (std::map<int, int>{{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}}));
  EXPECT_THAT(Live("web"), SizeIs(6));
}

TEST_F(HealthTest, MostDeasFallingSilentAtOncePausesFailover) {
  for (int i = 0; i < 10; ++i) AddDea("dea" + std::to_string(i));
  AddApp("web", 20);
  Boot();
  Converge();
  ASSERT_EQ(IndexCounts("web").size(), 20u);
  // Six of ten at once: a core or a network fault, most likely. Nothing moves.
  for (int i = 0; i < 6; ++i) deas_["dea" + std::to_string(i)].alive = false;
  Wait(milliseconds(3000));
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_THAT(hm_->FailoverPaused(), HasSubstr("6 of 10 DEAs stopped reporting at once"));
  // They are heard again: their instances were never replaced, nothing to do.
  for (int i = 0; i < 6; ++i) deas_["dea" + std::to_string(i)].alive = true;
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(hm_->FailoverPaused(), "");
  EXPECT_THAT(Live("web"), SizeIs(20));
  // Five of ten is not more than half: those fail over as usual.
  for (int i = 0; i < 5; ++i) deas_["dea" + std::to_string(i)].alive = false;
  Wait(milliseconds(2000));
  auto actions = Evaluate();
  EXPECT_EQ(hm_->FailoverPaused(), "");
  EXPECT_THAT(actions, SizeIs(10));
  EXPECT_THAT(actions, Each(IsStart()));
}

TEST_F(HealthTest, ASmallClusterFailsOverWhateverTheShare) {
  AddDea("dea1");
  AddDea("dea2");
  AddDea("dea3");
  AddApp("web", 3);
  Boot();
  Converge();
  deas_["dea1"].alive = false;
  deas_["dea2"].alive = false;  // two of three, but fewer than mass_silence_min_deas known
  Wait(milliseconds(2000));
  auto actions = Evaluate();
  EXPECT_EQ(hm_->FailoverPaused(), "");
  EXPECT_THAT(actions, SizeIs(2));
}

TEST_F(HealthTest, ReturningDeaKeepsItsRunningInstanceOverAStartingReplacement) {
  AddDea("dea1");
  AddDea("dea2");
  AddApp("web", 1);
  Boot();
  Converge();
  const std::string original = Live("web").at(0).dea_node_id;
  const std::string other = original == "dea1" ? "dea2" : "dea1";
  deas_[original].alive = false;
  Wait(milliseconds(2000));
  auto starts = Evaluate();
  ASSERT_THAT(starts, ElementsAre(AllOf(IsStart(), Field(&Action::dea_node_id, other))));
  Apply(starts);  // the replacement is still STARTING when the original comes back

  deas_[original].alive = true;
  auto stops = Evaluate();
  ASSERT_THAT(stops, ElementsAre(AllOf(IsStop(), Field(&Action::dea_node_id, other))));
  Apply(stops);
  EXPECT_THAT(Live("web"), ElementsAre(Field(&InstanceReport::dea_node_id, original)));
}

TEST_F(HealthTest, CrashedInstanceRestartsWithExponentialBackoff) {
  AddDea("dea1");
  AddApp("web", 1);
  Boot();
  Converge();

  const Millis expected[] = {seconds(1), seconds(2), seconds(4), seconds(8)};
  for (Millis delay : expected) {
    Crash(0);
    EXPECT_THAT(Evaluate(), IsEmpty());  // the crash is counted now; restart after `delay`
    EXPECT_EQ(hm_->AppHealth("web").state, "DOWN");
    EXPECT_THAT(hm_->AppHealth("web").message, HasSubstr("instance 0 crashed"));
    Wait(delay - milliseconds(1));
    EXPECT_THAT(Evaluate(), IsEmpty()) << "too early for delay " << delay.count();
    clock_.advance(milliseconds(1));
    auto actions = Evaluate();
    ASSERT_THAT(actions, ElementsAre(AllOf(IsStart(), Field(&Action::index, 0))));
    EXPECT_EQ(actions[0].reason, "restarting after a crash");
    // Until the DEA reports the new instance (it still reports the crashed one) the
    // start is pending: no second start.
    Wait(milliseconds(500));
    EXPECT_THAT(Evaluate(), IsEmpty());
    std::erase_if(deas_["dea1"].instances, [](auto& r) { return r.state == "CRASHED"; });
    Apply(actions);
    AllRunning();
  }
}

TEST_F(HealthTest, BackoffIsCappedAndForgetsOldCrashes) {
  HealthOptions options;
  options.backoff_max = seconds(3);
  options.flapping_crashes = 100;
  UseOptions(options);
  AddDea("dea1");
  Boot();
  apps_ = {AppSpec{"web", 1, 256, "STARTED", 1}};
  auto crash_and_measure = [&]() -> Millis {
    for (auto& r : deas_["dea1"].instances) r.state = "CRASHED";
    Heartbeat();
    EXPECT_THAT(hm_->Evaluate(apps_), IsEmpty());
    Millis waited(0);
    for (;;) {
      Wait(milliseconds(100));
      waited += milliseconds(100);
      auto actions = hm_->Evaluate(apps_);
      if (!actions.empty()) {
        deas_["dea1"].instances.clear();
        Apply(actions);
        AllRunning();
        return waited;
      }
    }
  };
  Heartbeat();
  auto first = hm_->Evaluate(apps_);
  Apply(first);
  AllRunning();
  EXPECT_EQ(crash_and_measure(), seconds(1));
  EXPECT_EQ(crash_and_measure(), seconds(2));
  EXPECT_EQ(crash_and_measure(), seconds(3));  // capped
  EXPECT_EQ(crash_and_measure(), seconds(3));
  Wait(seconds(121));  // every crash is now older than the window
  EXPECT_EQ(crash_and_measure(), seconds(1));
}

TEST_F(HealthTest, FlappingAppIsNotRestartedUntilReset) {
  AddDea("dea1");
  AddApp("web", 2);
  Boot();
  Converge();
  int crashes = 0;
  for (;;) {
    Crash(0);
    Evaluate();
    ++crashes;
    if (hm_->AppHealth("web").state == "FLAPPING") break;
    ASSERT_LE(crashes, 5) << "not flapping after 6 crashes";
    Wait(seconds(20));  // past any back-off
    auto actions = Evaluate();
    ASSERT_THAT(actions, SizeIs(1));
    std::erase_if(deas_["dea1"].instances, [](auto& r) { return r.state == "CRASHED"; });
    Apply(actions);
    AllRunning();
  }
  EXPECT_EQ(crashes, 6);
  EXPECT_THAT(hm_->AppHealth("web").message, HasSubstr("instance 0 crashed 6 times within 120 s"));
  Wait(seconds(300));
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(hm_->AppHealth("web").state, "FLAPPING");
  // The healthy instance keeps running meanwhile.
  EXPECT_EQ(IndexCounts("web"), (std::map<int, int>{{1, 1}}));

  hm_->Reset("web");
  auto actions = Evaluate();
  ASSERT_THAT(actions, ElementsAre(AllOf(IsStart(), Field(&Action::index, 0))));
  Apply(actions);
  AllRunning();
  Evaluate();
  EXPECT_EQ(hm_->AppHealth("web").state, "RUNNING");
}

TEST_F(HealthTest, NewVersionClearsFlapping) {
  AddDea("dea1");
  AddApp("web", 1);
  HealthOptions options;
  options.flapping_crashes = 0;  // the first crash flaps
  UseOptions(options);
  Boot();
  Heartbeat();
  Apply(hm_->Evaluate(apps_));
  Crash(0);
  Heartbeat();
  EXPECT_THAT(hm_->Evaluate(apps_), IsEmpty());
  EXPECT_EQ(hm_->AppHealth("web").state, "FLAPPING");
  Wait(seconds(10));
  EXPECT_THAT(hm_->Evaluate(apps_), IsEmpty());
  App("web").version = 2;
  EXPECT_THAT(hm_->Evaluate(apps_), ElementsAre(AllOf(IsStart(), Field(&Action::app_version, 2))));
}

TEST_F(HealthTest, ScalesUpAndDownFromTheHighestIndex) {
  AddDea("dea1");
  AddDea("dea2");
  AddApp("web", 3);
  Boot();
  Converge();
  App("web").instances = 5;
  auto up = Evaluate();
  ASSERT_THAT(up, SizeIs(2));
  EXPECT_THAT(up, ElementsAre(AllOf(IsStart(), Field(&Action::index, 3)),
                              AllOf(IsStart(), Field(&Action::index, 4))));
  // Spread: dea1 or dea2 had two of the three; the new ones even it out to 3 + 2.
  Apply(up);
  AllRunning();
  std::map<std::string, int> per_dea;
  for (const InstanceReport& r : Live("web")) ++per_dea[r.dea_node_id];
  EXPECT_THAT(per_dea, ElementsAre(::testing::Pair("dea1", ::testing::AnyOf(2, 3)),
                                   ::testing::Pair("dea2", ::testing::AnyOf(2, 3))));

  App("web").instances = 2;
  auto down = Evaluate();
  EXPECT_THAT(down, ElementsAre(AllOf(IsStop(), Field(&Action::index, 4)),
                                AllOf(IsStop(), Field(&Action::index, 3)),
                                AllOf(IsStop(), Field(&Action::index, 2))));
  EXPECT_EQ(down[0].reason, "scaled down to 2 instances");
  Apply(down);
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(IndexCounts("web"), (std::map<int, int>{{0, 1}, {1, 1}}));
  EXPECT_EQ(hm_->AppHealth("web").state, "RUNNING");
}

TEST_F(HealthTest, StoppedAppIsStoppedEverywhere) {
  AddDea("dea1");
  AddDea("dea2");
  AddApp("web", 3);
  AddApp("api", 1);
  Boot();
  Converge();
  App("web").state = "STOPPED";
  auto actions = Evaluate();
  ASSERT_THAT(actions, SizeIs(3));
  EXPECT_THAT(actions, Each(AllOf(IsStop(), Field(&Action::app, "web"),
                                  Field(&Action::reason, "app stopped"))));
  EXPECT_THAT(Evaluate(), IsEmpty());  // not resent while the DEAs are stopping them
  Apply(actions);
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_THAT(Live("web"), IsEmpty());
  EXPECT_THAT(Live("api"), SizeIs(1));
  EXPECT_EQ(hm_->AppHealth("web").state, "STOPPED");

  App("web").state = "STARTED";
  EXPECT_THAT(Evaluate(), SizeIs(3));
}

TEST_F(HealthTest, DeletedAppIsStoppedEverywhere) {
  AddDea("dea1");
  AddDea("dea2");
  AddApp("api", 1);
  AddApp("web", 2);
  Boot();
  Converge();
  apps_.pop_back();
  auto actions = Evaluate();
  ASSERT_THAT(actions, SizeIs(2));
  EXPECT_THAT(actions, Each(AllOf(IsStop(), Field(&Action::app, "web"),
                                  Field(&Action::reason, "app deleted"))));
  EXPECT_LT(actions[0].instance_id, actions[1].instance_id);
  Apply(actions);
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_THAT(Live("web"), IsEmpty());
  EXPECT_EQ(hm_->AppHealth("web").message, "not evaluated yet");
}

TEST_F(HealthTest, NewVersionReplacesOldInstancesOnceTheyRun) {
  AddDea("dea1");
  AddDea("dea2");
  AddApp("web", 2);
  Boot();
  Converge();
  App("web").version = 2;
  auto starts = Evaluate();
  ASSERT_THAT(starts, SizeIs(2));
  EXPECT_THAT(starts, Each(AllOf(IsStart(), Field(&Action::app_version, 2))));
  Apply(starts);
  Wait(milliseconds(500));
  EXPECT_THAT(Evaluate(), IsEmpty());  // the old ones keep serving while the new start

  // Index 0's new instance runs first: only its old one goes.
  for (auto& [id, dea] : deas_) {
    for (InstanceReport& r : dea.instances) {
      if (r.app_version == 2 && r.index == 0) r.state = "RUNNING";
    }
  }
  auto stops = Evaluate();
  ASSERT_THAT(stops,
              ElementsAre(AllOf(IsStop(), Field(&Action::index, 0), Field(&Action::app_version, 1),
                                Field(&Action::reason, "replaced by version 2"))));
  Apply(stops);
  AllRunning();
  stops = Evaluate();
  ASSERT_THAT(stops, ElementsAre(AllOf(IsStop(), Field(&Action::index, 1),
                                       Field(&Action::app_version, 1))));
  Apply(stops);
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_THAT(Live("web"), AllOf(SizeIs(2), Each(Field(&InstanceReport::app_version, 2))));
  EXPECT_EQ(hm_->AppHealth("web").state, "RUNNING");
}

TEST_F(HealthTest, PendingStartIsNotDuplicatedUntilItTimesOut) {
  AddDea("dea1");
  AddApp("web", 1);
  Boot();
  auto first = Evaluate();
  ASSERT_THAT(first, SizeIs(1));
  // The DEA never reports the instance (the request was lost).
  Wait(milliseconds(29'500));
  EXPECT_THAT(Evaluate(), IsEmpty());
  Wait(milliseconds(500));
  EXPECT_THAT(Evaluate(), ElementsAre(AllOf(IsStart(), Field(&Action::index, 0))));
}

TEST_F(HealthTest, StoppingAnAppForgetsItsPendingStarts) {
  AddDea("dea1");
  AddApp("web", 1);
  Boot();
  ASSERT_THAT(Evaluate(), SizeIs(1));
  App("web").state = "STOPPED";
  EXPECT_THAT(Evaluate(), IsEmpty());
  App("web").state = "STARTED";
  EXPECT_THAT(Evaluate(), ElementsAre(AllOf(IsStart(), Field(&Action::index, 0))));
}

TEST_F(HealthTest, PendingStartOnADeaThatDiesIsStartedElsewhere) {
  AddDea("dea1");
  AddDea("dea2");
  AddApp("web", 1);
  Boot();
  auto first = Evaluate();
  ASSERT_THAT(first, SizeIs(1));
  const std::string target = first[0].dea_node_id;
  deas_[target].alive = false;
  Wait(milliseconds(1600));
  auto again = Evaluate();
  ASSERT_THAT(again, SizeIs(1));
  EXPECT_NE(again[0].dea_node_id, target);
}

TEST_F(HealthTest, StopIsResentOnlyAfterTheTimeout) {
  AddDea("dea1");
  AddApp("web", 1);
  Boot();
  Converge();
  apps_.clear();
  auto stop = Evaluate();
  ASSERT_THAT(stop, SizeIs(1));
  Wait(seconds(29));
  EXPECT_THAT(Evaluate(), IsEmpty());  // the DEA is still stopping it
  Wait(seconds(1));
  EXPECT_EQ(Evaluate(), stop);
}

TEST_F(HealthTest, UnplaceableAppIsReported) {
  AddDea("dea1", 512);
  AddApp("web", 1, 1024);
  Boot();
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(hm_->AppHealth("web"),
            (AppHealthStatus{"UNPLACEABLE",
                             "no DEA can fit instance 0 of app 'web' (needs 1024 MB; the most "
                             "free on any DEA is 512 MB on 10.0.0.1)"}));
  AddDea("dea2", 2048);
  auto actions = Evaluate();
  ASSERT_THAT(actions, ElementsAre(AllOf(IsStart(), Field(&Action::dea_node_id, "dea2"))));
  EXPECT_EQ(hm_->AppHealth("web").state, "STARTING");
}

TEST_F(HealthTest, PendingStartsHoldMemory) {
  AddDea("dea1", 1024);
  AddApp("a", 1, 600);
  AddApp("b", 1, 600);
  Boot();
  EXPECT_THAT(Evaluate(), ElementsAre(Field(&Action::app, "a")));
  EXPECT_EQ(hm_->AppHealth("b").state, "UNPLACEABLE");
  // Still unreported: its memory stays taken.
  Wait(milliseconds(500));
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(hm_->AppHealth("b").state, "UNPLACEABLE");
}

TEST_F(HealthTest, NoDeaUpMakesEveryAppUnplaceable) {
  AddApp("web", 1);
  Boot();
  EXPECT_THAT(Evaluate(), IsEmpty());
  EXPECT_EQ(hm_->AppHealth("web").state, "UNPLACEABLE");
  EXPECT_THAT(hm_->AppHealth("web").message, HasSubstr("no DEA is up"));
}

TEST_F(HealthTest, DeterministicGivenTheSameInputs) {
  auto run = [] {
    FakeClock clock;
    HealthManager hm(clock);
    std::vector<DeaInfo> deas = {{"b", "10.0.0.2", 2048, true},
                                 {"a", "10.0.0.1", 2048, true},
                                 {"c", "10.0.0.3", 4096, true}};
    for (const DeaInfo& d : deas) hm.ObserveDea(d, {});
    clock.advance(seconds(2));
    for (const DeaInfo& d : deas) hm.ObserveDea(d, {});
    return hm.Evaluate(
        {AppSpec{"web", 4, 512, "STARTED", 1}, AppSpec{"api", 2, 256, "STARTED", 1}});
  };
  auto first = run();
  EXPECT_THAT(first, SizeIs(6));
  EXPECT_EQ(first, run());
}

}  // namespace
}  // namespace kato
