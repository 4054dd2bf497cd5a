"""Assemble the tabs into one ``gr.Blocks`` and serve it.

    >>> from gpt_demo.api import load_engine                 # doctest: +SKIP
    >>> from gpt_demo.web.app import build_app, launch       # doctest: +SKIP
    >>> app = build_app(load_engine())                       # doctest: +SKIP
    >>> launch(app, ServeConfig(port=0), block=False)        # doctest: +SKIP
"""

from __future__ import annotations

import sys

from .serve_config import ServeConfig

TITLE = "gpt-demo"


def _header(engine, engines=None) -> str:
    d = engine.describe()
    adapter = f" + adapter **{d['adapter']}**" if d.get("adapter") else ""
    memory = ""
    if engines is not None:  # each adapter model loaded for Compare is another copy of the weights
        memory = (f" · Compare keeps at most {engines.max_engines} adapter models loaded besides it, about "
                  f"{d['memory_footprint_mb']} MB each (GPT_DEMO_MAX_ENGINES)")
    return (f"# gpt-demo\nA real GPT-style chat model on your machine: **{d['model']}**{adapter} · "
            f"{d['device']} · quantization {d['quantization']} · context {d['context_window']} tokens · "
            f"{d['memory_footprint_mb']} MB{memory}")


def build_app(engine, *, store=None, settings=None, serve: ServeConfig | None = None):
    """The whole web app for ``engine``; ``store`` defaults to the rankings store under ``$GPT_DEMO_HOME``.

    ``serve`` sets the roles the page is built for (default: from the environment); ``launch`` then
    applies the roles of the config it actually serves with, so the two cannot disagree.
    """
    import gradio as gr

    from ..api import EngineCache
    from ..config import Settings
    from ..feedback import FeedbackStore
    from . import chat, embed, explain, moderate, probs, rank
    from .roles import Access, AccessHolder
    from .session import new_session

    settings = settings or getattr(engine, "settings", None) or Settings.from_env()
    serve = serve or ServeConfig.from_settings(settings)
    store = store or FeedbackStore.open(settings)
    access = AccessHolder(Access.from_serve(serve))
    engines = EngineCache(base=engine, settings=settings, progress=False)  # the base plus adapters for Compare
    loads, css = [], ""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        state = gr.State(new_session)
        gr.Markdown(_header(engine, engines if _train_tab() is not None else None))
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chat.build(engine, state, serve.concurrency, pool=engines, jobs=serve.jobs)
            with gr.Tab("Rank", id="rank"):
                loads += rank.build(engine, store, state, serve.concurrency, access=access, pool=engines,
                                    jobs=serve.jobs)["load"]
            with gr.Tab("Explain", id="explain"):
                explained = explain.build(engine, state, serve.jobs, pool=engines)
                loads += explained["load"]
            with gr.Tab("Embeddings", id="embed"):
                loads += embed.build(engine, serve.jobs)["load"]
            with gr.Tab("Moderation", id="moderate"):
                built = moderate.build()
                loads += built["load"]
                css += built["css"]
            train = _train_tab()
            if train is not None:
                with gr.Tab("Train", id="train"):
                    loads += train.build(engine, store, state, settings=settings, access=access, pool=engines,
                                         jobs=serve.jobs)["load"]
        probs.wire(engine, state, explained["next_token"], tabs, pool=engines)  # a token click opens Explain
        for fn, inputs, outputs, *queue in loads:  # fill the look-inside tabs once the page opens
            app.load(fn, inputs, outputs, api_name=False, show_progress="hidden", **(queue[0] if queue else {}))
    app.gpt_demo_css = css  # gradio 6 takes css at launch()
    app.gpt_demo_access = access
    app.gpt_demo_engines = engines
    return app


def _train_tab():
    """The Train tab's module when the training extra is installed, else None."""
    import importlib.util

    if importlib.util.find_spec("gpt_demo.web.train") is None or importlib.util.find_spec("peft") is None:
        return None
    from . import train

    return train


def launch(app, serve: ServeConfig | None = None, *, block: bool = True, quiet: bool = False):
    """Queue and serve ``app``; prints a warning when it is exposed without a password. Returns the local URL.

    The raters and admins of ``serve`` become the app's roles here, checked inside every guarded handler.
    """
    from .roles import Access

    serve = serve or ServeConfig()
    access = Access.from_serve(serve)
    if hasattr(app, "gpt_demo_access"):
        app.gpt_demo_access.access = access
    for note in (serve.warning(), access.locked_note() and access.locked_note().replace("`", "")):
        if note:
            print(note, file=sys.stderr, flush=True)
    app.queue(max_size=serve.max_queue, default_concurrency_limit=serve.concurrency)
    api = rest_api(app, serve)
    _, url, share_url = app.launch(
        # the REST API's routes come first, so /v1/... never reaches gradio's own routes or its login
        app_kwargs={"routes": [_mount("/v1", api)]} if api is not None else None,
        server_name=serve.host,
        server_port=serve.port or _free_port(serve.host),
        auth=serve.credentials,
        share=serve.share,
        prevent_thread_lock=not block,
        quiet=quiet,
        css=getattr(app, "gpt_demo_css", None),
        show_error=True,
        footer_links=["api", "settings"],
    )
    return share_url or url


def rest_api(app, serve: ServeConfig):
    """The OpenAI-compatible API (``gpt_demo.server``) over the app's engines, or None when ``serve.api`` is off.

    It shares the web app's engine cache (so an adapter loaded by Compare serves ``model=base:NAME``
    too) and takes its keys from ``serve``; with none it is open, like the page (a warning when
    exposed), except that a page behind logins never gets a keyless API beside it.
    """
    engines = getattr(app, "gpt_demo_engines", None)
    if not serve.api or engines is None:
        return None
    if engines.base is not None and engines.base.loaded is None:  # a remote backend: it has an API of its own
        print(f"NOTE: the REST API at /v1 is off: the model is served by {engines.base.backend}; point clients "
              "there.", file=sys.stderr, flush=True)
        return None
    if serve.credentials and not (serve.api_keys or serve.admin_api_keys):
        # An open /v1 beside a page behind logins would be a way round them.
        print("NOTE: the REST API at /v1 is off because the page has logins and the API has no key; "
              "add --api-key KEY (or GPT_DEMO_API_KEYS) to serve it.", file=sys.stderr, flush=True)
        return None
    from ..server import create_api
    from ..server.__main__ import warning

    note = warning("0.0.0.0" if serve.exposed else serve.host, serve.port, bool(serve.api_keys or serve.admin_api_keys))
    if note:
        print(note, file=sys.stderr, flush=True)
    return create_api(engines.base, engines.settings(), prefix="", cache=engines, api_keys=serve.api_keys,
                      admin_api_keys=serve.admin_api_keys, max_queue=serve.max_queue, exposed=serve.exposed)


def _mount(path: str, api):
    from starlette.routing import Mount

    return Mount(path, app=api)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0))
        return s.getsockname()[1]
