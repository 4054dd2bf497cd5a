"""Step through generation one token at a time: see the distribution, then take a token.

    >>> result = step(loaded, "The capital of France is", temperature=0)      # doctest: +SKIP
    >>> result.token, result.text                                              # doctest: +SKIP
    (' Paris', 'The capital of France is Paris')

``temperature`` reshapes the same logits, so a slider only re-runs the softmax; the
forward pass is cached for the last few texts.

Bounds (``gpt_demo.limits``, from ``GPT_DEMO_MAX_*`` unless an engine passes its own): a
text longer than ``max_input_chars`` is refused before it is tokenized, and one longer
than the context window is clipped to its last tokens (``result.clipped_tokens`` says how
many went) or, with ``GPT_DEMO_INSPECT_TOKENS=refuse``, refused. Both checks come before
any lock or forward pass, so a refused request never waits for the model.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..generation.distribution import _check_temperature, checked_ids, distribution_from_logits, next_token_logits
from ..generation.results import TokenProb
from ..limits import current_limits

_CACHE_SIZE = 16  # texts remembered per model
# model -> {(window, text): (logits, clipped tokens)}; weak keys, so a freed model's entries go with it
# (an id() could be reused). The window is in the key because it decides what was clipped.
_cache: "weakref.WeakKeyDictionary[object, OrderedDict[tuple[int, str], tuple[torch.Tensor, int]]]" = (
    weakref.WeakKeyDictionary())
_cache_lock = threading.Lock()


class NextTokens(list):
    """The rows of a next-token table (``TokenProb``, most likely first), plus ``clipped_tokens``:
    how many tokens were cut from the start of the text to fit the context window (0: none)."""

    clipped_tokens: int = 0


def cached_logits(loaded, text: str, limits=None) -> tuple[torch.Tensor, int]:
    """(next-token logits after raw ``text``, shape (vocab,); tokens clipped from its start), cached per text."""
    limits = limits if limits is not None else current_limits()
    if not isinstance(text, str) or not text:
        raise ValueError(f"text={text!r} is not allowed; give a non-empty string")
    limits.check_text("text", text)  # before anything is tokenized, locked or run
    with _cache_lock:
        texts = _cache.setdefault(loaded.model, OrderedDict())
        key = (loaded.context_window, text)
        hit = texts.get(key)
        if hit is not None and (hit[1] == 0 or limits.inspect_tokens == "clip"):
            texts.move_to_end(key)
            return hit
    ids, clipped = checked_ids(loaded, text, limits)  # too many tokens: clipped, or refused here
    logits = next_token_logits(loaded, ids)
    with _cache_lock:
        texts[key] = (logits, clipped)
        while len(texts) > _CACHE_SIZE:
            texts.popitem(last=False)
    return logits, clipped


def distribution(loaded, text: str, top_k: int = 10, temperature: float = 1.0, *, limits=None) -> NextTokens:
    """The ``top_k`` most likely next tokens after ``text`` at ``temperature`` (cached forward pass)."""
    _check_temperature(temperature)
    logits, clipped = cached_logits(loaded, text, limits)
    rows = NextTokens(distribution_from_logits(loaded.tokenizer, logits, top_k, temperature))
    rows.clipped_tokens = clipped
    return rows


@dataclass
class StepResult:
    """What one step did: the token taken, its probability, the new text and the next distribution."""

    token: str
    token_id: int
    prob: float
    text: str
    next: list[TokenProb]
    clipped_tokens: int = 0  # tokens of ``text`` left out of ``next`` to fit the context window


def step(
    loaded,
    text: str,
    temperature: float = 1.0,
    *,
    token_id: int | None = None,
    seed: int | None = None,
    top_k: int = 10,
    limits=None,
) -> StepResult:
    """Append one token to ``text``: ``token_id`` when given (a row the user picked), else sampled."""
    _check_temperature(temperature)
    logits, _ = cached_logits(loaded, text, limits)
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
    rows = distribution(loaded, new_text, top_k, temperature, limits=limits)
    return StepResult(piece, chosen, prob, new_text, rows, rows.clipped_tokens)
