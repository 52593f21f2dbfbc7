"""Is a deep ensemble of MLPs a better default than one MLP? (issue #23: a lever for the router to ship)

On the bench's splits of the four shared data sets (the same seeds, task splits and prices as the
``*_ensemble`` bench reports; MiniLM embeddings from the cache), fit ``mlp`` and ``mlp`` with ``ensemble=5`` (five
networks side by side, mean of their logits) per seed. The choice is made on validation only: each router's own
checkpoint criterion, the mean macro Score over the named trade-offs on the validation split; the test split's
Scores are reported for the record.

    python benchmarks/mlp_ensemble.py [--data routerbench3,routerdc7,llmrouter9,mmlupro29] [--seeds 0,1,2,3,4]

Writes benchmarks/results/mlp_ensemble.{json,md} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import tradeoff_presets
from radialrouter.data import load_splits
from radialrouter.evaluation import evaluate_router
from radialrouter.routers import make_router

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
#: data set → load_splits arguments, as in the bench reports' provenance
SETS = {"routerbench3": {},
        "routerdc7": {"train_tasks": "mmlu,gsm8k,cmmlu,arc_challenge,humaneval",
                      "test_tasks": "mmlu,gsm8k,cmmlu,arc_challenge,humaneval,MATH_prealgebra,mbpp,ceval"},
        "llmrouter9": {"prices": str(DATA / "prices.json")}, "mmlupro29": {"prices": str(DATA / "prices.json")}}
VARIANTS = {"mlp": {}, "mlp, ensemble=5": {"ensemble": 5}}


def se(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=",".join(SETS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    encoder = QueryEncoder()
    out: dict = {"benchmark": "mlp_ensemble", "seeds": seeds, "data": {}}
    started = time.perf_counter()
    for name in args.data.split(","):
        vectors, lams, runs = None, None, {v: [] for v in VARIANTS}
        for seed in seeds:
            full, train, val, test = load_splits(DATA / f"{name}.parquet", seed=seed, **SETS[name])
            if vectors is None:
                vectors = full.embed(encoder, progress=False).embeddings
            full = full.with_embeddings(vectors, encoder.identity)
            train, val, test = full.select("train"), full.select("val"), full.select("test", "unsplit")
            if lams is None:  # the named trade-offs of the first seed's training split, as the bench keeps them
                lams = sorted(set(tradeoff_presets(train.quality, train.cost).values()))
            for variant, params in VARIANTS.items():
                router = make_router("mlp", seed=seed, **params)
                router.encoder = encoder
                router.fit(train, val)
                runs[variant].append({"seed": seed, "val": router.training_["best_val_score"],
                                      "test": [r["score"] for r in evaluate_router(router, test, lams)]})
        rows = {v: {"val": float(np.mean([r["val"] for r in rs])), "val_se": se([r["val"] for r in rs]),
                    "test": np.mean([r["test"] for r in rs], axis=0).round(4).tolist(), "runs": rs}
                for v, rs in runs.items()}
        chosen = max(rows, key=lambda v: (rows[v]["val"], v == "mlp"))
        out["data"][name] = {"lams": lams, "variants": rows, "chosen_on_validation": chosen}
        print(name, {v: (round(r["val"], 4), r["test"]) for v, r in rows.items()}, "→", chosen, flush=True)
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mlp_ensemble.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# One MLP or a deep ensemble of five (issue #23)", "",
             f"Bench splits of each data set, seeds {', '.join(map(str, seeds))}; validation Score = the MLP's "
             "checkpoint criterion (mean macro Score over the named trade-offs on the validation split); test "
             f"Scores at the named trade-offs for the record. {out['seconds']:.0f} s, load average at the end "
             f"{out['load_average']}.", "",
             "| data | variant | validation Score (± s.e.) | test Score per trade-off | chosen on validation |",
             "|---|---|---:|---|---|"]
    for name, d in out["data"].items():
        for v, r in d["variants"].items():
            chosen = "yes" if d["chosen_on_validation"] == v else ""
            lines.append(f"| {name} | {v} | {r['val']:.4f} ± {r['val_se']:.4f} | "
                         f"{' / '.join(f'{x:.4f}' for x in r['test'])} | {chosen} |")
    lines += ["", "The default stays one MLP unless the ensemble leads on validation on every data set.", "",
              "Rerun: `python benchmarks/mlp_ensemble.py`"]
    (RESULTS / "mlp_ensemble.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
