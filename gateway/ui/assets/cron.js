// Cron: the scheduler's jobs with their next run and last status; run now, enable/disable, run history.
(function () {
  "use strict";
  const OCS = window.OCS;
  const { h, clear, fmtTime, fmtRelative } = OCS.dom;

  function schedule(job) {
    const s = job.schedule || {};
    if (s.kind === "cron") return `cron ${s.expr}${s.tz ? ` (${s.tz})` : ""}`;
    if (s.kind === "every") return `every ${Math.round((s.everyMs || 0) / 1000)}s`;
    if (s.kind === "at") return `at ${s.at || fmtTime(s.atMs)}`;
    return JSON.stringify(s);
  }

  function create(ctx) {
    const status = h("p", { class: "muted", id: "cron-status" });
    const body = h("tbody");
    const el = h("div", { class: "view view-cron" }, h("h2", { text: "Cron" }), status,
      h("div", { class: "scroll" }, h("table", { class: "grid", id: "cron-table" },
        h("thead", {}, h("tr", {}, ["Job", "Schedule", "Enabled", "Next run", "Last run", "Last status", ""].map(
          (t) => h("th", { text: t })))), body)));
    const open = new Set();
    let refresh = null;

    async function call(method, params, done) {
      try {
        const res = await ctx.gw.request(method, params);
        if (done) ctx.toast(done(res));
      } catch (err) {
        ctx.toast(OCS.dom.errorText(err), "error");
      }
      load();
    }

    async function history(job, cell) {
      clear(cell).append(h("span", { class: "muted", text: "loading…" }));
      try {
        const res = await ctx.gw.request("cron.runs", { id: job.id, limit: 20, sortDir: "desc" });
        const entries = res.entries || [];
        clear(cell).append(entries.length ? h("table", { class: "grid inner" },
          h("thead", {}, h("tr", {}, ["Started", "Status", "Duration", "Summary / error"].map((t) => h("th", { text: t })))),
          h("tbody", {}, entries.map((r) => h("tr", {},
            h("td", { text: fmtTime(r.runAtMs) }),
            h("td", {}, h("span", { class: `badge badge-${r.status}`, text: r.status })),
            h("td", { text: typeof r.durationMs === "number" ? `${r.durationMs} ms` : "–" }),
            h("td", { class: r.error ? "error-cell" : "", text: r.error || r.summary || "" })))))
          : h("span", { class: "muted", text: "No runs yet." }));
      } catch (err) {
        clear(cell).append(h("span", { class: "error", text: OCS.dom.errorText(err) }));
      }
    }

    async function load() {
      try {
        const [st, list] = await Promise.all([ctx.gw.request("cron.status", {}),
          ctx.gw.request("cron.list", { limit: 200, enabled: "all" })]);
        status.textContent = `${st.enabled === false ? "Scheduler disabled (jobs run only when asked)" : "Scheduler on"}`
          + ` · ${st.jobs ?? (list.jobs || []).length} jobs`
          + (st.nextWakeAtMs ? ` · next wake ${fmtRelative(st.nextWakeAtMs)}` : "");
        clear(body);
        for (const job of list.jobs || []) {
          const state = job.state || {};
          const enabled = job.enabled !== false;
          const historyCell = h("td", { colspan: 7 });
          const toggle = () => { if (open.has(job.id)) open.delete(job.id); else open.add(job.id); load(); };
          body.append(h("tr", { dataset: { job: job.id }, class: enabled ? "" : "disabled" },
            h("td", { class: "name", text: job.displayName || job.name || job.id }),
            h("td", { text: schedule(job) }),
            h("td", { text: enabled ? "yes" : "no" }),
            h("td", { text: job.nextRunAtMs ? `${fmtTime(job.nextRunAtMs)} (${fmtRelative(job.nextRunAtMs)})` : "–" }),
            h("td", { text: state.lastRunAtMs ? fmtRelative(state.lastRunAtMs) : "never" }),
            h("td", {}, state.lastRunStatus ? h("span", { class: `badge badge-${state.lastRunStatus}`,
              text: state.lastRunStatus }) : "–", state.lastError ? h("div", { class: "error-cell", text: state.lastError }) : null),
            h("td", { class: "actions" },
              h("button", { type: "button", class: "small act-run", text: "Run now",
                onclick: () => call("cron.run", { id: job.id, mode: "force" },
                  (r) => (r.enqueued ? `${job.name}: run started` : `${job.name}: not run (${r.reason})`)) }),
              h("button", { type: "button", class: "small act-toggle", text: enabled ? "Disable" : "Enable",
                onclick: () => call("cron.update", { id: job.id, patch: { enabled: !enabled } },
                  () => `${job.name}: ${enabled ? "disabled" : "enabled"}`) }),
              h("button", { type: "button", class: "small act-history", text: open.has(job.id) ? "Hide runs" : "Runs",
                onclick: toggle }))));
          if (open.has(job.id)) {
            body.append(h("tr", { class: "history-row" }, historyCell));
            history(job, historyCell);
          }
        }
        if (!(list.jobs || []).length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No jobs." })));
      } catch (err) {
        status.textContent = `Cannot read cron jobs: ${OCS.dom.errorText(err)}`;
      }
    }

    return {
      el,
      onConnected: load,
      onEvent(name) {
        if (name !== "cron") return;
        clearTimeout(refresh);
        refresh = setTimeout(load, 300);
      },
      destroy() { clearTimeout(refresh); },
    };
  }

  OCS.views.cron = { title: "Cron", create };
})();
