"""No client input gives a 5xx: the request validator as a property (hypothesis), and the published OpenAPI schema
fuzzed against a running server (schemathesis, positive and negative examples, check "not a server error")."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from radialrouter.data import make_synthetic
from radialrouter.routers import make_router
from radialrouter.serve import parse_config
from radialrouter.serve.api.validation import check_chat_body
from radialrouter.serve.app import create_app
from radialrouter.serve.routing import (
    RequestError,
    context_text,
    requested_output_tokens,
    required_capabilities,
    routing_text,
)
from radialrouter.serve.state import _parse_body
from radialrouter.serve.testing import ServerThread, fake_backends

AUTH = {"authorization": "Bearer sk-fuzz"}

# ------------------------------------------------------------------------------------- the validator as a property
_text = st.one_of(st.text(max_size=12), st.sampled_from(["user", "text", "image_url", "json_object", "x\ud800"]))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), _text)
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(_text, inner, max_size=4)), max_leaves=20)
_message = st.fixed_dictionaries({}, optional={"role": _json, "content": _json, "tool_calls": _json})
_body = st.fixed_dictionaries({}, optional={
    "model": _json, "messages": st.one_of(st.lists(st.one_of(_message, _json), max_size=4), _json),
    "stream": _json, "tools": _json, "functions": _json, "response_format": _json, "stream_options": _json,
    "max_tokens": _json, "max_completion_tokens": _json, "temperature": _json})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_body)
def test_validated_bodies_never_break_what_reads_them(body):
    """Whatever JSON arrives, parsing + validation either rejects it with a RequestError (→ 4xx) or everything the
    server later does with the body works: routing text, context, capabilities, output tokens, re-encoding."""
    try:
        raw = json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \\ud800 escapes, as on the wire
    except ValueError:
        return  # not representable as JSON text (nan is, as NaN: the parser rejects it below)
    try:
        parsed = _parse_body(raw)
        check_chat_body(parsed)
    except RequestError as exc:
        assert 400 <= exc.status < 500
        return
    routing_text(parsed["messages"], 4, 2000)
    context_text(parsed)
    required_capabilities(parsed)
    requested_output_tokens(parsed)
    json.dumps(parsed, ensure_ascii=False, allow_nan=False).encode()


# ------------------------------------------------------------------------------------- schemathesis on a live server
@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    make_router("best-single").fit(make_synthetic(n_queries=60, n_llms=2, seed=0).select("train")).save_pretrained(
        tmp / "router")
    with fake_backends(("small", "large"), keep_requests=False) as (fakes, base):
        pool = [{"name": name, "base_url": f"{base}/{name}/v1", "router_llm": f"llm-{i}", "input_price": 1,
                 "output_price": 2, "context_window": 8000, "capabilities": ["json"]}
                for i, name in enumerate(fakes)]
        config = parse_config({"router": {"path": str(tmp / "router")}, "llms": pool, "ledger": {"path": None},
                               "auth": {"keys": [{"id": "fuzz", "key": "${RR_FUZZ}"}]}}, env={"RR_FUZZ": "sk-fuzz"})
        with ServerThread(create_app(config)) as server:
            yield server.url


def test_openapi_schema_is_public_and_describes_the_pool(live):
    spec = httpx.get(f"{live}/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/route", "/v1/models", "/health", "/metrics"} <= set(spec["paths"])
    model = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]
    assert {"radial", "radial:balance", "small", "large"} <= set(model["anyOf"][0]["enum"])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_gives_a_server_error(live, mode):
    """Every public operation with examples generated from the published schema (valid ones; and, for the two
    with a body, ones that break it); bounded: 40 examples per operation and mode, ~10 s."""
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode == GenerationMode.NEGATIVE and not operation.label.startswith("POST"):
            continue  # nothing to break in an operation without parameters or body

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(operation.as_strategy(generation_mode=mode))
        def check(case):
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error], timeout=30)

        check()
