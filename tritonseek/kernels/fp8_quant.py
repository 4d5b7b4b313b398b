"""FP8 (e4m3) quantization kernels: per-token-group activations, fused SiLU·mul + quant, 128×128 weight blocks.

Scale rule everywhere: s = max(amax(group), 1e-4) / 448 (optionally rounded up to a power of two,
"UE8M0"), q = clamp(x / s, ±448) rounded to nearest-even e4m3, so x ≈ q · s.

Non-finite input (same as the torch reference): the amax reduction propagates NaN, so a group
holding a NaN gets s = NaN and every q of the group NaN; a group holding ±inf (and no NaN) gets
s = +inf, q = NaN at the ±inf elements and ±0 (sign of x) elsewhere (x / inf). Either way the
group dequantizes to NaN, never to a finite or sign-flipped value.

Bit patterns: a finite q is the reference's byte exactly, on the GPU and under the CPU interpreter (which rounds
through ``_round_to_e4m3``; a negative that rounds to zero is −0 = 0x80 on both). A NaN's sign bit is not
specified: the interpreter writes 0x7F, the torch reference's follows its platform's NaN (on x86, inf/inf gives a
negative NaN: 0xFF), so NaN is compared by position (``isnan``), never by byte.

Activation scales are returned as a [M, G] fp32 tensor stored MN-major (stride (1, M)): the
layout ``fp8_gemm_nt`` reads coalesced and cuBLAS/DeepGEMM expect, with no transpose kernel.
"""

from __future__ import annotations


import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import check_bool, check_pow2, check_runnable_device, check_tensor
from tritonseek.kernels._utils import interpreter_active
from tritonseek.kernels._host import capability_at, cdiv, next_pow2

FP8_E4M3_MAX = 448.0
AMAX_EPS = 1e-4
_RCP_FP8_MAX = torch.tensor(1.0 / FP8_E4M3_MAX, dtype=torch.float32).item()  # an fp32 value: RN(1 / 448)
_FLOAT_IN = (torch.bfloat16, torch.float16, torch.float32)


def _quant_config(m: int, silu_mul: bool = False) -> tuple[int, int, int]:
    """(ROWS, num_warps, GROUPS per program) for the per-token-group kernels (H200 sweeps, 2026-11-29)."""
    if m < 1024:
        return (8, 4, 1)
    return (16, 4, 1) if silu_mul else (8, 4, 4)


@triton.jit
def _max_nan(a, b):
    # NaN-propagating max (max.NaN.f32 on the GPU: same cost as tl.max's maxNum, which drops NaN)
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _scale_from_amax(amax, eps, fp8_max, UE8M0: tl.constexpr, LEAN_DIV: tl.constexpr = False, rcp_max=0.0):
    # amax NaN → s NaN, amax inf → s inf (the eps clamp keeps NaN, like torch.clamp_min)
    if LEAN_DIV:
        # RN(a / fp8_max) by Markstein's step from rcp_max = RN(1 / fp8_max) (host-computed, so no reciprocal per
        # group): q0 = RN(a·rcp_max) is within an ulp, the residual a − q0·fp8_max is exact in an FMA, and
        # q0 + rem·rcp_max rounds correctly; the same identity as _div_rn's FAST_DIV. a = inf would give
        # inf − inf = NaN: kept apart. Replaces div.rn's reciprocal + refinement + range check + slow-path branch,
        # redone by every thread for each of its groups (sm_90a SASS compiled on the CPU, per_token 8×4×4 launch:
        # 544 → 488 instructions per thread with LEAN_DIV's other half). Compared with div.rn for every fp32 a in
        # [1e-4, inf] on the H200 by benchmarks/probe_quant_ab.py --exhaustive.
        a = _max_nan(amax, eps)
        q0 = a * rcp_max
        s = tl.fma(tl.fma(q0, 0.0 - fp8_max, a), rcp_max, q0)
        s = tl.where(a == float("inf"), a, s)
    else:
        s = tl.math.div_rn(_max_nan(amax, eps), fp8_max)
    if UE8M0:
        # exact round-up to a power of two on the fp32 bit pattern (positive normal s; inf stays
        # inf, NaN is kept apart: its bits would round to 0)
        bits = s.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFFFF) & 0x7F800000
        s = tl.where(s != s, s, bits.to(tl.float32, bitcast=True))
    return s


@triton.jit
def _divisor(s, FAST_DIV: tl.constexpr):
    """The divisor _div_rn gets: s, or with FAST_DIV 1 where s = inf (with r = RN(1/inf) = 0 the
    Markstein steps then give x·0 = ±0 for finite x and NaN for ±inf x, as x / inf; with s = inf
    itself the residual FMA would compute 0·inf = NaN). Once per group, not per element."""
    if FAST_DIV:
        s = tl.where(s == float("inf"), 1.0, s)
    return s


@triton.jit
def _recip_rn(s, LEAN_RCP: tl.constexpr = False):
    """RN(1 / s) per scale (once per group, not per element). LEAN_RCP (GPU only: inline PTX): div.rn's own fast
    path for a = 1 written out (MUFU.RCP, then two Newton steps r + r·(1 − s·r) in FMAs, as ptxas emits them)
    without its range check, slow-path branch and call: s is a normal ≥ 1e-4/448 whose reciprocal is normal, inf
    (→ 0, kept apart: the FMA would give NaN) or NaN (→ NaN). Compared bit for bit with div.rn on the scale of
    every fp32 amax (plain and UE8M0) on the H200 by benchmarks/probe_quant_ab.py --exhaustive."""
    if LEAN_RCP:
        r0 = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [s], dtype=tl.float32, is_pure=True,
                                       pack=1)
        ns = 0.0 - s  # a per-group negation (s > 0 or NaN: the same as −s)
        r1 = tl.fma(tl.fma(ns, r0, 1.0), r0, r0)
        r2 = tl.fma(tl.fma(ns, r1, 1.0), r1, r1)
        return tl.where(s == float("inf"), 0.0, r2)
    else:
        return tl.math.div_rn(tl.full(s.shape, 1.0, tl.float32), s)


@triton.jit
def _div_rn(x, s, r, FAST_DIV: tl.constexpr, NEG_S: tl.constexpr = False, SIGN_FOLD: tl.constexpr = False):
    """x / s rounded to nearest-even (IEEE) for s > 0 normal, −0 kept; r = RN(1/s) (used when FAST_DIV).
    NEG_S (FAST_DIV only): the residual as fma(q0, −s, x) with −s once per group, the same value as fma(−q0, s, x)
    for every x ≠ 0 (x = ±0 takes q0 = x·r): Triton's −q0 is 0 − q0, which ptxas cannot fold into the FMA as a
    negated operand (it would turn +0 into −0), so it cost one FFMA per element (sm_90a SASS: 544 → 512)."""
    if FAST_DIV:
        # Markstein: with r = RN(1/s) and q0 = RN(x·r) within an ulp of x/s, the residual
        # x − q0·s is exact through an FMA and q1 = RN(q0 + residual·r) is the correctly rounded
        # quotient. 3 instructions per element instead of div.rn's reciprocal + refinement +
        # range check + slow-path branch each, which made the per-token kernel issue-bound on
        # the H200. Not used under the interpreter, whose fma rounds twice.
        q0 = x * r
        if SIGN_FOLD:
            # the residual negated, q0·s − x, and −r (true negations, x·−1 and r·−1: ptxas folds them into the FMA
            # operands): q1 = q0 + (q0·s − x)·(−r), the same value for every x ≠ 0, and for x = ±0 the residual is +0
            # and +0·(−r) + q0 = −0 + q0 = q0 = x·r, which keeps the sign of x: no per-element x == 0 select. An
            # inf scale (divisor 1, r = +0, −r = −0) gives ±0 with the sign of x, as x / inf; a NaN scale NaN
            # everywhere (x = 0 too, as the reference's 0 / NaN, where the select returned 0)
            rem = tl.fma(q0, s, x * -1.0)
            return tl.fma(rem, r * -1.0, q0)
        if NEG_S:
            rem = tl.fma(q0, 0.0 - s, x)
        else:
            rem = tl.fma(-q0, s, x)
        q1 = tl.fma(rem, r, q0)
        # x = −0: q0 = −0 and the residual is +0 (−q0·s + x = +0 + −0 = +0 under round-to-nearest), so q1 came
        # out +0 where x / s is −0 (H200 s20 final pass: byte 0x00 for the reference's 0x80). For x = ±0, q0 = x·r is
        # x / s exactly: ±0 with the sign of x for a finite or inf scale (r > 0 or r = +0), NaN for a NaN scale as
        # the reference's 0 / NaN (returning x there wrote 0 into a NaN group: s25 h4quant W1).
        return tl.where(x == 0.0, q0, q1)
    else:
        return tl.math.div_rn(x, s)


@triton.jit
def _to_e4m3_interp(q, out_ty: tl.constexpr):
    """Interpreter-only e4m3 cast: clamp to ±448 (keeping NaN), round to nearest-even on the grid (a zero keeps
    the sign of q, as the GPU's cvt.rn: −0 is byte 0x80), cast, and restore NaN as byte 0x7F (the interpreter's
    cast writes NaN as 0x7C = 384). NaN's sign bit is not kept: see the module docstring."""
    q = tl.minimum(tl.maximum(q, -448.0, propagate_nan=tl.PropagateNan.ALL), 448.0, propagate_nan=tl.PropagateNan.ALL)
    bits = _round_to_e4m3(q).to(out_ty).to(tl.uint8, bitcast=True)
    return tl.where(q != q, 0x7F, bits).to(tl.uint8).to(out_ty, bitcast=True)


@triton.jit
def _round_to_e4m3(v):
    # Round-to-nearest-even onto the e4m3 grid in fp32 (|v| ≤ 448 already), so the following cast
    # is exact. Used only under the CPU interpreter, whose fp32→e4m3 cast rounds wrongly
    # (e.g. 124.3 → 64, ties away from even); the GPU's cvt.rn.satfinite is already correct.
    bits = v.to(tl.int32, bitcast=True)
    e = tl.maximum(((bits >> 23) & 0xFF) - 127, -6)  # e4m3 normals start at 2^-6
    ulp = ((e - 3 + 127) << 23).to(tl.float32, bitcast=True)  # 3 mantissa bits
    r = v / ulp
    r = (r + 12582912.0) - 12582912.0  # + 1.5·2^23: fp32 add rounds to an integer, ties to even
    # the magic add turns a negative that rounds to zero (and −0) into +0; cvt.rn keeps −0 (byte 0x80), and so
    # does torch's cast in the reference: v·0 restores the sign (finite v; NaN never rounds to zero)
    return tl.where(r == 0.0, v * 0.0, r * ulp)


@triton.jit
def _silu(x, FAST_EXP: tl.constexpr = False):
    """x · sigmoid(x) as x / (1 + exp(−x)) in fp32. FAST_EXP (GPU only: inline PTX): exp(−x) as ex2.approx.ftz
    of x·(−log2 e) instead of tl.exp's ex2.approx of (0 − x)·log2 e: the same MUFU.EX2 on the same fp32 argument
    (up to the sign of a zero, whose ex2 is 1 either way), without the non-ftz range scaling ptxas wraps around it (an
    FSETP and two FMULs per element), which changes only results below 2^-126, where 1 + exp(−x) = 1 either way.
    Compared bit for bit with the plain form for all 65536 bf16 x on the H200 (probe_quant_ab --exhaustive)."""
    if FAST_EXP:
        e = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x * -1.4426950408889634],
                                      dtype=tl.float32, is_pure=True, pack=1)
        return x / (1.0 + e)
    else:
        return x / (1.0 + tl.exp(-x))


@triton.jit
def _tile_load(x_ptr, rb, gb, M, K, up_offset, stride_xm, stride_xk,
               GROUP: tl.constexpr, ROWS: tl.constexpr, GPP: tl.constexpr, SILU_MUL: tl.constexpr,
               STREAM_LD: tl.constexpr):
    # tile (rb, gb) = rows [rb*ROWS, +ROWS) × groups [gb*GPP, +GPP), as a [ROWS, GPP, GROUP] block of x (and of up
    # when SILU_MUL; else up is x again); raw input dtype, masked (0) outside [M, K]
    rows = rb * ROWS + tl.arange(0, ROWS)
    cols = (gb * GPP + tl.arange(0, GPP))[None, :, None] * GROUP + tl.arange(0, GROUP)[None, None, :]
    mask = (rows[:, None, None] < M) & (cols < K)
    x_ptrs = x_ptr + rows.to(tl.int64)[:, None, None] * stride_xm + cols * stride_xk
    if STREAM_LD:  # x is read once: keep it from displacing what the next kernel reads from L2
        x = tl.load(x_ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    else:
        x = tl.load(x_ptrs, mask=mask, other=0.0)
    up = x
    if SILU_MUL:
        if STREAM_LD:
            up = tl.load(x_ptrs + up_offset * stride_xk, mask=mask, other=0.0, eviction_policy="evict_first")
        else:
            up = tl.load(x_ptrs + up_offset * stride_xk, mask=mask, other=0.0)
    return x, up


@triton.jit
def _tile_quant_store(x, up, rb, gb, q_ptr, s_ptr, M, K, G, stride_qm, stride_sm, stride_sg, eps, fp8_max,
                      GROUP: tl.constexpr, ROWS: tl.constexpr, GPP: tl.constexpr, SILU_MUL: tl.constexpr,
                      UE8M0: tl.constexpr, EXACT_ROUND: tl.constexpr, FAST_DIV: tl.constexpr, STREAM_ST: tl.constexpr,
                      LEAN_DIV: tl.constexpr = False, FAST_EXP: tl.constexpr = False, rcp_max=0.0,
                      LEAN_RCP: tl.constexpr = False, SIGN_FOLD: tl.constexpr = False):
    # q: [M, K] e4m3 row-major (stride_qm, 1); s: [M, G] fp32 at m*stride_sm + g*stride_sg; tile as in _tile_load
    rows = rb * ROWS + tl.arange(0, ROWS)
    grp = gb * GPP + tl.arange(0, GPP)
    cols = grp[None, :, None] * GROUP + tl.arange(0, GROUP)[None, None, :]
    mask = (rows[:, None, None] < M) & (cols < K)
    x = x.to(tl.float32)
    if SILU_MUL:
        x = _silu(x, FAST_EXP) * up.to(tl.float32)
    amax = tl.reduce(tl.abs(x), 2, _max_nan)
    s = _scale_from_amax(amax, eps, fp8_max, UE8M0, LEAN_DIV, rcp_max)
    q = _div_rn(x, _divisor(s, FAST_DIV)[:, :, None], _recip_rn(s, LEAN_RCP)[:, :, None], FAST_DIV, LEAN_DIV,
                SIGN_FOLD)
    if EXACT_ROUND:
        # interpreter: clamp to ±448 and round onto the e4m3 grid here (its cast rounds wrongly)
        q = _to_e4m3_interp(q, q_ptr.dtype.element_ty)
    # on the GPU the e4m3 cast (cvt.rn.satfinite) rounds to nearest-even, saturates at ±448, NaN → NaN.
    q_ptrs = q_ptr + rows.to(tl.int64)[:, None, None] * stride_qm + cols
    if STREAM_ST:  # streaming store (.cs: likely accessed once, evict first)
        tl.store(q_ptrs, q.to(q_ptr.dtype.element_ty), mask=mask, cache_modifier=".cs")
    else:
        tl.store(q_ptrs, q.to(q_ptr.dtype.element_ty), mask=mask)
    s_mask = (rows[:, None] < M) & (grp[None, :] < G)
    tl.store(s_ptr + rows.to(tl.int64)[:, None] * stride_sm + grp[None, :] * stride_sg, s, mask=s_mask)


@triton.jit
def _group_quant_kernel(
    x_ptr, q_ptr, s_ptr, M, K, G, up_offset,
    stride_xm, stride_xk, stride_qm, stride_sm, stride_sg,
    eps, fp8_max,
    GROUP: tl.constexpr, ROWS: tl.constexpr, GPP: tl.constexpr, SILU_MUL: tl.constexpr,
    UE8M0: tl.constexpr, EXACT_ROUND: tl.constexpr, FAST_DIV: tl.constexpr, PDL_TRIGGER: tl.constexpr = False,
    STREAM_LD: tl.constexpr = False, STREAM_ST: tl.constexpr = False,
    LEAN_DIV: tl.constexpr = False, FAST_EXP: tl.constexpr = False, rcp_max=0.0,
    LEAN_RCP: tl.constexpr = False, SIGN_FOLD: tl.constexpr = False,
):
    # PDL_TRIGGER (Hopper): let a programmatic-dependent kernel that follows (the small-M FP8 GEMM
    # with PDL) launch now; it prefetches its weights and waits for our completion before reading q/s
    if PDL_TRIGGER:
        tl.extra.cuda.gdc_launch_dependents()
    # x: [M, K] (or [M, 2K] = [gate ‖ up] when SILU_MUL; up starts at column up_offset = K)
    # one tile per program: rows [rb*ROWS, (rb+1)*ROWS) × groups [gb*GPP, (gb+1)*GPP)
    rb = tl.program_id(0)
    gb = tl.program_id(1)
    x, up = _tile_load(x_ptr, rb, gb, M, K, up_offset, stride_xm, stride_xk, GROUP, ROWS, GPP, SILU_MUL, STREAM_LD)
    _tile_quant_store(x, up, rb, gb, q_ptr, s_ptr, M, K, G, stride_qm, stride_sm, stride_sg, eps, fp8_max,
                      GROUP, ROWS, GPP, SILU_MUL, UE8M0, EXACT_ROUND, FAST_DIV, STREAM_ST, LEAN_DIV, FAST_EXP,
                      rcp_max, LEAN_RCP, SIGN_FOLD)


@triton.jit
def _block_quant_kernel(
    w_ptr, q_ptr, s_ptr, N, K, stride_wn, stride_wk, stride_qn, stride_sn,
    eps, fp8_max,
    BLOCK: tl.constexpr, EXACT_ROUND: tl.constexpr, FAST_DIV: tl.constexpr,
):
    # w: [N, K] float; q: [N, K] e4m3 (stride_qn, 1); s: [ceil(N/BLOCK), ceil(K/BLOCK)] fp32 (stride_sn, 1)
    bn = tl.program_id(0)
    bk = tl.program_id(1)
    rn = bn * BLOCK + tl.arange(0, BLOCK)
    rk = bk * BLOCK + tl.arange(0, BLOCK)
    rn64 = rn.to(tl.int64)
    mask = (rn[:, None] < N) & (rk[None, :] < K)
    w = tl.load(w_ptr + rn64[:, None] * stride_wn + rk[None, :] * stride_wk, mask=mask, other=0.0).to(tl.float32)
    amax = tl.reduce(tl.reduce(tl.abs(w), 1, _max_nan), 0, _max_nan)
    s = _scale_from_amax(amax, eps, fp8_max, False)
    q = _div_rn(w, _divisor(s, FAST_DIV), _recip_rn(s), FAST_DIV)
    if EXACT_ROUND:
        q = _to_e4m3_interp(q, q_ptr.dtype.element_ty)  # see _group_quant_kernel
    tl.store(q_ptr + rn64[:, None] * stride_qn + rk[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + bn * stride_sn + bk, s)


def _check_group_size(group_size: int, name: str = "group_size") -> int:
    return check_pow2(name, group_size, 16)  # an int / numpy integer (TypeError otherwise), a power of two ≥ 16


def _resolve_rows_cfg(rows_cfg, m: int, silu_mul: bool) -> tuple[int, int, int]:
    """rows_cfg = (ROWS, num_warps) or (ROWS, num_warps, GROUPS per program); None = tuned."""
    if rows_cfg is None:
        return _quant_config(m, silu_mul)
    if not isinstance(rows_cfg, (tuple, list)):
        raise TypeError(f"rows_cfg must be a tuple (ROWS, num_warps[, groups per program]), "
                        f"got {type(rows_cfg).__name__}")
    if len(rows_cfg) not in (2, 3):
        raise ValueError(f"rows_cfg must be (ROWS, num_warps[, groups per program]) powers of two, got {rows_cfg!r}")
    rows_cfg = [check_pow2(f"rows_cfg[{i}]", v) for i, v in enumerate(rows_cfg)]
    return (rows_cfg[0], rows_cfg[1], rows_cfg[2] if len(rows_cfg) == 3 else 1)


# Streaming hints of the per-token-group kernels (issue 4: 4096×2048 per_token missed 80 % of copy), as knobs:
# stream_loads = evict-first loads of x, stream_stores = .cs (streaming) stores of q. H200 s21 W1 (cfabe8e) and W2
# (23d6340), graph replays of rotated sets, A/A 0.3-1.3 %: per_token 4096×2048 8.50-8.56 → 8.24 µs (the loads' hint
# gives it all), 4096×7168 26.00 → 23.67 µs (both hints needed), no cost to the FP8 GEMM reading q; SiLU·mul lost
# 3-8 % with the loads' hint (stores ±0.5 %), so only per_token at M ≥ 1024 streams (_default_knobs).
# Measured and removed (code at 23a7ad0; same runs): a persistent grid-strided grid (programs per SM) with register
# prefetch of the next tile lost 3-36 %, with tl.range staging 21-29 %; ROWS / GPP launches other than
# _quant_config's tied or lost (0.89-1.00×; rows_cfg still takes them); a PDL launch that waits (griddepcontrol.wait)
# before any access gained only behind a kernel that triggers, and was mixed in the decode MLP (GEMM →
# silu_mul_quant → GEMM: +4.6 % at M = 16, I = 2048, −0.9 % at M = 64, −2.2 % at M = 16, I = 18432). The trigger
# at entry (PDL_TRIGGER, for a PDL GEMM after the quant) stays.
# lean_div / fast_exp (s25, issue 4's K 2048 target; GPU only, ignored under the interpreter, whose fma rounds twice
# and which runs no inline PTX): the same values with fewer instructions. lean_div = _div_rn's NEG_S and
# _scale_from_amax's Markstein step from a host-side RN(1/448); fast_exp = _silu's FAST_EXP (SiLU·mul only). Why:
# the probe's byte-pattern floor (probe_quant_ab --cases floors, s25 W1/W2) ran 1.06-1.09x faster than the quant at
# the quant's own tile while every launch shape tied; the quant's SASS had 544 instructions per thread there, the
# floor's 224. H200 s25 W3 (93ffe38, 21 interleaved rounds of rotated-set graphs): both equal the plain forms bit for
# bit on every input (scale: all 2,139,095,041 fp32 amax in [+0, +inf] and NaNs; SiLU: all 65536 bf16), gpu tests of
# this module green; per_token + lean_div 1.022 / 1.027 (A/A 0.993) at 4096×2048 (7.88 → 7.69 µs, 3,299-3,313 GB/s),
# 1.018 / 1.014 (A/A 1.008) at 4096×7168; SiLU·mul + fast_exp 1.023 (A/A 1.004) at I 2048, 1.002 at I 18432; SiLU·mul
# + lean_div LOST (0.94 at both I; with fast_exp 1.006 / 0.998), so it stays off there. Default at M ≥ 1024 since
# then (_default_knobs; M < 1024 unmeasured). The byte-pattern floor still ran 1.07-1.10x faster than the default.
# W4 (c904561), this default against the s21 launch in one run: per_token 4096×2048 1.019-1.028 (A/A 0.993), 7168
# 1.003 (A/A 1.004); SiLU·mul I 2048 1.006 (A/A 1.002), I 18432 1.002; suite rows 3,316 / 3,384 GB/s at K / I 2048
# (target 3,416 still missed), 3,798 / 4,025 at 7168 / 18432.
# lean_rcp / sign_fold (s25 h4quant; GPU only, ignored under the interpreter; off until measured): _recip_rn's
# LEAN_RCP (div.rn's fast path without its range check and slow-path call, per group) and _div_rn's SIGN_FOLD (no
# per-element x == 0 select). sm_90a SASS compiled on the CPU (static count without NOPs, up to the last EXIT in
# brackets): per_token 8×4×4 default 476 (371) → lean_rcp 356 (355), sign_fold 450 (345), both 331 (330); SiLU·mul
# 16×4×1 default 522 (419) → 513 (406), 486 (382), both 477 (370). Per element sign_fold leaves FMUL + 2 FFMA.
# direct_scales (same session, GPU only, removed after it lost; code at a010664): the scale store by inline PTX from
# the reduction's layout, without tl.store's convert_layout (shared memory + barrier); on top of both: per_token
# 331 → 317, SiLU·mul 477 → 461 instructions, no shared memory.
# H200 s25 h4quant W1 (a010664, probe 21 interleaved rounds, vs the then default = lean_div; exhaustive: lean_rcp =
# div.rn(1, s) on the scale of all 2,139,095,041 fp32 amax + 4096 NaNs, plain and UE8M0; gpu tests green; bytes
# equal to the default's at every probe case): per_token 4096×2048 lean_rcp alone 0.992, sign_fold alone 1.000, both
# 1.041 / 1.034 (A/A 0.993; queued replays 7.52 → 7.16-7.19 µs), + direct_scales 1.021; 4096×7168 both 0.984 /
# 0.982 (A/A 1.000; queued 21.63 → 22.25-22.35 µs), lean_rcp 1.012, + direct_scales 0.996; SiLU·mul I 2048 0.994-
# 1.006 for all (A/A 0.994, a noisy case), + direct_scales 0.982, I 18432 0.998-0.999, + direct_scales 0.992. Suite
# rows in the same run: per_token K 2048 default 7.96 µs / 3,194 GB/s, both 7.62 / 3,337 (target 3,416 missed). So
# per_token takes both at M ≥ 1024 and K ≤ 2048 only (K 4096 unmeasured); SiLU·mul none; direct_scales lost.
# s26 (lead, scratch code not committed; rows in logs/lead_s26_scratch_quant_probe.log, 21 interleaved rounds at
# fa59266, A/A 0.99-1.02): no variant beat the A/A spread at both K, so none is a knob. mul_rcp (q = e4m3(x·RN(1/s)),
# vLLM's inverted-scale multiply, a semantics change; per_token SASS 331 -> 265): per_token K 2048 1.004 / 1.008, K 7168
# 0.97-0.98, SiLU·mul I 2048 1.007-1.018. maxnreg 32 (full occupancy): SiLU·mul 16x4x1 0.97; per_token 16x4x2 1.002-1.023
# at K 2048, 0.976 at K 7168. No masks at exact multiples (SASS 331 -> 307): 0.95-0.99.
_KNOB_DEFAULTS = dict(stream_loads=False, stream_stores=False, lean_div=False, fast_exp=False, lean_rcp=False,
                      sign_fold=False)


def _default_knobs(m: int, silu_mul: bool, k: int | None = None) -> dict:
    """The committed knobs per launch class (as _quant_config), M ≥ 1024 only: per_token streams (both hints) with
    lean_div, and at K ≤ 2048 (k = the quantized width; None = not known: left out) also lean_rcp + sign_fold;
    SiLU·mul takes fast_exp (knob record above). The arithmetic knobs do nothing under the interpreter."""
    if m < 1024:
        return {}
    if silu_mul:
        return dict(fast_exp=True)
    if k is not None and k <= 2048:
        return dict(stream_loads=True, stream_stores=True, lean_div=True, lean_rcp=True, sign_fold=True)
    return dict(stream_loads=True, stream_stores=True, lean_div=True)


def _resolve_knobs(knobs, m: int, silu_mul: bool, k: int | None = None) -> dict:
    """knobs (a dict of _KNOB_DEFAULTS keys; None = the committed _default_knobs) → every knob, checked by name.

    Each knob is a bool or numpy bool (the scalar rule of kernels/_utils); another type is a TypeError, an unknown
    key a ValueError, naming it."""
    if knobs is None:
        knobs = _default_knobs(m, silu_mul, k)
    if not isinstance(knobs, dict):
        raise TypeError(f"knobs must be a dict, got {type(knobs).__name__}")
    bad = sorted(set(knobs) - set(_KNOB_DEFAULTS), key=repr)
    if bad:
        raise ValueError(f"knobs: unknown key(s) {bad}; known: {sorted(_KNOB_DEFAULTS)}")
    out = dict(_KNOB_DEFAULTS, **knobs)
    for key in _KNOB_DEFAULTS:
        out[key] = check_bool(f"knobs[{key!r}]", out[key])
    return out


def _launch_group_quant(x, k, up_offset, group_size, scale_ue8m0, silu_mul, rows_cfg, knobs=None):
    q, s, _ = _launch_group_quant_h(x, k, up_offset, group_size, scale_ue8m0, silu_mul, rows_cfg, knobs)
    return q, s


def _launch_group_quant_h(x, k, up_offset, group_size, scale_ue8m0, silu_mul, rows_cfg, knobs=None):
    """_launch_group_quant, also returning Triton's compiled-kernel handle (None when nothing ran): the probe
    reads its PTX."""
    m = x.shape[0]
    g = cdiv(k, group_size)
    kn = _resolve_knobs(knobs, m, silu_mul, k)
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    s = torch.empty((g, m), dtype=torch.float32, device=x.device).t()  # [M, G], MN-major
    if m == 0 or k == 0:
        return q, s, None
    rows, warps, gpp = _resolve_rows_cfg(rows_cfg, m, silu_mul)
    gpp = min(gpp, next_pow2(g))
    h = _group_quant_kernel[(cdiv(m, rows), cdiv(g, gpp))](
        x, q, s, m, k, g, up_offset,
        x.stride(0), x.stride(1), q.stride(0), s.stride(0), s.stride(1),
        AMAX_EPS, FP8_E4M3_MAX,
        GROUP=group_size, ROWS=rows, GPP=gpp, SILU_MUL=silu_mul, UE8M0=scale_ue8m0,
        EXACT_ROUND=interpreter_active(), FAST_DIV=not interpreter_active(), num_warps=warps,
        PDL_TRIGGER=_pdl_capable(x.device), STREAM_LD=kn["stream_loads"], STREAM_ST=kn["stream_stores"],
        LEAN_DIV=kn["lean_div"] and not interpreter_active(), FAST_EXP=kn["fast_exp"] and not interpreter_active(),
        rcp_max=_RCP_FP8_MAX, LEAN_RCP=kn["lean_rcp"] and not interpreter_active(),
        SIGN_FOLD=kn["sign_fold"] and not interpreter_active(),
    )
    return q, s, h


def _pdl_capable_index(index: int) -> bool:
    return capability_at(index)[0] >= 9


def _pdl_capable(device: torch.device) -> bool:
    """griddepcontrol exists from sm_90 on (and never under the interpreter)."""
    if device.type != "cuda" or interpreter_active():
        return False
    return _pdl_capable_index(device.index if device.index is not None else torch.cuda.current_device())


def per_token_group_quant_fp8(
    x: torch.Tensor, group_size: int = 128, scale_ue8m0: bool = False, *, rows_cfg: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q = clamp(x / s, ±448) with s = max(amax, 1e-4) / 448 per 1×group_size group of each row.

    x: [M, K] bf16/fp16/fp32, any strides (K need not be a multiple of group_size).
    Returns x_q [M, K] float8_e4m3fn (row-major) and x_scale [M, ceil(K/group_size)] fp32 stored
    MN-major (stride (1, M)) — the layout ``fp8_gemm_nt`` reads. scale_ue8m0: round each scale up
    to a power of two before quantizing. A group holding NaN: scale NaN, q NaN; holding ±inf (no
    NaN): scale +inf, q NaN at the infs and ±0 elsewhere (module docstring; as the reference).
    group_size: an int (or numpy integer), a power of two ≥ 16; scale_ue8m0: a bool (or numpy bool).
    rows_cfg (keyword, for tuning and tests): None = the tuned launch shape, or (ROWS, num_warps) / (ROWS, num_warps,
    GROUPS) powers of two: each program quantizes ROWS rows × GROUPS groups (GROUPS capped at the group count)
    with num_warps warps; the result is the same for any of them.
    Raises TypeError on a non-float x or a group_size / scale_ue8m0 of another type (a bool, float or tensor;
    "yes" or 1 is not taken for True) or a rows_cfg that is not a tuple/list, ValueError on a non-2-D x, a
    group_size that is no power of two ≥ 16 or a rows_cfg of another length or with an entry that is no power of
    two (TypeError for a non-int entry), naming rows_cfg[i].
    Semantics: SGLang/vLLM per_token_group_quant_fp8 (DeepGEMM per_token_cast_to_fp8).
    """
    check_tensor("x", x, dtype=_FLOAT_IN, ndim=2)
    check_runnable_device("x", x)
    group_size = _check_group_size(group_size)
    scale_ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    return _launch_group_quant(x, x.shape[1], 0, group_size, scale_ue8m0, False, rows_cfg)


def silu_mul_quant_fp8(
    x: torch.Tensor, group_size: int = 128, scale_ue8m0: bool = False, *, rows_cfg: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = silu(gate) · up in fp32 with x = [gate ‖ up], then per-token-group FP8 quant of h.

    x: [M, 2*I] bf16/fp16/fp32 (gate = x[:, :I], up = x[:, I:]), any strides.
    Returns q [M, I] float8_e4m3fn and scale [M, ceil(I/group_size)] fp32, MN-major (stride (1, M)).
    Non-finite h as in per_token_group_quant_fp8 (a NaN in gate or up makes its group's scale NaN).
    group_size / scale_ue8m0 / rows_cfg as in per_token_group_quant_fp8 (TypeError for another type).
    Raises TypeError on a non-float x, ValueError on a non-2-D x, odd width, bad group_size or rows_cfg.
    Semantics: SGLang silu_and_mul + per_token_group_quant_fp8, fused (one read of x, one write of q).
    """
    check_tensor("x", x, dtype=_FLOAT_IN, ndim=2)
    check_runnable_device("x", x)
    group_size = _check_group_size(group_size)
    scale_ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    if x.shape[1] % 2:
        raise ValueError(f"x must be [M, 2*I] (gate ‖ up), got odd width {tuple(x.shape)}")
    inter = x.shape[1] // 2
    return _launch_group_quant(x, inter, inter, group_size, scale_ue8m0, True, rows_cfg)


def per_block_quant_fp8(w: torch.Tensor, block_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """w_q = clamp(w / s, ±448) with s = max(amax, 1e-4) / 448 per block_size × block_size block.

    w: [N, K] bf16/fp16/fp32, any strides. Returns w_q [N, K] float8_e4m3fn (row-major) and
    weight_scale_inv [ceil(N/block_size), ceil(K/block_size)] fp32 contiguous (w ≈ w_q · scale).
    A block holding NaN: scale NaN, w_q NaN; holding ±inf (no NaN): scale +inf, w_q NaN at the infs
    and ±0 elsewhere (as the reference).
    Raises TypeError on a non-float w or a block_size that is not an int (numpy integers count; a bool, float or
    tensor does not), ValueError on a non-2-D w or a block_size that is no power of two ≥ 16 (named).
    Semantics: DeepSeek-V3 checkpoint weight_scale_inv (DeepGEMM per_block_cast_to_fp8).
    """
    check_tensor("w", w, dtype=_FLOAT_IN, ndim=2)
    check_runnable_device("w", w)
    block_size = _check_group_size(block_size, "block_size")
    n, k = w.shape
    q = torch.empty((n, k), dtype=torch.float8_e4m3fn, device=w.device)
    s = torch.empty((cdiv(n, block_size), cdiv(k, block_size)), dtype=torch.float32, device=w.device)
    if n == 0 or k == 0:
        return q, s
    _block_quant_kernel[(s.shape[0], s.shape[1])](
        w, q, s, n, k, w.stride(0), w.stride(1), q.stride(0), s.stride(0),
        AMAX_EPS, FP8_E4M3_MAX, BLOCK=block_size, EXACT_ROUND=interpreter_active(), FAST_DIV=not interpreter_active(),
        num_warps=8 if block_size >= 128 else 4,
    )
    return q, s
