"""Replicas sharing one PostgreSQL: schema and migrations on both engines, the decision log, budgets that hold
across replicas and restarts, leases of dead replicas, rate limits, probes, drain — against a real server
(`pg_server` in conftest: ``$RADIALROUTER_TEST_PG_URL`` or a throwaway cluster)."""

from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from radialrouter.data import make_synthetic
from radialrouter.ledger.migrations import MIGRATIONS, migrate
from radialrouter.ledger.schema import metadata
from radialrouter.ledger.store import Ledger, LedgerRow, Settlement
from radialrouter.routers import make_router
from radialrouter.serve import ConfigError, parse_config
from radialrouter.serve.app import create_app
from radialrouter.serve.pg import Shared
from radialrouter.serve.ratelimit import WINDOW_S, Limit, MemoryRateLimiter, Window, admits, estimate, refusal
from radialrouter.serve.routing import RequestError
from radialrouter.serve.testing import ServerThread, fake_backends

PRICE = 1000.0  # USD per million tokens
KEYS = {"RR_A": "sk-a", "RR_POOR": "sk-poor", "RR_LIMITED": "sk-limited"}


def _config(url: str | None, router_dir: Path | None = None, base: str = "http://127.0.0.1:9/x", **ledger) -> dict:
    pool = [{"name": name, "base_url": f"{base}/{name}/v1", "router_llm": f"llm-{i}", "input_price": PRICE,
             "output_price": PRICE, "context_window": 100_000, "timeout_s": 10.0}
            for i, name in enumerate(("cheap", "mid", "strong"))]
    keys = [{"id": "a", "key": "${RR_A}"}, {"id": "poor", "key": "${RR_POOR}", "budget_usd": 1.0},
            {"id": "limited", "key": "${RR_LIMITED}", "requests_per_minute": 3}]
    return {"router": {"path": str(router_dir)} if router_dir else {}, "llms": pool, "auth": {"keys": keys},
            "ledger": {"url": url, **ledger} if url else {"path": None},
            "server": {"batch_max_wait_ms": 1}}


def _row(rid: str, client: str = "a", cost: float | None = 0.1) -> LedgerRow:
    return LedgerRow(request_id=rid, ts=time.time(), client=client, model="radial", mode="balance", lam=0.02,
                     llm="cheap", ranking=["cheap"], cost_usd=cost)


# ------------------------------------------------------------------------------------------ schema, migrations
def _columns(engine: sa.Engine) -> dict[str, set[str]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


def test_one_schema_and_migrations_on_both_engines(pg_url, tmp_path):
    sqlite_ledger, pg_ledger = Ledger(tmp_path / "d.sqlite"), Ledger(pg_url)
    try:
        expected = {t.name: {c.name for c in t.columns} for t in metadata.tables.values()}
        assert _columns(sqlite_ledger.engine) == expected == _columns(pg_ledger.engine)
        for ledger in (sqlite_ledger, pg_ledger):
            with ledger.engine.connect() as conn:
                ids = conn.scalars(sa.text("SELECT id FROM schema_migrations ORDER BY id")).all()
            assert ids == sorted(m[0] for m in MIGRATIONS)
            assert migrate(ledger.engine) == []  # up to date: nothing runs twice
    finally:
        sqlite_ledger.close()
        pg_ledger.close()


def test_old_sqlite_log_is_migrated_and_spend_backfilled(tmp_path):
    """A decision log from before the migration table (no cost_source, no replica column) keeps its rows and
    gets the new columns and tables; its spend is carried into budget_spend."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("""CREATE TABLE decisions (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, client TEXT NOT NULL,
            model TEXT, mode TEXT, lam REAL, llm TEXT, ranking TEXT, attempts TEXT, fallback INTEGER, stream INTEGER,
            status TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, latency_ms REAL,
            prompt TEXT)""")
        db.executemany("INSERT INTO decisions (request_id, ts, client, cost_usd) VALUES (?, ?, ?, ?)",
                       [("r1", 1.0, "a", 0.25), ("r2", 2.0, "a", 0.5), ("r3", 3.0, "b", None)])
    ledger = Ledger(path)
    try:
        assert {"cost_source", "replica"} <= _columns(ledger.engine)["decisions"]
        assert [r["request_id"] for r in ledger.rows()] == ["r1", "r2", "r3"]
        assert ledger.spent_by_client() == {"a": 0.75, "b": 0.0}
        with ledger.engine.connect() as conn:
            spend = dict(conn.execute(sa.text("SELECT client, spent_usd FROM budget_spend")).all())
        assert spend == {"a": 0.75, "b": 0.0}
    finally:
        ledger.close()


def test_pg_ledger_commits_rows_and_spend_together(pg_url):
    ledger = Ledger(pg_url, replica="r1")
    try:
        futures = [ledger.record(_row(f"q{i}", cost=0.125), Settlement("a", 0.125)) for i in range(40)]
        assert all(f.result(timeout=10) for f in futures) and ledger.backlog() == 0
        rows = ledger.rows()
        assert len(rows) == 40 and {r["replica"] for r in rows} == {"r1"}
        assert ledger.spent_by_client() == {"a": 5.0}
        with ledger.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT spent_usd FROM budget_spend WHERE client = 'a'")) == 5.0
        assert ledger.ping()
    finally:
        ledger.close()
    assert not ledger.ping()  # a closed ledger is not ready


# ------------------------------------------------------------------------------------------ budgets across replicas
def _replica(url: str, name: str, **kwargs) -> tuple[Ledger, Shared]:
    ledger = Ledger(url, replica=name)
    return ledger, Shared(parse_config(_config(url), env=KEYS), ledger, name, **kwargs)


def test_budget_holds_across_replicas_and_restarts(pg_url):
    """Two replicas (own engines, own threads) race 40 reservations of 0.3 USD against a 1 USD budget: exactly
    four are admitted (0, 0.3, 0.6, 0.9 < 1), so spend ≤ budget + one reservation; spend survives a restart."""
    replicas = [_replica(pg_url, "r1"), _replica(pg_url, "r2")]
    admitted, refused = [], []

    async def race(shared: Shared) -> None:
        async def one() -> None:
            try:
                admitted.append((shared, await shared.budgets.areserve("poor", 0.3)))
            except RequestError as exc:
                assert exc.status == 429 and exc.code == "budget_exceeded"
                refused.append(exc)
        await asyncio.gather(*(one() for _ in range(20)))

    threads = [threading.Thread(target=asyncio.run, args=(race(s),)) for _, s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 4 and len(refused) == 36
    spent, reserved = replicas[0][1].budgets.state("poor")
    assert spent == 0 and reserved == pytest.approx(1.2)
    for i, (shared, reservation) in enumerate(admitted):  # each settles through its own replica's ledger
        assert shared.ledger.record(_row(f"b{i}", "poor", 0.3), Settlement("poor", 0.3, 7, reservation.id)).result(10)
    spent, reserved = replicas[1][1].budgets.state("poor")
    assert spent == pytest.approx(1.2) and reserved == 0 and spent <= 1.0 + 0.3
    for ledger, shared in replicas:
        ledger.close()
        shared.close()
    ledger, shared = _replica(pg_url, "r1-restarted")  # a restart: the spend is still there
    try:
        assert shared.budgets.state("poor")[0] == pytest.approx(1.2)
        with pytest.raises(RequestError, match="Budget of 1.0 USD"):
            asyncio.run(shared.budgets.areserve("poor", 0.01))
    finally:
        ledger.close()
        shared.close()


def test_reservations_of_a_dead_replica_are_released(pg_url):
    ledger, dead = _replica(pg_url, "dies", heartbeat_s=0.1, lease_s=0.5)
    reservation = asyncio.run(dead.budgets.areserve("poor", 0.7))
    dead._stop.set()  # the process is gone: no more heartbeats, nothing settles
    dead._thread.join()
    # beats only when told (below); the short lease applies from now on, whatever start-up took on a busy machine
    other_ledger, other = _replica(pg_url, "lives", heartbeat_s=60, lease_s=60)
    other.lease_s = 0.5
    try:
        assert other.budgets.state("poor") == (0.0, pytest.approx(0.7))
        asyncio.run(other.budgets.areserve("poor", 0.3))  # 0.7 reserved: room for this one ...
        with pytest.raises(RequestError):  # ... but 1.0 reserved now, by a replica that is gone and by this one
            asyncio.run(other.budgets.areserve("poor", 0.01))
        time.sleep(0.7)
        assert other.beat() == 1  # the lease ran out: its reservation is released
        assert other.budgets.state("poor")[1] == pytest.approx(0.3)
        # the dead replica's late settlement (it was only paused) releases nothing twice
        assert ledger.record(_row("late", "poor", 0.0), Settlement("poor", 0.0, None, reservation.id)).result(10)
        assert other.budgets.state("poor")[1] == pytest.approx(0.3)
    finally:
        for lg, sh in ((ledger, dead), (other_ledger, other)):
            lg.close()
            sh.close()


# ------------------------------------------------------------------------------------------ rate limits
def test_sliding_window_math():
    limit = Limit(requests_per_minute=10, tokens_per_minute=None)
    w = Window(start=60, requests=4, prev_requests=12)
    assert estimate(12, 4, 0.5) == 10.0 and not admits(w, limit, 0.5)
    exc = refusal("k", w, limit, 0.5)
    # room for one more when 12 × (1 − f) + 4 ≤ 9, i.e. f ≥ 7/12: 0.0833 of a minute = 5 s from now
    assert exc.status == 429 and exc.code == "rate_limit_exceeded" and exc.headers["retry-after"] == "5"
    assert admits(w, limit, 7 / 12)
    assert Window(0, 5, 50, 1, 1).rolled(60) == Window(60, 0, 0, 5, 50)
    assert Window(0, 5, 50, 1, 1).rolled(120) == Window(120)


def test_memory_limiter_retry_after_is_when_room_returns():
    now = [1000.0 * WINDOW_S + 30]
    limiter = MemoryRateLimiter(parse_config(_config(None), env=KEYS), clock=lambda: now[0])
    for _ in range(3):
        asyncio.run(limiter.admit("limited", 10))
    with pytest.raises(RequestError) as info:
        asyncio.run(limiter.admit("limited", 10))
    wait = int(info.value.headers["retry-after"])
    now[0] += wait - 1
    with pytest.raises(RequestError):
        asyncio.run(limiter.admit("limited", 10))
    now[0] += 1
    asyncio.run(limiter.admit("limited", 10))
    asyncio.run(limiter.admit("a", 10**9))  # keys without limits are not counted


def test_pg_rate_limit_holds_across_replicas(pg_url):
    replicas = [_replica(pg_url, "r1"), _replica(pg_url, "r2")]
    start = float(int(time.time() // WINDOW_S) * WINDOW_S + 1000 * WINDOW_S)
    now = [start + 6]
    for _, shared in replicas:
        shared.limiter.clock = lambda: now[0]
    try:
        results = []

        async def burst(shared: Shared) -> None:
            async def one() -> None:
                try:
                    await shared.limiter.admit("limited", 5)
                    results.append("ok")
                except RequestError as exc:
                    results.append(exc.headers["retry-after"])
            await asyncio.gather(*(one() for _ in range(5)))

        threads = [threading.Thread(target=asyncio.run, args=(burst(s),)) for _, s in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count("ok") == 3 and len(results) == 10
        # 3 requests this minute: the next minute starts with an estimate of 3 × (1 − f); + 1 ≤ 3 when f ≥ 1/3
        assert set(results) - {"ok"} == {str(int(WINDOW_S - 6 + WINDOW_S / 3))}
        now[0] = start + WINDOW_S + WINDOW_S / 3 + 0.5
        asyncio.run(replicas[1][1].limiter.admit("limited", 5))
        with pytest.raises(RequestError):
            asyncio.run(replicas[0][1].limiter.admit("limited", 5))
    finally:
        for ledger, shared in replicas:
            ledger.close()
            shared.close()


# ------------------------------------------------------------------------------------------ config
def test_ledger_url_config():
    ok = parse_config(_config("postgresql://rr@db.internal:5432/rr"), env=KEYS)
    assert ok.ledger.path is None and ok.ledger.database_url() == "postgresql://rr@db.internal:5432/rr"
    secret = parse_config(_config("${RR_DB}"), env={**KEYS, "RR_DB": "postgresql://rr:pw@db/rr"})
    assert secret.ledger.database_url() == "postgresql://rr:pw@db/rr" and secret.masked()["ledger"]["url"] == "${RR_DB}"
    for url, message in (("postgresql://rr:pw@db/rr", "holds a password"), ("mysql://db/rr", "postgresql://")):
        with pytest.raises(ConfigError, match=message):
            parse_config(_config(url), env=KEYS)
    with pytest.raises(ConfigError, match="either path"):
        parse_config(_config("postgresql://db/rr", path="x.sqlite"), env=KEYS)


# ------------------------------------------------------------------------------------------ two served replicas
@pytest.fixture(scope="module")
def router_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pg") / "router"
    make_router("best-single").fit(make_synthetic(n_queries=80, n_llms=3, seed=0).select("train")).save_pretrained(path)
    return path


def test_two_served_replicas_act_as_one_gateway(pg_url, router_dir, monkeypatch):
    """Two apps on one database: one ledger, one budget, one rate limit; probes; replica-labelled metrics;
    readiness turns 503 on drain while requests are still served."""
    with fake_backends(("cheap", "mid", "strong"), keep_requests=False) as (_, base):
        servers = []
        for name in ("r1", "r2"):
            monkeypatch.setenv("RADIALROUTER_REPLICA_ID", name)
            app = create_app(parse_config(_config(pg_url, router_dir, base), env=KEYS))
            servers.append((app, ServerThread(app, server=app.state.serve.config.server).start()))
        urls = [t.url for _, t in servers]
        try:
            body = {"model": "radial", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 50}

            async def send(key: str, n: int) -> list[httpx.Response]:
                async with httpx.AsyncClient(timeout=30) as client:
                    return await asyncio.gather(*(client.post(f"{urls[i % 2]}/v1/chat/completions", json=body,
                                                              headers={"authorization": f"Bearer {key}"})
                                                  for i in range(n)))

            # one budget: each request reserves ≥ 0.05 USD (50 output tokens at 0.001 USD), so 1 USD admits ≤ 20
            answers = asyncio.run(send("sk-poor", 60))
            ok = [r for r in answers if r.status_code == 200]
            assert ok and all(r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
                              for r in answers if r.status_code != 200)
            served_by = {r.headers["x-radialrouter-request-id"]: urls.index(str(r.url).split("/v1")[0]) for r in ok}
            assert set(served_by.values()) == {0, 1}
            rows = {r["request_id"]: r for r in servers[0][0].state.serve.ledger.rows()}
            assert set(served_by) <= set(rows)  # every acknowledged request is in the one ledger
            assert {rows[rid]["replica"] for rid in served_by} == {"r1", "r2"}
            spent, reserved = servers[0][0].state.serve.budgets.state("poor")
            one_reservation = (12 + 50) * PRICE / 1e6  # ≤ 10 counted prompt tokens × 1.15, 50 output tokens
            assert reserved == 0 and 0 < spent <= 1.0 + one_reservation
            assert spent == pytest.approx(sum(r["cost_usd"] or 0 for r in rows.values() if r["client"] == "poor"))
            # the dashboard's pre-aggregates, upserted by both replicas' writers, still sum to the rows
            with servers[0][0].state.serve.ledger.engine.connect() as conn:
                hourly = conn.execute(sa.text("SELECT client, SUM(requests), SUM(cost_usd) FROM decisions_rollup "
                                              "WHERE span = 3600 GROUP BY client")).all()
            assert {c: int(n) for c, n, _ in hourly} == dict(collections.Counter(r["client"] for r in rows.values()))
            assert dict((c, float(t)) for c, _, t in hourly)["poor"] == pytest.approx(spent)

            # one rate limit: 3 requests per minute over both replicas, then 429 with Retry-After
            limited = asyncio.run(send("sk-limited", 6))
            assert sorted(r.status_code for r in limited) == [200] * 3 + [429] * 3
            refused = next(r for r in limited if r.status_code == 429)
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"

            # a client key reads its own series (poor was served by both replicas), labelled by the replica it asked
            metrics = httpx.get(f"{urls[1]}/metrics", headers={"authorization": "Bearer sk-poor"}).text
            assert 'replica="r2"' in metrics and 'replica="r1"' not in metrics and 'client="limited"' not in metrics
            for url in urls:
                assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
                ready = httpx.get(f"{url}/readyz")
                assert ready.status_code == 200 and ready.json()["checks"]["database"] is True

            app, thread = servers[0]
            thread.server.drain_s = 30.0
            thread.server.handle_exit(15, None)  # SIGTERM: drain
            ready = httpx.get(f"{urls[0]}/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["draining"] is True
            still = httpx.post(f"{urls[0]}/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-a"})
            assert still.status_code == 200 and httpx.get(f"{urls[0]}/healthz").status_code == 200
            assert httpx.get(f"{urls[1]}/readyz").status_code == 200
            thread.server.handle_exit(15, None)  # a second signal: stop now
            thread._thread.join(timeout=15)
            assert not thread._thread.is_alive()
        finally:
            for _, thread in servers:
                if thread._thread.is_alive():
                    thread.stop()


def test_readiness_fails_when_the_database_is_gone(pg_url, router_dir, monkeypatch):
    monkeypatch.setattr("radialrouter.serve.api.health.DB_CHECK_EVERY_S", 0.0)
    app = create_app(parse_config(_config(pg_url, router_dir), env=KEYS))
    with ServerThread(app, server=app.state.serve.config.server) as thread:
        assert httpx.get(f"{thread.url}/readyz").status_code == 200
        ledger, shared = app.state.serve.ledger, app.state.serve.shared
        good = ledger.engine
        ledger.engine = shared.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                                                         connect_args={"connect_timeout": 2})
        try:  # nothing listens on port 1: the database is unreachable
            ready = httpx.get(f"{thread.url}/readyz", timeout=20)
            assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
            assert json.loads(httpx.get(f"{thread.url}/healthz").text)["status"] == "ok"
            body = {"model": "radial", "messages": [{"role": "user", "content": "hi"}]}
            for key in ("sk-poor", "sk-limited"):  # budgets and rate limits fail closed, as a 503, not a 500
                r = httpx.post(f"{thread.url}/v1/chat/completions", json=body,
                               headers={"authorization": f"Bearer {key}"}, timeout=20)
                assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
                assert r.headers["retry-after"] == "1"
        finally:
            ledger.engine = shared.engine = good


@pytest.mark.parametrize("wait_for_commit", [True, False])
def test_response_waits_for_its_row(tmp_path, router_dir, monkeypatch, wait_for_commit):
    """With ``wait_for_commit`` a response (JSON, and a stream's [DONE]) reaches the client only after its row is
    committed, even when the database is slow; without it the response comes first (what SIGKILL can lose)."""
    slow = Ledger._commit

    def commit_slowly(self, batch):
        time.sleep(1.0)
        return slow(self, batch)

    monkeypatch.setattr(Ledger, "_commit", commit_slowly)
    config = _config(None, router_dir)
    config["ledger"] = {"path": str(tmp_path / "log.sqlite"), "wait_for_commit": wait_for_commit}
    with fake_backends(("cheap", "mid", "strong"), keep_requests=False) as (_, base):
        config["llms"] = _config(None, router_dir, base)["llms"]
        app = create_app(parse_config(config, env=KEYS))
        with ServerThread(app, server=app.state.serve.config.server) as thread:
            body = {"model": "radial", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"authorization": "Bearer sk-a"}
            for stream in (False, True):
                with httpx.stream("POST", f"{thread.url}/v1/chat/completions", json={**body, "stream": stream},
                                  headers=headers, timeout=30) as r:
                    text = "".join(r.iter_text())
                    rid = r.headers["x-radialrouter-request-id"]
                assert r.status_code == 200 and (not stream or text.rstrip().endswith("[DONE]"))
                with sqlite3.connect(tmp_path / "log.sqlite") as db:
                    found = db.execute("SELECT status FROM decisions WHERE request_id = ?", (rid,)).fetchall()
                assert found == ([("ok",)] if wait_for_commit else [])


def test_unreachable_database_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"decision log at postgresql\+psycopg://nobody:\*\*\*@127.0.0.1:1/x") as info:
        Ledger("postgresql://nobody:secret@127.0.0.1:1/x")
    assert "secret" not in str(info.value) and "\n" not in str(info.value)
