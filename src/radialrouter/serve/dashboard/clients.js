// Clients page: per key, spend against budget (live) and the trade-offs and LLMs it used in the window.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  RR.nav("clients");

  async function load() {
    const data = await RR.getJSON(`/dashboard/api/clients?range=${RR.params().get("range") || "24h"}`);
    const clients = data.clients, names = clients.map((c) => c.client);
    RR.chart("chart-budget", "bar", names, [
      {label: "spent", data: clients.map((c) => c.spent_usd)},
      {label: "reserved (in flight)", data: clients.map((c) => c.reserved_usd)},
      {label: "budget left", data: clients.map((c) => c.budget_usd == null ? null :
        Math.max(0, c.budget_usd - c.spent_usd - c.reserved_usd)), color: "#adb5bd"},
    ], {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true}}});
    RR.chart("chart-modes", "bar", names, data.modes.map((mode) => ({
      label: mode === "direct" ? "direct (no routing)" : `${mode}${data.tradeoffs[mode] != null ?
        ` (λ=${data.tradeoffs[mode]})` : ""}`,
      data: clients.map((c) => (c.modes[mode] || {}).requests || 0),
    })), {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true}}});

    const table = document.getElementById("clients");
    const heads = ["client", "budget used", "spent", "budget", "requests", "spend (window)", "errors", "trade-offs",
                   "LLMs"];
    table.replaceChildren(RR.el("tr", {}, ...heads.map((h) => RR.el("th", {text: h}))));
    for (const c of clients) {
      const used = c.budget_used;
      const bar = RR.el("div", {class: "bar"}, RR.el("span", {class: used != null && used >= 0.9 ? "over" : ""}));
      bar.firstChild.style.width = `${Math.min(100, 100 * (used || 0))}%`;
      const modes = Object.entries(c.modes).map(([m, v]) =>
        `${m} ${v.requests}${v.mean_lam != null ? ` (λ̄=${RR.fixed(v.mean_lam, 3)})` : ""}`).join(", ");
      const llms = Object.entries(c.llms).map(([l, n]) => `${l} ${n}`).join(", ");
      table.append(RR.el("tr", {},
        RR.el("td", {text: c.client + (c.configured ? "" : " (not in config)")}),
        RR.el("td", {}, used == null ? RR.el("span", {class: "muted", text: "no budget"}) :
          RR.el("div", {}, bar, RR.el("span", {class: used >= 0.9 ? "bad" : "muted", text: RR.pct(used)}))),
        RR.el("td", {class: "num", text: RR.usd(c.spent_usd)}), RR.el("td", {class: "num", text: RR.usd(c.budget_usd)}),
        RR.el("td", {class: "num", text: RR.num(c.requests)}),
        RR.el("td", {class: "num", text: RR.usd(c.window_cost_usd)}), RR.el("td", {class: "num", text: RR.num(c.errors)}),
        RR.el("td", {text: modes}), RR.el("td", {text: llms})));
    }
  }

  RR.rangeSelect("range", "24h", () => RR.run(load));
  RR.run(load);
});
