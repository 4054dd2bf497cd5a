"""One scheduler per loaded model: every request joins a running batch and leaves it when done.

    >>> sched = Scheduler(loaded, SchedulerConfig(max_batch=8))              # doctest: +SKIP
    >>> gen = sched.generate(prompt_ids, GenerationParams(max_tokens=32))     # doctest: +SKIP
    >>> completion = run_to_end(gen)        # or iterate: Delta(index, text) as they come  # doctest: +SKIP

``generate`` has ``decoding.decode``'s contract (a generator of ``Delta`` that returns the
``Completion``), so the engine hands either to every front-end. One worker thread owns the
lean model's forward passes (continuous batching, as vLLM, TGI and llama.cpp's server do):

- **Join at any step.** A waiting request is admitted as soon as its rows fit: its prompt is
  prefilled into free rows ("slots") of one shared KV cache, ``prefill_chunk`` tokens per
  worker step, so the streams already running go on between chunks; then its rows join the
  next decode step. A finished row leaves at once and frees its slot.
- **Own parameters.** Each request keeps a ``RequestState``: its seeded generator, penalty
  counts, stops, logprobs, ``max_tokens``; ``n``/``best_of`` are child rows that copy the
  prompt's prefilled keys. Every row attends over exactly its own keys and the matrix kernels
  treat rows independently, so an answer is the same, token for token, whatever else runs.
- **Admission.** At most ``max_batch`` rows generate together. The KV cache is one dense block
  that keeps room for its longest sequence in every row, so a request joins only while
  ``rows x longest (prompt + max_tokens)`` stays within ``max_batch_tokens``; one that needs
  more still runs when it is alone. At most ``max_queue`` wait (first in, first out); the next
  one gets ``Busy``, which the web app shows as a message and the API as a 503.
- **Memory comes back.** The cache grows by doubling as rows lengthen; once its longest row
  holds under a quarter of it, it shrinks to twice that row, and when the batch drains it goes
  back to its first size (``cache_mb`` in ``stats()``).
- **Cancel.** Closing the stream (the Stop button, a dropped HTTP stream), or dropping it
  unread, frees the request's slots before the next step.
- **Exclusive work** (eager-attention maps, anything taking ``forward_guard(model).exclusive()``)
  waits for the step in flight and runs between two steps: each step holds the guard's shared
  side, and the guard prefers writers.

Only the lean CPU path (``models.lean_llama``) is batched this way; a model it cannot serve
(CUDA, bitsandbytes, another architecture) runs one ``decode`` per request.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Generator

import torch

from ..models.guard import forward_guard
from .decoding import Delta, RequestState, select_best
from .params import GenerationParams
from .results import Completion


class Busy(RuntimeError):
    """The model's queue is full; try again later (HTTP 503)."""


@dataclass(frozen=True)
class SchedulerConfig:
    """How many requests share the model, and how they are let in."""

    max_batch: int = field(default=8, metadata={"help": "Rows (sequences) decoded together in one step."})
    max_queue: int = field(default=64, metadata={"help": "Requests that may wait for a slot; more get Busy."})
    max_batch_tokens: int = field(
        default=65536, metadata={"help": "KV-cache positions the running batch may hold: rows x its longest "
                                         "sequence (prompt + max_tokens)."}
    )
    prefill_chunk: int = field(
        default=128, metadata={"help": "Prompt tokens prefilled per worker step, between decode steps of the others."}
    )

    def __post_init__(self) -> None:
        for name, low in (("max_batch", 1), ("max_queue", 1), ("max_batch_tokens", 1), ("prefill_chunk", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not allowed; give an integer >= {low}")

    @classmethod
    def from_limits(cls, limits) -> "SchedulerConfig":
        return cls(max_batch=limits.concurrency, max_queue=limits.max_queue,
                   max_batch_tokens=limits.max_batch_tokens, prefill_chunk=limits.prefill_chunk)


_DONE = object()
FIRST_CAPACITY = 256  # tokens per row the cache starts with (and returns to when the batch drains)
_schedulers: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Let each worker finish its step before the interpreter goes (a thread killed inside ATen aborts)."""
    for scheduler in list(_schedulers):
        scheduler.close()


class _Request:
    def __init__(self, state: RequestState):
        self.state = state
        self.events: queue.Queue = queue.Queue()  # Delta, then (_DONE, Completion) or an exception
        self.cancelled = False
        self.slots: list[int] = []  # the cache row of each active row of ``state``
        self.prefilled = 0  # prompt tokens already in the cache
        self.logits: torch.Tensor | None = None  # (active rows, vocab): what the next take() reads
        self.need = len(state.prompt_ids) + state.budget  # cache positions its longest row may use
        self.finished = False
        self.cancelled_at: int | None = None  # worker step when cancel() came, and when the worker dropped it
        self.dropped_at: int | None = None


class Stream:
    """A queued request's stream: a generator of ``Delta`` that returns the ``Completion``.

    Unlike a bare generator, closing it (or dropping it) cancels the request even if it was
    never started, so a stream nobody reads never holds its place in the batch.
    """

    def __init__(self, scheduler: "Scheduler", request: "_Request", gen):
        self.scheduler, self.request, self._gen = scheduler, request, gen

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    def send(self, value):
        return self._gen.send(value)

    def throw(self, *exc):
        return self._gen.throw(*exc)

    def close(self) -> None:
        self._gen.close()
        self.scheduler.cancel(self.request)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Scheduler:
    """The owner of one lean model's forward passes; see the module docstring."""

    def __init__(self, loaded, config: SchedulerConfig | None = None):
        if getattr(loaded, "lean", None) is None:
            raise ValueError("loaded.lean is None: the scheduler batches the lean CPU path only (decode='auto', "
                             "'int4' or 'bf16' on the CPU); other models run one decode per request")
        self.loaded, self.lean = loaded, loaded.lean
        self.config = config or SchedulerConfig()
        self.cache = self.lean.new_cache(self.config.max_batch, capacity=FIRST_CAPACITY)
        self._free = list(range(self.config.max_batch))
        self._waiting: deque[_Request] = deque()
        self._prefilling: _Request | None = None
        self._running: list[_Request] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.served = 0  # requests accepted so far
        self.steps = 0  # worker iterations so far (tests wait on it with wait_for)
        _schedulers.add(self)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after its current step; waiting and running requests get a RuntimeError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- what callers use -------------------------------------------------------------
    def generate(self, prompt_ids: list[int], params: GenerationParams, *, ignore_eos: bool = False,
                 rank_by=None) -> Generator[Delta, None, Completion]:
        """Queue a request now and return its stream: ``decoding.decode``'s contract, batched with the rest.

        The request is queued at once (a bad prompt or a full queue raises here), so several
        generators made one after another run together even if they are drained one by one.
        """
        request = _Request(RequestState(self.loaded, prompt_ids, params, ignore_eos=ignore_eos))
        self._submit(request)
        return Stream(self, request, self._stream(request, params, rank_by))

    def _stream(self, request: _Request, params: GenerationParams, rank_by) -> Generator[Delta, None, Completion]:
        finished = False
        try:
            while True:
                item = request.events.get()
                if isinstance(item, Delta):
                    yield item
                elif isinstance(item, tuple) and item[0] is _DONE:
                    finished = True
                    completion = item[1]
                    if params.best_of is not None:  # ranked here, in the caller's thread (a reward model is slow)
                        completion.choices = select_best(completion.choices, params.n, rank_by)
                    return completion
                else:
                    finished = True
                    raise item
        finally:
            if not finished:
                self.cancel(request)

    def cancel(self, request: _Request) -> None:
        with self._cond:
            if not request.cancelled and not request.finished:
                request.cancelled = True
                request.cancelled_at = self.steps
                self._cond.notify_all()

    def stats(self) -> dict:
        """running, waiting, prefilling (requests), rows (slots in use), steps (worker iterations), served (requests),
        cache_tokens (positions per row the KV cache holds room for), cache_mb (its memory)."""
        with self._cond:
            return self._stats_locked()

    def wait_for(self, predicate, timeout: float | None = None) -> bool:
        """Block until ``predicate(stats())`` holds (every worker step wakes it); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._stats_locked()), timeout)

    def _stats_locked(self) -> dict:
        return {"running": len(self._running), "waiting": len(self._waiting),
                "prefilling": int(self._prefilling is not None), "rows": self.cache.batch - len(self._free),
                "max_batch": self.config.max_batch, "steps": self.steps, "served": self.served,
                "cache_tokens": self.cache.capacity, "cache_mb": round(self.cache.nbytes / 2**20, 1)}

    # -- the worker -------------------------------------------------------------------
    def _submit(self, request: _Request) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if len(self._waiting) >= self.config.max_queue:
                raise Busy(f"the model is busy: {len(self._waiting)} requests are already waiting "
                           f"(max_queue={self.config.max_queue}); try again shortly")
            self._waiting.append(request)
            self.served += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="gpt-demo-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            try:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed or self._waiting or self._prefilling or self._running)
                    if self._closed:
                        gone = RuntimeError("the scheduler was closed")
                        for request in list(self._waiting) + self._in_flight():
                            request.events.put(gone)
                        return
                    self._drop_cancelled()
                    self._admit()
                    prefilling, running = self._prefilling, list(self._running)
                with forward_guard(self.loaded.model).shared(), torch.inference_mode():
                    if prefilling is not None:
                        self._prefill_chunk(prefilling)
                    self._decode_step(running)
            except Exception as exc:  # fail the requests in flight, keep serving the queue
                with self._cond:
                    for request in self._in_flight():
                        self._finish(request, exc)
            with self._cond:
                self._fit_cache()
                self.steps += 1
                self._cond.notify_all()

    def _in_flight(self) -> list[_Request]:
        return self._running + ([self._prefilling] if self._prefilling is not None else [])

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._waiting if r.cancelled]:
            self._waiting.remove(request)
            request.dropped_at = self.steps
        if self._prefilling is not None and self._prefilling.cancelled:
            self._release(self._prefilling)
            self._prefilling.dropped_at = self.steps
            self._prefilling = None
        for request in [r for r in self._running if r.cancelled]:
            self._running.remove(request)
            self._release(request)
            request.dropped_at = self.steps

    def _fit_cache(self) -> None:
        """Give back cache memory the rows no longer need (see "Memory comes back" above)."""
        if not self._in_flight():
            if self.cache.capacity > FIRST_CAPACITY or self.cache.batch > self.config.max_batch:
                self.cache = self.lean.new_cache(self.config.max_batch, capacity=FIRST_CAPACITY)
                self._free = list(range(self.config.max_batch))
            return
        longest = int(self.cache.lengths.max())
        if self.cache.capacity > max(FIRST_CAPACITY, 4 * longest):
            self.cache.shrink(max(FIRST_CAPACITY, 2 * longest))

    def _holds(self, joining: _Request) -> int:
        """Cache positions the batch would hold with ``joining`` in it: every row, as long as the longest."""
        longest = max([r.need for r in self._in_flight()] + [joining.need])
        return self.cache.batch * longest

    def _admit(self) -> None:
        """Start prefilling the first waiting request if its rows and tokens fit (FIFO: no overtaking)."""
        if self._prefilling is not None or not self._waiting:
            return
        request = self._waiting[0]
        alone = not self._running
        rows = request.state.rows
        in_use = self.cache.batch - len(self._free)
        if not alone and (in_use + rows > self.config.max_batch
                          or self._holds(request) > self.config.max_batch_tokens):
            return
        if rows > len(self._free):  # a request with more rows than the batch, running alone: widen the cache
            self._free += self.cache.add_slots(rows - len(self._free))
        self._waiting.popleft()
        request.slots, self._free = self._free[:rows], self._free[rows:]
        self.cache.lengths[request.slots] = 0
        self._prefilling = request

    def _release(self, request: _Request) -> None:
        self._free_slots(request.slots)
        request.slots = []

    def _free_slots(self, slots: list[int]) -> None:
        if slots:
            self.cache.lengths[slots] = 0  # a free slot reserves no room when the cache grows
        self._free = sorted(self._free + slots)

    def _finish(self, request: _Request, outcome) -> None:
        request.finished = True
        if request in self._running:
            self._running.remove(request)
        if self._prefilling is request:
            self._prefilling = None
        self._release(request)
        request.events.put(outcome)

    def _prefill_chunk(self, request: _Request) -> None:
        ids = request.state.prompt_ids
        chunk = ids[request.prefilled : request.prefilled + self.config.prefill_chunk]
        first = request.slots[0]
        self.cache.reserve(len(chunk))
        view = self.cache.slot_view(first)
        logits = self.lean.forward(torch.tensor([chunk]), view)  # (1, vocab)
        self.cache.lengths[first] = view.lengths[0]
        request.prefilled += len(chunk)
        if request.prefilled < len(ids):
            return
        self.cache.copy_slot(first, request.slots[1:])  # n / best_of: the children share the prompt's keys
        request.logits = logits.expand(request.state.rows, -1)
        with self._cond:
            self._prefilling = None
            self._running.append(request)

    def _decode_step(self, running: list[_Request]) -> None:
        with self._cond:
            joined = [r for r in self._running if r.logits is not None and r not in running]
        batch: list[_Request] = []
        for request in running + joined:
            if request.cancelled:
                continue
            keep, next_ids, deltas = request.state.take(request.logits)
            for delta in deltas:
                request.events.put(delta)
            with self._cond:
                leaving = [slot for b, slot in enumerate(request.slots) if b not in set(keep)]
                self._free_slots(leaving)
                request.slots = [request.slots[b] for b in keep]
                if request.state.done:
                    tails, completion = request.state.complete(select=False)
                    for delta in tails:
                        request.events.put(delta)
                    self._finish(request, (_DONE, completion))
                    continue
            request.next_ids = next_ids
            batch.append(request)
        if not batch:
            return
        tokens = torch.cat([r.next_ids for r in batch])
        slots = torch.tensor([s for r in batch for s in r.slots], dtype=torch.long)
        logits = self.lean.decode_slots(tokens, self.cache, slots)  # (rows, vocab)
        start = 0
        for request in batch:
            request.logits = logits[start : start + len(request.slots)]
            start += len(request.slots)
