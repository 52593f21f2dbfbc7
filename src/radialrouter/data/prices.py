"""A cost model for logs that record quality but no cost: list prices × counted prompt tokens + a stated number of
output tokens.

Prices are USD per million tokens, ``[input, output]`` per LLM, in a JSON file — either one mapping
``{"llm": [in, out], ...}`` or several such mappings in sections (``prices.json`` in the shared data has one per
data set; the section whose LLMs cover the data's is used). Prompt tokens are counted with the bundled encoder's
WordPiece tokenizer, offline — an approximation of each LLM's own tokenizer; output tokens are one stated number
per query, since the logs hold no answers. Costs made this way are estimates, and every report should say so
(`CostModel.describe`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radialrouter.data.dataset import DataError, RoutingDataset

DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True)
class CostModel:
    """Where a data set's estimated costs came from: enough to say it in a report and to reproduce it."""

    prices_file: str
    prices_sha256: str
    section: str | None
    output_tokens: int
    token_counter: str = "all-MiniLM-L6-v2 WordPiece (bundled), prompt only"

    def describe(self) -> str:
        where = f"{self.prices_file}" + (f" [{self.section}]" if self.section else "")
        return (f"estimated cost: list prices from {where} × prompt tokens counted with the {self.token_counter} "
                f"+ {self.output_tokens} output tokens per query")


def load_prices(path: str | Path, llms: list[str]) -> tuple[dict[str, tuple[float, float]], str | None]:
    """The ``[input, output]`` price of every LLM in ``llms`` (and the section used); a clear error naming the
    file and the LLMs it lacks or the entry that is malformed."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"{path}: cannot read the price file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object of LLM → [input, output] prices")
    sections = {k: v for k, v in doc.items() if isinstance(v, dict)}
    candidates = [(None, {k: v for k, v in doc.items() if not k.startswith("_") and k not in sections})]
    candidates += list(sections.items())
    best = max(candidates, key=lambda c: sum(name in c[1] for name in llms))
    section, table = best
    missing = [name for name in llms if name not in table]
    if missing:
        raise DataError(f"{path}: no price for {missing}" + (f" in section {section!r}" if section else "")
                        + "; give [input, output] USD per million tokens for every LLM of the data")
    prices = {}
    for name in llms:
        entry = table[name]
        if not (isinstance(entry, list) and len(entry) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in entry)):
            raise DataError(f"{path}: {name!r} must be [input, output] non-negative USD per million tokens; "
                            f"got {entry!r}")
        prices[name] = (float(entry[0]), float(entry[1]))
    return prices, section


def count_prompt_tokens(prompts: list[str]) -> np.ndarray:
    """Prompt tokens per query with the bundled MiniLM WordPiece tokenizer (offline, batched)."""
    from radialrouter.core.tokens import load_tokenizer

    tokenizer = load_tokenizer(None)
    return np.array([len(e.ids) for e in tokenizer.encode_batch(prompts, add_special_tokens=False)], dtype=np.int64)


def with_prices(ds: RoutingDataset, path: str | Path,
                output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> tuple[RoutingDataset, CostModel]:
    """``ds`` with estimated per-query costs (USD) from the price file; refuses data that logs its own costs."""
    if ds.has_cost:
        raise DataError(f"{ds.source or 'the data'} already logs costs; --prices is for logs with quality only")
    if output_tokens < 0:
        raise DataError(f"--output-tokens must be ≥ 0; got {output_tokens}")
    prices, section = load_prices(path, list(ds.llms))
    tokens = count_prompt_tokens([str(p) for p in ds.prompts]).astype(np.float64)
    price_in = np.array([prices[name][0] for name in ds.llms])
    price_out = np.array([prices[name][1] for name in ds.llms])
    cost = (tokens[:, None] * price_in[None, :] + output_tokens * price_out[None, :]) / 1e6
    model = CostModel(str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest(), section, int(output_tokens))
    return dataclasses.replace(ds, cost=cost, has_cost=True, cost_model=model.describe()), model
