"""Reproduce the comparison table: train every router on the same splits, seeds and query encoder, evaluate it,
and write ``<name>.json`` (the ``eval --json`` schema plus provenance) and ``<name>.md`` (Table 1, curves,
routing-collapse diagnostics, per-task figures, training time and routing latency).

Protocol, so the figures mean the same thing for every router:
- Splits come from `radialrouter.data.load_splits` with each seed (the data file's own train/test split when
  it has one; the seed then carves the validation split and seeds training).
- λ-free routers are fitted once per seed and evaluated at every λ. Routers with ``lam_at_fit`` are fitted once per
  scenario λ; in the λ sweep and the curves they contribute those scenario points only (one model per point), and
  their collapse-vs-budget and collapse-index figures come from the model trained for the smallest λ.
- Curves (Score vs λ, Perf vs Cost, AIQ, QNC) use `evaluation.DEFAULT_SWEEP` on every seed; AIQ uses the cost
  range shared by all routers of that seed. The Routing Collapse Index is measured at the largest budget, which
  for a score-then-argmax router is λ = 0 (no cost pressure).
- Latency is routing only (embeddings precomputed): the median of ``latency_runs`` timings of a batch of all test
  queries (reported per query) and of a single query. The encoder's own latency is measured separately.
- Quality-only data (no cost) is evaluated at λ = 0 only; curves and collapse figures need cost and are skipped.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import is_quality_only_presets, resolve_lams, tradeoff_presets
from radialrouter.data import RoutingDataset, load_splits
from radialrouter.evaluation.budget_sweep import budget_sweep
from radialrouter.evaluation.metrics import (
    DEFAULT_SWEEP,
    collapse_index,
    curve_metrics,
    evaluate_router,
    single_llm_summary,
)
from radialrouter.routers import Router, available_routers, router_class
from radialrouter.routers.ensemble import fit_reusing_members
from radialrouter.routers.registry import make_seeded

#: Reference points every table carries; they are not learned routers.
REFERENCE_ROUTERS: tuple[str, ...] = ("oracle", "random", "best-single", "task-best")

#: Keys of a sweep row kept in the JSON (the full rows' per-task and call-share fields are in ``results``).
SWEEP_KEYS = ("router", "lam", "perf", "cost", "score", "most_expensive_share", "overspend_share", "seed")


def default_routers() -> list[str]:
    """Every registered router (a newly registered one joins automatically), learned ones first, then the
    reference points."""
    return [*(n for n in available_routers() if n not in REFERENCE_ROUTERS), *REFERENCE_ROUTERS]


#: Suffix of a bench row name that fits the router with the data's task as each query's context (e.g.
#: ``ensemble+context``): the same router with and without context side by side (issue #23 item 3).
CONTEXT_SUFFIX = "+context"


#: Bench row of `radialrouter.evaluation.auto.select_router` (what ``train --router auto`` does): per seed, the
#: candidate chosen by cross-validation on the training split, refitted and evaluated like any router.
AUTO = "auto"


def router_spec(name: str) -> tuple[str, dict[str, Any]]:
    """A bench row name → (registered router, constructor parameters): ``NAME+context`` is ``NAME`` with
    ``context=True`` (routers that take a context only)."""
    if not name.endswith(CONTEXT_SUFFIX):
        router_class(name)
        return name, {}
    base = name[: -len(CONTEXT_SUFFIX)]
    if "context" not in inspect.signature(router_class(base).__init__).parameters:
        raise ValueError(f"router {base!r} takes no context; '{CONTEXT_SUFFIX}' goes with a router that does "
                         "(ensemble)")
    return base, {"context": True}


# ---------------------------------------------------------------------------------------------- timing
def _median_seconds(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def routing_latency(router: Router, test: RoutingDataset, lam: float, runs: int = 5) -> dict[str, float]:
    """Milliseconds per query routing a batch of all test queries, and for one query alone (median of ``runs``)."""
    batch = test.embeddings if router.uses_embeddings else test
    one = test.embeddings[:1] if router.uses_embeddings else test.subset(np.arange(1))
    batch_s = _median_seconds(lambda: router.predict(batch, lam), runs)
    single_s = _median_seconds(lambda: router.predict(one, lam), max(runs, 20))
    return {"batch_ms_per_query": 1000 * batch_s / len(test), "single_ms": 1000 * single_s, "batch_size": len(test)}


def encoder_latency(encoder: QueryEncoder, prompts: Sequence[str], runs: int = 3) -> dict[str, float]:
    """What embedding adds per query, without the on-disk cache: a batch of ``prompts`` and a single one."""
    fresh = QueryEncoder.from_identity(encoder.identity, cache_dir=False)
    prompts = list(prompts)
    fresh.encode(prompts[:2])  # load weights outside the timing
    batch_s = _median_seconds(lambda: fresh.encode(prompts), runs)
    single_s = _median_seconds(lambda: fresh.encode(prompts[:1]), runs)
    return {"batch_ms_per_query": 1000 * batch_s / len(prompts), "single_ms": 1000 * single_s,
            "batch_size": len(prompts)}


# ---------------------------------------------------------------------------------------------- provenance
def provenance(data: str, full: RoutingDataset, encoder: QueryEncoder | None) -> dict[str, Any]:
    """Enough to tell whether two result files are comparable: code, data, encoder, machine, versions."""
    import torch

    import radialrouter

    versions = {"python": platform.python_version(), "radialrouter": radialrouter.__version__,
                "numpy": np.__version__, "torch": torch.__version__}
    for module in ("sklearn", "transformers"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    path = Path(data)
    return {
        "git_commit": _git(["rev-parse", "HEAD"]),
        "git_dirty": bool(_git(["status", "--porcelain", "--untracked-files=no"])),
        "data": str(data),
        "data_sha256": _sha256(path) if path.is_file() else None,
        "data_fingerprint": full.fingerprint(),
        "cost": full.cost_model or ("logged" if full.has_cost else "none (quality only)"),
        "encoder": None if encoder is None else {**encoder.identity, "precision": encoder.precision,
                                                   "backend": encoder.active_backend},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": versions,
        "command": " ".join(sys.argv),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _git(args: list[str]) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- the run
def _budget_rows(router: Router, test: RoutingDataset) -> list[dict]:
    """Collapse against budget (`radialrouter.evaluation.budget_sweep`)."""
    keys = ("budget", "cost", "perf", "most_expensive_share", "overspend_share")
    return [{k: r[k] for k in keys if k in r} for r in budget_sweep(router, test, n=20)]


def run_bench(
    data: str,
    routers: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    lams: Sequence[float | str] | None = None,
    test_tasks: str | None = None,
    train_tasks: str | None = None,
    encoder: QueryEncoder | None = None,
    latency_runs: int = 5,
    measure_encoder: bool = True,
    progress: bool = True,
    prices: str | None = None,
    output_tokens: int | None = None,
    pair: tuple[str, str] | None = None,
    missing: str = "keep",
    partial_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``routers`` (default: `default_routers`) on every seed; return the JSON document.
    ``missing``: keep rows with missing quality cells (default; each test query is routed among its observed LLMs)
    or exclude them (`load_dataset`).

    ``partial_dir``: write each finished (router, seed) unit there as it finishes, so an interrupted bench keeps
    them, and reuse them when run again with the same data and arguments (`PartialResults`: a changed data file,
    λ, task split, encoder … gives a new key, never stale results)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    names = list(routers or default_routers())
    for name in names:
        if name != AUTO:
            router_spec(name)  # unknown names fail before any training
    if not seeds:
        raise ValueError("at least one seed is needed")
    if any(n == AUTO or router_class(router_spec(n)[0]).uses_embeddings for n in names):
        encoder = encoder or QueryEncoder()
    else:
        encoder = None
    results: list[dict] = []
    sweeps: dict[str, list[dict]] = defaultdict(list)
    curves: dict[str, list[dict]] = defaultdict(list)
    collapse: dict[str, dict[str, list]] = defaultdict(lambda: {"collapse_index": []})
    pairs: dict[str, list[dict]] = defaultdict(list)  # RouteLLM's strong/weak metrics per router, one per seed
    budget: dict[str, list[dict]] = {}
    timing: dict[str, dict[str, Any]] = {name: {"fit_seconds": []} for name in names}
    meta: dict[str, Any] = {}
    vectors: tuple[np.ndarray, np.ndarray] | None = None  # (ids, embeddings), reused across seeds
    bar = tqdm(total=len(seeds) * len(names), desc="bench: ", disable=not progress, unit="unit",
               bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    eta = BenchEta()
    partial: PartialResults | None = None
    for seed_index, seed in enumerate(seeds):
        full, train, val, test = load_splits(data, seed=seed, test_tasks=test_tasks, train_tasks=train_tasks,
                                             prices=prices, output_tokens=output_tokens, missing=missing)
        if pair is not None and seed_index == 0:
            from radialrouter.evaluation.strong_weak import check_pair

            check_pair(full.llms, *pair)  # an unknown name fails before any embedding or training
        if encoder is not None:
            if vectors is None or not np.array_equal(vectors[0], full.ids):
                if progress:  # announced before it starts: on new data this is the long part
                    bar.write(encoder.plan(full.prompts.tolist())[0], file=sys.stderr)
                vectors = (full.ids, full.embed(encoder, progress=progress).embeddings)
            full = full.with_embeddings(vectors[1], encoder.identity)
            train, test = full.select("train"), full.select("test", "unsplit")
            val = full.select("val") if val is not None else None
        if seed_index == 0:
            # The named trade-offs on this pool's price scale, resolved on the first seed's training split and
            # kept for every seed, so every router and seed is evaluated at the same λ.
            # Quality-only data (no cost column, or every cost 0): one trade-off, whatever λ is asked.
            presets = tradeoff_presets(train.quality, train.cost)
            has_cost = full.has_cost and not is_quality_only_presets(presets)
            scenario = list(presets.values()) if lams is None else resolve_lams(list(lams), presets)
            meta = {**provenance(data, full, encoder), "seeds": list(seeds), "routers": names, "lams": scenario,
                    "presets": presets,
                    "pair": list(pair) if pair else None,
                    "n_train": len(train), "n_val": 0 if val is None else len(val), "n_test": len(test),
                    "llms": list(full.llms), "has_cost": has_cost,
                    "train_tasks": sorted(set(train.tasks.tolist())), "test_tasks": _task_order(test_tasks, test),
                    "most_expensive_llm": full.llms[int(np.argmax(test.mean_cost))] if has_cost else None,
                    "single_llms": _single_llms(test),
                    "missing": {"mode": missing, "rows_with_missing": int((~full.complete_rows).sum()),
                                "test_rows_with_missing": int((~test.complete_rows).sum()),
                                "missing_cells": int((~full.observed).sum()),
                                "observed_per_llm": {llm: int(k) for llm, k in
                                                     zip(full.llms, full.observed.sum(axis=0))}},
                    "missing_cells": {}}
            if partial_dir is not None:
                partial = PartialResults(partial_dir, {
                    "data_fingerprint": full.fingerprint(), "data_sha256": meta["data_sha256"], "lams": scenario,
                    "test_tasks": test_tasks, "train_tasks": train_tasks, "missing": missing, "pair": pair,
                    "latency_runs": latency_runs, "first_seed": seeds[0],
                    "code": [meta["versions"]["radialrouter"], meta["git_commit"], meta["git_dirty"]],
                    "encoder": None if encoder is None else encoder.fingerprint()})
                meta["partial_results"] = str(partial.path)
        seed_sweeps: dict[str, list[dict]] = {}
        fitted: dict[str, Router] = {}  # this seed's λ-free routers with default parameters: an ensemble's members
        split_fingerprint = None if partial is None else full.fingerprint()
        for position, name in enumerate(names):
            bar.set_description_str(f"bench seed {seed} {name}: ")
            run = None if partial is None else partial.load(seed, name, split_fingerprint)
            if run is None:
                unit_start = time.perf_counter()
                run = _bench_router(name, seed, train, val, test, scenario, first_seed=seed_index == 0,
                                    latency_runs=latency_runs, pair=pair, presets=presets, fitted=fitted)
                eta.record(name, time.perf_counter() - unit_start)
                if partial is not None:
                    partial.save(seed, name, split_fingerprint, run, time.perf_counter() - unit_start)
            else:
                meta.setdefault("resumed_units", []).append([seed, name])
                if run.get("_seconds") is not None:
                    eta.record(name, run["_seconds"])
            later = [(seed, n) for n in names[position + 1:]] + [(s, n) for s in seeds[seed_index + 1:] for n in names]
            pending = [n for s, n in later if partial is None or not partial.has(s, n)]  # units on disk: no time
            bar.set_postfix_str(eta.describe(pending), refresh=False)
            if "pair" in run:
                pairs[name].append({**run["pair"], "seed": seed})
            if run.get("missing_cells"):
                meta["missing_cells"][name] = run["missing_cells"]
            if "auto" in run:
                meta.setdefault("auto", {})[str(seed)] = run["auto"]
            results += run["results"]
            timing[name]["fit_seconds"] += run["fit_seconds"]
            timing[name].update(run.get("latency", {}))
            if "sweep" in run:
                seed_sweeps[name] = run["sweep"]
                sweeps[name] += [{**{k: r[k] for k in SWEEP_KEYS if k in r}, "seed": seed} for r in run["sweep"]]
                collapse[name]["collapse_index"].append(run["collapse_index"])
            if run.get("budget") is not None:
                budget[name] = run["budget"]
            bar.update(1)
        if seed_sweeps:
            costs = [r["cost"] for rows in seed_sweeps.values() for r in rows]
            for name, rows in seed_sweeps.items():
                curves[name].append({**curve_metrics(rows, test, (min(costs), max(costs))), "seed": seed})
    bar.close()
    if measure_encoder and encoder is not None:
        meta["encoder_latency"] = encoder_latency(encoder, test.prompts[:32].tolist())
    meta["wall_seconds"] = round(time.perf_counter() - started, 1)
    return {"meta": meta, "results": results, "sweeps": dict(sweeps), "curves": dict(curves),
            "collapse": dict(collapse), "budget": budget, "timing": timing, "pairs": dict(pairs)}


class BenchEta:
    """Time left from each router's own measured time per unit × its units still to run.

    A global average over units misleads both ways: the reference routers take milliseconds and RadialRouter
    minutes, so after one seed the mean says nothing about the next. Routers not timed yet count as zero, and the
    estimate says so ("at least")."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name].append(float(seconds))

    def remaining(self, pending: Sequence[str]) -> tuple[float, int]:
        """(seconds for the ``pending`` units of timed routers, how many pending units are of untimed routers)."""
        total, untimed = 0.0, 0
        for name in pending:
            if self.seconds.get(name):
                total += float(np.mean(self.seconds[name]))
            else:
                untimed += 1
        return total, untimed

    def describe(self, pending: Sequence[str]) -> str:
        """The bar's postfix: ``ETA 12 min``, or ``ETA ≥ 3 min (5 unit(s) of routers not timed yet)``."""
        if not pending:
            return "done"
        seconds, untimed = self.remaining(pending)
        text = f"{seconds:.0f} s" if seconds < 90 else (f"{seconds / 60:.0f} min" if seconds < 5400
                                                        else f"{seconds / 3600:.1f} h")
        return f"ETA {text}" if not untimed else f"ETA ≥ {text} ({untimed} unit(s) of routers not timed yet)"


class PartialResults:
    """Finished (router, seed) units of one bench, one JSON file each under ``root/<key>/``, written as they finish.

    The key hashes the data (its content fingerprint and file hash) and every argument that changes a unit's
    figures (λ values, task split, missing-cell mode, pair, encoder fingerprint, latency runs) and the code (package
    version, git commit): new code never reuses units fitted by older code. Each file also
    records the seed's own split fingerprint and is ignored unless it matches. Routers and seeds are not in the key:
    adding a router or a seed reuses the units already done."""

    def __init__(self, root: str | Path, arguments: dict[str, Any]) -> None:
        blob = json.dumps(arguments, sort_keys=True, default=str)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.path = Path(root) / self.key
        self.arguments = arguments

    def _file(self, seed: int, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.path / f"seed{seed}-{safe}.json"

    def has(self, seed: int, name: str) -> bool:
        """Whether the unit is on disk (for the ETA: a resumed unit takes no time)."""
        return self._file(seed, name).exists()

    def load(self, seed: int, name: str, fingerprint: str) -> dict[str, Any] | None:
        """The unit's run, or None when it is not there (or unreadable, or from other splits)."""
        try:
            doc = json.loads(self._file(seed, name).read_text())
        except (OSError, ValueError):
            return None
        if doc.get("router") != name or doc.get("seed") != seed or doc.get("split_fingerprint") != fingerprint:
            return None
        return {**doc["run"], "_seconds": doc.get("seconds")}

    def save(self, seed: int, name: str, fingerprint: str, run: dict[str, Any], seconds: float) -> None:
        """Write the unit atomically (a crash mid-write leaves no half file that a rerun would trust)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "arguments.json").exists():
            (self.path / "arguments.json").write_text(json.dumps(self.arguments, indent=2, default=str) + "\n")
        target = self._file(seed, name)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"router": name, "seed": seed, "split_fingerprint": fingerprint,
                                   "seconds": round(seconds, 3), "run": run}, default=_plain))
        os.replace(tmp, target)


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays inside a unit's run."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a partial result")


def _bench_router(name: str, seed: int, train: RoutingDataset, val: RoutingDataset | None, test: RoutingDataset,
                  scenario: list[float], *, first_seed: bool, latency_runs: int,
                  pair: tuple[str, str] | None = None, presets: dict[str, float] | None = None,
                  fitted: dict[str, Router] | None = None) -> dict[str, Any]:
    """Fit one router for one seed and measure it: scenario rows, λ sweep, collapse index, and on the first seed
    the budget sweep and latency. ``fitted``: this seed's routers fitted so far by name; an ensemble whose members
    are all there stacks them (`EnsembleRouter.fit_on_members`: the same fits it would make) instead of fitting
    them again, and its fit time is then the weight fit's."""
    models, fit_seconds, auto = _fit_models(name, seed, train, val, scenario, {} if fitted is None else fitted)
    how = next(iter(models.values())).training_.get("missing_cells")
    run: dict[str, Any] = {"missing_cells": how and how["method"], "fit_seconds": fit_seconds, "results": [
        {**r, "seed": seed} for lam, m in models.items()
        for r in evaluate_router(m, test, scenario if lam is None else [lam], presets)]}
    # The largest budget is λ = 0: a λ-free model, or the one trained for the smallest λ.
    unconstrained = models.get(None) or models[min(models)]
    if pair is not None:
        from radialrouter.evaluation.strong_weak import PAIR_FIGURES, pair_report

        report = pair_report(unconstrained, test, *pair)
        run["pair"] = {k: report[k] for k in (*PAIR_FIGURES, "per_task") if k in report}
    if test.has_cost and not is_quality_only_presets(presets):  # no costs: no sweep, collapse or budget
        if None in models:
            run["sweep"] = evaluate_router(models[None], test, sorted(set(DEFAULT_SWEEP) | set(scenario)), presets)
        else:
            run["sweep"] = list(run["results"])
        out = unconstrained.outcomes(test, 0.0)
        run["collapse_index"] = collapse_index(out.weights, test.quality, test.cost)
        if first_seed:
            run["budget"] = _budget_rows(unconstrained, test)
    if first_seed:
        middle = scenario[len(scenario) // 2]
        run["latency"] = routing_latency(models.get(None) or models[middle], test, middle, latency_runs)
    if auto is not None:
        run["auto"] = auto
    return run


def _fit_models(name: str, seed: int, train: RoutingDataset, val: RoutingDataset | None, scenario: list[float],
                fitted: dict[str, Router]) -> tuple[dict[float | None, Router], list[float], dict[str, Any] | None]:
    """The bench row's models (one per scenario λ for a per-λ router, else one under ``None``), their fit seconds,
    and for ``auto`` its choice and cross-validation table. λ-free routers fitted with default parameters join
    ``fitted``, whose routers an ensemble stacks (`fit_reusing_members`)."""
    if name == AUTO:
        from radialrouter.evaluation.auto import select_router

        start = time.perf_counter()
        chosen = select_router(train, val, seed=seed)
        chosen.best.display_name = AUTO
        return {None: chosen.best}, [round(time.perf_counter() - start, 3)], {
            "chosen": chosen.best.name,
            "cv": {r["router"]: [round(r["cv_mean"], 4), round(r["cv_se"], 4)] for r in chosen.table}}
    base, params = router_spec(name)
    models: dict[float | None, Router] = {}
    fit_seconds = []
    for lam in (scenario if router_class(base).lam_at_fit else [None]):
        router = make_seeded(base, seed, **params, **({} if lam is None else {"lam": lam}))
        if name != base:
            router.display_name = name
        start = time.perf_counter()
        models[lam] = fit_reusing_members(router, fitted, train, val)
        fit_seconds.append(round(time.perf_counter() - start, 3))
        if lam is None and not params:
            fitted[name] = models[lam]
    return models, fit_seconds, None


def _per_task_apgr(pairs: dict[str, list[dict]], order: Sequence[str]) -> list[str]:
    """The strong/weak APGR table per test task (mean ± std over seeds; "n/a" where the strong LLM is not better
    than the weak one on that task's queries); nothing when the data has one task."""
    tasks = [t for t in order if any(t in r.get("per_task", {}) for rs in pairs.values() for r in rs)]
    tasks += sorted({t for rs in pairs.values() for r in rs for t in r.get("per_task", {})} - set(tasks))
    if not tasks:
        return []
    out = ["### APGR per task", "",
           "The same figure on each test task's queries alone (RouteLLM reports one benchmark at a time); n/a where "
           "the strong LLM is not better than the weak one on that task.", "",
           "| Router | " + " | ".join(tasks) + " |", "|---" + "|---:" * len(tasks) + "|"]
    for router, reports in pairs.items():
        cells = []
        for task in tasks:
            values = [r["per_task"][task]["apgr"] for r in reports if task in r.get("per_task", {})]
            values = [v for v in values if v is not None]
            cells.append(_mean_std(values, 3) if values else "n/a")
        out.append(f"| {router} | " + " | ".join(cells) + " |")
    return out + [""]


def _task_order(test_tasks: str | None, test: RoutingDataset) -> list[str]:
    """Test tasks in the order the user named them (the order papers print), else as they appear."""
    named = [t.strip() for t in (test_tasks or "").split(",") if t.strip()]
    return [t for t in named if t in test.task_names] + [t for t in test.task_names if t not in named]


def _single_llms(test: RoutingDataset) -> dict[str, dict[str, float]]:
    """Each LLM alone on the test split (macro Perf and Cost, over the queries where it is observed, and its
    coverage): the points routers are compared against."""
    out = {}
    for j, llm in enumerate(test.llms):
        if not test.observed[:, j].any():
            continue
        m = single_llm_summary(test, j)["macro"]
        out[llm] = {"perf": m.perf, "cost": m.cost, "coverage": float(test.observed[:, j].mean())}
    return out


# ---------------------------------------------------------------------------------------------- report
def _mean_std(values: Sequence[float | None], digits: int = 3) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "never"
    text = f"{np.mean(vals):.{digits}f}"
    if len(vals) > 1:
        text += f" ± {np.std(vals):.{digits}f}"
    return text if len(vals) == len(values) else f"{text} ({len(vals)}/{len(values)} seeds)"


def _per_task_table(rows: list[dict], lam: float, train_tasks: set[str], has_cost: bool,
                    order: Sequence[str] = ()) -> list[str]:
    """Router × task Perf (and Cost) at one λ, mean over seeds, with averages over the in-distribution tasks
    (those trained on) and the out-of-distribution ones when both are present, RouterDC-style."""
    by_router: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["lam"] == lam:
            for task, m in r["per_task"].items():
                by_router[r["router"]][task].append((m["perf"], m["cost"]))
    seen = list(dict.fromkeys(t for per_task in by_router.values() for t in per_task))
    tasks = [t for t in order if t in seen] + [t for t in seen if t not in order]
    groups = [(label, ts) for label, ts in (("ID avg", [t for t in tasks if t in train_tasks]),
                                            ("OOD avg", [t for t in tasks if t not in train_tasks])) if ts]
    if len(groups) == 1:
        groups = [("Avg", groups[0][1])]
    header = ["Router"] + [c for label, ts in groups for c in (*ts, label)]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for router, per_task in by_router.items():
        perf = {t: float(np.mean([p for p, _ in v])) for t, v in per_task.items()}
        cost = {t: float(np.mean([c for _, c in v])) for t, v in per_task.items()}
        cells = []
        for _, ts in groups:
            cells += [f"{perf[t]:.3f} ({cost[t]:.2f})" if has_cost else f"{perf[t]:.3f}" for t in ts]
            cells.append(f"**{np.mean([perf[t] for t in ts]):.3f}**")
        lines.append(f"| {router} | " + " | ".join(cells) + " |")
    return lines


def bench_markdown(doc: dict[str, Any], name: str, figures: dict[str, str]) -> str:
    """The human-readable report of a `run_bench` document."""
    from radialrouter.evaluation.report import to_markdown

    meta, rows = doc["meta"], doc["results"]
    has_cost = meta["has_cost"]
    out = [f"# Benchmark: {name}", "",
           f"{meta['n_train']} training, {meta['n_val']} validation and {meta['n_test']} test queries; "
           f"{len(meta['llms'])} LLMs; seeds {', '.join(map(str, meta['seeds']))} (figures are mean ± std over "
           f"seeds); wall time {meta['wall_seconds']:.0f} s.", ""]
    missing = meta.get("missing") or {}
    if missing.get("rows_with_missing"):
        top = max(missing["observed_per_llm"].values())
        gaps = ", ".join(f"`{llm}` {k}" for llm, k in missing["observed_per_llm"].items() if k < top)
        how = defaultdict(list)
        for router, method in meta.get("missing_cells", {}).items():
            how[method].append(router)
        out += [f"Missing quality cells: {missing['rows_with_missing']} queries lack some LLM's quality "
                f"({missing['missing_cells']} cells; rows with a quality, for the LLMs that lack some: {gaps}), "
                f"{missing['test_rows_with_missing']} of them in the test split (seed {meta['seeds'][0]}). They are "
                "kept: each test query is routed among its observed LLMs (the oracle, random and single-LLM "
                "figures too), so every decision has a label. Training: "
                + "; ".join(f"{method} — {', '.join(routers)}" for method, routers in how.items())
                + ". Model selection uses the validation rows where every LLM is observed (RadialRouter's early "
                "stopping: every validation row, each among its observed LLMs).", ""]
    elif missing.get("mode") == "exclude":
        out += ["Rows with a missing quality cell were excluded (`--missing exclude`).", ""]
    out.append(to_markdown(rows, title="Results (Table 1 layout)", lams=meta["lams"]))
    if any(r["router"].endswith(CONTEXT_SUFFIX) for r in rows):
        out += [f"`NAME{CONTEXT_SUFFIX}`: NAME fitted and routing with each query's task label as its context (at "
                "serving time the request's `metadata`); every other row reads the query text only.", ""]
    if meta.get("auto"):
        chosen = ", ".join(f"seed {seed}: {a['chosen']}" for seed, a in meta["auto"].items())
        out += [f"`auto`: the router `train --router auto` chooses (cross-validation on each seed's training split, "
                f"one-SE rule), refitted and evaluated like the others. Chosen: {chosen}.", ""]
    if not has_cost:
        out += ["Quality-only data: Cost is 0 and Score = Perf, macro-averaged over all test tasks; the RouterDC-style "
                "table (in- and out-of-distribution averages) is under Per task. Cost–quality curves, AIQ, QNC and "
                "routing-collapse figures need costs, so there are none for this data.", ""]
    else:
        out += ["## Curves, collapse and reference metrics", "",
                f"Most expensive LLM: `{_most_expensive(doc)}`. "
                "RCI (Routing Collapse Index): share of queries sent to it at the largest budget (λ = 0) although a "
                "cheaper LLM was as good. QNC: cheapest point of the λ sweep reaching the best single LLM's Perf, "
                "relative to that LLM's cost (lower is better). AIQ over the cost range shared by all routers. "
                "Top share / overspend at each scenario λ: share of queries sent to the most expensive LLM, and sent "
                "to any LLM although a cheaper one was as good.", ""]
        lam_heads = [f"top share / overspend λ={lam:g}" for lam in meta["lams"]]
        out.append("| Router | AIQ | QNC | peak Perf | RCI | " + " | ".join(lam_heads) + " |")
        out.append("|---" + "|---:" * (4 + len(lam_heads)) + "|")
        for router in _routers_in_order(rows):
            c = doc["curves"].get(router, [])
            figures_lam = []
            for lam in meta["lams"]:
                sel = [r for r in rows if r["router"] == router and r["lam"] == lam]
                figures_lam.append(f"{_mean_std([r['most_expensive_share'] for r in sel], 2)} / "
                                   f"{_mean_std([r['overspend_share'] for r in sel], 2)}")
            out.append(f"| {router} | {_mean_std([x['aiq'] for x in c], 4)} | {_mean_std([x['qnc'] for x in c])} | "
                       f"{_mean_std([x['peak_perf'] for x in c])} | "
                       f"{_mean_std(doc['collapse'].get(router, {}).get('collapse_index', []), 3)} | "
                       + " | ".join(figures_lam) + " |")
        if doc["curves"]:
            ref = next(iter(doc["curves"].values()))[0]["reference_llm"]
            out += ["", f"QNC reference (best single LLM on the test split): `{ref}`.", ""]
    if doc.get("pairs"):
        strong, weak = meta["pair"]
        first = next(iter(doc["pairs"].values()))
        left_out = ", ".join(f"{r.get('left_out', 0)} (seed {r['seed']})" for r in first if r.get("left_out"))
        out += [f"## Strong/weak pair: `{strong}` vs `{weak}` (RouteLLM's metrics)", "",
                "From each router's per-query scores at λ = 0 (its preference for the strong LLM): APGR, the area "
                "under the gap-recovered curve over strong-LLM call shares 0–1 (0.5 = random order), and CPT, the "
                "strong call share needed for 50 % / 80 % of the quality gap (lower is better). Micro over test "
                "queries; mean ± std over seeds."
                + (f" Test queries without the quality of both LLMs are left out: {left_out}." if left_out else ""),
                "", "| Router | APGR | CPT(50 %) | CPT(80 %) |",
                "|---|---:|---:|---:|"]
        for router, reports in doc["pairs"].items():
            cells = [_mean_std([r[k] for r in reports if r[k] is not None], 3) for k in ("apgr", "cpt50", "cpt80")]
            out.append(f"| {router} | " + " | ".join(cells) + " |")
        out.append("")
        out += _per_task_apgr(doc["pairs"], meta.get("test_tasks", ()))
    out += ["## Per task", ""]
    train_tasks = set(meta.get("train_tasks", []))
    for lam in meta["lams"]:
        caption = "Perf (Cost per 1,000 queries)" if has_cost else "Accuracy"
        out += [f"### λ = {lam:g}: {caption}, mean over seeds", ""]
        out += _per_task_table(rows, lam, train_tasks, has_cost, meta.get("test_tasks", ())) + [""]
    out += ["## Training time and routing latency", "",
            "Fit: seconds per model (routers trained for one λ fit one model per scenario λ). Latency: routing only, "
            "embeddings precomputed; median of several runs on this machine.", "",
            "| Router | fit s (mean ± std) | batch ms/query | single query ms |", "|---|---:|---:|---:|"]
    for router, t in doc["timing"].items():
        batch = f"{t['batch_ms_per_query']:.4f}" if "batch_ms_per_query" in t else "–"
        single = f"{t['single_ms']:.2f}" if "single_ms" in t else "–"
        out.append(f"| {router} | {_mean_std(t['fit_seconds'], 2)} | {batch} | {single} |")
    if "encoder_latency" in meta:
        e = meta["encoder_latency"]
        out += ["", f"Encoder (`{meta['encoder']['name']}`, uncached): {e['batch_ms_per_query']:.2f} ms per query in a "
                f"batch of {e['batch_size']}, {e['single_ms']:.1f} ms for one query."]
    if figures:
        out += ["", "## Figures", ""] + [f"![{title}]({path})" for title, path in figures.items()] + [""]
    out += ["## Provenance", "", "| | |", "|---|---|"]
    for key in ("git_commit", "git_dirty", "data", "data_sha256", "data_fingerprint", "command", "started_utc"):
        out.append(f"| {key} | `{meta.get(key)}` |")
    if meta.get("cost"):
        out.append(f"| cost | {meta['cost']} |")
    if meta.get("encoder"):
        enc = meta["encoder"]
        how = ", ".join(str(enc[k]) for k in ("precision", "backend") if enc.get(k))
        out.append(f"| encoder | `{enc.get('name')}` ({enc.get('dim')}-d, {enc.get('pooling')} pooling"
                   f"{', ' + how if how else ''}) |")
    machine = meta["machine"]
    out.append(f"| machine | {machine['platform']}, {machine['processor']}, {machine['cpu_count']} CPUs, "
               f"{machine['torch_threads']} torch threads |")
    out.append("| versions | " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + " |")
    return "\n".join(out) + "\n"


def _routers_in_order(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["router"] for r in rows))


def _most_expensive(doc: dict[str, Any]) -> str:
    return str(doc["meta"].get("most_expensive_llm"))


def write_bench(doc: dict[str, Any], out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.json``, ``<name>.md`` and the figures (``<name>_*.png``) into ``out_dir``."""
    from radialrouter.evaluation.report import plot_collapse, plot_perf_vs_cost, plot_score_vs_lam, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    first = doc["meta"]["seeds"][0]
    first_sweeps = {r: [x for x in rows if x["seed"] == first] for r, rows in doc["sweeps"].items()}
    if first_sweeps:
        title = f"{name} (seed {first})"
        if plot_score_vs_lam(first_sweeps, out_dir / f"{name}_score_vs_lam.png", title=title):
            figures["Score against λ"] = f"{name}_score_vs_lam.png"
        singles = {llm: (m["cost"], m["perf"]) for llm, m in doc["meta"].get("single_llms", {}).items()}
        if plot_perf_vs_cost(first_sweeps, out_dir / f"{name}_perf_vs_cost.png", title=title, points=singles):
            figures["Perf against Cost"] = f"{name}_perf_vs_cost.png"
        if plot_collapse(first_sweeps, out_dir / f"{name}_collapse.png", by_budget=doc["budget"] or None,
                         expensive_llm=_most_expensive(doc), title=title):
            figures["Routing collapse"] = f"{name}_collapse.png"
    json_path = write_json(out_dir / f"{name}.json", doc["results"], doc["meta"],
                           **{k: v for k, v in doc.items() if k not in {"results", "meta"}})
    md_path = out_dir / f"{name}.md"
    md_path.write_text(bench_markdown(doc, name, figures))
    return json_path, md_path
