"""The text tasks: real language models, real text, the composite reward.

Every text task continues a prompt with a causal LM's tokenizer, and scores the
completion with ``R = α·fluency + β·relevance + γ·diversity``:

* **fluency** — :class:`lm_gym.rewards.Fluency` under a frozen reference LM (by default
  the env's own model): ``exp(mean_logprob / fluency_scale)`` of the completion given the
  prompt, in one batched forward per scoring call;
* **relevance** — what the task asks for (sentiment, topic, keywords, continuity);
* **diversity** — :class:`lm_gym.rewards.Diversity`: mean distinct-1/2 × (1 − repetition).

``model=`` (``"builtin"``, a Hugging Face name, or a local path) chooses the tokenizer and
the action space (the model's logit width); ``reference_model=`` (default: the same as
``model=``) is the frozen fluency judge, so a trained checkpoint can be evaluated under
the reward it was trained on: ``gym.make(id, model=checkpoint, reference_model="builtin")``.

Prompts come in two disjoint splits, chosen by ``split=``: ``"train"`` (the default, for
learning) and ``"test"`` (held out, for evaluation). The built-in prompts are the first
sentence(s) of corpus stories the built-in LM never saw in pretraining
(:mod:`lm_gym.models.corpus`): ``"train"`` from its ``valid`` split, ``"test"`` from its
``test`` split, :data:`N_DEFAULT_PROMPTS` stories each; a train prompt whose final text
equals a test prompt's is dropped, so the splits never share a prompt (see
:data:`SPLIT_SIZES`). The user's own prompts come through ``prompts=``: a list of strings,
a ``.txt`` file with one prompt a line, a ``.jsonl`` file of objects with a ``"prompt"``
field and optional metadata such as ``"keywords"`` or ``"topic"``, or a dict
``{"train": ..., "test": ...}`` of those, from which ``split`` picks one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lm_gym import error
from lm_gym.models import BUILTIN_KEYWORDS
from lm_gym.models.corpus import N_KEYWORDS, keyword_header
from lm_gym.tasks.base import Prompt, Task, check_int

N_DEFAULT_PROMPTS = 1000
"""Stories drawn for each built-in prompt split."""

PROMPT_SPLITS: dict[str, str] = {"train": "valid", "test": "test"}
"""A task's prompt split -> the corpus split its built-in prompts come from."""

SPLIT_SIZES: dict[str, dict[str, int]] = {
    "SentimentContinuation": {"train": 1000, "test": 1000},
    "TopicSteering": {"train": 1000, "test": 1000},
    "KeywordStory": {"train": 981, "test": 1000},
    "Continuation": {"train": 1000, "test": 1000},
}
"""How many built-in prompts each text task has per split (pinned by the tests).
KeywordStory-v0's prompts are a story's first ``n_keywords=3`` keywords, so its train split
loses the keyword lists that a test story also has; v1's prompts add the story's opening,
and no train prompt equals a test one (1000 and 1000)."""


class HFTokenizer:
    """Adapts a Hugging Face tokenizer to the env's :class:`~lm_gym.tasks.base.Tokenizer`.

    ``vocab_size`` is the tokenizer's size (``len(tokenizer)``); ids past it (a model's
    logit width may be padded) and special tokens decode to nothing.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.eos_token_id = int(tokenizer.eos_token_id)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([i for i in ids if i < self.vocab_size], skip_special_tokens=True)


def load_prompts(prompts: str | os.PathLike[str] | Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(text, meta)`` pairs from a list of strings, a ``.txt`` file or a ``.jsonl`` file."""
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if not path.is_file():
            raise error.InvalidArgument(
                f"prompts={os.fspath(prompts)!r} is not a file; pass a list of strings, a .txt "
                "file (one prompt a line) or a .jsonl file (objects with a 'prompt' field)"
            )
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if path.suffix == ".jsonl":
            out = []
            for n, line in enumerate(lines, 1):
                try:
                    obj = json.loads(line)
                    text = obj.pop("prompt")
                except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
                    raise error.InvalidArgument(
                        f"{path}:{n}: each line must be a JSON object with a 'prompt' field, got {line[:80]!r}"
                    ) from e
                out.append((str(text), obj))
        else:
            out = [(ln.strip(), {}) for ln in lines]
    elif isinstance(prompts, Sequence) and all(isinstance(p, str) for p in prompts):
        out = [(p, {}) for p in prompts]
    else:
        raise error.InvalidArgument(
            f"prompts must be a list of strings or a path to a .txt/.jsonl file, got {prompts!r:.100}"
        )
    if not out:
        raise error.InvalidArgument("prompts is empty; give at least one prompt")
    # every episode's meta must have the same keys (rewards get one list per key)
    keys = set(out[0][1])
    for text, meta in out:
        if set(meta) != keys:
            raise error.InvalidArgument(
                f"every prompt needs the same metadata keys; {text[:40]!r} has {sorted(meta)}, "
                f"the first has {sorted(keys)}"
            )
    return out


def check_split(split: Any) -> str:
    """``split`` if it is a prompt split (``"train"`` or ``"test"``), else :class:`UnknownName`."""
    if not isinstance(split, str) or split not in PROMPT_SPLITS:
        raise error.unknown("prompt split", split, PROMPT_SPLITS)
    return split


def builtin_prompts(split: str = "train", n: int = N_DEFAULT_PROMPTS) -> list[tuple[str, dict[str, Any]]]:
    """The built-in prompts of a split: the openings of ``n`` corpus stories held out from
    the built-in LM's pretraining (see :data:`PROMPT_SPLITS`)."""
    from lm_gym.models import corpus

    return [
        (text, {"topic": meta["topic"], "sentiment": meta["sentiment"], "keywords": list(meta["keywords"])})
        for text, meta in corpus.prompts(PROMPT_SPLITS[check_split(split)], n=n)
    ]


class TextTask(Task):
    """Base of the text tasks: model loading, prompts, and the composite reward.

    Args:
        model: ``"builtin"`` (no download), a Hugging Face causal-LM name, or a local path;
            it fixes the tokenizer and the action space (the policy's model).
        prompts: the user's prompts (see the module docstring); default: the built-in ones.
        split: ``"train"`` (default) or ``"test"``, the disjoint held-out prompts.
        reference_model: the frozen LM that judges fluency; default: the same as ``model``.
        relevance: replaces the task's relevance component with any batched
            ``fn(prompts, completions, **meta)``, e.g. ``lm_gym.rewards.RewardModel(label_key="topic")``.
        max_new_tokens: the completion budget in tokens.
        max_prompt_tokens: prompts are left-truncated to this many tokens.
        fluency_scale: fluency = ``exp(mean_logprob / fluency_scale)``.
        language_gate: relevance is multiplied by ``min(1, fluency / language_gate)``, so
            what the task asks for only counts in text that reads as language (token soup
            of the right words scores ~0); ``None``: no gate. 0.25 is perplexity 16 at the
            default ``fluency_scale``. Not applied to a user's ``relevance=``.
        device: where the frozen reference model runs (default CPU).
    """

    default_weights = {"fluency": 0.3, "relevance": 0.5, "diversity": 0.2}
    reward_components = ("fluency", "relevance", "diversity")

    def __init__(
        self,
        model: str = "builtin",
        prompts: str | os.PathLike[str] | Sequence[str] | Mapping[str, Any] | None = None,
        split: str = "train",
        reference_model: str | os.PathLike[str] | None = None,
        relevance: Any = None,
        max_new_tokens: int = 24,
        max_prompt_tokens: int = 32,
        fluency_scale: float = 2.0,
        language_gate: float | None = None,
        device: str | None = None,
    ) -> None:
        from lm_gym.models import load_frozen
        from lm_gym.rewards import Diversity, Fluency

        super().__init__(max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens)
        if not (isinstance(fluency_scale, (int, float)) and fluency_scale > 0):
            raise error.InvalidArgument(f"fluency_scale must be a positive number, got {fluency_scale!r}")
        if language_gate is not None and not (
            isinstance(language_gate, (int, float)) and not isinstance(language_gate, bool) and 0 < language_gate <= 1
        ):
            raise error.InvalidArgument(f"language_gate must be a number in (0, 1] or None, got {language_gate!r}")
        self.language_gate = language_gate
        self.split = check_split(split)
        if relevance is not None and not callable(relevance):
            raise error.InvalidArgument(
                f"relevance must be a callable fn(prompts, completions, **meta) -> list[float], got {relevance!r}"
            )
        self.relevance_fn = relevance
        self.model_name = os.fspath(model) if isinstance(model, os.PathLike) else model
        self.reference_model = self.model_name if reference_model is None else os.fspath(reference_model)
        self.device = device
        policy, hf_tokenizer = load_frozen(self.model_name, device=device)
        self._tokenizer = HFTokenizer(hf_tokenizer)
        self._vocab_size = int(policy.get_output_embeddings().weight.shape[0])
        positions = getattr(policy.config, "max_position_embeddings", None)
        if positions is not None and max_prompt_tokens + max_new_tokens > positions:
            raise error.InvalidArgument(
                f"max_prompt_tokens + max_new_tokens = {max_prompt_tokens + max_new_tokens} exceeds "
                f"the model's {positions} positions; lower one of them"
            )
        self.prompts = self.split_prompts(prompts, self.split)
        # the fluency judge: the policy's own model unless reference_model= names another
        self.reference, judge_tokenizer = (
            (policy, hf_tokenizer) if self.reference_model == self.model_name
            else load_frozen(self.reference_model, device=device)
        )
        self.fluency = Fluency(self.reference, judge_tokenizer, scale=fluency_scale, device=device)
        self.diversity = Diversity()

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def prepare_prompts(self, prompts: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """Turn loaded ``(text, meta)`` pairs into this task's prompts (a hook for subclasses)."""
        return prompts

    def split_prompts(self, prompts: Any, split: str) -> list[tuple[str, dict[str, Any]]]:
        """The prepared prompts of ``split``: the user's (a dict picks the split), else the
        built-in ones, with train prompts that equal a test prompt dropped."""
        if prompts is None:
            test = self.prepare_prompts(builtin_prompts("test"))
            if split == "test":
                return test
            held_out = {text for text, _ in test}
            return [p for p in self.prepare_prompts(builtin_prompts("train")) if p[0] not in held_out]
        if isinstance(prompts, Mapping):
            if split not in prompts:
                raise error.InvalidArgument(
                    f"prompts is a dict of splits {sorted(prompts)} without split={split!r}; "
                    f"give a {split!r} entry or pass split= one of {sorted(prompts)}"
                )
            prompts = prompts[split]
        return self.prepare_prompts(load_prompts(prompts))

    def dataset(self, seed: int = 0) -> list[Prompt]:
        """Every prompt of the split once, in order, as the env would give it (a task that
        draws per-episode metadata, like TopicSteering's topic, draws it from ``seed``)."""
        return [Prompt(text, dict(meta)) for text, meta in self.prompts]

    def sample(self, np_random: np.random.Generator) -> Prompt:
        text, meta = self.prompts[int(np_random.integers(len(self.prompts)))]
        return Prompt(text, dict(meta))

    def relevance(self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]) -> np.ndarray:
        raise NotImplementedError

    def components(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> dict[str, np.ndarray]:
        fluency = self.fluency(prompts, completions)
        if self.relevance_fn is not None:
            relevance = np.asarray(self.relevance_fn(prompts, completions, **meta), dtype=np.float64)
        else:
            relevance = self.relevance(prompts, completions, meta)
            if self.language_gate is not None:
                relevance = relevance * np.minimum(1.0, fluency / self.language_gate)
        return {"fluency": fluency, "relevance": relevance, "diversity": self.diversity(prompts, completions)}


class SentimentContinuationTask(TextTask):
    """Continue the prompt with the target sentiment, fluently, without repeating.

    relevance = VADER sentiment toward ``target`` (``(c + 1) / 2`` of the compound score
    ``c`` for "positive"). Default weights: fluency 0.3, relevance 0.5, diversity 0.2.

    Args:
        target: ``"positive"`` or ``"negative"``.
        (and the arguments of :class:`TextTask`)
    """

    name = "SentimentContinuation"
    description = "Continue the prompt with positive sentiment, fluently, without repeating."

    def __init__(self, target: str = "positive", **kwargs: Any) -> None:
        if target not in ("positive", "negative"):
            raise error.InvalidArgument(f"target must be 'positive' or 'negative', got {target!r}")
        self.target = target
        super().__init__(**kwargs)
        from lm_gym.rewards import Sentiment

        self.sentiment = Sentiment(target)

    def prepare_prompts(self, prompts: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        return [(text, {"sentiment": self.target}) for text, _ in prompts]

    def relevance(self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]) -> np.ndarray:
        return self.sentiment(prompts, completions, **meta)


def topic_classifier(classifier: str | os.PathLike[str] = "builtin", device: str | None = None) -> Any:
    """A :class:`lm_gym.rewards.RewardModel` over the corpus topics (``"builtin"`` or a local
    path to a sequence classifier whose labels include every one of them)."""
    from lm_gym.models.corpus import TOPICS
    from lm_gym.rewards import RewardModel

    scorer = RewardModel(classifier, label_key="topic", device=device)
    for topic in TOPICS:
        scorer.label_index(topic)  # UnknownName listing the classifier's labels
    return scorer


def topic_distribution(classifier: Any, texts: Sequence[str]) -> np.ndarray:
    """The classifier's softmax over the K corpus topics for each text, shape (B, K), in
    the order of :data:`lm_gym.models.corpus.TOPICS`."""
    from lm_gym.models.corpus import TOPICS

    columns = [classifier.label_index(t) for t in TOPICS]
    logits = classifier.logits(list(texts))[:, columns]  # (B, K)
    q = np.exp(logits - logits.max(1, keepdims=True))
    return q / q.sum(1, keepdims=True)


def topic_evidence(classifier: Any, texts: Sequence[str], topics: Sequence[str]) -> np.ndarray:
    """How far above chance the classifier puts each text's named topic among the K corpus
    topics: ``max(0, (q - 1/K) / (1 - 1/K))`` with ``q`` the softmax of the topic logits,
    shape (B,). Text with no topic (a generic sentence, which the multi-label sigmoid still
    gives ~0.12 for every topic) scores 0, one clearly on the topic ~1."""
    from lm_gym.models.corpus import TOPICS

    q = topic_distribution(classifier, texts)  # (B, K)
    k = len(TOPICS)
    named = q[np.arange(len(texts)), [TOPICS.index(t) for t in topics]]  # (B,)
    return np.clip((named - 1.0 / k) / (1.0 - 1.0 / k), 0.0, 1.0)


TOPIC_SCORERS = ("classifier", "embedding")
"""How TopicSteering scores a completion's topic (see :class:`TopicSteeringTask`)."""


class TopicSteeringTask(TextTask):
    """Continue the prompt toward a named topic. The prompt is ``"<topic>: <story opening>
    <bridge>"``: the story is about another topic, and the bridge, a sentence start with
    one of the named topic's own nouns (``"Then the rocket"``), turns it toward the named
    topic in a form the LM can follow; a learner has to keep the text there rather than
    drift back to the story's topic.

    relevance (v1) = the built-in classifier's *evidence* for the named topic
    (:meth:`topic_evidence`: how far above chance it puts the topic among the corpus
    topics, 0 for text with no topic), times a *language gate*
    ``min(1, fluency / language_gate)``: a topic only counts in text that reads as
    language. Measured on 128 held-out prompts (24 tokens): v0's ungated embedding cosine
    gave random tokens 0.16 and the zero-shot model 0.08, and a bag of topic words 0.34;
    the classifier's raw probability gave random tokens 0.14, a bag of topic words 0.66 and
    the model's generic closing line ("Let us come back tomorrow," said ...) 0.12 for
    every topic, which a learner exploited. Gated evidence: random 0.001, a bag of topic
    words 0.05, the generic line 0.02, the zero-shot model 0.17 (with the bridge), a
    corpus span of the named topic 0.76 (those last three without the bridge). Default weights: fluency 0.3, relevance 0.5,
    diversity 0.2.

    Args:
        topic: one topic for every episode, or ``None`` to draw one of the corpus topics
            (other than the story's own) per episode.
        topic_scorer: ``"classifier"`` (v1) or ``"embedding"`` (v0: the sentence-embedding
            cosine of :class:`lm_gym.rewards.TopicRelevance`, lexical without ``[embed]``).
        classifier: the topic classifier of ``"classifier"``: ``"builtin"`` or a local path
            to a sequence classifier whose labels include every topic.
        embedding_model: ``"auto"``, ``"lexical"``, or a sentence-transformers name or path
            (``"embedding"`` only).
        language_gate: the fluency at and above which relevance counts in full (0.25 is
            perplexity 16 at the default ``fluency_scale``); ``None`` turns the gate off (v0).
        bridge: the sentence start appended to the prompt, with one of the named topic's own
            nouns (``"Then the rocket"``), so the topic is in a context the LM can follow;
            ``None``: no bridge (v0).
        (and the arguments of :class:`TextTask`)

    Version History:
        v1: the classifier's topic evidence, gated by fluency; the prompt ends with a bridge.
        v0: the embedding cosine, ungated, no bridge (random tokens scored above the
        zero-shot model); still registered, unchanged.
    """

    name = "TopicSteering"
    description = "Continue the prompt toward a named topic."

    def __init__(
        self,
        topic: str | None = None,
        topic_scorer: str = "classifier",
        classifier: str | os.PathLike[str] = "builtin",
        embedding_model: str = "auto",
        language_gate: float | None = 0.25,
        bridge: str | None = "Then the {noun}",
        **kwargs: Any,
    ) -> None:
        from lm_gym.models.corpus import TOPICS

        if topic is not None and not (isinstance(topic, str) and topic.strip()):
            raise error.InvalidArgument(f"topic must be a non-empty string or None, got {topic!r}")
        if topic_scorer not in TOPIC_SCORERS:
            raise error.unknown("topic_scorer", topic_scorer, TOPIC_SCORERS)
        if bridge is not None and not (isinstance(bridge, str) and "{noun}" in bridge):
            raise error.InvalidArgument(f"bridge must be a string with a '{{noun}}' field or None, got {bridge!r}")
        self.topic, self.topics = topic, TOPICS
        self.topic_scorer, self.bridge = topic_scorer, bridge
        super().__init__(language_gate=language_gate, **kwargs)
        self.topic_relevance = self._topic_relevance(classifier, embedding_model)

    def _topic_relevance(self, classifier: Any, embedding_model: str) -> Any:
        """The topic scorer, loaded now (a classifier must know every topic it may be asked)."""
        from lm_gym.rewards import TopicRelevance

        if self.topic_scorer == "embedding":
            scorer = TopicRelevance(embedding_model)
            self.backend = scorer.backend  # load (or warn about the fallback) now
            return scorer
        if self.topic is not None and self.topic not in self.topics:
            raise error.unknown("topic of the classifier scorer", self.topic, self.topics)
        self.backend = "classifier"
        return topic_classifier(classifier, self.device)

    def prepare_prompts(self, prompts: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        return [(text, {"topic": meta.get("topic")}) for text, meta in prompts]

    def sample(self, np_random: np.random.Generator) -> Prompt:
        text, meta = self.prompts[int(np_random.integers(len(self.prompts)))]
        return self._with_topic(text, meta, np_random)

    def dataset(self, seed: int = 0) -> list[Prompt]:
        rng = np.random.default_rng(seed)
        return [self._with_topic(text, meta, rng) for text, meta in self.prompts]

    def _with_topic(self, text: str, meta: Mapping[str, Any], np_random: np.random.Generator) -> Prompt:
        topic = self.topic
        if topic is None:  # a topic the story is not already about
            others = [t for t in self.topics if t != meta.get("topic")]
            topic = others[int(np_random.integers(len(others)))]
        if self.bridge is None:
            return Prompt(f"{topic}: {text}", {"topic": topic})
        from lm_gym.models.corpus import topic_nouns

        nouns = topic_nouns(topic) if topic in self.topics else [topic]
        noun = nouns[int(np_random.integers(len(nouns)))]
        return Prompt(f"{topic}: {text} {self.bridge.format(noun=noun)}", {"topic": topic})

    def relevance(self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]) -> np.ndarray:
        """The topic score alone, ungated (:meth:`components` applies the language gate)."""
        if self.topic_scorer == "embedding":
            return self.topic_relevance(prompts, completions, topic=meta["topic"])
        return self.topic_evidence(completions, meta["topic"])

    def topic_evidence(self, completions: Sequence[str], topics: Sequence[str]) -> np.ndarray:
        """:func:`topic_evidence` of the completions for their named topics, shape (B,)."""
        return topic_evidence(self.topic_relevance, completions, topics)


class KeywordStoryTask(TextTask):
    """Write a fluent story that uses every given concept (CommonGen-style).

    The prompt lists the concepts and then opens the story they come from:
    ``"Keywords: duck, carry, basket. There was once a tiny duck past the basket."``; the
    opening (the built-in prompt, one or two corpus sentences) sets the story's world and
    hero, so the concepts are words the LM can follow there. relevance = the fraction of
    the concepts the completion uses, counting inflections ("ducks" covers "duck"), times
    the language gate ``min(1, fluency / language_gate)`` (see :class:`TextTask`): a list
    of the keywords is not a story ("duck carry basket duck ..." scores ~0.05, "She wanted
    to carry the duck near the basket." 1.0).

    v2's model is ``"builtin-keywords"`` (:data:`lm_gym.models.BUILTIN_KEYWORDS`): the
    built-in LM's architecture, tokenizer and corpus, with half of its pretraining stories
    opened by their keyword list in this prompt format, as RLHF starts from a model tuned
    to follow instructions. v1 runs on ``"builtin"``, which never saw a list and hardly
    copies a word from one: its zero-shot coverage is 0.04 on the held-out prompts (0.07
    with the opening alone), so a learner rarely samples a keyword, and 300 s of GRPO
    converged on the corpus's closing line while coverage fell to 0.01. On
    ``"builtin-keywords"`` the zero-shot coverage is 0.46 and learners raise it (see the
    README's text-suite table). v0 judged the fluency of a bare list ("Keywords: duck,
    carry.") and did not gate coverage.
    Default weights: fluency 0.3, relevance 0.5, diversity 0.2. User prompts must carry a
    ``"keywords"`` list (a ``.jsonl`` file); their text becomes the story opening.

    Args:
        n_keywords: how many of a story's content words to ask for (built-in prompts).
        opening: end the prompt with the story opening (v1, v2); ``False``: the list alone (v0).
        language_gate: see :class:`TextTask`; 0.25 (v1, v2), ``None`` (v0).
        (and the arguments of :class:`TextTask`; ``model`` defaults to
        ``"builtin-keywords"`` and ``max_prompt_tokens`` to 48 here, room for the list and
        the opening)

    Version History:
        v2: the keyword-list LM ``"builtin-keywords"`` as the policy and fluency judge.
        v1: the prompt opens the story after the list; coverage gated by fluency; on
            ``"builtin"``. Still registered, unchanged.
        v0: the list alone, coverage ungated; still registered, unchanged.
    """

    name = "KeywordStory"
    description = "Write a fluent story that uses every given concept."

    def __init__(
        self, n_keywords: int = N_KEYWORDS, opening: bool = True, language_gate: float | None = 0.25, **kwargs: Any
    ) -> None:
        from lm_gym.rewards import KeywordCoverage

        self.n_keywords = check_int("n_keywords", n_keywords, low=1, high=8)
        if not isinstance(opening, bool):
            raise error.InvalidArgument(f"opening must be True or False, got {opening!r}")
        self.opening = opening
        kwargs.setdefault("max_prompt_tokens", 48)
        kwargs.setdefault("model", BUILTIN_KEYWORDS)
        super().__init__(language_gate=language_gate, **kwargs)
        self.coverage = KeywordCoverage()

    def prepare_prompts(self, prompts: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for text, meta in prompts:
            if "keywords" not in meta:
                raise error.InvalidArgument(
                    f"KeywordStory needs a 'keywords' list with every prompt; {text[:40]!r} has none. "
                    "Pass a .jsonl file of {\"prompt\": ..., \"keywords\": [...]} objects."
                )
            words = list(meta["keywords"])[: self.n_keywords]
            head = keyword_header(words)
            out.append((f"{head} {text.strip()}" if self.opening and text.strip() else head, {"keywords": words}))
        return out

    def relevance(self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]) -> np.ndarray:
        return self.coverage(prompts, completions, keywords=meta["keywords"])


SUBJECT_SCORERS = ("classifier", "overlap")
"""How Continuation scores staying on the prompt's subject (see :class:`ContinuationTask`)."""


class ContinuationTask(TextTask):
    """The plain composite: continue the prompt fluently, on its subject, without repeating.

    relevance (v1) = the built-in classifier's evidence that the completion is on the
    prompt's topic (:func:`topic_evidence` for the topic the classifier gives the prompt
    itself, so any prompt works), times the language gate ``min(1, fluency /
    language_gate)`` (see :class:`TextTask`). v0's relevance was the content-word overlap
    of :class:`lm_gym.rewards.Continuity`, on which the zero-shot model scored 0.07 (a story
    goes on in new words) and a learner gained fluency instead. Measured on 128 held-out
    episodes (24 tokens): random tokens relevance 0.001 (fluency 0.002), the zero-shot model
    0.693 (fluency 0.492), which loses it mostly to generic lines ("Let us come back
    tomorrow," said ...) and drift to another topic; the classifier names the prompt's
    corpus topic for 97 % of the held-out prompts.
    Default weights: fluency 0.4, relevance 0.4, diversity 0.2.

    Args:
        subject_scorer: ``"classifier"`` (v1) or ``"overlap"`` (v0, content-word overlap).
        classifier: the topic classifier of ``"classifier"``: ``"builtin"`` or a local
            path to a sequence classifier whose labels include every corpus topic.
        language_gate: see :class:`TextTask`; 0.25 (v1), ``None`` (v0).
        (and the arguments of :class:`TextTask`)

    Version History:
        v1: the classifier's evidence for the prompt's own topic, gated by fluency.
        v0: content-word overlap with the prompt, ungated; still registered, unchanged.
    """

    name = "Continuation"
    description = "The plain composite: fluent, on the prompt's subject, diverse."
    default_weights = {"fluency": 0.4, "relevance": 0.4, "diversity": 0.2}

    def __init__(
        self,
        subject_scorer: str = "classifier",
        classifier: str | os.PathLike[str] = "builtin",
        language_gate: float | None = 0.25,
        **kwargs: Any,
    ) -> None:
        from lm_gym.rewards import Continuity

        if subject_scorer not in SUBJECT_SCORERS:
            raise error.unknown("subject_scorer", subject_scorer, SUBJECT_SCORERS)
        self.subject_scorer = subject_scorer
        super().__init__(language_gate=language_gate, **kwargs)
        self.continuity = Continuity()
        self.classifier = topic_classifier(classifier, self.device) if subject_scorer == "classifier" else None
        self._prompt_topics: dict[str, str] = {}

    def prepare_prompts(self, prompts: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        return [(text, {}) for text, _ in prompts]

    def prompt_topics(self, prompts: Sequence[str]) -> list[str]:
        """The topic the classifier gives each prompt (its most probable corpus topic), cached."""
        from lm_gym.models.corpus import TOPICS

        new = list(dict.fromkeys(p for p in prompts if p not in self._prompt_topics))
        if new:
            best = topic_distribution(self.classifier, new).argmax(1)  # (N,)
            self._prompt_topics.update({p: TOPICS[int(i)] for p, i in zip(new, best)})
        return [self._prompt_topics[p] for p in prompts]

    def relevance(self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]) -> np.ndarray:
        """The subject score alone, ungated (:meth:`TextTask.components` applies the gate)."""
        if self.subject_scorer == "overlap":
            return self.continuity(prompts, completions)
        return topic_evidence(self.classifier, completions, self.prompt_topics(prompts))


TEXT_TASKS: dict[str, type[TextTask]] = {
    "SentimentContinuation": SentimentContinuationTask,
    "TopicSteering": TopicSteeringTask,
    "KeywordStory": KeywordStoryTask,
    "Continuation": ContinuationTask,
}
