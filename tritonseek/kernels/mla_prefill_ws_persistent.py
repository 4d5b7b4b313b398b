"""Persistent variant of the Gluon MLA prefill kernel (``mla_prefill_ws``): one program per SM walking work items.

Same operation, operands, descriptors and numerics as ``mla_prefill_ws`` (FA3-style: one TMA producer warp, two
wgmma consumer warpgroups of 64 query rows, PIPE intra-warpgroup overlap, causal = top-left); ``mla_prefill`` runs it
for a config with ``GLUON=True, PERSIST=True`` where ``ws_supported`` holds.

Why (issue 3, s21): at 8 × 1024 tokens × 128 heads the one-program-per-(128 query rows, head, sequence) kernel runs
8192 programs of 1-8 key blocks, one 208 KB program per SM, so each program's prologue (barrier set-up, the query
TMA, the first key/value tiles) and epilogue (normalise, store) run with the tensor cores idle: 332 TFLOP/s there vs
629 at 8192 × 1 (SDPA 398 / 622).

Design:
* grid = min(SMs, units); program p takes units p, p + grid, p + 2·grid, … (static, graph-safe, no counter);
* a unit = the query blocks m and num_m − 1 − m of one (head, sequence) (num_m = ⌈max_seqlen / 128⌉), heavier
  first: with equal lengths every unit has num_m + 1 key blocks, so static round robin is balanced; units run
  (head, sequence)-major so the programs running at one time share each sequence's keys/values in L2. A block m
  past a shorter sequence's end is skipped (ragged batches are correct; their balance is a heuristic);
* the key/value ring (K and V rings of NUM_STAGES as ``mla_prefill_ws``) runs on across items, so the producer
  loads the next item's first key and value tiles while the consumers finish the current item;
* one query buffer per consumer warpgroup (there is no shared memory for a second with 128-key blocks: 2 stages ×
  80 KB + 48 KB of queries = 208 KB of the 227 KB): a warpgroup releases it (q_empty) as soon as its last score
  wgmma is complete, and the producer refills it (after the next item's first key/value tiles) while the
  warpgroup runs its last softmax, P·V and the output stores. (s22 W2 tried two query buffers with 64-key blocks,
  3 × 40 + 2 × 48 = 216 KB, so the next item's queries load an item ahead: 0.98-0.99 of the same kernel with one
  at all 8 cases; the knob was removed.)

* PAIR_MID (config knob; mla_prefill's default config sets it since s23): with an odd number num_m ≥ 3 of query
  blocks the middle block is a unit alone, half the work of the others; PAIR_MID pairs the middle blocks of two
  (head, sequence)s into one unit (``_item``), so every unit has num_m + 1 key blocks again. Paper estimate (128
  heads, 132 programs): 24 × 341 (3 blocks) 6144 units of which the 3072 half ones all land on the odd programs (2
  units per (head, sequence) divide 132): 47 rounds × 4 blocks → 35 rounds × 4 (1.33× on the block work); 13 × 630
  (5 blocks) 38 × 6 → 32 × 6 (1.19×); 40 × 300 (3 blocks) 78 × 4 → 59 × 4 (1.32×; but its last query block is 44
  rows, so the default's units were closer than that). H200 s23 W1 (tree 5bf20f9; GPU clock, graph replays, 21
  interleaved rounds; A/A 1.000-1.003; TFLOP/s [ratio to SDPA]): 24 × 341 165.4 [1.09] vs 128.0 without (1.29×),
  13 × 630 274.8 [1.00] vs 231.2 (1.19×), 40 × 300 125.8 [1.04] vs 121.1 (1.04×); with DIAG64 169.1 / 278.7 /
  126.0; even counts (8 × 1024, 4096 × 1, 8192 × 1: the same kernel) 0.997-1.003.
* DIAG64 (mla_prefill's default for 256 < max_seqlen ≤ 512, 64-key blocks for ≤ 256, ``persist_config``): warpgroup
  0's last block, the causal diagonal, of whose 128 keys its 64 rows see the first 64, runs as 64-key wgmmas.

Paper estimate before building (s21 figures, 128 heads): 8×1024 = 8192 items / 132 SMs = 62 items per SM in
1034 µs = 16.7 µs per item, of which ≈ 4.5 key blocks × 2.2 µs (the per-block time at 8192 × 1: 4371 µs / 62 items
/ 32.5 blocks) = 9.9 µs is block work, ≈ 7 µs fixed. Hiding the query/first-tile latency, CTA launch/teardown and
the store (≈ 2.5-3.5 µs of it) would give ≈ 15-20 % (≈ 390-400 TFLOP/s). At 8192 × 1 the same ≈ 3 µs per 70 µs
item is ≈ 4 %, against a static-schedule tail: 4096 units over 132 programs is 31.03 rounds, so four programs run
a 32nd unit (≈ 3 %): about even there.

Measured (H200 s22 W3, tree da394eb; GPU clock, CUDA-graph replays, 21 interleaved rounds, 128 heads; TFLOP/s
[ratio to torch SDPA in the same run]; persistent default vs the s21 kernel; A/A of the default ≤ 0.8 %):
8192 as 64 / 32 / 24 / 16 / 13 / 8 / 4 seqs 73.7 [1.40] vs 65.7, 145.9 [1.14] vs 123.8, 135.1 [0.87] vs 139.4,
260.8 [1.07] vs 211.9, 243.1 [0.86] vs 241.7, 370.5 [0.98] vs 317.8, 477.0 [1.02] vs 430.3; 8192 × 1 619.6 [1.12] vs
602.7; 4096 × 1 564.2 [1.06] vs 526.7; 8192 as 2 559.5 [1.07] vs 525.8; 16384 as 4 565.4 [1.11] vs 520.3.
Known loss of the default schedule (s22): an odd number of query blocks per sequence (341 tokens: 3, 630: 5). The
unit holding the middle block alone has half the work, and when the units per (head, sequence) divide the grid (132 =
2·66 = 3·44) a program gets the same jj in every round, so half-work units pile up on some programs and full ones on
others (24 × 341: 0.97 of the s21 kernel, 13 × 630: 0.99, both behind SDPA; mla_prefill ran 257-384 tokens on the
s21 kernel). s23: PAIR_MID (above). Also a static-schedule tail: 31.03 rounds at 8 × 1024.
Gluon compiles only for CUDA sm_90: there is no interpreter path.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from tritonseek.kernels._host import cdiv, cuda_sm_count
from tritonseek.kernels.mla_prefill_ws import (_D_NOPE, _D_ROPE, _D_V, _MAXNREG, _ROWS, BLOCK_M, D_V, ROWS, _alloc_ring,
                                               _first_block, _init_ring, _launch_parts, _load_kv, _mma_layout,
                                               _n_blocks, _p_layout, _pipe_block, _pv_at, _pv_last, _release_unread,
                                               _scores_issue, _softmax, _store_rows, _wg_blocks, _wg_state,
                                               _zero_v_tail)

_SMEM_MAX = 232448 - 1024  # bytes of shared memory per program on sm_90, less the barriers' and the runtime's share


@gluon.jit
def _item(pid, i, grid, sched, num_m, num_heads, cu_ptr, PAIR: gl.constexpr):
    # i-th item of program pid: its unit u = pid + (i // 2)·grid, item t = i % 2 of it. Returns the head, the
    # sequence's first token and length (cu_seqlens), the query block's first row and whether the item exists.
    # Default: unit u holds query blocks num_m − 1 − jj (first) and jj of (head, sequence) u // sched; its
    # second item does not exist when the two blocks coincide (odd num_m: the middle block alone, half the work).
    # PAIR (odd num_m ≥ 3, f = num_m // 2): the (head, sequence)s go in pairs g = u // num_m of num_m units: r = u %
    # num_m = 0 holds the middle blocks f of hb 2g (t = 0) and 2g + 1 (t = 1), r = 1 … f hb 2g's pairs (num_m − r,
    # r − 1), r = f + 1 … 2f hb 2g + 1's; every unit has num_m + 1 key blocks at equal lengths. An odd hb count ends
    # with a pair cut after hb 2g's units (units = hb count // 2 · num_m + f + 1): its missing middle item does not
    # exist. sched: units per (head, sequence), with PAIR the unit count (one argument for either). Other forms of
    # this code (both arguments, units // num_m in the kernel, selects as arithmetic) made ptxas spill 8-12 bytes
    # at the kernel's entry; the compile test checks that there are none.
    u = pid + (i // 2) * grid
    t = i % 2
    if PAIR:
        f = num_m // 2
        g = u // num_m
        r = u - g * num_m
        mid = r == 0
        side = gl.where(mid, t, (r > f).to(gl.int32))
        jj = gl.where(mid, f, r - 1 - side * f)
        valid = (side == 0) | (u - r + num_m <= sched)  # a complete pair
        hb = gl.where(valid, 2 * g + side, 2 * g)  # (a missing 2g + 1 → 2g: an existing sequence for the cu loads)
        m_hi = num_m - 1 - jj
        pid_m = m_hi - t * (m_hi - jj)
    else:
        hb = u // sched
        jj = u % sched
        m_hi = num_m - 1 - jj
        pid_m = m_hi - t * (m_hi - jj)
        valid = (t == 0) | (jj < m_hi)
    h = hb % num_heads
    b = hb // num_heads
    start = gl.load(cu_ptr + b)
    seqlen = gl.load(cu_ptr + b + 1) - start
    m0 = pid_m * BLOCK_M
    return h, start, seqlen, m0, valid


@gluon.jit
def _load_q(q1_desc, q2_desc, q1_s, q2_s, q_ready, q_empty, qc, row, h, hs_q1, hs_q2):
    # the query rows row … row + 127 of head h for the qc-th item (one 64-row half per consumer warpgroup, each
    # waiting for that warpgroup's release of its buffer)
    q_bytes: gl.constexpr = q1_desc.block_type.nbytes + q2_desc.block_type.nbytes
    for w in gl.static_range(2):
        mbarrier.wait(q_empty.index(w), (qc & 1) ^ 1)  # a fresh buffer counts as free
        qb = q_ready.index(w)
        mbarrier.expect(qb, q_bytes)
        tma.async_copy_global_to_shared(q1_desc, [row + w * ROWS, h * hs_q1], qb, q1_s.index(w))
        tma.async_copy_global_to_shared(q2_desc, [row + w * ROWS, h * hs_q2], qb, q2_s.index(w))


@gluon.jit
def _p_producer(q1_desc, q2_desc, k1_desc, k2_desc, v_desc, q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty,
                v_ready, v_empty, q_ready, q_empty, cu_ptr, n_items, grid, sched, num_m, num_heads,
                hs_q1, hs_q2, hs_k1, hs_k2, hs_v,
                BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, PAIR: gl.constexpr):
    # One warp. kc: key/value blocks loaded so far by this program (the ring index, across items); qc: items
    # loaded (the query buffers' phase). Per item: key block 0, value block 0 (their stages free up while the
    # consumers still work on the previous item), then the queries (free only after the previous item's last
    # scores), then the other blocks.
    pid = gl.program_id(0)
    kc = 0
    qc = 0
    for i in range(0, n_items):
        h, start, seqlen, m0, valid = _item(pid, i, grid, sched, num_m, num_heads, cu_ptr, PAIR)
        if valid & (m0 < seqlen):
            n_all = _n_blocks(m0, seqlen, BLOCK_N, CAUSAL)
            for j in range(0, n_all):
                _load_kv(k1_desc, k2_desc, v_desc, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty,
                         kc + j, start + j * BLOCK_N, h, hs_k1, hs_k2, hs_v, NUM_STAGES)
                if j == 0:
                    _load_q(q1_desc, q2_desc, q1_s, q2_s, q_ready, q_empty, qc, start + m0, h, hs_q1, hs_q2)
            kc += n_all
            qc += 1


@gluon.jit
def _diag_tail(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, qe, p16, acc, m_i, l_i, rc, j,
               r0, seqlen, scale_log2, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr):
    # Warpgroup 0's diagonal block j (ring index rc; 128 keys j·128 … of which its rows r0 … r0 + 63 = j·128 … see
    # only the first 64) as 64-key wgmmas: S = Q·K[:64]ᵀ, softmax, O += P·V[:64]. With j > 0 (p16 given) block
    # j − 1's P·V (full width) is issued between the scores and their wait, as in the PIPE loop.
    s_layout: gl.constexpr = _mma_layout(64)
    o_layout: gl.constexpr = _mma_layout(D_V)
    p_layout: gl.constexpr = _p_layout(o_layout)
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_row_l: gl.constexpr = gl.SliceLayout(1, o_layout)
    st = rc % NUM_STAGES
    mbarrier.wait(k_ready.index(st), (rc // NUM_STAGES) & 1)
    s_zero = gl.zeros([ROWS, 64], gl.float32, s_layout)
    s_tok = _scores_issue(q1, q2, k1_bufs.index(st).slice(0, 64, dim=0), k2_bufs.index(st).slice(0, 64, dim=0),
                          s_zero)
    if p16 is not None:
        o_tok = _pv_at(p16, v_bufs, v_ready, rc - 1, j - 1, acc, seqlen, 128, NUM_STAGES)
        s = warpgroup_mma_wait(1, deps=[s_tok])
    else:
        s = warpgroup_mma_wait(0, deps=[s_tok])
    mbarrier.arrive(k_empty.index(st), count=1)
    mbarrier.arrive(qe, count=1)  # the last read of the queries is done
    rows = r0 + gl.arange(0, ROWS, layout=row_l)
    p, alpha, m_n, l_n = _softmax(s, gl.convert_layout(m_i, row_l), gl.convert_layout(l_i, row_l), j * 128, rows,
                                  seqlen, scale_log2, True, CAUSAL, 64, s_layout)
    if p16 is not None:
        acc, p16 = warpgroup_mma_wait(0, deps=[o_tok, p16])
        mbarrier.arrive(v_empty.index((rc - 1) % NUM_STAGES), count=1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_row_l), 1)
    p16n = gl.convert_layout(p.to(v_bufs.dtype), p_layout)
    mbarrier.wait(v_ready.index(st), (rc // NUM_STAGES) & 1)
    vb = v_bufs.index(st)
    if j * 128 + 64 > seqlen:
        _zero_v_tail(vb, j * 128, seqlen, 128)
    o_tok = warpgroup_mma(p16n, vb.slice(0, 64, dim=0), acc, is_async=True)
    acc, p16n = warpgroup_mma_wait(0, deps=[o_tok, p16n])
    mbarrier.arrive(v_empty.index(st), count=1)
    m_o: gl.constexpr = gl.SliceLayout(1, _mma_layout(128))
    return acc, gl.convert_layout(m_n, m_o), gl.convert_layout(l_n, m_o)


@gluon.jit
def _p_consumer(q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_ready, q_empty, cu_ptr,
                out_ptr, stride_ot, stride_oh, n_items, grid, sched, num_m, num_heads, scale_log2,
                WG: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                NARROW: gl.constexpr, PAIR: gl.constexpr):
    # One consumer warpgroup: query rows m0 + WG·64 … of each item, mla_prefill_ws's PIPE loop with the ring index
    # kc + j; releases its query buffer right after the item's last score wgmma. NARROW (DIAG64, warpgroup 0,
    # causal, 128-key blocks): the item's last block is always the diagonal one, of whose keys m0 … m0 + 127 these
    # rows see only the first 64: it runs as 64-key wgmmas (_diag_tail / _diag_only), half the work.
    s_layout: gl.constexpr = _mma_layout(BLOCK_N)
    o_layout: gl.constexpr = _mma_layout(D_V)
    p_layout: gl.constexpr = _p_layout(o_layout)
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_row_l: gl.constexpr = gl.SliceLayout(1, o_layout)
    pid = gl.program_id(0)
    kc = 0
    qc = 0
    for i in range(0, n_items):
        h, start, seqlen, m0, valid = _item(pid, i, grid, sched, num_m, num_heads, cu_ptr, PAIR)
        if valid & (m0 < seqlen):
            r0 = m0 + WG * ROWS
            rows = r0 + gl.arange(0, ROWS, layout=row_l)
            n_all, n_need, n_fast = _wg_blocks(m0, r0, seqlen, BLOCK_N, CAUSAL)
            q1 = q1_s.index(WG)
            q2 = q2_s.index(WG)
            qe = q_empty.index(WG)
            mbarrier.wait(q_ready.index(WG), qc & 1)
            s_zero, acc, m_i, l_i = _wg_state(BLOCK_N, s_layout, o_layout)
            if NARROW:
                nf = n_need - 1  # full blocks, then the diagonal one, narrow
            else:
                nf = n_need
            if nf > 0:
                # (n_need == 1 releases the queries after block 0: never with NARROW, nf > 0 means n_need ≥ 2)
                p16, m_i, l_i = _first_block(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, qe, kc, n_need,
                                             s_zero, m_i, l_i, rows, seqlen, scale_log2, n_fast, CAUSAL, BLOCK_N,
                                             NUM_STAGES, s_layout, p_layout)
                for j in range(1, nf):
                    p16, acc, m_i, l_i = _pipe_block(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready,
                                                     v_empty, qe, kc + j, j, n_need, s_zero, p16, acc, m_i, l_i, rows,
                                                     seqlen, scale_log2, n_fast, CAUSAL, BLOCK_N, NUM_STAGES,
                                                     s_layout, p_layout, o_row_l)
                if NARROW:
                    acc, m_i, l_i = _diag_tail(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty,
                                               qe, p16, acc, m_i, l_i, kc + nf, nf, r0, seqlen, scale_log2,
                                               NUM_STAGES, CAUSAL)
                else:
                    acc = _pv_last(p16, v_bufs, v_ready, v_empty, kc + nf - 1, nf - 1, acc, seqlen, BLOCK_N, NUM_STAGES)
            elif n_need > 0:  # (NARROW only: nf = n_need otherwise) the diagonal block is the only one
                if NARROW:
                    acc, m_i, l_i = _diag_tail(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty,
                                               qe, None, acc, m_i, l_i, kc, 0, r0, seqlen, scale_log2, NUM_STAGES,
                                               CAUSAL)
            else:
                mbarrier.arrive(qe, count=1)  # rows past the sequence: the queries are not read
            _release_unread(k_ready, k_empty, v_ready, v_empty, kc, n_need, n_all, NUM_STAGES)
            kc += n_all
            qc += 1
            if r0 < seqlen:
                _store_rows(acc, l_i, out_ptr, stride_ot, stride_oh, start, r0, h, seqlen, o_layout)


@gluon.jit(do_not_specialize=["stride_ot", "stride_oh", "hs_q1", "hs_q2", "hs_k1", "hs_k2", "hs_v", "num_m",
                              "num_heads", "units"])
def _mla_prefill_ws_persistent_kernel(
    q1_desc, q2_desc, k1_desc, k2_desc, v_desc, cu_ptr, out_ptr, stride_ot, stride_oh,
    hs_q1, hs_q2, hs_k1, hs_k2, hs_v, num_m, num_heads, units, scale_log2,
    BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, DIAG64: gl.constexpr,
    PAIR: gl.constexpr, CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr,
):
    # Descriptors, out and cu_seqlens as _mla_prefill_ws_kernel. num_m = ⌈max_seqlen / 128⌉ query blocks;
    # units = ⌈num_m / 2⌉ · heads · batch (PAIR: _item's count); grid (min(SMs, units),).
    grid = gl.num_programs(0)
    if PAIR:
        sched = units
    else:
        sched = (num_m + 1) // 2  # units per (head, sequence)
    n_items = 2 * ((units - gl.program_id(0) + grid - 1) // grid)
    q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty = _alloc_ring(
        q1_desc, q2_desc, k1_desc, k2_desc, v_desc, NUM_STAGES)
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    _init_ring(k_ready, k_empty, v_ready, v_empty, NUM_STAGES)
    for w in gl.static_range(2):
        mbarrier.init(q_ready.index(w), count=1)
        mbarrier.init(q_empty.index(w), count=1)  # each warpgroup owns one query buffer
    gl.warp_specialize([
        (_p_consumer, (q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_ready, q_empty,
                       cu_ptr, out_ptr, stride_ot, stride_oh, n_items, grid, sched, num_m, num_heads,
                       scale_log2, 0, BLOCK_N, NUM_STAGES, CAUSAL, DIAG64, PAIR)),
        (_p_consumer, (q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_ready, q_empty,
                       cu_ptr, out_ptr, stride_ot, stride_oh, n_items, grid, sched, num_m, num_heads,
                       scale_log2, 1, BLOCK_N, NUM_STAGES, CAUSAL, False, PAIR)),
        (_p_producer, (q1_desc, q2_desc, k1_desc, k2_desc, v_desc, q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready,
                       k_empty, v_ready, v_empty, q_ready, q_empty, cu_ptr, n_items, grid, sched, num_m,
                       num_heads, hs_q1, hs_q2, hs_k1, hs_k2, hs_v, BLOCK_N, NUM_STAGES, CAUSAL, PAIR)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def launch_prefill_ws_persistent(q1, q2, k1, k2, v, cu_seqlens, out, max_seqlen: int, softmax_scale: float,
                                 causal: bool, cfg: dict, num_programs: int | None = None) -> torch.Tensor:
    """Launch the persistent Gluon kernel on validated operands (mla_prefill's checks; ``ws_supported`` true).
    Operands as ``mla_prefill_ws.launch_prefill_ws``: q1/k1 [T, H, 128], q2 [T, H, 64], k2 [T, H, 64] or [T, 64],
    v [T, H, 128], out [T, H, 128] (written for the tokens of the sequences). cfg: WS_BLOCK_N (64 / 128),
    WS_STAGES (ValueError when the ring and the queries exceed 227 KB of shared memory), CONSUMER_REGS,
    PRODUCER_REGS over DEFAULT_WS (PIPE is always on here), DIAG64 (bool; needs 128-key blocks), PAIR_MID (bool:
    with an odd number ≥ 3 of 128-row query blocks, the middle blocks of two (head, sequence)s share a unit).
    num_programs: grid size (default: the device's SM count; tests pass small ones to walk many items per program).
    Returns out."""
    c, bn, stages, (dq1, dq2, dk1, dk2, dv), (hs_q1, hs_q2, hs_k1, hs_k2, hs_v) = _launch_parts(q1, q2, k1, k2, v, cfg)
    diag64 = bool(cfg.get("DIAG64", False))
    if diag64 and (bn != 128 or not causal):
        raise ValueError("config DIAG64 needs WS_BLOCK_N 128 and causal=True")
    smem = 2 * _ROWS * (_D_NOPE + _D_ROPE) * 2 + stages * bn * (_D_NOPE + _D_ROPE + _D_V) * 2
    if smem > _SMEM_MAX:
        raise ValueError(f"config WS_BLOCK_N {bn} × WS_STAGES {stages} needs {smem} bytes of shared memory, over "
                         f"the {_SMEM_MAX} of an H100/H200 program")
    num_heads = q1.shape[1]
    batch = cu_seqlens.numel() - 1
    num_m = cdiv(max_seqlen, 2 * _ROWS)
    n_hb = num_heads * batch
    # PAIR_MID only where there is a middle block to pair (one query block: every unit is one block anyway)
    pair = bool(cfg.get("PAIR_MID", False)) and num_m % 2 == 1 and num_m >= 3
    if pair:
        units = n_hb // 2 * num_m + n_hb % 2 * (num_m // 2 + 1)
    else:
        units = (num_m + 1) // 2 * n_hb
    if num_programs is None:
        num_programs = cuda_sm_count(q1.device)
    if not isinstance(num_programs, int) or num_programs < 1:
        raise ValueError(f"num_programs must be a positive int, got {num_programs!r}")
    if units >= 2**31:
        raise ValueError(f"{units} work units do not fit the kernel's int32 indices")
    _mla_prefill_ws_persistent_kernel[(min(num_programs, units),)](
        dq1, dq2, dk1, dk2, dv, cu_seqlens, out, out.stride(0), out.stride(1),
        hs_q1, hs_q2, hs_k1, hs_k2, hs_v, num_m, num_heads, units, float(softmax_scale) * 1.4426950408889634,
        BLOCK_N=bn, NUM_STAGES=stages, CAUSAL=bool(causal), DIAG64=diag64, PAIR=pair,
        CONSUMER_REGS=int(c["CONSUMER_REGS"]), PRODUCER_REGS=int(c["PRODUCER_REGS"]),
        num_warps=4, maxnreg=_MAXNREG,
    )
    return out
