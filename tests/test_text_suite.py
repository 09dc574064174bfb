"""The ``text-suite`` preset (issue 11's text-learning protocol) and the table of
``benchmarks/text_learning.py``, on synthetic results with known values."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from lm_gym import bench, error
from lm_gym.bench.config import BASELINES, TEXT_BATCH, TEXT_ENVS, text_learner_kwargs
from lm_gym.bench.report import CellRecord
from lm_gym.bench.runner import check_grid, eval_env_kwargs
from lm_gym.bench.stats import mean_ci

T_975_2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom


def load_script():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "text_learning.py"
    spec = importlib.util.spec_from_file_location("text_learning", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_text_suite_preset_is_the_stated_protocol():
    config = bench.preset("text-suite")
    check_grid(config)  # every id registered, every agent known
    assert config.envs == TEXT_ENVS and "lm_gym/TopicSteering-v1" in config.envs
    assert config.agents == [*BASELINES, "grpo", "ppo"]
    assert (config.seed_list, config.time_budget, config.eval_episodes, config.threads) == ([0, 1, 2], 300.0, 128, 1)
    cells = config.cells()
    assert len(cells) == 4 * 4 * 3
    for cell in cells:
        assert eval_env_kwargs(cell)["split"] == "test"  # held-out prompts
        assert cell.agent_kwargs == ({} if cell.agent in BASELINES else TEXT_BATCH)
    assert text_learner_kwargs(["gspo"]) == {"gspo": TEXT_BATCH}
    assert len({c.eval_seed for c in cells if c.seed == 0}) == 1  # every agent sees the same episodes


def test_mean_ci_is_the_student_t_interval():
    mean, lo, hi = mean_ci([0.5, 0.6, 0.7])
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert mean == pytest.approx(0.6) and (lo, hi) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    one = mean_ci([0.4])
    assert one[0] == 0.4 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(error.InvalidArgument, match="at least one finite value"):
        mean_ci([])


def record(env_id, agent, seed, reward, fluency):
    comps = {"reward/fluency": fluency, "reward/relevance": 0.5, "reward/diversity": 0.9}
    distinct = {"distinct-2": 0.3 + 0.1 * seed}
    return CellRecord(env_id, agent, seed,
                      {"mean_reward": reward, "num_timesteps": 1000 * (agent == "grpo"), **comps, **distinct})


def test_text_learning_table_has_ci_gain_and_fluency_ratio():
    env = "lm_gym/TopicSteering-v1"
    records = [record(env, "model", s, 0.4, 0.5) for s in range(3)]
    records += [record(env, "random", s, 0.2, 0.0) for s in range(3)]
    records += [record(env, "grpo", s, r, f) for s, (r, f) in enumerate([(0.5, 0.45), (0.6, 0.5), (0.7, 0.55)])]
    rows = {line.split(" | ")[1]: line for line in load_script().table(records, [env], ["random", "model", "grpo"]).splitlines()[2:]}
    assert list(rows) == ["random", "zero-shot", "grpo"]
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert f"| 0.600 ± {half:.3f} | +0.200 | 0.500 | 0.500 | 0.900 | 1.00 | 0.400 | 1,000 |" in rows["grpo"]
    assert "| 0.400 ± 0.000 | +0.000 |" in rows["zero-shot"]
    assert "| 0.200 ± 0.000 | -0.200 | 0.000 |" in rows["random"] and "| 0.00 |" in rows["random"]


def test_samples_pair_each_trained_episode_with_the_zero_shot_episode_on_its_prompt(tmp_path):
    import json

    env = "lm_gym/KeywordStory-v1"

    def write(agent, episodes):
        cell = tmp_path / env.replace("/", "__") / agent / "seed0"
        cell.mkdir(parents=True)
        (cell / "samples.jsonl").write_text("".join(json.dumps(ep) + "\n" for ep in episodes))

    comps = {"fluency": 0.5, "relevance": 1.0, "diversity": 0.9}
    write("grpo", [dict(prompt=p, text=f"trained {p}", reward=0.8, components=comps) for p in ("a", "b", "c")])
    # the zero-shot run ended its episodes in another order, and saw "a" twice
    write("model", [dict(prompt=p, text=t, reward=0.4) for p, t in (("b", "zb"), ("a", "za1"), ("a", "za2"))])
    lines = load_script().samples_markdown(tmp_path, env, "grpo", n=3).splitlines()
    rows = lines[lines.index("|---|---|---|---|---|---|---|") + 1:]
    assert rows == [
        "| a | za1 | trained a | 0.800 | 0.500 | 1.000 | 0.900 |",
        "| b | zb | trained b | 0.800 | 0.500 | 1.000 | 0.900 |",
        "| c |  | trained c | 0.800 | 0.500 | 1.000 | 0.900 |",
    ]
    assert lines[0] == "# KeywordStory-v1: 3 trained samples"
    # write_samples picks the learner with the best mean reward and heads its file with the
    # whole command line that made it
    write("ppo", [dict(prompt="a", text="ppo a", reward=0.9, components=comps)])
    records = [CellRecord(env, "grpo", 0, {"mean_reward": 0.8}), CellRecord(env, "ppo", 0, {"mean_reward": 0.7})]
    command = "python benchmarks/text_learning.py --out x --envs lm_gym/KeywordStory-v1 --parallel 2 --samples d"
    load_script().write_samples(tmp_path / "docs", tmp_path, records, [env], ["grpo", "ppo"], command)
    text = (tmp_path / "docs" / "keyword_story.md").read_text()
    assert f"    {command}\n" in text and "of the grpo run, seed 0" in text and "trained a" in text
