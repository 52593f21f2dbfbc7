"""Routing latency of RadialRouter per backbone, measured in one run on the same machine and thread count.

For each backbone (a model fitted briefly on RouterBench, 11 LLMs — the weights do not change the cost):
- ``route()`` of one query from a precomputed embedding (encoder excluded): p50 / p95 over ``--runs`` calls;
- ``route()`` of one query text with the bundled encoder, embedding cache off (encoder included): p50 / p95;
- throughput of ``route()`` on batches of 64 precomputed embeddings (queries per second, median batch).
Writes benchmarks/results/radial_latency.json and .md. The machine is shared, so medians are the figures to quote.

    python benchmarks/radial_latency.py [--runs 300] [--text-runs 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from radialrouter.cli.common import load_splits
from radialrouter.encoders import QueryEncoder, onnx_available
from radialrouter.routers.radial import RadialRouter
from radialrouter.routers.radialformer import BACKBONES

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench3.parquet"
OUT = Path(__file__).resolve().parent / "results"


def timings(fn, runs: int) -> np.ndarray:
    fn()  # warm-up
    out = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out * 1000.0


def queries_of_about(prompts: list[str], encoder: QueryEncoder, tokens: int, n: int) -> list[str]:
    """``n`` prompts whose token count is closest to ``tokens`` (the latency target is for ~150-token queries)."""
    counts = encoder.tokenize(prompts)["attention_mask"].sum(1).numpy()
    return [prompts[i] for i in np.argsort(np.abs(counts - tokens), kind="stable")[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--text-runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="torch/ONNX threads (2 = this machine's cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    encoder = QueryEncoder()
    _, train, _, test = load_splits(str(DATA), seed=0)
    train, test = train.embed(encoder, progress=False), test.embed(encoder, progress=False)
    # No cache: every text is really encoded. The default (precision and backend "auto") and, where it differs,
    # the portable fp32 ONNX encoder.
    live = {"default": QueryEncoder(cache_dir=False)}
    if onnx_available() and live["default"].active_backend != "onnx":
        live["onnx-fp32"] = QueryEncoder(cache_dir=False, backend="onnx")
    texts = queries_of_about(test.prompts.tolist(), live["default"], 150, args.text_runs)
    results = {}
    for backbone in BACKBONES:
        router = RadialRouter(backbone=backbone, steps=1, patience=None).fit(train)
        x1, x64 = test.embeddings[:1], test.embeddings[:64]
        emb = timings(lambda x1=x1, router=router: router.route(x1, lam=0.02), args.runs)
        batch = timings(lambda x64=x64, router=router: router.route(x64, lam=0.02), max(args.runs // 10, 10))
        results[backbone] = {
            "embedding_p50_ms": float(np.median(emb)), "embedding_p95_ms": float(np.percentile(emb, 95)),
            "batch64_queries_per_s": float(64 / (np.median(batch) / 1000.0)),
            "parameters": int(sum(p.numel() for p in router.net_.parameters())),
        }
        for label, enc in live.items():
            router.encoder = enc
            it = iter(texts * 2)
            text = timings(lambda router=router, it=it: router.route(next(it), lam=0.02), args.text_runs - 1)
            suffix = "" if label == "default" else f"_{label}"
            results[backbone][f"text{suffix}_p50_ms"] = float(np.median(text))
            results[backbone][f"text{suffix}_p95_ms"] = float(np.percentile(text, 95))
        print(backbone, {k: round(v, 3) for k, v in results[backbone].items()}, flush=True)
    meta = {"runs": args.runs, "text_runs": args.text_runs, "torch_threads": args.threads, "n_llms": len(train.llms),
            "params": RadialRouter().get_params(), "encoder": encoder.name,
            "text_encoders": {k: f"{e.precision} {e.active_backend}" for k, e in live.items()},
            "text_tokens": [len(live["default"].tokenize([t])["input_ids"][0]) for t in texts],
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "radial_latency.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    md = ["# RadialRouter routing latency (11 LLMs, batch 1 unless stated)", "",
          f"One run, {args.threads} torch thread(s), shared CPU ({meta['machine']}); median and p95 of "
          f"{args.runs} calls of `route()` from a precomputed embedding, {args.text_runs - 1} calls from text "
          f"(test prompts of {min(meta['text_tokens'])}–{max(meta['text_tokens'])} tokens) with the bundled encoder "
          f"({encoder.name}, cache off; default = {meta['text_encoders']['default']}"
          + (", onnx-fp32 = the portable ONNX Runtime export" if "onnx-fp32" in live else "")
          + "). Produced by `python benchmarks/radial_latency.py`.", "",
          "| Backbone | params | embedding p50 ms | p95 ms | text p50 ms | p95 ms |"
          + (" text (onnx-fp32) p50 ms | p95 ms |" if "onnx-fp32" in live else "") + " batch-64 queries/s |",
          "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if "onnx-fp32" in live else "") + "---:|"]
    for name, r in results.items():
        onnx = (f" {r['text_onnx-fp32_p50_ms']:.1f} | {r['text_onnx-fp32_p95_ms']:.1f} |"
                if "onnx-fp32" in live else "")
        md.append(f"| {name} | {r['parameters']:,} | {r['embedding_p50_ms']:.3f} | {r['embedding_p95_ms']:.3f} | "
                  f"{r['text_p50_ms']:.1f} | {r['text_p95_ms']:.1f} |{onnx} {r['batch64_queries_per_s']:,.0f} |")
    md += ["", "Paper (hardware and what was timed unknown): RadialFormer 10.7 ms, Star-Transformer 13.5, "
           "Transformer 15.8, MLP 4.6 per query.", ""]
    (OUT / "radial_latency.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
