"""The Task abstraction: where prompts come from and how the finished text is scored.

A :class:`Task` is everything an lm_gym env needs to know about one text problem:

* a **tokenizer** (the vocabulary; its size fixes the env's ``Discrete(V)`` action space),
* **prompt sampling** from the env's ``np_random`` (so seeding makes episodes reproducible),
* a **batched scoring function** returning the reward and its named components,
* **length limits** (``max_prompt_tokens``, ``max_new_tokens``),
* optionally a **vocabulary restriction** (``valid_token_ids``) and **dense shaping**.

The env never runs a model; it only appends tokens and calls :meth:`Task.score` once per
batch of finished episodes. Subclass :class:`Task`, implement :meth:`sample` and
:meth:`components` (plus :attr:`default_weights` for a composite reward, or override
:meth:`score`), and give it an env id with :func:`lm_gym.register_task`.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from lm_gym import error

RewardFn = Callable[..., Any]
"""A user reward: ``fn(prompts: list[str], completions: list[str], **meta) -> list[float]``."""


@runtime_checkable
class Tokenizer(Protocol):
    """What an env needs from a tokenizer (a toy one, or an adapter over Hugging Face's)."""

    vocab_size: int
    pad_token_id: int
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ToyTokenizer:
    """A fixed, tiny vocabulary: PAD is id 0, EOS id 1, then ``symbols`` in order.

    Args:
        symbols: the vocabulary's tokens (characters or words), without PAD and EOS.
        word_level: split text on whitespace and join tokens with spaces; otherwise every
            character is a token and tokens join with no separator.
    """

    PAD = "<pad>"
    EOS = "<eos>"

    def __init__(self, symbols: Sequence[str], *, word_level: bool = False) -> None:
        if len(set(symbols)) != len(symbols):
            raise error.InvalidArgument(f"ToyTokenizer symbols must be unique, got {list(symbols)}")
        self.tokens: list[str] = [self.PAD, self.EOS, *symbols]
        self.word_level = word_level
        self.pad_token_id = 0
        self.eos_token_id = 1
        self.vocab_size = len(self.tokens)
        self._ids = {tok: i for i, tok in enumerate(self.tokens)}

    def encode(self, text: str) -> list[int]:
        pieces = text.split() if self.word_level else list(text)
        try:
            return [self._ids[p] for p in pieces]
        except KeyError as e:
            raise error.InvalidArgument(
                f"Token {e.args[0]!r} is not in this vocabulary; valid tokens: {self.tokens[2:]}"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids, skipping PAD and EOS (special tokens never appear in text)."""
        pieces = [self.tokens[i] for i in ids if i > 1]
        return (" " if self.word_level else "").join(pieces)

    def ids_of(self, symbols: Sequence[str]) -> list[int]:
        return [self._ids[s] for s in symbols]


@dataclass(slots=True)
class Prompt:
    """One sampled prompt: its text and any metadata the scorer needs (target, keywords, ...).

    Not frozen: a frozen dataclass costs a microsecond per prompt, a fifth of a toy reset."""

    text: str
    meta: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class of every task. Subclasses set the class attributes and implement
    :meth:`sample` and :meth:`components` (or :meth:`score`).

    Class attributes:
        name: short name used in messages.
        description: one line, shown by ``lm_gym.list_envs()`` and ``lm-gym list``.
        reward_components: names of the components :meth:`components` reports, the same
            keys every episode.
        default_weights: for a composite reward ``R = Σ w_k·c_k``, the default weight of
            each component (``reward_weights=`` overrides some or all of them); ``None``
            when the reward is not a weighted sum of its components.
        dense: whether :meth:`dense_reward` pays a reward on every step.
        model_name: the pretrained LM of a text task, ``None`` for toy tasks.

    Args:
        max_new_tokens: the token budget of a completion; the episode is truncated there.
        max_prompt_tokens: prompts are left-truncated to this many tokens.
    """

    name: ClassVar[str] = "task"
    description: ClassVar[str] = ""
    reward_components: ClassVar[tuple[str, ...]] = ()
    default_weights: ClassVar[Mapping[str, float] | None] = None
    dense: ClassVar[bool] = False
    model_name: str | None = None
    """The pretrained LM behind a text task (``"builtin"``, a name or a path); ``None`` for
    toy tasks, whose agents build a fresh small transformer sized to the vocabulary."""

    def __init__(self, *, max_new_tokens: int, max_prompt_tokens: int) -> None:
        check_int("max_new_tokens", max_new_tokens, low=1)
        check_int("max_prompt_tokens", max_prompt_tokens, low=1)
        self.max_new_tokens = int(max_new_tokens)
        self.max_prompt_tokens = int(max_prompt_tokens)

    # -- what subclasses provide ------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        """The task's tokenizer. Subclasses set ``self._tokenizer`` or override this."""
        return self._tokenizer  # type: ignore[attr-defined]

    @property
    def vocab_size(self) -> int:
        """V, the width of the action space (a model's logit width may exceed the tokenizer's)."""
        return int(self.tokenizer.vocab_size)

    def sample(self, np_random: np.random.Generator) -> Prompt:
        """Draw one prompt. Every random draw must come from ``np_random``."""
        raise NotImplementedError

    def components(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> dict[str, np.ndarray]:
        """Score a batch: each component's values, shape (B,), keyed by :attr:`reward_components`."""
        raise NotImplementedError

    def valid_token_ids(self) -> Sequence[int] | None:
        """The token ids an agent may emit (EOS included), or ``None`` for the whole vocabulary."""
        return None

    def dense_reward(
        self, completion_ids: np.ndarray, lengths: np.ndarray, meta: Mapping[str, list[Any]]
    ) -> np.ndarray:
        """Per-step shaping for dense tasks: the reward of the step that produced token
        ``completion_ids[b, lengths[b] - 1]``, batched, shape (B,). Only called when
        :attr:`dense` is true; the final step's reward is this plus :meth:`score`."""
        raise NotImplementedError

    # -- scoring --------------------------------------------------------------------

    def score(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The reward of each finished episode and its components.

        The default is the composite ``Σ w_k·c_k`` under :attr:`default_weights` when the
        task has them, else the component named ``"score"``. (An env reweights with
        ``reward_weights=`` in its own scorer, never by changing the task, which several
        envs may share.)
        """
        from lm_gym.rewards.composite import weighted_sum

        comps = self.components(prompts, completions, meta)
        if self.default_weights is not None:
            return weighted_sum(self.default_weights, comps, len(completions)), comps
        return np.asarray(comps["score"], dtype=np.float64), comps

    # -- helpers for subclasses ----------------------------------------------------------

    def encode_prompt(self, text: str) -> list[int]:
        """Tokenise a prompt, keeping its last ``max_prompt_tokens`` tokens."""
        ids = self.tokenizer.encode(text)
        return ids[-self.max_prompt_tokens :]


class CustomReward:
    """Wraps a user's batched reward callable so the env can treat it like a task's score.

    ``fn(prompts: list[str], completions: list[str], **meta) -> list[float]``, with
    ``meta`` holding one list per metadata key (e.g. ``target=[...]``). The component
    reported in ``info["reward_components"]`` is ``"reward"``. A string is a spec of
    :func:`lm_gym.rewards.reward_from_spec` (``"classifier:label=positive"``), so the
    command line's ``-e reward=...`` can name one.
    """

    component = "reward"

    def __init__(self, fn: RewardFn | str) -> None:
        if isinstance(fn, str):
            from lm_gym.rewards import reward_from_spec

            fn = reward_from_spec(fn)
        if not callable(fn):
            raise error.InvalidArgument(
                f"reward must be a callable fn(prompts, completions, **meta) -> list[float] or a reward "
                f"spec such as 'vader' (lm_gym.rewards.reward_from_spec), got {fn!r}"
            )
        self.fn = fn
        self.name = getattr(fn, "__qualname__", None) or type(fn).__name__

    def __call__(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        try:
            out = self.fn(prompts, completions, **meta)
        except Exception as e:  # the user's code: report it with context, keep the cause
            raise error.RewardError(
                f"reward function {self.name!r} raised {type(e).__name__}: {e} "
                f"(called on {len(completions)} completions)"
            ) from e
        reward = validate_scores(out, len(completions), f"reward function {self.name!r}")
        return reward, {self.component: reward}


def validate_scores(scores: Any, batch_size: int, who: str = "reward function") -> np.ndarray:
    """The one rule for a reward batch: a sequence of ``batch_size`` finite real numbers (a
    list or tuple of ints/floats, or a real-valued array of shape ``(batch_size,)``).
    Strings, ``None``, a bare number, bools, nested lists and a wrong length are refused
    with a :class:`~lm_gym.error.RewardError` naming ``who``, what came back and what is
    valid. Returns the scores as float64 of shape ``(batch_size,)``."""
    n = batch_size
    if type(scores) is np.ndarray and scores.dtype == np.float64 and scores.shape == (n,):
        # the fast path (a numpy reduction costs more than a Python loop on a few values)
        if all(map(math.isfinite, scores.tolist())) if n <= 64 else np.isfinite(scores).all():
            return scores
        arr = scores
    else:
        arr, what = _real_array(scores)
        if arr is None or arr.shape != (n,):
            what = what or _shape_of(scores, arr)
            raise error.RewardError(
                f"{who} returned {what}; a reward must be a sequence of {n} real numbers, one "
                f"per completion (a list of floats or a float array of shape ({n},))"
            )
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise error.RewardError(
            f"{who} returned a non-finite value {float(arr[i])!r} at index {i}; rewards must be finite"
        )
    return arr


def _real_array(scores: Any) -> tuple[np.ndarray | None, str]:
    """``(float64 array, "")`` when ``scores`` is a sequence of real numbers (any shape), else
    ``(None, a description of what is wrong)``."""
    kind = type(scores).__name__
    a = _article(kind)
    if hasattr(scores, "__array__") and not isinstance(scores, (np.generic, str, bytes)):
        arr = np.asarray(scores)
        if arr.ndim == 0:
            return None, f"a bare {kind} {scores!r:.80}, not a sequence"
        if arr.dtype.kind not in "fiu":
            return None, f"{a} {kind} of dtype {arr.dtype}"
        return arr.astype(np.float64, copy=False), ""
    if scores is None or isinstance(scores, (str, bytes, Mapping)) or not isinstance(scores, Sequence):
        if isinstance(scores, numbers.Number) or isinstance(scores, np.generic):
            return None, f"a bare {kind} {scores!r:.80}, not a sequence"
        return None, f"{kind} {scores!r:.80}"
    for i, x in enumerate(scores):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
            return None, f"{a} {kind} whose item {i} is {type(x).__name__} {x!r:.80}"
    return np.array(scores, dtype=np.float64), ""


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" or kind == "ndarray" else "a"


def _shape_of(scores: Any, arr: np.ndarray) -> str:
    kind = type(scores).__name__
    a = _article(kind)
    return f"{a} {kind} of {arr.size} value(s)" if arr.ndim == 1 else f"{a} {kind} of shape {arr.shape}"


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Validate an integer argument, naming it and the valid range in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise error.InvalidArgument(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise error.InvalidArgument(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


ENV_ARGS = ("reward", "reward_weights", "render_mode")
"""The keyword arguments every lm_gym env takes besides its task's."""


def task_kwargs_check(
    task_cls: type[Task], kwargs: Mapping[str, Any], env_args: Sequence[str] = ENV_ARGS
) -> None:
    """Reject keyword arguments the task's constructor does not take, with a did-you-mean;
    the "Valid:" list holds the task's arguments and the env's own ``env_args``."""
    valid = list(env_args)
    for cls in task_cls.__mro__:  # follow **kwargs up to the first __init__ without them
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(cls.__init__).parameters
        valid += [
            n for n, p in params.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()) or cls is Task:
            break
    for key in kwargs:
        if key not in valid:
            raise error.InvalidArgument(
                f"Unknown keyword argument {key!r} for task {task_cls.name!r}."
                f"{error.did_you_mean(key, valid)} Valid: {', '.join(sorted(valid))}."
            )
