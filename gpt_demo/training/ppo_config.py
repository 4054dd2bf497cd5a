"""PPO settings: reward R = RM(x, y) - beta * sum_t log(pi(y_t) / pi_ref(y_t)), a value head, GAE, clipping.

    >>> PPOTrainConfig(beta=0.05, steps=10).steps
    10
    >>> PPOTrainConfig(clip_range=0)
    Traceback (most recent call last):
    ...
    ValueError: clip_range=0 is not allowed; give a number in (0, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import BaseTrainConfig, check_fraction


@dataclass(frozen=True)
class PPOTrainConfig(BaseTrainConfig):
    """Our own small PPO (TRL 1.16 has none): rollouts, per-token KL to the reference, clipped surrogate, GAE."""

    reward: str = field(default="", metadata={"help": "Reward-model adapter name (from `gpt-demo reward`)."})
    steps: int = field(default=20, metadata={"help": "PPO iterations (each: one batch of rollouts, then updates)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts (rollouts) per iteration."})
    mini_batch_size: int = field(default=4, metadata={"help": "Rollouts per gradient step."})
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each batch of rollouts."})
    beta: float = field(default=0.05, metadata={"help": "Per-token KL penalty to the reference (initial value if --target-kl)."})
    target_kl: float = field(
        default=0.0,
        metadata={"help": "Adapt beta so the KL to the reference (nats per answer) tracks this; 0: fixed beta."},
    )
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon."})
    clip_range_value: float = field(default=0.2, metadata={"help": "Value prediction clip."})
    value_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    gamma: float = field(default=1.0, metadata={"help": "Discount."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    max_new_tokens: int = field(default=32, metadata={"help": "Answer length per rollout."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (LoRA and value head)."})
    save_steps: int = field(
        default=0, metadata={"help": "Checkpoint every N iterations (for --resume); 0: auto, every max(1, steps // 4)."}
    )
    eval_samples: int = field(
        default=16,
        metadata={"help": "Answers sampled before and after training (same seed) to report the reward gain; 0: skip."},
    )

    kind = "ppo"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "mini_batch_size", "ppo_epochs", "max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; give an integer >= 1")
        if self.mini_batch_size > self.batch_size:
            raise ValueError(
                f"mini_batch_size={self.mini_batch_size} is not allowed; give at most batch_size={self.batch_size}"
            )
        if not isinstance(self.eval_samples, int) or self.eval_samples < 0:
            raise ValueError(f"eval_samples={self.eval_samples!r} is not allowed; give an integer >= 0")
        for name in ("beta", "target_kl", "value_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; give a number >= 0")
        check_fraction("clip_range", self.clip_range)
        if not self.clip_range_value > 0:
            raise ValueError(f"clip_range_value={self.clip_range_value!r} is not allowed; give a number > 0")
        for name in ("gamma", "lam"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; give a number in (0, 1]")
        if not 0.0 < self.temperature <= 2.0:
            raise ValueError(f"temperature={self.temperature!r} is not allowed; give a number in (0, 2]")
