"""The teacher-forced forward over prompt + completion batches, computed once per distinct prompt.

Every consumer of a finished rollout (the policy's update, the frozen reference's KL
log-probs, the fluency judge) needs the same thing: the LM's logits and last hidden state
at the columns that predict the completion tokens. Two savings apply to all of them:

- the LM head runs on those ``C`` columns only, not on the ``P`` prompt columns;
- rows whose prompt is the same (the ``k`` samples of one prompt in group-based RL, or any
  repeat) run the prompt through the model once: the distinct prompts are forwarded with
  a KV cache, the cache is gathered out to every row, and only the completions run per
  row. With gradients this is exact too: each gathered prompt state collects the gradient
  of every row that reads it.

The result equals one plain forward over the whole rows up to float rounding (tested
against it to 1e-5).

A third saving is between consumers: the fluency judge and the KL reference are, by
default, the same frozen model (the env's own) over the same tokens. The judge's pass
(:func:`lm_gym.rewards.fluency.completion_logprob_sums`) leaves each row's final hidden
states in a small per-model memo (:func:`remember_states`), and
:func:`memo_completion_forward` (the reference's pass after the rollout) serves the rows it
finds there through the LM head alone, running the model only on the rest. The memo is
keyed by the exact token ids and is dropped when any parameter of the model changes.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "completion_forward", "forward_arguments", "memo_completion_forward", "memo_completion_logprobs",
    "remember_states",
]


def forward_arguments(model: Any) -> tuple[str, bool]:
    """(the name of ``model.forward``'s cache argument, whether it accepts ``logits_to_keep``):
    transformers 5 names the cache ``cache``, older versions ``past_key_values``. Read once
    per model class."""
    return _forward_arguments(type(model))


@functools.cache
def _forward_arguments(cls: type) -> tuple[str, bool]:
    params = inspect.signature(cls.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def completion_forward(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_width: int,
    *,
    share_prompts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and final hidden states at the columns that predict the completion.

    Args:
        model: a Hugging Face causal LM.
        input_ids: (B, P + C) the prompts, left-padded to ``P`` columns, then the
            completions, right-padded to ``C = completion_width`` columns.
        attention_mask: (B, P + C) 1 on real tokens. Position ids are ``cumsum(mask) - 1``,
            so padding shifts no position.
        completion_width: ``C`` >= 1.
        share_prompts: run each distinct prompt once (module docstring); False always runs
            one plain forward.

    Returns:
        ``(logits (B, C, V), hidden (B, C, H))``: column ``j`` is the state whose context
        ends at token ``P - 1 + j``, so its logits score completion token ``j``.
    """
    import torch

    from lm_gym.error import InvalidArgument
    from lm_gym.models import position_ids_from_mask

    b, width = input_ids.shape
    c = completion_width
    p = width - c
    if not 1 <= c < width:
        raise InvalidArgument(f"completion_width must be in [1, {width - 1}] for {width} columns, got {c!r}.")
    attention_mask = attention_mask.long()
    positions = position_ids_from_mask(attention_mask)
    cache_kwarg, keep = forward_arguments(model)
    if share_prompts and b > 1:
        prompts = torch.cat([input_ids[:, :p], attention_mask[:, :p]], 1)
        distinct, rows = torch.unique(prompts, dim=0, return_inverse=True)
        if len(distinct) < b and p >= 2:  # one prompt column: nothing runs before the tail
            return _shared_prompt_forward(model, input_ids, attention_mask, positions, distinct, rows, c, cache_kwarg, keep)
    kwargs: dict[str, Any] = {"logits_to_keep": c + 1} if keep else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                use_cache=False, output_hidden_states=True, **kwargs)
    return out.logits[:, -(c + 1) : -1], out.hidden_states[-1][:, p - 1 : p - 1 + c]


def _shared_prompt_forward(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    distinct: torch.Tensor,
    rows: torch.Tensor,
    c: int,
    cache_kwarg: str,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct prompts (U, P) but their last column with a cache, the cache gathered to
    the B rows by ``rows`` (B,), then each row's last prompt token and first ``C - 1``
    completion tokens on it: every column that scores a completion token comes out of that
    one (B, C) pass. The prompt pass needs no logits (``logits_to_keep=1`` where the model
    takes it: one column, unused), so no LM head runs on the prompts, forward or backward."""
    import torch

    p = input_ids.shape[1] - c
    first = rows.new_zeros(len(distinct))
    first[rows] = torch.arange(len(rows), device=rows.device)  # one row holding each prompt
    prompt_pass = model(input_ids=distinct[:, : p - 1], attention_mask=distinct[:, p : 2 * p - 1],
                        position_ids=positions[first, : p - 1], use_cache=True,
                        **({"logits_to_keep": 1} if keep else {}))
    cache = prompt_pass.get(cache_kwarg) if cache_kwarg in prompt_pass else prompt_pass.get("past_key_values")
    cache.batch_select_indices(rows)  # (U, ...) -> (B, ...): differentiable gathers
    tail = model(input_ids=input_ids[:, p - 1 : p - 1 + c], attention_mask=attention_mask[:, : p - 1 + c],
                 position_ids=positions[:, p - 1 : p - 1 + c], use_cache=True, output_hidden_states=True,
                 **{cache_kwarg: cache})
    return tail.logits, tail.hidden_states[-1]


# -- the judge -> reference memo ----------------------------------------------------------

MEMO_BYTES = 64 << 20
"""The most bytes of states one model's memo keeps (least recently used go first)."""

_Key = tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class _Remembered:
    """One row of a frozen model's pass: for a completion of ``L`` tokens, column ``j < L``
    scores completion token ``j`` and column ``L`` whatever follows it (e.g. EOS)."""

    states: torch.Tensor
    """(L + 1, H) final hidden states."""
    lse: torch.Tensor
    """(L + 1,) float32 ``logsumexp`` of the logits at each column (the log-softmax normaliser)."""

    @property
    def nbytes(self) -> int:
        return sum(t.nelement() * t.element_size() for t in (self.states, self.lse))


class _StateMemo:
    """``(prompt ids, completion ids) -> _Remembered`` for one model."""

    def __init__(self) -> None:
        self.entries: OrderedDict[_Key, _Remembered] = OrderedDict()
        self.bytes = 0
        self.version: tuple[int, ...] | None = None
        self.head_ok: bool | None = None  # logits == output embeddings(hidden), checked once

    def sync(self, version: tuple[int, ...]) -> None:
        """Forget everything when the model's parameters changed since the last entry."""
        if version != self.version:
            self.entries.clear()
            self.bytes, self.version = 0, version

    def put(self, key: _Key, row: _Remembered) -> None:
        old = self.entries.pop(key, None)
        self.bytes += row.nbytes - (0 if old is None else old.nbytes)
        self.entries[key] = row
        while self.bytes > MEMO_BYTES and self.entries:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.nbytes

    def lookup(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: int) -> list[_Remembered | None]:
        """Per row of a (B, P + C) batch, its remembered pass cut to the row's completion
        length: the entry of its (unpadded) prompt and completion, or of its completion
        without the last token (the EOS the judge never saw as text); None if neither."""
        found: list[_Remembered | None] = []
        for row, row_mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = tuple(t for t, m in zip(row[:p], row_mask[:p]) if m)
            completion = tuple(t for t, m in zip(row[p:], row_mask[p:]) if m)
            hit = self.entries.get((prompt, completion))
            if hit is None and completion:
                hit = self.entries.get((prompt, completion[:-1]))
            n = len(completion)
            found.append(None if hit is None else _Remembered(hit.states[:n], hit.lse[:n]))
        return found


_MEMOS: weakref.WeakKeyDictionary[Any, _StateMemo] = weakref.WeakKeyDictionary()


def _version(model: Any) -> tuple[int, ...]:
    """Every parameter's in-place version counter: an optimizer step or a weight load bumps it."""
    return tuple(p._version for p in model.parameters())


def remember_states(
    model: Any,
    pairs: list[tuple[list[int], list[int]]],
    logits: torch.Tensor,
    hidden: torch.Tensor,
    lse: torch.Tensor | None = None,
) -> None:
    """Keep the final hidden states of a frozen model's pass for :func:`memo_completion_forward`
    and :func:`memo_completion_logprobs`.

    Args:
        model: the model that produced them; nothing is kept for one that trains.
        pairs: B ``(prompt ids, completion ids)`` exactly as they were fed.
        logits: (B, W, V) the pass's logits, to check once that the output embeddings map the
            states to them (a model with a final soft-cap or scale is never memoised).
        hidden: (B, W, H), ``W`` > every completion's length, column ``j`` as in
            :func:`completion_forward`.
        lse: (B, W) ``logits.float().logsumexp(-1)`` if the caller has it (computed otherwise).
    """
    if any(p.requires_grad for p in model.parameters()):
        return
    memo = _MEMOS.get(model)
    if memo is None:
        memo = _MEMOS[model] = _StateMemo()
    if memo.head_ok is None:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        memo.head_ok = head is not None and bool(
            (head(hidden[:1, :1]).float() - logits[:1, :1].float()).abs().max() <= 1e-4 * (1 + logits[:1, :1].abs().max())
        )
    if not memo.head_ok:
        return
    memo.sync(_version(model))
    if lse is None:
        lse = logits.float().logsumexp(-1)  # (B, W)
    for i, (prompt, completion) in enumerate(pairs):
        if len(completion) < hidden.shape[1]:
            n = len(completion) + 1
            memo.put((tuple(prompt), tuple(completion)), _Remembered(hidden[i, :n].clone(), lse[i, :n].float().clone()))


def _memo_of(model: Any) -> _StateMemo | None:
    """The model's memo, synced to its parameters, when a no-gradient pass may read it."""
    import torch

    memo = _MEMOS.get(model)
    if memo is None or not memo.entries or torch.is_grad_enabled():
        return None
    memo.sync(_version(model))
    return memo


def memo_completion_forward(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`completion_forward` without gradients, serving rows from the model's memo.

    A row is served when its (unpadded) prompt and completion, or its completion without its
    last token (the EOS the judge never saw as text), were remembered by
    :func:`remember_states` since the model's parameters last changed: its logits are the
    output embeddings of the remembered states. The other rows run one
    :func:`completion_forward` among themselves. Same arguments and returns.
    """
    import torch

    c = completion_width
    memo = _memo_of(model)
    found = [] if memo is None else memo.lookup(input_ids, attention_mask, input_ids.shape[1] - c)
    hits = [i for i, r in enumerate(found) if r is not None]
    if not hits:
        return completion_forward(model, input_ids, attention_mask, c)
    first = found[hits[0]].states
    hidden = first.new_zeros((len(found), c, first.shape[-1]))  # (B, C, H)
    for i in hits:
        states = found[i].states
        hidden[i, : len(states)] = states
    logits = model.get_output_embeddings()(hidden)  # (B, C, V)
    misses = [i for i, r in enumerate(found) if r is None]
    if misses:
        rows = torch.tensor(misses, device=input_ids.device)
        miss_logits, miss_hidden = completion_forward(model, input_ids[rows], attention_mask[rows], c)
        logits[rows], hidden[rows] = miss_logits.to(logits.dtype), miss_hidden.to(hidden.dtype)
    return logits, hidden


def memo_completion_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_width: int,
    targets: torch.Tensor,
    excluded: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log_softmax(logits)`` at ``targets`` (B, C) float32, without gradients, for the
    columns of :func:`completion_forward`; rows found in the model's memo (as in
    :func:`memo_completion_forward`) run no LM head.

    A remembered row's log-prob of token ``t`` at column ``j`` is ``h_j . W_t + b_t - lse_j``:
    one row of the output embeddings per token instead of all ``V`` (the judge's pass
    already took the normaliser ``lse_j``). ``excluded`` (m,) token ids are left out of the
    softmax (a vocabulary mask, e.g. the padding token): their logits are computed and
    their share of the normaliser removed, ``lse'_j = lse_j + log(1 - sum_excluded p)``; a
    batch where they hold over half the probability somewhere takes the logits path
    instead, where that difference would lose precision. The other rows run one
    :func:`completion_forward`. Columns past a row's completion (padding) are 0.0. A model
    whose output embeddings are not a plain ``nn.Linear`` takes the logits path for every row.
    """
    import torch

    c = completion_width
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    memo = _memo_of(model) if isinstance(head, torch.nn.Linear) else None
    found = [] if memo is None else memo.lookup(input_ids, attention_mask, input_ids.shape[1] - c)
    out = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)  # (B, C)
    hits = [i for i, r in enumerate(found) if r is not None]
    if hits:
        first = found[hits[0]].states
        hidden = first.new_zeros((len(found), c, first.shape[-1]))  # (B, C, H)
        lse = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)  # (B, C)
        served = torch.zeros(targets.shape, dtype=torch.bool, device=targets.device)  # (B, C)
        for i in hits:
            n = len(found[i].lse)
            hidden[i, :n], lse[i, :n], served[i, :n] = found[i].states, found[i].lse, True

        def logits_of(tokens: torch.Tensor) -> torch.Tensor:  # (B, C) or (m,) ids -> logits
            weight = head.weight[tokens]  # (B, C, H) or (m, H)
            z = (hidden * weight).sum(-1) if tokens.dim() == 2 else hidden @ weight.T  # (B, C) / (B, C, m)
            return (z if head.bias is None else z + head.bias[tokens]).float()

        if excluded is not None and len(excluded):
            share = torch.exp(logits_of(excluded).logsumexp(-1) - lse)  # (B, C) excluded probability
            if bool((share[served] > 0.5).any()):
                hits, found = [], [None] * len(targets)
            else:
                lse = lse + torch.log1p(-share.clamp(max=0.5))
        if hits:
            out = torch.where(served, logits_of(targets) - lse, 0.0)
    misses = [i for i, r in enumerate(found) if r is None] if found else list(range(len(targets)))
    if misses:
        rows = torch.tensor(misses, device=input_ids.device)
        logits, _ = completion_forward(model, input_ids[rows], attention_mask[rows], c)  # (m, C, V)
        logits = logits.float()
        if excluded is not None and len(excluded):
            logits = logits.index_fill(-1, excluded, float("-inf"))
        out[rows] = logits.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)  # (m, C)
    return out
