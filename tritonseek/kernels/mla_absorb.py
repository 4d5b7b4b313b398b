"""MLA weight absorption at decode: the per-head W_UK / W_UV products around the latent attention.

q_lat[t, h, c] = Σ_d q_nope[t, h, d] · W_UK[h, d, c]       (then qa = [q_lat ‖ q_pe] for mla_decode)
o[t, h, d]     = Σ_c o_lat[t, h, c] · W_UV[h, d, c]       (o_lat = mla_decode's latent output)

At decode T (tokens) is small and both products are weight-streaming: W_UK and W_UV are each
h·128·512 bf16 (16.8 MB per layer at 128 heads). One program owns one head × one tile of the
weight (BLOCK_C latent columns of W_UK, or BLOCK_D value rows of W_UV), loads it once and loops
over the tokens in BLOCK_T tiles, so every weight byte is read once per call; products accumulate
in fp32 on the tensor cores (bf16 operands; fp32 under the CPU interpreter, which cannot compute on
bf16) and are rounded once to the output dtype. ``mla_absorb_q`` writes straight into the
[T, h, kv_lora_rank + qk_rope_head_dim] query buffer and copies q_pe behind it (no torch.cat).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels._utils import check_runnable_device, check_tensor, interpreter_active

_FLOAT = (torch.bfloat16, torch.float16)


def _absorb_config(t: int) -> tuple[int, int]:
    """(BLOCK_T, num_warps): token tile ≥ 16 (tensor-core minimum), more warps for bigger tiles."""
    block_t = 16 if t <= 16 else (32 if t <= 32 else 64)
    return block_t, 4


@triton.jit
def _mla_absorb_q_kernel(
    q_nope_ptr, w_desc, q_pe_ptr, out_ptr, T,
    stride_qt, stride_qh, stride_pt, stride_ph, stride_ot, stride_oh,
    NOPE: tl.constexpr, KV_LORA: tl.constexpr, ROPE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, DOT_FP32: tl.constexpr,
):
    # q_nope: [T, H, NOPE] (strides stride_qt, stride_qh, 1)   w_desc: TMA over W_UK as [H·NOPE, KV_LORA], box [NOPE, BLOCK_C]
    # q_pe:   [T, H, ROPE] (stride_pt, stride_ph, 1)           out: [T, H, KV_LORA + ROPE] (stride_ot, stride_oh, 1)
    # grid (H, KV_LORA // BLOCK_C): program (h, j) writes out[:, h, j·BLOCK_C : (j+1)·BLOCK_C]; j = 0 also copies q_pe
    h = tl.program_id(0)
    j = tl.program_id(1)
    rd = tl.arange(0, NOPE)
    rc = j * BLOCK_C + tl.arange(0, BLOCK_C)
    w = w_desc.load([h * NOPE, j * BLOCK_C])  # [NOPE, BLOCK_C]
    if DOT_FP32:
        w = w.to(tl.float32)
    rp = tl.arange(0, ROPE)
    for t0 in range(0, T, BLOCK_T):
        rt = t0 + tl.arange(0, BLOCK_T)
        tmask = rt < T
        q = tl.load(q_nope_ptr + rt[:, None].to(tl.int64) * stride_qt + h * stride_qh + rd[None, :],
                    mask=tmask[:, None], other=0.0)
        if DOT_FP32:
            q = q.to(tl.float32)
        acc = tl.dot(q, w)  # [BLOCK_T, BLOCK_C] fp32
        o_rows = out_ptr + rt[:, None].to(tl.int64) * stride_ot + h * stride_oh
        tl.store(o_rows + rc[None, :], acc.to(out_ptr.dtype.element_ty), mask=tmask[:, None])
        if j == 0:
            pe = tl.load(q_pe_ptr + rt[:, None].to(tl.int64) * stride_pt + h * stride_ph + rp[None, :],
                         mask=tmask[:, None], other=0.0)
            tl.store(o_rows + KV_LORA + rp[None, :], pe.to(out_ptr.dtype.element_ty), mask=tmask[:, None])


@triton.jit
def _mla_absorb_o_kernel(
    o_lat_ptr, w_desc, out_ptr, T,
    stride_lt, stride_lh, stride_ot, stride_oh,
    V_DIM: tl.constexpr, KV_LORA: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, DOT_FP32: tl.constexpr,
):
    # o_lat: [T, H, KV_LORA] (stride_lt, stride_lh, 1)   w_desc: TMA over W_UV as [H·V_DIM, KV_LORA], box [BLOCK_D, BLOCK_C]
    # out:   [T, H, V_DIM] (stride_ot, stride_oh, 1)
    # grid (H, V_DIM // BLOCK_D): program (h, j) writes out[:, h, j·BLOCK_D : (j+1)·BLOCK_D], the
    # whole KV_LORA contraction in BLOCK_C chunks (the weight tile stays in registers across tokens)
    h = tl.program_id(0)
    j = tl.program_id(1)
    rdv = j * BLOCK_D + tl.arange(0, BLOCK_D)
    rc = tl.arange(0, BLOCK_C)
    for t0 in range(0, T, BLOCK_T):
        rt = t0 + tl.arange(0, BLOCK_T)
        tmask = rt < T
        acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
        for c0 in tl.range(0, KV_LORA, BLOCK_C):  # streamed (pipelined), not unrolled: the tiles stay in flight
            w = w_desc.load([h * V_DIM + j * BLOCK_D, c0])  # [BLOCK_D, BLOCK_C]
            x = tl.load(o_lat_ptr + rt[:, None].to(tl.int64) * stride_lt + h * stride_lh + c0 + rc[None, :],
                        mask=tmask[:, None], other=0.0)  # [BLOCK_T, BLOCK_C]
            if DOT_FP32:
                w = w.to(tl.float32)
                x = x.to(tl.float32)
            acc += tl.dot(x, w.T)
        tl.store(out_ptr + rt[:, None].to(tl.int64) * stride_ot + h * stride_oh + rdv[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=tmask[:, None])


def mla_absorb_supported(qk_nope_head_dim: int, kv_lora_rank: int, qk_rope_head_dim: int, v_head_dim: int) -> bool:
    """True when every width is a power of two ≥ 16 (the kernels' tiles; DeepSeek: 128, 512, 64, 128)."""
    return all(v >= 16 and not v & (v - 1) for v in (qk_nope_head_dim, kv_lora_rank, qk_rope_head_dim, v_head_dim))


def _check_pow2(name: str, v: int) -> None:
    if v < 16 or v & (v - 1):
        raise ValueError(f"{name} must be a power of two ≥ 16, got {v}")


def mla_absorb_q(
    q_nope: torch.Tensor, w_uk: torch.Tensor, q_pe: torch.Tensor, out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """qa[t, h] = [Σ_d q_nope[t, h, d]·W_UK[h, d, :] ‖ q_pe[t, h]] (fp32 accumulation, one rounding).

    q_nope: [T, num_heads, qk_nope_head_dim] bf16/fp16, last dim contiguous (a view of q_b_proj's
    output is fine). w_uk: [num_heads, qk_nope_head_dim, kv_lora_rank] same dtype, contiguous
    (kv_b_proj's key half per head). q_pe: [T, num_heads, qk_rope_head_dim] same dtype, last dim
    contiguous (roped). out: optional [T, num_heads, kv_lora_rank + qk_rope_head_dim] buffer with a
    contiguous last dim; else allocated in out_dtype: bf16, fp16 or fp32 (default q_nope.dtype).
    Returns out (the absorbed query mla_decode takes). qk_nope_head_dim, kv_lora_rank and
    qk_rope_head_dim must be powers of two ≥ 16 (128, 512, 64 in DeepSeek).
    Raises TypeError (dtype, including an out_dtype other than bf16/fp16/fp32, e.g. an integer or FP8
    dtype, which the kernel's store would wrap) or ValueError (shape, device, layout, out vs out_dtype).
    Semantics: DeepSeek-V3 inference/model.py MLA attn_impl="absorb" (einsum "bshd,hdc->bshc").
    """
    check_tensor("q_nope", q_nope, dtype=_FLOAT, ndim=3)
    check_runnable_device("q_nope", q_nope)
    dev = q_nope.device
    check_tensor("w_uk", w_uk, dtype=q_nope.dtype, ndim=3, device=dev)
    check_tensor("q_pe", q_pe, dtype=q_nope.dtype, ndim=3, device=dev)
    T, H, nope = q_nope.shape
    if w_uk.shape[:2] != (H, nope):
        raise ValueError(f"w_uk must be [num_heads {H}, qk_nope_head_dim {nope}, kv_lora_rank], got {tuple(w_uk.shape)}")
    kv_lora = w_uk.shape[2]
    if q_pe.shape[:2] != (T, H):
        raise ValueError(f"q_pe must be [T {T}, num_heads {H}, qk_rope_head_dim], got {tuple(q_pe.shape)}")
    rope = q_pe.shape[2]
    for name, v in (("qk_nope_head_dim", nope), ("kv_lora_rank", kv_lora), ("qk_rope_head_dim", rope)):
        _check_pow2(name, v)
    if not w_uk.is_contiguous() or w_uk.data_ptr() % 16:
        raise ValueError(f"w_uk must be contiguous with a 16-byte aligned base (TMA), strides {w_uk.stride()}")
    if q_nope.stride(2) != 1 or q_pe.stride(2) != 1:
        raise ValueError(f"q_nope and q_pe need a contiguous last dim, strides {q_nope.stride()} {q_pe.stride()}")
    if out_dtype is not None and out_dtype not in _FLOAT + (torch.float32,):
        raise TypeError(f"out_dtype must be one of {_FLOAT + (torch.float32,)} or None, got {out_dtype!r}")
    if out is None:
        out = torch.empty((T, H, kv_lora + rope), dtype=out_dtype or q_nope.dtype, device=dev)
    else:
        check_tensor("out", out, dtype=_FLOAT + (torch.float32,), ndim=3, device=dev)
        if out_dtype is not None and out.dtype != out_dtype:
            raise ValueError(f"out is {out.dtype} but out_dtype is {out_dtype}")
        if tuple(out.shape) != (T, H, kv_lora + rope) or out.stride(2) != 1:
            raise ValueError(f"out must be [{T}, {H}, {kv_lora + rope}] with a contiguous last dim, got "
                             f"{tuple(out.shape)} strides {out.stride()}")
    if T == 0:
        return out
    block_t, warps = _absorb_config(T)
    block_c = min(64, kv_lora)  # 128-byte rows: one TMA box per swizzle span
    w_desc = TensorDescriptor(w_uk, [H * nope, kv_lora], [kv_lora, 1], [nope, block_c])
    _mla_absorb_q_kernel[(H, kv_lora // block_c)](
        q_nope, w_desc, q_pe, out, T,
        q_nope.stride(0), q_nope.stride(1), q_pe.stride(0), q_pe.stride(1),
        out.stride(0), out.stride(1),
        NOPE=nope, KV_LORA=kv_lora, ROPE=rope, BLOCK_T=block_t, BLOCK_C=block_c,
        DOT_FP32=interpreter_active(), num_warps=warps,
    )
    return out


def mla_absorb_o(o_lat: torch.Tensor, w_uv: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """o[t, h, d] = Σ_c o_lat[t, h, c]·W_UV[h, d, c] (fp32 accumulation, one rounding).

    o_lat: [T, num_heads, kv_lora_rank] bf16/fp16, last dim contiguous (mla_decode's output).
    w_uv: [num_heads, v_head_dim, kv_lora_rank] same dtype, contiguous (kv_b_proj's value half).
    out: optional [T, num_heads, v_head_dim] buffer (last dim contiguous), else allocated in o_lat.dtype.
    Returns out. v_head_dim and kv_lora_rank must be powers of two ≥ 16 (128, 512 in DeepSeek).
    Raises TypeError (dtype) or ValueError (shape, device, layout).
    Semantics: DeepSeek-V3 inference/model.py MLA attn_impl="absorb" (einsum "bshc,hdc->bshd").
    """
    check_tensor("o_lat", o_lat, dtype=_FLOAT, ndim=3)
    check_runnable_device("o_lat", o_lat)
    dev = o_lat.device
    check_tensor("w_uv", w_uv, dtype=o_lat.dtype, ndim=3, device=dev)
    T, H, kv_lora = o_lat.shape
    if w_uv.shape[0] != H or w_uv.shape[2] != kv_lora:
        raise ValueError(f"w_uv must be [num_heads {H}, v_head_dim, kv_lora_rank {kv_lora}], got {tuple(w_uv.shape)}")
    v_dim = w_uv.shape[1]
    _check_pow2("v_head_dim", v_dim)
    _check_pow2("kv_lora_rank", kv_lora)
    if not w_uv.is_contiguous() or w_uv.data_ptr() % 16:
        raise ValueError(f"w_uv must be contiguous with a 16-byte aligned base (TMA), strides {w_uv.stride()}")
    if o_lat.stride(2) != 1:
        raise ValueError(f"o_lat needs a contiguous last dim, strides {o_lat.stride()}")
    if out is None:
        out = torch.empty((T, H, v_dim), dtype=o_lat.dtype, device=dev)
    else:
        check_tensor("out", out, dtype=_FLOAT + (torch.float32,), ndim=3, device=dev)
        if tuple(out.shape) != (T, H, v_dim) or out.stride(2) != 1:
            raise ValueError(f"out must be [{T}, {H}, {v_dim}] with a contiguous last dim, got "
                             f"{tuple(out.shape)} strides {out.stride()}")
    if T == 0:
        return out
    block_t, warps = _absorb_config(T)
    block_d = min(32, v_dim)  # 4 programs per head at v_head_dim 128: 512 weight streams in flight at 128 heads
    block_c = min(64, kv_lora)
    w_desc = TensorDescriptor(w_uv, [H * v_dim, kv_lora], [kv_lora, 1], [block_d, block_c])
    _mla_absorb_o_kernel[(H, v_dim // block_d)](
        o_lat, w_desc, out, T,
        o_lat.stride(0), o_lat.stride(1), out.stride(0), out.stride(1),
        V_DIM=v_dim, KV_LORA=kv_lora, BLOCK_T=block_t, BLOCK_D=block_d, BLOCK_C=block_c,
        DOT_FP32=interpreter_active(), num_warps=warps, num_stages=4,
    )
    return out
