"""Benchmark statistics people trust (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"), computed with ``rliable`` (the ``[stats]`` extra).

Scores are normalised per task so tasks can be aggregated: ``(r - low) / (high - low)``,
with ``low`` the ``random`` agent's mean evaluation reward on that task (over its seeds)
and ``high`` a stated reference, by default the constant 1.0 (every built-in reward lies
in [0, 1], so 1 is a perfect score and a normalised score is the share of the gap from
random to perfect that an agent closes); ``high="model"`` uses the zero-shot policy
instead. Over the normalised ``(seeds, tasks)`` matrix of each agent: the interquartile
mean (IQM) and the mean with stratified-bootstrap 95 % confidence intervals, the
probability of improvement of each agent over each other, and performance profiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lm_gym import error

if TYPE_CHECKING:
    from lm_gym.bench.report import CellRecord

__all__ = ["Aggregates", "aggregate", "aggregates_markdown", "mean_ci", "normalised_scores", "plot_aggregates", "probability_of_improvement"]


def _rliable() -> tuple[Any, Any]:
    try:
        from rliable import library, metrics
    except ImportError:
        raise error.missing_extra("rliable", "stats", "the benchmark statistics") from None
    return library, metrics


def _reference(records: Sequence[CellRecord], env_id: str, ref: str | float, role: str) -> float:
    if not isinstance(ref, str):
        return float(ref)
    values = [r.eval["mean_reward"] for r in records if r.env_id == env_id and r.agent == ref]
    if not values:
        raise error.InvalidArgument(
            f"normalising needs the {ref!r} agent on every env ({role}={ref!r}), but {env_id!r} "
            f"has no {ref!r} cell; run it, or pass {role}= a number"
        )
    return float(np.mean(values))


def normalised_scores(
    records: Sequence[CellRecord], envs: Sequence[str], agents: Sequence[str],
    *, low: str | float = "random", high: str | float = 1.0,
) -> dict[str, np.ndarray]:
    """Agent -> its normalised final rewards, shape ``(seeds, tasks)`` in ``envs`` order,
    for every agent that has the same number of seeds on every env (others are left out).

    Raises:
        InvalidArgument: a reference agent missing on an env, or ``high`` not above ``low``.
    """
    bounds = {}
    for env_id in envs:
        lo, hi = _reference(records, env_id, low, "low"), _reference(records, env_id, high, "high")
        if not hi > lo:
            raise error.InvalidArgument(
                f"on {env_id!r} the reference high={high!r} ({hi:.4g}) is not above low={low!r} "
                f"({lo:.4g}); pick another reference"
            )
        bounds[env_id] = lo, hi
    out = {}
    for agent in agents:
        columns = []
        for env_id in envs:
            rows = sorted((r.seed, r.eval["mean_reward"]) for r in records if r.env_id == env_id and r.agent == agent)
            lo, hi = bounds[env_id]
            columns.append([(v - lo) / (hi - lo) for _, v in rows])
        if columns and len({len(c) for c in columns}) == 1 and columns[0]:
            out[agent] = np.array(columns, dtype=np.float64).T  # (seeds, tasks)
    return out


@dataclass
class Aggregates:
    """What :func:`aggregate` returns; every interval is a 95 % stratified bootstrap CI."""

    scores: dict[str, np.ndarray]
    """Agent -> normalised scores, (seeds, tasks)."""
    iqm: dict[str, tuple[float, float, float]]
    """Agent -> (IQM, CI low, CI high)."""
    mean: dict[str, tuple[float, float, float]]
    """Agent -> (mean, CI low, CI high)."""
    improvement: dict[tuple[str, str], tuple[float, float, float]]
    """(X, Y) -> P(X > Y) with its CI, for each pair with X before Y in agent order
    (``P(Y > X) = 1 - P(X > Y)``)."""
    low: str | float
    high: str | float


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """``P(X > Y)``: over tasks, the mean of the Mann-Whitney statistic of X's runs against
    Y's, ties counting a half; the value of ``rliable.metrics.probability_of_improvement``,
    vectorised (scipy's per-task test made the bootstrap slow). Shapes (runs, tasks)."""
    x, y = scores_x[:, None, :], scores_y[None, :, :]  # (n, 1, T), (1, m, T)
    return float(((x > y) + 0.5 * (x == y)).mean(axis=(0, 1)).mean())


def aggregate(
    records: Sequence[CellRecord], envs: Sequence[str], agents: Sequence[str],
    *, low: str | float = "random", high: str | float = 1.0, reps: int = 2000, seed: int = 0,
) -> Aggregates:
    """IQM and mean with CIs, and probabilities of improvement, over normalised scores."""
    library, metrics = _rliable()
    scores = normalised_scores(records, envs, agents, low=low, high=high)

    def iqm_and_mean(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)  # arch, inside rliable
    points, intervals = library.get_interval_estimates(
        scores, iqm_and_mean, reps=reps, random_state=np.random.RandomState(seed)
    )
    iqm = {a: (float(points[a][0]), *map(float, intervals[a][:, 0])) for a in scores}
    mean = {a: (float(points[a][1]), *map(float, intervals[a][:, 1])) for a in scores}
    names = list(scores)
    pairs = {f"{x},{y}": (scores[x], scores[y]) for i, x in enumerate(names) for y in names[i + 1 :]}
    improvement = {}
    if pairs:
        points, intervals = library.get_interval_estimates(
            pairs, probability_of_improvement, reps=reps, random_state=np.random.RandomState(seed)
        )
        improvement = {tuple(k.split(",", 1)): (float(points[k]), *map(float, intervals[k][:, 0])) for k in pairs}
    return Aggregates(scores, iqm, mean, improvement, low, high)  # type: ignore[arg-type]


def aggregates_markdown(agg: Aggregates) -> str:
    """The aggregate tables: IQM and mean with CIs per agent, P(X > Y) per pair."""
    high = f"{agg.high:g}" if not isinstance(agg.high, str) else f"the {agg.high!r} agent"
    low = f"{agg.low:g}" if not isinstance(agg.low, str) else f"the {agg.low!r} agent"
    lines = [
        f"Normalised score per task: 0 = {low}, 1 = {high}. Aggregates over seeds × tasks "
        "with stratified-bootstrap 95 % CIs (rliable).",
        "",
        "| agent | IQM [95 % CI] | mean [95 % CI] |",
        "|---|---|---|",
    ]
    lines += [
        f"| {a} | {fmt_ci(agg.iqm[a])} | {fmt_ci(agg.mean[a])} |" for a in agg.iqm
    ]
    if agg.improvement:
        lines += ["", "| X | Y | P(X > Y) [95 % CI] |", "|---|---|---|"]
        lines += [f"| {x} | {y} | {fmt_ci(v)} |" for (x, y), v in agg.improvement.items()]
    return "\n".join(lines) + "\n"


def fmt_ci(value: tuple[float, float, float], digits: int = 3) -> str:
    point, lo, hi = value
    return f"{point:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def plot_aggregates(agg: Aggregates, out_dir: Any) -> list[Any]:
    """rliable's plots: ``aggregates.png`` (IQM and mean with CIs),
    ``probability_of_improvement.png`` and ``performance_profile.png``. Returns the paths."""
    from pathlib import Path

    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from rliable import library, plot_utils
    except ImportError:
        raise error.missing_extra("rliable and matplotlib", "stats", "the benchmark statistics plots") from None
    out_dir, agents, written = Path(out_dir), list(agg.scores), []
    point = {a: np.array([agg.iqm[a][0], agg.mean[a][0]]) for a in agents}
    ci = {a: np.array([[agg.iqm[a][1], agg.mean[a][1]], [agg.iqm[a][2], agg.mean[a][2]]]) for a in agents}
    fig, _ = plot_utils.plot_interval_estimates(point, ci, metric_names=["IQM", "Mean"], algorithms=agents,
                                                xlabel="normalised score")
    written.append(out_dir / "aggregates.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    if agg.improvement:
        probs = {f"{x},{y}": v[0] for (x, y), v in agg.improvement.items()}
        cis = {f"{x},{y}": np.array([v[1], v[2]]) for (x, y), v in agg.improvement.items()}
        ax = plot_utils.plot_probability_of_improvement(probs, cis)
        written.append(out_dir / "probability_of_improvement.png")
        ax.figure.savefig(written[-1], dpi=110, bbox_inches="tight")
    taus = np.linspace(min(0.0, *(s.min() for s in agg.scores.values())),
                       max(1.0, *(s.max() for s in agg.scores.values())), 51)
    profiles, profile_cis = library.create_performance_profile(agg.scores, taus, reps=200)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=profile_cis,
                                         xlabel=r"normalised score $\tau$", ax=ax)
    written.append(out_dir / "performance_profile.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close("all")
    return written


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of a few runs (seeds) of one agent on one task with
    its Student-t confidence interval, the interval that holds for 3-5 seeds (a bootstrap
    of 3 values has 10 distinct resamples). One value: its interval is ``(nan, nan)``."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if not len(x):
        raise error.InvalidArgument("mean_ci needs at least one finite value")
    if not 0 < confidence < 1:
        raise error.InvalidArgument(f"confidence must be in (0, 1), got {confidence!r}")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half
