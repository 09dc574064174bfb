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
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["completion_forward", "forward_arguments"]


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
        if len(distinct) < b:
            return _shared_prompt_forward(model, input_ids, attention_mask, positions, distinct, rows, c, cache_kwarg)
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct prompts (U, P) with a cache, the cache gathered to the B rows by ``rows``
    (B,), then the first ``C - 1`` completion tokens of every row on it."""
    import torch

    p = input_ids.shape[1] - c
    first = rows.new_zeros(len(distinct))
    first[rows] = torch.arange(len(rows), device=rows.device)  # one row holding each prompt
    head = model(input_ids=distinct[:, :p], attention_mask=distinct[:, p:], position_ids=positions[first, :p],
                 use_cache=True, output_hidden_states=True)
    logits, hidden = head.logits[rows, -1:], head.hidden_states[-1][rows, -1:]  # (B, 1, .)
    if c == 1:
        return logits, hidden
    cache = head.get(cache_kwarg) if cache_kwarg in head else head.get("past_key_values")
    cache.batch_select_indices(rows)  # (U, ...) -> (B, ...): differentiable gathers
    tail = model(input_ids=input_ids[:, p : p + c - 1], attention_mask=attention_mask[:, : p + c - 1],
                 position_ids=positions[:, p : p + c - 1], use_cache=True, output_hidden_states=True,
                 **{cache_kwarg: cache})
    return torch.cat([logits, tail.logits], 1), torch.cat([hidden, tail.hidden_states[-1]], 1)
