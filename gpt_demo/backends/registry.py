"""Backends by name: one table of the remote kinds, and the ``SCHEME:URL#MODEL`` spec that picks one.

    >>> spec = parse_spec("openai:http://gpu-box:8000/v1#meta-llama/Llama-3.1-8B-Instruct")
    >>> spec.scheme, spec.base_url, spec.model_id
    ('openai', 'http://gpu-box:8000/v1', 'meta-llama/Llama-3.1-8B-Instruct')
    >>> parse_spec("ollama:llama3.2").base_url           # a kind's usual address when none is given
    'http://localhost:11434/v1'
    >>> is_remote("smollm2-135m-instruct"), is_remote("vllm:#Qwen/Qwen2.5-7B-Instruct")
    (False, True)

Every kind speaks OpenAI's protocol; they differ in their usual address, the environment
variable that usually holds their key, and what they can do (``Capabilities``). A new kind
is one row of ``REMOTE_KINDS``. ``MODEL`` may be left out (``openai:http://host:8080/v1``):
the server's first model in ``/v1/models`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .capabilities import Capabilities

MAX_SPEC_CHARS = 2_000


@dataclass(frozen=True)
class RemoteKind:
    """One kind of OpenAI-compatible server."""

    name: str
    help: str
    default_url: str | None = None  # None: the spec must give one
    key_env: str | None = None  # the variable the key is read from unless --api-key-env names another
    capabilities: Capabilities = field(default_factory=Capabilities.remote)


REMOTE_KINDS: dict[str, RemoteKind] = {k.name: k for k in (
    RemoteKind("openai", "any OpenAI-compatible server (OpenAI itself, TGI, LM Studio, LiteLLM, ...)",
               key_env="OPENAI_API_KEY"),
    # the key variables are the ones those servers read for their own --api-key
    RemoteKind("vllm", "vLLM's server (`vllm serve MODEL`)", "http://localhost:8000/v1", key_env="VLLM_API_KEY",
               capabilities=Capabilities.remote(embeddings=False)),
    RemoteKind("llamacpp", "llama.cpp's llama-server or llama-cpp-python's server", "http://localhost:8080/v1",
               key_env="LLAMA_API_KEY", capabilities=Capabilities.remote(n=False, embeddings=False)),
    RemoteKind("ollama", "Ollama (`ollama serve`; a proxy in front may want a key)", "http://localhost:11434/v1",
               key_env="OLLAMA_API_KEY",
               capabilities=Capabilities.remote(n=False, logprobs=False, next_tokens=False)),
    RemoteKind("gpt-demo", "another gpt-demo (`gpt-demo serve --api-only`)", "http://127.0.0.1:7860/v1",
               key_env="GPT_DEMO_REMOTE_KEY"),
)}


@dataclass(frozen=True)
class RemoteSpec:
    """A parsed ``SCHEME:URL#MODEL``."""

    scheme: str
    base_url: str
    model_id: str | None  # None: the server's first model

    @property
    def kind(self) -> RemoteKind:
        return REMOTE_KINDS[self.scheme]

    def __str__(self) -> str:
        return f"{self.scheme}:{self.base_url}" + (f"#{self.model_id}" if self.model_id else "")


def is_remote(model: str | None) -> bool:
    """True when ``model`` names a remote backend (``SCHEME:...`` with a known scheme)."""
    if not isinstance(model, str) or ":" not in model:
        return False
    return model.split(":", 1)[0] in REMOTE_KINDS


def parse_spec(spec: str) -> RemoteSpec:
    """``SCHEME:URL#MODEL``, ``SCHEME:#MODEL`` or ``SCHEME:MODEL`` (the kind's usual URL), ``SCHEME:URL``."""
    if not isinstance(spec, str) or len(spec) > MAX_SPEC_CHARS or ":" not in spec:
        raise ValueError(f"model={str(spec)[:100]!r} is not a remote model; give SCHEME:URL#MODEL with SCHEME one "
                         f"of {', '.join(REMOTE_KINDS)}")
    scheme, rest = spec.split(":", 1)
    if scheme not in REMOTE_KINDS:
        raise ValueError(f"model={spec!r}: the backend {scheme!r} is not known; choose one of "
                         f"{', '.join(REMOTE_KINDS)}")
    kind = REMOTE_KINDS[scheme]
    url, _, model_id = rest.partition("#")
    if url and "://" not in url and not model_id:  # ollama:llama3.2 (a model, not a URL)
        url, model_id = "", url
    url = url or kind.default_url or ""
    if not url:
        raise ValueError(f"model={spec!r}: the {scheme} backend needs a URL; give {scheme}:http://HOST:PORT/v1#MODEL")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"model={spec!r}: the URL {url!r} is not allowed; it must start with http:// or https://")
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.username or parts.password or parts.query or parts.fragment or not parts.hostname:
        raise ValueError(f"model={spec!r}: the URL {url!r} is not allowed; give scheme://host:port/path only "
                         "(no user:password@, no ?query; the key comes from an environment variable)")
    model_id = model_id.strip() or None
    return RemoteSpec(scheme, url.rstrip("/"), model_id)
