"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath", §4).

No critic: each prompt is answered ``k = samples_per_prompt`` times and each completion's
advantage is its score relative to its group (outcome supervision, §4.1.2):

    A_i = (R_i - mean(R_1..R_k)) / (std(R_1..R_k) + eps)        (the same A_i on every token)

The policy loss is PPO's clipped ratio per token, averaged per sequence then over
sequences, with the KL to the frozen reference as a loss term (eq. 3 and 4):

    L = 1/G sum_i 1/|o_i| sum_t [ max(-A_i r_it, -A_i clip(r_it, 1 - eps_low, 1 + eps_high))
                                  + beta * KL_k3(pi || pi_ref)_it ]
    r_it = pi(o_it | q, o_i<t) / pi_old(o_it | q, o_i<t)
    KL_k3 = pi_ref / pi - log(pi_ref / pi) - 1

The same update serves the critic-free family, whose files set their own advantages and
defaults: Dr. GRPO (no std, constant normaliser), DAPO (clip-higher, token-mean, dynamic
sampling), GSPO (sequence-level ratio), RLOO, REINFORCE++ and ReMax. With one pass over
fresh samples (``n_epochs=1``, one minibatch) ``pi_old`` is the current policy detached, so
``r = 1`` and no extra forward is spent (as TRL's default).

On lm_gym's text ids with a built-in model, ``agents/hyperparams/lm/grpo.yml`` sets the
learning rate and beta (:func:`agents.config.task_defaults`; anything passed wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.advantages import group_advantages
from agents.config import require
from agents.lm_agent import LMAgent, LMAgentConfig
from agents.losses import aggregate, check_agg_mode, clipped_policy_loss, sequence_policy_loss
from agents.rollout import RolloutBatch


@dataclass
class GRPOConfig(LMAgentConfig):
    """GRPO's settings (the shared ones are :class:`agents.lm_agent.LMAgentConfig`'s)."""

    n_envs: int = 16
    """Env slots stepped together, when the agent builds the env from an id."""
    batch_size: int = 64
    """Completions per update (batch_size / samples_per_prompt prompts)."""
    samples_per_prompt: int = 4
    """k: completions of each prompt, the group of the relative advantage."""
    kl_placement: str = "loss"
    """"loss": beta * k3 KL in the loss (GRPO, eq. 4); "reward": k1 KL subtracted from the score."""
    n_epochs: int = 1
    """Passes over each rollout batch (TRL's num_iterations)."""
    minibatch_size: int | None = None
    """Completions per optimizer step (None: the whole batch, one step per update)."""
    epsilon: float = 0.2
    """eps_low of the clipped ratio: clip(r, 1 - eps_low, 1 + eps_high)."""
    epsilon_high: float | None = None
    """eps_high (None: equal to epsilon); DAPO's clip-higher sets it above epsilon."""
    scale_rewards: bool = True
    """Divide by the group's std (GRPO); False keeps R - mean (Dr. GRPO)."""
    loss_agg_mode: str = "seq-mean-token-mean"
    """token-mean, seq-mean-token-mean (GRPO), seq-mean-token-sum, seq-mean-token-sum-norm (Dr. GRPO)."""
    importance_sampling_level: str = "token"
    """"token": a ratio per token; "sequence": GSPO's length-normalised sequence ratio."""
    ent_coef: float = 0.0
    """Weight of an entropy bonus (0: none, as the papers)."""

    default_kl_coef: ClassVar[float] = 0.04
    """beta for a pretrained LM (Shao et al. 2024 use 0.04)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "n_epochs", self.n_epochs >= 1, "use an integer >= 1")
        require(self, "minibatch_size", self.minibatch_size is None or self.minibatch_size >= 1,
                "use an integer >= 1 or None")
        require(self, "epsilon", 0 < self.epsilon < 1, "use a number in (0, 1)")
        require(self, "epsilon_high", self.epsilon_high is None or self.epsilon_high > 0, "use a number > 0 or None")
        require(self, "ent_coef", self.ent_coef >= 0, "use a number >= 0")
        require(self, "importance_sampling_level", self.importance_sampling_level in ("token", "sequence"),
                'use "token" or "sequence"')
        check_agg_mode(self.loss_agg_mode)


class GRPO(LMAgent):
    """GRPO (module docstring).

    Example::

        agent = agents.make("grpo", "lm_gym/SentimentContinuation-v0", seed=0)
        agent.learn(50_000, progress_bar=True)
    """

    name: ClassVar[str] = "grpo"
    config_class = GRPOConfig
    config: GRPOConfig

    def advantages(self, batch: RolloutBatch) -> torch.Tensor:
        """(B,) each completion's group-relative advantage of its score (minus the reward KL,
        when the KL is placed in the reward)."""
        scores = batch.scores - self.kl_penalty_coef() * self.reward_kl(batch).sum(1)  # (B,)
        return group_advantages(scores, batch.group_size, scale=self.config.scale_rewards)

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.config
        advantages = self.advantages(batch)  # (B,) or (B, C)
        policy_loss = sequence_policy_loss if cfg.importance_sampling_level == "sequence" else clipped_policy_loss
        eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
        single_pass = cfg.n_epochs == 1 and (cfg.minibatch_size is None or cfg.minibatch_size >= len(batch))
        norm_length = self.info.max_new_tokens  # Dr. GRPO's constant: the generation budget
        sums = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip": 0.0, "grad_norm": 0.0}
        steps = 0
        for _epoch in range(cfg.n_epochs):
            for rows in self.minibatches(len(batch), cfg.minibatch_size, group_size=batch.group_size):
                mb = batch.select(rows)
                mask = mb.completion_mask  # (b, C)
                ev = self.evaluate_actions(mb)  # ONE teacher-forced forward: (b, C) each
                old = self.old_logprobs(mb, ev.logprobs, single_pass)
                pg = policy_loss(ev.logprobs, old, advantages[rows], mask, cfg.epsilon, eps_high)
                loss = aggregate(pg.loss, mask, cfg.loss_agg_mode, norm_length)
                kl = self.kl_loss(ev.logprobs, mb)  # (b, C) k3, or None
                if kl is not None:
                    loss = loss + self.kl_coef * aggregate(kl, mask, cfg.loss_agg_mode, norm_length)
                entropy = aggregate(ev.entropy if cfg.ent_coef > 0 else ev.entropy.detach(), mask, "token-mean")
                loss = loss - cfg.ent_coef * entropy
                loss.backward()
                sums["grad_norm"] += self.optimizer_step()
                sums["loss"] += loss.item()
                sums["kl"] += 0.0 if kl is None else aggregate(kl.detach(), mask, "token-mean").item()
                sums["entropy"] += entropy.item()
                sums["clip"] += float(pg.clipped.float().sum() / mask.sum())
                steps += 1
        metrics = {f"train/{k if k != 'loss' else 'policy_loss'}": v / steps for k, v in sums.items()}
        metrics["train/clip_fraction"] = metrics.pop("train/clip")
        metrics.update({
            "train/advantage_std": float(advantages.std()), "train/kl_coef": self.kl_coef,
            "train/reward_kl": float(self.reward_kl(batch).sum(1).mean()),
            "train/learning_rate": self.optimizer.param_groups[0]["lr"],
        })
        return metrics
