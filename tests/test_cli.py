"""The lm-gym command line: every command with a tiny budget, and the dataclass -> flags helper."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

import gymnasium as gym
import pytest

import agents
import lm_gym
from lm_gym import bench, error
from lm_gym.cli import (
    add_dataclass_arguments,
    build_parser,
    config_class,
    dataclass_overrides,
    field_docs,
    main,
)

TESTS = Path(__file__).resolve().parent
COPY = "lm_gym/Copy-v0"
TINY = "test_bench:TinyLearner"


# -- dataclass -> argparse -------------------------------------------------------------------


class Mode(Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass
class DummyConfig:
    """A config with one field of every supported kind."""

    steps: int
    """How many steps (required: no default)."""
    learning_rate: float = 3e-4
    """The Adam learning rate."""
    name: str = "x"
    """A name; 100% free text."""
    whiten: bool = True
    """Whiten the advantages
    across the batch (two docstring lines become one)."""
    target_kl: float | None = None
    """Stop the epoch early past this KL (none: never)."""
    sampler: Literal["top_k", "top_p"] = "top_k"
    """How to sample."""
    mode: Mode = Mode.FAST
    """An enum."""
    widths: list[int] = field(default_factory=lambda: [64, 64])
    """Layer widths."""
    weights: dict[str, float] = field(default_factory=dict)
    """Per-component weights."""
    undocumented: int = 0


@dataclass
class ChildConfig(DummyConfig):
    extra: int = 1
    """A field of the subclass."""


def parser_for(cls: type, **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, cls, **kw)
    return p


def test_field_docs_reads_attribute_docstrings_including_bases():
    docs = field_docs(ChildConfig)
    assert docs["learning_rate"] == "The Adam learning rate."
    assert docs["whiten"] == "Whiten the advantages across the batch (two docstring lines become one)."
    assert docs["extra"] == "A field of the subclass."
    assert "undocumented" not in docs


def test_dataclass_flags_types_defaults_and_help():
    p = parser_for(DummyConfig)
    args = p.parse_args([
        "--steps", "5", "--learning-rate", "1e-3", "--no-whiten", "--target-kl", "0.02", "--sampler", "top_p",
        "--mode", "SLOW", "--widths", "32,16", "--weights", "{fluency: 0.5}", "--name", "y",
    ])
    assert DummyConfig(**dataclass_overrides(DummyConfig, args)) == DummyConfig(
        steps=5, learning_rate=1e-3, name="y", whiten=False, target_kl=0.02, sampler="top_p", mode=Mode.SLOW,
        widths=[32, 16], weights={"fluency": 0.5},
    )
    # unset flags stay unset, so the dataclass's own defaults apply
    assert dataclass_overrides(DummyConfig, p.parse_args(["--steps", "1"])) == {"steps": 1}
    assert p.parse_args(["--steps", "1", "--target-kl", "none"]).target_kl is None
    text = p.format_help()
    assert "--learning-rate FLOAT" in text and "The Adam learning rate. (default: 0.0003)" in text
    assert "--whiten, --no-whiten" in text and "100% free text" in text
    assert "{top_k,top_p}" in text and "INT[,...]" in text


def test_dataclass_flags_reject_bad_values(capsys):
    p = parser_for(DummyConfig)
    for argv, message in [
        ([], "the following arguments are required: --steps"),
        (["--steps", "two"], "argument --steps: invalid int value: 'two'"),
        (["--steps", "1", "--sampler", "greedy"], "invalid choice: 'greedy'"),
    ]:
        with pytest.raises(SystemExit):
            p.parse_args(argv)
        assert message in capsys.readouterr().err
    with pytest.raises(error.InvalidArgument, match="needs a dataclass type"):
        add_dataclass_arguments(argparse.ArgumentParser(), dict)


def test_config_class_is_found_by_attribute_annotation_or_name():
    class ByAttribute:
        config_class = DummyConfig

    class ByAnnotation:
        def __init__(self, env, config: DummyConfig | None = None): ...

    assert config_class(ByAttribute) is DummyConfig
    assert config_class(ByAnnotation) is DummyConfig
    assert config_class(agents.RandomAgent).__name__ == "RandomAgentConfig"


# -- the commands -----------------------------------------------------------------------------


@pytest.fixture
def tiny_agent(monkeypatch):
    """TinyLearner (tests/test_bench.py) registered as agent "tiny"."""
    import test_bench

    monkeypatch.setitem(agents.AGENTS, "tiny", TINY)
    return test_bench.TinyLearner


def test_list_shows_all_nine_ids(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for env_id in bench.config.TOY_ENVS + bench.config.TEXT_ENVS:
        assert env_id in out
    assert len(out.splitlines()) >= 9


def test_console_script_runs():
    exe = shutil.which("lm-gym") or pytest.skip("lm-gym console script not on PATH")
    out = subprocess.run([exe, "list"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "lm_gym/KeywordStory-v0" in out


@pytest.mark.parametrize("command", ["list", "train", "eval", "bench", "quickstart", "pretrain", "play"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: lm-gym {command}" in capsys.readouterr().out


def test_train_flags_come_from_the_agents_config(tiny_agent, capsys):
    with pytest.raises(SystemExit):
        main(["train", COPY, "--agent", "tiny", "--help"])
    out = capsys.readouterr().out
    assert "tiny config (TinyConfig" in out
    assert "--sleep FLOAT" in out and "Seconds to sleep per update" in out and "--log-every INT" in out


def test_train_then_eval(tiny_agent, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", COPY, "--agent", "tiny", "--timesteps", "128", "--seed", "3", "--log-every", "16",
            "--eval-episodes", "8", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| mean_reward |" in text and "| num_timesteps | 128 |" in text and f"saved the agent to {out / 'agent'}" in text
    saved = json.loads((out / "agent" / "agent.json").read_text())
    assert saved["agent"] == "tiny" and saved["config"]["log_every"] == 16 and saved["config"]["seed"] == 3
    rows = (out / "curve.csv").read_text().splitlines()
    assert rows[0] == "timesteps,time_s,reward,accuracy,length,exact" and rows[-1].startswith("128,") and len(rows) >= 5
    assert json.loads((out / "config.json").read_text())["cell"]["agent_kwargs"] == {"log_every": 16}
    assert (out / "done").is_file() and (out / "bench.log").is_file()

    assert main(["eval", str(out), COPY, "--episodes", "8", "--json", str(tmp_path / "m.json")]) == 0
    text = capsys.readouterr().out
    assert f"tiny on {COPY}, 8 episodes" in text and "| reward/accuracy |" in text
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_episodes"] == 8 and 0.0 <= metrics["mean_reward"] <= 1.0
    assert main(["eval", str(out / "agent"), "--episodes", "4"]) == 0  # the env defaults to the saved one


def test_eval_defaults_to_the_saved_env_kwargs(tiny_agent, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", COPY, "--agent", "tiny", "--timesteps", "64", "-e", "min_length=8", "-e", "max_length=8",
            "--eval-episodes", "4", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert json.loads((out / "agent" / "agent.json").read_text())["config"]["env_kwargs"] == {"min_length": 8, "max_length": 8}
    capsys.readouterr()
    # Length-8 strings: prompts of 9 tokens, so the window is at least that wide.
    assert main(["eval", str(out), "--episodes", "4", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["mean_ep_length"] > 5  # the default Copy budget is 5
    # Flags override the saved settings one by one; another env id starts from its defaults.
    assert main(["eval", str(out), "-e", "max_new_tokens=2", "--episodes", "4", "--json", str(tmp_path / "m2.json")]) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["mean_ep_length"] <= 2


def test_train_rejects_bad_config_and_eval_a_non_agent_dir(tiny_agent, tmp_path, capsys):
    assert main(["train", COPY, "--agent", "nope", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "Unknown agent 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything ran
    assert main(["eval", str(tmp_path)]) == 2
    assert "holds no saved agent" in capsys.readouterr().err


def bench_argv(out: Path, *extra: str) -> list[str]:
    return ["bench", "--envs", COPY, "--agents", "random", "--seeds", "2", "--budget", "64",
            "--eval-episodes", "8", "--out", str(out), "--no-progress", *extra]


def test_bench_flags(tmp_path, capsys):
    assert main(bench_argv(tmp_path, "--no-plots")) == 0
    out = capsys.readouterr().out
    assert "| env | random |" in out and "| Copy-v0 |" in out and "2 cells in" in out
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert (saved["envs"], saved["agents"], saved["seeds"], saved["budget"], saved["plots"]) == ([COPY], ["random"], 2, 64, False)
    assert sorted(p.parent.name for p in tmp_path.rglob("done")) == ["seed0", "seed1"]
    assert not (tmp_path / "final_reward.png").exists()


def test_bench_from_yaml_with_flag_overrides(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text(f"envs: [{COPY}, lm_gym/Parentheses-v0]\nagents: [random]\nseeds: 1\neval_episodes: 4\n")
    out = tmp_path / "res"
    assert main(["bench", str(config), "--seeds", "[5]", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| Parentheses-v0 |" in text and f"plots: {out / 'learning_curves.png'}" in text
    assert sorted(p.parent.name for p in out.rglob("done")) == ["seed5", "seed5"]
    assert (out / "final_reward.png").is_file()


def test_bench_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(bench_argv(tmp_path, "--workers", "0")) == 2
    assert "workers must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_killed_bench_reruns_only_missing_cells(tmp_path, capsys):
    """Kill `lm-gym bench` after its first cell, rerun the same command: only the cells
    without a done marker run again, and the grid completes."""
    config = tmp_path / "grid.yaml"
    config.write_text(
        f"envs: [{COPY}]\nagents: ['{TINY}']\nseeds: 4\nbudget: 128\neval_episodes: 4\nplots: false\n"
        f"agent_kwargs: {{'{TINY}': {{sleep: 0.25}}}}\n"
    )
    out = tmp_path / "res"
    argv = ["bench", str(config), "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "lm_gym.cli", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(out.rglob("done")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no cell finished within 60 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    cells = [c.key for c in bench.load_config(config).cells()]
    finished = {c for c in cells if (out / c / "done").is_file()}
    assert 1 <= len(finished) < 4
    mtimes = {c: (out / c / "eval.json").stat().st_mtime_ns for c in finished}
    first_run_starts = len((out / "bench.log").read_text().splitlines())

    assert main(argv) == 0
    rerun = [line.split()[2] for line in (out / "bench.log").read_text().splitlines()[first_run_starts:] if line.split()[1] == "start"]
    assert rerun == [c for c in cells if c not in finished]
    assert all((out / c / "done").is_file() for c in cells)
    assert {c: (out / c / "eval.json").stat().st_mtime_ns for c in finished} == mtimes
    assert "4 cells in" in capsys.readouterr().out


def test_quickstart_runs_its_bench_preset(tmp_path, monkeypatch, capsys):
    real = bench.preset("quickstart")
    assert set(real.agents) == {"random", "model", "ppo"}
    assert real.envs == ["lm_gym/KeywordToy-v0", "lm_gym/SentimentContinuation-v0"]
    assert build_parser().parse_args(["quickstart"]).out == "runs/quickstart"
    # the same code path with a grid that runs in a second
    monkeypatch.setitem(bench.PRESETS, "quickstart", dict(envs=[COPY], agents=["random"], seeds=1, budget=64, eval_episodes=4))
    assert main(["quickstart", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "PPO vs the random and zero-shot (model) baselines" in out and "| Copy-v0 |" in out
    assert (tmp_path / "learning_curves.png").is_file() and (tmp_path / "results.md").is_file()


def test_pretrain_quick(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path), "--quick", "--steps", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| test_ppl |" in out and "| steps | 5 |" in out
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()


def copy_target(seed: int) -> str:
    env = gym.make(COPY)
    env.reset(seed=seed)
    return env.unwrapped.prompt.rstrip("=")


def play(monkeypatch, capsys, argv: list[str], stdin: str) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["play", *argv]) == 0
    return capsys.readouterr().out


def test_play_token_by_token_from_stdin(monkeypatch, capsys):
    target = copy_target(0)
    lines = "\n".join(target) + "\n\n"  # one token a line, then an empty line for EOS
    out = play(monkeypatch, capsys, [COPY, "--seed", "0", "--episodes", "1"], lines)
    assert f"prompt: '{target}='" in out
    assert f"  {target}=[{target[:2]}]  (2/" in out
    assert f"completion: '{target}' (ended by EOS)" in out
    assert "reward 1.000  [accuracy 1.000, length 1.000, exact 1.000]" in out


def test_play_whole_completions_errors_and_commands(monkeypatch, capsys):
    target = copy_target(1)
    out = play(monkeypatch, capsys, [COPY, "--seed", "1", "--whole"], f"/tokens\nxyz\n{target[:-1]}\n/quit\n")
    assert "<eos> 'a' 'b' 'c' 'd'\n" in out
    assert "Token 'x' is not in this vocabulary" in out
    assert f"completion: '{target[:-1]}' (ended by EOS)" in out and "exact 0.000" in out
    assert "episode 2" in out  # /quit ended the session in the second episode


def test_play_a_text_task_with_env_kwargs(monkeypatch, capsys):
    out = play(monkeypatch, capsys, ["lm_gym/Continuation-v0", "--seed", "0", "-e", "max_new_tokens=4", "--episodes", "1"],
               "the happy dog and the cat ran home\n")
    assert "(up to 4 tokens)" in out and "the token budget ran out" in out and "(ended by token budget)" in out
    assert "[fluency " in out and "relevance " in out and "diversity " in out


def test_lm_gym_import_stays_light():
    code = "import sys, lm_gym, lm_gym.cli, lm_gym.bench; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    assert lm_gym.list_envs()


# -- every error: one line, exit code 2 ------------------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)`` in-process: its exit code (argparse's SystemExit included) and stderr."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture
def bad_paths(tmp_path):
    """A file where a folder is expected, a YAML file with a syntax error, a folder holding
    a non-agent, and a finished train run."""
    paths = {"file": tmp_path / "a_file", "yaml": tmp_path / "broken.yaml", "empty": tmp_path / "empty"}
    paths["file"].write_text("x")
    paths["yaml"].write_text("envs: [lm_gym/Copy-v0\nagents: random\n")
    paths["empty"].mkdir()
    return paths


NONSENSE = [
    # (argv, what the one line must name); {file}, {yaml}, {empty} are bad_paths
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["list", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "lm_gym/Cpy-v0"], "Unknown env id 'lm_gym/Cpy-v0'. Did you mean 'lm_gym/Copy-v0'?"),
    (["train", COPY, "--agent", "ppp"], "Unknown agent 'ppp'. Did you mean 'ppo'?"),
    (["train", COPY, "--timesteps", "-5"], "argument --timesteps: must be a positive integer, got '-5'"),
    (["train", COPY, "--timesteps", "lots"], "argument --timesteps: must be a positive integer, got 'lots'"),
    (["train", COPY, "--out", "{file}"], "--out '{file}' is a file, not a folder"),
    (["train", COPY, "-e", "max_new_tokens"], "--env-kwarg takes KEY=VALUE, got 'max_new_tokens'"),
    (["train", COPY, "-e", "colour=red"], "Unknown keyword argument 'colour'"),
    (["train", COPY, "-e", "max_new_tokens=[1"], "--env-kwarg 'max_new_tokens=[1': not a YAML/JSON value"),
    (["train", COPY, "--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
    (["train", COPY, "--learning-rate", "fast"], "argument --learning-rate: invalid float value: 'fast'"),
    (["eval", "{empty}"], "'{empty}' holds no saved agent"),
    (["eval", "{empty}", "--json", "{empty}/missing/m.json"], "the folder '{empty}/missing' does not exist"),
    (["eval", "{empty}", "--episodes", "0"], "argument --episodes: must be a positive integer, got '0'"),
    (["bench", "{yaml}"], "'{yaml}' is not valid YAML at line 2"),
    (["bench", "{file}.yaml"], "bench config file '{file}.yaml' does not exist"),
    (["bench", "--envs", "lm_gym/Nope-v0", "--agents", "random"], "Unknown env id 'lm_gym/Nope-v0'"),
    (["bench", "--envs", COPY, "--agents", "random,rnadom"], "Unknown agent 'rnadom'. Did you mean 'random'?"),
    (["bench", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["bench", "--preset", "smoke", "--out", "{file}"], "--out '{file}' is a file, not a folder"),
    (["quickstart", "--budget", "0"], "argument --budget: must be a positive integer, got '0'"),
    (["quickstart", "--workers", "-1"], "argument --workers: must be a positive integer, got '-1'"),
    (["quickstart", "--out", "{file}"], "--out '{file}' is a file, not a folder"),
    (["pretrain", "--out", "{file}", "--quick"], "--out '{file}' is a file, not a folder"),
    (["pretrain", "--out", "{empty}", "--steps", "-1"], "argument --steps: must be a positive integer, got '-1'"),
    (["pretrain", "--out", "{empty}", "--quick", "--keyword-lists", "1.5"],
     "keyword_lists must be a fraction in [0, 1], got 1.5"),
    (["pretrain", "--out", "{empty}", "--classifier", "--keyword-lists", "0.5"],
     "--keyword-lists is an LM pretraining option; drop it or --classifier"),
    (["play", "lm_gym/Copy-v9"], "Unknown env id 'lm_gym/Copy-v9'. Did you mean 'lm_gym/Copy-v0'?"),
    (["play", COPY, "--episodes", "-1"], "argument --episodes: must be a positive integer, got '-1'"),
    (["play", COPY, "-e", "max_new_tokens=0"], "max_new_tokens must be in [1, inf], got 0"),
]


@pytest.mark.parametrize("argv, message", NONSENSE, ids=[" ".join(a) for a, _ in NONSENSE])
def test_every_cli_error_is_one_line_with_exit_code_2(argv, message, bad_paths, capsys, monkeypatch):
    monkeypatch.setattr(agents, "evaluate", lambda *a, **k: pytest.fail("evaluated before the input was checked"))
    fill = {k: str(v) for k, v in bad_paths.items()}
    argv = [a.format(**fill) for a in argv]
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    assert err.startswith((f"lm-gym {argv[0]}: error: ", "lm-gym: error: ")), err
    assert message.format(**fill) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, err = run_cli(["train", COPY, "--out", str(locked / "run")], capsys)
    assert code == 2 and f"--out '{locked / 'run'}' cannot be written: '{locked}' is read-only" in err


def test_check_out_dir_refuses_a_read_only_folder(tmp_path, monkeypatch):
    from lm_gym.cli import check_out_dir

    assert check_out_dir(tmp_path / "run") == tmp_path / "run"
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # as if read-only
    with pytest.raises(error.InvalidArgument, match=f"--out '{tmp_path / 'run'}' cannot be written: '{tmp_path}' is read-only"):
        check_out_dir(tmp_path / "run")


def test_bench_checks_the_whole_grid_before_the_first_cell(tmp_path, capsys):
    code, err = run_cli(bench_argv(tmp_path, "--agents", "random,nope"), capsys)
    assert code == 2 and "Unknown agent 'nope'" in err
    assert not (tmp_path / "bench.log").exists() and not list(tmp_path.rglob("done"))


def test_train_has_the_default_agents_config_flags(capsys):
    """--agent defaults to ppo, and so do the config flags (the agent class's config_class)."""
    from lm_gym.bench.runner import resolve_agent

    with pytest.raises(SystemExit):
        main(["train", COPY, "--help"])
    out = capsys.readouterr().out
    cls = config_class(resolve_agent("ppo"))
    assert f"ppo config ({cls.__name__}" in out and "--learning-rate FLOAT" in out
    parsed = build_parser(["train", COPY, "--learning-rate", "0.01"]).parse_args(["train", COPY, "--learning-rate", "0.01"])
    assert parsed.agent == "ppo" and parsed.config_cls is cls and "learning_rate" in parsed.config_fields


class ResumeRecorder:
    """TinyLearner that records what learn() was asked."""

    calls: list = []

    def __new__(cls, *args, **kwargs):
        import test_bench

        agent = test_bench.TinyLearner(*args, **kwargs)
        learn = agent.learn

        def recording(total_timesteps, callback=None, progress_bar=False, **kw):
            ResumeRecorder.calls.append(kw)
            return learn(total_timesteps, callback, progress_bar, **kw)

        agent.learn = recording
        return agent


def test_a_rerun_into_a_run_folder_resumes_or_overwrites_never_mixes(tiny_agent, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ResumeRecorder, "calls", [])
    monkeypatch.setitem(agents.AGENTS, "rec", "test_cli:ResumeRecorder")
    out = tmp_path / "run"
    argv = ["train", COPY, "--agent", "rec", "--timesteps", "32", "--eval-episodes", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    code, err = run_cli(argv, capsys)  # the same command again
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--out '{out}' already holds a run" in err and "pass --resume to continue it, --overwrite" in err
    assert ResumeRecorder.calls == [{}]
    assert main([*argv, "--resume"]) == 0
    assert ResumeRecorder.calls == [{}, {"resume": True}]
    (out / "stale.txt").write_text("from the first run")
    assert main([*argv, "--overwrite"]) == 0
    assert ResumeRecorder.calls == [{}, {"resume": True}, {}]
    assert not (out / "stale.txt").exists() and (out / "done").is_file()
    # --overwrite never clears a folder that is not a run
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_text("meow")
    code, err = run_cli([*argv[:-3], "--out", str(other), "--overwrite", "--no-progress"], capsys)
    assert code == 2 and "is not an lm-gym run folder; not clearing it" in err and (other / "cat.jpg").exists()


def test_eval_json_into_a_missing_folder_fails_before_evaluating(tiny_agent, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", COPY, "--agent", "tiny", "--timesteps", "32", "--eval-episodes", "2", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(agents, "evaluate", lambda *a, **k: pytest.fail("evaluated before --json was checked"))
    code, err = run_cli(["eval", str(out), "--json", str(tmp_path / "nope" / "m.json")], capsys)
    assert code == 2 and f"the folder '{tmp_path / 'nope'}' does not exist" in err


def test_pretrain_classifier_quick_loads_as_a_reward_model(tmp_path, capsys):
    from lm_gym.rewards import RewardModel

    assert main(["pretrain", "--classifier", "--out", str(tmp_path), "--quick", "--steps", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "saved the classifier to" in out and "RewardModel(" in out
    scores = RewardModel(str(tmp_path), label=0)(["a"], ["the sun was warm and bright"])
    assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0
