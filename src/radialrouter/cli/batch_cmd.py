"""Batch work on query files (`radialrouter.batch`): ``route --input`` (its options live here) and ``embed``."""

from __future__ import annotations

import typer

from radialrouter.cli.common import app, threads_option, use_threads


def engine_option():
    return typer.Option("local", "--engine", help="With --input: 'local' (this process, chunk by chunk) or 'ray' "
                        "(Ray Data actors, each loading the model once; pip install 'radialrouter\\[ray]').")


def chunk_size_option():
    return typer.Option(8192, "--chunk-size", min=1, help="Queries per chunk: memory grows with it, not with the "
                        "file.")


def workers_option():
    return typer.Option(None, "--workers", min=1, help="--engine ray: worker actors, one CPU each (default: the "
                        "CPU count).")


def ray_address_option():
    return typer.Option(None, "--ray-address", help="--engine ray: a running Ray cluster (default: $RAY_ADDRESS, "
                        "or a local instance started for this run).")


def prompt_column_option():
    return typer.Option(None, "--prompt-column", help="Column (or JSON field) holding the queries (default: the "
                        "first of prompt, question, query, text).")


def context_column_option():
    return typer.Option(None, "--context", metavar="COLUMN", help="With --input: column (or JSON field) holding "
                        "each query's context — e.g. the task or calling application — for a router trained with one "
                        "(ensemble with context=True); others ignore it. The output carries it as 'context'; an empty "
                        "value is an unknown context.")


def _engine(engine: str, threads: int | None, workers: int | None, address: str | None):
    """The engine: ``--threads`` is this process's thread count locally, each actor's on Ray (default 1)."""
    from radialrouter.batch.jobs import ENGINES, make_engine

    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "local":
        use_threads(threads)
    return make_engine(engine, workers=workers, threads=threads or 1, address=address)


def route_input(input_path: str, output: str | None, *, model: str | None, lam: str | None, candidates: list[str],
                engine: str, chunk_size: int, workers: int | None, address: str | None, prompt_column: str | None,
                cache: bool | None, threads: int | None, context_column: str | None = None) -> None:
    """``route --input``: stream the file through `radialrouter.batch.route_file`."""
    from radialrouter.batch.jobs import route_file

    summary = route_file(input_path, output, model=model, lam=lam, candidates=candidates or None,
                         engine=_engine(engine, threads, workers, address), chunk_size=chunk_size,
                         prompt_column=prompt_column, use_cache="auto" if cache is None else cache,
                         context_column=context_column)
    where = f" to {output}" if output else ""
    typer.echo(f"{summary.rows} decisions written{where} in {summary.seconds:.1f} s "
               f"({summary.rows_per_second:,.0f} queries/s, engine {summary.engine})", err=True)


@app.command("embed")
def embed_command(
    data: str = typer.Option(..., "--data", help="Query or routing data file (.parquet, .csv, .jsonl, .txt)."),
    encoder: str = typer.Option("minilm", "--encoder", help="Query encoder: 'minilm' (the default of train and "
                                "bench), 'static', or a model name/folder."),
    engine: str = engine_option(),
    chunk_size: int = chunk_size_option(),
    workers: int | None = workers_option(),
    ray_address: str | None = ray_address_option(),
    prompt_column: str | None = prompt_column_option(),
    threads: int | None = threads_option(),
) -> None:
    """Fill the embedding cache with every prompt of a file, so train, eval and bench on it encode nothing."""
    from radialrouter.batch.jobs import embed_file

    summary = embed_file(data, encoder=encoder, engine=_engine(engine, threads, workers, ray_address),
                         chunk_size=chunk_size, prompt_column=prompt_column)
    typer.echo(f"{summary.rows} prompts embedded with {summary.extra['encoder']} in {summary.seconds:.1f} s "
               f"({summary.rows_per_second:,.0f}/s, engine {summary.engine}); the cache {summary.output} holds "
               f"{summary.extra['cached_vectors']} vectors")


__all__ = ["embed_command", "route_input"]
