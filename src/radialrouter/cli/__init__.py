"""The ``radialrouter`` command: a thin layer over the library. Each sub-command lives in its own module.

It is the top layer (6): it may import any package; nothing imports it."""

from __future__ import annotations

import sys

import typer

from radialrouter.cli.common import app, data_app, fail_cleanly

# Importing a command module registers its commands on `app` / `data_app`.
from radialrouter.cli import (  # noqa: E402,F401  isort: skip
    batch_cmd, bench_cmd, data_cmd, encoder_cmd, eval_cmd, learn_cmd, pool_cmd, radial_cmd, serve_cmd,
)

app.add_typer(data_app, name="data")


def main() -> None:
    """Console-script entry point: library errors become one clear line and exit code 2, not a traceback."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    with fail_cleanly():
        app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["app", "main", "typer"]
