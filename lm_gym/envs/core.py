"""What the single and the vector env share: building the task, the spaces, and scoring."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from lm_gym import error
from lm_gym.rewards.composite import merge_weights, weighted_sum
from lm_gym.tasks.base import (
    ENV_ARGS,
    CustomReward,
    RewardFn,
    Task,
    task_kwargs_check,
    validate_scores,
)


def resolve_task(
    task: str | type[Task] | Task, kwargs: Mapping[str, Any], env_args: Sequence[str] = ENV_ARGS
) -> Task:
    """Build the task from a ``"module:Class"`` path, a Task subclass, or an instance;
    ``env_args`` are the env's own keyword arguments, listed with the task's when a keyword
    is unknown."""
    if isinstance(task, Task):
        if kwargs:
            raise error.InvalidArgument(
                f"Task instance {task!r} was given with extra keyword arguments {sorted(kwargs)}; "
                "configure the instance itself instead."
            )
        return task
    if isinstance(task, str):
        module_name, _, attr = task.partition(":")
        try:
            task = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise error.InvalidArgument(
                f"Cannot import task {task!r}: expected 'package.module:TaskClass'"
            ) from e
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise error.InvalidArgument(
            f"task must be a lm_gym.tasks.Task subclass, an instance, or 'module:Class', got {task!r}"
        )
    task_kwargs_check(task, kwargs, env_args)
    return task(**kwargs)


class EpisodeScorer:
    """Scores a batch of finished episodes with the task's reward or a user's replacement.

    Checks what comes back (one finite float per episode, the declared components) so a
    broken reward fails loudly, naming the culprit, instead of poisoning training.
    """

    def __init__(
        self,
        task: Task,
        reward: RewardFn | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> None:
        self.task = task
        self.weights = composite_weights(task, reward, reward_weights)
        self.custom = CustomReward(reward) if reward is not None else None
        self.component_names: tuple[str, ...] = (
            (CustomReward.component,) if self.custom else tuple(task.reward_components)
        )
        self._names = set(self.component_names)
        # The built-in toy tasks' scores are arithmetic on strings, pinned by hand-computed
        # tests, and are not checked again on every episode; every other task (the text tasks
        # score through models, users' tasks and subclasses through their own code) is.
        self._trusted = type(task).__module__ == "lm_gym.tasks.toy"

    def __call__(
        self, prompts: list[str], completions: list[str], metas: list[dict[str, Any]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rewards (B,) and each component's values (B,)."""
        keys = metas[0].keys() if metas else ()
        meta = {k: [m[k] for m in metas] for k in keys}
        if self.custom is not None:
            reward, comps = self.custom(prompts, completions, meta)
        else:
            reward, comps = self._task_score(prompts, completions, meta)
            if not self._trusted and not self._well_formed(reward, comps, len(completions)):
                reward, comps = self._checked(reward, comps, len(completions))
        return reward, comps

    def _task_score(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> tuple[Any, Any]:
        """The task's score; a composite is summed under this env's weights."""
        if self.weights is None:
            return self.task.score(prompts, completions, meta)
        comps = self.task.components(prompts, completions, meta)
        try:
            return weighted_sum(self.weights, comps, len(completions)), comps
        except (KeyError, TypeError, ValueError):  # malformed components: the check names them
            return np.zeros(len(completions)), comps

    def _well_formed(self, reward: Any, comps: Any, n: int) -> bool:
        """The fast check: float64 arrays of shape (n,), finite, the declared components."""
        if not isinstance(comps, dict) or comps.keys() != self._names:
            return False
        total = 0.0
        for arr in (reward, *comps.values()):
            if type(arr) is not np.ndarray or arr.dtype != np.float64 or arr.shape != (n,):
                return False
            total += sum(arr.tolist()) if n <= 64 else float(arr.sum())
        # One test for all: a NaN or an infinity makes the sum non-finite (an overflowing sum
        # of finite values only sends the scores through the slow, exact check).
        return math.isfinite(total)

    def _checked(self, reward: Any, comps: Any, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The slow check, with an error that names what is wrong."""
        who = f"task {self.task.name!r}"
        reward = validate_scores(reward, n, f"{who} score")
        if not isinstance(comps, dict) or comps.keys() != self._names:
            raise error.RewardError(
                f"{who} reported components {sorted(comps) if isinstance(comps, dict) else comps!r}, "
                f"but declares reward_components={list(self.component_names)}"
            )
        comps = {k: validate_scores(v, n, f"{who} component {k!r}") for k, v in comps.items()}
        return reward, comps

    def per_episode(self, comps: Mapping[str, np.ndarray], i: int) -> dict[str, float]:
        """Episode ``i``'s components as a dict of Python floats."""
        return {k: float(comps[k].item(i)) for k in self.component_names}


def composite_weights(
    task: Task, reward: RewardFn | None, reward_weights: Mapping[str, float] | None
) -> dict[str, float] | None:
    """An env's own weights of the task's composite (its defaults, some replaced by
    ``reward_weights``), or ``None`` when the reward is not a weighted composite."""
    if reward_weights is not None:
        if reward is not None:
            raise error.InvalidArgument(
                "Pass either reward= (replaces the task's score) or reward_weights= "
                "(reweights the task's composite), not both."
            )
        if task.default_weights is None:
            raise error.InvalidArgument(
                f"reward_weights={reward_weights!r} does not apply: the reward of task "
                f"{task.name!r} is not a weighted composite (components: "
                f"{list(task.reward_components)}). Pass reward=fn to replace it instead."
            )
    if reward is not None or task.default_weights is None:
        return None
    return merge_weights(task.default_weights, reward_weights, label="reward_weights")


def observation_space(vocab_size: int, length: int) -> spaces.Dict:
    """``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``."""
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, vocab_size - 1, shape=(length,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(length,), dtype=np.int8),
        }
    )


def action_mask_of(task: Task, vocab_size: int) -> np.ndarray | None:
    """The int8 (V,) mask of valid actions, read-only; ``None`` when every token is valid.

    PAD is never a valid action, and neither are logit slots past the tokenizer's size.
    """
    valid = task.valid_token_ids()
    tok = task.tokenizer
    if valid is None:
        if vocab_size == tok.vocab_size and tok.pad_token_id is None:
            return None
        mask = np.zeros(vocab_size, dtype=np.int8)
        mask[: tok.vocab_size] = 1
    else:
        mask = np.zeros(vocab_size, dtype=np.int8)
        mask[np.asarray(list(valid), dtype=np.int64)] = 1
    if tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id:
        mask[tok.pad_token_id] = 0
    mask.flags.writeable = False
    return mask


