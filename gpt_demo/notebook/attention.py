"""``%gpt_attention``: a heatmap with layer and head sliders, "find heads", and a grid of every head.

    panel = AttentionExplorer(engine, "The animal didn't cross the street because it was too tired")
    panel.head.value = 8              # re-renders from the weights computed once
    panel.find("it", "animal")        # [(layer, head, weight), ...]; the sliders jump to the first
    grid = HeadsGrid(engine, "The animal didn't cross the street because it was too tired", layer=13)

The model runs once per widget (``inspect.attention.all_attentions``: every layer and head,
(layers, heads, T, T)); the sliders only re-render that array as inline SVG
(``inspect.attention_view``), so nothing loads from a CDN and the widget works offline.
"""

from __future__ import annotations

import html

import ipywidgets as w

from ..inspect.attention_view import heads_grid_svg, heatmap_svg, show_token
from .parsing import one_line

EXAMPLE = "The animal didn't cross the street because it was too tired"


def _weights(engine, text: str):
    """(tokens, (layers, heads, T, T) weights) of ``text``; a remote engine raises CapabilityMissing."""
    from ..inspect.attention import all_attentions

    if getattr(engine, "loaded", None) is None:  # a remote backend has no weights to look into
        engine.attention(text)  # raises its CapabilityMissing (a ValueError naming the backend)
    return all_attentions(engine.loaded, text, limits=getattr(engine, "limits", None))


def _check_index(name: str, value, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -n <= value < n:
        raise ValueError(f"{name}={value!r} is out of range; allowed: 0 <= {name} < {n} (or negative from the end)")
    return value % n


def _error_html(exc: Exception) -> str:
    return f"<span style='color:#b00'>{html.escape(one_line(exc))}</span>"


class AttentionExplorer(w.VBox):
    """One head's (T, T) heatmap; the layer and head sliders re-render it; Find heads ranks every head."""

    def __init__(self, engine, text: str, layer: int = -1, head: int | None = None,
                 token: str = "", target: str = ""):
        self.engine, self.text = engine, text
        self.tokens, self.weights = _weights(engine, text)  # (L, H, T, T)
        n_layers, n_heads = self.weights.shape[:2]
        layer = _check_index("layer", layer, n_layers)
        head = 0 if head is None else _check_index("head", head, n_heads)
        self.layer = w.IntSlider(value=layer, min=0, max=n_layers - 1, description="layer", continuous_update=True)
        self.head = w.IntSlider(value=head, min=0, max=n_heads - 1, description="head", continuous_update=True)
        self.mean = w.Checkbox(value=False, description="mean over heads", indent=False)
        self.plot = w.HTML()
        self.reading = w.HTML()
        self.token = w.Text(value=token, description="token", placeholder="it", layout=w.Layout(width="14em"))
        self.target = w.Text(value=target, description="links to", placeholder="animal", layout=w.Layout(width="14em"))
        self.find_button = w.Button(description="Find heads", icon="search")
        self.heads_table = w.HTML()
        self.found: list[tuple[int, int, float]] = []
        self.renders = 0
        for control in (self.layer, self.head, self.mean):
            control.observe(lambda _: self.render(), names="value")
        self.token.observe(lambda _: self.render(), names="value")
        self.find_button.on_click(lambda _: self.find())
        header = w.HTML(f"<b>Attention in</b> <code>{html.escape(text)}</code> <small>({len(self.tokens)} tokens, "
                        f"{n_layers} layers × {n_heads} heads; row = the token that looks, column = what it "
                        "attends to; hover a cell for its weight)</small>")
        finder = w.HBox([self.token, self.target, self.find_button])
        super().__init__([header, w.HBox([self.layer, self.head, self.mean]), self.plot, self.reading,
                          finder, self.heads_table])
        self.render()
        if token and target:
            self.find()

    def matrix(self):
        """The (T, T) weights the sliders select (the mean over heads when that box is ticked)."""
        at_layer = self.weights[self.layer.value]  # (H, T, T)
        return at_layer.mean(0) if self.mean.value else at_layer[self.head.value]

    def render(self) -> str:
        which = "mean over heads" if self.mean.value else f"head {self.head.value}"
        self.head.disabled = self.mean.value
        weights = self.matrix()
        mark = None
        row = self._row(self.token.value)
        if row is not None and row > 0:
            col = 1 + int(weights[row, 1:row + 1].argmax())  # position 0 is the attention sink
            mark = (row, col)
            self.reading.value = (f"<b>{html.escape(show_token(self.tokens[row]))}</b> attends most to "
                                  f"<b>{html.escape(show_token(self.tokens[col]))}</b> ({weights[row, col]:.0%}) "
                                  "here, leaving out position 0 (the attention sink).")
        else:
            self.reading.value = "<small>Type a token of the text to read its row.</small>" if not self.token.value \
                else _error_html(ValueError(f"token={self.token.value!r} is not a token of the text"))
        self.plot.value = heatmap_svg(self.tokens, weights, title=f"layer {self.layer.value}, {which}", mark=mark)
        self.renders += 1
        return self.plot.value

    def _row(self, token: str) -> int | None:
        wanted = token.strip().lower()
        rows = [i for i, t in enumerate(self.tokens) if wanted and t.strip().lower() == wanted]
        return rows[-1] if rows else None

    def find(self, token: str | None = None, target: str | None = None, k: int = 8) -> list[tuple[int, int, float]]:
        """The ``k`` heads where ``token`` attends most to ``target`` (the web Explain tab's core call).

        The sliders then show the strongest one.
        """
        if token is not None:
            self.token.value = token
        if target is not None:
            self.target.value = target
        try:
            self.found = self.engine.strongest_heads(self.text, self.token.value, self.target.value, k=k)
        except ValueError as exc:
            self.heads_table.value = _error_html(exc)
            return []
        rows = "".join(f"<tr><td>{layer}</td><td>{head}</td><td>{weight:.3f}</td></tr>"
                       for layer, head, weight in self.found)
        self.heads_table.value = (f"<table class='gd-found-heads'><thead><tr><th>layer</th><th>head</th>"
                                  f"<th>weight {html.escape(self.token.value)} → {html.escape(self.target.value)}"
                                  f"</th></tr></thead><tbody>{rows}</tbody></table>")
        best_layer, best_head, _ = self.found[0]
        self.mean.value = False
        with self.hold_trait_notifications():
            self.layer.value, self.head.value = best_layer, best_head
        self.render()
        return self.found


class HeadsGrid(w.VBox):
    """``%gpt_attention --view heads``: small multiples of every head of one layer, with a layer slider."""

    def __init__(self, engine, text: str, layer: int = -1, highlight: int | None = None):
        self.engine, self.text = engine, text
        self.tokens, self.weights = _weights(engine, text)  # (L, H, T, T)
        n_layers, n_heads = self.weights.shape[:2]
        self.highlight = None if highlight is None else _check_index("head", highlight, n_heads)
        self.layer = w.IntSlider(value=_check_index("layer", layer, n_layers), min=0, max=n_layers - 1,
                                 description="layer")
        self.plot = w.HTML()
        self.renders = 0
        self.layer.observe(lambda _: self.render(), names="value")
        header = w.HTML(f"<b>Every head of one layer</b> for <code>{html.escape(text)}</code> <small>(each head on "
                        "its own scale; bright cells are where it looks)</small>")
        super().__init__([header, self.layer, self.plot])
        self.render()

    def render(self) -> str:
        self.plot.value = heads_grid_svg(self.tokens, self.weights[self.layer.value], layer=self.layer.value,
                                         highlight=self.highlight)
        self.renders += 1
        return self.plot.value
