"""Turning text and numbers into what the browser shows, safely.

    >>> escape_markdown_html('Hi <script>alert(1)</script> and `<b>` in code')
    'Hi &lt;script>alert(1)&lt;/script> and `<b>` in code'
"""

from __future__ import annotations

import re
from functools import lru_cache

# A code span: a backtick run not escaped or glued to another backtick, closed by a run of
# the same length (CommonMark 6.1). Its content renders literally, so it is left as is.
_CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def _escape_prose(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _escape_inline(text: str) -> str:
    out, last = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_escape_prose(text[last : m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_escape_prose(text[last:]))
    return "".join(out)


@lru_cache(maxsize=1024)  # a streamed chat re-renders every earlier message on each update
def escape_markdown_html(text: str) -> str:
    """Keep Markdown but make raw HTML show as text: ``<`` and ``&`` are escaped outside code.

    Code blocks (fenced or indented, found by a CommonMark parser, so a fence must open a
    line) and code spans render literally already and are left alone; everywhere else no
    tag can open. ``>`` stays free for Markdown quotes.
    """
    from markdown_it import MarkdownIt

    text = text or ""
    lines = text.splitlines(keepends=True)
    code = set()
    for token in MarkdownIt("commonmark").parse(text):
        if token.type in ("fence", "code_block") and token.map:
            code.update(range(*token.map))
    out, prose = [], []
    for i, line in enumerate(lines):
        if i in code:
            out.append(_escape_inline("".join(prose)))
            prose = []
            out.append(line)
        else:
            prose.append(line)
    out.append(_escape_inline("".join(prose)))
    return "".join(out)


def chat_messages(conversation) -> list[dict]:
    """A ``Conversation``'s turns as Chatbot messages, HTML escaped (the system prompt is not shown)."""
    return [{"role": t["role"], "content": escape_markdown_html(t["content"])} for t in conversation.turns]


def error_text(exc: Exception) -> str:
    """One line for the user: the ValueError's own message, or the exception's type and message."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
