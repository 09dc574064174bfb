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
    completion_forward(model, ids, mask, 5)
    assert rows == [(3, 6), (12, 4)]  # 3 distinct prompts; then 12 rows of C - 1 = 4 tokens
    rows.clear()
    completion_forward(model, ids, mask, 5, share_prompts=False)
    assert rows == [(12, 11)]


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
