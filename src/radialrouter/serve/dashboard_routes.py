"""The built-in dashboard: read-only pages and their JSON endpoints under ``/dashboard``, behind ``server.admin_key``.

Pages (overview, clients, explorer, router) are static HTML shipped with the package (``serve/dashboard/``); each
fetches a JSON endpoint under ``/dashboard/api/`` and draws its charts with the vendored Chart.js — no CDN, no build
step. Every figure comes from `radialrouter.serve.dashboard_queries` (aggregates over a time range, a paginated
explorer), from the budgets (in memory, or the shared ``budget_spend`` table with a PostgreSQL ledger), or from
the config; the handlers hold no SQL.

Authentication: the admin key, either as ``Authorization: Bearer <admin key>`` (scripts) or as a session cookie set
by the login form (browsers): an HttpOnly, SameSite=Strict cookie holding an expiry, a random session id and their
HMAC under the admin key, so no key is stored in the browser, any replica with the same key accepts it, and
changing the key ends every session. Logout revokes the session id server-side (`SessionRevocations`: a table in
the decision log's database, which replicas share; in memory without a ledger), so the same cookie is refused
afterwards everywhere. The cookie is ``Secure`` when the request arrived over https (``X-Forwarded-Proto`` from a
trusted proxy) or ``server.public_url`` is https. Missing or wrong credentials get 401 (pages redirect to the
login form); with no admin key configured the dashboard is off (403). Client keys never open it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from radialrouter.serve.budgets import cost_usd
from radialrouter.serve.dashboard_queries import STATUSES, Cursor, DashboardQueries, SessionRevocations, ledger_engine
from radialrouter.serve.routing import RequestError, router_dir

log = logging.getLogger("radialrouter.serve")
COOKIE = "rr_dashboard"
SESSION_S = 12 * 3600
_LOGIN_BYTES = 4096
_FAILED_LOGIN_S = 0.5
_ENGINE_LOCK = threading.Lock()
PAGES = ("overview", "clients", "explorer", "router")
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "all": None}
_MINUTE_BUCKETS = (60, 300, 900, 1800)
_HOUR_BUCKETS = (3600, 3 * 3600, 6 * 3600, 12 * 3600)
_DAY_BUCKETS = (86400, 7 * 86400, 30 * 86400)
_MAX_BUCKETS = 120
_STATIC = resources.files("radialrouter.serve") / "dashboard"
_SECURITY = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff", "referrer-policy": "same-origin", "cache-control": "no-store",
}

dashboard_router = APIRouter(prefix="/dashboard", include_in_schema=False)


# ---------------------------------------------------------------------------------------------- authentication
def _admin_key(request: Request) -> str:
    key = request.app.state.serve.config.server.admin_key
    if key is None:
        raise RequestError("The dashboard is off: set server.admin_key (an ${ENV} reference) in the config",
                           status=403, code="dashboard_disabled")
    return key.get()


def _sign(key: str, expiry: int, session_id: str) -> str:
    """The cookie: ``expiry.session_id.mac``, the MAC under the admin key (any replica with the key can check it)."""
    mac = hmac.new(key.encode(), f"radialrouter-dashboard:{expiry}:{session_id}".encode(), hashlib.sha256)
    return f"{expiry}.{session_id}.{mac.hexdigest()}"


def _session(key: str, cookie: str | None) -> tuple[int, str] | None:
    """(expiry, session id) of a cookie this server signed and that has not expired; None otherwise."""
    expiry, _, rest = (cookie or "").partition(".")
    session_id, _, _mac = rest.partition(".")
    if not expiry.isdigit() or int(expiry) < time.time() or not session_id:
        return None
    if not hmac.compare_digest(cookie.encode(), _sign(key, int(expiry), session_id).encode()):
        return None
    return int(expiry), session_id


def _revocations(request: Request) -> SessionRevocations:
    """Logged-out sessions, in the decision log's database (shared by replicas) when there is one."""
    state = request.app.state.serve
    with _ENGINE_LOCK:
        if getattr(state, "dashboard_revocations", None) is None:
            ledger = getattr(state, "ledger", None)
            state.dashboard_revocations = SessionRevocations(ledger.engine if ledger is not None else None)
    return state.dashboard_revocations


def _database_unavailable(exc: Exception) -> RequestError:
    """Sessions cannot be checked against logouts: refuse (fail closed) with a retryable 503."""
    log.error("dashboard session store failed: %s", exc)
    return RequestError("The gateway's database is unavailable, so dashboard sessions cannot be checked; retry "
                        "shortly or use 'Authorization: Bearer <admin key>'", status=503, code="database_unavailable",
                        headers={"retry-after": "1"})


def _session_ok(request: Request, key: str, cookie: str | None) -> bool:
    session = _session(key, cookie)
    if session is None:
        return False
    try:
        return not _revocations(request).revoked(session[1])
    except sa.exc.SQLAlchemyError as exc:
        raise _database_unavailable(exc) from None


def _authorised(request: Request) -> bool:
    key = _admin_key(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return hmac.compare_digest(token.strip().encode(), key.encode())
    return _session_ok(request, key, request.cookies.get(COOKIE))


def _secure(request: Request) -> bool:
    """Whether the session cookie must be Secure: the gateway's public URL is https (``server.public_url``), or this
    request came over https (uvicorn applies ``X-Forwarded-Proto`` from a trusted proxy)."""
    return request.app.state.serve.config.server.public_https or request.url.scheme == "https"


def require_admin(request: Request) -> None:
    """Dependency of every JSON endpoint: 401 without the admin key (403 when the dashboard is off)."""
    if not _authorised(request):
        raise RequestError("Dashboard: missing or wrong admin key; log in at /dashboard/login or send "
                           "'Authorization: Bearer <admin key>'", status=401, code="invalid_admin_key")


def _queries(request: Request) -> DashboardQueries:
    state = request.app.state.serve
    target = _ledger_target(state.config)
    if target is None:
        raise RequestError("The decision log is off (ledger.path: null, no ledger.url); the dashboard's figures come "
                           "from it", status=404, code="ledger_off")
    with _ENGINE_LOCK:  # handlers run in a thread pool: one engine (one connection pool) per server
        if getattr(state, "dashboard_queries", None) is None:
            state.dashboard_queries = DashboardQueries(ledger_engine(target))
    return state.dashboard_queries


def _ledger_target(config: Any) -> Any:
    """Where the decision log lives: the PostgreSQL URL (``ledger.url``), else the SQLite file, else None (off)."""
    return config.ledger.database_url() or config.ledger.path


# ---------------------------------------------------------------------------------------------- pages
def _static(name: str, media_type: str | None = None, cache: str = "no-store") -> FileResponse:
    return FileResponse(str(_STATIC / name), media_type=media_type, headers={**_SECURITY, "cache-control": cache})


@dashboard_router.get("")
@dashboard_router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/dashboard/overview", status_code=303)


@dashboard_router.get("/login")
def login_page(request: Request) -> Response:
    _admin_key(request)  # 403 when the dashboard is off
    return _static("login.html", "text/html")


@dashboard_router.post("/login")
async def login(request: Request) -> Response:
    """The login form: the admin key in, a session cookie out (then back to the page that asked)."""
    key = _admin_key(request)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _LOGIN_BYTES:
            raise RequestError(f"Login form larger than {_LOGIN_BYTES} bytes", status=413, code="body_too_large")
    form = parse_qs(body.decode("utf-8", "replace"))
    given = (form.get("key") or [""])[0]
    target = (form.get("next") or ["/dashboard/overview"])[0]
    if not target.startswith("/dashboard/") or target.startswith("//"):
        target = "/dashboard/overview"
    if not hmac.compare_digest(given.encode(), key.encode()):
        await asyncio.sleep(_FAILED_LOGIN_S)  # slows guessing down (the key is also at least 16 characters)
        return RedirectResponse(f"/dashboard/login?failed=1&next={quote(target)}", status_code=303)
    response = RedirectResponse(target, status_code=303)
    cookie = _sign(key, int(time.time()) + SESSION_S, secrets.token_urlsafe(18))
    response.set_cookie(COOKIE, cookie, max_age=SESSION_S, path="/dashboard", httponly=True, samesite="strict",
                        secure=_secure(request))
    return response


@dashboard_router.post("/logout")
def logout(request: Request) -> Response:
    """End the session: its id is revoked server-side (a copy of the cookie is refused too), the cookie deleted."""
    key = request.app.state.serve.config.server.admin_key
    session = None if key is None else _session(key.get(), request.cookies.get(COOKIE))
    if session is not None:
        try:
            _revocations(request).revoke(session[1], session[0])
        except sa.exc.SQLAlchemyError as exc:
            raise _database_unavailable(exc) from None
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict", secure=_secure(request))
    return response


@dashboard_router.get("/static/{name}")
def static(name: str) -> Response:
    """CSS, the page scripts and the vendored Chart.js (public: no figures in them)."""
    kinds = {".js": "text/javascript", ".css": "text/css", ".md": "text/markdown"}
    suffix = name[name.rfind("."):] if "." in name else ""
    file = _STATIC / name
    if "/" in name or suffix not in kinds or not file.is_file():
        raise RequestError(f"No dashboard asset {name!r}", status=404, code="not_found")
    return _static(name, kinds[suffix], cache="private, max-age=3600")


@dashboard_router.get("/{page}")
def page(page: str, request: Request) -> Response:
    if page not in PAGES:
        raise RequestError(f"No dashboard page {page!r}; pages: {', '.join(PAGES)}", status=404, code="not_found")
    if not _authorised(request):
        return RedirectResponse(f"/dashboard/login?next={quote('/dashboard/' + page)}", status_code=303)
    return _static(f"{page}.html", "text/html")


# ---------------------------------------------------------------------------------------------- time windows
def _window(q: DashboardQueries | None, range_: str, since: float | None, until: float | None) -> dict[str, Any]:
    """``range`` (1h, 24h, 7d, 30d, all) or explicit ``since``/``until`` epoch seconds → since, until, bucket."""
    now = time.time()
    if since is not None or until is not None:
        until = now if until is None else until
        since = until - 86400 if since is None else since
        if not since < until:
            raise RequestError("`since` must be before `until` (epoch seconds)", param="since")
        range_ = "custom"
    elif RANGES[range_] is None:
        lo, hi = q.time_range() if q is not None else (None, None)
        until = max(now, (hi or now) + 1)
        since = lo if lo is not None else until - 3600
    else:
        until, since = now, now - RANGES[range_]
    span = until - since
    # Windows over 6 h use whole-hour buckets and edges, over 8 days whole UTC days, so they read the hourly or
    # daily pre-aggregates (ledger_rollup) instead of raw rows.
    choices = _DAY_BUCKETS if span > 8 * 86400 else _HOUR_BUCKETS if span > 6 * 3600 else _MINUTE_BUCKETS
    bucket = next((b for b in choices if span / b <= _MAX_BUCKETS), choices[-1])
    edge = 86400 if bucket % 86400 == 0 else 3600 if bucket % 3600 == 0 else None
    if edge:
        since, until = math.floor(since / edge) * edge, math.ceil(until / edge) * edge
    return {"range": range_, "since": since, "until": until, "bucket_s": bucket}


RangeQ = Query("24h", alias="range", pattern="^(1h|24h|7d|30d|all)$", description="Time window.")
SinceQ = Query(None, ge=0, le=1e11, description="Window start, epoch seconds (overrides range).")
UntilQ = Query(None, ge=0, le=1e11, description="Window end, epoch seconds.")


def reference_llm(config: Any, chosen: str | None) -> tuple[Any, str]:
    """The LLM savings are measured against, and why it is the one: chosen on the page, configured, or the
    priciest of the pool (a stand-in for "the strongest", which the router does not record)."""
    names = [llm.name for llm in config.llms]
    if chosen is not None:
        if chosen not in names:
            raise RequestError(f"`reference`: {chosen!r} is not a pool LLM; pool: {', '.join(names)}",
                               param="reference")
        return config.llm(chosen), "chosen"
    if config.server.reference_llm is not None:
        return config.llm(config.server.reference_llm), "server.reference_llm"
    return max(config.llms, key=lambda llm: llm.input_price + llm.output_price), "priciest in the pool"


def _rate(part: float, whole: float) -> float | None:
    return None if not whole else part / whole


# ---------------------------------------------------------------------------------------------- JSON: overview
@dashboard_router.get("/api/overview", dependencies=[Depends(require_admin)])
def api_overview(request: Request, range_: str = RangeQ, since: float | None = SinceQ, until: float | None = UntilQ,
                 reference: str | None = Query(None, max_length=200)) -> JSONResponse:
    """Requests, routing split per LLM over time, spend against always calling the reference LLM, fallback and
    error rates, and the latency the gateway adds."""
    config = request.app.state.serve.config
    ref, why = reference_llm(config, reference)
    q = _queries(request)
    window = _window(q, range_, since, until)
    rows = q.traffic(window["since"], window["until"], window["bucket_s"])
    b = window["bucket_s"]
    first = math.floor(window["since"] / b) * b
    buckets = list(range(first, int(window["until"]) + 1, b))
    if buckets and buckets[-1] >= window["until"]:
        buckets.pop()
    index = {t: i for i, t in enumerate(buckets)}
    llms = sorted({r["llm"] or "(none)" for r in rows})
    zeros = [0.0] * len(buckets)
    split = {llm: list(zeros) for llm in llms}
    per_bucket = {k: list(zeros) for k in ("served", "fallbacks", "errors", "cost", "ref", "ov_sum", "ov_n",
                                             "lat_sum", "lat_n")}
    ov_max: list[float | None] = [None] * len(buckets)
    per_llm: dict[str, dict[str, float]] = {}
    totals = dict.fromkeys(("requests", "ok", "route_only", "errors", "upstream_failed", "fallbacks", "routed",
                            "cost_usd", "expected_cost_usd", "reference_cost_usd", "prompt_tokens",
                            "completion_tokens"), 0.0)
    lat, ov, overhead_max = [0.0, 0], [0.0, 0], None
    for r in rows:
        i, llm = index.get(r["bucket"]), r["llm"] or "(none)"
        ref_cost = cost_usd(ref, r["prompt_tokens"], r["completion_tokens"])
        for k in totals:
            totals[k] += ref_cost if k == "reference_cost_usd" else r[k]
        lat[0], lat[1] = lat[0] + r["latency_sum"], lat[1] + r["latency_n"]
        ov[0], ov[1] = ov[0] + r["overhead_sum"], ov[1] + r["overhead_n"]
        if r["overhead_max"] is not None:
            overhead_max = max(overhead_max or 0.0, r["overhead_max"])
        m = per_llm.setdefault(llm, {"requests": 0, "cost_usd": 0.0, "errors": 0, "fallbacks": 0})
        for k in m:
            m[k] += r[k]
        if i is None:  # a row at the window's very edge (float rounding): counted in totals only
            continue
        split[llm][i] += r["requests"]
        per_bucket["served"][i] += r["requests"] - r["route_only"]
        for k, src in (("fallbacks", "fallbacks"), ("errors", "errors"), ("cost", "cost_usd"),
                       ("ov_sum", "overhead_sum"), ("ov_n", "overhead_n"), ("lat_sum", "latency_sum"),
                       ("lat_n", "latency_n")):
            per_bucket[k][i] += r[src]
        per_bucket["ref"][i] += ref_cost
        if r["overhead_max"] is not None:
            ov_max[i] = max(ov_max[i] or 0.0, r["overhead_max"])
    served = totals["requests"] - totals["route_only"]
    cum_cost, cum_ref, c1, c2 = [], [], 0.0, 0.0
    for i in range(len(buckets)):
        c1, c2 = c1 + per_bucket["cost"][i], c2 + per_bucket["ref"][i]
        cum_cost.append(c1)
        cum_ref.append(c2)
    savings = totals["reference_cost_usd"] - totals["cost_usd"]
    body = {
        "window": window,
        "reference": {"llm": ref.name, "why": why, "input_price": ref.input_price, "output_price": ref.output_price,
                      "pool": [llm.name for llm in config.llms]},
        "totals": {**{k: (v if k.endswith("_usd") else int(v)) for k, v in totals.items()},
                   "served": int(served),
                   "fallback_rate": _rate(totals["fallbacks"], served), "error_rate": _rate(totals["errors"], served),
                   "savings_usd": savings, "savings_pct": _rate(100 * savings, totals["reference_cost_usd"]),
                   "mean_latency_ms": _rate(lat[0], lat[1]), "mean_overhead_ms": _rate(ov[0], ov[1]),
                   "max_overhead_ms": overhead_max},
        "per_llm": [{"llm": k, **v, "share": _rate(v["requests"], totals["requests"])}
                    for k, v in sorted(per_llm.items())],
        "buckets": buckets,
        "series": {
            "requests_per_llm": split,
            "cumulative_cost_usd": cum_cost,
            "cumulative_reference_cost_usd": cum_ref,
            "fallback_rate": [_rate(f, n) for f, n in zip(per_bucket["fallbacks"], per_bucket["served"])],
            "error_rate": [_rate(e, n) for e, n in zip(per_bucket["errors"], per_bucket["served"])],
            "mean_overhead_ms": [_rate(s, n) for s, n in zip(per_bucket["ov_sum"], per_bucket["ov_n"])],
            "max_overhead_ms": ov_max,
            "mean_latency_ms": [_rate(s, n) for s, n in zip(per_bucket["lat_sum"], per_bucket["lat_n"])],
        },
    }
    return JSONResponse(body, headers=_SECURITY)


# ---------------------------------------------------------------------------------------------- JSON: clients
@dashboard_router.get("/api/clients", dependencies=[Depends(require_admin)])
def api_clients(request: Request, range_: str = RangeQ, since: float | None = SinceQ,
                until: float | None = UntilQ) -> JSONResponse:
    """Per client key: all-time spend against its budget (live, reservations included), and over the window the
    requests, spend, trade-offs (modes and mean λ) and LLMs used."""
    state = request.app.state.serve
    q = _queries(request)
    window = _window(q, range_, since, until)
    data = q.clients(window["since"], window["until"])
    budgets = state.budgets
    # Spend lives where the budgets keep it: with a PostgreSQL ledger in the database all replicas share (this
    # process's in-memory figures stay empty there), else in this process (restored from the log at start).
    stored = q.spend() if getattr(state, "shared", None) is not None else None
    ids = [k.id for k in state.config.auth.keys]
    ids += sorted({r["client"] for r in data["by_mode"]} - set(ids))
    clients = []
    for cid in ids:
        limit = budgets.limits.get(cid)
        if stored is not None:
            spent, reserved = stored.get(cid, (0.0, 0.0))
        else:
            spent, reserved = budgets.spent.get(cid, 0.0), budgets.reserved.get(cid, 0.0)
        modes = [r for r in data["by_mode"] if r["client"] == cid]
        clients.append({
            "client": cid, "configured": cid in budgets.limits or any(k.id == cid for k in state.config.auth.keys),
            "budget_usd": limit, "spent_usd": spent, "reserved_usd": reserved,
            "budget_used": None if limit is None else (spent + reserved) / limit,
            "requests": sum(r["requests"] for r in modes), "window_cost_usd": sum(r["cost_usd"] for r in modes),
            "errors": sum(r["errors"] for r in modes),
            "modes": {(r["mode"] or "direct"): {"requests": r["requests"], "mean_lam": r["mean_lam"],
                                                "cost_usd": r["cost_usd"]} for r in modes},
            "llms": {(r["llm"] or "(none)"): r["requests"] for r in data["by_llm"] if r["client"] == cid},
        })
    modes = sorted({m for c in clients for m in c["modes"]})
    return JSONResponse({"window": window, "clients": clients, "modes": modes,
                         "tradeoffs": state.config.tradeoffs}, headers=_SECURITY)


# ---------------------------------------------------------------------------------------------- JSON: explorer
@dashboard_router.get("/api/requests", dependencies=[Depends(require_admin)])
def api_requests(request: Request, request_id: str | None = Query(None, max_length=200),
                 client: str | None = Query(None, max_length=200), llm: str | None = Query(None, max_length=200),
                 status: str | None = Query(None, max_length=200), mode: str | None = Query(None, max_length=200),
                 model: str | None = Query(None, max_length=200), fallback: bool | None = None,
                 since: float | None = SinceQ, until: float | None = UntilQ,
                 limit: int = Query(50, ge=1, le=500),
                 before: str | None = Query(None, max_length=300)) -> JSONResponse:
    """One page of decisions, newest first, filtered by exact values; ``next`` is the cursor for the next page.
    With ``request_id``, that one row (or none)."""
    q = _queries(request)
    if request_id:
        row = q.request(request_id)
        return JSONResponse({"rows": [row] if row else [], "next": None}, headers=_SECURITY)
    filters = {k: v for k, v in (("client", client), ("llm", llm), ("status", status), ("mode", mode),
                                 ("model", model)) if v}
    try:
        cursor = Cursor.decode(before) if before else None
    except ValueError as exc:
        raise RequestError(str(exc), param="before") from None
    page = q.requests(filters=filters, since=since, until=until, fallback=fallback, limit=limit, before=cursor)
    return JSONResponse(page, headers=_SECURITY)


@dashboard_router.get("/api/requests/{request_id}", dependencies=[Depends(require_admin)])
def api_request(request: Request, request_id: str) -> JSONResponse:
    """One decision whole: λ, ranking, scores and probabilities, expected vs actual cost, attempts, feedback."""
    row = _queries(request).request(request_id)
    if row is None:
        raise RequestError(f"No request {request_id[:100]!r} in the decision log", status=404, code="not_found")
    config = request.app.state.serve.config
    ref, why = reference_llm(config, None)
    if row.get("prompt_tokens") is not None:
        row["reference"] = {"llm": ref.name, "why": why,
                            "cost_usd": cost_usd(ref, row["prompt_tokens"], row["completion_tokens"] or 0)}
    return JSONResponse(row, headers=_SECURITY)


@dashboard_router.get("/api/values", dependencies=[Depends(require_admin)])
def api_values(request: Request) -> JSONResponse:
    """The explorer's drop-downs: clients, LLMs and trade-offs from the config (the only values the server
    writes), statuses known to the server plus any seen in the last 24 hours (e.g. ``client_error_400``)."""
    config = request.app.state.serve.config
    now = time.time()
    seen = _queries(request).distinct("status", now - 86400, now + 1)
    return JSONResponse({"client": [k.id for k in config.auth.keys] or ["anonymous"],
                         "llm": [llm.name for llm in config.llms],
                         "mode": [*config.tradeoffs, "explicit"],
                         "status": sorted(set(STATUSES) | set(seen))}, headers=_SECURITY)


# ---------------------------------------------------------------------------------------------- JSON: router
@dashboard_router.get("/api/router", dependencies=[Depends(require_admin)])
def api_router(request: Request, range_: str = Query("30d", alias="range", pattern="^(1h|24h|7d|30d|all)$")
               ) -> JSONResponse:
    """The serving router (name, version, trained-on data, LLMs), the pool with prices, and — when the ledger
    records them — per-version and feedback figures."""
    state = request.app.state.serve
    config = state.config
    directory = router_dir(config)
    training: dict[str, Any] = {}
    if (directory / "training.json").is_file():
        training = json.loads((directory / "training.json").read_text())
    encoder = json.loads((directory / "encoder.json").read_text()) if (directory / "encoder.json").is_file() else None
    routable = {x.name for x in state.decider.routable}
    router = state.router
    info = {
        "name": router.name, "class": type(router).__name__, "path": str(directory),
        "embedded": config.router.path is None,
        # The id every decision carries (ledger, explorer, /admin/router): `serve.api.admin.router_version`. The
        # training data's fingerprint is shown with the training figures, not as a version.
        "version": state.router_version,
        "llms": list(router.llms_), "default_lam": getattr(router, "default_lam_", None),
        "training": {k: v for k, v in training.items() if not isinstance(v, dict) or k == "test"},
        "encoder": encoder,
    }
    pool = [{"name": llm.name, "router_llm": llm.router_name, "upstream_model": llm.upstream_model,
             "input_price": llm.input_price, "output_price": llm.output_price,
             "context_window": llm.context_window, "capabilities": llm.capabilities,
             "routable": llm.name in routable} for llm in config.llms]
    body: dict[str, Any] = {"router": info, "pool": pool, "tradeoffs": config.tradeoffs,
                            "default_tradeoff": config.router.default_tradeoff, "alias": config.router.alias,
                            "versions": None, "has_feedback": False}
    if _ledger_target(config) is not None:
        q = _queries(request)
        window = _window(q, range_, None, None)
        body.update(window=window, versions=q.versions(window["since"], window["until"]),
                    has_feedback="feedback" in q.tables())
    return JSONResponse(body, headers=_SECURITY)


@dashboard_router.get("/api/feedback", dependencies=[Depends(require_admin)])
def api_feedback(request: Request, range_: str = Query("30d", alias="range", pattern="^(1h|24h|7d|30d|all)$")
                 ) -> JSONResponse:
    """Feedback on the window's requests per router version and per LLM (null when the ledger has no feedback
    table). Its own endpoint: one key look-up per rating, the router page's slowest figure, loaded alongside."""
    q = _queries(request)
    window = _window(q, range_, None, None)
    return JSONResponse({"window": window, "feedback": q.feedback_summary(window["since"], window["until"])},
                        headers=_SECURITY)
