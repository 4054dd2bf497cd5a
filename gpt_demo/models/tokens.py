"""Token-level helpers that generation and training share: end tokens, padding, log-probabilities.

    >>> import torch
    >>> ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    >>> token_logprobs(torch.zeros(1, 2, 4), torch.tensor([[1, 3]])).tolist()   # uniform over 4 tokens
    [[-1.3862943649291992, -1.3862943649291992]]

Written once: ``generation/decoding.py`` stops on ``eos_token_ids``, PPO masks its rollouts with the
same set; ``sequence_logprob`` (the playground's score) and DPO's margins both use
``completion_logprob``; PPO (left padding) and the reward model (right padding) use ``pad_batch``.
"""

from __future__ import annotations

from typing import Sequence


def end_token_ids(tokenizer, model=None) -> set[int]:
    """Every id that ends a turn: the tokenizer's EOS and the model's generation config's."""
    ids: set[int] = set()
    gen_cfg = getattr(model, "generation_config", None) if model is not None else None
    for value in (tokenizer.eos_token_id, getattr(gen_cfg, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


def eos_token_ids(loaded) -> set[int]:
    """``end_token_ids`` of a ``LoadedModel``."""
    return end_token_ids(loaded.tokenizer, loaded.model)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right", device=None):
    """(ids, attention mask), both (B, T) long tensors, T the longest row; ``side`` is where the pads go.

    Right padding suits a forward pass over whole sequences (a causal model's real tokens never
    attend to the pads after them); left padding suits generation (every row ends at the same column).
    """
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"side={side!r} is not allowed; use 'left' or 'right'")
    if not rows:
        raise ValueError("rows=[] is not allowed; give at least one row of token ids")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not len(row):
            continue
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


def token_logprobs(logits, targets):
    """log softmax(logits) at ``targets``: logits (..., T, vocab) and targets (..., T) -> (..., T), float32."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def completion_logprob(model, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> float:
    """Total log-probability of ``completion_ids`` right after ``prompt_ids`` (temperature 1, no grad).

    The caller holds whatever lock the model needs (``forward_guard`` for the shared chat model).
    """
    import torch

    if not completion_ids:
        return 0.0
    if not prompt_ids:
        raise ValueError("prompt_ids=[] is not allowed; the first token has no prediction to score")
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=device)  # (1, T)
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits[0, len(prompt_ids) - 1: -1]  # (C, vocab)
    target = torch.tensor(list(completion_ids), device=logits.device)  # (C,)
    return float(token_logprobs(logits, target).sum())
