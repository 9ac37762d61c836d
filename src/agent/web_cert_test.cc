#include "agent/web_cert.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/pki.h"

namespace kato {
namespace {

using ::testing::HasSubstr;

TEST(SplitBundleTest, KeyAfterTheChainOrBefore) {
  auto ca = CreateCa("ca");
  auto kc = CreateKeyAndCsr("x");
  std::string cert = *SignCsr(*ca, kc->csr_pem, "x", 1);
  for (const std::string& bundle : {cert + ca->cert_pem + kc->key_pem, kc->key_pem + cert}) {
    auto parts = SplitBundle(bundle);
    ASSERT_TRUE(parts.ok()) << parts.error();
    EXPECT_TRUE(KeyMatchesCert(parts->key_pem, parts->cert_pem).ok());
    EXPECT_EQ(parts->cert_pem.find("PRIVATE KEY"), std::string::npos);
    EXPECT_NE(parts->key_pem.find("PRIVATE KEY"), std::string::npos);
  }
  EXPECT_THAT(SplitBundle(cert).error(), HasSubstr("no PEM private key"));
  EXPECT_FALSE(SplitBundle("-----BEGIN PRIVATE KEY-----\nAAAA").ok());  // no END line
  EXPECT_FALSE(SplitBundle("").ok());
}

}  // namespace
}  // namespace kato
