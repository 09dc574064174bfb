"""Tests for lm_gym.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lm_gym.error import InvalidArgument, RewardError
from lm_gym.metrics import (
    corpus_distinct_n,
    evaluate_texts,
    msttr,
    ngram_entropy,
    self_bleu,
    sentence_bleu,
)
from lm_gym.rewards import Composite, Diversity, KeywordCoverage

CORPUS = [["a", "b", "a"], ["b", "c"]]  # unigrams a a b b c; bigrams ab ba bc; trigram aba


def test_corpus_distinct_n_hand_values():
    assert corpus_distinct_n(CORPUS, 1) == pytest.approx(3 / 5)
    assert corpus_distinct_n(CORPUS, 2) == 1.0  # ab, ba, bc (no bigram across texts)
    assert corpus_distinct_n(CORPUS, 3) == 1.0
    assert math.isnan(corpus_distinct_n(CORPUS, 4))
    assert corpus_distinct_n([["x", "x"], ["x"]], 1) == pytest.approx(1 / 3)


def test_ngram_entropy_hand_values():
    # p = (.4, .4, .2): -(2 * .4 log2 .4 + .2 log2 .2)
    expected = -(2 * 0.4 * math.log2(0.4) + 0.2 * math.log2(0.2))
    assert ngram_entropy(CORPUS, 1) == pytest.approx(expected)
    assert ngram_entropy(CORPUS, 1) == pytest.approx(1.5219280948873621)
    assert ngram_entropy(CORPUS, 2) == pytest.approx(math.log2(3))
    assert ngram_entropy(CORPUS, 3) == 0.0
    assert math.isnan(ngram_entropy([[]], 1))


def test_msttr_hand_values():
    # tokens a b a b c
    assert msttr(CORPUS) == pytest.approx(3 / 5)  # fewer than 100 tokens: plain TTR
    assert msttr(CORPUS, window=2) == 1.0  # [a b] [a b], [c] dropped
    assert msttr(CORPUS, window=3) == pytest.approx(2 / 3)  # [a b a], [b c] dropped
    assert msttr([["x", "y", "x", "x"]], window=2) == pytest.approx((1.0 + 0.5) / 2)
    long_text = [[f"w{i % 50}" for i in range(250)]]  # segments of 100: 50 types each
    assert msttr(long_text) == 0.5
    assert math.isnan(msttr([[]]))
    with pytest.raises(InvalidArgument, match="window"):
        msttr(CORPUS, window=0)


def test_sentence_bleu_hand_value():
    # p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 -> 0.1 (method 1); equal lengths: BP = 1
    bleu = sentence_bleu("a b c d".split(), ["a b c e".split()])
    assert bleu == pytest.approx((0.75 * (2 / 3) * 0.5 * 0.1) ** 0.25)
    # brevity penalty: hyp 2 tokens, closest ref 4 -> exp(1 - 4/2); orders 1..2 only
    assert sentence_bleu("a b".split(), ["a b c d".split()]) == pytest.approx(math.exp(-1))
    assert sentence_bleu([], ["a".split()]) == 0.0


def test_self_bleu_identical_and_different():
    same = [["the", "cat", "sat", "on", "the", "mat"]] * 4
    assert self_bleu(same) == pytest.approx(1.0)
    varied = [
        "the cat sat on the mat".split(),
        "a dog ran in the park".split(),
        "birds sing at dawn every day".split(),
        "the cat sat on a chair".split(),
    ]
    score = self_bleu(varied)
    assert 0.0 < score < 0.5
    # self-BLEU is the mean of sentence BLEU of each text against the others
    by_hand = np.mean(
        [sentence_bleu(t, varied[:i] + varied[i + 1 :]) for i, t in enumerate(varied)]
    )
    assert score == pytest.approx(by_hand)
    assert math.isnan(self_bleu(varied[:1]))
    assert self_bleu(varied, max_samples=2) == pytest.approx(
        np.mean([sentence_bleu(varied[0], [varied[1]]), sentence_bleu(varied[1], [varied[0]])])
    )


def test_evaluate_texts_keys_and_values():
    prompts = ["p1", "p2"]
    completions = ["a b a", "b c"]
    reward = Composite(
        {"keywords": KeywordCoverage(), "diversity": Diversity()},
        {"keywords": 1.0, "diversity": 0.5},
    )
    out = evaluate_texts(
        prompts, completions, reward_fn=reward, meta={"keywords": [["a"], ["a", "c"]]}
    )
    assert set(out) == {
        "mean_reward",
        "reward/keywords",
        "reward/diversity",
        "distinct-1",
        "distinct-2",
        "distinct-3",
        "entropy-1",
        "entropy-2",
        "entropy-3",
        "msttr",
        "mean_length",
        "self_bleu",
    }
    assert all(isinstance(v, float) for v in out.values())
    assert out["reward/keywords"] == pytest.approx((1.0 + 0.5) / 2)
    total, _ = reward.score(prompts, completions, keywords=[["a"], ["a", "c"]])
    assert out["mean_reward"] == pytest.approx(total.mean())
    assert out["distinct-1"] == pytest.approx(0.6)
    assert out["entropy-2"] == pytest.approx(math.log2(3))
    assert out["msttr"] == pytest.approx(0.6)
    assert out["mean_length"] == 2.5


def test_evaluate_texts_plain_callable_reward_and_errors():
    def length_reward(prompts, completions, **meta):
        return [len(c) / 10 for c in completions]

    out = evaluate_texts(["", ""], ["abc", "abcde"], reward_fn=length_reward)
    assert out["mean_reward"] == pytest.approx(0.4)
    assert not any(k.startswith("reward/") for k in out)
    with pytest.raises(RewardError, match=r"<lambda>' returned a list of 1 value\(s\); a reward must be a sequence of 2 real"):
        evaluate_texts(["", ""], ["a", "b"], reward_fn=lambda p, c, **m: [1.0])
    with pytest.raises(InvalidArgument, match="same length"):
        evaluate_texts(["a"], ["a", "b"])


@pytest.fixture(scope="module")
def random_lm():
    """An untrained tiny GPT-2: near-uniform next-token distribution over its vocabulary."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = ["<pad>", "<eos>"] + [f"w{i}" for i in range(30)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left"
    )
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=32, n_layer=1, n_head=2, n_embd=16)
    return GPT2LMHeadModel(config).eval(), tokenizer


def test_evaluate_texts_perplexity(random_lm):
    torch = pytest.importorskip("torch")
    model, tokenizer = random_lm
    prompts = ["w1 w2", "w3", "w4 w5 w6"]
    completions = [" w7 w8 w9", " w10", ""]
    out = evaluate_texts(prompts, completions, ref_model=model, ref_tokenizer=tokenizer)
    # token-weighted, by hand: one unpadded forward per sample
    total_logprob, total_tokens = 0.0, 0
    for p, c in zip(prompts, completions):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([p_ids + c_ids])).logits.log_softmax(-1)[0]  # (T, V)
        total_logprob += sum(logp[len(p_ids) - 1 + j, t].item() for j, t in enumerate(c_ids))
        total_tokens += len(c_ids)
    assert total_tokens == 4
    assert out["perplexity"] == pytest.approx(math.exp(-total_logprob / total_tokens), rel=1e-5)
    assert 16 < out["perplexity"] < 64  # near-uniform over 32 tokens
    with pytest.raises(InvalidArgument, match="ref_tokenizer"):
        evaluate_texts(prompts, completions, ref_model=model)
