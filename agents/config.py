"""Config dataclasses: the settings every LM learner shares (:class:`LMAgentConfig`), building
a config from a dict plus overrides, and validating every field.

:func:`check_types` holds one rule for every config: a field annotated ``int`` takes an
integer (not a bool), ``float`` a finite real number (not a bool, not inf or NaN), ``bool``
a bool, ``str`` a string, ``X | None`` also None. An algorithm's ``__post_init__`` calls it
and then states its ranges with :func:`require`, so a bad value always fails at
construction with a message that names it and what would be valid.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lm_gym import error

__all__ = ["HYPERPARAMS_DIR", "LMAgentConfig", "check_types", "make_config", "read_hyperparams", "require", "task_defaults"]

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
"""Per-env settings in the RL Baselines3 Zoo's YAML format: ``<algo>.yml`` for the
Stable-Baselines3 baselines (:mod:`agents.sb3`), ``lm/<algo>.yml`` for the LM learners."""

TASK_DEFAULTS_FIXED = ("n_envs", "seed", "env_kwargs", "device", "policy_seed")
"""Fields a per-task defaults file may not set: they shape the env or the run, not the learner."""


def require(config: Any, name: str, ok: bool, valid: str) -> None:
    """Raise ``InvalidArgument("<name>=<value> is invalid: <valid>")`` unless ``ok``."""
    if not ok:
        raise error.InvalidArgument(f"{name}={getattr(config, name)!r} is invalid: {valid}")


def _allowed(tp: Any) -> tuple[set[Any], bool]:
    """The base types an annotation allows, and whether it allows None."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        bases = {typing.get_origin(a) or a for a in args if a is not type(None)}
        return bases, type(None) in args
    return {origin or tp}, False


def _coerce(name: str, value: Any, bases: set[Any]) -> Any:
    """``value`` checked against ``bases`` (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        if bool in bases:
            return value
        raise TypeError("a bool")
    if int in bases and isinstance(value, int):
        return value
    if float in bases and isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise TypeError("not finite")
        return value
    for base in bases - {int, float, bool}:
        if base is Any or (isinstance(base, type) and isinstance(value, base)):
            return value
        if base is dict and isinstance(value, Mapping):
            return dict(value)
    raise TypeError(type(value).__name__)


def check_types(config: Any) -> None:
    """Check (and normalise) every field of a config dataclass against its annotation."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        bases, optional = _allowed(hints[f.name])
        if value is None:
            if optional:
                continue
            raise error.InvalidArgument(f"{f.name}=None is invalid: use {_describe(bases)}")
        try:
            setattr(config, f.name, _coerce(f.name, value, bases))
        except TypeError:
            none = " or None" if optional else ""
            raise error.InvalidArgument(
                f"{f.name}={value!r} is invalid: use {_describe(bases)}{none}"
            ) from None


def _describe(bases: set[Any]) -> str:
    if float in bases:
        return "a finite number"
    if int in bases:
        return "an integer"
    if bool in bases:
        return "True or False"
    if str in bases:
        return "a string"
    if dict in bases:
        return "a dict"
    return " or ".join(sorted(getattr(b, "__name__", str(b)) for b in bases))


def read_hyperparams(file: Path, env_id: str | None, *, fallback: bool = True) -> dict[str, Any] | None:
    """The entry of a per-env YAML file for ``env_id`` (the zoo's format): the id's own entry,
    else (with ``fallback``) the ``default`` entry; None when there is neither."""
    import yaml

    table = yaml.safe_load(file.read_text()) or {}
    if not isinstance(table, dict):
        raise error.InvalidArgument(f"{file}: a hyperparameters file must map env ids to settings")
    if env_id in table:
        return dict(table[env_id])
    return dict(table["default"]) if fallback and "default" in table else None


def task_defaults(algo: str, env_id: str | None) -> dict[str, Any]:
    """An LM learner's tuned settings for one task: the ``env_id`` entry of
    ``agents/hyperparams/lm/<algo>.yml`` ({} when the file or the entry is absent; there is no
    catch-all entry, the config's own defaults are that). They sit under whatever the user
    passes, and apply only when the env runs a built-in model (:class:`agents.lm_agent.LMAgent`)."""
    file = HYPERPARAMS_DIR / "lm" / f"{algo}.yml"
    if env_id is None or not file.is_file():
        return {}
    entry = read_hyperparams(file, env_id, fallback=False) or {}
    fixed = sorted(set(entry) & set(TASK_DEFAULTS_FIXED))
    if fixed:
        raise error.InvalidArgument(f"{file}: the entry of {env_id!r} may not set {fixed}")
    return entry


def make_config(cls: type, config: Any, overrides: Mapping[str, Any]) -> Any:
    """``cls`` from a config object or dict plus keyword overrides; unknown names are an error
    that lists the valid ones."""
    if config is None:
        base: dict[str, Any] = {}
    elif is_dataclass(config) and not isinstance(config, type):
        base = asdict(config)
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise error.InvalidArgument(f"config must be a {cls.__name__}, a dict or None, got {config!r}")
    merged = {**base, **overrides}
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(merged) - set(names))
    if unknown:
        hints = [error.did_you_mean(u, names) for u in unknown]
        hint = next((h for h in hints if h), "")
        raise error.InvalidArgument(
            f"unknown {cls.__name__} field(s) {unknown}{hint}; valid: {sorted(names)}"
        )
    return cls(**merged)


@dataclass
class LMAgentConfig:
    """Settings every LM learner shares; each algorithm's config adds its own."""

    n_envs: int = 16
    """Env slots stepped together, when the agent builds the env from an id."""
    batch_size: int = 32
    """Episodes per update: ceil(batch_size / n_envs) rounds of one episode per slot."""
    samples_per_prompt: int = 1
    """Consecutive slots that share a prompt (k completions per prompt); must divide n_envs."""
    learning_rate: float | None = None
    """Adam step size; None: the algorithm's default for a fresh toy policy or a pretrained LM."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global norm to this (None: no clipping)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs (rollout, update, reference) use the same one."""
    top_k: int | None = None
    """Sample among the top_k tokens only (None: all); does not enter the log-probs."""
    top_p: float | None = None
    """Nucleus sampling threshold in (0, 1] (None: off); does not enter the log-probs."""
    kl_coef: float | None = None
    """Weight of the KL to the frozen reference; None: the algorithm's default for a
    pretrained LM, and 0 for a toy task (its reference is an untrained network)."""
    kl_placement: str = "reward"
    """"reward": the k1 estimate per token is subtracted from the reward (Ziegler et al. 2019);
    "loss": the k3 estimate is added to the loss (GRPO, Shao et al. 2024, eq. 4)."""
    nlpo_top_p: float | None = None
    """NLPO masking (Ramamurthy et al. 2022): act only within the top-p set of a periodically
    refreshed copy of the policy (None: off)."""
    nlpo_update_every: int = 4
    """Refresh the NLPO mask model every this many updates."""
    toy_model: dict = field(default_factory=lambda: {"n_layer": 2, "n_embd": 64, "n_head": 4})
    """Size of the fresh GPT-2 of a toy task: n_layer, n_embd, n_head."""
    seed: int | None = None
    """Seeds the policy's initial weights (toy), sampling, prompts and shuffling."""
    policy_seed: int | None = None
    """Seed of the initial toy weights and the reference; None: derived from seed (set on save)."""
    device: str = "cpu"
    """Torch device of the policy ("auto": cuda if available)."""
    run_dir: str | None = None
    """Where progress.csv, TensorBoard files and checkpoints go (None: nowhere)."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many updates (and at the end) when run_dir is set."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    verbose: int = 0
    """1: log one metrics line per update to stdout."""
    tensorboard: bool = False
    """Also write TensorBoard event files to run_dir/tb (needs the tensorboard package)."""
    env_kwargs: dict = field(default_factory=dict)
    """Keyword arguments for gym.make_vec when env is an id (e.g. {"alphabet_size": 2})."""

    default_kl_coef: ClassVar[float] = 0.05
    """kl_coef for a pretrained LM when kl_coef is None."""

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("n_envs", "batch_size", "samples_per_prompt", "nlpo_update_every",
                     "checkpoint_every", "keep_checkpoints"):
            require(self, name, getattr(self, name) >= 1, "use an integer >= 1")
        require(self, "samples_per_prompt", self.n_envs % self.samples_per_prompt == 0,
                f"it must divide n_envs={self.n_envs}")
        for name in ("learning_rate", "max_grad_norm", "temperature"):
            require(self, name, getattr(self, name) is None or getattr(self, name) > 0, "use a number > 0")
        require(self, "top_k", self.top_k is None or self.top_k >= 1, "use an integer >= 1 or None")
        for name in ("top_p", "nlpo_top_p"):
            v = getattr(self, name)
            require(self, name, v is None or 0 < v <= 1, "use a number in (0, 1] or None")
        require(self, "kl_coef", self.kl_coef is None or self.kl_coef >= 0, "use a number >= 0 or None")
        require(self, "kl_placement", self.kl_placement in ("reward", "loss"), 'use "reward" or "loss"')
        unknown = sorted(set(self.toy_model) - {"n_layer", "n_embd", "n_head"})
        require(self, "toy_model", not unknown, f"unknown keys {unknown}; valid: n_layer, n_embd, n_head")
        require(self, "toy_model", all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                       for v in self.toy_model.values()), "sizes must be integers >= 1")
        if self.device != "auto":  # "auto": CUDA when there is one
            from lm_gym.models import check_device

            check_device(self.device)  # the one device rule of lm_gym (names it and what is valid)

    def resolved_kl_coef(self, pretrained: bool) -> float:
        if self.kl_coef is not None:
            return float(self.kl_coef)
        return self.default_kl_coef if pretrained else 0.0
