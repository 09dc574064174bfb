"""Hand-computed checks of agents.advantages (the arithmetic is written out in each test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.advantages import (
    AdaptiveKLController,
    FixedKLController,
    MovingAverageBaseline,
    discounted_returns,
    explained_variance,
    gae,
    kl_k1,
    kl_k3,
    leave_one_out_advantages,
    leave_one_out_baseline,
    masked_mean,
    moving_average,
    whiten,
)
from lm_gym.error import InvalidArgument

NAN = float("nan")


def test_discounted_returns_restart_at_done_and_bootstrap_last_value():
    # gamma = 0.5; step 1 ends its episode; the last row bootstraps from last_value = 4.
    # G_2 = 3 + 0.5 * 4 = 5 ; G_1 = 2 (done) ; G_0 = 1 + 0.5 * 2 = 2
    out = discounted_returns(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 0]), 0.5, last_value=4.0)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [2.0, 2.0, 5.0])


def test_discounted_returns_time_major_batch_torch():
    # two slots, gamma = 0.9, both end at the last row:
    # slot 0: G_1 = 1, G_0 = 0 + 0.9 * 1 = 0.9 ; slot 1: G_1 = 2, G_0 = 1 (done at t=0)
    rewards = torch.tensor([[0.0, 1.0], [1.0, 2.0]])
    dones = torch.tensor([[False, True], [True, True]])
    out = discounted_returns(rewards, dones, 0.9)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, torch.tensor([[0.9, 1.0], [1.0, 2.0]]))


def test_discounted_returns_requires_last_value_when_episode_open():
    with pytest.raises(InvalidArgument, match="last_value is required"):
        discounted_returns(np.array([1.0, 2.0]), np.array([0, 0]), 0.9)


def test_gae_terminated_truncated_by_hand():
    # gamma = 0.9, lam = 0.8 (gamma * lam = 0.72); step 1 terminates, step 3 is truncated
    # with V(final obs) = 0.6.
    # t=3 trunc: delta = 1 + 0.9*0.6 - 0.4 = 1.14            A3 = 1.14
    # t=2      : delta = 2 + 0.9*0.4 - 0.2 = 2.16            A2 = 2.16 + 0.72*1.14 = 2.9808
    # t=1 term : delta = 0 + 0 - 1.0 = -1.0                  A1 = -1.0 (no flow across the end)
    # t=0      : delta = 1 + 0.9*1.0 - 0.5 = 1.4             A0 = 1.4 + 0.72*(-1.0) = 0.68
    adv, ret = gae(
        rewards=np.array([1.0, 0.0, 2.0, 1.0]),
        values=np.array([0.5, 1.0, 0.2, 0.4]),
        terminated=np.array([0, 1, 0, 0]),
        truncated=np.array([0, 0, 0, 1]),
        gamma=0.9,
        lam=0.8,
        truncated_values=np.array([NAN, NAN, NAN, 0.6]),
    )
    np.testing.assert_allclose(adv, [0.68, -1.0, 2.9808, 1.14], rtol=1e-6)
    np.testing.assert_allclose(ret, [1.18, 0.0, 3.1808, 1.54], rtol=1e-6)


def test_gae_batch_bootstraps_last_values_lam_one_is_monte_carlo():
    # gamma = 0.5, lam = 1, nothing ends, last_values = [1, 2].
    # slot 0: t=1 delta = 0 + 0.5*1 - 0.6 = -0.1 ; t=0 delta = 1 + 0.5*0.6 - 0.2 = 1.1, A0 = 1.1 - 0.05 = 1.05
    #         returns 1.25 = 1 + 0.5*0 + 0.25*1 and 0.5 = 0 + 0.5*1
    # slot 1: t=1 delta = 1 + 0.5*2 - 0.8 = 1.2 ; t=0 delta = 0 + 0.4 - 0.4 = 0, A0 = 0.5*1.2 = 0.6
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    values = torch.tensor([[0.2, 0.4], [0.6, 0.8]])
    false = torch.zeros(2, 2, dtype=torch.bool)
    adv, ret = gae(rewards, values, false, false, 0.5, 1.0, last_values=torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(adv, torch.tensor([[1.05, 0.6], [-0.1, 1.2]]))
    torch.testing.assert_close(ret, torch.tensor([[1.25, 1.0], [0.5, 2.0]]))


def test_gae_terminated_wins_over_truncated_and_errors():
    # both flags set: terminated -> no bootstrap, truncated_values not needed
    adv, _ = gae([1.0], [0.5], [1], [1], 0.9, 0.9)
    np.testing.assert_allclose(adv, [0.5])
    with pytest.raises(InvalidArgument, match="truncated_values is required"):
        gae([1.0], [0.5], [0], [1], 0.9, 0.9)
    with pytest.raises(InvalidArgument, match="last_values is required"):
        gae([1.0], [0.5], [0], [0], 0.9, 0.9)
    with pytest.raises(InvalidArgument, match=r"values has shape \(3,\)"):
        gae([1.0, 2.0], [0.5, 0.1, 0.2], [0, 1], [0, 0], 0.9, 0.9)
    with pytest.raises(InvalidArgument, match="3 values but the rollout has 2 slot"):
        gae(
            np.ones((1, 2)),
            np.ones((1, 2)),
            np.zeros((1, 2)),
            np.zeros((1, 2)),
            0.9,
            0.9,
            last_values=[1, 2, 3],
        )


def test_whiten_masked_like_trl():
    # selected [1, 3, 5]: mean 3, unbiased var (4 + 0 + 4) / 2 = 4, std 2
    x = torch.tensor([1.0, 3.0, 5.0, 10.0])
    mask = torch.tensor([1, 1, 1, 0])
    torch.testing.assert_close(whiten(x, mask), torch.tensor([-1.0, 0.0, 1.0, 3.5]))
    torch.testing.assert_close(
        whiten(x, mask, shift_mean=False), torch.tensor([2.0, 3.0, 4.0, 6.5])
    )
    # no mask: [1, 3] -> mean 2, var 2 -> +-1/sqrt(2)
    np.testing.assert_allclose(
        whiten(np.array([1.0, 3.0])), [-math.sqrt(0.5), math.sqrt(0.5)], rtol=1e-6
    )
    with pytest.raises(InvalidArgument, match="at least 2 selected entries, got 1"):
        whiten(x, torch.tensor([0, 0, 1, 0]))


def test_masked_mean():
    assert float(masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1, 1, 0]))) == 1.5
    np.testing.assert_allclose(
        masked_mean(np.array([[1.0, 3.0], [5.0, 7.0]]), np.array([[1, 0], [1, 1]]), dim=1),
        [1.0, 6.0],
    )


def test_leave_one_out_baseline_by_hand():
    # groups of k = 3: [1, 2, 3] (sum 6) -> [5/2, 4/2, 3/2]; [4, 0, 8] (sum 12) -> [8/2, 12/2, 4/2]
    r = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 8.0])
    np.testing.assert_allclose(leave_one_out_baseline(r, 3), [2.5, 2.0, 1.5, 4.0, 6.0, 2.0])
    np.testing.assert_allclose(leave_one_out_advantages(r, 3), [-1.5, 0.0, 1.5, 0.0, -6.0, 6.0])
    with pytest.raises(InvalidArgument, match="divisible by group_size=4"):
        leave_one_out_baseline(r, 4)
    with pytest.raises(InvalidArgument, match="group_size must be an integer >= 2, got 1"):
        leave_one_out_baseline(r, 1)


def test_moving_average_baseline():
    assert moving_average(None, 3.0, 0.9) == 3.0
    assert moving_average(2.0, 4.0, 0.75) == pytest.approx(2.5)  # 0.75*2 + 0.25*4
    b = MovingAverageBaseline(decay=0.9)
    assert b.value == 0.0
    assert b.update(np.array([1.0, 3.0])) == 2.0  # first batch mean
    assert b.update(torch.tensor([4.0])) == pytest.approx(2.2)  # 0.9*2 + 0.1*4
    with pytest.raises(InvalidArgument, match="decay must be in"):
        MovingAverageBaseline(decay=1.5)


def test_kl_estimators_by_hand():
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.5, -1.0])
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([0.5, -1.0]))
    # log r = ref - logp = [-0.5, 1.0]; k3 = e^{log r} - 1 - log r
    #   = [0.6065306597 - 1 + 0.5, 2.7182818285 - 1 - 1] = [0.1065306597, 0.7182818285]
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([0.1065306597, 0.7182818285]))
    torch.testing.assert_close(
        kl_k3(logp, ref, mask=torch.tensor([1, 0])), torch.tensor([0.1065306597, 0.0])
    )
    np.testing.assert_allclose(kl_k1(np.array([-1.0]), np.array([-1.0])), [0.0])
    with pytest.raises(InvalidArgument, match="same shape"):
        kl_k1(logp, ref[:1])


def test_adaptive_kl_controller_ziegler():
    kl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    # KL 12: error 12/6 - 1 = 1 -> clip 0.2; 1 + 0.2 * 1000/10000 = 1.02 -> 0.204
    assert kl.update(12.0, 1000) == pytest.approx(0.204)
    # KL 3: error -0.5 -> clip -0.2; x 0.98 -> 0.19992
    assert kl.update(3.0, 1000) == pytest.approx(0.19992)
    # KL 6.6: error 0.1; 1 + 0.1 * 0.5 = 1.05 -> 0.209916
    kl.update(6.6, 5000)
    assert kl.value == pytest.approx(0.209916)
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 10) == 0.05 and fixed.value == 0.05
    with pytest.raises(InvalidArgument, match="target must be > 0, got 0"):
        AdaptiveKLController(0.1, 0, 10)


def test_explained_variance_like_sb3():
    # Var[y] = 1.25; y - y_hat = [0, 0, 0, -1], Var = 0.25 - 0.0625 = 0.1875; 1 - 0.15 = 0.85
    assert explained_variance(
        np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.0, 2.0, 3.0, 4.0])
    ) == pytest.approx(0.85)
    assert explained_variance(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == pytest.approx(
        1.0
    )
    assert math.isnan(explained_variance(np.array([1.0, 2.0]), np.array([3.0, 3.0])))
