"""Which learner should `bandit_replay.py` use? Chosen on validation, never on its test split.

    python benchmarks/bandit_learner_select.py [--seeds 0,1,2,3]

For each candidate (the masked-loss ``mlp`` at several widths, training lengths and pessimism levels) this runs
the routerbench3 replay of `bandit_replay.py` — 2,000 logged queries, ε-greedy at ε = 0.3, retrained every 500 —
and scores the final bandit-fed learner, and the same learner with full information, on the replay's warm-start
queries: 200 training queries outside the traffic with every LLM's label, which no variant here trains on. The
candidate with the best bandit-fed validation Score becomes ``bandit_replay.HIDDEN``'s setting. Writes
benchmarks/results/bandit_learner_select.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from bandit_replay import EXPLORING, RESULTS, load, run_replay

from radialrouter.routers import Router, make_router
from radialrouter.routers.radial import load_default

CANDIDATES: dict[str, dict] = {
    "hidden 256 (the mlp's default)": {"hidden": 256},
    "hidden 256, 300 steps": {"hidden": 256, "steps": 300},
    "hidden 256, pessimism 0": {"hidden": 256, "pessimism": 0.0},
    "hidden 64": {"hidden": 64},
    "hidden 64, pessimism 0": {"hidden": 64, "pessimism": 0.0},
    "hidden 32": {"hidden": 32},
}


def maker(spec: dict) -> Callable[[int, int], Router]:
    def make(steps: int, seed: int) -> Router:
        router = make_router("mlp", seed=seed, hidden=spec["hidden"], steps=spec.get("steps", steps))
        router.pessimism = spec.get("pessimism", router.pessimism)
        return router
    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before, started = os.getloadavg(), time.perf_counter()
    replay = argparse.Namespace(traffic=2000, every=500, warm=200, epsilon=0.3, explore="epsilon",
                                temperature=0.05, noise=0.1, steps=600, boot=20)
    embedded = load_default()
    train, _ = load("routerbench3", 0, embedded.get_encoder())
    rows = []
    for name, spec in CANDIDATES.items():
        bandit, full = [], []
        for seed in [int(s) for s in args.seeds.split(",")]:
            order = np.random.default_rng(1000 + seed).permutation(len(train))  # as bandit_replay.py
            traffic, val = train.subset(order[:replay.traffic]), train.subset(order[2000:2200])
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                run = run_replay("routerbench3", traffic, val, val, embedded, seed, replay,
                                 variants=(EXPLORING, "full information"), make=maker(spec))
            bandit.append(run["curves"][EXPLORING][-1])
            full.append(run["curves"]["full information"][-1])
        rows.append({"candidate": name, **spec, "val_bandit": float(np.mean(bandit)),
                     "val_full": float(np.mean(full)), "val_gap": float(np.mean(np.subtract(full, bandit))),
                     "val_bandit_per_seed": bandit})
        print(f"{name}: bandit-fed {rows[-1]['val_bandit']:.4f}, full information {rows[-1]['val_full']:.4f}",
              flush=True)
    best = max(rows, key=lambda r: r["val_bandit"])
    result = {"benchmark": "bandit_learner_select", "seeds": args.seeds, "rows": rows, "chosen": best["candidate"],
              "validation": "the 200 warm-start queries of each seed (full information, outside the traffic)",
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "seconds": round(time.perf_counter() - started)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bandit_learner_select.json").write_text(json.dumps(result, indent=2) + "\n")
    table = ("| learner (masked-loss mlp) | bandit-fed val Score | full-information val Score | gap |\n"
             "|---|---:|---:|---:|\n")
    table += "".join(f"| {r['candidate']} | {r['val_bandit']:.4f} | {r['val_full']:.4f} | {r['val_gap']:+.4f} |\n"
                     for r in rows)
    text = (f"# Choosing the bandit replay's learner on validation\n\nrouterbench3, seeds {args.seeds}, 2,000 logged "
            "queries with ε-greedy exploration (ε = 0.3), retrained every 500; Scores at λ = 0.02 on each seed's 200 "
            "warm-start queries (full information, never trained on here), means over seeds. Load average "
            f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {result['seconds']} s.\n\n{table}\n"
            f"Chosen: **{best['candidate']}** (best bandit-fed validation Score). 200 queries make a noisy validation "
            "set (a Score difference of 0.02 is within one standard error), so only large gaps count.\n\n"
            "Rerun: `python benchmarks/bandit_learner_select.py`\n")
    (RESULTS / "bandit_learner_select.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
