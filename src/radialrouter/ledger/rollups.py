"""Hourly and daily pre-aggregates of the decision ledger, kept by the ledger's writer so the dashboard never
scans raw rows for a wide time window.

One row of `radialrouter.ledger.schema.decisions_rollup` per (span, period start, client, LLM, trade-off, router
version) — span 3600 (hours) or 86400 (UTC days) — with sums and counts: requests, outcomes, fallbacks, spend,
tokens, latency (and ratings, booked by `add_feedback`), from which every overview and client figure is an exact
sum. The writer thread upserts a batch's aggregates in the same transaction as the batch itself (``INSERT … ON
CONFLICT … DO UPDATE`` through SQLAlchemy's SQLite and PostgreSQL dialects), so the table never disagrees with
``decisions``; a ledger written before the table existed is backfilled once by a schema migration
(``0017_decisions_rollup_backfill``). NULL key parts are stored as ``''`` because a NULL never conflicts with
another in a primary key.

On 1 M requests over 30 days (8 clients, 5 LLMs, 4 trade-offs) the hourly rows number ~90 k and the daily ones
~5 k: a 24-hour window reads ~3 k rows, a 30-day one ~5 k, instead of a million (benchmarks/results/
dashboard_load.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from radialrouter.ledger.schema import decisions, decisions_rollup, schema_migrations

TABLE = decisions_rollup.name
SPANS = (3600, 86400)
KEY = ("span", "start", "client", "llm", "mode", "router_version")
SUMS = ("requests", "ok", "route_only", "errors", "upstream_failed", "fallbacks", "routed", "cost_usd",
        "expected_cost_usd", "prompt_tokens", "completion_tokens", "latency_sum", "latency_n", "overhead_sum",
        "overhead_n", "lam_sum", "lam_n", "feedback_n", "feedback_sum")
_REAL = {"cost_usd", "expected_cost_usd", "latency_sum", "overhead_sum", "lam_sum", "feedback_sum"}
COLUMNS = (*KEY, *SUMS, "overhead_max")
UPSTREAM_FAILED = ("upstream_failed", "stream_error", "stream_truncated")
#: The schema migrations that create and fill the table (`radialrouter.ledger.migrations.MIGRATIONS`).
MIGRATION_IDS = ("0016_decisions_rollup", "0017_decisions_rollup_backfill")


def upsert(dialect: str) -> Any:
    """``INSERT … ON CONFLICT (key) DO UPDATE``: add each sum to the period's row, keep the larger overhead_max.
    Parameters: one dict per `COLUMNS` (what `aggregate` returns)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(decisions_rollup)
    t, new = decisions_rollup.c, stmt.excluded
    biggest = sa.case((sa.or_(t.overhead_max.is_(None), new.overhead_max > t.overhead_max), new.overhead_max),
                      else_=t.overhead_max)
    return stmt.on_conflict_do_update(index_elements=[t[k] for k in KEY],
                                      set_={**{c: t[c] + new[c] for c in SUMS}, "overhead_max": biggest})


def aggregate(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """A batch of `LedgerRow` objects → one upsert parameter dict per (span, period, client, LLM, mode, version),
    in key order (every writer locks rollup rows in the same order: no deadlocks between replicas)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        rest = (r.client, r.llm or "", r.mode or "", getattr(r, "router_version", None) or "")
        for span in SPANS:
            key = (span, int(r.ts // span) * span, *rest)
            g = groups.get(key)
            if g is None:
                g = groups[key] = {**dict(zip(KEY, key)), **{c: 0.0 if c in _REAL else 0 for c in SUMS},
                                   "overhead_max": None}
            _add(g, r)
    return [groups[k] for k in sorted(groups)]


def _add(g: dict[str, Any], r: Any) -> None:
    charged = r.cost_usd is not None
    for name, value in (
            ("requests", 1), ("ok", r.status == "ok"), ("route_only", r.status == "route_only"),
            ("errors", r.status not in ("ok", "route_only")), ("upstream_failed", r.status in UPSTREAM_FAILED),
            ("fallbacks", bool(r.fallback)), ("routed", r.mode is not None), ("cost_usd", r.cost_usd or 0.0),
            ("expected_cost_usd", r.expected_cost_usd or 0.0),
            ("prompt_tokens", (r.prompt_tokens or 0) if charged else 0),
            ("completion_tokens", (r.completion_tokens or 0) if charged else 0),
            ("latency_sum", r.latency_ms or 0.0), ("latency_n", r.latency_ms is not None),
            ("overhead_sum", r.overhead_ms or 0.0), ("overhead_n", r.overhead_ms is not None),
            ("lam_sum", r.lam or 0.0), ("lam_n", r.lam is not None)):
        g[name] += value
    if r.overhead_ms is not None:
        g["overhead_max"] = r.overhead_ms if g["overhead_max"] is None else max(g["overhead_max"], r.overhead_ms)


def _period(conn: Connection, span: int) -> Any:
    """``floor(ts / span) * span`` as an integer: SQLite's CAST truncates (= floor for positive times); PostgreSQL's
    rounds, so it takes FLOOR. ``span`` is a literal: the same expression appears in GROUP BY, where PostgreSQL
    would not match two bound parameters."""
    ts_over = decisions.c.ts / sa.literal_column(str(int(span)))
    if conn.dialect.name == "sqlite":
        whole = sa.cast(ts_over, sa.BigInteger)
    else:
        whole = sa.cast(sa.func.floor(ts_over), sa.BigInteger)
    return whole * sa.literal_column(str(int(span)))


def backfill(conn: Connection) -> None:
    """Fill the (empty) table from ``decisions`` with one INSERT … SELECT per span — a ledger older than the table —
    with the ``feedback`` table's ratings and the ``router_version`` column when the ledger has them. A table that
    already has rows (kept by a writer since it was created) is left alone."""
    if conn.execute(sa.select(decisions_rollup.c.span).limit(1)).first() is not None:
        return
    inspector = sa.inspect(conn)
    names = set(inspector.get_table_names())
    has_version = "router_version" in {c["name"] for c in inspector.get_columns("decisions")}
    has_feedback = "feedback" in names and {"request_id", "score"} <= {
        c["name"] for c in inspector.get_columns("feedback")}
    d = decisions.c
    empty = sa.literal_column("''")
    # router_version: the learning loop's column (radialrouter issue 12), absent from older ledgers.
    version = (sa.func.coalesce(sa.literal_column("decisions.router_version", sa.Text), empty)
               if has_version else empty)
    if has_feedback:
        fb = sa.table("feedback", sa.column("request_id"), sa.column("score"))
        rated = (sa.select(fb.c.request_id.label("rid"), sa.func.count(fb.c.score).label("n"),
                           sa.func.sum(fb.c.score).label("total"))
                 .group_by(fb.c.request_id).subquery("f"))
        source: Any = decisions.outerjoin(rated, rated.c.rid == d.request_id)
        ratings = [sa.func.coalesce(sa.func.sum(rated.c.n), 0), sa.func.coalesce(sa.func.sum(rated.c.total), 0.0)]
    else:
        source, ratings = decisions, [sa.literal_column("0"), sa.literal_column("0")]

    def count_if(condition: Any) -> Any:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    def charged(column: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((d.cost_usd.is_not(None), column), else_=0)), 0)

    settled = ("ok", "route_only")
    for span in SPANS:
        period = _period(conn, span)
        keys = [period, d.client, sa.func.coalesce(d.llm, empty), sa.func.coalesce(d.mode, empty), version]
        select = sa.select(
            sa.literal_column(str(span)), *keys,
            sa.func.count(), count_if(d.status == "ok"), count_if(d.status == "route_only"),
            count_if(d.status.not_in(settled)), count_if(d.status.in_(UPSTREAM_FAILED)), count_if(d.fallback == 1),
            count_if(d.mode.is_not(None)),
            sa.func.coalesce(sa.func.sum(d.cost_usd), 0.0), sa.func.coalesce(sa.func.sum(d.expected_cost_usd), 0.0),
            charged(d.prompt_tokens), charged(d.completion_tokens),
            sa.func.coalesce(sa.func.sum(d.latency_ms), 0.0), sa.func.count(d.latency_ms),
            sa.func.coalesce(sa.func.sum(d.overhead_ms), 0.0), sa.func.count(d.overhead_ms),
            sa.func.coalesce(sa.func.sum(d.lam), 0.0), sa.func.count(d.lam),
            *ratings, sa.func.max(d.overhead_ms),
        ).select_from(source).group_by(*keys[:4], *([version] if has_version else []))  # no constant: PostgreSQL
        conn.execute(decisions_rollup.insert().from_select(list(COLUMNS), select))


def forget(conn: Connection) -> None:
    """Drop the table and its migration records, so the database looks like one written before the table existed:
    the next `radialrouter.ledger.migrations.migrate` (a `Ledger` opening it) rebuilds it. For tests and benchmarks
    that measure the backfill."""
    decisions_rollup.drop(conn, checkfirst=True)
    if sa.inspect(conn).has_table(schema_migrations.name):
        conn.execute(schema_migrations.delete().where(schema_migrations.c.id.in_(MIGRATION_IDS)))


def add_feedback(conn: Connection, decision: Mapping[str, Any], count: int, total: float) -> None:
    """Book ratings of one request (``count`` of them summing to ``total``; negative to take back a replaced
    score) in the pre-aggregates, on a SQLAlchemy connection, in the transaction that writes the ``feedback`` row.

    ``decision`` is its ledger row (ts, client, llm, mode, and router_version when the ledger has one). A feedback
    writer calls this; the dashboard reads feedback from here only while the totals agree with the ``feedback``
    table (else it joins)."""
    t = decisions_rollup.c
    rest = {"client": decision["client"], "llm": decision["llm"] or "", "mode": decision["mode"] or "",
            "router_version": (decision["router_version"] if "router_version" in decision.keys() else None) or ""}
    for span in SPANS:
        where = [t.span == span, t.start == int(decision["ts"] // span) * span,
                 *(t[k] == v for k, v in rest.items())]
        conn.execute(sa.update(decisions_rollup).where(*where).values(
            feedback_n=t.feedback_n + count, feedback_sum=t.feedback_sum + total))
