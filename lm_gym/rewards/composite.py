"""The composite reward ``R = Σ_k w_k · c_k`` over named components."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lm_gym.error import Error, InvalidArgument, RewardError, unknown
from lm_gym.tasks.base import validate_scores

__all__ = ["Composite", "RewardFn", "check_weight", "merge_weights", "validate_scores", "weighted_sum"]

RewardFn = Callable[..., Any]
"""A batched reward: ``fn(prompts: list[str], completions: list[str], **meta) -> (B,) scores``."""


def check_weight(label: str, name: str, value: Any) -> float:
    """A component's weight as a float, else :class:`InvalidArgument` (finite, >= 0)."""
    try:
        w = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        w = math.nan
    if not math.isfinite(w) or w < 0:
        raise InvalidArgument(f"{label}[{name!r}] must be a finite number >= 0, got {value!r}.")
    return w


def merge_weights(
    defaults: Mapping[str, float], overrides: Mapping[str, float] | None, *, label: str = "weights"
) -> dict[str, float]:
    """A new dict: ``defaults`` with the components ``overrides`` names replaced (each
    checked by :func:`check_weight`); an unknown name raises with a did-you-mean. The one
    place where composite weights are validated (:class:`Composite`, ``reward_weights=``)."""
    if overrides is None:
        return {name: float(w) for name, w in defaults.items()}
    if not isinstance(overrides, Mapping):
        raise InvalidArgument(f"{label} must be a dict of component name -> weight, got {overrides!r}.")
    for name in overrides:
        if name not in defaults:
            raise unknown("reward component", name, defaults)
    return {name: check_weight(label, name, overrides.get(name, w)) for name, w in defaults.items()}


def weighted_sum(weights: Mapping[str, float], components: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """``Σ_k w_k · c_k``, shape (n,) float64, accumulated in ``weights``' order."""
    total = np.zeros(n, dtype=np.float64)
    for name, w in weights.items():
        total += w * components[name]
    return total


class Composite:
    """A weighted sum of named reward components: ``R = Σ_k w_k · c_k``.

    Every component is called once per scoring call with the same arguments and must
    return B finite scores (else :class:`~lm_gym.error.RewardError` naming it). The total
    is accumulated in the components' order, so it equals the weighted sum of the scores
    that :meth:`score` and :meth:`components` report, exactly.

    Args:
        components: name -> batched reward function, e.g.
            ``{"fluency": Fluency(), "relevance": KeywordCoverage(), "diversity": Diversity()}``.
        weights: name -> weight (finite, >= 0) for every component; None = all 1.0.

    Example:
        >>> from lm_gym.rewards import Composite, Diversity, KeywordCoverage
        >>> r = Composite({"kw": KeywordCoverage(), "div": Diversity()}, {"kw": 0.5, "div": 0.5})
        >>> float(r(["p"], ["a dog runs"], keywords=[["dog"]])[0])
        1.0
    """

    def __init__(
        self, components: Mapping[str, RewardFn], weights: Mapping[str, float] | None = None
    ) -> None:
        if not components:
            raise InvalidArgument("Composite needs at least one component.")
        for name, fn in components.items():
            if not callable(fn):
                raise InvalidArgument(
                    f"Reward component {name!r} must be callable, got {type(fn).__name__}."
                )
        self._components = dict(components)
        ones = {name: 1.0 for name in self._components}
        self._weights = merge_weights(ones, weights)
        missing = [name for name in self._components if weights is not None and name not in weights]
        if missing:
            raise InvalidArgument(
                f"No weight given for reward component(s) {missing}; weights must name "
                f"every component of {list(self._components)}."
            )

    @property
    def weights(self) -> dict[str, float]:
        """A copy of the weights, in component order."""
        return dict(self._weights)

    @property
    def names(self) -> list[str]:
        """The component names, in order."""
        return list(self._components)

    def with_weights(self, new_weights: Mapping[str, float]) -> Composite:
        """A new Composite with the same components and some weights replaced."""
        return Composite(self._components, merge_weights(self._weights, new_weights))

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(total, components)``: the (B,) weighted sum and each component's (B,) scores."""
        if isinstance(prompts, str) or isinstance(completions, str):
            raise InvalidArgument("Composite is batched: pass lists of prompts and completions.")
        if len(prompts) != len(completions):
            raise InvalidArgument(
                f"prompts and completions must have the same length, got {len(prompts)} "
                f"and {len(completions)}."
            )
        batch = len(completions)
        parts: dict[str, np.ndarray] = {}
        for name, fn in self._components.items():
            try:
                out = fn(prompts, completions, **meta)
            except Error:
                raise
            except Exception as e:
                raise RewardError(
                    f"Reward component {name!r} raised {type(e).__name__}: {e}"
                ) from e
            parts[name] = validate_scores(out, batch, f"reward component {name!r}")
        return weighted_sum(self._weights, parts, batch), parts

    def components(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> dict[str, np.ndarray]:
        """Each component's (B,) scores, keyed by name (the same keys every call)."""
        return self.score(prompts, completions, **meta)[1]

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> np.ndarray:
        """The weighted sum, shape (B,) float64."""
        return self.score(prompts, completions, **meta)[0]

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{w:g}·{name}={self._components[name]!r}" for name, w in self._weights.items()
        )
        return f"Composite({inner})"
