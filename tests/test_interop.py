"""Evaluation hygiene and interop: prompt splits, a fixed fluency judge, the reward as a
TRL-style callable and the prompts as a dataset."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import lm_gym
from lm_gym import error
from lm_gym.tasks.text import SPLIT_SIZES

TEXT_IDS = [f"lm_gym/{name}-v0" for name in SPLIT_SIZES]

# what each text task's prompt tells about its metadata (a TRL user's dataset columns)
META_OF_PROMPT = {
    "lm_gym/SentimentContinuation-v0": lambda p: {"sentiment": "positive"},
    "lm_gym/TopicSteering-v0": lambda p: {"topic": p.split(": ", 1)[0]},
    "lm_gym/KeywordStory-v0": lambda p: {"keywords": p.removeprefix("Keywords: ").rstrip(".").split(", ")},
    "lm_gym/Continuation-v0": lambda p: {},
}


def play(env, seed, n_tokens=6):
    """An episode of seeded random valid tokens then EOS: (prompt, completion, reward)."""
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    eos = env.unwrapped.eos_token_id
    valid = np.flatnonzero(info["action_mask"] & (np.arange(info["action_mask"].size) != eos))
    for t in range(n_tokens):
        obs, r, term, trunc, info = env.step(int(rng.choice(valid)) if t < n_tokens - 1 else eos)
    return info["prompt"], info["text"], r


# ---------------------------------------------------------------------------- splits


@pytest.mark.parametrize("env_id", TEXT_IDS)
def test_train_and_test_prompts_are_disjoint_with_documented_sizes(env_id):
    name = env_id.split("/")[1].removesuffix("-v0")
    train = lm_gym.prompt_dataset(env_id, split="train")
    test = lm_gym.prompt_dataset(env_id, split="test")
    assert (len(train), len(test)) == (SPLIT_SIZES[name]["train"], SPLIT_SIZES[name]["test"])
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    # the default is the train split
    default = lm_gym.prompt_dataset(env_id, n=5)
    assert default == train[:5]


def test_split_selects_the_env_prompts_and_bad_splits_are_named():
    train = gym.make("lm_gym/Continuation-v0")
    test = gym.make("lm_gym/Continuation-v0", split="test")
    assert train.unwrapped.task.split == "train" and test.unwrapped.task.split == "test"
    held_out = {text for text, _ in test.unwrapped.task.prompts}
    assert train.reset(seed=0)[1]["prompt"] not in held_out
    assert test.reset(seed=0)[1]["prompt"] in held_out
    with pytest.raises(error.UnknownName, match=r"Unknown prompt split 'tset'\. Did you mean 'test'\?"):
        gym.make("lm_gym/Continuation-v0", split="tset")


def test_user_prompts_by_split(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"prompt": "A held-out prompt.", "keywords": ["cat"]}) + "\n")
    splits = {"train": ["A train prompt."], "test": str(path)}
    env = gym.make("lm_gym/Continuation-v0", prompts=splits, split="test")
    assert env.reset(seed=0)[1]["prompt"] == "A held-out prompt."
    env = gym.make("lm_gym/Continuation-v0", prompts=splits)
    assert env.reset(seed=0)[1]["prompt"] == "A train prompt."
    with pytest.raises(error.InvalidArgument, match=r"dict of splits \['train'\] without split='test'"):
        gym.make("lm_gym/Continuation-v0", prompts={"train": ["x"]}, split="test")


# ---------------------------------------------------------------------------- reference model


def test_reference_model_keeps_the_judge_fixed_while_model_changes(tiny_model_dir):
    env = gym.make("lm_gym/KeywordStory-v0", model=str(tiny_model_dir), reference_model="builtin")
    task = env.unwrapped.task
    assert (task.model_name, task.reference_model) == (str(tiny_model_dir), "builtin")
    prompt, text, r = play(env, seed=3)
    meta = META_OF_PROMPT["lm_gym/KeywordStory-v0"](prompt)
    builtin = lm_gym.reward_function("lm_gym/KeywordStory-v0")
    assert r == pytest.approx(builtin([prompt], [text], **{k: [v] for k, v in meta.items()})[0], abs=1e-9)
    # fluency alone: the fixed judge finds a corpus-like text fluent, the untrained model does not
    only_fluency = {"reward_weights": {"fluency": 1.0, "relevance": 0.0, "diversity": 0.0}}
    judged = [
        lm_gym.reward_function("lm_gym/Continuation-v0", model=str(tiny_model_dir), **only_fluency, **ref)(
            ["There was once a tiny duck past the basket."], [" The duck was happy."]
        )[0]
        for ref in ({"reference_model": "builtin"}, {})
    ]
    assert judged[0] == pytest.approx(0.12726, abs=1e-4)
    assert judged[1] < 0.05


# ---------------------------------------------------------------------------- reward callable


@pytest.mark.parametrize("env_id", TEXT_IDS)
def test_reward_function_equals_the_env_reward(env_id):
    env = gym.make(env_id, max_new_tokens=8)
    episodes = [play(env, seed) for seed in range(3)]
    prompts, texts, rewards = (list(x) for x in zip(*episodes))
    metas = [META_OF_PROMPT[env_id](p) for p in prompts]
    columns = {k: [m[k] for m in metas] for k in metas[0]}
    for fn in (lm_gym.reward_function(env), lm_gym.reward_function(env_id, max_new_tokens=8)):
        out = fn(prompts, texts, trainer_state=None, completion_ids=[[1]] * 3, **columns)
        assert isinstance(out, list) and all(type(x) is float for x in out)
        # float32 models batch 3 texts here and 1 in the env: equal up to rounding
        np.testing.assert_allclose(out, rewards, rtol=0, atol=1e-6)


def test_reward_function_on_a_vector_env_with_weights():
    kwargs = {"reward_weights": {"fluency": 0.0, "relevance": 1.0, "diversity": 0.0}}
    venv = gym.make_vec("lm_gym/KeywordToy-v0", num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    fn = lm_gym.reward_function(venv)
    assert fn.__name__ == "KeywordToy_reward"
    assert fn(["p", "p"], ["cat dog", "cat"], keywords=[["cat", "dog"], ["cat", "dog"]]) == [1.0, 0.5]
    assert lm_gym.reward_function("lm_gym/KeywordToy-v0", **kwargs)(["p"], ["dog"], keywords=[["cat", "dog"]]) == [0.5]


def test_reward_function_errors_name_what_is_missing():
    fn = lm_gym.reward_function("lm_gym/KeywordToy-v0")
    with pytest.raises(error.InvalidArgument, match=r"metadata column 'keywords' \(one value per completion, 1 here\), missing"):
        fn(["p"], ["cat"])
    with pytest.raises(error.InvalidArgument, match="got 2 prompts and 1 completions"):
        fn(["p", "q"], ["cat"], keywords=[["cat"]])
    with pytest.raises(error.InvalidArgument, match="expected an lm_gym env"):
        lm_gym.reward_function(42)
    with pytest.raises(error.InvalidArgument, match="apply only to an env id"):
        lm_gym.reward_function(gym.make("lm_gym/Copy-v0"), max_new_tokens=3)


def test_prompt_dataset_rows_and_errors():
    rows = lm_gym.prompt_dataset("lm_gym/TopicSteering-v0", split="test", n=4, seed=1)
    assert len(rows) == 4 and all(set(r) == {"prompt", "topic"} for r in rows)
    assert all(r["prompt"].startswith(f"{r['topic']}: ") for r in rows)
    assert rows == lm_gym.prompt_dataset("lm_gym/TopicSteering-v0", split="test", n=4, seed=1)
    toy = lm_gym.prompt_dataset("lm_gym/Addition-v0", n=3, seed=0)
    assert len(toy) == 3 and all(r["prompt"].endswith("=") for r in toy)
    with pytest.raises(error.InvalidArgument, match="generates its prompts; pass n="):
        lm_gym.prompt_dataset("lm_gym/Addition-v0")
    with pytest.raises(error.InvalidArgument, match="Unknown keyword argument 'split'"):
        lm_gym.prompt_dataset("lm_gym/Addition-v0", split="test", n=2)
