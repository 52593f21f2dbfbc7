"""Data-driven migrations of the decision log's schema (`radialrouter.ledger.schema`), recorded in
``schema_migrations``: `MIGRATIONS` lists the steps, `migrate` applies those not yet applied.

Every step is idempotent (a table, column or index already there is left alone), so databases created before the
migration table existed — SQLite decision logs from earlier releases — are brought up to date the same way. On
PostgreSQL the steps run in one transaction under an advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from radialrouter.ledger.rollups import backfill
from radialrouter.ledger.schema import budget_spend, decisions, metadata, schema_migrations


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
    in `radialrouter.ledger.rollups`)."""
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
