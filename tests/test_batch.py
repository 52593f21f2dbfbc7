"""Batch routing and embedding of query files (`radialrouter.batch`), local engine: same decisions as routing in
memory, whatever the chunk size and file kind; bad input named by file, row and column; the embedding cache filled."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from radialrouter.batch import embed_file, open_source, route_file
from radialrouter.cli import app
from radialrouter.data import DataError
from radialrouter.routers.radial import DEFAULT_DIR

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (DEFAULT_DIR / "config.json").exists(),
                                 reason="the embedded default router is not built")]

PROMPTS = [f"{w} question {i}: how do I {'sort a list in Python' if i % 3 else 'prove a theorem about primes'}?"
           for i, w in enumerate(["short", "a longer and more detailed", "maths"] * 9)]  # 27 prompts


def write_parquet(path, prompts, row_group: int = 10) -> None:
    pq.write_table(pa.table({"id": list(range(len(prompts))), "prompt": prompts}), path, row_group_size=row_group)


@pytest.fixture(scope="module")
def in_memory() -> list[dict]:
    """The decisions `Router.route` gives for all of PROMPTS in one call: what every batch run must reproduce."""
    from radialrouter.routers.radial import load_default

    router = load_default()
    router.get_encoder().cache_dir = None
    return [{"prompt": t, **d.to_dict()} for t, d in zip(PROMPTS, router.route(PROMPTS))]


def assert_same_decisions(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g["prompt"], g["llm"], g["ranking"], g["lam"]) == (e["prompt"], e["llm"], e["ranking"], e["lam"])
        assert g["scores"].keys() == e["scores"].keys()
        np.testing.assert_allclose([g["scores"][k] for k in e["scores"]], list(e["scores"].values()), rtol=1e-5)
        np.testing.assert_allclose([g["probabilities"][k] for k in e["probabilities"]],
                                   list(e["probabilities"].values()), rtol=1e-5, atol=1e-7)
        assert g["expected_cost_usd"] == pytest.approx(e["expected_cost_usd"], rel=1e-5)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_parquet_decisions(path) -> list[dict]:
    rows = pq.read_table(path).to_pylist()
    return [{**r, "scores": dict(r["scores"]), "probabilities": dict(r["probabilities"])} for r in rows]


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
