"""Who may use the cluster's client-certificate ports (the primary's 9440, the
agents' 9441, the controller's 9023): current member nodes only. A removed
node's certificate is refused everywhere at once; a web (serverAuth-only)
certificate of the cluster CA is never a client certificate."""
import http.client
import os
import shutil
import ssl
import subprocess

from conftest import wait_for

PRIMARY, AGENT, CONTROLLER = 9440, 9441, 9023


def call(ip, port, path, cert, key, ca):
    """GET over TLS with a client certificate: the status, or None when the
    server refused the certificate in the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # kato's servers are identified by the CA, not by name
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    c = http.client.HTTPSConnection(ip, port, context=ctx, timeout=5)
    try:
        c.request("GET", path)
        return c.getresponse().status
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return None
    finally:
        c.close()


def statuses(core, other_ip, cert, key, ca):
    """What each server answers this certificate: the core's primary, agent and
    controller, and the agent of another node (at other_ip)."""
    return {
        "primary": call(core.ip, PRIMARY, "/v1/cluster", cert, key, ca),
        "core agent": call(core.ip, AGENT, "/v1/status", cert, key, ca),
        "other agent": call(other_ip, AGENT, "/v1/status", cert, key, ca),
        "controller": call(core.ip, CONTROLLER, "/v2/apps", cert, key, ca),
    }


ALL_OK = {"primary": 200, "core agent": 200, "other agent": 200, "controller": 200}


def pki(node, name):
    return os.path.join(node.data_dir, "pki", name)


def test_removed_nodes_certificate_is_refused_everywhere_at_once(cluster, tmp_path):
    core = cluster.core(1)
    core.wait_running(["controller"])
    n2, n3 = cluster.node(2), cluster.node(3)
    cluster.attach(n2, core)
    cluster.attach(n3, core)
    # n2's certificate, kept aside: n2 deletes its own when it learns it was removed.
    cert, key = str(tmp_path / "n2.pem"), str(tmp_path / "n2.key")
    shutil.copy(pki(n2, "node.pem"), cert)
    shutil.copy(pki(n2, "node.key"), key)
    ca = pki(core, "ca.pem")
    wait_for("n2's certificate to work everywhere",
             lambda: statuses(core, n3.ip, cert, key, ca) == ALL_OK, timeout=10)

    core.ok("node", "remove", n2.ip)
    refused = {k: 403 for k in ALL_OK}
    # "At once": the servers follow the cluster's revision, not a timer.
    wait_for("n2's certificate to be refused everywhere",
             lambda: statuses(core, n3.ip, cert, key, ca) == refused, timeout=1.0)
    # The members still get in.
    assert statuses(core, n3.ip, pki(n3, "node.pem"), pki(n3, "node.key"), ca) == ALL_OK


def sign_web_cert(core, cn, out_dir):
    """A certificate of the cluster CA made as the web certificate is
    (extendedKeyUsage serverAuth only), with the given CommonName."""
    key, csr, cert = (os.path.join(out_dir, f"web.{x}") for x in ("key", "csr", "pem"))
    ext = os.path.join(out_dir, "web.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:api.kato.test,DNS:*.kato.test\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", f"/CN={cn}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", pki(core, "ca.pem"),
                    "-CAkey", pki(core, "ca.key"), "-CAcreateserial", "-days", "2",
                    "-extfile", ext, "-out", cert], check=True, capture_output=True)
    return cert, key


def test_web_certificate_is_not_a_client_certificate(cluster, tmp_path):
    core = cluster.core(1)
    core.wait_running(["controller"])
    n2 = cluster.node(2)
    cluster.attach(n2, core)
    ca = pki(core, "ca.pem")
    core_id = core.json("info")["id"]
    # The web certificate's own name, and even the core's node id: the purpose is checked.
    for cn in ("kato.test", core_id):
        d = tmp_path / cn
        d.mkdir()
        cert, key = sign_web_cert(core, cn, str(d))
        got = statuses(core, n2.ip, cert, key, ca)
        assert all(s in (None, 401, 403) for s in got.values()), (cn, got)
    # A node certificate of the same CA gets in (the check is not refusing
    # everything); agents learn of a new member with their next heartbeat reply.
    wait_for("n2's node certificate to work everywhere", lambda: statuses(
        core, n2.ip, pki(n2, "node.pem"), pki(n2, "node.key"), ca) == ALL_OK, timeout=5)
