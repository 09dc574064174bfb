"""Pretraining of the built-in language model on the procedural story corpus.

``pretrain(out_dir)`` builds the corpus (:mod:`lm_gym.models.corpus`), trains a byte-level
BPE tokenizer on the train split (as GPT-2's), pretrains a small GPT-2 with the causal-LM
loss, measures held-out perplexity, and saves model, tokenizer and ``metrics.json`` with
``save_pretrained`` so that ``lm_gym.models.load_model_and_tokenizer(out_dir)`` loads it.
The checkpoint shipped in ``lm_gym/models/builtin/`` was made by ``pretrain(path)``, the one
in ``lm_gym/models/builtin_keywords/`` by ``pretrain(path, config=PretrainConfig(keyword_lists=0.5))``.

Training examples pack whole stories, each followed by EOS, into blocks that always start
at a story's first token, so position 0 is a story start as in an env's prompt.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lm_gym.error import InvalidArgument
from lm_gym.models.corpus import N_KEYWORDS, Story, corpus, keyword_header

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


@dataclass
class TrainConfig:
    """Sizes and optimiser settings shared by :func:`pretrain` and
    :func:`lm_gym.models.classifier.pretrain_classifier` (its defaults are the LM's)."""

    n_train_stories: int = 20_000
    """Stories of the corpus's train split to train on."""
    n_eval_stories: int = 500
    """Stories of each held-out split used for evaluation."""
    n_layer: int = 4
    """Transformer blocks."""
    n_embd: int = 192
    """Hidden width."""
    n_head: int = 4
    """Attention heads."""
    n_positions: int = 128
    """Context length (the LM's training block length)."""
    batch_size: int = 16
    """Examples per optimiser step."""
    steps: int = 1_000
    """Optimiser steps."""
    lr: float = 2e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Linear warmup steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""

    def __post_init__(self) -> None:
        for name in ("n_train_stories", "n_eval_stories", "n_layer", "n_embd",
                     "n_head", "n_positions", "batch_size", "steps"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)!r}.")
        if self.n_embd % self.n_head:
            raise InvalidArgument(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})."
            )


@dataclass
class PretrainConfig(TrainConfig):
    """Sizes and optimiser settings for :func:`pretrain`."""

    vocab_size: int = 2048
    """BPE vocabulary size, special tokens included."""
    keyword_lists: float = 0.0
    """Fraction of the training stories that start with their keyword list, in KeywordStory's
    prompt format (``"Keywords: duck, carry, basket. <story>"``, :func:`training_texts`),
    so that the LM learns to use listed words. 0: the shipped ``"builtin"`` model; 0.5: the
    shipped ``"builtin-keywords"`` (KeywordStory-v2's model)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.keyword_lists, bool) or not (
            isinstance(self.keyword_lists, (int, float)) and 0.0 <= self.keyword_lists <= 1.0
        ):
            raise InvalidArgument(f"keyword_lists must be a fraction in [0, 1], got {self.keyword_lists!r}.")
        if self.vocab_size < 300:
            raise InvalidArgument(
                f"vocab_size must be at least 300 (256 bytes + merges + specials), got {self.vocab_size}."
            )

    @classmethod
    def quick(cls) -> PretrainConfig:
        """A tiny configuration for tests: seconds on one core."""
        return cls(n_train_stories=400, n_eval_stories=40, vocab_size=400, n_layer=2,
                   n_embd=32, n_head=2, n_positions=64, batch_size=8, steps=30,
                   warmup_steps=5)


def configure(
    cls: Any, config: TrainConfig | None, *, quick: bool, steps: int | None, num_threads: int | None
) -> Any:
    """The run's config: ``config``, else ``cls.quick()`` or ``cls()``, with ``steps``
    overridden; sets torch's thread count when ``num_threads`` is given."""
    import torch

    cfg = config or (cls.quick() if quick else cls())
    if steps is not None:
        if steps <= 0:
            raise InvalidArgument(f"steps must be positive, got {steps!r}.")
        cfg = dataclasses.replace(cfg, steps=int(steps), warmup_steps=min(cfg.warmup_steps, int(steps)))
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    return cfg


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (as GPT-2's) trained on ``texts``, wrapped as a
    ``transformers.PreTrainedTokenizerFast`` with EOS ``<|endoftext|>`` (also BOS), a
    distinct pad token ``<|pad|>`` and left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        model_max_length=None,
        clean_up_tokenization_spaces=False,
    )


def training_texts(stories: list[Story], keyword_lists: float = 0.0, seed: int = 0) -> list[str]:
    """The stories' texts; a ``keyword_lists`` fraction of them (drawn with ``seed``) start
    with the story's keyword list (:func:`lm_gym.models.corpus.keyword_header` of its first
    :data:`~lm_gym.models.corpus.N_KEYWORDS` keywords, each of which the story uses)."""
    if keyword_lists <= 0:
        return [s.text for s in stories]
    listed = np.random.default_rng(seed).random(len(stories)) < keyword_lists  # (N,)
    return [f"{keyword_header(s.keywords[:N_KEYWORDS])} {s.text}" if on else s.text
            for s, on in zip(stories, listed)]


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text followed by EOS."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [x + [tokenizer.eos_token_id] for x in ids]


def _pack(seqs: list[list[int]], block: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of ``block`` tokens that each start at a story start and hold whole stories
    while they fit; the story that overflows is cut, and the next block starts with it.

    Returns ``(input_ids, mask)``, both ``(N, block)``; ``mask`` is 0 on padding.
    """
    rows, masks, i = [], [], 0
    while i < len(seqs):
        row: list[int] = []
        j = i
        while j < len(seqs) and len(row) + len(seqs[j]) <= block:
            row += seqs[j]
            j += 1
        if j == i:  # a single story longer than the block: cut it
            row, j = seqs[i][:block], i + 1
        elif j < len(seqs):  # fill the rest with the start of the next story
            row += seqs[j][: block - len(row)]
        masks.append([1] * len(row) + [0] * (block - len(row)))
        rows.append(row + [pad_id] * (block - len(row)))
        i = j
    return np.asarray(rows, dtype=np.int64), np.asarray(masks, dtype=np.int64)


def perplexity(model: Any, tokenizer: Any, stories: list[Story], batch_size: int = 32) -> float:
    """Token-level perplexity ``exp(mean NLL)`` of ``model`` on ``stories``, each scored on
    its own (every token after the first, and the closing EOS)."""
    import torch

    from lm_gym.rewards.fluency import completion_logprob_sums

    n_pos = model.config.n_positions
    seqs = [(s[:1], s[1:n_pos]) for s in _encode(tokenizer, [story.text for story in stories])]
    nll, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(seqs), batch_size):
            sums, counts = completion_logprob_sums(
                model, seqs[b : b + batch_size], tokenizer.pad_token_id, torch.device("cpu")
            )
            nll -= float(sums.sum())
            count += int(counts.sum())
    return math.exp(nll / max(count, 1))


def optimizer_and_schedule(model: Any, cfg: Any) -> tuple[Any, Any]:
    """AdamW (weight decay on matrices only) and a linear-warmup, cosine-decay schedule
    from ``cfg``'s ``lr``, ``weight_decay``, ``warmup_steps``, ``steps``, ``min_lr_ratio``."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
    )

    def lr_lambda(step: int) -> float:  # linear warmup, cosine decay to min_lr_ratio
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def fit(model: Any, cfg: TrainConfig, batches: Iterator[dict[str, Any]], *, desc: str, progress: bool) -> float:
    """``cfg.steps`` AdamW steps (:func:`optimizer_and_schedule`, gradients clipped at
    norm 1) on ``model(**batch).loss``; returns the loss's moving average at the end."""
    import torch
    from tqdm.auto import tqdm

    optimizer, scheduler = optimizer_and_schedule(model, cfg)
    loss_ema = math.nan
    model.train()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress)
    for step in bar:
        loss = model(**next(batches)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss_ema = loss.item() if step == 0 else 0.95 * loss_ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.3f}", refresh=False)
    bar.close()
    model.eval()
    return loss_ema


def save_run(out_dir: str | Path, model: Any, tokenizer: Any, cfg: TrainConfig, *, seed: int,
             t0: float, **metrics: Any) -> dict[str, Any]:
    """Save model and tokenizer with ``save_pretrained`` and ``metrics.json``: ``metrics``
    plus ``n_params``, ``steps``, ``seconds`` (since ``t0``), ``seed`` and the ``config``."""
    metrics.update(
        n_params=sum(p.numel() for p in model.parameters()), steps=cfg.steps,
        seconds=round(time.perf_counter() - t0, 1), seed=seed, config=dataclasses.asdict(cfg),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def pretrain(
    out_dir: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
    num_threads: int | None = None,
    config: PretrainConfig | None = None,
) -> dict[str, Any]:
    """Pretrain the built-in LM and save it to ``out_dir``.

    Args:
        out_dir: where ``config.json``, ``model.safetensors``, the tokenizer files and
            ``metrics.json`` are written (created if missing).
        quick: a tiny model and corpus for tests (:meth:`PretrainConfig.quick`).
        seed: seeds torch and the batch order; the same seed gives the same model.
        steps: overrides the number of optimiser steps.
        progress: show a tqdm progress bar.
        num_threads: if given, ``torch.set_num_threads(num_threads)`` for this process.
        config: full control over sizes; overrides ``quick``.

    Returns:
        The metrics written to ``metrics.json``: ``valid_ppl``, ``test_ppl``,
        ``final_train_loss``, ``n_params``, ``steps``, ``train_tokens``, ``seconds``,
        ``seed`` and the ``config``.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = configure(PretrainConfig, config, quick=quick, steps=steps, num_threads=num_threads)
    t0 = time.perf_counter()

    stories = corpus("train", cfg.n_train_stories)
    texts = training_texts(stories, cfg.keyword_lists, seed)
    # the tokenizer learns the plain stories, so a listed keyword is the same tokens as in
    # a story (merges learned on the lists would fuse "duck," and "Keywords:" instead)
    tokenizer = train_tokenizer([s.text for s in stories], cfg.vocab_size)
    tokenizer.model_max_length = cfg.n_positions
    inputs, masks = _pack(_encode(tokenizer, texts), cfg.n_positions, tokenizer.pad_token_id)
    logger.info("tokenizer: %d tokens; %d training blocks of %d", len(tokenizer),
                len(inputs), cfg.n_positions)

    torch.manual_seed(seed)
    model_config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(model_config)

    rng = np.random.default_rng(seed)

    def batches() -> Iterator[dict[str, Any]]:  # an epoch in random order, then another
        order, cursor = rng.permutation(len(inputs)), 0
        while True:
            if cursor + cfg.batch_size > len(order):
                order, cursor = rng.permutation(len(inputs)), 0
            idx = order[cursor : cursor + cfg.batch_size]
            cursor += cfg.batch_size
            ids = torch.from_numpy(inputs[idx])  # (B, T)
            mask = torch.from_numpy(masks[idx])  # (B, T)
            labels = ids.masked_fill(mask == 0, -100)  # (B, T); padding is not scored
            yield {"input_ids": ids, "attention_mask": mask, "labels": labels}

    loss_ema = fit(model, cfg, batches(), desc="pretrain", progress=progress)

    model.eval()
    valid_ppl = perplexity(model, tokenizer, corpus("valid", cfg.n_eval_stories))
    test_ppl = perplexity(model, tokenizer, corpus("test", cfg.n_eval_stories))
    logger.info("pretrain done: valid ppl %.2f, test ppl %.2f", valid_ppl, test_ppl)
    return save_run(out_dir, model, tokenizer, cfg, seed=seed, t0=t0, final_train_loss=loss_ema,
                    valid_ppl=valid_ppl, test_ppl=test_ppl,
                    train_tokens=int(cfg.steps * cfg.batch_size * cfg.n_positions))
