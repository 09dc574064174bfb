"""The unchanged model, sampling: the zero-shot baseline every learner is compared with.

For a text task the policy is the env's pretrained LM (``task.model_name``), so its rows
in a results table are what the model does before any RL. For a toy task there is no
pretrained model: the policy is a fresh, untrained small GPT-2 sized to the vocabulary
(initialised from ``seed``), which is close to the random agent - the starting point of a
toy learner, not a trained model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from agents import common
from agents.base import Agent, read_agent_json
from lm_gym import error


class ModelAgent(Agent):
    """Samples the env's model as it is (no learning), with a KV cache across steps.

    Args:
        env: an env id, a ``gym.Env`` or a ``gym.vector.VectorEnv``.
        temperature: sampling temperature (> 0).
        top_k: sample among the ``top_k`` most likely tokens (None: all).
        top_p: nucleus sampling threshold in (0, 1] (None: off).
        seed: seeds the sampling (and a toy task's fresh weights).
        n_envs: env slots when ``env`` is an id.
        env_kwargs: keyword arguments for ``gym.make_vec`` when ``env`` is an id.
        device: torch device of the model.
    """

    name: ClassVar[str] = "model"

    def __init__(
        self,
        env: str | gym.Env | VectorEnv,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        n_envs: int = 8,
        env_kwargs: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(env, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise error.InvalidArgument(f"temperature={temperature!r} is invalid: use a number > 0")
        self.temperature, self.top_k, self.top_p, self.device = temperature, top_k, top_p, device
        self.policy = common.build_policy(
            self.env, seed=0 if seed is None else seed, temperature=temperature, top_k=top_k,
            top_p=top_p, device=device,
        ).eval()
        self.policy.seed(seed)

    def predict(
        self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """Actions for (N, L) or (L,) observations. ``episode_start`` (N,) flags the slots
        whose observation starts an episode: those are prefilled, the others advance the KV
        cache by one token. None prefills every slot (correct, but a forward over the window)."""
        return common.predict(self.policy, obs, episode_start, deterministic, self.action_mask), state

    def config_dict(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id, "env_kwargs": self.env_kwargs, "n_envs": self.n_envs,
            "seed": self.seed, "temperature": self.temperature, "top_k": self.top_k,
            "top_p": self.top_p, "device": self.device,
        }

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | VectorEnv | None = None, **overrides: Any) -> ModelAgent:
        """Rebuild from ``path/agent.json`` (written by :meth:`save`; the model is not copied,
        it is the env's own, or a toy task's fresh one from ``seed``)."""
        config = {**read_agent_json(path)["config"], **overrides}
        env_id = config.pop("env_id", None)
        env = env if env is not None else env_id
        if env is None:
            raise error.InvalidArgument(f"{path}: the saved agent has no env id; pass env=")
        if not isinstance(env, str):
            config.pop("env_kwargs", None)
        return cls(env, **config)
