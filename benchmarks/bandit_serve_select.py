"""Which serving settings should `bandit_replay.py` default to? Chosen on a validation traffic stream by the Score
served while learning — the criterion of the served-Score target — never on the traffic or the test split.

    python benchmarks/bandit_serve_select.py [--seeds 0,1,2,3,4]

The validation stream of a seed (`bandit_replay.validation_stream`) is its 200 warm-start queries (full
information, outside the traffic and the test split) drawn with replacement into a stream as long as the traffic
(2,000); VW SquareCB's learning rate and gamma_scale are chosen on the very same streams by `bandit_vw.py` (choice
(b) there). Each candidate replays the stream as `bandit_replay.py` replays the traffic (the chosen learner,
retrained every 500, the first 500 served by the shipped router) and scores the true Score of what it served.
Beside it, as a reference the rule never reads, the Score each candidate served on the traffic itself (all 2,000
queries, and 501-2,000).
Candidates: SquareCB's γ scale (γ = scale · √t) and the warm start from the shipped router (``--prior n0``: served
scores blend the shipped router's and the learner's, the learner's weight t / (t + n0), `bandit_replay.PriorBlend`;
0: the learner alone), and a warm start of the learner itself (``--impute-frozen``: the log's unrevealed quality
cells filled from the shipped router's implied quality differences to the called LLM), and serving by a per-LLM
ridge regression refitted every 100 or 250 logged queries (``--server ridge``: from query 100 or 250, or from query
500 as the learner, the shipped router before), the learner still trained on the log for the final gap; the
ridge's own settings (``alpha`` 10, ``pessimism`` 1, `bandit_replay.SERVE_RIDGE`) were chosen first by its
bandit-fed Score on the validation queries (seeds 0-2, ridge serving itself every 100 at γ = 30·√t: alpha 10 /
30 / 100 × pessimism 0 / 1 / 2 gave 0.710 / 0.735 / 0.720, 0.697 / 0.726 / 0.713, 0.706 / 0.702 / 0.689;
alpha 0.1 and 1 without pessimism 0.700 and 0.709). Serving less
exploratively can starve the learner of labels (the final-gap target), so
each candidate's learning is measured too, as `bandit_explore_select.py` does: the bandit-fed learner trained on
the candidate's log of the traffic (the training data; nothing served there is read) and scored on the validation
queries. Rule: the best mean served Score on the validation stream among the candidates whose bandit-fed
validation Score is within one standard error of the best.
Writes benchmarks/results/bandit_serve_select.{json,md} (``--merge``: adds the candidates run to the rows already
there; the header's time and load averages are then those of the last run).
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
from bandit_replay import EXPLORING, LEARNER_NAME, RESULTS, load, replay_parser, run_replay, std_err, traffic_order
from bandit_replay import validation_stream as stream_rows

from radialrouter.routers.radial import load_default

#: name -> replay options of the candidate. Retraining stays every 500 (a cadence of 100 served about as well on
#: the stream in a first look, 0.8097 ± 0.0094 against 0.8081 ± 0.0072 at γ = 30·√t, prior 0, but costs five
#: times the retrains, which the 10,000-query learning curve cannot afford here); ``--deploy ope`` served below
#: ``always`` on the stream at every setting tried in a first look (γ 3-100·√t, prior 0 or 1,000: 0.760-0.804
#: against 0.764-0.816), so it is not among the candidates.
CANDIDATES: dict[str, list[str]] = {
    f"squarecb γ = {g:g}·√t, prior {n:g}": ["--gamma-scale", str(g), "--prior", str(n)]
    for n in (0.0, 250.0, 1000.0, 4000.0) for g in (10.0, 30.0, 100.0, 300.0)
} | {f"squarecb γ = {g:g}·√t, learner warm-started from the shipped router's implied labels":
     ["--gamma-scale", str(g), "--impute-frozen"] for g in (10.0, 30.0, 100.0)} | {
    f"squarecb γ = {g:g}·√t, served by a ridge refitted every {k}": ["--gamma-scale", str(g), "--server", "ridge",
                                                                       "--serve-every", str(k)]
    for k in (100, 250) for g in (10.0, 30.0, 100.0)} | {
    f"squarecb γ = {g:g}·√t, served by a ridge refitted every {k} from query 500": [
        "--gamma-scale", str(g), "--server", "ridge", "--serve-every", str(k), "--serve-from", "500"]
    for k in (100, 250) for g in (30.0, 100.0)}
for _options in CANDIDATES.values():  # the rows measured before the ridge server existed: the learner serves
    if "--server" not in _options:
        _options += ["--server", "learner"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--only", default="", help="candidate names separated by ; (default: all)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other candidates' rows of the existing bandit_serve_select.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before, started = os.getloadavg(), time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    embedded = load_default()  # the shipped RadialRouter, explicitly (the bandit replay's frozen router)
    train, _ = load("routerbench3", 0, embedded.get_encoder())
    rows = []
    for name, options in CANDIDATES.items():
        if args.only and name not in args.only.split(";"):
            continue
        replay = replay_parser().parse_args(options)
        replay.boot = 0
        t0, served, deployed, val_bandit = time.perf_counter(), [], [], []
        traffic_served, traffic_after = [], []
        for seed in seeds:
            order, warm_rows = traffic_order(len(train), replay.traffic, replay.warm, seed)
            val = train.subset(warm_rows)
            stream = train.subset(stream_rows(warm_rows, replay.traffic, seed))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = run_replay("routerbench3", stream, val, None, embedded, seed, replay, variants=(EXPLORING,))
                # learning: the bandit-fed learner trained on the candidate's log of the traffic (its training
                # data) and scored on the validation queries ("test" = val); nothing served there is read
                fit = run_replay("routerbench3", train.subset(order[: replay.traffic]), val, val, embedded, seed,
                                 replay, variants=(EXPLORING,))
            served.append(r["served_score"][EXPLORING])
            # reference, not a result (never read by the rule): what it served on the traffic itself, all 2,000
            # queries and queries 501-2,000
            traffic_served.append(fit["served_score"][EXPLORING])
            traffic_after.append(float(np.mean(fit["served_blocks"][EXPLORING][1:])))
            deployed.append(r["deployed"][EXPLORING])
            val_bandit.append(fit["curves"][EXPLORING][-1])
        rows.append({"candidate": name, "options": options, "served": float(np.mean(served)),
                     "served_se": std_err(served), "served_per_seed": served, "deployed_per_seed": deployed,
                     "val_bandit": float(np.mean(val_bandit)), "val_bandit_se": std_err(val_bandit),
                     "val_bandit_per_seed": val_bandit,
                     "reference_traffic_served": float(np.mean(traffic_served)),
                     "reference_traffic_served_se": std_err(traffic_served),
                     "reference_traffic_served_after_500": float(np.mean(traffic_after)),
                     "seconds": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0]})
        print(f"{name}: served on the validation stream {rows[-1]['served']:.4f} ± {rows[-1]['served_se'] or 0:.4f}, "
              f"bandit-fed validation Score {rows[-1]['val_bandit']:.4f} ± {rows[-1]['val_bandit_se'] or 0:.4f} "
              f"({rows[-1]['seconds']:.0f} s; load {os.getloadavg()[0]:.2f})", flush=True)
    if args.merge and (RESULTS / "bandit_serve_select.json").is_file():
        done = {r["candidate"] for r in rows}
        old = json.loads((RESULTS / "bandit_serve_select.json").read_text())["rows"]
        rows = [r for r in old if r["candidate"] not in done] + rows
    best = choose(rows)
    result = {"benchmark": "bandit_serve_select", "seeds": args.seeds, "learner": LEARNER_NAME, "rows": rows,
              "chosen": best["candidate"], "chosen_options": best["options"],
              "rule": "best mean Score served on the validation stream among the candidates whose bandit-fed "
                      "validation Score is within one standard error of the best",
              "validation": "per seed, 2,000 draws with replacement from its 200 warm-start queries (full "
                            "information, outside the traffic and the test split); the same streams as VW's (b)",
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "seconds": round(time.perf_counter() - started)}
    table = ("| candidate | served on the validation stream (± s.e.) | bandit-fed validation Score (± s.e.) | "
             "reference, not read by the rule: served on the traffic (± s.e.), queries 501-2,000 |"
             "\n|---|---:|---:|---:|\n")

    def reference(r: dict) -> str:
        if "reference_traffic_served" not in r:
            return ""
        return (f"{r['reference_traffic_served']:.4f} ± {r['reference_traffic_served_se'] or 0:.4f}, "
                f"{r['reference_traffic_served_after_500']:.4f}")

    table += "".join(f"| {r['candidate']} | {r['served']:.4f} ± {r['served_se'] or 0:.4f} | "
                     f"{r['val_bandit']:.4f} ± {r['val_bandit_se'] or 0:.4f} | {reference(r)} |\n" for r in rows)
    text = (f"# Choosing the replay's serving settings on a validation stream\n\nrouterbench3, seeds {args.seeds}, "
            f"learner {LEARNER_NAME}, retrained every 500 (the first 500 served by the shipped router). "
            f"Validation stream: {result['validation']}. Served: the true Score (λ = 0.02) of what was served on "
            f"the stream, mean over seeds ± standard error. Load average {load_before[0]:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after; {result['seconds']} s.\n\n{table}\nRule: {result['rule']}. Chosen: "
            f"**{best['candidate']}** (`{' '.join(best['options'])}`).\n\n"
            "Rerun: `python benchmarks/bandit_serve_select.py`\n")
    (RESULTS / "bandit_serve_select.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "bandit_serve_select.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
