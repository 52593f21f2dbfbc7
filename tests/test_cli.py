"""The `radialrouter` command: eval's JSON schema, data inspect, and clean errors instead of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import wide_frame
from typer.testing import CliRunner

from radialrouter.cli import app

runner = CliRunner()


def test_eval_writes_stable_json_and_report(tmp_path):
    wide_frame(n=80).to_parquet(tmp_path / "d.parquet")
    result = runner.invoke(app, ["eval", "--data", str(tmp_path / "d.parquet"), "--json", str(tmp_path / "r.json"),
                                 "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    rows = doc["results"]
    assert {r["router"] for r in rows} == {"oracle", "best-single", "task-best", "random"}
    assert {r["lam"] for r in rows} == {0.0, 0.02, 0.1}
    for r in rows:
        assert {"router", "lam", "perf", "cost", "score"} <= set(r)
        assert abs(r["score"] - (r["perf"] - r["lam"] * r["cost"])) < 1e-9
    assert (tmp_path / "rep" / "report.md").exists()
    assert (tmp_path / "rep" / "perf_vs_cost.png").stat().st_size > 1000
    assert "oracle" in result.output


def test_second_eval_computes_no_embeddings(tmp_path, monkeypatch):
    from radialrouter.encoders import QueryEncoder

    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))
    computed: list[int] = []
    compute = QueryEncoder._compute

    def recording(self, texts, *args, **kwargs):
        computed.append(len(texts))
        return compute(self, texts, *args, **kwargs)

    monkeypatch.setattr(QueryEncoder, "_compute", recording)
    wide_frame(n=40).to_parquet(tmp_path / "d.parquet")
    command = ["eval", "--data", str(tmp_path / "d.parquet"), "--routers", "knn,oracle"]
    first = runner.invoke(app, command)
    assert first.exit_code == 0, first.output
    assert sum(computed) == 40  # every distinct prompt once
    second = runner.invoke(app, command)
    assert second.exit_code == 0, second.output
    assert sum(computed) == 40  # the second run read them all from the cache
    assert (tmp_path / "cache").is_dir()


def test_data_inspect(tmp_path):
    df = wide_frame(n=40)
    df.loc[0, "small"] = None
    df.to_parquet(tmp_path / "d.parquet")
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "d.parquet"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["n_queries"] == 39 and summary["n_llms"] == 3
    assert "excluded 1 row" in summary["excluded"][0]
    assert {"llm", "mean_quality", "mean_cost_per_1k"} <= set(summary["llms"][0])


def test_bad_data_is_one_line_error_exit_2(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "data", "inspect", str(tmp_path / "empty.csv")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "empty" in proc.stderr
    assert "Traceback" not in proc.stderr
