"""Every ```python block of README.md and docs/*.md runs as a user would paste it.

Each block runs in its own Python process, in a scratch folder shared by the blocks of one document (run in the
order they appear, as a reader would: a file one block writes is there for the next). A block that needs files the
user would have (their logs, probes) says so in the line just above it, so the decision is visible in the doc's
source and not in this test:

- ``<!-- run-with: logs.parquet=routerbench3.parquet:200, ... -->``: before the block, write each named file into
  the scratch folder from the shared data set (``../shared/data``), N rows spread evenly over it when ``:N`` is
  given (the block then runs on that small subset). Skipped, with the reason, when the shared data is absent.
- ``<!-- not-run: reason -->``: the block is not run (it needs a running server or cluster, say); the reason is the
  skip message.

Any other block must run as it stands, from an empty folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*(not-run|run-with):\s*(.*?)\s*-->$")
TIMEOUT_S = 180


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    code: str
    marker: str | None  # "not-run", "run-with" or None
    argument: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def python_blocks(doc: Path) -> list[Block]:
    """The ```python blocks of ``doc`` with the marker on the line above each (blank lines between allowed)."""
    lines = doc.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            above = next((x.strip() for x in reversed(lines[:start]) if x.strip()), "")
            match = MARKER.match(above)
            out.append(Block(doc, start + 1, "\n".join(body) + "\n", match and match.group(1),
                             match.group(2) if match else ""))
        i += 1
    return out


BLOCKS = [b for doc in DOCS for b in python_blocks(doc)]


def test_the_docs_have_python_blocks_and_every_skip_says_why():
    """The extraction finds the blocks (a broken parser would silently test nothing), and every not-run marker
    gives a reason."""
    assert len(BLOCKS) >= 6 and {b.doc.name for b in BLOCKS} >= {"README.md", "batch.md", "pool-and-budgets.md"}
    for block in BLOCKS:
        if block.marker == "not-run":
            assert len(block.argument) > 20, f"{block.id}: say why the block is not run"


def _files(spec: str, into: Path) -> None:
    """Write ``name=source[:rows]`` files (``run-with``) from the shared data into the scratch folder."""
    import numpy as np
    import pandas as pd

    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, sep, source = item.partition("=")
        file, _, rows = source.partition(":")
        if not sep or not (SHARED / file).is_file():
            raise ValueError(f"run-with: {item!r} must be NAME=FILE[:ROWS] with FILE in {SHARED}")
        if (into / name).exists():
            continue
        frame = pd.read_parquet(SHARED / file)
        if rows:  # spread over the file, so every task and split is in the subset
            frame = frame.iloc[np.linspace(0, len(frame) - 1, min(int(rows), len(frame))).astype(int)]
        if name.endswith(".parquet"):
            frame.to_parquet(into / name)
        elif name.endswith(".jsonl"):
            frame.to_json(into / name, orient="records", lines=True)
        else:
            raise ValueError(f"run-with: cannot write {name!r} (.parquet or .jsonl)")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One scratch folder per document, shared by its blocks."""
    folders: dict[Path, Path] = {}

    def folder(doc: Path) -> Path:
        if doc not in folders:
            folders[doc] = tmp_path_factory.mktemp(doc.stem)
        return folders[doc]

    return folder


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_python_block_runs(block: Block, scratch):
    if block.marker == "not-run":
        pytest.skip(f"{block.id} is marked not-run: {block.argument}")
    cwd = scratch(block.doc)
    if block.marker == "run-with":
        if not SHARED.is_dir():
            pytest.skip(f"{block.id} needs the shared data sets in {SHARED}, which is absent")
        _files(block.argument, cwd)
    # The embedding cache in the scratch folder: a doc's run never reads or grows the user's own.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "RADIALROUTER_CACHE": str(cwd / ".cache")}
    try:
        done = subprocess.run([sys.executable, "-c", block.code], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {TIMEOUT_S} s")
    assert done.returncode == 0, f"{block.id} fails as pasted:\n{done.stderr[-3000:]}"
