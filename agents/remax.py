"""ReMax (Li et al. 2023, "ReMax: A Simple, Effective, and Efficient Reinforcement Learning
Method for Aligning Large Language Models", Algorithm 1).

REINFORCE whose baseline is the reward of the greedy completion of the same prompt: every
rollout round is replayed from the same prompts with greedy decoding (one extra generation,
no backward), and

    A_i = (R(q, o_i) - beta * KL_k1(o_i)) - R(q, o_i_greedy)            (eq. 8)
    L   = -1/B sum_i A_i * sum_t log pi(o_it | q, o_i<t)                  (seq-mean-token-sum)

one optimizer step per batch over fresh samples, so the shared update (GRPO's,
:mod:`agents.grpo`) reduces to this REINFORCE loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.advantages import remax_advantages
from agents.grpo import GRPO, GRPOConfig
from agents.lm_agent import LMAgent
from agents.rollout import RolloutBatch


@dataclass
class ReMaxConfig(GRPOConfig):
    """ReMax's settings: GRPO's, with the paper's defaults."""

    samples_per_prompt: int = 1
    """One sampled completion per prompt; the greedy one is the baseline."""
    batch_size: int = 32
    """Completions per update (each also costs a greedy rollout)."""
    kl_placement: str = "reward"
    """The k1 KL enters the sequence reward."""
    loss_agg_mode: str = "seq-mean-token-sum"
    """REINFORCE's sum of log-probabilities over the sequence, mean over sequences."""

    default_kl_coef: ClassVar[float] = 0.05


class ReMax(LMAgent):
    """ReMax (module docstring); ``agents.make("remax", env)``."""

    name: ClassVar[str] = "remax"
    config_class = ReMaxConfig
    needs_greedy_baseline = True
    update = GRPO.update

    def advantages(self, batch: RolloutBatch) -> torch.Tensor:
        """(B,) the score (minus beta x its k1 KL) minus the greedy completion's score."""
        assert batch.greedy_scores is not None  # needs_greedy_baseline fills it
        rewards = batch.scores - self.kl_penalty_coef() * self.reward_kl(batch).sum(1)  # (B,)
        return remax_advantages(rewards, batch.greedy_scores)
