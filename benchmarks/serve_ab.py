"""Two (or more) versions of ``radialrouter serve`` side by side: server CPU per request, alternated rounds.

Each version is a source tree (``name=path/to/src``, put on ``PYTHONPATH`` of its server process; e.g. an old commit
extracted with ``git archive <commit> src | tar -x -C /tmp/old``). All servers run at once behind the same fake
backend hub (``serve_load.py``'s) with the same config; each round sends the same requests to each server in turn
(the order reversed every other round), bypass (``model=mixtral``) and routed (``model=radial``). The figure is the
server process's CPU time per request (all threads), which a busy shared machine disturbs far less than latency.
The first version is the baseline of the ratios.

    python benchmarks/serve_ab.py base=/tmp/old/src new=src [--requests 1000] [--rounds 3] [--concurrency 16]

Writes benchmarks/results/serve_ab.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from serve_load import RESULTS, bodies_for, build_router, drive, spawn, write_config

from radialrouter.serve.testing import free_port, wait_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+", help="name=SRC_DIR, the first one is the baseline")
    parser.add_argument("--requests", type=int, default=1000, help="Requests per path, server and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream", action="store_true", help="Streaming requests (latency to the first chunk).")
    args = parser.parse_args()
    versions = dict(v.split("=", 1) for v in args.versions)
    runs: dict[str, dict[str, list[dict]]] = {}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="serve-ab-") as tmp:
        tmp = Path(tmp)
        try:
            router_dir, router_desc, prompts = build_router(tmp / "router", None)
            if router_dir is None:  # no router.path: each version serves the embedded default of its own tree
                router_desc = f"each version's own embedded default (this tree's: {router_desc})"
            hub_port = free_port()
            hub = f"http://127.0.0.1:{hub_port}"
            load = Path(__file__).with_name("serve_load.py")
            procs.append(spawn([str(load), "--fake-hub-port", str(hub_port)], tmp / "hub.log"))
            wait_up(f"{hub}/health", procs[-1], tmp / "hub.log")
            servers = {}
            for name, src in versions.items():
                port, log = free_port(), tmp / f"{name}.log"
                config = write_config(tmp / f"{name}.yaml", router_dir, hub, None, 10.0)
                env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                proc = subprocess.Popen([sys.executable, "-c", "from radialrouter.cli import main; main()", "serve",
                                         "--config", str(config), "--port", str(port), "--log-level", "warning"],
                                        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
                procs.append(proc)
                wait_up(f"http://127.0.0.1:{port}/health", proc, log)
                servers[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid)
            for path, model in (("bypass", "mixtral"), ("routed", "radial")):
                bodies = bodies_for(prompts, args.requests, model)
                for url, pid in servers.values():  # warm-up
                    asyncio.run(drive(url, bodies[:200], args.concurrency, args.stream, pid))
                for r in range(args.rounds):
                    order = list(servers.items()) if r % 2 == 0 else list(servers.items())[::-1]
                    for name, (url, pid) in order:
                        result = asyncio.run(drive(url, bodies, args.concurrency, args.stream, pid))
                        runs.setdefault(path, {}).setdefault(name, []).append(result)
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
    base = next(iter(versions))
    rows = []
    for path, by_name in runs.items():
        base_cpu = statistics.median(x["server_cpu_ms_per_request"] for x in by_name[base])
        for name, results in by_name.items():
            cpu = statistics.median(x["server_cpu_ms_per_request"] for x in results)
            rows.append({"path": path, "version": name, "source": versions[name], "cpu_ms_per_request": cpu,
                         "cpu_runs": [round(x["server_cpu_ms_per_request"], 3) for x in results],
                         "cpu_ratio_vs_baseline": cpu / base_cpu,
                         "rps": statistics.median(x["throughput_rps"] for x in results),
                         "p50_ms": statistics.median(x["p50_ms"] for x in results),
                         "errors": sum(x["errors"] for x in results)})
    result = {"benchmark": "serve_ab", "router": router_desc, "baseline": base, "requests": args.requests,
              "rounds": args.rounds, "concurrency": args.concurrency, "stream": args.stream, "rows": rows,
              "load_average": [round(x, 2) for x in os.getloadavg()]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_ab.json").write_text(json.dumps(result, indent=2) + "\n")
    kind = "streaming" if args.stream else "non-streaming"
    text = (f"# serve_ab: server versions side by side\n\n{args.requests} {kind} requests per path, version and "
            f"round, {args.concurrency} in flight, {args.rounds} alternated rounds "
            f"(medians), router {router_desc}, load average at the end {result['load_average']}.\n\n"
            "| path | version | server CPU ms/request (rounds) | × baseline | req/s | p50 ms | errors |\n"
            "|---|---|---|---|---|---|---|\n" + "".join(
                f"| {r['path']} | {r['version']} | {r['cpu_ms_per_request']:.2f} ({', '.join(map(str, r['cpu_runs']))})"
                f" | {r['cpu_ratio_vs_baseline']:.2f} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['errors']} |\n"
                for r in rows)
            + "\nRerun: `python benchmarks/serve_ab.py base=<old src> new=src`\n")
    (RESULTS / "serve_ab.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
