"""A remote OpenAI-compatible server as an engine: the same calls as ``gpt_demo.api.Engine``.

    >>> from gpt_demo.api import load_engine
    >>> remote = load_engine("openai:http://gpu-box:8000/v1#Qwen/Qwen2.5-7B-Instruct")   # doctest: +SKIP
    >>> remote.chat("Hi", temperature=0).text                                          # doctest: +SKIP
    >>> remote.attention("The animal didn't cross")                                   # doctest: +SKIP
    Traceback (most recent call last):
    CapabilityMissing: the backend openai:http://gpu-box:8000/v1#Qwen/... cannot show attention maps ...

Chat and completions (streamed or not), ``n``, ``best_of``, stops, penalties, seed, logprobs
and ``top_logprobs`` go to the server as OpenAI's fields. What the server lacks is made up
for here where that is exact, and refused by name where it is not:

- ``n`` on a server without it (llama.cpp, Ollama): ``n`` requests, seeds ``seed + i``.
- ``best_of``: ``best_of`` candidates with logprobs, the ``n`` with the highest log-probability
  per token kept (OpenAI's rule, as the local engine ranks); needs logprobs.
- the next-token table: a one-token ``/completions`` with ``logprobs`` (OpenAI's cap there
  is 5 alternatives, so at most 5 rows). Probabilities are the server's at temperature 1; at
  another temperature they are reshaped among the rows shown (the tail is unknown).
- ``embed(model="chat")``: the server's ``/embeddings`` for this model.
- attention, scoring a given answer, the sampling step-through and training need the weights:
  ``CapabilityMissing`` names the backend and the capability.

The key comes from the environment variable the backend kind names (``OPENAI_API_KEY`` for
``openai:``), or the one ``--api-key-env`` names; never from a flag's value.
"""

from __future__ import annotations

import math
from typing import Iterator

from ..api import Engine  # light: its heavy imports are inside its methods
from ..chat import RenderedPrompt
from ..generation.params import GenerationParams
from ..generation.results import Choice, Completion, TokenLogprob, TokenProb
from ..limits import Limits
from .capabilities import Capabilities, CapabilityMissing
from .http import JSONClient
from .registry import RemoteSpec, parse_spec

DEFAULT_CONTEXT = 8192  # shown when the server does not say (vLLM does: max_model_len)
LEGACY_TOP_LOGPROBS = 5  # OpenAI's cap on /completions logprobs


class RemoteEngine:
    """The ``Engine`` calls over an OpenAI-compatible server; see the module docstring."""

    def __init__(self, spec: RemoteSpec | str, *, api_key: str | None = None, settings=None,
                 defaults: GenerationParams | None = None, timeout: float = 120.0, retries: int = 3,
                 capabilities: Capabilities | None = None):
        from ..config import Settings

        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        self.settings = settings or Settings.from_env()
        self.limits: Limits = self.settings.limits
        self.defaults = defaults or GenerationParams()
        self.capabilities = capabilities or self.spec.kind.capabilities
        self.client = JSONClient(self.spec.base_url, api_key, timeout=timeout, retries=retries)
        self.reward_model = None
        self.loaded = None  # no weights here: code that needs them checks this
        self.scheduler = None
        self.batching = False
        listed = self.client.get("/models").get("data") or []  # also: is the server there at all?
        ids = [m.get("id") for m in listed if isinstance(m, dict)]
        if self.spec.model_id is None:
            if not ids:
                raise ValueError(f"the server at {self.spec.base_url} lists no models; give one as "
                                 f"{self.spec.scheme}:{self.spec.base_url}#MODEL")
            self.spec = RemoteSpec(self.spec.scheme, self.spec.base_url, ids[0])
        elif ids and self.spec.model_id not in ids:
            raise ValueError(f"model={self.spec.model_id!r} is not served at {self.spec.base_url}; it serves "
                             f"{', '.join(map(str, ids[:20]))}")
        entry = next((m for m in listed if isinstance(m, dict) and m.get("id") == self.spec.model_id), {})
        window = entry.get("max_model_len") or entry.get("context_length") or entry.get("context_window")
        self._window = int(window) if isinstance(window, int) and window > 0 else None

    # -- what is loaded -------------------------------------------------------------
    @property
    def backend(self) -> str:
        return str(self.spec)

    @property
    def model_name(self) -> str:
        """The name votes and rankings are stored under: the whole spec, so two servers never merge."""
        return str(self.spec)

    @property
    def adapter(self) -> None:
        return None

    @property
    def tokenizer(self):
        raise CapabilityMissing(self.backend, "tokenizer")

    @property
    def context_window(self) -> int:
        return self._window or DEFAULT_CONTEXT

    def describe(self) -> dict:
        return {"model": self.spec.model_id, "source": f"remote:{self.spec.base_url}", "backend": self.backend,
                "device": f"remote ({self.spec.scheme})", "quantization": "the server's", "decode": "on the server",
                "batching": "the server's", "adapter": None, "reward_model": None,
                "context_window": self.context_window if self._window else f"{DEFAULT_CONTEXT} (not reported)",
                "memory_footprint_mb": 0.0, "capabilities": self.capabilities.to_dict()}

    def close(self) -> None:
        """Nothing to stop: the server owns the model."""

    # -- parameters and prompts (the local engine's rules) -----------------------------
    params, conversation = Engine.params, Engine.conversation

    def render_chat(self, messages, params: GenerationParams, system: str | None = None) -> RenderedPrompt:
        """Check the messages against the limits; the server fits them to its own window (no ids here)."""
        conv = self.conversation(messages, system)
        self.limits.check_messages("messages", conv.messages)
        return RenderedPrompt([], 0, 0)

    # -- generation -----------------------------------------------------------------
    def _body(self, params: GenerationParams, n: int, seed: int | None) -> dict:
        body = {"model": self.spec.model_id, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_tokens, "n": n}
        if params.stop:
            body["stop"] = list(params.stop)
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(params, name):
                body[name] = getattr(params, name)
        if seed is not None:
            body["seed"] = seed
        return body

    def _requests(self, params: GenerationParams) -> list[tuple[int, int | None]]:
        """(n, seed) of each request: one with n on a server that has it, else n of one."""
        count = params.candidates
        if count == 1 or self.capabilities.n:
            return [(count, params.seed)]
        return [(1, None if params.seed is None else params.seed + i) for i in range(count)]

    def _check(self, params: GenerationParams, chat: bool) -> None:
        if params.logprobs or params.best_of is not None:
            self.capabilities.require("logprobs", self.backend)
        if params.top_logprobs > self.capabilities.top_logprobs:
            raise ValueError(f"top_logprobs={params.top_logprobs} is not allowed with {self.backend}; it gives at "
                             f"most {self.capabilities.top_logprobs}")
        if chat and params.inject_start_text:
            raise CapabilityMissing(self.backend, "prefill")

    def _chat_completion(self, messages: list[dict], params: GenerationParams) -> Completion:
        self._check(params, chat=True)
        extra = {"logprobs": True, "top_logprobs": params.top_logprobs} if _wants_logprobs(params) else {}
        return self._run("/chat/completions", {"messages": messages, **extra}, params,
                         lambda c: ((c.get("message") or {}).get("content"), _chat_tokens(c.get("logprobs"))))

    def _text_completion(self, prompt: str, params: GenerationParams) -> Completion:
        self._check(params, chat=False)
        if _wants_logprobs(params) and params.top_logprobs > LEGACY_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs={params.top_logprobs} is not allowed for completions with "
                             f"{self.backend}; /completions gives at most {LEGACY_TOP_LOGPROBS}")
        extra = {"logprobs": params.top_logprobs} if _wants_logprobs(params) else {}
        return self._run("/completions", {"prompt": prompt + params.inject_start_text, **extra}, params,
                         lambda c: (c.get("text"), _legacy_tokens(c.get("logprobs"))))

    def _run(self, path: str, fields: dict, params: GenerationParams, read) -> Completion:
        """POST ``fields`` (plus the parameters) once, or once per fanned-out answer; ``read(choice)`` gives
        (text, tokens or None). Logprobs asked for and not given: ``CapabilityMissing``."""
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for n, seed in self._requests(params):
            reply = self.client.post(path, {**self._body(params, n, seed), **fields})
            usage = reply.get("usage") or {}
            prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
            completion_tokens += usage.get("completion_tokens", 0)
            for c in reply.get("choices") or []:
                text, tokens = read(c)
                if _wants_logprobs(params) and tokens is None:
                    raise CapabilityMissing(self.backend, "logprobs")
                choices.append(_choice(len(choices), text or "", c.get("finish_reason"), tokens, params.logprobs))
        return self._finish(choices, params, prompt_tokens, completion_tokens)

    def _finish(self, choices: list[Choice], params: GenerationParams, prompt_tokens: int,
                completion_tokens: int) -> Completion:
        if params.best_of is not None:
            from ..generation.decoding import select_best

            choices = select_best(choices, params.n, None)
        for i, choice in enumerate(choices):
            choice.index = i
            choice.text = params.inject_start_text + choice.text + params.inject_restart_text
        return Completion(choices=choices, prompt_tokens=prompt_tokens, model=self.model_name,
                          seed=params.seed, reported_completion_tokens=completion_tokens)

    def chat(self, messages, params=None, *, system: str | None = None, **overrides) -> Completion:
        """Answer ``messages`` on the server (``/chat/completions``)."""
        params = self.params(params, **overrides)
        self.render_chat(messages, params, system)
        return self._chat_completion(self.conversation(messages, system).messages, params)

    def stream_chat(self, messages, params=None, *, system: str | None = None, **overrides) -> Iterator[str]:
        """Text deltas of choice 0 as the server streams them."""
        params = self.params(params, **overrides)
        self.render_chat(messages, params, system)
        self._check(params, chat=True)
        messages = self.conversation(messages, system).messages
        if params.candidates > 1 or not self.capabilities.stream:  # the winner is known only at the end
            return _whole(self._chat_completion(messages, params))
        body = {**self._body(params, 1, params.seed), "messages": messages, "stream": True}
        if params.logprobs:  # in the chunks; gathered into the Completion the stream returns
            body.update(logprobs=True, top_logprobs=params.top_logprobs)
        return self._deltas(self.client.stream("/chat/completions", body), params,
                            lambda c: (c.get("delta") or {}).get("content"), _chat_tokens)

    def complete(self, prompt: str, params=None, **overrides) -> Completion:
        """Continue ``prompt`` as raw text on the server (``/completions``)."""
        params = self.params(params, **overrides)
        self.limits.check_text("prompt", prompt)
        return self._text_completion(prompt, params)

    def stream_complete(self, prompt: str, params=None, **overrides) -> Iterator[str]:
        params = self.params(params, **overrides)
        self.limits.check_text("prompt", prompt)
        self._check(params, chat=False)
        if params.candidates > 1 or not self.capabilities.stream:
            return _whole(self._text_completion(prompt, params))
        if params.logprobs and params.top_logprobs > LEGACY_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs={params.top_logprobs} is not allowed for completions with "
                             f"{self.backend}; /completions gives at most {LEGACY_TOP_LOGPROBS}")
        body = {**self._body(params, 1, params.seed), "prompt": prompt + params.inject_start_text, "stream": True}
        if params.logprobs:
            body["logprobs"] = params.top_logprobs
        gen = self._deltas(self.client.stream("/completions", body), params, lambda c: c.get("text"), _legacy_tokens)
        return _prefixed(params.inject_start_text, gen)

    def _deltas(self, events, params: GenerationParams, text_of, tokens_of) -> Iterator[str]:
        """Choice 0's text as it streams; returns its ``Completion`` (logprobs gathered from the chunks)."""
        parts: list[str] = []
        tokens: list[TokenLogprob] = []
        finish = None
        for event in events:
            for c in event.get("choices") or []:
                if c.get("index", 0) != 0:
                    continue
                tokens.extend(tokens_of(c.get("logprobs")) or [])
                finish = c.get("finish_reason") or finish
                if text_of(c):
                    parts.append(text_of(c))
                    yield parts[-1]
        if params.inject_restart_text:
            yield params.inject_restart_text
        text = params.inject_start_text + "".join(parts) + params.inject_restart_text
        choice = _choice(0, text, finish, tokens or None, keep=params.logprobs)
        return Completion(choices=[choice], model=self.model_name, seed=params.seed)

    # -- looking inside -------------------------------------------------------------
    def next_tokens(self, text: str, top_k: int = 10, temperature: float = 1.0) -> list[TokenProb]:
        """The most likely next tokens after raw ``text``, from a one-token completion's logprobs (at most 5)."""
        self.capabilities.require("next_tokens", self.backend)
        if not isinstance(text, str) or not text:
            raise ValueError(f"text={text!r} is not allowed; give a non-empty string")
        self.limits.check_text("text", text)
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k={top_k!r} is out of range; allowed: top_k >= 1")
        if not 0 <= temperature <= 2:
            raise ValueError(f"temperature={temperature!r} is out of range; allowed: 0 <= temperature <= 2")
        k = min(top_k, LEGACY_TOP_LOGPROBS)
        reply = self.client.post("/completions", {"model": self.spec.model_id, "prompt": text, "max_tokens": 1,
                                                  "temperature": 0, "logprobs": k})
        choices = reply.get("choices") or [{}]
        tops = _legacy_tokens(choices[0].get("logprobs"))
        if not tops:
            raise CapabilityMissing(self.backend, "next_tokens")
        rows = sorted(tops[0].top_logprobs or [(tops[0].token, tops[0].logprob)], key=lambda r: -r[1])[:k]
        if temperature in (0, 1):
            probs = [math.exp(lp) for _, lp in rows]
            if temperature == 0:  # all the mass on the most likely token
                probs = [1.0] + [0.0] * (len(rows) - 1)
        else:  # reshaped among the rows shown: their share of the unknown tail is not known
            weights = [math.exp(lp / temperature) for _, lp in rows]
            shown = sum(math.exp(lp) for _, lp in rows)
            probs = [shown * w / sum(weights) for w in weights]
        return [TokenProb(token=t, token_id=-1, prob=p, logprob=math.log(p) if p > 0 else float("-inf"))
                for (t, _), p in zip(rows, probs)]

    def embeddings(self, texts: list[str]) -> list[list[float]]:
        """The server's ``/embeddings`` of ``texts`` for this model (``embed(model="chat")`` lands here)."""
        self.capabilities.require("embeddings", self.backend)
        reply = self.client.post("/embeddings", {"model": self.spec.model_id, "input": list(texts)})
        rows = sorted(reply.get("data") or [], key=lambda r: r.get("index", 0))
        if len(rows) != len(texts):
            raise ValueError(f"the server at {self.spec.base_url} returned {len(rows)} embeddings for "
                             f"{len(texts)} texts")
        return [r["embedding"] for r in rows]

    def _local_only(self, capability: str):
        raise CapabilityMissing(self.backend, capability)

    def step(self, *args, **kwargs):
        self._local_only("step")

    def attention(self, *args, **kwargs):
        self._local_only("attention")

    def strongest_heads(self, *args, **kwargs):
        self._local_only("attention")

    def score(self, *args, **kwargs):
        self._local_only("score")

    def score_answer(self, *args, **kwargs):  # ask for logprobs=True, top_logprobs=5 when generating instead
        self._local_only("score")

    def prompt_text(self, *args, **kwargs):  # the chat template is the server's
        self._local_only("tokenizer")

    # -- embeddings (MiniLM here; model="chat" through embeddings()), moderation: the local engine's own --
    embed, search, project, analogy = Engine.embed, Engine.search, Engine.project, Engine.analogy
    moderate, gate = Engine.moderate, Engine.gate


def _wants_logprobs(params: GenerationParams) -> bool:
    return params.logprobs or params.best_of is not None  # best_of ranks by them


def _prefixed(prefix: str, gen: Iterator[str]) -> Iterator[str]:
    if prefix:
        yield prefix
    return (yield from gen)


def _whole(completion: Completion) -> Iterator[str]:
    """A stream of one delta, the whole answer, that returns its ``Completion`` like the others."""
    yield completion.text
    return completion


def _chat_tokens(logprobs: dict | None) -> list[TokenLogprob] | None:
    """Chat logprobs ({"content": [{token, logprob, top_logprobs: [{token, logprob}]}]}) as ours."""
    if not isinstance(logprobs, dict) or logprobs.get("content") is None:
        return None
    return [TokenLogprob(token=t.get("token", ""), token_id=-1, logprob=float(t.get("logprob", 0.0)),
                         top_logprobs=[(a.get("token", ""), float(a.get("logprob", 0.0)))
                                       for a in t.get("top_logprobs") or []])
            for t in logprobs["content"]]


def _legacy_tokens(logprobs: dict | None) -> list[TokenLogprob] | None:
    """Completions logprobs ({tokens, token_logprobs, top_logprobs: [{token: logprob}]}) as ours."""
    if not isinstance(logprobs, dict) or logprobs.get("tokens") is None:
        return None
    tops = logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"])
    return [TokenLogprob(token=t, token_id=-1, logprob=float(lp if lp is not None else 0.0),
                         top_logprobs=sorted(((a, float(b)) for a, b in (top or {}).items()), key=lambda r: -r[1]))
            for t, lp, top in zip(logprobs["tokens"], logprobs.get("token_logprobs") or [], tops)]


def _choice(index: int, text: str, finish_reason, tokens: list[TokenLogprob] | None, keep: bool) -> Choice:
    """One answer; ``tokens`` (when the server gave them) give its length and log-probability."""
    total = sum(t.logprob for t in tokens) if tokens else 0.0
    ids = [-1] * len(tokens) if tokens else []  # the server's token ids are not in OpenAI's answer
    return Choice(index=index, text=text, token_ids=ids, finish_reason=finish_reason or "stop",
                  total_logprob=total, logprobs=tokens if keep else None)
