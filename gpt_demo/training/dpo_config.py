"""DPO settings (TRL's ``DPOTrainer``; the reference is the policy with its adapter disabled).

    >>> DPOTrainConfig(beta=0.2).beta
    0.2
    >>> DPOTrainConfig(beta=0)
    Traceback (most recent call last):
    ...
    ValueError: beta=0 is not allowed; give a number > 0
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import BaseTrainConfig


@dataclass(frozen=True)
class DPOTrainConfig(BaseTrainConfig):
    """Direct preference optimisation from chosen/rejected pairs."""

    beta: float = field(default=0.1, metadata={"help": "Strength of the implicit KL leash to the reference (higher: stay closer)."})
    eval_fraction: float = field(default=0.0, metadata={"help": "Share of prompts held out for the reported margin; 0: none."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate."})

    kind = "dpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta={self.beta!r} is not allowed; give a number > 0")
        if not 0.0 <= self.eval_fraction <= 0.9:
            raise ValueError(f"eval_fraction={self.eval_fraction!r} is not allowed; give a number in [0, 0.9]")
