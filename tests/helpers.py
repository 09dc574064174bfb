"""Shared test utilities."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_tree_equal(a: Any, b: Any, path: str = "") -> None:
    """Recursively compare dicts / arrays / scalars (float arrays with a tolerance)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{path}: dict vs {type(b)}"
        assert set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f"{path}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and b.shape == a.shape, f"{path}: shape"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, (np.ndarray, float, np.floating)):
        # rtol: batched float32 LM forwards differ from one-at-a-time ones in the last bits
        np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-5, atol=1e-6, err_msg=path)
        if isinstance(a, np.ndarray):
            assert a.dtype == np.asarray(b).dtype, f"{path}: dtype {a.dtype} != {np.asarray(b).dtype}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def random_level(env_id: str, env_kwargs: dict[str, Any]) -> float:
    """The random agent's mean reward on ``env_id`` (200 episodes, fixed seeds)."""
    import agents

    rnd = agents.RandomAgent(env_id, env_kwargs=env_kwargs, seed=0)
    return agents.evaluate(rnd, n_episodes=200, seed=123)["mean_reward"]


class ForwardCounter:
    """Records the (batch, tokens) shape of every forward of a GPT-2 (generic or fast path
    alike: both embed the tokens once per forward; the fast path's decode step embeds (N,)
    ids, one token per slot, recorded as (N, 1))."""

    def __init__(self, model: Any) -> None:
        self.shapes: list[tuple[int, int]] = []
        wte = model.transformer.wte
        inner = wte.forward

        def counted(ids: Any, *args: Any, **kwargs: Any) -> Any:
            self.shapes.append(tuple(ids.shape) if ids.ndim == 2 else (len(ids), 1))
            return inner(ids, *args, **kwargs)

        wte.forward = counted
