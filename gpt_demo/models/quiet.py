"""Keep library noise (warnings, transformers' log lines and its progress bars) out of front-end output.

    >>> import warnings
    >>> from gpt_demo.models.quiet import quiet_libraries
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     with quiet_libraries():
    ...         warnings.warn_explicit("old API", FutureWarning, "x.py", 1, module="transformers.x")
    ...         warnings.warn_explicit("ours", UserWarning, "x.py", 1, module="gpt_demo.x")
    ...         warnings.warn_explicit("the user's", UserWarning, "x.py", 1, module="__main__")
    ...     warnings.warn_explicit("after", FutureWarning, "x.py", 2, module="transformers.x")
    >>> [str(w.message) for w in seen]
    ['ours', "the user's", 'after']

Used where the core calls into transformers/peft/trl for a front-end: loading the weights (the
instant "Loading weights" bar) and the notebook's magics and widgets. Only warnings attributed to
the libraries in ``LIBRARIES`` are ignored; ``gpt_demo``'s own (the tests turn them into errors),
``__main__``'s and the user's modules' still show, also while a background job (a ``%gpt_chat``
stream, a ``%gpt_train`` run) holds the block for minutes.

Not ``warnings.catch_warnings``: that swaps the whole filter list and is not thread-safe (a
training thread and a chat would restore each other's lists). Here one filter is added by the
first user and removed by the last, under a lock, so nesting and threads agree. The removal is by
identity of that filter, from the list it went into and from whichever list is current: when
another thread sits inside ``catch_warnings`` (transformers' Trainer does, saving checkpoints),
the list it restores on leaving no longer holds the filter, so nothing leaks.
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
# The libraries whose warnings reach a front-end through the core (a module name is matched from its
# start: "transformers.generation.utils", "torch.nn.modules.module", "huggingface_hub.file_download").
LIBRARIES = (r"(transformers|peft|trl|accelerate|bitsandbytes|torch|datasets|huggingface_hub|tokenizers"
             r"|safetensors|sentence_transformers)(\.|$)")
# Libraries that log through the standard logging module at import or load time (bitsandbytes says
# "Failed to load CPU gemm_4bit_forward from kernels-community" on CPUs with AVX512-BF16, after asking
# kernels for it, which says "Skipping publisher trust check ..." when the hub is offline).
LOGGERS = ("bitsandbytes", "kernels", "accelerate", "peft", "trl", "datasets")


def _enter() -> None:
    global _DEPTH
    with _LOCK:
        _DEPTH += 1
        if _DEPTH == 1:
            warnings.filterwarnings("ignore", category=Warning, module=LIBRARIES)
            _SAVED["filter"] = (warnings.filters[0], warnings.filters)  # (the tuple added, the list it is in)
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


def _remove(item, filters: list) -> None:
    """Remove ``item`` (by identity) from ``filters`` if it is there."""
    for i in range(len(filters) - 1, -1, -1):
        if filters[i] is item:
            del filters[i]


def _exit() -> None:
    global _DEPTH
    with _LOCK:
        _DEPTH -= 1
        if _DEPTH > 0:
            return
        saved = _SAVED.pop("filter", None)
        if saved is not None:
            item, added_to = saved
            _remove(item, added_to)  # the list another thread's catch_warnings may restore later
            _remove(item, warnings.filters)  # the list in use now (a catch_warnings copy, or the same one)
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
    """Within the block, library warnings (``LIBRARIES``), transformers' info/warning logs and its bars are off."""
    _enter()
    try:
        yield
    finally:
        _exit()
