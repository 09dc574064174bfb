"""What a benchmark runs: :class:`BenchConfig` (the grid) and :class:`Cell` (one run of it).

A grid is envs × agents × seeds. Each cell trains one agent on one env with one seed for a
budget of env steps (or seconds), then evaluates it. Agents that do not learn (``"random"``,
``"model"`` — the zero-shot baseline) are only evaluated. Stable-Baselines3 baselines only
apply to the toy ids; cells pairing them with a text env are skipped.

A config comes from keyword arguments, a named preset (:data:`PRESETS`) or a YAML file
(:func:`load_config`) whose keys are :class:`BenchConfig`'s fields.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_gym import error

TOY_ENVS = [
    "lm_gym/Copy-v0",
    "lm_gym/Reverse-v0",
    "lm_gym/Addition-v0",
    "lm_gym/Parentheses-v0",
    "lm_gym/KeywordToy-v0",
]
TEXT_ENVS = [
    "lm_gym/SentimentContinuation-v0",
    "lm_gym/TopicSteering-v1",
    "lm_gym/KeywordStory-v2",
    "lm_gym/Continuation-v1",
]
BASELINES = ("random", "model")
"""Agents that are evaluated without training: the floor and the zero-shot model."""
TEXT_LEARNERS = ["grpo", "ppo"]
"""The default learners of the ``text-suite`` preset."""
TEXT_BATCH = {"n_envs": 64, "batch_size": 64, "samples_per_prompt": 4}
"""The ``text-suite`` learners' batch: 16 prompts x 4 samples (64 completions an iteration).
GRPO runs at its tuned defaults for each text task (``agents/hyperparams/lm/grpo.yml``, read by
``agents.GRPO`` itself): learning rate 2e-4 with KL 0.2, KL 0.15 on Continuation-v1 and 0.04 on KeywordStory-v2."""


def split_agent_key(key: str) -> tuple[str, str | None]:
    """An ``agent_kwargs`` key as ``(agent, env_id)``: ``"grpo@lm_gym/Copy-v0"`` ->
    ``("grpo", "lm_gym/Copy-v0")``, ``"grpo"`` -> ``("grpo", None)``."""
    agent, at, env_id = key.partition("@")
    if at and (not agent or not env_id):
        raise error.InvalidArgument(f"agent_kwargs key {key!r} is invalid: use 'AGENT' or 'AGENT@ENV_ID'")
    return agent, (env_id if at else None)


def text_learner_kwargs(learners: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The ``text-suite``'s ``agent_kwargs`` for ``learners``: each one's batch
    (:data:`TEXT_BATCH`). Everything else is the learner's own defaults for the task (GRPO's
    tuned ones from ``agents/hyperparams/lm/grpo.yml``)."""
    return {a: dict(TEXT_BATCH) for a in learners}


@dataclass
class BenchConfig:
    """A benchmark grid: every env × every agent × every seed."""

    envs: list[str] = field(default_factory=lambda: TOY_ENVS + TEXT_ENVS)
    """Env ids to run (default: the nine built-in ids)."""
    agents: list[str] = field(default_factory=lambda: ["random", "model", "reinforce", "ppo"])
    """Agent names (see agents.AGENTS) or 'package.module:Class' paths."""
    seeds: int | list[int] = 3
    """How many seeds (0..N-1), or an explicit list of seeds."""
    budget: int | dict[str, int] = 20_000
    """Env steps each learning agent trains for; a mapping env id -> steps sets it per env."""
    time_budget: float | None = None
    """Also stop training a cell after this many seconds (None: no time limit)."""
    eval_episodes: int = 100
    """Episodes of the final evaluation of every cell."""
    eval_seed: int = 1_000_000
    """Seed of the evaluation episodes (offset by the cell's seed; the same for every agent)."""
    agent_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Config overrides per agent name, e.g. {'ppo': {'learning_rate': 1e-4}}; a key
    ``'AGENT@ENV_ID'`` adds overrides for that agent on that env only (tuned per task, as
    rl-baselines3-zoo's per-env hyperparameters), e.g. {'grpo@lm_gym/KeywordStory-v2':
    {'learning_rate': 2e-4}}."""
    env_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """gym.make keyword arguments per env id, e.g. {'lm_gym/Continuation-v0': {'max_new_tokens': 16}}."""
    workers: int = 1
    """Cells run at once, each in its own process (1: one after another in this process)."""
    threads: int = 1
    """Torch threads of each worker (1 suits the small models; more only for big ones)."""
    backend: str = "local"
    """Where cells run: 'local' (a process pool on this machine) or 'ray' (one Ray task
    per cell on a cluster; needs the [ray] extra)."""
    save_agents: bool = False
    """Save each trained agent in its cell directory (agent/)."""
    plots: bool = True
    """Write the PNG plots after the grid (needs the [plot] extra)."""

    def __post_init__(self) -> None:
        if isinstance(self.envs, str):
            self.envs = split_list(self.envs)
        if isinstance(self.agents, str):
            self.agents = split_list(self.agents)
        for name, value in (("envs", self.envs), ("agents", self.agents)):
            if not value or not all(isinstance(v, str) and v for v in value):
                raise error.InvalidArgument(f"{name} must be a non-empty list of names, got {value!r}")
        if isinstance(self.seeds, bool) or not (
            (isinstance(self.seeds, int) and self.seeds >= 1)
            or (isinstance(self.seeds, list) and self.seeds and all(isinstance(s, int) for s in self.seeds))
        ):
            raise error.InvalidArgument(
                f"seeds must be a positive count or a non-empty list of integer seeds, got {self.seeds!r}"
            )
        budgets = self.budget.values() if isinstance(self.budget, Mapping) else [self.budget]
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in budgets):
            raise error.InvalidArgument(
                f"budget must be a positive number of env steps (or a mapping env id -> steps), got {self.budget!r}"
            )
        if self.time_budget is not None and not (
            isinstance(self.time_budget, (int, float)) and self.time_budget > 0
        ):
            raise error.InvalidArgument(f"time_budget must be a positive number of seconds or None, got {self.time_budget!r}")
        for name in ("eval_episodes", "workers", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise error.InvalidArgument(f"{name} must be a positive integer, got {value!r}")
        for name in ("agent_kwargs", "env_kwargs"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                raise error.InvalidArgument(f"{name} must map a name to a dict of keyword arguments, got {value!r}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def budget_for(self, env_id: str) -> int:
        if isinstance(self.budget, Mapping):
            if env_id not in self.budget:
                raise error.InvalidArgument(f"budget has no entry for {env_id!r} (it has {sorted(self.budget)})")
            return int(self.budget[env_id])
        return int(self.budget)

    def kwargs_for(self, agent: str, env_id: str) -> dict[str, Any]:
        """``agent``'s config overrides on ``env_id``: ``agent_kwargs[agent]``, then
        ``agent_kwargs[f"{agent}@{env_id}"]`` over them."""
        return {**self.agent_kwargs.get(agent, {}), **self.agent_kwargs.get(f"{agent}@{env_id}", {})}

    def cells(self) -> list[Cell]:
        """The grid's cells in run order (env, then agent, then seed), minus the skipped ones."""
        out = []
        for env_id in self.envs:
            for agent in self.agents:
                if skip_reason(env_id, agent) is not None:
                    continue
                for seed in self.seed_list:
                    out.append(
                        Cell(
                            env_id=env_id,
                            agent=agent,
                            seed=seed,
                            budget=self.budget_for(env_id),
                            time_budget=self.time_budget,
                            eval_episodes=self.eval_episodes,
                            eval_seed=self.eval_seed + seed,
                            agent_kwargs=self.kwargs_for(agent, env_id),
                            env_kwargs=dict(self.env_kwargs.get(env_id, {})),
                            save_agent=self.save_agents,
                        )
                    )
        return out

    def skipped(self) -> list[tuple[str, str, str]]:
        """``(env_id, agent, reason)`` for every env × agent pair the grid leaves out."""
        return [
            (e, a, reason) for e in self.envs for a in self.agents if (reason := skip_reason(e, a)) is not None
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Cell:
    """One run of the grid: train ``agent`` on ``env_id`` with ``seed``, then evaluate it."""

    env_id: str
    agent: str
    seed: int
    budget: int
    time_budget: float | None = None
    eval_episodes: int = 100
    eval_seed: int = 1_000_000
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    save_agent: bool = False
    resume: bool = False
    """Continue from the agent's last checkpoint (``learn(resume=True)``), as ``lm-gym train --resume``."""
    eval_every: int | None = None
    """Also evaluate every this many env steps (and once before training), writing
    ``eval/reward`` and ``eval/kl`` (and ``eval/gold_reward``) into the curve; see
    :class:`agents.EvalCallback`."""
    gold_reward: Any = None
    """A held-out reward scored on every evaluation's completions but never trained on: a
    spec of :func:`lm_gym.rewards.reward_from_spec` (``"vader"``) or a callable."""

    @property
    def key(self) -> str:
        """The cell's directory under the results directory: ``<env>/<agent>/seed<N>``."""
        return f"{slug(self.env_id)}/{slug(self.agent)}/seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def slug(name: str) -> str:
    """A name as one path component: ``lm_gym/Copy-v0`` -> ``lm_gym__Copy-v0``."""
    return name.replace("/", "__").replace(":", "--")


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def is_text_env(env_id: str) -> bool:
    """Whether an env id's task runs a pretrained LM (its constructor, or a base class's,
    takes ``model=``); checked on the registered task class, without making the env."""
    import gymnasium as gym

    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        raise error.InvalidArgument(f"{e} (lm-gym list shows the registered ids)") from None
    task = (spec.kwargs or {}).get("task")
    if isinstance(task, str):
        module, _, attr = task.partition(":")
        task = getattr(importlib.import_module(module), attr)
    if not isinstance(task, type):
        return False
    for klass in task.__mro__:  # subclasses often take **kwargs and pass model= up
        init = klass.__dict__.get("__init__")
        if init is not None and "model" in inspect.signature(init).parameters:
            return True
    return False


def skip_reason(env_id: str, agent: str) -> str | None:
    """Why a pair is left out of a grid, or None: SB3 baselines only run on toy vocabularies."""
    if agent.startswith("sb3-") and is_text_env(env_id):
        return "Stable-Baselines3 baselines only apply to the toy ids"
    return None


PRESETS: dict[str, dict[str, Any]] = {
    "quickstart": dict(
        envs=["lm_gym/KeywordToy-v0", "lm_gym/SentimentContinuation-v0"],
        agents=["random", "model", "ppo"],
        seeds=1,
        budget={"lm_gym/KeywordToy-v0": 100_000, "lm_gym/SentimentContinuation-v0": 80_000},
        eval_episodes=100,
        agent_kwargs={"ppo": {"n_envs": 64, "batch_size": 64}},
        workers=2,
    ),
    "readme": dict(
        envs=TOY_ENVS + TEXT_ENVS,
        agents=["random", "model", "reinforce", "ppo", "sb3-ppo", "sb3-a2c", "sb3-dqn", "sb3-maskable_ppo"],
        seeds=3,
        budget=20_000,
        eval_episodes=100,
        workers=2,
    ),
    "text-suite": dict(
        envs=TEXT_ENVS,
        agents=[*BASELINES, *TEXT_LEARNERS],
        seeds=3,
        budget=10**9,
        time_budget=300.0,
        eval_episodes=128,
        agent_kwargs=text_learner_kwargs(TEXT_LEARNERS),
        workers=1,
        threads=1,
    ),
    "smoke": dict(
        envs=["lm_gym/Copy-v0"],
        agents=["random"],
        seeds=1,
        budget=64,
        eval_episodes=8,
        plots=False,
    ),
}
"""Named grids: ``quickstart`` (what ``lm-gym quickstart`` runs; ~2.5 minutes on 2 cores),
``readme`` (the README's results table: all nine ids, every agent, 3 seeds, 20k env steps;
~18 minutes with 2 workers on 2 cores), ``text-suite`` (the text-learning protocol of
``benchmarks/text_learning.py``: the four text ids, random and zero-shot rows, GRPO and PPO
with 16 prompts x 4 samples (GRPO at its tuned defaults per task), 3 seeds, 300 s of one core per learning run and no step
limit, evaluated on 128 episodes of the held-out ``split="test"`` prompts, one sample
each, the same evaluation seeds for every agent; ~2 hours on one core), ``smoke``
(seconds; checks an install)."""


def preset(name: str, **overrides: Any) -> BenchConfig:
    """The named preset as a :class:`BenchConfig`, with ``overrides`` applied."""
    if name not in PRESETS:
        raise error.unknown("bench preset", name, PRESETS)
    return BenchConfig(**{**PRESETS[name], **overrides})


def load_config(path: str | Path, **overrides: Any) -> BenchConfig:
    """A :class:`BenchConfig` from a YAML file (its keys are the config's fields; ``preset:
    NAME`` starts from a preset), with ``overrides`` applied."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error.InvalidArgument(f"bench config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise error.InvalidArgument(f"{str(path)!r} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise error.InvalidArgument(f"{path}: a bench config must be a YAML mapping, got {type(data).__name__}")
    base = dict(PRESETS[data.pop("preset")]) if "preset" in data and data["preset"] in PRESETS else {}
    if "preset" in data:
        raise error.unknown("bench preset", data["preset"], PRESETS)
    known = {f.name for f in dataclasses.fields(BenchConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error.InvalidArgument(f"{path}: unknown bench config keys {unknown}; valid keys: {sorted(known)}")
    return BenchConfig(**{**base, **data, **overrides})
