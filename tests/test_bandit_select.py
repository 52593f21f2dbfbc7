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
