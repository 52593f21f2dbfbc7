"""The decision log: one row per request in SQLite (the embedded default) or PostgreSQL (shared by replicas),
written by a background thread that commits rows in groups.

A row holds what is needed to audit routing and spend — request id, time, client id (never the key), alias,
λ, chosen LLM, ranking, attempts, tokens, cost (and whether it is the backend's reported usage or the server's own
count, for interrupted streams), latency, the replica that served it — and the routed text only when
``log_prompts`` is on.

Durability: `Ledger.record` returns a future that completes when the row's transaction has committed. The server
awaits it before it sends a response's last byte (``ledger.wait_for_commit``, on by default), so a response a client
received always has its row, even if the process is killed right after; the request waits for a group commit but
never does the write itself, and one commit serves every row that queued meanwhile. Spend per client
(``budget_spend``) and the dashboard's hourly and daily pre-aggregates (``decisions_rollup``,
`radialrouter.ledger.rollups`) are updated in the same transaction as the rows that cause them.

Cost per row, which is server CPU (the writer shares the process and its GIL): the writer wakes only when it is idle
(rows queue on a deque; an event is set only while it waits), resolves a batch's waiters with one call into each
event loop, and writes SQLite through its own ``sqlite3`` connection with the statements SQLAlchemy compiled once
(``executemany`` of tuples, no per-call compilation); PostgreSQL keeps SQLAlchemy's engine.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from radialrouter.ledger import rollups as ledger_rollup
from radialrouter.ledger.migrations import migrate
from radialrouter.ledger.schema import budget_spend, decisions, feedback

log = logging.getLogger("radialrouter.serve")

_COLUMNS = tuple(c.name for c in decisions.columns)
_RETRY_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # waits between attempts when the database is unreachable


@dataclass
class LedgerRow:
    request_id: str
    ts: float
    client: str
    model: str
    mode: str | None
    lam: float | None
    llm: str | None
    ranking: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fallback: bool = False
    stream: bool = False
    status: str = "ok"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    cost_source: str | None = None  # "usage" (backend-reported) or "counted" (the server's own token count)
    latency_ms: float | None = None
    prompt: str | None = None
    scores: dict[str, float] | None = None  # the router's score per ranked LLM
    probabilities: dict[str, float] | None = None  # its probabilities, for routers that have them
    expected_cost_usd: float | None = None  # the router's estimate for its choice (actual: cost_usd)
    overhead_ms: float | None = None  # added latency: arrival to the first backend call (parse, count, route)
    # Off-policy learning: the policy's own pick (router LLM names), its probability, the candidates and the
    # logging distribution over them (aligned), the exploration setting and the router's version.
    choice: str | None = None
    propensity: float | None = None
    candidates: list[str] | None = None
    policy_probs: list[float] | None = None
    explore: str | None = None
    router_version: str | None = None
    response: str | None = None  # the answer's text, only with ``ledger.log_responses`` (for judge labels)

    def to_dict(self) -> dict[str, Any]:
        """The row as column values (lists and score maps as JSON text, flags as 0/1)."""
        d = asdict(self)
        d["ranking"], d["attempts"] = json.dumps(self.ranking), json.dumps(self.attempts)
        for name in ("scores", "probabilities"):
            d[name] = None if d[name] is None else json.dumps(d[name])
        d["fallback"], d["stream"] = int(self.fallback), int(self.stream)
        for name in ("candidates", "policy_probs"):
            d[name] = None if d[name] is None else json.dumps(d[name])
        return d

    def values(self) -> tuple:
        d = self.to_dict()
        return tuple(d.get(c) for c in _COLUMNS)

    def column_values(self, replica: str | None = None) -> dict[str, Any]:
        """`to_dict` without ``asdict``'s deep copies (the writer's per-row cost), ``replica`` filled in when unset."""
        d = dict(self.__dict__)
        d["ranking"], d["attempts"] = json.dumps(self.ranking), json.dumps(self.attempts)
        for name in ("scores", "probabilities", "candidates", "policy_probs"):
            if d[name] is not None:
                d[name] = json.dumps(d[name])
        d["fallback"], d["stream"] = int(self.fallback), int(self.stream)
        if d.get("replica") is None:
            d["replica"] = replica
        return d


@dataclass
class Settlement:
    """What a finished request changes besides its row: the client's spend, the budget reservation it releases
    (PostgreSQL budgets), and its output tokens (PostgreSQL rate limits). Applied in the row's transaction."""

    client: str
    cost_usd: float | None
    completion_tokens: int | None = None
    reservation_id: str | None = None


#: Applies a batch's settlements inside its transaction, before it commits. The default, `book_spend`, adds costs
#: to ``budget_spend``; PostgreSQL budgets and rate limits install one that also releases reservations and counts
#: tokens (`radialrouter.serve.pg`).
Settler = Callable[[Connection, list[Settlement]], None]


def spend_upsert(dialect: str) -> Any:
    """``INSERT … ON CONFLICT (client) DO UPDATE``: add ``spent_usd``, subtract ``released`` from the reservations
    (a remainder under a nano-dollar is rounding left by float sums: zero). Parameters: client, spent_usd,
    reserved_usd (0 for a new row), released."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(budget_spend)
    left = budget_spend.c.reserved_usd - sa.bindparam("released", type_=sa.Float)
    return stmt.on_conflict_do_update(index_elements=[budget_spend.c.client], set_={
        "spent_usd": budget_spend.c.spent_usd + stmt.excluded.spent_usd,
        "reserved_usd": sa.case((left > 1e-9, left), else_=0.0)})


def book_spend(conn: Connection, settlements: list[Settlement], released: dict[str, float] | None = None) -> None:
    """Add each settled cost to ``budget_spend`` and release ``released`` USD of reservations, one statement per
    client in sorted order (every writer locks rows in the same order: no deadlocks between replicas)."""
    released = released or {}
    totals: dict[str, float] = dict.fromkeys(released, 0.0)
    for s in settlements:
        if s.cost_usd:
            totals[s.client] = totals.get(s.client, 0.0) + s.cost_usd
    if not totals:
        return
    stmt = spend_upsert(conn.dialect.name)
    conn.execute(stmt, [{"client": c, "spent_usd": totals[c], "reserved_usd": 0.0, "released": released.get(c, 0.0)}
                        for c in sorted(totals)])


def make_engine(target: str | Path, pool_size: int = 10, read_only: bool = False) -> Engine:
    """A SQLAlchemy engine for a SQLite file path or a database URL (``postgresql://…``). ``read_only`` (readers
    such as the dashboard): SQLite opens the file read-only (it must exist), PostgreSQL sessions default to read-only
    transactions."""
    text = str(target)
    if "://" not in text and read_only:
        path = Path(text).resolve()
        engine = sa.create_engine(f"sqlite:///file:{path.as_posix()}?mode=ro&uri=true", connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _query_only(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA query_only = ON")

        return engine
    if "://" not in text:
        path = Path(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL + NORMAL: a commit survives the process being killed (not a power cut), without an fsync each.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    url = sa.make_url(text)
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    if not url.drivername.startswith("postgresql"):
        raise ValueError(f"unsupported database URL scheme {url.drivername!r}: use postgresql:// (or a SQLite path)")
    try:
        import psycopg  # noqa: F401 - the driver SQLAlchemy loads for postgresql+psycopg
    except ImportError:
        raise ValueError("ledger.url (PostgreSQL) needs the 'postgres' extra: pip install 'radialrouter[postgres]'")\
            from None
    connect: dict[str, Any] = {"connect_timeout": 5, "application_name": "radialrouter"}
    if read_only:
        connect.update(application_name="radialrouter-dashboard", options="-c default_transaction_read_only=on")
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                            pool_recycle=1800, connect_args=connect)


class Ledger:
    """Append-only decision log with a bounded queue; ``close()`` flushes what is queued.

    ``target`` is a SQLite file path or a ``postgresql://`` URL. ``replica`` is written into each row."""

    def __init__(self, target: str | Path, max_queue: int = 10_000, on_drop: Callable[[], None] | None = None,
                 replica: str | None = None, engine: Engine | None = None) -> None:
        self.url = str(target) if "://" in str(target) else None
        self.path = None if self.url else Path(target)
        self.engine = engine if engine is not None else make_engine(target)
        self.dialect = self.engine.dialect.name
        self.replica = replica
        try:
            migrate(self.engine)
        except sa.exc.OperationalError as exc:  # unreachable, refused, no such database: say which, not a traceback
            where = self.engine.url.render_as_string(hide_password=True)
            reason = " ".join(str(exc.orig or exc).split())  # libpq adds a hint on a second line
            raise ValueError(f"cannot open the decision log at {where}: {reason}") from None
        # Rows wait on a deque (appends and pops are atomic); `_wake` is set only while the writer waits for work, so a
        # busy writer costs the event loop no lock, no notify and no thread switch per row.
        self._items: collections.deque[tuple[LedgerRow, Settlement | None, Any] | None] = collections.deque()
        self._wake = threading.Event()
        self.max_queue = max_queue
        self._on_drop = on_drop
        self._recorded = self._finished = 0  # rows recorded / committed or dropped (one writer each: no lock)
        self.settler: Settler = book_spend
        self._insert = self._insert_statement()
        self._rollup = ledger_rollup.upsert(self.dialect)
        self._raw: Any = None  # the writer's own sqlite3 connection (SQLite)
        self._thread = threading.Thread(target=self._write_loop, name="radialrouter-ledger", daemon=True)
        self._thread.start()

    def _insert_statement(self) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(decisions)
        # A row recorded twice for one request id replaces the first (as INSERT OR REPLACE did).
        return stmt.on_conflict_do_update(index_elements=[decisions.c.request_id],
                                          set_={c: stmt.excluded[c] for c in _COLUMNS if c != "request_id"})

    def spent_by_client(self) -> dict[str, float]:
        """Total cost per client id so far (restores budgets after a restart)."""
        total = sa.func.coalesce(sa.func.sum(decisions.c.cost_usd), 0.0)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(decisions.c.client, total).group_by(decisions.c.client)).all()
        return {client: float(t) for client, t in rows}

    def record(self, row: LedgerRow, settle: Settlement | None = None) -> concurrent.futures.Future:
        """Queue ``row`` (and what it settles); the future completes with True once it is committed (False when
        the row was dropped: queue full, or the database kept failing)."""
        return self._enqueue(row, settle, concurrent.futures.Future())

    def record_async(self, row: LedgerRow, settle: Settlement | None = None) -> asyncio.Future:
        """`record` for a caller on an event loop (the server): an asyncio future of the running loop, which the
        writer resolves with the rest of its batch — one call into the loop per batch, not one per row."""
        try:
            done: Any = asyncio.get_running_loop().create_future()
        except RuntimeError:  # no loop in this thread after all
            done = concurrent.futures.Future()
        return self._enqueue(row, settle, done)

    def _enqueue(self, row: LedgerRow, settle: Settlement | None, done: Any) -> Any:
        if len(self._items) >= self.max_queue:
            log.warning("decision log queue is full; dropping the row of request %s", row.request_id)
            self._dropped(1)
            done.set_result(False)
            return done
        self._recorded += 1
        self._items.append((row, settle, done))
        if not self._wake.is_set():
            self._wake.set()
        return done

    def backlog(self) -> int:
        """Rows recorded and not yet committed (queued, or in the batch being written)."""
        return self._recorded - self._finished

    def _dropped(self, n: int) -> None:
        if self._on_drop is not None:
            for _ in range(n):
                self._on_drop()

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()  # before draining: a row appended from now on sets it again
            while self._items:
                items = []
                while self._items and len(items) < 512:
                    items.append(self._items.popleft())
                stop = None in items
                batch = [item for item in items if item is not None]
                if batch:
                    ok = self._commit(batch)
                    self._finished += len(batch)
                    _resolve([done for _, _, done in batch], ok)
                if stop:
                    if self._raw is not None:
                        self._raw.close()
                    self.engine.dispose()
                    return

    def _commit(self, batch: list[tuple[LedgerRow, Settlement | None, Any]]) -> bool:
        """Write one batch in one transaction — its rows, their pre-aggregates, what they settle; retry while the
        database is unreachable (about 4 s), then drop it."""
        if self.dialect == "sqlite" and self.settler is book_spend:
            return self._commit_sqlite(batch)
        rows = [row.column_values(self.replica) for row, _, _ in batch]
        rows = [{c: values.get(c) for c in _COLUMNS} for values in rows]
        settlements = [s for _, s, _ in batch if s is not None]
        sums = ledger_rollup.aggregate(row for row, _, _ in batch)
        def write() -> None:
            with self.engine.begin() as conn:
                conn.execute(self._insert, rows)
                conn.execute(self._rollup, sums)
                self.settler(conn, settlements)

        # connection lost, server down: worth retrying; any other error is a bad row, which no retry will fix
        return self._write_retrying(write, len(rows), sa.exc.OperationalError, sa.exc.SQLAlchemyError)

    def _commit_sqlite(self, batch: list[tuple[LedgerRow, Settlement | None, Any]]) -> bool:
        """`_commit` for SQLite: the same three statements (compiled once by SQLAlchemy) as ``executemany`` on the
        writer's own sqlite3 connection, in one transaction."""
        if self._raw is None:
            self._raw = self.engine.raw_connection()  # the pool's pragmas (WAL, synchronous=NORMAL) applied
            self._sql = [_positional(stmt, self.engine, keys) for stmt, keys in (
                (self._insert, _COLUMNS), (self._rollup, ledger_rollup.COLUMNS),
                (spend_upsert("sqlite"), ("client", "spent_usd", "reserved_usd")))]
        totals: dict[str, float] = {}
        for _, s, _ in batch:
            if s is not None and s.cost_usd:
                totals[s.client] = totals.get(s.client, 0.0) + s.cost_usd
        params = [[row.column_values(self.replica) for row, _, _ in batch], ledger_rollup.aggregate(
            row for row, _, _ in batch), [{"client": c, "spent_usd": totals[c], "reserved_usd": 0.0, "released": 0.0}
                                          for c in sorted(totals)]]
        raw = self._raw

        def write() -> None:
            cur = raw.cursor()
            try:
                for (sql, names, defaults), rows in zip(self._sql, params):
                    if rows:
                        cur.executemany(sql, [tuple(r[n] if n in r else defaults.get(n) for n in names) for r in rows])
                raw.commit()
            finally:
                cur.close()

        # locked, busy, disk trouble: worth retrying; any other error is a bad row, which no retry will fix
        return self._write_retrying(write, len(batch), sqlite3.OperationalError, sqlite3.Error, undo=raw.rollback)

    def _write_retrying(self, write: Callable[[], None], count: int, transient: type[Exception],
                        permanent: type[Exception], undo: Callable[[], None] | None = None) -> bool:
        """Run ``write`` (one transaction of ``count`` rows): retried after a ``transient`` error for about 4 s
        (`_RETRY_S`), given up at once after a ``permanent`` one; ``undo`` after each failure. Rows given up are
        logged and counted as dropped."""
        for attempt, wait in enumerate((*_RETRY_S, None)):
            try:
                write()
                return True
            except transient as exc:
                if undo is not None:
                    undo()
                if wait is None:
                    log.error("decision log write failed after %d attempts (%d rows dropped): %s", attempt + 1,
                              count, exc)
                    self._dropped(count)
                    return False
                time.sleep(wait)
            except permanent as exc:
                if undo is not None:
                    undo()
                log.error("decision log write failed (%d rows dropped): %s", count, exc)
                self._dropped(count)
                return False
        return False

    def ping(self) -> bool:
        """Whether the database answers and the writer thread runs (readiness)."""
        if not self._thread.is_alive():
            return False
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def close(self) -> None:
        if self._thread.is_alive():
            self._items.append(None)
            self._wake.set()
            self._thread.join(timeout=30)

    def rows(self) -> list[dict[str, Any]]:
        """All rows, oldest first (for tests and small audits)."""
        with self.engine.connect() as conn:
            result = conn.execute(sa.select(decisions).order_by(decisions.c.ts))
            return [dict(r._mapping) for r in result]

    # --- Learning from traffic (issue 12): one decision by id, and the feedback / judge labels ---

    def decision_of(self, request_id: str) -> dict[str, Any] | None:
        """One decision row by request id (None if it is not, or not yet, committed)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(decisions).where(decisions.c.request_id == request_id)).first()
        return None if row is None else dict(row._mapping)

    def record_feedback(self, request_id: str, source: str, score: float, *, client: str | None = None,
                        comment: str | None = None, meta: dict[str, Any] | None = None, ts: float) -> None:
        """Store (or replace: posting the same feedback again is idempotent) one label of a request."""
        values = {"request_id": request_id, "source": source, "ts": ts, "client": client, "score": float(score),
                  "comment": comment, "meta": None if meta is None else json.dumps(meta)}
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(feedback)
        stmt = stmt.on_conflict_do_update(index_elements=[feedback.c.request_id, feedback.c.source],
                                          set_={c: stmt.excluded[c] for c in values if c not in ("request_id",
                                                                                                "source")})
        with self.engine.begin() as conn:
            old = conn.execute(sa.select(feedback.c.score).where(feedback.c.request_id == request_id,
                                                                  feedback.c.source == source)).scalar()
            conn.execute(stmt, values)
            decision = conn.execute(sa.select(decisions).where(decisions.c.request_id == request_id)).mappings().first()
            if decision is not None:  # the dashboard's pre-aggregates, in the same transaction (a replaced rating
                # moves the sum, not the count)
                ledger_rollup.add_feedback(conn, decision, 0 if old is not None else 1,
                                           float(score) - (float(old) if old is not None else 0.0))

    def feedback_rows(self) -> list[dict[str, Any]]:
        """All feedback and judge labels, oldest first."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(feedback).order_by(feedback.c.ts))]


def _positional(stmt: Any, engine: Engine, keys: tuple[str, ...]) -> tuple[str, list[str], dict[str, Any]]:
    """A statement compiled for ``engine``'s (qmark) dialect: its SQL, the parameter names in order, and the values
    of the literals SQLAlchemy bound itself."""
    compiled = stmt.compile(dialect=engine.dialect, column_keys=list(keys))
    return str(compiled), list(compiled.positiontup), dict(compiled.params)


def _resolve(futures: list[Any], ok: bool) -> None:
    """Complete a batch's futures: one thread-safe call per event loop, the others directly."""
    by_loop: dict[Any, list[asyncio.Future]] = {}
    for done in futures:
        if isinstance(done, asyncio.Future):
            by_loop.setdefault(done.get_loop(), []).append(done)
        elif not done.done():  # a waiter that timed out cancelled it
            done.set_result(ok)
    for loop, waiting in by_loop.items():
        try:
            loop.call_soon_threadsafe(_complete, waiting, ok)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass


def _complete(futures: list[asyncio.Future], ok: bool) -> None:
    for done in futures:
        if not done.done():
            done.set_result(ok)


async def committed(done: asyncio.Future | concurrent.futures.Future | None, timeout: float = 30.0) -> bool:
    """Wait (without blocking the event loop) until a recorded row is committed; False if it was dropped."""
    if done is None:
        return True
    if not isinstance(done, asyncio.Future):
        done = asyncio.wrap_future(done)
    if done.done():
        return bool(done.result())
    try:
        return bool(await asyncio.wait_for(done, timeout))
    except asyncio.TimeoutError:
        log.error("decision log commit did not finish within %g s", timeout)
        return False
