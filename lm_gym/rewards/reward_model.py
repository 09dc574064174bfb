"""A learned reward: any Hugging Face sequence classifier, scoring one label of each text."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lm_gym.error import InvalidArgument, unknown
from lm_gym.rewards._text import check_batch, per_sample

__all__ = ["RewardModel"]

_OUTPUTS = ("prob", "logit")


class RewardModel:
    """A reward from a sequence classifier (``AutoModelForSequenceClassification``): the
    probability (or the logit) of one label for each completion, batched.

    ``"prob"`` is the softmax over the labels, or the label's sigmoid for a multi-label
    model (``config.problem_type == "multi_label_classification"``, as the built-in
    classifier is). Use it as the whole reward, ``gym.make(id, reward=RewardModel(...))``,
    or as a text task's relevance component, ``gym.make(id, relevance=RewardModel(...))``.

    Args:
        model: ``"builtin"`` (the shipped classifier of the corpus's sentiment and topic
            labels, see :mod:`lm_gym.models.classifier`), a local directory written by
            ``save_pretrained``, or a Hugging Face name (loaded on first call; offline, a
            name that is not cached raises :class:`~lm_gym.error.ModelLoadError`).
        label: the label to score, by name (``config.id2label``) or index; default 0
            (``"positive"`` for the built-in classifier).
        label_key: take each sample's label from this metadata key instead (e.g.
            ``"topic"`` for TopicSteering, ``"sentiment"`` for SentimentContinuation).
        output: ``"prob"`` (in [0, 1]) or ``"logit"``.
        with_prompt: score ``prompt + completion`` rather than the completion alone.
        batch_size: texts per forward pass.
        max_length: texts are cut to this many tokens (default: the model's positions).
        device: where the model runs (default CPU).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "builtin",
        label: str | int = 0,
        *,
        label_key: str | None = None,
        output: str = "prob",
        with_prompt: bool = False,
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | None = None,
    ) -> None:
        if output not in _OUTPUTS:
            raise InvalidArgument(f"output must be one of {list(_OUTPUTS)}, got {output!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgument(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        self.name = os.fspath(model)
        self.label, self.label_key, self.output = label, label_key, output
        self.with_prompt, self.batch_size, self.device = with_prompt, batch_size, device
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from lm_gym.models import load_classifier

            self._model, self._tokenizer = load_classifier(self.name, device=self.device)
            self.label_index(self.label)  # fail now on a bad label, naming the valid ones
        return self._model, self._tokenizer

    @property
    def labels(self) -> list[str]:
        """The model's label names, in logit order (loads the model)."""
        config = self._load()[0].config
        return [str(config.id2label[i]) for i in range(config.num_labels)]

    def label_index(self, label: str | int) -> int:
        """The logit index of a label name or index, else an error listing the labels."""
        labels = self.labels
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if 0 <= label < len(labels):
                return int(label)
            raise InvalidArgument(
                f"label index {label} is out of range; {self.name!r} has {len(labels)} labels {labels}."
            )
        if label not in labels:
            raise unknown(f"label of {self.name!r}", label, labels)
        return labels.index(label)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """The classifier's logits, shape (B, n_labels) float64, one forward per ``batch_size``
        (an empty text is read as the EOS token alone)."""
        import torch

        model, tokenizer = self._load()
        # an empty text has no token to classify from: the classifier reads EOS alone instead
        texts = [t or tokenizer.eos_token or "" for t in texts]
        max_length = self.max_length or getattr(model.config, "max_position_embeddings", None)
        out = []
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                enc = tokenizer(list(texts[lo : lo + self.batch_size]), return_tensors="pt",
                                padding=True, truncation=max_length is not None, max_length=max_length)
                enc = enc.to(model.device)
                out.append(model(**enc).logits.double().cpu())  # (b, n_labels)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.labels)))

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **meta: Any) -> np.ndarray:
        """Each completion's score of its label, shape (B,) float64."""
        n = check_batch(prompts, completions)
        if self.label_key is None:
            index = np.full(n, self.label_index(self.label))
        else:
            labels = per_sample(meta, self.label_key, n)
            if labels is None:
                raise InvalidArgument(
                    f"RewardModel(label_key={self.label_key!r}) needs meta[{self.label_key!r}]; "
                    f"got meta keys {sorted(meta)}."
                )
            index = np.array([self.label_index(lab) for lab in labels], dtype=np.int64)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        texts = [p + c for p, c in zip(prompts, completions)] if self.with_prompt else list(completions)
        logits = self.logits(texts)  # (B, n_labels)
        if self.output == "prob":
            if getattr(self._model.config, "problem_type", None) == "multi_label_classification":
                logits = 1.0 / (1.0 + np.exp(-logits))
            else:  # softmax over the labels
                logits = np.exp(logits - logits.max(1, keepdims=True))
                logits /= logits.sum(1, keepdims=True)
        return np.ascontiguousarray(logits[np.arange(n), index], dtype=np.float64)

    def __repr__(self) -> str:
        which = f"label_key={self.label_key!r}" if self.label_key else f"label={self.label!r}"
        return f"RewardModel({self.name!r}, {which}, output={self.output!r})"
