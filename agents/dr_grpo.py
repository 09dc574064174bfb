"""Dr. GRPO: GRPO Done Right (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical
Perspective", §3.1).

GRPO's ``1/|o_i|`` length normalisation and its division by the group's std bias the
optimisation (long wrong answers are penalised less per token; prompts of low reward
variance weigh more). Dr. GRPO removes both:

    A_i = R_i - mean(R_1..R_k)
    L   = 1/(G * L_max) sum_i sum_t max(-A_i r_it, -A_i clip(r_it, 1 - eps, 1 + eps))

with ``L_max`` a constant (here the env's ``max_new_tokens``: the ``seq-mean-token-sum-norm``
aggregation). The paper trains without a KL term (``beta = 0``). The update is GRPO's
(:mod:`agents.grpo`); this file fixes the advantage and the aggregation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from agents.grpo import GRPO, GRPOConfig
from agents.lm_agent import LMAgent


@dataclass
class DrGRPOConfig(GRPOConfig):
    """Dr. GRPO's settings: GRPO's, with the paper's defaults."""

    scale_rewards: bool = False
    """Dr. GRPO: the advantage is R - mean(group), not divided by the group's std."""
    loss_agg_mode: str = "seq-mean-token-sum-norm"
    """Token sums over a constant length (the generation budget), not per-sequence means."""

    default_kl_coef: ClassVar[float] = 0.0
    """No KL term by default (Liu et al. 2025 train with beta = 0)."""


class DrGRPO(LMAgent):
    """Dr. GRPO (module docstring); ``agents.make("dr_grpo", env)``."""

    name: ClassVar[str] = "dr_grpo"
    config_class = DrGRPOConfig
    advantages = GRPO.advantages
    update = GRPO.update
