"""The environments: :class:`TextGenEnv` (one episode) and :class:`TextGenVectorEnv` (a native batch)."""

from lm_gym.envs.text_gen_env import TextGenEnv
from lm_gym.envs.vector_env import TextGenVectorEnv

__all__ = ["TextGenEnv", "TextGenVectorEnv"]
