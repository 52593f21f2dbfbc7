"""Learning from your own traffic: ``radialrouter train --from-ledger`` (its work is `train_from_ledger`),
``radialrouter ope`` (off-policy evaluation of a router on the logged traffic), ``radialrouter promote`` (hot swap
a server's router when OPE says the candidate is not worse) and ``radialrouter label`` (judge labels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from radialrouter.cli.common import app, embed_announced, threads_option, use_threads


# ---------------------------------------------------------------------------------------------- shared
def _load_labelled(ledger: str, llms: list[str] | None, sources: str) -> Any:
    from radialrouter.learning.ledger_data import ledger_name, logged_traffic, read_ledger

    decisions, feedback = read_ledger(ledger)
    traffic = logged_traffic(decisions, feedback, llms=llms, sources=[s.strip() for s in sources.split(",")])
    labelled = traffic.labelled()
    if not len(labelled):
        raise ValueError(f"{ledger_name(ledger)}: none of the {len(traffic)} usable requests has a label: collect "
                         "feedback (POST /v1/feedback) or judge labels (radialrouter label) first")
    return traffic, labelled


def _serving_lam(traffic: Any, lam: str | None) -> float:
    import numpy as np

    from radialrouter.core.objective import resolve_lam

    if lam is not None:
        return resolve_lam(lam)
    values, counts = np.unique(traffic.lam, return_counts=True)
    if len(values) > 1:
        typer.echo(f"note: the log mixes λ values {values.tolist()}; evaluating at the most common, "
                   f"{values[counts.argmax()]:g} (choose with --lam)", err=True)
    return float(values[counts.argmax()])


def ope_report(ledger: str, model: str, lam: str | None = None, sources: str = "client,judge", n_boot: int = 1000,
               seed: int = 0, baseline: str | None = None) -> dict[str, Any]:
    """Everything ``radialrouter ope`` prints, as data: estimates for ``model`` (and ``baseline``, paired)."""
    import numpy as np

    from radialrouter.learning.ledger_data import ledger_name, to_partial_dataset
    from radialrouter.learning.ope import bootstrap_counts, evaluate, policy_actions, quality_model
    from radialrouter.routers import from_pretrained, make_router

    router = from_pretrained(model)
    if not router.uses_embeddings:
        raise ValueError(f"{model}: off-policy evaluation needs a router that reads the query text "
                         f"({router.name!r} does not)")
    _, t = _load_labelled(ledger, None, sources)
    lam_value = _serving_lam(t, lam)
    encoder = router.get_encoder()
    x = encoder.encode(t.prompts.tolist())
    counts = bootstrap_counts(len(t), n_boot, seed)
    dm_note = None
    fitted = None

    def run(r: Any) -> Any:
        nonlocal dm_note, fitted
        q_hat, c_hat = quality_model(r, x, t.llms)
        if q_hat is None:  # RadialRouter: a distribution, not qualities — DR's model is fitted on the log
            if fitted is None:
                data = to_partial_dataset(t).with_embeddings(x, encoder.identity)
                fitted = make_router("mlp", steps=500, seed=seed).fit(data)
            q_hat = fitted._quality(x)
            dm_note = "DR's quality model: an mlp fitted on the logged labels (the router has no quality model)"
        return evaluate(t, policy_actions(r, t, x, lam_value), lam=lam_value, q_hat=q_hat, c_hat=c_hat,
                        counts=counts, seed=seed)

    result = run(router)
    out: dict[str, Any] = {"ledger": ledger_name(ledger), "model": str(model), "lam": lam_value, **result.to_dict(),
                           "logged_policy": {"quality": float(np.mean(t.reward)),
                                             "cost": float(np.mean(t.cost) * 1000),
                                             "score": float(np.mean(t.reward - lam_value * t.cost * 1000))}}
    if baseline is not None:
        base = run(from_pretrained(baseline))
        out["baseline"] = {"model": str(baseline), **base.to_dict()}
        out["difference"] = {}
        for name in result.samples:
            diff = result.samples[name] - base.samples[name]
            point = result.estimates[name]["score"]["value"] - base.estimates[name]["score"]["value"]
            low, high = np.quantile(diff, [0.05, 0.95])
            out["difference"][name] = {"value": float(point), "low_90": float(low), "high_90": float(high)}
    if dm_note:
        out["note"] = dm_note
    return out


def _print_ope(report: dict[str, Any]) -> None:
    typer.echo(f"{report['model']} on {report['n']} labelled logged requests, λ = {report['lam']:g} "
               "(cost in USD per 1,000 queries; 95% bootstrap intervals)")
    typer.echo(f"{'estimator':<10} {'quality':>24} {'cost':>24} {'Score':>24}")
    for name, metrics in report["estimates"].items():
        cells = [f"{m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}]" for m in metrics.values()]
        typer.echo(f"{name:<10} " + " ".join(f"{c:>24}" for c in cells))
    lp = report["logged_policy"]
    typer.echo(f"{'logged':<10} {lp['quality']:>24.4f} {lp['cost']:>24.4f} {lp['score']:>24.4f}")
    d = report["diagnostics"]
    typer.echo(f"overlap: agrees with the log on {d['matches']} of {d['n']} requests, effective sample size "
               f"{d['ess']:.0f}, unsupported {d['unsupported_share']:.0%}, min propensity {d['min_propensity']:.3g}")
    for name, diff in report.get("difference", {}).items():
        typer.echo(f"{name}: Score − baseline {diff['value']:+.4f} (90% interval [{diff['low_90']:+.4f}, "
                   f"{diff['high_90']:+.4f}])")
    if report.get("note"):
        typer.echo(f"note: {report['note']}")
    for warning in report["warnings"]:
        typer.echo(f"warning: {warning}", err=True)


# ---------------------------------------------------------------------------------------------- commands
def train_from_ledger(ledger: str, out: str, router: str, data: str | None, seed: int, steps: int | None,
                      encoder: str | None, base: str | None, sources: str, warm_start: bool = False) -> None:
    """The work of ``radialrouter train --from-ledger``: partial-label training on the logged, labelled
    requests, plus ``data`` (full-information rows) when given; ``warm_start`` starts from ``base``'s weights."""
    import time

    from radialrouter.core.training import showing_progress
    from radialrouter.data import load_splits
    from radialrouter.learning.ledger_data import concat_datasets, ledger_name, to_partial_dataset
    from radialrouter.learning.partial import fit_partial
    from radialrouter.routers import from_pretrained, make_router, router_class

    start = time.perf_counter()
    base_router = from_pretrained(base) if base else None
    llms = list(base_router.llms_) if base_router is not None else None
    traffic, labelled = _load_labelled(ledger, llms, sources)
    prior = None if base_router is None else base_router.mean_cost_
    shown = Path(ledger).name if "://" not in ledger else ledger_name(ledger)
    train = to_partial_dataset(traffic, prior_cost=prior, source=f"ledger:{shown}")
    params: dict[str, Any] = {"seed": seed}
    if steps is not None:
        params["steps"] = steps
    import inspect

    accepted = set(inspect.signature(router_class(router).__init__).parameters)
    model = make_router(router, **{k: v for k, v in params.items() if k in accepted})
    if model.uses_embeddings:
        from radialrouter.core.encoders import QueryEncoder

        if encoder is not None:
            model.encoder = QueryEncoder(encoder)
        elif base_router is not None and base_router.uses_embeddings:
            model.encoder = base_router.get_encoder()
    if warm_start:
        if base_router is None or base_router.name != model.name or not hasattr(model, "_build"):
            raise ValueError("--warm-start needs --base: a saved router of the same kind (mlp or mf) to start from")
        model.init_from = base_router
    if data is not None:
        _, full, _, _ = load_splits(data, seed=seed)
        if set(full.llms) != set(train.llms):
            raise ValueError(f"--data has LLMs {list(full.llms)}, the log {list(train.llms)}: they must match")
        train = concat_datasets(full.select_llms(list(train.llms)), train)
    if model.uses_embeddings:
        train = embed_announced(model.get_encoder(), [train])[0]
    typer.echo(f"training {router} on {len(labelled)} labelled logged requests of {len(traffic)} usable"
               + (f" plus {len(train) - len(labelled)} full-information rows" if data else "") + " ...", err=True)
    with showing_progress():
        fit_partial(model, train, seed=seed)
    model.training_ = {**model.training_, "ledger": ledger_name(ledger), "labelled_requests": len(labelled),
                       "full_information_data": data}
    path = model.save_pretrained(out)
    typer.echo(f"{model.training_['partial_labels']['method']}; saved to {path} "
               f"({time.perf_counter() - start:.0f} s in all)")


@app.command("ope")
def ope_command(
    ledger: str = typer.Option(..., "--ledger", help="Decision log of the serving "
                               "policy: a SQLite file or a postgresql:// URL."),
    model: str = typer.Option(..., "--model", help="Saved router directory to evaluate."),
    lam: str | None = typer.Option(None, "--lam", help="Trade-off to evaluate at (default: the logged one)."),
    baseline: str | None = typer.Option(None, "--baseline", help="Another router to compare with (paired)."),
    sources: str = typer.Option("client,judge", help="Label sources, preferred first."),
    boot: int = typer.Option(1000, "--boot", min=100, help="Bootstrap resamples."),
    as_json: str | None = typer.Option(None, "--json", help="Also write the report here."),
    threads: int | None = threads_option(),
) -> None:
    """Off-policy evaluation: IPS, SNIPS and doubly robust estimates of a router's quality, cost and Score on the
    logged traffic, with bootstrap intervals and overlap warnings."""
    use_threads(threads)
    report = ope_report(ledger, model, lam, sources, boot, baseline=baseline)
    _print_ope(report)
    if as_json:
        Path(as_json).write_text(json.dumps(report, indent=2) + "\n")


@app.command("promote")
def promote_command(
    ledger: str = typer.Option(..., "--ledger", help="Decision log of the serving "
                               "policy: a SQLite file or a postgresql:// URL."),
    candidate: str = typer.Option(..., "--candidate", help="Saved router directory to promote."),
    server: str = typer.Option("http://127.0.0.1:8000", "--server", help="Base URL of the running server."),
    admin_key_env: str = typer.Option("RADIALROUTER_ADMIN_KEY", "--admin-key-env",
                                      help="Environment variable holding the server's server.admin_key."),
    current: str | None = typer.Option(None, "--current", help="The serving router's directory (default: asked "
                                       "from the server)."),
    lam: str | None = typer.Option(None, "--lam", help="Serving trade-off (default: the logged one)."),
    estimator: str = typer.Option("dr", help="ips, snips or dr."),
    tolerance: float = typer.Option(0.0, min=0.0, help="Accept a candidate at most this much worse (Score)."),
    sources: str = typer.Option("client,judge", help="Label sources, preferred first."),
    threads: int | None = threads_option(),
) -> None:
    """Swap the server's router for CANDIDATE only if off-policy evaluation says it is not worse than the serving
    one at the serving trade-off: the 5% lower bound of (candidate − current) Score must be ≥ −tolerance, and the
    candidate's overlap must be sufficient. Exit code 1 when refused."""
    import os

    import httpx

    from radialrouter.learning.ope import ESTIMATORS

    if estimator not in ESTIMATORS:
        raise ValueError(f"--estimator must be one of {ESTIMATORS}; got {estimator!r}")
    key = os.environ.get(admin_key_env)
    if not key:
        raise ValueError(f"environment variable {admin_key_env} (the server's admin key) is not set")
    use_threads(threads)
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=120) as http:
        if current is None:
            resp = http.get("/admin/router")
            if resp.status_code != 200:
                raise ValueError(f"{server}/admin/router answered {resp.status_code}: {resp.text[:200]}")
            current = resp.json().get("path")
            if not current:
                raise ValueError("the server routes with an in-memory router; pass --current DIR")
        report = ope_report(ledger, candidate, lam, sources, baseline=current)
        _print_ope(report)
        diff = report["difference"][estimator]
        reasons = []
        if diff["low_90"] < -tolerance:
            reasons.append(f"{estimator}: the candidate may be worse (Score difference {diff['value']:+.4f}, lower "
                           f"bound {diff['low_90']:+.4f} < −{tolerance:g})")
        if report["warnings"]:
            reasons.append("overlap is too thin to tell (see the warnings)")
        if reasons:
            typer.echo("not promoted: " + "; ".join(reasons), err=True)
            raise typer.Exit(1)
        resp = http.post("/admin/reload", json={"path": str(Path(candidate).resolve())})
        if resp.status_code != 200:
            raise ValueError(f"{server}/admin/reload answered {resp.status_code}: {resp.text[:300]}")
        swapped = resp.json()
    typer.echo(f"promoted: {swapped['previous_version']} -> {swapped['version']} ({swapped['path']}; swap took "
               f"{swapped['seconds']:.2f} s)")


@app.command("label")
def label_command(
    ledger: str = typer.Option(..., "--ledger", help="Decision log to label: a SQLite file or a postgresql:// URL."),
    config: str = typer.Option(..., "--config", help="The serving config (pool, keys, prices) the judge is in."),
    judge: str = typer.Option(..., "--judge", help="Pool LLM (its config name) that grades the answers."),
    sample: int | None = typer.Option(None, "--sample", min=1, help="Grade a seeded random sample of this many."),
    seed: int = typer.Option(0, help="Seed of the sample."),
    concurrency: int = typer.Option(4, min=1, max=64, help="Judge calls in flight."),
) -> None:
    """Grade logged answers with an LLM judge from the pool (documented rubric, docs/learning-from-traffic.md);
    needs ledger.log_prompts and ledger.log_responses. Stores judge, rubric version and cost per grade."""
    from radialrouter.serve.config import load_config
    from radialrouter.serve.judging import label_ledger

    summary = label_ledger(ledger, load_config(config), judge, sample=sample, seed=seed, concurrency=concurrency)
    mean = "" if summary.get("mean_score") is None else f", mean grade {summary['mean_score']:.3f}"
    typer.echo(f"graded {summary['graded']} request(s) with {judge} (rubric v{summary['rubric_version']}), "
               f"{summary['failed']} failed{mean}; judge cost {summary['cost_usd']:.6f} USD")
    for error in summary.get("errors", []):
        typer.echo(f"warning: judge call failed: {error}", err=True)


__all__ = ["label_command", "ope_command", "ope_report", "promote_command", "train_from_ledger"]
