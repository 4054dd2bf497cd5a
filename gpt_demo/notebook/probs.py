"""``%%gpt --probs`` and ``%gpt_probs``: an answer with every token coloured by its probability.

    %%gpt --probs --temperature 0
    What is the capital of France?
    %gpt_probs                          # the last answer, read back through the model
    %gpt_probs --out tokens             # tokens[3].alternatives: [(token, prob), ...]

Green tokens were likely, red ones a surprise; hovering (or tapping) a token shows the
alternatives the model weighed there (``inspect.token_probs.TOP`` of them). The numbers are the
engine's logprobs at temperature 1 (``inspect.token_probs``); the HTML is self-contained, with no
script and no CDN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inspect.token_probs import TokenView, answer_tokens, summary, tokens_html, tokens_text

# JupyterLab clips an output area's overflow, which would cut a hover table off at the cell's bottom edge;
# only outputs holding these tokens let it hang over the next cell.
OVERFLOW = ("<style>.jp-OutputArea:has(.gd-nb-probs),.jp-OutputArea-child:has(.gd-nb-probs),"
            ".jp-OutputArea-output:has(.gd-nb-probs){overflow:visible}</style>")
_ids = iter(range(1, 1 << 62))


@dataclass
class TokenProbs:
    """The display object: ``tokens`` (``TokenView`` rows) as coloured HTML and as a plain-text table."""

    tokens: list[TokenView]
    caption: str = ""
    dom_id: str = field(default_factory=lambda: f"gd-probs-{next(_ids)}")

    @classmethod
    def from_logprobs(cls, logprobs, caption: str = "") -> "TokenProbs":
        return cls(answer_tokens(logprobs), caption)

    def summary(self) -> dict:
        return summary(self.tokens)

    def _repr_mimebundle_(self, include=None, exclude=None):
        import html

        head = f"<div style='font:12px sans-serif;color:#555'>{html.escape(self.caption)}</div>" if self.caption else ""
        plain = (self.caption + "\n" if self.caption else "") + tokens_text(self.tokens)
        body = head + tokens_html(self.tokens, dom_id=self.dom_id)
        return {"text/plain": plain, "text/html": f"{OVERFLOW}<div class='gd-nb-probs'>{body}</div>"}


def last_answer(messages: list[dict]) -> tuple[list[dict], str]:
    """(the messages before it, the last assistant answer); ValueError when there is none yet."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return messages[:i], messages[i]["content"]
    raise ValueError("there is no answer yet; ask something with %%gpt first (or use %%gpt --probs)")
