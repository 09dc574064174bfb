"""REINFORCE for language models: the policy gradient with a baseline, a KL penalty and an
entropy bonus, over whole sampled episodes.

``grad J = E[ sum_t grad log pi(a_t | s_t) * (R - b) ]`` (Williams 1992), where one episode
is one completion and ``R`` its return: the sum of the env's rewards (the task's score at
the last token) minus ``kl_coef * sum_t KL_t``, the k1 estimate ``log pi(a_t|s_t) -
log pi_ref(a_t|s_t)`` of the KL to the frozen reference, folded into the reward as in
Ziegler et al. 2019 and RLOO (Ahmadian et al. 2024, "Back to Basics").

Baselines ``b``:

- ``"none"``: b = 0.
- ``"moving_average"``: an exponential moving average of past batches' mean return
  (Williams 1992), taken *before* this batch updates it.
- ``"leave_one_out"``: k = ``samples_per_prompt`` completions of the same prompt (k
  consecutive env slots reset with the same seed, see :mod:`agents.common`), each
  baselined by the mean return of the other k - 1 (Kool et al. 2019, "Buy 4 REINFORCE
  samples, get a baseline for free!").

One update is one optimizer step over the whole batch; ``minibatch_size`` splits the
teacher-forced forward/backward into chunks whose gradients accumulate (memory only, same
step). Each chunk costs one forward of the policy, never a forward per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from agents import common
from agents.advantages import MovingAverageBaseline, kl_k1, leave_one_out_baseline
from agents.base import Agent, Callback
from agents.common import LMAgentConfig, RolloutBatch
from lm_gym import error

BASELINES = ("none", "moving_average", "leave_one_out")
DEFAULT_LR = (1e-3, 1e-5)
"""Adam step size when learning_rate is None: (fresh toy policy, pretrained LM)."""


@dataclass
class ReinforceConfig(LMAgentConfig):
    """REINFORCE's settings (with the shared ones of :class:`agents.common.LMAgentConfig`)."""

    baseline: str = "moving_average"
    """Baseline subtracted from the return: "none", "moving_average" or "leave_one_out"."""
    baseline_decay: float = 0.9
    """Decay of the moving-average baseline (weight of the old value)."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus (mean per-token entropy of the policy)."""
    normalize_advantages: bool = False
    """Divide R - b by its standard deviation over the batch."""
    minibatch_size: int | None = None
    """Episodes per forward/backward chunk (gradient accumulation); None: the whole batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline not in BASELINES:
            raise error.InvalidArgument(
                f"baseline={self.baseline!r} is invalid: use one of {list(BASELINES)}"
            )
        if self.baseline == "leave_one_out" and self.samples_per_prompt < 2:
            raise error.InvalidArgument(
                f"baseline='leave_one_out' needs samples_per_prompt >= 2 completions per prompt, "
                f"got samples_per_prompt={self.samples_per_prompt}"
            )
        if not (isinstance(self.baseline_decay, (int, float)) and 0 <= self.baseline_decay <= 1):
            raise error.InvalidArgument(
                f"baseline_decay={self.baseline_decay!r} is invalid: use a number in [0, 1]"
            )
        if not (isinstance(self.ent_coef, (int, float)) and self.ent_coef >= 0):
            raise error.InvalidArgument(f"ent_coef={self.ent_coef!r} is invalid: use a number >= 0")
        if self.minibatch_size is not None and (
            isinstance(self.minibatch_size, bool) or not isinstance(self.minibatch_size, int)
            or self.minibatch_size < 1
        ):
            raise error.InvalidArgument(
                f"minibatch_size={self.minibatch_size!r} is invalid: use an integer >= 1 or None"
            )


class Reinforce(Agent):
    """REINFORCE with a baseline over a causal-LM policy (see the module docstring).

    Args:
        env: an env id, a ``gym.Env`` or a ``gym.vector.VectorEnv`` (autoresetting).
        config: a :class:`ReinforceConfig` or a dict; keyword arguments override its fields.

    Example::

        agent = Reinforce("lm_gym/Copy-v0", baseline="leave_one_out", samples_per_prompt=4, seed=0)
        agent.learn(20_000, progress_bar=True)
    """

    name: ClassVar[str] = "reinforce"

    def __init__(
        self,
        env: str | gym.Env | VectorEnv,
        config: ReinforceConfig | dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.config: ReinforceConfig = common.make_config(ReinforceConfig, config, overrides)
        common.init_lm_agent(self, env, self.config, default_lr=DEFAULT_LR)
        self.baseline = MovingAverageBaseline(self.config.baseline_decay)

    # -- the update -----------------------------------------------------------------------

    def _returns(self, batch: RolloutBatch) -> tuple[np.ndarray, np.ndarray]:
        """Per-episode returns R (B,) and the per-token KL to the reference (B, C)."""
        kl = np.zeros_like(batch.logprobs)
        if batch.ref_logprobs is not None:
            kl = kl_k1(batch.logprobs, batch.ref_logprobs, batch.completion_mask)  # (B, C)
        return batch.scores - self.kl_coef * kl.sum(1), kl

    def _advantages(self, returns: np.ndarray) -> np.ndarray:
        """R - b for each episode (B,)."""
        cfg = self.config
        if cfg.baseline == "leave_one_out":
            baseline = leave_one_out_baseline(returns, cfg.samples_per_prompt)
        elif cfg.baseline == "moving_average":
            baseline = np.full_like(returns, self.baseline.value)
            self.baseline.update(returns)
        else:
            baseline = np.zeros_like(returns)
        adv = returns - baseline
        if cfg.normalize_advantages and len(adv) > 1:
            adv = adv / (adv.std() + 1e-8)
        return adv.astype(np.float32)

    def _update(self, batch: RolloutBatch) -> dict[str, float]:
        returns, kl = self._returns(batch)
        advantages = self._advantages(returns)  # (B,)
        n = len(advantages)
        size = self.config.minibatch_size or n
        cols = common.completion_slice(batch)
        loss_sum = entropy_sum = 0.0
        self.policy.train()
        for start in range(0, n, size):
            idx = np.arange(start, min(start + size, n))
            t = batch.tensors(self.policy.device, idx)
            mask = t["completion_mask"]  # (b, C)
            ev = common.teacher_forced(self.policy, t, cols, self.action_mask)  # (b, C) fields
            adv = torch.as_tensor(advantages[idx], device=mask.device)  # (b,)
            seq_logprob = (ev.logprobs * mask).sum(1)  # (b,): log pi(completion | prompt)
            entropy = common.masked_entropy(ev.entropy, mask, self.config.ent_coef > 0)
            # Sum over the batch here, mean over the batch through the 1/n scale: chunks
            # add up to the gradient of the full-batch mean.
            loss = -(seq_logprob * adv).sum() / n - self.config.ent_coef * entropy * len(idx) / n
            loss.backward()
            loss_sum += loss.item()
            entropy_sum += entropy.item() * len(idx)
        grad_norm = common.optimizer_step(self)
        mask = batch.completion_mask
        return {
            "train/policy_loss": loss_sum,
            "train/entropy": entropy_sum / n,
            "train/kl": float((kl * mask).sum(1).mean()),
            "train/kl_coef": self.kl_coef,
            "train/baseline": self.baseline.value,
            "train/advantage_std": float(advantages.std()),
            "train/grad_norm": grad_norm,
            "train/learning_rate": self.optimizer.param_groups[0]["lr"],
        }

    # -- the protocol ---------------------------------------------------------------------

    def learn(
        self,
        total_timesteps: int,
        callback: Callback | None = None,
        progress_bar: bool = False,
        resume: bool = False,
    ) -> Reinforce:
        """Train for ``total_timesteps`` env steps (with ``resume=True``: restore the last
        checkpoint in ``run_dir`` and train until ``num_timesteps == total_timesteps``)."""
        return common.learn(
            self, total_timesteps, self._update, self.reference, callback, progress_bar, resume
        )

    def predict(
        self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """Actions for (N, L) or (L,) observations; KV-cached across calls when
        ``episode_start`` flags the slots that start an episode (None: prefill all)."""
        return common.predict(self.policy, obs, episode_start, deterministic, self.action_mask), state

    def save(self, path: str | Path) -> None:
        common.save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | VectorEnv | None = None, **overrides: Any) -> Reinforce:
        return common.load_agent(cls, path, env, **overrides)

    def config_dict(self) -> dict[str, Any]:
        return common.lm_config_dict(self)

    def algorithm_state(self) -> dict[str, Any]:
        return {"baseline": self.baseline._value, "kl_coef": self.kl_coef}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.baseline._value = state["baseline"]
        self.kl_coef = float(state["kl_coef"])
