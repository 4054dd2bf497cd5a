"""The one cache of loaded engines, shared by every front-end (re-exported by ``gpt_demo.api``).

    >>> from gpt_demo.api import EngineCache, get_engine
    >>> cache = EngineCache(base=engine)                     # doctest: +SKIP
    >>> cache.with_adapter("my-sft").chat("Hi").text        # loads the base again with the adapter, once  # doctest: +SKIP
    >>> cache.memory_bytes(), cache.summary()                # what the loaded engines hold  # doctest: +SKIP
    >>> get_engine("smollm2-135m-instruct", adapter="my-sft")  # the process-wide cache  # doctest: +SKIP

Each loaded engine holds a whole copy of its model (an adapter is merged into its own copy),
so the cache is bounded: at most ``Settings.limits.max_engines`` engines besides the pinned
ones (``GPT_DEMO_MAX_ENGINES``, default 3); the least recently used is dropped first. Pinned
engines (the web app's base model, the notebook's adopted engine) are never dropped.
``on_load`` sees each load start and end (``LoadEvent``), so the notebook can show a status line.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from .config import Settings


@dataclass(frozen=True)
class EngineKey:
    """What identifies a loaded engine: the model as given, the adapter, the quantization and the device."""

    model: str
    adapter: str | None
    quantize: str | None
    device: str | None

    @property
    def what(self) -> str:
        return self.model + (f" + adapter {self.adapter}" if self.adapter else "")


@dataclass
class LoadEvent:
    """One report to ``on_load``: ``stage`` is "loading", then "loaded" (with ``engine``) or "failed" (with ``error``)."""

    stage: str
    key: EngineKey
    engine: object | None = None
    seconds: float = 0.0
    error: BaseException | None = None

    @property
    def what(self) -> str:
        return self.key.what


def key_of(engine) -> EngineKey:
    """The key an already loaded ``engine`` answers to (its source, adapter, quantization and device)."""
    loaded = engine.loaded
    if loaded is None:  # a remote backend: its spec is its whole identity
        return EngineKey(engine.model_name, None, "none", "remote")
    return EngineKey(loaded.source.location, loaded.adapter or None, loaded.quantization, loaded.device)


class EngineCache:
    """Engines by (model, adapter, quantize, device): loaded on first use, bounded, least recently used dropped."""

    def __init__(self, base=None, *, settings: Settings | None = None, max_engines: int | None = None,
                 on_load: Callable[[LoadEvent], None] | None = None, progress: bool = True):
        if max_engines is not None and (isinstance(max_engines, bool) or not isinstance(max_engines, int)
                                        or max_engines < 0):
            raise ValueError(f"max_engines={max_engines!r} is not allowed; give a whole number >= 0")
        self._settings = settings
        self._max = max_engines
        self.on_load = on_load
        self.progress = progress
        self._pinned: dict[EngineKey, object] = {}
        self._loaded: "OrderedDict[EngineKey, object]" = OrderedDict()
        self._lock = threading.Lock()  # guards the two dicts; never held during a load
        self._loading: dict[EngineKey, threading.Lock] = {}  # one load per key at a time
        self.base = None
        if base is not None:
            self.base = self.pin(base, key=key_of(base))

    # -- settings ---------------------------------------------------------------------
    def settings(self) -> Settings:
        return self._settings or getattr(self.base, "settings", None) or Settings.from_env()

    @property
    def max_engines(self) -> int:
        """Engines kept besides the pinned ones (``Settings.limits.max_engines`` unless given)."""
        return self._max if self._max is not None else self.settings().limits.max_engines

    def key(self, model: str | None = None, adapter: str | None = None, quantize: str | None = None,
            device: str | None = None) -> EngineKey:
        """The key for these arguments; None means the settings' default (``GPT_DEMO_MODEL`` ...)."""
        from .backends.registry import is_remote

        settings = self.settings()
        model = model or settings.model
        if is_remote(model):  # the server holds the weights: as key_of() names a remote engine
            from .backends.registry import parse_spec

            return EngineKey(str(parse_spec(model)), adapter or None, "none", "remote")
        return EngineKey(model, adapter or None, quantize or settings.quantize, device or settings.device)

    # -- what is held -----------------------------------------------------------------
    def pin(self, engine, model: str | None = None, adapter: str | None = None, quantize: str | None = None,
            device: str | None = None, *, key: EngineKey | None = None):
        """Keep ``engine`` (already loaded) under ``key``; pinned engines are never dropped and do not count."""
        k = key or self.key(model, adapter, quantize, device)
        with self._lock:
            self._loaded.pop(k, None)
            self._pinned[k] = engine
        return engine

    def is_loaded(self, model: str | None = None, adapter: str | None = None, quantize: str | None = None,
                  device: str | None = None) -> bool:
        k = self.key(model, adapter, quantize, device)
        with self._lock:
            return k in self._pinned or k in self._loaded

    def forget(self, adapter: str) -> int:
        """Drop the (unpinned) engines with ``adapter``, e.g. after it was retrained under the same name."""
        with self._lock:
            gone = [k for k in self._loaded if k.adapter == adapter]
            for k in gone:
                _close(self._loaded.pop(k))
        if gone:
            _release_memory()
        return len(gone)

    def clear(self) -> None:
        """Drop every unpinned engine."""
        with self._lock:
            self._loaded.clear()
        _release_memory()

    def engines(self) -> list[tuple[EngineKey, object, bool]]:
        """(key, engine, pinned) for each held engine: pinned first, then least to most recently used."""
        with self._lock:
            return [(k, e, True) for k, e in self._pinned.items()] + [(k, e, False) for k, e in self._loaded.items()]

    def memory_bytes(self) -> int:
        """Bytes held by the parameters and buffers of every engine in the cache (each counted once)."""
        seen: dict[int, int] = {}
        for _, engine, _ in self.engines():
            if id(engine) not in seen:
                seen[id(engine)] = _footprint(engine)
        return sum(seen.values())

    def describe(self) -> dict:
        """A dict for display: each engine with its memory, the total and the bound."""
        rows = [{"model": getattr(e, "model_name", k.model), "adapter": k.adapter, "device": k.device,
                 "quantization": k.quantize, "memory_mb": round(_footprint(e) / 2**20, 1), "pinned": pinned}
                for k, e, pinned in self.engines()]
        return {"engines": rows, "loaded": sum(not r["pinned"] for r in rows), "max_engines": self.max_engines,
                "memory_mb": round(self.memory_bytes() / 2**20, 1)}

    def summary(self) -> str:
        """One line: what is loaded, the memory it holds, and how many more are kept at most."""
        d = self.describe()
        parts = [f"{r['model']}" + (f" + {r['adapter']}" if r["adapter"] else "") + f" ({r['memory_mb']} MB)"
                 for r in d["engines"]]
        return (f"Models in memory: {', '.join(parts) or 'none'}; {d['memory_mb']} MB in all. "
                f"At most {d['max_engines']} adapter models are kept besides the base (GPT_DEMO_MAX_ENGINES); "
                "the least recently used is dropped first.")

    # -- getting one ------------------------------------------------------------------
    def _lookup(self, k: EngineKey):
        with self._lock:
            if k in self._pinned:
                return self._pinned[k]
            if k in self._loaded:
                self._loaded.move_to_end(k)
                return self._loaded[k]
        return None

    def get(self, model: str | None = None, adapter: str | None = None, quantize: str | None = None,
            device: str | None = None, *, on_load: Callable[[LoadEvent], None] | None = None):
        """The engine for these arguments, loaded on first use (``on_load`` overrides the cache's hook)."""
        k = self.key(model, adapter, quantize, device)
        found = self._lookup(k)
        if found is not None:
            return found
        with self._lock:
            gate = self._loading.setdefault(k, threading.Lock())
        # A second caller for the same key waits for the first load instead of loading again. The
        # gate stays in the dict (one small lock per key ever asked for): dropping it after a failed
        # load would let a third caller start a second load beside a waiting one.
        with gate:
            found = self._lookup(k)
            if found is not None:
                return found
            engine = self._load(k, on_load or self.on_load)
            with self._lock:
                self._loaded[k] = engine
                dropped = self._evict()
            if dropped:
                _release_memory()
            return engine

    def with_adapter(self, adapter: str | None):
        """The base engine with ``adapter`` instead of its own (None or "": the base itself)."""
        if self.base is None:
            raise ValueError("with_adapter needs a base engine; build the cache as EngineCache(base=engine)")
        if not adapter:
            return self.base
        k = key_of(self.base)
        return self.get(k.model, adapter, k.quantize, k.device)

    def _evict(self) -> int:
        dropped = 0
        while len(self._loaded) > self.max_engines:  # keep memory bounded: drop the least recently used
            _close(self._loaded.popitem(last=False)[1])
            dropped += 1
        return dropped

    def _load(self, k: EngineKey, hook):
        from . import api  # looked up at call time, so a test may replace api.load_engine

        def emit(event: LoadEvent) -> None:
            if hook is not None:
                hook(event)

        emit(LoadEvent("loading", k))
        start = time.perf_counter()
        kwargs: dict = {}
        if k.adapter:
            kwargs["adapter"] = k.adapter
        kwargs["settings"] = self.settings()  # given, else the base engine's, else the environment's
        if not self.progress:
            kwargs["progress"] = False
        try:
            engine = api.load_engine(k.model, quantize=k.quantize, device=k.device, **kwargs)
        except BaseException as exc:
            emit(LoadEvent("failed", k, seconds=time.perf_counter() - start, error=exc))
            raise
        emit(LoadEvent("loaded", k, engine=engine, seconds=time.perf_counter() - start))
        return engine


def _close(engine) -> None:
    """Stop a dropped engine's scheduler thread, which would otherwise keep the whole model alive."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()


def _footprint(engine) -> int:
    try:
        return int(engine.loaded.memory_footprint)
    except (AttributeError, TypeError, ValueError):
        return 0


def _release_memory() -> None:
    """Give a dropped model's memory back (CUDA keeps freed blocks cached until asked)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_DEFAULT: EngineCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> EngineCache:
    """The process-wide cache behind ``get_engine``."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = EngineCache()
        return _DEFAULT


def get_engine(model: str | None = None, adapter: str | None = None, quantize: str | None = None,
               device: str | None = None, *, on_load: Callable[[LoadEvent], None] | None = None):
    """An engine from the process-wide cache: loaded once per (model, adapter, quantize, device)."""
    return default_cache().get(model, adapter, quantize, device, on_load=on_load)
