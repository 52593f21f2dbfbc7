"""Which router to ship as the default (issue #23): read the four shared data sets' bench reports and check, per data
set and named trade-off, each candidate default against the best *other* learned router, and the context-aware
ensemble against Task-best.

    radialrouter bench --data ../shared/data/routerbench3.parquet --name routerbench3_ensemble \\
        --routers knn,mlp,mf,equi,radial,graph,ensemble,ensemble+context,auto,oracle,random,best-single,task-best ...
    (the same for routerdc7, llmrouter9 and mmlupro29: see each report's provenance for its exact command)
    python benchmarks/router_choice.py [--reports routerbench3_ensemble,routerdc7_ensemble,...]

Figures are means over each report's seeds of the macro Score on the test split (settings were chosen on validation
only by every router). A candidate "holds" at a data set and trade-off when its mean Score is at least the best
other learned router's minus ``--tolerance`` (0.002, the issue's). Writes benchmarks/results/router_choice.{json,md}
and prints the table.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPORTS = ("routerbench3_ensemble", "routerdc7_ensemble", "llmrouter9_ensemble", "mmlupro29_ensemble")
#: Rows that are not learned routers one can deploy on query text alone.
NOT_LEARNED = {"oracle", "random", "best-single", "task-best"}
CANDIDATES = ("mlp", "ensemble", "auto", "radial")


def mean_scores(doc: dict) -> dict[str, dict[str, tuple[float, float, int]]]:
    """router → scenario → (mean Score, standard error, seeds) over the report's seeds."""
    by: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in doc["results"]:
        by[row["router"]][row.get("scenario") or f"λ={row['lam']:g}"].append(row["score"])
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for router, scenarios in by.items():
        out[router] = {}
        for scenario, values in scenarios.items():
            v = np.asarray(values)
            se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
            out[router][scenario] = (float(v.mean()), se, len(v))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", default=",".join(REPORTS))
    parser.add_argument("--tolerance", type=float, default=0.002)
    args = parser.parse_args()
    checks, table = [], []
    for name in args.reports.split(","):
        path = RESULTS / f"{name}.json"
        if not path.exists():
            print(f"{path}: missing, skipped (run its bench first)")
            continue
        doc = json.loads(path.read_text())
        scores = mean_scores(doc)
        learned = [r for r in scores if r not in NOT_LEARNED and not r.endswith("+context")]
        for scenario in scores["task-best"]:
            row = {"report": name, "scenario": scenario,
                   **{r: round(scores[r][scenario][0], 4) for r in sorted(scores) if scenario in scores[r]}}
            table.append(row)
            for cand in CANDIDATES:
                if cand not in scores:
                    continue
                others = [r for r in learned if r != cand and scenario in scores[r]]
                best = max(others, key=lambda r: scores[r][scenario][0])
                gap = scores[cand][scenario][0] - scores[best][scenario][0]
                checks.append({"report": name, "scenario": scenario, "candidate": cand, "score":
                               round(scores[cand][scenario][0], 4), "best_other": best,
                               "best_other_score": round(scores[best][scenario][0], 4), "gap": round(gap, 4),
                               "holds": bool(gap >= -args.tolerance)})
            if "ensemble+context" in scores:
                gap = scores["ensemble+context"][scenario][0] - scores["task-best"][scenario][0]
                checks.append({"report": name, "scenario": scenario, "candidate": "ensemble+context vs task-best",
                               "score": round(scores["ensemble+context"][scenario][0], 4), "best_other": "task-best",
                               "best_other_score": round(scores["task-best"][scenario][0], 4),
                               "gap": round(gap, 4), "holds": bool(gap >= 0)})
    overall = {}
    for cand in [*CANDIDATES, "ensemble+context vs task-best"]:
        mine = [c for c in checks if c["candidate"] == cand]
        if mine:
            overall[cand] = {"holds": sum(c["holds"] for c in mine), "of": len(mine),
                             "worst_gap": min(c["gap"] for c in mine),
                             "mean_score": round(float(np.mean([c["score"] for c in mine])), 4)}
    RESULTS.joinpath("router_choice.json").write_text(json.dumps(
        {"tolerance": args.tolerance, "checks": checks, "overall": overall, "table": table}, indent=2) + "\n")
    lines = ["# Which router to ship (issue #23)", "",
             f"Per data set and named trade-off: the candidate's mean test Score against the best other learned "
             f"router's (holds when within {args.tolerance}); `ensemble+context` against Task-best (holds when at "
             "least equal). Source: the bench reports " + ", ".join(f"`{r}`" for r in args.reports.split(",")) + ".",
             "", "| candidate | holds | worst gap | mean Score over the cells |", "|---|---:|---:|---:|"]
    lines += [f"| {c} | {o['holds']}/{o['of']} | {o['worst_gap']:+.4f} | {o['mean_score']:.4f} |"
              for c, o in overall.items()]
    lines += ["", "| data | trade-off | candidate | Score | best other | its Score | gap | holds |",
              "|---|---|---|---:|---|---:|---:|---|"]
    lines += [f"| {c['report']} | {c['scenario']} | {c['candidate']} | {c['score']:.4f} | {c['best_other']} | "
              f"{c['best_other_score']:.4f} | {c['gap']:+.4f} | {'yes' if c['holds'] else 'no'} |" for c in checks]
    RESULTS.joinpath("router_choice.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
