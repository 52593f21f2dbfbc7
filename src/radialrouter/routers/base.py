"""The router interface every method implements, and the save/load plumbing they share.

Conventions (scikit-learn + Hugging Face): the constructor stores hyperparameters only; ``fit`` learns and sets
attributes ending in ``_``; ``predict_scores`` gives an (n_queries, n_llms) array where higher is better at a given
λ; ``predict`` turns it into one LLM index per query (ties to the cheaper LLM); ``route`` returns `Decision`
objects for people and servers. A router directory holds ``config.json``, ``pool.json``, ``encoder.json``,
``training.json`` and ``model.safetensors`` — never a pickle (an ensemble adds its members' directories under
``members/``, see `Router._save_parts`). ``config.json`` records the weights' sha256, and
loading checks the directory first (`check_router_dir`) so a damaged one is one clear error, not a traceback.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import struct
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from radialrouter.core.objective import (
    COST_SCALE,
    SCENARIOS,
    argmax_cheapest,
    is_quality_only,
    rank_cheapest_first,
    resolve_lam,
    tradeoff_presets,
)
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers.errors import RouterError

if TYPE_CHECKING:  # the encoder module imports torch (seconds): loaded only when a router needs an encoder
    from radialrouter.core.encoders import QueryEncoder

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
_FIX = "save it again with save_pretrained (`radialrouter train ... --out DIR`) or restore the directory"
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
Queries = "str | Sequence[str] | np.ndarray | RoutingDataset"
R = TypeVar("R", bound="Router")


class MissingCellsWarning(UserWarning):
    """A router that cannot learn with missing quality cells was trained on the complete rows only; the message
    says which router and how many rows were left out."""


class LamRangeWarning(UserWarning):
    """``route`` was asked for a λ above what the router was trained on; it routed at the largest trained λ."""


@dataclass
class Decision:
    """One routing decision: the chosen LLM, the full ranking and why. ``expected_cost_usd`` is USD for this one
    query (the unit of the CLI's JSON and the server's metadata); ``λ`` is in quality points per USD per 1,000."""

    llm: str
    ranking: list[str]
    scores: dict[str, float]
    probabilities: dict[str, float] | None
    expected_cost_usd: float
    lam: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, field names as above."""
        return asdict(self)

    @property
    def expected_cost(self) -> float:
        """Earlier name of ``expected_cost_usd`` (USD per query), kept for existing callers."""
        return self.expected_cost_usd


@dataclass
class ContextBatch:
    """A context-aware router's input: the query vectors and each query's context (a category such as the task or
    the calling application; ``None``: not known). Its length is the number of queries."""

    x: np.ndarray
    context: np.ndarray  # (n,) object: str or None

    def __len__(self) -> int:
        return len(self.x)


def query_contexts(queries: Any, context: Any, n: int) -> np.ndarray:
    """Each query's context: ``context`` (one value for every query, or one per query), else a dataset's task
    labels, else unknown (``None``)."""
    if context is None:
        if isinstance(queries, RoutingDataset):
            return np.asarray(queries.tasks, dtype=object)
        return np.full(n, None, dtype=object)
    if isinstance(context, str):
        return np.full(n, context, dtype=object)
    values = np.asarray(list(context), dtype=object)
    if len(values) != n:
        raise RouterError(f"context: {len(values)} values for {n} queries (give one per query, or one string)")
    bad = [v for v in values if v is not None and not isinstance(v, str)]
    if bad:
        raise RouterError(f"context: values must be strings or None; got {type(bad[0]).__name__} {bad[0]!r}")
    return values


@dataclass
class Outcomes:
    """What a router's decisions realise on labelled queries: the evaluation's only input."""

    weights: np.ndarray  # (n, m): one-hot choices, or a distribution (Random's expectation)
    perf: np.ndarray  # (n,) quality obtained
    cost: np.ndarray  # (n,) USD paid (a cascade pays for every LLM it called)

    @classmethod
    def of_choices(cls, data: RoutingDataset, choice: np.ndarray) -> Outcomes:
        """Outcomes of calling LLM ``choice[i]`` (an index) for query ``i`` of ``data``. A choice whose quality
        is missing is an error (route among `observed_candidates`), never a NaN in a metric."""
        rows = np.arange(len(data))
        weights = np.zeros((len(data), len(data.llms)))
        weights[rows, choice] = 1.0
        perf = data.quality[rows, choice]
        if not np.isfinite(perf).all():
            i = int(np.flatnonzero(~np.isfinite(perf))[0])
            raise RouterError(f"query {i + 1} ({data.ids[i]}) was routed to {data.llms[int(choice[i])]!r}, whose "
                              "quality on it is missing: evaluate with candidates=observed_candidates(data)")
        return cls(weights, perf, data.cost[rows, choice])


def observed_candidates(data: RoutingDataset) -> np.ndarray | None:
    """The candidate mask that makes every query of ``data`` route among its observed LLMs (``None`` when every
    cell is observed: no restriction)."""
    return data.observed if data.has_missing else None


def masked(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``scores`` with the non-candidates (``mask`` False) at −inf; ``mask`` None: every LLM a candidate."""
    return scores if mask is None else np.where(mask, scores, -np.inf)


class Router(ABC):
    """Base class: subclasses implement ``_fit`` and ``_scores`` (and ``_state``/``_load_state`` if they learn
    weights). Set ``uses_embeddings = False`` for routers that read labels or tasks instead of query vectors, and
    ``lam_at_fit = True`` for routers trained for the single λ given by their ``lam`` hyperparameter."""

    name: ClassVar[str] = ""
    uses_embeddings: ClassVar[bool] = True
    lam_at_fit: ClassVar[bool] = False
    #: True for routers whose loss skips unknown quality cells (NaN: partially labelled data, e.g. logged traffic
    #: where only the called LLM's answer was rated); others train on imputed labels (`radialrouter.learning.partial`).
    #: (A property where it depends on hyperparameters: RadialRouter with objective="quality".)
    partial_labels: ClassVar[bool] = False
    #: How the router learns from data where *some* quality cells are missing (an LLM without a result on some
    #: queries): ``"masked"`` — its training skips the missing cells (every `partial_labels` router, and routers
    #: whose targets are taken over each query's observed LLMs); ``"complete-rows"`` — it is trained on the rows
    #: where every LLM is observed, with a `MissingCellsWarning`. Either way a dataset without a single complete row
    #: is refused unless ``partial_labels`` (that is partially labelled traffic: see `radialrouter.learning.partial`).
    missing_cells: ClassVar[str] = "complete-rows"
    #: Whether the router's own model selection (early stopping on ``val``) routes each validation query among its
    #: observed LLMs, so that ``val`` keeps its rows with missing cells (else only complete rows are kept — none at
    #: all when the pools differ per query, as in `radialrouter.data.combine`).
    selects_among_observed: ClassVar[bool] = False
    #: True for routers whose pick is a uniform random draw (`random`): evaluations report the expectation over
    #: the draw (strong/weak APGR 0.5, expected outcomes), never one sample of it.
    random_pick: ClassVar[bool] = False

    #: Subclasses that use embeddings take ``encoder=None`` in their constructor and store it here.
    encoder: QueryEncoder | None = None

    @property
    def uses_context(self) -> bool:
        """Whether the router reads each query's context (task, application …) next to its text: its `_scores`
        then get a `ContextBatch`. The others ignore a context they are given."""
        return False

    # ------------------------------------------------------------------ hyperparameters
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, as stored in ``config.json``."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k not in {"self", "encoder"}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def fit(self: R, train: RoutingDataset, val: RoutingDataset | None = None) -> R:
        """Learn from ``train`` (all its rows); ``val`` is only for model selection and early stopping."""
        if len(train) == 0:
            raise RouterError("cannot fit on an empty dataset")
        fit_train, how = train, None
        if train.has_missing:
            unknown = int((~train.observed).sum())
            complete = train.complete_rows
            how = {"method": "masked", "rows": len(train), "complete_rows": int(complete.sum()),
                   "missing_cells": unknown}
            masked = self.partial_labels or self.missing_cells == "masked"
            if masked and not self.partial_labels and not (train.observed.sum(1) >= 2).any():
                raise RouterError(f"{type(self).__name__}: {unknown} quality cells are unknown (NaN) and no training "
                                  "query has the quality of two LLMs (one label per query, as in logged traffic); "
                                  "train it with radialrouter.learning.partial.fit_partial (imputes them), or use a "
                                  "router that learns from single labels: mlp, mf, knn, or radial with "
                                  "objective='quality'")
            if not masked:  # it trains on the complete rows only
                if not complete.any():
                    raise RouterError(f"{type(self).__name__} needs every LLM's quality on at least some training "
                                      f"queries, and {unknown} cells are unknown (NaN) with no complete row; train it "
                                      "with radialrouter.learning.partial.fit_partial (imputes them), or use a router "
                                      "that skips them: mlp, mf, knn, or radial with objective='quality'")
                fit_train = train.subset(complete)
                how = {"method": "complete rows", "rows": int(complete.sum()),
                       "left_out_rows": len(train) - int(complete.sum()), "missing_cells": unknown}
                warnings.warn(
                    f"{type(self).__name__} ({self.name}) cannot train with missing quality cells: trained on its "
                    f"{how['rows']} complete training rows of {len(train)} ({how['left_out_rows']} rows with a "
                    "missing cell left out). Routers that train with the mask: mlp, mf, knn, cosine, hybrid, "
                    "radial, best-single, task-best",
                    MissingCellsWarning, stacklevel=2)
        if val is not None and val.has_missing and not self.selects_among_observed:
            # Model selection compares routers' choices by their labels: only rows where every choice has one.
            val = val.subset(val.complete_rows)
            val = val if len(val) else None
        self.llms_ = list(train.llms)
        self.mean_cost_ = train.mean_cost.astype(np.float64)
        self.default_lam_ = self.trained_default_lam()
        # The named trade-offs on this pool's price scale (quality-only data: the one, performance-first).
        self.presets_ = tradeoff_presets(train.quality, train.cost)
        train = fit_train
        if self.uses_embeddings and train.embedding_encoder:
            from radialrouter.core.encoders import QueryEncoder

            if self.encoder is None:
                self.encoder = QueryEncoder.from_identity(train.embedding_encoder)
            else:
                self.encoder.check_compatible(train.embedding_encoder)
        start = time.perf_counter()
        self._fit(train, val)
        if how is not None:
            self.training_ = {**getattr(self, "training_", {}), "missing_cells": how}
        self.training_ = {
            "data_fingerprint": train.fingerprint(),
            "data_source": train.source,
            "n_train": len(train),
            "n_val": 0 if val is None else len(val),
            "fit_seconds": round(time.perf_counter() - start, 3),
            **getattr(self, "training_", {}),
        }
        return self

    @abstractmethod
    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None: ...

    @abstractmethod
    def _scores(self, x: Any, lam: float) -> np.ndarray:
        """(n, m) scores, higher is better; ``x`` is embeddings, or the dataset when ``uses_embeddings`` is
        False."""

    def _proba(self, x: Any, lam: float) -> np.ndarray | None:
        """Per-LLM probabilities when the method has them (softmax routers); ``None`` otherwise."""
        return None

    # ------------------------------------------------------------------ inputs
    def _check_fitted(self) -> None:
        if not hasattr(self, "llms_"):
            raise RouterError(f"{type(self).__name__} is not fitted: call fit() or from_pretrained() first")

    def get_encoder(self) -> QueryEncoder:
        if self.encoder is None:
            from radialrouter.core.encoders import QueryEncoder

            self.encoder = QueryEncoder()
        return self.encoder

    def _inputs(self, queries: Any) -> Any:
        """Embeddings for embedding routers (reusing a dataset's cached ones), the dataset otherwise."""
        if not self.uses_embeddings:
            if not isinstance(queries, RoutingDataset):
                raise RouterError(f"{type(self).__name__} reads labels or tasks: pass a RoutingDataset")
            return queries
        if isinstance(queries, RoutingDataset):
            if queries.embeddings is not None:
                if queries.embedding_encoder and self.encoder is not None:
                    self.encoder.check_compatible(queries.embedding_encoder)
                return queries.embeddings
            queries = queries.prompts.tolist()
        if isinstance(queries, np.ndarray) and queries.dtype.kind == "f":
            return np.atleast_2d(queries).astype(np.float32, copy=False)
        if isinstance(queries, str):
            queries = [queries]
        return self.get_encoder().encode(list(queries))

    def _route_inputs(self, queries: Any, context: Any = None) -> Any:
        """`_inputs`, wrapped with each query's context (`query_contexts`) for a router that `uses_context`."""
        x = self._inputs(queries)
        return ContextBatch(x, query_contexts(queries, context, len(x))) if self.uses_context else x

    def lam_range(self) -> tuple[float, float]:
        """The λ values this router was trained to route at; `route` clamps λ above the top (with a
        `LamRangeWarning`) instead of extrapolating. Unbounded unless a subclass trained on a bounded range."""
        return 0.0, float("inf")

    def trained_default_lam(self) -> float:
        """The default λ that `fit` gives (the training λ for single-λ routers, else 0): what a default λ goes back
        to when a calibrated one stops being valid (e.g. after the pool changed)."""
        return float(getattr(self, "lam", 0.0) or 0.0) if self.lam_at_fit else 0.0

    def resolve_lam(self, lam: float | str | None) -> float:
        """A number, or a trade-off name resolved with this router's `presets_` (set at fit on the training data's
        price scale; the paper's values for routers saved before presets existed). On a quality-only pool (every
        cost 0) any λ is 0: Score is quality whatever λ, so λ must change no pick (a λ-conditioned network would
        otherwise route differently on an input that means nothing there)."""
        resolved = resolve_lam(lam, self.default_lam_, getattr(self, "presets_", None) or SCENARIOS)
        return 0.0 if self.quality_only else resolved

    @property
    def quality_only(self) -> bool:
        """Whether this router's pool has no costs (every LLM's mean cost 0): λ then plays no part."""
        cost = getattr(self, "mean_cost_", None)
        memo = getattr(self, "_quality_only", None)  # (the costs it was computed from, the answer): route asks it
        if memo is None or memo[0] is not cost:  # a pool change assigns a new array
            memo = self._quality_only = (cost, cost is not None and is_quality_only(cost))
        return memo[1]

    def _route_lam(self, lam: float | str | None) -> float:
        lam = self.resolve_lam(lam)
        low, high = self.lam_range()
        if lam > high:
            warnings.warn(f"λ = {lam:g} is above the largest λ this router was trained on ({high:g}); routing at "
                          f"λ = {high:g} (valid range {low:g} to {high:g}; train with a larger --lam-max for more, "
                          "lam_max=... in Python)",
                          LamRangeWarning, stacklevel=3)
            return high
        return lam

    def _candidate_mask(self, candidates: Any, n: int) -> np.ndarray | None:
        if candidates is None:
            return None
        if isinstance(candidates, np.ndarray) and candidates.dtype == bool:
            shape = (n, len(self.llms_))
            mask = candidates if candidates.shape == shape else np.broadcast_to(candidates, shape)
        else:
            unknown = [c for c in candidates if c not in self.llms_]
            if unknown:
                raise RouterError(f"unknown candidate LLM(s) {unknown}; this router knows {self.llms_}")
            mask = np.broadcast_to(np.isin(self.llms_, list(candidates)), (n, len(self.llms_)))
        if not mask.any(axis=1).all():
            raise RouterError("every query needs at least one candidate LLM")
        return mask

    # ------------------------------------------------------------------ prediction
    def predict_scores(self, queries: Any, lam: float | str | None = None, candidates: Any = None,
                       context: Any = None) -> np.ndarray:
        """(n_queries, n_llms) scores at trade-off ``lam``; higher is better, non-candidates are −inf. ``context``:
        each query's context (one string for all, or one per query; a dataset's tasks by default), read by routers
        that `uses_context` only."""
        self._check_fitted()
        lam = self.resolve_lam(lam)
        x = self._route_inputs(queries, context)
        return self._masked_scores(x, lam, self._candidate_mask(candidates, len(x)))

    def _masked_scores(self, x: Any, lam: float, mask: np.ndarray | None) -> np.ndarray:
        """`_scores` with non-candidates at −inf (overridden by routers whose network must not see them)."""
        return masked(np.asarray(self._scores(x, lam), dtype=np.float64), mask)

    def _scores_and_proba(self, x: Any, lam: float, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """`_masked_scores` and `_proba` renormalised over the candidates (overridden where both come from one
        forward pass)."""
        scores, proba = self._masked_scores(x, lam, mask), self._proba(x, lam)
        if proba is not None and mask is not None:
            proba = np.where(mask, proba, 0.0)
            proba = proba / proba.sum(axis=1, keepdims=True)
        return scores, proba

    def _route_arrays(self, x: Any, lam: float, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None,
                                                                                  np.ndarray]:
        """What `route` reads: `_scores_and_proba` and `_costs` (overridden where one pass gives both)."""
        scores, proba = self._scores_and_proba(x, lam, mask)
        return scores, proba, self._costs(x)

    def predict_costs(self, queries: Any, context: Any = None) -> np.ndarray:
        """Expected USD cost per query of each LLM; the pool's mean cost unless the method predicts it."""
        self._check_fitted()
        return self._costs(self._route_inputs(queries, context))

    def _costs(self, x: Any) -> np.ndarray:
        """`predict_costs` on `_inputs` (overridden by routers that predict per-query cost)."""
        return np.broadcast_to(self.mean_cost_, (len(x), len(self.llms_)))

    def predict(self, queries: Any, lam: float | str | None = None, candidates: Any = None,
                context: Any = None) -> np.ndarray:
        """Index of the chosen LLM per query (ties to the cheaper LLM)."""
        return argmax_cheapest(self.predict_scores(queries, lam, candidates, context), self.mean_cost_)

    def route(self, queries: Any, lam: float | str | None = None, candidates: Any = None,
              context: Any = None) -> list[Decision]:
        """Route a batch: per query the chosen LLM, the ranking, per-LLM scores (and probabilities) and the
        expected cost. ``candidates`` (LLM names) restricts the pool for this call without retraining. λ above
        `lam_range` is clamped to its top with a `LamRangeWarning` (the decision's ``lam`` says what was used).
        ``context``: as in `predict_scores`."""
        self._check_fitted()
        lam = self._route_lam(lam)
        x = self._route_inputs(queries, context)
        scores, proba, costs = self._route_arrays(x, lam, self._candidate_mask(candidates, len(x)))
        order = rank_cheapest_first(scores, self.mean_cost_)
        out = []
        # Plain Python lists: per-element NumPy indexing would dominate batch-1 routing time.
        finite, score_rows = np.isfinite(scores).tolist(), scores.tolist()
        proba_rows = None if proba is None else proba.tolist()
        for i, row in enumerate(order.tolist()):
            keep = [j for j in row if finite[i][j]]
            if not keep:  # NaN scores: a corrupted model or a NaN query vector, never an IndexError
                raise RouterError(f"query {i + 1}: no candidate LLM has a finite score (corrupted weights, or a "
                                  "NaN query embedding)")
            out.append(Decision(
                llm=self.llms_[keep[0]],
                ranking=[self.llms_[j] for j in keep],
                scores={self.llms_[j]: score_rows[i][j] for j in keep},
                probabilities=None if proba_rows is None else {self.llms_[j]: proba_rows[i][j] for j in keep},
                expected_cost_usd=float(costs[i, keep[0]]),
                lam=lam,
            ))
        return out

    def outcomes(self, data: RoutingDataset, lam: float) -> Outcomes:
        """Realised quality and cost of this router's decisions on labelled data; a query with missing quality
        cells is routed among its observed LLMs (`observed_candidates`), so every choice has a label."""
        return Outcomes.of_choices(data, self.predict(data, lam, observed_candidates(data)))

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays to save in ``model.safetensors`` (learned weights)."""
        return {}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        """Restore what ``_state`` and ``_extra_state`` saved."""

    def _extra_state(self) -> dict[str, Any]:
        """Small JSON-able fitted state (e.g. a chosen index) saved in ``config.json``."""
        return {}

    def _save_parts(self, directory: Path) -> None:
        """Write what lives beside ``model.safetensors`` in sub-folders (an ensemble's member routers, each saved
        by its own `save_pretrained`); nothing for a router whose state fits `_state` and `_extra_state`."""

    def _load_parts(self, directory: Path) -> None:
        """Read what `_save_parts` wrote; called by `from_pretrained` after `_load_state`, with the encoder set."""

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the router to ``directory`` (created if needed) as safetensors + JSON."""
        from safetensors.numpy import save_file

        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"router": self.name})
        config = {
            "router": self.name,
            "format_version": FORMAT_VERSION,
            "params": self.get_params(),
            "state": self._extra_state(),
            # Checked by from_pretrained: corrupted or swapped weights are refused instead of routing nonsense.
            "weights_sha256": _sha256(directory / WEIGHTS_FILE),
        }
        pool = {
            "llms": self.llms_,
            "mean_cost_usd": [float(c) for c in self.mean_cost_],
            "mean_cost_per_1k": [float(c * COST_SCALE) for c in self.mean_cost_],
            "default_lam": self.default_lam_,
            "presets": getattr(self, "presets_", dict(SCENARIOS)),
        }
        _write_json(directory / "config.json", config)
        _write_json(directory / "pool.json", pool)
        _write_json(directory / "training.json", getattr(self, "training_", {}))
        if self.uses_embeddings:
            encoder = self.get_encoder()
            _write_json(directory / "encoder.json", {**encoder.identity, "precision": encoder.precision})
        self._save_parts(directory)
        return directory

    @classmethod
    def from_pretrained(cls: type[R], directory: str | Path, encoder: QueryEncoder | None = None) -> R:
        """Load a router saved by ``save_pretrained``; the class comes from ``config.json``.

        With ``encoder`` given, it must match the one the router was trained with (weights hash, width, pooling,
        truncation); without it, that encoder is rebuilt from ``encoder.json``."""
        from safetensors.numpy import load_file

        from radialrouter.routers.registry import router_class

        directory = Path(directory)
        config = check_router_dir(directory)
        klass = router_class(config["router"])
        if cls is not Router and not issubclass(klass, cls):
            raise RouterError(f"{directory} holds a {config['router']!r} router, not a {cls.__name__}")
        try:
            router = klass(**config.get("params", {}))
        except TypeError as exc:
            raise RouterError(f"{directory / 'config.json'}: field 'params' does not fit a {config['router']!r} "
                              f"router ({exc}); {_FIX}") from None
        pool = _read_json(directory / "pool.json")
        try:
            router.llms_ = list(pool["llms"])
            router.mean_cost_ = np.asarray(pool["mean_cost_usd"], dtype=np.float64)
            router.default_lam_ = float(pool.get("default_lam", 0.0))
            router.presets_ = {str(k): float(v) for k, v in pool.get("presets", SCENARIOS).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RouterError(f"{directory / 'pool.json'}: field {exc} is missing or invalid; {_FIX}") from None
        if router.mean_cost_.shape != (len(router.llms_),):
            raise RouterError(f"{directory / 'pool.json'}: field 'mean_cost_usd' has {router.mean_cost_.size} "
                              f"values for {len(router.llms_)} LLMs; {_FIX}")
        router.training_ = _read_json(directory / "training.json") if (directory / "training.json").exists() else {}
        if klass.uses_embeddings:
            from radialrouter.core.encoders import QueryEncoder

            saved = _read_json(directory / "encoder.json")
            encoder = encoder or QueryEncoder.from_identity(saved)
            encoder.check_compatible(saved)
            router.encoder = encoder
        tensors = load_file(str(directory / WEIGHTS_FILE))
        for key, value in tensors.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise RouterError(f"{directory / WEIGHTS_FILE}: tensor {key!r} holds NaN or infinite values (the "
                                  f"weights are corrupted); {_FIX}")
        try:
            router._load_state(tensors, config.get("state", {}))
        except RouterError as exc:
            raise RouterError(f"{directory}: {exc}") from None
        except (KeyError, ValueError, RuntimeError, IndexError, TypeError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            what = f"has no tensor {exc}" if isinstance(exc, KeyError) else f"does not fit config.json ({detail})"
            raise RouterError(f"{directory / WEIGHTS_FILE}: {what}; {_FIX}") from None
        router._load_parts(directory)
        return router


def check_router_dir(directory: str | Path) -> dict[str, Any]:
    """Check a saved router directory before building anything from it and return its ``config.json``: the files
    are present, the safetensors header is intact and its byte ranges fit the file (a truncated copy), and the
    weights hash recorded at save matches (directories saved before the hash was recorded skip that check).
    Tensor names and shapes are checked against the config when the router loads them."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RouterError(f"{directory}: no such router directory")
    if not (directory / "config.json").exists():
        raise RouterError(f"{directory}: not a router directory (no config.json)")
    config = _read_json(directory / "config.json")
    if not isinstance(config, dict) or not isinstance(config.get("router"), str):
        raise RouterError(f"{directory / 'config.json'}: field 'router' is missing; {_FIX}")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise RouterError(f"{directory}: format version {config['format_version']} is newer than this package; "
                          "upgrade radialrouter")
    from radialrouter.routers.registry import router_class

    needed = ["pool.json", WEIGHTS_FILE] + (["encoder.json"] if router_class(config["router"]).uses_embeddings else [])
    missing = [name for name in needed if not (directory / name).exists()]
    if missing:
        raise RouterError(f"{directory}: {', '.join(missing)} missing (an incomplete copy?); {_FIX}")
    _check_safetensors(directory / WEIGHTS_FILE)
    expected = config.get("weights_sha256")
    if expected is not None and _sha256(directory / WEIGHTS_FILE) != expected:
        raise RouterError(f"{directory / WEIGHTS_FILE}: sha256 differs from the one recorded in config.json at save "
                          f"(the weights were changed or corrupted); {_FIX}")
    return config


def _check_safetensors(path: Path) -> None:
    """The header's length, JSON and tensor byte ranges against the file's size: what a truncated or overwritten
    file gets wrong, reported before safetensors raises its own error."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise RouterError(f"{path}: truncated ({size} bytes, not even a safetensors header); {_FIX}")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise RouterError(f"{path}: truncated: the header says {n} bytes, the file has {size - 8}; {_FIX}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RouterError(f"{path}: not a safetensors file (its header is not JSON); {_FIX}") from None
    if not isinstance(header, dict):
        raise RouterError(f"{path}: not a safetensors file (its header is not a JSON object); {_FIX}")
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(v) for v in info["data_offsets"])
            count = int(np.prod(info["shape"], dtype=np.int64))
            width = _DTYPE_BYTES.get(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise RouterError(f"{path}: tensor {name!r} has a malformed header entry; {_FIX}") from None
        if end > data:
            raise RouterError(f"{path}: truncated: tensor {name!r} needs bytes up to {end}, the file holds {data} "
                              f"bytes of data; {_FIX}")
        if width is not None and end - start != count * width:
            raise RouterError(f"{path}: tensor {name!r}: {end - start} bytes for shape {info['shape']} of "
                              f"{info['dtype']}; {_FIX}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RouterError(f"{path}: cannot be read as JSON: {exc}") from exc


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
