"""Diversity: distinct-n with a local repetition penalty, per sample."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from lm_gym.error import InvalidArgument
from lm_gym.rewards._text import check_batch, words

__all__ = ["Diversity", "distinct_n", "repetition_rate", "ngrams"]


def ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    """The ``len(tokens) - n + 1`` n-grams of ``tokens`` in order (empty if too short)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: Sequence[Hashable], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique n-grams / total n-grams; 0.0 if there are none.

    >>> distinct_n("the the the the".split(), 1)
    0.25
    """
    if n < 1:
        raise InvalidArgument(f"n must be >= 1, got {n}.")
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(tokens: Sequence[Hashable], n: int = 2, window: int | None = 16) -> float:
    """Share of n-grams that already occurred among the previous ``window`` n-grams.

    The n-gram form of rep-w (Welleck et al., 2019, "Neural Text Generation with
    Unlikelihood Training"). ``window=None`` looks back over the whole text, which makes
    it ``1 - distinct_n(tokens, n)``. 0.0 when there are no n-grams.

    >>> repetition_rate("the the the the".split(), n=2)  # (the the) x3: 2 repeats of 3
    0.6666666666666666
    """
    if n < 1:
        raise InvalidArgument(f"n must be >= 1, got {n}.")
    if window is not None and window < 1:
        raise InvalidArgument(f"window must be >= 1 or None, got {window}.")
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    last_seen: dict[tuple[Hashable, ...], int] = {}
    repeats = 0
    for i, g in enumerate(grams):
        j = last_seen.get(g)
        if j is not None and (window is None or i - j <= window):
            repeats += 1
        last_seen[g] = i
    return repeats / len(grams)


class Diversity:
    """Per-sample diversity: ``mean_n distinct_n(tokens, n) * (1 - repetition_rate(tokens))``.

    Tokens are lowercase words (or ``tokenize(text)``). The distinct-n mean rewards varied
    vocabulary and penalises very short texts (a text with fewer than ``n`` tokens has
    distinct-n 0); the rep-w factor (bigram repeats within the last ``window`` bigrams)
    penalises loops. A varied sentence scores 1.0, ``"the the the the"`` scores
    ``(1/4 + 1/3) / 2 * (1 - 2/3) ≈ 0.097``, an empty text 0.0.

    Args:
        n: the n-gram orders averaged.
        repetition_n: n-gram order of the repetition penalty; 0 disables it.
        window: look-back of the repetition penalty in n-grams; None = the whole text.
        tokenize: text -> tokens; default :func:`lm_gym.rewards._text.words`.
    """

    def __init__(
        self,
        n: int | Sequence[int] = (1, 2),
        *,
        repetition_n: int = 2,
        window: int | None = 16,
        tokenize: Callable[[str], Sequence[Hashable]] | None = None,
    ) -> None:
        orders = (n,) if isinstance(n, int) else tuple(n)
        if not orders or any(not isinstance(k, int) or k < 1 for k in orders):
            raise InvalidArgument(
                f"n must be a positive int or a non-empty tuple of them, got {n!r}."
            )
        if repetition_n < 0:
            raise InvalidArgument(f"repetition_n must be >= 0, got {repetition_n}.")
        if window is not None and window < 1:
            raise InvalidArgument(f"window must be >= 1 or None, got {window}.")
        self.n = orders
        self.repetition_n = repetition_n
        self.window = window
        self.tokenize = tokenize or words

    def score_tokens(self, tokens: Sequence[Hashable]) -> float:
        """The diversity of one token sequence, in [0, 1]."""
        if not tokens:
            return 0.0
        score = float(np.mean([distinct_n(tokens, k) for k in self.n]))
        if self.repetition_n:
            score *= 1.0 - repetition_rate(tokens, self.repetition_n, self.window)
        return score

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> np.ndarray:
        """Diversity scores in [0, 1], shape (B,) float64."""
        check_batch(prompts, completions)
        return np.array(
            [self.score_tokens(self.tokenize(c)) for c in completions], dtype=np.float64
        )

    def __repr__(self) -> str:
        return f"Diversity(n={self.n}, repetition_n={self.repetition_n}, window={self.window})"
