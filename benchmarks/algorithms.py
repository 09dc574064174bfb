"""Every policy-optimisation algorithm on the same tasks, model, batch and wall-clock budget.

For each env (SentimentContinuation on the built-in LM; KeywordToy and Parentheses on fresh
toy policies) and each algorithm of ``agents.LM_LEARNERS``, ``--seeds`` runs train with the
algorithm's defaults and the same batch: 16 prompts x 4 samples (64 completions an
iteration, ``n_envs=64``), one torch thread per run, for a fixed wall-clock budget per env
(``--seconds``). Each run is a cell of the benchmark harness (``lm_gym.bench``), so the
results directory keeps every curve, evaluation and sample, and an interrupted run resumes.

The table: the zero-shot model's reward ("before": the same evaluation of the untrained
policy) -> the trained policy's (mean +- standard error over seeds), the fluency ratio to
zero-shot (text and KeywordToy, whose composite has a fluency term), and seconds per
iteration. Target (issue 10): the best algorithm reaches >= 0.79 on SentimentContinuation
in 180 s of one core (what TRL's GRPOTrainer reached on this machine), fluency within 10 %
of zero-shot.

    nice python benchmarks/algorithms.py --out runs/algorithms [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import agents
from lm_gym.bench import BenchConfig, run_bench
from lm_gym.bench.config import slug

SECONDS = {"lm_gym/SentimentContinuation-v0": 180.0, "lm_gym/KeywordToy-v0": 30.0, "lm_gym/Parentheses-v0": 30.0}
BATCH = {"n_envs": 64, "batch_size": 64, "samples_per_prompt": 4}
"""The same batch for every algorithm: 16 prompts x 4 samples."""
EXTRA = {"reinforce": {"baseline": "leave_one_out"}}
"""REINFORCE with its leave-one-out baseline (RLOO's, by REINFORCE's update)."""


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def read_cell(directory: Path) -> dict[str, float] | None:
    if not (directory / "done").is_file():
        return None
    result = json.loads((directory / "eval.json").read_text())
    with open(directory / "curve.csv") as f:
        updates = sum(1 for _ in csv.DictReader(f))
    result["s_per_iter"] = result["train_seconds"] / updates if result.get("trained") and updates else float("nan")
    return result


def table(out: Path, envs: list[str], names: list[str], seeds: int) -> str:
    lines = ["| algorithm | " + " | ".join(f"{e.split('/')[1]}: before → after" for e in envs)
             + " | fluency / zero-shot | s / iter |",
             "|---|" + "---|" * len(envs) + "---|---|"]
    for name in names:
        cells, fluency, speed = [], [], []
        for env in envs:
            zero = [read_cell(out / slug(env) / "model" / f"seed{s}") for s in range(seeds)]
            runs = [read_cell(out / slug(env) / slug(name) / f"seed{s}") for s in range(seeds)]
            zero, runs = [z for z in zero if z], [r for r in runs if r]
            if not zero or not runs:
                cells.append("-")
                continue
            before, _ = mean_se([z["mean_reward"] for z in zero])
            after, se = mean_se([r["mean_reward"] for r in runs])
            cells.append(f"{before:.3f} → **{after:.3f}** ± {se:.3f}")
            if "reward/fluency" in runs[0]:
                ratio = mean_se([r["reward/fluency"] for r in runs])[0] / mean_se([z["reward/fluency"] for z in zero])[0]
                fluency.append(f"{env.split('/')[1][:9]} {ratio:.2f}")
            speed.append(f"{mean_se([r['s_per_iter'] for r in runs])[0]:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {', '.join(fluency) or '-'} | {' / '.join(speed)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/algorithms", help="results directory (reruns resume)")
    parser.add_argument("--algorithms", nargs="*", default=list(agents.LM_LEARNERS))
    parser.add_argument("--envs", nargs="*", default=list(SECONDS))
    parser.add_argument("--seconds", type=float, nargs="*", default=None,
                        help="wall-clock budget per env, in --envs order (default: 180 text, 30 toy)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=128, help="evaluation episodes per run")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (one thread each)")
    args = parser.parse_args()
    seconds = args.seconds or [SECONDS.get(e, 60.0) for e in args.envs]
    if len(seconds) != len(args.envs):
        raise SystemExit(f"--seconds has {len(seconds)} values for {len(args.envs)} envs")
    out = Path(args.out)
    for env, budget in zip(args.envs, seconds):
        config = BenchConfig(
            envs=[env], agents=["model", *args.algorithms], seeds=args.seeds, budget=10**9, time_budget=budget,
            eval_episodes=args.episodes, workers=args.workers, threads=1, plots=False,
            agent_kwargs={a: {**BATCH, **EXTRA.get(agents.canonical_name(a), {})} for a in args.algorithms},
        )
        run_bench(config, out, progress=True, report=False)
    text = table(out, args.envs, args.algorithms, args.seeds)
    (out / "algorithms.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
