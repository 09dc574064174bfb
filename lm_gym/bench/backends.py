"""Where the cells of a grid run.

A :class:`Backend` takes cells and yields each one's :class:`~lm_gym.bench.runner.CellResult`
as it finishes, in any order. The worker side is always :func:`lm_gym.bench.runner.run_cell`,
which writes everything a cell produces into its own directory, so a backend only moves
cells out and results back: :class:`LocalBackend` uses a process pool on this machine;
a cluster backend (Ray, ...) implements the same two methods and registers itself with
:func:`register_backend`.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_gym import error

if TYPE_CHECKING:
    from lm_gym.bench.config import Cell
    from lm_gym.bench.runner import CellResult

logger = logging.getLogger(__name__)


class Backend(abc.ABC):
    """Runs cells and reports them as they finish.

    Args:
        workers: how many cells may run at once.
    """

    def __init__(self, workers: int = 1, threads: int = 1) -> None:
        for name, value in (("workers", workers), ("threads", threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise error.InvalidArgument(f"{name} must be a positive integer, got {value!r}")
        self.workers = workers
        self.threads = threads

    @abc.abstractmethod
    def run(self, cells: Sequence[Cell], out_dir: Path, **options: Any) -> Iterator[CellResult]:
        """Run every cell with ``run_cell(cell, out_dir, **options)`` and yield its result as
        it completes. A cell that raises yields a result with ``status="failed"``; the
        backend itself raises only if it cannot run cells at all."""

    def close(self) -> None:
        """Release workers (a no-op unless the backend keeps them between runs)."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _init_worker(threads: int) -> None:
    # Runs once in every worker process, before any cell.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)


class LocalBackend(Backend):
    """This machine. ``workers=1`` runs cells one after another in this process; more
    workers run them in a pool of ``workers`` processes (started with ``mp_context``,
    ``"spawn"`` by default, so scripts that call the harness need an
    ``if __name__ == "__main__":`` guard). Each cell runs with ``threads`` torch threads:
    one by default, the fastest for the small models here and never oversubscribing
    the cores when other work shares them."""

    def __init__(self, workers: int = 1, threads: int = 1, mp_context: str = "spawn") -> None:
        super().__init__(workers, threads)
        self.mp_context = mp_context

    def run(self, cells: Sequence[Cell], out_dir: Path, **options: Any) -> Iterator[CellResult]:
        from lm_gym.bench.runner import run_cell

        if not cells:
            return
        threads = self.threads
        if self.workers == 1 or len(cells) == 1:
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for cell in cells:
                    yield run_cell(cell, out_dir, **options)
            finally:
                torch.set_num_threads(previous)
            return

        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        ctx = multiprocessing.get_context(self.mp_context)
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(cells)), mp_context=ctx, initializer=_init_worker, initargs=(threads,)
        )
        pending = {pool.submit(run_cell, cell, out_dir, **options): cell for cell in cells}
        finished = False
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    cell = pending.pop(future)
                    exc = future.exception()
                    if exc is None:
                        yield future.result()
                    else:  # the worker process itself died (run_cell catches cell errors)
                        from lm_gym.bench.runner import CellResult

                        yield CellResult(cell=cell, status="failed", error=repr(exc))
            finished = True
        finally:
            if not finished:
                # Ctrl-C or an abandoned generator: stop the workers now. Their cells lack the
                # done marker, so the next run redoes them. (Executor.terminate_workers is 3.14+.)
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
            pool.shutdown(wait=finished, cancel_futures=True)


BACKENDS: dict[str, type[Backend]] = {"local": LocalBackend}
LAZY_BACKENDS: dict[str, str] = {"ray": "lm_gym.bench.ray_backend:RayBackend"}
"""Backends imported on first use (their dependency is an optional extra)."""


def register_backend(name: str, cls: type[Backend]) -> None:
    """Make ``backend=name`` (and ``lm-gym bench --backend name``) use ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise error.InvalidArgument(f"a backend must be a lm_gym.bench.Backend subclass, got {cls!r}")
    BACKENDS[name] = cls


def get_backend(name: str | Backend, workers: int = 1, threads: int = 1, **options: Any) -> Backend:
    """A backend instance by name (or the instance given); ``options`` go to its constructor
    (e.g. ``address=`` for ``"ray"``)."""
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS and name in LAZY_BACKENDS:
        import importlib

        module, _, attr = LAZY_BACKENDS[name].partition(":")
        BACKENDS[name] = getattr(importlib.import_module(module), attr)
    if name not in BACKENDS:
        raise error.unknown("bench backend", name, {**BACKENDS, **LAZY_BACKENDS})
    return BACKENDS[name](workers=workers, threads=threads, **options)
