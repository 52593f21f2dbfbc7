"""Leakage-safe splits: identical prompt text never lands on both sides, and every task is represented."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radialrouter.data.dataset import DataError, RoutingDataset


def _grouped_assign(ds: RoutingDataset, rows: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Pick about ``frac`` of the distinct prompts of each task among ``rows``; return the chosen row indices."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    prompts, tasks = ds.prompts[rows], ds.tasks[rows]
    # A prompt belongs to the task of its first row, so a prompt shared by two tasks still moves as one group.
    group, first = _inverse_and_first(prompts)
    group_task = tasks[first]
    for task in dict.fromkeys(tasks.tolist()):
        groups = np.flatnonzero(group_task == task)
        k = int(round(frac * len(groups)))
        if frac > 0 and len(groups) > 1:
            k = min(max(k, 1), len(groups) - 1)
        picked = rng.permutation(groups)[:k]
        chosen.append(rows[np.isin(group, picked)])
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def _inverse_and_first(prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index: dict[str, int] = {}
    first: list[int] = []
    group = np.empty(len(prompts), dtype=np.int64)
    for i, p in enumerate(prompts.tolist()):
        g = index.setdefault(p, len(index))
        if g == len(first):
            first.append(i)
        group[i] = g
    return group, np.asarray(first, dtype=np.int64)


def grouped_split(ds: RoutingDataset, test_size: float = 0.3, seed: int = 0) -> RoutingDataset:
    """Seeded train/test split grouped by identical prompt text and stratified by task."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1); got {test_size}")
    split = np.full(len(ds), "train", dtype=object)
    split[_grouped_assign(ds, np.arange(len(ds)), test_size, seed)] = "test"
    return ds.with_split(split)


def with_validation(ds: RoutingDataset, val_size: float = 0.1, seed: int = 0) -> RoutingDataset:
    """Carve a ``val`` split out of ``train`` (grouped by prompt, stratified by task) for model selection."""
    if not 0 <= val_size < 1:
        raise ValueError(f"val_size must be in [0, 1); got {val_size}")
    train_rows = np.flatnonzero(ds.split == "train")
    if len(train_rows) == 0:
        raise DataError("the dataset has no 'train' rows to carve a validation split from")
    split = ds.split.copy()
    if val_size > 0:
        split[_grouped_assign(ds, train_rows, val_size, seed + 1)] = "val"
    return ds.with_split(split)


def grouped_folds(ds: RoutingDataset, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """``k`` seeded cross-validation folds of the ``train`` rows of ``ds`` (row indices into ``ds``), grouped by
    identical prompt text and stratified by task like `grouped_split`: a prompt's rows share one fold, and each
    task's prompts are dealt round the folds in a seeded order (continuing where the previous task stopped, so
    fold sizes differ by at most one prompt). Rows of any other split (``val``, ``test``, ``unsplit`` …) are in no
    fold."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds; got {k}")
    rows = np.flatnonzero(ds.split == "train")
    group, first = _inverse_and_first(ds.prompts[rows])
    if len(first) < k:
        raise DataError(f"{k} folds need at least {k} distinct training prompts; the training split has {len(first)}")
    rng = np.random.default_rng(seed)
    group_task = ds.tasks[rows][first]
    fold_of_group = np.empty(len(first), dtype=np.int64)
    offset = 0
    for task in dict.fromkeys(group_task.tolist()):
        groups = rng.permutation(np.flatnonzero(group_task == task))
        fold_of_group[groups] = (offset + np.arange(len(groups))) % k
        offset += len(groups)
    fold = fold_of_group[group]
    return [rows[fold == i] for i in range(k)]


def holdout_tasks(
    ds: RoutingDataset, test_tasks: Sequence[str], train_tasks: Sequence[str] | None = None
) -> RoutingDataset:
    """Out-of-distribution split: every row of ``test_tasks`` becomes ``test``; the other tasks (or
    ``train_tasks``) keep their ``train``/``val`` rows for training and their own test rows become ``unused``."""
    ds.select_tasks(list(test_tasks))  # validates the names
    held = np.isin(ds.tasks, list(test_tasks))
    split = ds.split.copy()
    split[held] = "test"
    others = ~held if train_tasks is None else np.isin(ds.tasks, list(train_tasks)) & ~held
    split[~held & ~others] = "unused"
    split[others & ~np.isin(split, ["train", "val"])] = "unused"
    if not (split == "train").any():
        raise DataError("no training rows left after holding out " + ", ".join(test_tasks))
    return ds.with_split(split)
