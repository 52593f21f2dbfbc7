"""Shared pieces of the CLI: the Typer apps, data loading options and clean error reporting."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import typer

from radialrouter.data import DataError, RoutingDataset, holdout_tasks, load_dataset, with_validation
from radialrouter.encoders import EncoderError
from radialrouter.routers import RouterError

app = typer.Typer(
    help="Learn which LLM to call for each query, evaluate routers, and serve routing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect routing datasets.", no_args_is_help=True)

USER_ERRORS = (DataError, RouterError, EncoderError, ValueError, FileNotFoundError)


@contextmanager
def fail_cleanly():
    try:
        yield
    except USER_ERRORS as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def parse_lams(value: str) -> list[float]:
    from radialrouter.objective import resolve_lam

    return [resolve_lam(v) for v in split_list(value)]


def load_splits(
    data: str,
    *,
    seed: int = 0,
    test_size: float = 0.3,
    val_size: float = 0.1,
    test_tasks: str | None = None,
    train_tasks: str | None = None,
) -> tuple[RoutingDataset, RoutingDataset, RoutingDataset | None, RoutingDataset]:
    """Load ``data`` and return (full, train, val or None, test). ``test_tasks`` makes an out-of-distribution
    split (tasks also named in ``train_tasks`` are tested on their own test split); otherwise the file's ``split``
    column (or a seeded grouped split) is used, and ``test`` includes the ``unsplit`` rows (test-only tasks)."""
    ds = load_dataset(data, test_size=test_size, seed=seed)
    if test_tasks:
        tests, trains = split_list(test_tasks), split_list(train_tasks)
        ds.select_tasks(tests + trains)  # validates the names
        # A task named in both lists is tested in distribution, on its own test split (RouterDC's protocol);
        # the other test tasks are held out entirely.
        in_dist = [t for t in tests if t in trains]
        original = ds.split
        ds = holdout_tasks(ds, [t for t in tests if t not in in_dist], trains or None)
        if in_dist:
            ds = ds.with_split(np.where(np.isin(ds.tasks, in_dist) & (original == "test"), "test", ds.split))
    elif train_tasks:
        ds = ds.select_tasks(split_list(train_tasks) + [t for t in ds.task_names if t not in split_list(train_tasks)
                                                       and (ds.split[ds.tasks == t] == "unsplit").all()])
    if val_size > 0 and not (ds.split == "val").any():
        ds = with_validation(ds, val_size=val_size, seed=seed)
    train, val = ds.select("train"), ds.select("val")
    test = ds.select("test", "unsplit")
    if len(test) == 0:
        raise DataError(f"{data}: no test rows (split 'test' or 'unsplit') to evaluate on")
    return ds, train, (val if len(val) else None), test


def out_path(path: str | None) -> Path | None:
    return None if path is None else Path(path)
