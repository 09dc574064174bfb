"""Corpus-level metrics over a set of generations, as RL4LMs and GEM report them.

:func:`evaluate_texts` returns one flat dict of floats:

==================  =====================================================================
key                 meaning
==================  =====================================================================
``mean_reward``     mean of ``reward_fn`` over the samples (when given)
``reward/<name>``   mean of each component (when ``reward_fn`` is a :class:`Composite`)
``perplexity``      ``exp(-Σ log p / Σ tokens)`` of the completions given their prompts
                    under the reference LM, token-weighted (when ``ref_model`` is given)
``distinct-n``      unique n-grams / total n-grams over the corpus (n = 1, 2, 3)
``entropy-n``       Shannon entropy (bits) of the corpus n-gram distribution (n = 1, 2, 3)
``msttr``           mean segmental type-token ratio over 100-token segments
``mean_length``     mean tokens per completion
``self_bleu``       mean BLEU-4 of each completion against the others (lower = more diverse)
==================  =====================================================================

The corpus statistics follow GEM-metrics (Gehrmann et al., 2021): n-grams are counted
within each completion and pooled; MSTTR concatenates all tokens and averages the TTR
of consecutive full segments. A statistic with nothing to count is ``nan``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from lm_gym.error import InvalidArgument
from lm_gym.rewards.composite import Composite
from lm_gym.rewards.diversity import ngrams
from lm_gym.tasks.base import validate_scores

__all__ = [
    "evaluate_texts",
    "corpus_distinct_n",
    "ngram_entropy",
    "msttr",
    "sentence_bleu",
    "self_bleu",
]

Tokens = Sequence[Hashable]


def corpus_distinct_n(corpus: Sequence[Tokens], n: int) -> float:
    """Unique n-grams / total n-grams, n-grams taken within each text; nan if none."""
    counts = Counter(g for tokens in corpus for g in ngrams(tokens, n))
    total = sum(counts.values())
    return len(counts) / total if total else math.nan


def ngram_entropy(corpus: Sequence[Tokens], n: int) -> float:
    """Shannon entropy in bits, ``-Σ p log2 p``, of the pooled n-gram counts; nan if none."""
    counts = Counter(g for tokens in corpus for g in ngrams(tokens, n))
    total = sum(counts.values())
    if not total:
        return math.nan
    p = np.array(list(counts.values()), dtype=np.float64) / total
    return float(-(p * np.log2(p)).sum())


def msttr(corpus: Sequence[Tokens], window: int = 100) -> float:
    """Mean segmental type-token ratio (Johnson, 1944).

    All tokens are concatenated and cut into consecutive segments of ``window`` tokens;
    the last, incomplete segment is dropped; the result is the mean of the segments'
    ``types / tokens``. With fewer than ``window`` tokens it is the plain TTR of all
    tokens; nan with none.
    """
    if window < 1:
        raise InvalidArgument(f"window must be >= 1, got {window}.")
    tokens = [t for text in corpus for t in text]
    if not tokens:
        return math.nan
    if len(tokens) < window:
        return len(set(tokens)) / len(tokens)
    ttrs = [
        len(set(tokens[i : i + window])) / window
        for i in range(0, len(tokens) - window + 1, window)
    ]
    return float(np.mean(ttrs))


def _brevity_penalty(hyp_len: int, ref_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    return math.exp(1.0 - ref_len / hyp_len) if hyp_len else 0.0


def sentence_bleu(
    hypothesis: Tokens,
    references: Sequence[Tokens],
    max_n: int = 4,
    epsilon: float = 0.1,
) -> float:
    """Sentence BLEU (Papineni et al., 2002) with uniform weights and method-1 smoothing.

    Modified n-gram precisions are clipped by the maximum count in any reference; a zero
    match count becomes ``epsilon`` (Chen & Cherry, 2014, method 1, as in NLTK's
    ``SmoothingFunction().method1``). The brevity penalty uses the reference length
    closest to the hypothesis's (the shorter on ties). A hypothesis shorter than
    ``max_n`` uses orders up to its length. Empty hypothesis or no references: 0.0.
    """
    if not hypothesis or not references:
        return 0.0
    ref_counts = [Counter(g for n in range(1, max_n + 1) for g in ngrams(r, n)) for r in references]
    max_ref: Counter[tuple[Hashable, ...]] = Counter()
    for c in ref_counts:
        max_ref |= c
    ref_len = min((len(r) for r in references), key=lambda r: (abs(r - len(hypothesis)), r))
    return _bleu_from_counts(hypothesis, max_ref.__getitem__, ref_len, max_n, epsilon)


def _bleu_from_counts(
    hypothesis: Tokens,
    max_ref_count: Callable[[tuple[Hashable, ...]], int],
    ref_len: int,
    max_n: int,
    epsilon: float,
) -> float:
    orders = min(max_n, len(hypothesis))
    log_p = 0.0
    for n in range(1, orders + 1):
        hyp = Counter(ngrams(hypothesis, n))
        matches = sum(min(c, max_ref_count(g)) for g, c in hyp.items())
        total = sum(hyp.values())
        log_p += math.log((matches if matches else epsilon) / total)
    return _brevity_penalty(len(hypothesis), ref_len) * math.exp(log_p / orders)


def self_bleu(corpus: Sequence[Tokens], max_n: int = 4, max_samples: int | None = 200) -> float:
    """Mean BLEU-``max_n`` of each text against all the others (Zhu et al., 2018, Texygen).

    1.0 for identical texts; lower is more diverse. Only the first ``max_samples`` texts
    are used (O(N²) otherwise). nan with fewer than two texts.
    """
    texts = [list(t) for t in corpus][: max_samples or None]
    if len(texts) < 2:
        return math.nan
    # For each n-gram keep its two largest per-text counts, so "max over all texts but i"
    # is one lookup instead of a pass over the corpus per hypothesis.
    top: dict[tuple[Hashable, ...], list[tuple[int, int]]] = {}
    for i, tokens in enumerate(texts):
        counts = Counter(g for n in range(1, max_n + 1) for g in ngrams(tokens, n))
        for g, c in counts.items():
            best = top.setdefault(g, [])
            best.append((c, i))
            if len(best) > 2:
                best.sort(reverse=True)
                best.pop()
    lengths = np.array([len(t) for t in texts])
    scores = []
    for i, hyp in enumerate(texts):

        def max_other(g: tuple[Hashable, ...], i: int = i) -> int:
            return max((c for c, j in top.get(g, ()) if j != i), default=0)

        others = np.delete(lengths, i)
        ref_len = int(min(others, key=lambda r: (abs(int(r) - len(hyp)), int(r))))
        scores.append(_bleu_from_counts(hyp, max_other, ref_len, max_n, 0.1) if hyp else 0.0)
    return float(np.mean(scores))


def evaluate_texts(
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    reward_fn: Callable[..., Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    ref_model: Any = None,
    ref_tokenizer: Any = None,
    tokenize: Callable[[str], Tokens] = str.split,
    self_bleu_samples: int | None = 200,
) -> dict[str, float]:
    """Corpus-level metrics of ``completions`` (see the module docstring for the keys).

    Args:
        prompts, completions: B strings each.
        reward_fn: a batched reward; a :class:`~lm_gym.rewards.Composite` also yields
            ``reward/<component>`` means.
        meta: per-sample meta passed to ``reward_fn`` as keyword arguments.
        ref_model: the reference LM for ``perplexity``: a causal LM object (with
            ``ref_tokenizer``) or a name/path loaded by ``lm_gym.models``.
        ref_tokenizer: the tokenizer of a ``ref_model`` object.
        tokenize: text -> tokens for the lexical statistics; whitespace by default.
        self_bleu_samples: cap on the texts used by self-BLEU; None = all.

    Returns:
        A dict of floats.
    """
    if isinstance(prompts, str) or isinstance(completions, str):
        raise InvalidArgument(
            "evaluate_texts takes lists of prompts and completions, not a string."
        )
    if len(prompts) != len(completions):
        raise InvalidArgument(
            f"prompts and completions must have the same length, got {len(prompts)} "
            f"and {len(completions)}."
        )
    prompts, completions = list(prompts), list(completions)
    out: dict[str, float] = {}

    if reward_fn is not None:
        kwargs = dict(meta or {})
        if isinstance(reward_fn, Composite):
            total, parts = reward_fn.score(prompts, completions, **kwargs)
            out["mean_reward"] = _mean(total)
            for name, scores in parts.items():
                out[f"reward/{name}"] = _mean(scores)
        else:
            name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
            scores = validate_scores(
                reward_fn(prompts, completions, **kwargs), len(completions), f"reward function {name!r}"
            )
            out["mean_reward"] = _mean(scores)

    if ref_model is not None:
        out["perplexity"] = _perplexity(prompts, completions, ref_model, ref_tokenizer)

    corpus = [list(tokenize(c)) for c in completions]
    for n in (1, 2, 3):
        out[f"distinct-{n}"] = corpus_distinct_n(corpus, n)
    for n in (1, 2, 3):
        out[f"entropy-{n}"] = ngram_entropy(corpus, n)
    out["msttr"] = msttr(corpus)
    out["mean_length"] = float(np.mean([len(t) for t in corpus])) if corpus else math.nan
    out["self_bleu"] = self_bleu(corpus, max_samples=self_bleu_samples)
    return out


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def _perplexity(
    prompts: list[str], completions: list[str], ref_model: Any, ref_tokenizer: Any
) -> float:
    from lm_gym.rewards.fluency import load_reference, sequence_logprobs

    if isinstance(ref_model, str):
        ref_model, ref_tokenizer = load_reference(ref_model)
    elif ref_tokenizer is None:
        raise InvalidArgument("ref_model is a model object; pass its ref_tokenizer too.")
    mean_logprob, n_tokens = sequence_logprobs(ref_model, ref_tokenizer, prompts, completions)
    total = int(n_tokens.sum())
    if total == 0:
        return math.nan
    return float(math.exp(-float((mean_logprob * n_tokens).sum()) / total))
