"""The decision log: one SQLite row per request, written by a background thread so requests never wait on disk.

A row holds what is needed to audit routing and spend — request id, time, client id (never the key), alias,
λ, chosen LLM, ranking, attempts, tokens, cost (and whether it is the backend's reported usage or the server's own
count, for interrupted streams), latency — and the routed text only when ``log_prompts`` is on.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("radialrouter.serve")

_COLUMNS = ("request_id", "ts", "client", "model", "mode", "lam", "llm", "ranking", "attempts", "fallback", "stream",
            "status", "prompt_tokens", "completion_tokens", "cost_usd", "cost_source", "latency_ms", "prompt",
            "choice", "propensity", "candidates", "policy_probs", "explore", "router_version", "response")
_SCHEMA = """CREATE TABLE IF NOT EXISTS decisions (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, client TEXT NOT NULL, model TEXT, mode TEXT, lam REAL,
    llm TEXT, ranking TEXT, attempts TEXT, fallback INTEGER, stream INTEGER, status TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, cost_source TEXT, latency_ms REAL,
    prompt TEXT)"""
# Columns newer than the first release: added to older files on open (all nullable).
_ADDED = {"cost_source": "TEXT", "choice": "TEXT", "propensity": "REAL", "candidates": "TEXT", "policy_probs": "TEXT",
          "explore": "TEXT", "router_version": "TEXT", "response": "TEXT"}
# Client feedback and judge labels, one row per (request, source); written directly (rare, small), not queued.
_FEEDBACK_SCHEMA = """CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL, source TEXT NOT NULL, ts REAL NOT NULL, client TEXT, score REAL NOT NULL,
    comment TEXT, meta TEXT, PRIMARY KEY (request_id, source))"""


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
    # Off-policy learning: the policy's own pick (router LLM names), its probability, the candidates and the
    # logging distribution over them (aligned), the exploration setting and the router's version.
    choice: str | None = None
    propensity: float | None = None
    candidates: list[str] | None = None
    policy_probs: list[float] | None = None
    explore: str | None = None
    router_version: str | None = None
    response: str | None = None  # the answer's text, only with ``ledger.log_responses`` (for judge labels)

    def values(self) -> tuple:
        d = asdict(self)
        d["ranking"], d["attempts"] = json.dumps(self.ranking), json.dumps(self.attempts)
        d["fallback"], d["stream"] = int(self.fallback), int(self.stream)
        for name in ("candidates", "policy_probs"):
            d[name] = None if d[name] is None else json.dumps(d[name])
        return tuple(d[c] for c in _COLUMNS)


class Ledger:
    """Append-only SQLite log with a bounded queue; ``close()`` flushes what is queued."""

    def __init__(self, path: str | Path, max_queue: int = 10_000, on_drop=None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            db.execute(_FEEDBACK_SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
            for name, kind in _ADDED.items():
                if name not in have:
                    db.execute(f"ALTER TABLE decisions ADD COLUMN {name} {kind}")
        self._queue: queue.Queue[LedgerRow | None] = queue.Queue(maxsize=max_queue)
        self._pending = 0  # rows recorded and not yet committed (or failed)
        self._pending_lock = threading.Lock()
        self._on_drop = on_drop
        self._thread = threading.Thread(target=self._write_loop, name="radialrouter-ledger", daemon=True)
        self._thread.start()

    def spent_by_client(self) -> dict[str, float]:
        """Total cost per client id so far (restores budgets after a restart)."""
        with sqlite3.connect(self.path) as db:
            rows = db.execute("SELECT client, COALESCE(SUM(cost_usd), 0) FROM decisions GROUP BY client").fetchall()
        return {client: float(total) for client, total in rows}

    def record(self, row: LedgerRow) -> None:
        with self._pending_lock:
            self._pending += 1
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            with self._pending_lock:
                self._pending -= 1
            log.warning("decision log queue is full; dropping the row of request %s", row.request_id)
            if self._on_drop is not None:
                self._on_drop()

    def backlog(self) -> int:
        """Rows queued or being written, not yet committed."""
        return self._pending

    def _write_loop(self) -> None:
        db = sqlite3.connect(self.path)
        marks = ",".join("?" * len(_COLUMNS))
        sql = f"INSERT OR REPLACE INTO decisions ({','.join(_COLUMNS)}) VALUES ({marks})"
        while True:
            rows = [self._queue.get()]
            while not self._queue.empty() and len(rows) < 512:
                rows.append(self._queue.get_nowait())
            stop = None in rows
            try:
                with db:
                    db.executemany(sql, [r.values() for r in rows if r is not None])
            except sqlite3.Error as exc:
                log.error("decision log write failed (%d rows): %s", len(rows), exc)
            with self._pending_lock:
                self._pending -= sum(r is not None for r in rows)
            if stop:
                db.close()
                return

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def rows(self) -> list[dict[str, Any]]:
        """All rows, oldest first (for tests and small audits)."""
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM decisions ORDER BY ts")]

    def decision_of(self, request_id: str) -> dict[str, Any] | None:
        """One decision row by request id (None if it is not, or not yet, written)."""
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM decisions WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else dict(row)

    def record_feedback(self, request_id: str, source: str, score: float, *, client: str | None = None,
                        comment: str | None = None, meta: dict[str, Any] | None = None, ts: float) -> None:
        """Store (or replace: posting the same feedback again is idempotent) one label of a request."""
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT OR REPLACE INTO feedback (request_id, source, ts, client, score, comment, meta) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (request_id, source, ts, client, float(score), comment,
                                                        None if meta is None else json.dumps(meta)))

    def feedback_rows(self) -> list[dict[str, Any]]:
        """All feedback and judge labels, oldest first."""
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM feedback ORDER BY ts")]
