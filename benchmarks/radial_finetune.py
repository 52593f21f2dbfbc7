"""RadialRouter with a fine-tuned query encoder against the frozen default, on RouterBench (3 tasks, 11 LLMs).

The paper fine-tunes its encoder; the default here keeps it frozen (cached embeddings, minutes on a CPU). This
script measures what fine-tuning buys, for users with a GPU: per seed, the data file's train/test split with a
validation split carved from train (model selection only), one λ-conditioned RadialRouter with the encoder frozen
and one with ``encoder_mode="finetune"`` (encoder at ``--encoder-lr``, the rest at the default 1e-3), both from the
same encoder weights, plus Best single and Task-best on the same split. Writes ``radial_finetune.json`` and
``.md`` under ``--out``.

    python benchmarks/radial_finetune.py --device cuda                     # bundled encoder, 5 seeds
    python benchmarks/radial_finetune.py --device cuda --encoder DIR --data routerbench3.parquet --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from radialrouter.core.encoders import DEFAULT_ENCODER, QueryEncoder
from radialrouter.core.objective import SCENARIOS
from radialrouter.data import load_splits
from radialrouter.evaluation import evaluate_router
from radialrouter.routers import make_router
from radialrouter.routers.radial import RadialRouter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench3.parquet"
OUT = Path(__file__).resolve().parent / "results"
LABELS = {0.0: "PF", 0.02: "BA", 0.1: "CF"}
PAPER_LAMS = list(SCENARIOS.values())  # the paper's λ, as in radial_routerbench3.md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="Encoder name or local folder.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=1500, help="Training steps of the frozen-encoder router.")
    parser.add_argument("--finetune-steps", type=int, help="Training steps with the encoder fine-tuning (default: "
                        "--steps). At batch 64, 100 steps are about 3 epochs of routerbench3's training split.")
    parser.add_argument("--encoder-lr", type=float, default=5e-5)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, list[dict]] = {}
    seconds: dict[str, list[float]] = {}
    for seed in seeds:
        _, train, val, test = load_splits(args.data, seed=seed)
        for name in ("best-single", "task-best"):
            router = make_router(name).fit(train, val)
            rows.setdefault(name, []).extend({**r, "seed": seed}
                                             for r in evaluate_router(router, test, lams=PAPER_LAMS))
        for mode in ("frozen", "finetune"):
            # A fresh encoder per model: fine-tuning changes its weights.
            encoder = QueryEncoder(args.encoder, device=args.device, precision="fp32", cache_dir=False)
            tr, va, te = (train, val, test) if mode == "finetune" else (
                d.embed(encoder, progress=False) for d in (train, val, test))
            start = time.perf_counter()
            steps = (args.finetune_steps or args.steps) if mode == "finetune" else args.steps
            router = RadialRouter(encoder_mode=mode, encoder=encoder, encoder_lr=args.encoder_lr, steps=steps,
                                  seed=seed).fit(tr, va)
            seconds.setdefault(mode, []).append(time.perf_counter() - start)
            name = f"RadialRouter ({mode} encoder)"
            rows.setdefault(name, []).extend({**r, "seed": seed, "val_score": router.training_["val_score"],
                                              "best_step": router.training_["best_step"]}
                                             for r in evaluate_router(router, te, lams=PAPER_LAMS))
            print(seed, name, [round(r["score"], 4) for r in rows[name][-3:]], f"{seconds[mode][-1]:.0f} s",
                  flush=True)
        write(rows, seconds, seeds[: seeds.index(seed) + 1], args)  # after every seed: a cut-off run keeps them


def write(rows: dict[str, list[dict]], seconds: dict[str, list[float]], seeds: list[int], args) -> None:
    summary = {name: {LABELS[lam]: {k: [float(np.mean(v)), float(np.std(v))] for k, v in
                                    (("perf", [r["perf"] for r in rs if r["lam"] == lam]),
                                     ("cost", [r["cost"] for r in rs if r["lam"] == lam]),
                                     ("score", [r["score"] for r in rs if r["lam"] == lam]))}
                      for lam in SCENARIOS.values()} for name, rs in rows.items()}
    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu
    meta = {"data": Path(args.data).name, "encoder": args.encoder, "device": device, "seeds": seeds,
            "steps": args.steps, "finetune_steps": args.finetune_steps or args.steps, "encoder_lr": args.encoder_lr,
            "torch": torch.__version__,
            "fit_seconds": {k: [round(s, 1) for s in v] for k, v in seconds.items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "radial_finetune.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows},
                                                        indent=2) + "\n")
    md = ["# RadialRouter: frozen against fine-tuned query encoder (routerbench3)", "",
          f"Test split, macro over tasks, mean ± std over seeds {seeds}; {meta['device']}; encoder "
          f"`{Path(args.encoder).name}` (fp32), fine-tuned at lr {args.encoder_lr} for ≤ {meta['finetune_steps']} "
          f"steps (batch 64), the frozen-encoder router ≤ {args.steps} steps; model selection on the validation split. "
          f"Threads: {torch.get_num_threads()}. The fine-tuning fit time includes embedding the training data "
          f"again (cost head). Load average when written: {os.getloadavg()[0]:.2f}. Produced by "
          "`python benchmarks/radial_finetune.py`.", "",
          "| Router | PF Score | BA Score | CF Score | fit s |", "|---|---:|---:|---:|---:|"]
    for name, by in summary.items():
        mode = "finetune" if "finetune" in name else "frozen" if "frozen" in name else None
        fit = f"{np.mean(seconds[mode]):.0f}" if mode else ""
        md.append(f"| {name} | " + " | ".join(f"{by[s]['score'][0]:.4f} ± {by[s]['score'][1]:.4f}"
                                             for s in ("PF", "BA", "CF")) + f" | {fit} |")
    (out / "radial_finetune.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)


if __name__ == "__main__":
    main()
