"""Keep library noise (warnings, transformers' log lines and its progress bars) out of front-end output.

    >>> import warnings
    >>> from gpt_demo.models.quiet import quiet_libraries
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     with quiet_libraries():
    ...         warnings.warn_explicit("old API", FutureWarning, "x.py", 1, module="transformers.x")
    ...         warnings.warn_explicit("ours", UserWarning, "x.py", 1, module="gpt_demo.x")
    ...     warnings.warn_explicit("after", FutureWarning, "x.py", 2, module="transformers.x")
    >>> [str(w.message) for w in seen]
    ['ours', 'after']

Used where the core calls into transformers/peft/trl for a front-end: loading the weights (the
instant "Loading weights" bar) and the notebook's magics and widgets. Warnings raised by
``gpt_demo`` itself still show (the tests turn them into errors): only other modules' are
ignored. Not ``warnings.catch_warnings``: that swaps the whole filter list and is not
thread-safe (a training thread and a chat would restore each other's lists). Here one filter
is added by the first user and removed by the last, under a lock, so nesting and threads agree.
Nothing changes for the user's own code after the block.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from contextlib import contextmanager

_LOCK = threading.Lock()
_DEPTH = 0
_SAVED: dict = {}
NOT_OURS = r"(?!gpt_demo(\.|$))"  # a module name that is not gpt_demo or one of its submodules
# Libraries that log through the standard logging module at import or load time (bitsandbytes says
# "Failed to load CPU gemm_4bit_forward from kernels-community" on CPUs with AVX512-BF16).
LOGGERS = ("bitsandbytes", "accelerate", "peft", "trl", "datasets")


def _enter() -> None:
    global _DEPTH
    with _LOCK:
        _DEPTH += 1
        if _DEPTH == 1:
            warnings.filterwarnings("ignore", category=Warning, module=NOT_OURS)
            _SAVED["levels"] = {name: logging.getLogger(name).level for name in LOGGERS}
            for name in LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
        # transformers only once something imported it (a config cell must not pay for the import);
        # load_model enters again after its import, so its bars are off from the first load on.
        if "verbosity" not in _SAVED and "transformers" in sys.modules:
            from transformers.utils import logging as tlog

            _SAVED["verbosity"] = tlog.get_verbosity()
            _SAVED["bars"] = tlog.is_progress_bar_enabled()
            tlog.set_verbosity_error()
            tlog.disable_progress_bar()


def _exit() -> None:
    global _DEPTH
    with _LOCK:
        _DEPTH -= 1
        if _DEPTH > 0:
            return
        warnings.filters[:] = [f for f in warnings.filters
                               if not (f[0] == "ignore" and f[2] is Warning and getattr(f[3], "pattern", None) == NOT_OURS)]
        for name, level in _SAVED.pop("levels", {}).items():
            logging.getLogger(name).setLevel(level)
        mutated = getattr(warnings, "_filters_mutated", None)
        if mutated is not None:
            mutated()
        if "verbosity" in _SAVED:
            from transformers.utils import logging as tlog

            tlog.set_verbosity(_SAVED.pop("verbosity"))
            if _SAVED.pop("bars"):
                tlog.enable_progress_bar()


@contextmanager
def quiet_libraries():
    """Within the block, other libraries' warnings, transformers' info/warning logs and its bars are off."""
    _enter()
    try:
        yield
    finally:
        _exit()
