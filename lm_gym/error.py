"""The lm_gym error hierarchy.

Every error lm_gym raises on bad user input derives from :class:`Error`, so a caller can
catch them all at once; each also derives from the matching builtin (``ValueError``,
``KeyError``, ``ImportError``) so code written against the builtins keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class Error(Exception):
    """Base class of every lm_gym error."""


class InvalidAction(Error, ValueError):
    """An action outside the env's ``Discrete(V)`` action space or of a non-integer type."""


class InvalidActionType(InvalidAction, TypeError):
    """A batch of actions of the wrong type or dimension, e.g. a scalar for a vector env
    (also a ``TypeError``, as Gymnasium's Sync/Async vector envs raise)."""


class InvalidArgument(Error, ValueError):
    """A bad argument value or an unknown keyword argument."""


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument of the wrong type or dtype (also a ``TypeError``, where Gymnasium raises one)."""


class UnsupportedRenderMode(InvalidArgument, TypeError):
    """A ``render_mode`` the env does not have (also a ``TypeError``, which is what
    Stable-Baselines3's ``make_vec_env`` catches to retry without ``render_mode``)."""


class UnknownName(Error, KeyError):
    """An unknown task, reward component, agent or model name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RewardError(Error, ValueError):
    """A reward function raised, returned the wrong length, or returned a non-finite value."""


class ModelLoadError(Error, OSError):
    """A model or tokenizer could not be loaded (offline, missing, or malformed)."""


class DependencyNotInstalled(Error, ImportError):
    """An optional dependency is missing; the message names the pip extra that installs it."""


class ResetNeeded(Error, RuntimeError):
    """``step`` was called on an episode that has already ended."""


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """A " Did you mean 'x'?" suffix for ``name`` among ``options``, or an empty string."""
    matches = difflib.get_close_matches(str(name), list(options), n=1)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def unknown(kind: str, name: str, options: Iterable[str]) -> UnknownName:
    """An :class:`UnknownName` listing the valid options and the closest match."""
    options = sorted(options)
    return UnknownName(
        f"Unknown {kind} {name!r}.{did_you_mean(name, options)} Valid: {', '.join(map(repr, options))}."
    )


def missing_extra(package: str, extra: str, purpose: str = "") -> DependencyNotInstalled:
    """An error saying which pip extra installs ``package``."""
    what = f" for {purpose}" if purpose else ""
    return DependencyNotInstalled(
        f"{package} is required{what} but is not installed. "
        f"Install it with: pip install 'lm-gym[{extra}]'"
    )


class CheckpointError(Error, OSError):
    """A saved agent or checkpoint folder is damaged, incomplete, or holds another agent."""


class TrainingError(Error, RuntimeError):
    """Training cannot go on (e.g. the loss or the gradients stayed non-finite)."""
