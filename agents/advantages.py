"""Pure functions shared by the learners: returns, GAE, whitening, baselines, KL, explained variance.

Every function takes torch tensors or numpy arrays and answers in the type it was given
(numpy in, numpy out; torch in, torch out). Rollout arrays are *time-major*: shape ``(T,)``
for one stream of steps or ``(T, B)`` for ``B`` env slots stepped together, row ``t``
holding step ``t`` of every slot (the layout of CleanRL and of Stable-Baselines3's
``RolloutBuffer``).

Step ``t`` of a slot means: the agent saw state ``s_t``, took action ``a_t``, received
reward ``r_t`` and landed in ``s_{t+1}``. A flag ``terminated[t]`` / ``truncated[t]`` /
``dones[t]`` says that this step ended the slot's episode, so ``s_{t+1}`` is the final
state of that episode and row ``t + 1`` (if any) belongs to a new episode.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lm_gym.error import InvalidArgument

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "MovingAverageBaseline",
    "discounted_returns",
    "explained_variance",
    "gae",
    "kl_k1",
    "kl_k3",
    "leave_one_out_advantages",
    "leave_one_out_baseline",
    "masked_mean",
    "moving_average",
    "whiten",
]

Array = Any  # torch.Tensor | np.ndarray


def _as_tensor(x: Array, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    t = torch.as_tensor(np.asarray(x))
    return t if dtype is None else t.to(dtype)


def _float(x: Array) -> torch.Tensor:
    t = _as_tensor(x)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def _like(result: torch.Tensor, reference: Array) -> Array:
    """``result`` as a numpy array if ``reference`` was not a torch tensor."""
    if isinstance(reference, torch.Tensor):
        return result
    return result.detach().cpu().numpy()


def _check_time_major(name: str, x: torch.Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise InvalidArgument(
            f"{name} has shape {tuple(x.shape)} but rewards have shape {tuple(shape)}; "
            "every rollout array must share the time-major (T,) or (T, B) layout."
        )


def _last(
    name: str, x: Array | None, rewards: torch.Tensor, ended_last: torch.Tensor
) -> torch.Tensor:
    """The bootstrap value after the last row, shape ``rewards.shape[1:]``."""
    if x is None:
        if not bool(ended_last.all()):
            raise InvalidArgument(
                f"{name} is required: the last step of some slot did not end its episode, so "
                f"its return must bootstrap from V(s_T). Pass {name} with shape {tuple(rewards.shape[1:])}."
            )
        return torch.zeros(rewards.shape[1:], dtype=rewards.dtype, device=rewards.device)
    t = _float(x).to(rewards.device, rewards.dtype)
    n_slots = rewards.shape[1] if rewards.ndim > 1 else 1
    if t.numel() != n_slots:
        raise InvalidArgument(
            f"{name} has {t.numel()} values but the rollout has {n_slots} slot(s)."
        )
    return t.reshape(rewards.shape[1:])


def discounted_returns(
    rewards: Array, dones: Array, gamma: float, last_value: Array | None = None
) -> Array:
    """Discounted reward-to-go ``G_t = r_t + gamma * (1 - done_t) * G_{t+1}``.

    Monte-Carlo returns as in REINFORCE (Williams 1992; Sutton & Barto 2018, eq. 3.9),
    restarted at every episode boundary.

    Args:
        rewards: ``(T,)`` or ``(T, B)``, time-major.
        dones: same shape; ``dones[t]`` is true when step ``t`` ended its episode
            (terminated or truncated: no bootstrapping either way).
        gamma: discount factor in [0, 1].
        last_value: ``G_T`` for the steps after the last row, shape ``()`` or ``(B,)``:
            the value estimate V(s_T) of slots whose last step did not end. Required
            when some slot's last step did not end; zeros otherwise.

    Returns:
        The returns, same shape and type as ``rewards``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise InvalidArgument(f"gamma must be in [0, 1], got {gamma!r}.")
    r = _float(rewards)
    d = _as_tensor(dones).to(r.device).bool()
    _check_time_major("dones", d, r.shape)
    if r.ndim not in (1, 2):
        raise InvalidArgument(f"rewards must have shape (T,) or (T, B), got {tuple(r.shape)}.")
    next_return = _last("last_value", last_value, r, d[-1])
    out = torch.empty_like(r)
    for t in reversed(range(r.shape[0])):
        next_return = r[t] + gamma * (~d[t]) * next_return
        out[t] = next_return
    return _like(out, rewards)


def gae(
    rewards: Array,
    values: Array,
    terminated: Array,
    truncated: Array,
    gamma: float,
    lam: float,
    last_values: Array | None = None,
    truncated_values: Array | None = None,
) -> tuple[Array, Array]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438, eq. 16).

    ``delta_t = r_t + gamma * V_next_t - V(s_t)`` and
    ``A_t = delta_t + gamma * lam * (1 - ended_t) * A_{t+1}``, where

    - ``V_next_t = 0`` when step ``t`` terminated (a true end: nothing follows);
    - ``V_next_t = truncated_values[t]`` when step ``t`` was truncated (the episode was
      cut by the token budget, so the return bootstraps from the value of the final,
      truncated observation; see Pardo et al. 2018, "Time limits in RL");
    - ``V_next_t = values[t + 1]`` otherwise, and ``last_values`` at ``t = T - 1``.

    The sum never flows across an episode boundary (``ended_t = terminated | truncated``).

    Layout (time-major; ``B`` may be absent):
        rewards, values, terminated, truncated: ``(T, B)``; ``values[t] = V(s_t)``, the
            value of the observation the action of step ``t`` was chosen from.
        last_values: ``(B,)``, ``V(s_T)`` of the observation after the last row, used for
            slots whose step ``T - 1`` did not end. Required if any such slot exists.
        truncated_values: ``(T, B)``, read only where ``truncated`` is true (anything,
            NaN included, elsewhere). Required if any step was truncated but not terminated.

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values`` (the value
        targets), both shaped and typed like ``rewards``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise InvalidArgument(f"gamma must be in [0, 1], got {gamma!r}.")
    if not 0.0 <= lam <= 1.0:
        raise InvalidArgument(f"lam must be in [0, 1], got {lam!r}.")
    r = _float(rewards)
    if r.ndim not in (1, 2):
        raise InvalidArgument(f"rewards must have shape (T,) or (T, B), got {tuple(r.shape)}.")
    v = _float(values).to(r.device, r.dtype)
    term = _as_tensor(terminated).to(r.device).bool()
    trunc = _as_tensor(truncated).to(r.device).bool() & ~term
    for name, x in (("values", v), ("terminated", term), ("truncated", trunc)):
        _check_time_major(name, x, r.shape)
    if truncated_values is None:
        if bool(trunc.any()):
            raise InvalidArgument(
                "truncated_values is required: some step was truncated, and a truncated step "
                "bootstraps from the value of its final observation."
            )
        tv = torch.zeros_like(r)
    else:
        tv = _float(truncated_values).to(r.device, r.dtype)
        _check_time_major("truncated_values", tv, r.shape)
    ended = term | trunc
    next_value = _last("last_values", last_values, r, ended[-1])
    zero = torch.zeros((), dtype=r.dtype, device=r.device)
    advantages = torch.empty_like(r)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(r.shape[0])):
        if t < r.shape[0] - 1:
            next_value = v[t + 1]
        bootstrap = torch.where(term[t], zero, torch.where(trunc[t], tv[t], next_value))
        delta = r[t] + gamma * bootstrap - v[t]
        next_advantage = delta + gamma * lam * (~ended[t]) * next_advantage
        advantages[t] = next_advantage
    return _like(advantages, rewards), _like(advantages + v, rewards)


def masked_mean(x: Array, mask: Array | None = None, dim: int | None = None) -> Array:
    """Mean of ``x`` over the entries where ``mask`` is nonzero (all entries if no mask)."""
    t = _float(x)
    if mask is None:
        out = t.mean() if dim is None else t.mean(dim)
    else:
        m = _as_tensor(mask).to(t.device, t.dtype)
        out = (t * m).sum() / m.sum() if dim is None else (t * m).sum(dim) / m.sum(dim)
    return _like(out, x)


def whiten(
    x: Array, mask: Array | None = None, shift_mean: bool = True, eps: float = 1e-8
) -> Array:
    """Normalise ``x`` to zero mean and unit variance over the entries ``mask`` selects.

    As TRL's ``masked_whiten``: mean and unbiased variance are taken over the masked
    entries only, every entry is transformed as ``(x - mean) / sqrt(var + eps)``, and with
    ``shift_mean=False`` the mean is added back (scale only, as for TRL's advantages).

    Raises:
        InvalidArgument: fewer than two entries are selected (the variance is undefined).
    """
    t = _float(x)
    m = torch.ones_like(t) if mask is None else _as_tensor(mask).to(t.device, t.dtype)
    if m.shape != t.shape:
        raise InvalidArgument(f"mask has shape {tuple(m.shape)} but x has shape {tuple(t.shape)}.")
    n = m.sum()
    if n < 2:
        raise InvalidArgument(f"whiten needs at least 2 selected entries, got {int(n)}.")
    mean = (t * m).sum() / n
    var = (((t - mean) ** 2) * m).sum() / (n - 1)  # Bessel-corrected, as TRL
    out = (t - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return _like(out, x)


def leave_one_out_baseline(rewards: Array, group_size: int) -> Array:
    """RLOO baseline: for each sample, the mean reward of the other samples of its prompt.

    Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"; Ahmadian et
    al. 2024 (RLOO). ``rewards`` has shape ``(G * k,)``, laid out as consecutive groups of
    ``k = group_size`` samples of the same prompt: ``b_i = (sum_group - r_i) / (k - 1)``.
    The advantages are ``rewards - baseline`` (:func:`leave_one_out_advantages`).
    """
    r = _float(rewards)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise InvalidArgument(f"group_size must be an integer >= 2, got {group_size!r}.")
    if r.ndim != 1 or r.numel() % group_size:
        raise InvalidArgument(
            f"rewards must be 1-D with a length divisible by group_size={group_size}, "
            f"got shape {tuple(r.shape)}."
        )
    groups = r.reshape(-1, group_size)  # (G, k)
    baseline = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return _like(baseline.reshape(-1), rewards)


def leave_one_out_advantages(rewards: Array, group_size: int) -> Array:
    """``rewards - leave_one_out_baseline(rewards, group_size)``."""
    r = _float(rewards)
    return _like(r - _float(leave_one_out_baseline(r, group_size)), rewards)


def moving_average(old: float | None, new: float, decay: float) -> float:
    """Exponential moving average ``decay * old + (1 - decay) * new``; ``new`` if ``old`` is None."""
    if not 0.0 <= decay <= 1.0:
        raise InvalidArgument(f"decay must be in [0, 1], got {decay!r}.")
    return float(new) if old is None else decay * float(old) + (1.0 - decay) * float(new)


class MovingAverageBaseline:
    """A scalar reward baseline tracked as an exponential moving average of batch means.

    The classic REINFORCE baseline (Williams 1992): ``b <- decay * b + (1 - decay) * mean(R)``,
    starting at the first batch's mean. ``value`` is 0.0 before the first update.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay <= 1.0:
            raise InvalidArgument(f"decay must be in [0, 1], got {decay!r}.")
        self.decay = decay
        self._value: float | None = None

    @property
    def value(self) -> float:
        """The current baseline (0.0 before any update)."""
        return 0.0 if self._value is None else self._value

    def update(self, rewards: Array) -> float:
        """Fold the mean of ``rewards`` into the average; returns the new value."""
        self._value = moving_average(self._value, float(_float(rewards).mean()), self.decay)
        return self._value


def _kl_inputs(logprobs: Array, ref_logprobs: Array) -> tuple[torch.Tensor, torch.Tensor]:
    lp, ref = _float(logprobs), _float(ref_logprobs)
    if lp.shape != ref.shape:
        raise InvalidArgument(
            f"logprobs {tuple(lp.shape)} and ref_logprobs {tuple(ref.shape)} must have the same shape."
        )
    return lp, ref.to(lp.device, lp.dtype)


def _apply_mask(kl: torch.Tensor, mask: Array | None) -> torch.Tensor:
    if mask is None:
        return kl
    m = _as_tensor(mask).to(kl.device).bool()
    return torch.where(m, kl, torch.zeros_like(kl))


def kl_k1(logprobs: Array, ref_logprobs: Array, mask: Array | None = None) -> Array:
    """Per-token KL estimate ``k1 = log p(x) - log q(x)`` for ``x ~ p`` (p the policy, q the reference).

    Unbiased, high variance, can be negative (Schulman, joschu.net/blog/kl-approx.html).
    The penalty of Ziegler et al. 2019 and TRL's ``kl_penalty="kl"``. Entries where
    ``mask`` is 0 are 0.
    """
    lp, ref = _kl_inputs(logprobs, ref_logprobs)
    return _like(_apply_mask(lp - ref, mask), logprobs)


def kl_k3(logprobs: Array, ref_logprobs: Array, mask: Array | None = None) -> Array:
    """Per-token KL estimate ``k3 = (r - 1) - log r`` with ``r = q(x) / p(x) = exp(ref - logp)``.

    Unbiased for KL(p || q) under ``x ~ p``, always >= 0, lower variance than k1
    (Schulman, joschu.net/blog/kl-approx.html). Entries where ``mask`` is 0 are 0.
    """
    lp, ref = _kl_inputs(logprobs, ref_logprobs)
    log_r = ref - lp
    return _like(_apply_mask(torch.expm1(log_r) - log_r, mask), logprobs)


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning LMs from Human Preferences", eq. 2).

    ``beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)``, as TRL's
    ``AdaptiveKLController``: the coefficient grows when the measured KL is above
    ``target`` and shrinks when below, by at most 20 % per ``horizon`` steps.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if init_kl_coef < 0:
            raise InvalidArgument(f"init_kl_coef must be >= 0, got {init_kl_coef!r}.")
        if target <= 0:
            raise InvalidArgument(f"target must be > 0, got {target!r}.")
        if horizon <= 0:
            raise InvalidArgument(f"horizon must be > 0, got {horizon!r}.")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adapt to ``current_kl`` measured over ``n_steps`` env steps; returns the new value."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


class FixedKLController:
    """A constant KL coefficient with :class:`AdaptiveKLController`'s interface."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise InvalidArgument(f"kl_coef must be >= 0, got {kl_coef!r}.")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No-op; returns the constant value."""
        return self.value


def explained_variance(y_pred: Array, y_true: Array) -> float:
    """``1 - Var[y_true - y_pred] / Var[y_true]``, NaN when ``Var[y_true] == 0``.

    As Stable-Baselines3's ``explained_variance``: 1 is a perfect value function, 0 is no
    better than predicting the mean, negative is worse.
    """
    pred = _float(y_pred).flatten().double()
    true = _float(y_true).flatten().double().to(pred.device)
    if pred.shape != true.shape:
        raise InvalidArgument(f"y_pred has {pred.numel()} values but y_true has {true.numel()}.")
    var_y = float(true.var(unbiased=False))
    if var_y == 0.0:
        return math.nan
    return 1.0 - float((true - pred).var(unbiased=False)) / var_y
