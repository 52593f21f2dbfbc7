"""Loading routing data: every layout and format, validation errors that name the problem, and splits."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import LLMS, wide_frame

from radialrouter.data import (
    DataError,
    RoutingDataset,
    grouped_split,
    holdout_tasks,
    load_dataset,
    load_routerbench,
    make_synthetic,
    trusting_pickles,
    with_validation,
)
from radialrouter.data.loaders import DataWarning


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl", ".pkl"])
def test_wide_layout_every_format(tmp_path, wide_df, suffix):
    path = tmp_path / f"data{suffix}"
    {".parquet": lambda: wide_df.to_parquet(path), ".csv": lambda: wide_df.to_csv(path, index=False),
     ".jsonl": lambda: wide_df.to_json(path, orient="records", lines=True),
     ".pkl": lambda: wide_df.to_pickle(path)}[suffix]()
    ds = load_dataset(path, trust_pickle=suffix == ".pkl")
    assert ds.llms == tuple(LLMS)
    assert ds.quality.shape == ds.cost.shape == (30, 3)
    np.testing.assert_allclose(ds.cost[:, 1], wide_df["medium|total_cost"].to_numpy())
    assert set(ds.tasks) == {"maths", "history"}  # eval_name is the task when `task` is absent
    assert ds.has_cost
    assert set(ds.split) == {"train", "test"}  # no split column: a seeded split is made
    assert list(ds.ids) == list(wide_df["sample_id"])


def test_split_column_is_used_and_normalised(tmp_path, wide_df):
    wide_df["split"] = ["Train"] * 20 + ["validation"] * 4 + ["test"] * 6
    wide_df.to_parquet(tmp_path / "d.parquet")
    ds = load_dataset(tmp_path / "d.parquet")
    assert (ds.split == "train").sum() == 20 and (ds.split == "val").sum() == 4 and (ds.split == "test").sum() == 6


def test_unknown_split_value_names_row(tmp_path, wide_df):
    wide_df["split"] = ["train"] * 29 + ["holdout"]
    wide_df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"row 30, column 'split'.*'holdout'"):
        load_dataset(tmp_path / "d.csv")


def test_missing_quality_cells_are_kept_with_a_mask(tmp_path, wide_df):
    """The default keeps rows with missing cells (NaN) and reports them through `observed` and the coverage."""
    wide_df.loc[[3, 7], "medium"] = np.nan
    wide_df.loc[7, "medium|total_cost"] = np.nan  # no result, no bill: allowed where the quality is missing too
    wide_df.to_parquet(tmp_path / "d.parquet")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # nothing is excluded, so nothing to warn about
        ds = load_dataset(tmp_path / "d.parquet")
    assert len(ds) == 30 and ds.has_missing
    assert ds.observed.shape == (30, 3) and ds.observed.dtype == bool
    assert sorted(ds.ids[~ds.complete_rows]) == ["s3", "s7"]
    assert (~ds.observed).sum() == 2 and not ds.observed[ds.ids == "s3", 1].any()
    assert np.isfinite(ds.cost).all()  # the missing cost stands in as the LLM's mean logged cost
    assert ds.cost[ds.ids == "s7", 1][0] == pytest.approx(np.delete(wide_df["medium|total_cost"].to_numpy(), 7).mean())
    summary = ds.summary()  # what data inspect shows
    coverage = {r["llm"]: (r["known_rows"], r["coverage"], r["observed_rows"]) for r in summary["llms"]}
    assert coverage["medium"] == (28, pytest.approx(28 / 30), 28) and coverage["small"] == (30, 1.0, 30)
    assert summary["complete_rows"] == 28
    medium = np.delete(wide_df["medium"].to_numpy(), [3, 7])
    assert summary["llms"][1]["mean_quality"] == pytest.approx(medium.mean())  # over the observed rows
    # Subsets carry the mask along.
    assert ds.select("train").observed.shape == ((ds.split == "train").sum(), 3)


def test_missing_exclude_keeps_the_old_behaviour(tmp_path, wide_df):
    wide_df.loc[[3, 7], "medium"] = np.nan
    wide_df.to_parquet(tmp_path / "d.parquet")
    with pytest.warns(DataWarning, match=r"excluded 2 row\(s\).*s3, s7; missing cells per LLM: medium 2\)"):
        ds = load_dataset(tmp_path / "d.parquet", missing="exclude")
    assert len(ds) == 28 and "s3" not in ds.ids and not np.isnan(ds.quality).any() and not ds.has_missing
    coverage = {r["llm"]: (r["known_rows"], r["coverage"]) for r in ds.summary()["llms"]}
    assert coverage["medium"] == (28, pytest.approx(28 / 30)) and coverage["small"] == (30, 1.0)
    with pytest.raises(ValueError, match="missing must be one of"):
        load_dataset(tmp_path / "d.parquet", missing="drop")


def test_rows_without_any_quality_are_excluded_with_a_warning(tmp_path, wide_df):
    wide_df.loc[[3, 7], "medium"] = np.nan
    wide_df.loc[5, LLMS] = np.nan
    wide_df.to_parquet(tmp_path / "d.parquet")
    with pytest.warns(DataWarning, match=r"excluded 1 row\(s\) where no LLM has a quality value \(ids: s5;"):
        ds = load_dataset(tmp_path / "d.parquet")
    assert len(ds) == 29 and "s5" not in ds.ids and sorted(ds.ids[~ds.complete_rows]) == ["s3", "s7"]
    wide_df.loc[:, "medium"] = np.nan
    wide_df.loc[:, "small"] = np.nan
    wide_df.loc[:, "large"] = np.nan
    wide_df.to_parquet(tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"e\.parquet: no row has a quality value for any LLM"):
        load_dataset(tmp_path / "e.parquet")


def test_missing_cost_where_quality_is_known_names_row_and_column(tmp_path, wide_df):
    wide_df.loc[4, "large|total_cost"] = np.nan
    wide_df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"d\.csv: row 5, column 'large\|total_cost': the cost is missing \(the "
                                        r"quality in column 'large' is not\)") as err:
        load_dataset(tmp_path / "d.csv")
    assert "\n" not in str(err.value)


def test_quality_only_data(tmp_path):
    df = pd.DataFrame({"question": ["a", "b", "c", "d"], "task": ["t"] * 4, "split": ["train", "train", "test", "test"],
                       "row": [0, 1, 2, 3], "m1": [1.0, 0.0, 0.5, 1.0], "m2": [0.0, 1.0, 1.0, 0.25]})
    df.to_parquet(tmp_path / "q.parquet")
    ds = load_dataset(tmp_path / "q.parquet")
    assert ds.llms == ("m1", "m2")  # 'row' is metadata, not an LLM
    assert not ds.has_cost and (ds.cost == 0).all()


def test_long_layout(tmp_path):
    rows = []
    for i in range(6):
        for j, llm in enumerate(LLMS):
            rows.append({"prompt": f"p{i}", "llm": llm, "quality": float((i + j) % 2), "cost": 0.001 * (j + 1),
                         "task": "a" if i < 3 else "b"})
    pd.DataFrame(rows).to_json(tmp_path / "logs.jsonl", orient="records", lines=True)
    ds = load_dataset(tmp_path / "logs.jsonl")
    assert ds.llms == tuple(LLMS) and len(ds) == 6
    assert ds.quality[1].tolist() == [1.0, 0.0, 1.0]
    assert ds.cost[0].tolist() == pytest.approx([0.001, 0.002, 0.003])
    assert ds.tasks.tolist() == ["a"] * 3 + ["b"] * 3


def test_long_layout_missing_pair_is_kept_or_excluded_and_duplicates_rejected(tmp_path):
    rows = [{"prompt": f"p{i}", "llm": m, "quality": 1.0, "cost": 0.001 * (j + 1)} for i in range(4)
            for j, m in enumerate(LLMS)]
    df = pd.DataFrame(rows)
    ds = load_dataset(df.drop(index=4))  # query p1 has no 'medium' result: kept, its cell NaN
    assert len(ds) == 4 and ds.observed.sum() == 11 and not ds.observed[1, 1]
    assert ds.cost[1, 1] == pytest.approx(0.002)  # no logged cost: the LLM's mean cost stands in
    with pytest.warns(DataWarning, match=r"excluded 1 row"):
        ds = load_dataset(df.drop(index=4), missing="exclude")
    assert len(ds) == 3
    with pytest.raises(DataError, match=r"rows 1 and 13 give the same query and LLM 'small'"):
        load_dataset(pd.concat([df, df.iloc[[0]]], ignore_index=True))


# ------------------------------------------------------------------ malformed data: each names the problem
def _long_rows(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame([{"prompt": f"p{i}", "llm": m, "quality": 1.0, "cost": 0.001 * (j + 1), "task": "t"}
                         for i in range(n) for j, m in enumerate(LLMS)])


@pytest.mark.parametrize("drop, missing", [
    (["quality"], "quality"),             # prompt,llm,cost,task: once read as one LLM named 'cost', llm dropped
    (["llm"], "llm"),                     # prompt,quality,cost,task: once one LLM named 'quality' and one 'cost'
    (["llm", "cost"], "llm"),             # prompt,quality,task: once one LLM named 'quality'
    (["quality", "cost"], "quality"),     # prompt,llm,task: once "no LLM quality columns found"
    (["llm", "quality"], "llm"),          # prompt,cost,task: once one LLM named 'cost'
])
def test_long_layout_column_without_the_others_names_the_missing_one(tmp_path, drop, missing):
    _long_rows().drop(columns=drop).to_csv(tmp_path / "logs.csv", index=False)
    with pytest.raises(DataError, match=rf"logs\.csv: no '{missing}' column: .*long layout"):
        load_dataset(tmp_path / "logs.csv")


def test_long_layout_with_a_wide_cost_column_is_an_error():
    df = _long_rows().drop(columns=["cost"]).assign(**{"small|total_cost": 0.001})
    with pytest.raises(DataError, match=r"column 'small\|total_cost' belongs to the wide layout"):
        load_dataset(df)


def test_explicit_long_layout_without_llm_column_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"<DataFrame>: no 'llm' column"):
        load_dataset(_long_rows().drop(columns=["llm"]), layout="long")


def test_long_layout_reads_eval_name_as_the_task():
    ds = load_dataset(_long_rows().rename(columns={"task": "eval_name"}))
    assert set(ds.tasks) == {"t"}


def test_missing_cost_column_for_one_llm(tmp_path, wide_df):
    wide_df.drop(columns=["large|total_cost"]).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d\.parquet: missing cost column for LLM\(s\) \['large'\].*large\|total_cost"):
        load_dataset(tmp_path / "d.parquet")


def test_non_numeric_quality(tmp_path, wide_df):
    wide_df["medium"] = wide_df["medium"].astype(object)
    wide_df.loc[4, "medium"] = "yes"
    wide_df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"d\.csv: row 5, column 'medium': quality 'yes' is not a number"):
        load_dataset(tmp_path / "d.csv")


def test_non_numeric_quality_in_quality_only_file(tmp_path):
    df = pd.DataFrame({"prompt": ["a", "b", "c"], "m1": ["1", "0", "oops"], "m2": [1.0, 0.0, 1.0]})
    df.to_csv(tmp_path / "q.csv", index=False)
    with pytest.raises(DataError, match=r"row 3, column 'm1': quality 'oops' is not a number"):
        load_dataset(tmp_path / "q.csv")


def test_negative_cost(tmp_path, wide_df):
    wide_df.loc[2, "small|total_cost"] = -0.5
    wide_df.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"row 3, column 'small\|total_cost': cost -0.5 is negative"):
        load_dataset(tmp_path / "d.parquet")


def test_quality_out_of_range(tmp_path, wide_df):
    wide_df.loc[0, "large"] = 3.0
    wide_df.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"row 1, column 'large': quality 3.0 is outside \[0.0, 1.0\]"):
        load_dataset(tmp_path / "d.parquet")


@pytest.mark.parametrize("content,suffix", [("", ".csv"), ("prompt,m1\n", ".csv"), ("", ".jsonl")])
def test_empty_file(tmp_path, content, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=r"empty|no data rows"):
        load_dataset(path)


def test_missing_prompt_column_and_file(tmp_path, wide_df):
    wide_df.drop(columns=["prompt"]).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match="no prompt column"):
        load_dataset(tmp_path / "d.parquet")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "absent.parquet")
    with pytest.raises(DataError, match="unknown file type"):
        (tmp_path / "d.xlsx").write_text("x")
        load_dataset(tmp_path / "d.xlsx")


def test_missing_cost_cell(tmp_path, wide_df):
    wide_df.loc[5, "small|total_cost"] = np.nan
    wide_df.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"row 6, column 'small\|total_cost': the cost is missing"):
        load_dataset(tmp_path / "d.parquet")


# ------------------------------------------------------------------ hub loader, with a stand-in downloader
def test_routerbench_hub_loader_uses_downloader_and_cache(tmp_path):
    calls = []

    def fake_download(repo_id, filename, repo_type, cache_dir):
        calls.append((repo_id, filename, repo_type, cache_dir))
        target = tmp_path / filename
        if not target.exists():
            with open(target, "wb") as f:
                pickle.dump(wide_frame(), f)
        return str(target)

    with pytest.raises(DataError, match="sha256 .* is not the pinned ba4f77f1.*not unpickled"):
        load_routerbench(cache_dir=tmp_path / "cache", downloader=fake_download)  # not the hub's pinned file
    digest = hashlib.sha256((tmp_path / "routerbench_0shot.pkl").read_bytes()).hexdigest()
    ds = load_routerbench(cache_dir=tmp_path / "cache", downloader=fake_download, sha256=digest)
    assert len(ds) == 30 and ds.llms == tuple(LLMS)
    assert calls[-1] == ("withmartian/routerbench", "routerbench_0shot.pkl", "dataset", str(tmp_path / "cache"))


def test_pickle_is_refused_without_opt_in(tmp_path, wide_df):
    """Unpickling runs code: a .pkl loads only with trust_pickle / --trust-pickle, and the refusal says why."""
    path = tmp_path / "d.pkl"
    wide_df.to_pickle(path)
    with pytest.raises(DataError, match=r"d\.pkl: refusing to load a pickle: unpickling runs any code.*"
                                        r"--trust-pickle.*to_parquet\('.*d\.parquet'\)"):
        load_dataset(path)
    with trusting_pickles():
        assert len(load_dataset(path)) == 30
    with pytest.raises(DataError, match="refusing"):
        load_dataset(path)  # the opt-in ends with the block


def test_routerbench_offline_error_says_how_to_pass_a_local_file():
    def offline(**kwargs):
        raise ConnectionError("no network")

    with pytest.raises(DataError, match=r"withmartian/routerbench.*pass its local path.*--data /path/to/routerbench"):
        load_routerbench(downloader=offline)


# ------------------------------------------------------------------ splits
def test_grouped_split_keeps_identical_prompts_together_and_covers_tasks():
    prompts = [f"p{i % 40}" for i in range(200)]  # every prompt appears 5 times
    tasks = ["a" if i % 40 < 20 else "b" for i in range(200)]
    ds = RoutingDataset.from_arrays(prompts, np.zeros((200, 2)), ["x", "y"], tasks=tasks)
    split = grouped_split(ds, test_size=0.25, seed=3)
    for p in set(prompts):
        assert len(set(split.split[split.prompts == p])) == 1
    for t in ("a", "b"):
        test_share = (split.split[split.tasks == t] == "test").mean()
        assert 0.2 <= test_share <= 0.3
    assert (grouped_split(ds, 0.25, seed=3).split == split.split).all()  # seeded: repeatable
    assert not (grouped_split(ds, 0.25, seed=4).split == split.split).all()


def test_validation_and_ood_splits():
    ds = make_synthetic(n_queries=300, seed=1)
    with_val = with_validation(ds, val_size=0.2, seed=0)
    assert (with_val.split == "val").sum() > 0
    assert ((ds.split == "test") == (with_val.split == "test")).all()  # test untouched
    ood = holdout_tasks(with_val, ["task-1"])
    assert (ood.split[ood.tasks == "task-1"] == "test").all()
    assert set(ood.split[ood.tasks == "task-0"]) <= {"train", "val", "unused"}
    with pytest.raises(DataError, match="unknown task"):
        holdout_tasks(ds, ["nope"])


def test_subset_keeps_embeddings_and_fingerprint_changes():
    ds = make_synthetic(n_queries=50)
    sub = ds.select("test")
    assert sub.embeddings.shape[0] == len(sub)
    assert sub.fingerprint() != ds.fingerprint()
    assert ds.select_llms(["llm-2", "llm-0"]).quality[:, 0].tolist() == ds.quality[:, 2].tolist()
