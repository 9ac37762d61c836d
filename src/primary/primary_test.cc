#include "primary/primary.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/layout.h"
#include "common/pki.h"
#include "store/store.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr const char* kVersion = "0.1.3";
constexpr const char* kCoreIp = "10.0.0.1";

// Verifies `leaf` against `ca` as the TLS stack does for a client certificate.
bool ChainsTo(const std::string& leaf, const std::string& ca) {
  auto parse = [](const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return x;
  };
  X509* l = parse(leaf);
  X509* c = parse(ca);
  if (!l || !c) {
    X509_free(l);
    X509_free(c);
    return false;
  }
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, c);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, l, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  bool ok = X509_verify_cert(ctx) == 1;
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(l);
  X509_free(c);
  return ok;
}

struct Reply {
  int status = 0;
  json body;
  std::string error() const {
    return body.is_object() && body.contains("error") ? body["error"].get<std::string>() : "";
  }
};

// The data dir of a core as `kato node setup core` leaves it (see SetupCore in
// agent.cc), with the primary's service over it on a FakeClock.
class PrimaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "kato_primary_test.XXXXXX").string();
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

    auto fp = CertFingerprint(ca_.cert_pem);
    ASSERT_TRUE(fp.ok()) << fp.error();
    token_ = JoinToken{*fp, RandomHex(32)};
    core_ = NodeRecord{NewId(), kCoreIp, "core", kVersion, {"primary", "base"}, clock_.wall_ms()};
    for (auto s : {store_->SetSetting("core_ip", kCoreIp), store_->SetSetting("version", kVersion),
                   store_->SetSetting("endpoint", "api.example.com"),
                   store_->SetSetting("ca_fingerprint", *fp), store_->PutNode(core_),
                   store_->AddToken({Sha256Hex(token_.secret), clock_.wall_ms(), 0, false})})
      ASSERT_TRUE(s.ok()) << s.error();
    ASSERT_TRUE(WriteFileAtomic(layout_.token_file(), token_.str() + "\n", 0600).ok());
    service_ = std::make_unique<PrimaryService>(PrimaryConfig{layout_.dir, kCoreIp, kVersion},
                                                *store_, clock_);
  }
  void TearDown() override {
    service_.reset();
    store_.reset();
    std::filesystem::remove_all(layout_.dir);
  }

  static std::string NewId() { return RandomHex(16); }

  // Starts a request; the reply lands in `*out` whenever the service responds.
  void Start(const std::string& method, const std::string& target, const std::string& body,
             const std::string& peer_cn, std::optional<Reply>* out) {
    HttpRequest req;
    req.method = method;
    req.target = target;
    req.body = body;
    req.peer_cn = peer_cn;
    service_->Handle(req, [out](HttpResponse r) {
      ASSERT_FALSE(out->has_value()) << "responded twice";
      Reply reply{r.status, json::parse(r.body, nullptr, false)};
      EXPECT_FALSE(reply.body.is_discarded()) << "reply is not JSON: " << r.body;
      *out = reply;
    });
  }
  // A request the service must answer at once.
  Reply Call(const std::string& method, const std::string& target, const std::string& body,
             const std::string& peer_cn) {
    std::optional<Reply> out;
    Start(method, target, body, peer_cn, &out);
    EXPECT_TRUE(out.has_value()) << method << " " << target << " did not respond";
    return out.value_or(Reply{});
  }
  // A request from the core node.
  Reply Core(const std::string& method, const std::string& target, const json& body = {}) {
    return Call(method, target, body.is_null() ? "" : body.dump(), core_.id);
  }

  json JoinBody(const std::string& node_id, const std::string& ip,
                const std::vector<std::string>& roles = {}) {
    auto kc = CreateKeyAndCsr(node_id);
    EXPECT_TRUE(kc.ok()) << kc.error();
    return json{{"secret", token_.secret}, {"node_id", node_id}, {"ip", ip},
                {"hostname", "n-" + ip},   {"version", "0.1.7"}, {"csr", kc->csr_pem},
                {"roles", roles}};
  }
  Reply Join(const json& body) { return Call("POST", "/v1/join", body.dump(), ""); }
  // Joins a node and returns its id.
  std::string Attach(const std::string& ip, const std::vector<std::string>& roles = {}) {
    std::string id = NewId();
    Reply r = Join(JoinBody(id, ip, roles));
    EXPECT_EQ(r.status, 200) << r.body.dump();
    return id;
  }

  int64_t Rev() {
    auto r = store_->Revision();
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? *r : -1;
  }
  std::vector<NodeRecord> Nodes() {
    auto n = store_->ListNodes();
    EXPECT_TRUE(n.ok()) << n.error();
    return n.ok() ? *n : std::vector<NodeRecord>{};
  }
  NodeRecord Node(const std::string& id) {
    auto n = store_->GetNode(id);
    EXPECT_TRUE(n.ok() && n->has_value()) << "no node " << id;
    return n.ok() && n->has_value() ? **n : NodeRecord{};
  }
  std::string Setting(const std::string& key) {
    auto s = store_->GetSetting(key);
    EXPECT_TRUE(s.ok()) << s.error();
    return s.ok() && s->has_value() ? **s : "";
  }
  // A node as GET /v1/cluster shows it (null when it is not there).
  json ClusterNode(const std::string& id) {
    Reply r = Core("GET", "/v1/cluster");
    EXPECT_EQ(r.status, 200);
    for (const auto& n : r.body["nodes"])
      if (n["id"] == id) return n;
    return nullptr;
  }
  std::string State(const std::string& id) {
    json n = ClusterNode(id);
    return n.is_null() ? "absent" : n["state"].get<std::string>();
  }

  DataLayout layout_;
  CaBundle ca_;
  JoinToken token_;
  NodeRecord core_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<PrimaryService> service_;
};

// ---- join -------------------------------------------------------------------

TEST_F(PrimaryTest, JoinWithAValidTokenSignsTheNodesCertificateAndRecordsIt) {
  std::string id = NewId();
  int64_t before = Rev();
  Reply r = Join(JoinBody(id, "10.0.0.2", {"router"}));
  ASSERT_EQ(r.status, 200) << r.body.dump();

  std::string cert = r.body["cert"];
  EXPECT_EQ(*CertCommonName(cert), id);
  EXPECT_TRUE(ChainsTo(cert, ca_.cert_pem));
  EXPECT_EQ(r.body["ca"], ca_.cert_pem);
  EXPECT_EQ(r.body["core_ip"], kCoreIp);
  EXPECT_EQ(r.body["endpoint"], "api.example.com");
  EXPECT_EQ(r.body["version"], kVersion);
  EXPECT_EQ(r.body["node"]["state"], "up");
  EXPECT_EQ(r.body["revision"], Rev());
  EXPECT_GT(Rev(), before);

  NodeRecord n = Node(id);
  EXPECT_EQ(n.ip, "10.0.0.2");
  EXPECT_EQ(n.hostname, "n-10.0.0.2");
  EXPECT_EQ(n.version, "0.1.7");
  EXPECT_THAT(n.roles, ElementsAre("router", "base"));  // base always, catalog order
  EXPECT_EQ(n.joined_ms, clock_.wall_ms());
  auto h = store_->ListHistory(1);
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 1u);
  EXPECT_EQ((*h)[0].command, "node attach 10.0.0.2");
}

TEST_F(PrimaryTest, RejoinKeepsTheOriginalJoinTime) {
  std::string id = NewId();
  ASSERT_EQ(Join(JoinBody(id, "10.0.0.2")).status, 200);
  int64_t joined = Node(id).joined_ms;
  clock_.advance(Millis(60000));
  ASSERT_EQ(Join(JoinBody(id, "10.0.0.3")).status, 200);
  EXPECT_EQ(Node(id).joined_ms, joined);
  EXPECT_EQ(Node(id).ip, "10.0.0.3");
  EXPECT_EQ(Nodes().size(), 2u);
}

// Every refused join leaves the cluster exactly as it was.
class RefusedJoinTest : public PrimaryTest {
 protected:
  void SetUp() override {
    PrimaryTest::SetUp();
    nodes_before_ = Nodes();
    rev_before_ = Rev();
  }
  void ExpectRefused(const Reply& r, int status, const std::string& message) {
    EXPECT_EQ(r.status, status) << r.body.dump();
    EXPECT_THAT(r.error(), HasSubstr(message));
    EXPECT_EQ(Nodes(), nodes_before_);
    EXPECT_EQ(Rev(), rev_before_);
  }
  std::vector<NodeRecord> nodes_before_;
  int64_t rev_before_ = 0;
};

TEST_F(RefusedJoinTest, UnknownSecret) {
  json b = JoinBody(NewId(), "10.0.0.2");
  b["secret"] = RandomHex(32);
  ExpectRefused(Join(b), 403, "not valid");
}

TEST_F(RefusedJoinTest, RotatedToken) {
  Reply rot = Core("POST", "/v1/token", {{"rotate", true}});
  ASSERT_EQ(rot.status, 200) << rot.body.dump();
  auto fresh = ParseJoinToken(rot.body["token"]);
  ASSERT_TRUE(fresh.ok()) << fresh.error();
  EXPECT_EQ(fresh->ca_hash, token_.ca_hash);  // the CA does not change
  EXPECT_NE(fresh->secret, token_.secret);
  EXPECT_EQ(ReadFile(layout_.token_file()).value(), fresh->str() + "\n");
  nodes_before_ = Nodes();
  rev_before_ = Rev();

  ExpectRefused(Join(JoinBody(NewId(), "10.0.0.2")), 403, "rotated");

  token_ = *fresh;
  EXPECT_EQ(Join(JoinBody(NewId(), "10.0.0.2")).status, 200);
}

TEST_F(RefusedJoinTest, ExpiredToken) {
  std::string secret = RandomHex(32);
  ASSERT_TRUE(
      store_->AddToken({Sha256Hex(secret), clock_.wall_ms(), clock_.wall_ms() + 1000, false}).ok());
  token_.secret = secret;
  clock_.advance(Millis(1001));
  rev_before_ = Rev();
  ExpectRefused(Join(JoinBody(NewId(), "10.0.0.2")), 403, "expired");
}

TEST_F(PrimaryTest, TokenWithATtlWorksUntilItExpires) {
  Reply rot = Core("POST", "/v1/token", {{"rotate", true}, {"ttl_s", 60}});
  ASSERT_EQ(rot.status, 200) << rot.body.dump();
  EXPECT_EQ(rot.body["expires_ms"], clock_.wall_ms() + 60000);
  token_ = *ParseJoinToken(rot.body["token"]);
  EXPECT_EQ(Join(JoinBody(NewId(), "10.0.0.2")).status, 200);
  clock_.advance(Millis(60001));
  Reply late = Join(JoinBody(NewId(), "10.0.0.3"));
  EXPECT_EQ(late.status, 403);
  EXPECT_THAT(late.error(), HasSubstr("expired"));
}

TEST_F(PrimaryTest, RotatedTokenIsValidFor24HoursByDefault) {
  Reply rot = Core("POST", "/v1/token", {{"rotate", true}});
  ASSERT_EQ(rot.status, 200) << rot.body.dump();
  const int64_t day_ms = 24 * 3600 * 1000;
  EXPECT_EQ(rot.body["expires_ms"], clock_.wall_ms() + day_ms);
  // Reading the token again says when it expires, and that it has.
  Reply again = Core("POST", "/v1/token");
  EXPECT_EQ(again.body["token"], rot.body["token"]);
  EXPECT_EQ(again.body["expires_ms"], rot.body["expires_ms"]);
  EXPECT_FALSE(again.body.contains("expired"));
  token_ = *ParseJoinToken(rot.body["token"]);
  clock_.advance(Millis(day_ms));
  EXPECT_EQ(Join(JoinBody(NewId(), "10.0.0.2")).status, 200);  // the last millisecond
  clock_.advance(Millis(1));
  Reply late = Join(JoinBody(NewId(), "10.0.0.3"));
  EXPECT_EQ(late.status, 403);
  EXPECT_THAT(late.error(), HasSubstr("expired"));
  EXPECT_EQ(Core("POST", "/v1/token").body["expired"], true);
}

TEST_F(PrimaryTest, TokenTtlOutOfRangeIsRefused) {
  for (int64_t ttl : {int64_t{-1}, int64_t{3650LL * 86400 + 1}, int64_t{1} << 62}) {
    Reply r = Core("POST", "/v1/token", {{"rotate", true}, {"ttl_s", ttl}});
    EXPECT_EQ(r.status, 400) << ttl;
    EXPECT_THAT(r.error(), HasSubstr("ttl_s"));
  }
  EXPECT_EQ(ReadFile(layout_.token_file()).value(), token_.str() + "\n");  // not rotated
}

TEST_F(PrimaryTest, TokenWithoutRotateReturnsTheCurrentOne) {
  Reply r = Core("POST", "/v1/token");
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["token"], token_.str());
}

TEST_F(RefusedJoinTest, IncompatibleVersionsNameBothVersions) {
  for (const char* v : {"0.2.0", "1.1.0", "0.0.9"}) {
    SCOPED_TRACE(v);
    json b = JoinBody(NewId(), "10.0.0.2");
    b["version"] = v;
    Reply r = Join(b);
    ExpectRefused(r, 409, v);
    EXPECT_THAT(r.error(), HasSubstr(kVersion));
  }
}

TEST_F(RefusedJoinTest, ForceMustBeABooleanTrue) {
  json b = JoinBody(NewId(), "10.0.0.2");
  b["version"] = "0.2.0";
  b["force"] = "yes";  // not a boolean: no force (and no exception out of the handler)
  ExpectRefused(Join(b), 409, "version mismatch");
}

TEST_F(PrimaryTest, IncompatibleVersionJoinsWithForce) {
  std::string id = NewId();
  json b = JoinBody(id, "10.0.0.2");
  b["version"] = "0.2.0";
  b["force"] = true;
  Reply r = Join(b);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(Node(id).version, "0.2.0");
}

TEST_F(RefusedJoinTest, SecondPrimary) {
  ExpectRefused(Join(JoinBody(NewId(), "10.0.0.2", {"primary"})), 400, "already has a primary");
}

TEST_F(RefusedJoinTest, LoadBalancerWithAnotherRole) {
  ExpectRefused(Join(JoinBody(NewId(), "10.0.0.2", {"load_balancer", "router"})), 400,
                "load_balancer cannot be combined");
}

TEST_F(PrimaryTest, LoadBalancerAloneJoins) {
  std::string id = Attach("10.0.0.2", {"load_balancer"});
  EXPECT_THAT(Node(id).roles, ElementsAre("base", "load_balancer"));
}

// ---- the web certificate -----------------------------------------------------

TEST_F(PrimaryTest, WebCertIsSignedForTheEndpointAndTheAppDomain) {
  std::string lb = Attach("10.0.0.9", {"load_balancer"});
  auto kc = CreateKeyAndCsr("web");
  ASSERT_TRUE(kc.ok());
  Reply r = Call("POST", "/v1/webcert", json{{"csr", kc->csr_pem}}.dump(), lb);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["ca"], ca_.cert_pem);
  std::string cert = r.body["cert"];
  EXPECT_TRUE(KeyMatchesCert(kc->key_pem, cert).ok());
  auto info = InspectCert(cert);
  ASSERT_TRUE(info.ok()) << info.error();
  EXPECT_THAT(info->dns_names, ElementsAre("api.example.com", "*.example.com", "example.com"));
  EXPECT_TRUE(CertCoversHost(*info, "myapp.example.com"));
  EXPECT_FALSE(CertCoversHost(*info, "myapp.example.org"));
  // It follows the endpoint.
  ASSERT_TRUE(store_->SetSetting("endpoint", "api.other.test").ok());
  r = Call("POST", "/v1/webcert", json{{"csr", kc->csr_pem}}.dump(), lb);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_THAT(InspectCert(r.body["cert"].get<std::string>())->dns_names,
              ElementsAre("api.other.test", "*.other.test", "other.test"));
}

TEST_F(PrimaryTest, WebCertIsForLoadBalancersAndRoutersWithAValidCsr) {
  auto kc = CreateKeyAndCsr("web");
  ASSERT_TRUE(kc.ok());
  std::string body = json{{"csr", kc->csr_pem}}.dump();
  EXPECT_EQ(Call("POST", "/v1/webcert", body, "").status, 401);
  EXPECT_EQ(Call("POST", "/v1/webcert", body, NewId()).status, 403);
  std::string dea = Attach("10.0.0.7", {"dea"});
  Reply r = Call("POST", "/v1/webcert", body, dea);
  EXPECT_EQ(r.status, 403);
  EXPECT_THAT(r.error(), HasSubstr("only a load-balancer or router node"));
  EXPECT_EQ(Core("POST", "/v1/webcert", json{{"csr", kc->csr_pem}}).status, 403);  // no router
  std::string router = Attach("10.0.0.8", {"router"});
  EXPECT_EQ(Call("POST", "/v1/webcert", body, router).status, 200);
  std::string lb = Attach("10.0.0.9", {"load_balancer"});
  auto as_lb = [&](const json& b) { return Call("POST", "/v1/webcert", b.dump(), lb); };
  r = as_lb(json::object());
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.error(), HasSubstr("needs {\"csr\""));
  r = as_lb(json{{"csr", "garbage"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.error(), HasSubstr("cannot sign"));
  EXPECT_EQ(as_lb(json{{"csr", 7}}).status, 400);
}

TEST(WebCertNamesTest, ApiPrefixGivesTheDomain) {
  EXPECT_THAT(WebCertNames("api.a.b"), ElementsAre("api.a.b", "*.a.b", "a.b"));
  EXPECT_THAT(WebCertNames("paas.a.b"), ElementsAre("paas.a.b", "*.paas.a.b"));
}

TEST_F(RefusedJoinTest, UnknownRole) {
  ExpectRefused(Join(JoinBody(NewId(), "10.0.0.2", {"router", "nosuch"})), 400,
                "unknown role 'nosuch'");
}

TEST_F(RefusedJoinTest, GarbageCsr) {
  json b = JoinBody(NewId(), "10.0.0.2");
  b["csr"] = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
  ExpectRefused(Join(b), 400, "certificate request");
}

TEST_F(RefusedJoinTest, MissingFields) {
  for (const char* field : {"secret", "node_id", "ip", "version", "csr"}) {
    SCOPED_TRACE(field);
    json b = JoinBody(NewId(), "10.0.0.2");
    b.erase(field);
    ExpectRefused(Join(b), 400, "join request needs");
    b[field] = 42;  // the wrong type is as good as missing
    ExpectRefused(Join(b), 400, "join request needs");
  }
}

TEST_F(RefusedJoinTest, BodyNotAJsonObject) {
  ExpectRefused(Call("POST", "/v1/join", "{not json", ""), 400, "not a JSON object");
  ExpectRefused(Call("POST", "/v1/join", "[1,2]", ""), 400, "not a JSON object");
  ExpectRefused(Call("POST", "/v1/join", "", ""), 400, "join request needs");
}

TEST_F(RefusedJoinTest, TheCoresIdEvenWhenTheCoreIsDown) {
  ASSERT_EQ(State(core_.id), "down");
  ExpectRefused(Join(JoinBody(core_.id, "10.0.0.5")), 409, "is the core's");
  EXPECT_EQ(Node(core_.id).ip, kCoreIp);
}

TEST_F(RefusedJoinTest, TheIdOfAMemberThatIsUp) {
  std::string id = Attach("10.0.0.2", {"router"});
  nodes_before_ = Nodes();
  rev_before_ = Rev();
  clock_.advance(kDownAfter - Millis(1));
  ExpectRefused(Join(JoinBody(id, "10.0.0.3", {"dea"})), 409, "10.0.0.2, which is up");
  EXPECT_THAT(Node(id).roles, ElementsAre("router", "base"));
  // Once the member is gone (no heartbeat for kDownAfter), the id may join again.
  clock_.advance(Millis(1));
  EXPECT_EQ(Join(JoinBody(id, "10.0.0.3")).status, 200);
  EXPECT_EQ(Node(id).ip, "10.0.0.3");
}

TEST_F(RefusedJoinTest, AddressOfAnotherNode) {
  ExpectRefused(Join(JoinBody(NewId(), kCoreIp)), 409, "already used");
}

TEST_F(PrimaryTest, RefusedRejoinOfARemovedNodeKeepsItRemoved) {
  std::string id = Attach("10.0.0.2");
  ASSERT_EQ(Core("POST", "/v1/nodes/remove", {{"node", id}}).status, 200);
  EXPECT_EQ(Join(JoinBody(id, kCoreIp)).status, 409);  // address taken
  EXPECT_TRUE(*store_->IsRemoved(id));
  EXPECT_EQ(Join(JoinBody(id, "10.0.0.2")).status, 200);  // an explicit attach brings it back
  EXPECT_FALSE(*store_->IsRemoved(id));
}

// ---- members only -------------------------------------------------------------

TEST_F(PrimaryTest, RequestsWithoutANodeCertificateAreRefused) {
  for (const auto& [method, target] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/v1/cluster"},
                                                        {"POST", "/v1/heartbeat"},
                                                        {"POST", "/v1/token"},
                                                        {"GET", "/v1/watch?after=0"},
                                                        {"POST", "/v1/nodes/remove"}}) {
    SCOPED_TRACE(target);
    Reply r = Call(method, target, "", "");
    EXPECT_EQ(r.status, 401);
    EXPECT_THAT(r.error(), HasSubstr("certificate"));
  }
}

TEST_F(PrimaryTest, RequestsFromNodesOutsideTheClusterAreRefused) {
  int64_t before = Rev();
  Reply r = Call("POST", "/v1/token", json{{"rotate", true}}.dump(), "stranger");
  EXPECT_EQ(r.status, 403);
  EXPECT_THAT(r.error(), HasSubstr("stranger"));
  EXPECT_EQ(Call("GET", "/v1/cluster", "", "stranger").status, 403);
  EXPECT_EQ(Call("POST", "/v1/heartbeat", "", "stranger").status, 404);
  EXPECT_EQ(Rev(), before);
  EXPECT_EQ(ReadFile(layout_.token_file()).value(), token_.str() + "\n");
}

TEST_F(PrimaryTest, UnknownApiIs404) {
  Reply r = Core("GET", "/v1/nosuch");
  EXPECT_EQ(r.status, 404);
  EXPECT_THAT(r.error(), HasSubstr("GET /v1/nosuch"));
  EXPECT_EQ(Core("GET", "/v1/nodes/remove").status, 404);  // wrong method
}

// ---- heartbeat and liveness -----------------------------------------------------

TEST_F(PrimaryTest, NodeIsUpWhileHeartbeatsArriveAndDownAfterThem) {
  std::string id = Attach("10.0.0.2");
  EXPECT_EQ(State(id), "up");          // joining counts as being seen
  EXPECT_EQ(State(core_.id), "down");  // not seen since this primary started
  clock_.advance(kDownAfter - Millis(1));
  EXPECT_EQ(State(id), "up");
  clock_.advance(Millis(1));
  EXPECT_EQ(State(id), "down");

  json procs = json::array({{{"name", "nginx"}, {"state", "running"}}});
  Reply hb = Call("POST", "/v1/heartbeat", json{{"processes", procs}}.dump(), id);
  ASSERT_EQ(hb.status, 200) << hb.body.dump();
  EXPECT_EQ(hb.body["node"]["state"], "up");
  EXPECT_EQ(hb.body["node"]["last_seen_ms"], clock_.wall_ms());
  // The reply is about this node: never the whole cluster's list.
  EXPECT_FALSE(hb.body.contains("nodes"));
  EXPECT_TRUE(hb.body["members_revision"].is_number_integer());
  EXPECT_TRUE(hb.body["revision"].is_number_integer());
  EXPECT_EQ(ClusterNode(id)["processes"], procs);
  EXPECT_EQ(ClusterNode(core_.id)["processes"], json::array());
  EXPECT_EQ(State(id), "up");
}

TEST_F(PrimaryTest, HeartbeatOfARemovedNodeIsGone) {
  std::string id = Attach("10.0.0.2");
  ASSERT_EQ(Core("POST", "/v1/nodes/remove", {{"node", "10.0.0.2"}}).status, 200);
  Reply r = Call("POST", "/v1/heartbeat", "{}", id);
  EXPECT_EQ(r.status, 410);
  EXPECT_THAT(r.error(), HasSubstr("removed"));
  EXPECT_EQ(Call("GET", "/v1/cluster", "", id).status, 403);
}

TEST_F(PrimaryTest, HeartbeatReportsAnAddressChange) {
  std::string id = Attach("10.0.0.2");
  int64_t before = Rev();
  Reply r = Call("POST", "/v1/heartbeat", json{{"ip", "10.0.0.9"}}.dump(), id);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["node"]["ip"], "10.0.0.9");
  EXPECT_EQ(Node(id).ip, "10.0.0.9");
  EXPECT_GT(Rev(), before);

  // An unchanged report changes nothing; an address another node holds is not taken.
  before = Rev();
  EXPECT_EQ(Call("POST", "/v1/heartbeat", json{{"ip", "10.0.0.9"}}.dump(), id).status, 200);
  EXPECT_EQ(Call("POST", "/v1/heartbeat", json{{"ip", kCoreIp}}.dump(), id).status, 200);
  EXPECT_EQ(Node(id).ip, "10.0.0.9");
  EXPECT_EQ(Rev(), before);
}

TEST_F(PrimaryTest, HeartbeatThatChangesTheClusterWakesWatches) {
  std::string id = Attach("10.0.0.2");
  int64_t rev = Rev();
  std::optional<Reply> watch;
  Start("GET", "/v1/watch?after=" + std::to_string(rev) + "&timeout_ms=5000", "", core_.id, &watch);
  ASSERT_FALSE(watch.has_value());
  EXPECT_EQ(Call("POST", "/v1/heartbeat", json{{"ip", "10.0.0.9"}}.dump(), id).status, 200);
  ASSERT_TRUE(watch.has_value());
  EXPECT_EQ(watch->body["revision"], Rev());
}

// ---- roles ----------------------------------------------------------------------

TEST_F(PrimaryTest, RolesAddAndRemoveBumpTheRevisionOnlyOnChange) {
  std::string id = Attach("10.0.0.2");
  int64_t rev = Rev();
  Reply r = Core("POST", "/v1/nodes/roles", {{"node", "10.0.0.2"}, {"add", {"router", "dea"}}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["roles"], json({"router", "dea", "base"}));
  EXPECT_THAT(Node(id).roles, ElementsAre("router", "dea", "base"));
  EXPECT_GT(Rev(), rev);

  rev = Rev();
  EXPECT_EQ(Core("POST", "/v1/nodes/roles", {{"node", id}, {"add", {"router"}}}).status, 200);
  EXPECT_EQ(Core("POST", "/v1/nodes/roles", {{"node", id}, {"remove", {"mysql"}}}).status, 200);
  EXPECT_EQ(Rev(), rev);

  r = Core("POST", "/v1/nodes/roles", {{"node", id}, {"remove", {"dea"}}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_THAT(Node(id).roles, ElementsAre("router", "base"));
  EXPECT_GT(Rev(), rev);
}

TEST_F(PrimaryTest, RoleChangesAgainstTheRulesAreRefused) {
  std::string id = Attach("10.0.0.2", {"router"});
  std::vector<NodeRecord> nodes = Nodes();
  int64_t rev = Rev();
  struct Case {
    json body;
    int status;
    std::string message;
  };
  for (const auto& c : std::vector<Case>{
           {{{"node", id}, {"remove", {"base"}}}, 400, "base role"},
           {{{"node", kCoreIp}, {"remove", {"primary"}}}, 400, "exactly one primary"},
           {{{"node", id}, {"add", {"primary"}}}, 400, "already has a primary"},
           {{{"node", id}, {"add", {"load_balancer"}}}, 400, "load_balancer"},
           {{{"node", id}, {"add", {"nosuch"}}}, 400, "unknown role 'nosuch'"},
           {{{"node", id}, {"remove", {"nosuch"}}}, 400, "unknown role 'nosuch'"},
           {{{"node", "10.9.9.9"}, {"add", {"dea"}}}, 404, "no node 10.9.9.9"},
       }) {
    SCOPED_TRACE(c.body.dump());
    Reply r = Core("POST", "/v1/nodes/roles", c.body);
    EXPECT_EQ(r.status, c.status);
    EXPECT_THAT(r.error(), HasSubstr(c.message));
  }
  EXPECT_EQ(Nodes(), nodes);
  EXPECT_EQ(Rev(), rev);
}

TEST_F(PrimaryTest, CoreTakesMoreRoles) {
  Reply r = Core("POST", "/v1/nodes/roles", {{"node", core_.id}, {"add", {"controller"}}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_THAT(Node(core_.id).roles, ElementsAre("primary", "controller", "base"));
}

// ---- remove and update ------------------------------------------------------------

TEST_F(PrimaryTest, RemoveByIp) {
  std::string id = Attach("10.0.0.2");
  int64_t rev = Rev();
  Reply r = Core("POST", "/v1/nodes/remove", {{"node", "10.0.0.2"}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["id"], id);
  EXPECT_GT(Rev(), rev);
  EXPECT_EQ(Nodes().size(), 1u);
  EXPECT_TRUE(*store_->IsRemoved(id));
  EXPECT_EQ(State(id), "absent");
  EXPECT_EQ(Core("POST", "/v1/nodes/remove", {{"node", "10.0.0.2"}}).status, 404);
}

TEST_F(PrimaryTest, RemovingTheCoreIsRefused) {
  int64_t rev = Rev();
  Reply r = Core("POST", "/v1/nodes/remove", {{"node", kCoreIp}});
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.error(), HasSubstr("is the core"));
  EXPECT_EQ(Nodes().size(), 1u);
  EXPECT_FALSE(*store_->IsRemoved(core_.id));
  EXPECT_EQ(Rev(), rev);
}

TEST_F(PrimaryTest, UpdatingTheCoresHostnameMovesTheEndpoint) {
  Reply r = Core("POST", "/v1/nodes/update", {{"node", kCoreIp}, {"hostname", "newcore"}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(Node(core_.id).hostname, "newcore");
  EXPECT_EQ(Setting("endpoint"), "api.newcore");
  EXPECT_EQ(Setting("core_ip"), kCoreIp);
}

TEST_F(PrimaryTest, UpdatingTheCoresIpMovesCoreIp) {
  Reply r = Core("POST", "/v1/nodes/update", {{"node", core_.id}, {"ip", "10.0.0.50"}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(Node(core_.id).ip, "10.0.0.50");
  EXPECT_EQ(Setting("core_ip"), "10.0.0.50");
  EXPECT_EQ(Setting("endpoint"), "api.example.com");
  EXPECT_EQ(Core("GET", "/v1/cluster").body["core_ip"], "10.0.0.50");
}

TEST_F(PrimaryTest, UpdatingAnotherNodeLeavesTheClusterSettings) {
  std::string id = Attach("10.0.0.2");
  ASSERT_EQ(
      Core("POST", "/v1/nodes/update", {{"node", id}, {"ip", "10.0.0.3"}, {"hostname", "web"}})
          .status,
      200);
  EXPECT_EQ(Node(id).ip, "10.0.0.3");
  EXPECT_EQ(Node(id).hostname, "web");
  EXPECT_EQ(Setting("core_ip"), kCoreIp);
  EXPECT_EQ(Setting("endpoint"), "api.example.com");

  int64_t rev = Rev();
  Reply clash = Core("POST", "/v1/nodes/update", {{"node", id}, {"ip", kCoreIp}});
  EXPECT_EQ(clash.status, 409);
  EXPECT_THAT(clash.error(), HasSubstr("already used"));
  EXPECT_EQ(Node(id).ip, "10.0.0.3");
  EXPECT_EQ(Rev(), rev);
}

TEST_F(PrimaryTest, SettingsEndpointMustBeAHostName) {
  EXPECT_EQ(Core("POST", "/v1/settings", {{"endpoint", "bad host!"}}).status, 400);
  EXPECT_EQ(Setting("endpoint"), "api.example.com");
  EXPECT_EQ(Core("POST", "/v1/settings", {{"endpoint", "api.other.org"}}).status, 200);
  EXPECT_EQ(Setting("endpoint"), "api.other.org");
}

// ---- watch ------------------------------------------------------------------------

TEST_F(PrimaryTest, WatchWaitsForAChange) {
  int64_t rev = Rev();
  std::optional<Reply> watch;
  Start("GET", "/v1/watch?after=" + std::to_string(rev) + "&timeout_ms=5000", "", core_.id, &watch);
  EXPECT_FALSE(watch.has_value());
  service_->ExpireWatches();  // not yet due
  EXPECT_FALSE(watch.has_value());
  Core("GET", "/v1/cluster");  // reads change nothing
  EXPECT_FALSE(watch.has_value());

  ASSERT_EQ(Core("POST", "/v1/config/set", {{"component", "c"}, {"key", "k"}, {"value", 1}}).status,
            200);
  ASSERT_TRUE(watch.has_value());
  EXPECT_EQ(watch->status, 200);
  EXPECT_EQ(watch->body["revision"], Rev());
  EXPECT_GT(Rev(), rev);
}

TEST_F(PrimaryTest, WatchExpiresAtItsDeadline) {
  int64_t rev = Rev();
  std::optional<Reply> watch;
  Start("GET", "/v1/watch?after=" + std::to_string(rev) + "&timeout_ms=5000", "", core_.id, &watch);
  clock_.advance(Millis(4999));
  service_->ExpireWatches();
  EXPECT_FALSE(watch.has_value());
  clock_.advance(Millis(1));
  service_->ExpireWatches();
  ASSERT_TRUE(watch.has_value());
  EXPECT_EQ(watch->body["revision"], rev);
}

TEST_F(PrimaryTest, WatchBehindTheRevisionAnswersAtOnce) {
  int64_t rev = Rev();
  ASSERT_GT(rev, 0);
  Reply r = Core("GET", "/v1/watch?after=" + std::to_string(rev - 1) + "&timeout_ms=5000");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["revision"], rev);
  r = Core("GET", "/v1/watch?after=" + std::to_string(rev) + "&timeout_ms=0");
  EXPECT_EQ(r.body["revision"], rev);
  EXPECT_EQ(Core("GET", "/v1/watch?after=abc").status, 400);
}

TEST_F(PrimaryTest, ANodeScopedWatchWakesOnlyForWhatConcernsThatNode) {
  std::string a = Attach("10.0.0.2");
  std::string b = Attach("10.0.0.3");
  int64_t rev = Rev();
  std::optional<Reply> wa, wb;
  auto watch = [&](const std::string& id, std::optional<Reply>* out) {
    out->reset();
    Start("GET", "/v1/watch?after=" + std::to_string(Rev()) + "&timeout_ms=5000&node=" + id, "",
          id, out);
  };
  watch(a, &wa);
  watch(b, &wb);
  // Apps, instances, config: nobody's own scope.
  ASSERT_EQ(Core("POST", "/v1/config/set", {{"component", "c"}, {"key", "k"}, {"value", 1}}).status,
            200);
  ASSERT_EQ(Call("PUT", "/v1/docs/app/web", R"({"value":{"x":1}})", a).status, 200);
  EXPECT_GT(Rev(), rev);
  EXPECT_FALSE(wa.has_value());
  EXPECT_FALSE(wb.has_value());
  // A role change of b wakes b only.
  ASSERT_EQ(Core("POST", "/v1/nodes/roles", {{"node", b}, {"add", {"redis"}}}).status, 200);
  EXPECT_FALSE(wa.has_value());
  ASSERT_TRUE(wb.has_value());
  EXPECT_EQ(wb->body["revision"], Rev());
  // A removal wakes everyone (servers must drop the removed node's certificate).
  watch(b, &wb);
  std::string c = Attach("10.0.0.4");
  EXPECT_FALSE(wa.has_value());  // a join does not
  ASSERT_EQ(Core("POST", "/v1/nodes/remove", {{"node", c}}).status, 200);
  EXPECT_TRUE(wa.has_value());
  EXPECT_TRUE(wb.has_value());
  // A scoped watch behind its node's scope answers at once; one ahead waits out its deadline.
  Reply r = Call("GET", "/v1/watch?after=0&timeout_ms=5000&node=" + b, "", b);
  EXPECT_EQ(r.status, 200);
  watch(a, &wa);
  clock_.advance(Millis(5000));
  service_->ExpireWatches();
  ASSERT_TRUE(wa.has_value());
  EXPECT_EQ(wa->body["revision"], Rev());
}

TEST_F(PrimaryTest, MembersListsIdsAndMovesOnlyWhenTheSetChanges) {
  std::string a = Attach("10.0.0.2");
  Reply m = Call("GET", "/v1/members", "", a);
  ASSERT_EQ(m.status, 200) << m.body.dump();
  ASSERT_EQ(m.body["nodes"].size(), 2u);
  int64_t members = m.body["revision"];
  Reply hb = Call("POST", "/v1/heartbeat", "{}", a);
  EXPECT_EQ(hb.body["members_revision"], members);
  ASSERT_EQ(Core("POST", "/v1/nodes/roles", {{"node", a}, {"add", {"redis"}}}).status, 200);
  ASSERT_EQ(Core("POST", "/v1/config/set", {{"component", "c"}, {"key", "k"}, {"value", 1}}).status,
            200);
  hb = Call("POST", "/v1/heartbeat", "{}", a);
  EXPECT_EQ(hb.body["members_revision"], members);  // same members: nothing to fetch
  std::string b = Attach("10.0.0.3");
  hb = Call("POST", "/v1/heartbeat", "{}", a);
  EXPECT_GT(hb.body["members_revision"].get<int64_t>(), members);
  m = Call("GET", "/v1/members", "", a);
  EXPECT_EQ(m.body["nodes"].size(), 3u);
  EXPECT_EQ(m.body["revision"], hb.body["members_revision"]);
  EXPECT_EQ(Call("GET", "/v1/members", "", "").status, 401);
}

// ---- config and history ---------------------------------------------------------------

TEST_F(PrimaryTest, RouterSettingsAreCheckedBeforeTheyAreStored) {
  auto set = [&](const std::string& key, const json& value) {
    return Core("POST", "/v1/config/set", {{"component", "router"}, {"key", key}, {"value", value}});
  };
  EXPECT_EQ(set("max_connections", 5000).status, 200);
  EXPECT_EQ(set("access_log", false).status, 200);
  struct {
    const char* key;
    json value;
    const char* says;
  } bad[] = {{"max_connections", "5000", "whole number from 16"},
             {"max_connections", 3, "whole number from 16"},
             {"upstream_timeout_s", 0, "from 1 to 86400"},
             {"keepalive_timeout_s", 1.5, "whole number"},
             {"access_log", "yes", "true or false"},
             {"max_conections", 5000, "has no setting 'max_conections'"}};
  for (const auto& b : bad) {
    Reply r = set(b.key, b.value);
    EXPECT_EQ(r.status, 400) << b.key;
    EXPECT_THAT(r.error(), HasSubstr(b.says)) << b.key;
  }
  Reply r = Core("POST", "/v1/config/get", {{"component", "router"}, {"key", "max_connections"}});
  EXPECT_EQ(r.body["value"], 5000);  // unchanged by the refused ones
}

TEST_F(PrimaryTest, ConfigRoundTrips) {
  json value = {{"port", 8080}, {"hosts", {"a", "b"}}};
  Reply r =
      Core("POST", "/v1/config/set", {{"component", "example"}, {"key", "main"}, {"value", value}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  ASSERT_EQ(
      Core("POST", "/v1/config/set", {{"component", "dea"}, {"key", "max"}, {"value", 3}}).status,
      200);

  r = Core("POST", "/v1/config/get", {{"component", "example"}, {"key", "main"}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["value"], value);

  r = Core("POST", "/v1/config/list", json::object());
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), 2u);
  r = Core("POST", "/v1/config/list", {{"component", "dea"}});
  ASSERT_EQ(r.body.size(), 1u);
  EXPECT_EQ(r.body[0], json({{"component", "dea"}, {"key", "max"}, {"value", 3}}));

  ASSERT_EQ(Core("POST", "/v1/config/del", {{"component", "dea"}, {"key", "max"}}).status, 200);
  EXPECT_EQ(Core("POST", "/v1/config/get", {{"component", "dea"}, {"key", "max"}}).status, 404);
  int64_t rev = Rev();
  EXPECT_EQ(Core("POST", "/v1/config/del", {{"component", "dea"}, {"key", "max"}}).status, 404);
  EXPECT_EQ(Rev(), rev);
}

TEST_F(PrimaryTest, BadConfigRequestsAreRefused) {
  int64_t rev = Rev();
  EXPECT_EQ(
      Call("POST", "/v1/config/set", R"({"component":"c","key":"k","value":})", core_.id).status,
      400);
  EXPECT_EQ(Core("POST", "/v1/config/set", {{"component", "c"}, {"key", "k"}}).status, 400);
  EXPECT_EQ(Core("POST", "/v1/config/set", {{"component", "c"}, {"value", 1}}).status, 400);
  EXPECT_EQ(Core("POST", "/v1/config/get", {{"key", "k"}}).status, 400);
  EXPECT_EQ(Core("POST", "/v1/config/frob", {{"component", "c"}, {"key", "k"}}).status, 404);
  EXPECT_EQ(Rev(), rev);
  auto list = store_->ListConfig("");
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list, IsEmpty());
}

TEST_F(PrimaryTest, HistoryRecordsCommandsWithTheirCaller) {
  json audit = {{"node", "10.0.0.7"}, {"user", "alice"}, {"command", "kato config set x y 1"}};
  ASSERT_EQ(Core("POST", "/v1/config/set",
                 {{"component", "x"}, {"key", "y"}, {"value", 1}, {"audit", audit}})
                .status,
            200);
  ASSERT_EQ(Core("POST", "/v1/history",
                 {{"audit", {{"node", kCoreIp}, {"user", "bob"}, {"command", "kato status"}}}})
                .status,
            200);
  clock_.advance(Millis(5));
  ASSERT_EQ(Core("POST", "/v1/config/del", {{"component", "x"}, {"key", "y"}}).status, 200);

  Reply r = Core("GET", "/v1/history?limit=2");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.body.size(), 2u);
  EXPECT_EQ(r.body[0]["command"], "kato status");
  EXPECT_EQ(r.body[0]["user"], "bob");
  EXPECT_EQ(r.body[1]["command"], "config del x y");  // the fallback without an audit
  EXPECT_EQ(r.body[1]["user"], "root");
  EXPECT_EQ(r.body[1]["time_ms"], clock_.wall_ms());

  r = Core("GET", "/v1/history");
  ASSERT_EQ(r.body.size(), 3u);
  EXPECT_EQ(r.body[0]["command"], "kato config set x y 1");
  EXPECT_EQ(r.body[0]["node"], "10.0.0.7");
  EXPECT_EQ(r.body[0]["user"], "alice");
  EXPECT_LT(r.body[0]["id"], r.body[1]["id"]);

  EXPECT_EQ(Core("GET", "/v1/history?limit=abc").status, 400);
}

TEST_F(PrimaryTest, ANodeReportsOnlyItsOwnInstances) {
  std::string a = Attach("10.0.0.2", {"dea"});
  std::string b = Attach("10.0.0.3", {"dea"});
  json instances = json::array({{{"instance_id", "i1"}, {"app", "web"}}});
  ASSERT_EQ(Call("POST", "/v1/report", json{{"instances", instances}}.dump(), a).status, 200);
  int64_t rev = Rev();
  // Through the documents API, neither another node nor the node itself writes them.
  for (const std::string& peer : {b, a, core_.id}) {
    SCOPED_TRACE(peer);
    Reply put =
        Call("PUT", "/v1/docs/instances/" + a, json{{"value", json::object()}}.dump(), peer);
    EXPECT_EQ(put.status, 403);
    EXPECT_THAT(put.error(), HasSubstr("/v1/report"));
    EXPECT_EQ(Call("DELETE", "/v1/docs/instances/" + a, "", peer).status, 403);
    EXPECT_EQ(Call("PUT", "/v1/docs/instances/" + b, json{{"value", 1}}.dump(), peer).status, 403);
  }
  EXPECT_EQ(Rev(), rev);
  Reply got = Call("GET", "/v1/docs/instances/" + a, "", b);  // reading stays open to members
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.body["value"]["instances"], instances);
  // A report lands under the reporting node's own id, whatever its body says.
  ASSERT_EQ(
      Call("POST", "/v1/report", json{{"instances", json::array()}, {"node", a}}.dump(), b).status,
      200);
  EXPECT_EQ(Call("GET", "/v1/docs/instances/" + a, "", b).body["value"]["instances"], instances);
}

TEST_F(PrimaryTest, ADeaReadsAndWatchesOnlyItsOwnAssignments) {
  std::string ctl = Attach("10.0.0.2", {"controller"});
  std::string a = Attach("10.0.0.3", {"dea"});
  std::string b = Attach("10.0.0.4", {"dea"});
  auto assign = [&](const std::string& key, const std::string& node) {
    return Call("PUT", "/v1/docs/assignment/" + key,
                json{{"value", {{"node_id", node}, {"instance_id", key}}}}.dump(), ctl);
  };
  ASSERT_EQ(assign("web/0/x", a).status, 200);  // before any read: the index loads it
  auto mine = [&](const std::string& node) {
    Reply r = Call("GET", "/v1/docs/assignment?node=" + node, "", node);
    EXPECT_EQ(r.status, 200);
    std::vector<std::string> keys;
    for (const auto& d : r.body) keys.push_back(d["key"]);
    return keys;
  };
  EXPECT_THAT(mine(a), ElementsAre("web/0/x"));
  EXPECT_THAT(mine(b), ElementsAre());
  std::optional<Reply> wa, wb;
  auto watch = [&](const std::string& id, std::optional<Reply>* out) {
    out->reset();
    Start("GET", "/v1/watch?after=" + std::to_string(Rev()) + "&timeout_ms=5000&assignments=1&node=" + id,
          "", id, out);
  };
  watch(a, &wa);
  watch(b, &wb);
  // An app write, another DEA's assignment: a sleeps on.
  ASSERT_EQ(Call("PUT", "/v1/docs/app/web", R"({"value":{"x":1}})", ctl).status, 200);
  EXPECT_FALSE(wb.has_value());
  ASSERT_EQ(assign("web/1/y", b).status, 200);
  EXPECT_FALSE(wa.has_value());
  ASSERT_TRUE(wb.has_value());
  EXPECT_THAT(mine(b), ElementsAre("web/1/y"));
  // A batch that moves a's instance to b wakes both.
  watch(b, &wb);
  json writes = json::array({{{"kind", "assignment"}, {"key", "web/0/x"}, {"delete", true}},
                             {{"kind", "assignment"}, {"key", "web/0/z"},
                              {"value", {{"node_id", b}, {"instance_id", "z"}}}}});
  ASSERT_EQ(Call("POST", "/v1/docs", json{{"writes", writes}}.dump(), ctl).status, 200);
  EXPECT_TRUE(wa.has_value());
  EXPECT_TRUE(wb.has_value());
  EXPECT_THAT(mine(a), ElementsAre());
  EXPECT_THAT(mine(b), ElementsAre("web/0/z", "web/1/y"));
  // A single delete wakes the DEA that had it.
  watch(b, &wb);
  ASSERT_EQ(Call("DELETE", "/v1/docs/assignment/web/1/y", "", ctl).status, 200);
  EXPECT_TRUE(wb.has_value());
  EXPECT_THAT(mine(b), ElementsAre("web/0/z"));
  // The unfiltered list still has every assignment.
  EXPECT_EQ(Call("GET", "/v1/docs/assignment", "", ctl).body.size(), 1u);
}

TEST_F(PrimaryTest, ANodeChangesOnlyItsOwnRecordAndTheCoreAnyNodes) {
  std::string a = Attach("10.0.0.2");
  std::string b = Attach("10.0.0.3");
  int64_t rev = Rev();
  for (const auto& [path, extra] : std::vector<std::pair<std::string, json>>{
           {"/v1/nodes/roles", {{"add", {"redis"}}}},
           {"/v1/nodes/update", {{"hostname", "taken-over"}}},
           {"/v1/nodes/remove", json::object()}}) {
    SCOPED_TRACE(path);
    for (const std::string& ref : {b, std::string("10.0.0.3")}) {  // by id or by address
      json body = extra;
      body["node"] = ref;
      Reply r = Call("POST", path, body.dump(), a);
      EXPECT_EQ(r.status, 403);
      EXPECT_THAT(r.error(), HasSubstr("node 10.0.0.2 cannot change node 10.0.0.3"));
    }
  }
  EXPECT_EQ(Rev(), rev);
  EXPECT_EQ(State(b), "up");
  // Its own record, yes; and the core, any node's.
  ASSERT_EQ(Call("POST", "/v1/nodes/roles", json{{"node", a}, {"add", {"redis"}}}.dump(), a).status,
            200);
  ASSERT_EQ(Core("POST", "/v1/nodes/update", {{"node", b}, {"hostname", "renamed"}}).status, 200);
  ASSERT_EQ(Core("POST", "/v1/nodes/remove", {{"node", b}}).status, 200);
  ASSERT_EQ(Call("POST", "/v1/nodes/remove", json{{"node", a}}.dump(), a).status, 200);  // detach
  EXPECT_EQ(State(a), "absent");
  EXPECT_EQ(State(b), "absent");
}

TEST_F(PrimaryTest, TheClusterViewCanBeLimitedToOneRoleWithoutProcesses) {
  std::string dea = Attach("10.0.0.2", {"dea"});
  std::string other = Attach("10.0.0.3", {"redis"});
  ASSERT_EQ(Call("POST", "/v1/heartbeat",
                 json{{"processes", json::array({{{"name", "dea"}, {"state", "RUNNING"}}})}}.dump(),
                 dea).status,
            200);
  Reply all = Core("GET", "/v1/cluster");
  ASSERT_EQ(all.status, 200);
  EXPECT_EQ(all.body["nodes"].size(), 3u);
  Reply deas = Core("GET", "/v1/cluster?processes=0&role=dea");
  ASSERT_EQ(deas.status, 200);
  ASSERT_EQ(deas.body["nodes"].size(), 1u);
  EXPECT_EQ(deas.body["nodes"][0]["id"], dea);
  EXPECT_EQ(deas.body["nodes"][0]["state"], "up");
  EXPECT_TRUE(deas.body["nodes"][0].contains("last_report_ms"));
  EXPECT_FALSE(deas.body["nodes"][0].contains("processes"));
  EXPECT_EQ(Core("GET", "/v1/cluster?role=redis").body["nodes"][0]["id"], other);
  EXPECT_EQ(Core("GET", "/v1/cluster?role=nosuchrole").body["nodes"].size(), 0u);
}

TEST_F(PrimaryTest, SeveralDocumentWritesGoInOneRequestAndOneRevision) {
  std::string a = Attach("10.0.0.2", {"controller"});
  ASSERT_EQ(Call("PUT", "/v1/docs/assignment/web/0/x", R"({"value":{"i":0}})", a).status, 200);
  int64_t rev = Rev();
  json writes = json::array({{{"kind", "assignment"}, {"key", "web/1/y"}, {"value", {{"i", 1}}}},
                             {{"kind", "assignment"}, {"key", "web/0/x"}, {"delete", true}}});
  Reply r = Call("POST", "/v1/docs", json{{"writes", writes}}.dump(), a);
  ASSERT_EQ(r.status, 200) << r.error();
  EXPECT_EQ(r.body["written"], 2);
  EXPECT_EQ(Rev(), rev + 1);
  EXPECT_EQ(Call("GET", "/v1/docs/assignment/web/0/x", "", a).status, 404);
  EXPECT_EQ(Call("GET", "/v1/docs/assignment/web/1/y", "", a).body["value"]["i"], 1);
  // One bad write refuses the whole request, and nothing changes.
  rev = Rev();
  for (const json& bad : {
           json{{"kind", "assignment"}, {"key", "../x"}, {"value", 1}},
           json{{"kind", "assignment"}, {"key", "web/2/z"}},                              // neither
           json{{"kind", "assignment"}, {"key", "web/2/z"}, {"value", 1}, {"delete", true}},  // both
           json{{"kind", "instances"}, {"key", a}, {"value", json::object()}},  // reports: refused
           json("not an object")}) {
    SCOPED_TRACE(bad.dump());
    json two = json::array({{{"kind", "assignment"}, {"key", "web/3/w"}, {"value", 3}}, bad});
    Reply refused = Call("POST", "/v1/docs", json{{"writes", two}}.dump(), a);
    EXPECT_GE(refused.status, 400);
    EXPECT_LT(refused.status, 500);
  }
  EXPECT_EQ(Call("POST", "/v1/docs", R"({"writes":{}})", a).status, 400);
  EXPECT_EQ(Call("POST", "/v1/docs", "{}", a).status, 400);
  EXPECT_EQ(Rev(), rev);
  EXPECT_EQ(Call("GET", "/v1/docs/assignment/web/3/w", "", a).status, 404);
}

TEST_F(PrimaryTest, HistoryNeverKeepsASecretAClientSends) {
  const std::string secret = RandomHex(32);
  json audit = {{"node", "10.0.0.7"},
                {"command", "kato node attach --token KATO1." + token_.ca_hash + "." + secret +
                                " --store postgresql://u:" + secret + "@db/kato 10.0.0.1"}};
  ASSERT_EQ(Core("POST", "/v1/history", {{"audit", audit}}).status, 200);
  Reply r = Core("GET", "/v1/history?limit=1");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.body.size(), 1u);
  std::string recorded = r.body[0]["command"];
  EXPECT_THAT(recorded, Not(HasSubstr(secret)));
  EXPECT_EQ(recorded, "kato node attach --token *** --store postgresql://u:***@db/kato 10.0.0.1");
}

// ---- versions -----------------------------------------------------------------------

TEST(VersionsCompatibleTest, SameMajorAndMinor) {
  struct Case {
    const char* a;
    const char* b;
    bool want;
  };
  for (const auto& c : std::vector<Case>{{"0.1.0", "0.1.7", true},
                                         {"0.1.7", "0.1.0", true},
                                         {"0.1.0", "0.2.0", false},
                                         {"0.1.0", "1.1.0", false},
                                         {"1.0", "1.0.3", true},
                                         {"2.10.1", "2.10.0", true},
                                         {"2.10.1", "2.1.0", false},
                                         {"", "0.1.0", false},
                                         {"0.1.0", "", false},
                                         {"x.y", "x.y", false},
                                         {"1", "1", false},
                                         {"1", "1.0", false},
                                         {"0.x.1", "0.x.1", false}}) {
    EXPECT_EQ(VersionsCompatible(c.a, c.b), c.want) << c.a << " vs " << c.b;
  }
}

// ---- leases -----------------------------------------------------------------

TEST_F(PrimaryTest, LeaseIsHeldByOneHolderUntilItExpiresOnThePrimarysClock) {
  Reply a = Core("POST", "/v1/lease/controller-leader", {{"holder", "a"}, {"ttl_ms", 3000}});
  ASSERT_EQ(a.status, 200) << a.body.dump();
  EXPECT_TRUE(a.body["held"].get<bool>());
  EXPECT_EQ(a.body["holder"], "a");
  Reply b = Core("POST", "/v1/lease/controller-leader", {{"holder", "b"}, {"ttl_ms", 3000}});
  EXPECT_FALSE(b.body["held"].get<bool>());
  EXPECT_EQ(b.body["holder"], "a");
  clock_.advance(Millis(3001));
  b = Core("POST", "/v1/lease/controller-leader", {{"holder", "b"}, {"ttl_ms", 3000}});
  EXPECT_TRUE(b.body["held"].get<bool>());
  EXPECT_EQ(Core("GET", "/v1/lease/controller-leader").body["holder"], "b");
  EXPECT_EQ(Core("DELETE", "/v1/lease/controller-leader", {{"holder", "b"}}).status, 200);
  EXPECT_FALSE(Core("GET", "/v1/lease/controller-leader").body.contains("holder"));
}

TEST_F(PrimaryTest, BadLeaseRequestsAreRefusedAndChangeNothing) {
  int64_t before = Rev();
  EXPECT_EQ(Core("POST", "/v1/lease/x", {{"holder", "a"}, {"ttl_ms", 0}}).status, 400);
  EXPECT_EQ(Core("POST", "/v1/lease/x", {{"holder", "a"}, {"ttl_ms", "5"}}).status, 400);
  EXPECT_EQ(Core("POST", "/v1/lease/x", {{"ttl_ms", 1000}}).status, 400);
  EXPECT_EQ(Core("POST", "/v1/lease/..", {{"holder", "a"}, {"ttl_ms", 1000}}).status, 400);
  EXPECT_EQ(Core("PUT", "/v1/lease/x", {{"holder", "a"}, {"ttl_ms", 1000}}).status, 405);
  EXPECT_EQ(Call("POST", "/v1/lease/x", R"({"holder":"a","ttl_ms":1000})", "stranger").status, 403);
  EXPECT_EQ(Rev(), before);
}

TEST_F(PrimaryTest, DropletsDirMustBeAnAbsolutePath) {
  int64_t before = Rev();
  for (json bad : {json("relative/dir"), json(""), json(5), json::array()}) {
    Reply r = Core("POST", "/v1/config/set",
                   {{"component", "controller"}, {"key", "droplets_dir"}, {"value", bad}});
    EXPECT_EQ(r.status, 400) << bad.dump();
    EXPECT_THAT(r.body.dump(), HasSubstr("absolute path"));
  }
  EXPECT_EQ(Rev(), before);
  EXPECT_EQ(Core("POST", "/v1/config/set",
                 {{"component", "controller"}, {"key", "droplets_dir"}, {"value", "/mnt/controller"}})
                .status,
            200);
}

TEST_F(PrimaryTest, DeaNetworkSettingsAreCheckedBeforeTheyAreStored) {
  int64_t before = Rev();
  struct Case {
    const char* key;
    json value;
    const char* words;
  } bad[] = {{"instance_cidr", "10.254.0.1/16", "did you mean"},
             {"instance_cidr", "10.254.0.0/30", "/8 to /29"},
             {"instance_cidr", 5, "/8 to /29"},
             {"egress_allow", "10.0.0.0/8:5432", "JSON array"},
             {"egress_allow", json::array({"10.0.0.0/8"}), "no :PORT"},
             {"allow_unlimited", "yes", "true or false"},
             {"staging_memory_mb", 10, "64 to 65536"},
             {"staging_memory_mb", "1G", "64 to 65536"},
             {"staging_timeout_s", 0, "1 to 86400"},
             {"npm_registry", "ftp://x", "http:// or https://"},
             {"npm_registry", 5, "http:// or https://"}};
  for (const auto& c : bad) {
    Reply r = Core("POST", "/v1/config/set", {{"component", "dea"}, {"key", c.key}, {"value", c.value}});
    EXPECT_EQ(r.status, 400) << c.key << " " << c.value.dump();
    EXPECT_THAT(r.body.dump(), HasSubstr(c.words));
  }
  EXPECT_EQ(Rev(), before);
  EXPECT_EQ(Core("POST", "/v1/config/set",
                 {{"component", "dea"}, {"key", "egress_allow"}, {"value", json::array({"10.0.0.0/8:5432"})}})
                .status,
            200);
}

TEST_F(PrimaryTest, RemovingALoadBalancerForgetsItsChosenRouters) {
  std::string lb = Attach("10.0.0.9", {"load_balancer"});
  std::string other = Attach("10.0.0.10", {"load_balancer"});
  for (const auto& id : {lb, other})
    ASSERT_TRUE(store_->SetConfig({"load_balancer", "routers." + id, R"(["10.0.0.2"])"}).ok());
  ASSERT_EQ(Core("POST", "/v1/nodes/remove", {{"node", "10.0.0.9"}}).status, 200);
  EXPECT_FALSE(store_->GetConfig("load_balancer", "routers." + lb)->has_value());
  EXPECT_TRUE(store_->GetConfig("load_balancer", "routers." + other)->has_value());
}

}  // namespace
}  // namespace kato
