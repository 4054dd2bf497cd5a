"""What the moderation head reads: pooled MiniLM hidden states, several layers, mean and max over tokens.

    >>> from gpt_demo.moderation.features import encode, feature_dim
    >>> encode(["I want to kill him"], ("emb", "max6")).shape      # doctest: +SKIP
    (1, 768)
    >>> feature_dim(("emb", "max6", "mean3"))
    1152

A spec is a tuple of block names, each a 384-d L2-normalised vector:

- ``emb``: the sentence embedding, exactly what ``gpt_demo.embeddings`` returns (the mean of the last
  layer over the tokens, normalised): the feature the first head (v1) read alone;
- ``meanK`` / ``maxK`` (K in 0..6): the mean, or the element-wise maximum, of layer K's hidden states
  over the text's tokens (0: the word embeddings, 6: the last layer). A maximum keeps what one token
  says ("kill", a slur) where a mean dilutes it among the others; a lower layer keeps more of the
  words themselves.

One MiniLM forward pass gives every block. Only the layers a spec reads are kept and pooled: the
shipped ``("emb",)`` asks for the last layer alone, as ``gpt_demo.embeddings`` does, and gets the same
numbers as when every layer was kept (``last_hidden_state`` is the last entry of ``hidden_states``).
``encode_tuned`` also runs a head's fine-tuned top layers (``gpt_demo.moderation.tuned``) on the
states below them, from the same pass. Tokenizing shares ``gpt_demo.embeddings``' lock: one call at
a time on the shared fast tokenizer, the forward passes side by side.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import BLOCK_DIM, check_spec, feature_dim  # noqa: F401 (BLOCK_DIM: train.py reads it from here)

LAYERS = 7  # MiniLM-L6: the embeddings output plus six transformer layers


def _normalise(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-6)


def _layer(name: str) -> int:
    """The MiniLM layer a block reads: ``emb`` the last, ``meanK`` / ``maxK`` layer K."""
    return LAYERS - 1 if name == "emb" else int(name[4:] if name.startswith("mean") else name[3:])


def layers_needed(spec: Sequence[str]) -> tuple[int, ...]:
    """The MiniLM layers a spec reads, in order: ``("emb", "max6")`` -> ``(6,)``; ``("emb", "mean3")`` -> ``(3, 6)``."""
    return tuple(sorted({_layer(name) for name in check_spec(spec)}))


def pool(hidden: np.ndarray, mask: np.ndarray, spec: Sequence[str], layers: Sequence[int] = tuple(range(LAYERS))) -> np.ndarray:
    """(B, L, T, 384) hidden states of ``layers`` and a (B, T) mask -> (B, 384 * len(spec)) float32 features."""
    at = {layer: i for i, layer in enumerate(layers)}
    m = mask[:, None, :, None].astype(np.float32)  # (B, 1, T, 1)
    counts = np.maximum(m.sum(2), 1.0)  # (B, 1, 1)
    means = (hidden * m).sum(2) / counts  # (B, L, 384)
    maxs = np.where(m > 0, hidden, -1e4).max(2) if any(n.startswith("max") for n in spec) else None  # pads never win
    blocks = [_normalise((maxs if name.startswith("max") else means)[:, at[_layer(name)]]) for name in spec]
    return np.concatenate(blocks, axis=1).astype(np.float32)


def encode(texts: list[str], spec: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """(N, 384 * len(spec)) features of texts MiniLM reads whole (callers split longer ones into windows first)."""
    return _run(texts, spec, batch_size, progress, None)[0]


def encode_tuned(texts: list[str], spec: Sequence[str], tuned, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``encode``'s features and, from the same MiniLM pass, (N, 8) probabilities of ``tuned``: a module of
    ``gpt_demo.moderation.tuned`` run on the states below its layers, rounded to float16 as in its training."""
    return _run(texts, spec, batch_size, False, tuned)


def _run(texts: list[str], spec: Sequence[str], batch_size: int, progress: bool, tuned) -> tuple[np.ndarray, np.ndarray | None]:
    spec = check_spec(spec)
    if not texts:
        return np.zeros((0, feature_dim(spec)), dtype=np.float32), np.zeros((0, 8)) if tuned is not None else None
    import torch

    from ..embeddings import _tokenize_lock, length_batches, minilm_model

    st = minilm_model()
    bert = st[0].auto_model  # the BertModel inside the SentenceTransformer: (B, T) ids -> 7 x (B, T, 384)
    with _tokenize_lock:
        ids = st.tokenizer(texts, truncation=True, max_length=st.max_seq_length, return_attention_mask=False,
                           return_token_type_ids=False)["input_ids"]
    layers = layers_needed(spec)
    if tuned is not None:
        from .tuned import cut_layer

        cut = cut_layer(len(tuned.layers))  # the hidden state the tuned layers read, as in their training
    out = np.empty((len(texts), feature_dim(spec)), dtype=np.float32)
    probs = None if tuned is None else np.empty((len(texts), 8), dtype=np.float64)
    with torch.inference_mode():
        for idx in length_batches([len(x) for x in ids], batch_size, progress):
            with _tokenize_lock:
                features = st.preprocess([texts[i] for i in idx])
            inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            if layers == (LAYERS - 1,) and tuned is None:  # the last layer only (the v3 head): no other layer is kept
                hidden = (bert(**inputs).last_hidden_state,)
            else:
                states = bert(**inputs, output_hidden_states=True).hidden_states  # 7 x (B, T, 384)
                hidden = tuple(states[layer] for layer in layers)
                if tuned is not None:
                    logits = tuned(states[cut].half().float(), inputs["attention_mask"])
                    probs[idx] = torch.sigmoid(logits).double().numpy()
            stacked = torch.stack(hidden, 1).float().numpy()  # (B, L, T, 384)
            out[idx] = pool(stacked, inputs["attention_mask"].numpy(), spec, layers)
    return out, probs
