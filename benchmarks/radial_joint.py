"""Does one router trained on all shared data sets at once route better than one trained per data set?

The radial design lets the pool differ per query: the joint router's pool is the union of every data set's LLMs
(`radialrouter.data.combine`), and each query's observed LLMs are its candidates, in training (masked KL target)
and in evaluation. What is shared is the query projection, the RadialFormer's layers and the λ conditioning; the
LLM nodes are per LLM (matched by name: the shared data sets have no LLM in common, so none is shared here). The
MLP, which trains with a masked loss, gets the same treatment as the control: a gain both share is more data's,
not the radial design's.

For each seed and router (defaults): one model per data set (`load_splits` splits, rows with a missing cell
excluded as in the published reports, validation for early stopping) and one joint model (the union of the
training splits, early-stopped on the union of the validation splits, each query among its observed LLMs; for the
RadialRouter ``lam_max`` is widened to twice the largest named trade-off of any data set), each scored on every data
set's validation and test queries at that data set's named trade-offs (resolved on its own training split).
**Decision on validation only**: joint training is worth recommending for a router when its mean validation Score
beats the per-data-set model's on every data set.

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
from radial_variants import DATASETS, OUT, SHARED, macro, paired_ci

#: RadialRouter, and the MLP (masked loss: it too trains on pools that differ per query) as the control that says
#: whether a gain is the radial design's or just more training data's.
KINDS = ("radial", "mlp")


def per_query_scores(router, data, lam: float) -> np.ndarray:
    """Realised per-query Score of the router's choices among each query's observed LLMs."""
    from radialrouter.core.objective import utility
    from radialrouter.routers.base import observed_candidates

    choice = router.predict(data, lam, observed_candidates(data))
    rows = np.arange(len(data))
    return utility(data.quality[rows, choice], data.cost[rows, choice], lam)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from radialrouter.core.threads import apply_threads

    apply_threads(args.threads)
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.core.objective import tradeoff_presets
    from radialrouter.data import load_splits
    from radialrouter.data.combine import combine_datasets, source_of
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
            full = load_splits(str(SHARED / file), seed=seed, missing="exclude", **kwargs)[0].embed(
                encoder, progress=False)
            full = full.with_split(np.where(full.split == "unsplit", "test", full.split))  # routerdc7's OOD tasks
            parts[name] = full
            train = full.select("train")
            presets[name] = (tradeoff_presets(train.quality, train.cost) if full.has_cost
                             else {"performance-first": 0.0})
        joint_data = combine_datasets(parts)
        top = max(lam for p in presets.values() for lam in p.values())
        where = source_of(joint_data)
        for kind in KINDS:
            params = {"seed": seed}
            routers = {}
            for name in names:
                t0 = time.perf_counter()
                routers[name] = make_router(kind, **params).fit(parts[name].select("train"), parts[name].select("val"))
                fits.append({"seed": seed, "router": f"{kind} per-data-set ({name})",
                             "seconds": time.perf_counter() - t0})
            t0 = time.perf_counter()
            joint = make_router(kind, **params, **({"lam_max": max(1.0, 2 * top)} if kind == "radial" else {})).fit(
                joint_data.select("train"), joint_data.select("val"))
            fits.append({"seed": seed, "router": f"{kind} joint", "seconds": time.perf_counter() - t0})
            for name in names:
                own = {split: parts[name].select(split) for split in ("val", "test")}
                mine = {split: joint_data.subset((where == name) & (joint_data.split == split)) for split in own}
                for tradeoff, lam in presets[name].items():
                    for label, router, data in (("per-data-set", routers[name], own), ("joint", joint, mine)):
                        results.append({"data": name, "seed": seed, "router": f"{kind} {label}", "kind": kind,
                                        "training": label, "tradeoff": tradeoff, "lam": lam,
                                        "val_score": macro(router, data["val"], lam),
                                        "test_score": macro(router, data["test"], lam),
                                        "test_per_query": per_query_scores(router, data["test"], lam).tolist()})
                print(f"seed {seed} {kind} {name}: " + ", ".join(
                    f"{r['training']} {r['tradeoff']} {r['test_score']:.4f}"
                    for r in results[-2 * len(presets[name]):]), flush=True)
    write(results, fits, seeds, load_before, time.perf_counter() - started, args.threads)


def write(results: list[dict], fits: list[dict], seeds: list[int], load_before, wall: float, threads: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"seeds": seeds, "threads": threads, "wall_seconds": round(wall, 1), "cpu_count": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "fit_seconds": {label: round(float(np.mean([f["seconds"] for f in fits if f["router"] == label])), 1)
                            for label in dict.fromkeys(f["router"] for f in fits)}}
    compact = [{k: v for k, v in r.items() if k != "test_per_query"} for r in results]
    md = ["# One router for every data set, or one per data set", "",
          f"Seeds {seeds}; MiniLM embeddings; default settings; {threads} thread(s) per fit; {os.cpu_count()} "
          f"CPU cores, load average {meta['load_before']} before and {meta['load_after']} after; "
          f"{wall / 60:.0f} min. A joint router is trained once on the union of the four training splits (56 LLMs; "
          "pools differ per query: each query's observed LLMs are its candidates, in training and in evaluation) "
          "and scored on each data set's own queries at that data set's named trade-offs; the per-data-set "
          "router is trained on that data set alone (rows with a missing cell excluded, as in the published "
          "reports). The MLP (masked loss) is the control: a gain both routers share comes from more training "
          "data, not from the radial design. Test Score mean ± std over seeds; Δ is joint − per-data-set of the "
          "same router, paired over seeds × test queries, with a 95 % bootstrap interval. Produced by "
          "`python benchmarks/radial_joint.py`.", "",
          "Mean fit time: " + ", ".join(f"{k} {v:.0f} s" for k, v in meta["fit_seconds"].items()) + ".", ""]
    verdicts: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["data"] for r in results):
        rows = [r for r in results if r["data"] == name]
        tradeoffs = list(dict.fromkeys(r["tradeoff"] for r in rows))
        lams = {r["tradeoff"]: r["lam"] for r in rows}
        md += [f"## {name}", "", "| router | training | mean val Score | " + " | ".join(
            f"{t} (λ={lams[t]:.3g}) test" for t in tradeoffs) + " | " + " | ".join(
            f"Δ {t}" for t in tradeoffs) + " |", "|---|---|---:|" + "---:|" * (2 * len(tradeoffs))]
        for kind in dict.fromkeys(r["kind"] for r in rows):
            for training in ("per-data-set", "joint"):
                mine = [r for r in rows if r["kind"] == kind and r["training"] == training]
                val = float(np.mean([r["val_score"] for r in mine]))
                verdicts.setdefault(kind, {})[f"{name} {training}"] = val
                cells, deltas = [], []
                for t in tradeoffs:
                    at = sorted([r for r in mine if r["tradeoff"] == t], key=lambda r: r["seed"])
                    test = [r["test_score"] for r in at]
                    cells.append(f"{np.mean(test):.4f} ± {np.std(test):.4f}")
                    if training == "per-data-set":
                        deltas.append("–")
                        continue
                    ref = sorted([r for r in rows if r["kind"] == kind and r["training"] == "per-data-set"
                                  and r["tradeoff"] == t], key=lambda r: r["seed"])
                    d, lo, hi = paired_ci([r["test_per_query"] for r in at], [r["test_per_query"] for r in ref])
                    deltas.append(f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
                md.append(f"| {kind} | {training} | {val:.4f} | " + " | ".join(cells) + " | " + " | ".join(deltas)
                          + " |")
        md.append("")
    summary = {}
    md += ["## Decision (validation only)", ""]
    for kind, vals in verdicts.items():
        names = list(dict.fromkeys(k.rsplit(" ", 1)[0] for k in vals))
        deltas = {n: vals[f"{n} joint"] - vals[f"{n} per-data-set"] for n in names}
        wins = sum(d > 0 for d in deltas.values())
        summary[kind] = {"validation_delta": deltas, "joint_better_on_every_data_set": wins == len(deltas)}
        md.append(f"- {kind}: joint − per-data-set, mean validation Score over seeds and trade-offs: " + ", ".join(
            f"{k} {v:+.4f}" for k, v in deltas.items()) + f" → better on {wins} of {len(deltas)} data sets.")
    md.append("")
    (OUT / "radial_joint.json").write_text(json.dumps({"meta": meta, "summary": summary, "results": compact},
                                                      indent=2) + "\n")
    (OUT / "radial_joint.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
