import collections
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is fastest and keeps the 2-core CI machine responsive."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny GPT-2 (fresh weights) with the built-in tokenizer, saved like any HF model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lm_gym.models import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-gpt2")
    tok = load_tokenizer("builtin")
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def passes(monkeypatch):
    """Counts teacher-forced passes (``completion_forward`` calls) per model id."""
    import lm_gym.models.forward as forward

    counts, original = collections.Counter(), forward.completion_forward

    def counted(model, *args, **kwargs):
        counts[id(model)] += 1
        return original(model, *args, **kwargs)

    monkeypatch.setattr(forward, "completion_forward", counted)
    return counts
