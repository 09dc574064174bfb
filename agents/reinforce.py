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
  consecutive env slots reset with the same seed, see :mod:`agents.rollout`), each
  baselined by the mean return of the other k - 1 (Kool et al. 2019, "Buy 4 REINFORCE
  samples, get a baseline for free!").

One update is one optimizer step over the whole batch; ``minibatch_size`` splits the
teacher-forced forward/backward into chunks whose gradients accumulate (memory only, same
step). Each chunk costs one forward of the policy, never a forward per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from agents.advantages import MovingAverageBaseline, leave_one_out_advantages
from agents.config import require
from agents.lm_agent import LMAgent, LMAgentConfig
from agents.losses import aggregate
from agents.rollout import RolloutBatch

BASELINES = ("none", "moving_average", "leave_one_out")


@dataclass
class ReinforceConfig(LMAgentConfig):
    """REINFORCE's settings (with the shared ones of :class:`agents.lm_agent.LMAgentConfig`)."""

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
        require(self, "baseline", self.baseline in BASELINES, f"use one of {list(BASELINES)}")
        require(self, "samples_per_prompt", self.baseline != "leave_one_out" or self.samples_per_prompt >= 2,
                "baseline='leave_one_out' needs samples_per_prompt >= 2 completions per prompt")
        require(self, "baseline_decay", 0 <= self.baseline_decay <= 1, "use a number in [0, 1]")
        require(self, "ent_coef", self.ent_coef >= 0, "use a number >= 0")
        require(self, "minibatch_size", self.minibatch_size is None or self.minibatch_size >= 1,
                "use an integer >= 1 or None")
        require(self, "kl_placement", self.kl_placement == "reward",
                'REINFORCE folds the KL into the return: use "reward"')


class Reinforce(LMAgent):
    """REINFORCE with a baseline over a causal-LM policy (module docstring).

    Example::

        agent = agents.Reinforce("lm_gym/Copy-v0", baseline="leave_one_out", samples_per_prompt=4, seed=0)
        agent.learn(20_000, progress_bar=True)
    """

    name: ClassVar[str] = "reinforce"
    config_class = ReinforceConfig
    default_lr = (1e-3, 3e-5)
    config: ReinforceConfig

    def setup(self) -> None:
        self.baseline = MovingAverageBaseline(self.config.baseline_decay)

    def advantages(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(R - b (B,), the per-token k1 KL (B, C)), R the return minus kl_coef x the KL."""
        kl = self.reward_kl(batch)  # (B, C)
        returns = batch.scores - self.kl_coef * kl.sum(1)  # (B,)
        return self.baseline_advantages(returns, batch.group_size), kl

    def baseline_advantages(self, returns: torch.Tensor, group_size: int) -> torch.Tensor:
        """``R - b`` (B,) under the configured baseline (a moving average is taken before this
        batch updates it); divided by its std with ``normalize_advantages``."""
        cfg = self.config
        if cfg.baseline == "leave_one_out":
            adv = leave_one_out_advantages(returns, group_size)
        elif cfg.baseline == "moving_average":
            adv = returns - self.baseline.value
            self.baseline.update(returns)
        else:
            adv = returns.clone()
        if cfg.normalize_advantages and len(adv) > 1:
            adv = adv / (adv.std() + 1e-8)
        return adv

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.config
        advantages, kl = self.advantages(batch)  # (B,), (B, C)
        n = len(batch)
        loss_sum = entropy_sum = 0.0
        for rows in self.minibatches(n, cfg.minibatch_size, shuffle=False):
            mb = batch.select(rows)
            mask = mb.completion_mask  # (b, C)
            ev = self.evaluate_actions(mb)  # one forward: (b, C) fields
            seq_logprob = (ev.logprobs * mask).sum(1)  # (b,): log pi(completion | prompt)
            entropy = aggregate(ev.entropy if cfg.ent_coef > 0 else ev.entropy.detach(), mask, "token-mean")
            # Sums over the chunk scaled by 1/n: the chunks add up to the full-batch mean's gradient.
            loss = (-(seq_logprob * advantages[rows]).sum() - cfg.ent_coef * entropy * len(rows)) / n
            loss.backward()
            loss_sum += loss.item()
            entropy_sum += entropy.item() * len(rows)
        grad_norm = self.optimizer_step()
        return {
            "train/policy_loss": loss_sum, "train/entropy": entropy_sum / n,
            "train/kl": float(kl.sum(1).mean()), "train/kl_coef": self.kl_coef,
            "train/baseline": self.baseline.value, "train/advantage_std": float(advantages.std()),
            "train/grad_norm": grad_norm, "train/learning_rate": self.optimizer.param_groups[0]["lr"],
        }

    def algorithm_state(self) -> dict[str, Any]:
        return {"baseline": self.baseline.state, "kl_coef": self.kl_coef}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.baseline.state = state["baseline"]
        self.kl_coef = float(state["kl_coef"])
