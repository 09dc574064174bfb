"""lm_gym: reinforcement learning for language models as Gymnasium environments.

Importing lm_gym registers every env id (``lm_gym/Copy-v0``, ...) with Gymnasium; torch
and transformers load only when a text env or an agent needs them.
"""

from lm_gym import error
from lm_gym.envs import TextGenEnv, TextGenVectorEnv
from lm_gym.interop import prompt_dataset, reward_function
from lm_gym.registration import list_envs, register_task
from lm_gym.tasks import Prompt, Task

__version__ = "0.1.0"

__all__ = [
    "Prompt",
    "Task",
    "TextGenEnv",
    "TextGenVectorEnv",
    "error",
    "list_envs",
    "prompt_dataset",
    "register_task",
    "reward_function",
]

from lm_gym.registration import register_builtin as _register_builtin

_register_builtin()
