"""The learning loop end to end over real HTTP: a server with fake upstreams and exploration serves requests,
clients send feedback, `train --from-ledger` learns a router from it, `ope` evaluates it on the log, `promote`
swaps it in while requests keep flowing — none fails — and later decisions carry the new version and route better.

Ground truth (what the feedback says): maths questions are answered well only by ``strong``; history questions by
``cheap`` and ``strong``; ``mid`` answers nothing well. The serving router starts out wrong (it always picks
``mid``). Pool names differ from the router's LLM names (``router_llm``), as in real configs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from radialrouter.cli import app as cli_app
from radialrouter.data.dataset import RoutingDataset
from radialrouter.learning.ledger_data import logged_traffic, read_ledger
from radialrouter.routers import from_pretrained, make_router
from radialrouter.serve import load_config
from radialrouter.serve.app import create_app
from radialrouter.serve.testing import ServerThread, fake_backends

pytestmark = pytest.mark.usefixtures("one_thread")
ADMIN_KEY = "sk-admin-0123456789abcdef"  # server.admin_key: 16+ characters
ENV = {"RR_ALICE": "sk-alice", "RR_BOB": "sk-bob", "RR_ADMIN": ADMIN_KEY}
ALICE, BOB = {"authorization": "Bearer sk-alice"}, {"authorization": "Bearer sk-bob"}
ROUTER_NAME = {"cheap": "llm-0", "mid": "llm-1", "strong": "llm-2"}


def maths(i: int) -> str:
    return f"solve the equation {i} x plus {i + 3} equals {2 * i} and compute the integral of the polynomial"


def history(i: int) -> str:
    return f"which king ruled the medieval kingdom in the year {1000 + i} and what battles did his army fight"


def truth(prompt: str, llm: str) -> float:
    return float(llm == "strong" or (llm == "cheap" and "king" in prompt))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(request, tmp_path_factory):
    """The server, on a SQLite decision log or on PostgreSQL (`ledger.url`; skipped without a server). Yields the
    folder, the app, its URL and the ledger target the offline tools read (a path or the database URL)."""
    from radialrouter.core.encoders import QueryEncoder

    root = tmp_path_factory.mktemp("loop")
    env = dict(ENV)
    if request.param == "postgresql":
        import uuid

        import psycopg
        from sqlalchemy import make_url

        server = request.getfixturevalue("pg_server")
        name = f"rr_loop_{uuid.uuid4().hex[:12]}"
        admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        request.addfinalizer(lambda: _drop_database(admin, name))
        target = env["RR_DB"] = make_url(server).set(database=name).render_as_string(hide_password=False)
        ledger = {"url": "${RR_DB}", "log_prompts": True, "log_responses": True}
    else:
        target = str(root / "ledger.sqlite")
        ledger = {"path": "ledger.sqlite", "log_prompts": True, "log_responses": True}
    prompts = [maths(i) for i in range(20)] + [history(i) for i in range(20)]
    wrong = np.tile([0.0, 1.0, 0.0], (len(prompts), 1))  # believes mid is best everywhere
    ds = RoutingDataset.from_arrays(prompts, wrong, ["llm-0", "llm-1", "llm-2"],
                                    cost=np.tile([1e-5, 1e-4, 1e-3], (len(prompts), 1)), split=["train"] * 40)
    ds = ds.embed(QueryEncoder("static", cache_dir=False), progress=False)
    make_router("knn", k=3).fit(ds).save_pretrained(root / "initial")
    with fake_backends(("cheap", "mid", "strong")) as (fakes, base):
        prices = {"cheap": 0.1, "mid": 1.0, "strong": 10.0}
        config = {
            "router": {"path": "initial", "default_tradeoff": "balance",
                       "explore": {"method": "epsilon", "epsilon": 0.9, "seed": 0}},
            "llms": [{"name": n, "base_url": f"{base}/{n}/v1", "router_llm": ROUTER_NAME[n], "input_price": p,
                      "output_price": p, "context_window": 100_000} for n, p in prices.items()],
            "server": {"admin_key": "${RR_ADMIN}"},
            "auth": {"keys": [{"id": "alice", "key": "${RR_ALICE}"}, {"id": "bob", "key": "${RR_BOB}"}]},
            "ledger": ledger,
        }
        (root / "serve.yaml").write_text(yaml.safe_dump(config))
        server_app = create_app(load_config(root / "serve.yaml", env=env))
        with ServerThread(server_app) as thread:
            yield root, server_app, thread.url, target


def _drop_database(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_written(server_app, timeout_s: float = 30.0) -> None:
    """Wait until the decision log has committed every recorded row; a backlog that never drains is a failure,
    not a hang."""
    ledger = server_app.state.serve.ledger
    deadline = time.monotonic() + timeout_s
    while ledger.backlog():
        assert time.monotonic() < deadline, f"the decision log still has {ledger.backlog()} rows after {timeout_s} s"
        time.sleep(0.02)
    time.sleep(0.2)


def test_feedback_is_checked_authorised_and_idempotent(setup):
    root, server_app, url, _ = setup
    with httpx.Client(base_url=url, timeout=30) as http:
        reply = http.post("/v1/chat/completions", headers=ALICE,
                          json={"model": "radial", "messages": [{"role": "user", "content": history(1)}]})
        assert reply.status_code == 200
        rid = reply.json()["id"]
        assert rid == reply.headers["x-radialrouter-request-id"]  # response.id is what feedback takes
        bad = [({"id": rid, "score": 1.5}, "score"), ({"id": rid, "thumbs": "sideways"}, "thumbs"),
               ({"id": rid}, "score"), ({"id": rid, "score": 1, "thumbs": "up"}, "score"), ({"score": 1}, "id"),
               ({"id": rid, "score": True}, "score"), ({"id": rid, "score": 1, "comment": "x" * 3000}, "comment")]
        for body, param in bad:
            resp = http.post("/v1/feedback", headers=ALICE, json=body)
            assert resp.status_code == 400 and resp.json()["error"]["param"] == param, (body, resp.text)
        assert http.post("/v1/feedback", headers=BOB, json={"id": rid, "score": 1}).status_code == 404
        assert http.post("/v1/feedback", headers=ALICE, json={"id": "rr-nope", "score": 1}).status_code == 404
        assert http.post("/v1/feedback", json={"id": rid, "score": 1}).status_code == 401
        for _ in range(2):
            ok = http.post("/v1/feedback", headers=ALICE, json={"id": rid, "thumbs": "down", "comment": "meh"})
            assert ok.status_code == 200, ok.text
        with http.stream("POST", "/v1/chat/completions", headers=ALICE, json={
                "model": "radial", "stream": True, "messages": [{"role": "user", "content": maths(2)}]}) as stream:
            chunks = [json.loads(line[6:]) for line in stream.iter_lines()
                      if line.startswith("data: {")]
            stream_id = stream.headers["x-radialrouter-request-id"]
        assert chunks and {c["id"] for c in chunks} == {stream_id}
        assert http.post("/v1/feedback", headers=ALICE, json={"id": stream_id, "score": 0.5}).status_code == 200
    # the documented openai-client way: response.id, then POST /feedback
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="sk-alice")
    answer = client.chat.completions.create(model="radial", messages=[{"role": "user", "content": maths(3)}])
    stored = client.post("/feedback", body={"id": answer.id, "score": 0.9}, cast_to=object)
    assert stored == {"id": answer.id, "score": 0.9, "stored": True}
    rows = [f for f in server_app.state.serve.ledger.feedback_rows() if f["request_id"] == rid]
    assert len(rows) == 1 and rows[0]["score"] == 0.0 and rows[0]["client"] == "alice"
    _wait_written(server_app)
    decision = server_app.state.serve.ledger.decision_of(rid)
    assert decision["choice"] in ROUTER_NAME.values() and 0 < decision["propensity"] <= 1
    assert sorted(json.loads(decision["candidates"])) == ["llm-0", "llm-1", "llm-2"]
    assert decision["explore"] == "epsilon:0.9" and decision["response"].startswith("Hello from")
    assert ROUTER_NAME[decision["llm"]] == decision["choice"]


def test_traffic_feedback_train_ope_promote(setup, tmp_path, monkeypatch):
    root, server_app, url, target = setup
    state = server_app.state.serve
    first_version = state.router_version
    runner = CliRunner()
    # 1. traffic with exploration, each answer rated by the client
    with httpx.Client(base_url=url, headers=ALICE, timeout=30) as http:
        for i in range(150):
            prompt = maths(i) if i % 2 else history(i)
            reply = http.post("/v1/chat/completions",
                              json={"model": "radial", "messages": [{"role": "user", "content": prompt}]})
            assert reply.status_code == 200
            body = reply.json()
            resp = http.post("/v1/feedback", json={"id": body["id"], "score": truth(prompt, body["model"])})
            assert resp.status_code == 200, resp.text
    _wait_written(server_app)
    decisions, feedback = read_ledger(target)
    traffic = logged_traffic(decisions, feedback).labelled()
    assert len(traffic) >= 150 and np.allclose(traffic.probs.sum(1), 1.0)
    assert set(np.round(traffic.propensity, 6)) <= {round(0.1 + 0.3, 6), 0.3}  # ε = 0.9 over 3 candidates

    # 2. partial-label training from the log
    out = tmp_path / "learned"
    res = runner.invoke(cli_app, ["train", "--from-ledger", target, "--out", str(out),
                                  "--router", "knn", "--base", str(root / "initial")])
    assert res.exit_code == 0, res.output
    assert "masked loss" in res.output
    # the ridge (the cheap learner that can serve between retrains) trains from the same log
    res = runner.invoke(cli_app, ["train", "--from-ledger", target, "--out", str(tmp_path / "ridge"),
                                  "--router", "ridge", "--base", str(root / "initial")])
    assert res.exit_code == 0, res.output
    assert "masked loss" in res.output and from_pretrained(tmp_path / "ridge").name == "ridge"

    # 3. off-policy evaluation: the learned router beats the serving one on the logged traffic
    res = runner.invoke(cli_app, ["ope", "--ledger", target, "--model", str(out),
                                  "--baseline", str(root / "initial"), "--json", str(tmp_path / "ope.json"),
                                  "--boot", "300"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ope.json").read_text())
    assert report["estimates"]["dr"]["quality"]["value"] > 0.8 and report["difference"]["snips"]["low_90"] > 0.3
    assert report["baseline"]["estimates"]["snips"]["quality"]["value"] < 0.2  # mid is always wrong

    # 4. promote while requests keep flowing: none fails, later ones use the new router
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, headers=ALICE, timeout=30) as http:
            i = 0
            while not stop.is_set():
                r = http.post("/v1/chat/completions",
                              json={"model": "radial", "messages": [{"role": "user", "content": maths(i)}]})
                statuses.append(r.status_code)
                i += 1

    worker = threading.Thread(target=load)
    worker.start()
    monkeypatch.setenv("RR_PROMOTE_ADMIN", ADMIN_KEY)
    try:
        res = runner.invoke(cli_app, ["promote", "--ledger", target, "--candidate", str(out),
                                      "--server", url, "--admin-key-env", "RR_PROMOTE_ADMIN"])
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    assert res.exit_code == 0, res.output
    assert "promoted" in res.output
    assert statuses and set(statuses) == {200}, statuses
    assert state.router_version != first_version and Path(state.router_path) == out.resolve()
    with httpx.Client(base_url=url, headers=ALICE, timeout=30) as http:
        ids = [http.post("/v1/chat/completions", json={"model": "radial:performance-first", "messages": [
            {"role": "user", "content": maths(1000 + i)}]}).json()["id"] for i in range(20)]
    _wait_written(server_app)
    rows = [state.ledger.decision_of(i) for i in ids]
    assert {r["router_version"] for r in rows} == {state.router_version}
    # candidates are logged in the router's ranking order: its own (greedy) pick first
    assert all(json.loads(r["candidates"])[0] == "llm-2" for r in rows)

    # 5. the old, worse router is refused now, and nothing is swapped
    version = state.router_version
    res = runner.invoke(cli_app, ["promote", "--ledger", target, "--candidate",
                                  str(root / "initial"), "--server", url, "--admin-key-env", "RR_PROMOTE_ADMIN"])
    assert res.exit_code == 1 and "not promoted" in res.output, res.output
    assert state.router_version == version


def test_admin_endpoints_need_their_key(setup, tmp_path):
    _, server_app, url, _ = setup
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/admin/router", headers=ALICE).status_code == 401
        assert http.post("/admin/reload", headers=ALICE, json={}).status_code == 401
        version = http.get("/admin/router", headers=admin).json()["version"]
        resp = http.post("/admin/reload", headers=admin, json={"path": str(tmp_path / "missing")})
        assert resp.status_code == 409 and "missing" in resp.json()["error"]["message"]
        assert http.post("/admin/reload", headers=admin, content=b"{").status_code == 400
    assert server_app.state.serve.router_version == version
