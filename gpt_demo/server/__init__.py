"""OpenAI's REST protocol over ``gpt_demo.api``, so any OpenAI client talks to the local model.

    python -m gpt_demo.server --port 8000 --api-key sk-local       # the API alone

    >>> from openai import OpenAI                                        # doctest: +SKIP
    >>> client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="sk-local")  # doctest: +SKIP
    >>> client.moderations.create(input="I want to kill him").results[0].categories.violence  # doctest: +SKIP
    True

``create_api(engine)`` builds the FastAPI app (see ``gpt_demo.server.app``); the core never
imports this package or fastapi. Modules: ``app`` (routes, auth, body limits), ``fields``
(request fields as OpenAI defines them), ``generate`` (chat and text completions, the stream
contract), ``models`` (model ids, embeddings, moderation), ``gate`` (bounded concurrency and
queue, streams in a worker thread), ``errors`` (OpenAI's error envelope for every error).
"""


def create_api(engine, settings=None, **kwargs):
    """The FastAPI app of OpenAI's routes over ``engine``; see ``gpt_demo.server.app.create_api``."""
    from .app import create_api as _create_api

    return _create_api(engine, settings, **kwargs)


__all__ = ["create_api"]
