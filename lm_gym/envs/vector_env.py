"""TextGenVectorEnv: N text-generation episodes stepped together over numpy arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lm_gym import error
from lm_gym.envs.core import EpisodeScorer, action_mask_of, observation_space, resolve_task
from lm_gym.tasks.base import ENV_ARGS, RewardFn, Task, check_int

Obs = dict[str, np.ndarray]

VECTOR_ENV_ARGS = (*ENV_ARGS, "num_envs", "autoreset_mode", "copy", "max_episode_steps")
"""The vector env's own keyword arguments (the rest go to the task)."""


class TextGenVectorEnv(VectorEnv):
    """A native batch of ``num_envs`` :class:`TextGenEnv` episodes.

    Exactly the semantics of ``num_envs`` copies of :class:`TextGenEnv` (sub-env ``i``
    seeded with ``seed + i``, as Gymnasium's ``SyncVectorEnv``), without a Python loop
    over sub-envs in :meth:`step`: a step is a few array writes, plus — only for the
    episodes that end on it — decoding their texts and scoring them all with ONE batched
    call of the reward function.

    The token context lives in a ring of width ``L + slack`` shared by all slots (every
    slot appends exactly one token per step), so a step writes one column instead of
    shifting the whole ``(N, L)`` window; the window is moved back every ``slack`` steps.

    Args:
        task: as for :class:`TextGenEnv`.
        num_envs: how many episodes run side by side.
        autoreset_mode: Gymnasium's ``AutoresetMode`` (or its string value):
            ``NEXT_STEP`` (default) resets an ended sub-env on the following ``step`` (its
            action is ignored, its reward 0); ``SAME_STEP`` resets it at once and puts the
            last observation and info under ``info["final_obs"]`` / ``info["final_info"]``;
            ``DISABLED`` leaves it to ``reset(options={"reset_mask": mask})``.
        copy: return copies of the observation arrays (``True``, the default) or views of
            the env's ring that later steps overwrite (faster, for callers that consume
            each observation before the next step).
        max_episode_steps: what ``gym.make_vec(id, max_episode_steps=k)`` (or a spec with a
            time limit) passes: the same as a ``TimeLimit(k)`` around each sub-env, as
            ``SyncVectorEnv`` of the same id has. A sub-env cut by it is ``truncated`` and
            **not scored** (its reward is 0.0 plus any dense shaping, its info has no
            ``text``/``reward_components``), exactly like the Sync env, whose TimeLimit
            ends the episode from outside the text env. An episode that ends by itself on
            that step (EOS, or the ``max_new_tokens`` budget) is scored as usual. To score
            completions cut at ``k`` tokens, pass ``max_new_tokens=k`` instead.
        reward, reward_weights, render_mode, **task_kwargs: as for :class:`TextGenEnv`.

    Errors follow Gymnasium's vector envs: ``step`` with a scalar or a non-integer batch
    raises :class:`~lm_gym.error.InvalidActionType` (a ``TypeError``); a ``reset_mask`` that
    is not a bool ndarray raises :class:`~lm_gym.error.InvalidArgumentType` (a ``TypeError``),
    one of the wrong shape or without a True value :class:`~lm_gym.error.InvalidArgument`.
    ``reset(seed=int)`` seeds ``np_random`` / ``np_random_seed`` through the base class.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        task: str | type[Task] | Task,
        num_envs: int = 1,
        *,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        max_episode_steps: int | None = None,
        reward: RewardFn | None = None,
        reward_weights: Mapping[str, float] | None = None,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise error.InvalidArgument(f"num_envs must be a positive integer, got {num_envs!r}")
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            valid = [m.value for m in AutoresetMode]
            raise error.InvalidArgument(
                f"autoreset_mode={autoreset_mode!r} is not valid; use one of {valid}"
            ) from None
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise error.UnsupportedRenderMode(
                f"render_mode={render_mode!r} is not supported; valid: {self.metadata['render_modes']} or None"
            )
        if max_episode_steps is not None:
            check_int("max_episode_steps", max_episode_steps, low=1)
        self.max_episode_steps = max_episode_steps
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = render_mode
        self.num_envs = int(num_envs)
        self.copy = copy
        self.task = resolve_task(task, task_kwargs, VECTOR_ENV_ARGS)
        self.scorer = EpisodeScorer(self.task, reward, reward_weights)

        tok = self.task.tokenizer
        self.vocab_size = self.task.vocab_size
        self.max_new_tokens = self.task.max_new_tokens
        self.seq_len = L = self.task.max_prompt_tokens + self.max_new_tokens
        self.eos_token_id, self.pad_token_id = int(tok.eos_token_id), int(tok.pad_token_id)
        self.single_action_space = spaces.Discrete(self.vocab_size)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_observation_space = observation_space(self.vocab_size, L)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        mask = action_mask_of(self.task, self.vocab_size)
        self._action_mask = mask
        if mask is not None:
            batched = np.broadcast_to(mask, (self.num_envs, self.vocab_size))
            self._mask_info = {"action_mask": batched, "_action_mask": np.ones(self.num_envs, dtype=bool)}
        else:
            self._mask_info = {}

        n = self.num_envs
        self._width = L + max(64, L)
        self._ids = np.full((n, self._width), self.pad_token_id, dtype=np.int64)  # (N, W)
        self._attn = np.zeros((n, self._width), dtype=np.int8)  # (N, W)
        self._t = 0  # the window is columns [t, t + L)
        self._lengths = np.zeros(n, dtype=np.int64)  # (N,)
        self._needs_reset = np.zeros(n, dtype=bool)  # ended on the previous step
        self._any_needs_reset = False
        self._prompts: list[str] = [""] * n
        self._metas: list[dict[str, Any]] = [{} for _ in range(n)]
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._started = False

    # -- Gymnasium API --------------------------------------------------------------

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, (int, np.integer)):
            super().reset(seed=int(seed))  # np_random and np_random_seed, as Gymnasium's
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise error.InvalidArgument(
                    f"seed as a list must have num_envs={n} entries, got {len(seeds)}"
                )
        reset_mask = None if options is None else options.get("reset_mask")
        reset_mask = np.ones(n, dtype=bool) if reset_mask is None else self._check_reset_mask(reset_mask)
        for i in np.flatnonzero(reset_mask):
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
        self._needs_reset[reset_mask] = False
        self._any_needs_reset = bool(self._needs_reset.any())
        self._started = True
        infos: dict[str, Any] = {}
        self._reset_slots(np.flatnonzero(reset_mask), infos, with_mask=True)
        return self._obs(), infos

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise error.ResetNeeded("step() called before reset(); call reset() first")
        actions = self._check_actions(actions)
        L = self.seq_len
        was_ended = self._needs_reset
        any_reset = self._any_needs_reset
        if any_reset and self.autoreset_mode == AutoresetMode.DISABLED:
            raise error.ResetNeeded(
                f"step() called on sub-envs {np.flatnonzero(was_ended).tolist()} whose episodes "
                "ended; with autoreset DISABLED call reset(options={'reset_mask': mask}) first"
            )

        # Append the action to every slot's window: the ring moves one column. The window
        # always holds the whole episode, so the completion is its last `lengths` tokens.
        if self._t + L >= self._width:
            self._ids[:, : L - 1] = self._ids[:, self._t + 1 : self._t + L]
            self._attn[:, : L - 1] = self._attn[:, self._t + 1 : self._t + L]
            self._t = -1
        self._t += 1
        self._ids[:, self._t + L - 1] = actions
        self._attn[:, self._t + L - 1] = 1
        self._lengths += 1

        terminated = actions == self.eos_token_id
        truncated = self._lengths >= self.max_new_tokens
        truncated &= ~terminated
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        if any_reset:  # NEXT_STEP: these slots ignore their action and start anew
            terminated[was_ended] = False
            truncated[was_ended] = False
        if self.task.dense:
            rewards += self._dense_rewards(~was_ended if any_reset else None)
        scored = terminated | truncated  # ended by the text env itself
        if self.max_episode_steps is not None:  # a TimeLimit on each sub-env: cut, not scored
            cut = self._lengths >= self.max_episode_steps
            if any_reset:
                cut[was_ended] = False
            truncated |= cut
        ended = terminated | truncated
        any_ended = bool(ended.any())
        infos: dict[str, Any] = dict(self._mask_info)

        if any_ended:
            self._finish(np.flatnonzero(ended), scored, rewards, infos)
        if any_reset:
            self._reset_slots(np.flatnonzero(was_ended), infos, with_mask=False)
        if any_ended and self.autoreset_mode == AutoresetMode.SAME_STEP:
            self._reset_slots(np.flatnonzero(ended), infos, with_mask=False)
            any_ended = False
        self._needs_reset, self._any_needs_reset = ended, any_ended
        return self._obs(), rewards, terminated, truncated, infos

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode == "ansi":
            texts = self._completions(np.arange(self.num_envs))
            return tuple(p + self.task.tokenizer.decode(c) for p, c in zip(self._prompts, texts))
        return None

    def close_extras(self, **kwargs: Any) -> None:
        pass

    # -- extras ---------------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """Valid actions of every sub-env, bool (N, V)."""
        if self._action_mask is None:
            return np.ones((self.num_envs, self.vocab_size), dtype=bool)
        return np.broadcast_to(self._action_mask.astype(bool), (self.num_envs, self.vocab_size)).copy()

    @property
    def prompts(self) -> list[str]:
        """The current prompt of each sub-env."""
        return list(self._prompts)

    # -- internals ------------------------------------------------------------------

    def _check_reset_mask(self, mask: Any) -> np.ndarray:
        """A valid ``options["reset_mask"]``, checked as ``SyncVectorEnv`` does."""
        n = self.num_envs
        valid = f"a bool numpy array of shape ({n},) with at least one True"
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            what = f"dtype {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__
            raise error.InvalidArgumentType(f"options['reset_mask'] must be {valid}, got {what}: {mask!r}")
        if mask.shape != (n,) or not mask.any():
            raise error.InvalidArgument(f"options['reset_mask'] must be {valid}, got {mask!r}")
        return mask

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or a.dtype.kind not in "iu":
            raise error.InvalidActionType(
                f"actions must be an integer array of shape ({self.num_envs},) with token ids in "
                f"[0, {self.vocab_size - 1}], got {type(actions).__name__} of shape {a.shape} "
                f"and dtype {a.dtype}"
            )
        # one reduction: as unsigned, a negative id is huge
        if (a.view(np.uint64) if a.dtype == np.int64 else a.astype(np.uint64)).max() >= self.vocab_size:
            bad = a[(a < 0) | (a >= self.vocab_size)][0]
            raise error.InvalidAction(
                f"Action {int(bad)} is outside the action space Discrete({self.vocab_size}): "
                f"valid token ids are 0 .. {self.vocab_size - 1}"
            )
        return a.astype(np.int64, copy=False)

    def _window(self) -> slice:
        return slice(self._t, self._t + self.seq_len)

    def _obs(self) -> Obs:
        w = self._window()
        ids, attn = self._ids[:, w], self._attn[:, w]
        if self.copy:
            ids, attn = ids.copy(), attn.copy()
        return {"input_ids": ids, "attention_mask": attn}

    def _reset_slots(self, slots: np.ndarray, infos: dict[str, Any], *, with_mask: bool) -> None:
        """Start new episodes in ``slots``; ``with_mask`` adds their action masks to ``infos``
        (``step`` has already put every sub-env's mask there)."""
        w = self._window()
        prompts = []
        for i in slots:
            prompt = self.task.sample(self._rngs[i])
            self._prompts[i], self._metas[i] = prompt.text, prompt.meta
            ids = self.task.encode_prompt(prompt.text)
            start = w.stop - len(ids)
            self._ids[i, w.start : start] = self.pad_token_id
            self._attn[i, w.start : start] = 0
            self._ids[i, start : w.stop] = ids
            self._attn[i, start : w.stop] = 1
            prompts.append(prompt.text)
        self._lengths[slots] = 0
        self._put(infos, "prompt", slots, prompts)
        if with_mask and self._action_mask is not None:
            self._put(infos, "action_mask", slots, self._action_mask)

    def _finish(
        self, slots: np.ndarray, scored: np.ndarray, rewards: np.ndarray, infos: dict[str, Any]
    ) -> None:
        """Lay out the infos of the episodes that ended on this step as Gymnasium's vector
        envs do (an array and a ``_key`` mask per key) and score those the text env ended
        itself (``scored``; not those a time limit cut) in one batched call."""
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            w = self._window()
            final_obs = infos.setdefault("final_obs", np.full(self.num_envs, None, dtype=object))
            for i in slots:
                final_obs[i] = {"input_ids": self._ids[i, w].copy(), "attention_mask": self._attn[i, w].copy()}
            self._mark(infos, "final_obs", slots)
            target = infos.setdefault("final_info", {})
            self._mark(infos, "final_info", slots)
            if self._action_mask is not None:
                self._put(target, "action_mask", slots, self._action_mask)
        else:
            target = infos
        if self.max_episode_steps is not None:
            slots = slots[scored[slots]]
            if not len(slots):
                return
        decode = self.task.tokenizer.decode
        texts = [decode(ids) for ids in self._completions(slots)]
        prompts = [self._prompts[i] for i in slots]
        scores, comps = self.scorer(prompts, texts, [self._metas[i] for i in slots])
        rewards[slots] += scores
        self._put(target, "text", slots, texts)
        self._put(target, "prompt", slots, prompts)
        components = target.setdefault("reward_components", {})
        self._mark(target, "reward_components", slots)
        for key in self.scorer.component_names:
            self._put(components, key, slots, comps[key], dtype=np.float64)

    def _put(
        self, infos: dict[str, Any], key: str, slots: np.ndarray, values: Any, dtype: Any = None
    ) -> None:
        """``infos[key][slots] = values`` and ``infos["_" + key][slots] = True``."""
        arr = infos.get(key)
        if arr is None:
            if dtype is not None:
                arr = np.zeros(self.num_envs, dtype=dtype)
            elif isinstance(values, np.ndarray):  # one array per sub-env, e.g. the action mask
                arr = np.zeros((self.num_envs, *values.shape), dtype=values.dtype)
            else:
                arr = np.full(self.num_envs, None, dtype=object)
            infos[key] = arr
        arr[slots] = values
        self._mark(infos, key, slots)

    def _mark(self, infos: dict[str, Any], key: str, slots: np.ndarray) -> None:
        mask = infos.get("_" + key)
        if mask is None:
            mask = infos["_" + key] = np.zeros(self.num_envs, dtype=bool)
        mask[slots] = True

    def _completions(self, slots: np.ndarray) -> list[list[int]]:
        """The token ids each slot has emitted in its current episode (the window's tail)."""
        end = self._t + self.seq_len
        return [self._ids[i, end - self._lengths[i] : end].tolist() for i in slots]

    def _dense_rewards(self, active: np.ndarray | None) -> np.ndarray:
        meta_keys = self._metas[0].keys()
        meta = {k: [m[k] for m in self._metas] for k in meta_keys}
        completion = np.zeros((self.num_envs, self.max_new_tokens), dtype=np.int64)  # (N, T)
        for i, ids in enumerate(self._completions(np.arange(self.num_envs))):
            completion[i, : len(ids)] = ids
        r = np.asarray(self.task.dense_reward(completion, self._lengths, meta), dtype=np.float64)
        if active is not None:
            r = np.where(active, r, 0.0)
        return r

