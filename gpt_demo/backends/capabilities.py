"""What a backend can do, and the one error every front-end shows when it cannot.

    >>> caps = Capabilities.remote(logprobs=False)
    >>> caps.require("logprobs", "openai:http://gpu:8000/v1#llama")
    Traceback (most recent call last):
    ...
    gpt_demo.backends.capabilities.CapabilityMissing: the backend openai:http://gpu:8000/v1#llama cannot give per-token log-probabilities (logprobs); use the local model for it

The local backend (``gpt_demo.api.Engine``) can do everything. A remote OpenAI-compatible
server can do what its protocol offers: chat and completions, streaming, ``n`` (fanned out
into several requests where the server lacks it), logprobs with up to ``top_logprobs``
alternatives, the next-token table (one-token completions with ``logprobs``), embeddings.
Attention maps, scoring a given answer, the sampling step-through and training need the
weights, so they are local only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

WHAT = {
    "stream": "stream tokens as they are generated",
    "n": "return several answers in one request (n)",
    "logprobs": "give per-token log-probabilities (logprobs)",
    "next_tokens": "show the next-token probability table",
    "embeddings": "embed texts with the chat model",
    "attention": "show attention maps (they need the weights)",
    "score": "score a given answer's log-probability (it needs the weights)",
    "step": "step through sampling token by token (it needs the weights)",
    "training": "train adapters (training needs the weights)",
    "tokenizer": "tokenize text here (the tokenizer is on the server)",
    "prefill": "start a chat answer from given text (inject_start_text)",
}


class CapabilityMissing(ValueError):
    """A backend was asked for something it cannot do; the message names the backend and the capability."""

    def __init__(self, backend: str, capability: str):
        self.backend, self.capability = backend, capability
        super().__init__(f"the backend {backend} cannot {WHAT.get(capability, capability)}; "
                         f"use the local model for it")


@dataclass(frozen=True)
class Capabilities:
    """Flags, one per capability in ``WHAT``, plus ``top_logprobs`` (the most alternatives per token)."""

    stream: bool = True
    n: bool = True
    logprobs: bool = True
    next_tokens: bool = True
    embeddings: bool = True
    attention: bool = True
    score: bool = True
    step: bool = True
    training: bool = True
    top_logprobs: int = 20

    @classmethod
    def local(cls) -> "Capabilities":
        return cls()

    @classmethod
    def remote(cls, **declared) -> "Capabilities":
        """What an OpenAI-compatible server offers, with ``declared`` overrides (from the backend table)."""
        return replace(cls(attention=False, score=False, step=False, training=False), **declared)

    def require(self, capability: str, backend: str) -> None:
        """Raise ``CapabilityMissing`` unless this backend has ``capability``."""
        if not getattr(self, capability):
            raise CapabilityMissing(backend, capability)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
