"""Rollouts of whole episodes through the vector env API, into one batch-major tensor batch.

**Layout.** A rollout is ``ceil(batch_size / n_envs)`` *rounds*. A round resets every env
slot with a seed drawn from the agent's RNG (with ``samples_per_prompt = k`` each seed is
repeated over ``k`` consecutive slots, so each group of ``k`` rows shares its prompt) and
steps until every slot has finished its first episode; steps a slot takes after that
(autoreset already began its next episode) are dropped, as ``model.generate`` pads finished
rows. Truncation at the token budget is terminal for learning: the env scores the finished
text then, so nothing is bootstrapped (as TRL and RL4LMs).

The batch holds O(B x length) numbers, never x vocabulary: prompts left-padded to ``P``
columns, completions right-padded to ``C``, as torch tensors on the policy's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from agents.base import autoreset_mode_of
from agents.lm_policy import Evaluation, LMPolicy
from lm_gym import error

__all__ = ["RolloutBatch", "collect", "teacher_forced"]


@dataclass
class RolloutBatch:
    """``B`` finished episodes; every tensor is batch-major on the policy's device."""

    input_ids: torch.Tensor
    """(B, P + C) long: the prompt (left-padded) then the completion (right-padded)."""
    attention_mask: torch.Tensor
    """(B, P + C) long: 1 on real tokens."""
    completion_mask: torch.Tensor
    """(B, C) float: 1 on generated tokens."""
    logprobs: torch.Tensor
    """(B, C) float: log pi_old(a_t | s_t) at sampling time."""
    values: torch.Tensor
    """(B, C) float: V_old(s_t) at sampling time."""
    rewards: torch.Tensor
    """(B, C) float: the env's per-step rewards (the task's score at the last token)."""
    terminated: torch.Tensor
    """(B,) bool: the episode ended with EOS (False: truncated at the token budget)."""
    group_size: int = 1
    """k: rows ``k g .. k g + k - 1`` are completions of one prompt."""
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> (B,) the reward components the env reported for each episode."""
    ref_logprobs: torch.Tensor | None = None
    """(B, C) float: log pi_ref(a_t | s_t), when the agent has a reference."""
    greedy_scores: torch.Tensor | None = None
    """(B,) the score of the greedy completion of each row's prompt (ReMax's baseline)."""
    env_steps: int = 0
    """Vector-env steps x slots spent on this batch (dropped steps included)."""

    @property
    def prompt_width(self) -> int:
        return self.input_ids.shape[1] - self.completion_mask.shape[1]

    @property
    def scores(self) -> torch.Tensor:
        """(B,) each episode's return."""
        return self.rewards.sum(1)

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) each completion's number of tokens."""
        return self.completion_mask.sum(1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def nbytes(self) -> int:
        tensors = [getattr(self, f.name) for f in fields(self)]
        tensors += list(self.components.values())
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    def select(self, rows: torch.Tensor, group_size: int = 1) -> RolloutBatch:
        """The rows ``rows``: a minibatch (``group_size`` 1: groups may be split), or whole
        groups kept in order (pass their ``group_size``)."""
        def pick(x: Any) -> Any:
            return x[rows] if isinstance(x, torch.Tensor) else x

        picked = {f.name: pick(getattr(self, f.name)) for f in fields(self) if f.name != "components"}
        return RolloutBatch(**{**picked, "group_size": group_size, "components": {k: v[rows] for k, v in self.components.items()}})

    @staticmethod
    def cat(batches: list[RolloutBatch]) -> RolloutBatch:
        """The batches' rows one after another (prompts re-padded on the left, completions on
        the right); ``env_steps`` add up. Every batch must have the same group size."""
        if len({b.group_size for b in batches}) != 1:
            raise error.InvalidArgument("cannot concatenate rollouts with different group sizes")
        p = max(b.prompt_width for b in batches)
        c = max(b.completion_mask.shape[1] for b in batches)
        parts = [_pad(b, p, c) for b in batches]
        out: dict[str, Any] = {}
        for f in fields(RolloutBatch):
            values = [getattr(b, f.name) for b in parts]
            if f.name == "components":
                out[f.name] = {k: torch.cat([v[k] for v in values]) for k in values[0]}
            elif isinstance(values[0], torch.Tensor):
                out[f.name] = torch.cat(values)
            elif f.name == "env_steps":
                out[f.name] = sum(values)
            else:
                out[f.name] = values[0]
        return RolloutBatch(**out)


def _pad(b: RolloutBatch, p: int, c: int) -> RolloutBatch:
    """``b`` with ``p`` prompt columns and ``c`` completion columns."""
    dp, dc = p - b.prompt_width, c - b.completion_mask.shape[1]
    if dp == 0 and dc == 0:
        return b

    def seq(x: torch.Tensor) -> torch.Tensor:  # (B, P + C): pad left by dp, right by dc
        return torch.nn.functional.pad(x, (dp, dc))

    def comp(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else torch.nn.functional.pad(x, (0, dc))

    return replace(
        b, input_ids=seq(b.input_ids), attention_mask=seq(b.attention_mask),
        completion_mask=comp(b.completion_mask), logprobs=comp(b.logprobs), values=comp(b.values),
        rewards=comp(b.rewards), ref_logprobs=comp(b.ref_logprobs),
    )


def teacher_forced(
    policy: LMPolicy,
    batch: RolloutBatch,
    action_mask: np.ndarray | None,
    stats: bool = True,
    entropy_grad: bool = True,
) -> Evaluation:
    """ONE teacher-forced pass of ``policy`` over the batch's completions (each distinct prompt
    run once, the LM head on the completion columns only): the :class:`Evaluation`'s fields
    (B, C); the log-probs alone with ``stats=False`` (a reference's); the entropy without
    gradients with ``entropy_grad=False``. Padding targets are a valid token, so no ``-inf``
    enters a masked sum."""
    return policy.completion_logprobs(
        batch.input_ids, batch.attention_mask, batch.completion_mask.shape[1], action_mask=action_mask,
        stats=stats, entropy_grad=entropy_grad,
    )


# -- playing rounds -------------------------------------------------------------------------


@dataclass
class _Round:
    """What one round of ``N`` slots recorded, per step (N, S) as numpy."""

    start_ids: np.ndarray
    start_mask: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray | None
    values: np.ndarray | None
    rewards: np.ndarray
    lengths: np.ndarray
    """(N,) steps of each slot's first episode."""
    terminated: np.ndarray
    components: dict[str, np.ndarray]


def _play(
    env: VectorEnv, policy: LMPolicy, seeds: np.ndarray, action_mask: Any, deterministic: bool, filler: int | None
) -> _Round:
    """Reset every slot with ``seeds`` and step until each has finished its first episode.

    A slot that has finished it steps on with ``filler`` (a valid token that is not EOS, so
    the episode autoreset began can neither end nor be scored within the round) and costs
    the policy no prefill (``LMPolicy.act``'s ``active``); ``filler`` None: it samples on.
    """
    n = env.num_envs
    same_step = autoreset_mode_of(env) == AutoresetMode.SAME_STEP
    obs, _ = env.reset(seed=[int(s) for s in seeds])
    policy.reset_cache()
    start_ids, start_mask = obs["input_ids"].copy(), obs["attention_mask"].copy()
    steps: list[tuple[np.ndarray, Any, Any, np.ndarray]] = []
    done_at = np.full(n, -1)
    terminated_first = np.zeros(n, dtype=bool)
    components: dict[str, np.ndarray] = {}
    new, pending = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)  # pending: NEXT_STEP resets
    while (active := done_at < 0).any():
        out = policy.act(obs, new, action_mask=action_mask, deterministic=deterministic, stats=not deterministic,
                         active=None if filler is None else active)
        actions = out.actions if filler is None or active.all() else np.where(active, out.actions, filler)
        obs, reward, terminated, truncated, infos = env.step(actions)
        steps.append((actions, out.logprobs, out.values, np.asarray(reward, dtype=np.float32)))
        ended = (terminated | truncated) & ~pending
        final = infos.get("final_info", {}) if same_step else infos
        for i in np.flatnonzero(ended & active):
            done_at[i], terminated_first[i] = len(steps) - 1, terminated[i]
            for key, v in final.get("reward_components", {}).items():
                if not key.startswith("_"):
                    components.setdefault(key, np.zeros(n, dtype=np.float32))[i] = v[i]
        new, pending = (ended, pending) if same_step else (pending, ended)
    def stack(k: int) -> np.ndarray | None:
        return None if steps[0][k] is None else np.stack([s[k] for s in steps], 1)

    return _Round(
        start_ids=start_ids, start_mask=start_mask, actions=stack(0), logprobs=stack(1), values=stack(2),
        rewards=stack(3), lengths=done_at + 1, terminated=terminated_first, components=components,
    )


def _filler(eos_token_id: int | None, action_mask: np.ndarray | None, vocab_size: int) -> int | None:
    """The lowest token id that is valid and not EOS (None: no EOS given, or no such token)."""
    if eos_token_id is None:
        return None
    valid = np.ones(vocab_size, dtype=bool) if action_mask is None else np.asarray(action_mask).reshape(-1, vocab_size).all(0)
    valid[eos_token_id] = False
    ids = np.flatnonzero(valid)
    return int(ids[0]) if len(ids) else None


def _to_batch(r: _Round, group_size: int, device: torch.device) -> RolloutBatch:
    """One round as a :class:`RolloutBatch`: prompts trimmed of all-padding columns,
    completions cut at each slot's episode end."""
    p = max(int(r.start_mask.sum(1).max()), 1)
    c = int(r.lengths.max())
    mask = np.arange(c)[None, :] < r.lengths[:, None]  # (N, C)

    def cut(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(x[:, :c] * mask, device=device).to(dtype)

    ids = torch.cat([torch.as_tensor(r.start_ids[:, -p:], device=device), cut(r.actions, torch.long)], 1)
    attn = torch.cat([torch.as_tensor(r.start_mask[:, -p:], device=device).long(), cut(mask, torch.long)], 1)
    return RolloutBatch(
        input_ids=ids, attention_mask=attn, completion_mask=cut(mask, torch.float32),
        logprobs=cut(r.logprobs, torch.float32), values=cut(r.values, torch.float32),
        rewards=cut(r.rewards, torch.float32), terminated=torch.as_tensor(r.terminated, device=device),
        group_size=group_size,
        components={k: torch.as_tensor(v, device=device) for k, v in r.components.items()},
        env_steps=int(r.rewards.shape[1]) * len(r.lengths),
    )


def collect(
    env: VectorEnv,
    policy: LMPolicy,
    rng: np.random.Generator,
    *,
    batch_size: int,
    group_size: int = 1,
    action_mask: np.ndarray | None = None,
    reference: LMPolicy | None = None,
    greedy_baseline: bool = False,
    eos_token_id: int | None = None,
) -> RolloutBatch:
    """Roll out ``ceil(batch_size / n_envs)`` rounds (module docstring) into one batch.

    With ``eos_token_id`` (the env's), a slot that finished its episode steps on with a fixed
    valid non-EOS token until the round ends, without the policy prefilling the episode
    autoreset began (those steps are dropped anyway); the kept episodes are the same.

    With ``reference``, ``ref_logprobs`` come from ONE teacher-forced forward of it over the
    batch. With ``greedy_baseline``, every round is replayed from the same seeds with greedy
    decoding, and each row's ``greedy_scores`` is the greedy completion's score (ReMax).
    """
    n = env.num_envs
    if n % group_size:
        raise error.InvalidArgument(f"samples_per_prompt={group_size} must divide the number of env slots n_envs={n}")
    if autoreset_mode_of(env) == AutoresetMode.DISABLED:
        raise error.InvalidArgument("LM agents need a vector env with autoreset (SAME_STEP or NEXT_STEP), got DISABLED")
    rounds, greedy, greedy_steps = [], [], 0
    filler = _filler(eos_token_id, action_mask, policy.vocab_size)
    for _ in range(math.ceil(batch_size / n)):
        seeds = np.repeat(rng.integers(0, 2**31 - 1, size=n // group_size), group_size)
        rounds.append(_to_batch(_play(env, policy, seeds, action_mask, False, filler), group_size, policy.device))
        if greedy_baseline:
            g = _play(env, policy, seeds, action_mask, True, filler)
            greedy.append((g.rewards * (np.arange(g.rewards.shape[1])[None] < g.lengths[:, None])).sum(1))
            greedy_steps += g.rewards.size
    batch = RolloutBatch.cat(rounds)
    if greedy_baseline:
        batch.greedy_scores = torch.as_tensor(np.concatenate(greedy), device=policy.device, dtype=torch.float32)
        batch.env_steps += greedy_steps
    if reference is not None:
        with torch.no_grad():
            ev = teacher_forced(reference, batch, action_mask, stats=False)
            batch.ref_logprobs = (ev.logprobs * batch.completion_mask).float()
    return batch


def rollout_metrics(batch: RolloutBatch) -> dict[str, float]:
    """``rollout/*`` and ``reward/<component>`` means of a batch."""
    scores = batch.scores
    out = {
        "rollout/ep_rew_mean": float(scores.mean()),
        "rollout/ep_rew_std": float(scores.std(unbiased=False)),
        "rollout/ep_len_mean": float(batch.lengths.mean()),
    }
    out.update({f"reward/{k}": float(v.mean()) for k, v in batch.components.items()})
    return out

