"""Sampling parameters with OpenAI's names, defaults and ranges.

    >>> from gpt_demo.generation import GenerationParams
    >>> GenerationParams(temperature=0.7, stop="\\n").stop
    ('\\n',)
    >>> GenerationParams(temperature=3)
    Traceback (most recent call last):
    ...
    ValueError: temperature=3 is out of range; allowed: 0 <= temperature <= 2
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

MAX_STOP_SEQUENCES = 4
MAX_BEST_OF = 20
MAX_TOP_LOGPROBS = 20
# What an interactive chat starts with (web Chat, %%gpt, %gpt_chat, ``gpt-demo chat``). A 135M model
# rambles, and drifts into other languages, at OpenAI's default temperature 1; SmolLM2's card suggests
# 0.2 and top_p 0.9. The API keeps OpenAI's defaults: a program that sends nothing gets temperature 1.
CHAT_DEFAULTS = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 256}


def _number(name: str, value: Any, *, integer: bool = False) -> float:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (not integer and math.isnan(value)):
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name}={value!r} is not allowed; it must be {what}")
    return value


def _in_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False):
    _number(name, value, integer=integer)
    low_ok = value > lo if lo_open else value >= lo
    if not (low_ok and value <= hi):
        low = f"{lo} < {name}" if lo_open else f"{lo} <= {name}"
        raise ValueError(f"{name}={value!r} is out of range; allowed: {low} <= {hi}")


@dataclass(frozen=True)
class GenerationParams:
    """Every playground parameter. Out-of-range values raise ``ValueError`` at construction."""

    temperature: float = field(
        default=1.0, metadata={"help": "0-2. Higher is more random; 0 always takes the most likely token."}
    )
    top_p: float = field(
        default=1.0, metadata={"help": "(0-1]. Sample only from the smallest set of tokens whose mass reaches top_p."}
    )
    max_tokens: int = field(default=256, metadata={"help": ">= 1. The most new tokens to generate."})
    stop: tuple[str, ...] = field(
        default=(), metadata={"help": "Up to 4 strings; generation ends before the first one, which is not shown."}
    )
    frequency_penalty: float = field(
        default=0.0, metadata={"help": "-2 to 2. Subtracts count(t) * value from token t's logit."}
    )
    presence_penalty: float = field(
        default=0.0, metadata={"help": "-2 to 2. Subtracts value from the logit of every token already generated."}
    )
    n: int = field(default=1, metadata={"help": "How many answers to return."})
    best_of: int | None = field(
        default=None,
        metadata={"help": f"n to {MAX_BEST_OF}. Candidates generated; the n with the highest log-probability per token win (as OpenAI ranks)."},
    )
    seed: int | None = field(default=None, metadata={"help": ">= 0. The same seed and parameters repeat the answer."})
    logprobs: bool = field(default=False, metadata={"help": "Return each generated token's log-probability."})
    top_logprobs: int = field(
        default=0, metadata={"help": f"0-{MAX_TOP_LOGPROBS}. Also return the most likely alternatives per token."}
    )
    inject_start_text: str = field(
        default="", metadata={"help": "Text appended after the prompt; the answer starts from it (e.g. '\\nAI:')."}
    )
    inject_restart_text: str = field(
        default="", metadata={"help": "Text appended after the answer, ready for the next turn (e.g. '\\nHuman:')."}
    )

    def __post_init__(self) -> None:
        stop = self.stop
        if stop is None:
            stop = ()
        elif isinstance(stop, str):
            stop = (stop,)
        stop = tuple(stop)
        if len(stop) > MAX_STOP_SEQUENCES or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(
                f"stop={list(stop)!r} is not allowed; give up to {MAX_STOP_SEQUENCES} non-empty strings"
            )
        object.__setattr__(self, "stop", stop)
        _in_range("temperature", self.temperature, 0, 2)
        _in_range("top_p", self.top_p, 0, 1, lo_open=True)
        _in_range("max_tokens", self.max_tokens, 1, 1_000_000, integer=True)
        _in_range("frequency_penalty", self.frequency_penalty, -2, 2)
        _in_range("presence_penalty", self.presence_penalty, -2, 2)
        _in_range("n", self.n, 1, MAX_BEST_OF, integer=True)
        if self.best_of is not None:
            _in_range("best_of", self.best_of, self.n, MAX_BEST_OF, integer=True)
        if self.seed is not None:
            _in_range("seed", self.seed, 0, 2**63 - 1, integer=True)
        if not isinstance(self.logprobs, bool):
            raise ValueError(f"logprobs={self.logprobs!r} is not allowed; it must be true or false")
        _in_range("top_logprobs", self.top_logprobs, 0, MAX_TOP_LOGPROBS, integer=True)
        if self.top_logprobs and not self.logprobs:
            raise ValueError(f"top_logprobs={self.top_logprobs} is not allowed unless logprobs=True")
        for name in ("inject_start_text", "inject_restart_text"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; it must be a string")

    @property
    def candidates(self) -> int:
        """How many sequences are sampled: ``best_of`` when given, else ``n``."""
        return self.best_of or self.n

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes) -> "GenerationParams":
        """A copy with ``changes`` applied (validated); ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_dict(cls, values: dict) -> "GenerationParams":
        """Build from a dict such as a JSON request; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown generation parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d
