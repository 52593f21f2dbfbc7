"""The serving policy as a probability distribution, and optional exploration.

Off-policy evaluation and partial-label training need, for every logged request, the probability with which the
serving policy picked the LLM it picked (its *propensity*) and the distribution over the other candidates. A plain
router is deterministic: probability 1 for its pick, 0 for every other candidate — a log of it says nothing about
LLMs it never picks. ``router.explore`` makes the policy stochastic — ε-greedy, a softmax over the router's own
scores, or SquareCB's inverse-gap weighting (`squarecb_probs`), which explores the candidates the router rates close
to its pick and rarely the ones it rates far below, so it serves better while it learns (optionally with a uniform
floor, `with_floor`, so that every candidate keeps some labels coming) — for some client keys or trade-offs only if
wished, and every draw is logged with its probabilities.

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
    explore: str  # "off", "epsilon:0.1", "softmax:0.05", "squarecb:447.2", "squarecb:447.2+floor:0.1"


def squarecb_gamma(queries_seen: int, gamma: float | None = None, gamma_scale: float = 10.0,
                   gamma_exponent: float = 0.5) -> float:
    """SquareCB's γ: fixed when ``gamma`` is given, else VW's schedule ``gamma_scale · t^gamma_exponent`` over the
    queries seen so far (t ≥ 1) — exploration fades as the model it relies on sees more data."""
    if gamma is not None:
        return float(gamma)
    return float(gamma_scale * max(int(queries_seen), 1) ** gamma_exponent)


def with_floor(probs: np.ndarray, floor: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """``(1 − floor)·probs + floor/m`` per row, m the row's ``allowed`` actions (default: all); others stay 0.

    Why: SquareCB's γ grows with t, so an action the model rates clearly worse is soon drawn almost never and its
    label never comes to correct that rating; a uniform floor keeps every action at least ``floor / m``, for a
    serving cost bounded by ``floor`` times the average gap. ``floor`` 0 returns ``probs`` unchanged (the same
    array)."""
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"exploration floor must be in [0, 1); got {floor!r}")
    if floor == 0.0:
        return probs
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    ok = np.ones(p.shape, bool) if allowed is None else np.atleast_2d(np.asarray(allowed, bool))
    m = ok.sum(1, keepdims=True).astype(np.float64)
    out = np.where(ok, (1.0 - floor) * p + floor / np.maximum(m, 1.0), 0.0)
    return out.reshape(np.shape(probs))


def squarecb_probs(scores: np.ndarray, gamma: float | np.ndarray, best: np.ndarray | None = None,
                   floor: float = 0.0) -> np.ndarray:
    """Inverse-gap weighting (SquareCB, Foster & Rakhlin 2020; VW's ``--squarecb``) over rows of scores (higher is
    better; −inf: never drawn): each non-best action gets ``1 / (m + γ·(score_best − score_a))``, the best the rest.

    ``gamma``: one γ, or one per row. ``best`` (per row) is the greedy action, default the row's argmax; m counts
    the finite scores. Gaps below 0 (a ``best`` that is not the argmax) count as 0. Why: the probability of a
    worse action shrinks with how much worse the model thinks it is, so exploration spends little on actions that
    are clearly bad. ``floor`` ε (default 0: plain SquareCB): the distribution mixed with the uniform one over the
    finite scores, ``(1 − ε)·p + ε/m`` (`with_floor`), so that no action's labels dry up as γ grows."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n = len(s)
    gamma = np.asarray(gamma, dtype=np.float64).reshape(-1, 1) if np.ndim(gamma) else float(gamma)
    rows = np.arange(n)
    finite = np.isfinite(s)
    if best is None:
        best = np.where(finite, s, -np.inf).argmax(1)
    best = np.asarray(best, dtype=np.int64).reshape(n)
    m = finite.sum(1, keepdims=True).astype(np.float64)
    gap = np.maximum(s[rows, best][:, None] - np.where(finite, s, 0.0), 0.0)
    probs = np.where(finite, 1.0 / (m + gamma * gap), 0.0)
    probs[rows, best] = 0.0
    probs[rows, best] = 1.0 - probs.sum(1)
    return with_floor(probs, floor, finite)


def policy_distribution(ranking_scores: list[float], method: str, epsilon: float, temperature: float,
                        gamma: float = 0.0, floor: float = 0.0) -> np.ndarray:
    """Probabilities over the ranked candidates (best first) of the serving policy (``gamma``: SquareCB's γ;
    ``floor``: SquareCB's uniform exploration floor ε, ``(1 − ε)·p_SquareCB + ε/K``; 0: none)."""
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
    if method == "squarecb":
        return squarecb_probs(np.asarray(ranking_scores, dtype=np.float64), gamma, best=np.zeros(1, np.int64),
                              floor=floor)[0]
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
        self._seen = 0  # exploring draws so far (SquareCB's γ schedule counts them; restarts at 0 with the gateway)

    def active(self, client: str, mode: str | None) -> bool:
        c = self.config
        return (c.method != "off" and (not c.keys or client in c.keys)
                and (not c.tradeoffs or (mode or "") in c.tradeoffs))

    def apply(self, result: RouteResult, client: str, mode: str | None) -> RouteResult:
        ranking = list(result.ranking)
        names = [self._router_name.get(name, name) for name in ranking]
        method = self.config.method if self.active(client, mode) else "off"
        if method == "off" or len(ranking) < 2:  # the router's pick, propensity 1 (every request: no NumPy)
            probs, pick, label = [1.0] + [0.0] * (len(ranking) - 1), 0, "off"
        else:
            scores = [result.scores.get(name, 0.0) for name in ranking]
            if method in ("softmax", "squarecb") and not all(math.isfinite(s) for s in scores):
                method = "epsilon"  # never happens for finite router scores; keeps the draw defined if it does
            c = self.config
            with self._lock:
                self._seen += 1
                gamma = squarecb_gamma(self._seen, c.gamma, c.gamma_scale, c.gamma_exponent)
                drawn = policy_distribution(scores, method, c.epsilon, c.temperature, gamma, c.floor)
                pick = int(self._rng.choice(len(ranking), p=drawn))
            probs = [float(p) for p in drawn]
            setting = {"epsilon": c.epsilon, "softmax": c.temperature, "squarecb": gamma}[method]
            label = f"{method}:{setting:g}" + (f"+floor:{c.floor:g}" if method == "squarecb" and c.floor else "")
        order = [ranking[pick]] + [name for i, name in enumerate(ranking) if i != pick]
        log = PolicyLog(choice=names[pick], propensity=probs[pick], candidates=names,
                        probs=[round(p, 12) for p in probs], explore=label)
        return replace(result, llm=order[0], ranking=order, policy=log)


__all__ = ["Explorer", "PolicyLog", "policy_distribution", "squarecb_gamma", "squarecb_probs", "with_floor"]
