"""Turn one step's logits into the next tokens: penalties, temperature, top-p, sampling.

    >>> import torch
    >>> from gpt_demo.generation.sampling import apply_penalties
    >>> logits = torch.zeros(1, 4); counts = torch.tensor([[0, 1, 3, 0]])
    >>> apply_penalties(logits, counts, frequency=0.5, presence=1.0)
    tensor([[ 0.0000, -1.5000, -2.5000,  0.0000]])
"""

from __future__ import annotations

import torch


def apply_penalties(logits: torch.Tensor, counts: torch.Tensor, frequency: float, presence: float) -> torch.Tensor:
    """OpenAI's definition: ``logit[t] -= count[t] * frequency + (count[t] > 0) * presence``.

    ``logits`` and ``counts`` are (B, vocab); counts are over the tokens generated so far.
    """
    if frequency == 0 and presence == 0:
        return logits
    counts = counts.to(logits.dtype)
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask (to -inf) every token outside the smallest set whose probability reaches ``top_p``."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Drop a token when the mass *before* it already reaches top_p; the top token always stays.
    drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose_tokens(
    logits: torch.Tensor,
    counts: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    frequency_penalty: float,
    presence_penalty: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Pick the next token for each row of ``logits`` (B, vocab); returns (B,) token ids."""
    logits = apply_penalties(logits, counts, frequency_penalty, presence_penalty)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(logits / temperature, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
