"""Host-side argument checks of the MoE launchers (routing, gate, masked grouped GEMM, routed experts).

Cheap Python checks, plus the id range check: it reads the ids (one device→host sync on CUDA) unless the caller
passes check_ids=False or the stream is being captured into a CUDA graph (kernels._utils.check_index_range). Errors are TypeError (wrong type; bools are not ints) or
ValueError (out of range), both naming the argument.
"""

from __future__ import annotations

import torch

from tritonseek.kernels._utils import check_bool, check_index_range, check_int, check_runnable_device, check_tensor


def check_ids_in_range(name: str, ids: torch.Tensor, hi: int, check_ids: bool) -> None:
    """ids must lie in [−1, hi): ValueError naming ``name``, the entry and its value otherwise. Always checked for
    CPU tensors (the interpreter: no sync to avoid); CUDA ids when check_ids (one sync, skipped during graph
    capture). Unchecked out-of-range CUDA ids are undefined behaviour (out-of-bounds reads/writes)."""
    if check_bool("check_ids", check_ids) or ids.device.type == "cpu":
        check_index_range(name, ids, -1, hi)


def check_permute_inputs(hidden, topk_ids, num_experts, hidden_scale, check_ids) -> int:
    """Shared checks of moe_permute / moe_permute_masked (tensors, num_experts, id range as check_ids_in_range).

    Returns int(num_experts)."""
    check_tensor("hidden", hidden, dtype=(torch.bfloat16, torch.float16, torch.float32, torch.float8_e4m3fn), ndim=2)
    check_runnable_device("hidden", hidden)
    check_tensor("topk_ids", topk_ids, dtype=(torch.int32, torch.int64), ndim=2, device=hidden.device)
    T, H = hidden.shape
    if topk_ids.shape[0] != T:
        raise ValueError(f"topk_ids must have {T} rows (one per token of hidden), got {tuple(topk_ids.shape)}")
    if H == 0:
        raise ValueError(f"hidden must have at least one column, got shape {tuple(hidden.shape)}")
    num_experts = check_int("num_experts", num_experts, 1)
    check_ids_in_range("topk_ids", topk_ids, num_experts, check_ids)
    if hidden.stride(1) != 1:
        raise ValueError(f"hidden must have unit column stride, got strides {hidden.stride()}")
    if hidden_scale is not None:
        check_tensor("hidden_scale", hidden_scale, ndim=2, device=hidden.device)
        check_tensor("hidden_scale", hidden_scale, dtype=torch.float32)
        if tuple(hidden_scale.shape) != (T, -(-H // 128)):
            raise ValueError(f"hidden_scale must be [{T}, ceil(H/128) = {-(-H // 128)}], got {tuple(hidden_scale.shape)}")
        if hidden.dtype != torch.float8_e4m3fn:
            raise ValueError(f"hidden_scale is for float8_e4m3fn hidden (its 1×128 scales), hidden is {hidden.dtype}")
    elif hidden.dtype == torch.float8_e4m3fn:
        raise ValueError("hidden is float8_e4m3fn but hidden_scale is None: FP8 rows must move with their scales")
    return num_experts
