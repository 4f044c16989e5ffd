// Small DOM and formatting helpers shared by every view (no framework, no inline code: the CSP forbids it).
(function () {
  "use strict";
  const OCS = (window.OCS = window.OCS || { views: {} });

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key === "value") el.value = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function fmtBytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
  }

  function fmtDuration(seconds) {
    if (typeof seconds !== "number") return "–";
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function fmtTime(ms) {
    if (typeof ms !== "number") return "–";
    const d = new Date(ms);
    const sameDay = d.toDateString() === new Date().toDateString();
    return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function fmtRelative(ms) {
    if (typeof ms !== "number") return "–";
    const delta = (ms - Date.now()) / 1000;
    const text = fmtDuration(Math.abs(delta));
    return delta >= 0 ? `in ${text}` : `${text} ago`;
  }

  const SVG = "http://www.w3.org/2000/svg";

  // A polyline of the last values; `max` fixes the scale (e.g. 100 for CPU %), else the series' own maximum.
  function sparkline(values, { width = 120, height = 24, max, label } = {}) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("class", "spark");
    if (label) svg.setAttribute("aria-label", label);
    const points = values.filter((v) => typeof v === "number");
    if (points.length < 2) return svg;
    const top = max || Math.max(...points) || 1;
    const step = width / (values.length - 1);
    const coords = [];
    values.forEach((v, i) => {
      if (typeof v !== "number") return;
      const y = height - 1 - (Math.min(v, top) / top) * (height - 2);
      coords.push(`${(i * step).toFixed(1)},${y.toFixed(1)}`);
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", coords.join(" "));
    svg.append(line);
    return svg;
  }

  function newId() {
    return crypto.randomUUID ? crypto.randomUUID()
      : `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;
  }

  function errorText(err) {
    if (!err) return "unknown error";
    if (err.code && err.message) return `${err.code}: ${err.message}`;
    return err.message || String(err);
  }

  OCS.dom = { h, append, clear, fmtBytes, fmtDuration, fmtTime, fmtRelative, sparkline, newId, errorText };
})();
