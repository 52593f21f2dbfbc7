"""OpenAI-style response bodies of the gateway: the error body (`error_response`) and server-sent events."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.responses import JSONResponse

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the installed extras
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("radialrouter.serve")


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 405: "invalid_request_error", 408: "invalid_request_error",
                413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_error"}


_JSON = {"separators": (",", ":"), "ensure_ascii": False}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type_: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = type_ or _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, by orjson when installed (several times faster than ``json`` on response bodies and
    stream chunks); ``json`` for what orjson refuses (integers beyond 64 bits, non-string keys)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(obj, **_JSON).encode()


class FastJSONResponse(JSONResponse):
    """A `JSONResponse` rendered by `dumps` (the chat answers)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"
