"""The serving policy as a probability distribution, and optional exploration.

Off-policy evaluation and partial-label training need, for every logged request, the probability with which the
serving policy picked the LLM it picked (its *propensity*) and the distribution over the other candidates. A plain
router is deterministic: probability 1 for its pick, 0 for every other candidate — a log of it says nothing about
LLMs it never picks. ``router.explore`` makes the policy stochastic, ε-greedy or a softmax over the router's own
scores, for some client keys or trade-offs only if wished, and every draw is logged with its probabilities.

Candidates and the choice are logged in the router's LLM names (``router_llm``), so a router trained from the log
has the names of the one that served and drops into the same config.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the gateway passes its config and routing results in; nothing of it is imported at run time
    from radialrouter.serve.config import ExploreConfig, ServeConfig
    from radialrouter.serve.routing import RouteResult


@dataclass(frozen=True)
class PolicyLog:
    """What the ledger stores about one routing draw (router LLM names)."""

    choice: str
    propensity: float
    candidates: list[str]
    probs: list[float]
    explore: str  # "off", "epsilon:0.1", "softmax:0.05"


def policy_distribution(ranking_scores: list[float], method: str, epsilon: float, temperature: float) -> np.ndarray:
    """Probabilities over the ranked candidates (best first) of the serving policy."""
    k = len(ranking_scores)
    if method == "epsilon":
        probs = np.full(k, epsilon / k)
        probs[0] += 1.0 - epsilon
        return probs
    if method == "softmax":
        s = np.asarray(ranking_scores, dtype=np.float64) / temperature
        s = s - s.max()
        e = np.exp(s)
        return e / e.sum()
    probs = np.zeros(k)
    probs[0] = 1.0
    return probs


class Explorer:
    """Applies ``router.explore`` to a routing result: draws the LLM to call, puts it first in the fallback order
    (the rest keeps the router's ranking) and returns the `PolicyLog` for the ledger. Thread-safe."""

    def __init__(self, config: ServeConfig) -> None:
        self.config: ExploreConfig = config.router.explore
        self._router_name = {llm.name: llm.router_name for llm in config.llms}
        self._rng = np.random.default_rng(self.config.seed)
        self._lock = threading.Lock()

    def active(self, client: str, mode: str | None) -> bool:
        c = self.config
        return (c.method != "off" and (not c.keys or client in c.keys)
                and (not c.tradeoffs or (mode or "") in c.tradeoffs))

    def apply(self, result: RouteResult, client: str, mode: str | None) -> RouteResult:
        ranking = list(result.ranking)
        method = self.config.method if self.active(client, mode) else "off"
        if len(ranking) < 2:
            method = "off"
        scores = [result.scores.get(name, 0.0) for name in ranking]
        if method == "softmax" and not all(math.isfinite(s) for s in scores):
            method = "epsilon"  # never happens for finite router scores; keeps the draw defined if it does
        probs = policy_distribution(scores, method, self.config.epsilon, self.config.temperature)
        if method == "off":
            pick, label = 0, "off"
        else:
            with self._lock:
                pick = int(self._rng.choice(len(ranking), p=probs))
            label = f"{method}:{self.config.epsilon if method == 'epsilon' else self.config.temperature:g}"
        order = [ranking[pick]] + [name for i, name in enumerate(ranking) if i != pick]
        names = [self._router_name.get(name, name) for name in ranking]
        log = PolicyLog(choice=names[pick], propensity=float(probs[pick]), candidates=names,
                        probs=[round(float(p), 12) for p in probs], explore=label)
        return replace(result, llm=order[0], ranking=order, policy=log)


__all__ = ["Explorer", "PolicyLog", "policy_distribution"]
