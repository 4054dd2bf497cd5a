"""Display objects (``_repr_mimebundle_``) the magics return, and the HTML/SVG the widgets show.

Nothing here loads a script: every view is plain HTML, Markdown, JSON or inline SVG,
so notebooks render offline and in exported HTML. Text from the model or the user is
HTML-escaped, or, in Markdown, escaped by ``gpt_demo.text_safety``.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field

from ..text_safety import code_fence, escape_markdown_html

FORMATS = ("markdown", "text", "code", "json")


def notebook_markdown(text: str) -> str:
    """``text`` as Markdown that JupyterLab shows without running or loading anything.

    JupyterLab runs the script in trusted outputs (every output of the current session), so
    an answer's raw HTML would run there. The escaping is the web chat's (``text_safety``);
    JupyterLab finds ``$`` math after protecting code, so every ``$`` outside code is escaped
    instead of pulled out as gradio does (answers show ``$x$`` as written, not as math).
    """
    return escape_markdown_html(text, latex_delimiters=(), escape_dollars=True)
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:\n```|\Z)", re.S)


def code_of(text: str) -> str:
    """The first fenced code block of ``text`` (an answer), else the whole text."""
    m = _FENCE.search(text)
    return m.group(1).rstrip() if m else text.strip()


def json_of(text: str):
    """Parse an answer as JSON (fences allowed); raise ValueError when it is not JSON."""
    candidate = code_of(text)
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        pass
    start = min((i for i in (candidate.find("{"), candidate.find("[")) if i >= 0), default=-1)
    if start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(candidate[start:])
            return value
        except json.JSONDecodeError:
            pass
    raise ValueError("the answer is not valid JSON")


@dataclass
class Status:
    """A one-line note (loading, saved, new conversation)."""

    text: str

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": self.text, "text/html": f"<span style='color:#666'>{html.escape(self.text)}</span>"}


@dataclass
class Answer:
    """The model's answer in a cell, shown as ``format`` (markdown | text | code | json)."""

    text: str
    format: str = "markdown"
    done: bool = True

    def value(self):
        """What ``--out`` stores: the text, the code without fences, or the parsed JSON (text if invalid)."""
        if self.format == "code":
            return code_of(self.text)
        if self.format == "json":
            try:
                return json_of(self.text)
            except ValueError:
                return self.text
        return self.text

    def _repr_mimebundle_(self, include=None, exclude=None):
        text = self.text if self.done else self.text + " ▌"
        if self.format == "text" or not self.done and self.format == "json":
            return {"text/plain": text}
        if self.format == "code":
            code = code_of(self.text) if self.done else text
            # A fence longer than any backtick run inside: the answer cannot close it and go on as HTML.
            return {"text/plain": code, "text/markdown": code_fence(code)}
        if self.format == "json":
            try:
                value = json_of(self.text)
            except ValueError:
                return {"text/plain": f"{self.text}\n(not valid JSON)"}
            bundle = {"text/plain": json.dumps(value, indent=2, ensure_ascii=False)}
            if isinstance(value, (dict, list)):
                bundle["application/json"] = value
            return bundle
        return {"text/plain": text, "text/markdown": notebook_markdown(text)}


@dataclass
class History:
    """The conversation so far (``%gpt history``)."""

    messages: list[dict]

    def _repr_mimebundle_(self, include=None, exclude=None):
        if not self.messages:
            return {"text/plain": "(the conversation is empty)"}
        plain = "\n\n".join(f"{m['role']}: {m['content']}" for m in self.messages)
        rows = "".join(
            f"<tr><td style='vertical-align:top;font-weight:bold;padding-right:1em'>{m['role']}</td>"
            f"<td style='white-space:pre-wrap;text-align:left'>{html.escape(m['content'])}</td></tr>"
            for m in self.messages
        )
        return {"text/plain": plain, "text/html": f"<table>{rows}</table>"}


@dataclass
class ConfigView:
    """``%gpt config``: what will be loaded and the default parameters."""

    rows: dict

    def _repr_mimebundle_(self, include=None, exclude=None):
        plain = "\n".join(f"{k:<14} {v}" for k, v in self.rows.items())
        cells = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                        for k, v in self.rows.items())
        return {"text/plain": plain, "text/html": f"<table>{cells}</table>"}


@dataclass
class HelpText:
    text: str

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": self.text}


@dataclass
class ModerationTable:
    """``%%gpt_moderate``: one row per text with every category score, the flag and the thresholds used."""

    texts: list[str]
    results: list  # ModerationResult
    thresholds: dict[str, float]
    categories: tuple = field(default=())

    def records(self) -> list[dict]:
        """Plain data: text, flagged, flagged_categories, category_scores, categories, thresholds."""
        return [{"text": t, "flagged": r.flagged, "flagged_categories": r.flagged_categories,
                 "category_scores": dict(r.category_scores), "categories": dict(r.categories),
                 "thresholds": dict(self.thresholds)} for t, r in zip(self.texts, self.results)]

    def _repr_mimebundle_(self, include=None, exclude=None):
        cats = self.categories
        lines = [f"{'flagged':<8} text"]
        for t, r in zip(self.texts, self.results):
            lines.append(f"{'YES' if r.flagged else 'no':<8} {t}" + (f"  ({', '.join(r.flagged_categories)})" if r.flagged else ""))
        head = "".join(f"<th>{html.escape(c)}<br><small>&ge; {self.thresholds[c]:.2f}</small></th>" for c in cats)
        body = []
        for t, r in zip(self.texts, self.results):
            cells = []
            for c in cats:
                s = r.category_scores[c]
                style = "background:#f8d7da;font-weight:bold" if r.categories[c] else ""
                cells.append(f"<td style='{style}'>{s:.3f}</td>")
            flag = "<b style='color:#b00'>flagged</b>" if r.flagged else "ok"
            body.append(f"<tr><td style='text-align:left'>{html.escape(t)}</td><td>{flag}</td>{''.join(cells)}</tr>")
        table = (f"<table><thead><tr><th style='text-align:left'>text</th><th>verdict</th>{head}</tr></thead>"
                 f"<tbody>{''.join(body)}</tbody></table><small>Thresholds in the header; a cell at or above "
                 f"its threshold is flagged.</small>")
        return {"text/plain": "\n".join(lines), "text/html": table}


# -- widget HTML ----------------------------------------------------------------------
def transcript_html(messages: list[dict], pending: str | None = None) -> str:
    """Chat bubbles for the panel; ``pending`` is the answer still streaming."""
    out = []
    for m in messages:
        if m["role"] == "system":
            continue
        colour = "#e8f0fe" if m["role"] == "user" else "#f1f3f4"
        out.append(f"<div style='background:{colour};border-radius:6px;padding:4px 8px;margin:4px 0;"
                   f"white-space:pre-wrap'><b>{m['role']}</b>: {html.escape(m['content'])}</div>")
    if pending is not None:
        out.append("<div class='gd-streaming' style='background:#f1f3f4;border-radius:6px;padding:4px 8px;margin:4px 0;"
                   "white-space:pre-wrap'>"
                   f"<b>assistant</b>: {html.escape(pending)} &#9612;</div>")
    return "".join(out) or "<i style='color:#888'>No messages yet.</i>"


def token_table_html(rows: list) -> str:
    """The next-token table: token, probability, a bar."""
    body = "".join(
        f"<tr><td style='font-family:monospace;text-align:left'>{html.escape(repr(r.token))}</td>"
        f"<td>{100 * r.prob:.2f} %</td><td style='text-align:left'><div style='background:#4c78a8;height:10px;"
        f"width:{max(1, round(r.prob * 300))}px'></div></td></tr>"
        for r in rows
    )
    return f"<table><thead><tr><th>token</th><th>probability</th><th></th></tr></thead><tbody>{body}</tbody></table>"


def scatter_svg(coords, texts: list[str], highlight: dict[int, int] | None = None,
                width: int = 560, height: int = 400, pad: int = 24) -> str:
    """An inline SVG scatter of (N, 2) ``coords``; hovering a point shows its text (<title>).

    ``highlight`` maps a point's index to its rank in a search (1 = closest).
    """
    highlight = highlight or {}
    xs, ys = [float(c[0]) for c in coords], [float(c[1]) for c in coords]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 2 * pad) / ((x1 - x0) or 1.0)
    sy = (height - 2 * pad) / ((y1 - y0) or 1.0)
    label = len(texts) <= 40  # beyond that the labels overlap; hover still works
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"style='border:1px solid #ddd;background:#fff;font:11px sans-serif'>"]
    order = sorted(range(len(texts)), key=lambda i: i in highlight)  # highlighted points drawn last
    for i in order:
        cx = pad + (xs[i] - x0) * sx if x1 > x0 else width / 2
        cy = height - pad - (ys[i] - y0) * sy if y1 > y0 else height / 2
        hit = highlight.get(i)
        fill, r = ("#e45756", 7) if hit else ("#4c78a8", 5)
        tip = html.escape(texts[i] + (f" (match {hit})" if hit else ""))
        parts.append(f"<g class='point' data-index='{i}'><circle cx='{cx:.1f}' cy='{cy:.1f}' r='{r}' fill='{fill}' "
                     f"fill-opacity='0.8'><title>{tip}</title></circle>")
        if label or hit:
            short = texts[i] if len(texts[i]) <= 28 else texts[i][:27] + "…"
            prefix = f"{hit}. " if hit else ""
            parts.append(f"<text x='{cx + 8:.1f}' y='{cy + 4:.1f}' fill='#333'>{html.escape(prefix + short)}</text>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def curve_svg(points: list[tuple[int, str, float]], width: int = 560, panel_h: int = 110, pad: int = 30) -> str:
    """Training curves as inline SVG: one small panel per metric (loss, reward, kl, ...), step on x.

    ``points`` are (step, metric, value) as the trainers report them through ``on_progress``.
    """
    metrics: dict[str, list[tuple[int, float]]] = {}
    for step, name, value in points:
        metrics.setdefault(name, []).append((step, value))
    if not metrics:
        return ("<svg xmlns='http://www.w3.org/2000/svg' class='gd-curve' data-points='0' width='300' height='24' "
                "style='font:11px sans-serif'><text x='4' y='16' fill='#888'>waiting for the first step...</text></svg>")
    steps = [s for s, _, _ in points]
    s0, s1 = min(steps), max(steps)
    height = len(metrics) * (panel_h + 8)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='gd-curve' data-points='{len(points)}' width='{width}' "
           f"height='{height}' style='background:#fff;font:11px sans-serif'>"]
    for k, (name, series) in enumerate(metrics.items()):
        top = k * (panel_h + 8)
        vs = [v for _, v in series]
        v0, v1 = min(vs), max(vs)
        span_v, span_s = (v1 - v0) or 1.0, (s1 - s0) or 1

        def xy(s, v):
            return (pad + (s - s0) / span_s * (width - 2 * pad),
                    top + panel_h - 16 - (v - v0) / span_v * (panel_h - 30))

        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, v) for s, v in series))
        out.append(f"<g class='metric' data-metric='{html.escape(name, quote=True)}' data-n='{len(series)}'>"
                   f"<rect x='{pad}' y='{top + 12}' width='{width - 2 * pad}' height='{panel_h - 26}' fill='#fafafa' "
                   f"stroke='#ddd'/><text x='{pad}' y='{top + 9}' fill='#222'>{html.escape(name)}: last "
                   f"{vs[-1]:.4g} (min {v0:.4g}, max {v1:.4g})</text>"
                   f"<polyline points='{coords}' fill='none' stroke='#4c78a8' stroke-width='2'/>")
        for x, y in (xy(s, v) for s, v in series):
            out.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='2.5' fill='#4c78a8'/>")
        out.append(f"<text x='{pad}' y='{top + panel_h - 2}' fill='#666'>step {s0}</text>"
                   f"<text x='{width - pad}' y='{top + panel_h - 2}' text-anchor='end' fill='#666'>step {s1}</text></g>")
    out.append("</svg>")
    return "".join(out)
