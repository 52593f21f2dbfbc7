"""The package layers (docs/architecture.md) stay as drawn: a module imports only its own package and lower layers,
and no modules import each other, directly or in a circle.

Every ``import`` / ``from ... import`` in ``src/radialrouter`` counts, at module level or inside a function; only
imports under ``if TYPE_CHECKING:`` are left out (they never run: annotations may name a type of a higher layer or of
a module that imports this one). ``from package import name`` counts as an import of the submodule ``package.name``
when one exists, else of the package's ``__init__``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "radialrouter"

#: Package → layer. A module may import its own package and packages of a strictly lower layer.
LAYERS = {"core": 0, "data": 1, "routers": 2, "evaluation": 3, "policy": 3, "ledger": 3, "learning": 4, "batch": 4,
          "serve": 5, "cli": 6}
TOP_LEVEL = {"radialrouter", "radialrouter._lazy", "radialrouter.__main__"}  # the lazy public API and the entry point


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, modules: set[str]) -> set[str]:
    """The radialrouter modules ``path`` imports at run time (module level or in a function)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m.startswith("radialrouter")}


def graph() -> dict[str, set[str]]:
    paths = sorted(SRC.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    edges = {module_name(p): {m for m in imports(p, modules) if m in modules} for p in paths}
    unknown = {(module_name(p), m) for p in paths for m in imports(p, modules) if m not in modules}
    assert not unknown, f"imports of radialrouter modules that do not exist: {sorted(unknown)}"
    return edges


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and module not in TOP_LEVEL else None


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in edges.items():
        src = package_of(module)
        for target in targets:
            dst = package_of(target)
            if module in TOP_LEVEL or src == dst:
                continue
            if dst is None:
                if target in ("radialrouter", "radialrouter._lazy"):
                    continue  # the root (already the parent of every module; e.g. __version__) and its lazy helper
                bad.append(f"{module} imports the top-level {target}")
            elif src not in LAYERS or dst not in LAYERS:
                bad.append(f"{module} → {target}: package not in LAYERS")
            elif LAYERS[dst] >= LAYERS[src]:
                kind = "sideways" if LAYERS[dst] == LAYERS[src] else "upward"
                bad.append(f"{module} ({src}, layer {LAYERS[src]}) imports {target} ({dst}, layer {LAYERS[dst]}): "
                           f"{kind}")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def test_top_level_holds_only_the_public_api():
    assert sorted(p.name for p in SRC.glob("*.py")) == ["__init__.py", "__main__.py", "_lazy.py"]
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert packages == set(LAYERS), "every package has a layer (and a docstring saying what it may import)"


def test_imports_only_go_down():
    assert layer_violations(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_catch_an_upward_import_and_a_circle():
    edges = graph()
    upward = {**edges, "radialrouter.routers.base": edges["radialrouter.routers.base"] | {"radialrouter.serve.app"}}
    assert any("upward" in v for v in layer_violations(upward))
    sideways = {**edges, "radialrouter.policy.pool": edges["radialrouter.policy.pool"] | {
        "radialrouter.evaluation.metrics"}}
    assert any("sideways" in v for v in layer_violations(sideways))
    circle = {**edges, "radialrouter.core.objective": {"radialrouter.core.scoring"}}
    assert ["radialrouter.core.objective", "radialrouter.core.scoring"] in cycles(circle)


def test_function_level_imports_count():
    # routers/base.py imports the registry only inside functions (loading a saved router); it still counts
    base = SRC / "routers" / "base.py"
    assert "radialrouter.routers.registry" in imports(base, {"radialrouter.routers.registry"})
    # the gateway's types, imported for annotations only (TYPE_CHECKING), do not count
    assert not any(m.startswith("radialrouter.serve") for m in imports(SRC / "learning" / "exploration.py", set()))


# ---------------------------------------------------------------------------------------------- public names
#: Names users import today (README, docs/, the packages' __all__), by the module they import them from — former
#: module names included: they must keep working after the move.
PUBLIC = {
    "radialrouter": ["SCENARIOS", "Decision", "Router", "RoutingDataset", "available_routers", "from_pretrained",
                     "load_dataset", "make_router", "utility", "__version__"],
    "radialrouter.routers": ["BUILTIN_ROUTERS", "Decision", "LamRangeWarning", "Outcomes", "Router", "RouterError",
                             "available_routers", "from_pretrained", "make_router", "register", "router_class"],
    "radialrouter.routers.base": ["Router", "RouterError", "Outcomes", "Decision", "observed_candidates"],
    "radialrouter.routers.radial": ["RadialRouter", "DEFAULT_DIR", "load_default"],
    "radialrouter.data": ["DataError", "ROUTERBENCH_FILE", "ROUTERBENCH_REPO", "RoutingDataset", "grouped_split",
                          "holdout_tasks", "load_dataset", "load_routerbench", "load_splits", "make_synthetic",
                          "trusting_pickles", "with_validation"],
    "radialrouter.encoders": ["QueryEncoder", "StaticQueryEncoder", "EncoderError", "DEFAULT_ENCODER",
                              "STATIC_ENCODER", "BACKENDS", "onnx_available", "default_cache_dir", "onnx_cache_dir",
                              "_EmbeddingCache", "_export_onnx"],
    "radialrouter.evaluation": ["DEFAULT_SWEEP", "Metrics", "aiq", "best_single_reference", "collapse_index",
                                "collapse_stats", "curve_metrics", "evaluate_router", "nondecreasing_hull",
                                "pareto_front", "qnc", "single_llm_summary", "summarize"],
    "radialrouter.objective": ["SCENARIOS", "utility", "resolve_lam", "argmax_cheapest", "COST_SCALE"],
    "radialrouter.training": ["set_seed", "train_module"],
    "radialrouter.tokens": ["load_tokenizer"],
    "radialrouter.threads": ["apply_threads"],
    "radialrouter.strong_weak": [],
    "radialrouter.report": [],
    "radialrouter.bench": ["run_bench", "bench_markdown"],
    "radialrouter.auto": ["select_router"],
    "radialrouter.budget_sweep": ["budget_sweep", "budget_outcomes", "choose_within_budget"],
    "radialrouter.pool": [],
    "radialrouter.calibration": ["route_batch_budget"],
    "radialrouter.batch": ["RayEngine", "RouteWorker", "embed_file", "open_source", "route_file"],
    "radialrouter.ledger_data": ["read_ledger", "ledger_name", "LABEL_SOURCES"],
    "radialrouter.partial": ["fit_partial"],
    "radialrouter.ope": [],
    "radialrouter.judge": ["RUBRIC", "RUBRIC_VERSION", "Grade", "JudgeError", "grade", "judge_messages",
                           "label_ledger", "parse_grade"],
    "radialrouter.serve": ["ConfigError", "LLMConfig", "ServeConfig", "create_app", "load_config", "parse_config"],
    "radialrouter.serve.app": ["create_app", "ServeState"],
    "radialrouter.serve.routing": ["RequestError", "RouteResult", "parse_model"],
    "radialrouter.serve.ledger": ["Ledger", "LedgerRow", "Settlement"],
    "radialrouter.serve.schema": ["decisions", "decisions_rollup", "metadata"],
    "radialrouter.serve.explore": ["Explorer", "PolicyLog", "policy_distribution"],
    "radialrouter.serve.hotswap": ["swap_router", "admin_router"],
    "radialrouter.serve.feedback": ["feedback_router"],
    "radialrouter.serve.health": ["health_router", "replica_id", "DB_CHECK_EVERY_S"],
    "radialrouter.serve.openapi": ["install_openapi"],
    "radialrouter.serve.validation": ["check_chat_body"],
    "radialrouter.serve.testing": [],
    "radialrouter.serve.pgtesting": [],
    "radialrouter.cli": ["app", "main"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_documented_names_still_import(module):
    pytest.importorskip("fastapi") if module.startswith("radialrouter.serve.") else None
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert missing == [], f"{module} lost {missing}"


def test_a_former_module_name_is_the_same_module():
    import radialrouter.encoders as encoders
    import radialrouter.serve.ledger as old_ledger

    import radialrouter.core.encoders.transformer as transformer
    from radialrouter.ledger import store

    assert encoders is importlib.import_module("radialrouter.core.encoders")
    assert encoders.QueryEncoder is transformer.QueryEncoder
    assert old_ledger is store and store.__spec__.name == "radialrouter.ledger.store"
