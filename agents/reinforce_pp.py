"""REINFORCE++ (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large
Language Models", §3); ``agents.make("reinforce++", env)`` as OpenRLHF spells it.

A critic-free PPO: the KL to the reference is folded into the token rewards, the return is
taken token by token, and the baseline is the whole batch's mean, by whitening:

    r_t = 1[t = last] * score - beta * KL_k1,t                          (eq. 3)
    G_t = sum_{s >= t} gamma^(s - t) r_s                                (eq. 4)
    A_t = (G_t - mean(G)) / std(G)         over every token of the batch (eq. 5)
    L   = 1/sum|o| sum_i sum_t max(-A_it r_it, -A_it clip(r_it, 1 - eps, 1 + eps))   (token-mean)

Prompts need not be sampled more than once (``samples_per_prompt=1`` by default: the global
baseline needs no groups). The update is GRPO's (:mod:`agents.grpo`) over these (B, C)
advantages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.advantages import reinforce_pp_advantages
from agents.config import require
from agents.grpo import GRPO, GRPOConfig
from agents.lm_agent import LMAgent
from agents.rollout import RolloutBatch


@dataclass
class ReinforcePPConfig(GRPOConfig):
    """REINFORCE++'s settings: GRPO's, with the paper's defaults."""

    samples_per_prompt: int = 1
    """Completions per prompt (the batch-wide baseline needs no groups)."""
    kl_placement: str = "reward"
    """The k1 KL enters every token's reward (Hu 2025, eq. 3)."""
    loss_agg_mode: str = "token-mean"
    """Every token of the batch alike."""
    gamma: float = 1.0
    """Discount of the token returns."""

    default_kl_coef: ClassVar[float] = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "gamma", 0 <= self.gamma <= 1, "use a number in [0, 1]")


class ReinforcePP(LMAgent):
    """REINFORCE++ (module docstring)."""

    name: ClassVar[str] = "reinforce_pp"
    config_class = ReinforcePPConfig
    update = GRPO.update

    def advantages(self, batch: RolloutBatch) -> torch.Tensor:
        """(B, C) the whitened token returns of eq. 3-5."""
        adv, _returns = reinforce_pp_advantages(
            batch.scores, self.reward_kl(batch), batch.completion_mask, self.kl_penalty_coef(), self.config.gamma
        )
        return adv
