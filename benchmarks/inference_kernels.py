"""Rollout time with and without oneDNN's inference kernels (``lm_gym.models.fused``), interleaved.

One rollout round of issue 13's configuration (SentimentContinuation-v0, 16 prompts x 4
samples, 24 new tokens, one torch thread): the policy's decode steps, the env, and the
fluency judge's pass over the finished episodes. Rounds alternate between the oneDNN path
(GPT-2's MLP with the tanh GELU fused into ``c_fc``, every linear on pre-packed weights) and
torch's own kernels (the ``LM_GYM_ONEDNN=0`` setting), on the same seeds, so both sides see
the same load; it prints the median and the fastest seconds of each phase and their ratio.

    OMP_NUM_THREADS=1 python benchmarks/inference_kernels.py [--rounds 12]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="rollout rounds per side (after one warm-up each)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import agents
    import agents.lm_policy
    import lm_gym.envs.core
    import lm_gym.models.fused as fused
    from agents.rollout import _play

    agent = agents.make("reinforce", "lm_gym/SentimentContinuation-v0", n_envs=64, batch_size=64,
                        samples_per_prompt=4, seed=0, env_kwargs={"max_new_tokens": 24})
    seconds: dict[str, float] = defaultdict(float)

    def timed(owner: object, attr: str, phase: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*a: object, **k: object) -> object:
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                seconds[phase] += time.perf_counter() - start

        setattr(owner, attr, wrapper)

    timed(agents.lm_policy.LMPolicy, "act", "decode")
    timed(lm_gym.envs.core.EpisodeScorer, "__call__", "judge")
    runs: dict[str, list[tuple[float, float, float]]] = {"oneDNN": [], "torch": []}
    for i in range(2 * (args.rounds + 1)):
        side = "oneDNN" if i % 2 == 0 else "torch"
        fused._STATE["onednn"] = None if side == "oneDNN" else False  # None: checked again (on)
        rng = np.random.default_rng(i // 2)
        seeds = np.repeat(rng.integers(0, 2**31 - 1, size=16), 4)
        seconds.clear()
        start = time.perf_counter()
        _play(agent.env, agent.policy, seeds, agent.action_mask, False)
        total = time.perf_counter() - start
        if i >= 2:  # the first round of each side warms up
            runs[side].append((total, seconds["decode"], seconds["judge"]))
    print(f"{args.rounds} rounds a side, interleaved; seconds per rollout round (median / fastest)")
    print("| kernels | round | decode | judge |\n|---|---|---|---|")
    stats = {side: (np.median(r, 0), np.min(r, 0)) for side, r in runs.items()}
    for side, (med, low) in stats.items():
        print(f"| {side} | " + " | ".join(f"{m:.3f} / {lo:.3f}" for m, lo in zip(med, low)) + " |")
    ratio = stats["oneDNN"][0] / stats["torch"][0]
    print("| ratio (medians) | " + " | ".join(f"{r:.2f}" for r in ratio) + " |")


if __name__ == "__main__":
    main()
