// Workers: the process table of `openclaw-sup status`, live from `workers` and `health` events (the gateway pushes
// once a second while this view is open), with 10-minute RSS/CPU sparklines and restart/stop/start.
(function () {
  "use strict";
  const OCS = window.OCS;
  const { h, clear, fmtBytes, fmtDuration, sparkline } = OCS.dom;
  const UNHEALTHY = new Set(["crashed", "backoff", "failed"]);

  function create(ctx) {
    const sup = h("section", { class: "card supervisor", id: "supervisor-line" });
    const body = h("tbody");
    const table = h("table", { class: "grid workers", id: "workers-table" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "PID", "State", "Uptime", "Restarts", "Last exit", "RSS",
        "CPU", "Heartbeat", "Last error", ""].map((t) => h("th", { text: t })))),
      body);
    const summary = h("p", { class: "muted", id: "workers-summary" });
    const el = h("div", { class: "view view-workers" }, h("h2", { text: "Workers" }), sup, summary,
      h("div", { class: "scroll" }, table));

    let rows = [];
    let supView = null;
    let receivedAt = 0;
    const history = new Map(); // name -> [[tsMs, rss, cpu]]
    let ticker = null;

    function remember(name, samples) {
      if (!Array.isArray(samples)) return;
      const known = history.get(name) || [];
      const last = known.length ? known[known.length - 1][0] : 0;
      for (const s of samples) if (Array.isArray(s) && s[0] > last) known.push(s);
      const cutoff = Date.now() - 10 * 60 * 1000;
      history.set(name, known.filter((s) => s[0] >= cutoff));
    }

    function apply(snapshot) {
      if (!snapshot) return;
      receivedAt = Date.now();
      if (snapshot.supervisor) {
        supView = snapshot.supervisor;
        remember("\u0000supervisor", supView.samples || (supView.sample ? [supView.sample] : []));
      }
      if (Array.isArray(snapshot.workers)) {
        rows = snapshot.workers;
        for (const w of rows) remember(w.name, w.samples || (w.sample ? [w.sample] : []));
      }
      draw();
    }

    function spark(name, index, max, label) {
      const series = (history.get(name) || []).map((s) => s[index]);
      return sparkline(series, { width: 90, height: 20, max, label });
    }

    function action(label, method, name) {
      return h("button", { type: "button", class: `small act-${label.toLowerCase()}`, text: label,
        dataset: { worker: name },
        onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            const res = await ctx.gw.request(method, { name }, { timeoutMs: 60000 });
            ctx.toast(`${name}: ${label.toLowerCase()} done (${res.state}${res.pid ? `, pid ${res.pid}` : ""})`);
          } catch (err) {
            ctx.toast(`${name}: ${OCS.dom.errorText(err)}`, "error");
          } finally {
            ev.target.disabled = false;
          }
        } });
    }

    function draw() {
      const age = (Date.now() - receivedAt) / 1000;
      if (supView) {
        clear(sup).append(
          h("strong", { text: "supervisor" }), " ",
          h("span", { class: "kv" }, `pid ${supView.pid}`), h("span", { class: "kv" }, `v${supView.version}`),
          h("span", { class: "kv" }, `profile ${supView.profile}`),
          h("span", { class: "kv" }, `up ${fmtDuration((supView.uptimeS || 0) + age)}`),
          h("span", { class: "kv" }, `RSS ${fmtBytes(supView.rss)}`), spark("\u0000supervisor", 1, 0, "supervisor RSS"),
          h("span", { class: "kv" }, `CPU ${typeof supView.cpuPct === "number" ? `${supView.cpuPct}%` : "–"}`), spark("\u0000supervisor", 2, 100, "supervisor CPU"),
          h("span", { class: "kv" }, supView.listen || ""),
          h("span", { class: "kv" }, `bus ${supView.busReceived ?? 0} in, ${supView.busDropped ?? 0} dropped`));
      }
      const counts = {};
      for (const w of rows) counts[w.state] = (counts[w.state] || 0) + 1;
      summary.textContent = `${rows.length} workers: ` + Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ");
      clear(body);
      for (const w of rows) {
        const bad = UNHEALTHY.has(w.state);
        const live = w.pid !== null && w.pid !== undefined;
        const hb = typeof w.heartbeatAgeS === "number" ? `${(w.heartbeatAgeS + (live ? age : 0)).toFixed(1)}s` : "–";
        const exit = w.lastExit ? w.lastExit.text || "" : "–";
        const buttons = [];
        if (w.state === "running" || w.state === "starting") buttons.push(action("Restart", "workers.restart", w.name));
        if (w.state === "running" || w.state === "starting" || bad) buttons.push(action("Stop", "workers.stop", w.name));
        if (w.state === "stopped" || w.state === "idle" || bad) buttons.push(action("Start", "workers.start", w.name));
        body.append(h("tr", { class: `worker state-${w.state}${bad ? " unhealthy" : ""}`, dataset: { worker: w.name } },
          h("td", { class: "name", text: w.name }),
          h("td", { text: w.kind }),
          h("td", { class: "pid", text: live ? String(w.pid) : "–" }),
          h("td", {}, h("span", { class: `badge badge-${w.state}`, text: w.state }),
            w.state === "idle" ? h("span", { class: "muted", text: " starts on first use" }) : null,
            w.retryInS ? h("span", { class: "muted", text: ` retry in ${Math.max(0, w.retryInS - age).toFixed(0)}s` }) : null),
          h("td", { text: live ? fmtDuration((w.uptimeS || 0) + age) : "–" }),
          h("td", { class: "restarts", text: String(w.restarts) }),
          h("td", { class: "exit", text: exit }),
          h("td", { class: "num" }, fmtBytes(w.rss), " ", spark(w.name, 1, 0, `${w.name} RSS`)),
          h("td", { class: "num" }, w.cpuPct === null || w.cpuPct === undefined ? "–" : `${w.cpuPct}%`, " ",
            spark(w.name, 2, 100, `${w.name} CPU`)),
          h("td", { class: "num", text: hb }),
          h("td", { class: "error-cell", text: w.lastError || "" }),
          h("td", { class: "actions" }, buttons)));
        if (bad && w.lastError) {
          body.append(h("tr", { class: "stderr-row" }, h("td", { colspan: 12 },
            h("span", { class: "muted", text: "last stderr: " }), h("code", { class: "stderr", text: w.lastError }))));
        }
      }
    }

    async function load() {
      try {
        apply(await ctx.gw.request("workers.list", { history: true }));
        await ctx.gw.request("workers.subscribe", {});
      } catch (err) {
        summary.textContent = `Cannot read the workers: ${OCS.dom.errorText(err)}`;
      }
    }

    return {
      el,
      onConnected() {
        load();
        clearInterval(ticker);
        ticker = setInterval(draw, 1000);
      },
      onDisconnected() { clearInterval(ticker); },
      onEvent(name, payload) {
        if (name === "workers") apply(payload);
        else if (name === "health" && payload && Array.isArray(payload.workers)) apply({ workers: payload.workers });
      },
      destroy() {
        clearInterval(ticker);
        if (ctx.connected) ctx.gw.request("workers.unsubscribe", {}).catch(() => {});
      },
    };
  }

  OCS.views.workers = { title: "Workers", create };
})();
