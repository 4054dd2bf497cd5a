"""Turning text and numbers into what the browser shows, safely.

    >>> escape_markdown_html('Hi <script>alert(1)</script> and `<b>` in code')
    'Hi &lt;script>alert(1)&lt;/script> and `<b>` in code'
"""

from __future__ import annotations

import re

# Fenced blocks and inline code spans render their content literally already; escaping
# inside them would show "&lt;" to the reader.
_CODE = re.compile(r"(```.*?(?:```|$)|~~~.*?(?:~~~|$)|`[^`\n]*`)", re.S)


def escape_markdown_html(text: str) -> str:
    """Keep Markdown but make raw HTML show as text: ``<`` and ``&`` outside code are escaped.

    Without a literal ``<`` no tag can open, and ``>`` stays free for Markdown quotes.
    """
    parts = _CODE.split(text or "")
    return "".join(part if i % 2 else part.replace("&", "&amp;").replace("<", "&lt;")
                   for i, part in enumerate(parts))


def chat_messages(conversation) -> list[dict]:
    """A ``Conversation``'s turns as Chatbot messages, HTML escaped (the system prompt is not shown)."""
    return [{"role": t["role"], "content": escape_markdown_html(t["content"])} for t in conversation.turns]


def error_text(exc: Exception) -> str:
    """One line for the user: the ValueError's own message, or the exception's type and message."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
