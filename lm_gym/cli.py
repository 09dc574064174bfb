"""The ``lm-gym`` command line: ``list | train | eval | bench | quickstart | pretrain | play``.

``lm-gym COMMAND --help`` documents every command. ``train``'s config flags come from the
agent's config dataclass (``lm-gym train ENV --agent ppo --help`` lists them), ``bench``'s
from :class:`lm_gym.bench.BenchConfig`: each field becomes ``--field-name`` with the
field's docstring as its help, through :func:`add_dataclass_arguments`.

Every error a user can cause (a bad value, an unknown id or agent, a path that cannot be
read or written) is one line on stderr, ``lm-gym COMMAND: error: ...``, with exit code 2,
before any work starts. ``train --out DIR`` holds one run: a non-empty DIR needs
``--resume`` (continue from its checkpoints) or ``--overwrite`` (clear it).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import json
import logging
import os
import shutil
import sys
import textwrap
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_gym import error

logger = logging.getLogger(__name__)

# -- dataclass -> argparse ------------------------------------------------------------------


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass's fields (the string literal right after each
    field, as CleanRL and Sphinx write them), base classes included, one line each."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"not a YAML/JSON value: {text!r} ({e.__class__.__name__})") from None


def _converter(tp: Any) -> tuple[Any, dict[str, Any]]:
    """``(type callable, extra add_argument kwargs)`` for a field type, or ``(None, {})`` for
    a type parsed as a YAML value (dicts, unions, anything else)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):  # Optional[X]: "none" -> None
            inner, extra = _converter(rest[0])
            if inner is None or extra.get("action"):
                return None, {}

            def optional(text: str) -> Any:
                return None if text.lower() in ("none", "null") else inner(text)

            optional.__name__ = getattr(inner, "__name__", "value")
            return optional, {k: v for k, v in extra.items() if k != "choices"}
        return None, {}
    if tp is bool:
        return bool, {"action": argparse.BooleanOptionalAction}
    if tp in (int, float, str):
        return tp, {"metavar": tp.__name__.upper()}
    if origin is typing.Literal:
        return type(args[0]), {"choices": list(args)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return (lambda text: tp[text] if text in tp.__members__ else tp(text)), {"choices": list(tp), "metavar": "{" + ",".join(tp.__members__) + "}"}
    if origin in (list, tuple) and args and args[0] in (int, float, str) and (origin is list or args[-1] is Ellipsis or len(set(args)) == 1):
        item = args[0]

        def items(text: str) -> Any:
            values = [item(part.strip()) for part in text.split(",") if part.strip()]
            return tuple(values) if origin is tuple else values

        items.__name__ = f"comma-separated {item.__name__}s"
        return items, {"metavar": f"{item.__name__.upper()}[,...]"}
    return None, {}


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    exclude: Sequence[str] = (),
    suppress_defaults: bool = True,
) -> list[str]:
    """Add one ``--field-name`` option per field of dataclass ``cls``.

    Help text is the field's attribute docstring plus its default; types come from the
    annotations: ``bool`` becomes ``--x/--no-x``; ``int``/``float``/``str`` and
    ``Optional`` of them (``none`` gives None); ``Literal``/``Enum`` become choices;
    ``list[int]`` and friends take comma-separated values; anything else (dicts, unions)
    takes a YAML/JSON value. With ``suppress_defaults`` an option not given leaves no
    attribute on the namespace, so :func:`dataclass_overrides` returns only what the user set.

    Returns:
        The field names added.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise error.InvalidArgument(f"add_dataclass_arguments needs a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    added = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in exclude or f.name.startswith("_"):
            continue
        convert, extra = _converter(hints.get(f.name, str))
        default = _default_of(f)
        help_text = docs.get(f.name, "").replace("%", "%%")
        if default is not dataclasses.MISSING:
            help_text += f" (default: {default!r})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text.strip(), **extra}
        if convert is None:
            kwargs.update(type=_yaml_value, metavar="YAML")
        elif extra.get("action") is None:
            kwargs["type"] = convert
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = argparse.SUPPRESS if suppress_defaults else default
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
        added.append(f.name)
    return added


def dataclass_overrides(cls: type, namespace: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` present on ``namespace`` (those the user gave, when defaults
    are suppressed), as keyword arguments."""
    return {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}


def config_class(agent_cls: Any) -> type | None:
    """An agent's config dataclass: its ``config_class`` or ``Config`` attribute, the type
    of its ``config`` parameter, or ``<ClassName>Config`` in its module; None if it has none."""
    for attr in ("config_class", "Config"):
        cand = getattr(agent_cls, attr, None)
        if isinstance(cand, type) and dataclasses.is_dataclass(cand):
            return cand
    try:
        hints = typing.get_type_hints(agent_cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall through
        hints = {}
    for tp in [hints.get("config")] + list(typing.get_args(hints.get("config"))):
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return tp
    module = sys.modules.get(getattr(agent_cls, "__module__", ""), None)
    cand = getattr(module, f"{getattr(agent_cls, '__name__', '')}Config", None)
    return cand if isinstance(cand, type) and dataclasses.is_dataclass(cand) else None


# -- shared helpers ---------------------------------------------------------------------------


def parse_env_kwargs(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["max_new_tokens=8", "model=builtin"]`` -> a dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise error.InvalidArgument(f"--env-kwarg takes KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = _yaml_value(value)
        except argparse.ArgumentTypeError as e:
            raise error.InvalidArgument(f"--env-kwarg {pair!r}: {e}") from None
    return out


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, else an error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder this process can create or write in, else :class:`InvalidArgument`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error.InvalidArgument(f"{flag} {str(path)!r} is a file, not a folder; give a folder path")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise error.InvalidArgument(f"{flag} {str(path)!r} cannot be written: {str(existing)!r} is read-only")
    return path


def check_out_file(path: str | Path, flag: str) -> Path:
    """``path`` as a file that can be written (its folder exists and is writable)."""
    path = Path(path)
    if path.is_dir():
        raise error.InvalidArgument(f"{flag} {str(path)!r} is a folder; give a file path")
    folder = path.parent
    if not folder.is_dir():
        raise error.InvalidArgument(f"{flag} {str(path)!r}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error.InvalidArgument(f"{flag} {str(path)!r}: the folder {str(folder)!r} is read-only")
    return path


def add_env_kwargs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-e", "--env-kwarg", action="append", metavar="KEY=VALUE", dest="env_kwarg",
        help="a gym.make keyword argument for the env, e.g. -e max_new_tokens=8 (repeatable; values are YAML)",
    )


def quiet_libraries() -> None:
    """Silence transformers' per-load progress bars and info logs in the terminal (here,
    and through the environment in the worker processes this command starts)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def metrics_table(metrics: dict[str, Any]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines)


# -- commands ---------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from lm_gym.registration import list_envs

    envs = list_envs()
    width = max(map(len, envs))
    for env_id, description in envs.items():
        print(f"{env_id:<{width}}  {description}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from agents import distributed
    from lm_gym.bench.config import Cell
    from lm_gym.bench.runner import DONE, run_cell

    quiet_libraries()
    overrides = dict(getattr(args, "agent_overrides", {}))
    if "run_dir" in getattr(args, "config_fields", ()):  # checkpoints in OUT: --resume finds them
        overrides.setdefault("run_dir", str(args.out))
    env_kwargs = parse_env_kwargs(args.env_kwarg)
    check_env(args.env, env_kwargs)
    if args.gold_reward is not None:
        from lm_gym.rewards import reward_from_spec

        reward_from_spec(args.gold_reward)  # a bad spec fails now, naming the valid rewards
    out = check_out_dir(args.out)
    resume = prepare_run_dir(out, args.resume, args.overwrite, main=distributed.is_main_process())
    cell = Cell(
        env_id=args.env, agent=args.agent, seed=args.seed, budget=args.timesteps,
        time_budget=args.time_budget, eval_episodes=args.eval_episodes, eval_seed=1_000_000 + args.seed,
        agent_kwargs=overrides, env_kwargs=env_kwargs, save_agent=True, resume=resume,
        eval_every=args.eval_every, gold_reward=args.gold_reward,
    )

    (out / DONE).unlink(missing_ok=True)  # train always trains afresh (every rank clears it first)
    # Under torchrun every rank trains its share and rank 0 alone writes and reports.
    result = run_cell(cell, out.parent, directory=out, progress_bar=not args.no_progress)
    if not distributed.is_main_process():
        return 0 if result.status == "done" else 1
    if result.status != "done":
        print(f"training failed: {result.error} (traceback in {out / 'error.txt'})", file=sys.stderr)
        return 1
    print(metrics_table({k: v for k, v in result.eval.items() if k == "mean_reward" or k.startswith("reward/") or k in ("num_timesteps", "train_seconds")}))
    print(f"\nsaved the agent to {out / 'agent'} and the learning curve to {out / 'curve.csv'}")
    return 0


RUN_MARKERS = ("config.json", "bench.log", "curve.csv", "done", "agent", "checkpoints", "progress.csv")
"""What `lm-gym train` writes; a folder holding none of them is not cleared by --overwrite."""


def prepare_run_dir(out: Path, resume: bool, overwrite: bool, *, main: bool = True) -> bool:
    """Make sure one folder never mixes two runs: an empty (or new) ``out`` trains afresh; a
    non-empty one needs ``--resume`` (continue it; returns True) or ``--overwrite`` (clear
    it, if it is a run folder). Under torchrun only rank 0 checks and clears."""
    if resume and overwrite:
        raise error.InvalidArgument("--resume and --overwrite exclude each other: continue the run in --out, or clear it")
    if not main:  # torchrun: rank 0 alone judges (and may already be writing into) the folder
        return resume
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if resume:
        return True
    if not overwrite:
        raise error.InvalidArgument(
            f"--out {str(out)!r} already holds a run ({', '.join(sorted(p.name for p in out.iterdir())[:5])}); "
            "pass --resume to continue it, --overwrite to clear it and start over, or another --out"
        )
    if not any((out / name).exists() for name in RUN_MARKERS):
        raise error.InvalidArgument(f"--overwrite: {str(out)!r} is not empty and is not an lm-gym run folder; not clearing it")
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return False


def check_env(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """The env id exists and ``gym.make`` takes the kwargs (the env is made once and closed)."""
    import gymnasium as gym

    import lm_gym  # noqa: F401 - registers the ids
    from lm_gym.registration import check_env_id

    gym.make(check_env_id(env_id), **env_kwargs).close()


def find_saved_agent(path: Path) -> Path:
    for cand in (path, path / "agent"):
        if (cand / "agent.json").is_file():
            return cand
    raise error.InvalidArgument(f"{str(path)!r} holds no saved agent (no agent.json in it or in its agent/ folder)")


def cmd_eval(args: argparse.Namespace) -> int:
    import agents
    from agents.checkpoint import read_agent_json

    quiet_libraries()
    if args.json:
        check_out_file(args.json, "--json")
    path = find_saved_agent(Path(args.dir))
    meta = read_agent_json(path)
    saved = meta.get("config", {})
    env = args.env or saved.get("env_id")
    # On its own env the agent is evaluated with the env settings it was trained with,
    # which --env-kwarg flags override one by one.
    env_kwargs = {**(saved.get("env_kwargs") or {})} if args.env is None else {}
    env_kwargs.update(parse_env_kwargs(args.env_kwarg))
    if env is None:
        raise error.InvalidArgument(f"{path}: the saved agent records no env id; give ENV")
    check_env(env, env_kwargs)
    agent = agents.agent_class(meta["agent"]).load(path, env=env)
    result = agents.evaluate(agent, env, n_episodes=args.episodes, seed=args.seed, deterministic=args.deterministic, **env_kwargs)
    print(f"{meta['agent']} on {env}, {args.episodes} episodes:\n")
    print(metrics_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _run_bench_and_print(config: Any, out: str, progress: bool, backend: Any = None) -> int:
    from lm_gym.bench import run_bench

    quiet_libraries()
    check_out_dir(out)
    start = time.perf_counter()
    results = run_bench(config, out, progress=progress, backend=backend)
    text = (Path(out) / "results.md").read_text()
    print(text)
    failed = [r for r in results if r.status == "failed"]
    print(f"{len(results)} cells in {Path(out)} ({time.perf_counter() - start:.0f}s); table in {Path(out) / 'results.md'}")
    if config.plots:
        print(f"plots: {Path(out) / 'learning_curves.png'}, {Path(out) / 'final_reward.png'}")
    if failed:
        print(f"{len(failed)} cells failed; see error.txt in: " + ", ".join(str(Path(out) / r.cell.key) for r in failed), file=sys.stderr)
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lm_gym.bench import BenchConfig, load_config, preset

    overrides = dataclass_overrides(BenchConfig, args)
    if args.config:
        config = load_config(args.config, **overrides)
    elif args.preset:
        config = preset(args.preset, **overrides)
    else:
        config = BenchConfig(**overrides)
    backend = None
    if args.address is not None or args.gpus_per_cell is not None:
        from lm_gym.bench import get_backend

        if config.backend != "ray":
            raise error.InvalidArgument(f"--address and --gpus-per-cell apply to --backend ray, not {config.backend!r}")
        ray_options = {"address": args.address, "gpus_per_cell": args.gpus_per_cell or 0.0}
        backend = get_backend("ray", workers=config.workers, threads=config.threads, **ray_options)
    return _run_bench_and_print(config, args.out, progress=not args.no_progress, backend=backend)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from lm_gym.bench import preset

    config = preset("quickstart", workers=args.workers, **({"budget": args.budget} if args.budget is not None else {}))
    print(
        f"lm-gym quickstart: PPO vs the random and zero-shot (model) baselines on {', '.join(config.envs)}; "
        f"results in {args.out}\n"
    )
    return _run_bench_and_print(config, args.out, progress=not args.no_progress)


def cmd_pretrain(args: argparse.Namespace) -> int:
    quiet_libraries()
    check_out_dir(args.out)
    if args.classifier:
        from lm_gym.models.classifier import pretrain_classifier as train
    else:
        from lm_gym.models.pretrain import pretrain as train
    kwargs = {}
    if args.keyword_lists is not None:
        if args.classifier:
            raise error.InvalidArgument("--keyword-lists is an LM pretraining option; drop it or --classifier")
        from lm_gym.models.pretrain import PretrainConfig

        base = PretrainConfig.quick() if args.quick else PretrainConfig()
        kwargs["config"] = dataclasses.replace(base, keyword_lists=args.keyword_lists)
    metrics = train(args.out, quick=args.quick, seed=args.seed, steps=args.steps, progress=not args.no_progress,
                    **kwargs)
    print(metrics_table({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}))
    use = (f"lm_gym.rewards.RewardModel({str(args.out)!r}, label=...)" if args.classifier
           else f"gym.make(ENV, model={str(args.out)!r})")
    print(f"\nsaved the {'classifier' if args.classifier else 'model'} to {args.out}; use it with {use}")
    return 0


PLAY_HELP = """\
Type the next token(s) -- or a whole completion -- and press Enter.
An empty line (or <eos>) ends the text; /tokens lists the vocabulary; /quit exits."""


def cmd_play(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import lm_gym  # noqa: F401 - registers the ids
    from lm_gym.registration import check_env_id
    from lm_gym.tasks.base import ToyTokenizer

    quiet_libraries()
    env = gym.make(check_env_id(args.env), **parse_env_kwargs(args.env_kwarg))
    base = env.unwrapped
    tok = base.task.tokenizer
    toy = isinstance(tok, ToyTokenizer)
    eos = int(tok.eos_token_id)
    mask = base.action_masks()
    print(f"{args.env}: {base.task.description}\n{PLAY_HELP}")
    seed = args.seed
    for episode in range(1, args.episodes + 1):
        env.reset(seed=seed)
        seed = None  # seed the first episode only, as Gymnasium does
        print(f"\n--- episode {episode}; prompt: {base.prompt!r} (up to {base.max_new_tokens} tokens)")
        info: dict[str, Any] = {}
        done, n_tokens = False, 0
        while not done:
            try:
                line = input("> ")
            except EOFError:
                print()
                return 0
            if not sys.stdin.isatty():  # a piped session: echo, so the transcript reads right
                print(line)
            if line.strip() == "/quit":
                return 0
            if line.strip() == "/tokens":
                valid = [i for i in range(len(mask)) if mask[i]]
                print(" ".join(repr(tok.decode([i])) if i != eos else "<eos>" for i in valid[:400]))
                continue
            if line.strip() in ("", "<eos>"):
                ids = [eos]
            else:
                text = line if toy else (line if line[0].isspace() else " " + line)
                try:
                    ids = list(tok.encode(text.strip() if toy else text))
                except error.InvalidArgument as e:
                    print(f"  {e}")
                    continue
                bad = [i for i in ids if not mask[i]]
                if bad:
                    print(f"  not allowed in this task: {[tok.decode([i]) for i in bad]}; /tokens lists the valid ones")
                    continue
                if args.whole:
                    ids.append(eos)
            for n, token in enumerate(ids):
                _, reward, terminated, truncated, info = env.step(token)
                n_tokens += 1
                if terminated or truncated:
                    done = True
                    if n + 1 < len(ids) and not (args.whole and n + 2 == len(ids)):
                        print(f"  (the token budget ran out; dropped {tok.decode(ids[n + 1:])!r})")
                    break
            if not done:
                print(f"  {base.prompt}[{base.completion_text()}]  ({n_tokens}/{base.max_new_tokens} tokens)")
        end = "EOS" if terminated else "token budget"
        comps = ", ".join(f"{k} {v:.3f}" for k, v in info["reward_components"].items())
        print(f"  completion: {info['text']!r} (ended by {end})\n  reward {float(reward):.3f}  [{comps}]")
    return 0


# -- the parser -------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lm-gym CMD: error: MESSAGE`` on stderr, exit code 2
    (the usage stays in ``--help``)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def one_line(message: Any) -> str:
    return " ".join(str(message).split())


DEFAULT_AGENT = "ppo"


def _command_in(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _agent_in(argv: Sequence[str]) -> str:
    """The ``train`` agent named on the command line, else the default."""
    for i, arg in enumerate(argv):
        if arg == "--agent" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--agent="):
            return arg.split("=", 1)[1]
    return DEFAULT_AGENT


def train_config_class(name: str) -> type | None:
    """The config dataclass of the ``train`` agent ``name``: the agent class's
    ``config_class`` attribute (see :func:`config_class` for the fallbacks). An unknown
    agent raises :class:`~lm_gym.error.UnknownName` before any flag is parsed."""
    from lm_gym.bench.runner import resolve_agent

    try:
        return config_class(resolve_agent(name))
    except error.DependencyNotInstalled as e:  # e.g. sb3-* without the extra: no flags, the run says why
        logger.debug("no config flags for agent %r: %s", name, e)
        return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``lm-gym`` parser; for ``train``, the agent of ``argv`` (``--agent``, default
    ``ppo``) gives the config flags."""
    parser = Parser(prog="lm-gym", description="Reinforcement learning for language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("list", help="list every registered env id with a one-line description", description="List every registered env id with a one-line description.")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser(
        "train", help="train an agent on an env and save it with its learning curve", formatter_class=fmt,
        description="Train AGENT on ENV for --timesteps env steps, evaluate it, and save the agent (OUT/agent), "
        "its learning curve (OUT/curve.csv, OUT/metrics.jsonl), the exact configuration (OUT/config.json) "
        "and the evaluation (OUT/eval.json). The agent's config flags are listed by "
        "`lm-gym train ENV --agent NAME --help`.",
    )
    p.add_argument("env", metavar="ENV", help="env id, e.g. lm_gym/KeywordToy-v0")
    p.add_argument("--agent", default="ppo", help="agent name (ppo, reinforce, sb3-ppo, ...) or package.module:Class")
    p.add_argument("--timesteps", type=positive_int, default=20_000, help="env steps to train for")
    p.add_argument("--time-budget", type=float, default=None, help="also stop after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of the agent and its envs")
    p.add_argument("--eval-episodes", type=positive_int, default=100, help="episodes of each evaluation")
    p.add_argument("--eval-every", type=positive_int, default=None, metavar="STEPS",
                   help="also evaluate every STEPS env steps (and before training): eval/reward, eval/kl "
                   "(and eval/gold_reward) columns in OUT/curve.csv")
    p.add_argument("--gold-reward", default=None, metavar="SPEC",
                   help="a held-out reward scored on the evaluation completions, never trained on: "
                   "NAME[:KEY=VALUE,...] of lm_gym.rewards (e.g. vader, classifier:label=positive)")
    p.add_argument("--out", default="runs/train", help="output directory (one run: a non-empty one needs --resume or --overwrite)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="clear the run in --out and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_env_kwargs_option(p)
    if _command_in(argv) == "train":
        name = _agent_in(argv)
        cls = train_config_class(name)
        if cls is not None:
            group = p.add_argument_group(f"{name} config ({cls.__name__}; unset flags keep their defaults)")
            exclude = [a.dest for a in p._actions] + ["env", "env_id", "env_kwargs", "verbose"]  # -v is global
            added = add_dataclass_arguments(group, cls, exclude=exclude)
            p.set_defaults(config_cls=cls, config_fields=added)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser(
        "eval", help="evaluate a saved agent", formatter_class=fmt,
        description="Evaluate the agent saved in DIR (by `lm-gym train` or agent.save) on ENV (default: the env it was trained on).",
    )
    p.add_argument("dir", metavar="DIR", help="a saved agent (a folder with agent.json, or a train output folder)")
    p.add_argument("env", metavar="ENV", nargs="?", default=None, help="env id (default: the saved agent's)")
    p.add_argument("--episodes", type=positive_int, default=100, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    p.add_argument("--deterministic", action="store_true", help="greedy actions instead of sampling")
    p.add_argument("--json", metavar="FILE", help="also write the metrics to FILE as JSON")
    add_env_kwargs_option(p)
    p.set_defaults(fn=cmd_eval)

    from lm_gym.bench.config import PRESETS, BenchConfig

    p = sub.add_parser(
        "bench", help="run a grid of envs x agents x seeds and summarise it",
        description="Run every env x agent x seed cell (train for --budget env steps, then evaluate), "
        "in --workers processes; write each cell's config, learning curve and evaluation under OUT, "
        "then results.md (mean +- std over seeds) and the plots. Rerunning the same command runs only "
        "the cells that have not finished. Flags override CONFIG.yaml or --preset.",
    )
    p.add_argument("config", metavar="CONFIG.yaml", nargs="?", help="a YAML file of BenchConfig fields (optional)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a named grid")
    p.add_argument("--out", default="runs/bench", help="results directory (default: runs/bench)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    ray_group = p.add_argument_group("Ray backend (--backend ray; needs the [ray] extra)")
    ray_group.add_argument("--address", default=None, help="the Ray cluster: 'auto' (the one `ray start` runs here), "
                           "ray://HOST:10001, or unset: RAY_ADDRESS, else a local Ray instance")
    ray_group.add_argument("--gpus-per-cell", type=float, default=None, metavar="FLOAT",
                           help="GPUs each cell's Ray task declares (default 0; pair with agent_kwargs device: auto)")
    add_dataclass_arguments(p.add_argument_group("grid (BenchConfig)"), BenchConfig)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser(
        "quickstart", help="train PPO on a toy and a text task and compare it to the baselines", formatter_class=fmt,
        description="The quickstart: PPO on lm_gym/KeywordToy-v0 and lm_gym/SentimentContinuation-v0 with the "
        "built-in model, against the random and zero-shot (model) baselines; prints the table and writes the "
        "plots. Offline; about 2.5 minutes on 2 CPU cores. The same as `lm-gym bench --preset quickstart`; "
        "rerun it to finish an interrupted run.",
    )
    p.add_argument("--out", default="runs/quickstart", help="results directory")
    p.add_argument("--workers", type=positive_int, default=2, help="cells run at once, each in its own process")
    p.add_argument("--budget", type=positive_int, default=None, help="env steps per PPO run (None: the preset's budget per env)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_quickstart)

    p = sub.add_parser(
        "pretrain", help="pretrain the built-in language model (or classifier) on the procedural story corpus",
        formatter_class=fmt,
        description="Pretrain the built-in GPT-2-style model on the procedural story corpus and save it to OUT "
        "(usable as gym.make(ENV, model=OUT)); with --classifier, the built-in sentiment/topic classifier "
        "(usable as lm_gym.rewards.RewardModel(OUT)).",
    )
    p.add_argument("--classifier", action="store_true", help="train the built-in reward classifier instead of the LM")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="a tiny model and corpus (seconds; for tests)")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--steps", type=positive_int, default=None, help="optimiser steps (default: the config's)")
    p.add_argument("--keyword-lists", type=float, default=None, metavar="FRACTION",
                   help="start this fraction of the training stories with their keyword list, KeywordStory's "
                   "prompt format (default: 0, the shipped 'builtin' model; 0.5 made 'builtin-keywords')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser(
        "play", help="be the agent: type tokens or completions and see the reward", formatter_class=fmt,
        description="Play an env by hand: see the prompt, type the next token(s) or a whole completion, "
        "and see the reward and its components. " + PLAY_HELP.replace("\n", " "),
    )
    p.add_argument("env", metavar="ENV", help="env id")
    p.add_argument("--seed", type=int, default=None, help="seed of the first episode")
    p.add_argument("--episodes", type=positive_int, default=1_000_000, help="stop after this many episodes")
    p.add_argument("--whole", action="store_true", help="each line is a whole completion (EOS is added)")
    add_env_kwargs_option(p)
    p.set_defaults(fn=cmd_play)
    return parser


USER_ERRORS = (error.Error, ValueError, OSError)
"""What a bad input raises (OSError: a path the command cannot read or write); reported in
one line with exit code 2. Anything else is a bug and keeps its traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lm-gym``; returns the exit code (an argparse error exits 2 with one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    try:
        parser = build_parser(argv)
    except USER_ERRORS as e:  # an unknown train --agent
        print(f"lm-gym {command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "config_cls", None) is not None:
            # only the config flags this parser added (a field such as `verbose` may share its
            # name with a global option, which is not the agent's)
            args.agent_overrides = {k: getattr(args, k) for k in args.config_fields if hasattr(args, k)}
            args.config_cls(**args.agent_overrides)  # validate the flags now (__post_init__)
        return int(args.fn(args) or 0)
    except USER_ERRORS as e:
        print(f"lm-gym {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in ("bench", "quickstart"):
            print("\ninterrupted; run the same command again to finish only the missing cells", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
