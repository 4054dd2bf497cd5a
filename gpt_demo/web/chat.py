"""The Chat tab: streaming replies with stop, retry, undo, clear, a system prompt and every parameter.

Handlers are module-level functions over a ``WebSession``; ``build`` binds the engine with
``functools.partial`` so tests call them directly: ``list(stream_reply(engine, s, "off", *values))``.
"""

from __future__ import annotations

from functools import partial

from ..generation.params import CHAT_DEFAULTS
from . import probs
from .params_panel import panel, to_params
from .queues import generate_queue, model_queue
from .render import chat_messages, error_text
from .session import WebSession, ensure

MODERATION_MODES = ("off", "warn", "block")


def _check_mode(mode: str) -> str:
    if mode not in MODERATION_MODES:
        raise ValueError(f"moderation={mode!r} is not allowed; choose one of {', '.join(MODERATION_MODES)}")
    return mode


def add_user(session: WebSession | None, message: str, mode: str, *param_values, limits=None):
    """Check the parameters and the message, then append it. Returns (session, chatbot, textbox, note).

    ``limits`` (the engine's; default ``GPT_DEMO_MAX_*``) bound the message's characters and the
    conversation's messages; a message over them is refused and the conversation is left as it was.
    """
    import gradio as gr

    from ..limits import current_limits

    session = ensure(session)
    limits = limits if limits is not None else current_limits()
    try:
        to_params(*param_values)  # a bad parameter is refused before anything changes
        _check_mode(mode)
        text = (message or "").strip()
        if not text:
            raise ValueError("message='' is not allowed; type something to send")
        limits.check_text("message", message)
        try:
            limits.check_messages("messages", session.conversation.messages + [{"role": "user", "content": message}])
        except ValueError as exc:
            raise ValueError(f"{exc}. Press Clear (or Undo) to make room.") from None
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    note = ""
    if mode != "off":
        from ..api import gate

        decision = gate(message, mode, role="user")
        if not decision.allowed:
            raise gr.Error(decision.message or "blocked by moderation", print_exception=False)
        note = decision.message or ""
    session.conversation.add("user", message)
    session.note = note
    return session, chat_messages(session.conversation), "", note


def stream_reply(engine, session: WebSession | None, mode: str, *param_values, pool=None):
    """Generate the assistant's answer to the conversation, yielding (session, chatbot, note) as it grows.

    ``pool`` (the app's ``EngineCache``) serves the model this visitor picked (``web.pickers``).
    """
    import gradio as gr

    from .pickers import engine_for

    from ..api import Streamed
    from .probs import WITHHELD, logprob_params, remember_generated

    session = ensure(session)
    try:
        engine = engine_for(pool, engine, session, "chat")
    except (ValueError, RuntimeError, OSError) as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    label = session.models.get("chat")
    conv = session.conversation
    if not conv.turns or conv.turns[-1]["role"] != "user":
        yield session, chat_messages(conv), session.note
        return
    try:
        params = logprob_params(engine, to_params(*param_values))  # Show probabilities reads them
        rendered = engine.render_chat(conv, params)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    session.reply_id += 1  # a newer reply (another Send, Retry) makes an older stream stop writing
    mine = session.reply_id
    notes = [session.note] if session.note else []
    if rendered.truncated:
        notes.append(f"Note: the prompt did not fit the {engine.context_window}-token context window; {rendered.note}.")
    if mode == "block":  # the answer must be checked before anyone sees it, so it is not streamed
        from ..api import gate

        history = conv.messages
        completion = engine.chat(conv, params)
        answer = completion.text
        if session.reply_id != mine:  # stopped or overtaken while it was generating: drop it
            return
        decision = gate(answer, "block", role="assistant")
        if not decision.allowed:
            notes.append(decision.message or "The answer was blocked by moderation.")
            answer = WITHHELD
        else:
            remember_generated(session, "chat", engine, history, answer, completion.choices[0], label, rendered)
        conv.add("assistant", answer)
        session.note = " ".join(notes)
        yield session, chat_messages(conv), session.note
        return
    conv.add("assistant", "")
    turn = conv.turns[-1]
    session.note = " ".join(notes)
    # The partial answer lives in the conversation, so Stop keeps what was written so far.
    from ..generation.scheduler import Busy

    history = conv.messages[:-1]
    stream = Streamed(engine.stream_chat(history, params))
    try:
        for delta in stream:
            if session.reply_id != mine:
                return
            turn["content"] += delta
            yield session, chat_messages(conv), session.note
    except Busy as exc:  # the model's batch queue is full (the API shares it): say so, keep the page
        conv.turns.pop()
        raise gr.Error(str(exc), print_exception=False) from None
    choice = stream.completion.choices[0] if stream.completion is not None else None
    remember_generated(session, "chat", engine, history, turn["content"], choice, label, rendered)
    if mode == "warn":
        from ..api import gate

        decision = gate(turn["content"], "warn", role="assistant")
        if decision.message:
            notes.append(decision.message)
    session.note = " ".join(notes)
    yield session, chat_messages(conv), session.note


def retry(session: WebSession | None):
    """Drop the last answer so ``stream_reply`` writes a new one to the same message."""
    session = ensure(session)
    turns = session.conversation.turns
    if turns and turns[-1]["role"] == "assistant":
        turns.pop()
    probs.forget(session)
    return session, chat_messages(session.conversation)


def undo(session: WebSession | None):
    """Remove the last exchange (answer and question); returns the question for editing."""
    session = ensure(session)
    turns = session.conversation.turns
    last_user = ""
    if turns and turns[-1]["role"] == "assistant":
        turns.pop()
    if turns and turns[-1]["role"] == "user":
        last_user = turns.pop()["content"]
    probs.forget(session)
    session.note = ""
    return session, chat_messages(session.conversation), last_user, ""


def clear(session: WebSession | None):
    session = ensure(session)
    session.conversation.clear()
    probs.forget(session)
    session.note = ""
    return session, [], ""


def set_system(session: WebSession | None, text: str):
    session = ensure(session)
    session.conversation.system = (text or "").strip() or None
    return session


def build(engine, state, concurrency: int, pool=None, jobs: int = 2) -> None:
    """The tab's components and events, inside the current ``gr.Tab``; replies join the model queue.

    With ``pool`` (the app's ``EngineCache``) a Model picker offers the base, its adapters and the
    configured remotes (``/chat_model``).
    """
    import gradio as gr

    from ..limits import current_limits
    from .pickers import picker

    limits = getattr(engine, "limits", None) or current_limits()

    chatbot = gr.Chatbot(label=f"Chat with {engine.model_name}", height=460, sanitize_html=True,
                         allow_tags=False, render_markdown=True, feedback_options=None,
                         buttons=["copy"], elem_id="chatbot", render=False)  # placed below the picker
    picker_note = gr.Markdown("", elem_id="chat-model-note")
    relabel = (lambda label: gr.update(label=f"Chat with {label or engine.model_name}"), [chatbot])
    picker(pool, engine, state, "chat", picker_note, then=relabel)  # the chat names the model picked
    system = gr.Textbox(label="System prompt", placeholder="You are a helpful assistant.", lines=1)
    chatbot.render()
    note = gr.Markdown("", elem_id="chat-note")
    probs_box = probs.view("chat")
    with gr.Row():
        message = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=6,
                             lines=1, max_lines=8, elem_id="chat-input", max_length=limits.max_input_chars)
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
    with gr.Row():
        retry_btn = gr.Button("Retry", size="sm")
        undo_btn = gr.Button("Undo", size="sm")
        clear_btn = gr.Button("Clear", size="sm")
        mode = gr.Dropdown(list(MODERATION_MODES), value="off", label="Moderation", scale=2,
                           info="warn: flag; block: refuse flagged messages and answers")
        show_probs = gr.Checkbox(False, label="Show probabilities", scale=1, elem_id="chat-show-probs",
                                 info="colour the last answer's tokens; hover for the top 5, click to explain")
    params = panel(engine.defaults.replace(**CHAT_DEFAULTS), max_tokens_limit=min(engine.context_window, 2048),
                   prefix="chat")

    reply = partial(stream_reply, engine, pool=pool)
    gen = generate_queue(concurrency)
    add = partial(add_user, limits=limits)
    show = partial(probs.probs_view, engine, key="chat", pool=pool)
    show_args = dict(fn=lambda s, on: show(s, show=on), inputs=[state, show_probs], outputs=[state, probs_box],
                     api_name=False, show_progress="hidden", **model_queue(jobs))  # a read-back runs the model
    events = []
    for trigger in (message.submit, send.click):
        ev = trigger(add, [state, message, mode, *params], [state, chatbot, message, note],
                     api_name="chat_add" if trigger == send.click else False, show_progress="hidden")
        ev = ev.success(reply, [state, mode, *params], [state, chatbot, note],
                        api_name="chat_reply" if trigger == send.click else False, **gen)
        events.append(ev)
        ev.then(**show_args)
    ev = retry_btn.click(retry, [state], [state, chatbot], api_name="chat_retry")
    ev = ev.then(reply, [state, mode, *params], [state, chatbot, note], api_name=False, **gen)
    events.append(ev)
    ev.then(**show_args)
    stop.click(None, None, None, cancels=events, api_name=False).then(**show_args)
    undo_btn.click(undo, [state], [state, chatbot, message, note], api_name="chat_undo").then(**show_args)
    clear_btn.click(clear, [state], [state, chatbot, note], api_name="chat_clear").then(**show_args)
    show_probs.change(**{**show_args, "api_name": "chat_probs"})
    system.change(set_system, [state, system], [state], api_name=False)
