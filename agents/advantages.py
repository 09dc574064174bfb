"""Pure functions that turn a rollout's rewards into advantages: GAE, returns, the group
baselines (GRPO, Dr. GRPO, RLOO), REINFORCE++ and ReMax, whitening, KL estimates.

Every function takes and returns torch tensors in the rollout's **batch-major** layout:

- ``(B,)`` one number per completion (a sequence-level score or advantage);
- ``(B, C)`` one number per completion token, row ``i`` the ``i``-th completion, column
  ``t`` its ``t``-th token, ``mask[i, t] = 1`` on tokens the policy generated (the
  ``completion_mask``; completions have different lengths, so rows are right-padded).

Groups: ``group_size = k`` consecutive rows are ``k`` completions of the same prompt
(rows ``0..k-1`` the first prompt, and so on), the layout the LM learners roll out.

A completion's last generated token ends its episode: nothing is bootstrapped past it (the
env scores the finished text, truncated or not, as TRL and RL4LMs do).
"""

from __future__ import annotations

import math

import torch

from lm_gym.error import InvalidArgument

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "MovingAverageBaseline",
    "discounted_returns",
    "explained_variance",
    "gae",
    "group_advantages",
    "kl_k1",
    "kl_k3",
    "leave_one_out_advantages",
    "masked_whiten",
    "overlong_penalty",
    "reinforce_pp_advantages",
    "remax_advantages",
    "token_rewards",
]


def _check_same(name: str, x: torch.Tensor, ref: torch.Tensor, ref_name: str = "mask") -> None:
    if x.shape != ref.shape:
        raise InvalidArgument(
            f"{name} has shape {tuple(x.shape)} but {ref_name} has shape {tuple(ref.shape)}; "
            "rollout tensors share the batch-major (B, C) layout"
        )


def _groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``scores`` (B,) as (B / k, k); checks the layout."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise InvalidArgument(f"group_size must be an integer >= 1, got {group_size!r}")
    if scores.ndim != 1 or scores.numel() % group_size:
        raise InvalidArgument(
            f"scores must be 1-D with a length divisible by group_size={group_size}, "
            f"got shape {tuple(scores.shape)}"
        )
    return scores.reshape(-1, group_size)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor | None = None, *, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the entries ``mask`` selects (TRL's ``masked_whiten``:
    Bessel-corrected variance); with ``shift_mean=False`` the mean is added back.

    Raises:
        InvalidArgument: fewer than two entries are selected (no variance).
    """
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    _check_same("x", x, m)
    n = m.sum()
    if n < 2:
        raise InvalidArgument(f"whitening needs at least 2 selected entries, got {int(n)}")
    mean = (x * m).sum() / n
    var = (((x - mean) ** 2) * m).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def token_rewards(
    scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None, kl_coef: float = 0.0
) -> torch.Tensor:
    """Per-token rewards (B, C): ``-kl_coef * kl_t`` at every token, plus the sequence score at
    the last generated token (Ziegler et al. 2019, eq. 2: the KL as a reward penalty)."""
    lengths = mask.sum(1).long()  # (B,)
    if bool((lengths < 1).any()):
        raise InvalidArgument("every completion needs at least one generated token in mask")
    rewards = torch.zeros_like(mask, dtype=scores.dtype)
    rewards[torch.arange(len(scores)), lengths - 1] = scores
    if kl is not None:
        _check_same("kl", kl, mask)
        rewards = rewards - kl_coef * kl * mask
    return rewards


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward-to-go ``G_t = r_t + gamma * G_{t+1}`` within each completion (B, C); 0 on padding."""
    if not 0.0 <= gamma <= 1.0:
        raise InvalidArgument(f"gamma must be in [0, 1], got {gamma!r}")
    _check_same("rewards", rewards, mask)
    m = mask.to(rewards.dtype)
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * m[:, t]
        out[:, t] = running
    return out


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over each completion.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V`` past the last generated token 0 (the
    episode ends there), ``A_t = delta_t + gamma * lam * A_{t+1}``. Returns ``(advantages,
    returns = advantages + values)``, both (B, C), 0 on padding.
    """
    if not 0.0 <= gamma <= 1.0:
        raise InvalidArgument(f"gamma must be in [0, 1], got {gamma!r}")
    if not 0.0 <= lam <= 1.0:
        raise InvalidArgument(f"lam must be in [0, 1], got {lam!r}")
    _check_same("rewards", rewards, mask)
    _check_same("values", values, mask)
    m = mask.to(rewards.dtype)
    values = values * m
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * m[:, t]
        next_value = values[:, t]
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * m


def group_advantages(
    scores: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO's outcome advantage (Shao et al. 2024, §4.1.2): ``(r_i - mean(group)) / (std(group) + eps)``
    with the unbiased std, as verl; ``scale=False`` is Dr. GRPO's ``r_i - mean(group)`` (Liu et
    al. 2025, §3.1). A group of one has no baseline: as verl, its mean counts as 0 and its std as
    1, so its advantage is its score. A group of equal scores gets advantage 0."""
    groups = _groups(scores, group_size)  # (G, k)
    if group_size == 1:
        return scores.clone()
    adv = groups - groups.mean(1, keepdim=True)
    if scale:
        adv = adv / (groups.std(1, keepdim=True) + eps)
    return adv.reshape(-1)


def leave_one_out_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO (Kool et al. 2019; Ahmadian et al. 2024, eq. 5): ``r_i - mean of the other k - 1``
    scores of its group. A group of one has no other sample: its baseline is 0 (as verl)."""
    groups = _groups(scores, group_size)  # (G, k)
    if group_size == 1:
        return scores.clone()
    baseline = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).reshape(-1)


def reinforce_pp_advantages(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025, eqs. 3-5): token rewards ``r_t = score * 1[t = last] - beta * KL_t``,
    returns ``G_t = sum_{s >= t} gamma^(s-t) r_s``, advantages = ``G`` whitened over every
    token of the global batch. Returns ``(advantages, returns)``, (B, C) each."""
    returns = discounted_returns(token_rewards(scores, mask, kl, kl_coef), mask, gamma)
    if mask.sum() < 2:
        return returns, returns
    return masked_whiten(returns, mask) * mask, returns


def remax_advantages(scores: torch.Tensor, greedy_scores: torch.Tensor) -> torch.Tensor:
    """ReMax (Li et al. 2023, eq. 8): ``r(x, y) - r(x, y_greedy)``, the greedy completion of the
    same prompt as the baseline (B,)."""
    _check_same("greedy_scores", greedy_scores, scores, "scores")
    return scores - greedy_scores


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), (B,): 0 up to ``max_length -
    buffer`` tokens, then falling linearly to ``-penalty`` at ``max_length`` (and beyond)."""
    if isinstance(buffer, bool) or not isinstance(buffer, int) or not 0 < buffer <= max_length:
        raise InvalidArgument(f"buffer must be an integer in [1, max_length={max_length}], got {buffer!r}")
    over = (lengths.to(torch.float32) - (max_length - buffer)).clamp(min=0)  # (B,)
    return -penalty * (over / buffer).clamp(max=1.0)


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token ``k1 = log p - log q`` for tokens sampled from p (the policy; q the reference):
    unbiased, can be negative (joschu.net/blog/kl-approx.html). The usual reward penalty."""
    _check_same("ref_logprobs", ref_logprobs, logprobs, "logprobs")
    kl = logprobs - ref_logprobs
    return kl if mask is None else kl * mask


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token ``k3 = (q/p - 1) - log(q/p)``: unbiased, >= 0, low variance
    (joschu.net/blog/kl-approx.html). GRPO's KL loss term (Shao et al. 2024, eq. 4)."""
    _check_same("ref_logprobs", ref_logprobs, logprobs, "logprobs")
    log_r = ref_logprobs - logprobs
    kl = torch.expm1(log_r) - log_r
    return kl if mask is None else kl * mask


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor) -> float:
    """``1 - Var[y_true - y_pred] / Var[y_true]`` (Stable-Baselines3's); NaN when Var[y_true] = 0."""
    pred, true = y_pred.flatten().double(), y_true.flatten().double()
    if pred.shape != true.shape:
        raise InvalidArgument(f"y_pred has {pred.numel()} values but y_true has {true.numel()}")
    var_y = float(true.var(unbiased=False))
    if var_y == 0.0:
        return math.nan
    return 1.0 - float((true - pred).var(unbiased=False)) / var_y


class MovingAverageBaseline:
    """REINFORCE's classic baseline (Williams 1992): ``b <- decay * b + (1 - decay) * mean(R)``,
    starting at the first batch's mean; ``value`` is 0.0 before the first update."""

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay <= 1.0:
            raise InvalidArgument(f"decay must be in [0, 1], got {decay!r}")
        self.decay = decay
        self.state: float | None = None
        """The average so far (None before any batch); saved and restored with checkpoints."""

    @property
    def value(self) -> float:
        return 0.0 if self.state is None else self.state

    def update(self, returns: torch.Tensor) -> float:
        mean = float(returns.mean())
        self.state = mean if self.state is None else self.decay * self.state + (1 - self.decay) * mean
        return self.state


class AdaptiveKLController:
    """Ziegler et al. 2019's adaptive KL coefficient (§2.2), as TRL's:
    ``beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)``."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if init_kl_coef < 0 or target <= 0 or horizon <= 0:
            raise InvalidArgument(
                f"need init_kl_coef >= 0, target > 0, horizon > 0; got {init_kl_coef!r}, {target!r}, {horizon!r}"
            )
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional * n_steps / self.horizon
        return self.value


class FixedKLController:
    """A constant KL coefficient with :class:`AdaptiveKLController`'s interface."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise InvalidArgument(f"kl_coef must be >= 0, got {kl_coef!r}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value
