"""PPO for language models: the clipped objective over token-level actions, with the RLHF
recipe of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences") and
Ouyang et al. 2022 (InstructGPT), as TRL's PPO trainer implements it.

One update:

1. Roll out a batch of whole episodes with the KV-cached policy (:func:`agents.common.collect`);
   the frozen reference scores the batch in one teacher-forced forward.
2. Per-token rewards ``r_t = -beta * KL_t + env_reward_t``: the k1 KL estimate to the
   reference at every token, the task's score added at the last token (Ziegler et al. 2019,
   eq. 2). ``beta`` is fixed or adapted toward a target KL (Ziegler et al. 2019, §2.2).
3. GAE (Schulman et al. 2016) over each completion with the rollout's values; the episode
   ends at its last token (truncation at the token budget is scored, so it is terminal).
   Advantages are whitened over the batch ("The 37 implementation details of PPO", #7).
4. ``n_epochs`` passes over shuffled minibatches; each minibatch is re-scored with ONE
   teacher-forced forward of the policy (log-probs with the sampling temperature, values,
   entropy), never a forward per token. Loss = clipped policy loss + ``vf_coef`` x clipped
   value loss - ``ent_coef`` x entropy (Schulman et al. 2017, eq. 7 and 9; 37 details #8,
   #9); gradients clipped to ``max_grad_norm`` (37 details #11). The epochs stop early when
   the approximate KL to the rollout policy passes ``target_kl`` (37 details, "target_kl").

Metrics: ``train/approx_kl`` uses the k3 estimator of joschu.net/blog/kl-approx.html;
``train/clip_fraction`` is the share of tokens whose ratio left [1 - eps, 1 + eps].
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
from agents.advantages import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    kl_k1,
    masked_mean,
    whiten,
)
from agents.base import Agent, Callback
from agents.common import LMAgentConfig, RolloutBatch
from lm_gym import error

DEFAULT_LR = (3e-4, 1e-5)
"""Adam step size when learning_rate is None: (fresh toy policy, pretrained LM)."""


@dataclass
class PPOConfig(LMAgentConfig):
    """PPO's settings (with the shared ones of :class:`agents.common.LMAgentConfig`)."""

    n_epochs: int = 4
    """Passes over each rollout batch."""
    minibatch_size: int = 16
    """Episodes per minibatch (one teacher-forced forward/backward and optimizer step each)."""
    gamma: float = 1.0
    """Discount factor over tokens (1: the score counts fully at every token, as TRL)."""
    gae_lambda: float = 0.95
    """GAE lambda: bias/variance trade-off of the advantages."""
    clip_range: float = 0.2
    """epsilon of the clipped ratio min(r A, clip(r, 1 - eps, 1 + eps) A)."""
    clip_range_vf: float | None = 0.2
    """Clip the value prediction to old +- this (None: unclipped value loss)."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    normalize_advantage: bool = True
    """Whiten the advantages over the batch's completion tokens."""
    adaptive_kl: bool = False
    """Adapt kl_coef toward kl_target (Ziegler et al. 2019) instead of keeping it fixed."""
    kl_target: float = 6.0
    """Target KL per episode (nats) of the adaptive controller."""
    kl_horizon: int = 10_000
    """Horizon (episodes) of the adaptive controller."""
    target_kl: float | None = None
    """Stop an update's epochs once approx KL(old || new) per token exceeds this (None: never)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_epochs", "minibatch_size", "kl_horizon"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise error.InvalidArgument(f"{name}={v!r} is invalid: use an integer >= 1")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise error.InvalidArgument(f"{name}={v!r} is invalid: use a number in [0, 1]")
        for name in ("clip_range", "clip_range_vf", "kl_target", "target_kl"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise error.InvalidArgument(f"{name}={v!r} is invalid: use a number > 0")
        if self.clip_range is None:
            raise error.InvalidArgument("clip_range=None is invalid: use a number > 0 such as 0.2")
        for name in ("vf_coef", "ent_coef"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise error.InvalidArgument(f"{name}={v!r} is invalid: use a number >= 0")


class PPO(Agent):
    """PPO with a value head, KL penalty to a frozen reference and GAE over a causal-LM policy.

    Args:
        env: an env id, a ``gym.Env`` or a ``gym.vector.VectorEnv`` (autoresetting).
        config: a :class:`PPOConfig` or a dict; keyword arguments override its fields.

    Example::

        agent = PPO("lm_gym/KeywordToy-v0", seed=0, run_dir="runs/ppo")
        agent.learn(50_000, progress_bar=True)
        agents.evaluate(agent, n_episodes=100)
    """

    name: ClassVar[str] = "ppo"

    def __init__(
        self,
        env: str | gym.Env | VectorEnv,
        config: PPOConfig | dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.config: PPOConfig = common.make_config(PPOConfig, config, overrides)
        common.init_lm_agent(self, env, self.config, default_lr=DEFAULT_LR)
        cfg = self.config
        self.kl_ctl = (
            AdaptiveKLController(self.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if cfg.adaptive_kl
            else FixedKLController(self.kl_coef)
        )

    # -- the update -----------------------------------------------------------------------

    def _advantages(self, batch: RolloutBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-token rewards with the KL penalty, then GAE: (advantages, returns, kl), (B, C) each."""
        cfg, mask = self.config, batch.completion_mask  # (B, C)
        kl = np.zeros_like(batch.logprobs)
        if batch.ref_logprobs is not None:
            kl = kl_k1(batch.logprobs, batch.ref_logprobs, mask)  # (B, C)
        # r_t = -beta * KL_t + env reward (the score sits at the last token): Ziegler et al. 2019
        rewards = -self.kl_ctl.value * kl + batch.rewards  # (B, C)
        # Every column at or past a completion's last token is terminal, so padding forms
        # zero-reward one-step "episodes" that never leak into the real tokens.
        lengths = mask.sum(1, keepdims=True)  # (B, 1)
        terminated = np.arange(mask.shape[1])[None, :] >= lengths - 1  # (B, C)
        adv, ret = gae(
            rewards.T, (batch.values * mask).T, terminated.T, np.zeros_like(terminated.T),
            cfg.gamma, cfg.gae_lambda,
        )  # time-major (C, B)
        adv, ret = adv.T * mask, ret.T * mask
        if cfg.normalize_advantage and mask.sum() > 1:
            adv = whiten(adv, mask) * mask  # 37 details #7
        return adv.astype(np.float32), ret.astype(np.float32), kl

    def _update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.config
        advantages, returns, kl = self._advantages(batch)
        cols = common.completion_slice(batch)
        n = len(advantages)
        size = min(cfg.minibatch_size, n)
        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "ent", "kl", "clip", "vclip")}
        stopped_early = False
        self.policy.train()
        for _epoch in range(cfg.n_epochs):
            order = self.rng.permutation(n)
            for start in range(0, n, size):
                idx = order[start : start + size]
                t = batch.tensors(self.policy.device, idx)
                mask = t["completion_mask"]  # (b, C)
                adv = torch.as_tensor(advantages[idx], device=mask.device)  # (b, C)
                ret = torch.as_tensor(returns[idx], device=mask.device)  # (b, C)
                ev = common.teacher_forced(self.policy, t, cols, self.action_mask)  # one forward

                # Clipped surrogate (Schulman et al. 2017, eq. 7); ratio with the rollout's logprobs
                log_ratio = ev.logprobs - t["logprobs"]  # (b, C)
                ratio = torch.exp(log_ratio.masked_fill(mask == 0, 0.0))
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
                pg_loss = masked_mean(pg, mask)
                # Clipped value loss (37 details #9): V moves at most clip_range_vf per update
                v_old = t["values"]
                v_pred = ev.values
                v_loss = (v_pred - ret) ** 2
                if cfg.clip_range_vf is not None:
                    v_clipped = v_old + (v_pred - v_old).clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
                    v_loss = torch.max(v_loss, (v_clipped - ret) ** 2)
                    vclip = ((v_pred - v_old).abs() > cfg.clip_range_vf).float()
                    stats["vclip"].append(float(masked_mean(vclip, mask)))
                vf_loss = 0.5 * masked_mean(v_loss, mask)
                entropy = common.masked_entropy(ev.entropy, mask, cfg.ent_coef > 0)
                loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy
                loss.backward()
                common.optimizer_step(self)
                with torch.no_grad():  # k3: joschu.net/blog/kl-approx.html
                    approx_kl = float(masked_mean((ratio - 1) - log_ratio.masked_fill(mask == 0, 0.0), mask))
                    clip = float(masked_mean(((ratio - 1).abs() > cfg.clip_range).float(), mask))
                stats["pg"].append(pg_loss.item())
                stats["vf"].append(vf_loss.item())
                stats["ent"].append(entropy.item())
                stats["kl"].append(approx_kl)
                stats["clip"].append(clip)
                # under torchrun all ranks decide on the same (mean) KL, or they deadlock
                if cfg.target_kl is not None and common.rank_mean(self, approx_kl) > cfg.target_kl:
                    stopped_early = True
                    break
            if stopped_early:
                break
        mask = batch.completion_mask
        episode_kl = float((kl * mask).sum(1).mean())
        metrics = {
            "train/policy_loss": float(np.mean(stats["pg"])),
            "train/value_loss": float(np.mean(stats["vf"])),
            "train/entropy": float(np.mean(stats["ent"])),
            "train/approx_kl": float(np.mean(stats["kl"])),
            "train/clip_fraction": float(np.mean(stats["clip"])),
            "train/explained_variance": explained_variance(batch.values[mask > 0], returns[mask > 0]),
            "train/kl": episode_kl,
            "train/kl_coef": self.kl_ctl.value,
            "train/n_minibatch_steps": float(len(stats["pg"])),
            "train/stopped_early": float(stopped_early),
            "train/learning_rate": self.optimizer.param_groups[0]["lr"],
        }
        if stats["vclip"]:
            metrics["train/value_clip_fraction"] = float(np.mean(stats["vclip"]))
        # Ziegler et al. 2019: adapt beta toward the target (the same beta on every rank)
        self.kl_ctl.update(common.rank_mean(self, episode_kl) if cfg.adaptive_kl else episode_kl, n)
        self.kl_coef = self.kl_ctl.value
        return metrics

    # -- the protocol ---------------------------------------------------------------------

    def learn(
        self,
        total_timesteps: int,
        callback: Callback | None = None,
        progress_bar: bool = False,
        resume: bool = False,
    ) -> PPO:
        """Train for ``total_timesteps`` env steps (with ``resume=True``: restore the last
        checkpoint in ``run_dir`` and train until ``num_timesteps == total_timesteps``)."""
        if self.config.adaptive_kl and self.reference is None:
            raise error.InvalidArgument("adaptive_kl=True needs kl_coef > 0 (the controller's start value)")
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
    def load(cls, path: str | Path, env: str | gym.Env | VectorEnv | None = None, **overrides: Any) -> PPO:
        return common.load_agent(cls, path, env, **overrides)

    def config_dict(self) -> dict[str, Any]:
        return common.lm_config_dict(self)

    def algorithm_state(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_ctl.value}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.kl_ctl.value = self.kl_coef = float(state["kl_coef"])
