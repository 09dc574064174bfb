"""Learners for lm_gym environments.

``agents.make(name, env, **config)`` builds any registered agent; the classes load on
first use, so ``import agents`` stays light (no torch until an LM agent is built).
"""

from __future__ import annotations

from typing import Any

from agents.base import (
    AGENTS,
    Agent,
    Episode,
    RandomAgent,
    agent_class,
    evaluate,
    make,
    make_vec_env,
    register_agent,
)

__all__ = [
    "AGENTS",
    "Agent",
    "Episode",
    "ModelAgent",
    "PPO",
    "PPOConfig",
    "RandomAgent",
    "Reinforce",
    "ReinforceConfig",
    "agent_class",
    "evaluate",
    "make",
    "make_vec_env",
    "register_agent",
]

_LAZY = {"PPO": "ppo", "Reinforce": "reinforce", "ModelAgent": "model"}
_LAZY_CONFIGS = {"PPOConfig": "agents.ppo", "ReinforceConfig": "agents.reinforce"}


def __getattr__(name: str) -> Any:  # PEP 562: import the heavy learners on first use
    if name in _LAZY:
        return agent_class(_LAZY[name])
    if name in _LAZY_CONFIGS:
        import importlib

        return getattr(importlib.import_module(_LAZY_CONFIGS[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
