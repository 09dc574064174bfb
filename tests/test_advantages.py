"""Hand-computed checks of agents.advantages (batch-major (B, C) layout; the arithmetic is
written out in each test, as in Stable-Baselines3's tests/test_gae.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from agents.advantages import (
    AdaptiveKLController,
    FixedKLController,
    MovingAverageBaseline,
    discounted_returns,
    explained_variance,
    gae,
    group_advantages,
    kl_k1,
    kl_k3,
    leave_one_out_advantages,
    masked_whiten,
    overlong_penalty,
    reinforce_pp_advantages,
    remax_advantages,
    token_rewards,
)
from lm_gym.error import InvalidArgument


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


# Two completions: row 0 has 3 tokens, row 1 has 1 (or 2) and is right-padded.
MASK_3_1 = t([[1, 1, 1], [1, 0, 0]])
MASK_3_2 = t([[1, 1, 1], [1, 1, 0]])


def test_masked_whiten_matches_bessel_corrected_hand_computation():
    x = t([[1, 2, 3], [4, 100, 100]])  # the 100s are padding
    # selected 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5,
    # unbiased var 5 / (4 - 1) = 5/3
    sel = MASK_3_1.bool()
    out = masked_whiten(x, MASK_3_1, eps=0.0)
    assert_close(out[sel], t([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(5 / 3))
    out = masked_whiten(x, MASK_3_1)  # default eps 1e-8 inside the sqrt
    assert_close(out[sel], t([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(5 / 3 + 1e-8), rtol=0, atol=1e-15)
    out = masked_whiten(x, MASK_3_1, shift_mean=False, eps=0.0)  # the mean added back
    assert_close(out[sel], t([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(5 / 3) + 2.5)
    # without a mask every entry counts: same numbers
    assert_close(
        masked_whiten(t([1, 2, 3, 4]), eps=0.0), t([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(5 / 3)
    )


def test_masked_whiten_errors():
    with pytest.raises(InvalidArgument, match="at least 2 selected entries, got 1"):
        masked_whiten(t([[1, 2], [3, 4]]), t([[1, 0], [0, 0]]))
    with pytest.raises(InvalidArgument, match="at least 2 selected entries, got 0"):
        masked_whiten(t([1, 2]), t([0, 0]))
    with pytest.raises(InvalidArgument, match=r"x has shape \(3,\) but mask has shape \(2,\)"):
        masked_whiten(t([1, 2, 3]), t([1, 1]))


def test_token_rewards():
    scores = t([1.0, 2.0])
    kl = t([[0.1, 0.2, 0.3], [0.4, 9.0, 9.0]])  # the 9s are padding
    # no KL: the score sits on each row's last generated token (index 2 and index 0)
    assert_close(token_rewards(scores, MASK_3_1), t([[0, 0, 1], [2, 0, 0]]))
    # kl_coef 0.5: -0.5 * kl on every generated token, score added on the last one
    # row 0: [-0.05, -0.1, 1 - 0.15]; row 1: [2 - 0.2, 0, 0]
    expected = t([[-0.05, -0.1, 0.85], [1.8, 0.0, 0.0]])
    assert_close(token_rewards(scores, MASK_3_1, kl, kl_coef=0.5), expected)
    # a bool mask gives the same
    assert_close(token_rewards(scores, MASK_3_1.bool(), kl, kl_coef=0.5), expected)


def test_token_rewards_errors():
    with pytest.raises(InvalidArgument, match="at least one generated token"):
        token_rewards(t([1.0, 2.0]), t([[1, 1], [0, 0]]))
    with pytest.raises(InvalidArgument, match=r"kl has shape \(2, 2\) but mask has shape \(2, 3\)"):
        token_rewards(t([1.0, 2.0]), MASK_3_1, t([[0, 0], [0, 0]]), 0.1)


def test_discounted_returns():
    rewards = t([[1, 2, 3], [4, 7, 7]])  # the 7s are padding and must not leak
    assert_close(discounted_returns(rewards, MASK_3_1), t([[6, 5, 3], [4, 0, 0]]))  # gamma 1: sums
    # gamma 0.5, row 0: G2 = 3, G1 = 2 + 0.5 * 3 = 3.5, G0 = 1 + 0.5 * 3.5 = 2.75; row 1: 4
    assert_close(discounted_returns(rewards, MASK_3_1, 0.5), t([[2.75, 3.5, 3.0], [4, 0, 0]]))
    assert_close(discounted_returns(rewards, MASK_3_1, 0.0), t([[1, 2, 3], [4, 0, 0]]))
    with pytest.raises(InvalidArgument, match=r"gamma must be in \[0, 1\], got 1.5"):
        discounted_returns(rewards, MASK_3_1, 1.5)


GAE_REWARDS = t([[0.0, 0.0, 1.0], [0.5, 2.0, 3.0]])  # row 1's 3.0 is padding
GAE_VALUES = t([[0.5, 0.4, 0.6], [1.0, 0.2, 5.0]])  # row 1's 5.0 is padding


def test_gae_by_hand():
    adv, ret = gae(GAE_REWARDS, GAE_VALUES, MASK_3_2, gamma=0.9, lam=0.8)  # gamma * lam = 0.72
    # row 0: d2 = 1 + 0.9*0 - 0.6 = 0.4                 A2 = 0.4
    #        d1 = 0 + 0.9*0.6 - 0.4 = 0.14              A1 = 0.14 + 0.72*0.4 = 0.428
    #        d0 = 0 + 0.9*0.4 - 0.5 = -0.14             A0 = -0.14 + 0.72*0.428 = 0.16816
    # row 1 (2 tokens, V past the last one is 0):
    #        d1 = 2 + 0.9*0 - 0.2 = 1.8                 A1 = 1.8
    #        d0 = 0.5 + 0.9*0.2 - 1.0 = -0.32           A0 = -0.32 + 0.72*1.8 = 0.976
    assert_close(adv, t([[0.16816, 0.428, 0.4], [0.976, 1.8, 0.0]]))
    # returns = A + V, 0 on padding
    assert_close(ret, t([[0.66816, 0.828, 1.0], [1.976, 2.0, 0.0]]))


def test_gae_lam_1_is_monte_carlo_and_lam_0_is_td():
    adv, ret = gae(GAE_REWARDS, GAE_VALUES, MASK_3_2, gamma=0.9, lam=1.0)
    # G row 0: [0.81, 0.9, 1.0]; row 1: [0.5 + 0.9*2, 2, 0] = [2.3, 2, 0]
    returns = discounted_returns(GAE_REWARDS, MASK_3_2, 0.9)
    assert_close(returns, t([[0.81, 0.9, 1.0], [2.3, 2.0, 0.0]]))
    # A = G - V: [0.81-0.5, 0.9-0.4, 1-0.6], [2.3-1, 2-0.2, 0]
    assert_close(adv, t([[0.31, 0.5, 0.4], [1.3, 1.8, 0.0]]))
    assert_close(adv, returns - GAE_VALUES * MASK_3_2)
    assert_close(ret, returns)
    adv, _ = gae(GAE_REWARDS, GAE_VALUES, MASK_3_2, gamma=0.9, lam=0.0)  # A = delta
    assert_close(adv, t([[-0.14, 0.14, 0.4], [-0.32, 1.8, 0.0]]))


def test_gae_errors():
    with pytest.raises(InvalidArgument, match=r"gamma must be in \[0, 1\], got -0.1"):
        gae(GAE_REWARDS, GAE_VALUES, MASK_3_2, gamma=-0.1, lam=0.9)
    with pytest.raises(InvalidArgument, match=r"lam must be in \[0, 1\], got 1.1"):
        gae(GAE_REWARDS, GAE_VALUES, MASK_3_2, gamma=0.9, lam=1.1)
    with pytest.raises(
        InvalidArgument, match=r"values has shape \(2, 2\) but mask has shape \(2, 3\)"
    ):
        gae(GAE_REWARDS, GAE_VALUES[:, :2], MASK_3_2, gamma=0.9, lam=0.9)


def test_group_advantages_scaled_and_dr_grpo():
    scores = t([1.0, 2.0, 3.0, 0.0, 0.0, 3.0])  # two groups of 3
    # group 0: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1
    # group 1: mean 1, deviations [-1, -1, 2], unbiased std sqrt(6 / 2) = sqrt(3)
    eps = 1e-6
    expected = t(
        [-1 / (1 + eps), 0, 1 / (1 + eps)] + [d / (math.sqrt(3) + eps) for d in (-1, -1, 2)]
    )
    assert_close(group_advantages(scores, 3), expected)
    eps = 0.5
    expected = t([-1 / 1.5, 0, 1 / 1.5] + [d / (math.sqrt(3) + 0.5) for d in (-1, -1, 2)])
    assert_close(group_advantages(scores, 3, eps=0.5), expected)
    # Dr. GRPO: r - mean only
    assert_close(group_advantages(scores, 3, scale=False), t([-1, 0, 1, -1, -1, 2]))


def test_group_advantages_edge_groups():
    scores = t([0.3, -2.0])
    assert_close(group_advantages(scores, 1), scores)  # verl: mean 0, std 1
    assert_close(group_advantages(scores, 1, scale=False), scores)
    equal = t([4.0, 4.0, 4.0, -1.0, -1.0, -1.0])
    assert_close(group_advantages(equal, 3), torch.zeros(6, dtype=torch.float64))  # 0 / (0 + eps)
    assert_close(group_advantages(equal, 3, scale=False), torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("fn", [group_advantages, leave_one_out_advantages])
def test_group_layout_errors(fn):
    with pytest.raises(InvalidArgument, match=r"divisible by group_size=2, got shape \(5,\)"):
        fn(torch.zeros(5), 2)
    with pytest.raises(InvalidArgument, match=r"got shape \(2, 3\)"):
        fn(torch.zeros(2, 3), 3)
    for bad in (0, True, 2.0):
        with pytest.raises(InvalidArgument, match="group_size must be an integer >= 1"):
            fn(torch.zeros(4), bad)


def test_leave_one_out_advantages():
    scores = t([1.0, 2.0, 6.0])
    # baselines: (2 + 6) / 2 = 4, (1 + 6) / 2 = 3.5, (1 + 2) / 2 = 1.5
    assert_close(leave_one_out_advantages(scores, 3), t([1 - 4, 2 - 3.5, 6 - 1.5]))
    # two groups of 2: the other sample is the baseline
    assert_close(leave_one_out_advantages(t([1, 3, 5, 2]), 2), t([-2, 2, 3, -3]))
    assert_close(leave_one_out_advantages(t([0.3, -2.0]), 1), t([0.3, -2.0]))
    assert_close(leave_one_out_advantages(t([7.0, 7.0, 7.0]), 3), t([0.0, 0.0, 0.0]))


def test_reinforce_pp_advantages_by_hand():
    scores = t([1.0, 2.0])
    kl = t([[0.1, 0.2, 0.0], [0.0, 0.4, 9.0]])  # 9.0 is padding
    adv, ret = reinforce_pp_advantages(scores, kl, MASK_3_2, kl_coef=0.5)
    # token rewards: row 0 [-0.05, -0.1, 1.0]; row 1 [0, 2 - 0.2, pad]
    # returns (gamma 1): row 0 [0.85, 0.9, 1.0]; row 1 [1.8, 1.8, 0]
    assert_close(ret, t([[0.85, 0.9, 1.0], [1.8, 1.8, 0.0]]))
    # over the 5 tokens: mean 6.35 / 5 = 1.27; deviations [-0.42, -0.37, -0.27], [0.53, 0.53]
    # squares 0.1764 + 0.1369 + 0.0729 + 0.2809 + 0.2809 = 0.948; unbiased var 0.948 / 4 = 0.237
    dev = t([[-0.42, -0.37, -0.27], [0.53, 0.53, 0.0]])
    assert_close(adv, dev / math.sqrt(0.237 + 1e-8))
    sel = MASK_3_2.bool()
    assert_close(adv[sel].mean(), t(0.0), rtol=0, atol=1e-12)
    assert_close(adv[sel].std(), t(1.0), rtol=0, atol=1e-7)
    assert adv[1, 2] == 0.0  # padding
    # gamma 0.5, row 0: G = [-0.05 + 0.5 * (-0.1 + 0.5), -0.1 + 0.5, 1] = [0.15, 0.4, 1]
    _, ret = reinforce_pp_advantages(scores, kl, MASK_3_2, kl_coef=0.5, gamma=0.5)
    assert_close(ret, t([[0.15, 0.4, 1.0], [0.9, 1.8, 0.0]]))


def test_remax_advantages():
    assert_close(remax_advantages(t([1.0, 0.5]), t([0.5, 0.5])), t([0.5, 0.0]))
    with pytest.raises(
        InvalidArgument, match=r"greedy_scores has shape \(3,\) but scores has shape \(2,\)"
    ):
        remax_advantages(t([1.0, 0.5]), t([0.5, 0.5, 0.5]))


def test_overlong_penalty():
    lengths = torch.tensor([0, 6, 7, 8, 10, 12])
    # max 10, buffer 4: 0 up to 10 - 4 = 6 tokens, then -(L - 6) / 4, -1 from 10 on
    expected = torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    assert_close(overlong_penalty(lengths, max_length=10, buffer=4), expected)
    assert_close(overlong_penalty(lengths, max_length=10, buffer=4, penalty=2.0), 2 * expected)
    # buffer = max_length: linear from 0 tokens
    assert_close(
        overlong_penalty(torch.tensor([0, 5, 10]), 10, 10), torch.tensor([0.0, -0.5, -1.0])
    )
    for bad in (0, 11, 2.5, True):
        with pytest.raises(
            InvalidArgument, match=r"buffer must be an integer in \[1, max_length=10\]"
        ):
            overlong_penalty(lengths, 10, bad)


LOGP = t([[-1.0, -2.0], [-0.5, -3.0]])
REF_LOGP = t([[-1.5, -1.0], [-0.5, -4.0]])
KL_MASK = t([[1, 1], [1, 0]])


def test_kl_k1():
    # log p - log q
    assert_close(kl_k1(LOGP, REF_LOGP), t([[0.5, -1.0], [0.0, 1.0]]))
    assert_close(kl_k1(LOGP, REF_LOGP, KL_MASK), t([[0.5, -1.0], [0.0, 0.0]]))


def test_kl_k3():
    # log r = log q - log p = [[-0.5, 1], [0, -1]]; k3 = (e^{log r} - 1) - log r
    expected = t([[math.exp(-0.5) - 1 + 0.5, math.e - 1 - 1], [0.0, math.exp(-1) - 1 + 1]])
    out = kl_k3(LOGP, REF_LOGP)
    assert_close(out, expected)
    assert bool((out >= 0).all())
    assert_close(kl_k3(LOGP, REF_LOGP, KL_MASK), expected * KL_MASK)
    assert kl_k3(LOGP, REF_LOGP, KL_MASK)[1, 1] == 0.0


@pytest.mark.parametrize("fn", [kl_k1, kl_k3])
def test_kl_shape_error(fn):
    with pytest.raises(
        InvalidArgument, match=r"ref_logprobs has shape \(2, 1\) but logprobs has shape \(2, 2\)"
    ):
        fn(LOGP, REF_LOGP[:, :1])


def test_explained_variance():
    y = t([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == 1.0
    assert explained_variance(torch.full_like(y, 2.5), y) == 0.0  # predicting the mean
    # pred [1, 2, 3, 3]: residual [0, 0, 0, 1], var 0.1875 (population); var y 1.25
    assert explained_variance(t([1.0, 2.0, 3.0, 3.0]), y) == pytest.approx(1 - 0.1875 / 1.25)
    assert math.isnan(explained_variance(y, torch.full_like(y, 3.0)))  # constant targets
    with pytest.raises(InvalidArgument, match="y_pred has 3 values but y_true has 4"):
        explained_variance(y[:3], y)


def test_moving_average_baseline():
    b = MovingAverageBaseline(decay=0.9)
    assert b.state is None and b.value == 0.0
    assert b.update(t([1.0, 3.0])) == 2.0  # the first batch's mean
    assert b.state == 2.0 and b.value == 2.0
    assert b.update(t([4.0, 6.0])) == pytest.approx(2.3)  # 0.9 * 2 + 0.1 * 5
    assert b.state == pytest.approx(2.3) and b.value == pytest.approx(2.3)
    restored = MovingAverageBaseline(0.9)
    restored.state = b.state
    assert restored.update(t([0.0])) == pytest.approx(0.9 * 2.3)  # + 0.1 * 0
    with pytest.raises(InvalidArgument, match=r"decay must be in \[0, 1\], got 1.5"):
        MovingAverageBaseline(1.5)


def test_adaptive_kl_controller():
    c = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    # 6.6 / 6 - 1 = 0.1 (inside +-0.2): beta = 0.1 * (1 + 0.1 * 256 / 10000) = 0.100256
    assert c.update(6.6, 256) == pytest.approx(0.100256)
    assert c.value == pytest.approx(0.100256)
    # 12 / 6 - 1 = 1 clipped to 0.2: beta *= 1 + 0.2 * 1000 / 10000 = 1.02
    assert c.update(12.0, 1000) == pytest.approx(0.100256 * 1.02)
    # 0 / 6 - 1 = -1 clipped to -0.2: beta *= 1 - 0.02 = 0.98
    assert c.update(0.0, 1000) == pytest.approx(0.100256 * 1.02 * 0.98)
    for bad in ((-0.1, 6.0, 1.0), (0.1, 0.0, 1.0), (0.1, 6.0, 0.0)):
        with pytest.raises(
            InvalidArgument, match="need init_kl_coef >= 0, target > 0, horizon > 0"
        ):
            AdaptiveKLController(*bad)


def test_fixed_kl_controller():
    c = FixedKLController(0.05)
    assert c.value == 0.05
    assert c.update(100.0, 1000) == 0.05 and c.value == 0.05
    with pytest.raises(InvalidArgument, match="kl_coef must be >= 0, got -1"):
        FixedKLController(-1)
