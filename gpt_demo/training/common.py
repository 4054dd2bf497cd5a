"""Small factories shared by the workflows: config -> base model, LoRA config, TRL arguments, checkpoints.

    >>> from gpt_demo.training.sft_config import SFTTrainConfig
    >>> lora_config(SFTTrainConfig(lora_r=8), "CAUSAL_LM").r          # doctest: +SKIP
    8
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import adapter_path

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced: the adapter's name and directory, its card and final metrics."""

    name: str
    path: Path
    kind: str
    metrics: dict
    card: dict
    curves: dict = field(default_factory=dict)
    model: Any = field(default=None, repr=False)  # the trained PeftModel (for tests and notebooks)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "kind": self.kind, "metrics": self.metrics,
                "curves": self.curves}


def settings_or_env(settings):
    from ..config import Settings

    return settings or Settings.from_env()


def base_source(cfg, settings):
    """(ResolvedModel, weights location, device) for the config's base model."""
    from ..models.gguf_cache import ensure_cache
    from ..models.loading import resolve_device
    from ..models.registry import resolve_model

    source = resolve_model(cfg.model or settings.model, offline=settings.offline)
    device = resolve_device(cfg.device if cfg.device != "auto" else settings.device)
    location = source.location
    if source.is_gguf:
        location = str(ensure_cache(Path(source.location), settings.models_dir, progress=cfg.progress))
    return source, location, device


def load_base(cfg, settings, head: str = "causal"):
    """(model, tokenizer, source name, device): a fresh copy of the base model ready for LoRA.

    ``head="reward"`` gives ``AutoModelForSequenceClassification`` with one output (the reward).
    The config's ``init_adapter`` is merged in first, so it is also what "adapter disabled" means.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from ..models.loading import quantization_config

    source, location, device = base_source(cfg, settings)
    local = settings.offline or source.kind != "hub"
    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    bnb = quantization_config(cfg.quantize, device)
    kwargs: dict[str, Any] = {"local_files_only": local, "dtype": torch.float32}
    if bnb is not None:
        kwargs.update(quantization_config=bnb, device_map={"": device})
    if head == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=1, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    # The classifier reads the last non-pad token: the model must know which id pads (TRL issue #381).
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.init_adapter:
        from .adapters import apply_adapter

        model, _ = apply_adapter(model, cfg.init_adapter, settings, merge=True)
    if bnb is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tokenizer, source.name, device


def lora_config(cfg, task_type: str):
    """peft ``LoraConfig`` from the config; a reward head (``score``) is trained in full and saved."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.targets,
        task_type=task_type,
        bias="none",
    )


def trl_args(config_cls, cfg, out_dir: Path, device: str, **extra):
    """TRL's ``<X>Config`` with CPU-friendly defaults: fp32 on CPU, bf16 on CUDA when supported."""
    import torch

    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    return config_cls(
        output_dir=str(out_dir / "checkpoints"),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=False,  # small models: recomputation costs more than it saves
        dataloader_num_workers=0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        **extra,
    )


def out_dir(cfg, settings) -> Path:
    return adapter_path(cfg.out, settings)


def prepare_output(cfg, settings) -> tuple[Path, str | None]:
    """The adapter's directory and the checkpoint to resume from (None: start over; ``resume=False`` clears old ones)."""
    out = out_dir(cfg, settings)
    if not cfg.resume:
        clear_checkpoints(out)
    return out, last_checkpoint(out) if cfg.resume else None


def last_checkpoint(out: Path) -> str | None:
    """The newest ``checkpoints/checkpoint-N`` of an interrupted run, if any."""
    root = out / "checkpoints"
    found = sorted(root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    return str(found[-1]) if found else None


def checkpoint_step(path: str | None) -> int | None:
    return int(Path(path).name.split("-")[-1]) if path else None


def clear_checkpoints(out: Path) -> None:
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


def quiet(trainer):
    """Our tqdm bar replaces transformers' log printer (it would print every step's dict)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def quiet_datasets() -> None:
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
