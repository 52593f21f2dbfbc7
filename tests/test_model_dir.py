"""Damaged router directories: one clear error naming the file and the fix, never a traceback (issue 14, item 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from radialrouter.data import make_synthetic
from radialrouter.routers import RouterError, from_pretrained
from radialrouter.routers.base import check_router_dir
from radialrouter.routers.radial import DEFAULT_DIR, RadialRouter

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    train = make_synthetic(n_queries=120, dim=384, seed=3)
    router = RadialRouter(d_model=16, n_heads=2, steps=5, patience=None).fit(train)
    return router.save_pretrained(tmp_path_factory.mktemp("models") / "m")


@pytest.fixture
def copy(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "m")


def test_a_saved_directory_records_its_weights_hash_and_loads(copy):
    config = json.loads((copy / "config.json").read_text())
    assert len(config["weights_sha256"]) == 64
    assert from_pretrained(copy).llms_


def test_truncated_weights_name_the_file(copy):
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RouterError, match=r"model\.safetensors: truncated: tensor .* save it again"):
        from_pretrained(copy)


def test_corrupted_weight_bytes_fail_the_hash(copy):
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-40:-8] = b"\xff" * 32  # NaN floats in the last tensor, same size
    weights.write_bytes(bytes(data))
    with pytest.raises(RouterError, match=r"model\.safetensors: sha256 differs from the one recorded in config\.json"):
        from_pretrained(copy)


def test_directories_saved_without_a_hash_still_load_and_nan_weights_are_caught(copy):
    config = json.loads((copy / "config.json").read_text())
    del config["weights_sha256"]  # as saved before the hash was recorded
    (copy / "config.json").write_text(json.dumps(config))
    assert from_pretrained(copy).llms_
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-40:-8] = b"\xff" * 32
    weights.write_bytes(bytes(data))
    with pytest.raises(RouterError, match=r"tensor '.*' holds NaN or infinite values"):
        from_pretrained(copy)


def test_edited_d_model_is_a_shape_mismatch_in_one_line(copy):
    config = json.loads((copy / "config.json").read_text())
    config["params"]["d_model"] = 32
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(RouterError) as info:
        from_pretrained(copy)
    message = str(info.value)
    assert "\n" not in message and "model.safetensors" in message
    assert "has shape" in message and "config.json builds" in message and "d_model" in message


@pytest.mark.parametrize("name", ["model.safetensors", "pool.json", "encoder.json"])
def test_a_missing_file_is_named(copy, name):
    (copy / name).unlink()
    with pytest.raises(RouterError, match=rf"{name} missing"):
        from_pretrained(copy)


def test_not_a_safetensors_file(copy):
    (copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 32)
    with pytest.raises(RouterError, match="header is not JSON"):
        from_pretrained(copy)


@pytest.mark.skipif(not (DEFAULT_DIR / "config.json").exists(), reason="the embedded default router is not built")
def test_the_embedded_router_passes_the_checks():
    assert check_router_dir(DEFAULT_DIR)["router"] == "radial"


def test_cli_reports_a_damaged_model_in_one_line(copy):
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "route", "--model", str(copy), "hello"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "truncated" in proc.stderr


def test_named_tradeoffs_are_saved_and_older_directories_keep_the_papers(copy):
    from radialrouter.core.objective import SCENARIOS

    pool = json.loads((copy / "pool.json").read_text())
    router = from_pretrained(copy)
    assert router.presets_ == pool["presets"] and router.resolve_lam("balance") == pool["presets"]["balance"]
    del pool["presets"]  # a directory saved before presets existed
    (copy / "pool.json").write_text(json.dumps(pool))
    assert from_pretrained(copy).presets_ == SCENARIOS
    pool["presets"] = ["balance"]
    (copy / "pool.json").write_text(json.dumps(pool))
    with pytest.raises(RouterError, match="pool.json"):
        from_pretrained(copy)
