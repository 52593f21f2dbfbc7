"""``radialrouter eval``: fit routers on the train split (or load saved ones) and evaluate them on test."""

from __future__ import annotations

from pathlib import Path

import typer

from radialrouter.cli.common import (
    app,
    missing_option,
    out_path,
    output_tokens_option,
    parse_lams,
    prices_option,
    split_list,
    threads_option,
    trust_pickle_option,
    use_threads,
)

#: The named trade-offs, resolved on the data's training split (`objective.tradeoff_presets`).
NAMED_TRADEOFFS = "performance-first,balance,cost-first"


@app.command("eval")
def eval_command(
    data: str = typer.Option(..., "--data", help="Routing data file (parquet, CSV, JSONL, pkl) or 'routerbench'."),
    routers: str = typer.Option("oracle,best-single,task-best,random", help="Comma-separated router names."),
    model: list[str] = typer.Option([], "--model", help="A saved router directory (repeatable)."),
    lam: str = typer.Option(NAMED_TRADEOFFS, help="λ values (USD per 1,000 queries) or trade-off names, which "
                            "are resolved on the training split's price scale."),
    json_path: str | None = typer.Option(None, "--json", help="Write the figures as JSON to this file."),
    report: str | None = typer.Option(None, help="Write report.md, results.json and plots to this directory."),
    seed: int = typer.Option(0, help="Seed for splits and training."),
    test_tasks: str | None = typer.Option(None, help="Out-of-distribution: hold out these tasks as test."),
    train_tasks: str | None = typer.Option(None, help="Train only on these tasks."),
    pair: str | None = typer.Option(None, "--pair", help="STRONG,WEAK: also report RouteLLM's APGR and CPT(50 %/80 %) "
                                    "for this LLM pair, from each router's per-query scores (see radialrouter."
                                    "strong_weak)."),
    trust_pickle: bool = trust_pickle_option(),
    threads: int | None = threads_option(),
    prices: str | None = prices_option(),
    output_tokens: int | None = output_tokens_option(),
    missing: str = missing_option(),
) -> None:
    """Evaluate routers: Perf, Cost (USD per 1,000 queries) and Score per λ, macro-averaged over tasks."""
    use_threads(threads)
    from radialrouter.core.objective import tradeoff_presets
    from radialrouter.data import load_splits
    from radialrouter.evaluation.metrics import evaluate_router
    from radialrouter.evaluation.report import print_table, write_json
    from radialrouter.evaluation.strong_weak import check_pair
    from radialrouter.routers import from_pretrained, make_router

    pair_names = _pair_names(pair)
    full, train, val, test = load_splits(data, seed=seed, test_tasks=test_tasks, train_tasks=train_tasks,
                                          prices=prices, output_tokens=output_tokens,
                                          trust_pickle=trust_pickle, missing=missing)
    if pair_names:
        check_pair(full.llms, *pair_names)  # before any router is fitted or embedding computed
    presets = tradeoff_presets(train.quality, train.cost)  # quality-only data: the one trade-off
    lams = parse_lams(lam, presets)
    fresh = []
    for name in split_list(routers):
        router = make_router(name)
        if getattr(router, "seed", None) is not None:
            router.seed = seed
        fresh.append(router)
    saved = []
    for directory in model:
        router = from_pretrained(directory)
        router.display_name = f"{router.name} ({Path(directory).name})"
        saved.append(router)
    _embed_for(fresh + saved, [train, val, test])
    fitted = [r.fit(_embedded(r, train), None if val is None else _embedded(r, val)) for r in fresh] + saved
    rows = []
    for router in fitted:
        rows += evaluate_router(router, _embedded(router, test), lams, presets)
    print_table(rows, title=f"{Path(data).name}: {len(test)} test queries")
    meta = {"data": str(data), "data_fingerprint": full.fingerprint(), "seed": seed, "n_train": len(train),
            "n_test": len(test), "llms": list(full.llms), "cost": full.cost_model or "logged", "presets": presets}
    if pair_names:
        meta["pairs"] = _pair_figures(pair_names, fitted, test)
    if json_path:
        write_json(json_path, rows, meta)
    if report:
        _write_report(Path(report), fitted, test, rows, meta)


def _pair_names(pair: str | None) -> list[str]:
    """``--pair STRONG,WEAK`` as two names (empty without it), checked before the data is even read."""
    names = split_list(pair)
    if pair is not None and len(names) != 2:
        raise ValueError(f"--pair takes two LLM names, STRONG,WEAK; got {pair!r}")
    return names


def _pair_figures(names: list[str], routers, test) -> dict[str, dict]:
    """RouteLLM's strong/weak metrics per router, printed as a table and returned for the JSON."""
    from radialrouter.evaluation.strong_weak import pair_report

    out = {}
    typer.echo(f"\n{names[0]} (strong) vs {names[1]} (weak): APGR, and the strong call share needed for 50 % / 80 % "
               "of the quality gap")
    for router in routers:
        label = getattr(router, "display_name", None) or router.name
        report = out[label] = pair_report(router, _embedded(router, test), *names)

        def fmt(value, spec):
            return "  n/a" if value is None else format(value, spec)

        typer.echo(f"  {label:28s} APGR {fmt(report['apgr'], '6.3f')}   CPT(50%) {fmt(report['cpt50'], '5.1%')}   "
                   f"CPT(80%) {fmt(report['cpt80'], '5.1%')}   (n = {report['n']})")
    return out


def _embed_for(routers, splits) -> None:
    """Encode the union of ``splits`` once per distinct encoder of ``routers``, announced (count, encoder, time):
    the vectors land in the embedding cache, from which `_embedded` then reads each split."""
    from radialrouter.cli.common import embed_announced

    encoders = {}
    for r in routers:
        if r.uses_embeddings:
            encoders.setdefault(r.get_encoder().fingerprint(), r.get_encoder())
    for encoder in encoders.values():
        if encoder.cache_dir is not None:
            embed_announced(encoder, list(splits))


def _embedded(router, ds):
    """Attach embeddings (from the on-disk cache when present) for routers that read query vectors."""
    return ds.embed(router.get_encoder()) if router.uses_embeddings and ds.embeddings is None else ds


def _write_report(directory: Path, routers, test, rows, meta) -> None:
    from radialrouter.core.objective import is_quality_only_presets
    from radialrouter.evaluation.metrics import DEFAULT_SWEEP, curve_metrics, evaluate_router
    from radialrouter.evaluation.report import (
        per_task_markdown,
        plot_perf_vs_cost,
        plot_score_vs_lam,
        to_markdown,
        write_json,
    )

    directory.mkdir(parents=True, exist_ok=True)
    if is_quality_only_presets(meta["presets"]):  # no costs: no λ sweep, cost curve or AIQ to draw
        md = [to_markdown(rows, title="Results"), "## Per task", "", per_task_markdown(rows)]
        write_json(directory / "results.json", rows, meta)
        (directory / "report.md").write_text("\n".join(md))
        typer.echo(f"report written to {directory}/report.md")
        return
    sweeps = {}
    curves = {}
    costs_all = []
    for router in routers:
        label = getattr(router, "display_name", None) or router.name
        sweeps[label] = evaluate_router(router, _embedded(router, test), DEFAULT_SWEEP)
        costs_all += [r["cost"] for r in sweeps[label]]
    cost_range = (min(costs_all), max(costs_all))
    for label, sweep in sweeps.items():
        curves[label] = curve_metrics(sweep, test, cost_range)
    from radialrouter.evaluation.metrics import single_llm_summary

    singles = {}
    for j, llm in enumerate(test.llms):
        if test.observed[:, j].any():  # each LLM over the test queries where its quality is observed
            m = single_llm_summary(test, j)["macro"]
            singles[llm] = (m.cost, m.perf)
    plot_score_vs_lam(sweeps, directory / "score_vs_lam.png")
    plot_perf_vs_cost(sweeps, directory / "perf_vs_cost.png", points=singles)
    write_json(directory / "results.json", rows, meta, sweeps=sweeps, curves=curves)
    md = [to_markdown(rows, title="Results"), "## Curve metrics", "",
          "| Router | AIQ | QNC | peak Perf |", "|---|---:|---:|---:|"]
    for label, c in curves.items():
        qnc = "never" if c["qnc"] is None else f"{c['qnc']:.3f}"
        md.append(f"| {label} | {c['aiq']:.4f} | {qnc} | {c['peak_perf']:.3f} |")
    md += ["", f"QNC: cheapest cost reaching the best single LLM ({next(iter(curves.values()))['reference_llm']}) "
           "relative to its cost. AIQ over the shared cost range.", "", "## Per task", "", per_task_markdown(rows),
           "![Score vs λ](score_vs_lam.png)", "", "![Perf vs Cost](perf_vs_cost.png)", ""]
    (directory / "report.md").write_text("\n".join(md))
    typer.echo(f"report written to {directory}/report.md")


__all__ = ["eval_command", "out_path"]
