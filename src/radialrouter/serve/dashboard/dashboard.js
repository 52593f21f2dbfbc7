// Shared helpers for the dashboard pages: navigation, authenticated JSON fetches, formatting, and Chart.js set-up.
// Charts are drawn only by the vendored Chart.js (window.Chart); nothing here draws by hand.
"use strict";

const RR = (() => {
  const PAGES = [["overview", "Overview"], ["clients", "Clients"], ["explorer", "Decision explorer"],
                 ["router", "Router"]];
  const PALETTE = ["#3b5bdb", "#f08c00", "#2b8a3e", "#c2255c", "#7048e8", "#1098ad", "#e8590c", "#5c940d",
                   "#862e9c", "#495057", "#d6336c", "#0b7285"];
  const charts = {};

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function nav(active) {
    const header = el("header", {class: "nav"}, el("span", {class: "brand", text: "radialrouter"}));
    for (const [page, label] of PAGES) {
      header.append(el("a", {href: `/dashboard/${page}`, class: page === active ? "active" : "", text: label}));
    }
    const form = el("form", {method: "post", action: "/dashboard/logout"}, el("button", {type: "submit", text: "Log out"}));
    header.append(form);
    document.body.prepend(header);
  }

  function params() { return new URLSearchParams(window.location.search); }

  async function getJSON(path) {
    const response = await fetch(path, {credentials: "same-origin", headers: {accept: "application/json"}});
    if (response.status === 401) {
      window.location.href = `/dashboard/login?next=${encodeURIComponent(window.location.pathname)}`;
      throw new Error("not logged in");
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    return body;
  }

  function showError(err) {
    const box = document.getElementById("error");
    box.textContent = String(err.message || err);
    box.classList.remove("hidden");
  }

  // Run a page's loader; mark the body ready (tests and screenshots wait for it) whatever happens.
  async function run(loader) {
    try { await loader(); } catch (err) { showError(err); } finally { document.body.dataset.ready = "1"; }
  }

  const usd = (v) => v == null ? "–" : (Math.abs(v) >= 100 ? `$${v.toFixed(0)}` : Math.abs(v) >= 1 ?
    `$${v.toFixed(2)}` : `$${v.toPrecision(3)}`);
  const pct = (v) => v == null ? "–" : `${(100 * v).toFixed(1)} %`;
  const num = (v) => v == null ? "–" : Number(v).toLocaleString("en-US");
  const ms = (v) => v == null ? "–" : `${v.toFixed(v < 10 ? 2 : 0)} ms`;
  const fixed = (v, d = 3) => v == null ? "–" : Number(v).toFixed(d);

  function when(ts, bucket) {
    const d = new Date(ts * 1000);
    const two = (n) => String(n).padStart(2, "0");
    const day = `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`;
    if (bucket != null && bucket >= 86400) return day;
    return `${bucket == null ? day + " " : `${two(d.getMonth() + 1)}-${two(d.getDate())} `}${two(d.getHours())}:` +
      `${two(d.getMinutes())}${bucket == null ? ":" + two(d.getSeconds()) : ""}`;
  }

  // Per-point radii of a line series: lines carry no dots, except a value with no neighbour to draw a line to
  // (a single time bucket, as on a new deployment, or a value between gaps), which would otherwise show nothing.
  // With spanGaps the line bridges nulls, so only a value alone in the whole series is a dot.
  function pointRadii(data, spanGaps = false, radius = 3) {
    const ok = (v) => v != null && !Number.isNaN(v);
    const joined = (i, step) => {
      for (let j = i + step; j >= 0 && j < data.length; j += step) {
        if (ok(data[j])) return true;
        if (!spanGaps) return false;
      }
      return false;
    };
    return data.map((v, i) => ok(v) && !joined(i, -1) && !joined(i, 1) ? radius : 0);
  }

  // One Chart.js chart on <canvas id=...>, replacing any previous one there.
  function chart(id, type, labels, datasets, options = {}) {
    if (charts[id]) charts[id].destroy();
    const canvas = document.getElementById(id);
    datasets.forEach((ds, i) => {
      const color = ds.color || PALETTE[i % PALETTE.length];
      ds.borderColor = ds.borderColor || color;
      ds.backgroundColor = ds.backgroundColor || (type === "line" && !ds.fill ? color : color + "cc");
      ds.pointRadius = ds.pointRadius ?? ((ds.type || type) === "line" ? pointRadii(ds.data, ds.spanGaps) : 0);
      delete ds.color;
    });
    charts[id] = new Chart(canvas, {
      type, data: {labels, datasets},
      options: Object.assign({animation: false, responsive: true, maintainAspectRatio: false,
                              interaction: {mode: "index", intersect: false},
                              plugins: {legend: {position: "bottom", labels: {boxWidth: 12}}}}, options),
    });
    return charts[id];
  }

  function card(label, value, sub = "") {
    return el("div", {class: "card"}, el("div", {class: "label", text: label}), el("div", {class: "value", text: value}),
              el("div", {class: "sub", text: sub}));
  }

  // A <select> of time ranges bound to ?range=, reloading the page's data on change.
  function rangeSelect(id, fallback, onChange) {
    const select = document.getElementById(id);
    select.value = params().get("range") || fallback;
    select.addEventListener("change", () => {
      const p = params(); p.set("range", select.value);
      history.replaceState(null, "", `?${p}`);
      onChange();
    });
    return select;
  }

  return {el, nav, params, getJSON, run, showError, usd, pct, num, ms, fixed, when, chart, pointRadii, card,
          rangeSelect, charts, PALETTE};
})();
