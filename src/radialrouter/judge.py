"""Judge labels: an LLM from the serving pool grades logged answers, for traffic that got no client feedback.

``radialrouter label --ledger L --config serve.yaml --judge <pool LLM> [--sample N]`` sends each sampled request's
routed text and the answer it got to the judge through the server's own upstream client (same base URL, key,
timeouts and price table), with the rubric below, and stores the grade (0–1) in the decision log's ``feedback``
table as source ``judge:<LLM>``, with the judge, the rubric version, the grade's reason and what the call cost.
It needs ``ledger.log_prompts`` and ``ledger.log_responses`` (both off by default: they store user text).

A judge is a noisy, biased labeller — it may prefer long answers, or answers in its own style, and it is not the
client. Client feedback wins over a judge grade where both exist (`radialrouter.ledger_data.LABEL_SOURCES`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from radialrouter.serve.budgets import cost_usd
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.ledger import Ledger
from radialrouter.serve.upstream import Upstream

RUBRIC_VERSION = "1"
RUBRIC = """You grade an AI assistant's answer to a user's request. Judge only the answer, against the request:
correctness first (a wrong answer scores 0-2 however well written), then whether it does what was asked
(complete, on topic, follows explicit instructions), then clarity. Length is not a merit. Do not answer the
request yourself.

Scale: 10 = correct, complete and clear; 7 = correct with minor gaps; 4 = partly correct or incomplete;
1 = wrong or unhelpful; 0 = refuses without reason or is empty.

Reply with one JSON object and nothing else: {"score": <integer 0-10>, "reason": "<one sentence>"}"""


class JudgeError(ValueError):
    """The judge's reply could not be read as a grade."""


@dataclass
class Grade:
    request_id: str
    score: float | None  # in [0, 1]; None when grading failed
    reason: str
    cost_usd: float
    error: str | None = None


def judge_messages(prompt: str, response: str) -> list[dict[str, str]]:
    """The chat messages sent to the judge (the rubric, then the request and the answer, delimited)."""
    return [{"role": "system", "content": RUBRIC},
            {"role": "user", "content": f"<request>\n{prompt}\n</request>\n\n<answer>\n{response}\n</answer>"}]


def parse_grade(text: str) -> tuple[float, str]:
    """(score in [0, 1], reason) from the judge's reply: a JSON object with an integer ``score`` from 0 to 10."""
    match = re.search(r"\{.*\}", text or "", re.S)
    try:
        obj = json.loads(match.group(0)) if match else None
    except ValueError:
        obj = None
    score = obj.get("score") if isinstance(obj, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 10:
        raise JudgeError(f"the judge did not reply with a score from 0 to 10: {str(text)[:120]!r}")
    return float(score) / 10.0, str(obj.get("reason", ""))[:500]


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
    from radialrouter.ledger_data import ledger_name, read_ledger

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
