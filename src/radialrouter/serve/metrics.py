"""Prometheus metrics for one server instance (its own registry, so several apps can live in one process).

Label values come only from the config (LLM names, client ids, trade-off names) — never from request content —
so the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Labelled:
    """A collector that adds one constant label (the replica) to every sample of a registry."""

    def __init__(self, registry: CollectorRegistry, name: str, value: str) -> None:
        self.registry, self.name, self.value = registry, name, value

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                out.add_sample(s.name, {**s.labels, self.name: self.value}, s.value, s.timestamp, s.exemplar)
            yield out


class _OneClient:
    """A collector that keeps only the samples labelled ``client="<id>"``: what one client key may see."""

    def __init__(self, registry: CollectorRegistry, client: str) -> None:
        self.registry, self.client = registry, client

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [s for s in family.samples if s.labels.get("client") == self.client]
            if samples:
                out = Metric(family.name, family.documentation, family.type, family.unit)
                out.samples = samples
                yield out


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, replica: str | None = None) -> None:
        """``replica`` (when set) labels every series ``replica="<id>"``, so the replicas behind one load balancer
        stay apart when scraped into one Prometheus."""
        self.registry = CollectorRegistry()
        self._exposed = self.registry
        if replica is not None:
            self._exposed = CollectorRegistry(auto_describe=False)
            self._exposed.register(_Labelled(self.registry, "replica", replica))
        r = self.registry
        self.requests = Counter("radialrouter_requests", "Chat requests by serving LLM, mode and outcome.",
                                ["llm", "mode", "outcome"], registry=r)
        self.cost = Counter("radialrouter_cost_usd", "USD spent (backend-reported usage × price table).",
                            ["llm", "client"], registry=r)
        self.tokens = Counter("radialrouter_tokens", "Tokens reported by backends.", ["llm", "client", "kind"],
                              registry=r)
        self.usage_missing = Counter("radialrouter_usage_missing", "Responses without usage (cost unknown).",
                                     ["llm"], registry=r)
        self.upstream_errors = Counter("radialrouter_upstream_errors", "Failed backend attempts by reason.",
                                       ["llm", "reason"], registry=r)
        self.fallbacks = Counter("radialrouter_fallbacks", "Requests served by another LLM than the first choice.",
                                 ["llm"], registry=r)
        self.decision_seconds = Histogram("radialrouter_decision_seconds", "Routing decision time, batching "
                                          "included.", buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("radialrouter_batch_size", "Requests per encoder/router call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.upstream_seconds = Histogram("radialrouter_upstream_seconds", "Backend time to response headers.",
                                          ["llm"], buckets=_LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("radialrouter_rejected", "Requests refused before any backend call, by reason "
                                "(busy, budget_exceeded, rate_limited, database_unavailable).", ["reason"], registry=r)
        self.reservation_exceeded = Counter("radialrouter_reservation_exceeded", "Requests that cost more than their "
                                            "budget reservation (no max_tokens and a long answer).", ["client"],
                                            registry=r)
        self.commit_wait = Histogram("radialrouter_ledger_commit_wait_seconds", "Time a response waited for its "
                                     "decision-log row to commit (ledger.wait_for_commit).",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.ledger_dropped = Counter("radialrouter_ledger_dropped", "Decision-log rows dropped (queue full).",
                                      registry=r)
        self.refused = Counter("radialrouter_refused", "Requests refused before any backend call, per key and "
                               "outcome (only a sample of them is written to the decision log).",
                               ["client", "outcome"], registry=r)

    def render(self, client: str | None = None) -> bytes:
        """The exposition: every series, or (``client``) only that client's own series — a client key must not
        read other tenants' spend or traffic."""
        if client is None:
            return generate_latest(self._exposed)
        own = CollectorRegistry(auto_describe=False)
        own.register(_OneClient(self._exposed, client))
        return generate_latest(own)
