#include "services/service_reconciler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "services/service_fakes_test.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A driver that does what it is told and counts what it was asked.
class FakeDriver final : public ServiceDriver {
 public:
  Status Prepare() override {
    ++prepares;
    return prepare_error.empty() ? Status(Ok()) : Status(Err(prepare_error));
  }
  Result<Progress> Provision(const ServiceRecord& s) override {
    provisioned.push_back(s.id);
    if (!error.empty()) return Err(error);
    return pending ? Progress::kPending : Progress::kDone;
  }
  Result<Progress> Remove(const ServiceRecord& s) override {
    removed.push_back(s.id);
    if (!error.empty()) return Err(error);
    return pending ? Progress::kPending : Progress::kDone;
  }
  void Sweep(const std::set<std::string>& live) override { swept = live; }
  std::string prepare_error, error;
  bool pending = false;
  int prepares = 0;
  std::vector<std::string> provisioned, removed;
  std::set<std::string> swept;
};

class ReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-reconcile-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto s = OpenSqliteStore(dir_ + "/state.db");
    ASSERT_TRUE(s) << s.error();
    store_ = std::move(*s);
    rec_ = std::make_unique<ServiceReconciler>(*store_, "node-a",
                                               std::map<std::string, ServiceDriver*>{{"redis", &redis_}},
                                               clock_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Put(const ServiceRecord& s) { ASSERT_TRUE(store_->PutDoc("service", s.name, ServiceToJson(s))); }
  std::optional<ServiceState> State(const std::string& name) {
    auto d = store_->GetDoc("service_state", name);
    if (!d || !*d) return std::nullopt;
    return *ServiceStateFromJson(**d);
  }
  int64_t Revision() { return *store_->Revision(); }

  std::string dir_;
  std::unique_ptr<Store> store_;
  FakeClock clock_;
  FakeDriver redis_;
  std::unique_ptr<ServiceReconciler> rec_;
};

TEST_F(ReconcilerTest, ProvisionsOnceAndWritesReadyOnce) {
  Put(Record("redis"));
  EXPECT_FALSE(rec_->Round());
  auto st = State("redis-1");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->state, "READY");
  EXPECT_EQ(st->id, "0123456789abcdef");
  const int64_t rev = Revision();
  for (int i = 0; i < 3; ++i) rec_->Round();
  EXPECT_EQ(Revision(), rev);  // nothing rewritten: no watcher is woken
  EXPECT_THAT(redis_.provisioned, ElementsAre("0123456789abcdef"));
  EXPECT_EQ(redis_.prepares, 1);
  EXPECT_EQ(redis_.swept, std::set<std::string>{"0123456789abcdef"});
}

TEST_F(ReconcilerTest, AnUnreadableRecordStopsTheSweep) {
  Put(Record("redis"));
  rec_->Round();
  redis_.swept = {"untouched"};
  ASSERT_TRUE(store_->PutDoc("service", "odd", "{\"name\": 5}"));
  rec_->Round();
  EXPECT_EQ(redis_.swept, std::set<std::string>{"untouched"});  // it may be a service's data
}

TEST_F(ReconcilerTest, ARestartedProcessProvisionsAgainWithoutRewriting) {
  Put(Record("redis"));
  rec_->Round();
  const int64_t rev = Revision();
  ServiceReconciler again(*store_, "node-a", {{"redis", &redis_}}, clock_);
  again.Round();
  EXPECT_EQ(redis_.provisioned.size(), 2u);  // idempotent provisioning brings it back
  EXPECT_EQ(Revision(), rev);
}

TEST_F(ReconcilerTest, PendingAsksForAnotherRoundSoon) {
  Put(Record("redis"));
  redis_.pending = true;
  EXPECT_TRUE(rec_->Round());
  EXPECT_FALSE(State("redis-1"));
  redis_.pending = false;
  EXPECT_FALSE(rec_->Round());
  EXPECT_EQ(State("redis-1")->state, "READY");
}

TEST_F(ReconcilerTest, FailuresAreProvisioningThenFailed) {
  Put(Record("redis"));
  redis_.error = "redis-server does not start";
  rec_->Round();
  EXPECT_EQ(State("redis-1")->state, "PROVISIONING");
  EXPECT_THAT(State("redis-1")->message, HasSubstr("retrying: redis-server does not start"));
  const int64_t rev = Revision();
  rec_->Round();
  EXPECT_EQ(Revision(), rev);  // the same news is not written twice
  clock_.advance(Millis(20000));
  rec_->Round();
  EXPECT_EQ(State("redis-1")->state, "FAILED");
  EXPECT_EQ(State("redis-1")->message, "redis-server does not start");
  redis_.error.clear();
  rec_->Round();
  EXPECT_EQ(State("redis-1")->state, "READY");
  EXPECT_EQ(State("redis-1")->message, "");
}

TEST_F(ReconcilerTest, ServerNotPreparedYetIsRetried) {
  Put(Record("redis"));
  redis_.prepare_error = "connection refused";
  rec_->Round();
  EXPECT_THAT(State("redis-1")->message, HasSubstr("not ready yet: connection refused"));
  EXPECT_THAT(redis_.provisioned, IsEmpty());
  redis_.prepare_error.clear();
  rec_->Round();
  EXPECT_EQ(State("redis-1")->state, "READY");
  EXPECT_EQ(redis_.prepares, 2);
}

TEST_F(ReconcilerTest, BadRecordsFailAtOnceAndNeverReachTheDriver) {
  ServiceRecord s = Record("redis");
  s.password = "pw'; FLUSHALL; '";
  Put(s);
  rec_->Round();
  EXPECT_EQ(State("redis-1")->state, "FAILED");
  EXPECT_THAT(State("redis-1")->message, HasSubstr("password"));
  EXPECT_THAT(redis_.provisioned, IsEmpty());
  // Deleting it removes nothing (nothing was made) and drops the documents.
  s.state = "DELETING";
  Put(s);
  rec_->Round();
  EXPECT_THAT(redis_.removed, IsEmpty());
  EXPECT_FALSE(*store_->GetDoc("service", "redis-1"));
}

TEST_F(ReconcilerTest, DeletingRemovesThenDeletesBothDocuments) {
  ServiceRecord s = Record("redis");
  Put(s);
  rec_->Round();
  s.state = "DELETING";
  Put(s);
  redis_.pending = true;  // its process is stopping
  EXPECT_TRUE(rec_->Round());
  EXPECT_TRUE(*store_->GetDoc("service", "redis-1"));
  redis_.pending = false;
  rec_->Round();
  EXPECT_FALSE(*store_->GetDoc("service", "redis-1"));
  EXPECT_FALSE(State("redis-1"));
  EXPECT_THAT(redis_.removed, ElementsAre(s.id, s.id));
  rec_->Round();
  EXPECT_THAT(redis_.swept, IsEmpty());  // no document names it any more
}

TEST_F(ReconcilerTest, ARemovalThatFailsSaysWhyAndIsRetried) {
  ServiceRecord s = Record("redis");
  s.state = "DELETING";
  Put(s);
  redis_.error = "cannot remove /x: busy";
  rec_->Round();
  EXPECT_EQ(State("redis-1")->state, "FAILED");
  EXPECT_THAT(State("redis-1")->message, HasSubstr("cannot remove it (retrying): cannot remove /x"));
  redis_.error.clear();
  rec_->Round();
  EXPECT_FALSE(*store_->GetDoc("service", "redis-1"));
}

TEST_F(ReconcilerTest, OtherNodesAndHarborAreLeftAlone) {
  ServiceRecord other = Record("redis", "1111111111111111");
  other.name = "elsewhere";
  other.node_id = "node-b";
  Put(other);
  ServiceRecord harbor = Record("redis", "2222222222222222");
  harbor.name = "port";
  harbor.type = "harbor";
  Put(harbor);
  rec_->Round();
  EXPECT_THAT(redis_.provisioned, IsEmpty());
  EXPECT_FALSE(State("elsewhere"));
  EXPECT_FALSE(State("port"));
}

TEST_F(ReconcilerTest, ATypeThisNodeDoesNotServeFails) {
  Put(Record("postgresql"));
  rec_->Round();
  EXPECT_EQ(State("postgresql-1")->state, "FAILED");
  EXPECT_THAT(State("postgresql-1")->message, HasSubstr("serves no postgresql role"));
}

TEST_F(ReconcilerTest, ARecreatedNameGetsItsOwnState) {
  Put(Record("redis"));
  rec_->Round();
  ASSERT_TRUE(store_->DeleteDoc("service", "redis-1"));
  Put(Record("redis", "fedcba9876543210"));
  rec_->Round();
  EXPECT_EQ(State("redis-1")->id, "fedcba9876543210");
  EXPECT_EQ(redis_.swept, std::set<std::string>{"fedcba9876543210"});
}

}  // namespace
}  // namespace kato
