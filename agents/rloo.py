"""RLOO: REINFORCE Leave-One-Out (Ahmadian et al. 2024, "Back to Basics: Revisiting
REINFORCE Style Optimization for Learning from Human Feedback in LLMs", §3.3; Kool et al.
2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!").

Each prompt gets ``k`` completions; each one's baseline is the mean score of the other
``k - 1``, and the KL to the reference is part of the sequence reward (eq. 5):

    R_i = score_i - beta * sum_t (log pi(o_it) - log pi_ref(o_it))       (k1, in the reward)
    A_i = R_i - 1/(k - 1) sum_{j != i} R_j
    L   = -1/B sum_i A_i * sum_t log pi(o_it | q, o_i<t)                  (seq-mean-token-sum)

one optimizer step per batch over fresh samples: the ratio of the shared update (GRPO's,
:mod:`agents.grpo`) is exactly 1, so its clipped loss is this REINFORCE loss, gradient and all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.advantages import leave_one_out_advantages
from agents.config import require
from agents.grpo import GRPO, GRPOConfig
from agents.lm_agent import LMAgent
from agents.rollout import RolloutBatch


@dataclass
class RLOOConfig(GRPOConfig):
    """RLOO's settings: GRPO's, with the paper's defaults."""

    kl_placement: str = "reward"
    """RLOO puts the k1 KL into the sequence reward (Ahmadian et al. 2024, eq. 5)."""
    loss_agg_mode: str = "seq-mean-token-sum"
    """REINFORCE's sum of log-probabilities over the sequence, mean over sequences."""

    default_kl_coef: ClassVar[float] = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "samples_per_prompt", self.samples_per_prompt >= 2,
                "the leave-one-out baseline needs at least 2 completions per prompt")


class RLOO(LMAgent):
    """RLOO (module docstring); ``agents.make("rloo", env)``."""

    name: ClassVar[str] = "rloo"
    config_class = RLOOConfig
    update = GRPO.update

    def advantages(self, batch: RolloutBatch) -> torch.Tensor:
        """(B,) the score (minus beta x the completion's k1 KL) minus its leave-one-out baseline."""
        rewards = batch.scores - self.kl_penalty_coef() * self.reward_kl(batch).sum(1)  # (B,)
        return leave_one_out_advantages(rewards, batch.group_size)
