"""Inference kernels for GPT-2's MLP: ``c_fc``, the tanh GELU and ``c_proj`` through oneDNN.

torch's tanh-GELU kernel is a separate pass over the (tokens, 4 x hidden) activations, and
on CPUs it costs about as much as the ``c_fc`` matmul before it. oneDNN (shipped in torch's
CPU builds) applies the GELU as the matmul's post-op on pre-packed weights, so without
gradients (the decode steps, the fluency judge, a frozen reference) the MLP costs its two
matmuls. With gradients nothing changes: autograd needs the pre-activation, and torch's
kernels keep it.

Imported by :func:`lm_gym.models.fuse_activations`, which every loader and ``LMPolicy``
apply; importing this module imports torch and transformers. ``LM_GYM_ONEDNN=0`` in the
environment keeps torch's own kernels everywhere (e.g. to compare the two).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.weak import WeakIdKeyDictionary
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
from transformers.pytorch_utils import Conv1D

__all__ = [
    "InferenceConv1D",
    "InferenceFusedGPT2MLP",
    "InferenceLinear",
    "forget",
    "inference_linear",
    "onednn_linear_available",
]

logger = logging.getLogger(__name__)

_STATE: dict[str, bool | None] = {"onednn": None}  # None: not checked yet


def onednn_linear_available() -> bool:
    """Whether the oneDNN path is on: this torch build has oneDNN's fused linear ops and the
    environment variable ``LM_GYM_ONEDNN`` is not ``0`` (checked once; a failing call turns
    the path off for the process)."""
    if _STATE["onednn"] is None:
        ops = torch.ops.mkldnn
        _STATE["onednn"] = bool(
            os.environ.get("LM_GYM_ONEDNN", "1") != "0"
            and torch.backends.mkldnn.is_available()
            and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight")
        )
    return bool(_STATE["onednn"])


class _PackedWeights:
    """oneDNN's pre-packed copy of each weight, rebuilt when the weight changes: its in-place
    version counter or its storage moved (a load, an in-place edit), or an optimizer stepped
    it (a hook on every optimizer's step drops its copies: torch's fused Adam updates in place
    without bumping the version counter). Writes through ``.data`` bypass both, as they
    bypass autograd; call :func:`forget` after them. Kept in a weak
    map keyed by the weight's identity, so ``deepcopy``, ``state_dict`` and saving never see it."""

    def __init__(self) -> None:
        self._entries: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> (key, packed)

    def get(self, weight: torch.nn.Parameter, transposed: bool = True) -> torch.Tensor:
        """The packed (out, in) form of ``weight``: a ``Conv1D`` weight stored (in, out)
        (``transposed``), or an ``nn.Linear`` one stored (out, in)."""
        key = (weight._version, weight.data_ptr(), transposed)
        hit = self._entries.get(weight)
        if hit is None or hit[0] != key:
            w = weight.detach()
            with torch.no_grad():
                hit = (key, torch.ops.mkldnn._reorder_linear_weight((w.t() if transposed else w).contiguous()))
            self._entries[weight] = hit
        return hit[1]

    def drop(self, weight: torch.Tensor) -> None:
        self._entries.pop(weight, None)


_PACKED = _PackedWeights()


def forget(model: torch.nn.Module) -> None:
    """Drop the packed copies of ``model``'s weights (they are rebuilt on next use)."""
    for p in model.parameters():
        _PACKED.drop(p)


def _forget_stepped(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """After any optimizer's step: drop the packed copies of the weights it updated. (A
    non-fused step bumps their version counters anyway; torch's fused Adam does not.)"""
    for group in optimizer.param_groups:
        for p in group["params"]:
            _PACKED.drop(p)


register_optimizer_step_post_hook(_forget_stepped)


def _fast(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's path applies: no gradients, CPU, float32, ops available."""
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and onednn_linear_available()
    )


def _onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor | None:
    """oneDNN's linear (with the tanh GELU as post-op), or None if this build rejects it
    (then torch's kernels from now on)."""
    try:
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "gelu", [], "tanh")
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    except RuntimeError as exc:
        logger.info("oneDNN linear unavailable (%s); using torch's kernels", exc)
        _STATE["onednn"] = False
        return None


class InferenceConv1D(Conv1D):
    """GPT-2's ``Conv1D`` (same parameters); without gradients on a CPU in float32, one
    oneDNN matmul on the pre-packed weight (10-15 % faster than torch's BLAS call at GPT-2's
    shapes on the CPUs measured). Otherwise ``Conv1D``'s own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast(x, self.weight):
            out = _onednn_linear(x, _PACKED.get(self.weight), self.bias)
            if out is not None:
                return out
        return super().forward(x)


class InferenceFusedGPT2MLP(GPT2MLP):
    """GPT-2's MLP (same parameters, same state dict). Without gradients, on a CPU in
    float32, ``c_fc`` with the tanh GELU runs as one oneDNN kernel: GPT-2's function to
    float rounding (~1e-6), without torch's separate GELU pass over the (tokens, 4 x hidden)
    activations. With gradients, or on any other device or dtype, GPT-2's own forward."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if _fast(hidden_states, self.c_fc.weight):
            h = _onednn_linear(hidden_states, _PACKED.get(self.c_fc.weight), self.c_fc.bias, gelu=True)
            if h is not None:
                return self.dropout(self.c_proj(h))
        return super().forward(hidden_states)


def inference_linear(x: torch.Tensor, weight: torch.nn.Parameter, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for an ``nn.Linear``-layout (out, in) weight; without
    gradients on a CPU in float32, through oneDNN on the pre-packed weight (e.g. a decode
    step's LM head, a (N, H) x (H, V) product oneDNN runs ~15 % faster than torch's BLAS here)."""
    if _fast(x, weight):
        out = _onednn_linear(x, _PACKED.get(weight, transposed=False), bias)
        if out is not None:
            return out
    return torch.nn.functional.linear(x, weight, bias)


class InferenceLinear(torch.nn.Linear):
    """``nn.Linear`` (same parameters, ties kept) through :func:`inference_linear`: a GPT-2
    LM head, whose (tokens, H) x (H, V) product is an LM pass's largest matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return inference_linear(x, self.weight, self.bias)
