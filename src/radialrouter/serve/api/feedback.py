"""``POST /v1/feedback``: a client rates an answer it got, by the id the answer carried.

Body: ``{"id": "<response.id or x-radialrouter-request-id>", "score": 0.8}`` or ``{"id": ..., "thumbs": "up"}``
(up = 1, down = 0), and optionally ``"comment"`` (at most 2,000 characters). Only the key that made the request
may rate it (another key gets the same 404 as an unknown id, so ids cannot be probed); posting again replaces the
earlier rating (idempotent: one rating per request and source). Ratings live in the decision log's ``feedback``
table, where `radialrouter train --from-ledger` and `radialrouter ope` read them.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Request

from radialrouter.serve.routing import RequestError

if TYPE_CHECKING:
    from radialrouter.serve.state import ServeState

MAX_COMMENT = 2000
MAX_ID = 200  # ids this server hands out are ``rr-`` + 32 hex digits; the bound keeps lookups cheap
#: Decision rows are committed in groups by a background thread. With ``ledger.wait_for_commit`` (the default) an
#: answer's row is committed before its last byte, so its feedback always finds it — on any replica sharing the
#: PostgreSQL log. Without it, feedback sent right after the answer may beat the row: this replica then waits (at
#: most this long) while its ledger still has uncommitted rows (`Ledger.backlog`).
ROW_WAIT_S = 2.0


def parse_feedback(body: Any) -> tuple[str, float, str | None]:
    """(request id, score in [0, 1], comment) from a feedback body; a `RequestError` naming the field otherwise."""
    if not isinstance(body, dict):
        raise RequestError("Request body must be a JSON object", code="invalid_type")
    ids = {key: body[key] for key in ("id", "request_id") if body.get(key) is not None}  # request_id: an alias
    if not ids:
        raise RequestError("`id` (the id of a response from this server, response.id) is required", param="id",
                           code="missing_required_parameter")
    for key, value in ids.items():  # each one given must be valid, as the schema says, even if `id` wins
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
            raise RequestError(f"`{key}` must be the id of a response from this server (response.id), 1 to {MAX_ID} "
                               "characters", param=key, code="invalid_type")
    rid = ids.get("id", ids.get("request_id"))
    score, thumbs = body.get("score"), body.get("thumbs")
    if (score is None) == (thumbs is None):
        raise RequestError("give exactly one of `score` (a number in [0, 1]) and `thumbs` ('up' or 'down')",
                           param="score")
    if thumbs is not None:
        if thumbs not in ("up", "down"):
            raise RequestError("`thumbs` must be 'up' or 'down'", param="thumbs", code="invalid_type")
        value = 1.0 if thumbs == "up" else 0.0
    else:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not (
                math.isfinite(score) and 0 <= score <= 1):
            raise RequestError("`score` must be a number in [0, 1]", param="score", code="invalid_type")
        value = float(score)
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise RequestError(f"`comment` must be a string of at most {MAX_COMMENT} characters", param="comment",
                           code="invalid_type")
    return rid, value, comment


def feedback_router(state: ServeState) -> APIRouter:
    """The feedback endpoint, bound to a server's state (its key check and decision log)."""
    api = APIRouter()

    @api.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        client = state.authenticate(request)
        await state.admit(client)
        ledger = state.ledger
        if ledger is None:
            raise RequestError("Feedback needs the decision log (ledger.path or ledger.url), which is off here",
                               status=409, code="ledger_off")
        body, _ = await state.read_json(request)
        rid, score, comment = parse_feedback(body)
        start = time.monotonic()
        while True:
            row = await anyio.to_thread.run_sync(ledger.decision_of, rid)
            if row is not None or time.monotonic() - start > ROW_WAIT_S:
                break
            if not ledger.backlog():  # nothing left to write: one last look (it may have been committed just now)
                row = await anyio.to_thread.run_sync(ledger.decision_of, rid)
                break
            await asyncio.sleep(0.01)
        if row is None or row["client"] != client:
            raise RequestError(f"No response with id {rid!r} was served to this key", param="id",
                               code="not_found", status=404)
        if row["status"] != "ok":
            raise RequestError(f"Request {rid!r} did not get an answer (status {row['status']}); nothing to rate",
                               param="id", code="no_answer", status=409)
        await anyio.to_thread.run_sync(lambda: ledger.record_feedback(rid, "client", score, client=client,
                                                                     comment=comment, ts=time.time()))
        return {"id": rid, "score": score, "stored": True}

    return api


__all__ = ["MAX_COMMENT", "MAX_ID", "feedback_router", "parse_feedback"]
