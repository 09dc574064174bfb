"""Data-parallel learners (agents.distributed): two gloo ranks launched by torchrun train PPO
through ``lm-gym train`` and REINFORCE through the Python API; a single process never
touches torch.distributed. The torchrun tests take ~15 s each (two fresh interpreters)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from agents import distributed
from agents.ppo import PPO
from lm_gym.error import InvalidArgument

ROOT = Path(__file__).resolve().parents[1]
COPY_SMALL = ["-e", "alphabet_size=2", "-e", "min_length=2", "-e", "max_length=2"]
TINY_MODEL = "{n_layer: 1, n_embd: 16, n_head: 2}"
DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["OMP_NUM_THREADS"] = "1"
    # --standalone: a local rendezvous on a port torchrun picks itself (no port races)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_torchrun_ppo_ranks_stay_identical_count_all_steps_and_write_once(tmp_path):
    out, run = tmp_path / "out", tmp_path / "run"
    # target_kl so small that epochs stop early: the ranks must agree on it or deadlock
    proc = torchrun(
        ["-m", "lm_gym.cli", "train", "lm_gym/Copy-v0", "--agent", "ppo", "--timesteps", "150",
         "--n-envs", "4", "--batch-size", "4", "--minibatch-size", "2", "--n-epochs", "2",
         "--target-kl", "1e-5", "--toy-model", TINY_MODEL, *COPY_SMALL, "--run-dir", str(run),
         "--checkpoint-every", "1", "--eval-episodes", "9", "--out", str(out), "--no-progress"],
        ROOT,
    )
    assert proc.stdout.count("| mean_reward |") == 1  # only rank 0 reports

    info = json.loads((out / distributed.DIST_FILE).read_text())
    assert info["world_size"] == 2 and info["backend"] == "gloo"
    digests = info["rank_param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["num_timesteps"] == info["num_timesteps"] == sum(info["rank_env_steps"]) >= 150
    assert evaluation["n_episodes"] == 9  # 5 + 4 episodes gathered from the two ranks
    assert len((out / "samples.jsonl").read_text().splitlines()) == 9

    # one writer: a single start line, one progress row per update, one set of checkpoints
    log = (out / "bench.log").read_text()
    assert log.count(" start ") == 1 and log.count(" done ") == 1
    with open(run / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    steps = [float(r["time/total_timesteps"]) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == info["num_timesteps"]
    stopped = {float(r["train/stopped_early"]) for r in rows}
    assert stopped <= {0.0, 1.0} and 1.0 in stopped  # a mean over ranks that agreed
    saved = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob("agent.json"))
    n = len(rows)
    assert saved == ["out/agent", f"run/checkpoints/update_{n - 1:07d}", f"run/checkpoints/update_{n:07d}"]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith((".tmp-", ".old-"))]
    with open(out / "curve.csv") as f:
        assert [int(r["timesteps"]) for r in csv.DictReader(f)] == [int(s) for s in steps]


SCRIPT = """
import json, os, sys
import agents
from agents.distributed import param_digest

config = dict(n_envs=4, batch_size=4, seed=3, toy_model={"n_layer": 1, "n_embd": 16, "n_head": 2},
              env_kwargs={"alphabet_size": 2, "min_length": 2, "max_length": 2},
              run_dir=os.path.join(sys.argv[1], "run"), checkpoint_every=2)
first = agents.Reinforce("lm_gym/Copy-v0", **config).learn(60).num_timesteps
# a second agent resumes from rank 0's last checkpoint (read by every rank), trains to 120 steps
agent = agents.Reinforce("lm_gym/Copy-v0", **config)
agent.learn(120, resume=True)
result = agents.evaluate(agent, "lm_gym/Copy-v0", n_episodes=6, seed=0,
                                     alphabet_size=2, min_length=2, max_length=2)
rank = agent.dist.rank
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"digest": param_digest(agent.policy), "num_timesteps": agent.num_timesteps,
               "local": agent.dist.local_env_steps, "draw": int(agent.rng.integers(1 << 40)),
               "updates": agent.n_updates, "first": first,
               "mean_reward": result["mean_reward"], "n_episodes": result["n_episodes"]}, f)
"""


def test_torchrun_reinforce_through_the_python_api_and_resume(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    torchrun([str(script), str(tmp_path)], ROOT)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["digest"] == r1["digest"]
    # both ranks resumed from the first run's last checkpoint; what they trained after it sums up
    assert r0["num_timesteps"] == r1["num_timesteps"] >= 120 > r0["first"] == r1["first"] >= 60
    assert r0["num_timesteps"] - r0["first"] == r0["local"] + r1["local"]
    assert r0["updates"] == r1["updates"]
    assert r0["draw"] != r1["draw"]  # each rank has its own RNG stream (own prompts)
    assert r0["mean_reward"] == r1["mean_reward"] and r0["n_episodes"] == r1["n_episodes"] == 6


def test_a_single_process_makes_no_collective_call(monkeypatch):
    for var in DIST_VARS:
        monkeypatch.delenv(var, raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("a single process called torch.distributed")

    for name in ("all_reduce", "broadcast", "all_gather_object", "broadcast_object_list", "init_process_group"):
        monkeypatch.setattr(torch.distributed, name, forbidden)
    agent = PPO("lm_gym/Copy-v0", n_envs=4, batch_size=4, seed=0, target_kl=1e-5,
                toy_model={"n_layer": 1, "n_embd": 16, "n_head": 2},
                env_kwargs={"alphabet_size": 2, "min_length": 2, "max_length": 2})
    agent.learn(40)
    assert agent.dist is None and not torch.distributed.is_initialized()
    assert agent.num_timesteps >= 40


def test_seeds_backends_and_the_environment(monkeypatch):
    assert distributed.rank_seed(7, 0) == 7
    assert distributed.rank_seed(7, 1) == distributed.rank_seed(7, 1) != distributed.rank_seed(7, 2)
    assert distributed.rank_seed(7, 1) not in (7, 8)
    assert distributed.resolve_backend("cpu") == ("gloo", torch.device("cpu"))
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.resolve_backend("cuda") == ("nccl", torch.device("cuda", 3))
    assert distributed.resolve_backend("cuda:1") == ("nccl", torch.device("cuda", 1))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and distributed.setup("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InvalidArgument, match="WORLD_SIZE='two'"):
        distributed.launched()



class MinOverRanks:
    """A stand-in for the torchrun context: another rank kept only ``other`` completions."""

    def __init__(self, other: int) -> None:
        self.other, self.asked = other, []

    def min(self, value: float) -> float:
        self.asked.append(value)
        return min(value, self.other)


def test_dapo_under_torchrun_keeps_the_smallest_batch_any_rank_kept():
    # one sampling round: a rank keeps however many informative groups its prompts gave, and
    # every rank must take the same number of minibatch steps (one gradient all-reduce each),
    # or they abort in a mismatched all-reduce (reproduced with two gloo ranks before the fix)
    from agents.dapo import DAPO

    agent = DAPO("lm_gym/Copy-v0", n_envs=8, batch_size=8, samples_per_prompt=2, minibatch_size=2,
                 max_sampling_rounds=1, seed=5, toy_model={"n_layer": 1, "n_embd": 16, "n_head": 2},
                 env_kwargs={"alphabet_size": 2, "min_length": 2, "max_length": 3})
    agent.dist = MinOverRanks(other=2)
    batch = agent.rollout()
    assert agent.dist.asked and agent.dist.asked[0] % 2 == 0 and agent.dist.asked[0] >= 2
    assert len(batch) == 2 and batch.group_size == 2  # cut to the other rank's size, whole groups
    agent.dist = MinOverRanks(other=8)  # the other rank kept more: this rank's own size stands
    assert len(agent.rollout()) == agent.dist.asked[0]
