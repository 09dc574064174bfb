"""Proxy vs gold: reward over-optimisation (Gao et al. 2022, arxiv.org/abs/2210.10760) in one run.

GRPO fine-tunes the built-in model on lm_gym/SentimentContinuation-v0 with the env's reward
replaced by a *proxy*, the built-in classifier's probability of "positive"
(``reward="classifier:label=positive"``), and no KL penalty, so nothing holds the policy
near the model it started from. Before training and every ``--eval-every`` env steps the
bench cell evaluates it on the same held-out prompts (``split="test"``) and scores those
completions with the proxy and with a *gold* reward it never trains on, VADER's sentiment
``(compound + 1) / 2`` (``gold_reward="vader"``), and measures the mean KL of the policy to
the starting model on them (``eval/kl``, nats per completion). Prints the evaluations and a
few final samples, and plots proxy and gold against KL.

    OMP_NUM_THREADS=1 python benchmarks/proxy_vs_gold.py [--seconds 300] [--plot docs/proxy_vs_gold.png]

The same run from the command line (then ``--replot`` draws its curve.csv):

    lm-gym train lm_gym/SentimentContinuation-v0 --agent grpo -e reward=classifier:label=positive \\
        --gold-reward vader --eval-every 16384 --eval-episodes 128 --kl-coef 0 --learning-rate 1e-4 \\
        --timesteps 100000000 --time-budget 300 --out runs/proxy_vs_gold
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import torch

from lm_gym.bench.config import Cell
from lm_gym.bench.runner import run_cell

ENV_ID = "lm_gym/SentimentContinuation-v0"


def evaluations(run: Path) -> list[dict[str, float]]:
    """The curve's evaluation rows: timesteps, eval/reward, eval/gold_reward, eval/kl."""
    rows = csv.DictReader((run / "curve.csv").open())
    keys = ("timesteps", "eval/reward", "eval/gold_reward", "eval/kl")
    return [{k: float(r[k]) for k in keys} for r in rows if r.get("eval/reward")]


def plot(evals: list[dict[str, float]], path: Path, title: str) -> None:
    """Left: proxy and gold against KL (points joined in training order); right: the same and
    the KL against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, kl = [e["timesteps"] for e in evals], [e["eval/kl"] for e in evals]
    series = (("eval/reward", "o-", "proxy (trained on): classifier P(positive)"),
              ("eval/gold_reward", "s-", "gold (held out): VADER (compound + 1) / 2"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for key, style, label in series:
        left.plot(kl, [e[key] for e in evals], style, lw=1, label=label)
        right.plot(steps, [e[key] for e in evals], style, lw=1, label=label)
    left.set_xlabel("KL(policy || starting model), nats per completion")
    left.set_ylabel("mean score, held-out prompts")
    left.legend(fontsize=8, loc="lower right")
    right.set_xlabel("env steps (tokens)")
    twin = right.twinx()
    twin.plot(steps, kl, "^--", color="gray", lw=1, label="KL (right axis)")
    twin.set_ylabel("KL, nats per completion", color="gray")
    right.legend(handles=right.get_lines() + twin.get_lines(), fontsize=8, loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training wall-time budget")
    parser.add_argument("--eval-every", type=int, default=16_384, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=128, help="held-out episodes per evaluation")
    parser.add_argument("--agent", default="grpo")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--kl-coef", type=float, default=0.0, help="KL penalty (0: none, so over-optimisation can show)")
    parser.add_argument("--proxy", default="classifier:label=positive", help="the reward trained on (a reward spec)")
    parser.add_argument("--gold", default="vader", help="the held-out gold reward (a reward spec)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/proxy_vs_gold", help="the run's folder (curve.csv, eval.json, samples.jsonl)")
    parser.add_argument("--plot", default="docs/proxy_vs_gold.png", help="the PNG to write")
    parser.add_argument("--replot", action="store_true", help="only plot the run already in --out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)

    if not args.replot:
        shutil.rmtree(out, ignore_errors=True)
        cell = Cell(
            env_id=ENV_ID, agent=args.agent, seed=args.seed, budget=100_000_000, time_budget=args.seconds,
            eval_episodes=args.eval_episodes, eval_seed=1_000_000 + args.seed, eval_every=args.eval_every,
            env_kwargs={"reward": args.proxy}, gold_reward=args.gold,
            agent_kwargs={"kl_coef": args.kl_coef, "learning_rate": args.learning_rate},
        )
        result = run_cell(cell, out.parent, directory=out)
        if result.status != "done":
            raise SystemExit(f"the run failed: {result.error} (see {out / 'error.txt'})")

    evals = evaluations(out)
    print(f"{args.agent} on {ENV_ID}, proxy {args.proxy!r}, gold {args.gold!r}, kl_coef {args.kl_coef}, "
          f"{args.eval_episodes} held-out episodes per evaluation\n")
    print("| env steps | KL (nats) | proxy | gold |")
    print("|---|---|---|---|")
    for e in evals:
        print(f"| {int(e['timesteps']):,} | {e['eval/kl']:.2f} | {e['eval/reward']:.3f} | {e['eval/gold_reward']:.3f} |")
    final = json.loads((out / "eval.json").read_text())
    print(f"\nfinal evaluation: proxy {final['mean_reward']:.3f}, gold {final['eval/gold_reward']:.3f}, "
          f"KL {final['eval/kl']:.2f}, distinct-2 {final.get('distinct-2', float('nan')):.3f}, "
          f"{final['num_timesteps']:,} env steps in {final['train_seconds']:.0f} s")
    print("\nfinal samples (held-out prompts):")
    for line in (out / "samples.jsonl").read_text().splitlines()[:6]:
        ep = json.loads(line)
        print(f"  {ep['prompt'][-50:]!r} -> {ep['text']!r}")
    title = f"{args.agent}, {ENV_ID.removeprefix('lm_gym/')}, kl_coef={args.kl_coef}, lr={args.learning_rate}"
    plot(evals, Path(args.plot), title)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
