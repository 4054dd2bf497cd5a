"""Plain records that generation returns (OpenAI's shapes, as dataclasses).

    >>> c = Completion(choices=[Choice(index=0, text="Paris.", token_ids=[1], finish_reason="stop")])
    >>> c.text
    'Paris.'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TokenLogprob:
    """One generated token: its text, id and log-probability under the model (temperature 1)."""

    token: str
    token_id: int
    logprob: float
    top_logprobs: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Choice:
    """One answer. ``total_logprob`` sums the model's log-probabilities of ``token_ids``; ``mean_logprob`` averages them."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end token or stop sequence) | "length" (max_tokens or context)
    total_logprob: float = 0.0
    logprobs: list[TokenLogprob] | None = None
    reward: float | None = None  # the reward model's score when best_of ranked by reward

    @property
    def mean_logprob(self) -> float:
        """Log-probability per generated token (the end token counts): what ``best_of`` ranks by."""
        return self.total_logprob / max(1, len(self.token_ids))


@dataclass
class Completion:
    """What ``Engine.chat`` and ``Engine.complete`` return."""

    choices: list[Choice]
    prompt_tokens: int = 0
    model: str = ""
    truncated_messages: int = 0  # how many old messages were dropped to fit the context window
    seed: int | None = None
    reported_completion_tokens: int | None = None  # a remote server's usage (its token ids are not returned)

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def completion_tokens(self) -> int:
        if self.reported_completion_tokens is not None:
            return self.reported_completion_tokens
        return sum(len(c.token_ids) for c in self.choices)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "choices": [asdict(c) for c in self.choices],
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "truncated_messages": self.truncated_messages,
            "seed": self.seed,
        }


@dataclass
class TokenProb:
    """A row of the next-token table."""

    token: str
    token_id: int
    prob: float
    logprob: float
