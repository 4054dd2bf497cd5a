"""Show probabilities: each token of a Chat or Rank answer coloured by its probability, top 5 on hover;
a click opens the Explain tab's next-token table at that token, with the text the model had read.

    remember(session, "chat", engine, messages, answer, choice)   # after an answer is written
    probs_view(engine, session, "chat", True)                      # -> gr.update(value=html, visible=True)
    explain_token(engine, session, "chat:4", 1.0, 10)               # the Explain table before token 4

Where the numbers come from: the answer's own ``logprobs`` (Chat and Rank ask for them with
``top_logprobs=5``, local or a remote that returns them); an answer typed or edited by the user,
or written before, is read back through the local model once (``Engine.score_answer``).
The rendering is the core's (``inspect.token_probs``): inline HTML and CSS, no CDN. The click
travels through one hidden textbox (``PICK_ID``) whose change event is ``/explain_token``, so an
API client can do what the click does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .render import error_text
from .session import WebSession, ensure

WITHHELD = "*[answer withheld by moderation]*"  # what Chat shows in block mode instead of a flagged answer

PICK_ID = "probs-pick"
PICK = re.compile(r"(chat|rank-\d):(\d{1,5})(:\d{1,20})?")  # what the click handler writes
# A token click writes "<view>:<token>:<time>" into the hidden box (the time makes a second click on
# the same token a change too) and sends the input event gradio listens for.
JS_ON_LOAD = """
element.addEventListener('click', (event) => {
  const tok = event.target.closest('.gd-tok');
  const view = event.target.closest('.gd-probs');
  if (!tok || !view || !view.id) return;
  const box = document.querySelector('#probs-pick textarea') || document.querySelector('#probs-pick input');
  if (!box) return;
  box.value = view.id.replace(/^probs-/, '') + ':' + tok.dataset.i + ':' + Date.now();
  box.dispatchEvent(new Event('input', {bubbles: true}));
});
"""


@dataclass
class AnswerProbs:
    """One answer on show, with what its probabilities need: the text before it and the picker label."""

    answer: str
    messages: list  # the conversation it answers (its last message is the user's)
    tokens: list  # inspect.token_probs.TokenView
    label: str | None  # the picker label of the model that wrote it (None: the base)
    prompt_text: str  # the chat template's text before the answer ("" for a remote: its template is not here)

    def shows(self, messages, answer: str, label: str | None) -> bool:
        """Whether these are the numbers of ``answer`` to ``messages`` by ``label`` (what is on screen)."""
        return self.answer.strip() == answer.strip() and self.messages == list(messages) and self.label == label


def logprob_params(engine, params):
    """``params`` asking for each token's log-probability and top 5, where the engine can give them."""
    from ..inspect.token_probs import TOP

    caps = engine.capabilities
    if not caps.logprobs:
        return params
    return params.replace(logprobs=True, top_logprobs=min(TOP, caps.top_logprobs))


def _tokens(engine, messages, answer: str, choice=None):
    from ..backends import CapabilityMissing
    from ..inspect.token_probs import TOP, answer_tokens

    if choice is not None and choice.logprobs and choice.text.strip() == answer.strip():
        return answer_tokens(choice.logprobs)
    if not engine.capabilities.score:  # a remote: only the logprobs it sent
        raise CapabilityMissing(engine.backend, "logprobs")
    return answer_tokens(engine.score_answer(messages, answer, top=TOP))


def remember(session: WebSession, key: str, engine, messages, answer: str, choice=None, label=None,
             prompt_text: str | None = None) -> AnswerProbs:
    """Keep ``answer``'s tokens for the view ``key`` ("chat", "rank-0", ...) and return them.

    ``prompt_text``: what the model read before the answer, as generated (default: the chat
    template of ``messages`` now). Raises ValueError (a remote's CapabilityMissing among them)
    when there are no numbers to show; the view then says why.
    """
    session.probs.pop(key, None)
    if not answer.strip():
        raise ValueError("the answer is empty: there are no tokens to look into")
    tokens = _tokens(engine, messages, answer, choice)
    if prompt_text is None:
        local = getattr(engine, "loaded", None) is not None
        prompt_text = engine.prompt_text(messages) if local else ""
    held = session.probs[key] = AnswerProbs(answer, list(messages), tokens, label, prompt_text)
    return held


def remember_generated(session, key, engine, messages, answer, choice, label, rendered=None) -> None:
    """``remember`` right after generation; a failure only means the view reads the answer back later."""
    try:
        prompt_text = None
        if rendered is not None and getattr(engine, "loaded", None) is not None:
            prompt_text = engine.tokenizer.decode(rendered.ids, skip_special_tokens=False)  # prefill included
        remember(session, key, engine, messages, answer, choice, label, prompt_text)
    except ValueError:
        pass


def forget(session: WebSession, key: str = "chat") -> None:
    """The answer of view ``key`` left the screen (Undo, Retry, Clear): its numbers go with it."""
    session.probs.pop(key, None)


def _chat_answer(session: WebSession) -> tuple[list, str] | None:
    turns = session.conversation.turns
    if not turns or turns[-1]["role"] != "assistant":
        return None
    return session.conversation.messages[:-1], turns[-1]["content"]


def probs_view(engine, session: WebSession | None, key: str, show, answer: str | None = None, *, prompt=None,
               pool=None):
    """The view ``key`` as a gr.update: hidden when ``show`` is off, else the coloured answer.

    Chat shows its last answer; a Rank view shows ``answer`` (its box), read back through the model
    when it was edited. Returns (session, update).
    """
    import gradio as gr

    from ..inspect.token_probs import tokens_html
    from .pickers import engine_for

    session = ensure(session)
    if not show:
        return session, gr.update(value="", visible=False)
    tab = "chat" if key == "chat" else "rank"
    if key == "chat":
        found = _chat_answer(session)
        if found is None:
            return session, gr.update(value=_note("No answer yet: send a message."), visible=True)
        messages, answer = found
        if answer == WITHHELD:
            return session, gr.update(value=_note("The answer was withheld by moderation."), visible=True)
    else:
        if not (answer or "").strip():
            return session, gr.update(value=_note("No answer in this box."), visible=True)
        messages = [{"role": "user", "content": prompt if prompt is not None else session.rank_prompt}]
    label = session.models.get(tab)
    held = session.probs.get(key)
    if held is None or not held.shows(messages, answer, label):
        try:
            held = remember(session, key, engine_for(pool, engine, session, tab), messages, answer, label=label)
        except (ValueError, RuntimeError, OSError) as exc:  # the real reason: a limit, a remote, a load
            return session, gr.update(value=_note(f"{error_text(exc)}."), visible=True)
    hint = "<div class='gd-probs-legend'>Click a token to open the Explain tab's next-token table there.</div>"
    return session, gr.update(value=tokens_html(held.tokens, dom_id=f"probs-{key}") + hint, visible=True)


def _note(text: str) -> str:
    import html

    return f"<div class='gd-probs-legend'>{html.escape(text)}</div>"


def parse_pick(pick: str) -> tuple[str, int]:
    """ "rank-2:5:1712345" -> ("rank-2", 5); what the click handler writes, checked here on the server."""
    m = PICK.fullmatch(str(pick or ""))
    if m is None:
        raise ValueError(f"token={str(pick)[:80]!r} is not allowed; allowed: chat:N or rank-K:N (click a token of "
                         "an answer with Show probabilities on)")
    return m.group(1), int(m.group(2))


def explain_token(engine, session: WebSession | None, pick: str, temperature, top_k, pool=None):
    """The click: Explain's next-token table at the clicked token, for the model that wrote the answer.

    Returns (Explain text, session, table, chart, choice box, status, outer tabs, Explain's inner tabs,
    Explain's model picker).
    """
    import gradio as gr

    from ..inspect.token_probs import prefix_text
    from .explain import distribution_table, show_token
    from .pickers import resolve

    session = ensure(session)
    try:
        key, index = parse_pick(pick)
        held = session.probs.get(key)
        if held is None:
            raise ValueError(f"token={pick!r}: that answer is no longer on show; turn Show probabilities on again")
        chosen = resolve(pool, engine, held.label)
        local = getattr(chosen, "loaded", None) is not None
        text = prefix_text(held.tokens, index, held.prompt_text, chosen.tokenizer if local else None)
        if not text:
            raise ValueError("the first token of a remote answer has no text before it here; click a later one")
        df, choices, clipped = distribution_table(chosen, text, temperature, top_k)
    except (ValueError, RuntimeError, OSError) as exc:  # a bad pick, a remote's error, an adapter that won't load
        raise gr.Error(error_text(exc), print_exception=False) from None
    session.explain_text = text
    session.models["explain"] = held.label  # the table and Step follow the model that wrote the answer
    tok = held.tokens[index]
    top = df.iloc[0]
    status = (f"Before **{show_token(tok.token)}** (token {index + 1} of the answer, p = {tok.prob:.1%}) the model "
              f"weighed these; its favourite was **{top['token'].split('. ', 1)[1]}** ({top['probability']:.1%}). "
              f"Model: **{held.label or engine.model_name}**.")
    if not local:
        status += " A remote server's chat template is not known here, so the text is the answer alone."
    if clipped:
        status += f" The first {clipped} tokens did not fit the context window."
    return (text, session, df.drop(columns=["token_id"]), df[["token", "probability"]],
            gr.update(choices=choices, value=None), status, gr.Tabs(selected="explain"),
            gr.Tabs(selected="next-token"), gr.update(value=held.label or engine.model_name))


def view(key: str):
    """The (hidden) gr.HTML a view renders into; its clicks go to the pick box."""
    import gradio as gr

    return gr.HTML("", visible=False, elem_id=f"probs-view-{key}", js_on_load=JS_ON_LOAD, apply_default_css=False)


def wire(engine, state, explain: dict, tabs, pool=None) -> None:
    """The pick box and its ``/explain_token`` event (after every tab is built: it writes into Explain)."""
    from functools import partial

    import gradio as gr

    from .queues import model_queue

    pick = gr.Textbox("", visible="hidden", elem_id=PICK_ID, max_length=64)
    outs = [explain["text"], state, explain["table"], explain["chart"], explain["choice"], explain["status"],
            tabs, explain["tabs"], explain["picker"] or gr.State()]
    pick.change(partial(explain_token, engine, pool=pool), [state, pick, explain["temperature"], explain["top_k"]],
                outs, api_name="explain_token", show_progress="hidden", **model_queue(explain["jobs"]))
