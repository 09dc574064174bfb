"""LMAgent: the one base class of the LM learners.

It owns everything around an algorithm's update (as Stable-Baselines3's ``OnPolicyAlgorithm``
owns everything around ``train()``):

- construction: the env (an id, an env or a vector env), the policy (the env's pretrained
  LM for a text task, a fresh small GPT-2 sized to the vocabulary for a toy task), the
  optimizer, and the frozen KL reference (the env's own frozen LM when the policy starts
  from it, so the model is not loaded twice);
- the learn loop: rollout -> ``update(batch) -> metrics`` -> log -> checkpoint -> callback,
  with exact resume from the last checkpoint and the torchrun hooks of
  :mod:`agents.distributed`;
- ``predict``, ``save`` / ``load``, the config round trip.

An algorithm is a config dataclass (a subclass of :class:`LMAgentConfig`) and an ``update``;
it declares what its update needs through class attributes (``needs_critic``,
``needs_greedy_baseline``) and the config's ``samples_per_prompt``. Inheritance stops there:
``Agent -> LMAgent -> PPO``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from agents import checkpoint as ckpt
from agents.advantages import kl_k1, kl_k3
from agents.base import Agent, Callback, check_obs
from agents.config import LMAgentConfig, make_config, task_defaults
from agents.lm_policy import Evaluation, LMPolicy
from agents.logger import MetricsLogger
from agents.rollout import RolloutBatch, collect, rollout_metrics, teacher_forced
from lm_gym import error
from lm_gym.envs import EnvInfo

logger = logging.getLogger("agents")

MAX_BAD_STEPS = 3
"""Optimizer steps in a row with a non-finite gradient before training stops with an error."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_policy(info: EnvInfo, cfg: Any, *, seed: int, device: str | torch.device, nlpo: bool = True) -> LMPolicy:
    """The policy for an env: its task's pretrained LM (a trainable copy), or for a toy task a
    fresh small GPT-2 (``cfg.toy_model`` sizes) initialised from ``seed``."""
    kwargs: dict[str, Any] = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    if nlpo and getattr(cfg, "nlpo_top_p", None) is not None:
        kwargs.update(nlpo_top_p=cfg.nlpo_top_p, nlpo_update_every=cfg.nlpo_update_every)
    if info.model_name is None:
        policy = LMPolicy.for_vocab(
            info.vocab_size, n_positions=info.obs_length, seed=seed, eos_token_id=info.eos_token_id,
            pad_token_id=info.pad_token_id, **dict(getattr(cfg, "toy_model", {})), **kwargs,
        )
    else:
        from lm_gym.models import load_model_and_tokenizer

        model, _ = load_model_and_tokenizer(info.model_name)
        policy = LMPolicy(model.train(), **kwargs)
    if policy.vocab_size != info.vocab_size:
        raise error.InvalidArgument(
            f"the policy LM has {policy.vocab_size} logits but the env's action space is "
            f"Discrete({info.vocab_size}); use the env's own model"
        )
    return policy.to(resolve_device(str(device)))


def adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam, as torch's fused kernel where the parameters' device has one (CPU and CUDA,
    torch >= 2.4): the same update in one pass instead of a dozen per parameter."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


class LMAgent(Agent):
    """Base of the LM learners (module docstring). Subclasses set ``name``, ``config_class``
    and implement :meth:`update`.

    Args:
        env: an env id, a ``gym.Env`` or an autoresetting ``gym.vector.VectorEnv``.
        config: the algorithm's config dataclass or a dict; keyword arguments override it.
    """

    name: ClassVar[str] = "lm_agent"
    config_class: ClassVar[type[LMAgentConfig]] = LMAgentConfig
    default_lr: ClassVar[tuple[float, float]] = (1e-3, 5e-5)
    """Adam step size when learning_rate is None: (fresh toy policy, pretrained LM)."""
    needs_critic: ClassVar[bool] = False
    """The update trains the value head (PPO); otherwise the head is left alone."""
    needs_greedy_baseline: ClassVar[bool] = False
    """Each rollout round is replayed greedily from the same prompts (ReMax's baseline)."""

    def __init__(self, env: str | gym.Env | VectorEnv, config: Any = None, **overrides: Any) -> None:
        from agents import distributed

        self.config = cfg = make_config(self.config_class, config, overrides)
        self.dist = distributed.setup(cfg.device)  # None in a single process
        super().__init__(env, n_envs=cfg.n_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
        self.task_defaults = self._task_defaults(config, overrides)
        if self.task_defaults:
            given = config if isinstance(config, dict) else dict(config or {})
            self.config = cfg = make_config(self.config_class, {**self.task_defaults, **given}, overrides)
        cfg.n_envs = self.n_envs
        if self.n_envs % cfg.samples_per_prompt:
            raise error.InvalidArgument(
                f"samples_per_prompt={cfg.samples_per_prompt} must divide the env's {self.n_envs} slots"
            )
        if cfg.policy_seed is None:
            cfg.policy_seed = int(np.random.SeedSequence(cfg.seed).generate_state(1)[0] >> 1)
        self.rng = np.random.default_rng(cfg.seed)
        self.n_updates = 0
        self.pretrained = self.info.model_name is not None
        device = cfg.device if self.dist is None else str(self.dist.device)
        self.policy = build_policy(self.info, cfg, seed=cfg.policy_seed, device=device)
        self.policy.seed(cfg.seed if cfg.seed is not None else cfg.policy_seed)
        if not self.needs_critic:  # the value head stays as it is: no gradient, no Adam state
            self.policy.value_head.requires_grad_(False)
        lr = cfg.learning_rate or self.default_lr[self.pretrained]
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = adam(params, lr)
        self.kl_coef = cfg.resolved_kl_coef(self.pretrained)
        self.reference = self._build_reference() if self.kl_coef > 0 else None
        self._kl_reference: LMPolicy | None = None  # built by reference_policy() when needed
        self._bad_steps = 0
        self.setup()
        if self.dist is not None:
            distributed.prepare_agent(self)  # rank 0's weights everywhere, one RNG stream per rank

    def _build_reference(self) -> LMPolicy:
        """The frozen policy as it was before training: the env's own frozen LM when it lives on
        the policy's device (shared, not loaded again), else a fresh copy."""
        ref_model = self.info.reference
        if ref_model is not None and next(ref_model.parameters()).device == self.policy.device:
            ref = LMPolicy(ref_model, temperature=self.config.temperature)
        else:
            ref = build_policy(self.info, self.config, seed=self.config.policy_seed,
                               device=self.policy.device, nlpo=False)
        return ref.requires_grad_(False).eval()

    def reference_policy(self) -> LMPolicy:
        """The frozen policy that KL is measured against: the training reference, or (when
        training has no KL term) the policy as it was before training, built on first use."""
        if self.reference is not None:
            return self.reference
        if self._kl_reference is None:
            self._kl_reference = self._build_reference()
        return self._kl_reference

    def sequence_kl(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *,
        estimator: str = "k1", chunk: int = 32,
    ) -> np.ndarray:
        """(B,) each completion's KL to :meth:`reference_policy`, summed over its tokens.

        ``"k1"``: ``sum_t log pi(a_t|s_t) - log pi_ref(a_t|s_t)``, the completion's log-ratio,
        whose mean over the policy's own samples estimates KL(pi || pi_ref) of the
        completions (TRL's ``objective/kl``); ``"k3"``: the sum of the non-negative,
        lower-variance k3 terms. Teacher-forced, ``chunk`` rows per forward, no gradient.
        """
        estimators = {"k1": kl_k1, "k3": kl_k3}
        if estimator not in estimators:
            raise error.unknown("KL estimator", estimator, estimators)
        if len(prompt_ids) != len(completion_ids):
            raise error.InvalidArgument(
                f"got {len(prompt_ids)} prompts and {len(completion_ids)} completions; pass one prompt per completion"
            )
        reference, out = self.reference_policy(), []
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                for lo in range(0, len(prompt_ids), chunk):
                    batch = self._token_batch(prompt_ids[lo : lo + chunk], completion_ids[lo : lo + chunk])
                    logprobs = teacher_forced(self.policy, batch, self.action_mask).logprobs  # (b, C)
                    ref_logprobs = teacher_forced(reference, batch, self.action_mask).logprobs  # (b, C)
                    kl = estimators[estimator](logprobs, ref_logprobs, batch.completion_mask)  # (b, C)
                    out.append(kl.sum(1).double().cpu().numpy())
        finally:
            self.policy.train(was_training)
        return np.concatenate(out) if out else np.zeros(0)

    def _token_batch(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]) -> RolloutBatch:
        """Token sequences as a :class:`RolloutBatch` (prompts left-padded, completions
        right-padded) for :func:`teacher_forced`; the fields it does not read are zeros."""
        b = len(prompt_ids)
        p = max(1, max(len(x) for x in prompt_ids))
        c = max(1, max(len(x) for x in completion_ids))
        ids = np.full((b, p + c), self.info.pad_token_id, dtype=np.int64)
        attn = np.zeros((b, p + c), dtype=np.int64)
        for i, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids)):
            ids[i, p - len(prompt) : p], attn[i, p - len(prompt) : p] = prompt, 1
            ids[i, p : p + len(completion)], attn[i, p : p + len(completion)] = completion, 1
        device = self.policy.device
        zeros = torch.zeros((b, c), device=device)
        return RolloutBatch(
            input_ids=torch.as_tensor(ids, device=device), attention_mask=torch.as_tensor(attn, device=device),
            completion_mask=torch.as_tensor(attn[:, p:], device=device).float(), logprobs=zeros, values=zeros,
            rewards=zeros, terminated=torch.zeros(b, dtype=torch.bool, device=device),
        )

    def _task_defaults(self, config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
        """The tuned settings of ``agents/hyperparams/lm/<name>.yml`` for this env id
        (:func:`agents.config.task_defaults`) that the user did not set: none for a config
        dataclass (complete by construction) or an env running a model other than a built-in one."""
        from lm_gym.models import BUILTIN_MODELS

        if is_dataclass(config) or self.info.model_name not in BUILTIN_MODELS:
            return {}
        given = {**dict(config or {}), **overrides}
        tuned = {k: v for k, v in task_defaults(self.name, self.env_id).items() if k not in given}
        if tuned:
            logger.info("%s on %s: the task's tuned defaults %s (agents/hyperparams/lm/%s.yml)",
                        self.name, self.env_id, tuned, self.name)
        return tuned

    # -- what an algorithm provides ---------------------------------------------------------

    def setup(self) -> None:
        """Build the algorithm's own state (controllers, baselines); called once by __init__."""

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """Learn from one rollout batch; returns the update's metrics (``train/*``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement update(batch)")

    def algorithm_state(self) -> dict[str, Any]:
        """The algorithm's state for a checkpoint (JSON-able)."""
        return {"kl_coef": self.kl_coef}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.kl_coef = float(state["kl_coef"])

    # -- what an update calls ---------------------------------------------------------------

    def rollout(self) -> RolloutBatch:
        """One rollout batch (``config.batch_size`` episodes) with the current policy."""
        cfg = self.config
        return collect(
            self.env, self.policy, self.rng, batch_size=cfg.batch_size, group_size=cfg.samples_per_prompt,
            action_mask=self.action_mask, reference=self.reference, greedy_baseline=self.needs_greedy_baseline,
            eos_token_id=self.info.eos_token_id,
        )

    def evaluate_actions(self, batch: RolloutBatch) -> Evaluation:
        """ONE teacher-forced forward of the policy over ``batch``: (B, C) logprobs, values, entropy
        (with gradients only where an entropy bonus uses them: ``ent_coef > 0``)."""
        entropy_grad = getattr(self.config, "ent_coef", 0.0) > 0
        return teacher_forced(self.policy, batch, self.action_mask, entropy_grad=entropy_grad)

    def minibatches(
        self, n: int, size: int | None, shuffle: bool = True, group_size: int = 1
    ) -> Iterator[torch.Tensor]:
        """Row indices of ``n`` rows in chunks of ``size`` (None: one chunk), shuffled with the agent's RNG.

        With ``group_size`` k > 1 dividing ``size`` and ``n``, the shuffle moves whole groups
        (rows ``k g .. k g + k - 1``, the samples of one prompt): each chunk holds complete
        groups, so its teacher-forced pass runs each of its prompts once, not k times.
        """
        size = n if size is None else min(size, n)
        if shuffle and group_size > 1 and size % group_size == 0 and n % group_size == 0:
            groups = self.rng.permutation(n // group_size)
            order = (groups[:, None] * group_size + np.arange(group_size)).reshape(-1)
        else:
            order = self.rng.permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, size):
            yield torch.as_tensor(order[start : start + size], device=self.policy.device)

    def reward_kl(self, batch: RolloutBatch) -> torch.Tensor:
        """(B, C) the per-token k1 KL to the reference at sampling time (0 without one)."""
        if batch.ref_logprobs is None:
            return torch.zeros_like(batch.logprobs)
        return kl_k1(batch.logprobs, batch.ref_logprobs, batch.completion_mask)

    def kl_penalty_coef(self) -> float:
        """The KL weight in the reward (0 when the KL is a loss term instead)."""
        return self.kl_coef if self.config.kl_placement == "reward" else 0.0

    def kl_loss(self, logprobs: torch.Tensor, batch: RolloutBatch) -> torch.Tensor | None:
        """(B, C) the k3 KL of the current policy to the reference, when the KL is a loss term."""
        if self.config.kl_placement != "loss" or batch.ref_logprobs is None or self.kl_coef == 0:
            return None
        return kl_k3(logprobs, batch.ref_logprobs, batch.completion_mask)

    def optimizer_step(self) -> float:
        """Average gradients over ranks (torchrun), clip to ``max_grad_norm``, step, zero; returns the
        pre-clip norm. A non-finite gradient skips the step with a warning; ``MAX_BAD_STEPS`` in a
        row stop training with :class:`lm_gym.error.TrainingError`."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.dist is not None:
            self.dist.average_gradients(params)
        max_norm = self.config.max_grad_norm
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf")))
        if np.isfinite(norm):
            self.optimizer.step()
            # torch's fused Adam updates in place without bumping the version counters that
            # LMPolicy's KV-cache check keys on
            for p in params:  # one at a time: older torch takes one tensor
                torch.autograd.graph.increment_version(p)
            self._bad_steps = 0
        else:
            self._bad_steps += 1
            if self._bad_steps >= MAX_BAD_STEPS:
                self.optimizer.zero_grad(set_to_none=True)
                raise error.TrainingError(
                    f"the gradient was non-finite ({norm}) for {self._bad_steps} optimizer steps in a row, "
                    f"at update {self.n_updates + 1} ({self.num_timesteps} env steps); lower learning_rate "
                    "or check the rewards"
                )
            warnings.warn(f"non-finite gradient norm {norm} at update {self.n_updates + 1}; skipping this "
                          "optimizer step", stacklevel=2)
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def rank_mean(self, value: float) -> float:
        """``value`` averaged over the torchrun ranks (itself in one process): for decisions
        every rank must take alike, or the ranks deadlock."""
        return value if self.dist is None else self.dist.mean(value)

    def old_logprobs(self, batch: RolloutBatch, current: torch.Tensor, single_pass: bool) -> torch.Tensor:
        """The importance-ratio denominator: with one pass over fresh samples the current
        log-probs detached (ratio exactly 1, no extra forward, as TRL), else the rollout's."""
        return current.detach() if single_pass else batch.logprobs

    # -- the protocol -----------------------------------------------------------------------

    def learn(
        self,
        total_timesteps: int,
        callback: Callback | None = None,
        progress_bar: bool = False,
        resume: bool = False,
    ) -> LMAgent:
        """Train ``total_timesteps`` more env steps; with ``resume=True`` first restore the last
        checkpoint in ``run_dir`` and train until ``num_timesteps`` reaches ``total_timesteps``
        (a killed run restarted with the same call continues where its checkpoint left off)."""
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, (int, np.integer)) or total_timesteps < 1:
            raise error.InvalidArgument(f"total_timesteps must be a positive integer, got {total_timesteps!r}")
        target = self._start(int(total_timesteps), resume)
        main = self.dist is None or self.dist.is_main  # only rank 0 writes logs and checkpoints
        run_dir = self.config.run_dir if main else None
        log = MetricsLogger(run_dir, verbose=self.config.verbose if main else 0,
                            tensorboard=self.config.tensorboard and main, start_step=self.num_timesteps)
        bar = None
        if progress_bar and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=target, initial=self.num_timesteps, unit="tok", desc=self.name)
        try:
            self._loop(target, log, bar, callback, run_dir)
        finally:
            if bar is not None:
                bar.close()
            log.close()
        return self

    def _start(self, total_timesteps: int, resume: bool) -> int:
        """Restore for ``resume``, check the run folder, and return the target step count."""
        run_dir = self.config.run_dir
        if resume and run_dir is None:
            raise error.InvalidArgument("resume=True needs run_dir= in the config (where checkpoints are)")
        if run_dir is not None and (self.dist is None or self.dist.is_main):
            for p in ckpt.clean_partial(run_dir):
                logger.info("removed the half-written checkpoint %s", p)
        found = ckpt.checkpoints_of(run_dir) if run_dir is not None else []
        if not resume:
            if found and found[-1].name != ckpt.checkpoint_path(run_dir, self.n_updates).name:
                raise error.InvalidArgument(
                    f"run_dir={run_dir!r} already holds checkpoints of another run (newest {found[-1].name}); "
                    "pass resume=True to continue it, or use an empty run_dir"
                )
            return self.num_timesteps + total_timesteps
        if found:
            self.load_state(found[-1])
            logger.info("resumed from %s at %d timesteps", found[-1], self.num_timesteps)
        else:
            logger.info("resume=True but no checkpoint in %s; starting fresh", run_dir)
        if self.dist is not None:
            from agents import distributed

            distributed.after_resume(self)  # same checkpoint on every rank, fresh RNG per rank
        return total_timesteps

    def _loop(self, target: int, log: MetricsLogger, bar: Any, callback: Callback | None, run_dir: str | None) -> None:
        last_saved = -1
        while self.num_timesteps < target:
            start = time.perf_counter()
            batch = self.rollout()
            metrics = rollout_metrics(batch)
            self.policy.train()
            metrics.update(self.update(batch))
            self.policy.after_update()
            steps = batch.env_steps if self.dist is None else self.dist.sum_steps(batch.env_steps)
            self.num_timesteps += steps
            self.n_updates += 1
            metrics["time/iterations"] = float(self.n_updates)
            metrics["time/fps"] = steps / max(time.perf_counter() - start, 1e-9)
            if self.dist is not None:
                metrics = self.dist.mean_metrics(metrics)
            log.record(metrics, self.num_timesteps)
            if run_dir is not None and self.n_updates % self.config.checkpoint_every == 0:
                self.save_checkpoint()
                last_saved = self.n_updates
            if bar is not None:
                bar.update(steps)
                bar.set_postfix(reward=f"{metrics['rollout/ep_rew_mean']:.3f}")
            stop = callback is not None and callback(self, metrics) is False
            if self.dist is not None:
                stop = self.dist.any(stop)  # every rank stops together, or the others deadlock
            if stop:
                break
        if run_dir is not None and last_saved != self.n_updates and self.n_updates > 0:
            self.save_checkpoint()

    def predict(
        self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """Actions for (N, L) or (L,) observations, KV-cached across calls: a slot whose
        observation extends its cached context by the last action advances the cache, any
        other is prefilled; ``episode_start`` (N,) optionally flags the slots to prefill."""
        return predict_with(self.policy, obs, episode_start, deterministic, self.action_mask, self.info.vocab_size), state

    # -- saving and loading -----------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        return {"env_id": self.env_id, **asdict(self.config)}

    def save(self, path: str | Path) -> None:
        """Write ``path/`` atomically (see :mod:`agents.checkpoint` for what it holds)."""
        ckpt.write_folder(Path(path), self._write)

    def _write(self, folder: Path) -> None:
        ckpt.write_json_atomic(folder / ckpt.AGENT_FILE, {"agent": self.name, "config": self.config_dict()})
        self.policy.save_pretrained(folder / ckpt.POLICY_DIR)
        state = {
            "num_timesteps": self.num_timesteps, "n_updates": self.n_updates,
            "policy_seed": self.config.policy_seed, "rng": self.rng.bit_generator.state,
            "algorithm": self.algorithm_state(),
        }
        ckpt.write_json_atomic(folder / ckpt.STATE_FILE, state)
        trainer = {"optimizer": self.optimizer.state_dict(), "generator": self.policy.sampler_state()}
        torch.save(trainer, folder / ckpt.TRAINER_FILE)

    def save_checkpoint(self) -> Path:
        path = ckpt.checkpoint_path(self.config.run_dir, self.n_updates)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save(path)
        ckpt.prune(self.config.run_dir, self.config.keep_checkpoints)
        logger.debug("checkpoint %s", path)
        return path

    def load_state(self, path: str | Path) -> None:
        """Restore weights, optimizer, counters, RNGs and the algorithm's state from a folder
        :meth:`save` wrote for this agent type."""
        path = Path(path)
        ckpt.read_agent_json(path, expected=self.name)
        state = ckpt.read_state(path)
        trainer = ckpt.read_trainer(path)
        try:
            loaded = LMPolicy.from_pretrained(path / ckpt.POLICY_DIR)
        except Exception as e:  # noqa: BLE001 - safetensors, JSON and HF raise their own types
            raise ckpt.damaged(path / ckpt.POLICY_DIR, f"{type(e).__name__}: {e}") from None
        if loaded.vocab_size != self.policy.vocab_size:
            raise error.CheckpointError(
                f"{path} holds a policy with {loaded.vocab_size} tokens but the env has "
                f"{self.policy.vocab_size}; load it on the env it was trained on"
            )
        self.policy.load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.policy.set_sampler_state(trainer["generator"])
        self.num_timesteps, self.n_updates = int(state["num_timesteps"]), int(state["n_updates"])
        self.rng.bit_generator.state = state["rng"]
        self.load_algorithm_state(state["algorithm"])
        self.policy.reset_cache()

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | VectorEnv | None = None, **overrides: Any) -> LMAgent:
        """The agent saved at ``path``, rebuilt on ``env`` (default: the saved env id)."""
        config = dict(ckpt.read_agent_json(path, expected=cls.name)["config"])
        env_id = config.pop("env_id", None)
        env = env if env is not None else env_id
        if env is None:
            raise error.InvalidArgument(f"{path}: the saved agent has no env id; pass env=")
        if not isinstance(env, str):
            config["env_kwargs"] = {}
        config["policy_seed"] = ckpt.read_state(path)["policy_seed"]
        agent = cls(env, config={**config, **overrides})
        agent.load_state(path)
        return agent


def predict_with(
    policy: LMPolicy, obs: Any, episode_start: Any, deterministic: bool, action_mask: Any, vocab_size: int
) -> np.ndarray | np.int64:
    """One KV-cached step of ``policy`` for a checked observation (single or batched)."""
    batch, single = check_obs(obs, vocab_size)
    new = None if episode_start is None else np.asarray(episode_start, dtype=bool).reshape(-1)
    actions = policy.act(batch, new, action_mask=action_mask, deterministic=deterministic, stats=False).actions
    return actions[0] if single else actions
