"""Which serving settings should `bandit_replay.py` default to? Chosen on a separate validation data set,
llmrouter9, by the Score served while learning — the criterion of the served-Score target — never on
routerbench3's traffic or test split.

    python benchmarks/bandit_serve_select.py [--seeds 0,1,2,3,4] [--protocol llmrouter9|stream]

Validation protocol ``llmrouter9`` (the default): per seed, each candidate runs the replay's protocol
(`bandit_replay.run_replay`, the candidate's options) with llmrouter9's training split as the traffic — 9 other
LLMs, 14 other tasks, never read by the replay — exactly as `bandit_replay.py` replays a data set other than
routerbench3: `traffic_order` on llmrouter9's 5,608 training queries (the first 2,000 of the seed's shuffle are the
traffic, the next 200 the warm-start queries), and, since no shipped router knows llmrouter9's pool, the frozen
router that serves the first 500 queries is the learner trained on those 200 warm-start queries (as for
mmlupro29). llmrouter9 logs quality only: its costs are estimates (`bandit_replay.PRICED`: list prices from
prices.json × prompt tokens counted with the bundled MiniLM WordPiece tokenizer + 256 output tokens per query).
Two numbers per candidate, mean ± s.e. over seeds: (i) the true Score (λ = 0.02) of what it served on the 2,000
llmrouter9 traffic queries — the rule's served criterion — and (ii) the bandit-fed learner's final Score (after
2,000 logged queries) on llmrouter9's test split (500 queries) — the rule's guard (serving less exploratively can
starve the learner of labels, which the final-gap target measures). llmrouter9 is only validation here, so its
test split may be read. No routerbench3 query informs the choice: a setting that transfers from another data set
is the strict form of "chosen on validation data only". VW SquareCB's choice (b) in `bandit_vw.py` is made on the
very same llmrouter9 traffic (its settings route it from the first query).

Why this protocol: it replaced (after the traffic figures of the ridge server had been seen) the validation stream
``stream`` (`bandit_replay.validation_stream`: per seed, 2,000 draws with replacement from routerbench3's 200
warm-start queries, guard on those 200 queries). There each query recurs ~10×, which rewards memorising (every
candidate served 0.78-0.82 on it) and the guard was measured on 200 queries only. ``--protocol stream`` still runs
it (results: bandit_serve_select_stream.{json,md}, the choice it made: γ = 30·√t, prior 0, the learner serving).

Beside the validation figures, as a reference the rule never reads, the Score each candidate served on
routerbench3's traffic itself (all 2,000 queries, and 501-2,000).
Candidates: SquareCB's γ scale (γ = scale · √t) and the warm start from the frozen router (``--prior n0``: served
scores blend the frozen router's and the learner's, the learner's weight t / (t + n0), `bandit_replay.PriorBlend`;
0: the learner alone), and a warm start of the learner itself (``--impute-frozen``: the log's unrevealed quality
cells filled from the frozen router's implied quality differences to the called LLM), and serving by a per-LLM
ridge regression refitted every 100 or 250 logged queries (``--server ridge``: from query 100 or 250, or from query
500 as the learner, the frozen router before), the learner still trained on the log for the final gap; the
ridge's own settings (``alpha`` 10, ``pessimism`` 1, `bandit_replay.SERVE_RIDGE`) were chosen first by its
bandit-fed Score on routerbench3's validation queries (seeds 0-2, ridge serving itself every 100 at γ = 30·√t:
alpha 10 / 30 / 100 × pessimism 0 / 1 / 2 gave 0.710 / 0.735 / 0.720, 0.697 / 0.726 / 0.713, 0.706 / 0.702 /
0.689; alpha 0.1 and 1 without pessimism 0.700 and 0.709) and are kept. Rule (`bandit_explore_select.choose`,
unchanged): the best mean served Score among the candidates whose bandit-fed validation Score is within one
standard error of the best.
Writes benchmarks/results/bandit_serve_select.{json,md} (``--protocol stream``: bandit_serve_select_stream.*;
``--merge``: adds the candidates run to the rows already there for the same protocol; the header's time and load
averages are then those of the last run).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch

# The rule (bandit_explore_select's): the best served Score — here on the validation stream — among the candidates
# whose bandit-fed validation Score is within one s.e. of the best (serving must not cost the learning the
# final-gap target measures).
from bandit_explore_select import choose
from bandit_replay import (
    EXPLORING,
    LEARNER_NAME,
    RESULTS,
    VALIDATION,
    learner,
    load,
    replay_parser,
    run_replay,
    std_err,
    traffic_order,
    validation_traffic,
)
from bandit_replay import validation_stream as stream_rows

from radialrouter.routers.radial import load_default

#: name -> replay options of the candidate. Retraining stays every 500 (a cadence of 100 served about as well on
#: the routerbench3 validation stream (``--protocol stream``) in a first look, 0.8097 ± 0.0094 against
#: 0.8081 ± 0.0072 at γ = 30·√t, prior 0, but costs five times the retrains, which the 10,000-query learning
#: curve cannot afford here); ``--deploy ope`` served below
#: ``always`` on that stream at every setting tried in a first look (γ 3-100·√t, prior 0 or 1,000: 0.760-0.804
#: against 0.764-0.816), so it is not among the candidates.
CANDIDATES: dict[str, list[str]] = {
    f"squarecb γ = {g:g}·√t, prior {n:g}": ["--gamma-scale", str(g), "--prior", str(n)]
    for n in (0.0, 250.0, 1000.0, 4000.0) for g in (10.0, 30.0, 100.0, 300.0)
} | {f"squarecb γ = {g:g}·√t, learner warm-started from the shipped router's implied labels":
     ["--gamma-scale", str(g), "--impute-frozen"] for g in (10.0, 30.0, 100.0)} | {
    f"squarecb γ = {g:g}·√t, served by a ridge refitted every {k}": ["--gamma-scale", str(g), "--server", "ridge",
                                                                       "--serve-every", str(k), "--serve-from", str(k)]
    for k in (100, 250) for g in (10.0, 30.0, 100.0)} | {
    f"squarecb γ = {g:g}·√t, served by a ridge refitted every {k} from query 500": [
        "--gamma-scale", str(g), "--server", "ridge", "--serve-every", str(k), "--serve-from", "500"]
    for k in (100, 250) for g in (30.0, 100.0)}
for _options in CANDIDATES.values():  # the rows measured before the ridge server existed: the learner serves
    if "--server" not in _options:  # (explicit, as the replay's default is now the ridge chosen here)
        _options += ["--server", "learner"]


PROTOCOLS = {
    "llmrouter9": "per seed, the replay's protocol on llmrouter9's training split as traffic (2,000 queries, the "
                  "next 200 of the seed's shuffle the warm-start queries; the frozen router: the learner trained on "
                  "them); served: the true Score (λ = 0.02) served on that traffic; guard: the bandit-fed learner's "
                  "Score on llmrouter9's test split after 2,000 logged queries; llmrouter9's costs are estimates "
                  "(list prices from prices.json × prompt tokens counted with the bundled MiniLM WordPiece "
                  "tokenizer + 256 output tokens); the same traffic as VW's (b)",
    "stream": "per seed, 2,000 draws with replacement from routerbench3's 200 warm-start queries (full "
              "information, outside the traffic and the test split); guard: the bandit-fed learner trained on the "
              "candidate's log of the traffic, scored on those 200 queries",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default="llmrouter9",
                        help="validation: llmrouter9's traffic and test split (default), or the older routerbench3 "
                             "validation stream")
    parser.add_argument("--only", default="", help="candidate names separated by ; (default: all)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the routerbench3-traffic reference column (never read by the rule)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other candidates' rows of the existing results of the same protocol")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before, started = os.getloadavg(), time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    stream_protocol = args.protocol == "stream"
    out = RESULTS / ("bandit_serve_select_stream" if stream_protocol else "bandit_serve_select")
    embedded = load_default()  # the shipped RadialRouter, explicitly (the bandit replay's frozen router)
    train, _ = load("routerbench3", 0, embedded.get_encoder())
    v_train, v_test = (None, None) if stream_protocol else load(VALIDATION, 0, embedded.get_encoder())
    rows = []
    for name, options in CANDIDATES.items():
        if args.only and name not in args.only.split(";"):
            continue
        replay = replay_parser().parse_args(options)
        replay.boot = 0
        t0, served, served_after, deployed, val_bandit, frozen_served = time.perf_counter(), [], [], [], [], []
        traffic_served, traffic_after = [], []
        for seed in seeds:
            order, warm_rows = traffic_order(len(train), replay.traffic, replay.warm, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if stream_protocol:
                    val = train.subset(warm_rows)
                    stream = train.subset(stream_rows(warm_rows, replay.traffic, seed))
                    r = run_replay("routerbench3", stream, val, None, embedded, seed, replay, variants=(EXPLORING,))
                    # learning: the bandit-fed learner trained on the candidate's log of the traffic (its training
                    # data) and scored on the validation queries ("test" = val); nothing served there is read
                    fit = run_replay("routerbench3", train.subset(order[: replay.traffic]), val, val, embedded, seed,
                                     replay, variants=(EXPLORING,))
                    val_bandit.append(fit["curves"][EXPLORING][-1])
                else:
                    # the replay's protocol on llmrouter9 (as bandit_replay.main runs a data set other than
                    # routerbench3): its traffic, its warm-start queries, the frozen router trained on them
                    v_traffic, v_warm = validation_traffic(v_train, replay.traffic, replay.warm, seed)
                    v_frozen = learner(replay.steps, seed).fit(v_warm)
                    r = run_replay(VALIDATION, v_traffic, v_warm, v_test, v_frozen, seed, replay,
                                   variants=(EXPLORING,))
                    val_bandit.append(r["curves"][EXPLORING][-1])
                    frozen_served.append(r["frozen_served"])
                    # reference, not a result (never read by the rule): the candidate on routerbench3's traffic
                    fit = None if args.no_reference else run_replay(
                        "routerbench3", train.subset(order[: replay.traffic]), train.subset(warm_rows), None,
                        embedded, seed, replay, variants=(EXPLORING,))
            served.append(r["served_score"][EXPLORING])
            served_after.append(float(np.mean(r["served_blocks"][EXPLORING][1:])))
            deployed.append(r["deployed"][EXPLORING])
            if fit is not None:
                # reference, not a result (never read by the rule): what it served on the traffic itself, all
                # 2,000 queries and queries 501-2,000
                traffic_served.append(fit["served_score"][EXPLORING])
                traffic_after.append(float(np.mean(fit["served_blocks"][EXPLORING][1:])))
        row = {"candidate": name, "options": options, "served": float(np.mean(served)),
               "served_se": std_err(served), "served_per_seed": served,
               "served_after_500": float(np.mean(served_after)), "served_after_500_se": std_err(served_after),
               "deployed_per_seed": deployed,
               "val_bandit": float(np.mean(val_bandit)), "val_bandit_se": std_err(val_bandit),
               "val_bandit_per_seed": val_bandit,
               "seconds": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0]}
        if frozen_served:
            row["frozen_served"] = float(np.mean(frozen_served))
        if traffic_served:
            row |= {"reference_traffic_served": float(np.mean(traffic_served)),
                    "reference_traffic_served_se": std_err(traffic_served),
                    "reference_traffic_served_after_500": float(np.mean(traffic_after))}
        rows.append(row)
        print(f"{name}: served on validation {row['served']:.4f} ± {row['served_se'] or 0:.4f}, "
              f"bandit-fed validation Score {row['val_bandit']:.4f} ± {row['val_bandit_se'] or 0:.4f} "
              f"({row['seconds']:.0f} s; load {os.getloadavg()[0]:.2f})", flush=True)
    old_path = out.with_suffix(".json")
    if args.merge and old_path.is_file():
        done = {r["candidate"] for r in rows}
        old = json.loads(old_path.read_text())
        if old.get("protocol", "stream") == args.protocol:
            rows = [r for r in old["rows"] if r["candidate"] not in done] + rows
    best = choose(rows)
    where = "on llmrouter9's traffic" if not stream_protocol else "on the validation stream"
    guard = "on llmrouter9's test split" if not stream_protocol else "on the 200 validation queries"
    result = {"benchmark": "bandit_serve_select", "protocol": args.protocol, "seeds": args.seeds,
              "learner": LEARNER_NAME, "rows": rows, "chosen": best["candidate"], "chosen_options": best["options"],
              "rule": f"best mean Score served {where} among the candidates whose bandit-fed validation Score "
                      f"({guard}) is within one standard error of the best",
              "validation": PROTOCOLS[args.protocol],
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "seconds": round(time.perf_counter() - started)}
    table = (f"| candidate | served {where} (± s.e.) | served there, queries 501-2,000 | bandit-fed learner's "
             f"Score {guard} (± s.e.) | reference, not read by the rule: served on routerbench3's traffic "
             "(± s.e.), queries 501-2,000 |\n|---|---:|---:|---:|---:|\n")

    def reference(r: dict) -> str:
        if "reference_traffic_served" not in r:
            return ""
        return (f"{r['reference_traffic_served']:.4f} ± {r['reference_traffic_served_se'] or 0:.4f}, "
                f"{r['reference_traffic_served_after_500']:.4f}")

    def after(r: dict) -> str:
        if "served_after_500" not in r:
            return ""
        return f"{r['served_after_500']:.4f} ± {r['served_after_500_se'] or 0:.4f}"

    table += "".join(f"| {r['candidate']} | {r['served']:.4f} ± {r['served_se'] or 0:.4f} | {after(r)} | "
                     f"{r['val_bandit']:.4f} ± {r['val_bandit_se'] or 0:.4f} | {reference(r)} |\n" for r in rows)
    frozen = [r["frozen_served"] for r in rows if "frozen_served" in r]
    note = ("" if not frozen else f" The frozen router alone (the learner trained on the 200 warm-start queries, "
            f"greedy, never retrained) would have served {np.mean(frozen):.4f} on the same llmrouter9 traffic.")
    title = ("a separate validation data set (llmrouter9)" if not stream_protocol
             else "a validation stream (superseded)")
    text = (f"# Choosing the replay's serving settings on {title}\n\nseeds {args.seeds}, "
            f"learner {LEARNER_NAME}, retrained every 500 (the first 500 served by the frozen router). "
            f"Validation: {result['validation']}. Served: mean over seeds ± standard error.{note} Load average "
            f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {result['seconds']} s.\n\n{table}\n"
            f"Rule: {result['rule']}. Chosen: **{best['candidate']}** (`{' '.join(best['options'])}`).\n\n"
            f"Rerun: `python benchmarks/bandit_serve_select.py{' --protocol stream' if stream_protocol else ''}`\n")
    old_path.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
