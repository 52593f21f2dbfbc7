"""Issue #25, a new user's first runs: ``train`` encodes the union of its splits once and says what it costs before
it starts; ``route --input`` moves its bar within a chunk and reads the embeddings ``train`` cached without a flag;
``bench`` keeps every finished router × seed on disk, resumes from them, and estimates time per router."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import wide_frame
from typer.testing import CliRunner

from radialrouter.cli import app
from radialrouter.core.encoders import QueryEncoder

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A knn router on MiniLM (a transformer encoder) trained by the CLI with a private cache: (dir, cache, data)."""
    root = tmp_path_factory.mktemp("ux")
    wide_frame(n=70).to_parquet(root / "d.parquet")
    cache = root / "cache"
    result = runner.invoke(app, ["train", "--data", str(root / "d.parquet"), "--out", str(root / "knn"), "--router",
                                 "knn", "--threads", "1"], env={"RADIALROUTER_CACHE": str(cache)})
    assert result.exit_code == 0, result.output
    return root / "knn", cache, root / "d.parquet", result.output


def _count_vectors(cache) -> int:
    import sqlite3

    (file,) = cache.glob("embeddings-*.sqlite")
    with sqlite3.connect(file) as db:
        return int(db.execute("SELECT COUNT(*) FROM emb").fetchone()[0])


# ---------------------------------------------------------------------------------------------- item 2: train
def test_train_announces_the_encoding_and_encodes_the_union_once(trained, monkeypatch):
    _, cache, _, output = trained
    assert "read " in output and "70 new prompts of 70 with all-MiniLM-L6-v2" in output
    assert "on this machine, once: cached in" in output and "encoded in" in output
    assert output.index("encoding 70 new prompts") < output.index("training knn")
    assert _count_vectors(cache) == 70
    # A second run reads everything from the cache and says so; the encoder computes nothing.
    calls = []
    monkeypatch.setattr(QueryEncoder, "_compute", lambda self, texts, *a, **k: calls.append(len(texts)))
    out = runner.invoke(app, ["train", "--data", str(trained[2]), "--out", str(cache.parent / "again"), "--router",
                              "knn", "--threads", "1"], env={"RADIALROUTER_CACHE": str(cache)})
    assert out.exit_code == 0, out.output
    assert "all 70 prompts are in the embedding cache" in out.output and calls == []


def test_embed_together_calls_the_encoder_once_for_all_splits(tmp_path):
    from radialrouter.data import embed_together, load_splits

    wide_frame(n=40).to_parquet(tmp_path / "d.parquet")
    _, train, val, test = load_splits(str(tmp_path / "d.parquet"), seed=0)
    encoder = QueryEncoder("static", cache_dir=False)
    calls = []
    original = encoder.encode
    encoder.encode = lambda texts, **kw: calls.append(len(texts)) or original(texts, **kw)
    got = embed_together(encoder, [train, val, test])
    assert calls == [40]
    for d, e in zip((train, val, test), got):
        np.testing.assert_allclose(e.embeddings, original(d.prompts.tolist()), rtol=1e-6)
    assert embed_together(encoder, [train, None])[1] is None


def test_estimate_seconds_counts_only_uncached_prompts(tmp_path):
    encoder = QueryEncoder("static", cache_dir=tmp_path)
    prompts = [f"prompt {i}" for i in range(20)]
    encoder.encode(prompts[:5])
    seconds, missing = encoder.estimate_seconds(prompts, sample=4)
    assert missing == 15 and seconds >= 0
    assert len(encoder.uncached(prompts)) == 11  # the timed sample is cached, not wasted
    assert encoder.estimate_seconds(prompts[:5]) == (0.0, 0)


# ---------------------------------------------------------------------------------------------- item 3: route
def test_route_bar_moves_within_one_chunk(trained, tmp_path, monkeypatch):
    from radialrouter.batch import route_file

    router_dir, _, _, _ = trained
    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "empty"))
    prompts = [f"new question {i} about sorting lists" for i in range(70)]
    pq.write_table(pa.table({"prompt": prompts}), tmp_path / "q.parquet")
    ticks, chunks = [], []
    summary = route_file(tmp_path / "q.parquet", tmp_path / "out.jsonl", model=str(router_dir), chunk_size=8192,
                         progress=False, on_progress=ticks.append, on_chunk=chunks.append)
    assert summary.rows == 70 and chunks == [70]
    assert len(ticks) > 1 and sum(ticks) == 70  # per encoder mini-batch (32), not once per 8,192-row chunk
    assert not (tmp_path / "empty").exists()  # reading the cache by default never creates one


def test_second_route_reads_what_train_cached_and_adds_nothing(trained, tmp_path, monkeypatch):
    import pandas as pd

    from radialrouter.batch import route_file

    router_dir, cache, data, _ = trained
    monkeypatch.setenv("RADIALROUTER_CACHE", str(cache))
    prompts = pd.read_parquet(data)["prompt"].tolist()
    pq.write_table(pa.table({"prompt": prompts}), tmp_path / "seen.parquet")
    before = _count_vectors(cache)
    computed = []
    original = QueryEncoder._compute

    def spy(self, texts, *args, **kwargs):
        computed.append(len(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(QueryEncoder, "_compute", spy)
    route_file(tmp_path / "seen.parquet", tmp_path / "a.jsonl", model=str(router_dir), progress=False)
    assert computed == []  # every prompt came from the cache train filled: no forward pass
    pq.write_table(pa.table({"prompt": ["a prompt nobody encoded"]}), tmp_path / "new.parquet")
    route_file(tmp_path / "new.parquet", tmp_path / "b.jsonl", model=str(router_dir), progress=False)
    assert computed == [1] and _count_vectors(cache) == before  # writing stays opt-in (--cache)
    route_file(tmp_path / "new.parquet", tmp_path / "c.jsonl", model=str(router_dir), progress=False,
               use_cache="write")
    assert _count_vectors(cache) == before + 1
    with pytest.raises(ValueError, match="use_cache must be one of"):
        route_file(tmp_path / "new.parquet", None, model=str(router_dir), progress=False, use_cache="sometimes")


# ---------------------------------------------------------------------------------------------- item 4: bench
def test_interrupted_bench_keeps_finished_units_and_resumes(tmp_path, monkeypatch):
    from radialrouter.evaluation import bench

    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))
    wide_frame(n=60).to_parquet(tmp_path / "d.parquet")
    args = ["bench", "--data", str(tmp_path / "d.parquet"), "--routers", "best-single,oracle", "--seeds", "0,1",
            "--out", str(tmp_path / "out"), "--no-encoder-latency"]
    real = bench._bench_router
    fitted: list[tuple[str, int]] = []

    def failing_after_first(name, seed, *a, **k):
        if fitted:
            raise RuntimeError("injected failure after the first router")
        fitted.append((name, seed))
        return real(name, seed, *a, **k)

    monkeypatch.setattr(bench, "_bench_router", failing_after_first)
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "injected failure" in str(result.exception)
    assert "kept in" in result.output and "run the same command again to resume" in result.output
    units = list((tmp_path / "out" / "d.partial").glob("*/seed*.json"))
    assert [u.name for u in units] == ["seed0-best-single.json"]
    assert json.loads(units[0].read_text())["run"]["results"]

    fitted.clear()

    def counting(name, seed, *a, **k):
        fitted.append((name, seed))
        return real(name, seed, *a, **k)

    monkeypatch.setattr(bench, "_bench_router", counting)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert ("best-single", 0) not in fitted and len(fitted) == 3  # resumed without refitting it
    assert "1 unit(s) reused" in result.output
    doc = json.loads((tmp_path / "out" / "d.json").read_text())
    assert {(r["router"], r["seed"]) for r in doc["results"]} == {(n, s) for n in ("best-single", "oracle")
                                                                  for s in (0, 1)}
    assert doc["meta"]["resumed_units"] == [[0, "best-single"]]
    assert not (tmp_path / "out" / "d.partial").exists()  # the report holds every unit now


def test_partial_results_are_keyed_by_data_and_arguments(tmp_path):
    from radialrouter.evaluation.bench import PartialResults

    a = PartialResults(tmp_path, {"data_fingerprint": "abc", "lams": [0.0]})
    a.save(0, "knn", "split0", {"results": [{"score": np.float32(0.5)}], "fit_seconds": [1.0]}, 2.0)
    assert a.load(0, "knn", "split0")["results"][0]["score"] == 0.5
    assert a.load(0, "knn", "other-split") is None  # the seed's split changed
    assert PartialResults(tmp_path, {"data_fingerprint": "abd", "lams": [0.0]}).load(0, "knn", "split0") is None
    assert PartialResults(tmp_path, {"data_fingerprint": "abc", "lams": [0.1]}).load(0, "knn", "split0") is None


def test_eta_uses_each_routers_own_time():
    from radialrouter.evaluation.bench import BenchEta

    eta = BenchEta()
    eta.record("oracle", 0.01)
    eta.record("radial", 300.0)
    seconds, untimed = eta.remaining(["oracle", "radial", "radial", "knn"])
    assert seconds == pytest.approx(600.01) and untimed == 1
    assert eta.describe(["radial", "radial"]) == "ETA 10 min"
    assert eta.describe(["radial", "knn"]).startswith("ETA ≥ 5 min (1 unit")


def test_an_onnx_export_is_announced_only_when_it_will_happen(tmp_path, monkeypatch):
    from radialrouter.core.encoders import onnx_available

    monkeypatch.setenv("RADIALROUTER_ONNX_DIR", str(tmp_path / "onnx"))
    assert not QueryEncoder("static").will_build_onnx()
    assert not QueryEncoder(backend="torch").will_build_onnx()
    assert not QueryEncoder(precision="bf16", backend="torch").will_build_onnx()
    assert QueryEncoder(precision="fp32").will_build_onnx() == onnx_available()
