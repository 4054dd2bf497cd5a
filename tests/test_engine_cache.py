"""The one engine cache (``gpt_demo.api.EngineCache``) that the web app and the notebook share, on real loads.

    .venv/bin/python -m pytest tests/test_engine_cache.py -q
"""

from __future__ import annotations

import threading

import pytest

from gpt_demo.api import EngineCache, default_cache
from gpt_demo.engine_cache import key_of

pytestmark = pytest.mark.slow  # loads the default model again, a few times
MODEL = "smollm2-135m-instruct"


def test_loads_once_keeps_at_most_max_engines_and_states_their_memory(engine, settings):
    events = []
    cache = EngineCache(base=engine, settings=settings, max_engines=1, on_load=events.append, progress=False)
    assert cache.with_adapter(None) is engine and cache.get(*vars(key_of(engine)).values()) is engine  # pinned
    # Two keys for the same weights (device cpu, device auto): two real loads.
    first = cache.get(MODEL, None, "none", "cpu")
    assert first is not engine and cache.get(MODEL, None, "none", "cpu") is first
    assert [e.stage for e in events] == ["loading", "loaded"] and events[1].engine is first
    assert events[0].what == MODEL and events[1].seconds > 0
    assert cache.memory_bytes() == engine.loaded.memory_footprint + first.loaded.memory_footprint
    second = cache.get(MODEL, None, "none", "auto")
    assert not cache.is_loaded(MODEL, None, "none", "cpu")  # the least recently used went
    d = cache.describe()
    assert [(r["device"], r["pinned"]) for r in d["engines"]] == [(engine.loaded.device, True), ("auto", False)]
    assert d["loaded"] == 1 and d["max_engines"] == 1
    assert d["memory_mb"] == round((engine.loaded.memory_footprint + second.loaded.memory_footprint) / 2**20, 1)
    assert f"{d['memory_mb']} MB in all" in cache.summary() and "At most 1 adapter models" in cache.summary()
    assert cache.get(MODEL, None, "none", "cpu") is not first  # loaded again
    assert [e.stage for e in events].count("loaded") == 3
    assert cache.forget("nothing-by-that-name") == 0 and cache.describe()["loaded"] == 1


def test_a_failed_load_is_reported_to_the_hook_and_not_kept(settings):
    events = []
    cache = EngineCache(settings=settings, on_load=events.append, progress=False)
    with pytest.raises(ValueError, match="model='no-such-model'"):
        cache.get("no-such-model")
    assert [e.stage for e in events] == ["loading", "failed"] and "no-such-model" in str(events[1].error)
    assert cache.engines() == [] and not any(gate.locked() for gate in cache._loading.values())
    with pytest.raises(ValueError, match="with_adapter needs a base engine"):
        cache.with_adapter("x")


def test_two_threads_asking_for_the_same_model_share_one_load(settings):
    events, results = [], []
    cache = EngineCache(settings=settings, max_engines=2, on_load=events.append, progress=False)
    start = threading.Barrier(2)

    def ask():
        start.wait(30)
        results.append(cache.get(MODEL, None, "none", "cpu"))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 2 and results[0] is results[1]
    assert [e.stage for e in events] == ["loading", "loaded"]


def test_the_bound_comes_from_the_settings(monkeypatch):
    monkeypatch.setenv("GPT_DEMO_MAX_ENGINES", "0")
    assert EngineCache().max_engines == 0
    monkeypatch.setenv("GPT_DEMO_MAX_ENGINES", "5")
    assert EngineCache().max_engines == 5 and EngineCache(max_engines=2).max_engines == 2
    with pytest.raises(ValueError, match="max_engines=-1 is not allowed; give a whole number >= 0"):
        EngineCache(max_engines=-1)
    assert default_cache() is default_cache()
