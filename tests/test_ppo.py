"""PPO (agents.ppo): learnability on toy tasks, the advantage recipe, one forward per
minibatch, early stopping on KL, the adaptive KL controller, config validation."""

from __future__ import annotations

import pytest
import torch

import agents
from agents.ppo import PPO, PPOConfig
from agents.rollout import teacher_forced
from lm_gym.error import InvalidArgument
from tests.helpers import random_level

COPY_SMALL = {"alphabet_size": 2, "min_length": 2, "max_length": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small(**kw):
    config = dict(env_kwargs=COPY_SMALL, n_envs=8, batch_size=8, seed=0)
    config.update(kw)
    return PPO("lm_gym/Copy-v0", **config)


def test_learns_copy():
    """Copy with 2 letters and length 2: random ~0.25; 6k steps (~7 s) reach > 0.6."""
    random = random_level("lm_gym/Copy-v0", COPY_SMALL)
    agent = PPO("lm_gym/Copy-v0", env_kwargs=COPY_SMALL, n_envs=16, batch_size=32, seed=0)
    agent.learn(6_000)
    after = agents.evaluate(agent, n_episodes=200, seed=123)["mean_reward"]
    assert after > 0.6 and after > random + 0.3, (random, after)


def test_learns_keyword_toy():
    """KeywordToy (defaults): random ~0.38; 10k steps (~5 s) gain > 0.04."""
    random = random_level("lm_gym/KeywordToy-v0", {})
    agent = PPO("lm_gym/KeywordToy-v0", n_envs=16, batch_size=32, seed=0)
    agent.learn(10_000)
    after = agents.evaluate(agent, n_episodes=200, seed=123)["mean_reward"]
    assert after > random + 0.04, (random, after)


def test_advantages_put_the_score_at_the_last_token_and_the_kl_on_every_token():
    agent = small(gamma=1.0, gae_lambda=1.0, normalize_advantage=False, kl_coef=0.5)
    batch = agent.rollout()
    batch.values[:] = 0.0
    batch.ref_logprobs = batch.logprobs - 0.2 * batch.completion_mask  # KL 0.2 per token
    adv, ret, kl = agent.advantages(batch)
    mask = batch.completion_mask
    # gamma = lambda = 1, V = 0: the advantage of token t is the reward-to-go:
    # score - 0.5 * 0.2 * (tokens from t to the end).
    lengths = batch.lengths.long().tolist()
    for i, n in enumerate(lengths):
        togo = torch.arange(n, 0, -1, dtype=torch.float32)
        torch.testing.assert_close(adv[i, :n], batch.scores[i] - 0.1 * togo, atol=1e-5, rtol=0)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all()
    torch.testing.assert_close(kl, 0.2 * mask, atol=1e-6, rtol=0)
    # Whitening: zero mean, unit variance over the completion tokens.
    agent.config.normalize_advantage = True
    adv, _, _ = agent.advantages(batch)
    assert float(adv[mask > 0].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(adv[mask > 0].std()) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("n_epochs, minibatch_size, forwards", [(1, 16, 1), (2, 8, 4), (3, 4, 12)])
def test_update_is_one_teacher_forced_forward_per_minibatch(n_epochs, minibatch_size, forwards, passes):
    agent = PPO("lm_gym/Copy-v0", env_kwargs=COPY_SMALL, n_envs=16, batch_size=16, seed=0,
                n_epochs=n_epochs, minibatch_size=minibatch_size, kl_coef=0.1)
    batch = agent.rollout()
    assert passes[id(agent.reference.model)] == 1
    passes.clear()
    metrics = agent.update(batch)
    assert passes[id(agent.policy.model)] == forwards
    assert metrics["train/n_minibatch_steps"] == forwards


def test_first_minibatch_is_on_policy():
    agent = small(n_envs=16, batch_size=16, minibatch_size=16, n_epochs=1)
    metrics = agent.update(agent.rollout())
    # One minibatch, and it sees the rollout policy itself: ratio 1, nothing clipped, KL 0.
    assert metrics["train/n_minibatch_steps"] == 1
    assert metrics["train/clip_fraction"] == 0.0
    assert metrics["train/approx_kl"] == pytest.approx(0.0, abs=1e-6)


def test_target_kl_stops_the_epochs_early():
    agent = small(n_envs=16, batch_size=16, minibatch_size=16, n_epochs=4, target_kl=1e-12)
    metrics = agent.update(agent.rollout())
    # The first minibatch (KL 0) cannot stop; the second sees a changed policy and stops.
    assert metrics["train/n_minibatch_steps"] == 2 and metrics["train/stopped_early"] == 1.0
    agent = small(n_envs=16, batch_size=16, minibatch_size=16, n_epochs=4)
    assert agent.update(agent.rollout())["train/n_minibatch_steps"] == 4


def test_adaptive_kl_controller_moves_the_coefficient():
    agent = small(kl_coef=0.2, adaptive_kl=True, kl_target=1e-6, kl_horizon=100, learning_rate=1e-2)
    seen = []
    agent.learn(300, callback=lambda a, m: seen.append(m["train/kl_coef"]))
    assert seen[0] == pytest.approx(0.2)
    assert agent.kl_coef > 0.2  # KL above the (tiny) target: beta grows, by at most 20% x n/horizon
    assert seen[1] <= 0.2 * (1 + 0.2 * 8 / 100) + 1e-9


def test_value_head_fits_the_returns_of_a_batch():
    agent = small(n_envs=16, batch_size=16, n_epochs=4, vf_coef=1.0, clip_range_vf=None, learning_rate=3e-3)
    batch = agent.rollout()
    _, returns, _ = agent.advantages(batch)
    mask = batch.completion_mask > 0

    def value_error():
        with torch.no_grad():
            ev = teacher_forced(agent.policy, batch, agent.action_mask)
        return float(((ev.values - returns)[mask] ** 2).mean())

    before = value_error()  # the value head starts at 0
    assert before == pytest.approx(float((returns[mask] ** 2).mean()), rel=1e-5)
    for _ in range(5):
        agent.update(batch)
    assert value_error() < 0.5 * before


def test_config_rejects_bad_values():
    with pytest.raises(InvalidArgument, match=r"clip_range=0 is invalid: use a number in \(0, 1\)"):
        PPOConfig(clip_range=0)
    with pytest.raises(InvalidArgument, match=r"gae_lambda=1.5 is invalid: use a number in \[0, 1\]"):
        PPOConfig(gae_lambda=1.5)
    with pytest.raises(InvalidArgument, match=r"n_epochs=0 is invalid: use an integer >= 1"):
        PPOConfig(n_epochs=0)
    with pytest.raises(InvalidArgument, match=r"vf_coef=-1 is invalid"):
        PPOConfig(vf_coef=-1)
    with pytest.raises(InvalidArgument, match=r"kl_coef=-0.1 is invalid"):
        PPOConfig(kl_coef=-0.1)
    with pytest.raises(InvalidArgument, match="adaptive_kl=True needs kl_coef > 0"):
        small(adaptive_kl=True)
    with pytest.raises(InvalidArgument, match=r"dual_clip=0.5 is invalid: use a number > 1"):
        PPOConfig(dual_clip=0.5)
    with pytest.raises(InvalidArgument, match=r"loss_agg_mode='mean' is invalid: use one of"):
        PPOConfig(loss_agg_mode="mean")
    assert agents.make("ppo", "lm_gym/Copy-v0", env_kwargs=COPY_SMALL, n_epochs=2).config.n_epochs == 2


def test_nlpo_masking_trains_and_refreshes_the_mask_model():
    agent = small(nlpo_top_p=0.9, nlpo_update_every=2, learning_rate=1e-2)
    agent.learn(10_000, callback=lambda a, m: a.n_updates < 2)  # exactly two updates
    assert agent.n_updates == 2
    for p, q in zip(agent.policy.model.parameters(), agent.policy.mask_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)  # refreshed after the 2nd update
    agent.learn(10, callback=lambda a, m: False)  # a third update moves the policy only
    assert any(not torch.equal(p, q) for p, q in zip(agent.policy.model.parameters(),
                                                      agent.policy.mask_model.parameters()))


def test_minibatches_keep_the_samples_of_a_prompt_together():
    agent = small(n_envs=16, batch_size=16)
    chunks = [rows.tolist() for rows in agent.minibatches(16, 8, group_size=4)]
    assert sorted(sum(chunks, [])) == list(range(16))  # every row once
    for rows in chunks:  # whole groups, each run once in the chunk's teacher-forced pass
        assert len(rows) == 8 and sorted(rows) == sorted(g * 4 + j for g in {r // 4 for r in rows} for j in range(4))
    assert len({tuple(c) for c in (next(agent.minibatches(16, 8, group_size=4)).tolist() for _ in range(8))}) > 1  # shuffled
    # a chunk size that splits groups shuffles rows, as without groups
    rows = [r.tolist() for r in agent.minibatches(16, 6, group_size=4)]
    assert [len(r) for r in rows] == [6, 6, 4] and sorted(sum(rows, [])) == list(range(16))
