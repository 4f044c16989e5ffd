// Channels: each account's status (and a probe on demand), and DM pairing requests to approve or dismiss;
// both re-read every 5 s while the view is open.
(function () {
  "use strict";
  const OCS = window.OCS;
  const { h, clear, fmtRelative } = OCS.dom;
  const REFRESH_MS = 5000;

  function yesNo(v, yes, no) {
    return h("span", { class: `flag ${v ? "on" : "off"}`, text: v ? yes : no });
  }

  function create(ctx) {
    const accounts = h("tbody");
    const requests = h("tbody");
    const note = h("p", { class: "muted", id: "channels-note" });
    const pairingNote = h("p", { class: "muted", id: "pairing-note" });
    const probe = h("button", { type: "button", id: "channels-probe", text: "Probe" });
    const notify = h("input", { type: "checkbox", id: "pairing-notify", checked: true });
    const el = h("div", { class: "view view-channels" },
      h("div", { class: "row" }, h("h2", { text: "Channels" }), probe),
      note,
      h("div", { class: "scroll" }, h("table", { class: "grid", id: "channels-table" },
        h("thead", {}, h("tr", {}, ["Channel", "Account", "Enabled", "Configured", "Running", "Connected",
          "Last error", "Probe"].map((t) => h("th", { text: t })))), accounts)),
      h("div", { class: "row" }, h("h2", { text: "DM pairing requests" }),
        h("label", { class: "check" }, notify, " tell the sender when approved")),
      pairingNote,
      h("div", { class: "scroll" }, h("table", { class: "grid", id: "pairing-table" },
        h("thead", {}, h("tr", {}, ["Channel", "Account", "Sender", "Requested", "Expires", ""].map(
          (t) => h("th", { text: t })))), requests)));
    let timer = null;
    let lastStates = null;

    async function loadStatus(withProbe) {
      probe.disabled = true;
      try {
        const res = await ctx.gw.request("channels.status", { probe: withProbe, timeoutMs: 10000 }, { timeoutMs: 20000 });
        clear(accounts);
        const order = res.channelOrder || [];
        note.textContent = order.length ? "" : "No channel accounts are configured.";
        for (const ch of order) {
          for (const a of (res.channelAccounts || {})[ch] || []) {
            const pr = a.probe;
            accounts.append(h("tr", { dataset: { channel: ch, account: a.accountId } },
              h("td", { text: (res.channelLabels || {})[ch] || ch }),
              h("td", { text: a.accountId }),
              h("td", {}, yesNo(a.enabled !== false, "yes", "no")),
              h("td", {}, yesNo(a.configured !== false, "yes", "no")),
              h("td", {}, yesNo(a.running, "running", "stopped")),
              h("td", {}, yesNo(a.connected, "connected", "disconnected")),
              h("td", { class: "error-cell", text: a.lastError || "" }),
              h("td", { class: "probe" }, pr ? yesNo(pr.ok, "works", `failed${pr.error ? `: ${pr.error}` : ""}`) : "–")));
          }
        }
      } catch (err) {
        note.textContent = `channels.status failed: ${OCS.dom.errorText(err)}`;
      } finally {
        probe.disabled = false;
      }
    }

    async function decide(req, method, button) {
      button.disabled = true;
      const params = { channel: req.channel, accountId: req.accountId, requestId: req.requestId };
      if (method === "channels.pairing.approve") params.notify = notify.checked;
      try {
        const res = await ctx.gw.request(method, params);
        const verb = method.endsWith("approve") ? "approved" : "dismissed";
        ctx.toast(`${req.channel} sender ${res.senderId} ${verb}`
          + (res.notification && res.notification !== "not-requested" ? ` (notification ${res.notification})` : ""));
      } catch (err) {
        ctx.toast(OCS.dom.errorText(err), "error");
      }
      loadPairing();
    }

    async function loadPairing() {
      try {
        const res = await ctx.gw.request("channels.pairing.list", {});
        clear(requests);
        const list = res.requests || [];
        pairingNote.textContent = list.length ? ""
          : `No pending requests${(res.accounts || []).length ? "" : " (no account uses dmPolicy \"pairing\")"}.`;
        for (const r of list) {
          const approve = h("button", { type: "button", class: "small primary act-approve", text: "Approve" });
          const dismiss = h("button", { type: "button", class: "small act-dismiss", text: "Dismiss" });
          approve.addEventListener("click", () => decide(r, "channels.pairing.approve", approve));
          dismiss.addEventListener("click", () => decide(r, "channels.pairing.dismiss", dismiss));
          requests.append(h("tr", { dataset: { sender: r.senderId, requestId: r.requestId } },
            h("td", { text: r.channelLabel || r.channel }), h("td", { text: r.accountId }),
            h("td", { class: "name" }, r.senderId, r.metadata && r.metadata.name && r.metadata.name !== r.senderId
              ? h("span", { class: "muted", text: ` (${r.metadata.name})` }) : null,
            r.metadata && r.metadata.code ? h("span", { class: "muted", text: ` code ${r.metadata.code}` }) : null),
            h("td", { text: fmtRelative(Date.parse(r.createdAt)) }),
            h("td", { text: fmtRelative(Date.parse(r.expiresAt)) }),
            h("td", { class: "actions" }, approve, dismiss)));
        }
      } catch (err) {
        pairingNote.textContent = `channels.pairing.list failed: ${OCS.dom.errorText(err)}`;
      }
    }

    probe.addEventListener("click", () => loadStatus(true));
    return {
      el,
      onConnected() {
        loadStatus(false);
        loadPairing();
        clearInterval(timer);
        timer = setInterval(() => { loadStatus(false); loadPairing(); }, REFRESH_MS);
      },
      onDisconnected() { clearInterval(timer); },
      onEvent(name, payload) {
        if (name !== "health" || !payload || !Array.isArray(payload.workers)) return;
        const states = payload.workers.filter((w) => String(w.kind).startsWith("channel."))
          .map((w) => `${w.name}=${w.state}`).join(",");
        if (states !== lastStates) {
          lastStates = states;
          loadStatus(false);
        }
      },
      destroy() { clearInterval(timer); },
    };
  }

  OCS.views.channels = { title: "Channels", create };
})();
