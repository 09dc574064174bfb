"""Each text task's quality components rank the zero-shot model above random tokens.

A component that scores token soup above the built-in model's own continuations does not
measure what it claims. Quality components are fluency and relevance; diversity is left
out on purpose: uniformly random tokens never repeat, so they have maximal diversity by
construction (it guards against repetition, it does not measure quality).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import lm_gym

N, TOKENS = 16, 16
SAMPLE = {"lm_gym/KeywordStory-v1": (48, 24)}
"""(prompts, tokens) where the zero-shot score is small: KeywordStory-v1's coverage is ~0.04."""
QUALITY = ("fluency", "relevance")
IDS = [
    "lm_gym/SentimentContinuation-v0",
    "lm_gym/TopicSteering-v1",
    pytest.param(
        "lm_gym/TopicSteering-v0",
        marks=pytest.mark.xfail(
            strict=True,
            reason="v0 is kept as it was: its ungated embedding score gives random tokens 0.15 and "
            "the zero-shot model 0.06 (the model continues the story's own topic); v1 fixes it",
        ),
    ),
    "lm_gym/KeywordStory-v2",
    "lm_gym/KeywordStory-v1",
    "lm_gym/KeywordStory-v0",
    "lm_gym/Continuation-v1",
    "lm_gym/Continuation-v0",
]


def completions(env, prompts, tokens=TOKENS):
    """Seeded zero-shot samples of the env's LM and seeded uniform valid tokens."""
    import torch

    from lm_gym.models import load_frozen

    model, tok = load_frozen(env.unwrapped.task.model_name)
    torch.manual_seed(0)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=tokens, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id)
    zero_shot = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    mask = env.reset(seed=0)[1]["action_mask"].astype(bool)
    mask[env.unwrapped.eos_token_id] = False
    rng = np.random.default_rng(0)
    decode = env.unwrapped.task.tokenizer.decode
    random = [decode(rng.choice(np.flatnonzero(mask), tokens).tolist()) for _ in prompts]
    return zero_shot, random


@pytest.mark.parametrize("env_id", IDS)
def test_random_tokens_score_below_the_zero_shot_model_on_every_quality_component(env_id):
    n, tokens = SAMPLE.get(env_id, (N, TOKENS))
    env = gym.make(env_id, split="test")
    rows = lm_gym.prompt_dataset(env, n=n)
    prompts = [r["prompt"] for r in rows]
    metas = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
    zero_shot, random = completions(env, prompts, tokens)
    _, zs = env.unwrapped.scorer(prompts, zero_shot, metas)
    _, rnd = env.unwrapped.scorer(prompts, random, metas)
    means = {k: (round(float(rnd[k].mean()), 3), round(float(zs[k].mean()), 3)) for k in QUALITY}
    assert all(r < z for r, z in means.values()), f"(random, zero-shot) means: {means}"
