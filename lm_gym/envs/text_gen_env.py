"""TextGenEnv: one episode of text generation, one token per step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lm_gym import error
from lm_gym.envs.core import EpisodeScorer, action_mask_of, observation_space, resolve_task
from lm_gym.tasks.base import RewardFn, Task

Obs = dict[str, np.ndarray]


def check_action(action: Any, vocab_size: int) -> int:
    """An action as a Python int in ``[0, vocab_size)``, or :class:`InvalidAction`."""
    if type(action) in (int, np.int64) or (  # the common cases first: a cheap exact test
        isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_))
    ):
        a = int(action)
    elif isinstance(action, np.ndarray) and action.size == 1 and np.issubdtype(action.dtype, np.integer):
        a = int(action.reshape(()))
    else:
        raise error.InvalidAction(
            f"Action {action!r} (type {type(action).__name__}) is not an integer token id; "
            f"valid actions are integers in [0, {vocab_size - 1}] (Discrete({vocab_size}))"
        )
    if not 0 <= a < vocab_size:
        raise error.InvalidAction(
            f"Action {a} is outside the action space Discrete({vocab_size}): valid token ids "
            f"are 0 .. {vocab_size - 1}"
        )
    return a


class TextGenEnv(gym.Env[Obs, np.int64]):
    """Text generation as an episodic MDP: the state is the token context, the action is
    the next token, the reward scores the finished text.

    ## Action Space
    ``Discrete(V)``, V the vocabulary size (for text tasks, the policy model's logit
    width). When the task restricts the vocabulary, ``info["action_mask"]`` (int8, shape
    (V,)) and :meth:`action_masks` mark the valid tokens (the sb3-contrib convention);
    PAD is never valid. A masked action is still accepted and appended (a random agent
    sampling ``action_space`` must not crash the env); an action outside ``[0, V)`` or not
    an integer raises :class:`lm_gym.error.InvalidAction`.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))`` with
    ``L = max_prompt_tokens + max_new_tokens``: the prompt and the tokens emitted so far,
    LEFT-padded with PAD so the newest token is at index ``L-1``. (Box rather than
    MultiDiscrete, so Stable-Baselines3 does not one-hot it.)

    ## Rewards
    0.0 on every step but the last, unless the task declares dense shaping; on the last
    step, the task's score of the completion (e.g. the composite
    ``α·fluency + β·relevance + γ·diversity``), or the user's ``reward`` function. The last
    step's ``info`` holds ``text`` (the completion, without EOS), ``prompt``, and
    ``reward_components`` (a dict of floats with the same keys every episode).

    ## Starting State
    A prompt drawn by the task from ``self.np_random``: the same seed gives the same
    episodes.

    ## Episode End
    Terminated when the agent emits EOS; truncated when the completion reaches
    ``max_new_tokens`` tokens without EOS.

    ## Arguments
    ``task``: a Task subclass, instance or ``"module:Class"`` path (registered ids set it).
    ``reward``: replaces the task's score with ``fn(prompts, completions, **meta) -> list[float]``
    (or a spec string of :func:`lm_gym.rewards.reward_from_spec`, e.g. ``"classifier:label=positive"``).
    ``reward_weights``: reweights a composite task's components, e.g. ``{"fluency": 0.5}``.
    ``render_mode``: ``"ansi"`` (``render()`` returns the text so far) or ``"human"`` (prints it).
    Any other keyword goes to the task (``max_new_tokens``, lengths, model, ...).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        task: str | type[Task] | Task,
        *,
        reward: RewardFn | None = None,
        reward_weights: Mapping[str, float] | None = None,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise error.UnsupportedRenderMode(
                f"render_mode={render_mode!r} is not supported; valid: {self.metadata['render_modes']} or None"
            )
        self.task = resolve_task(task, task_kwargs)
        self.scorer = EpisodeScorer(self.task, reward, reward_weights)
        self.render_mode = render_mode
        tok = self.task.tokenizer
        self.vocab_size = self.task.vocab_size
        self.max_new_tokens = self.task.max_new_tokens
        self.seq_len = self.task.max_prompt_tokens + self.max_new_tokens
        self.eos_token_id, self.pad_token_id = int(tok.eos_token_id), int(tok.pad_token_id)
        self.action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = observation_space(self.vocab_size, self.seq_len)
        self._action_mask = action_mask_of(self.task, self.vocab_size)

        # The episode's tokens: the prompt ends at column L-1, step n writes column L-1+n and
        # the observation is the window [n, n+L) — a copy, never a shift.
        self._ids = np.full(self.seq_len + self.max_new_tokens, self.pad_token_id, dtype=np.int64)
        self._mask = np.zeros(self.seq_len + self.max_new_tokens, dtype=np.int8)
        self._completion: list[int] = []
        self._prompt = ""
        self._meta: dict[str, Any] = {}
        self._done = True

    # -- Gymnasium API --------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        super().reset(seed=seed)
        prompt = self.task.sample(self.np_random)
        self._prompt, self._meta = prompt.text, prompt.meta
        ids = self.task.encode_prompt(prompt.text)
        start = self.seq_len - len(ids)
        self._ids[:start] = self.pad_token_id
        self._mask[:start] = 0
        self._ids[start : self.seq_len] = ids
        self._mask[start : self.seq_len] = 1
        self._mask[self.seq_len :] = 0
        self._completion = []
        self._done = False
        if self.render_mode == "human":
            self.render()
        return self._obs(), self._reset_info()

    def step(self, action: Any) -> tuple[Obs, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise error.ResetNeeded("step() called after the episode ended; call reset() first")
        a = check_action(action, self.vocab_size)
        completion = self._completion
        completion.append(a)
        n = len(completion)
        col = self.seq_len - 1 + n
        self._ids[col] = a
        self._mask[col] = 1
        terminated = a == self.eos_token_id
        truncated = not terminated and n >= self.max_new_tokens
        info: dict[str, Any] = {}
        if self._action_mask is not None:
            info["action_mask"] = self._action_mask.copy()
        reward = 0.0
        if self.task.dense:
            ids = np.asarray(self._completion, dtype=np.int64)[None]
            reward = float(self.task.dense_reward(ids, np.array([ids.shape[1]]), {k: [v] for k, v in self._meta.items()})[0])
        if terminated or truncated:
            self._done = True
            text = self.completion_text()
            rewards, comps = self.scorer([self._prompt], [text], [self._meta])
            reward += float(rewards[0])
            info.update(text=text, prompt=self._prompt, reward_components=self.scorer.per_episode(comps, 0))
        if self.render_mode == "human":
            self.render()
        return self._obs(), reward, terminated, truncated, info

    def render(self) -> str | None:
        text = f"{self._prompt}{self.completion_text()}"
        if self.render_mode == "ansi":
            return text
        if self.render_mode == "human":
            print(text)
        return None

    # -- extras ---------------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """Valid actions as a bool array of shape (V,) (sb3-contrib's MaskablePPO calls this)."""
        if self._action_mask is None:
            return np.ones(self.vocab_size, dtype=bool)
        return self._action_mask.astype(bool)

    def completion_text(self) -> str:
        """The completion so far, decoded (EOS and PAD dropped)."""
        return self.task.tokenizer.decode(self._completion)

    @property
    def prompt(self) -> str:
        return self._prompt

    def _obs(self) -> Obs:
        n = len(self._completion)
        end = n + self.seq_len
        return {"input_ids": self._ids[n:end].copy(), "attention_mask": self._mask[n:end].copy()}

    def _reset_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"prompt": self._prompt}
        if self._action_mask is not None:
            info["action_mask"] = self._action_mask.copy()
        return info
