// PostgreSQL-specific store tests (the behavioural ones run on both stores in
// store_test.cc), and whole-state copies between stores.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/pg_test_server.h"
#include "store/store.h"

namespace kato {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Stops the private server (if a test started it) when the binary ends.
class PgEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { PgTestServer::StopIfStarted(); }
};
[[maybe_unused]] ::testing::Environment* const kPgEnv =
    ::testing::AddGlobalTestEnvironment(new PgEnvironment);

#define ASSERT_OK(expr)                 \
  do {                                  \
    auto r_ = (expr);                   \
    ASSERT_TRUE(r_.ok()) << r_.error(); \
  } while (0)

class PgStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = PgTestServer::Get();
    ASSERT_TRUE(pg.ok()) << pg.error();
    pg_ = *pg;
    auto url = pg_->NewDatabase();
    ASSERT_TRUE(url.ok()) << url.error();
    url_ = *url;
    db_ = url_.substr(url_.rfind('/') + 1);
  }
  std::unique_ptr<Store> Open(const std::string& url) {
    auto s = OpenStore(url);
    EXPECT_TRUE(s.ok()) << s.error();
    return s.ok() ? std::move(*s) : nullptr;
  }

  PgTestServer* pg_ = nullptr;
  std::string url_, db_;
};

TEST(StoreSpecTest, KindsAndMasking) {
  EXPECT_TRUE(IsPostgresUrl("postgresql://u:p@h:5432/d"));
  EXPECT_TRUE(IsPostgresUrl("postgres://h/d"));
  EXPECT_FALSE(IsPostgresUrl("/var/lib/kato/state.db"));
  EXPECT_FALSE(IsPostgresUrl("mysql://h/d"));
  EXPECT_EQ(StoreKind("postgres://h/d"), "postgresql");
  EXPECT_EQ(StoreKind("/x/state.db"), "sqlite");
  EXPECT_EQ(MaskStoreSpec("postgresql://kato:s3cr%40t@10.0.0.5:5432/kato"),
            "postgresql://kato:***@10.0.0.5:5432/kato");
  EXPECT_EQ(MaskStoreSpec("postgresql://kato@10.0.0.5/kato"), "postgresql://kato@10.0.0.5/kato");
  EXPECT_EQ(MaskStoreSpec("postgresql://10.0.0.5/kato?user=a"),
            "postgresql://10.0.0.5/kato?user=a");
  EXPECT_EQ(MaskStoreSpec("postgresql://10.0.0.5/kato?user=a&password=pw1&sslmode=require"),
            "postgresql://10.0.0.5/kato?user=a&password=***&sslmode=require");
  EXPECT_EQ(MaskStoreSpec("postgresql://u:p@10.0.0.5/kato?password=pw1"),
            "postgresql://u:***@10.0.0.5/kato?password=***");
  EXPECT_EQ(MaskStoreSpec("/x/state.db"), "/x/state.db");
}

TEST(StoreSpecTest, BadUrlsAreRefusedClearly) {
  EXPECT_THAT(CheckPostgresUrl("mysql://h/d").error(), HasSubstr("is not a PostgreSQL URL"));
  EXPECT_THAT(CheckPostgresUrl("not a url").error(), HasSubstr("is not a PostgreSQL URL"));
  EXPECT_THAT(CheckPostgresUrl("postgresql://").error(), HasSubstr("names no server"));
  EXPECT_THAT(CheckPostgresUrl("postgresql://h/d b").error(), HasSubstr("spaces"));
  EXPECT_TRUE(CheckPostgresUrl("postgresql://u:p@127.0.0.1:5432/d").ok());
  auto s = OpenStore("mysql://u:p@h/d");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("not a state store"));
}

TEST(StoreSpecTest, UnreachableServerIsAQuickOneLineError) {
  auto start = std::chrono::steady_clock::now();
  auto s = OpenStore("postgresql://kato:hunter2-pw@127.0.0.1:1/kato");
  ASSERT_FALSE(s.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_THAT(s.error(),
              HasSubstr("cannot open state store postgresql://kato:***@127.0.0.1:1/kato"));
  EXPECT_THAT(s.error(), HasSubstr("Connection refused"));
  EXPECT_THAT(s.error(), Not(HasSubstr("hunter2-pw")));
  EXPECT_THAT(s.error(), Not(HasSubstr("\n")));
}

TEST(StoreSpecTest, AServerThatNeverAnswersTimesOut) {
  // A listening socket that accepts connections (the kernel's backlog) but
  // never says a word: only the connect timeout ends the wait.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  std::string url = "postgresql://kato:pw@127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/x";
  auto start = std::chrono::steady_clock::now();
  auto s = OpenStore(url);
  auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  ASSERT_FALSE(s.ok());
  EXPECT_GE(took, std::chrono::seconds(4));
  EXPECT_LT(took, std::chrono::seconds(12));
  EXPECT_THAT(s.error(), HasSubstr("timeout expired"));
}

TEST_F(PgStoreTest, WrongPasswordIsRefusedWithoutShowingIt) {
  std::string bad = pg_->Url(db_, "wrong-Pass-9981");
  auto s = OpenStore(bad);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("password authentication failed"));
  EXPECT_THAT(s.error(), Not(HasSubstr("wrong-Pass-9981")));
  EXPECT_THAT(s.error(), Not(HasSubstr(PgTestServer::kPassword)));
  EXPECT_THAT(s.error(), Not(HasSubstr("\n")));
}

TEST_F(PgStoreTest, MissingDatabaseIsAClearError) {
  auto s = OpenStore(pg_->Url("no_such_db"));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("\"no_such_db\" does not exist"));
}

TEST_F(PgStoreTest, TextWithANulByteIsRefusedClearly) {
  auto store = Open(url_);
  ASSERT_TRUE(store);
  Status st = store->PutDoc("app", std::string("we\0b", 4), "{}");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error(), HasSubstr("NUL byte"));
  EXPECT_EQ(*store->Revision(), 0);
}

TEST_F(PgStoreTest, ReconnectsAfterTheServerRestarts) {
  auto store = Open(url_);
  ASSERT_TRUE(store);
  ASSERT_OK(store->SetSetting("k", "before"));
  ASSERT_OK(pg_->Restart());
  // The old connection is dead: the next calls reconnect by themselves.
  EXPECT_EQ(**store->GetSetting("k"), "before");
  ASSERT_OK(store->SetSetting("k", "after"));
  ASSERT_OK(pg_->Restart());
  ASSERT_OK(store->SetSetting("k2", "v"));
  EXPECT_EQ(**store->GetSetting("k"), "after");
  EXPECT_EQ(*store->Revision(), 3);
}

TEST_F(PgStoreTest, RefusesASchemaNewerThanItKnows) {
  { ASSERT_TRUE(Open(url_)); }
  ASSERT_OK(pg_->Exec(db_, "UPDATE meta SET value = 99 WHERE key = 'schema_version'"));
  auto s = OpenStore(url_);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("schema version is 99"));
  EXPECT_THAT(s.error(), HasSubstr("upgrade kato"));
}

TEST_F(PgStoreTest, TwoStoresOnOneDatabaseShareStateAndLeases) {
  auto a = Open(url_), b = Open(url_);
  ASSERT_TRUE(a && b);
  ASSERT_OK(a->PutNode({"n-a", "10.0.0.5", "h", "1", {"dea"}, 1}));
  EXPECT_EQ((*b->GetNode("n-a"))->ip, "10.0.0.5");
  EXPECT_EQ(*b->Revision(), 1);
  // The address check sees the other store's node.
  EXPECT_EQ(b->PutNode({"n-b", "10.0.0.5", "h", "1", {}, 2}).error(),
            "address 10.0.0.5 is already used by node n-a");
  // Leases exclude each other across stores.
  EXPECT_TRUE(*a->AcquireLease("leader", "ctl-a", 1000, 5000));
  EXPECT_FALSE(*b->AcquireLease("leader", "ctl-b", 2000, 5000));
  EXPECT_EQ((*b->GetLease("leader"))->holder, "ctl-a");
  EXPECT_TRUE(*b->AcquireLease("leader", "ctl-b", 6000, 5000));
  EXPECT_FALSE(*a->AcquireLease("leader", "ctl-a", 6001, 5000));
}

TEST_F(PgStoreTest, ConcurrentRacesBetweenStoresHaveOneWinner) {
  constexpr int kRounds = 20;
  auto a = Open(url_), b = Open(url_);
  ASSERT_TRUE(a && b);
  for (int i = 0; i < kRounds; ++i) {
    std::string ip = "10.1.0." + std::to_string(i), lease = "l" + std::to_string(i);
    bool node_a = false, node_b = false, lease_a = false, lease_b = false;
    std::thread ta([&] {
      node_a = a->PutNode({"a" + std::to_string(i), ip, "h", "1", {}, 1}).ok();
      lease_a = a->AcquireLease(lease, "a", 100, 1000).value();
    });
    std::thread tb([&] {
      node_b = b->PutNode({"b" + std::to_string(i), ip, "h", "1", {}, 1}).ok();
      lease_b = b->AcquireLease(lease, "b", 100, 1000).value();
    });
    ta.join();
    tb.join();
    EXPECT_NE(node_a, node_b) << "round " << i << ": exactly one node gets the address";
    EXPECT_NE(lease_a, lease_b) << "round " << i << ": exactly one holder";
  }
  EXPECT_EQ(*a->Revision(), 2 * kRounds);
}

// A store with one of everything (and a few of most).
void Fill(Store& s) {
  ASSERT_OK(s.SetSetting("endpoint", "api.example.com"));
  ASSERT_OK(
      s.SetSetting("ca_cert", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"));
  ASSERT_OK(s.PutNode({"n-core", "10.0.0.1", "core", "0.1.0", {"base", "primary", "router"}, 100}));
  ASSERT_OK(s.PutNode({"n-dea", "10.0.0.2", "dea1", "0.1.0", {"base", "dea"}, 200}));
  ASSERT_OK(s.PutNode({"n-gone", "10.0.0.3", "old", "0.1.0", {"dea"}, 300}));
  ASSERT_OK(s.PutDoc("instances", "n-gone", "[]"));
  ASSERT_OK(s.RemoveNode("n-gone"));
  ASSERT_OK(s.AddToken({"hash-old", 10, 0, false}));
  ASSERT_OK(s.RevokeAllTokens());
  ASSERT_OK(s.AddToken({"hash-new", 20, 99999, false}));
  ASSERT_OK(s.SetConfig({"router", "port", "8080"}));
  ASSERT_OK(s.SetConfig({"controller", "quota", R"({"mem": 2048})"}));
  ASSERT_OK(s.PutDoc("app", "web", R"({"instances": 2})"));
  ASSERT_OK(s.PutDoc("app", "api", R"({"instances": 1})"));
  ASSERT_OK(s.PutDoc("assignment", "web/0", R"({"node": "n-dea"})"));
  ASSERT_OK(s.PutDoc("instances", "n-dea", R"([{"app": "web"}])"));
  ASSERT_OK(s.AcquireLease("controller-leader", "n-core", 1000, 60000));
  for (int i = 0; i < 5; ++i)
    ASSERT_OK(s.AppendHistory({0, 1000 + i, "10.0.0.1", "root", "kato cmd " + std::to_string(i)}));
  ASSERT_OK(s.DeleteDoc("app", "api"));
}

TEST_F(PgStoreTest, CopyStoreMovesEverythingFromSqlite) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "kato_copy_test.XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  auto sqlite = OpenStore(tmpl + "/state.db");
  ASSERT_TRUE(sqlite.ok()) << sqlite.error();
  Store& from = **sqlite;
  Fill(from);
  auto pg = Open(url_);
  ASSERT_TRUE(pg);
  ASSERT_OK(CopyStore(from, *pg));

  // Field by field, through the ordinary calls.
  EXPECT_EQ(*pg->Revision(), *from.Revision());
  for (const char* k : {"endpoint", "ca_cert"})
    EXPECT_EQ(**pg->GetSetting(k), **from.GetSetting(k));
  EXPECT_EQ(*pg->ListNodes(), *from.ListNodes());
  EXPECT_EQ((*pg->GetNode("n-core"))->roles,
            (std::vector<std::string>{"base", "primary", "router"}));
  EXPECT_TRUE(*pg->IsRemoved("n-gone"));
  EXPECT_FALSE(*pg->IsRemoved("n-dea"));
  EXPECT_EQ(**pg->FindToken("hash-old"), **from.FindToken("hash-old"));
  EXPECT_TRUE((*pg->FindToken("hash-old"))->revoked);
  EXPECT_EQ(**pg->FindToken("hash-new"), (TokenRecord{"hash-new", 20, 99999, false}));
  EXPECT_EQ(*pg->ListConfig(""), *from.ListConfig(""));
  for (const char* kind : {"app", "assignment", "instances"})
    EXPECT_EQ(*pg->ListDocs(kind), *from.ListDocs(kind)) << kind;
  EXPECT_FALSE(pg->GetDoc("instances", "n-gone")->has_value());
  EXPECT_EQ(**pg->GetLease("controller-leader"), **from.GetLease("controller-leader"));
  EXPECT_EQ(*pg->ListHistory(100), *from.ListHistory(100));
  EXPECT_EQ(*pg->Dump(), *from.Dump());

  // The copy goes on from there: ids and revision continue, never repeat.
  int64_t rev = *pg->Revision();
  int64_t last_id = pg->ListHistory(1)->back().id;
  ASSERT_OK(pg->AppendHistory({0, 2000, "10.0.0.1", "root", "after"}));
  EXPECT_GT(pg->ListHistory(1)->back().id, last_id);
  EXPECT_EQ(*pg->Revision(), rev + 1);

  // A store that is not empty is refused, and keeps what it had.
  auto before = pg->Dump();
  Status again = CopyStore(from, *pg);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(again.error(), HasSubstr("not empty"));
  EXPECT_EQ(*pg->Dump(), *before);
  std::filesystem::remove_all(tmpl);
}

TEST_F(PgStoreTest, ACopyThatFailsHalfwayLeavesTheTargetEmpty) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "kato_copy_test.XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  auto sqlite = OpenStore(tmpl + "/state.db");
  ASSERT_TRUE(sqlite.ok()) << sqlite.error();
  Fill(**sqlite);
  // SQLite keeps a NUL byte in a text value; PostgreSQL cannot, and the docs
  // come after settings, nodes and tokens in the copy.
  ASSERT_OK((*sqlite)->PutDoc("app", std::string("we\0b", 4), "{}"));
  auto pg = Open(url_);
  ASSERT_TRUE(pg);
  Status st = CopyStore(**sqlite, *pg);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error(), HasSubstr("NUL byte"));
  EXPECT_TRUE(*IsEmptyStore(*pg));
  EXPECT_EQ(*pg->Revision(), 0);
  std::filesystem::remove_all(tmpl);
}

TEST_F(PgStoreTest, CopyStoreBackToSqliteRoundTrips) {
  auto pg = Open(url_);
  ASSERT_TRUE(pg);
  Fill(*pg);
  std::string tmpl = (std::filesystem::temp_directory_path() / "kato_copy_test.XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  auto sqlite = OpenStore(tmpl + "/state.db");
  ASSERT_TRUE(sqlite.ok()) << sqlite.error();
  ASSERT_OK(CopyStore(*pg, **sqlite));
  EXPECT_EQ(*(*sqlite)->Dump(), *pg->Dump());
  EXPECT_TRUE(*IsEmptyStore(*Open(pg_->NewDatabase().value())));
  EXPECT_FALSE(*IsEmptyStore(**sqlite));
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace kato
