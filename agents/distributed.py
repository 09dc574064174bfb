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
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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

    def min(self, value: float) -> float:
        """The smallest ``value`` over ranks (every rank gets the same number)."""
        t = self._tensor([-value])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return -float(t.item())

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
        """Copy rank ``src``'s parameters and buffers into ``module`` on every rank (their
        version counters bumped, as any in-place write would: the policy's caches key on them)."""
        with torch.no_grad():
            tensors = list(module.state_dict(keep_vars=True).values())
            for t in tensors:
                dist.broadcast(t.data, src=src)
        for t in tensors:
            torch.autograd.graph.increment_version(t)  # one at a time: older torch takes one tensor

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
    """Make a freshly built LM agent data-parallel (called by ``LMAgent.__init__``): agree on
    ``policy_seed``, start from rank 0's weights (policy and reference), split the RNGs."""
    ctx: DistContext = agent.dist
    agent.config.policy_seed = ctx.broadcast_int(agent.config.policy_seed)
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
