"""Backends: where tokens come from. The local engine (``gpt_demo.api.Engine``) or a remote server.

    >>> from gpt_demo.backends import parse_spec, is_remote
    >>> is_remote("llamacpp:http://127.0.0.1:8080/v1")
    True

- ``capabilities``: ``Capabilities`` (what a backend can do) and ``CapabilityMissing``, the
  one error every front-end shows when it cannot (a ``ValueError``: the web app shows it as a
  message, the CLI as ``error: ...``, the notebook as an error box).
- ``registry``: the table of remote kinds (openai, vllm, llamacpp, ollama, gpt-demo) and the
  ``SCHEME:URL#MODEL`` spec.
- ``http``: the stdlib JSON / server-sent-events client, with timeouts, retries on 429/503 and
  the server's own error message in ``RemoteError``.
- ``remote``: ``RemoteEngine``, the ``Engine`` calls over an OpenAI-compatible server.

``gpt_demo.api.load_engine("openai:http://host:8000/v1#MODEL")`` is how front-ends get one.
"""

from .capabilities import Capabilities, CapabilityMissing
from .registry import REMOTE_KINDS, RemoteSpec, is_remote, parse_spec

__all__ = ["Capabilities", "CapabilityMissing", "REMOTE_KINDS", "RemoteSpec", "is_remote", "parse_spec"]
