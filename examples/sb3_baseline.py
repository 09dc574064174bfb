"""Stable-Baselines3 on the toy ids: through ``agents.make`` or with SB3 directly.

    pip install "lm-gym[sb3]"
    python examples/sb3_baseline.py
    LM_GYM_EXAMPLE_BUDGET=256 python examples/sb3_baseline.py

The toy envs pass SB3's env checker: observations are a Dict of two Boxes (token ids and
the attention mask), actions a Discrete vocabulary, and ``action_masks()`` serves
sb3-contrib's MaskablePPO. SB3's policies are small networks over token embeddings, not
an LM: baselines for the LM-aware learners, and only for the toy vocabularies.
"""

import os

import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.evaluation import evaluate_policy

import agents
import lm_gym  # noqa: F401 - registers the ids
from agents.sb3 import TokenFeaturesExtractor

BUDGET = int(os.environ.get("LM_GYM_EXAMPLE_BUDGET", 20_000))
EPISODES = 100 if BUDGET >= 10_000 else 16
ENV_ID = "lm_gym/Parentheses-v0"

# 1. Plain SB3 on an lm_gym env. TokenFeaturesExtractor embeds the token ids (SB3's default
#    extractor would feed them to an MLP as plain numbers).
env = gym.make(ENV_ID)
check_env(env.unwrapped)
model = PPO("MultiInputPolicy", env, n_steps=256, batch_size=64, seed=0, verbose=0,
            policy_kwargs=dict(features_extractor_class=TokenFeaturesExtractor))
model.learn(total_timesteps=BUDGET)
mean, std = evaluate_policy(model, env, n_eval_episodes=EPISODES)
print(f"SB3 PPO on {ENV_ID}: {mean:.3f} ± {std:.3f}")

# 2. The same baselines behind lm_gym's agent protocol, evaluated with text metrics and
#    comparable with PPO/REINFORCE in `lm-gym bench` (agents "sb3-ppo", "sb3-a2c",
#    "sb3-dqn", "sb3-maskable_ppo").
for name in ("sb3-maskable_ppo", "random"):
    agent = agents.make(name, ENV_ID, seed=0)
    if name != "random":
        agent.learn(total_timesteps=BUDGET)
    result = agents.evaluate(agent, n_episodes=EPISODES, seed=1)
    print(f"{name}: reward {result['mean_reward']:.3f}, components "
          + ", ".join(f"{k[7:]} {v:.2f}" for k, v in result.items() if k.startswith("reward/")))
