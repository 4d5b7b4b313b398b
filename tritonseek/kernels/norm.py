"""RMSNorm kernels for the decode path: plain RMSNorm and RMSNorm fused with the residual add.

y = x / sqrt(mean(x²) + eps) · weight, computed in fp32 and rounded once to the output dtype
(DeepSeek-V3 inference/model.py RMSNorm). The fused form first forms the new residual
h = x + residual, rounded to the activation dtype exactly as torch's ``x + residual`` does, and
normalizes that rounded h: one read of x and residual, one write of h and y, one launch instead of
torch's ~8 (cast, square, mean, add eps, rsqrt, two multiplies, cast back, plus the add).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import (check_bool, check_positive_float, check_runnable_device, check_tensor,
                                      interpreter_active)
from tritonseek.kernels._host import cdiv, next_pow2
from tritonseek.kernels.fp8_quant import (
    AMAX_EPS,
    FP8_E4M3_MAX,
    _div_rn,
    _pdl_capable,
    _recip_rn,
    _scale_from_amax,
    _to_e4m3_interp,
)

_FLOAT_IN = (torch.bfloat16, torch.float16, torch.float32)
QUANT_GROUP = 128  # FP8 activation group (DeepSeek's 1×128 act_quant)


def _norm_config(n: int) -> tuple[int, int]:
    """(BLOCK_N, num_warps): the whole row in one block; more warps for wide rows (V3 hidden 7168)."""
    block = max(16, next_pow2(n))
    if block <= 1024:
        return block, 4
    if block <= 4096:
        return block, 8
    return block, 16


@triton.jit
def round_to_bf16(v):
    # Round-to-nearest-even of fp32 v onto the bf16 grid, still in fp32, so a following cast to
    # bf16 is exact. Used only under the CPU interpreter, whose fp32→bf16 cast truncates (seen with
    # triton 3.6.0: 33 of 64 random values off by one bf16 ulp); the GPU's cvt.rn is already right.
    bits = v.to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _rms_norm_row(
    row, x_ptr, r_ptr, w_ptr, y_ptr, h_ptr, q_ptr, s_ptr, N,
    stride_x, stride_r, stride_y, stride_h, stride_q, stride_sm, stride_sg, eps, amax_eps, fp8_max,
    HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, EXACT_BF16: tl.constexpr,
    QUANT: tl.constexpr, WRITE_Y: tl.constexpr, GROUP: tl.constexpr, EXACT_ROUND: tl.constexpr,
    FAST_DIV: tl.constexpr, UE8M0: tl.constexpr = False,
):
    # One row (int64 index row) of _rms_norm_kernel; also the q_a_layernorm half of rope_cache's MLA prologue.
    # x, residual, y, h: [T, N] rows at row·stride_*, last dim contiguous; weight: [N]
    # QUANT: q [T, N] e4m3 (row stride stride_q) and s [T, N/GROUP] fp32 at t·stride_sm + g·stride_sg:
    #   the per-token-group FP8 quant of the ROUNDED y (so q/s equal per_token_group_quant_fp8(y));
    #   WRITE_Y False skips y's store (only q/s are needed); UE8M0 rounds each scale up to a power of two first
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        h = x + r
        if EXACT_BF16:
            h = round_to_bf16(h)
        h = h.to(h_ptr.dtype.element_ty)  # the rounded sum torch's bf16 add would give
        tl.store(h_ptr + row * stride_h + cols, h, mask=mask)
        x = h.to(tl.float32)
    ms = tl.sum(x * x, axis=0) / N
    rstd = 1.0 / tl.sqrt_rn(ms + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = (x * rstd) * w
    if EXACT_BF16:
        y = round_to_bf16(y)
    y = y.to(y_ptr.dtype.element_ty)
    if WRITE_Y:
        tl.store(y_ptr + row * stride_y + cols, y, mask=mask)
    if QUANT:
        # [BLOCK_N] → [BLOCK_N / GROUP, GROUP]: one scale per group (masked tail columns are 0)
        yg = tl.reshape(tl.where(mask, y.to(tl.float32), 0.0), [BLOCK_N // GROUP, GROUP])
        sc = _scale_from_amax(tl.max(tl.abs(yg), axis=1), amax_eps, fp8_max, UE8M0)
        qv = _div_rn(yg, sc[:, None], _recip_rn(sc)[:, None], FAST_DIV)
        if EXACT_ROUND:
            # the interpreter's cast, as fp8_quant's kernels take it (round to nearest-even, NaN kept as 0x7F): the
            # clamp here dropped NaN and the interpreter cast it to 0x7C (384), so a NaN row's q was finite while
            # per_token_group_quant_fp8 of the same y writes NaN (tester23 #10); fp8_max is FP8_E4M3_MAX there too
            qv = _to_e4m3_interp(qv, q_ptr.dtype.element_ty)
        gi = tl.arange(0, BLOCK_N // GROUP)
        qcols = gi[:, None] * GROUP + tl.arange(0, GROUP)[None, :]
        tl.store(q_ptr + row * stride_q + qcols, qv.to(q_ptr.dtype.element_ty), mask=qcols < N)
        tl.store(s_ptr + row * stride_sm + gi * stride_sg, sc, mask=gi * GROUP < N)


@triton.jit
def _rms_norm_kernel(
    x_ptr, r_ptr, w_ptr, y_ptr, h_ptr, q_ptr, s_ptr, N,
    stride_x, stride_r, stride_y, stride_h, stride_q, stride_sm, stride_sg, eps, amax_eps, fp8_max,
    HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, EXACT_BF16: tl.constexpr,
    QUANT: tl.constexpr = False, WRITE_Y: tl.constexpr = True, GROUP: tl.constexpr = 128,
    EXACT_ROUND: tl.constexpr = False, FAST_DIV: tl.constexpr = True, PDL_TRIGGER: tl.constexpr = False,
    UE8M0: tl.constexpr = False,
):
    # PDL_TRIGGER (Hopper): the kernel that reads y or q/s next, when launched with PDL (the small-M FP8 GEMM,
    # the fused router), may launch now and stream its weights; it waits for this grid's completion before
    # reading this kernel's outputs
    if PDL_TRIGGER:
        tl.extra.cuda.gdc_launch_dependents()
    # program t: row t (the whole row fits one block); shapes/strides: _rms_norm_row
    _rms_norm_row(tl.program_id(0).to(tl.int64), x_ptr, r_ptr, w_ptr, y_ptr, h_ptr, q_ptr, s_ptr, N,
                  stride_x, stride_r, stride_y, stride_h, stride_q, stride_sm, stride_sg, eps, amax_eps, fp8_max,
                  HAS_RESIDUAL, BLOCK_N, EXACT_BF16, QUANT, WRITE_Y, GROUP, EXACT_ROUND, FAST_DIV, UE8M0)


def _check_rows(name: str, t: torch.Tensor, n: int, dev) -> None:
    check_tensor(name, t, dtype=_FLOAT_IN, ndim=2, device=dev)
    if t.shape[1] != n:
        raise ValueError(f"{name} has {t.shape[1]} columns, weight {n}")
    if t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"{name} needs a contiguous last dim, strides {t.stride()}")


def _launch(x, residual, weight, eps, quant: bool = False, write_y: bool = True, ue8m0: bool = False):
    # the shared rule (as rope_cache): eps=True passed as 1, eps=inf gave an all-zero output, eps="x" was a ValueError
    check_positive_float("eps", eps)
    # contiguous: the kernel reads weight at unit stride, so a strided view (w[::2]) was read as other entries and
    # the output was silently wrong (h3tester s24 #1); refused like vLLM's rms_norm, no hidden copy on the hot path
    check_tensor("weight", weight, dtype=_FLOAT_IN, ndim=1, contiguous=True)
    check_runnable_device("weight", weight)
    dev = weight.device
    n = weight.shape[0]
    if n == 0:
        raise ValueError("weight is empty (hidden size 0)")
    _check_rows("x", x, n, dev)
    if residual is not None:
        _check_rows("residual", residual, n, dev)
        if residual.shape != x.shape or residual.dtype != x.dtype:
            raise ValueError(f"residual {tuple(residual.shape)} {residual.dtype} must match x "
                             f"{tuple(x.shape)} {x.dtype}")
    t = x.shape[0]
    y = torch.empty(x.shape if write_y else (0, n), dtype=x.dtype, device=dev)
    h = torch.empty(x.shape, dtype=x.dtype, device=dev) if residual is not None else None
    q = s = None
    if quant:
        q = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=dev)
        s = torch.empty((cdiv(n, QUANT_GROUP), t), dtype=torch.float32, device=dev).t()  # MN-major
    if t == 0:
        return y, h, q, s
    block, warps = _norm_config(n)
    if quant:
        block = max(block, QUANT_GROUP)
    interp = interpreter_active()
    _rms_norm_kernel[(t,)](
        x, residual if residual is not None else x, weight, y, h if h is not None else y,
        q if q is not None else y, s if s is not None else y, n,
        x.stride(0), residual.stride(0) if residual is not None else 0, y.stride(0) if write_y else 0,
        h.stride(0) if h is not None else 0, q.stride(0) if quant else 0,
        s.stride(0) if quant else 0, s.stride(1) if quant else 0, float(eps), AMAX_EPS, FP8_E4M3_MAX,
        HAS_RESIDUAL=residual is not None, BLOCK_N=block,
        EXACT_BF16=interp and x.dtype == torch.bfloat16, QUANT=quant, WRITE_Y=write_y, GROUP=QUANT_GROUP,
        EXACT_ROUND=interp, FAST_DIV=not interp, PDL_TRIGGER=_pdl_capable(dev), num_warps=warps,
        **({"UE8M0": True} if ue8m0 else {}),  # off: the launch (and compiled kernel) of before the keyword
    )
    return y, h, q, s


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y = x / sqrt(mean(x², -1) + eps) · weight, in fp32, rounded once to x.dtype.

    x: [T, N] bf16/fp16/fp32, last dim contiguous (any row stride); weight: [N] bf16/fp16/fp32 (read as fp32),
    contiguous (a strided view is a ValueError: pass ``weight.contiguous()``); eps: a finite float > 0.
    Returns y: [T, N] x.dtype, contiguous.
    Raises TypeError (dtype; eps not an int/float, e.g. a bool or a str) or ValueError (shape, device, layout incl.
    a non-contiguous weight; eps ≤ 0 or not finite).
    Semantics: DeepSeek-V3 inference/model.py ``RMSNorm`` (HF DeepseekV3RMSNorm).
    """
    return _launch(x, None, weight, eps)[0]


def rms_norm_quant_fp8(x: torch.Tensor, weight: torch.Tensor, eps: float, *,
                       scale_ue8m0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, s) = per_token_group_quant_fp8(rms_norm(x, weight, eps), 128, scale_ue8m0) in one kernel; y not written.

    x: [T, N] bf16/fp16/fp32, last dim contiguous; weight: [N] bf16/fp16/fp32, contiguous; eps: a finite float > 0;
    scale_ue8m0: a bool (numpy bool too): round each scale up to a power of two before quantizing (DeepSeek-V3.1's
    ``quantization_config.scale_fmt: "ue8m0"``; off by default). Returns q [T, N] float8_e4m3fn
    (row-major) and s [T, ceil(N/128)] fp32 MN-major (stride (1, T)): bit-equal to quantizing the rounded
    ``rms_norm`` output (amax clamped ≥ 1e-4, scale = amax/448), the layout ``fp8_gemm_nt`` reads.
    Raises TypeError (dtype; eps not an int/float, e.g. a bool or a str; scale_ue8m0 not a bool) or ValueError
    (shape, device, layout incl. a non-contiguous weight; eps ≤ 0 or not finite).
    Semantics: DeepSeek-V3 RMSNorm followed by act_quant (vLLM's fused rms_norm + per-token-group quant).
    """
    ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    _, _, q, s = _launch(x, None, weight, eps, quant=True, write_y=False, ue8m0=ue8m0)
    return q, s


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + residual (rounded to x.dtype); y = h / sqrt(mean(h², -1) + eps) · weight.

    x: [T, N] bf16/fp16/fp32 (the sublayer output), residual: [T, N] same dtype (the stream so far),
    both last dim contiguous; weight: [N] bf16/fp16/fp32, contiguous; eps: a finite float > 0.
    Returns (y [T, N] x.dtype normed input of the next sublayer, h [T, N] x.dtype the new
    residual); the inputs are not modified.
    Raises TypeError (dtype; eps not an int/float, e.g. a bool or a str) or ValueError (shape, device, layout incl.
    a non-contiguous weight; eps ≤ 0 or not finite).
    Semantics: vLLM ``fused_add_rms_norm`` / FlashInfer ``fused_add_rmsnorm`` (out of place).
    """
    if residual is None:
        raise TypeError("residual must be a torch.Tensor, got None (use rms_norm)")
    y, h, _, _ = _launch(x, residual, weight, eps)
    return y, h


def fused_add_rms_norm_quant_fp8(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                                 eps: float, *, scale_ue8m0: bool = False
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h = x + residual; (q, s) = per_token_group_quant_fp8(rms_norm(h), 128, scale_ue8m0), one kernel (no y).

    x, residual: [T, N] same dtype (bf16/fp16/fp32), last dim contiguous; weight: [N] bf16/fp16/fp32, contiguous;
    eps: a finite float > 0; scale_ue8m0: a bool, power-of-two scales as in ``rms_norm_quant_fp8``.
    Returns (q [T, N] float8_e4m3fn, s [T, ceil(N/128)] fp32 MN-major, h [T, N] x.dtype): q/s bit-equal
    to quantizing ``fused_add_rms_norm``'s y, h equal to its h. Inputs are not modified.
    Raises TypeError (dtype; eps not an int/float, e.g. a bool or a str; scale_ue8m0 not a bool) or ValueError
    (shape, device, layout incl. a non-contiguous weight; eps ≤ 0 or not finite).
    Semantics: vLLM fused_add_rms_norm followed by per_token_group_quant_fp8, fused.
    """
    if residual is None:
        raise TypeError("residual must be a torch.Tensor, got None (use rms_norm_quant_fp8)")
    ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    _, h, q, s = _launch(x, residual, weight, eps, quant=True, write_y=False, ue8m0=ue8m0)
    return q, s, h
