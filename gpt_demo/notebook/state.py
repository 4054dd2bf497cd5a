"""What the magics remember between cells: the config, loaded engines and the conversation."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from ..chat import Conversation
from ..config import Settings
from ..generation.params import GenerationParams
from .views import Status

MAX_ENGINES = 2  # a cell's --model may load a second model; older ones are dropped


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
        """The defaults with ``overrides`` applied; raises ValueError naming a bad field."""
        return GenerationParams.from_dict({**self.params, **{k: v for k, v in overrides.items() if v is not None}})


class NotebookState:
    """One per IPython shell (owned by its ``GptMagics``)."""

    def __init__(self):
        self.config = NotebookConfig()
        self.conversation = Conversation()
        self.session_id = f"notebook-{uuid.uuid4().hex[:12]}"
        self._engines: OrderedDict[tuple, object] = OrderedDict()

    def _key(self, model: str | None = None, adapter: str | None = None) -> tuple:
        settings = Settings.from_env()
        return (
            model or self.config.model or settings.model,
            adapter if adapter is not None else self.config.adapter,
            self.config.quantize,
            self.config.device,
        )

    def use_engine(self, engine, model: str | None = None) -> None:
        """Adopt an already loaded ``Engine`` for the current config (or for ``model``)."""
        self._engines[self._key(model)] = engine
        self._engines.move_to_end(self._key(model))

    def is_loaded(self, model: str | None = None, adapter: str | None = None) -> bool:
        return self._key(model, adapter) in self._engines

    def engine(self, model: str | None = None, adapter: str | None = None):
        """The engine for the config (or a cell's ``model``/``adapter``), loaded on first use."""
        key = self._key(model, adapter)
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        from IPython.display import display

        from ..api import load_engine

        name, adapter_name, quantize, device = key
        what = name + (f" + adapter {adapter_name}" if adapter_name else "")
        # A GGUF model's first load converts it (~30 s, with a progress bar); later loads take seconds.
        handle = display(Status(f"Loading {what}..."), display_id=True)
        start = time.perf_counter()
        kwargs = {"adapter": adapter_name} if adapter_name else {}
        try:
            engine = load_engine(name, quantize=quantize, device=device, **kwargs)
        except Exception:
            handle.update(Status(f"Could not load {what}."))
            raise
        handle.update(Status(f"Loaded {engine.model_name} on {engine.loaded.device} in {time.perf_counter() - start:.1f} s."))
        while len(self._engines) >= MAX_ENGINES:
            self._engines.popitem(last=False)
        self._engines[key] = engine
        return engine
