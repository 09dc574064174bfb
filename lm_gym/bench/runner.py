"""Running a grid: one cell at a time in a worker (:func:`run_cell`), the grid in a backend
(:func:`run_bench`).

Every cell writes into its own directory ``<out>/<env>/<agent>/seed<N>/``:

* ``config.json`` — the cell, the agent's resolved config and library versions;
* ``curve.csv`` — one row per update of a learning agent: ``timesteps``, ``time_s``,
  ``reward`` (``rollout/ep_rew_mean``) and each ``reward/<component>``; non-learning agents
  get a single row from the final evaluation; a cell with ``eval_every`` also has
  ``eval/reward``, ``eval/kl`` (and ``eval/gold_reward``) columns, filled on the rows where
  an evaluation ran (a first row at ``timesteps`` 0 before training, then every
  ``eval_every`` env steps) and empty on the others, as Stable-Baselines3's EvalCallback logs;
* ``metrics.jsonl`` — every metric the agent logged, one JSON object per update;
* ``eval.json`` — the final :func:`agents.evaluate` (mean/std reward, components, text metrics;
  ``eval/gold_reward`` and ``eval/kl`` with a gold reward or ``eval_every``) plus ``num_timesteps``, ``train_seconds`` and ``eval_seconds``;
* ``samples.jsonl`` — the evaluation episodes' prompts, texts and rewards;
* ``done`` — written last, atomically. A cell with ``done`` is finished and never rerun; a
  cell without it is cleared and run again, so rerunning an interrupted grid finishes
  only the missing cells.

``<out>/bench.log`` records every cell start and end (one line each, appended).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import inspect
import json
import logging
import os
import platform
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_gym import error
from lm_gym.bench.config import BASELINES, BenchConfig, Cell, is_text_env, split_agent_key

logger = logging.getLogger(__name__)

DONE = "done"
CELL_FILES = ("config.json", "curve.csv", "metrics.jsonl", "eval.json", "samples.jsonl", "error.txt", DONE)
CURVE_FIELDS = ("timesteps", "time_s", "reward")


@dataclass
class CellResult:
    """What a backend reports for a cell: ``status`` is ``"done"``, ``"failed"`` or
    ``"cached"`` (finished by an earlier run)."""

    cell: Cell
    status: str
    eval: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str | None = None


def cell_dir(out_dir: str | Path, cell: Cell) -> Path:
    return Path(out_dir) / cell.key


def is_done(out_dir: str | Path, cell: Cell) -> bool:
    return (cell_dir(out_dir, cell) / DONE).is_file()


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: readers see the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


CURVE_FILES = ("curve.csv", "metrics.jsonl")


def clear_cell(directory: Path, *, keep_curves: bool = False) -> None:
    """Remove what a cell writes (and only that: ``lm-gym train --out`` may name any folder);
    a resuming cell keeps its curves, which its writer cuts back to the resumed step."""
    for name in CELL_FILES:
        if not (keep_curves and name in CURVE_FILES):
            (directory / name).unlink(missing_ok=True)
    if (directory / "agent" / "agent.json").is_file():
        shutil.rmtree(directory / "agent")


def log_event(out_dir: Path, line: str) -> None:
    with open(out_dir / "bench.log", "a") as f:  # one short append per line: safe across processes
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("lm-gym", "torch", "transformers", "gymnasium", "numpy", "stable-baselines3"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


# -- building and driving one agent ---------------------------------------------------------


def resolve_agent(name: str) -> Callable[..., Any]:
    """The factory for an agent name (see ``agents.AGENTS``) or a ``package.module:Class`` path."""
    import agents

    if agents.canonical_name(name) in agents.AGENTS:
        return agents.agent_class(name)
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise error.InvalidArgument(f"cannot import agent {name!r}: {e}") from None
    raise error.unknown("agent", name, agents.AGENTS)


def accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build_agent(cell: Cell) -> Any:
    """The cell's agent: ``factory(env_id, seed=, env_kwargs=, **agent_kwargs)`` (``seed`` and
    ``env_kwargs`` only when the factory takes them)."""
    factory = resolve_agent(cell.agent)
    kwargs = dict(cell.agent_kwargs)
    if accepts(factory, "seed"):
        kwargs.setdefault("seed", cell.seed)
    if cell.env_kwargs:
        if not accepts(factory, "env_kwargs"):
            raise error.InvalidArgument(f"agent {cell.agent!r} takes no env_kwargs, but {cell.env_id} has {cell.env_kwargs}")
        kwargs["env_kwargs"] = dict(cell.env_kwargs)
    return factory(cell.env_id, **kwargs)


def learns(agent: Any, name: str = "") -> bool:
    """Whether the harness trains ``agent``: it has its own ``learn`` and is not a baseline."""
    if name in BASELINES or not callable(getattr(agent, "learn", None)):
        return False
    from agents.base import Agent

    return not (isinstance(agent, Agent) and type(agent).learn is Agent.learn)


def eval_env_kwargs(cell: Cell) -> dict[str, Any]:
    """The evaluation env's keyword arguments: the cell's, on the held-out prompts
    (``split="test"``) of a text task unless the cell names a split; agents train on the
    default ``"train"`` prompts, disjoint from them."""
    if is_text_env(cell.env_id):
        return {"split": "test", **cell.env_kwargs}
    return dict(cell.env_kwargs)


def resume_kwargs(agent: Any, cell: Cell) -> dict[str, Any]:
    """``{"resume": True}`` for a cell that resumes (its agent's ``learn`` must take it)."""
    if not cell.resume:
        return {}
    if not accepts(agent.learn, "resume"):
        raise error.InvalidArgument(f"agent {cell.agent!r} cannot resume: its learn() takes no resume=")
    return {"resume": True}


def check_grid(config: BenchConfig) -> None:
    """Every env id and agent name of a grid exists (before the first cell runs), and so does
    the env of every ``AGENT@ENV_ID`` key of ``agent_kwargs`` (a mistyped one would silently
    never apply)."""
    from lm_gym.registration import check_env_id

    for env_id in config.envs:
        check_env_id(env_id)
    for agent in config.agents:
        resolve_agent(agent)
    for key in config.agent_kwargs:
        env_id = split_agent_key(key)[1]
        if env_id is not None:
            check_env_id(env_id)


def agent_config(agent: Any, cell: Cell) -> dict[str, Any]:
    """The agent's resolved configuration, as JSON-able as it gets."""
    config = getattr(agent, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    if callable(getattr(agent, "config_dict", None)):
        return agent.config_dict()
    return dict(cell.agent_kwargs)


def _finite(value: Any) -> Any:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


class CurveWriter:
    """The learn callback: appends one row to ``curve.csv`` and ``metrics.jsonl`` per update,
    and stops training once the time budget is spent."""

    def __init__(self, directory: Path, time_budget: float | None = None, *, resume: bool = False) -> None:
        self.directory = directory
        self.time_budget = time_budget
        self.resume = resume
        self.start = time.perf_counter()
        self.fields: list[str] | None = None
        self.rows = 0

    def row(self, timesteps: int, metrics: dict[str, Any]) -> dict[str, Any]:
        reward = metrics.get("rollout/ep_rew_mean", metrics.get("mean_reward"))
        row = {"timesteps": int(timesteps), "time_s": round(time.perf_counter() - self.start, 3), "reward": _finite(reward)}
        row.update({k.removeprefix("reward/"): _finite(v) for k, v in metrics.items() if k.startswith("reward/") and not k.startswith("reward/_")})
        row.update({k: _finite(v) for k, v in metrics.items() if k.startswith("eval/")})
        return row

    def write(self, timesteps: int, metrics: dict[str, Any]) -> None:
        row = self.row(timesteps, metrics)
        if self.fields is None:
            kept = self._rows_before(timesteps) if self.resume else ([], [])
            self.fields = list(row)
            with open(self.directory / "curve.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept[0])
            with open(self.directory / "metrics.jsonl", "w") as f:
                f.writelines(kept[1])
        elif not set(row) <= set(self.fields):  # a column first seen now (an evaluation's)
            self._widen([k for k in row if k not in self.fields])
        with open(self.directory / "curve.csv", "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)
        with open(self.directory / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"timesteps": int(timesteps), **{k: _finite(v) for k, v in metrics.items()}}) + "\n")
        self.rows += 1

    def _widen(self, new_fields: list[str]) -> None:
        """Rewrite ``curve.csv`` with ``new_fields`` added (empty in the rows already written)."""
        path = self.directory / "curve.csv"
        rows = list(csv.DictReader(path.open()))
        self.fields = [*self.fields, *new_fields]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def _rows_before(self, timesteps: int) -> tuple[list[dict[str, str]], list[str]]:
        """The rows an interrupted run wrote before the step this resumed run continues from
        (its first new row is at ``timesteps``; rows past its checkpoint are dropped)."""
        curve, lines = self.directory / "curve.csv", self.directory / "metrics.jsonl"
        rows = list(csv.DictReader(curve.open())) if curve.is_file() else []
        old = lines.read_text().splitlines(keepends=True) if lines.is_file() else []
        keep = [r for r in rows if int(float(r["timesteps"])) < timesteps]
        return keep, [ln for ln in old if json.loads(ln).get("timesteps", 0) < timesteps]

    def __call__(self, agent: Any, metrics: dict[str, Any]) -> bool:
        self.write(int(getattr(agent, "num_timesteps", 0)), metrics)
        return self.time_budget is None or time.perf_counter() - self.start < self.time_budget


def run_cell(
    cell: Cell, out_dir: str | Path, *, directory: str | Path | None = None, progress_bar: bool = False
) -> CellResult:
    """Train (if the agent learns) and evaluate one cell, writing its directory
    (``out_dir/cell.key``, or ``directory`` when given); errors are caught, logged to
    ``error.txt`` and reported as ``status="failed"``.

    Under torchrun (``lm-gym train`` with ``WORLD_SIZE > 1``) every rank builds, trains and
    evaluates its share, and only rank 0 writes the directory (plus ``distributed.json``:
    world size, each rank's env steps and final weight digest)."""
    from agents import distributed

    if directory is None:
        out_dir, directory = Path(out_dir), cell_dir(out_dir, cell)
    else:  # a single run (lm-gym train): the log goes next to the results
        out_dir = directory = Path(directory)
    main = distributed.is_main_process()
    if (directory / DONE).is_file():
        return CellResult(cell, "cached", eval=json.loads((directory / "eval.json").read_text()))
    if main:
        clear_cell(directory, keep_curves=cell.resume)  # an interrupted or failed attempt: start over
        (directory / distributed.DIST_FILE).unlink(missing_ok=True)
        directory.mkdir(parents=True, exist_ok=True)
        log_event(out_dir, f"start {cell.key} pid={os.getpid()}")
    start = time.perf_counter()
    try:
        result = _train_and_evaluate(cell, directory, main, progress_bar)
        seconds = time.perf_counter() - start
        if main:
            write_atomic(directory / DONE, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {seconds:.1f}s\n")
            log_event(out_dir, f"done {cell.key} mean_reward={result['mean_reward']:.4f} {seconds:.1f}s")
    except Exception as e:  # noqa: BLE001 - one failed cell must not stop the grid
        if main:
            (directory / "error.txt").write_text(traceback.format_exc())
            log_event(out_dir, f"failed {cell.key}: {e!r}")
        logger.error("cell %s failed: %r (traceback in %s)", cell.key, e, directory / "error.txt")
        return CellResult(cell, "failed", seconds=time.perf_counter() - start, error=repr(e))
    return CellResult(cell, "done", eval=result, seconds=seconds)


def _train_and_evaluate(cell: Cell, directory: Path, main: bool, progress_bar: bool) -> dict[str, Any]:
    """The body of :func:`run_cell`: build, train, save, evaluate; rank 0 writes the files."""
    import agents
    from agents import distributed

    evaluator = eval_callback(cell)  # first: a bad gold reward fails before the agent is built
    agent = build_agent(cell)
    ctx = getattr(agent, "dist", None)
    if distributed.launched() and ctx is None:
        raise error.InvalidArgument(
            f"agent {cell.agent!r} does not train data-parallel under torchrun; use an LM learner "
            f"({', '.join(agents.LM_LEARNERS)}) or run it in one process"
        )
    if main:
        config = {"cell": cell.to_dict(), "agent_config": agent_config(agent, cell), "versions": versions()}
        if ctx is not None:
            config["world_size"] = ctx.world_size
        write_atomic(directory / "config.json", json.dumps(config, indent=2, default=str))
    # Rank 0's writer decides the time budget; learn() stops every rank when it says so.
    writer = CurveWriter(directory, cell.time_budget, resume=cell.resume) if main else None
    train_start = time.perf_counter()
    trained = learns(agent, cell.agent)
    if trained:
        callback = writer
        if evaluator is not None and cell.eval_every is not None:
            if not cell.resume:  # the curve starts at the untrained agent (KL 0)
                first = evaluator.evaluate(agent)
                if writer is not None:
                    writer.write(0, first)
            callback = chain_callbacks(evaluator, writer)  # the evaluator adds eval/* to the row written
        agent.learn(total_timesteps=cell.budget, callback=callback, progress_bar=progress_bar and main,
                    **resume_kwargs(agent, cell))
    train_seconds = time.perf_counter() - train_start
    if ctx is not None:
        _check_ranks_agree(agent, ctx, directory, main)
    if main and cell.save_agent and callable(getattr(agent, "save", None)):
        agent.save(directory / "agent")
    eval_start = time.perf_counter()
    result = agents.evaluate(agent, cell.env_id, n_episodes=cell.eval_episodes, seed=cell.eval_seed,
                             return_episodes=True, **eval_env_kwargs(cell))
    episodes = result.pop("episodes")
    if evaluator is not None:
        result.update(evaluator.score(agent, episodes))
    timesteps = int(getattr(agent, "num_timesteps", 0) or 0)
    result.update(num_timesteps=timesteps, trained=trained, train_seconds=round(train_seconds, 3),
                  eval_seconds=round(time.perf_counter() - eval_start, 3))
    if ctx is not None:
        result["world_size"] = ctx.world_size
    if main:
        if writer is not None and writer.rows == 0:  # non-learning agents (or no callback)
            writer.write(timesteps, {"mean_reward": result["mean_reward"],
                                     **{k: v for k, v in result.items() if k.startswith("reward/")}})
        with open(directory / "samples.jsonl", "w") as f:
            for ep in episodes:
                f.write(json.dumps(dataclasses.asdict(ep)) + "\n")
        write_atomic(directory / "eval.json", json.dumps(result, indent=2, default=str))
    return result


def eval_callback(cell: Cell) -> Any:
    """The cell's :class:`agents.EvalCallback` (on the evaluation prompts, with the cell's
    gold reward), or None when the cell asks for neither ``eval_every`` nor ``gold_reward``."""
    if cell.eval_every is None and cell.gold_reward is None:
        return None
    from agents.callbacks import EvalCallback

    return EvalCallback(cell.env_id, eval_freq=cell.eval_every, n_eval_episodes=cell.eval_episodes,
                        seed=cell.eval_seed, gold_reward=cell.gold_reward, env_kwargs=eval_env_kwargs(cell))


def chain_callbacks(*callbacks: Callable[[Any, dict[str, Any]], Any] | None) -> Callable[[Any, dict[str, Any]], bool]:
    """One learn callback that calls each of ``callbacks`` (None ones skipped) in order, and
    stops training when any returns False."""
    live = [cb for cb in callbacks if cb is not None]

    def run(agent: Any, metrics: dict[str, Any]) -> bool:
        return all([cb(agent, metrics) is not False for cb in live])

    return run


def _check_ranks_agree(agent: Any, ctx: Any, directory: Path, main: bool) -> None:
    """Every rank must end with the same weights (a learner that skipped the gradient
    all-reduce would not); rank 0 records the digests and each rank's env steps."""
    from agents import distributed

    digests = ctx.gather(distributed.param_digest(agent.policy))
    steps = ctx.gather(ctx.local_env_steps)
    if main:
        info = {"world_size": ctx.world_size, "backend": ctx.backend, "num_timesteps": agent.num_timesteps,
                "rank_env_steps": steps, "rank_param_digests": digests}
        write_atomic(directory / distributed.DIST_FILE, json.dumps(info, indent=2))
    if len(set(digests)) != 1:
        raise RuntimeError(f"the ranks' weights differ after training (digests {digests})")


# -- the grid -------------------------------------------------------------------------------


class CellWatch:
    """The bench bar's progress while cells run in other processes: every second it reads each
    running cell's ``curve.csv`` (steps or seconds done of its budget), so the bar moves in
    fractions of cells, its ETA follows the work done, and its label names what is training."""

    def __init__(self, bar: Any, out_dir: Path, cells: list[Cell]) -> None:
        self.bar, self.out_dir, self.running = bar, out_dir, {c.key: c for c in cells}
        self.done = 0
        self._lock = threading.Lock()  # the main thread (a cell finished) and the poller both draw
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def finished(self, cell: Cell) -> None:
        self.running.pop(cell.key, None)
        self.done += 1
        self._show()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self._show()

    def _fraction(self, cell: Cell) -> float:
        """How much of ``cell``'s budget its curve shows done, in [0, 1)."""
        try:
            rows = (cell_dir(self.out_dir, cell) / "curve.csv").read_text().splitlines()
            last = dict(zip(rows[0].split(","), rows[-1].split(","))) if len(rows) > 1 else {}
            done = [float(last["timesteps"]) / cell.budget]
            if cell.time_budget:
                done.append(float(last["time_s"]) / cell.time_budget)
        except (OSError, KeyError, ValueError, IndexError):
            return 0.0
        return min(max(done), 0.99)

    def _show(self) -> None:
        with self._lock:
            started = [(c, self._fraction(c)) for c in list(self.running.values())]
            active = [c for c, f in started if f > 0]
            what = ", ".join(f"{c.agent} on {c.env_id.split('/')[-1]} seed {c.seed}" for c in active[:2])
            self.bar.set_description_str(f"bench: training {what}" if what else "bench", refresh=False)
            progress = self.done + sum(f for _, f in started)
            if progress > self.bar.n:  # update(), not n =: tqdm's rate and ETA follow update()
                self.bar.update(progress - self.bar.n)
            else:
                self.bar.refresh()


def run_bench(
    config: BenchConfig | None = None,
    out: str | Path = "runs/bench",
    *,
    backend: Any = None,
    progress: bool = True,
    report: bool = True,
    **overrides: Any,
) -> list[CellResult]:
    """Run a grid and summarise it.

    Args:
        config: the grid (default :class:`BenchConfig` ()); ``overrides`` replace its fields.
        out: the results directory; cells already finished there (``done``) are skipped.
        backend: a :class:`~lm_gym.bench.backends.Backend` or a registered name
            (default ``config.backend``, ``"local"``).
        progress: a progress bar over cells (and the learner's own bar with one worker).
        report: write ``results.md`` (and the plots when ``config.plots``) after the grid.

    Returns:
        One :class:`CellResult` per cell, in grid order.
    """
    from tqdm.auto import tqdm

    from lm_gym.bench.backends import get_backend

    config = dataclasses.replace(config or BenchConfig(), **overrides) if overrides else (config or BenchConfig())
    check_grid(config)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "bench.json", json.dumps(config.to_dict(), indent=2, default=str))
    for env_id, agent, reason in config.skipped():
        logger.info("skipping %s on %s: %s", agent, env_id, reason)
    cells = config.cells()
    results: dict[str, CellResult] = {}
    todo = []
    for cell in cells:
        if is_done(out_dir, cell):
            results[cell.key] = CellResult(cell, "cached", eval=json.loads((cell_dir(out_dir, cell) / "eval.json").read_text()))
        else:
            todo.append(cell)
    if results:
        logger.info("%d of %d cells already done in %s; running the other %d", len(results), len(cells), out_dir, len(todo))
    runner = get_backend(backend if backend is not None else config.backend, workers=config.workers, threads=config.threads)
    bar = tqdm(total=len(todo), desc="bench", unit="cell", disable=not progress or not todo,
               bar_format="{desc} |{bar}| {n:.1f}/{total} cells [{elapsed}<{remaining}]")
    inline_bars = progress and runner.workers == 1
    watch = CellWatch(bar, out_dir, todo) if progress and not inline_bars and todo else None
    try:
        for result in runner.run(todo, out_dir, progress_bar=inline_bars):
            results[result.cell.key] = result
            if watch is not None:
                watch.finished(result.cell)
            else:
                bar.update(1)
            what = f"{result.eval['mean_reward']:.3f}" if result.eval else f"FAILED ({result.error})"
            if progress:
                bar.write(f"{result.cell.agent} on {result.cell.env_id} seed {result.cell.seed}: {what} [{result.seconds:.0f}s]")
    finally:
        if watch is not None:
            watch.stop()
        bar.close()
        runner.close()
    ordered = [results[c.key] for c in cells if c.key in results]
    failed = [r for r in ordered if r.status == "failed"]
    if failed:
        logger.warning("%d cells failed (see error.txt in each): %s", len(failed), ", ".join(r.cell.key for r in failed))
    if report:
        from lm_gym.bench.report import write_report

        write_report(out_dir, config, plots=config.plots)
    return ordered
