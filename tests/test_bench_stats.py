"""The bench report's rliable aggregates on a synthetic results directory with known values."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from lm_gym import bench, error
from lm_gym.bench.report import load_results
from lm_gym.bench.stats import aggregate, normalised_scores, probability_of_improvement

pytest.importorskip("rliable")

ENVS = ["lm_gym/Copy-v0", "lm_gym/Reverse-v0"]
# final evaluation rewards: random 0.2 everywhere; ppo closes half of the gap to 1.0 on every
# seed; grpo a quarter, half and three quarters of it on seeds 0, 1, 2
REWARDS = {"random": [0.2, 0.2, 0.2], "ppo": [0.6, 0.6, 0.6], "grpo": [0.4, 0.6, 0.8]}


@pytest.fixture
def results_dir(tmp_path):
    for env_id in ENVS:
        for agent, rewards in REWARDS.items():
            for seed, reward in enumerate(rewards):
                cell = tmp_path / env_id.replace("/", "__") / agent / f"seed{seed}"
                cell.mkdir(parents=True)
                (cell / "config.json").write_text(json.dumps({"cell": {"env_id": env_id, "agent": agent, "seed": seed}}))
                (cell / "eval.json").write_text(json.dumps({"mean_reward": reward, "n_episodes": 10}))
                (cell / "done").write_text("")
    return tmp_path


def test_normalised_scores_and_aggregates_have_the_known_values(results_dir):
    records = load_results(results_dir)
    scores = normalised_scores(records, ENVS, list(REWARDS))
    np.testing.assert_allclose(scores["random"], np.zeros((3, 2)), atol=1e-12)
    np.testing.assert_allclose(scores["ppo"], np.full((3, 2), 0.5), atol=1e-12)
    np.testing.assert_allclose(scores["grpo"], [[0.25, 0.25], [0.5, 0.5], [0.75, 0.75]], atol=1e-12)
    agg = aggregate(records, ENVS, list(REWARDS), reps=500)
    assert agg.iqm["ppo"] == pytest.approx((0.5, 0.5, 0.5))  # a constant: a zero-width CI
    assert agg.mean["random"] == pytest.approx((0.0, 0.0, 0.0))
    iqm, lo, hi = agg.iqm["grpo"]
    assert iqm == pytest.approx(0.5) and 0.25 <= lo < 0.5 < hi <= 0.75  # the middle 4 of 6 values
    assert agg.mean["grpo"][0] == pytest.approx(0.5)
    assert list(agg.improvement) == [("random", "ppo"), ("random", "grpo"), ("ppo", "grpo")]
    assert agg.improvement["random", "ppo"] == pytest.approx((0.0, 0.0, 0.0))
    assert agg.improvement["ppo", "grpo"][0] == pytest.approx(0.5)  # (1 + 1/2 + 0) / 3 on each task


def test_probability_of_improvement_equals_rliables():
    from rliable import metrics

    rng = np.random.default_rng(0)
    x, y = rng.random((5, 3)), np.round(rng.random((4, 3)), 1)
    y[0] = x[0]  # some ties
    assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))


def test_the_report_shows_the_cis_and_writes_rliable_plots(results_dir):
    pytest.importorskip("matplotlib")
    text = bench.write_report(results_dir)
    lines = text.splitlines()
    assert "| ppo | 0.500 [0.500, 0.500] | 0.500 [0.500, 0.500] |" in lines
    assert "| ppo | random | 1.000 [1.000, 1.000] |" in lines  # agents in the order of the results
    assert "0 = the 'random' agent, 1 = 1" in text
    for name in ("aggregates.png", "probability_of_improvement.png", "performance_profile.png"):
        assert (results_dir / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_references_are_checked_and_a_missing_rliable_names_the_extra(results_dir, monkeypatch):
    records = load_results(results_dir)
    with pytest.raises(error.InvalidArgument, match=r"needs the 'model' agent on every env \(high='model'\), but 'lm_gym/Copy-v0' has no 'model' cell"):
        normalised_scores(records, ENVS, ["ppo"], high="model")
    with pytest.raises(error.InvalidArgument, match=r"high=0.1 \(0.1\) is not above low='random' \(0.2\)"):
        normalised_scores(records, ENVS, ["ppo"], high=0.1)
    scores = normalised_scores(records, ENVS, ["ppo"], low=0.0, high="ppo")
    np.testing.assert_allclose(scores["ppo"], np.ones((3, 2)))
    monkeypatch.setitem(sys.modules, "rliable", None)
    with pytest.raises(error.DependencyNotInstalled, match=r"pip install 'lm-gym\[stats\]'"):
        aggregate(records, ENVS, ["ppo"])
