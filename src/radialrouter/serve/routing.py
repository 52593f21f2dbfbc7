"""From a chat request to a routing decision: which model name means what, what the router reads, and which
configured LLMs can serve the request at all (context window, capabilities) before the router ranks them.

Everything here is synchronous. Per-request work (reading the conversation, counting its tokens) runs before a
request joins a routing batch — on the event loop for small bodies, in a worker thread for large ones — so the
batch itself only encodes bounded routing texts and ranks them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radialrouter.core.encoders import QueryEncoder
from radialrouter.routers import Router, RouterError, from_pretrained
from radialrouter.routers.embedded import embedded_dir
from radialrouter.serve.config import LLMConfig, ServeConfig

log = logging.getLogger("radialrouter.serve")
_EXPLICIT = re.compile(r"^@lam=(.+)$")
MAX_LAM = 1e6  # beyond this every ranking is pure cost order; larger values only risk overflow in float32
MAX_OUTPUT_TOKENS = 2**31 - 1
# The router reads at most its encoder's window (256 tokens) from the end of the text; no token is longer than
# this many characters on average, so cutting here changes nothing the encoder sees and bounds its work.
ROUTING_CHARS = 16_384
_COUNT_CHUNK, _COUNT_GROUP = 16_384, 8  # characters per chunk, chunks per call when counting a long prompt
MAX_CHOICES = 128  # `n`: OpenAI's limit; budgets reserve `n` answers, so it is checked, not passed through
# Chat formatting a provider bills on top of the texts: a few tokens per message (role, separators) and a few that
# prime the reply (OpenAI's published counting recipe: 3 per message, +1 with a name, +3 per reply).
TOKENS_PER_MESSAGE, TOKENS_PER_REPLY = 4, 3
#: The fewest UTF-8 bytes a provider's token covers on ordinary text (byte-level BPEs average ~4 on English).
BYTES_PER_TOKEN = 4
# Runs of more than 100 non-space characters: the WordPiece counter turns each into a single [UNK], while a byte-level
# BPE spends a token per 2–3 characters of random text (base64, hex); they are bounded at 2 bytes per token.
_UNSPLIT = re.compile(r"\S{101,}")
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


class RequestError(ValueError):
    """The client's request cannot be served as asked (→ a 4xx with an OpenAI-style body)."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_request", status: int = 400,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.param, self.code, self.status, self.headers = param, code, status, headers


@dataclass(frozen=True)
class Target:
    """What the ``model`` field asked for: a concrete LLM (``llm``) or routing at ``lam``."""

    llm: str | None = None
    lam: float | None = None
    mode: str | None = None  # trade-off name, or "explicit" for radial@lam=…; a bounded metrics label


def parse_model(model: Any, config: ServeConfig) -> Target:
    """``radial`` / ``radial:balance`` / ``radial@lam=0.05`` route; a configured LLM name bypasses routing."""
    if not isinstance(model, str) or not model:
        raise RequestError("`model` must be a non-empty string", param="model", code="invalid_type")
    alias = config.router.alias
    if model in {llm.name for llm in config.llms}:
        return Target(llm=model)
    if model == alias:
        name = config.router.default_tradeoff
        return Target(lam=config.tradeoffs[name], mode=name)
    rest = model[len(alias):] if model.startswith(alias) else None
    if rest and rest.startswith(":") and rest[1:] in config.tradeoffs:
        return Target(lam=config.tradeoffs[rest[1:]], mode=rest[1:])
    if rest and (match := _EXPLICIT.match(rest)):
        try:
            lam = float(match.group(1))
        except ValueError:
            lam = -1.0
        if not (0 <= lam <= MAX_LAM):  # also false for nan
            raise RequestError(f"`model` {model!r}: λ must be a number between 0 and {MAX_LAM:g}", param="model")
        return Target(lam=lam, mode="explicit")
    choices = [alias] + [f"{alias}:{t}" for t in config.tradeoffs] + [f"{alias}@lam=<number>"]
    raise RequestError(
        f"The model {model!r} does not exist here; use one of {choices} or a configured LLM "
        f"{[llm.name for llm in config.llms]}", param="model", code="model_not_found", status=404)


# ---------------------------------------------------------------------------------------------- request reading
def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a multi-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def routing_text(messages: list[dict], history_messages: int, history_chars: int) -> str:
    """What the router reads: the last user turn, preceded by up to ``history_messages`` earlier user/assistant
    turns (each cut to its last ``history_chars`` characters). The newest turn comes last because the encoder
    keeps the end of long inputs; follow-ups ("and now in Rust?") keep the context that makes them hard."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)
    earlier = [m for m in messages[:last_user] if m.get("role") in {"user", "assistant"} and _text_of(m.get("content"))]
    window = earlier[-history_messages:] if history_messages else []
    parts = [_text_of(m.get("content"))[-history_chars:] if history_chars else "" for m in window]
    parts = [p for p in parts if p]
    return "\n\n".join(parts + [_text_of(messages[last_user].get("content"))])[-ROUTING_CHARS:]


def context_text(body: dict) -> str:
    """Everything that occupies the backend's context window: all message texts, tool calls and tool schemas."""
    chunks = []
    for m in body["messages"]:
        chunks.append(_text_of(m.get("content")))
        if m.get("tool_calls"):
            chunks.append(json.dumps(m["tool_calls"]))
    for key in ("tools", "functions"):
        if body.get(key):
            chunks.append(json.dumps(body[key]))
    return "\n".join(c for c in chunks if c)


def required_capabilities(body: dict) -> frozenset[str]:
    needs = set()
    if body.get("tools") or body.get("functions") or any(
            m.get("role") in {"tool", "function"} or m.get("tool_calls") for m in body["messages"]):
        needs.add("tools")
    if any(isinstance(m.get("content"), list) and any(
            isinstance(p, dict) and p.get("type") in _IMAGE_PARTS for p in m["content"])
           for m in body["messages"]):
        needs.add("vision")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in {"json_object", "json_schema"}:
        needs.add("json")
    return frozenset(needs)


def requested_output_tokens(body: dict) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OUTPUT_TOKENS:
                raise RequestError(f"`{key}` must be an integer between 0 and {MAX_OUTPUT_TOKENS}", param=key,
                                   code="invalid_type")
            return value
    return 0


def requested_choices(body: dict) -> int:
    """``n``: how many choices the backend generates — and bills — for this request."""
    value = body.get("n")
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHOICES:
        raise RequestError(f"`n` must be an integer between 1 and {MAX_CHOICES}", param="n", code="invalid_type")
    return value


def count_tokens(tokenizer, text: str, cap: int) -> int:
    """Tokens in ``text``, counted in chunks and stopping once the count passes ``cap`` (the largest context
    window: past it every LLM is excluded anyway), so a multi-megabyte prompt costs a bounded amount of work.
    Chunks end at a space, so the sum matches a whole-text count up to a token per chunk; they go through
    ``encode_batch``, which releases the GIL (``encode`` holds it: ~50 ms per 64 KB, stalling the event loop)."""
    return count_tokens_and_unknown(tokenizer, text, cap)[0]


def count_tokens_and_unknown(tokenizer, text: str, cap: int, unknown_id: int | None = None) -> tuple[int, int]:
    """`count_tokens`, and how many of the tokens are ``unknown_id`` (a WordPiece ``[UNK]``: a character outside
    the vocabulary, or a run of more than 100 characters the counter gave up on)."""
    total, unknown, start = 0, 0, 0
    while start < len(text) and total <= cap:
        chunks = []
        while start < len(text) and len(chunks) < _COUNT_GROUP:
            end = min(start + _COUNT_CHUNK, len(text))
            if end < len(text):
                space = text.rfind(" ", start, end)
                end = space + 1 if space > start else end
            chunks.append(text[start:end])
            start = end
        for encoding in tokenizer.encode_batch(chunks, add_special_tokens=False):
            ids = encoding.ids
            total += len(ids)
            if unknown_id is not None:
                unknown += ids.count(unknown_id)
    return total, unknown


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def token_bound(text: str) -> int:
    """An upper bound on `count_tokens` and on `text_token_bound` that costs no tokenizer pass: every token of a
    WordPiece, BPE or byte-level vocabulary covers at least one UTF-8 byte, plus one token of slack per chunk."""
    size = utf8_size(text)
    return size + size // _COUNT_CHUNK + 1


def text_token_bound(text: str, counted: int, margin: float, long_runs: bool = True) -> int:
    """What a provider can bill for ``text`` at most, given the offline counter's ``counted`` tokens: a count a
    client cannot make small by choosing what the counter handles badly.

    - ASCII is bounded by the larger of ``margin`` × the count and one token per 4 bytes (per 2 bytes inside runs
      of more than 100 non-space characters, which the counter turns into a single ``[UNK]``);
    - every other character may cost as many tokens as its UTF-8 bytes (what byte-fallback tokenizers give
      emoji, private-use and rare-script characters), so each adds its bytes beyond the first;
    - nothing is bounded above the byte count: no byte-level or byte-fallback token covers less than a byte.

    Ordinary English is bounded by ``margin`` × the count; text outside ASCII is reserved by bytes (docs/serving.md,
    "Guarantees", has the measured ratios). ``long_runs=False`` skips looking for long runs, for a caller that knows
    there are none (its WordPiece count has no ``[UNK]``)."""
    if not text:
        return 0
    unsplit = sum(m.end() - m.start() for m in _UNSPLIT.finditer(text)) if long_runs and len(text) > 100 else 0
    size = utf8_size(text)
    floor = -(-(size + unsplit) // BYTES_PER_TOKEN)
    return min(size, max(math.ceil(counted * margin), floor) + size - len(text))


def chat_overhead(body: dict, tokens_per_image: int) -> int:
    """Tokens a provider bills beyond the texts: chat formatting per message, the reply's priming, and each image
    part at ``tokens_per_image``."""
    images = sum(1 for m in body["messages"] if isinstance(m.get("content"), list)
                 for p in m["content"] if isinstance(p, dict) and p.get("type") in _IMAGE_PARTS)
    return TOKENS_PER_MESSAGE * len(body["messages"]) + TOKENS_PER_REPLY + images * tokens_per_image


@dataclass
class RouteQuery:
    """One request's routing input, prepared per request (`ServeState.prepare`) and decided in a batch."""

    text: str
    prompt_tokens: int
    max_output: int
    needs: frozenset[str]
    lam: float
    context: str | None = None  # `metadata[router.context_key]`: read by routers that use a context


@dataclass
class RouteResult:
    llm: str
    ranking: list[str]
    scores: dict[str, float]
    probabilities: dict[str, float] | None
    expected_cost_usd: float
    lam: float
    prompt_tokens: int
    excluded: dict[str, str] = field(default_factory=dict)
    policy: Any = None  # `explore.PolicyLog` once the serving policy has drawn (chat requests)
    router_version: str | None = None  # the router that decided (hot swaps change it between batches)

    def to_dict(self) -> dict[str, Any]:
        return {"llm": self.llm, "ranking": self.ranking, "scores": self.scores,
                "probabilities": self.probabilities, "expected_cost_usd": self.expected_cost_usd,
                "lam": self.lam, "prompt_tokens_estimate": self.prompt_tokens, "excluded": self.excluded}


# ---------------------------------------------------------------------------------------------- loading
def router_dir(config: ServeConfig) -> Path:
    """The configured router directory (``save_pretrained`` layout), or the package's embedded router."""
    if config.router.path is not None:
        return Path(config.router.path)
    return embedded_dir(config.router.embedded)


def load_router(config: ServeConfig) -> Router:
    """Load `router_dir`. Serving turns the encoder's on-disk cache off: live traffic would grow it without bound
    and it would persist hashes of user prompts."""
    path = router_dir(config)
    encoder = None
    if (path / "encoder.json").exists():
        identity = json.loads((path / "encoder.json").read_text())
        encoder = QueryEncoder.from_identity(identity, cache_dir=False, device=config.router.device)
    router = from_pretrained(path, encoder=encoder)
    if hasattr(router, "set_inference_backend") and config.router.device == "cpu":
        router.set_inference_backend(config.router.inference)
    return router


def router_llms(config: ServeConfig) -> list[str]:
    """The LLM names the configured router knows, read from its ``pool.json`` without loading weights."""
    pool = router_dir(config) / "pool.json"
    try:
        return list(json.loads(pool.read_text())["llms"])
    except (OSError, ValueError, KeyError) as exc:
        raise RouterError(f"router.path: {pool.parent} is not a saved router ({pool}: {exc})") from None


def check_pool(config: ServeConfig, known: list[str]) -> list[str]:
    """Warnings for pool entries the router cannot rank; an error when none of them is routable."""
    unknown = [llm.name for llm in config.llms if llm.router_name not in known]
    if len(unknown) == len(config.llms):
        raise RouterError(f"llms: none of the configured LLMs is known to the router (it knows {known}); "
                          "set llms[i].router_llm to map a pool entry onto a router LLM")
    return [f"llms: {name!r} is not known to the router (it knows {known}): it can be called by name but is never "
            "routed to" for name in unknown]


def context_refusal(prompt_tokens: int, max_output: int, llm: LLMConfig) -> RequestError:
    """The 400 for a request that overflows every context window it could use (``llm``: the largest)."""
    output = f" + {max_output} output tokens (max_tokens)" if max_output else ""
    return RequestError(f"The prompt counts as up to {prompt_tokens} tokens{output}, more than the largest context "
                        f"window that could serve it: {llm.context_window} ({llm.name})", param="messages",
                        code="context_length_exceeded")


# ---------------------------------------------------------------------------------------------- deciding
#: `server.routing_thread: auto` routes on the event loop when one decision takes at most this much CPU: handing a
#: batch to the routing thread and back (a wake-up of each side, and the GIL taken back from a busy loop) costs
#: about as much as such a decision.
INLINE_DECISION_S = 0.0005


def decides_inline(config: ServeConfig, decider: Decider) -> bool:
    """Whether ``decider`` runs on the event loop (`server.routing_thread`; auto: a decision within
    `INLINE_DECISION_S` on the CPU)."""
    where = config.server.routing_thread
    return where == "never" or (where == "auto" and config.router.device == "cpu"
                                and decider.decision_seconds() <= INLINE_DECISION_S)


class Decider:
    """Filters the pool per request, then ranks the survivors with the router — one encoder call per batch."""

    def __init__(self, config: ServeConfig, router: Router, tokenizer) -> None:
        self.config, self.router, self.tokenizer = config, router, tokenizer
        self.version: str | None = None  # set by the server (`hotswap.router_version`); stamped on every result
        known = set(router.llms_)
        self.routable: list[LLMConfig] = [llm for llm in config.llms if llm.router_name in known]
        self._by_router_name = {llm.router_name: llm.name for llm in self.routable}
        self._capabilities = [frozenset(llm.capabilities) for llm in self.routable]
        self._column = {name: i for i, name in enumerate(router.llms_)}

        self._token_cap = max(llm.context_window for llm in config.llms)
        # the usual request: no capability asked for and every window holds it — the one mask for all of those
        self._every = np.zeros(len(router.llms_), dtype=bool)
        self._every[[self._column[llm.router_name] for llm in self.routable]] = True
        self._every.flags.writeable = False
        self._smallest_window = min((llm.context_window for llm in self.routable), default=0)
        self._unknown_id = tokenizer.token_to_id("[UNK]")

    def fits_every_window(self, prompt_tokens: int, max_output: int) -> bool:
        """Whether no routable LLM's context window can exclude a request of this size (capabilities aside)."""
        return not self.routable or prompt_tokens + max_output <= self._smallest_window

    def warm_up(self) -> None:
        """Load encoder weights now, so the first request does not pay for it."""
        self.decide([RouteQuery("warm-up", 1, 0, frozenset(), 0.0)])

    def decision_seconds(self, repeats: int = 21) -> float:
        """Median CPU seconds of one decision on a short prompt (after `warm_up`): whether routing is cheap
        enough to run on the event loop (`server.routing_thread: auto`)."""
        times = []
        for i in range(repeats):
            start = time.thread_time()
            self.decide([RouteQuery(f"Write a Python function that sorts list number {i}.", 1, 0, frozenset(), 0.0)])
            times.append(time.thread_time() - start)
        return statistics.median(times)

    def prompt_tokens(self, body: dict, text: str) -> int:
        """The most tokens a provider can bill for the prompt (``text``: `context_text` of ``body``) — the count
        budgets reserve and context windows must hold (`text_token_bound`; counting stops just past the largest
        window, where every LLM is excluded anyway)."""
        return self.text_bound(text) + chat_overhead(body, self.config.router.tokens_per_image)

    def text_bound(self, text: str) -> int:
        """`text_token_bound` of ``text`` with this server's counter and margin (prompts, and relayed output when a
        backend reports no usage)."""
        counted, unknown = count_tokens_and_unknown(self.tokenizer, text, self._token_cap, self._unknown_id)
        # runs the counter gave up on show up as [UNK]; a vocabulary without one (BPE) splits long runs itself
        return text_token_bound(text, counted, self.config.router.token_margin, long_runs=unknown > 0)

    def quick_prompt_bound(self, body: dict, text: str) -> int:
        """A bound on `prompt_tokens` that needs no tokenizer pass (for deciding before the count)."""
        return token_bound(text) + chat_overhead(body, self.config.router.tokens_per_image)

    def _mask(self, q: RouteQuery) -> tuple[np.ndarray, dict[str, str]]:
        """The router columns that may serve ``q``, and why each other configured LLM may not."""
        if not q.needs and self.fits_every_window(q.prompt_tokens, q.max_output):
            return self._every, {}
        mask = np.zeros(len(self.router.llms_), dtype=bool)
        excluded = {}
        need = q.prompt_tokens + q.max_output
        for llm, capabilities in zip(self.routable, self._capabilities):
            missing = sorted(q.needs - capabilities) if q.needs else None
            if missing:
                excluded[llm.name] = f"lacks capability {', '.join(missing)}"
            elif need > llm.context_window:
                excluded[llm.name] = f"needs up to {need} tokens, context window is {llm.context_window}"
            else:
                mask[self._column[llm.router_name]] = True
        return mask, excluded

    def _refusal(self, q: RouteQuery, excluded: dict[str, str]) -> RequestError:
        """Why no LLM can serve ``q``: a context-window refusal names the count and the largest window."""
        capable = [llm for llm in self.routable if not q.needs - set(llm.capabilities)]
        if capable:
            return context_refusal(q.prompt_tokens, q.max_output, max(capable, key=lambda llm: llm.context_window))
        reasons = "; ".join(f"{k}: {v}" for k, v in excluded.items()) or "no routable LLM"
        return RequestError(f"No configured LLM can serve this request ({reasons})", param="messages",
                            code="no_capable_model")

    def decide(self, queries: list[RouteQuery]) -> list[RouteResult | RequestError]:
        """Decide a batch; a request no LLM can serve gets a `RequestError` instead of failing the batch. Token
        counts come precomputed: nothing here grows with the size of a request beyond its bounded routing text."""
        out: list[RouteResult | RequestError] = []
        ok, masks = [], []  # the queries some LLM can serve, and their masks
        for i, q in enumerate(queries):
            mask, excluded = self._mask(q)
            if len(excluded) < len(self.routable):
                ok.append(i)
                masks.append(mask)
                out.append(RouteResult("", [], {}, None, 0.0, q.lam, q.prompt_tokens, excluded,
                                       router_version=self.version))
            else:
                out.append(self._refusal(q, excluded))
        if not ok:
            return out
        texts = [queries[i].text for i in ok]
        inputs: Any = self.router.get_encoder().encode(texts) if self.router.uses_embeddings else texts
        for lam in {queries[i].lam for i in ok}:
            rows = [k for k, i in enumerate(ok) if queries[i].lam == lam]
            whole = len(rows) == len(ok)  # one λ for the whole batch (always, for a batch of one)
            subset = inputs if whole else inputs[rows] if self.router.uses_embeddings else [texts[k] for k in rows]
            mask = masks[rows[0]][None] if len(rows) == 1 else np.stack([masks[k] for k in rows])
            decisions = self.router.route(subset, lam=lam, candidates=mask,
                                          context=[queries[ok[k]].context for k in rows])
            for k, d in zip(rows, decisions):
                result = out[ok[k]]
                result.llm = self._by_router_name[d.llm]
                result.ranking = [self._by_router_name[n] for n in d.ranking]
                result.scores = {self._by_router_name[n]: s for n, s in d.scores.items()}
                result.probabilities = None if d.probabilities is None else {
                    self._by_router_name[n]: p for n, p in d.probabilities.items()}
                result.expected_cost_usd = d.expected_cost_usd
        return out
