"""The Arena: two answers side by side, a vote, and a leaderboard of the models that wrote them.

    arena_setup(pool, engine, session, mode, model_a, model_b)  -> which models the next battle uses
    arena_generate(engine, session, prompt, *param_values, pool=)  -> answers A and B (names hidden)
    vote(store, engine, session, verdict)                          -> the stored vote, names revealed
    leaderboard_view(store)                                        -> a Markdown table and a win-rate figure

Three modes, as FastChat's arena has them:

- ``samples``: two samples of one model (the picker's), for preference pairs; stored as a
  comparison of that model with itself.
- ``named``: the visitor picks A and B (two different models).
- ``anonymous``: a random pair of two different models from everything the pickers offer, in a
  random order. Neither the answers' labels nor any response names them until the vote; the
  vote's answer reveals both.

A vote between two models is a battle (``FeedbackStore.add_battle``, with both model ids and
whether the names were hidden), which ``feedback.leaderboard`` ranks by Bradley-Terry with
bootstrap intervals and by online Elo.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

from .pickers import labels, resolve, stored_as
from .render import error_text
from .session import WebSession, ensure

ARENA_MODES = ("samples", "named", "anonymous")
VERDICT_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}
_STORE_LOCK = threading.Lock()  # a vote takes the answers on show exactly once
_RNG = random.SystemRandom()  # the anonymous pairs are not for the visitor to predict


def _check_mode(mode: str) -> str:
    if mode not in ARENA_MODES:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of {', '.join(ARENA_MODES)}")
    return mode


def arena_setup(pool, engine, session: WebSession | None, mode: str, model_a: str | None, model_b: str | None):
    """``/arena_setup``: the mode and (for named) the two models; returns (session, status)."""
    import gradio as gr

    session = ensure(session)
    try:
        mode = _check_mode(mode)
        offered = labels(pool, engine)
        a = model_a or engine.model_name
        b = model_b or engine.model_name
        for name, label in (("model_a", a), ("model_b", b)):
            if label not in offered:
                raise ValueError(f"{name}={label!r} is not one of the models here; choose one of {', '.join(offered)}")
        if mode == "named" and a == b:
            raise ValueError(f"model_b={b!r} is not allowed: it is model_a too; pick two different models "
                             "(or mode=samples for two samples of one)")
        if mode == "anonymous" and len(offered) < 2:
            raise ValueError("mode='anonymous' needs at least two models: train an adapter or add a remote model")
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    session.models["arena_mode"], session.models["arena_a"], session.models["arena_b"] = mode, a, b
    session.arena = None  # answers from another setup are not voted on
    notes = {"samples": f"Two samples of **{a}**.", "named": f"A is **{a}**, B is **{b}**.",
             "anonymous": "Two different models, picked at random; their names show after your vote."}
    return session, notes[mode]


def _pair(pool, engine, session: WebSession) -> tuple[str, str, bool, str]:
    """(label A, label B, anonymous, mode) for the next battle."""
    mode = session.models.get("arena_mode", "samples")
    a = session.models.get("arena_a") or engine.model_name
    b = session.models.get("arena_b") or engine.model_name
    if mode == "anonymous":
        a, b = _RNG.sample(labels(pool, engine), 2)
    return a, (a if mode == "samples" else b), mode == "anonymous", mode


def _both(pool, engine, pair: tuple[str, str], prompt: str, params, anonymous: bool) -> tuple[str, str]:
    """One answer from each model of ``pair``, at the same time (each joins its own model's batch).

    In a blind battle a failure says which side failed and nothing else: a remote's error names its
    URL, an adapter's its name. The detail goes to the server's log.
    """
    import sys

    from .rank import sample_answers

    def one(label: str) -> str:
        return sample_answers(resolve(pool, engine, label), prompt, params)[0]

    with ThreadPoolExecutor(2) as both:
        futures = [both.submit(one, label) for label in pair]
    answers = []
    for side, label, future in zip("AB", pair, futures):
        try:
            answers.append(future.result())
        except Exception as exc:  # noqa: BLE001 - every failure of a blind side is reported the same way
            if not anonymous:
                if isinstance(exc, (ValueError, RuntimeError, OSError)):
                    raise ValueError(f"model {side} ({label}) failed: {error_text(exc)}") from None
                raise
            print(f"arena: anonymous model {side} ({label}) failed: {exc!r}", file=sys.stderr)
            raise ValueError(f"model {side} could not answer this time; generate again") from None
    return answers[0], answers[1]


def arena_generate(engine, session: WebSession | None, prompt: str, *param_values, pool=None):
    """Two answers for the arena. Returns (session, answer A, answer B, status); no model is named here."""
    import gradio as gr

    from .params_panel import to_params
    from .rank import _check_prompt, sample_answers

    session = ensure(session)
    source = None
    try:
        prompt = _check_prompt(prompt)
        a_label, b_label, anonymous, mode = _pair(pool, engine, session)
        if mode == "samples":
            params = to_params(*param_values, n=2)
            one = resolve(pool, engine, a_label)
            a, b = sample_answers(one, prompt, params)
            source = stored_as(engine, one)
        else:
            params = to_params(*param_values)
            a, b = _both(pool, engine, (a_label, b_label), prompt, params, anonymous)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    with _STORE_LOCK:  # a vote that comes now sees these answers with their own models, never a mix
        session.arena, session.arena_prompt, session.arena_params = (a, b), prompt, params.to_dict()
        session.arena_models, session.arena_anonymous = (a_label, b_label), anonymous
        session.arena_source = source
    if not a or not b:  # an empty answer cannot be stored; a vote on it would be refused
        session.arena = None
        empty = " and ".join(name for name, text in (("A", a), ("B", b)) if not text)
        return session, a, b, f"{empty} came back empty (the model stopped at once): generate again to vote."
    ask = "Which answer is better?"
    if mode == "anonymous":
        ask += " The models' names show after your vote."
    elif mode == "named":
        ask += f" (A: {a_label}, B: {b_label})"
    return session, a, b, ask


def vote(store, engine, session: WebSession | None, verdict: str):
    """Store the verdict (a | b | tie | both_bad) for the answers on show. Returns (session, status, stats)."""
    from .rank import stats_text

    session = ensure(session)
    with _STORE_LOCK:  # two quick clicks: the first takes the answers, the second finds none
        arena, session.arena = session.arena, None
    if arena is None:
        return session, "Not stored: generate two answers first.", stats_text(store)
    a_label, b_label = session.arena_models or (engine.model_name, engine.model_name)
    try:
        if a_label != b_label:
            ranking_id = store.add_battle(session.arena_prompt, *arena, verdict, model_a=a_label, model_b=b_label,
                                          anonymous=session.arena_anonymous, params=session.arena_params,
                                          session_id=session.id)
        else:
            model, adapter = getattr(session, "arena_source", None) or (engine.model_name, engine.adapter)
            ranking_id = store.add_comparison(session.arena_prompt, *arena, verdict, model=model, adapter=adapter,
                                              params=session.arena_params, session_id=session.id)
    except ValueError as exc:
        session.arena = arena  # nothing stored: the vote can be given again
        return session, f"Not stored: {error_text(exc)}", stats_text(store)
    reveal = f" A was **{a_label}**, B was **{b_label}**." if a_label != b_label else ""
    return session, f"Stored vote #{ranking_id}: {VERDICT_LABELS[verdict]}.{reveal}", stats_text(store)


def leaderboard_view(store, bootstrap: int = 200):
    """(Markdown table, win-rate figure or None) over the stored cross-model battles."""
    from ..feedback.leaderboard import leaderboard, plot_win_rates

    battles = store.battles()
    if not battles:
        return ("No battles between two models yet: vote in the Arena in *named* or *anonymous* mode.", None)
    board = leaderboard(battles, bootstrap=bootstrap, seed=0)
    return board.to_markdown(), plot_win_rates(board)
