"""At Performance First (λ = 0) a router that predicts quality picks the candidate it predicts best (issue #23 5f:
the decision rule is not why routers send fewer queries to the best LLM there; see benchmarks/pf_decision.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radialrouter.data import make_synthetic, with_validation
from radialrouter.routers import make_router

pytestmark = pytest.mark.usefixtures("one_thread")


def _predicted_quality(router, x: np.ndarray) -> np.ndarray:
    if router.name == "radial":  # objective="quality": each satellite's output is its LLM's quality logit
        with torch.inference_mode():
            return torch.sigmoid(router.logits(torch.from_numpy(x), 0.0)).double().numpy()
    return router._quality(x)


@pytest.mark.parametrize("name, params", [
    ("mlp", {}),
    ("equi", {"epochs": 5}),
    ("radial", {"objective": "quality", "d_model": 32, "n_heads": 2, "steps": 100, "eval_every": 50}),
])
def test_pick_at_lambda_zero_is_the_argmax_of_predicted_quality(name, params):
    ds = with_validation(make_synthetic(n_queries=400, dim=32, seed=5), val_size=0.15)
    train, val, test = (ds.select(s) for s in ("train", "val", "test"))
    router = make_router(name, **params).fit(train, val)
    x = np.asarray(test.embeddings, dtype=np.float32)
    quality = _predicted_quality(router, x)
    np.testing.assert_array_equal(router.predict(x, 0.0), quality.argmax(axis=1))
    pool = [llm for llm in router.llms_ if llm != router.llms_[int(quality.mean(0).argmax())]]
    among = np.where(np.isin(router.llms_, pool), quality, -np.inf).argmax(axis=1)
    np.testing.assert_array_equal(router.predict(x, 0.0, candidates=pool), among)
    assert (router.predict(x, 0.0) != router.predict(x, 0.1)).any()  # λ does matter where costs exist
