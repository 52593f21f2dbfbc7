"""Read routing data from files (parquet, CSV, JSONL, RouterBench's pickled DataFrame) or from the hub.

Two layouts are understood (``docs/data-format.md`` has the full description):

* **wide** — one row per query: ``prompt`` (or ``question``), optional ``task``/``eval_name``, ``split`` and
  ``id``; one quality column per LLM named by the LLM, and ``<llm>|total_cost`` with its cost in USD per query.
  No cost columns at all means quality-only data (cost 0, Score = quality). This is RouterBench's layout.
* **long** — one row per (query, LLM): ``prompt``, ``llm``, ``quality``, optional ``cost``, ``task``, ``id``,
  ``split``. This is what a gateway's logs look like. Any of ``llm``, ``quality``, ``cost`` means this layout, so
  ``llm`` and ``quality`` must then both be there (`detect_layout`): read as wide, ``prompt,llm,cost`` would be one
  LLM named ``cost``.

Errors name the file, the row (counted from 1, header excluded) and the column. A missing quality cell (an LLM with
no result on a query) stays NaN in the dataset (``missing="keep"``, the default; `RoutingDataset.observed` is the
mask): evaluation routes such a query among its observed LLMs, and each router either trains with the mask or on
the complete rows with a warning. Rows where *no* LLM is observed are excluded with a `DataWarning` giving their
count and ids. ``missing="exclude"`` excludes every row with a missing cell instead (the earlier default),
again with a `DataWarning` — never silently.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import pandas as pd

from radialrouter.core.objective import observed_mean
from radialrouter.data.dataset import DataError, RoutingDataset
from radialrouter.data.splits import grouped_split, holdout_tasks, with_validation

COST_SUFFIX = "|total_cost"
PROMPT_COLUMNS = ("prompt", "question", "query", "text")
TASK_COLUMNS = ("task", "eval_name")
ID_COLUMNS = ("id", "orig_index", "sample_id")
#: Columns of the long layout (one row per query and LLM); `LONG_REQUIRED` must all be there when any one is.
LONG_COLUMNS = ("llm", "quality", "cost")
LONG_REQUIRED = ("llm", "quality")
#: Columns of the known layouts that are never LLMs, even when numeric.
METADATA_COLUMNS = {
    "sample_id", "orig_index", "id", "task", "eval_name", "split", "prompt", "question", "query", "text",
    "oracle_model_to_route_to", "cluster_id", "n_scores", "row", "source_file",
}
#: What the loaders do with rows that miss some LLM's quality: keep them (NaN cells) or exclude them.
MISSING_MODES = ("keep", "exclude")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "unsplit": "unsplit", "unused": "unused"}

ROUTERBENCH_REPO = "withmartian/routerbench"
ROUTERBENCH_FILE = "routerbench_0shot.pkl"
#: sha256 of the hub's RouterBench pickles (revision 784021482c3f): only these are unpickled without an opt-in.
ROUTERBENCH_SHA256 = {
    "routerbench_0shot.pkl": "ba4f77f19517610a707c374e99322d7750c30fc4ae7ff5527888595a1e65d36d",
    "routerbench_5shot.pkl": "fbd7d3d16fba2759a18fa0ad44409d3e0e92ba80d03d90827eed1a6d084c9ffe",
}
PICKLE_SUFFIXES = {".pkl", ".pickle"}

# Set by `trusting_pickles` (the CLI's --trust-pickle), so code that loads data deep inside (bench) honours it.
_TRUST_PICKLE: ContextVar[bool] = ContextVar("radialrouter_trust_pickle", default=False)


@contextmanager
def trusting_pickles(trust: bool = True) -> Iterator[None]:
    """Within this block, `read_table` unpickles ``.pkl`` files without ``trust_pickle=True`` on every call."""
    token = _TRUST_PICKLE.set(trust)
    try:
        yield
    finally:
        _TRUST_PICKLE.reset(token)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (RouterBench's pickle is 100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DataWarning(UserWarning):
    """Something in the data was excluded or assumed; the message says what and which rows."""


def read_table(path: str | Path, *, trust_pickle: bool | None = None) -> pd.DataFrame:
    """Read a parquet / CSV / JSONL / pickled-DataFrame file into a DataFrame, with errors that name the file.

    Unpickling runs whatever code the file holds, so a pickle is refused unless ``trust_pickle`` is true (default:
    inside `trusting_pickles`, i.e. the CLI's ``--trust-pickle``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() in {".gz", ".zst"} else path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not (_TRUST_PICKLE.get() if trust_pickle is None else trust_pickle):
        raise DataError(
            f"{path}: refusing to load a pickle: unpickling runs any code the file contains. If you trust it, pass "
            f"--trust-pickle (trust_pickle=True in Python); better, convert it once to parquet: python -c "
            f"\"import pandas as pd; pd.read_pickle('{path}').to_parquet('{path.with_suffix('.parquet')}')\""
        )
    try:
        if suffix in {".parquet", ".pq"}:
            df = pd.read_parquet(path)
        elif suffix in {".csv", ".csv.gz"}:
            df = pd.read_csv(path)
            _check_csv_header(path, df)
        elif suffix in {".jsonl", ".json", ".jsonl.gz", ".ndjson"}:
            df = pd.read_json(path, lines=suffix != ".json")
        elif suffix in PICKLE_SUFFIXES:
            # RouterBench ships a pickled DataFrame; the caller opted in above (unpickling runs code).
            df = pd.read_pickle(path)
            if not isinstance(df, pd.DataFrame):
                raise DataError(f"{path}: the pickle holds a {type(df).__name__}, not a pandas DataFrame")
        else:
            raise DataError(f"{path}: unknown file type {path.suffix!r}; use .parquet, .csv, .jsonl or .pkl")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as {suffix.lstrip('.')}: {exc}") from exc
    if len(df) == 0:
        raise DataError(f"{path}: the file has no data rows")
    return df


def _check_csv_header(path: Path, df: pd.DataFrame) -> None:
    """pandas renames a repeated CSV column ``x`` to ``x.1``, which later reads as an LLM without a cost column:
    name the repeated column instead."""
    import csv
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    _check_unique_columns([str(c) for c in header], str(path))


def _check_unique_columns(columns: Sequence[str], name: str) -> None:
    seen: dict[str, int] = {}
    for j, column in enumerate(columns):
        if column in seen:
            raise DataError(f"{name}: column {column!r} appears twice (columns {seen[column] + 1} and {j + 1}); "
                            "each LLM needs exactly one quality column and one cost column")
        seen[column] = j


def load_dataset(
    source: str | Path | pd.DataFrame,
    *,
    layout: str = "auto",
    llms: Sequence[str] | None = None,
    prompt_column: str | None = None,
    task_column: str | None = None,
    test_size: float = 0.3,
    seed: int = 0,
    trust_pickle: bool | None = None,
    missing: str = "keep",
) -> RoutingDataset:
    """Load routing data from a file (or a DataFrame) in the wide or long layout.

    ``missing``: ``"keep"`` (default) keeps rows where some LLMs' quality is missing, as NaN cells (see
    `RoutingDataset.observed`); ``"exclude"`` leaves every such row out with a `DataWarning`. Rows where no LLM is
    observed are always left out, with a `DataWarning`.

    ``source`` may also be ``"routerbench"`` (downloaded from the hub and cached, see `load_routerbench`).
    Without a ``split`` column, a seeded split grouped by prompt text and stratified by task is made
    (``test_size`` of each task's distinct prompts go to ``test``). A ``.pkl`` file needs ``trust_pickle=True``
    (see `read_table`).
    """
    _check_missing(missing)
    if isinstance(source, str) and source.lower() in {"routerbench", "hf://withmartian/routerbench"}:
        return load_routerbench(test_size=test_size, seed=seed, missing=missing)
    if isinstance(source, pd.DataFrame):
        df, name = source, "<DataFrame>"
        if len(df) == 0:
            raise DataError(f"{name}: no data rows")
    else:
        df, name = read_table(source, trust_pickle=trust_pickle), str(source)
    _check_unique_columns([str(c) for c in df.columns], name)
    df = df.reset_index(drop=True)
    if layout == "auto":
        layout = detect_layout(df, name)
    if layout == "wide":
        parsed = _parse_wide(df, name, llms, prompt_column, task_column)
    elif layout == "long":
        parsed = _parse_long(df, name, prompt_column, task_column)
    else:
        raise ValueError(f"layout must be 'auto', 'wide' or 'long'; got {layout!r}")
    return _finish(parsed, name, test_size=test_size, seed=seed, missing=missing)


def detect_layout(df: pd.DataFrame, name: str) -> str:
    """``"long"`` or ``"wide"`` from the columns. A long-layout column (``llm``, ``quality``, ``cost``) without the
    others the long layout needs is an error naming the missing one: read as wide, ``cost`` would become an LLM
    and ``llm`` would be dropped without a word."""
    present = [c for c in LONG_COLUMNS if c in df.columns]
    if not present:
        return "wide"
    absent = [c for c in LONG_REQUIRED if c not in df.columns]
    if not absent:
        wide_costs = [str(c) for c in df.columns if str(c).endswith(COST_SUFFIX)]
        if wide_costs:  # would be ignored: the long layout's cost is the 'cost' column
            raise DataError(f"{name}: column {wide_costs[0]!r} belongs to the wide layout (one row per query), but "
                            "columns 'llm' and 'quality' mean the long one, whose cost goes in a 'cost' column")
        return "long"
    found = " and ".join(repr(c) for c in present)
    raise DataError(
        f"{name}: no {absent[0]!r} column: column(s) {found} mean the long layout (one row per query and LLM), "
        f"which needs {' and '.join(map(repr, LONG_REQUIRED))}; columns are {[str(c) for c in df.columns]}"
    )


def _check_missing(missing: str) -> None:
    if missing not in MISSING_MODES:
        raise ValueError(f"missing must be one of {MISSING_MODES}; got {missing!r}")


def load_routerbench(
    *,
    filename: str = ROUTERBENCH_FILE,
    cache_dir: str | Path | None = None,
    downloader: Callable[..., str] | None = None,
    test_size: float = 0.3,
    seed: int = 0,
    sha256: str | None = None,
    missing: str = "keep",
) -> RoutingDataset:
    """Download RouterBench (``withmartian/routerbench``) through ``huggingface_hub`` and load it.

    The file is cached (``cache_dir``, default the Hugging Face cache), so only the first call needs the network.
    ``downloader`` defaults to `huggingface_hub.hf_hub_download`; tests pass a stand-in. The pickle is unpickled
    only when its sha256 equals ``sha256`` (default: the pinned `ROUTERBENCH_SHA256` of ``filename``).
    """
    if downloader is None:
        from huggingface_hub import hf_hub_download as downloader
    try:
        local = downloader(
            repo_id=ROUTERBENCH_REPO, filename=filename, repo_type="dataset",
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except Exception as exc:  # network errors, offline mode, missing file: all end the same way for the user
        raise DataError(
            f"could not download {filename} from the hub dataset {ROUTERBENCH_REPO} ({type(exc).__name__}: {exc}). "
            f"If this machine is offline, download the file elsewhere and pass its local path instead, e.g. "
            f"`radialrouter eval --data /path/to/{filename}` or `load_dataset('/path/to/{filename}')`."
        ) from exc
    expected = sha256 or ROUTERBENCH_SHA256.get(filename)
    if expected is None:
        raise DataError(f"{filename}: no pinned sha256 for this file, so it is not unpickled (unpickling runs code); "
                        f"pass sha256=... or load {local} with --trust-pickle")
    actual = file_sha256(local)
    if actual != expected:
        raise DataError(f"{local}: sha256 {actual} is not the pinned {expected}, so it is not unpickled (unpickling "
                        "runs code); delete the cached file and download it again, or load it with --trust-pickle")
    return load_dataset(local, test_size=test_size, seed=seed, trust_pickle=True, missing=missing)


# ---------------------------------------------------------------------------------------------- parsing
def _pick(df: pd.DataFrame, explicit: str | None, candidates: Sequence[str], what: str, name: str) -> str | None:
    if explicit is not None:
        if explicit not in df.columns:
            raise DataError(f"{name}: no {what} column {explicit!r}; columns are {list(df.columns)}")
        return explicit
    return next((c for c in candidates if c in df.columns), None)


def _numeric(series: pd.Series, name: str, column: str, what: str) -> np.ndarray:
    """Convert to float; a non-numeric cell is an error naming its row and column (missing cells stay NaN)."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{name}: row {i + 1}, column {column!r}: {what} {series.iloc[i]!r} is not a number "
            f"({int(bad.sum())} such cell(s) in this column)"
        )
    return values.to_numpy(dtype=np.float64)


def _check_range(values: np.ndarray, name: str, columns: Sequence[str], what: str, low: float, high: float) -> None:
    bad = ~np.isnan(values) & ((values < low) | (values > high))
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        problem = "is negative" if np.isinf(high) else f"is outside [{low}, {high}]"
        raise DataError(
            f"{name}: row {i + 1}, column {columns[j]!r}: {what} {float(values[i, j])!r} {problem} "
            f"({int(bad.sum())} such cell(s))"
        )


def _prompts(df: pd.DataFrame, name: str, prompt_column: str | None) -> np.ndarray:
    col = _pick(df, prompt_column, PROMPT_COLUMNS, "prompt", name)
    if col is None:
        raise DataError(
            f"{name}: no prompt column; expected one of {list(PROMPT_COLUMNS)}: rename the query column to "
            f"'prompt' (prompt_column=... names it in Python). "
            f"Columns are {list(df.columns)}"
        )
    prompts = df[col]
    empty = prompts.isna() | (prompts.astype(str).str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(f"{name}: row {i + 1}, column {col!r}: the prompt is empty ({int(empty.sum())} such row(s))")
    return prompts.astype(str).to_numpy(dtype=object)


def _ids(df: pd.DataFrame) -> np.ndarray:
    for col in ID_COLUMNS:
        if col in df.columns and df[col].notna().all() and df[col].is_unique:
            return df[col].astype(str).to_numpy(dtype=object)
    if {"source_file", "row"} <= set(df.columns):
        return (df["source_file"].astype(str) + ":" + df["row"].astype(str)).to_numpy(dtype=object)
    return np.asarray([f"row{i + 1}" for i in range(len(df))], dtype=object)


def _splits(df: pd.DataFrame, name: str) -> np.ndarray | None:
    if "split" not in df.columns:
        return None
    raw = df["split"].astype(str).str.strip().str.lower()
    mapped = raw.map(SPLIT_ALIASES)
    if mapped.isna().any():
        i = int(np.flatnonzero(mapped.isna().to_numpy())[0])
        raise DataError(
            f"{name}: row {i + 1}, column 'split': unknown split {df['split'].iloc[i]!r}; "
            f"use one of {sorted(set(SPLIT_ALIASES.values()))}"
        )
    return mapped.to_numpy(dtype=object)


def _parse_wide(df, name, llms, prompt_column, task_column) -> dict:
    columns = [str(c) for c in df.columns]
    df.columns = columns
    cost_cols = {c[: -len(COST_SUFFIX)]: c for c in columns if c.endswith(COST_SUFFIX)}
    candidates = [
        c for c in columns
        if c not in METADATA_COLUMNS and "|" not in c and c not in (prompt_column, task_column)
        and (pd.api.types.is_numeric_dtype(df[c]) or _mostly_numeric(df[c]))
    ]
    if llms is not None:
        llms = list(llms)
        missing = [m for m in llms if m not in df.columns]
        if missing:
            raise DataError(f"{name}: no quality column for LLM(s) {missing}; columns are {columns}")
    elif cost_cols:
        llms = list(cost_cols)
        no_quality = [m for m in llms if m not in df.columns]
        if no_quality:
            raise DataError(
                f"{name}: cost column(s) {[cost_cols[m] for m in no_quality]} have no matching quality column"
            )
        no_cost = [c for c in candidates if c not in cost_cols]
        if no_cost:
            raise DataError(
                f"{name}: missing cost column for LLM(s) {no_cost}: expected column(s) "
                f"{[c + COST_SUFFIX for c in no_cost]} like the other {len(cost_cols)} LLMs "
                f"(or leave out the columns that are not LLMs; llms=[...] names the LLMs in Python)"
            )
    else:
        llms = candidates  # quality-only data: every numeric-looking non-metadata column is an LLM
        if not llms:
            raise DataError(f"{name}: no LLM quality columns found; columns are {columns}")
    has_cost = bool(cost_cols) and all(m in cost_cols for m in llms)
    if cost_cols and not has_cost:
        missing = [m for m in llms if m not in cost_cols]
        raise DataError(f"{name}: missing cost column for LLM(s) {missing}: expected {missing[0] + COST_SUFFIX!r}")

    quality = np.stack([_numeric(df[m], name, m, "quality") for m in llms], axis=1)
    if has_cost:
        cost = np.stack([_numeric(df[cost_cols[m]], name, cost_cols[m], "cost") for m in llms], axis=1)
        # A cost may be missing only where the quality is missing too (no result, no bill).
        unpaid = np.isnan(cost) & ~np.isnan(quality)
        if unpaid.any():
            i, j = map(int, np.argwhere(unpaid)[0])
            raise DataError(f"{name}: row {i + 1}, column {cost_cols[llms[j]]!r}: the cost is missing "
                            f"(the quality in column {llms[j]!r} is not)")
        _check_range(cost, name, [cost_cols[m] for m in llms], "cost", 0.0, np.inf)
    else:
        cost = np.zeros_like(quality)
    _check_range(quality, name, llms, "quality", 0.0, 1.0)
    task_col = _pick(df, task_column, TASK_COLUMNS, "task", name)
    return {
        "prompts": _prompts(df, name, prompt_column),
        "tasks": df[task_col].astype(str).to_numpy(dtype=object) if task_col else np.full(len(df), "default", object),
        "quality": quality,
        "cost": cost,
        "llms": tuple(llms),
        "split": _splits(df, name),
        "ids": _ids(df),
        "has_cost": has_cost,
    }


def _mostly_numeric(series: pd.Series) -> bool:
    """A text column whose non-missing cells are mostly numbers: an LLM column with a bad cell in it."""
    values = series.dropna()
    return len(values) > 0 and pd.to_numeric(values, errors="coerce").notna().mean() >= 0.5


def _parse_long(df, name, prompt_column, task_column) -> dict:
    absent = [c for c in LONG_REQUIRED if c not in df.columns]
    if absent:
        raise DataError(f"{name}: no {absent[0]!r} column, which the long layout (one row per query and LLM) needs; "
                        f"columns are {[str(c) for c in df.columns]}")
    prompts = _prompts(df, name, prompt_column)
    if df["llm"].isna().any():
        i = int(np.flatnonzero(df["llm"].isna().to_numpy())[0])
        raise DataError(f"{name}: row {i + 1}, column 'llm': the LLM name is missing")
    quality = _numeric(df["quality"], name, "quality", "quality")
    has_cost = "cost" in df.columns
    cost = _numeric(df["cost"], name, "cost", "cost") if has_cost else np.zeros(len(df))
    if has_cost and np.isnan(cost).any():
        i = int(np.flatnonzero(np.isnan(cost))[0])
        raise DataError(f"{name}: row {i + 1}, column 'cost': the cost is missing")
    _check_range(quality[:, None], name, ["quality"], "quality", 0.0, 1.0)
    _check_range(cost[:, None], name, ["cost"], "cost", 0.0, np.inf)
    task_col = _pick(df, task_column, TASK_COLUMNS, "task", name)
    tasks = df[task_col].astype(str).to_numpy(dtype=object) if task_col else np.full(len(df), "default", object)
    keys = df["id"].astype(str).to_numpy(dtype=object) if "id" in df.columns else prompts
    splits = _splits(df, name)

    key_index = {k: i for i, k in enumerate(dict.fromkeys(keys.tolist()))}
    llms = tuple(dict.fromkeys(df["llm"].astype(str).tolist()))
    llm_index = {m: j for j, m in enumerate(llms)}
    rows = np.fromiter((key_index[k] for k in keys), dtype=np.int64, count=len(df))
    cols = np.fromiter((llm_index[m] for m in df["llm"].astype(str)), dtype=np.int64, count=len(df))
    flat = rows * len(llms) + cols
    _, first, counts = np.unique(flat, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = flat[np.sort(first[counts > 1])[0]]
        where = np.flatnonzero(flat == dup)[:2] + 1
        raise DataError(
            f"{name}: rows {where[0]} and {where[1]} give the same query and LLM {llms[dup % len(llms)]!r}; "
            "each (query, llm) pair must appear once"
        )
    n = len(key_index)
    q = np.full((n, len(llms)), np.nan)
    c = np.full((n, len(llms)), np.nan if has_cost else 0.0)  # an absent (query, llm) pair has no cost either
    q[rows, cols], c[rows, cols] = quality, cost
    first_row = np.full(n, -1)
    first_row[rows[::-1]] = np.arange(len(df))[::-1]
    for label, values in (("task", tasks), ("split", splits)):
        if values is None:
            continue
        inconsistent = values != values[first_row][rows]
        if inconsistent.any():
            i = int(np.flatnonzero(inconsistent)[0])
            raise DataError(f"{name}: row {i + 1}: the {label} differs from earlier rows of the same query")
    ids = np.asarray(list(key_index), dtype=object) if "id" in df.columns else np.asarray(
        [f"q{i + 1}" for i in range(n)], dtype=object)
    return {
        "prompts": prompts[first_row],
        "tasks": tasks[first_row],
        "quality": q,
        "cost": c,
        "llms": llms,
        "split": None if splits is None else splits[first_row],
        "ids": ids,
        "has_cost": has_cost,
    }


def _finish(parsed: dict, name: str, *, test_size: float, seed: int, missing: str = "keep") -> RoutingDataset:
    _check_missing(missing)
    quality, cost = parsed["quality"], parsed["cost"]
    observed = np.isfinite(quality)
    known = {llm: int(observed[:, j].sum()) for j, llm in enumerate(parsed["llms"])}
    empty = ~observed.any(axis=1)
    incomplete = ~observed.all(axis=1)
    drop = incomplete if missing == "exclude" else empty
    if drop.all():
        raise DataError(f"{name}: every row has a missing quality value; nothing can be used" if missing == "exclude"
                        else f"{name}: no row has a quality value for any LLM; nothing can be used")
    if drop.any():
        ids = parsed["ids"][drop].tolist()
        shown = ", ".join(map(str, ids[:30])) + (" …" if len(ids) > 30 else "")
        gaps = ", ".join(f"{llm} {len(quality) - k}" for llm, k in known.items() if k < len(quality))
        what = ("with missing quality values (--missing exclude; missing='exclude' in Python)" if missing == "exclude"
                else "where no LLM has a quality value")
        warnings.warn(
            f"{name}: excluded {int(drop.sum())} row(s) {what} (ids: {shown}; missing cells per LLM: {gaps})",
            DataWarning,
            stacklevel=3,
        )
    keep = ~drop
    quality, cost = quality[keep], cost[keep]
    if np.isnan(cost).any():
        # Unobserved cells without a logged cost (the long layout): the LLM's mean logged cost stands in, so pool
        # means and cost models stay unbiased. Evaluation never realises these costs (it routes among observed LLMs).
        mean = np.nan_to_num(observed_mean(cost), nan=0.0)
        cost = np.where(np.isnan(cost), mean[None, :], cost)
    split = parsed["split"]
    ds = RoutingDataset(
        prompts=parsed["prompts"][keep],
        tasks=parsed["tasks"][keep],
        quality=quality,
        cost=cost,
        llms=parsed["llms"],
        split=split[keep] if split is not None else np.full(int(keep.sum()), "unsplit", dtype=object),
        ids=parsed["ids"][keep],
        has_cost=parsed["has_cost"],
        source=name,
        coverage={"rows": int(len(parsed["quality"])), "known": known},
    )
    if split is None:
        ds = grouped_split(ds, test_size=test_size, seed=seed)
    return ds


def load_splits(
    data: str | Path,
    *,
    seed: int = 0,
    test_size: float = 0.3,
    val_size: float = 0.1,
    test_tasks: str | Sequence[str] | None = None,
    train_tasks: str | Sequence[str] | None = None,
    trust_pickle: bool | None = None,
    prices: str | Path | None = None,
    output_tokens: int | None = None,
    missing: str = "keep",
) -> tuple[RoutingDataset, RoutingDataset, RoutingDataset | None, RoutingDataset]:
    """Load ``data`` and return (full, train, val or None, test): the experiment layout every command and
    benchmark shares. ``test_tasks`` (names, or one comma-separated string) makes an out-of-distribution split
    (tasks also named in ``train_tasks`` are tested on their own test split); otherwise the file's ``split``
    column (or a seeded grouped split) is used, and ``test`` includes the ``unsplit`` rows (test-only tasks).
    ``prices`` (a price file, see `radialrouter.data.prices`) gives quality-only logs estimated costs, with
    ``output_tokens`` output tokens per query (default 256). ``missing`` is `load_dataset`'s: keep rows with
    missing quality cells (default) or exclude them."""
    ds = load_dataset(data, test_size=test_size, seed=seed, trust_pickle=trust_pickle, missing=missing)
    if prices is not None:
        from radialrouter.data.prices import DEFAULT_OUTPUT_TOKENS, with_prices

        ds, _ = with_prices(ds, prices, DEFAULT_OUTPUT_TOKENS if output_tokens is None else output_tokens)
    elif output_tokens is not None:
        raise DataError("--output-tokens needs --prices (it sets the output tokens of the estimated costs)")
    tests, trains = _names(test_tasks), _names(train_tasks)
    if tests:
        ds.select_tasks(tests + trains)  # validates the names
        # A task named in both lists is tested in distribution, on its own test split (RouterDC's protocol);
        # the other test tasks are held out entirely.
        in_dist = [t for t in tests if t in trains]
        original = ds.split
        ds = holdout_tasks(ds, [t for t in tests if t not in in_dist], trains or None)
        if in_dist:
            ds = ds.with_split(np.where(np.isin(ds.tasks, in_dist) & (original == "test"), "test", ds.split))
    elif trains:
        ds = ds.select_tasks(trains + [t for t in ds.task_names if t not in trains
                                       and (ds.split[ds.tasks == t] == "unsplit").all()])
    if val_size > 0 and not (ds.split == "val").any():
        ds = with_validation(ds, val_size=val_size, seed=seed)
    train, val = ds.select("train"), ds.select("val")
    test = ds.select("test", "unsplit")
    if len(test) == 0:
        raise DataError(f"{data}: no test rows (split 'test' or 'unsplit') to evaluate on")
    return ds, train, (val if len(val) else None), test


def _names(value: str | Sequence[str] | None) -> list[str]:
    """Task names from a list or a comma-separated string (as the CLI takes them)."""
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value or [] if v.strip()]
