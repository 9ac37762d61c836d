#include "services/service_model.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace kato {
namespace {

using json = nlohmann::json;

ServiceRecord Pg(const std::string& name, const std::string& ip) {
  ServiceRecord s;
  s.name = name;
  s.type = "postgresql";
  s.id = "0123456789abcdef";
  s.node_id = "n1";
  s.node_ip = ip;
  s.port = 5432;
  s.username = "u0123456789abcdef";
  s.password = "pw";
  s.dbname = "d0123456789abcdef";
  return s;
}

TEST(ServiceModel, RoundTripsThroughJson) {
  ServiceRecord s = Pg("db", "127.0.0.3");
  s.bound_apps = {"a", "b"};
  s.state = "DELETING";
  s.created_ms = 42;
  auto back = ServiceFromJson(ServiceToJson(s));
  ASSERT_TRUE(back) << back.error();
  EXPECT_EQ(*back, s);
  EXPECT_FALSE(ServiceFromJson("[]"));
  EXPECT_FALSE(ServiceFromJson("{\"name\": 1}"));
  ServiceState st{"0123456789abcdef", "FAILED", "port 42000 is in use", 7};
  auto st2 = ServiceStateFromJson(ServiceStateToJson(st));
  ASSERT_TRUE(st2);
  EXPECT_EQ(*st2, st);
}

TEST(ServiceModel, EnvHasVcapServicesInCloudFoundrysShape) {
  ServiceRecord pg = Pg("db", "127.0.0.3");
  ServiceRecord r;
  r.name = "cache";
  r.type = "redis";
  r.plan = "64M";
  r.node_ip = "127.0.0.4";
  r.port = 42001;
  r.password = "secret";
  auto env = ServiceEnv({pg, r});
  json v = json::parse(env.at("VCAP_SERVICES"));
  ASSERT_TRUE(v["postgresql"].is_array());
  EXPECT_EQ(v["postgresql"][0]["name"], "db");
  EXPECT_EQ(v["postgresql"][0]["label"], "postgresql");
  EXPECT_EQ(v["postgresql"][0]["plan"], "free");
  const json& c = v["postgresql"][0]["credentials"];
  EXPECT_EQ(c["host"], "127.0.0.3");
  EXPECT_EQ(c["port"], 5432);
  EXPECT_EQ(c["username"], "u0123456789abcdef");
  EXPECT_EQ(c["password"], "pw");
  EXPECT_EQ(c["name"], "d0123456789abcdef");
  EXPECT_EQ(c["uri"], "postgres://u0123456789abcdef:pw@127.0.0.3:5432/d0123456789abcdef");
  EXPECT_FALSE(v["redis"][0]["credentials"].contains("username"));
  EXPECT_EQ(env.at("DATABASE_URL"), c["uri"]);
  EXPECT_EQ(env.at("REDIS_URL"), "redis://:secret@127.0.0.4:42001/0");
  EXPECT_FALSE(env.count("RABBITMQ_URL"));
  EXPECT_TRUE(ServiceEnv({}).empty());
}

TEST(ServiceModel, DatabaseUrlPrefersPostgresqlAndTheFirstOfAType) {
  ServiceRecord my = Pg("m", "127.0.0.5");
  my.type = "mysql";
  my.port = 3306;
  ServiceRecord pg1 = Pg("p1", "127.0.0.6"), pg2 = Pg("p2", "127.0.0.7");
  auto env = ServiceEnv({my, pg1, pg2});
  EXPECT_EQ(env.at("DATABASE_URL"), ServiceUri(pg1));
  EXPECT_EQ(json::parse(env.at("VCAP_SERVICES"))["postgresql"].size(), 2u);
  EXPECT_EQ(ServiceEnv({my}).at("DATABASE_URL").rfind("mysql://", 0), 0u);
}

TEST(ServiceModel, MemcachedAndRabbitmqVariables) {
  ServiceRecord m = Pg("mc", "127.0.0.8");
  m.type = "memcached";
  m.port = 42002;
  m.dbname = "";
  ServiceRecord q = Pg("mq", "127.0.0.9");
  q.type = "rabbitmq";
  q.port = 5672;
  q.dbname = "v1";
  auto env = ServiceEnv({m, q});
  EXPECT_EQ(env.at("MEMCACHE_SERVERS"), "127.0.0.8:42002");
  EXPECT_EQ(env.at("MEMCACHE_USERNAME"), m.username);
  EXPECT_EQ(env.at("MEMCACHE_PASSWORD"), "pw");
  EXPECT_EQ(env.at("RABBITMQ_URL"), "amqp://" + q.username + ":pw@127.0.0.9:5672/v1");
  EXPECT_EQ(RoleOfServiceType("rabbitmq"), "rabbit");
  EXPECT_EQ(RoleOfServiceType("mysql"), "mysql");
  EXPECT_TRUE(IsServiceType("memcached"));
  EXPECT_FALSE(IsServiceType("mongodb"));
}

TEST(ServiceModel, AFilesystemIsAMountPointWithoutItsKey) {
  ServiceRecord fs;
  fs.name = "files";
  fs.type = "filesystem";
  fs.id = "0123456789abcdef";
  fs.node_ip = "10.0.0.7";
  fs.port = kFilesystemSshPort;
  fs.username = "u" + fs.id;
  fs.ssh_key = "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n";
  fs.ssh_public_key = "ecdsa-sha2-nistp256 AAAA kato-fs";
  ServiceRecord other = fs;
  other.name = "more";
  auto env = ServiceEnv({fs, other});
  EXPECT_EQ(env["STACKATO_FILESYSTEM"], "/app/fs/files");
  EXPECT_EQ(env["KATO_FILESYSTEM"], "/app/fs/files");
  auto vcap = json::parse(env["VCAP_SERVICES"]);
  EXPECT_EQ(vcap["filesystem"][1]["credentials"]["dir"], "/app/fs/more");
  for (const auto& [k, v] : env) EXPECT_EQ(v.find("secret"), std::string::npos) << k;
  EXPECT_EQ(CredentialsJson(fs).find("secret"), std::string::npos);
  EXPECT_TRUE(ServiceEndpoints({fs}).empty());  // the DEA connects, not the instance
  auto back = ServiceFromJson(ServiceToJson(fs));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, fs);
  auto host = FsHostFromJson(FsHostToJson({"10.0.0.7", 9450, "ecdsa-sha2-nistp256 AAAA h"}));
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->port, 9450);
  EXPECT_FALSE(FsHostFromJson("[]").ok());
  EXPECT_FALSE(FsHostFromJson("{\"ip\": 1}").ok());
}

TEST(ServiceModel, EndpointsAreUniqueAndSorted) {
  ServiceRecord a = Pg("a", "127.0.0.3"), b = Pg("b", "127.0.0.3"), c = Pg("c", "127.0.0.2");
  auto e = ServiceEndpoints({a, b, c});
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].ip, "127.0.0.2");
  EXPECT_EQ(e[1].port, 5432);
}

}  // namespace
}  // namespace kato
