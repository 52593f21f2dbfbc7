"""Batch routing at scale: `radialrouter route --input FILE.parquet --output OUT.parquet` on N synthetic queries.

Runs the real command in a subprocess per configuration and samples the memory of its whole process tree (the
Ray engine's raylet, GCS and worker actors are descendants of the driver), so peak memory covers everything the
run started:

* ``in-memory`` baseline: the pre-streaming path (read the whole file, encode it, route it, write it), on fewer rows
  (it grows with the file);
* ``local`` engine at several chunk sizes, on all N rows;
* ``ray`` engine (Ray Data, ``map_batches`` with one router per actor) on all N rows.

Peak memory is reported two ways: ``peak_rss_mb`` (the driver process alone; exact, from getrusage for the local
runs) and ``peak_tree_pss_mb`` (sum of the proportional set size of every process in the tree, sampled every
0.5 s: shared pages, e.g. the Ray object store in /dev/shm, counted once). The bundled router (static encoder).

    python benchmarks/batch_route.py                      # 1 M queries (writes benchmarks/results/batch_route.*)
    python benchmarks/batch_route.py --rows 100000 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

_SUBJECTS = ["a Python list", "a binary tree", "the French Revolution", "photosynthesis", "a SQL join", "inflation",
             "the Pythagorean theorem", "a REST API", "quantum entanglement", "a haiku about autumn", "a cover letter",
             "the derivative of x^3", "a bash script", "Newton's second law", "a marketing email", "the Krebs cycle",
             "a linked list in C", "supply and demand", "a sonnet", "the capital of Australia"]
_TEMPLATES = ["What is {s}?", "Explain {s} to a ten-year-old.", "Write {s} in under 100 words.",
              "How do I sort {s}?", "Give three facts about {s}.", "Summarise {s} in one sentence.",
              "Why does {s} matter, and what are common mistakes people make with it?",
              "Compare {s} with something similar and list the differences.", "Translate {s} into German.",
              "Fix the bug in my code about {s}: it raises an IndexError on the last element."]


def make_queries(path: Path, rows: int, seed: int = 0, row_group: int = 65536) -> None:
    """``rows`` short synthetic queries (template × subject × a number, 5–20 words), written as parquet in row
    groups of ``row_group``, with an ``id`` column, without ever holding more than one row group."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([("id", pa.int64()), ("prompt", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            t, s, k = rng.integers(len(_TEMPLATES), size=n), rng.integers(len(_SUBJECTS), size=n), rng.integers(
                1000, size=n)
            prompts = [f"{_TEMPLATES[a].format(s=_SUBJECTS[b])} (case {c})" for a, b, c in zip(t, s, k)]
            writer.write_table(pa.table({"id": np.arange(start, start + n), "prompt": prompts}, schema=schema))


_BASELINE = """
import json, sys, time
from radialrouter.policy.calibration import read_queries
from radialrouter.routers.radial import load_default
src, out = sys.argv[1], sys.argv[2]
texts = read_queries(src)
router = load_default()
router.get_encoder().cache_dir = None
decisions = router.route(router.get_encoder().encode(texts), lam=None)
with open(out, "w") as f:
    f.write("".join(json.dumps({"prompt": t, **d.to_dict()}) + "\\n" for t, d in zip(texts, decisions)))
"""


def _tree_pss_mb(proc: psutil.Process) -> tuple[float, int]:
    total, count = 0.0, 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20, count


def _high_water_mb(pid: int) -> float:
    """The process's own peak resident set (VmHWM), which the kernel keeps: exact up to the last sample."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_config(name: str, command: list[str], rows: int, env: dict[str, str], timeout: float) -> dict:
    """Run ``command``; sample its process tree's memory; return seconds, rows/s and peaks."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak = {"pss": 0.0, "procs": 0, "hwm": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                pss, count = _tree_pss_mb(watched)
            except psutil.NoSuchProcess:
                break
            peak["pss"], peak["procs"] = max(peak["pss"], pss), max(peak["procs"], count)
            peak["hwm"] = max(peak["hwm"], _high_water_mb(proc.pid))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        err = f"timed out after {timeout:.0f} s\n{err}"
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    result = {"config": name, "rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds, 1),
              "peak_driver_rss_mb": round(peak["hwm"], 1),
              "peak_tree_pss_mb": round(peak["pss"], 1), "max_processes": peak["procs"], "returncode": proc.returncode}
    if proc.returncode != 0:
        result["error"] = err.strip().splitlines()[-1:] if err else ""
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", default="25000,50000,100000", help="rows for the in-memory baseline runs")
    parser.add_argument("--chunks", default="1024,8192,65536", help="chunk sizes for the local engine")
    parser.add_argument("--ray-workers", default="2", help="actor counts for the Ray engine ('' to skip Ray)")
    parser.add_argument("--ray-chunk", type=int, default=8192)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--quick", action="store_true", help="one local chunk size and one Ray run (a smoke test)")
    parser.add_argument("--out", default=str(RESULTS / "batch_route"))
    parser.add_argument("--from-json", action="store_true", help="only rewrite the report from OUT.json")
    parser.add_argument("--paired-rerun", help="with --from-json: the JSON of a rerun of two configurations back to "
                        "back, added to OUT.json and the report")
    args = parser.parse_args()
    if args.from_json:
        out = Path(args.out)
        doc = json.loads(out.with_suffix(".json").read_text())
        if args.paired_rerun:
            doc["paired_rerun"] = json.loads(Path(args.paired_rerun).read_text())
        write(doc, out)
        return
    chunks = [int(c) for c in args.chunks.split(",") if c]
    baseline_rows = [int(r) for r in args.baseline_rows.split(",") if r]
    if args.quick:
        chunks, baseline_rows = chunks[1:2] or chunks, baseline_rows[:1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    load_before = os.getloadavg()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="batch_route_") as tmp:
        tmp = Path(tmp)
        env["RADIALROUTER_CACHE"] = str(tmp / "cache")
        data = tmp / "queries.parquet"
        t0 = time.perf_counter()
        make_queries(data, args.rows)
        print(f"{args.rows:,} queries generated in {time.perf_counter() - t0:.1f} s "
              f"({data.stat().st_size / 2**20:.1f} MB parquet)", flush=True)
        cli = [sys.executable, "-m", "radialrouter", "route", "--input"]

        def report(r: dict) -> None:
            runs.append(r)
            print(json.dumps(r), flush=True)

        for n in baseline_rows:
            small = tmp / f"queries_{n}.parquet"
            pq.write_table(pq.read_table(data).slice(0, n), small)
            report({**run_config(f"in-memory ({n:,} rows)", [sys.executable, "-c", _BASELINE, str(small),
                                                               str(tmp / "base.jsonl")], n, env, args.timeout),
                    "engine": "in-memory", "chunk": None})
            (tmp / "base.jsonl").unlink(missing_ok=True)
        for chunk in chunks:
            out = tmp / "out.parquet"
            report({**run_config(f"local, chunk {chunk:,}", [*cli, str(data), "--output", str(out), "--chunk-size",
                                                             str(chunk), "--threads", "1"], args.rows, env,
                                 args.timeout), "engine": "local", "chunk": chunk})
            out.unlink(missing_ok=True)
        for workers in [int(w) for w in args.ray_workers.split(",") if w]:
            out = tmp / "out.parquet"
            report({**run_config(f"ray, {workers} actors, chunk {args.ray_chunk:,}",
                                 [*cli, str(data), "--output", str(out), "--chunk-size", str(args.ray_chunk),
                                  "--engine", "ray", "--workers", str(workers)], args.rows, env, args.timeout),
                    "engine": "ray", "chunk": args.ray_chunk, "workers": workers})
            out.unlink(missing_ok=True)
    doc = {
        "benchmark": "batch_route", "rows": args.rows, "router": "bundled routerbench3-radial (static encoder)",
        "output": "parquet", "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total
                                                                                      / 2**30, 1),
                                         "python": platform.python_version(), "load_before": load_before,
                                         "load_after": os.getloadavg()},
        "runs": runs,
    }
    write(doc, Path(args.out))


def write(doc: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(doc))
    print(table(doc))


def report(doc: dict) -> str:
    """The Markdown report: the table, what it shows (figures computed from the runs) and the cluster picture."""
    m, runs = doc["machine"], [r for r in doc["runs"] if r["returncode"] == 0]
    local = [r for r in runs if r["engine"] == "local"]
    ray = [r for r in runs if r["engine"] == "ray"]
    memory = [r for r in runs if r["engine"] == "in-memory"]
    base = next((r for r in local if r["chunk"] == 8192), local[0] if local else None)
    lines = [
        "# Batch routing: chunked single process vs Ray Data",
        "",
        f"`radialrouter route --input queries.parquet --output decisions.parquet` on {doc['rows']:,} synthetic "
        f"short queries (`benchmarks/batch_route.py`: 10 templates × 20 subjects × a number, 5–20 words; "
        f"{doc['router']}; parquet output). Each configuration is the real command in its own process; memory is "
        "sampled every 0.5 s over its whole process tree (Ray's GCS, raylet and actors included).",
        "",
        f"Machine: {m['cpus']} CPU cores, {m['memory_gb']} GB RAM, Python {m['python']}; shared with other jobs: "
        f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in m['load_before'])} before the runs and "
        f"{'/'.join(f'{x:.1f}' for x in m['load_after'])} after, so the absolute rates are low and noisy; the "
        "memory figures and the ratios are what carry over.",
        "",
        table(doc),
        "",
        "- *peak RSS, driver*: the `radialrouter` process's own high-water mark (VmHWM). *peak PSS, process tree*: "
        "sum of proportional set sizes over the process and its descendants (shared pages counted once), sampled.",
        "- *in-memory*: the path `route --input` took before this change (read the whole file, encode it, route it, "
        "write it), on fewer rows because its memory grows with the file.",
        "",
        "## What it shows",
        "",
    ]
    if memory and len(memory) > 1:
        a, b = memory[0], memory[-1]
        per_k = (b["peak_driver_rss_mb"] - a["peak_driver_rss_mb"]) / ((b["rows"] - a["rows"]) / 1000)
        lines.append(f"- Memory of the in-memory path grows with the file: {a['peak_driver_rss_mb']:,.0f} MB at "
                     f"{a['rows']:,} rows, {b['peak_driver_rss_mb']:,.0f} MB at {b['rows']:,} (~{per_k:.0f} MB per "
                     f"1,000 queries, so ~{per_k * 1000 / 1024:.0f} GB for a million: it cannot route one on this "
                     "machine).")
    if local:
        lo, hi = min(local, key=lambda r: r["chunk"]), max(local, key=lambda r: r["chunk"])
        lines.append(f"- The chunked local engine routes all {doc['rows']:,} rows in "
                     f"{lo['peak_driver_rss_mb']:,.0f} MB at chunk {lo['chunk']:,} up to "
                     f"{hi['peak_driver_rss_mb']:,.0f} MB at chunk {hi['chunk']:,}: memory is set by the chunk size, "
                     "not by the file. Rates: "
                     + ", ".join(f"{r['rows_per_s']:,.0f} rows/s at chunk {r['chunk']:,}" for r in local) + ".")
        if base is not lo:
            lines.append(f"- Most of a chunk's memory is the router's activations (the in-memory slope above). "
                         f"Chunk {lo['chunk']:,} instead of the default {base['chunk']:,} cuts the peak by "
                         f"{1 - lo['peak_driver_rss_mb'] / base['peak_driver_rss_mb']:.0%} for "
                         f"{1 - lo['rows_per_s'] / base['rows_per_s']:.0%} less throughput in this run; chunk "
                         f"{hi['chunk']:,} ran at {hi['rows_per_s'] / base['rows_per_s']:.2f}× the default's rate with "
                         f"{hi['peak_driver_rss_mb'] / base['peak_driver_rss_mb']:.1f}× its memory.")
    for r in ray:
        ratio = r["rows_per_s"] / base["rows_per_s"] if base else float("nan")
        lines.append(f"- Ray Data with {r['workers']} actors: {r['rows_per_s']:,.0f} rows/s ({ratio:.2f}× the local "
                     f"engine at chunk {base['chunk']:,}, which runs one torch thread), driver "
                     f"{r['peak_driver_rss_mb']:,.0f} MB, {r['peak_tree_pss_mb']:,.0f} MB over its "
                     f"{r['max_processes']} processes (GCS, raylet, actors each with its own torch and router, "
                     f"object store): bounded too, {r['peak_tree_pss_mb'] / base['peak_tree_pss_mb']:.1f}× the "
                     "local engine's. Ray's gain is the second core; its "
                     "costs are a scheduler, start-up (each actor imports torch and loads the router) and moving "
                     "every batch through the object store.")
    rerun = doc.get("paired_rerun")
    if rerun:
        rm = rerun["machine"]
        lines += ["", "## Paired rerun", "",
                  f"The runs above took {sum(r['seconds'] for r in doc['runs']) / 60:.0f} minutes on a machine "
                  "shared with other jobs whose load changed meanwhile, so the two engines were rerun back to back, "
                  "at the default chunk size: load "
                  f"{'/'.join(f'{x:.1f}' for x in rm['load_before'])} before, "
                  f"{'/'.join(f'{x:.1f}' for x in rm['load_after'])} after.", "", table(rerun)]
        pair = {r["engine"]: r for r in rerun["runs"] if r["returncode"] == 0}
        if {"local", "ray"} <= set(pair):
            lines += ["", f"Ray with {pair['ray']['workers']} actors ran at "
                      f"{pair['ray']['rows_per_s'] / pair['local']['rows_per_s']:.2f}× the local engine's rate, "
                      f"with {pair['ray']['peak_tree_pss_mb'] / pair['local']['peak_tree_pss_mb']:.1f}× its memory "
                      "(process tree)."]
            if ray and base:
                first = ray[0]["rows_per_s"] / base["rows_per_s"]
                again = pair["ray"]["rows_per_s"] / pair["local"]["rows_per_s"]
                lines += ["", f"Taken together: Ray ran at {min(first, again):.2f}× to {max(first, again):.2f}× the "
                          "local engine's rate on this machine. With two cores shared with other jobs, whether the "
                          "second core happens to be free decides more than the engine; Ray's memory cost (a router "
                          "and torch per actor, plus its own processes) is paid either way. On one machine of this "
                          "size, the local engine is the one to use; Ray is for machines with idle cores to spare "
                          "and for clusters."]
    lines += [
        "",
        "## On a real cluster (on paper, not measured here)",
        "",
        "- Start Ray on the nodes (`ray start --head`, `ray start --address=HEAD:6379`) and run `radialrouter route "
        "--engine ray --ray-address auto` (or set `RAY_ADDRESS`) on the head; the input path must be readable from "
        "every node (a shared filesystem) and, for its header, from the driver.",
        "- Each actor routes at about the single-process rate of one core (one torch thread each), so throughput "
        "scales with the actors — `--workers`, one CPU each — until the driver, which receives every decision and "
        "writes the one output file in input order, saturates. Past that point the step to take is writing a "
        "directory of files from the workers (`Dataset.write_parquet`) instead of one file; this command does not do "
        "that yet.",
        "- Memory per node: per actor about the local engine's peak at the same chunk size (torch, the router and "
        "one chunk's activations: ~1 GB at 8,192), plus Ray's processes and object store, which Ray Data's "
        "streaming executor keeps bounded by back-pressure; the driver holds a few batches at a time.",
        "- The embedding cache (`radialrouter embed --engine ray`) is a SQLite file in each node's cache folder: "
        "on a cluster every node fills its own, so run `embed` where `train` will run, or point "
        "`RADIALROUTER_CACHE` at a folder of that machine; SQLite over a network filesystem is not safe.",
        "",
    ]
    return "\n".join(lines)


def table(doc: dict) -> str:
    """The Markdown table of the runs; ratios against the local engine at the default chunk size (8,192)."""
    base = next((r for r in doc["runs"] if r["engine"] == "local" and r["chunk"] == 8192), None)
    lines = ["| configuration | rows | seconds | rows/s | vs local 8,192 | peak RSS, driver (MB) | "
             "peak PSS, process tree (MB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        ratio = f"{r['rows_per_s'] / base['rows_per_s']:.2f}×" if base and r["returncode"] == 0 else "–"
        status = "" if r["returncode"] == 0 else f" (failed: {r.get('error')})"
        lines.append(f"| {r['config']}{status} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | "
                     f"{ratio} | {r['peak_driver_rss_mb']:,.0f} | {r['peak_tree_pss_mb']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
