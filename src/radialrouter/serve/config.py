"""The serving configuration: one YAML file, validated with pydantic, with secrets only as ``${ENV}`` references.

Relative paths resolve against the config file's folder (never the working directory), so a config and the router
it names can be moved together. Every error names its field, e.g. ``llms[1].api_key``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from radialrouter.core.objective import SCENARIOS, is_quality_only_presets

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._/\-]*$"  # no ':' or '@': those separate an alias from its trade-off
CAPABILITIES = ("tools", "vision", "json")


class ConfigError(ValueError):
    """The serving config is unusable; the message names the file and the field."""


class EnvSecret(BaseModel):
    """A secret given as ``${VAR}`` in the config and read from the environment at load time.

    It serialises back to ``${VAR}``, so dumping the config (``config validate``, logs) never shows the value."""

    model_config = ConfigDict(frozen=True)
    env: str
    value: SecretStr

    @model_serializer
    def _masked(self) -> str:
        return f"${{{self.env}}}"

    def get(self) -> str:
        return self.value.get_secret_value()


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    if value is None or isinstance(value, EnvSecret):
        return value
    match = _ENV_REF.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError("must be an environment reference like ${MY_API_KEY}; secrets are never written in the "
                         "config file itself")
    env: Mapping[str, str] = (info.context or {}).get("env", os.environ)
    name = match.group(1)
    if not env.get(name):
        raise ValueError(f"environment variable {name} is not set (or empty)")
    return EnvSecret(env=name, value=env[name])


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else (Path(base) / path).resolve()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMConfig(_Strict):
    """One backend LLM behind an OpenAI-compatible endpoint."""

    name: str = Field(pattern=_NAME, description="Name clients use in `model`; also reported back in responses.")
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    api_key: EnvSecret | None = Field(None, description="${ENV} reference; omit for backends without auth.")
    model: str | None = Field(None, description="Model id sent upstream; defaults to `name`.")
    router_llm: str | None = Field(None, description="The router's name for this LLM; defaults to `name`.")
    input_price: float = Field(ge=0, description="USD per million input (prompt) tokens.")
    output_price: float = Field(ge=0, description="USD per million output (completion) tokens.")
    context_window: int = Field(gt=0, description="Tokens the backend accepts, prompt and completion together.")
    capabilities: list[Literal["tools", "vision", "json"]] = Field(default_factory=list)
    timeout_s: float = Field(60.0, gt=0, description="Read timeout per request (per chunk when streaming).")
    max_connections: int | None = Field(None, ge=1, description="Connections to this backend at once; default: "
                                                               "server.max_connections.")
    stream_usage: bool = Field(True, description="Ask the backend for a usage chunk when streaming (for costs).")
    max_output_tokens: int | None = Field(None, ge=1, description="Most output tokens one choice can have; budget "
                                                                   "reservations assume it for requests without "
                                                                   "max_tokens (default: reserve_output_tokens).")

    _check_key = field_validator("api_key", mode="before")(_resolve_secret)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http(s) URL like https://host/v1; got {value!r}")
        return value.rstrip("/")

    @property
    def upstream_model(self) -> str:
        return self.model or self.name

    @property
    def router_name(self) -> str:
        return self.router_llm or self.name


class ExploreConfig(_Strict):
    """Optional exploration, so that the decision log supports unbiased off-policy estimates (off by default).

    ``epsilon``: with probability ε a uniformly random candidate instead of the router's pick; ``softmax``: a
    candidate drawn from softmax(score / temperature) over the router's own scores; ``squarecb``: inverse-gap
    weighting (VW's ``--squarecb``), each other candidate with probability 1 / (K + γ·(best score − its score)), the
    rest to the router's pick — γ fixed (``gamma``) or ``gamma_scale · t^gamma_exponent`` after t exploring draws —
    optionally mixed with a uniform ``floor`` ε: ``(1 − ε)·p_SquareCB + ε/K`` (0, the default: plain SquareCB).
    ``keys`` / ``tradeoffs`` limit it to some client ids or trade-off names (empty: all)."""

    method: Literal["off", "epsilon", "softmax", "squarecb"] = "off"
    epsilon: float = Field(0.1, ge=0.0, le=1.0, description="ε of ε-greedy.")
    temperature: float = Field(0.05, gt=0.0, description="Softmax temperature on the router's scores.")
    gamma: float | None = Field(None, ge=0.0, description="SquareCB's fixed γ (on the router's score scale); "
                                "null: gamma_scale · t^gamma_exponent.")
    gamma_scale: float = Field(10.0, gt=0.0, description="SquareCB: γ's scale when gamma is null (VW's default 10).")
    gamma_exponent: float = Field(0.5, ge=0.0, le=1.0, description="SquareCB: γ's exponent over the exploring draws "
                                  "so far when gamma is null (VW's default 0.5).")
    floor: float = Field(0.0, description="SquareCB: uniform exploration floor ε in [0, 1) — each of the K "
                         "candidates drawn with at least ε/K, (1 − ε)·p_SquareCB + ε/K, so that labels keep coming "
                         "for every LLM as γ grows (0: plain SquareCB).")
    keys: list[str] = Field(default_factory=list, description="Only these client ids explore (empty: all).")
    tradeoffs: list[str] = Field(default_factory=list, description="Only these trade-off names explore (empty: "
                                 "all; 'explicit' for radial@lam=…).")
    seed: int | None = Field(None, description="Seed of the exploration draws (tests); default: fresh entropy.")

    @field_validator("method", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @field_validator("floor")
    @classmethod
    def _floor(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:  # 1 would be uniform exploration with SquareCB ignored: use method epsilon
            raise ValueError(f"router.explore.floor must be at least 0 and below 1 (ε of (1 − ε)·p_SquareCB + ε/K); "
                             f"got {value!r}")
        return value


class RouterConfig(_Strict):
    path: Path | None = Field(None, description="Router directory from save_pretrained; omitted: the embedded "
                                                "router named by `embedded`.")
    embedded: Literal["mlp", "radial"] = Field("mlp", description="The package's router served when `path` is "
                                                                  "omitted: mlp (the default), or radial "
                                                                  "(RadialRouter, whose pool can grow: pool add).")
    alias: str = Field("radial", pattern=r"^[A-Za-z][A-Za-z0-9._\-]*$", description="Model name that routes.")
    default_tradeoff: str = Field("balance", description="Trade-off used by the bare alias.")
    history_messages: int = Field(4, ge=0, le=64, description="Earlier user/assistant turns the router reads.")
    history_chars: int = Field(2000, ge=0, description="Characters kept from the end of each earlier turn.")
    tokenizer: Path | None = Field(None, description="tokenizer.json used to count prompt tokens; default: the "
                                                     "bundled encoder's (an approximation of each backend's).")
    token_margin: float = Field(1.15, ge=1.0, le=3.0, description="Head-room on the offline count of ASCII text "
                                                                  "(see tokens_per_image and docs/serving.md for "
                                                                  "the rest of the prompt bound).")
    tokens_per_image: int = Field(2500, ge=0, description="Prompt tokens an image part counts as (budgets and "
                                                          "context windows): your providers' largest image charge.")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$", description="Where the query encoder runs.")
    inference: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="What a RadialRouter's network runs on: ONNX Runtime (auto: when installed; several "
                            "times faster at batch 1) or torch.")
    explore: ExploreConfig = Field(default_factory=ExploreConfig, description="Exploration (off by default).")
    context_key: str = Field("task", min_length=1, description="Key of the request's `metadata` whose value is the "
                                                               "query's context, for routers trained with one "
                                                               "(ensemble with context=True); others ignore it.")

    _check_path = field_validator("path", "tokenizer", mode="before")(_resolve_path)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_attempts: int = Field(3, ge=1, le=10, description="Backends tried per request, fallbacks included.")
    cooldown_s: float = Field(10.0, ge=0, description="A failing backend is tried last for this long.")
    connect_timeout_s: float = Field(5.0, gt=0)
    max_connections: int = Field(100, ge=1, description="Upstream connections per backend (each has its own pool).")
    pool_timeout_s: float = Field(2.0, gt=0, description="Wait for a free connection to one backend before trying "
                                                          "the next; a local wait, never counted as a backend fault.")
    batch_max_size: int = Field(32, ge=1, le=1024, description="Requests routed in one encoder call at most.")
    batch_max_wait_ms: float = Field(0.0, ge=0, le=100, description="How long a batch waits for more requests "
                                      "(0: none; requests that arrive while a batch runs form the next one).")
    routing_thread: Literal["auto", "always", "never"] = Field(
        "auto", description="Where routing decisions run: in a worker thread (always), on the event loop (never), "
                            "or auto: on the event loop when one decision, timed at start-up, takes at most "
                            "0.5 ms (a small router on the static encoder), else in the thread.")
    max_in_flight: int = Field(1024, ge=1, description="Chat/route requests served at once; beyond: 503 at once.")
    max_routing_queue: int = Field(256, ge=1, description="Requests waiting for a routing decision; beyond: 503.")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with a 503 when the server is saturated.")
    max_client_connections: int = Field(2048, ge=1, description="Open client connections; beyond: 503.")
    header_timeout_s: float = Field(10.0, gt=0, description="A client must send a request's headers within this.")
    body_timeout_s: float = Field(30.0, gt=0, description="A client must send the whole body within this (408).")
    shutdown_grace_s: float = Field(5.0, gt=0, description="On SIGTERM, streams still open this long are ended "
                                                           "with an in-band error event.")
    reserve_output_tokens: int = Field(4096, ge=1, description="Output tokens a budget reservation assumes for a "
                                                               "request that sets no max_tokens (per choice; "
                                                               "llms[].max_output_tokens overrides it).")
    usage_wait_s: float = Field(60.0, ge=0, le=600, description="After a streaming client hangs up, keep reading "
                                                                "the backend's stream this long for its usage (what "
                                                                "it bills); without usage the reservation is charged.")
    drain_s: float = Field(0.0, ge=0, le=300, description="On SIGTERM, /readyz answers 503 for this long while "
                                                           "requests are still served, so load balancers stop "
                                                           "sending before the server stops accepting.")
    public_metrics: bool = Field(False, description="Serve /metrics without a client key.")
    allow_public_without_auth: bool = Field(False, description="Allow a non-loopback host with no client keys.")
    admin_key: EnvSecret | None = Field(None, description="${ENV} reference: the key of the operator's endpoints — the "
                                        "dashboard (/dashboard) and its JSON API, and /admin/reload (router hot swap) "
                                        "and /admin/router; unset: they are off.")
    reference_llm: str | None = Field(None, description="Pool LLM the dashboard's savings compare against; "
                                                        "default: the priciest LLM of the pool.")
    public_url: str | None = Field(None, description="The http(s) URL clients reach the gateway at (behind a proxy: "
                                   "the proxy's, e.g. https://router.example.com). With https the dashboard's session "
                                   "cookie is Secure whatever headers the proxy sends (else only when "
                                   "X-Forwarded-Proto says https).")

    _check_admin_key = field_validator("admin_key", mode="before")(_resolve_secret)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        """An absolute http(s) URL with a host and nothing that would not belong in a browser's address bar."""
        if value is None:
            return None
        text = value.strip()
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
        except ValueError:
            parts = None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, such as https://router.example.com; "
                             f"got {value[:200]!r}")
        if parts.username is not None:  # not echoed: it may hold a password
            raise ValueError("must not hold user info (user:password@): it is the address clients use")
        if parts.query or parts.fragment:
            raise ValueError(f"must be a plain http(s) URL, without query or fragment; got {value[:200]!r}")
        return text.rstrip("/")

    @property
    def public_https(self) -> bool:
        """Whether clients reach the gateway over https (``public_url``): cookies must then be Secure."""
        return self.public_url is not None and self.public_url.lower().startswith("https://")

    @field_validator("admin_key")
    @classmethod
    def _long_enough(cls, value: EnvSecret | None) -> EnvSecret | None:
        if value is not None and len(value.get()) < 16:
            raise ValueError(f"the admin key in ${{{value.env}}} is shorter than 16 characters; use a long random "
                             "one (it opens the dashboard and the admin endpoints)")
        return value


class ClientKey(_Strict):
    id: str = Field(pattern=_NAME, description="Logged and used as a metrics label instead of the key.")
    key: EnvSecret
    budget_usd: float | None = Field(None, gt=0, description="Requests are refused (429) once this is spent.")
    requests_per_minute: int | None = Field(None, ge=1, description="Sliding-window request limit (429 beyond).")
    tokens_per_minute: int | None = Field(None, ge=1, description="Sliding-window token limit (429 beyond).")

    _check_key = field_validator("key", mode="before")(_resolve_secret)


class AuthConfig(_Strict):
    keys: list[ClientKey] = Field(default_factory=list, description="Bearer keys; empty: no auth (loopback only).")


class LedgerConfig(_Strict):
    path: Path | None = Field(Path("radialrouter-decisions.sqlite"), validate_default=True,
                              description="SQLite decision log (relative to the config file); null: off.")
    url: EnvSecret | str | None = Field(None, description="PostgreSQL URL (postgresql://…), shared by replicas: "
                                        "ledger, budgets and rate limits; an ${ENV} reference when it has a password.")
    log_prompts: bool = Field(False, description="Also store the routed text (off: only ids, choices, costs).")
    wait_for_commit: bool = Field(True, description="Send a response's last byte only once its row is committed, "
                                                    "so no acknowledged request is missing from the log.")
    log_responses: bool = Field(False, description="Also store each answer's text (for judge labels).")

    _check_path = field_validator("path", mode="before")(_resolve_path)

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and _ENV_REF.match(value.strip()):
            secret = _resolve_secret(value, info)
            _check_database_url(secret.get(), secret=True)
            return secret
        if not isinstance(value, str):
            raise ValueError(f"must be a postgresql:// URL or an ${{ENV}} reference; got {type(value).__name__}")
        _check_database_url(value, secret=False)
        return value

    @model_validator(mode="after")
    def _one_store(self) -> LedgerConfig:
        if self.url is not None:
            if "path" in self.model_fields_set and self.path is not None:
                raise ValueError("set either path (SQLite) or url (PostgreSQL), not both")
            self.path = None  # the default SQLite file is not used
        return self

    def database_url(self) -> str | None:
        """The PostgreSQL URL with its secret resolved (None for SQLite)."""
        return self.url.get() if isinstance(self.url, EnvSecret) else self.url


class ServeConfig(_Strict):
    """The whole file. ``source`` is the config file it came from (for messages)."""

    router: RouterConfig
    llms: list[LLMConfig] = Field(min_length=1)
    tradeoffs: dict[str, float] | None = Field(
        None, description="Named λ values (USD per 1,000 queries); omitted: the router's own named trade-offs, "
                          "resolved on its training data's price scale (the paper's for older routers).")
    server: ServerConfig
    auth: AuthConfig
    ledger: LedgerConfig

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        # Omitted sections are validated from {} (not built by a default factory), so their defaults see the
        # validation context too: the default ledger path resolves against the config file's folder.
        if isinstance(data, dict):
            data = {**data, **{k: data.get(k) or {} for k in ("router", "server", "auth", "ledger")}}
        return data

    @field_validator("tradeoffs")
    @classmethod
    def _tradeoffs(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, lam in (value or {}).items():
            if not re.match(r"^[a-z0-9][a-z0-9_\-]*$", name):
                raise ValueError(f"trade-off name {name!r} must be lowercase letters, digits, '-' or '_'")
            if not lam >= 0:
                raise ValueError(f"trade-off {name!r}: λ must be ≥ 0; got {lam}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        names = [llm.name for llm in self.llms]
        for i, llm in enumerate(self.llms):
            if names.index(llm.name) != i:
                raise ValueError(f"llms[{i}].name: {llm.name!r} is used twice")
            if llm.name == self.router.alias:
                raise ValueError(f"llms[{i}].name: {llm.name!r} is the router alias")
            mapped = [j for j, other in enumerate(self.llms[:i]) if other.router_name == llm.router_name]
            if mapped:
                raise ValueError(f"llms[{i}].router_llm: {llm.router_name!r} is already mapped by llms[{mapped[0]}]")
        named = SCENARIOS if self.tradeoffs is None else self.tradeoffs  # the router's have the same names
        if self.router.default_tradeoff not in named:
            raise ValueError(f"router.default_tradeoff: {self.router.default_tradeoff!r} is not one of the "
                             f"tradeoffs {sorted(named)}")
        ids = [k.id for k in self.auth.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("auth.keys: client ids must be unique")
        admin = self.server.admin_key
        clash = [k.id for k in self.auth.keys if admin is not None and k.key.get() == admin.get()]
        if clash:
            raise ValueError(f"server.admin_key: equals the client key of {clash[0]!r}; a client key must not open "
                             "the dashboard and the admin endpoints")
        if self.server.reference_llm is not None and self.server.reference_llm not in names:
            raise ValueError(f"server.reference_llm: {self.server.reference_llm!r} is not a pool LLM {names}")
        if not self.auth.keys and not _is_loopback(self.server.host) and not self.server.allow_public_without_auth:
            raise ValueError(f"server.host: {self.server.host!r} is not a loopback address and auth.keys is empty; "
                             "add client keys (or set server.allow_public_without_auth: true)")
        return self

    def with_router_tradeoffs(self, presets: dict[str, float] | None) -> ServeConfig:
        """This config with ``tradeoffs`` filled from the router's named trade-offs when the file set none. A router
        trained on quality-only data has one (performance-first); every name clients may send still routes, at
        λ = 0, which is all it means there."""
        if self.tradeoffs is not None:
            return self
        if is_quality_only_presets(presets):
            return self.model_copy(update={"tradeoffs": dict.fromkeys(SCENARIOS, 0.0)})
        return self.model_copy(update={"tradeoffs": dict(presets or SCENARIOS)})

    def llm(self, name: str) -> LLMConfig:
        return next(llm for llm in self.llms if llm.name == name)

    def masked(self) -> dict[str, Any]:
        """The normalised config as plain data, secrets shown as their ``${VAR}`` reference."""
        return self.model_dump(mode="json")


def _check_database_url(url: str, secret: bool) -> None:
    parts = urlsplit(url.strip())
    if parts.scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        shown = "the URL in that variable" if secret else repr(url)
        raise ValueError(f"{shown} must start with postgresql:// (SQLite is ledger.path)")
    if parts.password and not secret:
        raise ValueError("the URL holds a password: put the whole URL in an environment variable "
                         "(url: ${RADIALROUTER_DATABASE_URL}), or leave the password out and set PGPASSWORD")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The config section (a pydantic model) that holds the key at ``loc``, e.g. `ServerConfig` for
    ``("server", "max_atempts")``; list indices and dict keys on the way lead into their element's model."""
    model: type[BaseModel] | None = ServeConfig
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)


def _unknown_key(loc: tuple) -> str:
    """pydantic says "Extra inputs are not permitted"; say which key was meant: the closest of the section's own
    keys (``max_atempts`` → ``max_attempts``), or all of them when none is close."""
    model = _model_at(loc)
    known = [] if model is None else list(model.model_fields)
    match = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if match:
        return f"unknown key; did you mean {match[0]}?"
    return f"unknown key; the keys here are {', '.join(known)}" if known else "unknown key"


def parse_config(data: Any, *, base_dir: str | Path | None = None, env: Mapping[str, str] | None = None,
                 source: str = "config") -> ServeConfig:
    """Validate already-parsed YAML/JSON data. ``base_dir`` anchors relative paths; ``env`` supplies secrets."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    context = {"base_dir": Path(base_dir).resolve() if base_dir else None, "env": os.environ if env is None else env}
    try:
        return ServeConfig.model_validate(data, context=context)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _field(tuple(p for p in err["loc"] if p not in {"function-before", "function-after"}))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = _unknown_key(err["loc"])
            lines.append(msg if err["type"] == "value_error" and not err["loc"] else f"{loc}: {msg}")
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> ServeConfig:
    """Read and validate a YAML config file; relative paths inside it resolve against its folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, base_dir=path.resolve().parent, env=env, source=str(path))
