"""Stable-Baselines3 baselines for the toy vocabularies, behind lm_gym's Agent protocol.

Two ways in:

* directly with SB3, through :class:`TokenFeaturesExtractor`, which embeds the token ids
  (SB3 alone would feed the ids to an MLP as floats)::

      from stable_baselines3 import PPO
      from agents.sb3 import TokenFeaturesExtractor
      PPO("MultiInputPolicy", gym.make("lm_gym/Copy-v0"),
          policy_kwargs=dict(features_extractor_class=TokenFeaturesExtractor))

* as lm_gym agents, so ``agents.evaluate`` and ``lm-gym bench`` treat them like PPO and
  REINFORCE: ``agents.make("sb3-ppo" | "sb3-a2c" | "sb3-dqn" | "sb3-maskable_ppo", env_id)``
  (:class:`SB3PPO`, :class:`SB3A2C`, :class:`SB3DQN`, :class:`SB3MaskablePPO`).

Hyperparameters per (algorithm, env id) live in ``agents/hyperparams/<algo>.yml`` in the
RL Baselines3 Zoo's format (keys are env ids, a ``default`` entry for any other env), read
by both paths, so the zoo trains with the same settings::

    python -m rl_zoo3.train --algo ppo --env lm_gym/Copy-v0 --gym-packages lm_gym \\
        -conf agents/hyperparams/ppo.yml

(add ``-n 2000`` for a quick run; ``OMP_NUM_THREADS=1`` keeps these small networks fast on
a busy CPU; ``--algo a2c`` / ``dqn`` with their files alike; the zoo has no MaskablePPO, so
``maskable_ppo.yml`` serves ``SB3MaskablePPO`` only.) The YAML's ``policy_kwargs`` string is
evaluated by the zoo with Python's ``eval``, so it imports the extractor with the builtin
``__import__``; no extra ``--gym-packages`` is needed. This module never evaluates it: it
reads such strings (and ``policy_kwargs`` in a saved ``agent.json``) as data, with
:func:`parse_kwargs`, which accepts literals, ``dict(...)`` and the class names of
:data:`ALLOWED_NAMES` (activation functions, optimizers, the features extractor) only.

Security: SB3's own ``model.zip`` holds cloudpickled objects, and SB3's ``PPO.load`` unpickles
them, which can run code. :meth:`SB3Agent.load` never does: it first checks that the folder
holds our ``agent.json`` naming this agent, rebuilds the model from that file (data only),
then reads from ``model.zip`` only the weights (``torch.load(weights_only=True)``) and plain
JSON counters. Even so, load only folders you trust.

Wrappers: SB3 gets a ``DummyVecEnv`` of single envs, each in SB3's ``Monitor`` (episode
returns for ``rollout/ep_rew_mean``; it also keeps ``reward_components`` for the
``reward/<component>`` metrics). Nothing changes the env's observations, actions or rewards.

Needs the ``[sb3]`` extra (stable-baselines3 and sb3-contrib).
"""

from __future__ import annotations

import ast
import json
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from agents.base import Agent, Callback, check_obs
from agents.checkpoint import read_agent_json
from agents.config import HYPERPARAMS_DIR, read_hyperparams
from lm_gym import error

try:
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
    from torch import nn
except ImportError:
    raise error.missing_extra("stable-baselines3", "sb3", "the Stable-Baselines3 baselines (agents.sb3)") from None

ENCODERS = ("mean", "gru", "transformer")

# Zoo keys this module understands besides the algorithm's constructor arguments.
_ZOO_KEYS = {"n_timesteps", "n_envs", "policy", "env_kwargs"}
_ZOO_UNSUPPORTED = {"normalize", "frame_stack", "env_wrapper", "vec_env_wrapper", "callback", "monitor_kwargs"}


# -- the features extractor ------------------------------------------------------------------


class TokenFeaturesExtractor(BaseFeaturesExtractor):
    """Embeds the token ids of an lm_gym observation and encodes the sequence.

    SB3 hands Box observations over as float tensors; the ids are rounded back to int64
    (exact for any vocabulary below 2**24) and clamped into the vocabulary. Padding
    positions (``attention_mask == 0``) never reach the features.

    Encoders (``encoder=``):

    * ``"gru"`` (the default): a GRU over the real tokens in order; the features are its
      state after the newest token. Order-aware and cheap: the toy tasks need order (Copy,
      Reverse) and are short.
    * ``"mean"``: the masked mean of token + position embeddings (positions counted back
      from the newest token, so left padding does not shift them).
    * ``"transformer"``: a small pre-LN transformer encoder with the same positions and a
      key padding mask; the features are the newest token's output.

    Args:
        observation_space: ``Dict(input_ids=Box(0, V-1, (L,)), attention_mask=Box(0, 1, (L,)))``.
        features_dim: width of the features the policy and value heads see.
        embed_dim: width of the token (and position) embeddings and the encoder.
        encoder: ``"gru"``, ``"mean"`` or ``"transformer"``.
        n_layers: GRU / transformer layers.
        n_heads: attention heads of the transformer (must divide ``embed_dim``).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 64,
        embed_dim: int = 32,
        encoder: str = "gru",
        n_layers: int = 1,
        n_heads: int = 2,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict) or "input_ids" not in observation_space.spaces:
            raise error.InvalidArgument(
                f"TokenFeaturesExtractor needs a Dict observation space with input_ids, got {observation_space!r}"
            )
        if encoder not in ENCODERS:
            raise error.unknown("encoder", encoder, ENCODERS)
        for name, value in (("features_dim", features_dim), ("embed_dim", embed_dim), ("n_layers", n_layers), ("n_heads", n_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise error.InvalidArgument(f"{name}={value!r} is invalid: use an integer >= 1")
        if encoder == "transformer" and embed_dim % n_heads:
            raise error.InvalidArgument(f"n_heads={n_heads} must divide embed_dim={embed_dim}")
        super().__init__(observation_space, features_dim)
        ids_space = observation_space["input_ids"]
        self.vocab_size = int(np.max(ids_space.high)) + 1
        self.seq_len = int(ids_space.shape[-1])
        self.encoder = encoder
        self.embed = nn.Embedding(self.vocab_size, embed_dim)
        if encoder == "gru":
            self.rnn = nn.GRU(embed_dim, embed_dim, num_layers=n_layers, batch_first=True)
        else:
            self.pos_embed = nn.Embedding(self.seq_len, embed_dim)
        if encoder == "transformer":
            layer = nn.TransformerEncoderLayer(
                embed_dim, n_heads, dim_feedforward=2 * embed_dim, dropout=0.0, batch_first=True, norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(embed_dim, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = observations["input_ids"].round().long().clamp(0, self.vocab_size - 1)  # (B, L)
        if "attention_mask" in observations:
            mask = observations["attention_mask"] > 0.5  # (B, L)
        else:
            mask = torch.ones_like(ids, dtype=torch.bool)
        if self.encoder == "gru":
            return self.head(self._gru(ids, mask))
        # position 0 = the newest real token, 1 the one before, ...: left padding cannot shift it
        from_end = mask.flip(-1).long().cumsum(-1).flip(-1) - 1  # (B, L)
        x = self.embed(ids) + self.pos_embed(from_end.clamp(min=0))  # (B, L, E)
        if self.encoder == "mean":
            m = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, E)
            return self.head(pooled)
        # A row with no real token would make attention NaN: let it attend to its last slot.
        keep = mask.clone()
        keep[~mask.any(-1), -1] = True
        h = self.transformer(x, src_key_padding_mask=~keep)  # (B, L, E)
        last = _last_true(keep)  # (B,)
        return self.head(h[torch.arange(len(h)), last])  # (B, F)

    def _gru(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Move the real tokens to the front, in order (a stable sort: any mask pattern), and
        # pack them, so the GRU sees exactly the real tokens.
        order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices  # (B, L)
        ids = ids.gather(1, order)  # (B, L)
        lengths = mask.sum(-1).clamp(min=1).cpu()  # (B,)
        x = self.embed(ids)  # (B, L, E)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)  # (n_layers, B, E)
        return h_n[-1]  # (B, E)


def _last_true(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True in each row of a (B, L) bool mask (rows must have one)."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask, positions, -1).max(-1).values


# -- hyperparameters (RL Zoo YAML) -----------------------------------------------------------


def zoo_hyperparams(algo: str, env_id: str | None) -> dict[str, Any]:
    """The raw entry of ``agents/hyperparams/<algo>.yml`` for ``env_id``, as the zoo reads it:
    the env id's own entry, else ``default``."""
    file = HYPERPARAMS_DIR / f"{algo}.yml"
    if not file.is_file():
        raise error.unknown("SB3 algorithm", algo, [p.stem for p in HYPERPARAMS_DIR.glob("*.yml")])
    entry = read_hyperparams(file, env_id)
    if entry is None:
        raise error.InvalidArgument(f"{file} has no entry for {env_id!r} and no 'default' entry")
    return entry


def _linear(initial: float) -> Any:
    """The zoo's ``lin_<x>`` schedule: x times the remaining progress (1 -> 0)."""
    from stable_baselines3.common.utils import LinearSchedule

    return LinearSchedule(initial, 0.0, 1.0)


def _allowed_names() -> dict[str, Any]:
    names: dict[str, Any] = {}
    for act in ("ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Identity", "Softplus", "SELU", "Mish"):
        for prefix in ("nn.", "th.nn.", "torch.nn."):
            names[prefix + act] = getattr(nn, act)
    for opt in ("Adam", "AdamW", "RMSprop", "SGD"):
        for prefix in ("th.optim.", "torch.optim."):
            names[prefix + opt] = getattr(torch.optim, opt)
    for prefix in ("", "agents.sb3."):
        names[prefix + "TokenFeaturesExtractor"] = TokenFeaturesExtractor
    return names


ALLOWED_NAMES: dict[str, Any] = _allowed_names()
"""The classes a ``policy_kwargs`` string or a saved config may name (``nn.ReLU``,
``th.optim.Adam``, ``TokenFeaturesExtractor``, ...); anything else is refused."""
_CANONICAL = {cls: name for name, cls in reversed(list(ALLOWED_NAMES.items()))}  # the shortest name


def _dotted(node: ast.AST) -> str | None:
    """``nn.ReLU`` -> "nn.ReLU"; the zoo's ``__import__('m', ...).X`` -> "m.X"; else None."""
    if isinstance(node, ast.Name):
        return node.id
    if not isinstance(node, ast.Attribute):
        return None
    value = node.value
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "__import__"
            and value.args and isinstance(value.args[0], ast.Constant) and isinstance(value.args[0].value, str)):
        return f"{value.args[0].value}.{node.attr}"
    base = _dotted(value)
    return None if base is None else f"{base}.{node.attr}"


def _literal(node: ast.AST, text: str) -> Any:
    """The value of one node of a ``policy_kwargs`` expression, evaluating nothing."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(n, text) for n in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k, text): _literal(v, text) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if all(k.arg is not None for k in node.keywords):
            return {k.arg: _literal(k.value, text) for k in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    name = _dotted(node)
    if name in ALLOWED_NAMES:
        return ALLOWED_NAMES[name]
    raise error.InvalidArgument(
        f"{ast.unparse(node)!r} in {text!r:.300} is not allowed: keyword-argument configs are read as data "
        f"(literals, dict(...), lists) and may name only these classes: {', '.join(sorted(ALLOWED_NAMES))}"
    )


def parse_kwargs(value: Any, key: str = "policy_kwargs") -> Any:
    """``policy_kwargs`` (or ``replay_buffer_kwargs``) as data: a zoo-style string such as
    ``"dict(activation_fn=nn.Tanh, net_arch=[64])"`` is parsed, never evaluated; in a dict,
    a string under ``activation_fn`` or a ``*_class`` key names a class of
    :data:`ALLOWED_NAMES`. Anything else is an :class:`~lm_gym.error.InvalidArgument`."""
    if isinstance(value, str):
        try:
            tree = ast.parse(value.strip(), mode="eval")
        except SyntaxError as e:
            raise error.InvalidArgument(f"{key}={value!r:.300} is not a valid expression: {e.msg}") from None
        value = _literal(tree.body, value)
    if isinstance(value, dict):
        return {k: _resolve_class(k, v) if isinstance(v, str) else parse_kwargs(v, k) if isinstance(v, dict) else v
                for k, v in value.items()}
    return value


def _resolve_class(key: str, value: str) -> Any:
    if not (key == "activation_fn" or key.endswith("_class")):
        return value
    if value not in ALLOWED_NAMES:
        raise error.unknown(f"class for {key}", value, ALLOWED_NAMES)
    return ALLOWED_NAMES[value]


def as_data(value: Any) -> Any:
    """The inverse of :func:`parse_kwargs` for saving: allow-listed classes as their names."""
    if isinstance(value, dict):
        return {k: as_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_data(v) for v in value]
    if isinstance(value, type):
        return _CANONICAL.get(value, f"{value.__module__}.{value.__qualname__}")
    return value


def algo_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    """A zoo entry (without the zoo-only keys) as the algorithm's constructor arguments:
    ``policy_kwargs`` read as data by :func:`parse_kwargs` (never evaluated), ``lin_<x>``
    schedules, ``train_freq`` lists as tuples."""
    unsupported = sorted(_ZOO_UNSUPPORTED & set(raw))
    if unsupported:
        raise error.InvalidArgument(
            f"zoo keys {unsupported} are not supported by agents.sb3 (they would change the env); "
            f"use rl_zoo3.train for them"
        )
    kwargs = {k: v for k, v in raw.items() if k not in _ZOO_KEYS}
    for key in ("policy_kwargs", "replay_buffer_kwargs"):
        if kwargs.get(key) is not None:
            kwargs[key] = parse_kwargs(kwargs[key], key)
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        value = kwargs.get(key)
        if isinstance(value, str):
            kind, _, initial = value.partition("_")
            if kind != "lin":
                raise error.InvalidArgument(f"{key}={value!r} is invalid: use a number or 'lin_<number>'")
            kwargs[key] = _linear(float(initial))
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    return kwargs


# -- lm_gym agents ---------------------------------------------------------------------------


@dataclass
class SB3Config:
    """Settings of the SB3 agents; the algorithm's own hyperparameters come from the YAML
    (``agents/hyperparams/<algo>.yml``) and ``hyperparams`` overrides them."""

    n_envs: int | None = None
    """Envs in SB3's DummyVecEnv; None: the YAML's n_envs (1 when env is a gym.Env instance)."""
    seed: int | None = None
    """Seeds the networks, SB3's sampling and the envs' episodes."""
    hyperparams: dict[str, Any] = field(default_factory=dict)
    """Overrides of the YAML entry: constructor arguments (e.g. {"learning_rate": 0.001}) or zoo keys (policy_kwargs, n_timesteps)."""
    encoder: str | None = None
    """TokenFeaturesExtractor encoder: "gru", "mean" or "transformer"; None: the YAML's."""
    features_dim: int | None = None
    """Width of the TokenFeaturesExtractor features; None: the YAML's."""
    callback_every: int | None = None
    """Env steps between calls of learn's callback; None: after every rollout (PPO/A2C: every update), 1000 for DQN."""
    device: str = "cpu"
    """Torch device of the SB3 model ("auto": cuda if available)."""
    verbose: int = 0
    """SB3's verbosity (1: its metrics table every log interval)."""
    tensorboard_log: str | None = None
    """SB3's TensorBoard log folder (None: none)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for gym.make when env is an id (e.g. {"alphabet_size": 2})."""

    def __post_init__(self) -> None:
        for name in ("n_envs", "features_dim", "callback_every"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise error.InvalidArgument(f"{name}={v!r} is invalid: use an integer >= 1 or None")
        if self.encoder is not None and self.encoder not in ENCODERS:
            raise error.unknown("encoder", self.encoder, ENCODERS)
        if not isinstance(self.hyperparams, dict):
            raise error.InvalidArgument(f"hyperparams must be a dict, got {self.hyperparams!r}")


class SB3Agent(Agent):
    """A Stable-Baselines3 model behind the Agent protocol (use the subclasses).

    Args:
        env: an env id (SB3 gets ``n_envs`` copies) or a ``gym.Env`` (one env). SB3 cannot
            drive a ``gymnasium.vector.VectorEnv``.
        config: an :class:`SB3Config` or a dict; keyword arguments override its fields.

    ``.model`` is the SB3 model and ``.vec_env`` its VecEnv; ``learn(total_timesteps=None)``
    trains for the YAML's ``n_timesteps``. Repeated ``learn`` calls continue counting.
    """

    algo: ClassVar[str] = ""
    """The zoo's algorithm name, also the YAML file's stem."""
    config_class: ClassVar[type] = SB3Config
    default_callback_every: ClassVar[int | None] = None

    def __init__(self, env: str | gym.Env, config: SB3Config | dict[str, Any] | None = None, **overrides: Any) -> None:
        self._setup(env, config, overrides)
        self.model: BaseAlgorithm = self._build_model()

    def _build_model(self) -> BaseAlgorithm:
        return self.algorithm()(
            self.policy, self.vec_env, seed=self.seed, device=self.config.device,
            verbose=self.config.verbose, tensorboard_log=self.config.tensorboard_log, **self.algo_kwargs,
        )

    def _setup(self, env: str | gym.Env, config: Any, overrides: dict[str, Any]) -> None:
        if isinstance(env, VectorEnv):
            raise error.InvalidArgument(
                f"{type(self).__name__} needs an env id or a gymnasium.Env; SB3 cannot drive a "
                f"gymnasium VectorEnv ({env!r})"
            )
        base = {} if config is None else (asdict(config) if isinstance(config, SB3Config) else dict(config))
        merged = {**base, **overrides}
        unknown = sorted(set(merged) - set(SB3Config.__dataclass_fields__))
        if unknown:
            raise error.InvalidArgument(f"unknown SB3Config field(s) {unknown}; valid: {sorted(SB3Config.__dataclass_fields__)}")
        self.config = cfg = SB3Config(**merged)
        super().__init__(env, n_envs=1, seed=cfg.seed, env_kwargs=cfg.env_kwargs if isinstance(env, str) else None)
        raw = {**zoo_hyperparams(self.algo, self.env_id), **cfg.hyperparams}
        self.n_timesteps = int(raw.get("n_timesteps", 100_000))
        self.policy = raw.get("policy", "MultiInputPolicy")
        kwargs = algo_kwargs(raw)
        if cfg.encoder is not None or cfg.features_dim is not None:
            policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
            policy_kwargs.setdefault("features_extractor_class", TokenFeaturesExtractor)
            extractor = dict(policy_kwargs.get("features_extractor_kwargs") or {})
            if cfg.encoder is not None:
                extractor["encoder"] = cfg.encoder
            if cfg.features_dim is not None:
                extractor["features_dim"] = cfg.features_dim
            policy_kwargs["features_extractor_kwargs"] = extractor
            kwargs["policy_kwargs"] = policy_kwargs
        self.algo_kwargs = kwargs
        n_envs = cfg.n_envs or (int(raw.get("n_envs", 1)) if isinstance(env, str) else 1)
        self.vec_env = make_sb3_vec_env(env, n_envs, cfg.env_kwargs)
        self.n_envs = cfg.n_envs = self.vec_env.num_envs

    # -- the protocol -------------------------------------------------------------------------

    @classmethod
    def algorithm(cls) -> type[BaseAlgorithm]:
        """The SB3 algorithm class."""
        return {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}[cls.algo]

    def learn(
        self,
        total_timesteps: int | None = None,
        callback: Callback | None = None,
        progress_bar: bool = False,
        **kwargs: Any,
    ) -> SB3Agent:
        """Train for ``total_timesteps`` more env steps (None: the YAML's ``n_timesteps``);
        SB3 rounds up to whole rollouts. ``callback(agent, metrics)`` returning False stops
        training after the current update. Other keyword arguments go to the SB3 ``learn``."""
        total = self.n_timesteps if total_timesteps is None else total_timesteps
        if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 1:
            raise error.InvalidArgument(f"total_timesteps must be a positive integer, got {total_timesteps!r}")
        every = self.config.callback_every or self.default_callback_every
        sb3_callback = None if callback is None else CallbackAdapter(self, callback, every)
        kwargs.setdefault("reset_num_timesteps", False)
        self.model.learn(int(total), callback=sb3_callback, progress_bar=progress_bar, **kwargs)
        self.num_timesteps = self.model.num_timesteps
        return self

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Actions for a batch of (N, L) observations (or one (L,) observation)."""
        obs = {k: np.asarray(obs[k]) for k in self.model.observation_space.spaces}
        return self.model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)

    def save(self, path: str | Path) -> None:
        """Write ``path/agent.json`` (name, config) and ``path/model.zip`` (SB3's own format)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "model.zip")
        super().save(path)

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | None = None, **overrides: Any) -> SB3Agent:
        """The agent saved in ``path``, on ``env`` (default: the env it was trained on).

        Nothing in the folder is unpickled or evaluated: ``agent.json`` must name this
        agent (else a clear error says what the folder holds, before ``model.zip`` is
        opened); the model is rebuilt from its config (data; class names from
        :data:`ALLOWED_NAMES`), then only the weights (``torch.load(weights_only=True)``)
        and plain JSON counters are read from ``model.zip``. SB3's ``model.zip`` is a pickle
        to SB3's own ``load``: load only folders you trust, and never hand an untrusted one
        to ``stable_baselines3.PPO.load``.
        """
        path = Path(path)
        config = {**cls._saved_config(path), **overrides}
        saved_env = config.pop("env_id", None)
        env = env if env is not None else saved_env
        if env is None:
            raise error.InvalidArgument(f"{path}: the saved agent has no env id; pass env=")
        agent = cls.__new__(cls)
        agent._setup(env, None, config)
        agent.model = agent._build_model()
        agent._load_weights(path / "model.zip")
        agent.num_timesteps = agent.model.num_timesteps
        return agent

    @classmethod
    def _saved_config(cls, path: Path) -> dict[str, Any]:
        """The config in ``path/agent.json``, checked to be a save of this agent (before
        ``model.zip`` is opened)."""
        meta = read_agent_json(path, expected=cls.name)
        if not (path / "model.zip").is_file():
            raise error.InvalidArgument(f"{path} has agent.json but no model.zip: it is not a complete {cls.name} save")
        return meta["config"]

    def _load_weights(self, file: Path) -> None:
        """The weights and counters saved in ``file``, without unpickling anything."""
        try:
            with zipfile.ZipFile(file) as archive:
                data = json.loads(archive.read("data"))
            self.model.set_parameters(str(file), exact_match=True, device=self.config.device)
        except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError, OSError) as e:
            raise error.ModelLoadError(
                f"{file} is damaged or is not the model.zip of this {self.name} agent ({type(e).__name__}: {e})"
            ) from e
        for key in _COUNTERS:
            value = data.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(self.model, key, value)

    def config_dict(self) -> dict[str, Any]:
        config = asdict(self.config)
        config["hyperparams"] = as_data(config["hyperparams"])  # classes by name, loadable again
        return {"env_id": self.env_id, **config}


_COUNTERS = ("num_timesteps", "_n_updates", "_n_calls", "_episode_num", "_current_progress_remaining", "exploration_rate")
"""The plain numbers of SB3's saved ``data`` that :meth:`SB3Agent.load` restores."""


class SB3PPO(SB3Agent):
    """Stable-Baselines3's PPO with :class:`TokenFeaturesExtractor` (hyperparameters: ``ppo.yml``)."""

    name = "sb3-ppo"
    algo = "ppo"


class SB3A2C(SB3Agent):
    """Stable-Baselines3's A2C with :class:`TokenFeaturesExtractor` (hyperparameters: ``a2c.yml``)."""

    name = "sb3-a2c"
    algo = "a2c"


class SB3DQN(SB3Agent):
    """Stable-Baselines3's DQN with :class:`TokenFeaturesExtractor` (hyperparameters: ``dqn.yml``).

    ``predict(deterministic=False)`` is epsilon-greedy at the final exploration rate, as in SB3.
    """

    name = "sb3-dqn"
    algo = "dqn"
    default_callback_every = 1000


class SB3MaskablePPO(SB3Agent):
    """sb3-contrib's MaskablePPO: PPO that samples only the env's valid tokens, in training
    (the env's ``action_masks()``) and in ``predict`` (the env's static mask)
    (hyperparameters: ``maskable_ppo.yml``)."""

    name = "sb3-maskable_ppo"
    algo = "maskable_ppo"

    @classmethod
    def algorithm(cls) -> type[BaseAlgorithm]:
        try:
            from sb3_contrib import MaskablePPO
        except ImportError:
            raise error.missing_extra("sb3-contrib", "sb3", "MaskablePPO") from None
        return MaskablePPO

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Actions for a batch of (N, L) observations (or one (L,)), among the valid tokens only."""
        batch, single = check_obs(obs, self.info.vocab_size)
        batch = {k: np.asarray(batch[k]) for k in self.model.observation_space.spaces}
        masks = None
        if self.action_mask is not None:
            masks = np.repeat(self.action_mask[None], len(batch["input_ids"]), axis=0)  # (N, V)
        actions, state = self.model.predict(
            batch, state=state, episode_start=episode_start, deterministic=deterministic, action_masks=masks,
        )
        return (actions[0] if single else actions), state


# -- SB3 plumbing ----------------------------------------------------------------------------


def _monitored(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    return Monitor(gym.make(env_id, **env_kwargs), info_keywords=("reward_components",))


def make_sb3_vec_env(env: str | gym.Env, n_envs: int, env_kwargs: dict[str, Any] | None = None) -> VecEnv:
    """SB3's ``DummyVecEnv`` of ``n_envs`` envs made from an id (or of one given env), each in
    SB3's ``Monitor``, which records episode returns and ``reward_components`` (nothing else
    changes). The envs are seeded by the SB3 model (``seed + i``)."""
    if isinstance(env, str):
        return DummyVecEnv([lambda: _monitored(env, dict(env_kwargs or {})) for _ in range(n_envs)])
    if isinstance(env, gym.Env):
        if n_envs != 1:
            raise error.InvalidArgument(f"n_envs={n_envs} needs an env id; a gymnasium.Env instance is one env")
        return DummyVecEnv([lambda: Monitor(env, info_keywords=("reward_components",))])
    raise error.InvalidArgument(f"env must be an env id or a gymnasium.Env, got {env!r}")


def training_metrics(model: BaseAlgorithm) -> dict[str, float]:
    """``rollout/ep_rew_mean``, ``rollout/ep_len_mean`` and ``reward/<component>`` over SB3's
    recent episodes, ``time/fps``, and the latest ``train/*`` values SB3 logged."""
    out: dict[str, float] = {}
    episodes = list(model.ep_info_buffer or [])
    if episodes:
        out["rollout/ep_rew_mean"] = float(np.mean([e["r"] for e in episodes]))
        out["rollout/ep_len_mean"] = float(np.mean([e["l"] for e in episodes]))
        for key in episodes[-1].get("reward_components", {}):
            values = [e["reward_components"][key] for e in episodes if key in e.get("reward_components", {})]
            if not key.startswith("_"):
                out[f"reward/{key}"] = float(np.mean(values))
    seconds = max((time.time_ns() - model.start_time) / 1e9, 1e-9)
    out["time/fps"] = float((model.num_timesteps - model._num_timesteps_at_start) / seconds)
    out.update({k: float(v) for k, v in model.logger.name_to_value.items() if k.startswith("train/")})
    return out


class CallbackAdapter(BaseCallback):
    """Calls lm_gym's ``callback(agent, metrics)`` after each rollout (at most once per
    ``every`` env steps when given); a ``False`` answer stops SB3 at its next env step."""

    def __init__(self, agent: SB3Agent, callback: Callback, every: int | None = None) -> None:
        super().__init__()
        self.agent, self.callback, self.every = agent, callback, every
        self.stop = False
        self.last_call = 0

    def _on_step(self) -> bool:
        return not self.stop

    def _on_rollout_end(self) -> None:
        if self.every is not None and self.num_timesteps - self.last_call < self.every:
            return
        self.last_call = self.num_timesteps
        self.agent.num_timesteps = self.num_timesteps
        if self.callback(self.agent, training_metrics(self.model)) is False:
            self.stop = True
