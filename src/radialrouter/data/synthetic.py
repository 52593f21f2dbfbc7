"""Synthetic routing data with a learnable structure: for tests, demos and sanity checks of new routers.

Queries come from latent topics; each LLM has its own success rate per topic and a fixed price, so the best
choice depends on the query and a router that reads the query vectors can beat every single LLM.
"""

from __future__ import annotations

import numpy as np

from radialrouter.data.dataset import RoutingDataset
from radialrouter.data.splits import grouped_split


def make_synthetic(
    n_queries: int = 600,
    n_llms: int = 4,
    n_topics: int = 4,
    dim: int = 16,
    noise: float = 0.3,
    seed: int = 0,
    binary: bool = True,
    test_size: float = 0.3,
) -> RoutingDataset:
    """A dataset with embeddings attached (no text encoder needed). LLM ``j`` is strong on topic ``j % n_topics``
    and the LLMs get more expensive with their index, so quality and cost trade off."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_topics, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    topic = rng.integers(0, n_topics, size=n_queries)
    emb = centers[topic] + noise * rng.normal(size=(n_queries, dim)) / np.sqrt(dim)
    p = np.full((n_topics, n_llms), 0.25)
    for j in range(n_llms):
        p[j % n_topics, j] = 0.9
    p[:, -1] = np.maximum(p[:, -1], 0.6)  # the priciest LLM is decent everywhere: a "best single" to beat
    prob = p[topic]
    quality = (rng.random((n_queries, n_llms)) < prob).astype(float) if binary else np.clip(
        prob + 0.1 * rng.normal(size=prob.shape), 0, 1)
    price = np.geomspace(1e-4, 5e-3, n_llms)  # USD per query: 0.1 … 5 USD per 1,000 queries
    cost = price * rng.uniform(0.8, 1.2, size=(n_queries, n_llms))
    ds = RoutingDataset.from_arrays(
        prompts=[f"synthetic query {i} on topic {t}" for i, t in enumerate(topic)],
        quality=quality,
        llms=[f"llm-{j}" for j in range(n_llms)],
        cost=cost,
        tasks=[f"task-{t % 2}" for t in topic],
        source=f"synthetic(seed={seed})",
    )
    return grouped_split(ds, test_size=test_size, seed=seed).with_embeddings(emb.astype(np.float32))
