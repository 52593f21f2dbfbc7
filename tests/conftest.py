"""Shared fixtures: small routing tables written to disk in every supported format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROUTERBENCH3 = SHARED_DATA / "routerbench3.parquet"
ROUTERDC7 = SHARED_DATA / "routerdc7.parquet"

needs_shared = pytest.mark.skipif(
    not ROUTERBENCH3.exists(), reason=f"shared routing data not found at {SHARED_DATA} (it sits beside the checkout)"
)

LLMS = ["small", "medium", "large"]


def wide_frame(n: int = 30, seed: int = 0) -> pd.DataFrame:
    """A RouterBench-layout table: prompt, eval_name, one quality and one `|total_cost` column per LLM."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(n)],
        "prompt": [f"question number {i} about {'maths' if i % 2 else 'history'}" for i in range(n)],
        "eval_name": ["maths" if i % 2 else "history" for i in range(n)],
    })
    for j, llm in enumerate(LLMS):
        df[llm] = (rng.random(n) < 0.4 + 0.2 * j).astype(float)
        df[f"{llm}|total_cost"] = 0.001 * (j + 1) * rng.uniform(0.9, 1.1, n)
    return df


@pytest.fixture
def wide_df() -> pd.DataFrame:
    return wide_frame()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny torch models on a shared 2-core CPU: one intra-op thread is many times faster than oversubscribed ones.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server: ``$RADIALROUTER_TEST_PG_URL`` (a superuser URL; `.ci/run` starts one), else a
    throwaway cluster started here with initdb + pg_ctl; skipped when neither is possible."""
    import os

    url = os.environ.get("RADIALROUTER_TEST_PG_URL")
    if url:
        yield url
        return
    from radialrouter.serve.pgtesting import TemporaryPostgres, find_bin_dir

    if find_bin_dir() is None:
        pytest.skip("no PostgreSQL: set RADIALROUTER_TEST_PG_URL or install the binaries (apt-get install postgresql)")
    with TemporaryPostgres() as pg:
        yield pg.url


@pytest.fixture()
def pg_url(pg_server):
    """A fresh empty database on the test server (dropped afterwards)."""
    import uuid

    import psycopg
    from sqlalchemy import make_url

    name = f"rr_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(pg_server).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


CONTEXT_WORDS = ["summarise this", "check this", "fix this", "explain this", "shorten this", "rewrite this"]


def train_context_router(folder):
    """A router trained with a context (issue #23 item 3): the same words under task 'code' need llm-2 (only it
    solves them), under 'chat' every LLM does, so the cheapest (llm-0) wins. Saved in ``folder``; returns it."""
    import warnings

    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.data import RoutingDataset
    from radialrouter.routers import make_router

    words = CONTEXT_WORDS * 4
    tasks = ["code"] * 12 + ["chat"] * 12
    quality = [[0.0, 0.0, 1.0]] * 12 + [[1.0, 1.0, 1.0]] * 12
    ds = RoutingDataset.from_arrays(words, quality, ["llm-0", "llm-1", "llm-2"], tasks=tasks,
                                    cost=[[1e-4, 1e-3, 1e-2]] * len(quality)).embed(QueryEncoder(cache_dir=False),
                                                                                     progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one member: the weight fit may fall back
        router = make_router("ensemble", members=["knn"], context=True, context_prior=0.0, val_fraction=0.5)
        router.fit(ds).save_pretrained(folder)
    return router
