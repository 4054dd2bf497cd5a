"""Attention weights as inline SVG: one heatmap, or a small-multiples grid of every head of a layer.

    >>> import numpy as np
    >>> from gpt_demo.inspect.attention_view import heatmap_svg, heads_grid_svg, colour
    >>> w = np.array([[1.0, 0.0], [0.25, 0.75]], dtype=np.float32)     # (T, T), rows sum to 1
    >>> svg = heatmap_svg(["The", " cat"], w, title="layer 0, head 0")
    >>> svg.startswith("<svg") and svg.count("class='cell'") == 3       # the upper triangle is masked
    True
    >>> colour(0.0), colour(1.0)
    ('#440154', '#fde725')
    >>> heads_grid_svg(["The", " cat"], np.stack([w, w]), layer=0).count("class='head'")
    2

Pure functions of numbers (no torch, no plotting library, no script, no CDN): the notebook's
attention widgets show them, they render offline and in exported HTML. bertviz, the usual
notebook viewer, loads require.js from a CDN and shows nothing offline. The web Explain tab
keeps its matplotlib figure; both read the same ``inspect.attention`` weights.
Hovering a cell shows "query -> key: weight" (its ``<title>``). Token text is XML-escaped.
"""

from __future__ import annotations

import html

# Matplotlib's viridis at 9 evenly spaced points (perceptually uniform, readable in grey).
_VIRIDIS = ["#440154", "#472c7a", "#3b518b", "#2c718e", "#21908d", "#27ad81", "#5cc863", "#aadc32", "#fde725"]
MAX_GRID_HEADS = 64  # a grid of more heads is unreadable (SmolLM2-135M has 9 per layer)


def colour(value: float, vmax: float = 1.0) -> str:
    """The viridis colour of ``value`` on a 0..``vmax`` scale (linear between the 9 stops)."""
    x = 0.0 if vmax <= 0 else min(1.0, max(0.0, float(value) / vmax))
    pos = x * (len(_VIRIDIS) - 1)
    i = min(int(pos), len(_VIRIDIS) - 2)
    frac = pos - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    rgb = [round(int(a[k:k + 2], 16) * (1 - frac) + int(b[k:k + 2], 16) * frac) for k in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def show_token(token: str) -> str:
    """Whitespace made visible, as in the Explain tab: ' it' -> '␣it', '\\n' -> '↵'."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def _short(token: str, n: int = 10) -> str:
    t = show_token(token)
    return t if len(t) <= n else t[: n - 1] + "…"


def heatmap_svg(tokens: list[str], weights, *, title: str = "", cell: int = 22, vmax: float | None = None,
                mark: tuple[int, int] | None = None) -> str:
    """One (T, T) attention matrix: row i = the token that looks, column j = the token it attends to.

    Positions j > i are masked (a causal model cannot look ahead) and drawn blank. ``vmax`` fixes
    the colour scale (default: the matrix's largest weight); ``mark`` outlines one (row, column).
    """
    n = len(tokens)
    if getattr(weights, "shape", None) != (n, n):
        raise ValueError(f"weights has shape {getattr(weights, 'shape', None)}; allowed: ({n}, {n}) for {n} tokens")
    top = float(weights.max()) if vmax is None else float(vmax)
    label_w, label_h, head_h = 84, 70, 22 if title else 4
    width, height = label_w + n * cell + 60, head_h + n * cell + label_h
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='gd-attention' width='{width}' height='{height}' "
           f"style='background:#fff;font:11px sans-serif'>"]
    if title:
        out.append(f"<text x='{label_w}' y='15' font-weight='bold' fill='#222'>{html.escape(title)}</text>")
    for i in range(n):
        y = head_h + i * cell
        out.append(f"<text x='{label_w - 4}' y='{y + cell * 0.68:.1f}' text-anchor='end' fill='#333'>"
                   f"{html.escape(_short(tokens[i]))}</text>")
        for j in range(i + 1):
            w = float(weights[i, j])
            tip = html.escape(f"{show_token(tokens[i])} → {show_token(tokens[j])}: {w:.3f}")
            out.append(f"<rect class='cell' data-i='{i}' data-j='{j}' data-w='{w:.4f}' x='{label_w + j * cell}' "
                       f"y='{y}' width='{cell - 1}' height='{cell - 1}' fill='{colour(w, top)}'><title>{tip}</title></rect>")
    base = head_h + n * cell + 4
    for j in range(n):
        x = label_w + j * cell + cell * 0.6
        out.append(f"<text x='{x:.1f}' y='{base}' transform='rotate(60 {x:.1f} {base})' fill='#333'>"
                   f"{html.escape(_short(tokens[j]))}</text>")
    if mark is not None:
        i, j = mark
        out.append(f"<rect x='{label_w + j * cell - 1}' y='{head_h + i * cell - 1}' width='{cell + 1}' height='{cell + 1}' "
                   "fill='none' stroke='#e45756' stroke-width='2'/>")
    # colour bar: 0 .. top
    bx, by, bh = label_w + n * cell + 14, head_h, n * cell
    for k in range(20):
        out.append(f"<rect x='{bx}' y='{by + bh * (19 - k) / 20:.1f}' width='10' height='{bh / 20 + 0.5:.1f}' "
                   f"fill='{colour(k / 19)}'/>")
    out.append(f"<text x='{bx + 13}' y='{by + 9}' fill='#333'>{top:.2f}</text>"
               f"<text x='{bx + 13}' y='{by + bh}' fill='#333'>0</text></svg>")
    return "".join(out)


def heads_grid_svg(tokens: list[str], layer_weights, *, layer: int, cell: int = 7, columns: int = 3,
                   highlight: int | None = None) -> str:
    """Every head of one layer as a small heatmap ((heads, T, T) weights), ``columns`` per row.

    Each head has its own colour scale (its largest weight is yellow), so a sharp head shows as
    a few bright cells. ``highlight`` outlines one head. Hover a square for its head number.
    """
    shape = getattr(layer_weights, "shape", ())
    n = len(tokens)
    if len(shape) != 3 or shape[1:] != (n, n):
        raise ValueError(f"layer_weights has shape {shape}; allowed: (heads, {n}, {n}) for {n} tokens")
    heads = shape[0]
    if not 1 <= heads <= MAX_GRID_HEADS:
        raise ValueError(f"heads={heads} is out of range; allowed: 1 <= heads <= {MAX_GRID_HEADS}")
    columns = max(1, min(columns, heads))
    side, gap, cap = n * cell, 14, 16
    rows = -(-heads // columns)
    width, height = columns * (side + gap) + gap, rows * (side + gap + cap) + gap
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='gd-heads' data-layer='{layer}' width='{width}' "
           f"height='{height}' style='background:#fff;font:11px sans-serif'>"]
    for h in range(heads):
        ox, oy = gap + (h % columns) * (side + gap), gap + (h // columns) * (side + gap + cap)
        w = layer_weights[h]
        top = float(w.max())
        bold = " font-weight='bold'" if h == highlight else ""
        out.append(f"<g class='head' data-head='{h}'><title>layer {layer}, head {h}</title>"
                   f"<text x='{ox}' y='{oy + 10}' fill='#222'{bold}>head {h}</text>")
        for i in range(n):
            for j in range(i + 1):
                out.append(f"<rect x='{ox + j * cell}' y='{oy + cap + i * cell}' width='{cell}' height='{cell}' "
                           f"fill='{colour(float(w[i, j]), top)}'/>")
        if h == highlight:
            out.append(f"<rect x='{ox - 2}' y='{oy + cap - 2}' width='{side + 4}' height='{side + 4}' fill='none' "
                       "stroke='#e45756' stroke-width='2'/>")
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)
