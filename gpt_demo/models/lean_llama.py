"""A lean Llama forward pass for CPU decoding: fused 4-bit matrices, a preallocated KV cache, few ops.

    >>> from gpt_demo.models.lean_llama import LeanLlama          # doctest: +SKIP
    >>> lean = LeanLlama.from_hf(loaded.model, weights="int4")    # doctest: +SKIP
    >>> cache = lean.new_cache(batch=1)                           # doctest: +SKIP
    >>> logits = lean.forward(torch.tensor([prompt_ids]), cache)  # (1, vocab), float32  # doctest: +SKIP

Why not ``model(...)`` with low-bit layers swapped in: one decode step of the transformers
model runs ~40 small modules per layer, each with its own Python call and checks, and grows
a ``DynamicCache`` by concatenation. On this CPU a step is bound by op dispatch as much as
by weight reads, so here a layer is about twenty ops: four matrix calls (q, k and v fused
into one, gate and up into another), one RMSNorm each side, RoPE as one complex product (q
and k rows are stored in interleaved pairs, which leaves every q.k dot product unchanged,
and the 1/sqrt(head_dim) scale is folded into q's weights: a power of two for SmolLM2, so
exact), and K/V written in place into a float32 cache that grows by doubling. A decode
step attends with two small matmuls instead of SDPA, whose set-up costs 5x more at this
size (180 vs 35 us per call at 300 keys); prompts use SDPA. It reads the weights of the
transformers model it is built from, so the same ``LoadedModel`` still serves attention
maps (eager attention), hidden states and training in float32.

Rows of a batch may stand at different positions (``KVCache.lengths``): each row's new
keys go to its own slot and a mask hides the slots beyond its length. ``batch_select_indices``
and ``batch_repeat_interleave`` behave as transformers' cache methods do, so the decode loop
treats both caches alike.

Supported: Llama-architecture models (``model_type`` llama, no biases, default RoPE), such as
SmolLM2. ``eligible(model)`` says why another model is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import native
from .lowbit import GROUP, LINEAR_KINDS, int4_kernel_available

ACT = torch.bfloat16  # activations entering the low-bit matrices (the int4 kernel needs bf16)
HEAD_KINDS = ("bf16", "int8")
REFINE = 64  # best logits of each position recomputed in float32 (see LeanLlama._logits)


def eligible(model, weights: str = "int4") -> str | None:
    """None when ``LeanLlama.from_hf(model, weights)`` can serve ``model``, else the reason it cannot."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    if getattr(cfg, "model_type", None) != "llama":
        return f"model_type {getattr(cfg, 'model_type', None)!r} (the lean path implements llama)"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "attention or MLP biases"
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return f"rope_type {rope.get('rope_type')!r} (only the default RoPE)"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r}"
    if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
        return "bitsandbytes-quantized weights"
    if base.device.type != "cpu":
        return f"device {base.device.type} (the lean path is for the CPU)"
    if any(p.dtype != torch.float32 for p in base.parameters()):
        return "weights that are not float32"
    if weights == "int4":
        if not int4_kernel_available():
            return "this PyTorch has no CPU 4-bit kernel"
        widths = {cfg.hidden_size, cfg.intermediate_size}
        if any(w % GROUP for w in widths):
            return f"layer widths {sorted(widths)} are not multiples of {GROUP}"
    return None


@dataclass
class _Layer:
    attn_norm: torch.Tensor  # (hidden,) float32
    qkv: object  # fused q, k, v: hidden -> (heads + 2 * kv_heads) * head_dim
    o: object
    mlp_norm: torch.Tensor
    gate_up: object  # fused gate, up: hidden -> 2 * intermediate
    down: object


class KVCache:
    """Keys and values of every layer, preallocated: (layers, batch, kv_heads, capacity, head_dim), float32."""

    def __init__(self, layers: int, batch: int, kv_heads: int, head_dim: int, capacity: int, dtype=torch.float32):
        # zeros, not empty: a masked-out slot still enters the product with weight 0, and 0 x NaN garbage
        # would be NaN (a batch whose rows sit at different lengths reads past its shorter rows)
        shape = (layers, batch, kv_heads, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=dtype)
        self.v = torch.zeros(shape, dtype=dtype)
        self.lengths = torch.zeros(batch, dtype=torch.long)  # tokens stored per row

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def shrink(self, capacity: int) -> None:
        """Keep room for ``capacity`` tokens per row (at least what every row holds), giving the rest back."""
        capacity = max(capacity, int(self.lengths.max()))
        if capacity >= self.capacity:
            return
        self.k = self.k[:, :, :, :capacity].clone()
        self.v = self.v[:, :, :, :capacity].clone()

    def reserve(self, tokens: int) -> None:
        """Make room for ``tokens`` more per row (doubling, so growth costs O(n) overall)."""
        need = int(self.lengths.max()) + tokens
        if need <= self.capacity:
            return
        capacity = max(need, 2 * self.capacity)
        for name in ("k", "v"):
            old = getattr(self, name)
            new = torch.zeros((*old.shape[:3], capacity, old.shape[4]), dtype=old.dtype)
            new[:, :, :, : old.shape[3]] = old
            setattr(self, name, new)

    def batch_select_indices(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` (as transformers' ``Cache.batch_select_indices``)."""
        self.k, self.v, self.lengths = self.k[:, index], self.v[:, index], self.lengths[index]

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row ``repeats`` times in place (one prompt, several candidates)."""
        self.k = self.k.repeat_interleave(repeats, dim=1)
        self.v = self.v.repeat_interleave(repeats, dim=1)
        self.lengths = self.lengths.repeat_interleave(repeats)

    def slot_view(self, slot: int) -> "KVCache":
        """A one-row cache whose keys and values are row ``slot`` of this one (writes go through)."""
        view = object.__new__(KVCache)
        view.k, view.v = self.k[:, slot : slot + 1], self.v[:, slot : slot + 1]
        view.lengths = self.lengths[slot : slot + 1].clone()
        return view

    def copy_slot(self, source: int, targets: list[int]) -> None:
        """Give rows ``targets`` row ``source``'s keys, values and length (children of one prompt)."""
        if not targets:
            return
        n = int(self.lengths[source])
        index = torch.tensor(targets)
        self.k[:, index, :, :n] = self.k[:, source : source + 1, :, :n]
        self.v[:, index, :, :n] = self.v[:, source : source + 1, :, :n]
        self.lengths[index] = n

    def add_slots(self, count: int) -> list[int]:
        """Widen the batch by ``count`` empty rows; returns their indices."""
        first = self.batch
        for name in ("k", "v"):
            old = getattr(self, name)
            new = torch.zeros((old.shape[0], first + count, *old.shape[2:]), dtype=old.dtype)
            new[:, :first] = old
            setattr(self, name, new)
        self.lengths = torch.cat([self.lengths, torch.zeros(count, dtype=torch.long)])
        return list(range(first, first + count))


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """A boolean attend-mask (B, T, S) as the 0 / -inf scores term (B, 1, T, S) both decode loops add."""
    return torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))[:, None]


def _interleave_rows(weight: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Reorder each head's rows from transformers' halves (i, i + D/2) to adjacent pairs (2i, 2i + 1)."""
    half = head_dim // 2
    order = torch.stack([torch.arange(half), torch.arange(half) + half], dim=-1).reshape(-1)  # (D,)
    rows = (torch.arange(heads)[:, None] * head_dim + order).reshape(-1)
    return weight[rows]


class LeanLlama:
    """The forward pass of a transformers Llama model over low-bit copies of its matrices."""

    def __init__(self, model, weights: str = "int4", head: str = "bf16"):
        reason = eligible(model, weights)
        if reason is not None:
            raise ValueError(f"the lean decode path cannot serve this model: {reason}")
        if head not in HEAD_KINDS:
            raise ValueError(f"head={head!r} is not allowed; choose one of {', '.join(HEAD_KINDS)}")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = base.config
        self.weights, self.head_kind = weights, head
        self.hidden, self.heads, self.kv_heads = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or self.hidden // self.heads
        self.group = self.heads // self.kv_heads  # query heads per key/value head
        self.eps = float(cfg.rms_norm_eps)
        self.intermediate = cfg.intermediate_size
        self._native_args = None  # per-layer tensor lists for the compiled step, built on its first use
        self.vocab = cfg.vocab_size
        self.context_window = int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
        linear = LINEAR_KINDS[weights].from_weights
        inner = base.model
        self.embed = inner.embed_tokens.weight.detach()  # (vocab, hidden) float32, shared with the model
        self.final_norm = inner.norm.weight.detach()
        self.head = LINEAR_KINDS[head].from_weights([base.lm_head.weight])
        self.head_weight = base.lm_head.weight.detach()  # float32, shared with the model (tied to the embedding)
        scale = self.head_dim**-0.5
        self.layers = []
        for block in inner.layers:
            att, mlp = block.self_attn, block.mlp
            q = _interleave_rows(att.q_proj.weight.detach() * scale, self.heads, self.head_dim)
            k = _interleave_rows(att.k_proj.weight.detach(), self.kv_heads, self.head_dim)
            self.layers.append(
                _Layer(
                    attn_norm=block.input_layernorm.weight.detach(),
                    qkv=linear([q, k, att.v_proj.weight]),
                    o=linear([att.o_proj.weight]),
                    mlp_norm=block.post_attention_layernorm.weight.detach(),
                    gate_up=linear([mlp.gate_proj.weight, mlp.up_proj.weight]),
                    down=linear([mlp.down_proj.weight]),
                )
            )
        theta = float((getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
        inv_freq = 1.0 / theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim)
        angles = torch.outer(torch.arange(self.context_window, dtype=torch.float64), inv_freq)  # (context, D/2)
        self.rotation = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)  # e^(i pos theta_j)

    @classmethod
    def from_hf(cls, model, weights: str = "int4", head: str = "bf16") -> "LeanLlama":
        return cls(model, weights, head)

    @property
    def nbytes(self) -> int:
        """Bytes of the low-bit copies and the RoPE table (the float embedding is shared with the model)."""
        per_layer = sum(m.nbytes for layer in self.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down))
        return per_layer + self.head.nbytes + self.rotation.numel() * 8

    def new_cache(self, batch: int = 1, capacity: int = 256) -> KVCache:
        return KVCache(len(self.layers), batch, self.kv_heads, self.head_dim, capacity)

    def forward(self, input_ids: torch.Tensor, cache: KVCache, *, all_logits: bool = False) -> torch.Tensor:
        """Run ``input_ids`` (B, T) after what ``cache`` holds; float32 logits (B, vocab), or (B, T, vocab)."""
        b, t = input_ids.shape
        if b != cache.batch:
            raise ValueError(f"input has {b} rows but the cache holds {cache.batch}")
        cache.reserve(t)
        start = cache.lengths  # (B,)
        same_start = bool((start == start[0]).all())
        pos = start[:, None] + torch.arange(t)  # (B, T)
        if int(pos.max()) >= self.context_window:
            raise ValueError(f"position {int(pos.max())} is past the {self.context_window}-token context window")
        rotation = self.rotation[pos][:, :, None]  # (B, T, 1, D/2) complex
        end = int(start.max()) + t  # key slots attended: [0, end)
        mask = None  # True where a query may attend a key
        if not (same_start and (t == 1 or int(start[0]) == 0)):
            mask = torch.arange(end)[None, None, :] <= pos[:, :, None]  # (B, T, end): causal, hides unwritten slots
        step = native.module() if t == 1 and self.weights == "int4" else None
        if step is not None:  # the compiled loop over the layers (models.native): same ops, no Python per op
            x = self._native_step(step, input_ids, cache, pos, rotation, same_start, mask, end)
            cache.lengths = start + 1
            return self._logits(x[:, None], all_logits)
        rows = torch.arange(b)[:, None]
        hd, nq, nkv = self.head_dim, self.heads * self.head_dim, self.kv_heads * self.head_dim
        nh = self.heads + self.kv_heads

        x = F.embedding(input_ids, self.embed)  # (B, T, hidden) float32: the residual stream
        for i, layer in enumerate(self.layers):
            h = F.rms_norm(x, (self.hidden,), layer.attn_norm, self.eps).to(ACT)
            qkv = layer.qkv(h)  # (B, T, nq + 2 nkv) bf16
            qk = torch.view_as_complex(qkv[..., : nq + nkv].float().reshape(b, t, nh, hd // 2, 2))
            qk = torch.view_as_real(qk * rotation).reshape(b, t, nh, hd)  # RoPE on q and k at once
            q, k = qk[:, :, : self.heads], qk[:, :, self.heads :]  # (B, T, H, D), (B, T, KV, D)
            v = qkv[..., nq + nkv :].float().reshape(b, t, self.kv_heads, hd)
            if same_start:
                s0 = int(start[0])
                cache.k[i, :, :, s0 : s0 + t] = k.transpose(1, 2)
                cache.v[i, :, :, s0 : s0 + t] = v.transpose(1, 2)
            else:  # rows at different positions: each row's keys go to its own slots
                cache.k[i][rows, :, pos] = k
                cache.v[i][rows, :, pos] = v
            keys, values = cache.k[i, :, :, :end], cache.v[i, :, :, :end]  # (B, KV, end, D)
            a = self._attend(q, keys, values, mask, b, t)  # (B, T, nq) float32
            x = x + layer.o(a.to(ACT))  # float32 + bf16 -> float32
            h = F.rms_norm(x, (self.hidden,), layer.mlp_norm, self.eps).to(ACT)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        cache.lengths = start + t
        return self._logits(x, all_logits)

    def decode_slots(self, tokens: torch.Tensor, cache: KVCache, slots: torch.Tensor) -> torch.Tensor:
        """One new token (``tokens`` (R,)) for each cache row in ``slots`` (R,); float32 logits (R, vocab).

        The scheduler's step: rows sit at their own positions and each attends over exactly its own
        keys (a small loop over rows), so a row's numbers do not depend on the others in the batch.
        """
        cache.reserve(1)
        pos = cache.lengths[slots]  # (R,) the slot each row writes
        if int(pos.max()) >= self.context_window:
            raise ValueError(f"position {int(pos.max())} is past the {self.context_window}-token context window")
        rotation = self.rotation[pos][:, None]  # (R, 1, D/2)
        x = F.embedding(tokens, self.embed)  # (R, hidden) float32
        step = native.module() if self.weights == "int4" else None
        if step is not None:
            x = step.slots_step(x, rotation, slots, pos, *self._native_tensors(), cache.k, cache.v, self.heads,
                                self.kv_heads, self.head_dim, self.intermediate, self.eps, GROUP)
        else:
            x = self._slots_layers(x, rotation, slots.tolist(), pos.tolist(), cache)
        cache.lengths[slots] = pos + 1
        return self._logits(x[:, None], False)

    def _slots_layers(self, x, rotation, slots: list[int], pos: list[int], cache: KVCache) -> torch.Tensor:
        """The Python twin of the compiled ``slots_step``: the same ops in the same order."""
        r, hd = x.shape[0], self.head_dim
        nq, nkv, nh = self.heads * hd, self.kv_heads * hd, self.heads + self.kv_heads
        for i, layer in enumerate(self.layers):
            h = F.rms_norm(x, (self.hidden,), layer.attn_norm, self.eps).to(ACT)
            qkv = layer.qkv(h)
            qk = torch.view_as_complex(qkv[:, : nq + nkv].float().reshape(r, nh, hd // 2, 2))
            qk = torch.view_as_real(qk * rotation).reshape(r, nh, hd)
            q, k = qk[:, : self.heads], qk[:, self.heads :]
            v = qkv[:, nq + nkv :].float().reshape(r, self.kv_heads, hd)
            out = torch.empty(r, nq)
            for j, (slot, p) in enumerate(zip(slots, pos)):
                kr, vr = cache.k[i, slot], cache.v[i, slot]  # (KV, capacity, D)
                kr[:, p] = k[j]
                vr[:, p] = v[j]
                scores = q[j].reshape(self.kv_heads, self.group, hd) @ kr[:, : p + 1].transpose(-1, -2)
                out[j] = (torch.softmax(scores, dim=-1) @ vr[:, : p + 1]).reshape(nq)
            x = x + layer.o(out.to(ACT))
            h = F.rms_norm(x, (self.hidden,), layer.mlp_norm, self.eps).to(ACT)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        return x

    def _logits(self, x: torch.Tensor, all_logits: bool) -> torch.Tensor:
        if not all_logits:
            x = x[:, -1:]
        x = F.rms_norm(x, (self.hidden,), self.final_norm, self.eps)  # (B, T', hidden) float32
        logits = self.head(x.to(ACT)).float()  # (B, T', vocab), in bf16's steps: 0.125 at a logit of 24
        # bf16 logits tie where float32 ones differ by a few hundredths, which would decide greedy
        # answers by rounding and coarsen every logprob. The REFINE best are recomputed exactly in
        # float32 from the model's own head rows (cheap: 64 of 49,152), so the choice among them,
        # and their logprobs, are float32's; the tail keeps its bf16 values.
        top = logits.topk(REFINE, dim=-1).indices  # (B, T', REFINE)
        rows = self.head_weight.index_select(0, top.reshape(-1)).view(*top.shape, self.hidden)  # float32
        exact = (rows @ x[..., :, None]).squeeze(-1)  # (B, T', REFINE); index_select: W[top] is ~500x slower
        logits.scatter_(-1, top, exact)
        return logits if all_logits else logits[:, -1]

    def _native_tensors(self) -> list[list[torch.Tensor]]:
        if self._native_args is None:
            self._native_args = [
                [getattr(layer, name) for layer in self.layers] for name in ("attn_norm",)
            ] + [
                [getattr(getattr(layer, name), part) for layer in self.layers]
                for name in ("qkv", "o") for part in ("packed", "scale_zeros")
            ] + [[layer.mlp_norm for layer in self.layers]] + [
                [getattr(getattr(layer, name), part) for layer in self.layers]
                for name in ("gate_up", "down") for part in ("packed", "scale_zeros")
            ]
        return self._native_args

    def _native_step(self, step, input_ids, cache: KVCache, pos, rotation, same_start: bool, mask, end: int):
        x = F.embedding(input_ids[:, 0], self.embed)  # (B, hidden)
        additive = torch.empty(0) if mask is None else _additive(mask)
        return step.layers_step(
            x, rotation[:, 0], pos[:, 0], same_start, int(pos[0, 0]), additive, end, *self._native_tensors(),
            cache.k, cache.v, self.heads, self.kv_heads, self.head_dim, self.intermediate, self.eps, GROUP,
        )

    def _attend(self, q, keys, values, mask, b: int, t: int) -> torch.Tensor:
        """Attention of q (B, T, H, D) over keys/values (B, KV, S, D); q is pre-scaled. Returns (B, T, H * D)."""
        if t == 1:  # one new token per row: two small matmuls per kv head group
            qg = q.reshape(b, self.kv_heads, self.group, self.head_dim)  # query heads grouped by their kv head
            scores = qg @ keys.transpose(-1, -2)  # (B, KV, G, S)
            if mask is not None:  # (B, 1, S) -> (B, 1, 1, S), added as 0 / -inf (as the compiled step does)
                scores = scores + _additive(mask)
            out = torch.softmax(scores, dim=-1) @ values  # (B, KV, G, D)
            return out.reshape(b, 1, self.heads * self.head_dim)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys, values, attn_mask=None if mask is None else mask[:, None],
            is_causal=mask is None, scale=1.0, enable_gqa=True,
        )  # (B, H, T, D)
        return out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
