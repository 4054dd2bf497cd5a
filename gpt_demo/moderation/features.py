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

One MiniLM forward pass gives every block, run through ``gpt_demo.moderation.lean`` (transformers'
arithmetic without its per-layer Python: the same numbers, a fifth to a quarter less time at batch 1).
Only the layers a spec reads are pooled: the shipped ``("emb",)`` reads the last layer alone and gets
``gpt_demo.embeddings``' sentence embedding.
``encode_tuned`` also runs a head's fine-tuned top layers (``gpt_demo.moderation.tuned``) on the
states below them, from the same pass. Tokenizing shares ``gpt_demo.embeddings``' lock: one call at
a time on the shared fast tokenizer, the forward passes side by side.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import MODERATION_FORWARDS, check_choice
from .config import BLOCK_DIM, check_spec, feature_dim  # noqa: F401 (BLOCK_DIM: train.py reads it from here)

LAYERS = 7  # MiniLM-L6: the embeddings output plus six transformer layers
# How MiniLM's layers run: gpt_demo.moderation.lean (the default: transformers' numbers), the same with 8-bit
# integer matrix products (faster, close numbers), or transformers' own modules (the reference).
FORWARDS = MODERATION_FORWARDS


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


def check_forward(forward: str, field_name: str = "forward") -> str:
    """``forward`` if it is one of ``FORWARDS``, else a ValueError naming the field, the value and the choices."""
    return check_choice(field_name, forward, FORWARDS)


def encode(texts: list[str], spec: Sequence[str], batch_size: int = 32, progress: bool = False,
           forward: str = "lean") -> np.ndarray:
    """(N, 384 * len(spec)) features of texts MiniLM reads whole (callers split longer ones into windows first).

    ``forward``: one of ``FORWARDS``: ``"lean"`` (``gpt_demo.moderation.lean``), ``"int8"`` (the same with 8-bit
    integer matrix products) or ``"transformers"`` (its own modules, the reference)."""
    return _run(texts, spec, batch_size, progress, None, forward)[0]


def encode_tuned(texts: list[str], spec: Sequence[str], tuned, batch_size: int = 32,
                 forward: str = "lean") -> tuple[np.ndarray, np.ndarray]:
    """``encode``'s features and, from the same MiniLM pass, (N, 8) probabilities of ``tuned``: a module of
    ``gpt_demo.moderation.tuned`` run on the states below its layers, rounded to float16 as in its training."""
    return _run(texts, spec, batch_size, False, tuned, forward)


def _run(texts: list[str], spec: Sequence[str], batch_size: int, progress: bool, tuned,
         forward: str) -> tuple[np.ndarray, np.ndarray | None]:
    spec = check_spec(spec)
    lean, int8 = check_forward(forward) != "transformers", forward == "int8"
    if not texts:
        return np.zeros((0, feature_dim(spec)), dtype=np.float32), np.zeros((0, 8)) if tuned is not None else None
    import torch

    from ..embeddings import _tokenize_lock, length_batches, minilm_model
    from .lean import embed_tokens, lean_layers, padding_mask, run_layers

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
    encoder = lean_layers(bert, bert.encoder.layer, int8=int8) if lean else None
    with torch.inference_mode():
        for idx in length_batches([len(x) for x in ids], batch_size, progress):
            with _tokenize_lock:
                features = st.preprocess([texts[i] for i in idx])
            inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            if lean:
                mask = padding_mask(inputs["attention_mask"])
                states = run_layers(encoder, embed_tokens(bert, inputs), mask, keep=True)  # 7 x (B, T, 384), as hidden_states
            else:
                states = bert(**inputs, output_hidden_states=True).hidden_states
            hidden = tuple(states[layer] for layer in layers)
            if tuned is not None:
                below = states[cut].half().float()
                logits = tuned.infer(below, inputs["attention_mask"], int8=int8) if lean else tuned(below, inputs["attention_mask"])
                probs[idx] = torch.sigmoid(logits).double().numpy()
            stacked = torch.stack(hidden, 1).float().numpy()  # (B, L, T, 384)
            out[idx] = pool(stacked, inputs["attention_mask"].numpy(), spec, layers)
    return out, probs
