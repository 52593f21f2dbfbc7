"""``radialrouter calibrate`` (λ from a budget on your own queries) and ``radialrouter pool add|remove``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radialrouter.cli.common import app, threads_option, trust_pickle_option, use_threads

pool_app = typer.Typer(help="Change a trained router's LLM pool without retraining it.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")


def _load_queries(path: str):
    """Texts from .txt/.jsonl/.csv/.parquet, or precomputed embeddings from a .npy (n, d) float array."""
    import numpy as np

    from radialrouter.policy.calibration import read_queries

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
    cost_model: str | None = typer.Option(None, "--cost-model", help="A saved router (same LLMs) whose per-query "
                                          "cost predictions replace the model's own (e.g. a kNN router)."),
    threads: int | None = threads_option(),
) -> None:
    """Pick λ so the expected spend (or call share) on your own traffic meets a target, with a 95 % interval."""
    from radialrouter.policy.calibration import calibrate_lam, save_calibration
    from radialrouter.routers import from_pretrained

    if (target_cost is None) == (target_share is None):
        raise ValueError("give exactly one of --target-cost or --target-share")
    use_threads(threads)
    router = from_pretrained(model)
    texts = _load_queries(queries)
    costs = None
    if cost_model:
        coster = from_pretrained(cost_model)
        if list(coster.llms_) != list(router.llms_):
            raise ValueError(f"--cost-model routes among {coster.llms_}, the model among {router.llms_}")
        costs = coster.predict_costs(texts)
    cal = calibrate_lam(router, texts, target_cost=target_cost,
                        target_share=None if target_share is None else _parse_share(target_share),
                        n_boot=n_boot, seed=seed, costs=costs)
    typer.echo(f"λ = {cal.lam:.6g}  (on {cal.n_queries} queries)")
    typer.echo(f"expected spend: {cal.expected_cost_per_1k_usd:.4f} USD per 1,000 queries "
               f"[{cal.confidence:.0%} CI {cal.ci_low_per_1k_usd:.4f} – {cal.ci_high_per_1k_usd:.4f}]")
    typer.echo(f"share of calls to {cal.share_llm}: {cal.share:.3f} [{cal.share_ci[0]:.3f} – {cal.share_ci[1]:.3f}]")
    for llm, share in sorted(cal.call_share.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {share:6.1%}  {llm}")
    if write:
        path = save_calibration(model, cal)
        typer.echo(f"default λ of {model} set to {cal.lam:.6g}; recorded in {path}")
    if json_path:
        Path(json_path).write_text(json.dumps(cal.to_dict(), indent=2) + "\n")


def _save_changed(router, model: str, out: str | None) -> tuple[str, str]:
    """Save the resized router (to ``--out`` or over ``--model``): its directory, and the line that says what
    happened to a calibrated default λ (empty when the model had no calibration)."""
    from radialrouter.policy.pool import save_pool_change

    target = out or model
    note = save_pool_change(router, model, target)
    return target, f"\nnote: {note}" if note else ""


@pool_app.command("add")
def pool_add_command(
    model: str = typer.Option(..., "--model", help="A saved router directory (RadialRouter)."),
    llm: str = typer.Option(..., "--llm", help="Name of the LLM to add."),
    probes: str = typer.Option(..., "--probes", help="Labelled probe queries (parquet, CSV, JSONL; wide or long "
                               "layout) with quality and cost for the new LLM and every LLM already in the pool."),
    out: str | None = typer.Option(None, "--out", help="Write the grown router here (default: overwrite --model)."),
    steps: int = typer.Option(100, help="Training steps for the new LLM's embedding."),
    lr: float = typer.Option(0.05, help="Learning rate."),
    init: str = typer.Option("similar", help="Initial embedding: similar (most correlated LLM), mean or random."),
    probe_embeddings: str | None = typer.Option(None, "--probe-embeddings",
                                                help="Precomputed probe embeddings (.npy, one row per probe)."),
    seed: int = typer.Option(0, help="Seed."),
    trust_pickle: bool = trust_pickle_option(),
    threads: int | None = threads_option(),
) -> None:
    """Add an LLM to a trained router from 50–200 labelled probe queries; only its embedding is trained."""
    from radialrouter.data import load_dataset
    from radialrouter.policy.pool import add_llm
    from radialrouter.routers import from_pretrained

    use_threads(threads)
    router = from_pretrained(model)
    data = load_dataset(probes, trust_pickle=trust_pickle)
    if probe_embeddings:
        import numpy as np

        x = _load_queries(probe_embeddings)
        if not isinstance(x, np.ndarray) or len(x) != len(data):
            raise ValueError(f"{probe_embeddings}: need a .npy array with one row per probe ({len(data)})")
        data = data.with_embeddings(x)
    add_llm(router, llm, data, steps=steps, lr=lr, init=init, seed=seed)
    change = router.training_["pool_changes"][-1]
    target, note = _save_changed(router, model, out)
    typer.echo(f"added {llm} from {len(data)} probes in {change['seconds']:.2f} s (initialised from "
               f"{change['init_from']}); pool of {len(router.llms_)} LLMs written to {target}{note}")


@pool_app.command("remove")
def pool_remove_command(
    model: str = typer.Option(..., "--model", help="A saved router directory (RadialRouter)."),
    llm: str = typer.Option(..., "--llm", help="Name of the LLM to remove."),
    out: str | None = typer.Option(None, "--out", help="Write the smaller router here (default: overwrite --model)."),
) -> None:
    """Remove an LLM from a trained router: its embedding is dropped, nothing is retrained."""
    from radialrouter.policy.pool import remove_llm
    from radialrouter.routers import from_pretrained

    router = remove_llm(from_pretrained(model), llm)
    target, note = _save_changed(router, model, out)
    typer.echo(f"removed {llm}; pool of {len(router.llms_)} LLMs written to {target}{note}")
