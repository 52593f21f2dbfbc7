"""`StaticQueryEncoder`: token embeddings distilled from the bundled MiniLM with model2vec (``radialrouter encoder
distill``), shipped in the package. Encoding is a vocabulary lookup and a mean — about 0.1 ms for a 150-token query on
one core, some 200× faster than MiniLM — which is what a router in every request's path can afford. They cannot be
fine-tuned. ``QueryEncoder("static")`` (or ``"minilm-static-128"``, or any model2vec folder) gives one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from radialrouter.core.encoders.transformer import (
    DEFAULT_ENCODER,
    STATIC_ENCODER,
    EncoderError,
    QueryEncoder,
    _static_source,
    default_cache_dir,
)


class StaticQueryEncoder(QueryEncoder):
    """Static token embeddings (model2vec): the mean of each token's distilled vector, no transformer pass.

    Truncation keeps the **end** of long prompts like `QueryEncoder` (model2vec itself cuts from the right): the
    text is cut to its last ``4 × max_tokens`` characters (about ``max_tokens`` tokens) before encoding."""

    def __init__(self, name_or_path: str = STATIC_ENCODER, *, pooling: str = "mean", normalize: bool = True,
                 max_tokens: int = 256, truncation_side: str = "left", precision: str = "auto",
                 batch_size: int = 1024, cache_dir: str | Path | bool | None = None, device: str = "cpu",
                 backend: str = "auto") -> None:
        if pooling != "mean":
            raise ValueError(f"a static encoder pools by mean; got pooling={pooling!r}")
        if truncation_side not in {"left", "right"}:
            raise ValueError(f"truncation_side must be 'left' or 'right'; got {truncation_side!r}")
        source = _static_source(str(name_or_path))
        if source is None:
            raise EncoderError(f"{name_or_path!r} is not a static (model2vec) encoder")
        self.name, self.path, self._expected_sha = source
        if not (self.path / "model.safetensors").exists():
            raise EncoderError(f"static encoder {self.name!r}: {self.path / 'model.safetensors'} is missing")
        self.pooling, self.normalize, self.max_tokens = "mean", normalize, int(max_tokens)
        self.truncation_side, self.batch_size, self.device = truncation_side, int(batch_size), "cpu"
        self.precision, self.backend = "fp32", "static"
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self.cache_write = True
        self._model = None
        self._lock = threading.Lock()
        self._identity: dict | None = None
        self._dim: int | None = None

    def load(self) -> StaticQueryEncoder:
        with self._lock:
            if self._model is None:
                from model2vec import StaticModel

                _ = self._weights_hash()  # verify before loading
                self._model = StaticModel.from_pretrained(self.path, normalize=self.normalize)
        return self

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.load()._model.dim)
        return self._dim

    @property
    def active_backend(self) -> str:
        return "static"

    def will_build_onnx(self) -> bool:
        return False

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        raise EncoderError(f"the static encoder {self.name!r} has no transformer to fine-tune; use "
                           f"{DEFAULT_ENCODER!r} for fine-tuning")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.tokenize([])  # raises: nothing to back-propagate into

    def _compute(self, texts: list[str], progress: bool, batch_size: int,
                 store: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
        window = 4 * self.max_tokens
        cut = [t[-window:] if self.truncation_side == "left" else t[:window] for t in texts]
        model = self.load()._model
        if len(cut) <= batch_size and store is None and not progress:  # the serving path: one call, nothing else
            return mean_token_vectors(model, cut)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(texts), desc="encoding queries", unit="q", disable=not progress, leave=False)
        for start in range(0, len(cut), batch_size):
            idx = np.arange(start, min(start + batch_size, len(cut)))
            out[idx] = model.encode([cut[i] for i in idx], max_length=None, use_multiprocessing=False,
                                    batch_size=batch_size)
            if store is not None:
                store(idx, out[idx])
            bar.update(len(idx))
        bar.close()
        return out

    def __repr__(self) -> str:
        return f"StaticQueryEncoder({self.name!r}, max_tokens={self.max_tokens})"


def mean_token_vectors(model, texts: list[str]) -> np.ndarray:
    """What ``StaticModel.encode(texts)`` gives — each text's mean token vector, L2-normalised when the model
    normalises — without its per-call batching and progress bar, which cost as much as tokenizing a 256-character
    prompt at batch 1 (the request path's case). Models with token weights or a token mapping (quantised
    vocabularies) go through ``encode`` itself."""
    if model.token_mapping is not None or model.weights is not None:
        return model.encode(texts, max_length=None, use_multiprocessing=False).astype(np.float32, copy=False)
    dtype = np.float32 if model.embedding.dtype == np.int8 else model.embedding.dtype
    out = np.zeros((len(texts), model.dim), dtype=dtype)  # in the vectors' precision, as model2vec averages
    for i, ids in enumerate(model.tokenize(texts)):
        if ids:
            out[i] = model.embedding[np.array([ids])].mean(axis=1)[0]
    out = out.astype(np.float32)
    if model.normalize:
        out = (out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-32)).astype(dtype).astype(np.float32)
    return out


# `QueryEncoder(name)` gives this class for a static encoder's name (the package imports this module).
QueryEncoder._static_class = StaticQueryEncoder
