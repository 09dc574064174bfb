"""Stable-Baselines3 baselines (agents.sb3): the token features extractor, the four SB3
agents behind the Agent protocol, the zoo YAML, masking, and the missing-extra error."""

from __future__ import annotations

import importlib
import json
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

import agents  # noqa: E402
import lm_gym  # noqa: E402, F401
from agents import sb3 as agents_sb3  # noqa: E402
from agents.sb3 import (  # noqa: E402
    SB3A2C,
    SB3DQN,
    SB3PPO,
    SB3MaskablePPO,
    TokenFeaturesExtractor,
    zoo_hyperparams,
)
from lm_gym import error  # noqa: E402

COPY = "lm_gym/Copy-v0"
SMALL = {"alphabet_size": 2, "min_length": 1, "max_length": 2}
"""The small Copy setting: strings of 1-2 letters over {a, b}; 3 valid tokens (EOS, a, b)."""
TOY_IDS = ["lm_gym/Copy-v0", "lm_gym/Reverse-v0", "lm_gym/Addition-v0", "lm_gym/Parentheses-v0", "lm_gym/KeywordToy-v0"]

PPO_THRESHOLD = 0.6
"""SB3 PPO's documented reward on small Copy after PPO_BUDGET steps (seed 0). The random
agent scores about 0.2 there; a perfect copier 1.0 (measured: about 0.85 at this budget)."""
PPO_BUDGET = 12_288


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def copy_obs(n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    venv = agents.make_vec_env(COPY, n, **SMALL)
    obs, _ = venv.reset(seed=seed)
    return obs


# -- the features extractor --------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["gru", "mean", "transformer"])
def test_extractor_shapes_and_padding_ignored(encoder):
    space = gym.make(COPY).observation_space  # L = 10, V = 7
    torch.manual_seed(0)
    ext = TokenFeaturesExtractor(space, features_dim=24, encoder=encoder)
    assert ext.features_dim == 24 and ext.vocab_size == 7 and ext.seq_len == 10
    ids = torch.tensor([[0, 0, 0, 0, 0, 0, 2, 3, 2, 6], [0, 0, 0, 0, 0, 0, 0, 0, 4, 6]], dtype=torch.float32)
    mask = (torch.arange(10) >= torch.tensor([[6], [8]])).float()  # left padding
    out = ext({"input_ids": ids, "attention_mask": mask})
    assert out.shape == (2, 24) and torch.isfinite(out).all()
    # Different token ids under the padding change nothing: the mask is honoured.
    noisy = ids.clone()
    noisy[0, :6] = torch.tensor([5.0, 1, 4, 3, 2, 1])
    noisy[1, :8] = 5.0
    torch.testing.assert_close(ext({"input_ids": noisy, "attention_mask": mask}), out)
    # ... while a real token does.
    changed = ids.clone()
    changed[0, 7] = 4.0
    assert not torch.allclose(ext({"input_ids": changed, "attention_mask": mask})[0], out[0])


def test_extractor_gru_sees_order_and_casts_floats():
    space = gym.make(COPY).observation_space
    torch.manual_seed(0)
    ext = TokenFeaturesExtractor(space)  # the default: GRU
    assert ext.encoder == "gru"
    mask = torch.ones(1, 10)
    ab = torch.tensor([[2, 3, 2, 3, 2, 3, 2, 3, 2, 3]], dtype=torch.float32)
    ba = ab.flip(-1)
    assert not torch.allclose(ext({"input_ids": ab, "attention_mask": mask}), ext({"input_ids": ba, "attention_mask": mask}))
    # SB3 hands ids over as floats; float noise rounds back to the same ids.
    torch.testing.assert_close(
        ext({"input_ids": ab + 0.2, "attention_mask": mask}), ext({"input_ids": ab, "attention_mask": mask})
    )


def test_extractor_bad_arguments():
    space = gym.make(COPY).observation_space
    with pytest.raises(error.UnknownName, match="Unknown encoder 'lstm'.*'gru'"):
        TokenFeaturesExtractor(space, encoder="lstm")
    with pytest.raises(error.InvalidArgument, match="features_dim=0"):
        TokenFeaturesExtractor(space, features_dim=0)
    with pytest.raises(error.InvalidArgument, match="n_heads=3 must divide embed_dim=32"):
        TokenFeaturesExtractor(space, encoder="transformer", n_heads=3)
    with pytest.raises(error.InvalidArgument, match="Dict observation space"):
        TokenFeaturesExtractor(gym.spaces.Box(0, 1, (3,)))


def test_extractor_directly_in_sb3():
    from stable_baselines3 import PPO

    model = PPO("MultiInputPolicy", gym.make(COPY, **SMALL), n_steps=32, batch_size=32, n_epochs=1, seed=0,
                policy_kwargs=dict(features_extractor_class=TokenFeaturesExtractor))
    assert isinstance(model.policy.features_extractor, TokenFeaturesExtractor)
    model.learn(64)
    assert model.num_timesteps == 64


# -- hyperparameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "maskable_ppo"])
def test_yaml_has_every_toy_id_in_zoo_format(algo):
    for env_id in [*TOY_IDS, "default"]:
        hp = zoo_hyperparams(algo, env_id)
        assert hp["policy"] == "MultiInputPolicy"
        assert hp["n_timesteps"] > 0 and hp["n_envs"] >= 1
        policy_kwargs = eval(hp["policy_kwargs"], {})  # the zoo eval()s it, without our imports
        assert policy_kwargs["features_extractor_class"] is TokenFeaturesExtractor
    assert zoo_hyperparams(algo, "lm_gym/Continuation-v0") == zoo_hyperparams(algo, "default")


def test_agent_reads_yaml_and_overrides():
    agent = SB3PPO(COPY, seed=0, env_kwargs=SMALL)
    hp = zoo_hyperparams("ppo", COPY)
    assert agent.n_envs == hp["n_envs"] == agent.model.n_envs
    assert agent.model.n_steps == hp["n_steps"] and agent.n_timesteps == hp["n_timesteps"]
    agent = SB3PPO(COPY, seed=0, n_envs=2, env_kwargs=SMALL, hyperparams={"n_steps": 16, "batch_size": 32},
                   encoder="mean", features_dim=16)
    assert agent.n_envs == agent.model.n_envs == 2 and agent.model.n_steps == 16
    ext = agent.model.policy.features_extractor
    assert ext.encoder == "mean" and ext.features_dim == 16
    with pytest.raises(error.InvalidArgument, match=r"unknown SB3Config field\(s\) \['n_step'\]"):
        SB3PPO(COPY, n_step=3)
    with pytest.raises(error.UnknownName, match="Unknown encoder 'rnn'"):
        SB3PPO(COPY, encoder="rnn")
    with pytest.raises(error.InvalidArgument, match="zoo keys \\['normalize'\\] are not supported"):
        SB3PPO(COPY, hyperparams={"normalize": True})
    with pytest.raises(error.InvalidArgument, match="SB3 cannot drive a gymnasium VectorEnv"):
        SB3PPO(agents.make_vec_env(COPY, 2))


def test_linear_schedule_string():
    agent = SB3A2C(COPY, seed=0, n_envs=1, env_kwargs=SMALL, hyperparams={"learning_rate": "lin_0.002"})
    assert agent.model.lr_schedule(1.0) == pytest.approx(0.002)
    assert agent.model.lr_schedule(0.25) == pytest.approx(0.0005)


# -- training --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sb3-ppo", "sb3-a2c", "sb3-dqn", "sb3-maskable_ppo"])
def test_each_algorithm_trains_on_small_copy(name):
    agent = agents.make(name, COPY, seed=0, n_envs=4, env_kwargs=SMALL)
    assert agent.name == name and type(agent.model).__name__ == {
        "sb3-ppo": "PPO", "sb3-a2c": "A2C", "sb3-dqn": "DQN", "sb3-maskable_ppo": "MaskablePPO"}[name]
    calls = []
    agent.learn(total_timesteps=1024, callback=lambda a, m: calls.append((a.num_timesteps, m)))
    assert agent.num_timesteps == agent.model.num_timesteps >= 1024
    assert calls, "the lm_gym callback was never called"
    steps, metrics = calls[-1]
    assert 0 < steps <= agent.num_timesteps
    assert 0.0 <= metrics["rollout/ep_rew_mean"] <= 1.0
    assert {"reward/accuracy", "reward/length", "reward/exact", "time/fps"} <= set(metrics)
    result = agents.evaluate(agent, n_episodes=16, seed=1)
    assert 0.0 <= result["mean_reward"] <= 1.0 and result["n_episodes"] == 16


def test_callback_false_stops_learning():
    agent = SB3PPO(COPY, seed=0, n_envs=2, env_kwargs=SMALL, hyperparams={"n_steps": 32, "batch_size": 64})
    calls = []
    agent.learn(total_timesteps=10_000, callback=lambda a, m: calls.append(a.num_timesteps) or len(calls) < 2)
    assert calls == [64, 128]
    assert agent.num_timesteps == 130  # one more vector step, then SB3 stops (no further update)


def test_sb3_ppo_learns_small_copy():
    random_mean = agents.evaluate(agents.make("random", COPY, seed=0, env_kwargs=SMALL), n_episodes=400, seed=1)["mean_reward"]
    agent = agents.make("sb3-ppo", COPY, seed=0, env_kwargs=SMALL)
    agent.learn(PPO_BUDGET)
    mean = agents.evaluate(agent, n_episodes=400, seed=1)["mean_reward"]
    assert random_mean < 0.3
    assert mean > PPO_THRESHOLD, f"SB3 PPO reached {mean:.3f} (random: {random_mean:.3f})"


# -- masking -----------------------------------------------------------------------------------


class ActionRecorder(gym.Wrapper):
    """Records every action taken (training or evaluation), changing nothing."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[int] = []

    def step(self, action):
        self.actions.append(int(action))
        return self.env.step(action)


@pytest.mark.parametrize("masked", [True, False])
def test_maskable_ppo_never_takes_a_masked_action(masked):
    cls = SB3MaskablePPO if masked else SB3PPO  # plain PPO shows that the check can fail
    env = ActionRecorder(gym.make(COPY, **SMALL))
    valid = np.flatnonzero(env.unwrapped.action_masks())
    assert len(valid) == 3 and env.action_space.n == 5
    agent = cls(env, seed=0, hyperparams={"n_steps": 128, "batch_size": 64})
    agent.learn(512)
    trained = np.array(env.actions)
    assert len(trained) >= 512
    # predict on evaluate's batched obs (the static mask) and on a single obs
    eval_env = ActionRecorder(gym.make(COPY, **SMALL))
    agents.evaluate(agent, eval_env, n_episodes=64, seed=1)
    obs = copy_obs(8)
    batch_actions, _ = agent.predict(obs)
    single_action, _ = agent.predict({k: v[0] for k, v in obs.items()})
    assert np.shape(batch_actions) == (8,) and np.ndim(single_action) == 0
    taken = np.concatenate([trained, eval_env.actions, batch_actions, [single_action]])
    if masked:
        assert np.isin(taken, valid).all()
    else:
        assert not np.isin(taken, valid).all()


# -- save / load / predict ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SB3PPO, SB3DQN, SB3MaskablePPO])
def test_save_load_predict_round_trip(tmp_path, cls):
    agent = cls(COPY, seed=0, n_envs=2, env_kwargs=SMALL, hyperparams={"learning_starts": 10} if cls is SB3DQN else {})
    agent.learn(256)
    obs = copy_obs(6)
    before, _ = agent.predict(obs, deterministic=True)
    agent.save(tmp_path / "agent")
    assert (tmp_path / "agent" / "model.zip").is_file() and (tmp_path / "agent" / "agent.json").is_file()
    loaded = agents.agent_class(agent.name).load(tmp_path / "agent")
    assert type(loaded) is cls and loaded.env_id == COPY and loaded.env_kwargs == SMALL
    assert loaded.num_timesteps == agent.num_timesteps and loaded.n_envs == 2
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(after, before)
    for p, q in zip(agent.model.policy.parameters(), loaded.model.policy.parameters()):
        torch.testing.assert_close(p, q)
    loaded.learn(64)  # and it keeps training, counting on
    assert loaded.num_timesteps > agent.num_timesteps


# -- the missing extra ------------------------------------------------------------------------


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # `import stable_baselines3` fails
    monkeypatch.delitem(sys.modules, "agents.sb3")
    with pytest.raises(error.DependencyNotInstalled, match=r"pip install 'lm-gym\[sb3\]'"):
        importlib.import_module("agents.sb3")
    for name in ("sb3-ppo", "sb3-a2c", "sb3-dqn", "sb3-maskable_ppo"):
        with pytest.raises(error.DependencyNotInstalled, match=r"stable-baselines3 is required.*lm-gym\[sb3\]"):
            agents.make(name, COPY)
    monkeypatch.undo()
    assert importlib.import_module("agents.sb3") is agents_sb3


def test_missing_sb3_contrib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)
    with pytest.raises(error.DependencyNotInstalled, match=r"sb3-contrib is required for MaskablePPO.*lm-gym\[sb3\]"):
        SB3MaskablePPO(COPY)


# -- loading is data only ----------------------------------------------------------------------


def test_policy_kwargs_are_parsed_never_evaluated(tmp_path):
    from agents.sb3 import ALLOWED_NAMES, as_data, parse_kwargs

    for algo in ("ppo", "a2c", "dqn", "maskable_ppo"):  # the zoo's strings read as data, the same as eval
        text = zoo_hyperparams(algo, COPY)["policy_kwargs"]
        assert parse_kwargs(text) == eval(text, {})
    assert parse_kwargs("dict(activation_fn=nn.Tanh, net_arch=[64, -1], optimizer_class=th.optim.RMSprop)") == {
        "activation_fn": torch.nn.Tanh, "net_arch": [64, -1], "optimizer_class": torch.optim.RMSprop}
    assert parse_kwargs({"activation_fn": "nn.ReLU", "features_extractor_class": "TokenFeaturesExtractor"}) == {
        "activation_fn": torch.nn.ReLU, "features_extractor_class": TokenFeaturesExtractor}
    assert as_data({"activation_fn": torch.nn.ReLU, "net_arch": (8,)}) == {"activation_fn": "nn.ReLU", "net_arch": [8]}
    marker = tmp_path / "pwned"
    for payload in (f"__import__('pathlib').Path({str(marker)!r}).touch()", "dict(a=open('/etc/passwd').read())",
                    "os.system('touch x')", "dict(activation_fn=nn.ReLU.__subclasses__)"):
        with pytest.raises(error.InvalidArgument, match="is not allowed: keyword-argument configs are read as data"):
            parse_kwargs(payload)
    with pytest.raises(error.UnknownName, match="Unknown class for activation_fn 'os.system'"):
        parse_kwargs({"activation_fn": "os.system"})
    assert not marker.exists() and "nn.ReLU" in ALLOWED_NAMES


def saved_small_ppo(path, **kw):
    agent = SB3PPO(COPY, seed=0, n_envs=1, env_kwargs=SMALL, hyperparams={"n_steps": 16, "batch_size": 16}, **kw)
    agent.save(path)
    return agent


def test_a_crafted_agent_json_runs_no_code(tmp_path):
    """A policy_kwargs payload in agent.json is refused with a clear error and runs nothing,
    through SB3Agent.load and through `lm-gym eval DIR`."""
    from lm_gym.cli import main

    saved_small_ppo(tmp_path / "agent")
    marker = tmp_path / "pwned"
    meta = json.loads((tmp_path / "agent" / "agent.json").read_text())
    meta["config"]["hyperparams"]["policy_kwargs"] = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    (tmp_path / "agent" / "agent.json").write_text(json.dumps(meta))
    with pytest.raises(error.InvalidArgument, match="is not allowed: keyword-argument configs are read as data"):
        SB3PPO.load(tmp_path / "agent")
    assert main(["eval", str(tmp_path / "agent"), "--episodes", "2"]) == 2
    assert not marker.exists()


def test_a_crafted_model_zip_is_never_unpickled(tmp_path):
    """SB3's own load would unpickle the payload in model.zip's data; ours reads weights only."""
    import base64
    import pickle
    import zipfile

    marker = tmp_path / "pwned"
    agent = saved_small_ppo(tmp_path / "agent")
    payload = base64.b64encode(pickle.dumps(Touch(str(marker)))).decode()
    zip_path = tmp_path / "agent" / "model.zip"
    with zipfile.ZipFile(zip_path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    data = json.loads(members["data"])
    data["policy_kwargs"] = {":type:": "<class 'dict'>", ":serialized:": payload}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    loaded = SB3PPO.load(tmp_path / "agent")
    assert not marker.exists()
    obs = copy_obs(4)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
    try:  # whatever SB3 makes of the object, unpickling it has run the payload
        agents_sb3.sb3.PPO.load(zip_path)
    except Exception:  # noqa: BLE001, S110
        pass
    assert marker.exists()  # the crafted file is a real threat to SB3's own load


class Touch:
    """Unpickling this creates a file (a stand-in for any code a pickle can run)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_load_refuses_a_folder_that_is_not_this_agents(tmp_path):
    saved_small_ppo(tmp_path / "ppo")
    with pytest.raises(error.CheckpointError, match=r"holds a saved 'sb3-ppo' agent, not 'sb3-a2c'; "
                       r"load it with agents.agent_class\('sb3-ppo'\).load\(path\)"):
        SB3A2C.load(tmp_path / "ppo")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.zip").write_bytes((tmp_path / "ppo" / "model.zip").read_bytes())
    with pytest.raises(error.InvalidArgument, match="is not a saved agent \\(no agent.json in it\\)"):
        SB3PPO.load(foreign)
    (foreign / "agent.json").write_text('{"agent": "sb3-ppo", "config": {')
    with pytest.raises(error.CheckpointError, match="agent.json is damaged \\(not valid JSON"):
        SB3PPO.load(foreign)
    (foreign / "agent.json").write_text(json.dumps({"agent": "sb3-ppo", "config": {"env_id": COPY}}))
    (foreign / "model.zip").write_bytes(b"PK not really")
    with pytest.raises(error.ModelLoadError, match="model.zip is damaged or is not the model.zip of this sb3-ppo agent"):
        SB3PPO.load(foreign)


def test_policy_classes_are_saved_by_name_and_load_back(tmp_path):
    agent = SB3PPO(COPY, seed=0, n_envs=1, env_kwargs=SMALL, hyperparams={
        "n_steps": 16, "batch_size": 16,
        "policy_kwargs": {"features_extractor_class": TokenFeaturesExtractor, "activation_fn": torch.nn.Tanh, "net_arch": [8]}})
    agent.save(tmp_path / "agent")
    saved = json.loads((tmp_path / "agent" / "agent.json").read_text())["config"]["hyperparams"]["policy_kwargs"]
    assert saved == {"features_extractor_class": "TokenFeaturesExtractor", "activation_fn": "nn.Tanh", "net_arch": [8]}
    loaded = SB3PPO.load(tmp_path / "agent")
    assert loaded.model.policy.activation_fn is torch.nn.Tanh
