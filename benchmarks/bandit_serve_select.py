"""Which serving settings should `bandit_replay.py` default to? Chosen on a separate validation data set,
llmrouter9, by the Score served while learning — the criterion of the served-Score target — never on
routerbench3's traffic or test split.

    python benchmarks/bandit_serve_select.py [--seeds 0,1,2,3,4] [--protocol llmrouter9|stream]

Validation protocol ``llmrouter9`` (the default): per seed, each candidate runs the replay's protocol
(`bandit_replay.run_replay`, the candidate's options) with llmrouter9's training split as the traffic — 9 other
LLMs, 14 other tasks, never read by the replay — exactly as `bandit_replay.py` replays a data set other than
routerbench3: `traffic_order` on llmrouter9's 5,608 training queries (the first 2,000 of the seed's shuffle are the
traffic, the next 200 the warm-start queries), and, since no shipped router knows llmrouter9's pool, the frozen
router that serves the first 500 queries is the learner trained on those 200 warm-start queries (as for
mmlupro29). llmrouter9 logs quality only: its costs are estimates (`bandit_replay.PRICED`: list prices from
prices.json × prompt tokens counted with the bundled MiniLM WordPiece tokenizer + 256 output tokens per query).
Two numbers per candidate, mean ± s.e. over seeds: (i) the true Score (λ = 0.02) of what it served on the 2,000
llmrouter9 traffic queries — the rule's served criterion — and (ii) the bandit-fed learner's final Score (after
2,000 logged queries) on llmrouter9's test split (500 queries) — the rule's guard (serving less exploratively can
starve the learner of labels, which the final-gap target measures). llmrouter9 is only validation here, so its
test split may be read. No routerbench3 query informs the choice: a setting that transfers from another data set
is the strict form of "chosen on validation data only". VW SquareCB's choice (b) in `bandit_vw.py` is made on the
very same llmrouter9 traffic (its settings route it from the first query).

Why this protocol: it replaced (after the traffic figures of the ridge server had been seen) the validation stream
``stream`` (`bandit_replay.validation_stream`: per seed, 2,000 draws with replacement from routerbench3's 200
warm-start queries, guard on those 200 queries). There each query recurs ~10×, which rewards memorising (every
candidate served 0.78-0.82 on it) and the guard was measured on 200 queries only. ``--protocol stream`` still runs
it (results: bandit_serve_select_stream.{json,md}, the choice it made: γ = 30·√t, prior 0, the learner serving).

Beside the validation figures, as a reference the rule never reads, the Score each candidate served on
routerbench3's traffic itself (all 2,000 queries, and 501-2,000).
Candidates: SquareCB's γ scale (γ = scale · √t) and the warm start from the frozen router (``--prior n0``: served
scores blend the frozen router's and the learner's, the learner's weight t / (t + n0), `bandit_replay.PriorBlend`;
0: the learner alone), and a warm start of the learner itself (``--impute-frozen``: the log's unrevealed quality
cells filled from the frozen router's implied quality differences to the called LLM), and serving by a per-LLM
ridge regression refitted every 100 or 250 logged queries (``--server ridge``: from query 100 or 250, or from query
500 as the learner, the frozen router before), the learner still trained on the log for the final gap; the
ridge's own settings (``alpha`` 10, ``pessimism`` 1, `bandit_replay.SERVE_RIDGE`) were chosen first by its
bandit-fed Score on routerbench3's validation queries (seeds 0-2, ridge serving itself every 100 at γ = 30·√t:
alpha 10 / 30 / 100 × pessimism 0 / 1 / 2 gave 0.710 / 0.735 / 0.720, 0.697 / 0.726 / 0.713, 0.706 / 0.702 /
0.689; alpha 0.1 and 1 without pessimism 0.700 and 0.709) and are kept. Added with the held-out-fold guard
(declared before it ran): SquareCB with a slower-growing γ = scale · t^0.25 (scales 30, 100, 300), the ridge
serving every 250 from query 500.

In-domain learning guard (the held-out-fold guard, `heldout_guard`; added for issue #26): the llmrouter9 guard
hardly discriminates (every learner 0.52-0.54 on llmrouter9's test split, within noise) and reads 2,000 logged
queries only, and it let through a setting whose `mlp` stalls ~0.03 below full information on routerbench3 at
2,000 and 10,000. So a second guard runs in routerbench3's own domain without reading its test split or anything
served on its traffic: per seed, routerbench3's training split less the seed's warm-start queries (`traffic_order`'s
pool) is split into a held-out fold (fold ``seed % 5`` of a fixed seeded 5-fold partition of the training split,
restricted to the pool: ~420 queries, disjoint across seeds 0-4) and the rest; the rest, replayed in passes (a
fresh permutation each), is the traffic of 10,000 queries; `run_replay` runs the candidate (exploring variant, no
OPE) with the held-out fold as its "test" and the shipped router (`load_default()`) as the frozen router that serves
the first 500 queries, as in the replay. That router was trained on the whole training split, held-out fold
included; it only serves the first 500 queries and does so for every candidate alike. Per candidate: the bandit-fed
learner's held-out Score and its gap to the full-information learner on the same traffic (computed once per seed,
`full_information_scores`: it depends on the seed only) at 2,000 and at 10,000 logged queries, mean ± s.e. over
seeds. This guard was designed after the previous round's routerbench3 test figures had been seen (the stall at
2,000 and 10,000); the choice itself reads no test figure.

Rule (`choose_serving`: `bandit_explore_select.choose` with several guard keys, `GUARDS`): the best mean Score
served on llmrouter9's traffic among the candidates that pass every guard — (i) the bandit-fed learner's Score on
llmrouter9's test split within one standard error of the best candidate's; (ii) the held-out-fold gap at 2,000 and
(iii) at 10,000 logged queries each within one standard error of the smallest gap at that size (the standard error
of the best candidate's figure). A candidate without the held-out-fold figures does not pass (ii) and (iii), so it
cannot be chosen. Should no candidate pass all three, the held-out-fold guards alone apply (`HELDOUT_GUARDS`);
should none pass both of those, one guard on the held-out-fold gap averaged over the two sizes (per seed, then mean
± s.e. over seeds; `MEAN_GAP_GUARD`), which the best candidate always passes. (That last fallback was added after a
first guard run stopped — no candidate among the first ten passed both held-out-fold guards, and the first rule
had no answer for it — with those ten candidates' held-out-fold figures seen, no routerbench3 test figure.)
The held-out-fold figures of the ``--impute-frozen`` candidates are not read (`heldout_guard_leaks`): their learner
trains on labels implied by the shipped router, which was trained on the held-out fold, so they leak it; they
cannot be chosen. (Also decided after the figures had been seen: under the rule as first declared the
``--impute-frozen`` candidate at γ = 100·√t, whose figures were among the best, would have been chosen.)
Before issue #26 the rule was (i) alone.

``--learners`` (issue #26): the held-out-fold guard alone, for the bandit-fed learner instead of the serving
settings — `LEARNER_CANDIDATES` (the mlp, per-LLM ridges at alpha 1 / 10 / 100, a ridge-then-mlp switch at 5,000
logged queries) at the chosen serving settings, seeds 0-9 — and `LEARNER_RULE` (`choose_learner`: paired by seed
against the current learner; declared before any figure). Writes bandit_serve_select_learner.{json,md}.
``--floors`` (issue #26): the current serving settings against the same with a uniform exploration floor
(`FLOOR_CANDIDATES`, ``--floor`` 0.05 / 0.1 / 0.2): llmrouter9's served Score (seeds 0-4, VW (b)'s traffic) and the
held-out-fold guard (seeds 0-9), and `FLOOR_RULE` (`choose_floor`: paired by seed against the current settings, and
not serving below VW SquareCB (b) on llmrouter9; declared before any figure). Writes
bandit_serve_select_floor.{json,md}.
Writes benchmarks/results/bandit_serve_select.{json,md} (``--protocol stream``: bandit_serve_select_stream.*;
``--merge``: adds the candidates run to the rows already there for the same protocol; ``--guard-only``: keeps the
existing llmrouter9 rows of the candidates run and adds the held-out-fold guard; results are written after every
candidate, so an interrupted run resumes with those; the header's time and load averages are those of the last
run, each row has its own).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The rule (bandit_explore_select's, with several guards): the best served Score on the validation traffic among
# the candidates within one s.e. of the best on every guard (serving must not cost the learning the gap targets
# measure).
from bandit_explore_select import choose
from bandit_replay import (
    EXPLORING,
    LEARNER_NAME,
    LEARNER_PRESETS,
    RESULTS,
    VALIDATION,
    learner,
    learner_name,
    load,
    replay_parser,
    run_replay,
    std_err,
    test_score,
    traffic_order,
    validation_traffic,
)
from bandit_replay import validation_stream as stream_rows

from radialrouter.routers.radial import load_default

#: name -> replay options of the candidate. Retraining stays every 500 (a cadence of 100 served about as well on
#: the routerbench3 validation stream (``--protocol stream``) in a first look, 0.8097 ± 0.0094 against
#: 0.8081 ± 0.0072 at γ = 30·√t, prior 0, but costs five times the retrains, which the 10,000-query learning
#: curve cannot afford here); ``--deploy ope`` served below
#: ``always`` on that stream at every setting tried in a first look (γ 3-100·√t, prior 0 or 1,000: 0.760-0.804
#: against 0.764-0.816), so it is not among the candidates.
CANDIDATES: dict[str, list[str]] = {
    f"squarecb γ = {g:g}·√t, prior {n:g}": ["--gamma-scale", str(g), "--prior", str(n)]
    for n in (0.0, 250.0, 1000.0, 4000.0) for g in (10.0, 30.0, 100.0, 300.0)
} | {f"squarecb γ = {g:g}·√t, learner warm-started from the shipped router's implied labels":
     ["--gamma-scale", str(g), "--impute-frozen"] for g in (10.0, 30.0, 100.0)} | {
    f"squarecb γ = {g:g}·√t, served by a ridge refitted every {k}": ["--gamma-scale", str(g), "--server", "ridge",
                                                                       "--serve-every", str(k), "--serve-from", str(k)]
    for k in (100, 250) for g in (10.0, 30.0, 100.0)} | {
    f"squarecb γ = {g:g}·√t, served by a ridge refitted every {k} from query 500": [
        "--gamma-scale", str(g), "--server", "ridge", "--serve-every", str(k), "--serve-from", "500"]
    for k in (100, 250) for g in (30.0, 100.0)} | {
    # added with the held-out-fold guard (declared before it was run): a slower-growing γ, so that exploration
    # fades less by 10,000 logged queries (γ = 300 / 1,000 / 3,000 there, against 10,000 at 100·√t)
    f"squarecb γ = {g:g}·t^0.25, served by a ridge refitted every 250 from query 500": [
        "--gamma-scale", str(g), "--gamma-exponent", "0.25", "--server", "ridge", "--serve-every", "250",
        "--serve-from", "500"]
    for g in (30.0, 100.0, 300.0)}
for _options in CANDIDATES.values():  # the rows measured before the ridge server existed: the learner serves
    if "--server" not in _options:  # (explicit, as the replay's default is now the ridge chosen here)
        _options += ["--server", "learner"]


#: the held-out-fold guard (`heldout_guard`): logged-query counts at which the gap to full information is read,
#: and the fixed partition of routerbench3's training split into folds
GUARD_SIZES = (2000, 10000)
GUARD_FOLDS = 5
HELDOUT_GUARD = ("per seed, routerbench3's training split less the seed's 200 warm-start queries, less a held-out "
                 "fold (fold seed mod 5 of a fixed seeded 5-fold partition of the training split, ~420 queries), "
                 "replayed as traffic in passes (a fresh permutation each) to 10,000 queries under the candidate's "
                 "options, the shipped router serving the first 500 (it was trained on the whole training split, "
                 "held-out fold included; it serves every candidate alike); gap: the full-information learner's "
                 "Score on the held-out fold minus the bandit-fed learner's, after 2,000 and 10,000 logged queries; "
                 "routerbench3's test split and what was served are not read")
#: the rule's guards, (key, higher is better): the llmrouter9 guard and the held-out-fold gaps at 2,000 and 10,000
HELDOUT_GUARDS: tuple[tuple[str, bool], ...] = tuple((f"guard_gap_{n}", False) for n in GUARD_SIZES)
GUARDS: tuple[tuple[str, bool], ...] = (("val_bandit", True),) + HELDOUT_GUARDS
#: the last fallback: the held-out-fold gap averaged over `GUARD_SIZES` (per seed), within one s.e. of the smallest
MEAN_GAP_GUARD: tuple[tuple[str, bool], ...] = (("guard_gap_mean", False),)


def add_mean_gap(row: dict) -> dict:
    """``guard_gap_mean`` (± s.e., per seed) of a row with held-out-fold figures: the gap averaged over
    `GUARD_SIZES` per seed, then over seeds."""
    if all(f"guard_gap_{n}_per_seed" in row for n in GUARD_SIZES):
        per_seed = np.mean([row[f"guard_gap_{n}_per_seed"] for n in GUARD_SIZES], axis=0).tolist()
        row |= {"guard_gap_mean": float(np.mean(per_seed)), "guard_gap_mean_se": std_err(per_seed),
                "guard_gap_mean_per_seed": per_seed}
    return row


def guard_split(n_train: int, n_warm: int, seed: int, n_traffic: int, protocol: int = 2000
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(traffic rows, held-out rows, warm-start rows) of a seed for the held-out-fold guard, on routerbench3's
    training split only. The pool is `traffic_order`'s (the training split less the seed's warm-start queries, in
    that seed's order); the held-out fold is fold ``seed % GUARD_FOLDS`` of a fixed seeded partition of the training
    split (so seeds 0-4 hold out disjoint folds), restricted to the pool (~20 %); the rest of the pool is the
    traffic, in the pool's order, replayed in further passes (each a fresh permutation) up to ``n_traffic``."""
    pool, warm = traffic_order(n_train, n_train - n_warm, n_warm, seed, protocol)
    fold = np.random.default_rng(6000).permutation(n_train) % GUARD_FOLDS  # each training row's fold
    held_out = fold[pool] == seed % GUARD_FOLDS
    rest, held = pool[~held_out], pool[held_out]
    rng, parts, have = np.random.default_rng(7000 + seed), [rest], len(rest)
    while have < n_traffic:
        parts.append(rng.permutation(rest))
        have += len(rest)
    return np.concatenate(parts)[:n_traffic], held, warm


def full_information_scores(traffic, test, seed: int, steps: int, sizes: tuple[int, ...] = GUARD_SIZES
                            ) -> dict[int, float]:
    """The full-information learner's Score on ``test`` after the first n queries of ``traffic``, per n in
    ``sizes``: what `run_replay`'s "full information" variant fits at that checkpoint (the learner on every LLM's
    label of those queries, same steps and seed). It depends on the seed's traffic only, not on the candidate's
    serving settings, so the guard computes it once per seed."""
    return {n: test_score(learner(steps, seed).fit(traffic.subset(np.arange(n))), test) for n in sizes}


def heldout_guard(train, frozen, seed: int, replay, full: dict[int, float] | None = None) -> dict:
    """One seed of the held-out-fold guard for a candidate (``replay``: its options): the replay's protocol
    (`run_replay`, exploring variant, no OPE) on the guard's traffic (`guard_split`: routerbench3's training split
    less the seed's warm-start queries and held-out fold, replayed in passes to ``max(GUARD_SIZES)`` queries), the
    frozen router ``frozen`` (the shipped router, as in the replay), the bandit-fed learner scored on the held-out
    fold at each size; ``full``: the seed's full-information Scores (`full_information_scores`), computed when None.
    Neither routerbench3's test split nor anything served is read."""
    rows, held, warm_rows = guard_split(len(train), replay.warm, seed, max(GUARD_SIZES))
    traffic, test = train.subset(rows), train.subset(held)
    args = argparse.Namespace(**{**vars(replay), "boot": 0, "traffic": max(GUARD_SIZES)})
    if full is None:
        full = full_information_scores(traffic, test, seed, replay.steps)
    r = run_replay("routerbench3 (held-out fold of its training split)", traffic, train.subset(warm_rows), test,
                   frozen, seed, args, variants=(EXPLORING,), learn_at=GUARD_SIZES)
    bandit = {n: r["curves"][EXPLORING][r["checkpoints"].index(n)] for n in GUARD_SIZES}
    return {"full": full, "bandit": bandit, "gap": {n: full[n] - bandit[n] for n in GUARD_SIZES},
            "heldout_queries": len(held)}


PROTOCOLS = {
    "llmrouter9": "per seed, the replay's protocol on llmrouter9's training split as traffic (2,000 queries, the "
                  "next 200 of the seed's shuffle the warm-start queries; the frozen router: the learner trained on "
                  "them); served: the true Score (λ = 0.02) served on that traffic; guard: the bandit-fed learner's "
                  "Score on llmrouter9's test split after 2,000 logged queries; llmrouter9's costs are estimates "
                  "(list prices from prices.json × prompt tokens counted with the bundled MiniLM WordPiece "
                  "tokenizer + 256 output tokens); the same traffic as VW's (b)",
    "stream": "per seed, 2,000 draws with replacement from routerbench3's 200 warm-start queries (full "
              "information, outside the traffic and the test split); guard: the bandit-fed learner trained on the "
              "candidate's log of the traffic, scored on those 200 queries",
}


def validate(name: str, options: list[str], seeds: list[int], stream_protocol: bool, reference: bool, train,
             v_train, v_test, embedded) -> dict:
    """A candidate's validation row: what it served on the validation traffic and its bandit-fed learner's
    validation Score (the llmrouter9 guard), plus the reference column (never read by the rule)."""
    replay = replay_parser().parse_args(options)
    replay.boot = 0
    t0, served, served_after, deployed, val_bandit, frozen_served = time.perf_counter(), [], [], [], [], []
    traffic_served, traffic_after = [], []
    for seed in seeds:
        order, warm_rows = traffic_order(len(train), replay.traffic, replay.warm, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if stream_protocol:
                val = train.subset(warm_rows)
                stream = train.subset(stream_rows(warm_rows, replay.traffic, seed))
                r = run_replay("routerbench3", stream, val, None, embedded, seed, replay, variants=(EXPLORING,))
                # learning: the bandit-fed learner trained on the candidate's log of the traffic (its training
                # data) and scored on the validation queries ("test" = val); nothing served there is read
                fit = run_replay("routerbench3", train.subset(order[: replay.traffic]), val, val, embedded, seed,
                                 replay, variants=(EXPLORING,))
                val_bandit.append(fit["curves"][EXPLORING][-1])
            else:
                # the replay's protocol on llmrouter9 (as bandit_replay.main runs a data set other than
                # routerbench3): its traffic, its warm-start queries, the frozen router trained on them
                v_traffic, v_warm = validation_traffic(v_train, replay.traffic, replay.warm, seed)
                v_frozen = learner(replay.steps, seed).fit(v_warm)
                r = run_replay(VALIDATION, v_traffic, v_warm, v_test, v_frozen, seed, replay, variants=(EXPLORING,))
                val_bandit.append(r["curves"][EXPLORING][-1])
                frozen_served.append(r["frozen_served"])
                # reference, not a result (never read by the rule): the candidate on routerbench3's traffic
                fit = None if not reference else run_replay(
                    "routerbench3", train.subset(order[: replay.traffic]), train.subset(warm_rows), None,
                    embedded, seed, replay, variants=(EXPLORING,))
        served.append(r["served_score"][EXPLORING])
        served_after.append(float(np.mean(r["served_blocks"][EXPLORING][1:])))
        deployed.append(r["deployed"][EXPLORING])
        if fit is not None:
            # reference, not a result (never read by the rule): what it served on the traffic itself, all
            # 2,000 queries and queries 501-2,000
            traffic_served.append(fit["served_score"][EXPLORING])
            traffic_after.append(float(np.mean(fit["served_blocks"][EXPLORING][1:])))
    row = {"candidate": name, "options": options, "served": float(np.mean(served)),
           "served_se": std_err(served), "served_per_seed": served,
           "served_after_500": float(np.mean(served_after)), "served_after_500_se": std_err(served_after),
           "deployed_per_seed": deployed,
           "val_bandit": float(np.mean(val_bandit)), "val_bandit_se": std_err(val_bandit),
           "val_bandit_per_seed": val_bandit,
           "seconds": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0]}
    if frozen_served:
        row["frozen_served"] = float(np.mean(frozen_served))
    if traffic_served:
        row |= {"reference_traffic_served": float(np.mean(traffic_served)),
                "reference_traffic_served_se": std_err(traffic_served),
                "reference_traffic_served_after_500": float(np.mean(traffic_after))}
    print(f"{name}: served on validation {row['served']:.4f} ± {row['served_se'] or 0:.4f}, "
          f"bandit-fed validation Score {row['val_bandit']:.4f} ± {row['val_bandit_se'] or 0:.4f} "
          f"({row['seconds']:.0f} s; load {os.getloadavg()[0]:.2f})", flush=True)
    return row


def guard_row(options: list[str], seeds: list[int], train, embedded, full_cache: dict) -> dict:
    """The held-out-fold guard's figures of a candidate (`heldout_guard` per seed), mean ± s.e. over seeds:
    ``guard_gap_{n}`` (full information minus bandit-fed, on the held-out fold, after n logged queries) and
    ``guard_heldout_{n}`` (the bandit-fed learner's held-out Score). ``full_cache`` (str(seed) -> str(n) -> Score):
    the seeds' full-information Scores, filled on first use and reused by every candidate."""
    replay = replay_parser().parse_args(options)
    t0, per_seed = time.perf_counter(), []
    for seed in seeds:
        full = full_cache.get(str(seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = heldout_guard(train, embedded, seed, replay,
                              None if full is None else {int(n): v for n, v in full.items()})
        full_cache[str(seed)] = {str(n): v for n, v in g["full"].items()}
        per_seed.append(g)
    row: dict = {"guard_heldout_queries_per_seed": [g["heldout_queries"] for g in per_seed]}
    for n in GUARD_SIZES:
        gaps, heldout = [g["gap"][n] for g in per_seed], [g["bandit"][n] for g in per_seed]
        row |= {f"guard_gap_{n}": float(np.mean(gaps)), f"guard_gap_{n}_se": std_err(gaps),
                f"guard_gap_{n}_per_seed": gaps, f"guard_heldout_{n}": float(np.mean(heldout)),
                f"guard_heldout_{n}_se": std_err(heldout), f"guard_heldout_{n}_per_seed": heldout}
    row |= {"guard_seeds": ",".join(str(s) for s in seeds), "guard_seconds": round(time.perf_counter() - t0, 1),
            "guard_load": os.getloadavg()[0]}
    return add_mean_gap(row)


#: the learner-at-2,000 candidates (issue #26, ``--learners``; declared before any figure): the chosen serving
#: settings (SquareCB γ = 30·√t, prior 1000, the learner serving) with each bandit-fed learner
#: (`bandit_replay.LEARNER_PRESETS`); the first is the current learner. Why: at 2,000 logged queries (one label per
#: query, 11 LLMs, 128-d embeddings) the mlp's gap stayed above VW's linear learner's; a per-LLM ridge may be the
#: more sample-efficient, the mlp still the better fit at 10,000, hence also a switch between them at 5,000.
LEARNER_SERVING = ["--gamma-scale", "30.0", "--prior", "1000.0", "--server", "learner"]
LEARNER_CANDIDATES: dict[str, list[str]] = {
    learner_name(LEARNER_PRESETS[k]): LEARNER_SERVING + ["--learner", k]
    for k in ("mlp64", "ridge1", "ridge10", "ridge100", "ridge10-then-mlp64-at-5000")}
CURRENT_LEARNER = next(iter(LEARNER_CANDIDATES))
LEARNER_GUARD_SEEDS = "0,1,2,3,4,5,6,7,8,9"
LEARNER_RULE = ("a candidate replaces the current learner only if its held-out-fold gap at 2,000 is below the "
                "current learner's by more than two paired standard errors AND its gap at 10,000 is not above the "
                "current learner's by more than one paired standard error; among such, the smallest gap at 2,000 "
                "(ties: the smaller gap at 10,000, then the candidate listed first); the gap's full-information "
                "reference is the current learner (mlp hidden 64) on every label, for every candidate")


def paired(row: dict, base: dict, n: int) -> tuple[float, float | None]:
    """(mean, s.e.) over seeds of ``row``'s held-out-fold gap at n minus ``base``'s, paired by seed (same traffic
    and fold per seed)."""
    if row.get("guard_seeds") != base.get("guard_seeds"):
        raise ValueError(f"{row['candidate']!r} and {base['candidate']!r} were guarded on different seeds")
    diff = list(np.subtract(row[f"guard_gap_{n}_per_seed"], base[f"guard_gap_{n}_per_seed"]))
    return float(np.mean(diff)), std_err(diff)


def choose_paired(rows: list[dict], current: str, passes: Callable[[dict], bool] = lambda r: True) -> dict:
    """The paired held-out-fold rule shared by `LEARNER_RULE` and `FLOOR_RULE`: adds to each row its paired
    differences to the ``current`` row's held-out-fold gaps (``paired_{n}``, ``paired_{n}_se``) and whether it
    passes (``eligible``: gap at 2,000 below the current one's by more than two paired s.e., at 10,000 not above
    it by more than one, and ``passes``); returns the chosen row — the smallest gap at 2,000 (ties: at 10,000, then
    the first listed) — or the current row when none passes."""
    base = next(r for r in rows if r["candidate"] == current)
    eligible = []
    for r in rows:
        if r is base:
            r["eligible"] = None
            continue
        (d2, se2), (d10, se10) = paired(r, base, 2000), paired(r, base, 10000)
        r |= {"paired_2000": d2, "paired_2000_se": se2, "paired_10000": d10, "paired_10000_se": se10}
        r["eligible"] = bool(se2 is not None and se10 is not None and d2 < -2 * se2 and d10 <= se10 and passes(r))
        if r["eligible"]:
            eligible.append(r)
    return min(eligible, key=lambda r: (r["guard_gap_2000"], r["guard_gap_10000"])) if eligible else base


def choose_learner(rows: list[dict], current: str = CURRENT_LEARNER) -> dict:
    """`LEARNER_RULE` (declared before the learner guard was run): `choose_paired` alone."""
    return choose_paired(rows, current)


def run_paired_guard(args, out: Path, candidates: dict[str, list[str]], what: str,
                     row_of: Callable[[str, list[str], list[int], dict], dict],
                     write_out: Callable[[Path, str, list[dict], dict, Any, float], None]) -> None:
    """The resumable loop of ``--learners`` and ``--floors``: per candidate (or ``--only``) ``row_of(name, options,
    guard seeds, full-information cache)``, written after each (``write_out``); rows of an earlier run on the same
    ``--seeds`` are kept, and ``--only`` reruns those named."""
    load_before, started = os.getloadavg(), time.perf_counter()
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    if old.get("guard_seeds") != args.seeds:
        old = {}
    rows = {r["candidate"]: r for r in old.get("rows", [])}
    full_cache = dict(old.get("guard_full_information") or {})
    only = [n for n in args.only.split(";") if n]
    unknown = set(only) - set(candidates)
    if unknown:
        raise SystemExit(f"--only: not a {what} candidate: {sorted(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    for name, options in candidates.items():
        if (only and name not in only) or (not only and name in rows):
            continue
        r = rows[name] = row_of(name, options, seeds, full_cache)
        print(f"{name}: held-out-fold gap at 2,000 {r['guard_gap_2000']:+.4f} ± {r['guard_gap_2000_se'] or 0:.4f}, "
              f"at 10,000 {r['guard_gap_10000']:+.4f} ± {r['guard_gap_10000_se'] or 0:.4f} "
              f"({r['guard_seconds']:.0f} s; load {os.getloadavg()[0]:.2f})", flush=True)
        write_out(out, args.seeds, list(rows.values()), full_cache, load_before, started)
    write_out(out, args.seeds, list(rows.values()), full_cache, load_before, started)
    print(out.with_suffix(".md").read_text())


def in_order(rows: list[dict], candidates: dict[str, list[str]]) -> tuple[list[dict], bool]:
    """``rows`` in the candidates' declared order, and whether every candidate has its row (a choice is due)."""
    order = list(candidates)
    rows = sorted(rows, key=lambda r: order.index(r["candidate"]) if r["candidate"] in order else len(order))
    return rows, [r["candidate"] for r in rows] == order


def pm(r: dict, key: str) -> str:
    """``r[key] ± r[key_se]`` for the reports (a dash when absent)."""
    return "–" if r.get(key) is None else f"{r[key]:+.4f} ± {r.get(key + '_se') or 0:.4f}"


def passes_cell(r: dict, current: str) -> str:
    """The reports' "passes" column: the current row, or whether the rule let the candidate through."""
    return "current" if r["candidate"] == current else {True: "yes", False: "no", None: ""}[r.get("eligible")]


def outcome(best: dict | None, full_cache: dict, load_before, started: float) -> dict:
    """The .json fields both paired guards end with: the choice (None until every candidate ran), the
    full-information cache, load and time."""
    return {"chosen": None if best is None else best["candidate"],
            "chosen_options": None if best is None else best["options"], "guard_full_information": full_cache,
            "load_average": {"before": load_before, "after": os.getloadavg()}, "cpus": os.cpu_count(),
            "seconds": round(time.perf_counter() - started)}


def full_information_means(full_cache: dict) -> str:
    """The full-information reference's held-out Score per guard size, averaged over seeds (the reports' text)."""
    fi = {n: [f[str(n)] for f in full_cache.values() if str(n) in f] for n in GUARD_SIZES}
    return " and ".join(f"{np.mean(v):.4f} at {n:,}" for n, v in fi.items() if v)


def run_learner_guard(args, train, embedded) -> None:
    """``--learners``: the held-out-fold guard (`guard_row`) for `LEARNER_CANDIDATES` (or ``--only``), seeds
    `LEARNER_GUARD_SEEDS` unless ``--seeds``, resumable (`run_paired_guard`); `choose_learner`; writes
    benchmarks/results/bandit_serve_select_learner.{json,md}."""
    def row_of(name: str, options: list[str], seeds: list[int], full_cache: dict) -> dict:
        return {"candidate": name, "options": options} | guard_row(options, seeds, train, embedded, full_cache)

    run_paired_guard(args, RESULTS / "bandit_serve_select_learner", LEARNER_CANDIDATES, "learner", row_of,
                     write_learners)


def write_learners(out, seeds: str, rows: list[dict], full_cache: dict, load_before, started: float) -> None:
    """The .json and .md of the learner guard so far (the choice once every candidate has its row)."""
    rows, complete = in_order(rows, LEARNER_CANDIDATES)
    best = choose_learner(rows) if complete else None
    result = {"benchmark": "bandit_serve_select --learners", "guard_seeds": seeds, "guard": HELDOUT_GUARD,
              "serving": LEARNER_SERVING, "current": CURRENT_LEARNER, "rule": LEARNER_RULE,
              "full_information_learner": LEARNER_NAME, "rows": rows} | outcome(best, full_cache, load_before, started)

    table = ("| bandit-fed learner (`--learner`) | held-out Score at 2,000 / 10,000 | gap at 2,000 (± s.e.) | gap at "
             "10,000 (± s.e.) | paired vs current at 2,000 | paired vs current at 10,000 | passes | guard s (load) |"
             "\n|---|---:|---:|---:|---:|---:|:---:|---:|\n")
    for r in rows:
        name = f"**{r['candidate']}**" if r is best else r["candidate"]
        passes = passes_cell(r, CURRENT_LEARNER)
        table += (f"| {name} (`{r['options'][-1]}`) | {r['guard_heldout_2000']:.4f} / {r['guard_heldout_10000']:.4f}"
                  f" | {pm(r, 'guard_gap_2000')} | {pm(r, 'guard_gap_10000')} | {pm(r, 'paired_2000')} | "
                  f"{pm(r, 'paired_10000')} | {passes} | {r['guard_seconds']:.0f} ({r['guard_load']:.2f}) |\n")
    text = (f"# Choosing the replay's bandit-fed learner on held-out folds of routerbench3's training split (issue "
            f"#26)\n\nHeld-out-fold guard, seeds {seeds} (fold = seed mod {GUARD_FOLDS}): {HELDOUT_GUARD}. Serving "
            f"for every candidate: `{' '.join(LEARNER_SERVING)}` (the settings chosen in "
            "[bandit_serve_select.md](bandit_serve_select.md)); the candidate is the bandit-fed learner, which also "
            "serves (blended with the shipped router, prior 1000). Gap: the full-information reference "
            f"({LEARNER_NAME}, every label of the same traffic) minus the bandit-fed learner, on the held-out fold; "
            "mean ± s.e. over seeds; paired: the candidate's gap minus the current learner's, per seed. The "
            "full-information reference scored "
            + full_information_means(full_cache)
            + f" (mean over seeds). Machine: {os.cpu_count()} CPUs, shared; load average {load_before[0]:.2f} "
            f"before, {os.getloadavg()[0]:.2f} after the last run; {result['seconds']} s (the last run).\n\n"
            f"{table}\nRule (declared before any figure): {LEARNER_RULE}. "
            + ("Chosen: **" + best["candidate"] + f"** (`--learner {best['options'][-1]}`)." if best is not None
               else "Not every candidate has run yet: no choice.")
            + "\n\nRerun: `python benchmarks/bandit_serve_select.py --learners` (resumes; `--only 'name;name'` "
              "reruns those)\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)


#: the exploration-floor candidates (issue #26, ``--floors``; declared before any figure, commit "#26
#: exploration-floor rule"): the current serving settings (SquareCB γ = 30·√t, prior 1000, the learner serving)
#: and the same with a uniform floor ε mixed into SquareCB's distribution, (1 − ε)·p + ε/K (``--floor``). Why: at
#: this γ SquareCB draws each non-greedy LLM ~0.3-3 % of the time, so at 2,000 logged queries the learner has few
#: labels for most LLMs; a floor buys labels on every LLM at a bounded serving cost.
FLOOR_CANDIDATES: dict[str, list[str]] = {"current: squarecb γ = 30·√t, prior 1000, the learner serving":
                                          list(LEARNER_SERVING)} | {
    f"the same with a uniform floor ε = {e:g}": LEARNER_SERVING + ["--floor", str(e)] for e in (0.05, 0.1, 0.2)}
CURRENT_FLOOR = next(iter(FLOOR_CANDIDATES))
FLOOR_GUARD_SEEDS = "0,1,2,3,4,5,6,7,8,9"
#: llmrouter9's served Score on the seeds VW SquareCB's (b) routed (bandit_vw.py: 0-4), the same traffic
FLOOR_SERVED_SEEDS = "0,1,2,3,4"
FLOOR_SERVED_FALLBACK = 0.02
FLOOR_RULE = ("a candidate replaces the current settings only if its held-out-fold gap at 2,000 is below the current "
              "settings' by more than two paired standard errors, its gap at 10,000 is not above the current "
              "settings' by more than one paired standard error, and its llmrouter9 served score is not below VW "
              "SquareCB (b)'s served score on the same llmrouter9 validation traffic (bandit_vw.py's on-policy grid; "
              "if that figure is not available, not below the current settings' by more than 0.02); among such, the "
              "smallest gap at 2,000 (ties: the smaller gap at 10,000, then the candidate listed first)")


def vw_validation_served() -> dict | None:
    """VW SquareCB's choice (b) served on llmrouter9's validation traffic (bandit_vw.json, the on-policy row:
    ``serving_choice_validation_stream_served`` per seed), or None when bandit_vw.py has not written it."""
    path = RESULTS / "bandit_vw.json"
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    row = next((r for r in d.get("rows", []) if r.get("serving_choice_validation_stream_served")), None)
    if row is None:
        return None
    per_seed = row["serving_choice_validation_stream_served"]
    return {"served": float(np.mean(per_seed)), "served_se": std_err(per_seed), "per_seed": per_seed,
            "setting": row.get("serving_setting"), "seeds": d.get("seeds")}


def choose_floor(rows: list[dict], vw: dict | None, current: str = CURRENT_FLOOR) -> dict:
    """`FLOOR_RULE` (declared before any figure): `choose_paired` plus the served bar — VW (b)'s llmrouter9 served
    Score (``vw``), else the current settings' minus `FLOOR_SERVED_FALLBACK`, stored as ``served_bar``."""
    base = next(r for r in rows if r["candidate"] == current)
    bar = vw["served"] if vw is not None else base["served"] - FLOOR_SERVED_FALLBACK
    for r in rows:
        r["served_bar"] = bar
    return choose_paired(rows, current, lambda r: r["served"] >= bar)


def run_floor_guard(args, train, embedded) -> None:
    """``--floors``: per `FLOOR_CANDIDATES` (or ``--only``), the llmrouter9 validation (`validate`, seeds
    `FLOOR_SERVED_SEEDS`, with the routerbench3-traffic reference the rule never reads) and the held-out-fold guard
    (`guard_row`, seeds `FLOOR_GUARD_SEEDS` unless ``--seeds``), resumable (`run_paired_guard`); `choose_floor`;
    writes benchmarks/results/bandit_serve_select_floor.{json,md}."""
    v_train, v_test = load(VALIDATION, 0, embedded.get_encoder())
    served_seeds = [int(s) for s in FLOOR_SERVED_SEEDS.split(",")]

    def row_of(name: str, options: list[str], seeds: list[int], full_cache: dict) -> dict:
        row = validate(name, options, served_seeds, False, True, train, v_train, v_test, embedded)
        return row | guard_row(options, seeds, train, embedded, full_cache)

    run_paired_guard(args, RESULTS / "bandit_serve_select_floor", FLOOR_CANDIDATES, "floor", row_of, write_floors)


def write_floors(out, seeds: str, rows: list[dict], full_cache: dict, load_before, started: float) -> None:
    """The .json and .md of the floor guard so far (the choice once every candidate has its row)."""
    rows, complete = in_order(rows, FLOOR_CANDIDATES)
    vw = vw_validation_served()
    best = choose_floor(rows, vw) if complete else None
    result = {"benchmark": "bandit_serve_select --floors", "guard_seeds": seeds, "served_seeds": FLOOR_SERVED_SEEDS,
              "guard": HELDOUT_GUARD, "validation": PROTOCOLS["llmrouter9"], "current": CURRENT_FLOOR,
              "rule": FLOOR_RULE, "vw_squarecb_b_validation_served": vw, "learner": LEARNER_NAME,
              "rows": rows} | outcome(best, full_cache, load_before, started)

    table = ("| candidate | served on llmrouter9's traffic (± s.e.) | held-out Score at 2,000 / 10,000 | gap at 2,000 "
             "(± s.e.) | gap at 10,000 (± s.e.) | paired vs current at 2,000 | paired vs current at 10,000 | passes "
             "| s (load) | reference, not read by the rule: served on routerbench3's traffic (± s.e.) |\n"
             "|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|\n")
    for r in rows:
        name = f"**{r['candidate']}**" if r is best else r["candidate"]
        passes = passes_cell(r, CURRENT_FLOOR)
        table += (f"| {name} | {r['served']:.4f} ± {r['served_se'] or 0:.4f} | {r['guard_heldout_2000']:.4f} / "
                  f"{r['guard_heldout_10000']:.4f} | {pm(r, 'guard_gap_2000')} | {pm(r, 'guard_gap_10000')} | "
                  f"{pm(r, 'paired_2000')} | {pm(r, 'paired_10000')} | {passes} | "
                  f"{r['seconds'] + r['guard_seconds']:.0f} ({r['guard_load']:.2f}) | "
                  f"{r['reference_traffic_served']:.4f} ± {r['reference_traffic_served_se'] or 0:.4f} |\n")
    bar = ("VW SquareCB (b) served " + f"{vw['served']:.4f} ± {vw['served_se'] or 0:.4f} on the same llmrouter9 "
           f"traffic (`{vw['setting']}`, seeds {vw['seeds']}, bandit_vw.json)" if vw is not None else
           f"no VW (b) figure: the current settings' served Score minus {FLOOR_SERVED_FALLBACK}")
    text = (f"# An exploration floor for SquareCB (issue #26)\n\nCandidates: the current serving settings "
            f"(`{' '.join(LEARNER_SERVING)}`) and the same with `--floor ε` (logged probabilities "
            "(1 − ε)·p_SquareCB + ε/K, K the LLMs; the learner and OPE read them). Served: llmrouter9 validation, "
            f"seeds {FLOOR_SERVED_SEEDS}: {PROTOCOLS['llmrouter9']}. Held-out-fold guard, seeds {seeds} (fold = "
            f"seed mod {GUARD_FOLDS}): {HELDOUT_GUARD}. Gap: the full-information learner ({LEARNER_NAME}, every "
            "label of the same traffic) minus the bandit-fed learner, on the held-out fold; mean ± s.e. over seeds; "
            "paired: the candidate's gap minus the current settings', per seed. The full-information reference "
            "scored " + full_information_means(full_cache)
            + f" (mean over seeds). Served bar: {bar}. Machine: {os.cpu_count()} CPUs, shared; load average "
            f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after the last run; {result['seconds']} s (the "
            f"last run).\n\n{table}\nRule (declared before any figure): {FLOOR_RULE}. "
            + ("Chosen: **" + best["candidate"] + "**" + (f" (`--floor {best['options'][-1]}`)."
                                                         if "--floor" in best["options"] else " (no floor).")
               if best is not None else "Not every candidate has run yet: no choice.")
            + "\n\nRerun: `python benchmarks/bandit_serve_select.py --floors` (resumes; `--only 'name;name'` reruns "
              "those)\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)


def choose_serving(rows: list[dict]) -> tuple[dict, tuple[tuple[str, bool], ...]]:
    """The rule (declared before the held-out-fold guard was run): `choose` with `GUARDS` — the best mean Score
    served on llmrouter9's traffic among the candidates that pass every guard; if none passes all three, the
    held-out-fold guards alone (`HELDOUT_GUARDS`); if none passes both, the averaged held-out-fold gap
    (`MEAN_GAP_GUARD`). The held-out-fold figures of a candidate whose learner learns from the shipped router
    (`heldout_guard_leaks`) are not read: it neither passes those guards nor sets their bar. Returns the chosen row
    and the guards applied."""
    rows = [add_mean_gap(r) for r in rows]
    views = [r if not heldout_guard_leaks(r["options"]) else
             {k: v for k, v in r.items() if not k.startswith("guard_gap_")} for r in rows]
    for guards in (GUARDS, HELDOUT_GUARDS, MEAN_GAP_GUARD):
        try:
            view = choose(views, guards)
        except ValueError:
            continue
        return rows[next(i for i, v in enumerate(views) if v is view)], guards
    raise ValueError("no candidate has held-out-fold figures")


def heldout_guard_leaks(options: list[str]) -> bool:
    """Whether a candidate's held-out-fold figures leak the held-out fold: ``--impute-frozen`` trains the learner
    on labels implied by the shipped router, which was trained on the whole training split, held-out fold included
    (serving by it, ``--prior``, only changes which LLM's label is logged on the traffic, as in its first 500)."""
    return "--impute-frozen" in options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default=None, help="default: 0-4 (0-9 with --learners or --floors)")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default="llmrouter9",
                        help="validation: llmrouter9's traffic and test split (default), or the older routerbench3 "
                             "validation stream")
    parser.add_argument("--only", default="", help="candidate names separated by ; (default: all)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the routerbench3-traffic reference column (never read by the rule)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other candidates' rows of the existing results of the same protocol")
    parser.add_argument("--guard-only", action="store_true",
                        help="keep the existing llmrouter9 rows of the candidates run (implies --merge) and add only "
                             "the held-out-fold guard")
    parser.add_argument("--no-guard", action="store_true", help="skip the held-out-fold guard")
    parser.add_argument("--learners", action="store_true",
                        help="the held-out-fold guard of the bandit-fed learner candidates (LEARNER_CANDIDATES, the "
                             "chosen serving settings) and the learner rule; writes bandit_serve_select_learner.*")
    parser.add_argument("--floors", action="store_true",
                        help="the exploration-floor candidates (FLOOR_CANDIDATES): llmrouter9 served Score and the "
                             "held-out-fold guard, and the floor rule; writes bandit_serve_select_floor.*")
    args = parser.parse_args()
    args.seeds = args.seeds or (LEARNER_GUARD_SEEDS if args.learners or args.floors else "0,1,2,3,4")
    torch.set_num_threads(1)
    if args.floors:
        embedded = load_default()
        train, _ = load("routerbench3", 0, embedded.get_encoder())
        run_floor_guard(args, train, embedded)
        return
    if args.learners:
        embedded = load_default()
        train, _ = load("routerbench3", 0, embedded.get_encoder())
        run_learner_guard(args, train, embedded)
        return
    load_before, started = os.getloadavg(), time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    stream_protocol = args.protocol == "stream"
    guard = not args.no_guard and not stream_protocol
    if args.guard_only and not guard:
        parser.error("--guard-only needs the held-out-fold guard (llmrouter9 protocol, without --no-guard)")
    out = RESULTS / ("bandit_serve_select_stream" if stream_protocol else "bandit_serve_select")
    embedded = load_default()  # the shipped RadialRouter, explicitly (the bandit replay's frozen router)
    train, _ = load("routerbench3", 0, embedded.get_encoder())
    v_train, v_test = (None, None) if stream_protocol or args.guard_only else load(VALIDATION, 0,
                                                                                   embedded.get_encoder())
    old_path = out.with_suffix(".json")
    old = json.loads(old_path.read_text()) if old_path.is_file() else {}
    if old.get("protocol", "stream") != args.protocol or not (args.merge or args.guard_only):
        old = {}
    rows = {r["candidate"]: r for r in old.get("rows", [])}  # kept (--merge), replaced per candidate run
    full_cache = dict(old.get("guard_full_information") or {}) if old.get("guard_seeds") == args.seeds else {}
    for name, options in CANDIDATES.items():
        if args.only and name not in args.only.split(";"):
            continue
        if args.guard_only:
            if name not in rows:
                if args.only:
                    raise SystemExit(f"--guard-only: no llmrouter9 row for {name!r} to add the guard to")
                print(f"{name}: no llmrouter9 row yet, skipped (run it with --merge)", flush=True)
                continue
            if "guard_gap_2000" in rows[name] and rows[name].get("guard_seeds") == args.seeds and not args.only:
                print(f"{name}: held-out-fold figures already there, kept", flush=True)
                continue
            row = {k: v for k, v in rows[name].items() if not k.startswith("guard_")}
        else:
            row = validate(name, options, seeds, stream_protocol, not args.no_reference, train, v_train, v_test,
                           embedded)
        if guard:
            row |= guard_row(options, seeds, train, embedded, full_cache)
            print(f"{name}: held-out-fold gap at 2,000 {row['guard_gap_2000']:+.4f} ± "
                  f"{row['guard_gap_2000_se'] or 0:.4f}, at 10,000 {row['guard_gap_10000']:+.4f} ± "
                  f"{row['guard_gap_10000_se'] or 0:.4f} ({row['guard_seconds']:.0f} s; load "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
        rows[name] = row
        # written after every candidate, so an interrupted run resumes with --merge / --guard-only
        write(out, args, stream_protocol, list(rows.values()), full_cache, load_before, started)
    write(out, args, stream_protocol, list(rows.values()), full_cache, load_before, started)
    print(out.with_suffix(".md").read_text())


def write(out, args, stream_protocol: bool, rows: list[dict], full_cache: dict, load_before, started: float
          ) -> None:
    """Writes the .json and .md of the results so far."""
    order = list(CANDIDATES)
    rows = sorted(rows, key=lambda r: order.index(r["candidate"]) if r["candidate"] in order else len(order))
    guarded = any("guard_gap_2000" in r for r in rows)
    if stream_protocol or not guarded:
        best, applied = choose(rows), (("val_bandit", True),)
    else:
        best, applied = choose_serving(rows)
    where = "on llmrouter9's traffic" if not stream_protocol else "on the validation stream"
    guard = "on llmrouter9's test split" if not stream_protocol else "on the 200 validation queries"
    rule = (f"best mean Score served {where} among the candidates whose bandit-fed validation Score ({guard}) is "
            "within one standard error of the best")
    if guarded:
        rule = (f"best mean Score served {where} among the candidates that pass every guard: the bandit-fed "
                f"learner's Score {guard} within one standard error of the best, and the held-out-fold gap to full "
                "information (routerbench3's training split) at 2,000 and at 10,000 logged queries each within one "
                "standard error of the smallest at that size; a candidate without the held-out-fold figures does "
                "not pass (if none passes all three: the two held-out-fold guards alone; if none passes both: the "
                "held-out-fold gap averaged over the two sizes, within one standard error of the smallest); the "
                "held-out-fold figures of the --impute-frozen candidates are not read (they leak the fold)")
    result = {"benchmark": "bandit_serve_select", "protocol": args.protocol, "seeds": args.seeds,
              "learner": LEARNER_NAME, "rows": rows, "chosen": best["candidate"], "chosen_options": best["options"],
              "rule": rule, "guards_applied": [k for k, _ in applied],
              "validation": PROTOCOLS[args.protocol],
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "seconds": round(time.perf_counter() - started)}
    if guarded:
        result |= {"guard": HELDOUT_GUARD, "guard_seeds": args.seeds, "guard_full_information": full_cache}
    head = (f"| candidate | served {where} (± s.e.) | served there, queries 501-2,000 | bandit-fed learner's "
            f"Score {guard} (± s.e.) |")
    rule_line = "|---|---:|---:|---:|"
    if guarded:
        head += (" held-out fold: bandit-fed Score at 2,000 / 10,000 | held-out-fold gap at 2,000 (± s.e.) | "
                 "held-out-fold gap at 10,000 (± s.e.) | the two averaged (± s.e.) | guard s (load) |")
        rule_line += "---:|---:|---:|---:|---:|"
    head += " reference, not read by the rule: served on routerbench3's traffic (± s.e.), queries 501-2,000 |"
    table = head + "\n" + rule_line + "---:|\n"

    def reference(r: dict) -> str:
        if "reference_traffic_served" not in r:
            return ""
        return (f"{r['reference_traffic_served']:.4f} ± {r['reference_traffic_served_se'] or 0:.4f}, "
                f"{r['reference_traffic_served_after_500']:.4f}")

    def after(r: dict) -> str:
        if "served_after_500" not in r:
            return ""
        return f"{r['served_after_500']:.4f} ± {r['served_after_500_se'] or 0:.4f}"

    def held(r: dict) -> str:
        if "guard_gap_2000" not in r:
            return " – | – | – | – | – |"
        leak = "not read (leaks the fold): " if heldout_guard_leaks(r["options"]) else ""
        return (f" {leak}{r['guard_heldout_2000']:.4f} / {r['guard_heldout_10000']:.4f} | {r['guard_gap_2000']:+.4f} ± "
                f"{r['guard_gap_2000_se'] or 0:.4f} | {r['guard_gap_10000']:+.4f} ± {r['guard_gap_10000_se'] or 0:.4f}"
                f" | {r['guard_gap_mean']:+.4f} ± {r['guard_gap_mean_se'] or 0:.4f} | {r['guard_seconds']:.0f} "
                f"({r['guard_load']:.2f}) |")

    table += "".join(f"| {'**' + r['candidate'] + '**' if r is best else r['candidate']} | {r['served']:.4f} ± "
                     f"{r['served_se'] or 0:.4f} | {after(r)} | {r['val_bandit']:.4f} ± {r['val_bandit_se'] or 0:.4f}"
                     f" |{held(r) if guarded else ''} {reference(r)} |\n" for r in rows)
    frozen = [r["frozen_served"] for r in rows if "frozen_served" in r]
    note = ("" if not frozen else f" The frozen router alone (the learner trained on the 200 warm-start queries, "
            f"greedy, never retrained) would have served {np.mean(frozen):.4f} on the same llmrouter9 traffic.")
    if guarded:
        note += (f" Held-out-fold guard: {HELDOUT_GUARD}; the full-information learner scored "
                 + full_information_means(full_cache)
                 + f" on the held-out folds (mean over seeds); the guard took "
                 f"{sum(r.get('guard_seconds', 0) for r in rows):.0f} s in all (per candidate in the table, with the "
                 "load average after it). A dash: no held-out-fold figures (cannot be chosen). "
                 "\"Not read\": the learner learns from labels implied by the shipped router (--impute-frozen), "
                 "which was trained on the held-out fold, so its held-out-fold figures are not read by the rule "
                 "(cannot be chosen).")
    title = ("a separate validation data set (llmrouter9)" if not stream_protocol
             else "a validation stream (superseded)")
    applied_note = ("" if not guarded or applied == GUARDS else
                    " No candidate passed all three guards; the held-out-fold guards alone applied."
                    if applied == HELDOUT_GUARDS else " No candidate passed all three guards, nor both held-out-fold "
                    "guards; the averaged held-out-fold gap applied.")
    text = (f"# Choosing the replay's serving settings on {title}\n\nseeds {args.seeds}, "
            f"learner {LEARNER_NAME}, retrained every 500 (the first 500 served by the frozen router). "
            f"Validation: {result['validation']}. Served: mean over seeds ± standard error.{note} Load average "
            f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after the last run; {result['seconds']} s "
            "(the last run; per-row seconds in the .json).\n\n"
            f"{table}\nRule: {result['rule']}.{applied_note} Chosen: **{best['candidate']}** "
            f"(`{' '.join(best['options'])}`).\n\n"
            f"Rerun: `python benchmarks/bandit_serve_select.py{' --protocol stream' if stream_protocol else ''}` "
            "(the held-out-fold guard alone, keeping the llmrouter9 rows: `--guard-only`; some candidates: "
            "`--only 'name;name' --merge`)\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
