"""Hourly and daily pre-aggregates of the decision ledger, kept by the ledger's writer so the dashboard never
scans raw rows for a wide time window.

One row per (span, period start, client, LLM, trade-off, router version) — span 3600 (hours) or 86400 (UTC days) —
with sums and counts: requests, outcomes, fallbacks, spend, tokens, latency (and ratings, booked by
`add_feedback`), from which every overview and client figure is an exact sum. The writer thread upserts a batch's
aggregates in the same transaction as the batch itself (``INSERT … ON CONFLICT … DO UPDATE``, which SQLite ≥ 3.24
and PostgreSQL share), so the table never disagrees with ``decisions``; a ledger file written before the table
existed is backfilled once when it is opened. NULL key parts are stored as ``''`` because a NULL never conflicts
with another in a unique key.

On 1 M requests over 30 days (8 clients, 5 LLMs, 4 trade-offs) the hourly rows number ~90 k and the daily ones
~5 k: a 24-hour window reads ~3 k rows, a 30-day one ~5 k, instead of a million (benchmarks/results/
dashboard_load.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TABLE = "decisions_rollup"
SPANS = (3600, 86400)
KEY = ("span", "start", "client", "llm", "mode", "router_version")
SUMS = ("requests", "ok", "route_only", "errors", "upstream_failed", "fallbacks", "routed", "cost_usd",
        "expected_cost_usd", "prompt_tokens", "completion_tokens", "latency_sum", "latency_n", "overhead_sum",
        "overhead_n", "lam_sum", "lam_n", "feedback_n", "feedback_sum")
_REAL = {"cost_usd", "expected_cost_usd", "latency_sum", "overhead_sum", "lam_sum", "feedback_sum"}
COLUMNS = (*KEY, *SUMS, "overhead_max")
UPSTREAM_FAILED = ("upstream_failed", "stream_error", "stream_truncated")

SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} (span INTEGER NOT NULL, start INTEGER NOT NULL, "
          "client TEXT NOT NULL, llm TEXT NOT NULL, mode TEXT NOT NULL, router_version TEXT NOT NULL, "
          + ", ".join(f"{c} {'REAL' if c in _REAL else 'INTEGER'} NOT NULL DEFAULT 0" for c in SUMS)
          + f", overhead_max REAL, PRIMARY KEY ({', '.join(KEY)}))")
_MAX = f"CASE WHEN {TABLE}.overhead_max IS NULL OR excluded.overhead_max > {TABLE}.overhead_max " \
       f"THEN excluded.overhead_max ELSE {TABLE}.overhead_max END"
UPSERT = (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
          f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
          + ", ".join(f"{c} = {TABLE}.{c} + excluded.{c}" for c in SUMS) + f", overhead_max = {_MAX}")


def aggregate(rows: Iterable[Any]) -> list[tuple]:
    """A batch of `LedgerRow` objects → one upsert tuple per (span, period, client, LLM, mode, version)."""
    groups: dict[tuple, list] = {}
    for r in rows:
        rest = (r.client, r.llm or "", r.mode or "", getattr(r, "router_version", None) or "")
        for span in SPANS:
            _add(groups.setdefault((span, int(r.ts // span) * span, *rest), [0] * len(SUMS) + [None]), r)
    return [(*key, *(int(v) if SUMS[i] not in _REAL else float(v) for i, v in enumerate(g[:-1])), g[-1])
            for key, g in groups.items()]


def _add(g: list, r: Any) -> None:
    charged = r.cost_usd is not None
    values = (1, r.status == "ok", r.status == "route_only", r.status not in ("ok", "route_only"),
              r.status in UPSTREAM_FAILED, bool(r.fallback), r.mode is not None, r.cost_usd or 0.0,
              r.expected_cost_usd or 0.0, (r.prompt_tokens or 0) if charged else 0,
              (r.completion_tokens or 0) if charged else 0, r.latency_ms or 0.0, r.latency_ms is not None,
              r.overhead_ms or 0.0, r.overhead_ms is not None, r.lam or 0.0, r.lam is not None, 0, 0.0)
    for i, v in enumerate(values):
        g[i] += v
    if r.overhead_ms is not None:
        g[-1] = r.overhead_ms if g[-1] is None else max(g[-1], r.overhead_ms)


def backfill_sql(has_version: bool, span: int, has_feedback: bool = False) -> str:
    """One INSERT … SELECT that fills one span of the table from ``decisions`` (for a ledger older than it), with
    the ``feedback`` table's ratings when there is one."""
    version = "COALESCE(router_version, '')" if has_version else "''"
    rated = ("COALESCE(SUM(f.n), 0), COALESCE(SUM(f.total), 0)" if has_feedback else "0, 0")
    join = ("LEFT JOIN (SELECT request_id AS rid, COUNT(score) AS n, SUM(score) AS total FROM feedback "
            "GROUP BY request_id) f ON f.rid = decisions.request_id " if has_feedback else "")
    failed = ", ".join(f"'{s}'" for s in UPSTREAM_FAILED)
    charged = "CASE WHEN cost_usd IS NOT NULL THEN {} ELSE 0 END"
    return (
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
        f"SELECT {span}, CAST(ts / {span} AS INTEGER) * {span}, client, COALESCE(llm, ''), COALESCE(mode, ''), "
        f"{version}, "
        "COUNT(*), SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status = 'route_only' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status NOT IN ('ok', 'route_only') THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN status IN ({failed}) THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN fallback = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN mode IS NOT NULL THEN 1 ELSE 0 END), "
        "COALESCE(SUM(cost_usd), 0), COALESCE(SUM(expected_cost_usd), 0), "
        f"COALESCE(SUM({charged.format('prompt_tokens')}), 0), "
        f"COALESCE(SUM({charged.format('completion_tokens')}), 0), "
        "COALESCE(SUM(latency_ms), 0), COUNT(latency_ms), COALESCE(SUM(overhead_ms), 0), COUNT(overhead_ms), "
        f"COALESCE(SUM(lam), 0), COUNT(lam), {rated}, MAX(overhead_ms) "
        f"FROM decisions {join}GROUP BY CAST(ts / {span} AS INTEGER) * {span}, client, COALESCE(llm, ''), "
        f"COALESCE(mode, ''), {version}")


def ensure(db: Any) -> None:
    """Create the table on a sqlite3 connection; backfill it once when the ledger already has rows."""
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)).fetchone()
    if exists:
        return
    db.execute(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
    rated = {row[1] for row in db.execute("PRAGMA table_info(feedback)")} >= {"request_id", "score"}
    for span in SPANS:
        db.execute(backfill_sql("router_version" in columns, span, rated))


def add_feedback(db: Any, decision: Any, count: int, total: float) -> None:
    """Book ratings of one request (``count`` of them summing to ``total``; negative to take back a replaced
    score) in the pre-aggregates, on a sqlite3 connection, in the transaction that writes the ``feedback`` row.

    ``decision`` is its ledger row (ts, client, llm, mode, router_version). A feedback writer calls this; the
    dashboard reads feedback from here only while the totals agree with the ``feedback`` table (else it joins)."""
    rest = (decision["client"], decision["llm"] or "", decision["mode"] or "",
            (decision["router_version"] if "router_version" in decision.keys() else None) or "")
    for span in SPANS:
        db.execute(f"UPDATE {TABLE} SET feedback_n = feedback_n + ?, feedback_sum = feedback_sum + ? WHERE span = ? "
                   "AND start = ? AND client = ? AND llm = ? AND mode = ? AND router_version = ?",
                   (count, total, span, int(decision["ts"] // span) * span, *rest))
