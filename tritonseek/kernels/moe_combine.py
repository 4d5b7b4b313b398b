"""MoE combine: the weighted sum of each token's expert outputs (moe_unpermute; split out of moe_routing.py,
which re-exports it). Specification: ``tritonseek.kernels.reference.moe.moe_unpermute_ref``.

The module is not named after its launcher: a submodule ``moe_unpermute`` would be bound as the package attribute
``tritonseek.kernels.moe_unpermute`` on import, hiding the launcher of that name (session 20)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import check_bool, check_no_alias, check_runnable_device, check_tensor
from tritonseek.kernels._host import cdiv, next_pow2
from tritonseek.kernels.fp8_quant import _pdl_capable
from tritonseek.kernels.moe_routing_checks import check_ids_in_range


@triton.jit
def _unpermute_kernel(
    y_ptr, row_map_ptr, w_ptr, shared_ptr, out_ptr,
    H, stride_y, stride_sh, stride_out,
    TOP_K: tl.constexpr, BLOCK_H: tl.constexpr, HAS_SHARED: tl.constexpr, PDL: tl.constexpr = False,
):
    if PDL:  # programmatic dependent launch: wait for the kernel before us (the down GEMM) before any read
        tl.extra.cuda.gdc_wait()
    # y: [M, H] expert outputs (row stride stride_y); row_map, w: [T, TOP_K] int32 / fp32 contiguous
    # shared: [T, H] (stride_sh); out: [T, H] (stride_out). Sum over slots in fixed order j = 0..k-1.
    # The k rows are loaded under masks (no branch on r), so all k loads are in flight together.
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cm = cols < H
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        r = tl.load(row_map_ptr + t * TOP_K + j).to(tl.int64)
        w = tl.load(w_ptr + t * TOP_K + j)
        v = tl.load(y_ptr + r * stride_y + cols, mask=cm & (r >= 0), other=0.0).to(tl.float32)
        acc += tl.where(r >= 0, w, 0.0) * v
    if HAS_SHARED:
        acc += tl.load(shared_ptr + t * stride_sh + cols, mask=cm, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * stride_out + cols, acc.to(out_ptr.dtype.element_ty), mask=cm)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------


def moe_unpermute(
    expert_out: torch.Tensor,
    row_map: torch.Tensor,
    topk_weights: torch.Tensor,
    shared_output: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    pdl: bool = False,
    check_ids: bool = True,
) -> torch.Tensor:
    """out[t] = Σ_j topk_weights[t, j] · expert_out[row_map[t, j]] (+ shared_output[t]), accumulated in fp32.

    expert_out: [M, H] bf16/fp16/fp32 (unit column stride), rows of the permuted layout; only rows named
    by row_map are read, so padding rows (any garbage, NaN included) never enter a sum.
    row_map: [T, k] int32 ids in [−1, M) (−1 contributes nothing); others raise ValueError naming the entry:
        always on CPU tensors, on CUDA when check_ids (default; one device→host sync, skipped during CUDA-graph
        capture). With check_ids=False (the model: row_map from its own permute) an id ≥ M or < −1 reads out of
        bounds, undefined behaviour.
    topk_weights: [T, k] fp32.
    shared_output: [T, H] bf16/fp16/fp32 (unit column stride) or None (shared-expert output, added in fp32 before
        the single cast).
    out: optional [T, H] expert_out.dtype destination; it must not alias the inputs (ValueError naming both), except
        that out may be shared_output itself (same tensor view: the shared-expert output updated in place, each
        element read and written by one program). Returns out [T, H] in expert_out.dtype.
    pdl: programmatic dependent launch (CUDA sm_90+, ignored elsewhere): the programs may start while the
        previous kernel (the down GEMM) finishes and wait for it (griddepcontrol.wait) before any read.
    Deterministic: one program owns each output element and sums slots in order j = 0..k−1 (no atomics).
    Raises TypeError/ValueError naming the argument for bad dtypes/shapes/devices, pdl / check_ids not a bool, an out
    that aliases an input.
    Follows DeepSeek-V3 inference/model.py MoE combine.
    """
    check_tensor("expert_out", expert_out, ndim=2)
    check_runnable_device("expert_out", expert_out)
    if not expert_out.is_floating_point() or expert_out.dtype == torch.float8_e4m3fn:
        raise TypeError(f"expert_out must be bf16/fp16/fp32, got {expert_out.dtype}")
    if expert_out.stride(1) != 1:
        raise ValueError(f"expert_out must have unit column stride, got strides {expert_out.stride()}")
    check_tensor("row_map", row_map, dtype=torch.int32, ndim=2, device=expert_out.device)
    check_tensor("topk_weights", topk_weights, dtype=torch.float32, ndim=2, device=expert_out.device)
    if topk_weights.shape != row_map.shape:
        raise ValueError(f"topk_weights {tuple(topk_weights.shape)} must match row_map {tuple(row_map.shape)}")
    check_ids_in_range("row_map", row_map, expert_out.shape[0], check_ids)
    T, k = row_map.shape
    H = expert_out.shape[1]
    if shared_output is not None:
        check_tensor("shared_output", shared_output, dtype=(torch.bfloat16, torch.float16, torch.float32), ndim=2,
                     device=expert_out.device)
        if tuple(shared_output.shape) != (T, H) or shared_output.stride(1) != 1:
            raise ValueError(f"shared_output must be [{T}, {H}] with unit column stride, got {tuple(shared_output.shape)}")
    pdl = check_bool("pdl", pdl)
    if out is not None:
        check_tensor("out", out, dtype=expert_out.dtype, ndim=2, device=expert_out.device, output=True)
        if tuple(out.shape) != (T, H) or out.stride(1) != 1:
            raise ValueError(f"out must be [{T}, {H}] with unit column stride, got {tuple(out.shape)}")
        check_no_alias("out", out, ("shared_output",), expert_out=expert_out, row_map=row_map,
                       topk_weights=topk_weights, shared_output=shared_output)
    else:
        out = torch.empty(T, H, dtype=expert_out.dtype, device=expert_out.device)
    if T == 0:
        return out
    use_pdl = pdl and _pdl_capable(expert_out.device)
    row_map = row_map.contiguous()
    topk_weights = topk_weights.contiguous()
    block_h = min(next_pow2(H), 2048)  # ~8 KiB of fp32 sums per program
    warps = 8 if block_h > 1024 else 4
    if T <= 16:  # decode: more, narrower programs (at T=1, H=7168: 14 instead of 4 SMs share the k row reads)
        block_h, warps = min(block_h, 512), 4
    _unpermute_kernel[(T, cdiv(H, block_h))](
        expert_out, row_map, topk_weights, shared_output if shared_output is not None else expert_out, out,
        H, expert_out.stride(0), shared_output.stride(0) if shared_output is not None else 0, out.stride(0),
        TOP_K=k, BLOCK_H=block_h, HAS_SHARED=shared_output is not None, PDL=use_pdl, num_warps=warps,
        launch_pdl=use_pdl,
    )
    return out


__all__ = ["moe_unpermute"]
