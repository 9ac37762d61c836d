// The kato Management Console: plain DOM, no framework. Every value from the
// API is put into the page as text (never as HTML): app names, emails and log
// lines are the users'. Changes send the session's CSRF token.
"use strict";

const state = { user: null, csrf: "", route: "", refresh: null, timers: [], events: null };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && path !== "/console/login") { showSignIn(); }
  if (!r.ok) throw new Error((data && data.error) || "HTTP " + r.status);
  return data;
}

function stateBadge(s) { return h("span", { class: "state " + s, text: s }); }

function table(headers, rows, label) {
  return h("table", { "aria-label": label },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows));
}

function clearTimers() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
}

// ---- sign-in ----------------------------------------------------------------

function showSignIn() {
  clearTimers();
  state.user = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("page").replaceChildren();
  document.getElementById("signin").hidden = false;
  document.getElementById("email").focus();
  rendered("sign-in");
  if (state.events) { state.events.close(); state.events = null; clearInterval(state.watchTimer); }
}

function signedIn(session) {
  state.user = session.user;
  state.csrf = session.csrf;
  document.getElementById("signin").hidden = true;
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const a of nav.querySelectorAll("[data-admin]")) a.hidden = !state.user.admin;
  document.getElementById("who").hidden = false;
  document.getElementById("who-email").textContent =
    state.user.email + (state.user.admin ? " (admin)" : "");
  watch();
  route();
}

// The cluster revision over server-sent events: the page's data is fetched
// again when it changes.
function watch() {
  if (state.events || !window.EventSource) return;
  // Each answer carries one event and ends; EventSource reconnects at once
  // (an "error" each time). Only a silence longer than a hold is a lost link.
  const es = new EventSource("/v2/events");
  const live = document.getElementById("live");
  let last = Date.now();
  const seen = () => { last = Date.now(); live.textContent = "live"; };
  es.addEventListener("open", seen);
  es.addEventListener("revision", () => {
    seen();
    if (state.refresh) state.refresh().catch(() => {});
  });
  state.watchTimer = setInterval(() => {
    if (Date.now() - last > 20000) live.textContent = "reconnecting…";
  }, 5000);
  state.events = es;
}

// ---- pages ------------------------------------------------------------------

function page(title, ...content) {
  const main = document.getElementById("page");
  main.replaceChildren(h("h1", { text: title }), ...content);
  document.title = title + " - kato";
}

// A performance mark when a page first shows its data (bench/console_bench.py reads them).
function rendered(name) {
  if (performance.getEntriesByName("kato:" + name).length === 0) performance.mark("kato:" + name);
}

// Whether `data` differs from what the page last drew under `key`: a refresh
// that brings nothing new leaves the page (and the control under the mouse) alone.
const drawn = {};
function changed(key, data) {
  const sig = JSON.stringify(data);
  if (drawn[key] === sig) return false;
  drawn[key] = sig;
  return true;
}

function statusLine() { return h("p", { class: "status", role: "status" }); }

async function nodesPage() {
  const list = h("div", { class: "nodes" });
  const error = h("p", { class: "error", role: "alert" });
  page("Cluster Nodes", error, list);
  // Cards are kept and updated in place (a refresh comes with every change of
  // the cluster): a box the user is about to click is never replaced under them.
  const cards = new Map();  // by IP: {el, boxes, badge, host, busy}
  const makeCard = (n, roles, coreIp) => {
    const status = statusLine();
    const card = { boxes: {}, busy: new Set() };
    const say = (text) => { status.textContent = text; };
    const boxes = roles.map((role) => {
      const box = h("input", { type: "checkbox", name: role, disabled: role === "base" });
      box.addEventListener("change", async () => {
        const add = box.checked;
        card.busy.add(role);
        box.disabled = true;
        say((add ? "adding " : "removing ") + role + "…");
        try {
          await api("POST", "/v2/nodes/" + n.ip + "/roles", add ? { add: [role] } : { remove: [role] });
          say(role + (add ? " added" : " removed"));
        } catch (e) {
          box.checked = !add;
          say(e.message);
        } finally {
          card.busy.delete(role);
          box.disabled = false;
          state.refresh().catch(() => {});
        }
      });
      card.boxes[role] = box;
      return h("label", {}, box, role);
    });
    card.badge = stateBadge(n.state);
    card.host = h("span", { class: "muted" });
    card.el = h("article", { class: "card node", "data-ip": n.ip, "aria-label": "Node " + n.ip },
      h("h2", {}, h("a", { href: "#/nodes/" + n.ip, text: n.ip }), card.host, card.badge,
        n.ip === coreIp ? h("span", { class: "muted", text: "core" }) : null),
      h("fieldset", {}, h("legend", { text: "Roles of " + n.ip }), boxes),
      status);
    return card;
  };
  state.refresh = async () => {
    const data = await api("GET", "/v2/nodes");
    const seen = new Set();
    data.nodes.forEach((n, i) => {
      seen.add(n.ip);
      let card = cards.get(n.ip);
      if (!card) {
        card = makeCard(n, data.roles, data.core_ip);
        cards.set(n.ip, card);
      }
      card.host.textContent = n.hostname;
      card.badge.textContent = n.state;
      card.badge.className = "state " + n.state;
      for (const [role, box] of Object.entries(card.boxes))
        if (!card.busy.has(role)) box.checked = n.roles.includes(role);
      if (list.children[i] !== card.el) list.insertBefore(card.el, list.children[i] || null);
    });
    for (const [ip, card] of cards)
      if (!seen.has(ip)) { card.el.remove(); cards.delete(ip); }
    rendered("nodes");
  };
  await state.refresh().catch((e) => { error.textContent = e.message; });
}

async function nodePage(ip) {
  const body = h("div");
  const status = statusLine();
  page("Node " + ip, h("p", {}, h("a", { href: "#/nodes", text: "← Cluster Nodes" })), body, status);
  state.refresh = async () => {
    const n = await api("GET", "/v2/nodes/" + ip);
    if (!changed("node", n)) return;
    const rows = n.processes.map((p) => h("tr", {},
      h("td", { text: p.name }), h("td", {}, stateBadge(p.state)), h("td", { text: p.pid || "" }),
      h("td", { text: p.message || "" }),
      h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": "Restart " + p.name,
        onclick: async (ev) => {
          ev.target.disabled = true;
          status.textContent = "restarting " + p.name + "…";
          try { await api("POST", "/v2/nodes/" + ip + "/processes/" + p.name + "/restart");
                status.textContent = p.name + " restarted"; }
          catch (e) { status.textContent = e.message; }
          ev.target.disabled = false;
        } }, "Restart"))));
    body.replaceChildren(
      h("p", {}, stateBadge(n.state), " ", n.hostname, " · roles: ", n.roles.join(", ")),
      n.message ? h("p", { class: "muted", text: n.message }) : null,
      table(["Process", "State", "PID", "Message", ""], rows, "Processes of " + ip));
  };
  await state.refresh().catch((e) => { body.textContent = e.message; });
}

async function appsPage() {
  const body = h("div");
  page("Apps", body);
  state.refresh = async () => {
    const apps = await api("GET", "/v2/apps");
    if (!changed("apps", apps)) return;
    const rows = apps.map((a) => h("tr", { "data-app": a.name },
      h("td", {}, h("a", { href: "#/apps/" + a.name, text: a.name })), h("td", { text: a.org || "—" }),
      h("td", {}, stateBadge(a.health ? a.health.state : a.state)),
      h("td", { text: a.running + "/" + a.instances }), h("td", { text: a.memory_mb + " MB" }),
      h("td", { text: a.urls.join(" ") })));
    body.replaceChildren(apps.length ? table(["App", "Organization", "State", "Running", "Memory", "URL"],
                                             rows, "Apps")
                                     : h("p", { class: "muted", text: "No apps yet: push one with `kato app push`." }));
  };
  await state.refresh().catch((e) => { body.textContent = e.message; });
}

async function appPage(name) {
  const info = h("div");
  const status = statusLine();
  const logs = h("pre", { class: "logs", id: "logs", "aria-label": "Log lines of " + name });
  const count = h("input", { id: "scale-instances", type: "number", min: 0, max: 64, required: true });
  const act = (label, method, path, body) => h("button", { type: "button", class: "secondary",
    onclick: async () => {
      status.textContent = label + "…";
      try { await api(method, path, body); status.textContent = label + ": done"; await state.refresh(); }
      catch (e) { status.textContent = e.message; }
    } }, label);
  page("App " + name, h("p", {}, h("a", { href: "#/apps", text: "← Apps" })), info,
    h("div", { class: "actions" },
      act("Start", "PUT", "/v2/apps/" + name, { state: "STARTED" }),
      act("Stop", "PUT", "/v2/apps/" + name, { state: "STOPPED" }),
      act("Restart", "POST", "/v2/apps/" + name + "/restart")),
    h("form", { class: "inline", onsubmit: async (ev) => {
        ev.preventDefault();
        status.textContent = "scaling…";
        try { await api("PUT", "/v2/apps/" + name, { instances: Number(count.value) });
              status.textContent = "scaled to " + count.value; await state.refresh(); }
        catch (e) { status.textContent = e.message; }
      } },
      h("label", { for: "scale-instances" }, "Instances", count), h("button", { type: "submit" }, "Scale")),
    status, h("h2", { text: "Logs" }), logs);
  let first = true;
  state.refresh = async () => {
    const [a, services] = await Promise.all([api("GET", "/v2/apps/" + name), api("GET", "/v2/services")]);
    if (!changed("app", [a, services])) return;
    if (first) { count.value = a.instances; first = false; }
    const bound = services.filter((s) => s.bound_apps.includes(name)).map((s) => s.name);
    const rows = a.instance_list.map((i) => h("tr", {},
      h("td", { text: "#" + i.index }), h("td", {}, stateBadge(i.state)),
      h("td", { text: i.node_ip }), h("td", { text: i.port || "" })));
    info.replaceChildren(
      h("p", {}, stateBadge(a.health ? a.health.state : a.state), " ", a.running + "/" + a.instances,
        " running · ", a.memory_mb + " MB each · ", a.urls.join(" "), a.org ? " · organization " + a.org : ""),
      h("p", { text: "Bound services: " + (bound.length ? bound.join(", ") : "none") }),
      table(["Instance", "State", "Node", "Port"], rows, "Instances of " + name));
  };
  const tail = async () => {
    try {
      const entries = await api("GET", "/v2/apps/" + name + "/logs?lines=200");
      const text = entries.map((e) => (entries.length > 1 ? "[#" + e.index + "] " : "") +
                                      (e.text || e.error || "")).join("\n");
      if (logs.textContent !== text) {
        const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
        logs.textContent = text;
        if (atEnd) logs.scrollTop = logs.scrollHeight;
      }
    } catch (e) { /* shown by the next good fetch */ }
  };
  state.timers.push(setInterval(tail, 1000));  // log lines do not change the revision
  tail();
  await state.refresh().catch((e) => { info.textContent = e.message; });
}

function orgSelect(id) {
  const orgs = state.user.orgs || [];
  return h("select", { id, name: "org" }, state.user.admin ? h("option", { value: "", text: "(none)" }) : null,
           orgs.map((o) => h("option", { value: o, text: o })));
}

async function servicesPage() {
  const body = h("div");
  const status = statusLine();
  const type = h("select", { id: "service-type" },
    ["postgresql", "mysql", "redis", "memcached", "rabbitmq", "filesystem", "harbor"]
      .map((t) => h("option", { value: t, text: t })));
  const sname = h("input", { id: "service-name", required: true });
  const org = orgSelect("service-org");
  const bindService = h("input", { id: "bind-service", required: true });
  const bindApp = h("input", { id: "bind-app", required: true });
  const run = async (label, fn) => {
    status.textContent = label + "…";
    try { await fn(); status.textContent = label + ": done"; await state.refresh(); }
    catch (e) { status.textContent = e.message; }
  };
  page("Services",
    h("form", { class: "inline card", "aria-label": "Create a service", onsubmit: (ev) => {
        ev.preventDefault();
        const b = { type: type.value, name: sname.value };
        if (org.value) b.org = org.value;
        run("creating " + sname.value, () => api("POST", "/v2/services", b));
      } },
      h("label", { for: "service-type" }, "Type", type), h("label", { for: "service-name" }, "Name", sname),
      h("label", { for: "service-org" }, "Organization", org), h("button", { type: "submit" }, "Create")),
    h("form", { class: "inline card", "aria-label": "Bind a service", onsubmit: (ev) => {
        ev.preventDefault();
        run("binding", () => api("POST", "/v2/services/" + bindService.value + "/bindings", { app: bindApp.value }));
      } },
      h("label", { for: "bind-service" }, "Service", bindService), h("label", { for: "bind-app" }, "App", bindApp),
      h("button", { type: "submit" }, "Bind")),
    status, body);
  state.refresh = async () => {
    const services = await api("GET", "/v2/services");
    if (!changed("services", services)) return;
    const rows = services.map((s) => h("tr", {},
      h("td", { text: s.name }), h("td", { text: s.type }), h("td", { text: s.org || "—" }),
      h("td", {}, stateBadge(s.state)), h("td", { text: s.bound_apps.join(", ") }),
      h("td", {}, h("button", { type: "button", class: "danger", "aria-label": "Delete " + s.name,
        onclick: () => { if (confirm("Delete " + s.name + " and its data?"))
                           run("deleting " + s.name, () => api("DELETE", "/v2/services/" + s.name + "?force=1")); } },
        "Delete"))));
    body.replaceChildren(services.length ? table(["Service", "Type", "Organization", "State", "Bound apps", ""],
                                                 rows, "Services")
                                         : h("p", { class: "muted", text: "No services yet." }));
  };
  await state.refresh().catch((e) => { body.textContent = e.message; });
}

async function usersPage() {
  const users = h("div"), orgs = h("div");
  const status = statusLine();
  const email = h("input", { id: "new-email", type: "email", required: true });
  const password = h("input", { id: "new-password", type: "password", required: true, minlength: 8 });
  const admin = h("input", { id: "new-admin", type: "checkbox" });
  const orgName = h("input", { id: "new-org", required: true });
  const memberOrg = h("input", { id: "member-org", required: true });
  const memberEmail = h("input", { id: "member-email", type: "email", required: true });
  const run = async (label, fn) => {
    status.textContent = label + "…";
    try { await fn(); status.textContent = label + ": done"; await state.refresh(); }
    catch (e) { status.textContent = e.message; }
  };
  page("Users and Organizations",
    h("form", { class: "inline card", "aria-label": "Add a user", onsubmit: (ev) => {
        ev.preventDefault();
        run("adding " + email.value, () => api("POST", "/v2/users",
          { email: email.value, password: password.value, admin: admin.checked }));
      } },
      h("label", { for: "new-email" }, "User's email", email),
      h("label", { for: "new-password" }, "User's password", password),
      h("label", { for: "new-admin" }, admin, "Admin"), h("button", { type: "submit" }, "Add user")),
    h("form", { class: "inline card", "aria-label": "Create an organization", onsubmit: (ev) => {
        ev.preventDefault();
        run("creating " + orgName.value, () => api("POST", "/v2/orgs", { name: orgName.value }));
      } },
      h("label", { for: "new-org" }, "Organization name", orgName), h("button", { type: "submit" }, "Create organization")),
    h("form", { class: "inline card", "aria-label": "Add a member", onsubmit: (ev) => {
        ev.preventDefault();
        run("adding a member", () => api("POST", "/v2/orgs/" + memberOrg.value + "/members", { email: memberEmail.value }));
      } },
      h("label", { for: "member-org" }, "Organization", memberOrg),
      h("label", { for: "member-email" }, "Member's email", memberEmail), h("button", { type: "submit" }, "Add member")),
    status, h("h2", { text: "Users" }), users, h("h2", { text: "Organizations" }), orgs);
  state.refresh = async () => {
    const [us, os] = await Promise.all([api("GET", "/v2/users"), api("GET", "/v2/orgs")]);
    if (!changed("users", [us, os])) return;
    users.replaceChildren(table(["Email", "Kind", "Organizations", ""], us.map((u) => h("tr", {},
      h("td", { text: u.email }), h("td", { text: u.admin ? "admin" : "developer" }),
      h("td", { text: u.orgs.join(", ") }),
      h("td", {}, u.email === state.user.email ? null : h("button", { type: "button", class: "danger",
        "aria-label": "Remove " + u.email,
        onclick: () => run("removing " + u.email, () => api("DELETE", "/v2/users/" + encodeURIComponent(u.email))) },
        "Remove")))), "Users"));
    const q = (o) => ["memory_mb", "instances", "services"].map((k) =>
      (k === "memory_mb" ? "memory " : k + " ") + (o.quota[k] ? o.quota[k] + (k === "memory_mb" ? " MB" : "") : "no limit")).join(", ");
    orgs.replaceChildren(table(["Organization", "Members", "Quota"], os.map((o) => h("tr", {},
      h("td", { text: o.name }), h("td", { text: o.members.join(", ") }), h("td", { text: q(o) }))),
      "Organizations"));
  };
  await state.refresh().catch((e) => { users.textContent = e.message; });
}

// ---- routing ----------------------------------------------------------------

async function route() {
  if (!state.user) return;
  clearTimers();
  state.refresh = null;
  for (const k of Object.keys(drawn)) delete drawn[k];
  let hash = location.hash.replace(/^#/, "") || (state.user.admin ? "/nodes" : "/apps");
  for (const a of document.querySelectorAll("#nav a"))
    a.toggleAttribute("aria-current", hash.startsWith(a.getAttribute("href").slice(1)));
  for (const a of document.querySelectorAll("#nav a[aria-current]")) a.setAttribute("aria-current", "page");
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "nodes" && parts[1]) return nodePage(parts[1]);
  if (parts[0] === "nodes") return nodesPage();
  if (parts[0] === "apps" && parts[1]) return appPage(parts[1]);
  if (parts[0] === "services") return servicesPage();
  if (parts[0] === "users") return usersPage();
  return appsPage();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = document.getElementById("signin-error");
    err.textContent = "";
    try {
      const s = await api("POST", "/console/login", {
        email: document.getElementById("email").value,
        password: document.getElementById("password").value });
      document.getElementById("password").value = "";
      signedIn(s);
    } catch (e) { err.textContent = e.message; }
  });
  document.getElementById("sign-out").addEventListener("click", async () => {
    try { await api("POST", "/console/logout"); } catch (e) { /* signed out either way */ }
    showSignIn();
  });
  try { signedIn(await api("GET", "/console/session")); } catch (e) { showSignIn(); }
});
