"""Does the radial topology pay off as the pool grows? Pool-size scaling on mmlupro29 (29 LLMs).

The paper argues that RadialFormer's star topology (satellites see only themselves, their LLM embedding and the
relay: O(n·d) per layer) scales better with the number of candidate LLMs than a full Transformer over the 1 + n
nodes, and models LLM–query relations better than an MLP. This measures it: for n = 2, 4, 8, 16, 29 LLMs (for
each n and seed, n LLMs drawn at random with a fixed generator, the same draw for every router), RadialRouter with
the ``radial``, ``transformer`` and ``mlp`` backbones and the MLP and kNN routers are trained on the same split
and compared on test Score at the pool's named trade-offs (resolved on the training split), AIQ over the λ sweep
(cost range shared by the routers of that pool), training time and batch-1 routing latency from an embedding.

    python benchmarks/pool_scaling.py [--sizes 2,4,8,16,29] [--seeds 0,1] [--threads 1]

Costs are estimated from ../shared/data/prices.json (mmlupro29 logs none). Writes
benchmarks/results/pool_scaling.{json,md} and prints the table.
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results"
ROUTERS = {"radial": ("radial", {"backbone": "radial"}), "radial-transformer": ("radial", {"backbone": "transformer"}),
           "radial-mlp": ("radial", {"backbone": "mlp"}), "mlp": ("mlp", {}), "knn": ("knn", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,4,8,16,29")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from radialrouter.core.threads import apply_threads

    apply_threads(args.threads)
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.core.objective import tradeoff_presets
    from radialrouter.data import load_splits
    from radialrouter.evaluation import DEFAULT_SWEEP, aiq, evaluate_router
    from radialrouter.evaluation.bench import routing_latency
    from radialrouter.routers import make_router

    warnings.filterwarnings("ignore")
    load_before = os.getloadavg()
    started = time.perf_counter()
    encoder = QueryEncoder()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict] = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        full, _, _, _ = load_splits(str(SHARED / "mmlupro29.parquet"), seed=seed, prices=SHARED / "prices.json")
        full = full.embed(encoder, progress=False)
        draw = np.random.default_rng(1000 + seed)
        for n in sizes:
            llms = [full.llms[i] for i in sorted(draw.choice(len(full.llms), size=min(n, len(full.llms)),
                                                             replace=False))]
            pool = full.select_llms(llms)
            train, val, test = pool.select("train"), pool.select("val"), pool.select("test", "unsplit")
            presets = tradeoff_presets(train.quality, train.cost)
            sweeps: dict[str, list[dict]] = {}
            for label, (kind, params) in ROUTERS.items():
                kw = {**params, "seed": seed} if kind != "knn" else dict(params)
                t0 = time.perf_counter()
                router = make_router(kind, **kw).fit(train, val)
                fit_s = time.perf_counter() - t0
                sweeps[label] = evaluate_router(router, test, DEFAULT_SWEEP)
                scores = {name: evaluate_router(router, test, [lam])[0]["score"] for name, lam in presets.items()}
                latency = routing_latency(router, test, presets["balance"], runs=5)["single_ms"]
                rows.append({"seed": seed, "n_llms": len(llms), "llms": llms, "router": label, "scores": scores,
                             "lams": presets, "fit_seconds": round(fit_s, 2), "single_ms": latency})
                print(f"seed {seed} n={len(llms)} {label}: fit {fit_s:.1f} s, "
                      + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f", {latency:.3f} ms", flush=True)
            costs = [r["cost"] for s in sweeps.values() for r in s]
            for r in rows[-len(ROUTERS):]:
                s = sweeps[r["router"]]
                r["aiq"] = aiq([x["cost"] for x in s], [x["perf"] for x in s], (min(costs), max(costs)))
    write(rows, args, load_before, time.perf_counter() - started)


def write(rows: list[dict], args, load_before, wall: float) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"sizes": args.sizes, "seeds": args.seeds, "threads": args.threads, "wall_seconds": round(wall, 1),
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}
    (OUT / "pool_scaling.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    md = ["# Pool-size scaling on mmlupro29", "",
          f"n LLMs drawn at random per seed (seeds {args.seeds}, the same draw for every router); MiniLM embeddings; "
          f"costs estimated from list prices; {args.threads} thread(s) per fit on {meta['cpu_count']} shared cores "
          f"(load average {meta['load_before']} before, {meta['load_after']} after: other jobs ran, so times are "
          f"comparable within a row, not absolute); {wall / 60:.0f} min. Mean over seeds. Score at the pool's named "
          "trade-offs (resolved on each pool's training split), AIQ over the λ sweep with the cost range shared by "
          "the routers of a pool, fit time, and batch-1 routing latency from an embedding (median of 20). "
          "Produced by `python benchmarks/pool_scaling.py`.", "",
          "| n LLMs | Router | PF Score | BA Score | CF Score | AIQ | fit s | route ms |",
          "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for n in sorted({r["n_llms"] for r in rows}):
        for router in ROUTERS:
            at = [r for r in rows if r["n_llms"] == n and r["router"] == router]
            if not at:
                continue

            def mean(f, at=at):
                return float(np.mean([f(r) for r in at]))

            pf, ba, cf = (mean(lambda r, k=k: r["scores"][k]) for k in ("performance-first", "balance", "cost-first"))
            md.append(f"| {n} | {router} | {pf:.4f} | {ba:.4f} | {cf:.4f} | "
                      f"{mean(lambda r: r['aiq']):.4f} | {mean(lambda r: r['fit_seconds']):.1f} | "
                      f"{mean(lambda r: r['single_ms']):.3f} |")
    best = {}
    for n in sorted({r["n_llms"] for r in rows}):
        at = {router: np.mean([r["scores"]["balance"] for r in rows if r["n_llms"] == n and r["router"] == router])
              for router in ROUTERS if any(r["n_llms"] == n and r["router"] == router for r in rows)}
        best[n] = max(at, key=at.get)
    md += ["", "Best at Balance per pool size: " + ", ".join(f"n={n}: {b}" for n, b in best.items()) + ".", ""]
    (OUT / "pool_scaling.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
