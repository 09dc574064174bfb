"""What the LM learners share: the policy for an env, rollouts, metrics, checkpoints, the loop.

:mod:`agents.reinforce` and :mod:`agents.ppo` each hold one algorithm (its config and its
``update``); everything around the update lives here, as plain functions over the agent:

- :func:`build_policy`: the env's pretrained LM for text tasks (``task.model_name``), a
  fresh small GPT-2 sized to the vocabulary for toy tasks; :func:`build_reference`, its
  frozen copy for the KL penalty.
- :func:`collect`: a rollout of whole episodes with the KV-cached :meth:`LMPolicy.act`,
  into a :class:`RolloutBatch` of O(batch x length) numbers (never x vocabulary), with the
  reference log-probabilities from ONE teacher-forced batched forward after the rollout.
- :class:`MetricsLogger`: STYLE.md metric names to ``logging``, ``progress.csv`` and
  (optionally) TensorBoard.
- :func:`save_agent` / :func:`load_agent_state`: safetensors + JSON checkpoints written
  atomically (a temp dir, then a rename); :func:`learn` runs collect -> update -> log ->
  checkpoint -> callback, and resumes from the last checkpoint.

**Rollout layout.** An update learns from ``rounds x n_envs`` episodes, ``rounds =
ceil(batch_size / n_envs)``. A round resets every slot with a seed drawn from the agent's
RNG (``samples_per_prompt = k`` repeats each seed over ``k`` consecutive slots, so each
group of ``k`` slots gets the same prompt: the groups of the leave-one-out baseline) and
steps until every slot has finished its first episode; steps a slot takes after that
(autoreset already started its next episode) are discarded, as ``model.generate`` pads
finished rows. Truncation at the token budget is terminal for learning: the env scores
the finished text then, so there is nothing to bootstrap (as TRL and RL4LMs).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents.base import (
    Agent,
    autoreset_mode_of,
    read_agent_json,
    text_task_of,
    unbatch,
    write_json_atomic,
)
from agents.lm_policy import LMPolicy, next_tokens
from lm_gym import error

logger = logging.getLogger("agents")

CHECKPOINTS = "checkpoints"
POLICY_DIR = "policy"
STATE_FILE = "state.json"
TRAINER_FILE = "trainer.pt"


# -- the policy ---------------------------------------------------------------------------


def model_name_of(env: Any) -> str | None:
    """The pretrained LM of the env's task (None for toy tasks)."""
    return getattr(text_task_of(env), "model_name", None)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_policy(
    env: Any,
    *,
    seed: int | None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    nlpo_top_p: float | None = None,
    nlpo_update_every: int = 1,
    toy_model: Mapping[str, int] | None = None,
    device: str = "cpu",
) -> LMPolicy:
    """The policy for ``env``: its task's pretrained LM, trainable, or for a toy task a fresh
    small GPT-2 (``toy_model`` sizes: ``n_layer``, ``n_embd``, ``n_head``) initialised from
    ``seed``. Its logit width must equal the env's ``Discrete(V)``."""
    task = text_task_of(env)
    kwargs: dict[str, Any] = dict(
        temperature=temperature, top_k=top_k, top_p=top_p,
        nlpo_top_p=nlpo_top_p, nlpo_update_every=nlpo_update_every,
    )
    name = getattr(task, "model_name", None)
    if name is None:
        width = int(env.single_observation_space["input_ids"].shape[0])
        tok = task.tokenizer
        policy = LMPolicy.for_vocab(
            task.vocab_size, n_positions=width, seed=seed, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, **dict(toy_model or {}), **kwargs,
        )
    else:
        from lm_gym.models import load_model_and_tokenizer

        model, _ = load_model_and_tokenizer(name)
        policy = LMPolicy(model.train(), **kwargs)
    if policy.vocab_size != int(env.single_action_space.n):
        raise error.InvalidArgument(
            f"the policy LM has {policy.vocab_size} logits but the env's action space is "
            f"Discrete({env.single_action_space.n}); use the env's own model"
        )
    return policy.to(resolve_device(device))


def build_reference(env: Any, policy_seed: int, config: Any) -> LMPolicy:
    """The frozen reference of the KL penalty: the policy as it was before training (the
    pretrained LM, or the toy policy's initial weights, rebuilt from ``policy_seed``)."""
    ref = build_policy(
        env, seed=policy_seed, temperature=config.temperature, toy_model=config.toy_model,
        device=config.device,
    )
    return ref.requires_grad_(False).eval()


def predict(
    policy: LMPolicy,
    obs: Any,
    episode_start: Any,
    deterministic: bool,
    action_mask: np.ndarray | None,
) -> np.ndarray | np.int64:
    """One KV-cached step: ``episode_start`` flags slots to prefill (None: all of them)."""
    batch, single = unbatch(obs)
    new = None if episode_start is None else np.asarray(episode_start, dtype=bool).reshape(-1)
    actions = policy.act(batch, new, action_mask=action_mask, deterministic=deterministic, stats=False).actions
    return actions[0] if single else actions


# -- rollouts -----------------------------------------------------------------------------


@dataclass
class RolloutBatch:
    """``B`` finished episodes as padded arrays: prompts left-padded to ``P`` columns,
    completions right-padded to ``C``. Nothing here is ``x V``."""

    input_ids: np.ndarray
    """(B, P + C) int64: prompt then completion tokens."""
    attention_mask: np.ndarray
    """(B, P + C) int64: 1 on real tokens."""
    completion_mask: np.ndarray
    """(B, C) float32: 1 on generated tokens."""
    logprobs: np.ndarray
    """(B, C) float32: log pi_old(a_t | s_t) at sampling time."""
    values: np.ndarray
    """(B, C) float32: V_old(s_t) at sampling time."""
    rewards: np.ndarray
    """(B, C) float32: the env's per-step rewards (the score at the last token)."""
    components: dict[str, np.ndarray] = field(default_factory=dict)
    """name -> (B,) the reward components of each episode."""
    ref_logprobs: np.ndarray | None = None
    """(B, C) float32: log pi_ref(a_t | s_t), or None when no KL penalty is used."""
    env_steps: int = 0
    """Vector-env steps x n_envs spent on this batch (discarded steps included)."""

    @property
    def prompt_width(self) -> int:
        return self.input_ids.shape[1] - self.completion_mask.shape[1]

    @property
    def scores(self) -> np.ndarray:
        """(B,) each episode's return."""
        return self.rewards.sum(1)

    @property
    def lengths(self) -> np.ndarray:
        return self.completion_mask.sum(1)

    def nbytes(self) -> int:
        arrays = [self.input_ids, self.attention_mask, self.completion_mask, self.logprobs,
                  self.values, self.rewards, *self.components.values()]
        if self.ref_logprobs is not None:
            arrays.append(self.ref_logprobs)
        return sum(a.nbytes for a in arrays)

    def tensors(self, device: torch.device, idx: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """The arrays (rows ``idx``) as tensors on ``device``, plus ``actions`` (B, P + C),
        the teacher-forced target of every column (see :func:`completion_slice`)."""
        names = ["input_ids", "attention_mask", "completion_mask", "logprobs", "values", "rewards"]
        if self.ref_logprobs is not None:
            names.append("ref_logprobs")
        rows = slice(None) if idx is None else idx
        return {n: torch.as_tensor(getattr(self, n)[rows], device=device) for n in names}


def completion_slice(batch: RolloutBatch) -> slice:
    """The teacher-forced columns that predict the completion: column ``t`` scores the token
    at ``t + 1``, so completion token ``j`` (column ``P + j``) is read at ``P - 1 + j``."""
    p, c = batch.prompt_width, batch.completion_mask.shape[1]
    return slice(p - 1, p - 1 + c)


def teacher_forced(
    policy: LMPolicy, t: Mapping[str, torch.Tensor], cols: slice, action_mask: np.ndarray | None
) -> Any:
    """ONE forward of ``policy`` over whole sequences; ``Evaluation`` fields cut to the
    completion columns, (B, C) each. Invalid targets (padding) are replaced by a valid token
    so no ``-inf`` enters the masked sums."""
    ids = t["input_ids"]  # (B, P + C)
    actions = next_tokens(ids)
    valid_fill = 0 if action_mask is None else int(np.flatnonzero(action_mask)[0])
    target = torch.full_like(actions, valid_fill)
    target[:, cols] = torch.where(t["completion_mask"] > 0, actions[:, cols], valid_fill)
    ev = policy.logprobs_of(ids, t["attention_mask"], target, action_mask=action_mask)
    ev.logprobs, ev.values, ev.entropy = ev.logprobs[:, cols], ev.values[:, cols], ev.entropy[:, cols]
    return ev


def collect(agent: Any, reference: LMPolicy | None) -> RolloutBatch:
    """Roll out ``ceil(batch_size / n_envs)`` rounds of one episode per slot (module docstring).

    ``agent`` supplies ``env``, ``policy``, ``rng`` (numpy), ``action_mask`` and ``config``
    (``batch_size``, ``samples_per_prompt``). With ``reference``, the batch's
    ``ref_logprobs`` come from one teacher-forced forward of it over the whole batch.
    """
    env, policy, cfg = agent.env, agent.policy, agent.config
    n, k = env.num_envs, cfg.samples_per_prompt
    if n % k:
        raise error.InvalidArgument(
            f"samples_per_prompt={k} must divide the number of env slots n_envs={n}"
        )
    mode = autoreset_mode_of(env)
    if mode == AutoresetMode.DISABLED:
        raise error.InvalidArgument("LM agents need a vector env with autoreset (SAME_STEP or NEXT_STEP)")
    episodes: list[dict[str, Any]] = []
    env_steps = 0
    for _ in range(math.ceil(cfg.batch_size / n)):
        seeds = np.repeat(agent.rng.integers(0, 2**31 - 1, size=n // k), k)
        obs, _ = env.reset(seed=[int(s) for s in seeds])
        policy.reset_cache()
        starts = {"input_ids": obs["input_ids"].copy(), "attention_mask": obs["attention_mask"].copy()}
        actions, logprobs, values, rewards = [], [], [], []  # each: list over steps of (N,)
        done_at = np.full(n, -1)  # the step index at which each slot's first episode ended
        comps: dict[str, np.ndarray] = {}
        new = np.ones(n, dtype=bool)
        pending = np.zeros(n, dtype=bool)  # NEXT_STEP: ended, reset arrives on the next step
        step = 0
        while (done_at < 0).any():
            out = policy.act(obs, new, action_mask=agent.action_mask)
            obs, reward, terminated, truncated, infos = env.step(out.actions)
            actions.append(out.actions)
            logprobs.append(out.logprobs)
            values.append(out.values)
            rewards.append(np.asarray(reward, dtype=np.float32))
            ended = (terminated | truncated) & ~pending
            final = infos.get("final_info", {}) if mode == AutoresetMode.SAME_STEP else infos
            for i in np.flatnonzero(ended & (done_at < 0)):
                done_at[i] = step
                for key, v in final.get("reward_components", {}).items():
                    if not key.startswith("_"):
                        comps.setdefault(key, np.zeros(n, dtype=np.float32))[i] = v[i]
            if mode == AutoresetMode.SAME_STEP:
                new = ended
            else:
                new, pending = pending, ended
            step += 1
        env_steps += step * n
        lengths = done_at + 1
        steps = np.arange(step)[None, :] < lengths[:, None]  # (N, steps)
        episodes.append(dict(
            starts=starts, lengths=lengths, mask=steps, components=comps,
            actions=np.stack(actions, 1), logprobs=np.stack(logprobs, 1),
            values=np.stack(values, 1), rewards=np.stack(rewards, 1),
        ))
    batch = _assemble(episodes, env_steps)
    if reference is not None:
        with torch.no_grad():
            t = batch.tensors(reference.device)
            ev = teacher_forced(reference, t, completion_slice(batch), agent.action_mask)
            batch.ref_logprobs = (ev.logprobs * t["completion_mask"]).float().cpu().numpy()
    return batch


def _assemble(rounds: list[dict[str, Any]], env_steps: int) -> RolloutBatch:
    """Concatenate rounds into one batch: prompts trimmed of all-padding columns, then
    completions padded to the longest."""
    p = max(int(r["starts"]["attention_mask"].sum(1).max()) for r in rounds)
    c = max(int(r["lengths"].max()) for r in rounds)

    def cut(x: np.ndarray, dtype: Any) -> np.ndarray:  # (N, steps) -> (N, C), zero past the end
        out = np.zeros((x.shape[0], c), dtype=dtype)
        w = min(c, x.shape[1])
        out[:, :w] = x[:, :w]
        return out

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("ids", "attn", "cmask", "lp", "v", "r")}
    comps: dict[str, list[np.ndarray]] = {}
    for r in rounds:
        m = r["mask"]
        parts["ids"].append(np.concatenate(
            [r["starts"]["input_ids"][:, -p:], cut(r["actions"] * m, np.int64)], 1))
        parts["attn"].append(np.concatenate(
            [r["starts"]["attention_mask"][:, -p:].astype(np.int64), cut(m, np.int64)], 1))
        parts["cmask"].append(cut(m, np.float32))
        parts["lp"].append(cut(r["logprobs"] * m, np.float32))
        parts["v"].append(cut(r["values"] * m, np.float32))
        parts["r"].append(cut(r["rewards"] * m, np.float32))
        for key, v in r["components"].items():
            comps.setdefault(key, []).append(v)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return RolloutBatch(
        input_ids=cat["ids"], attention_mask=cat["attn"], completion_mask=cat["cmask"],
        logprobs=cat["lp"], values=cat["v"], rewards=cat["r"],
        components={k: np.concatenate(v) for k, v in comps.items()}, env_steps=env_steps,
    )


def rollout_metrics(batch: RolloutBatch) -> dict[str, float]:
    out = {
        "rollout/ep_rew_mean": float(batch.scores.mean()),
        "rollout/ep_rew_std": float(batch.scores.std()),
        "rollout/ep_len_mean": float(batch.lengths.mean()),
    }
    out.update({f"reward/{k}": float(v.mean()) for k, v in batch.components.items()})
    return out


# -- metrics ------------------------------------------------------------------------------


class MetricsLogger:
    """Writes each update's metrics to ``logging`` (one compact line), ``run_dir/progress.csv``
    and, with ``tensorboard=True``, TensorBoard event files under ``run_dir/tb``.

    ``verbose=1`` attaches a stdout handler to the ``agents`` logger if it has none, so the
    lines show without configuring ``logging``.
    """

    def __init__(
        self, run_dir: str | Path | None, *, verbose: int = 0, tensorboard: bool = False, start_step: int = 0
    ) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.verbose = verbose
        self.rows: list[dict[str, float]] = []
        self.writer = None
        if verbose and not logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            csv_path = self.run_dir / "progress.csv"
            if csv_path.is_file():  # continuing or resuming: keep the rows up to start_step
                with csv_path.open() as f:
                    rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
                self.rows = [r for r in rows if r.get("time/total_timesteps", 0.0) <= start_step]
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise error.DependencyNotInstalled(
                    "tensorboard=True needs the tensorboard package: pip install tensorboard"
                ) from e
            self.writer = SummaryWriter(str((self.run_dir or Path("runs")) / "tb"))

    def record(self, metrics: Mapping[str, float], step: int) -> None:
        row = {"time/total_timesteps": float(step), **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        logger.log(
            logging.INFO if self.verbose else logging.DEBUG,
            "step %d | %s", step,
            " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "time/total_timesteps"),
        )
        if self.run_dir is not None:
            self._write_csv()
        if self.writer is not None:
            for k, v in row.items():
                self.writer.add_scalar(k, v, step)

    def _write_csv(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        assert self.run_dir is not None
        tmp = self.run_dir / "progress.csv.tmp"
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.run_dir / "progress.csv")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- configs, checkpoints -----------------------------------------------------------------


@dataclass
class LMAgentConfig:
    """Settings every LM learner shares (:class:`agents.PPOConfig` and
    :class:`agents.ReinforceConfig` add their algorithm's)."""

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
    """Weight of the KL penalty to the frozen reference; None: 0 for a toy task (its reference
    is an untrained network), 0.05 for a pretrained LM."""
    nlpo_top_p: float | None = None
    """NLPO masking (Ramamurthy et al. 2022): act only within the top-p set of a periodically
    refreshed copy of the policy (None: off)."""
    nlpo_update_every: int = 4
    """Refresh the NLPO mask model every this many updates."""
    toy_model: dict[str, int] = field(default_factory=lambda: {"n_layer": 2, "n_embd": 64, "n_head": 4})
    """Size of the fresh GPT-2 of a toy task (n_layer, n_embd, n_head)."""
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
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for gym.make_vec when env is an id (e.g. {"alphabet_size": 2})."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> error.InvalidArgument:
            return error.InvalidArgument(f"{name}={getattr(self, name)!r} is invalid: {fix}")

        for name in ("n_envs", "batch_size", "samples_per_prompt", "nlpo_update_every",
                     "checkpoint_every", "keep_checkpoints"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "use an integer >= 1")
        if self.samples_per_prompt > 1 and self.n_envs % self.samples_per_prompt:
            raise bad("samples_per_prompt", f"it must divide n_envs={self.n_envs}")
        for name in ("learning_rate", "max_grad_norm"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise bad(name, "use a number > 0 (or None)")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise bad("temperature", "use a number > 0")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1):
            raise bad("top_k", "use an integer >= 1 or None")
        for name in ("top_p", "nlpo_top_p"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 < v <= 1):
                raise bad(name, "use a number in (0, 1] or None")
        if self.kl_coef is not None and not (isinstance(self.kl_coef, (int, float)) and self.kl_coef >= 0):
            raise bad("kl_coef", "use a number >= 0 (or None for the task's default)")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise bad("device", 'use a torch device such as "cpu", "cuda:0" or "auto"') from None

    def resolved_kl_coef(self, pretrained: bool) -> float:
        return (0.05 if pretrained else 0.0) if self.kl_coef is None else float(self.kl_coef)


def init_lm_agent(
    agent: Any, env: Any, config: LMAgentConfig, default_lr: tuple[float, float] = (1e-3, 1e-5)
) -> None:
    """The construction PPO and REINFORCE share: the env (``Agent.__init__``), RNG, policy,
    optimizer (``default_lr``: (toy, pretrained) when ``learning_rate`` is None), and the KL
    reference when a KL penalty is used. Under torchrun (``WORLD_SIZE > 1``) the agent joins
    the process group and trains data-parallel (:mod:`agents.distributed`)."""
    from agents import distributed

    agent.dist = distributed.setup(config.device)  # None in a single process
    Agent.__init__(agent, env, n_envs=config.n_envs, seed=config.seed, env_kwargs=config.env_kwargs)
    config.n_envs = agent.n_envs
    agent.config = config
    if config.policy_seed is None:
        config.policy_seed = int(np.random.SeedSequence(config.seed).generate_state(1)[0] >> 1)
    agent.policy_seed = config.policy_seed
    agent.rng = np.random.default_rng(config.seed)
    agent.n_updates = 0
    agent.pretrained = model_name_of(agent.env) is not None
    agent.policy = build_policy(
        agent.env, seed=config.policy_seed, temperature=config.temperature, top_k=config.top_k,
        top_p=config.top_p, nlpo_top_p=config.nlpo_top_p, nlpo_update_every=config.nlpo_update_every,
        toy_model=config.toy_model, device=config.device if agent.dist is None else str(agent.dist.device),
    )
    agent.policy.seed(config.seed if config.seed is not None else config.policy_seed)
    lr = config.learning_rate or default_lr[agent.pretrained]
    agent.optimizer = torch.optim.Adam([p for p in agent.policy.parameters() if p.requires_grad], lr=lr)
    agent.kl_coef = config.resolved_kl_coef(agent.pretrained)
    agent.reference = (
        build_reference(agent.env, config.policy_seed, config).to(agent.policy.device) if agent.kl_coef > 0 else None
    )
    if agent.dist is not None:
        distributed.prepare_agent(agent)  # rank 0's weights everywhere, one RNG stream per rank


def lm_config_dict(agent: Any) -> dict[str, Any]:
    return {"env_id": agent.env_id, **asdict(agent.config)}


def masked_entropy(entropy: torch.Tensor, mask: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """Mean per-token entropy over ``mask``; detached unless ``with_grad`` (an entropy bonus).

    Without a bonus the entropy is a logged statistic only, so it stays out of ``backward``.
    """
    entropy = entropy if with_grad else entropy.detach()
    return (entropy * mask).sum() / mask.sum().clamp(min=1)


def rank_mean(agent: Any, value: float) -> float:
    """``value`` averaged over the torchrun ranks (``value`` itself in a single process):
    for decisions every rank must take alike."""
    ctx = getattr(agent, "dist", None)
    return value if ctx is None else ctx.mean(value)


def optimizer_step(agent: Any) -> float:
    """Clip the gradient norm (``max_grad_norm``), step, zero; returns the pre-clip norm.

    A non-finite gradient skips the step with a warning (the weights stay finite)."""
    params = [p for p in agent.policy.parameters() if p.requires_grad]
    if getattr(agent, "dist", None) is not None:  # torchrun: the mean gradient over ranks
        agent.dist.average_gradients(params)
    max_norm = agent.config.max_grad_norm
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
    if torch.isfinite(norm):
        agent.optimizer.step()
    else:
        warnings.warn(f"non-finite gradient norm {float(norm)}; skipping this optimizer step", stacklevel=2)
    agent.optimizer.zero_grad(set_to_none=True)
    return float(norm)



def make_config(cls: type, config: Any, overrides: Mapping[str, Any]) -> Any:
    """``cls`` from a config object or dict plus keyword overrides; unknown names are an error."""
    base = {} if config is None else (asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config))
    merged = {**base, **overrides}
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(merged) - names)
    if unknown:
        raise error.InvalidArgument(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
    return cls(**merged)


def save_agent(agent: Any, path: str | Path) -> None:
    """Write ``path/`` atomically: ``agent.json`` (name, config), ``policy/`` (safetensors via
    :meth:`LMPolicy.save_pretrained`), ``state.json`` (counters, RNG state, algorithm state)
    and ``trainer.pt`` (optimizer state, the sampling generator's state)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_json_atomic(tmp / "agent.json", {"agent": agent.name, "config": agent.config_dict()})
    agent.policy.save_pretrained(tmp / POLICY_DIR)
    state = {
        "num_timesteps": agent.num_timesteps,
        "n_updates": agent.n_updates,
        "policy_seed": agent.policy_seed,
        "rng": agent.rng.bit_generator.state,
        "algorithm": agent.algorithm_state(),
    }
    write_json_atomic(tmp / STATE_FILE, state)
    gen = agent.policy._generator
    torch.save(
        {"optimizer": agent.optimizer.state_dict(), "generator": None if gen is None else gen.get_state()},
        tmp / TRAINER_FILE,
    )
    if path.exists():  # replace: move the old one aside first, so one complete copy always exists
        old = path.with_name(f".old-{path.name}-{os.getpid()}")
        path.replace(old)
        tmp.replace(path)
        shutil.rmtree(old)
    else:
        tmp.replace(path)


def read_state(path: str | Path) -> dict[str, Any]:
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise error.InvalidArgument(f"{path} is not a saved LM agent (no {STATE_FILE} in it)")
    return json.loads(file.read_text())


def load_agent_state(agent: Any, path: str | Path) -> None:
    """Restore policy weights, optimizer, counters, RNGs and algorithm state from ``path``."""
    path = Path(path)
    state = read_state(path)
    loaded = LMPolicy.from_pretrained(path / POLICY_DIR)
    agent.policy.load_state_dict(loaded.state_dict())
    trainer = torch.load(path / TRAINER_FILE, map_location="cpu", weights_only=True)
    agent.optimizer.load_state_dict(trainer["optimizer"])
    if trainer["generator"] is not None:
        agent.policy.seed(0)
        agent.policy._generator.set_state(trainer["generator"])
    agent.num_timesteps = int(state["num_timesteps"])
    agent.n_updates = int(state["n_updates"])
    agent.rng.bit_generator.state = state["rng"]
    agent.load_algorithm_state(state["algorithm"])
    agent.policy.reset_cache()


def load_agent(cls: type, path: str | Path, env: Any = None, **overrides: Any) -> Any:
    """``cls`` rebuilt from ``path/agent.json`` on ``env`` (default: the saved env id), then
    its saved weights and state restored."""
    meta = read_agent_json(path)
    config = dict(meta["config"])
    env_id = config.pop("env_id", None)
    env = env if env is not None else env_id
    if env is None:
        raise error.InvalidArgument(f"{path}: the saved agent has no env id; pass env=")
    if not isinstance(env, str):
        config["env_kwargs"] = {}
    config["policy_seed"] = read_state(path)["policy_seed"]
    agent = cls(env, config={**config, **overrides})
    load_agent_state(agent, path)
    return agent


def checkpoints_of(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``run_dir/checkpoints``, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("update_") and (p / STATE_FILE).is_file())


def save_checkpoint(agent: Any) -> Path:
    path = Path(agent.config.run_dir) / CHECKPOINTS / f"update_{agent.n_updates:07d}"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_agent(agent, path)
    for old in checkpoints_of(agent.config.run_dir)[: -agent.config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    logger.debug("checkpoint %s", path)
    return path


# -- the training loop --------------------------------------------------------------------


def learn(
    agent: Any,
    total_timesteps: int,
    update: Callable[[RolloutBatch], dict[str, float]],
    reference: LMPolicy | None,
    callback: Callable[[Agent, dict[str, float]], bool | None] | None = None,
    progress_bar: bool = False,
    resume: bool = False,
) -> Any:
    """collect -> ``update`` -> log -> checkpoint -> callback, until ``total_timesteps``.

    Without ``resume`` the agent trains ``total_timesteps`` more env steps. With
    ``resume=True`` it first restores the last checkpoint in ``config.run_dir`` (if any)
    and trains until ``num_timesteps`` reaches ``total_timesteps``: a killed run restarted
    with the same call continues where its last checkpoint left off.
    """
    cfg = agent.config
    dist_ctx = getattr(agent, "dist", None)  # an agents.distributed.DistContext under torchrun
    main = dist_ctx is None or dist_ctx.is_main  # only rank 0 writes logs and checkpoints
    run_dir = cfg.run_dir if main else None
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, (int, np.integer)) or total_timesteps < 1:
        raise error.InvalidArgument(f"total_timesteps must be a positive integer, got {total_timesteps!r}")
    if resume:
        if cfg.run_dir is None:
            raise error.InvalidArgument("resume=True needs run_dir= in the config (where checkpoints are)")
        found = checkpoints_of(cfg.run_dir)
        if found:
            load_agent_state(agent, found[-1])
            logger.info("resumed from %s at %d timesteps", found[-1], agent.num_timesteps)
        else:
            logger.info("resume=True but no checkpoint in %s; starting fresh", cfg.run_dir)
        if dist_ctx is not None:
            from agents import distributed

            distributed.after_resume(agent)  # same checkpoint on every rank, fresh RNG per rank
        target = int(total_timesteps)
    else:
        target = agent.num_timesteps + int(total_timesteps)
    metrics_log = MetricsLogger(
        run_dir, verbose=cfg.verbose if main else 0, tensorboard=cfg.tensorboard and main,
        start_step=agent.num_timesteps,
    )
    bar = None
    if progress_bar and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=target, initial=agent.num_timesteps, unit="tok", desc=agent.name)
    last_saved = -1
    try:
        while agent.num_timesteps < target:
            start = time.perf_counter()
            batch = collect(agent, reference)
            metrics = rollout_metrics(batch)
            metrics.update(update(batch))
            agent.policy.after_update()
            steps = batch.env_steps if dist_ctx is None else dist_ctx.sum_steps(batch.env_steps)
            agent.num_timesteps += steps
            agent.n_updates += 1
            metrics["time/iterations"] = float(agent.n_updates)
            metrics["time/fps"] = steps / max(time.perf_counter() - start, 1e-9)
            if dist_ctx is not None:
                metrics = dist_ctx.mean_metrics(metrics)
            metrics_log.record(metrics, agent.num_timesteps)
            if run_dir is not None and agent.n_updates % cfg.checkpoint_every == 0:
                save_checkpoint(agent)
                last_saved = agent.n_updates
            if bar is not None:
                bar.update(steps)
                bar.set_postfix(reward=f"{metrics['rollout/ep_rew_mean']:.3f}")
            stop = callback is not None and callback(agent, metrics) is False
            if dist_ctx is not None:
                stop = dist_ctx.any(stop)  # every rank stops together, or the others deadlock
            if stop:
                break
        if run_dir is not None and last_saved != agent.n_updates and agent.n_updates > 0:
            save_checkpoint(agent)
    finally:
        if bar is not None:
            bar.close()
        metrics_log.close()
    return agent
