#include "router/router_certs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "common/fs.h"
#include "common/pki.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RouterCertsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-router-certs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    ASSERT_TRUE(MakeDirs(layout().web_dir(), 0700).ok());
    ASSERT_TRUE(MakeDirs(layout().custom_dir(), 0700).ok());
    auto ca = CreateCa("cluster");
    ASSERT_TRUE(ca.ok());
    ca_ = *ca;
    auto kc = CreateKeyAndCsr("node");
    node_ = {*SignCsr(ca_, kc->csr_pem, "node-id", 1), kc->key_pem};
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  RouterLayout layout() const { return RouterLayout(root_); }
  std::pair<std::string, std::string> Web(const std::vector<std::string>& names) {
    auto kc = CreateKeyAndCsr("web");
    return {*SignServerCsr(ca_, kc->csr_pem, names[0], names, 30), kc->key_pem};
  }
  int64_t Now() const { return RealClock::instance().wall_ms() / 1000; }

  std::string root_;
  CaBundle ca_;
  ServedCert node_;
};

TEST_F(RouterCertsTest, NodeCertificateUntilTheWebOneArrives) {
  RouterCerts certs(layout(), node_);
  std::string problem;
  CertChoice c = certs.Choose(Now(), "", &problem);
  EXPECT_THAT(c.sources, ElementsAre("node"));
  EXPECT_EQ(problem, "");
  auto [cert, key] = Web({"api.example.test", "*.example.test"});
  ASSERT_TRUE(WriteFileAtomic(layout().web_key(), key, 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(layout().web_cert(), cert, 0644).ok());
  CertChoice d = certs.Choose(Now(), "", &problem);
  EXPECT_THAT(d.sources, ElementsAre("cluster", "node"));
  EXPECT_NE(c.id, d.id);
  EXPECT_EQ(d.id, certs.Choose(Now(), "", &problem).id);  // stable while nothing changes
}

TEST_F(RouterCertsTest, SoundCustomCertificateComesFirst) {
  auto [wcert, wkey] = Web({"api.example.test", "*.example.test"});
  ASSERT_TRUE(WriteFileAtomic(layout().web_key(), wkey, 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(layout().web_cert(), wcert, 0644).ok());
  auto [ccert, ckey] = Web({"api.example.test", "shop.example.com"});
  ASSERT_TRUE(WriteFileAtomic(layout().custom_bundle(), ccert + ckey, 0600).ok());
  RouterCerts certs(layout(), node_);
  std::string problem;
  CertChoice c = certs.Choose(Now(), "", &problem);
  EXPECT_THAT(c.sources, ElementsAre("custom", "cluster", "node"));
  EXPECT_EQ(c.fingerprints[0], InspectCert(ccert)->fingerprint);
  EXPECT_FALSE(c.custom_sha.empty());
  // Refused by the router once: left out, and said why.
  CertChoice r = certs.Choose(Now(), c.custom_sha, &problem);
  EXPECT_THAT(r.sources, ElementsAre("cluster", "node"));
  EXPECT_THAT(problem, HasSubstr("refused"));
  // A key that is not the certificate's: left out.
  ASSERT_TRUE(WriteFileAtomic(layout().custom_bundle(), ccert + wkey, 0600).ok());
  CertChoice m = certs.Choose(Now(), "", &problem);
  EXPECT_THAT(m.sources, ElementsAre("cluster", "node"));
  EXPECT_THAT(problem, HasSubstr("key"));
  // Expired (checked at a time past its end): left out.
  ASSERT_TRUE(WriteFileAtomic(layout().custom_bundle(), ccert + ckey, 0600).ok());
  CertChoice e = certs.Choose(Now() + 40 * 86400, "", &problem);
  EXPECT_EQ(e.sources.front(), "node");  // the web one has expired by then too
  EXPECT_FALSE(problem.empty());
}

}  // namespace
}  // namespace kato
