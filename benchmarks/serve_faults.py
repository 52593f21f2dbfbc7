"""Fault matrix for ``radialrouter serve``: backend faults, poison requests, budget abuse and large prompts against
a real server process on 127.0.0.1 (never any other address).

Three processes, as in serve_load.py: a fake backend hub (three `FakeBackend` LLMs, switched between scenarios
through a control path on the hub), the routing server (``radialrouter serve`` with a generated config), and this
client. The router is best-single fitted on ``radialrouter.data.make_synthetic`` (it reads no query text, so no
encoder runs): every routed request still goes through the server's tokenizer, filters and routing batcher, but what
is measured is the fault handling, not the encoder. ``server.cooldown_s`` is 0, so every request meets the fault.

Scenario groups (each scenario: requests, successes, status codes, failure kinds, target, met):

- faults: one fault at a time on the first-ranked backend (others healthy): 500 at 50 %, hang (beyond its
  ``timeout_s``), connection reset, malformed JSON, 429 with Retry-After, stream cut mid-way (``break``), clean
  early EOF (``eof``); non-streaming and streaming. Target: every request succeeds. For streams whose backend
  cut/EOF'd after bytes were relayed, fallback is impossible: those count as "interrupted in-band" when the server
  ends them with an ``{"error": ...}`` event and no ``[DONE]``; a stream that ends with ``[DONE]`` but no
  ``finish_reason`` is a failure ("silently truncated").
- poison: rounds of normal routed requests with poison requests mixed in, all concurrent. Target: every normal
  request succeeds, every poison request gets a 4xx.
- budget: a key with a tiny budget that (a) opens streams and drops each after the first chunk, (b) sends many
  non-streaming requests concurrently. Target: spend ≤ budget + one reservation, both as the server books it
  (/metrics, decision log) and as the backends would bill it (tokens the fake backends generated).
- large: normal routed traffic alone, then with several multi-MB prompts in flight. Target: normal p99 ≤ 1 s.

    python benchmarks/serve_faults.py [--quick] [--scale 1.0] [--only faults,poison,budget,large]

Writes benchmarks/results/serve_faults.json and .md and prints the tables. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import platform
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from fastapi import FastAPI, Request  # module level: the hub's annotations are resolved from here

from radialrouter.serve.testing import free_port, spawn_python, wait_up

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"
#: pool name → the synthetic router's LLM name (best-single ranks by mean quality net of cost at λ)
POOL = {"cheap": "llm-0", "mid": "llm-1", "strong": "llm-2"}
PRICE_IN, PRICE_OUT = 5.0, 50.0  # USD per million tokens, every LLM: a 200-word, 40-token answer costs $0.003
KEYS = {"normal": "sk-faults-normal", "abuse-stream": "sk-faults-abuse-stream",
        "abuse-concurrent": "sk-faults-abuse-concurrent"}
WORDS = "the quick brown fox jumps over a lazy dog while seven small cats watch from the old red barn".split()
HEALTHY = {"mode": "ok", "fail_every": 0, "fail_rate": 0.0, "status": 500, "hang_s": 30.0, "stream_chunks": 0,
           "chunk_delay_s": 0.0, "retry_after": "2"}
REQUEST_TIMEOUT_S = 30.0
SCENARIO_LIMIT_S = 120.0  # --scenario-limit-s: requests not sent by then count as failures
ACCEPTED = {"success", "interrupted_in_band"}  # not failures (interrupted: where the target allows it)


# ---------------------------------------------------------------------------------------------- processes
def spawn(args: list[str], log: Path) -> subprocess.Popen:
    return spawn_python(args, log, cwd=ROOT)


def fake_hub(port: int, delay_ms: float) -> None:
    """Child process: each pool LLM at /<name>/v1, and /_control/<name> to read or set its FakeBackend attributes."""
    import uvicorn

    from radialrouter.serve.testing import FakeBackend

    fakes = {name: FakeBackend(name, delay_s=delay_ms / 1000, keep_requests=False) for name in POOL}
    hub = FastAPI()

    def state(fake: FakeBackend) -> dict:
        return {"mode": fake.mode, "calls": fake.calls, "billed_prompt_tokens": fake.billed_prompt_tokens,
                "billed_completion_tokens": fake.billed_completion_tokens}

    @hub.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @hub.get("/_control")
    async def read() -> dict:
        return {name: state(fake) for name, fake in fakes.items()}

    @hub.post("/_control/{name}")
    async def control(name: str, request: Request) -> dict:
        fake = fakes[name]
        for key, value in (await request.json()).items():
            if key not in HEALTHY and key != "delay_s":
                raise ValueError(f"not a FakeBackend setting: {key}")
            setattr(fake, key, value)
        return state(fake)

    for name, fake in fakes.items():
        hub.mount(f"/{name}", fake.app)
    uvicorn.run(hub, host=HOST, port=port, log_level="error", access_log=False)


def build_router(directory: Path) -> dict[str, list[str]]:
    """Fit and save best-single on synthetic data; return the ranking (pool names) per routed model name."""
    from radialrouter.core.objective import SCENARIOS
    from radialrouter.data import make_synthetic
    from radialrouter.routers import make_router

    router = make_router("best-single").fit(make_synthetic(n_queries=80, n_llms=3, seed=0).select("train"))
    router.save_pretrained(directory)
    names = {v: k for k, v in POOL.items()}
    ranking = {}
    for model, lam in [("radial", SCENARIOS["balance"])] + [(f"radial:{k}", v) for k, v in SCENARIOS.items()]:
        ranking[model] = [names[n] for n in router.route(["x"], lam=lam)[0].ranking]
    return ranking


def write_config(path: Path, router: Path, hub: str, first: str, timeout_s: float, budget: float) -> Path:
    llms = [{"name": name, "base_url": f"{hub}/{name}/v1", "router_llm": llm, "input_price": PRICE_IN,
             "output_price": PRICE_OUT, "context_window": 128_000, "capabilities": ["tools", "json"],
             "timeout_s": timeout_s if name == first else 10.0} for name, llm in POOL.items()]
    keys = [{"id": cid, "key": "${RR_FAULTS_" + cid.upper().replace("-", "_") + "}",
             **({"budget_usd": budget} if cid.startswith("abuse") else {})} for cid in KEYS]
    config = {"router": {"path": str(router)}, "llms": llms,
              "server": {"cooldown_s": 0, "max_body_bytes": 4 * 1024 * 1024, "public_metrics": True},
              "auth": {"keys": keys}, "ledger": {"path": str(path.with_suffix(".sqlite"))}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Server:
    """The ``radialrouter serve`` subprocess; restarted (and the crash recorded) if it dies between scenarios."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log, self.port, self.proc, self.crashes = config, log, free_port(), None, []
        self.env = {**os.environ, **{"RR_FAULTS_" + cid.upper().replace("-", "_"): key for cid, key in KEYS.items()}}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        code = "from radialrouter.cli import main; main()"
        args = [sys.executable, "-c", code, "serve", "--config", str(self.config), "--port", str(self.port),
                "--log-level", "warning"]
        self.proc = subprocess.Popen(args, stdout=self.log.open("a"), stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        wait_up(f"{self.url}/health", self.proc, self.log, timeout=120)

    def ensure(self, before: str) -> bool:
        """Restart a dead server; True when it had died."""
        if self.proc is not None and self.proc.poll() is None:
            return False
        self.crashes.append({"before": before, "returncode": None if self.proc is None else self.proc.returncode})
        self.start()
        return True

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


# ---------------------------------------------------------------------------------------------- one request
@dataclass
class Outcome:
    kind: str  # "success", "interrupted_in_band", or a failure kind
    status: int | str  # HTTP status, or the transport exception's name
    latency_s: float | None = None
    code: str | None = None  # error.code of an error body
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.kind == "success"


def _error_code(text: str) -> str | None:
    try:
        err = json.loads(text).get("error")
        return err.get("code") if isinstance(err, dict) else None
    except (ValueError, AttributeError):
        return None


def _headers(client_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[client_id]}", "content-type": "application/json"}


def _raw(body: dict | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


async def call_json(client: httpx.AsyncClient, url: str, body: dict | bytes, client_id: str = "normal") -> Outcome:
    start = time.perf_counter()
    try:
        r = await client.post(url, content=_raw(body), headers=_headers(client_id))
    except httpx.TimeoutException as exc:
        return Outcome("client_timeout", type(exc).__name__)
    except httpx.HTTPError as exc:
        return Outcome(f"transport_{type(exc).__name__}", type(exc).__name__)
    latency = time.perf_counter() - start
    if r.status_code != 200:
        code = _error_code(r.text)
        return Outcome(f"http_{r.status_code}" + (f"_{code}" if code else ""), r.status_code, latency, code)
    try:
        message = r.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return Outcome("bad_json_200", 200, latency)
    if not (isinstance(message, dict) and (message.get("content") or message.get("tool_calls"))):
        return Outcome("no_content", 200, latency)
    return Outcome("success", 200, latency)


def judge_stream(payloads: list[str], transport_error: str | None, stray_lines: int = 0) -> str:
    """Classify a 200 stream from its ``data:`` payloads and the count of lines that are not server-sent events
    (see the module docstring for the rules)."""
    objs, garbage = [], stray_lines > 0
    for p in payloads:
        if p == "[DONE]":
            continue
        try:
            objs.append(json.loads(p))
        except ValueError:
            garbage = True
    done = "[DONE]" in payloads
    errors = [o for o in objs if isinstance(o, dict) and "error" in o]
    choices = [c for o in objs if isinstance(o, dict) and isinstance(o.get("choices"), list) for c in o["choices"]
               if isinstance(c, dict)]
    content = any(isinstance(c.get("delta"), dict) and (c["delta"].get("content") or c["delta"].get("tool_calls"))
                  for c in choices)
    finished = any(c.get("finish_reason") for c in choices)
    if garbage:
        return "garbage_relayed"
    if errors:
        if done:
            return "error_event_then_done"
        if objs[-1] is not errors[-1]:
            return "error_event_mid_stream"
        return "interrupted_in_band" if content else "error_event_before_output"
    if transport_error:
        return f"cut_without_error_event_{transport_error}"
    if not done:
        return "ended_without_done"
    if not finished:
        return "silently_truncated"
    if payloads[-1] != "[DONE]":
        return "data_after_done"
    return "success" if content else "no_content"


async def call_stream(client: httpx.AsyncClient, url: str, body: dict, client_id: str = "normal",
                      drop_after_first: bool = False) -> Outcome:
    """A streaming request read to the end (or dropped after the first ``data:`` event, closing the connection)."""
    start, payloads, status, error, first, stray = time.perf_counter(), [], None, None, None, 0
    try:
        async with client.stream("POST", url, content=_raw({**body, "stream": True}),
                                 headers=_headers(client_id)) as r:
            status = r.status_code
            if status != 200:
                text = (await r.aread()).decode(errors="replace")
                code = _error_code(text)
                return Outcome(f"http_{status}" + (f"_{code}" if code else ""), status,
                               time.perf_counter() - start, code)
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    payloads.append(line[5:].strip())
                    first = first or time.perf_counter() - start
                    if drop_after_first:
                        break
                elif line and not line.startswith((":", "event:", "id:", "retry:")):
                    stray += 1  # not server-sent events: relayed garbage
    except httpx.TimeoutException as exc:
        if status is None:
            return Outcome("client_timeout", type(exc).__name__)
        error = type(exc).__name__
    except httpx.HTTPError as exc:
        if status is None:
            return Outcome(f"transport_{type(exc).__name__}", type(exc).__name__)
        error = type(exc).__name__
    latency = time.perf_counter() - start
    if drop_after_first:
        return Outcome("success" if payloads else "no_first_event", 200, first or latency)
    return Outcome(judge_stream(payloads, error, stray), 200, latency)


async def bounded(coro, timeout: float) -> Outcome:
    """Never raise: a request that overruns or hits a bug in this script is a counted failure, not a crash."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        return Outcome("request_overran", "overran")
    except Exception as exc:  # noqa: BLE001 - reported as a failure kind
        return Outcome(f"bench_error_{type(exc).__name__}", "bench_error", extra={"message": str(exc)[:200]})


async def run_all(factories: list, concurrency: int, max_connections: int | None = None) -> list[Outcome]:
    """Run request coroutine factories (``f(client) -> coroutine``) with at most ``concurrency`` in flight; what is
    not sent within ``SCENARIO_LIMIT_S`` is a failure ("not_sent_time_limit")."""
    gate, deadline = asyncio.Semaphore(concurrency), time.monotonic() + SCENARIO_LIMIT_S
    limits = httpx.Limits(max_connections=max_connections or concurrency + 8, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0), limits=limits) as client:
        async def one(factory) -> Outcome:
            async with gate:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Outcome("not_sent_time_limit", "not_sent")
                return await bounded(factory(client), min(REQUEST_TIMEOUT_S, remaining) + 5)

        return list(await asyncio.gather(*(one(f) for f in factories)))


# ---------------------------------------------------------------------------------------------- helpers
def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 1) if values else None


def summarize(name: str, group: str, outcomes: list[Outcome], target: str, met: bool, **extra: Any) -> dict:
    ok = [o for o in outcomes if o.ok]
    return {"name": name, "group": group, "requests": len(outcomes), "successes": len(ok),
            "statuses": dict(collections.Counter(str(o.status) for o in outcomes)),
            "errors": dict(collections.Counter(o.kind for o in outcomes if o.kind not in ACCEPTED)), "target": target,
            "met": bool(met), "p50_ms": pct([o.latency_s for o in ok], 50),
            "p99_ms": pct([o.latency_s for o in ok], 99), **extra}


def hub_control(hub: str, name: str | None = None, **settings: Any) -> dict:
    if name is None:
        return httpx.get(f"{hub}/_control", timeout=10).json()
    r = httpx.post(f"{hub}/_control/{name}", json=settings, timeout=10)
    r.raise_for_status()
    return r.json()


def hub_reset(hub: str, delay_ms: float) -> None:
    for name in POOL:
        hub_control(hub, name, **HEALTHY, delay_s=delay_ms / 1000)


def words(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def chat(model: str, content: str, **extra: Any) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def normal_bodies(n: int, models: list[str], offset: int = 0) -> list[dict]:
    return [chat(models[i % len(models)], f"Question {offset + i}: {words(12, offset + i)}?", max_tokens=64)
            for i in range(n)]


def client_spend(server_url: str, client_id: str) -> float | None:
    """USD booked for ``client_id``: the sum of ``radialrouter_cost_usd_total{client=...}`` over LLMs."""
    try:
        text = httpx.get(f"{server_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("radialrouter_cost_usd_total{") and f'client="{client_id}"' in line:
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else 0.0


def settled_spend(server_url: str, client_id: str, timeout: float = 10.0) -> float | None:
    """Wait until the server's books for ``client_id`` stop moving (abandoned streams end asynchronously)."""
    deadline, last, stable_since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        value = client_spend(server_url, client_id)
        if value != last:
            last, stable_since = value, time.monotonic()
        elif time.monotonic() - stable_since >= 1.0:
            break
        time.sleep(0.2)
    return last


def billed_usd(before: dict, after: dict) -> float:
    """What the fake backends would bill between two ``/_control`` snapshots (same prices for every LLM)."""
    prompt = sum(after[n]["billed_prompt_tokens"] - before[n]["billed_prompt_tokens"] for n in POOL)
    completion = sum(after[n]["billed_completion_tokens"] - before[n]["billed_completion_tokens"] for n in POOL)
    return (prompt * PRICE_IN + completion * PRICE_OUT) / 1e6


def ledger_spend(path: Path) -> dict[str, dict]:
    """Per client from the decision log: rows, SUM(cost_usd), rows with no cost, statuses."""
    out: dict[str, dict] = {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            for client, status, n, cost, unpriced in db.execute(
                    "SELECT client, status, COUNT(*), COALESCE(SUM(cost_usd), 0), SUM(cost_usd IS NULL) "
                    "FROM decisions GROUP BY client, status"):
                c = out.setdefault(client, {"rows": 0, "cost_usd": 0.0, "rows_without_cost": 0, "statuses": {}})
                c["rows"] += n
                c["cost_usd"] += cost
                c["rows_without_cost"] += unpriced or 0
                c["statuses"][status] = n
    except sqlite3.Error as exc:
        return {"_error": {"message": str(exc)}}
    return out


# ---------------------------------------------------------------------------------------------- scenarios
FAULTS = {  # name → FakeBackend settings on the first-ranked LLM
    "500 at 50 %": {"fail_rate": 0.5, "status": 500},
    "hang": {"mode": "hang"},  # hang_s is set from timeout_s
    "connection reset": {"mode": "reset"},
    "malformed JSON": {"mode": "malformed"},
    "429 + Retry-After": {"mode": "error", "status": 429, "retry_after": "2"},
    "stream cut (break)": {"mode": "break"},
    "early EOF (eof)": {"mode": "eof"},
}


def scenario_faults(ctx: Context) -> list[dict]:
    out = []
    n, conc = ctx.n(ctx.args.fault_requests, 8), ctx.args.fault_concurrency
    for fault, settings in FAULTS.items():
        settings = {**settings, "hang_s": 5 * ctx.args.timeout_s} if settings.get("mode") == "hang" else settings
        for stream in (False, True):
            name = f"{fault} / {'stream' if stream else 'json'}"
            restarted = ctx.prepare(name)
            hub_control(ctx.hub, ctx.first, **settings)
            before = hub_control(ctx.hub)
            bodies = normal_bodies(n, ctx.routed, offset=len(out) * 1000)
            fn = call_stream if stream else call_json
            outcomes = asyncio.run(run_all([lambda c, b=b, fn=fn: fn(c, ctx.chat_url, b) for b in bodies], conc))
            after = hub_control(ctx.hub)
            cut_after_bytes = stream and settings.get("mode") in {"break", "eof"}
            interrupted = sum(o.kind == "interrupted_in_band" for o in outcomes)
            if cut_after_bytes:
                target = ("every request succeeds or, when the backend failed after output was relayed, ends with an "
                          "in-band error event and no [DONE]")
                met = all(o.kind in {"success", "interrupted_in_band"} for o in outcomes)
            else:
                target = "every request succeeds (fallback to the next-ranked LLM)"
                met = all(o.ok for o in outcomes)
            out.append(summarize(name, "faults", outcomes, target, met, fault=fault, stream=stream,
                                 faulty_llm=ctx.first, fault_settings=settings, interrupted_in_band=interrupted,
                                 faulty_llm_calls=after[ctx.first]["calls"] - before[ctx.first]["calls"],
                                 served_by_others={k: after[k]["calls"] - before[k]["calls"] for k in POOL
                                                   if k != ctx.first}, server_restarted=restarted))
            hub_reset(ctx.hub, ctx.args.delay_ms)
            time.sleep(0.2)
    return out


def poison_requests(model: str) -> dict[str, bytes]:
    """Raw request bodies a client can send; each should get a 4xx (never a 5xx, never upset other requests)."""
    base = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    surrogate = json.dumps(chat(model, "hello \ud800 world")).encode()  # ensure_ascii: the escape "\ud800"
    assert b"\\ud800" in surrogate
    return {
        "lone surrogate \\ud800": surrogate,
        "model radial@lam=1e39": json.dumps({**base, "model": f"{model.split(':')[0]}@lam=1e39"}).encode(),
        "temperature 1e400": json.dumps(base).encode()[:-1] + b', "temperature": 1e400}',
        "content part type is an object": json.dumps(
            {**base, "messages": [{"role": "user", "content": [{"type": {"kind": "text"}, "text": "hi"}]}]}).encode(),
        "JSON nested 950 deep": json.dumps(base).encode()[:-1] + b', "metadata": ' + b"[" * 950 + b"]" * 950 + b"}",
        "1 MB prompt": json.dumps(chat(model, words(1_000_000 // 5, seed=7))).encode(),
    }


def scenario_poison(ctx: Context) -> list[dict]:
    rounds, n_normal = max(1, ctx.n(ctx.args.poison_rounds, 1)), ctx.n(ctx.args.normal_per_round, 16)
    poisons = poison_requests("radial")
    restarted = ctx.prepare("poison")
    normal, per_kind = [], {k: [] for k in poisons}
    for rnd in range(rounds):
        bodies = normal_bodies(n_normal, ctx.routed, offset=100_000 + rnd * n_normal)
        factories = [lambda c, b=b: call_json(c, ctx.chat_url, b) for b in bodies]
        kinds = list(poisons)
        spots = sorted(random.Random(rnd).sample(range(len(factories) + len(kinds)), len(kinds)))
        for spot, kind in zip(spots, kinds):  # spread through the round, all in flight together
            factories.insert(spot, lambda c, k=kind: call_json(c, ctx.chat_url, poisons[k]))
        order = [None] * len(factories)
        for spot, kind in zip(spots, kinds):
            order[spot] = kind
        results = asyncio.run(run_all(factories, len(factories)))
        for kind, outcome in zip(order, results):
            (normal if kind is None else per_kind[kind]).append(outcome)
        if rnd + 1 < rounds:
            ctx.prepare(f"poison round {rnd + 2}")
    poison = {k: {"statuses": dict(collections.Counter(str(o.status) for o in v)),
                  "codes": dict(collections.Counter(str(o.code) for o in v)),
                  "all_4xx": all(isinstance(o.status, int) and 400 <= o.status < 500 for o in v)}
              for k, v in per_kind.items()}
    met = all(o.ok for o in normal) and all(p["all_4xx"] for p in poison.values())
    every = [o for k in per_kind.values() for o in k] + normal
    result = summarize("poison requests among normal traffic", "poison", normal, "every normal request succeeds; "
                       "every poison request gets a 4xx", met, rounds=rounds, normal_per_round=n_normal,
                       poison=poison, poison_requests=sum(len(v) for v in per_kind.values()),
                       all_statuses=dict(collections.Counter(str(o.status) for o in every)),
                       server_restarted=restarted)
    return [result]


def reservation_usd(ctx: Context, body: dict) -> tuple[float, int | None]:
    """The most a request may cost: the server's prompt-token estimate × token margin × input price + max_tokens ×
    output price (prompt tokens from /v1/route; the character count if it is unavailable)."""
    estimate = None
    try:
        r = httpx.post(f"{ctx.server.url}/v1/route", json=body, headers=_headers("normal"), timeout=10)
        estimate = r.json().get("prompt_tokens_estimate")
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    tokens = math.ceil(estimate * 1.15) if isinstance(estimate, int) else len(body["messages"][0]["content"])
    return (tokens * PRICE_IN + body["max_tokens"] * PRICE_OUT) / 1e6, estimate


def budget_result(ctx: Context, name: str, client_id: str, outcomes: list[Outcome], before: dict, **extra) -> dict:
    body = chat(ctx.routed[0], words(200, seed=3), max_tokens=ctx.max_tokens)
    reservation, estimate = reservation_usd(ctx, body)
    spend = settled_spend(ctx.server.url, client_id)
    billed = billed_usd(before, hub_control(ctx.hub))
    budget = ctx.args.budget
    limit = budget + reservation
    refused = sum(o.code == "budget_exceeded" for o in outcomes)
    target = ("spend ≤ budget + one reservation, as booked by the server (/metrics; decision log) and as billed by "
              "the backends")
    result = summarize(name, "budget", outcomes, target, False, client=client_id, budget_usd=budget,
                       reservation_usd=round(reservation, 6), prompt_tokens_estimate=estimate,
                       max_tokens=ctx.max_tokens, limit_usd=round(limit, 6), served=len([o for o in outcomes if o.ok]),
                       refused_budget=refused, spend_metrics_usd=spend, billed_by_backends_usd=round(billed, 6),
                       **extra)
    ctx.budget_checks.append(result)  # `met` is decided at the end, with the decision log flushed
    return result


def scenario_budget(ctx: Context) -> list[dict]:
    out = []
    body = chat(ctx.routed[0], words(200, seed=3), max_tokens=ctx.max_tokens)
    # (a) stream and drop after the first event, one at a time; the backends stream 40 chunks, 50 ms apart
    restarted = ctx.prepare("budget: stream and disconnect")
    for name in POOL:
        hub_control(ctx.hub, name, stream_chunks=40, chunk_delay_s=0.05)
    before = hub_control(ctx.hub)
    n = ctx.n(ctx.args.abuse_stream_requests, 20)  # ≥ 20: enough to overrun the budget if disconnects go free
    factories = [lambda c: call_stream(c, ctx.chat_url, body, "abuse-stream", drop_after_first=True)] * n
    outcomes = asyncio.run(run_all(factories, 1))
    out.append(budget_result(ctx, "stream and disconnect after the first chunk", "abuse-stream", outcomes, before,
                             concurrency=1, backend_stream_chunks=40, server_restarted=restarted))
    # (b) many non-streaming requests at once; each answer is 40 tokens after 0.4 s of "generation"
    restarted = ctx.prepare("budget: concurrent")
    for name in POOL:
        hub_control(ctx.hub, name, stream_chunks=40, chunk_delay_s=0.01)
    before = hub_control(ctx.hub)
    n, conc = ctx.n(ctx.args.abuse_requests, 30), min(ctx.args.abuse_concurrency, ctx.n(ctx.args.abuse_requests, 30))
    factories = [lambda c: call_json(c, ctx.chat_url, body, "abuse-concurrent")] * n
    outcomes = asyncio.run(run_all(factories, conc))
    out.append(budget_result(ctx, f"{conc}-way concurrent non-streaming", "abuse-concurrent", outcomes, before,
                             concurrency=conc, server_restarted=restarted))
    hub_reset(ctx.hub, ctx.args.delay_ms)
    return out


def scenario_large(ctx: Context) -> list[dict]:
    n, conc = ctx.n(ctx.args.large_normal, 20), ctx.args.large_concurrency
    size = int(ctx.args.large_mb * 1_000_000)
    big = json.dumps(chat(ctx.routed[0], words(size // 4, seed=11)[:size])).encode()
    phases = {}
    for phase in ("baseline", "with large prompts"):
        restarted = ctx.prepare(f"large: {phase}")
        bodies = normal_bodies(n, ctx.routed, offset=200_000)
        large: list[Outcome] = []

        async def drive(phase=phase, bodies=bodies, large=large) -> list[Outcome]:
            done = asyncio.Event()

            async def sender(client: httpx.AsyncClient, i: int) -> None:
                deadline = time.monotonic() + SCENARIO_LIMIT_S
                for _ in range(50):  # bounded: at most 50 large prompts per sender, and SCENARIO_LIMIT_S
                    if done.is_set() or time.monotonic() > deadline:
                        return
                    large.append(await bounded(call_json(client, ctx.chat_url, big), REQUEST_TIMEOUT_S + 5))

            async def normal() -> list[Outcome]:
                try:
                    return await run_all([lambda c, b=b: call_json(c, ctx.chat_url, b) for b in bodies], conc)
                finally:
                    done.set()

            if phase == "baseline":
                return await normal()
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
                senders = [asyncio.create_task(sender(client, i)) for i in range(ctx.args.large_count)]
                await asyncio.sleep(0.2)  # the large prompts are in flight first
                result = await normal()
                await asyncio.gather(*senders)
                return result

        started = time.perf_counter()
        outcomes = asyncio.run(drive())
        phases[phase] = (outcomes, large, time.perf_counter() - started, restarted)
    (base, _, base_wall, r1), (loaded, large, wall, r2) = phases["baseline"], phases["with large prompts"]
    base_ok = [o.latency_s for o in base if o.ok]
    p99 = pct([o.latency_s for o in loaded if o.ok], 99)
    met = all(o.ok for o in loaded) and p99 is not None and p99 <= 1000
    return [summarize("normal traffic with large prompts in flight", "large", loaded,
                      "every normal request succeeds; normal p99 ≤ 1 s", met, concurrency=conc,
                      baseline={"requests": len(base), "successes": len(base_ok), "p50_ms": pct(base_ok, 50),
                                "p99_ms": pct(base_ok, 99), "wall_s": round(base_wall, 2)},
                      wall_s=round(wall, 2), large_prompt_bytes=len(big), large_in_flight=ctx.args.large_count,
                      large_requests=len(large),
                      large_statuses=dict(collections.Counter(str(o.status) for o in large)),
                      large_codes=dict(collections.Counter(str(o.code) for o in large)),
                      large_p50_ms=pct([o.latency_s for o in large if o.latency_s is not None], 50),
                      server_restarted=r1 or r2)]


# ---------------------------------------------------------------------------------------------- main
@dataclass
class Context:
    args: argparse.Namespace
    hub: str
    server: Server
    first: str
    routed: list[str]
    ranking: dict[str, list[str]]
    max_tokens: int = 64
    budget_checks: list[dict] = field(default_factory=list)

    @property
    def chat_url(self) -> str:
        return f"{self.server.url}/v1/chat/completions"

    def n(self, count: int, minimum: int) -> int:
        return max(minimum, round(count * self.args.scale))

    def prepare(self, scenario: str) -> bool:
        hub_reset(self.hub, self.args.delay_ms)
        restarted = self.server.ensure(scenario)
        if restarted:
            print(f"  server had died; restarted before {scenario!r}", file=sys.stderr)
        return restarted


GROUPS = {"faults": scenario_faults, "poison": scenario_poison, "budget": scenario_budget, "large": scenario_large}


def main() -> None:
    global SCENARIO_LIMIT_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A fast smoke run (about a quarter of every count).")
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply every request count.")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"Comma-separated groups from {list(GROUPS)}.")
    parser.add_argument("--fault-requests", type=int, default=48, help="Requests per fault scenario.")
    parser.add_argument("--fault-concurrency", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=1.0, help="timeout_s of the faulty LLM (hang: 5×).")
    parser.add_argument("--poison-rounds", type=int, default=3)
    parser.add_argument("--normal-per-round", type=int, default=96)
    parser.add_argument("--budget", type=float, default=0.01, help="USD budget of each abuse key.")
    parser.add_argument("--abuse-stream-requests", type=int, default=40)
    parser.add_argument("--abuse-requests", type=int, default=300)
    parser.add_argument("--abuse-concurrency", type=int, default=100)
    parser.add_argument("--large-normal", type=int, default=200, help="Normal requests per large-prompt phase.")
    parser.add_argument("--large-concurrency", type=int, default=4)
    parser.add_argument("--large-count", type=int, default=3, help="Large prompts in flight at once.")
    parser.add_argument("--large-mb", type=float, default=3.5)
    parser.add_argument("--delay-ms", type=float, default=5.0, help="Fake backend time to first byte.")
    parser.add_argument("--scenario-limit-s", type=float, default=SCENARIO_LIMIT_S,
                        help="Requests of a scenario not sent within this are counted as failures.")
    parser.add_argument("--output", default=str(RESULTS / "serve_faults"), help="Output path without suffix.")
    parser.add_argument("--fake-hub-port", type=int, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.fake_hub_port:
        return fake_hub(args.fake_hub_port, args.delay_ms)
    if args.quick:
        args.scale *= 0.25
    SCENARIO_LIMIT_S = args.scenario_limit_s
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise SystemExit(f"--only: unknown groups {sorted(unknown)}; choose from {list(GROUPS)}")
    load_before, started = os.getloadavg(), time.perf_counter()
    scenarios, procs = [], []
    with tempfile.TemporaryDirectory(prefix="serve-faults-") as tmp:
        tmp = Path(tmp)
        server = None
        try:
            ranking = build_router(tmp / "router")
            first = ranking["radial"][0]
            routed = [m for m, r in ranking.items() if r[0] == first]
            hub_port = free_port()
            hub = f"http://{HOST}:{hub_port}"
            procs.append(spawn([__file__, "--fake-hub-port", str(hub_port), "--delay-ms", str(args.delay_ms)],
                               tmp / "hub.log"))
            wait_up(f"{hub}/health", procs[-1], tmp / "hub.log")
            config = write_config(tmp / "serve.yaml", tmp / "router", hub, first, args.timeout_s, args.budget)
            server = Server(config, tmp / "server.log")
            server.start()
            ctx = Context(args, hub, server, first, routed, ranking)
            for group in groups:
                t0 = time.perf_counter()
                print(f"{group} …", file=sys.stderr, flush=True)
                try:
                    scenarios += GROUPS[group](ctx)
                except Exception as exc:  # noqa: BLE001 - a broken group is reported, the others still run
                    traceback.print_exc()
                    scenarios.append({"name": f"{group}: the benchmark itself failed", "group": group,
                                      "requests": 0, "successes": 0, "statuses": {},
                                      "errors": {f"bench_error_{type(exc).__name__}": 1}, "message": str(exc)[:300],
                                      "target": "the scenario runs", "met": False})
                print(f"{group} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            returncode = server.stop()
            ledger = ledger_spend(config.with_suffix(".sqlite"))
            for check in ctx.budget_checks:
                booked = ledger.get(check["client"], {})
                check["spend_ledger_usd"] = booked.get("cost_usd")
                check["ledger_rows_without_cost"] = booked.get("rows_without_cost")
                check["ledger_statuses"] = booked.get("statuses")
                amounts = [check["spend_metrics_usd"], check["spend_ledger_usd"], check["billed_by_backends_usd"]]
                check["met"] = all(a is not None and a <= check["limit_usd"] + 1e-12 for a in amounts)
            server_log = (tmp / "server.log").read_text(errors="replace")
            hub_alive = procs[0].poll() is None
        finally:
            if server is not None:
                server.stop()
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
    result = {
        "benchmark": "serve_faults", "git_commit": git_commit(), "wall_s": round(time.perf_counter() - started, 1),
        "settings": {k: v for k, v in vars(args).items() if k != "fake_hub_port"},
        "router": "best-single on make_synthetic(n_queries=80, n_llms=3, seed=0)", "ranking": ranking,
        "faulty_llm": first, "routed_models": routed, "prices_usd_per_mtok": [PRICE_IN, PRICE_OUT],
        "met": sum(s["met"] for s in scenarios), "scenarios_total": len(scenarios), "scenarios": scenarios,
        "server": {"crashes": server.crashes, "exit_code": returncode, "hub_alive": hub_alive,
                   "log_errors": len(re.findall(r"(?m)^.*(ERROR|Traceback)", server_log)),
                   "log_tail": server_log[-2000:]},
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())},
    }
    write_report(result, Path(args.output))


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------------------------- report
def _counts(d: dict | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted((d or {}).items(), key=lambda kv: -int(kv[1]))) or "–"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def _usd(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _verdict(s: dict) -> str:
    return "**met**" if s["met"] else "**NOT met**"


def write_report(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    by = collections.defaultdict(list)
    for s in result["scenarios"]:
        by[s["group"]].append(s)
    m = result["machine"]
    text = ["# serve_faults: the routing server under faults and abuse\n",
            f"Commit `{result['git_commit']}`, {m['cpu_count']} CPU cores, load average "
            f"{m['loadavg_before'][0]:.2f} → {m['loadavg_after'][0]:.2f}, {result['wall_s']:.0f} s in all. Router: "
            f"{result['router']} (no encoder); routed models {result['routed_models']} rank `{result['faulty_llm']}` "
            f"first, and faults go on it. Cooldown off (every request meets the fault). Loopback only.\n",
            f"**{result['met']} of {result['scenarios_total']} scenarios meet their target.** Server crashes: "
            f"{len(result['server']['crashes'])}; ERROR/traceback lines in the server log: "
            f"{result['server']['log_errors']}.\n"]
    if by.get("faults"):
        text += ["## Single-backend faults (first-ranked LLM faulty, the others healthy)\n",
                 f"Target: every request succeeds; for streams cut after output was relayed (`break`, `eof`), an "
                 f"in-band error event and no `[DONE]` is the accepted end (\"interrupted\"). Faulty LLM timeout "
                 f"{result['settings']['timeout_s']:g} s, hang 5× that.\n",
                 "| fault | requests | ok | interrupted in-band | failures | statuses | faulty LLM calls | ok p50 ms "
                 "| ok p99 ms | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
        for s in by["faults"]:
            text.append(f"| {s['name']} | {s['requests']} | {s['successes']} | {s.get('interrupted_in_band', 0)} | "
                        f"{_counts(s['errors'])} | {_counts(s['statuses'])} | {s.get('faulty_llm_calls', '–')} | "
                        f"{_ms(s.get('p50_ms'))} | {_ms(s.get('p99_ms'))} | {_verdict(s)} |")
        text.append("")
    if by.get("poison"):
        text += ["## Poison requests mixed into normal routed traffic (all in flight together)\n"]
        for s in by["poison"]:
            if "poison" not in s:
                text.append(f"{s['name']}: {_counts(s['errors'])} — {_verdict(s)}\n")
                continue
            text += [f"{s['rounds']} rounds of {s['normal_per_round']} normal + {len(s['poison'])} poison requests. "
                     f"Target: {s['target']}.\n", "| request | statuses | error codes | 4xx every time |",
                     "|---|---|---|---|",
                     f"| normal ({s['requests']}) | {_counts(s['statuses'])} | failures: {_counts(s['errors'])} | "
                     f"{s['successes']}/{s['requests']} ok, p50 {_ms(s['p50_ms'])} ms, p99 {_ms(s['p99_ms'])} ms |"]
            text += [f"| {k} | {_counts(p['statuses'])} | {_counts(p['codes'])} | {'yes' if p['all_4xx'] else 'NO'} |"
                     for k, p in s["poison"].items()]
            text.append(f"\nVerdict: {_verdict(s)}.\n")
    if by.get("budget"):
        text += ["## Budget abuse (fresh keys, budget per key)\n",
                 "Spend as the server books it (/metrics, decision log `SUM(cost_usd)`) and as the fake backends "
                 "would bill it (prompt words and every completion token they generated, at the same prices). "
                 "Reservation = ⌈server prompt-token estimate × 1.15⌉ × input price + max_tokens × output price. "
                 "Target: every amount ≤ budget + one reservation.\n",
                 "| scenario | requests | served | refused (budget) | other failures | booked /metrics $ | booked "
                 "ledger $ | billed by backends $ | budget $ | reservation $ | limit $ | verdict |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in by["budget"]:
            if "budget_usd" not in s:
                text.append(f"| {s['name']} | – | – | – | {_counts(s['errors'])} | – | – | – | – | – | – | "
                            f"{_verdict(s)} |")
                continue
            other = {k: v for k, v in s["errors"].items() if "budget_exceeded" not in k}
            text.append(f"| {s['name']} | {s['requests']} | {s['served']} | {s['refused_budget']} | {_counts(other)} "
                        f"| {_usd(s['spend_metrics_usd'])} | {_usd(s.get('spend_ledger_usd'))} | "
                        f"{_usd(s['billed_by_backends_usd'])} | {_usd(s['budget_usd'])} | "
                        f"{_usd(s['reservation_usd'])} | {_usd(s['limit_usd'])} | {_verdict(s)} |")
        text.append("")
    if by.get("large"):
        text += ["## Large prompts in flight\n"]
        for s in by["large"]:
            if "baseline" not in s:
                text.append(f"{s['name']}: {_counts(s['errors'])} — {_verdict(s)}\n")
                continue
            b = s["baseline"]
            text += [f"{s['large_in_flight']} routed prompts of {s['large_prompt_bytes'] / 1e6:.1f} MB kept in flight "
                     f"({s['large_requests']} sent; statuses {_counts(s['large_statuses'])}, codes "
                     f"{_counts(s['large_codes'])}) while normal routed requests run at concurrency "
                     f"{s['concurrency']}. Target: {s['target']}.\n",
                     "| phase | requests | ok | failures | p50 ms | p99 ms | verdict |",
                     "|---|---|---|---|---|---|---|",
                     f"| baseline (no large prompts) | {b['requests']} | {b['successes']} | – | {_ms(b['p50_ms'])} | "
                     f"{_ms(b['p99_ms'])} | – |",
                     f"| with large prompts | {s['requests']} | {s['successes']} | {_counts(s['errors'])} | "
                     f"{_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | {_verdict(s)} |", ""]
    for group, items in by.items():
        if group not in {"faults", "poison", "budget", "large"}:
            text += [f"## {group}\n"] + [f"- {s['name']}: {_counts(s['errors'])} — {_verdict(s)}" for s in items]
    text.append("Rerun: `python benchmarks/serve_faults.py` (`--quick` for a smoke run).\n")
    out.with_suffix(".md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
