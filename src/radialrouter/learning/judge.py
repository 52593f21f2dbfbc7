"""Judge labels: an LLM from the serving pool grades logged answers, for traffic that got no client feedback.

``radialrouter label --ledger L --config serve.yaml --judge <pool LLM> [--sample N]`` sends each sampled request's
routed text and the answer it got to the judge through the server's own upstream client (same base URL, key,
timeouts and price table), with the rubric below, and stores the grade (0–1) in the decision log's ``feedback``
table as source ``judge:<LLM>``, with the judge, the rubric version, the grade's reason and what the call cost.
It needs ``ledger.log_prompts`` and ``ledger.log_responses`` (both off by default: they store user text).

A judge is a noisy, biased labeller — it may prefer long answers, or answers in its own style, and it is not the
client. Client feedback wins over a judge grade where both exist (`radialrouter.learning.ledger_data.LABEL_SOURCES`).

This module holds the rubric and reads the judge's reply; the calls through the server's upstream client
(`grade`, `label_ledger`) are in `radialrouter.serve.judging`, since they need the gateway.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

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


__all__ = ["RUBRIC", "RUBRIC_VERSION", "Grade", "JudgeError", "judge_messages", "parse_grade"]
