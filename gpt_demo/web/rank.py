"""The Rank tab: rank k sampled answers (1 = best) or vote in the Arena (``web.arena``); both go to the store.

    generate_candidates(engine, session, prompt, k, *param_values, pool=)   -> k answers, shown side by side
    submit_ranking(store, engine, session, prompt, k, *answers_then_ranks)  -> one stored row, or a message
"""

from __future__ import annotations

import tempfile
import threading
import time
from functools import partial
from pathlib import Path

from ..feedback.pairs import MAX_K, MIN_K
from .params_panel import panel, to_params
from . import probs
from .queues import generate_queue, model_queue
from .render import error_text
from .values import as_int
from .session import WebSession, ensure

EXAMPLE_PROMPTS = [
    "Explain photosynthesis to a ten-year-old.",
    "Write a haiku about the sea.",
    "Give me three tips for a job interview.",
    "What is the difference between a list and a tuple in Python?",
    "How do I apologise to a friend I upset?",
]
# Varied enough that the k answers differ, calm enough that they stay on topic.
RANK_DEFAULTS = dict(temperature=0.8, top_p=0.95, max_tokens=96)
_STORE_LOCK = threading.Lock()  # check-then-write of a session's last submission is one step


def _check_k(k) -> int:
    return as_int("k", k, MIN_K, MAX_K)


def _check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt='' is not allowed; type or pick a prompt first")
    return prompt.strip()


def sample_choices(engine, prompt: str, params) -> list:
    """``params.n`` answers (``Choice``) to ``prompt``, sampled in one batched decode (``to_params(..., n=k)``)."""
    import gradio as gr

    from ..generation.scheduler import Busy

    try:
        return engine.chat(prompt, params).choices
    except Busy as exc:  # the model's batch queue is full: a message, not a traceback
        raise gr.Error(str(exc), print_exception=False) from None


def sample_answers(engine, prompt: str, params) -> list[str]:
    """The texts of ``sample_choices``.

    An answer the model ended at once is "" here: the page shows EMPTY_ANSWER as the box's placeholder,
    never as its text, so the placeholder cannot be stored as if the model had written it.
    """
    return [choice.text.strip() for choice in sample_choices(engine, prompt, params)]


EMPTY_ANSWER = "(empty answer)"


def _empty_note(answers) -> str:
    empty = [str(i + 1) for i, a in enumerate(answers) if not a]
    if not empty:
        return ""
    return (f" Answer {', '.join(empty)} came back empty (the model stopped at once): generate again, "
            "or type an answer yourself (it is then stored as written by you).")


def stats_text(store) -> str:
    """The store's counts, for everyone (its path is for admins: ``store_path_text``)."""
    counts = store.counts()
    return f"**{counts['rankings']}** rankings · **{counts['pairs']}** preference pairs stored"


def store_path_text(store) -> str:
    return f"The rankings store is `{store.path}`."


def generate_candidates(engine, session: WebSession | None, prompt: str, k, *param_values, pool=None):
    """Sample k answers from the model this visitor picked (``pool``: the app's ``EngineCache``).

    Returns (session, [answer box updates x MAX_K], [rank updates x MAX_K], status).
    """
    import gradio as gr

    from .pickers import engine_for, stored_as

    from .probs import logprob_params, remember_generated

    session = ensure(session)
    try:
        prompt, k = _check_prompt(prompt), _check_k(k)
        params = to_params(*param_values, n=k)
        chosen = engine_for(pool, engine, session, "rank")
    except (ValueError, RuntimeError, OSError) as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    choices = sample_choices(chosen, prompt, logprob_params(chosen, params))  # Show probabilities reads them
    answers = [c.text.strip() for c in choices]
    for i in range(MAX_K):
        if i < k:
            remember_generated(session, f"rank-{i}", chosen, [{"role": "user", "content": prompt}], answers[i],
                               choices[i], session.models.get("rank"))
        else:
            session.probs.pop(f"rank-{i}", None)
    session.rank_prompt, session.rank_answers, session.rank_params = prompt, tuple(answers), params.to_dict()
    session.rank_source = stored_as(engine, chosen)
    status = f"{k} answers sampled at temperature {params.temperature}. Give each a different rank (1 = best) and submit."
    if params.temperature == 0:
        status += " Temperature 0 gives identical answers: raise it for a useful ranking."
    status += _empty_note(answers)
    boxes = [gr.update(value=answers[i] if i < k else "", visible=i < k) for i in range(MAX_K)]
    ranks = [gr.update(value=None, visible=i < k) for i in range(MAX_K)]
    return session, *boxes, *ranks, status


def rank_probs(engine, session: WebSession | None, prompt: str, *answers_then_shows, pool=None):
    """Every answer's Show probabilities view: MAX_K answer texts, then MAX_K toggles -> (session, MAX_K views)."""
    from .probs import probs_view

    session = ensure(session)
    answers, shows = answers_then_shows[:MAX_K], answers_then_shows[MAX_K:]
    views = []
    for i, (answer, show) in enumerate(zip(answers, shows)):
        session, update = probs_view(engine, session, f"rank-{i}", show, answer=answer or "", prompt=prompt,
                                     pool=pool)
        views.append(update)
    return session, *views


def submit_ranking(store, engine, session: WebSession | None, prompt: str, k, *answers_then_ranks):
    """Store the ranking of the first k answers; a non-permutation is refused and stores nothing.

    ``answers_then_ranks`` is MAX_K answer texts followed by MAX_K ranks (None when unset).
    Returns (session, status, stats).
    """
    session = ensure(session)
    answers, ranks = list(answers_then_ranks[:MAX_K]), list(answers_then_ranks[MAX_K:])
    try:
        prompt, k = _check_prompt(prompt), _check_k(k)
        if len(ranks) != MAX_K:
            raise ValueError(f"expected {MAX_K} answers and {MAX_K} ranks, got {len(answers_then_ranks)} values")
        missing = [i + 1 for i in range(k) if ranks[i] in (None, "")]
        if missing:
            raise ValueError(f"ranks: answer(s) {', '.join(map(str, missing))} have no rank; "
                             f"give each of the {k} answers a different rank from 1 to {k}")
        answers = [a or "" for a in answers[:k]]
        generated = session.rank_prompt == prompt and tuple(answers) == session.rank_answers
        key = (prompt, tuple(answers), tuple(str(r) for r in ranks[:k]))
        with _STORE_LOCK:
            if session.last_stored and session.last_stored[0] == key:
                return session, f"Not stored again: this ranking is already stored as #{session.last_stored[1]}.", \
                    stats_text(store)
            model, adapter = (session.rank_source if generated and session.rank_source
                              else (engine.model_name, engine.adapter))
            ranking_id = store.add_ranking(
                prompt, answers, ranks[:k], model=model, adapter=adapter,
                params=session.rank_params if generated else {"answers": "typed or edited by the user"},
                session_id=session.id, source="rank",
            )
            session.last_stored = (key, ranking_id)
    except ValueError as exc:
        return session, f"Not stored: {error_text(exc)}", stats_text(store)
    from ..feedback.pairs import expand_ranking

    pairs = len(expand_ranking(prompt, answers, [int(r) for r in ranks[:k]]))  # equal answers give no pair
    return session, f"Stored ranking #{ranking_id} ({pairs} preference pairs).", stats_text(store)


_EXPORT_DIR: list = []  # one folder per process; old files in it are removed on each export


def export_pairs(store, format: str = "jsonl"):
    """Write the preference pairs to a temporary file for download; returns its path.

    Admins only: the web event is ``gradio_fn(..., "export")``, so the check runs on the server.
    """
    if not _EXPORT_DIR:
        _EXPORT_DIR.append(Path(tempfile.mkdtemp(prefix="gpt-demo-export-")))
    folder = _EXPORT_DIR[0]
    for old in folder.glob("preference_pairs-*"):
        if time.time() - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True)
    path = folder / f"preference_pairs-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}.{format}"
    store.export(path, format)
    return str(path)


def access_updates(store, access, user):
    """On page load, per user: (export button, the note under it, the store's path for admins)."""
    import gradio as gr

    can_export = access.allowed(user, "export")
    note = "" if can_export else (access.locked_note() or access.refusal(user, "export"))
    path = store_path_text(store) if access.allowed(user, "paths") else ""
    return (gr.update(interactive=can_export), gr.update(value=note, visible=bool(note)),
            gr.update(value=path, visible=bool(path)))


def build(engine, store, state, concurrency: int, access=None, pool=None, jobs: int = 2) -> dict:
    """The tab inside the current ``gr.Tab``; ``pool`` (the app's ``EngineCache``) feeds the model pickers."""
    import gradio as gr

    from .arena import ARENA_MODES, VERDICT_LABELS, arena_generate, arena_setup, leaderboard_view, vote
    from .pickers import labels, picker
    from .roles import Access, AccessHolder, gradio_fn

    access = access or AccessHolder(Access())

    gen = generate_queue(concurrency)  # the batch Chat and the Arena join too
    stats = gr.Markdown(stats_text(store), elem_id="rank-stats")
    with gr.Tabs():
        with gr.Tab("Rank k answers"):
            with gr.Row():
                prompt = gr.Dropdown(EXAMPLE_PROMPTS, value=None, allow_custom_value=True, scale=4,
                                     label="Prompt", info="Pick one or type your own.", elem_id="rank-prompt")
                k = gr.Slider(MIN_K, MAX_K, value=3, step=1, label="k answers", scale=1, elem_id="rank-k")
            params = panel(engine.defaults.replace(**RANK_DEFAULTS),
                           max_tokens_limit=min(engine.context_window, 1024))
            model_note = gr.Markdown("", elem_id="rank-model-note")
            picker(pool, engine, state, "rank", model_note)
            generate = gr.Button("Generate answers", variant="primary", elem_id="rank-generate")
            boxes, ranks, shows, views = [], [], [], []
            with gr.Row(equal_height=True):
                for i in range(MAX_K):
                    with gr.Column(min_width=220):
                        boxes.append(gr.Textbox(label=f"Answer {i + 1}", lines=8, max_lines=16, interactive=True,
                                                visible=i < 3, elem_id=f"rank-answer-{i}",
                                                placeholder=EMPTY_ANSWER))
                        ranks.append(gr.Dropdown([str(r) for r in range(1, MAX_K + 1)], value=None, label="Rank",
                                                 visible=i < 3, elem_id=f"rank-rank-{i}"))
                        shows.append(gr.Checkbox(False, label="Show probabilities", visible=i < 3,
                                                 elem_id=f"rank-show-probs-{i}"))
                        views.append(probs.view(f"rank-{i}"))
            submit = gr.Button("Submit ranking", variant="primary", elem_id="rank-submit")
            status = gr.Markdown("", elem_id="rank-status")
        with gr.Tab("Arena (A vs B)"):
            offered = labels(pool, engine)
            with gr.Row():
                a_mode = gr.Radio(list(ARENA_MODES), value="samples", label="Mode", scale=2, elem_id="arena-mode",
                                  info="samples: two of one model · named: you pick A and B · anonymous: a random "
                                       "pair, names shown after the vote")
                # custom values pass to arena_setup, which checks them against what is offered right now
                model_a = gr.Dropdown(offered, value=engine.model_name, label="Model A (samples: the model)",
                                      scale=2, elem_id="arena-model-a", allow_custom_value=True)
                model_b = gr.Dropdown(offered, value=offered[-1], label="Model B (named)", scale=2,
                                      elem_id="arena-model-b", allow_custom_value=True)
            a_setup_note = gr.Markdown("", elem_id="arena-setup-note")
            a_prompt = gr.Dropdown(EXAMPLE_PROMPTS, value=None, allow_custom_value=True, label="Prompt")
            a_params = panel(engine.defaults.replace(**RANK_DEFAULTS),
                             max_tokens_limit=min(engine.context_window, 1024))
            a_generate = gr.Button("Generate A and B", variant="primary")
            with gr.Row(equal_height=True):
                answer_a = gr.Textbox(label="A", lines=8, interactive=False, placeholder=EMPTY_ANSWER)
                answer_b = gr.Textbox(label="B", lines=8, interactive=False, placeholder=EMPTY_ANSWER)
            with gr.Row():
                buttons = {v: gr.Button(label) for v, label in VERDICT_LABELS.items()}
            a_status = gr.Markdown("", elem_id="arena-status")
            with gr.Accordion("Leaderboard", open=False):
                board_refresh = gr.Button("Refresh the leaderboard", size="sm", elem_id="leaderboard-refresh")
                board_table = gr.Markdown("", elem_id="leaderboard-table")
                board_plot = gr.Plot(label="Win rate: row beats column (ties count half)")
    locked = access.access.locked_note()
    with gr.Row():
        fmt = gr.Radio(["jsonl", "parquet"], value="jsonl", label="Export format", scale=1)
        export = gr.Button("Export preference pairs", scale=1, interactive=locked is None, elem_id="rank-export")
        download = gr.File(label="Download", scale=2)
    export_note = gr.Markdown(locked or "", visible=locked is not None, elem_id="rank-export-note")
    path_note = gr.Markdown("", visible=False, elem_id="rank-store-path")

    views_args = dict(fn=partial(rank_probs, engine, pool=pool), inputs=[state, prompt, *boxes, *shows],
                      outputs=[state, *views], api_name=False, show_progress="hidden", **model_queue(jobs))
    generate.click(partial(generate_candidates, engine, pool=pool), [state, prompt, k, *params],
                   [state, *boxes, *ranks, status], api_name="rank_generate", **gen).then(**views_args)
    k.change(lambda kk: [gr.update(visible=i < int(kk)) for i in range(MAX_K)] * 3
             + [gr.update() if i < int(kk) else gr.update(visible=False) for i in range(MAX_K)],
             [k], [*boxes, *ranks, *shows, *views], api_name=False, show_progress="hidden")
    for i, show in enumerate(shows):  # a toggle, or an edited answer (read back through the model)
        show.change(**{**views_args, "api_name": "rank_probs" if i == 0 else False})
        boxes[i].blur(**views_args)
    submit.click(partial(submit_ranking, store, engine), [state, prompt, k, *boxes, *ranks], [state, status, stats],
                 api_name="rank_submit", concurrency_limit=None)
    setup = partial(arena_setup, pool, engine)
    for i, control in enumerate((a_mode, model_a, model_b)):
        control.change(setup, [state, a_mode, model_a, model_b], [state, a_setup_note],
                       api_name="arena_setup" if i == 0 else False, show_progress="hidden")
    for box in (model_a, model_b):  # an adapter trained a minute ago is offered at once
        box.focus(lambda: gr.update(choices=labels(pool, engine)), None, box, api_name=False, show_progress="hidden")
    a_generate.click(partial(arena_generate, engine, pool=pool), [state, a_prompt, *a_params],
                     [state, answer_a, answer_b, a_status], api_name="arena_generate", **gen)
    board_refresh.click(partial(leaderboard_view, store), None, [board_table, board_plot], api_name="leaderboard",
                        concurrency_limit=None)
    for verdict, button in buttons.items():
        button.click(partial(vote, store, engine, verdict=verdict), [state], [state, a_status, stats],
                     api_name=f"arena_{verdict}", concurrency_limit=None)
    export.click(gradio_fn(partial(export_pairs, store), access, "export"), [fmt], [download], api_name="export_pairs")
    load = gradio_fn(partial(access_updates, store), access, pass_user=True)
    return {"load": [(load, None, [export, export_note, path_note])]}
