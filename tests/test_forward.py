"""lm_gym.models.forward.completion_forward: the shared-prompt teacher-forced pass equals one
plain forward over the whole rows, in values and in gradients."""

from __future__ import annotations

import pytest
import torch

from lm_gym import error
from lm_gym.models import position_ids_from_mask
from lm_gym.models.forward import completion_forward


def tiny_lm(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()


def grouped_batch(groups=3, k=4, p=6, c=5, seed=0):
    """``groups`` prompts x ``k`` completions; prompts left-padded by 0..2, completions of
    varied lengths right-padded."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, 50, (groups, p), generator=g).repeat_interleave(k, 0)
    mask = torch.ones(groups * k, p + c, dtype=torch.long)
    for i in range(groups):
        mask[i * k : (i + 1) * k, : i % 3] = 0
    lengths = torch.randint(1, c + 1, (groups * k,), generator=g)
    mask[:, p:] = (torch.arange(c)[None] < lengths[:, None]).long()
    completions = torch.randint(2, 50, (groups * k, c), generator=g) * mask[:, p:]
    return torch.cat([prompts * mask[:, :p], completions], 1), mask


def plain(model, ids, mask, c):
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                output_hidden_states=True)
    p = ids.shape[1] - c
    return out.logits[:, p - 1 : p - 1 + c], out.hidden_states[-1][:, p - 1 : p - 1 + c]


@pytest.mark.parametrize("c", [1, 5])
def test_the_shared_prompt_pass_equals_a_plain_forward(c):
    model = tiny_lm()
    ids, mask = grouped_batch(c=c)
    real = mask[:, -c:].bool()
    logits, hidden = completion_forward(model, ids, mask, c)
    want_logits, want_hidden = plain(model, ids, mask, c)
    assert logits.shape == (12, c, 50) and hidden.shape == (12, c, 32)
    torch.testing.assert_close(logits[real], want_logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden[real], want_hidden[real], atol=1e-5, rtol=1e-5)


def test_the_shared_prompt_pass_has_the_plain_gradients():
    model = tiny_lm().train()
    ids, mask = grouped_batch()
    weight = torch.randn(12, 5, 50)

    def grads(fn):
        model.zero_grad()
        logits, _ = fn(model, ids, mask, 5)
        (logits.log_softmax(-1) * weight * mask[:, -5:, None]).sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    shared, want = grads(completion_forward), grads(plain)
    assert float((shared - want).norm() / want.norm()) < 1e-5


def test_each_distinct_prompt_runs_once():
    model = tiny_lm()
    ids, mask = grouped_batch(groups=3, k=4)
    rows = []
    model.register_forward_hook(lambda m, args, kwargs, out: rows.append(kwargs["input_ids"].shape), with_kwargs=True)
    heads = []
    model.lm_head.register_forward_hook(lambda m, args, out: heads.append(tuple(args[0].shape)))
    completion_forward(model, ids, mask, 5)
    # 3 distinct prompts but their last token; then 12 rows of it and C - 1 = 4 completion tokens
    assert rows == [(3, 5), (12, 5)]
    assert heads == [(3, 1, 32), (12, 5, 32)]  # no LM head over the prompt columns
    rows.clear()
    completion_forward(model, ids, mask, 5, share_prompts=False)
    assert rows == [(12, 11)]
    rows.clear()
    ids, mask = grouped_batch(groups=3, k=4, p=1)  # one prompt column: a plain forward
    logits, _ = completion_forward(model, ids, mask, 5)
    assert rows == [(12, 6)] and logits.shape == (12, 5, 50)


@pytest.mark.parametrize("c", [1, 3])
def test_one_token_prompts_share_the_pass_and_equal_a_plain_forward(c):
    """A prompt of one token leaves its row all padding in the prompt pass (every column but
    the last); the tail starts at that token, so its columns still equal a plain forward."""
    model = tiny_lm()
    ids, mask = grouped_batch(groups=3, k=2, p=4, c=c)
    mask[:2, :3] = 0  # the first prompt is its last token alone
    ids = ids * mask
    real = mask[:, -c:].bool()
    logits, hidden = completion_forward(model, ids, mask, c)
    want_logits, want_hidden = plain(model, ids, mask, c)
    assert bool(torch.isfinite(logits).all())
    torch.testing.assert_close(logits[real], want_logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden[real], want_hidden[real], atol=1e-5, rtol=1e-5)


def test_a_bad_completion_width_is_named():
    model = tiny_lm()
    ids, mask = grouped_batch()
    for bad in (0, 11):
        with pytest.raises(error.InvalidArgument, match=rf"completion_width must be in \[1, 10\] for 11 columns, got {bad}"):
            completion_forward(model, ids, mask, bad)


# -- the fluency judge's states serve the KL reference ----------------------------------------


def frozen(model):
    return model.requires_grad_(False).eval()


def pairs_of(ids, mask, c):
    p = ids.shape[1] - c
    return [([t for t, m in zip(r[:p], k[:p]) if m], [t for t, m in zip(r[p:], k[p:]) if m])
            for r, k in zip(ids.tolist(), mask.tolist())]


def test_remembered_states_serve_the_reference_pass_and_a_parameter_change_drops_them(monkeypatch):
    """The judge's pass (completion_logprob_sums) leaves each row's states; the reference's
    later pass over the same tokens, and over them plus one token (an EOS the judge never
    scored), takes its logits from them and runs the model only on the rows it lacks."""
    import lm_gym.models.forward as forward
    from lm_gym.rewards.fluency import completion_logprob_sums

    model = frozen(tiny_lm())
    ids, mask = grouped_batch(c=6)
    pairs = pairs_of(ids, mask, 6)
    judged = [(p, c[:-1]) if i % 3 == 0 else (p, c) for i, (p, c) in enumerate(pairs)]  # EOS-like last token
    judged[5] = (judged[5][0], [3, 4])  # a row the judge scored differently: not served
    with torch.inference_mode():
        completion_logprob_sums(model, judged, 0, torch.device("cpu"))
    rows = []
    original = forward.completion_forward
    monkeypatch.setattr(forward, "completion_forward", lambda m, i, a, c, **k: rows.append(len(i)) or original(m, i, a, c, **k))
    with torch.no_grad():
        logits, hidden = forward.memo_completion_forward(model, ids, mask, 6)
    assert rows == [1]  # only row 5 ran the model
    want_logits, want_hidden = plain(model, ids, mask, 6)
    real = mask[:, -6:].bool()
    torch.testing.assert_close(logits[real], want_logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden[real], want_hidden[real], atol=1e-5, rtol=1e-5)

    with torch.no_grad():
        model.transformer.wte.weight.mul_(1.5)  # the weights change: every remembered state is stale
        logits, _ = forward.memo_completion_forward(model, ids, mask, 6)
    assert rows == [1, 12]
    torch.testing.assert_close(logits[real], plain(model, ids, mask, 6)[0][real], atol=1e-5, rtol=1e-5)


def test_nothing_is_remembered_for_a_model_that_trains_or_read_with_gradients(monkeypatch):
    import lm_gym.models.forward as forward
    from lm_gym.rewards.fluency import completion_logprob_sums

    training = tiny_lm(seed=1)  # requires_grad: a policy, never memoised
    ids, mask = grouped_batch(c=4)
    with torch.inference_mode():
        completion_logprob_sums(training, pairs_of(ids, mask, 4), 0, torch.device("cpu"))
    assert training not in forward._MEMOS
    judge = frozen(tiny_lm(seed=2))
    with torch.inference_mode():
        completion_logprob_sums(judge, pairs_of(ids, mask, 4), 0, torch.device("cpu"))
    assert len(forward._MEMOS[judge].entries) == 12
    rows, original = [], forward.completion_forward
    monkeypatch.setattr(forward, "completion_forward", lambda m, i, a, c, **k: rows.append(len(i)) or original(m, i, a, c, **k))
    forward.memo_completion_forward(judge, ids, mask, 4)  # gradients on: always the full pass
    with torch.no_grad():
        forward.memo_completion_forward(judge, ids, mask, 4)
    assert rows == [12]


def test_remembered_states_give_the_reference_logprobs_without_the_lm_head(monkeypatch):
    """memo_completion_logprobs: a remembered row's log-probs are a dot product with the
    targets' output embeddings minus the judge's normaliser, equal to the log-softmax of a
    fresh pass; the head runs only for the rows the judge did not score; padding is 0.0."""
    import lm_gym.models.forward as forward
    from lm_gym.rewards.fluency import completion_logprob_sums

    model = frozen(tiny_lm(seed=3))
    ids, mask = grouped_batch(c=6, seed=1)
    pairs = pairs_of(ids, mask, 6)
    judged = [(p, c[:-1]) if i % 2 == 0 else (p, c) for i, (p, c) in enumerate(pairs)]  # EOS-like last token
    judged[7] = (judged[7][0], [3, 4, 5])  # scored differently: not served
    with torch.inference_mode():
        completion_logprob_sums(model, judged, 0, torch.device("cpu"))
    targets = torch.where(mask[:, -6:] != 0, ids[:, -6:], 0)
    rows, heads = [], []
    original = forward.completion_forward
    monkeypatch.setattr(forward, "completion_forward", lambda m, i, a, c, **k: rows.append(len(i)) or original(m, i, a, c, **k))
    model.lm_head.register_forward_hook(lambda module, args, out: heads.append(args[0].shape[0]))
    with torch.no_grad():
        got = forward.memo_completion_logprobs(model, ids, mask, 6, targets)
    assert rows == [1] and got.shape == (12, 6) and got.dtype == torch.float32
    assert heads == [1]  # the LM head ran once, on the one row the judge did not score
    want = torch.log_softmax(plain(model, ids, mask, 6)[0], -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    real = mask[:, -6:].bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    served = torch.ones(12, dtype=torch.bool)
    served[7] = False
    assert (got[served][~real[served]] == 0).all()


def test_the_policy_logprobs_alone_equal_the_full_evaluation():
    """LMPolicy.completion_logprobs(stats=False): the same log-probs as the full evaluation,
    no values or entropy; with an action mask and a temperature too (the logits path)."""
    from agents.lm_policy import LMPolicy

    policy = LMPolicy(tiny_lm(seed=4))
    ids, mask = grouped_batch(c=5, seed=2)
    action_mask = torch.ones(50, dtype=torch.bool)
    action_mask[40:] = False
    ids = ids % 40
    with torch.no_grad():
        for kwargs in ({}, {"action_mask": action_mask.numpy(), "temperature": 0.7}):
            full = policy.completion_logprobs(ids, mask, 5, **kwargs)
            alone = policy.completion_logprobs(ids, mask, 5, stats=False, **kwargs)
            assert alone.values is None and alone.entropy is None
            real = mask[:, -5:].bool()
            torch.testing.assert_close(alone.logprobs[real], full.logprobs[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("wide", [False, True])
def test_remembered_logprobs_under_a_vocabulary_mask_equal_the_masked_softmax(monkeypatch, wide):
    """With ``excluded`` tokens left out of the softmax, a remembered row's normaliser drops
    their share; when they hold most of the probability the whole batch takes the logits
    path instead. Either way: the masked log-softmax of a fresh pass."""
    import lm_gym.models.forward as forward
    from lm_gym.rewards.fluency import completion_logprob_sums

    model = frozen(tiny_lm(seed=5))
    ids, mask = grouped_batch(c=6, seed=3)
    with torch.inference_mode():
        completion_logprob_sums(model, pairs_of(ids, mask, 6), 0, torch.device("cpu"))
    excluded = torch.arange(3, 48) if wide else torch.tensor([1, 7])
    allowed = torch.ones(50, dtype=torch.bool)
    allowed[excluded] = False
    targets = torch.where(mask[:, -6:] != 0, ids[:, -6:], 0)
    targets = torch.where(allowed[targets], targets, 2)  # score valid tokens only
    rows, original = [], forward.completion_forward
    monkeypatch.setattr(forward, "completion_forward", lambda m, i, a, c, **k: rows.append(len(i)) or original(m, i, a, c, **k))
    with torch.no_grad():
        got = forward.memo_completion_logprobs(model, ids, mask, 6, targets, excluded)
    assert rows == ([12] if wide else [])
    logits = plain(model, ids, mask, 6)[0].masked_fill(~allowed, float("-inf"))
    want = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    real = mask[:, -6:].bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
