"""Reward functions: fluency, relevance (sentiment, topic, keywords, continuity), diversity,
and a learned :class:`RewardModel` (any Hugging Face sequence classifier).

Every reward is batched: ``fn(prompts: list[str], completions: list[str], **meta) ->
np.ndarray`` of shape (B,) float64 with scores in [0, 1]; ``meta`` holds per-sample lists
(``keywords=[["dog", "ball"], ...]``, ``topic=[...]``, ``sentiment=[...]``) and each
reward ignores the keys it does not use. :class:`Composite` combines named components.

Importing this package does not import torch, transformers, vaderSentiment or
sentence-transformers; each reward loads what it needs on first use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from lm_gym.error import InvalidArgument, unknown
from lm_gym.rewards.composite import Composite, RewardFn, validate_scores
from lm_gym.rewards.diversity import Diversity, distinct_n, ngrams, repetition_rate
from lm_gym.rewards.fluency import Fluency, sequence_logprobs
from lm_gym.rewards.relevance import Continuity, KeywordCoverage, Sentiment, TopicRelevance
from lm_gym.rewards.reward_model import RewardModel

__all__ = [
    "Composite",
    "Continuity",
    "Diversity",
    "Fluency",
    "KeywordCoverage",
    "REWARDS",
    "RewardFn",
    "RewardModel",
    "Sentiment",
    "TopicRelevance",
    "distinct_n",
    "get_reward",
    "reward_from_spec",
    "ngrams",
    "repetition_rate",
    "sequence_logprobs",
    "validate_scores",
]

REWARDS: dict[str, Callable[..., RewardFn]] = {
    "fluency": Fluency,
    "sentiment": Sentiment,
    "topic": TopicRelevance,
    "keywords": KeywordCoverage,
    "continuity": Continuity,
    "diversity": Diversity,
    "reward_model": RewardModel,
}
"""Reward name -> class, for :func:`get_reward` and config files."""

REWARD_ALIASES: dict[str, str] = {"vader": "sentiment", "classifier": "reward_model"}
"""Other names of rewards in :data:`REWARDS`, for :func:`reward_from_spec`."""


def get_reward(name: str, **kwargs: Any) -> RewardFn:
    """Build a reward by name: ``get_reward("sentiment", target="negative")``.

    Raises:
        UnknownName: ``name`` is not in :data:`REWARDS` (with a did-you-mean).
        InvalidArgument: a keyword argument that reward does not take.
    """
    try:
        cls = REWARDS[name]
    except (KeyError, TypeError):
        raise unknown("reward", name, REWARDS) from None
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise InvalidArgument(f"Bad arguments for reward {name!r}: {e}.") from None
    return cls(**kwargs)


def reward_from_spec(spec: str | RewardFn) -> RewardFn:
    """A reward from a spec: a callable is returned as it is; a string is
    ``NAME[:KEY=VALUE,...]``, a name of :data:`REWARDS` (or :data:`REWARD_ALIASES`) and
    its keyword arguments, as a command-line flag or a config file gives it::

        reward_from_spec("vader")                         # Sentiment(): VADER toward positive
        reward_from_spec("sentiment:target=negative")
        reward_from_spec("classifier:label=positive")     # RewardModel("builtin", label="positive")
        reward_from_spec("reward_model:model=path/to/clf,label=1")

    Values that read as integers or floats become numbers; the rest stay strings.

    Raises:
        UnknownName: an unknown name (with a did-you-mean and the valid names).
        InvalidArgument: a malformed ``KEY=VALUE`` list, or arguments the reward does not take.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgument(
            f"a reward spec must be a callable or a string NAME[:KEY=VALUE,...], got {spec!r}"
        )
    name, _, args = spec.strip().partition(":")
    if name not in REWARDS and name not in REWARD_ALIASES:
        raise unknown("reward", name, [*REWARDS, *REWARD_ALIASES])
    kwargs: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InvalidArgument(
                f"reward spec {spec!r}: {item!r} is not KEY=VALUE; write e.g. 'sentiment:target=negative'"
            )
        kwargs[key.strip()] = _spec_value(value.strip())
    return get_reward(REWARD_ALIASES.get(name, name), **kwargs)


def _spec_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
