"""`radialrouter serve` with the package's embedded routers (no ``router.path``), static encoder and all — the
default MLP and the RadialRouter (``router.embedded: radial``) — over real HTTP in front of fake backends: what a
user who follows the README's quick start gets."""

from __future__ import annotations

import httpx
import pytest

from radialrouter.routers.embedded import DEFAULT_EMBEDDED, EMBEDDED
from radialrouter.serve import parse_config
from radialrouter.serve.app import create_app
from radialrouter.serve.routing import ROUTING_CHARS
from radialrouter.serve.testing import ServerThread, fake_backends

pytestmark = pytest.mark.skipif(not all((d / "config.json").exists() for d in EMBEDDED.values()),
                                reason="the embedded routers are not built")

#: pool name → (the embedded router's LLM, USD per million input and output tokens)
POOL = {"gpt-4": ("gpt-4-1106-preview", 10.0, 30.0), "mixtral": ("mistralai/mixtral-8x7b-chat", 0.6, 0.6),
        "mistral-7b": ("mistralai/mistral-7b-chat", 0.2, 0.2)}
KEY = {"authorization": "Bearer sk-default"}


@pytest.fixture(scope="module", params=["default", "radial"])
def gateway(request, tmp_path_factory):
    """A gateway on the default embedded router (no ``router`` section at all) or on the embedded RadialRouter."""
    with fake_backends(POOL) as (fakes, base):
        llms = [{"name": name, "base_url": f"{base}/{name}/v1", "router_llm": llm, "input_price": p_in,
                 "output_price": p_out, "context_window": 100_000} for name, (llm, p_in, p_out) in POOL.items()]
        ledger = {"path": str(tmp_path_factory.mktemp("default") / "log.sqlite"), "log_prompts": True}
        router = {} if request.param == "default" else {"router": {"embedded": request.param}}
        config = parse_config({**router, "llms": llms, "auth": {"keys": [{"id": "u", "key": "${RR_DEFAULT_KEY}"}]},
                               "ledger": ledger, "server": {"batch_max_wait_ms": 1}},
                              env={"RR_DEFAULT_KEY": "sk-default"})
        app = create_app(config)
        with ServerThread(app) as thread, httpx.Client(base_url=thread.url, headers=KEY, timeout=60) as client:
            yield app, client, fakes


def _route(client: httpx.Client, content: str, model: str = "radial") -> dict:
    r = client.post("/v1/route", json={"model": model, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_default_router_is_the_embedded_router(gateway, request):
    """No ``router.path``: the server loads the package's router (the MLP unless ``router.embedded`` names
    another) and ranks the pool with it; RadialRouter also gives probabilities over the pool."""
    app, client, _ = gateway
    asked = request.node.callspec.params["gateway"]
    embedded = DEFAULT_EMBEDDED if asked == "default" else asked
    assert DEFAULT_EMBEDDED == "mlp"
    router = app.state.serve.router
    assert router.name == embedded and len(router.llms_) == 11
    decision = _route(client, "Write a Python function that merges two sorted lists.")
    assert decision["llm"] in POOL and sorted(decision["ranking"]) == sorted(POOL)
    assert decision["ranking"][0] == decision["llm"]
    if embedded == "radial":
        assert set(decision["probabilities"]) == set(POOL)
        assert sum(decision["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_chat_through_the_default_router_answers_from_the_chosen_llm(gateway):
    """A chat request with ``model: radial`` is answered by the LLM the router chose, and reports the decision."""
    _, client, fakes = gateway
    r = client.post("/v1/chat/completions", json={"model": "radial", "messages": [
        {"role": "user", "content": "What is the capital of France?"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["router"]["routed"] and body["model"] == body["router"]["llm"] == body["router"]["choice"]
    assert body["choices"][0]["message"]["content"] == f"Hello from {body['model']}."
    assert fakes[body["model"]].calls >= 1 and body["router"]["cost_usd"] > 0


def test_the_default_router_trades_quality_for_cost(gateway):
    """A named trade-off moves decisions: cost-first never expects to spend more than performance-first."""
    _, client, _ = gateway
    for prompt in ("Prove that there are infinitely many primes.", "hi", "Translate 'cat' into French."):
        best = _route(client, prompt, "radial:performance-first")
        cheap = _route(client, prompt, "radial:cost-first")
        assert cheap["expected_cost_usd"] <= best["expected_cost_usd"] + 1e-12
        assert cheap["lam"] > best["lam"]


def test_the_router_reads_the_last_16384_characters_of_the_routing_text(gateway):
    """Guarantees: the router reads a bounded tail of the conversation, the last 16,384 characters of its routing
    text — what the decision log stores as the routed text — so two prompts that differ only before that tail get
    the same decision, and a change at its end is read."""
    app, client, _ = gateway
    tail = ("Explain how a B-tree keeps itself balanced when keys are inserted. " * 400)[-ROUTING_CHARS:]
    assert ROUTING_CHARS == 16_384
    long_prompt = "Write a sonnet about the sea. " * 200 + tail
    first = _route(client, long_prompt)
    second = _route(client, "Integrate x squared from 0 to 1. " * 300 + tail)
    assert first["scores"] == pytest.approx(second["scores"], abs=1e-9)
    changed = _route(client, long_prompt[:-60] + " Now write the same answer as a Python program, please.")
    assert changed["scores"] != pytest.approx(first["scores"], abs=1e-9)
    r = client.post("/v1/chat/completions", json={"model": "radial", "messages": [
        {"role": "user", "content": long_prompt}]})
    assert r.status_code == 200
    ledger = app.state.serve.ledger
    rows = [row for row in _rows(ledger) if row["request_id"] == r.json()["id"]]
    assert rows and rows[0]["prompt"] == long_prompt[-ROUTING_CHARS:]


def _rows(ledger) -> list[dict]:
    import time

    deadline = time.monotonic() + 10
    while ledger.backlog() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)
    return [dict(r) for r in ledger.rows()]
