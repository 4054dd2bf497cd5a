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
    main_process: bool = True  # False on the other ranks of a multi-process run (they saved nothing)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "kind": self.kind, "metrics": self.metrics,
                "curves": self.curves}


def settings_or_env(settings):
    from ..config import Settings

    return settings or Settings.from_env()


def load_config(cfg, settings, head: str = "causal", *, adapter: str | None = None, trainable: bool = True):
    """The ``LoadConfig`` for a training config's base model: the same loader (and device and dtype rules) as chat.

    ``cfg.device="auto"`` defers to ``settings.device`` (``GPT_DEMO_DEVICE``), like ``cfg.model=""`` to
    ``settings.model``; ``adapter`` defaults to the config's ``init_adapter``.
    """
    from ..models.loading import LoadConfig

    return LoadConfig.from_settings(
        settings,
        model=cfg.model or None,
        quantize=cfg.quantize,
        device=cfg.device if cfg.device != "auto" else None,
        progress=cfg.progress,
        adapter=adapter if adapter is not None else (cfg.init_adapter or None),
        head=head,
        trainable=trainable,
    )


def run_device(cfg, settings) -> str:
    """The device a run trains on, "cpu" or "cuda": ``cfg.device``, else ``settings.device`` (auto: cuda if present)."""
    from ..models.loading import resolve_device

    return resolve_device(load_config(cfg, settings).device)


def load_base(cfg, settings, head: str = "causal"):
    """(model, tokenizer, source name, device): a fresh copy of the base model on ``cfg.device``, ready for LoRA.

    ``head="reward"`` gives ``AutoModelForSequenceClassification`` with one output (the reward).
    The config's ``init_adapter`` is merged in first, so it is also what "adapter disabled" means.

    Under ``accelerate launch`` this also joins the launcher's process group (``distributed.begin``);
    the main process loads first (it converts the packaged GGUF once), then the others. On several
    GPUs the float32 weights load on the CPU and the HF Trainer / ``Accelerator`` move them to each
    rank's own GPU, as TRL's examples do (no ``device_map`` under DDP).
    """
    from dataclasses import replace

    from ..models import loading
    from .distributed import begin

    device = run_device(cfg, settings)
    procs = begin(device)
    load_cfg = load_config(cfg, settings, head)
    if procs.distributed and device != "cpu":
        if cfg.quantize != "none":
            raise ValueError(f"quantize={cfg.quantize!r} with {procs.world_size} GPU processes is not supported yet "
                             "(each rank would need its own device map); train quantized on one GPU, or use "
                             "--quantize none")
        load_cfg = replace(load_cfg, device="cpu")
    with procs.main_first():
        loaded = loading.load_model(load_cfg)
    model = loaded.model
    if cfg.quantize != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, loaded.tokenizer, loaded.name, device


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


def trl_args(config_cls, cfg, out_dir: Path, device: str, n_examples: int, **extra):
    """TRL's ``<X>Config`` with CPU-friendly defaults: fp32 on CPU, bf16 autocast on CUDA when supported.

    ``n_examples`` (training rows) sizes the automatic checkpoint interval when ``max_steps`` is 0.
    """
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
        save_steps=cfg.checkpoint_every(cfg.total_steps(n_examples)),
        save_total_limit=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        bf16=bf16,
        fp16=False,
        activation_checkpointing=False,  # small models: recomputation costs more than it saves (transformers 5 name)
        dataloader_num_workers=0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        **extra,
    )


def out_dir(cfg, settings) -> Path:
    return adapter_path(cfg.out, settings)


def prepare_output(cfg, settings) -> tuple[Path, str | None]:
    """The adapter's directory and the checkpoint to resume from (None: start over; ``resume=False`` clears old ones).

    With several processes the main one clears, and every rank then sees the same checkpoint.
    """
    from .distributed import current

    out = out_dir(cfg, settings)
    procs = current(run_device(cfg, settings))
    if not cfg.resume and procs.is_main:
        clear_checkpoints(out)
    procs.barrier()
    return out, last_checkpoint(out) if cfg.resume else None


def finish_run(procs, out: Path, model, card: dict, recorder, trainer=None) -> dict:
    """The main process saves the adapter, its card and curves and clears checkpoints; then every rank waits.

    Weights sharded by the HF ``trainer`` (FSDP, DeepSpeed) are saved by ``trainer.save_model`` on
    every rank, which gathers them and writes on the main process. Returns the curve files ({} on
    the other ranks, which write nothing).
    """
    from .adapters import save_adapter, write_card
    from .distributed import is_sharded

    sharded = trainer is not None and is_sharded(trainer)
    if sharded:
        trainer.save_model(str(out))
    curves: dict = {}
    if procs.is_main:
        if sharded:
            write_card(out, card)
        else:
            save_adapter(model, out, card)
        curves = recorder.save()
        clear_checkpoints(out)
    procs.barrier()  # every rank returns once the adapter is on disk
    return curves


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
