"""Reward-model settings: a one-number head on the base model, LoRA, loss -log σ(r_chosen - r_rejected).

    >>> RewardTrainConfig(eval_fraction=0.5).eval_fraction
    0.5
    >>> RewardTrainConfig(eval_fraction=1.0)
    Traceback (most recent call last):
    ...
    ValueError: eval_fraction=1.0 is not allowed; give a number in [0, 0.9]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import BaseTrainConfig


@dataclass(frozen=True)
class RewardTrainConfig(BaseTrainConfig):
    """Train a reward model on preference pairs; report pair accuracy and margin on a held-out split."""

    eval_fraction: float = field(
        default=0.2,
        metadata={"help": "Share of prompts held out (every pair of a prompt lands on the same side); 0: none."},
    )
    center_rewards: float = field(
        default=0.01,
        metadata={"help": "Weight of the (r_c + r_r)^2 term that keeps rewards near 0 (0: off)."},
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})

    kind = "reward"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.eval_fraction <= 0.9:
            raise ValueError(f"eval_fraction={self.eval_fraction!r} is not allowed; give a number in [0, 0.9]")
        if self.center_rewards < 0:
            raise ValueError(f"center_rewards={self.center_rewards!r} is not allowed; give a number >= 0")
