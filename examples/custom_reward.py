"""Your own reward: any batched ``fn(prompts, completions, **meta) -> list[float]``.

    python examples/custom_reward.py
    LM_GYM_EXAMPLE_BUDGET=256 python examples/custom_reward.py

It replaces the task's score (``reward=``), or reweights the task's own composite
(``reward_weights=``). Here a text task (the built-in LM, offline) is scored by how many
words of the completion are "happy" words.
"""

import os

import gymnasium as gym

import agents
import lm_gym  # noqa: F401 - registers the ids

BUDGET = int(os.environ.get("LM_GYM_EXAMPLE_BUDGET", 2_000))  # env steps of REINFORCE
EPISODES = 32 if BUDGET >= 1_000 else 8
HAPPY = {"happy", "glad", "sunny", "smiled", "laughed", "good", "kind", "fun", "loved", "bright"}


def happy_words(prompts: list[str], completions: list[str], **meta) -> list[float]:
    """The share of the completion's words that are happy ones, in [0, 1]."""
    scores = []
    for text in completions:
        words = [w.strip(".,!?").lower() for w in text.split()]
        scores.append(sum(w in HAPPY for w in words) / max(len(words), 1))
    return scores


# 1. Replace the reward: the env calls happy_words on every batch of finished episodes.
env = gym.make("lm_gym/Continuation-v0", reward=happy_words, max_new_tokens=16)
obs, info = env.reset(seed=0)
done = False
while not done:  # one episode with random (valid) tokens
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample(mask=info["action_mask"]))
    done = terminated or truncated
print(f"prompt {info['prompt']!r}\ncompletion {info['text']!r}\nreward {reward:.3f}")

# 2. Reweight the task's own composite (fluency, relevance, diversity).
env = gym.make("lm_gym/KeywordToy-v0", reward_weights={"fluency": 0.6, "relevance": 0.4, "diversity": 0.0})

# 3. Agents take the same keyword arguments (env_kwargs) and optimise the custom reward.
env_kwargs = {"reward": happy_words, "max_new_tokens": 16}
model = agents.make("model", "lm_gym/Continuation-v0", seed=0, env_kwargs=env_kwargs)
before = agents.evaluate(model, n_episodes=EPISODES, seed=1)
learner = agents.make("reinforce", "lm_gym/Continuation-v0", seed=0, env_kwargs=env_kwargs, learning_rate=1e-4)
learner.learn(total_timesteps=BUDGET)
after = agents.evaluate(learner, n_episodes=EPISODES, seed=1)
print(f"happy-word share: zero-shot {before['mean_reward']:.3f} -> REINFORCE {after['mean_reward']:.3f} "
      f"after {learner.num_timesteps} env steps")
