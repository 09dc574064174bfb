"""Reading a results directory back: the Markdown summary and the plots.

:func:`load_results` collects every finished cell under a results directory;
:func:`summary_markdown` turns them into tables (mean ± std over seeds per env × agent);
:func:`plot_results` draws the learning curves (one panel per env) and the final reward
per agent (needs the ``[plot]`` extra, matplotlib); :func:`aggregate_report` adds the
normalised IQM / mean with 95 % CIs and probabilities of improvement (``rliable``, the
``[stats]`` extra, see :mod:`lm_gym.bench.stats`). :func:`write_report` does all of them
and writes ``results.md`` and the PNGs (rliable's among them).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lm_gym import error

if TYPE_CHECKING:
    from lm_gym.bench.config import BenchConfig

logger = logging.getLogger(__name__)


@dataclass
class CellRecord:
    """One finished cell as read from disk."""

    env_id: str
    agent: str
    seed: int
    eval: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)
    """``curve.csv``'s rows (timesteps, time_s, reward, components)."""

    @property
    def components(self) -> dict[str, float]:
        return {k.removeprefix("reward/"): v for k, v in self.eval.items() if k.startswith("reward/")}


def read_curve(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def load_results(out_dir: str | Path) -> list[CellRecord]:
    """Every finished cell (a ``done`` marker) under ``out_dir``, sorted by env, agent, seed."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise error.InvalidArgument(f"results directory {str(out_dir)!r} does not exist")
    records = []
    for done in sorted(out_dir.rglob("done")):
        directory = done.parent
        try:
            cell = json.loads((directory / "config.json").read_text())["cell"]
            evaluation = json.loads((directory / "eval.json").read_text())
        except (OSError, KeyError, json.JSONDecodeError) as e:
            logger.warning("skipping %s: %r", directory, e)
            continue
        records.append(
            CellRecord(cell["env_id"], cell["agent"], int(cell["seed"]), evaluation, read_curve(directory / "curve.csv"))
        )
    return records


def short(env_id: str) -> str:
    return env_id.removeprefix("lm_gym/")


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _orders(records: Sequence[CellRecord], config: BenchConfig | None) -> tuple[list[str], list[str]]:
    envs = list(config.envs) if config else []
    agents = list(config.agents) if config else []
    envs += [r.env_id for r in records if r.env_id not in envs]
    agents += [r.agent for r in records if r.agent not in agents]
    seen = {r.env_id for r in records}, {r.agent for r in records}
    return [e for e in dict.fromkeys(envs) if e in seen[0]], [a for a in dict.fromkeys(agents) if a in seen[1]]


def group(records: Sequence[CellRecord]) -> dict[tuple[str, str], list[CellRecord]]:
    groups: dict[tuple[str, str], list[CellRecord]] = defaultdict(list)
    for r in records:
        groups[r.env_id, r.agent].append(r)
    return groups


def summary_markdown(records: Sequence[CellRecord], config: BenchConfig | None = None) -> str:
    """Two Markdown tables: final mean reward per env (rows) × agent (columns), the best in
    bold; and per env × agent the reward components, episode length, env steps and time."""
    if not records:
        return "No finished cells.\n"
    envs, agent_names = _orders(records, config)
    groups = group(records)
    n_seeds = max(len(v) for v in groups.values())
    n_eval = int(max(r.eval.get("n_episodes", 0) for r in records))
    lines = [
        f"Final evaluation reward, mean ± std over seeds ({n_seeds} seed{'s' * (n_seeds > 1)}, "
        f"{n_eval} episodes each); — = not run.",
        "",
        "| env | " + " | ".join(agent_names) + " |",
        "|---|" + "---|" * len(agent_names),
    ]
    for env_id in envs:
        means = {a: np.mean([r.eval["mean_reward"] for r in groups[env_id, a]]) for a in agent_names if groups.get((env_id, a))}
        best = max(means.values()) if means else None
        cells = []
        for a in agent_names:
            recs = groups.get((env_id, a))
            text = mean_std([r.eval["mean_reward"] for r in recs]) if recs else "—"
            cells.append(f"**{text}**" if recs and means[a] == best and len(means) > 1 else text)
        lines.append(f"| {short(env_id)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per cell group: reward components (mean over seeds), mean episode length, env steps "
        "trained and wall time per seed.",
        "",
        "| env | agent | seeds | reward | components | ep. length | env steps | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id in envs:
        for a in agent_names:
            recs = groups.get((env_id, a))
            if not recs:
                continue
            comps = recs[0].components
            comp_text = ", ".join(f"{k} {np.mean([r.components.get(k, math.nan) for r in recs]):.2f}" for k in comps)
            steps = int(np.mean([r.eval.get("num_timesteps", 0) for r in recs]))
            seconds = np.mean([r.eval.get("train_seconds", 0.0) for r in recs])
            length = np.mean([r.eval.get("mean_ep_length", math.nan) for r in recs])
            lines.append(
                f"| {short(env_id)} | {a} | {len(recs)} | {mean_std([r.eval['mean_reward'] for r in recs])} | "
                f"{comp_text} | {length:.1f} | {steps:,} | {seconds:.0f}s |"
            )
    return "\n".join(lines) + "\n"


# -- plots --------------------------------------------------------------------------------


def _figure(**kwargs: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise error.missing_extra("matplotlib", "plot", "the benchmark plots") from None
    return Figure(**kwargs)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start), as SB3's plots."""
    if window <= 1:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    n = np.minimum(np.arange(1, len(values) + 1), window)
    return (csum[1:] - csum[np.arange(1, len(values) + 1) - n]) / n


def mean_curve(
    curves: Sequence[list[dict[str, float]]], key: str = "reward", points: int = 100, window: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeds' curves (each smoothed over ``window`` updates) on a common grid of env steps,
    up to the shortest run: ``(steps, mean, low, high)`` over seeds."""
    curves = [[r for r in c if not math.isnan(r.get(key, math.nan))] for c in curves]
    curves = [c for c in curves if c]
    if not curves:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    end = min(c[-1]["timesteps"] for c in curves)
    start = max(c[0]["timesteps"] for c in curves)
    steps = np.linspace(start, end, points) if end > start else np.array([end])
    ys = np.stack([
        np.interp(steps, [r["timesteps"] for r in c], smooth(np.array([r[key] for r in c]), window)) for c in curves
    ])
    return steps, ys.mean(0), ys.min(0), ys.max(0)


def plot_curves(ax: Any, records: Sequence[CellRecord], agent_names: Sequence[str], colors: dict[str, Any]) -> None:
    by_agent = defaultdict(list)
    for r in records:
        by_agent[r.agent].append(r)
    span = max((r.curve[-1]["timesteps"] for r in records if r.curve and r.eval.get("trained")), default=1.0) or 1.0
    for a in agent_names:
        recs = by_agent.get(a)
        if not recs:
            continue
        if not any(r.eval.get("trained") for r in recs):  # a baseline: its evaluation as a flat line
            ax.axhline(np.mean([r.eval["mean_reward"] for r in recs]), ls="--", lw=1.2, color=colors[a], label=a)
            continue
        window = max(1, min(len(r.curve) for r in recs) // 20)  # about 5% of the run
        steps, mean, low, high = mean_curve([r.curve for r in recs], window=window)
        if len(steps):
            ax.plot(steps, mean, color=colors[a], label=a)
            ax.fill_between(steps, low, high, color=colors[a], alpha=0.2)
    ax.set_xlim(0, span)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode reward")
    ax.grid(alpha=0.3)


def plot_results(records: Sequence[CellRecord], out_dir: str | Path, config: BenchConfig | None = None) -> list[Path]:
    """Write ``learning_curves.png`` (one panel per env: each learner's training reward,
    smoothed over ~5% of its updates, mean over seeds with the min–max band; baselines as dashed lines at their evaluation
    reward), ``curves/<env>.png`` (the same, one file per env) and ``final_reward.png``
    (evaluation reward per env and agent, error bars = std over seeds). Returns the paths."""
    out_dir = Path(out_dir)
    if not records:
        return []
    envs, agent_names = _orders(records, config)
    colors = {a: f"C{i % 10}" for i, a in enumerate(agent_names)}
    by_env = defaultdict(list)
    for r in records:
        by_env[r.env_id].append(r)
    written = []

    ncols = min(3, len(envs))
    nrows = math.ceil(len(envs) / ncols)
    fig = _figure(figsize=(5 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, env_id in zip(axes, envs):
        plot_curves(ax, by_env[env_id], agent_names, colors)
        ax.set_title(short(env_id))
    for ax in axes[len(envs):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes[: len(envs)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 8))
    written.append(out_dir / "learning_curves.png")
    fig.savefig(written[-1], dpi=110)

    (out_dir / "curves").mkdir(exist_ok=True)
    for env_id in envs:
        fig = _figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        plot_curves(ax, by_env[env_id], agent_names, colors)
        ax.set_title(short(env_id))
        ax.legend(fontsize=8)
        written.append(out_dir / "curves" / f"{env_id.replace('/', '__')}.png")
        fig.savefig(written[-1], dpi=110)

    groups = group(records)
    fig = _figure(figsize=(min(16.0, max(6.0, 0.22 * len(envs) * len(agent_names))), 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(agent_names)
    x = np.arange(len(envs))
    for i, a in enumerate(agent_names):
        means = [np.mean([r.eval["mean_reward"] for r in groups[e, a]]) if groups.get((e, a)) else np.nan for e in envs]
        stds = [np.std([r.eval["mean_reward"] for r in groups[e, a]]) if groups.get((e, a)) else 0.0 for e in envs]
        ax.bar(x + (i - (len(agent_names) - 1) / 2) * width, means, width, yerr=stds, color=colors[a], label=a, capsize=2)
    ax.set_xticks(x, [short(e) for e in envs], rotation=20, ha="right")
    ax.set_ylabel("final evaluation reward")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(agent_names), 4))
    written.append(out_dir / "final_reward.png")
    fig.savefig(written[-1], dpi=110)
    return written


def aggregate_report(records: Sequence[CellRecord], config: BenchConfig | None = None) -> tuple[str, Any]:
    """The normalised aggregates (:mod:`lm_gym.bench.stats`) as Markdown and the
    :class:`~lm_gym.bench.stats.Aggregates`; when they cannot be computed (no rliable, no
    ``random`` agent), a line saying why and ``None``."""
    from lm_gym.bench.stats import aggregate, aggregates_markdown

    envs, agent_names = _orders(records, config)
    try:
        agg = aggregate(records, envs, agent_names)
    except (error.DependencyNotInstalled, error.InvalidArgument) as e:
        logger.info("no aggregate statistics: %s", e)
        return f"Aggregate statistics skipped: {e}\n", None
    return aggregates_markdown(agg), agg


def write_report(
    out_dir: str | Path, config: BenchConfig | None = None, *, plots: bool = True, stats: bool = True
) -> str:
    """Write ``results.md`` (and the plots) for the finished cells under ``out_dir``; return
    the Markdown. With ``stats``, the rliable aggregates over normalised scores follow the
    tables (and their plots), see :mod:`lm_gym.bench.stats`."""
    out_dir = Path(out_dir)
    records = load_results(out_dir)
    if config is not None:
        keep = {(e, a) for e in config.envs for a in config.agents}
        records = [r for r in records if (r.env_id, r.agent) in keep and r.seed in config.seed_list]
    text = summary_markdown(records, config)
    agg = None
    if stats and records:
        section, agg = aggregate_report(records, config)
        text += "\n" + section
    (out_dir / "results.md").write_text(text)
    if plots and records:
        plot_results(records, out_dir, config)
        if agg is not None:
            from lm_gym.bench.stats import plot_aggregates

            plot_aggregates(agg, out_dir)
    return text
