"""DAPO: Decoupled Clip and Dynamic sAmpling Policy Optimization (Yu et al. 2025, "DAPO: An
Open-Source LLM Reinforcement Learning System at Scale", §3).

GRPO's group advantage with four changes:

- **clip-higher** (§3.1): ``clip(r, 1 - eps_low, 1 + eps_high)`` with ``eps_high = 0.28 >
  eps_low = 0.2``, so low-probability tokens can grow (against entropy collapse);
- **dynamic sampling** (§3.2): a group whose ``k`` rewards are all equal has advantage 0
  and teaches nothing; such groups are dropped and more prompts are rolled out until the
  batch is full again (at most ``max_sampling_rounds`` rollouts per update), i.e. train only
  on ``0 < |{o_i correct}| < k``;
- **token-level loss** (§3.3): every token of the batch weighs the same,
  ``L = 1/sum_i |o_i| sum_i sum_t max(-A_i r_it, -A_i clip(r_it, 1 - eps_low, 1 + eps_high))``;
- **overlong reward shaping** (§3.4, optional): with ``overlong_buffer = L_cache`` the score of
  a completion longer than ``L_max - L_cache`` tokens (``L_max`` = ``max_new_tokens``) falls
  linearly by up to ``overlong_penalty`` (eq. 13).

No KL term (§2.3). The update is GRPO's (:mod:`agents.grpo`); this file adds the sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.advantages import overlong_penalty
from agents.config import require
from agents.grpo import GRPO, GRPOConfig
from agents.lm_agent import LMAgent
from agents.rollout import RolloutBatch


@dataclass
class DAPOConfig(GRPOConfig):
    """DAPO's settings: GRPO's, with the paper's defaults and its sampling options."""

    epsilon_high: float | None = 0.28
    """Clip-higher: the upper clip range (Yu et al. 2025 use 0.28 with epsilon = 0.2)."""
    loss_agg_mode: str = "token-mean"
    """Token-level policy loss: every token of the batch alike."""
    dynamic_sampling: bool = True
    """Drop groups whose rewards are all equal and roll out more prompts to refill the batch."""
    max_sampling_rounds: int = 3
    """At most this many rollouts per update while refilling (then train on what was kept)."""
    overlong_buffer: int | None = None
    """L_cache of the soft overlong punishment (None: off); at most max_new_tokens."""
    overlong_penalty: float = 1.0
    """The largest penalty of an overlong completion."""

    default_kl_coef: ClassVar[float] = 0.0
    """DAPO drops the KL term."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "samples_per_prompt", self.samples_per_prompt >= 2,
                "dynamic sampling compares the rewards of a group: use at least 2 completions per prompt")
        require(self, "max_sampling_rounds", self.max_sampling_rounds >= 1, "use an integer >= 1")
        require(self, "overlong_buffer", self.overlong_buffer is None or self.overlong_buffer >= 1,
                "use an integer >= 1 or None")
        require(self, "overlong_penalty", self.overlong_penalty >= 0, "use a number >= 0")


class DAPO(LMAgent):
    """DAPO (module docstring); ``agents.make("dapo", env)``."""

    name: ClassVar[str] = "dapo"
    config_class = DAPOConfig
    config: DAPOConfig
    advantages = GRPO.advantages

    def rollout(self) -> RolloutBatch:
        """Roll out, shape overlong scores, and keep only informative groups until
        ``batch_size`` completions (whole groups) are kept or the rounds run out."""
        cfg, k = self.config, self.config.samples_per_prompt
        kept: list[RolloutBatch] = []
        n_kept = n_seen = env_steps = 0
        for _ in range(cfg.max_sampling_rounds if cfg.dynamic_sampling else 1):
            batch = self.shape_overlong(super().rollout())
            env_steps += batch.env_steps
            n_seen += len(batch) // k
            informative = batch.scores.reshape(-1, k).std(1) > 0  # (G,): not all rewards equal
            rows = torch.nonzero(informative.repeat_interleave(k) | (not cfg.dynamic_sampling)).squeeze(1)
            if len(rows):
                kept.append(batch.select(rows, group_size=k))
                n_kept += len(rows) // k
            if n_kept * k >= cfg.batch_size:
                break
        out = RolloutBatch.cat(kept) if kept else batch  # nothing informative: an update of zeros
        size = min(len(out), cfg.batch_size)
        if self.dist is not None:
            # under torchrun every rank must take the same number of minibatch steps (one
            # gradient all-reduce each): all keep the smallest batch any rank kept
            size = int(self.dist.min(size))
        if len(out) > size:
            out = out.select(torch.arange(size, device=out.input_ids.device), group_size=k)
        out.env_steps = env_steps
        self.sampling_stats = {"rollout/kept_group_fraction": n_kept / max(n_seen, 1),
                               "rollout/sampling_rounds": float(len(kept) or 1)}
        return out

    def shape_overlong(self, batch: RolloutBatch) -> RolloutBatch:
        """Add the overlong penalty to each completion's last-token reward (eq. 13)."""
        if self.config.overlong_buffer is None:
            return batch
        buffer = min(self.config.overlong_buffer, self.info.max_new_tokens)
        penalty = overlong_penalty(batch.lengths, self.info.max_new_tokens, buffer, self.config.overlong_penalty)
        last = batch.lengths.long() - 1  # (B,)
        batch.rewards[torch.arange(len(batch)), last] += penalty
        return batch

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        metrics = GRPO.update(self, batch)
        metrics.update(getattr(self, "sampling_stats", {}))
        return metrics
