"""The database schema of the serving state — decision log and its pre-aggregates, spend, reservations, rate
windows, replicas, revoked dashboard sessions — defined once (SQLAlchemy Core) for SQLite and PostgreSQL, with
data-driven migrations recorded in ``schema_migrations``.

Adding a column is two lines: the ``Column`` in its ``Table`` below, and ``("00NN_name", "add_column", "table",
"column")`` at the end of `MIGRATIONS`. Adding a table is its ``Table`` and an ``("00NN_name", "create_table",
"table")`` entry; an index, its ``Index`` in the ``Table`` and ``("00NN_name", "create_index", "table", "index")``.
Every step is idempotent (a table, column or index already there is left alone), so databases created before the
migration table existed — SQLite decision logs from earlier releases — are brought up to date the same way. On
PostgreSQL the steps run in one transaction under an advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()

decisions = sa.Table(
    "decisions", metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("client", sa.Text, nullable=False),
    sa.Column("model", sa.Text),
    sa.Column("mode", sa.Text),
    sa.Column("lam", sa.Float),
    sa.Column("llm", sa.Text),
    sa.Column("ranking", sa.Text),
    sa.Column("attempts", sa.Text),
    sa.Column("fallback", sa.Integer),
    sa.Column("stream", sa.Integer),
    sa.Column("status", sa.Text),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("cost_usd", sa.Float),
    sa.Column("cost_source", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("prompt", sa.Text),
    sa.Column("replica", sa.Text),
    sa.Column("scores", sa.Text),  # JSON: the router's score per ranked LLM
    sa.Column("probabilities", sa.Text),  # JSON: its probabilities, for routers that have them
    sa.Column("expected_cost_usd", sa.Float),  # the router's estimate for its choice (actual: cost_usd)
    sa.Column("overhead_ms", sa.Float),  # added latency: arrival to the first backend call
    # Learning from traffic (issue 12): the policy's own pick (router LLM names), its probability, the candidates
    # and the logging distribution over them (JSON lists, aligned), the exploration setting, the router's version,
    # and the answer's text (only with ``ledger.log_responses``, for judge labels).
    sa.Column("choice", sa.Text),
    sa.Column("propensity", sa.Float),
    sa.Column("candidates", sa.Text),
    sa.Column("policy_probs", sa.Text),
    sa.Column("explore", sa.Text),
    sa.Column("router_version", sa.Text),
    sa.Column("response", sa.Text),
    # What the dashboard filters and groups by (radialrouter.serve.dashboard_queries): time ranges, per client,
    # per LLM.
    sa.Index("decisions_ts", "ts"),
    sa.Index("decisions_client_ts", "client", "ts"),
    sa.Index("decisions_llm_ts", "llm", "ts"),
)

#: Client feedback and judge labels (issue 12), one row per (request, source); written directly (rare, small).
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("client", sa.Text),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("meta", sa.Text),
)

#: Hourly (span 3600) and daily (span 86400, UTC) sums of the decision log per client, LLM, trade-off and router
#: version, kept by the ledger's writer in the transaction of the rows they sum (`radialrouter.serve.ledger_rollup`)
#: so the dashboard reads a few thousand rows for a 30-day window instead of every decision. NULL key parts are
#: stored as ``''`` (a NULL never conflicts with another in a primary key).
decisions_rollup = sa.Table(
    "decisions_rollup", metadata,
    sa.Column("span", sa.Integer, primary_key=True),
    sa.Column("start", sa.BigInteger, primary_key=True),  # epoch seconds, a multiple of span
    sa.Column("client", sa.Text, primary_key=True),
    sa.Column("llm", sa.Text, primary_key=True),
    sa.Column("mode", sa.Text, primary_key=True),
    sa.Column("router_version", sa.Text, primary_key=True),
    *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
      for name in ("requests", "ok", "route_only", "errors", "upstream_failed", "fallbacks", "routed")),
    sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("expected_cost_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),  # of charged rows
    sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("latency_sum", sa.Float, nullable=False, server_default="0"),
    sa.Column("latency_n", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("overhead_sum", sa.Float, nullable=False, server_default="0"),
    sa.Column("overhead_n", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("lam_sum", sa.Float, nullable=False, server_default="0"),
    sa.Column("lam_n", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("feedback_n", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("feedback_sum", sa.Float, nullable=False, server_default="0"),
    sa.Column("overhead_max", sa.Float),
)

#: Spend per client id, kept in the same transaction as the decision rows that cause it (so it always equals
#: their sum), plus the total of the client's open reservations (PostgreSQL budgets).
budget_spend = sa.Table(
    "budget_spend", metadata,
    sa.Column("client", sa.Text, primary_key=True),
    sa.Column("spent_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("reserved_usd", sa.Float, nullable=False, server_default="0"),
)

#: One row per admitted request until it settles; a replica that dies leaves its rows behind, and they are released
#: when its heartbeat in `replicas` is older than the lease.
budget_reservations = sa.Table(
    "budget_reservations", metadata,
    sa.Column("reservation_id", sa.Text, primary_key=True),
    sa.Column("instance", sa.Text, nullable=False, index=True),
    sa.Column("client", sa.Text, nullable=False),
    sa.Column("amount_usd", sa.Float, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)

#: Sliding-window rate counters per client: the current minute and the one before it.
rate_windows = sa.Table(
    "rate_windows", metadata,
    sa.Column("client", sa.Text, primary_key=True),
    sa.Column("window_start", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("prev_requests", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("prev_tokens", sa.BigInteger, nullable=False, server_default="0"),
)

#: Live server processes (one row per process start) and their heartbeats.
replicas = sa.Table(
    "replicas", metadata,
    sa.Column("instance", sa.Text, primary_key=True),
    sa.Column("replica", sa.Text, nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)

#: Dashboard sessions ended by logout before they expire (`radialrouter.serve.dashboard_routes`): the session
#: cookie is signed, not stored, so every replica sharing the database refuses a revoked one. Rows past ``expires``
#: (when the cookie would be refused anyway) are deleted at the next logout.
dashboard_revoked_sessions = sa.Table(
    "dashboard_revoked_sessions", metadata,
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("expires", sa.Float, nullable=False),
)

schema_migrations = sa.Table(
    "schema_migrations", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("applied", sa.Float, nullable=False),
)


def _backfill_spend(conn: Connection) -> None:
    """Spend recorded before `budget_spend` existed: the sum of each client's decision rows."""
    total = sa.func.coalesce(sa.func.sum(decisions.c.cost_usd), 0.0)
    rows = conn.execute(sa.select(decisions.c.client, total).group_by(decisions.c.client)).all()
    have = set(conn.scalars(sa.select(budget_spend.c.client)))
    fresh = [{"client": c, "spent_usd": float(t), "reserved_usd": 0.0} for c, t in rows if c not in have]
    if fresh:
        conn.execute(budget_spend.insert(), fresh)


def _backfill_rollup(conn: Connection) -> None:
    """Pre-aggregates of the decisions written before `decisions_rollup` existed (the rules live with the writer's
    in `radialrouter.serve.ledger_rollup`)."""
    from radialrouter.serve.ledger_rollup import backfill

    backfill(conn)


#: (id, action, *arguments), applied in order, each once. Actions: ``create_table`` (table), ``add_column`` (table,
#: column — its definition is the one in the Table above), ``create_index`` (table, index name — its definition is
#: the table's), ``run`` (a name in `_DATA_STEPS`).
MIGRATIONS: list[tuple[str, ...]] = [
    ("0001_decisions", "create_table", "decisions"),
    ("0002_decisions_cost_source", "add_column", "decisions", "cost_source"),
    ("0003_decisions_replica", "add_column", "decisions", "replica"),
    ("0004_budget_spend", "create_table", "budget_spend"),
    ("0005_budget_spend_backfill", "run", "backfill_spend"),
    ("0006_budget_reservations", "create_table", "budget_reservations"),
    ("0007_rate_windows", "create_table", "rate_windows"),
    ("0008_replicas", "create_table", "replicas"),
    ("0009_decisions_scores", "add_column", "decisions", "scores"),
    ("0010_decisions_probabilities", "add_column", "decisions", "probabilities"),
    ("0011_decisions_expected_cost_usd", "add_column", "decisions", "expected_cost_usd"),
    ("0012_decisions_overhead_ms", "add_column", "decisions", "overhead_ms"),
    ("0013_decisions_ts_index", "create_index", "decisions", "decisions_ts"),
    ("0014_decisions_client_ts_index", "create_index", "decisions", "decisions_client_ts"),
    ("0015_decisions_llm_ts_index", "create_index", "decisions", "decisions_llm_ts"),
    ("0016_decisions_rollup", "create_table", "decisions_rollup"),
    ("0017_decisions_rollup_backfill", "run", "backfill_rollup"),
    ("0018_dashboard_revoked_sessions", "create_table", "dashboard_revoked_sessions"),
    # Learning from traffic (issue 12)
    ("0100_decisions_choice", "add_column", "decisions", "choice"),
    ("0101_decisions_propensity", "add_column", "decisions", "propensity"),
    ("0102_decisions_candidates", "add_column", "decisions", "candidates"),
    ("0103_decisions_policy_probs", "add_column", "decisions", "policy_probs"),
    ("0104_decisions_explore", "add_column", "decisions", "explore"),
    ("0105_decisions_router_version", "add_column", "decisions", "router_version"),
    ("0106_decisions_response", "add_column", "decisions", "response"),
    ("0107_feedback", "create_table", "feedback"),
]

_DATA_STEPS: dict[str, Callable[[Connection], None]] = {"backfill_spend": _backfill_spend,
                                                         "backfill_rollup": _backfill_rollup}
_LOCK_ID = 0x7261646961  # pg_advisory_xact_lock key: "radia"


def _apply(conn: Connection, step: tuple[str, ...]) -> None:
    action, args = step[1], step[2:]
    inspector = sa.inspect(conn)
    if action == "create_table":
        metadata.tables[args[0]].create(conn, checkfirst=True)
    elif action == "add_column":
        table, name = metadata.tables[args[0]], args[1]
        if name not in {c["name"] for c in inspector.get_columns(table.name)}:
            column = table.c[name]
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{name}" {kind}'))
    elif action == "create_index":
        index = next(i for i in metadata.tables[args[0]].indexes if i.name == args[1])
        index.create(conn, checkfirst=True)
    elif action == "run":
        _DATA_STEPS[args[0]](conn)
    else:
        raise ValueError(f"migration {step[0]}: unknown action {action!r}")


def migrate(engine: Engine) -> list[str]:
    """Bring the database up to `MIGRATIONS`; returns the ids applied now (empty when it was up to date)."""
    applied: list[str] = []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
        schema_migrations.create(conn, checkfirst=True)
        done = set(conn.scalars(sa.select(schema_migrations.c.id)))
        for step in MIGRATIONS:
            if step[0] in done:
                continue
            _apply(conn, step)
            conn.execute(schema_migrations.insert().values(id=step[0], applied=time.time()))
            applied.append(step[0])
    return applied
