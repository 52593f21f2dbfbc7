"""Which logging policy should `bandit_replay.py` (and `router.explore`) default to? Chosen on validation.

    python benchmarks/bandit_explore_select.py [--seeds 0,1,2,3,4]

Each candidate — ε-greedy, softmax over the learner's scores, SquareCB's inverse-gap weighting at VW's γ schedule
(γ = scale · √t) for a few scales — logs the routerbench3 replay of `bandit_replay.py` (2,000 queries, the chosen
learner, retrained every 500). Two numbers matter: the Score served while logging (the true Score of what was
served on the 2,000 traffic queries) and the bandit-fed learner's Score on the validation queries (each seed's 200
warm-start queries, full information, never trained on here; the test split is not read). Rule: among the
candidates whose bandit-fed validation Score is within one standard error of the best, the one that serves best.
Writes benchmarks/results/bandit_explore_select.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from bandit_learner_select import evaluate
from bandit_replay import LEARNER, LEARNER_NAME, RESULTS, load

from radialrouter.routers.radial import load_default

#: name -> replay settings of the logging policy
CANDIDATES: dict[str, dict] = {
    "ε-greedy, ε = 0.3 (previous default)": {"explore": "epsilon", "epsilon": 0.3},
    "ε-greedy, ε = 0.1": {"explore": "epsilon", "epsilon": 0.1},
    "softmax, temperature 0.05, ε = 0.1 floor": {"explore": "softmax", "epsilon": 0.1},
    "squarecb, γ = 10 · √t (VW's default)": {"explore": "squarecb", "gamma_scale": 10.0},
    "squarecb, γ = 3 · √t": {"explore": "squarecb", "gamma_scale": 3.0},
    "squarecb, γ = 30 · √t": {"explore": "squarecb", "gamma_scale": 30.0},
}


def within_one_se(rows: list[dict], key: str, higher: bool = True) -> list[dict]:
    """The rows whose ``key`` is within one standard error of the best row's (``higher``: larger is better, else
    smaller; the standard error is the best row's ``{key}_se``). Rows without a ``key`` figure are not among them."""
    have = [r for r in rows if r.get(key) is not None]
    if not have:
        return []
    sign = 1.0 if higher else -1.0
    top = max(have, key=lambda r: sign * r[key])
    bar = sign * top[key] - (top.get(f"{key}_se") or 0.0)
    return [r for r in have if sign * r[key] >= bar]


def choose(rows: list[dict], guards: tuple[tuple[str, bool], ...] = (("val_bandit", True),)) -> dict:
    """Best served Score among the candidates that pass every guard — ``(key, higher is better)``: within one s.e.
    of the best candidate's ``key`` (`within_one_se`); by default the bandit-fed validation Score. A candidate
    without a guard's figure does not pass it. ValueError when none passes every guard."""
    passed = [{id(r) for r in within_one_se(rows, key, higher)} for key, higher in guards]
    near = [r for r in rows if all(id(r) in p for p in passed)]
    if not near:
        raise ValueError(f"no candidate passes every guard {[k for k, _ in guards]}")
    return max(near, key=lambda r: r["served"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before, started = os.getloadavg(), time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    embedded = load_default()
    train, _ = load("routerbench3", 0, embedded.get_encoder())
    rows = []
    for name, settings in CANDIDATES.items():
        r = evaluate(LEARNER, train, embedded, seeds, **settings)
        served = np.array([float(x) for x in r.pop("served_per_seed")]) if "served_per_seed" in r else None
        rows.append({"candidate": name, **r, "served_se": None if served is None else
                     float(served.std(ddof=1) / np.sqrt(len(served)))})
        print(f"{name}: bandit-fed val {r['val_bandit']:.4f} ± {r['val_bandit_se']:.4f}, served {r['served']:.4f} "
              f"({r['seconds']:.0f} s; load {os.getloadavg()[0]:.2f})", flush=True)
    best = choose(rows)
    result = {"benchmark": "bandit_explore_select", "seeds": args.seeds, "learner": LEARNER_NAME, "rows": rows,
              "chosen": best["candidate"], "chosen_settings": best["replay"],
              "rule": "best served Score among candidates within one s.e. of the best bandit-fed validation Score",
              "validation": "the 200 warm-start queries of each seed (full information, outside the traffic)",
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "seconds": round(time.perf_counter() - started)}
    table = ("| logging policy | bandit-fed val Score (± s.e.) | full-information val Score | gap | Score served "
             "while logging (± s.e.) |\n|---|---:|---:|---:|---:|\n")
    table += "".join(f"| {r['candidate']} | {r['val_bandit']:.4f} ± {r['val_bandit_se']:.4f} | {r['val_full']:.4f} | "
                     f"{r['val_gap']:+.4f} | {r['served']:.4f} ± {r['served_se'] or 0:.4f} |\n" for r in rows)
    text = (f"# Choosing the replay's logging policy on validation\n\nrouterbench3, seeds {args.seeds}, learner "
            f"{LEARNER_NAME}, 2,000 logged queries retrained every 500 (the first 500 served by the shipped router); "
            "bandit-fed and full-information Scores at λ = 0.02 on each seed's 200 warm-start queries (never trained "
            "on here); served: the true Score of what the logging policy served on the 2,000 traffic queries. Means "
            f"over seeds ± standard error. Load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
            f"{result['seconds']} s.\n\n{table}\nRule: {result['rule']}. Chosen: **{best['candidate']}** "
            f"(`{best['replay']}`).\n\nRerun: `python benchmarks/bandit_explore_select.py`\n")
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bandit_explore_select.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "bandit_explore_select.md").write_text(text)


if __name__ == "__main__":
    main()
