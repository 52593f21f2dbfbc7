// Router page: which router serves (version, training data, test figures), the pool, and per-version and feedback
// figures when the ledger records them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  RR.nav("router");

  function kvTable(id, pairs) {
    document.getElementById(id).replaceChildren(...pairs.map(([k, v]) =>
      RR.el("tr", {}, RR.el("th", {text: k}), RR.el("td", {text: v == null ? "–" : String(v)}))));
  }

  function rows(id, heads, items) {
    const table = document.getElementById(id);
    table.replaceChildren(RR.el("tr", {}, ...heads.map((h) => RR.el("th", {text: h}))));
    items.forEach((cells) => table.append(RR.el("tr", {}, ...cells.map((c) => RR.el("td", {text: c == null ? "–" : String(c)})))));
  }

  async function load() {
    const range = RR.params().get("range") || "30d";
    const [data, fb] = await Promise.all([RR.getJSON(`/dashboard/api/router?range=${range}`),
                                          RR.getJSON(`/dashboard/api/feedback?range=${range}`)]);
    const f = fb.feedback;
    const rated = new Map((f ? f.per_version : []).map((x) => [x.version, x]));
    const r = data.router, t = r.training || {};
    kvTable("router", [["name", r.name], ["class", r.class], ["version", r.version], ["directory", r.path + (r.embedded ? " (embedded)" : "")],
      ["alias", data.alias], ["default trade-off", `${data.default_tradeoff} (λ=${data.tradeoffs[data.default_tradeoff]})`],
      ["trade-offs", Object.entries(data.tradeoffs).map(([k, v]) => `${k}=${v}`).join(", ")],
      ["encoder", r.encoder ? (r.encoder.name || r.encoder.model || JSON.stringify(r.encoder).slice(0, 80)) : "none"],
      ["LLMs it ranks", r.llms.length]]);
    const test = t.test ? Object.entries(t.test).map(([lam, m]) => `λ=${lam}: Score ${RR.fixed(m.score, 3)}`).join("; ") : null;
    kvTable("training", [["data", t.data || t.data_source], ["fingerprint", t.data_fingerprint], ["split", t.split],
      ["training / validation queries", t.n_train != null ? `${t.n_train} / ${t.n_val}` : null],
      ["λ-conditioned", t.lam_conditioned], ["recipe", t.recipe], ["test", test]]);

    const pool = data.pool;
    RR.chart("chart-prices", "bar", pool.map((l) => l.name), [
      {label: "input price", data: pool.map((l) => l.input_price)},
      {label: "output price", data: pool.map((l) => l.output_price)},
    ], {scales: {y: {beginAtZero: true}}});
    rows("pool", ["name", "router's name", "upstream model", "input", "output", "context", "capabilities", "routed"],
      pool.map((l) => [l.name, l.router_llm, l.upstream_model, l.input_price, l.output_price, RR.num(l.context_window),
                       l.capabilities.join(", ") || "–", l.routable ? "yes" : "no (direct calls only)"]));

    const v = data.versions;
    document.getElementById("versions-chart").classList.toggle("hidden", !v);
    document.getElementById("versions-note").textContent = v ? "" :
      "This ledger records no router version yet; per-version figures appear once it does.";
    if (v) {
      const withFeedback = Boolean(f);
      const datasets = [{label: "requests", data: v.map((x) => x.requests), yAxisID: "y"}];
      if (withFeedback) datasets.push({label: "mean feedback score", data: v.map((x) => (rated.get(x.version) || {}).mean_score ?? null),
                                       yAxisID: "y1", type: "line", pointRadius: 4});
      RR.chart("chart-versions", "bar", v.map((x) => x.version ?? "(none)"), datasets,
        {scales: {y: {beginAtZero: true}, y1: {display: withFeedback, position: "right", min: 0, max: 1}}});
      rows("versions", ["version", "requests", "spend", "errors", "first", "last", "feedback (n, mean)"],
        v.map((x) => [x.version ?? "(none)", RR.num(x.requests), RR.usd(x.cost_usd), RR.num(x.errors), RR.when(x.first_ts),
                      RR.when(x.last_ts), rated.has(x.version) ? `${RR.num(rated.get(x.version).n)}, ${RR.fixed(rated.get(x.version).mean_score, 3)}` : "–"]));
    } else {
      document.getElementById("versions").replaceChildren();
    }
    document.getElementById("feedback-note").textContent = f ? "" : "No feedback table in this ledger.";
    if (f) rows("feedback", ["LLM", "ratings", "mean score"], f.per_llm.map((x) => [x.llm, RR.num(x.n), RR.fixed(x.mean_score, 3)]));
    else document.getElementById("feedback").replaceChildren();
  }

  RR.rangeSelect("range", "30d", () => RR.run(load));
  RR.run(load);
});
