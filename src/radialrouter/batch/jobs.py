"""Route (or embed) query files of any size in bounded memory: chunked in one process, or over Ray Data.

``radialrouter route --input logs.parquet --output decisions.parquet`` and ``radialrouter embed --data train.parquet``
run here. A file is read in chunks (parquet record batches, CSV blocks, JSONL or text lines), each chunk is encoded
and routed (or encoded into the embedding cache), and the result is written before the next chunk is read, so memory
is set by ``chunk_size``, not by the file (benchmarks/batch_route.py measures it).

Two engines run the same worker code:

* `LocalEngine`: one process, one chunk at a time; errors name the file, row and column.
* `RayEngine`: ``ray.data.read_*(...).map_batches(<worker class>, concurrency=N)``: the router and its encoder load
  once per worker actor; the driver writes the output in input order, so both engines write identical files. It needs
  ``pip install 'radialrouter[ray]'``; it starts a local Ray instance unless one is running or an address is given.

Output: JSONL (one ``{"prompt": ..., <decision>}`` object per line, the format of ``route --json``) or parquet
(columns ``prompt, llm, ranking, scores, probabilities, expected_cost_usd, lam``; per-LLM maps), row ``i`` of the
output being the decision for query ``i`` of the input.

Context (``context_column``, CLI ``--context``): a column holding each query's context (the task, the calling
application …) is read next to the prompts and passed to `Router.route` as ``context=``, for a router trained with one
(``ensemble`` with ``context=True``); other routers ignore it. The output then carries it too (a ``"context"`` field
after ``"prompt"``, a ``context`` column). A null, missing or blank value is an unknown context (None); a number is
read as its string form (``3`` → ``"3"``), as training reads a task column.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa

from radialrouter.data.dataset import DataError

PROMPT_COLUMNS = ("prompt", "question", "query", "text")  # as radialrouter.data.loaders (not imported: pandas)
INPUT_KINDS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".txt": "txt"}
OUTPUT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_CHUNK = 8192
ENGINES = ("local", "ray")

_SCORES = pa.map_(pa.string(), pa.float64())
DECISION_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("llm", pa.string()), ("ranking", pa.list_(pa.string())), ("scores", _SCORES),
    ("probabilities", _SCORES), ("expected_cost_usd", pa.float64()), ("lam", pa.float64()),
])
CONTEXT_FIELD = pa.field("context", pa.string())
JSONL_SCHEMA = pa.schema([("line", pa.string())])  # what workers return for JSONL output: the finished lines


# ---------------------------------------------------------------------------------------------------- reading
#: A chunk: the index of its first row, its prompts, and their contexts (None when the source has no context column).
Chunk = tuple[int, list[str], list[str | None] | None]


def decision_schema(context: bool = False) -> pa.Schema:
    """The parquet output's schema: `DECISION_SCHEMA`, with a ``context`` column after ``prompt`` when routing
    with a context column (so a run without one writes exactly the schema it always did)."""
    return DECISION_SCHEMA.insert(1, CONTEXT_FIELD) if context else DECISION_SCHEMA


@dataclass
class QuerySource:
    """A query file: its kind, the column (or JSON field) holding the prompts and, optionally, the one holding
    each query's context."""

    path: Path
    kind: str
    column: str
    rows: int | None = None  # exact for parquet (file metadata), counted lines otherwise: a progress total
    context: str | None = None  # the context column, if any

    def columns(self) -> list[str]:
        """The columns to read: the prompt column, then the context column (once, if it is the same)."""
        return list(dict.fromkeys([self.column, *([] if self.context is None else [self.context])]))

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, list[str]]]:
        """``(index of the chunk's first row, prompts)`` for consecutive chunks of at most ``chunk_size`` rows;
        a bad value raises `DataError` naming the file, row (or line) and column."""
        for start, texts, _ in self.chunks_with_context(chunk_size):
            yield start, texts

    def chunks_with_context(self, chunk_size: int) -> Iterator[Chunk]:
        """As `chunks`, with each chunk's contexts (strings or None, see `context_values`) read from the same rows;
        ``None`` instead of a list when the source has no context column."""
        if chunk_size < 1:
            raise ValueError(f"chunk size must be at least 1; got {chunk_size}")
        reader = {"parquet": self._parquet, "csv": self._csv, "jsonl": self._jsonl, "txt": self._txt}[self.kind]
        yield from reader(chunk_size)

    def _arrow_chunks(self, batches: Iterator[pa.RecordBatch], chunk_size: int) -> Iterator[Chunk]:
        start = 0
        for batch in batches:
            for offset in range(0, batch.num_rows, chunk_size):
                part = batch.slice(offset, chunk_size)
                contexts = (None if self.context is None else
                            context_values(part.column(self.context), self.path, self.context))
                yield start, prompt_texts(part.column(self.column), self, start), contexts
                start += part.num_rows

    def _parquet(self, chunk_size: int) -> Iterator[Chunk]:
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path) as f:
            yield from self._arrow_chunks(f.iter_batches(batch_size=chunk_size, columns=self.columns()), chunk_size)

    def _csv(self, chunk_size: int) -> Iterator[Chunk]:
        from pyarrow import csv

        options = csv.ConvertOptions(include_columns=self.columns(),
                                     column_types=dict.fromkeys(self.columns(), pa.string()),
                                     strings_can_be_null=False)
        try:
            reader = csv.open_csv(self.path, convert_options=options)
            yield from self._arrow_chunks(iter(reader), chunk_size)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{self.path}: cannot be read as csv: {exc}") from None

    def _lines(self) -> Iterator[tuple[int, str]]:
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{self.path}: line {number}, column {exc.start + 1}: byte {raw[exc.start]:#04x} "
                                    "is not UTF-8 text; save the file as UTF-8") from None
                yield number, line.removeprefix("\ufeff") if number == 1 else line

    def _jsonl(self, chunk_size: int) -> Iterator[Chunk]:
        for start, rows in _chunked(self._jsonl_prompts(), chunk_size):
            yield (start, [text for text, _ in rows],
                   None if self.context is None else [context for _, context in rows])

    def _jsonl_prompts(self) -> Iterator[tuple[str, str | None]]:
        """Each line's ``(prompt, context)``; the context is None when the source has no context field."""
        for number, line in self._lines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{self.path}: line {number}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            value = obj.get(self.column) if isinstance(obj, dict) else None
            if not isinstance(value, str) or not value.strip():
                what = ("missing" if not isinstance(obj, dict) or self.column not in obj else
                        "empty" if isinstance(value, str) else f"a {type(value).__name__}, not text")
                raise DataError(f"{self.path}: line {number}, field {self.column!r}: the prompt is {what}")
            yield value, (None if self.context is None else
                          _context_value(obj.get(self.context), f"{self.path}: line {number}, field {self.context!r}"))

    def _txt(self, chunk_size: int) -> Iterator[Chunk]:
        for start, texts in _chunked(self._txt_prompts(), chunk_size):
            yield start, texts, None

    def _txt_prompts(self) -> Iterator[str]:
        blank = 0
        for _, line in self._lines():
            text = line.rstrip("\r\n")
            if text.strip():
                yield text
            else:
                blank += 1
        if blank:
            warnings.warn(f"{self.path}: skipped {blank} blank line(s)", stacklevel=2)


def open_source(path: str | Path, prompt_column: str | None = None,
                context_column: str | None = None) -> QuerySource:
    """Check that ``path`` is a readable query file and find its prompt column (and ``context_column``, if named),
    reading only its header.

    Kinds: ``.parquet``, ``.csv``, ``.jsonl``/``.ndjson`` (one object per line) and ``.txt`` (one prompt per line,
    so no context column). The column is ``prompt_column`` or the first of ``prompt, question, query, text``
    present. A JSONL context field need not be on every line (a line without it has an unknown context), but one of
    the first `JSON_PROBE_LINES` objects must have it, so a misspelt name fails before anything is routed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = INPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: cannot stream a {path.suffix or 'suffix-less'!r} file; use .parquet, .csv, "
                        ".jsonl or .txt")
    if kind == "txt":
        if context_column is not None:
            raise DataError(f"{path}: a .txt file has one prompt per line and no columns, so no context column "
                            f"{context_column!r}; use a .parquet, .csv or .jsonl file with a {context_column!r} column")
        return QuerySource(path, kind, "text", _count_lines(path))
    rows = None
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: cannot be read as parquet: {exc}") from None
        columns, rows = meta.schema_arrow.names, meta.metadata.num_rows
    elif kind == "csv":
        from pyarrow import csv

        try:
            columns = csv.open_csv(path).schema.names
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: cannot be read as csv: {exc}") from None
        rows = max(0, _count_lines(path) - 1)
    else:
        columns = _first_json_keys(path)
        rows = _count_lines(path)
    if prompt_column is not None:
        if prompt_column not in columns:
            raise DataError(f"{path}: no column {prompt_column!r}; it has {columns}")
        column = prompt_column
    else:
        column = next((c for c in PROMPT_COLUMNS if c in columns), None)
        if column is None:
            raise DataError(f"{path}: no prompt column; expected one of {list(PROMPT_COLUMNS)} (or pass "
                            f"--prompt-column), got {columns}")
    if context_column is not None and context_column not in columns and not (
            kind == "jsonl" and _json_has_key(path, context_column)):
        raise DataError(f"{path}: no context column {context_column!r}; it has {columns}")
    return QuerySource(path, kind, column, rows, context_column)


def _chunked(prompts: Iterator[Any], chunk_size: int) -> Iterator[tuple[int, list[Any]]]:
    """``(index of the chunk's first prompt, prompts)`` for consecutive chunks of at most ``chunk_size``."""
    start, chunk = 0, []
    for prompt in prompts:
        chunk.append(prompt)
        if len(chunk) == chunk_size:
            yield start, chunk
            start, chunk = start + len(chunk), []
    if chunk:
        yield start, chunk


def _count_lines(path: Path) -> int:
    """Lines in a text file, counted in 1 MiB blocks (about a second per GB): the progress bar's total. Only an
    estimate of the rows: blank lines, and CSV fields spanning lines, count too."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _first_json_keys(path: Path) -> list[str]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                try:
                    obj = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise DataError(f"{path}: line {number}: not valid JSON ({exc})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}: line {number}: expected a JSON object per line, got "
                                    f"{type(obj).__name__}")
                return list(obj)
    raise DataError(f"{path}: the file is empty")


#: How many JSONL objects `open_source` looks through for a context field absent from the first one.
JSON_PROBE_LINES = 1000


def _json_has_key(path: Path, key: str, limit: int = JSON_PROBE_LINES) -> bool:
    """Whether one of the first ``limit`` objects of a JSONL file has ``key`` (bad lines are skipped here: reading
    reports them with their line number)."""
    seen = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                obj = None
            if isinstance(obj, dict) and key in obj:
                return True
            seen += 1
            if seen >= limit:
                break
    return False


def _context_value(value: Any, where: str) -> str | None:
    """One query's context as `Router.route` takes it: text as is, a number (or other scalar) as its string form,
    null, NaN or blank as None (unknown); a list or object is a `DataError` (``where`` names the file and row)."""
    if value is None or isinstance(value, str):
        return value if value is not None and value.strip() else None
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: the context is a {type(value).__name__}, not a single value")
    if isinstance(value, float) and value != value:
        return None
    return str(value)


def context_values(values: pa.Array | pa.ChunkedArray, name: str | Path, column: str) -> list[str | None]:
    """Contexts of a chunk (see `_context_value`), or `DataError` naming the file ``name`` and the ``column`` when
    it holds lists or structs rather than one value per row."""
    if pa.types.is_nested(values.type):
        raise DataError(f"{name}: column {column!r} holds {values.type}, not one context per row")
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or pa.types.is_null(values.type):
        return [v if v is not None and v.strip() else None for v in values.to_pylist()]
    where = f"{name}: column {column!r}"
    return [_context_value(v, where) for v in values.to_pylist()]


def prompt_texts(values: pa.Array | pa.ChunkedArray, source: QuerySource | str, first_row: int | None) -> list[str]:
    """Prompts of a chunk as Python strings, or `DataError` naming the file, the row (1-based, when known:
    ``first_row`` is the chunk's first row index) and the column of the first null, empty or non-text value."""
    name, column = (source.path, source.column) if isinstance(source, QuerySource) else (source, "prompt")
    import pyarrow.compute as pc

    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or pa.types.is_null(values.type)):
        raise DataError(f"{name}: column {column!r} holds {values.type}, not text")
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values.cast(pa.string())), ""), True)
    if pc.any(empty).as_py():
        i = pc.index(empty, True).as_py()
        where = f"row {first_row + i + 1}, " if first_row is not None else ""
        what = "missing (null)" if values[i].as_py() is None else "empty"
        count = pc.sum(empty).as_py()
        more = f" ({count} such rows in this chunk)" if count > 1 else ""
        hint = "" if first_row is not None else " (--engine local names its row)"
        raise DataError(f"{name}: {where}column {column!r}: the prompt is {what}{more}{hint}")
    return values.to_pylist()


# ---------------------------------------------------------------------------------------------------- workers
def _limit_threads(threads: int | None) -> None:
    if threads:
        from radialrouter.core.threads import apply_threads

        apply_threads(threads)


class RouteWorker:
    """Routes chunks of prompts; built once per process (local) or per Ray actor, so the router loads once.

    Args:
        model: a saved router directory, or None for the embedded default.
        lam, candidates: as `Router.route`.
        output: ``"jsonl"`` (returns finished JSON lines) or ``"parquet"`` (returns `DECISION_SCHEMA` columns).
        use_cache: the on-disk embedding cache (see `CACHE_MODES`): ``"auto"`` (default) reads it for a transformer
            encoder, so prompts ``train`` or ``embed`` encoded are not encoded again, and adds nothing to it (routing
            a huge one-off log would grow it by dim × 4 bytes per distinct query); ``"read"`` always reads;
            ``"write"`` (or True) reads and fills it; ``"off"`` (or False) ignores it. A static encoder computes
            faster than the cache reads, so ``"auto"`` leaves the cache alone for it.
        threads: torch/BLAS threads for this worker (None: leave as set).
        column, source_name, text_lines: for `__call__` (Ray): the prompt column, the file named in errors, and
            whether it is a text file (blank lines dropped).
        context_column: the column holding each query's context (`__call__` reads it and passes it to `route`), so
            the output carries a ``context`` field; None: no context.
    """

    def __init__(self, model: str | None = None, lam: float | str | None = None, candidates: list[str] | None = None,
                 output: str = "jsonl", use_cache: bool | str = "auto", cache_dir: str | None = None,
                 threads: int | None = None, column: str = "prompt", source_name: str = "input",
                 text_lines: bool = False, context_column: str | None = None) -> None:
        _limit_threads(threads)
        if model is None:
            from radialrouter.routers.embedded import load_embedded

            self.router = load_embedded()
        else:
            from radialrouter.routers import from_pretrained

            self.router = from_pretrained(model)
        self.lam, self.candidates, self.output = lam, candidates or None, output
        self.column, self.source_name, self.text_lines = column, source_name, text_lines
        self.context_column = context_column
        self.encode = self.router.uses_embeddings and getattr(self.router, "encoder_mode", "frozen") == "frozen"
        if self.encode:
            encoder = self.router.get_encoder()
            mode = cache_mode(use_cache)
            if mode == "auto":
                mode = "off" if encoder.active_backend == "static" else "read"
            if mode == "off":
                encoder.cache_dir = None
            elif cache_dir is not None:  # the driver's cache folder, not whatever a worker's environment says
                encoder.cache_dir = Path(cache_dir)
            encoder.cache_write = mode == "write"
            encoder.load()

    def route(self, texts: list[str], on_progress: Callable[[int], None] | None = None,
              contexts: list[str | None] | None = None) -> pa.Table:
        """Decisions for ``texts`` as a table in this worker's output format; ``on_progress(k)`` is called as the
        encoder finishes each mini-batch (k prompts), so a bar moves within a large chunk. ``contexts``: each
        query's context (str or None), passed to `Router.route` and written next to the prompt."""
        inputs: Any = self.router.get_encoder().encode(texts, on_progress=on_progress) if self.encode else texts
        decisions = self.router.route(inputs, lam=self.lam, candidates=self.candidates, context=contexts)
        if self.output == "jsonl":
            # The fields of Decision.to_dict() read directly: asdict's deep copy was 3/4 of a chunk's time.
            names = [f.name for f in fields(decisions[0])] if decisions else []
            if contexts is None:
                lines = [json.dumps({"prompt": t, **{k: getattr(d, k) for k in names}})
                         for t, d in zip(texts, decisions)]
            else:
                lines = [json.dumps({"prompt": t, "context": c, **{k: getattr(d, k) for k in names}})
                         for t, c, d in zip(texts, contexts, decisions)]
            return pa.table({"line": pa.array(lines, pa.string())})
        context = {} if contexts is None else {"context": pa.array(contexts, pa.string())}
        return pa.table({
            "prompt": pa.array(texts, pa.string()),
            **context,
            "llm": pa.array([d.llm for d in decisions], pa.string()),
            "ranking": pa.array([d.ranking for d in decisions], pa.list_(pa.string())),
            "scores": pa.array([list(d.scores.items()) for d in decisions], _SCORES),
            "probabilities": pa.array([None if d.probabilities is None else list(d.probabilities.items())
                                       for d in decisions], _SCORES),
            "expected_cost_usd": pa.array([d.expected_cost_usd for d in decisions], pa.float64()),
            "lam": pa.array([d.lam for d in decisions], pa.float64()),
        }, schema=decision_schema(contexts is not None))

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Ray Data's entry point: one batch of input rows → its decisions."""
        texts = _batch_texts(batch, self.column, self.source_name, self.text_lines)
        if not texts:
            return (JSONL_SCHEMA if self.output == "jsonl" else decision_schema(self.context_column is not None)
                    ).empty_table()
        return self.route(texts, contexts=_batch_contexts(batch, self.context_column, self.source_name))


class EmbedWorker:
    """Encodes chunks of prompts into the on-disk embedding cache (`QueryEncoder.encode` stores every vector it
    computes); returns one row per chunk with its size, so nothing but counts travels back."""

    def __init__(self, encoder: str = "minilm", cache_dir: str | None = None, threads: int | None = None,
                 column: str = "prompt", source_name: str = "input", text_lines: bool = False) -> None:
        _limit_threads(threads)
        from radialrouter.core.encoders import QueryEncoder

        self.encoder = QueryEncoder(encoder, cache_dir=cache_dir)
        self.encoder.load()
        self.column, self.source_name, self.text_lines = column, source_name, text_lines

    def embed(self, texts: list[str], on_progress: Callable[[int], None] | None = None) -> pa.Table:
        self.encoder.encode(texts, on_progress=on_progress)
        return pa.table({"queries": pa.array([len(texts)], pa.int64())})

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.embed(_batch_texts(batch, self.column, self.source_name, self.text_lines))


def _batch_texts(batch: pa.Table, column: str, source_name: str, text_lines: bool) -> list[str]:
    """A Ray batch's prompts, checked; for a text file (``text_lines``) blank lines are dropped, as locally."""
    if text_lines:
        values = batch.column(column)
        import pyarrow.compute as pc

        return values.filter(pc.invert(pc.equal(pc.utf8_trim_whitespace(values), ""))).to_pylist()
    if column not in batch.column_names:
        raise DataError(f"{source_name}: a batch has no column {column!r} (columns: {batch.column_names})")
    return prompt_texts(batch.column(column), QuerySource(Path(source_name), "", column), None)


def _batch_contexts(batch: pa.Table, column: str | None, source_name: str) -> list[str | None] | None:
    """A Ray batch's contexts (None without a context column). A JSONL block none of whose lines has the field
    lacks the column: its contexts are unknown, as those lines' are on the local engine."""
    if column is None:
        return None
    if column not in batch.column_names:
        return [None] * batch.num_rows
    return context_values(batch.column(column), source_name, column)


# ---------------------------------------------------------------------------------------------------- engines
class Engine(Protocol):
    """Runs a worker over a source's chunks and yields its output tables in input order."""

    name: str

    def run(self, source: QuerySource, worker: type, kwargs: dict[str, Any], chunk_size: int,
            on_progress: Callable[[int], None] | None = None) -> Iterator[pa.Table]:
        """``on_progress(k)``: k more prompts of the current chunk are done (engines that cannot tell ignore it)."""
        ...


class LocalEngine:
    """This process, one chunk at a time: memory ~ one chunk's prompts, vectors and decisions."""

    name = "local"

    def run(self, source: QuerySource, worker: type, kwargs: dict[str, Any], chunk_size: int,
            on_progress: Callable[[int], None] | None = None) -> Iterator[pa.Table]:
        instance = worker(**kwargs)
        if not isinstance(instance, RouteWorker):
            for _, texts in source.chunks(chunk_size):
                yield instance.embed(texts, on_progress=on_progress)
            return
        for _, texts, contexts in source.chunks_with_context(chunk_size):
            yield instance.route(texts, on_progress=on_progress, contexts=contexts)


@dataclass
class RayEngine:
    """Ray Data: read tasks stream the file in blocks, ``workers`` actors (``num_cpus=1`` each, ``threads`` torch
    threads each) run the worker class, each loading the router once; the driver receives the results in input order.

    ``address``: a running cluster (``ray://…`` or ``auto``); default: ``$RAY_ADDRESS`` or a local instance with
    ``workers`` CPUs, started here and stopped when done. Read tasks ask for ``read_cpus`` (a fraction of a CPU:
    reading is light, and whole CPUs would all be held by the actors on a small machine)."""

    workers: int | None = None
    threads: int = 1
    address: str | None = None
    read_cpus: float = 0.25
    object_store_bytes: int | None = None
    block_bytes: int = 4 << 20
    name: str = field(default="ray", init=False)

    def __post_init__(self) -> None:
        try:  # fail before any output file is created
            import ray  # noqa: F401
        except ImportError:
            raise DataError("--engine ray needs Ray: pip install 'radialrouter[ray]'") from None

    def _start(self) -> bool:
        import ray

        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS")
        local = {} if address else {"num_cpus": self.n_workers() + 1, "object_store_memory": self.object_store_bytes}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}, **local)
        return True

    def n_workers(self) -> int:
        """The actors to ask a local instance for: ``workers`` or one per core."""
        return self.workers or max(1, os.cpu_count() or 1)

    def _actors(self) -> int:
        """Actors that fit the running instance beside the read tasks (an actor pool larger than the free CPUs
        would wait for ever for its last actors while holding every CPU the readers need)."""
        import ray

        total = float(ray.cluster_resources().get("CPU", 1))
        room = max(1, int(total - self.read_cpus))
        wanted = self.workers or room
        if wanted > room:
            warnings.warn(f"{wanted} Ray workers asked for, but the Ray instance has {total:g} CPUs and its read "
                          f"tasks need {self.read_cpus:g}: using {room}", stacklevel=3)
        return min(wanted, room)

    def run(self, source: QuerySource, worker: type, kwargs: dict[str, Any], chunk_size: int,
            on_progress: Callable[[int], None] | None = None) -> Iterator[pa.Table]:
        # on_progress is not called: the actors' mini-batches happen in other processes; the bar moves per chunk
        started = self._start()
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # output row i = input row i, as the local engine
        ctx.enable_progress_bars = False  # ours counts rows; Ray's would interleave with it on stderr
        ctx.print_on_execution_start = False
        # Blocks of a few MB, so that even a single-file input reaches every actor (Ray's default, 128 MiB, makes
        # a million short queries one block, i.e. one busy actor), and is read while earlier blocks are routed.
        ctx.target_max_block_size = self.block_bytes
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        path, read = str(source.path), {"num_cpus": self.read_cpus}
        if source.kind == "parquet":
            ds = ray.data.read_parquet(path, columns=source.columns(), **read)
        elif source.kind == "csv":
            from pyarrow import csv

            ds = ray.data.read_csv(path, convert_options=csv.ConvertOptions(
                include_columns=source.columns(), column_types=dict.fromkeys(source.columns(), pa.string()),
                strings_can_be_null=False), **read)
        elif source.kind == "jsonl":
            ds = ray.data.read_json(path, lines=True, **read)
        else:
            ds = ray.data.read_text(path, drop_empty_lines=True, **read)
        ds = ds.map_batches(worker, fn_constructor_kwargs={**kwargs, "column": source.column,
                                                             "source_name": str(source.path),
                                                             "text_lines": source.kind == "txt",
                                                             "threads": self.threads},
                            batch_size=chunk_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=self._actors()), num_cpus=1,
                            zero_copy_batch=True)
        try:
            yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
        except Exception as exc:
            raise _unwrap_ray_error(exc) from None
        finally:
            if started:
                ray.shutdown()


def _unwrap_ray_error(exc: Exception) -> Exception:
    """A worker's `DataError` (or other `ValueError`) reaches the driver as Ray's task error, whose message is the
    remote traceback: give back its last line, one line the CLI prints as a user error."""
    import re

    found = re.findall(r"^(?:radialrouter\.[\w.]+Error|ValueError|FileNotFoundError): (.+)$", str(exc), re.M)
    return DataError(found[-1]) if found else exc


def make_engine(engine: str | Engine, *, workers: int | None = None, threads: int = 1,
                address: str | None = None) -> Engine:
    """An engine from its name (``"local"`` or ``"ray"``), or ``engine`` itself."""
    if not isinstance(engine, str):
        return engine
    if engine == "local":
        return LocalEngine()
    if engine == "ray":
        return RayEngine(workers=workers, threads=threads, address=address)
    raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")


# ---------------------------------------------------------------------------------------------------- writing
class DecisionWriter:
    """Writes decision tables as they come: JSONL line by line, parquet one row group per chunk."""

    def __init__(self, path: str | Path | None, kind: str | None = None, schema: pa.Schema = DECISION_SCHEMA) -> None:
        self.path = None if path is None else Path(path)
        self.kind = kind or (output_kind(self.path) if self.path is not None else "jsonl")
        self.schema = schema  # parquet: `decision_schema`, with a context column or not
        self._parquet = None
        self._text: IO[str] | None = None
        self.rows = 0

    def __enter__(self) -> DecisionWriter:
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self.path, self.schema)
        else:
            self._text = sys.stdout if self.path is None else open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        return self

    def write(self, table: pa.Table) -> None:
        if self._parquet is not None:
            self._parquet.write_table(table.cast(self.schema) if table.schema != self.schema else table)
        else:
            lines = table.column("line").to_pylist()
            self._text.write("".join(line + "\n" for line in lines))
        self.rows += table.num_rows

    def __exit__(self, *exc: object) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self._text is not None and self._text is not sys.stdout:
            self._text.close()
        else:
            sys.stdout.flush()


def output_kind(path: str | Path) -> str:
    kind = OUTPUT_KINDS.get(Path(path).suffix.lower())
    if kind is None:
        raise DataError(f"{path}: cannot write decisions to a {Path(path).suffix or 'suffix-less'!r} file; use "
                        ".jsonl or .parquet")
    return kind


# ---------------------------------------------------------------------------------------------------- entry points
@dataclass
class BatchSummary:
    """What a batch run did: rows in and out, seconds, rows per second, and the engine."""

    rows: int
    seconds: float
    engine: str
    output: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


#: ``use_cache`` values of `route_file` / `RouteWorker` (True means "write", False "off").
CACHE_MODES = ("auto", "read", "write", "off")


def cache_mode(use_cache: bool | str) -> str:
    """Normalise ``use_cache`` to one of `CACHE_MODES`, with a one-line error for anything else."""
    if use_cache is True or use_cache is False:
        return "write" if use_cache else "off"
    if use_cache not in CACHE_MODES:
        raise ValueError(f"use_cache must be one of {', '.join(CACHE_MODES)} (or True/False); got {use_cache!r}")
    return use_cache


class _ChunkBar:
    """Moves a bar as work within a chunk finishes (``tick``), then by the rest of the chunk when it is written
    (``chunk_done``): the bar never runs ahead of the rows written, nor lags a whole chunk behind."""

    def __init__(self, bar) -> None:
        self.bar, self.ahead = bar, 0

    def tick(self, n: int) -> None:
        self.bar.update(n)
        self.ahead += n

    def chunk_done(self, rows: int) -> None:
        self.bar.update(max(rows - self.ahead, 0))
        self.ahead = 0


def _progress(total: int | None, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q", disable=not show, file=sys.stderr, dynamic_ncols=True)


def route_file(input_path: str | Path, output: str | Path | None = None, *, model: str | None = None,
               lam: float | str | None = None, candidates: list[str] | None = None, engine: str | Engine = "local",
               chunk_size: int = DEFAULT_CHUNK, prompt_column: str | None = None, use_cache: bool | str = "auto",
               progress: bool = True, workers: int | None = None, address: str | None = None,
               on_chunk: Callable[[int], None] | None = None,
               on_progress: Callable[[int], None] | None = None,
               context_column: str | None = None) -> BatchSummary:
    """Route every query of ``input_path`` and write the decisions to ``output`` (JSONL or parquet by suffix;
    None: JSONL on stdout), chunk by chunk. Returns what was done.

    ``context_column``: the column (or JSON field) holding each query's context, for a router trained with one
    (``ensemble`` with ``context=True``; others ignore it); the output then has a ``context`` field or column.

    ``use_cache``: see `RouteWorker` (default ``"auto"``: a transformer encoder reads the embedding cache, so what
    ``train`` encoded is not encoded again; nothing is added to it). The bar (and ``on_progress``) advance per
    encoder mini-batch within a chunk on the local engine; ``on_chunk`` per chunk written."""
    from radialrouter.core.encoders import default_cache_dir

    source = open_source(input_path, prompt_column, context_column)
    kind = output_kind(output) if output is not None else "jsonl"
    if output is not None and Path(output).resolve() == source.path.resolve():
        raise DataError(f"{output}: the output would overwrite the input")
    runner = make_engine(engine, workers=workers, address=address)
    kwargs = {"model": model, "lam": lam, "candidates": candidates, "output": kind,
              "use_cache": cache_mode(use_cache), "cache_dir": str(default_cache_dir()),
              "context_column": context_column}
    start = time.perf_counter()
    schema = decision_schema(context_column is not None)
    with DecisionWriter(output, kind, schema) as writer, _progress(source.rows, "routing", progress) as bar:
        moving = _ChunkBar(bar)

        def tick(n: int) -> None:
            moving.tick(n)
            if on_progress is not None:
                on_progress(n)

        for table in runner.run(source, RouteWorker, kwargs, chunk_size, on_progress=tick):
            writer.write(table)
            moving.chunk_done(table.num_rows)
            if on_chunk is not None:
                on_chunk(table.num_rows)
    return BatchSummary(writer.rows, time.perf_counter() - start, runner.name, None if output is None else str(output))


def embed_file(data: str | Path, *, encoder: str = "minilm", engine: str | Engine = "local",
               chunk_size: int = DEFAULT_CHUNK, prompt_column: str | None = None, cache_dir: str | Path | None = None,
               progress: bool = True, workers: int | None = None, address: str | None = None) -> BatchSummary:
    """Encode every prompt of ``data`` into the embedding cache of ``encoder`` (so `train`, `eval` and `bench` on
    the same prompts compute no embedding), chunk by chunk. ``extra`` reports the cache file and its size."""
    from radialrouter.core.encoders import QueryEncoder, default_cache_dir

    source = open_source(data, prompt_column)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    runner = make_engine(engine, workers=workers, address=address)
    kwargs = {"encoder": encoder, "cache_dir": str(cache)}
    start, rows = time.perf_counter(), 0
    with _progress(source.rows, "embedding", progress) as bar:
        moving = _ChunkBar(bar)
        for table in runner.run(source, EmbedWorker, kwargs, chunk_size, on_progress=moving.tick):
            n = sum(table.column("queries").to_pylist())
            rows += n
            moving.chunk_done(n)
    seconds = time.perf_counter() - start
    probe = QueryEncoder(encoder, cache_dir=cache)
    file = cache / f"embeddings-{probe.fingerprint()}.sqlite"
    return BatchSummary(rows, seconds, runner.name, str(file), {"cached_vectors": _count_rows(file),
                                                                 "encoder": probe.identity["name"]})


def _count_rows(path: Path) -> int:
    import sqlite3

    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM emb").fetchone()[0])


__all__ = ["CACHE_MODES", "DECISION_SCHEMA", "BatchSummary", "DecisionWriter", "EmbedWorker", "Engine", "LocalEngine",
           "QuerySource", "RayEngine", "RouteWorker", "context_values", "decision_schema", "embed_file", "make_engine",
           "open_source", "prompt_texts", "route_file"]
