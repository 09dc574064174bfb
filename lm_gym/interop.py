"""An env's reward and prompts for other trainers (TRL, verl, OpenRLHF).

:func:`reward_function` returns the env's reward as a plain callable with TRL's
reward-function signature, ``fn(prompts, completions, **kwargs) -> list[float]``, and
:func:`prompt_dataset` returns the task's prompts as a list of rows (``"prompt"`` plus
one column per metadata key), ready for ``datasets.Dataset.from_list``. TRL passes a
dataset's extra columns to its reward functions as keyword lists, so the two fit
together, and a task trained with TRL is scored exactly as lm_gym's env scores it::

    rows = lm_gym.prompt_dataset("lm_gym/KeywordStory-v0", split="train")
    reward = lm_gym.reward_function("lm_gym/KeywordStory-v0")
    reward(["Keywords: dog, ball."], [" The dog caught the ball."], keywords=[["dog", "ball"]])

See ``examples/trl_grpo.py`` for a whole GRPOTrainer run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from lm_gym import error
from lm_gym.tasks.base import check_int

__all__ = ["prompt_dataset", "reward_function"]


def _env_of(env_or_id: Any, env_kwargs: dict[str, Any]) -> Any:
    """The unwrapped lm_gym env (single or vector) of an env, a vector env, or an id."""
    if isinstance(env_or_id, str):
        return gym.make(env_or_id, disable_env_checker=True, **env_kwargs).unwrapped
    if env_kwargs:
        raise error.InvalidArgument(
            f"env kwargs {sorted(env_kwargs)} were given with an env object; they apply only "
            "to an env id (configure the env itself instead)"
        )
    unwrapped = getattr(env_or_id, "unwrapped", None)
    if not (hasattr(unwrapped, "scorer") and hasattr(unwrapped, "task")):
        raise error.InvalidArgument(
            f"expected an lm_gym env, vector env or env id such as 'lm_gym/Continuation-v0', "
            f"got {env_or_id!r:.100}"
        )
    return unwrapped


def reward_function(env_or_id: Any, **env_kwargs: Any) -> Callable[..., list[float]]:
    """The env's reward as ``fn(prompts, completions, **kwargs) -> list[float]`` (TRL's
    reward-function signature): the same scorer the env uses, so the same texts get the
    same rewards, ``reward=`` and ``reward_weights=`` included.

    Args:
        env_or_id: an lm_gym env or vector env, or an env id (then built with ``env_kwargs``).
        **env_kwargs: ``gym.make`` keyword arguments for an id (``model=``, ``reward_weights=``, ...).

    The returned function takes the task's metadata columns (those of
    :func:`prompt_dataset`, e.g. ``keywords=``, ``topic=``) as lists, one item per
    completion, and ignores any other keyword (TRL passes ``trainer_state``,
    ``completion_ids`` and the dataset's other columns). Its name is ``"<id>_reward"``
    for TRL's logs.

    Raises:
        InvalidArgument: for something that is not an lm_gym env or id; when called, for
            a metadata column missing or of the wrong length.
    """
    env = _env_of(env_or_id, env_kwargs)
    scorer, task = env.scorer, env.task
    keys = tuple(task.sample(np.random.default_rng(0)).meta)  # every prompt has the same keys

    def reward(prompts: Sequence[str], completions: Sequence[str], **kwargs: Any) -> list[float]:
        n = len(completions)
        if len(prompts) != n:
            raise error.InvalidArgument(
                f"got {len(prompts)} prompts and {n} completions; pass one prompt per completion"
            )
        for key in keys:
            if key not in kwargs or len(kwargs[key]) != n:
                got = "missing" if key not in kwargs else f"{len(kwargs[key])} values"
                raise error.InvalidArgument(
                    f"task {task.name!r} scores with the metadata column {key!r} (one value per "
                    f"completion, {n} here), {got}; pass the columns of lm_gym.prompt_dataset: "
                    f"{list(keys)}"
                )
        metas = [{key: kwargs[key][i] for key in keys} for i in range(n)]
        rewards, _ = scorer(list(prompts), list(completions), metas)
        return [float(r) for r in rewards]

    reward.__name__ = reward.__qualname__ = f"{task.name}_reward"
    return reward


def prompt_dataset(
    env_or_id: Any, split: str | None = None, *, n: int | None = None, seed: int = 0, **env_kwargs: Any
) -> list[dict[str, Any]]:
    """The task's prompts as rows ``{"prompt": text, **meta}``, ready for
    ``datasets.Dataset.from_list`` (the columns :func:`reward_function` reads back).

    Args:
        env_or_id: an lm_gym env or vector env, or an env id.
        split: for an id, the text tasks' prompt split, ``"train"`` or ``"test"`` (the
            env's ``split=`` keyword, default ``"train"``); with an env, its own split.
        n: how many rows: a text task gives every prompt of its split once, in order (the
            first ``n`` when given); a task that generates prompts (the toy tasks) draws
            ``n`` from ``seed``, so ``n`` is required there.
        seed: seeds the draws (toy prompts; TopicSteering's per-prompt topic).
        **env_kwargs: ``gym.make`` keyword arguments for an id.

    Raises:
        InvalidArgument: ``split`` with an env object or a toy task, or no ``n`` for a toy task.
    """
    if split is not None:
        if not isinstance(env_or_id, str):
            raise error.InvalidArgument(
                f"split={split!r} applies only to an env id; the env object has its own split"
            )
        env_kwargs["split"] = split
    if n is not None:
        check_int("n", n, low=0)
    task = _env_of(env_or_id, env_kwargs).task
    dataset = getattr(task, "dataset", None)
    if dataset is not None:
        prompts = dataset(seed)[:n]
    elif n is None:
        raise error.InvalidArgument(
            f"task {task.name!r} generates its prompts; pass n= (how many rows to draw)"
        )
    else:
        rng = np.random.default_rng(seed)
        prompts = [task.sample(rng) for _ in range(n)]
    return [{"prompt": p.text, **p.meta} for p in prompts]
