"""The operator's surface found wanting by the gateway's security audit (issue #21): ``/admin/reload`` against hostile
bodies and router folders that block on read, and the dashboard's session cookie (revoked at logout, ``Secure``
from ``server.public_url``).

Every wait here is bounded: reloads that block run with a ``timeout_s`` of a second or two, HTTP calls have
timeouts, and a loader thread left blocked on a FIFO is fed until it ends before the test returns.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from radialrouter.data import make_synthetic
from radialrouter.routers import make_router
from radialrouter.serve import ConfigError, parse_config
from radialrouter.serve.api import admin as hotswap
from radialrouter.serve.app import create_app
from radialrouter.serve.testing import ServerThread

ADMIN = "admin-key-0123456789abcdef"
ENV = {"RR_ADMIN": ADMIN}
AUTH = {"authorization": f"Bearer {ADMIN}"}
FIFO_OK = hasattr(os, "mkfifo")


def _config(router: Path, ledger: Path | None = None, **server) -> dict:
    llms = [{"name": f"m{i}", "base_url": f"http://127.0.0.1:9/m{i}/v1", "router_llm": f"llm-{i}",
             "input_price": 1.0, "output_price": 2.0, "context_window": 100_000} for i in range(3)]
    return {"router": {"path": str(router)}, "llms": llms,
            "ledger": {"path": None if ledger is None else str(ledger)},
            "server": {"batch_max_wait_ms": 1, "admin_key": "${RR_ADMIN}", **server}}


@pytest.fixture(scope="module")
def routers(tmp_path_factory) -> dict[str, Path]:
    """Two saved routers with different weights (so different versions)."""
    tmp = tmp_path_factory.mktemp("routers")
    for seed in (0, 1):
        data = make_synthetic(n_queries=40, n_llms=3, seed=seed).select("train")
        make_router("best-single").fit(data).save_pretrained(tmp / f"r{seed}")
    return {"a": tmp / "r0", "b": tmp / "r1"}


@pytest.fixture
def server(routers):
    app = create_app(parse_config(_config(routers["a"]), env=ENV))
    with ServerThread(app) as thread:
        yield thread.url, app.state.serve


def _reload(url: str, timeout: float = 30, **body) -> httpx.Response:
    return httpx.post(f"{url}/admin/reload", json=body, headers=AUTH, timeout=timeout)


def _fifo_folder(src: Path, dst: Path) -> Path:
    """A copy of router ``src`` whose config.json is a FIFO: opening it blocks until a writer comes."""
    shutil.copytree(src, dst)
    (dst / "config.json").unlink()
    os.mkfifo(dst / "config.json")
    return dst


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == hotswap._LOADER_THREAD and t.is_alive()]


def _feed_until_loaders_end(fifo: Path, content: bytes, within: float = 15.0) -> None:
    """Unblock every reader of ``fifo`` (each open gets ``content``, then end of file) until no loader thread is
    left; fails rather than hangs."""
    deadline = time.monotonic() + within
    while _loader_threads() and time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only while a reader waits in open()
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            time.sleep(0.02)
            continue
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
        time.sleep(0.02)
    assert not _loader_threads(), "a loader thread is still blocked"


# ------------------------------------------------------------------------------------------ hostile bodies
def test_reload_answers_a_4xx_to_a_deeply_nested_body(server, routers):
    """A 100,000-deep body used to end in a RecursionError: a 500, two tracebacks and a reset connection."""
    url, state = server
    version = state.router_version
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"path": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                 b'{"path": ' + b"[" * 200 + b"]" * 200 + b"}"):
        resp = httpx.post(f"{url}/admin/reload", content=body, headers={**AUTH, "content-type": "application/json"},
                          timeout=30)
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert error["code"] in ("invalid_json", "too_deep") and "\n" not in error["message"]
    for body, code in ((b"[]", "invalid_type"), (b'{"path": 1e400}', "invalid_value"), (b"{", "invalid_json")):
        resp = httpx.post(f"{url}/admin/reload", content=body, headers=AUTH, timeout=30)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == code, resp.text
    for bad in (0, -1, "10", True, 1e9):
        resp = _reload(url, path=str(routers["b"]), timeout_s=bad)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "timeout_s", resp.text
    assert state.router_version == version
    ok = _reload(url, path=str(routers["b"]))  # the server is fine afterwards
    assert ok.status_code == 200 and ok.json()["previous_version"] == version != state.router_version


# ------------------------------------------------------------------------------------------ folders that block
@pytest.mark.skipif(not FIFO_OK, reason="needs os.mkfifo (POSIX)")
def test_reload_refuses_a_fifo_in_the_router_folder_at_once(server, routers, tmp_path):
    url, state = server
    folder = _fifo_folder(routers["b"], tmp_path / "fifo-router")
    version = state.router_version
    start = time.monotonic()
    resp = _reload(url, timeout=20, path=str(folder))
    assert resp.status_code == 409 and time.monotonic() - start < 10, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_router" and "config.json is not a regular file" in error["message"]
    assert not _loader_threads() and state.router_version == version
    assert _reload(url, path=str(routers["b"])).status_code == 200


@pytest.mark.skipif(not FIFO_OK, reason="needs os.mkfifo (POSIX)")
def test_a_blocked_load_times_out_frees_the_lock_and_is_never_installed(server, routers, tmp_path, monkeypatch):
    """A read that blocks where no check sees it (here: the FIFO check turned off, so the real loader opens the
    FIFO config.json) hangs one reload for its ``timeout_s`` only: the swap lock is free afterwards, a reload of a
    good folder waiting behind it succeeds, and the abandoned load — fed its config once the reload has answered —
    finishes but is never installed."""
    url, state = server
    folder = _fifo_folder(routers["b"], tmp_path / "blocking-router")
    monkeypatch.setattr(hotswap, "check_router_files", lambda path: None)
    stuck: dict = {}

    def blocked_reload() -> None:
        stuck["response"] = _reload(url, timeout=20, path=str(folder), timeout_s=1.5)

    caller = threading.Thread(target=blocked_reload, daemon=True)
    try:
        start = time.monotonic()
        caller.start()
        deadline = time.monotonic() + 10
        while not _loader_threads() and time.monotonic() < deadline:  # the blocked load holds the lock now
            time.sleep(0.01)
        assert _loader_threads()
        good = _reload(url, timeout=20, path=str(routers["a"]))  # queued behind it, at most its timeout_s
        caller.join(timeout=20)
        assert not caller.is_alive()
        resp = stuck["response"]
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "router_load_timeout", resp.text
        assert "within 1.5 s" in resp.json()["error"]["message"]
        assert good.status_code == 200 and time.monotonic() - start < 15, good.text
        assert state.router_path == routers["a"].resolve()
        assert _reload(url, timeout=20, path=str(routers["b"])).status_code == 200  # and the next one as well
    finally:
        _feed_until_loaders_end(folder / "config.json", (routers["b"] / "config.json").read_bytes())
    assert state.router_path == routers["b"].resolve()  # the late load of `folder` was dropped


# ------------------------------------------------------------------------------------------ dashboard sessions
def _login(url: str) -> httpx.Response:
    resp = httpx.post(f"{url}/dashboard/login", data={"key": ADMIN, "next": "/dashboard/overview"}, timeout=30)
    assert resp.status_code == 303 and resp.headers["location"] == "/dashboard/overview"
    return resp


def _with_cookie(url: str, cookie: str, path: str = "/dashboard/api/router") -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={"cookie": f"rr_dashboard={cookie}"}, timeout=30)


def _logout(url: str, cookie: str) -> httpx.Response:
    return httpx.post(f"{url}/dashboard/logout", headers={"cookie": f"rr_dashboard={cookie}"}, timeout=30)


@pytest.mark.parametrize("ledger", [False, True], ids=["no-ledger", "sqlite-ledger"])
def test_logout_revokes_the_session_server_side(routers, tmp_path, ledger):
    """The cookie was stateless (an expiry and its MAC, 12 h): a copy kept after logout still opened the
    dashboard. Logout now revokes its session id; other sessions live on."""
    config = parse_config(_config(routers["a"], tmp_path / "d.sqlite" if ledger else None), env=ENV)
    with ServerThread(create_app(config)) as thread:
        url = thread.url
        first = _login(url).cookies["rr_dashboard"]
        assert _with_cookie(url, first).status_code == 200
        out = _logout(url, first)
        assert out.status_code == 303 and 'rr_dashboard=""' in out.headers["set-cookie"]
        refused = _with_cookie(url, first)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_admin_key"
        page = _with_cookie(url, first, "/dashboard/overview")
        assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
        second = _login(url).cookies["rr_dashboard"]
        assert second != first and _with_cookie(url, second).status_code == 200  # a new session works
        assert httpx.get(f"{url}/dashboard/api/router", headers=AUTH, timeout=30).status_code == 200
        assert _logout(url, first).status_code == 303  # logging out twice is harmless
        assert _logout(url, "1.forged.00").status_code == 303
    if ledger:  # a restart does not bring the session back
        with ServerThread(create_app(config)) as thread:
            assert _with_cookie(thread.url, first).status_code == 401
            assert _with_cookie(thread.url, second).status_code == 200


def test_logout_on_one_replica_holds_on_every_replica(routers, pg_url):
    """Replicas sharing PostgreSQL (same admin key) accept each other's session cookies, so revocation is stored in
    the shared database: a logout on one replica is refused by the other at once."""
    raw = _config(routers["a"])
    raw["ledger"] = {"url": pg_url}
    one, two = create_app(parse_config(raw, env=ENV)), create_app(parse_config(raw, env=ENV))
    with ServerThread(one) as r1, ServerThread(two) as r2:
        cookie = _login(r1.url).cookies["rr_dashboard"]
        assert _with_cookie(r2.url, cookie).status_code == 200  # valid across replicas
        assert _logout(r1.url, cookie).status_code == 303
        assert _with_cookie(r1.url, cookie).status_code == 401
        assert _with_cookie(r2.url, cookie).status_code == 401
        other = _login(r2.url).cookies["rr_dashboard"]
        assert other != cookie and _with_cookie(r1.url, other).status_code == 200  # only that session ended


# ------------------------------------------------------------------------------------------ Secure cookie
def test_public_url_makes_the_session_cookie_secure_without_a_header(routers):
    plain = parse_config(_config(routers["a"]), env=ENV)
    public = parse_config(_config(routers["a"], public_url="https://router.example.com/"), env=ENV)
    assert public.server.public_url == "https://router.example.com" and public.server.public_https
    with ServerThread(create_app(plain)) as thread:
        assert "secure" not in _login(thread.url).headers["set-cookie"].lower()
        # behind a proxy on this host (uvicorn trusts 127.0.0.1), the proxy's header makes it Secure
        proxied = httpx.post(f"{thread.url}/dashboard/login", data={"key": ADMIN}, timeout=30,
                             headers={"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"})
        assert "; secure" in proxied.headers["set-cookie"].lower()
    with ServerThread(create_app(public)) as thread:
        login = _login(thread.url)  # plain http to the gateway, no proxy header
        assert "; secure" in login.headers["set-cookie"].lower()
        cookie = login.cookies["rr_dashboard"]
        assert "; secure" in _logout(thread.url, cookie).headers["set-cookie"].lower()


@pytest.mark.parametrize("value", ["router.example.com", "ftp://router.example.com", "https://", "https://x:99999",
                                   "https://router.example.com/?a=1", "https://user:hunter2@router.example.com", 7])
def test_public_url_must_be_an_http_url(routers, value):
    with pytest.raises(ConfigError) as err:
        parse_config(_config(routers["a"], public_url=value), env=ENV)
    message = str(err.value)
    assert "server.public_url" in message and "hunter2" not in message
    assert parse_config(_config(routers["a"], public_url="http://10.0.0.5:8000/gw"), env=ENV).server.public_https \
        is False
