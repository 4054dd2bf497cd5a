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


def checked_ids(loaded, text: str, limits=None, name: str = "text") -> tuple[list[int], int]:
    """Token ids of raw ``text`` for a look-inside forward pass, and how many were cut from its start.

    ``limits`` (default: ``GPT_DEMO_MAX_*`` from the environment) bound the characters before
    anything is tokenized, then the tokens against the context window: ``clip`` keeps the
    text's end, ``refuse`` raises a ValueError naming ``name``, the count and the window.
    """
    from ..limits import current_limits

    if not isinstance(text, str) or not text:
        raise ValueError(f"{name}={text!r} is not allowed; give a non-empty string")
    limits = limits if limits is not None else current_limits()
    limits.check_text(name, text)
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    return limits.clip_tokens(name, ids, loaded.context_window)


def next_token_logits(loaded, ids: list[int]) -> torch.Tensor:
    """The model's raw logits for the token after ``ids``: shape (vocab,).

    Only the last position's logits are computed (``logits_to_keep=1``): all of them would be
    a (T, vocab) float tensor, about 1.6 GB at 8k tokens, for one row that is used.
    """
    from .decoding import _forward_parameters

    if not ids:
        raise ValueError("text='' is not allowed; give at least one token of text")
    if len(ids) > loaded.context_window:
        raise ValueError(f"ids has {len(ids)} tokens; the limit is the {loaded.context_window}-token context window")
    model = loaded.model
    kwargs = {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(model) else {}
    with torch.inference_mode(), forward_guard(model).shared():
        out = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False, **kwargs)
    return out.logits[0, -1].float()  # (vocab,)


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


def next_token_distribution(loaded, text: str, top_k: int = 10, temperature: float = 1.0, *,
                            limits=None) -> list[TokenProb]:
    """The ``top_k`` most likely next tokens after ``text`` (raw, no chat template; see ``checked_ids``)."""
    _check_temperature(temperature)
    ids, _ = checked_ids(loaded, text, limits)
    return distribution_from_logits(loaded.tokenizer, next_token_logits(loaded, ids), top_k, temperature)


def sequence_logprob(loaded, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """Total log-probability of ``completion_ids`` after ``prompt_ids`` under the model (temperature 1)."""
    from ..models.tokens import completion_logprob  # written once: DPO's margins use it too

    with forward_guard(loaded.model).shared():
        return completion_logprob(loaded.model, prompt_ids, completion_ids)
