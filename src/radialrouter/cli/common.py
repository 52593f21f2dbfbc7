"""Shared pieces of the CLI: the Typer apps, data loading options and clean error reporting."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import typer

from radialrouter.data import DataError
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


def out_path(path: str | None) -> Path | None:
    return None if path is None else Path(path)
