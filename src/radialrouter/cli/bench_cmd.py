"""``radialrouter bench``: reproduce the comparison table (all routers, same seeds, split and encoder)."""

from __future__ import annotations

from pathlib import Path

import typer

from radialrouter.cli.common import (
    app,
    missing_option,
    output_tokens_option,
    parse_lams,
    prices_option,
    split_list,
    threads_option,
    trust_pickle_option,
    use_threads,
)


@app.command("bench")
def bench_command(
    data: str = typer.Option(..., "--data", help="Routing data file (parquet, CSV, JSONL, pkl)."),
    routers: str | None = typer.Option(None, help="Comma-separated router names (default: every registered "
                                                   "router plus oracle, random, best-single, task-best)."),
    seeds: str = typer.Option("0,1,2,3,4", help="Comma-separated seeds; figures are mean ± std over them."),
    out: str = typer.Option("benchmarks/results", help="Directory for <name>.json, <name>.md and the figures."),
    name: str | None = typer.Option(None, help="Report name (default: the data file's stem)."),
    lam: str | None = typer.Option(None, help="λ values (USD per 1,000 queries) or trade-off names, resolved on the "
                                   "first seed's training split (default: the three named trade-offs; 0 for "
                                   "quality-only data)."),
    test_tasks: str | None = typer.Option(None, help="Test on these tasks: held out entirely, or on their own "
                                                      "test split when also named in --train-tasks."),
    train_tasks: str | None = typer.Option(None, help="Train only on these tasks."),
    threads: int | None = threads_option("torch's choice, so timings compare with earlier runs"),
    encoder_latency: bool = typer.Option(True, help="Also time the query encoder without its cache."),
    encoder: str = typer.Option("minilm", "--encoder", help="Query encoder for every router: 'minilm' "
                                "(all-MiniLM-L6-v2), 'static' (model2vec distilled from it), or a model name/folder."),
    trust_pickle: bool = trust_pickle_option(),
    pair: str | None = typer.Option(None, "--pair", help="STRONG,WEAK: add RouteLLM's APGR and CPT(50 %/80 %) for "
                                    "this LLM pair to the report."),
    prices: str | None = prices_option(),
    output_tokens: int | None = output_tokens_option(),
    missing: str = missing_option(),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Keep each finished router × seed in "
                                "OUT/NAME.partial/ as it finishes and, run again with the same data and arguments, "
                                "reuse them (an interrupted bench loses nothing); --no-resume starts afresh."),
) -> None:
    """Train and evaluate every router; write the JSON results and a Markdown report with plots."""
    import shutil

    from radialrouter.evaluation.bench import run_bench, write_bench
    from radialrouter.evaluation.report import print_table

    if threads:
        use_threads(threads)
    try:
        seed_list = [int(s) for s in split_list(seeds)]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers; got {seeds!r}") from None
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.data import trusting_pickles

    report = name or Path(data).stem
    partial_root = Path(out) / f"{report}.partial"
    if not resume:
        shutil.rmtree(partial_root, ignore_errors=True)
    try:
        with trusting_pickles(trust_pickle):
            doc = run_bench(data, split_list(routers) or None, seed_list, lams=_checked_lams(lam),
                            test_tasks=test_tasks, train_tasks=train_tasks, measure_encoder=encoder_latency,
                            encoder=QueryEncoder(encoder), prices=prices, output_tokens=output_tokens,
                            pair=_pair(pair), missing=missing, partial_dir=partial_root)
    except (Exception, KeyboardInterrupt):
        if any(partial_root.glob("*/seed*.json")):
            typer.echo(f"bench stopped; the finished router × seed units are kept in {partial_root}: run the same "
                       "command again to resume", err=True)
        raise
    resumed = doc["meta"].get("resumed_units", [])
    doc["meta"].pop("partial_results", None)
    print_table(doc["results"], title=f"{Path(data).name}: seeds {seeds}", lams=doc["meta"]["lams"])
    json_path, md_path = write_bench(doc, out, report)
    shutil.rmtree(partial_root, ignore_errors=True)  # the report now holds every unit
    again = f"; {len(resumed)} unit(s) reused from an interrupted run" if resumed else ""
    typer.echo(f"wrote {json_path} and {md_path} in {doc['meta']['wall_seconds']:.0f} s{again}")


def _pair(value: str | None) -> tuple[str, str] | None:
    names = split_list(value)
    if value is not None and len(names) != 2:
        raise ValueError(f"--pair takes two LLM names, STRONG,WEAK; got {value!r}")
    return (names[0], names[1]) if names else None


def _checked_lams(value: str | None) -> list[str] | None:
    """The --lam entries, checked now (a bad one fails before any training) and resolved by `run_bench`."""
    if not value:
        return None
    parse_lams(value)
    return split_list(value)
