"""LoRA supervised fine-tuning with TRL's ``SFTTrainer``; the loss covers the answer tokens only.

    gpt-demo sft ../shared/data/sft/sft.jsonl --out oasst-sft --max-steps 50
    gpt-demo sft data.jsonl --out my-sft --quantize 4bit --device cuda     # QLoRA

    >>> from gpt_demo.training.sft import train_sft
    >>> result = train_sft("sft.jsonl", SFTTrainConfig(out="demo", max_steps=10))   # doctest: +SKIP
    >>> result.metrics["loss_before"] > result.metrics["loss_after"]                 # doctest: +SKIP
    True

Plain prompt/completion pairs are wrapped in the chat template (user -> assistant), so the
adapter learns to answer in the same format the chat engine renders.

Under ``accelerate launch`` (or ``--processes N``) the HF Trainer shards the rows across the
processes and averages gradients with DDP; the main process alone saves (``distributed.py``).
"""

from __future__ import annotations

import time

from .adapters import make_card
from .common import (TrainResult, checkpoint_step, finish_run, load_base, lora_config, prepare_output, quiet,
                     quiet_datasets, settings_or_env, trl_args)
from .curves import CurveRecorder, ProgressFn, trainer_callback
from .distributed import ShardLog, current, is_sharded, watch_shards
from .data import file_sha256, fit_lengths, load_sft, without_line
from .sft_config import SFTTrainConfig


def train_sft(data, cfg: SFTTrainConfig = SFTTrainConfig(), settings=None,
              on_progress: ProgressFn | None = None, keep_model: bool = False) -> TrainResult:
    """Train a LoRA adapter on ``data`` (a JSONL path); save it as ``cfg.out``; return a ``TrainResult``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    settings = settings_or_env(settings)
    rows = load_sft(data)  # validation first: a bad file loads no model
    model, tokenizer, base_name, device = load_base(cfg, settings, "causal")
    if cfg.max_examples:
        rows = rows[: cfg.max_examples]
    rows, lengths = fit_lengths(rows, tokenizer, cfg.max_length, str(data), ("completion",), cfg.drop_long)
    dataset = Dataset.from_list(without_line(rows))

    procs = current(device)
    out, resume_from = prepare_output(cfg, settings)
    recorder = CurveRecorder(out, title=f"SFT {cfg.out}", progress=cfg.progress, on_progress=on_progress,
                             resume_until=checkpoint_step(resume_from), main_process=procs.is_main)
    args = trl_args(SFTConfig, cfg, out, device, len(rows), completion_only_loss=cfg.completion_only,
                    dataset_num_proc=None, packing=False)
    quiet_datasets()
    trainer = quiet(SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset,
                               processing_class=tokenizer, peft_config=lora_config(cfg, "CAUSAL_LM"),
                               callbacks=[trainer_callback(recorder)]))
    shards = ShardLog()
    if procs.distributed:
        watch_shards(trainer, shards)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    # The loss on the training data before and after. LoRA starts at B = 0, i.e. exactly the base model,
    # so "before" is the model with its adapter disabled, measured after training: an evaluate() before
    # train() marks the model as prepared, and accelerate (1.15) then skips its DDP wrapper, leaving the
    # ranks to train apart.
    with trainer.model.disable_adapter():
        loss_before = float(trainer.evaluate()["eval_loss"])
    loss_after = float(trainer.evaluate()["eval_loss"])
    recorder.close()

    metrics = {
        "loss_before": loss_before,
        "loss_after": loss_after,
        "train_loss": float(output.training_loss),
        "steps": int(output.global_step),
        "examples": len(rows),
        "train_seconds": round(seconds, 2),
        "resumed_from_step": checkpoint_step(resume_from),
        **lengths.metrics(),
    }
    trained = trainer.model
    extra = ({"distributed": shards.record(procs, trained, out, digest=not is_sharded(trainer))}
             if procs.distributed else {})
    card = make_card("sft", cfg, base_name, data, file_sha256(data), metrics, **extra)
    curves = finish_run(procs, out, trained, card, recorder, trainer)
    return TrainResult(cfg.out, out, "sft", metrics, card, curves, trained if keep_model else None, procs.is_main)
