"""Turning text and numbers into what the browser shows, safely.

    >>> escape_markdown_html('Hi <script>alert(1)</script> and `<b>` in code')
    'Hi &lt;script>alert(1)&lt;/script> and `<\\u2060b>` in code'

The escaping itself is core (``gpt_demo.text_safety``, shared with the notebook); its
defaults match gradio's Chatbot, which renders Markdown in the browser with marked, pulls
``$$ ... $$`` out first as LaTeX, and sanitizes the HTML last.
"""

from __future__ import annotations

from ..text_safety import GRADIO_LATEX, escape_markdown_html

__all__ = ["GRADIO_LATEX", "chat_messages", "error_text", "escape_markdown_html"]


def chat_messages(conversation) -> list[dict]:
    """A ``Conversation``'s turns as Chatbot messages, HTML escaped (the system prompt is not shown)."""
    return [{"role": t["role"], "content": escape_markdown_html(t["content"], latex_delimiters=GRADIO_LATEX)}
            for t in conversation.turns]


def error_text(exc: Exception) -> str:
    """One line for the user: the ValueError's own message, or the exception's type and message."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
