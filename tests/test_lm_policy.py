"""agents.lm_policy: KV-cached act agrees with teacher forcing; sampling, masks, NLPO, checkpoints."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from agents.lm_policy import LMPolicy, next_tokens
from lm_gym.error import InvalidArgument, ModelLoadError
from lm_gym.models import position_ids_from_mask as positions_from_mask
from tests.helpers import ForwardCounter

V = 12  # toy vocabulary; id 0 is PAD
P, G = 4, 4  # max prompt tokens, max new tokens
L = P + G  # observation width


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def window(tokens: list[int], width: int = L) -> tuple[np.ndarray, np.ndarray]:
    """A left-padded observation row (pad id 0), as the env builds it."""
    ids = np.zeros(width, np.int64)
    mask = np.zeros(width, np.int8)
    ids[width - len(tokens) :] = tokens
    mask[width - len(tokens) :] = 1
    return ids, mask


def batch(contexts: list[list[int]], width: int = L) -> dict[str, np.ndarray]:
    rows = [window(c, width) for c in contexts]
    return {
        "input_ids": np.stack([r[0] for r in rows]),
        "attention_mask": np.stack([r[1] for r in rows]),
    }


def make_policy(**kwargs) -> LMPolicy:
    policy = LMPolicy.for_vocab(V, n_layer=2, n_embd=32, n_head=4, n_positions=32, seed=0, **kwargs)
    with torch.no_grad():  # a non-trivial value head, so value comparisons mean something
        policy.value_head.weight.normal_(generator=torch.Generator().manual_seed(1))
        policy.value_head.bias.fill_(0.25)
    return policy


def teacher_forced_last(policy: LMPolicy, obs: dict, actions: np.ndarray, **kwargs):
    ids = torch.as_tensor(obs["input_ids"])
    mask = torch.as_tensor(obs["attention_mask"])
    acts = torch.zeros_like(ids)
    acts[:, -1] = torch.as_tensor(actions)
    with torch.no_grad():
        logits, _ = policy(ids, mask)
        ev = policy.logprobs_of(ids, mask, acts, **kwargs)
    return logits[:, -1], ev.logprobs[:, -1], ev.values[:, -1]


def simulate(policy: LMPolicy, steps: int, n_slots: int = 3, seed: int = 0, check=None):
    """Drive ``policy.act`` like a vector env with autoreset: slots restart at different steps.

    At every step the act outputs are compared with a teacher-forced forward over the same
    windows; at every episode end the whole episode is recomputed teacher-forced in one pass
    and compared with the log-probs/values act returned step by step. Returns the lengths the
    batch cache had after each step.
    """
    rng = np.random.default_rng(seed)

    def fresh():
        return [int(t) for t in rng.integers(1, V, rng.integers(1, P + 1))], int(
            rng.integers(1, G + 1)
        )

    episodes = [fresh() for _ in range(n_slots)]
    ctx = [list(p) for p, _ in episodes]
    budget = [b for _, b in episodes]
    record: list[list[tuple[float, float]]] = [[] for _ in range(n_slots)]
    new = np.ones(n_slots, bool)
    lengths = []
    for _ in range(steps):
        obs = batch(ctx)
        out = policy.act(obs, new)
        lengths.append(policy._states["policy"].length)
        logits, logprobs, values = teacher_forced_last(policy, obs, out.actions)
        torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)
        np.testing.assert_allclose(out.logprobs, logprobs.numpy(), atol=1e-4)
        np.testing.assert_allclose(out.values, values.numpy(), atol=1e-4)
        new = np.zeros(n_slots, bool)
        for i in range(n_slots):
            ctx[i].append(int(out.actions[i]))
            record[i].append((float(out.logprobs[i]), float(out.values[i])))
            if len(record[i]) == budget[i]:  # episode over: recompute it in one forward
                k = len(record[i])
                row = batch([ctx[i]])
                ids = torch.as_tensor(row["input_ids"])
                with torch.no_grad():
                    ev = policy.logprobs_of(
                        ids, torch.as_tensor(row["attention_mask"]), next_tokens(ids)
                    )
                cols = slice(L - 1 - k, L - 1)  # the k states the actions were chosen from
                np.testing.assert_allclose(
                    ev.logprobs[0, cols].numpy(), [r[0] for r in record[i]], atol=1e-4
                )
                np.testing.assert_allclose(
                    ev.values[0, cols].numpy(), [r[1] for r in record[i]], atol=1e-4
                )
                (prompt, budget[i]), record[i] = fresh(), []
                ctx[i] = prompt
                new[i] = True
    return lengths


def test_for_vocab_sizes_and_zero_value_head():
    policy = LMPolicy.for_vocab(V, n_layer=3, n_embd=48, n_head=6, n_positions=40, seed=0)
    cfg = policy.model.config
    assert (cfg.vocab_size, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions) == (
        V,
        3,
        48,
        6,
        40,
    )
    assert policy.vocab_size == V and policy.max_positions == 40
    assert policy.device == torch.device("cpu")
    obs = batch([[1, 2, 3], [4]])
    logits, values = policy(
        torch.as_tensor(obs["input_ids"]), torch.as_tensor(obs["attention_mask"])
    )
    assert logits.shape == (2, L, V) and values.shape == (2, L)
    assert torch.count_nonzero(values) == 0  # zero-initialised value head
    assert policy.value_head.weight.shape == (1, 48)
    # the same seed gives the same weights, without touching the global RNG
    state = torch.random.get_rng_state()
    again = LMPolicy.for_vocab(V, n_layer=3, n_embd=48, n_head=6, n_positions=40, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(again.model.lm_head.weight, policy.model.lm_head.weight)
    with pytest.raises(InvalidArgument, match="n_embd=50 must be divisible by n_head=4"):
        LMPolicy.for_vocab(V, n_embd=50, n_head=4)


def test_left_padding_does_not_change_scores():
    policy = make_policy()
    ids = torch.tensor([[3, 5, 7]])
    logits, values = policy(ids, torch.ones_like(ids))
    obs = batch([[3, 5, 7]])
    padded_logits, padded_values = policy(
        torch.as_tensor(obs["input_ids"]), torch.as_tensor(obs["attention_mask"])
    )
    torch.testing.assert_close(padded_logits[:, -3:], logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded_values[:, -3:], values, atol=1e-5, rtol=0)
    assert positions_from_mask(torch.tensor([[0, 0, 1, 1, 1]])).tolist() == [[0, 0, 0, 1, 2]]


@pytest.mark.parametrize("prefill_tokens", [None, 3])  # 3: prefills chunked, each its own width
def test_kv_cached_act_matches_teacher_forcing_with_staggered_restarts(monkeypatch, prefill_tokens):
    import agents.lm_policy as lm_policy

    if prefill_tokens is not None:
        monkeypatch.setattr(lm_policy, "PREFILL_TOKENS", prefill_tokens)
    policy = make_policy()
    policy.seed(0)
    lengths = simulate(policy, steps=24)
    assert lengths[0] == 4  # the first prefill drops the all-padding columns
    assert max(lengths) == 2 * L  # default slack = L: the cache stays bounded
    assert any(b < a for a, b in zip(lengths, lengths[1:]))  # it was compacted at least once


def test_kv_cached_act_matches_across_frequent_compactions_and_temperature():
    policy = make_policy(cache_slack=2, temperature=0.7)
    policy.seed(1)
    lengths = simulate(policy, steps=16, n_slots=4, seed=1)
    assert max(lengths) == L + 2
    assert sum(b < a for a, b in zip(lengths, lengths[1:])) >= 2  # compacted repeatedly


@pytest.mark.parametrize("fast", [True, False])
def test_one_incremental_forward_never_one_per_token(fast):
    policy = make_policy()
    policy._fast_path = fast
    counter = ForwardCounter(policy.model)
    ctx = [[1, 2], [3], [6], [7, 8]]
    out = policy.act(batch(ctx), np.ones(4, bool))
    assert counter.shapes == [(4, 2)]  # one batched prefill (columns padded in every row dropped)
    for step in range(3):
        counter.shapes.clear()
        for i in range(4):
            ctx[i].append(int(out.actions[i]))
        out = policy.act(batch(ctx), np.zeros(4, bool))
        assert counter.shapes == [(4, 1)], step  # one forward over the newest tokens only
    counter.shapes.clear()
    assert policy._states["policy"].length == 5
    ctx[1], ctx[3] = [2, 3, 4, 5, 6, 7, 8], [5]  # slots 1 and 3 restart, one wider than the cache
    for i in (0, 2):
        ctx[i].append(int(out.actions[i]))
    obs = batch(ctx)
    out = policy.act(obs, np.array([False, True, False, True]))
    # one prefill (new) + one step (the others; the fast path steps every row, then
    # overwrites the new ones' rows)
    assert sorted(counter.shapes) == ([(2, 7), (4, 1)] if fast else [(2, 1), (2, 7)])
    assert policy._states["policy"].length == 7  # old rows were left-padded to fit
    logits, _, _ = teacher_forced_last(policy, obs, out.actions)
    torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)
    counter.shapes.clear()
    for i in range(4):
        ctx[i].append(int(out.actions[i]))
    obs = batch(ctx)
    out = policy.act(obs, np.zeros(4, bool))
    assert counter.shapes == [(4, 1)]
    logits, _, _ = teacher_forced_last(policy, obs, out.actions)
    torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)


def test_weight_update_invalidates_cache():
    policy = make_policy()
    ctx = [[1, 2, 3], [4, 5]]
    out = policy.act(batch(ctx), None)
    with torch.no_grad():  # an optimizer step changes the weights in place
        for p in policy.model.parameters():
            p.add_(0.05)
    for i in range(2):
        ctx[i].append(int(out.actions[i]))
    obs = batch(ctx)
    out = policy.act(obs, np.zeros(2, bool))
    logits, _, _ = teacher_forced_last(policy, obs, out.actions)
    torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)


def test_after_update_reuses_the_static_buffers_and_stale_columns_stay_masked():
    """A learner's iteration ends in after_update: the next rollout reuses the fast path's
    key/value buffers (no reallocation, no zero-fill) holding the last rollout's keys, and
    matches teacher forcing under the updated weights."""
    policy = make_policy(cache_slack=3)
    ctx = [[1, 2, 3], [4, 5], [6]]
    for _ in range(3):  # fill the buffers with this rollout's keys and values
        out = policy.act(batch(ctx), None)
        ctx = [c + [int(a)] for c, a in zip(ctx, out.actions)]
    k = policy._states["policy"].k
    assert k is not None and k.abs().sum() > 0
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.05)
    policy.after_update()
    ctx = [[7], [8, 9, 10], [11, 2]]  # shorter prompts: stale columns lie in the window
    for _ in range(3):
        obs = batch(ctx)
        out = policy.act(obs, None)
        logits, logprobs, _ = teacher_forced_last(policy, obs, out.actions)
        torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)
        np.testing.assert_allclose(out.logprobs, logprobs.numpy(), atol=1e-5)
        ctx = [c + [int(a)] for c, a in zip(ctx, out.actions)]
    assert policy._states["policy"].k is k


def test_unflagged_new_episode_is_an_error():
    policy = make_policy()
    policy.act(batch([[1, 2, 3], [4, 5]]), None)
    with pytest.raises(InvalidArgument, match=r"slot\(s\) \[1\] were not flagged new_episode"):
        policy.act(batch([[1, 2, 3, 9], [7, 7, 7, 7, 7]]), np.zeros(2, bool))
    with pytest.raises(InvalidArgument, match="new_episode has 3 flags for 2 slots"):
        policy.act(batch([[1], [2]]), np.zeros(3, bool))
    with pytest.raises(InvalidArgument, match="active has 1 flags for 2 slots"):
        policy.act(batch([[1], [2]]), None, active=np.ones(1, bool))


def test_an_inactive_slot_is_neither_checked_nor_prefilled():
    policy = make_policy()
    counter = ForwardCounter(policy.model)
    policy.act(batch([[1, 2, 3], [4, 5]]), None)
    counter.shapes.clear()
    # slot 1 shows a foreign window: flagged inactive it is stepped on its cache, not prefilled
    out = policy.act(batch([[1, 2, 3, 9], [7, 7, 7, 7, 7]]), np.zeros(2, bool), active=np.array([True, False]))
    assert counter.shapes == [(2, 1)] and out.actions.shape == (2,)


def test_masked_tokens_never_sampled_and_logprobs_renormalised():
    policy = make_policy()
    policy.seed(0)
    allowed = [2, 5, 9]
    mask = np.zeros(V, np.int8)
    mask[allowed] = 1
    obs = batch([[3, 1, 4]] * 500)  # 500 samples of the same state in one call
    out = policy.act(obs, None, action_mask=mask)
    assert set(out.actions.tolist()) <= set(allowed)
    assert len(set(out.actions.tolist())) == 3  # all valid tokens do get sampled
    logits = out.logits[0]
    expected = torch.log_softmax(logits[allowed], -1)  # the masked distribution over 3 tokens
    lookup = dict(zip(allowed, expected.tolist()))
    np.testing.assert_allclose(out.logprobs, [lookup[a] for a in out.actions], atol=1e-5)
    # teacher-forced recomputation with the same mask agrees
    _, logprobs, _ = teacher_forced_last(policy, obs, out.actions, action_mask=mask)
    np.testing.assert_allclose(logprobs.numpy(), out.logprobs, atol=1e-4)
    # per-slot (N, V) masks
    rows = np.zeros((2, V), np.int8)
    rows[0, 7] = 1
    rows[1, [3, 4]] = 1
    out = policy.act(batch([[1], [1]]), None, action_mask=rows)
    assert out.actions[0] == 7 and out.logprobs[0] == pytest.approx(0.0, abs=1e-6)
    assert out.actions[1] in (3, 4)
    with pytest.raises(InvalidArgument, match="no valid token"):
        policy.act(batch([[1]]), None, action_mask=np.zeros(V, np.int8))
    with pytest.raises(InvalidArgument, match="width 5 but the policy's vocabulary has 12"):
        policy.act(batch([[1]]), None, action_mask=np.ones(5, np.int8))


def test_sampling_follows_the_masked_distribution():
    policy = make_policy(temperature=0.7)
    policy.seed(0)
    mask = np.ones(V, np.int8)
    mask[[0, 4]] = 0
    out = policy.act(batch([[3, 1, 4]] * 20_000), None, action_mask=mask)
    expected = torch.softmax(out.logits[0] / 0.7 + torch.as_tensor(np.where(mask, 0.0, -np.inf)), -1).numpy()
    freq = np.bincount(out.actions, minlength=V) / len(out.actions)
    assert freq[0] == 0 and freq[4] == 0
    np.testing.assert_allclose(freq, expected, atol=0.015)  # 3 sigma at p = 0.5 is 0.011


def test_a_uniform_at_the_top_of_the_cdf_never_picks_a_masked_last_token(monkeypatch):
    """u is drawn in [0, 1) and scaled by the row's total; rounding could land it on the total,
    past the last valid token. The sampler keeps it below, so the last valid token is taken."""
    policy = make_policy()
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: real_rand(*a, **k).fill_(1.0))  # the worst case
    mask = np.ones(V, np.int8)
    mask[[V - 2, V - 1]] = 0  # the top of the vocabulary is masked
    out = policy.act(batch([[3, 1, 4], [5]]), None, action_mask=mask)
    assert out.actions.tolist() == [V - 3, V - 3]
    monkeypatch.setattr(torch, "rand", lambda *a, **k: real_rand(*a, **k).zero_())
    mask[[1, 2]] = 0  # and so is the bottom, bar PAD
    mask[0] = 0
    out = policy.act(batch([[3, 1, 4]]), None, action_mask=mask)
    assert out.actions.tolist() == [3]  # u = 0 takes the first valid token


def test_masked_entropy_and_its_gradient_are_finite():
    policy = make_policy()
    allowed = [2, 5, 9]
    mask = np.zeros(V, np.int8)
    mask[allowed] = 1
    obs = batch([[3, 1, 4], [6, 2]])
    ids, attn = torch.as_tensor(obs["input_ids"]), torch.as_tensor(obs["attention_mask"])
    acts = torch.full_like(ids, 5)
    ev = policy.logprobs_of(ids, attn, acts, action_mask=mask)
    assert torch.all(ev.entropy > 0) and torch.all(ev.entropy <= np.log(3) + 1e-5)  # 3 valid tokens
    ev.entropy.sum().backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_model_emitting_minus_inf_logits_gets_the_masked_entropy_without_a_mask():
    """Unmasked evaluation skips the -inf guard; a head that bans tokens itself still gets the
    finite entropy (and gradient) of the same tokens masked explicitly."""
    policy = make_policy()
    banned = [1, 7, 8]
    policy.model.lm_head.register_forward_hook(lambda m, i, out: out.index_fill(-1, torch.tensor(banned), float("-inf")))
    obs = batch([[3, 1, 4], [6, 2]])
    ids, attn = torch.as_tensor(obs["input_ids"]), torch.as_tensor(obs["attention_mask"])
    acts = torch.full_like(ids, 5)
    ev = policy.logprobs_of(ids, attn, acts)
    mask = np.ones(V, np.int8)
    mask[banned] = 0
    with torch.no_grad():
        masked = policy.logprobs_of(ids, attn, acts, action_mask=mask)
    assert bool(torch.isfinite(ev.entropy).all()) and ev.entropy.min() > 0
    torch.testing.assert_close(ev.entropy, masked.entropy)
    torch.testing.assert_close(ev.logprobs, masked.logprobs)
    ev.entropy.sum().backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_deterministic_is_masked_argmax():
    policy = make_policy()
    obs = batch([[1, 2], [3], [4, 5, 6]])
    out = policy.act(obs, None, deterministic=True)
    assert out.actions.tolist() == out.logits.argmax(-1).tolist()
    mask = np.ones(V, np.int8)
    mask[out.actions[0]] = 0
    masked = policy.act(obs, None, action_mask=mask, deterministic=True)
    assert masked.actions[0] != out.actions[0]
    expected = out.logits[0].masked_fill(torch.as_tensor(mask) == 0, float("-inf")).argmax()
    assert masked.actions[0] == int(expected)


def test_temperature_scales_logprobs_top_k_only_shapes_sampling():
    obs = batch([[1, 2, 3]] * 8)
    hot = make_policy(temperature=2.0)
    hot.seed(0)
    out = hot.act(obs, None)
    expected = torch.log_softmax(out.logits / 2.0, -1).gather(
        -1, torch.as_tensor(out.actions)[:, None]
    )
    np.testing.assert_allclose(out.logprobs, expected.squeeze(-1).numpy(), atol=1e-5)
    cold = torch.log_softmax(out.logits, -1).gather(-1, torch.as_tensor(out.actions)[:, None])
    assert not np.allclose(out.logprobs, cold.squeeze(-1).numpy(), atol=1e-3)
    _, tf, _ = teacher_forced_last(hot, obs, out.actions)
    np.testing.assert_allclose(tf.numpy(), out.logprobs, atol=1e-4)
    _, tf1, _ = teacher_forced_last(hot, obs, out.actions, temperature=1.0)
    np.testing.assert_allclose(tf1.numpy(), cold.squeeze(-1).numpy(), atol=1e-4)
    # top_k = 1 samples the argmax, but the log-prob stays that of the full distribution
    greedy = make_policy(top_k=1, top_p=0.9)
    out = greedy.act(obs, None)
    assert out.actions.tolist() == out.logits.argmax(-1).tolist()
    full = torch.log_softmax(out.logits, -1).max(-1).values
    np.testing.assert_allclose(out.logprobs, full.numpy(), atol=1e-5)
    assert out.logprobs.max() < -0.1  # not log(1) = 0
    with pytest.raises(InvalidArgument, match="temperature must be > 0, got 0"):
        make_policy(temperature=0)


def test_seeded_sampling_is_reproducible():
    obs = batch([[1, 2, 3]] * 64)
    a, b = make_policy(), make_policy()
    a.seed(3)
    b.seed(3)
    assert a.act(obs, None).actions.tolist() == b.act(obs, None).actions.tolist()
    # acting without stats (what predict does) draws the same actions and skips the rest
    out = b.act(obs, None, stats=False)
    assert out.actions.tolist() == a.act(obs, None).actions.tolist()
    assert out.logprobs is None and out.values is None


def test_action_mask_is_reread_unless_read_only():
    policy = make_policy()
    obs = batch([[1, 2, 3]] * 200)
    mask = np.zeros(V, np.int8)
    mask[5] = 1
    assert set(policy.act(obs, None, action_mask=mask, deterministic=True).actions) == {5}
    mask[5], mask[7] = 0, 1  # a writable mask edited in place is read again
    assert set(policy.act(obs, None, action_mask=mask).actions) == {7}
    frozen = np.zeros(V, np.int8)
    frozen[[2, 3]] = 1
    frozen.flags.writeable = False  # the env's masks: converted and checked once, then reused
    assert set(policy.act(obs, None, action_mask=frozen).actions) <= {2, 3}
    assert set(policy.act(obs, None, action_mask=frozen).actions) <= {2, 3}
    other = np.zeros(V, np.int8)
    other[9] = 1
    other.flags.writeable = False
    assert set(policy.act(obs, None, action_mask=other).actions) == {9}  # a new array: converted anew
    with pytest.raises(InvalidArgument, match="no valid token"):
        policy.act(obs, None, action_mask=np.zeros(V, np.int8))


def test_nlpo_mask_model_restricts_actions_in_act_and_teacher_forcing():
    policy = make_policy(nlpo_top_p=0.5, nlpo_update_every=2)
    policy.seed(0)
    with torch.no_grad():  # the learner moved away from the frozen mask model
        for p in policy.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    obs = batch([[1, 2, 3]] * 300)
    out = policy.act(obs, None)
    first = torch.as_tensor(obs["attention_mask"][:1])
    with torch.no_grad():
        mask_logits = policy.mask_model(
            torch.as_tensor(obs["input_ids"][:1]),
            attention_mask=first,
            position_ids=positions_from_mask(first),
        ).logits[0, -1]
    probs = torch.softmax(mask_logits, -1)
    order = probs.argsort(descending=True)
    cum = probs[order].cumsum(0)
    nucleus = set(order[: int((cum < 0.5).sum()) + 1].tolist())  # smallest set with mass >= 0.5
    assert set(out.actions.tolist()) <= nucleus
    assert len(nucleus) < V
    # log-probs are taken under the policy renormalised over the nucleus
    allowed = sorted(nucleus)
    expected = dict(zip(allowed, torch.log_softmax(out.logits[0, allowed], -1).tolist()))
    np.testing.assert_allclose(out.logprobs, [expected[a] for a in out.actions], atol=1e-5)
    # the teacher-forced recomputation rebuilds the mask from the mask model
    _, tf, _ = teacher_forced_last(policy, obs, out.actions)
    np.testing.assert_allclose(tf.numpy(), out.logprobs, atol=1e-4)
    # refreshing: every nlpo_update_every-th after_update copies the policy weights
    assert policy.after_update() is False
    assert not torch.equal(policy.mask_model.lm_head.weight, policy.model.lm_head.weight)
    assert policy.after_update() is True
    assert torch.equal(policy.mask_model.lm_head.weight, policy.model.lm_head.weight)
    assert not policy.mask_model.lm_head.weight.requires_grad
    with pytest.raises(InvalidArgument, match="needs NLPO masking"):
        make_policy().refresh_mask_model()


def test_nlpo_kv_cached_steps_match_teacher_forcing():
    policy = make_policy(nlpo_top_p=0.8, cache_slack=3)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(4)))
    policy.seed(2)
    simulate(policy, steps=10, n_slots=3, seed=2)


def test_save_load_round_trip(tmp_path):
    policy = make_policy(temperature=0.8, top_k=5)
    policy.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "value_head.safetensors").is_file()
    loaded = LMPolicy.from_pretrained(tmp_path / "ckpt")
    assert (loaded.temperature, loaded.top_k, loaded.top_p) == (0.8, 5, None)
    obs = batch([[1, 2, 3], [4]])
    ids, mask = torch.as_tensor(obs["input_ids"]), torch.as_tensor(obs["attention_mask"])
    with torch.no_grad():
        logits, values = policy(ids, mask)
        logits2, values2 = loaded(ids, mask)
    assert torch.equal(logits, logits2) and torch.equal(values, values2)
    assert torch.count_nonzero(values2) > 0
    assert LMPolicy.from_pretrained(tmp_path / "ckpt", temperature=1.5).temperature == 1.5
    with pytest.raises(ModelLoadError, match="is not an LMPolicy checkpoint"):
        LMPolicy.from_pretrained(tmp_path / "nothing")


def test_read_only_env_arrays_are_accepted_without_warnings():
    obs = batch([[1, 2], [3]])
    mask = np.ones((2, V), np.int8)
    for a in (*obs.values(), mask):
        a.flags.writeable = False
    policy = make_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = policy.act(obs, np.ones(2, bool), action_mask=mask)
    assert out.actions.shape == (2,) and out.actions.dtype == np.int64
    assert out.logprobs.shape == (2,) and out.values.shape == (2,)



def rollout_loop(envs, policy: LMPolicy, steps: int, flags: str | None):
    """Drive ``policy.act`` in a vector-env loop; ``flags`` None is the plain Gymnasium loop
    (no new_episode), else the autoreset mode whose new_episode flags are passed."""
    obs, info = envs.reset(seed=0)
    new = np.ones(envs.num_envs, bool)
    done = np.zeros(envs.num_envs, bool)
    actions, logprobs, eos = [], [], 0
    for _ in range(steps):
        out = policy.act(obs, None if flags is None else new, action_mask=info.get("action_mask"))
        actions.append(out.actions)
        logprobs.append(out.logprobs)
        # NextStep: the step after an episode's end returns its reset observation
        new = done if flags == "NextStep" else None
        obs, _, terminated, truncated, info = envs.step(out.actions)
        done = terminated | truncated
        new = done if new is None else new
        eos += int(terminated.sum())
    return np.stack(actions), np.stack(logprobs), eos


@pytest.mark.parametrize("mode", ["SameStep", "NextStep"])
def test_plain_loop_without_flags_advances_the_cache_as_the_flagged_loop(mode):
    import gymnasium as gym

    import lm_gym  # noqa: F401  (registers the ids)

    def envs():
        return gym.make_vec("lm_gym/Copy-v0", num_envs=4, vectorization_mode="vector_entry_point",
                            autoreset_mode=mode, max_new_tokens=6)

    runs = {}
    for flags in (mode, None):
        policy = LMPolicy.for_vocab(7, n_layer=2, n_embd=32, n_head=4, n_positions=32, seed=0)
        policy.seed(5)
        counter = ForwardCounter(policy.model)
        runs[flags] = (*rollout_loop(envs(), policy, 40, flags), counter.shapes)
    (a_flag, lp_flag, eos, shapes_flag), (a_plain, lp_plain, _, shapes_plain) = runs[mode], runs[None]
    assert eos >= 3  # EOS restarts happened mid-batch
    np.testing.assert_array_equal(a_plain, a_flag)  # token for token
    np.testing.assert_array_equal(lp_plain, lp_flag)
    assert shapes_plain == shapes_flag  # the same prefills and incremental steps
    assert sum(s[1] == 1 for s in shapes_plain) >= 30  # mostly one-token steps, not re-prefills


def test_plain_loop_prefills_repeated_or_foreign_observations_without_error():
    policy = make_policy()
    counter = ForwardCounter(policy.model)
    obs = batch([[1, 2, 3], [4, 5]])
    out = policy.act(obs, None)
    policy.act(obs, None)  # the same windows again: nothing to extend, prefilled
    out = policy.act(obs, None)
    ctx = [[1, 2, 3, int(out.actions[0])], [4, 5, (int(out.actions[1]) + 1) % V]]
    counter.shapes.clear()
    mixed = policy.act(batch(ctx), None)  # slot 0 extends by its action, slot 1 took another token
    assert sorted(counter.shapes) == [(1, 3), (2, 1)]  # a step of both rows, slot 1's prefill
    logits, _, _ = teacher_forced_last(policy, batch(ctx), mixed.actions)
    torch.testing.assert_close(mixed.logits, logits, atol=1e-4, rtol=0)


def test_sampler_state_round_trip():
    obs = batch([[1, 2, 3]] * 64)
    a, b = make_policy(), make_policy()
    assert a.sampler_state() is None
    a.seed(7)
    a.act(obs, None)
    state = a.sampler_state()
    first = a.act(obs, None).actions
    b.set_sampler_state(state)  # b was unseeded: the generator is created
    assert b.act(obs, None).actions.tolist() == first.tolist()
    a.set_sampler_state(None)
    assert a.sampler_state() is None


def staggered(policy: LMPolicy, vocab: int, width: int, steps: int, n_slots: int = 5, group: int = 1):
    """Plain-loop rollouts (new_episode None) of random prompts whose episodes end at random
    steps, in a left-padded window of ``width``: mixed prefill/advance batches; each prompt is
    shown to ``group`` consecutive slots (as samples_per_prompt does). Returns the
    (steps, n_slots) actions and log-probs and the cache lengths."""
    rng = np.random.default_rng(0)

    def prompts():
        drawn = [list(rng.integers(1, vocab, rng.integers(1, width // 2))) for _ in range(-(-n_slots // group))]
        return [drawn[i // group] for i in range(n_slots)]

    ctx, acts, lps, lengths = prompts(), [], [], []
    for _ in range(steps):
        out = policy.act(batch(ctx, width), None)
        acts.append(out.actions)
        lps.append(out.logprobs)
        lengths.append(policy._states["policy"].length)
        restart = prompts()
        for i in range(n_slots):
            ended = len(ctx[i]) + 1 >= width or rng.random() < 0.2
            ctx[i] = restart[i] if ended else ctx[i] + [int(out.actions[i])]
    return np.stack(acts), np.stack(lps), lengths


def builtin_policy(**kwargs) -> LMPolicy:
    from lm_gym.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer("builtin")
    return LMPolicy(model, **kwargs)


@pytest.mark.parametrize("which, group", [("tiny", 1), ("builtin", 1), ("builtin", 4)])
def test_fast_path_matches_the_generic_path_token_for_token(which, group):
    """group 4: slots showing the same window are prefilled once on the fast path."""
    runs = []
    for fast in (True, False):
        policy = make_policy(cache_slack=3) if which == "tiny" else builtin_policy(cache_slack=5)
        policy._fast_path = fast
        policy.seed(11)
        vocab = policy.vocab_size if which == "builtin" else V
        runs.append(staggered(policy, vocab, 16, steps=30, n_slots=8 if group > 1 else 5, group=group))
    (a_fast, lp_fast, len_fast), (a_slow, lp_slow, len_slow) = runs
    np.testing.assert_array_equal(a_fast, a_slow)
    np.testing.assert_allclose(lp_fast, lp_slow, atol=1e-5, rtol=0)
    assert len_fast == len_slow  # the same schedule, compactions included
    assert any(b < a for a, b in zip(len_fast, len_fast[1:]))


@pytest.mark.parametrize("prefill_tokens", [None, 3])  # 3: one chunk per group, widths 3, 2, 1
def test_slots_in_groups_keep_one_copy_of_their_prompt_and_step_as_teacher_forcing(monkeypatch, prefill_tokens):
    """Every slot prefilled at once in groups of k equal windows (samples_per_prompt): the
    groups' prompt keys/values are kept once and each step's logits are the teacher-forced
    ones; a later prefill of some slots copies the prompts back to every slot first."""
    import agents.lm_policy as lm_policy

    if prefill_tokens is not None:
        monkeypatch.setattr(lm_policy, "PREFILL_TOKENS", prefill_tokens)
    policy = make_policy()
    prompts = [[1, 2, 3], [1, 2, 3], [4, 5], [4, 5], [6], [6]]  # 3 groups of 2
    ctx = [list(c) for c in prompts]
    out = policy.act(batch(ctx), None)
    state = policy._states["policy"]
    assert state.kp is not None and tuple(state.kp.shape[:2]) == (2, 3)  # (layers, groups, ...)
    for step in range(4):
        ctx = [c + [int(a)] for c, a in zip(ctx, out.actions)]
        restart = step == 2
        if restart:  # slot 3 starts an episode: a partial prefill
            ctx[3] = [7, 8]
        out = policy.act(batch(ctx), None)
        assert (state.kp is not None) == (not restart and step < 2)
        logits, logprobs, values = teacher_forced_last(policy, batch(ctx), out.actions)
        torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
        np.testing.assert_allclose(out.logprobs, logprobs.numpy(), atol=1e-5)
    # no groups (k = 1): nothing kept apart
    policy.reset_cache()
    policy.act(batch([[1, 2], [3], [1, 2]]), None)
    assert policy._states["policy"].kp is None


def test_a_prefill_computes_each_chunk_of_windows_at_its_own_width_longest_first(monkeypatch):
    """Windows are prefilled longest first in chunks of about PREFILL_TOKENS tokens, each as
    wide as its longest window: the short windows' left padding is never computed."""
    import agents.lm_policy as lm_policy

    monkeypatch.setattr(lm_policy, "PREFILL_TOKENS", 6)
    chunks = lm_policy._prefill_chunks(torch.tensor([2, 6, 1, 1, 0, 3]))
    assert [(c.tolist(), w) for c, w in chunks] == [([1], 6), ([5, 0], 3), ([2, 3, 4], 1)]
    with monkeypatch.context() as m:  # a chunk of >= PREFILL_MIN_TOKENS ends below 3/4 of its width
        m.setattr(lm_policy, "PREFILL_TOKENS", 512)
        m.setattr(lm_policy, "PREFILL_MIN_TOKENS", 4)
        chunks = lm_policy._prefill_chunks(torch.tensor([4, 4, 3, 2, 2, 1]))
        assert [(c.tolist(), w) for c, w in chunks] == [([0, 1, 2], 4), ([3, 4], 2), ([5], 1)]
    policy = make_policy()
    policy._fast_path = True
    counter = ForwardCounter(policy.model)
    ctx = [[1, 2], [1, 2, 3, 4, 5, 6], [3], [4], [2, 3, 4]]
    out = policy.act(batch(ctx), None)
    assert counter.shapes == [(1, 6), (2, 3), (2, 1)]  # 13 token columns, not 5 x 6 = 30
    logits, _, _ = teacher_forced_last(policy, batch(ctx), out.actions)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)


def test_completion_logprobs_stay_finite_on_padding_under_per_row_masks():
    """Each row's padding scores a token valid in that row, so masked sums get no -inf."""
    policy = LMPolicy.for_vocab(6, n_layer=1, n_embd=16, n_head=2, n_positions=16, seed=0)
    ids = torch.tensor([[1, 2, 4, 5], [1, 2, 1, 0]])  # row 1's last completion column is padding
    attn = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    mask = np.zeros((2, 6), dtype=bool)
    mask[0, [4, 5]] = True  # disjoint valid sets: row 0's first valid token is invalid in row 1
    mask[1, [1, 2]] = True
    ev = policy.completion_logprobs(ids, attn, 2, action_mask=mask)
    assert ev.logprobs.shape == (2, 2) and bool(torch.isfinite(ev.logprobs).all())
    assert ev.entropy.shape == (2, 2) and ev.values.shape == (2, 2)


@pytest.mark.parametrize("mask_kind", [None, "vocab", "per_row"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_blocked_logprobs_match_the_composed_ops_in_values_and_gradients(monkeypatch, mask_kind, temperature):
    import agents.lm_policy as lm_policy

    monkeypatch.setattr(lm_policy, "BLOCK_ROWS", 7)  # several blocks and a short last one
    torch.manual_seed(0)
    n, v = 40, 11
    logits = torch.randn(n, v, requires_grad=True)
    valid = {None: None, "vocab": torch.rand(v) > 0.3, "per_row": torch.rand(n, v) > 0.4}[mask_kind]
    targets = torch.randint(0, v, (n,))
    if valid is not None:
        valid[..., 0] = True
        rows = valid.expand(n, v)
        targets = torch.where(rows.gather(1, targets[:, None]).squeeze(1), targets, 0)
    weights = torch.randn(n)

    got, got_entropy = lm_policy._BlockedLogprobs.apply(logits, targets, valid, temperature)
    (got * weights).sum().backward()
    got_grad, logits.grad = logits.grad, None

    z = logits / temperature if valid is None else torch.where(valid, logits / temperature, float("-inf"))
    logp = torch.log_softmax(z, -1)
    want = logp.gather(1, targets[:, None]).squeeze(1)
    want_entropy = -(logp.exp() * (logp if valid is None else logp.masked_fill(~valid, 0))).sum(-1)
    (want * weights).sum().backward()

    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    torch.testing.assert_close(got_entropy, want_entropy.detach(), atol=5e-6, rtol=0)
    torch.testing.assert_close(got_grad, logits.grad, atol=1e-6, rtol=0)
    assert not got_entropy.requires_grad
    if valid is not None:
        assert torch.all(got_grad[~valid.expand(n, v)] == 0)  # masked tokens: exactly no gradient


def test_completion_logprobs_without_entropy_gradient_give_the_same_evaluation():
    policy = make_policy()
    mask = np.ones(V, np.int8)
    mask[[1, 7]] = 0
    obs = batch([[3, 1, 4], [6, 2], [5]])
    ids = torch.as_tensor(obs["input_ids"])
    attn = torch.as_tensor(obs["attention_mask"])
    full = torch.cat([ids, torch.tensor([[2, 5], [9, 2], [4, 4]])], 1)
    full_mask = torch.cat([attn, torch.ones(3, 2, dtype=attn.dtype)], 1)
    plain = policy.completion_logprobs(full, full_mask, 2, action_mask=mask)
    blocked = policy.completion_logprobs(full, full_mask, 2, action_mask=mask, entropy_grad=False)
    torch.testing.assert_close(blocked.logprobs, plain.logprobs, atol=2e-6, rtol=0)
    torch.testing.assert_close(blocked.values, plain.values)
    torch.testing.assert_close(blocked.entropy, plain.entropy.detach(), atol=5e-6, rtol=0)
    assert plain.entropy.requires_grad and not blocked.entropy.requires_grad
    grads = []
    for ev in (plain, blocked):
        policy.zero_grad()
        ev.logprobs.sum().backward()
        grads.append([p.grad.clone() for p in policy.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
