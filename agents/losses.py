"""Pure functions for the policy-gradient losses: the clipped ratio (PPO, GRPO, DAPO's
clip-higher, dual clip), GSPO's sequence-level ratio, the clipped value loss, and the four
ways the field aggregates a (B, C) token loss into one number.

Layout as in :mod:`agents.advantages`: ``(B, C)`` tensors, one row per completion, with a
``mask`` of the generated tokens. Advantages may be per token (B, C) or per sequence (B,).
Every loss is returned per token (B, C) so that :func:`aggregate` decides the weighting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lm_gym.error import InvalidArgument

__all__ = [
    "LOSS_AGG_MODES",
    "PolicyLoss",
    "aggregate",
    "clipped_policy_loss",
    "sequence_log_ratio",
    "sequence_policy_loss",
    "value_loss",
]

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
"""verl's names: every token alike (DAPO); each sequence's token mean, then the mean over
sequences (GRPO, GSPO); each sequence's token sum, then the mean over sequences; the token
sums over a constant length (Dr. GRPO)."""


def check_agg_mode(mode: str) -> str:
    if mode not in LOSS_AGG_MODES:
        raise InvalidArgument(f"loss_agg_mode={mode!r} is invalid: use one of {list(LOSS_AGG_MODES)}")
    return mode


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, norm_length: int | None = None) -> torch.Tensor:
    """One number from a (B, C) token loss over ``mask``:

    - ``token-mean``: ``sum(loss * m) / sum(m)`` (DAPO, Yu et al. 2025, eq. 8);
    - ``seq-mean-token-mean``: ``mean_i [sum_t loss * m / sum_t m]`` (GRPO, Shao et al. 2024, eq. 3);
    - ``seq-mean-token-sum``: ``mean_i [sum_t loss * m]``;
    - ``seq-mean-token-sum-norm``: ``sum(loss * m) / (B * norm_length)``, Dr. GRPO's constant
      normaliser (Liu et al. 2025, §3.1; ``norm_length`` the generation budget, default C).
      verl divides by ``C`` only, leaving the 1/B to its batch size; here it is explicit.
    """
    m = mask.to(loss.dtype)
    if loss.shape != m.shape:
        raise InvalidArgument(f"loss has shape {tuple(loss.shape)} but mask has {tuple(m.shape)}")
    check_agg_mode(mode)
    token_sums = (loss * m).sum(1)  # (B,)
    if mode == "token-mean":
        return token_sums.sum() / m.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        return (token_sums / m.sum(1).clamp(min=1)).mean()
    if mode == "seq-mean-token-sum":
        return token_sums.mean()
    length = loss.shape[1] if norm_length is None else norm_length
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise InvalidArgument(f"norm_length must be an integer >= 1, got {norm_length!r}")
    return token_sums.sum() / (loss.shape[0] * length)


@dataclass
class PolicyLoss:
    """A policy loss per token and what the metrics report about it."""

    loss: torch.Tensor
    """(B, C) the loss of each token (minimised)."""
    ratio: torch.Tensor
    """(B, C) the importance ratio pi / pi_old used (per token, or the sequence ratio broadcast)."""
    clipped: torch.Tensor
    """(B, C) bool: where the clip bound was the active term (the ``train/clip_fraction``)."""


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if advantages.ndim == 1:
        return advantages[:, None].expand_as(like)
    if advantages.shape != like.shape:
        raise InvalidArgument(
            f"advantages have shape {tuple(advantages.shape)}; use (B,) or (B, C) = {tuple(like.shape)}"
        )
    return advantages


def _check_clip(eps_low: float, eps_high: float, dual_clip: float | None) -> None:
    if not (0 < eps_low < 1) or eps_high <= 0:
        raise InvalidArgument(f"clip ranges must satisfy 0 < eps_low < 1 and eps_high > 0, got {eps_low!r}, {eps_high!r}")
    if dual_clip is not None and dual_clip <= 1:
        raise InvalidArgument(f"dual_clip must be > 1 (Ye et al. 2020 use 3), got {dual_clip!r}")


def _clip_objective(
    log_ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float, dual_clip: float | None
) -> PolicyLoss:
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - eps_low, 1 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if dual_clip is not None:  # Ye et al. 2020 ("Mastering Complex Control in MOBA Games"), eq. 5
        bound = -adv * dual_clip
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(adv < 0, torch.minimum(loss, bound), loss)
        is_clipped = is_clipped | dual
    return PolicyLoss(loss=loss, ratio=ratio, clipped=is_clipped)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    dual_clip: float | None = None,
) -> PolicyLoss:
    """PPO's clipped surrogate per token (Schulman et al. 2017, eq. 7), as a loss:
    ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` with ``r = exp(logp - logp_old)``.

    ``eps_high`` > ``eps_low`` is DAPO's clip-higher (Yu et al. 2025, eq. 10; default: equal).
    ``dual_clip = c`` bounds the loss of negative advantages by ``-c A`` (Ye et al. 2020).
    Padding tokens get ratio 1 and loss 0.
    """
    eps_high = eps_low if eps_high is None else eps_high
    _check_clip(eps_low, eps_high, dual_clip)
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise InvalidArgument(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape"
        )
    m = mask > 0
    log_ratio = (logprobs - old_logprobs).masked_fill(~m, 0.0)
    out = _clip_objective(log_ratio, _per_token(advantages, logprobs), eps_low, eps_high, dual_clip)
    out.loss = out.loss.masked_fill(~m, 0.0)
    out.clipped = out.clipped & m
    return out


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's length-normalised log ratio (Zheng et al. 2025, eq. 7), in its token form (eq. 13):
    every token of row ``i`` carries the *value* ``log s_i = mean_t (logp - logp_old)`` (the log
    of the geometric mean of the token ratios) and the *gradient* of its own ``logp``
    (``sg[log s_i] + logp - sg[logp]``). (B, C), 0 on padding."""
    m = mask.to(logprobs.dtype)
    token_log_ratio = (logprobs - old_logprobs) * m
    seq = token_log_ratio.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
    return (seq.detach() + logprobs - logprobs.detach()) * m


def sequence_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
) -> PolicyLoss:
    """GSPO's clipped objective (Zheng et al. 2025, eq. 5): the clip of PPO applied to the
    sequence ratio ``s_i`` of :func:`sequence_log_ratio`, with GSPO's small ranges (the paper's
    3e-4 / 4e-4). Aggregate with ``seq-mean-token-mean`` for the paper's ``1/G sum_i``."""
    _check_clip(eps_low, eps_high, None)
    m = mask > 0
    log_ratio = sequence_log_ratio(logprobs, old_logprobs, mask)
    out = _clip_objective(log_ratio, _per_token(advantages, logprobs), eps_low, eps_high, None)
    out.loss = out.loss.masked_fill(~m, 0.0)
    out.clipped = out.clipped & m
    return out


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None = None
) -> torch.Tensor:
    """``0.5 (V - G)^2`` per token; with ``clip``, PPO's pessimistic clipped form
    ``0.5 max((V - G)^2, (V_old + clip(V - V_old, -c, c) - G)^2)`` ("The 37 implementation
    details of PPO", #9)."""
    loss = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (clipped - returns) ** 2)
    return 0.5 * loss
