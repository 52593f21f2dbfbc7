"""Static (model2vec, distilled from the bundled MiniLM) vs MiniLM query embeddings, inside the project's harness.

For each shared data set, each encoder × {radial, mlp, knn}, 5 seeds on the same splits: Score at the named
trade-offs (mean ± std over seeds, macro over tasks), AIQ where the data has costs, and a paired bootstrap 95 %
interval of Score(static) − Score(MiniLM) (test queries resampled within each task and seed, 2,000 replicates;
the same seeds give both encoders the same splits). Plus each encoder's encoding throughput on 512 prompts of the
data set, cache off, and what that projects for all of its prompts.

    python benchmarks/encoders.py [--data routerbench3,routerdc7,llmrouter9,mmlupro29] [--seeds 0,1,2,3,4]

Writes benchmarks/results/encoders.{json,md} and prints the table. Data sets without cost columns (routerdc7,
llmrouter9, mmlupro29 as loaded today) are compared at λ = 0 (Score = accuracy); routerdc7 uses RouterDC's protocol
(train on its five in-distribution tasks, test on those and the three out-of-distribution ones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from radialrouter.core.encoders import DEFAULT_ENCODER, STATIC_ENCODER, QueryEncoder
from radialrouter.core.objective import COST_SCALE, SCENARIOS
from radialrouter.data import load_splits
from radialrouter.evaluation import DEFAULT_SWEEP, aiq, summarize
from radialrouter.routers.registry import make_seeded

#: Rows with a missing quality cell are excluded, as when the published report was made: this script reads
#: the labels of its routers' choices itself (`load_splits(missing="keep")` routes among observed LLMs only in
#: `evaluate_router`).
MISSING = "exclude"

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
ROUTERS = ("radial", "mlp", "knn")
ENCODERS = {"minilm": DEFAULT_ENCODER, "static": STATIC_ENCODER}
PROTOCOL = {  # data set → load_splits keyword arguments (the protocol its report uses)
    "routerdc7": {"train_tasks": "mmlu,gsm8k,cmmlu,arc_challenge,humaneval",
                  "test_tasks": "mmlu,gsm8k,cmmlu,arc_challenge,humaneval,MATH_prealgebra,mbpp,ceval"},
}
BOOTSTRAP = 2000


def per_query_scores(router, test, lams) -> dict[float, np.ndarray]:
    out = {}
    for lam in lams:
        o = router.outcomes(test, lam)
        out[lam] = o.perf - lam * o.cost * COST_SCALE
    return out


def macro(values: np.ndarray, tasks: np.ndarray) -> float:
    return float(np.mean([values[tasks == t].mean() for t in dict.fromkeys(tasks.tolist())]))


def paired_bootstrap(diffs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> tuple[float, float]:
    """95 % interval of the seed-averaged macro difference; queries resampled within task and seed."""
    reps = np.zeros(BOOTSTRAP)
    for d, tasks in diffs:
        per_task = []
        for t in dict.fromkeys(tasks.tolist()):
            x = d[tasks == t]
            per_task.append(x[rng.integers(0, len(x), size=(BOOTSTRAP, len(x)))].mean(axis=1))
        reps += np.mean(per_task, axis=0)
    reps /= len(diffs)
    return float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))


def throughput(encoder_name: str, prompts: list[str]) -> dict[str, float]:
    enc = QueryEncoder(encoder_name, cache_dir=False)
    enc.encode(prompts[:8])  # load
    start = time.perf_counter()
    enc.encode(prompts, batch_size=32 if encoder_name == DEFAULT_ENCODER else 1024)
    seconds = time.perf_counter() - start
    return {"queries_per_s": len(prompts) / seconds, "backend": enc.active_backend}


def run_dataset(name: str, seeds: list[int], threads: int) -> dict:
    path = DATA / f"{name}.parquet"
    kwargs = PROTOCOL.get(name, {})
    full0, *_ = load_splits(str(path), seed=seeds[0], missing=MISSING, **kwargs)
    lams = list(SCENARIOS.values()) if full0.has_cost else [0.0]
    sweep = sorted(set(DEFAULT_SWEEP) | set(lams)) if full0.has_cost else lams
    vectors = {}
    speed = {}
    sample = full0.prompts[np.random.default_rng(0).permutation(len(full0))[:512]].tolist()
    for label, enc_name in ENCODERS.items():
        torch.set_num_threads(2)  # encoding: both cores; training below: `threads`
        speed[label] = throughput(enc_name, sample)
        speed[label]["projected_all_prompts_s"] = len(full0) / speed[label]["queries_per_s"]
        enc = QueryEncoder(enc_name)
        start = time.perf_counter()
        vectors[label] = (enc, full0.embed(enc, progress=True).embeddings)
        speed[label]["embed_all_s_this_run"] = time.perf_counter() - start  # ~0 when the cache was warm
    torch.set_num_threads(threads)
    rows, per_query = [], {}
    for seed in seeds:
        full, train, val, test = load_splits(str(path), seed=seed, missing=MISSING, **kwargs)
        assert np.array_equal(full.ids, full0.ids)
        for label, (enc, emb) in vectors.items():
            f = full.with_embeddings(emb, enc.identity)
            tr, te = f.select("train"), f.select("test", "unsplit")
            va = f.select("val") if val is not None else None
            for router_name in ROUTERS:
                start = time.perf_counter()
                router = make_seeded(router_name, seed).fit(tr, va)
                fit_s = time.perf_counter() - start
                scores = per_query_scores(router, te, sweep)
                per_query[(label, router_name, seed)] = (scores, te.tasks)
                curve = None
                if full0.has_cost:
                    points = [summarize(*_perf_cost(router, te, lam), te.tasks, lam)["macro"] for lam in sweep]
                    curve = [(p.cost, p.perf) for p in points]
                rows.append({"encoder": label, "router": router_name, "seed": seed, "fit_s": fit_s,
                             "score": {str(lam): macro(scores[lam], te.tasks) for lam in lams}, "curve": curve})
                print(f"{name} seed {seed} {label:6s} {router_name:6s} "
                      + " ".join(f"{rows[-1]['score'][str(lam)]:.3f}" for lam in lams) + f"  fit {fit_s:.1f}s",
                      flush=True)
    return summarise(name, lams, rows, per_query, speed, full0, kwargs)


def _perf_cost(router, test, lam):
    o = router.outcomes(test, lam)
    return o.perf, o.cost


def summarise(name, lams, rows, per_query, speed, full, kwargs) -> dict:
    rng = np.random.default_rng(0)
    table = []
    seeds = sorted({r["seed"] for r in rows})
    for router_name in ROUTERS:
        entry = {"router": router_name}
        for label in ENCODERS:
            mine = [r for r in rows if r["router"] == router_name and r["encoder"] == label]
            entry[label] = {str(lam): {"mean": float(np.mean([r["score"][str(lam)] for r in mine])),
                                       "std": float(np.std([r["score"][str(lam)] for r in mine]))} for lam in lams}
            entry[label]["fit_s"] = float(np.median([r["fit_s"] for r in mine]))
            if mine[0]["curve"] is not None:
                # AIQ on the cost range both encoders' curves of this router and seed share
                aiqs = []
                for seed in seeds:
                    both = [r for r in rows if r["router"] == router_name and r["seed"] == seed]
                    costs = [c for r in both for c, _ in r["curve"]]
                    rng_c = (min(costs), max(costs))
                    curve = next(r["curve"] for r in both if r["encoder"] == label)
                    aiqs.append(aiq([c for c, _ in curve], [p for _, p in curve], rng_c))
                entry[label]["aiq"] = {"mean": float(np.mean(aiqs)), "std": float(np.std(aiqs))}
        entry["static_minus_minilm"] = {}
        for lam in lams:
            diffs = []
            for seed in seeds:
                s_static, tasks = per_query[("static", router_name, seed)]
                s_minilm, _ = per_query[("minilm", router_name, seed)]
                diffs.append((s_static[lam] - s_minilm[lam], tasks))
            mean = float(np.mean([macro(d, t) for d, t in diffs]))
            lo, hi = paired_bootstrap(diffs, rng)
            entry["static_minus_minilm"][str(lam)] = {"mean": mean, "ci95": [lo, hi]}
        table.append(entry)
    return {"data": name, "protocol": kwargs or "the data set's own split", "lams": lams, "n": len(full),
            "has_cost": full.has_cost, "seeds": seeds, "table": table, "encoding": speed, "rows": rows}


def write(results: list[dict], meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "encoders.json").write_text(json.dumps({"meta": meta, "datasets": results}, indent=1) + "\n")
    names = {0.0: "PF", 0.02: "BA", 0.1: "CF"}
    lines = ["# Static (model2vec) vs MiniLM query embeddings", "",
             f"Static encoder: `{STATIC_ENCODER}` (model2vec distilled from the bundled all-MiniLM-L6-v2, 128 dims; "
             f"see `src/radialrouter/pretrained/encoders/{STATIC_ENCODER}/provenance.json`). MiniLM: "
             f"`{DEFAULT_ENCODER}`, backend {meta['minilm_backend']}. Same splits, seeds and routers for both; "
             "Score is macro over tasks, mean ± std over seeds; Δ is static − MiniLM with a paired bootstrap 95 % "
             "interval (queries resampled within task and seed). Δ whose interval contains 0 is within noise.", "",
             f"Machine: {meta['machine']}; load average before {meta['load_before']}, after {meta['load_after']}; "
             f"training with {meta['threads']} torch thread(s); {meta['wall_s']:.0f} s in all.", ""]
    for res in results:
        lams = res["lams"]
        head = " | ".join(f"{names.get(lam, f'λ={lam}')} MiniLM | {names.get(lam, f'λ={lam}')} static | Δ [95 % CI]"
                          for lam in lams)
        lines += [f"## {res['data']} ({res['n']} queries; {'with cost' if res['has_cost'] else 'quality only: λ = 0'})",
                  "", f"| router | {head} |" + (" AIQ MiniLM | AIQ static |" if res["has_cost"] else ""),
                  "|---|" + "---:|" * (3 * len(lams) + (2 if res["has_cost"] else 0))]
        for e in res["table"]:
            cells = []
            for lam in lams:
                m, s = e["minilm"][str(lam)], e["static"][str(lam)]
                d = e["static_minus_minilm"][str(lam)]
                cells += [f"{m['mean']:.3f} ± {m['std']:.3f}", f"{s['mean']:.3f} ± {s['std']:.3f}",
                          f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"]
            if res["has_cost"]:
                cells += [f"{e[k]['aiq']['mean']:.3f}" for k in ("minilm", "static")]
            lines.append(f"| {e['router']} | " + " | ".join(cells) + " |")
        enc = res["encoding"]
        lines += ["", "Encoding (512 prompts of this data set, cache off, 2 threads): "
                  + "; ".join(f"{k} {v['queries_per_s']:.0f} queries/s ({v['backend']}), all "
                              f"{res['n']} prompts ≈ {v['projected_all_prompts_s']:.1f} s" for k, v in enc.items())
                  + ".", ""]
    lines += ["## Verdict", "", *verdict(results), "",
              "Rerun: `python benchmarks/encoders.py` (`--report-only` rewrites this page from encoders.json)", ""]
    (RESULTS / "encoders.md").write_text("\n".join(lines))
    print("\n".join(lines))


def verdict(results: list[dict]) -> list[str]:
    """Where the static encoder is outside noise (its 95 % interval excludes 0), per data set."""
    names = {0.0: "PF", 0.02: "BA", 0.1: "CF"}
    out, everywhere = [], True
    for res in results:
        worse, better = [], []
        for e in res["table"]:
            for lam in res["lams"]:
                d = e["static_minus_minilm"][str(lam)]
                label = f"{e['router']} {names.get(lam, lam)} ({d['mean']:+.3f})"
                if d["ci95"][1] < 0:
                    worse.append(label)
                elif d["ci95"][0] > 0:
                    better.append(label)
        everywhere &= not worse
        text = "within noise everywhere" if not worse and not better else "; ".join(
            part for part in (f"static loses: {', '.join(worse)}" if worse else "",
                              f"static wins: {', '.join(better)}" if better else "") if part)
        out.append(f"- **{res['data']}**: {text}.")
    out.append("- Overall: " + ("the static encoder is within noise of MiniLM on every data set." if everywhere else
               "the static encoder is **not** within noise of MiniLM on every data set, so MiniLM stays the training "
               "default (`train`, `bench`). The embedded router is a routerbench3 router, where static is within "
               "noise, so it and the server default use the static encoder; train with `--encoder static` for "
               "sub-millisecond routing on your own data after checking this comparison on it."))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="routerbench3,routerdc7,llmrouter9,mmlupro29")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while training.")
    parser.add_argument("--report-only", action="store_true", help="Rewrite encoders.md from encoders.json.")
    args = parser.parse_args()
    if args.report_only:
        doc = json.loads((RESULTS / "encoders.json").read_text())
        write(doc["datasets"], doc["meta"])
        return
    started, load_before = time.perf_counter(), os.getloadavg()
    results = [run_dataset(name, [int(s) for s in args.seeds.split(",")], args.threads)
               for name in args.data.split(",")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "threads": args.threads, "wall_s": time.perf_counter() - started, "commit": commit.stdout.strip(),
            "minilm_backend": QueryEncoder(DEFAULT_ENCODER).active_backend, "torch": torch.__version__}
    write(results, meta)


if __name__ == "__main__":
    main()
