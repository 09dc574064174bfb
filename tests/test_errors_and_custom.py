"""Bad input gets clear errors; custom rewards, custom tasks and list_envs work."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import lm_gym
from lm_gym import error
from lm_gym.tasks import Prompt, Task, ToyTokenizer


@pytest.mark.parametrize("bad", [7, -1, 100])
def test_out_of_range_action(bad):
    env = gym.make("lm_gym/Copy-v0")
    env.reset(seed=0)
    with pytest.raises(error.InvalidAction, match=rf"Action {bad} is outside .*Discrete\(7\).*0 \.\. 6"):
        env.step(bad)


@pytest.mark.parametrize("bad", [2.0, "a", True, None, np.array([1.5])])
def test_non_integer_action(bad):
    env = gym.make("lm_gym/Copy-v0")
    env.reset(seed=0)
    with pytest.raises(error.InvalidAction, match="not an integer token id"):
        env.step(bad)


def test_vector_env_bad_actions():
    env = gym.make_vec("lm_gym/Copy-v0", num_envs=3, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    with pytest.raises(error.InvalidAction, match=r"shape \(3,\)"):
        env.step(np.array([2, 3]))
    with pytest.raises(error.InvalidAction, match=r"shape \(3,\)"):
        env.step(np.array([2.0, 3.0, 4.0]))
    with pytest.raises(error.InvalidAction, match="Action 9 is outside"):
        env.step(np.array([2, 9, 3]))


def test_unknown_kwarg_did_you_mean():
    with pytest.raises(error.InvalidArgument, match=r"Unknown keyword argument 'max_lenght'.*Did you mean 'max_length'"):
        gym.make("lm_gym/Copy-v0", max_lenght=5)


def test_bad_knob_values():
    with pytest.raises(error.InvalidArgument, match=r"alphabet_size must be in \[2, 26\], got 40"):
        gym.make("lm_gym/Copy-v0", alphabet_size=40)
    with pytest.raises(error.InvalidArgument, match="max_length must be in"):
        gym.make("lm_gym/Copy-v0", min_length=5, max_length=3)
    with pytest.raises(error.InvalidArgument, match="n_digits must be an integer, got 1.5"):
        gym.make("lm_gym/Addition-v0", n_digits=1.5)


def test_unknown_reward_component():
    with pytest.raises(error.UnknownName, match=r"Unknown reward component 'fluncy'.*Did you mean 'fluency'"):
        gym.make("lm_gym/KeywordToy-v0", reward_weights={"fluncy": 1.0})
    with pytest.raises(error.InvalidArgument, match="not a weighted composite"):
        gym.make("lm_gym/Copy-v0", reward_weights={"accuracy": 1.0})
    with pytest.raises(error.InvalidArgument, match=r"reward_weights\['fluency'\] must be a finite number"):
        gym.make("lm_gym/KeywordToy-v0", reward_weights={"fluency": float("nan")})


def finish_episode(env, action=1):
    env.reset(seed=0)
    return env.step(action)


def test_custom_reward_replaces_the_score():
    seen = {}

    def reward(prompts, completions, **meta):
        seen.update(prompts=prompts, completions=completions, meta=meta)
        return [len(p) / 10 for p in prompts]

    env = gym.make("lm_gym/Copy-v0", reward=reward)
    _, r, term, _, info = finish_episode(env)
    assert term and r == pytest.approx(len(info["prompt"]) / 10)
    assert info["reward_components"] == {"reward": r}
    assert seen["completions"] == [""] and seen["meta"] == {"target": [info["prompt"][:-1]]}


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda p, c, **m: [1.0, 2.0], r"returned a list of 2 value\(s\); a reward must be a sequence of 1 real"),
        (lambda p, c, **m: [float("inf")], "non-finite value inf at index 0"),
        (lambda p, c, **m: 1 / 0, "raised ZeroDivisionError"),
        (lambda p, c, **m: ["x"], "returned a list whose item 0 is str 'x'; a reward must be"),
    ],
)
def test_broken_reward_functions(fn, match):
    env = gym.make("lm_gym/Copy-v0", reward=fn)
    with pytest.raises(error.RewardError, match=match):
        finish_episode(env)


VALID_REWARD = r"a reward must be a sequence of {n} real numbers, one per completion"


@pytest.mark.parametrize("make", ["single", "vector"])
@pytest.mark.parametrize(
    "out, what",
    [
        (["0.5"], r"a list whose item 0 is str '0.5'"),
        (None, r"NoneType None"),
        (0.5, r"a bare float 0.5, not a sequence"),
        (np.float64(0.5), r"a bare float64 np.float64\(0.5\), not a sequence"),
        ([True], r"a list whose item 0 is bool True"),
        (np.array([True]), r"an ndarray of dtype bool"),
        ([[0.5]], r"a list whose item 0 is list \[0.5\]"),
        ({"reward": 0.5}, r"dict \{'reward': 0.5\}"),
    ],
)
def test_one_strict_rule_for_reward_functions(make, out, what):
    """Only a sequence of real numbers of the batch's length is a reward; anything else is
    refused on the first episode, however many episodes end on the step (a bare float for
    a batch of one used to pass until two episodes ended together)."""

    def reward(prompts, completions, **meta):
        return out

    if make == "single":
        env, n = gym.make("lm_gym/Copy-v0", reward=reward), 1
        env.reset(seed=0)
        step = lambda: env.step(1)  # noqa: E731
    else:
        n = 3
        env = gym.make_vec("lm_gym/Copy-v0", num_envs=n, vectorization_mode="vector_entry_point", reward=reward)
        env.reset(seed=0)
        step = lambda: env.step(np.ones(n, dtype=np.int64))  # noqa: E731
    with pytest.raises(error.RewardError, match=f"reward' returned {what}; {VALID_REWARD.format(n=n)}"):
        step()


@pytest.mark.parametrize("out", [[0.5, 1], (0, 1.0), np.array([1, 2], dtype=np.int32), np.array([0.5, 0.25], dtype=np.float32)])
def test_sequences_of_real_numbers_are_rewards(out):
    from lm_gym.tasks.base import validate_scores

    scores = validate_scores(out, 2)
    assert scores.dtype == np.float64 and scores.tolist() == [float(x) for x in out]
    with pytest.raises(error.RewardError, match=r"'f' returned a list of 3 value\(s\); a reward must be a sequence of 2"):
        validate_scores([0.0, 1.0, 2.0], 2, "'f'")


def test_one_score_validator():
    """The rewards package, the metrics and the envs share one validator."""
    import lm_gym.metrics
    import lm_gym.rewards
    import lm_gym.rewards.composite
    from lm_gym.envs import core
    from lm_gym.tasks import base

    assert lm_gym.rewards.validate_scores is base.validate_scores
    assert lm_gym.rewards.composite.validate_scores is base.validate_scores
    assert lm_gym.metrics.validate_scores is core.validate_scores is base.validate_scores


def test_reward_must_be_callable_and_exclusive():
    with pytest.raises(error.InvalidArgument, match="reward must be a callable"):
        gym.make("lm_gym/Copy-v0", reward=3)
    with pytest.raises(error.UnknownName, match=r"Unknown reward 'len'.*Valid: .*'vader'"):  # a string is a spec
        gym.make("lm_gym/Copy-v0", reward="len")
    with pytest.raises(error.InvalidArgument, match="not both"):
        gym.make("lm_gym/KeywordToy-v0", reward=lambda p, c, **m: [0.0] * len(c), reward_weights={"fluency": 1.0})


def test_reward_weights_reweight_the_composite():
    env = gym.make("lm_gym/KeywordToy-v0", reward_weights={"fluency": 0.0, "relevance": 0.0, "diversity": 1.0})
    env.reset(seed=0)
    cat = env.unwrapped.task.tokenizer.encode("cat")[0]
    env.step(cat)
    _, r, _, _, info = env.step(1)
    assert r == pytest.approx(info["reward_components"]["diversity"]) == 1.0


class EchoTask(Task):
    """A user task: say the prompt word back, with dense shaping of 0.1 per token."""

    name = "Echo"
    description = "Say the word back."
    reward_components = ("match",)
    dense = True

    def __init__(self, max_new_tokens: int = 3):
        super().__init__(max_new_tokens=max_new_tokens, max_prompt_tokens=1)
        self._tokenizer = ToyTokenizer(["hi", "yo"], word_level=True)

    def sample(self, np_random):
        return Prompt(["hi", "yo"][int(np_random.integers(2))])

    def components(self, prompts, completions, meta):
        return {"match": np.array([float(p == c) for p, c in zip(prompts, completions)])}

    def score(self, prompts, completions, meta):
        comps = self.components(prompts, completions, meta)
        return comps["match"], comps

    def dense_reward(self, completion_ids, lengths, meta):
        return np.full(len(lengths), 0.1)


def test_user_task_registers_with_both_entry_points():
    lm_gym.register_task("test_user/Echo-v0", EchoTask, max_new_tokens=2)
    assert lm_gym.list_envs()["test_user/Echo-v0"] == "Say the word back."
    env = gym.make("test_user/Echo-v0")
    obs, info = env.reset(seed=0)
    word = info["prompt"]
    tok = env.unwrapped.task.tokenizer
    _, r1, *_ = env.step(tok.encode(word)[0])
    _, r2, term, trunc, info = env.step(tok.eos_token_id)
    assert (r1, r2, term, info["text"]) == (pytest.approx(0.1), pytest.approx(1.1), True, word)
    venv = gym.make_vec("test_user/Echo-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(venv, lm_gym.TextGenVectorEnv) and venv.max_new_tokens == 2
    venv.reset(seed=0)
    _, r, *_ = venv.step(np.array([2, 2, 2]))
    np.testing.assert_allclose(r, 0.1)
    _, r, term, trunc, info = venv.step(np.array([2, 2, 2]))
    assert trunc.all() and set(info["reward_components"]) == {"match", "_match"}


def test_list_envs_has_every_builtin_id():
    envs = lm_gym.list_envs()
    for name in ("Copy", "Reverse", "Addition", "Parentheses", "KeywordToy"):
        assert f"lm_gym/{name}-v0" in envs and envs[f"lm_gym/{name}-v0"]


def test_unknown_env_id_gets_did_you_mean():
    with pytest.raises(gym.error.Error, match="Did you mean"):
        gym.make("lm_gym/Cpy-v0")


def test_import_is_light():
    code = "import sys, lm_gym; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_agents_exports_the_learners_and_their_configs_lazily():
    code = (
        "import sys, agents; light = 'torch' not in sys.modules; "
        "from agents.ppo import PPOConfig; from agents.reinforce import ReinforceConfig; "
        "print(light, agents.PPOConfig is PPOConfig, agents.ReinforceConfig is ReinforceConfig)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]


@pytest.mark.filterwarnings("ignore:.*render_mode='rgb_array'")  # make_vec_env's first try
def test_sb3_make_vec_env_works_on_an_id():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("lm_gym/Copy-v0", n_envs=2, seed=0)
    obs = venv.reset()
    assert obs["input_ids"].shape == (2, 10)
