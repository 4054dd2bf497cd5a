"""PPO's arithmetic as small pure functions over (B, R) tensors, tested on hand-computed values.

    >>> import torch
    >>> from gpt_demo.training.ppo_math import adaptive_beta, masked_mean
    >>> float(masked_mean(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[1, 1, 0]])))
    2.0
    >>> round(adaptive_beta(0.1, kl=8.0, target_kl=4.0), 3)   # KL twice the target: beta rises 10 %
    0.11

``training.ppo`` runs the loop; everything here is math with no model, data or I/O
(``tests/test_ppo_math.py``).
"""

from __future__ import annotations

KL_HORIZON_BATCHES = 2  # β moves by at most 10 % per iteration


def make_value_head(hidden: int, device):
    """V(s) = w·h + b on the policy's last hidden state; small init so early values are near 0."""
    import torch

    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.normal_(head.weight, std=1.0 / (hidden + 1))
    torch.nn.init.zeros_(head.bias)
    return head.to(device)


def masked_mean(x, mask):
    """Mean of ``x`` over the positions where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x, mask):
    """(x - mean) / std over the masked positions (biased variance); masked positions become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * (var + 1e-8).rsqrt() * mask


def response_mask(response, end_ids):
    """1 for every answer token up to and including the first end-of-turn token, then 0: (B, R) float."""
    import torch

    is_end = torch.isin(response, torch.as_tensor(sorted(end_ids), device=response.device))
    after_end = (is_end.cumsum(1) - is_end.long()) > 0
    return (~after_end).float()


def kl_rewards(logp, ref_logp, mask, scores, beta: float):
    """Per-token rewards -β·(log π - log π_ref), plus each answer's score on its last token; returns (rewards, kl)."""
    import torch

    kl = (logp - ref_logp) * mask  # (B, R) per-token log-ratio, an unbiased KL estimate
    rewards = -beta * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)  # index of each answer's last token
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards, kl


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


def clipped_surrogate(logp, old_logp, advantages, mask, clip_range: float):
    """PPO's policy loss mean(max(-A·ρ, -A·clip(ρ, 1-ε, 1+ε))), ρ = π/π_old; returns (loss, ratio, clip_frac)."""
    import torch

    ratio = torch.exp(logp - old_logp)
    losses = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    clip_frac = masked_mean(((ratio - 1).abs() > clip_range).float(), mask)
    return masked_mean(losses, mask), ratio, clip_frac


def clipped_value_loss(values, old_values, returns, mask, clip_range_value: float):
    """0.5·mean(max((V - R)², (V_clip - R)²)), V_clip = V_old + clip(V - V_old, ±clip_range_value)."""
    import torch

    clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def adaptive_beta(beta: float, kl: float, target_kl: float, horizon: int = KL_HORIZON_BATCHES) -> float:
    """Ziegler et al. (2019)'s KL controller: β·(1 + clip(kl/target - 1, ±0.2)/horizon); target 0: β fixed."""
    if target_kl <= 0:
        return beta
    error = max(-0.2, min(0.2, kl / target_kl - 1))
    return beta * (1 + error / horizon)
