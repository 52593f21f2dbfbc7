"""From the serving decision log to learning data: logged bandit feedback and a partially labelled dataset.

A deployment sees one answer per request — the routed LLM's — and at best a rating of it. `logged_traffic` reads the
decision log (through `read_ledger`, the one place that knows where it lives: a SQLite file or PostgreSQL) and keeps the
requests that can teach something without bias: answered (status ``ok``) by the LLM the policy drew (no fallback: a
fallback's answer came from an LLM with an unknown propensity), with the propensity and candidates logged, and a label —
the client's feedback, or a judge's grade (`radialrouter label`). `to_partial_dataset` turns them into a
`RoutingDataset` whose quality matrix holds that one label per row and NaN elsewhere (the per-cell mask is
``np.isfinite(quality)``); the unobserved costs are imputed (see there), since costs are needed by every router.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radialrouter.data.dataset import DataError, RoutingDataset

#: Label sources, in order of preference when a request has several.
LABEL_SOURCES = ("client", "judge")


def ledger_name(target: str | Path) -> str:
    """How to show a decision log in messages and saved metadata: a path as given, a URL without its password."""
    text = str(target)
    if "://" not in text:
        return text
    import sqlalchemy as sa

    try:
        return sa.make_url(text).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return text.split("://", 1)[0] + "://…"


def read_ledger(target: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(decision rows, feedback rows) of a decision log — a SQLite file (opened read-only) or the ``postgresql://``
    URL of a shared one (`ledger.url`) — oldest first. Offline tools (ope, train --from-ledger, label) read the log
    only here, through the serving schema (`radialrouter.ledger.schema`)."""
    import sqlalchemy as sa

    from radialrouter.ledger.schema import decisions as decisions_table
    from radialrouter.ledger.schema import feedback as feedback_table

    text, shown = str(target), ledger_name(target)
    if "://" in text:
        from radialrouter.ledger.store import make_engine

        engine = make_engine(text, pool_size=1)
    else:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such decision log")
        engine = sa.create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            if "decisions" not in tables:
                raise DataError(f"{shown}: not a radialrouter decision log (no decisions table)")
            # Only the columns this log has (a log from an older release lacks the newer ones: they read as absent).
            have = {c["name"] for c in sa.inspect(conn).get_columns("decisions")}
            cols = [c for c in decisions_table.columns if c.name in have]
            rows = [dict(r._mapping) for r in conn.execute(sa.select(*cols).order_by(decisions_table.c.ts))]
            labels = ([dict(r._mapping) for r in conn.execute(sa.select(feedback_table).order_by(feedback_table.c.ts))]
                      if "feedback" in tables else [])
    except sa.exc.OperationalError as exc:
        reason = " ".join(str(exc.orig or exc).split())
        raise DataError(f"cannot read the decision log at {shown}: {reason}") from None
    except sa.exc.DatabaseError as exc:
        raise DataError(f"{shown}: not a radialrouter decision log ({' '.join(str(exc.orig or exc).split())})") \
            from None
    finally:
        engine.dispose()
    return rows, labels


@dataclass
class LoggedTraffic:
    """Logged bandit feedback: per request the candidates, the logging policy's distribution over them, the LLM
    it drew (``action``), the label of that LLM's answer (NaN: none) and its cost. LLM names are the router's."""

    request_ids: np.ndarray  # (n,)
    prompts: np.ndarray  # (n,) routed text
    llms: list[str]
    candidates: np.ndarray  # (n, m) bool
    probs: np.ndarray  # (n, m) logging probabilities (0 outside the candidates)
    action: np.ndarray  # (n,) index of the LLM called
    reward: np.ndarray  # (n,) quality label in [0, 1], NaN when the request has none
    cost: np.ndarray  # (n,) USD of that request
    lam: np.ndarray  # (n,) the trade-off it was routed at
    router_version: np.ndarray  # (n,)
    label_source: np.ndarray  # (n,) "client", "judge:<llm>" or ""

    def __len__(self) -> int:
        return len(self.action)

    @property
    def propensity(self) -> np.ndarray:
        return self.probs[np.arange(len(self)), self.action]

    def labelled(self) -> LoggedTraffic:
        """Only the requests with a label."""
        return self.subset(np.isfinite(self.reward))

    def subset(self, rows: np.ndarray) -> LoggedTraffic:
        rows = np.asarray(rows)
        kw = {k: getattr(self, k)[rows] for k in ("request_ids", "prompts", "candidates", "probs", "action", "reward",
                                                  "cost", "lam", "router_version", "label_source")}
        return LoggedTraffic(llms=self.llms, **kw)


def _labels(feedback: list[dict[str, Any]], sources: Sequence[str]) -> dict[str, tuple[float, str]]:
    """request id → (score, source), the most preferred source winning (then the latest)."""
    rank = {s: i for i, s in enumerate(sources)}
    best: dict[str, tuple[int, float, str]] = {}
    for f in feedback:
        kind = str(f["source"]).split(":", 1)[0]
        if kind not in rank or f["score"] is None:
            continue
        r = rank[kind]
        if f["request_id"] not in best or r <= best[f["request_id"]][0]:
            best[f["request_id"]] = (r, float(f["score"]), str(f["source"]))
    return {rid: (score, src) for rid, (_, score, src) in best.items()}


def logged_traffic(decisions: list[dict[str, Any]], feedback: list[dict[str, Any]], *,
                   llms: Sequence[str] | None = None, sources: Sequence[str] = LABEL_SOURCES,
                   require_prompts: bool = True) -> LoggedTraffic:
    """The usable requests of a decision log (see the module docstring). ``llms`` fixes the LLM columns (e.g. the
    serving router's pool); by default every LLM ever a candidate, in order of first appearance."""
    labels = _labels(feedback, sources)
    usable, skipped = [], {"no_policy_log": 0, "fallback_or_failed": 0, "no_prompt": 0}
    for d in decisions:
        if d.get("choice") is None or d.get("candidates") is None or d.get("policy_probs") is None:
            skipped["no_policy_log"] += 1
        elif d.get("status") != "ok" or d.get("fallback") or json.loads(d.get("attempts") or "[]"):
            skipped["fallback_or_failed"] += 1
        elif require_prompts and not d.get("prompt"):
            skipped["no_prompt"] += 1
        else:
            usable.append(d)
    if not usable:
        reasons = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
        hint = " (turn on ledger.log_prompts: learning needs the routed text)" if skipped["no_prompt"] else ""
        raise DataError(f"the decision log has no usable request ({len(decisions)} rows: {reasons or 'none'}){hint}")
    names = list(llms) if llms is not None else list(dict.fromkeys(
        n for d in usable for n in json.loads(d["candidates"])))
    col = {n: j for j, n in enumerate(names)}
    n, m = len(usable), len(names)
    candidates, probs = np.zeros((n, m), bool), np.zeros((n, m))
    action = np.zeros(n, np.int64)
    reward, cost, lam = np.full(n, np.nan), np.zeros(n), np.zeros(n)
    source = np.full(n, "", dtype=object)
    for i, d in enumerate(usable):
        cands, p = json.loads(d["candidates"]), json.loads(d["policy_probs"])
        unknown = [c for c in cands + [d["choice"]] if c not in col]
        if unknown:
            raise DataError(f"decision {d['request_id']}: LLM(s) {unknown} are not among {names}")
        for c, pc in zip(cands, p):
            candidates[i, col[c]], probs[i, col[c]] = True, float(pc)
        action[i] = col[d["choice"]]
        cost[i] = float(d["cost_usd"] or 0.0)
        lam[i] = float(d["lam"] or 0.0)
        if d["request_id"] in labels:
            reward[i], source[i] = labels[d["request_id"]]
    return LoggedTraffic(
        request_ids=np.asarray([d["request_id"] for d in usable], dtype=object),
        prompts=np.asarray([d.get("prompt") or "" for d in usable], dtype=object), llms=names,
        candidates=candidates, probs=probs, action=action, reward=reward, cost=cost, lam=lam,
        router_version=np.asarray([d.get("router_version") or "" for d in usable], dtype=object),
        label_source=source)


def impute_costs(action: np.ndarray, cost: np.ndarray, m: int, prior: np.ndarray | None = None) -> np.ndarray:
    """(n, m) costs from one observed cost per row: LLM j's mean observed cost times the row's size factor (its
    observed cost over the called LLM's mean), since cost scales with the tokens every LLM would read and write.
    LLMs never called take ``prior`` (e.g. the serving router's mean costs), or the mean of all observed costs."""
    cost = np.maximum(np.asarray(cost, dtype=np.float64), 0.0)
    mean = np.array([cost[action == j].mean() if (action == j).any() else np.nan for j in range(m)])
    fill = prior if prior is not None else np.full(m, cost.mean() if len(cost) else 0.0)
    mean = np.where(np.isfinite(mean) & (mean > 0), mean, np.asarray(fill, dtype=np.float64))
    factor = np.where(mean[action] > 0, cost / np.maximum(mean[action], 1e-18), 1.0)
    out = factor[:, None] * mean[None, :]
    out[np.arange(len(action)), action] = cost
    return out


def to_partial_dataset(traffic: LoggedTraffic, prior_cost: np.ndarray | None = None,
                       source: str = "ledger") -> RoutingDataset:
    """A `RoutingDataset` of the labelled requests: quality known for the called LLM only (NaN elsewhere), costs
    observed for it and imputed for the others (`impute_costs`). Split ``train``."""
    t = traffic.labelled()
    if not len(t):
        raise DataError("no logged request has a label: collect feedback (POST /v1/feedback) or judge labels "
                        "(radialrouter label) first")
    m = len(t.llms)
    quality = np.full((len(t), m), np.nan)
    quality[np.arange(len(t)), t.action] = np.clip(t.reward, 0.0, 1.0)
    return RoutingDataset.from_arrays(
        prompts=t.prompts.tolist(), quality=quality, llms=t.llms, cost=impute_costs(t.action, t.cost, m, prior_cost),
        tasks=["traffic"] * len(t), split=["train"] * len(t), ids=t.request_ids.tolist(), source=source)


def label_mask(data: RoutingDataset) -> np.ndarray:
    """(n, m) True where a quality label is known (partially labelled data holds NaN elsewhere)."""
    return np.isfinite(data.quality)


def concat_datasets(first: RoutingDataset, second: RoutingDataset) -> RoutingDataset:
    """Rows of both (same LLMs, same order required): e.g. full-information rows plus logged partial ones."""
    if tuple(first.llms) != tuple(second.llms):
        missing = sorted(set(second.llms) - set(first.llms))
        if missing or set(first.llms) != set(second.llms):
            raise DataError(f"the data sets have different LLMs: {list(first.llms)} vs {list(second.llms)}")
        second = second.select_llms(list(first.llms))
    out = RoutingDataset.from_arrays(
        prompts=np.concatenate([first.prompts, second.prompts]).tolist(),
        quality=np.concatenate([first.quality, second.quality]), llms=first.llms,
        cost=np.concatenate([first.cost, second.cost]), tasks=np.concatenate([first.tasks, second.tasks]).tolist(),
        split=np.concatenate([first.split, second.split]).tolist(),
        ids=np.concatenate([first.ids, second.ids]).tolist(), source=f"{first.source}+{second.source}")
    if first.embeddings is not None and second.embeddings is not None:
        out = out.with_embeddings(np.concatenate([first.embeddings, second.embeddings]), first.embedding_encoder)
    return out


__all__ = ["LABEL_SOURCES", "LoggedTraffic", "concat_datasets", "impute_costs", "label_mask", "ledger_name",
           "logged_traffic", "read_ledger", "to_partial_dataset"]
