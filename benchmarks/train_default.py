"""Rebuild the embedded default router, src/radialrouter/pretrained/routerbench3-radial/, exactly.

RadialRouter with its default hyperparameters (λ-conditioned, RadialFormer backbone) and seed 0, trained on the
train split of ../shared/data/routerbench3.parquet with 10 % of it (grouped by prompt, stratified by task, seed 0)
held out for model selection, on frozen embeddings of the shipped static encoder (model2vec distilled from the
bundled all-MiniLM-L6-v2; the serving default since benchmarks/results/encoders.md; ``--encoder minilm`` for the
transformer). The test split is only
evaluated, after training, and its figures are recorded in training.json.

    python benchmarks/train_default.py [--data PATH] [--out DIR]

One torch thread, so the run repeats bit for bit on the same machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from radialrouter.core.encoders import STATIC_ENCODER, QueryEncoder
from radialrouter.data import load_splits
from radialrouter.evaluation import evaluate_router
from radialrouter.routers.radial import DEFAULT_DIR, RadialRouter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench3.parquet"
SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(DEFAULT_DIR))
    parser.add_argument("--encoder", default=STATIC_ENCODER, help="Query encoder (default: the static one).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = QueryEncoder(args.encoder, precision="fp32")  # portable: the default router must serve on any CPU
    _, train, val, test = load_splits(args.data, seed=SEED)
    train, val, test = (d.embed(encoder, progress=False) for d in (train, val, test))
    router = RadialRouter(seed=SEED, encoder=encoder).fit(train, val)
    rows = evaluate_router(router, test)
    router.training_ = {**router.training_, "data": Path(args.data).name, "split": "file's train/test; val = 10% "
                        f"of train (seed {SEED})", "recipe": "benchmarks/train_default.py",
                        "test": {f"{r['lam']:g}": {k: r[k] for k in ("perf", "cost", "score")} for r in rows}}
    router.save_pretrained(args.out)
    for r in rows:
        print(f"λ={r['lam']:g}: Perf {r['perf']:.4f}  Cost {r['cost']:.4f}  Score {r['score']:.4f}")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
