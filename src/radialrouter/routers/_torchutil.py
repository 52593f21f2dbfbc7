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
    module.load_state_dict(state)
    return module.eval()
