"""The base engine plus adapter engines loaded on demand, so the web app can compare them side by side.

    >>> pool = EnginePool(engine)              # doctest: +SKIP
    >>> pool.get("my-sft").chat("Hi").text     # loads the base again with the adapter, once   # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections import OrderedDict

BASE = "(base model)"


class EnginePool:
    """``get(None or BASE)`` is the app's engine; ``get(name)`` loads the same base with adapter ``name``."""

    def __init__(self, base, settings=None, max_loaded: int = 3):
        self.base = base
        self.settings = settings
        self.max_loaded = max_loaded
        self._loaded: "OrderedDict[str, object]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, adapter: str | None):
        if adapter in (None, "", BASE):
            return self.base
        with self._lock:
            if adapter in self._loaded:
                self._loaded.move_to_end(adapter)
                return self._loaded[adapter]
            from ..api import load_engine

            src = self.base.loaded.source
            engine = load_engine(model=src.location, quantize=self.base.loaded.quantization,
                                 device=self.base.loaded.device, settings=self.settings, progress=False,
                                 adapter=adapter)
            self._loaded[adapter] = engine
            while len(self._loaded) > self.max_loaded:  # keep memory bounded: drop the least recently used
                self._loaded.popitem(last=False)
            return engine

    def forget(self, adapter: str) -> None:
        """Drop a cached engine (after its adapter was retrained under the same name)."""
        with self._lock:
            self._loaded.pop(adapter, None)
