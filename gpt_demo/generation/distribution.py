"""Next-token distributions and sequence scores: the numbers behind the playground.

    >>> rows = next_token_distribution(loaded, "The best thing about AI is its ability to")  # doctest: +SKIP
    >>> [(r.token, round(r.prob, 3)) for r in rows[:2]]                                       # doctest: +SKIP
    [(' learn', 0.045), (' predict', 0.035)]
"""

from __future__ import annotations

import torch

from ..models.guard import forward_guard
from .results import TokenProb


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise ValueError(f"temperature={temperature!r} is out of range; allowed: 0 <= temperature <= 2")


def next_token_logits(loaded, ids: list[int]) -> torch.Tensor:
    """The model's raw logits for the token after ``ids``: shape (vocab,)."""
    if not ids:
        raise ValueError("text='' is not allowed; give at least one token of text")
    with torch.inference_mode(), forward_guard(loaded.model).shared():
        out = loaded.model(input_ids=torch.tensor([ids], device=loaded.model.device), use_cache=False)
    return out.logits[0, -1].float()


def distribution_from_logits(tokenizer, logits: torch.Tensor, top_k: int, temperature: float) -> list[TokenProb]:
    """Top-``top_k`` rows of softmax(logits / temperature), most likely first; temperature 0 is one-hot."""
    _check_temperature(temperature)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= logits.shape[-1]:
        raise ValueError(f"top_k={top_k!r} is out of range; allowed: 1 <= top_k <= {logits.shape[-1]}")
    if temperature == 0:
        logp = torch.full_like(logits, float("-inf"))
        logp[logits.argmax()] = 0.0
    else:
        logp = torch.log_softmax(logits / temperature, dim=-1)
    values, ids = logp.topk(top_k)
    return [
        TokenProb(token=tokenizer.decode([int(i)]), token_id=int(i), prob=float(v.exp()), logprob=float(v))
        for v, i in zip(values, ids)
    ]


def next_token_distribution(loaded, text: str, top_k: int = 10, temperature: float = 1.0) -> list[TokenProb]:
    """The ``top_k`` most likely next tokens after ``text`` (raw, no chat template)."""
    _check_temperature(temperature)
    if not isinstance(text, str) or not text:
        raise ValueError(f"text={text!r} is not allowed; give a non-empty string")
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    return distribution_from_logits(loaded.tokenizer, next_token_logits(loaded, ids), top_k, temperature)


def sequence_logprob(loaded, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """Total log-probability of ``completion_ids`` after ``prompt_ids`` under the model (temperature 1)."""
    if not completion_ids:
        return 0.0
    ids = torch.tensor([prompt_ids + completion_ids], device=loaded.model.device)
    with torch.inference_mode(), forward_guard(loaded.model).shared():
        logits = loaded.model(input_ids=ids, use_cache=False).logits[0].float()  # (T, vocab)
    logp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)  # predicts each completion token
    target = torch.tensor(completion_ids, device=logp.device)
    return float(logp.gather(1, target[:, None]).sum())
