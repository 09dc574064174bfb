"""What the single and the vector env share: building the task, the spaces, and scoring."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from lm_gym import error
from lm_gym.tasks.base import CustomReward, RewardFn, Task, task_kwargs_check, validate_scores


def resolve_task(task: str | type[Task] | Task, kwargs: Mapping[str, Any]) -> Task:
    """Build the task from a ``"module:Class"`` path, a Task subclass, or an instance."""
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
    task_kwargs_check(task, kwargs)
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
        if reward_weights is not None:
            if reward is not None:
                raise error.InvalidArgument(
                    "Pass either reward= (replaces the task's score) or reward_weights= "
                    "(reweights the task's composite), not both."
                )
            task.set_weights(reward_weights)
        self.custom = CustomReward(reward) if reward is not None else None
        self.component_names: tuple[str, ...] = (
            (CustomReward.component,) if self.custom else tuple(task.reward_components)
        )

    def __call__(
        self, prompts: list[str], completions: list[str], metas: list[dict[str, Any]]
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Rewards (B,) and one ``{component: value}`` dict per episode."""
        keys = metas[0].keys() if metas else ()
        meta = {k: [m[k] for m in metas] for k in keys}
        if self.custom is not None:
            reward, comps = self.custom(prompts, completions, meta)
        else:
            reward, comps = self.task.score(prompts, completions, meta)
            who = f"task {self.task.name!r}"
            reward = validate_scores(reward, len(completions), f"{who} score")
            if set(comps) != set(self.component_names):
                raise error.RewardError(
                    f"{who} reported components {sorted(comps)}, but declares "
                    f"reward_components={list(self.component_names)}"
                )
            comps = {k: validate_scores(v, len(completions), f"{who} component {k!r}") for k, v in comps.items()}
        per_episode = [
            {k: float(comps[k][i]) for k in self.component_names} for i in range(len(completions))
        ]
        return reward, per_episode


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


def left_pad(ids: list[int], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad ``ids`` to ``length``: (input_ids int64 (L,), attention_mask int8 (L,))."""
    out = np.full(length, pad_id, dtype=np.int64)
    mask = np.zeros(length, dtype=np.int8)
    if ids:
        out[length - len(ids) :] = ids
        mask[length - len(ids) :] = 1
    return out, mask
