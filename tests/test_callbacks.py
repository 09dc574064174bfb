"""Proxy vs gold: agents.EvalCallback (periodic evaluation with a held-out gold reward and the
KL to the reference), LMAgent.sequence_kl, the token ids evaluate records, reward specs, and
their use by the bench cell (curve.csv's eval/* columns) and `lm-gym train --gold-reward`."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import agents
from agents.base import run_episodes
from agents.callbacks import EvalCallback
from agents.reinforce import Reinforce
from lm_gym import error
from lm_gym.bench.config import Cell
from lm_gym.bench.runner import run_cell
from lm_gym.cli import main
from lm_gym.envs import env_info
from lm_gym.rewards import RewardModel, Sentiment, reward_from_spec

COPY = "lm_gym/Copy-v0"
SMALL = {"alphabet_size": 2, "min_length": 2, "max_length": 2}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_agent(**kw):
    return Reinforce(COPY, **{"env_kwargs": SMALL, "n_envs": 8, "batch_size": 8, "seed": 0, **kw})


class LengthGold:
    """A gold reward whose value is known: a tenth of each completion's length; records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return [len(c) / 10 for c in completions]


# -- the token ids of evaluation episodes ---------------------------------------------------


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_evaluation_episodes_record_their_prompt_and_completion_ids(mode):
    env = gym.make_vec(COPY, num_envs=3, vectorization_mode="vector_entry_point", autoreset_mode=mode, **SMALL)
    tok = env_info(env).tokenizer
    episodes = run_episodes(agents.RandomAgent(env, seed=0), env, 7, seed=5)
    assert len(episodes) == 7
    for ep in episodes:
        assert tok.decode(ep.prompt_ids) == ep.prompt and tok.decode(ep.completion_ids) == ep.text
        assert len(ep.completion_ids) == ep.length


# -- sequence_kl ------------------------------------------------------------------------------


def token_ids(batch):
    """The prompts' and completions' token ids of a rollout batch, padding removed."""
    p = batch.prompt_width
    prompts = [ids[m > 0].tolist() for ids, m in zip(batch.input_ids[:, :p], batch.attention_mask[:, :p])]
    completions = [ids[m > 0].tolist() for ids, m in zip(batch.input_ids[:, p:], batch.completion_mask)]
    return prompts, completions


@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_sequence_kl_is_zero_while_the_policy_is_the_reference(kl_coef):
    agent = small_agent(kl_coef=kl_coef)
    prompts, completions = token_ids(agent.rollout())
    for estimator in ("k1", "k3"):
        kl = agent.sequence_kl(prompts, completions, estimator=estimator)
        assert kl.shape == (8,) and np.array_equal(kl, np.zeros(8)), estimator


def test_sequence_kl_equals_the_rollouts_own_log_ratio_after_training():
    agent = small_agent(kl_coef=0.1, learning_rate=0.05)
    agent.learn(64)
    batch = agent.rollout()  # holds log pi and log pi_ref of its tokens from sampling time
    expected = ((batch.logprobs - batch.ref_logprobs) * batch.completion_mask).sum(1).double().numpy()
    kl = agent.sequence_kl(*token_ids(batch), chunk=3)
    assert np.abs(expected).max() > 1e-3  # the policy has moved
    np.testing.assert_allclose(kl, expected, rtol=1e-4, atol=1e-5)
    log_r = (batch.ref_logprobs - batch.logprobs).double()
    k3 = ((torch.expm1(log_r) - log_r) * batch.completion_mask).sum(1).numpy()
    np.testing.assert_allclose(agent.sequence_kl(*token_ids(batch), estimator="k3"), k3, rtol=1e-4, atol=1e-5)
    assert agent.policy.training  # sequence_kl restored the mode it found


def test_sequence_kl_rejects_bad_input():
    agent = small_agent()
    with pytest.raises(error.UnknownName, match=r"Unknown KL estimator 'k2'.*Valid: 'k1', 'k3'"):
        agent.sequence_kl([[1]], [[2]], estimator="k2")
    with pytest.raises(error.InvalidArgument, match="2 prompts and 1 completions"):
        agent.sequence_kl([[1], [1]], [[2]])


# -- EvalCallback -----------------------------------------------------------------------------


def test_eval_callback_scores_the_gold_reward_on_the_evaluation_completions():
    gold = LengthGold()
    cb = EvalCallback(COPY, env_kwargs=SMALL, n_eval_episodes=8, seed=3, gold_reward=gold)
    metrics = cb.evaluate(small_agent())
    ((prompts, completions),) = gold.calls
    assert len(completions) == 8 and all(p.endswith("=") for p in prompts)
    assert metrics["eval/gold_reward"] == pytest.approx(np.mean([len(c) / 10 for c in completions]))
    assert metrics["eval/kl"] == 0.0 and 0.0 <= metrics["eval/reward"] <= 1.0
    assert cb.evaluations == [{"timesteps": 0, **metrics}]


def test_eval_callback_evaluates_every_eval_freq_steps_into_the_metrics():
    cb = EvalCallback(COPY, env_kwargs=SMALL, eval_freq=20, n_eval_episodes=4, gold_reward=lambda p, c: [0.25] * len(c))
    seen = []

    def after(agent, metrics):  # a callback after EvalCallback (the bench's curve writer) sees eval/*
        assert cb(agent, metrics) is True
        seen.append((agent.num_timesteps, sorted(k for k in metrics if k.startswith("eval/"))))

    small_agent().learn(64, callback=after)
    evaluated = [steps for steps, keys in seen if keys]
    assert evaluated == [e["timesteps"] for e in cb.evaluations] and len(evaluated) >= 2
    assert all(keys == ["eval/gold_reward", "eval/kl", "eval/reward"] for _, keys in seen if keys)
    # the first update at or past each multiple of eval_freq, and no other
    due = [s for i, (s, _) in enumerate(seen) if s // 20 > (seen[i - 1][0] // 20 if i else 0)]
    assert evaluated == due
    assert all(e["eval/gold_reward"] == 0.25 for e in cb.evaluations)


def test_eval_callback_rejects_bad_settings():
    with pytest.raises(error.UnknownName, match=r"Unknown reward 'vadr'\. Did you mean 'vader'\?.*Valid: .*'classifier'"):
        EvalCallback(COPY, gold_reward="vadr")
    with pytest.raises(error.InvalidArgument, match="eval_freq must be a positive integer or None, got 0"):
        EvalCallback(COPY, eval_freq=0)
    with pytest.raises(error.UnknownName, match="KL estimator"):
        EvalCallback(COPY, kl_estimator="exact")


def test_a_gold_reward_of_the_wrong_length_is_refused_by_name():
    cb = EvalCallback(COPY, env_kwargs=SMALL, n_eval_episodes=4, gold_reward=lambda p, c: [1.0])
    with pytest.raises(error.RewardError, match=r"gold reward .* returned .*a reward must be a sequence of 4 real numbers"):
        cb.evaluate(small_agent())


# -- reward specs ------------------------------------------------------------------------------


def test_reward_from_spec_builds_rewards_by_name_with_arguments():
    vader = reward_from_spec("vader")
    assert isinstance(vader, Sentiment) and vader.target == "positive"
    assert reward_from_spec("sentiment:target=negative").target == "negative"
    clf = reward_from_spec("classifier:label=positive, batch_size=16")
    assert isinstance(clf, RewardModel) and (clf.name, clf.label, clf.batch_size) == ("builtin", "positive", 16)
    assert reward_from_spec(len) is len  # a callable is used as it is
    with pytest.raises(error.InvalidArgument, match=r"'target' is not KEY=VALUE"):
        reward_from_spec("sentiment:target")
    with pytest.raises(error.InvalidArgument, match=r"Bad arguments for reward 'sentiment'"):
        reward_from_spec("sentiment:colour=red")
    with pytest.raises(error.InvalidArgument, match="NAME"):
        reward_from_spec("")


def test_an_env_reward_can_be_a_spec_string():
    env = gym.make("lm_gym/KeywordToy-v0", reward="vader")
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample(mask=info.get("action_mask")))
        done = terminated or truncated
    expected = Sentiment()([info["prompt"]], [info["text"]])[0]
    assert reward == pytest.approx(expected) and info["reward_components"] == {"reward": pytest.approx(expected)}


# -- the bench cell and the command line -------------------------------------------------------


def test_a_cell_with_a_gold_reward_writes_eval_columns_into_its_curve(tmp_path):
    cell = Cell(COPY, "reinforce", seed=0, budget=96, eval_episodes=4, eval_every=32, env_kwargs=SMALL,
                gold_reward=lambda p, c: [0.25] * len(c), agent_kwargs={"n_envs": 8, "batch_size": 8})
    result = run_cell(cell, tmp_path, directory=tmp_path / "run")
    assert result.status == "done", result.error
    rows = list(csv.DictReader((tmp_path / "run" / "curve.csv").open()))
    assert list(rows[0])[:6] == ["timesteps", "time_s", "reward", "eval/reward", "eval/gold_reward", "eval/kl"]
    assert {"accuracy", "length", "exact"} <= set(rows[0])  # the update rows' columns, added later
    first, evals = rows[0], [r for r in rows if r["eval/reward"]]
    assert first["timesteps"] == "0" and first["reward"] == "" and float(first["eval/kl"]) == 0.0
    assert [int(r["timesteps"]) // 32 for r in evals] == [0, 1, 2, 3]  # before training, then every 32 steps
    assert all(float(r["eval/gold_reward"]) == 0.25 for r in evals)
    assert all(r["reward"] and not r["eval/reward"] for r in rows if r not in evals)
    final = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert final["eval/gold_reward"] == 0.25 and np.isfinite(final["eval/kl"])


def train_argv(out, gold):
    return ["train", COPY, "--agent", "reinforce", "--timesteps", "48", "--eval-every", "24", "--eval-episodes", "4",
            "--gold-reward", gold, "--n-envs", "8", "--batch-size", "8", "--out", str(out), "--no-progress",
            "-e", "alphabet_size=2", "-e", "min_length=2", "-e", "max_length=2"]


def test_train_command_takes_a_gold_reward_and_names_a_bad_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(out, "vader")) == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "curve.csv").open()))
    evals = [r for r in rows if r["eval/gold_reward"]]
    assert len(evals) >= 2 and all(0.0 <= float(r["eval/gold_reward"]) <= 1.0 for r in evals)
    assert json.loads((out / "config.json").read_text())["cell"]["gold_reward"] == "vader"
    capsys.readouterr()
    assert main(train_argv(tmp_path / "bad", "vadr")) == 2
    err = capsys.readouterr().err
    assert "Unknown reward 'vadr'. Did you mean 'vader'?" in err and "'classifier'" in err
    assert not (tmp_path / "bad").exists()
