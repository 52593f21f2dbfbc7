"""``radialrouter train`` (fit any registered router, report validation and test figures, save it) and
``radialrouter route`` (route queries with a saved router, or the embedded default)."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import typer

from radialrouter.cli import batch_cmd
from radialrouter.cli.common import (
    app,
    embed_announced,
    missing_option,
    output_tokens_option,
    prices_option,
    split_list,
    threads_option,
    trust_pickle_option,
    use_threads,
)


@app.command("train")
def train_command(
    data: list[str] | None = typer.Option(None, "--data", help="Routing data file (parquet, CSV, JSONL, pkl) or "
                                          "'routerbench'; repeat it to train one router on several files (pools "
                                          "may differ; see --llm-aliases); with --from-ledger: full-information "
                                          "rows added to the log."),
    llm_aliases: str | None = typer.Option(None, "--llm-aliases", help="With several --data: a YAML/JSON mapping "
                                           "of LLM names in a file to a shared name (the same LLM spelled "
                                           "differently in different logs)."),
    out: str = typer.Option(..., "--out", help="Directory to save the trained router to."),
    router: str = typer.Option("mlp", "--router", help="Registered router name (default mlp: the best measured "
                               "over the four shared data sets, benchmarks/results/router_choice.md; radial for a "
                               "pool that grows without retraining), or 'auto': cross-validate the "
                               "--auto-candidates on the training split (Score at the named trade-offs, or at "
                               "--lam) and keep the simplest within one standard error of the best."),
    candidates: str | None = typer.Option(None, "--auto-candidates", "--candidates", help="With --router auto: "
                                          "comma-separated routers to try (default: knn,mlp,mf,equi,radial, and "
                                          "ensemble when registered)."),
    auto_folds: int | None = typer.Option(None, "--auto-folds", min=2, help="With --router auto: cross-validation "
                                          "folds of the training split (default 5)."),
    lam: str | None = typer.Option(None, "--lam", help="Training λ (number or scenario name) for routers trained "
                                   "for one λ; the default routing λ of a λ-conditioned RadialRouter."),
    seed: int = typer.Option(0, help="Seed for the validation split and training."),
    steps: int | None = typer.Option(None, help="Training steps (routers that take them)."),
    backbone: str | None = typer.Option(None, help="RadialRouter backbone: radial, star, transformer, mlp."),
    lam_conditioned: bool | None = typer.Option(None, "--lam-conditioned/--per-lam",
                                                help="RadialRouter: one model for every λ, or one for --lam only."),
    lam_max: float | None = typer.Option(None, "--lam-max", min=0, help="λ-conditioned RadialRouter: the largest λ "
                                         "it trains on and routes at (default 1; route clamps λ above it)."),
    tau: str | None = typer.Option(None, "--tau", help="RadialRouter: the KL target's temperature τ, a number "
                                   "(default 1) or 'auto' (the best on validation of 0.1–3 × the spread of quality "
                                   "− λ·cost; four trainings)."),
    test_tasks: str | None = typer.Option(None, help="Out-of-distribution: hold out these tasks as test."),
    encoder: str | None = typer.Option(None, "--encoder", help="Query encoder: 'minilm' (all-MiniLM-L6-v2, the "
                                       "default), 'static' (model2vec, ~200× faster), or a model name/folder."),
    trust_pickle: bool = trust_pickle_option(),
    threads: int | None = threads_option(),
    prices: str | None = prices_option(),
    output_tokens: int | None = output_tokens_option(),
    from_ledger: str | None = typer.Option(None, "--from-ledger", help="Train on the labelled requests of this "
                                           "decision log (partial labels; see docs/learning-from-traffic.md)."),
    base: str | None = typer.Option(None, "--base", help="With --from-ledger: the serving router (its LLMs, "
                                    "encoder and mean costs for LLMs the log never called)."),
    warm_start: bool = typer.Option(False, "--warm-start", help="With --from-ledger and --base: start from the "
                                    "base router's weights (mlp, mf: e.g. one trained on full-information data)."),
    missing: str = missing_option(),
) -> None:
    """Train a router on the train split (validation carved from it), print validation and test figures, save."""
    import time

    files = list(data or [])
    if len(files) > 1 and (from_ledger is not None or router == "auto" or test_tasks is not None):
        raise ValueError("several --data files train one router on their union: not with --from-ledger, "
                         "--router auto or --test-tasks")
    if llm_aliases is not None and len(files) < 2:
        raise ValueError("--llm-aliases goes with several --data files")
    data = files[0] if len(files) == 1 else None
    if from_ledger is not None:
        from radialrouter.cli.learn_cmd import train_from_ledger

        ignored = {"--router auto": router == "auto", "--auto-candidates": candidates is not None,
                   "--auto-folds": auto_folds is not None, "--lam": lam is not None,
                   "--backbone": backbone is not None, "--lam-conditioned/--per-lam": lam_conditioned is not None,
                   "--lam-max": lam_max is not None, "--tau": tau is not None,
                   "--test-tasks": test_tasks is not None, "--prices": prices is not None,
                   "--output-tokens": output_tokens is not None, "--missing": missing != "keep"}
        if any(ignored.values()):
            raise ValueError(f"--from-ledger does not take {', '.join(k for k, v in ignored.items() if v)}: name one "
                             "router (--router mlp, mf, knn, radial …), trained on the logged labels")

        use_threads(threads)
        train_from_ledger(from_ledger, out, router, data, seed, steps, encoder, base, "client,judge", warm_start)
        return
    if not files:
        raise ValueError("give --data (routing data) or --from-ledger (a decision log)")
    n_threads = use_threads(threads)
    from radialrouter.core.objective import resolve_lam, tradeoff_presets
    from radialrouter.core.training import showing_progress
    from radialrouter.data import load_splits
    from radialrouter.routers import router_class

    start = time.perf_counter()
    if router == "auto":
        return _train_auto(data, out, lam, seed, candidates, test_tasks, encoder, trust_pickle, prices,
                           output_tokens, (steps, backbone, lam_conditioned, lam_max, tau), n_threads, start, missing,
                           auto_folds)
    if candidates is not None or auto_folds is not None:
        raise ValueError("--auto-candidates and --auto-folds go with --router auto")
    cls = router_class(router)
    accepted = set(inspect.signature(cls.__init__).parameters)
    if tau is not None and tau.strip().lower() != "auto":
        try:
            tau = float(tau)
        except ValueError:
            raise ValueError(f"--tau takes a number > 0 or 'auto'; got {tau!r}") from None
    elif tau is not None:
        tau = "auto"
    given = {"lam": lam, "seed": seed, "steps": steps, "backbone": backbone, "lam_conditioned": lam_conditioned,
             "lam_max": lam_max, "tau": tau}
    given = {k: v for k, v in given.items() if v is not None}
    unsupported = sorted(k for k in given if k not in accepted and k != "seed")
    if unsupported:
        flags = ", ".join("--" + k.replace("_", "-") for k in unsupported)
        raise ValueError(f"router {router!r} does not take {flags}")
    if len(files) > 1:
        from radialrouter.data.combine import load_combined_splits, read_aliases

        _, train, val, test = load_combined_splits(
            files, seed=seed, prices=prices, output_tokens=output_tokens, trust_pickle=trust_pickle, missing=missing,
            aliases=None if llm_aliases is None else read_aliases(llm_aliases))
        data = " + ".join(Path(f).name for f in files)
    else:
        _, train, val, test = load_splits(data, seed=seed, test_tasks=test_tasks, trust_pickle=trust_pickle,
                                          prices=prices, output_tokens=output_tokens, missing=missing)
    if "lam" in given:  # a trade-off name means this pool's preset (see objective.tradeoff_presets)
        given["lam"] = resolve_lam(lam, presets=tradeoff_presets(train.quality, train.cost))
    model = cls(**{k: v for k, v in given.items() if k in accepted})
    if encoder is not None:
        from radialrouter.core.encoders import QueryEncoder

        model.encoder = QueryEncoder(encoder)
    _loaded(data, train, val, test)
    if model.uses_embeddings and getattr(model, "encoder_mode", "frozen") == "frozen":
        train, val, test = embed_announced(model.get_encoder(), [train, val, test])
    typer.echo(f"training {router} on {len(train)} queries ({0 if val is None else len(val)} for validation), "
               f"{n_threads} CPU thread(s) ...", err=True)
    with showing_progress():
        model.fit(train, val)
    typer.echo(f"trained in {model.training_.get('fit_seconds', 0):.1f} s", err=True)
    _report_and_save(model, val, test, data, seed, out, start)


def _loaded(data: str, train, val, test) -> None:
    """The first stage line: what was read (so the screen is never silent while the run prepares)."""
    typer.echo(f"read {data}: {len(train)} training, {0 if val is None else len(val)} validation and {len(test)} "
               "test queries", err=True)


def _report_and_save(model, val, test, data: str, seed: int, out: str, start: float, **training: object) -> None:
    """Validation and test figures at the router's named trade-offs, then ``save_pretrained``."""
    import time

    from radialrouter.evaluation.metrics import evaluate_router
    from radialrouter.evaluation.report import print_table

    lams = [model.default_lam_] if model.lam_at_fit else list(model.presets_.values())
    selection = getattr(model, "training_", {}).get("tau_selection")
    if selection and len(selection["trials"]) > 1:  # --tau auto
        typer.echo(f"τ = {model.training_['tau']:g}, the best validation Score of "
                   + ", ".join(f"τ {t['tau']:g}: {t['val_score']:.4f}" for t in selection["trials"]))
    if val is not None:
        for r in evaluate_router(model, val, lams):
            typer.echo(f"validation λ={r['lam']:g}: Perf {r['perf']:.4f}  Cost {r['cost']:.4f}  Score {r['score']:.4f}")
    rows = evaluate_router(model, test, lams)
    print_table(rows, title=f"{model.name} on {Path(data).name}: {len(test)} test queries")
    model.training_ = {**model.training_, "data": str(data), "split_seed": seed, **training,
                       "test": {f"{r['lam']:g}": {k: r[k] for k in ("perf", "cost", "score")} for r in rows}}
    path = model.save_pretrained(out)
    typer.echo(f"saved to {path} ({time.perf_counter() - start:.0f} s in all)")


def _train_auto(data: str, out: str, lam: str | None, seed: int, candidates: str | None, test_tasks: str | None,
                encoder: str | None, trust_pickle: bool, prices: str | None, output_tokens: int | None,
                refused: tuple, n_threads: int, start: float, missing: str = "keep",
                folds: int | None = None) -> None:
    """``train --router auto``: `radialrouter.evaluation.auto.select_router` (K-fold cross-validation on the
    training split, one-SE rule, the choice refitted on the whole training split), then as ``train``."""
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.core.training import showing_progress
    from radialrouter.data import load_splits
    from radialrouter.evaluation.auto import DEFAULT_FOLDS, complexity_rank, default_candidates, select_router

    if any(v is not None for v in refused):
        raise ValueError("--steps, --backbone, --lam-conditioned/--per-lam, --lam-max and --tau set one router's "
                         "training; with --router auto each candidate trains with its defaults")
    names = split_list(candidates) or default_candidates()
    folds = DEFAULT_FOLDS if folds is None else folds
    _, train, val, test = load_splits(data, seed=seed, test_tasks=test_tasks, trust_pickle=trust_pickle,
                                      prices=prices, output_tokens=output_tokens, missing=missing)
    _loaded(data, train, val, test)
    train, val, test = embed_announced(QueryEncoder(encoder) if encoder else QueryEncoder(), [train, val, test])
    on = "at --lam" if lam is not None else "the mean over the named trade-offs"
    typer.echo(f"auto: {folds}-fold cross-validation of {', '.join(names)} on {len(train)} training queries "
               f"(Score: {on}; {0 if val is None else len(val)} validation queries for early stopping), "
               f"{n_threads} CPU thread(s) ...", err=True)

    def report(name: str, row: dict) -> None:
        parts = ", ".join(f"{k} {v['mean']:.4f}" for k, v in row["per_tradeoff"].items())
        typer.echo(f"  {name:10s} Score {row['cv_mean']:.4f} ± {row['cv_se']:.4f} (SE over {folds} folds; {parts}) "
                   f"in {row['fit_seconds']:.1f} s", err=True)

    with showing_progress():
        result = select_router(train, val, lam, names, seed=seed, folds=folds, on_candidate=report, progress=True)
    best = max(result.table, key=lambda r: r["cv_mean"])
    within = [r["router"] for r in result.table if r["within_one_se"]]
    order = " < ".join(sorted(names, key=complexity_rank))
    figure = f"{best['router']} {best['cv_mean']:.4f} ± {best['cv_se']:.4f}"
    if best["router"] == result.best.name:
        others = [n for n in within if n != best["router"]]
        why = f"the best mean, {figure}" + (f" (also within one SE of it: {', '.join(others)}; simplest first: "
                                            f"{order})" if others else "")
    else:
        why = (f"the simplest ({order}) of {', '.join(within)}, the candidates within one standard error of the "
               f"best mean, {figure}")
    typer.echo(f"auto: chose {result.best.name}: {why}; refitted on the whole training split", err=True)
    _report_and_save(result.best, val, test, data, seed, out, start, auto=result.to_dict())


@app.command("route")
def route_command(
    queries: list[str] = typer.Argument(None, help="Query texts to route."),
    model: str | None = typer.Option(None, "--model", help="Saved router directory (default: the embedded one)."),
    lam: str | None = typer.Option(None, "--lam", help="Trade-off λ: a number or performance-first, balance, "
                                   "cost-first (default: the router's own). Valid from 0 to the largest λ the "
                                   "model was trained on (lam_max, 1 by default); above it λ is clamped with a "
                                   "warning."),
    candidates: str | None = typer.Option(None, "--candidates", help="Comma-separated LLMs to choose among."),
    input_path: str | None = typer.Option(None, "--input", help="File of queries, streamed in chunks: .parquet, "
                                          ".csv, .jsonl (a 'prompt' per line) or .txt (one per line)."),
    output: str | None = typer.Option(None, "--output", help="With --input: write decisions here (.jsonl or "
                                      ".parquet), not as JSONL on stdout."),
    as_json: bool = typer.Option(False, "--json", help="Print full decisions as JSON lines."),
    threads: int | None = threads_option(),
    engine: str = batch_cmd.engine_option(),
    chunk_size: int = batch_cmd.chunk_size_option(),
    workers: int | None = batch_cmd.workers_option(),
    ray_address: str | None = batch_cmd.ray_address_option(),
    prompt_column: str | None = batch_cmd.prompt_column_option(),
    context_column: str | None = batch_cmd.context_column_option(),
    cache: bool | None = typer.Option(None, "--cache/--no-cache", help="With --input: --cache reads and fills the "
                                      "embedding cache (files routed more than once); --no-cache ignores it. "
                                      "Default: a transformer encoder reads it (prompts train or embed encoded "
                                      "are not encoded again) and adds nothing."),
) -> None:
    """Pick the LLM for each query: the chosen LLM, its ranking, probabilities and expected cost."""
    from radialrouter.routers import from_pretrained

    texts = list(queries or [])
    flag_values = [t for t in texts if t.strip().lower() in {"true", "false"}]
    if flag_values:
        raise ValueError(f"query {flag_values[0]!r} looks like a value for a flag: --json takes none (write --json "
                         "alone); to route that word, put it in a file and pass --input")
    if input_path:
        if texts:
            raise ValueError("give query texts as arguments or a file with --input, not both")
        batch_cmd.route_input(input_path, output, model=model, lam=lam, candidates=split_list(candidates),
                              engine=engine, chunk_size=chunk_size, workers=workers, address=ray_address,
                              prompt_column=prompt_column, cache=cache, threads=threads,
                              context_column=context_column)
        return
    if context_column is not None:
        raise ValueError(f"--context names a column of the --input file; with query texts as arguments there is "
                         f"no column {context_column!r} to read")
    if not texts:
        raise ValueError("give query texts as arguments or a file with --input")
    for i, text in enumerate(texts):
        if not text.strip():
            typer.echo(f"warning: query {i + 1} is empty: it is routed on no text, so its decision says nothing about "
                       "it", err=True)
    use_threads(threads)
    if model is None:
        from radialrouter.routers.embedded import load_embedded

        router = load_embedded()
    else:
        router = from_pretrained(model)
    decisions = router.route(texts, lam=lam, candidates=split_list(candidates) or None)
    if as_json or output:
        lines = "".join(json.dumps({"prompt": t, **d.to_dict()}) + "\n" for t, d in zip(texts, decisions))
        if output:
            Path(output).write_text(lines)
            typer.echo(f"{len(decisions)} decisions written to {output}", err=True)
        else:
            sys.stdout.write(lines)
        return
    for text, d in zip(texts, decisions):
        p = "" if d.probabilities is None else f"  p={d.probabilities[d.llm]:.3f}"
        typer.echo(f"{d.llm}{p}  expected cost {d.expected_cost_usd:.6f} USD/query  (λ={d.lam:g})  "
                   f"next: {', '.join(d.ranking[1:3])}  ← {text[:60]!r}")


__all__ = ["route_command", "train_command"]
