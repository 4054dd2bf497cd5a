"""PPO's arithmetic on small hand-computed tensors: GAE, the clipped surrogate, value clipping,
whitening, the KL-shaped rewards, the target_kl controller, and the resume state (no pickle).

    .venv/bin/python -m pytest tests/test_ppo_math.py -q      # a second or two, no model

Every expected number below is worked out by hand in the comment next to it.
"""

from __future__ import annotations

import json

import pytest
import torch

from gpt_demo.training.ppo import load_ppo_state, save_ppo_state
from gpt_demo.training.ppo_math import (adaptive_beta, clipped_surrogate, clipped_value_loss, gae, kl_rewards,
                                        masked_mean, response_mask, whiten)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# -- GAE -------------------------------------------------------------------------------------
def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    # γ = λ = 1: A_t = Σ_{k≥t} r_k - V_t = 1 - V_t; returns = A + V = 1 everywhere.
    adv, ret = gae(t([[0, 0, 1]]), t([[0.5, 0.2, 0.1]]), t([[1, 1, 1]]), gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([0.5, 0.8, 0.9])
    assert ret.tolist()[0] == pytest.approx([1.0, 1.0, 1.0])


def test_gae_discounts_by_gamma_and_lambda():
    # γ = λ = 0.5, V = [0.5, 0.2, 0.1], r = [0, 0, 1], V after the end = 0:
    # δ2 = 1 - 0.1 = 0.9;  δ1 = 0.5·0.1 - 0.2 = -0.15;  δ0 = 0.5·0.2 - 0.5 = -0.4
    # A2 = 0.9;  A1 = -0.15 + 0.25·0.9 = 0.075;  A0 = -0.4 + 0.25·0.075 = -0.38125
    adv, ret = gae(t([[0, 0, 1]]), t([[0.5, 0.2, 0.1]]), t([[1, 1, 1]]), gamma=0.5, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([-0.38125, 0.075, 0.9])
    assert ret.tolist()[0] == pytest.approx([0.11875, 0.275, 1.0])


def test_gae_ignores_values_past_the_end_of_the_answer():
    # The answer is 2 tokens (mask [1, 1, 0]); the value 5.0 at the pad must not leak in:
    # V = [1, 1, 0 (masked)], r = [0, 2, 0], γ = λ = 1:  A1 = 2 - 1 = 1,  A0 = (0 + 1 - 1) + A1 = 1.
    adv, ret = gae(t([[0, 2, 0]]), t([[1, 1, 5]]), t([[1, 1, 0]]), gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([1.0, 1.0, 0.0])
    assert ret.tolist()[0][:2] == pytest.approx([2.0, 2.0])


# -- the clipped surrogate -----------------------------------------------------------------------
def test_clipped_surrogate_takes_the_pessimistic_side_and_stops_clipped_gradients():
    # ratios ρ = [1.5, 0.5, 1.1], A = [1, 1, -1], ε = 0.2:
    #   t0: max(-1.5, -1.2) = -1.2 (clipped: no gradient);  t1: max(-0.5, -0.8) = -0.5 (unclipped)
    #   t2: max(1.1, 1.1) = 1.1;  mean = (-1.2 - 0.5 + 1.1) / 3 = -0.2;  |ρ-1| > ε at t0, t1: 2/3
    old = t([[0.0, 0.0, 0.0]])
    logp = torch.log(t([[1.5, 0.5, 1.1]])).requires_grad_(True)
    loss, ratio, clip_frac = clipped_surrogate(logp, old, t([[1, 1, -1]]), t([[1, 1, 1]]), clip_range=0.2)
    assert float(loss.detach()) == pytest.approx(-0.2)
    assert ratio.detach().tolist()[0] == pytest.approx([1.5, 0.5, 1.1])
    assert float(clip_frac) == pytest.approx(2 / 3)
    loss.backward()
    # d/dlogp of -A·ρ is -A·ρ: t0 is clipped (0), t1: -0.5 / 3, t2: +1.1 / 3
    assert logp.grad.tolist()[0] == pytest.approx([0.0, -0.5 / 3, 1.1 / 3])


def test_clipped_surrogate_ignores_masked_tokens():
    # Only t0 counts: ρ = 1, A = 2 -> loss -2; the masked token (huge ratio) changes nothing.
    loss, _, clip_frac = clipped_surrogate(torch.log(t([[1.0, 50.0]])), t([[0.0, 0.0]]), t([[2, 2]]), t([[1, 0]]), 0.2)
    assert float(loss) == pytest.approx(-2.0) and float(clip_frac) == 0.0


# -- value clipping ---------------------------------------------------------------------------------
def test_value_loss_clips_the_step_from_the_old_value():
    # V = [1.0, 0.0], V_old = [0.5, 0.5], R = [2, 2], clip 0.2 -> V_clip = [0.7, 0.3]
    #   t0: max((1-2)², (0.7-2)²) = max(1, 1.69) = 1.69;  t1: max((0-2)², (0.3-2)²) = max(4, 2.89) = 4
    #   loss = 0.5 · (1.69 + 4) / 2 = 1.4225
    loss = clipped_value_loss(t([[1.0, 0.0]]), t([[0.5, 0.5]]), t([[2.0, 2.0]]), t([[1, 1]]), 0.2)
    assert float(loss) == pytest.approx(1.4225)


def test_value_loss_without_clipping_is_half_the_squared_error():
    # Within the clip range, V_clip = V: 0.5 · mean((0.6-1)², (0.4-0)²) = 0.5 · 0.16 = 0.08
    loss = clipped_value_loss(t([[0.6, 0.4]]), t([[0.5, 0.5]]), t([[1.0, 0.0]]), t([[1, 1]]), 0.2)
    assert float(loss) == pytest.approx(0.08)


# -- whitening --------------------------------------------------------------------------------------
def test_whiten_uses_only_the_masked_positions():
    # x = [1, 2, 3, (100 masked)]: mean 2, biased variance (1 + 0 + 1) / 3 = 2/3
    # -> [-1/√(2/3), 0, 1/√(2/3), 0] = [-1.2247, 0, 1.2247, 0]
    x, mask = t([[1, 2, 3, 100]]), t([[1, 1, 1, 0]])
    out = whiten(x, mask)
    assert out.tolist()[0] == pytest.approx([-1.224744, 0.0, 1.224744, 0.0], abs=1e-5)
    assert float(masked_mean(out, mask)) == pytest.approx(0.0, abs=1e-6)


# -- rewards and masks ---------------------------------------------------------------------------------
def test_kl_rewards_put_the_score_on_the_last_answer_token():
    # log π - log π_ref = [0.5, 0, (masked)], β = 0.1 -> -β·kl = [-0.05, 0, 0]; score 2 on token 1 (the last).
    rewards, kl = kl_rewards(t([[-1, -2, -3]]), t([[-1.5, -2, -2]]), t([[1, 1, 0]]), t([2.0]), beta=0.1)
    assert kl.tolist()[0] == pytest.approx([0.5, 0.0, 0.0])
    assert rewards.tolist()[0] == pytest.approx([-0.05, 2.0, 0.0])


def test_response_mask_keeps_the_first_end_token_and_drops_what_follows():
    response = torch.tensor([[5, 7, 2, 9, 2], [4, 4, 4, 4, 4]])
    assert response_mask(response, {2}).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


# -- the target_kl controller ---------------------------------------------------------------------------
@pytest.mark.parametrize("kl, expected", [
    (8.0, 0.11),    # kl/target - 1 = 1, clipped to 0.2, halved by the horizon of 2: β·1.1
    (4.4, 0.105),   # error 0.1 -> β·1.05
    (3.0, 0.09),    # error -0.25, clipped to -0.2 -> β·0.9
    (4.0, 0.1),     # on target: unchanged
    (0.0, 0.09),    # no KL at all: the most it may fall, β·0.9
])
def test_adaptive_beta_moves_towards_the_target(kl, expected):
    assert adaptive_beta(0.1, kl, target_kl=4.0) == pytest.approx(expected)


def test_adaptive_beta_is_fixed_without_a_target():
    assert adaptive_beta(0.1, 100.0, target_kl=0.0) == 0.1


# -- resume state: safetensors + JSON ---------------------------------------------------------------------
def test_ppo_state_round_trips_through_safetensors_and_json(tmp_path):
    from safetensors.torch import load_file

    ckpt = tmp_path / "checkpoint-7"
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    for _ in range(2):  # two steps, so AdamW has moments and a step count
        opt.zero_grad()
        head(torch.randn(3, 4)).pow(2).sum().backward()
        opt.step()
    save_ppo_state(ckpt, head, opt, step=7, beta=0.0625)
    expected_next = torch.rand(3)  # what the RNG gives right after the save
    assert sorted(p.name for p in ckpt.iterdir()) == ["ppo_state.json", "ppo_state.safetensors"]
    assert json.loads((ckpt / "ppo_state.json").read_text())["step"] == 7
    assert "rng.cpu" in load_file(str(ckpt / "ppo_state.safetensors"))

    torch.manual_seed(123)  # a fresh run: other weights, other RNG
    head2 = torch.nn.Linear(4, 1)
    opt2 = torch.optim.AdamW(head2.parameters(), lr=1e-3)
    assert load_ppo_state(ckpt, head2, opt2) == (7, 0.0625)
    assert torch.equal(head2.weight, head.weight) and torch.equal(head2.bias, head.bias)
    for p, p2 in zip(head.parameters(), head2.parameters()):
        s, s2 = opt.state[p], opt2.state[p2]
        assert torch.equal(s["exp_avg"], s2["exp_avg"]) and torch.equal(s["exp_avg_sq"], s2["exp_avg_sq"])
        assert float(s["step"]) == float(s2["step"]) == 2.0
    assert opt2.param_groups[0]["lr"] == 1e-3 and tuple(opt2.param_groups[0]["betas"]) == (0.9, 0.999)
    assert torch.equal(torch.rand(3), expected_next)  # the RNG continues where the saved run stood
