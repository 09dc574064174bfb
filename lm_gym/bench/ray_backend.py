"""The Ray backend: every cell of a grid is a Ray task, on this machine or a cluster.

::

    ray start --head                                  # on the head node (then `ray start --address HEAD:6379` on the others)
    lm-gym bench --preset readme --backend ray --address auto --out runs/bench

Each (env, agent, seed) cell is one task that declares what it needs (``num_cpus``: the
grid's ``threads``, ``num_gpus``: ``gpus_per_cell``), so Ray runs as many at once as the
cluster's free resources allow (the grid's ``workers`` does not apply). The task runs
:func:`lm_gym.bench.runner.run_cell` into a scratch directory on its node and returns the
cell's files; the driver writes them under the results directory, the ``done`` marker last.
So the results directory is the one the local backend writes, no shared filesystem is
needed, and rerunning a grid skips the cells whose ``done`` marker exists, as always.
Every node needs lm_gym installed (``pip install 'lm-gym[ray]'``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_gym import error
from lm_gym.bench.backends import Backend

if TYPE_CHECKING:
    from lm_gym.bench.config import Cell
    from lm_gym.bench.runner import CellResult

logger = logging.getLogger(__name__)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise error.missing_extra("ray", "ray", "the Ray bench backend (--backend ray)") from e
    return ray


def run_cell_files(cell: Cell, threads: int, options: dict[str, Any]) -> tuple[CellResult, dict[str, bytes], str]:
    """What a Ray task runs: the cell in a scratch directory with ``threads`` torch threads;
    returns its result, its files (path in the cell directory -> bytes) and its log lines."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from lm_gym.bench.runner import cell_dir, run_cell

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="lm-gym-cell-") as tmp:
        result = run_cell(cell, tmp, **options)
        directory = cell_dir(tmp, cell)
        files = {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
        log = Path(tmp, "bench.log")
        return result, files, log.read_text() if log.is_file() else ""


def write_cell_files(out_dir: Path, cell: Cell, files: dict[str, bytes], log: str) -> None:
    """Put a finished task's files into ``out_dir``'s cell directory, the done marker last
    (atomically), and append its log lines to ``out_dir/bench.log``."""
    from lm_gym.bench.runner import DONE, cell_dir, clear_cell

    directory = cell_dir(out_dir, cell)
    clear_cell(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name == DONE:
            continue
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if DONE in files:
        tmp = directory / (DONE + ".tmp")
        tmp.write_bytes(files[DONE])
        os.replace(tmp, directory / DONE)
    if log:
        with open(out_dir / "bench.log", "a") as f:
            f.write(log)


class RayBackend(Backend):
    """Runs each cell as a Ray task (see the module docstring).

    Args:
        workers: unused (Ray schedules by resources); kept for the Backend signature.
        threads: CPUs each task declares and the torch threads it uses.
        address: the cluster to join: ``"auto"`` (the one ``ray start`` runs here), a
            ``"ray://host:10001"`` client address, or None: ``RAY_ADDRESS`` if set, else a
            new local instance. A Ray already initialised in this process is used as it is.
        gpus_per_cell: GPUs (or a fraction of one) each task declares; give the agents
            ``device="auto"`` (``agent_kwargs``) so they use it.
    """

    def __init__(
        self, workers: int = 1, threads: int = 1, address: str | None = None, gpus_per_cell: float = 0.0
    ) -> None:
        super().__init__(workers, threads)
        if isinstance(gpus_per_cell, bool) or not isinstance(gpus_per_cell, (int, float)) or gpus_per_cell < 0:
            raise error.InvalidArgument(f"gpus_per_cell must be a number >= 0, got {gpus_per_cell!r}")
        self.ray = _import_ray()
        self.address = address
        self.gpus_per_cell = float(gpus_per_cell)
        self._started = False

    def _init(self) -> None:
        if self.ray.is_initialized():
            return
        self.ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        self._started = True

    def run(self, cells: Sequence[Cell], out_dir: Path, **options: Any) -> Iterator[CellResult]:
        from lm_gym.bench.runner import CellResult

        if not cells:
            return
        self._init()
        ray = self.ray
        options = {**options, "progress_bar": False}  # no learner bars from remote tasks
        task = ray.remote(run_cell_files).options(num_cpus=self.threads, num_gpus=self.gpus_per_cell)
        pending = {task.remote(cell, self.threads, options): cell for cell in cells}
        finished = False
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                cell = pending.pop(ref)
                try:
                    result, files, log = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the task or its worker died
                    logger.error("cell %s: the Ray task failed: %r", cell.key, e)
                    yield CellResult(cell=cell, status="failed", error=repr(e))
                    continue
                write_cell_files(Path(out_dir), cell, files, log)
                yield result
            finished = True
        finally:
            if not finished:  # Ctrl-C or an abandoned generator: their cells rerun next time
                for ref in pending:
                    ray.cancel(ref, force=True)

    def close(self) -> None:
        """Shut down the Ray instance if this backend started it."""
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False
