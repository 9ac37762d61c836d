"""The Management Console in a real browser (Debian's chromium and
chromium-driver, headless, with python3-selenium) on a real three-node
cluster, at https://api.DOMAIN/console/ through the core's router: sign in,
the Cluster Nodes page lists every node, a role checkbox adds and removes the
role (checked with `kato info` on that node), an app's page shows its
instances and its log lines as they are written, and a developer sees only
their organization. Every page is saved as a screenshot (KATO_SCREENSHOT_DIR,
default /tmp/kato-console-screenshots)."""
import json
import os
import shutil
import ssl
import http.client

import pytest

from conftest import get, wait_for

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

APPS = os.path.join(os.path.dirname(__file__), "apps")
DOMAIN = "console.test"
API = "api." + DOMAIN
SHOTS = os.environ.get("KATO_SCREENSHOT_DIR", "/tmp/kato-console-screenshots")


def console_up(ip):
    """GET /console/ through the router's TLS port (status, or None)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        c = http.client.HTTPSConnection(ip, 443, timeout=5, context=ctx)
        c.request("GET", "/console/", headers={"Host": API})
        r = c.getresponse()
        r.read()
        return r.status == 200 and dict(r.getheaders())
    except OSError:
        return None


class Browser:
    def __init__(self, core_ip):
        opts = Options()
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  # The cluster's CA is not the browser's: the test checks the page, not the PKI.
                  "--ignore-certificate-errors", f"--host-resolver-rules=MAP {API} {core_ip}",
                  "--window-size=1280,900"):
            opts.add_argument(a)
        self.d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        os.makedirs(SHOTS, exist_ok=True)

    def close(self):
        self.d.quit()

    def shot(self, name):
        self.d.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def field(self, label):
        """The input a <label> with this text names (as a screen reader finds it)."""
        lab = self.d.find_element(By.XPATH, f"//label[normalize-space()='{label}']")
        return self.d.find_element(By.ID, lab.get_attribute("for"))

    def text(self):
        return self.d.find_element(By.TAG_NAME, "body").text

    def wait_text(self, what, timeout=20):
        return wait_for(f"'{what}' on the page", lambda: what in self.text(), timeout=timeout)

    def sign_in(self, email, password):
        self.d.get(f"https://{API}/console/")
        wait_for("the sign-in form", lambda: self.d.find_elements(By.ID, "email") and
                 self.d.find_element(By.ID, "email").is_displayed(), timeout=20)
        self.field("Email").send_keys(email)
        self.field("Password").send_keys(password)
        self.shot("sign-in")
        self.d.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
        self.wait_text(email)

    def role_box(self, ip, role):
        card = self.d.find_element(By.CSS_SELECTOR, f"article[data-ip='{ip}']")
        return card.find_element(By.XPATH, f".//label[normalize-space()='{role}']/input")

    # Looked up afresh each time; a stale element (the page replaced a card
    # instead of updating it in place) fails the test.
    def role_checked(self, ip, role):
        return self.role_box(ip, role).is_selected()

    def click_role(self, ip, role):
        self.role_box(ip, role).click()

    def card_status(self, ip):
        card = self.d.find_element(By.CSS_SELECTOR, f"article[data-ip='{ip}']")
        return card.find_element(By.CSS_SELECTOR, "[role=status]").text

    def card_says(self, ip, text):
        """The card's status line once it contains `text`; raises with what it says instead."""
        said = self.card_status(ip)
        if text not in said:
            raise AssertionError(f"the card of {ip} says {said!r}")
        return said


def test_console_nodes_roles_apps_and_a_developers_view(cluster):
    core = cluster.core(1, API)
    data = cluster.node(2)
    cluster.attach(data, core)
    dea = cluster.node(3)
    cluster.attach(dea, core, "dea")
    core.ok("user", "add", "admin@console.test", "--admin", "--password-stdin", input="admin-password\n")
    core.ok("user", "add", "dev@console.test", "--password-stdin", input="dev-password\n")
    for org in ("blue", "red"):
        core.ok("org", "create", org)
    core.ok("org", "add-user", "blue", "dev@console.test")
    core.ok("app", "--org", "blue", "push", "logger", "--path", os.path.join(APPS, "logger"))
    core.ok("app", "--org", "red", "push", "secret", "--path", os.path.join(APPS, "web"))

    headers = wait_for("the console through the router", lambda: console_up(core.ip), timeout=20)
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp

    b = Browser(core.ip)
    try:
        b.sign_in("admin@console.test", "admin-password")
        # The session cookie is HttpOnly, Secure and SameSite=Strict (the browser's own view).
        cookie = b.d.get_cookie("kato_session")
        assert cookie and cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        assert "kato_session" not in b.d.execute_script("return document.cookie")

        # Cluster Nodes: every node with its IP.
        b.wait_text("Cluster Nodes")
        wait_for("three node cards", lambda: len(b.d.find_elements(By.CSS_SELECTOR, "article.node")) == 3)
        for n in (core, data, dea):
            assert n.ip in b.d.find_element(By.CSS_SELECTOR, f"article[data-ip='{n.ip}']").text
        assert b.role_checked(dea.ip, "dea")
        assert not b.role_checked(data.ip, "router")
        b.shot("cluster-nodes")
        b.d.set_window_size(390, 844)  # a phone's width: the cards stack, every control stays
        b.shot("cluster-nodes-phone")
        assert b.role_box(core.ip, "router").is_displayed()
        b.d.set_window_size(1280, 900)

        # Checking a role box adds the role, as `kato role add -n` does.
        b.click_role(data.ip, "router")
        wait_for("router added (the page)", lambda: b.card_says(data.ip, "router added"), timeout=120)
        assert "router" in data.json("info")["roles"]["assigned"]
        b.shot("cluster-nodes-role-added")
        b.click_role(data.ip, "router")
        wait_for("router removed (the page)", lambda: b.card_says(data.ip, "router removed"), timeout=60)
        assert "router" not in data.json("info")["roles"]["assigned"]
        # A refused change shows the agent's error and leaves the box as it was.
        b.click_role(data.ip, "primary")
        wait_for("the refusal", lambda: b.card_status(data.ip) and "adding" not in b.card_status(data.ip))
        assert not b.role_checked(data.ip, "primary")
        assert "primary" not in data.json("info")["roles"]["assigned"]

        # The page follows the cluster without a reload: a role added from the CLI shows up.
        # The page updates the very box in place (it is never replaced under the mouse).
        box = b.role_box(data.ip, "memcached")
        data.ok("role", "add", "memcached")
        wait_for("memcached checked (live)", lambda: box.is_selected(), timeout=20)

        # Node detail, from the node's row.
        b.d.find_element(By.LINK_TEXT, dea.ip).click()
        b.wait_text("Node " + dea.ip)
        b.wait_text("RUNNING")
        assert b.d.find_elements(By.XPATH, "//button[starts-with(@aria-label, 'Restart ')]")
        b.shot("node-detail")

        # An app's page: instances, and log lines as they are written.
        b.d.get(f"https://{API}/console/#/apps/logger")
        b.wait_text("#0")
        assert dea.ip in b.text()
        word = "hello-from-the-test"
        wait_for("the app answers", lambda: get(core.ip, "logger." + DOMAIN, "/say/" + word)[0] == 200,
                 timeout=20)
        logs = b.d.find_element(By.ID, "logs")
        wait_for("the log line in the page", lambda: "said " + word in logs.text, timeout=15)
        b.shot("app")
        b.d.get(f"https://{API}/console/#/apps")
        b.wait_text("secret")
        b.shot("apps")
        b.d.get(f"https://{API}/console/#/services")
        b.wait_text("No services yet")
        b.shot("services")
        b.d.get(f"https://{API}/console/#/users")
        b.wait_text("dev@console.test")
        b.shot("users")

        # Signing out ends the session: the token is revoked on the server.
        token = b.d.get_cookie("kato_session")["value"]
        b.d.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
        wait_for("the sign-in form again", lambda: b.field("Email").is_displayed())
        c = http.client.HTTPConnection(core.ip, 9022, timeout=5)
        c.request("GET", "/v2/apps", headers={"Authorization": "Bearer " + token})
        assert c.getresponse().status == 401

        # A developer sees only their organization, and no cluster nodes.
        b.sign_in("dev@console.test", "dev-password")
        b.wait_text("logger")
        assert "secret" not in b.text()
        assert not b.d.find_element(By.CSS_SELECTOR, "nav a[href='#/nodes']").is_displayed()
        b.shot("developer-apps")
        b.d.get(f"https://{API}/console/#/nodes")
        b.wait_text("admins")  # the API's refusal, shown
    finally:
        b.close()
