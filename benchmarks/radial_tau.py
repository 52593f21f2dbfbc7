"""RadialRouter's target temperature τ on each pool's scale, and its probability calibration (issue #23 item 4).

For each data set and seed (`load_splits` splits, rows with a missing cell excluded, frozen MiniLM embeddings): one
RadialRouter (defaults otherwise) per τ in {1 (the default), `tau_grid`} — the grid is `TAU_FRACTIONS` (0.1, 0.3,
1, 3) × the spread of quality − λ·cost on the training split at the named trade-offs, the values ``tau="auto"``
tries — scored on the **validation** split at the named trade-offs. ``tau="auto"`` keeps the grid value with the
best mean validation Score (what this script reports as the auto pick is exactly what ``tau="auto"`` trains: every
trial is the same seeded fit). **Decision on validation only**: the default τ changes only if some setting beats
τ = 1 on mean validation Score on every data set and seed.

Calibration (for the τ = 1 router): the temperature T per named trade-off fitted on validation
(`RadialRouter.calibrate_probabilities`, ``labels="pick"``), the binary NLL and the expected calibration error of
p(pick) against the pick's quality (10 equal-width bins) before and after, on validation (where T is fitted) and on
test (held out; reported, never used to choose anything).

    python benchmarks/radial_tau.py [--seeds 0,1] [--data routerbench3,llmrouter9] [--threads 1]

Writes benchmarks/results/radial_tau.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
from radial_variants import DATASETS, OUT, SHARED, macro

from radialrouter.core.objective import TAU_FRACTIONS


def calibration_stats(router, data, lam: float) -> dict[str, float]:
    """With the reported probabilities: the binary NLL and the expected calibration error (10 equal-width bins) of
    p(pick) against the pick's quality (what ``labels="pick"`` calibrates), and the ECE against "the pick is one of
    the query's best LLMs under quality − λ·cost" (``labels="best"``'s event)."""
    from radialrouter.core.objective import utility
    from radialrouter.routers.base import observed_candidates

    x = router._inputs(data)
    _, proba = router._scores_and_proba(x, lam, observed_candidates(data))
    pick = router.predict(data, lam, observed_candidates(data))
    seen = np.isfinite(data.quality)
    u = np.where(seen, utility(data.quality, data.cost, lam), -np.inf)
    best = u >= u.max(axis=1, keepdims=True) - 1e-9
    rows = np.arange(len(data))
    conf = proba[rows, pick]
    quality = np.clip(data.quality[rows, pick], 0, 1)
    p = conf.clip(1e-12, 1 - 1e-12)
    nll = -np.mean(quality * np.log(p) + (1 - quality) * np.log1p(-p))
    bins = np.minimum((conf * 10).astype(int), 9)

    def ece(y: np.ndarray) -> float:
        return float(sum(abs(conf[bins == k].mean() - y[bins == k].mean()) * (bins == k).mean()
                         for k in range(10) if (bins == k).any()))

    return {"nll": float(nll), "ece": ece(quality), "ece_best": ece(best[rows, pick].astype(float)),
            "mean_conf": float(conf.mean()), "median_conf": float(np.median(conf)),
            "pick_quality": float(quality.mean()), "pick_is_best": float(best[rows, pick].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--data", default="routerbench3,llmrouter9")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the saved .json, no training")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((OUT / "radial_tau.json").read_text())
        meta = saved["meta"]
        write(saved["fits"], saved["calibration"], meta["seeds"], meta["loadavg_before"], meta["wall_seconds"],
              meta["threads"], meta["loadavg_after"])
        return
    from radialrouter.core.threads import apply_threads

    apply_threads(args.threads)
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.core.objective import tau_grid, tradeoff_presets
    from radialrouter.data import load_splits
    from radialrouter.routers.radial import RadialRouter

    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before, started = os.getloadavg(), time.perf_counter()
    encoder = QueryEncoder()
    fits, calibration = [], []
    for name in args.data.split(","):
        file, kwargs = DATASETS[name]
        for seed in seeds:
            full = load_splits(str(SHARED / file), seed=seed, missing="exclude", **kwargs)[0].embed(
                encoder, progress=False)
            train, val, test = full.select("train"), full.select("val"), full.select("test", "unsplit")
            presets = tradeoff_presets(train.quality, train.cost)
            grid = tau_grid(train.quality, train.cost, tuple(presets.values()))
            for tau in dict.fromkeys([1.0, *grid]):
                t0 = time.perf_counter()
                router = RadialRouter(seed=seed, tau=tau).fit(train, val)
                fit_s = time.perf_counter() - t0
                row = {"data": name, "seed": seed, "tau": tau, "in_grid": tau in grid,
                       "fraction": TAU_FRACTIONS[grid.index(tau)] if tau in grid else None,
                       "val_mean": router.training_["val_score"], "best_step": router.training_["best_step"],
                       "fit_seconds": round(fit_s, 1),
                       "val": {k: macro(router, val, lam) for k, lam in presets.items()}}
                fits.append(row)
                print(f"{name} seed {seed} τ={tau:g}: val mean {row['val_mean']:.4f} "
                      + " ".join(f"{k} {v:.4f}" for k, v in row["val"].items()) + f" ({fit_s:.0f} s)", flush=True)
                if tau == 1.0:
                    cal = router.training_["probability_calibration"]
                    for k, lam in presets.items():
                        stats = {}
                        for split, data in (("val", val), ("test", test)):
                            saved = router.proba_temperature_
                            router.proba_temperature_ = None
                            stats[f"{split}_before"] = calibration_stats(router, data, lam)
                            router.proba_temperature_ = saved
                            stats[f"{split}_after"] = calibration_stats(router, data, lam)
                        calibration.append({"data": name, "seed": seed, "tradeoff": k, "lam": lam,
                                            "T": router.proba_temperature(lam), **stats})
                    print(f"  calibration T = {cal['temperatures']}", flush=True)
    write(fits, calibration, seeds, load_before, time.perf_counter() - started, args.threads)


def write(fits: list[dict], calibration: list[dict], seeds: list[int], load_before, wall: float,
          threads: int, load_after=None) -> None:
    load_after = load_after or os.getloadavg()
    meta = {"seeds": seeds, "threads": threads, "wall_seconds": round(wall, 1),
            "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in load_after],
            "encoder": "all-MiniLM-L6-v2 (frozen, cached embeddings)", "selection": "validation only"}
    md = ["# RadialRouter: target temperature τ and probability calibration", "",
          f"Seeds {seeds}, {threads} thread(s), wall {wall:.0f} s, load average before "
          f"{', '.join(f'{v:.2f}' for v in load_before)}, after {', '.join(f'{v:.2f}' for v in load_after)} "
          "(2 cores shared with other jobs). Validation Score (macro over tasks) per named trade-off; τ = 1 is "
          "the default, the others are `tau_grid` (fraction × the spread of quality − λ·cost on the training "
          "split). `python benchmarks/radial_tau.py`.", ""]
    summary: dict[str, dict] = {}
    for name in dict.fromkeys(f["data"] for f in fits):
        rows = [f for f in fits if f["data"] == name]
        tradeoffs = list(rows[0]["val"])
        md += [f"## {name}", "", "| seed | τ | fraction | " + " | ".join(f"val {k}" for k in tradeoffs)
               + " | val mean | best step | fit s |", "|---|---:|---:|" + "---:|" * (len(tradeoffs) + 3)]
        for f in rows:
            md.append(f"| {f['seed']} | {f['tau']:g} | {'' if f['fraction'] is None else f['fraction']} | "
                      + " | ".join(f"{f['val'][k]:.4f}" for k in tradeoffs)
                      + f" | {f['val_mean']:.4f} | {f['best_step']} | {f['fit_seconds']:.0f} |")
        per_seed = {}
        for seed in dict.fromkeys(f["seed"] for f in rows):
            mine = [f for f in rows if f["seed"] == seed]
            base = next(f for f in mine if f["tau"] == 1.0)
            grid = [f for f in mine if f["in_grid"]]
            auto = max(grid, key=lambda f: f["val_mean"])  # first maximum: `tau="auto"`'s tie rule
            per_seed[seed] = {"tau1": base["val_mean"], "auto_tau": auto["tau"], "auto": auto["val_mean"],
                              "by_fraction": {str(f["fraction"]): f["val_mean"] - base["val_mean"] for f in grid}}
        summary[name] = per_seed
        md += ["", "| seed | val mean, τ = 1 | auto's pick | val mean, auto | auto − τ=1 | "
               "per fraction − τ=1 (0.1 / 0.3 / 1 / 3) |", "|---|---:|---:|---:|---:|---|"]
        for seed, s in per_seed.items():
            md.append(f"| {seed} | {s['tau1']:.4f} | {s['auto_tau']:g} | {s['auto']:.4f} | "
                      f"{s['auto'] - s['tau1']:+.4f} | "
                      + " / ".join(f"{v:+.4f}" for v in s["by_fraction"].values()) + " |")
        md.append("")
    md += ["## Decision (validation only)", "",
           "Rule: the default τ changes only if one setting (a grid fraction, or `tau='auto'`) beats τ = 1 on mean "
           "validation Score on every data set and seed.", ""]
    changes = []
    for label in ["auto", *[str(f) for f in TAU_FRACTIONS]]:
        deltas = [(s["auto"] - s["tau1"]) if label == "auto" else s["by_fraction"].get(label, float("nan"))
                  for per_seed in summary.values() for s in per_seed.values()]
        wins = all(d > 0 for d in deltas)
        changes.append(wins)
        md.append(f"- {'tau=auto' if label == 'auto' else f'fraction {label}'}: "
                  + ", ".join(f"{d:+.4f}" for d in deltas) + (" — beats τ = 1 everywhere" if wins else ""))
    md += ["", "**Default**: " + ("change it (see above)." if any(changes) else
                                  "τ = 1 stays (no setting beats it on every data set and seed); `tau='auto'` is "
                                  "an option."), ""]
    md += ["## Probability calibration (τ = 1 router; T fitted on validation, labels='pick')", "",
           "p(pick) against the pick's quality: binary NLL and ECE (10 bins); 'ECE vs best' scores the same p(pick) "
           "against 'the pick is one of the query's best LLMs'. Test is held out and chose nothing.", "",
           "| data | seed | trade-off | T | val NLL | val ECE | test NLL | test ECE | test ECE vs best | "
           "test median p(pick) | test mean pick quality |", "|---|---|---|---:|---|---|---|---|---|---|---:|"]
    for c in calibration:
        vb, va, tb, ta = c["val_before"], c["val_after"], c["test_before"], c["test_after"]
        md.append(f"| {c['data']} | {c['seed']} | {c['tradeoff']} | {c['T']:.3g} | "
                  f"{vb['nll']:.3f} → {va['nll']:.3f} | {vb['ece']:.3f} → {va['ece']:.3f} | "
                  f"{tb['nll']:.3f} → {ta['nll']:.3f} | {tb['ece']:.3f} → {ta['ece']:.3f} | "
                  f"{tb['ece_best']:.3f} → {ta['ece_best']:.3f} | "
                  f"{tb['median_conf']:.3f} → {ta['median_conf']:.3f} | {ta['pick_quality']:.3f} |")
    md.append("")
    (OUT / "radial_tau.json").write_text(json.dumps({"meta": meta, "summary": summary, "fits": fits,
                                                     "calibration": calibration}, indent=1) + "\n")
    (OUT / "radial_tau.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
