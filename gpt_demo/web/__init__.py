"""The Gradio web app: ``build_app(engine)`` returns the Blocks; ``launch(config)`` serves it.

    >>> from gpt_demo.web import build_app          # doctest: +SKIP
    >>> from gpt_demo.api import load_engine        # doctest: +SKIP
    >>> build_app(load_engine()).launch()           # doctest: +SKIP

Importing this package imports nothing heavy; gradio loads with ``build_app``.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("build_app", "launch"):
        from . import app

        return getattr(app, name)
    if name == "ServeConfig":
        from .serve_config import ServeConfig

        return ServeConfig
    raise AttributeError(f"module 'gpt_demo.web' has no attribute {name!r}")
