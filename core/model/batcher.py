"""A small asyncio micro-batcher: requests that arrive within a few milliseconds share one forward.

`fuse serve` answers each HTTP request in the event loop; the model is fastest on a batch, and
one forward per request would leave it idle between tiny ones. Requests are queued with a key
(what runs them, e.g. ("search", "text")); the worker takes the first, waits ``wait_ms`` for
more, up to ``max_batch`` inputs, and runs each key's inputs as one call in a single worker
thread (so the model is used by one thread at a time and the event loop keeps serving).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Request:
    key: tuple
    inputs: list
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher did: requests answered and batch calls (forwards) made."""

    requests: int = 0
    batches: int = 0
    inputs: int = 0
    largest: int = 0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "inputs": self.inputs, "largest": self.largest}


class MicroBatcher:
    """``await submit(key, inputs)`` returns ``run(key, inputs_of_many_requests)``'s outputs for these inputs.

    ``run(key, inputs) -> list`` gets at most ``max_batch`` inputs (one request may not hold more) and
    returns one output per input, in order. A failing call fails the requests of that call only."""

    def __init__(self, run: Callable[[tuple, list], list], max_batch: int = 32, wait_ms: float = 5.0):
        self.run, self.max_batch, self.wait = run, max_batch, wait_ms / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuse-serve-model")

    async def submit(self, key: tuple, inputs: list) -> list:
        if not 0 < len(inputs) <= self.max_batch:
            raise ValueError(f"a request holds 1 to {self.max_batch} inputs, not {len(inputs)}")
        if self._worker is None:  # started in the serving loop, on first use
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(key, list(inputs), future))
        return await future

    async def close(self) -> None:
        """Stop the worker (requests still queued are cancelled) and the model thread."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()
            self._worker = None
        self._thread.shutdown(wait=True)

    async def _collect(self) -> list[_Request]:
        """The first waiting request and whatever arrives within ``wait`` after it, up to ``max_batch`` inputs."""
        loop = asyncio.get_running_loop()
        taken = [await self._queue.get()]
        size, deadline = len(taken[0].inputs), loop.time() + self.wait
        while size < self.max_batch:
            try:
                more = self._queue.get_nowait() if not self._queue.empty() else \
                    await asyncio.wait_for(self._queue.get(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                break
            taken.append(more)
            size += len(more.inputs)
        return taken

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            taken = await self._collect()
            by_key: dict[tuple, list[_Request]] = {}
            for request in taken:
                by_key.setdefault(request.key, []).append(request)
            for key, requests in by_key.items():
                for group in _fill(requests, self.max_batch):
                    inputs = [x for r in group for x in r.inputs]
                    try:
                        outputs = await loop.run_in_executor(self._thread, self.run, key, inputs)
                    except Exception as exc:  # noqa: BLE001 - handed to the requests that asked, not lost
                        for r in group:
                            if not r.future.done():
                                r.future.set_exception(exc)
                        continue
                    self._count(len(group), len(inputs))
                    at = 0
                    for r in group:
                        if not r.future.done():  # a client that went away cancelled its future
                            r.future.set_result(outputs[at:at + len(r.inputs)])
                        at += len(r.inputs)

    def _count(self, requests: int, inputs: int) -> None:
        s = self.stats
        s.requests, s.batches, s.inputs, s.largest = (s.requests + requests, s.batches + 1, s.inputs + inputs,
                                                      max(s.largest, inputs))


def _fill(requests: list[_Request], limit: int) -> list[list[_Request]]:
    """Requests in arrival order, cut into groups of at most ``limit`` inputs (a request is never split)."""
    groups, size = [[]], 0
    for r in requests:
        if groups[-1] and size + len(r.inputs) > limit:
            groups.append([])
            size = 0
        groups[-1].append(r)
        size += len(r.inputs)
    return groups

