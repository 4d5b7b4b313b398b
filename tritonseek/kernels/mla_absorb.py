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

import numpy as np
import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels._utils import (check_bool, check_index_range, check_runnable_device, check_tensor,
                                      interpreter_active)
from tritonseek.kernels.fp8_gemm_small import _prefetch_l2
from tritonseek.kernels.fp8_quant import (
    AMAX_EPS,
    FP8_E4M3_MAX,
    _div_rn,
    _pdl_capable,
    _recip_rn,
    _round_to_e4m3,
    _scale_from_amax,
)
from tritonseek.kernels.rope_cache import _rotate

_FLOAT = (torch.bfloat16, torch.float16)


def _absorb_block_t(t: int) -> int:
    """BLOCK_T: the token tile, ≥ 16 (tensor-core minimum), up to 64."""
    return 16 if t <= 16 else (32 if t <= 32 else 64)


@triton.jit
def _mla_absorb_q_kernel(
    q_nope_ptr, w_desc, q_pe_ptr, out_ptr, pos_ptr, cs_ptr, T,
    stride_qt, stride_qh, stride_pt, stride_ph, stride_ot, stride_oh,
    NOPE: tl.constexpr, KV_LORA: tl.constexpr, ROPE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, DOT_FP32: tl.constexpr,
    ROTATE: tl.constexpr = False, EXACT_BF16: tl.constexpr = False, PDL: tl.constexpr = False,
):
    # q_nope: [T, H, NOPE] (strides stride_qt, stride_qh, 1)   w_desc: TMA over W_UK as [H·NOPE, KV_LORA], box [NOPE, BLOCK_C]
    # q_pe:   [T, H, ROPE] (stride_pt, stride_ph, 1)           out: [T, H, KV_LORA + ROPE] (stride_ot, stride_oh, 1)
    # grid (H, KV_LORA // BLOCK_C): program (h, j) writes out[:, h, j·BLOCK_C : (j+1)·BLOCK_C]; j = 0 also copies q_pe
    # ROTATE: q_pe is rotated on the way (interleaved RoPE, cos/sin = cs[positions[t]] as rope_cache), rounded
    # to q_pe's dtype first, so out equals copying mla_rope_cache's q_pe. PDL: launched as a programmatic
    # dependent, the weight tile is requested before waiting for the previous kernel (q_b_proj's GEMM)
    h = tl.program_id(0)
    j = tl.program_id(1)
    rd = tl.arange(0, NOPE)
    rc = j * BLOCK_C + tl.arange(0, BLOCK_C)
    w = w_desc.load([h * NOPE, j * BLOCK_C])  # [NOPE, BLOCK_C]
    if PDL:
        tl.extra.cuda.gdc_wait()
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
            if ROTATE:
                HALF: tl.constexpr = ROPE // 2
                pos = tl.load(pos_ptr + rt, mask=tmask, other=0).to(tl.int64)
                ri = tl.arange(0, HALF)[None, :]
                cos = tl.load(cs_ptr + pos[:, None] * ROPE + ri)
                sin = tl.load(cs_ptr + pos[:, None] * ROPE + HALF + ri)
                pe = _rotate(pe.to(tl.float32), cos, sin, BLOCK_T, ROPE, EXACT_BF16).to(q_pe_ptr.dtype.element_ty)
            tl.store(o_rows + KV_LORA + rp[None, :], pe.to(out_ptr.dtype.element_ty), mask=tmask[:, None])


@triton.jit
def _mla_absorb_o_kernel(
    o_lat_ptr, w_desc, w_ptr, out_ptr, s_ptr, T,
    stride_lt, stride_lh, stride_ot, stride_oh, stride_sm, stride_sg, amax_eps, fp8_max,
    V_DIM: tl.constexpr, KV_LORA: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, DOT_FP32: tl.constexpr,
    PDL: tl.constexpr = False, QUANT: tl.constexpr = False, EXACT_ROUND: tl.constexpr = False,
    FAST_DIV: tl.constexpr = True, UE8M0: tl.constexpr = False,
):
    # o_lat: [T, H, KV_LORA] (stride_lt, stride_lh, 1)   w_desc: TMA over W_UV as [H·V_DIM, KV_LORA], box [BLOCK_D, BLOCK_C]
    # out:   [T, H, V_DIM] (stride_ot, stride_oh, 1)
    # grid (H, V_DIM // BLOCK_D): program (h, j) writes out[:, h, j·BLOCK_D : (j+1)·BLOCK_D], the
    # whole KV_LORA contraction in BLOCK_C chunks (the weight tile stays in registers across tokens)
    # PDL: launched as a programmatic dependent; the program's weight rows (w_ptr: W_UV itself) are prefetched
    # into L2 (one hint per 128-byte line) before waiting for the previous kernel (the attention's last pass)
    h = tl.program_id(0)
    j = tl.program_id(1)
    rdv = j * BLOCK_D + tl.arange(0, BLOCK_D)
    rc = tl.arange(0, BLOCK_C)
    if PDL:
        NLINES: tl.constexpr = (KV_LORA + 63) // 64  # 64 bf16/fp16 per 128-byte line
        lines = tl.arange(0, NLINES)[None, :] * 64
        _prefetch_l2(w_ptr + (h * V_DIM + rdv[:, None]).to(tl.int64) * KV_LORA + lines)
        tl.extra.cuda.gdc_wait()
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
        o_ptrs = out_ptr + rt[:, None].to(tl.int64) * stride_ot + h * stride_oh + rdv[None, :]
        if QUANT:
            # BLOCK_D = 128 = one FP8 activation group of o_proj's input [T, H·V_DIM]: o rounded to o_lat's
            # dtype, then per_token_group_quant_fp8's arithmetic (fp8_quant's helpers) → out e4m3 + s (UE8M0:
            # the scale rounded up to a power of two, DeepSeek-V3.1 scale_fmt)
            y = acc.to(o_lat_ptr.dtype.element_ty).to(tl.float32)
            sc = _scale_from_amax(tl.max(tl.abs(y), axis=1), amax_eps, fp8_max, UE8M0)
            qv = _div_rn(y, sc[:, None], _recip_rn(sc)[:, None], FAST_DIV)
            if EXACT_ROUND:
                qv = _round_to_e4m3(tl.minimum(tl.maximum(qv, -fp8_max), fp8_max))
            tl.store(o_ptrs, qv.to(out_ptr.dtype.element_ty), mask=tmask[:, None])
            g = h * (V_DIM // BLOCK_D) + j
            tl.store(s_ptr + rt.to(tl.int64) * stride_sm + g * stride_sg, sc, mask=tmask)
        else:
            tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=tmask[:, None])


def mla_absorb_supported(qk_nope_head_dim: int, kv_lora_rank: int, qk_rope_head_dim: int, v_head_dim: int) -> bool:
    """True when every width is a power of two ≥ 16 (the kernels' tiles; DeepSeek: 128, 512, 64, 128)."""
    return all(v >= 16 and not v & (v - 1) for v in (qk_nope_head_dim, kv_lora_rank, qk_rope_head_dim, v_head_dim))


def _check_pow2(name: str, v: int) -> None:
    if v < 16 or v & (v - 1):
        raise ValueError(f"{name} must be a power of two ≥ 16, got {v}")


def _check_rope_args(positions, cos_sin_cache, T: int, rope: int, dev, check_ids) -> bool:
    """True when q_pe is to be rotated (both given); validates them (positions' range with check_ids)."""
    if (positions is None) != (cos_sin_cache is None):
        raise ValueError("positions and cos_sin_cache go together (both or neither)")
    if positions is None:
        return False
    check_tensor("positions", positions, dtype=torch.int64, ndim=1, device=dev, contiguous=True)
    check_tensor("cos_sin_cache", cos_sin_cache, dtype=torch.float32, ndim=2, device=dev)
    if positions.shape[0] != T:
        raise ValueError(f"positions has {positions.shape[0]} entries, q_nope {T} rows")
    if cos_sin_cache.shape[1] != rope or not cos_sin_cache.is_contiguous():
        raise ValueError(f"cos_sin_cache must be a contiguous [max_positions, {rope}] table, got "
                         f"{tuple(cos_sin_cache.shape)} strides {cos_sin_cache.stride()}")
    if check_ids:
        check_index_range("positions", positions, 0, cos_sin_cache.shape[0])
    return True


# H200 (session 15, benchmarks/probe_decode_small.py at 92f8d36 / 0133090, V3 widths, T=1, graph replay of 6 calls
# over rotating weights, µs per call, two runs): absorb_q as it is (one 64-column tile per program, 1024 programs)
# 7.62 / 7.05; none of 16 other forms won (2-8 pipelined tiles per program 7.36-9.64, 32- or 128-column tiles
# 7.87-9.45, 2 / 8 warps 7.00 / 7.35, plain loads 8.46, FMA without tensor cores 7.96-10.15): they were removed.
# absorb_o_fp8 (128 programs, one per head) at T=1: BLOCK_C 128 × 4 stages 8.97 / 7.62 / 7.66 vs 64 × 4 stages
# 9.36 / 8.41 / 8.03 (three runs; BLOCK_C 256 × 2: 10.17; 128 × 3: 7.67; 8 warps 7.66-8.01); at T=128 (eaa0b79)
# 128 lost: 15.19 vs 14.29 (bf16 absorb_o 18.76 vs 15.80; at T=1 7.41 vs 7.36). So BLOCK_C None = 128 for T ≤ 16
# (one token tile), else 64. mla_absorb_o takes the same rule, so that the fused quant stays bit-equal to
# quantizing mla_absorb_o's output (same chunks: the same fp32 sums).
_O_DEFAULTS = dict(PDL=False, BLOCK_D=32, BLOCK_C=None, STAGES=4, num_warps=4)
_O_FP8_DEFAULTS = {k: v for k, v in _O_DEFAULTS.items() if k != "BLOCK_D"}
_POW2_16 = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 16 and not v & (v - 1)  # noqa: E731
_OPTION_CHECKS = {
    "PDL": lambda v: isinstance(v, bool),
    "BLOCK_D": _POW2_16, "BLOCK_C": lambda v: _POW2_16(v) and v <= 256,
    "STAGES": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8,
    "num_warps": lambda v: isinstance(v, int) and not isinstance(v, bool) and v in (1, 2, 4, 8, 16),
}


_OPTION_RULES = {"PDL": "a bool", "BLOCK_D": "a power of two >= 16", "BLOCK_C": "a power of two in 16..256",
                 "STAGES": "an int in 1..8", "num_warps": "1, 2, 4, 8 or 16"}


def _options(config, defaults: dict) -> dict:
    """defaults updated by config after checking it: keys among ``defaults``; PDL a bool; BLOCK_D / BLOCK_C powers
    of two ≥ 16 (BLOCK_C ≤ 256: a TMA box dimension); STAGES 1..8; num_warps 1..16. Numpy scalars count as (and are
    stored as) the Python values (np.False_ / np.int64(2) were refused; the launchers' scalar rule); a config that
    is not a dict is a TypeError."""
    if config is None:
        return dict(defaults)
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict with keys among {tuple(defaults)}, got {type(config).__name__}")
    config = {k: v.item() if isinstance(v, np.generic) else v for k, v in config.items()}
    for k, v in config.items():
        if k not in defaults:
            raise ValueError(f"config has an unknown key {k!r}; this launcher takes {tuple(defaults)}")
        if not _OPTION_CHECKS[k](v):
            raise ValueError(f"config key {k}={v!r} must be {_OPTION_RULES[k]}")
    return {**defaults, **config}


def mla_absorb_q(
    q_nope: torch.Tensor, w_uk: torch.Tensor, q_pe: torch.Tensor, out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None, *, positions: torch.Tensor | None = None,
    cos_sin_cache: torch.Tensor | None = None, config: dict | None = None, check_ids: bool = True,
) -> torch.Tensor:
    """qa[t, h] = [Σ_d q_nope[t, h, d]·W_UK[h, d, :] ‖ rope?(q_pe[t, h])] (fp32 accumulation, one rounding).

    q_nope: [T, num_heads, qk_nope_head_dim] bf16/fp16, last dim contiguous (a view of q_b_proj's
    output is fine). w_uk: [num_heads, qk_nope_head_dim, kv_lora_rank] same dtype, contiguous
    (kv_b_proj's key half per head). q_pe: [T, num_heads, qk_rope_head_dim] same dtype, last dim
    contiguous (roped). out: optional [T, num_heads, kv_lora_rank + qk_rope_head_dim] buffer with a
    contiguous last dim; else allocated in out_dtype: bf16, fp16 or fp32 (default q_nope.dtype);
    out must not alias the inputs (not checked: a destination overlapping an input may give wrong results).
    Returns out (the absorbed query mla_decode takes). qk_nope_head_dim, kv_lora_rank and
    qk_rope_head_dim must be powers of two ≥ 16 (128, 512, 64 in DeepSeek).
    positions [T] int64 + cos_sin_cache [max_positions, qk_rope_head_dim] fp32 contiguous (both or neither):
    q_pe is un-roped and rotated here (interleaved pairs, as ``mla_rope_cache``, rounded to q_pe.dtype before
    the copy), so the decode path needs no separate q rope pass. positions (contiguous) must lie in
    [0, max_positions): check_ids (default True) checks that with one device→host read (a sync; skipped while a
    CUDA graph is being captured); with check_ids=False (the model: engine-built positions) out-of-range positions
    read out of bounds, undefined behaviour. config: optional {"PDL": bool} (Hopper:
    launch as a programmatic dependent, the weight tile requested before the wait; default off: H200 W1b, b1
    step profile, its 1024 early programs slowed q_b_proj's GEMM before it (Σ 324.8 vs 310.1 µs over 14 GEMMs),
    more than the 0.7 µs per call PDL saved in a chain of absorb_q calls).
    Raises TypeError (dtype, including an out_dtype other than bf16/fp16/fp32, e.g. an integer or FP8
    dtype, which the kernel's store would wrap; check_ids not a bool) or ValueError (shape, device, layout, out vs
    out_dtype, positions/cos_sin_cache incl. a non-contiguous or (check_ids) out-of-range positions, config).
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
    rotate = _check_rope_args(positions, cos_sin_cache, T, rope, dev, check_bool("check_ids", check_ids))
    pdl = _options(config, dict(PDL=False))["PDL"] and _pdl_capable(dev)
    if out_dtype is not None and out_dtype not in _FLOAT + (torch.float32,):
        raise TypeError(f"out_dtype must be one of {_FLOAT + (torch.float32,)} or None, got {out_dtype!r}")
    if out is None:
        out = torch.empty((T, H, kv_lora + rope), dtype=out_dtype or q_nope.dtype, device=dev)
    else:
        check_tensor("out", out, dtype=_FLOAT + (torch.float32,), ndim=3, device=dev, output=True)
        if out_dtype is not None and out.dtype != out_dtype:
            raise ValueError(f"out is {out.dtype} but out_dtype is {out_dtype}")
        if tuple(out.shape) != (T, H, kv_lora + rope) or out.stride(2) != 1:
            raise ValueError(f"out must be [{T}, {H}, {kv_lora + rope}] with a contiguous last dim, got "
                             f"{tuple(out.shape)} strides {out.stride()}")
    if T == 0:
        return out
    block_t = _absorb_block_t(T)
    block_c = min(64, kv_lora)  # 128-byte rows: one TMA box per swizzle span
    w_desc = TensorDescriptor(w_uk, [H * nope, kv_lora], [kv_lora, 1], [nope, block_c])
    _mla_absorb_q_kernel[(H, kv_lora // block_c)](
        q_nope, w_desc, q_pe, out, positions if rotate else q_pe, cos_sin_cache if rotate else q_pe, T,
        q_nope.stride(0), q_nope.stride(1), q_pe.stride(0), q_pe.stride(1),
        out.stride(0), out.stride(1),
        NOPE=nope, KV_LORA=kv_lora, ROPE=rope, BLOCK_T=block_t, BLOCK_C=block_c,
        DOT_FP32=interpreter_active(), ROTATE=rotate,
        EXACT_BF16=interpreter_active() and q_pe.dtype == torch.bfloat16, PDL=pdl, num_warps=4, launch_pdl=pdl,
    )
    return out


def _check_absorb_o(o_lat, w_uv) -> None:
    check_tensor("o_lat", o_lat, dtype=_FLOAT, ndim=3)
    check_runnable_device("o_lat", o_lat)
    check_tensor("w_uv", w_uv, dtype=o_lat.dtype, ndim=3, device=o_lat.device)
    T, H, kv_lora = o_lat.shape
    if w_uv.shape[0] != H or w_uv.shape[2] != kv_lora:
        raise ValueError(f"w_uv must be [num_heads {H}, v_head_dim, kv_lora_rank {kv_lora}], got {tuple(w_uv.shape)}")
    _check_pow2("kv_lora_rank", kv_lora)
    if not w_uv.is_contiguous() or w_uv.data_ptr() % 16:
        raise ValueError(f"w_uv must be contiguous with a 16-byte aligned base (TMA), strides {w_uv.stride()}")
    if o_lat.stride(2) != 1:
        raise ValueError(f"o_lat needs a contiguous last dim, strides {o_lat.stride()}")


def mla_absorb_o(o_lat: torch.Tensor, w_uv: torch.Tensor, out: torch.Tensor | None = None, *,
                 config: dict | None = None) -> torch.Tensor:
    """o[t, h, d] = Σ_c o_lat[t, h, c]·W_UV[h, d, c] (fp32 accumulation, one rounding).

    o_lat: [T, num_heads, kv_lora_rank] bf16/fp16, last dim contiguous (mla_decode's output).
    w_uv: [num_heads, v_head_dim, kv_lora_rank] same dtype, contiguous (kv_b_proj's value half).
    out: optional [T, num_heads, v_head_dim] buffer (last dim contiguous), else allocated in o_lat.dtype;
    out must not alias the inputs (not checked: a destination overlapping an input may give wrong results).
    Returns out. v_head_dim and kv_lora_rank must be powers of two ≥ 16 (128, 512 in DeepSeek).
    config: optional {"BLOCK_D": value rows per program (a power of two ≥ 16, default 32), "BLOCK_C": latent
    columns per streamed weight chunk (a power of two in [16, 256]; default 128 at T ≤ 16, else 64), "STAGES": chunks
    in flight (1..8, default 4), "num_warps" (1..16, default 4), "PDL": bool (Hopper: launch as a programmatic
    dependent, the program's weight rows prefetched into L2 before the wait; default off: H200 W1, chain of 16
    calls at T=1, BLOCK_D 32: 8.73 µs with PDL vs 7.09 without)}. Same BLOCK_C / STAGES / num_warps → the same fp32 sums as
    mla_absorb_o_fp8.
    Raises TypeError (dtype) or ValueError (shape, device, layout, config).
    Semantics: DeepSeek-V3 inference/model.py MLA attn_impl="absorb" (einsum "bshc,hdc->bshd").
    """
    _check_absorb_o(o_lat, w_uv)
    dev = o_lat.device
    T, H, kv_lora = o_lat.shape
    v_dim = w_uv.shape[1]
    _check_pow2("v_head_dim", v_dim)
    if out is None:
        out = torch.empty((T, H, v_dim), dtype=o_lat.dtype, device=dev)
    else:
        check_tensor("out", out, dtype=_FLOAT + (torch.float32,), ndim=3, device=dev, output=True)
        if tuple(out.shape) != (T, H, v_dim) or out.stride(2) != 1:
            raise ValueError(f"out must be [{T}, {H}, {v_dim}] with a contiguous last dim, got "
                             f"{tuple(out.shape)} strides {out.stride()}")
    opt = _options(config, _O_DEFAULTS)
    opt["PDL"] = opt["PDL"] and _pdl_capable(dev)
    opt["BLOCK_D"] = min(opt["BLOCK_D"], v_dim)
    return _launch_absorb_o(o_lat, w_uv, out, None, opt)


def _launch_absorb_o(o_lat, w_uv, out, scale, opt: dict, ue8m0: bool = False):
    T, H, kv_lora = o_lat.shape
    v_dim = w_uv.shape[1]
    if T == 0:
        return out if scale is None else (out, scale)
    block_t, block_d, pdl = _absorb_block_t(T), opt["BLOCK_D"], opt["PDL"]
    block_c = min(opt["BLOCK_C"] or (128 if T <= 16 else 64), kv_lora)
    w_desc = TensorDescriptor(w_uv, [H * v_dim, kv_lora], [kv_lora, 1], [block_d, block_c])
    quant = scale is not None
    interp = interpreter_active()
    # 3-D [T, H, v] view of out: o_proj's [T, H·v] input when quantizing
    o3 = out.view(T, H, v_dim) if quant else out
    _mla_absorb_o_kernel[(H, v_dim // block_d)](
        o_lat, w_desc, w_uv, o3, scale if quant else o3, T,
        o_lat.stride(0), o_lat.stride(1), o3.stride(0), o3.stride(1),
        scale.stride(0) if quant else 0, scale.stride(1) if quant else 0, AMAX_EPS, FP8_E4M3_MAX,
        V_DIM=v_dim, KV_LORA=kv_lora, BLOCK_T=block_t, BLOCK_D=block_d, BLOCK_C=block_c,
        DOT_FP32=interp, PDL=pdl, QUANT=quant, EXACT_ROUND=interp, FAST_DIV=not interp,
        num_warps=opt["num_warps"], num_stages=opt["STAGES"], launch_pdl=pdl,
        **({"UE8M0": True} if ue8m0 else {}),  # off: the launch (and compiled kernel) of before the keyword
    )
    return out if scale is None else (out, scale)


def mla_absorb_o_fp8(o_lat: torch.Tensor, w_uv: torch.Tensor, *, config: dict | None = None,
                     scale_ue8m0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, s) = per_token_group_quant_fp8(mla_absorb_o(o_lat, w_uv).view(T, H·v_head_dim), 128, scale_ue8m0), one
    kernel: the W_UV product and o_proj's FP8 activation quant (each program owns one head's 128 value rows = one
    group). scale_ue8m0: a bool (numpy bool too): round each scale up to a power of two before quantizing
    (DeepSeek-V3.1's ``quantization_config.scale_fmt: "ue8m0"``; off by default).

    o_lat: [T, num_heads, kv_lora_rank] bf16/fp16 (last dim contiguous); w_uv: [num_heads, v_head_dim,
    kv_lora_rank] same dtype, contiguous; v_head_dim a multiple of 128 (DeepSeek: 128), kv_lora_rank a power of
    two ≥ 16. Returns q [T, num_heads·v_head_dim] float8_e4m3fn row-major and s [T, num_heads·v_head_dim/128]
    fp32 MN-major (stride (1, T)), bit-equal to quantizing mla_absorb_o's (rounded) output: the layout
    ``fp8_gemm_nt`` reads for o_proj (bit-equal at the same config: same BLOCK_C / STAGES / num_warps, BLOCK_D 128).
    config: optional {"BLOCK_C", "STAGES", "num_warps", "PDL"} as mla_absorb_o (defaults: BLOCK_C 128 at T ≤ 16 else
    64, 4 stages, 4 warps, PDL off; H200 at T=1: BLOCK_C 128 7.62-8.97 µs per call vs 64: 8.03-9.36, three runs).
    Raises TypeError (dtype; scale_ue8m0 not a bool) or ValueError (shape, device, layout, v_head_dim, config).
    Semantics: DeepSeek-V3 inference/model.py MLA absorb (einsum "bshc,hdc->bshd") + act_quant before wo.
    """
    ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    _check_absorb_o(o_lat, w_uv)
    T, H, _ = o_lat.shape
    v_dim = w_uv.shape[1]
    if v_dim % 128:
        raise ValueError(f"mla_absorb_o_fp8 needs v_head_dim a multiple of 128 (one quant group per program), got {v_dim}")
    opt = _options(config, _O_FP8_DEFAULTS)
    opt.update(BLOCK_D=128, PDL=opt["PDL"] and _pdl_capable(o_lat.device))
    q = torch.empty((T, H * v_dim), dtype=torch.float8_e4m3fn, device=o_lat.device)
    s = torch.empty((H * v_dim // 128, T), dtype=torch.float32, device=o_lat.device).t()  # MN-major
    return _launch_absorb_o(o_lat, w_uv, q, s, opt, ue8m0)
