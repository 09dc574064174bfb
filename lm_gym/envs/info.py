"""What an agent may know about an lm_gym env, published as one public function.

Learners need a few facts that the Gymnasium spaces do not carry: which pretrained LM the
text task uses (so the policy starts from it), the EOS and PAD ids, the completion budget,
the static action mask and the frozen reference model the task already holds for its
fluency score (so a KL penalty does not load the model a second time). :func:`env_info`
returns them for a single env, a wrapped one, the native vector env, or a
``SyncVectorEnv`` of lm_gym envs; agents read nothing else of an env's insides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import Env
from gymnasium.vector import SyncVectorEnv, VectorEnv

from lm_gym import error
from lm_gym.envs.core import action_mask_of

__all__ = ["EnvInfo", "env_info"]


@dataclass(frozen=True)
class EnvInfo:
    """The facts about an lm_gym env that an agent builds its policy from."""

    model_name: str | None
    """The text task's pretrained LM (``"builtin"``, a Hub name or a path); None for toy tasks."""
    vocab_size: int
    """V: the action space is ``Discrete(V)``."""
    eos_token_id: int
    pad_token_id: int
    obs_length: int
    """L = max_prompt_tokens + max_new_tokens, the observation window."""
    max_new_tokens: int
    """The completion budget (a longer episode is truncated)."""
    action_mask: np.ndarray | None
    """(V,) bool, read-only: the tokens an agent may emit; None when every token is valid."""
    reference: Any = None
    """The task's frozen LM (``requires_grad=False``, eval mode), shared, never to be trained;
    None for toy tasks. A learner may take it as its KL reference when its policy starts
    from ``model_name``."""
    tokenizer: Any = None
    """The task's tokenizer (``encode``/``decode``, ``eos_token_id``, ``pad_token_id``)."""


def _task_of(env: Any) -> Any:
    if isinstance(env, SyncVectorEnv):
        env = env.envs[0]
    if isinstance(env, (Env, VectorEnv)):
        task = getattr(env.unwrapped, "task", None)
        if task is not None:
            return task
    raise error.InvalidArgument(
        f"{env!r} is not an lm_gym env: env_info takes gym.make(...) / gym.make_vec(...) of an "
        "lm_gym id (or a SyncVectorEnv of them); an AsyncVectorEnv keeps its envs in other processes"
    )


def env_info(env: Env | VectorEnv) -> EnvInfo:
    """The :class:`EnvInfo` of an lm_gym env (single, wrapped, native vector, or Sync vector).

    Raises:
        lm_gym.error.InvalidArgument: ``env`` is not an lm_gym env.
    """
    task = _task_of(env)
    tok = task.tokenizer
    mask = action_mask_of(task, task.vocab_size)
    if mask is not None:
        mask = mask.astype(bool)
        mask.flags.writeable = False
    model_name = getattr(task, "model_name", None)
    return EnvInfo(
        model_name=model_name,
        vocab_size=int(task.vocab_size),
        eos_token_id=int(tok.eos_token_id),
        pad_token_id=int(tok.pad_token_id),
        obs_length=int(task.max_prompt_tokens + task.max_new_tokens),
        max_new_tokens=int(task.max_new_tokens),
        action_mask=mask,
        reference=getattr(task, "reference", None) if model_name is not None else None,
        tokenizer=tok,
    )
