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


class ForwardGuard:
    """A readers-writer lock with writer preference."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
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
