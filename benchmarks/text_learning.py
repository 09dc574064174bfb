"""Learning on every text task: the ``text-suite`` preset (issue 11), run and tabulated.

For each text task (SentimentContinuation, TopicSteering-v1, KeywordStory-v2, Continuation-v1)
the preset runs the random agent, the zero-shot model and the default learners (GRPO and
PPO, 16 prompts x 4 samples an iteration) with 3 seeds, each learning run for a time
budget of one core (``--seconds``, default 300; one torch thread a run, ``--parallel``
runs at a time), and evaluates every run on 128 episodes of the held-out ``split="test"``
prompts. Each run is a cell of the benchmark harness (``lm_gym.bench``): the results
directory keeps curves, evaluations and samples, and a rerun finishes only missing cells.

The table: per task and agent, the final reward's mean over seeds with its 95 % Student-t
interval (:func:`lm_gym.bench.stats.mean_ci`), the gain over the zero-shot row, each
reward component, and the fluency ratio to zero-shot (issue 11 asks: gain >= +0.10 with
fluency >= 0.9 x zero-shot). ``results.md`` next to it has the harness's tables and the
rliable aggregates over normalised scores (:mod:`lm_gym.bench.stats`).

    python benchmarks/text_learning.py --out runs/text_learning [--seconds 300] [--seeds 3] [--parallel 1]

The same grid from the CLI: ``lm-gym bench --preset text-suite --out runs/text_learning``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from lm_gym.bench import preset, run_bench
from lm_gym.bench.config import PRESETS, text_learner_kwargs
from lm_gym.bench.report import CellRecord, group, load_results, short
from lm_gym.bench.stats import mean_ci

SUITE = "text-suite"
COMPONENTS = ("fluency", "relevance", "diversity")


def fmt(value: tuple[float, float, float]) -> str:
    mean, lo, hi = value
    return f"{mean:.3f}" if math.isnan(lo) else f"{mean:.3f} ± {(hi - lo) / 2:.3f}"


def table(records: Sequence[CellRecord], envs: Sequence[str], agents: Sequence[str]) -> str:
    """One Markdown row per task x agent: reward mean ± 95 % CI half-width over seeds, the
    gain over the zero-shot (``model``) mean, the components, fluency / zero-shot, and
    distinct-2 over the evaluation texts (distinct bigrams / bigrams across all of a run's
    episodes): a policy that collapses onto a few sentences keeps its per-episode diversity
    component but loses distinct-2."""
    groups = group(records)
    lines = [
        "| task | agent | seeds | reward (95 % CI) | Δ vs zero-shot | " + " | ".join(COMPONENTS)
        + " | fluency / zero-shot | distinct-2 | env steps |",
        "|---|---|---|---|---|" + "---|" * len(COMPONENTS) + "---|---|---|",
    ]
    for env_id in envs:
        zero = groups.get((env_id, "model"), [])
        zero_reward = mean_ci([r.eval["mean_reward"] for r in zero])[0] if zero else math.nan
        zero_fluency = mean_ci([r.components["fluency"] for r in zero])[0] if zero else math.nan
        for agent in agents:
            runs = groups.get((env_id, agent))
            if not runs:
                continue
            reward = mean_ci([r.eval["mean_reward"] for r in runs])
            comps = {k: mean_ci([r.components.get(k, math.nan) for r in runs])[0] for k in COMPONENTS}
            distinct = mean_ci([r.eval.get("distinct-2", math.nan) for r in runs])[0]
            steps = sum(r.eval.get("num_timesteps", 0) for r in runs) / len(runs)
            name = "zero-shot" if agent == "model" else agent
            lines.append(
                f"| {short(env_id)} | {name} | {len(runs)} | {fmt(reward)} | {reward[0] - zero_reward:+.3f} | "
                + " | ".join(f"{comps[k]:.3f}" for k in COMPONENTS)
                + f" | {comps['fluency'] / zero_fluency:.2f} | {distinct:.3f} | {steps:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def cell_samples(out: Path, env_id: str, agent: str, seed: int) -> list[dict]:
    """The evaluation episodes (``samples.jsonl``) of one finished cell, in order."""
    path = out / env_id.replace("/", "__") / agent / f"seed{seed}" / "samples.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def samples_markdown(out: Path, env_id: str, agent: str, seed: int = 0, n: int = 10, command: str = "") -> str:
    """The first ``n`` held-out evaluation episodes of a trained cell (not picked), beside the
    zero-shot model's completion of the same prompt (its first evaluation episode on that
    prompt: episodes end at different steps, so two runs' episode orders differ), with the
    trained completion's reward and components."""
    trained = cell_samples(out, env_id, agent, seed)[:n]
    zero: dict[str, dict] = {}  # prompt -> the zero-shot model's first episode on it
    for ep in cell_samples(out, env_id, "model", seed):
        zero.setdefault(ep["prompt"], ep)
    lines = [
        f"# {short(env_id)}: ten trained samples" if n == 10 else f"# {short(env_id)}: {n} trained samples",
        "",
        f"The first {n} held-out evaluation episodes (`split=\"test\"`, not picked) of the {agent} run, "
        f"seed {seed} (`samples.jsonl` of its cell), beside the zero-shot model on the same prompt. From:",
        "",
        f"    {command}" if command else "",
        "",
        "| prompt | zero-shot | trained | reward | " + " | ".join(COMPONENTS) + " |",
        "|---|---|---|---|" + "---|" * len(COMPONENTS),
    ]
    for ep in trained:
        comps = ep.get("components", {})
        before = zero.get(ep["prompt"])
        shot = cell(before["text"]) if before is not None else ""
        lines.append(
            f"| {cell(ep['prompt'])} | {shot} | {cell(ep['text'])} | {ep['reward']:.3f} | "
            + " | ".join(f"{comps.get(k, math.nan):.3f}" for k in COMPONENTS) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    base = PRESETS[SUITE]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/text_learning", help="results directory (reruns resume)")
    parser.add_argument("--envs", nargs="*", default=list(base["envs"]))
    parser.add_argument("--learners", nargs="*", default=[a for a in base["agents"] if a not in ("random", "model")])
    parser.add_argument("--seconds", type=float, default=base["time_budget"], help="training seconds per run")
    parser.add_argument("--steps", type=int, default=base["budget"], help="also stop a run after this many env steps")
    parser.add_argument("--seeds", type=int, default=base["seeds"])
    parser.add_argument("--episodes", type=int, default=base["eval_episodes"], help="held-out evaluation episodes per run")
    parser.add_argument("--parallel", type=int, default=base["workers"], help="runs at once (one thread each)")
    parser.add_argument("--samples", metavar="DIR", help="write ten trained samples per task (the best learner, "
                        "seed 0) to DIR/<task>.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    agents = ["random", "model", *args.learners]
    config = preset(
        SUITE, envs=args.envs, agents=agents, seeds=args.seeds, budget=args.steps, time_budget=args.seconds,
        eval_episodes=args.episodes, workers=args.parallel,
        agent_kwargs=text_learner_kwargs(args.learners),
    )
    out = Path(args.out)
    run_bench(config, out, progress=True, report=True)
    records = [r for r in load_results(out) if r.seed in config.seed_list]
    text = table(records, config.envs, agents)
    (out / "text_learning.md").write_text(text)
    if args.samples:
        command = "python benchmarks/text_learning.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
        write_samples(Path(args.samples), out, records, config.envs, args.learners, command)
    print(text)
    return text


def write_samples(directory: Path, out: Path, records: Sequence[CellRecord], envs: Sequence[str],
                  learners: Sequence[str], command: str) -> None:
    """For each task, the learner with the best mean reward: its seed-0 samples, headed by
    ``command``, the command line that made them."""
    groups = group(records)
    directory.mkdir(parents=True, exist_ok=True)
    for env_id in envs:
        scored = [(sum(r.eval["mean_reward"] for r in groups[(env_id, a)]) / len(groups[(env_id, a)]), a)
                  for a in learners if groups.get((env_id, a))]
        if not scored:
            continue
        best = max(scored)[1]
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", short(env_id).split("-")[0]).lower()
        (directory / f"{name}.md").write_text(samples_markdown(out, env_id, best, 0, command=command))


if __name__ == "__main__":
    main()
