"""REINFORCE (agents.reinforce): learnability on toy tasks, baselines, KL, one forward per chunk."""

from __future__ import annotations

import warnings

import pytest
import torch

import agents
from agents.reinforce import Reinforce, ReinforceConfig
from lm_gym.error import InvalidArgument
from tests.helpers import random_level

COPY_SMALL = {"alphabet_size": 2, "min_length": 2, "max_length": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_learns_keyword_toy_with_leave_one_out():
    """KeywordToy (defaults): random ~0.38; 10k steps (~3 s) with RLOO (k=4) gain > 0.04 (seed 0: 0.45)."""
    random = random_level("lm_gym/KeywordToy-v0", {})
    assert 0.35 < random < 0.41
    agent = Reinforce(
        "lm_gym/KeywordToy-v0", n_envs=16, batch_size=32, samples_per_prompt=4,
        baseline="leave_one_out", seed=0,
    )
    agent.learn(10_000)
    after = agents.evaluate(agent, n_episodes=200, seed=123)["mean_reward"]
    assert after > random + 0.04, (random, after)


def test_baselines_by_hand():
    agent = Reinforce("lm_gym/Copy-v0", env_kwargs=COPY_SMALL, n_envs=4, batch_size=4, seed=0,
                      baseline="leave_one_out", samples_per_prompt=2)
    r = torch.tensor([1.0, 0.0, 0.5, 0.5])
    adv = agent.baseline_advantages
    torch.testing.assert_close(adv(r, 2), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    agent.config.baseline = "moving_average"
    agent.baseline.decay = 0.5
    torch.testing.assert_close(adv(r, 2), r)  # b = 0 before the first batch
    assert agent.baseline.value == pytest.approx(0.5)
    torch.testing.assert_close(adv(torch.ones(4), 2), torch.full((4,), 0.5))
    assert agent.baseline.value == pytest.approx(0.75)  # 0.5 * 0.5 + 0.5 * 1.0
    agent.config.baseline = "none"
    torch.testing.assert_close(adv(r, 2), r)


def test_kl_penalty_is_zero_at_the_start_and_enters_the_return():
    agent = Reinforce("lm_gym/Copy-v0", env_kwargs=COPY_SMALL, n_envs=8, batch_size=8, seed=0, kl_coef=0.5)
    assert agent.reference is not None
    batch = agent.rollout()
    # The reference is the initial policy: identical log-probs, so KL = 0 exactly.
    torch.testing.assert_close(batch.ref_logprobs, batch.logprobs, atol=1e-6, rtol=0)
    batch.ref_logprobs = batch.logprobs - 0.1 * batch.completion_mask  # pretend KL 0.1 per token
    agent.config.baseline = "none"
    returns, kl = agent.advantages(batch)
    torch.testing.assert_close(returns, batch.scores - 0.5 * 0.1 * batch.lengths, atol=1e-6, rtol=0)
    metrics = agent.update(batch)
    assert metrics["train/kl"] == pytest.approx(float(0.1 * batch.lengths.mean()), rel=1e-5)


@pytest.mark.parametrize("minibatch_size, forwards", [(None, 1), (4, 4)])
def test_update_is_one_teacher_forced_forward_per_chunk(minibatch_size, forwards, passes):
    agent = Reinforce("lm_gym/Copy-v0", env_kwargs=COPY_SMALL, n_envs=16, batch_size=16, seed=0,
                      minibatch_size=minibatch_size, kl_coef=0.1)
    batch = agent.rollout()
    assert passes[id(agent.reference.model)] == 1  # ONE batched pass scores the whole rollout
    passes.clear()
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.update(batch)
    assert passes[id(agent.policy.model)] == forwards
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))


def test_gradient_accumulation_matches_the_full_batch():
    """The gradient the optimizer steps on, compared before the step: after it, Adam's
    normalisation turns float rounding on a weight whose gradient is ~0 into a visible change."""
    grads = []
    for size in (None, 3):
        agent = Reinforce("lm_gym/Copy-v0", env_kwargs=COPY_SMALL, n_envs=8, batch_size=8, seed=0,
                          minibatch_size=size, baseline="none")
        step = agent.optimizer_step
        seen = []

        def recording_step(step=step, seen=seen, agent=agent):
            seen.append(torch.cat([p.grad.flatten() for p in agent.policy.parameters() if p.grad is not None]))
            return step()

        agent.optimizer_step = recording_step
        agent.update(agent.rollout())
        assert len(seen) == 1  # accumulated over the chunks, one step
        grads.append(seen[0])
    assert grads[0].shape == grads[1].shape and grads[0].abs().max() > 1e-3
    # the chunks may take the other (exact) teacher-forced path, shared or plain prompts
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_entropy_bonus_update_logs_the_entropy_without_a_warning():
    """With ent_coef > 0 the entropy carries a gradient; logging it must not warn (float()
    on such a tensor does) and must give the mean per-token entropy, a positive number."""
    agent = Reinforce("lm_gym/Copy-v0", env_kwargs=COPY_SMALL, n_envs=8, batch_size=8, seed=0, ent_coef=0.01)
    batch = agent.rollout()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = agent.update(batch)
    assert 0.0 < metrics["train/entropy"] < float(torch.log(torch.tensor(float(agent.policy.vocab_size))))


def test_config_rejects_bad_values():
    with pytest.raises(InvalidArgument, match=r"baseline='mean' is invalid: use one of \['none', 'moving_average', 'leave_one_out'\]"):
        ReinforceConfig(baseline="mean")
    with pytest.raises(InvalidArgument, match="needs samples_per_prompt >= 2"):
        ReinforceConfig(baseline="leave_one_out")
    with pytest.raises(InvalidArgument, match=r"baseline_decay=1.5 is invalid: use a number in \[0, 1\]"):
        ReinforceConfig(baseline_decay=1.5)
    with pytest.raises(InvalidArgument, match=r"ent_coef=-0.1 is invalid"):
        ReinforceConfig(ent_coef=-0.1)
    with pytest.raises(InvalidArgument, match=r"learning_rate=0 is invalid"):
        ReinforceConfig(learning_rate=0)
    cfg = ReinforceConfig(baseline="none", learning_rate=0.01)
    agent = Reinforce("lm_gym/Copy-v0", cfg, env_kwargs=COPY_SMALL, n_envs=2, batch_size=2)
    assert agent.config.baseline == "none" and agent.optimizer.param_groups[0]["lr"] == 0.01
    assert agents.make("reinforce", "lm_gym/Copy-v0", env_kwargs=COPY_SMALL).name == "reinforce"
