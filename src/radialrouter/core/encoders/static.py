"""`StaticQueryEncoder`: token embeddings distilled from the bundled MiniLM with model2vec (``radialrouter encoder
distill``), shipped in the package. Encoding is a vocabulary lookup and a mean — about 0.1 ms for a 150-token query on
one core, some 200× faster than MiniLM — which is what a router in every request's path can afford. They cannot be
fine-tuned. ``QueryEncoder("static")`` (or ``"minilm-static-128"``, or any model2vec folder) gives one.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from itertools import chain
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
        self._words: WordTokenCache | None = None
        self._table: np.ndarray | None = None

    def load(self) -> StaticQueryEncoder:
        with self._lock:
            if self._model is None:
                from model2vec import StaticModel

                _ = self._weights_hash()  # verify before loading
                model = StaticModel.from_pretrained(self.path, normalize=self.normalize)
                self._words = WordTokenCache.for_model(model)
                # float16 vectors summed in float32 are the same numbers read from a float32 copy (the upcast is
                # exact), gathered and summed twice as fast: 15 MB for the default encoder's 30k tokens
                if model.embedding.dtype == np.float16:
                    self._table = model.embedding.astype(np.float32)
                self._model = model
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
        model = self._model if self._model is not None else self.load()._model
        if len(cut) <= batch_size and store is None and not progress:  # the serving path: one call, nothing else
            return mean_token_vectors(model, cut, self._words, self._table)
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


#: What a BERT normaliser maps to a space (Rust's ``char::is_whitespace`` less the control characters it deletes
#: first: U+000B, U+000C, U+0085) — where its pre-tokeniser splits words, and a word's tokens never cross.
_BERT_SPACE = re.compile("[\t\n\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


class WordTokenCache:
    """A BERT WordPiece tokeniser's ids, a whitespace-delimited word at a time, remembered per word.

    Its normaliser works character by character and its pre-tokeniser splits at whitespace first, so a text's ids
    are the concatenation of its words' ids — and words recur: the request path then looks words up instead of
    calling the tokenizer (≈ 80 µs per 256-character prompt, mostly call overhead). Identical to
    ``StaticModel.tokenize`` (tested on every prompt of the shared data sets and on random Unicode): the tokenizer's
    truncation applies to the whole text, then the unknown token is dropped. `for_model` gives None for any other
    tokeniser. Bounded: cleared when it reaches ``size`` words."""

    def __init__(self, tokenize: Callable[[list[str]], list[list[int]]], size: int = 100_000,
                 truncation: dict | None = None, drop: int | None = None) -> None:
        self._tokenize, self.size, self._drop = tokenize, size, drop
        self._ids: dict[str, list[int]] = {}
        # the tokenizer's own truncation (model2vec's: the first 512 tokens), applied to the whole text
        self._keep = None if truncation is None else int(truncation["max_length"])
        self._keep_end = truncation is not None and truncation.get("direction") == "Left"

    @classmethod
    def for_model(cls, model) -> WordTokenCache | None:
        """A cache for a model2vec model whose tokeniser is BERT's (normaliser, pre-tokeniser, WordPiece)."""
        spec = json.loads(model.tokenizer.to_str())
        kinds = [(spec.get(part) or {}).get("type") for part in ("normalizer", "pre_tokenizer", "model")]
        # added tokens are matched in the raw text: fine while none can span a word boundary
        local = all(not (t.get("lstrip") or t.get("rstrip") or _BERT_SPACE.search(t.get("content", " ")))
                    for t in spec.get("added_tokens") or ())
        if kinds != ["BertNormalizer", "BertPreTokenizer", "WordPiece"] or not local:
            return None
        tokenizer = model.tokenizer
        return cls(lambda words: [e.ids for e in tokenizer.encode_batch_fast(words, add_special_tokens=False)],
                   truncation=spec.get("truncation"), drop=model.unk_token_id)

    def __call__(self, text: str) -> list[int]:
        words = list(filter(None, _BERT_SPACE.split(text)))
        known = self._ids
        try:  # the common case: every word seen before
            ids = list(chain.from_iterable(map(known.__getitem__, words)))
        except KeyError:
            new = [w for w in dict.fromkeys(words) if w not in known]
            if len(known) + len(new) > self.size:  # start afresh, with every word of this text
                known = self._ids = {}
                new = list(dict.fromkeys(words))
            known.update(zip(new, self._tokenize(new)))
            ids = list(chain.from_iterable(map(known.__getitem__, words)))
        if self._keep is not None and len(ids) > self._keep:
            ids = ids[-self._keep:] if self._keep_end else ids[:self._keep]
        # model2vec drops the unknown token after truncating
        return ids if self._drop is None or self._drop not in ids else [i for i in ids if i != self._drop]


def mean_token_vectors(model, texts: list[str], words: WordTokenCache | None = None,
                       table: np.ndarray | None = None) -> np.ndarray:
    """What ``StaticModel.encode(texts)`` gives — each text's mean token vector, L2-normalised when the model
    normalises — without its per-call batching and progress bar, which cost as much as tokenizing a 256-character
    prompt at batch 1 (the request path's case); ``words``: tokenise through that cache; ``table``: the vectors as
    float32 when they are stored as float16 (the same sums, faster to gather). Models with token weights
    or a token mapping (quantised vocabularies) go through ``encode`` itself."""
    if model.token_mapping is not None or model.weights is not None:
        return model.encode(texts, max_length=None, use_multiprocessing=False).astype(np.float32, copy=False)
    dtype = np.float32 if model.embedding.dtype == np.int8 else model.embedding.dtype
    vectors = model.embedding if table is None else table
    out = np.zeros((len(texts), model.dim), dtype=np.float32)
    for i, ids in enumerate(model.tokenize(texts) if words is None else map(words, texts)):
        if ids:  # numpy's mean, unwrapped: a float32 sum, divided, rounded to the vectors' precision
            out[i] = np.add.reduce(vectors[ids], axis=0, dtype=np.float32) / len(ids)
    out = out.astype(dtype).astype(np.float32)
    if model.normalize:  # np.linalg.norm's arithmetic without its argument checks
        norm = np.sqrt(np.add.reduce(out * out, axis=1, keepdims=True))
        out = (out / (norm + 1e-32)).astype(dtype).astype(np.float32)
    return out


# `QueryEncoder(name)` gives this class for a static encoder's name (the package imports this module).
QueryEncoder._static_class = StaticQueryEncoder
