"""Which query encoder should ``radialrouter train`` use by default? Validation figures only.

For each data set and seed: the file's train split with the seed's validation carve-out (`load_splits`), the default
router (RadialRouter, default settings) trained on frozen embeddings of each encoder, and its Score on the
VALIDATION split at the pool's named trade-offs (λ = 0 only for quality-only data). The test split is not touched:
the default is a setting, chosen on validation. Encoding and training times are recorded too, since the default
decides what a first run costs.

    python benchmarks/encoder_default.py [--data routerbench3 llmrouter9] [--seeds 0 1]

Writes benchmarks/results/encoder_default.json and .md.
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
from radialrouter.data import embed_together, load_splits
from radialrouter.evaluation import evaluate_router
from radialrouter.routers.radial import RadialRouter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ENCODERS = ("minilm", "static")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["routerbench3", "llmrouter9"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "encoder_default"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before, started = os.getloadavg(), time.perf_counter()
    rows = []
    for name in args.data:
        path = SHARED / f"{name}.parquet"
        for seed in args.seeds:
            _, train, val, _ = load_splits(str(path), seed=seed)
            presets = tradeoff_presets(train.quality, train.cost) if train.has_cost else {"performance-first": 0.0}
            for enc_name in ENCODERS:
                encoder = QueryEncoder(enc_name)
                t0 = time.perf_counter()
                tr, va = embed_together(encoder, [train, val], progress=False)
                encode_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                router = RadialRouter(seed=seed, encoder=encoder).fit(tr, va)
                fit_s = time.perf_counter() - t0
                figures = {r["scenario"] if r.get("scenario") else f"{r['lam']:g}": round(float(r["score"]), 4)
                           for r in evaluate_router(router, va, list(presets.values()), presets)}
                rows.append({"data": name, "seed": seed, "encoder": enc_name, "val_score": figures,
                             "encode_seconds_cached_or_not": round(encode_s, 1), "fit_seconds": round(fit_s, 1)})
                print(json.dumps(rows[-1]), flush=True)
    doc = {"rows": rows, "seeds": args.seeds, "threads": args.threads, "seconds": round(time.perf_counter() - started),
           "load_average": {"before": load_before, "after": os.getloadavg()}}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {out.with_suffix('.md')}")


def markdown(doc: dict) -> str:
    """Mean validation Score per data set, encoder and trade-off, with static − MiniLM per seed."""
    lines = ["# Default encoder for `train`: RadialRouter validation Score, MiniLM vs static", "",
             f"Seeds {doc['seeds']}; {doc['threads']} torch thread(s); load average before "
             f"{doc['load_average']['before'][0]:.2f}, after {doc['load_average']['after'][0]:.2f}; "
             f"{doc['seconds']} s. Validation split only (the test split is not used to choose a default).", "",
             "| data | trade-off | MiniLM | static | static − MiniLM per seed |", "|---|---|---:|---:|---|"]
    for name in dict.fromkeys(r["data"] for r in doc["rows"]):
        sel = [r for r in doc["rows"] if r["data"] == name]
        for scenario in sel[0]["val_score"]:
            m = {s: [r["val_score"][scenario] for r in sel if r["encoder"] == s] for s in ENCODERS}
            diffs = ", ".join(f"{b - a:+.4f}" for a, b in zip(m["minilm"], m["static"]))
            lines.append(f"| {name} | {scenario} | {np.mean(m['minilm']):.4f} | {np.mean(m['static']):.4f} | "
                         f"{diffs} |")
    lines += ["", "| data | encoder | fit s (mean) |", "|---|---|---:|"]
    for name in dict.fromkeys(r["data"] for r in doc["rows"]):
        for enc in ENCODERS:
            fits = [r["fit_seconds"] for r in doc["rows"] if r["data"] == name and r["encoder"] == enc]
            lines.append(f"| {name} | {enc} | {np.mean(fits):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
