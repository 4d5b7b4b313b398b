"""Paged absorbed-MLA decode (FlashMLA ``flash_mla_with_kvcache`` semantics) in Triton.

out[b, i, h] = Σ_j softmax_j(q[b, i, h]·K[b, j]·scale) · K[b, j, :head_dim_v],  j ≤ s_k − s_q + i

Design:

* **rows = (query position, head) pairs.** All s_q·h_q query rows of a sequence read the same
  latent cache, so they are one M dimension (as in FlashMLA), cut into head tiles of BLOCK_H
  rows (16/32/64; 64 = one wgmma M per warpgroup for the compute-bound cases).
* **split-KV over a fixed grid.** ``get_mla_metadata`` walks the batch's total work
  (Σ ⌈s_k/BLOCK_N⌉ tiles + a fixed per-sequence overhead) and cuts it into ``num_parts`` equal
  pieces (config MIN_SPAN sets a floor), one program per piece and head tile — a long row is shared
  by many programs, many short rows fill one. It is one single-program kernel on the device (no host sync), so it
  is computed once per decode step, reused by every layer, and valid under CUDA-graph replay.
  Program p's partial for sequence b lands in slot p + b of the workspace (unique: along the
  schedule p + b strictly increases). A sequence covered by one program is written straight to
  ``out``; others go through the combine kernel (lse-weighted sum in fp32).
* **cache tiles.** V is the first head_dim_v columns of the same K rows, so each tile of BLOCK_N
  cache rows is loaded once (as two halves of head_dim_v plus the rope tail) and used by both
  dots. With page_size ≥ BLOCK_N and the 576/512 layout the tile arrives through TMA tensor
  descriptors; otherwise through pointer gathers (page_size 1..BLOCK_N: per-token block ids).
  Offsets are int64. Tiles that are fully visible run unmasked in a pipelined loop; the last
  tiles (cache tail, causal diagonal) are peeled and masked: rows beyond cache_seqlens are zeroed
  *before* the dots, so NaN in unused slots never reaches out.
* dots in bf16 with fp32 accumulation on the GPU; under the Triton interpreter (which cannot
  multiply bf16) operands are upcast to fp32.
* on Hopper GPUs the split kernel of the ``_TUNED_WS`` classes is the warp-specialized Gluon one
  (``mla_decode_ws``: TMA producer warp, keys on the wgmma M side, the query tile read by the tensor
  core from shared memory); schedule, partials and combine are shared. Elsewhere, and for layouts it
  does not take (page_size < 64, d_qk ≠ 576), the tl kernel runs the same config. Config WSM (more than
  32 rows at batch ≥ 64) runs ``mla_decode_wsm`` instead: queries on the wgmma M side, seesaw schedule.

Tuned configs (``_TUNED``) are keyed by rows = s_q·h_q class, measured on the H200 with
benchmarks/bench_mla.py; small batches of more than 64 rows (batch·rows ≤ 1024) use ``_SMALL_TABLE``: the
split kernel of mla_decode_small.py (no schedule kernel; measured with benchmarks/bench_mla_small.py as split
+ combine CUDA-graph latency).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import (check_bool, check_index_range, check_int, check_real, check_runnable_device,
                                       check_tensor, interpreter_active, is_pow2)
from tritonseek.kernels.mla_decode_tiles import (
    _mla_combine_kernel,
    _mla_schedule_kernel,
    _mla_schedule_packed_kernel,
    cache_tiles,
)
from tritonseek.kernels.mla_decode_small import _attend_span, _store_rows, check_mla_config
from tritonseek.kernels.reference.mla import mla_schedule_packed_ref, mla_schedule_ref

# Fixed per-sequence cost (in tiles) the scheduler charges for a sequence's prologue/epilogue
# and its combine (FlashMLA charges 5 blocks of 64).
_FIXED_OVERHEAD_TILES = 5
# Smallest span (cost units) a program is given, config key MIN_SPAN (default 1: as many splits as
# the grid allows). A split writes and the combine re-reads a [rows, 512] fp32 partial (128 KB at 64
# rows, the traffic of ~3.6 cache tiles), so a floor (FlashMLA uses 2 overheads = 10) cuts a short
# batch into few long spans; but it lengthens the critical path by the tiles it merges (~5 µs each
# for 64-row tiles on the H200: 62 tiles per SM in 329 µs at b 128, h 64), so it is not the default
# until measured.
_MIN_SPAN_DEFAULT = 1

# rows class (s_q·h_q rounded up to 16/32/64; 128 = more than 64 rows, several head tiles) → config.
# BLOCK_H: rows per tile; BLOCK_N: cache rows per step; PARTS_PER_SM: programs per SM per head
# tile; USE_TMA: descriptor loads when the layout allows. Filled from the H200 sweep.
_TUNED: dict[int, dict] = {
    # H200 sweeps (benchmarks/bench_mla.py --sweep, b 128, s_k 4096, page 64). Run 1 (ced8f6e): TMA beat
    # pointer gathers 1.6-2×. Run 2 (2648088): for ≤ 16 rows the mma.sync tile with 32-row cache
    # steps × 3 stages × 2 parts per SM stayed best (198 µs); 32 rows are faster padded to one 64-row
    # wgmma tile (317 µs vs 324-563 for 16/32-row tiles); 64-row tiles: 64-row steps × 2 stages
    # (333 µs; 32-row steps 451, 2 parts/SM 373). warp_specialize compiled to the same binary.
    # Run 3 (8aa2ed4): 32 rows on a 32-row mma.sync tile with 8 warps and 64-row steps beat the padded
    # wgmma tile (265 vs 315 µs); 8 warps did not help 16 rows (210-335 vs 200 µs).
    # Run 4 (e1423bb): a TRANSPOSED loop (keys as the dots' M side, 16/32 rows) and a LOOKAHEAD loop
    # (scores one tile ahead of p·v, 64/128 rows) were slower than these (213 vs 199, 302 vs 268,
    # 420 vs 332, 791 vs 604 µs) and were removed (their code is in git history at 8014586).
    # Run 5 (75f123d): 5 stages give the mma.sync tiles 2 TMA buffers (the block-table load takes a
    # stage of its own): 16 rows 176 vs 199 µs, 32 rows 241 vs 270; 16-byte pointer gathers 198;
    # 128 programs (one per sequence) 214 / 262 / 337 / 620 µs: no gain.
    # Session 3 (W1 c037fca, W2 fecee5a; bench_mla_small.py, b128 s_k 4096, µs fixed / varlen): nothing beat
    # these. 16 rows 175-177 / 189 (split kernel alone ~169; 256 programs with per-sequence overhead 0, one
    # segment per program on fixed lengths: 171.8 / 207.4); 32 rows 238-246 / 254 (64-row wgmma tile 314-337,
    # keys-as-M wgmma 354-529, 32-row tile with 32-key steps 365-372, two register-capped 8-warp programs per
    # SM 577-604, 128 programs with overhead 0: 231-236 / 278-285). ptxas/SASS: the hot loops are spill-free;
    # the 32-row step is bound by shared memory: each warp re-reads the 32×576 q tile (ldmatrix) per step.
    # OVERHEAD 9 (per-sequence cost in 32-key tiles; 5 elsewhere): session 3 W2b (2bf0af8), b128 s_k 4096 h16
    # s_q 1: varlen 187.1 -> 180.5 µs, fixed 172.9 -> 172.7 (one run, one varlen draw); h16 s_q 2 unchanged
    # (239.6 / 239.9); on the 32-row tile it made varlen slower (250 -> 264), so 5 stays there.
    16: dict(BLOCK_H=16, BLOCK_N=32, num_warps=4, num_stages=5, PARTS_PER_SM=2, USE_TMA=True, OVERHEAD=9),
    32: dict(BLOCK_H=32, BLOCK_N=64, num_warps=8, num_stages=5, PARTS_PER_SM=1, USE_TMA=True),
    64: dict(BLOCK_H=64, BLOCK_N=64, num_warps=8, num_stages=2, PARTS_PER_SM=1, USE_TMA=True),
    128: dict(BLOCK_H=64, BLOCK_N=64, num_warps=8, num_stages=2, PARTS_PER_SM=1, USE_TMA=True),
}


def _rows_class(rows: int) -> int:
    return 16 if rows <= 16 else 32 if rows <= 32 else 64 if rows <= 64 else 128


# Small batches of more than 64 rows, session 3 (before the small-batch path; benchmarks/bench_mla_small.py,
# split + combine as one CUDA-graph replay, 128 heads, page 64; W1 at c037fca, W2 at fecee5a): a table keyed
# by batch·rows of the scheduled tl kernel, 16-row tiles (BLOCK_N 32, 4 warps, 5 stages, 2 parts per SM) up to
# 256 units and 32-row tiles (BLOCK_N 64, 8 warps, 5 stages) up to 1024, one row per combine program. µs at
# s_k 1024 / 4096, big-batch table → that table: s_q 1: b1 39.1/52.0 → 21.2/31.0, b2 40.6/52.8 → 24.7/38.1,
# b4 42.6/59.2 → 29.2/50.3, b8 47.1/76.9 → 40.3/77.4; s_q 2: b1 51.6/63.3 → 25.1/37.5, b2 52.9/67.5 →
# 30.9/49.5, b4 59.9/86.7 → 42.0/79.4; s_q 2 b8 stays on _TUNED (74.6/111.2 vs 57.0/134.8 on 32 rows).
# Also measured and slower then: a floor on the span (MIN_SPAN 10: b1 66 µs), programmatic dependent launch
# of the combine (b1 48 µs), merging the partials in the split kernel's last program (b1 50 µs).


# Hopper GPUs: rows classes whose split kernel is the warp-specialized Gluon one (mla_decode_ws), where the
# H200 measured it faster than _TUNED's tl config (benchmarks/bench_mla.py --gluon). The entries are also
# valid tl configs (GLUON is ignored where Gluon cannot run, e.g. a page_size below 64).
# H200, g1mla W2 (Gluon code at 0a330c5), b128 s_k 4096 page 64 fixed, split + combine graph replay, µs
# tl → Gluon: 16 rows 174.2 → 162.5 (DEFER_L 162.6; PREFETCH 2: 178.4); h16 s_q2 242.1 → 180.9 (DEFER_L 178.8,
# two 16-row warpgroups 184.9, PREFETCH 2: 192.8); h32 s_q1 238.0 → 180.1 (DEFER_L 178.6); h64 s_q1 329.2 →
# 251.4 (two 32-row warpgroups; DEFER_L 235.3, one 32-row warpgroup × 2 head tiles 296.1); h128 s_q1 584.8 →
# 459.7 (one warpgroup 562.8). bench_mla rows in benchmarks/results/h200.jsonl.
# Final run (55ea38b, bench_mla): one program per sequence (PARTS_PER_SM 128/132, OVERHEAD 0) beats this table
# on FIXED lengths (16 rows 148.6 vs 160.1 µs, 32 rows 160-162 vs 176: no combine, one segment per program) but
# loses on varlen (178-207 vs 167-189), so the table keeps the cost-balanced split; a length-aware schedule
# (cuts snapped to sequence ends) is the open lead for the s_k 4096 32-row cases.
_TUNED_WS: dict[int, dict] = {
    16: dict(BLOCK_H=16, BLOCK_N=64, num_warps=4, num_stages=3, PARTS_PER_SM=1, USE_TMA=True, GLUON=True,
             DEFER_L=True),
    32: dict(BLOCK_H=32, BLOCK_N=64, num_warps=8, num_stages=5, PARTS_PER_SM=1, USE_TMA=True, GLUON=True,
             DEFER_L=True),
    64: dict(BLOCK_H=64, BLOCK_N=64, num_warps=8, num_stages=2, PARTS_PER_SM=1, USE_TMA=True, GLUON=True,
             DEFER_L=True, WS_WGS=2),
    128: dict(BLOCK_H=64, BLOCK_N=64, num_warps=8, num_stages=2, PARTS_PER_SM=1, USE_TMA=True, GLUON=True,
              DEFER_L=True, WS_WGS=2),
}


# Small batches of more than 64 rows with batch·rows ≤ 1024 (128 heads: b ≤ 8 at s_q 1, ≤ 4 at s_q 2, ≤ 2
# at s_q 4): the small-batch path (kernels/mla_decode_small.py: no schedule kernel, each sequence cut evenly
# on the device) from [(largest batch·rows, config)], the first entry whose bound ≥ batch·rows wins, with
# NUM_SPLITS = _SMALL_PROGRAMS / (head tiles · batch).
# H200 (session 14, bench_mla_small.py, split + combine graph replay, µs at s_k 1024 / 4096; the launch floor
# of that timing is 7.8-9.8 µs for a graph of 2 empty kernels). W3 (0237b8a), session-3 table → 16-row tiles
# → 32-row tiles: b1 s_q1 16.8/26.4 → 15.8/21.9 → 17.2/23.1; b2 21.9/34.7 → 17.4/31.9 → 19.1/29.7; b4
# 26.3/44.1 → 22.4/48.9 → 22.5/41.4; b8 34.7/71.5 → 30.6/97.6 → 27.9/77.0; s_q2 b1 20.4/33.1 → 19.6/32.5 →
# 19.2/29.7, b2 26.3/44.1 → 22.8/51.3 → 22.2/43.1, b4 36.6/74.3 → 32.6/88.9 → 29.4/71.8; s_q4 b1 28.6/45.6 →
# 24.3/53.0 → 23.9/45.0, b2 36.8/72.7 → 32.8/88.4 → 30.8/69.6 (W2 at df3b218 agrees within ~2 µs). 32-row
# tiles halve the head tiles' cache re-reads (b8 s_k 4096 stays 8% slower than the session-3 table, 20%
# faster at s_k 1024). b1 s_q1 only: the split lets the combine launch after its loop (TRIGGER 1) and the
# combine waits as a dependent (COMBINE_PDL); with mla_absorb_o after it in one graph (as in the decode step)
# that measured 19.6 vs 21.6 / 26.9 vs 27.6 (W3; W2 21.1 vs 21.9 / 28.8 vs 29.1), alone 18.4 vs 15.8 / 21.5
# vs 21.9. On 32-row tiles it was up to 11 µs slower (b2 s_k 1024 30.7 vs 19.1, b1 s_k 4096 46.0 vs 23.1),
# TRIGGER 2 (at the split's entry) 5-10 µs slower everywhere. Also slower: 96/192 programs, MIN_TILES 2,
# BLOCK_N 32, 4 rows per combine program, 256 programs of 32 rows.
_SMALL_BASE = dict(SMALL=True, BLOCK_N=64, num_warps=8, num_stages=2, USE_TMA=True, COMBINE_ROWS=1)
_SMALL_TABLE: list[tuple[int, dict]] = [
    (128, dict(_SMALL_BASE, BLOCK_H=16, TRIGGER=1, COMBINE_PDL=True)),
    (1024, dict(_SMALL_BASE, BLOCK_H=32)),
]
_SMALL_PROGRAMS = 128


# Hopper, batch ≥ _BIG_BATCH_MIN, ≤ 32 rows: the length-aware schedule (packed: one program per sequence when
# the lengths allow it, no combine work; the balanced cut when packing needs a cap > FILL_TOL % over filling,
# i.e. a varied batch) and the query prefetch (QTMA). H200 W2 (d865bab, final, same run), b128 page 64, split +
# combine graph µs, _TUNED_WS table -> this: s_k 4096 fixed 164.3 -> 151.1 (16 rows), 178.1 -> 159.4 (h16 s_q2),
# 178.4 -> 158.3 (h32 s_q1); varlen (balanced + QTMA) 171.2 -> 170.2, 183.0 -> 177.0, 191.9 -> 181.2; s_k 8192
# fixed 298.3 -> 289.1, 318.1 -> 296.5, 318.3 -> 295.0; varlen 303.7 -> 303.2, 353.9 -> 343.5, 328.0 -> 318.9.
# 64 rows (two warpgroups, no QTMA): packed h64 s_q1 s_k 4096 fixed 230.0 -> 213.4. 128 rows: packed within
# ±2% (h64 s_q2 407.8 -> 402.5, h128 s_q1 399.1 -> 394.1, h128 s_q2 765.6 -> 781.0): the table stays.
# COMBINE_PDL (combine as a programmatic dependent) was within ±1.5% everywhere: off. Smaller batches (not
# measured with these) keep the table.
# Session 15 (same defaults, H200 W2 at 172c19d): s_k 4096 fixed 148.8 / 156.7 / 156.9 µs, varlen 165.6 / 174.6 /
# 180.1 (168.5 / 175.9 / 181.0 in a second run); the balanced fallback's OVERHEAD (per-sequence cost, tiles) at
# 0 / 1 / 2 / 4 / 5 / 7: h16 s_q2 varlen 189.4 / 187.5 / 184.0 / 175.0 / 175.9-178.6 / 180.8, h32 s_q1 198.1 / 194.2 /
# 190.1 / 180.0 / 180.1-184.2 / 185.6, h16 s_q1 flat (170.7-173.2): 5 stays (a sequence switch inside a program
# costs the 32-row kernel ~2-3 tiles; fewer charged = programs with more switches finish last).
_BIG_BATCH_MIN = 64
# Session 16 (h5mla): a sequence switch inside a program cost the 32-row kernel ~10 µs (H200 globaltimer probe at
# 228ceaf, b128 s_k 4096 varlen: 4-7 µs of stores from registers, a ~1.5 µs dependent load of the next length, a
# 2 µs first-tile wait); _SWITCH: out and 16-bit partials by TMA stores from the finished query buffer (OTMA,
# PART16), lengths / split counts loaded ahead (SEQPF), block ids one tile ahead (BTPF), and the balanced
# fallback's per-sequence charge OVERHEAD 2 (switches are cheaper now). H200 A/B at 321dfde (GPU clock, 8 calls per
# graph, vs the session-start default): s_k 4096 varlen h32 s_q1 / h16 s_q2 / h16 s_q1 -4.8 / -5.6 / -3.1 us with
# the knobs and -5.0 / -3.9 / -3.6 more with OVERHEAD 2 (169.6 / 165.0 / 161.0 us = 3750 / 3721 / 3923 GB/s); h32
# s_q1 fixed -2.5 (OVERHEAD: no change, packed), s_k 8192 varlen h32 s_q1 -8.4 and -4.5 more; BTPF alone 0.5-1.2 us
# of it. Correct eagerly (gpu tests, b128) and under CUDA-graph replay (W5 bisect at 8980d38; the W3/W4/final-pass
# graph-test "NaN" was that test's own bug: its second lengths gave a sequence keys in NaN-poisoned slots).
# COMBINE_SPIN (the combine waiting per sequence as a dependent of the split) stays off and is never used with
# TMA-stored partials (their async-proxy writes are not ordered by its release).
# NOT the default yet (lead, end of session 16): the fixed graph-replay test (two calls per graph, as the decode
# step's layers make) and OVERHEAD 2 have not run on a GPU, and no device time was left; the final GPU pass
# (980b3d1) verified the default without them. Turn _SWITCH = SWITCH_KNOBS on after test_mla_decode_ws.py -m gpu
# and the 12 memory-bound bench cases pass with it.
SWITCH_KNOBS = dict(BTPF=True, SEQPF=True, OTMA=True, PART16=True, OVERHEAD=2)
_SWITCH: dict = {}
_BIG_BATCH_WS: dict[int, dict] = {
    16: dict(SCHED="packed", FILL_TOL=3, QTMA=True, **_SWITCH),
    32: dict(SCHED="packed", FILL_TOL=3, QTMA=True, **_SWITCH),
    # > 32 rows: mla_decode_wsm's seesaw split kernel (H200 W2 at eca038b, every b128 case with h_q·s_q >= 64
    # faster, e.g. h128 s_q2 s_k 8192 1454 -> 1081 us; 64 rows with the packed schedule: 385 -> 334 us)
    64: dict(SCHED="packed", FILL_TOL=3, WSM=True),
    128: dict(WSM=True),
}


def default_config(seqlen_q: int, num_heads: int, batch: int | None = None, hopper: bool = False) -> dict:
    """The launch config for s_q·h_q query rows (tuned table by rows class; a small batch of more than
    64 rows has its own path and table, keyed by batch·rows; on a Hopper GPU (hopper=True) the
    _TUNED_WS classes run the Gluon kernel)."""
    rows = seqlen_q * num_heads
    if batch is not None and rows > 64:
        for max_units, cfg in _SMALL_TABLE:
            if batch * rows <= max_units:
                head_tiles = triton.cdiv(rows, cfg["BLOCK_H"])
                return dict(cfg, NUM_SPLITS=max(1, _SMALL_PROGRAMS // (head_tiles * batch)))
    cls = _rows_class(rows)
    if hopper and cls in _TUNED_WS:
        cfg = dict(_TUNED_WS[cls])
        if batch is not None and batch >= _BIG_BATCH_MIN:
            cfg.update(_BIG_BATCH_WS.get(cls, {}))
        return cfg
    return dict(_TUNED[cls])


@functools.lru_cache(maxsize=8)
def _is_hopper(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] == 9


def _hopper_device(dev: torch.device) -> bool:
    """A CUDA Hopper device outside the interpreter: where the Gluon split kernel can run."""
    if dev.type != "cuda" or interpreter_active():
        return False
    return _is_hopper(dev.index if dev.index is not None else torch.cuda.current_device())


# Runtime sizes that vary from call to call are not specialized on (one compile per config);
# the cache strides stay specialized so row loads keep their 16-byte alignment facts.
@triton.jit(do_not_specialize=["stride_btb", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads",
                               "seqlen_q", "d_qk", "head_dim_v", "page_shift"])
def _mla_decode_kernel(
    q_ptr, kv_ptr, kn_desc, kr_desc, bt_ptr, seqlens_ptr, sched_ptr, split_ptr,
    out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_qb, stride_qs, stride_qh,
    stride_kvb, stride_kvt, stride_btb,
    stride_ob, stride_os, stride_oh,
    stride_lb, stride_lh,
    batch, max_blocks, num_heads, seqlen_q, d_qk, head_dim_v, sm_scale_log2, page_shift,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV2: tl.constexpr, BLOCK_R: tl.constexpr,
    CAUSAL: tl.constexpr, USE_TMA: tl.constexpr, DOT_FP32: tl.constexpr, NUM_STAGES: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr, EVEN_D: tl.constexpr,
):
    # q        [batch, seqlen_q, num_heads, d_qk]      strides (stride_qb, stride_qs, stride_qh, 1)
    # kv_cache [num_blocks, 2^page_shift, 1, d_qk]     strides (stride_kvb, stride_kvt, -, 1)
    # block_table [batch, max_blocks] int32 (stride_btb, 1); cache_seqlens [batch] int32
    # sched    [num_parts, 4] int32: (batch_begin, tile_begin, batch_end, tile_end), end inclusive batch
    # split    [batch, 2] int32: (first part, number of parts) covering each sequence
    # out      [batch, seqlen_q, num_heads, head_dim_v] (stride_ob, stride_os, stride_oh, 1)
    # lse      [batch, num_heads, seqlen_q] fp32 (stride_lb, stride_lh, 1)
    # opart    [num_parts + batch, rows, 2*BLOCK_DV2] fp32; lpart [num_parts + batch, rows] fp32
    # grid (head tiles, parts): the head tiles of one part are launched next to each other, so they
    # stream the same cache span at the same time and all but the first read it from L2.
    tile_h = tl.program_id(0)
    pid = tl.program_id(1)
    rows_total = seqlen_q * num_heads
    rows = tile_h * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < rows_total
    c = tl.arange(0, BLOCK_DV2)
    rows_out = rows_total
    dvp = 2 * BLOCK_DV2

    b_begin = tl.load(sched_ptr + pid * 4 + 0)
    t_begin = tl.load(sched_ptr + pid * 4 + 1)
    b_end = tl.load(sched_ptr + pid * 4 + 2)
    t_end = tl.load(sched_ptr + pid * 4 + 3)
    for bi in range(0, b_end + 1 - b_begin):
        b = b_begin + bi  # a tensor in both compiled and interpreted modes
        if b < batch:
            seqlen = tl.load(seqlens_ptr + b)
            seqlen = tl.minimum(seqlen, max_blocks << page_shift)  # never read past the block table
            n_tiles = tl.cdiv(seqlen, BLOCK_N)
            k_lo = tl.where(b == b_begin, t_begin, 0)
            k_hi = tl.where(b == b_end, t_end, n_tiles)
            k_hi = tl.minimum(k_hi, n_tiles)
            if k_lo < k_hi:
                o0, o1, lse = _attend_span(
                    q_ptr, kv_ptr, kn_desc, kr_desc, bt_ptr, b, rows, k_lo, k_hi, seqlen,
                    stride_qb, stride_qs, stride_qh, stride_kvb, stride_kvt, stride_btb,
                    num_heads, seqlen_q, d_qk, head_dim_v, sm_scale_log2, page_shift,
                    BLOCK_N, BLOCK_H, BLOCK_DV2, BLOCK_R, CAUSAL, USE_TMA, DOT_FP32, NUM_STAGES, EVEN_D,
                    WARP_SPECIALIZE)
                n_split = tl.load(split_ptr + b * 2 + 1)
                if n_split == 1:
                    _store_rows(out_ptr, lse_ptr, b, rows, o0, o1, lse, stride_ob, stride_os, stride_oh, stride_lb,
                                stride_lh, num_heads, seqlen_q, head_dim_v, BLOCK_DV2, EVEN_D)
                else:
                    slot = (pid + b).to(tl.int64)
                    pb = opart_ptr + (slot * rows_out + rows) * dvp
                    tl.store(pb[:, None] + c[None, :], o0, mask=row_ok[:, None])
                    tl.store(pb[:, None] + (c + BLOCK_DV2)[None, :], o1, mask=row_ok[:, None])
                    tl.store(lpart_ptr + slot * rows_out + rows, lse, mask=row_ok)


@dataclasses.dataclass
class MLAMetadata:
    """Split-KV schedule of one decode step (FlashMLA's tile_scheduler_metadata + num_splits).

    sched: [num_parts, 4] int32 (batch_begin, tile_begin, batch_end, tile_end) per program;
    split: [batch, 2] int32 (first program, number of programs) per sequence; config: the launch
    config the schedule was cut for; max_seqlen_k: the caller's host bound on cache_seqlens (used
    only to validate the block table's width), None when not given on CUDA (never read back from
    the device: that would sync).
    """

    sched: torch.Tensor
    split: torch.Tensor
    num_parts: int
    seqlen_q: int
    num_heads: int
    config: dict
    max_seqlen_k: int | None
    counters: torch.Tensor | None = None  # [2, batch] int32 zeros when the config has COMBINE_SPIN (mla_decode_ws)


@functools.lru_cache(maxsize=8)
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def get_mla_metadata(
    cache_seqlens: torch.Tensor,
    seqlen_q: int,
    num_heads: int,
    num_sm: int | None = None,
    config: dict | None = None,
    max_seqlen_k: int | None = None,
) -> MLAMetadata:
    """Split-KV schedule for one decode step, on the device (no host sync; CUDA-graph safe).

    Cost of sequence b = ⌈cache_seqlens[b]/BLOCK_N⌉ + OVERHEAD (config, default 5) tiles (0 for an
    empty one); the total is cut into spans of max(⌈total/num_parts⌉, MIN_SPAN) for num_parts = PARTS_PER_SM·num_sm /
    ⌈s_q·h_q/BLOCK_H⌉ programs (fixed grid; programs past the total get no span and exit). Config
    SCHED="packed": the length-aware schedule of ``reference.mla.mla_schedule_packed_ref`` instead (a
    sequence that fits one program is not split, only long ones are; knobs SEG_COST, SPLIT_COST,
    MIN_PIECE, MIN_FIT in BLOCK_N tiles; FILL_TOL: fall back to the balanced cut for a varied batch),
    computed on the device in the same way (the fallback decided there too: no host sync).
    cache_seqlens: [batch] int32 on the kernel's device. seqlen_q, num_heads: the query shape the
    schedule serves (checked by ``mla_decode``). num_sm: programs budget (default: the device's SM
    count; 8 under the interpreter). config: launch-config override (tuning); default by rows class,
    batch and device (``default_config``; on Hopper the Gluon kernel for the _TUNED_WS classes).
    max_seqlen_k: optional host int ≥ max(cache_seqlens) that ``mla_decode`` checks against the block
    table's capacity; on CUDA it is never read back from the device (no sync), on CPU it defaults to
    the true maximum. Without it a too-narrow block table is not reported on CUDA; the kernel still
    never reads past it (each row is clamped to max_blocks·page_size keys).
    Returns an ``MLAMetadata``; compute once per step and pass to every layer's ``mla_decode``.
    Raises TypeError/ValueError naming the argument: cache_seqlens not a contiguous 1-D int32 tensor; seqlen_q, num_heads,
    num_sm (≥ 1) or max_seqlen_k (≥ 0) not an int (bools are not) or out of range; config not a dict, or (ValueError
    naming the key, ``mla_decode_small.check_mla_config``) an unknown key, a missing BLOCK_H / BLOCK_N / num_warps /
    num_stages (NUM_SPLITS when SMALL) or a value outside its rule (e.g. BLOCK_H/BLOCK_N 16/32/64, OVERHEAD
    0..4096, SCHED "balanced"/"packed"; with SCHED "packed" MIN_FIT ≥ MIN_PIECE). Default configs are not re-checked.
    Semantics: FlashMLA ``get_mla_metadata``.
    """
    check_tensor("cache_seqlens", cache_seqlens, dtype=torch.int32, ndim=1, contiguous=True)
    seqlen_q, num_heads = check_int("seqlen_q", seqlen_q, 1), check_int("num_heads", num_heads, 1)
    num_sm = None if num_sm is None else check_int("num_sm", num_sm, 1)
    max_seqlen_k = None if max_seqlen_k is None else check_int("max_seqlen_k", max_seqlen_k, 0)
    cfg = check_mla_config(config) if config is not None else default_config(
        seqlen_q, num_heads, cache_seqlens.shape[0], hopper=_hopper_device(cache_seqlens.device))
    dev = cache_seqlens.device
    if num_sm is None:
        num_sm = _num_sms(dev.index if dev.index is not None else torch.cuda.current_device()) if dev.type == "cuda" else 8
    head_tiles = triton.cdiv(seqlen_q * num_heads, cfg["BLOCK_H"])
    num_parts = max(1, int(cfg.get("PARTS_PER_SM", 1) * num_sm) // head_tiles)
    batch = cache_seqlens.shape[0]
    min_span = int(cfg.get("MIN_SPAN", _MIN_SPAN_DEFAULT))
    overhead = int(cfg.get("OVERHEAD", _FIXED_OVERHEAD_TILES))
    sched = torch.empty(num_parts, 4, dtype=torch.int32, device=dev)
    split = torch.empty(batch, 2, dtype=torch.int32, device=dev)
    packed = cfg.get("SCHED", "balanced") == "packed"  # length-aware split (mla_schedule_packed_ref)
    pk = _packed_args(cfg) if packed else None
    if cfg.get("SMALL"):  # mla_decode_small: the split kernel cuts each sequence itself (no schedule)
        num_parts = cfg["NUM_SPLITS"]
        sched = torch.empty(0, 4, dtype=torch.int32, device=dev)
    elif (dev.type == "cuda" or interpreter_active()) and batch > 0:
        # one program, one launch; workspaces: the prefix sums of the balanced cut (end) and the packed
        # walk's per-lane records (ws)
        end = torch.empty(batch, dtype=torch.int64, device=dev)
        block_b = min(128, max(16, triton.next_power_of_2(batch)))
        # every cut position in one pass (each a binary search over the sequences: dependent loads)
        block_p = min(1024, max(16, triton.next_power_of_2(num_parts + 1)))
        if packed:
            ws = torch.empty(2 * batch * _PACKED_CAPS + 3 * batch, dtype=torch.int32, device=dev)
            _mla_schedule_packed_kernel[(1,)](
                cache_seqlens, sched, split, ws, end, batch, num_parts, *pk, overhead, min_span, batch.bit_length(),
                BLOCK_N=cfg["BLOCK_N"], BLOCK_B=block_b, BLOCK_C=_PACKED_CAPS,
                BLOCK_P=block_p, UNROLL=16, num_warps=4,
            )
        else:
            _mla_schedule_kernel[(1,)](
                cache_seqlens, sched, split, end, batch, num_parts, overhead, min_span, batch.bit_length(),
                BLOCK_N=cfg["BLOCK_N"], BLOCK_B=block_b,
                BLOCK_P=block_p, num_warps=4,
            )
    elif dev.type == "cuda" or interpreter_active():
        if batch == 0:
            sched.zero_()
    elif packed:  # plain CPU tensors without the interpreter: the reference walk
        sched, split = mla_schedule_packed_ref(cache_seqlens, num_parts, cfg["BLOCK_N"], *pk, overhead, min_span)
    else:  # plain CPU tensors without the interpreter: the same schedule in torch ops
        sched, split = mla_schedule_ref(cache_seqlens, num_parts, cfg["BLOCK_N"], overhead, min_span)
    lens = cache_seqlens
    if max_seqlen_k is not None:
        max_len = max_seqlen_k
    elif dev.type == "cpu":
        max_len = max(int(lens.max()), 0) if lens.numel() else 0  # no device to sync with
    else:
        max_len = None
    # COMBINE_SPIN: per-sequence counters of the Gluon split kernel's releases (each layer's combine zeroes them)
    # FUSE: per-sequence piece counters of the fused combine (each zeroed again by the program that merges)
    counters = torch.zeros(2, batch, dtype=torch.int32, device=dev) if cfg.get("COMBINE_SPIN") or cfg.get("FUSE") else None
    return MLAMetadata(sched, split, num_parts, seqlen_q, num_heads, cfg, max_len, counters)


# SCHED="packed" (length-aware split, reference.mla.mla_schedule_packed_ref): costs in BLOCK_N tiles of a
# piece (SEG_COST), of a split sequence's piece (SPLIT_COST: partial write + combine), smallest first piece
# (MIN_PIECE) and smallest piece a fitting sequence is split for (MIN_FIT; larger: fewer splits).
# FILL_TOL (percent, < 0: off): use the balanced (even-cut) schedule instead when packing needs a cap more
# than FILL_TOL % over that of a walk that fills every program (a varied batch).
_PACKED_DEFAULT = dict(SEG_COST=1, SPLIT_COST=2, MIN_PIECE=4, MIN_FIT=1 << 20, FILL_TOL=-1)
_PACKED_CAPS = 64  # candidate caps of the packed walk (reference num_candidates)


def _packed_args(cfg: dict) -> tuple[int, int, int, int, int]:
    vals = tuple(int(cfg.get(k, v)) for k, v in _PACKED_DEFAULT.items())  # types/ranges: check_mla_config
    if vals[3] < vals[2]:
        raise ValueError(f"packed schedule needs MIN_FIT ≥ MIN_PIECE; got {dict(zip(_PACKED_DEFAULT, vals))}")
    return vals


def _use_gluon(cfg, q, kv_cache, head_dim_v, block_n, block_h) -> bool:
    """GLUON config entries run the warp-specialized Gluon split kernel (mla_decode_ws) where it applies:
    a CUDA Hopper GPU (never the interpreter), 64-key schedule tiles and the 576/512 page ≥ 64 layout.
    GLUON="force" (mla_decode_ws) raises instead of falling back."""
    want = cfg.get("GLUON", False)
    if not want:
        return False
    if interpreter_active() or q.device.type != "cuda":
        if want == "force":
            from tritonseek.kernels.mla_decode_ws import check_ws_device

            check_ws_device(q)
        return False
    from tritonseek.kernels.mla_decode_ws import check_ws_device, gluon_ws_supported, ws_layout_ok

    ok = (gluon_ws_supported(q.device) and block_n == 64
          and ws_layout_ok(q, kv_cache, head_dim_v, block_h, int(cfg.get("WS_WGS", 1))))
    if want == "force" and not ok:
        check_ws_device(q)
        raise ValueError(f"mla_decode_ws needs d_qk 576, head_dim_v 512, page_size ≥ 64, a contiguous cache, "
                         f"BLOCK_N 64 and 16/32 rows per warpgroup (BLOCK_H / WS_WGS); got q {tuple(q.shape)}, "
                         f"kv_cache {tuple(kv_cache.shape)}, head_dim_v {head_dim_v}, BLOCK_N {block_n}, "
                         f"BLOCK_H {block_h}")
    return ok


def _launches(q, kv_cache, block_table, cache_seqlens, scale, causal, head_dim_v, metadata, out, lse):
    """The two launches of ``mla_decode`` on validated inputs (split kernel, combine kernel) as
    callables, so benchmarks can time each one; workspaces are allocated here."""
    if metadata.config.get("SMALL"):
        from tritonseek.kernels.mla_decode_small import small_launches

        return small_launches(q, kv_cache, block_table, cache_seqlens, scale, causal, head_dim_v, metadata, out, lse)
    dev = q.device
    batch, seqlen_q, num_heads, d_qk = q.shape
    page_size = kv_cache.shape[1]
    cfg = metadata.config
    block_n, block_h = cfg["BLOCK_N"], cfg["BLOCK_H"]
    rows = seqlen_q * num_heads
    use_ws = _use_gluon(cfg, q, kv_cache, head_dim_v, block_n, block_h)
    # the Gluon split reads the cache through its own descriptors
    block_dv2, block_r, even_d, kn_desc, kr_desc = cache_tiles(q, kv_cache, head_dim_v, block_n,
                                                                 cfg.get("USE_TMA", True) and not use_ws)
    n_slots = metadata.num_parts + batch
    # PART16: the partial outputs in q's 16-bit dtype (half the split's partial writes and the combine's reads)
    opart = torch.empty(n_slots, rows, 2 * block_dv2, dtype=q.dtype if cfg.get("PART16") else torch.float32, device=dev)
    lpart = torch.empty(n_slots, rows, dtype=torch.float32, device=dev)
    if use_ws:
        if cfg.get("WSM"):  # > 32 rows: queries on the wgmma M side (mla_decode_wsm)
            from tritonseek.kernels.mla_decode_wsm import launch_split_wsm as launch_split_ws
        else:
            from tritonseek.kernels.mla_decode_ws import launch_split_ws

        def split_launch():
            launch_split_ws(q, kv_cache, block_table, cache_seqlens, scale, causal, metadata, out, lse, opart, lpart)
    grid = (triton.cdiv(rows, block_h), metadata.num_parts)

    split_args = (
        q, kv_cache, kn_desc, kr_desc, block_table, cache_seqlens, metadata.sched, metadata.split,
        out, lse, opart, lpart,
        q.stride(0), q.stride(1), q.stride(2),
        kv_cache.stride(0), kv_cache.stride(1), block_table.stride(0),
        out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0), lse.stride(1),
        batch, block_table.shape[1], num_heads, seqlen_q, d_qk, head_dim_v, scale * 1.4426950408889634,
        page_size.bit_length() - 1)
    split_meta = dict(
        BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_DV2=block_dv2, BLOCK_R=block_r,
        CAUSAL=bool(causal), USE_TMA=kn_desc is not None, DOT_FP32=interpreter_active(), NUM_STAGES=cfg["num_stages"],
        WARP_SPECIALIZE=bool(cfg.get("WARP_SPECIALIZE", False)) and not interpreter_active(),
        EVEN_D=even_d, num_warps=cfg["num_warps"])
    # rows per combine program (config COMBINE_ROWS): fewer rows = more programs for a small batch
    block_rows = int(cfg.get("COMBINE_ROWS", 4 if 2 * block_dv2 >= 512 else 8))
    combine_args = (metadata.split, out, lse, opart, lpart, out.stride(0), out.stride(1), out.stride(2),
                    lse.stride(0), lse.stride(1), num_heads, seqlen_q, head_dim_v)
    combine_grid = (batch, triton.cdiv(rows, block_rows))

    def tl_split_launch():
        _mla_decode_kernel[grid](*split_args, **split_meta)

    # COMBINE_PDL (Gluon split only): the combine is a programmatic dependent of the split kernel, which
    # lets it launch at its start (TRIGGER); its programs wait (griddepcontrol.wait) for the split to finish
    combine_pdl = bool(cfg.get("COMBINE_PDL", False)) and use_ws
    # COMBINE_SPIN (Gluon split, mla_decode_ws.combine_spin): a dependent too, each program waiting for its sequence
    spin = fused = False
    if use_ws:
        from tritonseek.kernels.mla_decode_ws import combine_spin, fuse_combine

        spin = combine_spin(metadata)
        # FUSE: the split kernel merges each split sequence in the program that finishes its last piece
        fused = not cfg.get("WSM") and fuse_combine(metadata, q, out, opart)
    spin_kw = dict(cnt_ptr=metadata.counters, SPIN=True) if spin else {}

    def combine_launch():
        _mla_combine_kernel[combine_grid](*combine_args, BLOCK_ROWS=block_rows, BLOCK_DVP=2 * block_dv2,
                                          NUM_STAGES=3, PDL=combine_pdl, num_warps=4, launch_pdl=combine_pdl or spin,
                                          **spin_kw)

    return (split_launch if use_ws else tl_split_launch), ((lambda: None) if fused else combine_launch)


def mla_decode(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
    head_dim_v: int = 512,
    metadata: MLAMetadata | None = None,
    out: torch.Tensor | None = None,
    *,
    check_ids: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out = softmax(q·Kᵀ·scale, causal bottom-right)·V over the paged latent cache; V = K[..., :head_dim_v].

    q: [batch, seqlen_q, num_heads, d_qk] bf16/fp16, absorbed query (q_nope·W_UK ‖ q_pe), d_qk = 576
    in DeepSeek (any d_qk ≥ head_dim_v works; 576/512 takes the TMA path); last dim contiguous.
    kv_cache: [num_blocks, page_size, 1, d_qk], same dtype, page_size a power of two; latent ‖ rope
    key per token (V is its first head_dim_v columns, never a copy).
    block_table: [batch, max_blocks] int32 block ids; cache_seqlens: [batch] int32 keys per sequence
    (0 allowed). softmax_scale: default d_qk^-0.5. causal: query i sees keys j ≤ s_k − s_q + i.
    metadata: ``get_mla_metadata(cache_seqlens, seqlen_q, num_heads)`` of this step (computed here
    when None). out: optional [batch, seqlen_q, num_heads, head_dim_v] q.dtype buffer.
    Returns out [batch, seqlen_q, num_heads, head_dim_v] q.dtype and lse [batch, num_heads, seqlen_q]
    fp32 (natural log). A query that sees no key (cache_seqlens 0) gets out = 0 and lse = −inf.
    Ids: cache_seqlens[b] must be in 0..max_blocks·page_size and the block ids block_table[b,
    :⌈cache_seqlens[b]/page_size⌉] in 0..num_blocks−1 (entries past them are never read). check_ids (default True)
    checks both with one device→host read (a sync; skipped while a CUDA graph is being captured); with
    check_ids=False (the model's decode step: the engine builds them) nothing is read back and out-of-range ids
    are undefined behaviour (out-of-bounds reads, garbage or a crash). metadata must come from these
    cache_seqlens (not checked).
    Raises TypeError (dtype/type: head_dim_v not an int, softmax_scale not an int/float, causal / check_ids not a
    bool) or ValueError (shape, device, layout incl. a non-contiguous cache_seqlens, a table of ≥ 2^31 keys,
    head_dim_v outside 1..d_qk, non-finite softmax_scale, block_table narrower than metadata.max_seqlen_k needs,
    metadata cut for another shape; with check_ids an id out of range). No host sync on CUDA with check_ids=False.
    Semantics: FlashMLA ``flash_mla_with_kvcache``.
    """
    check_tensor("q", q, dtype=(torch.bfloat16, torch.float16), ndim=4)
    check_runnable_device("q", q)
    dev = q.device
    check_tensor("kv_cache", kv_cache, dtype=q.dtype, ndim=4, device=dev)
    check_tensor("block_table", block_table, dtype=torch.int32, ndim=2, device=dev)
    check_tensor("cache_seqlens", cache_seqlens, dtype=torch.int32, ndim=1, device=dev, contiguous=True)
    batch, seqlen_q, num_heads, d_qk = q.shape
    num_blocks, page_size, kv_heads, d_kv = kv_cache.shape
    if kv_heads != 1 or d_kv != d_qk:
        raise ValueError(f"kv_cache must be [num_blocks, page_size, 1, {d_qk}], got {tuple(kv_cache.shape)}")
    if not is_pow2(page_size):
        raise ValueError(f"kv_cache page_size must be a power of two, got {page_size}")
    if q.stride(-1) != 1 or kv_cache.stride(-1) != 1:
        raise ValueError(f"q and kv_cache need a contiguous last dim, strides {q.stride()} / {kv_cache.stride()}")
    if block_table.shape[0] != batch or cache_seqlens.shape[0] != batch:
        raise ValueError(f"block_table {tuple(block_table.shape)} / cache_seqlens {tuple(cache_seqlens.shape)} "
                         f"do not match batch {batch} of q {tuple(q.shape)}")
    if block_table.stride(-1) != 1:
        raise ValueError(f"block_table needs a contiguous last dim, strides {block_table.stride()}")
    if block_table.shape[1] * page_size >= 2**31:  # key positions are int32 in the kernels
        raise ValueError(f"block_table [{batch}, {block_table.shape[1]}] × page_size {page_size} spans ≥ 2^31 keys per "
                         "sequence; the kernels index keys in int32 (use a narrower block_table)")
    head_dim_v = check_int("head_dim_v", head_dim_v, 1, d_qk)
    check_bool("causal", causal)
    if batch == 0 or seqlen_q == 0 or num_heads == 0:
        raise ValueError(f"q must have non-empty batch/seqlen_q/num_heads, got {tuple(q.shape)}")
    scale = d_qk ** -0.5 if softmax_scale is None else check_real("softmax_scale", softmax_scale)
    if metadata is None:
        metadata = get_mla_metadata(cache_seqlens, seqlen_q, num_heads)
    if not isinstance(metadata, MLAMetadata):
        raise TypeError(f"metadata must come from get_mla_metadata, got {type(metadata).__name__}")
    if (metadata.seqlen_q, metadata.num_heads, metadata.split.shape[0]) != (seqlen_q, num_heads, batch):
        raise ValueError(f"metadata was computed for seqlen_q={metadata.seqlen_q}, num_heads={metadata.num_heads}, "
                         f"batch={metadata.split.shape[0]}; q is {tuple(q.shape)}")
    if metadata.sched.device != dev:
        raise ValueError(f"metadata is on {metadata.sched.device}, q on {dev}")
    capacity = block_table.shape[1] * page_size
    if metadata.max_seqlen_k is not None and metadata.max_seqlen_k > capacity:
        raise ValueError(f"cache_seqlens reaches {metadata.max_seqlen_k} but block_table [{batch}, "
                         f"{block_table.shape[1]}] × page_size {page_size} holds only {capacity} keys")
    if check_bool("check_ids", check_ids):
        check_index_range("cache_seqlens", cache_seqlens, 0, capacity + 1)
        pages = (cache_seqlens.long() + page_size - 1) // page_size
        read = torch.arange(block_table.shape[1], device=dev)[None, :] < pages[:, None]
        check_index_range("block_table", block_table, 0, num_blocks, read=read)
    if out is None:
        out = torch.empty(batch, seqlen_q, num_heads, head_dim_v, dtype=q.dtype, device=dev)
    else:
        check_tensor("out", out, dtype=q.dtype, ndim=4, device=dev)
        if tuple(out.shape) != (batch, seqlen_q, num_heads, head_dim_v) or out.stride(-1) != 1:
            raise ValueError(f"out must be [{batch}, {seqlen_q}, {num_heads}, {head_dim_v}] with a contiguous "
                             f"last dim, got {tuple(out.shape)} strides {out.stride()}")
    lse = torch.empty(batch, num_heads, seqlen_q, dtype=torch.float32, device=dev)
    split_launch, combine_launch = _launches(q, kv_cache, block_table, cache_seqlens, scale, causal, head_dim_v,
                                             metadata, out, lse)
    split_launch()
    combine_launch()
    return out, lse
