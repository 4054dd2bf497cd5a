"""gpt-demo: run, look inside, fine-tune and align a real GPT-style chat model locally.

    >>> import gpt_demo
    >>> engine = gpt_demo.load_engine()               # doctest: +SKIP
    >>> engine.chat("What is the capital of France?").text   # doctest: +SKIP
    'The capital of France is Paris.'

Importing this package is instant: torch and transformers load on first use.
"""

__version__ = "0.1.0"

from .config import set_thread_runtime_defaults as _thread_defaults

_thread_defaults()  # before torch loads: OpenMP reads them once (see config.THREAD_RUNTIME_DEFAULTS)
del _thread_defaults
__all__ = ["load_engine", "Engine", "GenerationParams", "Conversation", "__version__"]


def load_ipython_extension(ipython):
    """``%load_ext gpt_demo``: register the notebook magics (loads no model; see ``gpt_demo.notebook``)."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):
    from .notebook import unload_ipython_extension as unload

    unload(ipython)


def __getattr__(name):
    # Lazy so `import gpt_demo` and `gpt-demo --help` never import torch.
    if name in ("load_engine", "Engine"):
        from . import api

        return getattr(api, name)
    if name == "GenerationParams":
        from .generation.params import GenerationParams

        return GenerationParams
    if name == "Conversation":
        from .chat import Conversation

        return Conversation
    raise AttributeError(f"module 'gpt_demo' has no attribute {name!r}")
