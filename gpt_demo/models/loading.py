"""The one model loader: chat models, adapters on top, reward models and bases for training.

    >>> from gpt_demo.models import LoadConfig, load_model
    >>> loaded = load_model(LoadConfig(quantize="4bit"))   # doctest: +SKIP
    >>> loaded.quantization, loaded.device                  # doctest: +SKIP
    ('4bit', 'cpu')
    >>> rm = load_model(LoadConfig(head="reward", adapter="my-rm", device="cuda"))  # doctest: +SKIP

Every model the project runs comes from ``load_model``, so one set of rules holds everywhere:
``resolve_device`` (auto -> cuda when present; cuda without CUDA is a ValueError), the weights
placed on that device, and ``model_dtype``: bf16 for inference on CUDA, float32 on the CPU, float32
master weights for training (TRL then trains in bf16 autocast on CUDA), float32 around bitsandbytes
layers. ``head="reward"`` gives a one-output ``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DECODE_CHOICES, DEFAULT_MODEL, DEVICE_CHOICES, QUANTIZE_CHOICES, check_choice
from .gguf_cache import ensure_cache

HEAD_CHOICES = ("causal", "reward")
from .registry import ResolvedModel, resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadConfig:
    """What to load and how."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Registry name, hub id (owner/name), local directory or .gguf file."},
    )
    quantize: str = field(default="none", metadata={"help": "none | 8bit | 4bit (bitsandbytes; 4bit is nf4)."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when present) | cpu | cuda."})
    models_dir: Path = field(
        default_factory=lambda: Path("~/.cache/gpt-demo/models").expanduser(),
        metadata={"help": "Where converted GGUF caches live ($GPT_DEMO_HOME/models)."},
    )
    offline: bool = field(default=False, metadata={"help": "Never contact the hub."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar for the one-time conversion."})
    adapter: str | None = field(
        default=None, metadata={"help": "A trained adapter's name (see `gpt-demo adapters`) or directory to load on top."}
    )
    adapters_dir: Path = field(
        default_factory=lambda: Path("~/.cache/gpt-demo/adapters").expanduser(),
        metadata={"help": "Where named adapters live ($GPT_DEMO_HOME/adapters)."},
    )
    head: str = field(
        default="causal",
        metadata={"help": "causal (a chat model; adapter: sft | ppo | dpo) | reward (one-number head; adapter: reward)."},
    )
    trainable: bool = field(
        default=False, metadata={"help": "Load as a base for training: float32 master weights on every device."}
    )
    decode: str = field(
        default="auto",
        metadata={"help": "auto | int4 | bf16 | float: the weights generation runs on (see models.decode_path)."},
    )
    native_step: bool = field(
        default=True, metadata={"help": "Build the compiled decode step of the int4 path (see models.native)."}
    )

    def __post_init__(self) -> None:
        check_choice("quantize", self.quantize, QUANTIZE_CHOICES)
        check_choice("device", self.device, DEVICE_CHOICES)
        check_choice("head", self.head, HEAD_CHOICES)
        check_choice("decode", self.decode, DECODE_CHOICES)

    @classmethod
    def from_settings(cls, settings, **overrides) -> "LoadConfig":
        values = dict(
            model=settings.model,
            quantize=settings.quantize,
            device=settings.device,
            models_dir=settings.models_dir,
            adapters_dir=Path(settings.home) / "adapters",
            offline=settings.offline,
            decode=settings.decode,
            native_step=settings.native_step,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class LoadedModel:
    """A model ready for generation: what every other core module receives."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    name: str
    source: ResolvedModel
    device: str
    quantization: str
    adapter: str | None = None
    head: str = "causal"
    lean: Any = None  # a LeanLlama that generation runs on, or None: the transformers model itself
    decode_path: str = "float32 (transformers)"  # what generation runs on, and why, for describe()

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    def describe_decode(self) -> str:
        """What generation runs on (``decode_path``), and for the int4 path whether its compiled step is in use."""
        if self.lean is not None and self.lean.weights == "int4":
            from . import native

            return f"{self.decode_path}; compiled decode step: {native.status()}"
        return self.decode_path

    @property
    def memory_footprint(self) -> int:
        """Bytes held by parameters and buffers (transformers' ``get_memory_footprint``), plus the lean copies."""
        return int(self.model.get_memory_footprint()) + (self.lean.nbytes if self.lean is not None else 0)


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` or ``cpu``; refuse ``cuda`` on a machine without it."""
    import torch

    check_choice("device", device, DEVICE_CHOICES)
    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def model_dtype(device: str, quantize: str = "none", trainable: bool = False):
    """The dtype weights load in: bf16 for inference on CUDA (fp16 where bf16 is unsupported), else float32.

    Training keeps float32 master weights (TRL's bf16 autocast does the fast math on CUDA), and
    bitsandbytes models keep float32 around their quantized layers (the 4-bit compute dtype is
    chosen in ``quantization_config``).
    """
    import torch

    if device == "cuda" and quantize == "none" and not trainable:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_config(quantize: str, device: str):
    """The ``BitsAndBytesConfig`` for ``quantize`` (None for ``none``); clear errors when impossible."""
    check_choice("quantize", quantize, QUANTIZE_CHOICES)
    if quantize == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            f"quantize={quantize!r} needs bitsandbytes, which is not installed: pip install 'bitsandbytes>=0.45'"
        )
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    # bf16 is the fast compute type on CUDA; CPUs without AMX are faster in float32.
    compute = torch.bfloat16 if device == "cuda" else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def _weights_location(source: ResolvedModel, cfg: LoadConfig) -> str:
    if source.is_gguf:
        return str(ensure_cache(Path(source.location), cfg.models_dir, progress=cfg.progress))
    return source.location


def load_model(cfg: LoadConfig = LoadConfig()) -> LoadedModel:
    """Resolve, (convert,) and load ``cfg.model`` on ``cfg.device``; returns a ``LoadedModel`` in eval mode."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_model(cfg.model, offline=cfg.offline)
    device = resolve_device(cfg.device)
    bnb = quantization_config(cfg.quantize, device)
    location = _weights_location(source, cfg)
    kwargs: dict[str, Any] = {"local_files_only": cfg.offline or source.kind != "hub",
                              "dtype": model_dtype(device, cfg.quantize, cfg.trainable)}
    if bnb is not None:
        # accelerate places the quantized layers; bitsandbytes >= 0.45 runs them on CPU too.
        kwargs.update(quantization_config=bnb, device_map={"": device})
    elif device != "cpu":
        kwargs.update(device_map={"": device})
    from .quiet import quiet_libraries

    try:
        # quiet: transformers' instant "Loading weights" bar and its log lines would print under a
        # notebook cell or a terminal prompt; only our own conversion bar and status lines show.
        with quiet_libraries():
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=kwargs["local_files_only"])
            if cfg.head == "reward":
                model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=1, **kwargs)
            else:
                model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except OSError as exc:
        raise RuntimeError(f"model={cfg.model!r}: could not load weights from {location}: {exc}") from exc
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # A classifier reads the last non-pad token: the model must know which id pads (TRL issue #381).
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.adapter:  # LoRA from `gpt-demo sft/ppo/dpo` (merged unless quantized) or a reward adapter
        from .adapters import apply_adapter

        model, _card = apply_adapter(model, cfg.adapter, cfg.adapters_dir, head=cfg.head)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=source.name,
        source=source,
        device=device,
        quantization=cfg.quantize,
        adapter=cfg.adapter or None,
        head=cfg.head,
    )
    if cfg.head == "causal" and not cfg.trainable:
        from .decode_path import attach_decode_path

        attach_decode_path(loaded, cfg.decode, native_step=cfg.native_step)
    return loaded
