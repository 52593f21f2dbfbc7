"""Routing latency of RadialRouter per backbone, measured in one run on the same machine and thread count.

For each backbone (a model fitted briefly on RouterBench, 11 LLMs — the weights do not change the cost):
- ``route()`` of one query from a precomputed embedding (encoder excluded): p50 / p95 over ``--runs`` calls;
- ``route()`` of one query text with the bundled encoder, embedding cache off (encoder included): p50 / p95;
- throughput of ``route()`` on batches of 64 precomputed embeddings (queries per second, median batch).
Writes benchmarks/results/radial_latency.json and .md. The machine is shared, so medians are the figures to quote.

    python benchmarks/radial_latency.py [--runs 300] [--text-runs 30] [--repeats 3] [--threads 2]
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

from radialrouter.data import load_splits
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
    """``n`` distinct test prompts cut to about ``tokens`` tokens (the latency target is for ~150-token queries;
    RouterBench prompts are either shorter or longer than the 256-token cap)."""
    tokenizer = encoder._load_tokenizer()
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) >= tokens:
            out.append(tokenizer.decode(ids[: tokens - 2]))  # + [CLS], [SEP]
        if len(out) == n:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--text-runs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
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
    routers = {b: RadialRouter(backbone=b, steps=1, patience=None).fit(train) for b in BACKBONES}
    x1, x64 = test.embeddings[:1], test.embeddings[:64]
    samples: dict = {b: {} for b in BACKBONES}
    # Round-robin over backbones and encoders, ``--repeats`` times: load on this shared machine hits all alike.
    for _ in range(args.repeats):
        for backbone, router in routers.items():
            router.encoder = None
            got = samples[backbone]
            got.setdefault("embedding", []).extend(
                timings(lambda router=router: router.route(x1, lam=0.02), args.runs))
            got.setdefault("batch", []).extend(
                timings(lambda router=router: router.route(x64, lam=0.02), max(args.runs // 10, 10)))
            for label, enc in live.items():
                router.encoder = enc
                it = iter(texts * 2)
                got.setdefault(label, []).extend(
                    timings(lambda router=router, it=it: router.route(next(it), lam=0.02), args.text_runs - 1))
    results = {}
    for backbone, got in samples.items():
        results[backbone] = {
            "embedding_p50_ms": float(np.median(got["embedding"])),
            "embedding_p95_ms": float(np.percentile(got["embedding"], 95)),
            "batch64_queries_per_s": float(64 / (np.median(got["batch"]) / 1000.0)),
            "parameters": int(sum(p.numel() for p in routers[backbone].net_.parameters())),
        }
        for label in live:
            suffix = "" if label == "default" else f"_{label}"
            results[backbone][f"text{suffix}_p50_ms"] = float(np.median(got[label]))
            results[backbone][f"text{suffix}_p95_ms"] = float(np.percentile(got[label], 95))
        print(backbone, {k: round(v, 3) for k, v in results[backbone].items()}, flush=True)
    meta = {"runs": args.runs, "text_runs": args.text_runs, "repeats": args.repeats, "torch_threads": args.threads,
            "n_llms": len(train.llms),
            "params": RadialRouter().get_params(), "encoder": encoder.name,
            "text_encoders": {k: f"{e.precision} {e.active_backend}" for k, e in live.items()},
            "text_tokens": [len(live["default"].tokenize([t])["input_ids"][0]) for t in texts],
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "radial_latency.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    md = ["# RadialRouter routing latency (11 LLMs, batch 1 unless stated)", "",
          f"{args.threads} torch thread(s), shared CPU ({meta['machine']}); median and p95 of {args.repeats} × "
          f"{args.runs} calls of `route()` from a precomputed embedding, {args.repeats} × {args.text_runs - 1} calls "
          "from text, round-robin over backbones and encoders "
          f"(test prompts cut to {min(meta['text_tokens'])}–{max(meta['text_tokens'])} tokens) with the bundled "
          "encoder "
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
