"""The model pickers of Chat, Rank, Arena and Explain: the base, each adapter, each configured remote.

    >>> from types import SimpleNamespace
    >>> labels(None, SimpleNamespace(model_name="smollm2-135m-instruct"))
    ['smollm2-135m-instruct']

A picker's choice lives in the visitor's session (``WebSession.models[tab]``), set by its own
event (``/chat_model``, ``/rank_model``, ...), so the generation endpoints keep their inputs and
an API client picks a model the way the page does. Choices are read again when a picker gets
focus, so an adapter a training job just wrote, or a remote an admin just added, is there
without a restart. Engines come from the app's one ``EngineCache`` (an adapter or a remote
loads once, bounded by ``GPT_DEMO_MAX_ENGINES``).
"""

from __future__ import annotations


def _settings(pool, engine):
    if pool is not None:
        return pool.settings()
    from ..config import Settings

    return getattr(engine, "settings", None) or Settings.from_env()


def labels(pool, engine) -> list[str]:
    """What the pickers offer, base first (only the base when there is no pool to load others from)."""
    if pool is None:
        return [engine.model_name]
    from ..backends.catalog import catalog

    return [c.label for c in catalog(_settings(pool, engine), engine.model_name)]


def resolve(pool, engine, label: str | None):
    """The engine for ``label`` (None or the base's name: ``engine`` itself); unknown labels are named."""
    if not label or label == engine.model_name or pool is None:
        return engine
    from ..backends.catalog import find

    choice = find(_settings(pool, engine), engine.model_name, label)
    if choice.kind == "adapter":
        return pool.with_adapter(choice.adapter)
    if choice.kind == "remote":
        return pool.get(model=choice.spec)
    return engine


def choose(pool, engine, session, label: str, tab: str):
    """``/<tab>_model``: check and load ``label`` for this visitor's ``tab``; returns (session, note)."""
    import gradio as gr

    from .render import error_text
    from .session import ensure

    session = ensure(session)
    try:
        chosen = resolve(pool, engine, label)
    except (ValueError, RuntimeError, OSError) as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    session.models[tab] = label if chosen is not engine else None
    where = "" if getattr(chosen, "backend", "local") == "local" else " (a remote server)"  # its URL stays private
    return session, f"Model: **{label or engine.model_name}**{where}."


def stored_as(engine, chosen) -> tuple[str, str | None]:
    """(model, adapter) a ranking or vote by ``chosen`` is stored under: the base's name and the adapter
    for a local model (an adapter engine's own name is its cache file's), a remote's own name."""
    return (engine.model_name if chosen.loaded is not None else chosen.model_name), chosen.adapter


def engine_for(pool, engine, session, tab: str):
    """The engine this visitor's ``tab`` picked (the base unless they picked another)."""
    label = getattr(session, "models", {}).get(tab) if session is not None else None
    return resolve(pool, engine, label)


def picker(pool, engine, state, tab: str, note, then=None):
    """A Model dropdown wired to ``/<tab>_model``; None when there is nothing to pick from."""
    from functools import partial

    import gradio as gr

    if pool is None:
        return None
    box = gr.Dropdown(labels(pool, engine), value=engine.model_name, label="Model", elem_id=f"{tab}-model",
                      info="the base, its adapters, configured remotes",
                      allow_custom_value=True)  # checked by choose(), which names what there is: the list
                                                 # grows while the page is open (a new adapter)
    box.focus(lambda: gr.update(choices=labels(pool, engine)), None, box, api_name=False, show_progress="hidden")
    chosen = box.change(partial(choose, pool, engine, tab=tab), [state, box], [state, note], api_name=f"{tab}_model",
                        show_progress="hidden")
    if then is not None:  # (fn(label), outputs) once the choice has loaded: e.g. the chatbot's label
        fn, outputs = then
        chosen.success(fn, [box], outputs, api_name=False, show_progress="hidden")
    return box
