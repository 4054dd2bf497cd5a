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

from dataclasses import dataclass

from .render import error_text
from .session import WebSession, ensure

PICK_ID = "probs-pick"
TOP = 5
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


def logprob_params(engine, params):
    """``params`` asking for each token's log-probability and top 5, where the engine can give them."""
    caps = engine.capabilities
    if not caps.logprobs:
        return params
    return params.replace(logprobs=True, top_logprobs=min(TOP, caps.top_logprobs))


def _tokens(engine, messages, answer: str, choice=None):
    from ..inspect.token_probs import answer_tokens

    from ..backends import CapabilityMissing

    if choice is not None and choice.logprobs and choice.text.strip() == answer.strip():
        return answer_tokens(choice.logprobs)
    if not engine.capabilities.score:  # a remote: only the logprobs it sent
        raise CapabilityMissing(engine.backend, "logprobs")
    return answer_tokens(engine.score_answer(messages, answer, top=TOP))


def remember(session: WebSession, key: str, engine, messages, answer: str, choice=None, label=None) -> None:
    """Keep ``answer``'s tokens for the view ``key`` ("chat", "rank-0", ...); nothing when there are none."""
    from ..backends import CapabilityMissing

    session.probs.pop(key, None)
    if not answer.strip():
        return
    try:
        tokens = _tokens(engine, messages, answer, choice)
    except (ValueError, CapabilityMissing):  # no logprobs from this remote: the view says so when asked
        return
    local = getattr(engine, "loaded", None) is not None
    prompt_text = engine.prompt_text(messages) if local else ""
    session.probs[key] = AnswerProbs(answer, list(messages), tokens, label, prompt_text)


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

    from ..backends import CapabilityMissing
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
    else:
        if not (answer or "").strip():
            return session, gr.update(value=_note("No answer in this box."), visible=True)
        messages = [{"role": "user", "content": prompt if prompt is not None else session.rank_prompt}]
    held = session.probs.get(key)
    if held is None or held.answer.strip() != answer.strip():
        try:
            chosen = engine_for(pool, engine, session, tab)
            remember(session, key, chosen, messages, answer, label=session.models.get(tab))
            held = session.probs.get(key)
        except (ValueError, RuntimeError, OSError) as exc:
            return session, gr.update(value=_note(error_text(exc)), visible=True)
        if held is None:
            why = CapabilityMissing(getattr(chosen, "backend", "remote"), "logprobs")
            return session, gr.update(value=_note(f"{why}."), visible=True)
    hint = "<div class='gd-probs-legend'>Click a token to open the Explain tab's next-token table there.</div>"
    return session, gr.update(value=tokens_html(held.tokens, dom_id=f"probs-{key}") + hint, visible=True)


def _note(text: str) -> str:
    import html

    return f"<div class='gd-probs-legend'>{html.escape(text)}</div>"


def parse_pick(pick: str) -> tuple[str, int]:
    """ "rank-2:5:1712345" -> ("rank-2", 5); what the click handler writes, checked here on the server."""
    parts = str(pick or "").split(":")
    if len(parts) < 2 or not parts[1].isdigit() or len(str(pick)) > 64:
        raise ValueError(f"token={pick!r} is not allowed; click a token of an answer with Show probabilities on")
    key = parts[0]
    if key != "chat" and not (key.startswith("rank-") and key[5:].isdigit()):
        raise ValueError(f"token={pick!r} names no answer; allowed: chat or rank-N")
    return key, int(parts[1])


def explain_token(engine, session: WebSession | None, pick: str, temperature, top_k, pool=None):
    """The click: Explain's next-token table at the clicked token, for the model that wrote the answer.

    Returns (Explain text, session, table, chart, choice box, status, outer tabs, Explain's inner tabs).
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
    except ValueError as exc:
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
            gr.Tabs(selected="next-token"))


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
            tabs, explain["tabs"]]
    pick.change(partial(explain_token, engine, pool=pool), [state, pick, explain["temperature"], explain["top_k"]],
                outs, api_name="explain_token", show_progress="hidden", **model_queue(explain["jobs"]))
