"""Does one RadialRouter trained on all shared data sets at once route better than one trained per data set?

The radial design lets the pool differ per query: the joint router's pool is the union of every data set's LLMs
(`radialrouter.data.combine`), each query's observed LLMs are its candidates, in training (masked KL target) and
in evaluation. What is shared is the query projection, the RadialFormer's layers and the λ conditioning; the LLM
nodes are per LLM (matched by name: the shared data sets have no LLM in common, so none is shared here).

For each seed: the per-data-set router (RadialRouter defaults, `load_splits` splits, validation for early
stopping) and the joint router (the same settings on the union of the training splits, early-stopped on the union
of the validation splits; ``lam_max`` widened to twice the largest named trade-off of any data set, so that every
data set's trade-offs are inside its training range), each scored on every data set's validation and test split
at that data set's named trade-offs (resolved on its own training split). **Decision on validation only**: the joint
router is kept as a recommendation when its mean validation Score beats the per-data-set router's on every data set.

    python benchmarks/radial_joint.py [--seeds 0,1,2] [--data routerbench3,llmrouter9,mmlupro29,routerdc7]
        [--threads 1]

Writes benchmarks/results/radial_joint.{json,md}. Embeddings: all-MiniLM-L6-v2 (the benchmark reports' encoder).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
from radial_variants import DATASETS, OUT, SHARED, macro, paired_ci, per_query_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from radialrouter.threads import apply_threads

    apply_threads(args.threads)
    from radialrouter.data import load_splits
    from radialrouter.data.combine import combine_datasets, source_of
    from radialrouter.encoders import QueryEncoder
    from radialrouter.objective import tradeoff_presets
    from radialrouter.routers import make_router

    warnings.filterwarnings("ignore")
    names = [n for n in args.data.split(",") if (SHARED / DATASETS[n][0]).exists()]
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before, started = os.getloadavg(), time.perf_counter()
    encoder = QueryEncoder()
    results, fits = [], []
    for seed in seeds:
        parts, presets = {}, {}
        for name in names:
            file, kwargs = DATASETS[name]
            full = load_splits(str(SHARED / file), seed=seed, **kwargs)[0].embed(encoder, progress=False)
            full = full.with_split(np.where(full.split == "unsplit", "test", full.split))  # routerdc7's OOD tasks
            parts[name] = full
            train = full.select("train")
            presets[name] = (tradeoff_presets(train.quality, train.cost) if full.has_cost
                             else {"performance-first": 0.0})
        joint_data = combine_datasets(parts)
        top = max(lam for p in presets.values() for lam in p.values())
        routers = {}
        for name in names:
            t0 = time.perf_counter()
            routers[name] = make_router("radial", seed=seed).fit(parts[name].select("train"),
                                                                   parts[name].select("val"))
            fits.append({"seed": seed, "router": f"per-data-set ({name})", "seconds": time.perf_counter() - t0})
        t0 = time.perf_counter()
        joint = make_router("radial", seed=seed, lam_max=max(1.0, 2 * top)).fit(joint_data.select("train"),
                                                                                joint_data.select("val"))
        fits.append({"seed": seed, "router": "joint", "seconds": time.perf_counter() - t0})
        where = source_of(joint_data)
        for name in names:
            own = {split: parts[name].select(split) for split in ("val", "test")}
            mine = {split: joint_data.subset((where == name) & (joint_data.split == split)) for split in own}
            for tradeoff, lam in presets[name].items():
                for label, router, data in (("per-data-set", routers[name], own), ("joint", joint, mine)):
                    results.append({"data": name, "seed": seed, "router": label, "tradeoff": tradeoff, "lam": lam,
                                    "val_score": macro(router, data["val"], lam),
                                    "test_score": macro(router, data["test"], lam),
                                    "test_per_query": per_query_scores(router, data["test"], lam).tolist()})
            print(f"seed {seed} {name}: " + ", ".join(
                f"{r['router']} {r['tradeoff']} {r['test_score']:.4f}" for r in results[-2 * len(presets[name]):]),
                flush=True)
    write(results, fits, seeds, load_before, time.perf_counter() - started, args.threads)


def write(results: list[dict], fits: list[dict], seeds: list[int], load_before, wall: float, threads: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"seeds": seeds, "threads": threads, "wall_seconds": round(wall, 1), "cpu_count": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "fit_seconds": {label: round(float(np.mean([f["seconds"] for f in fits if f["router"] == label])), 1)
                            for label in dict.fromkeys(f["router"] for f in fits)}}
    compact = [{k: v for k, v in r.items() if k != "test_per_query"} for r in results]
    md = ["# One RadialRouter for every data set, or one per data set", "",
          f"Seeds {seeds}; MiniLM embeddings; RadialRouter defaults; {threads} thread(s) per fit; {os.cpu_count()} "
          f"CPU cores, load average {meta['load_before']} before and {meta['load_after']} after; "
          f"{wall / 60:.0f} min. The joint router is trained once on the union of the training splits (pools "
          "differ per query: each query's observed LLMs are its candidates) and scored on each data set's own "
          "queries at that data set's named trade-offs. Test Score mean ± std over seeds; Δ is joint − "
          "per-data-set, paired over seeds × test queries, with a 95 % bootstrap interval. Produced by "
          "`python benchmarks/radial_joint.py`.", "",
          "Mean fit time: " + ", ".join(f"{k} {v:.0f} s" for k, v in meta["fit_seconds"].items()) + ".", ""]
    verdicts = {}
    for name in dict.fromkeys(r["data"] for r in results):
        rows = [r for r in results if r["data"] == name]
        tradeoffs = list(dict.fromkeys(r["tradeoff"] for r in rows))
        md += [f"## {name}", "", "| trade-off | λ | per-data-set val | joint val | per-data-set test | joint test | "
               "Δ test (joint − per-data-set) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for t in tradeoffs:
            at = {label: sorted([r for r in rows if r["tradeoff"] == t and r["router"] == label],
                                key=lambda r: r["seed"]) for label in ("per-data-set", "joint")}
            d, lo, hi = paired_ci([r["test_per_query"] for r in at["joint"]],
                                  [r["test_per_query"] for r in at["per-data-set"]])
            cells = [f"{np.mean([r['val_score'] for r in at[k]]):.4f}" for k in at] + [
                f"{np.mean([r['test_score'] for r in at[k]]):.4f} ± {np.std([r['test_score'] for r in at[k]]):.4f}"
                for k in at]
            md.append(f"| {t} | {at['joint'][0]['lam']:.3g} | " + " | ".join(cells) + f" | {d:+.4f} [{lo:+.4f}, "
                      f"{hi:+.4f}] |")
        verdicts[name] = (np.mean([r["val_score"] for r in rows if r["router"] == "joint"])
                          - np.mean([r["val_score"] for r in rows if r["router"] == "per-data-set"]))
        md.append("")
    wins = sum(v > 0 for v in verdicts.values())
    md += ["## Decision (validation only)", "",
           "Joint − per-data-set, mean validation Score over seeds and trade-offs: " + ", ".join(
               f"{k} {v:+.4f}" for k, v in verdicts.items()) + f" → better on {wins} of {len(verdicts)} data sets: "
           + ("joint training is recommended." if wins == len(verdicts) else
              "not recommended as the default; per-data-set training stays."), ""]
    summary = {"validation_delta": {k: float(v) for k, v in verdicts.items()}, "recommended": wins == len(verdicts)}
    (OUT / "radial_joint.json").write_text(json.dumps({"meta": meta, "summary": summary, "results": compact},
                                                      indent=2) + "\n")
    (OUT / "radial_joint.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
