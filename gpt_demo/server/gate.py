"""Model work off the event loop: a bounded number of jobs at once, a bounded queue, streams in a thread.

    gate = JobGate(concurrency=2, max_queue=64)
    result = await gate.run(engine_call, *args)          # one blocking job
    await gate.acquire()                                 # a stream: 503 now rather than mid-stream
    async for item in gate.iterate(make_generator): ...  # the slot is released when the thread ends

Each job runs in the gate's own thread pool (``concurrency`` threads), so the event loop only
ever moves bytes. A stream runs its whole generator in one worker thread that hands items to
the loop; when the consumer goes away (the client disconnected) the worker stops at the next
item and closes the generator, which ends the decode loop: no tokens are made for nobody.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import AsyncIterator, Callable, Iterator

from .errors import APIError

_DONE = object()


class JobGate:
    """At most ``concurrency`` model jobs at once; at most ``max_queue`` waiting (more get a 503)."""

    def __init__(self, concurrency: int, max_queue: int):
        for name, value in (("concurrency", concurrency), ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "concurrency" else 0):
                raise ValueError(f"{name}={value!r} is out of range; allowed: {name} >= "
                                 f"{1 if name == 'concurrency' else 0}")
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None  # made in the serving loop on first use
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gpt-demo-api")

    def describe(self) -> dict:
        return {"running": self.running, "waiting": self.waiting, "concurrency": self.concurrency,
                "max_queue": self.max_queue}

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue; a full queue is a 503 (OpenAI's 'overloaded')."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        if self._sem.locked() and self.waiting >= self.max_queue:
            raise APIError(503, f"The server is busy: {self.running} requests are running and {self.waiting} are "
                                f"waiting, the most it queues (max_queue={self.max_queue}). Retry shortly.",
                           code="server_overloaded", headers={"Retry-After": "1"})
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._sem.release()

    async def run(self, fn: Callable, *args, **kwargs):
        """Run the blocking ``fn(*args, **kwargs)`` in a slot and return its result."""
        await self.acquire()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args, **kwargs))
        finally:
            self.release()

    async def iterate(self, factory: Callable[[], Iterator], slot: dict | None = None) -> AsyncIterator:
        """Items of the generator ``factory()``, produced in a worker thread; the caller holds a slot.

        The slot is released when the worker ends, not when the consumer stops, so the bound is on
        real model work. Closing this async generator stops the worker at its next item.
        ``slot["held"]`` is set False once the worker owns the slot (the caller releases it otherwise).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (server shutting down)
                stop.set()

        def work() -> None:
            gen = None
            try:
                gen = factory()
                for item in gen:
                    if stop.is_set():
                        break
                    put((True, item))
                put((True, _DONE))
            except BaseException as exc:  # handed to the consumer, which raises it
                put((False, exc))
            finally:
                if gen is not None:
                    gen.close()  # runs decode's cleanup; no more forward passes

        if slot is not None:
            slot["held"] = False
        try:
            future = loop.run_in_executor(self._executor, work)
        except BaseException:
            self.release()
            raise
        future.add_done_callback(lambda _f: self.release())
        try:
            while True:
                ok, item = await queue.get()
                if not ok:
                    raise item
                if item is _DONE:
                    return
                yield item
        finally:
            stop.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
