"""GSPO: Group Sequence Policy Optimization (Zheng et al. 2025, "Group Sequence Policy
Optimization", §4).

GRPO's token-level ratios are noisy importance weights of a sequence-level reward; GSPO
clips one length-normalised ratio per sequence instead (eq. 5 and 7):

    s_i(theta) = (pi(o_i | q) / pi_old(o_i | q)) ^ (1 / |o_i|)
               = exp( 1/|o_i| sum_t log(pi(o_it | ...) / pi_old(o_it | ...)) )
    L = 1/G sum_i max(-A_i s_i, -A_i clip(s_i, 1 - eps_low, 1 + eps_high))

with GRPO's group advantage ``A_i`` and the paper's small clip ranges (3e-4, 4e-4); the
gradient flows through every token's log-probability (the GSPO-token form, eq. 13, which
equals eq. 5 when every token shares ``A_i``). The ratio only departs from 1 after a first
optimizer step, so the default takes two minibatch steps per batch (the paper splits each
rollout batch into minibatches too). No KL term by default. The update is GRPO's
(:mod:`agents.grpo`) with ``importance_sampling_level="sequence"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from agents.grpo import GRPO, GRPOConfig
from agents.lm_agent import LMAgent


@dataclass
class GSPOConfig(GRPOConfig):
    """GSPO's settings: GRPO's, with the paper's defaults."""

    importance_sampling_level: str = "sequence"
    """GSPO: one length-normalised ratio per sequence."""
    epsilon: float = 3e-4
    """eps_low of the sequence ratio's clip (Zheng et al. 2025)."""
    epsilon_high: float | None = 4e-4
    """eps_high of the sequence ratio's clip (Zheng et al. 2025)."""
    minibatch_size: int | None = 32
    """Completions per optimizer step: two steps per default batch of 64."""

    default_kl_coef: ClassVar[float] = 0.0
    """No KL term by default."""


class GSPO(LMAgent):
    """GSPO (module docstring); ``agents.make("gspo", env)``."""

    name: ClassVar[str] = "gspo"
    config_class = GSPOConfig
    advantages = GRPO.advantages
    update = GRPO.update
