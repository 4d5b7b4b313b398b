"""Paged absorbed-MLA decode with a TMA producer warp and a wgmma consumer warpgroup, written in Gluon.

out[b, i, h] = Σ_j softmax_j(q[b, i, h]·K[b, j]·scale) · K[b, j, :512],  j ≤ s_k − s_q + i

Same inputs, outputs, schedule and combine as ``mla_decode`` (FlashMLA ``flash_mla_with_kvcache``
semantics); this file holds the split kernel ``mla_decode`` runs on Hopper. The ``tl`` kernel is bound
by shared-memory traffic there: every one of its warps re-reads the whole 32×576 query tile from shared
memory for every 64-key step (``tl`` gives no control over which warp holds which operand). Design:

* **keys on the wgmma M side.** One consumer warpgroup computes Sᵀ = K·Qᵀ (M = 64 keys of the cache
  tile, N = BLOCK_H query rows, K = 576) and Oᵀ += Vᵀ·Pᵀ (M = 512 value columns, N = BLOCK_H rows,
  K = 64 keys). The query tile is written to shared memory once per sequence and is the wgmma's B
  operand: the tensor core reads it, not 8 warps through ldmatrix. Oᵀ [512, BLOCK_H] fp32 is
  4·BLOCK_H registers per thread (128 at 32 rows). V is the first 512 columns of the same shared
  tile as K (a transposed view; never a copy).
* **one TMA producer warp** walks the same split-KV schedule as the consumer (``get_mla_metadata``:
  sched/split, the combine kernel and the partial slots p + b are the ``tl`` kernel's) and loads each
  64-key tile (latent [64, 512] + rope [64, 64] boxes; page_size ≥ 64, so a tile is inside one page)
  into a NUM_STAGES ring guarded by ready (TMA transaction bytes) / empty (consumer release) mbarriers.
* **masking.** The last tiles of a sequence (cache tail, causal diagonal) have their key rows at or
  past cache_seqlens zeroed in shared memory before the dots (NaN in unused slots never reaches
  out), and Sᵀ is masked to −inf there.
* online softmax in base 2 on Sᵀ's columns (a reduction across the warpgroup's 4 warps).
* **more than 32 rows**: 64-row head tiles on two consumer warpgroups (32 rows each) that stream the same
  cache tiles (a stage is released by both); setmaxnreg gives them the TMA warp's registers.
* **query prefetch (QTMA, one warpgroup)**: the TMA warp also loads each sequence's query rows, into one of
  two buffers, before that sequence's tiles, so a program that moves on to its next sequence does not stall
  on global query loads (H200: a balanced-schedule program's second segment had cost several µs).

* **sequence switches** (a program moving to its next sequence; the balanced cut gives ~2 per program on varied
  lengths): an H200 globaltimer probe (benchmarks/probe_mla_ws_timeline.py, 228ceaf) measured ~10 µs per switch
  at 32 rows: 4-7 µs storing O (128 scalar stores per thread), 1.5 µs loading the next length, 2 µs to the first
  tile. Now (mla_decode's batch ≥ 64 default): OTMA writes O through the finished query buffer with TMA stores
  (16-bit partials with PART16), SEQPF loads lengths / split counts one sequence ahead, BTPF block ids one tile
  ahead (probe at ab2154b: ~6 µs per switch). COMBINE_SPIN (the combine as a dependent launch waiting per
  sequence, merging the sequences finished early during the split grid's tail) is a knob, off. Session 16 saw no
  gain with it, but then it forced register-stored partials (its release did not order TMA writes) and had every
  thread of every waiting combine program in an acquire loop; since session 21 a TMA-stored partial is released at
  the next segment's start or the span's end, after its writes completed and were proxy-fenced
  (mla_decode_ws_parts._release_pending), and one thread per combine program polls (mla_decode_tiles._wait_count).
  H200 s21 (GPU clock, 8 calls per graph): W1 (f3051ee, each piece waited for right after its store) s_k 4096
  varlen within the A/A spread, fixed -1.4 us (the combine launch hidden); W2 (23d6340, deferred) with COMBINE_ROWS 4
  -1.6 .. -2.3 us on the six varlen cases (A/A up to +1.9), but +8.5 .. +23 us as one call per graph and +350 .. +640
  us eager in bench_mla (cause not found): off (mla_decode_config).
* **fused combine (config FUSE, with OTMA and PART16; off: H200 s17/s18/s19 slower on varlen, see mla_decode_config)**:
  no combine kernel. A program that finishes a piece of a split sequence stores it as a 16-bit partial (coalesced
  generic stores from the finished query buffer), then its warpgroup arrives ONCE on the sequence's counter (bar.sync,
  one atom.acq_rel.gpu by one thread: a release cumulative over the stores the barrier ordered, as fp8_gemm_ws_sk's
  fix-up), and after a barrier every thread re-reads it (ld.acquire.gpu): every thread of the warpgroup holding the
  last increment reads the full count and merges its own elements of the sequence's pieces in one pass (no barrier in
  the merge, so a thread of another program that also reads the full count just writes the same values); the last
  incrementer re-arms the counter (0) for the next call. Empty sequences get out 0 / lse −inf from the split kernel
  (program 0 also walks those before its span). H200 s19 (b128 s_k 4096 varlen; W1 A/B, W2 DIAG stamps): the arrival
  costs ~1 us and is not FUSE's loss (session 18's per-thread arrival, code at 6bd1975, measured the same); at 32 rows
  the merge, ~8 us at the end of ~105 of 132 programs (2.5 us at 16 rows), and the generic partial store (2 us vs a
  TMA store) are: h32 s_q1 +17.8 us, h16 s_q1 -0.9 (noise). s20 W1 (1230905): a merge that reads its own piece from
  shared memory and issues the other pieces' loads before any math (its SASS: all 16-byte loads of a 2-piece merge
  in flight at once, where the one-pass merge has 1-2 between FFMAs) took as long (DIAG 9.0 vs 7.7 us) and the A/B
  was no better (h32 s_q1 / h16 s_q2 / s_k 8192 +20.0 / +22.6 / +26.6 us vs +18.0 / +17.8 / +23.5, A/A +2.4 / +1.6 /
  +2.1): the merge's time is not its load-issue pattern; it was removed (code in git at 1230905).
* **tail spans claimed in the kernel (config STEAL, one consumer warpgroup, no FUSE; off: H200 s18 7-23 µs slower,
  see mla_decode_config)**: ``get_mla_metadata`` cuts
  the programs' spans over (100 − STEAL_PCT) % of the work and STEAL small spans over the rest; the grid has one
  program per SM; after issuing its span's last tile the producer warp takes a ticket (a relaxed atomic on
  ``metadata.work_counter[head tile]``) for the next tail span and hands its index to the consumer warpgroup through
  a shared-memory slot (the consumer, the mla_decode_ws_consumer module, walks spans one after another), so programs
  that run ahead take more of the tail. The taker of the last ticket re-arms the counter for the next launch (no host
  reset; CUDA-graph safe). Partial slots are span + b, so the combine is unchanged. STEAL_WAVE: no tickets, one
  program per span (the tail spans run as a second wave of programs as SMs free up).

H200, b128 page 64, split + combine as one CUDA graph (benchmarks/results/h200.jsonl, h1mla s17 W2 at b33d927: the
knob default before COMBINE_ROWS 8; torch peer same run): memory-bound (s_q·h_q ≤ 32) s_k 4096 fixed 4049 / 3935 /
3979 GB/s (h16 s_q1 / h16 s_q2 / h32 s_q1), varlen 3864 / 3633 / 3672 (3889 / 3654 / 3685 on the GPU clock, without
the host's graph launch), s_k 8192 fixed 4238 / 4182 / 4196, varlen 4125 / 4040 / 4009; compute-bound:
mla_decode_wsm / h4mla.

Gluon compiles only for CUDA (sm_90a): there is no interpreter path, so ``mla_decode_ws`` raises on a
non-Hopper or non-CUDA device; ``mla_decode`` dispatches here only on Hopper for config entries with
GLUON=True and falls back to the ``tl`` kernel elsewhere.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from tritonseek.kernels import mla_decode as _tl
from tritonseek.kernels._host import cdiv, cuda_capability, nvmma_layout
from tritonseek.kernels.fp8_gemm_ws import gluon_ws_supported  # noqa: F401 (re-exported: same device rule)
from tritonseek.kernels.mla_decode_ws_consumer import _consumer
from tritonseek.kernels.mla_decode_ws_parts import (  # noqa: F401 (D_QK, _seq_range, _zero_tail: re-exported, mla_decode_wsm)
    D_LATENT,
    D_QK,
    D_ROPE,
    TILE_N,
    _producer,
    _seq_range,
    _zero_tail,
)

# The cache layout this kernel takes (DeepSeek MLA): 512 latent (= V) columns ‖ 64 rope columns.
_DV, _DR, _DQK, _TN = 512, 64, 576, 64  # D_LATENT, D_ROPE, D_QK, TILE_N (mla_decode_ws_parts) as host ints

# Launch knobs of the Gluon kernel inside an mla_decode config: WS_STAGES (ring depth; 2 × 72 KB tiles fill
# the shared memory next to the query tile), PRODUCER_REGS (the TMA warp's register budget), DEFER_L (keep
# per-key partial row sums and reduce them across the warpgroup once per sequence instead of every tile;
# H200: equal at 16 rows, 1-2 µs faster at 32, 16 µs at 64 rows, so the default).
# WS_WGS: consumer warpgroups per program (2: each owns BLOCK_H/2 rows of the same cache tiles; CONSUMER_REGS
# is then the second one's register budget after setmaxnreg).
# PIPE: issue the next tile's scores (Sᵀ wgmma) before this tile's softmax, so the softmax runs under the
# tensor core's work (the next tile must have arrived). H200 final run (55ea38b): 13-42% SLOWER in every class
# (b128 s_k 4096: 16 rows 160 -> 191 µs, 32 rows 176 -> 236, h64 s_q1 228 -> 323, h128 s_q2 773 -> 1101), so off;
# kept only as a measured negative result (the wait for tile k+1 before tile k's softmax holds stage k longer).
# Measured on the H200 and dropped (slower or equal; code in git history at 1e9801a): an L2 prefetch of the tile
# after the ring's (cp.async.bulk.prefetch, 2-3 tiles ahead: 6-40 µs slower at b128 s_k 4096) and splitting
# each tile's value columns over two rings of 3 + 2 half-tiles (within ±1.5 µs).
# Also dropped (code at 172c19d, config PREF): the TMA warp loading the next sequence's length and first block id
# while issuing this one's tiles, the split count loaded before the tiles: H200 b128 page 64, all 12 memory-bound
# cases within -0.3..+1.3% of the default (s_k 4096 varlen 166.5 / 175.0 / 180.8 vs 165.6 / 174.6 / 180.1 µs).
# QTMA: the producer warp also TMAs each sequence's query rows, into two buffers, ahead of its tiles (one consumer
# warpgroup; 32 rows: 225 KB of shared memory), instead of the consumer loading them between sequences.
# SEQPF: the consumer loads the next sequence's cache_seqlens one sequence ahead and the split count before the
# tiles (no dependent global load at a sequence switch). BTPF: the TMA warp loads each tile's block id one tile
# ahead (see _producer). OTMA (with QTMA, one head tile of exactly BLOCK_H rows, contiguous out): a sequence's
# output goes through its finished query buffer and one TMA store instead of 128 scalar stores per thread (H200,
# diag probe at 228ceaf: those took 4-7 µs per sequence switch, the largest part of its ~10 µs); config PART16
# (mla_decode) makes the partials 16-bit so that they go the same way.
# ROTATE (one warpgroup): walk each span's last sequence first (a sequence split over two programs then has both
# pieces done early; meant for FUSE's merges): H200 s18 W2 slower alone (+1.4..+3.8 µs) and with FUSE (+10..+32 µs).
_DEFAULT_WS = dict(WS_STAGES=2, PRODUCER_REGS=40, DEFER_L=True, WS_WGS=1, CONSUMER_REGS=232, PIPE=False, QTMA=False,
                   SEQPF=False, BTPF=False, OTMA=False, ROTATE=False)
# Measured and dropped (s20 W2 at 1515883, code there; H200, GPU clock, 8 calls per graph, 21 reps, A/A in the run):
# producer switches QUERY_EARLY (the next sequence's query TMA during this sequence, after its third tile) and BT_FIRST
# (a sequence's first block id before its query TMA): b128 page 64 s_k 4096 varlen h32 s_q1 / h16 s_q2 / h16 s_q1,
# s_k 8192 h32 s_q1, s_k 4096 fixed h32 s_q1 (default 165.5 / 160.9 / 155.3 / 298.7 / 146.4 us) +1.5 / +1.0 / -0.2 /
# +2.6 / +0.3 and +1.8 / +1.3 / +0.2 / +2.2 / -0.1, both +2.4 / +1.2 / -0.1 / +3.1 / +0.3 (A/A +1.0 / +1.3 / +0.5 /
# +2.4 / 0.0): noise. DIAG (32 rows): the next sequence's first tile was still ready 1.4-1.5 us after the consumer
# asked for it with the query loaded early, so the query was not what delayed it.
# registers per thread at entry with two consumer warpgroups (12 warps incl. the producer's warpgroup)
_MAXNREG_2WG = 168


def ws_config(seqlen_q: int, num_heads: int) -> dict:
    """An ``mla_decode`` config that runs this kernel for s_q·h_q query rows: 16 or 32 rows on one consumer
    warpgroup; more than 32 rows as 64-row head tiles on two warpgroups (32 rows each, sharing the cache
    tiles); 64-key schedule tiles, one program per SM (the tile ring takes the shared memory). On a device
    where the Gluon kernel does not run, the tl kernel runs this config (BLOCK_H rows × 64-key steps)."""
    rows = seqlen_q * num_heads
    if rows <= 32:
        block_h = 16 if rows <= 16 else 32
        return dict(BLOCK_H=block_h, BLOCK_N=64, num_warps=4 if block_h == 16 else 8,
                    num_stages=3 if block_h == 16 else 5, PARTS_PER_SM=1, USE_TMA=True, GLUON=True, **_DEFAULT_WS)
    # two warpgroups: 240 registers each and 24 for the TMA warp (232/40 left local-memory accesses in the loop)
    return dict(BLOCK_H=64, BLOCK_N=64, num_warps=8, num_stages=2, PARTS_PER_SM=1, USE_TMA=True, GLUON=True,
                **dict(_DEFAULT_WS, WS_WGS=2, CONSUMER_REGS=240, PRODUCER_REGS=24))


# Runtime sizes and strides are not specialized on (one compile per config; batch 3 and batch 128 share it).
@gluon.jit(do_not_specialize=["stride_qb", "stride_qs", "stride_qh", "stride_btb", "stride_ob", "stride_os",
                              "stride_oh", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads", "seqlen_q",
                              "page_shift", "num_spans"])
def _mla_decode_ws_kernel(
    q_ptr, v_desc, r_desc, qd_lat, qd_rope, bt_ptr, seqlens_ptr, sched_ptr, split_ptr,
    out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_qb, stride_qs, stride_qh, stride_btb,
    stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
    batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
    BLOCK_H: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, PRODUCER_REGS: gl.constexpr,
    DEFER_L: gl.constexpr, WGS: gl.constexpr, CONSUMER_REGS: gl.constexpr, PIPE: gl.constexpr,
    QTMA: gl.constexpr, TRIGGER: gl.constexpr = False, SEQPF: gl.constexpr = False, BTPF: gl.constexpr = False,
    cnt_ptr=None, COUNT: gl.constexpr = False, od_desc=None, pd_desc=None, OTMA: gl.constexpr = False,
    PART_TMA: gl.constexpr = False, diag_ptr=None,
    DIAG: gl.constexpr = False, FUSE: gl.constexpr = False, num_spans=0, work_ptr=None, STEAL: gl.constexpr = False,
    ROTATE: gl.constexpr = False, REV_PIDS: gl.constexpr = False, DIAG_LITE: gl.constexpr = False,
):
    # q        [batch, seqlen_q, num_heads, 576] (stride_qb, stride_qs, stride_qh, 1)
    # v_desc   TMA over the cache as [num_blocks·page_size, 576] rows, box [64, 512] (latent = V)
    # r_desc   the same rows, box [64, 64] at column 512 (rope)
    # qd_lat / qd_rope (QTMA, one warpgroup): TMA over q as [batch·seqlen_q·num_heads, 576] rows (q contiguous),
    #          boxes [BLOCK_H, 512] / [BLOCK_H, 64]; None otherwise
    # block_table [batch, max_blocks] int32 (stride_btb, 1); cache_seqlens [batch] int32
    # sched [num_parts, 4] / split [batch, 2] int32: get_mla_metadata's schedule (BLOCK_N = 64)
    # out [batch, seqlen_q, num_heads, 512] (stride_ob, stride_os, stride_oh, 1); lse [batch, num_heads, seqlen_q]
    # opart [num_parts + batch, rows, 512] fp32; lpart [num_parts + batch, rows] fp32
    # grid (head tiles, parts), as the tl kernel.
    if TRIGGER:  # launched with a programmatic dependent (the combine): let it launch now; it waits for us
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // dummy $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    BLOCK_N: gl.constexpr = TILE_N
    dtype: gl.constexpr = v_desc.dtype
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape, v_desc.layout)
    r_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + r_desc.block_type.shape, r_desc.layout)
    ROWS: gl.constexpr = BLOCK_H // WGS  # query rows per consumer warpgroup
    QBUF: gl.constexpr = 2 if QTMA else WGS  # QTMA (one warpgroup): two query buffers, else one per warpgroup
    q_lat = gl.allocate_shared_memory(dtype, [QBUF, ROWS, D_LATENT],
                                      gl.NVMMASharedLayout.get_default_for([ROWS, D_LATENT], dtype))
    q_rope = gl.allocate_shared_memory(dtype, [QBUF, ROWS, D_ROPE],
                                       gl.NVMMASharedLayout.get_default_for([ROWS, D_ROPE], dtype))
    p_smem = gl.allocate_shared_memory(dtype, [WGS, ROWS, BLOCK_N],
                                       gl.NVMMASharedLayout.get_default_for([ROWS, BLOCK_N], dtype))
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=WGS)  # released by every consumer warpgroup
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
    # STEAL: a claimed tail span, producer warp → consumer warpgroup: one slot of 32 copies of the span index, full
    # (sp_ready) / read (sp_free) barriers (144 bytes; allocated in every build: a partition argument cannot be None)
    sp_smem = gl.allocate_shared_memory(gl.int32, [32], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    sp_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    sp_free = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    if STEAL:
        mbarrier.init(sp_ready, count=1)
        mbarrier.init(sp_free, count=1)
    rows_total = seqlen_q * num_heads
    row0 = gl.program_id(0) * BLOCK_H
    if WGS == 1:
        gl.warp_specialize([
            (_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_smem.index(0), ready, empty, q_ready, q_empty,
                         seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                         stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                         batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
                         BLOCK_H, BLOCK_N, NUM_STAGES, CAUSAL, DEFER_L, 0, ROWS, PIPE, QTMA, 0, SEQPF, cnt_ptr, COUNT,
                         od_desc, pd_desc, OTMA, PART_TMA, diag_ptr, DIAG, FUSE, num_spans, sp_smem, sp_ready,
                         sp_free, STEAL, ROTATE, REV_PIDS, DIAG_LITE)),
            (_producer, (v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr,
                         stride_btb, batch, max_blocks, page_shift,
                         qd_lat, qd_rope, q_lat, q_rope, q_ready, q_empty, rows_total, row0,
                         BLOCK_N, NUM_STAGES, QTMA, BTPF, diag_ptr, DIAG, FUSE, num_spans, work_ptr, sp_smem,
                         sp_ready, sp_free, STEAL, ROTATE, REV_PIDS)),
        ], [1], [PRODUCER_REGS])
    else:
        # two consumer warpgroups (default partition + worker 0), each owning ROWS of the BLOCK_H rows and
        # streaming the same cache tiles (a stage is free once both released it); worker 1 = TMA warp
        gl.warp_specialize([
            (_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_smem.index(0), ready,
                         empty, q_ready, q_empty,
                         seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                         stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                         batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
                         BLOCK_H, BLOCK_N, NUM_STAGES, CAUSAL, DEFER_L, 0, ROWS, PIPE, False, 0, SEQPF, cnt_ptr, False,
                         od_desc, pd_desc, False, False, diag_ptr, False)),
            (_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_smem.index(1), ready,
                         empty, q_ready, q_empty,
                         seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                         stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                         batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
                         BLOCK_H, BLOCK_N, NUM_STAGES, CAUSAL, DEFER_L, ROWS, ROWS, PIPE, False, 1, SEQPF, cnt_ptr, False,
                         od_desc, pd_desc, False, False, diag_ptr, False)),
            (_producer, (v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr,
                         stride_btb, batch, max_blocks, page_shift,
                         None, None, q_lat, q_rope, q_ready, q_empty, rows_total, row0,
                         BLOCK_N, NUM_STAGES, False, BTPF, diag_ptr, False)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


def smem_layout(block_shape: list[int], dtype) -> gl.NVMMASharedLayout:
    """The NVMMA shared layout of a cache-tile box (also used by the compile tests); one cached instance per (shape,
    dtype): up to six descriptors per call each built a fresh layout (~8 µs apiece on the host)."""
    return nvmma_layout(block_shape, dtype)


def ws_layout_ok(q: torch.Tensor, kv_cache: torch.Tensor, head_dim_v: int, block_h: int, wgs: int = 1) -> bool:
    """True when the Gluon kernel handles this layout: d_qk 576 / head_dim_v 512, page_size ≥ 64,
    a contiguous 16-byte-aligned cache of fewer than 2^31 rows, 16 or 32 rows per consumer warpgroup."""
    if wgs not in (1, 2) or block_h % wgs or block_h // wgs not in (16, 32):
        return False
    num_blocks, page_size, _, d_qk = kv_cache.shape
    return (d_qk == _DQK and head_dim_v == _DV and page_size >= _TN and block_h in (16, 32, 64)
            and q.dtype in _GL_DTYPES and kv_cache.is_contiguous() and kv_cache.data_ptr() % 16 == 0
            and num_blocks * page_size < 2**31)


def check_ws_device(t: torch.Tensor) -> None:
    """Raise ValueError unless t is on a CUDA Hopper GPU (Gluon has no interpreter path)."""
    if t.device.type != "cuda":
        raise ValueError(f"q is on {t.device}: mla_decode_ws is a Gluon kernel that runs only on CUDA (sm_90 "
                         "Hopper); Gluon has no interpreter path — use mla_decode (interpreter) or the reference "
                         "on CPU")
    major = cuda_capability(t.device)[0]
    if major != 9:
        raise ValueError(f"mla_decode_ws needs a Hopper GPU (compute capability 9.x), got {major}.x")


def combine_spin(metadata, wgs: int | None = None) -> bool:
    """True when this schedule's combine waits per sequence (config COMBINE_SPIN, one consumer warpgroup of 128
    threads releasing each piece, counters allocated by get_mla_metadata): see _mla_combine_kernel's SPIN."""
    if wgs is None:
        wgs = int(metadata.config.get("WS_WGS", 1))
    return (bool(metadata.config.get("COMBINE_SPIN", False)) and wgs == 1 and not metadata.config.get("WSM")
            and metadata.counters is not None)


def fuse_combine(metadata, q: torch.Tensor, out: torch.Tensor, opart: torch.Tensor | None = None) -> bool:
    """True when this call's Gluon split kernel merges the split sequences itself (config FUSE, PART16): one
    consumer warpgroup with the query and output TMA paths (QTMA, OTMA: q and out contiguous, one head tile of
    exactly BLOCK_H rows), 16-bit partials, the metadata's piece counters, no COMBINE_SPIN; ``mla_decode`` then
    launches no combine kernel."""
    cfg = metadata.config
    if not (cfg.get("FUSE") and cfg.get("QTMA") and cfg.get("OTMA") and cfg.get("PART16")) or cfg.get("WSM"):
        return False
    block_h = int(cfg["BLOCK_H"])
    return (int(cfg.get("WS_WGS", 1)) == 1 and metadata.counters is not None and not combine_spin(metadata, 1)
            and q.is_contiguous() and q.data_ptr() % 16 == 0 and q.shape[1] * q.shape[2] == block_h
            and out.is_contiguous() and out.data_ptr() % 16 == 0 and (opart is None or opart.dtype == q.dtype))


def launch_split_ws(q, kv_cache, block_table, cache_seqlens, scale, causal, metadata, out, lse, opart, lpart,
                    diag=None, rev_pids=False, diag_lite=False):
    """Launch the warp-specialized split kernel on inputs validated by ``mla_decode`` (its layout checked
    by ``ws_layout_ok``, metadata cut with BLOCK_N 64); partials go to opart/lpart for the combine kernel.
    diag (diagnostics, one consumer warpgroup): a [num_parts, 128] int64 buffer that receives per-program
    %globaltimer stamps at [0..63] and %clock64 at [64..127] (see _consumer / _producer).
    rev_pids (diagnostics, no STEAL): program p runs schedule span num_parts − 1 − p (its partial slots stay the
    span's, so the combine is unchanged): the hardware places programs on SMs in launch order, so this moves
    every span's work to another SM (probe_mla_ws_timeline --rev: does lateness follow the work or the SM?).
    diag_lite (with diag): only the consumer's program start / end stamps ([0], [1]) and its SM id ([63]): no stamp
    code in the per-tile loops or the producer (the full DIAG build runs ~8 us longer per call at b128 s_k 4096)."""
    cfg = dict(_DEFAULT_WS)
    cfg.update({k: metadata.config[k] for k in _DEFAULT_WS if k in metadata.config})
    batch, seqlen_q, num_heads, _ = q.shape
    num_blocks, page_size = kv_cache.shape[:2]
    block_h = metadata.config["BLOCK_H"]
    gdt = _GL_DTYPES[q.dtype]
    flat = kv_cache.view(num_blocks * page_size, _DQK)
    rows = num_blocks * page_size
    v_desc = TensorDescriptor(flat, [rows, _DQK], [_DQK, 1], [_TN, _DV], smem_layout([_TN, _DV], gdt))
    r_desc = TensorDescriptor(flat, [rows, _DQK], [_DQK, 1], [_TN, _DR], smem_layout([_TN, _DR], gdt))
    wgs = int(cfg["WS_WGS"])
    # QTMA: query rows by TMA from the producer into two buffers (one consumer warpgroup, q contiguous)
    qtma = bool(cfg["QTMA"]) and wgs == 1 and q.is_contiguous() and q.data_ptr() % 16 == 0
    qd_lat = qd_rope = None
    if qtma:
        q2d = q.view(batch * seqlen_q * num_heads, _DQK)
        qd_lat = TensorDescriptor(q2d, list(q2d.shape), [_DQK, 1], [block_h, _DV], smem_layout([block_h, _DV], gdt))
        qd_rope = TensorDescriptor(q2d, list(q2d.shape), [_DQK, 1], [block_h, _DR], smem_layout([block_h, _DR], gdt))
    head_tiles = cdiv(seqlen_q * num_heads, block_h)
    extra = dict(maxnreg=_MAXNREG_2WG) if wgs == 2 else {}
    spin = combine_spin(metadata, wgs)
    # OTMA: out (and 16-bit partials) by TMA stores from the finished query buffer (rows_total == BLOCK_H)
    otma = (bool(cfg["OTMA"]) and qtma and seqlen_q * num_heads == block_h and out.is_contiguous()
            and out.data_ptr() % 16 == 0)
    fuse = otma and fuse_combine(metadata, q, out, opart)
    # STEAL: num_programs programs, each claiming tail spans from work_counter[head tile] after its own span (one
    # consumer warpgroup, no FUSE); STEAL_WAVE or otherwise one program per span (the tail runs as a second wave)
    steal = (metadata.num_programs is not None and metadata.work_counter is not None and wgs == 1 and not fuse
             and not metadata.config.get("STEAL_WAVE", False) and metadata.work_counter.numel() >= head_tiles)
    grid = (head_tiles, metadata.num_programs if steal else metadata.num_parts)
    od_desc = pd_desc = None
    if otma:
        o2d = out.view(batch * seqlen_q * num_heads, _DV)
        od_desc = TensorDescriptor(o2d, list(o2d.shape), [_DV, 1], [block_h, _DV], smem_layout([block_h, _DV], gdt))
        pd_desc = od_desc  # never used unless the partials are 16-bit (PART_TMA)
        # with COMBINE_SPIN the split kernel waits for each TMA-stored partial's writes and fences them from the async
        # proxy before its releases (mla_decode_ws_parts._release_pending); otherwise the stream's kernel boundary
        # completes them before the combine reads
        if opart.dtype == q.dtype:
            p2d = opart.view(-1, _DV)
            pd_desc = TensorDescriptor(p2d, list(p2d.shape), [_DV, 1], [block_h, _DV],
                                       smem_layout([block_h, _DV], gdt))
    _mla_decode_ws_kernel[grid](
        q, v_desc, r_desc, qd_lat, qd_rope, block_table, cache_seqlens, metadata.sched, metadata.split,
        out, lse, opart, lpart,
        q.stride(0), q.stride(1), q.stride(2), block_table.stride(0),
        out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
        batch, block_table.shape[1], num_heads, seqlen_q, scale * 1.4426950408889634, page_size.bit_length() - 1,
        BLOCK_H=block_h, NUM_STAGES=int(cfg["WS_STAGES"]), CAUSAL=bool(causal),
        PRODUCER_REGS=int(cfg["PRODUCER_REGS"]), DEFER_L=bool(cfg["DEFER_L"]), WGS=wgs,
        CONSUMER_REGS=int(cfg["CONSUMER_REGS"]), PIPE=bool(cfg["PIPE"]), QTMA=qtma,
        TRIGGER=bool(metadata.config.get("COMBINE_PDL", False)) or spin, SEQPF=bool(cfg["SEQPF"]),
        BTPF=bool(cfg["BTPF"]), cnt_ptr=metadata.counters if spin or fuse else None, COUNT=spin, od_desc=od_desc,
        pd_desc=pd_desc, OTMA=otma, PART_TMA=otma and opart.dtype == q.dtype, diag_ptr=diag,
        DIAG=diag is not None and not (diag_lite and wgs == 1), FUSE=fuse, num_spans=metadata.num_parts,
        DIAG_LITE=diag is not None and diag_lite and wgs == 1,
        work_ptr=metadata.work_counter if steal else None, STEAL=steal, ROTATE=bool(cfg["ROTATE"]) and wgs == 1,
        REV_PIDS=bool(rev_pids) and wgs == 1 and not steal,
        num_warps=4, **extra,
    )


def mla_decode_ws(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
    head_dim_v: int = 512,
    metadata: _tl.MLAMetadata | None = None,
    out: torch.Tensor | None = None,
    *,
    check_ids: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out = softmax(q·Kᵀ·scale, causal bottom-right)·V over the paged latent cache, V = K[..., :512], on the
    warp-specialized Gluon split kernel (always; ``mla_decode`` picks it by config where it is faster).

    Same arguments (check_ids included), results and errors as ``mla_decode``, restricted to its layout: q [batch, seqlen_q,
    num_heads, 576] bf16/fp16 (last dim contiguous); kv_cache [num_blocks, page_size ≥ 64 (power of two), 1,
    576] contiguous, same dtype; block_table [batch, max_blocks] int32; cache_seqlens [batch] int32 (0
    allowed: out 0, lse −inf); head_dim_v 512; metadata from ``get_mla_metadata`` with a config whose
    BLOCK_N is 64 and BLOCK_H 16 or 32 (default: ``ws_config(seqlen_q, num_heads)``; more than 32 rows run
    as several 32-row head tiles). Returns out [batch, seqlen_q, num_heads, 512] q.dtype and lse [batch,
    num_heads, seqlen_q] fp32 (natural log).
    Raises ValueError on a non-CUDA or non-Hopper device (Gluon has no interpreter path; there is no
    fallback here) or a layout the kernel does not take, and everything ``mla_decode`` raises.
    Semantics: FlashMLA ``flash_mla_with_kvcache``.
    """
    if isinstance(q, torch.Tensor):
        check_ws_device(q)
    if metadata is None and isinstance(q, torch.Tensor) and q.dim() == 4 and isinstance(cache_seqlens, torch.Tensor):
        metadata = _tl.get_mla_metadata(cache_seqlens, q.shape[1], q.shape[2], config=ws_config(q.shape[1], q.shape[2]))
    if isinstance(metadata, _tl.MLAMetadata):
        metadata = dataclasses.replace(metadata, config=dict(metadata.config, GLUON="force"))
    return _tl.mla_decode(q, kv_cache, block_table, cache_seqlens, softmax_scale, causal, head_dim_v, metadata, out,
                          check_ids=check_ids)
