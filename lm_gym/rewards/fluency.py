"""Fluency: how likely a frozen reference causal LM finds the completion, given the prompt.

:func:`sequence_logprobs` is the reusable core (``lm_gym.metrics`` computes perplexity
with it); :class:`Fluency` maps its mean token log-probability to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lm_gym.error import InvalidArgument
from lm_gym.rewards._text import check_batch

if TYPE_CHECKING:
    import torch

__all__ = ["Fluency", "completion_logprob_sums", "sequence_logprobs", "load_reference", "DEFAULT_SCALE"]

DEFAULT_SCALE = 2.0
"""Default ``scale`` of :class:`Fluency`: perplexity 4 scores 0.5, 16 scores 0.25, 64 scores 0.125.

Chosen for the built-in model, whose perplexity on its own corpus is about 4 (loss ~1.4
nats/token), so fluent in-distribution text lands mid-range and shuffled words (loss
5-7 nats) near 0.05. For larger Hugging Face models on open text (perplexity 20-50)
a scale of 4-6 puts typical text mid-range."""


def _model_device(model: Any) -> torch.device:
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _max_positions(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def sequence_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean log-probability of each completion's tokens given its prompt.

    Prompt and completion are tokenised separately (no special tokens) and concatenated,
    as the env builds them; an empty prompt is replaced by the BOS (else EOS) token so the
    first completion token has a context. Sequences longer than the model's context are
    cut from the left of the prompt, then from the right of the completion. Each chunk of
    ``batch_size`` samples costs one teacher-forced pass (:func:`completion_logprob_sums`),
    with position ids ``cumsum(attention_mask) - 1`` so padding does not shift positions.

    Args:
        model: a Hugging Face causal LM (``model(input_ids, attention_mask=...,
            position_ids=...).logits``). Put in eval mode for the call; its training
            flag is restored afterwards.
        tokenizer: the model's tokenizer (any callable returning ``input_ids``).
        prompts, completions: B strings each.
        batch_size: samples per forward pass.
        device: where to run; default the model's device.

    Returns:
        ``(mean_logprob, n_tokens)``: float64 and int64 arrays of shape (B,), natural log.
        A completion with no tokens has ``mean_logprob = 0.0`` and ``n_tokens = 0``.
    """
    import torch

    batch = check_batch(prompts, completions)
    if batch_size < 1:
        raise InvalidArgument(f"batch_size must be >= 1, got {batch_size}.")
    mean_logprob = np.zeros(batch, dtype=np.float64)
    n_tokens = np.zeros(batch, dtype=np.int64)
    if batch == 0:
        return mean_logprob, n_tokens

    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    start_id = getattr(tokenizer, "bos_token_id", None)
    if start_id is None:
        start_id = getattr(tokenizer, "eos_token_id", None)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = 0 if pad_id is None else pad_id
    max_len = _max_positions(model)

    sequences: list[tuple[list[int], list[int]]] = []
    for p, c in zip(prompt_ids, completion_ids):
        p, c = list(p), list(c)
        if not p:  # give the first completion token a context
            p, c = ([start_id], c) if start_id is not None else (c[:1], c[1:])
        if max_len is not None and len(p) + len(c) > max_len:
            keep_prompt = max(1, max_len - len(c))
            p = p[-keep_prompt:]
            c = c[: max_len - len(p)]
        sequences.append((p, c))

    device = _model_device(model) if device is None else torch.device(device)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode():
            for lo in range(0, batch, batch_size):
                chunk = sequences[lo : lo + batch_size]
                sums, counts = completion_logprob_sums(model, chunk, pad_id, device)
                n_tokens[lo : lo + len(chunk)] = counts
                mean_logprob[lo : lo + len(chunk)] = np.where(
                    counts > 0, sums / np.maximum(counts, 1), 0.0
                )
    finally:
        model.train(was_training)
    return mean_logprob, n_tokens


def completion_logprob_sums(
    model: Any, chunk: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of completion-token log-probs and completion lengths for one batch of
    ``(prompt_ids, completion_ids)`` pairs: prompts left-padded, completions right-padded,
    one :func:`lm_gym.models.forward.completion_forward` pass (each distinct prompt run once,
    the LM head on the completion columns only). The one log-prob routine of lm_gym
    (fluency, perplexity metrics, pretraining's perplexity). A frozen model's final hidden
    states stay in its memo (:func:`lm_gym.models.forward.remember_states`), so a KL
    reference that is the same model over the same tokens need not run it again."""
    import torch

    from lm_gym.models.forward import completion_forward, remember_states

    counts = np.array([len(c) for _, c in chunk], dtype=np.int64)
    n_new = int(counts.max())
    if n_new == 0:
        return np.zeros(len(chunk)), counts
    p = max(len(prompt) for prompt, _ in chunk)
    # one padding column more than the longest completion: the pass then also yields the
    # state after each completion's last token, which scores an EOS after it (kept for the
    # KL reference by remember_states)
    input_ids = torch.full((len(chunk), p + n_new + 1), pad_id, dtype=torch.long)  # (B, P + C + 1)
    attention_mask = torch.zeros((len(chunk), p + n_new + 1), dtype=torch.long)  # (B, P + C + 1)
    for i, (prompt, completion) in enumerate(chunk):
        input_ids[i, p - len(prompt) : p + len(completion)] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[i, p - len(prompt) : p + len(completion)] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    logits, hidden = completion_forward(model, input_ids, attention_mask, n_new + 1)  # (B, C + 1, .)
    logits = logits.float()
    lse = logits.logsumexp(-1)  # (B, C + 1)
    remember_states(model, chunk, logits, hidden, lse)
    targets = input_ids[:, p : p + n_new]  # (B, C)
    token_logprobs = logits[:, :n_new].gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse[:, :n_new]  # (B, C)
    # where, not multiply: logits at padded positions may be non-finite
    sums = torch.where(attention_mask[:, p : p + n_new] != 0, token_logprobs, 0.0).sum(-1)  # (B,)
    return sums.double().cpu().numpy(), counts


def load_reference(name_or_path: str, device: str | None = None) -> tuple[Any, Any]:
    """A frozen ``(model, tokenizer)`` by name: ``lm_gym.models.load_frozen`` (one shared,
    read-only copy per process) where available, else ``load_model_and_tokenizer``."""
    from lm_gym import models

    load_frozen = getattr(models, "load_frozen", None)
    if load_frozen is not None:
        return load_frozen(name_or_path, device=device)
    model, tokenizer = models.load_model_and_tokenizer(name_or_path, device=device)
    model.eval()
    return model, tokenizer


class Fluency:
    """Fluency reward: ``exp(mean_logprob / scale)`` under a frozen reference LM.

    ``mean_logprob`` is the completion's mean natural-log token probability given the
    prompt (see :func:`sequence_logprobs`), so the score equals ``perplexity ** (-1 /
    scale)``: 1.0 when every token is certain, 0.5 at perplexity ``2 ** scale`` (4 with
    the default ``scale=2``, about the built-in model's in-distribution perplexity),
    0.25 at ``4 ** scale``. An empty completion scores 0.0.
    One forward pass per call (per ``batch_size`` chunk), without gradients.

    Args:
        model: ``"builtin"`` (the default, no download), a Hugging Face name or local
            path (loaded lazily on first call, see :func:`load_reference`),
            or a causal LM object (then ``tokenizer`` is required).
        tokenizer: the tokenizer of a model object.
        batch_size: samples per forward pass.
        scale: the temperature of the mapping, > 0; larger is more lenient.
        device: where to run; default the model's device.
    """

    def __init__(
        self,
        model: Any = "builtin",
        tokenizer: Any = None,
        *,
        batch_size: int = 64,
        scale: float = DEFAULT_SCALE,
        device: str | None = None,
    ) -> None:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise InvalidArgument(f"scale must be a finite number > 0, got {scale!r}.")
        if batch_size < 1:
            raise InvalidArgument(f"batch_size must be >= 1, got {batch_size}.")
        if not isinstance(model, str) and tokenizer is None:
            raise InvalidArgument(
                "Fluency got a model object but no tokenizer; pass tokenizer=..., or a "
                "model name/path such as 'builtin'."
            )
        self._model = model
        self._tokenizer = tokenizer
        self.batch_size = batch_size
        self.scale = float(scale)
        self.device = device

    def _load(self) -> tuple[Any, Any]:
        if isinstance(self._model, str):
            self._model, self._tokenizer = load_reference(self._model, self.device)
        return self._model, self._tokenizer

    @property
    def model(self) -> Any:
        """The reference LM (loaded on first access when given by name)."""
        return self._load()[0]

    @property
    def tokenizer(self) -> Any:
        """The reference LM's tokenizer."""
        return self._load()[1]

    def logprobs(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mean_logprob, n_tokens)`` of each completion, see :func:`sequence_logprobs`."""
        model, tokenizer = self._load()
        return sequence_logprobs(
            model, tokenizer, prompts, completions, batch_size=self.batch_size, device=self.device
        )

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **meta: Any
    ) -> np.ndarray:
        """Fluency scores in [0, 1], shape (B,) float64."""
        mean_logprob, n_tokens = self.logprobs(prompts, completions)
        scores = np.exp(mean_logprob / self.scale)
        return np.where(n_tokens > 0, np.clip(scores, 0.0, 1.0), 0.0).astype(np.float64)

    def __repr__(self) -> str:
        name = self._model if isinstance(self._model, str) else type(self._model).__name__
        return f"Fluency(model={name!r}, scale={self.scale})"
