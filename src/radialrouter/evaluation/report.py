"""Turn evaluation rows into what people read: a terminal table, JSON, Markdown and PNG plots."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from radialrouter.core.objective import SCENARIO_LABELS

#: Short names of the named trade-offs in table headers.
SHORT = {"performance-first": "PF", "balance": "BA", "cost-first": "CF"}

SCHEMA_VERSION = 1


def _label(lam: float, names: dict[float, str | None] | None = None) -> str:
    """``BA (λ=0.108)`` for a named trade-off (rows carry its name), the paper's label for its λ, else ``λ=…``."""
    name = (names or {}).get(lam)
    if name:
        short = SHORT.get(name, name)
        return short if SCENARIO_LABELS.get(round(lam, 6)) == short else f"{short} (λ={lam:.3g})"
    return SCENARIO_LABELS.get(round(lam, 6), f"λ={lam:g}")


def _fmt(values: list[float], digits: int = 3) -> str:
    """One figure, or mean ± std when several seeds were run."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


#: What tables say about quality-only data (every cost 0), whose one trade-off they show.
QUALITY_ONLY_NOTE = "quality only (no costs): one trade-off, Score = Perf at every λ"


def is_quality_only_rows(rows: list[dict]) -> bool:
    """Whether evaluation rows are those of quality-only data: every row at λ = 0 with cost 0."""
    return bool(rows) and all(r["lam"] == 0 and r["cost"] == 0 for r in rows)


def table_rows(rows: list[dict], lams: list[float] | None = None) -> tuple[list[str], list[list[str]]]:
    """Table 1 layout: one line per router, Perf / Cost / Score per λ (mean ± std over seeds)."""
    lams = lams or sorted({r["lam"] for r in rows})
    grouped: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        grouped[r["router"]][r["lam"]].append(r)
    names = {r["lam"]: r.get("scenario") for r in rows if r.get("scenario")}
    if is_quality_only_rows(rows):  # no trade-off to name: Balance and Cost First do not exist without costs
        names = {0.0: "Quality only"}
    header = ["Router"] + [f"{_label(lam, names)} {k}" for lam in lams for k in ("Perf", "Cost", "Score")]
    body = []
    for router, by_lam in grouped.items():
        line = [router]
        for lam in lams:
            rs = by_lam.get(lam, [])
            line += [_fmt([r[k] for r in rs]) if rs else "–" for k in ("perf", "cost", "score")]
        body.append(line)
    return header, body


def print_table(rows: list[dict], title: str = "", lams: list[float] | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    header, body = table_rows(rows, lams)
    # Router labels and file names are text, not markup ("radial (run[2])" keeps its brackets); cells wrap, never "…".
    caption = "Cost in USD per 1,000 queries; macro average over tasks"
    table = Table(title=escape(title) or None, caption=caption + ("; " + QUALITY_ONLY_NOTE if is_quality_only_rows(rows)
                                                                  else ""))
    for i, h in enumerate(header):
        table.add_column(escape(h), justify="left" if i == 0 else "right", overflow="fold")
    for line in body:
        table.add_row(*map(escape, line))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # logs and pipes: never squeeze the figures
    console.print(table)


def to_markdown(rows: list[dict], title: str = "", lams: list[float] | None = None) -> str:
    header, body = table_rows(rows, lams)
    out = [f"## {title}", ""] if title else []
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    out += ["| " + " | ".join(line) + " |" for line in body]
    out += ["", "Perf: mean quality; Cost: USD per 1,000 queries; Score = Perf − λ·Cost; macro average over tasks"
            + ("; " + QUALITY_ONLY_NOTE if is_quality_only_rows(rows) else "") + "."]
    return "\n".join(out) + "\n"


def per_task_markdown(rows: list[dict]) -> str:
    """Per-task Perf / Cost / Score for each router and λ (first seed's row when several)."""
    seen: set[tuple[str, float]] = set()
    lines = ["| Router | λ | Task | Perf | Cost | Score |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        key = (r["router"], r["lam"])
        if key in seen or "per_task" not in r:
            continue
        seen.add(key)
        for task, m in r["per_task"].items():
            figures = " | ".join(f"{m[k]:.3f}" for k in ("perf", "cost", "score"))
            lines.append(f"| {r['router']} | {r['lam']:g} | {task} | {figures} |")
    return "\n".join(lines) + "\n"


def write_json(path: str | Path, rows: list[dict], meta: dict[str, Any] | None = None, **extra: Any) -> Path:
    """The stable machine-readable form: ``{"schema_version", "meta", "results": [{router, lam, perf, cost,
    score, …}], …}`` with cost in USD per 1,000 queries and macro averages at the top level of each row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema_version": SCHEMA_VERSION, "meta": meta or {}, "results": rows, **extra}
    path.write_text(json.dumps(doc, indent=2, default=_default) + "\n")
    return path


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def plot_score_vs_lam(sweeps: dict[str, list[dict]], path: str | Path, title: str = "") -> Path | None:
    """Score against λ (log scale) for each router's sweep rows. Returns None when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    limits = score_limits(sweeps)
    for i, (name, rows) in enumerate(sweeps.items()):
        rows = sorted(rows, key=lambda r: r["lam"])
        clipped = limits is not None and min(r["score"] for r in rows) < limits[0]
        ax.plot([max(r["lam"], 1e-4) for r in rows], [r["score"] for r in rows], marker=".",
                label=f"{name} (clipped below)" if clipped else name, **_style(i))
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_xscale("log")
    ax.set_xlabel("λ (quality points per USD per 1,000 queries; λ=0 drawn at 1e-4)")
    ax.set_ylabel("Score = Perf − λ·Cost")
    ax.set_title(title or "Score against λ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def score_limits(sweeps: dict[str, list[dict]], reference: tuple[str, ...] = ("random",)) -> tuple[float, float] | None:
    """y-limits that fit the learned routers' Score curves, or None to let matplotlib fit everything. A reference
    curve (random routing, whose Score falls to −3 or lower at large λ) would otherwise squeeze the routers being
    compared into a sliver; it is drawn clipped instead."""
    def is_reference(name: str) -> bool:
        return name.split(" ")[0].lower() in reference

    kept = [r["score"] for name, rows in sweeps.items() if not is_reference(name) for r in rows]
    every = [r["score"] for rows in sweeps.values() for r in rows]
    if not kept or not every or min(every) >= min(kept):
        return None
    low, high = min(kept), max(every)
    pad = 0.05 * max(high - low, 1e-3)
    return low - pad, high + pad


def spread_labels(points: list[tuple[float, float]], min_dx: float = 60.0, min_dy: float = 9.0) -> list[float]:
    """Vertical offsets (display points) for labels at ``points`` (display coordinates) so that no two labels
    closer than ``min_dx`` horizontally sit within ``min_dy`` vertically: greedy, from the bottom up."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0]))
    placed: list[tuple[float, float]] = []
    offsets = [0.0] * len(points)
    for i in order:
        x, y = points[i]
        shift = 0.0
        while any(abs(x - px) < min_dx and abs(y + shift - py) < min_dy for px, py in placed):
            shift += min_dy
        offsets[i] = shift
        placed.append((x, y + shift))
    return offsets


def plot_perf_vs_cost(sweeps: dict[str, list[dict]], path: str | Path, title: str = "",
                      points: dict[str, tuple[float, float]] | None = None) -> Path | None:
    """Perf against Cost: each router's λ-sweep curve (its Pareto front highlighted) plus single points
    (e.g. each LLM alone)."""
    from radialrouter.evaluation.metrics import pareto_front

    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, rows) in enumerate(sweeps.items()):
        costs = np.array([r["cost"] for r in rows])
        perfs = np.array([r["perf"] for r in rows])
        front = pareto_front(costs, perfs)
        line, = ax.plot(costs[front], perfs[front], marker="o", ms=3, label=name, **_style(i))
        ax.scatter(costs, perfs, s=6, color=line.get_color(), alpha=0.4)
    points = points or {}
    for cost, perf in points.values():
        ax.scatter([cost], [perf], marker="x", color="grey")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.autoscale_view()
    # Single-LLM labels often sit on top of each other (similar cost and quality): stack the close ones.
    shown = ax.transData.transform(np.asarray(list(points.values()), dtype=float).reshape(-1, 2))
    offsets = spread_labels([tuple(p) for p in shown.tolist()])
    for (label, (cost, perf)), dy in zip(points.items(), offsets):
        ax.annotate(label.split("/")[-1], (cost, perf), xytext=(3, dy), textcoords="offset points", fontsize=6,
                    color="grey", arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.4} if dy else None)
    ax.set_xlabel("Cost (USD per 1,000 queries)")
    ax.set_ylabel("Perf (mean quality)")
    ax.set_title(title or "Cost–quality trade-off")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_collapse(sweeps: dict[str, list[dict]], path: str | Path, by_budget: dict[str, list[dict]] | None = None,
                  expensive_llm: str = "", title: str = "") -> Path | None:
    """Routing collapse: the share of queries sent to the most expensive LLM against λ (left) and against the
    budget (right: budget-sweep rows when given, else the λ sweep's realised cost). A router that collapses climbs
    to 1 as the budget grows even where cheaper LLMs are as good."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    spend = by_budget or sweeps
    for i, (name, rows) in enumerate(sweeps.items()):
        style = {**_style(i), "marker": ".", "label": name}
        rows = sorted(rows, key=lambda r: r["lam"])
        left.plot([max(r["lam"], 1e-4) for r in rows], [r["most_expensive_share"] for r in rows], **style)
        points = sorted(spend.get(name, []), key=lambda r: r["cost"])
        right.plot([r["cost"] for r in points], [r["most_expensive_share"] for r in points], **style)
    who = expensive_llm.split("/")[-1] or "the most expensive LLM"
    left.set_xscale("log")
    left.set_xlabel("λ (λ=0 drawn at 1e-4)")
    left.set_ylabel(f"share of queries sent to {who}")
    spent = [r["cost"] for rows in spend.values() for r in rows]
    if spent and min(spent) > 0:
        right.set_xscale("log")
    else:
        right.set_xscale("symlog", linthresh=0.1)
        right.set_xlim(left=0)
    right.set_xlabel(("cost at each budget" if by_budget else "cost along the λ sweep") + " (USD per 1,000 queries)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(title or "Routing collapse")
    return _save(fig, path)


def _style(i: int) -> dict[str, str]:
    """Colour and line style of the i-th router: ten colours, then the same colours dashed, so a dozen routers
    stay distinguishable."""
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[i // 10 % 3]}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
