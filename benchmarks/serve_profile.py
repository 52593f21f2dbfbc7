"""Where the routing server spends its CPU: py-spy samples of ``radialrouter serve`` under serve_load-style load.

The same three processes as ``serve_load.py`` (fake backend hub, server, this load generator), one level of
requests in flight, non-streaming; each path (bypass ``model=<LLM>``, routed ``model=radial``) runs alone while
py-spy samples the server (``--nonblocking``, so sampling does not slow it down). Reports the server's CPU time per
request and the top functions by own time (the innermost Python frame of each busy sample; native code — the
tokenizer, ONNX Runtime, SQLite, the socket calls — is charged to the Python function that called it).

    python benchmarks/serve_profile.py [--concurrency 16] [--requests 3000] [--label before]

Writes benchmarks/results/serve_profile_<label>.{json,md} and prints the table; needs ``pip install py-spy``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from serve_load import POOL, RESULTS, bodies_for, build_router, drive, serve, spawn, write_config

from radialrouter.serve.testing import free_port, wait_up

#: Innermost frames of a thread that waits (py-spy cannot always tell a parked thread from a running one).
WAITS = ("Condition.wait (", "Event.wait (", "_worker (", "Queue.get (")


def thread_names(raw: Path) -> dict[int, str]:
    """OS thread id → Python thread name, from py-spy's ``--threads`` stacks (``thread (0x…): name``)."""
    names = {}
    for line in raw.read_text().splitlines():
        first = line.split(";", 1)[0]
        match = re.match(r"thread \((\d+)\): (.*)", first)
        if match:
            names[int(match.group(1))] = match.group(2).strip()
    return names


def thread_cpu(pid: int) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def own_time(raw: Path, top: int) -> tuple[list[dict], int]:
    """Top functions by own time from py-spy's raw (collapsed-stack) output: each sample is charged to its
    innermost frame; samples of a parked thread (`WAITS`) are left out. Returns rows with the share of the other
    samples, and their number."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        if leaf.startswith(WAITS):
            continue
        name, _, where = leaf.partition(" (")
        where = where.rstrip(")")
        path, _, _ = where.rpartition(":")
        short = "/".join(Path(path).parts[-2:]) if path else where
        own[f"{name} ({short})"] += int(count)
        total += int(count)
    return [{"function": f, "samples": n, "share": n / max(total, 1)} for f, n in own.most_common(top)], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3000, help="Requests per path.")
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second.")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--label", default="latest", help="Suffix of the result files (before, after, …).")
    parser.add_argument("--router", help="Router directory (save_pretrained); default: the embedded router.")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    out: dict = {"benchmark": "serve_profile", "concurrency": args.concurrency, "requests": args.requests,
                 "backend_delay_ms": args.delay_ms, "paths": {}}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="serve-profile-") as tmp:
        tmp = Path(tmp)
        try:
            router_dir, router_desc, prompts = build_router(tmp / "router", args.router)
            hub_port, port = free_port(), free_port()
            hub = f"http://127.0.0.1:{hub_port}"
            load = Path(__file__).with_name("serve_load.py")
            procs.append(spawn([str(load), "--fake-hub-port", str(hub_port), "--delay-ms", str(args.delay_ms)],
                               tmp / "hub.log"))
            wait_up(f"{hub}/health", procs[-1], tmp / "hub.log")
            procs.append(serve(write_config(tmp / "serve.yaml", router_dir, hub, None, 10.0), port, tmp / "a.log"))
            pid = procs[-1].pid
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            out["router"] = router_desc
            for path, model in (("bypass", "mixtral"), ("routed", "radial")):
                bodies = bodies_for(prompts, args.requests, model)
                asyncio.run(drive(url, bodies[:300], args.concurrency, False, pid))  # warm-up
                raw = tmp / f"{path}.txt"
                spy = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format",
                                        "raw", "--nonblocking", "--threads", "--output", str(raw)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)  # py-spy attaches
                before = thread_cpu(pid)
                result = asyncio.run(drive(url, bodies, args.concurrency, False, pid))
                after = thread_cpu(pid)
                spy.send_signal(2)
                spy.wait(timeout=60)
                rows, busy = own_time(raw, args.top)
                names = thread_names(raw)
                threads: collections.Counter[str] = collections.Counter()
                for tid, t in after.items():
                    name = "event loop" if tid == pid else names.get(tid, "other")
                    threads[name] += 1000 * (t - before.get(tid, 0.0)) / len(bodies)
                out["paths"][path] = {"server_cpu_ms_per_request": result["server_cpu_ms_per_request"],
                                      "cpu_ms_per_request_by_thread": {k: round(v, 3) for k, v in threads.items()
                                                                       if v >= 0.005},
                                      "throughput_rps": result["throughput_rps"], "p50_ms": result["p50_ms"],
                                      "errors": result["errors"], "busy_samples": busy, "top_own": rows}
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"serve_profile_{args.label}.json").write_text(json.dumps(out, indent=2) + "\n")
    text = (f"# serve_profile ({args.label})\n\nRouter: {out['router']}. {args.requests} non-streaming requests per "
            f"path at {args.concurrency} in flight, fake backend delay {args.delay_ms:g} ms, pool {list(POOL)}, "
            f"load average at the end {out['load_average']}.\n\n")
    for path, p in out["paths"].items():
        text += (f"## {path}: {p['server_cpu_ms_per_request']:.2f} ms server CPU per request, "
                 f"{p['throughput_rps']:.0f} req/s, p50 {p['p50_ms']:.1f} ms, {p['errors']} errors\n\n"
                 "CPU ms per request by thread: " + ", ".join(
                     f"{k} {v:.2f}" for k, v in p.get("cpu_ms_per_request_by_thread", {}).items()) + "\n\n"
                 "| function (innermost Python frame) | share of samples (waits left out) |\n|---|---|\n"
                 + "".join(f"| `{r['function']}` | {100 * r['share']:.1f} % |\n" for r in p["top_own"]) + "\n")
    text += "Rerun: `python benchmarks/serve_profile.py --label <name>`\n"
    (RESULTS / f"serve_profile_{args.label}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
