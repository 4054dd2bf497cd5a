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


def _header(engine) -> str:
    d = engine.describe()
    adapter = f" + adapter **{d['adapter']}**" if d.get("adapter") else ""
    return (f"# gpt-demo\nA real GPT-style chat model on your machine: **{d['model']}**{adapter} · "
            f"{d['device']} · quantization {d['quantization']} · context {d['context_window']} tokens · "
            f"{d['memory_footprint_mb']} MB")


def build_app(engine, *, store=None, settings=None, serve: ServeConfig | None = None):
    """The whole web app for ``engine``; ``store`` defaults to the rankings store under ``$GPT_DEMO_HOME``."""
    import gradio as gr

    from ..config import Settings
    from ..feedback import FeedbackStore
    from . import chat, embed, explain, moderate, rank
    from .session import new_session

    serve = serve or ServeConfig()
    settings = settings or Settings.from_env()
    store = store or FeedbackStore.open(settings)
    loads, css = [], ""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        state = gr.State(new_session)
        gr.Markdown(_header(engine))
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat.build(engine, state, serve.concurrency)
            with gr.Tab("Rank", id="rank"):
                rank.build(engine, store, state, serve.concurrency)
            with gr.Tab("Explain", id="explain"):
                loads += explain.build(engine, state)["load"]
            with gr.Tab("Embeddings", id="embed"):
                loads += embed.build(engine)["load"]
            with gr.Tab("Moderation", id="moderate"):
                built = moderate.build()
                loads += built["load"]
                css += built["css"]
            train = _train_tab()
            if train is not None:
                with gr.Tab("Train", id="train"):
                    train.build(engine, store, state, settings=settings)
        for fn, inputs, outputs in loads:  # fill the look-inside tabs once the page opens
            app.load(fn, inputs, outputs, api_name=False, show_progress="hidden")
    app.gpt_demo_css = css  # gradio 6 takes css at launch()
    return app


def _train_tab():
    """The Train tab's module when the training extra is installed, else None."""
    import importlib.util

    if importlib.util.find_spec("gpt_demo.web.train") is None or importlib.util.find_spec("peft") is None:
        return None
    from . import train

    return train


def launch(app, serve: ServeConfig | None = None, *, block: bool = True, quiet: bool = False):
    """Queue and serve ``app``; prints a warning when it is exposed without a password. Returns the local URL."""
    serve = serve or ServeConfig()
    warning = serve.warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    app.queue(max_size=serve.max_queue, default_concurrency_limit=serve.concurrency)
    _, url, share_url = app.launch(
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


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0))
        return s.getsockname()[1]
