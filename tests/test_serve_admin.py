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
from radialrouter.serve import hotswap, parse_config
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
