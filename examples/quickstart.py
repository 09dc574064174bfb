"""Quickstart: train PPO on a toy task and compare it with the random and zero-shot baselines.

    python examples/quickstart.py                     # ~3 minutes on 2 CPU cores
    LM_GYM_EXAMPLE_BUDGET=256 python examples/quickstart.py   # a smoke run (seconds)

The same comparison over a toy *and* a text task, with plots, is ``lm-gym quickstart``.
"""

import os

import gymnasium as gym

import agents
import lm_gym  # noqa: F401 - registers the lm_gym/* env ids

BUDGET = int(os.environ.get("LM_GYM_EXAMPLE_BUDGET", 30_000))  # env steps (= tokens) of training
EPISODES = 100 if BUDGET >= 10_000 else 16
ENV_ID = "lm_gym/KeywordToy-v0"

# The env: one episode is one prompt, one step is one token, the reward scores the text.
env = gym.make(ENV_ID)
obs, info = env.reset(seed=0)
print(f"{ENV_ID}: prompt {info['prompt']!r}, {env.action_space.n} tokens to choose from")

# Baselines: uniform over valid tokens, and the untrained policy sampling as it is.
results = {}
for name in ("random", "model"):
    results[name] = agents.evaluate(agents.make(name, ENV_ID, seed=0), n_episodes=EPISODES, seed=1)

# PPO on the policy LM (a small fresh transformer for a toy vocabulary).
ppo = agents.make("ppo", ENV_ID, seed=0)
ppo.learn(total_timesteps=BUDGET, progress_bar=BUDGET >= 10_000)
results["ppo"] = agents.evaluate(ppo, n_episodes=EPISODES, seed=1, return_episodes=True)

print(f"\n| agent | reward | fluency | relevance | diversity |  ({EPISODES} episodes each)")
print("|---|---|---|---|---|")
for name, r in results.items():
    print(f"| {name} | {r['mean_reward']:.3f} ± {r['std_reward']:.3f} | {r['reward/fluency']:.2f} "
          f"| {r['reward/relevance']:.2f} | {r['reward/diversity']:.2f} |")
for episode in results["ppo"]["episodes"][:3]:
    print(f"{episode.prompt!r} -> {episode.text!r} (reward {episode.reward:.2f})")
