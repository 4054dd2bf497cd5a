"""The one façade that every front-end (CLI, web app, notebook) calls.

    >>> from gpt_demo.api import load_engine
    >>> engine = load_engine()                                    # doctest: +SKIP
    >>> engine.chat("What is the capital of France?", temperature=0).text   # doctest: +SKIP
    'The capital of France is Paris.'
    >>> for delta in engine.stream_chat("Tell me a joke", max_tokens=40):   # doctest: +SKIP
    ...     print(delta, end="")
    >>> engine.next_tokens("The best thing about AI is its ability to", top_k=5)  # doctest: +SKIP
    >>> from gpt_demo.api import moderate          # no chat model needed
    >>> moderate("I want to kill him").categories["violence"]                # doctest: +SKIP
    True
    >>> get_engine(adapter="my-sft")          # one engine cache for every front-end  # doctest: +SKIP
"""

from __future__ import annotations

import threading

from typing import Iterator, Union

from .chat import Conversation, RenderedPrompt
from .config import Settings
from .engine_cache import EngineCache, EngineKey, LoadEvent, default_cache, get_engine  # noqa: F401 (the one cache)
from .generation.params import GenerationParams
from .limits import Limits, current_limits
from .generation.results import Completion, TokenProb
from .models.loading import LoadConfig, LoadedModel

Messages = Union[str, list, Conversation]


class Engine:
    """A loaded model plus everything you can do with it. Build one with ``load_engine``."""

    def __init__(self, loaded: LoadedModel, defaults: GenerationParams | None = None, limits: Limits | None = None,
                 batching: bool = True):
        self.loaded = loaded
        self.defaults = defaults or GenerationParams()
        self.limits = limits if limits is not None else current_limits()  # per-request bounds (GPT_DEMO_MAX_*)
        self.reward_model = None  # when set, best_of candidates are ranked by reward
        self._scheduler = None
        self.batching = batching  # False: one decode loop per request (Settings.batching, GPT_DEMO_BATCHING=0)
        self._scheduler_lock = threading.Lock()
        self.settings: Settings | None = None  # the settings it was loaded with (set by load_engine)

    def use_reward_model(self, reward_model) -> "Engine":
        """Rank ``best_of`` candidates with ``reward_model`` (a name or ``RewardModel``; None: log-probability)."""
        if isinstance(reward_model, str):
            reward_model = load_reward_model(reward_model, device=self.loaded.device)
        self.reward_model = reward_model
        return self

    # -- what is loaded -------------------------------------------------------------
    backend = "local"  # a remote engine names its server here (gpt_demo.backends)

    @property
    def capabilities(self):
        """Everything: the weights are here (a remote backend's ``Capabilities`` say what its server can do)."""
        from .backends.capabilities import Capabilities

        return Capabilities.local()

    @property
    def model_name(self) -> str:
        return self.loaded.name

    @property
    def adapter(self) -> str | None:
        return self.loaded.adapter

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def context_window(self) -> int:
        return self.loaded.context_window

    def describe(self) -> dict:
        """A dict for display: model, device, quantization, context window, memory footprint."""
        return {
            "model": self.loaded.name,
            "source": f"{self.loaded.source.kind}:{self.loaded.source.location}",
            "device": self.loaded.device,
            "quantization": self.loaded.quantization,
            "decode": self.loaded.describe_decode(),
            "batching": self._describe_batching(),
            "adapter": self.loaded.adapter,
            "reward_model": getattr(self.reward_model, "name", None),
            "context_window": self.context_window,
            "memory_footprint_mb": round(self.loaded.memory_footprint / 2**20, 1),
        }

    # -- parameters and prompts -----------------------------------------------------
    def params(self, params: GenerationParams | dict | None = None, **overrides) -> GenerationParams:
        """Resolve ``params`` (or the engine defaults) with keyword ``overrides`` applied and validated."""
        if isinstance(params, dict):
            params = GenerationParams.from_dict(params)
        base = params or self.defaults
        known = set(GenerationParams.__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown generation parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return base.replace(**overrides)

    def conversation(self, messages: Messages, system: str | None = None) -> Conversation:
        """Normalise a string, an OpenAI message list or a ``Conversation``."""
        if isinstance(messages, Conversation):
            conv = Conversation(system=messages.system, turns=list(messages.turns))
        elif isinstance(messages, str):
            conv = Conversation().add("user", messages)
        elif isinstance(messages, list):
            conv = Conversation.from_messages(messages)
        else:
            raise ValueError(f"messages={messages!r} is not allowed; give a string, a list of messages or a Conversation")
        if system is not None:
            conv.system = system or None
        return conv

    def _prompt_budget(self, params: GenerationParams) -> int:
        # Leave room for the answer, but never squeeze the prompt below half the window.
        return max(self.context_window - params.max_tokens, self.context_window // 2)

    def render_chat(self, messages: Messages, params: GenerationParams, system: str | None = None) -> RenderedPrompt:
        conv = self.conversation(messages, system)
        return conv.prompt_ids(self.tokenizer, self._prompt_budget(params), prefill=params.inject_start_text,
                               limits=self.limits)

    def render_raw(self, prompt: str, params: GenerationParams) -> RenderedPrompt:
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt={prompt!r} is not allowed; give a non-empty string")
        self.limits.check_text("prompt", prompt)  # before tokenizing
        ids = self.tokenizer(prompt + params.inject_start_text)["input_ids"]
        budget = self._prompt_budget(params)
        clipped = max(0, len(ids) - budget)
        return RenderedPrompt(ids[clipped:], 0, clipped)

    # -- generation -----------------------------------------------------------------
    def _ranker(self, messages: list[dict], params: GenerationParams):
        """``rank_by`` for decode: the reward model's scores of each candidate answer to ``messages``."""
        if self.reward_model is None or params.best_of is None:
            return None
        prefix = params.inject_start_text
        return lambda texts: self.reward_model.score([messages] * len(texts), [prefix + t for t in texts])

    def close(self) -> None:
        """Stop this engine's scheduler (its worker thread holds the model); later calls start a new one."""
        with self._scheduler_lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.close()

    def _describe_batching(self) -> str:
        if self.loaded.lean is None:
            return "one decode loop per request (continuous batching needs the lean CPU path)"
        if not self.batching:
            return "off (GPT_DEMO_BATCHING=0): one decode loop per request"
        c = self.scheduler.config
        return (f"continuous: up to {c.max_batch} sequences per step, {c.max_queue} may wait, "
                f"KV cache of {c.max_batch_tokens} positions at most (rows x longest), prompts read "
                f"{c.prefill_chunk} tokens per step")

    @property
    def scheduler(self):
        """The one scheduler that batches this model's requests (None where it runs one decode per request)."""
        if self.loaded.lean is None or not self.batching:
            return None
        with self._scheduler_lock:
            if self._scheduler is None:
                from .generation.scheduler import Scheduler, SchedulerConfig

                self._scheduler = Scheduler(self.loaded, SchedulerConfig.from_limits(self.limits))
            return self._scheduler

    def generate(self, prompt_ids: list[int], params: GenerationParams, *, rank_by=None, ignore_eos: bool = False):
        """Tokens for ``prompt_ids``: a generator of ``Delta`` returning the ``Completion`` (``decoding.decode``'s).

        On the lean path the request joins the model's running batch (``generation.scheduler``);
        otherwise it runs its own decode loop. Every front-end generates through here.
        """
        from .generation.decoding import decode

        scheduler = self.scheduler
        if scheduler is not None:
            return scheduler.generate(prompt_ids, params, rank_by=rank_by, ignore_eos=ignore_eos)
        return decode(self.loaded, prompt_ids, params, rank_by=rank_by, ignore_eos=ignore_eos)

    def _run(self, rendered: RenderedPrompt, params: GenerationParams, rank_by=None) -> Completion:
        from .generation.decoding import run_to_end

        completion = run_to_end(self.generate(rendered.ids, params, rank_by=rank_by))
        completion.truncated_messages = rendered.dropped_messages
        for choice in completion.choices:
            choice.text = params.inject_start_text + choice.text + params.inject_restart_text
        return completion

    def _stream(self, rendered: RenderedPrompt, params: GenerationParams, rank_by=None) -> Iterator[str]:
        from .generation.decoding import run_to_end, stream_text

        if params.inject_start_text:
            yield params.inject_start_text
        gen = self.generate(rendered.ids, params, rank_by=rank_by)
        if params.candidates > 1:  # the winner is known only at the end
            completion = run_to_end(gen)
            yield completion.text
        else:
            completion = yield from stream_text(gen)
        if params.inject_restart_text:
            yield params.inject_restart_text
        completion.truncated_messages = rendered.dropped_messages
        for choice in completion.choices:
            choice.text = params.inject_start_text + choice.text + params.inject_restart_text
        return completion  # the generator's return value: ``Streamed(stream).completion``

    def chat(self, messages: Messages, params=None, *, system: str | None = None, **overrides) -> Completion:
        """Answer ``messages`` (a string is one user message) through the chat template."""
        params = self.params(params, **overrides)
        ranker = self._ranker(self.conversation(messages, system).messages, params) if self.reward_model else None
        return self._run(self.render_chat(messages, params, system), params, rank_by=ranker)

    def stream_chat(self, messages: Messages, params=None, *, system: str | None = None, **overrides) -> Iterator[str]:
        """Like ``chat`` but yields text deltas as they are generated (choice 0).

        The generator returns the ``Completion`` (with ``logprobs`` when asked):
        ``Streamed(stream).completion`` holds it once the deltas are used up.
        """
        params = self.params(params, **overrides)
        ranker = self._ranker(self.conversation(messages, system).messages, params) if self.reward_model else None
        return self._stream(self.render_chat(messages, params, system), params, rank_by=ranker)

    def complete(self, prompt: str, params=None, **overrides) -> Completion:
        """Continue ``prompt`` as raw text (no chat template), like OpenAI's completions endpoint."""
        params = self.params(params, **overrides)
        return self._run(self.render_raw(prompt, params), params)

    def stream_complete(self, prompt: str, params=None, **overrides) -> Iterator[str]:
        params = self.params(params, **overrides)
        return self._stream(self.render_raw(prompt, params), params)

    # -- looking inside -------------------------------------------------------------
    def prompt_text(self, messages: Messages, params=None, *, system: str | None = None) -> str:
        """The raw text the model reads for ``messages``: the chat template with its special tokens.

            >>> engine.prompt_text("Hi")[-33:]                                         # doctest: +SKIP
            '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'

        What the Explain tab's next-token table continues when a token of an answer is clicked;
        ``params`` as the answer was generated with (its ``max_tokens`` decides what old turns fit).
        """
        rendered = self.render_chat(messages, self.params(params), system)
        return self.tokenizer.decode(rendered.ids, skip_special_tokens=False)

    def score_answer(self, messages: Messages, answer: str, *, system: str | None = None, top: int = 5):
        """Each token of ``answer`` (to ``messages``) with its probability and ``top`` alternatives.

            >>> rows = engine.score_answer("Name a colour.", "Blue.")                  # doctest: +SKIP
            >>> rows[0].token, round(math.exp(rows[0].logprob), 2), rows[0].top_logprobs[:2]  # doctest: +SKIP
            ('Blue', 0.12, [('Red', -1.3), ('Blue', -2.1)])

        For an answer written without ``logprobs``: one forward pass reads it back and gives the
        numbers generation would have reported (``TokenLogprob`` rows; ``inspect.token_probs``
        colours them). Old turns are dropped, as for generation, to leave the answer room.
        """
        from .inspect.token_probs import score_answer

        if not isinstance(answer, str) or not answer:
            raise ValueError("answer='' is not allowed; give the answer to look into")
        self.limits.check_text("answer", answer)
        answer_ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        room = self.params(max_tokens=max(1, min(len(answer_ids), self.context_window // 2)))
        rendered = self.render_chat(messages, room, system)
        return score_answer(self.loaded, rendered.ids, answer_ids, top=top)

    def next_tokens(self, text: str, top_k: int = 10, temperature: float = 1.0) -> list[TokenProb]:
        """The ``top_k`` most likely next tokens after raw ``text`` at ``temperature``."""
        from .inspect.next_token import distribution  # caches the forward pass: a slider only re-softmaxes

        return distribution(self.loaded, text, top_k=top_k, temperature=temperature, limits=self.limits)

    def step(self, text: str, temperature: float = 1.0, *, token_id: int | None = None,
             seed: int | None = None, top_k: int = 10):
        """Append one token (``token_id``, or sampled at ``temperature``) and return a ``StepResult``."""
        from .inspect.next_token import step

        return step(self.loaded, text, temperature, token_id=token_id, seed=seed, top_k=top_k, limits=self.limits)

    def attention(self, text: str, layer: int = -1, head: int | None = None):
        """An ``AttentionMap`` (tokens, (T, T) weights) for ``layer`` and ``head`` (None: mean over heads)."""
        from .inspect.attention import attention_map

        return attention_map(self.loaded, text, layer=layer, head=head, limits=self.limits)

    def strongest_heads(self, text: str, token: str, target: str, k: int = 5):
        """The (layer, head, weight) where ``token`` attends most to ``target``: "it" -> "animal"."""
        from .inspect.attention import strongest_heads

        return strongest_heads(self.loaded, text, token, target, k=k, limits=self.limits)

    def score(self, prompt_ids: list[int], completion_ids: list[int]) -> float:
        """Total log-probability of ``completion_ids`` following ``prompt_ids``."""
        from .generation.distribution import sequence_logprob

        return sequence_logprob(self.loaded, prompt_ids, completion_ids)

    # -- embeddings -----------------------------------------------------------------
    def embed(self, texts, model: str = "minilm", **kwargs):
        """(N, dim) normalised float32 vectors; ``model="chat"`` pools this engine's hidden states."""
        return embed(texts, model, engine=self, **kwargs)

    def search(self, query: str, corpus, top_k: int = 5, model: str = "minilm"):
        """The ``top_k`` texts of ``corpus`` closest to ``query`` (``SearchHit`` records, best first)."""
        return search(query, corpus, top_k=top_k, model=model, engine=self)

    def project(self, texts_or_vectors, dims: int = 2, method: str = "pca", model: str = "minilm"):
        """(N, dims) coordinates by PCA or UMAP, for texts or an (N, D) array."""
        return project(texts_or_vectors, dims=dims, method=method, model=model, engine=self)

    def analogy(self, a: str, b: str, c: str, vocabulary=None, top_k: int = 5, model: str = "minilm"):
        """``a`` is to ``b`` as ``c`` is to ...? (``king - man + woman`` is ``analogy("man", "king", "woman")``)."""
        return analogy(a, b, c, vocabulary, top_k=top_k, model=model, engine=self)

    # -- moderation -----------------------------------------------------------------
    def moderate(self, texts, thresholds: dict | None = None):
        """OpenAI-shaped moderation of one text (-> ModerationResult) or a list; see ``gpt_demo.moderation``."""
        return moderate(texts, thresholds=thresholds, limits=self.limits)

    def gate(self, text: str, mode: str = "off", *, role: str = "user", thresholds: dict | None = None):
        """The chat gate (off | warn | block) for a user message or the model's answer."""
        return gate(text, mode, role=role, thresholds=thresholds)


# -- moderation without a chat model --------------------------------------------------
class Streamed:
    """Iterate ``stream`` (``stream_chat``/``stream_complete``) as usual; afterwards ``.completion`` is the
    ``Completion`` its generator returned, with ``logprobs`` when they were asked for (None if none).

        >>> stream = Streamed(engine.stream_chat("Hi", logprobs=True, top_logprobs=5))   # doctest: +SKIP
        >>> text = "".join(stream)                                                       # doctest: +SKIP
        >>> stream.completion.choices[0].logprobs[0].top_logprobs                        # doctest: +SKIP
    """

    def __init__(self, stream: Iterator[str]):
        self.stream = stream
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        self.completion = yield from self.stream

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()


def moderate(texts, thresholds: dict | None = None, *, limits: Limits | None = None):
    """Moderate without loading the chat model: ``gpt_demo.api.moderate("I want to kill him").flagged``."""
    from .moderation import moderate as _moderate

    return _moderate(texts, thresholds=thresholds, limits=limits)


def gate(text: str, mode: str = "off", *, role: str = "user", thresholds: dict | None = None):
    """``gpt_demo.moderation.gate`` without a chat model: returns a ``GateDecision``."""
    from .moderation import gate as _gate

    return _gate(text, mode, role=role, thresholds=thresholds)


# -- embeddings without a chat model (MiniLM; model="chat" needs engine=) -------------
def embed(texts, model: str = "minilm", *, engine: Engine | None = None, **kwargs):
    """(N, dim) normalised float32 vectors: ``gpt_demo.api.embed(["a cat", "a kitten"]).shape == (2, 384)``."""
    from .embeddings import embed as _embed

    return _embed(texts, model, engine=engine, **kwargs)


def search(query: str, corpus, top_k: int = 5, model: str = "minilm", *, engine: Engine | None = None):
    """The ``top_k`` texts of ``corpus`` closest to ``query`` (``SearchHit`` records, best first)."""
    from .embeddings import search as _search

    return _search(query, corpus, top_k=top_k, model=model, engine=engine)


def project(texts_or_vectors, dims: int = 2, method: str = "pca", model: str = "minilm", *, engine: Engine | None = None):
    """(N, dims) coordinates by PCA or UMAP, for texts or an (N, D) array."""
    from .embeddings import project as _project

    return _project(texts_or_vectors, dims=dims, method=method, model=model, engine=engine)


def analogy(a: str, b: str, c: str, vocabulary=None, top_k: int = 5, model: str = "minilm", *, engine: Engine | None = None):
    """``a`` is to ``b`` as ``c`` is to ...? (``analogy("man", "king", "woman")[0].text == "queen"``)."""
    from .embeddings import analogy as _analogy

    return _analogy(a, b, c, vocabulary, top_k=top_k, model=model, engine=engine)


def load_engine(
    model: str | None = None,
    quantize: str | None = None,
    device: str | None = None,
    *,
    settings: Settings | None = None,
    progress: bool = True,
    defaults: GenerationParams | None = None,
    adapter: str | None = None,
    reward_model: str | None = None,
    decode: str | None = None,
    api_key_env: str | None = None,
):
    """Load a model (default: SmolLM2-135M-Instruct from its package) and wrap it in an ``Engine``.

    ``model="SCHEME:URL#MODEL"`` (``openai:``, ``vllm:``, ``llamacpp:``, ``ollama:``, ``gpt-demo:``;
    ``gpt_demo.backends.registry``) connects to an OpenAI-compatible server instead and returns a
    ``RemoteEngine`` with the same calls; its key is read from the environment variable
    ``api_key_env`` names (default: the kind's, ``OPENAI_API_KEY`` for ``openai:``).

    Arguments left as None come from ``settings`` (default: the ``GPT_DEMO_*`` environment).
    ``adapter`` names a trained LoRA adapter (``gpt-demo adapters``) to chat with; ``reward_model``
    names a reward adapter that then ranks ``best_of`` candidates instead of log-probability.
    ``decode`` (auto | int4 | bf16 | float, default ``settings.decode``) chooses the weights generation
    runs on; ``describe()["decode"]`` says which it got and why.
    """
    from .backends.registry import is_remote
    from .models.loading import load_model

    settings = settings or Settings.from_env()
    if is_remote(model or settings.model):
        return _load_remote(model or settings.model, settings, adapter=adapter, quantize=quantize,
                            reward_model=reward_model, api_key_env=api_key_env, defaults=defaults)
    cfg = LoadConfig.from_settings(settings, model=model, quantize=quantize, device=device, progress=progress,
                                   adapter=adapter, decode=decode)
    engine = Engine(load_model(cfg), defaults=defaults, limits=settings.limits, batching=settings.batching)
    engine.settings = settings  # what the engines loaded beside it (adapters, Compare, the API's models) take
    if reward_model:
        engine.use_reward_model(load_reward_model(reward_model, settings=settings, device=engine.loaded.device))
    return engine


# -- fine-tuning and RLHF (need the ``train`` extra: peft, trl, datasets) ---------------
# Each returns a ``TrainResult`` (name, path, kind, metrics, card, curves) and accepts
# ``on_progress(step, total, metrics)``, so the web app can drive gr.Progress and a live curve.
def _load_remote(spec: str, settings: Settings, *, adapter, quantize, reward_model, api_key_env, defaults):
    from .backends.registry import parse_spec
    from .backends.remote import RemoteEngine
    from .config import read_secret

    parsed = parse_spec(spec)
    for name, value in (("adapter", adapter), ("quantize", quantize if quantize != "none" else None),
                        ("reward_model", reward_model)):
        if value:
            raise ValueError(f"{name}={value!r} is not allowed with the remote model {spec}: the server holds its "
                             "weights (serve the adapter or quantization there)")
    from .backends.catalog import key_env_for

    configured = key_env_for(settings, spec)  # "" in models.toml: this server gets no key at all
    key_env = api_key_env or (configured if configured is not None else parsed.kind.key_env)
    return RemoteEngine(parsed, api_key=read_secret(key_env) if key_env else None, settings=settings,
                        defaults=defaults)


def _train(module: str, func: str, config_cls: str, data, out, settings, on_progress, config):
    import importlib

    mod = importlib.import_module(f"gpt_demo.training.{module}")
    cfg_mod = importlib.import_module(f"gpt_demo.training.{module}_config")
    cfg = getattr(cfg_mod, config_cls)(**({"out": out} if out else {}), **config)
    return getattr(mod, func)(data, cfg, settings=settings, on_progress=on_progress)


def train_sft(data, out: str | None = None, *, settings: Settings | None = None, on_progress=None, **config):
    """LoRA SFT on a prompt/completion or chat JSONL file: ``train_sft("sft.jsonl", out="my-sft", max_steps=50)``."""
    return _train("sft", "train_sft", "SFTTrainConfig", data, out, settings, on_progress, config)


def train_reward(data, out: str | None = None, *, settings: Settings | None = None, on_progress=None, **config):
    """Reward model from preference pairs (a JSONL file or ``"store"``, the rankings store)."""
    return _train("reward", "train_reward", "RewardTrainConfig", data, out, settings, on_progress, config)


def train_dpo(data, out: str | None = None, *, settings: Settings | None = None, on_progress=None, **config):
    """DPO from preference pairs (a JSONL file or ``"store"``)."""
    return _train("dpo", "train_dpo", "DPOTrainConfig", data, out, settings, on_progress, config)


def train_ppo(prompts, out: str | None = None, *, reward: str | None = None, reward_fn=None,
              settings: Settings | None = None, on_progress=None, **config):
    """PPO against reward model ``reward`` (or any ``reward_fn(prompts, answers) -> scores``)."""
    from .training.ppo import train_ppo as _train_ppo
    from .training.ppo_config import PPOTrainConfig

    cfg = PPOTrainConfig(**({"out": out} if out else {}), **({"reward": reward} if reward else {}), **config)
    return _train_ppo(prompts, cfg, settings=settings, on_progress=on_progress, reward_fn=reward_fn)


def list_adapters(settings: Settings | None = None):
    """Saved adapters (``AdapterInfo``: name, kind, base model, metrics), newest first."""
    from .models.adapters import list_adapters as _list

    return _list(settings)


def load_reward_model(name: str, *, settings: Settings | None = None, device: str = "auto"):
    """A ``RewardModel`` on ``device`` (an engine passes its own): ``rm.score(prompts, answers) -> list[float]``."""
    from .training.reward import RewardModel

    return RewardModel.load(name, settings, device=device)
