"""The public API's OpenAPI schema, served at ``/openapi.json`` (public: it describes the endpoints, holds no
secret, and lists only what ``/v1/models`` lists to a client).

Handlers read raw bodies so that every malformed input gets an OpenAI-style 400 naming its field; the pydantic
models here document those bodies (and let schemathesis generate them) without sitting on the request path. The
``model`` field is described from the running config: router aliases, trade-offs and pool LLM names.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from radialrouter.serve.config import ServeConfig


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown fields pass through to the backend


class ContentPart(_Open):
    type: str = Field(description="`text`, `image_url`, … (image parts need an LLM with `vision`)")
    text: str | None = None


class Message(_Open):
    role: str = Field(description="`system`, `user`, `assistant`, `tool`, …")
    content: str | list[ContentPart] | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ResponseFormat(_Open):
    type: str = Field(description="`text`, `json_object` or `json_schema` (the last two need `json`)")


class ChatCompletionRequest(_Open):
    """OpenAI's chat completion request; fields not listed here are forwarded untouched."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=0, le=2**31 - 1)
    max_completion_tokens: int | None = Field(None, ge=0, le=2**31 - 1)
    temperature: float | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: ResponseFormat | None = None


class RouteRequest(_Open):
    """A routing decision without calling an LLM: ``messages`` (as for chat) or a bare ``prompt``."""

    model: str | None = Field(None, description="A router alias; default: the bare alias.")
    messages: list[Message] | None = Field(None, min_length=1)
    prompt: str | None = None


class FeedbackRequest(BaseModel):
    """A rating of an answer this key got: ``id`` is the response's ``id``; exactly one of ``score`` / ``thumbs``."""

    id: str = Field(description="`id` of the chat completion (the x-radialrouter-request-id header)")
    score: float | None = Field(None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(None, max_length=2000)


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


_BODIES = {("/v1/chat/completions", "post"): ChatCompletionRequest, ("/v1/route", "post"): RouteRequest,
           ("/v1/feedback", "post"): FeedbackRequest}
_ERRORS = {"400": "Invalid request (the `param` names the field)", "401": "Missing or wrong API key",
           "404": "Unknown model", "408": "Body not received in time", "413": "Body too large",
           "429": "Budget spent, or every backend rate-limited", "503": "At capacity (see Retry-After)"}


def build_openapi(app: FastAPI, config: ServeConfig) -> dict[str, Any]:
    spec = get_openapi(title="radialrouter", version="1", routes=app.routes,
                       description="OpenAI-compatible routing endpoint: `model` picks routing or a pool LLM.")
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ChatCompletionRequest, RouteRequest, FeedbackRequest, ErrorResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    alias = config.router.alias
    names = [alias, *(f"{alias}:{t}" for t in config.tradeoffs), *(llm.name for llm in config.llms)]
    model_schema = {"anyOf": [{"type": "string", "enum": names},
                              {"type": "string", "pattern": rf"^{alias}@lam=[0-9]+(\.[0-9]+)?$"}]}
    schemas["ChatCompletionRequest"]["properties"]["model"] = model_schema
    schemas["RouteRequest"]["properties"]["model"] = model_schema
    spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            op.pop("responses", None)
            op["responses"] = {"200": {"description": "OK"}}
            if path != "/health":
                op["security"] = [{"bearer": []}]
                op["responses"].update({code: {"description": text, **error} for code, text in _ERRORS.items()})
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
