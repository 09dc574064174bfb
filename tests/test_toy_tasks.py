"""Hand-computed rewards of the toy tasks at their documented edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from lm_gym.tasks import AdditionTask, CopyTask, KeywordToyTask, ParenthesesTask, ReverseTask


def score(task, completions, **meta):
    reward, comps = task.score(["p"] * len(completions), completions, meta)
    return reward, comps


@pytest.mark.parametrize(
    "completion, reward, accuracy, length, exact",
    [
        ("abca", 1.0, 1.0, 1.0, 1.0),  # perfect
        ("", 0.0, 0.0, 0.0, 0.0),  # empty
        ("abcd", 0.75, 0.75, 1.0, 0.0),  # one wrong symbol
        ("ab", 0.5, 0.5, 0.5, 0.0),  # a correct prefix, too short
        ("abcaab", 4 / 6, 1.0, 4 / 6, 0.0),  # right answer plus junk
        ("bcab", 0.0, 0.0, 1.0, 0.0),  # shifted: no position matches
    ],
)
def test_copy_reward(completion, reward, accuracy, length, exact):
    r, c = score(CopyTask(), [completion], target=["abca"])
    assert r[0] == pytest.approx(reward)
    assert c["accuracy"][0] == pytest.approx(accuracy)
    assert c["length"][0] == pytest.approx(length)
    assert c["exact"][0] == exact


def test_copy_and_reverse_prompts_and_targets():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = CopyTask(alphabet_size=3, min_length=2, max_length=5).sample(rng)
        s = p.text[:-1]
        assert p.text.endswith("=") and 2 <= len(s) <= 5 and set(s) <= set("abc")
        assert p.meta["target"] == s
    p = ReverseTask().sample(np.random.default_rng(1))
    assert p.meta["target"] == p.text[:-1][::-1]
    r, _ = score(ReverseTask(), ["dcba", "abcd"], target=["dcba", "dcba"])
    np.testing.assert_allclose(r, [1.0, 0.0])


def test_addition_reward_and_prompts():
    task = AdditionTask(n_digits=2)
    p = task.sample(np.random.default_rng(3))
    a, b = p.text[:-1].split("+")
    assert p.meta["target"] == str(int(a) + int(b))
    r, c = score(task, ["46", "", "45", "4", "460"], target=["46"] * 5)
    np.testing.assert_allclose(r, [1.0, 0.0, 0.5, 0.5, 2 / 3])
    np.testing.assert_allclose(c["exact"], [1, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "completion, n, reward, balance, length",
    [
        ("(())", 4, 1.0, 1.0, 1.0),
        ("()()", 4, 1.0, 1.0, 1.0),
        ("", 4, 0.0, 0.0, 0.0),
        ("()", 4, 0.5, 1.0, 0.5),  # balanced but half the length
        ("(()", 4, (2 / 3) * (3 / 4), 2 / 3, 3 / 4),  # one unclosed "("
        ("))((", 4, 0.0, 0.0, 1.0),  # nothing matches
        ("()())", 4, (4 / 5) * (4 / 5), 4 / 5, 4 / 5),  # one stray ")"
    ],
)
def test_parentheses_reward(completion, n, reward, balance, length):
    r, c = score(ParenthesesTask(), [completion], length=[n])
    assert r[0] == pytest.approx(reward)
    assert c["balance"][0] == pytest.approx(balance)
    assert c["length"][0] == pytest.approx(length)
    assert c["exact"][0] == float(reward == 1.0)


def test_keyword_toy_components():
    task = KeywordToyTask()
    r, c = score(
        task,
        ["the cat", "", "the cat sees the dog", "cat cat cat cat", "the big dog"],
        keywords=[["cat"], ["cat", "dog"], ["cat", "dog"], ["cat", "dog"], ["cat", "dog"]],
    )
    # "the cat": every transition is the most likely one; keyword used; one bigram.
    assert r[0] == pytest.approx(1.0)
    assert (c["fluency"][1], c["relevance"][1], c["diversity"][1], r[1]) == (0.0, 0.0, 0.0, 0.0)
    # <s>→DET 1, DET→NOUN 1, NOUN→VERB .4/.5, VERB→DET 1, DET→NOUN 1, NOUN→</s> 1
    assert c["fluency"][2] == pytest.approx((5 + 0.8) / 6)
    assert c["relevance"][2] == 1.0 and c["diversity"][2] == 1.0
    # "cat cat cat cat": <s>→NOUN 0, NOUN→NOUN 0 (x3), NOUN→</s> 1 → 1/5; bigrams 1 unique of 3
    assert c["fluency"][3] == pytest.approx(0.2)
    assert c["diversity"][3] == pytest.approx(1 / 3)
    assert c["relevance"][3] == 0.5
    # "the big dog": 1, .4/.6, 1, 1
    assert c["fluency"][4] == pytest.approx((3 + 0.4 / 0.6) / 4)
    # the composite is the weighted sum of its components
    np.testing.assert_allclose(r, 0.4 * c["fluency"] + 0.4 * c["relevance"] + 0.2 * c["diversity"])


def test_keyword_toy_reweighting_is_per_env_and_leaves_a_shared_task_alone():
    from lm_gym.envs import TextGenEnv

    task = KeywordToyTask()
    reweighted = TextGenEnv(task, reward_weights={"diversity": 1.0, "fluency": 0.0})
    plain = TextGenEnv(task)
    args = (["p"], ["cat cat cat cat"], [{"keywords": ["cat", "dog"]}])
    assert reweighted.scorer(*args)[0][0] == pytest.approx(0.4 * 0.5 + 1.0 / 3)
    r, c = plain.scorer(*args)
    assert r[0] == pytest.approx(0.4 * c["fluency"][0] + 0.4 * 0.5 + 0.2 / 3)
    assert task.default_weights == {"fluency": 0.4, "relevance": 0.4, "diversity": 0.2}
    assert plain.scorer.weights == task.default_weights and reweighted.scorer.weights["diversity"] == 1.0
    np.testing.assert_array_equal(task.score(["p"], ["cat cat cat cat"], {"keywords": [["cat", "dog"]]})[0], r)


def test_vocabularies_are_small():
    for task in (CopyTask(alphabet_size=26), AdditionTask(), ParenthesesTask(), KeywordToyTask()):
        assert task.vocab_size <= 64
