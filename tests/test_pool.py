"""Adding and removing LLMs in a trained router, on synthetic data, with a small satellite-style router that has
the same pool hooks as RadialRouter (and on RadialRouter itself when it is registered)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from radialrouter.core.objective import target_distribution
from radialrouter.core.training import set_seed, train_module
from radialrouter.data import DataError, RoutingDataset, make_synthetic
from radialrouter.evaluation import summarize
from radialrouter.policy.pool import add_llm, clone, most_similar_llm, remove_llm
from radialrouter.routers import Router, RouterError, available_routers, from_pretrained, make_router, register

LAM = 0.1


class _Net(nn.Module):
    """Relay = projected query; each satellite adds its LLM row; a shared head scores every satellite."""

    def __init__(self, d: int, m: int, h: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, h)
        self.llm = nn.Parameter(torch.randn(m, h) * 0.3)
        self.head = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.proj(x))[:, None, :] + self.llm[None]).squeeze(-1)


@register
class SatelliteRouter(Router):
    """KL-trained for one λ, per-LLM parameters = rows of ``llm``: the shape of RadialRouter's pool hooks."""

    name = "test-satellite"
    lam_at_fit = True

    def __init__(self, lam: float = LAM, tau: float = 0.1, hidden: int = 16, steps: int = 200, seed: int = 0,
                 encoder: Any = None) -> None:
        self.lam, self.tau, self.hidden, self.steps, self.seed = lam, tau, hidden, steps, seed
        self.encoder = encoder

    def _fit(self, train, val) -> None:
        set_seed(self.seed)
        self.net_ = _Net(train.embeddings.shape[1], len(self.llms_), self.hidden)
        x = torch.from_numpy(train.embeddings)
        p = torch.from_numpy(target_distribution(train.quality, train.cost, self.lam, self.tau).astype(np.float32))

        def loss_fn(idx):
            return -(p[idx] * torch.log_softmax(self.net_(x[idx]), -1)).sum(-1).mean()

        train_module(self.net_, loss_fn, len(train), steps=self.steps, lr=1e-2, seed=self.seed, progress=False)

    def logits(self, x: torch.Tensor, lam: float | None = None) -> torch.Tensor:
        return self.net_(x)

    def llm_embedding(self) -> nn.Parameter:
        return self.net_.llm

    def add_llm(self, name: str, mean_cost: float, init_embedding: np.ndarray) -> None:
        row = torch.as_tensor(init_embedding, dtype=torch.float32)[None]
        self.net_.llm = nn.Parameter(torch.cat([self.net_.llm.detach(), row]))
        self.llms_ = [*self.llms_, name]
        self.mean_cost_ = np.append(self.mean_cost_, mean_cost)

    def remove_llm(self, name: str) -> None:
        keep = [i for i, llm in enumerate(self.llms_) if llm != name]
        self.net_.llm = nn.Parameter(self.net_.llm.detach()[keep].clone())
        self.llms_ = [self.llms_[i] for i in keep]
        self.mean_cost_ = self.mean_cost_[keep]

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        with torch.no_grad():
            return self.net_(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.net_.state_dict().items()}

    def _load_state(self, tensors, extra) -> None:
        d, h = tensors["proj.weight"].shape[1], self.hidden
        self.net_ = _Net(d, len(self.llms_), h)
        self.net_.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})


HELD = "llm-2"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_queries=1000, n_llms=5, seed=1)


@pytest.fixture(scope="module")
def pools(data):
    train, test = data.select("train"), data.select("test")
    rest = [llm for llm in data.llms if llm != HELD]
    never = SatelliteRouter().fit(train.select_llms(rest))
    full = SatelliteRouter().fit(train)
    return train, test, rest, never, full


def score(router, test) -> float:
    test = test.select_llms(router.llms_)
    choice = router.predict(test)
    r = np.arange(len(test))
    return summarize(test.quality[r, choice], test.cost[r, choice], test.tasks, LAM)["macro"].score


def probes_of(train, k: int, seed: int = 0):
    return train.subset(np.random.default_rng(seed).choice(len(train), size=k, replace=False))


def test_add_llm_recovers_most_of_the_retraining_gain(pools):
    train, test, rest, never, full = pools
    added = clone(never)
    before = {k: v.clone() for k, v in added.net_.state_dict().items() if k != "llm"}
    add_llm(added, HELD, probes_of(train, 100))
    assert added.llms_ == [*rest, HELD]
    for k, v in added.net_.state_dict().items():
        if k != "llm":
            assert torch.equal(v, before[k]), f"{k} changed: the backbone must stay frozen"
    np.testing.assert_array_equal(added.net_.llm[:-1].detach().numpy(), never.net_.llm.detach().numpy())
    s_never, s_full, s_added = score(never, test), score(full, test), score(added, test)
    assert s_full > s_never + 0.02  # the held-out LLM matters on this data
    assert s_added - s_never >= 0.5 * (s_full - s_never), (s_never, s_added, s_full)
    print(f"radial pool add: never {s_never:.4f}, added {s_added:.4f}, retrained {s_full:.4f}")
    assert added.training_["pool_changes"][-1]["llm"] == HELD


def test_remove_llm_restores_the_smaller_pool(pools):
    train, test, rest, never, full = pools
    router = clone(never)
    add_llm(router, HELD, probes_of(train, 50), steps=50)
    remove_llm(router, HELD)
    assert router.llms_ == rest
    np.testing.assert_allclose(router.predict_scores(test), never.predict_scores(test), rtol=1e-6)
    remove_llm(router, "llm-4")
    assert "llm-4" not in router.llms_ and router.predict(test).max() < len(router.llms_)


def test_added_router_round_trips(pools, tmp_path):
    train, test, rest, never, full = pools
    router = from_pretrained(never.save_pretrained(tmp_path / "a"))
    add_llm(router, HELD, probes_of(train, 50), steps=50)
    router.save_pretrained(tmp_path / "b")
    loaded = from_pretrained(tmp_path / "b")
    assert loaded.llms_ == router.llms_
    np.testing.assert_allclose(loaded.predict_scores(test), router.predict_scores(test), rtol=1e-6)
    assert json.loads((tmp_path / "b" / "training.json").read_text())["pool_changes"][0]["op"] == "add"


def test_add_llm_errors(pools):
    train, test, rest, never, full = pools
    with pytest.raises(RouterError, match="already in the pool"):
        add_llm(never, "llm-0", train)
    with pytest.raises(DataError, match="lack quality"):
        add_llm(never, "new-llm", train)
    with pytest.raises(RouterError, match="not in the pool"):
        remove_llm(never, "nope")
    with pytest.raises(RouterError, match="cannot change its pool"):
        add_llm(make_router("best-single").fit(train.select_llms(rest)), HELD, train)


def test_most_similar_llm(data):
    # llm-4 is strong on topic 0, like llm-0; with llm-0 itself in the list it must pick llm-0 over llm-1..3.
    assert most_similar_llm(data, "llm-4", ["llm-0", "llm-1", "llm-2", "llm-3"]) == "llm-0"


def test_pool_cli(pools, tmp_path):
    from radialrouter.cli import app

    train, test, rest, never, full = pools
    model = never.save_pretrained(tmp_path / "model")
    probes = probes_of(train, 60)
    df = {"prompt": probes.prompts}
    for j, llm in enumerate(probes.llms):
        df[llm] = probes.quality[:, j]
        df[f"{llm}|total_cost"] = probes.cost[:, j]
    import pandas as pd

    path = tmp_path / "probes.parquet"
    pd.DataFrame(df).to_parquet(path)
    np.save(tmp_path / "emb.npy", probes.embeddings)
    runner = CliRunner()
    out = tmp_path / "grown"
    result = runner.invoke(app, ["pool", "add", "--model", str(model), "--llm", HELD, "--probes", str(path),
                                 "--probe-embeddings", str(tmp_path / "emb.npy"), "--out", str(out),
                                 "--steps", "30"])
    assert result.exit_code == 0, result.output
    assert from_pretrained(out).llms_ == [*rest, HELD]
    result = runner.invoke(app, ["pool", "remove", "--model", str(out), "--llm", "llm-0"])
    assert result.exit_code == 0, result.output
    assert "llm-0" not in from_pretrained(out).llms_
    result = runner.invoke(app, ["pool", "remove", "--model", str(out), "--llm", "llm-0"])
    assert result.exit_code != 0 and "not in the pool" in str(result.exception)


def _calibrate(model, lam: float) -> None:
    """Record a calibration of ``model`` (as `radialrouter calibrate` does): its default λ becomes ``lam``."""
    from radialrouter.policy.calibration import Calibration, save_calibration

    save_calibration(model, Calibration(lam=lam, expected_cost_per_1k_usd=1.0, ci_low_per_1k_usd=0.9,
                                        ci_high_per_1k_usd=1.1, share=0.2, share_ci=(0.1, 0.3), share_llm="llm-4",
                                        n_queries=100, target={"cost_per_1k": 1.0}))


def test_pool_change_resets_a_calibrated_default_lam(pools, tmp_path):
    """A λ calibrated on the old pool is not calibrated on the new one: `pool remove --out` and `pool add` reset the
    default λ to the router's trained one, keep the record under history (retired), and say so."""
    from radialrouter.cli import app

    train, test, rest, never, full = pools
    model = full.save_pretrained(tmp_path / "model")
    _calibrate(model, 0.037)
    assert from_pretrained(model).default_lam_ == pytest.approx(0.037)
    runner = CliRunner()
    out = tmp_path / "smaller"
    result = runner.invoke(app, ["pool", "remove", "--model", str(model), "--llm", HELD, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "default λ reset from 0.037" in result.output and "to 0.1" in result.output, result.output
    smaller = from_pretrained(out)
    assert smaller.default_lam_ == full.trained_default_lam() == LAM
    record = json.loads((out / "calibration.json").read_text())
    assert record["current"] is None and record["history"][-1]["lam"] == pytest.approx(0.037)
    assert record["history"][-1]["retired_because"] == f"pool changed: remove {HELD}"
    assert json.loads((out / "training.json").read_text())["pool_changes"][-1]["default_lam_reset"]["from"] == 0.037
    assert from_pretrained(model).default_lam_ == pytest.approx(0.037)  # --out leaves the source as it was

    # pool add, in place: the same reset, said in its output; a model never calibrated gets no note.
    _calibrate(out, 0.05)
    probes = probes_of(train, 60)
    df = {"prompt": probes.prompts, **{llm: probes.quality[:, j] for j, llm in enumerate(probes.llms)},
          **{f"{llm}|total_cost": probes.cost[:, j] for j, llm in enumerate(probes.llms)}}
    import pandas as pd

    pd.DataFrame(df).to_parquet(tmp_path / "probes.parquet")
    np.save(tmp_path / "emb.npy", probes.embeddings)
    add = ["pool", "add", "--llm", HELD, "--probes", str(tmp_path / "probes.parquet"), "--probe-embeddings",
           str(tmp_path / "emb.npy"), "--steps", "5"]
    result = runner.invoke(app, [*add, "--model", str(out)])
    assert result.exit_code == 0, result.output
    assert "default λ reset from 0.05" in result.output and "calibrate --model" in result.output, result.output
    assert from_pretrained(out).default_lam_ == LAM
    record = json.loads((out / "calibration.json").read_text())
    assert record["current"] is None and [h["lam"] for h in record["history"]] == pytest.approx([0.037, 0.05])
    plain = never.save_pretrained(tmp_path / "plain")
    result = runner.invoke(app, [*add, "--model", str(plain), "--out", str(tmp_path / "plain-grown")])
    assert result.exit_code == 0 and "note:" not in result.output, result.output
    assert not (tmp_path / "plain-grown" / "calibration.json").exists()


@pytest.mark.skipif("radial" not in available_routers(), reason="RadialRouter is not registered yet")
def test_radial_router_add_and_remove(pools):
    train, test, rest, never, full = pools
    router = make_router("radial", steps=60, d_model=16, n_layers=1).fit(train.select_llms(rest))
    add_llm(router, HELD, probes_of(train, 50), steps=40)
    assert router.llms_ == [*rest, HELD]
    assert router.predict(test).max() < len(router.llms_)
    remove_llm(router, HELD)
    assert router.llms_ == rest



@pytest.fixture(scope="module")
def radial_pools(data):
    """Real RadialRouters (not a stand-in network): one trained without ``HELD``, one retrained with every LLM."""
    train = data.select("train")
    rest = [llm for llm in data.llms if llm != HELD]
    small = {"steps": 300, "d_model": 32, "n_layers": 1, "seed": 0}
    return make_router("radial", **small).fit(train.select_llms(rest)), make_router("radial", **small).fit(train)


def _radial_score(router, test) -> float:
    test = test.select_llms(router.llms_)
    choice, r = router.predict(test, LAM), np.arange(len(test))
    return summarize(test.quality[r, choice], test.cost[r, choice], test.tasks, LAM)["macro"].score


def test_radial_pool_add_freezes_the_backbone_and_recovers_most_of_the_gain(data, radial_pools):
    """`pool add` on a real RadialRouter: every backbone weight and every existing LLM's embedding stays as it was,
    only the new LLM's row is learned, and it recovers most of what retraining on the whole pool gains."""
    never, full = radial_pools
    test = data.select("test")
    added = clone(never)
    emb_before = never.llm_embedding().detach().clone()
    modules = {k: v for k, v in vars(added).items() if isinstance(v, nn.Module)}
    before = {(m, k): v.clone() for m, mod in modules.items() for k, v in mod.state_dict().items()}
    add_llm(added, HELD, probes_of(data.select("train"), 100))
    assert added.llms_ == [*never.llms_, HELD]
    emb = added.llm_embedding().detach()
    np.testing.assert_array_equal(emb[:-1].numpy(), emb_before.numpy())
    after = {(m, k): v for m, mod in modules.items() for k, v in mod.state_dict().items()}
    for key, old in before.items():
        new = after[key]
        if new.shape == old.shape:
            assert torch.equal(new, old), f"{key} changed: the backbone must stay frozen"
        else:  # a per-LLM tensor grew by the new LLM's row; the existing rows are untouched
            assert new.shape[1:] == old.shape[1:] and torch.equal(new[:len(old)], old), key
    s_never, s_full, s_added = _radial_score(never, test), _radial_score(full, test), _radial_score(added, test)
    assert s_full > s_never + 0.02, (s_never, s_full)  # the held-out LLM matters on this data
    assert s_added - s_never >= 0.5 * (s_full - s_never), (s_never, s_added, s_full)
    print(f"radial pool add: never {s_never:.4f}, added {s_added:.4f}, retrained {s_full:.4f}")


def test_most_similar_llm_prefers_correlation_to_a_close_mean():
    """The LLM whose per-probe quality correlates best with the new one's is chosen, even when another has a closer
    mean; with no correlation defined (a constant column) the closest mean decides."""
    from radialrouter.data import RoutingDataset

    new = [1, 0, 1, 0, 1, 0.0]
    shape = [0.3, 0, 0.3, 0, 0.3, 0]  # the same pattern, mean 0.15
    close = [1, 1, 0, 0, 1, 0]  # mean 0.5, like the new one, weakly correlated
    flat = [0.45] * 6  # constant: no correlation
    probes = RoutingDataset.from_arrays([f"p{i}" for i in range(6)], np.array([new, shape, close, flat]).T,
                                        ["new", "shape", "close", "flat"])
    assert most_similar_llm(probes, "new", ["close", "shape", "flat"]) == "shape"
    assert most_similar_llm(probes, "new", ["close", "flat"]) == "close"
    const = RoutingDataset.from_arrays([f"p{i}" for i in range(6)], np.array([[0.5] * 6, flat, [0.9] * 6]).T,
                                       ["new", "flat", "high"])
    assert most_similar_llm(const, "new", ["high", "flat"]) == "flat"


def test_the_lambdas_a_new_llm_is_trained_at():
    """A per-scenario router: its own λ. A λ-conditioned one: the three scenarios and a spread up to its
    ``lam_max``, so the new LLM is right across the range the router serves."""
    from types import SimpleNamespace

    from radialrouter.policy.pool import training_lams

    assert training_lams(SimpleNamespace(lam_conditioned=False, lam=0.05)) == [0.05]
    lams = training_lams(SimpleNamespace(lam_conditioned=True, lam_max=0.5))
    assert {0.0, 0.02, 0.1, 0.001, 0.5} <= set(lams) and max(lams) == 0.5 and lams == sorted(lams) and len(lams) == 8


def test_add_llm_trains_on_complete_probes_and_records_how(pools):
    """Probes missing some LLM's quality are left out, with a warning that counts them; training.json's record of
    the change says what was added, from how many probes, and how it was initialised."""
    from radialrouter.routers.base import MissingCellsWarning

    train, test, rest, never, full = pools
    probes = probes_of(train, 50)
    quality = probes.quality.copy()
    quality[3, 0] = np.nan
    probes = dataclasses.replace(probes, quality=quality)
    router = clone(never)
    with pytest.warns(MissingCellsWarning, match=r"1 of 50 probes miss some LLM's quality; trained on the 49 complete"):
        add_llm(router, HELD, probes, steps=5, prior=0.5)
    change = router.training_["pool_changes"][-1]
    assert {k: change[k] for k in ("op", "llm", "n_probes", "steps", "init", "prior")} == {
        "op": "add", "llm": HELD, "n_probes": 49, "steps": 5, "init": "similar", "prior": 0.5}
    assert change["init_from"] in rest and change["seconds"] >= 0 and "date" in change


def test_add_llm_initialisations(pools):
    """``init``: "similar", "mean" or "random" start the new row (each gives a working pool); anything else is
    refused naming the three."""
    train, test, rest, never, full = pools
    probes = probes_of(train, 30)
    for init in ("mean", "random"):
        router = add_llm(clone(never), HELD, probes, steps=3, init=init)
        assert router.llms_ == [*rest, HELD] and router.training_["pool_changes"][-1]["init_from"] == init
        assert router.predict(test.select_llms(router.llms_)).max() < len(router.llms_)
    with pytest.raises(ValueError, match="init must be 'similar', 'mean' or 'random'; got 'zeros'"):
        add_llm(clone(never), HELD, probes, init="zeros")


def test_pool_errors_name_what_is_wrong(pools):
    """Every refusal says what is wrong and what would work: the pool as it is, the LLMs the probes lack, empty or
    cost-less probes, probes none of which has every LLM's quality, removing the last LLM, a router without the
    pool hooks."""
    train, test, rest, never, full = pools
    router = clone(never)
    with pytest.raises(RouterError) as info:
        add_llm(router, "llm-0", train)
    assert str(info.value) == f"'llm-0' is already in the pool {rest}"
    with pytest.raises(DataError) as info:
        add_llm(router, "new-llm", train)
    assert str(info.value) == (
        f"the probes lack quality for ['new-llm']; they need a quality (and cost) column for every LLM of the new "
        f"pool {[*rest, 'new-llm']}, because the training target compares the new LLM with the existing ones on "
        "each probe")
    with pytest.raises(DataError) as info:
        add_llm(router, HELD, train.subset(np.zeros(len(train), dtype=bool)))
    assert str(info.value) == "no probe queries"
    some = probes_of(train, 10)
    no_cost = RoutingDataset.from_arrays(some.prompts, some.quality, some.llms).with_embeddings(some.embeddings)
    with pytest.raises(DataError) as info:
        add_llm(router, HELD, no_cost)
    assert str(info.value) == "the probes have no cost columns: the new LLM's cost is needed for its routing target"
    holes = probes_of(train, 10)
    quality = holes.quality.copy()
    quality[:, train.llms.index(HELD)] = np.nan
    with pytest.raises(DataError) as info:
        add_llm(router, HELD, dataclasses.replace(holes, quality=quality))
    assert str(info.value) == (f"no probe has the quality of every LLM of the new pool {[*rest, HELD]}: the training "
                               "target compares the new LLM with the existing ones on each probe")
    assert router.llms_ == rest  # nothing changed by a refusal
    with pytest.raises(RouterError) as info:
        remove_llm(router, "nope")
    assert str(info.value) == f"'nope' is not in the pool {rest}"
    for llm in rest[:-1]:
        remove_llm(router, llm)
    with pytest.raises(RouterError) as info:
        remove_llm(router, rest[-1])
    assert str(info.value) == f"cannot remove {rest[-1]!r}: it is the only LLM in the pool"
    with pytest.raises(RouterError) as info:
        add_llm(make_router("best-single").fit(train.select_llms(rest)), HELD, train)
    assert str(info.value) == ("the 'best-single' router cannot change its pool in place (it lacks add_llm, "
                               "remove_llm, llm_embedding, logits); retrain it on the new pool instead, or use a "
                               "RadialRouter")
    unfitted = r"^SatelliteRouter is not fitted: call fit\(\) or from_pretrained\(\) first$"
    with pytest.raises(RouterError, match=unfitted):
        add_llm(SatelliteRouter(), HELD, train)


def test_pool_changes_are_dated_in_utc_and_removals_recorded(pools):
    """Each change in training.json's ``pool_changes`` carries its date (UTC, to the second); a removal records what
    went."""
    import datetime as dt

    train, test, rest, never, full = pools
    router = clone(never)
    remove_llm(router, "llm-4")
    (change,) = router.training_["pool_changes"]
    assert {k: v for k, v in change.items() if k != "date"} == {"op": "remove", "llm": "llm-4"}
    when = dt.datetime.fromisoformat(change["date"])
    assert when.utcoffset() == dt.timedelta(0) and when.microsecond == 0
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60
    assert "pool_changes" not in getattr(never, "training_", {})  # the clone's record, not the original's


def test_clone_is_independent_but_shares_the_query_encoder(pools):
    """A clone can grow without touching the original; the query encoder (a loaded model, locks, a cache file) is
    shared, not copied."""
    import threading

    train, test, rest, never, full = pools

    class Encoder:
        def __init__(self) -> None:
            self.lock = threading.Lock()  # cannot be deep-copied

    router = clone(never)
    router.encoder = Encoder()
    copy = clone(router)
    assert copy.encoder is router.encoder and copy.net_ is not router.net_
    add_llm(copy, HELD, probes_of(train, 20), steps=2)
    assert router.llms_ == rest and copy.llms_ == [*rest, HELD]
    assert router.net_.llm.shape[0] == len(rest)


def test_the_lambdas_a_new_llm_is_trained_at_exactly():
    """The λ-conditioned spread: five log-spaced λ from 0.001 to ``lam_max`` (at least 0.002; 1 when unset), rounded
    to six decimals, with the scenarios' 0, 0.02 and 0.1, sorted and without repeats."""
    from types import SimpleNamespace

    from radialrouter.policy.pool import training_lams

    assert training_lams(SimpleNamespace(lam_conditioned=True, lam_max=0.5)) == [
        0.0, 0.001, 0.004729, 0.02, 0.022361, 0.1, 0.105737, 0.5]
    assert training_lams(SimpleNamespace(lam_conditioned=True)) == [
        0.0, 0.001, 0.005623, 0.02, 0.031623, 0.1, 0.177828, 1.0]
    assert training_lams(SimpleNamespace(lam_conditioned=True, lam_max=1e-4)) == [
        0.0, 0.001, 0.001189, 0.001414, 0.001682, 0.002, 0.02, 0.1]
    assert training_lams(SimpleNamespace(lam=0.3)) == [0.3]


def test_a_radial_routers_new_llm_gets_a_per_query_cost_from_the_probes(data, radial_pools):
    """On a RadialRouter (which predicts per-query cost), the new LLM's cost predictor is fitted on the probes: its
    predicted costs follow the probes' costs query by query, while the existing LLMs' predictions are unchanged."""
    train = data.select("train")
    router = clone(radial_pools[0])
    probes = probes_of(train, 80)
    cost = probes.cost.copy()
    j = probes.llms.index(HELD)
    cost[:, j] *= np.exp(2 * probes.embeddings[:, 0])  # its cost depends on the query
    probes = dataclasses.replace(probes, cost=cost)
    before = router.predict_costs(probes)
    add_llm(router, HELD, probes, steps=3)
    after = router.predict_costs(probes)
    np.testing.assert_allclose(after[:, :-1], before, rtol=1e-12)
    assert np.corrcoef(np.log(after[:, -1]), np.log(cost[:, j]))[0, 1] > 0.8
    assert after[:, -1].mean() == pytest.approx(cost[:, j].mean(), rel=0.2)


def test_a_radial_router_that_chose_its_temperature_can_grow(data):
    """``tau="auto"`` picks τ at fit; `pool add` trains the new LLM at the τ that was chosen."""
    train = data.select("train")
    rest = [llm for llm in data.llms if llm != HELD]
    router = make_router("radial", steps=20, d_model=16, n_layers=1, tau="auto").fit(
        train.select_llms(rest).subset(np.arange(200)), train.select_llms(rest).subset(np.arange(200, 260)))
    assert isinstance(router.tau, str) and router.target_tau() > 0
    add_llm(router, HELD, probes_of(train, 40), steps=3)
    assert router.llms_ == [*rest, HELD]


def test_saving_a_pool_change_says_what_happened_to_the_calibration(pools, tmp_path):
    """`save_pool_change` tells the user what became of a calibration made on the old pool: a calibrated default λ
    goes back to the trained one (the note names both, and the budget target), a record that is not the default
    is only retired; either way it moves to history with the reason, and a model never calibrated gets no note."""
    from radialrouter.policy.pool import save_pool_change

    train, test, rest, never, full = pools
    model = full.save_pretrained(tmp_path / "model")
    _calibrate(model, 0.037)
    router = from_pretrained(model)
    remove_llm(router, HELD)
    note = save_pool_change(router, model, tmp_path / "out")
    assert note == (
        "default λ reset from 0.037 (calibrated on the old pool, target {'cost_per_1k': 1.0}) to 0.1, the router's "
        "trained default; the calibration was for the old pool, so it is kept under history in calibration.json: "
        f"run `radialrouter calibrate --model {tmp_path / 'out'} ...` on your queries to calibrate the new pool")
    change = json.loads((tmp_path / "out" / "training.json").read_text())["pool_changes"][-1]
    assert change["default_lam_reset"] == {"from": 0.037, "to": LAM, "calibration_target": {"cost_per_1k": 1.0}}

    router = from_pretrained(model)
    router.default_lam_ = 0.08  # the user's own default, not the calibrated one
    remove_llm(router, "llm-0")
    note = save_pool_change(router, model, model)  # in place
    assert note.startswith("the calibration record (λ = 0.037, not the default λ 0.08); the calibration was for the "
                           "old pool")
    assert from_pretrained(model).default_lam_ == pytest.approx(0.08)
    record = json.loads((model / "calibration.json").read_text())
    assert record["current"] is None and record["history"][-1]["retired_because"] == "pool changed: remove llm-0"

    plain = from_pretrained(never.save_pretrained(tmp_path / "plain"))
    assert save_pool_change(plain, tmp_path / "plain", tmp_path / "plain") is None
    _calibrate(tmp_path / "plain", 0.02)
    unchanged = from_pretrained(tmp_path / "plain")  # saved with no recorded pool change: a generic reason
    save_pool_change(unchanged, tmp_path / "plain", tmp_path / "plain")
    record = json.loads((tmp_path / "plain" / "calibration.json").read_text())
    assert record["history"][-1]["retired_because"] == "pool changed: changed"


def test_a_new_llms_row_starts_from_the_most_similar_llm_or_the_mean(pools):
    """``init="similar"`` starts the new row as a copy of the most similar LLM's row, ``"mean"`` as the mean of all
    rows (seen with no training steps); a one-LLM pool has only that LLM to copy."""
    train, test, rest, never, full = pools
    probes = probes_of(train, 40)
    rows = never.net_.llm.detach().clone()
    similar = add_llm(clone(never), HELD, probes, steps=0)
    source = similar.training_["pool_changes"][-1]["init_from"]
    assert source == most_similar_llm(probes, HELD, rest)
    assert torch.equal(similar.net_.llm.detach()[-1], rows[rest.index(source)])
    mean = add_llm(clone(never), HELD, probes, steps=0, init="mean")
    torch.testing.assert_close(mean.net_.llm.detach()[-1], rows.mean(dim=0))
    assert most_similar_llm(probes, HELD, ["llm-0"]) == "llm-0"
    held = probes.llms.index(HELD)  # its cost for a router without a per-query cost head: the probes' mean
    np.testing.assert_allclose(similar.predict_costs(test)[:, -1], probes.cost[:, held].mean())
    np.testing.assert_allclose(similar.predict_costs(test)[:, :-1], never.predict_costs(test))
    trained = add_llm(clone(never), HELD, probes, steps=2, lr=0.01)
    assert {k: trained.training_["pool_changes"][-1][k] for k in ("steps", "lr")} == {"steps": 2, "lr": 0.01}


def test_choosing_the_most_similar_llm_raises_no_warning_on_constant_quality():
    """An LLM right (or wrong) on every probe has no correlation with the new one: it is compared by mean quality,
    without numpy's division warnings."""
    import warnings

    from radialrouter.data import RoutingDataset

    probes = RoutingDataset.from_arrays([f"p{i}" for i in range(4)], np.array(
        [[1, 0, 1, 0.0], [1.0] * 4, [0.0] * 4, [1, 1, 0, 0.0]]).T, ["new", "always", "never", "half"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert most_similar_llm(probes, "new", ["always", "never"]) in ("always", "never")
        assert most_similar_llm(probes, "new", ["always", "half"]) == "half"


def test_a_router_whose_llm_rows_no_module_owns_is_refused_by_name(pools):
    """The pool hooks need ``llm_embedding()`` to be a parameter of one of the router's torch modules (the one
    `pool add` freezes around it); otherwise the error says so."""
    train, test, rest, never, full = pools
    router = clone(never)
    router.llm_embedding = lambda: nn.Parameter(router.net_.llm.detach().clone())  # a copy: no module owns it
    with pytest.raises(RouterError) as info:
        add_llm(router, HELD, probes_of(train, 20), steps=1)
    assert str(info.value) == "'test-satellite': no torch module attribute owns llm_embedding()"


def test_a_prior_keeps_the_new_row_near_where_it_started(pools):
    """``prior`` > 0 adds prior·‖row − init‖² to the loss, which keeps the new LLM's row near its initialisation
    (few probes); without it the row moves freely."""
    train, test, rest, never, full = pools
    probes = probes_of(train, 30)
    start = add_llm(clone(never), HELD, probes, steps=0).net_.llm.detach()[-1]
    free = add_llm(clone(never), HELD, probes, steps=60, lr=0.05).net_.llm.detach()[-1]
    held = add_llm(clone(never), HELD, probes, steps=60, lr=0.05, prior=100.0).net_.llm.detach()[-1]
    moved, kept = float((free - start).norm()), float((held - start).norm())
    assert moved > 0.1 and kept < 0.25 * moved, (moved, kept)
