// Config: the running config as `config.get` shows it (secrets redacted by the gateway), and the last reload:
// its trigger outcome and plan (which workers were started, stopped, respawned, kept).
(function () {
  "use strict";
  const OCS = window.OCS;
  const { h, clear, fmtTime, fmtRelative } = OCS.dom;

  function create(ctx) {
    const meta = h("p", { class: "muted", id: "config-meta" });
    const reload = h("div", { class: "card", id: "config-reload" });
    const pre = h("pre", { class: "config", id: "config-json" });
    const el = h("div", { class: "view view-config" }, h("h2", { text: "Config" }), meta,
      h("h3", { text: "Last reload" }), reload, h("h3", { text: "Running config (redacted)" }), pre);
    let refresh = null;

    function names(list) {
      return list && list.length ? list.join(", ") : "none";
    }

    async function load() {
      try {
        const [cfg, health] = await Promise.all([ctx.gw.request("config.get", {}), ctx.gw.request("health", {})]);
        meta.textContent = `${cfg.path} · ${cfg.hash}`;
        pre.textContent = JSON.stringify(cfg.config, null, 2);
        const r = health.configReload || {};
        const plan = r.plan || null;
        clear(reload).append(
          h("dl", { class: "facts" },
            h("dt", { text: "Reload mode" }), h("dd", { text: r.mode || "hybrid" }),
            h("dt", { text: "Watcher" }), h("dd", { text: r.hotReloadStatus || "–" }),
            h("dt", { text: "Last reload" }), h("dd", { text: r.lastReloadAt
              ? `${fmtTime(r.lastReloadAt)} (${fmtRelative(r.lastReloadAt)})${r.trigger ? ` · ${r.trigger}` : ""}` : "none since start" }),
            h("dt", { text: "Outcome" }), h("dd", { id: "reload-outcome", class: r.lastError ? "error-cell" : "",
              text: r.lastError ? `skipped: ${r.lastError}` : (r.lastOutcome || "–") }),
            plan ? [
              h("dt", { text: "Respawned" }), h("dd", { id: "plan-respawn", text: names(plan.respawn) }),
              h("dt", { text: "Started" }), h("dd", { text: names(plan.start) }),
              h("dt", { text: "Stopped" }), h("dd", { text: names(plan.stop) }),
              h("dt", { text: "Kept (same pid)" }), h("dd", { id: "plan-keep", text: names(plan.keep) }),
              h("dt", { text: "Changed paths" }), h("dd", { text: names(plan.paths) }),
            ] : null,
            r.restartRequired ? [h("dt", { text: "Restart required for" }),
              h("dd", { class: "error-cell", text: names(r.restartRequired) })] : null));
      } catch (err) {
        meta.textContent = `Cannot read the config: ${OCS.dom.errorText(err)}`;
      }
    }

    return {
      el,
      onConnected: load,
      onEvent(name) {
        if (name !== "config.changed") return;
        clearTimeout(refresh);
        refresh = setTimeout(load, 200);
      },
      destroy() { clearTimeout(refresh); },
    };
  }

  OCS.views.config = { title: "Config", create };
})();
