"""Which learner should `bandit_replay.py` use? Chosen on validation, never on its test split.

    python benchmarks/bandit_learner_select.py [--seeds 0,1,2,3,4] [--only NAME,NAME]

For each candidate learner — the masked-loss ``mlp`` (width, regularisation, training length, pessimism), the
masked ``mf`` at small ranks, and the partial-label ``knn`` (k, per-LLM or shared neighbourhoods, shrinkage toward
each LLM's mean, pessimism) — this runs the routerbench3 replay of `bandit_replay.py` (2,000 logged queries,
ε-greedy at ε = 0.3, retrained every 500) and scores the final bandit-fed learner, and the same learner with full
information, on the replay's warm-start queries: 200 training queries outside the traffic with every LLM's label,
which no variant here trains on. The candidate with the best bandit-fed validation Score becomes
``bandit_replay.LEARNER``. The winner is then rerun with other logging policies (ε = 0.5; softmax over its scores
with an ε = 0.1 floor) — they change what is logged and the Score served while logging, not the learner — and both
Scores are reported. Writes benchmarks/results/bandit_learner_select.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
import warnings

import numpy as np
import torch
from bandit_replay import EXPLORING, RESULTS, load, make_learner, run_replay

from radialrouter.routers.radial import load_default

#: name -> learner spec (`bandit_replay.LEARNER`'s format)
CANDIDATES: dict[str, dict] = {
    "mlp, hidden 64 (previous choice)": {"router": "mlp", "hidden": 64},
    "mlp, hidden 64, 300 steps": {"router": "mlp", "hidden": 64, "steps": 300},
    "mlp, hidden 64, dropout 0.5": {"router": "mlp", "hidden": 64, "dropout": 0.5},
    "mlp, hidden 64, weight decay 0.1": {"router": "mlp", "hidden": 64, "weight_decay": 0.1},
    "mlp, hidden 64, weight decay 1": {"router": "mlp", "hidden": 64, "weight_decay": 1.0},
    "mlp, hidden 64, pessimism 2": {"router": "mlp", "hidden": 64, "pessimism": 2.0},
    "mlp, hidden 64, 1200 steps": {"router": "mlp", "hidden": 64, "steps": 1200},
    "mlp, hidden 64, dropout 0": {"router": "mlp", "hidden": 64, "dropout": 0.0},
    "mlp, hidden 64, pessimism 0.5": {"router": "mlp", "hidden": 64, "pessimism": 0.5},
    "mlp, hidden 128": {"router": "mlp", "hidden": 128},
    "mlp, hidden 64, ensemble of 5": {"router": "mlp", "hidden": 64, "ensemble": 5},
    "mf, rank 8": {"router": "mf", "rank": 8},
    "mf, rank 32": {"router": "mf", "rank": 32},
    "knn, k 10": {"router": "knn", "k": 10},
    "knn, k 25": {"router": "knn", "k": 25},
    "knn, k 50": {"router": "knn", "k": 50},
    "knn, k 100": {"router": "knn", "k": 100},
    "knn, k 200": {"router": "knn", "k": 200},
    "knn, k 25, pessimism 1": {"router": "knn", "k": 25, "pessimism": 1.0},
    "knn, k 50, shrinkage 10, pessimism 1": {"router": "knn", "k": 50, "shrinkage": 10.0, "pessimism": 1.0},
    "knn shared, k 100, shrinkage 5": {"router": "knn", "k": 100, "neighbours": "shared", "shrinkage": 5.0},
    "knn shared, k 100, shrinkage 5, pessimism 1": {"router": "knn", "k": 100, "neighbours": "shared",
                                                    "shrinkage": 5.0, "pessimism": 1.0},
    "knn shared, k 200, shrinkage 5, pessimism 1": {"router": "knn", "k": 200, "neighbours": "shared",
                                                    "shrinkage": 5.0, "pessimism": 1.0},
}
#: logging policies tried with the winner: name -> replay settings (ε = 0.3 ε-greedy is the issue's protocol)
EXPLORATION = {"ε-greedy, ε = 0.5": {"epsilon": 0.5, "explore": "epsilon"},
               "softmax, temperature 0.05, ε = 0.1 floor": {"epsilon": 0.1, "explore": "softmax"}}
BASE = "mlp, hidden 64 (previous choice)"


def evaluate(spec: dict, train, embedded, seeds: list[int], **replay_settings) -> dict:
    replay = argparse.Namespace(**{**dict(traffic=2000, every=500, warm=200, epsilon=0.3, explore="epsilon",
                                          temperature=0.05, gamma=None, gamma_scale=10.0, gamma_exponent=0.5,
                                          noise=0.1, steps=600, boot=20), **replay_settings})
    bandit, full, served = [], [], []
    started = time.perf_counter()
    for seed in seeds:
        order = np.random.default_rng(1000 + seed).permutation(len(train))  # as bandit_replay.py
        traffic, val = train.subset(order[:replay.traffic]), train.subset(order[2000:2200])
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            run = run_replay("routerbench3", traffic, val, val, embedded, seed, replay,
                             variants=(EXPLORING, "full information"), make=make_learner(spec),
                             full_make=make_learner(spec))
        bandit.append(run["curves"][EXPLORING][-1])
        full.append(run["curves"]["full information"][-1])
        served.append(run["served_score"][EXPLORING])
    n = len(seeds)
    return {"spec": spec, "replay": replay_settings, "val_bandit": float(np.mean(bandit)),
            "val_bandit_se": float(np.std(bandit, ddof=1) / np.sqrt(n)) if n > 1 else None,
            "val_full": float(np.mean(full)), "val_gap": float(np.mean(np.subtract(full, bandit))),
            "served": float(np.mean(served)), "served_per_seed": served, "val_bandit_per_seed": bandit,
            "val_full_per_seed": full,
            "seconds": round(time.perf_counter() - started, 1)}


def paired_se(a: list[float], b: list[float]) -> tuple[float, float]:
    d = np.subtract(a, b)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--only", default="", help="candidate names separated by ; (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only (exploratory runs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before, started = os.getloadavg(), time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    embedded = load_default()
    train, _ = load("routerbench3", 0, embedded.get_encoder())
    names = [n for n in CANDIDATES if not args.only or n in args.only.split(";")]
    rows = []
    for name in names:
        rows.append({"candidate": name, **evaluate(CANDIDATES[name], train, embedded, seeds)})
        r = rows[-1]
        print(f"{name}: bandit-fed {r['val_bandit']:.4f} ± {r['val_bandit_se']:.4f}, full information "
              f"{r['val_full']:.4f}, served {r['served']:.4f} ({r['seconds']:.0f} s; load "
              f"{os.getloadavg()[0]:.2f})", flush=True)
    best = max(rows, key=lambda r: r["val_bandit"])
    base = next((r for r in rows if r["candidate"] == BASE), None)
    for r in rows:
        if base is not None:
            r["diff_vs_base"], r["diff_vs_base_se"] = paired_se(r["val_bandit_per_seed"], base["val_bandit_per_seed"])
        r["diff_vs_best"], r["diff_vs_best_se"] = paired_se(r["val_bandit_per_seed"], best["val_bandit_per_seed"])
    explore_rows = [{"candidate": best["candidate"], "logging": "ε-greedy, ε = 0.3 (the replay's protocol)",
                     **{k: best[k] for k in ("val_bandit", "val_bandit_se", "val_full", "val_gap", "served")}}]
    for label, settings in EXPLORATION.items():
        r = evaluate(best["spec"], train, embedded, seeds, **settings)
        explore_rows.append({"candidate": best["candidate"], "logging": label, **r})
        print(f"{best['candidate']} logged by {label}: bandit-fed {r['val_bandit']:.4f} ± {r['val_bandit_se']:.4f},"
              f" served {r['served']:.4f}", flush=True)
    result = {"benchmark": "bandit_learner_select", "seeds": args.seeds, "rows": rows, "chosen": best["candidate"],
              "chosen_spec": best["spec"], "exploration": explore_rows,
              "validation": "the 200 warm-start queries of each seed (full information, outside the traffic)",
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "seconds": round(time.perf_counter() - started)}
    table = ("| learner | bandit-fed val Score (± s.e.) | vs previous choice (paired, ± s.e.) | full-information val "
             "Score | gap | Score served while logging |\n|---|---:|---:|---:|---:|---:|\n")
    table += "".join(
        f"| {r['candidate']} | {r['val_bandit']:.4f} ± {r['val_bandit_se']:.4f} | "
        + (f"{r['diff_vs_base']:+.4f} ± {r['diff_vs_base_se']:.4f}" if "diff_vs_base" in r else "–")
        + f" | {r['val_full']:.4f} | {r['val_gap']:+.4f} | {r['served']:.4f} |\n" for r in rows)
    etable = ("| logging policy | bandit-fed val Score (± s.e.) | full-information val Score | gap | Score served "
              "while logging |\n|---|---:|---:|---:|---:|\n")
    etable += "".join(f"| {r['logging']} | {r['val_bandit']:.4f} ± {r['val_bandit_se']:.4f} | {r['val_full']:.4f} | "
                      f"{r['val_gap']:+.4f} | {r['served']:.4f} |\n" for r in explore_rows)
    text = (f"# Choosing the bandit replay's learner on validation\n\nrouterbench3, seeds {args.seeds}, 2,000 logged "
            "queries with ε-greedy exploration (ε = 0.3), retrained every 500; Scores at λ = 0.02 on each seed's 200 "
            "warm-start queries (full information, never trained on here), means over seeds with the standard error "
            "over seeds; differences to the previous choice are paired by seed. Served: the true Score of what the "
            "logging policy served over the 2,000 queries. Load average "
            f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {result['seconds']} s.\n\n{table}\n"
            f"Chosen: **{best['candidate']}** (best bandit-fed validation Score; `bandit_replay.LEARNER = "
            f"{best['spec']}`). 200 validation queries and 5 seeds leave a standard error of about 0.005–0.01 on "
            "each mean, so differences below about 0.01 do not rank the candidates.\n\n"
            f"### Logging policies, with the chosen learner\n\nThey change what is logged (and what is served while "
            f"logging), not the learner:\n\n{etable}\n"
            "Rerun: `python benchmarks/bandit_learner_select.py`\n")
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bandit_learner_select.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "bandit_learner_select.md").write_text(text)


if __name__ == "__main__":
    main()
