"""Data-parallel training with ``torch.distributed``: the same learners, launched by torchrun.

::

    torchrun --nproc_per_node 4 -m lm_gym.cli train lm_gym/KeywordToy-v0 --agent ppo --out runs/ddp

Nothing changes in the code that builds or trains an agent. When torchrun's ``WORLD_SIZE``
is above 1, :func:`setup` (called by every LM agent's constructor) joins the process group
(NCCL when the policy lives on a GPU, gloo on CPUs) and the learner becomes data-parallel:

- every rank drives its own vector env (``n_envs`` slots, ``batch_size`` episodes per update:
  both are **per rank**, as DDP's batch size is per process) with its own seed: rank 0
  keeps ``seed``, rank ``r`` draws from ``SeedSequence(seed, spawn_key=(r,))``;
- rank 0's initial weights are broadcast, so every rank starts identical;
- after each backward the gradients are all-reduced and divided by the world size before
  clipping and the optimizer step (the effect of ``DistributedDataParallel``, without wrapping
  the custom policy), so the ranks stay identical;
- data-dependent control flow is agreed on: PPO's early stop on ``target_kl`` uses the mean
  KL over ranks, and training stops when any rank's callback says so;
- ``num_timesteps`` counts the env steps of all ranks; logged metrics are the mean over
  ranks; the final evaluation is spread over the ranks and summarised on rank 0;
- only rank 0 writes ``progress.csv``, TensorBoard files, checkpoints and the saved agent.
  Resuming needs ``run_dir`` on a filesystem every rank can read.

A single process (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) never touches ``torch.distributed``:
:func:`setup` returns None and the learners skip every collective.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import os
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lm_gym import error

logger = logging.getLogger(__name__)

DIST_FILE = "distributed.json"
"""What rank 0 writes next to a ``lm-gym train`` run under torchrun: world size, backend,
each rank's env steps and final parameter digest."""


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise error.InvalidArgument(f"WORLD_SIZE={value!r} is not an integer (torchrun sets it)") from None


def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE > 1``)."""
    return world_size_from_env() > 1


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class DistContext:
    """This process's place in the process group, and the collectives the learners use."""

    world_size: int
    rank: int
    local_rank: int
    backend: str
    """"nccl" or "gloo"."""
    device: torch.device
    """The policy's device on this rank (``cuda:LOCAL_RANK`` with NCCL)."""
    local_env_steps: int = 0
    """Env steps this rank has taken (``num_timesteps`` counts all ranks')."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _tensor(self, values: Iterable[float]) -> torch.Tensor:
        # NCCL reduces CUDA tensors only; gloo takes CPU ones.
        return torch.tensor(list(values), dtype=torch.float64, device=self.device)

    def sum(self, value: float) -> float:
        """``value`` summed over ranks."""
        t = self._tensor([value])
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def mean(self, value: float) -> float:
        """``value`` averaged over ranks (every rank gets the same number)."""
        return self.sum(value) / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank."""
        t = self._tensor([float(bool(flag))])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum_steps(self, steps: int) -> int:
        """This update's env steps over all ranks (and count this rank's own)."""
        self.local_env_steps += int(steps)
        return int(round(self.sum(steps)))

    def mean_metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Each metric averaged over the ranks that logged it (one collective for all)."""
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, {k: float(v) for k, v in metrics.items()})
        out: dict[str, float] = {}
        for key in metrics:
            values = [g[key] for g in gathered if key in g]
            out[key] = float(np.mean(values))
        return out

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """All-reduce the gradients of ``params`` into their mean over ranks, in one flat
        buffer (one collective). A missing gradient counts as zeros, so every rank sends
        the same shapes."""
        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # (n_params,)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n

    def broadcast_module(self, module: torch.nn.Module, src: int = 0) -> None:
        """Copy rank ``src``'s parameters and buffers into ``module`` on every rank."""
        with torch.no_grad():
            for t in module.state_dict(keep_vars=True).values():
                dist.broadcast(t.data, src=src)

    def broadcast_int(self, value: int, src: int = 0) -> int:
        box = [int(value)]
        dist.broadcast_object_list(box, src=src)
        return int(box[0])

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def resolve_backend(device: str) -> tuple[str, torch.device]:
    """(backend, this rank's device) for a config ``device``: a CUDA device (``"auto"``
    with a GPU, ``"cuda"``) becomes ``cuda:LOCAL_RANK`` with NCCL; anything else gloo."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        return "nccl", dev
    return "gloo", dev


def setup(device: str = "cpu") -> DistContext | None:
    """Join torchrun's process group; None (and nothing done) in a single process.

    Reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; initialises the default process
    group once (``env://`` rendezvous: ``MASTER_ADDR``/``MASTER_PORT`` from torchrun) with
    NCCL for a CUDA ``device``, gloo otherwise. A group the caller already initialised is
    reused as it is.
    """
    if not dist.is_available() or (not dist.is_initialized() and not launched()):
        return None
    backend, dev = resolve_backend(device)
    if dist.is_initialized():
        backend = str(dist.get_backend())
    else:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        atexit.register(_destroy)
        logger.info("joined the %s process group as rank %d of %d", backend, dist.get_rank(), dist.get_world_size())
    if dist.get_world_size() == 1:
        return None
    return DistContext(
        world_size=dist.get_world_size(), rank=dist.get_rank(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")), backend=backend, device=dev,
    )


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``: ``seed`` itself on rank 0, an independent stream
    (``SeedSequence(seed, spawn_key=(rank,))``) on the others."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence(int(seed), spawn_key=(rank,)).generate_state(1, np.uint64)[0] >> 1)


def split_rngs(agent: Any, seed: int | None) -> None:
    """Give each rank its own prompt/shuffle RNG and sampling generator, derived from
    ``seed`` (None: draw one from the agent's RNG, identical on every rank after a resume)."""
    ctx: DistContext = agent.dist
    if ctx.rank == 0:
        return
    if seed is None:
        seed = int(agent.rng.integers(0, 2**62))
    s = rank_seed(seed, ctx.rank)
    agent.rng = np.random.default_rng(s)
    agent.policy.seed(s)


def prepare_agent(agent: Any) -> None:
    """Make a freshly built LM agent data-parallel (called by ``init_lm_agent``): agree on
    ``policy_seed``, start from rank 0's weights (policy and reference), split the RNGs."""
    ctx: DistContext = agent.dist
    agent.policy_seed = agent.config.policy_seed = ctx.broadcast_int(agent.policy_seed)
    ctx.broadcast_module(agent.policy)
    if agent.reference is not None:
        ctx.broadcast_module(agent.reference)
    split_rngs(agent, agent.config.seed)


def after_resume(agent: Any) -> None:
    """Every rank loaded the same checkpoint: check that, then split the RNGs again."""
    ctx: DistContext = agent.dist
    steps = ctx.gather(int(agent.num_timesteps))
    if len(set(steps)) != 1:
        raise error.InvalidArgument(
            f"ranks resumed from different checkpoints (num_timesteps per rank {steps}); "
            "run_dir must be on a filesystem every rank can read"
        )
    split_rngs(agent, None)


def param_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in ``state_dict`` order: equal iff the weights are."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- evaluation and `lm-gym train` under torchrun ------------------------------------------


def evaluate(
    agent: Any,
    env: Any,
    n_episodes: int = 100,
    seed: int | None = None,
    *,
    n_envs: int = 8,
    return_episodes: bool = False,
    **env_kwargs: Any,
) -> dict[str, Any]:
    """:func:`agents.evaluate` spread over the ranks: rank ``r`` runs its share of the
    ``n_episodes`` (seed ``seed + r * 10_007``), rank 0 summarises all of them, and every
    rank returns that summary. Without a process group it is :func:`agents.evaluate`."""
    from agents.base import evaluate as evaluate_one
    from agents.base import make_vec_env, run_episodes, summarize

    ctx: DistContext | None = getattr(agent, "dist", None)
    if ctx is None:
        return evaluate_one(agent, env, n_episodes, seed, n_envs=n_envs, return_episodes=return_episodes, **env_kwargs)
    share = n_episodes // ctx.world_size + (ctx.rank < n_episodes % ctx.world_size)
    episodes = []
    if share:
        venv = make_vec_env(env, n_envs if isinstance(env, str) else 1, **env_kwargs)
        episodes = run_episodes(agent, venv, share, seed=None if seed is None else seed + ctx.rank * 10_007)
    everything = [e for part in ctx.gather(episodes) for e in part]
    box: list[Any] = [summarize(everything) if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    out: dict[str, Any] = box[0]
    if return_episodes:
        out["episodes"] = everything
    return out


def run_cell(cell: Any, directory: str | Path, *, progress_bar: bool = False) -> Any:
    """``lm-gym train`` under torchrun: :func:`lm_gym.bench.runner.run_cell` where every rank
    trains and evaluates its share, and only rank 0 writes ``directory`` (the same files,
    plus :data:`DIST_FILE`). Returns the :class:`~lm_gym.bench.runner.CellResult` (with the
    evaluation on every rank).

    Raises:
        RuntimeError: the ranks ended with different weights (a learner that skipped the
            gradient all-reduce).
    """
    from lm_gym.bench import runner

    directory = Path(directory)
    main = is_main_process()
    if main:
        runner.clear_cell(directory)
        (directory / DIST_FILE).unlink(missing_ok=True)
        directory.mkdir(parents=True, exist_ok=True)
        runner.log_event(directory, f"start {cell.key} pid={os.getpid()} world_size={world_size_from_env()}")
    start = time.perf_counter()
    try:
        agent = runner.build_agent(cell)
        ctx: DistContext | None = getattr(agent, "dist", None)
        if ctx is None:
            raise error.InvalidArgument(
                f"agent {cell.agent!r} does not train data-parallel under torchrun; "
                "use ppo or reinforce (or run it in one process)"
            )
        if main:
            config = {"cell": cell.to_dict(), "agent_config": runner.agent_config(agent, cell),
                      "versions": runner.versions(), "world_size": ctx.world_size}
            runner.write_atomic(directory / "config.json", json.dumps(config, indent=2, default=str))
        # Rank 0's writer decides the time budget; learn() stops every rank when it says so.
        writer = runner.CurveWriter(directory, cell.time_budget) if main else None
        train_start = time.perf_counter()
        agent.learn(total_timesteps=cell.budget, callback=writer, progress_bar=progress_bar and main)
        train_seconds = time.perf_counter() - train_start
        digests = ctx.gather(param_digest(agent.policy))
        steps = ctx.gather(ctx.local_env_steps)
        if main:
            info = {"world_size": ctx.world_size, "backend": ctx.backend, "num_timesteps": agent.num_timesteps,
                    "rank_env_steps": steps, "rank_param_digests": digests}
            runner.write_atomic(directory / DIST_FILE, json.dumps(info, indent=2))
        if len(set(digests)) != 1:
            raise RuntimeError(f"the ranks' weights differ after training (digests {digests})")
        if main and cell.save_agent:
            agent.save(directory / "agent")
        eval_start = time.perf_counter()
        result = evaluate(agent, cell.env_id, n_episodes=cell.eval_episodes, seed=cell.eval_seed,
                          return_episodes=True, **cell.env_kwargs)
        episodes = result.pop("episodes")
        result.update(
            num_timesteps=int(agent.num_timesteps), trained=True, train_seconds=round(train_seconds, 3),
            eval_seconds=round(time.perf_counter() - eval_start, 3), world_size=ctx.world_size,
        )
        seconds = time.perf_counter() - start
        if main:
            with open(directory / "samples.jsonl", "w") as f:
                for ep in episodes:
                    f.write(json.dumps(dataclasses.asdict(ep)) + "\n")
            runner.write_atomic(directory / "eval.json", json.dumps(result, indent=2, default=str))
            runner.write_atomic(directory / runner.DONE, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {seconds:.1f}s\n")
            runner.log_event(directory, f"done {cell.key} mean_reward={result['mean_reward']:.4f} {seconds:.1f}s")
    except Exception as e:  # noqa: BLE001 - report like run_cell; torchrun stops the other ranks
        rank = os.environ.get("RANK", "0")
        if main:
            (directory / "error.txt").write_text(traceback.format_exc())
            runner.log_event(directory, f"failed {cell.key}: {e!r}")
        logger.error("rank %s: cell %s failed: %r", rank, cell.key, e)
        return runner.CellResult(cell, "failed", seconds=time.perf_counter() - start, error=repr(e))
    return runner.CellResult(cell, "done", eval=result, seconds=seconds)
