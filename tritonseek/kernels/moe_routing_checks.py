"""Host-side argument checks of the MoE launchers (routing, gate, masked grouped GEMM, routed experts).

Cheap Python checks only: nothing here reads a CUDA tensor's values (no device→host sync), so the checks can
run inside CUDA-graph-captured decode steps. Errors are TypeError (wrong type; bools are not ints) or
ValueError (out of range), both naming the argument.
"""

from __future__ import annotations

import torch

from tritonseek.kernels._utils import check_int, check_runnable_device, check_tensor


def check_ids_in_range(name: str, ids: torch.Tensor, hi: int) -> None:
    """ids must lie in [−1, hi). Checked only for CPU tensors (the interpreter, where it costs nothing that
    matters); CUDA ids are NOT checked (a check would need a device→host sync) — out-of-range ids are undefined
    behaviour there."""
    if ids.device.type == "cpu" and ids.numel() and (int(ids.min()) < -1 or int(ids.max()) >= hi):
        raise ValueError(f"{name} must hold ids in [-1, {hi}), got values in [{int(ids.min())}, {int(ids.max())}]")


def check_permute_inputs(hidden, topk_ids, num_experts, hidden_scale) -> int:
    """Shared checks of moe_permute / moe_permute_masked (tensors, num_experts, CPU id range).

    Returns int(num_experts)."""
    check_tensor("hidden", hidden, ndim=2)
    check_runnable_device("hidden", hidden)
    check_tensor("topk_ids", topk_ids, dtype=(torch.int32, torch.int64), ndim=2, device=hidden.device)
    T, H = hidden.shape
    if topk_ids.shape[0] != T:
        raise ValueError(f"topk_ids must have {T} rows (one per token of hidden), got {tuple(topk_ids.shape)}")
    num_experts = check_int("num_experts", num_experts, 1)
    check_ids_in_range("topk_ids", topk_ids, num_experts)
    if hidden.stride(1) != 1:
        raise ValueError(f"hidden must have unit column stride, got strides {hidden.stride()}")
    if hidden_scale is not None:
        check_tensor("hidden_scale", hidden_scale, ndim=2, device=hidden.device)
        check_tensor("hidden_scale", hidden_scale, dtype=torch.float32)
        if hidden_scale.shape[0] != T:
            raise ValueError(f"hidden_scale must be [{T}, ceil(H/128)], got {tuple(hidden_scale.shape)}")
    elif hidden.dtype == torch.float8_e4m3fn:
        raise ValueError("hidden is float8_e4m3fn but hidden_scale is None: FP8 rows must move with their scales")
    return num_experts
