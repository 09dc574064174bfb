"""Env stepping speed with no language model.

Prints, in one run: steps/s of CartPole-v1 and of lm_gym/Copy-v0 through ``gym.make``
(the single-env contract: at least CartPole's speed), and token-steps/s of the native
vector env at 1, 16 and 256 envs (the contract: > 10 M token-steps/s at 256 envs), both
over all steps of a random agent on Copy-v0 (whose episodes last ~4 tokens, so a quarter
of the envs finish, are scored and reset on every step) and over mid-episode steps alone
(the cost of stepping itself, what a 32-64 token text episode mostly consists of), and
over all steps of 33-token episodes (resets and scoring included).

    python benchmarks/env_step.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import lm_gym  # noqa: F401  (registers the ids)


def single_env_steps_per_s(env_id: str, seconds: float) -> float:
    env = gym.make(env_id)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    n_actions = env.action_space.n
    actions = rng.integers(0, n_actions, size=100_000)
    if env_id.startswith("lm_gym/"):  # valid tokens only, as an agent would emit
        valid = np.flatnonzero(env.unwrapped.action_masks())
        actions = valid[actions % len(valid)]
    actions = actions.tolist()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions[steps % 99_000 : steps % 99_000 + 1000]:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
        steps += 1000
    return steps / (time.perf_counter() - start)


def vector_token_steps_per_s(env_id: str, num_envs: int, seconds: float) -> float:
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    valid = np.flatnonzero(env.action_masks()[0])
    rng = np.random.default_rng(0)
    batches = [valid[rng.integers(0, len(valid), size=num_envs)] for _ in range(256)]
    return token_steps_per_s(env, batches, seconds)


def token_steps_per_s(env: gym.vector.VectorEnv, batches: list[np.ndarray], seconds: float) -> float:
    """Step ``env`` through ``batches`` of actions, over and over, for ``seconds``."""
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in batches:
            env.step(a)
        steps += len(batches)
    return steps * env.num_envs / (time.perf_counter() - start)


def vector_mid_episode_token_steps_per_s(num_envs: int, seconds: float) -> float:
    """Stepping alone: Copy-v0 with 32-symbol strings, timing only the 32 steps of each
    episode in which no episode ends (so no scoring, decoding or reset happens)."""
    env = gym.make_vec(
        "lm_gym/Copy-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
        min_length=32, max_length=32,
    )
    rng = np.random.default_rng(0)
    batches = [2 + rng.integers(0, 4, size=num_envs) for _ in range(32)]  # letters, never EOS
    steps, elapsed = 0, 0.0
    while elapsed < seconds:
        env.reset(seed=steps)
        start = time.perf_counter()
        for a in batches:
            env.step(a)
        elapsed += time.perf_counter() - start
        steps += len(batches)
    return steps * num_envs / elapsed


def vector_long_episode_token_steps_per_s(num_envs: int, seconds: float) -> float:
    """All steps of 33-token episodes (Copy-v0 with 32-symbol strings, letters then EOS),
    resets and scoring included: what text-length episodes cost end to end."""
    env = gym.make_vec(
        "lm_gym/Copy-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
        min_length=32, max_length=32,
    )
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    batches = [2 + rng.integers(0, 4, size=num_envs) for _ in range(32)] + [np.ones(num_envs, np.int64)]
    return token_steps_per_s(env, batches, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    # Interleave short rounds and take medians, so a load change hits both alike.
    rounds = [
        (single_env_steps_per_s("CartPole-v1", args.seconds / 5), single_env_steps_per_s("lm_gym/Copy-v0", args.seconds / 5))
        for _ in range(5)
    ]
    cartpole = float(np.median([c for c, _ in rounds]))
    copy = cartpole * float(np.median([x / c for c, x in rounds]))
    rows = [
        ("CartPole-v1 (gym.make)", "steps/s", cartpole, 1.0, "reference"),
        ("lm_gym/Copy-v0 (gym.make)", "steps/s", copy, copy / cartpole, ">= 1.0x CartPole"),
    ]
    for n in (1, 16, 256):
        tps = vector_token_steps_per_s("lm_gym/Copy-v0", n, args.seconds)
        rows.append((f"vector Copy-v0, {n} envs, all steps", "token-steps/s", tps, tps / cartpole, ""))
    for n in (1, 16, 256):
        tps = vector_mid_episode_token_steps_per_s(n, args.seconds)
        target = "> 10M token-steps/s" if n == 256 else ""
        rows.append((f"vector Copy-v0, {n} envs, mid-episode", "token-steps/s", tps, tps / cartpole, target))

    tps = vector_long_episode_token_steps_per_s(256, args.seconds)
    rows.append(("vector Copy-v0, 256 envs, 33-token episodes", "token-steps/s", tps, tps / cartpole, ""))

    print(f"| {'what':<40} | {'unit':<13} | {'rate':>14} | {'vs CartPole':>11} | target |")
    print(f"|{'-' * 42}|{'-' * 15}|{'-' * 16}|{'-' * 13}|--------|")
    for name, unit, rate, ratio, target in rows:
        print(f"| {name:<40} | {unit:<13} | {rate:>14,.0f} | {ratio:>10.2f}x | {target} |")


if __name__ == "__main__":
    main()
