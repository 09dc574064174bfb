"""Any Hugging Face causal LM, by Hub name or local path, drives the text tasks.

    python examples/hf_model.py
    LM_GYM_EXAMPLE_BUDGET=256 python examples/hf_model.py

``model=`` picks the tokenizer (hence the action space), the policy the LM agents start
from, and the fluency reference, all at once. This script stays offline: it builds a tiny
GPT-2 with the built-in tokenizer and saves it to a folder, which loads exactly as a
downloaded model would. With the Hub reachable, use a name instead (the commented line).
"""

import os
from pathlib import Path

import gymnasium as gym
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

import agents
import lm_gym  # noqa: F401 - registers the ids
from lm_gym.models import builtin_path

BUDGET = int(os.environ.get("LM_GYM_EXAMPLE_BUDGET", 2_000))
EPISODES = 32 if BUDGET >= 1_000 else 8
MODEL_DIR = Path("runs/examples/tiny-gpt2")

hf_logging.disable_progress_bar()

# A local model folder: config.json + weights + tokenizer files (save_pretrained writes them).
if not (MODEL_DIR / "config.json").is_file():
    tokenizer = AutoTokenizer.from_pretrained(builtin_path())
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_layer=2, n_embd=64, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(MODEL_DIR)
    tokenizer.save_pretrained(MODEL_DIR)

model = str(MODEL_DIR)
# model = "gpt2"  # any Hub name, where the Hub (or its cache) is reachable

env = gym.make("lm_gym/SentimentContinuation-v0", model=model, max_new_tokens=12)
obs, info = env.reset(seed=0)
print(f"vocabulary {env.action_space.n} tokens; observation {obs['input_ids'].shape}; prompt {info['prompt']!r}")

env_kwargs = {"model": model, "max_new_tokens": 12}
zero_shot = agents.evaluate(agents.make("model", "lm_gym/SentimentContinuation-v0", seed=0, env_kwargs=env_kwargs),
                            n_episodes=EPISODES, seed=1, return_episodes=True)
print(f"zero-shot reward {zero_shot['mean_reward']:.3f}; e.g. {zero_shot['episodes'][0].text!r}")

ppo = agents.make("ppo", "lm_gym/SentimentContinuation-v0", seed=0, env_kwargs=env_kwargs, n_envs=8, batch_size=16)
ppo.learn(total_timesteps=BUDGET)
print(f"PPO reward {agents.evaluate(ppo, n_episodes=EPISODES, seed=1)['mean_reward']:.3f} after {ppo.num_timesteps} env steps")
