"""The one training loop the learned routers share: minibatches over query indices, AdamW, periodic validation,
early stopping on a validation metric (never the test split), best-state restore, a progress bar, seeds."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

# Routers train silently inside libraries and benchmarks; the CLI turns the bar on for the run it is doing.
_SHOW_PROGRESS: ContextVar[bool] = ContextVar("radialrouter_show_progress", default=False)


@contextmanager
def showing_progress(show: bool = True) -> Iterator[None]:
    """Within this block every `train_module` shows its progress bar (steps, ETA, loss, validation Score)."""
    token = _SHOW_PROGRESS.set(show)
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(token)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_val: float | None
    history: list[dict] = field(default_factory=list)


def train_module(
    module: torch.nn.Module,
    loss_fn: Callable[[np.ndarray], torch.Tensor],
    n_train: int,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    val_fn: Callable[[], float] | None = None,
    eval_every: int = 50,
    patience: int | None = 10,
    progress: bool = True,
    desc: str = "training",
    parameters: list[torch.nn.Parameter] | list[dict] | None = None,
) -> TrainResult:
    """Minimise ``loss_fn(batch_indices)`` over ``steps`` minibatches of the ``n_train`` training items.

    ``val_fn`` returns a validation figure where higher is better (e.g. Score at the training λ); the best state is
    kept and restored at the end, and training stops after ``patience`` evaluations without improvement. The
    progress bar shows when ``progress`` is true or inside `showing_progress` (the CLI).
    ``parameters`` restricts what is optimised (e.g. one new LLM embedding), or gives AdamW parameter groups
    (dicts, e.g. a smaller learning rate for a fine-tuned encoder); default: all of ``module``.
    """
    set_seed(seed)
    rng = np.random.default_rng(seed)
    groups = list(parameters) if parameters is not None else list(module.parameters())
    if not groups or not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    best_val, best_step, best_state, bad = None, 0, None, 0
    history: list[dict] = []
    order = rng.permutation(n_train)
    cursor = 0
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not (progress or _SHOW_PROGRESS.get()), unit="step",
               leave=False)
    loss_ema = None
    step = 0
    for step in bar:
        if cursor + batch_size > n_train:
            order, cursor = rng.permutation(n_train), 0
        idx = order[cursor : cursor + min(batch_size, n_train)]
        cursor += len(idx)
        module.train()
        loss = loss_fn(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        loss_ema = value if loss_ema is None else 0.9 * loss_ema + 0.1 * value
        if val_fn is not None and (step % eval_every == 0 or step == steps):
            module.eval()
            with torch.no_grad():
                val = float(val_fn())
            history.append({"step": step, "loss": loss_ema, "val": val})
            if best_val is None or val > best_val + 1e-9:
                best_val, best_step, bad = val, step, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                bad += 1
            bar.set_postfix(loss=f"{loss_ema:.4f}", val_score=f"{val:.4f}", best=f"{best_val:.4f}")
            if patience is not None and bad >= patience:
                break
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{loss_ema:.4f}")
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainResult(steps=step, best_step=best_step if val_fn else step, best_val=best_val, history=history)
