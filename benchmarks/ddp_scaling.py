"""Data-parallel PPO (agents.distributed): 1 process vs N processes under torchrun, with the
same total batch and seeds, on lm_gym/Copy-v0 (2 letters, length 2).

Usage::

    python benchmarks/ddp_scaling.py [--nproc 2] [--seeds 0,1,2] [--timesteps 8000] [--threshold 0.6]

One process trains with ``n_envs=16, batch_size=32, minibatch_size=16``; N processes with
``n_envs=16/N, batch_size=32/N, minibatch_size=16/N`` each, so every optimizer step averages
the gradient of the same 16 episodes and every update learns from the same 32 (from N
independent seed streams). Each run trains ``--timesteps`` env steps (summed over ranks),
then evaluates 200 episodes (spread over the ranks). Prints per run: the env steps at which
the rollout reward (mean over ranks), smoothed over the last 5 updates, first reached
``--threshold``, the final evaluation
reward, and the wall time per update (median over updates after the first). On a machine
with fewer cores than processes, N processes share them: the time per update then shows the
cost of the all-reduce and of sharing, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENV = "lm_gym/Copy-v0"
ENV_KWARGS = {"alphabet_size": 2, "min_length": 2, "max_length": 2}
TOTAL = {"n_envs": 16, "batch_size": 32, "minibatch_size": 16}


def worker(args: argparse.Namespace) -> None:
    """One training run (one rank under torchrun); rank 0 writes the JSON record."""
    import torch

    import agents
    from agents import distributed

    torch.set_num_threads(1)
    world = distributed.world_size_from_env()
    config = {k: v // world for k, v in TOTAL.items()}
    agent = agents.PPO(ENV, env_kwargs=ENV_KWARGS, seed=args.seed, **config)
    times, rewards = [], []
    last = time.perf_counter()

    def record(agent: agents.PPO, metrics: dict[str, float]) -> None:
        nonlocal last
        now = time.perf_counter()
        times.append(now - last)
        last = now
        rewards.append((agent.num_timesteps, metrics["rollout/ep_rew_mean"]))

    start = time.perf_counter()
    agent.learn(args.timesteps, callback=record)
    train_s = time.perf_counter() - start
    result = agents.evaluate(agent, ENV, n_episodes=200, seed=123, **ENV_KWARGS)
    if distributed.is_main_process():
        smoothed = [statistics.mean(r for _, r in rewards[max(0, i - 4) : i + 1]) for i in range(len(rewards))]
        reached = next((rewards[i][0] for i, r in enumerate(smoothed) if i >= 4 and r >= args.threshold), None)
        Path(args.record).write_text(json.dumps({
            "world": world, "seed": args.seed, "updates": len(times), "steps": agent.num_timesteps,
            "reached": reached, "eval": result["mean_reward"], "train_s": train_s,
            "s_per_update": statistics.median(times[1:] or times),
        }))


def launch(nproc: int, seed: int, args: argparse.Namespace, record: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    script = [__file__, "--worker", "--seed", str(seed), "--timesteps", str(args.timesteps),
              "--threshold", str(args.threshold), "--record", str(record)]
    if nproc == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *script]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return json.loads(record.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel runs")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--timesteps", type=int, default=8000, help="env steps per run (all ranks)")
    parser.add_argument("--threshold", type=float, default=0.75, help="smoothed rollout reward to reach")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--record", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import tempfile

    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"PPO on {ENV} {ENV_KWARGS}, total batch {TOTAL}, {args.timesteps} env steps, "
          f"threshold {args.threshold}, {os.cpu_count()} CPU cores\n")
    print(f"(the machine's load average: {os.getloadavg()[0]:.1f})\n")
    print("| processes | seed | updates | env steps to threshold | final eval reward | s / update | train s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, args.nproc):
            for seed in seeds:
                r = launch(nproc, seed, args, Path(tmp) / f"{nproc}-{seed}.json")
                rows.append(r)
                reached = "not reached" if r["reached"] is None else f"{r['reached']:,}"
                print(f"| {nproc} | {seed} | {r['updates']} | {reached} | {r['eval']:.3f} | "
                      f"{r['s_per_update']:.3f} | {r['train_s']:.1f} |", flush=True)
    print("\n| processes | runs reaching threshold | mean eval reward | median s / update |")
    print("|---|---|---|---|")
    for nproc in (1, args.nproc):
        rs = [r for r in rows if r["world"] == nproc]
        print(f"| {nproc} | {sum(r['reached'] is not None for r in rs)}/{len(rs)} | "
              f"{statistics.mean(r['eval'] for r in rs):.3f} | {statistics.median(r['s_per_update'] for r in rs):.3f} |")


if __name__ == "__main__":
    main()
