"""Saved agents and training checkpoints: what a folder holds, written atomically, read with checks.

A saved LM agent is a folder::

    agent.json        {"agent": <registry name>, "config": {...}}   (JSON: data, never code)
    policy/           the LM (safetensors, config.json), value_head.safetensors, lm_policy.json
    state.json        counters, the numpy RNG state, the algorithm's own state (JSON)
    trainer.pt        the optimizer's state and the sampling generator's, read with
                      ``torch.load(weights_only=True)``: tensors and containers only, no pickle

A folder is written as ``.tmp-<name>-<pid>`` and renamed into place, so a crash leaves the
old complete copy or the new one, never half of one; leftover ``.tmp-*`` folders are removed
when a run starts. Every read names the file it could not use and says what the folder
holds, and a folder saved by another agent type is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lm_gym import error

AGENT_FILE = "agent.json"
CHECKPOINTS = "checkpoints"
POLICY_DIR = "policy"
STATE_FILE = "state.json"
TRAINER_FILE = "trainer.pt"

__all__ = ["checkpoints_of", "clean_partial", "read_agent_json", "read_state", "write_json_atomic"]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and a rename, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def damaged(path: Path, what: str) -> error.CheckpointError:
    folder = path.parent
    others = [p.name for p in checkpoints_of(folder.parent.parent) if p != folder] if folder.parent.name == CHECKPOINTS else []
    also = f"; other checkpoints there: {others}" if others else ""
    return error.CheckpointError(f"{path} is damaged ({what}): the saved agent in {folder} cannot be used{also}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(path, f"not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise damaged(path, f"expected a JSON object, found {type(data).__name__}")
    return data


def read_agent_json(path: str | Path, expected: str | None = None) -> dict[str, Any]:
    """``path/agent.json`` checked: a JSON object with ``agent`` (a name) and ``config`` (an
    object); with ``expected``, the recorded agent must be that one."""
    file = Path(path) / AGENT_FILE
    if not file.is_file():
        raise error.InvalidArgument(f"{path} is not a saved agent (no {AGENT_FILE} in it)")
    meta = _read_json(file)
    if not isinstance(meta.get("agent"), str) or not isinstance(meta.get("config"), dict):
        raise damaged(file, 'it needs "agent" (a name) and "config" (an object)')
    if expected is not None and meta["agent"] != expected:
        raise error.CheckpointError(
            f"{path} holds a saved {meta['agent']!r} agent, not {expected!r}; load it with "
            f"agents.agent_class({meta['agent']!r}).load(path)"
        )
    return meta


def read_state(path: str | Path) -> dict[str, Any]:
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise error.CheckpointError(f"{path} is not a saved LM agent (no {STATE_FILE} in it)")
    state = _read_json(file)
    for key in ("num_timesteps", "n_updates", "policy_seed", "rng", "algorithm"):
        if key not in state:
            raise damaged(file, f"the key {key!r} is missing")
    return state


def read_trainer(path: str | Path) -> dict[str, Any]:
    """``trainer.pt`` as tensors and containers only (``weights_only=True``: never unpickled)."""
    file = Path(path) / TRAINER_FILE
    try:
        trainer = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error.CheckpointError(f"{path} is incomplete: {TRAINER_FILE} is missing") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        # Not torch's own message: it suggests weights_only=False, which would unpickle it.
        raise damaged(file, f"{type(e).__name__} while reading tensors") from None
    if not isinstance(trainer, dict) or "optimizer" not in trainer:
        raise damaged(file, "it holds no optimizer state")
    return trainer


def write_folder(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` on a fresh temporary folder, then move it to ``path`` atomically
    (an existing ``path`` is moved aside first, so one complete copy always exists)."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    if path.exists():
        old = path.with_name(f".old-{path.name}-{os.getpid()}")
        path.replace(old)
        tmp.replace(path)
        shutil.rmtree(old)
    else:
        tmp.replace(path)


def checkpoints_of(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``run_dir/checkpoints``, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("update_") and (p / STATE_FILE).is_file())


def clean_partial(run_dir: str | Path) -> list[Path]:
    """Remove half-written ``.tmp-*`` / ``.old-*`` checkpoint folders a crash left behind."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    removed = [*root.glob(".tmp-*"), *root.glob(".old-*")]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def checkpoint_path(run_dir: str | Path, n_updates: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"update_{n_updates:07d}"


def prune(run_dir: str | Path, keep: int) -> None:
    for old in checkpoints_of(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
