"""Contract tests for every registered env id (a new id is checked automatically)."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import lm_gym
from tests.helpers import assert_tree_equal

ALL_IDS = list(lm_gym.list_envs())
TOY_IDS = [i for i in ALL_IDS if i.split("/")[1].split("-")[0] in {"Copy", "Reverse", "Addition", "Parentheses", "KeywordToy"}]


def masked_actions(rng: np.random.Generator, mask: np.ndarray, n: int) -> np.ndarray:
    valid = np.flatnonzero(mask)
    return rng.choice(valid, size=n)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_check_env_no_warnings(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", TOY_IDS)
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_spaces_follow_the_contract(env_id):
    env = gym.make(env_id).unwrapped
    task = env.task
    L = task.max_prompt_tokens + task.max_new_tokens
    assert env.action_space == gym.spaces.Discrete(task.vocab_size)
    assert env.observation_space["input_ids"].shape == (L,)
    assert env.observation_space["input_ids"].dtype == np.int64
    assert env.observation_space["attention_mask"].dtype == np.int8
    obs, info = env.reset(seed=3)
    # left-padded: once the mask turns on it stays on; the newest token is at L-1
    m = obs["attention_mask"]
    assert m[-1] == 1 and np.all(np.diff(m) >= 0)
    assert np.all(obs["input_ids"][m == 0] == task.tokenizer.pad_token_id)
    mask = info["action_mask"]
    assert mask.dtype == np.int8 and mask.shape == (task.vocab_size,)
    assert mask[task.tokenizer.pad_token_id] == 0 and mask[task.tokenizer.eos_token_id] == 1
    np.testing.assert_array_equal(env.action_masks(), mask.astype(bool))
    obs2, *_ = env.step(int(np.flatnonzero(mask)[-1]))
    assert obs2["input_ids"][-1] == np.flatnonzero(mask)[-1]
    np.testing.assert_array_equal(obs2["input_ids"][:-1], obs["input_ids"][1:])


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_last_step_info_and_episode_end(env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    mask = info["action_mask"]
    eos = env.unwrapped.eos_token_id
    non_eos = int(np.flatnonzero(mask & (np.arange(mask.size) != eos))[0])
    keys = None
    # Budget: never emitting EOS truncates at max_new_tokens.
    for t in range(env.unwrapped.max_new_tokens):
        obs, r, term, trunc, info = env.step(non_eos)
        last = t == env.unwrapped.max_new_tokens - 1
        assert trunc == last and not term
        if not last:
            assert r == 0.0 and "text" not in info
    assert set(info) >= {"text", "prompt", "reward_components"}
    keys = set(info["reward_components"])
    assert all(isinstance(v, float) for v in info["reward_components"].values())
    # EOS terminates at once; the components have the same keys.
    env.reset()
    _, r, term, trunc, info = env.step(eos)
    assert term and not trunc and info["text"] == ""
    assert set(info["reward_components"]) == keys
    with pytest.raises(lm_gym.error.ResetNeeded):
        env.step(eos)


def rollout(env, seed: int, n_steps: int, action_seed: int = 0):
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for _ in range(n_steps):
        a = masked_actions(rng, info.get("action_mask", env.unwrapped._action_mask), 1)[0]
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            obs, info = env.reset()
            out.append((obs, info))
    return out


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_same_episodes(env_id):
    a = rollout(gym.make(env_id), seed=7, n_steps=30)
    b = rollout(gym.make(env_id), seed=7, n_steps=30)
    for x, y in zip(a, b):
        assert_tree_equal(x, y)
    c = rollout(gym.make(env_id), seed=8, n_steps=30)
    assert any(x[0]["input_ids"].tolist() != y[0]["input_ids"].tolist() for x, y in zip(a, c))


MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_native_vector_env_equals_n_single_envs(env_id, mode):
    n = 4
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode)
    assert isinstance(native, lm_gym.TextGenVectorEnv)
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode})
    assert_native_equals_sync(native, sync, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("env_id", [*TOY_IDS, "lm_gym/Continuation-v0"])
def test_max_episode_steps_is_a_time_limit_on_each_sub_env(env_id, mode):
    """``make_vec(id, max_episode_steps=k)`` means what a TimeLimit(k) on each sub-env of the
    Sync env means: cut at k steps, truncated, not scored."""
    n, k = 4, 3
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode,
                          max_episode_steps=k, max_new_tokens=5)
    assert native.max_episode_steps == k
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode},
                        max_episode_steps=k, max_new_tokens=5)
    assert_native_equals_sync(native, sync, mode)


def test_a_time_limited_spec_and_an_unscored_cut():
    spec = copy.deepcopy(gym.spec("lm_gym/Copy-v0"))
    spec.max_episode_steps = 2
    calls = []
    env = gym.make_vec(spec, num_envs=2, vectorization_mode="vector_entry_point",
                       reward=lambda p, c, **m: calls.append(c) or [1.0] * len(c))
    assert env.max_episode_steps == 2
    env.reset(seed=0)
    letter = int(np.flatnonzero(env.action_masks()[0])[1])  # a letter, not EOS
    env.step(np.array([letter, letter]))
    _, rewards, terminated, truncated, info = env.step(np.array([letter, env.eos_token_id]))
    assert truncated.tolist() == [True, True] and terminated.tolist() == [False, True]
    assert rewards.tolist() == [0.0, 1.0]  # the cut episode is not scored; the EOS one is
    assert calls == [["a"]]  # one batched call, for the EOS episode only
    assert info["_text"].tolist() == [False, True]
    with pytest.raises(lm_gym.error.InvalidArgument, match="max_episode_steps must be in \\[1, inf\\], got 0"):
        gym.make_vec("lm_gym/Copy-v0", num_envs=2, vectorization_mode="vector_entry_point", max_episode_steps=0)


def test_unknown_vector_env_kwarg_lists_the_vector_envs_own():
    with pytest.raises(lm_gym.error.InvalidArgument) as e:
        gym.make_vec("lm_gym/Copy-v0", num_envs=2, vectorization_mode="vector_entry_point", autoreset="next_step")
    message = str(e.value)
    assert "Unknown keyword argument 'autoreset'" in message and "Did you mean 'autoreset_mode'?" in message
    valid = message.split("Valid: ")[1]
    for name in ("autoreset_mode", "copy", "max_episode_steps", "num_envs", "reward", "max_new_tokens"):
        assert name in valid


@pytest.mark.parametrize("env_id", [*TOY_IDS, "lm_gym/Continuation-v0"])
def test_bad_vector_input_raises_what_sync_raises(env_id):
    """The native vector env raises the exception types of Gymnasium's SyncVectorEnv."""
    native = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    sync = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync")
    bad_resets = [
        (np.array([1, 0, 1]), TypeError),  # wrong dtype
        (np.array([1.0, 0.0, 1.0]), TypeError),
        ([True, False, True], TypeError),  # not an ndarray
        (np.array([True, False]), ValueError),  # wrong shape
        (np.array([False, False, False]), ValueError),  # no True
    ]
    for env in (native, sync):
        env.reset(seed=0)
        for mask, exc in bad_resets:
            with pytest.raises(exc):
                env.reset(options={"reset_mask": mask})
        with pytest.raises(TypeError):
            env.step(0)  # a scalar for a batch of 3
    with pytest.raises(lm_gym.error.InvalidArgumentType, match="must be a bool numpy array of shape \\(3,\\).*got dtype int64"):
        native.reset(options={"reset_mask": np.array([1, 0, 1])})
    with pytest.raises(lm_gym.error.InvalidActionType, match="shape \\(3,\\).*got int of shape \\(\\)"):
        native.step(0)


def test_reset_seed_seeds_the_base_class_rng():
    env = gym.make_vec("lm_gym/Copy-v0", num_envs=2, vectorization_mode="vector_entry_point")
    env.reset(seed=42)
    assert env.unwrapped.np_random_seed == 42
    expected, _ = gym.utils.seeding.np_random(42)
    assert env.unwrapped.np_random.bit_generator.state == expected.bit_generator.state
    env.reset(seed=7)
    assert env.unwrapped.np_random_seed == 7


def assert_native_equals_sync(native, sync, mode):
    n = native.num_envs
    rng = np.random.default_rng(0)
    out_a, out_b = native.reset(seed=11), sync.reset(seed=11)
    assert_tree_equal(out_a, out_b, "reset")
    mask = out_a[1]["action_mask"][0]
    for t in range(40):
        actions = masked_actions(rng, mask, n)
        # end some episodes early with EOS so slots run out of step
        actions[rng.random(n) < 0.15] = native.eos_token_id
        out_a, out_b = native.step(actions), sync.step(actions)
        assert_tree_equal(out_a, out_b, f"step {t}")
        ended = out_a[2] | out_a[3]
        if mode == AutoresetMode.DISABLED and ended.any():
            assert_tree_equal(
                native.reset(options={"reset_mask": ended}),
                sync.reset(options={"reset_mask": ended.copy()}),
                f"partial reset {t}",
            )


def test_vector_env_scores_all_endings_in_one_batched_call():
    calls = []

    def reward(prompts, completions, **meta):
        calls.append(len(completions))
        return [float(len(c)) for c in completions]

    env = gym.make_vec("lm_gym/Copy-v0", num_envs=8, vectorization_mode="vector_entry_point", reward=reward)
    env.reset(seed=0)
    _, r, term, trunc, info = env.step(np.full(8, env.eos_token_id))
    assert term.all() and calls == [8]
    np.testing.assert_array_equal(r, np.zeros(8))
    _, r, *_ = env.step(np.full(8, 2))  # NEXT_STEP: these actions are ignored
    assert calls == [8] and np.all(r == 0)


def test_vector_env_ring_wraps_around():
    env = gym.make_vec("lm_gym/Copy-v0", num_envs=2, vectorization_mode="vector_entry_point")
    single = gym.make("lm_gym/Copy-v0")
    obs, _ = env.reset(seed=5)
    sobs, _ = single.reset(seed=5)
    for t in range(300):  # far past the ring's slack
        a = 2 + t % 4
        obs, _, term, trunc, _ = env.step(np.array([a, a]))
        sobs, _, sterm, strunc, _ = single.step(a)
        np.testing.assert_array_equal(obs["input_ids"][0], sobs["input_ids"])
        np.testing.assert_array_equal(obs["attention_mask"][0], sobs["attention_mask"])
        if sterm or strunc:
            sobs, _ = single.reset()
            obs, *_ = env.step(np.array([a, a]))  # NEXT_STEP reset


def test_render_modes(capsys):
    env = gym.make("lm_gym/Copy-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step(2)
    text = env.render()
    assert text == env.unwrapped.prompt + "a"
    env = gym.make("lm_gym/Copy-v0", render_mode="human")
    env.reset(seed=0)
    capsys.readouterr()
    env.step(3)
    assert capsys.readouterr().out.strip() == env.unwrapped.prompt + "b"
    with pytest.raises(lm_gym.error.InvalidArgument, match="render_mode='rgb_array'"):
        lm_gym.TextGenEnv("lm_gym.tasks.toy:CopyTask", render_mode="rgb_array")
