"""Thread budget and training progress (issue 14, item 1): no oversubscription by default, --threads everywhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import wide_frame

from radialrouter.core import threads


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    monkeypatch.delenv("RADIALROUTER_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.1, 2.0, 1.5))
    assert threads.default_threads() == 1  # a loaded 2-core machine: one thread, not two fighting for one core
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert threads.default_threads() == threads.MAX_DEFAULT_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.setenv("RADIALROUTER_THREADS", "2")
    assert threads.default_threads() == 2


@pytest.mark.parametrize("command", ["train", "eval", "route", "calibrate", "bench", "serve"])
def test_every_computing_command_takes_threads(command):
    from typer.testing import CliRunner

    from radialrouter.cli import app

    out = CliRunner().invoke(app, [*command.split(), "--help"], terminal_width=200).output
    assert "--threads" in out
    out = CliRunner().invoke(app, ["pool", "add", "--help"], terminal_width=200).output
    assert "--threads" in out


def test_train_shows_threads_and_a_progress_bar(tmp_path):
    wide_frame(n=120).to_parquet(tmp_path / "d.parquet")
    env = {**os.environ, "RADIALROUTER_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "train", "--data", str(tmp_path / "d.parquet"),
                           "--out", str(tmp_path / "m"), "--steps", "30", "--threads", "1", "--encoder", "static"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 CPU thread(s)" in proc.stderr
    assert "step/s" in proc.stderr and "loss=" in proc.stderr  # tqdm: steps, rate, ETA, loss, validation Score
    assert "trained in" in proc.stderr and "saved to" in proc.stdout
