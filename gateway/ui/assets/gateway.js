// The WebSocket client of the dashboard: upstream's handshake (challenge, `connect` with auth and a signed device
// proof), requests, events, and what happens when the connection fails, stated once in FAILURES below.
(function () {
  "use strict";
  const OCS = (window.OCS = window.OCS || { views: {} });

  const PROTOCOL = 4;
  const ROLE = "operator";
  const SCOPES = ["operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.pairing"];
  const BACKOFF = { firstMs: 800, factor: 1.7, maxMs: 15000, jitter: 0.2 };
  const PAIRING_RETRY_MS = 10000;
  const REQUEST_TIMEOUT_MS = 30000;

  // What the banner says in each state.
  const STATES = {
    idle: "not connected",
    signedOut: "not signed in",
    connecting: "connecting…",
    connected: "connected",
    reconnecting: "gateway unreachable",
    restarting: "gateway restarting",
    pairing: "pairing required",
    unauthorized: "unauthorized",
    insecure: "device identity required",
    failed: "cannot connect",
  };

  // A refused `connect`, by error details code (or message), and what the client does about it:
  // `retry` reconnects after a delay, `stop` waits for the operator (no reconnect loop).
  const FAILURES = [
    { when: (e) => e.details?.code === "PAIRING_REQUIRED" || e.code === "NOT_PAIRED", state: "pairing",
      retry: () => PAIRING_RETRY_MS },
    { when: (e) => e.code === "UNAVAILABLE" && e.retryable, state: "connecting",
      retry: (e) => e.retryAfterMs || 1000 },
    { when: (e) => e.details?.code === "AUTH_RATE_LIMITED", state: "unauthorized", stop: true },
    { when: (e) => /^unauthorized/.test(e.message || ""), state: "unauthorized", stop: true },
    { when: (e) => /^device /.test(e.message || ""), state: "failed", stop: true },
    { when: (e) => e.message === "protocol mismatch", state: "failed", stop: true },
    { when: () => true, state: "failed", stop: true },
  ];

  function wsUrl() {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
  }

  class Gateway {
    constructor({ gatewayKey, onState, onEvent, onHello }) {
      this.gatewayKey = gatewayKey;
      this.onState = onState || (() => {});
      this.onEvent = onEvent || (() => {});
      this.onHello = onHello || (() => {});
      this.state = "idle";
      this.ws = null;
      this.secret = null;
      this.nextId = 1;
      this.pending = new Map();
      this.attempt = 0;
      this.timer = null;
      this.tickTimer = null;
      this.lastFrameAt = 0;
      this.hello = null;
      this.stopped = true;
      this.restartExpectedMs = null;
      this.usedDeviceToken = false;
      this.deviceRetryDone = false;
      this.attempts = 0;
      this.instanceId = OCS.dom.newId();
    }

    // `secret` is the gateway token or password; without one the stored device token is tried.
    // With neither a secret nor a stored device token nothing is sent: the operator is asked first.
    async start(secret) {
      this.stopped = false;
      this.secret = secret || null;
      this.attempt = 0;
      this.deviceRetryDone = false;
      if (!OCS.identity.available()) {
        this.stopped = true;
        this._set("insecure", { message: "device identity required", host: location.host });
        return;
      }
      if (!this.secret) {
        const identity = await OCS.identity.load();
        if (!(await OCS.identity.deviceToken(this.gatewayKey, identity.deviceId, ROLE))) {
          this.stopped = true;
          this._set("signedOut", { needSecret: true });
          return;
        }
      }
      this._open();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this._closeSocket(1000, "dashboard closed");
      this._set("idle");
    }

    request(method, params, { timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
      if (this.state !== "connected" || !this.ws) {
        return Promise.reject({ code: "UNAVAILABLE", message: `not connected to the gateway (${STATES[this.state]})` });
      }
      const id = `${this.nextId++}:${OCS.dom.newId()}`;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject({ code: "UNAVAILABLE", message: `${method} did not answer within ${timeoutMs / 1000}s` });
        }, timeoutMs);
        this.pending.set(id, { resolve, reject, timer, method });
        this.ws.send(JSON.stringify({ type: "req", id, method, params: params || {} }));
      });
    }

    _set(state, detail) {
      this.state = state;
      this.onState(state, detail || {}, STATES[state]);
    }

    _open() {
      clearTimeout(this.timer);
      this.attempts += 1;
      if (this.state !== "reconnecting" && this.state !== "restarting" && this.state !== "pairing") {
        this._set("connecting");
      }
      let ws;
      try {
        ws = new WebSocket(wsUrl());
      } catch (err) {
        this._retryLater({ reason: String(err) });
        return;
      }
      this.ws = ws;
      this.hello = null;
      ws.onmessage = (msg) => this._frame(ws, msg.data);
      ws.onclose = (ev) => this._closed(ws, ev.code, ev.reason);
    }

    _closeSocket(code, reason) {
      const ws = this.ws;
      this.ws = null;
      clearInterval(this.tickTimer);
      if (ws) {
        ws.onmessage = null;
        ws.onclose = null;
        try { ws.close(code, reason); } catch (_) { /* already closed */ }
      }
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject({ code: "UNAVAILABLE", message: `connection lost before ${p.method} answered` });
        this.pending.delete(id);
      }
    }

    async _frame(ws, data) {
      if (ws !== this.ws) return;
      this.lastFrameAt = Date.now();
      let frame;
      try { frame = JSON.parse(data); } catch (_) { return; }
      if (frame.type === "event" && frame.event === "connect.challenge") {
        await this._connect(ws, frame.payload || {});
      } else if (frame.type === "res" && frame.id === "connect") {
        await this._connected(ws, frame);
      } else if (frame.type === "res") {
        const p = this.pending.get(frame.id);
        if (!p) return;
        if (frame.ok && frame.payload && frame.payload.status === "accepted" && p.method === "agent") return;
        clearTimeout(p.timer);
        this.pending.delete(frame.id);
        if (frame.ok) p.resolve(frame.payload);
        else p.reject(frame.error || { code: "UNAVAILABLE", message: "request failed" });
      } else if (frame.type === "event") {
        if (frame.event === "shutdown") {  // a restart says when to expect it back; a stop does not
          const payload = frame.payload || {};
          this.shutdownReason = payload.reason || "gateway stopping";
          if (typeof payload.restartExpectedMs === "number") {
            this.restartExpectedMs = payload.restartExpectedMs;
            this._set("restarting", { reason: payload.reason });
          }
        }
        this.onEvent(frame.event, frame.payload, frame);
      }
    }

    async _authFor(identity) {
      this.usedDeviceToken = false;
      if (this.secret) return { token: this.secret, password: this.secret };
      const stored = await OCS.identity.deviceToken(this.gatewayKey, identity.deviceId, ROLE);
      if (stored && stored.token) {
        this.usedDeviceToken = true;
        return { deviceToken: stored.token };
      }
      return {};
    }

    async _connect(ws, challenge) {
      try {
        const identity = await OCS.identity.load();
        const auth = this.forceDeviceToken ? await this._deviceAuth(identity) : await this._authFor(identity);
        this.forceDeviceToken = false;
        if (!auth.token && !auth.deviceToken) {
          this._closeSocket(1000, "no credentials");
          this.stopped = true;
          this._set("unauthorized", { message: "unauthorized: enter the gateway secret", needSecret: true });
          return;
        }
        const client = { id: "openclaw-control-ui", version: document.documentElement.dataset.version || "0",
          platform: "web", mode: "ui", displayName: "openclaw-sup dashboard", instanceId: this.instanceId };
        const device = await OCS.identity.prove(identity, {
          client, role: ROLE, scopes: SCOPES, signedAt: challenge.ts, nonce: challenge.nonce,
          token: auth.token || auth.deviceToken,
        });
        if (ws !== this.ws) return;
        ws.send(JSON.stringify({ type: "req", id: "connect", method: "connect", params: {
          minProtocol: PROTOCOL, maxProtocol: PROTOCOL, client, role: ROLE, scopes: SCOPES, caps: [], auth, device,
          userAgent: navigator.userAgent, locale: navigator.language,
        } }));
      } catch (err) {
        this._closeSocket(1000, "identity failed");
        this.stopped = true;
        this._set("failed", { message: `device identity failed: ${OCS.dom.errorText(err)}` });
      }
    }

    async _deviceAuth(identity) {
      const stored = await OCS.identity.deviceToken(this.gatewayKey, identity.deviceId, ROLE);
      this.usedDeviceToken = Boolean(stored && stored.token);
      return this.usedDeviceToken ? { deviceToken: stored.token } : {};
    }

    async _connected(ws, frame) {
      if (frame.ok) {
        const hello = frame.payload;
        this.hello = hello;
        this.attempt = 0;
        this.deviceRetryDone = false;
        const identity = await OCS.identity.load();
        if (hello.auth && hello.auth.deviceToken) {
          await OCS.identity.saveDeviceToken(this.gatewayKey, identity.deviceId, ROLE, {
            token: hello.auth.deviceToken, scopes: hello.auth.scopes, issuedAtMs: hello.auth.issuedAtMs });
        }
        this._watchTicks(ws, (hello.policy && hello.policy.tickIntervalMs) || 30000);
        this._set("connected", { hello, authMode: hello.snapshot && hello.snapshot.authMode,
          secretUsed: Boolean(this.secret) && !this.usedDeviceToken });
        this.onHello(hello);
        return;
      }
      const err = frame.error || {};
      const identity = await OCS.identity.load();
      if (this.usedDeviceToken && /^unauthorized/.test(err.message || "")) {
        await OCS.identity.forgetDeviceToken(this.gatewayKey, identity.deviceId, ROLE);
      }
      if (err.details && err.details.canRetryWithDeviceToken && !this.deviceRetryDone && !this.usedDeviceToken) {
        const stored = await OCS.identity.deviceToken(this.gatewayKey, identity.deviceId, ROLE);
        if (stored && stored.token) {
          this.deviceRetryDone = true;
          this.forceDeviceToken = true;
          this.secret = null;
          this._closeSocket(1000, "retry with device token");
          this._open();
          return;
        }
      }
      const rule = FAILURES.find((r) => r.when(err));
      this._closeSocket(1000, "connect refused");
      const detail = { message: err.message || "connect refused", error: err, needSecret: rule.state === "unauthorized" };
      if (rule.stop) {
        this.stopped = true;
        this._set(rule.state, detail);
        return;
      }
      this._set(rule.state, detail);
      this._schedule(rule.retry(err));
    }

    _watchTicks(ws, tickMs) {
      clearInterval(this.tickTimer);
      this.tickTimer = setInterval(() => {
        if (ws !== this.ws) return;
        if (Date.now() - this.lastFrameAt > 2 * tickMs) {
          this._closeSocket(4000, "tick timeout");
          this._retryLater({ reason: "no tick from the gateway" });
        }
      }, Math.max(1000, tickMs / 2));
    }

    _closed(ws, code, reason) {
      if (ws !== this.ws) return;
      this._closeSocket(code, reason);
      if (this.stopped) return;
      if (this.state === "restarting" && this.restartExpectedMs !== null) {
        const wait = Math.max(500, this.restartExpectedMs);
        this.restartExpectedMs = null;
        this._set("restarting", { message: "the gateway is restarting; reconnecting", retryInMs: wait });
        this._schedule(wait);
        return;
      }
      this._retryLater({ code, reason: this.shutdownReason || reason });
      this.shutdownReason = null;
    }

    _retryLater(detail) {
      const wait = Math.min(BACKOFF.maxMs, BACKOFF.firstMs * BACKOFF.factor ** this.attempt);
      const jittered = Math.round(wait * (1 + (Math.random() * 2 - 1) * BACKOFF.jitter));
      this.attempt += 1;
      this._set(this.state === "restarting" ? "restarting" : "reconnecting",
        { ...detail, retryInMs: jittered, attempt: this.attempt });
      this._schedule(jittered);
    }

    _schedule(ms) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => { if (!this.stopped) this._open(); }, ms);
    }
  }

  OCS.Gateway = Gateway;
  OCS.gatewayStates = STATES;
})();
