"""PPO and REINFORCE on lm_gym/SentimentContinuation-v0 with the built-in model, vs zero-shot.

The zero-shot row is the built-in model sampling as it is (``agents.make("model", ...)``).
Each learner fine-tunes that model (with a KL penalty to it) for at most ``--seconds`` of
wall time on one CPU thread, then all are evaluated on the same episodes of the held-out
prompts (``split="test"``; the learners train on ``"train"``).
Prints a table (mean composite reward +- std, each component, Delta vs zero-shot, fluency
as a fraction of zero-shot fluency, timesteps, wall time) and saves a learning curve
(``--plot``, rollout reward per update vs env steps) with matplotlib.

Targets: each learner's mean reward above zero-shot, with fluency within 10 % of
zero-shot fluency (no reward hacking).

    nice python benchmarks/sentiment_learning.py [--seconds 240] [--plot sentiment_learning.png]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import agents
import lm_gym

ENV_ID = "lm_gym/SentimentContinuation-v0"

CONFIGS: dict[str, dict[str, Any]] = {
    "reinforce": dict(n_envs=16, batch_size=32, samples_per_prompt=4, baseline="leave_one_out",
                      learning_rate=3e-5, kl_coef=0.05),
    "ppo": dict(n_envs=16, batch_size=32, minibatch_size=16, n_epochs=2, learning_rate=3e-5,
                kl_coef=0.05),
}


def evaluate(agent: Any, episodes: int, seed: int) -> dict[str, float]:
    return agents.evaluate(agent, ENV_ID, n_episodes=episodes, seed=seed, n_envs=16, split="test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="training wall-time budget per learner")
    parser.add_argument("--episodes", type=int, default=256, help="evaluation episodes")
    parser.add_argument("--agents", nargs="*", default=list(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="sentiment_learning.png", help="learning-curve PNG ('' to skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if ENV_ID not in lm_gym.list_envs():
        raise SystemExit(f"{ENV_ID} is not registered in this version of lm_gym")

    eval_seed = 10_000 + args.seed
    rows: list[tuple[str, dict[str, float], int, float]] = []
    zero = evaluate(agents.make("model", ENV_ID, seed=args.seed), args.episodes, eval_seed)
    rows.append(("model (zero-shot)", zero, 0, 0.0))
    curves: dict[str, list[tuple[int, float]]] = {}
    for name in args.agents:
        agent = agents.make(name, ENV_ID, seed=args.seed, **CONFIGS[name])
        curve: list[tuple[int, float]] = []
        start = time.perf_counter()

        def budget(a: Any, metrics: dict[str, float], curve: list = curve, start: float = start) -> bool:
            curve.append((a.num_timesteps, metrics["rollout/ep_rew_mean"]))
            return time.perf_counter() - start < args.seconds

        agent.learn(10_000_000, callback=budget)
        wall = time.perf_counter() - start
        curves[name] = curve
        rows.append((name, evaluate(agent, args.episodes, eval_seed), agent.num_timesteps, wall))

    comps = [k for k in zero if k.startswith("reward/")]
    head = ["agent", "mean reward ± std", *[c.split("/", 1)[1] for c in comps], "Δ", "fluency/zero-shot", "timesteps", "wall s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, out, steps, wall in rows:
        cells = [name, f"{out['mean_reward']:.3f} ± {out['std_reward']:.3f}",
                 *[f"{out[c]:.3f}" for c in comps],
                 f"{out['mean_reward'] - zero['mean_reward']:+.3f}",
                 f"{out['reward/fluency'] / zero['reward/fluency']:.2f}" if "reward/fluency" in out else "-",
                 str(steps), f"{wall:.0f}"]
        print("| " + " | ".join(cells) + " |", flush=True)

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, curve in curves.items():
            ax.plot([c[0] for c in curve], [c[1] for c in curve], label=name)
        ax.axhline(zero["mean_reward"], color="gray", linestyle="--", label="zero-shot")
        ax.set_xlabel("env steps (tokens)")
        ax.set_ylabel("mean episode reward (rollouts)")
        ax.set_title(ENV_ID)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"learning curve: {args.plot}")


if __name__ == "__main__":
    main()
