"""Hand-computed checks of agents.losses (the arithmetic is written out in each test)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.testing import assert_close

from agents.losses import (
    LOSS_AGG_MODES,
    aggregate,
    clipped_policy_loss,
    sequence_log_ratio,
    sequence_policy_loss,
    value_loss,
)
from lm_gym.error import InvalidArgument


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def logs(ratios) -> torch.Tensor:
    """log-probabilities whose ratio to old log-probabilities of 0 is ``ratios``."""
    return torch.log(t(ratios))


LOSS = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = t([[1, 1, 1], [1, 0, 0]])  # row 0: 3 tokens, row 1: 1 token


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", (1 + 2 + 3 + 4) / 4),  # 2.5
        ("seq-mean-token-mean", (6 / 3 + 4 / 1) / 2),  # 3
        ("seq-mean-token-sum", (6 + 4) / 2),  # 5
        ("seq-mean-token-sum-norm", (6 + 4) / (2 * 3)),  # B = 2, norm_length = C = 3
    ],
)
def test_aggregate_modes(mode, expected):
    assert_close(aggregate(LOSS, MASK, mode), t(expected))
    assert_close(aggregate(LOSS, MASK.bool(), mode), t(expected))


def test_aggregate_norm_length():
    # (6 + 4) / (2 * 5)
    assert_close(aggregate(LOSS, MASK, "seq-mean-token-sum-norm", norm_length=5), t(1.0))
    for bad in (0, True, 2.5):
        with pytest.raises(InvalidArgument, match="norm_length must be an integer >= 1"):
            aggregate(LOSS, MASK, "seq-mean-token-sum-norm", norm_length=bad)


def test_aggregate_errors():
    valid = re.escape(str(list(LOSS_AGG_MODES)))
    with pytest.raises(
        InvalidArgument, match=rf"loss_agg_mode='sum' is invalid: use one of {valid}"
    ):
        aggregate(LOSS, MASK, "sum")
    with pytest.raises(InvalidArgument, match=r"loss has shape \(2, 3\) but mask has \(2, 2\)"):
        aggregate(LOSS, MASK[:, :2], "token-mean")


def test_clipped_policy_loss_by_hand():
    # row 0: A = +1, ratios [1.1 (inside), 1.5 (above 1.2), 0.5 (below 0.8)]
    # row 1: A = -2, ratios [0.9 (inside), 0.5 (below 0.8), 1.5 (above 1.2)]
    logprobs = logs([[1.1, 1.5, 0.5], [0.9, 0.5, 1.5]])
    old = torch.zeros_like(logprobs)
    out = clipped_policy_loss(logprobs, old, t([1.0, -2.0]), torch.ones_like(logprobs), eps_low=0.2)
    assert_close(out.ratio, t([[1.1, 1.5, 0.5], [0.9, 0.5, 1.5]]))
    # loss = max(-A r, -A clip(r, 0.8, 1.2))
    # row 0: max(-1.1, -1.1) = -1.1; max(-1.5, -1.2) = -1.2 (clipped); max(-0.5, -0.8) = -0.5
    # row 1: max(1.8, 1.8) = 1.8; max(1.0, 1.6) = 1.6 (clipped); max(3.0, 2.4) = 3.0
    assert_close(out.loss, t([[-1.1, -1.2, -0.5], [1.8, 1.6, 3.0]]))
    assert out.clipped.tolist() == [[False, True, False], [False, True, False]]


def test_clip_higher():
    logprobs, old, mask, adv = logs([[1.25, 1.4]]), t([[0.0, 0.0]]), t([[1, 1]]), t([1.0])
    # eps_high 0.28: bounds [0.8, 1.28]; 1.25 passes (-1.25), 1.4 is clipped (-1.28)
    out = clipped_policy_loss(logprobs, old, adv, mask, eps_low=0.2, eps_high=0.28)
    assert_close(out.loss, t([[-1.25, -1.28]]))
    assert out.clipped.tolist() == [[False, True]]
    # symmetric 0.2 (the default eps_high = eps_low): 1.25 is clipped at 1.2
    for kwargs in ({"eps_high": 0.2}, {}):
        out = clipped_policy_loss(logprobs, old, adv, mask, eps_low=0.2, **kwargs)
        assert_close(out.loss, t([[-1.2, -1.2]]))
        assert out.clipped.tolist() == [[True, True]]
    # the lower bound stays 1 - eps_low: A = -1, r = 0.7 -> max(0.7, 0.8) = 0.8, clipped
    out = clipped_policy_loss(
        logs([[0.7]]), t([[0.0]]), t([-1.0]), t([[1]]), eps_low=0.2, eps_high=0.28
    )
    assert_close(out.loss, t([[0.8]]))
    assert out.clipped.tolist() == [[True]]


def test_dual_clip():
    # tokens (A, r): (-1, 4.0), (-1, 2.0), (+1, 4.0), (-1, 0.5)
    logprobs = logs([[4.0, 2.0, 4.0, 0.5]])
    old, mask = torch.zeros_like(logprobs), torch.ones_like(logprobs)
    adv = t([[-1.0, -1.0, 1.0, -1.0]])
    out = clipped_policy_loss(logprobs, old, adv, mask, eps_low=0.2, dual_clip=3.0)
    # (-1, 4): max(4, 1.2) = 4 > -c A = 3 -> 3, flagged
    # (-1, 2): max(2, 1.2) = 2 < 3 -> 2, not flagged
    # (+1, 4): positive advantage, no dual clip: max(-4, -1.2) = -1.2, clipped by PPO
    # (-1, 0.5): max(0.5, 0.8) = 0.8 < 3, clipped by PPO
    assert_close(out.loss, t([[3.0, 2.0, -1.2, 0.8]]))
    assert out.clipped.tolist() == [[True, False, True, True]]
    plain = clipped_policy_loss(logprobs, old, adv, mask, eps_low=0.2)
    assert_close(plain.loss, t([[4.0, 2.0, -1.2, 0.8]]))  # unbounded without dual clip
    assert plain.clipped.tolist() == [[False, False, True, True]]


def test_padding_gets_ratio_1_and_loss_0():
    # the padding token's log-prob 5.0 would be a ratio e^5, clipped
    logprobs, old = t([[math.log(1.5), 5.0]]), t([[0.0, 0.0]])
    out = clipped_policy_loss(logprobs, old, t([1.0]), t([[1, 0]]), dual_clip=3.0)
    assert_close(out.ratio, t([[1.5, 1.0]]))
    assert_close(out.loss, t([[-1.2, 0.0]]))
    assert out.clipped.tolist() == [[True, False]]


def test_sequence_advantages_broadcast_like_token_advantages():
    logprobs = logs([[1.1, 1.5, 0.5], [0.9, 0.5, 1.5]])
    old = torch.zeros_like(logprobs)
    mask = t([[1, 1, 1], [1, 1, 0]])
    per_seq = clipped_policy_loss(logprobs, old, t([1.0, -2.0]), mask)
    per_tok = clipped_policy_loss(logprobs, old, t([[1.0] * 3, [-2.0] * 3]), mask)
    assert_close(per_seq.loss, per_tok.loss)
    assert_close(per_seq.ratio, per_tok.ratio)
    assert torch.equal(per_seq.clipped, per_tok.clipped)
    assert_close(per_seq.loss, t([[-1.1, -1.2, -0.5], [1.8, 1.6, 0.0]]))


def test_clipped_policy_loss_errors():
    lp = torch.zeros(2, 3)
    for eps_low, eps_high in ((0.0, None), (1.0, None), (0.2, 0.0), (0.2, -0.1)):
        with pytest.raises(
            InvalidArgument, match="clip ranges must satisfy 0 < eps_low < 1 and eps_high > 0"
        ):
            clipped_policy_loss(lp, lp, torch.zeros(2), lp, eps_low=eps_low, eps_high=eps_high)
    with pytest.raises(InvalidArgument, match="dual_clip must be > 1"):
        clipped_policy_loss(lp, lp, torch.zeros(2), lp, dual_clip=1.0)
    with pytest.raises(
        InvalidArgument, match=r"advantages have shape \(2, 2\); use \(B,\) or \(B, C\) = \(2, 3\)"
    ):
        clipped_policy_loss(lp, lp, torch.zeros(2, 2), lp)
    with pytest.raises(InvalidArgument, match=r"mask \(2, 2\) must have the same shape"):
        clipped_policy_loss(lp, lp, torch.zeros(2), torch.zeros(2, 2))


def test_sequence_log_ratio_value_and_gradient():
    logprobs = t([[-1.0, -2.0, -3.0], [-0.5, -7.0, -7.0]]).requires_grad_()
    old = t([[-1.5, -1.5, -2.0], [-1.0, 0.0, 0.0]])
    # token log ratios: row 0 [0.5, -0.5, -1.0], mean -1/3; row 1 [0.5] (then padding)
    out = sequence_log_ratio(logprobs, old, MASK)
    assert_close(out, t([[-1 / 3] * 3, [0.5, 0.0, 0.0]]))
    # each token carries only the gradient of its own log-prob: d out / d logprobs = mask
    (grad,) = torch.autograd.grad(out.sum(), logprobs)
    assert_close(grad, MASK)
    jac = torch.autograd.functional.jacobian(
        lambda lp: sequence_log_ratio(lp, old, MASK), logprobs.detach()
    )
    assert_close(jac.reshape(6, 6), torch.diag(MASK.flatten()))


def test_sequence_policy_loss_gspo_ranges():
    # bounds [1 - 3e-4, 1 + 4e-4]; old log-probs 0, so token log ratios = logprobs
    # row 0: [1e-4, 3e-4] -> log s = 2e-4, inside; A = +1 -> -e^{2e-4} on both tokens
    # row 1: [1e-3, 1e-3] -> s = e^{1e-3} > 1.0004; A = +1 -> max(-s, -1.0004) = -1.0004, clipped
    # row 2: [-1e-3, pad] -> s = e^{-1e-3} < 0.9997; A = -1 -> max(s, 0.9997) = 0.9997, clipped
    # row 3: [1e-3, pad] -> s = e^{1e-3} above the range; A = -1 -> max(s, 1.0004) = s, not clipped
    logprobs = t([[1e-4, 3e-4], [1e-3, 1e-3], [-1e-3, 0.5], [1e-3, 0.5]])
    mask = t([[1, 1], [1, 1], [1, 0], [1, 0]])
    out = sequence_policy_loss(
        logprobs, torch.zeros_like(logprobs), t([1.0, 1.0, -1.0, -1.0]), mask
    )
    s0, s1, s2 = math.exp(2e-4), math.exp(1e-3), math.exp(-1e-3)
    assert_close(out.ratio, t([[s0, s0], [s1, s1], [s2, 1.0], [s1, 1.0]]))
    assert_close(out.loss, t([[-s0, -s0], [-1.0004, -1.0004], [0.9997, 0.0], [s1, 0.0]]))
    assert out.clipped.tolist() == [[False, False], [True, True], [True, False], [False, False]]
    # PPO's eps 0.2 would clip none of them
    wide = sequence_policy_loss(
        logprobs, torch.zeros_like(logprobs), t([1.0, 1.0, -1.0, -1.0]), mask, 0.2, 0.2
    )
    assert not bool(wide.clipped.any())
    with pytest.raises(InvalidArgument, match="clip ranges must satisfy"):
        sequence_policy_loss(logprobs, logprobs, t([1.0] * 4), mask, eps_low=0.0)


def test_value_loss():
    values = t([1.0, 2.0, 1.0, 3.0])
    old_values = t([1.0, 1.0, 0.0, 2.9])
    returns = t([0.0, 1.2, 1.0, 3.5])
    # unclipped 0.5 (V - G)^2: 0.5 * [1, 0.64, 0, 0.25]
    assert_close(value_loss(values, old_values, returns), t([0.5, 0.32, 0.0, 0.125]))
    # clip 0.2: V_clip = V_old + clip(V - V_old, -0.2, 0.2) = [1.0, 1.2, 0.2, 3.0]
    # (V_clip - G)^2 = [1, 0, 0.64, 0.25]; max with the unclipped [1, 0.64, 0, 0.25]
    # = [1, 0.64, 0.64, 0.25]: token 2 moved onto its return but past the clip, so it still pays
    assert_close(value_loss(values, old_values, returns, clip=0.2), t([0.5, 0.32, 0.32, 0.125]))
