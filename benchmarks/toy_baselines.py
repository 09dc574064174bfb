"""SB3 baselines vs lm_gym's learners on every toy id, for the same number of env steps.

Trains each algorithm (SB3 PPO and A2C with ``agents/hyperparams/*.yml``; lm_gym's PPO and
REINFORCE with their config defaults) for ``--timesteps`` env steps per seed on one CPU
thread, evaluates it with ``agents.evaluate`` (sampling, ``--episodes`` episodes on
held-out seeds), and prints an RL-Zoo-style Markdown table: mean reward ± std over the
seeds' evaluation means, the timesteps actually trained (SB3 rounds up to whole rollouts,
lm_gym to whole batches) and the mean wall time of training. A random-agent row per env
is the floor. lm_gym's PPO/REINFORCE rows appear whenever ``agents/ppo.py`` /
``agents/reinforce.py`` import; otherwise they are reported as pending.

    nice python benchmarks/toy_baselines.py --timesteps 20000 --seeds 0 1 2
    nice python benchmarks/toy_baselines.py --envs Copy Reverse --algos sb3-ppo ppo --timesteps 5000
"""

from __future__ import annotations

import argparse
import importlib
import time
from typing import Any

import numpy as np
import torch

import agents
import lm_gym

TOY_IDS = ["Copy", "Reverse", "Addition", "Parentheses", "KeywordToy"]
ALGOS = ["sb3-ppo", "sb3-a2c", "ppo", "reinforce"]


def available(name: str) -> bool:
    """Whether the agent's module imports (lm_gym's PPO/REINFORCE may still be in the works)."""
    module = agents.AGENTS[name].partition(":")[0]
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def run(name: str, env_id: str, seed: int, timesteps: int, episodes: int) -> dict[str, Any]:
    agent = agents.make(name, env_id, seed=seed)
    start = time.perf_counter()
    if name != "random":
        agent.learn(total_timesteps=timesteps)
    wall = time.perf_counter() - start
    result = agents.evaluate(agent, n_episodes=episodes, seed=10_000 + seed)
    return {"mean": result["mean_reward"], "timesteps": int(getattr(agent, "num_timesteps", 0)), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000, help="training env steps per run")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds (one run each)")
    parser.add_argument("--envs", nargs="*", default=TOY_IDS, help="toy ids without the lm_gym/ prefix and -v0")
    parser.add_argument("--algos", nargs="*", default=ALGOS, help="agent names (see agents.AGENTS)")
    parser.add_argument("--episodes", type=int, default=200, help="evaluation episodes per run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    assert lm_gym  # registers the ids

    pending = [a for a in args.algos if not available(a)]
    print(f"{args.timesteps} env steps per run, seeds {args.seeds}, {args.episodes} evaluation episodes\n")
    print("| algo | env | mean reward ± std | timesteps | wall time |")
    print("|---|---|---|---|---|")
    for env in args.envs:
        env_id = env if "/" in env else f"lm_gym/{env}-v0"
        for name in [a for a in args.algos if a not in pending] + ["random"]:
            runs = [run(name, env_id, seed, args.timesteps, args.episodes) for seed in args.seeds]
            means = np.array([r["mean"] for r in runs])
            steps = int(np.mean([r["timesteps"] for r in runs]))
            wall = np.mean([r["wall"] for r in runs])
            print(f"| {name} | {env_id} | {means.mean():.3f} ± {means.std():.3f} | {steps} | {wall:.1f} s |", flush=True)
    if pending:
        print(f"\npending (not importable yet): {', '.join(pending)}")


if __name__ == "__main__":
    main()
