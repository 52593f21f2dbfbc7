"""Shared pieces of the CLI: the Typer apps, data loading options and clean error reporting."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer


def _hide_flag_types() -> None:
    """typer ≥ 0.2x prints a type after every option, ``--json <bool>`` included, which reads as if a flag took a
    value (``--json true`` then routes the word "true"). Flags take none: print no type for them."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - older typer prints no types
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_hides_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._hides_flags = True
    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()

#: Width of help and tables when the output is not a terminal (a pipe, a file, a CI log). rich falls back to 80
#: columns there and cuts option defaults, option names and table cells with "…"; a terminal keeps its own width,
#: and $COLUMNS or $TERMINAL_WIDTH, when set, win.
PIPED_WIDTH = 120


def _piped_width() -> int | None:
    """`PIPED_WIDTH` when stdout is not a terminal and no width is set in the environment, else None (rich's)."""
    if os.environ.get("COLUMNS") or os.environ.get("TERMINAL_WIDTH") or sys.stdout.isatty():
        return None
    return PIPED_WIDTH


def _wide_help_when_piped() -> None:
    """Typer renders help with rich at 80 columns when piped (``radialrouter train --help | less``), cutting
    defaults like ``radial,mlp,knn,equ…``: render it `PIPED_WIDTH` wide there. `typer.rich_utils` is imported only
    when help is printed, so the CLI starts without rich."""
    from typer.core import TyperCommand, TyperGroup

    for cls in (TyperCommand, TyperGroup):
        original = cls.format_help
        if getattr(original, "_wide_when_piped", False):
            continue

        def format_help(self, ctx, formatter, _original=original):
            from typer import rich_utils

            if not os.environ.get("TERMINAL_WIDTH"):
                rich_utils.MAX_WIDTH = _piped_width()
            return _original(self, ctx, formatter)

        format_help._wide_when_piped = True
        cls.format_help = format_help


_wide_help_when_piped()


#: Console width for tables when piped: a table is then as wide as its content, no cell wrapped or cut.
PIPED_TABLE_WIDTH = 10_000


def rich_console():
    """A rich Console for tables: in a terminal its width (cells wrap, ``overflow="fold"``, never "…"); piped,
    `PIPED_TABLE_WIDTH`, so ``data inspect | grep`` finds a long LLM name whole. Text given to it goes through
    `rich.markup.escape`, so an LLM named ``gpt-4 [preview]`` keeps its brackets."""
    from rich.console import Console

    return Console(width=None if _piped_width() is None else PIPED_TABLE_WIDTH)

app = typer.Typer(
    help="Learn which LLM to call for each query, evaluate routers, and serve routing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect routing datasets.", no_args_is_help=True)

#: Errors that are the user's to fix (bad input, files, models): one line and exit 2, not a traceback. The library's
#: own classes are looked up only once their modules are loaded, so the CLI starts without torch or pandas.
USER_ERRORS = (ValueError, FileNotFoundError)
_LIBRARY_ERRORS = (("radialrouter.data.dataset", "DataError"), ("radialrouter.routers.base", "RouterError"),
                   ("radialrouter.core.encoders", "EncoderError"))


def user_errors() -> tuple[type[BaseException], ...]:
    """`USER_ERRORS` plus the library's error classes that are already imported (none other can be raised)."""
    loaded = [getattr(sys.modules[m], name) for m, name in _LIBRARY_ERRORS if m in sys.modules]
    return (*USER_ERRORS, *loaded)


@contextmanager
def fail_cleanly():
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


def trust_pickle_option() -> bool:
    """``--trust-pickle``: a ``.pkl`` data file is refused without it, because unpickling runs code."""
    return typer.Option(False, "--trust-pickle", help="Allow a .pkl data file (unpickling runs any code it holds: "
                        "only for files you trust; better convert it to parquet).")


def prices_option():
    """``--prices FILE``: estimated costs for logs with quality only (see `radialrouter.data.prices`)."""
    return typer.Option(None, "--prices", help="Price file (USD per million tokens, input and output, per LLM; see "
                        "docs/data-format.md) to estimate costs for data that logs quality only.")


def _check_missing(value: str) -> str:
    """Checked at parse time, so a typo names the flag (``--missing``), not the Python argument."""
    if value not in ("keep", "exclude"):
        raise ValueError(f"--missing must be keep or exclude; got {value!r}")
    return value


def missing_option():
    """``--missing keep|exclude``: what to do with rows where some LLMs' quality is missing."""
    return typer.Option("keep", "--missing", callback=_check_missing,
                        help="Rows where some LLMs' quality is missing: 'keep' them (each query is routed among its "
                        "observed LLMs in evaluation; routers train with the mask or on the complete rows, with a "
                        "warning) or 'exclude' them (with a warning). Rows without any quality are always excluded.")


def output_tokens_option():
    """``--output-tokens N``: the output tokens per query in those estimates."""
    return typer.Option(None, "--output-tokens", min=0, help="Output tokens per query in cost estimates made "
                        "with --prices (default 256).")


def threads_option(default: str = "the cores not busy with other work, at most 4; or $RADIALROUTER_THREADS / "
                                     "$OMP_NUM_THREADS") -> int | None:
    """``--threads``: on every command that computes (see `radialrouter.core.threads`)."""
    return typer.Option(None, "--threads", min=1, help=f"CPU threads for torch, k-means and BLAS (default: {default}).")


def use_threads(threads: int | None) -> int:
    from radialrouter.core.threads import apply_threads

    return apply_threads(threads)


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def parse_lams(value: str, presets: dict[str, float] | None = None) -> list[float]:
    """λ numbers, or trade-off names resolved with ``presets`` (the paper's values without them), each once.
    Quality-only presets (`objective.QUALITY_ONLY`) give the one trade-off, λ = 0, whatever is asked: without
    costs every λ scores and routes alike."""
    from radialrouter.core.objective import resolve_lams

    return resolve_lams(split_list(value), presets)


def out_path(path: str | None) -> Path | None:
    return None if path is None else Path(path)


def embed_announced(encoder: Any, datasets: list, noun: str = "prompts") -> list:
    """Embed ``datasets`` (train, validation, test; None entries allowed) in one pass over their union, saying
    first what it costs (`QueryEncoder.plan`: prompts not cached, encoder, time on this machine), then how long it
    took — a first run on new data is otherwise minutes of silence."""
    import time

    from radialrouter.core.encoders.transformer import duration
    from radialrouter.data import embed_together

    if encoder.will_build_onnx():
        typer.echo(f"building the ONNX version of {encoder.identity['name']} once (10–30 s; kept in "
                   f"{encoder.onnx_path().parent})", err=True)
    line, missing = encoder.plan([p for d in datasets if d is not None for p in d.prompts.tolist()], noun)
    typer.echo(line, err=True)
    start = time.perf_counter()
    out = embed_together(encoder, datasets)
    if missing:
        typer.echo(f"encoded in {duration(time.perf_counter() - start)}", err=True)
    return out
