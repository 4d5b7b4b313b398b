"""Stream-K block-scaled FP8 GEMM for problems with few output tiles and long K, in Gluon (sm_90a).

out[m, n] = Σ_kb a_scale[m, kb] · b_scale[n // 128, kb] · Σ_{k in block kb} a[m, k] · b[n, k]

Same maths, operands and validation as ``fp8_gemm.fp8_gemm_nt`` (DeepGEMM fp8_gemm_nt). At M = 128, N = 7168,
K = 16384 there are 56 output tiles of 128×128 for 132 SMs: one tile per CTA leaves 76 SMs idle, and split-K by
a whole factor leaves part of the last wave empty (the tl split-K entry: 224 items on 264 slots). Stream-K
instead gives every CTA an equal contiguous range of the (tile, 128-wide K block) iterations:

* iterations are numbered tile-major (``tile · KB + kb``, tiles in fp8_gemm_ws's GROUP_M order); CTA p of P takes
  ``[p·T // P, (p+1)·T // P)`` of the T = tiles · KB iterations, i.e. a run of *segments* (one tile's K range
  each): a middle segment covering the whole tile is stored directly, a partial one (a tile's head, tail or
  middle) goes to an fp32 workspace slot (the CTA's first or its last segment: two slots per CTA);
* the CTA is fp8_gemm_ws's warp-specialized one (a TMA producer warp feeding a NUM_STAGES ring; two consumer
  warpgroups of 64 rows each running fp8_gemm_ws_loop's K loop — PIPE: two wgmmas in flight, the promotion of
  one block under the next block's wgmma); the producer walks the same segments, so the ring stays full across
  segment boundaries;
* fix-up, deterministic and in-kernel: each consumer warpgroup stores its 64 rows of a partial, synchronizes (named
  barrier), and its first thread increments the tile's per-warpgroup counter once (``atom.acq_rel.gpu``, a release
  cumulative over the warpgroup's stores); after a second barrier every thread re-reads it (``ld.acquire.gpu``).
  A thread that reads the full count (the tile's segment count) has acquired every partial and writes its own elements of the output as the sum of the
  partials **in CTA order** (the order and the segment boundaries are fixed by T and P, so the result does not
  depend on which CTA arrives last; a thread of an earlier CTA that also reads the full count writes the same
  values). The thread that made the last increment re-arms the counter to 0 after its warpgroup's reads, so the
  cached counters stay zero across calls and CUDA-graph replays (fp8_gemm_small's per-device counter buffer);
* M, N and K tails: TMA zero-fills out-of-bounds rows, columns and K; stores are masked.

Measured on the H200 (session 18; benchmarks/results/h200.jsonl suite fp8_gemm_ab, interleaved GPU clock): correct
(gpu tests); fp8_gemm_nt's default only at 128×7168×16384, with 112 CTAs (each tile split in two; run 4 below), slower
than the committed configs on every other shape tried. W1 (72c9172, one counter
increment per thread): 128×7168×16384 70.0 µs against 47.5 (tl split-K), ~60 µs at 128×4096×7168 and 128×2112×7168
whatever the work; M = 4096 with DP 1.13-1.22× slower than fp8_gemm_ws. W2 (0fba9bb, one increment per warpgroup):
128×7168×16384 54.9 against 48.1 (cuBLAS 51.5), 4096×7168 29.9 / 17.5, 2112×7168 34.8 / 13.3, 7168×2048 24.1 / 10.4,
24576×1536 30.1 / 16.4, 32768×512 22.9 / 11.7; 4 stages no different from 6. So ~15-20 µs per launch that does not
scale with the work remains. Run 3 (9de02f9, CTA count GRID varied, µs): with one whole tile per CTA (no fix-up) the
kernel runs at ~0.43 µs per K block per CTA (128×7168×16384 GRID 56: 55.0; 128×2112×7168 GRID 17: 24.7), as
fp8_gemm_ws does; splitting every tile in two costs 10-16 µs more than the halved work (GRID 112: 47.5 against the tl
entry's 46.65, 40 ms A-B 48.4 vs 47.3; 2112×7168 GRID 34: 22.4), and more contributors cost more (2112×7168 GRID 68
21.2, GRID 132 41.1; 4096×7168 GRID 32/64/132: 25.5/23.8/30.0 against 17.3). So the fix-up itself (partial store,
arrival, the last arrival's merge at the end of the kernel) is the cost, not the CTA count. Not yet separated: the
merge's dependent loop of 64 scalar strong loads per thread per contributor, the MEMBAR.ALL.GPU / CCTL.IVALL of each
arrival. Run 4 (c4d9c77, PART_BLOCKED: partials through a coalesced blocked layout): 128×7168×16384 132 CTAs 49.7,
112 CTAs 47.1 against 48.3 for the tl entry (40 ms A-B 47.9 vs 49.1; the 112-CTA accumulator-layout twin 48.2);
128×2112×7168 22.4 (was 41.1), 4096×7168 23.2 (30.0), 7168×2048 17.8 (24.1) against 13.3 / 16.8 / 10.3. Next steps:
all contributors' loads issued before summing, or the classic stream-K order (the tile's first CTA waits for the
others' partials instead of the last one merging, so the merge overlaps the other CTAs' work).

Session 19: SCALE_AHEAD 1 (fp8_gemm_ws_loop: each K-block pair's scales loaded an iteration ahead; in the committed
SASS the next block's scale product waited on its load right before the second wgmma's issue): 128×7168×16384 GRID 112
46.20 → 43.72 µs (W1, 346898a, A/A 0.999) and 46.48 → 44.69 (W2, 460236b, A/A 0.998), fp8_gemm_nt's entry since.

Session 20 (H200 W1 at 1230905, interleaved GPU clock, 128×7168×16384, time ratio to the committed GRID 112 + SCALE_AHEAD
entry, A/A 1.0016; cuBLAS 51.22 µs vs 44.88): a two-contributor tile merged with both partials' loads issued before
the add (one L2 round trip instead of the loop's two dependent ones; code in git at 3c994ba) 1.0009, and 44.96 vs
45.10 µs at the suite's 40 ms timing: nothing, dropped (its num_k_blocks == 1 specialization also tripped an LLVM
assertion in Triton 3.6's TritonGPU-to-LLVM lowering). With it: 5 stages 0.9998, GRID 120 1.091, GRID 132 1.083 (tiles
split in up to three pieces); BLOCK_N 64 with GRID 112 (one whole 128×64 tile per CTA: no fix-up at all) 1.008. So
GRID 112 stays. The segment loops do not have the Triton 3.6 Gluon frontend bug found in session 19 (a loop-carried
variable read only as a nested range() start is not carried): their only carried value, the ring slot ``it``, is read in
the inner body, and k_lo / k_hi are recomputed per segment (TTGIR: ``it`` passes through both scf.for levels).

Session 21 (128×7168×16384, GRID 112; benchmarks/probe_fp8_gemm_stream.py, interleaved GPU clock, µs): where the time
goes. The same producer and ring without wgmmas (W1 at f3051ee) stream B at 3.48 TB/s (33.7; B alone 3.76 TB/s, 56 CTAs
2.90, 132 CTAs 3.53), 34.4 with a 512-cycle-per-block tensor-core model: the memory system allows ~35. The CTA's real
K loops without the fix-up (W2 at 23d6340) 37.2 (6 stages 36.2, SCALE_AHEAD 0 38.9, + storing the fp32 partial 38.8),
the whole kernel 43.5 in the same loop: ~6 µs (14 %) is the fix-up and kernel tail, ~3 µs the real loop over the load
model. L2 bulk prefetch of B rows ahead of the TMA loads (W1, knob since removed; code at ee07cbd) lost 1.6-5.5× (one
cp.async.bulk.prefetch per 128-byte row: 128 TMA-unit operations per K block). TMA descriptors with 256-byte L2
promotion cannot reach a Gluon kernel in Triton 3.6: the launcher encodes every descriptor at launch
(driver.py make_tensordesc_arg → fill_tma_descriptor, promotion fixed to 128 B in driver.c) and no argument carries it.
WAIT2 (a tile of two contributors merged by the second from registers: the first stores its partial and release-
increments as before, the second polls for it with acquire loads, adds, stores out and re-arms; no store, reload or
increment of its own partial): W2 0.965 (44.35 → 42.79, A/A 1.000, cuBLAS 51.05), 40 ms graph passes A-B-B-A-A-B 44.92 →
43.40, in the probe 43.50 → 42.68; the entry's default since. W3 (9fd8acf, entry with WAIT2): 42.68 against 44.35
without (1.036; A/A 1.009; cuBLAS 50.61), + 5 / 6 stages 1.006 / 1.014 (no gain); gpu tests bit-identical to the
general merge with graph replays, tails at GRID 112 correct, except K = 128 (one K block), where the WAIT2 branch did
not compile (LLVM assertion in Triton 3.6's lowering of the num_k_blocks == 1 specialization): wait2_active leaves it
out there (no tile is split with one K block). The remaining ~5.5 µs over the loop-only kernel is the first
contributor's partial store and the waiter's poll, load and store after the last K block.

Gluon compiles only for CUDA (sm_90a): there is no interpreter path, so the launcher raises on a non-CUDA tensor.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from tritonseek.kernels._host import cdiv, config_key
from tritonseek.kernels._utils import check_config
from tritonseek.kernels.fp8_gemm import BLOCK_K, _tma_storable, check_nt_inputs
from tritonseek.kernels.fp8_gemm_small import _arrival_counters
from tritonseek.kernels.fp8_gemm_ws import (
    _GL_DTYPES,
    _MAXNREG,
    _c_buf,
    _check_cuda_sm90,
    _num_sms,
    _smem_layout,
    _store_tile,
    _tile_coords,
)
from tritonseek.kernels.fp8_gemm_ws_loop import _tile_k_loop

# BLOCK_M is 128 (two consumer warpgroups of 64 rows); BLOCK_N 64 or 128 keeps a tile inside one weight-scale block.
# NUM_STAGES: the ring depth (a stage is 16 KB of A + BLOCK_N·128 bytes of B; no epilogue buffer: masked stores).
# GRID: CTAs (0 = one per SM). PIPE / PIPE0 / UNROLL2: fp8_gemm_ws_loop's K loop schedules. DP: with ≥ 2 waves of
# tiles, all but the last one to two waves' worth run data-parallel (whole tiles, CTA p: tiles p, p + P, …; neighbouring
# CTAs share A and B in L2 as in fp8_gemm_ws) and stream-K splits only the rest (the Stream-K paper's "DP + SK").
# TMA_STORE: whole tiles leave through shared memory and a TMA store (16-bit out, 16-byte aligned rows, and where the
# two [64, BLOCK_N] buffers fit beside the ring), else masked stores. PRODUCER_REGS 48 (fp8_gemm_ws: 40): the
# producer's segment arithmetic spilled 12 bytes at 40 (sm_90a ptxas); 2 × 128 × 232 + 128 × 48 = 65536.
# SCALE_AHEAD (0/1, with PIPE): fp8_gemm_ws_loop's scale loads one K-block pair ahead (that module's docstring).
# WAIT2: a tile split between two CTAs is merged by the second one, which waits for the first's partial instead of
# storing its own (_sk_fixup); only where every CTA is resident at once (GRID ≤ SMs, else the launcher turns it off).
# PART_BLOCKED: the fix-up's partials in a coalesced blocked layout (see _sk_fixup; its layout conversion takes
# 32 KB of shared memory per warpgroup, so ≤ 4 stages of 128×128 beside the TMA-store buffers).
_DEFAULT_SK = dict(BLOCK_N=128, NUM_STAGES=4, GROUP_M=8, GRID=0, PIPE=True, PIPE0=True, UNROLL2=True, DP=True,
                   TMA_STORE=True, PART_BLOCKED=True, PRODUCER_REGS=48, CONSUMER_REGS=232, SCALE_AHEAD=0, WAIT2=False)
SK_CONFIG_SPEC: dict = dict(
    BLOCK_N=(64, 128), NUM_STAGES=range(2, 8), GROUP_M=range(1, 1025), GRID=range(0, 4097), PIPE=bool, PIPE0=bool,
    DP=bool, TMA_STORE=bool, PART_BLOCKED=bool, SCALE_AHEAD=(0, 1),
    UNROLL2=bool, PRODUCER_REGS=tuple(range(24, 257, 8)), CONSUMER_REGS=tuple(range(24, 257, 8)),
    WAIT2=bool,
)
_BLOCK_M = 128
_THREADS = 128  # threads per consumer warpgroup (the fix-up counts one increment per thread)


def _ring_bytes(cfg: dict) -> int:
    return cfg["NUM_STAGES"] * (_BLOCK_M * BLOCK_K + cfg["BLOCK_N"] * BLOCK_K)


def _scratch_bytes(cfg: dict) -> int:
    # PART_BLOCKED: the accumulator's layout conversion, [64, BLOCK_N] fp32 per consumer warpgroup
    return 2 * 64 * cfg["BLOCK_N"] * 4 if cfg["PART_BLOCKED"] else 0


_SMEM_LIMIT = 226 * 1024  # 227 KB per block on sm_90, less the mbarriers


# config_key of the overrides -> the checked full config (sk_config is a pure function of the overrides' keys, value
# types and values): fp8_gemm_nt's stream-K entry re-checked the same table overrides on every call (~18 µs)
_SK_CONFIGS: dict = {}


def sk_config(overrides: dict | None = None) -> dict:
    """The stream-K launch config: ``_DEFAULT_SK`` with ``overrides`` (ValueError naming the key for an unknown key or
    a value outside ``SK_CONFIG_SPEC``; NUM_STAGES 7 only with BLOCK_N 64, shared memory being 227 KB; PART_BLOCKED
    at most 4 stages of 128×128 or 6 of 128×64; SCALE_AHEAD 1 only with PIPE)."""
    key = config_key(overrides if overrides is not None else {})
    hit = _SK_CONFIGS.get(key) if key is not None else None
    if hit is not None:  # these overrides passed the checks below before: the same full config, as a fresh copy
        return dict(hit)
    cfg = dict(_DEFAULT_SK)
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise TypeError(f"config must be a dict of sk_config overrides, got {type(overrides).__name__}")
        unknown = sorted(set(overrides) - set(cfg))
        if unknown:
            raise ValueError(f"unknown stream-K config keys {unknown}; known: {sorted(cfg)}")
        cfg.update(overrides)
    check_config("config", cfg, SK_CONFIG_SPEC)
    if cfg["SCALE_AHEAD"] and not cfg["PIPE"]:  # the serial K loop has no scale look-ahead: refused, not ignored
        raise ValueError("config SCALE_AHEAD=1 needs PIPE=True (only the PIPE K loop loads scales ahead)")
    if _ring_bytes(cfg) > 200 * 1024:
        raise ValueError(f"config NUM_STAGES={cfg['NUM_STAGES']} with BLOCK_N={cfg['BLOCK_N']} needs more than "
                         "200 KB of shared memory")
    if _ring_bytes(cfg) + _scratch_bytes(cfg) > _SMEM_LIMIT:
        raise ValueError(f"config PART_BLOCKED with NUM_STAGES={cfg['NUM_STAGES']} and BLOCK_N={cfg['BLOCK_N']} needs "
                         "more than 226 KB of shared memory (PART_BLOCKED=False, or fewer stages)")
    if key is not None and len(_SK_CONFIGS) < 1024:
        _SK_CONFIGS[key] = dict(cfg)
    return cfg


@gluon.jit
def _sk_start(p, num_programs, total):
    # first iteration of CTA p: p·T // P (int64 products; the result fits int32)
    return (p.to(gl.int64) * total // num_programs).to(gl.int32)


@gluon.jit
def _sk_owner(x, num_programs, total):
    # the CTA whose range holds iteration x: the largest p with p·T // P ≤ x, i.e. ⌈(x+1)·P / T⌉ − 1
    return (((x + 1).to(gl.int64) * num_programs + total - 1) // total - 1).to(gl.int32)


@gluon.jit
def _sk_segment_at(j, n_dp, pid, num_programs, dp_tiles, start, end, u0, num_k_blocks):
    # segment j of this CTA: j < n_dp: data-parallel tile pid + j·P, all K blocks; else the stream-K tile
    # u = u0 + j − n_dp (global tile dp_tiles + u) over its K blocks inside [start, end). -> (tile, u, k_lo, k_hi)
    # (one loop for both kinds, so the K loop is instantiated once: two copies made ptxas spill)
    dp = (j < n_dp).to(gl.int32)
    u = u0 + j - n_dp
    t = dp * (pid + j * num_programs) + (1 - dp) * (dp_tiles + u)
    k_lo = (1 - dp) * gl.maximum(start - u * num_k_blocks, 0)
    k_hi = dp * num_k_blocks + (1 - dp) * gl.minimum(end - u * num_k_blocks, num_k_blocks)
    return t, u, k_lo, k_hi


@gluon.jit
def _sk_range(pid, num_programs, dp_tiles, num_tiles, num_k_blocks):
    # this CTA's data-parallel tile count, stream-K iteration range [start, end) and segment count
    total = (num_tiles - dp_tiles) * num_k_blocks
    start = _sk_start(pid, num_programs, total)
    end = _sk_start(pid + 1, num_programs, total)
    u0 = start // num_k_blocks
    n_dp = dp_tiles // num_programs
    return n_dp, total, start, end, u0, n_dp + (end + num_k_blocks - 1) // num_k_blocks - u0


@gluon.jit
def _sk_producer(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, M, N, num_k_blocks, num_programs,
                 dp_tiles, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                 GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    # One warp: this CTA's segments in the consumers' order, each K block's A and B tiles into the ring
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    pid = gl.program_id(0)
    n_dp, total, start, end, u0, n_seg = _sk_range(pid, num_programs, dp_tiles, num_pid_m * num_pid_n, num_k_blocks)
    stage_bytes: gl.constexpr = a_desc.block_type.nbytes + b_desc.block_type.nbytes
    it = 0
    for j in range(n_seg):
        t, u, k_lo, k_hi = _sk_segment_at(j, n_dp, pid, num_programs, dp_tiles, start, end, u0, num_k_blocks)
        pid_m, pid_n = _tile_coords(t, num_pid_m, num_pid_n, GROUP_M)
        for kb in range(k_lo, k_hi):
            s = it % NUM_STAGES
            # empty barriers start "released": the first pass waits on the opposite parity
            mbarrier.wait(empty_bars.index(s), ((it // NUM_STAGES) & 1) ^ 1)
            bar = ready_bars.index(s)
            mbarrier.expect(bar, stage_bytes)
            tma.async_copy_global_to_shared(a_desc, [pid_m * BLOCK_M, kb * BLOCK_K], bar, a_bufs.index(s))
            tma.async_copy_global_to_shared(b_desc, [pid_n * BLOCK_N, kb * BLOCK_K], bar, b_bufs.index(s))
            it += 1


# one element per thread of a consumer warpgroup (4 warps): the fix-up's single-thread increment and re-arm are this
# layout's element 0 (masked tensor atomics / stores run in the one thread that owns it)
_WG_LANES = gl.constexpr(gl.BlockedLayout([1], [32], [4], [0]))


@gluon.jit
def _sk_arrive(ctr):
    # the warpgroup's partial stores, a warpgroup barrier, then ONE increment, by the thread owning element 0
    # (atom.acq_rel.gpu: cumulative over the stores the barrier ordered before it, as CUTLASS's semaphore release);
    # after a second barrier every thread re-reads the count (an acquire). Returns (count read, per-thread [128]
    # tensor whose element 0 is the count before the increment). W1 (72c9172) had every thread increment (128
    # same-address atomics per warpgroup); one per warpgroup took 15-30 µs off each M = 128 launch in W2.
    lane = gl.arange(0, 128, layout=_WG_LANES)
    gl.thread_barrier()  # every thread's partial stored before the (single-thread) release
    old = gl.atomic_add(ctr + lane * 0, gl.full([128], 1, gl.int32, _WG_LANES), mask=lane == 0, sem="acq_rel",
                        scope="gpu")
    gl.thread_barrier()  # the increment before this warpgroup's reads
    cur = gl.inline_asm_elementwise("ld.acquire.gpu.global.u32 $0, [$1];", "=r,l", [ctr], dtype=gl.int32,
                                    is_pure=False, pack=1)
    gl.thread_barrier()  # this warpgroup's reads before its re-arming thread (if here) zeroes the counter
    return cur, old


@gluon.jit
def _sk_wait_count(ctr, want):
    # every thread of the warpgroup polls the counter with acquire loads until it reaches want (WAIT2's waiter: the
    # first contributor's release-increment then orders its partial's stores before our loads)
    cur = gl.inline_asm_elementwise("ld.acquire.gpu.global.u32 $0, [$1];", "=r,l", [ctr], dtype=gl.int32,
                                    is_pure=False, pack=1)
    while cur < want:
        cur = gl.inline_asm_elementwise("ld.acquire.gpu.global.u32 $0, [$1];", "=r,l", [ctr], dtype=gl.int32,
                                        is_pure=False, pack=1)


@gluon.jit
def _sk_rearm(ctr, old, full):
    # the thread that made the last increment (element 0 of old) zeroes the counter for the next launch
    lane = gl.arange(0, 128, layout=_WG_LANES)
    gl.store(ctr + lane * 0, gl.zeros([128], gl.int32, _WG_LANES), mask=(lane == 0) & (old == full - 1))


@gluon.jit
def _sk_store_sum(tot, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, ROWS: gl.constexpr, BLOCK_N: gl.constexpr,
                  prow: gl.constexpr, pcol: gl.constexpr):
    # a merged tile's rows of out (masked; pointers formed here, after the merge's loads, to keep registers free)
    rm = off_m + gl.arange(0, ROWS, layout=prow)
    rn = off_n + gl.arange(0, BLOCK_N, layout=pcol)
    c_ptrs = c_ptr + gl.expand_dims(rm.to(gl.int64) * stride_cm, 1) + gl.expand_dims(rn * stride_cn, 0)
    gl.store(c_ptrs, tot.to(c_ptr.dtype.element_ty), mask=gl.expand_dims(rm < M, 1) & gl.expand_dims(rn < N, 0))


@gluon.jit
def _sk_fixup(acc, u, t, slot, ws_ptr, cnt_ptr, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, num_k_blocks,
              num_programs, total, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
              BLOCK_N: gl.constexpr, PART_BLOCKED: gl.constexpr, row_layout: gl.constexpr, col_layout: gl.constexpr,
              WAIT2: gl.constexpr):
    # a partial segment of tile t (stream-K tile u): this warpgroup's rows → workspace slot, arrive; the thread that
    # reads the full count sums the tile's partials in CTA order (fixed) and writes its own elements of out.
    # PART_BLOCKED: partials, merge and output in a row-major blocked layout (16-byte accesses, a warp covers whole
    # 512-byte rows; one layout conversion through shared memory) instead of the wgmma accumulator layout, whose
    # 4-byte accesses touch 8 half-used sectors per warp instruction (run 3: the fix-up cost 10-16 µs per split tile)
    SLOT: gl.constexpr = BLOCK_M * BLOCK_N
    if PART_BLOCKED:
        part_layout: gl.constexpr = gl.BlockedLayout([1, 4], [128 // BLOCK_N, BLOCK_N // 4], [4, 1], [1, 0])
        part = gl.convert_layout(acc, part_layout)
        prow: gl.constexpr = gl.SliceLayout(1, part_layout)
        pcol: gl.constexpr = gl.SliceLayout(0, part_layout)
    else:
        part = acc
        prow: gl.constexpr = row_layout
        pcol: gl.constexpr = col_layout
    # this warpgroup's [ROWS, BLOCK_N] piece of a row-major [BLOCK_M, BLOCK_N] slot (computed here, not kept live
    # across the K loop: 64 more registers there made ptxas spill)
    lr = ROW0 + gl.arange(0, ROWS, layout=prow)
    piece = gl.expand_dims(lr * BLOCK_N, 1) + gl.expand_dims(gl.arange(0, BLOCK_N, layout=pcol), 0)
    first = _sk_owner(u * num_k_blocks, num_programs, total)
    last = _sk_owner(u * num_k_blocks + num_k_blocks - 1, num_programs, total)
    ctr = cnt_ptr + t * (BLOCK_M // ROWS) + ROW0 // ROWS
    full = last - first + 1  # one increment per contributing warpgroup
    # WAIT2: a tile of two contributors is merged by the second (higher-index) one, which waits for the first's
    # partial and adds its own from registers: no store, reload or increment of its own partial. The waiter always has
    # the higher index, so it waits only on a CTA dispatched before it (the launcher keeps WAIT2 to grids that are
    # resident at once). Same sum: (0 + first) + second, as the general merge adds them in CTA order.
    waiter = (full == 2) & (gl.program_id(0) == last)
    if WAIT2 and waiter:
        _sk_wait_count(ctr, 1)
        sl = first * 2 + (u != _sk_start(first, num_programs, total) // num_k_blocks).to(gl.int32)
        tot = gl.zeros_like(part) + gl.load(ws_ptr + sl.to(gl.int64) * SLOT + piece, cache_modifier=".cg")
        tot += part
        _sk_store_sum(tot, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, ROWS, BLOCK_N, prow, pcol)
        gl.thread_barrier()  # every thread has read the count before it is re-armed
        lane = gl.arange(0, 128, layout=_WG_LANES)
        gl.store(ctr + lane * 0, gl.zeros([128], gl.int32, _WG_LANES), mask=lane == 0)
    else:
        gl.store(ws_ptr + slot.to(gl.int64) * SLOT + piece, part)
        cur, old = _sk_arrive(ctr)
        if cur == full:
            tot = gl.zeros_like(part)
            for p in range(first, last + 1):
                # CTA p's slot for tile u: 0 if u is its first segment's tile, else 1 (then u is its last segment)
                sl = p * 2 + (u != _sk_start(p, num_programs, total) // num_k_blocks).to(gl.int32)
                tot += gl.load(ws_ptr + sl.to(gl.int64) * SLOT + piece, cache_modifier=".cg")
            _sk_store_sum(tot, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, ROWS, BLOCK_N, prow, pcol)
        _sk_rearm(ctr, old, full)


@gluon.jit
def _sk_consumer(a_bufs, b_bufs, ready_bars, empty_bars, c_smem, c_desc, c_ptr, ws_ptr, cnt_ptr, a_scale_ptr,
                 b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk, stride_cm, stride_cn,
                 num_programs, dp_tiles, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr,
                 NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr,
                 UNROLL2: gl.constexpr, PIPE: gl.constexpr, PIPE0: gl.constexpr, PART_BLOCKED: gl.constexpr,
                 SCALE_AHEAD: gl.constexpr, WAIT2: gl.constexpr):
    # rows [ROW0, ROW0 + ROWS) of every segment of this CTA (one warpgroup, 4 warps); whole tiles leave through
    # c_smem + a TMA store where TMA_STORE, the fix-up's sums through masked stores
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 32])
    row_layout: gl.constexpr = gl.SliceLayout(1, mma_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, mma_layout)
    zero = gl.zeros([ROWS, BLOCK_N], gl.float32, mma_layout)
    zero_rows = gl.zeros([ROWS], gl.float32, row_layout)
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    pid = gl.program_id(0)
    n_dp, total, start, end, u0, n_seg = _sk_range(pid, num_programs, dp_tiles, num_pid_m * num_pid_n, num_k_blocks)
    it = 0
    for j in range(n_seg):
        t, u, k_lo, k_hi = _sk_segment_at(j, n_dp, pid, num_programs, dp_tiles, start, end, u0, num_k_blocks)
        pid_m, pid_n = _tile_coords(t, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M + ROW0
        off_n = pid_n * BLOCK_N
        rm = off_m + gl.arange(0, ROWS, layout=row_layout)
        # scale pointers at the segment's first K block (the K loop indexes blocks from 0)
        sa_ptrs = a_scale_ptr + rm * stride_asm + k_lo * stride_ask
        sb_ptr = b_scale_ptr + (off_n // 128) * stride_bsn + k_lo * stride_bsk
        acc, it = _tile_k_loop(it, k_hi - k_lo, zero, zero_rows, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs,
                               rm < M, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES, UNROLL2, PIPE,
                               False, PIPE0, SCALE_AHEAD)
        if k_hi - k_lo == num_k_blocks:  # a whole tile (every data-parallel one): no partial
            _store_tile(acc, c_smem, c_desc, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, ROWS, BLOCK_N,
                        TMA_STORE, row_layout, col_layout)
        else:
            _sk_fixup(acc, u, t, pid * 2 + (u != u0).to(gl.int32), ws_ptr, cnt_ptr, c_ptr, off_m, off_n, M, N,
                      stride_cm, stride_cn, num_k_blocks, num_programs, total, ROW0, ROWS, BLOCK_M, BLOCK_N,
                      PART_BLOCKED, row_layout, col_layout, WAIT2)
    if TMA_STORE:
        tma.store_wait(0)


@gluon.jit
def _fp8_gemm_sk_kernel(
    a_desc, b_desc, c_desc, c_ptr, ws_ptr, cnt_ptr, a_scale_ptr, b_scale_ptr,
    M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk, stride_cm, stride_cn, num_programs,
    dp_tiles, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
    NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr, PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    UNROLL2: gl.constexpr, PIPE: gl.constexpr, PIPE0: gl.constexpr, PART_BLOCKED: gl.constexpr,
    SCALE_AHEAD: gl.constexpr, WAIT2: gl.constexpr, num_warps: gl.constexpr,
):
    # a_desc: TMA over a [M, K] e4m3 (K contiguous), box [BLOCK_M, BLOCK_K]; b_desc: b [N, K], box [BLOCK_N, BLOCK_K]
    # c_desc: TMA_STORE: TMA over out [M, N], box [BLOCK_M // 2, BLOCK_N] (one store per warpgroup, whole tiles)
    # c_ptr:  out [M, N], strides (stride_cm, stride_cn); masked stores (fix-up sums; whole tiles without TMA_STORE)
    # ws_ptr: fp32 partials [2·num_programs, BLOCK_M, BLOCK_N] (CTA p: slots 2p = first segment, 2p+1 = last)
    # cnt_ptr: int32 [tiles · 2] arrival counters (tile, warpgroup), 0 on entry and re-armed to 0 on exit
    # dp_tiles: tiles 0 .. dp_tiles-1 (a multiple of num_programs) run data-parallel (CTA p: tiles p, p + P, …); the
    #           stream-K range covers the rest
    # a_scale: [M, KB] fp32 (stride_asm, stride_ask); b_scale: [NB, KB] fp32 (stride_bsn, stride_bsk)
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [NUM_STAGES] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES] + b_desc.block_type.shape, b_desc.layout)
    ready_bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty_bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready_bars.index(i), count=1)
        mbarrier.init(empty_bars.index(i), count=2)  # released by both consumer warpgroups
    if TMA_STORE:  # one epilogue buffer per consumer warpgroup
        c_smem = gl.allocate_shared_memory(c_desc.dtype, [2] + c_desc.block_type.shape, c_desc.layout)
    else:
        c_smem = a_bufs  # unused placeholder (same partition signature either way)
    # default partition = warpgroup 0 (rows 0-63), worker 0 = warpgroup 1 (rows 64-127), worker 1 = TMA warp
    gl.warp_specialize([
        (_sk_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 0, 1, 0, TMA_STORE), c_desc, c_ptr,
                        ws_ptr, cnt_ptr, a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask,
                        stride_bsn, stride_bsk, stride_cm, stride_cn, num_programs, dp_tiles, BLOCK_M, BLOCK_N,
                        GROUP_M, NUM_STAGES, TMA_STORE, 0, BLOCK_M // 2, UNROLL2, PIPE, PIPE0, PART_BLOCKED,
                        SCALE_AHEAD, WAIT2)),
        (_sk_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 1, 1, 0, TMA_STORE), c_desc, c_ptr,
                        ws_ptr, cnt_ptr, a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask,
                        stride_bsn, stride_bsk, stride_cm, stride_cn, num_programs, dp_tiles, BLOCK_M, BLOCK_N,
                        GROUP_M, NUM_STAGES, TMA_STORE, BLOCK_M // 2, BLOCK_M // 2, UNROLL2, PIPE, PIPE0,
                        PART_BLOCKED, SCALE_AHEAD, WAIT2)),
        (_sk_producer, (a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, M, N, num_k_blocks, num_programs,
                        dp_tiles, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def wait2_active(cfg: dict, ctas: int, num_k_blocks: int, num_sms: int) -> bool:
    """Whether a launch compiles WAIT2 in: asked for, every CTA resident at once (ctas ≤ SMs: the waiter must not
    wait on a CTA that cannot start) and more than one K block (with one, no tile is split, and the num_k_blocks == 1
    specialization of the WAIT2 branch trips an LLVM assertion in Triton 3.6's lowering: H200 W3 at 9fd8acf, 64×576×128,
    the assertion session 20's two-load merge met there too)."""
    return bool(cfg["WAIT2"]) and ctas <= num_sms and num_k_blocks > 1


def sk_grid(m: int, n: int, k: int, block_n: int, num_sms: int, grid: int = 0, dp: bool = True) -> tuple[int, int]:
    """(CTAs, data-parallel tiles) of a launch: ``grid`` CTAs (0 = one per SM), at most one per iteration (every CTA
    gets ≥ 1); with ``dp`` and ≥ 2 waves of tiles, (waves − 1) · CTAs whole tiles run data-parallel first, so the
    stream-K range holds between one and two waves of tiles."""
    tiles = cdiv(m, _BLOCK_M) * cdiv(n, block_n)
    ctas = max(1, min(grid or num_sms, tiles * cdiv(k, BLOCK_K)))
    dp_tiles = (tiles // ctas - 1) * ctas if dp and tiles >= 2 * ctas else 0
    return ctas, dp_tiles


def launch_fp8_gemm_sk(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
                       out: torch.Tensor, config: dict | None = None) -> torch.Tensor:
    """Launch the stream-K kernel on operands validated by ``fp8_gemm_nt_sk`` or ``fp8_gemm_nt`` (which dispatches
    here for a GLUON table entry with STREAM_K=True); returns out. config: overrides of ``sk_config``."""
    cfg = sk_config(config)
    m, k = a.shape
    n = b.shape[0]
    kb = cdiv(k, BLOCK_K)
    bn = int(cfg["BLOCK_N"])
    dev = a.device.index if a.device.index is not None else torch.cuda.current_device()
    grid, dp_tiles = sk_grid(m, n, k, bn, _num_sms(dev), int(cfg["GRID"]), bool(cfg["DP"]))
    tiles = cdiv(m, _BLOCK_M) * cdiv(n, bn)
    ws = torch.empty((2 * grid, _BLOCK_M, bn), dtype=torch.float32, device=a.device)
    cnt = _arrival_counters(a.device, 2 * tiles)
    gl_fp8 = gl.float8e4nv
    a_desc = TensorDescriptor(a, [m, k], [a.stride(0), 1], [_BLOCK_M, BLOCK_K], _smem_layout([_BLOCK_M, BLOCK_K], gl_fp8))
    b_desc = TensorDescriptor(b, [n, k], [b.stride(0), 1], [bn, BLOCK_K], _smem_layout([bn, BLOCK_K], gl_fp8))
    pipe = bool(cfg["PIPE"])
    # whole-tile TMA store: 16-bit out (fp32 buffers would not fit beside the ring), aligned rows, where its two
    # [64, BLOCK_N] buffers fit beside the ring and the PART_BLOCKED scratch
    part_blocked = bool(cfg["PART_BLOCKED"])
    tma_store = (bool(cfg["TMA_STORE"]) and out.element_size() == 2 and _tma_storable(out)
                 and _ring_bytes(cfg) + _scratch_bytes(cfg) + 2 * 64 * bn * 2 <= _SMEM_LIMIT)
    c_desc = (TensorDescriptor(out, [m, n], [out.stride(0), 1], [_BLOCK_M // 2, bn],
                               _smem_layout([_BLOCK_M // 2, bn], _GL_DTYPES[out.dtype])) if tma_store else None)
    _fp8_gemm_sk_kernel[(grid,)](
        a_desc, b_desc, c_desc, out, ws, cnt, a_scale, b_scale,
        m, n, kb, a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1),
        out.stride(0), out.stride(1), grid, dp_tiles,
        BLOCK_M=_BLOCK_M, BLOCK_N=bn, BLOCK_K=BLOCK_K, GROUP_M=int(cfg["GROUP_M"]), NUM_STAGES=int(cfg["NUM_STAGES"]),
        TMA_STORE=tma_store,
        PRODUCER_REGS=int(cfg["PRODUCER_REGS"]), CONSUMER_REGS=int(cfg["CONSUMER_REGS"]),
        UNROLL2=bool(cfg["UNROLL2"]), PIPE=pipe, PIPE0=bool(cfg["PIPE0"]) and pipe, PART_BLOCKED=part_blocked,
        SCALE_AHEAD=int(cfg["SCALE_AHEAD"]) if pipe else 0,
        WAIT2=wait2_active(cfg, grid, kb, _num_sms(dev)),
        num_warps=4, maxnreg=_MAXNREG,
    )
    return out


def fp8_gemm_nt_sk(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    config: dict | None = None,
) -> torch.Tensor:
    """out = (a ⊙ a_scale) @ (b ⊙ b_scale).T, fp32 accumulation promoted once per 128-wide K block, stream-K.

    Warp-specialized Gluon kernel whose CTAs each take an equal range of the (tile, K block) iterations (see the
    module docstring); same operands, result and errors as ``fp8_gemm_nt``, for CUDA Hopper GPUs only.
    Deterministic: partial tiles are summed in a fixed order (bit-identical across calls on one GPU model).
    a: [M, K] float8_e4m3fn, row-major (stride(1) == 1, 16-byte aligned rows; K % 16 == 0).
    a_scale: [M, ceil(K/128)] fp32, one scale per token per 128 channels (a ≈ a_q · a_scale); any strides.
    b: [N, K] float8_e4m3fn, K-contiguous ("NT": the checkpoint's weight as stored).
    b_scale: [ceil(N/128), ceil(K/128)] fp32, the checkpoint's ``weight_scale_inv`` (ceil-sized blocks).
    out: optional [M, N] tensor of out_dtype to write into (any strides whose elements do not share memory: an
        expand()-ed view raises ValueError); else allocated. It must not alias the inputs (not checked: a destination
        overlapping an input may give wrong results).
    out_dtype: bfloat16 (default), float16 or float32. M ≥ 1 any; N and K tails are handled.
    config: optional overrides of ``sk_config`` (BLOCK_N 64/128, NUM_STAGES, GROUP_M, GRID = CTAs (0 = #SMs),
        PIPE, PIPE0, UNROLL2, DP = whole waves of tiles data-parallel first, PRODUCER_REGS, CONSUMER_REGS, SCALE_AHEAD
        = 0 / 1: scale loads one K-block pair ahead), for tests and tuning.
    Returns out [M, N].
    Raises TypeError on non-tensors / wrong dtypes, ValueError on shape or layout mismatch (transposed or unaligned
    a/b, wrong scale shapes, K % 16 != 0), on a bad config key or value, and on a non-CUDA or non-Hopper device.
    Semantics: DeepGEMM fp8_gemm_nt (1×128 activation groups, 128×128 weight blocks).
    """
    m, n, k = check_nt_inputs(a, a_scale, b, b_scale, out_dtype, out)
    sk_config(config)  # a bad config raises on every device
    _check_cuda_sm90(a, "fp8_gemm_nt_sk")
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=a.device)
    return launch_fp8_gemm_sk(a, a_scale, b, b_scale, out, config)
