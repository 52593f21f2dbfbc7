"""`RoutingDataset`: the one in-memory form of routing data every router, metric and command works on."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from radialrouter.core.objective import COST_SCALE

SPLITS = ("train", "val", "test", "unsplit", "unused")


class DataError(ValueError):
    """Routing data that cannot be used as given; the message names the file, row, column or field."""


@dataclass(frozen=True)
class RoutingDataset:
    """Queries, their tasks, and for every candidate LLM its quality (0..1) and cost (USD per query).

    ``split`` labels each row ``train`` / ``val`` / ``test`` / ``unsplit`` (test-only, e.g. out-of-distribution
    tasks) / ``unused``. ``embeddings`` (optional) are query vectors from ``embedding_encoder``; they travel with
    every subset so a router never re-encodes.
    """

    prompts: np.ndarray
    tasks: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    llms: tuple[str, ...]
    split: np.ndarray
    ids: np.ndarray
    has_cost: bool = True
    source: str = ""
    embeddings: np.ndarray | None = None
    embedding_encoder: dict | None = field(default=None, compare=False)
    cost_model: str = ""  # how costs were estimated when the logs had none ("" = logged costs)
    #: Per LLM, the rows of the source file whose quality it has (before any row was excluded), and the number of
    #: rows read: the coverage `data inspect` reports.
    coverage: dict | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.llms)
        for name in ("tasks", "split", "ids"):
            if len(getattr(self, name)) != n:
                raise DataError(f"{name} has {len(getattr(self, name))} entries for {n} prompts")
        for name in ("quality", "cost"):
            if getattr(self, name).shape != (n, m):
                raise DataError(f"{name} has shape {getattr(self, name).shape}, expected ({n}, {m})")
        if self.embeddings is not None and len(self.embeddings) != n:
            raise DataError(f"embeddings has {len(self.embeddings)} rows for {n} prompts")
        if len(set(self.llms)) != m:
            raise DataError(f"LLM names are not unique: {list(self.llms)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        prompts: Sequence[str],
        quality: np.ndarray,
        llms: Sequence[str],
        cost: np.ndarray | None = None,
        tasks: Sequence[str] | None = None,
        split: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        source: str = "arrays",
    ) -> RoutingDataset:
        """Build a dataset from plain arrays (cost in USD per query; ``None`` means quality-only data)."""
        n = len(prompts)
        quality = np.asarray(quality, dtype=np.float64)
        return cls(
            prompts=np.asarray(list(prompts), dtype=object),
            tasks=np.asarray(list(tasks) if tasks is not None else ["default"] * n, dtype=object),
            quality=quality,
            cost=np.zeros_like(quality) if cost is None else np.asarray(cost, dtype=np.float64),
            llms=tuple(llms),
            split=np.asarray(list(split) if split is not None else ["unsplit"] * n, dtype=object),
            ids=np.asarray([str(i) for i in ids] if ids is not None else [str(i) for i in range(n)], dtype=object),
            has_cost=cost is not None,
            source=source,
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_llms(self) -> int:
        return len(self.llms)

    @property
    def task_names(self) -> list[str]:
        """Task names in order of first appearance."""
        return list(dict.fromkeys(self.tasks.tolist()))

    @property
    def observed(self) -> np.ndarray:
        """(n, m) bool: True where the LLM's quality on the query is known (not NaN)."""
        return np.isfinite(self.quality)

    @property
    def has_missing(self) -> bool:
        """Whether any quality cell is missing."""
        return not bool(self.observed.all())

    @property
    def complete_rows(self) -> np.ndarray:
        """(n,) bool: rows whose quality is known for every LLM."""
        return self.observed.all(axis=1)

    @property
    def mean_quality(self) -> np.ndarray:
        """Mean quality per LLM over the rows where it is observed (NaN for an LLM observed on none)."""
        known = self.observed
        counts = known.sum(axis=0)
        sums = np.where(known, self.quality, 0.0).sum(axis=0)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    @property
    def cost_per_1k(self) -> np.ndarray:
        """Cost in USD per 1,000 queries, the unit λ is expressed in."""
        return self.cost * COST_SCALE

    @property
    def mean_cost(self) -> np.ndarray:
        """Mean cost per LLM in USD per query."""
        return self.cost.mean(axis=0) if len(self) else np.zeros(self.n_llms)

    def subset(self, mask_or_index: np.ndarray) -> RoutingDataset:
        """Rows selected by a boolean mask or an index array (embeddings follow)."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            prompts=self.prompts[idx],
            tasks=self.tasks[idx],
            quality=self.quality[idx],
            cost=self.cost[idx],
            split=self.split[idx],
            ids=self.ids[idx],
            embeddings=None if self.embeddings is None else self.embeddings[idx],
        )

    def select(self, *splits: str) -> RoutingDataset:
        """Rows whose split is one of ``splits`` (e.g. ``ds.select("test", "unsplit")``)."""
        for s in splits:
            if s not in SPLITS:
                raise ValueError(f"unknown split {s!r}; expected one of {SPLITS}")
        return self.subset(np.isin(self.split, list(splits)))

    def select_tasks(self, tasks: Sequence[str]) -> RoutingDataset:
        unknown = sorted(set(tasks) - set(self.task_names))
        if unknown:
            raise DataError(f"unknown task(s) {unknown}; the dataset has {self.task_names}")
        return self.subset(np.isin(self.tasks, list(tasks)))

    def select_llms(self, llms: Sequence[str]) -> RoutingDataset:
        """Keep only the named LLMs (in the given order)."""
        unknown = [name for name in llms if name not in self.llms]
        if unknown:
            raise DataError(f"unknown LLM(s) {unknown}; the dataset has {list(self.llms)}")
        cols = [self.llms.index(name) for name in llms]
        return replace(self, quality=self.quality[:, cols], cost=self.cost[:, cols], llms=tuple(llms))

    def with_split(self, split: np.ndarray) -> RoutingDataset:
        return replace(self, split=np.asarray(split, dtype=object))

    def with_embeddings(self, embeddings: np.ndarray, encoder_identity: dict | None = None) -> RoutingDataset:
        return replace(self, embeddings=np.asarray(embeddings, dtype=np.float32), embedding_encoder=encoder_identity)

    def embed(self, encoder, progress: bool = True) -> RoutingDataset:
        """Attach query embeddings from ``encoder`` (a `QueryEncoder`; cached on disk, so cheap to repeat)."""
        return self.with_embeddings(encoder.encode(self.prompts.tolist(), progress=progress), encoder.identity)

    def fingerprint(self) -> str:
        """A short content hash (prompts, LLMs, quality, cost, split): provenance for reports and models."""
        h = hashlib.sha256()
        for arr in (self.prompts, self.tasks, self.split):
            h.update("\x1f".join(map(str, arr.tolist())).encode())
        h.update("\x1f".join(self.llms).encode())
        h.update(np.ascontiguousarray(self.quality).tobytes())
        h.update(np.ascontiguousarray(self.cost).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        """What `radialrouter data inspect` prints: sizes, tasks, and mean quality and cost per LLM."""
        splits = {s: int((self.split == s).sum()) for s in SPLITS if (self.split == s).any()}
        tasks = {}
        for task in self.task_names:
            mask = self.tasks == task
            tasks[task] = {s: int(((self.split == s) & mask).sum()) for s in splits if ((self.split == s) & mask).any()}
        return {
            "source": self.source,
            "n_queries": len(self),
            "n_llms": self.n_llms,
            "has_cost": self.has_cost,
            "complete_rows": int(self.complete_rows.sum()),
            "splits": splits,
            "tasks": tasks,
            "llms": [
                {
                    "llm": name,
                    "mean_quality": float(self.mean_quality[j]) if len(self) else float("nan"),
                    "observed_rows": int(self.observed[:, j].sum()),
                    "mean_cost_per_1k": float(self.cost_per_1k[:, j].mean()) if len(self) else float("nan"),
                    **({} if not self.coverage else {
                        "known_rows": self.coverage["known"][name], "coverage": self.coverage["known"][name]
                        / max(self.coverage["rows"], 1)}),
                }
                for j, name in enumerate(self.llms)
            ],
            "fingerprint": self.fingerprint(),
        }


def embed_together(encoder: Any, datasets: Sequence[RoutingDataset | None], progress: bool = True,
                   on_progress: Callable[[int], None] | None = None) -> list[RoutingDataset | None]:
    """Attach embeddings to several data sets (train, validation, test) with ONE `encode` call over the union of
    their prompts: one progress bar, one model load, each distinct prompt encoded once. ``None`` entries stay None."""
    present = [d for d in datasets if d is not None]
    prompts = list(dict.fromkeys(p for d in present for p in d.prompts.tolist()))
    vectors = encoder.encode(prompts, progress=progress, on_progress=on_progress) if prompts else None
    row = {p: i for i, p in enumerate(prompts)}
    out: list[RoutingDataset | None] = []
    for d in datasets:
        if d is None:
            out.append(None)
        else:
            idx = np.fromiter((row[p] for p in d.prompts.tolist()), dtype=np.int64, count=len(d))
            out.append(d.with_embeddings(vectors[idx] if len(d) else np.zeros((0, encoder.dim), np.float32),
                                         encoder.identity))
    return out
