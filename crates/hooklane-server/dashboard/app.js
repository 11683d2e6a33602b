// hooklane dashboard and application portal: a single-page app over the /api/v1 API.
// Served at /dashboard (sign in with the admin token) and /portal (an application token
// from the URL fragment `#token=…`, as POST /api/v1/auth/app-portal-access returns it).
// The token is kept in sessionStorage only. No framework, no build step.
"use strict";

const PORTAL = location.pathname.replace(/\/+$/, "") === "/portal";
const TOKEN_KEY = PORTAL ? "hooklane.portal.token" : "hooklane.admin.token";
const API = "/api/v1";
let portalApp = null; // the application an application token belongs to
let portalCaps = null; // what the portal's token may do (`null`: everything), from whoami
let navSeq = 0; // counts the page's navigations (see `navigation`)

// --- DOM helpers (text always goes through textContent: no HTML injection)

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP, unlike a style attribute
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const main = () => document.getElementById("main");

// One navigation (a route, a sign-in view, a link's offer). What it draws once its answers
// are in is dropped unless it is still the latest navigation and the token it started with
// is still the one held: an older, slower page never covers a newer one, and a page drawn
// for a token since signed out or replaced never shows (nor sets what that token may do).
function navigation() {
  const seq = ++navSeq;
  const started = token();
  return { current: () => seq === navSeq && started !== null && token() === started };
}
function show(nav, ...nodes) { if (nav.current()) main().replaceChildren(...nodes); }

function fmtTime(t) {
  if (!t) return "—";
  const d = new Date(t);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function ago(t) {
  if (!t) return "never";
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
function ms(v) { return v === null || v === undefined ? "—" : `${v} ms`; }
function pct(v) { return v === null || v === undefined ? "—" : `${(v * 100).toFixed(v === 1 || v === 0 ? 0 : 1)} %`; }

const STATUS_NAMES = { 0: "success", 1: "pending", 2: "fail", 3: "sending", 4: "canceled" };
function badge(kind, text) { return h("span", { class: `badge ${kind}`, "data-testid": "badge" }, text || kind); }

// --- API

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// An error answer's `detail`: a text, or (a 422) a list of `{loc, msg}`, shown as
// `field: message` (`loc` is where, then the field: `["body", "tokenUrl"]`).
function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const field = Array.isArray(d && d.loc) ? d.loc.slice(1).join(".") : "";
      const msg = d && d.msg !== undefined ? String(d.msg) : JSON.stringify(d);
      return field ? `${field}: ${msg}` : msg;
    }).join("; ");
  }
  return detail === undefined || detail === null ? "" : JSON.stringify(detail);
}

class ApiError extends Error {
  constructor(status, body) { super((body && detailText(body.detail)) || `HTTP ${status}`); this.status = status; }
}

// `as`: the token to call with, if not the one held (a sign-in's, a link's not yet taken).
async function api(method, path, body, as) {
  const sent = as === undefined ? token() : as;
  const headers = { authorization: `Bearer ${sent}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const resp = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  // (An answer that is not JSON, such as a proxy's HTML error page, is no reason to throw
  // before its status is looked at: a 401 must still sign out.)
  let data = null, parsed = true;
  try { data = text ? JSON.parse(text) : null; } catch (_) { parsed = false; }
  if (!parsed && resp.ok) throw new ApiError(resp.status, { detail: "the answer is not JSON" });
  // (A token signed out, or replaced, since the request left is refused without a word.)
  if (resp.status === 401) { if (token() === sent) signOut("Your token was not accepted."); throw new ApiError(401, data); }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}
const get = (path) => api("GET", path);
const enc = encodeURIComponent;

// --- sign in / out

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  portalApp = null;
  portalCaps = null;
  renderLogin(message);
}

// The Sign out button. The portal's token (an application's `appsk_…`, from a portal link)
// is revoked first (POST /auth/logout), so that it stops working rather than only leaving
// this tab. Best effort: whatever the answer (or none within 5 s), signing out goes on. The
// admin token is not: it is set in the configuration and cannot log out.
async function signOutClicked(ev) {
  const button = ev.currentTarget;
  if (PORTAL && token()) {
    button.disabled = true;
    try {
      await Promise.race([api("POST", "/auth/logout").catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
    } finally {
      button.disabled = false;
    }
  }
  signOut();
  if (!PORTAL) location.hash = "#/";
}

function renderLogin(message) {
  navigation(); // (pages under way are dropped)
  document.getElementById("logout").hidden = true;
  document.getElementById("crumbs").replaceChildren();
  if (PORTAL) {
    main().replaceChildren(h("div", { class: "card login" }, h("h1", {}, "Webhook portal"),
      h("p", { class: "error", "data-testid": "login-error" }, message || "This link has no access token. Ask for a new portal link.")));
    return;
  }
  const input = h("input", { type: "password", id: "token", "data-testid": "token-input", placeholder: "sk_…", autocomplete: "off" });
  // Only the admin token is kept: an application's token (its portal's) may list its own
  // application, but the dashboard would offer it what only the admin may do.
  const form = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      const given = input.value.trim();
      let me;
      try { me = await api("GET", "/auth/whoami", undefined, given); } catch (err) {
        renderLogin(err.status === 401 ? "Your token was not accepted." : `Not signed in: ${err.message}`);
        return;
      }
      if (!me || me.permissionSource !== "GlobalAuthToken") {
        renderLogin(me && me.appId
          ? "This token belongs to one application, not to the admin: open it through that application's portal link (/portal#token=…)."
          : "This is not the admin token.");
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, given);
      if (!location.hash || location.hash === "#/") location.hash = "#/apps"; else route();
    },
  },
    h("h1", {}, "hooklane dashboard"),
    h("p", { class: "muted" }, "Sign in with the admin token (printed at start, kept in ./data/admin-token)."),
    message ? h("p", { class: "error", "data-testid": "login-error" }, message) : null,
    input,
    h("button", { type: "submit", "data-testid": "login" }, "Sign in"));
  main().replaceChildren(h("div", { class: "card login" }, form));
  input.focus();
}

function crumbs(nav, ...parts) {
  if (!nav.current()) return; // (as `show`)
  const bar = document.getElementById("crumbs");
  bar.replaceChildren();
  parts.forEach((p, i) => {
    if (i) bar.append(h("span", { class: "sep" }, "/"));
    bar.append(p.href ? h("a", { href: p.href }, p.text) : h("span", {}, p.text));
  });
}

// --- router

async function route() {
  if (!token()) return renderLogin();
  const nav = navigation();
  document.getElementById("logout").hidden = false;
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  // A malformed link (`#/app/%E0`) leads nowhere: `parts` is null.
  let parts = null;
  try { parts = path.split("/").filter(Boolean).map(decodeURIComponent); } catch (err) { parts = null; }
  try {
    if (PORTAL) {
      if (!portalApp) {
        const [apps, me] = await Promise.all([get("/app"), get("/auth/whoami")]);
        if (!nav.current()) return; // (another token's, or a later navigation does this)
        portalApp = apps.data[0];
        portalCaps = me.capabilities || null;
      }
      if (!parts || parts[0] !== "app" || parts[1] !== portalApp.id) { location.replace(`#/app/${enc(portalApp.id)}`); return; }
    }
    if (!parts) return show(nav, h("p", { class: "error" }, "Nothing here."));
    if (parts.length === 0 || parts[0] === "apps") return await renderApps(nav, params);
    if (!PORTAL && parts[0] === "sources") return await renderSources(nav, params);
    if (!PORTAL && parts[0] === "source" && parts.length === 2) return await renderSource(nav, parts[1], params);
    if (parts[0] === "app" && parts.length === 2) return await renderApp(nav, parts[1]);
    if (parts[0] === "app" && parts[2] === "messages") return await renderMessages(nav, parts[1], params);
    if (parts[0] === "app" && parts[2] === "msg") return await renderMessage(nav, parts[1], parts[3]);
    if (parts[0] === "app" && parts[2] === "endpoint" && parts[4] === "transformation") {
      return await renderTransformation(nav, parts[1], parts[3]);
    }
    if (parts[0] === "app" && parts[2] === "endpoint" && parts[4] === "authentication") {
      return await renderAuthentication(nav, parts[1], parts[3]);
    }
    show(nav, h("p", { class: "error" }, "Nothing here."));
  } catch (err) {
    if (err.status === 401) return;
    show(nav, h("div", { class: "card" }, h("p", { class: "error", "data-testid": "error" }, `Error: ${err.message}`)));
  }
}

// --- applications

async function renderApps(nav, params) {
  crumbs(nav, { text: "Applications" });
  const q = new URLSearchParams({ limit: "250" });
  if (params.get("iterator")) q.set("iterator", params.get("iterator"));
  const apps = await get(`/app?${q}`);
  const rows = apps.data.map((a) => h("tr", { class: "click", "data-testid": "app-row", onclick: () => (location.hash = `#/app/${enc(a.id)}`) },
    h("td", {}, h("a", { href: `#/app/${enc(a.id)}` }, a.name)),
    h("td", { class: "mono" }, a.uid || "—"),
    h("td", { class: "mono muted" }, a.id),
    h("td", { class: "muted" }, fmtTime(a.createdAt))));
  show(nav, h("h1", {}, "Applications"), topTabs("apps"),
    h("div", { class: "card" }, rows.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "uid"), h("th", {}, "id"), h("th", {}, "Created"))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, "No applications yet: POST /api/v1/app to create one."),
      !apps.done && apps.iterator ? h("p", {}, h("a", { href: `#/apps?iterator=${enc(apps.iterator)}`, "data-testid": "next-page" }, "More applications →")) : null));
}

// The admin dashboard's two lists: applications (outbound) and inbound sources.
function topTabs(active) {
  const t = (key, text, href) => h("a", { href, class: active === key ? "active" : "", "data-testid": `tab-${key}` }, text);
  return h("div", { class: "tabs" }, t("apps", "Applications", "#/apps"), t("sources", "Inbound sources", "#/sources"));
}

function appCrumbs(nav, app, ...rest) {
  const base = PORTAL ? [] : [{ text: "Applications", href: "#/apps" }];
  crumbs(nav, ...base, { text: app.name, href: `#/app/${enc(app.id)}` }, ...rest);
}

function tabs(app, active) {
  const t = (key, text, href) => h("a", { href, class: active === key ? "active" : "", "data-testid": `tab-${key}` }, text);
  return h("div", { class: "tabs" },
    t("overview", "Endpoints & deliveries", `#/app/${enc(app.id)}`),
    t("messages", "Message log", `#/app/${enc(app.id)}/messages`));
}

async function renderApp(nav, appId) {
  const app = await get(`/app/${enc(appId)}`);
  appCrumbs(nav, app);
  const [health, timeline] = await Promise.all([
    get(`/stats/app/${enc(app.id)}/endpoint?hours=24`),
    get(`/stats/app/${enc(app.id)}/timeline?minutes=60`),
  ]);
  const totals = health.data.reduce((t, e) => ({ ok: t.ok + e.succeeded, fail: t.fail + e.failed, pending: t.pending + e.pending }), { ok: 0, fail: 0, pending: 0 });
  const stat = (v, l, id) => h("div", { class: "stat", "data-testid": id }, h("div", { class: "v" }, v), h("div", { class: "l" }, l));
  show(nav,
    h("h1", { "data-testid": "app-name" }, app.name),
    tabs(app, "overview"),
    h("div", { class: "card" }, h("div", { class: "stats" },
      stat(health.data.length, "endpoints", "stat-endpoints"),
      stat(totals.ok, "delivered (24 h)", "stat-ok"),
      stat(totals.fail, "failed attempts (24 h)", "stat-fail"),
      stat(totals.ok + totals.fail ? pct(totals.ok / (totals.ok + totals.fail)) : "—", "success rate (24 h)", "stat-rate"),
      stat(totals.pending, "waiting", "stat-pending"),
      stat(health.data.filter((e) => e.disabled).length, "disabled", "stat-disabled"))),
    h("div", { class: "row" },
      h("div", { class: "card chart" }, h("h2", {}, "Deliveries per minute"), deliveriesChart(timeline)),
      h("div", { class: "card chart" }, h("h2", {}, "Attempt latency"), latencyChart(timeline))),
    h("div", { class: "card" }, h("h2", {}, "Endpoints"), endpointsTable(nav, app, health.data)));
}

// Whether the token may do what needs `cap` (Svix's app-portal capabilities, as whoami
// answers them, implied ones included); the admin dashboard and full-access portal tokens
// may do everything. Actions a token may not take are not offered.
function can(cap) {
  return portalCaps === null || portalCaps.includes(cap);
}

// Runs a button's action. A refusal (a read-only portal token, say) or a failure shows on
// the button, rather than leaving it disabled with nothing said.
async function act(button, run) {
  button.disabled = true;
  try {
    return { ok: true, value: await run() };
  } catch (err) {
    button.textContent = err.status === 403 ? "Not allowed" : "Failed";
    button.title = err.message || String(err);
    return { ok: false };
  }
}

// `nav` is the page's navigation: an action's refresh redraws the page only while it is
// still the one shown (a recovery answers up to seconds later, its refresh later still: by
// then another page may be shown, which it would draw again, losing what it showed).
function endpointsTable(nav, app, endpoints) {
  if (!endpoints.length) return h("p", { class: "muted" }, "No endpoints yet.");
  const rows = endpoints.map((e) => {
    const state = e.disabled ? badge("disabled") : e.paused ? badge("paused") : e.failingSince ? badge("failing") : badge("success", "healthy");
    // A polling endpoint is read at its URL (the consumer's poller), never sent to.
    const sends = !e.polling;
    const toggle = !can("ManageEndpoint") ? null : h("button", {
      class: e.disabled ? "secondary" : "danger", "data-testid": e.disabled ? "enable" : "disable",
      onclick: async (ev) => {
        const done = await act(ev.target, () => api("PATCH", `/app/${enc(app.id)}/endpoint/${enc(e.id)}`, { disabled: !e.disabled }));
        if (done.ok && nav.current()) route();
      },
    }, e.disabled ? "Enable" : "Disable");
    // Paused: deliveries wait (nothing fails) until resumed; a disabled endpoint has none.
    const pause = e.disabled || !sends || !can("ManageEndpoint") ? null : h("button", {
      class: "secondary", "data-testid": e.paused ? "resume" : "pause",
      title: e.paused ? "Send everything held, at once" : "Hold deliveries (nothing is dropped) until resumed",
      onclick: async (ev) => {
        const done = await act(ev.target, () => api("PATCH", `/app/${enc(app.id)}/endpoint/${enc(e.id)}`, { paused: !e.paused }));
        if (done.ok && nav.current()) route();
      },
    }, e.paused ? "Resume" : "Pause");
    // A disabled endpoint is refused a recovery (409), like a test message.
    const recover = e.disabled || !sends || !can("CreateAttempts") ? null : h("button", {
      class: "secondary", "data-testid": "recover", title: "Send again every delivery that failed in the last 24 hours",
      onclick: async (ev) => {
        const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
        const done = await act(ev.target, () => api("POST", `/app/${enc(app.id)}/endpoint/${enc(e.id)}/recover`, { since }));
        if (!done.ok) return;
        const out = done.value;
        ev.target.textContent = `Recovering (${out && out.recovered !== undefined ? out.recovered : "…"})`;
        setTimeout(() => { if (nav.current()) route(); }, 1500);
      },
    }, "Recover 24 h");
    // Svix's "send example" with its ping event: whether the endpoint takes a signed message now.
    const sendTest = e.disabled || !sends || !can("CreateAttempts") ? null : h("button", {
      class: "secondary", "data-testid": "send-test", title: "Send this endpoint a svix.ping message: {\"success\": true}",
      onclick: async (ev) => {
        const done = await act(ev.target, () => api("POST", `/app/${enc(app.id)}/endpoint/${enc(e.id)}/send-example`, { eventType: "svix.ping" }));
        if (done.ok) ev.target.textContent = "Test sent";
      },
    }, "Send test");
    // A polling endpoint's key, for its consumer: made by the admin dashboard only (the
    // key's earlier ones stop working in 5 minutes), shown once.
    const newKey = sends || portalApp ? null : h("button", {
      class: "secondary", "data-testid": "poller-key", title: "A key that may read this endpoint's poller and nothing else; earlier keys stop in 5 minutes",
      onclick: async (ev) => {
        const done = await act(ev.target, () => api("POST", `/auth/app/${enc(app.id)}/poller/${enc(e.id)}/token/rotate`, {}));
        if (!done.ok) return;
        ev.target.replaceWith(h("code", { class: "mono small", "data-testid": "poller-key-value", title: "Shown once: copy it now" }, done.value.token));
      },
    }, "New key");
    const rate = e.successRate;
    const settings = [
      e.fifo && h("span", { class: "tag", title: "One message at a time, in order (per ordering key)" }, "FIFO"),
      e.filtered && h("span", { class: "tag", title: "Only messages whose payload passes its filter" }, "filtered"),
      e.transformed && h("span", { class: "tag", title: "Sent a body made from the payload by its template" }, "transformed"),
      e.oauth && h("span", { class: "tag", title: "Each request carries an OAuth access token from the receiver's authorization server" }, "OAuth"),
      e.mtls && h("span", { class: "tag", title: "hooklane presents a TLS client certificate to the receiver" }, "mTLS"),
      e.polling && h("span", { class: "tag", "data-testid": "polling-tag", title: "Nothing is sent: its consumer reads its messages at this URL" }, "polling"),
    ].filter(Boolean);
    return h("tr", { "data-testid": "endpoint-row", "data-endpoint": e.id },
      h("td", {}, h("div", { class: "mono" }, e.url), h("div", { class: "small muted" }, e.description || e.id),
        sends ? h("div", { class: "small" }, h("a", { href: `#/app/${enc(app.id)}/endpoint/${enc(e.id)}/transformation`, "data-testid": "transformation-link" }, "Transformation"),
          " · ", h("a", { href: `#/app/${enc(app.id)}/endpoint/${enc(e.id)}/authentication`, "data-testid": "authentication-link" }, "Authentication")) : null,
        settings.length ? h("div", { class: "tags", "data-testid": "endpoint-settings" }, settings) : null,
        e.lastFailures.length ? h("ul", { class: "failures", "data-testid": "last-failures" }, e.lastFailures.map((f) =>
          h("li", {}, h("a", { href: `#/app/${enc(app.id)}/msg/${enc(f.msgId)}` }, `${f.responseStatusCode || "no response"}`),
            ` ${ago(f.timestamp)}`, f.response ? `: ${f.response.slice(0, 80)}` : ""))) : null),
      h("td", {}, state, e.failingSince ? h("div", { class: "small muted" }, `failing since ${ago(e.failingSince)}`) : null),
      h("td", { "data-testid": "success-rate" }, pct(rate), rate === null ? null : h("div", { class: "bar" }, h("div", { style: `width:${Math.round(rate * 100)}%` })),
        h("div", { class: "small muted" }, `${e.succeeded} ok · ${e.failed} failed`)),
      h("td", { "data-testid": "latency" }, `p50 ${ms(e.p50Ms)}`, h("div", { class: "small muted" }, `p95 ${ms(e.p95Ms)}`)),
      h("td", {}, e.pending),
      h("td", { class: "muted" }, ago(e.lastAttemptAt)),
      h("td", {}, h("div", { class: "actions" }, toggle, pause, recover, sendTest, newKey)));
  });
  return h("table", {},
    h("thead", {}, h("tr", {}, ["Endpoint", "State", "Success (24 h)", "Latency", "Waiting", "Last attempt", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

// --- an endpoint's JavaScript transformation (Svix's): see it, try it on a payload, change it

const EXAMPLE_CODE = `/**
 * Runs before each attempt. Return the webhook, changed:
 * method ("POST" or "PUT"), url, payload, headers, or cancel = true to send nothing.
 */
function handler(webhook) {
  return webhook;
}`;

async function renderTransformation(nav, appId, epId) {
  const app = await get(`/app/${enc(appId)}`);
  const path = `/app/${enc(app.id)}/endpoint/${enc(epId)}`;
  const [ep, tr] = await Promise.all([get(path), get(`${path}/transformation`)]);
  appCrumbs(nav, app, { text: "Transformation" });
  const editable = can("ManageTransformations");
  const code = h("textarea", { class: "code mono", rows: 14, spellcheck: "false", readonly: !editable, "data-testid": "transformation-code" });
  code.value = tr.code || EXAMPLE_CODE;
  const enabled = h("input", { type: "checkbox", disabled: !editable, "data-testid": "transformation-enabled" });
  enabled.checked = !!tr.enabled;
  const vars = Object.keys(tr.variables || {});
  const eventType = h("input", { value: "invoice.paid", "data-testid": "sample-event-type" });
  const payload = h("textarea", { class: "code mono", rows: 6, spellcheck: "false", "data-testid": "sample-payload" });
  payload.value = JSON.stringify({ id: "evt_1", amount: 100 }, null, 2);
  const result = h("pre", { class: "mono result", "data-testid": "transformation-result" });
  const test = h("button", {
    class: "secondary", "data-testid": "transformation-test",
    onclick: async (ev) => {
      let sample;
      try { sample = JSON.parse(payload.value); } catch (err) { result.textContent = `The sample payload is not JSON: ${err.message}`; return; }
      ev.target.disabled = true;
      try {
        const out = await api("POST", `${path}/preview`, { payload: sample, transformation: code.value, eventType: eventType.value });
        const headers = Object.entries(out.headers).map(([k, v]) => `${k}: ${v}`);
        const filtered = out.wanted ? [] : ["The endpoint's payload filter keeps this payload out: nothing would be sent. Were it let through:", ""];
        result.textContent = out.cancelled ? "Cancelled: nothing would be sent."
          : [...filtered, `${out.method} ${out.url}`, ...headers, "", JSON.stringify(out.body, null, 2)].join("\n");
      } catch (err) {
        result.textContent = `Error: ${err.message}`;
      } finally {
        ev.target.disabled = false;
      }
    },
  }, "Test");
  const saved = h("span", { class: "small", "data-testid": "transformation-status" },
    tr.code ? "" : "No transformation is set: the code above is an example.");
  // Not `act`: a refusal (code that does not compile) is shown in full, and the button
  // stays usable so that the code can be fixed and saved again.
  const save = !editable ? null : h("button", {
    "data-testid": "transformation-save",
    onclick: async (ev) => {
      const button = ev.target;
      button.disabled = true;
      try {
        await api("PATCH", `${path}/transformation`, { code: code.value, enabled: enabled.checked });
        saved.textContent = `Saved${enabled.checked ? " and enabled" : " (not enabled)"}.`;
      } catch (err) {
        saved.textContent = `Not saved: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    },
  }, "Save");
  show(nav,
    h("h1", {}, "Transformation"),
    h("p", { class: "mono small muted" }, ep.url),
    h("div", { class: "card" },
      h("label", { class: "check" }, enabled, " Enabled: runs before each attempt to this endpoint"),
      code,
      vars.length ? h("p", { class: "small muted" }, `Variables (webhook.variables): ${vars.join(", ")}`) : null,
      h("div", { class: "actions" }, save, saved)),
    h("div", { class: "card" }, h("h2", {}, "Try it"),
      h("label", {}, "Event type ", eventType),
      payload,
      h("div", { class: "actions" }, test),
      result));
}

// --- an endpoint's authentication (Svix's OAuth and mTLS): see it, set it, remove it

// The settings at `path`, or null when there are none; { forbidden } when this token may
// not see them (they need ViewEndpointSecret); { error } when they could not be read.
async function settingsAt(path) {
  try { return await get(path); } catch (err) {
    if (err.status === 404) return null;
    if (err.status === 403) return { forbidden: true };
    if (err.status === 401) throw err;
    return { error: err.message };
  }
}

async function renderAuthentication(nav, appId, epId) {
  const app = await get(`/app/${enc(appId)}`);
  const path = `/app/${enc(app.id)}/endpoint/${enc(epId)}`;
  const [ep, oauth, mtls] = await Promise.all([get(path), settingsAt(`${path}/oauth`), settingsAt(`${path}/mtls`)]);
  appCrumbs(nav, app, { text: "Authentication" });
  const shown = (s) => s && !s.forbidden && !s.error;
  const summary = (s, describe) => s === null ? "None set." : s.forbidden ? "This token may not see them."
    : s.error ? `Could not read them: ${s.error}` : describe(s);
  // One card per kind: its current state, its fields (unless `why`, which `load` answers
  // while it fills them from the settings, says they cannot be edited here), Save and
  // Remove. A save or a removal draws its own card again, from the settings as now stored
  // (its fields kept, so nothing typed in the other card is lost). Settings that could not
  // be read cannot be changed either (a save would replace what the form could not show,
  // such as OAuth's extra parameters): the card offers to read them again.
  const section = (kind, title, current, describe, fields, body, clear, load) => {
    const card = h("div", { class: "card" });
    const draw = (current, message) => {
      const unread = !!(current && current.error);
      const why = unread ? "They can be changed once read." : load(current);
      const editable = can("ManageEndpoint") && !why;
      const status = h("span", { class: "small", "data-testid": `${kind}-status` }, message || why || "");
      const state = h("pre", { class: "mono result", "data-testid": `${kind}-current` }, summary(current, describe));
      const save = !editable ? null : h("button", {
        "data-testid": `${kind}-save`,
        onclick: async (ev) => {
          const button = ev.target;
          button.disabled = true;
          try {
            await api("PUT", `${path}/${kind}`, body());
            clear();
            draw(await settingsAt(`${path}/${kind}`), "Saved.");
          } catch (err) {
            status.textContent = `Not saved: ${err.message}`;
          } finally {
            button.disabled = false;
          }
        },
      }, "Save");
      const remove = !can("ManageEndpoint") || !shown(current) ? null : h("button", {
        class: "danger", "data-testid": `${kind}-remove`,
        onclick: async (ev) => {
          const done = await act(ev.target, () => api("DELETE", `${path}/${kind}`));
          if (done.ok) draw(null, "Removed.");
        },
      }, "Remove");
      const reload = !unread ? null : h("button", {
        class: "secondary", "data-testid": `${kind}-reload`,
        onclick: async (ev) => {
          ev.target.disabled = true;
          try { draw(await settingsAt(`${path}/${kind}`), ""); } catch (err) { ev.target.disabled = false; }
        },
      }, "Read again");
      card.replaceChildren(h("h2", {}, title), state, editable ? fields : null, h("div", { class: "actions" }, save, remove, reload, status));
    };
    draw(current, "");
    return card;
  };
  const input = (testid, attrs) => h("input", { "data-testid": testid, autocomplete: "off", ...attrs });
  const tokenUrl = input("oauth-token-url", { placeholder: "https://auth.example.com/oauth/token", size: 48 });
  const clientId = input("oauth-client-id", {});
  const clientSecret = input("oauth-client-secret", { type: "password" });
  const scopes = input("oauth-scopes", { placeholder: "space-separated" });
  const method = h("select", { "data-testid": "oauth-method" },
    h("option", { value: "clientSecretBasic" }, "client_secret_basic"), h("option", { value: "clientSecretPost" }, "client_secret_post"));
  let extraParams = null;
  // Fills the form from the stored settings; says why they cannot be changed here, if so.
  // None stored (or just removed): the next save has no extra parameters to keep.
  const loadOauth = (o) => {
    if (o === null) extraParams = null;
    if (!shown(o)) return "";
    tokenUrl.value = o.tokenUrl;
    clientId.value = o.clientId;
    scopes.value = (o.scopes || []).join(" ");
    method.value = o.authMethod;
    extraParams = o.extraParams || null;
    // This form writes client-credentials settings with a client secret: others (a refresh
    // token, a JWT assertion) would be lost by a save from here.
    if (o.grantType !== "clientCredentials" || o.authMethod === "clientSecretJwt") {
      return "These settings (a refresh token or a JWT assertion) are changed through the API.";
    }
    return "";
  };
  const extraText = (o) => Object.entries(o.extraParams || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none";
  const oauthCard = section("oauth", "OAuth 2.0 (client credentials)", oauth,
    (o) => [`token URL: ${o.tokenUrl}`, `client: ${o.clientId} (${o.authMethod}, ${o.grantType})`,
      `scopes: ${(o.scopes || []).join(" ") || "none"}`, `extra parameters: ${extraText(o)}`].join("\n"),
    h("div", {},
      h("label", {}, "Token URL ", tokenUrl), h("label", {}, " Client ID ", clientId),
      h("label", {}, " Client secret ", clientSecret), h("label", {}, " Scopes ", scopes), h("label", {}, " Method ", method),
      h("p", { class: "small muted" }, "Saving replaces the settings (their extra parameters kept): give the client secret again. It is never shown.")),
    () => {
      const list = scopes.value.split(/\s+/).filter(Boolean);
      return { tokenUrl: tokenUrl.value, clientId: clientId.value, clientSecret: clientSecret.value, authMethod: method.value,
        grantType: "clientCredentials", scopes: list.length ? list : null, extraParams };
    },
    () => { clientSecret.value = ""; },
    loadOauth);
  const identity = h("textarea", { class: "code mono", rows: 6, spellcheck: "false", "data-testid": "mtls-identity",
    placeholder: "-----BEGIN PRIVATE KEY-----\n…\n-----BEGIN CERTIFICATE-----\n…" });
  const ca = h("textarea", { class: "code mono", rows: 4, spellcheck: "false", "data-testid": "mtls-ca", placeholder: "optional: the receiver's CA certificate" });
  const mtlsCard = section("mtls", "Mutual TLS (client certificate)", mtls,
    (m) => `${m.certificate}${m.serverCaCert ? `\nserver CA:\n${m.serverCaCert}` : ""}`,
    h("div", {}, h("label", {}, "Private key and certificate (PEM)"), identity, h("label", {}, "Server CA (PEM)"), ca,
      h("p", { class: "small muted" }, "The private key is never shown again.")),
    () => ({ identity: identity.value, serverCaCert: ca.value.trim() ? ca.value : null }),
    () => { identity.value = ""; },
    () => "");
  show(nav, h("h1", {}, "Authentication"), h("p", { class: "mono small muted" }, ep.url),
    h("p", { class: "small muted" }, "Besides the signature every request carries: what the receiver may also ask for."),
    oauthCard, mtlsCard);
}

// --- charts (inline SVG)

const W = 560, H = 180, PAD_L = 40, PAD_B = 22, PAD_T = 8;

function axes(max, unit, labels) {
  const g = s("g", {});
  for (let i = 0; i <= 4; i++) {
    const y = PAD_T + (H - PAD_T - PAD_B) * (1 - i / 4);
    g.append(s("line", { x1: PAD_L, x2: W, y1: y, y2: y, stroke: "#e9ecef" }));
    g.append(s("text", { x: PAD_L - 6, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#868e96" }, `${Math.round((max * i) / 4)}${unit}`));
  }
  for (const [x, text] of labels) g.append(s("text", { x, y: H - 6, "text-anchor": "middle", "font-size": 10, fill: "#868e96" }, text));
  return g;
}

function timeLabels(data, step) {
  const out = [];
  const n = data.length;
  for (let i = 0; i < n; i += Math.max(1, Math.floor(n / 6))) {
    const d = new Date(data[i].start);
    out.push([PAD_L + step * (i + 0.5), d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })]);
  }
  return out;
}

function deliveriesChart(tl) {
  const data = tl.data;
  const max = Math.ceil(Math.max(4, ...data.map((d) => d.succeeded + d.failed)) / 4) * 4;
  const step = (W - PAD_L) / Math.max(1, data.length);
  const scale = (v) => ((H - PAD_T - PAD_B) * v) / max;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, "data-testid": "deliveries-chart", role: "img", "aria-label": "Deliveries per minute by outcome" },
    axes(max, "", timeLabels(data, step)));
  data.forEach((d, i) => {
    const x = PAD_L + step * i + step * 0.15, w = Math.max(1, step * 0.7);
    const ok = scale(d.succeeded), fail = scale(d.failed);
    const base = H - PAD_B;
    if (d.succeeded) svg.append(s("rect", { x, y: base - ok, width: w, height: ok, fill: "#40c057", "data-kind": "success" }, s("title", {}, `${fmtTime(d.start)}: ${d.succeeded} delivered`)));
    if (d.failed) svg.append(s("rect", { x, y: base - ok - fail, width: w, height: fail, fill: "#fa5252", "data-kind": "failure" }, s("title", {}, `${fmtTime(d.start)}: ${d.failed} failed`)));
  });
  return h("div", {}, svg, h("div", { class: "legend" },
    h("span", {}, h("i", { style: "background:#40c057" }), "delivered"), h("span", {}, h("i", { style: "background:#fa5252" }), "failed"),
    h("span", {}, `per ${tl.bucketSeconds / 60} min, last hour`)));
}

function latencyChart(tl) {
  const data = tl.data;
  const max = Math.ceil(Math.max(8, ...data.map((d) => d.p95Ms || 0)) / 4) * 4;
  const step = (W - PAD_L) / Math.max(1, data.length);
  const y = (v) => H - PAD_B - ((H - PAD_T - PAD_B) * v) / max;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, "data-testid": "latency-chart", role: "img", "aria-label": "Attempt latency p50 and p95" },
    axes(max, " ms", timeLabels(data, step)));
  for (const [key, color] of [["p95Ms", "#f08c00"], ["p50Ms", "#3b5bdb"]]) {
    let path = "";
    data.forEach((d, i) => {
      if (d[key] === null || d[key] === undefined) return;
      const x = PAD_L + step * (i + 0.5);
      path += `${path ? "L" : "M"}${x.toFixed(1)},${y(d[key]).toFixed(1)} `;
      svg.append(s("circle", { cx: x, cy: y(d[key]), r: 2.5, fill: color }, s("title", {}, `${fmtTime(d.start)}: ${key.slice(0, 3)} ${d[key]} ms`)));
    });
    if (path) svg.append(s("path", { d: path, fill: "none", stroke: color, "stroke-width": 1.8 }));
  }
  return h("div", {}, svg, h("div", { class: "legend" },
    h("span", {}, h("i", { style: "background:#3b5bdb" }), "p50"), h("span", {}, h("i", { style: "background:#f08c00" }), "p95")));
}

// --- message log

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

async function renderMessages(nav, appId, params) {
  const app = await get(`/app/${enc(appId)}`);
  appCrumbs(nav, app, { text: "Message log" });
  const q = new URLSearchParams();
  q.set("limit", "50");
  if (params.get("event")) q.set("event_types", params.get("event"));
  if (params.get("status")) q.set("status", params.get("status"));
  if (params.get("after")) q.set("after", params.get("after"));
  if (params.get("before")) q.set("before", params.get("before"));
  if (params.get("iterator")) q.set("iterator", params.get("iterator"));
  const list = await get(`/stats/app/${enc(app.id)}/msg?${q}`);

  const event = h("input", { name: "event", value: params.get("event") || "", placeholder: "invoice.paid", "data-testid": "filter-event" });
  const status = h("select", { name: "status", "data-testid": "filter-status" },
    [["", "any"], ["success", "delivered"], ["pending", "pending"], ["fail", "failed"], ["canceled", "canceled"]].map(([v, t]) =>
      h("option", { value: v, selected: (params.get("status") || "") === v }, t)));
  const after = h("input", { type: "datetime-local", name: "after", value: localInput(params.get("after")), "data-testid": "filter-after" });
  const before = h("input", { type: "datetime-local", name: "before", value: localInput(params.get("before")), "data-testid": "filter-before" });
  const form = h("form", {
    class: "filters", "data-testid": "message-search",
    onsubmit: (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      if (event.value.trim()) p.set("event", event.value.trim());
      if (status.value) p.set("status", status.value);
      if (after.value) p.set("after", new Date(after.value).toISOString());
      if (before.value) p.set("before", new Date(before.value).toISOString());
      location.hash = `#/app/${enc(app.id)}/messages?${p}`;
    },
  },
    h("label", {}, "Event type", event), h("label", {}, "Status", status),
    h("label", {}, "After", after), h("label", {}, "Before", before),
    h("button", { type: "submit", "data-testid": "search" }, "Search"),
    h("button", { type: "button", class: "secondary", onclick: () => { location.hash = `#/app/${enc(app.id)}/messages`; } }, "Clear"));

  const rows = list.data.map((m) => h("tr", { class: "click", "data-testid": "message-row", "data-msg": m.id, onclick: () => (location.hash = `#/app/${enc(app.id)}/msg/${enc(m.id)}`) },
    h("td", {}, h("a", { href: `#/app/${enc(app.id)}/msg/${enc(m.id)}`, class: "mono" }, m.id), m.eventId ? h("div", { class: "small muted" }, m.eventId) : null),
    h("td", { "data-testid": "event-type" }, m.eventType),
    h("td", {}, m.status ? badge(m.status) : h("span", { class: "muted" }, "no endpoint")),
    h("td", { class: "small" }, `${m.succeeded} ok · ${m.pending} pending · ${m.failed} failed`),
    h("td", {}, m.attempts),
    h("td", { class: "muted" }, fmtTime(m.timestamp))));
  const next = !list.done && list.iterator ? (() => {
    const p = new URLSearchParams(params);
    p.set("iterator", list.iterator);
    return h("p", {}, h("a", { href: `#/app/${enc(app.id)}/messages?${p}`, "data-testid": "next-page" }, "Older messages →"));
  })() : null;
  show(nav, h("h1", {}, app.name), tabs(app, "messages"), h("div", { class: "card" }, form,
    rows.length ? h("table", { "data-testid": "message-table" },
      h("thead", {}, h("tr", {}, ["Message", "Event type", "Status", "Deliveries", "Attempts", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)) : h("p", { class: "muted", "data-testid": "no-messages" }, "No message matches."), next));
}

// --- inbound sources (admin only): what providers sent, and what became of it

const REQUEST_BADGES = { accepted: "success", duplicate: "canceled", rejected: "fail" };

async function renderSources(nav, params) {
  crumbs(nav, { text: "Inbound sources" });
  const q = new URLSearchParams({ limit: "100" });
  if (params.get("iterator")) q.set("iterator", params.get("iterator"));
  const list = await get(`/source?${q}`);
  const rows = list.data.map((src) => h("tr", { class: "click", "data-testid": "source-row", onclick: () => (location.hash = `#/source/${enc(src.id)}`) },
    h("td", {}, h("a", { href: `#/source/${enc(src.id)}` }, src.name)),
    h("td", {}, src.verification.type),
    h("td", { class: "mono small" }, src.ingestUrl),
    h("td", {}, src.destinations.length),
    h("td", { class: "muted" }, fmtTime(src.createdAt))));
  show(nav, h("h1", {}, "Inbound sources"), topTabs("sources"),
    h("div", { class: "card" }, rows.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Verification", "Ingest URL", "Destinations", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, "No sources yet: POST /api/v1/source to create one."),
      !list.done && list.iterator ? h("p", {}, h("a", { href: `#/sources?iterator=${enc(list.iterator)}`, "data-testid": "next-page" }, "More sources →")) : null));
}

function dedupText(d) {
  if (d.type === "header") return `header ${d.header}`;
  if (d.type === "jsonField") return `body field ${d.path}`;
  if (d.type === "jsonFieldOrHeader") return `body field ${d.path}, else header ${d.header}`;
  return "none";
}

// What a destination does beyond forwarding, as tags.
function destinationRules(d) {
  return [
    d.disabled ? "disabled" : null,
    d.paused ? "paused" : null,
    d.payloadFilter ? "filtered" : null,
    d.transform ? "transformed" : null,
    d.transformation && d.transformation.enabled ? "JavaScript" : null,
    d.ordering === "fifo" ? "FIFO" : null,
    d.rateLimit ? `at most ${d.rateLimit}/s` : null,
    d.filterTypes ? `only ${d.filterTypes.join(", ")}` : null,
    d.retrySchedule ? (d.retrySchedule.length ? `retries after ${d.retrySchedule.join(", ")}` : "no retry") : null,
  ].filter(Boolean);
}

async function renderSource(nav, srcId, params) {
  const q = new URLSearchParams({ limit: "50" });
  if (params.get("status")) q.set("status", params.get("status"));
  if (params.get("iterator")) q.set("iterator", params.get("iterator"));
  const [src, reqs] = await Promise.all([get(`/source/${enc(srcId)}`), get(`/source/${enc(srcId)}/request?${q}`)]);
  crumbs(nav, { text: "Inbound sources", href: "#/sources" }, { text: src.name });
  const kv = (k, ...v) => h("tr", {}, h("td", {}, k), h("td", {}, ...v));
  const destRows = src.destinations.map((d) => h("tr", { "data-testid": "source-destination" },
    h("td", {}, d.type === "url" ? "URL" : "event type"),
    h("td", { class: "mono" }, d.type === "url" ? d.url
      : [h("a", { href: `#/app/${enc(d.appId)}` }, d.appId), ` · ${d.eventType}`]),
    h("td", {}, h("div", { class: "tags" }, destinationRules(d).map((r) => h("span", { class: "tag" }, r))))));
  const status = h("select", {
    "data-testid": "request-status",
    onchange: () => {
      const p = new URLSearchParams();
      if (status.value) p.set("status", status.value);
      location.hash = `#/source/${enc(src.id)}?${p}`;
    },
  }, [["", "any"], ["accepted", "accepted"], ["duplicate", "duplicate"], ["rejected", "rejected"]].map(([v, t]) =>
    h("option", { value: v, selected: (params.get("status") || "") === v }, t)));
  const rows = reqs.data.map((r) => [
    h("tr", { class: "request", "data-testid": "request-row", "data-status": r.status },
      h("td", { class: "muted" }, fmtTime(r.receivedAt)),
      h("td", {}, badge(REQUEST_BADGES[r.status], r.status)),
      h("td", {}, r.httpStatus),
      h("td", { class: "small", "data-testid": "request-reason" }, r.reason || ""),
      h("td", { class: "mono small" }, r.remoteAddr || "—"),
      h("td", {}, r.msgId ? h("a", { href: `#/app/${enc(src.appId)}/msg/${enc(r.msgId)}`, class: "mono small", "data-testid": "request-message" }, r.msgId) : "—")),
    h("tr", {}, h("td", { colspan: 6 }, h("details", { "data-testid": "request-detail" },
      h("summary", { class: "small muted" }, `Headers and body (${r.bodySize} bytes${r.bodyTruncated ? ", shown in part" : ""})`),
      h("table", { class: "kv" }, Object.entries(r.headers).map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "mono" }, v)))),
      h("pre", { "data-testid": "request-body" }, r.body || "(empty)"),
      r.bodyBase64 ? h("div", {}, h("p", { class: "small muted" }, "Not UTF-8 text: the bytes as received, in base64"),
        h("pre", { "data-testid": "request-body-base64" }, r.bodyBase64)) : null))),
  ]);
  const next = !reqs.done && reqs.iterator ? (() => {
    const p = new URLSearchParams(params);
    p.set("iterator", reqs.iterator);
    return h("p", {}, h("a", { href: `#/source/${enc(src.id)}?${p}`, "data-testid": "next-page" }, "Older requests →"));
  })() : null;
  show(nav, h("h1", {}, src.name),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Source"), h("table", { class: "kv" },
        kv("Ingest URL", h("span", { class: "mono", "data-testid": "ingest-url" }, src.ingestUrl)),
        kv("Verification", src.verification.type),
        kv("Deduplication", dedupText(src.deduplication)),
        src.response ? kv("Answers", h("span", { "data-testid": "source-answer" },
          `${src.response.status}${src.response.contentType ? ` ${src.response.contentType}` : ""}`,
          src.response.body ? h("span", { class: "mono" }, ` ${src.response.body.slice(0, 80)}`) : null)) : null,
        kv("Forwarded", h("a", { href: `#/app/${enc(src.appId)}`, "data-testid": "source-deliveries" }, "deliveries and charts"),
          " · ", h("a", { href: `#/app/${enc(src.appId)}/messages` }, "message log")))),
      h("div", { class: "card" }, h("h2", {}, "Destinations"), destRows.length
        ? h("table", {}, h("tbody", {}, destRows)) : h("p", { class: "muted" }, "No destination: requests are recorded only."))),
    h("div", { class: "card" }, h("h2", {}, "Requests"), h("div", { class: "filters" }, h("label", {}, "Status", status)),
      rows.length ? h("table", { "data-testid": "request-table" },
        h("thead", {}, h("tr", {}, ["Received", "Status", "HTTP", "Reason", "From", "Message"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows.flat())) : h("p", { class: "muted", "data-testid": "no-requests" }, "No request matches."), next));
}

// --- one message: deliveries and attempts

async function renderMessage(nav, appId, msgId) {
  const app = await get(`/app/${enc(appId)}`);
  const [msg, dests, attempts] = await Promise.all([
    get(`/app/${enc(app.id)}/msg/${enc(msgId)}`),
    // `expanded_statuses`: canceled shown as canceled, not as success (see the API's README).
    get(`/app/${enc(app.id)}/msg/${enc(msgId)}/endpoint?limit=250&expanded_statuses=true`),
    get(`/app/${enc(app.id)}/attempt/msg/${enc(msgId)}?limit=250&expanded_statuses=true`),
  ]);
  appCrumbs(nav, app, { text: "Message log", href: `#/app/${enc(app.id)}/messages` }, { text: msg.id });
  const destRows = dests.data.map((d) => h("tr", { "data-testid": "destination-row" },
    h("td", { class: "mono" }, d.url), h("td", {}, badge(STATUS_NAMES[d.status])),
    h("td", { class: "muted" }, d.nextAttempt ? `next try ${fmtTime(d.nextAttempt)}` : ""),
    h("td", {}, !can("CreateAttempts") ? null : h("button", {
      class: "secondary", "data-testid": "resend",
      onclick: async (ev) => {
        const done = await act(ev.target, () => api("POST", `/app/${enc(app.id)}/msg/${enc(msg.id)}/endpoint/${enc(d.id)}/resend`));
        if (!done.ok) return;
        ev.target.textContent = "Resent";
        waitForAttempts(app.id, msg.id, attempts.data.length ? attempts.data[0].id : null);
      },
    }, "Resend"))));
  const attemptCards = attempts.data.map((a) => {
    const headers = a.requestHeaders ? h("table", { class: "kv", "data-testid": "request-headers" },
      Object.entries(a.requestHeaders).map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "mono" }, v))))
      : h("p", { class: "muted small" }, "No request headers recorded.");
    return h("div", { class: "attempt", "data-testid": "attempt", "data-attempt": a.id },
      h("div", { class: "head" }, badge(STATUS_NAMES[a.status]),
        h("strong", { "data-testid": "response-status" }, a.responseStatusCode ? `HTTP ${a.responseStatusCode}` : "no response"),
        h("span", { "data-testid": "duration" }, `${a.responseDurationMs} ms`),
        h("span", { class: "muted" }, fmtTime(a.timestamp)),
        a.triggerType === 1 ? h("span", { class: "badge" }, "manual") : null,
        h("span", { class: "mono muted small" }, a.url)),
      h("details", { open: true }, h("summary", {}, "Request headers"), headers),
      h("details", { open: true }, h("summary", {}, "Response body"), h("pre", { "data-testid": "response-body" }, a.response || "(empty)")));
  });
  show(nav, h("h1", {}, msg.eventType, " ", h("span", { class: "muted mono small" }, msg.id)),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Message"), h("table", { class: "kv" },
        h("tr", {}, h("td", {}, "Event type"), h("td", {}, msg.eventType)),
        h("tr", {}, h("td", {}, "Event id"), h("td", { class: "mono" }, msg.eventId || "—")),
        h("tr", {}, h("td", {}, "Created"), h("td", {}, fmtTime(msg.timestamp))),
        h("tr", {}, h("td", {}, "Channels"), h("td", {}, (msg.channels || []).join(", ") || "—"))),
        h("pre", { "data-testid": "payload" }, JSON.stringify(msg.payload, null, 2))),
      h("div", { class: "card" }, h("h2", {}, "Deliveries"), destRows.length ? h("table", {}, h("tbody", {}, destRows)) : h("p", { class: "muted" }, "No endpoint wanted this message."))),
    h("div", { class: "card" }, h("h2", {}, `Attempts (${attempts.data.length}${attempts.done ? "" : ", the newest"})`),
      attemptCards.length ? h("div", { "data-testid": "attempts" }, attemptCards) : h("p", { class: "muted" }, "No attempt yet.")));
}

// After a resend: re-render when a new attempt shows up (for up to 15 s), that is when the
// newest attempt (the list is newest first) is no longer `newest`, the newest drawn (its id;
// null: none was). Only that one is asked for, without its response body, each time (a
// count would not do: the page draws at most 250 attempts).
async function waitForAttempts(appId, msgId, newest) {
  const started = token();
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 500));
    if (!location.hash.includes(`/msg/${enc(msgId)}`) || token() !== started) return;
    let list;
    try { list = await get(`/app/${enc(appId)}/attempt/msg/${enc(msgId)}?limit=1&with_content=false`); } catch (err) { return; }
    if (list.data.length && list.data[0].id !== newest) return route();
  }
}

// --- start

// The portal link carries the token in its fragment (never sent to a server), as the whole
// fragment's start: `#token=…` (a `token=` elsewhere in a fragment is no token). It is kept
// for this tab only and taken out of the address bar and history. A tab signed in with
// another token (a link opened in a tab that shows the portal: only the fragment changes,
// so the page does not load again; or a page that frames the portal changing its fragment)
// keeps its token until the user, told which application the link opens, says to switch.
// Answers whether that question is now asked (the page is then drawn by `offerSwitch`).
function takeLinkToken() {
  const m = location.hash.match(/^#token=([^&]+)/);
  if (!m) return false;
  // A malformed one (`%E0`) is kept as it is: the API refuses it, and the page says so.
  let value = m[1];
  try { value = decodeURIComponent(value); } catch (err) { /* as it is */ }
  history.replaceState(null, "", location.pathname + "#/");
  const held = token();
  if (held === value) return false;
  if (held !== null) { offerSwitch(value); return true; }
  sessionStorage.setItem(TOKEN_KEY, value);
  portalApp = null;
  portalCaps = null;
  return false;
}

// Asks whether to leave the portal signed in for the one a link's token `offered` opens,
// naming that application. Switch takes the token; Stay (or any other navigation) drops it.
async function offerSwitch(offered) {
  const nav = navigation();
  const was = portalApp;
  document.getElementById("crumbs").replaceChildren();
  main().replaceChildren(h("p", { class: "muted" }, "Opening the link…"));
  const stay = () => route();
  let app = null;
  try {
    const apps = await api("GET", "/app", undefined, offered);
    app = apps && apps.data && apps.data[0];
  } catch (err) {
    // (A 401 here is the link's token's: the held one is not signed out for it.)
    show(nav, h("div", { class: "card login", "data-testid": "switch-refused" }, h("h1", {}, "This link does not work"),
      h("p", { class: "error" }, `Its token was not accepted${err.status === 401 ? "" : `: ${err.message}`}. You are still signed in${was ? ` to ${was.name}` : ""}.`),
      h("div", { class: "actions" }, h("button", { "data-testid": "switch-stay", onclick: stay }, "Back"))));
    return;
  }
  if (!app) { show(nav, h("p", { class: "error" }, "This link's token opens no application.")); return; }
  const same = was && was.id === app.id;
  show(nav, h("div", { class: "card login", "data-testid": "switch-offer" },
    h("h1", {}, same ? `Open ${app.name} with this link's access?` : `Switch to the portal of ${app.name}?`),
    h("p", {}, same
      ? `This link opens ${app.name} again, with the access the link gives (which may differ from what you have now).`
      : `This link opens the webhook portal of another application: ${app.name}${app.uid ? ` (${app.uid})` : ""}. `
        + (was ? `In this tab you are signed in to ${was.name}.` : "In this tab you are signed in to another application's portal.")),
    h("p", { class: "small muted" }, `Switch only if you expected this link: what you change or enter after switching (a client secret, a key) goes to ${app.name}.`),
    h("div", { class: "actions" },
      h("button", {
        "data-testid": "switch-accept",
        onclick: () => {
          if (!nav.current()) return;
          sessionStorage.setItem(TOKEN_KEY, offered);
          portalApp = null;
          portalCaps = null;
          route();
        },
      }, same ? "Use this link" : `Switch to ${app.name}`),
      h("button", { class: "secondary", "data-testid": "switch-stay", onclick: stay }, was ? `Stay in ${was.name}` : "Stay"))));
}

function start() {
  document.getElementById("mode").textContent = PORTAL ? "portal" : "";
  document.getElementById("logout").addEventListener("click", signOutClicked);
  window.addEventListener("hashchange", () => {
    if (PORTAL && takeLinkToken()) return;
    route();
  });
  if (PORTAL && takeLinkToken()) return;
  route();
}

document.addEventListener("DOMContentLoaded", start);
