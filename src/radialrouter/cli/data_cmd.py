"""``radialrouter data inspect``: what is in a routing dataset."""

from __future__ import annotations

import json

import typer

from radialrouter.cli.common import data_app, missing_option, rich_console, trust_pickle_option


@data_app.command("inspect")
def inspect(
    path: str | None = typer.Argument(None, metavar="[PATH]", help="Deprecated: the same as --data PATH (the "
                                      "form every other command takes); still accepted."),
    data: str | None = typer.Option(None, "--data", help="Routing data file (parquet, CSV, JSONL, pkl) or "
                                    "'routerbench'."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    trust_pickle: bool = trust_pickle_option(),
    missing: str = missing_option(),
) -> None:
    """Summarise a dataset: LLMs, tasks, split sizes, excluded rows, and per LLM its mean quality (over the rows
    where it is observed), mean cost and coverage."""
    import warnings

    from rich.markup import escape
    from rich.table import Table

    from radialrouter.data import load_dataset

    if path is not None and data is not None and path != data:
        raise ValueError(f"give the data file once: --data {data} or the (deprecated) positional {path}, not both")
    path = data if data is not None else path
    if path is None:
        raise ValueError("give the data file: radialrouter data inspect --data PATH")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(path, trust_pickle=trust_pickle, missing=missing)
    summary = ds.summary()
    summary["excluded"] = [str(w.message) for w in caught]
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = rich_console()
    console.print(f"[bold]{escape(path)}[/bold]: {summary['n_queries']} queries × {summary['n_llms']} LLMs, "
                  f"{'with' if ds.has_cost else 'without'} cost, fingerprint {summary['fingerprint']}")
    if summary["complete_rows"] < summary["n_queries"]:
        console.print(f"missing cells: {summary['n_queries'] - summary['complete_rows']} of {summary['n_queries']} "
                      f"queries lack some LLM's quality and are kept (--missing {missing}); evaluation routes each "
                      "among its observed LLMs")
    for message in summary["excluded"]:
        console.print(f"[yellow]warning:[/yellow] {escape(message)}")
    splits = list(summary["splits"])
    tasks = Table(title="Tasks and split sizes")
    for col in ["task", *splits]:
        tasks.add_column(escape(col), justify="left" if col == "task" else "right", overflow="fold")
    for task, counts in summary["tasks"].items():
        tasks.add_row(escape(task), *[str(counts.get(s, 0)) for s in splits])
    tasks.add_row("[bold]all[/bold]", *[str(summary["splits"][s]) for s in splits])
    console.print(tasks)
    llms = Table(title="LLMs (all rows)")
    llms.add_column("LLM", overflow="fold")
    llms.add_column("mean quality (observed rows)", justify="right", overflow="fold")
    llms.add_column("mean cost / 1k queries (USD)", justify="right", overflow="fold")
    llms.add_column("quality known (rows of the file)", justify="right", overflow="fold")
    for row in summary["llms"]:
        known = f"{row['coverage']:.1%} ({row['known_rows']})" if "coverage" in row else "–"
        llms.add_row(escape(row["llm"]), f"{row['mean_quality']:.3f}", f"{row['mean_cost_per_1k']:.4f}", known)
    console.print(llms)
