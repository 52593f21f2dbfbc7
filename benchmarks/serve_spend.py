"""Spend under attack: the second gateway audit's attacks (issue #21) against ``radialrouter serve``, with a fake
provider on 127.0.0.1 that bills as real ones do at the least — ≥ 1 token per 4 UTF-8 bytes of prompt, every one of
``n`` choices, a stream in full when it starts even if its caller hangs up — and the prompt bound's head-room on
real English text.

Scenarios (each on a fresh gateway, fresh ledger and fresh provider counters; a 0.01 USD key):

- ``n``: 60 concurrent gpt-4 requests with ``n: 64``, ``max_tokens: 50`` (audit: 7 admitted, 0.67 USD billed);
  with PostgreSQL, ``n: 128`` over two replicas (audit: 1.34 USD).
- ``emoji`` / ``private-use`` / ``one-character``: 30 concurrent gpt-4 requests whose prompts a WordPiece count
  makes small (audit: 100,000 emoji billed 15 USD); the audit's sizes, which now overflow every window (400,
  nothing called), and sizes that fit gpt-4's window (admitted, bounded).
- ``dropped streams``: 10 gpt-4 streams with a 20,000-emoji prompt, each dropped after one line (audit: ledger
  0.0002 of 2.00 USD).
- ``overflow``: a 25,000- and a 40,000-emoji prompt to ``radial@lam=1e6`` (cost first), 5 times each (audit: sent to
  mixtral's 32k window 4 times of 5).

Targets: billed ≤ budget + one request's worst case (every prompt byte a token, every choice's output limit); ledger
≥ 90 % of the bill on dropped streams; no call to an LLM whose window the prompt bound overflows.

    python benchmarks/serve_spend.py

Writes benchmarks/results/serve_spend.json and .md and prints the tables. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np

from radialrouter.core.tokens import load_tokenizer
from radialrouter.data import load_dataset, make_synthetic
from radialrouter.routers import make_router
from radialrouter.serve import parse_config
from radialrouter.serve.app import create_app
from radialrouter.serve.pgtesting import TemporaryPostgres, find_bin_dir
from radialrouter.serve.routing import TOKENS_PER_MESSAGE, TOKENS_PER_REPLY, count_tokens, text_token_bound
from radialrouter.serve.testing import FakeBackend, ServerThread, fake_backends

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
POOL = {"gpt-4": (10.0, 30.0, 128_000, "llm-2"), "mixtral": (0.6, 0.6, 32_768, "llm-1"),
        "small": (0.1, 0.1, 8_192, "llm-0")}  # USD per million in/out, window, the synthetic router's LLM
BUDGET = 0.01
KEYS = {"RR_TENANT": "sk-tenant", "RR_OTHER": "sk-other"}
EMOJI, PRIVATE_USE = "\U0001f600", "\ue000"


def bill(fakes: dict[str, FakeBackend]) -> float:
    return sum((f.billed_prompt_tokens * POOL[n][0] + f.billed_completion_tokens * POOL[n][1]) / 1e6
               for n, f in fakes.items())


def worst_case(llm: str, text: str, max_tokens: int, n: int = 1) -> float:
    """One request's worst case: every prompt byte a token plus the chat overhead, every choice's output limit."""
    prompt = len(text.encode()) + TOKENS_PER_MESSAGE + TOKENS_PER_REPLY
    return (prompt * POOL[llm][0] + n * max_tokens * POOL[llm][1]) / 1e6


@contextmanager
def gateways(router: Path, base: str, ledgers: list[dict], **server) -> Iterator[list[tuple]]:
    """Served apps, one per ledger config (two on one PostgreSQL URL are two replicas)."""
    llms = [{"name": n, "base_url": f"{base}/{n}/v1", "router_llm": r, "input_price": p_in, "output_price": p_out,
             "context_window": w, "timeout_s": 30.0} for n, (p_in, p_out, w, r) in POOL.items()]
    keys = [{"id": "tenant", "key": "${RR_TENANT}", "budget_usd": BUDGET}, {"id": "other", "key": "${RR_OTHER}"}]
    with ExitStack() as stack:
        out = []
        for i, ledger in enumerate(ledgers):
            os.environ["RADIALROUTER_REPLICA_ID"] = f"r{i + 1}"
            config = {"router": {"path": str(router)}, "llms": llms, "auth": {"keys": keys}, "ledger": ledger,
                      "server": {"batch_max_wait_ms": 1, "max_body_bytes": 4_500_000, **server}}
            app = create_app(parse_config(config, env=KEYS))
            out.append((app, stack.enter_context(ServerThread(app, server=app.state.serve.config.server)).url))
        yield out


def wait_idle(apps: list, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while any(a.state.serve.in_flight for a in apps) and time.monotonic() < deadline:
        time.sleep(0.02)


def ledger_usd(app, client: str) -> float:
    ledger = app.state.serve.ledger
    deadline = time.monotonic() + 10
    while ledger.backlog() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    return sum(r["cost_usd"] or 0.0 for r in ledger.rows() if r["client"] == client)


async def flood(urls: list[str], body: dict, n: int, key: str = "sk-tenant") -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=2 * n)) as client:
        return await asyncio.gather(*(client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body,
                                                  headers={"authorization": f"Bearer {key}"}) for i in range(n)))


def calls(fakes: dict[str, FakeBackend]) -> dict[str, int]:
    return {n: f.calls for n, f in fakes.items()}


# ---------------------------------------------------------------------------------------------- scenarios
def budget_attack(router: Path, tmp: Path, name: str, content: str, n_requests: int, pg: str | None = None,
                  **extra) -> dict:
    """``n_requests`` concurrent gpt-4 requests on the 0.01 USD key; billed vs budget + one worst case."""
    max_tokens, choices = extra.get("max_tokens", 5), extra.get("n", 1)
    ledgers = [{"url": pg}] * 2 if pg else [{"path": str(tmp / f"{name}-{time.monotonic_ns()}.sqlite")}]
    with fake_backends(POOL, keep_requests=False, bytes_per_token=4) as (fakes, base):
        fakes["gpt-4"].stream_chunks = max_tokens  # every choice runs to its output limit
        with gateways(router, base, ledgers) as gws:
            t0 = time.perf_counter()
            responses = asyncio.run(flood([u for _, u in gws], {"model": "gpt-4", "messages": [
                {"role": "user", "content": content}], "max_tokens": max_tokens, **extra}, n_requests))
            wait_idle([a for a, _ in gws])
            wall = time.perf_counter() - t0
            recorded = ledger_usd(gws[0][0], "tenant")
        billed = bill(fakes)
    statuses: dict[str, int] = {}
    for r in responses:
        key = f"{r.status_code} {r.json()['error']['code']}" if r.status_code != 200 else "200"
        statuses[key] = statuses.get(key, 0) + 1
    bound = BUDGET + worst_case("gpt-4", content, max_tokens, choices)
    return {"scenario": name, "requests": n_requests, "statuses": statuses, "billed_usd": billed,
            "ledger_usd": recorded, "bound_usd": bound, "prompt_bytes": len(content.encode()), "n": choices,
            "replicas": len(ledgers), "wall_s": round(wall, 2),
            "met": billed <= bound and abs(recorded - billed) <= 1e-9 + 1e-9 * billed}


def dropped_streams(router: Path, tmp: Path) -> dict:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": EMOJI * 20_000}], "stream": True,
            "max_tokens": 100}
    with fake_backends(POOL, keep_requests=False, bytes_per_token=4) as (fakes, base):
        fakes["gpt-4"].stream_chunks, fakes["gpt-4"].chunk_delay_s = 100, 0.004
        with gateways(router, base, [{"path": str(tmp / "dropped.sqlite")}]) as [(app, url)]:
            async def drop(client: httpx.AsyncClient) -> None:
                async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                                         headers={"authorization": "Bearer sk-other"}) as r:
                    async for _ in r.aiter_lines():
                        break

            async def main() -> None:
                async with httpx.AsyncClient(timeout=120) as client:
                    await asyncio.gather(*(drop(client) for _ in range(10)))

            asyncio.run(main())
            wait_idle([app])
            recorded = ledger_usd(app, "other")
        billed = bill(fakes)
    return {"scenario": "dropped streams (10 × 20,000 emoji, hang-up after one line)", "requests": 10,
            "billed_usd": billed, "ledger_usd": recorded, "recorded_share": recorded / billed if billed else None,
            "met": billed > 0 and recorded >= 0.9 * billed}


def overflow(router: Path, tmp: Path) -> dict:
    out: dict = {"scenario": "overflow (radial@lam=1e6, 5 × 25,000 and 5 × 40,000 emoji)", "requests": 10}
    with fake_backends(POOL, keep_requests=False, bytes_per_token=4) as (fakes, base):
        with gateways(router, base, [{"path": str(tmp / "overflow.sqlite")}]) as [(_, url)]:
            served: dict[str, int] = {}
            with httpx.Client(base_url=url, headers={"authorization": "Bearer sk-other"}, timeout=120) as http:
                out["short_prompt_llm"] = http.post("/v1/route", json={"model": "radial@lam=1000000", "messages": [
                    {"role": "user", "content": "hi"}]}).json()["llm"]
                for size in (25_000, 40_000):
                    for _ in range(5):
                        r = http.post("/v1/chat/completions", json={"model": "radial@lam=1000000", "max_tokens": 5,
                                                                    "messages": [{"role": "user",
                                                                                  "content": EMOJI * size}]})
                        key = r.json()["model"] if r.status_code == 200 else f"{r.status_code} " \
                            f"{r.json()['error']['code']}"
                        served[f"{size}: {key}"] = served.get(f"{size}: {key}", 0) + 1
        out.update(outcomes=served, backend_calls=calls(fakes))
    # 25,000 emoji fit gpt-4's window only; 40,000 (bounded at 160,007 tokens) fit none: a 400, nothing called
    out["met"] = (out["backend_calls"]["mixtral"] == out["backend_calls"]["small"] == 0
                  and served == {"25000: gpt-4": 5, "40000: 400 context_length_exceeded": 5})
    return out


def english_headroom() -> dict:
    """How far the bound sits above the offline count and above 4 bytes per token (a byte-level BPE's average on
    English) on real prompts: routerbench3 when the shared data is there, else synthetic English sentences."""
    tokenizer = load_tokenizer()
    if (DATA / "routerbench3.parquet").exists():
        prompts, source = [str(p) for p in load_dataset(DATA / "routerbench3.parquet").prompts][:3000], "routerbench3"
    else:
        words = "the model routes each query to the cheapest capable LLM given a trade off".split()
        rng = np.random.default_rng(0)
        prompts = [" ".join(rng.choice(words, 60)) for _ in range(500)]
        source = "synthetic English"
    ratios_count, ratios_bytes, ascii_share = [], [], 0
    for p in prompts:
        counted = count_tokens(tokenizer, p, 10**9)
        bound = text_token_bound(p, counted, 1.15)
        if counted:
            ratios_count.append(bound / counted)
        ratios_bytes.append(bound / max(1.0, len(p.encode()) / 4))
        ascii_share += p.isascii()
    q = np.quantile
    return {"source": source, "prompts": len(prompts), "ascii_share": ascii_share / len(prompts),
            "bound_over_count": {"p50": float(q(ratios_count, 0.5)), "p95": float(q(ratios_count, 0.95)),
                                 "max": float(max(ratios_count))},
            "bound_over_bytes_div_4": {"p50": float(q(ratios_bytes, 0.5)), "p95": float(q(ratios_bytes, 0.95)),
                                       "max": float(max(ratios_bytes))}}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        router = tmp / "router"
        make_router("best-single").fit(make_synthetic(n_queries=80, n_llms=3, seed=0).select("train")) \
            .save_pretrained(router)
        rows.append(budget_attack(router, tmp, "n: 64 × 60 concurrent", "write fifty words", 60, n=64, max_tokens=50))
        for name, content in (("100,000 emoji (400 KB) × 30", EMOJI * 100_000),
                              ("100,000 private-use characters × 30", PRIVATE_USE * 100_000),
                              ("400,000 × 'a' × 30", "a" * 400_000),
                              ("5,000 emoji × 100", EMOJI * 5_000),
                              ("5,000 private-use characters × 100", PRIVATE_USE * 5_000),
                              ("20,000 × 'a' × 100", "a" * 20_000)):
            rows.append(budget_attack(router, tmp, name, content, 100 if "× 100" in name else 30))
        rows.append(dropped_streams(router, tmp))
        rows.append(overflow(router, tmp))
        if find_bin_dir() is not None:
            with TemporaryPostgres() as pg:
                rows.append(budget_attack(router, tmp, "n: 128 × 100 over 2 PostgreSQL replicas", "write fifty words",
                                          100, pg=pg.create_database("nattack"), n=128, max_tokens=50))
                rows.append(budget_attack(router, tmp, "5,000 emoji × 100 over 2 PostgreSQL replicas",
                                          EMOJI * 5_000, 100, pg=pg.create_database("emoji")))
        else:
            print("PostgreSQL binaries not found: the two-replica scenarios are skipped", file=sys.stderr)
    result = {"scenarios": rows, "english_headroom": english_headroom(), "all_met": all(r["met"] for r in rows),
              "meta": {"python": platform.python_version(), "load_average": list(os.getloadavg()),
                       "cpus": os.cpu_count(), "wall_s": round(time.perf_counter() - started, 1),
                       "when": time.strftime("%Y-%m-%d %H:%M:%S")}}
    (RESULTS / "serve_spend.json").write_text(json.dumps(result, indent=2))
    report = render(result)
    (RESULTS / "serve_spend.md").write_text(report)
    print(report)


def render(result: dict) -> str:
    lines = ["# Spend under attack (`benchmarks/serve_spend.py`)", "",
             "A fake provider that bills ≥ 1 token per 4 UTF-8 bytes of prompt, every choice, and a stream in full "
             "even when its caller hangs up; key budget 0.01 USD; prices gpt-4 10/30, mixtral 0.6/0.6, small "
             "0.1/0.1 USD per million tokens; windows 128,000 / 32,768 / 8,192. Bound = budget + one request's worst "
             "case (every prompt byte a token, every choice's output limit).", "",
             "| scenario | requests | answers | provider billed (USD) | ledger (USD) | bound (USD) | met |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in result["scenarios"]:
        answers = r.get("statuses") or r.get("outcomes") or ""
        answers = ", ".join(f"{k}: {v}" for k, v in answers.items()) if isinstance(answers, dict) else answers
        if "backend_calls" in r:
            answers += f"; backend calls {r['backend_calls']}"
        fmt = (lambda v: "–" if v is None else f"{v:.4f}")  # noqa: E731
        lines.append(f"| {r['scenario']} | {r['requests']} | {answers} | {fmt(r.get('billed_usd'))} | "
                     f"{fmt(r.get('ledger_usd'))} | {fmt(r.get('bound_usd'))} | {'yes' if r['met'] else '**no**'} |")
    h = result["english_headroom"]
    lines += ["", f"Prompt bound on {h['prompts']} {h['source']} prompts ({h['ascii_share']:.0%} pure ASCII): "
              f"bound / offline count p50 {h['bound_over_count']['p50']:.2f}, p95 {h['bound_over_count']['p95']:.2f}, "
              f"max {h['bound_over_count']['max']:.2f}; bound / (bytes / 4) p50 "
              f"{h['bound_over_bytes_div_4']['p50']:.2f}, p95 {h['bound_over_bytes_div_4']['p95']:.2f}.", "",
              f"Machine: {result['meta']['cpus']} CPUs, load average at the end {result['meta']['load_average']}, "
              f"wall {result['meta']['wall_s']} s, {result['meta']['when']}. All met: {result['all_met']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
