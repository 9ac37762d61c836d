// Which certificates of the cluster CA work as TLS client certificates: node
// certificates (SignCsr) do; the load balancer's web certificate
// (SignServerCsr, serverAuth only) is refused in the handshake by every kato
// server, whatever its CommonName.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>

#include "common/clock.h"
#include "common/http.h"
#include "common/pki.h"

namespace kato {
namespace {

struct Cert {
  std::string cert_pem, key_pem;
};

Cert NodeCert(const CaBundle& ca, const std::string& cn) {
  auto kc = CreateKeyAndCsr(cn);
  EXPECT_TRUE(kc.ok()) << kc.error();
  auto cert = SignCsr(ca, kc->csr_pem, cn, 30);
  EXPECT_TRUE(cert.ok()) << cert.error();
  return {cert.ok() ? *cert : "", kc->key_pem};
}

Cert WebCert(const CaBundle& ca, const std::string& cn) {
  auto kc = CreateKeyAndCsr(cn);
  EXPECT_TRUE(kc.ok()) << kc.error();
  auto cert = SignServerCsr(ca, kc->csr_pem, cn, {"api.example.com", "*.example.com"}, 30);
  EXPECT_TRUE(cert.ok()) << cert.error();
  return {cert.ok() ? *cert : "", kc->key_pem};
}

class ClientCertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = CreateCa("test");
    ASSERT_TRUE(ca.ok()) << ca.error();
    ca_ = *ca;
    Cert server = NodeCert(ca_, "server-node");
    server_ =
        std::make_unique<HttpsServer>(ServerTls{ca_.cert_pem, server.cert_pem, server.key_pem, ""},
                                      [](const HttpRequest& req, Responder respond) {
                                        HttpResponse r;
                                        r.body = req.peer_cn;  // who the server thinks is calling
                                        respond(std::move(r));
                                      });
    ASSERT_TRUE(server_->Start("127.0.0.1", 0).ok());
  }

  Result<HttpResponse> CallWith(const Cert& client) {
    return HttpsCall(ClientTls{ca_.cert_pem, client.cert_pem, client.key_pem, ""}, "127.0.0.1",
                     server_->port(), "GET", "/", "", Millis(5000));
  }

  CaBundle ca_;
  std::unique_ptr<HttpsServer> server_;
};

TEST_F(ClientCertTest, ANodeCertificateIsAClientCertificate) {
  auto r = CallWith(NodeCert(ca_, "node-1"));
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->body, "node-1");
}

TEST_F(ClientCertTest, AWebCertificateIsNotAClientCertificate) {
  // Even one whose CommonName is a node id: the purpose is checked, not only the name.
  for (const std::string cn : {"api.example.com", "node-1"}) {
    SCOPED_TRACE(cn);
    auto r = CallWith(WebCert(ca_, cn));
    if (r.ok()) {
      EXPECT_NE(r->body, cn) << "the server took a web certificate for a client";
    } else {
      SUCCEED() << r.error();  // the handshake failed: refused
    }
  }
}

TEST_F(ClientCertTest, AWebCertificateStillServesTls) {
  Cert web = WebCert(ca_, "api.example.com");
  HttpsServer lb(ServerTls{ca_.cert_pem, web.cert_pem, web.key_pem, ""},
                 [](const HttpRequest&, Responder respond) { respond(HttpResponse{}); });
  ASSERT_TRUE(lb.Start("127.0.0.1", 0).ok());
  auto r = HttpsCall(ClientTls{ca_.cert_pem, "", "", ""}, "127.0.0.1", lb.port(), "GET", "/", "",
                     Millis(5000));
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 200);
}

}  // namespace
}  // namespace kato
