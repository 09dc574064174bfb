"""PPO for language models: the clipped objective over token actions with a value head, the
RLHF recipe of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences") and
Ouyang et al. 2022 (InstructGPT), as TRL's PPO trainer implements it.

One update, from the rollout batch (``B`` completions, ``C`` token columns):

1. Per-token rewards ``r_t = -beta * KL_t + 1[t = last] * R``: the k1 estimate of the KL to
   the frozen reference at every token, the task's score ``R`` at the last one (Ziegler et
   al. 2019, eq. 2). ``beta`` is fixed or adapted toward a target KL (§2.2).
2. GAE (Schulman et al. 2016, eq. 16) over each completion with the rollout's values,
   ``A_t = sum_l (gamma lam)^l delta_{t+l}``, ``delta_t = r_t + gamma V_{t+1} - V_t``; the
   episode ends at its last token. Advantages are whitened over the batch's tokens
   ("The 37 implementation details of PPO", #7).
3. ``n_epochs`` passes over shuffled minibatches, each ONE teacher-forced forward of the
   policy (never a forward per token). Loss = clipped policy loss
   ``max(-A r, -A clip(r, 1 - eps, 1 + eps))`` (Schulman et al. 2017, eq. 7; optional dual
   clip) + ``vf_coef`` x clipped value loss (37 details #9) - ``ent_coef`` x entropy,
   aggregated ``token-mean``; gradients clipped to ``max_grad_norm`` (37 details #11). The
   epochs stop early when the approximate KL to the rollout policy passes ``target_kl``.

Metrics: ``train/approx_kl`` is the k3 estimator (joschu.net/blog/kl-approx.html);
``train/clip_fraction`` the share of tokens whose clip bound was active.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from agents.advantages import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    masked_whiten,
    token_rewards,
)
from agents.config import require
from agents.lm_agent import LMAgent, LMAgentConfig
from agents.losses import aggregate, check_agg_mode, clipped_policy_loss, value_loss
from agents.rollout import RolloutBatch
from lm_gym import error


@dataclass
class PPOConfig(LMAgentConfig):
    """PPO's settings (with the shared ones of :class:`agents.lm_agent.LMAgentConfig`)."""

    n_epochs: int = 2
    """Passes over each rollout batch. 2 (TRL's PPOTrainer uses 4, verl and OpenRLHF 1): on
    SentimentContinuation it reaches the reward of 4 epochs in the same wall-clock budget at
    0.57 x the iteration (README, "A training iteration")."""
    minibatch_size: int = 16
    """Episodes per minibatch (one teacher-forced forward/backward and optimizer step each)."""
    gamma: float = 1.0
    """Discount factor over tokens (1: the score counts fully at every token, as TRL)."""
    gae_lambda: float = 0.95
    """GAE lambda: bias/variance trade-off of the advantages."""
    clip_range: float = 0.2
    """epsilon of the clipped ratio min(r A, clip(r, 1 - eps, 1 + eps) A)."""
    dual_clip: float | None = None
    """Bound the loss of negative advantages by -c A (Ye et al. 2020; e.g. 3.0); None: off."""
    clip_range_vf: float | None = 0.2
    """Clip the value prediction to old +- this (None: unclipped value loss)."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    normalize_advantage: bool = True
    """Whiten the advantages over the batch's completion tokens."""
    loss_agg_mode: str = "token-mean"
    """How token losses become one number: token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm."""
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
            require(self, name, getattr(self, name) >= 1, "use an integer >= 1")
        for name in ("gamma", "gae_lambda"):
            require(self, name, 0 <= getattr(self, name) <= 1, "use a number in [0, 1]")
        require(self, "clip_range", 0 < self.clip_range < 1, "use a number in (0, 1) such as 0.2")
        require(self, "dual_clip", self.dual_clip is None or self.dual_clip > 1, "use a number > 1 (e.g. 3.0) or None")
        for name in ("clip_range_vf", "kl_target", "target_kl"):
            v = getattr(self, name)
            require(self, name, v is None or v > 0, "use a number > 0")
        for name in ("vf_coef", "ent_coef"):
            require(self, name, getattr(self, name) >= 0, "use a number >= 0")
        check_agg_mode(self.loss_agg_mode)


class PPO(LMAgent):
    """PPO with a value head, a KL penalty to a frozen reference and GAE (module docstring).

    Example::

        agent = agents.PPO("lm_gym/KeywordToy-v0", seed=0, run_dir="runs/ppo")
        agent.learn(50_000, progress_bar=True)
        agents.evaluate(agent, n_episodes=100)
    """

    name: ClassVar[str] = "ppo"
    config_class = PPOConfig
    default_lr = (3e-4, 3e-5)
    needs_critic = True
    config: PPOConfig

    def setup(self) -> None:
        cfg = self.config
        if cfg.adaptive_kl and self.reference is None:
            raise error.InvalidArgument("adaptive_kl=True needs kl_coef > 0 (the controller's start value)")
        self.kl_ctl = (
            AdaptiveKLController(self.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl
            else FixedKLController(self.kl_coef)
        )

    def advantages(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(advantages, returns, kl), (B, C) each: steps 1 and 2 of the module docstring."""
        cfg, mask = self.config, batch.completion_mask  # (B, C)
        kl = self.reward_kl(batch)  # (B, C) k1
        rewards = token_rewards(batch.scores, mask, kl, self.kl_ctl.value)  # (B, C)
        adv, returns = gae(rewards, batch.values, mask, cfg.gamma, cfg.gae_lambda)
        if cfg.normalize_advantage and mask.sum() > 1:
            adv = masked_whiten(adv, mask) * mask  # 37 details #7
        return adv, returns, kl

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.config
        advantages, returns, kl = self.advantages(batch)
        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "ent", "kl", "clip")}
        stopped_early = False
        single_pass = cfg.n_epochs == 1 and cfg.minibatch_size >= len(batch)
        for _epoch in range(cfg.n_epochs):
            for rows in self.minibatches(len(batch), cfg.minibatch_size, group_size=batch.group_size):
                mb, mask = batch.select(rows), batch.completion_mask[rows]  # (b, C)
                ev = self.evaluate_actions(mb)  # one forward: (b, C) logprobs, values, entropy
                old = self.old_logprobs(mb, ev.logprobs, single_pass)
                pg = clipped_policy_loss(ev.logprobs, old, advantages[rows], mask,
                                         cfg.clip_range, dual_clip=cfg.dual_clip)
                pg_loss = aggregate(pg.loss, mask, cfg.loss_agg_mode)
                vf = value_loss(ev.values, mb.values, returns[rows], cfg.clip_range_vf)
                vf_loss = aggregate(vf, mask, "token-mean")
                entropy = aggregate(ev.entropy if cfg.ent_coef > 0 else ev.entropy.detach(), mask, "token-mean")
                loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy
                loss.backward()
                self.optimizer_step()
                with torch.no_grad():  # k3: joschu.net/blog/kl-approx.html
                    approx_kl = float(aggregate((pg.ratio - 1) - pg.ratio.log(), mask, "token-mean"))
                for key, v in zip(stats, (pg_loss, vf_loss, entropy, approx_kl, pg.clipped.float().sum() / mask.sum())):
                    stats[key].append(float(v.detach() if isinstance(v, torch.Tensor) else v))
                # under torchrun every rank decides on the same (mean) KL, or they deadlock
                if cfg.target_kl is not None and self.rank_mean(approx_kl) > cfg.target_kl:
                    stopped_early = True
                    break
            if stopped_early:
                break
        return self._metrics(batch, stats, returns, kl, stopped_early)

    def _metrics(self, batch: RolloutBatch, stats: dict[str, list[float]], returns: torch.Tensor,
                 kl: torch.Tensor, stopped_early: bool) -> dict[str, float]:
        mask = batch.completion_mask > 0
        episode_kl = float(kl.sum(1).mean())

        def mean(key: str) -> float:
            return sum(stats[key]) / max(len(stats[key]), 1)

        metrics = {
            "train/policy_loss": mean("pg"), "train/value_loss": mean("vf"), "train/entropy": mean("ent"),
            "train/approx_kl": mean("kl"), "train/clip_fraction": mean("clip"),
            "train/explained_variance": explained_variance(batch.values[mask], returns[mask]),
            "train/kl": episode_kl, "train/kl_coef": self.kl_ctl.value,
            "train/n_minibatch_steps": float(len(stats["pg"])), "train/stopped_early": float(stopped_early),
            "train/learning_rate": self.optimizer.param_groups[0]["lr"],
        }
        # Ziegler et al. 2019: adapt beta toward the target (the same beta on every rank)
        self.kl_ctl.update(self.rank_mean(episode_kl) if self.config.adaptive_kl else episode_kl, len(batch))
        self.kl_coef = self.kl_ctl.value
        return metrics

    def algorithm_state(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_ctl.value}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.kl_ctl.value = self.kl_coef = float(state["kl_coef"])
