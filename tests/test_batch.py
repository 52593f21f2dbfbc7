"""Batch routing and embedding of query files (`radialrouter.batch`), local engine: same decisions as routing in
memory, whatever the chunk size and file kind; bad input named by file, row and column; the embedding cache filled."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CONTEXT_WORDS, train_context_router
from typer.testing import CliRunner

from radialrouter.batch import DECISION_SCHEMA, embed_file, open_source, route_file
from radialrouter.cli import app
from radialrouter.data import DataError
from radialrouter.routers.embedded import embedded_dir, load_embedded

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (embedded_dir() / "config.json").exists(),
                                 reason="the embedded default router is not built")]

PROMPTS = [f"{w} question {i}: how do I {'sort a list in Python' if i % 3 else 'prove a theorem about primes'}?"
           for i, w in enumerate(["short", "a longer and more detailed", "maths"] * 9)]  # 27 prompts


def write_parquet(path, prompts, row_group: int = 10) -> None:
    pq.write_table(pa.table({"id": list(range(len(prompts))), "prompt": prompts}), path, row_group_size=row_group)


@pytest.fixture(scope="module")
def in_memory() -> list[dict]:
    """The decisions `Router.route` gives for all of PROMPTS in one call: what every batch run must reproduce."""
    router = load_embedded()
    router.get_encoder().cache_dir = None
    return [{"prompt": t, **d.to_dict()} for t, d in zip(PROMPTS, router.route(PROMPTS))]


def assert_same_decisions(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g["prompt"], g["llm"], g["ranking"], g["lam"]) == (e["prompt"], e["llm"], e["ranking"], e["lam"])
        assert g["scores"].keys() == e["scores"].keys()
        np.testing.assert_allclose([g["scores"][k] for k in e["scores"]], list(e["scores"].values()), rtol=1e-5)
        if e["probabilities"] is None:  # the default router (an MLP) gives scores only
            assert g["probabilities"] is None
        else:
            np.testing.assert_allclose([g["probabilities"][k] for k in e["probabilities"]],
                                       list(e["probabilities"].values()), rtol=1e-5, atol=1e-7)
        assert g["expected_cost_usd"] == pytest.approx(e["expected_cost_usd"], rel=1e-5)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_parquet_decisions(path) -> list[dict]:
    rows = pq.read_table(path).to_pylist()
    return [{**r, "scores": dict(r["scores"]),
             "probabilities": None if r["probabilities"] is None else dict(r["probabilities"])} for r in rows]


@pytest.mark.parametrize("chunk", [1, 4, 10, 27, 1000])
def test_local_engine_matches_in_memory_routing_at_any_chunk_size(tmp_path, in_memory, chunk):
    write_parquet(tmp_path / "q.parquet", PROMPTS)
    summary = route_file(tmp_path / "q.parquet", tmp_path / "d.jsonl", chunk_size=chunk, progress=False)
    assert summary.rows == len(PROMPTS) and summary.engine == "local"
    assert_same_decisions(read_jsonl(tmp_path / "d.jsonl"), in_memory)


def test_jsonl_lines_are_the_route_json_format(tmp_path, in_memory):
    """Same keys, same order, same values as ``route --json``; the output is exactly one line per query."""
    write_parquet(tmp_path / "q.parquet", PROMPTS)
    route_file(tmp_path / "q.parquet", tmp_path / "d.jsonl", chunk_size=len(PROMPTS), progress=False)
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert [list(json.loads(line)) for line in lines] == [list(d) for d in in_memory]


def test_parquet_output_holds_the_same_decisions(tmp_path, in_memory):
    write_parquet(tmp_path / "q.parquet", PROMPTS)
    route_file(tmp_path / "q.parquet", tmp_path / "d.parquet", chunk_size=8, progress=False)
    f = pq.ParquetFile(tmp_path / "d.parquet")
    assert f.metadata.num_row_groups == 4  # written chunk by chunk, not held until the end
    assert f.schema_arrow.names == ["prompt", "llm", "ranking", "scores", "probabilities", "expected_cost_usd", "lam"]
    assert_same_decisions(read_parquet_decisions(tmp_path / "d.parquet"), in_memory)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "txt"])
def test_every_input_kind_gives_the_same_decisions(tmp_path, in_memory, kind):
    path = tmp_path / f"q.{kind}"
    if kind == "csv":
        import pandas as pd

        pd.DataFrame({"id": range(len(PROMPTS)), "prompt": PROMPTS}).to_csv(path, index=False)
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" + ("\n" if i == 3 else "")
                                for i, p in enumerate(PROMPTS)))
    else:
        path.write_text("\n".join(PROMPTS[:5] + ["   "] + PROMPTS[5:]) + "\n")
    if kind == "txt":
        with pytest.warns(UserWarning, match="skipped 1 blank line"):
            route_file(path, tmp_path / "d.jsonl", chunk_size=5, progress=False)
    else:
        route_file(path, tmp_path / "d.jsonl", chunk_size=5, progress=False)
    assert_same_decisions(read_jsonl(tmp_path / "d.jsonl"), in_memory)


def test_chunks_respect_the_size_and_cover_every_row_across_row_groups(tmp_path):
    write_parquet(tmp_path / "q.parquet", PROMPTS, row_group=10)
    source = open_source(tmp_path / "q.parquet")
    assert (source.kind, source.column, source.rows) == ("parquet", "prompt", len(PROMPTS))
    chunks = list(source.chunks(7))
    assert all(1 <= len(texts) <= 7 for _, texts in chunks)
    assert [start for start, _ in chunks] == list(np.cumsum([0] + [len(t) for _, t in chunks[:-1]]))
    assert [t for _, texts in chunks for t in texts] == PROMPTS


def test_bad_rows_are_named_by_file_row_and_column_even_in_a_later_chunk(tmp_path):
    prompts = list(PROMPTS)
    prompts[22] = None
    write_parquet(tmp_path / "nulls.parquet", prompts)
    with pytest.raises(DataError) as err:
        route_file(tmp_path / "nulls.parquet", tmp_path / "d.jsonl", chunk_size=5, progress=False)
    assert str(err.value) == f"{tmp_path / 'nulls.parquet'}: row 23, column 'prompt': the prompt is missing (null)"

    (tmp_path / "blank.csv").write_text("id,question\n1,fine\n2,\"  \"\n")
    with pytest.raises(DataError, match=r"blank\.csv: row 2, column 'question': the prompt is empty$"):
        route_file(tmp_path / "blank.csv", None, chunk_size=1, progress=False)

    (tmp_path / "q.jsonl").write_text('{"prompt": "fine"}\n{"prompt": 7}\n')
    with pytest.raises(DataError, match=r"q\.jsonl: line 2, field 'prompt': the prompt is a int, not text$"):
        route_file(tmp_path / "q.jsonl", None, progress=False)
    (tmp_path / "broken.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "unterminated\n')
    with pytest.raises(DataError, match=r"broken\.jsonl: line 2: not valid JSON"):
        route_file(tmp_path / "broken.jsonl", None, progress=False)

    pq.write_table(pa.table({"prompt": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(DataError, match=r"ints\.parquet: column 'prompt' holds int64, not text"):
        route_file(tmp_path / "ints.parquet", None, progress=False)
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "nocol.parquet")
    with pytest.raises(DataError, match=r"no prompt column; expected one of .* got \['body'\]"):
        route_file(tmp_path / "nocol.parquet", None, progress=False)
    with pytest.raises(DataError, match=r"cannot write decisions to a '\.csv' file"):
        route_file(tmp_path / "ints.parquet", tmp_path / "out.csv", progress=False)
    with pytest.raises(DataError, match="no such file"):
        route_file(tmp_path / "missing.parquet", None, progress=False)


def test_cli_route_input_streams_and_reports_errors_in_one_line(tmp_path, in_memory, monkeypatch):
    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))
    write_parquet(tmp_path / "logs.parquet", PROMPTS)
    runner = CliRunner()
    result = runner.invoke(app, ["route", "--input", str(tmp_path / "logs.parquet"), "--output",
                                 str(tmp_path / "d.parquet"), "--chunk-size", "6", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert f"{len(PROMPTS)} decisions written to" in result.output and "engine local" in result.output
    assert_same_decisions(read_parquet_decisions(tmp_path / "d.parquet"), in_memory)
    assert not (tmp_path / "cache").exists()  # routing a log does not grow the embedding cache unless --cache

    result = runner.invoke(app, ["route", "--input", str(tmp_path / "logs.parquet"), "--engine", "spark"])
    assert result.exit_code != 0 and "--engine must be one of local, ray" in str(result.exception)
    result = runner.invoke(app, ["route", "some query", "--input", str(tmp_path / "logs.parquet")])
    assert "not both" in str(result.exception)


def test_embed_fills_the_cache_that_training_reads(tmp_path, monkeypatch):
    from radialrouter.core.encoders import QueryEncoder

    prompts = PROMPTS + PROMPTS[:5]  # a long layout repeats prompts: one vector each
    write_parquet(tmp_path / "train.parquet", prompts)
    summary = embed_file(tmp_path / "train.parquet", encoder="static", cache_dir=tmp_path / "cache", chunk_size=8,
                         progress=False)
    assert summary.rows == len(prompts) and summary.extra["cached_vectors"] == len(PROMPTS)
    encoder = QueryEncoder("static", cache_dir=tmp_path / "cache")
    expected = QueryEncoder("static", cache_dir=False).encode(PROMPTS)

    def no_compute(*args, **kwargs):
        raise AssertionError("a prompt was encoded again: the cache missed it")

    monkeypatch.setattr(encoder, "_compute", no_compute)
    np.testing.assert_allclose(encoder.encode(PROMPTS), expected, rtol=1e-6)

    result = CliRunner().invoke(app, ["embed", "--data", str(tmp_path / "train.parquet"), "--encoder", "static",
                                      "--threads", "1"], env={"RADIALROUTER_CACHE": str(tmp_path / "cli-cache")})
    assert result.exit_code == 0, result.output
    assert f"{len(prompts)} prompts embedded with minilm-static-128" in result.output
    assert f"holds {len(PROMPTS)} vectors" in result.output


def test_ray_engine_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    write_parquet(tmp_path / "q.parquet", PROMPTS[:3])
    with pytest.raises(DataError, match=r"--engine ray needs Ray: pip install 'radialrouter\[ray\]'"):
        route_file(tmp_path / "q.parquet", tmp_path / "d.jsonl", engine="ray", progress=False)
    assert not (tmp_path / "d.jsonl").exists()


def test_worker_batches_as_ray_gives_them(in_memory):
    """`RouteWorker.__call__` (what each Ray actor runs on a batch) checks prompts; only text files drop blanks."""
    from radialrouter.batch import RouteWorker

    worker = RouteWorker(output="jsonl", use_cache=False, column="text", source_name="q.txt", text_lines=True)
    lines = worker(pa.table({"text": [PROMPTS[0], "   ", PROMPTS[1]]})).column("line").to_pylist()
    assert_same_decisions([json.loads(line) for line in lines], in_memory[:2])
    worker.text_lines, worker.source_name = False, "logs.parquet"  # a table whose prompt column is called "text"
    with pytest.raises(DataError, match=r"^logs\.parquet: column 'text': the prompt is empty \(--engine local names"):
        worker(pa.table({"text": [PROMPTS[0], "   "]}))


# ---------------------------------------------------------------------------------------------- --context


@pytest.fixture(scope="module")
def context_router(tmp_path_factory):
    """`train_context_router`'s router, saved: its folder and the router."""
    folder = tmp_path_factory.mktemp("ctx") / "router"
    return folder, train_context_router(folder)


#: Each word under both tasks, and one query whose context is not given (null / empty / missing): 13 rows.
CONTEXT_ROWS = ([(w, "code") for w in CONTEXT_WORDS] + [(w, "chat") for w in CONTEXT_WORDS] + [("fix this", None)])


def write_context_file(path, rows) -> None:
    """``rows`` of (prompt, context) as ``path``'s kind; a None context is null (parquet), an empty field (csv), or
    no field at all (jsonl)."""
    kind = path.suffix[1:]
    if kind == "parquet":
        pq.write_table(pa.table({"prompt": [p for p, _ in rows], "task": [c for _, c in rows]}), path,
                       row_group_size=5)
    elif kind == "csv":
        import pandas as pd

        pd.DataFrame({"prompt": [p for p, _ in rows], "task": [c or "" for _, c in rows]}).to_csv(path, index=False)
    else:
        path.write_text("".join(json.dumps({"prompt": p, **({"task": c} if c is not None else {})}) + "\n"
                                for p, c in rows))


@pytest.mark.parametrize("kind", ["parquet", "csv", "jsonl"])
def test_cli_context_column_routes_each_query_in_its_context(tmp_path, context_router, kind, monkeypatch):
    """``route --input F --context task``: the same prompt goes to a different LLM under each task, exactly as
    `Router.route(..., context=...)` decides in memory; the output carries the context (None where not given)."""
    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))
    folder, router = context_router
    write_context_file(tmp_path / f"q.{kind}", CONTEXT_ROWS)
    prompts, contexts = [p for p, _ in CONTEXT_ROWS], [c for _, c in CONTEXT_ROWS]
    expected = router.route(prompts, context=contexts)
    out = tmp_path / ("d.parquet" if kind == "parquet" else "d.jsonl")
    result = CliRunner().invoke(app, ["route", "--input", str(tmp_path / f"q.{kind}"), "--output", str(out),
                                      "--model", str(folder), "--context", "task", "--chunk-size", "4",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    got = read_parquet_decisions(out) if kind == "parquet" else read_jsonl(out)
    assert [(g["prompt"], g["context"]) for g in got] == CONTEXT_ROWS
    assert [g["llm"] for g in got] == [d.llm for d in expected]
    picks = {c: {g["llm"] for g in got if g["context"] == c} for c in ("code", "chat")}
    assert picks == {"code": {"llm-2"}, "chat": {"llm-0"}}  # the words alone cannot tell these apart
    if kind == "parquet":
        assert pq.read_schema(out).names == ["prompt", "context", "llm", "ranking", "scores", "probabilities",
                                             "expected_cost_usd", "lam"]
    else:
        assert list(got[0])[:3] == ["prompt", "context", "llm"]


def run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """The ``radialrouter`` console script (`cli.main`, which turns user errors into one line and exit code 2)."""
    import sys
    import warnings

    from radialrouter.cli import main

    monkeypatch.setattr(sys, "argv", ["radialrouter", *args])
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() replaces it
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def test_context_column_errors_are_one_line(tmp_path, monkeypatch, capsys):
    write_context_file(tmp_path / "q.parquet", CONTEXT_ROWS[:2])
    code, err = run_main(["route", "--input", str(tmp_path / "q.parquet"), "--context", "tsk"], monkeypatch, capsys)
    assert code == 2
    assert err == f"error: {tmp_path / 'q.parquet'}: no context column 'tsk'; it has ['prompt', 'task']\n"

    (tmp_path / "q.txt").write_text("fix this\n")
    code, err = run_main(["route", "--input", str(tmp_path / "q.txt"), "--context", "task"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'q.txt'}: a .txt file has one prompt per line and no columns")

    code, err = run_main(["route", "fix this", "--context", "task"], monkeypatch, capsys)
    assert code == 2 and "--context names a column of the --input file" in err

    pq.write_table(pa.table({"prompt": ["a"], "task": [["x", "y"]]}), tmp_path / "nested.parquet")
    with pytest.raises(DataError, match=r"nested\.parquet: column 'task' holds list<.*>, not one context per row$"):
        route_file(tmp_path / "nested.parquet", None, context_column="task", progress=False)
    (tmp_path / "nested.jsonl").write_text('{"prompt": "a", "task": "x"}\n{"prompt": "b", "task": {"k": 1}}\n')
    with pytest.raises(DataError, match=r"nested\.jsonl: line 2, field 'task': the context is a dict, not a single"):
        route_file(tmp_path / "nested.jsonl", None, context_column="task", progress=False)


def test_contexts_are_read_as_strings_or_none_chunk_by_chunk(tmp_path):
    """Numbers become their string form (as training reads a task column), null, NaN and blank become None; the
    contexts stay aligned with their prompts across chunks and row groups."""
    prompts = [f"q{i}" for i in range(7)]
    pq.write_table(pa.table({"prompt": prompts, "app": [1, 2, None, 4, 5, 6, 7]}), tmp_path / "ints.parquet",
                   row_group_size=3)
    source = open_source(tmp_path / "ints.parquet", context_column="app")
    assert source.columns() == ["prompt", "app"]
    chunks = list(source.chunks_with_context(2))
    assert [t for _, texts, _ in chunks for t in texts] == prompts
    assert [c for _, _, cs in chunks for c in cs] == ["1", "2", None, "4", "5", "6", "7"]
    assert all(len(texts) == len(cs) <= 2 for _, texts, cs in chunks)

    pq.write_table(pa.table({"prompt": prompts[:3], "app": [1.5, float("nan"), None]}), tmp_path / "f.parquet")
    assert [cs for _, _, cs in open_source(tmp_path / "f.parquet", context_column="app").chunks_with_context(9)] == [
        ["1.5", None, None]]
    (tmp_path / "q.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b", "app": 7}\n{"prompt": "c", "app": " "}\n'
                                      '{"prompt": "d", "app": null}\n{"prompt": "e", "app": "web"}\n')
    source = open_source(tmp_path / "q.jsonl", context_column="app")  # the field is not on the first line
    assert list(source.chunks_with_context(3)) == [(0, ["a", "b", "c"], [None, "7", None]),
                                                   (3, ["d", "e"], [None, "web"])]
    assert list(source.chunks(3)) == [(0, ["a", "b", "c"]), (3, ["d", "e"])]  # what embed reads: prompts only


def test_a_router_without_context_ignores_the_column(tmp_path, in_memory):
    """The default router does not read a context: the same decisions with ``--context`` as without, which only
    adds the context to the output."""
    pq.write_table(pa.table({"prompt": PROMPTS, "task": ["code", "chat", None] * 9}), tmp_path / "q.parquet")
    route_file(tmp_path / "q.parquet", tmp_path / "with.jsonl", context_column="task", chunk_size=10, progress=False)
    route_file(tmp_path / "q.parquet", tmp_path / "without.jsonl", chunk_size=10, progress=False)
    with_context, without = read_jsonl(tmp_path / "with.jsonl"), read_jsonl(tmp_path / "without.jsonl")
    assert [d.pop("context") for d in with_context] == ["code", "chat", None] * 9
    assert all("context" not in d for d in without)
    assert_same_decisions(with_context, in_memory)
    assert_same_decisions(without, in_memory)
    route_file(tmp_path / "q.parquet", tmp_path / "plain.parquet", chunk_size=10, progress=False)
    assert pq.read_schema(tmp_path / "plain.parquet").names == DECISION_SCHEMA.names  # unchanged without --context


def test_worker_reads_the_context_column_of_ray_batches(context_router):
    """`RouteWorker.__call__` (each Ray actor) with ``context_column``: contexts read from the batch, None where a
    JSONL block has no such field; an empty batch keeps the schema with the context column."""
    from radialrouter.batch import RouteWorker

    folder, router = context_router
    worker = RouteWorker(model=str(folder), output="parquet", use_cache=False, context_column="task")
    table = worker(pa.table({"prompt": ["fix this"] * 3, "task": ["code", "chat", None]}))
    assert table.column("context").to_pylist() == ["code", "chat", None]
    assert table.column("llm").to_pylist() == [d.llm for d in router.route(["fix this"] * 3,
                                                                           context=["code", "chat", None])]
    assert table.column("llm").to_pylist()[:2] == ["llm-2", "llm-0"]
    no_field = worker(pa.table({"prompt": ["fix this"]}))
    assert no_field.column("context").to_pylist() == [None]
    assert worker(pa.table({"prompt": pa.array([], pa.string())})).schema.names[:3] == ["prompt", "context", "llm"]
