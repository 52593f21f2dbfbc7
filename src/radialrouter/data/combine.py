"""One routing data set from several: training one router on logs whose LLM pools differ.

The union of the pools becomes the router's pool; an LLM a source never logged has no quality on that source's
queries (NaN: unobserved, so it is neither trained on nor a candidate there), and its cost there is its mean
cost on its own source (a stand-in that only matters to code reading costs of unobserved cells). LLMs are matched
by name, after ``aliases`` (``{"name in a source": "shared name"}``) — the same model is often spelled differently
in different logs. Tasks and ids are prefixed with the source's name so that neither collides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from radialrouter.data.dataset import DataError, RoutingDataset

SEP = "/"


def combine_datasets(sources: Mapping[str, RoutingDataset],
                     aliases: Mapping[str, str] | None = None) -> RoutingDataset:
    """Stack ``sources`` (name → data set, each with its own splits) over the union of their LLMs."""
    if not sources:
        raise DataError("combine_datasets: no data sets given")
    aliases = dict(aliases or {})
    renamed = {}
    for name, ds in sources.items():
        if SEP in name:
            raise DataError(f"combine_datasets: source name {name!r} must not contain {SEP!r}")
        llms = [aliases.get(llm, llm) for llm in ds.llms]
        twice = sorted({llm for llm in llms if llms.count(llm) > 1})
        if twice:
            raise DataError(f"{name}: the aliases map several of its LLMs to {twice}")
        renamed[name] = llms
    pool = list(dict.fromkeys(llm for llms in renamed.values() for llm in llms))
    column = {llm: j for j, llm in enumerate(pool)}
    n = sum(len(ds) for ds in sources.values())
    quality = np.full((n, len(pool)), np.nan)
    cost = np.zeros((n, len(pool)))
    own_mean = {}  # each LLM's mean cost on the source that logged it
    for name, ds in sources.items():
        for llm, mean in zip(renamed[name], np.nanmean(ds.cost, axis=0) if len(ds) else np.zeros(ds.n_llms)):
            own_mean.setdefault(llm, float(mean))
    cost[:] = [own_mean[llm] for llm in pool]
    start = 0
    for name, ds in sources.items():
        rows = slice(start, start + len(ds))
        cols = [column[llm] for llm in renamed[name]]
        quality[rows, cols] = ds.quality
        cost[rows, cols] = ds.cost
        start += len(ds)
    with_emb = [ds.embeddings is not None for ds in sources.values()]
    if any(with_emb) and not all(with_emb):
        raise DataError("combine_datasets: embed every source or none")
    encoders = {str(ds.embedding_encoder) for ds in sources.values()}
    if all(with_emb) and len(encoders) > 1:
        raise DataError("combine_datasets: the sources were embedded with different encoders")
    names = list(sources)
    return RoutingDataset(
        prompts=np.concatenate([ds.prompts for ds in sources.values()]),
        tasks=np.concatenate([np.asarray([f"{k}{SEP}{t}" for t in ds.tasks], dtype=object)
                              for k, ds in sources.items()]),
        quality=quality,
        cost=cost,
        llms=tuple(pool),
        split=np.concatenate([ds.split for ds in sources.values()]),
        ids=np.concatenate([np.asarray([f"{k}{SEP}{i}" for i in ds.ids], dtype=object) for k, ds in sources.items()]),
        has_cost=all(ds.has_cost for ds in sources.values()),
        source=" + ".join(f"{k}={sources[k].source}" for k in names),
        embeddings=np.concatenate([ds.embeddings for ds in sources.values()]) if all(with_emb) else None,
        embedding_encoder=next(iter(sources.values())).embedding_encoder if all(with_emb) else None,
        cost_model="; ".join(f"{k}: {sources[k].cost_model}" for k in names if sources[k].cost_model),
    )


def source_of(ds: RoutingDataset) -> np.ndarray:
    """Each row's source name in a combined data set (the prefix `combine_datasets` put on its id)."""
    return np.asarray([str(i).split(SEP, 1)[0] for i in ds.ids], dtype=object)


def split_by_source(ds: RoutingDataset, name: str, llms: tuple[str, ...] | None = None) -> RoutingDataset:
    """The rows of source ``name`` of a combined data set, on that source's LLMs (``llms``: e.g. its own pool in
    its own order; default: the LLMs observed on at least one of its rows)."""
    part = ds.subset(source_of(ds) == name)
    if len(part) == 0:
        raise DataError(f"no rows from source {name!r}; the sources are {sorted(set(source_of(ds).tolist()))}")
    if llms is None:
        llms = tuple(llm for j, llm in enumerate(ds.llms) if np.isfinite(part.quality[:, j]).any())
    return part.select_llms(list(llms))


def load_combined_splits(files: Sequence[str | Path], *, seed: int = 0, prices: str | Path | None = None,
                         output_tokens: int | None = None, aliases: Mapping[str, str] | None = None,
                         trust_pickle: bool | None = None, missing: str = "keep"
                         ) -> tuple[RoutingDataset, RoutingDataset, RoutingDataset | None, RoutingDataset]:
    """`load_splits` for several files at once, combined (each file split on its own): (full, train, val or None,
    test). ``prices`` gives estimated costs to the files that log none; a file that logs costs keeps its own.
    ``missing``: what to do with rows missing some quality cells in a file (`load_dataset`)."""
    from radialrouter.data.loaders import load_dataset, load_splits

    parts = {}
    for file in files:
        name = Path(file).stem
        if name in parts:
            raise DataError(f"{file}: two data files are named {name!r}; rename one")
        logs_cost = load_dataset(file, seed=seed, trust_pickle=trust_pickle, missing=missing).has_cost
        full = load_splits(file, seed=seed, trust_pickle=trust_pickle, prices=None if logs_cost else prices,
                           output_tokens=None if logs_cost else output_tokens, missing=missing)[0]
        parts[name] = full.with_split(np.where(full.split == "unsplit", "test", full.split))
    full = combine_datasets(parts, aliases)
    val = full.select("val")
    return full, full.select("train"), (val if len(val) else None), full.select("test")


def read_aliases(path: str | Path) -> dict[str, str]:
    """An alias file: a YAML or JSON mapping ``name in a data file: shared name``."""
    import yaml

    try:
        aliases = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read the LLM aliases: {exc}") from None
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in aliases.items()):
        raise DataError(f"{path}: LLM aliases must be a mapping of names to names (name in a data file: shared name)")
    return aliases
