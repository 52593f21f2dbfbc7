"""RadialFormer inference under ONNX Runtime: the serving path's batch-1 forward in a fifth of torch's time.

A batch-1 RadialFormer pass is ~60 tiny tensor operations; under torch each costs microseconds of dispatch, so the
pass takes ~0.5 ms although the arithmetic is a few microseconds. The same module, exported once to ONNX (the
weights become graph constants) and run by ONNX Runtime, takes ~0.15 ms and releases the GIL for the whole call —
which matters in the server, where the event loop and the routing thread share one interpreter.

The export runs in process (about a second), is checked against torch on probe inputs before it is used, and is
rebuilt when the weights or the pool change (`RadialRouter` keys it like its λ-conditioning memo). Training and
anything that needs gradients stay on torch. Needs ``onnxruntime`` and ``onnx`` (``pip install
'radialrouter[onnx]'``).
"""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import torch
from torch import nn

from radialrouter.routers.radialformer import RadialFormer

#: Largest |difference| between ONNX Runtime and torch logits on the probes that is accepted.
TOLERANCE = 1e-4


def onnx_runtime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` (for the export) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class _Logits(nn.Module):
    """The network's forward with every input explicit (per-query λ, the pool's costs, candidate masks)."""

    def __init__(self, net: RadialFormer) -> None:
        super().__init__()
        self.net = net

    def forward(self, q: torch.Tensor, lam: torch.Tensor, cost: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(q, lam, cost, mask)


class OnnxRadialFormer:
    """A frozen ONNX Runtime copy of a `RadialFormer` in eval mode: ``logits(q, lam, cost, mask)``."""

    def __init__(self, net: RadialFormer, in_dim: int, cost: np.ndarray, threads: int = 1) -> None:
        import onnxruntime as ort

        was_training = net.training
        net.eval()
        try:
            model = self._export(net, in_dim, len(cost))
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, int(threads))
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            self._verify(net, in_dim, np.asarray(cost, dtype=np.float32))
        finally:
            net.train(was_training)

    @staticmethod
    def _export(net: RadialFormer, in_dim: int, n_llms: int) -> bytes:
        probe = (torch.zeros(2, in_dim), torch.full((2,), 0.02), torch.ones(n_llms), torch.ones(2, n_llms, dtype=bool))
        batch = {0: "batch"}
        buffer = io.BytesIO()
        # The exporter puts the module it is given back into *that module's* mode, recursively: a wrapper left in
        # training mode would switch the network's dropout on for every later torch pass.
        with warnings.catch_warnings():  # the TorchScript exporter's notices about tracing Python control flow
            warnings.simplefilter("ignore")
            torch.onnx.export(_Logits(net).eval(), probe, buffer, input_names=["q", "lam", "cost", "mask"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"q": batch, "lam": batch, "mask": batch, "logits": batch})
        return buffer.getvalue()

    def _verify(self, net: RadialFormer, in_dim: int, cost: np.ndarray) -> None:
        """Refuse an export that disagrees with torch (several λ, a masked candidate, batch 1 and 3)."""
        gen = torch.Generator().manual_seed(0)
        n = len(cost)
        for lam in (0.0, 0.02, 0.5):
            for b in (1, 3):
                q = torch.randn(b, in_dim, generator=gen)
                mask = torch.ones(b, n, dtype=torch.bool)
                if n > 1:
                    mask[-1, 0] = False
                lams = torch.full((b,), lam)
                with torch.inference_mode():
                    ref = _Logits(net)(q, lams, torch.from_numpy(cost), mask).numpy()
                got = self.logits(q.numpy(), lams.numpy(), cost, mask.numpy())
                finite = np.isfinite(ref)
                same = np.array_equal(finite, np.isfinite(got))
                if not (same and np.abs(got[finite] - ref[finite]).max() < TOLERANCE):
                    raise RuntimeError(f"the ONNX export of the RadialFormer disagrees with torch at λ = {lam}")

    def logits(self, q: np.ndarray, lam: np.ndarray, cost: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(B, n) logits, −inf where masked; ``q`` (B, in_dim), ``lam`` (B,), ``cost`` (n,), ``mask`` (B, n)."""
        feed = {"q": np.ascontiguousarray(q, dtype=np.float32), "lam": np.ascontiguousarray(lam, dtype=np.float32),
                "cost": np.ascontiguousarray(cost, dtype=np.float32), "mask": np.ascontiguousarray(mask, dtype=bool)}
        return self.session.run(None, feed)[0]


__all__ = ["OnnxRadialFormer", "TOLERANCE", "onnx_runtime_available"]
