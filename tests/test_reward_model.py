"""RewardModel: a Hugging Face sequence classifier as a batched reward, and the built-in one."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import lm_gym  # noqa: F401 - registers the ids
from lm_gym import error
from lm_gym.rewards import RewardModel, get_reward

TEXTS = [" The dog was happy.", " A storm came and everything was ruined at the old harbor.", ""]


@pytest.fixture(scope="module")
def tiny_classifier_dir(tmp_path_factory):
    """A tiny GPT-2 classifier (seeded fresh weights) of three labels, with the built-in
    tokenizer padding on the right, saved like any Hugging Face model."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from lm_gym.models import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-classifier")
    tok = load_tokenizer("builtin")
    tok.padding_side = "right"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, num_labels=3,
                        id2label={0: "sad", 1: "calm", 2: "glad"}, label2id={"sad": 0, "calm": 1, "glad": 2})
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 5.0)  # logits that differ from text to text
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def reference_probs(path, texts):
    """Each text alone through the model (no padding), softmax by torch."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    rows = []
    with torch.no_grad():
        for t in texts:
            ids = tok(t or tok.eos_token, return_tensors="pt")["input_ids"]  # an empty text: EOS alone
            rows.append(torch.softmax(model(ids).logits[0].double(), -1).numpy())
    return np.array(rows)


def test_a_local_classifier_scores_a_batch(tiny_classifier_dir):
    expected = reference_probs(tiny_classifier_dir, TEXTS)  # (3, 3)
    glad = RewardModel(str(tiny_classifier_dir), "glad", batch_size=3)
    assert glad.labels == ["sad", "calm", "glad"]
    out = glad(["p1", "p2", "p3"], TEXTS)
    assert out.dtype == np.float64 and out.shape == (3,)
    np.testing.assert_allclose(out, expected[:, 2], atol=1e-6)
    texts, expected = TEXTS[:2], expected[:2]
    assert abs(out[0] - out[1]) > 0.01  # the texts are told apart
    # by index, one text a forward (padding never changes a score), and the logits
    np.testing.assert_allclose(RewardModel(tiny_classifier_dir, 0, batch_size=1)(["", ""], texts), expected[:, 0], atol=1e-6)
    all_logits = glad.logits(texts)  # (2, 3)
    softmax = np.exp(all_logits) / np.exp(all_logits).sum(1, keepdims=True)
    np.testing.assert_allclose(softmax, expected, atol=1e-6)
    logit = RewardModel(tiny_classifier_dir, "glad", output="logit")(["", ""], texts)
    np.testing.assert_allclose(logit, all_logits[:, 2], atol=1e-9)
    # a per-sample label from the metadata
    per_sample = RewardModel(tiny_classifier_dir, label_key="mood")(["", ""], texts, mood=["sad", "calm"])
    np.testing.assert_allclose(per_sample, [expected[0, 0], expected[1, 1]], atol=1e-6)


def test_reward_model_errors_name_the_bad_value(tiny_classifier_dir, monkeypatch):
    with pytest.raises(error.UnknownName, match=r"Unknown label of .* 'gald'\. Did you mean 'glad'\?"):
        RewardModel(tiny_classifier_dir, "gald")([""], ["x"])
    with pytest.raises(error.InvalidArgument, match=r"label index 3 is out of range; .* 3 labels \['sad', 'calm', 'glad'\]"):
        RewardModel(tiny_classifier_dir, 3)([""], ["x"])
    with pytest.raises(error.InvalidArgument, match=r"needs meta\['mood'\]; got meta keys \['topic'\]"):
        RewardModel(tiny_classifier_dir, label_key="mood")([""], ["x"], topic=["a"])
    with pytest.raises(error.InvalidArgument, match=r"output must be one of \['prob', 'logit'\], got 'score'"):
        RewardModel(tiny_classifier_dir, output="score")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(error.ModelLoadError, match="no-such-org/no-such-classifier.*offline") as e:
        RewardModel("no-such-org/no-such-classifier")([""], ["x"])
    assert "builtin" in str(e.value)


def test_reward_model_as_the_env_reward_and_as_relevance(tiny_classifier_dir):
    rm = RewardModel(tiny_classifier_dir, "glad")
    env = gym.make("lm_gym/Continuation-v0", reward=rm, max_new_tokens=4)
    env.reset(seed=0)
    for token in (300, 301, 302, 303):
        _, r, _, trunc, info = env.step(token)
    assert trunc and info["reward_components"] == {"reward": pytest.approx(r)}
    assert r == pytest.approx(float(rm([info["prompt"]], [info["text"]])[0]))
    env = gym.make("lm_gym/Continuation-v0", relevance=rm, max_new_tokens=4,
                   reward_weights={"fluency": 0.0, "relevance": 1.0, "diversity": 0.0})
    env.reset(seed=0)
    for token in (300, 301, 302, 303):
        _, r, _, _, info = env.step(token)
    assert r == pytest.approx(info["reward_components"]["relevance"]) == pytest.approx(float(rm([""], [info["text"]])[0]))
    with pytest.raises(error.InvalidArgument, match="relevance must be a callable"):
        gym.make("lm_gym/Continuation-v0", relevance="classifier")
    assert isinstance(get_reward("reward_model", model=str(tiny_classifier_dir)), RewardModel)


def test_the_builtin_classifier_knows_sentiment_and_topic():
    from lm_gym.models import builtin_classifier_path
    from lm_gym.models.classifier import LABELS

    metrics = json.loads((builtin_classifier_path() / "metrics.json").read_text())
    assert metrics["labels"] == list(LABELS) and metrics["n_params"] < 1_000_000
    assert metrics["sentiment_accuracy"] > 0.8 and metrics["topic_accuracy"] > 0.8
    positive = RewardModel()  # "builtin", label 0 = "positive"
    texts = [" She smiled, happy and proud, and it was the best day of her life.",
             " He cried, sad and scared, and it was the worst day of his life."]
    pos = positive(["", ""], texts)
    assert pos[0] > 0.5 > pos[1]
    topic = RewardModel(label_key="topic")
    texts = [" The puppy barked at the cat and the horse.", " The rocket flew past the moon and the stars."]
    scores = topic(["", ""] * 2, texts * 2, topic=["animals", "animals", "space", "space"])
    assert scores[0] > scores[1] and scores[3] > scores[2]


def test_pretrain_classifier_builds_a_loadable_classifier(tmp_path):
    from lm_gym.models.classifier import LABELS, pretrain_classifier

    metrics = pretrain_classifier(tmp_path, quick=True, steps=3, progress=False)
    assert metrics["steps"] == 3 and metrics["labels"] == list(LABELS)
    assert 0.0 <= metrics["sentiment_accuracy"] <= 1.0 and 0.0 <= metrics["topic_accuracy"] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text())["n_params"] == metrics["n_params"]
    rm = RewardModel(tmp_path, "negative")
    assert rm.labels == list(LABELS)
    scores = rm(["", ""], ["a sad day", "a happy day"])
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))
    with pytest.raises(error.InvalidArgument, match="steps must be positive, got 0"):
        pretrain_classifier(tmp_path, quick=True, steps=0)
