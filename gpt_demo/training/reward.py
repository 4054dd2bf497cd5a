"""A reward model: the base model with a one-number head and LoRA, trained with TRL's ``RewardTrainer``
on loss -log σ(r_chosen - r_rejected); reports pair accuracy and mean margin on held-out prompts.

    gpt-demo reward ../shared/data/preferences/oasst1_en_val_pairs.jsonl --out oasst-rm --max-steps 100
    gpt-demo reward store --out my-rm              # the pairs from the web app's rankings

    >>> rm = RewardModel.load("my-rm")                                        # doctest: +SKIP
    >>> rm.score(["Say hi"], ["Hello! Nice to meet you."])                    # doctest: +SKIP
    [1.73]

The same ``RewardModel`` scores held-out pairs after training, rewards PPO rollouts and ranks
``best_of`` candidates, so what is measured is what is used.
"""

from __future__ import annotations

import time
from typing import Sequence

from .adapters import find_adapter, make_card
from .common import (TrainResult, checkpoint_step, finish_run, load_base, lora_config, prepare_output, quiet,
                     quiet_datasets, settings_or_env, trl_args)
from .curves import CurveRecorder, ProgressFn, trainer_callback
from .distributed import ShardLog, current, is_sharded, watch_shards
from .data import fit_lengths, load_pairs, split_by_conversation, without_line
from .reward_config import RewardTrainConfig


class RewardModel:
    """Scores (prompt, answer) pairs: higher is better. Build with ``RewardModel.load(name)``."""

    def __init__(self, model, tokenizer, name: str = "", max_length: int = 1024):
        self.model, self.tokenizer, self.name, self.max_length = model, tokenizer, name, max_length

    @classmethod
    def load(cls, name: str, settings=None, device: str = "auto", quantize: str | None = None) -> "RewardModel":
        """Load reward adapter ``name`` (its card names the base model) onto a fresh base on ``device``.

        ``device="auto"`` defers to ``settings.device``; the loader is ``gpt_demo.models.load_model``,
        the same one (and the same device rules) as the chat model's.
        """
        from ..models import loading

        settings = settings_or_env(settings)
        path, card = find_adapter(name, settings)
        if card.get("kind") != "reward":
            raise ValueError(f"adapter={name!r} is a {card.get('kind')} adapter, not a reward model")
        params = card.get("params", {})
        cfg = loading.LoadConfig.from_settings(
            settings, model=params.get("model") or card["base_model"], device=None if device == "auto" else device,
            quantize=quantize or card.get("quantize", "none"), progress=False, head="reward", adapter=str(path))
        loaded = loading.load_model(cfg)
        return cls(loaded.model, loaded.tokenizer, name, int(params.get("max_length", 1024)))

    def encode(self, prompt, answer: str) -> list[int]:
        """Token ids exactly as TRL's RewardTrainer builds them (chat template over prompt + answer)."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        messages = messages + [{"role": "assistant", "content": answer}]
        ids = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        return ids[-self.max_length:]  # keep the end: the head reads the last token

    def score(self, prompts: Sequence, answers: Sequence[str], batch_size: int = 8) -> list[float]:
        """One reward per (prompt, answer); ``prompts`` are strings or message lists."""
        import torch

        from ..models.tokens import pad_batch

        if len(prompts) != len(answers):
            raise ValueError(f"prompts={len(prompts)} and answers={len(answers)} must have the same length")
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(answers), batch_size):
                batch = [self.encode(p, a) for p, a in zip(prompts[start:start + batch_size],
                                                            answers[start:start + batch_size])]
                ids, mask = pad_batch(batch, self.tokenizer.pad_token_id, "right")  # right padding, as in training
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, 1)
                scores.extend(float(x) for x in logits[:, 0].float().cpu())
        if was_training:
            self.model.train()
        return scores

    def __call__(self, prompts: Sequence, answers: Sequence[str]) -> list[float]:
        return self.score(prompts, answers)


def pair_metrics(rm: RewardModel, pairs: list[dict], procs=None) -> dict:
    """Pair accuracy (share with r_chosen > r_rejected) and mean margin r_chosen - r_rejected.

    With ``procs`` of a multi-process run each rank scores every world_size-th pair and the margins
    of all ranks are pooled, so every rank returns the metrics of all ``pairs``.
    """
    if not pairs:
        return {}
    mine, real = procs.split(pairs) if procs is not None else (pairs, len(pairs))
    prompts = [p["prompt"] for p in mine]
    chosen = rm.score(prompts, [p["chosen"][-1]["content"] for p in mine])
    rejected = rm.score(prompts, [p["rejected"][-1]["content"] for p in mine])
    margins = [c - r for c, r in zip(chosen, rejected)]
    if procs is not None:
        margins = procs.join(margins, real)
    return {"pair_accuracy": sum(m > 0 for m in margins) / len(margins), "mean_margin": sum(margins) / len(margins),
            "pairs": len(pairs)}


def train_reward(data, cfg: RewardTrainConfig = RewardTrainConfig(), settings=None,
                 on_progress: ProgressFn | None = None, keep_model: bool = False) -> TrainResult:
    """Train reward adapter ``cfg.out`` on ``data`` (JSONL path or ``"store"``)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    settings = settings_or_env(settings)
    pairs, fingerprint = load_pairs(data, settings)  # validation first: a bad file loads no model
    model, tokenizer, base_name, device = load_base(cfg, settings, "reward")
    if cfg.max_examples:
        pairs = pairs[: cfg.max_examples]
    pairs, lengths = fit_lengths(pairs, tokenizer, cfg.max_length, str(data), ("chosen", "rejected"), cfg.drop_long)
    train, held_out = split_by_conversation(pairs, cfg.eval_fraction, cfg.seed)
    if not train:
        raise ValueError(f"eval_fraction={cfg.eval_fraction} leaves no training pairs out of {len(pairs)}")

    procs = current(device)
    out, resume_from = prepare_output(cfg, settings)
    recorder = CurveRecorder(out, title=f"reward model {cfg.out}", progress=cfg.progress, on_progress=on_progress,
                             resume_until=checkpoint_step(resume_from), main_process=procs.is_main)
    args = trl_args(RewardConfig, cfg, out, device, len(train), center_rewards_coefficient=cfg.center_rewards or None,
                    disable_dropout=True)
    quiet_datasets()
    trainer = quiet(RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(without_line(train)),
                                  processing_class=tokenizer, peft_config=lora_config(cfg, "SEQ_CLS"),
                                  callbacks=[trainer_callback(recorder)]))
    shards = ShardLog()
    if procs.distributed:
        watch_shards(trainer, shards)
    rm = RewardModel(trainer.model, tokenizer, cfg.out, cfg.max_length)
    before = pair_metrics(rm, held_out, procs) if resume_from is None else {}  # ranks share the held-out pairs
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    rm.model = trainer.model
    after = pair_metrics(rm, held_out, procs)
    recorder.close()

    metrics = {
        "eval_pair_accuracy": after.get("pair_accuracy"),
        "eval_mean_margin": after.get("mean_margin"),
        "eval_pair_accuracy_before": before.get("pair_accuracy"),
        "eval_pairs": len(held_out),
        "train_pairs": len(train),
        "train_loss": float(output.training_loss),
        "steps": int(output.global_step),
        "train_seconds": round(seconds, 2),
        "resumed_from_step": checkpoint_step(resume_from),
        **lengths.metrics(),
    }
    extra = ({"distributed": shards.record(procs, trainer.model, out, digest=not is_sharded(trainer))}
             if procs.distributed else {})
    card = make_card("reward", cfg, base_name, data, fingerprint, metrics, **extra)
    curves = finish_run(procs, out, trainer.model, card, recorder, trainer)
    return TrainResult(cfg.out, out, "reward", metrics, card, curves, rm if keep_model else None, procs.is_main)
