// Logs: a live tail of the gateway's JSONL log through `logs.tail` cursors (once a second, as `openclaw logs
// --follow`), filtered by worker, level and text; pausable; at most MAX_ROWS lines in the page.
(function () {
  "use strict";
  const OCS = window.OCS;
  const { h, clear } = OCS.dom;
  const MAX_ROWS = 1000;
  const POLL_MS = 1000;
  const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"];
  const rank = (level) => {
    const l = String(level || "info").toLowerCase().replace("warning", "warn").replace("critical", "fatal");
    const i = LEVELS.indexOf(l);
    return i < 0 ? 2 : i;
  };

  function parse(line) {
    try {
      const rec = JSON.parse(line);
      return { time: rec.time || "", level: String(rec.level || rec._meta?.logLevelName || "info").toLowerCase(),
        source: rec.worker || rec.subsystem || rec._meta?.name || "", message: String(rec.message ?? rec["0"] ?? line) };
    } catch (_) {
      return { time: "", level: "info", source: "", message: line };
    }
  }

  function create(ctx) {
    const list = h("div", { class: "log-lines", id: "log-lines", role: "log" });
    const source = h("select", { id: "log-source", "aria-label": "worker" }, h("option", { value: "", text: "all sources" }));
    const level = h("select", { id: "log-level", "aria-label": "minimum level" },
      LEVELS.map((l) => h("option", { value: l, text: `${l} and above`, selected: l === "info" })));
    const text = h("input", { id: "log-text", type: "search", placeholder: "filter text", "aria-label": "filter text" });
    const pause = h("button", { type: "button", id: "log-pause", text: "Pause" });
    const info = h("span", { class: "muted", id: "log-info" });
    const el = h("div", { class: "view view-logs" }, h("h2", { text: "Logs" }),
      h("div", { class: "toolbar" }, source, level, text, pause, info), list);

    let cursor = null;
    let paused = false;
    let timer = null;
    let busy = false;
    const sources = new Set();
    const records = [];

    function matches(rec) {
      if (source.value && rec.source !== source.value) return false;
      if (rank(rec.level) < rank(level.value)) return false;
      const q = text.value.trim().toLowerCase();
      return !q || rec.message.toLowerCase().includes(q) || rec.source.toLowerCase().includes(q);
    }

    function row(rec) {
      return h("div", { class: `log-line level-${rec.level}` },
        h("span", { class: "t", text: rec.time.replace("T", " ").slice(11, 23) }),
        h("span", { class: "lv", text: rec.level }),
        h("span", { class: "src", text: rec.source }),
        h("span", { class: "text", text: rec.message }));
    }

    function redraw() {
      clear(list);
      for (const rec of records) if (matches(rec)) list.append(row(rec));
      list.scrollTop = list.scrollHeight;
    }

    function add(lines) {
      const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
      for (const line of lines) {
        const rec = parse(line);
        records.push(rec);
        if (rec.source && !sources.has(rec.source)) {
          sources.add(rec.source);
          source.append(h("option", { value: rec.source, text: rec.source }));
        }
        if (matches(rec)) list.append(row(rec));
      }
      while (records.length > MAX_ROWS) records.shift();
      while (list.childElementCount > MAX_ROWS) list.firstElementChild.remove();
      if (stick) list.scrollTop = list.scrollHeight;
    }

    async function poll() {
      if (busy || paused || !ctx.connected) return;
      busy = true;
      try {
        const res = await ctx.gw.request("logs.tail", cursor === null ? { limit: 300 } : { cursor, limit: 500 });
        if (res.reset) { records.length = 0; clear(list); }
        cursor = res.cursor;
        add(res.lines || []);
        info.textContent = res.file ? `${res.file}` : "no log file";
      } catch (err) {
        info.textContent = `logs.tail failed: ${OCS.dom.errorText(err)}`;
      } finally {
        busy = false;
      }
    }

    for (const input of [source, level]) input.addEventListener("change", redraw);
    text.addEventListener("input", redraw);
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      pause.classList.toggle("active", paused);
      if (!paused) poll();
    });

    return {
      el,
      onConnected() {
        clearInterval(timer);
        poll();
        timer = setInterval(poll, POLL_MS);
      },
      onDisconnected() { clearInterval(timer); },
      destroy() { clearInterval(timer); },
    };
  }

  OCS.views.logs = { title: "Logs", create };
})();
