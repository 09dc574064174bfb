"""The policy every lm_gym learner drives: a causal LM with a value head and a per-slot KV cache.

:class:`LMPolicy` wraps any Hugging Face causal LM (``GPT2LMHeadModel`` is the main case)
and adds

- a value head, ``Linear(hidden, 1)`` initialised to zero, on the final hidden state of
  the shared trunk (as TRL's ``AutoModelForCausalLMWithValueHead``);
- :meth:`LMPolicy.act`, KV-cached stepping of ``N`` env slots of a vector env whose
  observations are left-padded windows (the lm_gym observation contract): slots that
  start an episode are prefilled in one batched forward, all other slots advance by one
  batched forward over their newest token; never a forward per token of context. Without
  ``new_episode`` flags (the plain Gymnasium loop) it tells for itself which slots continue.
  GPT-2 decodes through its own modules on a preallocated per-slot KV cache; any other
  Hugging Face LM through its ``forward`` and caches, on the same schedule;
- sampling with temperature, top-k and top-p (Hugging Face's logits warpers), greedy
  decoding, and vocabulary masking (the env's action mask, and optionally the NLPO mask
  of Ramamurthy et al. 2022, "Is Reinforcement Learning (Not) for NLP?");
- :meth:`LMPolicy.logprobs_of`, the teacher-forced recomputation a learner uses for its
  update, consistent with the log-probabilities :meth:`act` returned.

Log-probability convention (both :meth:`act` and :meth:`logprobs_of`): ``logprobs`` are
taken under ``log_softmax(masked(logits) / temperature)``, where ``masked`` sets every
invalid token (action mask, NLPO mask) to ``-inf``. Top-k and top-p shape *sampling only*;
they do not enter the returned log-probabilities (as TRL's PPO trainer).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lm_gym.error import InvalidArgument, ModelLoadError
from lm_gym.models import fuse_activations, position_ids_from_mask
from lm_gym.models.forward import forward_arguments

__all__ = ["ActOutput", "Evaluation", "LMPolicy", "next_tokens"]

logger = logging.getLogger(__name__)

VALUE_HEAD_FILE = "value_head.safetensors"
POLICY_CONFIG_FILE = "lm_policy.json"
MEMO_EXCLUDED_TOKENS = 64
"""A reference's log-probs skip the LM head for remembered rows (:meth:`LMPolicy.completion_logprobs`)
under a vocabulary mask that excludes at most this many tokens (their logits are computed
one by one); a wider mask takes the full head."""


@dataclass
class ActOutput:
    """What :meth:`LMPolicy.act` returns for ``N`` env slots."""

    actions: np.ndarray
    """(N,) int64 token ids."""
    logprobs: np.ndarray | None
    """(N,) float32 log-probabilities of ``actions`` (see the module docstring's convention);
    None when :meth:`LMPolicy.act` was called with ``stats=False``."""
    values: np.ndarray | None
    """(N,) float32 value estimates V(s) of the observed contexts; None with ``stats=False``."""
    logits: torch.Tensor
    """(N, V) raw model logits at the newest token (before temperature and masks)."""


@dataclass
class Evaluation:
    """What :meth:`LMPolicy.logprobs_of` returns; column ``t`` is the state ending at token ``t``."""

    logprobs: torch.Tensor
    """(B, T) log pi(actions[:, t] | input_ids[:, :t+1])."""
    values: torch.Tensor | None
    """(B, T) V(input_ids[:, :t+1]); None from a pass asked for log-probs only (``stats=False``)."""
    entropy: torch.Tensor | None
    """(B, T) entropy of the masked, temperature-scaled distribution; None with ``stats=False``."""


def next_tokens(input_ids: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """``input_ids`` shifted left by one: the action taken at every column of a full sequence.

    Column ``t`` holds ``input_ids[:, t + 1]``; the last column holds ``fill`` (no action
    follows the newest token). Pass the result as ``actions`` to :meth:`LMPolicy.logprobs_of`.
    """
    out = torch.full_like(input_ids, fill)
    out[..., :-1] = input_ids[..., 1:]
    return out


def _tensor(x: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``x`` (array-like or tensor) on ``device`` as ``dtype``; numpy input is copied (envs
    may hand out read-only arrays)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.tensor(np.asarray(x), device=device).to(dtype)


@dataclass
class _SlotCache:
    """The KV cache of one model for ``N`` env slots: one batch cache of length ``T``."""

    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer (N, H, T, D)
    cache: Any = None  # the HF cache object holding ``kv`` (reused when every slot advances)
    mask: torch.Tensor | None = None  # (N, T) long: 1 where a cached column is context
    next_pos: torch.Tensor | None = None  # (N,) position id of the next token = context length
    weights_version: int = -1
    last_ids: torch.Tensor | None = None  # (N, L) the observation windows of the last act
    last_actions: torch.Tensor | None = None  # (N,) the actions act took from them
    # GPT-2's static cache (LMPolicy._static_step): keys/values (layers, N, H, T_max, D)
    # whose live columns are [start, end); ``mask`` is then (N, T_max) bool
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    start: int = 0
    end: int = 0
    # slots in groups of k consecutive rows showing one prompt (samples_per_prompt): the
    # prompt's keys/values once per group, (layers, N / k, H, P, D); columns [start, split)
    # of ``k``/``v`` are then unused (LMPolicy._gpt2_step)
    kp: torch.Tensor | None = None
    vp: torch.Tensor | None = None

    def emptied(self) -> _SlotCache:
        """A cache with nothing cached (every slot prefills next) that keeps the static
        key/value buffers for reuse: their stale columns stay masked until rewritten."""
        return _SlotCache(k=self.k, v=self.v)

    @property
    def split(self) -> int:
        """With ``kp``: the first column of the slots' own keys/values (the prompt's end)."""
        return self.start + self.kp.shape[3]

    @property
    def length(self) -> int:
        """Columns of the cache a step attends over."""
        if self.k is not None:
            return self.end - self.start
        return 0 if self.mask is None else self.mask.shape[1]


_Window = tuple[torch.Tensor, torch.Tensor]  # (input_ids (N, L), attention_mask (N, L))
_Pair = tuple[torch.Tensor, torch.Tensor]  # (logits (N, V), hidden (N, H)) at the newest token


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask as SDPA's additive mask (0 or -inf) of the queries' dtype:
    CPU SDPA runs faster on it, and it is built once per step, not once per layer."""
    zeros = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return zeros.masked_fill_(~keep, float("-inf"))


PREFILL_TOKENS = 512
"""At most this many tokens (windows x width) per chunk of a static-cache prefill. Windows
are prefilled longest first in chunks, each only as wide as its longest window, so left
padding is mostly not computed (a batch of built-in prompts is ~60 % real tokens at its
widest row's width), and each chunk's activations stay in cache."""

PREFILL_MIN_TOKENS = 64
"""A chunk of at least this many tokens ends early at a window shorter than 3/4 of its
width: below it, a chunk's fixed cost (one pass of Python over the blocks) outweighs the
padding saved."""


BLOCK_ROWS = 128
"""Rows of logits per block in :class:`_BlockedLogprobs`: (128, V) float32 is 1 MiB at V =
2048, so each block's passes run in cache."""


class _BlockedLogprobs(torch.autograd.Function):
    """``log_softmax(mask(logits / T))[target]`` for (N, V) rows, with each row's entropy
    (returned without gradient), computed block by block of :data:`BLOCK_ROWS` rows.

    The same values and gradients as the composed ops (``torch.where`` mask, ``log_softmax``,
    ``gather``), which each make a full (N, V) pass forward and another backward (the
    update's logits are 12 MB at 64 x 24 x 2048): here the forward reads the logits once and
    the backward reads them once and writes their gradient once, each block's
    intermediates staying in cache. Masked tokens have probability 0, so their gradient is
    exactly 0, as through ``where``.
    """

    @staticmethod
    def _block(logits: torch.Tensor, valid: torch.Tensor | None, temperature: float, lo: int, hi: int) -> torch.Tensor:
        """Rows ``[lo, hi)`` scaled and masked (:meth:`LMPolicy._scaled`); a (V,) mask comes as
        an additive 0 / -inf float row (one add), an (N, V) one as bool."""
        if valid is not None and valid.is_floating_point():
            return LMPolicy._scaled(logits[lo:hi], None, temperature) + valid
        return LMPolicy._scaled(logits[lo:hi], None if valid is None else valid[lo:hi], temperature)

    @staticmethod
    def _mask(valid: torch.Tensor | None) -> torch.Tensor | None:
        if valid is None or valid.dim() != 1:
            return valid
        return torch.zeros(valid.shape, dtype=torch.float32, device=valid.device).masked_fill_(~valid, float("-inf"))

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = logits.shape[0]
        targets = targets.long()
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        logprobs, entropy = torch.empty_like(lse), torch.empty_like(lse)
        valid = _BlockedLogprobs._mask(valid)
        for lo in range(0, n, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, n)
            z = _BlockedLogprobs._block(logits, valid, temperature, lo, hi)  # (b, V)
            lse[lo:hi] = z.logsumexp(-1)
            logp = z - lse[lo:hi, None]
            logprobs[lo:hi] = logp.gather(1, targets[lo:hi, None]).squeeze(1)
            # -sum p log p; a masked token's 0 * -inf is NaN, which nansum drops (its term is 0)
            entropy[lo:hi] = -torch.nansum(logp.exp() * logp, -1)
        ctx.save_for_backward(logits, targets, lse, valid)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx: Any, grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor) -> tuple[Any, ...]:
        logits, targets, lse, valid = ctx.saved_tensors
        temperature = ctx.temperature
        grad = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        g = grad_logprobs.float()
        for lo in range(0, logits.shape[0], BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, logits.shape[0])
            out = grad[lo:hi]
            # d logp_t / d z_j = [j = t] - p_j, so the block's gradient is -p g + g at the target
            torch.sub(_BlockedLogprobs._block(logits, valid, temperature, lo, hi), lse[lo:hi, None], out=out)
            out.exp_().mul_(-g[lo:hi, None])
            out.scatter_add_(1, targets[lo:hi, None], g[lo:hi, None])
            if temperature != 1:
                out.div_(temperature)
        return grad.to(logits.dtype), None, None, None


def _group_size(windows: torch.Tensor) -> int:
    """The largest ``k`` such that the (N, W) rows come in groups of ``k`` consecutive equal
    rows (1: none): the gcd of the lengths of the runs of equal rows."""
    same = (windows[1:] == windows[:-1]).all(-1)  # (N - 1,)
    starts = torch.nonzero(~same).squeeze(1) + 1
    bounds = [0, *starts.tolist(), len(windows)]
    return math.gcd(*(b - a for a, b in zip(bounds, bounds[1:])))


def _prefill_chunks(counts: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Windows with ``counts`` (n,) real tokens in chunks, longest first: (indices, width)
    pairs, width the chunk's longest window (>= 1). A chunk ends before it would pass
    :data:`PREFILL_TOKENS` tokens, or, once it has :data:`PREFILL_MIN_TOKENS`, at the first
    window shorter than 3/4 of its width."""
    order = torch.argsort(counts, descending=True, stable=True)
    lengths = counts[order].tolist()
    chunks, first = [], 0
    for i, length in enumerate(lengths + [-1]):  # -1 ends the last chunk
        width = max(int(lengths[first]), 1)
        size = (i - first) * width  # tokens in the chunk so far
        if i > first and (
            length < 0 or size + width > PREFILL_TOKENS or (size >= PREFILL_MIN_TOKENS and 4 * length < 3 * width)
        ):
            chunks.append((order[first:i], width))
            first = i
    return chunks


def _prefill_attention(mask: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """For left-padded windows ``mask`` (n, t) bool: the additive causal mask over their real
    tokens (n, 1, t, t), where a padding row sees itself (no all -inf row), and the position
    ids (n, t)."""
    t = mask.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()
    eye = torch.eye(t, dtype=torch.bool, device=mask.device)
    return _additive(((causal & mask[:, None, :]) | eye)[:, None], dtype), position_ids_from_mask(mask.long())


def _grouped_attention(q: torch.Tensor, state: _SlotCache, layer: int, mask4: torch.Tensor, scale: float) -> torch.Tensor:
    """One decode step's attention (N, heads, 1, D) over the live columns ``[start, end)``:
    the prompt's ``[start, split)`` from ``state.kp``/``vp`` (one copy per group of slots, so
    each group reads it once for its ``k`` queries), the rest from the slots' own columns.
    Equals the plain step's attention up to float rounding."""
    n, heads, _, d = q.shape
    g = state.kp.shape[1]
    kp, vp = state.kp[layer], state.vp[layer]  # (G, heads, P, D)
    p = kp.shape[2]
    kc = state.k[layer, :, :, state.split : state.end]  # (N, heads, C, D)
    vc = state.v[layer, :, :, state.split : state.end]
    qg = q.view(g, n // g, heads, d).transpose(1, 2)  # (G, heads, k, D)
    prompt = torch.matmul(qg, kp.transpose(-1, -2)).transpose(1, 2).reshape(n, heads, 1, p)
    scores = torch.cat([prompt, torch.matmul(q, kc.transpose(-1, -2))], -1)  # (N, heads, 1, P + C)
    probs = torch.softmax(scores * scale + mask4, -1)
    pg = probs[..., :p].reshape(g, n // g, heads, p).transpose(1, 2)  # (G, heads, k, P)
    y = torch.matmul(pg, vp).transpose(1, 2).reshape(n, heads, 1, d)
    return y + torch.matmul(probs[..., p:], vc)


def _is_plain_gpt2(model: nn.Module) -> bool:
    """A GPT-2 LM the static fast path can run through its modules (no cross-attention, no
    active dropout); any other model takes the generic path."""
    from transformers import GPT2LMHeadModel

    if type(model) is not GPT2LMHeadModel or model.config.add_cross_attention:
        return False
    return not model.training or all(
        m.p == 0 for m in model.modules() if isinstance(m, nn.Dropout)
    )


def _cache_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) of a Hugging Face cache (transformers 4.x and 5.x layouts)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v in cache]  # a legacy tuple of tuples


def _make_cache(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(ddp_cache_data=kv)  # transformers >= 4.56
    except TypeError:  # pragma: no cover - older transformers
        return DynamicCache.from_legacy_cache(tuple(kv))


class LMPolicy(nn.Module):
    """A causal LM with a value head, KV-cached rollouts over env slots, sampling and masks.

    Args:
        model: a Hugging Face causal LM (``AutoModelForCausalLM``-like); its logit width is
            the action space size ``V``.
        temperature: sampling temperature (> 0); also divides the logits of ``logprobs``.
        top_k: sample among the ``top_k`` most likely tokens only (None: no limit).
        top_p: nucleus sampling threshold in (0, 1] (None or 1: off).
        nlpo_top_p: if set, NLPO masking (Ramamurthy et al. 2022): a frozen copy of the LM
            (the *mask model*) restricts every step's actions to its own top-p token set.
        nlpo_update_every: refresh the mask model from the policy every this many calls of
            :meth:`after_update` (one per learner iteration).
        cache_slack: the batch KV cache may grow this many columns beyond the observation
            width ``L`` before it is compacted by re-prefilling every slot (default ``L``).
        disable_dropout: set every dropout probability to 0, so that rollout and update
            log-probabilities agree (as TRL does for PPO).

    A rollout with a vector env, in the plain Gymnasium loop (the policy sees for itself
    which windows extend its cache by the action it took and which start an episode)::

        obs, info = envs.reset(seed=0)
        for _ in range(n_steps):
            out = policy.act(obs, action_mask=info.get("action_mask"))
            obs, rewards, terminated, truncated, info = envs.step(out.actions)
        # update with policy.logprobs_of(...); then policy.after_update()

    ``new_episode`` flags (``terminated | truncated`` with ``SAME_STEP`` autoreset) are an
    optional hint; they give the same actions.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        nlpo_top_p: float | None = None,
        nlpo_update_every: int = 1,
        cache_slack: int | None = None,
        disable_dropout: bool = True,
    ) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise InvalidArgument(f"temperature must be > 0, got {temperature!r}.")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise InvalidArgument(f"top_k must be None or an integer >= 1, got {top_k!r}.")
        for name, p in (("top_p", top_p), ("nlpo_top_p", nlpo_top_p)):
            if p is not None and not 0.0 < p <= 1.0:
                raise InvalidArgument(f"{name} must be None or in (0, 1], got {p!r}.")
        if not isinstance(nlpo_update_every, int) or nlpo_update_every < 1:
            raise InvalidArgument(
                f"nlpo_update_every must be an integer >= 1, got {nlpo_update_every!r}."
            )
        if cache_slack is not None and (not isinstance(cache_slack, int) or cache_slack < 1):
            raise InvalidArgument(
                f"cache_slack must be None or an integer >= 1, got {cache_slack!r}."
            )
        self.model = fuse_activations(model)
        self.temperature = float(temperature)
        self.top_k = top_k
        self.top_p = top_p
        self.nlpo_top_p = nlpo_top_p
        self.nlpo_update_every = nlpo_update_every
        self.cache_slack = cache_slack
        if disable_dropout:
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        config = (
            model.config.get_text_config()
            if hasattr(model.config, "get_text_config")
            else model.config
        )
        self.vocab_size: int = int(model.get_output_embeddings().weight.shape[0])
        self.max_positions: int | None = getattr(config, "max_position_embeddings", None)
        self.value_head = nn.Linear(int(config.hidden_size), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(next(model.parameters()).device)
        self.mask_model: nn.Module | None = None
        if nlpo_top_p is not None:
            self.mask_model = copy.deepcopy(model).requires_grad_(False).eval()
        self._cache_kwarg, self._has_logits_to_keep = forward_arguments(model)
        self._generator: torch.Generator | None = None
        self._fast_path = True  # GPT-2 through its modules on a static cache; False: generic
        self._plain_gpt2: dict[tuple[int, bool], bool] = {}
        self._param_lists: dict[int, tuple[nn.Module, list[nn.Parameter]]] = {}
        self._mask_tensor: tuple[np.ndarray, torch.Tensor] | None = None
        self._updates = 0
        self._states: dict[str, _SlotCache] = {"policy": _SlotCache(), "mask": _SlotCache()}

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_vocab(
        cls,
        vocab_size: int,
        *,
        n_layer: int = 2,
        n_embd: int = 64,
        n_head: int = 4,
        n_positions: int = 512,
        seed: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **policy_kwargs: Any,
    ) -> LMPolicy:
        """A fresh small GPT-2 sized to a toy vocabulary (``policy_kwargs`` go to :class:`LMPolicy`).

        ``n_positions`` must cover the env's observation width ``L``. ``seed`` makes the
        initial weights reproducible without touching the global RNG.
        """
        from transformers import GPT2Config, GPT2LMHeadModel

        try:  # np.int64 (gymnasium's Discrete.n) is fine; HF configs want plain ints
            vocab_size, n_layer, n_embd, n_head, n_positions = (
                operator.index(x) for x in (vocab_size, n_layer, n_embd, n_head, n_positions)
            )
        except TypeError as e:
            raise InvalidArgument(f"for_vocab sizes must be integers: {e}") from e
        if vocab_size < 2:
            raise InvalidArgument(f"vocab_size must be >= 2, got {vocab_size!r}.")
        if n_embd % n_head:
            raise InvalidArgument(f"n_embd={n_embd} must be divisible by n_head={n_head}.")
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=n_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return cls(GPT2LMHeadModel(config), **policy_kwargs)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the LM (``save_pretrained``, safetensors), the value head and the sampling settings."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
            str(directory / VALUE_HEAD_FILE),
        )
        settings = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "nlpo_top_p": self.nlpo_top_p,
            "nlpo_update_every": self.nlpo_update_every,
            "cache_slack": self.cache_slack,
        }
        (directory / POLICY_CONFIG_FILE).write_text(json.dumps(settings, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> LMPolicy:
        """Load a policy written by :meth:`save_pretrained` (local files only).

        ``overrides`` replace saved settings (e.g. ``temperature``). The NLPO mask model,
        if any, starts as a copy of the loaded LM.
        """
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        directory = Path(directory)
        if not (directory / VALUE_HEAD_FILE).is_file():
            raise ModelLoadError(
                f"{str(directory)!r} is not an LMPolicy checkpoint: {VALUE_HEAD_FILE} is missing "
                "(write one with LMPolicy.save_pretrained)."
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"Could not load the LM of {str(directory)!r}: {e}") from e
        settings_path = directory / POLICY_CONFIG_FILE
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        settings.update(overrides)
        policy = cls(model, **settings)
        policy.value_head.load_state_dict(load_file(str(directory / VALUE_HEAD_FILE)))
        return policy

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        """The device of the LM's parameters."""
        return next(self.model.parameters()).device

    def seed(self, seed: int | None) -> None:
        """Seed :meth:`act`'s sampling with a private generator (None: the global RNG)."""
        if seed is None:
            self._generator = None
        else:
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(seed)

    def sampler_state(self) -> torch.Tensor | None:
        """The state of :meth:`act`'s private sampling generator (None when unseeded)."""
        return None if self._generator is None else self._generator.get_state()

    def set_sampler_state(self, state: torch.Tensor | None) -> None:
        """Restore :meth:`sampler_state` (creating the private generator if needed; None unseeds)."""
        if state is None:
            self._generator = None
            return
        if self._generator is None:
            self._generator = torch.Generator(device=self.device)
        self._generator.set_state(state)

    def reset_cache(self) -> None:
        """Drop the KV caches; the next :meth:`act` prefills every slot from its observation.

        Not needed after optimizer steps: :meth:`act` notices changed weights itself. The
        static key/value buffers stay allocated for reuse (their contents are stale and
        every column is masked until the prefill rewrites it).
        """
        self._states = {name: s.emptied() for name, s in self._states.items()}

    def refresh_mask_model(self) -> None:
        """Copy the current LM weights into the NLPO mask model (and drop its cache)."""
        if self.mask_model is None:
            raise InvalidArgument("refresh_mask_model needs NLPO masking: pass nlpo_top_p.")
        self.mask_model.load_state_dict(self.model.state_dict())
        self._states["mask"] = _SlotCache()

    def after_update(self) -> bool:
        """Call once per learner iteration; refreshes the NLPO mask model every ``nlpo_update_every`` calls.

        Returns True if the mask model was refreshed.
        """
        self._updates += 1
        self._states["policy"] = self._states["policy"].emptied()  # no 30 ms re-zero-fill at batch 64
        if self.mask_model is not None and self._updates % self.nlpo_update_every == 0:
            self.refresh_mask_model()
            return True
        return False

    def _run(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any = None,
        *,
        use_cache: bool = False,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One model forward: (logits (B, T', V), final hidden states (B, T', H), cache)."""
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": use_cache,
            "output_hidden_states": True,
        }
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        if last_only and self._has_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = model(**kwargs)
        logits, hidden = out.logits, out.hidden_states[-1]  # (B, T', V), (B, T, H)
        if last_only:
            logits, hidden = logits[:, -1:], hidden[:, -1:]
        # transformers 5 names the cache ``cache``, older versions ``past_key_values``
        return logits, hidden, out.get(self._cache_kwarg, None)

    def _value(self, hidden: torch.Tensor) -> torch.Tensor:
        w = self.value_head.weight
        return self.value_head(hidden.to(w.dtype)).squeeze(-1)

    # ------------------------------------------------------------------ teacher forcing
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over full (left-padded) sequences: ``(logits (B, T, V), values (B, T))``.

        Position ids are ``cumsum(attention_mask) - 1`` clamped at 0, so a left-padded row
        scores exactly as the same tokens without padding.
        """
        attention_mask = attention_mask.long()
        logits, hidden, _ = self._run(
            self.model, input_ids, attention_mask, position_ids_from_mask(attention_mask)
        )
        return logits, self._value(hidden)  # (B, T, V), (B, T)

    def logprobs_of(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        actions: torch.Tensor,
        *,
        temperature: float | None = None,
        action_mask: Any = None,
    ) -> Evaluation:
        """Teacher-forced log-probabilities, values and entropies, with gradients.

        Column ``t`` is the state whose context ends at token ``t``: ``logprobs[:, t] =
        log pi(actions[:, t] | input_ids[:, :t+1])`` under the masked, temperature-scaled
        distribution (the convention of :meth:`act`), ``values[:, t] = V(input_ids[:, :t+1])``.
        For a full sequence use ``actions = next_tokens(input_ids)``. ``action_mask`` is
        (V,), (B, V) or (B, T, V); the NLPO mask, if enabled, is recomputed from the mask
        model at every position (never stored).
        """
        attention_mask = attention_mask.long()
        positions = position_ids_from_mask(attention_mask)
        logits, hidden, _ = self._run(self.model, input_ids, attention_mask, positions)
        mask_logits = None
        if self.mask_model is not None:
            with torch.no_grad():
                mask_logits, _, _ = self._run(self.mask_model, input_ids, attention_mask, positions)
        return self._evaluation(logits, hidden, actions, action_mask, mask_logits, temperature)

    def completion_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_width: int,
        *,
        temperature: float | None = None,
        action_mask: Any = None,
        stats: bool = True,
        entropy_grad: bool = True,
    ) -> Evaluation:
        """:meth:`logprobs_of` of the completion only, (B, C) fields, with gradients.

        ``input_ids`` (B, P + C) holds prompts left-padded to ``P`` columns, then completions
        right-padded to ``C = completion_width``; column ``j`` scores completion token ``j``
        (padding columns score a valid stand-in token, finite, for a masked sum). One pass of
        :func:`lm_gym.models.forward.completion_forward`: the LM head on the ``C`` columns only,
        each distinct prompt run once. ``action_mask`` is (V,) or (B, V). ``stats=False``
        returns the log-probs alone (no values, no entropy: a KL reference needs no more);
        ``entropy_grad=False`` returns the entropy without gradients (a learner that only logs
        it: no autograd record of the (B, C, V) passes that compute it).

        Without gradients (a frozen reference's KL log-probs) rows the env's fluency judge
        already ran through this same model come from its memo: their logits from the
        remembered states (:func:`lm_gym.models.forward.memo_completion_forward`), or, for the
        log-probs alone at temperature 1 under no mask or a (V,) mask of at most
        :data:`MEMO_EXCLUDED_TOKENS` excluded tokens, a dot product per token with no LM head
        (:func:`lm_gym.models.forward.memo_completion_logprobs`).
        """
        from lm_gym.models.forward import (
            completion_forward,
            memo_completion_forward,
            memo_completion_logprobs,
        )

        c = completion_width
        temperature = self.temperature if temperature is None else temperature
        if temperature <= 0:
            raise InvalidArgument(f"temperature must be > 0, got {temperature!r}.")
        if not stats and self.mask_model is None and temperature == 1 and not torch.is_grad_enabled():
            valid = self._valid_tokens(action_mask, input_ids[:, -c:].shape)  # (V,) / (B, 1, V) or None
            excluded = None if valid is None or valid.dim() != 1 else torch.nonzero(~valid).squeeze(1)  # (m,)
            if valid is None or (excluded is not None and len(excluded) <= MEMO_EXCLUDED_TOKENS):
                fill = 0 if valid is None else int(valid.to(torch.uint8).argmax())
                targets = torch.where(attention_mask[:, -c:] != 0, input_ids[:, -c:], fill)  # (B, C)
                logprobs = memo_completion_logprobs(self.model, input_ids, attention_mask, c, targets, excluded)
                return Evaluation(logprobs=logprobs, values=None, entropy=None)
        forward = completion_forward if torch.is_grad_enabled() else memo_completion_forward
        logits, hidden = forward(self.model, input_ids, attention_mask, c)
        mask_logits = None
        if self.mask_model is not None:
            with torch.no_grad():
                mask_logits, _ = completion_forward(self.mask_model, input_ids, attention_mask, c)
        valid = self._valid_tokens(action_mask, logits.shape[:-1])
        # each row's first valid token ((V,) mask: a scalar; (B, V): (B, 1)) stands in for padding
        fill = 0 if valid is None else valid.to(torch.uint8).argmax(-1)
        targets = torch.where(attention_mask[:, -c:] != 0, input_ids[:, -c:], fill)
        return self._evaluation(logits, hidden, targets, action_mask, mask_logits, temperature, stats, entropy_grad)

    def _evaluation(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        actions: torch.Tensor,
        action_mask: Any,
        mask_logits: torch.Tensor | None,
        temperature: float | None,
        stats: bool = True,
        entropy_grad: bool = True,
    ) -> Evaluation:
        """Log-probs of ``actions``, values and entropies from (B, T, V) logits and (B, T, H)
        states (log-probs alone with ``stats=False``; the entropy detached with
        ``entropy_grad=False``)."""
        temperature = self.temperature if temperature is None else temperature
        if temperature <= 0:
            raise InvalidArgument(f"temperature must be > 0, got {temperature!r}.")
        valid = self._valid_tokens(action_mask, logits.shape[:-1])  # (B, T, V) bool or None
        if mask_logits is not None:
            valid = self._nlpo_keep(mask_logits, valid)
        if stats and not entropy_grad:  # the learners' update: one blocked pass, no (B, T, V) temporaries
            lead, v = logits.shape[:-1], logits.shape[-1]
            rows = None if valid is None else (valid if valid.dim() == 1 else valid.expand(*lead, v).reshape(-1, v))
            logprobs, entropy = _BlockedLogprobs.apply(logits.reshape(-1, v), actions.reshape(-1), rows, temperature)
            return Evaluation(logprobs=logprobs.view(lead), values=self._value(hidden), entropy=entropy.view(lead))
        scaled = self._scaled(logits, valid, temperature)  # (B, T, V)
        if not stats:  # no (B, T, V) log-softmax: the normaliser and the chosen logits suffice
            picked = scaled.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (B, T)
            return Evaluation(logprobs=picked - scaled.logsumexp(-1), values=None, entropy=None)
        logp_all = torch.log_softmax(scaled, dim=-1)
        logprobs = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (B, T)
        # Masked tokens have logp = -inf and p = 0: zero their logp first, so both the
        # entropy and its gradient stay finite (entr's gradient is NaN at p = 0). The mask
        # says where (no isfinite pass over (B, T, V)); a model that emits -inf logits itself
        # shows as a non-finite entropy and takes the full guard.
        finite_logp = logp_all if valid is None else logp_all.masked_fill(~valid, 0.0)
        entropy = -(logp_all.exp() * finite_logp).sum(-1)  # (B, T)
        if not bool(torch.isfinite(entropy).all()):
            finite_logp = logp_all.masked_fill(~torch.isfinite(logp_all), 0.0)
            entropy = -(logp_all.exp() * finite_logp).sum(-1)
        return Evaluation(logprobs=logprobs, values=self._value(hidden), entropy=entropy)

    # ------------------------------------------------------------------ masks and sampling
    def _valid_tokens(self, action_mask: Any, lead_shape: torch.Size) -> torch.Tensor | None:
        """The action mask as bool, broadcastable to ``lead_shape + (V,)``; None when absent."""
        if action_mask is None:
            return None
        cached = self._mask_tensor
        if cached is not None and cached[0] is action_mask and cached[1].device == self.device:
            m = cached[1]  # the same read-only array as before: converted and checked then
        else:
            m = self._checked_mask(action_mask)
            if isinstance(action_mask, np.ndarray) and not action_mask.flags.writeable:
                self._mask_tensor = (action_mask, m)
        if m.ndim == 2 and len(lead_shape) == 2:  # (B, V) for a (B, T) teacher-forced batch
            m = m.unsqueeze(1)
        return m

    def _checked_mask(self, action_mask: Any) -> torch.Tensor:
        m = _tensor(action_mask, self.device, torch.bool)
        if m.shape[-1] != self.vocab_size:
            raise InvalidArgument(
                f"action_mask has width {m.shape[-1]} but the policy's vocabulary has {self.vocab_size} tokens."
            )
        if not bool(m.any(-1).all()):
            raise InvalidArgument("action_mask leaves no valid token for some slot.")
        return m

    def _nlpo_keep(self, mask_logits: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """NLPO: ``valid`` restricted to the mask model's top-p set (computed among valid tokens)."""
        from transformers import TopPLogitsWarper

        scores = mask_logits.float()
        if valid is not None:
            scores = scores.masked_fill(~valid, float("-inf"))
        flat = scores.reshape(-1, scores.shape[-1])  # (B*T, V)
        kept = TopPLogitsWarper(top_p=self.nlpo_top_p)(None, flat)
        keep = torch.isfinite(kept).reshape(scores.shape)
        return keep if valid is None else keep & valid

    @staticmethod
    def _scaled(
        logits: torch.Tensor, valid: torch.Tensor | None, temperature: float
    ) -> torch.Tensor:
        scaled = logits.float() if temperature == 1 else logits.float() / temperature  # no copy at 1
        return scaled if valid is None else torch.where(valid, scaled, float("-inf"))

    def _sample(self, scaled: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Actions (N,) from masked, temperature-scaled logits (N, V); top-k/top-p apply here only."""
        if deterministic:
            return scaled.argmax(-1)
        from transformers import LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

        warpers = LogitsProcessorList()
        if self.top_k is not None:
            warpers.append(TopKLogitsWarper(top_k=self.top_k))
        if self.top_p is not None and self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=self.top_p))
        probs = torch.softmax(warpers(None, scaled) if warpers else scaled, dim=-1)  # (N, V)
        # Inverse-CDF sampling: one uniform per row, placed on the row's cumulative sum (in
        # float64, as torch.multinomial accumulates) by binary search. The same law as
        # multinomial at a twentieth of its cost, and a sixth of the exponential race's
        # (which drew one uniform per vocabulary entry). The first column whose CDF exceeds
        # u has p > 0, so a masked token (an empty interval) is never chosen; u is kept below
        # the row's total, which rounding could otherwise reach.
        acc = torch.float32 if probs.device.type == "mps" else torch.float64  # MPS has no float64
        cdf = probs.cumsum(-1, dtype=acc)  # (N, V)
        total = cdf[:, -1:]
        u = torch.rand(total.shape, generator=self._generator, dtype=acc, device=probs.device)
        u = torch.minimum(u.mul_(total), torch.nextafter(total, torch.zeros_like(total)))
        return torch.searchsorted(cdf, u, right=True).squeeze(1)

    # ------------------------------------------------------------------ KV-cached stepping
    def _weights_version(self, model: nn.Module) -> int:
        """Changes whenever a parameter is updated in place (an optimizer step, a load)."""
        owner, params = self._param_lists.get(id(model), (None, []))
        if owner is not model:  # walking the module tree each step costs more than the sum
            params = list(model.parameters())
            self._param_lists[id(model)] = (model, params)
        return sum(p._version for p in params)

    @staticmethod
    def _extends_cache(
        state: _SlotCache, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(N,) bool: True where a slot's window is its last window plus the action taken.

        That is: the context is one token longer than the cached one, its newest token is the
        slot's last action and the older tokens are the last window's (shifted left by one).
        Such a slot advances its cache; any other (first call, reset, autoreset) is prefilled.
        """
        last = state.last_ids
        if last is None or last.shape != input_ids.shape or last.device != input_ids.device:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        older = attention_mask[:, :-1] != 0  # (N, L-1) context columns before the newest token
        return (
            (attention_mask.sum(-1) == state.next_pos + 1)
            & (attention_mask[:, -1] != 0)
            & (input_ids[:, -1] == state.last_actions)
            & ((input_ids[:, :-1] == last[:, 1:]) | ~older).all(-1)
        )

    def _advance(
        self,
        model: nn.Module,
        state: _SlotCache,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        new: torch.Tensor,
        active: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bring ``state`` up to the observations; (logits (N, V), hidden (N, H)) at the newest token.

        The state is one batch cache of ``T`` columns for all ``N`` slots, with a 2-D mask
        (N, T) marking which columns are context of each slot and the next position id of
        each slot. A step costs at most one prefill forward over the windows of the new
        slots, trimmed of columns that are padding in all of them ((n_new, w), w <= L), and
        one incremental forward over the newest tokens of the others ((n_old, 1)). The new
        slots' ``w`` keys/values go into the last ``w`` columns of their rows. When ``T``
        would pass ``L + cache_slack``, every slot is re-prefilled from its window
        (compaction), so memory stays bounded; so too after a weight or device change.
        GPT-2 runs on a preallocated cache through its own parameters (:meth:`_static_step`;
        its prefill also skips most of the left padding, in chunks of similar widths),
        any other model through its ``forward`` and Hugging Face caches; both follow this
        schedule, so they choose the same tokens.
        """
        key = (id(model), model.training)
        if key not in self._plain_gpt2:  # walking the modules each step would cost more
            self._plain_gpt2[key] = _is_plain_gpt2(model)
        static = self._fast_path and self._plain_gpt2[key]
        new = self._schedule(model, state, attention_mask, new, static, active)
        if static:
            return self._static_step(model, state, (input_ids, attention_mask), new)
        if bool(new.all()):
            logits, hidden, state.cache, state.mask, state.next_pos = self._prefill(
                model, input_ids, attention_mask
            )
            state.kv = _cache_kv(state.cache)
            state.weights_version = self._weights_version(model)
            return logits, hidden
        if not bool(new.any()):  # every slot advances by its newest token: reuse the cache as is
            return self._generic_step(model, state, input_ids, None)
        return self._generic_mixed(model, state, (input_ids, attention_mask), new)

    def _schedule(
        self,
        model: nn.Module,
        state: _SlotCache,
        attention_mask: torch.Tensor,
        new: torch.Tensor,
        static: bool,
        active: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The slots to prefill: ``new``, or all after a staleness or for compaction.

        Raises if an active slot not flagged new does not extend its cached context by one
        token (``active`` None: every slot is active).
        """
        n, width = attention_mask.shape
        slack = width if self.cache_slack is None else self.cache_slack
        stale = (
            state.mask is None
            or state.mask.shape[0] != n
            or state.mask.device != attention_mask.device
            or state.weights_version != self._weights_version(model)
            or static != (state.k is not None)
            or (static and state.k.shape[3] != 2 * width + slack)
        )
        if not stale and state.length + 1 > width + slack and not bool(new.all()):
            logger.debug(
                "compacting the KV cache: %d columns, re-prefilling %d slots", state.length, n
            )
            stale = True
        if stale or bool(new.all()):
            return torch.ones(n, dtype=torch.bool, device=attention_mask.device)
        old = ~new if active is None else ~new & active
        if bool(old.any()):
            wrong = (attention_mask[old].sum(-1) != state.next_pos[old] + 1) | (
                attention_mask[old, -1] == 0
            )
            if bool(wrong.any()):
                bad = torch.nonzero(old).squeeze(1)[wrong].tolist()
                raise InvalidArgument(
                    f"slot(s) {bad} were not flagged new_episode but their observation does not "
                    "extend the cached context by exactly one token; flag every slot whose "
                    "observation starts an episode (after reset or autoreset)."
                )
        return new

    def _prefill(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Generic prefill of whole windows, minus the columns that are padding in every row
        (as model.generate, which sees the prompts without the budget's pad).

        Returns (logits (n, V), hidden (n, H), cache, mask (n, w), next positions (n,)).
        """
        counts = attention_mask.sum(-1)  # (n,)
        w = max(int(counts.max()), 1)
        mask = attention_mask[:, attention_mask.shape[1] - w :]  # (n, w)
        logits, hidden, cache = self._run(
            model, input_ids[:, -w:], mask, position_ids_from_mask(mask), use_cache=True, last_only=True
        )
        return logits[:, -1], hidden[:, -1], cache, mask, counts

    def _generic_step(
        self, model: nn.Module, state: _SlotCache, input_ids: torch.Tensor, rows: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One incremental forward of the slots ``rows`` (None: all) over their newest token.

        With ``rows`` None the state advances in place; otherwise it is left as it was and
        the rows' (logits, hidden, mask (n_old, T+1), cache) come back for the caller.
        """
        if rows is None:
            mask, cache, next_pos = state.mask, state.cache, state.next_pos
        else:
            mask, next_pos = state.mask[rows], state.next_pos[rows]
            cache = _make_cache([(k[rows], v[rows]) for k, v in state.kv])
            input_ids = input_ids[rows]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # (n, T+1)
        logits, hidden, cache = self._run(
            model, input_ids[:, -1:], mask, next_pos[:, None], cache, use_cache=True, last_only=True
        )
        if rows is not None:
            return logits[:, -1], hidden[:, -1], mask, cache
        state.cache, state.kv, state.mask = cache, _cache_kv(cache), mask
        state.next_pos = state.next_pos + 1
        return logits[:, -1], hidden[:, -1]

    def _generic_mixed(
        self, model: nn.Module, state: _SlotCache, window: _Window, new: torch.Tensor
    ) -> _Pair:
        """Advance the old slots on their own rows of the cache, prefill the new ones, and
        write the new slots' w columns into the last w columns of the grown batch cache."""
        input_ids, attention_mask = window  # (N, L), (N, L)
        n = input_ids.shape[0]
        new_idx, old_idx = torch.nonzero(new).squeeze(1), torch.nonzero(~new).squeeze(1)
        new_logits, new_hidden, new_cache, prefill_mask, counts = self._prefill(
            model, input_ids[new_idx], attention_mask[new_idx]
        )
        old_logits, old_hidden, old_mask, old_cache = self._generic_step(
            model, state, input_ids, old_idx
        )
        w = prefill_mask.shape[1]
        length = max(state.length + 1, w)  # left-pad the old rows if the new window is wider
        kv = []
        for (k_old, v_old), (k_new, v_new) in zip(_cache_kv(old_cache), _cache_kv(new_cache)):
            k = k_old.new_zeros((n, k_old.shape[1], length, k_old.shape[3]))  # (N, H, T', D)
            v = v_old.new_zeros((n, v_old.shape[1], length, v_old.shape[3]))
            k[old_idx, :, length - k_old.shape[2] :] = k_old
            v[old_idx, :, length - v_old.shape[2] :] = v_old
            k[new_idx, :, length - w :], v[new_idx, :, length - w :] = k_new, v_new
            kv.append((k, v))
        mask = attention_mask.new_zeros(n, length)
        mask[old_idx, length - old_mask.shape[1] :] = old_mask
        mask[new_idx, length - w :] = prefill_mask
        next_pos = state.next_pos.clone()
        next_pos[old_idx] += 1
        next_pos[new_idx] = counts
        state.kv, state.cache, state.mask, state.next_pos = kv, _make_cache(kv), mask, next_pos
        logits = new_logits.new_empty((n, new_logits.shape[-1]))
        hidden = new_hidden.new_empty((n, new_hidden.shape[-1]))
        logits[old_idx], logits[new_idx] = old_logits, new_logits
        hidden[old_idx], hidden[new_idx] = old_hidden, new_hidden
        return logits, hidden

    # ------------------------------------------------------------------ GPT-2 fast path
    def _static_step(
        self, model: nn.Module, state: _SlotCache, window: _Window, new: torch.Tensor
    ) -> _Pair:
        """The schedule of :meth:`_advance` on a preallocated cache, through GPT-2's modules.

        ``state.k``/``state.v`` are (layers, N, H, 2L + slack, D), zero-initialised; the live
        columns are ``[state.start, state.end)``. A full prefill puts the windows at
        ``[L - w, L)``; a step writes column ``end`` of every row (the new slots' rows are
        recomputed next); the new slots' ``w`` columns go to ``[end - w, end)``.
        """
        input_ids, attention_mask = window  # (N, L), (N, L)
        n, width = input_ids.shape
        hidden = None
        if bool(new.all()):
            self._static_alloc(model, state, n, width)
            state.mask.zero_()
            state.start = state.end = width
        else:  # one forward over the newest token of every slot (new ones are overwritten)
            state.end += 1
            state.mask[:, state.end - 1] = True
            positions = state.next_pos[:, None]  # (N, 1)
            if self.max_positions is not None:  # a new slot's stale position may be past the end
                positions = positions.clamp(max=self.max_positions - 1)
            live = state.mask[:, None, None, state.start : state.end]
            mask4 = _additive(live, state.k.dtype)  # (N, 1, 1, T)
            hidden = self._gpt2_step(model, state, input_ids[:, -1], positions[:, 0], mask4)  # (N, H)
            state.next_pos = state.next_pos + 1
            if not bool(new.any()):
                return model.lm_head(hidden), hidden
        return self._static_prefill(model, state, window, new, hidden)

    def _static_alloc(self, model: nn.Module, state: _SlotCache, n: int, width: int) -> None:
        """(Re)allocate the static cache for ``n`` slots of width ``width`` if its shape changed."""
        slack = width if self.cache_slack is None else self.cache_slack
        cfg = model.config
        heads = cfg.n_head
        shape = (cfg.n_layer, n, heads, 2 * width + slack, cfg.n_embd // heads)
        param = model.lm_head.weight
        if state.k is None or state.k.shape != shape or state.k.device != param.device:
            # zeros, not empty: masked columns are multiplied by 0 attention, NaN would leak
            state.k = param.new_zeros(shape)
            state.v = param.new_zeros(shape)
            state.mask = None
        if state.mask is None or state.mask.shape != (shape[1], shape[3]) or state.mask.device != param.device:
            state.mask = torch.zeros(shape[1], shape[3], dtype=torch.bool, device=param.device)
            state.next_pos = torch.zeros(n, dtype=torch.long, device=param.device)
        state.cache = state.kv = state.kp = state.vp = None
        state.weights_version = self._weights_version(model)

    def _static_prefill(
        self,
        model: nn.Module,
        state: _SlotCache,
        window: _Window,
        new: torch.Tensor,
        step_hidden: torch.Tensor | None,
    ) -> _Pair:
        """Prefill the ``new`` slots into columns ``[end - w, end)`` of their rows; returns the
        (logits, hidden) of every slot (the others' from ``step_hidden``, the step's).

        Each distinct window runs once, in chunks of windows (:func:`_prefill_chunks`), each
        chunk only as wide as its longest window: a window's keys/values fill the last
        columns of its rows, and the columns left of a short window stay masked."""
        input_ids, attention_mask = window  # (N, L), (N, L)
        if state.kp is not None:  # a partial prefill: every row gets its prompt columns back
            self._ungroup(state)
        rows = torch.nonzero(new).squeeze(1)
        counts = attention_mask[rows].sum(-1)  # (n_new,)
        w = max(int(counts.max()), 1)
        mask = attention_mask[rows, -w:].bool()  # (n_new, w)
        state.mask[rows] = False
        state.mask[rows, state.end - w : state.end] = mask
        state.start = min(state.start, state.end - w)
        state.next_pos[rows] = counts
        # Slots showing the same window (the k samples of a prompt) are prefilled once; k
        # consecutive ones (every slot prefilled at once) also keep one copy of its keys/values.
        windows = torch.cat([input_ids[rows, -w:], mask.long()], 1)  # (n_new, 2w)
        group = _group_size(windows) if len(rows) == len(new) else 1
        if group > 1:
            windows = windows[::group]
            copies = torch.arange(len(windows), device=rows.device).repeat_interleave(group)
            shape = (state.k.shape[0], len(windows), state.k.shape[2], w, state.k.shape[4])
            # zeros: a chunk narrower than w leaves its groups' first columns masked, unwritten
            state.kp, state.vp = state.k.new_zeros(shape), state.v.new_zeros(shape)
        else:
            windows, copies = torch.unique(windows, dim=0, return_inverse=True)
        ids, mask = windows[:, :w], windows[:, w:].bool()  # (n_distinct, w)
        hidden = state.k.new_empty((len(ids), state.k.shape[2] * state.k.shape[4]))  # (n_distinct, H)
        for chunk, width in _prefill_chunks(mask.sum(-1)):
            c_ids, c_mask = ids[chunk, w - width :], mask[chunk, w - width :]  # (n_c, width)
            if group > 1:  # the chunk's groups' prompt columns, right-aligned in kp/vp
                keys, values, dest, gather, column = state.kp, state.vp, chunk, None, w - width
            else:  # the slots showing the chunk's windows, at the cache's newest columns
                local = torch.full((len(ids),), -1, dtype=torch.long, device=ids.device)
                local[chunk] = torch.arange(len(chunk), device=ids.device)
                gather = local[copies]  # (n_new,) the chunk's window for each slot, or -1
                sel = gather >= 0
                keys, values, dest, gather, column = state.k, state.v, rows[sel], gather[sel], state.end - width
            mask4, positions = _prefill_attention(c_mask, state.k.dtype)
            hidden[chunk] = self._gpt2_prefill(
                model, c_ids, positions, mask4, (keys, values, dest, gather, column)
            )[:, -1]
        hidden = hidden[copies]  # (n_new, H)
        if step_hidden is None:
            return model.lm_head(hidden), hidden
        step_hidden[rows] = hidden
        return model.lm_head(step_hidden), step_hidden

    @staticmethod
    def _ungroup(state: _SlotCache) -> None:
        """Copy each group's prompt keys/values into its slots' columns ``[start, split)``."""
        group = state.k.shape[1] // state.kp.shape[1]
        state.k[:, :, :, state.start : state.split] = state.kp.repeat_interleave(group, 1)
        state.v[:, :, :, state.start : state.split] = state.vp.repeat_interleave(group, 1)
        state.kp = state.vp = None

    @staticmethod
    def _gpt2_prefill(
        model: nn.Module,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask4: torch.Tensor,
        sink: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, int],
    ) -> torch.Tensor:
        """GPT-2's blocks over windows ``ids`` (n, t), as ``GPT2Model.forward`` in eval,
        attending over each other under ``mask4`` (n, 1, t, t), 0 where attended and -inf
        elsewhere: the final hidden states (n, t, H).

        ``sink = (keys, values, dest, gather, column)``: each layer's keys/values go to
        ``keys[layer, dest, :, column : column + t]`` (and ``values``), row ``dest[j]`` taking
        window ``gather[j]``'s (None: window ``j``'s).
        """
        keys, values, dest, gather, column = sink
        tr = model.transformer
        n, t = ids.shape
        x = tr.wte(ids) + tr.wpe(positions)  # (n, t, H)
        for i, block in enumerate(tr.h):
            a = block.attn
            q, k, v = a.c_attn(block.ln_1(x)).split(a.split_size, dim=2)
            q, k, v = (z.view(n, t, a.num_heads, a.head_dim).transpose(1, 2) for z in (q, k, v))
            keys[i, dest, :, column : column + t] = k if gather is None else k[gather]
            values[i, dest, :, column : column + t] = v if gather is None else v[gather]
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask4, scale=a.scaling)
            x = x + a.c_proj(y.transpose(1, 2).reshape(n, t, -1))
            x = x + block.mlp(block.ln_2(x))
        return tr.ln_f(x)

    @staticmethod
    def _gpt2_step(
        model: nn.Module, state: _SlotCache, ids: torch.Tensor, positions: torch.Tensor, mask4: torch.Tensor
    ) -> torch.Tensor:
        """One decode step of GPT-2's blocks over the newest token ``ids`` (N,) of every slot,
        as ``GPT2Model.forward`` in eval: the final hidden states (N, H).

        Keys/values go to column ``state.end - 1``; the tokens attend over the live columns
        ``[start, end)`` under ``mask4`` (N, 1, 1, T) (the prompt from ``state.kp``/``vp``
        when the slots keep it per group). Every activation is (N, H)-shaped and the linears
        are GPT-2's ``Conv1D`` as the ``addmm`` it is: at a decode step's few rows the
        modules' reshapes and calls cost as much as the arithmetic.
        """
        tr = model.transformer
        x = tr.wte(ids) + tr.wpe(positions)  # (N, H)
        n, width = x.shape
        column = state.end - 1
        for i, block in enumerate(tr.h):
            a, mlp, ln_1, ln_2 = block.attn, block.mlp, block.ln_1, block.ln_2
            h = nn.functional.layer_norm(x, (width,), ln_1.weight, ln_1.bias, ln_1.eps)
            qkv = torch.addmm(a.c_attn.bias, h, a.c_attn.weight).view(n, 3, a.num_heads, 1, a.head_dim)
            q = qkv[:, 0]  # (N, heads, 1, D)
            state.k[i, :, :, column : column + 1] = qkv[:, 1]
            state.v[i, :, :, column : column + 1] = qkv[:, 2]
            if state.kp is not None:  # the prompt once per group, the completions per slot
                y = _grouped_attention(q, state, i, mask4, a.scaling)
            else:  # on strided cache slices plain matmuls beat SDPA's kernel 2x
                k = state.k[i, :, :, state.start : state.end]
                v = state.v[i, :, :, state.start : state.end]
                y = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * a.scaling + mask4, -1) @ v
            x = x + torch.addmm(a.c_proj.bias, y.reshape(n, width), a.c_proj.weight)
            h = nn.functional.layer_norm(x, (width,), ln_2.weight, ln_2.bias, ln_2.eps)
            h = mlp.act(torch.addmm(mlp.c_fc.bias, h, mlp.c_fc.weight))
            x = x + torch.addmm(mlp.c_proj.bias, h, mlp.c_proj.weight)
        return nn.functional.layer_norm(x, (width,), tr.ln_f.weight, tr.ln_f.bias, tr.ln_f.eps)

    def _obs_tensors(self, obs: dict[str, Any]) -> _Window:
        """The observation's (input_ids, attention_mask) as long tensors (N, L), checked."""
        input_ids = _tensor(obs["input_ids"], self.device, torch.long)
        attention_mask = _tensor(obs["attention_mask"], self.device, torch.long)
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise InvalidArgument(
                "obs must hold 'input_ids' and 'attention_mask' of the same shape (N, L), got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}."
            )
        width = input_ids.shape[1]
        if self.max_positions is not None and width > self.max_positions:
            raise InvalidArgument(
                f"observation width L={width} exceeds the model's {self.max_positions} positions."
            )
        return input_ids, attention_mask

    @torch.no_grad()
    def act(
        self,
        obs: dict[str, Any],
        new_episode: Any = None,
        action_mask: Any = None,
        deterministic: bool = False,
        stats: bool = True,
        active: Any = None,
    ) -> ActOutput:
        """Choose one token for each of the ``N`` env slots of a vector-env observation.

        Args:
            obs: ``{"input_ids": (N, L) int, "attention_mask": (N, L) int}``, left-padded
                windows whose newest token is at column ``L - 1``.
            new_episode: optional (N,) bool hint, True for slots whose observation starts an
                episode (the first observation after reset or autoreset). Flagged slots are
                prefilled from their window; the others advance by their newest token (the
                previous action), and one whose window does not extend its cached context by
                that token is an error. None (the plain Gymnasium loop) decides per slot: a
                window that is the slot's last window plus the action taken from it advances
                the cache, any other is prefilled. After :meth:`reset_cache`, a change of
                ``N``, or an optimizer step (one that bumps the parameters' version counters, as
                ``LMAgent.optimizer_step`` does; torch's fused Adam alone does not: then call
                :meth:`after_update`), every slot is prefilled whatever the flags say.
            action_mask: (V,) or (N, V), nonzero for valid tokens (``info["action_mask"]``).
            deterministic: take the most likely valid token instead of sampling.
            stats: also return the actions' log-probabilities and the values (a learner's
                rollout needs them; acting alone does not).
            active: optional (N,) bool, False for slots whose steps the caller will discard
                (a rollout's slots that already finished the episode it keeps). They are
                never prefilled and never checked against their cache: each runs on in the
                batch step on whatever its cache holds, so its action, log-prob and value are
                meaningless (the caller replaces the action). The active slots' actions are
                the ones they would have been (the sampler draws for every slot).
        """
        device = self.device
        input_ids, attention_mask = self._obs_tensors(obs)
        n = input_ids.shape[0]
        state = self._states["policy"]
        if new_episode is None:
            new = ~self._extends_cache(state, input_ids, attention_mask)
        else:
            new = _tensor(new_episode, device, torch.bool).reshape(-1)
            if new.shape[0] != n:
                raise InvalidArgument(f"new_episode has {new.shape[0]} flags for {n} slots.")
        if active is not None:
            active = _tensor(active, device, torch.bool).reshape(-1)
            if active.shape[0] != n:
                raise InvalidArgument(f"active has {active.shape[0]} flags for {n} slots.")
            new = new & active

        logits, hidden = self._advance(self.model, state, input_ids, attention_mask, new, active)
        valid = self._valid_tokens(action_mask, logits.shape[:-1])  # (N, V) / (V,) or None
        if self.mask_model is not None:
            mask_logits, _ = self._advance(
                self.mask_model, self._states["mask"], input_ids, attention_mask, new, active
            )
            valid = self._nlpo_keep(mask_logits, valid)
        scaled = self._scaled(logits, valid, self.temperature)  # (N, V)
        actions = self._sample(scaled, deterministic)  # (N,)
        # what the next call's windows must extend to advance the cache (input_ids may be
        # the caller's own tensor, edited in place later: keep a copy)
        state.last_ids = input_ids.clone() if input_ids is obs["input_ids"] else input_ids
        state.last_actions = actions
        actions_np = actions.cpu().numpy().astype(np.int64)
        if not stats:
            return ActOutput(actions=actions_np, logprobs=None, values=None, logits=logits)
        logprobs = torch.log_softmax(scaled, -1).gather(-1, actions[:, None]).squeeze(-1)
        return ActOutput(
            actions=actions_np,
            logprobs=logprobs.float().cpu().numpy(),
            values=self._value(hidden).float().cpu().numpy(),
            logits=logits,
        )
