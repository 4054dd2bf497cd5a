"""Low-bit linear layers for the CPU decode path: 4-bit groups (Q4_1's layout) and bfloat16.

    >>> import torch
    >>> from gpt_demo.models.lowbit import Int4Linear, quantize_q4_1, dequantize_q4_1
    >>> w = torch.randn(64, 64)
    >>> q, scale, low = quantize_q4_1(w)                      # 32-weight blocks: w ~ scale * q + low
    >>> bool((dequantize_q4_1(q, scale, low) - w).abs().max() < w.abs().max() / 10)
    True
    >>> layer = Int4Linear.from_weights([w])                   # one fused matrix for x @ w.T
    >>> layer(torch.randn(1, 64)).shape
    torch.Size([1, 64])

The packaged model is a Q4_1 GGUF: every block of 32 input weights is ``d * q + m`` with
``q`` in 0..15, ``d`` = (max - min) / 15 and ``m`` = min. The safetensors cache holds those
values dequantized to float32, so ``quantize_q4_1`` of a cached weight finds the same
``q``, ``d`` and ``m`` again (each block's min is ``m``, its max ``m + 15 d``; a test checks
it): the 4-bit codes are the GGUF's own, with no second rounding. For any other float model
it is ordinary asymmetric 4-bit quantization in 32-weight groups.

The kernel is PyTorch's ``aten._weight_int4pack_mm_for_cpu``, which computes with
``(q - 8) * scale + zero`` per group and needs bfloat16 activations (float32 ones take a
slow path, ~15x slower here) and bfloat16 scales and zeros: each block's ``d`` and
``m + 8 d`` are rounded to bf16's 8 significant bits, which moves a weight by about 0.2 %
(at most about a fifth of a 4-bit step). The 8-bit token table of the GGUF (Q8_0) becomes a bfloat16
head, whose rounding (8 significant bits) is finer than Q8_0's own.
"""

from __future__ import annotations

import torch

GROUP = 32  # weights per block, as in GGUF's Q4_1


def quantize_q4_1(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, scale, low) with ``w ~ scale * q + low`` per block of ``group`` input weights.

    ``w`` is (N, K) with K a multiple of ``group``; q is int32 (N, K) in 0..15, scale and
    low are float32 (N, K // group).
    """
    n, k = w.shape
    if k % group:
        raise ValueError(f"in_features={k} is not a multiple of the {group}-weight group")
    blocks = w.detach().float().reshape(n, k // group, group)  # (N, G, group)
    low = blocks.amin(-1)
    scale = (blocks.amax(-1) - low) / 15
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = ((blocks - low[..., None]) / safe[..., None]).round().clamp_(0, 15).to(torch.int32)
    return q.reshape(n, k), scale, low


def dequantize_q4_1(q: torch.Tensor, scale: torch.Tensor, low: torch.Tensor, group: int = GROUP) -> torch.Tensor:
    """The float32 weights that ``quantize_q4_1`` stands for."""
    n, k = q.shape
    return (q.reshape(n, k // group, group).float() * scale[..., None] + low[..., None]).reshape(n, k)


class Int4Linear:
    """``x @ W.T`` for 4-bit weights in 32-weight groups; several matrices can share one call."""

    def __init__(self, packed: torch.Tensor, scale_zeros: torch.Tensor, out_features: int, in_features: int):
        self.packed = packed  # uint8 (N, K / 2), the kernel's own layout
        self.scale_zeros = scale_zeros  # bfloat16 (K / group, N, 2)
        self.out_features, self.in_features = out_features, in_features

    @classmethod
    def from_weights(cls, weights: list[torch.Tensor], group: int = GROUP) -> "Int4Linear":
        """Quantize and stack ``weights`` (each (N_i, K)) along the output: one call yields all of them."""
        q, scale, low = (torch.cat(parts) for parts in zip(*(quantize_q4_1(w, group) for w in weights)))
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 2)
        # The kernel's dequantization is (q - 8) * scale + zero, so zero = low + 8 * scale.
        scale_zeros = torch.stack([scale.t(), (low + 8 * scale).t()], dim=-1).to(torch.bfloat16).contiguous()
        return cls(packed, scale_zeros, q.shape[0], q.shape[1])

    @property
    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scale_zeros.numel() * 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) bfloat16 -> (..., N) bfloat16."""
        shape = x.shape
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]), self.packed, GROUP, self.scale_zeros)
        return out.reshape(*shape[:-1], self.out_features)


class BF16Linear:
    """``x @ W.T`` with bfloat16 weights (the head, and the bf16 candidate of the benchmark)."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight.detach().to(torch.bfloat16).contiguous()
        self.out_features, self.in_features = self.weight.shape

    @classmethod
    def from_weights(cls, weights: list[torch.Tensor]) -> "BF16Linear":
        return cls(torch.cat([w.detach() for w in weights]))

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (M, in)
        if rows.shape[0] == 1:
            # One row goes to oneDNN's bf16 GEMV, which sums in another order than its GEMM: about 1 output
            # in 10 then rounds to the next bf16, so an answer alone would part from the same answer in a
            # batch. Two rows (one of zeros) take the GEMM, whose rows do not depend on each other; on
            # this CPU it is also the faster of the two.
            padded = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])
            return torch.nn.functional.linear(padded, self.weight)[:1].reshape(*x.shape[:-1], self.out_features)
        return torch.nn.functional.linear(x, self.weight)


class Int8Linear:
    """``x @ W.T`` with int8 weights and one scale per output row (``aten._weight_int8pack_mm``, bf16 activations)."""

    def __init__(self, weight: torch.Tensor):
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127  # (N,)
        self.weight = (w / scale[:, None]).round().clamp_(-127, 127).to(torch.int8).contiguous()
        self.scales = scale.to(torch.bfloat16)
        self.out_features, self.in_features = self.weight.shape

    @classmethod
    def from_weights(cls, weights: list[torch.Tensor]) -> "Int8Linear":
        return cls(torch.cat([w.detach() for w in weights]))

    @property
    def nbytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.weight, self.scales)
        return out.reshape(*shape[:-1], self.out_features)


LINEAR_KINDS = {"int4": Int4Linear, "int8": Int8Linear, "bf16": BF16Linear}


def int4_kernel_available() -> bool:
    """Whether this PyTorch build has the CPU 4-bit kernels (2.5 and later)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"
    )
