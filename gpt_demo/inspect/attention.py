"""Attention weights per layer and head for a short text (eager attention, this path only).

    >>> amap = attention_map(loaded, "The animal didn't cross the street because it was too tired")  # doctest: +SKIP
    >>> amap.weights.shape            # (tokens, tokens), mean over heads of the last layer   # doctest: +SKIP
    (13, 13)
    >>> amap.top_attended("it", k=2)  # doctest: +SKIP

SDPA and flash kernels never materialise the weights, so the model is switched to the
``eager`` implementation for this forward pass only and then switched back, holding the
model's ``forward_guard`` exclusively so no other user's forward pass overlaps the switch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..limits import current_limits
from ..models.guard import forward_guard

MAX_TOKENS = 64  # a heatmap of more tokens is unreadable, and eager attention is O(T^2) memory


@dataclass
class AttentionMap:
    """``weights[i, j]``: how much token i attends to token j (rows sum to 1)."""

    tokens: list[str]
    weights: np.ndarray  # (T, T) float32
    layer: int
    head: int | None  # None: the mean over heads
    n_layers: int
    n_heads: int

    def top_attended(self, token: str, k: int = 3, skip_first: bool = True) -> list[tuple[str, float]]:
        """The ``k`` earlier tokens that the last occurrence of ``token`` attends to most.

        ``skip_first`` leaves out position 0, which most heads use as an "attention sink".
        """
        wanted = token.strip().lower()
        rows = [i for i, t in enumerate(self.tokens) if t.strip().lower() == wanted]
        if not rows:
            raise ValueError(f"token={token!r} is not in the text; its tokens are {self.tokens}")
        i = rows[-1]
        start = 1 if skip_first else 0
        cols = sorted(range(start, i), key=lambda j: -float(self.weights[i, j]))[:k]
        return [(self.tokens[j], float(self.weights[i, j])) for j in cols]


def _shape(loaded) -> tuple[int, int]:
    cfg = loaded.model.config
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def _check_text(text: str, limits=None) -> None:
    """Non-blank, and within ``limits.max_input_chars`` (default: the environment's), before any tokenizing."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text={text!r} is not allowed; give a short non-empty sentence")
    (limits if limits is not None else current_limits()).check_text("text", text)


def all_attentions(loaded, text: str, *, limits=None) -> tuple[list[str], np.ndarray]:
    """Tokens of ``text`` (raw, no chat template) and every layer's and head's weights: (layers, heads, T, T).

    At most ``MAX_TOKENS`` tokens (far inside any context window): longer text is refused
    before the model's guard is taken, since a clipped heatmap would hide what was asked.
    """
    _check_text(text, limits)
    tok = loaded.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) > MAX_TOKENS:
        raise ValueError(f"text has {len(ids)} tokens, too long for a heatmap; allowed: at most {MAX_TOKENS}")
    model = loaded.model
    with forward_guard(model).exclusive():  # no other forward pass may overlap the switch
        before = model.config._attn_implementation
        model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([ids], device=model.device), output_attentions=True, use_cache=False)
        finally:
            model.set_attn_implementation(before)
    stacked = torch.stack([a[0].float() for a in out.attentions])  # (layers, heads, T, T)
    return [tok.decode([i]) for i in ids], stacked.cpu().numpy().astype(np.float32)


def attention_map(loaded, text: str, layer: int = -1, head: int | None = None, *, limits=None) -> AttentionMap:
    """Attention of ``text`` at ``layer`` (negative counts from the end) and ``head`` (None: mean over heads)."""
    _check_text(text, limits)
    n_layers, n_heads = _shape(loaded)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n_layers <= layer < n_layers:
        raise ValueError(f"layer={layer!r} is out of range; allowed: 0 <= layer < {n_layers} (or negative from the end)")
    if head is not None and (isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < n_heads):
        raise ValueError(f"head={head!r} is out of range; allowed: 0 <= head < {n_heads}, or None for the mean")
    tokens, att = all_attentions(loaded, text, limits=limits)
    weights = att[layer].mean(0) if head is None else att[layer, head]
    return AttentionMap(tokens, weights, layer % n_layers, head, n_layers, n_heads)


def strongest_heads(loaded, text: str, token: str, target: str, k: int = 5, *,
                    limits=None) -> list[tuple[int, int, float]]:
    """The ``k`` (layer, head, weight) where the last ``token`` attends most to ``target``.

    >>> strongest_heads(loaded, "The animal didn't cross the street because it was too tired", "it", "animal")[0]  # doctest: +SKIP
    (13, 8, 0.75)
    """
    for name, word in (("token", token), ("target", target)):
        (limits if limits is not None else current_limits()).check_text(name, word)
    tokens, att = all_attentions(loaded, text, limits=limits)
    norm = [t.strip().lower() for t in tokens]
    for name, word in (("token", token), ("target", target)):
        if word.strip().lower() not in norm:
            raise ValueError(f"{name}={word!r} is not a token of the text; its tokens are {tokens}")
    i = max(p for p, t in enumerate(norm) if t == token.strip().lower())
    cols = [p for p, t in enumerate(norm) if t == target.strip().lower() and p < i]
    if not cols:
        raise ValueError(f"target={target!r} must come before token={token!r} (attention looks only backwards)")
    scores = att[:, :, i, cols].max(-1)  # (layers, heads)
    order = np.argsort(-scores, axis=None)[:k]
    return [(int(l), int(h), float(scores[l, h])) for l, h in zip(*np.unravel_index(order, scores.shape))]
