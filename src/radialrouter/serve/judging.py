"""Judge labels through the gateway's own upstream client: ``radialrouter label --ledger L --config serve.yaml
--judge <pool LLM>`` grades logged answers with the rubric of `radialrouter.learning.judge` and stores the grades in
the decision log's ``feedback`` table (source ``judge:<LLM>``).

The calls need the serving config, the upstream client and its price table (`radialrouter.serve`), so they live here;
the rubric, the grade parsing and the ledger reading stay in `radialrouter.learning`. This module is also what the
former name ``radialrouter.judge`` imports.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from radialrouter.learning.judge import RUBRIC, RUBRIC_VERSION, Grade, JudgeError, judge_messages, parse_grade
from radialrouter.ledger.store import Ledger
from radialrouter.serve.budgets import cost_usd
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.upstream import Upstream


async def grade(config: ServeConfig, judge: str, rows: list[dict[str, Any]], concurrency: int = 4,
                transport: httpx.AsyncBaseTransport | None = None) -> list[Grade]:
    """Grade ``rows`` (decision rows with ``prompt`` and ``response``) with pool LLM ``judge``."""
    llm = config.llm(judge)
    upstream = Upstream(config, transport)
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> Grade:
        body = {"messages": judge_messages(row["prompt"], row["response"]), "temperature": 0, "max_tokens": 200}
        async with gate:
            try:
                resp = await upstream.send(judge, body, stream=False)
            except httpx.HTTPError as exc:
                return Grade(row["request_id"], None, "", 0.0, f"transport: {type(exc).__name__}")
        if resp.status_code != 200:
            return Grade(row["request_id"], None, "", 0.0, f"http_{resp.status_code}")
        cost = 0.0
        try:
            data = resp.json()
            usage = data.get("usage") or {}
            cost = cost_usd(llm, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            score, reason = parse_grade(data["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return Grade(row["request_id"], None, "", cost, str(exc)[:200])
        return Grade(row["request_id"], score, reason, cost)

    try:
        return list(await asyncio.gather(*(one(r) for r in rows)))
    finally:
        await upstream.aclose()


def label_ledger(ledger: str | Path, config: ServeConfig, judge: str, sample: int | None = None, seed: int = 0,
                 concurrency: int = 4, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    """Grade (a seeded sample of) the answered requests this judge has not graded yet; store the grades."""
    from radialrouter.learning.ledger_data import ledger_name, read_ledger

    if judge not in {llm.name for llm in config.llms}:
        raise ValueError(f"--judge {judge!r} is not in the config's pool {[llm.name for llm in config.llms]}")
    decisions, feedback = read_ledger(ledger)
    source = f"judge:{judge}"
    done = {f["request_id"] for f in feedback if f["source"] == source}
    answered = [d for d in decisions if d.get("status") == "ok" and d.get("llm")]
    rows = [d for d in answered if d.get("prompt") and d.get("response") and d["request_id"] not in done]
    if not rows:
        missing = sum(1 for d in answered if not (d.get("prompt") and d.get("response")))
        if missing:
            raise ValueError(f"{ledger_name(ledger)}: {missing} answered requests have no stored text: judge labels "
                             "need ledger.log_prompts and ledger.log_responses turned on in the serving config")
        return {"graded": 0, "failed": 0, "cost_usd": 0.0, "judge": judge, "rubric_version": RUBRIC_VERSION}
    if sample is not None and sample < len(rows):
        pick = np.random.default_rng(seed).choice(len(rows), size=sample, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    grades = asyncio.run(grade(config, judge, rows, concurrency, transport))
    store = Ledger(ledger)
    try:
        for g in grades:
            if g.score is not None:
                store.record_feedback(g.request_id, source, g.score, ts=time.time(), meta={
                    "judge": judge, "rubric_version": RUBRIC_VERSION, "cost_usd": g.cost_usd, "reason": g.reason})
    finally:
        store.close()
    failed = [g for g in grades if g.score is None]
    return {"graded": len(grades) - len(failed), "failed": len(failed), "judge": judge,
            "rubric_version": RUBRIC_VERSION, "cost_usd": float(sum(g.cost_usd for g in grades)),
            "errors": sorted({g.error for g in failed if g.error})[:5],
            "mean_score": float(np.mean([g.score for g in grades if g.score is not None])) if len(failed) < len(grades)
            else None}


__all__ = ["RUBRIC", "RUBRIC_VERSION", "Grade", "JudgeError", "grade", "judge_messages", "label_ledger",
           "parse_grade"]
