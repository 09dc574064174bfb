"""The built-in text classifier: a small GPT-2 sequence classifier of the corpus's labels.

``pretrain_classifier(out_dir)`` trains ``GPT2ForSequenceClassification`` on spans of the
procedural corpus's train stories (:mod:`lm_gym.models.corpus`) to predict each story's
sentiment and topic, with the built-in LM's tokenizer, and saves it with
``save_pretrained`` next to ``metrics.json`` (held-out accuracies on the valid split).
The checkpoint shipped in ``lm_gym/models/builtin_classifier/`` was made by
``pretrain_classifier(path)``; :class:`lm_gym.rewards.RewardModel` loads it as
``"builtin"``.

Labels: ``"positive"``, ``"negative"`` and one per topic of :data:`~lm_gym.models.corpus.TOPICS`,
as a multi-label problem (``problem_type="multi_label_classification"``): each label's
probability is the sigmoid of its logit, so a text can be scored for sentiment and topic
by the same model. Training spans are 1-3 consecutive sentences of a story other than its
opening (what a completion looks like), or the whole story.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lm_gym.models.corpus import SENTIMENTS, TOPICS, Story, _sentences, corpus
from lm_gym.models.pretrain import TrainConfig, configure, fit, save_run

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = (*SENTIMENTS, *TOPICS)
"""The built-in classifier's labels, in logit order."""


@dataclass
class ClassifierConfig(TrainConfig):
    """Sizes and optimiser settings for :func:`pretrain_classifier` (the fields of
    :class:`~lm_gym.models.pretrain.TrainConfig`, smaller defaults: a ~0.24 M-parameter model)."""

    n_eval_stories: int = 400
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 2
    n_positions: int = 64
    batch_size: int = 32
    steps: int = 2_000
    lr: float = 3e-3
    warmup_steps: int = 30

    @classmethod
    def quick(cls) -> ClassifierConfig:
        """A tiny configuration for tests: seconds on one core."""
        return cls(n_train_stories=300, n_eval_stories=40, n_layer=1, n_embd=16, n_head=2,
                   n_positions=48, batch_size=16, steps=20, warmup_steps=5)


def story_span(story: Story, rng: np.random.Generator) -> str:
    """1-3 consecutive sentences after the opening (a completion's shape), or the whole story."""
    sents = _sentences(story.text)
    if len(sents) < 2 or rng.random() < 0.2:
        return story.text
    start = int(rng.integers(1, len(sents)))
    return " ".join(sents[start : start + int(rng.integers(1, 4))])


def label_targets(stories: list[Story]) -> np.ndarray:
    """Multi-hot targets, shape (N, len(LABELS)): the story's sentiment and topic."""
    targets = np.zeros((len(stories), len(LABELS)), dtype=np.float32)
    for i, s in enumerate(stories):
        targets[i, LABELS.index(s.sentiment)] = targets[i, LABELS.index(s.topic)] = 1.0
    return targets


def accuracies(model: Any, tokenizer: Any, stories: list[Story], batch_size: int = 64) -> dict[str, float]:
    """Held-out accuracy of the argmax over the sentiment labels and over the topic labels,
    on each story's spans (one per story, seeded)."""
    import torch

    rng = np.random.default_rng(0)
    texts = [story_span(s, rng) for s in stories]
    n_sent = len(SENTIMENTS)
    logits = []
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(texts), batch_size):
            enc = tokenizer(texts[lo : lo + batch_size], return_tensors="pt", padding=True,
                            truncation=True, max_length=model.config.n_positions)
            logits.append(model(**enc).logits)  # (B, n_labels)
    pred = torch.cat(logits).numpy()  # (N, n_labels)
    target = label_targets(stories)
    return {
        "sentiment_accuracy": float((pred[:, :n_sent].argmax(1) == target[:, :n_sent].argmax(1)).mean()),
        "topic_accuracy": float((pred[:, n_sent:].argmax(1) == target[:, n_sent:].argmax(1)).mean()),
    }


def build_classifier(tokenizer: Any, cfg: ClassifierConfig, seed: int) -> Any:
    """A freshly initialised ``GPT2ForSequenceClassification`` over :data:`LABELS`."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)},
        problem_type="multi_label_classification",
    )
    return GPT2ForSequenceClassification(config)


def pretrain_classifier(
    out_dir: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
    num_threads: int | None = None,
    config: ClassifierConfig | None = None,
) -> dict[str, Any]:
    """Train the built-in classifier and save it (model, tokenizer, ``metrics.json``) to
    ``out_dir``. Arguments as for :func:`lm_gym.models.pretrain.pretrain`; the tokenizer
    is the built-in LM's, with right padding.

    Returns:
        The metrics written to ``metrics.json``: ``sentiment_accuracy``,
        ``topic_accuracy`` (valid split), ``final_train_loss``, ``n_params``, ``steps``,
        ``seconds``, ``seed``, ``labels`` and the ``config``.
    """
    import torch

    from lm_gym.models import load_tokenizer

    cfg = configure(ClassifierConfig, config, quick=quick, steps=steps, num_threads=num_threads)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer("builtin")
    tokenizer.padding_side = "right"  # GPT-2 positions start at 0 on the left
    tokenizer.model_max_length = cfg.n_positions
    model = build_classifier(tokenizer, cfg, seed)
    stories = corpus("train", cfg.n_train_stories)
    targets = torch.from_numpy(label_targets(stories))  # (N, n_labels)
    rng = np.random.default_rng(seed)

    def batches() -> Iterator[dict[str, Any]]:
        while True:
            idx = rng.integers(len(stories), size=cfg.batch_size)
            enc = tokenizer([story_span(stories[i], rng) for i in idx], return_tensors="pt",
                            padding=True, truncation=True, max_length=cfg.n_positions)
            yield {**enc, "labels": targets[idx]}  # BCE over the labels

    loss_ema = fit(model, cfg, batches(), desc="pretrain-classifier", progress=progress)
    metrics = save_run(out_dir, model, tokenizer, cfg, seed=seed, t0=t0,
                       **accuracies(model, tokenizer, corpus("valid", cfg.n_eval_stories)),
                       final_train_loss=loss_ema, labels=list(LABELS))
    logger.info("classifier done: sentiment acc %.3f, topic acc %.3f",
                metrics["sentiment_accuracy"], metrics["topic_accuracy"])
    return metrics
