"""The decision log's promises on SQLite, with no server: every field of a row round-trips, spend per key is the
sum of its rows (what a restart restores) and is booked with the rows, a locked database delays a row rather than
losing it, a row that cannot be written is dropped and says so, and opening a log that cannot be opened names
where and why."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sqlite3
import time

import pytest
import sqlalchemy as sa

from radialrouter.ledger import store
from radialrouter.ledger.schema import budget_spend
from radialrouter.ledger.store import Ledger, LedgerRow, Settlement, committed, make_engine


def _row(request_id: str, client: str = "alpha", cost: float | None = 0.25, **extra) -> LedgerRow:
    return LedgerRow(request_id=request_id, ts=time.time(), client=client, model="auto", mode="balance", lam=0.02,
                     llm="cheap", cost_usd=cost, **extra)


def _wait(done, timeout: float = 30.0) -> bool:
    return done.result(timeout=timeout)


def test_every_field_of_a_row_round_trips(tmp_path):
    ledger = Ledger(tmp_path / "log.sqlite", replica="replica-7")
    row = LedgerRow(
        request_id="r-1", ts=1_700_000_000.5, client="alpha", model="auto", mode="quality", lam=0.1, llm="strong",
        ranking=["strong", "cheap"], attempts=[{"llm": "strong", "status": 200, "ms": 12.5}], fallback=True,
        stream=True, status="ok", prompt_tokens=12, completion_tokens=34, cost_usd=0.0123, cost_source="usage",
        latency_ms=456.5, prompt="what is 2 + 2?", scores={"strong": 0.9, "cheap": 0.4},
        probabilities={"strong": 0.7, "cheap": 0.3}, expected_cost_usd=0.011, overhead_ms=1.25, choice="llm-2",
        propensity=0.7, candidates=["llm-2", "llm-0"], policy_probs=[0.7, 0.3], explore="epsilon:0.1",
        router_version="abc123", response="4")
    assert _wait(ledger.record(row)) is True
    (stored,) = ledger.rows()
    assert stored == ledger.decision_of("r-1")
    assert stored["replica"] == "replica-7"  # the serving replica is written into the row
    assert {k: v for k, v in stored.items() if k != "replica"} == row.to_dict()
    assert row.values() == tuple(None if c == "replica" else stored[c] for c in stored)
    assert json.loads(stored["ranking"]) == ["strong", "cheap"] and stored["fallback"] == 1 and stored["stream"] == 1
    assert json.loads(stored["attempts"]) == [{"llm": "strong", "status": 200, "ms": 12.5}]
    for name in ("scores", "probabilities", "candidates", "policy_probs"):
        assert json.loads(stored[name]) == getattr(row, name), name
    plain = _row("r-2", cost=None)  # no scores, no candidates: NULL, not the text "null"
    assert _wait(ledger.record(plain)) is True
    stored = ledger.decision_of("r-2")
    assert all(stored[name] is None for name in ("scores", "probabilities", "candidates", "policy_probs", "prompt"))
    assert (stored["ranking"], stored["attempts"], stored["fallback"], stored["stream"]) == ("[]", "[]", 0, 0)
    assert plain.column_values("other")["replica"] == "other" and plain.to_dict() == {
        k: v for k, v in plain.column_values(None).items() if k != "replica"}
    assert ledger.decision_of("nope") is None
    ledger.close()


def test_spend_per_key_is_restored_from_the_rows_and_booked_with_them(tmp_path):
    """What a restart restores: the sum of each key's row costs (rows without a cost count nothing); the spend
    table is updated in the rows' own transaction, by what each settles."""
    ledger = Ledger(tmp_path / "log.sqlite")
    done = [ledger.record(_row("a1", "alpha", 0.25), Settlement("alpha", 0.25)),
            ledger.record(_row("a2", "alpha", 0.5), Settlement("alpha", 0.5)),
            ledger.record(_row("b1", "beta", None), Settlement("beta", None)),
            ledger.record(_row("c1", "gamma", 0.125), Settlement("gamma", 0.125))]
    assert all(_wait(d) for d in done) and ledger.backlog() == 0
    assert ledger.spent_by_client() == {"alpha": 0.75, "beta": 0.0, "gamma": 0.125}
    with ledger.engine.connect() as conn:
        spend = {r.client: (r.spent_usd, r.reserved_usd) for r in conn.execute(sa.select(budget_spend))}
    assert spend == {"alpha": (0.75, 0.0), "gamma": (0.125, 0.0)}
    ledger.close()
    again = Ledger(tmp_path / "log.sqlite")  # a restart reads the same
    assert again.spent_by_client() == {"alpha": 0.75, "beta": 0.0, "gamma": 0.125}
    again.close()


def _locked(path):
    """Another connection holding the database's write lock (until released)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_a_locked_database_delays_a_row_but_never_loses_it(tmp_path):
    path = tmp_path / "log.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})  # gives up on a lock at once
    ledger = Ledger(path, engine=engine)
    other = _locked(path)
    done = ledger.record(_row("late"))
    time.sleep(0.3)
    assert not done.done()  # still retrying
    other.execute("ROLLBACK")
    other.close()
    assert _wait(done) is True and ledger.decision_of("late") is not None
    ledger.close()


def test_rows_that_cannot_be_written_are_dropped_logged_and_counted(tmp_path, monkeypatch, caplog):
    """A database locked for good: the batch is retried for a while, then dropped — its waiters told False, the
    log saying how many rows after how many attempts and why, every row counted. A row the database refuses (a bad
    value) is not retried: dropped at once, said the same way."""
    monkeypatch.setattr(store, "_RETRY_S", (0.01, 0.01))
    path = tmp_path / "log.sqlite"
    drops = []
    ledger = Ledger(path, engine=sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01}),
                    on_drop=lambda: drops.append(1))
    other = _locked(path)
    with caplog.at_level(logging.ERROR, logger="radialrouter.serve"):
        done = [ledger.record(_row(f"x{i}")) for i in range(3)]
        assert [_wait(d) for d in done] == [False, False, False]
    other.execute("ROLLBACK")
    other.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("decision log write failed after 3 attempts (") and "rows dropped): database is locked"
               in m for m in messages), messages
    assert len(drops) == 3 and ledger.backlog() == 0
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="radialrouter.serve"):
        assert _wait(ledger.record(_row("bad", prompt=object()))) is False  # not a value SQLite can store
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("decision log write failed (1 rows dropped): ") and len(drops) == 4
    assert "object" in message.split("dropped): ", 1)[1]  # the database's own reason: the value it refused
    assert _wait(ledger.record(_row("good"))) is True  # the log goes on
    ledger.close()


def test_waiting_for_a_commit(tmp_path, caplog):
    """`committed`: True at once for nothing recorded, the row's outcome otherwise (from either kind of future),
    and False — logged — when the commit does not come in time."""
    async def check() -> None:
        assert await committed(None) is True
        dropped = concurrent.futures.Future()
        dropped.set_result(False)
        assert await committed(dropped) is False
        ledger = Ledger(tmp_path / "log.sqlite")
        assert await committed(ledger.record_async(_row("async"))) is True
        assert await committed(ledger.record(_row("thread"))) is True
        ledger.close()
        never = asyncio.get_running_loop().create_future()
        with caplog.at_level(logging.ERROR, logger="radialrouter.serve"):
            assert await committed(never, timeout=0.05) is False
        assert [r.getMessage() for r in caplog.records] == ["decision log commit did not finish within 0.05 s"]

    asyncio.run(check())
    ledger = Ledger(tmp_path / "other.sqlite")
    outside = ledger.record_async(_row("no-loop"))  # no event loop in this thread: a plain future
    assert isinstance(outside, concurrent.futures.Future) and _wait(outside) is True
    assert ledger.ping()
    ledger.close()
    assert not ledger.ping()  # the writer stopped: not ready


def test_sqlite_logs_are_durable_and_read_only_readers_cannot_write(tmp_path):
    """The embedded log commits in WAL mode with synchronous=NORMAL (a commit survives the process being killed),
    creating its folder; a read-only reader (the dashboard) cannot write and needs an existing file."""
    path = tmp_path / "deep" / "er" / "log.sqlite"
    ledger = Ledger(path)
    assert _wait(ledger.record(_row("one")))
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    ledger.close()
    reader = make_engine(path, read_only=True)
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM decisions").scalar() == 1
        with pytest.raises(sa.exc.OperationalError):
            conn.exec_driver_sql("DELETE FROM decisions")
    with pytest.raises(sa.exc.OperationalError):
        with make_engine(tmp_path / "missing.sqlite", read_only=True).connect():
            pass
    assert not (tmp_path / "missing.sqlite").exists()


def test_database_urls_are_postgresql_or_refused_by_name(tmp_path):
    engine = make_engine("postgres://u:secret@127.0.0.1:1/db")
    assert engine.url.drivername == "postgresql+psycopg" and engine.dialect.name == "postgresql"
    assert make_engine("postgresql://u@127.0.0.1:1/db", read_only=True).url.drivername == "postgresql+psycopg"
    with pytest.raises(ValueError) as info:
        make_engine("mysql://u@127.0.0.1/db")
    assert str(info.value) == "unsupported database URL scheme 'mysql': use postgresql:// (or a SQLite path)"
    with pytest.raises(ValueError) as info:  # nothing listens on port 1: refused at once
        Ledger("postgresql://u:secret@127.0.0.1:1/db")
    message = str(info.value)
    assert message.startswith("cannot open the decision log at postgresql+psycopg://u:***@127.0.0.1:1/db: ")
    assert "secret" not in message and "\n" not in message and len(message) > 75
