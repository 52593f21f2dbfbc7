"""Stacked ensemble: several routers' per-LLM quality (and cost) predictions, combined with weights fitted on
validation data, then the usual decision ``argmax q̂ − λ·cost``."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import utility
from radialrouter.data.dataset import RoutingDataset
from radialrouter.data.splits import with_validation
from radialrouter.routers._common import macro_score, require_embeddings
from radialrouter.routers.base import ContextBatch, Router, RouterError, observed_candidates
from radialrouter.routers.registry import router_class

#: Members when none are named: the quality predictors that `train --router auto` tries.
DEFAULT_MEMBERS = ("mlp", "knn", "radial", "equi")
MEMBERS_DIR = "members"
#: The stacking row of the context prior (`context_table`), next to the member routers'.
CONTEXT = "context"


class EnsembleWeightsWarning(UserWarning):
    """The validation data could not fit the stacking weights (no query with two observed LLMs, or every member's
    weight came out 0): the ensemble averages its members with equal weights."""


def member_quality(member: Router, x: np.ndarray) -> np.ndarray:
    """(n, m) quality predictions of a fitted member, up to a constant per query (what the ensemble stacks).

    Quality regressors (``mlp``, ``mf``, ``equi``) give their predicted quality, ``knn`` its neighbour means —
    without the ``pessimism`` they may apply when routing on partial labels. ``radial`` gives τ · its log-probability
    at λ = 0: its target is softmax(quality / τ), so that is quality plus a per-query constant (its own quality
    predictions with ``objective='quality'``, likewise shifted). Any other λ-free router: its scores at λ = 0,
    which are its predicted quality. Members see every LLM here (no candidate mask)."""
    if hasattr(member, "_quality"):
        return np.asarray(member._quality(x), dtype=np.float64)
    if hasattr(member, "_neighbour_means"):
        return np.asarray(member._neighbour_means(x)[0], dtype=np.float64)
    if hasattr(member, "_log_proba"):
        return float(member.tau) * np.asarray(member._log_proba(x, 0.0), dtype=np.float64)
    return np.asarray(member._masked_scores(x, 0.0, None), dtype=np.float64)


def context_table(quality: np.ndarray, contexts: np.ndarray,
                  prior: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per context value, each LLM's mean quality shrunk toward its overall mean: ``(Σ q + prior·q̄) / (n + prior)``
    over the rows of that context where the LLM is observed (a rare context borrows from the whole pool instead of
    trusting a handful of rows). Returns the context values, the (C, m) table and the overall means q̄ (m,): the
    row of a context that is unknown or not given."""
    observed = np.isfinite(quality)
    q = np.where(observed, quality, 0.0)
    overall = np.where(observed.any(0), q.sum(0) / np.maximum(observed.sum(0), 1), 0.0)
    names = list(dict.fromkeys(str(c) for c in contexts.tolist()))
    rows = [(q[contexts == name].sum(0) + prior * overall) / (observed[contexts == name].sum(0) + prior)
            for name in names]
    return names, np.stack(rows) if rows else np.zeros((0, quality.shape[1])), overall


def predicts_cost(member: Router) -> bool:
    """Whether the member predicts per-query cost (else it only knows each LLM's mean cost)."""
    return type(member)._costs is not Router._costs


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    if not len(b):
        return np.zeros(a.shape[1])
    return nnls(a, b)[0]


def fit_quality_weights(preds: np.ndarray, quality: np.ndarray, per_llm: bool) -> np.ndarray:
    """Non-negative stacking weights (K, m) for member predictions ``preds`` (K, n, m) against observed
    ``quality`` (n, m; NaN = unobserved, masked out).

    Least squares on quality *within each query*: every query's observed cells are centred on their mean, the
    members' predictions on the mean over the same cells, and the weights minimise the squared error of those
    differences. A decision compares LLMs on one query (``q̂_j − λ·cost_j``), so a per-query offset never changes
    it, while the scale of the differences is what λ trades against cost: this loss fits exactly what the decision
    uses, and lets members whose outputs are quality up to a per-query constant (``radial``) stack with the others.
    A query with one observed LLM says nothing about differences and weighs nothing. ``per_llm``: one weight per
    member and LLM instead of one per member. All-zero columns mean no fit (the caller falls back)."""
    k, n, m = preds.shape
    known = np.isfinite(quality)
    count = known.sum(1)
    rows = count >= 2
    if not rows.any():
        return np.zeros((k, m))
    known, count, y = known[rows], count[rows], np.nan_to_num(quality[rows])
    p = preds[:, rows]
    y_c = y - (y * known).sum(1, keepdims=True) / count[:, None]
    if per_llm:
        # feature (member k, LLM l) at cell (i, j): p_kil·[j = l] − mean over i's observed cells of the same
        feat = np.einsum("kil,jl->ijkl", p, np.eye(m)) - (p * known).transpose(1, 0, 2)[:, None] / count[:, None,
                                                                                                       None, None]
        feat = feat.reshape(len(y), m, k * m)
    else:
        feat = (p - (p * known).sum(2, keepdims=True) / count[:, None]).transpose(1, 2, 0)  # (n, m, K)
    w = _nnls(feat[known], y_c[known])
    return w.reshape(k, m) if per_llm else np.repeat(w[:, None], m, axis=1)


def fit_cost_weights(preds: np.ndarray, cost: np.ndarray, mean_cost: np.ndarray, per_llm: bool) -> np.ndarray:
    """Non-negative weights (K, m) for member cost predictions ``preds`` (K, n, m) against the observed ``cost``,
    least squares on cost relative to each LLM's mean (an expensive LLM's dollars would otherwise decide alone)."""
    k, _, m = preds.shape
    scale = np.where(mean_cost > 0, mean_cost, 1.0)
    p, y = preds / scale, cost / scale
    known = np.isfinite(y) & np.isfinite(p).all(0)
    if per_llm:
        return np.stack([_nnls(p[:, known[:, j], j].T, y[known[:, j], j]) for j in range(m)], axis=1)
    return np.repeat(_nnls(p.transpose(1, 2, 0)[known], y[known])[:, None], m, axis=1)


class EnsembleRouter(Router):
    """Stacking over several routers (default: ``mlp``, ``knn``, ``radial``, ``equi``; set ``members`` and
    ``member_params``, e.g. ``{"mlp": {"steps": 500}}``). λ-free: ``score = Σ_k w_k·q̂_k − λ·COST_SCALE·ĉ``.

    * **Members** are fitted on the training data, each with its own defaults (``seed`` and ``steps`` are passed
      to members that take them, unless ``member_params`` sets them), and with the validation split for their own
      early stopping, as each is fitted alone. The weights are fitted on that split too: a handful of non-negative
      weights can overfit it far less than a network picks a checkpoint on it, and members fitted without their
      early stopping were measured worse than the ensemble gained (routerbench3, 3 seeds, Balance: 0.745 with
      members fitted on the training split alone, 0.784 with their validation; issue #23).
    * **Weights** are fitted on the validation split only: non-negative least squares of the members' quality
      predictions against the observed quality, within each query (`fit_quality_weights`; missing quality cells
      are masked). Squared error rather than a search for the weights with the best validation Score at the named
      trade-offs: it is smooth and convex (one exact solve, no grid), uses every labelled cell rather than one
      argmax per query (less noise on a few hundred validation queries), and serves every λ at once; the
      within-query centring makes it fit the differences between LLMs that decisions are made of. Non-negative:
      a member is used or ignored, never subtracted (a negative weight would fit noise between correlated
      members). ``per_llm=True`` fits one weight per member and LLM (more validation data needed).
    * **Cost**: members that predict per-query cost are combined the same way (non-negative least squares on cost
      relative to each LLM's mean); without one, each LLM's mean training cost.
    * **Context** (``context=True``): each query's context — the data's task column at training; at routing the
      ``context`` argument (the gateway's ``metadata``, batch ``--context``) — adds one more stacked row, the
      training mean quality of each LLM in that context (`context_table`, shrunk toward the pool's mean by
      ``context_prior`` pseudo-rows). Its weight is fitted with the members', so context counts as much as it
      predicts on validation; a query whose context is unknown or not given gets the pool's mean row (a constant
      that ranks like the best single LLM's).
    * **Without validation data** (``fit(train)``), ``val_fraction`` of the training queries (grouped by prompt,
      stratified by task, seeded by ``seed``) is held out for the weights and the members train on the rest; they
      are not refitted on the whole.

    Members must be λ-free routers on query embeddings (not per-λ ones, ``random`` or the references). Saved as one
    directory: the ensemble's files plus ``members/<i>-<name>/``, each member saved by its own `save_pretrained`.
    """

    name = "ensemble"
    missing_cells = "masked"  # each member handles missing cells its own way; the weight fit masks them
    selects_among_observed = True  # the weight fit keeps validation rows with missing cells (masked)

    def __init__(
        self,
        members: list[str] | tuple[str, ...] = DEFAULT_MEMBERS,
        member_params: dict[str, dict[str, Any]] | None = None,
        per_llm: bool = False,
        val_fraction: float = 0.2,
        steps: int | None = None,
        seed: int = 0,
        encoder: QueryEncoder | None = None,
        context: bool = False,
        context_prior: float = 10.0,
    ) -> None:
        self.members = list(members)
        self.member_params = dict(member_params or {})
        self.per_llm = per_llm
        self.val_fraction = val_fraction
        self.steps = steps
        self.seed = seed
        self.encoder = encoder
        self.context = context
        self.context_prior = context_prior

    @property
    def uses_context(self) -> bool:
        return bool(self.context)

    # ------------------------------------------------------------------ members
    def _check_members(self) -> None:
        if not self.members:
            raise RouterError("ensemble: give at least one member router")
        if len(set(self.members)) != len(self.members):
            raise RouterError(f"ensemble: member names must be unique; got {self.members}")
        unknown = sorted(set(self.member_params) - set(self.members))
        if unknown:
            raise RouterError(f"ensemble: member_params for {unknown}, which are not members {self.members}")
        if not 0 < self.val_fraction < 1:
            raise RouterError(f"ensemble: val_fraction must be in (0, 1); got {self.val_fraction}")
        if not self.context_prior >= 0:
            raise RouterError(f"ensemble: context_prior must be ≥ 0; got {self.context_prior}")

    def _make_member(self, name: str) -> Router:
        cls = router_class(name)
        if name == self.name or issubclass(cls, EnsembleRouter):
            raise RouterError("ensemble: an ensemble cannot be a member of an ensemble")
        accepted = set(inspect.signature(cls.__init__).parameters)
        params = dict(self.member_params.get(name, {}))
        for key, value in (("seed", self.seed), ("steps", self.steps)):
            if value is not None and key in accepted:
                params.setdefault(key, value)
        member = cls(**params)
        if not cls.uses_embeddings or cls.random_pick or getattr(member, "lam_at_fit", False) \
                or getattr(member, "encoder_mode", "frozen") != "frozen":
            raise RouterError(f"ensemble: member {name!r} must be a λ-free router on frozen query embeddings "
                              "(mlp, mf, knn, radial, equi …; not per-λ routers, random or the references)")
        member.encoder = self.encoder
        return member

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        self._check_members()
        require_embeddings(train, self)
        held_out = val is None or not len(val)
        if held_out:
            marked = with_validation(train.with_split(np.full(len(train), "train")), self.val_fraction, self.seed)
            train, val = marked.select("train"), marked.select("val")
            if not len(train) or not len(val):
                raise RouterError(f"ensemble: {len(train) + len(val)} training queries are too few to hold "
                                  f"{self.val_fraction:.0%} out for the weights; pass validation data")
        given, self._given_members = getattr(self, "_given_members", None), None
        if given is not None and not held_out:
            self.members_ = given
        else:
            self.members_ = [self._make_member(name) for name in self.members]
            for member in self.members_:
                member.fit(train, None if held_out else val)
        if self.context:
            if len(train.task_names) < 2:
                warnings.warn(f"ensemble: context=True, but the training data has one context value "
                              f"({train.task_names[0]!r}): name a task or context column (--task-column) for it "
                              "to tell queries apart", UserWarning, stacklevel=3)
            self.contexts_, self.context_quality_, self.context_default_ = context_table(
                train.quality, train.tasks, self.context_prior)
        xv = require_embeddings(val, self)
        quality_preds = self._stack(xv, val.tasks if self.context else None)
        fallback = None
        w = fit_quality_weights(quality_preds, val.quality, self.per_llm)
        dead = ~(w > 0).any(axis=0)  # LLMs for which no member got a weight
        if dead.any():
            fallback = ("no validation query has two observed LLMs" if not (val.observed.sum(1) >= 2).any()
                        else "every member's weight came out 0 for " + ", ".join(np.asarray(self.llms_)[dead]))
            warnings.warn(f"ensemble: {fallback}; averaging the members with equal weights there",
                          EnsembleWeightsWarning, stacklevel=3)
            w[:, dead] = 1.0 / w.shape[0]
        self.quality_weights_ = w
        combined = np.einsum("knm,km->nm", quality_preds, w)
        resid = (val.quality - combined)[val.observed]
        self.intercept_ = float(resid.mean()) if resid.size else 0.0  # a constant: decisions never depend on it
        self.cost_weights_ = self._fit_cost(xv, val)
        mask = observed_candidates(val)
        lams = list(self.presets_.values())

        def val_score(router: Router) -> float:  # routed on ``val`` itself: its embeddings (and tasks, as context)
            return float(np.mean([macro_score(router.predict(val, lam, mask), val, lam) for lam in lams]))

        self.training_ = {
            "members": self.members,
            "weights_fitted_on": (f"{len(val)} training queries held out ({self.val_fraction:g}, seed {self.seed})"
                                  if held_out else f"the validation split ({len(val)} queries)"),
            "quality_weights": {n: _plain(w[k]) for k, n in enumerate(self._rows())},
            "cost_weights": {n: _plain(self.cost_weights_[k]) for k, n in enumerate(self.members)},
            "equal_weights_fallback": fallback,
            "val_score": {**{n: val_score(m) for n, m in zip(self.members, self.members_)}, self.name: val_score(self)},
            "val_score_is": "mean macro Score over λ = " + ", ".join(f"{lam:g}" for lam in lams),
            "member_training": {n: m.training_ for n, m in zip(self.members, self.members_)},
        }

    def fit_on_members(self, members: list[Router], train: RoutingDataset, val: RoutingDataset) -> EnsembleRouter:
        """Stack routers already fitted on ``train`` (with ``val`` for their model selection, as `fit` would fit
        them): only the weights are fitted, on ``val``. For combining routers one has trained anyway (the bench
        reuses its own rows' routers), without fitting them again."""
        names = [m.name for m in members]
        if names != self.members:
            raise RouterError(f"ensemble: members {names} given for an ensemble of {self.members}")
        for member in members:
            self._make_member(member.name)  # the same checks as for members it fits itself
            if list(getattr(member, "llms_", [])) != list(train.llms):
                raise RouterError(f"ensemble: member {member.name!r} is not fitted on the LLMs {list(train.llms)}")
        if val is None or not len(val):
            raise RouterError("ensemble: fit_on_members needs the validation split the weights are fitted on")
        self._given_members = list(members)
        return self.fit(train, val)

    def _fit_cost(self, xv: np.ndarray, val: RoutingDataset) -> np.ndarray:
        """(K, m) cost weights: zero for members without a cost model, all zero when none has one (mean cost)."""
        k, m = len(self.members_), len(self.llms_)
        with_cost = [i for i, member in enumerate(self.members_) if predicts_cost(member)]
        weights = np.zeros((k, m))
        if not with_cost or self.quality_only:
            return weights
        preds = np.stack([self.members_[i]._costs(xv) for i in with_cost]).astype(np.float64)
        w = fit_cost_weights(preds, val.cost.astype(np.float64), self.mean_cost_, self.per_llm)
        w = np.where((w > 0).any(axis=0), w, 1.0 / len(with_cost))  # an LLM no fit explains: the members' mean
        weights[with_cost] = w
        return weights

    # ------------------------------------------------------------------ inference
    def _rows(self) -> list[str]:
        """Names of the stacked rows: the members, then the context prior when ``context``."""
        return [*self.members, *([CONTEXT] if self.context else [])]

    def _context_rows(self, context: np.ndarray | None, n: int) -> np.ndarray:
        """(n, m) training mean quality per query's context (the pool's mean where unknown or not given)."""
        index = {name: i for i, name in enumerate(self.contexts_)}
        table = np.vstack([self.context_quality_, self.context_default_[None]])
        if context is None:
            return np.broadcast_to(table[-1], (n, table.shape[1]))
        return table[[index.get(c, len(self.contexts_)) if c is not None else len(self.contexts_)
                      for c in context.tolist()]]

    def _stack(self, x: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """(rows, n, m) predictions to weigh: each member's (`member_quality`), then the context prior's."""
        preds = [member_quality(m, x) for m in self.members_]
        if self.context:
            preds.append(self._context_rows(context, len(x)))
        return np.stack(preds)

    @staticmethod
    def _split(x: Any) -> tuple[np.ndarray, np.ndarray | None]:
        return (x.x, x.context) if isinstance(x, ContextBatch) else (x, None)

    def _quality(self, x: Any) -> np.ndarray:
        """Combined predicted quality (n, m): the weighted members (and context prior) plus a constant."""
        x, context = self._split(x)
        return np.einsum("knm,km->nm", self._stack(x, context), self.quality_weights_) + self.intercept_

    def _costs(self, x: Any) -> np.ndarray:
        x = self._split(x)[0]
        if not self.cost_weights_.any():
            return np.broadcast_to(self.mean_cost_, (len(x), len(self.llms_)))
        used = [i for i in range(len(self.members_)) if self.cost_weights_[i].any()]
        preds = np.stack([self.members_[i]._costs(x) for i in used]).astype(np.float64)
        return np.einsum("knm,km->nm", preds, self.cost_weights_[used])

    def _scores(self, x: Any, lam: float) -> np.ndarray:
        return utility(self._quality(x), self._costs(x), lam)

    def set_inference_backend(self, backend: str = "auto", threads: int = 1) -> EnsembleRouter:
        """Pass the inference backend on to the members that have one (``radial``: ONNX Runtime or torch)."""
        for member in self.members_:
            if hasattr(member, "set_inference_backend"):
                member.set_inference_backend(backend, threads)
        return self

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """Member name (and ``context``) → its (m,) quality weights, one per LLM (equal across LLMs unless
        ``per_llm``)."""
        self._check_fitted()
        return {name: self.quality_weights_[k].copy() for k, name in enumerate(self._rows())}

    def predict_member_quality(self, queries: Any) -> dict[str, np.ndarray]:
        """Each member's (n, m) quality predictions as stacked (`member_quality`), for inspection."""
        self._check_fitted()
        x = self._inputs(queries)
        return {name: member_quality(m, x) for name, m in zip(self.members, self.members_)}

    # ------------------------------------------------------------------ persistence
    def _member_dirs(self) -> list[str]:
        return [f"{i}-{name}" for i, name in enumerate(self.members)]

    def _state(self) -> dict[str, np.ndarray]:
        state = {"quality_weights": self.quality_weights_, "cost_weights": self.cost_weights_,
                 "intercept": np.array([self.intercept_])}
        if self.context:
            state.update(context_quality=self.context_quality_, context_default=self.context_default_)
        return state

    def _extra_state(self) -> dict[str, Any]:
        return {"member_dirs": [f"{MEMBERS_DIR}/{d}" for d in self._member_dirs()],
                **({"contexts": self.contexts_} if self.context else {})}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        k, m = len(self.members), len(self.llms_)
        self.quality_weights_ = np.asarray(tensors["quality_weights"], dtype=np.float64)
        self.cost_weights_ = np.asarray(tensors["cost_weights"], dtype=np.float64)
        self.intercept_ = float(tensors["intercept"][0])
        for key, rows in (("quality_weights_", len(self._rows())), ("cost_weights_", k)):
            if getattr(self, key).shape != (rows, m):
                raise RouterError(f"tensor {key[:-1]!r} has shape {getattr(self, key).shape}, expected ({rows}, "
                                  f"{m}) for {self._rows()} and {m} LLMs")
        if self.context:
            self.contexts_ = [str(c) for c in extra.get("contexts", [])]
            self.context_quality_ = np.asarray(tensors["context_quality"], dtype=np.float64)
            self.context_default_ = np.asarray(tensors["context_default"], dtype=np.float64)
            if self.context_quality_.shape != (len(self.contexts_), m) or self.context_default_.shape != (m,):
                raise RouterError(f"tensor 'context_quality' has shape {self.context_quality_.shape}, expected "
                                  f"({len(self.contexts_)}, {m}) for the contexts in config.json and {m} LLMs")
        self.member_dirs_ = list(extra.get("member_dirs") or [f"{MEMBERS_DIR}/{d}" for d in self._member_dirs()])
        if len(self.member_dirs_) != k or any(".." in Path(d).parts or Path(d).is_absolute()
                                               for d in self.member_dirs_):
            raise RouterError(f"config.json: 'member_dirs' {self.member_dirs_} must be {k} folders inside the "
                              f"router directory, one per member of {self.members}")

    def _save_parts(self, directory: Path) -> None:
        for member, sub in zip(self.members_, self._member_dirs()):
            if member.uses_embeddings and member.encoder is None:
                member.encoder = self.get_encoder()  # one encoder identity for the ensemble and every member
            member.save_pretrained(directory / MEMBERS_DIR / sub)

    def _load_parts(self, directory: Path) -> None:
        members = []
        for name, sub in zip(self.members, self.member_dirs_):
            member = Router.from_pretrained(directory / sub, encoder=self.encoder)  # the ensemble's encoder, shared
            if member.name != name or list(member.llms_) != list(self.llms_):
                raise RouterError(f"{directory / sub}: holds a {member.name!r} router on {member.llms_}; the ensemble "
                                  f"expects {name!r} on {self.llms_}")
            members.append(member)
        self.members_ = members


def fit_reusing_members(router: Router, fitted: Mapping[str, Router], train: RoutingDataset,
                        val: RoutingDataset | None) -> Router:
    """``router.fit(train, val)`` — except for an ensemble with its default member settings whose members are all in
    ``fitted`` (routers of those names, seeded alike, fitted on the same ``train`` and ``val``): it stacks those
    fits (`EnsembleRouter.fit_on_members`, the fits it would make itself) instead of fitting them again. For
    comparisons that fit the members anyway (the bench's rows, ``auto``'s folds)."""
    if (isinstance(router, EnsembleRouter) and val is not None and len(val) and not router.member_params
            and router.steps is None and all(m in fitted for m in router.members)):
        return router.fit_on_members([fitted[m] for m in router.members], train, val)
    return router.fit(train, val)


def _plain(w: np.ndarray) -> float | list[float]:
    """One number when every LLM has the same weight, else the list (for training.json)."""
    w = np.asarray(w, dtype=np.float64)
    return round(float(w[0]), 6) if np.allclose(w, w[0]) else [round(float(v), 6) for v in w]


__all__ = ["DEFAULT_MEMBERS", "EnsembleRouter", "EnsembleWeightsWarning", "context_table", "fit_cost_weights",
           "fit_quality_weights", "fit_reusing_members", "member_quality"]
