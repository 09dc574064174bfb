"""What every LM learner shares through LMAgent (agents.lm_agent, agents.rollout,
agents.checkpoint): rollouts, predict, save/load, checkpoints and exact resume for every
registered algorithm, logging; and the zero-shot ModelAgent."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import agents
from agents import checkpoint
from agents.model import ModelAgent
from agents.ppo import PPO
from agents.reinforce import Reinforce
from agents.rollout import _filler, _play, teacher_forced
from lm_gym import error
from tests.helpers import ForwardCounter

COPY = "lm_gym/Copy-v0"
SMALL = {"alphabet_size": 2, "min_length": 2, "max_length": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_agent(cls=Reinforce, **kw):
    if isinstance(cls, str):
        cls = agents.agent_class(cls)
    config = dict(env_kwargs=SMALL, n_envs=8, batch_size=8, seed=0)
    if cls.config_class().samples_per_prompt > 1:  # group methods: 4 prompts x 2 samples
        config["samples_per_prompt"] = 2
    config.update(kw)
    return cls(COPY, **config)


def batch_arrays(batch):
    return {k: v.cpu().numpy() for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}


def params(agent):
    return {k: v.detach().clone() for k, v in agent.policy.state_dict().items()}


def assert_params_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


# -- rollouts ---------------------------------------------------------------------------


def test_collect_matches_teacher_forcing_and_env_rewards():
    agent = small_agent(n_envs=8, batch_size=16)  # two rounds of 8
    batch = agent.rollout()
    b, c = batch.completion_mask.shape
    assert b == 16 and batch.input_ids.shape == (16, batch.prompt_width + c)
    assert batch.input_ids.device == agent.policy.device and batch.logprobs.dtype == torch.float32
    # Every episode ended once: length >= 1, EOS only as the last token.
    lengths = batch.lengths.long()
    assert (lengths >= 1).all() and (lengths <= 3).all()  # max_length 2 + EOS
    comp = batch.input_ids[:, batch.prompt_width:]
    for row, n in zip(comp, lengths):
        assert 1 not in row[: n - 1]
        assert set(row[:n].tolist()) <= {1, 2, 3}  # EOS, 'a', 'b' (the action mask; '=' is 4)
    # The env's score sits at the last token; components came along.
    torch.testing.assert_close(batch.rewards[torch.arange(b), lengths - 1], batch.scores)
    assert set(batch.components) == {"accuracy", "length", "exact"}
    # terminated: EOS ended the episode (the last token is EOS), else the budget did
    last = comp[torch.arange(b), lengths - 1]
    assert torch.equal(batch.terminated, last == 1)
    # Log-probs and values recorded with the KV cache equal one teacher-forced forward.
    with torch.no_grad():
        ev = teacher_forced(agent.policy, batch, agent.action_mask)
    m = batch.completion_mask > 0
    torch.testing.assert_close(ev.logprobs[m], batch.logprobs[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(ev.values[m], batch.values[m], atol=1e-6, rtol=0)
    assert batch.env_steps >= int(lengths.sum())


def test_samples_per_prompt_groups_share_their_prompt():
    agent = small_agent(n_envs=8, batch_size=8, samples_per_prompt=4, env_kwargs={"alphabet_size": 4})
    batch = agent.rollout()
    assert batch.group_size == 4
    prompts = batch.input_ids[:, : batch.prompt_width]
    assert (prompts[:4] == prompts[0]).all() and (prompts[4:] == prompts[4]).all()
    # Across 20 groups the prompts are not all the same.
    many = [tuple(agent.rollout().input_ids[0, : batch.prompt_width].tolist()) for _ in range(10)]
    assert len(set(many)) > 1


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_collect_works_with_either_autoreset_mode(mode):
    import gymnasium as gym

    envs = gym.make_vec(COPY, num_envs=4, vectorization_mode="vector_entry_point", autoreset_mode=mode, **SMALL)
    agent = Reinforce(envs, batch_size=4, seed=0)
    batch = agent.rollout()
    assert batch.completion_mask.shape[0] == 4 and (batch.lengths >= 1).all()
    with torch.no_grad():
        ev = teacher_forced(agent.policy, batch, agent.action_mask)
    m = batch.completion_mask > 0
    torch.testing.assert_close(ev.logprobs[m], batch.logprobs[m], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
@pytest.mark.parametrize("fast", [True, False])
def test_a_slot_that_finished_steps_on_with_a_filler_and_no_prefill_and_the_kept_episodes_are_the_same(mode, fast):
    import gymnasium as gym

    played, counts, scored = {}, {}, {}
    for use_filler in (False, True):
        envs = gym.make_vec(COPY, num_envs=8, vectorization_mode="vector_entry_point", autoreset_mode=mode,
                            alphabet_size=2, min_length=2, max_length=2, max_new_tokens=8)
        agent = Reinforce(envs, batch_size=8, seed=0)
        agent.policy._fast_path = fast
        agent.policy.seed(3)
        filler = _filler(agent.info.eos_token_id, agent.action_mask, agent.policy.vocab_size) if use_filler else None
        counter = ForwardCounter(agent.policy.model)
        ends = []
        step = envs.step

        def counted_step(actions, step=step, ends=ends):
            out = step(actions)
            ends.append(int((out[2] | out[3]).sum()))
            return out

        envs.step = counted_step
        played[use_filler] = _play(envs, agent.policy, np.repeat([11, 12, 13, 14], 2), agent.action_mask, False, filler)
        counts[use_filler] = [s for s in counter.shapes if s[1] > 1]  # prefills (every forward of > 1 token)
        scored[use_filler] = sum(ends)
    assert filler not in (None, agent.info.eos_token_id) and agent.action_mask[filler]
    plain, filled = played[False], played[True]
    assert (plain.lengths < plain.lengths.max()).sum() >= 2  # episodes ended at different steps
    np.testing.assert_array_equal(filled.lengths, plain.lengths)
    np.testing.assert_array_equal(filled.terminated, plain.terminated)
    keep = np.arange(plain.actions.shape[1])[None] < plain.lengths[:, None]  # (N, S) the kept steps
    np.testing.assert_array_equal(filled.actions[keep], plain.actions[keep])  # token for token
    np.testing.assert_allclose(filled.logprobs[keep], plain.logprobs[keep], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(filled.rewards[keep], plain.rewards[keep])
    # the finished slots: the filler, nothing prefilled after the first step, nothing more scored
    assert (filled.actions[~keep] == filler).all()
    assert len(counts[True]) == 1 and len(counts[False]) > 1
    assert scored[True] == 8 and scored[False] > 8  # without it, autoreset episodes ended and were scored


def test_rollout_buffer_bytes_per_token_do_not_grow_with_the_vocabulary():
    per_cell = {}
    for alphabet in (2, 26):  # V = 5 and V = 29
        agent = small_agent(env_kwargs={"alphabet_size": alphabet, "min_length": 3, "max_length": 3}, kl_coef=0.1)
        batch = agent.rollout()
        assert batch.ref_logprobs is not None
        per_cell[alphabet] = batch.nbytes() / batch.input_ids.numel()
    assert per_cell[2] == pytest.approx(per_cell[26], rel=0.2)
    assert per_cell[26] < 64  # a few ints and floats per token, never x V


# -- predict ----------------------------------------------------------------------------


def test_predict_with_cache_equals_prefill_and_single_obs():
    agent = small_agent(cls=PPO)
    envs = agents.make_vec_env(COPY, 4, **SMALL)
    obs, _ = envs.reset(seed=3)
    start = np.ones(4, dtype=bool)
    for _ in range(6):
        cached, _ = agent.predict(obs, episode_start=start, deterministic=True)
        fresh, _ = PPO.predict(agent, obs, episode_start=None, deterministic=True)
        np.testing.assert_array_equal(cached, fresh)
        single, _ = agent.predict({k: v[2] for k, v in obs.items()}, deterministic=True)
        assert np.ndim(single) == 0 and single == fresh[2]
        # predict(None) above dropped the cache; rebuild it for the next cached call
        agent.predict(obs, episode_start=np.ones(4, dtype=bool), deterministic=True)
        obs, _, term, trunc, _ = envs.step(cached)
        start = term | trunc


def test_model_agent_is_the_untrained_policy_and_evaluates():
    agent = agents.make("model", COPY, seed=0, env_kwargs=SMALL)
    assert isinstance(agent, ModelAgent)
    # A toy task's model is a fresh policy from the seed: the same weights as a learner's start.
    learner = small_agent(policy_seed=0)
    assert_params_equal(params(agent), params(learner))
    out = agents.evaluate(agent, n_episodes=16, seed=0)
    assert 0.0 <= out["mean_reward"] <= 1.0 and out["n_episodes"] == 16
    with pytest.raises(error.InvalidArgument, match="temperature"):
        ModelAgent(COPY, temperature=0.0, env_kwargs=SMALL)


def test_model_agent_save_load_round_trip(tmp_path):
    agent = ModelAgent(COPY, seed=1, temperature=0.7, env_kwargs=SMALL, n_envs=2)
    agent.save(tmp_path / "m")
    back = ModelAgent.load(tmp_path / "m")
    assert back.config.temperature == 0.7 and back.n_envs == 2
    assert_params_equal(params(agent), params(back))


# -- save, load, checkpoints, resume ---------------------------------------------------


@pytest.mark.parametrize("name", agents.LM_LEARNERS)
def test_save_load_predict_gives_the_same_actions(name, tmp_path):
    cls = agents.agent_class(name)
    agent = small_agent(cls=cls)
    agent.learn(100)
    agent.save(tmp_path / "agent")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    back = cls.load(tmp_path / "agent")
    assert back.num_timesteps == agent.num_timesteps and back.n_updates == agent.n_updates
    assert_params_equal(params(agent), params(back))
    envs = agents.make_vec_env(COPY, 8, **SMALL)
    obs, _ = envs.reset(seed=0)
    for det in (True, False):
        agent.policy.seed(7)
        back.policy.seed(7)
        a1, _ = agent.predict(obs, deterministic=det)
        a2, _ = back.predict(obs, deterministic=det)
        np.testing.assert_array_equal(a1, a2)
    # Saving again over the same path replaces it completely.
    agent.learn(50)
    agent.save(tmp_path / "agent")
    assert cls.load(tmp_path / "agent").num_timesteps == agent.num_timesteps


class Killed(Exception):
    pass


@pytest.mark.parametrize("name", agents.LM_LEARNERS)
def test_killed_run_resumes_from_its_last_checkpoint(name, tmp_path):
    cls = agents.agent_class(name)
    total = 400
    reference = small_agent(cls=cls)
    reference.learn(total)

    def kill_after_3(agent, metrics):
        if agent.n_updates == 3:
            raise Killed

    run = tmp_path / "run"
    first = small_agent(cls=cls, run_dir=str(run), checkpoint_every=2)
    with pytest.raises(Killed):
        first.learn(total, callback=kill_after_3)
    (ckpt,) = checkpoint.checkpoints_of(run)  # update 2 (update 3 was never checkpointed)
    assert ckpt.name == "update_0000002"
    saved = checkpoint.read_state(ckpt)

    second = small_agent(cls=cls, run_dir=str(run), checkpoint_every=2)
    seen = []

    def record(agent, metrics):
        seen.append((agent.n_updates, agent.num_timesteps))

    second.learn(total, callback=record, resume=True)
    # It restarted at the checkpoint (update 3 came next) and ran to the total ...
    assert seen[0][0] == 3 and seen[0][1] > saved["num_timesteps"]
    assert second.num_timesteps >= total and second.num_timesteps == reference.num_timesteps
    # ... losing nothing: the same weights as a run that was never interrupted.
    assert_params_equal(params(second), params(reference))
    rows = list(csv.DictReader((run / "progress.csv").open()))
    assert [int(float(r["time/iterations"])) for r in rows] == list(range(1, second.n_updates + 1))


def test_resume_needs_a_run_dir():
    with pytest.raises(error.InvalidArgument, match="run_dir"):
        small_agent().learn(10, resume=True)


def test_checkpoint_parameters_equal_the_agent_at_that_update(tmp_path):
    snapshots = {}

    def snap(agent, metrics):
        snapshots[agent.n_updates] = (params(agent), agent.num_timesteps)

    agent = small_agent(run_dir=str(tmp_path), checkpoint_every=1, keep_checkpoints=2)
    agent.learn(150, callback=snap)
    ckpts = checkpoint.checkpoints_of(tmp_path)
    assert len(ckpts) == 2  # older ones pruned
    restored = small_agent()
    restored.load_state(ckpts[-2])
    n = restored.n_updates
    assert_params_equal(params(restored), snapshots[n][0])
    assert restored.num_timesteps == snapshots[n][1]


# -- metrics, callbacks, progress bar ---------------------------------------------------


def test_metrics_csv_callback_stop_and_progress_bar(tmp_path, capsys):
    calls = []

    def stop_at_2(agent, metrics):
        calls.append(metrics)
        return agent.n_updates < 2

    agent = small_agent(cls=PPO, run_dir=str(tmp_path), kl_coef=0.1)
    agent.learn(10_000, callback=stop_at_2, progress_bar=True)
    assert agent.n_updates == 2 and len(calls) == 2
    for key in ("rollout/ep_rew_mean", "train/approx_kl", "train/clip_fraction", "train/entropy",
                "train/explained_variance", "train/kl_coef", "reward/accuracy", "time/fps"):
        assert key in calls[0], key
    assert calls[0]["train/kl_coef"] == pytest.approx(0.1)
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert len(rows) == 2 and float(rows[1]["rollout/ep_rew_mean"]) == pytest.approx(calls[1]["rollout/ep_rew_mean"])
    assert "ppo" in capsys.readouterr().err  # tqdm's bar, labelled with the agent


def test_config_is_validated_with_clear_messages():
    err = error.InvalidArgument
    with pytest.raises(err, match=r"batch_size=0 is invalid: use an integer >= 1"):
        small_agent(batch_size=0)
    with pytest.raises(err, match=r"samples_per_prompt=3 is invalid: it must divide n_envs=8"):
        small_agent(samples_per_prompt=3)
    with pytest.raises(err, match=r"temperature=-1 is invalid"):
        small_agent(temperature=-1)
    with pytest.raises(err, match=r"unknown ReinforceConfig field\(s\) \['lr'\]"):
        small_agent(lr=0.1)
    with pytest.raises(err, match=r"top_p=1.5 is invalid: use a number in \(0, 1\]"):
        small_agent(cls=PPO, top_p=1.5)


def test_tensorboard_without_the_package_names_it(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        agent = small_agent(run_dir=str(tmp_path), tensorboard=True)
        with pytest.raises(error.DependencyNotInstalled, match="pip install tensorboard"):
            agent.learn(10)
    else:
        agent = small_agent(run_dir=str(tmp_path), tensorboard=True)
        agent.learn(10)
        assert list((tmp_path / "tb").iterdir())


def test_a_second_learn_call_continues_the_csv(tmp_path):
    agent = small_agent(run_dir=str(tmp_path))
    agent.learn(20)
    n = agent.n_updates
    agent.learn(20)
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert len(rows) == agent.n_updates > n
    steps = [float(r["time/total_timesteps"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == agent.num_timesteps


# -- bad input, damaged folders, non-finite training -----------------------------------


@pytest.mark.parametrize("field, value", [
    ("learning_rate", float("inf")), ("kl_coef", float("inf")), ("temperature", float("inf")),
    ("learning_rate", True), ("max_grad_norm", float("nan")), ("batch_size", 2.5), ("n_envs", True),
])
def test_config_rejects_non_finite_numbers_and_bools(field, value):
    with pytest.raises(error.InvalidArgument, match=rf"{field}={value!r} is invalid"):
        small_agent(cls=PPO, **{field: value})


@pytest.mark.parametrize("kw, match", [
    ({"toy_model": {"n_layers": 2}}, r"unknown keys \['n_layers'\]; valid: n_layer, n_embd, n_head"),
    ({"toy_model": {"n_layer": 0}}, r"sizes must be integers >= 1"),
    ({"device": "tpu9"}, r"Unknown device 'tpu9'; use"),
    ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "cuda:99"}, r"device='cuda:\d+'"),
    ({"lerning_rate": 1e-3}, r"Did you mean 'learning_rate'"),
])
def test_config_errors_name_the_value_and_what_is_valid(kw, match):
    with pytest.raises(error.InvalidArgument, match=match):
        small_agent(**kw)


def test_unknown_keys_of_the_baseline_agents_list_the_valid_ones():
    with pytest.raises(error.InvalidArgument, match=r"unknown ModelAgentConfig field\(s\) \['temp'\].*valid: \["):
        ModelAgent(COPY, temp=0.5, env_kwargs=SMALL)
    with pytest.raises(error.InvalidArgument, match=r"unknown RandomAgentConfig field\(s\) \['sed'\]"):
        agents.make("random", COPY, sed=1)


def test_predict_rejects_a_bare_array_and_out_of_vocabulary_ids():
    agent = small_agent(cls=PPO)
    obs, _ = agents.make_vec_env(COPY, 2, **SMALL).reset(seed=0)
    with pytest.raises(error.InvalidArgument, match="observation dict"):
        agent.predict(obs["input_ids"])
    bad = {k: v.copy() for k, v in obs.items()}
    bad["input_ids"][0, -1] = 99
    with pytest.raises(error.InvalidArgument, match=r"token id 99, outside the vocabulary \[0, 5\)"):
        agent.predict(bad)


def test_non_finite_gradients_are_skipped_then_stop_training():
    agent = small_agent(cls=PPO)
    first = params(agent)
    for step in range(3):
        for p in agent.policy.parameters():
            if p.requires_grad:
                p.grad = torch.full_like(p, float("nan"))
        if step < 2:
            with pytest.warns(UserWarning, match="non-finite gradient norm"):
                agent.optimizer_step()
        else:
            with pytest.raises(error.TrainingError, match=r"non-finite .* 3 optimizer steps in a row, at update 1"):
                agent.optimizer_step()
    assert_params_equal(params(agent), first)  # no step was taken: the weights stay finite


def test_resume_refuses_a_checkpoint_of_another_agent(tmp_path):
    small_agent(cls=Reinforce, run_dir=str(tmp_path)).learn(50)
    with pytest.raises(error.CheckpointError, match=r"holds a saved 'reinforce' agent, not 'ppo'"):
        small_agent(cls=PPO, run_dir=str(tmp_path)).learn(100, resume=True)
    with pytest.raises(error.CheckpointError, match=r"holds a saved 'reinforce' agent, not 'model'"):
        ModelAgent.load(checkpoint.checkpoints_of(tmp_path)[-1])


def test_a_fresh_run_refuses_a_run_dir_of_another_run_and_cleans_half_written_checkpoints(tmp_path):
    small_agent(run_dir=str(tmp_path), checkpoint_every=1).learn(50)
    partial = tmp_path / "checkpoints" / ".tmp-update_0000009-123"
    partial.mkdir()
    with pytest.raises(error.InvalidArgument, match=r"already holds checkpoints of another run .*resume=True"):
        small_agent(run_dir=str(tmp_path)).learn(50)
    assert not partial.exists()
    small_agent(run_dir=str(tmp_path)).learn(100, resume=True)  # the obvious path works


@pytest.mark.parametrize("file", ["agent.json", "state.json", "trainer.pt", "policy/model.safetensors", "policy/lm_policy.json"])
def test_a_damaged_checkpoint_file_is_named(file, tmp_path):
    small_agent(run_dir=str(tmp_path), checkpoint_every=1).learn(30)
    *_, older, newest = checkpoint.checkpoints_of(tmp_path)
    target = newest / file
    target.write_bytes(target.read_bytes()[: max(len(target.read_bytes()) // 3, 1)])
    with pytest.raises(error.CheckpointError, match=rf"{target.parent.name if file.startswith('policy') else file}.* is damaged"):
        small_agent(run_dir=str(tmp_path)).learn(100, resume=True)
    with pytest.raises(error.CheckpointError, match=rf"other checkpoints there: \['{older.name}'\]"):
        Reinforce.load(newest)


def test_trainer_errors_never_suggest_unpickling(tmp_path):
    agent = small_agent()
    agent.save(tmp_path / "a")
    (tmp_path / "a" / "trainer.pt").write_bytes(b"not a zip")
    with pytest.raises(error.CheckpointError) as info:
        Reinforce.load(tmp_path / "a")
    assert "weights_only" not in str(info.value) and info.value.__cause__ is None


def test_loading_on_an_env_with_another_vocabulary_says_so(tmp_path):
    agent = small_agent()
    agent.save(tmp_path / "a")
    with pytest.raises(error.CheckpointError, match=r"policy with 5 tokens but the env has 7"):
        Reinforce.load(tmp_path / "a", env=agents.make_vec_env(COPY, 8, alphabet_size=4, min_length=2, max_length=2))


def test_learners_use_the_envs_frozen_model_as_their_reference():
    import gymnasium as gym

    from lm_gym.envs import env_info

    envs = gym.make_vec("lm_gym/SentimentContinuation-v0", num_envs=4, vectorization_mode="vector_entry_point",
                        max_new_tokens=4)
    agent = agents.make("grpo", envs, batch_size=4, samples_per_prompt=2, seed=0)
    assert agent.reference is not None and agent.reference.model is env_info(envs).reference
    assert not any(p.requires_grad for p in agent.reference.parameters())
    assert agent.policy.model is not agent.reference.model  # the policy trains its own copy


def test_the_kl_reference_reuses_the_fluency_judges_pass_and_matches_a_fresh_one(monkeypatch):
    """On a text env the reference is the env's frozen judge: after a rollout its KL
    log-probs come from the states the judge's fluency pass left (no LM head for those
    rows), equal to a fresh pass with its full evaluation."""
    import gymnasium as gym
    import torch

    import agents
    import lm_gym.models.forward as forward
    from agents.rollout import teacher_forced

    env = gym.make_vec("lm_gym/SentimentContinuation-v0", num_envs=8, max_new_tokens=6)
    agent = agents.make("grpo", env, kl_coef=0.05, samples_per_prompt=4, batch_size=8, seed=0)
    assert agent.reference.model is agent.info.reference  # shared with the env's judge
    assert (~agent.action_mask.astype(bool)).sum() == 1  # the padding token alone: the dot-product path
    run_by_reference_pass, inner, memo_pass = [], forward.completion_forward, forward.memo_completion_logprobs
    calls = []

    def spied(model, ids, *args, **kwargs):
        calls.append(len(ids))
        monkeypatch.setattr(forward, "completion_forward", lambda m, i, *a, **k: run_by_reference_pass.append(len(i)) or inner(m, i, *a, **k))
        try:
            return memo_pass(model, ids, *args, **kwargs)
        finally:
            monkeypatch.setattr(forward, "completion_forward", inner)

    monkeypatch.setattr(forward, "memo_completion_logprobs", spied)
    batch = agent.rollout()
    assert batch.ref_logprobs is not None and calls == [8]
    assert sum(run_by_reference_pass) < 8 // 2  # most rows came from the judge's states
    forward._MEMOS.pop(agent.reference.model)
    with torch.no_grad():
        fresh = teacher_forced(agent.reference, batch, agent.action_mask).logprobs * batch.completion_mask
    torch.testing.assert_close(batch.ref_logprobs, fresh.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("env_id", "kl_coef"),
    [("lm_gym/SentimentContinuation-v0", 0.2), ("lm_gym/KeywordStory-v2", 0.04), ("lm_gym/Continuation-v1", 0.15)],
)
def test_grpo_takes_a_text_tasks_tuned_defaults_under_what_the_user_passes(env_id, kl_coef, tmp_path):
    """agents/hyperparams/lm/grpo.yml: the task's entry sets the defaults; a keyword argument
    or a config key wins; a config dataclass, another model or an id without an entry keeps
    GRPOConfig's defaults; a saved agent loads with the settings it trained with."""
    import agents
    from agents.grpo import GRPOConfig

    small = {"n_envs": 4, "batch_size": 4, "samples_per_prompt": 2, "env_kwargs": {"max_new_tokens": 4}}
    agent = agents.make("grpo", env_id, **small)
    assert (agent.config.learning_rate, agent.config.kl_coef) == (2e-4, kl_coef)
    assert agent.task_defaults == {"learning_rate": 2e-4, "kl_coef": kl_coef}
    assert agent.optimizer.param_groups[0]["lr"] == 2e-4 and agent.kl_coef == kl_coef
    mine = agents.make("grpo", env_id, config={"kl_coef": 0.5}, learning_rate=1e-5, **small)
    assert (mine.config.learning_rate, mine.config.kl_coef) == (1e-5, 0.5) and mine.task_defaults == {}
    partly = agents.make("grpo", env_id, kl_coef=0.0, **small)
    assert (partly.config.learning_rate, partly.config.kl_coef) == (2e-4, 0.0)
    dataclass_config = agents.make("grpo", env_id, config=GRPOConfig(**small))
    assert (dataclass_config.config.learning_rate, dataclass_config.config.kl_coef) == (None, None)
    toy = agents.make("grpo", "lm_gym/Copy-v0", n_envs=4, batch_size=4, samples_per_prompt=2)
    assert toy.task_defaults == {} and toy.config.learning_rate is None
    agent.save(tmp_path / "grpo")
    loaded = agents.GRPO.load(tmp_path / "grpo")
    assert (loaded.config.learning_rate, loaded.config.kl_coef) == (2e-4, kl_coef)


def test_a_text_task_on_another_model_ignores_the_tuned_defaults(tmp_path):
    """The tuned settings are for the built-in models: an env on any other model (here a tiny
    GPT-2 saved locally) keeps GRPOConfig's defaults."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import agents
    from lm_gym.models import load_model_and_tokenizer

    _, tokenizer = load_model_and_tokenizer("builtin")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=128))
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    agent = agents.make("grpo", "lm_gym/SentimentContinuation-v0", n_envs=2, batch_size=2, samples_per_prompt=2,
                        env_kwargs={"max_new_tokens": 4, "model": str(tmp_path / "tiny")})
    assert agent.task_defaults == {} and agent.config.learning_rate is None
    assert agent.kl_coef == 0.04  # GRPO's default for a pretrained LM


def test_an_optimizer_step_bumps_every_version_so_the_policys_kv_cache_is_not_reused():
    """torch's fused Adam steps without bumping version counters; LMPolicy's KV-cache check
    keys on them, so optimizer_step bumps them itself: the next step is prefilled under the
    new weights instead of extending a cache computed under the old ones."""
    import copy

    agent = small_agent(cls=PPO)
    env = agents.make_vec_env(COPY, 4, **SMALL)
    obs, _ = env.reset(seed=0)
    first = agent.policy.act(obs, np.ones(4, dtype=bool), deterministic=True)
    obs, *_ = env.step(first.actions)  # extends each slot's window by its action: cacheable
    trainable = [p for p in agent.policy.parameters() if p.requires_grad]
    before = [p._version for p in trainable]
    for p in trainable:
        p.grad = torch.randn_like(p)
    agent.optimizer_step()
    assert all(p._version > v for p, v in zip(trainable, before))
    fresh = copy.deepcopy(agent.policy)
    fresh.reset_cache()
    got, want = agent.policy.act(obs), fresh.act(obs)  # the plain loop: no flags
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ent_coef, tracked", [(0.0, False), (0.01, True)])
def test_the_update_entropy_carries_a_gradient_exactly_when_an_entropy_bonus_uses_it(ent_coef, tracked):
    """ent_coef = 0 logs the entropy from the blocked pass (no autograd record); a bonus needs
    its gradient, or the bonus would silently do nothing."""
    agent = small_agent(cls=PPO, ent_coef=ent_coef)
    ev = agent.evaluate_actions(agent.rollout())
    assert ev.logprobs.requires_grad
    assert ev.entropy.requires_grad is tracked
