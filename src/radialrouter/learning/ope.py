"""Off-policy evaluation: what would a new router have scored on the traffic another policy served?

For each logged request i the logging policy called LLM a_i with probability p_i (its propensity) and got label
r_i and cost c_i; the new (deterministic) policy would call π(x_i). With w_i = 1[π(x_i) = a_i] / p_i:

- IPS:   V = mean(w_i · y_i) — unbiased when every LLM the new policy picks had p > 0 under the logging policy.
- SNIPS: V = Σ w_i y_i / Σ w_i — self-normalised: slightly biased, much lower variance.
- DR:    V = mean(ŷ(x_i, π(x_i)) + w_i · (y_i − ŷ(x_i, a_i))) — doubly robust with a model ŷ of quality (and
  cost): unbiased if either the propensities or the model are right, and it still says something (the model's
  guess) where overlap is missing.

y is quality, cost (USD per 1,000 queries) and Score = quality − λ·cost. Intervals are percentile bootstrap
intervals over requests (the same resamples for every estimator and policy, so differences are paired).
Overlap diagnostics: the share of requests where the new policy picks an LLM the logging policy could not pick
(p = 0: no estimator but DR can say anything there, and DR only through its model), the number of requests where
the two policies agree, and the effective sample size (Σw)²/Σw². When overlap is too thin `evaluate` warns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radialrouter.core.objective import COST_SCALE
from radialrouter.learning.ledger_data import LoggedTraffic

ESTIMATORS = ("ips", "snips", "dr")
METRICS = ("quality", "cost", "score")
#: Below this effective sample size (or share of requests) the estimates are reported with a warning.
MIN_ESS, MIN_ESS_SHARE = 30.0, 0.02


@dataclass
class OPEResult:
    """Point estimates and (1 − alpha) bootstrap intervals per estimator and metric, with overlap diagnostics."""

    n: int
    lam: float
    estimates: dict[str, dict[str, dict[str, float]]]  # estimator → metric → {value, low, high}
    diagnostics: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # estimator → (B,) bootstrap Scores

    @property
    def reliable(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "lam": self.lam, "estimates": self.estimates, "diagnostics": self.diagnostics,
                "warnings": self.warnings, "reliable": self.reliable}


def _terms(t: LoggedTraffic, actions: np.ndarray, q_hat: np.ndarray | None, c_hat: np.ndarray | None,
           lam: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per request, for each estimator, numerator and denominator terms of each metric (stacked: quality, cost,
    score); the estimate on a resample is Σ count·num / Σ count·den."""
    n = len(t)
    rows = np.arange(n)
    p = t.propensity
    match = actions == t.action
    w = np.where(match, 1.0 / np.maximum(p, 1e-12), 0.0)
    y = np.stack([t.reward, t.cost * COST_SCALE])
    y = np.concatenate([y, (y[0] - lam * y[1])[None]])  # (3, n)
    ones = np.ones(n)
    out = {"ips": (w * y, np.broadcast_to(ones, y.shape)), "snips": (w * y, np.broadcast_to(w, y.shape))}
    if q_hat is not None:
        c = c_hat if c_hat is not None else np.broadcast_to(t.cost[:, None], q_hat.shape)
        c = np.asarray(c, dtype=np.float64) * COST_SCALE
        model_new = np.stack([q_hat[rows, actions], c[rows, actions]])
        model_logged = np.stack([q_hat[rows, t.action], c[rows, t.action]])
        model_new = np.concatenate([model_new, (model_new[0] - lam * model_new[1])[None]])
        model_logged = np.concatenate([model_logged, (model_logged[0] - lam * model_logged[1])[None]])
        out["dr"] = (model_new + w * (y - model_logged), np.broadcast_to(ones, y.shape))
    return out


def evaluate(traffic: LoggedTraffic, actions: np.ndarray, *, lam: float, q_hat: np.ndarray | None = None,
             c_hat: np.ndarray | None = None, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
             counts: np.ndarray | None = None) -> OPEResult:
    """Estimate the new policy's quality, cost (USD per 1,000 queries) and Score at ``lam`` on the labelled logged
    requests. ``actions``: the LLM index it picks per request; ``q_hat`` / ``c_hat``: (n, m) predicted quality and
    cost (USD per query) for DR (without ``q_hat`` DR is left out). ``counts``: bootstrap resample counts (B, n) to
    share across policies (see `bootstrap_counts`)."""
    t = traffic
    if not len(t) or not np.isfinite(t.reward).all():
        raise ValueError("off-policy evaluation needs labelled requests only (use traffic.labelled())")
    actions = np.asarray(actions, dtype=np.int64)
    if actions.shape != (len(t),):
        raise ValueError(f"actions has shape {actions.shape}, expected ({len(t)},)")
    counts = bootstrap_counts(len(t), n_boot, seed) if counts is None else counts
    terms = _terms(t, actions, q_hat, c_hat, lam)
    estimates: dict[str, dict[str, dict[str, float]]] = {}
    samples: dict[str, np.ndarray] = {}
    for name, (num, den) in terms.items():
        point = num.sum(1) / np.maximum(den.sum(1), 1e-12)
        boot = (counts @ num.T) / np.maximum(counts @ den.T, 1e-12)  # (B, 3)
        low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
        estimates[name] = {m: {"value": float(point[k]), "low": float(low[k]), "high": float(high[k])}
                           for k, m in enumerate(METRICS)}
        samples[name] = boot[:, 2]
    diag, warnings = overlap(t, actions)
    return OPEResult(n=len(t), lam=lam, estimates=estimates, diagnostics=diag, warnings=warnings, samples=samples)


def bootstrap_counts(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n) multinomial resample counts: row b says how often each request appears in resample b."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def overlap(t: LoggedTraffic, actions: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """Diagnostics of how much the log can say about ``actions``, and warnings when it is too little."""
    n = len(t)
    rows = np.arange(n)
    p_new = t.probs[rows, actions]
    match = actions == t.action
    w = np.where(match, 1.0 / np.maximum(t.propensity, 1e-12), 0.0)
    ess = float(w.sum() ** 2 / (w**2).sum()) if w.any() else 0.0
    unsupported = float((p_new <= 0).mean())
    diag = {"n": n, "matches": int(match.sum()), "match_share": float(match.mean()), "ess": ess,
            "unsupported_share": unsupported, "min_propensity": float(t.propensity.min()),
            "max_weight": float(w.max()) if n else 0.0}
    warnings = []
    if unsupported > 0:
        warnings.append(f"overlap: on {unsupported:.0%} of the requests the new policy picks an LLM the logging "
                        "policy could not pick (probability 0: no exploration there); IPS and SNIPS cannot see "
                        "those requests and DR relies on its quality model alone — turn on router.explore")
    if ess < max(MIN_ESS, MIN_ESS_SHARE * n):
        warnings.append(f"overlap: effective sample size {ess:.0f} of {n} requests (the policies agree on "
                        f"{int(match.sum())}); too few to say much — log more traffic or explore more")
    return diag, warnings


def policy_actions(router: Any, traffic: LoggedTraffic, x: Any, lam: float | None = None) -> np.ndarray:
    """The LLM index ``router`` picks for each logged request (among that request's candidates), at ``lam`` or
    each request's own λ; in ``traffic.llms`` order."""
    cols = [router.llms_.index(name) if name in router.llms_ else -1 for name in traffic.llms]
    if min(cols) < 0:
        missing = [n for n, c in zip(traffic.llms, cols) if c < 0]
        raise ValueError(f"the router does not know the logged LLM(s) {missing}")
    out = np.zeros(len(traffic), np.int64)
    lams = np.full(len(traffic), lam) if lam is not None else traffic.lam
    for value in np.unique(lams):
        rows = np.flatnonzero(lams == value)
        mask = np.zeros((len(rows), len(router.llms_)), bool)
        mask[:, cols] = traffic.candidates[rows]
        picked = router.predict(x[rows], lam=float(value), candidates=mask)
        inverse = {c: j for j, c in enumerate(cols)}
        out[rows] = [inverse[int(c)] for c in picked]
    return out


def quality_model(router: Any, x: np.ndarray, llms: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
    """The router's own (n, m) predicted quality, when it has a quality model (mlp, mf, knn …; None otherwise —
    RadialRouter outputs a distribution, not qualities), and its predicted costs (USD per query); columns in
    ``llms`` order."""
    cols = [router.llms_.index(name) for name in llms]
    x = np.asarray(x, dtype=np.float32)
    cost = np.asarray(router.predict_costs(x), dtype=np.float64)[:, cols]
    if hasattr(router, "_quality"):
        return np.asarray(router._quality(x))[:, cols], cost
    if hasattr(router, "_neighbour_means"):
        return np.asarray(router._neighbour_means(x)[0])[:, cols], cost
    return None, cost


__all__ = ["ESTIMATORS", "METRICS", "OPEResult", "bootstrap_counts", "evaluate", "overlap", "policy_actions",
           "quality_model"]
