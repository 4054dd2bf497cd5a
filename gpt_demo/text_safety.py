"""Model and user text made safe to show as Markdown, in the browser and in a notebook.

    >>> escape_markdown_html('Hi <script>alert(1)</script> & `<b>`')
    'Hi &lt;script>alert(1)&lt;/script> &amp; `<\\u2060b>`'
    >>> escape_markdown_html("`a\\n\\n<img src=x onerror=alert(1)>\\n\\n`")   # a blank line ends a code span
    '`a\\n\\n&lt;img src=x onerror=alert(1)>\\n\\n`'
    >>> print(escape_markdown_html("```html\\n<b>bold</b>\\n```"))             # code blocks stay literal
    ````html
    <b>bold</b>
    ````

The text stays Markdown; what is code is decided by markdown-it's CommonMark tokens (with
GFM tables, as the browser's renderer has them), never by regexes. Then:

* outside code, ``<`` and ``&`` are escaped, so no tag, comment, autolink or entity forms;
  ``![`` gets a backslash, so no image loads anything; a ``javascript:``, ``vbscript:``,
  ``data:`` or ``file:`` scheme gets an invisible U+2060 before its colon, so no link can
  use it;
* a top-level fenced code block stays byte for byte, with its fence rewritten to a run of
  backticks longer than any inside it (at least 4, so gradio's raw-HTML mermaid block never
  matches) and closed, so every CommonMark-ish parser agrees where it ends;
* all other code (spans, indented blocks, fences inside lists or quotes, where parsers
  disagree) keeps its look, but a ``<`` that could open a tag and the ``![`` of an image get
  an invisible U+2060, so even a renderer that reads it as prose finds no HTML in it.

``latex_delimiters`` are the math regions the renderer pulls out before Markdown and escapes
itself (gradio's Chatbot: ``$$ ... $$``); they are located the same way, parsed around, and
left as written. ``escape_dollars`` instead backslashes every ``$`` outside code, for a
renderer that finds math after protecting code (JupyterLab): no math region can then start
in prose and swallow a fence. Only ``markdown_it`` is imported, lazily.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

WJ = "\u2060"  # WORD JOINER: invisible, and after "<" no HTML or Markdown parser sees a tag
GRADIO_LATEX = (("$$", "$$"),)  # gradio.Chatbot's default latex_delimiters
_PROSE, _FRAGILE, _ROBUST = 0, 1, 2
_TAG_START = re.compile(r"[A-Za-z/!?]")
# A scheme a browser would run or load, as it may appear in a link destination ("\:" is an escaped colon).
_BAD_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])(?:java|vb|live)script(?=\\?:)|(?<![A-Za-z0-9+.\-])(?:data|file)(?=\\?:)",
                         re.I)
_SAFE_LINK = re.compile(r"^(?:https?:|mailto:|#|/|\.|[^:/?#]*(?:[/?#]|$))", re.I)


def _parser():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    original = md.inline.ruler.__rules__[md.inline.ruler.__find__("backticks")].fn

    def backticks(state, silent):
        # Record where each code span starts and ends in the inline token's content.
        start, n = state.pos, len(state.tokens)
        ok = original(state, silent)
        if ok and not silent:
            for token in state.tokens[n:]:
                if token.type == "code_inline":
                    token.meta = {**(token.meta or {}), "span": (start, state.pos)}
        return ok

    md.inline.ruler.at("backticks", backticks)
    return md


_MD = None


def _md():
    global _MD
    if _MD is None:
        _MD = _parser()
    return _MD


def _mask(text: str, delimiters) -> tuple[str, list[tuple[int, int, str]]]:
    """Replace math regions as gradio does (``%%%LATEX_BLOCK_n%%%``, one pass per delimiter pair).

    Returns the masked text and, per placeholder, (start, end, the original text it stands for).
    """
    regions: list[tuple[int, int, str]] = []
    count = 0
    for left, right in delimiters:
        pattern = re.compile(re.escape(left) + r"([\s\S]+?)" + re.escape(right))
        out, last, made = [], 0, []
        for m in pattern.finditer(text):
            out.append(text[last:m.start()])
            start = sum(map(len, out))
            holder = f"%%%LATEX_BLOCK_{count}%%%"
            count += 1
            out.append(holder)
            # Earlier placeholders inside this match are written back as they were.
            inner = [r for r in regions if m.start() <= r[0] and r[1] <= m.end()]
            original, pos = [], m.start()
            for r in inner:
                original += [text[pos:r[0]], r[2]]
                pos = r[1]
            original.append(text[pos:m.end()])
            made.append((m.start(), m.end(), start, start + len(holder), "".join(original)))
            last = m.end()
        if not made:
            continue
        out.append(text[last:])
        moved = []
        for r in regions:
            if any(a <= r[0] and r[1] <= b for a, b, *_ in made):
                continue
            delta = sum((e2 - s2) - (b - a) for a, b, s2, e2, _ in made if b <= r[0])
            moved.append((r[0] + delta, r[1] + delta, r[2]))
        regions = moved + [(s2, e2, orig) for _, _, s2, e2, orig in made]
        text = "".join(out)
    return text, sorted(regions)


def _fence_close(line: str, markup: str) -> bool:
    stripped = line.lstrip(" ")
    return (len(line) - len(stripped) <= 3 and stripped.rstrip(" ").startswith(markup)
            and set(stripped.rstrip(" ")) == {markup[0]})


def _classify(src: str):
    """Per character of ``src``: prose, fragile code or robust code; plus the fence lines to rewrite."""
    kind = bytearray(len(src))
    lines = src.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def mark_lines(a: int, b: int, value: int) -> None:
        for i in range(a, min(b, len(lines))):
            kind[starts[i]:starts[i] + len(lines[i]) + 1] = bytes([value]) * (len(lines[i]) + (i + 1 < len(lines)))

    rewrites: dict[int, tuple[int, str]] = {}  # line -> (characters replaced at its start, replacement)
    append_close: str | None = None
    cursors: dict[int, int] = {}
    for token in _md().parse(src):
        if token.type == "fence" and token.map:
            a, b = token.map
            opening = lines[a]
            closed = b - a >= 2 and _fence_close(lines[b - 1], token.markup)
            body = lines[a + 1:b - 1] if closed else lines[a + 1:b]
            robust = token.level == 0 and opening.startswith(token.markup) and "`" not in token.info
            if not robust:
                mark_lines(a, b, _FRAGILE)
                continue
            longest = max((len(r) for r in re.findall(r"`+", "\n".join(body))), default=0)
            fence = "`" * max(4, longest + 1)
            mark_lines(a, b, _ROBUST)
            rewrites[a] = (len(token.markup), fence)  # the info string after it is kept as written
            if closed:
                rewrites[b - 1] = (len(lines[b - 1]), fence)
            else:  # runs to the end of the text; say so explicitly, the same for every parser
                append_close = fence
        elif token.type == "code_block" and token.map:
            mark_lines(*token.map, _FRAGILE)
        elif token.type == "inline" and token.map:
            spans = [c.meta["span"] for c in token.children or () if c.type == "code_inline" and "span" in c.meta]
            located = _locate(token, lines, cursors)  # table cells of one row are found left to right
            if spans and located is not None:  # unplaced spans stay prose (escaped), which is safe
                _mark_spans(token, spans, located, starts, kind)
    return kind, rewrites, append_close


def _locate(token, lines, cursors) -> list[int] | None:
    """The absolute offset in ``lines`` of each line of an inline token's content, or None."""
    first = token.map[0]
    found = []
    for j, part in enumerate(token.content.split("\n")):
        i = first + j
        if i >= len(lines):
            return None
        col = lines[i].find(part, cursors.get(i, 0))
        if col < 0:
            return None
        found.append((i, col, len(part)))
    for i, col, n in found:
        cursors[i] = col + n
    return found


def _mark_spans(token, spans, located, starts, kind) -> None:
    offsets, pos = [], 0
    for part in token.content.split("\n"):
        offsets.append(pos)
        pos += len(part) + 1

    def absolute(p: int) -> int:
        j = max(k for k, o in enumerate(offsets) if o <= p)
        i, col, _ = located[j]
        return starts[i] + col + (p - offsets[j])

    for a, b in spans:
        x, y = absolute(a), absolute(b - 1) + 1
        for k in range(x, y):
            if kind[k] == _PROSE:
                kind[k] = _FRAGILE


def _escaped(src: str, i: int) -> bool:
    """Whether ``src[i]`` follows an odd number of backslashes (a Markdown escape)."""
    j = i
    while j > 0 and src[j - 1] == "\\":
        j -= 1
    return (i - j) % 2 == 1


def _emit(src: str, kind, rewrites, append_close, regions, escape_dollars: bool) -> str:
    defang = set()
    for m in _BAD_SCHEME.finditer(src):
        if any(kind[k] != _ROBUST for k in range(m.start(), m.end())):
            defang.add(m.end())
    region_at = {start: (end, original) for start, end, original in regions}
    out: list[str] = []
    i, n = 0, len(src)
    line_no, line_start = 0, True
    while i < n:
        if line_start and line_no in rewrites:
            skip, replacement = rewrites[line_no]
            out.append(replacement)
            i += skip
            line_start = False
            continue
        if i in region_at:
            end, original = region_at[i]
            out.append(original)
            i = end
            line_start = False
            continue
        ch, k = src[i], kind[i]
        nxt = src[i + 1] if i + 1 < n else ""
        if i in defang:
            out.append(WJ)
        if ch == "\n":
            out.append(ch)
            line_no += 1
            line_start = True
            i += 1
            continue
        line_start = False
        if k == _ROBUST:
            out.append(ch)
        elif ch == "<":
            out.append("&lt;" if k == _PROSE else "<" + (WJ if _TAG_START.match(nxt) else ""))
        elif ch == "&" and k == _PROSE:
            out.append("&amp;")
        elif ch == "!" and nxt == "[":
            if k == _PROSE:
                out.append("!" if _escaped(src, i) else "\\!")
            else:
                out.append("!" + WJ)
        elif ch == "$" and k == _PROSE and escape_dollars:
            out.append("$" if _escaped(src, i) else "\\$")
        else:
            out.append(ch)
        i += 1
    if append_close is not None:
        out.append(("" if src.endswith("\n") else "\n") + append_close)
    return "".join(out)


def _raw_tags_outside_fences(text: str, delimiters) -> bool:
    """True when ``text`` (an output) has a raw ``<tag`` that is not inside a top-level fenced block."""
    masked, _ = _mask(text, delimiters)
    if not re.search(r"<[A-Za-z/!?]", masked):
        return False
    kind, _, _ = _classify(masked)
    return any(kind[m.start()] != _ROBUST for m in re.finditer(r"<[A-Za-z/!?]", masked))


def _normalise(text: str) -> str:
    # As markdown-it (and the browser's marked) do before parsing, so offsets agree.
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


@lru_cache(maxsize=256)  # a streamed chat re-renders every earlier message on each update (256 x 32k chars at most)
def escape_markdown_html(text: str, *, latex_delimiters: tuple = GRADIO_LATEX, escape_dollars: bool = False) -> str:
    """``text`` as Markdown in which no raw HTML, image or script link survives (see the module docstring)."""
    if escape_dollars and latex_delimiters:
        raise ValueError("escape_dollars=True is not allowed with latex_delimiters; pass latex_delimiters=()")
    text = _normalise(text)
    masked, regions = _mask(text, latex_delimiters)
    kind, rewrites, append_close = _classify(masked)
    out = _emit(masked, kind, rewrites, append_close, regions, escape_dollars)
    if _raw_tags_outside_fences(out, latex_delimiters):  # a parse we did not foresee: keep no code raw
        kind = bytearray(b if b != _ROBUST else _FRAGILE for b in kind)
        out = _emit(masked, kind, {}, None, regions, escape_dollars)
    return out


def code_fence(code: str, info: str = "") -> str:
    """``code`` as a fenced block whose fence is longer than any backtick run inside it."""
    longest = max((len(r) for r in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{code}\n{fence}"


# -- HTML that needs no second renderer (the notebook's text/html) -------------------------
def _html_renderer():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML is shown as text
    md.validateLink = lambda url: bool(_SAFE_LINK.match(url.strip())) and not _BAD_SCHEME.match(url.strip())

    def image(renderer, tokens, idx, options, env):
        # An image would load from wherever it points: show its text and a link instead.
        token = tokens[idx]
        alt = html.escape(token.content or "image")
        src = token.attrGet("src") or ""
        if not src or not md.validateLink(src):
            return f"[image: {alt}]"
        return f'<a href="{html.escape(src)}" rel="noopener noreferrer" target="_blank">[image: {alt}]</a>'

    md.add_render_rule("image", image)
    return md


_HTML = None


def markdown_to_safe_html(text: str) -> str:
    """``text`` rendered to HTML by markdown-it with raw HTML escaped, safe links only and no images."""
    global _HTML
    if _HTML is None:
        _HTML = _html_renderer()
    rendered = _HTML.render(_normalise(text))
    # Refused links stay as text; an invisible joiner keeps their scheme from reading as one anywhere.
    return _BAD_SCHEME.sub(lambda m: m.group(0) + WJ, rendered)
