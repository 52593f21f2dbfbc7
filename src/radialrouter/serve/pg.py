"""State that replicas share through PostgreSQL (``ledger.url``): budgets, rate limits and replica heartbeats.

Budgets. ``budget_spend`` holds, per client id, what was spent and what requests in flight have reserved. A request
is admitted by one statement::

    WITH u AS (UPDATE budget_spend SET reserved_usd = reserved_usd + :amount
               WHERE client = :client AND spent_usd + reserved_usd < :limit RETURNING client)
    INSERT INTO budget_reservations (...) SELECT ... FROM u

The ``UPDATE`` locks the client's row, so however many replicas race, each admission sees every reservation made
before it: spend ≤ budget + one request's reservation, across all replicas (if each request costs at most its
reservation, as in the single-process budgets). When the request ends, the decision-log writer deletes its
reservation row and adds its cost in the transaction that writes its decision row, so spend always equals the sum
of the log. Spend survives restarts because it lives in the database.

A replica killed mid-request leaves reservation rows behind. Every replica upserts its heartbeat in ``replicas``
every `HEARTBEAT_S` seconds; any replica releases the reservations of an instance whose heartbeat is older than
`LEASE_S` (and of instances with no row at all). What a killed replica's requests cost at the provider was never
reported to it, so it is not in the log either.

Rate limits: the sliding-window counters of `radialrouter.serve.ratelimit` in ``rate_windows``, checked and
incremented by one conditional ``UPDATE`` per request.

Every transaction that locks several rows deletes reservation rows first, then locks ``budget_spend`` and
``rate_windows`` rows in client order, and an admission locks one row: no lock cycles between replicas.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from radialrouter.ledger.schema import budget_reservations, budget_spend, rate_windows, replicas
from radialrouter.ledger.store import Ledger, Settlement, book_spend
from radialrouter.serve.budgets import Budgets, Reservation
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.ratelimit import WINDOW_S, Window, admits, limits_from, refusal, window_start
from radialrouter.serve.routing import RequestError

log = logging.getLogger("radialrouter.serve")
HEARTBEAT_S = 5.0
LEASE_S = 30.0
T = TypeVar("T")
# The database's clock: no skew between replicas.
_NOW = sa.literal_column("EXTRACT(EPOCH FROM clock_timestamp())::float8")


class Shared:
    """One replica's handle on the shared state: its instance id, heartbeat thread and database calls."""

    def __init__(self, config: ServeConfig, ledger: Ledger, replica: str, *, lease_s: float = LEASE_S,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        if ledger.dialect != "postgresql":
            raise ValueError("shared budgets and rate limits need a PostgreSQL ledger (ledger.url)")
        self.engine, self.ledger, self.replica = ledger.engine, ledger, replica
        self.instance = f"{replica}-{uuid.uuid4().hex[:12]}"
        self.lease_s, self.heartbeat_s = lease_s, heartbeat_s
        self._threads = anyio.CapacityLimiter(self.engine.pool.size())
        self.budgets = SharedBudgets(config, self)
        self.limiter = PgRateLimiter(config, self)
        ledger.settler = self.settle
        self.beat()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, name="radialrouter-heartbeat", daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking database call in a worker thread (at most one per pooled connection). An unreachable
        database fails closed: 503 ``database_unavailable`` (budgets and rate limits cannot be checked)."""
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._threads)
        except sa.exc.SQLAlchemyError as exc:
            log.error("shared-state database call failed: %s", exc)
            raise RequestError("The gateway's database is unavailable; retry shortly", status=503,
                               code="database_unavailable", headers={"retry-after": "1"}) from None

    # ------------------------------------------------------------------ settlement (in the ledger's transaction)
    def settle(self, conn: Connection, settlements: list[Settlement]) -> None:
        ids = [s.reservation_id for s in settlements if s.reservation_id]
        released: dict[str, float] = {}
        if ids:
            gone = conn.execute(budget_reservations.delete()
                                .where(budget_reservations.c.reservation_id.in_(ids))
                                .returning(budget_reservations.c.client, budget_reservations.c.amount_usd))
            for client, amount in gone:
                released[client] = released.get(client, 0.0) + amount
        book_spend(conn, settlements, released)
        tokens: dict[str, int] = {}
        for s in settlements:
            if s.completion_tokens and s.client in self.limiter.limits:
                tokens[s.client] = tokens.get(s.client, 0) + int(s.completion_tokens)
        if tokens:
            stmt = (rate_windows.update().where(rate_windows.c.client == sa.bindparam("c"))
                    .values(tokens=rate_windows.c.tokens + sa.bindparam("t")))
            conn.execute(stmt, [{"c": c, "t": tokens[c]} for c in sorted(tokens)])

    # ------------------------------------------------------------------ heartbeats and leases
    def beat(self) -> int:
        """Upsert this instance's heartbeat and release the reservations of dead instances; returns how many."""
        with self.engine.begin() as conn:
            stmt = pg_insert(replicas).values(instance=self.instance, replica=self.replica, started=_NOW,
                                              heartbeat=_NOW)
            conn.execute(stmt.on_conflict_do_update(index_elements=[replicas.c.instance],
                                                    set_={"heartbeat": stmt.excluded.heartbeat}))
        return self.reclaim()

    def reclaim(self) -> int:
        with self.engine.begin() as conn:
            cutoff = sa.literal_column(f"(EXTRACT(EPOCH FROM clock_timestamp())::float8 - {float(self.lease_s)})")
            live = sa.select(replicas.c.instance).where(replicas.c.heartbeat >= cutoff)
            gone = conn.execute(budget_reservations.delete()
                                .where(budget_reservations.c.instance.not_in(live))
                                .returning(budget_reservations.c.client, budget_reservations.c.amount_usd)).all()
            released: dict[str, float] = {}
            for client, amount in gone:
                released[client] = released.get(client, 0.0) + amount
            book_spend(conn, [], released)
            conn.execute(replicas.delete().where(replicas.c.heartbeat < cutoff))
        if gone:
            log.warning("released %d budget reservation(s) of replicas that stopped without settling them", len(gone))
        return len(gone)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except sa.exc.SQLAlchemyError as exc:
                log.warning("replica heartbeat failed: %s", exc)

    def close(self) -> None:
        """Stop the heartbeat and remove this instance (after the ledger has flushed its settlements)."""
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            with self.engine.begin() as conn:
                conn.execute(replicas.delete().where(replicas.c.instance == self.instance))
            self.reclaim()  # anything of ours still reserved (nothing, after a clean drain)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not deregister replica %s: %s", self.instance, exc)


class SharedBudgets(Budgets):
    """`Budgets` whose spend and reservations live in PostgreSQL, shared by every replica."""

    def __init__(self, config: ServeConfig, shared: Shared) -> None:
        super().__init__(config)
        self.shared = shared
        if self.limits:
            stmt = pg_insert(budget_spend).on_conflict_do_nothing(index_elements=[budget_spend.c.client])
            with shared.engine.begin() as conn:
                conn.execute(stmt, [{"client": c, "spent_usd": 0.0, "reserved_usd": 0.0} for c in sorted(self.limits)])

    def check(self, client: str) -> None:
        """No early check: the admission (`areserve`) is one atomic statement against the shared row."""

    async def areserve(self, client: str, amount: float) -> Reservation:
        limit = self.limits.get(client)
        if limit is None:
            return Reservation(client, amount)
        rid = uuid.uuid4().hex
        if not await self.shared.run(self._reserve, client, amount, limit, rid):
            raise RequestError(f"Budget of {limit} USD for client {client!r} is spent (or reserved by requests in "
                               "flight)", status=429, code="budget_exceeded")
        return Reservation(client, amount, id=rid)

    def _reserve(self, client: str, amount: float, limit: float, rid: str) -> bool:
        took = (budget_spend.update()
                .where(budget_spend.c.client == client, budget_spend.c.spent_usd + budget_spend.c.reserved_usd < limit)
                .values(reserved_usd=budget_spend.c.reserved_usd + amount)
                .returning(budget_spend.c.client).cte("took"))
        row = sa.select(sa.literal(rid), sa.literal(self.shared.instance), took.c.client, sa.literal(amount),
                        sa.literal(time.time()))
        stmt = (budget_reservations.insert()
                .from_select(["reservation_id", "instance", "client", "amount_usd", "created"], row)
                .returning(budget_reservations.c.reservation_id))
        with self.shared.engine.begin() as conn:
            return conn.execute(stmt).first() is not None

    def settle(self, reservation: Reservation | None, client: str, cost: float | None) -> bool:
        """Local book-keeping only (the database part is in the decision row's transaction); True when the cost
        exceeded what was reserved."""
        if reservation is not None:
            reservation.settled = True
        return reservation is not None and cost is not None and cost > reservation.amount * (1 + 1e-9)

    def state(self, client: str) -> tuple[float, float]:
        """(spent, reserved) USD of a client, as the database has them now."""
        with self.shared.engine.connect() as conn:
            row = conn.execute(sa.select(budget_spend.c.spent_usd, budget_spend.c.reserved_usd)
                               .where(budget_spend.c.client == client)).first()
        return (float(row[0]), float(row[1])) if row else (0.0, 0.0)


class PgRateLimiter:
    """The sliding-window limiter of `radialrouter.serve.ratelimit` with its counters in PostgreSQL."""

    def __init__(self, config: ServeConfig, shared: Shared, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits_from(config)
        self.shared, self.clock = shared, clock
        if self.limits:
            stmt = pg_insert(rate_windows).on_conflict_do_nothing(index_elements=[rate_windows.c.client])
            with shared.engine.begin() as conn:
                conn.execute(stmt, [{"client": c} for c in sorted(self.limits)])

    async def admit(self, client: str, prompt_tokens: int) -> None:
        limit = self.limits.get(client)
        if limit is None:
            return
        refused = await self.shared.run(self._admit, client, max(0, int(prompt_tokens)), limit)
        if refused is not None:
            raise refused

    def _admit(self, client: str, tokens: int, limit: Any) -> RequestError | None:
        now = self.clock()
        start = window_start(now)
        elapsed = (now - start) / WINDOW_S
        r = rate_windows.c
        same, after = r.window_start == start, r.window_start == start - WINDOW_S

        def rolled(cur: Any, prev: Any) -> tuple[Any, Any]:
            return (sa.case((same, cur), else_=0),
                    sa.case((same, prev), (after, cur), else_=0))

        cur_r, prev_r = rolled(r.requests, r.prev_requests)
        cur_t, prev_t = rolled(r.tokens, r.prev_tokens)
        conditions = [r.client == client]
        if limit.requests_per_minute is not None:
            conditions.append(prev_r * (1.0 - elapsed) + cur_r + 1 <= limit.requests_per_minute)
        if limit.tokens_per_minute is not None:
            conditions.append(prev_t * (1.0 - elapsed) + cur_t < limit.tokens_per_minute)
        stmt = (rate_windows.update().where(*conditions)
                .values(window_start=start, requests=cur_r + 1, tokens=cur_t + tokens, prev_requests=prev_r,
                        prev_tokens=prev_t)
                .returning(r.requests))
        for _ in range(3):
            with self.shared.engine.begin() as conn:
                if conn.execute(stmt).first() is not None:
                    return None
                row = conn.execute(sa.select(r.window_start, r.requests, r.tokens, r.prev_requests, r.prev_tokens)
                                   .where(r.client == client)).first()
            if row is None:  # the key's row is gone (a wiped table): start it again
                with self.shared.engine.begin() as conn:
                    conn.execute(pg_insert(rate_windows).on_conflict_do_nothing(), {"client": client})
                continue
            w = Window(*(int(v) for v in row)).rolled(start)
            if not admits(w, limit, elapsed):
                return refusal(client, w, limit, elapsed)
            # the row was rolled by another request between the two statements: try again
        return refusal(client, Window(start, limit.requests_per_minute or 0, limit.tokens_per_minute or 0), limit,
                       elapsed)

    def finished(self, client: str, completion_tokens: int | None) -> None:
        """Nothing here: output tokens are booked with the decision row (`Shared.settle`)."""
