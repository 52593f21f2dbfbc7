"""``radialrouter calibrate`` (λ from a budget on your own queries) and ``radialrouter pool add|remove``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from radialrouter.cli.common import app

pool_app = typer.Typer(help="Change a trained router's LLM pool without retraining it.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")


def _load_queries(path: str):
    """Texts from .txt/.jsonl/.csv/.parquet, or precomputed embeddings from a .npy (n, d) float array."""
    from radialrouter.calibration import read_queries

    if Path(path).suffix.lower() == ".npy":
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file")
        x = np.load(path, allow_pickle=False)
        if x.ndim != 2 or x.dtype.kind != "f":
            raise ValueError(f"{path}: expected an (n, d) float array of query embeddings, got {x.dtype} {x.shape}")
        return x
    return read_queries(path)


def _parse_share(value: str) -> dict[str, float]:
    llm, sep, share = value.rpartition("=")
    if not sep or not llm:
        raise ValueError(f"--target-share must look like LLM=0.3, got {value!r}")
    try:
        return {llm: float(share)}
    except ValueError:
        raise ValueError(f"--target-share: {share!r} is not a number (expected LLM=0.3)") from None


@app.command("calibrate")
def calibrate_command(
    model: str = typer.Option(..., "--model", help="A saved router directory."),
    queries: str = typer.Option(..., "--queries", help="Your unlabelled queries: .txt (one per line), .jsonl "
                                "({\"prompt\": ...}), .csv/.parquet with a prompt column, or .npy embeddings."),
    target_cost: float | None = typer.Option(None, "--target-cost", help="Budget in USD per 1,000 queries."),
    target_share: str | None = typer.Option(None, "--target-share", help="Share of calls to one LLM: LLM=0.3."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the confidence interval."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    write: bool = typer.Option(True, "--write/--no-write", help="Store λ as the model's default (pool.json) and "
                               "record it in calibration.json."),
    json_path: str | None = typer.Option(None, "--json", help="Also write the calibration as JSON here."),
) -> None:
    """Pick λ so the expected spend (or call share) on your own traffic meets a target, with a 95 % interval."""
    from radialrouter.calibration import calibrate_lam, save_calibration
    from radialrouter.routers import from_pretrained

    if (target_cost is None) == (target_share is None):
        raise ValueError("give exactly one of --target-cost or --target-share")
    router = from_pretrained(model)
    cal = calibrate_lam(router, _load_queries(queries), target_cost=target_cost,
                        target_share=None if target_share is None else _parse_share(target_share),
                        n_boot=n_boot, seed=seed)
    typer.echo(f"λ = {cal.lam:.6g}  (on {cal.n_queries} queries)")
    typer.echo(f"expected spend: {cal.expected_cost:.4f} USD per 1,000 queries "
               f"[{cal.confidence:.0%} CI {cal.ci_low:.4f} – {cal.ci_high:.4f}]")
    typer.echo(f"share of calls to {cal.share_llm}: {cal.share:.3f} [{cal.share_ci[0]:.3f} – {cal.share_ci[1]:.3f}]")
    for llm, share in sorted(cal.call_share.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {share:6.1%}  {llm}")
    if write:
        path = save_calibration(model, cal)
        typer.echo(f"default λ of {model} set to {cal.lam:.6g}; recorded in {path}")
    if json_path:
        Path(json_path).write_text(json.dumps(cal.to_dict(), indent=2) + "\n")
