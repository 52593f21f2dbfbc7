"""The public API's OpenAPI schema, served at ``/openapi.json`` (public: it describes the endpoints, holds no
secret, and lists only what ``/v1/models`` lists to a client).

Handlers read raw bodies so that every malformed input gets an OpenAI-style 400 naming its field; the pydantic
models here document those bodies (and let schemathesis generate them) without sitting on the request path. They
take their limits from the checks that do sit there (`radialrouter.serve.api.validation`, `parse_feedback`), so a body
the schema allows is served and one it forbids is refused — ``tests/test_serve_schema.py`` holds the server to that
with schemathesis. The ``model`` field and the ``max_tokens`` bound come from the running config.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from radialrouter.serve.api.feedback import MAX_COMMENT, MAX_ID
from radialrouter.serve.api.validation import MAX_CHOICES, OPTIONAL_FIELDS, max_output_tokens
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.routing import MAX_LAM

#: `code` of the 400 that refuses a request no configured LLM can hold (prompt + ``max_tokens`` beyond every context
#: window). The schema cannot state that bound (it depends on the tokenizer), so such a 400 answers valid bodies too.
CONTEXT_CODES = ("context_length_exceeded", "no_capable_model")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _absent_or(**kwargs: Any) -> Any:
    """An optional field that must not be ``null`` when given (the server reads it as an object)."""
    return Field(None, json_schema_extra=_no_default, **kwargs)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown fields pass through to the backend


class ContentPart(_Open):
    type: str = Field(min_length=1, description="`text`, `image_url`, … (image parts need an LLM with `vision`)")
    text: str | None = None


class Message(_Open):
    role: str = Field(min_length=1, description="`system`, `user`, `assistant`, `tool`, …")
    content: str | list[ContentPart] | None = None
    tool_calls: list[Any] | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ResponseFormat(_Open):
    type: str = Field(min_length=1, description="`text`, `json_object` or `json_schema` (the last two need `json`)")


class FunctionSpec(_Open):
    name: str = Field(min_length=1)


class Tool(_Open):
    type: str = Field(min_length=1, description="`function`")
    function: FunctionSpec = _absent_or()


class _ChatFields(_Open):
    """The fields the server checks (`check_chat_body`); ``stream``, ``temperature`` and ``functions`` are added
    from `validation.OPTIONAL_FIELDS`, ``max_tokens``' maximum from the pool (`validation.max_output_tokens`)."""

    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES, description="Number of choices; budgets reserve each one")
    tools: list[Tool] | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = Field(None, description="OpenAI's metadata (string values); the value under "
                                                               "`router.context_key` (default `task`) is the query's "
                                                               "context for a router trained with one")


class ChatCompletionRequest(_ChatFields):
    """OpenAI's chat completion request; fields not listed here are forwarded untouched."""

    model: str
    messages: list[Message] = Field(min_length=1)


class RouteRequest(_ChatFields):
    """A routing decision without calling an LLM: ``messages`` (as for chat) or, when it is absent or null, a bare
    ``prompt`` (one user message)."""

    model: str = _absent_or(description="A router alias; default: the bare alias.")
    messages: list[Message] | None = Field(None, min_length=1)
    prompt: str | None = None


class FeedbackRequest(BaseModel):
    """A rating of an answer this key got: ``id`` is the response's ``id`` (``request_id`` is an alias); exactly one
    of ``score`` / ``thumbs`` (``null`` counts as absent)."""

    id: str | None = Field(None, min_length=1, max_length=MAX_ID,
                           description="`id` of the chat completion (the x-radialrouter-request-id header)")
    request_id: str | None = Field(None, min_length=1, max_length=MAX_ID, description="Alias of `id`")
    score: float | None = Field(None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(None, max_length=MAX_COMMENT)


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ChatCompletion(_Open):
    """The backend's answer with ``model`` and ``id`` rewritten and the routing decision in ``router``."""

    id: str
    choices: list[Any]
    router: dict[str, Any]


class RouteResponse(BaseModel):
    request_id: str
    model: str
    mode: str | None
    llm: str
    ranking: list[str]
    scores: dict[str, float]
    probabilities: dict[str, float] | None
    expected_cost_usd: float
    lam: float
    prompt_tokens_estimate: int
    excluded: dict[str, str]


class FeedbackResponse(BaseModel):
    id: str
    score: float
    stored: bool


def _required(name: str, json_type: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"type": json_type}}}


# Rules a property schema cannot say: which fields must be there (and not null) together.
_ALTERNATIVES = {
    "RouteRequest": {"anyOf": [_required("messages", "array"), _required("prompt", "string")]},
    "FeedbackRequest": {"allOf": [{"anyOf": [_required("id", "string"), _required("request_id", "string")]},
                                  {"oneOf": [_required("score", "number"), _required("thumbs", "string")]}]},
}
_BODIES = {("/v1/chat/completions", "post"): ChatCompletionRequest, ("/v1/route", "post"): RouteRequest,
           ("/v1/feedback", "post"): FeedbackRequest}
_JSON_OBJECT = {"type": "object"}
#: One server-sent event (OpenAPI 3.1: the stream's `schema` describes each event): a chunk as JSON, the final chunk
#: with the decision, an in-band error object, or ``[DONE]``.
_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
_OK: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/chat/completions", "post"): {"application/json": ChatCompletion, "text/event-stream": _EVENT},
    ("/v1/route", "post"): {"application/json": RouteResponse},
    ("/v1/feedback", "post"): {"application/json": FeedbackResponse},
    ("/v1/models", "get"): {"application/json": _JSON_OBJECT},
    ("/health", "get"): {"application/json": _JSON_OBJECT},
    ("/metrics", "get"): {"text/plain": {"type": "string"}},
}
_ERRORS = {"400": "Invalid request (`param` names the field), or no configured LLM can hold it (`code` "
                  f"{' / '.join(CONTEXT_CODES)}: prompt and `max_tokens` exceed every context window)",
           "401": "Missing or wrong API key", "403": "A backend refused the request (its error, passed through)",
           "404": "Unknown model, or (feedback) no such response for this key",
           "408": "Body not received in time", "409": "Feedback: the decision log is off, or nothing to rate",
           "413": "Body too large", "422": "A backend refused the request (its error, passed through)",
           "429": "Budget spent, rate limit reached, or every backend rate-limited",
           "502": "Every backend tried failed", "503": "At capacity (see Retry-After)",
           "504": "Every backend tried timed out"}
_BODY_ERRORS = ("400", "401", "408", "413")
_OP_ERRORS: dict[tuple[str, str], tuple[str, ...]] = {
    ("/v1/chat/completions", "post"): (*_BODY_ERRORS, "403", "404", "422", "429", "502", "503", "504"),
    ("/v1/route", "post"): (*_BODY_ERRORS, "404", "503"),
    ("/v1/feedback", "post"): (*_BODY_ERRORS, "404", "409"),
    ("/v1/models", "get"): ("401",),
    ("/metrics", "get"): ("401",),
}


def _model_schema(config: ServeConfig, llms: bool) -> dict[str, Any]:
    """``model``: a router alias, a named trade-off, ``<alias>@lam=<λ>`` with 0 ≤ λ ≤ `MAX_LAM` (digits only) and,
    where a concrete LLM may be called (chat), a pool LLM's name."""
    alias = config.router.alias
    names = [alias, *(f"{alias}:{t}" for t in config.tradeoffs), *(llm.name for llm in config.llms if llms)]
    top = f"{int(MAX_LAM)}"
    lam = rf"0*([0-9]{{1,{len(top) - 1}}}(\.[0-9]*)?|{top}(\.0*)?)"
    prefix = re.sub(r"([.^$*+?()[\]{}|\\])", r"\\\1", alias)  # ECMA-262 escapes only its syntax characters
    return {"anyOf": [{"type": "string", "enum": names}, {"type": "string", "pattern": rf"^{prefix}@lam={lam}$"}]}


def build_openapi(app: FastAPI, config: ServeConfig) -> dict[str, Any]:
    """The schema of the public operations, with this config's model names, output-token bound and auth."""
    spec = get_openapi(title="radialrouter", version="1", routes=app.routes,
                       description="OpenAI-compatible routing endpoint: `model` picks routing or a pool LLM.")
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ChatCompletionRequest, RouteRequest, FeedbackRequest, ErrorResponse, ChatCompletion, RouteResponse,
                  FeedbackResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = {**schema, **_ALTERNATIVES.get(model.__name__, {})}
    limit = max_output_tokens(config)
    for name, llms in (("ChatCompletionRequest", True), ("RouteRequest", False)):
        props = schemas[name]["properties"]
        props["model"] = _model_schema(config, llms)
        for key, json_type, _, _ in OPTIONAL_FIELDS:
            props[key] = {"anyOf": [{"type": json_type}, {"type": "null"}]}
        for key in ("max_tokens", "max_completion_tokens"):
            props[key]["anyOf"][0]["maximum"] = limit
    spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ok = {media: {"schema": {"$ref": f"#/components/schemas/{s.__name__}"} if isinstance(s, type) else s}
                  for media, s in _OK.get((path, method), {"application/json": _JSON_OBJECT}).items()}
            op["responses"] = {"200": {"description": "OK", "content": ok}}
            errors = _OP_ERRORS.get((path, method), ())
            if "401" in errors and not (path == "/metrics" and config.server.public_metrics):
                op["security"] = [{"bearer": []}]
            else:
                errors = tuple(code for code in errors if code != "401")
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
            op["responses"].update({code: {"description": _ERRORS[code], "content": error} for code in errors})
            body = _BODIES.get((path, method))
            if body is not None:
                ref = {"$ref": f"#/components/schemas/{body.__name__}"}
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    return spec


def install_openapi(app: FastAPI, config: ServeConfig) -> None:
    """Serve the schema at ``/openapi.json`` (built once, on first request)."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cache:
            cache.update(build_openapi(app, config))
        return cache

    app.openapi = openapi  # type: ignore[method-assign]
