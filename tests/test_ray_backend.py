"""The Ray bench backend (lm_gym.bench.ray_backend): a 2 x 2 grid on a local Ray instance
writes the local backend's results directory and resumes the same way; without Ray the
backend names the extra. The Ray tests skip when ray is not installed (the [ray] extra)."""

from __future__ import annotations

import builtins
import re
import sys

import pytest

from lm_gym import bench, error
from lm_gym.cli import main

COPY = "lm_gym/Copy-v0"
TINY = {"n_layer": 1, "n_embd": 16, "n_head": 2}


def grid(**kw):
    config = dict(
        envs=[COPY], agents=["random", "reinforce"], seeds=2, budget=64, eval_episodes=8, plots=False,
        env_kwargs={COPY: {"alphabet_size": 2, "min_length": 2, "max_length": 2}},
        agent_kwargs={"reinforce": {"n_envs": 4, "batch_size": 4, "toy_model": TINY}},
    )
    config.update(kw)
    return bench.BenchConfig(**config)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def files_of(out):
    """Every cell's file names, by cell directory."""
    return {
        str(d.relative_to(out)): sorted(p.name for p in d.iterdir())
        for d in sorted(out.glob("*/*/seed*"))
    }


def without_times(markdown: str) -> str:
    return re.sub(r"\| \d+s \|", "| Ns |", markdown)


def test_ray_grid_writes_the_local_backends_results_and_resumes(ray_local, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    local_results = bench.run_bench(grid(), local, progress=False)
    results = bench.run_bench(grid(backend="ray"), remote, progress=False)
    assert [r.status for r in results] == ["done"] * 4
    assert [(r.cell.agent, r.cell.seed) for r in results] == [(r.cell.agent, r.cell.seed) for r in local_results]

    # the same cells, the same files in each, the same table (the cells are seeded alike)
    assert files_of(remote) == files_of(local) and len(files_of(remote)) == 4
    assert "curve.csv" in files_of(remote)["lm_gym__Copy-v0/reinforce/seed1"]
    assert without_times((remote / "results.md").read_text()) == without_times((local / "results.md").read_text())
    ray_records, local_records = bench.load_results(remote), bench.load_results(local)
    assert [(r.agent, r.seed, r.eval["mean_reward"]) for r in ray_records] == [
        (r.agent, r.seed, r.eval["mean_reward"]) for r in local_records
    ]
    log = (remote / "bench.log").read_text()
    assert log.count(" start ") == 4 and log.count(" done ") == 4

    # rerunning runs nothing: every cell is cached and untouched
    stamps = {p: p.stat().st_mtime_ns for p in remote.rglob("done")}
    again = bench.run_bench(grid(backend="ray"), remote, progress=False)
    assert [r.status for r in again] == ["cached"] * 4
    assert {p: p.stat().st_mtime_ns for p in remote.rglob("done")} == stamps
    assert (remote / "bench.log").read_text() == log

    # a cell without its done marker (interrupted) is the only one rerun, via the CLI
    (remote / "lm_gym__Copy-v0/reinforce/seed0/done").unlink()
    argv = ["bench", "--envs", COPY, "--agents", "random,reinforce", "--seeds", "2", "--budget", "64",
            "--eval-episodes", "8", "--no-plots", "--backend", "ray", "--out", str(remote), "--no-progress",
            "--env-kwargs", "{lm_gym/Copy-v0: {alphabet_size: 2, min_length: 2, max_length: 2}}",
            "--agent-kwargs", "{reinforce: {n_envs: 4, batch_size: 4, toy_model: {n_layer: 1, n_embd: 16, n_head: 2}}}"]
    assert main(argv) == 0
    log2 = (remote / "bench.log").read_text()[len(log):]
    assert log2.count(" start ") == 1 and "start lm_gym__Copy-v0/reinforce/seed0" in log2
    assert files_of(remote) == files_of(local)


def test_a_failing_cell_is_reported_with_its_traceback(ray_local, tmp_path):
    config = grid(agents=["random"], seeds=1, agent_kwargs={"random": {"n_envs": 0}})
    results = bench.run_bench(config, tmp_path, backend="ray", progress=False)
    assert [r.status for r in results] == ["failed"]
    assert "n_envs must be a positive integer, got 0" in results[0].error
    cell = tmp_path / "lm_gym__Copy-v0/random/seed0"
    assert "Traceback" in (cell / "error.txt").read_text() and not (cell / "done").exists()


def test_ray_options_are_checked(ray_local, tmp_path, capsys):
    with pytest.raises(error.InvalidArgument, match="gpus_per_cell must be a number >= 0, got -1"):
        bench.get_backend("ray", gpus_per_cell=-1)
    argv = ["bench", "--envs", COPY, "--agents", "random", "--address", "auto", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--address and --gpus-per-cell apply to --backend ray, not 'local'" in capsys.readouterr().err


def test_without_ray_the_error_names_the_extra(monkeypatch, capsys, tmp_path):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    with pytest.raises(error.DependencyNotInstalled, match=r"pip install 'lm-gym\[ray\]'"):
        bench.get_backend("ray")
    argv = ["bench", "--envs", COPY, "--agents", "random", "--backend", "ray", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    assert "ray is required for the Ray bench backend" in capsys.readouterr().err
