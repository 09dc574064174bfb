"""Tests for lm_gym.models: the story corpus, model loading, pretraining."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
import torch

import lm_gym
from lm_gym.error import InvalidArgument, ModelLoadError, UnknownName
from lm_gym.models import (
    BUILTIN,
    PAD_TOKEN,
    builtin_path,
    load_frozen,
    load_lm,
    load_model_and_tokenizer,
    load_tokenizer,
    position_ids_from_mask,
)
from lm_gym.models.corpus import (
    SENTIMENTS,
    TOPICS,
    corpus,
    generate_stories,
    prompts,
    topic_words,
    vocabulary,
)

KEYWORD_LISTS = 0.5
"""The fraction of keyword-list stories the shipped ``builtin-keywords`` LM was pretrained on."""

# ------------------------------------------------------------------------------ corpus


def test_generate_stories_is_deterministic_and_prefix_stable():
    a = generate_stories(50, seed=3)
    assert a == generate_stories(50, seed=3)
    assert a[:10] == generate_stories(10, seed=3)
    assert a != generate_stories(50, seed=4)


def test_corpus_vocabulary_topics_and_sentiments():
    stories = generate_stories(5000, seed=0)
    assert len(vocabulary(stories)) >= 2000
    assert len(TOPICS) >= 6
    counts = Counter((s.topic, s.sentiment) for s in stories)
    assert set(counts) == {(t, s) for t in TOPICS for s in SENTIMENTS}
    assert min(counts.values()) > 5000 / (2 * len(TOPICS)) * 0.7  # roughly uniform
    lengths = Counter(len(re.findall(r'[.!?]"?(?:\s+(?=[A-Z"])|$)', s.text)) for s in stories)
    assert set(lengths) <= {3, 4, 5, 6} and len(lengths) == 4
    # several syntactic forms occur: dialogue, questions, subordinate clauses
    texts = " ".join(s.text for s in stories[:500])
    assert '," said' in texts and "?" in texts and re.search(r"\b(When|Because|Although) ", texts)


def test_story_keywords_appear_in_text_and_belong_to_topic():
    for s in generate_stories(300, seed=1):
        assert 2 <= len(s.keywords) <= 3
        words = set(re.findall(r"[a-z]+", s.text.lower()))
        assert set(s.keywords) <= words
        assert set(s.keywords) <= set(topic_words(s.topic))


def test_sentiment_words_follow_the_label():
    stories = generate_stories(400, seed=2)
    pos = " ".join(s.text for s in stories if s.sentiment == "positive")
    neg = " ".join(s.text for s in stories if s.sentiment == "negative")
    assert pos.count("wonderful") + pos.count("happy") > 3 * (neg.count("wonderful") + 1)
    assert neg.count("terrible") + neg.count("sad") > 3 * (pos.count("terrible") + 1)


def test_topic_words():
    ocean = topic_words("ocean")
    assert {"whale", "whales", "sail", "sailed", "sailing"} <= set(ocean)
    assert len(ocean) == len(set(ocean)) > 50
    with pytest.raises(UnknownName, match="Did you mean 'ocean'"):
        topic_words("oceans")


def test_splits_are_fixed_and_disjoint():
    train = corpus("train", 3000)
    valid, test = corpus("valid"), corpus("test")
    assert len(valid) == len(test) == 500
    assert corpus("valid", 20) == valid[:20]
    train_texts = {s.text for s in train}
    assert not train_texts & {s.text for s in valid}
    assert not train_texts & {s.text for s in test}
    assert not {s.text for s in valid} & {s.text for s in test}
    with pytest.raises(UnknownName, match="'test'"):
        corpus("tset")
    with pytest.raises(InvalidArgument, match="-1"):
        corpus("train", -1)


def test_prompts_are_story_openings():
    ps = prompts("test", n=200)
    assert len(ps) == 200
    stories = corpus("test")
    for (prompt, meta), story in zip(ps, stories):
        assert story.text.startswith(prompt)
        assert 8 <= len(prompt.split()) <= 30
        assert meta["topic"] == story.topic and meta["keywords"] == story.keywords
    n_words = np.array([len(p.split()) for p, _ in ps])
    assert 8 <= np.median(n_words) <= 20
    drawn = prompts("valid", n=10, seed=5)
    assert drawn == prompts("valid", n=10, seed=5) and drawn != prompts("valid", n=10, seed=6)


# ------------------------------------------------------------------------------ loading


def test_import_is_light():
    code = "import sys, lm_gym.models, lm_gym.models.corpus; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_builtin_loads_and_runs():
    assert (builtin_path() / "model.safetensors").is_file()
    model, tok = load_model_and_tokenizer(BUILTIN)
    assert not model.training
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    assert model.config.pad_token_id == tok.pad_token_id
    batch = tok(["The dog ran to the farm.", "Hi"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0  # left padded
    with torch.no_grad():
        logits = model(**batch, position_ids=position_ids_from_mask(batch["attention_mask"])).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], model.config.vocab_size)  # (B, T, V)
    assert len(tok) <= model.config.vocab_size
    text = corpus("test", 1)[0].text
    ids = tok(text)["input_ids"]
    assert tok.eos_token_id not in ids and tok.decode(ids) == text  # no specials, lossless
    metrics = json.loads((builtin_path() / "metrics.json").read_text())
    assert metrics["test_ppl"] < 20


def test_builtin_is_better_than_chance_on_held_out_text():
    from lm_gym.models.pretrain import perplexity

    model, tok = load_model_and_tokenizer(BUILTIN)
    ppl = perplexity(model, tok, corpus("test", 40))
    assert 1.0 < ppl < 20  # a uniform guess would be ~len(tok)


def test_load_frozen_is_shared_and_frozen():
    model, tok = load_frozen(BUILTIN)
    assert load_frozen(BUILTIN)[0] is model
    assert not any(p.requires_grad for p in model.parameters())
    assert load_model_and_tokenizer(BUILTIN)[0] is not model


def _tiny_gpt2(tmp_path, *, with_pad: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<pad>"] if with_pad else [])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator([s.text for s in generate_stories(50)], trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>",
                                  **({"pad_token": "<pad>"} if with_pad else {}))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16,
                                       n_layer=1, n_head=2, eos_token_id=0, bos_token_id=0))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return model, tok


def test_local_path_round_trip(tmp_path):
    saved, saved_tok = _tiny_gpt2(tmp_path, with_pad=True)
    model, tok = load_model_and_tokenizer(tmp_path)
    assert tok.pad_token == "<pad>" and tok.padding_side == "left"
    assert len(tok) == len(saved_tok) == model.config.vocab_size
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, saved.eval()(ids).logits)
    assert load_tokenizer(str(tmp_path)).pad_token == "<pad>"
    assert load_lm(tmp_path, dtype="bfloat16").dtype == torch.bfloat16


def test_missing_pad_token_is_added_and_embeddings_resized(tmp_path):
    saved, saved_tok = _tiny_gpt2(tmp_path, with_pad=False)
    assert saved_tok.pad_token is None
    model, tok = load_model_and_tokenizer(tmp_path)
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id != tok.eos_token_id
    assert tok.pad_token_id == len(saved_tok)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == len(saved_tok) + 1
    assert model.config.pad_token_id == tok.pad_token_id
    batch = tok(["a cat", "the big dog ran"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits  # (B, T, V)
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["gpt2", "no-such/model"])
def test_unavailable_name_raises_model_load_error(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="builtin") as info:
        load_model_and_tokenizer(name)
    assert name in str(info.value) and "offline" in str(info.value)
    assert info.value.__cause__ is not None
    assert isinstance(info.value, OSError)  # ModelLoadError keeps the builtin base


def test_bad_paths_and_dtypes(tmp_path):
    with pytest.raises(ModelLoadError, match="No model directory at './missing'"):
        load_lm("./missing")
    with pytest.raises(ModelLoadError, match="builtin"):
        load_lm(tmp_path)  # an empty directory
    with pytest.raises(InvalidArgument, match="float33"):
        load_lm(BUILTIN, dtype="float33")


@pytest.mark.parametrize("name", [123, "", "  ", None, 1.5])
def test_a_model_name_that_is_not_a_name(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" used to load the current directory
    for load in (load_lm, load_tokenizer, load_frozen):
        with pytest.raises(InvalidArgument, match=f"model must be a non-empty string or path, got {re.escape(repr(name))}"):
            load(name)
    with pytest.raises(InvalidArgument, match="model must be a non-empty string"):
        gym.make("lm_gym/Continuation-v0", model=name)


def test_bad_devices_name_the_device_and_what_is_valid(monkeypatch):
    with pytest.raises(InvalidArgument, match=r"Unknown device 'tpu9'; use 'cpu', 'cuda' or 'cuda:N'"):
        load_lm(BUILTIN, device="tpu9")
    with pytest.raises(InvalidArgument, match="Unknown device 'tpu9'"):
        gym.make("lm_gym/Continuation-v0", device="tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for load in (load_lm, load_frozen, load_model_and_tokenizer):
        with pytest.raises(InvalidArgument, match=r"device='cuda:0' is not available on this machine \(torch.cuda"):
            load(BUILTIN, device="cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InvalidArgument, match=r"device='cuda:5': this machine has 2 cuda device\(s\), cuda:0 .. cuda:1"):
        load_lm(BUILTIN, device="cuda:5")
    from lm_gym.models import check_device

    assert check_device("cpu") == "cpu" and check_device(None) is None and check_device(torch.device("cpu")) == torch.device("cpu")


def _truncate(path, keep=100):
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "file, damage",
    [
        ("model.safetensors", lambda p: _truncate(p, 100)),  # the header cut
        ("model.safetensors", lambda p: _truncate(p, p.stat().st_size - 64)),  # the tensors cut
        ("model.safetensors", lambda p: p.write_bytes(b"not a safetensors file")),
        ("config.json", lambda p: _truncate(p, 30)),
        ("tokenizer.json", lambda p: _truncate(p, 30)),
    ],
)
def test_a_damaged_model_file_is_named(tmp_path, file, damage):
    _tiny_gpt2(tmp_path, with_pad=True)
    damage(tmp_path / file)
    with pytest.raises(ModelLoadError) as info:
        load_model_and_tokenizer(tmp_path)
    message = str(info.value)
    assert f"the file {str(tmp_path / file)!r} is damaged or truncated" in message
    assert "save_pretrained" in message and "builtin" in message


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    out = position_ids_from_mask(mask)
    assert out.dtype == torch.int64
    torch.testing.assert_close(out, expected)


# ------------------------------------------------------------------------------ pretrain


def test_quick_pretrain_writes_a_loadable_model(tmp_path):
    from lm_gym.models.pretrain import pretrain

    metrics = pretrain(tmp_path, quick=True, progress=False, seed=1)
    assert math.isfinite(metrics["valid_ppl"]) and math.isfinite(metrics["test_ppl"])
    assert 1.0 < metrics["test_ppl"] < metrics["config"]["vocab_size"]  # learnt something
    assert json.loads((tmp_path / "metrics.json").read_text())["test_ppl"] == metrics["test_ppl"]
    model, tok = load_model_and_tokenizer(tmp_path)
    assert tok.pad_token == PAD_TOKEN and tok.eos_token == "<|endoftext|>"
    assert len(tok) == model.config.vocab_size  # no resize needed
    again = pretrain(tmp_path / "again", quick=True, progress=False, seed=1)
    assert again["test_ppl"] == pytest.approx(metrics["test_ppl"], rel=1e-6)  # deterministic


def test_keyword_list_pretraining_texts_use_keyword_storys_prompt_format():
    from lm_gym.models.corpus import keyword_header
    from lm_gym.models.pretrain import PretrainConfig, training_texts

    stories = corpus("train", 400)
    assert training_texts(stories) == [s.text for s in stories]  # the shipped model's corpus
    listed = training_texts(stories, keyword_lists=1.0)
    for story, text in zip(stories, listed):
        head = keyword_header(story.keywords[:3])
        assert text == f"{head} {story.text}" and head.startswith("Keywords: ")
        assert all(re.search(rf"\b{re.escape(w)}", story.text, re.IGNORECASE) for w in story.keywords[:3])
    half = training_texts(stories, keyword_lists=0.5, seed=3)
    n = sum(t.startswith("Keywords: ") for t in half)
    assert 150 < n < 250 and half == training_texts(stories, keyword_lists=0.5, seed=3)
    # KeywordStory's built-in prompts open with the same header as the pretraining texts
    env = gym.make("lm_gym/KeywordStory-v1")
    prompt = env.unwrapped.task.prompts[0][0]
    assert re.match(r"Keywords: [a-z]+(, [a-z]+)*\. ", prompt), prompt
    env.close()
    with pytest.raises(InvalidArgument, match=r"keyword_lists must be a fraction in \[0, 1\], got 1.5"):
        PretrainConfig(keyword_lists=1.5)
    with pytest.raises(InvalidArgument, match="got True"):
        PretrainConfig(keyword_lists=True)


def test_quick_pretrain_with_keyword_lists_records_the_fraction(tmp_path):
    import dataclasses

    from lm_gym.models.pretrain import PretrainConfig, pretrain

    cfg = dataclasses.replace(PretrainConfig.quick(), keyword_lists=0.5, steps=5)
    metrics = pretrain(tmp_path / "listed", config=cfg, progress=False)
    assert metrics["config"]["keyword_lists"] == 0.5 and math.isfinite(metrics["test_ppl"])
    assert json.loads((tmp_path / "listed" / "metrics.json").read_text())["config"]["keyword_lists"] == 0.5
    # the tokenizer is learned on the plain stories: a listed word is the same tokens as in a story
    pretrain(tmp_path / "plain", config=dataclasses.replace(cfg, keyword_lists=0.0, steps=1), progress=False)
    listed, plain = (load_tokenizer(tmp_path / d) for d in ("listed", "plain"))
    assert listed.get_vocab() == plain.get_vocab()
    assert listed.encode(" duck, carry") == plain.encode(" duck, carry")


def test_the_shipped_keyword_list_lm_shares_the_builtin_tokenizer_and_uses_the_listed_words():
    from lm_gym.models import BUILTIN_KEYWORDS
    from lm_gym.rewards import KeywordCoverage

    metrics = json.loads((builtin_path(BUILTIN_KEYWORDS) / "metrics.json").read_text())
    assert metrics["config"]["keyword_lists"] == KEYWORD_LISTS and metrics["test_ppl"] < 5
    assert load_tokenizer(BUILTIN_KEYWORDS).get_vocab() == load_tokenizer(BUILTIN).get_vocab()
    env = gym.make("lm_gym/KeywordStory-v2", split="test")
    assert env.unwrapped.task.model_name == BUILTIN_KEYWORDS
    rows = lm_gym.prompt_dataset(env, n=32)
    texts, keywords = [r["prompt"] for r in rows], [r["keywords"] for r in rows]
    coverage = {}
    for name in (BUILTIN, BUILTIN_KEYWORDS):
        model, tok = load_frozen(name)
        torch.manual_seed(0)
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=24, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id)
        completions = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        coverage[name] = float(np.mean(KeywordCoverage()(texts, completions, keywords=keywords)))
    # measured: 0.01 and 0.48 (the built-in LM never saw a keyword list)
    assert coverage[BUILTIN] < 0.15 < 0.3 < coverage[BUILTIN_KEYWORDS], coverage
    with pytest.raises(UnknownName, match=r"Unknown built-in model 'builtin-kw'.*'builtin-keywords'"):
        builtin_path("builtin-kw")


@pytest.mark.parametrize(("name", "command"), [(BUILTIN, "`lm-gym pretrain`"),
                                               ("builtin-keywords", "`lm-gym pretrain --keyword-lists 0.5`")])
def test_a_missing_builtin_model_says_how_to_recreate_it(monkeypatch, name, command):
    import lm_gym.models

    monkeypatch.setitem(lm_gym.models.BUILTIN_MODELS, name, "no_such_folder")
    with pytest.raises(ModelLoadError, match=rf"The built-in model '{name}' is missing from .*no_such_folder; "
                       rf"reinstall lm-gym or recreate it with {re.escape(command)}"):
        load_lm(name)


def test_perplexity_through_the_shared_logprob_routine_reproduces_the_shipped_metrics():
    from lm_gym.models import builtin_path, load_frozen
    from lm_gym.models.pretrain import perplexity

    model, tok = load_frozen("builtin")
    shipped = json.loads((builtin_path() / "metrics.json").read_text())
    assert perplexity(model, tok, corpus("test", shipped["config"]["n_eval_stories"])) == pytest.approx(
        shipped["test_ppl"], rel=1e-5
    )


def test_fuse_activations_swaps_gelu_new_for_the_same_fused_function():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.activations import NewGELUActivation

    from lm_gym.models import fuse_activations

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=2, n_positions=16)).eval()
    ids = torch.randint(0, 40, (3, 9))
    before = model(ids).logits
    assert sum(type(m) is NewGELUActivation for m in model.modules()) == 2
    assert fuse_activations(model) is model
    assert not any(type(m) is NewGELUActivation for m in model.modules())
    assert model.config.activation_function == "gelu_new"  # saved checkpoints are unchanged
    torch.testing.assert_close(model(ids).logits, before, atol=1e-5, rtol=0)
