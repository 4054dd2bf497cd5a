"""Supervised fine-tuning settings (LoRA; ``quantize="4bit"`` makes it QLoRA).

    >>> SFTTrainConfig(out="chef", epochs=2).kind
    'sft'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import BaseTrainConfig


@dataclass(frozen=True)
class SFTTrainConfig(BaseTrainConfig):
    """LoRA SFT on prompt/completion or chat JSONL; the loss covers the completion tokens only."""

    completion_only: bool = field(default=True, metadata={"help": "Loss on the answer tokens only (the prompt is context)."})

    kind = "sft"
