"""ipywidgets panels: chat, next-token table, embedding map with search, ranking.

Each panel is a ``VBox`` subclass whose buttons call a plain method (``send``,
``refresh``, ``search``, ``submit``), so code and tests drive it the way a click does.
Errors land in the panel's status line, never as a traceback.
"""

from __future__ import annotations

import html
import time

import ipywidgets as w

from ..chat import Conversation
from .parsing import one_line
from .views import scatter_svg, token_table_html, transcript_html

STREAM_INTERVAL_S = 0.05  # refresh a streaming widget at most this often


def _error(status: w.HTML, exc: Exception) -> None:
    status.value = f"<span style='color:#b00'>{html.escape(one_line(exc))}</span>"


class ChatPanel(w.VBox):
    """``%gpt_chat``: input box, send, streaming reply, parameter sliders, clear."""

    def __init__(self, engine, params, system: str | None = None):
        self.engine = engine
        self.conversation = Conversation(system=system)
        self.transcript = w.HTML(transcript_html([]))
        self.input = w.Textarea(placeholder="Type a message, then click Send",
                                layout=w.Layout(width="100%", height="4em"))
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.clear_button = w.Button(description="Clear", icon="trash")
        self.system = w.Text(value=system or "", placeholder="System prompt (optional)", description="System")
        self.temperature = w.FloatSlider(value=params.temperature, min=0.0, max=2.0, step=0.05, description="temperature")
        self.top_p = w.FloatSlider(value=params.top_p, min=0.05, max=1.0, step=0.05, description="top_p")
        self.max_tokens = w.IntSlider(value=params.max_tokens, min=1, max=1024, description="max_tokens")
        self.base_params = params
        self.status = w.HTML()
        self.send_button.on_click(lambda _: self.send())
        self.clear_button.on_click(lambda _: self.clear())
        controls = w.HBox([self.send_button, self.clear_button])
        sliders = w.Accordion([w.VBox([self.system, self.temperature, self.top_p, self.max_tokens])], titles=("Parameters",))
        super().__init__([self.transcript, self.input, controls, sliders, self.status])

    def send(self, text: str | None = None) -> str | None:
        """Send ``text`` (default: the input box) and stream the answer; returns the answer."""
        text = (self.input.value if text is None else text).strip()
        if not text:
            return None
        self.send_button.disabled = True
        self.status.value = ""
        self.conversation.system = self.system.value.strip() or None
        self.conversation.add("user", text)
        self.input.value = ""
        parts: list[str] = []
        try:
            params = self.base_params.replace(temperature=self.temperature.value, top_p=self.top_p.value,
                                              max_tokens=self.max_tokens.value)
            last = 0.0
            for delta in self.engine.stream_chat(self.conversation, params):
                parts.append(delta)
                if time.monotonic() - last > STREAM_INTERVAL_S:
                    self.transcript.value = transcript_html(self.conversation.messages, "".join(parts))
                    last = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - shown in the panel as one line
            self.conversation.undo()
            _error(self.status, exc)
            return None
        finally:
            self.send_button.disabled = False
        answer = "".join(parts)
        self.conversation.add("assistant", answer)
        self.transcript.value = transcript_html(self.conversation.messages)
        return answer

    def clear(self) -> None:
        self.conversation.clear()
        self.status.value = ""
        self.transcript.value = transcript_html([])


class NextTokens(w.VBox):
    """``%gpt_next``: the most likely next tokens; moving the temperature slider recomputes them."""

    def __init__(self, engine, text: str, top_k: int = 10, temperature: float = 1.0, rows: list | None = None):
        self.engine, self.text, self.top_k = engine, text, top_k
        self.temperature = w.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05, description="temperature",
                                         continuous_update=False)
        self.table = w.HTML()
        self.status = w.HTML()
        self.rows: list = []
        self.temperature.observe(lambda _: self.refresh(), names="value")
        header = w.HTML(f"<b>After</b> <code>{html.escape(repr(text))}</code>")
        super().__init__([header, self.temperature, self.table, self.status])
        if rows is None:
            self.refresh()
        else:
            self.rows, self.table.value = rows, token_table_html(rows)

    def refresh(self) -> list:
        try:
            self.rows = self.engine.next_tokens(self.text, top_k=self.top_k, temperature=self.temperature.value)
        except Exception as exc:  # noqa: BLE001
            _error(self.status, exc)
            return self.rows
        self.status.value = ""
        self.table.value = token_table_html(self.rows)
        return self.rows


class EmbeddingMap(w.VBox):
    """``%gpt_embed``: a 2-D projection (inline SVG, hover for the text) and a cosine search box."""

    def __init__(self, texts: list[str], vectors, coords, embed_query, method: str = "pca", top_k: int = 5):
        self.texts, self.vectors, self.coords = texts, vectors, coords
        self.embed_query = embed_query  # str -> (D,) normalised vector
        self.plot = w.HTML(scatter_svg(coords, texts))
        self.query = w.Text(placeholder="Search: type a sentence", description="Search")
        self.top_k = w.BoundedIntText(value=min(top_k, len(texts)), min=1, max=len(texts), description="top k")
        self.search_button = w.Button(description="Search", icon="search")
        self.results = w.HTML()
        self.hits: list[tuple[int, float]] = []
        self.search_button.on_click(lambda _: self.search())
        self.query.continuous_update = False
        self.query.observe(lambda change: self.search(), names="value")  # Enter / leaving the box
        caption = w.HTML(f"<small>{len(texts)} texts, {method.upper()} of {vectors.shape[1]}-dim embeddings; "
                         "hover a point to read it.</small>")
        super().__init__([caption, self.plot, w.HBox([self.query, self.top_k, self.search_button]), self.results])

    def search(self, query: str | None = None) -> list[tuple[int, float]]:
        """The top-k texts closest to ``query`` (default: the box), listed and highlighted on the map."""
        from ..embeddings import top_k_rows

        query = self.query.value if query is None else query
        if not query.strip():
            self.hits = []
            self.results.value = ""
            self.plot.value = scatter_svg(self.coords, self.texts)
            return self.hits
        try:
            self.hits = top_k_rows(self.embed_query(query), self.vectors, int(self.top_k.value))
        except Exception as exc:  # noqa: BLE001
            _error(self.results, exc)
            return []
        items = "".join(f"<li>{score:.3f} &nbsp; {html.escape(self.texts[i])}</li>" for i, score in self.hits)
        self.results.value = f"<ol>{items}</ol>"
        self.plot.value = scatter_svg(self.coords, self.texts, {i: rank + 1 for rank, (i, _) in enumerate(self.hits)})
        return self.hits


class RankingPanel(w.VBox):
    """``%gpt_rank``: k answers, a rank for each (1 = best), saved to the shared rankings store."""

    def __init__(self, prompt: str, candidates: list[str], *, model: str, adapter: str | None, params: dict,
                 session_id: str, open_store):
        self.prompt, self.candidates = prompt, candidates
        self.meta = {"model": model, "adapter": adapter, "params": params, "session_id": session_id}
        self.open_store = open_store
        k = len(candidates)
        self.ranks = [w.Dropdown(options=[("rank", 0)] + [(str(r), r) for r in range(1, k + 1)], value=0,
                                 layout=w.Layout(width="6em")) for _ in candidates]
        boxes = [w.HBox([dd, w.HTML(f"<div style='white-space:pre-wrap'>{html.escape(text)}</div>",
                                    layout=w.Layout(width="90%"))])
                 for dd, text in zip(self.ranks, candidates)]
        self.submit_button = w.Button(description="Save ranking", button_style="success", icon="check")
        self.submit_button.on_click(lambda _: self.submit())
        self.status = w.HTML("<small>Give each answer a rank (1 = best), then save.</small>")
        self.saved_id: int | None = None
        header = w.HTML(f"<b>Prompt:</b> {html.escape(prompt)}")
        super().__init__([header, *boxes, self.submit_button, self.status])

    def submit(self, ranks: list[int] | None = None) -> int | None:
        """Store the ranking (``ranks`` or the dropdowns); returns its id, or None with the reason shown."""
        if ranks is not None:
            for dd, r in zip(self.ranks, ranks):
                dd.value = r
        from ..feedback import AlreadyStored

        values = [dd.value for dd in self.ranks]
        try:
            store = self.open_store()
            rid = store.add_ranking(self.prompt, self.candidates, values, source="notebook", **self.meta)
            counts = store.counts()
        except AlreadyStored as exc:  # from this panel, another notebook or the web app
            self.status.value = f"Not saved again: this ranking is already stored as #{exc.ranking_id}."
            return None
        except Exception as exc:  # noqa: BLE001
            _error(self.status, exc)
            return None
        self.saved_id = rid
        self.submit_button.disabled = True
        for dd in self.ranks:
            dd.disabled = True
        self.status.value = (f"Saved ranking #{rid} to {html.escape(str(store.path))} "
                             f"({counts['rankings']} rankings, {counts['pairs']} preference pairs).")
        return rid
