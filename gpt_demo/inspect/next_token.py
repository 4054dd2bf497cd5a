"""Step through generation one token at a time: see the distribution, then take a token.

    >>> result = step(loaded, "The capital of France is", temperature=0)      # doctest: +SKIP
    >>> result.token, result.text                                              # doctest: +SKIP
    (' Paris', 'The capital of France is Paris')

``temperature`` reshapes the same logits, so a slider only re-runs the softmax; the
forward pass is cached for the last few texts.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..generation.distribution import _check_temperature, distribution_from_logits, next_token_logits
from ..generation.results import TokenProb

_CACHE_SIZE = 16  # texts remembered per model
# model -> {text: logits}; weak keys, so a freed model's entries go with it (an id() could be reused).
_cache: "weakref.WeakKeyDictionary[object, OrderedDict[str, torch.Tensor]]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def cached_logits(loaded, text: str) -> torch.Tensor:
    """Next-token logits after raw ``text`` (shape (vocab,)), remembered for the last few texts."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"text={text!r} is not allowed; give a non-empty string")
    with _cache_lock:
        texts = _cache.setdefault(loaded.model, OrderedDict())
        if text in texts:
            texts.move_to_end(text)
            return texts[text]
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    logits = next_token_logits(loaded, ids)
    with _cache_lock:
        texts[text] = logits
        while len(texts) > _CACHE_SIZE:
            texts.popitem(last=False)
    return logits


def distribution(loaded, text: str, top_k: int = 10, temperature: float = 1.0) -> list[TokenProb]:
    """The ``top_k`` most likely next tokens after ``text`` at ``temperature`` (cached forward pass)."""
    _check_temperature(temperature)
    return distribution_from_logits(loaded.tokenizer, cached_logits(loaded, text), top_k, temperature)


@dataclass
class StepResult:
    """What one step did: the token taken, its probability, the new text and the next distribution."""

    token: str
    token_id: int
    prob: float
    text: str
    next: list[TokenProb]


def step(
    loaded,
    text: str,
    temperature: float = 1.0,
    *,
    token_id: int | None = None,
    seed: int | None = None,
    top_k: int = 10,
) -> StepResult:
    """Append one token to ``text``: ``token_id`` when given (a row the user picked), else sampled."""
    _check_temperature(temperature)
    logits = cached_logits(loaded, text)
    vocab = logits.shape[-1]
    probs = torch.softmax(logits / temperature, dim=-1) if temperature > 0 else None
    if token_id is not None:
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < vocab:
            raise ValueError(f"token_id={token_id!r} is out of range; allowed: 0 <= token_id < {vocab}")
        chosen = token_id
    elif probs is None:
        chosen = int(logits.argmax())
    else:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        chosen = int(torch.multinomial(probs.cpu(), 1, generator=gen))
    prob = 1.0 if probs is None and chosen == int(logits.argmax()) else (0.0 if probs is None else float(probs[chosen]))
    piece = loaded.tokenizer.decode([chosen])
    new_text = text + piece
    return StepResult(piece, chosen, prob, new_text, distribution(loaded, new_text, top_k, temperature))
