"""The dashboard (/dashboard): its JSON endpoints on a ledger filled through real requests, its admin-key gate, and
its pages in a real browser (Playwright driving Debian's headless Chromium).

One server (best-single router on synthetic data, three fake upstreams with distinct prices, two client keys) is
filled once per module through the OpenAI-compatible endpoint: cost-first requests (→ cheap), performance-first
ones (→ strong), direct calls to mid, a burst while strong fails (→ fallback to mid), a stream and a decision-only
/v1/route call. Every figure checked below is recomputed from the ledger rows themselves.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from radialrouter.data import make_synthetic
from radialrouter.ledger import rollups as ledger_rollup
from radialrouter.ledger.schema import decisions_rollup
from radialrouter.ledger.store import Ledger, LedgerRow
from radialrouter.routers import make_router
from radialrouter.serve import ConfigError, parse_config
from radialrouter.serve.app import create_app
from radialrouter.serve.dashboard_queries import Cursor, DashboardQueries, _bucket_sql, ledger_engine
from radialrouter.serve.testing import ServerThread, fake_backends

ADMIN, ALICE, BOB = "admin-key-0123456789abcdef", "sk-alice-client-key", "sk-bob-client-key"
ENV = {"RR_ADMIN": ADMIN, "RR_ALICE": ALICE, "RR_BOB": BOB, "RR_SHORT": "short"}
PRICES = {"cheap": (0.1, 0.2), "mid": (1.0, 2.0), "strong": (10.0, 20.0)}
ASSETS = Path(__file__).resolve().parents[1] / "src" / "radialrouter" / "serve" / "dashboard"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _config(base: str, router: Path, ledger: Path | None, admin: str | None = "${RR_ADMIN}") -> dict:
    llms = [{"name": name, "base_url": f"{base}/{name}/v1", "router_llm": f"llm-{i}", "input_price": p[0],
             "output_price": p[1], "context_window": 100_000} for i, (name, p) in enumerate(PRICES.items())]
    server = {"batch_max_wait_ms": 1, "cooldown_s": 0}
    if admin:
        server["admin_key"] = admin
    return {"router": {"path": str(router)}, "llms": llms, "ledger": {"path": None if ledger is None else str(ledger)},
            "server": server, "auth": {"keys": [{"id": "alice", "key": "${RR_ALICE}", "budget_usd": 0.05},
                                                {"id": "bob", "key": "${RR_BOB}"}]}}


def _chat(url: str, key: str, model: str, text: str = "hello there", **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    make_router("best-single").fit(make_synthetic(n_queries=80, n_llms=3, seed=0).select("train")).save_pretrained(
        tmp / "router")
    with fake_backends(PRICES) as (fakes, base):
        config = parse_config(_config(base, tmp / "router", tmp / "ledger.sqlite"), env=ENV)
        app = create_app(config)
        with ServerThread(app) as thread:
            url = thread.url
            ids = []
            for i in range(4):
                ids.append(_chat(url, ALICE, "radial:cost-first", f"cheap question {i}").json()["router"]["request_id"])
            for i in range(3):
                assert _chat(url, BOB, "radial:performance-first", f"hard question {i}").status_code == 200
            for _ in range(2):
                assert _chat(url, BOB, "mid").status_code == 200
            fakes["strong"].mode, fakes["strong"].status = "error", 503
            for _ in range(2):
                reply = _chat(url, ALICE, "radial:performance-first", "while strong is down")
                assert reply.json()["router"]["fallback"] is True
            fakes["strong"].mode = "ok"
            with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {BOB}"},
                              json={"model": "radial:cost-first", "stream": True,
                                    "messages": [{"role": "user", "content": "stream it"}]}, timeout=30) as r:
                assert r.status_code == 200 and b"[DONE]" in r.read()
            assert httpx.post(f"{url}/v1/route", json={"model": "radial:balance", "prompt": "just decide"},
                              headers={"authorization": f"Bearer {ALICE}"}, timeout=30).status_code == 200
            ledger: Ledger = app.state.serve.ledger
            deadline = time.monotonic() + 10
            while len(ledger.rows()) < 13 and time.monotonic() < deadline:  # rows are written by a thread
                time.sleep(0.05)
            rows = ledger.rows()
            assert len(rows) == 13
            yield {"url": url, "rows": rows, "known_id": ids[0], "app": app, "config": config}


def _admin(url: str, path: str, **params) -> httpx.Response:
    return httpx.get(f"{url}{path}", params=params, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)


# ---------------------------------------------------------------------------------------------- the gate
def test_unauthenticated_requests_are_refused(served):
    url = served["url"]
    for path in ("/dashboard/api/overview", "/dashboard/api/clients", "/dashboard/api/requests",
                 f"/dashboard/api/requests/{served['known_id']}", "/dashboard/api/router"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
        assert httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {ALICE}"}).status_code == 401, path
        wrong = httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {ADMIN}x"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_admin_key"
    page = httpx.get(f"{url}/dashboard/overview")
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    bad = httpx.post(f"{url}/dashboard/login", data={"key": "nope", "next": "/dashboard/clients"})
    assert bad.status_code == 303 and "failed=1" in bad.headers["location"] and "set-cookie" not in bad.headers
    big = httpx.post(f"{url}/dashboard/login", content=b"key=" + b"x" * 5000,
                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413
    forged = httpx.get(f"{url}/dashboard/api/overview", cookies={"rr_dashboard": f"{int(time.time()) + 99}.00"})
    assert forged.status_code == 401


def test_login_sets_an_httponly_session_cookie(served):
    url = served["url"]
    ok = httpx.post(f"{url}/dashboard/login", data={"key": ADMIN, "next": "https://evil.example/"})
    assert ok.status_code == 303 and ok.headers["location"] == "/dashboard/overview"  # no open redirect
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and ADMIN not in cookie
    with httpx.Client(base_url=url, cookies=ok.cookies) as session:
        assert session.get("/dashboard/api/overview").status_code == 200
        page = session.get("/dashboard/explorer")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]


def test_dashboard_is_off_without_an_admin_key(tmp_path):
    make_router("best-single").fit(make_synthetic(n_queries=40, n_llms=3, seed=0).select("train")).save_pretrained(
        tmp_path / "router")
    config = parse_config(_config("http://127.0.0.1:9", tmp_path / "router", None, admin=None), env=ENV)
    with ServerThread(create_app(config)) as thread:
        for path in ("/dashboard/api/overview", "/dashboard/login"):
            r = httpx.get(f"{thread.url}{path}", headers={"authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 403 and "server.admin_key" in r.json()["error"]["message"]


def test_admin_key_config_is_validated(tmp_path):
    base = _config("http://127.0.0.1:9", tmp_path, None)
    with pytest.raises(ConfigError, match=r"server.admin_key: .*shorter than 16"):
        parse_config({**base, "server": {"admin_key": "${RR_SHORT}"}}, env=ENV)
    with pytest.raises(ConfigError, match=r"server.admin_key: .*environment reference"):
        parse_config({**base, "server": {"admin_key": ADMIN}}, env=ENV)
    with pytest.raises(ConfigError, match=r"server.admin_key: equals the client key of 'alice'"):
        parse_config({**base, "server": {"admin_key": "${RR_ALICE}"}}, env={**ENV, "RR_ALICE": "x" * 20})
    with pytest.raises(ConfigError, match=r"server.reference_llm: 'gpt-9' is not a pool LLM"):
        parse_config({**base, "server": {"reference_llm": "gpt-9"}}, env=ENV)


# ---------------------------------------------------------------------------------------------- JSON figures
def test_overview_figures_match_the_ledger(served):
    rows = served["rows"]
    data = _admin(served["url"], "/dashboard/api/overview", range="1h").json()
    t = data["totals"]
    assert data["reference"] == {**data["reference"], "llm": "strong", "why": "priciest in the pool"}
    assert t["requests"] == 13 and t["route_only"] == 1 and t["fallbacks"] == 2
    assert {r["llm"] for r in rows} == set(data["series"]["requests_per_llm"]) == {"cheap", "mid", "strong"}
    charged = [r for r in rows if r["cost_usd"] is not None]
    assert t["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in charged))
    reference = sum(r["prompt_tokens"] * 10 + r["completion_tokens"] * 20 for r in charged) / 1e6
    assert t["reference_cost_usd"] == pytest.approx(reference)
    assert t["savings_usd"] == pytest.approx(reference - t["cost_usd"]) and t["savings_usd"] > 0
    assert t["fallback_rate"] == pytest.approx(2 / 12)
    assert sum(sum(v) for v in data["series"]["requests_per_llm"].values()) == 13
    assert data["series"]["cumulative_reference_cost_usd"][-1] == pytest.approx(reference)
    assert t["mean_overhead_ms"] > 0 and all(r["overhead_ms"] > 0 for r in charged)
    chosen = _admin(served["url"], "/dashboard/api/overview", range="1h", reference="mid").json()
    assert chosen["reference"]["why"] == "chosen" and chosen["totals"]["reference_cost_usd"] == pytest.approx(
        sum(r["prompt_tokens"] * 1 + r["completion_tokens"] * 2 for r in charged) / 1e6)
    bad = _admin(served["url"], "/dashboard/api/overview", reference="gpt-9")
    assert bad.status_code == 400 and "gpt-9" in bad.json()["error"]["message"]
    assert _admin(served["url"], "/dashboard/api/overview", range="2d").status_code == 400


def test_hourly_windows_read_the_rollup_and_agree_with_raw_rows(served, tmp_path):
    """A 24-hour window reads the hourly pre-aggregates; its figures equal the raw rows', and a ledger written before
    the rollup existed is backfilled to the same numbers when it is opened."""
    raw = _admin(served["url"], "/dashboard/api/overview", range="1h").json()
    hourly = _admin(served["url"], "/dashboard/api/overview", range="24h").json()
    assert hourly["window"]["bucket_s"] == 3600 and hourly["window"]["since"] % 3600 == 0
    q = DashboardQueries(ledger_engine(served["config"].ledger.path))
    assert q.rollup_span(hourly["window"]["since"], hourly["window"]["until"]) == 3600
    assert q.rollup_span(raw["window"]["since"], raw["window"]["until"], raw["window"]["bucket_s"]) is None
    daily = _admin(served["url"], "/dashboard/api/overview", range="30d").json()
    assert daily["window"]["bucket_s"] == 86400 and daily["window"]["since"] % 86400 == 0
    for key, value in raw["totals"].items():
        assert daily["totals"][key] == pytest.approx(value), key
    for key, value in raw["totals"].items():
        assert hourly["totals"][key] == pytest.approx(value), key
    for a, b in zip(raw["per_llm"], hourly["per_llm"], strict=True):
        assert a == pytest.approx(b)
    clients_raw = q.clients(0, time.time() + 1)  # not whole hours: raw rows
    clients_hourly = q.clients(0, (time.time() // 3600 + 1) * 3600)
    key = lambda r: (r["client"], r["mode"] or "")  # noqa: E731
    for a, b in zip(sorted(clients_raw["by_mode"], key=key), sorted(clients_hourly["by_mode"], key=key), strict=True):
        assert a == pytest.approx(b)

    old = _copy(served["config"].ledger.path, tmp_path / "old.sqlite")  # the same rows, without the rollup table
    live = _rollup_rows(old)
    _forget_rollup(old)
    Ledger(old).close()  # the backfill migration rebuilds it
    rebuilt = _rollup_rows(old)
    assert len(rebuilt) == len(live) >= 12
    for a, b in zip(rebuilt, live):
        assert a[:6] == b[:6] and a[6:] == pytest.approx(b[6:])

    # A ledger from before the migration table, whose writer already kept the rollup (the dashboard's first
    # release): opening it keeps those sums as they are — no second backfill on top.
    first = _copy(served["config"].ledger.path, tmp_path / "first.sqlite")
    with sqlite3.connect(first) as db:
        db.execute("DROP TABLE schema_migrations")
    Ledger(first).close()
    assert _rollup_rows(first) == live


def _copy(src: Path, dst: Path) -> Path:
    """A copy of a SQLite ledger (the live one keeps being served)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.close()
    return dst


def _rollup_rows(path: Path) -> list[tuple]:
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(decisions_rollup).order_by(*decisions_rollup.primary_key))]


def _forget_rollup(target: str | Path) -> None:
    """Make a ledger look like one written before the pre-aggregates existed (table and migration records gone)."""
    engine = sa.create_engine(target if "://" in str(target) else f"sqlite:///{target}")
    if engine.dialect.name == "postgresql":
        engine = sa.create_engine(sa.make_url(str(target)).set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        ledger_rollup.forget(conn)
    engine.dispose()


def test_first_release_ledger_gets_columns_indexes_and_rollup(tmp_path):
    """A decision log of the first release (no migration table, none of the dashboard's columns or indexes) is
    brought up to date by the migrations: new columns, the three indexes, and pre-aggregates of its old rows."""
    path = tmp_path / "first.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("""CREATE TABLE decisions (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, client TEXT NOT NULL,
            model TEXT, mode TEXT, lam REAL, llm TEXT, ranking TEXT, attempts TEXT, fallback INTEGER, stream INTEGER,
            status TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, latency_ms REAL,
            prompt TEXT)""")
        db.executemany("INSERT INTO decisions (request_id, ts, client, llm, mode, status, cost_usd, prompt_tokens, "
                       "completion_tokens, fallback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [("r1", 7200.5, "a", "x", "balance", "ok", 0.25, 10, 5, 0),
                        ("r2", 7300.0, "a", "x", "balance", "upstream_failed", None, None, None, 0),
                        ("r3", 90000.0, "b", None, None, "no_candidate", None, None, None, 0)])
    Ledger(path).close()
    engine = sa.create_engine(f"sqlite:///{path}")
    inspector = sa.inspect(engine)
    assert {"scores", "probabilities", "expected_cost_usd", "overhead_ms"} <= {
        c["name"] for c in inspector.get_columns("decisions")}
    assert {i["name"]: i["column_names"] for i in inspector.get_indexes("decisions")} == {
        "decisions_ts": ["ts"], "decisions_client_ts": ["client", "ts"], "decisions_llm_ts": ["llm", "ts"]}
    with engine.connect() as conn:
        got = {(r.span, r.start, r.client, r.llm, r.mode): (r.requests, r.ok, r.errors, r.upstream_failed, r.cost_usd,
                                                            r.prompt_tokens)
               for r in conn.execute(sa.select(decisions_rollup))}
    engine.dispose()
    assert got == {(3600, 7200, "a", "x", "balance"): (2, 1, 1, 1, 0.25, 10),
                   (86400, 0, "a", "x", "balance"): (2, 1, 1, 1, 0.25, 10),
                   (3600, 90000, "b", "", ""): (1, 0, 1, 0, 0.0, 0),
                   (86400, 86400, "b", "", ""): (1, 0, 1, 0, 0.0, 0)}


def test_rollup_columns_match_the_schema():
    assert set(ledger_rollup.COLUMNS) == {c.name for c in decisions_rollup.columns}
    assert ledger_rollup.KEY == tuple(c.name for c in decisions_rollup.primary_key)


def test_clients_show_live_spend_against_budget(served):
    data = _admin(served["url"], "/dashboard/api/clients", range="1h").json()
    by_id = {c["client"]: c for c in data["clients"]}
    alice_rows = [r for r in served["rows"] if r["client"] == "alice"]
    assert by_id["alice"]["budget_usd"] == 0.05 and by_id["bob"]["budget_usd"] is None
    assert by_id["alice"]["spent_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in alice_rows))
    assert by_id["alice"]["requests"] == len(alice_rows) == 7
    assert set(by_id["alice"]["modes"]) == {"cost-first", "performance-first", "balance"}
    assert set(by_id["bob"]["modes"]) == {"performance-first", "direct", "cost-first"}


def test_explorer_paginates_and_finds_a_request(served):
    url, rows = served["url"], served["rows"]
    seen, cursor = [], None
    while True:
        page = _admin(url, "/dashboard/api/requests", limit=4, **({"before": cursor} if cursor else {})).json()
        seen += [r["request_id"] for r in page["rows"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 13 and set(seen) == {r["request_id"] for r in rows}
    assert seen == [r["request_id"] for r in sorted(rows, key=lambda r: (r["ts"], r["request_id"]), reverse=True)]
    only = _admin(url, "/dashboard/api/requests", client="bob", llm="mid").json()["rows"]
    assert {r["request_id"] for r in only} == {r["request_id"] for r in rows if r["client"] == "bob"
                                               and r["llm"] == "mid"}
    assert len(_admin(url, "/dashboard/api/requests", fallback="true").json()["rows"]) == 2
    one = _admin(url, f"/dashboard/api/requests/{served['known_id']}").json()
    assert one["llm"] == "cheap" and one["mode"] == "cost-first" and one["ranking"][0] == "cheap"
    assert set(one["scores"]) == set(one["ranking"]) and one["expected_cost_usd"] > 0 and "prompt" not in one
    assert one["reference"]["llm"] == "strong" and one["reference"]["cost_usd"] > one["cost_usd"]
    assert _admin(url, "/dashboard/api/requests/rr-nope").status_code == 404
    assert _admin(url, "/dashboard/api/requests", before="garbage").status_code == 400
    assert _admin(url, "/dashboard/api/requests", limit=0).status_code == 400


def test_router_page_data(served):
    data = _admin(served["url"], "/dashboard/api/router").json()
    assert data["router"]["name"] == "best-single" and [p["name"] for p in data["pool"]] == list(PRICES)
    # Every row is counted under its router version (direct calls under none); the ledger has the learning loop's
    # feedback table, and no rating was posted yet.
    assert sum(v["requests"] for v in data["versions"]) == len(served["rows"]) and data["has_feedback"] is True
    # One version everywhere: the Router page's is the one /admin/router reports and every decision carries (the
    # ledger's router_version, which the explorer shows), not the training data's fingerprint.
    admin = _admin(served["url"], "/admin/router").json()
    recorded = {r["router_version"] for r in served["rows"] if r["mode"] is not None}
    assert data["router"]["version"] == admin["version"] and recorded == {admin["version"]}
    assert data["router"]["version"] != data["router"]["training"]["data_fingerprint"]
    shown = _admin(served["url"], f"/dashboard/api/requests/{served['known_id']}").json()
    assert shown["router_version"] == data["router"]["version"]
    # Per version: the real first and last request times, never a day's bounds (one of them in the future).
    for v in data["versions"]:
        mine = [r["ts"] for r in served["rows"] if (r["router_version"] or None) == v["version"]]
        assert (v["first_ts"], v["last_ts"]) == (pytest.approx(min(mine)), pytest.approx(max(mine)))
        assert v["last_ts"] <= time.time()
    feedback = _admin(served["url"], "/dashboard/api/feedback").json()["feedback"]
    assert not any(row["n"] for rows in feedback.values() if isinstance(rows, list) for row in rows)


def test_version_first_and_last_come_from_requests_on_a_pre_aggregated_window(tmp_path):
    """A 30-day window reads the daily pre-aggregates; each version's first and last request times are still those
    of its requests (narrowed through the hourly pre-aggregates to one hour of raw rows), across days and hours."""
    day = (time.time() // 86400) * 86400
    times = {"v1": [day - 3 * 86400 + 7 * 3600 + 12.5, day - 3 * 86400 + 20 * 3600 + 1.25, day - 86400 + 3 * 3600 + 59],
             "v2": [day - 86400 + 5 * 3600 + 30.75, day - 86400 + 5 * 3600 + 31.5], "": [day - 2 * 86400 + 100.0]}
    ledger = Ledger(tmp_path / "ledger.sqlite")
    done = []
    for version, stamps in times.items():
        for i, ts in enumerate(stamps):
            done.append(ledger.record(LedgerRow(request_id=f"{version}-{i}", ts=ts, client="alice", model="radial",
                                                mode="balance", lam=0.1, llm="cheap", ranking=["cheap"], attempts=[],
                                                router_version=version or None, cost_usd=0.001)))
    assert all(f.result(timeout=30) for f in done)
    ledger.close()
    q = DashboardQueries(ledger_engine(tmp_path / "ledger.sqlite"))
    since, until = day - 29 * 86400, day + 86400
    assert q.rollup_span(since, until) == 86400
    got = {v["version"]: (v["first_ts"], v["last_ts"], v["requests"]) for v in q.versions(since, until)}
    assert got == {(k or None): (min(t), max(t), len(t)) for k, t in times.items()}
    assert got == {v["version"]: (v["first_ts"], v["last_ts"], v["requests"]) for v in q.versions(0, time.time())}


def _with_learning_loop(served: dict, path: Path) -> Path:
    """A copy of the served ledger as the learning loop leaves it: two router versions, two ratings of one request."""
    _copy(served["config"].ledger.path, path)
    dst = sqlite3.connect(path)
    dst.execute("UPDATE decisions SET router_version = CASE WHEN llm = 'cheap' THEN 'v2' ELSE 'v1' END")
    dst.execute("INSERT INTO feedback (request_id, source, ts, score, comment) VALUES (?, 'client', 0, 1.0, 'good'), "
                "(?, 'judge', 0, 0.5, NULL)", (served["known_id"],) * 2)
    dst.commit()
    dst.close()
    return path


def test_queries_read_version_and_feedback_when_present(served, tmp_path):
    """A ledger with a router_version column and a feedback table (the learning loop's) shows both."""
    path = _with_learning_loop(served, tmp_path / "copy.sqlite")

    q = DashboardQueries(ledger_engine(path))
    versions = {v["version"]: v for v in q.versions(0, time.time() + 1)}
    assert versions["v2"]["requests"] == sum(r["llm"] == "cheap" for r in served["rows"])
    assert versions["v1"]["requests"] == len(served["rows"]) - versions["v2"]["requests"]
    assert q.request(served["known_id"])["feedback"][0]["comment"] == "good"
    summary = q.feedback_summary(0, time.time() + 1)
    assert summary["per_llm"] == [{"llm": "cheap", "n": 2, "mean_score": 0.75}]
    assert summary["per_version"] == [{"version": "v2", "n": 2, "mean_score": 0.75}]
    assert q.feedback_summary(time.time() + 10, time.time() + 20)["per_llm"] == []

    # Pre-aggregated ratings: rebuilt from the feedback table, then kept up by add_feedback; read only while their
    # totals agree with the table's.
    _forget_rollup(path)
    Ledger(path).close()  # backfills versions and ratings
    days = (0, (time.time() // 86400 + 1) * 86400)
    q = DashboardQueries(ledger_engine(path))
    with q.engine.connect() as c:
        assert q._rollup_has_all_feedback(c)
    assert q.feedback_summary(*days) == summary
    assert {v["version"]: v["requests"] for v in q.versions(*days)} == {k: v["requests"] for k, v in versions.items()}
    writer = sa.create_engine(f"sqlite:///{path}")
    with writer.begin() as db:
        db.execute(sa.text("INSERT INTO feedback (request_id, source, ts, score) VALUES (:rid, 'other', 0, 0.0)"),
                   {"rid": served["known_id"]})
    q = DashboardQueries(ledger_engine(path))
    assert q.feedback_summary(*days)["per_llm"][0]["n"] == 3  # disagreeing totals: joined, still right
    with writer.begin() as db:
        row = db.execute(sa.text("SELECT * FROM decisions WHERE request_id = :rid"),
                         {"rid": served["known_id"]}).mappings().one()
        ledger_rollup.add_feedback(db, row, 1, 0.0)
    writer.dispose()
    with q.engine.connect() as c:
        assert q._rollup_has_all_feedback(c)
    assert q.feedback_summary(*days)["per_version"] == [{"version": "v2", "n": 3, "mean_score": 0.5}]


def test_portable_sql_helpers():
    assert _bucket_sql("sqlite") == "CAST(ts / :bucket AS INTEGER)"
    assert _bucket_sql("postgresql") == "FLOOR(ts / :bucket)"  # PostgreSQL's CAST rounds
    assert Cursor.decode(Cursor(1.5, "rr-1").encode()) == Cursor(1.5, "rr-1")
    with pytest.raises(ValueError, match="before"):
        Cursor.decode("1.5")


NODE = shutil.which("node") or shutil.which("nodejs")


def test_line_series_with_a_lone_value_get_points():
    """A line through one bucket (all traffic of a new deployment in one time bucket) or a value between gaps has
    nothing to draw a line to: those values get visible points, the rest of a line none (`RR.pointRadii`, run in
    Node on the shipped dashboard.js)."""
    if NODE is None:
        pytest.skip("no Node.js to run the dashboard's JavaScript (apt-get install nodejs)")
    cases = [([5.0], False), ([1.0, 2.0, 3.0], False), ([None, 0.5, None, None], False), ([0.5, None, 0.7], False),
             ([0.5, None, 0.7], True), ([None, 0.2, None], True), ([], False), ([None, None], True)]
    script = ("const vm = require('vm'); const fs = require('fs');"
              f"const RR = vm.runInNewContext(fs.readFileSync({json.dumps(str(ASSETS / 'dashboard.js'))}, 'utf8')"
              " + '\\nRR', {});"
              f"console.log(JSON.stringify({json.dumps(cases)}.map(([d, g]) => RR.pointRadii(d, g))));")
    import subprocess

    out = subprocess.run([NODE, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == [[3], [0, 0, 0], [0, 3, 0, 0], [3, 0, 3], [0, 0, 0], [0, 3, 0], [], [0, 0]]


def test_vendored_chart_library_matches_its_record():
    record = (ASSETS / "VENDORED.md").read_text()
    for name in ("chart.umd.min.js", "chart.js-LICENSE.md"):
        digest = hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(name)}`.*`{digest}`", record), name
    for page in ("overview", "clients", "explorer", "router", "login"):
        html = (ASSETS / f"{page}.html").read_text()
        assert "http://" not in html and "https://" not in html  # no CDN: every asset is served locally


# ---------------------------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    if CHROMIUM is None:
        pytest.skip("no Chromium binary (apt-get install chromium); .ci/run installs it")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    """A logged-in page that records console errors and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(f"{served['url']}/dashboard/overview")
    assert "/dashboard/login" in pg.url  # refused until logged in
    pg.fill("#key", ADMIN)
    pg.click("button[type=submit]")
    pg.wait_for_url("**/dashboard/overview")
    yield pg
    context.close()


def _series(pg, canvas: str) -> int:
    return pg.evaluate(f"Chart.getChart(document.getElementById('{canvas}')).data.datasets.length")


def _open(pg, url: str) -> None:
    pg.goto(url)
    pg.wait_for_selector("body[data-ready='1']")
    assert pg.locator("#error").is_hidden(), pg.locator("#error").inner_text()


def test_pages_render_their_charts_without_console_errors(page, served):
    url = served["url"]
    _open(page, f"{url}/dashboard/overview?range=1h")
    assert _series(page, "chart-split") == 3  # cheap, mid, strong
    assert [_series(page, c) for c in ("chart-spend", "chart-rates", "chart-latency")] == [2, 2, 2]
    assert page.locator("#per-llm tr").count() == 4
    _open(page, f"{url}/dashboard/clients?range=1h")
    assert _series(page, "chart-budget") == 3
    assert _series(page, "chart-modes") == 4  # balance, cost-first, direct, performance-first
    _open(page, f"{url}/dashboard/router")
    assert _series(page, "chart-prices") == 2
    assert "best-single" in page.locator("#router").inner_text()
    _open(page, f"{url}/dashboard/explorer")
    assert page.locator("#rows tr[data-request-id]").count() == 13
    assert page.errors == []


def test_a_single_bucket_line_chart_shows_its_points(page, served):
    """All traffic in one time bucket: the overview's line charts get one label each, and Chart.js must draw that
    value as a point (a line needs two)."""
    _open(page, f"{served['url']}/dashboard/overview?range=1h")
    radii = page.evaluate("""() => {
        const c = RR.chart("chart-spend", "line", ["12:00"], [{label: "spend", data: [0.25]},
                                                              {label: "rate", data: [0.1], spanGaps: true}]);
        return c.data.datasets.map((ds, i) => c.getDatasetMeta(i).data[0].options.radius);
    }""")
    assert radii and all(r > 0 for r in radii), radii
    several = page.evaluate("""() => {
        const c = RR.chart("chart-spend", "line", ["a", "b", "c"], [{label: "spend", data: [1, 2, 3]}]);
        return c.getDatasetMeta(0).data.map((p) => p.options.radius);
    }""")
    assert several == [0, 0, 0]  # a drawn line keeps no dots
    assert page.errors == []


def test_explorer_finds_a_known_request_in_the_browser(page, served):
    _open(page, f"{served['url']}/dashboard/explorer")
    page.fill("#request_id", served["known_id"])
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#detail:not(.hidden)")
    assert served["known_id"] in page.locator("#detail-title").inner_text()
    assert page.locator("#rows tr[data-request-id]").count() == 1
    assert "cheap ← answered" in page.locator("#detail-ranking").inner_text()
    assert _series(page, "chart-ranking") >= 1
    assert page.errors == []


# ---------------------------------------------------------------------------------------------- PostgreSQL
def _same(x, y, where: str) -> None:
    if isinstance(x, dict):
        assert set(x) == set(y), (where, set(x) ^ set(y))
        for k in x:
            _same(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list):
        assert len(x) == len(y), (where, x, y)
        for i, (a, b) in enumerate(zip(x, y)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(x, float) or isinstance(y, float):
        assert x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (where, x, y)
    else:
        assert x == y and type(x) is type(y), (where, x, y)


def _as_ledger_row(row: dict) -> LedgerRow:
    """A stored decision back as the `LedgerRow` the server recorded."""
    fields = {k: v for k, v in row.items() if k in LedgerRow.__dataclass_fields__}
    for name in ("ranking", "attempts", "scores", "probabilities", "candidates", "policy_probs"):
        fields[name] = None if row[name] is None else json.loads(row[name])
    fields["fallback"], fields["stream"] = bool(row["fallback"]), bool(row["stream"])
    return LedgerRow(**fields)


def test_every_query_gives_the_same_answer_on_postgresql(served, pg_url, tmp_path):
    """The ledger on PostgreSQL (``ledger.url``): the served requests' rows written there by the ledger's own writer
    keep the same pre-aggregates as on SQLite (the upsert on both dialects); with the learning loop's version column
    and feedback table added to both and the pre-aggregates rebuilt by the backfill migration, every query of the
    dashboard gives the same figures on raw, hourly and daily windows, through `ledger_engine` on each."""
    rows = served["rows"]
    pg = Ledger(pg_url, replica=rows[0]["replica"])
    try:
        assert {i["name"] for i in sa.inspect(pg.engine).get_indexes("decisions")} >= {
            "decisions_ts", "decisions_client_ts", "decisions_llm_ts"}
        done = [pg.record(_as_ledger_row(r)) for r in rows[:7]]  # two batches at least: sums added to sums
        assert all(f.result(timeout=30) for f in done)
        done = [pg.record(_as_ledger_row(r)) for r in rows[7:]]
        assert all(f.result(timeout=30) for f in done)
        with pg.engine.connect() as conn:
            on_pg = [tuple(r) for r in conn.execute(sa.select(decisions_rollup).order_by(
                *decisions_rollup.primary_key))]
        on_sqlite = _rollup_rows(served["config"].ledger.path)
        assert len(on_pg) == len(on_sqlite) >= 12
        for a, b in zip(on_pg, on_sqlite):
            assert a[:6] == b[:6] and a[6:] == pytest.approx(b[6:])
        with pg.engine.begin() as conn:  # what the learning loop adds, as on the SQLite copy
            conn.execute(sa.text("UPDATE decisions SET router_version = CASE WHEN llm = 'cheap' THEN 'v2' ELSE 'v1' "
                                 "END"))
            conn.execute(sa.text("INSERT INTO feedback (request_id, source, ts, score, comment) VALUES "
                                 "(:rid, 'client', 0, 1.0, 'good'), (:rid, 'judge', 0, 0.5, NULL)"),
                         {"rid": served["known_id"]})
    finally:
        pg.close()
    _forget_rollup(pg_url)
    Ledger(pg_url).close()  # the backfill migration, on PostgreSQL: versions and ratings

    path = _with_learning_loop(served, tmp_path / "loop.sqlite")
    _forget_rollup(path)
    Ledger(path).close()
    lite, post = DashboardQueries(ledger_engine(path)), DashboardQueries(ledger_engine(pg_url))
    assert post.engine.dialect.name == "postgresql"
    for q in (lite, post):  # the dashboard's connections cannot write
        with q.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text("DELETE FROM decisions"))
    now = time.time()
    hour, day = (now // 3600 + 1) * 3600, (now // 86400 + 1) * 86400
    key = lambda r: tuple(str(v) for v in r.values())  # noqa: E731
    first = lite.requests(filters={}, limit=5)
    checks = {
        "time_range": lambda q: list(q.time_range()),
        "traffic, minutes": lambda q: sorted(q.traffic(now - 3600, now + 1, 60), key=key),
        "traffic, hours": lambda q: sorted(q.traffic(hour - 86400, hour, 3600), key=key),
        "traffic, days": lambda q: sorted(q.traffic(day - 30 * 86400, day, 86400), key=key),
        "clients, raw": lambda q: {k: sorted(v, key=key) for k, v in q.clients(now - 3600, now + 1).items()},
        "clients, days": lambda q: {k: sorted(v, key=key) for k, v in q.clients(day - 30 * 86400, day).items()},
        "explorer": lambda q: q.requests(filters={}, limit=5),
        "explorer, next page": lambda q: q.requests(filters={}, limit=5, before=Cursor.decode(first["next"])),
        "explorer, filtered": lambda q: q.requests(filters={"client": "bob", "llm": "mid"}, fallback=False),
        "statuses": lambda q: q.distinct("status", 0, now + 1),
        "versions, raw": lambda q: q.versions(0, now + 1),
        "versions, days": lambda q: q.versions(day - 30 * 86400, day),
        "feedback, joined": lambda q: q.feedback_summary(0, now + 1),
        "feedback, pre-aggregated": lambda q: q.feedback_summary(day - 30 * 86400, day),
        "one request": lambda q: q.request(served["known_id"]),
    }
    try:
        assert post.rollup_span(day - 30 * 86400, day) == 86400
        with post.engine.connect() as c:
            assert post._rollup_has_all_feedback(c)
        for name, run in checks.items():
            _same(run(lite), run(post), name)
    finally:
        lite.engine.dispose()
        post.engine.dispose()


def test_dashboard_on_a_postgresql_ledger(pg_url, tmp_path):
    """A server whose ledger is PostgreSQL (``ledger.url``) serves the dashboard from it: raw and pre-aggregated
    windows agree with the rows the requests wrote."""
    make_router("best-single").fit(make_synthetic(n_queries=40, n_llms=3, seed=0).select("train")).save_pretrained(
        tmp_path / "router")
    with fake_backends(PRICES) as (_, base):
        raw = _config(base, tmp_path / "router", None)
        raw["ledger"] = {"url": pg_url}
        app = create_app(parse_config(raw, env=ENV))
        with ServerThread(app) as thread:
            for i in range(3):
                assert _chat(thread.url, ALICE, "radial:cost-first", f"question {i}").status_code == 200
            assert _chat(thread.url, BOB, "mid").status_code == 200
            rows = app.state.serve.ledger.rows()  # acknowledged after commit: all there
            assert len(rows) == 4
            recent = _admin(thread.url, "/dashboard/api/overview", range="1h").json()
            daily = _admin(thread.url, "/dashboard/api/overview", range="30d").json()
            assert app.state.serve.dashboard_queries.engine.dialect.name == "postgresql"
            assert recent["totals"]["requests"] == daily["totals"]["requests"] == 4
            spent = sum(r["cost_usd"] for r in rows)
            assert recent["totals"]["cost_usd"] == pytest.approx(spent) == daily["totals"]["cost_usd"]
            page = _admin(thread.url, "/dashboard/api/requests", client="alice").json()
            assert {r["request_id"] for r in page["rows"]} == {r["request_id"] for r in rows if r["client"] == "alice"}
            listed = _admin(thread.url, "/dashboard/api/clients", range="7d").json()["clients"]
            clients = {c["client"]: c for c in listed}
            assert clients["alice"]["requests"] == 3 and clients["bob"]["requests"] == 1


def _clients_after_traffic(raw: dict) -> tuple[dict[str, dict], list[dict]]:
    """Serve ``raw`` and send it the same few requests (alice routed, bob direct): the Clients page's entries by
    client id, and the ledger's rows."""
    app = create_app(parse_config(raw, env=ENV))
    with ServerThread(app) as thread:
        for i in range(3):
            assert _chat(thread.url, ALICE, "radial:cost-first", f"question {i}").status_code == 200
        assert _chat(thread.url, ALICE, "radial:performance-first", "a hard one").status_code == 200
        assert _chat(thread.url, BOB, "mid").status_code == 200
        rows = app.state.serve.ledger.rows()  # acknowledged after commit: all there
        listed = _admin(thread.url, "/dashboard/api/clients", range="7d").json()["clients"]
    return {c["client"]: c for c in listed}, rows


def test_clients_page_shows_the_same_spend_on_postgresql_as_on_sqlite(pg_url, tmp_path):
    """Issue #21: with ``ledger.url`` the budgets live in PostgreSQL (shared by replicas), and the Clients page
    showed 0 USD spent for every key because it read the process's in-memory spend, which only SQLite budgets keep.
    The same traffic on both ledgers now shows the same all-time spend, equal to the sum of each key's rows."""
    make_router("best-single").fit(make_synthetic(n_queries=40, n_llms=3, seed=0).select("train")).save_pretrained(
        tmp_path / "router")
    with fake_backends(PRICES) as (_, base):
        on_sqlite, lite_rows = _clients_after_traffic(_config(base, tmp_path / "router", tmp_path / "l.sqlite"))
        raw = _config(base, tmp_path / "router", None)
        raw["ledger"] = {"url": pg_url}
        on_pg, pg_rows = _clients_after_traffic(raw)
    for client in ("alice", "bob"):
        spent = sum(r["cost_usd"] or 0.0 for r in pg_rows if r["client"] == client)
        assert spent > 0
        assert spent == pytest.approx(sum(r["cost_usd"] or 0.0 for r in lite_rows if r["client"] == client))
        assert on_pg[client]["spent_usd"] == pytest.approx(spent) == on_sqlite[client]["spent_usd"], client
        assert on_pg[client]["reserved_usd"] == on_sqlite[client]["reserved_usd"] == 0.0
        assert on_pg[client]["window_cost_usd"] == pytest.approx(on_sqlite[client]["window_cost_usd"])
    assert on_sqlite["alice"]["budget_used"] > 0
    assert on_pg["alice"]["budget_used"] == pytest.approx(on_sqlite["alice"]["budget_used"])
    assert on_pg["bob"]["budget_used"] is None


def test_ratings_are_booked_in_the_pre_aggregates(served, tmp_path):
    """`Ledger.record_feedback` (POST /v1/feedback, judge labels) books each rating in the dashboard's hourly and
    daily totals in its own transaction — a replaced rating moves the sum, not the count — so the feedback figures
    are read from the pre-aggregates instead of a join."""
    path = tmp_path / "rated.sqlite"
    _copy(served["config"].ledger.path, path)
    ledger = Ledger(path)
    try:
        ledger.record_feedback(served["known_id"], "client", 1.0, ts=time.time())
        ledger.record_feedback(served["known_id"], "client", 0.25, ts=time.time())  # replaces the first
        ledger.record_feedback(served["known_id"], "judge", 0.5, ts=time.time())
    finally:
        ledger.close()
    q = DashboardQueries(ledger_engine(path))
    with q.engine.connect() as c:
        assert q._rollup_has_all_feedback(c)
    days = (0, (time.time() // 86400 + 1) * 86400)
    rows = q.feedback_summary(*days)["per_llm"]
    assert sum(r["n"] for r in rows) == 2 and sum(r["mean_score"] * r["n"] for r in rows) == pytest.approx(0.75)
