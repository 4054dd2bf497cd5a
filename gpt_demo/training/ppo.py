"""Our own small PPO (TRL 1.16 no longer ships one): the RLHF step of the seeds' recipe.

    gpt-demo ppo --reward my-rm --prompts prompts.jsonl --out my-ppo --steps 20 --beta 0.05
    gpt-demo ppo --reward my-rm --prompts prompts.txt --out my-ppo --init-adapter my-sft --target-kl 4

Each iteration:
1. rollouts: sample an answer y for a batch of prompts x from the policy π (LoRA on the base);
2. per-token rewards: r_t = -β·(log π(y_t) - log π_ref(y_t)), plus RM(x, y) on the last answer token,
   so the total is R(x, y) = RM(x, y) - β·log(π(y|x) / π_ref(y|x)); π_ref is the policy with its
   adapter disabled (the base, or the base with ``init_adapter`` merged in, e.g. your SFT model);
3. a value head on the last hidden state gives V(s_t); GAE(γ, λ) gives advantages and returns;
4. ``ppo_epochs`` passes of minibatch updates on the clipped surrogate
   max(-A·ρ, -A·clip(ρ, 1-ε, 1+ε)) plus a clipped value loss, ρ = π_new / π_old per token.

With ``target_kl`` set, β adapts (Ziegler et al., 2019) so the measured KL per answer tracks it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable, Sequence

from .adapters import make_card, save_adapter
from .common import (TrainResult, checkpoint_step, clear_checkpoints, load_base, lora_config, prepare_output,
                     settings_or_env)
from .curves import CurveRecorder, ProgressFn
from .data import file_sha256, load_prompts
from .ppo_config import PPOTrainConfig

KL_HORIZON_BATCHES = 2  # β moves by at most 10 % per iteration
RewardFn = Callable[[Sequence, Sequence[str]], Sequence[float]]


def make_value_head(hidden: int, device):
    """V(s) = w·h + b on the policy's last hidden state; small init so early values are near 0."""
    import torch

    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.normal_(head.weight, std=1.0 / (hidden + 1))
    torch.nn.init.zeros_(head.bias)
    return head.to(device)


def _masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _whiten(x, mask):
    mean = _masked_mean(x, mask)
    var = _masked_mean((x - mean) ** 2, mask)
    return (x - mean) * (var + 1e-8).rsqrt() * mask


def _left_pad(rows: list[list[int]], pad: int, device):
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def forward_logp_values(model, value_head, seq, attn, prompt_len: int, temperature: float):
    """Per-token log π(y_t) and V(s_t) for the response part of ``seq``: both (B, R)."""
    import torch

    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at the first real token
    out = model(input_ids=seq, attention_mask=attn, position_ids=position_ids, output_hidden_states=True)
    logits = out.logits[:, prompt_len - 1:-1].float() / temperature  # (B, R, vocab) predicts response tokens
    logp = torch.log_softmax(logits, dim=-1).gather(2, seq[:, prompt_len:, None]).squeeze(2)  # (B, R)
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, prompt_len - 1:-1].float()  # (B, R, H): state before each token
        values = value_head(hidden).squeeze(-1)  # (B, R)
    return logp, values


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over (B, R) tensors; positions past the answer are masked."""
    import torch

    values = values * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    returns = advantages + values
    return advantages * mask, returns


class PPO:
    """One PPO run's state: policy (PeftModel), value head, optimiser, β. ``step(prompts)`` does one iteration."""

    def __init__(self, model, tokenizer, cfg: PPOTrainConfig, reward_fn: RewardFn, device: str):
        import torch

        self.model, self.tokenizer, self.cfg, self.reward_fn = model, tokenizer, cfg, reward_fn
        self.device = next(model.parameters()).device
        hidden = model.config.hidden_size
        self.value_head = make_value_head(hidden, self.device)
        params = [p for p in model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
        self.beta = cfg.beta
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        eos = {tokenizer.eos_token_id} | (set(gen_eos) if isinstance(gen_eos, list) else {gen_eos})
        self.eos_ids = sorted(e for e in eos if e is not None)
        self.model.eval()  # no dropout: PPO's ratio must compare like with like (gradients still flow)

    # -- rollouts -----------------------------------------------------------------
    def rollout(self, prompts: list[list[dict]]):
        import torch

        tok = self.tokenizer
        rows = [tok.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
                for p in prompts]
        ids, attn = _left_pad(rows, tok.pad_token_id, self.device)
        with torch.no_grad():
            seq = self.model.generate(input_ids=ids, attention_mask=attn, do_sample=True, max_new_tokens=self.cfg.max_new_tokens,
                                      temperature=self.cfg.temperature, top_k=0, top_p=1.0,
                                      pad_token_id=tok.pad_token_id, eos_token_id=self.eos_ids)
        prompt_len = ids.shape[1]
        response = seq[:, prompt_len:]  # (B, R)
        # Mask: every token up to and including the first end-of-turn token.
        is_eos = torch.isin(response, torch.tensor(self.eos_ids, device=self.device))
        after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
        mask = (~after_eos).float()  # (B, R)
        full_attn = torch.cat([attn, mask.long()], dim=1)
        answers = [tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(response, mask)]
        return seq, full_attn, prompt_len, mask, answers

    # -- one iteration --------------------------------------------------------------
    def step(self, prompts: list[list[dict]]) -> dict:
        import torch

        cfg = self.cfg
        seq, attn, P, mask, answers = self.rollout(prompts)
        with torch.no_grad():
            old_logp, old_values = forward_logp_values(self.model, self.value_head, seq, attn, P, cfg.temperature)
            with self.model.disable_adapter():  # the reference policy π_ref
                ref_logp, _ = forward_logp_values(self.model, None, seq, attn, P, cfg.temperature)
            scores = torch.tensor([float(s) for s in self.reward_fn(prompts, answers)], device=self.device)  # (B,)
            kl = (old_logp - ref_logp) * mask  # (B, R) per-token log-ratio, an unbiased KL estimate
            rewards = -self.beta * kl
            last = (mask.sum(1).long() - 1).clamp(min=0)  # index of each answer's last token
            rewards[torch.arange(len(prompts)), last] += scores
            advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            advantages = _whiten(advantages, mask)

        stats = {"pg_loss": [], "value_loss": [], "approx_kl": [], "clip_frac": []}
        n = len(prompts)
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(n)
            for start in range(0, n, cfg.mini_batch_size):
                idx = order[start:start + cfg.mini_batch_size]
                m = mask[idx]
                logp, values = forward_logp_values(self.model, self.value_head, seq[idx], attn[idx], P, cfg.temperature)
                ratio = torch.exp(logp - old_logp[idx])  # (b, R)
                adv = advantages[idx]
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
                pg_loss = _masked_mean(pg, m)
                v_old = old_values[idx]
                v_clip = v_old + (values - v_old).clamp(-cfg.clip_range_value, cfg.clip_range_value)
                v_loss = 0.5 * _masked_mean(torch.max((values - returns[idx]) ** 2, (v_clip - returns[idx]) ** 2), m)
                loss = pg_loss + cfg.value_coef * v_loss
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 1.0)
                self.optimizer.step()
                with torch.no_grad():
                    stats["pg_loss"].append(float(pg_loss))
                    stats["value_loss"].append(float(v_loss))
                    stats["approx_kl"].append(float(_masked_mean(0.5 * (logp - old_logp[idx]) ** 2, m)))
                    stats["clip_frac"].append(float(_masked_mean(((ratio - 1).abs() > cfg.clip_range).float(), m)))

        kl_per_answer = float(kl.sum(1).mean())
        metrics = {
            "reward": float(scores.mean()),
            "kl": kl_per_answer,
            "reward_total": float(scores.mean()) - self.beta * kl_per_answer,
            "beta": self.beta,
            "answer_tokens": float(mask.sum(1).mean()),
            **{k: sum(v) / len(v) for k, v in stats.items()},
            "loss": sum(stats["pg_loss"]) / len(stats["pg_loss"]),
        }
        if cfg.target_kl > 0:  # adaptive KL controller (Ziegler et al. 2019), short horizon for small runs
            error = max(-0.2, min(0.2, kl_per_answer / cfg.target_kl - 1))
            self.beta *= 1 + error / KL_HORIZON_BATCHES
        self.last_answers = answers
        return metrics

    def evaluate(self, prompts: list[list[dict]], n: int, seed: int, reference: bool = False) -> float:
        """Mean reward of ``n`` sampled answers (prompts cycled), with a fixed seed; ``reference``: adapter off."""
        import contextlib

        import torch

        batch = [prompts[i % len(prompts)] for i in range(n)]
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            with self.model.disable_adapter() if reference else contextlib.nullcontext():
                scores = []
                for start in range(0, n, self.cfg.batch_size):
                    part = batch[start:start + self.cfg.batch_size]
                    answers = self.rollout(part)[-1]
                    scores += [float(s) for s in self.reward_fn(part, answers)]
        finally:
            torch.set_rng_state(state)
        return sum(scores) / len(scores)

    # -- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self, path: Path, step: int) -> None:
        import torch

        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), safe_serialization=True)
        torch.save({"value_head": self.value_head.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "step": step, "beta": self.beta, "rng": torch.get_rng_state()}, path / "ppo_state.pt")

    def load_checkpoint(self, path: Path) -> int:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(Path(path) / "adapter_model.safetensors")))
        state = torch.load(Path(path) / "ppo_state.pt", weights_only=False)
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.beta = state["beta"]
        torch.set_rng_state(state["rng"])
        return int(state["step"])


def _prompt_batches(prompts: list, batch_size: int, seed: int):
    """An endless stream of batches, each epoch in a fresh seeded order."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        order = order * (batch_size // len(order) + 1) if len(order) < batch_size else order
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [prompts[i] for i in order[start:start + batch_size]]


def train_ppo(prompts, cfg: PPOTrainConfig = PPOTrainConfig(), settings=None, on_progress: ProgressFn | None = None,
              reward_fn: RewardFn | None = None, keep_model: bool = False) -> TrainResult:
    """PPO adapter ``cfg.out`` on ``prompts`` (a file, or a list of strings / message lists).

    ``reward_fn(prompts, answers) -> scores`` defaults to reward model ``cfg.reward``.
    """
    import torch
    from peft import get_peft_model

    settings = settings_or_env(settings)
    if isinstance(prompts, (str, Path)):
        prompt_list, source, fingerprint = load_prompts(prompts), str(prompts), file_sha256(prompts)
    else:
        prompt_list = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
        source, fingerprint = "<list>", ""
        if not prompt_list:
            raise ValueError("prompts=[] is not allowed; give at least one prompt")
    reward_name = cfg.reward
    if reward_fn is None:
        if not cfg.reward:
            raise ValueError("reward='' is not allowed; name a reward model (`gpt-demo reward ... --out NAME`)")
        from .reward import RewardModel

        reward_fn = RewardModel.load(cfg.reward, settings, device=cfg.device)
    else:
        reward_name = reward_name or getattr(reward_fn, "__name__", "custom")
    if cfg.max_examples:
        prompt_list = prompt_list[: cfg.max_examples]

    torch.manual_seed(cfg.seed)
    model, tokenizer, base_name, device = load_base(cfg, settings, "causal")
    model = get_peft_model(model, lora_config(cfg, "CAUSAL_LM"))
    ppo = PPO(model, tokenizer, cfg, reward_fn, device)

    out, resume_from = prepare_output(cfg, settings)
    start = ppo.load_checkpoint(Path(resume_from)) if resume_from else 0
    recorder = CurveRecorder(out, title=f"PPO {cfg.out}", progress=cfg.progress, on_progress=on_progress,
                             resume_until=start if resume_from else None)
    recorder.start(cfg.steps, initial=start)
    batches = _prompt_batches(prompt_list, cfg.batch_size, cfg.seed)
    for _ in range(start):  # the same data order after a resume
        next(batches)
    eval_seed = cfg.seed + 12345
    reward_before = ppo.evaluate(prompt_list, cfg.eval_samples, eval_seed, reference=True) if cfg.eval_samples else None
    started = time.perf_counter()
    try:
        for step in range(start + 1, cfg.steps + 1):
            recorder.log(step, ppo.step(next(batches)))
            if step % cfg.save_steps == 0 and step < cfg.steps:
                clear_checkpoints(out)
                ppo.save_checkpoint(out / "checkpoints" / f"checkpoint-{step}", step)
                recorder.save(png=False)
    finally:
        recorder.close()
    seconds = time.perf_counter() - started
    reward_after = ppo.evaluate(prompt_list, cfg.eval_samples, eval_seed) if cfg.eval_samples else None

    rows = recorder.rows
    tail = rows[-max(1, len(rows) // 4):]
    metrics = {
        "reward_before": reward_before,  # mean reward of eval_samples answers from the reference
        "reward_after": reward_after,  # ... and from the trained policy, same prompts and seed
        "reward_first": rows[0]["reward"] if rows else None,
        "reward_last": sum(r["reward"] for r in tail) / len(tail) if tail else None,
        "kl_last": sum(r["kl"] for r in tail) / len(tail) if tail else None,
        "kl_max": max((r["kl"] for r in rows), default=None),
        "beta_final": ppo.beta,
        "steps": cfg.steps,
        "train_seconds": round(seconds, 2),
        "resumed_from_step": checkpoint_step(resume_from),
    }
    card = make_card("ppo", cfg, base_name, source, fingerprint, metrics, reward_model=reward_name)
    save_adapter(model, out, card)
    from safetensors.torch import save_file

    save_file(ppo.value_head.state_dict(), str(out / "value_head.safetensors"))
    curves = recorder.save()
    clear_checkpoints(out)
    return TrainResult(cfg.out, out, "ppo", metrics, card, curves, model if keep_model else None)
