"""``radialrouter encoder distill``: rebuild the shipped static encoder from the bundled MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radialrouter.cli.common import app, fail_cleanly

encoder_app = typer.Typer(help="Query encoders.", no_args_is_help=True)
app.add_typer(encoder_app, name="encoder")


@encoder_app.command("distill")
def distill(
    out: Path = typer.Option(..., "--out", help="Folder to write the model2vec encoder to."),
    pca_dims: int = typer.Option(128, "--pca-dims", min=8, max=384, help="Dimensions kept by PCA."),
) -> None:
    """Distill static token embeddings from the bundled all-MiniLM-L6-v2 (offline; needs model2vec\\[distill])."""
    from radialrouter.core.distill import distill_static

    with fail_cleanly():
        try:
            provenance = distill_static(out, pca_dims)
        except ImportError as exc:
            raise ValueError(str(exc)) from None
    typer.echo(json.dumps(provenance, indent=2))
