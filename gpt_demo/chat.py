"""A conversation: system prompt, messages, the model's chat template, context-window truncation.

    >>> from gpt_demo.chat import Conversation
    >>> conv = Conversation(system="You are terse.")
    >>> conv.add("user", "Hi!").messages
    [{'role': 'system', 'content': 'You are terse.'}, {'role': 'user', 'content': 'Hi!'}]

``prompt_ids(tokenizer, budget)`` renders the messages with the chat template and,
when they don't fit in ``budget`` tokens, drops the oldest turns (never the system
prompt or the newest message); a newest message that alone is too long keeps its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")


@dataclass
class RenderedPrompt:
    """Token ids ready for generation, and what truncation had to do to fit them."""

    ids: list[int]
    dropped_messages: int = 0
    clipped_tokens: int = 0  # tokens cut from the start of the newest message

    @property
    def truncated(self) -> bool:
        return bool(self.dropped_messages or self.clipped_tokens)

    @property
    def note(self) -> str:
        """A sentence a front-end can show, or '' when nothing was cut."""
        parts = []
        if self.dropped_messages:
            parts.append(f"dropped the {self.dropped_messages} oldest message(s)")
        if self.clipped_tokens:
            parts.append(f"cut {self.clipped_tokens} tokens from the start of the last message")
        return ("To fit the context window, " + " and ".join(parts) + ".") if parts else ""


@dataclass
class Conversation:
    """Messages in OpenAI's format, with an optional system prompt kept apart."""

    system: str | None = None
    turns: list[dict] = field(default_factory=list)

    @classmethod
    def from_messages(cls, messages: list[dict]) -> "Conversation":
        """Build from OpenAI-style ``[{"role": ..., "content": ...}]``; a leading system message becomes ``system``."""
        conv = cls()
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ValueError(f"messages[{i}]={message!r} is not allowed; each needs 'role' and 'content'")
            if message["role"] == "system" and i == 0:
                conv.system = message["content"]
            else:
                conv.add(message["role"], message["content"])
        return conv

    def add(self, role: str, content: str) -> "Conversation":
        if role not in ("user", "assistant"):
            raise ValueError(f"role={role!r} is not allowed; use 'user' or 'assistant' (system goes in system=)")
        if not isinstance(content, str):
            raise ValueError(f"content={content!r} is not allowed; it must be a string")
        self.turns.append({"role": role, "content": content})
        return self

    @property
    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(t) for t in self.turns]

    def undo(self) -> dict | None:
        """Remove and return the last message (None when empty)."""
        return self.turns.pop() if self.turns else None

    def clear(self) -> None:
        self.turns.clear()

    def render(self, tokenizer, turns: list[dict] | None = None, prefill: str = "") -> list[int]:
        """Token ids of the chat template for ``turns`` (default: all), ending where the assistant speaks."""
        turns = self.turns if turns is None else turns
        head = [{"role": "system", "content": self.system}] if self.system else []
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(head + turns, add_generation_prompt=True, tokenize=False)
        else:  # base models have no template: a plain transcript
            text = "".join(f"{m['role']}: {m['content']}\n" for m in head + turns) + "assistant:"
        return tokenizer(text + prefill, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, tokenizer, budget: int, prefill: str = "", *, limits=None) -> RenderedPrompt:
        """Render, dropping the oldest turns until the prompt fits in ``budget`` tokens.

        ``limits`` (a ``gpt_demo.limits.Limits``) bounds the messages and their characters first,
        before any tokenizing. The kept turns are the longest suffix that fits, found with a
        constant number of renders of the whole history and O(log n) renders of suffixes no
        longer than about twice what is kept (gallop back from the newest, then bisect), so a
        long history costs linear tokenizer work, not one render per dropped turn.
        """
        if not self.turns:
            raise ValueError("the conversation has no messages; add a user message first")
        if limits is not None:
            limits.check_messages("messages", self.messages)
        turns, n = self.turns, len(self.turns)
        ids = self.render(tokenizer, turns, prefill)
        if len(ids) <= budget:
            return RenderedPrompt(ids, 0)
        # Keeping more turns never makes the prompt shorter, so the turns that fit are a suffix.
        fit, fit_ids = 0, None  # most newest turns known to fit (0: not even the newest alone)
        miss, miss_ids = n, ids  # fewest newest turns known not to fit
        keep = 1
        while keep < miss:  # gallop: 1, 2, 4, ... newest turns
            probe = self.render(tokenizer, turns[n - keep :], prefill)
            if len(probe) > budget:
                miss, miss_ids = keep, probe
                break
            fit, fit_ids = keep, probe
            keep *= 2
        while miss - fit > 1:  # bisect between what fits and what does not
            keep = (fit + miss) // 2
            probe = self.render(tokenizer, turns[n - keep :], prefill)
            if len(probe) > budget:
                miss, miss_ids = keep, probe
            else:
                fit, fit_ids = keep, probe
        if fit:
            return RenderedPrompt(fit_ids, n - fit)
        # Only the newest message is left and it is still too long: keep its end.
        dropped = n - 1
        last_turns, ids = turns[-1:], miss_ids  # miss == 1 here
        content_ids = tokenizer(last_turns[-1]["content"], add_special_tokens=False)["input_ids"]
        overhead = len(ids) - len(content_ids)
        keep = budget - overhead
        if keep < 1:
            raise ValueError(f"the system prompt alone needs {overhead} tokens; the budget is {budget}")
        clipped = len(content_ids) - keep
        while True:
            last = dict(last_turns[-1], content=tokenizer.decode(content_ids[clipped:]))
            ids = self.render(tokenizer, [last], prefill)
            if len(ids) <= budget:
                return RenderedPrompt(ids, dropped, clipped)
            clipped += len(ids) - budget  # re-tokenizing at the cut can add a token or two
