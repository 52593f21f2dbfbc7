"""Is a RadialRouter change worth keeping? Each variant against the MLP and kNN routers on every shared data set.

For each data set (its own split or the seeded one, `load_splits`), seed and router: fit on train (validation for
early stopping), then Score at the data set's named trade-offs (`objective.tradeoff_presets`, resolved on the
training split) on validation and on test. The decision rule is on validation only: a variant is kept when its
mean validation Score over the named trade-offs beats the default's; the test figures are reported beside it, with
a paired bootstrap CI (over seeds × test queries) of variant − MLP at each trade-off.

    python benchmarks/radial_variants.py [--seeds 0,1,2] [--data routerbench3,llmrouter9,mmlupro29,routerdc7]
        [--variants kl,quality] [--threads 1]

Writes benchmarks/results/radial_variants.{json,md} and prints the table. Embeddings: all-MiniLM-L6-v2 from the
on-disk cache (the encoder the benchmark reports use).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

#: Rows with a missing quality cell are excluded, as when the published report was made: this script reads
#: the labels of its routers' choices itself (`load_splits(missing="keep")` routes among observed LLMs only in
#: `evaluate_router`).
MISSING = "exclude"

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results"
#: Data set → (file, load_splits keywords): quality-only sets get list-price costs, routerdc7 its OOD protocol.
DATASETS = {
    "routerbench3": ("routerbench3.parquet", {}),
    "llmrouter9": ("llmrouter9.parquet", {"prices": SHARED / "prices.json"}),
    "mmlupro29": ("mmlupro29.parquet", {"prices": SHARED / "prices.json"}),
    "routerdc7": ("routerdc7.parquet", {"train_tasks": "mmlu,gsm8k,cmmlu,arc_challenge,humaneval"}),
}
VARIANTS = {"kl": {"objective": "kl"}, "quality": {"objective": "quality"}}


def per_query_scores(router, data, lam: float) -> np.ndarray:
    """Realised per-query Score of the router's choices (quality − λ·cost per 1k)."""
    from radialrouter.core.objective import utility

    choice = router.predict(data, lam)
    rows = np.arange(len(data))
    return utility(data.quality[rows, choice], data.cost[rows, choice], lam)


def macro(router, data, lam: float) -> float:
    from radialrouter.evaluation import evaluate_router

    return float(evaluate_router(router, data, [lam])[0]["score"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from radialrouter.core.threads import apply_threads

    apply_threads(args.threads)
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.core.objective import tradeoff_presets
    from radialrouter.data import load_splits
    from radialrouter.routers import make_router

    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before = os.getloadavg()
    encoder = QueryEncoder()
    started = time.perf_counter()
    results: list[dict] = []
    for name in args.data.split(","):
        file, kwargs = DATASETS[name]
        if not (SHARED / file).exists():
            print(f"skipping {name}: {SHARED / file} is absent")
            continue
        presets = None
        for seed in seeds:
            full, train, val, test = load_splits(str(SHARED / file), seed=seed, missing=MISSING, **kwargs)
            full = full.embed(encoder, progress=False)
            train, val, test = full.select("train"), full.select("val"), full.select("test", "unsplit")
            if presets is None:
                presets = (tradeoff_presets(train.quality, train.cost) if full.has_cost
                           else {"performance-first": 0.0})
            routers = {f"radial-{v}": ("radial", {**VARIANTS[v], "seed": seed}) for v in args.variants.split(",")}
            routers |= {"mlp": ("mlp", {"seed": seed}), "knn": ("knn", {})}
            for label, (kind, params) in routers.items():
                t0 = time.perf_counter()
                router = make_router(kind, **params).fit(train, val)
                fit_s = time.perf_counter() - t0
                for tradeoff, lam in presets.items():
                    results.append({"data": name, "seed": seed, "router": label, "tradeoff": tradeoff, "lam": lam,
                                    "val_score": macro(router, val, lam), "test_score": macro(router, test, lam),
                                    "fit_seconds": round(fit_s, 2),
                                    "test_per_query": per_query_scores(router, test, lam).tolist()})
                print(f"{name} seed {seed} {label}: fit {fit_s:.1f} s, test "
                      + ", ".join(f"{r['tradeoff']} {r['test_score']:.4f}" for r in results[-len(presets):]),
                      flush=True)
    write(results, seeds, args, load_before, time.perf_counter() - started)


def paired_ci(a: list[list[float]], b: list[list[float]], n_boot: int = 2000) -> tuple[float, float, float]:
    """Mean difference a − b over seeds × queries (paired per query), 95 % bootstrap interval over queries."""
    diff = np.concatenate([np.asarray(x) - np.asarray(y) for x, y in zip(a, b)])
    rng = np.random.default_rng(0)
    boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(n_boot)]
    return float(diff.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def write(results: list[dict], seeds: list[int], args, load_before, wall: float) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"seeds": seeds, "variants": args.variants, "threads": args.threads, "wall_seconds": round(wall, 1),
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}
    compact = [{k: v for k, v in r.items() if k != "test_per_query"} for r in results]
    (OUT / "radial_variants.json").write_text(json.dumps({"meta": meta, "results": compact}, indent=2) + "\n")
    md = ["# RadialRouter variants against MLP and kNN", "",
          f"Seeds {seeds}; MiniLM embeddings; {args.threads} thread(s) per fit; {meta['cpu_count']} CPU cores, load "
          f"average {meta['load_before']} before and {meta['load_after']} after (other jobs shared the machine); "
          f"{wall / 60:.0f} min. Score at each data set's named trade-offs (resolved on the training split); "
          "mean over seeds. **Decision on validation only**: a variant replaces the default when its mean "
          "validation Score over the trade-offs is higher. Test columns for reference; Δ vs MLP is the paired "
          "difference over seeds × test queries with a 95 % bootstrap interval. Produced by "
          "`python benchmarks/radial_variants.py`.", ""]
    for name in dict.fromkeys(r["data"] for r in results):
        rows = [r for r in results if r["data"] == name]
        tradeoffs = list(dict.fromkeys(r["tradeoff"] for r in rows))
        lams = {r["tradeoff"]: r["lam"] for r in rows}
        md += [f"## {name}", "", "| Router | mean val Score | " + " | ".join(
            f"{t} (λ={lams[t]:.3g}) test" for t in tradeoffs) + " | " + " | ".join(
            f"Δ vs MLP {t}" for t in tradeoffs) + " |", "|---|---:|" + "---:|" * (2 * len(tradeoffs))]
        for router in dict.fromkeys(r["router"] for r in rows):
            mine = [r for r in rows if r["router"] == router]
            val = np.mean([r["val_score"] for r in mine])
            cells, deltas = [], []
            for t in tradeoffs:
                at = [r for r in mine if r["tradeoff"] == t]
                test = [r["test_score"] for r in at]
                cells.append(f"{np.mean(test):.4f} ± {np.std(test):.4f}")
                ref = [r for r in rows if r["router"] == "mlp" and r["tradeoff"] == t]
                if router == "mlp":
                    deltas.append("–")
                else:
                    d, lo, hi = paired_ci([r["test_per_query"] for r in sorted(at, key=lambda r: r["seed"])],
                                          [r["test_per_query"] for r in sorted(ref, key=lambda r: r["seed"])])
                    deltas.append(f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
            md.append(f"| {router} | {val:.4f} | " + " | ".join(cells) + " | " + " | ".join(deltas) + " |")
        md.append("")
    md += decision_lines(compact)
    (OUT / "radial_variants.md").write_text("\n".join(md))
    print("\n".join(md))


def decision_lines(results: list[dict], default: str = "radial-kl") -> list[str]:
    """The keep-or-not verdict per variant, from validation Scores only (mean over seeds and trade-offs)."""
    out = ["## Decision (validation only)", ""]
    datasets = list(dict.fromkeys(r["data"] for r in results))
    for variant in dict.fromkeys(r["router"] for r in results if r["router"].startswith("radial-")):
        if variant == default:
            continue
        deltas = {}
        for name in datasets:
            def val(router, name=name):
                return np.mean([r["val_score"] for r in results if r["data"] == name and r["router"] == router])
            deltas[name] = val(variant) - val(default)
        wins = sum(d > 0 for d in deltas.values())
        verdict = "kept as the default" if wins == len(deltas) else "not kept (the default stays)"
        out.append(f"- `{variant}` − `{default}`, mean validation Score: " + ", ".join(
            f"{k} {v:+.4f}" for k, v in deltas.items()) + f" → better on {wins} of {len(deltas)} data sets: "
            f"{verdict}. A variant must win on every data set's validation split to replace the default.")
    return out + [""]


if __name__ == "__main__":
    main()
