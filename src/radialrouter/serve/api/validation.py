"""Request checks that run before anything else touches a body, so a client's mistake is that client's 400 and
never an exception inside shared machinery (the routing batch, the upstream client, the JSON encoder).

Two layers: `check_json_tree` walks the whole parsed body once — nesting depth, numbers that are not finite (the
JSON parser turns ``1e400`` into ``inf``), strings and keys that hold lone UTF-16 surrogates (``"\\ud800"`` parses
but cannot be encoded again) — and `check_chat_body` type-checks the fields the server itself reads. Every error
names the offending field in ``param`` (``messages[0].content[1].type``).

The limits below are also what the published OpenAPI schema (`radialrouter.serve.api.openapi`) states, so the schema
and these checks cannot drift apart: a body the schema allows passes here, and one it forbids is a 400.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from radialrouter.serve.routing import MAX_CHOICES, MAX_OUTPUT_TOKENS, RequestError

if TYPE_CHECKING:
    from radialrouter.serve.config import ServeConfig

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


#: (field, JSON type the schema gives it, Python types that pass, what the error says): optional top-level fields
#: that may also be ``null``. `openapi.py` describes the same fields from this table.
OPTIONAL_FIELDS: tuple[tuple[str, str, tuple[type, ...], str], ...] = (
    ("stream", "boolean", (bool,), "a boolean"),
    ("temperature", "number", (int, float), "a number"),
    ("functions", "array", (list,), "an array"),
)


def max_output_tokens(config: ServeConfig) -> int:
    """The most output tokens any request can ask for: the largest context window in the pool (more is refused by
    every LLM, so the schema states it as ``maximum``)."""
    return min(max((llm.context_window for llm in config.llms), default=MAX_OUTPUT_TOKENS), MAX_OUTPUT_TOKENS)


def _fail(param: str, message: str, code: str = "invalid_type") -> RequestError:
    return RequestError(message, param=param, code=code)


def _as_int(body: dict, key: str, low: int, high: int) -> bool:
    """Whether ``body[key]`` is an integer in [low, high]; an integral float (``8.0``, which JSON Schema counts as an
    integer) is replaced by its int, so everything after this sees the type the schema promises."""
    value = body[key]
    if isinstance(value, float) and value.is_integer() and low <= value <= high:
        body[key] = value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _check_type_field(obj: Any, param: str) -> None:
    if not isinstance(obj, dict) or not _nonempty_str(obj.get("type")):
        raise _fail(param, f"`{param}` must be an object with a non-empty string `type`")


def _check_message(m: Any, i: int) -> None:
    if not isinstance(m, dict) or not _nonempty_str(m.get("role")):
        raise _fail(f"messages[{i}]", f"`messages[{i}]` must be an object with a non-empty string `role`")
    content = m.get("content")
    if not (content is None or isinstance(content, (str, list))):
        raise _fail(f"messages[{i}].content", f"`messages[{i}].content` must be a string, an array of parts or null")
    for j, part in enumerate(content if isinstance(content, list) else []):
        param = f"messages[{i}].content[{j}]"
        _check_type_field(part, param)
        if part.get("text") is not None and not isinstance(part["text"], str):
            raise _fail(f"{param}.text", f"`{param}.text` must be a string")
    if m.get("tool_calls") is not None and not isinstance(m["tool_calls"], list):
        raise _fail(f"messages[{i}].tool_calls", f"`messages[{i}].tool_calls` must be an array")


def _check_tools(tools: Any) -> None:
    """``tools``: an array of ``{"type": ..., "function": {"name": ...}}`` objects, ``function`` optional (a backend
    reads them)."""
    if not isinstance(tools, list):
        raise _fail("tools", "`tools` must be an array")
    for i, tool in enumerate(tools):
        _check_type_field(tool, f"tools[{i}]")
        fn = tool.get("function")
        if "function" in tool and not (isinstance(fn, dict) and _nonempty_str(fn.get("name"))):
            raise _fail(f"tools[{i}].function", f"`tools[{i}].function` must be an object with a non-empty "
                        "string `name`")


def _check_output_tokens(body: dict, limit: int) -> None:
    for key in ("max_completion_tokens", "max_tokens"):  # both, whichever wins: each must be valid on its own
        if body.get(key) is not None and not _as_int(body, key, 0, limit):
            raise _fail(key, f"`{key}` must be an integer between 0 and {limit}"
                        + (" (the largest context window here)" if limit < MAX_OUTPUT_TOKENS else ""))


def check_chat_body(body: dict, max_output: int = MAX_OUTPUT_TOKENS) -> None:
    """Type checks on the fields the server reads or the schema documents; the rest passes through untouched
    (integral floats in integer fields become ints). ``max_output`` bounds ``max_tokens`` (`max_output_tokens` of
    the config; without it only the arithmetic bound applies and routing refuses what fits no window)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty array of message objects", param="messages",
                           code="invalid_type" if "messages" in body else "missing_required_parameter")
    for i, m in enumerate(messages):
        _check_message(m, i)
    for key, _, kinds, name in OPTIONAL_FIELDS:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds)):
            raise _fail(key, f"`{key}` must be {name}")
    if body.get("tools") is not None:
        _check_tools(body["tools"])
    if body.get("response_format") is not None:
        _check_type_field(body["response_format"], "response_format")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _fail("stream_options", "`stream_options` must be an object")
        if options.get("include_usage") is not None and not isinstance(options["include_usage"], bool):
            raise _fail("stream_options.include_usage", "`stream_options.include_usage` must be a boolean")
    if body.get("n") is not None and not _as_int(body, "n", 1, MAX_CHOICES):
        raise _fail("n", f"`n` must be an integer between 1 and {MAX_CHOICES}")
    metadata = body.get("metadata")
    if metadata is not None:  # OpenAI's shape: string keys to string values (the router may read its context there)
        if not isinstance(metadata, dict):
            raise _fail("metadata", "`metadata` must be an object of string values")
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise _fail(f"metadata.{key}", f"`metadata.{key}` must be a string")
    _check_output_tokens(body, max_output)


def check_route_body(body: dict, max_output: int = MAX_OUTPUT_TOKENS) -> dict:
    """A ``/v1/route`` body as a chat body: ``messages`` when given (not null), else ``prompt`` (a string) as one
    user message; then `check_chat_body`. ``prompt`` must be a string or null even when ``messages`` wins."""
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _fail("prompt", "`prompt` must be a string")
    if body.get("messages") is None and prompt is not None:
        body = {**body, "messages": [{"role": "user", "content": prompt}]}
    elif body.get("messages") is None:
        raise RequestError("give `messages` (a non-empty array of message objects) or `prompt` (a string)",
                           param="messages", code="missing_required_parameter")
    check_chat_body(body, max_output)
    return body
