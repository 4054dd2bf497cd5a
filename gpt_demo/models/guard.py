"""Many forward passes at once, or one exclusive change to how the model runs.

    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> with forward_guard(model).shared():       # every ordinary forward pass
    ...     _ = model(torch.zeros(1, 2))
    >>> with forward_guard(model).exclusive():    # e.g. switching attention to eager and back
    ...     pass

The look-inside path switches the shared model to eager attention for one forward pass.
transformers builds the causal mask once per pass (none at all under SDPA without padding)
and each layer reads the attention implementation again, so a pass that overlaps the
switch could run eager attention with no causal mask and answer wrongly without an error.
Ordinary passes therefore hold the guard's shared side and the switch its exclusive side.
Writers are preferred, so a stream of generations cannot starve it. Not reentrant: hold it
around a single forward call, never across a ``yield``.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Callable, NamedTuple


class GuardState(NamedTuple):
    """A snapshot of a ``ForwardGuard``: who holds it and who waits for it."""

    readers: int  # threads inside shared()
    writer: bool  # a thread inside exclusive()
    readers_waiting: int
    writers_waiting: int


class ForwardGuard:
    """A readers-writer lock with writer preference."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._readers_waiting = 0
        self._writers_waiting = 0

    def _state(self) -> GuardState:
        return GuardState(self._readers, self._writer, self._readers_waiting, self._writers_waiting)

    def state(self) -> GuardState:
        with self._cond:
            return self._state()

    def wait_until(self, predicate: Callable[[GuardState], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate(state)`` holds (every change of the state wakes it); False on timeout.

        For tests and diagnostics: "an attention request is waiting" is
        ``guard.wait_until(lambda s: s.writers_waiting == 1)``, with no sleep.
        """
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._state()), timeout)

    @contextmanager
    def shared(self):
        with self._cond:
            if self._writer or self._writers_waiting:
                self._readers_waiting += 1
                self._cond.notify_all()  # the state changed: wake wait_until
                while self._writer or self._writers_waiting:
                    self._cond.wait()
                self._readers_waiting -= 1
            self._readers += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._writers_waiting += 1
            self._cond.notify_all()
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_guards: "weakref.WeakKeyDictionary[object, ForwardGuard]" = weakref.WeakKeyDictionary()
_guards_lock = threading.Lock()


def forward_guard(model) -> ForwardGuard:
    """The one guard of ``model`` (created on first use, dropped with the model)."""
    with _guards_lock:
        guard = _guards.get(model)
        if guard is None:
            guard = _guards[model] = ForwardGuard()
        return guard
