"""Every query the dashboard runs against the decision ledger, in one place and in portable SQL.

The handlers in `radialrouter.serve.dashboard_routes` never write SQL: they call `DashboardQueries`, which reads the
``decisions`` table (and, when present, a ``feedback`` table and version columns) through a SQLAlchemy engine. The
engine comes from one function, `ledger_engine`: the configured ledger, a SQLite file (``ledger.path``) or the
PostgreSQL database replicas share (``ledger.url``), opened read-only. The SQL sticks to what SQLite and PostgreSQL
share: named parameters, CASE, COALESCE, SUM / COUNT / AVG / MAX, and time buckets computed from the REAL ``ts``
column (epoch seconds) with arithmetic — the only dialect switch is the floor of ``ts / bucket`` (`_bucket_sql`),
because PostgreSQL's CAST rounds where SQLite's truncates.

The one thing the dashboard writes is not a figure: `SessionRevocations` records sessions ended by logout in the
ledger's ``dashboard_revoked_sessions`` table (through the ledger's own read-write engine), so that every replica
sharing the database refuses a logged-out cookie.

Pages read aggregates, never whole tables: windows of whole hours or days read the pre-aggregates the ledger's
writer keeps (`radialrouter.ledger.rollups`: ~5 k daily rows for a million requests over 30 days); shorter
windows read raw rows over an indexed time range (``decisions_ts``); the explorer pages with a keyset cursor (ts,
request id), so its cost does not grow with the ledger.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, inspect, text

from radialrouter.ledger import rollups as ledger_rollup
from radialrouter.ledger.schema import budget_spend, dashboard_revoked_sessions
from radialrouter.ledger.store import make_engine

# Every status the server writes, but for client_error_<code> (a backend's 4xx passed on to the client).
STATUSES = ("ok", "route_only", "upstream_failed", "stream_error", "stream_truncated", "client_disconnected",
            "shutdown", "cancelled", "refused", "no_candidate")
_TRAFFIC_SUMS = ("requests", "ok", "route_only", "errors", "upstream_failed", "fallbacks", "routed", "cost_usd",
                 "expected_cost_usd", "prompt_tokens", "completion_tokens", "latency_sum", "latency_n",
                 "overhead_sum", "overhead_n")
_JSON_COLUMNS = ("ranking", "attempts", "scores", "probabilities")
# What the explorer's list shows (the detail view reads the whole row).
_LIST_COLUMNS = ("request_id", "ts", "client", "model", "mode", "lam", "llm", "fallback", "stream", "status",
                 "prompt_tokens", "completion_tokens", "cost_usd", "expected_cost_usd", "latency_ms", "overhead_ms")
_FILTERS = ("client", "llm", "status", "mode", "model")


def ledger_engine(target: str | Path) -> Engine:
    """The dashboard's database, read-only (the dashboard never writes): the configured ledger — a SQLite file
    path (``ledger.path``) or a PostgreSQL URL (``ledger.url``), as `radialrouter.ledger.store.Ledger` takes it.

    This is the single place that decides where the dashboard reads from."""
    return make_engine(target, pool_size=4, read_only=True)


def _plain(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Rows as dicts of JSON-ready values: PostgreSQL returns SUMs of integers as NUMERIC (``Decimal``)."""
    return [{k: (int(v) if v == v.to_integral_value() else float(v)) if isinstance(v, Decimal) else v
             for k, v in row.items()} for row in rows]


def _bucket_sql(dialect: str) -> str:
    """``floor(ts / :bucket)``: SQLite's CAST truncates (= floor for positive times); elsewhere FLOOR is standard.
    Queries group by the output name (``GROUP BY bucket``), which both accept, so a bound parameter never has to
    match itself between SELECT and GROUP BY."""
    return "CAST(ts / :bucket AS INTEGER)" if dialect == "sqlite" else "FLOOR(ts / :bucket)"


@dataclass(frozen=True)
class Cursor:
    """Keyset pagination for the explorer: rows strictly older than (ts, request_id), newest first."""

    ts: float
    request_id: str

    def encode(self) -> str:
        return f"{self.ts!r}|{self.request_id}"

    @classmethod
    def decode(cls, value: str) -> Cursor:
        ts, sep, rid = value.partition("|")
        try:
            return cls(float(ts), rid) if sep and rid else _bad_cursor(value)
        except ValueError:
            return _bad_cursor(value)


def _bad_cursor(value: str) -> Cursor:
    raise ValueError(f"`before` is not a cursor from a previous page: {value[:80]!r}")


class DashboardQueries:
    """Read-only aggregate queries on the ledger. Methods return plain data (JSON-ready)."""

    def __init__(self, engine: Engine, schema_ttl_s: float = 30.0) -> None:
        self.engine = engine
        self._schema_ttl = schema_ttl_s
        self._schema: tuple[float, dict[str, set[str]]] | None = None

    # ------------------------------------------------------------------------------------------ schema
    def _tables(self) -> dict[str, set[str]]:
        """Table → columns, re-read at most every ``schema_ttl_s`` (a schema changes when a server upgrades the
        ledger, not between two page loads)."""
        now = time.monotonic()
        if self._schema is None or now - self._schema[0] > self._schema_ttl:
            insp = inspect(self.engine)
            wanted = ("decisions", "feedback", ledger_rollup.TABLE, budget_spend.name)
            names = set(insp.get_table_names())
            self._schema = (now, {t: {c["name"] for c in insp.get_columns(t)} for t in wanted if t in names})
        return self._schema[1]

    def columns(self, table: str = "decisions") -> set[str]:
        """Columns of ``table`` (empty when it does not exist): optional figures are shown only when present."""
        return self._tables().get(table, set())

    def tables(self) -> set[str]:
        return set(self._tables())

    def _feedback_join(self) -> bool:
        return {"request_id", "score"} <= self.columns("feedback")

    def time_range(self) -> tuple[float | None, float | None]:
        """Oldest and newest row times (index ``decisions_ts``: two index look-ups)."""
        with self.engine.connect() as db:
            # Two scalar subqueries: each is one index look-up (MIN and MAX together would scan).
            lo, hi = db.execute(text("SELECT (SELECT MIN(ts) FROM decisions), (SELECT MAX(ts) FROM decisions)")).one()
        return lo, hi

    # ------------------------------------------------------------------------------------------ overview
    def traffic(self, since: float, until: float, bucket: int) -> list[dict[str, Any]]:
        """Per time bucket and LLM: requests, outcomes, fallbacks, spend, tokens of charged rows, latency sums.

        Sums and counts (not averages) so callers can combine buckets and LLMs exactly. Whole-hour (or whole-day)
        windows and buckets read the pre-aggregates (`rollup_span`); others (the last hour, by minute) the raw rows."""
        params: dict[str, Any] = {"since": since, "until": until, "bucket": bucket}
        span = self.rollup_span(since, until, bucket)
        if span:
            sums = ", ".join(f"SUM({c}) AS {c}" for c in _TRAFFIC_SUMS)
            sql = text(f"""
                SELECT (start / :bucket) * :bucket AS bucket, llm, {sums}, MAX(overhead_max) AS overhead_max
                FROM {ledger_rollup.TABLE}
                WHERE span = :span AND start >= :since AND start < :until
                GROUP BY bucket, llm
                ORDER BY bucket""")
            params.update(since=int(since), until=int(until), span=span)
            with self.engine.connect() as db:
                rows = _plain(db.execute(sql, params).mappings().all())
            return [{**r, "bucket": int(r["bucket"]), "llm": r["llm"] or None} for r in rows]
        b = _bucket_sql(self.engine.dialect.name)
        sql = text(f"""
            SELECT {b} AS bucket, llm,
                   COUNT(*) AS requests,
                   SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END) AS ok,
                   SUM(CASE WHEN status = 'route_only' THEN 1 ELSE 0 END) AS route_only,
                   SUM(CASE WHEN status NOT IN ('ok', 'route_only') THEN 1 ELSE 0 END) AS errors,
                   SUM(CASE WHEN status IN ('upstream_failed', 'stream_error', 'stream_truncated') THEN 1 ELSE 0 END)
                       AS upstream_failed,
                   SUM(CASE WHEN fallback = 1 THEN 1 ELSE 0 END) AS fallbacks,
                   SUM(CASE WHEN mode IS NOT NULL THEN 1 ELSE 0 END) AS routed,
                   COALESCE(SUM(cost_usd), 0) AS cost_usd,
                   COALESCE(SUM(expected_cost_usd), 0) AS expected_cost_usd,
                   COALESCE(SUM(CASE WHEN cost_usd IS NOT NULL THEN prompt_tokens ELSE 0 END), 0) AS prompt_tokens,
                   COALESCE(SUM(CASE WHEN cost_usd IS NOT NULL THEN completion_tokens ELSE 0 END), 0)
                       AS completion_tokens,
                   COALESCE(SUM(latency_ms), 0) AS latency_sum, COUNT(latency_ms) AS latency_n,
                   COALESCE(SUM(overhead_ms), 0) AS overhead_sum, COUNT(overhead_ms) AS overhead_n,
                   MAX(overhead_ms) AS overhead_max
            FROM decisions
            WHERE ts >= :since AND ts < :until
            GROUP BY bucket, llm
            ORDER BY bucket""")
        with self.engine.connect() as db:
            rows = _plain(db.execute(sql, params).mappings().all())
        return [{**r, "bucket": int(r["bucket"]) * bucket} for r in rows]

    def rollup_span(self, since: float, until: float, bucket: int | None = None) -> int | None:
        """The pre-aggregates that answer a window exactly — daily when its edges and buckets are whole UTC days,
        hourly when whole hours — or None (read raw rows), also when the ledger has no such table."""
        for span in sorted(ledger_rollup.SPANS, reverse=True):
            if all(float(x) % span == 0 for x in (since, until, span if bucket is None else bucket)):
                return span if ledger_rollup.TABLE in self.tables() else None
        return None

    # ------------------------------------------------------------------------------------------ clients
    def clients(self, since: float, until: float) -> dict[str, list[dict[str, Any]]]:
        """Per client and trade-off (mode; null = direct calls), and per client and LLM, over a time range."""
        params: dict[str, Any] = {"since": since, "until": until}
        span = self.rollup_span(since, until)
        if span:
            params.update(since=int(since), until=int(until), span=span)
            src, n, where = ledger_rollup.TABLE, "SUM(requests)", "span = :span AND start >= :since AND start < :until"
            lam, errors = "SUM(lam_sum) / NULLIF(SUM(lam_n), 0)", "SUM(errors)"
        else:
            src, n, where = "decisions", "COUNT(*)", "ts >= :since AND ts < :until"
            lam, errors = "AVG(lam)", "SUM(CASE WHEN status NOT IN ('ok', 'route_only') THEN 1 ELSE 0 END)"
        by_mode = text(f"""
            SELECT client, mode, {n} AS requests, COALESCE(SUM(cost_usd), 0) AS cost_usd, {lam} AS mean_lam,
                   {errors} AS errors
            FROM {src} WHERE {where}
            GROUP BY client, mode ORDER BY client""")
        by_llm = text(f"""
            SELECT client, llm, {n} AS requests, COALESCE(SUM(cost_usd), 0) AS cost_usd
            FROM {src} WHERE {where}
            GROUP BY client, llm ORDER BY client""")
        with self.engine.connect() as db:
            modes = [{**r, "mode": r["mode"] or None} for r in _plain(db.execute(by_mode, params).mappings())]
            llms = [{**r, "llm": r["llm"] or None} for r in _plain(db.execute(by_llm, params).mappings())]
        return {"by_mode": modes, "by_llm": llms}

    def spend(self) -> dict[str, tuple[float, float]]:
        """All-time (spent, reserved) USD per client from ``budget_spend``: where PostgreSQL budgets keep them for
        every replica (`radialrouter.serve.pg.SharedBudgets`; a process's in-memory `Budgets` is empty there). The
        writer books each row's cost in that row's transaction, so spent equals the sum of the log. Empty when the
        ledger has no such table."""
        if budget_spend.name not in self.tables():
            return {}
        with self.engine.connect() as db:
            rows = db.execute(text(f"SELECT client, spent_usd, reserved_usd FROM {budget_spend.name}")).all()
        return {client: (float(spent or 0.0), float(reserved or 0.0)) for client, spent, reserved in rows}

    # ------------------------------------------------------------------------------------------ explorer
    def requests(self, *, filters: dict[str, str], since: float | None = None, until: float | None = None,
                 fallback: bool | None = None, limit: int = 50, before: Cursor | None = None) -> dict[str, Any]:
        """One page of rows, newest first, matching exact-value ``filters``; ``next`` is the cursor of the next
        page (None on the last one)."""
        where, params = [], {"limit": limit + 1}
        for name, value in filters.items():
            if name not in _FILTERS:
                raise ValueError(f"cannot filter on {name!r}; filters: {', '.join(_FILTERS)}")
            where.append(f"{name} = :{name}")
            params[name] = value
        if since is not None:
            where.append("ts >= :since")
            params["since"] = since
        if until is not None:
            where.append("ts < :until")
            params["until"] = until
        if fallback is not None:
            where.append("fallback = :fallback")
            params["fallback"] = int(fallback)
        if before is not None:
            where.append("(ts < :bts OR (ts = :bts AND request_id < :bid))")
            params.update(bts=before.ts, bid=before.request_id)
        cols = ", ".join(c for c in _LIST_COLUMNS if c in self.columns())
        sql = text(f"SELECT {cols} FROM decisions {'WHERE ' + ' AND '.join(where) if where else ''} "
                   "ORDER BY ts DESC, request_id DESC LIMIT :limit")
        with self.engine.connect() as db:
            rows = _plain(db.execute(sql, params).mappings())
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            row["fallback"], row["stream"] = bool(row.get("fallback")), bool(row.get("stream"))
        nxt = Cursor(rows[-1]["ts"], rows[-1]["request_id"]).encode() if more and rows else None
        return {"rows": rows, "next": nxt}

    def request(self, request_id: str) -> dict[str, Any] | None:
        """One whole row (JSON columns decoded, no prompt text), with its feedback when a feedback table exists."""
        with self.engine.connect() as db:
            found = _plain(db.execute(text("SELECT * FROM decisions WHERE request_id = :rid"),
                                      {"rid": request_id}).mappings())
            if not found:
                return None
            row = found[0]
            out = {k: v for k, v in row.items() if k != "prompt"}
            out["has_prompt"] = row.get("prompt") is not None
            if self._feedback_join():
                out["feedback"] = _plain(db.execute(
                    text("SELECT * FROM feedback WHERE request_id = :rid"), {"rid": request_id}).mappings())
        for name in _JSON_COLUMNS:
            if isinstance(out.get(name), str):
                try:
                    out[name] = json.loads(out[name])
                except ValueError:
                    pass  # shown as stored
        out["fallback"], out["stream"] = bool(out.get("fallback")), bool(out.get("stream"))
        return out

    def distinct(self, column: str, since: float, until: float, limit: int = 200) -> list[str]:
        """Values seen in a filterable column over a range (the explorer's drop-downs)."""
        if column not in _FILTERS:
            raise ValueError(f"no value list for {column!r}")
        sql = text(f"SELECT DISTINCT {column} FROM decisions WHERE ts >= :since AND ts < :until "
                   f"AND {column} IS NOT NULL ORDER BY {column} LIMIT :limit")
        with self.engine.connect() as db:
            return [r[0] for r in db.execute(sql, {"since": since, "until": until, "limit": limit})]

    # ------------------------------------------------------------------------------------------ router
    def versions(self, since: float, until: float) -> list[dict[str, Any]] | None:
        """Per router version (when the ledger records one): requests, spend, errors, the times of its first and
        last request in the window, and feedback (count, mean score) when a feedback table exists. None when the
        ledger has no version column. Counts come from the pre-aggregates when the window allows; the first and
        last times are always those of real requests (`_first_last`), never a period's bounds."""
        if "router_version" not in self.columns():
            return None
        params: dict[str, Any] = {"since": since, "until": until}
        span = self.rollup_span(since, until)
        if span:
            params.update(since=int(since), until=int(until), span=span)
            sql = text(f"""
                SELECT router_version AS version, SUM(requests) AS requests, COALESCE(SUM(cost_usd), 0) AS cost_usd,
                       MIN(start) AS first_ts, MAX(start) AS last_ts, SUM(errors) AS errors
                FROM {ledger_rollup.TABLE} WHERE span = :span AND start >= :since AND start < :until
                GROUP BY router_version ORDER BY MIN(start)""")
        else:
            sql = text("""
                SELECT COALESCE(router_version, '') AS version, COUNT(*) AS requests,
                       COALESCE(SUM(cost_usd), 0) AS cost_usd, MIN(ts) AS first_ts, MAX(ts) AS last_ts,
                       SUM(CASE WHEN status NOT IN ('ok', 'route_only') THEN 1 ELSE 0 END) AS errors
                FROM decisions WHERE ts >= :since AND ts < :until
                GROUP BY COALESCE(router_version, '') ORDER BY MIN(ts)""")
        with self.engine.connect() as db:
            rows = _plain(db.execute(sql, params).mappings())
            if span:
                for r in rows:
                    r["first_ts"] = self._first_last(db, "MIN", r["version"], int(r["first_ts"]), span)
                    r["last_ts"] = self._first_last(db, "MAX", r["version"], int(r["last_ts"]), span)
        return [{**r, "version": r["version"] or None} for r in rows]

    def _first_last(self, db: Any, which: str, version: str, start: int, span: int) -> float | None:
        """The time of a version's first (``MIN``) or last (``MAX``) request inside the pre-aggregated period that
        begins at ``start``: narrowed to the hour from the hourly pre-aggregates when ``span`` is a day, then read
        from that hour's raw rows over the time index — a few thousand rows at most, whatever the ledger's size."""
        lo, hi = start, start + span
        if span > 3600:
            hour = db.execute(text(f"""
                SELECT {which}(start) FROM {ledger_rollup.TABLE}
                WHERE span = 3600 AND start >= :lo AND start < :hi AND router_version = :version"""),
                {"lo": lo, "hi": hi, "version": version}).scalar()
            if hour is not None:
                lo, hi = int(hour), int(hour) + 3600
        ts = db.execute(text(f"""
            SELECT {which}(ts) FROM decisions
            WHERE ts >= :lo AND ts < :hi AND COALESCE(router_version, '') = :version"""),
            {"lo": lo, "hi": hi, "version": version}).scalar()
        return None if ts is None else float(ts)

    def feedback_summary(self, since: float, until: float) -> dict[str, Any] | None:
        """Feedback on requests of a time range, per router version (when recorded) and LLM: count and mean score.
        None when the ledger has no feedback table.

        Read from the pre-aggregates when the window allows and their rating totals agree with the feedback
        table's (count and sum: a feedback writer books each rating there with `ledger_rollup.add_feedback`);
        otherwise joined, driven from the feedback table (``+d.ts``: unary plus, valid in SQLite and PostgreSQL,
        keeps SQLite from scanning the window's decisions instead), one key look-up per rating."""
        if not self._feedback_join():
            return None
        span = self.rollup_span(since, until)
        params: dict[str, Any] = {"since": since, "until": until}
        with self.engine.connect() as db:
            if span and self._rollup_has_all_feedback(db):
                params.update(since=int(since), until=int(until), span=span)
                sql = text(f"""
                    SELECT router_version AS version, llm, SUM(feedback_n) AS n, SUM(feedback_sum) AS total
                    FROM {ledger_rollup.TABLE} WHERE span = :span AND start >= :since AND start < :until
                    GROUP BY router_version, llm HAVING SUM(feedback_n) > 0""")
            else:
                version = "COALESCE(d.router_version, '')" if "router_version" in self.columns() else "''"
                sql = text(f"""
                    SELECT {version} AS version, d.llm AS llm, COUNT(f.score) AS n, SUM(f.score) AS total
                    FROM feedback f JOIN decisions d ON d.request_id = f.request_id
                    WHERE +d.ts >= :since AND +d.ts < :until AND f.score IS NOT NULL
                    GROUP BY {version}, d.llm""")
            rows = _plain(db.execute(sql, params).mappings())
        per_llm: dict[str, list[float]] = {}
        per_version: dict[str, list[float]] = {}
        for r in rows:
            for key, into in ((r["llm"] or "(none)", per_llm), (r["version"] or None, per_version)):
                acc = into.setdefault(key, [0, 0.0])
                acc[0], acc[1] = acc[0] + r["n"], acc[1] + (r["total"] or 0.0)
        return {"per_llm": [{"llm": k, "n": n, "mean_score": t / n} for k, (n, t) in sorted(per_llm.items())],
                "per_version": [{"version": k, "n": n, "mean_score": t / n} for k, (n, t) in per_version.items()]}

    def _rollup_has_all_feedback(self, db: Any) -> bool:
        """Whether the pre-aggregates hold every rating: their count and sum equal the feedback table's."""
        if "feedback_n" not in self.columns(ledger_rollup.TABLE):
            return False
        n, total = db.execute(text("SELECT COUNT(score), COALESCE(SUM(score), 0) FROM feedback")).one()
        rn, rtotal = db.execute(text(f"SELECT COALESCE(SUM(feedback_n), 0), COALESCE(SUM(feedback_sum), 0) "
                                     f"FROM {ledger_rollup.TABLE} WHERE span = 86400")).one()
        return n == rn and abs(total - rtotal) <= 1e-6 * max(1.0, abs(total))


class SessionRevocations:
    """Dashboard sessions revoked by logout, refused until their cookie expires anyway.

    With a decision log (``ledger.path`` or ``ledger.url``) they live in its ``dashboard_revoked_sessions`` table,
    so a logout on one replica holds on every replica sharing the database; without one, in this process only (one
    process is then all there is). A session id is checked once per cookie-authenticated request: one primary-key
    look-up. ``engine`` must be able to write (the ledger's, not the dashboard's read-only one)."""

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine
        self._local: dict[str, float] = {}  # session id → expiry: what this process revoked
        self._lock = threading.Lock()

    def revoke(self, session_id: str, expires: float) -> None:
        """Refuse ``session_id`` from now until ``expires`` (epoch seconds); drop revocations past their expiry."""
        now = time.time()
        with self._lock:
            self._local = {sid: t for sid, t in self._local.items() if t >= now}
            self._local[session_id] = expires
        if self.engine is None:
            return
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        table = dashboard_revoked_sessions
        with self.engine.begin() as db:
            db.execute(insert(table).values(session_id=session_id, expires=expires).on_conflict_do_nothing())
            db.execute(table.delete().where(table.c.expires < now))

    def revoked(self, session_id: str) -> bool:
        """Whether ``session_id`` was logged out (here, or on any replica sharing the database)."""
        with self._lock:
            if session_id in self._local:
                return True
        if self.engine is None:
            return False
        table = dashboard_revoked_sessions
        with self.engine.connect() as db:
            return db.execute(sa.select(table.c.session_id).where(table.c.session_id == session_id)).first() is not None
