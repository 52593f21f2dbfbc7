"""radialrouter against LiteLLM's proxy: the same fake backend behind each gateway, side by side on one machine.

Processes: the fake backend hub of ``serve_load.py`` (each pool LLM at ``/<name>/v1``, fixed delay), ``radialrouter
serve`` (decision log, metrics; routing bypassed with ``model=<LLM>`` or routed with ``model=radial``), LiteLLM's
proxy (``litellm --config``, one worker, default ``simple-shuffle`` router, no database) in front of the same hub, and
this load generator. LiteLLM is installed by this script into its own virtual environment under
``~/.cache/radialrouter-bench/litellm-venv`` (``pip install 'litellm[proxy]'``); when that fails the LiteLLM rows
are skipped with a message.

Each repeat sends the same requests straight to the backend and through each gateway, the paths in a rotated order
(interleaved repeats, so drift in the machine's speed favours none). Reported per path and level of requests in
flight (medians over repeats): the gateway process's CPU time per request (psutil, all threads and child
processes: on a shared machine the figure to trust), added latency p50/p99 against the backend alone in the same
repeat, req/s, and the gateway's RSS at the end. ``cpu_ratio_vs_litellm`` (radialrouter's CPU per request over
LiteLLM's, 16 in flight, non-streaming) is in the JSON.

    python benchmarks/gateway_compare.py [--requests 400] [--concurrency 1,16] [--repeats 3] [--delay-ms 10]

Writes benchmarks/results/gateway_compare.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from serve_load import POOL, RESULTS, bodies_for, build_router, drive, process_tree, serve, spawn, write_config

from radialrouter.serve.testing import free_port, wait_up

LITELLM_VENV = Path(os.environ.get("RR_BENCH_CACHE", Path.home() / ".cache" / "radialrouter-bench")) / "litellm-venv"
LLM = "mixtral"  # the pool LLM that bypass and LiteLLM requests name
PATHS = {"direct": "backend alone", "rr_bypass": f"radialrouter bypass (model={LLM})",
         "rr_routed": "radialrouter routed (model=radial)", "litellm": f"LiteLLM proxy (model={LLM})"}


# ---------------------------------------------------------------------------------------------- LiteLLM
def install_litellm() -> tuple[Path | None, str]:
    """(the litellm executable, its version) — installed into its own venv when missing; (None, why) on failure."""
    exe = LITELLM_VENV / "bin" / "litellm"
    python = LITELLM_VENV / "bin" / "python"
    if not exe.exists():
        print(f"installing litellm[proxy] into {LITELLM_VENV} (once) ...", file=sys.stderr)
        try:
            LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm[proxy]"], check=True, timeout=1200)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"cannot install litellm[proxy]: {exc}"
    try:
        version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                                 check=True, capture_output=True, text=True, timeout=120).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"litellm is installed but does not run: {exc}"
    return exe, version


def start_litellm(exe: Path, hub: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    """LiteLLM's proxy with a minimal config: the pool's LLMs at the hub, no database, no master key, quiet logs."""
    config = {"model_list": [{"model_name": name, "litellm_params": {"model": f"openai/{name}",
                                                                    "api_base": f"{hub}/{name}/v1",
                                                                    "api_key": "sk-fake"}} for name in POOL],
              "litellm_settings": {"drop_params": True, "set_verbose": False, "telemetry": False}}
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "DATABASE_URL"}}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
               DISABLE_SCHEMA_UPDATE="True", PYTHONUNBUFFERED="1",
               LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true")  # loopback only, no key (the
    # radialrouter side checks an API key with a budget and a rate limit on every request: serve_load.BENCH_KEY)
    log = tmp / "litellm.log"
    proc = subprocess.Popen([str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port),
                             "--num_workers", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            cwd=tmp)
    wait_up(f"http://127.0.0.1:{port}/health/liveliness", proc, log, timeout=300)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


# ---------------------------------------------------------------------------------------------- measuring
def rss_mb(pid: int) -> float:
    return sum(p.memory_info().rss for p in process_tree(pid)) / 2**20


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="Requests per phase (a quarter at 1 in flight).")
    parser.add_argument("--concurrency", default="1,16", help="Comma-separated levels of requests in flight.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="Fake backend generation time.")
    parser.add_argument("--no-litellm", action="store_true", help="Measure radialrouter only.")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    started = time.perf_counter()
    exe, litellm_version = (None, "skipped (--no-litellm)") if args.no_litellm else install_litellm()
    if exe is None:
        print(f"LiteLLM rows skipped: {litellm_version}", file=sys.stderr)
    procs: list[subprocess.Popen] = []
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-compare-") as tmp:
        tmp = Path(tmp)
        try:
            router_dir, router_desc, prompts = build_router(tmp / "router", None)
            hub_port = free_port()
            hub = f"http://127.0.0.1:{hub_port}"
            load = Path(__file__).with_name("serve_load.py")
            procs.append(spawn([str(load), "--fake-hub-port", str(hub_port), "--delay-ms", str(args.delay_ms)],
                               tmp / "hub.log"))
            wait_up(f"{hub}/health", procs[-1], tmp / "hub.log")
            port = free_port()
            procs.append(serve(write_config(tmp / "serve.yaml", router_dir, hub, None, 10.0), port, tmp / "rr.log"))
            rr_pid, rr_url = procs[-1].pid, f"http://127.0.0.1:{port}/v1/chat/completions"
            targets = {"direct": (f"{hub}/{LLM}/v1/chat/completions", None, LLM),
                       "rr_bypass": (rr_url, rr_pid, LLM), "rr_routed": (rr_url, rr_pid, "radial")}
            if exe is not None:
                try:
                    proc, url = start_litellm(exe, hub, tmp)
                    procs.append(proc)
                    targets["litellm"] = (url, proc.pid, LLM)
                except RuntimeError as exc:
                    litellm_version = f"skipped: the proxy did not start ({str(exc).splitlines()[0]})"
                    print(f"LiteLLM rows skipped: {exc}", file=sys.stderr)
            for url, pid, model in targets.values():  # warm-up: connections, caches, lazy imports
                asyncio.run(drive(url, bodies_for(prompts, 100, model), 16, False, pid))
                asyncio.run(drive(url, bodies_for(prompts, 20, model), 4, True, pid))
            phases = [(c, False) for c in levels] + [(16 if 16 in levels else max(levels), True)]
            names = list(targets)
            for rep in range(args.repeats):
                sample = prompts[rep * args.requests % len(prompts):] + prompts[:rep * args.requests % len(prompts)]
                for c, stream in phases:
                    count = args.requests if c > 1 else max(50, args.requests // 4)
                    order = names[rep % len(names):] + names[:rep % len(names)]  # rotated each repeat
                    for path in order:
                        url, pid, model = targets[path]
                        result = asyncio.run(drive(url, bodies_for(sample, count, model), c, stream, pid))
                        runs[f"{path}-{'stream' if stream else 'json'}-c{c}"].append(result)
            for path, (_, pid, _) in targets.items():
                if pid is not None:
                    rss[path] = rss_mb(pid)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    report(args, router_desc, litellm_version, runs, rss, time.perf_counter() - started)


def report(args, router_desc: str, litellm_version: str, runs: dict, rss: dict, seconds: float) -> None:
    rows = []
    for key in dict.fromkeys(k.split("-", 1)[1] for k in runs):
        kind, c = key.split("-c")
        direct = runs[f"direct-{key}"]
        for path in ("rr_bypass", "rr_routed", "litellm"):
            r = runs.get(f"{path}-{key}")
            if not r:
                continue
            rows.append({"mode": "non-streaming" if kind == "json" else "streaming (to 1st token)",
                         "concurrency": int(c), "path": path, "label": PATHS[path], "requests": r[0]["n"],
                         "cpu_ms_per_request": med([x["server_cpu_ms_per_request"] for x in r]),
                         "cpu_ms_per_request_runs": [round(x["server_cpu_ms_per_request"], 3) for x in r],
                         "added_p50_ms": med([b["p50_ms"] - a["p50_ms"] for a, b in zip(direct, r)
                                              if a["p50_ms"] is not None and b["p50_ms"] is not None]),
                         "added_p99_ms": med([b["p99_ms"] - a["p99_ms"] for a, b in zip(direct, r)
                                              if a["p99_ms"] is not None and b["p99_ms"] is not None]),
                         "rps": med([x["throughput_rps"] for x in r]),
                         "direct_rps": med([x["throughput_rps"] for x in direct]),
                         "direct_p50_ms": med([x["p50_ms"] for x in direct]),
                         "errors": sum(x["errors"] for x in r), "rss_mb": rss.get(path)})

    def cpu(path: str, c: int = 16, mode: str = "non-streaming") -> float | None:
        return next((r["cpu_ms_per_request"] for r in rows if r["path"] == path and r["concurrency"] == c
                     and r["mode"] == mode), None)

    ratios = {}
    if cpu("litellm"):
        ratios = {"bypass": cpu("rr_bypass") / cpu("litellm"), "routed": cpu("rr_routed") / cpu("litellm")}
    result = {"benchmark": "gateway_compare", "router": router_desc, "litellm": litellm_version,
              "requests_per_phase": args.requests, "concurrency": args.concurrency, "repeats": args.repeats,
              "backend_delay_ms": args.delay_ms, "rows": rows, "cpu_ratio_vs_litellm": ratios or None,
              "runs": runs, "seconds": round(seconds, 1), "load_average": [round(x, 2) for x in os.getloadavg()],
              "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                          "platform": platform.platform()},
              "note": "medians over interleaved repeats; CPU = the gateway process tree's user+system time per "
                      "request; added latency = gateway − backend alone in the same repeat; all on 127.0.0.1"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway_compare.json").write_text(json.dumps(result, indent=2) + "\n")

    def f(x: float | None, digits: int = 1) -> str:
        return "–" if x is None else f"{x:.{digits}f}"

    table = ("| mode | in flight | gateway | server CPU ms/request | added p50 ms | added p99 ms "
             "| req/s (backend alone) | RSS MB | errors |\n|---|---|---|---|---|---|---|---|---|\n" + "".join(
                 f"| {r['mode']} | {r['concurrency']} | {r['label']} | {f(r['cpu_ms_per_request'], 2)} | "
                 f"{f(r['added_p50_ms'])} | {f(r['added_p99_ms'])} | {f(r['rps'], 0)} ({f(r['direct_rps'], 0)}) | "
                 f"{f(r['rss_mb'], 0)} | {r['errors']} |\n" for r in rows))
    ratio = ("radialrouter's server CPU per request over LiteLLM's at 16 in flight (non-streaming): "
             f"bypass {ratios['bypass']:.2f}, routed {ratios['routed']:.2f} "
             f"(LiteLLM uses {1 / ratios['bypass']:.1f}× and {1 / ratios['routed']:.1f}× as much)."
             if ratios else f"LiteLLM: {litellm_version} — no ratio.")
    text = ("# gateway_compare: radialrouter against LiteLLM's proxy\n\n"
            f"Same fake backend (delay {args.delay_ms:g} ms) behind each gateway, one process each, {args.repeats} "
            f"interleaved repeats (medians), {args.requests} "
            f"requests per phase ({max(50, args.requests // 4)} at 1 in flight), {os.cpu_count()} CPU cores shared by "
            f"the backend, the gateways and the load generator, loopback only; load average at the end "
            f"{result['load_average']}; {seconds:.0f} s in all.\nradialrouter: router {router_desc}, decision log "
            f"(SQLite) and metrics on, every request with an API key that has a budget and a requests-per-minute "
            f"limit (admitted, reserved for and settled). LiteLLM {litellm_version}: `litellm --config` with the "
            "pool's three LLMs, one worker, default router (simple-shuffle), no database, no keys (its budgets need "
            "a database).\n\n"
            f"{table}\n{ratio}\n\nServer CPU is the gateway process's user+system time (all threads and child "
            "processes) per request: on a machine shared with the backend and the load generator it is the figure "
            "to trust; latency and req/s depend on what else runs.\n\nRerun: `python benchmarks/gateway_compare.py`\n")
    (RESULTS / "gateway_compare.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
