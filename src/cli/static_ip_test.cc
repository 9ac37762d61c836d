#include "cli/static_ip.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kato {
namespace {

using ::testing::HasSubstr;

StaticIp Good() {
  return {"eth0", "10.0.0.5", "255.255.255.0", "10.0.0.1", {"1.1.1.1", "8.8.8.8"}};
}

TEST(StaticIpTest, GoodConfigurationIsValid) {
  EXPECT_TRUE(ValidateStaticIp(Good()).ok());
  StaticIp s = Good();
  s.interface = "enp0s3.100";
  s.netmask = "255.255.0.0";
  s.gateway = "10.0.200.1";
  s.dns = {"10.0.0.2"};
  auto st = ValidateStaticIp(s);
  EXPECT_TRUE(st.ok()) << st.error();
  s = Good();
  s.netmask = "255.255.255.252";  // a /30 point-to-point link
  s.ip = "10.0.0.5";
  s.gateway = "10.0.0.6";
  st = ValidateStaticIp(s);
  EXPECT_TRUE(st.ok()) << st.error();
}

TEST(StaticIpTest, EachBadFieldIsNamedInTheError) {
  struct Case {
    std::string name;
    void (*mutate)(StaticIp&);
    std::vector<std::string> want;  // substrings of the error
  };
  const std::vector<Case> cases = {
      {"empty interface", [](StaticIp& s) { s.interface = ""; }, {"--interface"}},
      {"interface with a space",
       [](StaticIp& s) { s.interface = "eth 0"; },
       {"--interface", "'eth 0'"}},
      {"interface too long",
       [](StaticIp& s) { s.interface = "abcdefghijklmnop"; },
       {"--interface"}},
      {"interface with a slash", [](StaticIp& s) { s.interface = "../eth0"; }, {"--interface"}},
      {"ip", [](StaticIp& s) { s.ip = "10.0.0.300"; }, {"--ip", "10.0.0.300"}},
      {"ip host name", [](StaticIp& s) { s.ip = "myhost"; }, {"--ip", "myhost"}},
      {"netmask not an address", [](StaticIp& s) { s.netmask = "24"; }, {"--netmask", "'24'"}},
      {"netmask non-contiguous",
       [](StaticIp& s) { s.netmask = "255.0.255.0"; },
       {"--netmask", "255.0.255.0", "not a netmask"}},
      {"netmask with a hole",
       [](StaticIp& s) { s.netmask = "255.255.253.0"; },
       {"--netmask", "255.255.253.0"}},
      {"netmask zero", [](StaticIp& s) { s.netmask = "0.0.0.0"; }, {"--netmask"}},
      {"gateway not an address",
       [](StaticIp& s) { s.gateway = "router"; },
       {"--gateway", "router"}},
      {"gateway outside the subnet",
       [](StaticIp& s) { s.gateway = "10.0.1.1"; },
       {"--gateway", "10.0.1.1", "subnet", "10.0.0.5/255.255.255.0"}},
      {"gateway is the ip", [](StaticIp& s) { s.gateway = s.ip; }, {"--gateway", "10.0.0.5"}},
      {"gateway is the broadcast address",
       [](StaticIp& s) { s.gateway = "10.0.0.255"; },
       {"--gateway", "10.0.0.255", "broadcast"}},
      {"ip is the network address", [](StaticIp& s) { s.ip = "10.0.0.0"; }, {"--ip", "network"}},
      {"no dns", [](StaticIp& s) { s.dns.clear(); }, {"--dns"}},
      {"bad dns",
       [](StaticIp& s) {
         s.dns = {"1.1.1.1", "dns.google"};
       },
       {"--dns", "dns.google"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    StaticIp s = Good();
    c.mutate(s);
    auto st = ValidateStaticIp(s);
    ASSERT_FALSE(st.ok());
    for (const auto& w : c.want) EXPECT_THAT(st.error(), HasSubstr(w));
  }
}

TEST(StaticIpTest, StanzaIsAnIfupdownStaticStanza) {
  EXPECT_EQ(InterfacesStanza(Good()),
            "# Written by `kato op static_ip`.\n"
            "auto eth0\n"
            "iface eth0 inet static\n"
            "    address 10.0.0.5\n"
            "    netmask 255.255.255.0\n"
            "    gateway 10.0.0.1\n"
            "    dns-nameservers 1.1.1.1 8.8.8.8\n");
  StaticIp one = Good();
  one.dns = {"9.9.9.9"};
  EXPECT_THAT(InterfacesStanza(one), HasSubstr("\n    dns-nameservers 9.9.9.9\n"));
}

TEST(StaticIpTest, PathIsUnderInterfacesD) {
  EXPECT_EQ(InterfacesPath("", "eth0"), "/etc/network/interfaces.d/kato-eth0");
  EXPECT_EQ(InterfacesPath("/tmp/root", "ens3"), "/tmp/root/etc/network/interfaces.d/kato-ens3");
}

}  // namespace
}  // namespace kato
