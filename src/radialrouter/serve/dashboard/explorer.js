// Decision explorer: filter the ledger page by page (keyset cursor), or look up one request id and see why it went
// where it did: λ, ranking with scores and probabilities, expected vs actual cost, attempts, feedback.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  RR.nav("explorer");
  const form = document.getElementById("filters");
  const fields = ["request_id", "client", "llm", "mode", "status", "fallback"];
  let next = null, shown = 0;

  function query() {
    const q = new URLSearchParams({limit: "50"});
    for (const name of fields) {
      const v = document.getElementById(name).value.trim();
      if (v) q.set(name, v);
    }
    return q;
  }

  function row(r) {
    const tr = RR.el("tr", {class: "clickable", "data-request-id": r.request_id, onclick: () => RR.run(() => detail(r.request_id))},
      RR.el("td", {class: "mono", text: r.request_id}), RR.el("td", {text: RR.when(r.ts)}), RR.el("td", {text: r.client}),
      RR.el("td", {text: r.model || ""}), RR.el("td", {text: r.mode || "direct"}),
      RR.el("td", {class: "num", text: RR.fixed(r.lam, 3)}), RR.el("td", {text: r.llm || "–"}),
      RR.el("td", {class: r.status === "ok" ? "" : "bad", text: r.status + (r.fallback ? " (fallback)" : "")}),
      RR.el("td", {class: "num", text: RR.usd(r.expected_cost_usd)}), RR.el("td", {class: "num", text: RR.usd(r.cost_usd)}),
      RR.el("td", {class: "num", text: RR.ms(r.latency_ms)}));
    return tr;
  }

  async function search(more) {
    const q = query();
    if (more && next) q.set("before", next);
    const data = await RR.getJSON(`/dashboard/api/requests?${q}`);
    const table = document.getElementById("rows");
    if (!more) {
      shown = 0;
      table.replaceChildren(RR.el("tr", {}, ...["request id", "time", "client", "model", "trade-off", "λ", "LLM",
        "status", "expected", "cost", "latency"].map((h) => RR.el("th", {text: h}))));
    }
    data.rows.forEach((r) => table.append(row(r)));
    shown += data.rows.length;
    next = data.next;
    document.getElementById("older").classList.toggle("hidden", !next);
    document.getElementById("count").textContent = `(${shown} shown${next ? ", more older" : ""})`;
    if (q.get("request_id")) {
      if (data.rows.length) await detail(data.rows[0].request_id);
      else throw new Error(`No request ${q.get("request_id")} in the decision log`);
    }
  }

  async function detail(id) {
    const d = await RR.getJSON(`/dashboard/api/requests/${encodeURIComponent(id)}`);
    document.querySelectorAll("tr.selected").forEach((tr) => tr.classList.remove("selected"));
    document.querySelectorAll(`tr[data-request-id="${CSS.escape(id)}"]`).forEach((tr) => tr.classList.add("selected"));
    document.getElementById("detail").classList.remove("hidden");
    document.getElementById("detail-title").textContent = `Request ${d.request_id}`;
    const kv = [
      ["time", RR.when(d.ts)], ["client", d.client], ["model asked", d.model], ["trade-off", d.mode || "direct (no routing)"],
      ["λ", RR.fixed(d.lam, 4)], ["answered by", d.llm || "–"], ["status", d.status], ["fallback", d.fallback ? "yes" : "no"],
      ["stream", d.stream ? "yes" : "no"], ["tokens (prompt / completion)", `${RR.num(d.prompt_tokens)} / ${RR.num(d.completion_tokens)}`],
      ["expected cost (router)", RR.usd(d.expected_cost_usd)], ["actual cost", `${RR.usd(d.cost_usd)}${d.cost_source ? ` (${d.cost_source})` : ""}`],
      ["always " + (d.reference ? d.reference.llm : "reference"), d.reference ? RR.usd(d.reference.cost_usd) : "–"],
      ["latency", RR.ms(d.latency_ms)], ["added latency", RR.ms(d.overhead_ms)],
    ];
    for (const key of ["router_version", "propensity"]) if (d[key] != null) kv.push([key.replace("_", " "), String(d[key])]);
    document.getElementById("detail-kv").replaceChildren(...kv.map(([k, v]) =>
      RR.el("tr", {}, RR.el("th", {text: k}), RR.el("td", {text: v ?? "–"}))));

    const ranking = Array.isArray(d.ranking) ? d.ranking : [];
    const scores = d.scores || {}, probs = d.probabilities;
    const datasets = [{label: "score", data: ranking.map((l) => scores[l] ?? null)}];
    if (probs) datasets.push({label: "probability", data: ranking.map((l) => probs[l] ?? null)});
    RR.chart("chart-ranking", "bar", ranking, datasets, {indexAxis: "y"});
    const rt = document.getElementById("detail-ranking");
    rt.replaceChildren(RR.el("tr", {}, ...["#", "LLM", "score", "probability"].map((h) => RR.el("th", {text: h}))));
    ranking.forEach((l, i) => rt.append(RR.el("tr", {}, RR.el("td", {text: i + 1}),
      RR.el("td", {text: l + (l === d.llm ? " ← answered" : "")}), RR.el("td", {class: "num", text: RR.fixed(scores[l], 4)}),
      RR.el("td", {class: "num", text: probs ? RR.fixed(probs[l], 4) : "–"}))));

    const at = document.getElementById("detail-attempts");
    const attempts = Array.isArray(d.attempts) ? d.attempts : [];
    at.replaceChildren(RR.el("tr", {}, ...["#", "LLM", "failed with"].map((h) => RR.el("th", {text: h}))));
    attempts.forEach((a, i) => at.append(RR.el("tr", {}, RR.el("td", {text: i + 1}), RR.el("td", {text: a.llm}),
      RR.el("td", {class: "bad", text: a.error}))));
    if (!attempts.length) at.append(RR.el("tr", {}, RR.el("td", {colspan: "3", class: "muted", text: "first choice answered (no failed attempt)"})));

    const fb = document.getElementById("detail-feedback");
    fb.replaceChildren();
    if (Array.isArray(d.feedback)) {
      fb.append(RR.el("h2", {text: "Feedback"}));
      if (!d.feedback.length) fb.append(RR.el("p", {class: "muted", text: "none for this request"}));
      d.feedback.forEach((f) => fb.append(RR.el("p", {text: `score ${RR.fixed(f.score, 2)}${f.comment ? ` — ${f.comment}` : ""}`})));
    }
  }

  async function loadValues() {
    const values = await RR.getJSON("/dashboard/api/values");
    for (const name of ["client", "llm", "mode", "status"]) {
      const select = document.getElementById(name);
      for (const v of values[name]) select.append(RR.el("option", {value: v, text: v}));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of query()) if (k !== "limit") p.set(k, v);
    history.replaceState(null, "", `?${p}`);
    RR.run(() => search(false));
  });
  document.getElementById("older").addEventListener("click", () => RR.run(() => search(true)));

  RR.run(async () => {
    await loadValues();
    const p = RR.params();
    for (const name of fields) if (p.get(name)) document.getElementById(name).value = p.get(name);
    await search(false);
  });
});
