"""Learners for lm_gym environments.

``agents.make(name, env, **config)`` builds any registered agent: the policy-optimisation
family (``ppo``, ``grpo``, ``dr_grpo``, ``dapo``, ``gspo``, ``rloo``, ``reinforce_pp`` /
``reinforce++``, ``remax``, ``reinforce``), the baselines (``random``, ``model``) and the
Stable-Baselines3 ones (``sb3-*``). The classes load on first use, so ``import agents``
stays light (no torch until an LM agent is built).
"""

from __future__ import annotations

import importlib
from typing import Any

from agents.base import (
    AGENTS,
    ALIASES,
    LM_LEARNERS,
    Agent,
    Episode,
    RandomAgent,
    agent_class,
    canonical_name,
    evaluate,
    make,
    make_vec_env,
    register_agent,
)

_LAZY = {
    "PPO": "ppo", "GRPO": "grpo", "DrGRPO": "dr_grpo", "DAPO": "dapo", "GSPO": "gspo", "RLOO": "rloo",
    "ReinforcePP": "reinforce_pp", "ReMax": "remax", "Reinforce": "reinforce", "ModelAgent": "model",
}
_LAZY_MODULES = {
    "EvalCallback": "agents.callbacks", "LMAgent": "agents.lm_agent", "LMAgentConfig": "agents.config", "PPOConfig": "agents.ppo",
    "GRPOConfig": "agents.grpo", "DrGRPOConfig": "agents.dr_grpo", "DAPOConfig": "agents.dapo",
    "GSPOConfig": "agents.gspo", "RLOOConfig": "agents.rloo", "ReinforcePPConfig": "agents.reinforce_pp",
    "ReMaxConfig": "agents.remax", "ReinforceConfig": "agents.reinforce", "RolloutBatch": "agents.rollout",
}

__all__ = [
    "AGENTS", "ALIASES", "LM_LEARNERS", "Agent", "Episode", "RandomAgent", "agent_class", "canonical_name",
    "evaluate", "make", "make_vec_env", "register_agent", *_LAZY, *_LAZY_MODULES,
]


def __getattr__(name: str) -> Any:  # PEP 562: import the heavy learners on first use
    if name in _LAZY:
        return agent_class(_LAZY[name])
    if name in _LAZY_MODULES:
        return getattr(importlib.import_module(_LAZY_MODULES[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
