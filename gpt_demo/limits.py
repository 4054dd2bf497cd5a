"""Bounds on the work one request may ask for, applied by the core so every front-end gets them.

    >>> from gpt_demo.limits import Limits
    >>> lim = Limits(max_input_chars=10)
    >>> lim.check_text("text", "short")
    'short'
    >>> lim.check_text("text", "x" * 11)
    Traceback (most recent call last):
    ...
    ValueError: text has 11 characters; the limit is 10 (GPT_DEMO_MAX_INPUT_CHARS)
    >>> lim.clip_tokens("text", list(range(8)), 5)
    ([3, 4, 5, 6, 7], 3)

The defaults suit one small model on a laptop; raise them with the environment variables
named in each field's help (``GPT_DEMO_MAX_INPUT_CHARS=100000 gpt-demo serve``). A limit
is checked before any model work starts, so a refused request costs nothing and the
message names the field, the value and the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping, Sequence

INSPECT_POLICIES = ("clip", "refuse")


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (characters, texts, messages, tokens) and the shared concurrency budget."""

    max_input_chars: int = field(
        default=32_000,
        metadata={"help": "Characters in one text: a prompt, a message, an Explain text, an embedding line "
                          "(GPT_DEMO_MAX_INPUT_CHARS).", "env": "GPT_DEMO_MAX_INPUT_CHARS", "range": (1, 10_000_000)},
    )
    max_texts: int = field(
        default=256,
        metadata={"help": "Texts in one call: embedding lines, moderation inputs, a search corpus "
                          "(GPT_DEMO_MAX_TEXTS).", "env": "GPT_DEMO_MAX_TEXTS", "range": (1, 100_000)},
    )
    max_messages: int = field(
        default=1_000,
        metadata={"help": "Messages in one conversation; older ones are dropped to fit the window anyway "
                          "(GPT_DEMO_MAX_MESSAGES).", "env": "GPT_DEMO_MAX_MESSAGES", "range": (1, 100_000)},
    )
    max_total_chars: int = field(
        default=256_000,
        metadata={"help": "Characters in one call summed over its texts or messages (GPT_DEMO_MAX_TOTAL_CHARS).",
                  "env": "GPT_DEMO_MAX_TOTAL_CHARS", "range": (1, 100_000_000)},
    )
    inspect_tokens: str = field(
        default="clip",
        metadata={"help": "Look-inside text longer than the context window: clip (keep its end, say so) or "
                          "refuse (GPT_DEMO_INSPECT_TOKENS).", "env": "GPT_DEMO_INSPECT_TOKENS"},
    )
    concurrency: int = field(
        default=8,
        metadata={"help": "Sequences the scheduler decodes together in one batch, shared by the web app, the API "
                          "and the notebook; also the generation requests the web app and the API run at once "
                          "(GPT_DEMO_CONCURRENCY).",
                  "env": "GPT_DEMO_CONCURRENCY", "range": (1, 64)},
    )
    jobs: int = field(
        default=2,
        metadata={"help": "Other model jobs run at once: Explain (next token, attention), embeddings, moderation, "
                          "Compare and training; they do not batch, so more than the cores only slows each "
                          "(GPT_DEMO_JOBS).", "env": "GPT_DEMO_JOBS", "range": (1, 64)},
    )
    max_queue: int = field(
        default=64,
        metadata={"help": "Generation requests that may wait for a place in the batch; the next is refused as busy "
                          "(HTTP 503) (GPT_DEMO_MAX_QUEUE).", "env": "GPT_DEMO_MAX_QUEUE", "range": (1, 100_000)},
    )
    max_batch_tokens: int = field(
        default=65536,
        metadata={"help": "KV-cache positions the running batch may hold: the cache keeps room for its longest "
                          "sequence (prompt + max_tokens) in each of its GPT_DEMO_CONCURRENCY rows, so this caps "
                          "rows x longest (about 46 KB each for the default model: 3 GB at 65536); a request "
                          "alone may exceed it (GPT_DEMO_MAX_BATCH_TOKENS).",
                  "env": "GPT_DEMO_MAX_BATCH_TOKENS", "range": (1, 10_000_000)},
    )
    prefill_chunk: int = field(
        default=128,
        metadata={"help": "Prompt tokens prefilled per scheduler step, so running streams keep going while a long "
                          "prompt is read (GPT_DEMO_PREFILL_CHUNK).", "env": "GPT_DEMO_PREFILL_CHUNK",
                  "range": (1, 100_000)},
    )
    max_engines: int = field(
        default=3,
        metadata={"help": "Extra models (adapters) kept loaded besides the base; each costs about the base "
                          "model's memory, shown in the header (GPT_DEMO_MAX_ENGINES).",
                  "env": "GPT_DEMO_MAX_ENGINES", "range": (0, 16)},
    )
    max_train_steps: int = field(
        default=500,
        metadata={"help": "Optimizer steps one training job started from the web app may ask for "
                          "(GPT_DEMO_MAX_TRAIN_STEPS).", "env": "GPT_DEMO_MAX_TRAIN_STEPS", "range": (1, 1_000_000)},
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if "range" in f.metadata:
                lo, hi = f.metadata["range"]
                if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                    raise ValueError(f"{f.name}={value!r} is out of range; allowed: {lo} <= {f.name} <= {hi}")
        if self.inspect_tokens not in INSPECT_POLICIES:
            raise ValueError(f"inspect_tokens={self.inspect_tokens!r} is not allowed; choose one of "
                             f"{', '.join(INSPECT_POLICIES)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Limits":
        """Read every ``GPT_DEMO_MAX_*`` variable that is set; a bad one is named with its value.

            >>> Limits.from_env({"GPT_DEMO_MAX_TEXTS": "0"})
            Traceback (most recent call last):
            ...
            ValueError: GPT_DEMO_MAX_TEXTS='0' is out of range; allowed: 1 <= GPT_DEMO_MAX_TEXTS <= 100000
        """
        values: dict = {}
        for f in fields(cls):
            key = f.metadata["env"]
            raw = env.get(key)
            if raw is None or not raw.strip():
                continue
            raw = raw.strip()
            if "range" in f.metadata:
                lo, hi = f.metadata["range"]
                try:
                    value = int(raw.replace("_", ""))
                except ValueError:
                    raise ValueError(f"{key}={raw!r} is not allowed; give a whole number from {lo} to {hi}") from None
                if not lo <= value <= hi:
                    raise ValueError(f"{key}={raw!r} is out of range; allowed: {lo} <= {key} <= {hi}")
                values[f.name] = value
            elif f.name == "inspect_tokens":
                if raw.lower() not in INSPECT_POLICIES:
                    raise ValueError(f"{key}={raw!r} is not allowed; choose one of {', '.join(INSPECT_POLICIES)}")
                values[f.name] = raw.lower()
            else:
                values[f.name] = raw
        return cls(**values)

    @staticmethod
    def env_name(name: str) -> str:
        return {f.name: f.metadata["env"] for f in fields(Limits)}[name]

    # -- checks used by the core --------------------------------------------------------
    def check_text(self, name: str, text: str) -> str:
        """``text`` itself when it has at most ``max_input_chars`` characters, else ValueError naming ``name``."""
        if isinstance(text, str) and len(text) > self.max_input_chars:
            raise ValueError(f"{name} has {len(text):,} characters; the limit is {self.max_input_chars:,} "
                             "(GPT_DEMO_MAX_INPUT_CHARS)")
        return text

    def check_texts(self, name: str, texts: Sequence[str]) -> Sequence[str]:
        """Bound the number of texts, each text's characters and their sum."""
        if len(texts) > self.max_texts:
            raise ValueError(f"{name} has {len(texts)} texts; the limit is {self.max_texts} (GPT_DEMO_MAX_TEXTS)")
        total = 0
        for i, text in enumerate(texts):
            self.check_text(f"{name}[{i}]", text)
            total += len(text) if isinstance(text, str) else 0
        if total > self.max_total_chars:
            raise ValueError(f"{name} has {total:,} characters in all; the limit is {self.max_total_chars:,} "
                             "(GPT_DEMO_MAX_TOTAL_CHARS)")
        return texts

    def check_messages(self, name: str, messages: Sequence[dict]) -> Sequence[dict]:
        """Bound a conversation: message count, characters per message and in all."""
        if len(messages) > self.max_messages:
            raise ValueError(f"{name} has {len(messages)} messages; the limit is {self.max_messages} "
                             "(GPT_DEMO_MAX_MESSAGES)")
        total = 0
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                self.check_text(f"{name}[{i}].content", content)
                total += len(content)
        if total > self.max_total_chars:
            raise ValueError(f"{name} has {total:,} characters in all; the limit is {self.max_total_chars:,} "
                             "(GPT_DEMO_MAX_TOTAL_CHARS)")
        return messages

    def clip_tokens(self, name: str, ids: list[int], window: int) -> tuple[list[int], int]:
        """(ids that fit in ``window`` tokens, how many were cut from the start); ``refuse`` raises instead."""
        if len(ids) <= window:
            return ids, 0
        if self.inspect_tokens == "refuse":
            raise ValueError(f"{name} has {len(ids)} tokens; the limit is the {window}-token context window "
                             "(GPT_DEMO_INSPECT_TOKENS=clip keeps its end instead)")
        cut = len(ids) - window
        return ids[cut:], cut


DEFAULT_LIMITS = Limits()


def current_limits() -> Limits:
    """The limits from the environment (``GPT_DEMO_MAX_*``), for callers that were given none."""
    from .config import Settings

    return Settings.from_env().limits
