"""Which weights generation runs on: the lean 4-bit path on the CPU where it can, else the model itself.

    >>> from gpt_demo.models.decode_path import choose
    >>> choose("auto", reason=None, adapter=None)
    'int4'
    >>> choose("auto", reason=None, adapter="my-sft")       # a merged LoRA: 4-bit rounding would blur it
    'bf16'
    >>> choose("auto", reason="device cuda (the lean path is for the CPU)", adapter=None)
    'float'

``auto`` (the default) picks, on the CPU, the fastest path that keeps the answers: 4-bit
weights rebuilt from the GGUF's own Q4_1 blocks (lossless for the packaged model, see
``models.lowbit``) with the lean forward pass of ``models.lean_llama``. A merged adapter
changes weights by less than one 4-bit step, so an adapter model gets the lean path in
bfloat16 instead. Everything else (attention maps, hidden states, the next-token table,
scoring, training) keeps using the transformers model in float32, and generation falls
back to it, saying why, wherever the lean path cannot serve the model.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# The head (the 49,152-row token table) in int8 with one scale per row: 40 % less to read per
# token than bf16, and the mean log-likelihood on ../shared/data/sft answers stays within 0.2 %.
HEAD = {"int4": "int8", "bf16": "bf16"}


def choose(requested: str, *, reason: str | None, adapter: str | None) -> str:
    """The path for ``requested`` (auto | int4 | bf16 | float) given why the lean path is unfit (None: fit)."""
    if requested == "float" or (requested == "auto" and reason is not None):
        return "float"
    if requested == "auto":
        return "bf16" if adapter else "int4"
    return requested


def attach_decode_path(loaded, requested: str = "auto", *, native_step: bool = True) -> None:
    """Build ``loaded.lean`` for the chosen path and set ``loaded.decode_path`` to say what runs and why."""
    from .lean_llama import LeanLlama, eligible

    weights = "int4" if requested in ("auto", "int4") else "bf16"
    reason = eligible(loaded.model, weights) if requested != "float" else None
    path = choose(requested, reason=reason, adapter=loaded.adapter)
    dtype = str(next(loaded.model.parameters()).dtype).replace("torch.", "")
    if path == "float":
        why = "as asked (decode=float)" if requested == "float" else f"the lean path does not serve {reason}"
        loaded.lean, loaded.decode_path = None, f"{dtype} transformers model: {why}"
        return
    if reason is not None:  # int4 or bf16 asked for by name, and the model cannot take it
        raise ValueError(f"decode={requested!r} cannot serve this model: {reason}; use decode='auto' or 'float'")
    loaded.lean = LeanLlama.from_hf(loaded.model, weights=path, head=HEAD[path])
    if path == "int4" and native_step:
        from . import native

        native.start_build()  # in the background: the Python loop serves until the compiled step is ready
    note = {
        "int4": "4-bit weights in 32-weight groups (the GGUF's Q4_1 blocks), an int8 head, bf16 activations",
        "bf16": "bfloat16 weights" + (" (a merged adapter: 4-bit steps would blur its changes)" if loaded.adapter else ""),
    }[path]
    loaded.decode_path = (f"lean {path} path: {note}; attention maps, the next-token table, "
                          f"scoring and training use the {dtype} transformers model")
    log.info("generation runs on the %s", loaded.decode_path)
