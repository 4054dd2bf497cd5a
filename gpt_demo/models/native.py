"""The compiled decode step of the lean path: built once per machine in the background, used when ready.

    >>> from gpt_demo.models import native
    >>> native.status()                     # before anything asked for it   # doctest: +SKIP
    'not built'
    >>> native.start_build(); native.wait(timeout=300)                       # doctest: +SKIP
    True
    >>> native.status()                                                      # doctest: +SKIP
    'ready'

``native_step.cpp`` runs one token through all layers with the same ATen ops as the Python
loop in ``lean_llama``, without Python's cost per op. PyTorch's ``cpp_extension.load_inline``
compiles it with the machine's C++ compiler and ninja (about 30 s on 2 cores) in a private
directory and moves the library into ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), keyed by the source and the PyTorch and Python versions, so later processes load it in well
under a second. The build runs in a daemon
thread and generation uses the Python loop until it is done, so it never delays a first
token; where there is no compiler the lean path simply stays in Python and
``status()`` says why. ``GPT_DEMO_NATIVE_STEP=0`` (``Settings.native_step``) never starts it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native_step.cpp")
_lock = threading.Lock()
_done = threading.Event()
_state: dict = {"status": "not built", "module": None, "thread": None}


def _import_library(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build():
    """Load the cached library, or build it in a private directory and move it into the cache.

    Each build has its own directory, so a process killed mid-build leaves no lock behind
    (PyTorch's own build lock has no staleness check, and would make every later build wait).
    """
    import sys

    import torch
    from torch.utils.cpp_extension import get_default_build_root, load_inline

    source = SOURCE.read_text()
    # Keyed by the source and by what it is compiled against: a new PyTorch or Python builds anew.
    key = f"{source}\n{torch.__version__}\n{sys.version_info[:2]}"
    name = f"gpt_demo_lean_step_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    root = Path(get_default_build_root())
    final = root / name / f"{name}.so"
    if final.is_file():
        return _import_library(name, final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=root))
    try:
        module = load_inline(name=name, cpp_sources=[source], functions=["layers_step", "slots_step"],
                             extra_cflags=["-O3"], build_directory=str(work), verbose=False)
        os.replace(work / f"{name}.so", final)  # atomic: another process sees the whole file or none
        return module
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run() -> None:
    try:
        module = _build()
    except Exception as exc:  # no compiler, no ninja, headers missing: stay on the Python loop
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        _state.update(status=f"unavailable ({reason})")
        log.warning("the compiled decode step is unavailable, the lean path stays in Python: %s", reason)
    else:
        _state.update(status="ready", module=module)
    finally:
        _done.set()


def start_build() -> None:
    """Start building (or loading the cached build) in a daemon thread; returns at once."""
    with _lock:
        if _state["thread"] is not None:
            return
        _state["status"] = "building"
        _state["thread"] = threading.Thread(target=_run, name="gpt-demo-native-step", daemon=True)
        _state["thread"].start()


def wait(timeout: float | None = None) -> bool:
    """Block until the build has finished or failed; True when the compiled step is ready."""
    start_build()
    _done.wait(timeout)
    return _state["module"] is not None


def module():
    """The compiled extension, or None while it is building or when it is unavailable."""
    return _state["module"]


def status() -> str:
    return _state["status"]
