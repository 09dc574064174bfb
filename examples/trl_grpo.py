"""Train an lm_gym text task with TRL's GRPOTrainer, scored exactly as lm_gym scores it.

    pip install trl datasets
    python examples/trl_grpo.py
    LM_GYM_EXAMPLE_BUDGET=8 python examples/trl_grpo.py    # a smoke run

``lm_gym.prompt_dataset`` gives the task's prompts as rows (``"prompt"`` and the metadata
columns the reward reads), ``lm_gym.reward_function`` the env's reward with TRL's
signature ``fn(prompts, completions, **kwargs) -> list[float]``. Train on the ``"train"``
split, evaluate on the held-out ``"test"`` split, and the numbers compare with lm_gym's
own learners (``agents.evaluate`` on ``gym.make(ENV_ID, split="test")``).
Without TRL installed, the script only scores a few texts with the reward function.
"""

import importlib.util
import os
import tempfile

import lm_gym
from lm_gym.models import builtin_path, load_tokenizer

BUDGET = int(os.environ.get("LM_GYM_EXAMPLE_BUDGET", 200))  # GRPO optimiser steps
ENV_ID = "lm_gym/SentimentContinuation-v0"

train_rows = lm_gym.prompt_dataset(ENV_ID, split="train")
test_rows = lm_gym.prompt_dataset(ENV_ID, split="test")
reward = lm_gym.reward_function(ENV_ID)  # the same scorer as gym.make(ENV_ID)
print(f"{ENV_ID}: {len(train_rows)} train and {len(test_rows)} test prompts, columns {sorted(train_rows[0])}")

# The reward, called as TRL calls it: the dataset's extra columns come as keyword lists.
rows = test_rows[:2]
texts = [" She smiled, happy and proud of her friends.", " It was a terrible, awful, sad day."]
scores = reward([r["prompt"] for r in rows], texts, sentiment=[r["sentiment"] for r in rows])
for text, score in zip(texts, scores):
    print(f"reward {score:.3f} for {text!r}")

if importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None:
    print("TRL is not installed (pip install trl datasets): skipping the GRPOTrainer run.")
else:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="lm_gym-grpo-"),
        max_steps=BUDGET,
        per_device_train_batch_size=8,
        num_generations=8,
        max_completion_length=24,  # the env's max_new_tokens
        learning_rate=1e-4,
        logging_steps=10,
        report_to=[],
    )
    trainer = GRPOTrainer(
        model=str(builtin_path()),
        processing_class=load_tokenizer("builtin"),
        reward_funcs=reward,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
    )
    trainer.train()
    print("GRPO done; evaluate it under the fixed judge with "
          f"gym.make({ENV_ID!r}, model=<checkpoint>, reference_model='builtin', split='test')")
