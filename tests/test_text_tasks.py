"""The four text tasks: model loading by path, offline errors, prompts, weights."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import lm_gym
from lm_gym import error

TEXT_IDS = ["lm_gym/SentimentContinuation-v0", "lm_gym/TopicSteering-v0", "lm_gym/KeywordStory-v0", "lm_gym/Continuation-v0"]


def play(env, n_tokens=5, seed=0):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    valid = np.flatnonzero(info["action_mask"] & (np.arange(info["action_mask"].size) != env.unwrapped.eos_token_id))
    for t in range(n_tokens):
        obs, r, term, trunc, info = env.step(int(rng.choice(valid)) if t < n_tokens - 1 else env.unwrapped.eos_token_id)
    assert term
    return r, info


@pytest.mark.parametrize("env_id", TEXT_IDS)
def test_tiny_model_loads_by_path_end_to_end(env_id, tiny_model_dir):
    env = gym.make(env_id, model=str(tiny_model_dir), max_new_tokens=8, max_prompt_tokens=24)
    assert env.action_space.n == 2048 and env.unwrapped.task.model_name == str(tiny_model_dir)
    assert env.observation_space["input_ids"].shape == (32,)
    r, info = play(env)
    assert set(info["reward_components"]) == {"fluency", "relevance", "diversity"}
    weights = env.unwrapped.scorer.weights
    assert r == pytest.approx(sum(weights[k] * v for k, v in info["reward_components"].items()))
    # an untrained model finds any text unlikely: fluency near 0
    assert 0.0 <= info["reward_components"]["fluency"] < 0.05


def test_unavailable_name_gives_clear_offline_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(error.ModelLoadError, match="builtin") as e:
        gym.make("lm_gym/Continuation-v0", model="no-such-org/no-such-model")
    assert "no-such-org/no-such-model" in str(e.value)


def test_positions_budget_is_checked(tiny_model_dir):
    with pytest.raises(error.InvalidArgument, match="exceeds the model's 64 positions"):
        gym.make("lm_gym/Continuation-v0", model=str(tiny_model_dir), max_new_tokens=40, max_prompt_tokens=32)


def test_unknown_kwarg_on_text_task():
    with pytest.raises(error.InvalidArgument, match=r"Unknown keyword argument 'topik'.*Did you mean 'topic'"):
        gym.make("lm_gym/TopicSteering-v0", topik="space")


def test_user_prompts_list_txt_and_jsonl(tmp_path):
    env = gym.make("lm_gym/Continuation-v0", prompts=["The dog ran to the park."])
    _, info = env.reset(seed=0)
    assert info["prompt"] == "The dog ran to the park."
    txt = tmp_path / "p.txt"
    txt.write_text("First prompt.\n\nSecond prompt.\n")
    env = gym.make("lm_gym/SentimentContinuation-v0", prompts=str(txt))
    seen = {env.reset(seed=s)[1]["prompt"] for s in range(20)}
    assert seen == {"First prompt.", "Second prompt."}
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "x", "keywords": ["cat", "hat"]}) + "\n")
    env = gym.make("lm_gym/KeywordStory-v0", prompts=jsonl)
    _, info = env.reset(seed=0)
    assert info["prompt"] == "Keywords: cat, hat."
    with pytest.raises(error.InvalidArgument, match="needs a 'keywords' list"):
        gym.make("lm_gym/KeywordStory-v0", prompts=["no keywords here"])
    with pytest.raises(error.InvalidArgument, match="is not a file"):
        gym.make("lm_gym/Continuation-v0", prompts=str(tmp_path / "missing.txt"))
    with pytest.raises(error.InvalidArgument, match="must be a list of strings"):
        gym.make("lm_gym/Continuation-v0", prompts=[1, 2])


def test_default_prompts_are_held_out_stories():
    from lm_gym.models import corpus

    env = gym.make("lm_gym/SentimentContinuation-v0")
    train_texts = {s.text.split(".")[0] for s in corpus.corpus("train", 2000)}
    prompts = {env.reset(seed=s)[1]["prompt"] for s in range(30)}
    assert len(prompts) > 20
    assert not any(p.split(".")[0] in train_texts for p in prompts)


def test_topic_steering_names_the_topic():
    env = gym.make("lm_gym/TopicSteering-v0", topic="space", embedding_model="lexical")
    _, info = env.reset(seed=0)
    assert info["prompt"].startswith("space: ")
    task = env.unwrapped.task
    on = task.relevance(["p"], ["the rocket flew past the moon and the stars"], {"topic": ["space"]})
    off = task.relevance(["p"], ["she baked bread and soup for dinner"], {"topic": ["space"]})
    assert on[0] > off[0]


def test_topic_steering_v1_bridges_to_the_topic_and_gates_relevance_by_fluency():
    from lm_gym.models.corpus import topic_nouns

    env = gym.make("lm_gym/TopicSteering-v1", topic="space")
    _, info = env.reset(seed=0)
    assert info["prompt"].startswith("space: ") and info["prompt"].rsplit(" ", 1)[1] in topic_nouns("space")
    task = env.unwrapped.task
    prompt = "space: There was once a windy puddle across the window. Then the pilot"
    texts = [" behind the launchpad. In the end, Tabel felt cheerful and grateful.",  # a trained policy's
             " baked bread and soup for dinner in the kitchen.",
             " rocket moon galaxy star comet planet orbit astronaut"]
    _, comps = task.score([prompt] * 3, texts, {"topic": ["space"] * 3})
    evidence = task.topic_evidence(texts, ["space"] * 3)
    assert evidence[0] > 0.9 and evidence[1] < 0.1  # the classifier's topic evidence, before the gate
    assert comps["relevance"][0] > 0.9 and comps["relevance"][1] < 0.1
    assert evidence[2] > 0.9 and comps["relevance"][2] < 0.1  # a bag of topic words is not language


def test_topic_steering_v1_bad_arguments_name_the_valid_values():
    with pytest.raises(error.UnknownName, match="'space'"):
        gym.make("lm_gym/TopicSteering-v1", topic="spaec")
    with pytest.raises(error.InvalidArgument, match="noun"):
        gym.make("lm_gym/TopicSteering-v1", bridge="Then the")
    with pytest.raises(error.UnknownName, match="'classifier', 'embedding'"):
        gym.make("lm_gym/TopicSteering-v1", topic_scorer="cosine")


def test_keyword_story_v1_opens_the_story_and_gates_coverage_by_fluency(tmp_path):
    env = gym.make("lm_gym/KeywordStory-v1", split="test")
    _, info = env.reset(seed=0)
    head, opening = info["prompt"].split(". ", 1)
    assert head.startswith("Keywords: ") and len(opening.split()) >= 5  # the list, then the story opening
    task = env.unwrapped.task
    prompt = "Keywords: duck, carry, basket. There was once a tiny duck past the basket."
    texts = [" She wanted to carry the duck near the basket.",      # all three, in the corpus's style
             " She wanted to see the moon over the hill.",          # none of them
             " duck carry basket duck carry basket duck carry"]     # keyword soup
    _, comps = task.score([prompt] * 3, texts, {"keywords": [["duck", "carry", "basket"]] * 3})
    assert comps["relevance"][0] == pytest.approx(1.0) and comps["relevance"][1] == 0.0
    assert comps["relevance"][2] < 0.1  # covers every keyword, but the gate sees no language
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "Mira sat by the pond.", "keywords": ["cat", "hat"]}) + "\n")
    assert gym.make("lm_gym/KeywordStory-v1", prompts=jsonl).reset(seed=0)[1]["prompt"] == (
        "Keywords: cat, hat. Mira sat by the pond."
    )
    with pytest.raises(error.InvalidArgument, match="opening must be True or False"):
        gym.make("lm_gym/KeywordStory-v1", opening="yes")


def test_continuation_v1_scores_the_prompts_own_topic_gated_by_fluency():
    env = gym.make("lm_gym/Continuation-v1")
    task = env.unwrapped.task
    prompt = "Early one autumn, Mabel went to the dock with her cousin."
    assert task.prompt_topics([prompt]) == ["ocean"]
    texts = [" Mabel wanted to catch a crab near the pier.",      # the prompt's topic, fluent
             " Mabel wanted to launch the rocket to the moon.",   # another topic
             " crab pier reef shell crab pier reef shell"]        # the topic's words, no language
    _, comps = task.score([prompt] * 3, texts, {})
    assert comps["relevance"][0] > 0.8 and comps["relevance"][1] < 0.1
    assert comps["relevance"][2] < 0.2
    with pytest.raises(error.UnknownName, match="'classifier', 'overlap'"):
        gym.make("lm_gym/Continuation-v1", subject_scorer="cosine")


def test_keyword_story_and_continuation_v0_are_kept_as_they_were():
    from lm_gym.rewards import Continuity, KeywordCoverage

    env = gym.make("lm_gym/KeywordStory-v0", split="test")
    assert env.observation_space["input_ids"].shape == (32 + 24,)
    assert env.reset(seed=0)[1]["prompt"].startswith("Keywords: ") and env.unwrapped.task.language_gate is None
    texts = [" duck carry basket duck carry basket", " She wanted to see the moon."]
    kws = [["duck", "carry", "basket"]] * 2
    _, comps = env.unwrapped.task.score(["Keywords: duck, carry, basket."] * 2, texts, {"keywords": kws})
    assert comps["relevance"].tolist() == KeywordCoverage()(["p"] * 2, texts, keywords=kws).tolist() == [1.0, 0.0]
    task = gym.make("lm_gym/Continuation-v0").unwrapped.task
    prompts = ["The dog ran to the park."] * 2
    texts = [" The dog park was big.", " Stars shone."]
    _, comps = task.score(prompts, texts, {})
    assert comps["relevance"].tolist() == Continuity()(prompts, texts).tolist()


def test_sentiment_task_rewards_positive_text():
    env = gym.make("lm_gym/SentimentContinuation-v0")
    task = env.unwrapped.task
    meta = {"sentiment": ["positive", "positive"]}
    r, comps = task.score(["p", "p"], ["It was a wonderful, happy day.", "It was an awful, sad day."], meta)
    assert comps["relevance"][0] > comps["relevance"][1]
    assert r[0] > r[1]


def test_text_reward_weights():
    env = gym.make("lm_gym/Continuation-v0", reward_weights={"fluency": 1.0, "relevance": 0.0, "diversity": 0.0})
    r, info = play(env)
    assert r == pytest.approx(info["reward_components"]["fluency"])


def test_no_torch_on_import():
    import subprocess
    import sys

    code = "import sys, lm_gym, gymnasium as gym; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert len([i for i in lm_gym.list_envs()]) >= 9
