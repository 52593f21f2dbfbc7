"""Replicas of ``radialrouter serve`` sharing one PostgreSQL, on loopback: throughput, added latency, a shared
budget under 100-way concurrency, and acknowledged rows after a replica is SIGKILLed under load.

Processes: a throwaway PostgreSQL (initdb + pg_ctl, fsync on: commits cost what they cost on a real disk), a fake
backend hub (FakeBackend per pool LLM, fixed delay, 64 completion tokens per answer), N replicas with one config
(``ledger.url``) and ``RADIALROUTER_REPLICA_ID=r<i>``, and this load generator, which spreads requests round-robin
over the replicas (what a load balancer does). Configurations: one replica on SQLite (the embedded default, the
baseline), then 1, 2 and 4 replicas on PostgreSQL, and 2 replicas with ``ledger.wait_for_commit: false`` to price
acknowledging after the commit. Each configuration:

1. throughput: ``--requests`` routed requests (``model=radial``) at ``--concurrency``, and the same requests
   straight to the fake backends in the same run (added latency = through the replicas − direct);
2. budget (PostgreSQL only): ``--budget-requests`` requests for ``gpt-4`` (whose cost is close to its reservation:
   the worst case for the bound) from one key with ``budget_usd``, 100 in flight split over the replicas; spend
   from the database against budget + one reservation;
3. SIGKILL (2 and 4 replicas): the same load, replica r0 is SIGKILLed once it has answered
   ``--kill-after-acks`` requests; every request a client got a 200 for is looked up in the ledger.

    python benchmarks/serve_replicas.py [--requests 400] [--concurrency 32] [--delay-ms 10]

Writes benchmarks/results/serve_replicas.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa
import yaml
from serve_load import POOL  # the same pool: name → (RouterBench LLM, USD/M input, USD/M output, context window)

from radialrouter.serve.pgtesting import TemporaryPostgres
from radialrouter.serve.testing import free_port, wait_up

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROMPTS = ["Write a Python function that merges two sorted lists.", "hi, how are you?",
           "Prove that the square root of 2 is irrational.", "Translate 'good morning' into French.",
           "Which gas do plants absorb?\nA) O2\nB) CO2\nC) N2\nD) He\nAnswer:",
           "Summarise the causes of the French revolution in three sentences."]
MAX_TOKENS = 64
KEYS = {"RR_LOAD": "sk-load", "RR_BUDGET": "sk-budget"}


# ---------------------------------------------------------------------------------------------- processes
def fake_hub(port: int, delay_ms: float) -> None:
    """Child process: every pool LLM at /<name>/v1, answering MAX_TOKENS completion tokens after ``delay_ms``."""
    import uvicorn
    from fastapi import FastAPI

    from radialrouter.serve.testing import FakeBackend

    hub = FastAPI()
    for name in POOL:
        hub.mount(f"/{name}", FakeBackend(name, delay_s=delay_ms / 1000, keep_requests=False,
                                          stream_chunks=MAX_TOKENS).app)
    uvicorn.run(hub, host="127.0.0.1", port=port, log_level="error", access_log=False)


def write_config(path: Path, hub: str, ledger: dict, budget_usd: float) -> Path:
    llms = [{"name": name, "base_url": f"{hub}/{name}/v1", "router_llm": llm, "input_price": pin,
             "output_price": pout, "context_window": window} for name, (llm, pin, pout, window) in POOL.items()]
    keys = [{"id": "load", "key": "${RR_LOAD}"}, {"id": "budget", "key": "${RR_BUDGET}", "budget_usd": budget_usd}]
    config = {"router": {}, "llms": llms, "auth": {"keys": keys}, "ledger": ledger,
              "server": {"max_body_bytes": 1_000_000, "cooldown_s": 5}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_replicas(config: Path, n: int, logs: Path, extra_env: dict[str, str]) -> list[tuple[subprocess.Popen, str]]:
    out = []
    for i in range(n):
        port = free_port()
        env = {**os.environ, **KEYS, **extra_env, "RADIALROUTER_REPLICA_ID": f"r{i}", "OMP_NUM_THREADS": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        log = logs / f"r{i}.log"
        proc = subprocess.Popen([sys.executable, "-m", "radialrouter", "serve", "--config", str(config), "--port",
                                 str(port), "--log-level", "warning"], stdout=log.open("w"), stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env)
        out.append((proc, f"http://127.0.0.1:{port}"))
    for i, (proc, url) in enumerate(out):
        wait_up(f"{url}/readyz", proc, logs / f"r{i}.log", timeout=300)
    return out


def stop(replicas: list[tuple[subprocess.Popen, str]]) -> None:
    for proc, _ in replicas:
        if proc.poll() is None:
            proc.terminate()
    for proc, _ in replicas:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------------------------------------- load
def bodies(n: int, model: str | list[str], offset: int = 0) -> list[dict]:
    models = [model] * n if isinstance(model, str) else [model[i % len(model)] for i in range(n)]
    return [{"model": m, "messages": [{"role": "user", "content": PROMPTS[(i + offset) % len(PROMPTS)]}],
             "max_tokens": MAX_TOKENS} for i, m in enumerate(models)]


async def drive(targets: list[str], items: list[dict], concurrency: int, key: str = "sk-load",
                kill: tuple[subprocess.Popen, int] | None = None,
                path: str | dict[str, str] = "/v1/chat/completions") -> dict:
    """Send ``items`` round-robin over ``targets`` with at most ``concurrency`` in flight. Keeps, per target, the
    request ids of the 200 answers (what the client was acknowledged). ``kill=(process, k)``: SIGKILL the process
    behind ``targets[0]`` once it has acknowledged k requests. As a load balancer does, a request that cannot
    connect to a replica goes to the next one (it never reached the first, so it cannot be served twice)."""
    latencies, errors = [], collections.Counter()
    acked: dict[int, list[str]] = collections.defaultdict(list)
    status = collections.Counter()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    killed_at = None

    dead: set[int] = set()
    acked_event = asyncio.Event()

    async def one(client: httpx.AsyncClient, i: int, body: dict) -> None:
        async with gate:
            start = time.perf_counter()
            for hop in range(len(targets)):
                t = (i + hop) % len(targets)
                if t in dead:
                    continue
                url = targets[t] + (path if not isinstance(path, dict) else path[body["model"]])
                try:
                    r = await client.post(url, json=body, headers={"authorization": f"Bearer {key}"})
                    break
                except httpx.ConnectError:
                    dead.add(t)
                    errors["ConnectError (sent to the next replica)"] += 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    return
            else:
                return
            status[r.status_code] += 1
            if r.status_code != 200:
                errors[f"http_{r.status_code}"] += 1
                return
            latencies.append(time.perf_counter() - start)
            if "x-radialrouter-request-id" in r.headers:
                acked[t].append(r.headers["x-radialrouter-request-id"])
                if kill is not None and t == 0 and len(acked[0]) >= kill[1]:
                    acked_event.set()

    async def killer() -> None:
        nonlocal killed_at
        await acked_event.wait()
        kill[0].send_signal(signal.SIGKILL)
        killed_at = time.perf_counter() - started

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        killing = asyncio.create_task(killer()) if kill is not None else None
        await asyncio.gather(*(one(client, i, b) for i, b in enumerate(items)))
        wall = time.perf_counter() - started
        if killing is not None and not killing.done():  # r0 never answered enough: report it as not killed
            killing.cancel()
    ms = np.asarray(latencies) * 1000
    return {"n": len(items), "ok": len(latencies), "errors": dict(errors), "status": dict(status),
            "wall_s": wall, "throughput_rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None, "latencies_ms": ms.round(2).tolist(),
            "acked": {str(k): v for k, v in acked.items()}, "killed_at_s": killed_at}


def reservation_usd(body: dict) -> float:
    """What the server reserves for one ``gpt-4`` request: counted prompt tokens × margin × input price + max_tokens
    × output price (the server's own tokenizer and rule, `Budgets.worst_case`)."""
    from radialrouter.core.tokens import load_tokenizer
    from radialrouter.serve.routing import context_text, count_tokens

    tokens = count_tokens(load_tokenizer(None), context_text(body), 10**6)
    _, pin, pout, _ = POOL["gpt-4"]
    return (math.ceil(tokens * 1.15) * pin + MAX_TOKENS * pout) / 1e6


# ---------------------------------------------------------------------------------------------- one configuration
def run_config(label: str, n: int, store: str, hub: str, pg: TemporaryPostgres | None, tmp: Path, args,
               wait_for_commit: bool = True) -> dict:
    name = label.replace(" ", "_").replace(",", "").replace("=", "_")
    work = tmp / name
    work.mkdir()
    db_url = None
    if store == "postgres":
        db_url = pg.create_database(name.lower())
        ledger = {"url": db_url, "wait_for_commit": wait_for_commit}
    else:
        ledger = {"path": str(work / "ledger.sqlite"), "wait_for_commit": wait_for_commit}
    budget = args.budget_usd
    config = write_config(work / "serve.yaml", hub, ledger, budget)
    t0 = time.perf_counter()
    replicas = start_replicas(config, n, work, {})
    startup = time.perf_counter() - t0
    targets = [url for _, url in replicas]
    result: dict = {"label": label, "replicas": n, "store": store, "wait_for_commit": wait_for_commit,
                    "startup_s": startup}
    try:
        asyncio.run(drive(targets, bodies(16 * n, "radial"), 16))  # warm-up
        # one request at a time to r0: the latency cost of the commit wait without queueing behind other requests
        before = scrape(targets[:1])
        serial = asyncio.run(drive(targets[:1], bodies(args.serial_requests, "radial", offset=3), 1))
        result["serial"] = {"requests": args.serial_requests, "p50_ms": serial["p50_ms"],
                            "p90_ms": float(np.percentile(serial["latencies_ms"], 90)),
                            "commit_wait_mean_ms": means(scrape(targets[:1]), before)["commit_wait_mean_ms"]}
        mid = scrape(targets)
        direct = {m: f"/{m}/v1/chat/completions" for m in POOL}
        runs, direct_runs = [], []
        for rep in range(args.repeats):
            items = bodies(args.requests, "radial", offset=rep)
            runs.append(asyncio.run(drive(targets, items, args.concurrency)))
            direct_items = bodies(args.requests, list(POOL), offset=rep)
            direct_runs.append(asyncio.run(drive([hub], direct_items, args.concurrency, path=direct)))
        result["throughput"] = {
            "requests": args.requests, "concurrency": args.concurrency,
            "rps": float(np.median([r["throughput_rps"] for r in runs])),
            "p50_ms": float(np.median([r["p50_ms"] for r in runs])),
            "p99_ms": float(np.median([r["p99_ms"] for r in runs])),
            "direct_rps": float(np.median([r["throughput_rps"] for r in direct_runs])),
            "direct_p50_ms": float(np.median([r["p50_ms"] for r in direct_runs])),
            "added_p50_ms": float(np.median([a["p50_ms"] - b["p50_ms"] for a, b in zip(runs, direct_runs)])),
            "added_p99_ms": float(np.median([a["p99_ms"] - b["p99_ms"] for a, b in zip(runs, direct_runs)])),
            "errors": sum(sum(r["errors"].values()) for r in runs),
            "error_kinds": dict(sum((collections.Counter(r["errors"]) for r in runs), collections.Counter())),
        }
        result["server_side"] = means(scrape(targets), mid)  # the throughput runs only
        if store == "postgres" and wait_for_commit:
            items = bodies(args.budget_requests, "gpt-4")
            b = asyncio.run(drive(targets, items, 100, key="sk-budget"))
            engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
            with engine.connect() as conn:
                spent, reserved = conn.execute(sa.text(
                    "SELECT spent_usd, reserved_usd FROM budget_spend WHERE client = 'budget'")).one()
                logged = conn.scalar(sa.text("SELECT COALESCE(SUM(cost_usd), 0) FROM decisions "
                                             "WHERE client = 'budget'"))
            engine.dispose()
            one = max(reservation_usd(x) for x in items)
            result["budget"] = {
                "budget_usd": budget, "requests": len(items), "in_flight": 100, "admitted": b["ok"],
                "refused_429": b["status"].get(429, 0), "other_errors": b["n"] - b["ok"] - b["status"].get(429, 0),
                "spent_usd": float(spent), "logged_usd": float(logged), "reserved_after_usd": float(reserved),
                "one_reservation_usd": one, "over_budget_usd": max(0.0, float(spent) - budget),
                "over_in_reservations": max(0.0, float(spent) - budget) / one,
                "holds": float(spent) <= budget + one + 1e-12,
            }
        if n >= 2 and store == "postgres":
            items = bodies(args.kill_requests, "radial", offset=7)
            k = asyncio.run(drive(targets, items, args.concurrency * 2, kill=(replicas[0][0], args.kill_after_acks)))
            acked = {int(t): ids for t, ids in k["acked"].items()}
            engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
            with engine.connect() as conn:
                logged = set(conn.scalars(sa.text("SELECT request_id FROM decisions WHERE client = 'load'")))
            engine.dispose()
            lost = {t: len(set(ids) - logged) for t, ids in acked.items()}
            result["sigkill"] = {
                "requests": len(items), "in_flight": args.concurrency * 2, "killed": "r0",
                "killed_at_s": k["killed_at_s"], "acked_by_killed": len(acked.get(0, [])),
                "acked_total": sum(len(v) for v in acked.values()),
                "lost_acked_by_killed": lost.get(0, 0), "lost_acked_total": sum(lost.values()),
                "client_errors": k["errors"], "wall_s": k["wall_s"],
            }
    finally:
        stop(replicas)
    return result


def scrape(urls: list[str]) -> dict[str, float]:
    """Sums and counts, over the live replicas, of the time responses waited for their row's commit and of the
    routing decision time."""
    sums: dict[str, float] = collections.defaultdict(float)
    names = ("radialrouter_ledger_commit_wait_seconds_sum", "radialrouter_ledger_commit_wait_seconds_count",
             "radialrouter_decision_seconds_sum", "radialrouter_decision_seconds_count")
    for url in urls:
        text = httpx.get(f"{url}/metrics", headers={"authorization": "Bearer sk-load"}, timeout=10).text
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            base = name.split("{")[0]
            if base in names:
                sums[base] += float(value)
    return dict(sums)


def means(sums: dict[str, float], before: dict[str, float] | None = None) -> dict:
    """Means (ms) from `scrape` sums, less an earlier scrape's."""
    sums = collections.defaultdict(float, {k: v - (before or {}).get(k, 0.0) for k, v in sums.items()})
    wait_n = sums["radialrouter_ledger_commit_wait_seconds_count"]
    return {"commit_wait_mean_ms": 1000 * sums["radialrouter_ledger_commit_wait_seconds_sum"] / wait_n
            if wait_n else None, "commit_waits": int(wait_n),
            "decision_mean_ms": 1000 * sums["radialrouter_decision_seconds_sum"]
            / max(sums["radialrouter_decision_seconds_count"], 1)}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="Requests per throughput run.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--serial-requests", type=int, default=60, help="Requests one at a time to r0.")
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="Fake backend time to answer.")
    parser.add_argument("--budget-usd", type=float, default=0.05)
    parser.add_argument("--budget-requests", type=int, default=200)
    parser.add_argument("--kill-requests", type=int, default=600)
    parser.add_argument("--kill-after-acks", type=int, default=100,
                        help="SIGKILL r0 once it has answered this many requests of the SIGKILL phase.")
    parser.add_argument("--fake-hub-port", type=int, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.fake_hub_port:
        return fake_hub(args.fake_hub_port, args.delay_ms)
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-replicas-") as tmp_dir, TemporaryPostgres(durable=True) as pg:
        tmp = Path(tmp_dir)
        hub_port = free_port()
        hub = f"http://127.0.0.1:{hub_port}"
        hub_proc = subprocess.Popen([sys.executable, __file__, "--fake-hub-port", str(hub_port), "--delay-ms",
                                     str(args.delay_ms)], stdout=(tmp / "hub.log").open("w"),
                                    stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_up(f"{hub}/gpt-4/v1/models", hub_proc, tmp / "hub.log")
            plan = [("1 replica, SQLite", 1, "sqlite", True)]
            plan += [(f"{n} replica{'s' if n > 1 else ''}, PostgreSQL", n, "postgres", True)
                     for n in (int(x) for x in args.replicas.split(","))]
            plan.append(("2 replicas, PostgreSQL, wait_for_commit=false", 2, "postgres", False))
            for label, n, store, wait in plan:
                print(f"running: {label}", file=sys.stderr)
                results.append(run_config(label, n, store, hub, pg, tmp, args, wait))
        finally:
            hub_proc.terminate()
            hub_proc.wait(timeout=30)
    report(args, results)


def report(args, results: list[dict]) -> None:
    load = [round(x, 2) for x in os.getloadavg()]
    out = {"benchmark": "serve_replicas", "args": vars(args), "configs": results, "load_average_end": load,
           "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                       "platform": platform.platform()},
           "note": "loopback only; medians over repeats; added latency = through replicas − straight to the fake "
                   "backends, same run; PostgreSQL with fsync on"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_replicas.json").write_text(json.dumps(out, indent=2) + "\n")
    base = results[0]["throughput"]

    def wait(r: dict) -> str:
        ms = r.get("server_side", r)["commit_wait_mean_ms"]
        return "—" if ms is None else f"{ms:.1f}"

    rows = "".join(
        f"| {r['label']} | {t['rps']:.0f} | {t['direct_rps']:.0f} | {t['rps'] / t['direct_rps']:.2f} | "
        f"{t['rps'] / base['rps']:.2f} | {t['p50_ms']:.1f} | {t['added_p50_ms']:.1f} | {t['added_p99_ms']:.1f} | "
        f"{wait(r)} | {t['errors']} |\n" for r in results for t in [r["throughput"]])
    text = (f"# serve_replicas: replicas sharing one PostgreSQL\n\n{args.requests} routed requests (`model=radial`, "
            f"max_tokens {MAX_TOKENS}) per run at {args.concurrency} in flight, round-robin over the replicas, "
            f"{args.repeats} repeats (medians); fake backends answer after {args.delay_ms:g} ms. {os.cpu_count()} "
            f"CPU cores for everything (PostgreSQL, backends, replicas, this client), loopback only; load average "
            f"at the end {load}.\n\n"
            "| configuration | req/s | direct req/s | req/s ÷ direct | req/s × SQLite 1 replica | p50 ms | "
            "added p50 ms | added p99 ms | commit wait ms (mean) | errors |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n" + rows)
    text += ("\nDirect: the same requests straight to the fake backends, in the same configuration run (the "
             "machine's state at that moment); added latency = through the replicas − direct. Commit wait: the "
             "mean time a response waited, server-side, for its decision-log row to commit "
             "(`radialrouter_ledger_commit_wait_seconds`; none with `wait_for_commit: false`) — the latency cost "
             "of acknowledging after the commit. Every replica routes (encoder + router) on the same 2 cores as "
             "everything else, so more replicas add processes, not cores: throughput here shows the coordination "
             "cost, not scaling.\n" + "".join(
                 f"\nErrors ({r['label']}): {r['throughput']['error_kinds']}.\n" for r in results
                 if r["throughput"]["errors"]))
    text += ("\n## One request at a time (to r0): what waiting for the commit costs\n\n| configuration | p50 ms | "
             "p90 ms | commit wait ms (mean) |\n|---|---|---|---|\n" + "".join(
                 f"| {r['label']} | {r['serial']['p50_ms']:.1f} | {r['serial']['p90_ms']:.1f} | {wait(r['serial'])} |\n"
                 for r in results))
    budgets = [r for r in results if "budget" in r]
    if budgets:
        text += ("\n## Shared budget (one key, 100 in flight split over the replicas, `model=gpt-4`)\n\n"
                 "| configuration | budget USD | admitted | 429 | spent USD | logged USD | over budget USD | "
                 "one reservation USD | spend ≤ budget + one reservation |\n|---|---|---|---|---|---|---|---|---|\n")
        text += "".join(
            f"| {r['label']} | {b['budget_usd']:g} | {b['admitted']} | {b['refused_429']} | {b['spent_usd']:.6f} | "
            f"{b['logged_usd']:.6f} | {b['over_budget_usd']:.6f} | {b['one_reservation_usd']:.6f} | "
            f"{'yes' if b['holds'] else 'NO'} |\n" for r in budgets for b in [r["budget"]])
    kills = [r for r in results if "sigkill" in r]
    if kills:
        text += ("\n## SIGKILL of replica r0 under load\n\n| configuration | killed at s | acked by r0 | lost of "
                 "those | acked in all | lost in all | client errors |\n|---|---|---|---|---|---|---|\n")
        text += "".join(
            f"| {r['label']} | {'not killed' if k['killed_at_s'] is None else round(k['killed_at_s'], 2)} | "
            f"{k['acked_by_killed']} | {k['lost_acked_by_killed']} | "
            f"{k['acked_total']} | {k['lost_acked_total']} | {k['client_errors']} |\n"
            for r in kills for k in [r["sigkill"]])
        text += ("\n'Acked' = the client got a 200 with a request id; 'lost' = no row with that id in the "
                 "ledger afterwards. Client errors: the requests in flight on r0 when it died (never acknowledged), "
                 "and connection attempts to the dead r0, which the client sends to the next replica as a load "
                 "balancer would.\n")
    text += "\nRerun: `python benchmarks/serve_replicas.py`\n"
    (RESULTS / "serve_replicas.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
