#include "store/store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/pg_test_server.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Which store a test runs against: every behavioural test runs on both.
enum class Backend { kSqlite, kPostgres };

std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kSqlite ? "Sqlite" : "Postgres";
}

class StoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kato_store_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state.db";
    if (GetParam() == Backend::kSqlite) {
      spec_ = path_;
    } else {
      auto pg = PgTestServer::Get();
      ASSERT_TRUE(pg.ok()) << pg.error();
      auto url = (*pg)->NewDatabase();
      ASSERT_TRUE(url.ok()) << url.error();
      spec_ = *url;
    }
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Reopen() {
    store_.reset();
    auto s = OpenStore(spec_);
    ASSERT_TRUE(s.ok()) << s.error();
    store_ = std::move(*s);
  }

  int64_t Rev() {
    auto r = store_->Revision();
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? *r : -1;
  }

  // Runs `sql` on the database file behind the store's back.
  void RawExec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }

  static NodeRecord Node(std::string id, std::string ip, int64_t joined_ms = 1000) {
    return {.id = std::move(id),
            .ip = std::move(ip),
            .hostname = "host",
            .version = "0.1.0",
            .roles = {"base", "router"},
            .joined_ms = joined_ms};
  }

  std::string dir_;
  std::string path_;  // the SQLite file (SQLite only)
  std::string spec_;  // what OpenStore opens: path_ or a PostgreSQL URL
  std::unique_ptr<Store> store_;
};

// Cases about SQLite's files and schema.
class SqliteStoreTest : public StoreTest {};

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         BackendName);
INSTANTIATE_TEST_SUITE_P(Stores, SqliteStoreTest, ::testing::Values(Backend::kSqlite), BackendName);

#define ASSERT_OK(expr)                 \
  do {                                  \
    auto r_ = (expr);                   \
    ASSERT_TRUE(r_.ok()) << r_.error(); \
  } while (0)

TEST_P(StoreTest, NewStoreIsEmptyAtRevisionZero) {
  EXPECT_EQ(Rev(), 0);
  EXPECT_TRUE(store_->ListNodes()->empty());
  EXPECT_TRUE(store_->ListConfig("")->empty());
  EXPECT_TRUE(store_->ListHistory(10)->empty());
  EXPECT_FALSE(store_->GetSetting("endpoint")->has_value());
}

TEST_P(StoreTest, Settings) {
  ASSERT_OK(store_->SetSetting("endpoint", "api.example.com"));
  ASSERT_OK(store_->SetSetting("core_ip", "10.0.0.1"));
  ASSERT_OK(store_->SetSetting("endpoint", "api2.example.com"));
  EXPECT_EQ(store_->GetSetting("endpoint")->value(), "api2.example.com");
  EXPECT_EQ(store_->GetSetting("core_ip")->value(), "10.0.0.1");
  EXPECT_FALSE(store_->GetSetting("ca_cert")->has_value());
  EXPECT_EQ(Rev(), 3);
  EXPECT_FALSE(store_->SetSetting("", "x").ok());
  EXPECT_EQ(Rev(), 3);
}

TEST_P(StoreTest, SettingValuesAreStoredVerbatim) {
  // Bound parameters, not SQL text: quotes and NULs go through untouched.
  std::string tricky = std::string("it's'); DROP TABLE settings;--\n\0end", 36);
  ASSERT_OK(store_->SetSetting("ca_cert", tricky));
  EXPECT_EQ(store_->GetSetting("ca_cert")->value(), tricky);
}

TEST_P(StoreTest, PutGetFindListNodes) {
  NodeRecord a = Node("n-a", "10.0.0.5", 2000);
  NodeRecord b = Node("n-b", "10.0.0.6", 1000);
  NodeRecord c = Node("n-c", "10.0.0.7", 2000);
  c.roles = {};
  ASSERT_OK(store_->PutNode(a));
  ASSERT_OK(store_->PutNode(b));
  ASSERT_OK(store_->PutNode(c));
  EXPECT_EQ(store_->GetNode("n-a")->value(), a);
  EXPECT_EQ(store_->GetNode("n-c")->value(), c);
  EXPECT_FALSE(store_->GetNode("n-z")->has_value());
  EXPECT_EQ(store_->FindNodeByIp("10.0.0.6")->value(), b);
  EXPECT_FALSE(store_->FindNodeByIp("10.0.0.9")->has_value());
  // Ordered by joined_ms, then id.
  EXPECT_THAT(*store_->ListNodes(), ElementsAre(b, a, c));
  EXPECT_EQ(Rev(), 3);
}

TEST_P(StoreTest, PutNodeReplacesByIdIncludingRolesAndIp) {
  ASSERT_OK(store_->PutNode(Node("n-a", "10.0.0.5")));
  NodeRecord moved = Node("n-a", "10.0.0.50");
  moved.hostname = "renamed";
  moved.roles = {"dea"};
  ASSERT_OK(store_->PutNode(moved));
  EXPECT_EQ(store_->GetNode("n-a")->value(), moved);
  EXPECT_FALSE(store_->FindNodeByIp("10.0.0.5")->has_value());
  EXPECT_EQ(store_->ListNodes()->size(), 1u);
  EXPECT_EQ(Rev(), 2);
}

TEST_P(StoreTest, PutNodeWithTakenIpFailsAndChangesNothing) {
  NodeRecord a = Node("n-a", "10.0.0.5");
  NodeRecord b = Node("n-b", "10.0.0.6");
  ASSERT_OK(store_->PutNode(a));
  ASSERT_OK(store_->PutNode(b));
  int64_t rev = Rev();

  NodeRecord clash = Node("n-b", "10.0.0.5");
  clash.roles = {"dea"};
  Status st = store_->PutNode(clash);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error(), "address 10.0.0.5 is already used by node n-a");
  EXPECT_FALSE(store_->PutNode(Node("n-new", "10.0.0.6")).ok());

  EXPECT_EQ(Rev(), rev);
  EXPECT_EQ(store_->GetNode("n-a")->value(), a);
  EXPECT_EQ(store_->GetNode("n-b")->value(), b);
  EXPECT_FALSE(store_->GetNode("n-new")->has_value());
  // The store is still usable after the rolled-back transaction.
  ASSERT_OK(store_->PutNode(Node("n-new", "10.0.0.7")));
  EXPECT_EQ(Rev(), rev + 1);
}

TEST_P(StoreTest, PutNodeRejectsEmptyIdOrIp) {
  EXPECT_FALSE(store_->PutNode(Node("", "10.0.0.5")).ok());
  EXPECT_FALSE(store_->PutNode(Node("n-a", "")).ok());
  EXPECT_EQ(Rev(), 0);
}

TEST_P(StoreTest, RemoveNodeLeavesTombstoneUntilCleared) {
  ASSERT_OK(store_->PutNode(Node("n-a", "10.0.0.5")));
  EXPECT_FALSE(*store_->IsRemoved("n-a"));
  ASSERT_OK(store_->RemoveNode("n-a"));
  EXPECT_EQ(Rev(), 2);
  EXPECT_FALSE(store_->GetNode("n-a")->has_value());
  EXPECT_FALSE(store_->FindNodeByIp("10.0.0.5")->has_value());
  EXPECT_TRUE(*store_->IsRemoved("n-a"));
  EXPECT_FALSE(*store_->IsRemoved("n-b"));

  // Its IP is free again, for a different node.
  ASSERT_OK(store_->PutNode(Node("n-b", "10.0.0.5")));

  ASSERT_OK(store_->ClearRemoved("n-a"));
  EXPECT_FALSE(*store_->IsRemoved("n-a"));
  EXPECT_EQ(Rev(), 4);

  // The roles went with the node: re-adding it starts from what is given.
  NodeRecord again = Node("n-a", "10.0.0.8");
  again.roles = {"dea"};
  ASSERT_OK(store_->PutNode(again));
  EXPECT_EQ(store_->GetNode("n-a")->value(), again);
}

TEST_P(StoreTest, RemoveUnknownNodeFailsAndChangesNothing) {
  Status st = store_->RemoveNode("n-x");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error(), "no node with id n-x");
  EXPECT_FALSE(*store_->IsRemoved("n-x"));
  EXPECT_EQ(Rev(), 0);
}

TEST_P(StoreTest, Tokens) {
  TokenRecord t1{.secret_hash = "aa11", .created_ms = 10, .expires_ms = 0, .revoked = false};
  TokenRecord t2{.secret_hash = "bb22", .created_ms = 20, .expires_ms = 99, .revoked = false};
  ASSERT_OK(store_->AddToken(t1));
  ASSERT_OK(store_->AddToken(t2));
  EXPECT_EQ(store_->FindToken("aa11")->value(), t1);
  EXPECT_EQ(store_->FindToken("bb22")->value(), t2);
  EXPECT_FALSE(store_->FindToken("cc33")->has_value());

  Status dup = store_->AddToken(t1);
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(dup.error(), HasSubstr("already exists"));
  EXPECT_EQ(Rev(), 2);

  ASSERT_OK(store_->RevokeAllTokens());
  EXPECT_TRUE(store_->FindToken("aa11")->value().revoked);
  EXPECT_TRUE(store_->FindToken("bb22")->value().revoked);
  EXPECT_EQ(Rev(), 3);
  // Nothing left to revoke: nothing changed, so no new revision.
  ASSERT_OK(store_->RevokeAllTokens());
  EXPECT_EQ(Rev(), 3);
}

TEST_P(StoreTest, ConfigSetGetListDelete) {
  ConfigEntry port{.component = "router", .key = "port", .value_json = "8080"};
  ConfigEntry hosts{.component = "router", .key = "hosts", .value_json = R"(["a", "b"])"};
  ConfigEntry quota{.component = "controller", .key = "quota", .value_json = R"({"mem": 2048})"};
  ASSERT_OK(store_->SetConfig(port));
  ASSERT_OK(store_->SetConfig(hosts));
  ASSERT_OK(store_->SetConfig(quota));
  EXPECT_EQ(store_->GetConfig("router", "port")->value(), port);
  EXPECT_FALSE(store_->GetConfig("router", "nope")->has_value());
  EXPECT_THAT(*store_->ListConfig("router"), ElementsAre(hosts, port));
  EXPECT_THAT(*store_->ListConfig(""), ElementsAre(quota, hosts, port));
  EXPECT_TRUE(store_->ListConfig("dea")->empty());

  port.value_json = "9090";
  ASSERT_OK(store_->SetConfig(port));
  EXPECT_EQ(store_->GetConfig("router", "port")->value(), port);
  EXPECT_EQ(Rev(), 4);

  EXPECT_TRUE(*store_->DeleteConfig("router", "port"));
  EXPECT_EQ(Rev(), 5);
  EXPECT_FALSE(*store_->DeleteConfig("router", "port"));
  EXPECT_EQ(Rev(), 5);
  EXPECT_FALSE(store_->GetConfig("router", "port")->has_value());
}

TEST_P(StoreTest, ConfigRejectsInvalidJson) {
  ASSERT_OK(store_->SetConfig({.component = "router", .key = "port", .value_json = "8080"}));
  for (const char* bad : {"", "{", "[1,]", "nope", "{'a': 1}", "8080 8081"}) {
    Status st = store_->SetConfig({.component = "router", .key = "port", .value_json = bad});
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_THAT(st.error(), HasSubstr("not valid JSON"));
  }
  EXPECT_FALSE(store_->SetConfig({.component = "", .key = "port", .value_json = "1"}).ok());
  EXPECT_FALSE(store_->SetConfig({.component = "router", .key = "", .value_json = "1"}).ok());
  EXPECT_EQ(store_->GetConfig("router", "port")->value().value_json, "8080");
  EXPECT_EQ(Rev(), 1);
  for (const char* good : {"\"text\"", "true", "null", "-1.5e3", " {\"a\": [1, {}]} "}) {
    EXPECT_TRUE(store_->SetConfig({.component = "c", .key = "k", .value_json = good}).ok()) << good;
  }
}

TEST_P(StoreTest, HistoryIsOrderedAndLimited) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK(store_->AppendHistory({.id = 999,  // ignored: the store assigns ids
                                     .time_ms = 100 + i,
                                     .node = "10.0.0.5",
                                     .user = "admin",
                                     .command = "cmd " + std::to_string(i)}));
  }
  EXPECT_EQ(Rev(), 5);
  auto all = store_->ListHistory(100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 5u);
  for (size_t i = 0; i < all->size(); ++i) {
    EXPECT_EQ((*all)[i].command, "cmd " + std::to_string(i));
    EXPECT_EQ((*all)[i].time_ms, 100 + static_cast<int64_t>(i));
    if (i > 0) {
      EXPECT_GT((*all)[i].id, (*all)[i - 1].id);
    }
  }
  EXPECT_EQ((*all)[0].node, "10.0.0.5");
  EXPECT_EQ((*all)[0].user, "admin");

  auto last2 = store_->ListHistory(2);
  ASSERT_TRUE(last2.ok());
  EXPECT_THAT(*last2, ElementsAre((*all)[3], (*all)[4]));
  EXPECT_TRUE(store_->ListHistory(0)->empty());
  EXPECT_FALSE(store_->ListHistory(-1).ok());
  EXPECT_EQ(Rev(), 5);
}

TEST_P(StoreTest, ReadsDoNotBumpRevision) {
  ASSERT_OK(store_->PutNode(Node("n-a", "10.0.0.5")));
  ASSERT_OK(store_->SetSetting("k", "v"));
  ASSERT_OK(store_->AddToken({.secret_hash = "h"}));
  ASSERT_OK(store_->SetConfig({.component = "c", .key = "k", .value_json = "1"}));
  ASSERT_OK(store_->AppendHistory({.command = "x"}));
  ASSERT_EQ(Rev(), 5);
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(store_->GetSetting("k"));
    ASSERT_OK(store_->GetNode("n-a"));
    ASSERT_OK(store_->FindNodeByIp("10.0.0.5"));
    ASSERT_OK(store_->ListNodes());
    ASSERT_OK(store_->IsRemoved("n-a"));
    ASSERT_OK(store_->FindToken("h"));
    ASSERT_OK(store_->GetConfig("c", "k"));
    ASSERT_OK(store_->ListConfig(""));
    ASSERT_OK(store_->ListHistory(10));
    ASSERT_OK(store_->Revision());
  }
  EXPECT_EQ(Rev(), 5);
}

TEST_P(StoreTest, EverythingSurvivesCloseAndReopen) {
  NodeRecord a = Node("n-a", "10.0.0.5");
  TokenRecord t{.secret_hash = "aa11", .created_ms = 1, .expires_ms = 2, .revoked = false};
  ConfigEntry c{.component = "router", .key = "port", .value_json = "8080"};
  ASSERT_OK(store_->SetSetting("endpoint", "api.example.com"));
  ASSERT_OK(store_->PutNode(a));
  ASSERT_OK(store_->PutNode(Node("n-b", "10.0.0.6")));
  ASSERT_OK(store_->RemoveNode("n-b"));
  ASSERT_OK(store_->AddToken(t));
  ASSERT_OK(store_->SetConfig(c));
  ASSERT_OK(store_->AppendHistory({.time_ms = 5, .node = "10.0.0.5", .command = "x"}));
  int64_t rev = Rev();

  Reopen();
  EXPECT_EQ(Rev(), rev);
  EXPECT_EQ(store_->GetSetting("endpoint")->value(), "api.example.com");
  EXPECT_THAT(*store_->ListNodes(), ElementsAre(a));
  EXPECT_TRUE(*store_->IsRemoved("n-b"));
  EXPECT_EQ(store_->FindToken("aa11")->value(), t);
  EXPECT_EQ(store_->GetConfig("router", "port")->value(), c);
  ASSERT_EQ(store_->ListHistory(10)->size(), 1u);
  EXPECT_EQ(store_->ListHistory(10)->front().command, "x");
  // History ids keep increasing across restarts.
  ASSERT_OK(store_->AppendHistory({.command = "y"}));
  auto h = store_->ListHistory(10);
  EXPECT_GT((*h)[1].id, (*h)[0].id);
}

TEST_P(StoreTest, CommittedWritesSurviveProcessDeathWithoutClose) {
  store_.reset();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child dies without closing the store: nothing but the committed WAL
    // is left behind.
    auto s = OpenStore(spec_);
    bool ok =
        s.ok() && (*s)->SetSetting("k", "v").ok() && (*s)->PutNode(Node("n-a", "10.0.0.5")).ok();
    std::unique_ptr<Store> leaked = ok ? std::move(*s) : nullptr;
    leaked.release();  // NOLINT: on purpose, no destructor runs
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  Reopen();
  EXPECT_EQ(Rev(), 2);
  EXPECT_EQ(store_->GetSetting("k")->value(), "v");
  EXPECT_TRUE(store_->GetNode("n-a")->has_value());
}

TEST_P(SqliteStoreTest, DatabaseFilesArePrivate) {
  ASSERT_OK(store_->SetSetting("k", "v"));
  for (const std::string& p : {path_, path_ + "-wal", path_ + "-shm"}) {
    struct stat st;
    ASSERT_EQ(::stat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << p;
  }
  // An existing file with loose permissions is tightened on open.
  store_.reset();
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  Reopen();
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_P(SqliteStoreTest, UsesWalAndFullSync) {
  // WAL persists in the file header; check it from an independent connection.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_P(StoreTest, ConcurrentCallsFromFourThreads) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25;  // 4 mutations each
  std::vector<std::thread> threads;
  std::vector<std::string> errors[kThreads];
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto check = [&](const auto& r) {
        if (!r.ok()) errors[t].push_back(r.error());
      };
      for (int i = 0; i < kPerThread; ++i) {
        std::string n = std::to_string(t) + "-" + std::to_string(i);
        check(store_->SetSetting("s" + n, n));
        check(
            store_->PutNode(Node("n" + n, "10." + std::to_string(t) + ".0." + std::to_string(i))));
        check(store_->SetConfig(
            {.component = "c", .key = n, .value_json = "[" + n.substr(0, 1) + "]"}));
        check(store_->AppendHistory({.command = n}));
        check(store_->ListNodes());
        check(store_->GetSetting("s" + n));
        check(store_->Revision());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_TRUE(errors[t].empty()) << errors[t].front();
  EXPECT_EQ(Rev(), kThreads * kPerThread * 4);
  EXPECT_EQ(store_->ListNodes()->size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(store_->ListHistory(1000)->size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(store_->ListConfig("c")->size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST_P(SqliteStoreTest, OpeningAnUnusablePathGivesAClearError) {
  auto missing_dir = OpenSqliteStore(dir_ + "/no/such/dir/state.db");
  ASSERT_FALSE(missing_dir.ok());
  EXPECT_THAT(missing_dir.error(),
              HasSubstr("cannot open state store " + dir_ + "/no/such/dir/state.db: "));
  EXPECT_THAT(missing_dir.error(), HasSubstr("No such file or directory"));

  // A directory where the file should be.
  auto is_dir = OpenSqliteStore(dir_);
  ASSERT_FALSE(is_dir.ok());
  EXPECT_THAT(is_dir.error(), HasSubstr("cannot open state store " + dir_ + ": "));

  // Under a regular file (root ignores permission bits, but not this).
  auto under_file = OpenSqliteStore(path_ + "/state.db");
  ASSERT_FALSE(under_file.ok());
  EXPECT_THAT(under_file.error(), HasSubstr("Not a directory"));
}

TEST_P(SqliteStoreTest, OpeningAFileThatIsNotADatabaseFails) {
  std::string junk = dir_ + "/junk.db";
  FILE* f = std::fopen(junk.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("this is not an SQLite database, just some text that is long enough to matter\n", f);
  std::fclose(f);
  auto s = OpenSqliteStore(junk);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr(junk));
  EXPECT_THAT(s.error(), HasSubstr("file is not a database"));
}

TEST_P(SqliteStoreTest, RefusesASchemaNewerThanItKnows) {
  store_.reset();
  RawExec("UPDATE meta SET value = 99 WHERE key = 'schema_version'");
  auto s = OpenSqliteStore(path_);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("schema version is 99"));
  EXPECT_THAT(s.error(), HasSubstr("upgrade kato"));
}

}  // namespace
}  // namespace kato

namespace kato {
namespace {

class DocsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-docs-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/state.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_P(StoreTest, DocsPutGetListDeleteBumpRevision) {
  Store& s = *store_;
  int64_t r0 = *s.Revision();
  ASSERT_TRUE(s.PutDoc("app", "web", R"({"instances":3})").ok());
  ASSERT_TRUE(s.PutDoc("app", "api", R"({"instances":1})").ok());
  ASSERT_TRUE(s.PutDoc("assignment", "web/0", R"({"node":"n1"})").ok());
  EXPECT_EQ(*s.Revision(), r0 + 3);
  EXPECT_EQ(**s.GetDoc("app", "web"), R"({"instances":3})");
  EXPECT_FALSE(s.GetDoc("app", "nope")->has_value());
  auto apps = s.ListDocs("app");
  ASSERT_TRUE(apps.ok());
  ASSERT_EQ(apps->size(), 2u);
  EXPECT_EQ((*apps)[0].first, "api");  // ordered by key
  ASSERT_TRUE(s.PutDoc("app", "web", R"({"instances":4})").ok());
  EXPECT_EQ(**s.GetDoc("app", "web"), R"({"instances":4})");
  EXPECT_TRUE(*s.DeleteDoc("app", "web"));
  EXPECT_FALSE(*s.DeleteDoc("app", "web"));
  int64_t r1 = *s.Revision();
  EXPECT_FALSE(s.PutDoc("app", "bad", "{not json").ok());
  EXPECT_FALSE(s.PutDoc("", "x", "1").ok());
  EXPECT_EQ(*s.Revision(), r1);  // refused writes change nothing
}

TEST_P(StoreTest, WriteDocsAppliesAllInOneRevision) {
  Store& s = *store_;
  ASSERT_TRUE(s.PutDoc("assignment", "web/0/a", R"({"node":"n1"})").ok());
  int64_t r0 = *s.Revision();
  std::vector<DocWrite> writes;
  for (int i = 1; i <= 1500; ++i)
    writes.push_back({"assignment", "web/" + std::to_string(i) + "/x", R"({"node":"n2"})"});
  writes.push_back({"assignment", "web/0/a", std::nullopt});
  writes.push_back({"assignment", "web/9999/gone", std::nullopt});  // not there: no error
  writes.push_back({"assignment", "web/1/x", R"({"node":"n3"})"});    // in order: the last wins
  ASSERT_TRUE(s.WriteDocs(writes).ok());
  EXPECT_EQ(*s.Revision(), r0 + 1);
  auto docs = s.ListDocs("assignment");
  ASSERT_TRUE(docs.ok());
  EXPECT_EQ(docs->size(), 1500u);
  EXPECT_FALSE(s.GetDoc("assignment", "web/0/a")->has_value());
  EXPECT_EQ(**s.GetDoc("assignment", "web/1/x"), R"({"node":"n3"})");
  // Deleting only what is not there changes nothing, not even the revision.
  ASSERT_TRUE(s.WriteDocs({{"assignment", "nope/0/x", std::nullopt}}).ok());
  ASSERT_TRUE(s.WriteDocs({}).ok());
  EXPECT_EQ(*s.Revision(), r0 + 1);
}

TEST_P(StoreTest, WriteDocsWithOneBadWriteChangesNothing) {
  Store& s = *store_;
  int64_t r0 = *s.Revision();
  std::vector<DocWrite> writes{{"app", "a", "1"}, {"app", "b", "{not json"}};
  auto st = s.WriteDocs(writes);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().find("app/b is not valid JSON"), std::string::npos) << st.error();
  EXPECT_FALSE(s.WriteDocs({{"app", "", "1"}}).ok());
  EXPECT_FALSE(s.WriteDocs(std::vector<DocWrite>(kMaxDocWrites + 1, {"app", "a", "1"})).ok());
  EXPECT_EQ(*s.Revision(), r0);
  EXPECT_FALSE(s.GetDoc("app", "a")->has_value());
}

TEST_F(DocsTest, UpgradesAVersion1Store) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    // The version 1 layout as kato 0.1's first builds wrote it (docs table absent).
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                           "INSERT INTO meta VALUES ('schema_version', 1), ('revision', 7);"
                           "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                           "INSERT INTO settings VALUES ('core_ip', '10.0.0.1');",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = OpenSqliteStore(path_);
  ASSERT_TRUE(store.ok()) << store.error();
  EXPECT_EQ(**(*store)->GetSetting("core_ip"), "10.0.0.1");
  EXPECT_EQ(*(*store)->Revision(), 7);
  EXPECT_TRUE((*store)->PutDoc("app", "web", "{}").ok());
  EXPECT_TRUE(*(*store)->AcquireLease("leader", "a", 0, 1000));  // version 3's leases table
  store->reset();
  auto again = OpenSqliteStore(path_);  // already at the current version: opens as is
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(**(*again)->GetDoc("app", "web"), "{}");
  EXPECT_EQ((*(*again)->GetLease("leader"))->holder, "a");
}

TEST_P(StoreTest, LeaseIsExclusiveUntilItExpires) {
  Store& s = *store_;
  EXPECT_FALSE(s.GetLease("leader")->has_value());
  int64_t r0 = *s.Revision();
  EXPECT_TRUE(*s.AcquireLease("leader", "a", 1000, 3000));
  EXPECT_EQ(*s.Revision(), r0 + 1);  // a new holder wakes watchers
  EXPECT_FALSE(*s.AcquireLease("leader", "b", 3999, 3000));
  EXPECT_EQ(*s.Revision(), r0 + 1);  // refused: nothing changed
  EXPECT_TRUE(*s.AcquireLease("leader", "a", 3500, 3000));  // renewal
  EXPECT_EQ(*s.Revision(), r0 + 1);                         // renewals are silent
  EXPECT_EQ(**s.GetLease("leader"), (LeaseRecord{"leader", "a", 6500}));
  EXPECT_FALSE(*s.AcquireLease("leader", "b", 6499, 3000));
  EXPECT_TRUE(*s.AcquireLease("leader", "b", 6500, 3000));  // expired: taken over
  EXPECT_EQ((*s.GetLease("leader"))->holder, "b");
  EXPECT_TRUE(s.ReleaseLease("leader", "a").ok());  // not a's any more: no-op
  EXPECT_EQ((*s.GetLease("leader"))->holder, "b");
  EXPECT_TRUE(s.ReleaseLease("leader", "b").ok());
  EXPECT_FALSE(s.GetLease("leader")->has_value());
  EXPECT_TRUE(*s.AcquireLease("leader", "a", 7000, 3000));  // free again at once
  EXPECT_FALSE(s.AcquireLease("", "a", 0, 1).ok());
  EXPECT_FALSE(s.AcquireLease("x", "a", 0, 0).ok());
}

}  // namespace
}  // namespace kato
