"""Pool and budget benchmark on routerbench3: budget calibration, batch budgets, adding/removing LLMs, pool growth.

    python benchmarks/pool.py                      # every part
    python benchmarks/pool.py --parts calibration,batch
    python benchmarks/pool.py --parts add --steps 300

Parts:
* ``calibration`` — calibrate λ on the test prompts (no labels) for several spend and share targets, then check the
  realised spend (true per-query costs of the chosen LLMs) against the stated 95 % interval.
* ``batch`` — `route_batch_budget` on batches of test queries at several budgets against the router's own single λ
  with no more spend: predicted and realised quality.
* ``add`` — hold out one LLM, train RadialRouter on the other 10, add the held-out one from k labelled probe queries
  (train split) and compare Balance / Cost-First Score with the never-saw router (10 LLMs) and a full retrain on
  all 11; time to add against time to retrain.
* ``growth`` — Perf and Score as the pool grows from 1 to 11 LLMs (order: `GROWTH_ORDER`, cheapest first).

Writes benchmarks/results/pool.json and pool.md and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import COST_SCALE
from radialrouter.data import load_dataset, with_validation
from radialrouter.evaluation import summarize
from radialrouter.policy.calibration import CalibrationError, calibrate_lam, route_batch_budget
from radialrouter.routers import Router, make_router

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "routerbench3.parquet"
RESULTS = ROOT / "benchmarks" / "results"
COST_TARGETS = (0.3, 0.5, 1.0, 2.0, 3.0)
SHARE_TARGETS = (("gpt-4-1106-preview", 0.05), ("gpt-4-1106-preview", 0.15), ("mistralai/mistral-7b-chat", 0.3))
HELD_OUT = ("gpt-4-1106-preview", "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat")
PROBE_SIZES = (25, 50, 100, 200)
LAMS = (0.0, 0.02, 0.1)
#: Pool-growth order: by mean cost, cheapest first, so each step adds a pricier (usually stronger) LLM.
GROWTH_ORDER = (
    "mistralai/mistral-7b-chat", "WizardLM/WizardLM-13B-V1.2", "mistralai/mixtral-8x7b-chat",
    "meta/code-llama-instruct-34b-chat", "zero-one-ai/Yi-34B-Chat", "claude-instant-v1", "meta/llama-2-70b-chat",
    "gpt-3.5-turbo-1106", "claude-v1", "claude-v2", "gpt-4-1106-preview",
)


def load() -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 28 known rows with missing quality: excluded, as in the report
        ds = load_dataset(DATA, missing="exclude")
    ds = ds.embed(QueryEncoder(), progress=False)
    return ds, ds.select("train"), ds.select("test")


def md_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- calibration
def part_calibration(train, test, router_names: list[str], steps: int, seed: int) -> tuple[list[dict], str]:
    rows = []
    knn = make_router("knn").fit(train)
    runs = [(name, None) for name in router_names]
    runs += [(name, "knn") for name in router_names if name != "knn" and type(make_router(name)).predict_costs
             is Router.predict_costs]
    for name, cost_source in runs:
        router = fit_router(name, train, None, 0.02, steps, seed)
        costs = None if cost_source is None else knn.predict_costs(test.embeddings)
        choice_cost = test.cost
        targets = [{"target_cost": t} for t in COST_TARGETS] + [{"target_share": {llm: s}} for llm, s in SHARE_TARGETS]
        for target in targets:
            try:
                cal = calibrate_lam(router, test.embeddings, n_boot=1000, costs=costs, **target)
            except CalibrationError as exc:
                rows.append({"router": name, "costs": cost_source or "own", "target": target, "error": str(exc)})
                continue
            chosen = router.predict(test.embeddings, cal.lam)
            j = router.llms_.index(cal.share_llm)
            realised = float(choice_cost[np.arange(len(test)), chosen].mean() * COST_SCALE)
            rows.append({
                "router": name, "costs": cost_source or "own", "target": cal.target, "lam": cal.lam,
                "expected_cost": cal.expected_cost,
                "ci_low": cal.ci_low, "ci_high": cal.ci_high, "realised_cost": realised,
                "cost_inside": cal.ci_low <= realised <= cal.ci_high,
                "share_llm": cal.share_llm, "share": cal.share, "share_ci": list(cal.share_ci),
                "realised_share": float((chosen == j).mean()),
            })
    header = ["router", "costs", "target", "λ", "expected $/1k", "95% CI", "realised $/1k", "inside", "share (LLM)"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["router"], r["costs"], _target_label(r["target"]), "unreachable: " + r["error"][:80]]
                        + [""] * 5)
            continue
        body.append([r["router"], r["costs"], _target_label(r["target"]), round(r["lam"], 5),
                     round(r["expected_cost"], 4), f"{r['ci_low']:.3f}–{r['ci_high']:.3f}",
                     round(r["realised_cost"], 4), "yes" if r["cost_inside"] else "NO",
                     f"{r['share']:.3f} ({r['share_llm'].split('/')[-1]})"])
    summary = []
    for name, cost_source in runs:
        sel = [r for r in rows if r["router"] == name and r["costs"] == (cost_source or "own") and "error" not in r]
        summary.append(f"{name} ({cost_source or 'own'} costs): {sum(r['cost_inside'] for r in sel)}/{len(sel)}")
    text = (f"### Budget calibration on the {len(test)} test prompts (no labels used)\n\n"
            "Costs: `own` = the router's `predict_costs` (kNN: neighbours' per-query costs; RadialRouter: its ridge "
            "head on log cost); `knn` = per-query costs predicted by a kNN router passed as `costs=`.\n\n"
            + md_table(header, body)
            + "\n\nRealised spend inside the stated 95 % interval: " + "; ".join(summary) + ".\n")
    return rows, text


def _target_label(target: dict) -> str:
    """Label of a target as `Calibration.target` records it or as passed to `calibrate_lam`."""
    cost = target.get("cost_per_1k", target.get("target_cost"))
    if cost is not None:
        return f"≤ {cost:g} $/1k"
    (llm, share), = target.get("share", target.get("target_share")).items()
    return f"{share:.0%} {llm.split('/')[-1]}"


# ---------------------------------------------------------------------------------------------- batch budgets
def part_batch(train, test, router_name: str, batch_size: int = 100, seed: int = 0) -> tuple[list[dict], str]:
    router = make_router(router_name).fit(train)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test))
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    rows = []
    for fraction in (0.1, 0.25, 0.5):
        agg = {k: [] for k in ("plan_pred", "single_pred", "plan_true", "single_true", "plan_cost", "single_cost",
                               "budget", "over", "seconds")}
        methods = []
        for idx in batches:
            batch = test.subset(idx)
            costs = router.predict_costs(batch.embeddings)
            budget = float(costs.min(1).sum() + fraction * (costs.max(1).sum() - costs.min(1).sum()))
            start = time.perf_counter()
            plan = route_batch_budget(router, batch.embeddings, budget)
            agg["seconds"].append(time.perf_counter() - start)
            single = router.predict(batch.embeddings, plan.single_lam)
            r = np.arange(len(batch))
            agg["plan_pred"].append(plan.total_quality / len(batch))
            agg["single_pred"].append(plan.single_lam_quality / len(batch))
            agg["plan_true"].append(batch.quality[r, plan.choices].mean())
            agg["single_true"].append(batch.quality[r, single].mean())
            agg["plan_cost"].append(plan.total_cost)
            agg["single_cost"].append(plan.single_lam_cost)
            agg["budget"].append(budget)
            agg["over"].append(plan.total_cost > budget + 1e-12)
            methods.append(plan.method)
        rows.append({
            "router": router_name, "batch_size": batch_size, "n_batches": len(batches), "budget_fraction": fraction,
            **{k: float(np.mean(v)) for k, v in agg.items() if k not in {"over", "seconds"}},
            "batches_over_budget": int(np.sum(agg["over"])), "median_seconds": float(np.median(agg["seconds"])),
            "methods": sorted(set(methods)),
        })
    header = ["budget (fraction of range)", "plan quality pred/true", "single-λ pred/true",
              "plan $ / single $ / budget", "over budget", "median s", "method"]
    body = [[r["budget_fraction"], f"{r['plan_pred']:.3f} / {r['plan_true']:.3f}",
             f"{r['single_pred']:.3f} / {r['single_true']:.3f}",
             f"{r['plan_cost']:.4f} / {r['single_cost']:.4f} / {r['budget']:.4f}",
             f"{r['batches_over_budget']}/{r['n_batches']}", round(r["median_seconds"], 3), ",".join(r["methods"])]
            for r in rows]
    text = (f"### Budgeted batch routing ({router_name}, {len(batches)} batches of {batch_size} test queries)\n\n"
            "Budget = cheapest-per-query cost + fraction × (priciest − cheapest), in USD per batch; quality per "
            "query (predicted by the router / true labels); single-λ = the router's own λ with the most spend "
            "within the budget.\n\n" + md_table(header, body) + "\n")
    return rows, text


# ---------------------------------------------------------------------------------------------- pool changes
def fit_router(name: str, train, val, lam: float, steps: int, seed: int):
    """A router trained for ``lam`` (λ-free routers ignore it) with ``steps`` steps where it has that knob."""
    router = make_router(name)
    params = router.get_params()
    for key, value in (("lam", lam), ("steps", steps), ("seed", seed)):
        if key in params:
            setattr(router, key, value)
    return router.fit(train, val)


def macro_score(router, test, lam: float) -> tuple[float, float, float]:
    """(Perf, Cost per 1k, Score) macro over tasks of the router's choices, on the LLMs it routes to."""
    test = test.select_llms(router.llms_)
    perf, cost = realised(test, router.predict(test.embeddings, lam))
    return perf, cost, perf - lam * cost


def part_add(ds, router_name: str, steps: int, seed: int, probe_seeds: int = 2) -> tuple[list[dict], str]:
    from radialrouter.policy.pool import add_llm, clone

    ds = with_validation(ds, seed=seed)
    train, val, test = ds.select("train"), ds.select("val"), ds.select("test")
    lam_free = not make_router(router_name).lam_at_fit
    rows = []
    full_models: dict[float, tuple] = {}
    for lam in LAMS:
        if lam_free and full_models:  # one λ-conditioned model serves every λ
            full_models[lam] = next(iter(full_models.values()))
            continue
        start = time.perf_counter()
        full = fit_router(router_name, train, val, lam, steps, seed)
        full_s = time.perf_counter() - start
        # A second seed of the full retrain: how much Score moves from training noise alone.
        full_models[lam] = (full, full_s, fit_router(router_name, train, val, lam, steps, seed + 1))
    never_models: dict[tuple, tuple] = {}
    added: dict[tuple, object] = {}
    for held in HELD_OUT:
        rest = [llm for llm in ds.llms if llm != held]
        for lam in LAMS:
            key = (held, None if lam_free else lam)
            if key not in never_models:
                start = time.perf_counter()
                never = fit_router(router_name, train.select_llms(rest), val.select_llms(rest), lam, steps, seed)
                never_models[key] = (never, time.perf_counter() - start)
            never, never_s = never_models[key]
            full, full_s, full_b = full_models[lam]
            s_never, s_full, s_full_b = (macro_score(r, test, lam) for r in (never, full, full_b))
            gain, noise = s_full[2] - s_never[2], abs(s_full[2] - s_full_b[2])
            j = full.llms_.index(held)
            row = {"lam": lam, "held_out": held, "never": s_never, "full": s_full, "full_seed2": s_full_b,
                   "seed_noise": noise, "full_share": float((full.predict(test.embeddings, lam) == j).mean()),
                   "retrain_seconds": full_s, "added": {}}
            for k in PROBE_SIZES:
                scores, secs, shares = [], [], []
                for ps in range(probe_seeds):
                    akey = (*key, k, ps)
                    if akey not in added:  # a λ-conditioned router is grown once and scored at every λ
                        pick = np.random.default_rng(1000 * ps + k).choice(len(train), k, replace=False)
                        added[akey] = add_llm(clone(never), held, train.subset(pick), seed=seed)
                    router = added[akey]
                    secs.append(router.training_["pool_changes"][-1]["seconds"])
                    scores.append(macro_score(router, test, lam))
                    shares.append(float((router.predict(test.embeddings, lam) == len(router.llms_) - 1).mean()))
                mean = np.mean(scores, axis=0).tolist()
                meaningful = gain > max(2 * noise, 0.003)
                row["added"][k] = {"perf": mean[0], "cost": mean[1], "score": mean[2],
                                   "score_std": float(np.std([s[2] for s in scores])), "share": float(np.mean(shares)),
                                   "recovery": (mean[2] - s_never[2]) / gain if meaningful else None,
                                   "median_seconds": float(np.median(secs))}
            rows.append(row)
            print(f"λ={lam} held-out {held}: never {s_never[2]:.4f} full {s_full[2]:.4f} (±{noise:.4f}) "
                  + " ".join(f"k={k}:{v['score']:.4f}" for k, v in row["added"].items()), flush=True)
    header = ["λ", "held-out LLM", "never-saw", "full retrain (seed 2)", "full: share"] + [
        f"add k={k}" for k in PROBE_SIZES] + ["add k=100: share", "recovery @100", "add s / retrain s"]
    body = []
    for r in rows:
        rec = r["added"][100]["recovery"]
        body.append([r["lam"], r["held_out"].split("/")[-1], round(r["never"][2], 4),
                     f"{r['full'][2]:.4f} ({r['full_seed2'][2]:.4f})", f"{r['full_share']:.0%}"]
                    + [f"{r['added'][k]['score']:.4f} ± {r['added'][k]['score_std']:.4f}" for k in PROBE_SIZES]
                    + [f"{r['added'][100]['share']:.0%}", "n/a (within seed noise)" if rec is None else f"{rec:.0%}",
                       f"{r['added'][100]['median_seconds']:.1f} / {r['retrain_seconds']:.1f}"])
    text = (f"### Adding an LLM to a trained {router_name} router (macro Score on {len(test)} test queries)\n\n"
            f"Never-saw: trained on the other 10 LLMs, routes among them. Full retrain: trained on all 11 (in "
            f"brackets the same with the next seed: the training-noise scale). Add k: the never-saw router plus the "
            f"held-out LLM learned from k probe queries of the train split (only its embedding row is trained; mean ± "
            f"std over {probe_seeds} probe draws). Share: the held-out LLM's share of test calls. Recovery = (add − "
            f"never) / (full − never) at k = 100, shown only where full − never exceeds twice the seed noise (and "
            f"0.003). {steps} training steps, seed {seed}.\n\n" + md_table(header, body) + "\n")
    return rows, text


def part_growth(ds, router_name: str, steps: int, seed: int) -> tuple[list[dict], str]:
    ds = with_validation(ds, seed=seed)
    train, val, test = ds.select("train"), ds.select("val"), ds.select("test")
    rows = []
    for size in range(1, len(GROWTH_ORDER) + 1):
        pool = list(GROWTH_ORDER[:size])
        row = {"size": size, "added": pool[-1]}
        router = None
        for lam in LAMS:
            if size == 1:
                perf, cost = realised(test.select_llms(pool), np.zeros(len(test), dtype=int))
                row[lam] = (perf, cost, perf - lam * cost)
                continue
            if router is None or router.lam_at_fit:
                router = fit_router(router_name, train.select_llms(pool), val.select_llms(pool), lam, steps, seed)
            row[lam] = macro_score(router, test, lam)
        rows.append(row)
        print(f"pool {size}: " + " ".join(f"λ={lam}: {row[lam][2]:.4f}" for lam in LAMS), flush=True)
    header = ["LLMs", "added"] + [f"{lab} {k}" for lam, lab in zip(LAMS, ("PF", "BA", "CF")) for k in ("Perf", "Score")]
    body = [[r["size"], r["added"].split("/")[-1]] + [round(r[lam][i], 4) for lam in LAMS for i in (0, 2)]
            for r in rows]
    text = (f"### Pool growth ({router_name}, macro over tasks, {len(test)} test queries)\n\nLLMs are added cheapest "
            f"first (`GROWTH_ORDER`); a pool of one LLM always calls it.\n\n" + md_table(header, body) + "\n")
    return [{"size": r["size"], "added": r["added"], **{str(lam): r[lam] for lam in LAMS}} for r in rows], text


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="calibration,batch,add,growth")
    parser.add_argument("--routers", default="knn,radial", help="Routers for the calibration part.")
    parser.add_argument("--router", default="radial", help="Router with pool hooks for the add and growth parts.")
    parser.add_argument("--steps", type=int, default=300, help="RadialRouter training steps (add, growth).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for these "
                        "small models on a shared CPU).")
    parser.add_argument("--out", default=str(RESULTS / "pool"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    ds, train, test = load()
    results: dict = {"data": str(DATA.name), "data_fingerprint": ds.fingerprint(), "n_train": len(train),
                     "n_test": len(test), "seed": args.seed}
    texts = []
    if "calibration" in parts:
        results["calibration"], text = part_calibration(train, test, args.routers.split(","), args.steps, args.seed)
        texts.append(text)
        print(text)
    if "batch" in parts:
        results["batch"], text = part_batch(train, test, args.routers.split(",")[0], seed=args.seed)
        texts.append(text)
        print(text)
    if "add" in parts:
        results["add"], text = part_add(ds, args.router, args.steps, args.seed)
        texts.append(text)
        print(text)
    if "growth" in parts:
        results["growth"], text = part_growth(ds, args.router, args.steps, args.seed)
        texts.append(text)
        print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text("# Pool and budgets (routerbench3)\n\n" + "\n".join(texts))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def realised(data, choice) -> tuple[float, float]:
    """Macro Perf and Cost (USD per 1,000 queries) of one choice per query."""
    r = np.arange(len(data))
    m = summarize(data.quality[r, choice], data.cost[r, choice], data.tasks, 0.0)["macro"]
    return m.perf, m.cost


if __name__ == "__main__":
    main()
