"""Your own task under your own env id, then benchmarked like the built-in ones.

    python examples/custom_task.py
    LM_GYM_EXAMPLE_BUDGET=256 python examples/custom_task.py

A Task says where prompts come from (``sample``, drawing only from the env's ``np_random``)
and how finished texts are scored (``components`` or ``score``, batched). The env, the
vector env, the agents and the benchmark harness come for free.
"""

import os

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

import lm_gym
from lm_gym import bench
from lm_gym.tasks import Prompt, Task, ToyTokenizer

BUDGET = int(os.environ.get("LM_GYM_EXAMPLE_BUDGET", 10_000))
ANIMALS = ["cat", "dog", "cow", "owl"]
SOUNDS = {"cat": "meow", "dog": "woof", "cow": "moo", "owl": "hoot"}


class AnimalSounds(Task):
    """Answer an animal with its sound: "cow :" -> "moo". Reward: 1 for the right sound,
    0.5 for another sound, 0 otherwise; a shorter answer is better (``brevity``)."""

    name = "AnimalSounds"
    description = "Say the sound the animal makes (a toy word vocabulary)."
    reward_components = ("correct", "brevity")
    default_weights = {"correct": 0.8, "brevity": 0.2}  # the reward is 0.8·correct + 0.2·brevity

    def __init__(self, max_new_tokens: int = 3) -> None:
        super().__init__(max_new_tokens=max_new_tokens, max_prompt_tokens=2)
        self._tokenizer = ToyTokenizer([*ANIMALS, *SOUNDS.values(), ":"], word_level=True)

    def sample(self, np_random: np.random.Generator) -> Prompt:
        animal = ANIMALS[int(np_random.integers(len(ANIMALS)))]
        return Prompt(f"{animal} :", {"sound": SOUNDS[animal]})

    def components(self, prompts, completions, meta):
        correct = [1.0 if c.split()[:1] == [s] else 0.5 if c.split()[:1] and c.split()[0] in SOUNDS.values() else 0.0
                   for c, s in zip(completions, meta["sound"])]
        brevity = [1.0 / max(len(c.split()), 1) if c else 0.0 for c in completions]
        return {"correct": np.array(correct), "brevity": np.array(brevity)}


lm_gym.register_task("my_tasks/AnimalSounds-v0", AnimalSounds)

env = gym.make("my_tasks/AnimalSounds-v0")
check_env(env.unwrapped, skip_render_check=True)  # Gymnasium's own checks pass
obs, info = env.reset(seed=0)
answer = SOUNDS[info["prompt"].split()[0]]  # play the right answer, then EOS
for word in [answer, "<eos>"]:
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.task.tokenizer.tokens.index(word))
print(f"{info['prompt']!r} -> {info['text']!r}: reward {reward:.2f} {info['reward_components']}")

# The harness trains and compares agents on it (workers=1: this process knows the new id).
if __name__ == "__main__":
    config = bench.BenchConfig(envs=["my_tasks/AnimalSounds-v0"], agents=["random", "ppo"], seeds=1,
                               budget=BUDGET, eval_episodes=32, plots=False)
    bench.run_bench(config, out="runs/examples/custom_task", progress=False)
    print((__import__("pathlib").Path("runs/examples/custom_task") / "results.md").read_text())
