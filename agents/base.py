"""The Agent protocol every learner follows, the agent registry, and ``evaluate``.

The protocol is shaped like Stable-Baselines3's, so its users know it::

    agent = agents.PPO(env, **config)              # or agents.make("ppo", env, **config)
    agent.learn(total_timesteps=N, callback=None, progress_bar=True)
    action, state = agent.predict(obs, state=None, episode_start=None, deterministic=False)
    agent.save(path); agents.PPO.load(path, env=env)
    agents.evaluate(agent, env, n_episodes=100) -> dict

``env`` may be an env id, a ``gym.Env`` or a ``gym.vector.VectorEnv``; agents vectorise an
id themselves (``n_envs``). A custom agent is any object with ``predict`` (and ``learn``
to be trained by the harness); subclassing :class:`Agent` is optional.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from lm_gym import error
from lm_gym.envs import env_info

logger = logging.getLogger(__name__)

Callback = Callable[["Agent", dict[str, float]], "bool | None"]
"""Called after every update with the agent and that update's logged metrics; returning
``False`` stops ``learn`` early."""


@runtime_checkable
class SupportsPredict(Protocol):
    """The least an agent must do to be evaluated: map observations to actions."""

    def predict(
        self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[Any, Any]: ...


def make_vec_env(
    env: str | gym.Env | VectorEnv,
    n_envs: int = 1,
    *,
    autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP,
    **env_kwargs: Any,
) -> VectorEnv:
    """The vector env an agent drives.

    An id becomes the native ``TextGenVectorEnv`` with ``n_envs`` sub-envs (``env_kwargs``
    go to ``gym.make_vec``); a vector env is used as it is (any autoreset mode); a single
    env is wrapped in a one-env ``SyncVectorEnv``.
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
        raise error.InvalidArgument(f"n_envs must be a positive integer, got {n_envs!r}")
    if isinstance(env, str):
        return gym.make_vec(
            env, num_envs=int(n_envs), vectorization_mode="vector_entry_point",
            autoreset_mode=autoreset_mode, **env_kwargs,
        )
    if env_kwargs:
        raise error.InvalidArgument(
            f"env keyword arguments {sorted(env_kwargs)} only apply when env is an id, got {env!r}"
        )
    if isinstance(env, VectorEnv):
        return env
    if isinstance(env, gym.Env):
        return SyncVectorEnv([lambda: env], autoreset_mode=autoreset_mode)
    raise error.InvalidArgument(
        f"env must be an env id, a gymnasium.Env or a gymnasium.vector.VectorEnv, got {env!r}"
    )


def autoreset_mode_of(env: VectorEnv) -> AutoresetMode:
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return AutoresetMode(mode)


class Agent:
    """Base class of lm_gym's agents: env handling, seeding, the config file, the registry name.

    Subclasses implement :meth:`predict`, and :meth:`learn` if they learn. ``config`` is a
    dataclass (or dict) that :meth:`save` writes as JSON and :meth:`load` reads back.
    """

    name: ClassVar[str] = "agent"

    def __init__(
        self,
        env: str | gym.Env | VectorEnv,
        *,
        n_envs: int = 8,
        seed: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.env_id = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
        self.env_kwargs = dict(env_kwargs or {})
        self.env = make_vec_env(env, n_envs, **self.env_kwargs)
        self.n_envs = self.env.num_envs
        self.seed = seed
        self.info = env_info(self.env)
        """What the env publishes for agents (:func:`lm_gym.envs.env_info`)."""
        self.action_mask = self.info.action_mask
        self.num_timesteps = 0

    # -- the protocol -----------------------------------------------------------------

    def learn(
        self,
        total_timesteps: int,
        callback: Callback | None = None,
        progress_bar: bool = False,
        **kwargs: Any,
    ) -> Agent:
        raise NotImplementedError(f"{type(self).__name__} does not learn")

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        from agents.checkpoint import AGENT_FILE, write_json_atomic

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / AGENT_FILE, {"agent": self.name, "config": self.config_dict()})

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | VectorEnv | None = None, **overrides: Any) -> Agent:
        """Rebuild from ``path/agent.json`` (the folder must hold this agent type)."""
        from agents.checkpoint import read_agent_json

        meta = read_agent_json(path, expected=cls.name)
        config = {**meta["config"], **overrides}
        env = env if env is not None else meta["config"].get("env_id")
        if env is None:
            raise error.InvalidArgument(f"{path}: the saved agent has no env id; pass env=")
        config.pop("env_id", None)
        if not isinstance(env, str):  # a ready env already carries its settings
            config.pop("env_kwargs", None)
        return cls(env, **config)

    # -- helpers ----------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "env_kwargs": self.env_kwargs, "n_envs": self.n_envs, "seed": self.seed}


def check_obs(obs: Any, vocab_size: int) -> tuple[dict[str, np.ndarray], bool]:
    """``(batched obs, was_single)`` for an observation dict of (L,) or (N, L) arrays, checked:
    a dict with ``input_ids`` and ``attention_mask`` of one shape, ids in ``[0, vocab_size)``."""
    if not isinstance(obs, Mapping) or "input_ids" not in obs or "attention_mask" not in obs:
        got = type(obs).__name__ if not isinstance(obs, Mapping) else f"a dict with keys {sorted(obs)}"
        raise error.InvalidArgument(
            f"predict takes the env's observation dict {{'input_ids', 'attention_mask'}}, got {got}"
        )
    ids, mask = np.asarray(obs["input_ids"]), np.asarray(obs["attention_mask"])
    if ids.shape != mask.shape or ids.ndim not in (1, 2):
        raise error.InvalidArgument(
            f"input_ids {ids.shape} and attention_mask {mask.shape} must share a (L,) or (N, L) shape"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise error.InvalidArgument(f"observation holds token id {bad}, outside the vocabulary [0, {vocab_size})")
    if ids.ndim == 1:
        return {"input_ids": ids[None], "attention_mask": mask[None]}, True
    return {"input_ids": ids, "attention_mask": mask}, False


@dataclass
class RandomAgentConfig:
    """The random agent's settings."""

    seed: int | None = None
    """Seeds the draws."""
    n_envs: int = 8
    """Env slots when env is an id."""
    env_kwargs: dict | None = None
    """Keyword arguments for gym.make_vec when env is an id."""


class RandomAgent(Agent):
    """Uniform over the env's valid tokens (its action mask): the floor every learner must beat."""

    name = "random"
    config_class = RandomAgentConfig

    def __init__(self, env: str | gym.Env | VectorEnv, config: Any = None, **overrides: Any) -> None:
        from agents.config import check_types, make_config

        cfg = make_config(RandomAgentConfig, config, overrides)
        check_types(cfg)
        super().__init__(env, n_envs=cfg.n_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
        self.rng = np.random.default_rng(cfg.seed)
        vocab = self.info.vocab_size
        self.valid = np.flatnonzero(self.action_mask) if self.action_mask is not None else np.arange(vocab)

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False) -> tuple[Any, Any]:
        batch, single = check_obs(obs, self.info.vocab_size)
        actions = self.valid[self.rng.integers(0, len(self.valid), size=len(batch["input_ids"]))]
        return (actions[0] if single else actions), state


# -- evaluation ---------------------------------------------------------------------------


@dataclass
class Episode:
    """One finished evaluation episode."""

    prompt: str
    text: str
    reward: float
    """The episode's return (the sum of its rewards)."""
    components: dict[str, float] = field(default_factory=dict)
    length: int = 0
    prompt_ids: list[int] = field(default_factory=list)
    """The prompt's token ids as the agent saw them at the episode's start (padding removed)."""
    completion_ids: list[int] = field(default_factory=list)
    """The actions of the episode, in order: the completion's token ids."""


def run_episodes(
    agent: SupportsPredict,
    env: VectorEnv,
    n_episodes: int,
    *,
    seed: int | None = None,
    deterministic: bool = False,
) -> list[Episode]:
    """Run ``n_episodes`` episodes, spread evenly over the sub-envs (as SB3's
    ``evaluate_policy``, so short episodes are not over-counted)."""
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise error.InvalidArgument(f"n_episodes must be a positive integer, got {n_episodes!r}")
    n = env.num_envs
    mode = autoreset_mode_of(env)
    if mode == AutoresetMode.DISABLED:
        raise error.InvalidArgument("evaluate needs a vector env with autoreset (NEXT_STEP or SAME_STEP), got DISABLED")
    targets = np.array([(n_episodes + i) // n for i in range(n)])
    counts = np.zeros(n, dtype=np.int64)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    obs, _ = env.reset(seed=seed)
    episode_start = np.ones(n, dtype=bool)
    pending = np.zeros(n, dtype=bool)  # NEXT_STEP: ended last step, resetting on this one
    state = None
    episodes: list[Episode] = []
    prompt_ids: list[list[int]] = [[] for _ in range(n)]
    completion_ids: list[list[int]] = [[] for _ in range(n)]
    while (counts < targets).any():
        for i in np.flatnonzero(episode_start):  # the observation that starts slot i's episode
            prompt_ids[i] = obs["input_ids"][i][obs["attention_mask"][i] > 0].tolist()
            completion_ids[i] = []
        actions, state = agent.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        actions = np.asarray(actions)
        obs, rewards, terminated, truncated, infos = env.step(actions)
        live = ~pending
        returns[live] += rewards[live]
        lengths[live] += 1
        for i in np.flatnonzero(live):
            completion_ids[i].append(int(actions[i]))
        ended = (terminated | truncated) & live
        final = infos.get("final_info", {}) if mode == AutoresetMode.SAME_STEP else infos
        for i in np.flatnonzero(ended):
            if counts[i] < targets[i]:
                comps = final.get("reward_components", {})
                episodes.append(
                    Episode(
                        prompt=str(final["prompt"][i]) if "prompt" in final else "",
                        text=str(final["text"][i]) if "text" in final else "",
                        reward=float(returns[i]),
                        components={k: float(v[i]) for k, v in comps.items() if not k.startswith("_")},
                        length=int(lengths[i]),
                        prompt_ids=prompt_ids[i],
                        completion_ids=completion_ids[i],
                    )
                )
            counts[i] += 1
            returns[i] = 0.0
            lengths[i] = 0
        if mode == AutoresetMode.SAME_STEP:
            episode_start = ended
        else:
            episode_start, pending = pending, ended
    return episodes


def summarize(episodes: list[Episode], text_metrics: bool = True) -> dict[str, float]:
    """Mean/std reward, each component's mean, mean length, and corpus text metrics."""
    rewards = np.array([e.reward for e in episodes])
    out: dict[str, float] = {
        "mean_reward": float(rewards.mean()),
        "std_reward": float(rewards.std()),
        "n_episodes": float(len(episodes)),
        "mean_ep_length": float(np.mean([e.length for e in episodes])),
    }
    for key in episodes[0].components:
        out[f"reward/{key}"] = float(np.mean([e.components[key] for e in episodes]))
    if text_metrics:
        from lm_gym.metrics import evaluate_texts

        metrics = evaluate_texts([e.prompt for e in episodes], [e.text for e in episodes])
        out.update({k: v for k, v in metrics.items() if k not in out and k != "mean_reward"})
    return out


def evaluate(
    agent: SupportsPredict,
    env: str | gym.Env | VectorEnv | None = None,
    n_episodes: int = 100,
    seed: int | None = None,
    *,
    deterministic: bool = False,
    n_envs: int = 8,
    return_episodes: bool = False,
    **env_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate any agent with ``predict`` over ``n_episodes`` episodes.

    Returns a dict with ``"mean_reward"``, ``"std_reward"``, ``"reward/<component>"``
    means, ``"mean_ep_length"`` and the corpus metrics of :func:`lm_gym.metrics.evaluate_texts`
    (distinct-n, entropy-n, ...); with ``return_episodes=True`` also ``"episodes"``, the
    list of :class:`Episode`. ``env`` defaults to the agent's own env (a fresh copy when the
    agent was built from an id, so evaluation never disturbs training state).
    """
    if not callable(getattr(agent, "predict", None)):
        raise error.InvalidArgument(f"agent must have a predict(obs, ...) method, got {agent!r}")
    if env is None:
        env = getattr(agent, "env_id", None) or getattr(agent, "env", None)
        env_kwargs = {**getattr(agent, "env_kwargs", {}), **env_kwargs}
        if env is None:
            raise error.InvalidArgument("evaluate needs env= for an agent without one")
    ctx = getattr(agent, "dist", None)  # torchrun: each rank runs its share, all summarise all
    rank, world = (0, 1) if ctx is None else (ctx.rank, ctx.world_size)
    share = n_episodes // world + (rank < n_episodes % world) if world > 1 else n_episodes
    episodes: list[Episode] = []
    if share:
        venv = make_vec_env(env, n_envs if isinstance(env, str) else 1, **env_kwargs)
        rank_seed = None if seed is None else seed + rank * 10_007
        episodes = run_episodes(agent, venv, share, seed=rank_seed, deterministic=deterministic)
    if ctx is not None:
        episodes = [e for part in ctx.gather(episodes) for e in part]
    out: dict[str, Any] = summarize(episodes)
    if return_episodes:
        out["episodes"] = episodes
    return out


# -- the registry -------------------------------------------------------------------------

AGENTS: dict[str, str] = {
    "random": "agents.base:RandomAgent",
    "model": "agents.model:ModelAgent",
    "reinforce": "agents.reinforce:Reinforce",
    "ppo": "agents.ppo:PPO",
    "grpo": "agents.grpo:GRPO",
    "dr_grpo": "agents.dr_grpo:DrGRPO",
    "dapo": "agents.dapo:DAPO",
    "gspo": "agents.gspo:GSPO",
    "rloo": "agents.rloo:RLOO",
    "reinforce_pp": "agents.reinforce_pp:ReinforcePP",
    "remax": "agents.remax:ReMax",
    "sb3-ppo": "agents.sb3:SB3PPO",
    "sb3-a2c": "agents.sb3:SB3A2C",
    "sb3-dqn": "agents.sb3:SB3DQN",
    "sb3-maskable_ppo": "agents.sb3:SB3MaskablePPO",
}


ALIASES: dict[str, str] = {
    "reinforce++": "reinforce_pp",
    "reinforce_plus_plus": "reinforce_pp",
    "drgrpo": "dr_grpo",
    "dr-grpo": "dr_grpo",
    "dr.grpo": "dr_grpo",
}
"""Other spellings of the registered names (verl's ``reinforce_plus_plus``, OpenRLHF's ``reinforce++``)."""

LM_LEARNERS = ("ppo", "grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp", "remax", "reinforce")
"""The policy-optimisation algorithms, in the order tables list them."""


def canonical_name(name: str) -> str:
    """``name`` as registered (aliases resolved, case-insensitive)."""
    key = str(name).lower()
    return ALIASES.get(key, key if key in AGENTS else name)


def agent_class(name: str) -> type:
    """The agent class registered under ``name`` or one of its aliases (imported on demand)."""
    name = canonical_name(name)
    if name not in AGENTS:
        raise error.unknown("agent", name, AGENTS)
    module, _, attr = AGENTS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def register_agent(name: str, path_or_class: str | type) -> None:
    """Add an agent to the registry: ``make(name, env)`` then builds it."""
    if isinstance(path_or_class, type):
        path_or_class = f"{path_or_class.__module__}:{path_or_class.__qualname__}"
    AGENTS[name] = path_or_class


def make(name: str, env: str | gym.Env | VectorEnv, **config: Any) -> Any:
    """Build a registered agent: ``"ppo"``, ``"reinforce"``, ``"random"``, ``"model"``
    (the unchanged model, sampling: the zero-shot baseline), or an SB3 baseline."""
    return agent_class(name)(env, **config)
