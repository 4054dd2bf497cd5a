"""gpt-demo: run, look inside, fine-tune and align a real GPT-style chat model locally.

    >>> import gpt_demo
    >>> engine = gpt_demo.load_engine()               # doctest: +SKIP
    >>> engine.chat("What is the capital of France?").text   # doctest: +SKIP
    'The capital of France is Paris.'

Importing this package is instant: torch and transformers load on first use.
"""

__version__ = "0.1.0"
__all__ = ["load_engine", "Engine", "GenerationParams", "Conversation", "__version__"]


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
