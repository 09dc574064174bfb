"""Your own agent: any object with ``predict`` is evaluated by ``agents.evaluate`` and can
join a benchmark grid (add ``learn`` to be trained by the harness).

    python examples/custom_agent.py
    LM_GYM_EXAMPLE_BUDGET=256 python examples/custom_agent.py

A scripted agent solves lm_gym/Copy-v0 by reading its observation: the prompt tokens up to
"=" and the tokens it has written since.
"""

import os

import gymnasium as gym
import numpy as np

import agents
from lm_gym import bench

EPISODES = 100 if int(os.environ.get("LM_GYM_EXAMPLE_BUDGET", 10_000)) >= 10_000 else 16
ENV_ID = "lm_gym/Copy-v0"


class CopyCat:
    """Write the prompt back, then EOS. ``predict`` gets a batch of observations
    {"input_ids": (B, L), "attention_mask": (B, L)}, left-padded, and returns (B,) token ids."""

    def __init__(self, env_id: str = ENV_ID, seed: int | None = None) -> None:
        tokenizer = gym.make(env_id).unwrapped.task.tokenizer
        self.separator = tokenizer.encode("=")[0]
        self.eos = tokenizer.eos_token_id

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        ids = np.atleast_2d(obs["input_ids"])
        mask = np.atleast_2d(obs["attention_mask"]).astype(bool)
        actions = []
        for row, valid in zip(ids, mask):
            tokens = list(row[valid])
            cut = tokens.index(self.separator)
            prompt, written = tokens[:cut], tokens[cut + 1:]
            actions.append(prompt[len(written)] if len(written) < len(prompt) else self.eos)
        return np.array(actions), state


result = agents.evaluate(CopyCat(), ENV_ID, n_episodes=EPISODES, seed=0)
random = agents.evaluate(agents.make("random", ENV_ID, seed=0), n_episodes=EPISODES, seed=0)
print(f"CopyCat reward {result['mean_reward']:.3f} (exact {result['reward/exact']:.2f}); "
      f"random {random['mean_reward']:.3f}")

# In a benchmark grid, name it by its import path ("module:Class"); the harness builds it
# with the env id and a seed.
if __name__ == "__main__":
    config = bench.BenchConfig(envs=[ENV_ID], agents=["random", "__main__:CopyCat"], seeds=2,
                               eval_episodes=EPISODES, plots=False)
    bench.run_bench(config, out="runs/examples/custom_agent", progress=False)
    print(bench.summary_markdown(bench.load_results("runs/examples/custom_agent"), config))
