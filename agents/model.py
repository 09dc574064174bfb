"""The unchanged model, sampling: the zero-shot baseline every learner is compared with.

For a text task the policy is the env's pretrained LM (``task.model_name``), so its rows
in a results table are what the model does before any RL. For a toy task there is no
pretrained model: the policy is a fresh, untrained small GPT-2 sized to the vocabulary
(initialised from ``seed``), which is close to the random agent - the starting point of a
toy learner, not a trained model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from agents.base import Agent
from agents.config import check_types, make_config, require


@dataclass
class ModelAgentConfig:
    """The zero-shot model's sampling settings."""

    temperature: float = 1.0
    """Sampling temperature (> 0)."""
    top_k: int | None = None
    """Sample among the top_k most likely tokens (None: all)."""
    top_p: float | None = None
    """Nucleus sampling threshold in (0, 1] (None: off)."""
    seed: int | None = None
    """Seeds the sampling (and a toy task's fresh weights)."""
    n_envs: int = 8
    """Env slots when env is an id."""
    env_kwargs: dict | None = None
    """Keyword arguments for gym.make_vec when env is an id."""
    device: str = "cpu"
    """Torch device of the model."""
    toy_model: dict | None = None
    """Size of a toy task's fresh GPT-2 (n_layer, n_embd, n_head); None: the learners' default."""

    def __post_init__(self) -> None:
        from agents.config import LMAgentConfig

        check_types(self)
        require(self, "temperature", self.temperature > 0, "use a number > 0")
        require(self, "top_k", self.top_k is None or self.top_k >= 1, "use an integer >= 1 or None")
        require(self, "top_p", self.top_p is None or 0 < self.top_p <= 1, "use a number in (0, 1] or None")
        require(self, "n_envs", self.n_envs >= 1, "use an integer >= 1")
        # the device and toy-model rules are the learners': one place states them
        LMAgentConfig(device=self.device, toy_model=self.toy_model or LMAgentConfig().toy_model)


class ModelAgent(Agent):
    """Samples the env's model as it is (no learning), with a KV cache across steps.

    Args:
        env: an env id, a ``gym.Env`` or a ``gym.vector.VectorEnv``.
        **config: the fields of :class:`ModelAgentConfig` (temperature, top_k, top_p, seed,
            n_envs, env_kwargs, device, toy_model).
    """

    name: ClassVar[str] = "model"
    config_class = ModelAgentConfig

    def __init__(self, env: str | gym.Env | VectorEnv, config: Any = None, **overrides: Any) -> None:
        from agents.config import LMAgentConfig
        from agents.lm_agent import build_policy

        self.config = cfg = make_config(ModelAgentConfig, config, overrides)
        super().__init__(env, n_envs=cfg.n_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
        sizes = LMAgentConfig(toy_model=cfg.toy_model) if cfg.toy_model else LMAgentConfig()
        sizes.temperature, sizes.top_k, sizes.top_p = cfg.temperature, cfg.top_k, cfg.top_p
        self.policy = build_policy(self.info, sizes, seed=0 if cfg.seed is None else cfg.seed, device=cfg.device).eval()
        self.policy.seed(cfg.seed)

    def predict(
        self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """Actions for (N, L) or (L,) observations, KV-cached across calls (see
        :meth:`agents.lm_agent.LMAgent.predict`)."""
        from agents.lm_agent import predict_with

        return predict_with(self.policy, obs, episode_start, deterministic, self.action_mask, self.info.vocab_size), state

    def config_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"env_id": self.env_id, **asdict(self.config), "env_kwargs": self.env_kwargs, "n_envs": self.n_envs}
