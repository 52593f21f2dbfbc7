"""Safetensors-friendly state of the torch modules inside routers."""

from __future__ import annotations

import numpy as np
import torch


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """A module's state as NumPy arrays under ``prefix.`` (several modules can share one safetensors file)."""
    return {f"{prefix}.{k}": v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_module_tensors(module: torch.nn.Module, tensors: dict[str, np.ndarray], prefix: str) -> torch.nn.Module:
    """Restore what `module_tensors` saved under ``prefix`` (strict: a missing or extra weight is an error)."""
    state = {k.removeprefix(f"{prefix}."): torch.from_numpy(v.copy()) for k, v in tensors.items()
             if k.startswith(f"{prefix}.")}
    expected = module.state_dict()
    missing = [f"{prefix}.{k}" for k in expected if k not in state]
    extra = [f"{prefix}.{k}" for k in state if k not in expected]
    if missing or extra:
        raise ValueError(f"tensor names differ from what config.json builds: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"tensor '{prefix}.{k}' has shape {list(state[k].shape)}, config.json builds "
                             f"{list(v.shape)} (a hyperparameter such as d_model was edited, or the files belong to "
                             "different models)")
    module.load_state_dict(state)
    return module.eval()
