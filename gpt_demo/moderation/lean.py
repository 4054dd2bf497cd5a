"""MiniLM's transformer layers run for inference as a few plain torch calls: the same numbers, less overhead.

    >>> from gpt_demo.moderation.lean import compare_with_transformers
    >>> compare_with_transformers(["I want to kill him", "hello there, how are you today?"]) < 1e-5   # doctest: +SKIP
    True

Why. At batch 1 a short text costs MiniLM's six layers plus the head's four tuned copies, and
transformers' ``BertLayer`` spends a fifth to a quarter of that in Python around the arithmetic (keyword
deprecation wrappers, output capturing, a mask built per call, ``inspect.signature`` for the
feed-forward chunking, three query/key/value calls). ``LeanLayer`` reads a ``BertLayer``'s own
parameters and does the arithmetic alone: query, key and value as one matrix product (their weights
stacked once), ``scaled_dot_product_attention`` with a boolean padding mask, the residual layer norms
and the GELU feed-forward, exactly as ``modeling_bert`` orders them (``benchmarks/moderation_latency.py
--forward lean transformers`` measures both in turns). Inference only: no dropout, no gradients; training keeps
transformers' modules (``gpt_demo.moderation.tuned``), so the shipped weights do not depend on this.

``LeanLayer(layer, int8=True)`` (``ModerationConfig(forward="int8")``, ``GPT_DEMO_MODERATION_FORWARD=int8``)
runs the four matrix products in 8-bit integers through torch's dynamic-quantization kernels: weights
quantized once, symmetric per output row in 7 bits (so AVX2 and AVX-512 hosts compute the same
integers, ``_pack_int8``); activations per call in 8 bits, one scale for the whole call. About 2-3x
faster on 2 cores; the scores are close, not equal (README, Performance, has the measured gaps and their cost).

The stacked query/key/value weights (and int8's packed ones) are copies, rebuilt when a parameter
they come from is changed in place (an optimiser step bumps the tensor's version counter) or
replaced (another storage or dtype), so a module trained after its first use never runs stale weights.
"""

from __future__ import annotations

import threading
import weakref
from typing import Sequence

__all__ = ["LeanLayer", "lean_layers", "padding_mask", "run_layers", "embed_tokens", "compare_with_transformers", "int8_available"]


class LeanLayer:
    """One ``BertLayer`` (self-attention, no cross-attention, GELU) as a callable ``(h, mask) -> h``.

    ``int8``: its four matrix products in 8-bit integers (weights quantized once per output row in 7 bits,
    activations per call: torch's dynamic-quantization kernels, fbgemm on x86): close numbers, not the same.
    """

    def __init__(self, layer, int8: bool = False):
        attention = layer.attention
        self._qkv = (attention.self.query, attention.self.key, attention.self.value)
        self.heads = attention.self.num_attention_heads
        self.head_dim = attention.self.attention_head_size
        self.scaling = attention.self.scaling
        self.out, self.norm1 = attention.output.dense, attention.output.LayerNorm
        self.up, self.down, self.norm2 = layer.intermediate.dense, layer.output.dense, layer.output.LayerNorm
        act = getattr(layer.intermediate, "intermediate_act_fn", None)
        if type(act).__name__ not in ("GELUActivation",):  # MiniLM's "gelu": the exact erf form
            raise ValueError(f"LeanLayer: activation {type(act).__name__} is not supported; MiniLM uses GELUActivation")
        self.int8 = int8
        self._versions = None
        self._stack()

    def _stack(self) -> None:
        import torch

        linears = self._qkv + (self.out, self.up, self.down) if self.int8 else self._qkv
        versions = tuple(_identity(p) for lin in linears for p in (lin.weight, lin.bias))
        if versions != self._versions:
            with torch.no_grad():
                qkv_weight = torch.cat([lin.weight for lin in self._qkv]).detach().contiguous()
                qkv_bias = torch.cat([lin.bias for lin in self._qkv]).detach().contiguous()
                if self.int8:  # only the packed copies are kept
                    self._packed = [_pack_int8(w, b) for w, b in ((qkv_weight, qkv_bias), (self.out.weight, self.out.bias),
                                                                  (self.up.weight, self.up.bias), (self.down.weight, self.down.bias))]
                else:
                    self.qkv_weight, self.qkv_bias = qkv_weight, qkv_bias
            self._versions = versions

    def _linear(self, x, k: int, lin=None):
        """The k-th matrix product (0: query/key/value, 1: attention output, 2: up, 3: down)."""
        import torch
        import torch.nn.functional as F

        if self.int8:  # activations: the full 8 bits (reduce_range=False); the weights' 7 bits keep AVX2's sums in range
            flat = torch.ops.quantized.linear_dynamic(x.reshape(-1, x.shape[-1]).contiguous(), self._packed[k], False)
            return flat.view(*x.shape[:-1], flat.shape[-1])
        if k == 0:
            return F.linear(x, self.qkv_weight, self.qkv_bias)
        return F.linear(x, lin.weight, lin.bias)

    def __call__(self, h, mask):
        """(B, T, 384) states and a (B, 1, 1, T) boolean mask (True: attend; None: no padding) -> the layer's output."""
        import torch.nn.functional as F

        self._stack()
        batch, tokens, dim = h.shape
        q, k, v = self._linear(h, 0).view(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling).transpose(1, 2).reshape(batch, tokens, dim)
        h = F.layer_norm(self._linear(a, 1, self.out) + h, (dim,), self.norm1.weight, self.norm1.bias, self.norm1.eps)
        x = F.gelu(self._linear(h, 2, self.up))
        return F.layer_norm(self._linear(x, 3, self.down) + h, (dim,), self.norm2.weight, self.norm2.bias, self.norm2.eps)


def _identity(p) -> tuple:
    """What says a parameter changed: its storage, dtype and in-place version (an inference tensor has none)."""
    try:
        version = p._version
    except RuntimeError:  # created under torch.inference_mode(): it cannot be changed in place outside it
        version = -1
    return p.data_ptr(), p.dtype, version


INT8_WEIGHT_LEVELS = 63  # weights in [-63, 63]: see _pack_int8


def _pack_int8(weight, bias):
    """A (out, in) float weight -> torch's packed int8 linear: symmetric, one scale per output row, 7 bits.

    fbgemm's AVX2 kernel adds two products of an unsigned 8-bit activation and a signed 8-bit weight in
    a saturating 16-bit sum: 2 x 255 x 127 can overflow it (AVX-512 VNNI hosts sum in 32 bits and do
    not), so full-range weights give other scores on AVX2 hosts. With weights in [-63, 63] the sum stays
    under 2 x 255 x 63 = 32,130, and every host computes the same integers. Torch's own dynamic Linear
    instead gives up a bit of the activations (``reduce_range``), which costs more here: activations
    share one scale per call, weights have one per row (README, Performance)."""
    import warnings

    import torch

    w = weight.detach().float()
    scales = (w.abs().amax(1).clamp_min(1e-8) / INT8_WEIGHT_LEVELS).double()
    with warnings.catch_warnings():  # torch marks its eager quantization API deprecated; 2.13 (pinned here) has it
        warnings.filterwarnings("ignore", message=r".*(deprecated|will be removed).*")
        q = torch.quantize_per_channel(w, scales, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, bias.detach().float())


def int8_available() -> bool:
    """Whether this torch build has the dynamic int8 linear kernels (``forward="int8"``)."""
    try:
        import torch

        engines = torch.backends.quantized.supported_engines
        return ("fbgemm" in engines or "x86" in engines) and hasattr(torch.ops.quantized, "linear_dynamic")
    except Exception:  # noqa: BLE001 (a torch without the quantized ops)
        return False


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # owner module -> {int8: [LeanLayer, ...]}
_CACHE_LOCK = threading.Lock()


def lean_layers(owner, layers, int8: bool = False) -> list[LeanLayer]:
    """``LeanLayer`` views of ``layers``, made once per ``owner`` (a module: MiniLM, or a head's tuned module).

    Kept beside the module, not in it, so its pickling, ``deepcopy`` and ``state_dict`` never see them."""
    with _CACHE_LOCK:
        views = _CACHE.setdefault(owner, {})
        cached = views.get(int8)
        if cached is None or len(cached) != len(layers) or any(c._qkv[0] is not l.attention.self.query for c, l in zip(cached, layers)):
            if int8 and not int8_available():
                raise RuntimeError("forward='int8' needs torch's quantized CPU kernels (fbgemm), which this torch build lacks; "
                                   "use forward='lean'")
            cached = views[int8] = [LeanLayer(layer, int8=int8) for layer in layers]
        return cached


def padding_mask(attention_mask):
    """A (B, T) 0/1 attention mask -> the (B, 1, 1, T) boolean mask SDPA takes, or None when nothing is padded."""
    if bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def run_layers(layers: Sequence[LeanLayer], h, mask, keep: bool = False):
    """Run ``h`` through ``layers``; ``keep``: every state, input first (as ``hidden_states``), else the last one."""
    states = [h]
    for layer in layers:
        h = layer(h, mask)
        if keep:
            states.append(h)
    return states if keep else h


def embed_tokens(bert, inputs):
    """The embeddings layer's output (word + position + token type, layer norm) for tokenized ``inputs``."""
    if bert.training:
        raise RuntimeError("the lean forward is for inference; call .eval() on MiniLM first (its dropout would run here only)")
    return bert.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids"))


def compare_with_transformers(texts: Sequence[str]) -> float:
    """Largest difference between transformers' MiniLM ``hidden_states`` and the lean layers', one padded batch."""
    import torch

    from ..embeddings import _tokenize_lock, minilm_model

    st = minilm_model()
    bert = st[0].auto_model
    with _tokenize_lock:
        inputs = st.tokenizer(list(texts), padding=True, truncation=True, max_length=st.max_seq_length, return_tensors="pt")
    with torch.inference_mode():
        ref = bert(**inputs, output_hidden_states=True).hidden_states
        mask = padding_mask(inputs["attention_mask"])
        ours = run_layers(lean_layers(bert, bert.encoder.layer), embed_tokens(bert, inputs), mask, keep=True)
        keep = inputs["attention_mask"].bool()  # padded positions are not read by any pooling
        if len(ref) != len(ours):
            raise AssertionError(f"{len(ref)} hidden states from transformers, {len(ours)} from the lean layers")
        return max(float((a - b)[keep].abs().max()) for a, b in zip(ref, ours))
