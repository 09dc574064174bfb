"""The environments: :class:`TextGenEnv` (one episode) and :class:`TextGenVectorEnv` (a native
batch), and :func:`env_info`, what an agent may know about either."""

from lm_gym.envs.info import EnvInfo, env_info
from lm_gym.envs.text_gen_env import TextGenEnv
from lm_gym.envs.vector_env import TextGenVectorEnv

__all__ = ["EnvInfo", "TextGenEnv", "TextGenVectorEnv", "env_info"]
