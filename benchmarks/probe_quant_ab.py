"""Probe (issue 4, s21): launch variants of the per-token-group FP8 quant kernels at the suite's large shapes.

    PYTHONPATH=. python benchmarks/probe_quant_ab.py [--out rows.jsonl] [--rounds 11] [--cases all|large|floors]
        [--variants a,b,…] [--exhaustive]

1. Correctness at the real shape, NaN-poisoned outputs: the committed launch against the torch reference on the
   GPU (per-token: bytes as tests/kernels/test_fp8_quant._assert_same_bytes; SiLU·mul: scales within 1e-6, q within
   one e4m3 code), then every variant against the committed launch byte for byte (q and scales; NaN by position);
   a variant that differs is not timed, and every row carries the committed launch's reference check.
   The input has −0, small negatives that round to ±0, ±inf and NaN planted in a few groups.
2. Timing: one CUDA graph per variant holding one call per rotated input set (the suite's set count: their bytes
   exceed ~200 MB, 4× the L2), replayed interleaved: each round times every variant (rotated order) as the median
   of 15 replays (CUDA events, GPU clock); a variant's figure is the median over rounds, with min/max as spread.
   "default" = the committed launch, "off" = every knob off (the launch before s21); each twice (…_AA) is the A/A
   control. "copy" = ``dst.copy_(src)`` moving the same bytes (read + write) per call, graphed the same way: the
   ceiling at this size. GB/s = (M·width·2 + M·K + 4·M·G) / t, as the suite.
3. Pairs (per_token quant → the fp8_gemm_nt reading q, M = 4096): whether streaming stores of q cost the GEMM; every
   variant's GEMM output is checked bit for bit against the all-off launch's.
4. Floors (``--cases floors``, s25, issue 4's K 2048 target): the committed launch (and its A/A twin) timed in the
   same graphs and rounds as kernels that move the quant's exact bytes without its arithmetic, at per_token
   4096×2048, silu 4096×2048 and the controls per_token 4096×7168 and silu 4096×18432 (target met there; W1 at
   d696bba ran the first three). ``--variants`` adds quant launches (``named``: q<ROWS>x<WARPS>x<GROUPS>[n|s|l|t]),
   "per:" / "silu:" entries for one op only:
   ``cast`` = ``q.copy_(x)`` into an e4m3 tensor (torch's bf16→fp8 elementwise kernel: 2 B read, 1 B written per
   element; no scale bytes). For SiLU·mul it casts x [M, 2I] bf16 viewed as [M, I] fp32 into q [M, I] e4m3: the
   same 4I bytes read and I written per row, one contiguous read (not gate and up as two halves), no scales.
   ``stream_RxCwW[h]`` = _floor_kernel: a [R, C] tile per program, num_warps W (h: the per_token default's
   evict-first / .cs hints), reading the quant's bf16 bytes (gate and up for SiLU·mul) and writing clamp(x, ±448)
   (SiLU·mul: clamp(gate·up)) as e4m3 and 1.0 as every scale, in the quant's q and MN-major scale layouts: no
   amax, no division. Checked byte for byte against torch's cast of the clamped input (scales all 1.0).
   ``read_RxCwW`` = the same reads, one fp32 sum per program written (checked against the input's sum).
   GB/s of every row is the suite's formula (what the quant moves), ``gbps_moved`` the bytes the variant itself
   moves. Beside the event timing: ``us_queued`` (each replay queued behind a device sleep, so the graph's launch
   from an idle GPU is not in it; same rounds) and ``us_kernel`` (benchmarks.timing.kernel_time_us, L2 flushed,
   profiler kernel durations; for default, default_AA, copy, cast and the best stream / read only): second views,
   never instead of ``us_graph``.
5. ``--exhaustive`` (s25 W3): fp8_quant's lean_div scale (Markstein from RN(1/448)) against div.rn for every fp32
   amax in [+0, +inf] and NaNs, and fast_exp's SiLU against the tl.exp form for every bf16 x, bit for bit; the
   variants per_lean / silu_lean / silu_fexp / silu_lean_fexp (+ _AA twins) time them in the quant. Since s25
   h4quant also lean_rcp's per-group RN(1/s) against div.rn(1, s) on the scale of every fp32 amax (plain and UE8M0);
   variants per_rcp / per_fold / per_rf and silu_rcp / silu_fold / silu_rf (lean_rcp, sign_fold, both; + _AA);
   per_rfd / silu_rfd (both + direct_scales) were timed at a010664, lost, and went with the knob.
W1 (cfabe8e) and W2 (23d6340) also timed a persistent grid, PDL launches, other ROWS / GPP launches and the decode
MLP chain; those knobs lost and were removed (figures in fp8_quant's knob record; this probe with them at 23a7ad0).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.probe_quant_util import (PER, SILU, bytes_moved, cast_fn, check_cast, interleave,  # noqa: E402
                                         planted, ptx_stats, same_bytes, summary_rows)
from benchmarks.timing import _capture, kernel_time_us  # noqa: E402
from tritonseek.benchrun import git_commit, require_cuda  # noqa: E402
from tritonseek.kernels import fp8_quant  # noqa: E402
from tritonseek.kernels._host import cdiv, next_pow2  # noqa: E402
from tritonseek.kernels.reference.fp8 import per_token_group_quant_fp8_ref, silu_mul_quant_fp8_ref  # noqa: E402

LARGE = [(PER, 4096, 2048), (PER, 4096, 7168), (SILU, 4096, 2048), (SILU, 4096, 18432)]
FLOOR_CASES = [(PER, 4096, 2048), (SILU, 4096, 2048), (PER, 4096, 7168), (SILU, 4096, 18432)]
SMALL = [(PER, 64, 2048), (PER, 64, 7168), (SILU, 64, 2048), (SILU, 64, 18432)]

# name → (rows_cfg or None = committed, knobs or None = committed): the committed default (streaming per_token at
# M ≥ 1024) against all-off and each half of the streaming hints (W2)
NAMED = {
    "default": (None, None), "default_AA": (None, None), "off": (None, {}), "off_AA": (None, {}),
    # the launches before s25 W3 made lean_div (per_token) / fast_exp (SiLU·mul) default at M ≥ 1024
    "per_s21": (None, dict(stream_loads=True, stream_stores=True)), "silu_s21": (None, {}),
    "per_s21_AA": (None, dict(stream_loads=True, stream_stores=True)), "silu_s21_AA": (None, {}),
    "loads": (None, dict(stream_loads=True)), "stores": (None, dict(stream_stores=True)),
    "stream": (None, dict(stream_loads=True, stream_stores=True)),
    # s25 W3: the arithmetic knobs on top of each op's committed hints (per_token at M ≥ 1024 streams; SiLU·mul not)
    "per_lean": (None, dict(stream_loads=True, stream_stores=True, lean_div=True)),
    "per_lean_AA": (None, dict(stream_loads=True, stream_stores=True, lean_div=True)),
    "silu_lean": (None, dict(lean_div=True)), "silu_fexp": (None, dict(fast_exp=True)),
    "silu_lean_fexp": (None, dict(lean_div=True, fast_exp=True)),
    "silu_lean_fexp_AA": (None, dict(lean_div=True, fast_exp=True)),
    # s25 h4quant: lean_rcp (per-group reciprocal without div.rn's range check / slow path) and sign_fold (no
    # per-element x == 0 select) on top of each op's committed default knobs
    "per_rcp": (None, dict(stream_loads=True, stream_stores=True, lean_div=True, lean_rcp=True)),
    "per_fold": (None, dict(stream_loads=True, stream_stores=True, lean_div=True, sign_fold=True)),
    "per_rf": (None, dict(stream_loads=True, stream_stores=True, lean_div=True, lean_rcp=True, sign_fold=True)),
    "per_rf_AA": (None, dict(stream_loads=True, stream_stores=True, lean_div=True, lean_rcp=True, sign_fold=True)),
    "silu_rcp": (None, dict(fast_exp=True, lean_rcp=True)), "silu_fold": (None, dict(fast_exp=True, sign_fold=True)),
    "silu_rf": (None, dict(fast_exp=True, lean_rcp=True, sign_fold=True)),
    "silu_rf_AA": (None, dict(fast_exp=True, lean_rcp=True, sign_fold=True)),
}
VARIANTS = {PER: ["default", "default_AA", "off", "off_AA", "loads", "stores"],
            SILU: ["default", "default_AA", "loads", "stores", "stream"]}
SMALL_VARIANTS = ["default", "default_AA", "stream"]
_HINTS = {"": None, "n": {}, "s": dict(stream_loads=True, stream_stores=True), "l": dict(stream_loads=True),
          "t": dict(stream_stores=True)}


def named(name):
    """(rows_cfg, knobs) of a variant: a NAMED entry, or q<ROWS>x<WARPS>x<GROUPS>[n|s|l|t] = the committed quant at
    rows_cfg (ROWS, WARPS, GROUPS) with the committed knobs (no suffix), none (n), both streaming hints (s), the
    loads' (l) or the stores' (t) only; e.g. q32x8x2s. A twin "_AA" suffix times the same launch again."""
    import re

    if name in NAMED:
        return NAMED[name]
    hit = re.fullmatch(r"q(\d+)x(\d+)x(\d+)([nslt]?)(_AA)?", name)
    if not hit:
        raise ValueError(f"unknown variant {name!r}: one of {sorted(NAMED)} or q<ROWS>x<WARPS>x<GROUPS>[n|s|l|t]")
    return (int(hit[1]), int(hit[2]), int(hit[3])), _HINTS[hit[4]]
# quant → the FP8 GEMM that reads q (M = 4096, a DeepGEMM N×K whose K is the quant's width): does a streaming store
# of q cost the GEMM its L2 hits? (N, K) per case; the GEMM's weight is shared by the sets, as in a layer
PAIRS = [(4096, 7168, 4096), (4096, 2048, 7168)]
PAIR_VARIANTS = ["default", "default_AA", "off", "off_AA", "loads"]


def call(op, x, rc, knobs):
    k = x.shape[1] // 2 if op == SILU else x.shape[1]
    return fp8_quant._launch_group_quant_h(x, k, k if op == SILU else 0, 128, False, op == SILU, rc, knobs)


def check_base_vs_ref(op, x, q, s):
    """The committed launch against the torch reference (on the GPU): per-token bytes with ≤ 1 per million one code
    apart (same sign), SiLU·mul scales rtol 1e-6 and q within one code; NaN by position."""
    q_ref, s_ref = (per_token_group_quant_fp8_ref if op == PER else silu_mul_quant_fp8_ref)(x)
    nan, nan_ref = torch.isnan(q.float()), torch.isnan(q_ref.float())
    if not torch.equal(nan, nan_ref) or not torch.equal(torch.isnan(s), torch.isnan(s_ref)):
        return "NaN positions differ"
    b, rb = q.view(torch.uint8)[~nan].to(torch.int16), q_ref.view(torch.uint8)[~nan].to(torch.int16)
    fin = torch.isfinite(s_ref)
    if op == PER:
        diff = b != rb
        if not torch.equal(b & 0x80, rb & 0x80) or int(diff.sum()) > b.numel() // 1_000_000:
            return f"{int(diff.sum())} bytes differ, sign bits differ {int(((b ^ rb) & 0x80).ne(0).sum())}"
        if not torch.equal(s[fin], s_ref[fin]):
            return "scales differ"
    else:
        if ((b & 0x7F) - (rb & 0x7F)).abs().max() > 1 or not torch.allclose(s[fin], s_ref[fin], rtol=1e-6, atol=0):
            return "beyond one code / scale rtol"
    return ""


# ------------------------------------------------------------------------------------------------------- floors
# (ROWS, COLS, num_warps, hints): the quant's own tiles (per_token 8 rows × 4 groups, silu 16 × 1; the per_token
# default's streaming hints) and wider / taller / one-row tiles; READ_CFGS a subset for the read-only floor
FLOOR_CFGS = [(8, 512, 4, False), (8, 512, 4, True), (16, 128, 4, False), (4, 1024, 4, False), (8, 1024, 8, False),
              (32, 256, 8, False), (1, 2048, 4, False), (2, 2048, 8, True)]
READ_CFGS = [(8, 512, 4, False), (16, 128, 4, False), (8, 1024, 8, False), (2, 2048, 8, False)]


def cfg_name(kind, cfg):
    return f"{kind}_{cfg[0]}x{cfg[1]}w{cfg[2]}" + ("h" if cfg[3] else "")


@triton.jit
def _floor_kernel(x_ptr, q_ptr, s_ptr, M, K, G, up_offset, stride_xm, stride_qm, stride_sm, stride_sg,
                  ROWS: tl.constexpr, COLS: tl.constexpr, GPP: tl.constexpr, SILU_MUL: tl.constexpr,
                  WRITE: tl.constexpr, HINTS: tl.constexpr):
    # the quant's bytes without its arithmetic: tile rows [rb*ROWS, +ROWS) × cols [cb*COLS, +COLS) of x (and of up
    # at +up_offset); WRITE: q = e4m3(clamp(v, ±448)) and scale 1.0 for the GPP groups of the tile (MN-major as the
    # quant's); else one fp32 sum per program (the loads must feed a store or they are dropped)
    rb = tl.program_id(0)
    cb = tl.program_id(1)
    rows = rb * ROWS + tl.arange(0, ROWS)
    rows64 = rows.to(tl.int64)
    cols = cb * COLS + tl.arange(0, COLS)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    ptrs = x_ptr + rows64[:, None] * stride_xm + cols[None, :]
    if HINTS:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    else:
        v = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    if SILU_MUL:
        if HINTS:
            v = v * tl.load(ptrs + up_offset, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        else:
            v = v * tl.load(ptrs + up_offset, mask=mask, other=0.0).to(tl.float32)
    if WRITE:
        q = tl.minimum(tl.maximum(v, -448.0), 448.0).to(q_ptr.dtype.element_ty)
        q_ptrs = q_ptr + rows64[:, None] * stride_qm + cols[None, :]
        if HINTS:
            tl.store(q_ptrs, q, mask=mask, cache_modifier=".cs")
        else:
            tl.store(q_ptrs, q, mask=mask)
        grp = cb * GPP + tl.arange(0, GPP)
        s_mask = (rows[:, None] < M) & (grp[None, :] < G)
        tl.store(s_ptr + rows64[:, None] * stride_sm + grp[None, :] * stride_sg,
                 tl.full((ROWS, GPP), 1.0, tl.float32), mask=s_mask)
    else:
        tl.store(q_ptr + rb * tl.num_programs(1) + cb, tl.sum(tl.sum(v, 1), 0))


def floor_call(op, x, cfg, write=True, poison=False):
    """_floor_kernel on x ([M, K] per_token, [M, 2I] SiLU·mul; bf16, unit column stride) with cfg = (ROWS, COLS,
    num_warps, hints). write: (q [M, K] e4m3, s [M, G] fp32 MN-major), as the quant returns them; else (sums, None):
    one fp32 per program. poison: outputs NaN-filled first (a check, not timing)."""
    if x.stride(1) != 1:
        raise ValueError(f"x must have unit column stride, got strides {x.stride()}")
    m, width = x.shape
    k = width // 2 if op == SILU else width
    rows, cols, warps, hints = cfg
    cols = min(cols, max(128, next_pow2(k)))
    g = cdiv(k, 128)
    grid = (cdiv(m, rows), cdiv(k, cols))
    new = (lambda *a, **kw: torch.full(*a, float("nan"), **kw)) if poison else torch.empty
    if write:
        q = new((m, k), dtype=torch.float8_e4m3fn, device=x.device)
        s = new((g, m), dtype=torch.float32, device=x.device).t()
    else:
        q = new((grid[0] * grid[1],), dtype=torch.float32, device=x.device)
        s = q
    _floor_kernel[grid](x, q, s, m, k, g, k if op == SILU else 0, x.stride(0), q.stride(0) if write else 0,
                        s.stride(0) if write else 0, s.stride(1) if write else 0, ROWS=rows, COLS=cols,
                        GPP=cols // 128, SILU_MUL=op == SILU, WRITE=write, HINTS=hints, num_warps=warps)
    return (q, s) if write else (q, None)


def floor_value(op, x):
    """fp32 of what the floors read: x, or gate·up (exact in fp32: bf16 × bf16 has ≤ 16 significant bits)."""
    if op == SILU:
        k = x.shape[1] // 2
        return x[:, :k].float() * x[:, k:].float()
    return x.float()


def check_floor(op, x, cfg, write):
    """'' when the floor writes what it claims: q = torch's e4m3 cast of clamp(value, ±448) byte for byte and every
    scale 1.0 (write), or the per-program sums adding up to the input's sum (read)."""
    q, s = floor_call(op, x, cfg, write, poison=True)
    v = floor_value(op, x)
    if not write:
        want, tol = v.double().sum(), 1e-5 * float(v.double().abs().sum())
        return "" if abs(float(q.double().sum() - want)) <= tol else f"sum {float(q.sum())} vs {float(want)}"
    ref = v.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    bad = int((q.view(torch.uint8) != ref.view(torch.uint8)).sum())
    if bad or not bool((s == 1.0).all()):
        return f"{bad} q bytes differ, scales all 1.0: {bool((s == 1.0).all())}"
    return ""


@triton.jit
def _scale_pair_kernel(bad_ptr, start, end, eps, fp8_max, rcp_max, BLOCK: tl.constexpr):
    # the fp32 bit patterns start … end-1 as amax values: the lean scale against div.rn, bit for bit (both NaN, any
    # payload, counts as a match); mismatches counted into bad_ptr
    bits = start + tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = bits.to(tl.float32, bitcast=True)
    s0 = fp8_quant._scale_from_amax(a, eps, fp8_max, False)
    s1 = fp8_quant._scale_from_amax(a, eps, fp8_max, False, True, rcp_max)
    diff = (s0.to(tl.int32, bitcast=True) != s1.to(tl.int32, bitcast=True)) & ~((s0 != s0) & (s1 != s1))
    tl.atomic_add(bad_ptr, tl.sum((diff & (bits < end)).to(tl.int32), 0))


@triton.jit
def _recip_pair_kernel(bad_ptr, start, end, eps, fp8_max, rcp_max, UE8M0: tl.constexpr, BLOCK: tl.constexpr):
    # the fp32 bit patterns start … end-1 as amax values: lean_rcp's RN(1/s) against div.rn's on the kernel's own
    # scale s (lean_div's, as the per_token default; UE8M0 rounded up or not), bit for bit (both NaN counts as a match)
    bits = start + tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    s = fp8_quant._scale_from_amax(bits.to(tl.float32, bitcast=True), eps, fp8_max, UE8M0, True, rcp_max)
    r0 = fp8_quant._recip_rn(s, False)
    r1 = fp8_quant._recip_rn(s, True)
    diff = (r0.to(tl.int32, bitcast=True) != r1.to(tl.int32, bitcast=True)) & ~((r0 != r0) & (r1 != r1))
    tl.atomic_add(bad_ptr, tl.sum((diff & (bits < end)).to(tl.int32), 0))


def exhaustive_rcp(env, rows):
    """lean_rcp's reciprocal against div.rn(1, s) for the scale s of every fp32 amax from +0 to +inf and 4096 NaNs,
    plain and UE8M0 (GPU). Returns True when every pattern matches bit for bit."""
    dev = torch.device("cuda")
    n, block = 0x7F800001, 4096
    bad = torch.zeros(2, dtype=torch.int32, device=dev)
    for i, ue in enumerate((False, True)):
        for start, end in ((0, n), (n, n + block)):
            _recip_pair_kernel[(cdiv(end - start, block),)](bad[i:], start, end, fp8_quant.AMAX_EPS,
                                                            fp8_quant.FP8_E4M3_MAX, fp8_quant._RCP_FP8_MAX,
                                                            UE8M0=ue, BLOCK=block)
    torch.cuda.synchronize()
    ok = int(bad.sum().item()) == 0
    row = dict(suite="fp8_quant_probe_exhaustive_rcp", amax_patterns=n + block, mismatches=int(bad[0].item()),
               mismatches_ue8m0=int(bad[1].item()), ok=ok,
               note="lean_rcp RN(1/s) vs div.rn(1, s) on the lean_div scale of every fp32 amax in [+0, +inf] and "
                    "4096 NaNs, plain and UE8M0; bit for bit (NaN by position)")
    row.update(env)
    rows.append(row)
    print(json.dumps(row), flush=True)
    return ok


@triton.jit
def _silu_pair_kernel(x_ptr, o_ptr, n, BLOCK: tl.constexpr):
    # _silu plain and FAST_EXP of each bf16 x, side by side: o[0, i] and o[1, i]
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(o_ptr + offs, fp8_quant._silu(x, False), mask=offs < n)
    tl.store(o_ptr + n + offs, fp8_quant._silu(x, True), mask=offs < n)


def exhaustive(env, rows):
    """lean_div's scale and fast_exp's SiLU against the plain forms over their whole input domains (GPU): the scale
    for every fp32 amax from +0 to +inf (2^31 − 2^23 + 1 patterns; below eps the clamp gives eps) and 4096 NaNs,
    the SiLU for all 65536 bf16 values (NaN by position). Returns True when both match bit for bit."""
    dev = torch.device("cuda")
    n = 0x7F800001  # +0 … +inf
    bad = torch.zeros(1, dtype=torch.int32, device=dev)
    block = 4096
    _scale_pair_kernel[(cdiv(n, block),)](bad, 0, n, fp8_quant.AMAX_EPS, fp8_quant.FP8_E4M3_MAX,
                                          fp8_quant._RCP_FP8_MAX, BLOCK=block)
    # NaN amax (the first 4096 NaN patterns, quiet and signalling): NaN scale from both
    _scale_pair_kernel[(1,)](bad, n, n + block, fp8_quant.AMAX_EPS, fp8_quant.FP8_E4M3_MAX, fp8_quant._RCP_FP8_MAX,
                             BLOCK=block)
    xb = torch.arange(65536, dtype=torch.int32, device=dev).to(torch.int16).view(torch.bfloat16)
    o = torch.empty(2, 65536, dtype=torch.float32, device=dev)
    _silu_pair_kernel[(cdiv(65536, 1024),)](xb, o, 65536, BLOCK=1024)
    torch.cuda.synchronize()
    nan0, nan1 = torch.isnan(o[0]), torch.isnan(o[1])
    silu_bad = int((nan0 != nan1).sum()) + int((o[0].view(torch.int32) != o[1].view(torch.int32))[~nan0].sum())
    ok = int(bad.item()) == 0 and silu_bad == 0
    row = dict(suite="fp8_quant_probe_exhaustive", scale_patterns=n, scale_mismatches=int(bad.item()),
               silu_bf16_values=65536, silu_mismatches=silu_bad, silu_nan=int(nan0.sum()), ok=ok,
               note="lean_div scale vs div.rn over every fp32 amax in [+0, +inf]; fast_exp silu vs tl.exp form "
                    "over every bf16 x; bit for bit (NaN by position)")
    row.update(env)
    rows.append(row)
    print(json.dumps(row), flush=True)
    return ok


def run_pair(m, k, n, rounds, env, rows):
    """per_token quant of x [m, k] then fp8_gemm_nt(q, s, W [n, k]) per rotated set; outputs of every variant equal
    to the all-off launch's bit for bit (checked after a replay)."""
    from tritonseek.kernels.fp8_gemm import fp8_gemm_nt
    from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref

    dev = torch.device("cuda")
    w, ws = per_block_quant_fp8_ref(torch.randn(n, k, device=dev) * 0.05)
    n_sets = int(min(16, max(2, math.ceil(200e6 / (m * k * 3 + m * n * 2)))))
    xs = [torch.randn(m, k, device=dev, dtype=torch.bfloat16) for _ in range(n_sets)]
    outs = {v: [torch.full((m, n), float("nan"), device=dev, dtype=torch.bfloat16) for _ in xs] for v in PAIR_VARIANTS}

    def step(x, out, kn):
        q, sc, _ = call(PER, x, None, kn)
        fp8_gemm_nt(q, sc, w, ws, out=out)

    graphs = {v: (_capture([lambda x=x, o=o, kn=NAMED[v][1]: step(x, o, kn) for x, o in zip(xs, outs[v])]), n_sets)
              for v in PAIR_VARIANTS}
    for v in PAIR_VARIANTS:
        graphs[v][0].replay()
    torch.cuda.synchronize()
    ok = {v: all(torch.equal(a, b) for a, b in zip(outs[v], outs["off"])) for v in PAIR_VARIANTS}
    print(f"check pair quant {m}x{k} -> gemm N={n}: {ok}", flush=True)
    graphs = {v: g for v, g in graphs.items() if ok[v]}
    summary_rows("fp8_quant_probe_pair", dict(op=PER, M=m, K=k, gemm_N=n), interleave(graphs, rounds), env, rows,
                 n_input_sets=n_sets, note="graph of (quant, fp8_gemm_nt) per set; us per pair")


def run_case(op, m, k, names, rounds, env, rows, floors=False):
    dev = torch.device("cuda")
    width = 2 * k if op == SILU else k
    g = math.ceil(k / 128)
    nbytes = m * width * 2 + m * k + 4 * m * g
    n_sets = int(min(16, max(2, math.ceil(200e6 / nbytes))))
    variants = [(n, *named(n)) for n in (names or VARIANTS[op])]
    # 1. correctness, NaN-poisoned outputs (fp8_quant.torch.empty → NaN-filled)
    from tests.kernels.poison import PoisonTorch
    x = planted(m, width, dev, m + k)
    real_torch = fp8_quant.torch
    fp8_quant.torch = PoisonTorch()
    ok, stats = {}, {}
    try:
        q0, s0, _ = call(op, x, None, {})  # all knobs off: what W1 checked against the reference
        err = check_base_vs_ref(op, x, q0, s0)
        print(f"check {op} {m}x{k} base vs torch reference: {err or 'OK'}", flush=True)
        for name, rc, kn in variants:
            try:
                q, s, h = call(op, x, rc, kn)
                torch.cuda.synchronize()
                good = same_bytes(q, q0) and same_bytes(s, s0)
                stats[name] = ptx_stats(h)
                ok[name] = good
                print(f"  check {name:12s} {'OK' if good else 'MISMATCH'} {stats[name]}", flush=True)
            except Exception as e:
                ok[name] = False
                print(f"  FAIL {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
    finally:
        fp8_quant.torch = real_torch
    floor_cfgs = {}
    if floors:
        # fresh input, none planted (the floors clamp, they do not propagate NaN); scaled so that some values clamp
        gen = torch.Generator(device=dev).manual_seed(7 * m + k)
        xc = (torch.randn(m, width, device=dev, generator=gen) * (20.0 if op == SILU else 200.0)).to(torch.bfloat16)
        xn = torch.randn(m, width, device=dev, generator=gen).to(torch.bfloat16)  # |x| < 448: torch's cast no NaN
        checks = [("cast", None, lambda: check_cast(op, xn))]
        checks += [(cfg_name("stream", c), (c, True), lambda c=c: check_floor(op, xc, c, True)) for c in FLOOR_CFGS]
        checks += [(cfg_name("read", c), (c, False), lambda c=c: check_floor(op, xc, c, False)) for c in READ_CFGS]
        for name, cw, fn in checks:
            try:
                e = fn()
                torch.cuda.synchronize()
            except Exception as ex:
                e = f"{type(ex).__name__}: {str(ex)[:300]}"
            ok[name] = not e
            if cw is not None:
                floor_cfgs[name] = cw
            print(f"  check {name:18s} {e or 'OK'}", flush=True)
        del xc, xn
    # 2. timing
    xs = [torch.randn(m, width, device=dev, dtype=torch.bfloat16) for _ in range(n_sets)]
    half = nbytes // 2
    srcs = [torch.empty(half, dtype=torch.uint8, device=dev).random_() for _ in range(n_sets)]
    dsts = [torch.empty_like(t) for t in srcs]
    fns = {}
    for name, rc, kn in variants:
        if ok.get(name):
            fns[name] = [lambda x=x, rc=rc, kn=kn: call(op, x, rc, kn) for x in xs]
    fns["copy"] = [lambda s=s, d=d: d.copy_(s) for s, d in zip(srcs, dsts)]
    if floors and ok.get("cast"):
        fns["cast"] = [cast_fn(op, x, torch.empty(m, k, dtype=torch.float8_e4m3fn, device=dev)) for x in xs]
    for name, (c, w) in floor_cfgs.items():
        if ok.get(name):
            fns[name] = [lambda x=x, c=c, w=w: floor_call(op, x, c, w) for x in xs]
    graphs = {n: (_capture(f), n_sets) for n, f in fns.items()}
    if m >= 1024 and "default" in graphs:
        # the same calls twice per graph (sets rotate, so the second pass still misses L2): how much of the
        # per-call time is the graph's own launch, which the suite spreads over n_sets calls only
        graphs["default_2x"] = (_capture([lambda x=x: call(op, x, None, None) for x in xs + xs]), 2 * n_sets)
        graphs["copy_2x"] = (_capture([lambda s=s, d=d: d.copy_(s) for s, d in zip(srcs + srcs, dsts + dsts)]),
                             2 * n_sets)
    queued = {} if floors else None
    per = interleave(graphs, rounds, queued)
    names_t = list(graphs)
    base = statistics.median(per["default"]) if "default" in per else None
    # kernel-time view (profiler durations, L2 flushed) of the committed launch, copy, cast and the best floors
    ktime = {}
    if floors:
        best = [min((n for n in per if n.startswith(kind)), key=lambda n: statistics.median(per[n]), default=None)
                for kind in ("stream", "read")]
        for n in ["default", "default_AA", "copy", "cast", *best]:
            if n in fns:
                try:
                    ktime[n] = round(kernel_time_us(fns[n], reps=20, flush_l2=True), 3)
                except Exception as e:  # a profiler failure costs the view, not the rows
                    print(f"  kernel_time_us {n} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
    for n in names_t:
        t = statistics.median(per[n])
        row = dict(suite="fp8_quant_probe", case=dict(op=op, M=m, K=k), variant=n, us_graph=round(t, 3),
                   us_min=round(min(per[n]), 3), us_max=round(max(per[n]), 3), gbps=round(nbytes / t / 1e3, 1),
                   vs_base=round(base / t, 4) if base else None, n_input_sets=n_sets, rounds=rounds,
                   bytes_per_call=nbytes, checked=ok.get(n, n.startswith("copy") or n == "default_2x"),
                   base_vs_reference=err or "OK")
        if floors:
            progs = 0
            if n in floor_cfgs:
                c = floor_cfgs[n][0]
                cols = min(c[1], max(128, next_pow2(k)))
                progs = cdiv(m, c[0]) * cdiv(k, cols)
                row.update(floor_cfg=dict(ROWS=c[0], COLS=cols, num_warps=c[2], hints=c[3]))
            moved = bytes_moved(op, n, m, k, g, progs)
            qt = queued.get(n)
            row.update(gbps_moved=round(moved / t / 1e3, 1), bytes_moved=moved, gbps_target=round(0.8 * 4270, 1))
            if qt:
                row.update(us_queued=round(statistics.median(qt), 3), us_queued_min=round(min(qt), 3),
                           us_queued_max=round(max(qt), 3))
            if n in ktime:
                row.update(us_kernel=ktime[n], gbps_kernel=round(nbytes / ktime[n] / 1e3, 1),
                           kernel_time_unverified=True)
        v = next((v for v in variants if v[0] == n), None)
        if v is not None:
            kn = v[2] if v[2] is not None else fp8_quant._default_knobs(m, op == SILU, k)
            row.update(rows_cfg=list(v[1]) if v[1] else list(fp8_quant._quant_config(m, op == SILU)), knobs=kn,
                       ptx=stats.get(n))
        elif n.startswith("copy"):
            row["note"] = "dst.copy_(src), same bytes read+written per call"
        elif n == "cast":
            row["note"] = ("q.copy_(x) bf16 -> e4m3, no scales" if op == PER else
                           "q[M,I].copy_(x[M,2I] bf16 viewed as fp32) -> e4m3: same bytes per row, no scales")
        elif n.startswith("stream"):
            row["note"] = "e4m3(clamp(" + ("gate*up" if op == SILU else "x") + ")) + scale 1.0: no amax/division"
        elif n.startswith("read"):
            row["note"] = "reads x" + (" (gate and up)" if op == SILU else "") + ", one fp32 sum per program written"
        if n.endswith("_2x"):
            row["note"] = row.get("note", "committed launch") + "; each set twice per graph (2·n_input_sets calls)"
        row.update(env)
        rows.append(row)
        print(json.dumps(row), flush=True)
    del graphs, xs, srcs, dsts, fns
    torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="probe_quant_rows.jsonl")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--cases", choices=["all", "large", "floors"], default="all",
                   help="floors: FLOOR_CASES with the floor variants (default and default_AA unless --variants)")
    p.add_argument("--exhaustive", action="store_true",
                   help="first compare lean_div's scale and fast_exp's SiLU with the plain forms on every input")
    p.add_argument("--variants", default="", help="comma-separated variant names (default: all); NAMED keys or "
                   "q<ROWS>x<WARPS>x<GROUPS>[n|s|l|t] (named()); with --cases floors a per: / silu: prefix = that op")
    args = p.parse_args()
    for n in args.variants.split(","):
        if n:
            try:
                named(n.split(":", 1)[-1])
            except ValueError as e:
                p.error(f"argument --variants: {e}")
    require_cuda("probe_quant_ab")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a job's `timeout`: still write the rows measured
    import datetime

    import triton
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    names = [s for s in args.variants.split(",") if s]
    rows = []
    try:
        if args.exhaustive:
            print(f"exhaustive lean_div / fast_exp check: {'OK' if exhaustive(env, rows) else 'MISMATCH'}", flush=True)
            print(f"exhaustive lean_rcp check: {'OK' if exhaustive_rcp(env, rows) else 'MISMATCH'}", flush=True)
        if args.cases == "floors":
            for op, m, k in FLOOR_CASES:
                # "per:NAME" / "silu:NAME" entries of --variants apply to that op only
                mine = [n.split(":", 1)[-1] for n in names if ":" not in n or n.startswith(("per:" if op == PER
                                                                                         else "silu:"))]
                run_case(op, m, k, mine or ["default", "default_AA"], args.rounds, env, rows, floors=True)
        else:
            for op, m, k in LARGE:
                run_case(op, m, k, names, args.rounds, env, rows)
        if args.cases == "all":
            for op, m, k in SMALL:
                run_case(op, m, k, SMALL_VARIANTS, args.rounds, env, rows)
            for case in PAIRS:
                try:  # a failing pair is reported; the others still run
                    run_pair(*case, args.rounds, env, rows)
                except Exception as e:
                    print(f"FAIL run_pair{case}: {type(e).__name__}: {str(e)[:300]}", flush=True)
    finally:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print("\n%-26s %-5s %-6s %-17s %8s %8s %8s %7s %7s %8s %8s %7s" % (
            "op", "M", "K", "variant", "us", "min", "max", "GB/s", "vs_base", "us_queue", "us_kern", "GB/s_mv"))
        for r in rows:
            if "case" not in r:  # the --exhaustive row: printed as JSON above
                continue
            c = r["case"]
            kind = "+gemm" if r["suite"] == "fp8_quant_probe_pair" else ""
            print("%-26s %-5d %-6s %-17s %8.3f %8.3f %8.3f %7s %7s %8s %8s %7s" % (
                c["op"][:20] + kind, c["M"], c["K"], r["variant"], r["us_graph"], r["us_min"], r["us_max"],
                r.get("gbps", "-"), r["vs_base"], r.get("us_queued", "-"), r.get("us_kernel", "-"),
                r.get("gbps_moved", "-")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
