"""DPO with TRL's ``DPOTrainer``: LoRA on the policy; the reference is the same model with the adapter disabled.

    gpt-demo dpo ../shared/data/preferences/oasst1_en_val_pairs.jsonl --out oasst-dpo --max-steps 50
    gpt-demo dpo store --out my-dpo --init-adapter my-sft      # start from (and stay near) your SFT model

Reported: the mean log-probability margin log π(chosen) - log π(rejected) before and after
training (DPO should widen it), and the implicit reward accuracy on the same pairs.
"""

from __future__ import annotations

import time

from .adapters import make_card
from .common import (TrainResult, checkpoint_step, finish_run, load_base, lora_config, prepare_output, quiet,
                     quiet_datasets, settings_or_env, trl_args)
from .curves import CurveRecorder, ProgressFn, trainer_callback
from .distributed import ShardLog, current, is_sharded, watch_shards
from .data import fit_lengths, load_pairs, split_by_conversation, without_line
from .dpo_config import DPOTrainConfig


def answer_logprobs(model, tokenizer, prompts: list, answers: list[str], max_length: int = 1024) -> list[float]:
    """Total log-probability of each assistant ``answer`` (with its end-of-turn tokens) after its chat-templated ``prompt``."""
    from ..models.tokens import completion_logprob

    totals = []
    for prompt, answer in zip(prompts, answers):
        p_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                              return_dict=True)["input_ids"]
        ids = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=True,
                                            return_dict=True)["input_ids"][:max_length]
        totals.append(completion_logprob(model, p_ids, ids[len(p_ids):]))
    return totals


def logprob_margins(model, tokenizer, pairs: list[dict], max_length: int = 1024, procs=None) -> list[float]:
    """log π(chosen) - log π(rejected) per pair.

    With ``procs`` of a multi-process run each rank measures every world_size-th pair; all ranks get
    all margins, in the same (rank-major) order each time.
    """
    mine, real = procs.split(pairs) if procs is not None else (pairs, len(pairs))
    prompts = [p["prompt"] for p in mine]
    chosen = answer_logprobs(model, tokenizer, prompts, [p["chosen"][-1]["content"] for p in mine], max_length)
    rejected = answer_logprobs(model, tokenizer, prompts, [p["rejected"][-1]["content"] for p in mine], max_length)
    margins = [c - r for c, r in zip(chosen, rejected)]
    return procs.join(margins, real) if procs is not None else margins


def train_dpo(data, cfg: DPOTrainConfig = DPOTrainConfig(), settings=None,
              on_progress: ProgressFn | None = None, keep_model: bool = False) -> TrainResult:
    """Train DPO adapter ``cfg.out`` on pairs from ``data`` (JSONL path or ``"store"``)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    settings = settings_or_env(settings)
    pairs, fingerprint = load_pairs(data, settings)  # validation first: a bad file loads no model
    model, tokenizer, base_name, device = load_base(cfg, settings, "causal")
    if cfg.max_examples:
        pairs = pairs[: cfg.max_examples]
    pairs, lengths = fit_lengths(pairs, tokenizer, cfg.max_length, str(data), ("chosen", "rejected"), cfg.drop_long)
    train, held_out = split_by_conversation(pairs, cfg.eval_fraction, cfg.seed)
    measured = held_out or train

    procs = current(device)
    out, resume_from = prepare_output(cfg, settings)
    recorder = CurveRecorder(out, title=f"DPO {cfg.out}", progress=cfg.progress, on_progress=on_progress,
                             resume_until=checkpoint_step(resume_from), main_process=procs.is_main)
    args = trl_args(DPOConfig, cfg, out, device, len(train), beta=cfg.beta, disable_dropout=True)
    quiet_datasets()
    # ref_model=None with a peft_config: TRL uses the policy with its adapter disabled as the reference.
    trainer = quiet(DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(without_line(train)),
                               processing_class=tokenizer, peft_config=lora_config(cfg, "CAUSAL_LM"),
                               callbacks=[trainer_callback(recorder)]))
    shards = ShardLog()
    if procs.distributed:
        watch_shards(trainer, shards)
    with trainer.model.disable_adapter():  # the reference: exactly what the policy starts from
        before = logprob_margins(trainer.model, tokenizer, measured, cfg.max_length, procs)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    trainer.model.eval()
    after = logprob_margins(trainer.model, tokenizer, measured, cfg.max_length, procs)
    recorder.close()

    implicit = [cfg.beta * (a - b) for a, b in zip(after, before)]  # β·(Δ log-ratio): DPO's implicit reward margin
    metrics = {
        "margin_before": sum(before) / len(before),
        "margin_after": sum(after) / len(after),
        "implicit_reward_accuracy": sum(m > 0 for m in implicit) / len(implicit),
        "implicit_reward_margin": sum(implicit) / len(implicit),
        "measured_on": "held-out" if held_out else "train",
        "pairs": len(measured),
        "train_loss": float(output.training_loss),
        "steps": int(output.global_step),
        "train_seconds": round(seconds, 2),
        "resumed_from_step": checkpoint_step(resume_from),
        **lengths.metrics(),
    }
    extra = ({"distributed": shards.record(procs, trainer.model, out, digest=not is_sharded(trainer))}
             if procs.distributed else {})
    card = make_card("dpo", cfg, base_name, data, fingerprint, metrics, **extra)
    curves = finish_run(procs, out, trainer.model, card, recorder, trainer)
    return TrainResult(cfg.out, out, "dpo", metrics, card, curves, trainer.model if keep_model else None,
                       procs.is_main)
