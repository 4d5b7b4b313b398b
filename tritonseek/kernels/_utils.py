"""Shared helpers for the Triton launchers: interpreter detection and input validation."""

from __future__ import annotations

import os

import torch


def interpreter_active() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``).

    The interpreter stores bfloat16 as raw 16-bit integers, so ``tl.dot`` on bf16 operands is
    wrong there (triton-lang/triton#11584); kernels use this to pick an fp32 dot dtype under the
    interpreter while the GPU path keeps bf16 tensor-core dots.
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_tensor(
    name: str,
    t: object,
    *,
    dtype: torch.dtype | tuple[torch.dtype, ...] | None = None,
    ndim: int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``t`` is a tensor as described."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtype is not None:
        allowed = dtype if isinstance(dtype, tuple) else (dtype,)
        if t.dtype not in allowed:
            names = " or ".join(str(d) for d in allowed)
            raise TypeError(f"{name} must have dtype {names}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (same device as the other inputs)")
    return t


def check_runnable_device(name: str, t: torch.Tensor) -> None:
    """Triton kernels run on CUDA tensors, or on CPU tensors only under the interpreter."""
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and interpreter_active():
        return
    raise ValueError(
        f"{name} is on {t.device}: the Triton backend needs CUDA tensors "
        "(or TRITON_INTERPRET=1 for the CPU interpreter); use backend='reference' on CPU"
    )
