// Overview page: totals, routing split over time, spend vs a reference LLM, fallback/error rates, added latency.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  RR.nav("overview");
  const reference = document.getElementById("reference");

  async function load() {
    const p = RR.params();
    const q = new URLSearchParams({range: p.get("range") || "24h"});
    if (p.get("reference")) q.set("reference", p.get("reference"));
    const data = await RR.getJSON(`/dashboard/api/overview?${q}`);
    const t = data.totals, w = data.window, ref = data.reference;

    reference.replaceChildren(...ref.pool.map((name) => RR.el("option", {value: name, text: name})));
    reference.value = ref.llm;
    document.getElementById("window").textContent =
      `${RR.when(w.since)} → ${RR.when(w.until)}, buckets of ${w.bucket_s >= 3600 ? w.bucket_s / 3600 + " h" : w.bucket_s / 60 + " min"}; reference: ${ref.llm} (${ref.why})`;

    document.getElementById("cards").replaceChildren(
      RR.card("Requests", RR.num(t.requests), `${RR.num(t.routed)} routed, ${RR.num(t.route_only)} decisions only`),
      RR.card("Spend", RR.usd(t.cost_usd), `router's estimate ${RR.usd(t.expected_cost_usd)}`),
      RR.card(`Always ${ref.llm}`, RR.usd(t.reference_cost_usd), "same tokens, its prices"),
      RR.card("Savings", RR.usd(t.savings_usd), t.savings_pct == null ? "" : `${t.savings_pct.toFixed(1)} % less`),
      RR.card("Fallback rate", RR.pct(t.fallback_rate), `${RR.num(t.fallbacks)} requests`),
      RR.card("Error rate", RR.pct(t.error_rate), `${RR.num(t.upstream_failed)} upstream failures`),
      RR.card("Added latency", RR.ms(t.mean_overhead_ms), `mean; max ${RR.ms(t.max_overhead_ms)}`),
      RR.card("End-to-end latency", RR.ms(t.mean_latency_ms), "mean"),
    );

    const labels = data.buckets.map((b) => RR.when(b, w.bucket_s));
    RR.chart("chart-split", "bar", labels,
      Object.entries(data.series.requests_per_llm).map(([llm, values]) => ({label: llm, data: values})),
      {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true}}});
    RR.chart("chart-spend", "line", labels, [
      {label: "actual spend (USD)", data: data.series.cumulative_cost_usd},
      {label: `always ${ref.llm} (USD)`, data: data.series.cumulative_reference_cost_usd, borderDash: [6, 4]},
    ], {scales: {y: {beginAtZero: true}}});
    const asPct = (xs) => xs.map((v) => v == null ? null : 100 * v);
    RR.chart("chart-rates", "line", labels, [
      {label: "fallback rate (%)", data: asPct(data.series.fallback_rate), spanGaps: true},
      {label: "error rate (%)", data: asPct(data.series.error_rate), spanGaps: true},
    ], {scales: {y: {beginAtZero: true}}});
    RR.chart("chart-latency", "line", labels, [
      {label: "mean added latency (ms)", data: data.series.mean_overhead_ms, spanGaps: true},
      {label: "max added latency (ms)", data: data.series.max_overhead_ms, spanGaps: true},
    ], {scales: {y: {beginAtZero: true}}});

    const table = document.getElementById("per-llm");
    table.replaceChildren(RR.el("tr", {}, ...["LLM", "requests", "share", "spend", "fallbacks", "errors"].map(
      (h, i) => RR.el("th", {class: i ? "num" : "", text: h}))));
    for (const row of data.per_llm) {
      table.append(RR.el("tr", {},
        RR.el("td", {text: row.llm}), RR.el("td", {class: "num", text: RR.num(row.requests)}),
        RR.el("td", {class: "num", text: RR.pct(row.share)}), RR.el("td", {class: "num", text: RR.usd(row.cost_usd)}),
        RR.el("td", {class: "num", text: RR.num(row.fallbacks)}), RR.el("td", {class: "num", text: RR.num(row.errors)})));
    }
  }

  RR.rangeSelect("range", "24h", () => RR.run(load));
  reference.addEventListener("change", () => {
    const p = RR.params(); p.set("reference", reference.value);
    history.replaceState(null, "", `?${p}`);
    RR.run(load);
  });
  RR.run(load);
});
