"""Load test of ``radialrouter serve`` against a local fake OpenAI-compatible backend (loopback only).

Three processes: a fake backend hub (one path per LLM, fixed simulated generation delay), the routing server
(``radialrouter serve``), and this load generator. Each repeat sends the same bounded set of requests with a fixed
concurrency straight to the fake backends, through the server with routing bypassed (``model=<LLM>``: once to the
LLM the router picks for each prompt, found in a first routed pass, and once round-robin over the pool), and routed
(``model=radial``), non-streaming and streaming; every other repeat runs the paths in reverse order. "Added latency"
is the server's overhead against the backends in the same repeat; routing's own cost is routed against bypass to
the same LLMs (same backends, same connection pools), paired within each repeat. A last phase points the router's
most-chosen LLM at a backend that fails every second request and checks that every request still succeeds through
fallback.

Router: ``--router DIR`` (a save_pretrained directory), else the package's default router when it exists, else a kNN
router trained here on RouterBench's train split (../shared/data/routerbench3.parquet, embeddings from the cache).

What users run is on: every request carries an API key that has a budget (USD) and a requests-per-minute limit,
both too large to refuse anything here, so each request is admitted, reserved for and settled; the decision log
(SQLite) and Prometheus metrics are on.

    python benchmarks/serve_load.py [--requests 1000] [--concurrency 1,16,64] [--repeats 5] [--delay-ms 10]

Writes benchmarks/results/serve_load.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import yaml

from radialrouter.serve.testing import free_port, spawn_python, wait_up

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "routerbench3.parquet"
#: The load generator's API key: a budget and a request rate limit, both out of reach (see the docstring).
BENCH_KEY = {"id": "bench", "key": "${RR_BENCH_KEY}", "budget_usd": 1e9, "requests_per_minute": 10**8}
AUTH = {"authorization": "Bearer sk-bench-load"}
os.environ.setdefault("RR_BENCH_KEY", AUTH["authorization"].removeprefix("Bearer "))
#: pool name → RouterBench LLM; prices are USD per million tokens (illustrative list prices).
POOL = {
    "gpt-4": ("gpt-4-1106-preview", 10.0, 30.0, 128_000),
    "mixtral": ("mistralai/mixtral-8x7b-chat", 0.6, 0.6, 32_000),
    "mistral-7b": ("mistralai/mistral-7b-chat", 0.2, 0.2, 32_000),
}
FALLBACK_PROMPTS = ["Write a Python function that merges two sorted lists.", "hi, how are you?",
                    "Prove that the square root of 2 is irrational.", "Translate 'good morning' into French.",
                    "Which gas do plants absorb?\nA) O2\nB) CO2\nC) N2\nD) He\nAnswer:"]


PATHS = {"proxy": "bypass (model=<routed LLM>)", "proxy_rr": "bypass (model=<LLM>, round-robin)",
         "routed": "routed (model=radial)"}


# ---------------------------------------------------------------------------------------------- processes
def fake_hub(port: int, delay_ms: float) -> None:
    """Child process: every pool LLM at /<name>/v1 and a failing twin at /<name>-flaky/v1 (every 2nd request 500)."""
    import uvicorn
    from fastapi import FastAPI

    from radialrouter.serve.testing import FakeBackend

    hub = FastAPI()
    for name in POOL:
        hub.mount(f"/{name}", FakeBackend(name, delay_s=delay_ms / 1000, keep_requests=False).app)
        hub.mount(f"/{name}-flaky", FakeBackend(name, delay_s=delay_ms / 1000, fail_every=2, keep_requests=False).app)
    uvicorn.run(hub, host="127.0.0.1", port=port, log_level="error", access_log=False)


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    return spawn_python(args, log, cwd=ROOT)


def serve(config: Path, port: int, log: Path) -> subprocess.Popen:
    code = "from radialrouter.cli import main; main()"
    proc = spawn(["-c", code, "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"], log)
    wait_up(f"http://127.0.0.1:{port}/health", proc, log)
    return proc


# ---------------------------------------------------------------------------------------------- setup
def build_router(directory: Path, router_arg: str | None) -> tuple[Path | None, str, list[str]]:
    """(router dir or None for the default, description, benchmark prompts)."""
    prompts = FALLBACK_PROMPTS
    if DATA.exists():
        from radialrouter.data import load_dataset

        ds = load_dataset(DATA)
        prompts = [str(p) for p in ds.select("test").prompts]
    if router_arg:
        return Path(router_arg).resolve(), f"--router {router_arg}", prompts
    try:
        from radialrouter.routers.embedded import load_embedded

        router = load_embedded()
        encoder = router.get_encoder().identity
        encoder = f"{encoder['name']}, last {encoder['max_tokens']} tokens"
        name = router.name
        return None, f"default (embedded {name}), encoder `{encoder}`", prompts
    except Exception as exc:  # noqa: BLE001 - not built in this checkout yet: fall back to a kNN router
        print(f"default router unavailable ({exc}); training a kNN router instead", file=sys.stderr)
    if not DATA.exists():
        raise SystemExit(f"no router: pass --router DIR (the default router is not built and {DATA} is absent)")
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.routers import make_router

    train = ds.select("train").embed(QueryEncoder(), progress=False)
    make_router("knn", k=10).fit(train).save_pretrained(directory)
    return directory, f"knn (k=10) on {DATA.name} train ({len(train)} queries)", prompts


def write_config(path: Path, router: Path | None, hub: str, flaky: str | None, cooldown_s: float) -> Path:
    llms = [{"name": name, "base_url": f"{hub}/{name}{'-flaky' if name == flaky else ''}/v1", "router_llm": llm,
             "input_price": pin, "output_price": pout, "context_window": window, "capabilities": ["tools", "json"]}
            for name, (llm, pin, pout, window) in POOL.items()]
    config = {"router": {"path": str(router)} if router else {}, "llms": llms, "auth": {"keys": [BENCH_KEY]},
              "server": {"cooldown_s": cooldown_s, "max_body_bytes": 4_000_000, "public_metrics": True},
              "ledger": {"path": str(path.with_suffix(".sqlite"))}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------- load
def process_tree(pid: int) -> list[psutil.Process]:
    """Process ``pid`` and its children (a gateway that forks workers counts them all)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` and its children (all threads); 0 when not measured."""
    if pid is None:
        return 0.0
    total = 0.0
    for proc in process_tree(pid):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:  # a child that ended meanwhile
            pass
    return total


async def drive(url: str | dict[str, str], bodies: list[dict], concurrency: int, stream: bool,
                server_pid: int | None = None) -> dict:
    """Send ``bodies`` with at most ``concurrency`` in flight (``url`` may map each body's model to a URL);
    latency is time to the full response, or to the first content chunk when streaming. ``server_pid``: the
    process whose CPU time per request is reported (the routing server's; a saturated machine's throughput
    follows it)."""
    latencies, errors, served, fallbacks = [], collections.Counter(), collections.Counter(), 0
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(client: httpx.AsyncClient, body: dict) -> None:
        nonlocal fallbacks
        target = url if isinstance(url, str) else url[body["model"]]
        async with gate:
            start = time.perf_counter()
            try:
                if stream:
                    async with client.stream("POST", target, json={**body, "stream": True}) as r:
                        first = None
                        async for line in r.aiter_lines():
                            if first is None and line.startswith("data: {") and '"content"' in line:
                                first = time.perf_counter() - start
                        error = f"http_{r.status_code}" if r.status_code != 200 else (
                            "no_content" if first is None else None)
                else:
                    r = await client.post(target, json=body)
                    first = time.perf_counter() - start
                    error = f"http_{r.status_code}" if r.status_code != 200 else (
                        None if r.json()["choices"][0]["message"]["content"] else "no_content")
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            if error:
                errors[error] += 1
                return
            latencies.append(first)
            served[r.headers.get("x-radialrouter-model", body["model"])] += 1
            fallbacks += r.headers.get("x-radialrouter-fallback") == "true"

    async with httpx.AsyncClient(timeout=60, limits=limits, headers=AUTH) as client:
        start, cpu = time.perf_counter(), cpu_seconds(server_pid)
        await asyncio.gather(*(one(client, b) for b in bodies))
        wall, cpu = time.perf_counter() - start, cpu_seconds(server_pid) - cpu
    ms = np.asarray(latencies) * 1000
    return {"n": len(bodies), "errors": sum(errors.values()), "error_kinds": dict(errors), "fallbacks": fallbacks,
            "served": dict(served), "server_cpu_ms_per_request": 1000 * cpu / len(bodies),
            "throughput_rps": len(latencies) / wall, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


async def choices(url: str, prompts: list[str], concurrency: int) -> dict[str, str]:
    """prompt → the pool LLM the router sends it to (``x-radialrouter-model``)."""
    gate = asyncio.Semaphore(concurrency)
    out: dict[str, str] = {}

    async def one(client: httpx.AsyncClient, prompt: str) -> None:
        async with gate:
            r = await client.post(url, json=bodies_for([prompt], 1, "radial")[0])
            r.raise_for_status()
            out[prompt] = r.headers["x-radialrouter-model"]

    async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
        await asyncio.gather(*(one(client, p) for p in prompts))
    return out


def bodies_for(prompts: list[str], n: int, model: str | list[str]) -> list[dict]:
    models = [model] * n if isinstance(model, str) else [model[i % len(model)] for i in range(n)]
    return [{"model": m, "messages": [{"role": "user", "content": prompts[i % len(prompts)]}], "max_tokens": 64}
            for i, m in enumerate(models)]


def phase_size(n: int, concurrency: int) -> int:
    """Requests per phase: ``n`` with requests in parallel; a tenth (at least 100) one at a time, where each takes
    the backend's whole delay."""
    return n if concurrency > 1 else max(100, n // 10)


def med(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


# ---------------------------------------------------------------------------------------------- main
#: Defaults of the options that shape a run (a rerun line names those that differ).
#: 1,000 requests per phase: at 200 a phase at 16 in flight lasted ~0.4 s and its routed/bypass req/s ratio ranged
#: 0.67-1.03 over repeats of the same code (median 0.74-0.80, against 0.90 with 1,000).
RUN_DEFAULTS = {"requests": 1000, "concurrency": "1,16,64", "repeats": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=RUN_DEFAULTS["requests"],
                        help="Requests per phase and repeat (≤ 2000; a tenth, at least 100, at concurrency 1).")
    parser.add_argument("--concurrency", default=RUN_DEFAULTS["concurrency"],
                        help="Comma-separated levels of requests in flight.")
    parser.add_argument("--repeats", type=int, default=RUN_DEFAULTS["repeats"])
    parser.add_argument("--delay-ms", type=float, default=10.0, help="Fake backend generation time.")
    parser.add_argument("--router", help="Router directory (save_pretrained); default: see the module docstring.")
    parser.add_argument("--label", help="Write serve_load_<label>.{json,md} instead of serve_load.{json,md} (e.g. a "
                                        "run with longer phases: each phase opens its connections afresh).")
    parser.add_argument("--fake-hub-port", type=int, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.fake_hub_port:
        return fake_hub(args.fake_hub_port, args.delay_ms)
    n = min(args.requests, 2000)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        tmp = Path(tmp)
        try:
            router_dir, router_desc, prompts = build_router(tmp / "router", args.router)
            hub_port, port = free_port(), free_port()
            hub = f"http://127.0.0.1:{hub_port}"
            procs.append(spawn([__file__, "--fake-hub-port", str(hub_port), "--delay-ms", str(args.delay_ms)],
                               tmp / "hub.log"))
            wait_up(f"{hub}/health", procs[-1], tmp / "hub.log")
            procs.append(serve(write_config(tmp / "serve.yaml", router_dir, hub, None, 10.0), port, tmp / "a.log"))
            server_pid = procs[-1].pid
            router_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            direct_urls = {name: f"{hub}/{name}/v1/chat/completions" for name in POOL}

            levels = [int(c) for c in args.concurrency.split(",")]
            samples = [prompts[rep * n % len(prompts):] + prompts[:rep * n % len(prompts)]
                       for rep in range(args.repeats)]
            # warm-up, and the LLM the router picks for each prompt: bypass traffic goes to those same LLMs, so
            # routed − bypass measures routing itself, not how the pool's traffic spreads over upstream pools
            chosen = asyncio.run(choices(router_url, list(dict.fromkeys(p for s in samples for p in s[:n])),
                                         max(levels)))
            runs = collections.defaultdict(list)
            for rep, sample in enumerate(samples):
                for c, stream in itertools.product(levels, (False, True)):
                    key, count = f"{'stream' if stream else 'json'}-c{c}", phase_size(n, c)
                    same = [chosen[p] for p in sample[:count]]
                    # the same traffic straight to the fake backends, through the server with routing bypassed
                    # (model=<LLM>: the routed LLMs, and round-robin over the pool), and routed; every other repeat
                    # in reverse order, so that drift in the machine's speed does not favour one path
                    paths = [("direct", direct_urls, same), ("proxy", router_url, same),
                             ("proxy_rr", router_url, list(POOL)), ("routed", router_url, "radial")]
                    for path, url, model in paths[::-1] if rep % 2 else paths:
                        pid = None if path == "direct" else server_pid
                        result = asyncio.run(drive(url, bodies_for(sample, count, model), c, stream, pid))
                        runs[f"{path}-{key}"].append(result)
            server_side = scrape(f"http://127.0.0.1:{port}/metrics")
            procs.pop().terminate()
            served = collections.Counter()
            for r in runs[f"routed-json-c{max(levels)}"]:
                served.update(r["served"])
            flaky = served.most_common(1)[0][0]
            port = free_port()
            procs.append(serve(write_config(tmp / "flaky.yaml", router_dir, hub, flaky, 0.0), port, tmp / "b.log"))
            fallback_run = asyncio.run(drive(f"http://127.0.0.1:{port}/v1/chat/completions",
                                             bodies_for(prompts, n, "radial"), max(levels), False))
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
    report(args, n, router_desc, runs, flaky, fallback_run, dict(served), server_side)


def scrape(url: str) -> dict:
    """Server-side means from /metrics: decision time (batching included) and requests per encoder call."""
    values = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in {"radialrouter_decision_seconds_sum", "radialrouter_decision_seconds_count",
                    "radialrouter_batch_size_sum", "radialrouter_batch_size_count"}:
            values[name] = float(value)
    return {"mean_decision_ms": 1000 * values["radialrouter_decision_seconds_sum"]
            / max(values["radialrouter_decision_seconds_count"], 1),
            "mean_batch_size": values["radialrouter_batch_size_sum"] / max(values["radialrouter_batch_size_count"], 1),
            "decisions": int(values["radialrouter_decision_seconds_count"])}


def report(args, n: int, router_desc: str, runs: dict, flaky: str, fallback_run: dict, served: dict,
           server_side: dict) -> None:
    name = f"serve_load_{args.label}" if args.label else "serve_load"
    rerun_args = "".join(f" --{k} {getattr(args, k)}" for k, v in RUN_DEFAULTS.items() if getattr(args, k) != v)
    rerun_args += f" --label {args.label}" if args.label else ""
    rows = []
    for key in dict.fromkeys(k.split("-", 1)[1] for k in runs):
        kind, c = key.split("-c")
        d = runs[f"direct-{key}"]
        for path in ("proxy", "proxy_rr", "routed"):
            r = runs[f"{path}-{key}"]
            rows.append({
                "mode": "non-streaming" if kind == "json" else "streaming (to 1st token)", "concurrency": int(c),
                "requests": r[0]["n"], "path": PATHS[path],
                "direct_p50_ms": med(d, "p50_ms"), "server_p50_ms": med(r, "p50_ms"),
                "added_p50_ms": statistics.median(b["p50_ms"] - a["p50_ms"] for a, b in zip(d, r)),
                "added_p99_ms": statistics.median(b["p99_ms"] - a["p99_ms"] for a, b in zip(d, r)),
                "direct_rps": med(d, "throughput_rps"), "server_rps": med(r, "throughput_rps"),
                "errors": sum(x["errors"] for x in r), "direct_errors": sum(x["errors"] for x in d),
                "error_kinds": dict(sum((collections.Counter(x["error_kinds"]) for x in d + r), collections.Counter())),
            })
    result = {
        "benchmark": "serve_load", "router": router_desc, "requests_per_phase": n, "concurrency": args.concurrency,
        "repeats": args.repeats, "backend_delay_ms": args.delay_ms, "rows": rows, "routed_share": served,
        "server_side": server_side,
        "fallback": {"flaky_llm": flaky, "fail_every": 2, "requests": fallback_run["n"],
                     "succeeded": fallback_run["n"] - fallback_run["errors"], "errors": fallback_run["errors"],
                     "fallbacks": fallback_run["fallbacks"], "served": fallback_run["served"],
                     "p50_ms": fallback_run["p50_ms"], "p99_ms": fallback_run["p99_ms"]},
        "runs": runs,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "note": "medians over repeats; added latency = routed − direct in the same repeat; all on 127.0.0.1",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    header = ("| mode | in flight | path | direct p50 ms | server p50 ms | added p50 ms | added p99 ms | direct req/s "
              "| server req/s | errors |\n|---|---|---|---|---|---|---|---|---|---|\n")
    table = header + "".join(
        f"| {r['mode']} | {r['concurrency']} | {r['path']} | {r['direct_p50_ms']:.1f} | {r['server_p50_ms']:.1f} | "
        f"{r['added_p50_ms']:.1f} | {r['added_p99_ms']:.1f} | {r['direct_rps']:.0f} | {r['server_rps']:.0f} | "
        f"{r['errors']} |\n" for r in rows)
    versus = []  # routing's own cost: routed against bypass, same server, same repeat
    for key in dict.fromkeys(k.split("-", 1)[1] for k in runs):  # paired within each repeat, then the median
        by, rr, ro = runs[f"proxy-{key}"], runs[f"proxy_rr-{key}"], runs[f"routed-{key}"]
        ratios = [b["throughput_rps"] / a["throughput_rps"] for a, b in zip(by, ro)]
        kind, c = key.split("-c")
        versus.append({"mode": "non-streaming" if kind == "json" else "streaming (to 1st token)",
                       "concurrency": int(c),
                       "routed_minus_bypass_p50_ms": statistics.median(
                           b["p50_ms"] - a["p50_ms"] for a, b in zip(by, ro)),
                       "routed_over_bypass_rps": statistics.median(ratios),
                       "routed_over_bypass_rps_range": [min(ratios), max(ratios)],
                       "routed_over_round_robin_rps": statistics.median(
                           b["throughput_rps"] / a["throughput_rps"] for a, b in zip(rr, ro)),
                       "server_cpu_ms_per_request": {"bypass": med(by, "server_cpu_ms_per_request"),
                                                     "routed": med(ro, "server_cpu_ms_per_request")},
                       "routed_minus_bypass_cpu_ms": statistics.median(
                           b["server_cpu_ms_per_request"] - a["server_cpu_ms_per_request"] for a, b in zip(by, ro))})
    result["routed_vs_bypass"] = versus
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table += ("\nRouting's own cost (routed against bypass to the same LLMs through the same server; targets: "
              "≤ 3 ms p50 at 1 in flight, ≥ 0.9 × bypass req/s at 16 and 64). The last column compares with bypass "
              "traffic spread round-robin over the pool instead: traffic that concentrates on one backend, as "
              "routing's does, has more connections open to it, and httpx's pool walks all of them on each request "
              "(the server splits them over small pools since, see `ShardedTransport`; with aiohttp installed "
              "each backend is its own aiohttp session).\n\n"
              "Each figure is the median over repeats of the difference or ratio within a repeat. Server CPU is the "
              "routing server process's CPU time (all threads) per request: on a saturated machine its throughput "
              "follows it, and it depends less on what else the machine runs than req/s does.\n\n"
              "| mode | in flight | routed − bypass p50 ms | routed / bypass req/s (range) | routed / round-robin "
              "req/s | server CPU ms/request, bypass → routed (routed − bypass) |\n|---|---|---|---|---|---|\n"
              + "".join(
                  f"| {v['mode']} | {v['concurrency']} | {v['routed_minus_bypass_p50_ms']:.1f} | "
                  f"{v['routed_over_bypass_rps']:.2f} ({v['routed_over_bypass_rps_range'][0]:.2f}–"
                  f"{v['routed_over_bypass_rps_range'][1]:.2f}) | {v['routed_over_round_robin_rps']:.2f} | "
                  f"{v['server_cpu_ms_per_request']['bypass']:.2f} → {v['server_cpu_ms_per_request']['routed']:.2f} "
                  f"({v['routed_minus_bypass_cpu_ms']:+.2f}) |\n"
                  for v in versus))
    fb = result["fallback"]
    text = (f"# serve_load: routing server overhead\n\nRouter: {router_desc}. {n} requests per phase "
            f"({phase_size(n, 1)} at concurrency 1), concurrency {args.concurrency}, {args.repeats} repeats "
            f"(medians), fake backend delay "
            f"{args.delay_ms:g} ms, "
            f"{os.cpu_count()} CPU cores, loopback only, load average at the end {result['load_average']}."
            f"\n\n{table}\n"
            f"Routed share (non-streaming): {served}. Server side: mean decision time "
            f"{server_side['mean_decision_ms']:.1f} ms (tokenizer + encoder + router, queueing included), mean "
            f"{server_side['mean_batch_size']:.1f} requests per encoder call over {server_side['decisions']} decisions."
            "\n\n"
            f"Fallback: `{flaky}` fails every 2nd request (cooldown off): {fb['succeeded']}/{fb['requests']} "
            f"requests succeeded, {fb['fallbacks']} via fallback, {fb['errors']} errors; served by {fb['served']}.\n\n"
            + "".join(f"Errors ({r['mode']}, {r['concurrency']} in flight, {r['path']}, direct included): "
                      f"{r['error_kinds']}.\n\n" for r in rows if r["error_kinds"])
            + f"Rerun: `python benchmarks/serve_load.py{rerun_args}`\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
