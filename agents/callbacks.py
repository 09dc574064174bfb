"""EvalCallback: periodic evaluation during ``learn``, with a held-out gold reward and the KL
to the reference, for studying reward over-optimisation (Gao et al. 2022, "Scaling Laws
for Reward Model Overoptimization", arxiv.org/abs/2210.10760).

The agent trains on the env's reward (the *proxy*, e.g. ``gym.make(id,
reward=RewardModel("builtin", label="positive"))``); every ``eval_freq`` env steps the
callback runs :func:`agents.evaluate` on a fixed set of episodes and scores the same
completions with a second, independent *gold* reward the agent never sees. Plotting both
against the KL to the reference shows where optimising the proxy stops improving the gold::

    cb = agents.EvalCallback("lm_gym/SentimentContinuation-v0", eval_freq=4096, gold_reward="vader",
                             env_kwargs={"reward": proxy, "split": "test"})
    agent.learn(40_000, callback=cb)
    cb.evaluations  # [{"timesteps": 4096, "eval/reward": ..., "eval/gold_reward": ..., "eval/kl": ...}, ...]

As Stable-Baselines3's ``EvalCallback``, but in lm_gym's callback shape ``cb(agent, metrics)``:
an evaluation's metrics are added to that update's ``metrics`` (so a callback after it, such
as the bench's curve writer, records them) and kept in :attr:`EvalCallback.evaluations`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from agents.base import Episode, evaluate, make_vec_env
from lm_gym import error
from lm_gym.rewards import RewardFn, reward_from_spec, validate_scores

__all__ = ["EvalCallback"]


class EvalCallback:
    """Evaluate every ``eval_freq`` env steps; log ``eval/reward``, ``eval/gold_reward``, ``eval/kl``.

    Args:
        env: the evaluation env: an id (built once, with ``env_kwargs``), an env or a vector
            env; default: the agent's own env id and settings.
        eval_freq: env steps between evaluations (the first after ``eval_freq`` steps);
            None: only when :meth:`evaluate` is called.
        n_eval_episodes: episodes per evaluation; the same ones every time (``seed``).
        seed: seeds the evaluation episodes.
        gold_reward: the held-out reward: a callable ``fn(prompts, completions) -> scores``
            or a spec of :func:`lm_gym.rewards.reward_from_spec` (``"vader"``,
            ``"classifier:label=positive"``, ...). It is called on the evaluation's prompts
            and completions only (no per-prompt metadata), so it must not need any.
        kl_estimator: ``"k1"`` or ``"k3"``, see :meth:`agents.lm_agent.LMAgent.sequence_kl`.
        n_envs: env slots when ``env`` is an id.
        env_kwargs: ``gym.make_vec`` keyword arguments when ``env`` is an id.

    ``eval/reward`` is the env's mean episode reward (the proxy the agent trains on);
    ``eval/gold_reward`` the gold reward's mean on the same completions; ``eval/kl`` the
    mean over completions of their summed per-token KL to the agent's reference (for agents
    with ``sequence_kl``, the LM learners; absent otherwise).
    """

    def __init__(
        self,
        env: str | gym.Env | VectorEnv | None = None,
        *,
        eval_freq: int | None = None,
        n_eval_episodes: int = 100,
        seed: int | None = 0,
        gold_reward: str | RewardFn | None = None,
        kl_estimator: str = "k1",
        n_envs: int = 8,
        env_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        for name, value in (("eval_freq", eval_freq), ("n_eval_episodes", n_eval_episodes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise error.InvalidArgument(f"{name} must be a positive integer{' or None' if name == 'eval_freq' else ''}, got {value!r}")
        if kl_estimator not in ("k1", "k3"):
            raise error.unknown("KL estimator", kl_estimator, ("k1", "k3"))
        self.env, self.env_kwargs, self.n_envs = env, dict(env_kwargs or {}), n_envs
        self.eval_freq, self.n_eval_episodes, self.seed = eval_freq, int(n_eval_episodes), seed
        self.gold = None if gold_reward is None else reward_from_spec(gold_reward)
        self.kl_estimator = kl_estimator
        self.evaluations: list[dict[str, float]] = []
        """One dict per evaluation: ``timesteps`` and the ``eval/*`` metrics."""
        self._eval_env: VectorEnv | None = None
        self._next = eval_freq

    def _env_for(self, agent: Any) -> VectorEnv | str | gym.Env:
        """The evaluation env, built once (reusing it keeps its models loaded)."""
        if self._eval_env is None:
            env, kwargs = self.env, self.env_kwargs
            if env is None:
                env = getattr(agent, "env_id", None)
                kwargs = {**getattr(agent, "env_kwargs", {}), **kwargs}
                if env is None:
                    raise error.InvalidArgument("EvalCallback needs env= for an agent built from an env object")
            self._eval_env = make_vec_env(env, self.n_envs if isinstance(env, str) else 1, **kwargs)
        return self._eval_env

    def evaluate(self, agent: Any) -> dict[str, float]:
        """Evaluate ``agent`` now; returns (and records in :attr:`evaluations`) the ``eval/*`` metrics."""
        result = evaluate(agent, self._env_for(agent), n_episodes=self.n_eval_episodes, seed=self.seed,
                          return_episodes=True)
        metrics = {"eval/reward": float(result["mean_reward"]), **self.score(agent, result["episodes"])}
        self.evaluations.append({"timesteps": int(getattr(agent, "num_timesteps", 0) or 0), **metrics})
        return metrics

    def score(self, agent: Any, episodes: Sequence[Episode]) -> dict[str, float]:
        """``eval/gold_reward`` (with a gold reward) and ``eval/kl`` (for an agent with
        ``sequence_kl``) of finished evaluation episodes."""
        out: dict[str, float] = {}
        if self.gold is not None:
            scores = self.gold([e.prompt for e in episodes], [e.text for e in episodes])
            out["eval/gold_reward"] = float(validate_scores(scores, len(episodes), f"gold reward {self.gold!r}").mean())
        if callable(getattr(agent, "sequence_kl", None)):
            kl = agent.sequence_kl([e.prompt_ids for e in episodes], [e.completion_ids for e in episodes],
                                   estimator=self.kl_estimator)
            out["eval/kl"] = float(np.mean(kl))
        return out

    def __call__(self, agent: Any, metrics: dict[str, Any]) -> bool:
        """After an update: evaluate once ``eval_freq`` more env steps have passed."""
        steps = int(getattr(agent, "num_timesteps", 0) or 0)
        if self.eval_freq is not None and steps >= self._next:
            metrics.update(self.evaluate(agent))
            self._next = (steps // self.eval_freq + 1) * self.eval_freq
        return True
