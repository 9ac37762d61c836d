#include "common/ipv4.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kato {
namespace {

using ::testing::HasSubstr;

TEST(Ipv4NetTest, ParsesAndRefuses) {
  auto n = ParseIpv4Net("10.254.0.0/16");
  ASSERT_TRUE(n.ok()) << n.error();
  EXPECT_EQ(FormatIpv4Net(*n), "10.254.0.0/16");
  EXPECT_EQ(n->size(), 65536u);
  EXPECT_EQ(ParseIpv4Net("10.0.0.7").value().prefix, 32);
  EXPECT_THAT(ParseIpv4Net("10.254.0.1/16").error(), HasSubstr("did you mean 10.254.0.0/16"));
  EXPECT_THAT(ParseIpv4Net("10.254.0.0/33").error(), HasSubstr("prefix"));
  EXPECT_THAT(ParseIpv4Net("nope/8").error(), HasSubstr("not an IPv4 network"));
  EXPECT_FALSE(ParseIpv4Net("").ok());
}

TEST(EgressAllowTest, ParsesRulesAndRefusesGarbage) {
  auto r = ParseEgressAllow(R"(["10.0.0.0/8:5432", "192.0.2.7:8000-8100"])");
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].first_port, 5432);
  EXPECT_EQ((*r)[1].last_port, 8100);
  EXPECT_EQ((*r)[1].net.prefix, 32);
  for (const char* bad : {R"("10.0.0.0/8:5432")", R"([5432])", R"(["10.0.0.0/8"])",
                          R"(["10.0.0.0/8:0"])", R"(["10.0.0.0/8:70000"])",
                          R"(["10.0.0.0/8:90-80"])", R"(["host.example:80"])", "not json"}) {
    EXPECT_FALSE(ParseEgressAllow(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace kato
