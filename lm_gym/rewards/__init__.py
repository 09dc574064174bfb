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
