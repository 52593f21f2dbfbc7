"""The serving-settings rule of benchmarks/bandit_serve_select.py and its held-out-fold split (offline: no data, no
training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def select(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bandit_explore_select
    import bandit_serve_select

    return bandit_explore_select, bandit_serve_select


def row(name: str, served: float, val: float, gap2: float | None = None, gap10: float | None = None,
        se: float = 0.01, options: tuple[str, ...] = ()) -> dict:
    r = {"candidate": name, "options": list(options), "served": served, "val_bandit": val, "val_bandit_se": se}
    if gap2 is not None:
        r |= {"guard_gap_2000": gap2, "guard_gap_2000_se": se, "guard_gap_10000": gap10, "guard_gap_10000_se": se}
    return r


def test_choose_default_guard_is_the_validation_score(select):
    explore, _ = select
    rows = [row("a", 0.70, 0.80), row("b", 0.75, 0.795), row("c", 0.90, 0.70)]
    assert explore.choose(rows)["candidate"] == "b"  # c serves most but learns outside one s.e.


def test_choose_with_several_guards(select):
    explore, serve = select
    rows = [row("learns", 0.60, 0.54, 0.005, 0.002),
            row("stalls at 10k", 0.62, 0.54, 0.010, 0.030),  # within one s.e. at 2,000, not at 10,000
            row("serves most, no guard figures", 0.65, 0.54),
            row("close", 0.61, 0.535, 0.012, 0.010),
            row("llmrouter9 guard fails", 0.63, 0.50, 0.004, 0.001),
            # its held-out-fold figures leak the fold (trained on the shipped router's implied labels): not read
            row("imputes", 0.70, 0.54, -0.05, -0.05, options=("--impute-frozen",))]
    assert [r["candidate"] for r in explore.within_one_se(rows[:-1], "guard_gap_10000", higher=False)] == [
        "learns", "close", "llmrouter9 guard fails"]
    chosen, applied = serve.choose_serving(rows)
    assert chosen["candidate"] == "close" and applied == serve.GUARDS
    assert explore.choose(rows)["candidate"] == "imputes"  # the llmrouter9 guard alone
    assert explore.choose(rows, serve.GUARDS)["candidate"] == "imputes"  # were its figures read


def test_choose_serving_falls_back_to_the_heldout_guards(select):
    explore, serve = select
    rows = [row("best on llmrouter9", 0.60, 0.56, 0.05, 0.05), row("best gaps", 0.58, 0.50, 0.001, 0.001),
            row("near best gaps", 0.59, 0.49, 0.005, 0.006)]
    with pytest.raises(ValueError):
        explore.choose(rows, serve.GUARDS)
    chosen, applied = serve.choose_serving(rows)
    assert chosen["candidate"] == "near best gaps" and applied == serve.HELDOUT_GUARDS


def per_seed(r: dict, gaps2: list[float], gaps10: list[float]) -> dict:
    return r | {"guard_gap_2000_per_seed": gaps2, "guard_gap_10000_per_seed": gaps10}


def test_choose_serving_last_falls_back_to_the_averaged_heldout_gap(select):
    _, serve = select
    rows = [per_seed(row("best at 2,000", 0.60, 0.54, 0.001, 0.03, se=0.001), [0.0, 0.002], [0.03, 0.03]),
            per_seed(row("best at 10,000", 0.59, 0.54, 0.03, 0.001, se=0.001), [0.03, 0.03], [0.0, 0.002]),
            per_seed(row("even", 0.58, 0.54, 0.012, 0.012, se=0.001), [0.011, 0.013], [0.011, 0.013])]
    chosen, applied = serve.choose_serving(rows)
    assert chosen["candidate"] == "even" and applied == serve.MEAN_GAP_GUARD
    assert chosen["guard_gap_mean"] == pytest.approx(0.012) and chosen["guard_gap_mean_per_seed"] == [0.011, 0.013]


def test_guard_split_holds_out_a_fold_outside_the_traffic(select):
    _, serve = select
    n_train, held_by_seed = 2205, []
    for seed in range(5):
        traffic, held, warm = serve.guard_split(n_train, 200, seed, 10_000)
        assert len(traffic) == 10_000 and not set(traffic) & set(held) and not set(held) & set(warm)
        assert not set(traffic) & set(warm) and 0.17 < len(held) / (n_train - 200) < 0.23
        rest = n_train - 200 - len(held)
        assert len(set(traffic[:rest])) == rest  # the rest of the pool once, then further passes
        held_by_seed.append(set(held))
    assert all(not a & b for i, a in enumerate(held_by_seed) for b in held_by_seed[i + 1:])  # disjoint folds
    again, _, _ = serve.guard_split(n_train, 200, 3, 10_000)
    assert np.array_equal(again, serve.guard_split(n_train, 200, 3, 10_000)[0])


@pytest.fixture
def replay(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bandit_replay

    return bandit_replay


def test_learner_spec_presets_json_and_errors(replay):
    assert replay.learner_spec(None) == replay.LEARNER
    assert replay.learner_spec("ridge10") == {"router": "ridge", "alpha": 10.0, "pessimism": 0.0}
    assert replay.learner_spec('{"router": "ridge", "alpha": 3}') == {"router": "ridge", "alpha": 3}
    for bad in ("ridge7", '{"alpha": 3}', "[1]"):
        with pytest.raises(ValueError):
            replay.learner_spec(bad)
    args = replay.replay_parser().parse_args([])
    assert replay.learner_spec(args.learner) == replay.learner_spec(replay.BANDIT_LEARNER)


def test_size_switching_learner_picks_by_logged_queries(replay):
    make = replay.make_learner(replay.LEARNER_PRESETS["ridge10-then-mlp64-at-5000"])
    below, at, above = make(10, 0, logged=4999), make(10, 0, logged=5000), make(10, 0, logged=10_000)
    assert below.name == "ridge" and below.alpha == 10.0 and below.pessimism == 0.0
    assert at.name == "mlp" and above.name == "mlp"
    with pytest.raises(ValueError):
        make(10, 0)  # the switch needs the logged count
    assert replay.make_learner(replay.LEARNER)(10, 0, logged=3).name == "mlp"  # plain specs ignore it


def test_fit_bandit_tells_the_learner_how_many_queries_were_logged(replay):
    from radialrouter.data.dataset import RoutingDataset

    rng = np.random.default_rng(0)
    n, m, d = 40, 3, 4
    ds = RoutingDataset.from_arrays([f"q{i}" for i in range(n)], rng.random((n, m)), ["a", "b", "c"],
                                    cost=rng.random((n, m)), tasks=["t"] * n, split=["train"] * n)
    ds = ds.with_embeddings(rng.standard_normal((n, d)).astype(np.float32))
    seen = []

    def make(steps, seed, logged=None):
        seen.append(logged)
        return replay.make_learner({"router": "ridge", "alpha": 1.0})(steps, seed, logged)

    action = rng.integers(0, m, n)
    fitted = replay.fit_bandit(ds, action, ds.quality[np.arange(n), action], np.ones(m), 10, 0, make=make)
    assert seen == [n] and fitted.predict_scores(ds.embeddings, 0.02).shape == (n, m)


def learner_row(name: str, gaps2: list[float], gaps10: list[float]) -> dict:
    return {"candidate": name, "options": ["--learner", name], "guard_seeds": "0,1,2,3",
            "guard_gap_2000": float(np.mean(gaps2)), "guard_gap_10000": float(np.mean(gaps10)),
            "guard_gap_2000_per_seed": gaps2, "guard_gap_10000_per_seed": gaps10}


def test_choose_learner_needs_two_paired_se_at_2000_and_one_at_10000(select):
    _, serve = select
    current = learner_row("current", [0.04, 0.05, 0.03, 0.04], [0.01, 0.00, 0.02, 0.01])
    rows = [current,
            # far better at 2,000 but clearly worse at 10,000 (paired +0.03 ± 0): fails the 10,000 guard
            learner_row("linear", [0.01, 0.02, 0.00, 0.01], [0.04, 0.03, 0.05, 0.04]),
            # better at 2,000 by 0.02 ± 0.0041 (> 2 s.e.) and paired at 10,000 +0.005 ± 0.005: passes
            learner_row("switch", [0.02, 0.03, 0.01, 0.02], [0.02, 0.00, 0.02, 0.01]),
            # tied with "switch" at 2,000, worse at 10,000 (still within one s.e.)
            learner_row("switch later", [0.02, 0.03, 0.01, 0.02], [0.03, -0.01, 0.03, 0.005]),
            # smallest mean gap at 2,000 but noisy: -0.0275 ± 0.0193 is within two paired s.e.
            learner_row("noisy", [0.05, -0.02, 0.03, -0.01], [0.01, 0.00, 0.02, 0.01])]
    chosen = serve.choose_learner(rows, current="current")
    assert chosen["candidate"] == "switch"
    assert [r["eligible"] for r in rows] == [None, False, True, True, False]
    assert rows[2]["paired_2000"] == pytest.approx(-0.02) and rows[1]["paired_10000"] == pytest.approx(0.03)
    # nothing passes: the current learner stays
    assert serve.choose_learner([current, rows[1], rows[4]], current="current")["candidate"] == "current"
    with pytest.raises(ValueError):  # paired differences need the same seeds
        serve.choose_learner([current, rows[2] | {"guard_seeds": "0,1,2,4"}], current="current")


def test_learner_candidates_are_the_declared_ones(select, replay):
    _, serve = select
    specs = [replay.learner_spec(o[o.index("--learner") + 1]) for o in serve.LEARNER_CANDIDATES.values()]
    assert specs[0] == replay.LEARNER and serve.CURRENT_LEARNER == next(iter(serve.LEARNER_CANDIDATES))
    assert [s.get("alpha") for s in specs[1:4]] == [1.0, 10.0, 100.0] and all(s["pessimism"] == 0 for s in specs[1:4])
    assert specs[4]["switch_at"] == 5000 and specs[4]["below"] == specs[2] and specs[4]["from"] == replay.LEARNER
    for options in serve.LEARNER_CANDIDATES.values():
        args = replay.replay_parser().parse_args(options)
        assert (args.gamma_scale, args.gamma_exponent, args.prior, args.server) == (30.0, 0.5, 1000.0, "learner")


def test_replay_floor_mixes_the_logged_probabilities(replay):
    from radialrouter.learning.exploration import squarecb_probs

    rng = np.random.default_rng(0)
    scores, block = rng.standard_normal((50, 11)), np.arange(1000, 1050)
    greedy = scores.argmax(1)
    args = replay.replay_parser().parse_args([])
    assert args.floor == 0.0 and args.explore == "squarecb"
    plain = replay.logging_probs(scores, greedy, block, True, args)
    gamma = np.array([replay.squarecb_gamma(int(t) + 1, None, args.gamma_scale, 0.5) for t in block])
    assert np.array_equal(plain, squarecb_probs(scores, gamma, best=greedy))  # the default: plain SquareCB
    floored = replay.logging_probs(scores, greedy, block, True, replay.replay_parser().parse_args(["--floor", "0.1"]))
    assert np.allclose(floored.sum(1), 1.0) and (floored >= 0.1 / 11 - 1e-15).all()
    assert np.allclose(floored, 0.9 * plain + 0.1 / 11)
    assert (plain.min(1) < 0.1 / 11).all()  # the floor lifts what SquareCB alone leaves below ε/K
    no_explore = replay.replay_parser().parse_args(["--floor", "0.1"])
    greedy_only = replay.logging_probs(scores, greedy, block, False, no_explore)
    assert np.array_equal(greedy_only.argmax(1), greedy) and (greedy_only.max(1) == 1.0).all()  # no exploration


def floor_row(name: str, served: float, gaps2: list[float], gaps10: list[float]) -> dict:
    return learner_row(name, gaps2, gaps10) | {"served": served}


def test_choose_floor_needs_the_paired_guard_and_the_served_bar(select):
    _, serve = select
    current = floor_row("current", 0.606, [0.04, 0.05, 0.03, 0.04], [0.01, 0.00, 0.02, 0.01])
    rows = [current,
            # better at 2,000 by 0.02 (> 2 paired s.e.), fine at 10,000, serves above VW's bar: passes
            floor_row("small", 0.60, [0.02, 0.03, 0.01, 0.02], [0.02, 0.00, 0.02, 0.01]),
            # better still at 2,000, but serves below VW (b)'s 0.5904: fails
            floor_row("large", 0.58, [0.00, 0.01, -0.01, 0.00], [0.01, 0.00, 0.02, 0.01]),
            # better at 2,000 but worse at 10,000 by more than one paired s.e.: fails
            floor_row("late", 0.60, [0.01, 0.02, 0.00, 0.01], [0.04, 0.03, 0.05, 0.04])]
    vw = {"served": 0.5904}
    assert serve.choose_floor(rows, vw, current="current")["candidate"] == "small"
    assert [r["eligible"] for r in rows] == [None, True, False, False]
    assert all(r["served_bar"] == 0.5904 for r in rows)
    # no VW figure: the bar is the current settings' served Score minus 0.02 (0.586), which "large" misses
    assert serve.choose_floor(rows, None, current="current")["candidate"] == "small"
    assert rows[2]["served_bar"] == pytest.approx(0.586) and rows[2]["eligible"] is False
    # a lower bar lets "large" through, and it has the smallest gap at 2,000
    assert serve.choose_floor(rows, {"served": 0.57}, current="current")["candidate"] == "large"
    # nothing passes: the current settings stay
    assert serve.choose_floor([current, rows[3]], vw, current="current")["candidate"] == "current"


def test_floor_candidates_are_the_declared_ones(select, replay):
    _, serve = select
    assert serve.CURRENT_FLOOR == next(iter(serve.FLOOR_CANDIDATES))
    floors = []
    for options in serve.FLOOR_CANDIDATES.values():
        args = replay.replay_parser().parse_args(options)
        assert (args.gamma_scale, args.gamma_exponent, args.prior, args.server, args.explore) == (
            30.0, 0.5, 1000.0, "learner", "squarecb")
        floors.append(args.floor)
    assert floors == [0.0, 0.05, 0.1, 0.2]
    assert serve.FLOOR_GUARD_SEEDS == "0,1,2,3,4,5,6,7,8,9" and serve.FLOOR_SERVED_SEEDS == "0,1,2,3,4"
