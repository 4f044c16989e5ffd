// The dashboard shell: sign-in, the connection banner, navigation between views, and event dispatch.
(function () {
  "use strict";
  const OCS = window.OCS;
  const { h, clear } = OCS.dom;
  const VIEWS = ["workers", "logs", "channels", "cron", "chat", "config"];
  const base = document.documentElement.dataset.basePath || "";
  const gatewayKey = `${location.origin}${base}`;
  const SECRET_KEY = `openclaw-sup.gatewaySecret|${gatewayKey}`;

  const root = document.getElementById("app");
  const statusDot = h("span", { class: "dot" });
  const statusText = h("span", { class: "status-text", id: "connection-status" });
  const signOut = h("button", { class: "link", type: "button", text: "Sign out", hidden: true, onclick: () => logout() });
  const nav = h("nav", { class: "tabs" }, VIEWS.map((name) => h("a", {
    href: `${base}/${name}`, dataset: { view: name }, text: OCS.views[name].title,
    onclick: (ev) => { ev.preventDefault(); go(name); },
  })));
  const banner = h("div", { class: "banner", id: "banner", role: "status", hidden: true });
  const main = h("main", { id: "view" });
  const overlay = h("div", { class: "overlay", hidden: true });
  const toasts = h("div", { class: "toasts" });

  clear(root);
  root.append(
    h("header", { class: "top" },
      h("div", { class: "brand" }, h("img", { src: `${base}/favicon.svg`, alt: "", width: 22, height: 22 }),
        h("span", { text: "openclaw-sup" })),
      nav,
      h("div", { class: "conn" }, statusDot, statusText, signOut)),
    banner, main, overlay, toasts);

  let current = null;
  let currentName = null;
  let connected = false;

  function toast(text, kind = "info") {
    const el = h("div", { class: `toast ${kind}`, text });
    toasts.append(el);
    setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
  }

  const ctx = { base, toast, get connected() { return connected; }, gw: null, hello: null };

  function viewFromPath() {
    const rest = location.pathname.slice(base.length).replace(/^\/+/, "").split("/")[0];
    return VIEWS.includes(rest) ? rest : "workers";
  }

  function go(name, push = true) {
    if (push && name !== currentName) history.pushState(null, "", `${base}/${name}`);
    render(name);
  }

  function render(name) {
    if (current && current.destroy) current.destroy();
    currentName = name;
    for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.view === name);
    document.title = `${OCS.views[name].title} · openclaw-sup`;
    clear(main);
    current = OCS.views[name].create(ctx);
    main.append(current.el);
    if (connected && current.onConnected) current.onConnected();
  }

  window.addEventListener("popstate", () => render(viewFromPath()));

  // ---------------------------------------------------------------- sign-in and connection state

  function showInsecure() {
    const port = location.port || (location.protocol === "https:" ? "443" : "80");
    clear(overlay).append(h("div", { class: "card login", id: "insecure" },
      h("h1", { text: "device identity required" }),
      h("p", {}, "This page was opened over plain HTTP from ", h("code", { text: location.host }),
        ", which the browser does not treat as a secure context, so it cannot create the signed device identity ",
        "the gateway requires."),
      h("p", { text: "Open the dashboard in one of these ways instead:" }),
      h("ul", {},
        h("li", {}, "On the gateway host: ", h("code", { text: `http://127.0.0.1:${port}${base}/` }), " (localhost)."),
        h("li", {}, "From another machine, through an SSH tunnel: ",
          h("code", { text: `ssh -N -L ${port}:127.0.0.1:${port} user@${location.hostname}` }),
          ", then open ", h("code", { text: `http://127.0.0.1:${port}${base}/` }), "."),
        h("li", { text: "Over HTTPS: Tailscale Serve (openclaw gateway --tailscale serve) or a TLS reverse proxy." })),
    ));
    overlay.hidden = false;
  }

  function showLogin(message) {
    const input = h("input", { id: "gateway-secret", type: "password", autocomplete: "current-password",
      placeholder: "token or password", "aria-label": "Gateway secret" });
    const error = h("p", { class: "error", id: "login-error", text: message || "" });
    const form = h("form", { class: "card login", id: "login", onsubmit: (ev) => {
      ev.preventDefault();
      const secret = input.value.trim();
      if (!secret) { error.textContent = "Enter the gateway token or password."; return; }
      overlay.hidden = true;
      ctx.gw.start(secret);
    } },
    h("h1", { text: "Sign in to the gateway" }),
    h("label", { for: "gateway-secret", text: "Gateway secret" }), input,
    h("p", { class: "hint" }, "The gateway token (", h("code", { text: "gateway.auth.token" }), " or ",
      h("code", { text: "OPENCLAW_GATEWAY_TOKEN" }), ") or password. A token is kept for this tab only; a password ",
    "only in memory."),
    error,
    h("button", { type: "submit", class: "primary", text: "Connect" }));
    clear(overlay).append(form);
    overlay.hidden = false;
    input.focus();
  }

  function onState(state, detail, label) {
    statusDot.className = `dot state-${state}`;
    statusText.textContent = label;
    connected = state === "connected";
    signOut.hidden = !connected;
    banner.hidden = true;
    banner.className = "banner";
    if (state === "connected") {
      overlay.hidden = true;
      ctx.hello = detail.hello;
      if (detail.secretUsed && detail.authMode === "token") sessionStorage.setItem(SECRET_KEY, ctx.gw.secret);
      if (detail.authMode !== "token") sessionStorage.removeItem(SECRET_KEY);
      if (current && current.onConnected) current.onConnected();
      return;
    }
    if (current && current.onDisconnected) current.onDisconnected();
    if (state === "insecure") { showInsecure(); return; }
    if (state === "signedOut") { showLogin(detail.message); return; }
    if (state === "unauthorized") {
      sessionStorage.removeItem(SECRET_KEY);
      showLogin(detail.message);
      return;
    }
    const text = {
      reconnecting: () => `Gateway unreachable (${detail.reason || `close ${detail.code || "?"}`}); retrying in `
        + `${Math.ceil((detail.retryInMs || 0) / 1000)}s (attempt ${detail.attempt}).`,
      restarting: () => `The gateway is restarting${detail.reason ? ` (${detail.reason})` : ""}; `
        + "reconnecting when it is back.",
      pairing: () => `${detail.message}. Approve this browser on the gateway host: `
        + `openclaw devices approve ${detail.error?.details?.requestId || "<requestId>"} (retrying every 10s).`,
      failed: () => `Cannot connect: ${detail.message}`,
      connecting: () => (detail.message ? `Connecting: ${detail.message}` : ""),
    }[state];
    const message = text ? text() : "";
    if (message) {
      banner.textContent = message;
      banner.classList.add(`banner-${state}`);
      banner.hidden = false;
    }
  }

  function onEvent(name, payload) {
    if (current && current.onEvent) current.onEvent(name, payload);
  }

  async function logout() {
    sessionStorage.removeItem(SECRET_KEY);
    ctx.gw.stop();
    try {
      const identity = await OCS.identity.load();
      await OCS.identity.forgetDeviceToken(gatewayKey, identity.deviceId, "operator");
    } catch (_) { /* no identity to forget */ }
    showLogin("Signed out.");
  }

  // The secret: a `#token=` handoff (stripped from the URL at once), this tab's stored token, else the device token.
  function initialSecret() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const handed = fragment.get("token") || fragment.get("password");
    if (fragment.has("token") || fragment.has("password") || fragment.has("bootstrapToken")) {
      history.replaceState(null, "", location.pathname + location.search);
    }
    if (fragment.has("bootstrapToken") && !handed) {
      toast("One-time pairing links are not supported by this gateway yet; enter the gateway secret.", "error");
    }
    return handed || sessionStorage.getItem(SECRET_KEY);
  }

  ctx.gw = new OCS.Gateway({ gatewayKey, onState, onEvent });
  OCS.app = ctx;
  render(viewFromPath());
  ctx.gw.start(initialSecret());
})();
