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

Data parallel (``accelerate launch`` or ``gpt-demo ppo --processes N``): ``accelerate.Accelerator``
wraps the policy and its value head in DDP. Each rank takes its own ``batch_size`` prompts of every
iteration's global batch, samples and scores them, computes its KL penalties and GAE advantages
locally, and DDP averages the gradients of every minibatch step, so all ranks apply the same update.
Rewards, KL (hence the adaptive β) and losses are averaged over all ranks before they are logged.

The arithmetic is small pure functions in ``training.ppo_math`` (``gae``, ``clipped_surrogate``,
``clipped_value_loss``, ``whiten``, ``kl_rewards``, ``adaptive_beta``), tested on hand-computed tensors. A checkpoint is
peft's safetensors plus ``ppo_state.safetensors`` (value head, AdamW moments, RNG) and
``ppo_state.json`` (step, β, hyper-parameters): nothing is pickled, nothing is ``torch.load``-ed.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable, Sequence

from .adapters import make_card
from .common import (TrainResult, checkpoint_step, clear_checkpoints, finish_run, load_base, lora_config,
                     prepare_output, run_device, settings_or_env)
from .curves import CurveRecorder, ProgressFn
from .data import load_prompts
from .distributed import ShardLog, begin, current
from .ppo_config import PPOTrainConfig
from .ppo_math import (adaptive_beta, clipped_surrogate, clipped_value_loss, gae, kl_rewards, make_value_head,
                       masked_mean, response_mask, whiten)
RewardFn = Callable[[Sequence, Sequence[str]], Sequence[float]]
STATE_TENSORS = "ppo_state.safetensors"  # value head, optimiser moments, RNG states
STATE_JSON = "ppo_state.json"  # step, β, optimiser hyper-parameters


def policy_and_value(policy, value_head):
    """One module holding the policy and its value head, so DDP averages the gradients of both in one pass.

    ``module(seq, attn, prompt_len, temperature, with_values)`` is ``forward_logp_values``.
    """
    import torch

    class PolicyAndValue(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy, self.value_head = policy, value_head

        def forward(self, seq, attn, prompt_len: int, temperature: float, with_values: bool = True):
            head = self.value_head if with_values else None
            return forward_logp_values(self.policy, head, seq, attn, prompt_len, temperature)

    return PolicyAndValue()


def forward_logp_values(model, value_head, seq, attn, prompt_len: int, temperature: float):
    """Per-token log π(y_t) and V(s_t) for the response part of ``seq``: both (B, R)."""
    from ..models.tokens import token_logprobs

    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at the first real token
    out = model(input_ids=seq, attention_mask=attn, position_ids=position_ids, output_hidden_states=True)
    logits = out.logits[:, prompt_len - 1:-1].float() / temperature  # (B, R, vocab) predicts response tokens
    logp = token_logprobs(logits, seq[:, prompt_len:])  # (B, R)
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, prompt_len - 1:-1].float()  # (B, R, H): state before each token
        values = value_head(hidden).squeeze(-1)  # (B, R)
    return logp, values


# -- resume state: safetensors + JSON, nothing pickled -------------------------------------------
def save_ppo_state(path: Path, value_head, optimizer, step: int, beta: float, rank_rng: list | None = None) -> None:
    """The value head, the optimiser and the RNG states as safetensors; step, β and hyper-parameters as JSON.

    ``rank_rng``: every rank's (CPU, CUDA or None) RNG states in a multi-process run, stored as
    ``rng.cpu.rank<N>`` and ``rng.cuda.rank<N>``.
    """
    import json

    import torch
    from safetensors.torch import save_file

    opt = optimizer.state_dict()
    tensors = {f"value_head.{k}": v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()}
    scalars: dict[str, dict] = {}
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    for rank, (cpu_state, cuda_state) in enumerate(rank_rng or []):
        tensors[f"rng.cpu.rank{rank}"] = cpu_state
        if cuda_state is not None:
            tensors[f"rng.cuda.rank{rank}"] = cuda_state
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / STATE_TENSORS))
    meta = {"step": int(step), "beta": float(beta), "param_groups": opt["param_groups"], "optimizer_scalars": scalars}
    (path / STATE_JSON).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_ppo_state(path: Path, value_head, optimizer, rank: int = 0) -> tuple[int, float]:
    """Restore what ``save_ppo_state`` wrote into ``value_head`` and ``optimizer``; returns (step, β).

    ``rank`` picks that process's RNG state when the checkpoint has one per rank.
    """
    import json

    import torch
    from safetensors.torch import load_file

    path = Path(path)
    tensors = load_file(str(path / STATE_TENSORS))
    meta = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    value_head.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("value_head.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value
    for index, slots in meta.get("optimizer_scalars", {}).items():
        state.setdefault(int(index), {}).update(slots)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})  # moves moments to the params
    torch.set_rng_state(tensors.get(f"rng.cpu.rank{rank}", tensors["rng.cpu"]))
    cuda_state = tensors.get(f"rng.cuda.rank{rank}", tensors.get("rng.cuda"))
    if cuda_state is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_state)
    return int(meta["step"]), float(meta["beta"])


class PPO:
    """One PPO run's state: policy (PeftModel), value head, optimiser, β. ``step(prompts)`` does one iteration.

    ``model`` and ``value_head`` are the plain modules (generation, the reference, saving); ``trained``
    is the two of them as one module prepared by ``accelerate.Accelerator`` (DDP with several
    processes), and every forward pass that enters the PPO ratio goes through it.
    """

    def __init__(self, model, tokenizer, cfg: PPOTrainConfig, reward_fn: RewardFn, device: str | None = None):
        import torch
        from accelerate import Accelerator

        from ..models.tokens import end_token_ids

        self.model, self.tokenizer, self.cfg, self.reward_fn = model, tokenizer, cfg, reward_fn
        device = device or next(model.parameters()).device.type
        self.procs = current(device)
        self.accelerator = Accelerator(cpu=device == "cpu")
        hidden = model.config.hidden_size
        self.value_head = make_value_head(hidden, next(model.parameters()).device)
        params = [p for p in model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
        quantized = cfg.quantize != "none"  # bitsandbytes layers stay where the loader put them
        self.trained, self.optimizer = self.accelerator.prepare(policy_and_value(model, self.value_head), optimizer,
                                                                device_placement=[not quantized, False])
        self.device = next(model.parameters()).device
        self.beta = cfg.beta
        self.rank_rewards: list[float] = []  # this rank's own mean reward per iteration (ranks.json)
        self.eos_ids = sorted(end_token_ids(tokenizer, model))  # the set generation stops on, written once
        self.model.eval()  # no dropout: PPO's ratio must compare like with like (gradients still flow)

    # -- rollouts -----------------------------------------------------------------
    def rollout(self, prompts: list[list[dict]]):
        import torch

        from ..models.tokens import pad_batch

        tok = self.tokenizer
        rows = [tok.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
                for p in prompts]
        ids, attn = pad_batch(rows, tok.pad_token_id, "left", self.device)
        with torch.no_grad():  # the plain policy samples: DDP has no generate(), and sampling needs no gradients
            seq = self.model.generate(input_ids=ids, attention_mask=attn, do_sample=True, max_new_tokens=self.cfg.max_new_tokens,
                                      temperature=self.cfg.temperature, top_k=0, top_p=1.0,
                                      pad_token_id=tok.pad_token_id, eos_token_id=self.eos_ids)
        prompt_len = ids.shape[1]
        response = seq[:, prompt_len:]  # (B, R)
        mask = response_mask(response, self.eos_ids)  # (B, R): up to and including the first end-of-turn token
        full_attn = torch.cat([attn, mask.long()], dim=1)
        answers = [tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(response, mask)]
        return seq, full_attn, prompt_len, mask, answers

    def _mean_over_ranks(self, values: list[float]) -> list[float]:
        """Each number averaged over the processes (the same list on every rank)."""
        import torch

        if not self.procs.distributed:
            return values
        local = torch.tensor(values, dtype=torch.float32, device=self.accelerator.device)
        return [float(v) for v in self.accelerator.reduce(local, reduction="mean")]

    # -- one iteration --------------------------------------------------------------
    def step(self, prompts: list[list[dict]]) -> dict:
        """One iteration on this rank's ``prompts``; the returned metrics are means over all ranks."""
        import torch

        cfg = self.cfg
        seq, attn, P, mask, answers = self.rollout(prompts)
        with torch.no_grad():
            old_logp, old_values = self.trained(seq, attn, P, cfg.temperature)  # same path as the updates below
            with self.model.disable_adapter():  # the reference policy π_ref
                ref_logp, _ = self.trained(seq, attn, P, cfg.temperature, with_values=False)
            scores = torch.tensor([float(s) for s in self.reward_fn(prompts, answers)], device=self.device)  # (B,)
            rewards, kl = kl_rewards(old_logp, ref_logp, mask, scores, self.beta)  # (B, R) each
            advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            advantages = whiten(advantages, mask)  # per rank: DDP averages the resulting gradients

        stats = {"pg_loss": [], "value_loss": [], "approx_kl": [], "clip_frac": []}
        n = len(prompts)  # the same on every rank, so every rank takes the same number of DDP steps
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(n)
            for start in range(0, n, cfg.mini_batch_size):
                idx = order[start:start + cfg.mini_batch_size]
                m = mask[idx]
                logp, values = self.trained(seq[idx], attn[idx], P, cfg.temperature)
                pg_loss, ratio, clip_frac = clipped_surrogate(logp, old_logp[idx], advantages[idx], m, cfg.clip_range)
                v_loss = clipped_value_loss(values, old_values[idx], returns[idx], m, cfg.clip_range_value)
                loss = pg_loss + cfg.value_coef * v_loss
                self.optimizer.zero_grad()
                self.accelerator.backward(loss)  # DDP: gradients averaged over the ranks here
                self.accelerator.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 1.0)
                self.optimizer.step()
                with torch.no_grad():
                    stats["pg_loss"].append(float(pg_loss))
                    stats["value_loss"].append(float(v_loss))
                    stats["approx_kl"].append(float(masked_mean(0.5 * (logp - old_logp[idx]) ** 2, m)))
                    stats["clip_frac"].append(float(clip_frac))

        local = {"reward": float(scores.mean()), "kl": float(kl.sum(1).mean()),
                 "answer_tokens": float(mask.sum(1).mean()), **{k: sum(v) / len(v) for k, v in stats.items()}}
        self.rank_rewards.append(local["reward"])
        metrics = dict(zip(local, self._mean_over_ranks(list(local.values()))))  # equal batches: mean of means
        kl_per_answer = metrics["kl"]
        metrics.update(reward_total=metrics["reward"] - self.beta * kl_per_answer, beta=self.beta,
                       loss=metrics["pg_loss"])
        self.beta = adaptive_beta(self.beta, kl_per_answer, cfg.target_kl)  # the same on every rank
        self.last_answers = answers
        return metrics

    def evaluate(self, prompts: list[list[dict]], n: int, seed: int, reference: bool = False) -> float:
        """Mean reward of ``n`` sampled answers (prompts cycled), with a fixed seed; ``reference``: adapter off.

        With several processes each rank samples its share (every world_size-th answer, seeded by
        seed + rank) and the mean is taken over all of them.
        """
        import contextlib

        import torch

        rank, world = self.procs.rank, self.procs.world_size
        batch = [prompts[i % len(prompts)] for i in range(rank, n, world)]
        state = torch.get_rng_state()
        torch.manual_seed(seed + rank)
        try:
            with self.model.disable_adapter() if reference else contextlib.nullcontext():
                scores = []
                for start in range(0, len(batch), self.cfg.batch_size):
                    part = batch[start:start + self.cfg.batch_size]
                    answers = self.rollout(part)[-1]
                    scores += [float(s) for s in self.reward_fn(part, answers)]
        finally:
            torch.set_rng_state(state)
        everyone = [s for part in self.procs.gather(scores) for s in part]
        return sum(everyone) / len(everyone)

    # -- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self, path: Path, step: int) -> None:
        """LoRA weights (peft's safetensors) plus ``save_ppo_state``: nothing is pickled.

        Every rank calls it (each hands in its RNG state); the main process writes.
        """
        import torch

        cuda_rng = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        rank_rng = self.procs.gather((torch.get_rng_state(), cuda_rng)) if self.procs.distributed else None
        if self.procs.is_main:
            path.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(str(path), safe_serialization=True)
            save_ppo_state(path, self.value_head, self.optimizer, step, self.beta, rank_rng)
        self.procs.barrier()

    def load_checkpoint(self, path: Path) -> int:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if not (Path(path) / STATE_TENSORS).is_file():
            raise ValueError(f"resume: {path} has no {STATE_TENSORS} (written by an older gpt-demo); "
                             "rerun with --no-resume to start over")

        device = str(self.device)
        set_peft_model_state_dict(self.model, load_file(str(Path(path) / "adapter_model.safetensors"), device=device))
        step, self.beta = load_ppo_state(Path(path), self.value_head, self.optimizer, self.procs.rank)
        return step


def _prompt_batches(prompts: list, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
    """An endless stream of this rank's batches: each iteration draws ``batch_size * world_size`` prompts
    (each epoch in a fresh seeded order, the same on every rank) and rank r keeps the r-th slice.

    Yields ``(indices, prompts)``.
    """
    rng = random.Random(seed)
    total = batch_size * world_size
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        order = order * (total // len(order) + 1) if len(order) < total else order
        for start in range(0, len(order) - total + 1, total):
            mine = order[start + rank * batch_size:start + (rank + 1) * batch_size]
            yield mine, [prompts[i] for i in mine]


def setup_ppo(cfg: PPOTrainConfig, settings=None, reward_fn: RewardFn | None = None) -> PPO:
    """The run's pieces on ``cfg.device``: reward model, policy (LoRA on the base; with the adapter disabled,
    the reference) and value head, all loaded by ``gpt_demo.models.load_model``.

    ``reward_fn(prompts, answers) -> scores`` defaults to reward model ``cfg.reward``. The returned
    ``PPO`` also carries ``base_name`` and ``reward_name`` for the card.
    """
    import torch
    from peft import get_peft_model

    settings = settings_or_env(settings)
    reward_name = cfg.reward
    if reward_fn is None:
        if not cfg.reward:
            raise ValueError("reward='' is not allowed; name a reward model (`gpt-demo reward ... --out NAME`)")
        from .reward import RewardModel

        procs = begin(run_device(cfg, settings))  # every rank scores its own rollouts with its own copy
        with procs.main_first():
            reward_fn = RewardModel.load(cfg.reward, settings, device=cfg.device)
    else:
        reward_name = reward_name or getattr(reward_fn, "__name__", "custom")
    torch.manual_seed(cfg.seed)  # the same LoRA and value-head init on every rank (DDP also broadcasts rank 0's)
    model, tokenizer, base_name, device = load_base(cfg, settings, "causal")
    model = get_peft_model(model, lora_config(cfg, "CAUSAL_LM"))
    ppo = PPO(model, tokenizer, cfg, reward_fn, device)
    if ppo.procs.distributed:
        torch.manual_seed(cfg.seed + ppo.procs.rank)  # each rank samples its rollouts with its own noise
    ppo.base_name, ppo.reward_name = base_name, reward_name
    return ppo


def train_ppo(prompts, cfg: PPOTrainConfig = PPOTrainConfig(), settings=None, on_progress: ProgressFn | None = None,
              reward_fn: RewardFn | None = None, keep_model: bool = False) -> TrainResult:
    """PPO adapter ``cfg.out`` on ``prompts`` (a file, or a list of strings / message lists).

    ``reward_fn(prompts, answers) -> scores`` defaults to reward model ``cfg.reward``.
    """
    from ..util import file_sha256

    settings = settings_or_env(settings)
    if isinstance(prompts, (str, Path)):
        prompt_list, source, fingerprint = load_prompts(prompts), str(prompts), file_sha256(prompts)
    else:
        prompt_list = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
        source, fingerprint = "<list>", ""
        if not prompt_list:
            raise ValueError("prompts=[] is not allowed; give at least one prompt")
    if cfg.max_examples:
        prompt_list = prompt_list[: cfg.max_examples]

    ppo = setup_ppo(cfg, settings, reward_fn)
    model, base_name, reward_name = ppo.model, ppo.base_name, ppo.reward_name
    save_every = cfg.checkpoint_every(cfg.steps)

    procs = ppo.procs
    out, resume_from = prepare_output(cfg, settings)
    start = ppo.load_checkpoint(Path(resume_from)) if resume_from else 0
    recorder = CurveRecorder(out, title=f"PPO {cfg.out}", progress=cfg.progress, on_progress=on_progress,
                             resume_until=start if resume_from else None, main_process=procs.is_main)
    recorder.start(cfg.steps, initial=start)
    batches = _prompt_batches(prompt_list, cfg.batch_size, cfg.seed, procs.rank, procs.world_size)
    for _ in range(start):  # the same data order after a resume
        next(batches)
    shards = ShardLog()
    eval_seed = cfg.seed + 12345
    reward_before = ppo.evaluate(prompt_list, cfg.eval_samples, eval_seed, reference=True) if cfg.eval_samples else None
    started = time.perf_counter()
    try:
        for step in range(start + 1, cfg.steps + 1):
            indices, batch = next(batches)
            shards.add(indices)
            recorder.log(step, ppo.step(batch))
            if step % save_every == 0 and step < cfg.steps:
                if procs.is_main:
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
    extra = ({"distributed": shards.record(procs, ppo.trained, out, {"rewards": ppo.rank_rewards})}
             if procs.distributed else {})
    card = make_card("ppo", cfg, base_name, source, fingerprint, metrics, reward_model=reward_name, **extra)
    if procs.is_main:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(ppo.value_head.state_dict(), str(out / "value_head.safetensors"))
    curves = finish_run(procs, out, model, card, recorder)
    return TrainResult(cfg.out, out, "ppo", metrics, card, curves, model if keep_model else None, procs.is_main)
