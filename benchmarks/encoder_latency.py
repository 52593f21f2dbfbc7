"""Query-encoder latency by backend: one ~150-token query, one short query, batched throughput, cosine to torch fp32.

    python benchmarks/encoder_latency.py                 # all variants, 2 threads
    python benchmarks/encoder_latency.py --runs 50 --n-batch 256 --threads 2

Variants (all the default encoder, all-MiniLM-L6-v2, mean pooling, L2-normalised, max 256 tokens):
* ``torch-fp32`` — the reference: Hugging Face model (SDPA attention) under ``torch.inference_mode``.
* ``onnx-fp32`` — ``QueryEncoder(backend="onnx")``: the same weights under ONNX Runtime with fused kernels.
* ``torch-bf16`` — bfloat16 autocast, only on CPUs with native bf16 (AVX512-BF16 or AMX), where
  ``precision="auto"`` picks it.
* ``static`` — the shipped static encoder (``QueryEncoder("static")``: model2vec distilled from MiniLM, 128-d): a
  token lookup and a mean; its vectors live in another space, so no cosine to torch applies.
* ``torch-int8`` / ``onnx-int8`` — dynamic int8 quantisation of the Linear/MatMul weights (torch
  ``quantize_dynamic``; ORT ``quantize_dynamic`` per-channel, reduce-range), measured only to show why they are not
  offered: they move the vectors (cosine to fp32 well below 0.999).

Single-query latency is the whole `encode` call without the embedding cache (tokenise, run, pool), measured
round-robin over the variants so that the load of this shared machine hits them alike: p50/p95/min over ``--runs``
runs after warm-up. The floor: the model's FLOP count for one query over the CPU's fp32 FMA peak.
Writes benchmarks/results/encoder_latency.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from radialrouter.core.encoders import QueryEncoder, onnx_available

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
LONG_QUERY_ROW = 40  # routerdc7 question of 150 tokens (MATH prealgebra, a deck-of-cards probability question)
FLOPS_PER_CYCLE_AVX2 = 32  # 2 × 256-bit FMA units × 8 fp32 lanes × 2 FLOP, per core (Zen 2/3, Haswell+)


def encoder_flops(encoder: QueryEncoder, tokens: int) -> float:
    """Forward FLOPs of a BERT-style encoder on one sequence: the dense layers plus attention scores/mixing."""
    config = encoder.model.config
    h, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * tokens * (4 * h * h + 2 * h * ff)
    attention = 2 * 2 * tokens * tokens * h
    return float(layers * (dense + attention))


def cpu_ghz() -> float | None:
    """Current clock of the first core (None where the VM hides it)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.lower().startswith("cpu mhz"):
            return float(line.split(":")[1]) / 1000.0
    return None


def build_variants(threads: int, tmp: Path) -> dict[str, QueryEncoder]:
    """One encoder per variant, none using the embedding cache, all loaded and warmed."""
    variants = {"torch-fp32": QueryEncoder(cache_dir=False, backend="torch", precision="fp32")}
    if QueryEncoder(cache_dir=False, backend="torch").precision == "bf16":  # the CPU has native bf16
        variants["torch-bf16"] = QueryEncoder(cache_dir=False, backend="torch", precision="bf16")
    torch_int8 = QueryEncoder(cache_dir=False, backend="torch", precision="fp32").load()
    torch_int8._model = torch.ao.quantization.quantize_dynamic(torch_int8._model, {torch.nn.Linear}, torch.qint8)
    variants["torch-int8"] = torch_int8
    if onnx_available():
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import quantize_dynamic

        variants["onnx-fp32"] = QueryEncoder(cache_dir=False, backend="onnx")
        onnx_int8 = QueryEncoder(cache_dir=False, backend="onnx")
        assert onnx_int8.active_backend == "onnx"
        quantized = tmp / "int8.onnx"
        quantize_dynamic(onnx_int8.onnx_path(), quantized, per_channel=True, reduce_range=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        onnx_int8._session = ort.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])
        variants["onnx-int8"] = onnx_int8
    else:
        print("onnxruntime/onnx not installed: skipping the ONNX variants (pip install 'radialrouter[onnx]')")
    variants["static"] = QueryEncoder("static", cache_dir=False).load()
    return variants


def round_robin(variants: dict[str, QueryEncoder], text: str, runs: int, warmup: int = 5) -> dict[str, np.ndarray]:
    """Milliseconds per `encode([text])`, variants interleaved run by run."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + runs):
        for name, encoder in variants.items():
            start = time.perf_counter()
            encoder.encode(text)
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: np.asarray(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--n-batch", type=int, default=256)
    parser.add_argument("--n-cosine", type=int, default=200, help="routerdc7 questions for the cosine check")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (DATA / "routerbench3.parquet").exists():
        raise SystemExit(f"{DATA} has no routerbench3.parquet: this benchmark needs the shared data")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    questions = pd.read_parquet(DATA / "routerdc7.parquet", columns=["question"]).question
    long_query = str(questions[LONG_QUERY_ROW])
    short_query = "Write a python function to reverse the words of a sentence."
    prompts = pd.read_parquet(DATA / "routerbench3.parquet", columns=["prompt"]).prompt.sample(
        args.n_batch, random_state=0).tolist()
    cosine_texts = questions.sample(args.n_cosine, random_state=1).tolist() + prompts[:50]

    with tempfile.TemporaryDirectory() as tmp:
        variants = build_variants(args.threads, Path(tmp))
        reference = variants["torch-fp32"]
        tokens_long = len(reference.tokenize([long_query])["input_ids"][0])
        tokens_short = len(reference.tokenize([short_query])["input_ids"][0])
        ref_vectors = reference.encode(cosine_texts, batch_size=16)
        rows = {name: {"variant": name, "backend": enc.active_backend} for name, enc in variants.items()}
        for name, encoder in variants.items():
            if encoder.dim != reference.dim:  # another vector space (the static encoder)
                rows[name].update(cos_min=None, cos_mean=None)
                continue
            cos = (encoder.encode(cosine_texts, batch_size=16) * ref_vectors).sum(1)
            rows[name].update(cos_min=float(cos.min()), cos_mean=float(cos.mean()))
        for label, text in (("long", long_query), ("short", short_query)):
            for name, t in round_robin(variants, text, args.runs).items():
                rows[name].update({f"{label}_p50_ms": float(np.median(t)), f"{label}_p95_ms": float(np.percentile(
                    t, 95)), f"{label}_min_ms": float(t.min())})
        for name, encoder in variants.items():
            start = time.perf_counter()
            encoder.encode(prompts, batch_size=32 if encoder.active_backend != "static" else 1024)
            rows[name]["batch_queries_per_s"] = args.n_batch / (time.perf_counter() - start)

    base = rows["torch-fp32"]
    flops = encoder_flops(reference, tokens_long)
    for row in rows.values():
        row["long_speedup_vs_torch"] = base["long_p50_ms"] / row["long_p50_ms"]
        same_model = row["cos_min"] is not None  # the FLOP count is MiniLM's; the static encoder runs none of it
        row["long_gflops_at_p50"] = flops / row["long_p50_ms"] / 1e6 if same_model else None
        row["long_gflops_at_min"] = flops / row["long_min_ms"] / 1e6 if same_model else None
    ghz = cpu_ghz()
    peak = FLOPS_PER_CYCLE_AVX2 * args.threads * (ghz or 3.0)
    meta = {
        "threads": args.threads, "runs": args.runs, "tokens_long": tokens_long, "tokens_short": tokens_short,
        "n_batch": args.n_batch, "n_cosine": len(cosine_texts), "gflop_long_query": flops / 1e9,
        "cpu": platform.processor() or platform.machine(), "cpu_ghz": ghz, "assumed_peak_gflops": peak,
        "floor_ms_at_peak_fp32": flops / peak / 1e6, "load_average": list(map(float, Path(
            "/proc/loadavg").read_text().split()[:3])) if Path("/proc/loadavg").exists() else None,
        "torch": torch.__version__,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "encoder_latency.json").write_text(json.dumps({"meta": meta, "results": list(rows.values())},
                                                             indent=2))
    cols = ["variant", "backend", "long_p50_ms", "long_p95_ms", "long_min_ms", "short_p50_ms", "short_p95_ms",
            "batch_queries_per_s", "long_speedup_vs_torch", "long_gflops_at_p50", "cos_min", "cos_mean"]
    lines = ["## Query-encoder latency (all-MiniLM-L6-v2 backends, and the static encoder distilled from it)", "",
             f"{tokens_long}-token and {tokens_short}-token query, {args.threads} threads, {args.runs} runs each "
             f"(round-robin); batch = {args.n_batch} routerbench3 prompts; cosine on {len(cosine_texts)} real "
             f"prompts vs torch-fp32. One long query = {flops / 1e9:.2f} GFLOP: at the assumed fp32 peak of "
             f"{peak:.0f} GFLOP/s ({args.threads} cores × {FLOPS_PER_CYCLE_AVX2} FLOP/cycle × "
             f"{ghz or 3.0:.2f} GHz) the floor is {meta['floor_ms_at_peak_fp32']:.1f} ms. "
             f"Load average during the run: {meta['load_average']}.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows.values():
        lines.append("| " + " | ".join("–" if row[c] is None else f"{row[c]:.4f}" if c.startswith("cos") else
                                       (f"{row[c]:.2f}" if row[c] < 10 else f"{row[c]:.1f}")
                                       if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")
    markdown = "\n".join(lines) + "\n"
    (RESULTS / "encoder_latency.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
