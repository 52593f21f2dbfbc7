"""RadialRouter on RouterBench (3 tasks, 11 LLMs): the paper's Table 1 layout and Table 2 ablations.

Writes benchmarks/results/radial_routerbench3.json and .md. Per seed: the data file's own train/test split, a
validation split carved from train with that seed (model selection only; the test split is never used for it),
every router trained on the same embeddings (bundled all-MiniLM-L6-v2, frozen, cached).

Rows: RadialRouter per scenario (one model per λ, the paper's protocol), RadialRouter λ-conditioned (one model for
every λ), Best single, Task-best, Oracle (ties to the cheaper LLM of each query) and Random (expected value),
measured in the same run. Ablations and the T/τ sweep use the λ-conditioned model (one fit covers the three
scenarios) on fewer seeds; the sweep reports validation Score too, since that is what choosing by it may use.

    python benchmarks/radial_table.py                       # full run (about 30–40 CPU-minutes)
    python benchmarks/radial_table.py --seeds 0 --ablation-seeds 0 --no-sweep   # quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import SCENARIOS
from radialrouter.data import load_splits
from radialrouter.evaluation import evaluate_router
from radialrouter.routers import make_router
from radialrouter.routers.radial import RadialRouter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench3.parquet"
OUT = Path(__file__).resolve().parent / "results"
LAMS = tuple(SCENARIOS.values())
LABELS = {0.0: "PF", 0.02: "BA", 0.1: "CF"}
REFERENCES = ("best-single", "task-best", "oracle", "random")
PAPER = {"RadialRouter (paper, 6 tasks)": (0.816, 0.757, 0.715), "Best candidate (paper)": (0.813, 0.698, 0.660)}
ABLATIONS = {
    "RadialFormer → Star-Transformer": {"backbone": "star"},
    "RadialFormer → Transformer": {"backbone": "transformer"},
    "RadialFormer → MLP": {"backbone": "mlp"},
    "without L_KL": {"use_kl": False},
    "without L_qq": {"alpha": 0.0},
}
PAPER_ABLATIONS = {"full": (0.816, 0.757, 0.715), "RadialFormer → Star-Transformer": (0.813, 0.751, 0.709),
                   "RadialFormer → Transformer": (0.815, 0.753, 0.705), "RadialFormer → MLP": (0.781, 0.732, 0.701),
                   "without L_KL": (0.548, 0.442, 0.017), "without L_qq": (0.813, 0.740, 0.711)}
SWEEP = {"default (T = 2, τ = 1, α = 0.1)": {}, **{f"T = {t}": {"n_layers": t} for t in (1, 3)},
         **{f"τ = {t}": {"tau": t} for t in (0.1, 3.0, 10.0)}, "α = 0.5": {"alpha": 0.5},
         "d_model = 32": {"d_model": 32}, "dropout = 0.3": {"dropout": 0.3},
         "weight decay = 0.01": {"weight_decay": 0.01}, "lr = 3e-4": {"lr": 3e-4}, "batch = 128": {"batch_size": 128}}


def splits(seed: int, encoder: QueryEncoder):
    _, train, val, test = load_splits(str(DATA), seed=seed)
    return tuple(d.embed(encoder, progress=False) for d in (train, val, test))


def fit_eval(name: str, rows: dict, times: dict, seed: int, train, val, test, params: dict,
             lams=LAMS, val_scores: dict | None = None) -> None:
    """Fit one λ-conditioned (or λ-free) router and record its test rows at every λ."""
    start = time.process_time()
    router = RadialRouter(**{**params, "seed": seed}).fit(train, val)
    times[name].append(time.process_time() - start)
    for r in evaluate_router(router, test, lams):
        rows[name].append({**_row(r), "seed": seed})
    if val_scores is not None:
        val_scores[name].append(router.training_["val_score"])


def _row(r: dict) -> dict:
    return {k: r[k] for k in ("lam", "perf", "cost", "score")} | {"call_share": r["call_share"]}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for lam in LAMS:
        sel = [r for r in rows if r["lam"] == lam]
        out[LABELS[lam]] = {k: [float(np.mean([r[k] for r in sel])), float(np.std([r[k] for r in sel]))]
                            for k in ("perf", "cost", "score")} | {"n_seeds": len(sel)}
    return out


def table(summary: dict, title: str, extra: dict | None = None) -> list[str]:
    lines = [f"## {title}", "", "| Router | " + " | ".join(f"{s} Perf | {s} Cost | {s} Score" for s in LABELS.values())
             + " |", "|---|" + "---:|" * 9]
    for name, s in summary.items():
        cells = []
        for label in LABELS.values():
            m = s[label]
            cells += [f"{m['perf'][0]:.4f}", f"{m['cost'][0]:.3f}", f"**{m['score'][0]:.4f}** ± {m['score'][1]:.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, scores in (extra or {}).items():
        lines.append(f"| {name} | " + " | ".join(f" | | {v:.3f}" for v in scores).removeprefix(" ") + " |")
    return [*lines, ""]


def write(result: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "radial_routerbench3.json").write_text(json.dumps(result, indent=2) + "\n")
    meta = result["meta"]
    md = ["# RadialRouter on RouterBench (3 tasks, 11 LLMs)", "",
          f"Test split: {meta['n_test']} queries (arc-challenge, mbpp, winogrande); train {meta['n_train']}, "
          f"validation {meta['n_val']} carved from train per seed. Encoder: {meta['encoder']} (frozen). Score = "
          "Perf − λ·Cost, Cost in USD per 1,000 queries, macro average over tasks; mean ± std over seeds "
          f"{meta['seeds']}. Oracle ties go to the cheaper LLM of each query. Hyperparameters: "
          f"`{json.dumps(meta['params'])}`. Produced by `python benchmarks/radial_table.py`.", ""]
    md += table(result["table1"], "Table 1: Perf / Cost / Score per scenario",
                {k: v for k, v in PAPER.items()})
    md += ["Paper rows are the paper's own figures on all 6 RouterBench tasks (not comparable in absolute value: "
           "3 of the tasks are available here).", ""]
    wins = result.get("acceptance")
    if wins:
        md += ["**Acceptance** (mean over seeds): " + "; ".join(f"{k}: {v}" for k, v in wins.items()), ""]
    md += ["## Training time (CPU seconds per model, shared machine)", "", "| Router | mean | max |", "|---|---:|---:|"]
    for name, ts in result["fit_cpu_seconds"].items():
        md.append(f"| {name} | {np.mean(ts):.1f} | {np.max(ts):.1f} |")
    md.append("")
    if result.get("table2"):
        md += table(result["table2"], f"Table 2: ablations (λ-conditioned model, seeds {meta['ablation_seeds']})")
        md += ["Paper (Score PF/BA/CF): " + "; ".join(f"{k} {v[0]:.3f}/{v[1]:.3f}/{v[2]:.3f}"
                                                   for k, v in PAPER_ABLATIONS.items()), ""]
    if result.get("sweep"):
        md += table(result["sweep"], f"Sweep (λ-conditioned, seeds {meta['ablation_seeds']}; default T = "
                    f"{meta['params'].get('n_layers', 2)}, τ = {meta['params'].get('tau')}, "
                    f"α = {meta['params'].get('alpha')})")
        md += ["Validation Score (mean over the three scenarios) of each sweep setting: " + "; ".join(
            f"{k} {np.mean(v):.4f}" for k, v in result["sweep_val"].items()), ""]
    (OUT / "radial_routerbench3.md").write_text("\n".join(md) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--ablation-seeds", default="0")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="Rewrite the .md from the existing .json.")
    args = parser.parse_args()
    if args.report_only:
        write(json.loads((OUT / "radial_routerbench3.json").read_text()))
        return
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    ab_seeds = [int(s) for s in args.ablation_seeds.split(",")]
    encoder = QueryEncoder()
    params = {k: v for k, v in RadialRouter().get_params().items() if k not in {"seed", "lam", "lam_conditioned"}}
    rows: dict[str, list] = defaultdict(list)
    times: dict[str, list] = defaultdict(list)
    data = {s: splits(s, encoder) for s in sorted(set(seeds) | set(ab_seeds))}
    train, val, test = data[seeds[0]]
    result = {"meta": {"data": str(DATA), "data_fingerprint": train.fingerprint(), "n_train": len(train),
                       "n_val": len(val), "n_test": len(test), "encoder": encoder.name, "seeds": seeds,
                       "ablation_seeds": ab_seeds, "params": params, "torch_threads": args.threads,
                       "machine": platform.processor() or platform.machine()}}
    for seed in seeds:
        train, val, test = data[seed]
        for name in REFERENCES:
            router = make_router(name, **({"seed": seed} if name == "random" else {})).fit(train, val)
            rows[name] += [{**_row(r), "seed": seed} for r in evaluate_router(router, test)]
        fit_eval("RadialRouter (λ-conditioned)", rows, times, seed, train, val, test,
                 {**params, "lam_conditioned": True})
        for lam in LAMS:
            start = time.process_time()
            router = RadialRouter(**params, lam=lam, lam_conditioned=False, seed=seed).fit(train, val)
            times["RadialRouter (per scenario)"].append(time.process_time() - start)
            rows["RadialRouter (per scenario)"] += [{**_row(r), "seed": seed}
                                                    for r in evaluate_router(router, test, [lam])]
        print(f"seed {seed} done", flush=True)
        result["table1"] = {name: summarise(rs) for name, rs in rows.items()}
        result["fit_cpu_seconds"] = dict(times)
        result["rows"] = dict(rows)
        write(result)
    t1 = result["table1"]
    acc = {}
    for name in ("RadialRouter (λ-conditioned)", "RadialRouter (per scenario)"):
        beats = [t1[name][s]["score"][0] > max(t1["best-single"][s]["score"][0], t1["task-best"][s]["score"][0])
                 for s in LABELS.values()]
        acc[name] = f"beats Best single and Task-best in {sum(beats)}/3 scenarios"
    result["acceptance"] = acc
    write(result)
    ab_rows: dict[str, list] = defaultdict(list)
    ab_rows["full"] = [r for r in rows["RadialRouter (λ-conditioned)"] if r["seed"] in ab_seeds]
    for seed in ab_seeds:
        train, val, test = data[seed]
        for name, change in ABLATIONS.items():
            fit_eval(name, ab_rows, times, seed, train, val, test, {**params, "lam_conditioned": True, **change})
        result["table2"] = {name: summarise(rs) for name, rs in ab_rows.items()}
        result["fit_cpu_seconds"] = dict(times)
        write(result)
        print(f"ablations seed {seed} done", flush=True)
    if not args.no_sweep:
        sw_rows: dict[str, list] = defaultdict(list)
        sw_val: dict[str, list] = defaultdict(list)
        for seed in ab_seeds:
            train, val, test = data[seed]
            for name, change in SWEEP.items():
                fit_eval(name, sw_rows, times, seed, train, val, test, {**params, "lam_conditioned": True, **change},
                         val_scores=sw_val)
            result["sweep"] = {name: summarise(rs) for name, rs in sw_rows.items()}
            result["sweep_val"] = dict(sw_val)
            write(result)
            print(f"sweep seed {seed} done", flush=True)


if __name__ == "__main__":
    main()
