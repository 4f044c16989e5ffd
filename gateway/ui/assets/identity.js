// The browser's device identity: an Ed25519 key pair made by WebCrypto, kept in IndexedDB (the private key is
// not extractable), and the device tokens the gateway issued to it. Needs a secure context (localhost or HTTPS).
(function () {
  "use strict";
  const OCS = (window.OCS = window.OCS || { views: {} });
  const DB_NAME = "openclaw-sup-control-ui";
  const STORE = "kv";

  function b64url(bytes) {
    let s = "";
    for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function hex(bytes) {
    return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function available() {
    return Boolean(window.isSecureContext && window.crypto && crypto.subtle && window.indexedDB);
  }

  function openDb() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  async function kv(mode, fn) {
    const db = await openDb();
    try {
      return await new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, mode);
        const req = fn(tx.objectStore(STORE));
        tx.oncomplete = () => resolve(req ? req.result : undefined);
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
    } finally {
      db.close();
    }
  }

  const get = (key) => kv("readonly", (s) => s.get(key));
  const put = (key, value) => kv("readwrite", (s) => s.put(value, key));
  const del = (key) => kv("readwrite", (s) => s.delete(key));

  let cached = null;

  // The identity of this browser profile, made on first use.
  async function load() {
    if (cached) return cached;
    let stored = await get("device");
    if (!stored || !stored.privateKey || !stored.publicKey) {
      const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      const raw = await crypto.subtle.exportKey("raw", pair.publicKey);
      stored = {
        privateKey: pair.privateKey,
        publicKey: b64url(raw),
        deviceId: hex(await crypto.subtle.digest("SHA-256", raw)),
        createdAtMs: Date.now(),
      };
      await put("device", stored);
    }
    cached = stored;
    return stored;
  }

  // The v3 proof (spec/protocol.md section 2): every field the gateway re-derives, joined by "|".
  async function prove(identity, { client, role, scopes, signedAt, token, nonce }) {
    const norm = (v) => (typeof v === "string" ? v.trim().toLowerCase() : "");
    const payload = ["v3", identity.deviceId, client.id, client.mode, role, scopes.join(","), String(signedAt),
      token || "", nonce, norm(client.platform), norm(client.deviceFamily)].join("|");
    const sig = await crypto.subtle.sign({ name: "Ed25519" }, identity.privateKey, new TextEncoder().encode(payload));
    return { id: identity.deviceId, publicKey: identity.publicKey, signature: b64url(sig), signedAt, nonce };
  }

  const tokenKey = (gatewayKey, deviceId, role) => `deviceToken|${gatewayKey}|${deviceId}|${role}`;

  async function deviceToken(gatewayKey, deviceId, role) {
    return (await get(tokenKey(gatewayKey, deviceId, role))) || null;
  }

  async function saveDeviceToken(gatewayKey, deviceId, role, entry) {
    await put(tokenKey(gatewayKey, deviceId, role), entry);
  }

  async function forgetDeviceToken(gatewayKey, deviceId, role) {
    await del(tokenKey(gatewayKey, deviceId, role));
  }

  OCS.identity = { available, load, prove, deviceToken, saveDeviceToken, forgetDeviceToken };
})();
