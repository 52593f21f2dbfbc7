"""Why routers do not always pick the best LLM at Performance First (λ = 0) — issue #23 item 5f.

    python benchmarks/pf_decision.py [--data ../shared/data/routerbench3.parquet] [--seeds 0] [--threads 1]

For each seed (the bench's splits) it fits RadialRouter (the paper's KL objective at τ = 1, and the same router
with ``objective="quality"``: per-LLM quality outputs) and EquiRouter (as shipped, without the cost-ordered tie
pairs, and with MSE alone), and reports at λ = 0: the test Score (macro, as the bench), the share sent to the best
LLM on train, whether every pick is the argmax of the router's own scores (the decision rule), and, for the KL
router, how flat its target is (the gap between the best and the second-best target probability). Validation
figures come first: nothing here is chosen on test. Writes benchmarks/results/pf_decision.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import target_distribution
from radialrouter.data import load_splits
from radialrouter.evaluation import evaluate_router
from radialrouter.routers.registry import make_seeded

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "radial (kl, τ=1)": ("radial", {}),
    "radial (objective=quality)": ("radial", {"objective": "quality"}),
    "equi": ("equi", {}),
    "equi (tie_weight=0)": ("equi", {"tie_weight": 0.0}),
    "equi (rank_weight=0: MSE)": ("equi", {"rank_weight": 0.0}),
    "mlp": ("mlp", {}),
}


def run(data: str, seed: int) -> list[dict]:
    """One seed: every variant's λ = 0 figures on validation and test."""
    encoder = QueryEncoder()
    _, train, val, test = load_splits(data, seed=seed)
    train, val, test = (d.embed(encoder) for d in (train, val, test))
    best = int(np.argmax(np.nanmean(train.quality, axis=0)))
    target = target_distribution(train.quality, train.cost, 0.0, 1.0)
    ordered = np.sort(target, axis=1)
    rows = [{"variant": "always " + train.llms[best], "seed": seed,
             "val_score": _macro_single(val, best)["score"], **_macro_single(test, best)}]
    for label, (name, params) in VARIANTS.items():
        start = time.perf_counter()
        router = make_seeded(name, seed, **params).fit(train, val)
        picks = router.predict(test, 0.0)
        scores = router.predict_scores(test, 0.0)
        rule_holds = bool((scores[np.arange(len(test)), picks] >= scores.max(axis=1) - 1e-9).all())
        row = {"variant": label, "seed": seed, "fit_s": round(time.perf_counter() - start, 1),
               "val_score": evaluate_router(router, val, [0.0])[0]["score"],
               "score": evaluate_router(router, test, [0.0])[0]["score"],
               "best_llm_share": float((picks == best).mean()), "argmax_rule_holds": rule_holds}
        if name == "radial" and not params:
            proba = np.exp(scores)
            top2 = np.sort(proba, axis=1)
            row["router_top_gap_median"] = float(np.median(top2[:, -1] - top2[:, -2]))
            row["target_top_gap_median_train"] = float(np.median(ordered[:, -1] - ordered[:, -2]))
            row["target_best_llm_mean_train"] = float(target[:, best].mean())
            row["uniform"] = 1 / len(train.llms)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _macro_single(test, j: int) -> dict:
    """Always LLM ``j``: the test Score, macro over tasks as the bench reports it."""
    per_task = [np.nanmean(test.quality[test.tasks == t, j]) for t in sorted(set(test.tasks.tolist()))
                if np.isfinite(test.quality[test.tasks == t, j]).any()]
    return {"score": float(np.mean(per_task)), "best_llm_share": 1.0, "argmax_rule_holds": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/routerbench3.parquet"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [r for s in args.seeds.split(",") for r in run(args.data, int(s))]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pf_decision.json").write_text(json.dumps({"data": args.data, "rows": rows}, indent=2))
    lines = ["# λ = 0 (Performance First) decisions", "", f"Data `{Path(args.data).name}`, seeds {args.seeds}; "
             "Score = macro test accuracy at λ = 0; share = test queries sent to the best LLM on train; rule = every "
             "pick is the argmax of the router's own λ = 0 scores.", "",
             "| Variant | seed | val Score | test Score | best-LLM share | rule |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {r['val_score']:.3f} | {r['score']:.3f} | "
                     f"{r['best_llm_share']:.0%} | {'yes' if r['argmax_rule_holds'] else 'NO'} |")
    flat = [r for r in rows if "target_top_gap_median_train" in r]
    for r in flat:
        lines += ["", f"KL target at τ = 1, seed {r['seed']}: median gap between the two most probable LLMs "
                  f"{r['target_top_gap_median_train']:.3f} (train), the best LLM's mean target probability "
                  f"{r['target_best_llm_mean_train']:.3f} against uniform {r['uniform']:.3f}; the router's own "
                  f"median top-two gap on test {r['router_top_gap_median']:.4f}."]
    (RESULTS / "pf_decision.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
