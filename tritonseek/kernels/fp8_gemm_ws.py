"""Block-scaled FP8 GEMM with producer/consumer warp specialization, written in Gluon.

out[m, n] = Σ_kb a_scale[m, kb] · b_scale[n // 128, kb] · Σ_{k in block kb} a[m, k] · b[n, k]

Same maths, operands and validation as ``fp8_gemm.fp8_gemm_nt`` (DeepGEMM fp8_gemm_nt); this file
holds the large-M kernel whose schedule Triton's ``tl`` level cannot express (see fp8_gemm.py:
``tl`` waits for the wgmma before promoting it, so the tensor core idles during each per-128-K
promotion unless other programs on the SM fill the gap). Design, after DeepGEMM's SM90 kernel:

* persistent grid (one CTA per SM), GROUP_M-swizzled tile order shared by every partition;
* one **producer** warp (24–40 registers) that only issues TMA loads of the A [BLOCK_M, 128] and
  B [BLOCK_N, 128] e4m3 tiles into a NUM_STAGES-deep shared-memory ring, each stage guarded by a
  ``ready`` mbarrier (TMA transaction count) and an ``empty`` mbarrier (consumer release);
* the **consumers**: two warpgroups own the 128-row output tile, 64 rows each, with the rest of
  the register file (setmaxnreg through ``warp_specialize``). Cooperative (default): both in one
  8-warp partition (one instruction stream; Triton syncs its 256 threads at every K block).
  SPLIT: each warpgroup is its own 4-warp partition with its own named barrier, so the two drift
  apart and one's promotion/epilogue overlaps the other's wgmma (DeepGEMM's two math warpgroups);
  a stage is released when both have arrived on its ``empty`` barrier (count 2);
* the promotion (acc += product · a_scale · b_scale, once per 128-wide K block) of block kb-1 runs
  on the CUDA cores while the wgmma of block kb is in flight (two product register sets, explicit
  ``warpgroup_mma_wait``), so the tensor core no longer idles for the whole promotion; PIPE (the default
  since session 15) keeps two wgmmas in flight per warpgroup: blocks kb and kb+1 are issued back to back,
  wait(1) returns kb, which is promoted while kb+1 runs, so the tensor core gets this warpgroup's next
  block without a wait-to-issue gap once per two blocks (benchmarks/probe_wgmma_fp8.py: a warpgroup pair
  with no memory traffic 1309 TFLOP/s serial, 1526 UNROLL2, 1590 PIPE, 1715 chained);
* epilogue through shared memory and a TMA store when ``out`` is 16-byte aligned, else masked
  stores; TMA zero-fills out-of-bounds rows/columns/K so M, N and K tails need no masks in the loop;
* WGS = 3: 192-row tiles, three consumer warpgroups of 64 rows (A arrives as three 64-row TMA boxes,
  Triton shapes being powers of two). 65536 registers hold three consumer warpgroups only at 160 each
  (the producer's at 24), room for the accumulator and ONE product set, so each warpgroup promotes
  serially (issue, wait, promote) and the other two keep the tensor core busy. A stage feeds 1.5×
  the FLOPs of a 128×128 one for 1.25× the bytes: 17% less L2→SMEM traffic per FLOP, which is what
  the 128-row kernel runs short of (~1070 TFLOP/s on every long-K shape, with the promotion hidden).
  ``wgs_for`` picks it per problem from the waves each tile height needs (the 192-row tiles' last wave
  can be worse: 4096×4096 tiles 5.3 → 6 waves against 7.8 → 8).

Measured on the H200 at M = 4096 (DeepGEMM's six (N, K); benchmarks/results/h200.jsonl, commits
650a904 and bad8f9b): split + unrolled 891–1137 TFLOP/s (1.07–1.14× cuBLAS block-scaled at
24576×1536 and 32768×512, 0.81–0.94× elsewhere; run-to-run spread ~5%); cooperative 8-warp
partition 678–932, one product set 742–979. Tried and dropped (kept out of the code): warpgroup 1
started one K block behind warpgroup 0 (within ±3%), DeepGEMM's serial issue–wait–promote loop
(2–17% slower), and a product left in flight across the K loop's back-edge (wait(1) at the top of the
next iteration): ptxas serializes every wgmma (C7514/C7515) as soon as a product stays in flight
across a loop back-edge inside a worker partition (Triton runs worker partitions inside a
dispatch loop) or an epilogue branch sits in the K loop, so PIPE ends each two-block iteration with
wait(0) and only a finished product crosses the back-edge. Session 15 also tried 192-row tiles as two n64
column halves both in flight (registers for two half-width product sets; code in git at 87aed95): slower than
the committed kernel on all six shapes (H200, µs: 124.5 vs 116.7, 277 vs 266, 151 vs 143, 935 vs 873,
245 vs 218, 117.8 vs 111.1), as were 192×64 tiles with PIPE (811–832 TFLOP/s). Also dropped (H200 at 5e848e1):
the previous tile's last promotion and epilogue deferred under the next tile's first wgmma (equal
at K = 16384, 2–10% slower at K ≤ 7168, 3–24% slower in the grouped kernels). H200 at 59c72b9,
WGS = 3 against 2 (µs): 2112×7168 118.6 vs 140.3 (tl 136.3), 24576×1536 260.8 vs 280.7, 32768×512
142.2 vs 155.3, 7168×16384 853 vs 885, 7168×2048 112.5 vs 116.9, 4096×7168 237.9 vs 221.9.

Tried and dropped in session 14 (code in git at 1975573): 128×192 tiles (BLOCK_N = 192; register tensors are
powers of two, so per warpgroup an n128 and an n64 wgmma, both parts inside one weight-scale block, the n128
product promoted under the n64 wgmma; no spills at 232 registers). H200, same runs as the committed configs (µs,
committed → 192 columns): with A read from shared memory by both wgmmas (b08f755) 2112×7168 118 → 125,
24576×1536 270 → 276, 32768×512 144 → 160, 7168×16384 863 → 921, 4096×7168 233 → 250, 7168×2048 112 → 117;
with A loaded once into registers for both (RS wgmma, 1975573) no better: 118 → 131, 862 → 967, 114 → 121. The
grouped kernels lost too (grouped_gemm_ws.py). 128×256 (two n128 halves through one product register set)
spilled in the K loop (acc 128 + product 64 registers + addressing > 232) and was not timed. What bounds the
kernel (benchmarks/probe_wgmma_fp8.py, H200, no TMA): chained fp8 wgmmas run 1705-1746 TFLOP/s for n64, n128 and
n256 alike; a fresh product + wait + promotion per 128-wide K block caps 2 / 3 warpgroups at 1385 / 1452 (n128);
this kernel's ~1100 loses the rest to the TMA ring and epilogue. Larger N tiles alone do not raise the ceiling.

Session 15 (H200, code fe498e8 = PIPE default, cuBLAS block-scaled in the same run; benchmarks/results/h200.jsonl):
M = 4096 suite timing (40 ms of graph replays) 1019 / 1045 / 894 / 1094 / 1121 / 1042 TFLOP/s in DeepGEMM's order
(2112×7168, 24576×1536, 32768×512, 7168×16384, 4096×7168, 7168×2048) against cuBLAS 1090 / 1034 / 768 / 1163 /
1224 / 1111; the 10 ms passes of the same run 1062 / 1160 / 962 / 1231 / 1232 / 1088 (longer timing runs slower on
this GPU, cuBLAS timed the same way); 18-shape geomean 1.091× cuBLAS. Also tried there: PIPE with 6 stages or
GROUP_M 16 (slower), 128×64 PIPE tiles for 2112×7168 (162 vs 117 µs).

Session 16 (H200, code d67dff1, same run, 10 ms graph passes, µs): NHALF — 128-row PIPE tiles with the half-full
last column of N = 2112 run as 128×64 tiles after the whole ones (512 tiles + 32 halves = 4 tiles' work per SM
on paper, against 3 waves of 192-row tiles at 1.45) — 131.1 / 133.2 against 117.6 / 118.6 for the committed
192-row tiles at 4096×2112×7168 (the n64 copy of the K loop spilled 56 bytes and copied its product registers);
5 stages: 2112×7168 117.9 / 118.0, 7168×16384 796.7 / 805.5 vs 771.7 / 771.9, 4096×7168 202.2 / 201.7 vs
189.8 / 192.3, 7168×2048 110.3 / 108.0 vs 124.2 / 108.5. Neither kept (NHALF's code: git d67dff1). Suite
timing of that run (40 ms): 1049.6 / 1158.4 / 1239.2 / 1076.0 TFLOP/s on 2112×7168 / 7168×16384 / 4096×7168 /
7168×2048 against cuBLAS 1095.2 / 1274.3 / 1240.5 / 1138.2 (targets 1059 / 1122 / 1165 / 1086).
TMA multicast across a 2-CTA cluster (how cuBLAS and DeepGEMM halve one operand's L2 reads) is not available:
Triton 3.6's Gluon ``async_copy_global_to_shared`` has no multicast argument and its lowering says
"NYI: Support multicast".

Session 17, WIDE tiles (BLOCK_N = 256, 128×256, the session-14 idea that spilled): each consumer warpgroup issues the
two 128-column halves' wgmmas of a K block one after the other into ONE product register set and promotes each with
its half's b_scale (fp8_gemm_ws_loop._k_loop_wide), so acc0 + acc1 + product = 192 of 232 registers. Two things make
ptxas keep one product set (otherwise 532 bytes of spills): a no-op ``warpgroup_mma_wait(0, deps=[acc])`` after each
promotion, which stops LLVM sinking the FFMAs below the next issue, and the first product passed as the second
wgmma's accumulator under a run-time ``use_acc`` that is always false (a stride < 0), which ties its registers. A
stage is 48 KB for 8.4 MFLOP (5.7 KB per MFLOP against 7.6 for 128×128 and 6.35 for 192×128 tiles) and half as
many tiles pay the per-tile fixed cost. 3 stages (two epilogue buffers per warpgroup) or 4 (one, reused).
H200 W1 at de0ec80 (same run, better of two 10 ms passes, µs, 128×128 PIPE0 → WIDE 3 stages / 4 stages):
7168×16384 794.0 → 767.2 / 796.7, 7168×2048 108.4 → 107.0 / 108.9, 4096×7168 196.3 → 196.0 / 200.1; 2112×7168
(half-empty last tile, 3 waves) 116.4 (192-row) → 144.6. Not a default: W2's A/B at the suite's 40 ms timing
(adf35fa, A-B-B-A-A-B medians) had WIDE at 843.8 / 217.2 / 114.9 µs against 842.5 / 213.9 / 113.1 for 128×128 tiles
on those three shapes, inside the drift; fp8_gemm_nt takes it from a GLUON entry with WIDE=True where ``wide_for``
accepts the problem. A K sweep of the 128×128 kernel at M = 4096, N = 7168 (K = 512…8192, 14 waves)
fits 0.90 µs of fixed cost per tile and 427 ns per tile-K-block per wave; cuBLAS 1.40 µs and 399 ns: the gap is
the steady-state K block (cuBLAS's 2-CTA multicast halves one operand's L2 reads), not the per-tile cost. That run
also showed the suite's 40 ms timing at the 700 W power cap (throttle reason SW power cap, 1575-1850 MHz).

Gluon (``triton.experimental.gluon``) compiles only for CUDA (sm_90a here): there is no
interpreter path, so the launcher raises on any non-CUDA tensor instead of falling back.
"""

from __future__ import annotations


import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from tritonseek.kernels._host import capability_at, cdiv, checked_once, cuda_capability, nvmma_layout, sm_count_at
from tritonseek.kernels._utils import check_config
from tritonseek.kernels.fp8_gemm import BLOCK_K, _tma_storable, check_nt_inputs
from tritonseek.kernels.fp8_gemm_ws_loop import (  # noqa: F401 (_store_tile, _tile_coords: re-exported)
    _drain, _k_loop_wide, _store_tile, _tile_coords, _tile_coords_fast, _tile_k_loop)

# Launch configs of the warp-specialized kernel. BLOCK_M is fixed at 128 (= 2 consumer
# warpgroups × 64 wgmma rows); BLOCK_N ∈ {64, 128} keeps a tile inside one 128-row weight-scale
# block (one scalar b_scale per K block) and leaves registers for two product sets (BLOCK_N = 256, WIDE: two
# such halves per warpgroup through one product set, see the docstring). Default =
# the H200 W1 winner at M = 4096 (commit 650a904): split warpgroups + unrolled K loop, 1084–1137
# TFLOP/s on the four K ≥ 1536 shapes against 823–915 for the cooperative one-set loop.
# WGS: consumer warpgroups per CTA, 2 (128-row tiles) or 3 (192-row tiles, one product set each); None = chosen
# per problem by wgs_for (after the other keys are merged).
# PIPE (128-row tiles; 192-row tiles ignore it): two wgmmas in flight per warpgroup (_k_loop). H200 session 15 at
# M = 4096 (83320e7 / 87aed95, same runs as the committed config, µs): 7168×16384 794 / 790 vs 859 / 873 (192-row
# tiles), 4096×7168 197 / 194 vs 217 / 218 (UNROLL2), 7168×2048 111.3 / 112.2 vs 117.7 / 111.1 (192-row); it loses
# to 192-row tiles at 2112×7168 125 vs 117, 24576×1536 281 vs 266-270, 32768×512 162-170 vs 143-147.
_DEFAULT_WS = dict(BLOCK_M=128, BLOCK_N=128, NUM_STAGES=4, GROUP_M=8, TMA_STORE=True, PRODUCER_REGS=40,
                   SPLIT=True, CONSUMER_REGS=232, UNROLL2=True, WGS=None, PIPE=True, PIPE0=True, IDLE_SKIP=True,
                   TAIL_N64=True, SCALE_AHEAD=0, FAST_COORDS=False)
# IDLE_SKIP (192-row tiles): a consumer warpgroup whose rows all lie past M (M = 4096: 2 of the 3 in the last row of
# tiles, 3% of the work) skips its wgmmas and epilogue and only hands the stages back (fp8_gemm_ws_loop._drain).
# The suite's 40 ms timing runs at the 700 W power cap, so wasted MMAs cost clock: H200 W4 at f4a20b8, 40 ms
# A-B-B-A-A-B medians, on → off, µs: 2112×7168 121.5 → 125.0 (every on round faster than every off round),
# 24576×1536 296.1 → 310.9, 32768×512 157.8 → 160.1.
# TAIL_N64 (192-row tiles): a last column tile with at most 64 columns inside N (N = 2112: 17 of 374 tiles) runs n64
# wgmmas on the first half of its B tile and a masked-store epilogue, instead of multiplying 64 columns of zero fill.
# H200 W5 at d75226d, 40 ms A-B-B-A-A-B medians, on → off, 2112×7168 twice: 122.0 → 121.8 and 120.8 → 122.7 µs: no
# measurable difference (2.9% of the MMAs saved, paid back by the n64 wgmmas and the masked epilogue); kept on as
# the smaller amount of work, correctness-tested on the GPU (tails with N = 2112, 576, 300; real shapes).
# PIPE0 (with PIPE; default since session 16): the two-in-flight loop starts at K block 0 (a zero product stands in for
# block −1) instead of issuing and waiting for block 0 alone at each tile's start. H200 W3 at ee2f2d9, same run, better
# of two 10 ms passes, µs, PIPE → PIPE0: 7168×16384 786.1 → 785.7, 4096×7168 197.1 → 196.6, 7168×2048 113.2 → 110.7
# (192-row tiles ignore it); the grouped masked shapes gained 1–4 % (grouped_gemm_ws.py).
# SCALE_AHEAD (128-row PIPE and 192-row tiles, 0 or 1): the scales of each pair of K blocks (192-row tiles: each block)
# loaded one iteration ahead (fp8_gemm_ws_loop docstring). 128-row tiles: 3 % slower at M = 4096 (H200 W1, 346898a);
# 192-row tiles: 0.901 at 4096×2112×7168 (W2, 460236b), on in that fp8_gemm_nt entry only. FAST_COORDS (off): each
# tile's coordinates without integer divisions (_tile_coords_fast); W2, interleaved GPU clock, ratio (A/A ≤ 0.2 %) at
# M = 4096: 0.995 / 0.994 / 0.990 at (N, K) (7168, 2048) / (4096, 7168) / (7168, 16384), 1.006 / 0.992 / 0.988 at
# (2112, 7168) / (24576, 1536) / (32768, 512): small, one run, not yet a default.
# Time of a 192-row tile (WGS = 3, serial promotion) relative to a 128-row PIPE one (1.5× the work). Fitted to the
# session 15 H200 runs above: waves3 × cost < waves2 picks the faster kernel on all six M = 4096 shapes for any cost
# in [1.40, 1.465) (2112×7168: 3 vs 5 waves, 24576×1536: 32 vs 47, 32768×512: 43 vs 63 → 192 rows; 7168×16384 and
# 7168×2048: 10 vs 14, 4096×7168: 6 vs 8 → 128 rows). Before PIPE (UNROLL2 128-row tiles, session 14) it was 1.365.
# With SCALE_AHEAD (its serial loop no longer waits on each block's scale load) 1.37: H200 s20 W1 at 1230905, 192-row
# SCALE_AHEAD / 128-row PIPE0 time 0.964 at 7168×16384 (10 vs 14 waves: 1.35 per tile), 1.045 at 4096×7168 (6 vs 8:
# 1.39), 0.998 at 7168×2048 (1.40), so 192 rows at 7168×16384 only among those.
_WGS3_TILE_COST = 1.45
_WGS3_AHEAD_TILE_COST = 1.37


def ws_config(m: int, n: int, k: int) -> dict:
    """The launch config of ``fp8_gemm_nt_ws`` for one problem (a copy of the default; WGS None = per problem)."""
    # PIPE0 was measured at M = 4096; fp8_gemm.py's M ≤ 128 Gluon entries were tuned and measured without it
    return dict(_DEFAULT_WS, PIPE0=m > 128)


# Values a caller's config may give each ``ws_config`` key (WGS: None = per problem, 2 or 3; the setmaxnreg
# counts are multiples of 8 in [24, 256]); combinations are checked by ``check_ws_config``.
WS_CONFIG_SPEC: dict = dict(
    BLOCK_M=(128,), BLOCK_N=(64, 128, 256), NUM_STAGES=range(2, 9), GROUP_M=range(1, 1025), TMA_STORE=bool,
    PRODUCER_REGS=tuple(range(24, 257, 8)), CONSUMER_REGS=tuple(range(24, 257, 8)), SPLIT=bool, UNROLL2=bool,
    PIPE=bool, PIPE0=bool, IDLE_SKIP=bool, TAIL_N64=bool, SCALE_AHEAD=(0, 1), FAST_COORDS=bool,
)


@checked_once  # fp8_gemm_nt's GLUON entries re-checked the same table config on every call (~20 µs)
def check_ws_config(cfg: dict) -> None:
    """ValueError naming the key unless ``cfg`` (a full ``ws_config``) holds only known keys with values in
    ``WS_CONFIG_SPEC`` and a supported combination: BLOCK_N 256 (WIDE tiles) needs SPLIT, WGS None or 2 and
    NUM_STAGES ≤ 4; WGS 3 (192-row tiles) needs SPLIT and NUM_STAGES ≤ 4; SCALE_AHEAD 1 needs PIPE with
    BLOCK_N ≤ 128, or WGS 3. Host-only; shared by ``launch_fp8_gemm_ws`` and ``fp8_gemm_nt``'s GLUON entries, so a
    bad entry raises on CPU too."""
    check_config("config", {key: v for key, v in cfg.items() if key != "WGS"}, WS_CONFIG_SPEC)
    wgs = cfg.get("WGS")
    if wgs is not None and (isinstance(wgs, bool) or not isinstance(wgs, int) or wgs not in (2, 3)):
        raise ValueError(f"config key WGS={wgs!r} must be None, 2 or 3")
    if cfg.get("BLOCK_N") == 256 and (not cfg.get("SPLIT") or wgs not in (None, 2) or cfg.get("NUM_STAGES", 4) > 4):
        raise ValueError(f"config BLOCK_N 256 (WIDE tiles) needs SPLIT, WGS None or 2 and NUM_STAGES <= 4, got {cfg}")
    if wgs == 3 and (not cfg.get("SPLIT") or cfg.get("NUM_STAGES", 4) > 4):
        raise ValueError(f"config WGS 3 (192-row tiles) needs SPLIT and NUM_STAGES <= 4, got {cfg}")
    # SCALE_AHEAD lives in two K loops only (launch_fp8_gemm_ws drops it elsewhere): refused rather than ignored.
    # PIPE off with WGS None is refused too: whether 192-row tiles are picked depends on the problem.
    if cfg.get("SCALE_AHEAD") and (cfg.get("BLOCK_N") == 256 or (not cfg.get("PIPE") and wgs != 3)):
        raise ValueError(f"config SCALE_AHEAD=1 needs the PIPE loop of 128-row tiles (PIPE=True, BLOCK_N <= 128) or "
                         f"192-row tiles (WGS=3); got PIPE={cfg.get('PIPE')}, BLOCK_N={cfg.get('BLOCK_N')}, WGS={wgs}")


def wgs_for(m: int, n: int, block_n: int, num_sms: int, ahead: bool = False) -> int:
    """3 consumer warpgroups (192-row tiles) where their waves × relative tile time beat 128-row tiles, else 2;
    ahead: the config has SCALE_AHEAD 1 (cheaper 192-row tiles, ``_WGS3_AHEAD_TILE_COST``)."""
    waves2 = cdiv(cdiv(m, 128) * cdiv(n, block_n), num_sms)
    waves3 = cdiv(cdiv(m, 192) * cdiv(n, block_n), num_sms)
    return 3 if waves3 * (_WGS3_AHEAD_TILE_COST if ahead else _WGS3_TILE_COST) < waves2 else 2


def wide_for(m: int, n: int, num_sms: int) -> bool:
    """WIDE 128×256 tiles pay where N is a multiple of 256 (no half-empty last tile) and halving the tile count
    costs no wave: 2 × waves(wide tiles) ≤ waves(128×128 tiles), i.e. not when 128×128 tiles fit in one wave."""
    rows = cdiv(m, 128)
    return n % 256 == 0 and 2 * cdiv(rows * (n // 256), num_sms) <= cdiv(rows * (n // 128), num_sms)


@gluon.jit
def _ws_producer(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars,
                 M, N, num_k_blocks, num_programs,
                 BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                 GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    # One warp: wait until a stage is released, then TMA its A and B tiles (ready = tx bytes).
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    it = 0
    for tile_id in range(gl.program_id(0), num_pid_m * num_pid_n, num_programs):
        pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        it = _load_tile(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, pid_m * BLOCK_M, pid_n * BLOCK_N,
                        num_k_blocks, BLOCK_M, BLOCK_K, NUM_STAGES)


@gluon.jit
def _load_tile(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, off_m, off_n, num_k_blocks,
               BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr, NUM_STAGES: gl.constexpr):
    # A arrives as A_PARTS boxes of BLOCK_M // A_PARTS rows (BLOCK_M = 192: three 64-row boxes, as Triton's
    # shapes must be powers of two), each in its own buffer a_bufs[s·A_PARTS + j]
    A_PARTS: gl.constexpr = BLOCK_M // a_desc.block_type.shape[0]
    stage_bytes: gl.constexpr = A_PARTS * a_desc.block_type.nbytes + b_desc.block_type.nbytes
    for kb in range(num_k_blocks):
        s = it % NUM_STAGES
        # empty barriers start "released": the first pass waits on the opposite parity
        mbarrier.wait(empty_bars.index(s), ((it // NUM_STAGES) & 1) ^ 1)
        bar = ready_bars.index(s)
        mbarrier.expect(bar, stage_bytes)
        for j in gl.static_range(A_PARTS):
            tma.async_copy_global_to_shared(a_desc, [off_m + j * (BLOCK_M // A_PARTS), kb * BLOCK_K], bar,
                                            a_bufs.index(s * A_PARTS + j))
        tma.async_copy_global_to_shared(b_desc, [off_n, kb * BLOCK_K], bar, b_bufs.index(s))
        it += 1
    return it


@gluon.jit
def _ws_consumer(a_bufs, b_bufs, ready_bars, empty_bars, c_smem, c_smem1, c_desc, c_ptr, a_scale_ptr, b_scale_ptr,
                 M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk, stride_cm, stride_cn,
                 num_programs,
                 BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr,
                 NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr,
                 ROW0: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr, UNROLL2: gl.constexpr,
                 SERIAL: gl.constexpr, PIPE: gl.constexpr, PIPE0: gl.constexpr, IDLE_SKIP: gl.constexpr,
                 TAIL_N64: gl.constexpr, SCALE_AHEAD: gl.constexpr, FAST_COORDS: gl.constexpr):
    # Rows [ROW0, ROW0 + ROWS) of every BLOCK_M × BLOCK_N tile, WARPS warps (warps_per_cta [WARPS, 1]):
    # cooperative (ROWS = 128, 8 warps: both warpgroups in one partition, one instruction stream) or
    # split (ROWS = 64, 4 warps: each warpgroup its own partition, free to drift from the other, so
    # one's promotion/epilogue overlaps the other's wgmma, as in DeepGEMM's two math warpgroups).
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    it = 0
    if FAST_COORDS:
        inv_width = 1.0 / (GROUP_M * num_pid_n).to(gl.float32)
    for tile_id in range(gl.program_id(0), num_pid_m * num_pid_n, num_programs):
        if FAST_COORDS:
            pid_m, pid_n = _tile_coords_fast(tile_id, num_pid_m, num_pid_n, GROUP_M, inv_width)
        else:
            pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        if BLOCK_N == 256:
            it = _consumer_tile_wide(it, pid_m * BLOCK_M + ROW0, pid_n * BLOCK_N, a_bufs, b_bufs, ready_bars,
                                     empty_bars, c_smem, c_smem1, c_desc, c_ptr, a_scale_ptr, b_scale_ptr, M, N,
                                     num_k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk, stride_cm,
                                     stride_cn, BLOCK_M, NUM_STAGES, TMA_STORE, ROW0, ROWS, WARPS)
        elif IDLE_SKIP and pid_m * BLOCK_M + ROW0 >= M:
            # 192-row tiles: a warpgroup whose 64 rows all lie past M (2 of 3 in M = 4096's last row of tiles) skips
            # its wgmmas and epilogue (they would multiply TMA's zero fill)
            it = _drain(it, num_k_blocks, ready_bars, empty_bars, NUM_STAGES)
        elif TAIL_N64 and pid_n * BLOCK_N + 64 >= N:
            it = _consumer_tile(it, pid_m * BLOCK_M + ROW0, pid_n * BLOCK_N, a_bufs, b_bufs, ready_bars, empty_bars,
                                c_smem, c_desc, c_ptr, a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm,
                                stride_ask, stride_bsn, stride_bsk, stride_cm, stride_cn, BLOCK_M, 64, NUM_STAGES,
                                False, ROW0, ROWS, WARPS, UNROLL2, SERIAL, PIPE, PIPE0, SCALE_AHEAD)
        else:
            it = _consumer_tile(it, pid_m * BLOCK_M + ROW0, pid_n * BLOCK_N, a_bufs, b_bufs, ready_bars, empty_bars,
                                c_smem, c_desc, c_ptr, a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm,
                                stride_ask, stride_bsn, stride_bsk, stride_cm, stride_cn, BLOCK_M, BLOCK_N, NUM_STAGES,
                                TMA_STORE, ROW0, ROWS, WARPS, UNROLL2, SERIAL, PIPE, PIPE0, SCALE_AHEAD)
    if TMA_STORE:
        tma.store_wait(0)


@gluon.jit
def _consumer_tile(it, off_m, off_n, a_bufs, b_bufs, ready_bars, empty_bars, c_smem, c_desc, c_ptr, a_scale_ptr,
                   b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk, stride_cm,
                   stride_cn, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr,
                   TMA_STORE: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr,
                   UNROLL2: gl.constexpr, SERIAL: gl.constexpr, PIPE: gl.constexpr, PIPE0: gl.constexpr,
                   SCALE_AHEAD: gl.constexpr):
    # rows [off_m, off_m + ROWS) × columns [off_n, off_n + BLOCK_N) of out, all K blocks
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, BLOCK_N, 32])
    row_layout: gl.constexpr = gl.SliceLayout(1, mma_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, mma_layout)
    zero = gl.zeros([ROWS, BLOCK_N], gl.float32, mma_layout)
    rm = off_m + gl.arange(0, ROWS, layout=row_layout)
    m_ok = rm < M
    sa_ptrs = a_scale_ptr + rm * stride_asm
    sb_ptr = b_scale_ptr + (off_n // 128) * stride_bsn

    acc, it = _tile_k_loop(it, num_k_blocks, zero, gl.zeros([ROWS], gl.float32, row_layout), a_bufs, b_bufs,
                           ready_bars, empty_bars, sa_ptrs, m_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS, BLOCK_M,
                           NUM_STAGES, UNROLL2, PIPE, SERIAL, PIPE0, SCALE_AHEAD)
    _store_tile(acc, c_smem, c_desc, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, ROWS, BLOCK_N,
                TMA_STORE, row_layout, col_layout)
    return it


@gluon.jit
def _consumer_tile_wide(it, off_m, off_n, a_bufs, b_bufs, ready_bars, empty_bars, c_smem, c_smem1, c_desc, c_ptr,
                        a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk,
                        stride_cm, stride_cn, BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr,
                        TMA_STORE: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr):
    # WIDE (BLOCK_N = 256): rows [off_m, off_m + ROWS) × columns [off_n, off_n + 256) as two 128-column halves, each
    # with its own b_scale block row (the second one absent past N: N = 2112's last tile) and its own epilogue store
    # (c_smem, c_smem1: two [ROWS, 128] buffers with ≤ 3 stages, else one reused once the first store has read it)
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, 128, 32])
    row_layout: gl.constexpr = gl.SliceLayout(1, mma_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, mma_layout)
    zero = gl.zeros([ROWS, 128], gl.float32, mma_layout)
    rm = off_m + gl.arange(0, ROWS, layout=row_layout)
    m_ok = rm < M
    acc0, acc1, it = _k_loop_wide(it, num_k_blocks, zero, a_bufs, b_bufs, ready_bars, empty_bars,
                                  a_scale_ptr + rm * stride_asm, m_ok, b_scale_ptr + (off_n // 128) * stride_bsn,
                                  off_n + 128 < N, stride_ask, stride_bsn, stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES)
    _store_tile(acc0, c_smem, c_desc, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, ROWS,
                128, TMA_STORE, row_layout, col_layout)
    _store_tile(acc1, c_smem1, c_desc, c_ptr, off_m, off_n + 128, M, N, stride_cm, stride_cn,
                ROWS, 128, TMA_STORE, row_layout, col_layout)
    return it


@gluon.jit
def _fp8_gemm_ws_kernel(
    a_desc, b_desc, c_desc, c_ptr, a_scale_ptr, b_scale_ptr,
    M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk, stride_cm, stride_cn,
    num_programs,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
    NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr, PRODUCER_REGS: gl.constexpr, SPLIT: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, UNROLL2: gl.constexpr, WGS: gl.constexpr, PIPE: gl.constexpr,
    PIPE0: gl.constexpr, IDLE_SKIP: gl.constexpr, TAIL_N64: gl.constexpr, SCALE_AHEAD: gl.constexpr,
    FAST_COORDS: gl.constexpr,
    num_warps: gl.constexpr,
):
    # a_desc: TMA over a [M, K] e4m3 (K contiguous), box [BLOCK_M, BLOCK_K] (WGS = 3: [64, BLOCK_K]), 128-byte swizzle
    # b_desc: TMA over b [N, K] e4m3 (K contiguous), box [BLOCK_N, BLOCK_K]
    # c_desc: TMA_STORE: TMA over out [M, N], box [BLOCK_M, BLOCK_N] (SPLIT: [BLOCK_M // 2, BLOCK_N], one
    #         store per warpgroup); c_ptr/stride_c*: masked-store path
    # a_scale: [M, KB] fp32, strides (stride_asm, stride_ask); b_scale: [NB, KB] fp32 (stride_bsn, stride_bsk)
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [NUM_STAGES * (BLOCK_M // a_desc.block_type.shape[0])]
                                       + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES] + b_desc.block_type.shape, b_desc.layout)
    ready_bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty_bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready_bars.index(i), count=1)
        # released once per consumer partition
        mbarrier.init(empty_bars.index(i), count=WGS if SPLIT else 1)
    # WIDE tiles (BLOCK_N = 256): two [64, 128] epilogue buffers per warpgroup with ≤ 3 stages (3 × 48 KB + 64 KB),
    # one with 4 (4 × 48 KB + 32 KB ≤ 227 KB)
    C_BUFS: gl.constexpr = 2 if BLOCK_N == 256 and NUM_STAGES <= 3 else 1
    if TMA_STORE:
        c_smem = gl.allocate_shared_memory(c_desc.dtype, [(WGS if SPLIT else 1) * C_BUFS] + c_desc.block_type.shape,
                                           c_desc.layout)
    else:
        c_smem = a_bufs  # unused placeholder (same partition signature either way)

    if WGS == 3:
        # BLOCK_M = 192: three 64-row consumer warpgroups (default partition + workers 0, 1; one product set
        # each, SERIAL), worker 2 = TMA warp
        gl.warp_specialize([
            (_ws_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 0, C_BUFS, 0, TMA_STORE),
                            _c_buf(c_smem, 0, C_BUFS, 1, TMA_STORE), c_desc, c_ptr,
                            a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn,
                            stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_M, BLOCK_N, GROUP_M, NUM_STAGES,
                            TMA_STORE, 0, 64, 4, UNROLL2, True, PIPE, PIPE0, IDLE_SKIP, TAIL_N64, SCALE_AHEAD, FAST_COORDS)),
            (_ws_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 1, C_BUFS, 0, TMA_STORE),
                            _c_buf(c_smem, 1, C_BUFS, 1, TMA_STORE), c_desc, c_ptr,
                            a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn,
                            stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_M, BLOCK_N, GROUP_M, NUM_STAGES,
                            TMA_STORE, 64, 64, 4, UNROLL2, True, PIPE, PIPE0, IDLE_SKIP, TAIL_N64, SCALE_AHEAD, FAST_COORDS)),
            (_ws_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 2, C_BUFS, 0, TMA_STORE),
                            _c_buf(c_smem, 2, C_BUFS, 1, TMA_STORE), c_desc, c_ptr,
                            a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn,
                            stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_M, BLOCK_N, GROUP_M, NUM_STAGES,
                            TMA_STORE, 128, 64, 4, UNROLL2, True, PIPE, PIPE0, IDLE_SKIP, TAIL_N64, SCALE_AHEAD, FAST_COORDS)),
            (_ws_producer, (a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, M, N, num_k_blocks,
                            num_programs, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
        ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])
    elif SPLIT:
        # default partition (num_warps = 4) = warpgroup 0, worker 0 = warpgroup 1, worker 1 = TMA warp
        gl.warp_specialize([
            (_ws_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 0, C_BUFS, 0, TMA_STORE),
                            _c_buf(c_smem, 0, C_BUFS, 1, TMA_STORE), c_desc, c_ptr,
                            a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn,
                            stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_M, BLOCK_N, GROUP_M, NUM_STAGES,
                            TMA_STORE, 0, BLOCK_M // 2, 4, UNROLL2, False, PIPE, PIPE0, False, False, SCALE_AHEAD, FAST_COORDS)),
            (_ws_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 1, C_BUFS, 0, TMA_STORE),
                            _c_buf(c_smem, 1, C_BUFS, 1, TMA_STORE), c_desc, c_ptr,
                            a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn,
                            stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_M, BLOCK_N, GROUP_M, NUM_STAGES,
                            TMA_STORE, BLOCK_M // 2, BLOCK_M // 2, 4, UNROLL2, False, PIPE, PIPE0, False, False, SCALE_AHEAD, FAST_COORDS)),
            (_ws_producer, (a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, M, N, num_k_blocks,
                            num_programs, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
    else:
        # default partition (num_warps = 8) = both warpgroups, worker = TMA warp
        gl.warp_specialize([
            (_ws_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 0, C_BUFS, 0, TMA_STORE),
                            _c_buf(c_smem, 0, C_BUFS, 1, TMA_STORE), c_desc, c_ptr,
                            a_scale_ptr, b_scale_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bsn,
                            stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_M, BLOCK_N, GROUP_M, NUM_STAGES,
                            TMA_STORE, 0, BLOCK_M, 8, UNROLL2, False, PIPE, PIPE0, False, False, SCALE_AHEAD, FAST_COORDS)),
            (_ws_producer, (a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, M, N, num_k_blocks,
                            num_programs, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
        ], [1], [PRODUCER_REGS])


@gluon.jit
def _c_buf(c_smem, i: gl.constexpr, C_BUFS: gl.constexpr, h: gl.constexpr, TMA_STORE: gl.constexpr):
    # consumer partition i's epilogue buffer for column half h (WIDE tiles; one buffer for both halves if C_BUFS = 1)
    if TMA_STORE:
        return c_smem.index(i * C_BUFS + h % C_BUFS)
    else:
        return c_smem


_num_sms = sm_count_at  # SMs of a CUDA device index (cached once per index in _host)


def _smem_layout(block_shape: list[int], dtype) -> gl.NVMMASharedLayout:
    # one cached (immutable) layout per (shape, dtype): building it cost ~8 µs of host time per descriptor
    return nvmma_layout(block_shape, dtype)


_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}
_NUM_WARPS = 8  # cooperative consumer partition: two warpgroups (SPLIT: 4, one per partition)
# 65536 registers over 12 warps (8 consumer + the producer's warpgroup): 168 at entry; setmaxnreg
# then moves the producer down to PRODUCER_REGS and the consumers up (240 with 40 for the producer).
_MAXNREG = 168
# WGS = 3 (BLOCK_M = 192): 16 warps at entry → 128 registers; the producer's warpgroup drops to 24 and the three
# consumer warpgroups rise to 160 (3·128·160 + 128·24 = 64512 ≤ 65536): room for the accumulator and one product
_WGS3_REGS = (128, 160, 24)


def _capability_major(device_index: int) -> int:
    return capability_at(device_index)[0]


def gluon_ws_supported(device: torch.device) -> bool:
    """True where the Gluon kernel runs: a CUDA Hopper GPU (sm_90; never the CPU interpreter)."""
    if device.type != "cuda":
        return False
    return _capability_major(device.index if device.index is not None else torch.cuda.current_device()) == 9


def _check_cuda_sm90(t: torch.Tensor, fn: str = "fp8_gemm_nt_ws", cpu_path: str = "fp8_gemm_nt") -> None:
    # fn: the public launcher the caller is (its name in the message; fp8_gemm_ws_sk passes fp8_gemm_nt_sk); cpu_path:
    # what runs under the interpreter instead (the grouped launchers name grouped_gemm's tl kernels)
    if t.device.type != "cuda":
        raise ValueError(
            f"a is on {t.device}: {fn} is a Gluon kernel that runs only on CUDA (sm_90 Hopper); "
            f"Gluon has no interpreter path — use {cpu_path} (interpreter) or the reference on CPU"
        )
    major = cuda_capability(t.device)[0]
    if major != 9:
        raise ValueError(f"{fn} needs a Hopper GPU (compute capability 9.x), got {major}.x")


def fp8_gemm_nt_ws(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    config: dict | None = None,
) -> torch.Tensor:
    """out = (a ⊙ a_scale) @ (b ⊙ b_scale).T, fp32 accumulation promoted once per 128-wide K block.

    Warp-specialized Gluon kernel (TMA producer warp + two consumer warpgroups); same operands,
    result and errors as ``fp8_gemm_nt``, for CUDA Hopper GPUs only.
    a: [M, K] float8_e4m3fn, row-major (stride(1) == 1, 16-byte aligned rows; K % 16 == 0).
    a_scale: [M, ceil(K/128)] fp32, one scale per token per 128 channels (a ≈ a_q · a_scale);
        any strides, MN-major (stride(0) == 1, as written by ``per_token_group_quant_fp8``) is fastest.
    b: [N, K] float8_e4m3fn, K-contiguous ("NT": the checkpoint's weight as stored).
    b_scale: [ceil(N/128), ceil(K/128)] fp32, the checkpoint's ``weight_scale_inv`` (ceil-sized blocks).
    out: optional [M, N] tensor of out_dtype to write into (any strides whose elements do not share memory: an
        expand()-ed view raises ValueError); else allocated. It must not alias the inputs (not checked: a destination
        overlapping an input may give wrong results).
    out_dtype: bfloat16 (default), float16 or float32. M ≥ 1 any; N and K tails are handled.
    config: optional launch-config override (keys as in ``ws_config``: BLOCK_N 64, 128 or 256 (WIDE 128×256
        tiles: SPLIT, WGS 2, NUM_STAGES ≤ 4), NUM_STAGES, GROUP_M, TMA_STORE, PRODUCER_REGS, SPLIT, CONSUMER_REGS, UNROLL2, WGS = 2 or 3 consumer
        warpgroups, 3 = 192-row tiles with one product set each, None = chosen per problem, PIPE = two wgmmas in
        flight per warpgroup on 128-row tiles, PIPE0 = with PIPE, from K block 0 on, IDLE_SKIP = 192-row tiles'
        warpgroups with no rows left skip their wgmmas, TAIL_N64 = their ≤ 64-column last tiles run n64 wgmmas,
        SCALE_AHEAD = 0 / 1: scale loads one K block (pair) ahead (with WGS None: on 192-row tiles only, and
        wgs_for then rates those cheaper), FAST_COORDS: the consumers' tile coordinates
        without integer divisions), for tests and tuning.
    Returns out [M, N].
    Raises TypeError on non-tensors / wrong dtypes, ValueError on shape or layout mismatch
    (transposed or unaligned a/b, wrong scale shapes, K % 16 != 0) and on a non-CUDA or
    non-Hopper device (Gluon cannot run under the interpreter; there is no silent fallback).
    Semantics: DeepGEMM fp8_gemm_nt (1×128 activation groups, 128×128 weight blocks).
    """
    m, n, k = check_nt_inputs(a, a_scale, b, b_scale, out_dtype, out)
    _check_cuda_sm90(a)
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=a.device)
    return launch_fp8_gemm_ws(a, a_scale, b, b_scale, out, config)


def launch_fp8_gemm_ws(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
                       out: torch.Tensor, config: dict | None = None) -> torch.Tensor:
    """Launch the warp-specialized kernel on operands already validated by ``fp8_gemm_nt_ws`` or
    ``fp8_gemm_nt`` (which dispatches here for its ``GLUON`` table entries); returns out.

    config: overrides of ``ws_config`` (raises ValueError on an unsupported BLOCK_M/BLOCK_N).
    """
    m, k = a.shape
    n = b.shape[0]
    kb = cdiv(k, BLOCK_K)
    cfg = dict(ws_config(m, n, k))
    if config is not None:
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict of ws_config overrides, got {type(config).__name__}")
        unknown = set(config) - set(cfg)
        if unknown:
            raise ValueError(f"unknown fp8_gemm_nt_ws config keys {sorted(unknown)}; known: {sorted(cfg)}")
        cfg.update(config)
    check_ws_config(cfg)
    bm, bn, wgs = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["WGS"]
    dev = a.device.index if a.device.index is not None else torch.cuda.current_device()
    if wgs is None:  # per problem; 192-row tiles take at most 4 stages (4 × 40 KB + 48 KB of epilogue ≤ 227 KB)
        wgs = wgs_for(m, n, bn, _num_sms(dev), bool(cfg["SCALE_AHEAD"])) if cfg["SPLIT"] and bn == 128 else 2
        if wgs == 3:
            cfg["NUM_STAGES"] = min(int(cfg["NUM_STAGES"]), 4)
    # 192-row and WIDE tiles: registers for one product set only (serial loops)
    pipe = bool(cfg["PIPE"]) and wgs == 2 and bn != 256
    pipe0 = bool(cfg["PIPE0"]) and pipe
    regs = (_MAXNREG, cfg["CONSUMER_REGS"], cfg["PRODUCER_REGS"]) if wgs == 2 else _WGS3_REGS
    # SCALE_AHEAD: the PIPE or the 192-row serial loop; with WGS None only on the 192-row tiles it makes cheaper
    # (128-row PIPE tiles measured 1.03 slower with it at K ≤ 7168, s19 W1): wgs_for's 128-row picks run without it
    ahead = int(cfg["SCALE_AHEAD"]) if wgs == 3 or (pipe and cfg["WGS"] is not None) else 0
    bm = 64 * wgs if cfg["SPLIT"] else bm
    gl_fp8 = gl.float8e4nv
    a_rows = 64 if wgs == 3 else bm  # 192-row tiles: three 64-row TMA boxes
    a_desc = TensorDescriptor(a, [m, k], [a.stride(0), 1], [a_rows, BLOCK_K], _smem_layout([a_rows, BLOCK_K], gl_fp8))
    b_desc = TensorDescriptor(b, [n, k], [b.stride(0), 1], [bn, BLOCK_K], _smem_layout([bn, BLOCK_K], gl_fp8))
    split = bool(cfg["SPLIT"])
    tma_store = bool(cfg["TMA_STORE"]) and _tma_storable(out)
    c_desc = None
    if tma_store:
        c_rows = 64 if split else bm  # SPLIT: each warpgroup stores its own 64 rows
        c_cols = min(bn, 128)  # WIDE tiles: one store per 128-column half
        c_desc = TensorDescriptor(out, [m, n], [out.stride(0), 1], [c_rows, c_cols],
                                  _smem_layout([c_rows, c_cols], _GL_DTYPES[out.dtype]))
    tiles = cdiv(m, bm) * cdiv(n, bn)
    grid_n = min(_num_sms(dev), tiles)
    _fp8_gemm_ws_kernel[(grid_n,)](
        a_desc, b_desc, c_desc, out, a_scale, b_scale,
        m, n, kb, a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1),
        out.stride(0), out.stride(1), grid_n,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=BLOCK_K, GROUP_M=int(cfg["GROUP_M"]),
        NUM_STAGES=int(cfg["NUM_STAGES"]), TMA_STORE=tma_store, PRODUCER_REGS=int(regs[2]),
        SPLIT=split, CONSUMER_REGS=int(regs[1]), UNROLL2=bool(cfg["UNROLL2"]), WGS=wgs, PIPE=pipe,
        PIPE0=pipe0, IDLE_SKIP=bool(cfg["IDLE_SKIP"]) and wgs == 3,
        TAIL_N64=bool(cfg["TAIL_N64"]) and wgs == 3 and n % 128 != 0 and n % 128 <= 64,
        SCALE_AHEAD=ahead, FAST_COORDS=bool(cfg["FAST_COORDS"]),
        num_warps=4 if split else _NUM_WARPS,
        maxnreg=regs[0],
    )
    return out
