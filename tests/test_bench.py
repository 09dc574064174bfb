"""The benchmark harness: grids, per-cell files, resuming, summaries, plots, backends."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import agents
from agents.base import Agent
from lm_gym import bench, error
from lm_gym.bench.report import CellRecord, summary_markdown
from lm_gym.bench.runner import check_grid

COPY = "lm_gym/Copy-v0"
TINY = "test_bench:TinyLearner"
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class TinyConfig:
    """The config of :class:`TinyLearner`."""

    sleep: float = 0.0
    """Seconds to sleep per update (makes a cell slow enough to interrupt)."""
    log_every: int = 32
    """Env steps between callbacks."""


class TinyLearner(Agent):
    """A 'learner' for harness tests: acts uniformly at random, but runs the learn loop (env
    steps, callbacks with SB3-style metrics, early stop) like a real one."""

    name = "tiny"
    config_class = TinyConfig

    def __init__(self, env: Any, *, n_envs: int = 4, seed: int | None = None, env_kwargs: Any = None,
                 sleep: float = 0.0, log_every: int = 32) -> None:
        super().__init__(env, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
        self.config = TinyConfig(sleep=sleep, log_every=log_every)
        self.rng = np.random.default_rng(seed)
        self.vocab = self.info.vocab_size

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        n = len(np.atleast_2d(obs["input_ids"]))
        return self.rng.integers(2, self.vocab, size=n), state

    def learn(self, total_timesteps, callback=None, progress_bar=False, **kwargs):
        obs, _ = self.env.reset(seed=self.seed)
        rewards, comps = [], {}
        while self.num_timesteps < total_timesteps:
            obs, reward, term, trunc, info = self.env.step(self.predict(obs)[0])
            self.num_timesteps += self.n_envs
            for i in np.flatnonzero(term | trunc):
                rewards.append(float(reward[i]))
                for k, v in info["final_info"]["reward_components"].items():
                    if not k.startswith("_"):  # Gymnasium's per-key "was set" masks
                        comps.setdefault(k, []).append(float(v[i]))
            if self.num_timesteps % self.config.log_every == 0 and rewards:
                time.sleep(self.config.sleep)
                metrics = {"rollout/ep_rew_mean": np.mean(rewards), **{f"reward/{k}": np.mean(v) for k, v in comps.items()}, "time/fps": 1.0}
                rewards, comps = [], {}
                if callback is not None and callback(self, metrics) is False:
                    break
        return self

    def config_dict(self):
        return {**super().config_dict(), "sleep": self.config.sleep, "log_every": self.config.log_every}


@pytest.fixture(autouse=True)
def _importable():
    """Make ``test_bench:TinyLearner`` importable by path (pytest may import this file under another name)."""
    sys.modules.setdefault("test_bench", sys.modules[__name__])


def grid(**kw: Any) -> bench.BenchConfig:
    base = dict(envs=[COPY], agents=["random", TINY], seeds=2, budget=256, eval_episodes=8, plots=False)
    return bench.BenchConfig(**{**base, **kw})


def starts(out: Path) -> list[str]:
    return [line.split()[2] for line in (out / "bench.log").read_text().splitlines() if line.split()[1] == "start"]


def test_cells_skip_sb3_on_text_envs_and_order_env_agent_seed():
    config = bench.BenchConfig(envs=[COPY, "lm_gym/SentimentContinuation-v0"], agents=["random", "sb3-ppo"], seeds=2)
    keys = [c.key for c in config.cells()]
    assert keys == [
        "lm_gym__Copy-v0/random/seed0", "lm_gym__Copy-v0/random/seed1",
        "lm_gym__Copy-v0/sb3-ppo/seed0", "lm_gym__Copy-v0/sb3-ppo/seed1",
        "lm_gym__SentimentContinuation-v0/random/seed0", "lm_gym__SentimentContinuation-v0/random/seed1",
    ]
    assert config.skipped() == [("lm_gym/SentimentContinuation-v0", "sb3-ppo", "Stable-Baselines3 baselines only apply to the toy ids")]
    cell = config.cells()[1]
    assert (cell.seed, cell.budget, cell.eval_seed, cell.eval_episodes) == (1, 20_000, 1_000_001, 100)


def test_budget_per_env_and_config_errors(tmp_path):
    config = bench.BenchConfig(envs=[COPY, "lm_gym/Reverse-v0"], agents=["random"], seeds=[3], budget={COPY: 10, "lm_gym/Reverse-v0": 20})
    assert [(c.env_id, c.budget, c.seed) for c in config.cells()] == [(COPY, 10, 3), ("lm_gym/Reverse-v0", 20, 3)]
    with pytest.raises(error.InvalidArgument, match="seeds must be a positive count"):
        bench.BenchConfig(seeds=0)
    with pytest.raises(error.InvalidArgument, match="budget must be a positive number of env steps"):
        bench.BenchConfig(budget=-5)
    with pytest.raises(error.InvalidArgument, match="workers must be a positive integer, got 0"):
        bench.BenchConfig(workers=0)
    with pytest.raises(error.InvalidArgument, match="threads must be a positive integer, got 0"):
        bench.BenchConfig(threads=0)
    with pytest.raises(error.UnknownName, match="Did you mean 'quickstart'"):
        bench.preset("quickstrat")
    with pytest.raises(error.InvalidArgument, match="lm-gym list"):
        bench.BenchConfig(envs=["lm_gym/Nope-v0"], agents=["sb3-ppo"]).cells()
    bad = tmp_path / "bad.yaml"
    bad.write_text("envs: [lm_gym/Copy-v0]\nseed: 3\n")
    with pytest.raises(error.InvalidArgument, match=r"unknown bench config keys \['seed'\]"):
        bench.load_config(bad)


def test_yaml_config_starts_from_a_preset(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("preset: smoke\nseeds: [0, 7]\nagent_kwargs: {ppo: {learning_rate: 0.001}}\n")
    config = bench.load_config(path, eval_episodes=4)
    assert (config.envs, config.agents, config.seed_list, config.eval_episodes) == ([COPY], ["random"], [0, 7], 4)
    assert config.agent_kwargs == {"ppo": {"learning_rate": 0.001}}
    quick = bench.preset("quickstart")
    assert {"random", "model", "ppo"} == set(quick.agents) and len(quick.envs) == 2


def test_agent_at_env_kwargs_override_one_agent_on_one_env_only():
    config = bench.BenchConfig(
        envs=[COPY, "lm_gym/Reverse-v0"], agents=["ppo", "grpo"], seeds=1,
        agent_kwargs={"ppo": {"n_envs": 4, "learning_rate": 1e-3}, f"ppo@{COPY}": {"learning_rate": 2e-4},
                      "grpo@lm_gym/Reverse-v0": {"n_epochs": 2}},
    )
    kwargs = {(c.env_id, c.agent): c.agent_kwargs for c in config.cells()}
    assert kwargs[(COPY, "ppo")] == {"n_envs": 4, "learning_rate": 2e-4}
    assert kwargs[("lm_gym/Reverse-v0", "ppo")] == {"n_envs": 4, "learning_rate": 1e-3}
    assert kwargs[(COPY, "grpo")] == {} and kwargs[("lm_gym/Reverse-v0", "grpo")] == {"n_epochs": 2}
    check_grid(config)  # both keys name registered envs
    with pytest.raises(error.UnknownName, match="Did you mean .lm_gym/Reverse-v0."):
        check_grid(bench.BenchConfig(envs=[COPY], agents=["ppo"], agent_kwargs={"ppo@lm_gym/Revers-v0": {}}))
    with pytest.raises(error.InvalidArgument, match=r"key 'ppo@' is invalid: use 'AGENT' or 'AGENT@ENV_ID'"):
        check_grid(bench.BenchConfig(envs=[COPY], agents=["ppo"], agent_kwargs={"ppo@": {}}))


def test_run_bench_writes_every_cell_file_and_the_summary(tmp_path):
    results = bench.run_bench(grid(plots=True), tmp_path, progress=False)
    assert [r.status for r in results] == ["done"] * 4
    cell = tmp_path / "lm_gym__Copy-v0" / "test_bench--TinyLearner" / "seed1"
    assert sorted(p.name for p in cell.iterdir()) == ["config.json", "curve.csv", "done", "eval.json", "metrics.jsonl", "samples.jsonl"]
    config = json.loads((cell / "config.json").read_text())
    assert config["cell"]["agent"] == TINY and config["cell"]["seed"] == 1 and config["cell"]["budget"] == 256
    assert config["agent_config"] == {"sleep": 0.0, "log_every": 32}
    assert "torch" in config["versions"]
    rows = list(csv.DictReader(open(cell / "curve.csv")))
    assert list(rows[0]) == ["timesteps", "time_s", "reward", "accuracy", "length", "exact"]
    steps = [int(r["timesteps"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == 256 and len(rows) == 8
    assert all(0.0 <= float(r["reward"]) <= 1.0 for r in rows)
    evaluation = json.loads((cell / "eval.json").read_text())
    assert evaluation["n_episodes"] == 8 and evaluation["num_timesteps"] == 256 and evaluation["trained"] is True
    assert {"mean_reward", "std_reward", "reward/accuracy", "reward/exact", "distinct-2"} <= set(evaluation)
    assert len((cell / "samples.jsonl").read_text().splitlines()) == 8
    baseline = tmp_path / "lm_gym__Copy-v0" / "random" / "seed0"
    base_rows = list(csv.DictReader(open(baseline / "curve.csv")))
    base_eval = json.loads((baseline / "eval.json").read_text())
    assert len(base_rows) == 1 and base_eval["trained"] is False and base_eval["num_timesteps"] == 0
    assert float(base_rows[0]["reward"]) == pytest.approx(base_eval["mean_reward"])

    text = (tmp_path / "results.md").read_text()
    assert f"| env | random | {TINY} |" in text
    means = [np.mean([r.eval["mean_reward"] for r in results if r.cell.agent == a]) for a in ("random", TINY)]
    assert f"{means[0]:.3f} ±" in text and f"{means[1]:.3f} ±" in text
    for png in ("learning_curves.png", "final_reward.png", "curves/lm_gym__Copy-v0.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG, png


def test_rerun_runs_only_cells_without_a_done_marker(tmp_path):
    bench.run_bench(grid(), tmp_path, progress=False)
    assert len(starts(tmp_path)) == 4
    missing = tmp_path / "lm_gym__Copy-v0" / "test_bench--TinyLearner" / "seed0"
    (missing / "done").unlink()
    (missing / "eval.json").write_text("half a file")  # an interrupted cell's leftovers
    kept = tmp_path / "lm_gym__Copy-v0" / "random" / "seed1" / "eval.json"
    before = kept.stat().st_mtime_ns
    results = bench.run_bench(grid(), tmp_path, progress=False)
    assert starts(tmp_path)[4:] == ["lm_gym__Copy-v0/test_bench--TinyLearner/seed0"]
    assert [r.status for r in results] == ["cached", "cached", "done", "cached"]
    assert kept.stat().st_mtime_ns == before
    assert json.loads((missing / "eval.json").read_text())["n_episodes"] == 8
    # a larger grid over the same directory runs only the new cells
    bench.run_bench(grid(seeds=3), tmp_path, progress=False)
    assert sorted(starts(tmp_path)[5:]) == ["lm_gym__Copy-v0/random/seed2", "lm_gym__Copy-v0/test_bench--TinyLearner/seed2"]


def test_a_failing_cell_is_reported_and_retried(tmp_path):
    config = grid(agents=["random", TINY], seeds=1, agent_kwargs={TINY: {"n_envs": 0}})
    results = bench.run_bench(config, tmp_path, progress=False)
    assert [r.status for r in results] == ["done", "failed"]
    assert "n_envs must be a positive integer, got 0" in results[1].error
    failed = tmp_path / results[1].cell.key
    assert "InvalidArgument" in (failed / "error.txt").read_text() and not (failed / "done").exists()
    bench.run_bench(config, tmp_path, progress=False)
    assert starts(tmp_path) == ["lm_gym__Copy-v0/random/seed0"] + ["lm_gym__Copy-v0/test_bench--TinyLearner/seed0"] * 2


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(agents=["random", "no_such_module:Agent"]), "cannot import agent 'no_such_module:Agent'"),
        (dict(agents=["random", "rnadom"]), "Unknown agent 'rnadom'. Did you mean 'random'?"),
        (dict(envs=[COPY, "lm_gym/Coppy-v0"]), "Unknown env id 'lm_gym/Coppy-v0'. Did you mean 'lm_gym/Copy-v0'?"),
    ],
)
def test_the_grid_is_checked_before_the_first_cell(tmp_path, kw, message):
    with pytest.raises(error.Error, match=re.escape(message)):
        bench.run_bench(grid(seeds=1, **kw), tmp_path, progress=False)
    assert not (tmp_path / "bench.log").exists()


def test_time_budget_stops_training_early(tmp_path):
    config = grid(agents=[TINY], seeds=1, budget=100_000, time_budget=0.3, agent_kwargs={TINY: {"sleep": 0.05}})
    (result,) = bench.run_bench(config, tmp_path, progress=False)
    assert 0 < result.eval["num_timesteps"] < 100_000
    assert result.eval["train_seconds"] < 5


def test_parallel_workers_run_cells_in_worker_processes(tmp_path):
    results = bench.run_bench(grid(agents=["random"], seeds=2, workers=2), tmp_path, progress=False)
    assert [r.status for r in results] == ["done", "done"]
    pids = {line.split("pid=")[1] for line in (tmp_path / "bench.log").read_text().splitlines() if "pid=" in line}
    assert pids and str(os.getpid()) not in pids  # cells ran in worker processes, not here


class InlineBackend(bench.Backend):
    """A backend as a cluster one would be: submit every cell, collect the results."""

    calls: list[int] = []

    def run(self, cells, out_dir, **options):
        InlineBackend.calls.append(len(cells))
        for cell in reversed(cells):  # any completion order must do
            yield bench.run_cell(cell, out_dir)


def test_custom_backend_plugs_in(tmp_path):
    bench.register_backend("inline-test", InlineBackend)
    results = bench.run_bench(grid(agents=["random"], backend="inline-test"), tmp_path, progress=False)
    assert InlineBackend.calls == [2]
    assert [r.cell.seed for r in results] == [0, 1]  # reported in grid order
    with pytest.raises(error.UnknownName, match="Unknown bench backend 'slurm'"):
        bench.get_backend("slurm")
    with pytest.raises(error.InvalidArgument, match="Backend subclass"):
        bench.register_backend("x", dict)


def record(env: str, agent: str, seed: int, reward: float, **comps: float) -> CellRecord:
    return CellRecord(env, agent, seed, {"mean_reward": reward, "n_episodes": 10.0, "num_timesteps": 100 * (agent != "random"),
                                         "mean_ep_length": 4.0, **{f"reward/{k}": v for k, v in comps.items()}})


def test_summary_table_mean_std_over_seeds_and_best_in_bold():
    records = [
        record(COPY, "random", 0, 0.1, accuracy=0.2), record(COPY, "random", 1, 0.3, accuracy=0.4),
        record(COPY, "ppo", 0, 0.5, accuracy=0.6), record(COPY, "ppo", 1, 0.9, accuracy=1.0),
        record("lm_gym/Reverse-v0", "random", 0, 0.25, accuracy=0.5),
    ]
    text = summary_markdown(records)
    lines = text.splitlines()
    assert "| env | random | ppo |" in lines
    assert "| Copy-v0 | 0.200 ± 0.100 | **0.700 ± 0.200** |" in lines  # std over seeds: population std
    assert "| Reverse-v0 | 0.250 | — |" in lines
    assert "| Copy-v0 | ppo | 2 | 0.700 ± 0.200 | accuracy 0.80 | 4.0 | 100 | 0s |" in lines
    assert "2 seeds, 10 episodes each" in text


def test_mean_curve_interpolates_seeds_on_common_steps():
    from lm_gym.bench.report import mean_curve

    a = [{"timesteps": 0.0, "reward": 0.0}, {"timesteps": 100.0, "reward": 1.0}]
    b = [{"timesteps": 0.0, "reward": 1.0}, {"timesteps": 50.0, "reward": 1.0}, {"timesteps": 120.0, "reward": math.nan}]
    steps, mean, low, high = mean_curve([a, b], points=3)
    np.testing.assert_allclose(steps, [0, 25, 50])
    np.testing.assert_allclose(mean, [0.5, 0.625, 0.75])
    np.testing.assert_allclose(low, [0.0, 0.25, 0.5])
    np.testing.assert_allclose(high, [1.0, 1.0, 1.0])


def test_smooth_is_a_trailing_moving_average():
    from lm_gym.bench.report import smooth

    np.testing.assert_allclose(smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(smooth(np.array([1.0, 3.0, 5.0]), 1), [1.0, 3.0, 5.0])


def test_plots_without_matplotlib_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(error.DependencyNotInstalled, match=r"pip install 'lm-gym\[plot\]'"):
        bench.plot_results([record(COPY, "random", 0, 0.1)], tmp_path)


def test_report_rejects_a_missing_directory(tmp_path):
    with pytest.raises(error.InvalidArgument, match="does not exist"):
        bench.load_results(tmp_path / "nope")


def test_harness_trains_registered_learners_when_present(tmp_path):
    """The real learners run through agents.make; skipped until they are installed."""
    try:
        agents.agent_class("ppo")
    except ImportError:
        pytest.skip("agents.ppo has not landed")
    config = bench.BenchConfig(envs=[COPY], agents=["ppo"], seeds=1, budget=256, eval_episodes=8, plots=False)
    (result,) = bench.run_bench(config, tmp_path, progress=False)
    assert result.status == "done", result.error
    assert result.eval["trained"] is True and result.eval["num_timesteps"] >= 256
    rows = list(csv.DictReader(open(tmp_path / result.cell.key / "curve.csv")))
    assert rows and {"timesteps", "reward", "accuracy"} <= set(rows[0])


def test_a_resumed_cell_keeps_its_curve_up_to_the_checkpoint(tmp_path):
    from lm_gym.bench.runner import CurveWriter, clear_cell

    first = CurveWriter(tmp_path)
    for step in (100, 200, 300):  # killed after 300; its checkpoint was at 200
        first.write(step, {"rollout/ep_rew_mean": step / 1000})
    clear_cell(tmp_path, keep_curves=True)
    resumed = CurveWriter(tmp_path, resume=True)
    resumed.write(300, {"rollout/ep_rew_mean": 0.9})  # the first update after the checkpoint
    rows = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert [int(r["timesteps"]) for r in rows] == [100, 200, 300]
    assert float(rows[-1]["reward"]) == 0.9
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["timesteps"] for ln in lines] == [100, 200, 300]
    clear_cell(tmp_path)
    assert not (tmp_path / "curve.csv").exists()


def test_benchmark_evaluation_uses_the_held_out_prompts(tmp_path):
    import lm_gym
    from lm_gym.bench.config import Cell
    from lm_gym.bench.runner import run_cell

    env_id = "lm_gym/SentimentContinuation-v0"
    cell = Cell(env_id=env_id, agent="random", seed=0, budget=1, time_budget=None, eval_episodes=8,
                eval_seed=0, agent_kwargs={}, env_kwargs={"max_new_tokens": 2}, save_agent=False)
    assert run_cell(cell, tmp_path).status == "done"
    seen = {json.loads(line)["prompt"] for line in (tmp_path / cell.key / "samples.jsonl").open()}
    test = {row["prompt"] for row in lm_gym.prompt_dataset(env_id, split="test")}
    train = {row["prompt"] for row in lm_gym.prompt_dataset(env_id, split="train")}
    assert seen and seen <= test and not seen & train


def test_the_bench_bar_moves_with_the_running_cells_curves(tmp_path):
    import io

    from tqdm.auto import tqdm

    from lm_gym.bench.config import Cell
    from lm_gym.bench.runner import CellWatch, cell_dir

    steps = Cell("lm_gym/KeywordToy-v0", "ppo", 0, budget=1000)
    timed = Cell("lm_gym/SentimentContinuation-v0", "grpo", 1, budget=10**9, time_budget=100.0)
    waiting = Cell("lm_gym/KeywordToy-v0", "ppo", 2, budget=1000)
    for cell, row in ((steps, "250,3.0,0.1"), (timed, "640,50.0,0.2")):
        cell_dir(tmp_path, cell).mkdir(parents=True)
        (cell_dir(tmp_path, cell) / "curve.csv").write_text(f"timesteps,time_s,reward\n{row}\n")
    bar = tqdm(total=3, file=io.StringIO(), bar_format="{desc} {n:.2f}")
    watch = CellWatch(bar, tmp_path, [steps, timed, waiting])
    try:
        watch._show()
        assert bar.n == pytest.approx(0.25 + 0.5)  # a quarter of the steps, half of the seconds
        assert bar.desc == "bench: training ppo on KeywordToy-v0 seed 0, grpo on SentimentContinuation-v0 seed 1"
        watch.finished(steps)
        assert bar.n == pytest.approx(1 + 0.5)
    finally:
        watch.stop()
