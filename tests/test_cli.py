"""The `radialrouter` command: eval's JSON schema, data inspect, and clean errors instead of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
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
    assert {r["lam"] for r in rows} == set(doc["meta"]["presets"].values())  # named trade-offs of this pool
    for r in rows:
        assert {"router", "lam", "perf", "cost", "score"} <= set(r)
        assert abs(r["score"] - (r["perf"] - r["lam"] * r["cost"])) < 1e-9
    assert (tmp_path / "rep" / "report.md").exists()
    assert (tmp_path / "rep" / "perf_vs_cost.png").stat().st_size > 1000
    assert "oracle" in result.output


def test_second_eval_computes_no_embeddings(tmp_path, monkeypatch):
    from radialrouter.core.encoders import QueryEncoder

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
    assert summary["n_queries"] == 40 and summary["n_llms"] == 3  # kept: the missing cell is reported, not dropped
    assert summary["complete_rows"] == 39 and summary["excluded"] == []
    small = summary["llms"][0]
    assert {"llm", "mean_quality", "mean_cost_per_1k"} <= set(small)
    assert small["observed_rows"] == 39 and small["coverage"] == pytest.approx(39 / 40)
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "d.parquet"), "--json", "--missing", "exclude"])
    summary = json.loads(result.output)
    assert summary["n_queries"] == 39 and "excluded 1 row" in summary["excluded"][0]
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "d.parquet")])
    assert result.exit_code == 0 and "missing cells: 1 of 40 queries" in result.output
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "d.parquet"), "--missing", "drop"])
    assert result.exit_code != 0 and str(result.exception) == "--missing must be keep or exclude; got 'drop'"


def test_bad_data_is_one_line_error_exit_2(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "data", "inspect", str(tmp_path / "empty.csv")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "empty" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pickle_needs_trust_pickle_flag(tmp_path):
    wide_frame(n=40).to_pickle(tmp_path / "d.pkl")
    refused = subprocess.run([sys.executable, "-m", "radialrouter", "data", "inspect", str(tmp_path / "d.pkl")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "unpickling runs any code" in refused.stderr
    assert "--trust-pickle" in refused.stderr and "to_parquet" in refused.stderr
    allowed = runner.invoke(app, ["data", "inspect", str(tmp_path / "d.pkl"), "--json", "--trust-pickle"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["n_queries"] == 40


def test_route_reports_cost_in_one_unit_everywhere():
    """Text, --json and Python all give USD per query under a name that says so (issue 14, item 3)."""
    from radialrouter.routers.embedded import embedded_dir, load_embedded

    if not (embedded_dir() / "config.json").exists():
        import pytest

        pytest.skip("the embedded default router is not built")
    query = "What is the capital of France?"
    decision = load_embedded().route(query)[0]
    as_json = runner.invoke(app, ["route", "--json", query])
    assert as_json.exit_code == 0, as_json.output
    record = json.loads(as_json.output.strip().splitlines()[-1])
    assert "expected_cost" not in record and record["expected_cost_usd"] == decision.expected_cost_usd
    assert decision.expected_cost == decision.expected_cost_usd  # the old name is an alias, same unit
    text = runner.invoke(app, ["route", query])
    assert text.exit_code == 0, text.output
    assert f"expected cost {decision.expected_cost_usd:.6f} USD/query" in text.output


def test_example_serve_config_validates_as_written():
    """`radialrouter config validate examples/serve.yaml`, as the docs print it, from the repository root."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, **{k: "x" for k in ("OPENAI_API_KEY", "TOGETHER_API_KEY", "RADIALROUTER_KEY_SEARCH",
                                              "RADIALROUTER_KEY_CHAT")}}
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "config", "validate", "examples/serve.yaml"],
                          capture_output=True, text=True, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "ok: examples/serve.yaml is valid (3 LLMs" in proc.stderr and "warning" not in proc.stderr
    assert "--save" not in (root / "examples" / "serve.yaml").read_text()


def test_help_and_data_inspect_start_without_torch(tmp_path):
    """Start-up time (issue 14, item 6): --help loads neither torch nor pandas, data inspect not torch."""
    wide_frame(n=20).to_parquet(tmp_path / "d.parquet")
    code = ("import sys\nfrom radialrouter.cli import app\nsys.argv = ['radialrouter', *sys.argv[1:]]\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'pandas', 'transformers', 'sklearn') if m in sys.modules))")
    help_run = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert "LOADED []" in help_run.stdout, help_run.stdout + help_run.stderr
    inspect_run = subprocess.run([sys.executable, "-c", code, "data", "inspect", str(tmp_path / "d.parquet")],
                                 capture_output=True, text=True)
    assert "3 LLMs" in inspect_run.stdout and "LOADED ['pandas']" in inspect_run.stdout, inspect_run.stdout


def test_flags_show_no_value_type_and_flag_values_are_not_routed():
    """`--json <bool>` in --help read as if the flag took a value; `route --json true` then routed "true"."""
    help_text = runner.invoke(app, ["route", "--help"], terminal_width=200).output
    json_line = next(line for line in help_text.splitlines() if "--json" in line)
    assert "<bool>" not in json_line and "<bool>" not in help_text
    result = runner.invoke(app, ["route", "--json", "true"])
    assert result.exit_code != 0 and "looks like a value for a flag" in str(result.exception)


def test_route_warns_on_empty_queries_and_shows_encoding_progress(tmp_path):
    from radialrouter.routers.embedded import embedded_dir

    if not (embedded_dir() / "config.json").exists():
        import pytest

        pytest.skip("the embedded default router is not built")
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "route", "  ", "Sort a list"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning: query 1 is empty" in proc.stderr
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"prompt": f"query number {i}"}) + "\n" for i in range(5)))
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "route", "--input", str(tmp_path / "q.jsonl"),
                           "--output", str(tmp_path / "out.jsonl")], capture_output=True, text=True,
                          env={**__import__("os").environ, "RADIALROUTER_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "routing" in proc.stderr and "/5 " in proc.stderr  # the progress bar (tqdm) on stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5


def test_non_utf8_text_input_names_file_line_and_column(tmp_path):
    (tmp_path / "q.txt").write_bytes(b"first query\nsecond \xff query\n")
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "calibrate", "--model", str(tmp_path),
                           "--queries", str(tmp_path / "q.txt"), "--target-cost", "1"], capture_output=True, text=True)
    from radialrouter.data import DataError
    from radialrouter.policy.calibration import read_queries

    try:
        read_queries(tmp_path / "q.txt")
    except DataError as exc:
        message = str(exc)
    assert message == f"{tmp_path / 'q.txt'}: line 2, column 8: byte 0xff is not UTF-8 text; save the file as UTF-8"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_duplicate_llm_columns_are_named_as_duplicates(tmp_path):
    df = wide_frame(n=10)
    text = df.to_csv(index=False).splitlines()
    header = text[0] + ",small"
    rows = [line + ",1.0" for line in text[1:]]
    (tmp_path / "d.csv").write_text("\n".join([header, *rows]) + "\n")
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "d.csv")])
    assert result.exit_code != 0
    assert "column 'small' appears twice (columns 4 and 10)" in str(result.exception)


def test_score_plot_clips_the_random_curve_and_labels_do_not_overlap():
    from radialrouter.evaluation.report import score_limits, spread_labels

    sweeps = {"radial": [{"lam": 0.0, "score": 0.7}, {"lam": 1.0, "score": 0.5}],
              "knn": [{"lam": 0.0, "score": 0.68}, {"lam": 1.0, "score": 0.45}],
              "random": [{"lam": 0.0, "score": 0.5}, {"lam": 1.0, "score": -3.7}]}
    low, high = score_limits(sweeps)
    assert 0.3 < low < 0.45 and high > 0.7
    assert score_limits({"radial": sweeps["radial"]}) is None  # nothing to clip: matplotlib fits it
    points = [(100.0, 200.0), (101.0, 201.0), (130.0, 203.0), (400.0, 200.0)]
    offsets = spread_labels(points)
    placed = [(x, y + dy) for (x, y), dy in zip(points, offsets)]
    for i in range(len(placed)):
        for j in range(i):
            assert abs(placed[i][0] - placed[j][0]) >= 60 or abs(placed[i][1] - placed[j][1]) >= 9 - 1e-9
    assert offsets[3] == 0.0  # a label far from the others stays where it is


def test_train_auto_cross_validates_and_prints_mean_and_se(tmp_path):
    from radialrouter.evaluation.auto import one_se_choice

    wide_frame(n=120).to_parquet(tmp_path / "d.parquet")
    out = tmp_path / "m"
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "d.parquet"), "--out", str(out), "--router",
                                 "auto", "--auto-folds", "3", "--auto-candidates", "knn,mlp,best-single"])
    assert result.exit_code == 0, result.output
    assert "3-fold cross-validation" in result.output and "auto: chose" in result.output
    record = json.loads((out / "training.json").read_text())["auto"]
    table = {r["router"]: r for r in record["candidates"]}
    assert set(table) == {"knn", "mlp", "best-single"} and record["folds"] == 3
    assert set(record["tradeoffs"]) == {"performance-first", "balance", "cost-first"}
    for name, row in table.items():  # every candidate's line: mean ± SE over the folds
        assert f"{name:10s} Score {row['cv_mean']:.4f} ± {row['cv_se']:.4f}" in result.output
        assert len(row["fold_scores"]) == 3 and set(row["per_tradeoff"]) == set(record["tradeoffs"])
    chosen, _ = one_se_choice({n: (r["cv_mean"], r["cv_se"]) for n, r in table.items()})
    assert record["chosen"] == chosen and table[chosen]["chosen"]
    assert json.loads((out / "config.json").read_text())["router"] == chosen
    at_lam = runner.invoke(app, ["train", "--data", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "m2"),
                                 "--router", "auto", "--candidates", "knn,best-single", "--auto-folds", "2",
                                 "--lam", "cost-first"])  # --candidates: the former name of --auto-candidates
    assert at_lam.exit_code == 0, at_lam.output
    record = json.loads((tmp_path / "m2" / "training.json").read_text())["auto"]
    assert list(record["tradeoffs"]) == ["cost-first"] and record["lam"] > 0 and record["folds"] == 2
    refused = runner.invoke(app, ["train", "--data", str(tmp_path / "d.parquet"), "--out", str(out), "--router",
                                  "auto", "--steps", "5"])
    assert refused.exit_code != 0 and "--router auto" in str(refused.exception)
    for stray in (["--auto-candidates", "knn"], ["--auto-folds", "3"]):
        res = runner.invoke(app, ["train", "--data", str(tmp_path / "d.parquet"), "--out", str(out), *stray])
        assert res.exit_code != 0 and "go with --router auto" in str(res.exception)


# ------------------------------------------------------------------ issue 25: as a new user finds it
def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess: stdout and stderr are pipes, not a terminal (as in `... | less` or a CI log)."""
    import os

    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    return subprocess.run([sys.executable, "-m", "radialrouter", *args], capture_output=True, text=True,
                          env={**environ, **(env or {})})


def test_long_csv_without_quality_is_one_line_naming_the_column(tmp_path):
    """prompt,llm,cost,task was read as a wide file with one LLM named 'cost' (exit 0, "80 queries × 1 LLMs")."""
    import pandas as pd

    rows = [{"prompt": f"p{i}", "llm": m, "cost": 0.001, "task": "t"} for i in range(40) for m in ("a", "b")]
    pd.DataFrame(rows).to_csv(tmp_path / "logs.csv", index=False)
    proc = _run("data", "inspect", "--data", str(tmp_path / "logs.csv"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / 'logs.csv'}: no 'quality' column")


def test_data_inspect_takes_data_option_and_still_the_positional(tmp_path):
    wide_frame(n=20).to_parquet(tmp_path / "d.parquet")
    by_option = runner.invoke(app, ["data", "inspect", "--data", str(tmp_path / "d.parquet"), "--json"])
    assert by_option.exit_code == 0, by_option.output
    by_position = runner.invoke(app, ["data", "inspect", str(tmp_path / "d.parquet"), "--json"])
    assert by_position.exit_code == 0 and json.loads(by_position.output) == json.loads(by_option.output)
    both = runner.invoke(app, ["data", "inspect", "x.csv", "--data", str(tmp_path / "d.parquet")])
    assert both.exit_code != 0 and "not both" in str(both.exception)
    neither = runner.invoke(app, ["data", "inspect"])
    assert neither.exit_code != 0 and "--data PATH" in str(neither.exception)


def _help_texts():
    """(command path, text) for every command's and option's help, as written in the source."""
    import typer.main

    def walk(command, path):
        yield path, command.help or ""
        for param in command.params:
            yield f"{path} {param.name}", getattr(param, "help", None) or ""
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    return list(walk(typer.main.get_command(app), "radialrouter"))


def test_help_texts_lose_no_brackets_to_rich_markup():
    """`pip install 'radialrouter[ray]'` printed as `pip install 'radialrouter'`: rich read [ray] as a style."""
    from rich.text import Text

    texts = _help_texts()
    assert len(texts) > 50
    for where, text in texts:
        assert Text.from_markup(text).plain == text.replace("\\[", "["), where


def test_piped_help_and_tables_are_not_cut(tmp_path):
    """At rich's 80 columns for a pipe, defaults read `radial,mlp,knn,equ…` and long LLM names were cut."""
    route = _run("route", "--help")
    assert "'radialrouter[ray]'" in route.stdout
    for command in (["train"], ["eval"], ["bench"], ["route"], ["calibrate"], ["data", "inspect"]):
        out = runner.invoke(app, [*command, "--help"], env={"COLUMNS": None, "TERMINAL_WIDTH": None}).output
        assert "…" not in out, (command, out)
    df = wide_frame(n=20)
    long_name = "an-organisation/a-rather-long-model-name-v2.1-instruct [beta]"
    df = df.rename(columns={"large": long_name, "large|total_cost": f"{long_name}|total_cost"})
    df.to_parquet(tmp_path / "d.parquet")
    inspect = _run("data", "inspect", "--data", str(tmp_path / "d.parquet"))
    assert inspect.returncode == 0, inspect.stderr
    assert long_name in inspect.stdout and "…" not in inspect.stdout


def test_cli_errors_name_cli_flags_not_python_arguments(tmp_path):
    """Messages said `missing='exclude'`, `pass prompt_column=...`, `a larger lam_max`: none of them a CLI flag."""
    df = wide_frame(n=20)
    df.loc[0, "small"] = None
    df.to_parquet(tmp_path / "d.parquet")
    excluded = runner.invoke(app, ["data", "inspect", "--data", str(tmp_path / "d.parquet"), "--json",
                                   "--missing", "exclude"])
    assert "(--missing exclude;" in json.loads(excluded.output)["excluded"][0]
    typo = _run("data", "inspect", "--data", str(tmp_path / "d.parquet"), "--missing", "drop")
    assert typo.returncode == 2 and typo.stderr == "error: --missing must be keep or exclude; got 'drop'\n"
    wide_frame(n=20).rename(columns={"prompt": "input"}).to_parquet(tmp_path / "p.parquet")
    no_prompt = runner.invoke(app, ["data", "inspect", "--data", str(tmp_path / "p.parquet")])
    message = str(no_prompt.exception)
    assert "rename the query column to 'prompt'" in message and "pass prompt_column" not in message
    lam_max = runner.invoke(app, ["train", "--data", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "m"),
                                  "--router", "knn", "--lam-max", "2"])
    assert str(lam_max.exception) == "router 'knn' does not take --lam-max"  # the flag exists (radial takes it)


def test_route_above_lam_range_names_the_train_flag():
    import warnings

    from radialrouter.routers.base import LamRangeWarning
    from radialrouter.routers.reference import BestSingleRouter

    router = BestSingleRouter()
    router.default_lam_ = 0.0
    router.lam_range = lambda: (0.001, 1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert router._route_lam(5.0) == 1.0
    assert caught[0].category is LamRangeWarning and "--lam-max" in str(caught[0].message)


def test_stderr_carries_no_weight_loading_bar_or_empty_slice_warning(capfd):
    """transformers' "Loading weights" bar and numpy's "Mean of empty slice" read like trouble on a CLI's stderr."""
    import warnings

    import numpy as np

    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.core.objective import observed_mean, tradeoff_presets

    quality = np.array([[np.nan, 0.5], [np.nan, 1.0]])  # an LLM observed on no training row
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        presets = tradeoff_presets(quality, np.full((2, 2), 0.001))
        assert np.isnan(observed_mean(quality)[0]) and observed_mean(quality)[1] == 0.75
    assert presets["balance"] == 0.0
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    QueryEncoder().load()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.get_verbosity() == level  # restored after loading


def test_config_validate_reports_a_typo_before_loading_the_router(tmp_path):
    """`config validate` imported the routers (torch) before reading the YAML: seconds before naming a typo."""
    from pathlib import Path

    config = (Path(__file__).resolve().parents[1] / "examples" / "serve.yaml").read_text()
    assert "max_attempts:" in config
    (tmp_path / "serve.yaml").write_text(config.replace("max_attempts:", "max_atempts:"))
    code = ("import sys\nfrom radialrouter.cli import main\nsys.argv = ['radialrouter', *sys.argv[1:]]\n"
            "try:\n    main()\nfinally:\n    print('LOADED', 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code, "config", "validate", str(tmp_path / "serve.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "server.max_atempts: unknown key; did you mean max_attempts?" in proc.stderr
    assert "LOADED False" in proc.stdout
