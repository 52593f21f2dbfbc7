"""Asyncio micro-batchers: concurrent requests share one encoder/router call — in a worker thread (`MicroBatcher`),
or on the event loop itself for the requests of one turn of the loop (`TurnBatcher`, for routers cheap enough).

Encoding 16 queries in one forward pass costs little more than encoding one, so under load the batcher collects
what arrives within ``max_wait_s`` (or until ``max_size``) and while a batch runs the next one fills up. There the
event loop never runs the model; one worker thread does, one batch at a time.

Isolation: a result that is an exception goes to its own caller only, and when the batch function itself raises,
each item is retried alone, so one poisonous request fails by itself instead of failing everyone batched with it.
The queue is bounded: past ``max_queue`` waiting items `submit` raises `QueueFull` at once (the server answers
503 with Retry-After) instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(RuntimeError):
    """More items are waiting than ``max_queue``."""


class MicroBatcher(Generic[T, R]):
    """``await batcher.submit(item)`` → ``fn([... item ...])[i]``. ``fn`` returns one result per item; a result
    that is an exception is raised to that item's caller only; if ``fn`` raises, every item is retried alone."""

    def __init__(self, fn: Callable[[list[T]], list[R | BaseException]], max_size: int = 32,
                 max_wait_s: float = 0.002, on_batch: Callable[[int], None] | None = None,
                 max_queue: int = 0) -> None:
        self.fn, self.max_size, self.max_wait_s, self.on_batch = fn, max_size, max_wait_s, on_batch
        self.max_queue = max_queue
        self._queue: asyncio.Queue[tuple[T, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radialrouter-route")
        self._task = asyncio.create_task(self._run(), name="radialrouter-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._task = self._executor = None

    async def submit(self, item: T) -> R:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise QueueFull(f"{self._queue.qsize()} requests are already waiting") from None
        return await future

    def _call(self, items: list[T]) -> list[R | BaseException]:
        """Run in the worker thread: the whole batch, or each item alone if the batch raises."""
        return call_isolated(self.fn, items)

    async def _collect(self) -> list[tuple[T, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # callers that gave up are skipped
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(len(live))
            _settle(live, await loop.run_in_executor(self._executor, self._call, [item for item, _ in live]))


class TurnBatcher(Generic[T, R]):
    """``await batcher.submit(item)`` → ``fn([... item ...])[i]`` on the event loop itself, for every item submitted
    during one turn of the loop, at the start of the next one.

    Why: when routing is cheap enough to run on the loop (`server.routing_thread: auto`), a decision's cost is
    mostly fixed per call, and under load requests arrive in bursts that the loop starts in one turn — one call
    for a burst of 4 costs about half per request of one call each, a third for 16. Nothing waits on a clock, so an
    item is deferred by one turn at most (the server decides at once when a request is the only one in flight).
    Same isolation as `MicroBatcher`: a failing batch is retried one item at a time."""

    def __init__(self, fn: Callable[[list[T]], list[R | BaseException]], max_size: int = 32,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.fn, self.max_size, self.on_batch = fn, max_size, on_batch
        self._pending: list[tuple[T, asyncio.Future]] = []

    def submit(self, item: T) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        live = [(item, fut) for item, fut in pending if not fut.done()]  # callers that gave up are skipped
        for start in range(0, len(live), self.max_size):
            part = live[start:start + self.max_size]
            if self.on_batch is not None:
                self.on_batch(len(part))
            _settle(part, call_isolated(self.fn, [item for item, _ in part]))


def call_isolated(fn: Callable[[list[T]], list[R | BaseException]], items: list[T]) -> list[R | BaseException]:
    """``fn(items)``, or each item alone if the batch raises: one poisonous item fails by itself."""
    try:
        return _checked(fn, items)
    except Exception as exc:  # noqa: BLE001 - isolated below
        if len(items) == 1:
            return [exc]
    out: list[R | BaseException] = []
    for item in items:
        try:
            out.extend(_checked(fn, [item]))
        except Exception as exc:  # noqa: BLE001 - this item's own failure
            out.append(exc)
    return out


def _checked(fn: Callable[[list[T]], list[R | BaseException]], items: list[T]) -> list[R | BaseException]:
    results = fn(items)
    if len(results) != len(items):
        raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
    return results


def _settle(batch: list[tuple[T, asyncio.Future]], results: list[R | BaseException]) -> None:
    """Each caller gets its own result or exception (a caller that gave up meanwhile is skipped)."""
    for (_, fut), result in zip(batch, results):
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
