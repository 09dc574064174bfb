"""Every script in examples/ runs as written, with a tiny budget (LM_GYM_EXAMPLE_BUDGET)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agents

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# script -> (agents it needs, text its output must contain)
CASES = {
    "quickstart.py": (["random", "model", "ppo"], ["| ppo |", "| model |", "| random |"]),
    "custom_reward.py": (["model", "reinforce"], ["happy-word share: zero-shot"]),
    "custom_task.py": (["random", "ppo"], ["': reward 1.00 {'correct': 1.0", "| my_tasks/AnimalSounds-v0 |"]),
    "custom_agent.py": (["random"], ["CopyCat reward 1.000 (exact 1.00)", "**1.000 ± 0.000**"]),
    "sb3_baseline.py": (["sb3-maskable_ppo"], ["SB3 PPO on lm_gym/Parentheses-v0", "sb3-maskable_ppo: reward"]),
    "hf_model.py": (["model", "ppo"], ["zero-shot reward", "PPO reward"]),
    "trl_grpo.py": ([], ["SentimentContinuation-v0: 1000 train and 1000 test prompts", "reward 0.", "TRL"]),
}


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script, tmp_path):
    needs, expected = CASES[script]
    for name in needs:
        try:
            agents.agent_class(name)
        except ImportError as e:
            pytest.skip(f"agent {name!r} is not available yet ({e})")
    env = {
        **os.environ, "LM_GYM_EXAMPLE_BUDGET": "256", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in expected:
        assert text in proc.stdout, proc.stdout
