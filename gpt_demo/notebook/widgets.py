"""ipywidgets panels: chat, next-token table, embedding map with search, ranking.

Each panel is a ``VBox`` subclass whose buttons call a plain method (``send``,
``refresh``, ``search``, ``submit``), so code and tests drive it the way a click does.
Errors land in the panel's status line, never as a traceback.
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as w

from ..chat import Conversation
from .parsing import one_line
from .views import scatter_svg, token_table_html, transcript_html

STREAM_INTERVAL_S = 0.05  # refresh a streaming widget at most this often


def _error(status: w.HTML, exc: Exception) -> None:
    status.value = f"<span style='color:#b00'>{html.escape(one_line(exc))}</span>"


class ChatPanel(w.VBox):
    """``%gpt_chat``: Enter (or Send) sends, the reply streams; Stop, Retry, Clear; sliders; probabilities.

    The answer is generated on a worker thread, so the Stop click reaches the kernel while it
    streams. ``send(text)`` and ``retry()`` wait for the answer and return it (what code and tests
    use); a click or Enter does not wait.

    Stop ends the answer at its next delta and keeps what came as the assistant turn (the status
    line says it was stopped; the model never reads a marker). The worker can only look between
    deltas, so a stream that yields nothing for a while ends when its next delta arrives: with
    ``best_of`` > 1 the winner is yielded once, at the end, so Stop takes effect only then and
    keeps the whole answer (the status line says "Stopping..." meanwhile). Stopped before any
    text came, the message goes back into the input box and the conversation is as before.

    "Show probabilities" colours the answer's tokens (``inspect.token_probs``): an answer
    generated with it on carries its logprobs; ticking it afterwards reads the last answer back
    through the model once (``engine.score_answer``; a remote engine says in the status line
    that it cannot); unticking hides the view.
    """

    def __init__(self, engine, params, system: str | None = None):
        self.engine = engine
        self.conversation = Conversation(system=system)
        self.transcript = w.HTML(transcript_html([]))
        self.input = w.Text(placeholder="Type a message and press Enter", layout=w.Layout(width="100%"))
        self.input.on_msg(self._on_msg)  # the Text view sends {"event": "submit"} on Enter
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.retry_button = w.Button(description="Retry", icon="redo")
        self.clear_button = w.Button(description="Clear", icon="trash")
        self.show_probs = w.Checkbox(value=False, description="Show probabilities", indent=False)
        self.probs = w.HTML(layout=w.Layout(display="none"))  # shown while show_probs is ticked
        self.system = w.Text(value=system or "", placeholder="System prompt (optional)", description="System")
        self.temperature = w.FloatSlider(value=params.temperature, min=0.0, max=2.0, step=0.05, description="temperature")
        self.top_p = w.FloatSlider(value=params.top_p, min=0.05, max=1.0, step=0.05, description="top_p")
        self.max_tokens = w.IntSlider(value=params.max_tokens, min=1, max=1024, description="max_tokens")
        self.base_params = params
        self.status = w.HTML()
        self.answer: str | None = None  # the last complete answer
        self.tokens: list = []  # its TokenView rows when "Show probabilities" was on
        self.snapshots = 0  # transcript updates while the last answer streamed
        self.stopped = False  # the last answer was cut short by Stop
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        self.send_button.on_click(lambda _: self.send(wait=False))
        self.stop_button.on_click(lambda _: self.stop())
        self.retry_button.on_click(lambda _: self.retry(wait=False))
        self.clear_button.on_click(lambda _: self.clear())
        self.show_probs.observe(lambda change: self._toggle_probs(change["new"]), names="value")
        controls = w.HBox([self.send_button, self.stop_button, self.retry_button, self.clear_button, self.show_probs])
        sliders = w.Accordion([w.VBox([self.system, self.temperature, self.top_p, self.max_tokens])], titles=("Parameters",))
        super().__init__([self.transcript, self.probs, self.input, controls, sliders, self.status])

    def _on_msg(self, _widget, content, _buffers) -> None:
        if content.get("event") == "submit":
            self.send(wait=False)

    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def send(self, text: str | None = None, *, wait: bool = True) -> str | None:
        """Send ``text`` (default: the input box) and stream the answer; returns it when ``wait``."""
        text = (self.input.value if text is None else text).strip()
        if not text or self.busy:
            if self.busy:
                self.status.value = "<small>Still answering: Stop it first.</small>"
            return None
        self.conversation.add("user", text)
        self.input.value = ""
        return self._start(wait)

    def retry(self, *, wait: bool = True) -> str | None:
        """Answer the last message again (the last answer is replaced)."""
        if self.busy or not self.conversation.turns:
            return None
        if self.conversation.turns[-1]["role"] == "assistant":
            self.conversation.undo()
        return self._start(wait)

    def stop(self) -> None:
        """End the streaming answer at its next delta; what came so far is kept as the answer."""
        if self.busy:
            self._cancel.set()
            self.status.value = "<small>Stopping...</small>"

    def _start(self, wait: bool) -> str | None:
        from ..inspect.token_probs import TOP

        self.status.value = ""
        self.conversation.system = self.system.value.strip() or None
        probs = {"logprobs": True, "top_logprobs": TOP} if self.show_probs.value else {}
        try:
            params = self.base_params.replace(temperature=self.temperature.value, top_p=self.top_p.value,
                                              max_tokens=self.max_tokens.value, **probs)
        except ValueError as exc:
            self.conversation.undo()
            _error(self.status, exc)
            return None
        self._cancel.clear()
        self.answer, self.tokens, self.snapshots, self.stopped = None, [], 0, False
        self.probs.value = ""  # the previous answer's colours do not belong to this one
        self.send_button.disabled = self.retry_button.disabled = True
        self.stop_button.disabled = False
        self._worker = threading.Thread(target=self._stream, args=(params,), name="gpt-chat-panel", daemon=True)
        self._worker.start()
        if wait:
            self._worker.join()
            return self.answer
        return None

    def _stream(self, params) -> None:
        from ..api import Streamed
        from ..models.quiet import quiet_libraries

        parts: list[str] = []
        stopped = False
        try:
            with quiet_libraries():
                stream = Streamed(self.engine.stream_chat(self.conversation, params))
                last = 0.0
                for delta in stream:
                    parts.append(delta)
                    if self._cancel.is_set():
                        stopped = True
                        stream.close()
                        break
                    if time.monotonic() - last > STREAM_INTERVAL_S:
                        self.transcript.value = transcript_html(self.conversation.messages, "".join(parts))
                        self.snapshots += 1
                        last = time.monotonic()
            answer = "".join(parts)
            self.stopped = stopped
            if stopped and not answer:  # nothing came: as if not sent, the message back in the box
                self.input.value = self.conversation.undo()["content"]
                self.status.value = "<small>Stopped before the answer began.</small>"
                return
            self.conversation.add("assistant", answer)  # a stopped answer as it stands, with no marker
            self.answer = answer
            if stopped:
                self.status.value = "<small>Stopped: the answer so far is kept.</small>"
            completion = stream.completion
            if params.logprobs and completion is not None and completion.choices[0].logprobs:
                from ..inspect.token_probs import answer_tokens, tokens_html

                self.tokens = answer_tokens(completion.choices[0].logprobs)
                self.probs.value = tokens_html(self.tokens)
            elif self.show_probs.value and not params.logprobs:  # ticked while it streamed
                self.read_back()
        except Exception as exc:  # noqa: BLE001 - shown in the panel as one line
            if self.conversation.turns and self.conversation.turns[-1]["role"] == "user":
                self.conversation.undo()
            _error(self.status, exc)
        finally:
            self.transcript.value = transcript_html(self.conversation.messages)
            self.send_button.disabled = self.retry_button.disabled = False
            self.stop_button.disabled = True

    def _toggle_probs(self, on: bool) -> None:
        """The checkbox: on shows the last answer's tokens (read back when it was written without them)."""
        self.probs.layout.display = None if on else "none"
        if on and self.answer and not self.tokens and not self.busy:  # busy: the answer in flight decides
            self.read_back()

    def read_back(self) -> list:
        """The last answer's tokens, scored once through the model; errors go to the status line."""
        from ..inspect.token_probs import TOP, answer_tokens, tokens_html
        from ..models.quiet import quiet_libraries
        from .probs import last_answer

        try:
            before, answer = last_answer(self.conversation.messages)
            with quiet_libraries():
                self.tokens = answer_tokens(self.engine.score_answer(before, answer, top=TOP))
        except ValueError as exc:  # CapabilityMissing (a remote engine) is a ValueError too
            _error(self.status, exc)
            return []
        self.probs.value = tokens_html(self.tokens)
        return self.tokens

    def clear(self) -> None:
        if self.busy:
            self.stop()
            self._worker.join()
        self.conversation.clear()
        self.status.value = self.probs.value = ""
        self.answer, self.tokens, self.stopped = None, [], False
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
