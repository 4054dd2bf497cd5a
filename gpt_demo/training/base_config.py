"""Settings every training workflow shares, and the config <-> argparse bridge (no torch here).

    >>> from gpt_demo.training.sft_config import SFTTrainConfig
    >>> SFTTrainConfig(out="demo", max_steps=5).max_steps
    5
    >>> SFTTrainConfig(lora_r=0)
    Traceback (most recent call last):
    ...
    ValueError: lora_r=0 is not allowed; give an integer >= 1
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..config import DEVICE_CHOICES, QUANTIZE_CHOICES, check_choice
from ..models.adapters import NAME_RE


def check_name(field_name: str, value: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(
            f"{field_name}={value!r} is not allowed; use letters, digits, '.', '_' or '-' (1-100 characters)"
        )
    return value


@dataclass(frozen=True)
class BaseTrainConfig:
    """What every workflow needs: the base model, LoRA, the optimiser, checkpoints."""

    out: str = field(default="", metadata={"help": "Adapter name: saved under $GPT_DEMO_HOME/adapters/NAME."})
    model: str = field(default="", metadata={"help": "Base model (default: $GPT_DEMO_MODEL or smollm2-135m-instruct)."})
    init_adapter: str = field(
        default="",
        metadata={"help": "Merge this adapter (e.g. your SFT one) into the base first; it is then also the reference."},
    )
    quantize: str = field(default="none", metadata={"help": "none | 8bit | 4bit (4bit with LoRA is QLoRA; needs CUDA for speed)."})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scale numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: str = field(
        default="all-linear",
        metadata={"help": "Comma-separated module names to adapt, or all-linear (every linear layer but the output)."},
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the data (ignored when max_steps > 0)."})
    max_steps: int = field(default=0, metadata={"help": "Optimiser steps; 0: run for epochs."})
    batch_size: int = field(default=4, metadata={"help": "Examples per device step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    max_length: int = field(
        default=512,
        metadata={"help": "Longest tokenised example (prompt + answer); longer rows are truncated (the prompt keeps "
                          "its end, the answer its start) unless --drop-long."},
    )
    drop_long: bool = field(
        default=False, metadata={"help": "Skip rows longer than --max-length instead of truncating them."}
    )
    max_examples: int = field(default=0, metadata={"help": "Use only the first N valid examples; 0: all."})
    save_steps: int = field(
        default=0, metadata={"help": "Checkpoint every N steps (for --resume); 0: auto, every max(1, steps // 4)."}
    )
    resume: bool = field(default=True, metadata={"help": "Resume from the last checkpoint of an interrupted run with the same --out."})
    seed: int = field(default=0, metadata={"help": "Seed for data order, LoRA init and sampling."})
    progress: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})

    kind = "base"  # overridden: sft | reward | ppo | dpo

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", self.out or self.kind)
        check_name("out", self.out)
        check_choice("quantize", self.quantize, QUANTIZE_CHOICES)
        check_choice("device", self.device, DEVICE_CHOICES)
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum"):
            _at_least(name, getattr(self, name), 1)
        for name in ("max_steps", "max_examples", "save_steps"):
            _at_least(name, getattr(self, name), 0)
        _at_least("max_length", self.max_length, 16)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout={self.lora_dropout!r} is not allowed; give a number in [0, 1)")
        for name in ("learning_rate", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; give a number > 0")
        if not self.target_modules.strip():
            raise ValueError("target_modules='' is not allowed; give module names or all-linear")

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def total_steps(self, n_examples: int) -> int:
        """Optimiser steps of the run: ``max_steps``, or what ``epochs`` over ``n_examples`` come to (as in transformers)."""
        if self.max_steps > 0:
            return self.max_steps
        per_epoch = max(1, math.ceil(n_examples / self.batch_size) // self.grad_accum)
        return max(1, math.ceil(self.epochs * per_epoch))

    def checkpoint_every(self, total_steps: int) -> int:
        """Steps between checkpoints: ``save_steps``, or with 0 (auto) ``max(1, total_steps // 4)``."""
        return self.save_steps or max(1, int(total_steps) // 4)

    @property
    def targets(self):
        """peft's ``target_modules``: the string ``all-linear`` or a list of names."""
        if self.target_modules.strip() == "all-linear":
            return "all-linear"
        return [name.strip() for name in self.target_modules.split(",") if name.strip()]


def _at_least(name: str, value, low) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r} is not allowed; give an integer >= {low}")


def check_fraction(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low < value < high:
        raise ValueError(f"{name}={value!r} is not allowed; give a number in ({low:g}, {high:g})")


# -- argparse bridge -----------------------------------------------------------------
_SKIP = {"out"}  # positional / set by the command


def add_config_args(p: argparse.ArgumentParser, cls, skip: set[str] = frozenset()) -> None:
    """One --flag per field of ``cls`` (a BaseTrainConfig subclass), with its help and default."""
    for f in fields(cls):
        if f.name in _SKIP or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default if default != '' else 'none'})"
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "quantize":
            p.add_argument(flag, dest=f.name, choices=QUANTIZE_CHOICES, help=help_text)
        elif f.name == "device":
            p.add_argument(flag, dest=f.name, choices=DEVICE_CHOICES, help=help_text)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            p.add_argument(flag, dest=f.name, type=kind, help=help_text)


def config_values(cls, args: argparse.Namespace) -> dict:
    """The flags the user gave, as keyword arguments for ``cls``."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
