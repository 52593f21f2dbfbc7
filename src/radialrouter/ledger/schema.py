"""The database schema of the serving state — decision log and its pre-aggregates, spend, reservations, rate
windows, replicas, revoked dashboard sessions — defined once (SQLAlchemy Core) for SQLite and PostgreSQL, with
data-driven migrations (`radialrouter.ledger.migrations`) recorded in ``schema_migrations``.

Adding a column is two lines: the ``Column`` in its ``Table`` below, and ``("00NN_name", "add_column", "table",
"column")`` at the end of `radialrouter.ledger.migrations.MIGRATIONS`. Adding a table is its ``Table`` and an
``("00NN_name", "create_table", "table")`` entry; an index, its ``Index`` in the ``Table`` and ``("00NN_name",
"create_index", "table", "index")``.
Every step is idempotent (a table, column or index already there is left alone), so databases created before the
migration table existed — SQLite decision logs from earlier releases — are brought up to date the same way. On
PostgreSQL the steps run in one transaction under an advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import sqlalchemy as sa

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
#: version, kept by the ledger's writer in the transaction of the rows they sum (`radialrouter.ledger.rollups`)
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
