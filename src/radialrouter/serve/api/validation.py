"""Request checks that run before anything else touches a body, so a client's mistake is that client's 400 and
never an exception inside shared machinery (the routing batch, the upstream client, the JSON encoder).

Two layers: `check_json_tree` walks the whole parsed body once — nesting depth, numbers that are not finite (the
JSON parser turns ``1e400`` into ``inf``), strings and keys that hold lone UTF-16 surrogates (``"\\ud800"`` parses
but cannot be encoded again) — and `check_chat_body` type-checks the fields the server itself reads. Every error
names the offending field in ``param`` (``messages[0].content[1].type``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from radialrouter.serve.routing import RequestError, requested_output_tokens

MAX_DEPTH = 64  # OpenAI bodies (tool schemas included) nest a dozen levels; the encoder recursion limit is ~1000
_SURROGATE = re.compile("[\ud800-\udfff]")


def _param(path: tuple) -> str | None:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def check_json_tree(body: Any, max_depth: int = MAX_DEPTH) -> None:
    """Reject what would break re-encoding or arithmetic later: too deep, non-finite numbers, lone surrogates."""
    stack: list[tuple[Any, tuple, int]] = [(body, (), 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise RequestError(f"`{_param(path) or 'body'}` contains a lone UTF-16 surrogate (invalid Unicode)",
                                   param=_param(path), code="invalid_unicode")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise RequestError(f"`{_param(path)}` must be a finite number", param=_param(path),
                                   code="invalid_value")
        elif isinstance(value, (dict, list)):
            if depth >= max_depth:
                raise RequestError(f"`{_param(path) or 'body'}` is nested deeper than {max_depth} levels",
                                   param=_param(path), code="too_deep")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and _SURROGATE.search(key):
                    raise RequestError(f"a key in `{_param(path) or 'body'}` contains a lone UTF-16 surrogate",
                                       param=_param(path), code="invalid_unicode")
                stack.append((child, (*path, key), depth + 1))


def _check_type_field(obj: Any, param: str) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise RequestError(f"`{param}` must be an object with a string `type`", param=param, code="invalid_type")


def check_chat_body(body: dict) -> None:
    """Type checks on the fields the server reads; the rest is the backend's business and passes through."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty array of message objects", param="messages",
                           code="invalid_type" if "messages" in body else "missing_required_parameter")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"`messages[{i}]` must be an object with a string `role`", param=f"messages[{i}]",
                               code="invalid_type")
        content = m.get("content")
        if not (content is None or isinstance(content, (str, list))):
            raise RequestError(f"`messages[{i}].content` must be a string, an array of parts or null",
                               param=f"messages[{i}].content", code="invalid_type")
        for j, part in enumerate(content if isinstance(content, list) else []):
            _check_type_field(part, f"messages[{i}].content[{j}]")
        if m.get("tool_calls") is not None and not isinstance(m["tool_calls"], list):
            raise RequestError(f"`messages[{i}].tool_calls` must be an array", param=f"messages[{i}].tool_calls",
                               code="invalid_type")
    for key, kind, name in (("stream", bool, "a boolean"), ("tools", list, "an array"),
                            ("functions", list, "an array"), ("response_format", dict, "an object"),
                            ("stream_options", dict, "an object")):
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise RequestError(f"`{key}` must be {name}", param=key, code="invalid_type")
    if body.get("response_format") is not None:
        _check_type_field(body["response_format"], "response_format")
    requested_output_tokens(body)
