"""``train --router auto`` (issue #23 item 2): K-fold cross-validation on the training split, mean ± SE per
candidate, the one-standard-error rule. The CLI end of it is in test_cli.py."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from radialrouter.data import grouped_folds, make_synthetic, with_validation
from radialrouter.evaluation import auto
from radialrouter.evaluation.auto import (
    COMPLEXITY_ORDER,
    complexity_rank,
    default_candidates,
    mean_and_se,
    one_se_choice,
    select_router,
)
from radialrouter.routers import RouterError


def _data(n: int = 240, seed: int = 0):
    ds = make_synthetic(n_queries=n, seed=seed)
    # Prompts repeat within a task (pairs, some triples), so grouping by prompt text has something to do.
    seen: dict[str, int] = {}
    prompts = []
    for task in ds.tasks.tolist():
        i = seen[task] = seen.get(task, -1) + 1
        prompts.append(f"{task} prompt {i // 2 if i % 7 else i // 3}")
    prompts = np.array(prompts, dtype=object)
    ds = replace(ds, prompts=prompts)
    return with_validation(ds.with_split(np.where(ds.split == "test", "test", "train")), val_size=0.1, seed=seed)


def test_folds_cover_the_training_rows_once_and_never_a_test_or_validation_row():
    ds = _data()
    folds = grouped_folds(ds, k=5, seed=3)
    train_rows = np.flatnonzero(ds.split == "train")
    together = np.concatenate(folds)
    assert len(folds) == 5 and len(together) == len(np.unique(together))  # disjoint
    assert set(together.tolist()) == set(train_rows.tolist())  # every training row, nothing else
    assert not np.isin(ds.split[together], ["test", "val", "unsplit"]).any()
    fold_of = {int(r): i for i, rows in enumerate(folds) for r in rows}
    for prompt in set(ds.prompts[train_rows].tolist()):  # grouped: a prompt's rows share one fold
        assert len({fold_of[int(r)] for r in train_rows[ds.prompts[train_rows] == prompt]}) == 1
    for task in ds.task_names:  # stratified: each task's prompts spread evenly over the folds
        per_fold = [len(set(ds.prompts[rows][ds.tasks[rows] == task].tolist())) for rows in folds]
        assert max(per_fold) - min(per_fold) <= 1
    groups = [len(set(ds.prompts[rows].tolist())) for rows in folds]
    assert max(groups) - min(groups) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(folds, grouped_folds(ds, k=5, seed=3)))  # seeded
    assert not all(np.array_equal(a, b) for a, b in zip(folds, grouped_folds(ds, k=5, seed=4)))
    with pytest.raises(ValueError, match="at least 2 folds"):
        grouped_folds(ds, k=1)


def test_standard_error_is_the_sample_std_over_root_k():
    mean, se = mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(np.sqrt(((1.5**2 + 0.5**2) * 2) / 3) / 2)  # ddof = 1, over √4
    assert mean_and_se([0.7]) == (pytest.approx(0.7), 0.0)
    assert mean_and_se([0.5, 0.5, 0.5])[1] == 0.0


def test_one_se_rule_prefers_the_simpler_within_noise_and_the_better_when_clearly_better():
    assert complexity_rank("knn") < complexity_rank("mlp") < complexity_rank("mf") < complexity_rank("equi") \
        < complexity_rank("radial") < complexity_rank("ensemble") < complexity_rank("not-listed")
    tie = {"radial": (0.800, 0.010), "mlp": (0.795, 0.004), "knn": (0.792, 0.006), "equi": (0.760, 0.010)}
    assert one_se_choice(tie) == ("knn", ["radial", "mlp", "knn"])
    # The best candidate's SE sets the band: knn's own large SE does not bring it in.
    clear = {"radial": (0.800, 0.003), "knn": (0.780, 0.050)}
    assert one_se_choice(clear) == ("radial", ["radial"])
    assert one_se_choice({"mf": (0.7, 0.0), "mlp": (0.7, 0.0)})[0] == "mlp"  # exact tie: the simpler


def test_default_candidates_take_ensemble_only_when_registered(monkeypatch):
    builtin = ["best-single", "equi", "knn", "mf", "mlp", "oracle", "radial", "random"]
    monkeypatch.setattr(auto, "available_routers", lambda: builtin)
    assert default_candidates() == ["knn", "mlp", "mf", "equi", "radial"]
    monkeypatch.setattr(auto, "available_routers", lambda: [*builtin, "ensemble"])
    assert default_candidates() == ["knn", "mlp", "mf", "equi", "radial", "ensemble"]
    assert COMPLEXITY_ORDER.index("ensemble") == len(COMPLEXITY_ORDER) - 1


def _scripted(monkeypatch, scores: dict[str, list[float]], train):
    """Replace the per-fold scorer: candidate ``name`` scores ``scores[name][i]`` on its i-th fold (at every
    trade-off). Checks on the way that each fold's router was fitted on the other folds only."""
    counters = {name: itertools.count() for name in scores}
    seen: dict[str, list[np.ndarray]] = {name: [] for name in scores}

    def fake(router, held_out, lams):
        assert set(held_out.ids.tolist()) <= set(train.ids.tolist())
        assert router.training_["n_train"] + len(held_out) == len(train)  # fitted on the rest of train
        seen[router.name].append(held_out.ids)
        return [scores[router.name][next(counters[router.name])]] * len(lams)

    monkeypatch.setattr(auto, "_score_fold", fake)
    return seen


def test_select_router_applies_the_one_se_rule_to_cross_validated_scores(monkeypatch):
    ds = _data()
    train, val, test = ds.select("train"), ds.select("val"), ds.select("test")
    # task-best is within one SE of knn (the best mean): the simpler one wins.
    seen = _scripted(monkeypatch, {"knn": [0.80, 0.82, 0.78], "task-best": [0.795, 0.80, 0.79],
                                   "best-single": [0.60, 0.61, 0.59]}, train)
    rows = []
    result = select_router(train, val, None, ["knn", "task-best", "best-single"], folds=3,
                           on_candidate=lambda name, row: rows.append(name))
    assert rows == ["knn", "task-best", "best-single"]
    table = {r["router"]: r for r in result.table}
    mean, se = mean_and_se([0.80, 0.82, 0.78])
    assert table["knn"]["cv_mean"] == pytest.approx(mean) and table["knn"]["cv_se"] == pytest.approx(se)
    assert table["knn"]["fold_scores"] == pytest.approx([0.80, 0.82, 0.78])
    assert table["knn"]["best_mean"] and table["task-best"]["within_one_se"] and table["task-best"]["chosen"]
    assert not table["best-single"]["within_one_se"]
    assert set(table["knn"]["per_tradeoff"]) == {"performance-first", "balance", "cost-first"}
    assert result.best.name == "task-best" and result.best.training_["n_train"] == len(train)  # refitted on all
    # Each candidate saw the same folds, together every training query once, never a test one.
    folds = seen["knn"]
    assert all(np.array_equal(a, b) for a, b in zip(folds, seen["task-best"]))
    assert sorted(np.concatenate(folds).tolist()) == sorted(train.ids.tolist())
    assert not set(np.concatenate(folds).tolist()) & set(test.ids.tolist())
    record = result.to_dict()
    assert record["chosen"] == "task-best" and record["folds"] == 3 and len(record["candidates"]) == 3

    # Clearly better (beyond one SE): the more complex one is kept.
    _scripted(monkeypatch, {"knn": [0.80, 0.81, 0.79], "task-best": [0.70, 0.72, 0.71]}, train)
    result = select_router(train, val, "balance", ["task-best", "knn"], folds=3)
    assert result.best.name == "knn" and list(result.tradeoffs) == ["balance"]


def test_select_router_really_fits_and_scores_and_refuses_test_rows():
    ds = _data()
    train, val = ds.select("train"), ds.select("val")
    result = select_router(train, val, "cost-first", ["best-single", "knn"], folds=3, seed=1)
    for row in result.table:
        assert len(row["fold_scores"]) == 3
        assert row["cv_mean"] == pytest.approx(np.mean(row["fold_scores"]))
        assert row["cv_se"] == pytest.approx(np.std(row["fold_scores"], ddof=1) / np.sqrt(3))
    assert sum(r["chosen"] for r in result.table) == 1
    with pytest.raises(RouterError, match="test rows"):
        select_router(ds.select("train", "test"), val, None, ["knn"], folds=3)
    with pytest.raises(RouterError, match="cannot be a candidate"):
        select_router(train, val, None, ["knn", "oracle"], folds=3)
    with pytest.raises(RouterError, match="unknown router"):
        select_router(train, val, None, ["knn", "no-such-router"], folds=3)


def test_quality_only_data_scores_at_the_one_trade_off_and_validation_is_optional():
    ds = _data(n=150)
    train = ds.select("train")
    train = replace(train, cost=np.zeros_like(train.cost))
    result = select_router(train, None, "cost-first", ["best-single", "knn"], folds=2)
    assert result.tradeoffs == {"performance-first": 0.0} and result.lam == 0.0
    assert all(set(r["per_tradeoff"]) == {"performance-first"} for r in result.table)
