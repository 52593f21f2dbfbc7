"""`--engine ray` on a local Ray instance this module starts: the same output as the local engine, worker errors
as one line, and the embedding cache filled by the actors."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'radialrouter[ray]'")

from test_batch import (  # noqa: E402
    CONTEXT_ROWS,
    PROMPTS,
    assert_same_decisions,
    read_jsonl,
    read_parquet_decisions,
    train_context_router,
    write_context_file,
    write_parquet,
)

from radialrouter.batch import RayEngine, embed_file, route_file  # noqa: E402
from radialrouter.data import DataError  # noqa: E402
from radialrouter.routers.radial import DEFAULT_DIR  # noqa: E402

pytestmark = pytest.mark.skipif(not (DEFAULT_DIR / "config.json").exists(),
                                reason="the embedded default router is not built")


@pytest.fixture(scope="module")
def local_ray():
    """Three logical CPUs (two actors and the read tasks), no dashboard: the engine finds Ray running and leaves it
    up; this fixture stops it."""
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


def test_ray_engine_gives_the_local_engines_decisions_and_one_line_errors(tmp_path, local_ray):
    """Two actors and many small blocks: input order kept, the same decisions as the local engine (scores equal to
    float rounding: Ray may cut the batches differently), then a bad row reported as one line."""
    write_parquet(tmp_path / "q.parquet", PROMPTS, row_group=4)
    route_file(tmp_path / "q.parquet", tmp_path / "local.parquet", chunk_size=5, progress=False)
    engine = RayEngine(workers=2, block_bytes=256)  # tiny blocks: both actors get some
    summary = route_file(tmp_path / "q.parquet", tmp_path / "ray.parquet", engine=engine, chunk_size=5,
                         progress=False)
    assert summary.rows == len(PROMPTS) and summary.engine == "ray"
    assert_same_decisions(read_parquet_decisions(tmp_path / "ray.parquet"),
                          read_parquet_decisions(tmp_path / "local.parquet"))
    assert ray.is_initialized()  # a Ray instance the caller started is left running

    prompts = list(PROMPTS)
    prompts[11] = "  "
    write_parquet(tmp_path / "bad.parquet", prompts)
    with pytest.raises(DataError) as err:
        route_file(tmp_path / "bad.parquet", tmp_path / "x.jsonl", engine=RayEngine(workers=1), progress=False)
    assert str(err.value) == (f"{tmp_path / 'bad.parquet'}: column 'prompt': the prompt is empty (--engine local "
                              "names its row)")


def test_ray_engine_fills_the_embedding_cache(tmp_path, local_ray):
    """Actors in other processes write the driver's cache folder: every distinct prompt once."""
    write_parquet(tmp_path / "train.parquet", PROMPTS + PROMPTS[:3])
    summary = embed_file(tmp_path / "train.parquet", encoder="static", engine=RayEngine(workers=1),
                         cache_dir=tmp_path / "cache", chunk_size=8, progress=False)
    assert summary.rows == len(PROMPTS) + 3 and summary.extra["cached_vectors"] == len(PROMPTS)


def test_ray_engine_reads_the_context_column(tmp_path, local_ray):
    """``--context`` on Ray: each actor reads the context next to the prompt (a JSONL line without the field is an
    unknown context), and the output equals the local engine's."""
    folder = tmp_path / "router"
    train_context_router(folder)
    write_context_file(tmp_path / "q.jsonl", CONTEXT_ROWS)
    for name, engine in (("local", "local"), ("ray", RayEngine(workers=2, block_bytes=256))):
        route_file(tmp_path / "q.jsonl", tmp_path / f"{name}.jsonl", model=str(folder), context_column="task",
                   engine=engine, chunk_size=4, progress=False)
    local, on_ray = read_jsonl(tmp_path / "local.jsonl"), read_jsonl(tmp_path / "ray.jsonl")
    assert [(d["prompt"], d["context"]) for d in on_ray] == CONTEXT_ROWS
    assert [d["llm"] for d in on_ray] == [d["llm"] for d in local]
    assert {d["llm"] for d in on_ray if d["context"] == "code"} == {"llm-2"}
    assert {d["llm"] for d in on_ray if d["context"] == "chat"} == {"llm-0"}
