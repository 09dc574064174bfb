"""One training iteration of each LM learner, split into phases, beside an arithmetic bound.

Configuration (issue 13): SentimentContinuation-v0 on the built-in model, 16 prompts x 4
samples = 64 completions (``--batch 256``: 64 prompts x 4), 24 new tokens, one torch thread.
For each learner it runs ``--iters`` iterations after one warm-up and reports the fastest
iteration's seconds (best of n, as ``timeit``: these machines are shared, and contention only
ever adds time), tokens/s, and where the time went:

- ``decode``: the policy's KV-cached steps (``LMPolicy.act``);
- ``env``: vector-env stepping, minus ``reward`` (scoring the finished episodes);
- ``ref``: the frozen reference's teacher-forced log-probs over the rollout (served from the
  fluency judge's pass when the judge is the same frozen model, ``lm_gym.models.forward``'s
  state memo: then only the LM head runs);
- ``fwd``: the update's teacher-forced forwards; ``bwd``: ``loss.backward()``;
- ``optim``: gradient clipping and the optimizer step; ``log``: metrics and CSV;

and the arithmetic lower bound of the same work: FLOPs (2 x parameters per token forward,
twice that backward; attention neglected) over this core's measured float32 matmul rate:
the decode steps, one teacher-forced pass of the frozen model over the rollout (the fluency
judge's, which the reference shares) and the update's forwards and backwards.

``--baseline PATH`` also times the same configuration on another checkout (e.g. a worktree
of commit 9058b6f: ``git worktree add /tmp/base 9058b6f``) in a subprocess, totals only,
and prints the ratio of the two in one run; ``--rounds N`` alternates the two N times (the
baseline once more at the end), each side keeping its fastest run, and prints issue 13's
targets against it (REINFORCE with leave-one-out and 1-epoch PPO <= 0.5 x the baseline's
same learner, PPO's defaults <= 1.0 x the baseline's 1-epoch PPO). ``--profile`` prints torch.profiler's top ops
for one iteration of the first learner.

    OMP_NUM_THREADS=1 python benchmarks/train_iteration.py [--batch 64 256] [--baseline /tmp/base]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

ENV = "lm_gym/SentimentContinuation-v0"
LEARNERS: dict[str, dict[str, Any]] = {
    "reinforce (leave-one-out)": {"agent": "reinforce", "baseline": "leave_one_out"},
    "ppo (1 epoch)": {"agent": "ppo", "n_epochs": 1, "minibatch_size": 1 << 20},
    "ppo (defaults)": {"agent": "ppo"},
    "grpo": {"agent": "grpo"},
}
PHASES = ("decode", "env", "reward", "ref", "fwd", "bwd", "optim", "log")


def matmul_gflops(n: int = 512, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


class Timers:
    """Wraps functions so that the seconds spent in each phase add up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, phase: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original))

    def install(self) -> None:
        import agents.lm_agent
        import agents.lm_policy
        import agents.logger
        import agents.rollout
        import lm_gym.envs.core
        import lm_gym.envs.vector_env

        self.wrap(agents.lm_policy.LMPolicy, "act", "decode")
        self.wrap(lm_gym.envs.vector_env.TextGenVectorEnv, "step", "env")
        self.wrap(lm_gym.envs.core.EpisodeScorer, "__call__", "reward")
        self.wrap(agents.rollout, "teacher_forced", "ref")  # the rollout's reference pass
        self.wrap(agents.lm_agent, "teacher_forced", "fwd")  # the update's forwards
        self.wrap(torch.Tensor, "backward", "bwd")
        self.wrap(agents.lm_agent.LMAgent, "optimizer_step", "optim")
        self.wrap(agents.logger.MetricsLogger, "record", "log")


def time_learner(name: str, config: dict[str, Any], batch: int, iters: int, timers: Timers | None) -> dict[str, Any]:
    import agents

    kwargs = {k: v for k, v in config.items() if k != "agent"}
    agent = agents.make(config["agent"], ENV, n_envs=batch, batch_size=batch, samples_per_prompt=4, seed=0,
                        env_kwargs={"max_new_tokens": 24}, **kwargs)
    stamps: list[float] = []

    def stamp(a: Any, m: Any) -> bool:
        stamps.append(time.perf_counter())
        if len(stamps) == 1 and timers is not None:
            timers.seconds.clear()  # the first iteration warms up; phases count the next ones
        return len(stamps) <= iters

    agent.learn(10**9, callback=stamp)
    per_iter = min(b - a for a, b in zip(stamps, stamps[1:]))
    tokens = agent.num_timesteps / len(stamps)
    out = {"learner": name, "s_per_iter": per_iter, "tokens_per_s": tokens / per_iter,
           "n_epochs": getattr(agent.config, "n_epochs", 1)}
    if timers is not None:
        out["phases"] = {p: timers.seconds.get(p, 0.0) / iters for p in PHASES}
        out["phases"]["env"] -= out["phases"]["reward"]
        out["params"] = sum(p.numel() for p in agent.policy.model.parameters())
        out["width"] = agent.info.obs_length
    return out


def flops_bound(r: dict[str, Any], batch: int, gflops: float, n_epochs: int) -> float:
    """Seconds of pure matmul arithmetic for one iteration's forwards and backwards."""
    p, tokens = r["params"], 24 * batch
    forward = 2 * p * tokens  # decode: one token per slot per step
    judge = 2 * p * batch * r["width"]  # the frozen model's pass; the reference reuses it
    update = 3 * 2 * p * batch * r["width"] * n_epochs  # forward + backward (2x) per epoch
    return (forward + judge + update) / (gflops * 1e9)


def run_baseline(path: str, batch: int, iters: int, phases: bool = False) -> list[dict[str, Any]]:
    """The same timings on another checkout, in a subprocess (its own code; totals only unless
    ``phases``, which needs the phase functions this script wraps to exist there)."""
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--json", "--batch", str(batch), "--iters", str(iters)]
    cmd += [] if phases else ["--no-phases"]
    proc = subprocess.run(cmd, env=env, cwd=path, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="*", default=[64])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--learners", nargs="*", default=list(LEARNERS))
    parser.add_argument("--baseline", default=None, help="another checkout to time in the same run")
    parser.add_argument("--baseline-phases", action="store_true",
                        help="also split the baseline's time into phases (a checkout with the same phase functions)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate baseline and this checkout this many times (each keeps its fastest)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler's top ops of one iteration")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-phases", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds} is invalid: use 1 or more")
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    timers = None if args.no_phases else Timers()
    if timers is not None:
        timers.install()
    import agents

    known = [n for n in args.learners if LEARNERS[n]["agent"] in agents.AGENTS]  # a baseline may lack some
    rounds = 1 if args.json else args.rounds
    for batch in args.batch:
        # baseline, this checkout, baseline, ... (--rounds times), then the baseline once more:
        # each side keeps its fastest run, so a burst of contention on one side is not the ratio
        ours: list[list[dict[str, Any]]] = []
        theirs: list[list[dict[str, Any]]] = []
        for _ in range(rounds):
            if args.baseline and not args.json:
                theirs.append(run_baseline(args.baseline, batch, args.iters, args.baseline_phases))
            ours.append([time_learner(n, LEARNERS[n], batch, args.iters, timers) for n in known])
        if args.json:
            print(json.dumps(ours[0]))
            continue
        if args.baseline:
            theirs.append(run_baseline(args.baseline, batch, args.iters, args.baseline_phases))
        rows = list(fastest(ours).values())
        baseline = list(fastest(theirs).values())
        base = {r["learner"]: r for r in baseline}
        gflops = matmul_gflops()
        print(f"\nbatch {batch} ({batch // 4} prompts x 4), 24 new tokens, 1 thread; matmul {gflops:.1f} GFLOP/s")
        print_table(rows, batch, gflops, base)
        if base:
            print_targets(rows, base)
        if args.baseline_phases:
            print(f"\nthe baseline ({args.baseline}), same run:")
            print_table(baseline, batch, gflops, {})
    if args.profile:
        profile_one(LEARNERS[args.learners[0]], args.batch[0])


TARGETS = (  # issue 13: (this learner, the baseline's learner, the largest ratio)
    ("reinforce (leave-one-out)", "reinforce (leave-one-out)", 0.5),
    ("ppo (1 epoch)", "ppo (1 epoch)", 0.5),
    ("ppo (defaults)", "ppo (1 epoch)", 1.0),
)


def print_targets(rows: list[dict[str, Any]], base: dict[str, dict[str, Any]]) -> None:
    """Each target's ratio (this checkout's s / iter over the baseline's) and whether it holds."""
    ours = {r["learner"]: r for r in rows}
    for mine, theirs, limit in TARGETS:
        if mine in ours and theirs in base:
            ratio = ours[mine]["s_per_iter"] / base[theirs]["s_per_iter"]
            verdict = "met" if ratio <= limit else "NOT met"
            print(f"target: {mine} <= {limit} x the baseline's {theirs}: {ratio:.2f} ({verdict})")


def fastest(runs: list[list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per learner, the run with the fewest seconds per iteration (first-seen order)."""
    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        for r in run:
            if r["learner"] not in best or r["s_per_iter"] < best[r["learner"]]["s_per_iter"]:
                best[r["learner"]] = r
    return best


def print_table(rows: list[dict[str, Any]], batch: int, gflops: float, base: dict[str, Any]) -> None:
    head = ["learner", "s / iter", "tokens/s", *PHASES, "FLOP bound s"] + (["baseline s / iter", "ratio"] if base else [])
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["learner"], f"{r['s_per_iter']:.2f}", f"{r['tokens_per_s']:.0f}",
                 *[f"{r['phases'][p]:.2f}" for p in PHASES], f"{flops_bound(r, batch, gflops, r['n_epochs']):.2f}"]
        if base:
            b = base.get(r["learner"])
            cells += [f"{b['s_per_iter']:.2f}", f"{r['s_per_iter'] / b['s_per_iter']:.2f}"] if b else ["-", "-"]
        print("| " + " | ".join(cells) + " |", flush=True)


def profile_one(config: dict[str, Any], batch: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    import agents

    kwargs = {k: v for k, v in config.items() if k != "agent"}
    agent = agents.make(config["agent"], ENV, n_envs=batch, batch_size=batch, samples_per_prompt=4, seed=0,
                        env_kwargs={"max_new_tokens": 24}, **kwargs)
    agent.learn(1)  # warm-up iteration
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        agent.learn(1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
