"""Env ids: registering tasks with Gymnasium and listing them."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from lm_gym import error
from lm_gym.tasks.base import Task

ENTRY_POINT = "lm_gym.envs.text_gen_env:TextGenEnv"
VECTOR_ENTRY_POINT = "lm_gym.envs.vector_env:TextGenVectorEnv"

_descriptions: dict[str, str] = {}


def register_task(
    env_id: str,
    task: str | type[Task],
    *,
    description: str | None = None,
    **default_kwargs: Any,
) -> None:
    """Give a task an env id, with both entry points, so that ``gym.make(env_id)`` and
    ``gym.make_vec(env_id, num_envs=N, vectorization_mode="vector_entry_point")`` work.

    Args:
        env_id: e.g. ``"my_pkg/MyTask-v0"``.
        task: a :class:`~lm_gym.tasks.Task` subclass, or its ``"package.module:Class"`` path
            (imported only when an env is made).
        description: one line for ``lm_gym.list_envs()``; defaults to ``task.description``.
        **default_kwargs: default keyword arguments for the task (``gym.make`` kwargs override).
    """
    if isinstance(task, type):
        if not issubclass(task, Task):
            raise error.InvalidArgument(f"task must be a lm_gym.tasks.Task subclass, got {task!r}")
        description = description or task.description
    elif not (isinstance(task, str) and ":" in task):
        raise error.InvalidArgument(
            f"task must be a Task subclass or a 'package.module:Class' path, got {task!r}"
        )
    gym.register(
        id=env_id,
        entry_point=ENTRY_POINT,
        vector_entry_point=VECTOR_ENTRY_POINT,
        kwargs={"task": task, **default_kwargs},
    )
    _descriptions[env_id] = description or ""


def check_env_id(env_id: Any) -> str:
    """``env_id`` if ``gym.make`` knows it, else :class:`~lm_gym.error.UnknownName` with the
    closest registered id and the lm_gym ids (``lm-gym list`` shows them)."""
    if not isinstance(env_id, str) or not env_id:
        raise error.InvalidArgument(f"env id must be a non-empty string such as 'lm_gym/Copy-v0', got {env_id!r}")
    try:
        gym.spec(env_id)
    except (gym.error.Error, ImportError, ValueError):
        hint = error.did_you_mean(env_id, gym.registry)
        raise error.UnknownName(
            f"Unknown env id {env_id!r}.{hint} The lm_gym ids are: {', '.join(_descriptions)} "
            "(`lm-gym list` shows them)."
        ) from None
    return env_id


def list_envs() -> dict[str, str]:
    """Every lm_gym env id (built-in and registered with :func:`register_task`) with a
    one-line description, in registration order."""
    return dict(_descriptions)


BUILTIN_TASKS: dict[str, tuple[str, str] | tuple[str, str, dict[str, Any]]] = {
    "lm_gym/Copy-v0": ("lm_gym.tasks.toy:CopyTask", "Reproduce the prompt string (toy characters)."),
    "lm_gym/Reverse-v0": ("lm_gym.tasks.toy:ReverseTask", "Write the prompt string reversed (toy characters)."),
    "lm_gym/Addition-v0": ("lm_gym.tasks.toy:AdditionTask", "Write the sum of the two numbers (digits, + and =)."),
    "lm_gym/Parentheses-v0": (
        "lm_gym.tasks.toy:ParenthesesTask",
        "Write a balanced string of parentheses of the asked length.",
    ),
    "lm_gym/KeywordToy-v0": (
        "lm_gym.tasks.toy:KeywordToyTask",
        "The composite (fluency, keyword relevance, diversity) on a toy word vocabulary.",
    ),
    "lm_gym/SentimentContinuation-v0": (
        "lm_gym.tasks.text:SentimentContinuationTask",
        "Continue the prompt with positive sentiment, fluently, without repeating.",
    ),
    "lm_gym/TopicSteering-v0": (
        "lm_gym.tasks.text:TopicSteeringTask",
        "Continue the prompt toward a named topic (v0: embedding cosine, ungated; kept as it was).",
        {"topic_scorer": "embedding", "language_gate": None, "bridge": None},
    ),
    "lm_gym/TopicSteering-v1": (
        "lm_gym.tasks.text:TopicSteeringTask",
        "Continue the prompt toward a named topic (classifier probability, gated by fluency).",
    ),
    "lm_gym/KeywordStory-v0": (
        "lm_gym.tasks.text:KeywordStoryTask",
        "Write a fluent text that uses every given concept (v0: the list alone, ungated; kept as it was).",
        {"opening": False, "language_gate": None, "max_prompt_tokens": 32, "model": "builtin"},
    ),
    "lm_gym/KeywordStory-v1": (
        "lm_gym.tasks.text:KeywordStoryTask",
        "Write a fluent story that uses every given concept (v1: on the built-in LM, which never saw a list; use v2).",
        {"model": "builtin"},
    ),
    "lm_gym/KeywordStory-v2": (
        "lm_gym.tasks.text:KeywordStoryTask",
        "Write a fluent story that uses every given concept (the list, then the story's opening; gated by fluency; "
        "on the keyword-list LM).",
    ),
    "lm_gym/Continuation-v0": (
        "lm_gym.tasks.text:ContinuationTask",
        "The plain composite: fluent, on the prompt's subject, diverse (v0: word overlap, ungated; kept as it was).",
        {"subject_scorer": "overlap", "language_gate": None},
    ),
    "lm_gym/Continuation-v1": (
        "lm_gym.tasks.text:ContinuationTask",
        "The plain composite: fluent, on the prompt's topic (classifier evidence, gated by fluency), diverse.",
    ),
}


def register_builtin() -> None:
    for env_id, (path, description, *kwargs) in BUILTIN_TASKS.items():
        if env_id not in gym.registry:
            register_task(env_id, path, description=description, **(kwargs[0] if kwargs else {}))
