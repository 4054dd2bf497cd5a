"""What the magics remember between cells: the config, loaded engines and the conversation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ..chat import Conversation
from ..engine_cache import EngineCache, LoadEvent
from ..generation.params import CHAT_DEFAULTS, GenerationParams
from .views import Status


@dataclass
class NotebookConfig:
    """``%gpt config``: which model to load and the default generation parameters.

    None means "the default from the environment" (``GPT_DEMO_MODEL`` etc.).
    """

    model: str | None = field(default=None, metadata={"help": "registry name, hub id, local dir or .gguf"})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter name (when supported)"})
    quantize: str | None = field(default=None, metadata={"help": "none | 8bit | 4bit"})
    device: str | None = field(default=None, metadata={"help": "auto | cpu | cuda"})
    params: dict = field(default_factory=dict, metadata={"help": "default GenerationParams overrides"})

    def generation_params(self, **overrides) -> GenerationParams:
        """The chat defaults (``CHAT_DEFAULTS``, as the web Chat), then ``%gpt config``'s, then ``overrides``.

        Raises ValueError naming a bad field.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        return GenerationParams.from_dict({**CHAT_DEFAULTS, **self.params, **given})


class NotebookState:
    """One per IPython shell (owned by its ``GptMagics``)."""

    def __init__(self):
        self.config = NotebookConfig()
        self.conversation = Conversation()
        self.session_id = f"notebook-{uuid.uuid4().hex[:12]}"
        # (messages before the answer, answer, engine_key, TokenView rows) of the last answer when it was a
        # %%gpt --probs one; None after any other answer, %gpt reset or --new. %gpt_probs reuses the rows
        # only when all three match, so the same text answering another question is read back afresh.
        self.last_probs: tuple[list[dict], str, tuple, list] | None = None
        self.training: dict = {}  # adapter name -> its TrainPanel (one job per adapter directory)
        # The core's engine cache: bounded by GPT_DEMO_MAX_ENGINES (a cell's --model or --adapter loads
        # another model; the least recently used is dropped), with a status line for each load.
        self.engines = EngineCache(on_load=LoadingDisplay())

    def _key_args(self, model: str | None = None, adapter: str | None = None) -> tuple:
        adapter = adapter if adapter is not None else self.config.adapter
        return model or self.config.model, adapter, self.config.quantize, self.config.device

    def engine_key(self, model: str | None = None, adapter: str | None = None) -> tuple:
        """(model, adapter, quantize, device) that ``engine(model, adapter)`` loads: what produced an answer."""
        return self._key_args(model, adapter)

    def use_engine(self, engine, model: str | None = None) -> None:
        """Adopt an already loaded ``Engine`` for the current config (or for ``model``); it is never dropped."""
        self.engines.pin(engine, *self._key_args(model))

    def is_loaded(self, model: str | None = None, adapter: str | None = None) -> bool:
        return self.engines.is_loaded(*self._key_args(model, adapter))

    def engine(self, model: str | None = None, adapter: str | None = None):
        """The engine for the config (or a cell's ``model``/``adapter``), loaded on first use."""
        return self.engines.get(*self._key_args(model, adapter))


class LoadingDisplay:
    """The cache's ``on_load`` hook: one status line per load that says what loads, then how it went."""

    def __init__(self):
        self._handles: dict = {}  # EngineKey -> the DisplayHandle of its status line

    def __call__(self, event: LoadEvent) -> None:
        from IPython.display import display

        # A GGUF model's first load converts it (~30 s, with a progress bar); later loads take seconds.
        if event.stage == "loading":
            self._handles[event.key] = display(Status(f"Loading {event.what}..."), display_id=True)
            return
        handle = self._handles.pop(event.key, None)
        if event.stage == "loaded":
            engine = event.engine
            status = Status(f"Loaded {engine.model_name} on {engine.describe()['device']} in {event.seconds:.1f} s.")
        else:
            status = Status(f"Could not load {event.what}.")
        if handle is not None:
            handle.update(status)
        else:
            display(status)
