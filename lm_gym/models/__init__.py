"""Tokenizers and causal language models: the built-in default and any Hugging Face model.

``"builtin"`` names the small GPT-2-architecture LM shipped in ``lm_gym/models/builtin/``
(pretrained by :func:`lm_gym.models.pretrain.pretrain` on the procedural story corpus of
:mod:`lm_gym.models.corpus`); it needs no download. ``"builtin-keywords"`` is its sibling
pretrained with keyword lists (:data:`BUILTIN_KEYWORDS`), KeywordStory-v2's model. Any other name is passed to
``transformers``' Auto classes: a local directory written by ``save_pretrained``, or a
Hugging Face Hub name, which loads only where the Hub (or its cache) is reachable. A name
that cannot be loaded raises :class:`lm_gym.error.ModelLoadError`.

Every tokenizer returned here pads on the left and has a pad token distinct from EOS; when
a model's tokenizer has none, ``<|pad|>`` is added, and :func:`load_model_and_tokenizer`
resizes the model's embeddings to match. Models are returned in eval mode.

This module imports neither torch nor transformers until a function is called.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_gym.error import InvalidArgument, ModelLoadError, unknown

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BUILTIN",
    "BUILTIN_KEYWORDS",
    "BUILTIN_MODELS",
    "PAD_TOKEN",
    "builtin_classifier_path",
    "builtin_path",
    "check_device",
    "fuse_activations",
    "load_classifier",
    "load_frozen",
    "load_lm",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "position_ids_from_mask",
]

logger = logging.getLogger(__name__)

BUILTIN = "builtin"
"""The name of the shipped model."""

BUILTIN_KEYWORDS = "builtin-keywords"
"""The name of the shipped keyword-list LM: the built-in model's architecture, tokenizer
and corpus, pretrained with half of its stories opened by their keyword list
(``lm-gym pretrain --keyword-lists 0.5``), as an instruction-tuned model starts RLHF;
KeywordStory-v2's default model."""

BUILTIN_MODELS: dict[str, str] = {BUILTIN: "builtin", BUILTIN_KEYWORDS: "builtin_keywords"}
"""The shipped LMs: name -> folder of ``lm_gym/models/``."""

PAD_TOKEN = "<|pad|>"
"""The pad token added to tokenizers that have none (or whose pad equals EOS)."""


def builtin_path(name: str = BUILTIN) -> Path:
    """The directory of a shipped checkpoint (config, safetensors, tokenizer, metrics):
    ``"builtin"`` or another of :data:`BUILTIN_MODELS`."""
    if name not in BUILTIN_MODELS:
        raise unknown("built-in model", name, BUILTIN_MODELS)
    return Path(__file__).resolve().parent / BUILTIN_MODELS[name]


def builtin_classifier_path() -> Path:
    """The directory of the shipped classifier (see :mod:`lm_gym.models.classifier`)."""
    return Path(__file__).resolve().parent / "builtin_classifier"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _check_name(name_or_path: Any) -> str:
    """A model name or path as a string, or :class:`InvalidArgument` (an empty string would
    otherwise name the current directory)."""
    name = os.fspath(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else None
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(
            f"model must be a non-empty string or path, got {name_or_path!r}. "
            f"Use {BUILTIN!r}, a local directory written by save_pretrained, or a Hugging Face model name."
        )
    return name


DEVICES = "'cpu', 'cuda' or 'cuda:N' (with CUDA), 'mps' (Apple silicon), or a torch.device"


def check_device(device: Any) -> Any:
    """``device`` unchanged if torch can place a model there on this machine (None: the
    default, CPU); else :class:`InvalidArgument` naming it and what is valid here."""
    if device is None:
        return None
    import torch

    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgument(f"Unknown device {device!r}; use {DEVICES}.") from None
    if dev.type == "cpu":
        return device
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    if backend is None or not backend.is_available():
        raise InvalidArgument(
            f"device={device!r} is not available on this machine (torch.{dev.type} is not "
            f"available); use 'cpu' or another of {DEVICES}."
        )
    count = getattr(backend, "device_count", lambda: 1)()
    if dev.index is not None and dev.index >= count:
        raise InvalidArgument(
            f"device={device!r}: this machine has {count} {dev.type} device(s), "
            f"{dev.type}:0 .. {dev.type}:{count - 1}."
        )
    return device


def _resolve(name_or_path: str | os.PathLike[str]) -> tuple[str, bool]:
    """``(source, is_local)`` for a name, a path, or ``"builtin"``."""
    name = _check_name(name_or_path)
    if name in BUILTIN_MODELS:
        path = builtin_path(name)
        if not (path / "config.json").is_file():
            flag = " --keyword-lists 0.5" if name == BUILTIN_KEYWORDS else ""
            raise ModelLoadError(
                f"The built-in model {name!r} is missing from {path}; reinstall lm-gym or recreate it "
                f"with `lm-gym pretrain{flag}` / lm_gym.models.pretrain.pretrain(path)."
            )
        return str(path), True
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), True
    if name.startswith(("/", "./", "../", "~", ".\\")) or path.is_file():
        raise ModelLoadError(
            f"No model directory at {name!r}. Pass a directory written by save_pretrained, "
            f"a Hugging Face model name, or {BUILTIN!r} for the built-in model."
        )
    return name, False


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError, KeyError]
    for mod, attr in (
        ("httpx", "HTTPError"), ("requests", "RequestException"), ("safetensors", "SafetensorError"),
    ):
        try:
            errors.append(getattr(__import__(mod), attr))
        except (ImportError, AttributeError):  # pragma: no cover - optional transports
            pass
    return tuple(errors)


@contextlib.contextmanager
def _quiet_progress(quiet: bool) -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bar for local checkpoints (a bar is for
    a person waiting on a download, not for the second it takes to read a small file)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if quiet and enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and enabled:
            hf_logging.enable_progress_bar()


def _load(kind: str, loader: Any, name_or_path: Any, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with local/offline handling and typed errors."""
    source, local = _resolve(name_or_path)
    if local or _offline():
        kwargs.setdefault("local_files_only", True)
    try:
        with _quiet_progress(local):
            return loader.from_pretrained(source, **kwargs)
    except _hub_errors() as e:
        raise _load_error(kind, os.fspath(name_or_path), source, local, e) from e


def _load_error(kind: str, name: str, source: str, local: bool, e: BaseException) -> ModelLoadError:
    """The :class:`ModelLoadError` for a failed load: for a local folder, the damaged file
    in it when one is; else where the name was looked for."""
    fix = f"Use a local directory written by save_pretrained, or {BUILTIN!r} for the built-in model (no download)."
    damaged = _damaged_file(Path(source)) if local else None
    if damaged is not None:
        return ModelLoadError(
            f"Could not load {kind} {name!r}: {damaged}. Save the model again with "
            f"save_pretrained (or restore the file). {fix}"
        )
    where = (
        f"from the local directory {source!r}"
        if local
        else "offline (HF_HUB_OFFLINE is set and it is not in the local cache)"
        if _offline()
        else "(not found on the Hugging Face Hub, or the Hub is unreachable and it is not cached)"
    )
    reason = str(e).splitlines()[0] if str(e) else ""
    return ModelLoadError(f"Could not load {kind} {name!r} {where}: {type(e).__name__}: {reason} {fix}")


def _damaged_file(directory: Path) -> str | None:
    """Which file of a saved model folder cannot be parsed, and why; None if all can."""
    for file in sorted(directory.glob("*.json")):
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            return f"the file {str(file)!r} is damaged or truncated (not valid JSON: {e})"
    for file in sorted(directory.glob("*.safetensors")):
        try:
            from safetensors import SafetensorError, safe_open

            with safe_open(str(file), framework="pt"):
                pass
        except ImportError:  # pragma: no cover - transformers requires safetensors
            return None
        except (OSError, SafetensorError) as e:
            return f"the file {str(file)!r} is damaged or truncated ({type(e).__name__}: {e})"
    return None


def _ensure_pad(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding, and a pad token distinct from EOS (added as ``<|pad|>`` if needed)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None or (
        tokenizer.eos_token is not None and tokenizer.pad_token_id == tokenizer.eos_token_id
    ):
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        logger.info("added pad token %r (id %d)", PAD_TOKEN, tokenizer.pad_token_id)
    return tokenizer


def load_tokenizer(
    name_or_path: str | os.PathLike[str] = BUILTIN,
    *,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> PreTrainedTokenizerBase:
    """A tokenizer by name or path, with left padding and a pad token distinct from EOS.

    If the tokenizer had no pad token (or its pad was EOS), ``<|pad|>`` is added, so
    ``len(tokenizer)`` may exceed the model's vocabulary: use
    :func:`load_model_and_tokenizer` to get a model resized to match.

    Args:
        name_or_path: ``"builtin"``, a local directory, or a Hugging Face name.
        trust_remote_code: passed to ``AutoTokenizer.from_pretrained``.
        **kwargs: passed to ``AutoTokenizer.from_pretrained``.

    Raises:
        ModelLoadError: if it cannot be loaded (offline, not found, malformed).
    """
    from transformers import AutoTokenizer

    tok = _load("tokenizer", AutoTokenizer, name_or_path, trust_remote_code=trust_remote_code,
                **kwargs)
    return _ensure_pad(tok)


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise InvalidArgument(
            f"Unknown dtype {dtype!r}; use a torch.dtype or one of 'float32', 'float16', "
            "'bfloat16', 'auto'."
        )
    return value


def load_lm(
    name_or_path: str | os.PathLike[str] = BUILTIN,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """A causal LM (``AutoModelForCausalLM``) by name or path, in eval mode.

    The model's embeddings are not resized here; when a tokenizer gains a pad token, use
    :func:`load_model_and_tokenizer`.

    Args:
        name_or_path: ``"builtin"``, a local directory, or a Hugging Face name.
        trust_remote_code: passed to ``from_pretrained``.
        dtype: a torch dtype or its name (``"float32"``, ``"bfloat16"``, ``"auto"``).
        device: where to move the model (default: CPU).
        **kwargs: passed to ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        ModelLoadError: if it cannot be loaded (offline, not found, malformed).
    """
    from transformers import AutoModelForCausalLM

    check_device(device)
    torch_dtype = _torch_dtype(dtype)
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    model = _load("model", AutoModelForCausalLM, name_or_path,
                  trust_remote_code=trust_remote_code, **kwargs)
    if device is not None:
        model = model.to(device)
    return fuse_activations(model).eval()


def fuse_activations(model: Any) -> Any:
    """``model`` with each GPT-2 style ``"gelu_new"`` activation (a Python formula of six
    elementwise kernels, forward and backward) replaced by torch's fused tanh GELU, the same
    function to 1e-7; returns the model. Config and weights are unchanged, so saved
    checkpoints are what they were."""
    from transformers import activations

    fused = getattr(activations, "GELUTanh", None) or activations.PytorchGELUTanh
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is activations.NewGELUActivation:
                setattr(module, name, fused())
    return model


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike[str] = BUILTIN,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    tokenizer_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer, consistent with each other: left padding, a pad
    token distinct from EOS, and the embeddings resized if the pad token was added beyond
    the model's vocabulary. ``model.config.pad_token_id`` (and the generation config's)
    are set to the tokenizer's. Returns new objects on every call (see
    :func:`load_frozen` for a shared read-only copy).

    Raises:
        ModelLoadError: if either cannot be loaded (offline, not found, malformed).
    """
    check_device(device)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code,
                               **(tokenizer_kwargs or {}))
    model = load_lm(name_or_path, trust_remote_code=trust_remote_code, dtype=dtype,
                    device=device, **model_kwargs)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        logger.info("resizing token embeddings of %s from %d to %d", name_or_path, rows,
                    len(tokenizer))
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@functools.lru_cache(maxsize=8)
def _frozen(name: str, dtype: str, device: str) -> tuple[Any, Any]:
    model, tokenizer = load_model_and_tokenizer(
        name, dtype=None if dtype == "None" else dtype, device=None if device == "None" else device
    )
    model.requires_grad_(False)
    return model, tokenizer


def load_frozen(
    name_or_path: str | os.PathLike[str] = BUILTIN,
    *,
    dtype: str | None = None,
    device: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A shared, read-only ``(model, tokenizer)``: cached per process, so every call with
    the same arguments returns the *same* objects. The model is in eval mode with
    ``requires_grad=False``; use it for scoring (fluency, a frozen KL reference), never
    train or modify it or the tokenizer. For a trainable copy use
    :func:`load_model_and_tokenizer`.

    Raises:
        ModelLoadError: if it cannot be loaded (offline, not found, malformed).
    """
    raw = _check_name(name_or_path)
    check_device(device)
    path = Path(raw).expanduser()
    key = str(path.resolve()) if raw not in BUILTIN_MODELS and path.is_dir() else raw  # one entry per dir
    return _frozen(key, str(dtype), str(device))


def load_classifier(
    name_or_path: str | os.PathLike[str] = BUILTIN,
    *,
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence classifier (``AutoModelForSequenceClassification``) and its tokenizer,
    frozen, in eval mode. ``"builtin"`` is the shipped classifier of the corpus's
    sentiment and topic labels. A tokenizer without a pad token pads with EOS (the
    Hugging Face convention for GPT-2 classifiers); its padding side is kept.

    Raises:
        ModelLoadError: if it cannot be loaded (offline, not found, malformed).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source: Any = name_or_path
    if os.fspath(name_or_path) == BUILTIN:
        source = builtin_classifier_path()
        if not (source / "config.json").is_file():
            raise ModelLoadError(
                f"The built-in classifier is missing from {source}; reinstall lm-gym or recreate "
                "it with lm_gym.models.classifier.pretrain_classifier(path)."
            )
    tokenizer = _load("tokenizer", AutoTokenizer, source, trust_remote_code=trust_remote_code)
    model = _load("classifier", AutoModelForSequenceClassification, source,
                  trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        model = model.to(device)
    model.requires_grad_(False)
    return model.eval(), tokenizer


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded batch: ``cumsum(mask) - 1`` clipped at 0, so each
    row's first real token has position 0 (padding gets 0 too; it is masked anyway).

    Args:
        attention_mask: ``(B, T)`` of 0/1.

    Returns:
        ``(B, T)`` int64.
    """
    mask = attention_mask.long()  # (B, T)
    return (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
