"""Launch configs of ``mla_decode`` (split from mla_decode.py, module size): the tuned tables by rows class
(``_TUNED``, Hopper ``_TUNED_WS``), the small-batch table (``_SMALL_TABLE``), the batch >= 64 Hopper overrides
(``_BIG_BATCH_WS``, the switch knobs ``SWITCH_KNOBS`` / ``_SWITCH``), the packed schedule's defaults and the dispatch rule
``default_config``. Every name is re-exported by ``tritonseek.kernels.mla_decode``.
"""

from __future__ import annotations

from tritonseek.kernels._host import cdiv

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
# COMBINE_SPIN (the combine waiting per sequence as a dependent of the split) stays off; in session 16 it forced
# register-stored partials (its release did not order TMA writes; session 21 completes and fences them first).
# The default since session 17: the lead's call 1 (2edb452 + the knobs) ran test_mla_decode_ws.py -m gpu green (56
# passed, incl. the two-calls-per-graph replay test); h1mla W1 (0f9f50a, GPU clock, 8 calls per graph, 15 replays,
# b128 page 64) vs the session-16 default: s_k 4096 varlen h32 s_q1 / h16 s_q2 / h16 s_q1 178.2 -> 170.1 / 173.9 ->
# 165.6 / 164.9 -> 158.9 us (3739 / 3707 / 3975 GB/s), h32 s_q1 fixed 153.7 -> 149.8, s_k 8192 varlen h32 s_q1
# 317.8 -> 307.0. Same run, FUSE (mla_decode_ws: the split kernel merges the split sequences, no combine kernel)
# on top: varlen SLOWER (185.4 / 183.6 / 161.6 us; s_k 8192 330.1; with OVERHEAD 1 / 3: 188.8 / 182.8 / 160.4 and
# 183.2 / 177.2 / 161.3), fixed 148.1 (the empty combine launch saved): the merge lands at the end of the programs
# that finish a split sequence's last piece (mostly their last segment, in the grid's tail), and each piece waits
# for its count round trip; FUSE stays off.
SWITCH_KNOBS = dict(BTPF=True, SEQPF=True, OTMA=True, PART16=True, OVERHEAD=2)
_SWITCH: dict = dict(SWITCH_KNOBS)
# COMBINE_ROWS 8 (8 rows per combine program, half the programs of the default 4): h1mla s17 W2 (b33d927, GPU clock,
# 8 calls per graph, same run) s_k 4096 varlen h32 s_q1 / h16 s_q2 / h16 s_q1 170.2 -> 168.3 / 166.3 -> 163.8 / 159.0 ->
# 158.7 us, h32 s_q1 fixed 149.8 -> 149.3, s_k 8192 varlen h32 s_q1 307.4 -> 305.3 (2 rows: -0.6 / -1.1 / +0.7;
# COMBINE_PDL -0.3 / -0.9 / +1.6; OVERHEAD 1 +1.5 / +0.4 / -0.8, OVERHEAD 3 -0.4 / -0.9 / +0.5: not taken). W3 (f42f463,
# same method, 8 the default): 4 rows -1.1 / -0.6 / -0.5, 16 rows -0.3 / +0.5 / +1.5, 32 rows +7.4 / +9.1 / +5.0,
# COMBINE_PDL +1.3 / +2.2 / +2.9: 4 vs 8 rows is inside the run-to-run spread (kept at 8, no gain claimed).
# Session 18 (h1mla), the grid's tail (s_k 4096 varlen, b128; globaltimer probe at 1fadd0f, 32 rows: program ends min /
# median / max 118.8 / 158.2 / 167.9 us, 9-10 us from the mean end to the last; combine +6.7 us in the graph). GPU-clock
# A/Bs (8 calls per graph, 15 interleaved replays, default first and last), all slower, all off:
# - STEAL (tail spans taken dynamically: get_mla_metadata, mla_decode_ws): W1 (1fadd0f) h16 s_q2 / h32 s_q1 / h16 s_q1
#   161.2 / 165.5 / 155.5 us -> STEAL 132 (8 %) +10.7 / +12.8 / +9.5, 66 (4 %) +11.5 / +8.9 / +6.8, 264 (8 %) +21.3 /
#   +22.7 / +16.5, 132 (15 %) +8.6 / +10.5 / +8.9; as a second wave of programs (STEAL_WAVE, 132, 8 %) +13.1 / +15.7 /
#   +10.5. The tail shrank (7 us) but every sequence got split (combine 12.7 -> 20.9 us) and each extra piece costs a
#   sequence switch (~6 us of its program's time by the probe's fit).
# - ROTATE (a span's last piece first) / FUSE (merge in the split kernel): W2 (83fc158) 163.1 / 167.9 / 158.4 us ->
#   ROTATE +3.8 / +3.0 / +1.4, FUSE +18.5 / +17.6 / +3.0, both +31.5 / +25.9 / +10.5 (the merges early in the programs
#   stall their streaming); h32 s_q1 fixed (packed, no split sequence) 149.3 -> -0.6 / +0.9 / -1.3 (noise).
# - Session 19 (h4fuse W1 at e9ab8f7, same method): FUSE's arrival is NOT its cost. h16 s_q2 / h32 s_q1 / h16 s_q1 varlen
#   160.9 / 165.5 / 156.3 us -> session 18's FUSE (128 per-thread acq_rel atomics, three-pass merge) +19.2 / +17.1 / +3.0,
#   one arrival per warpgroup +16.9 / +18.0 / +3.1, one arrival + one-pass merge (mla_decode_ws's FUSE now) +17.8 / +17.8
#   / -0.9 (A/A +1.3 / +1.4 / +0.2); s_k 8192 h32 s_q1 varlen 298.3 -> +24.4 / +21.5 / +22.1 (A/A +1.4); fixed lengths
#   (no split sequence, the combine launch saved) -0.8..-2.1. W2 (460236b, DIAG globaltimer stamps, b128 s_k 4096 varlen,
#   105 split sequences): per split piece, tiles done -> partial stored 2.05 / 0.77 us (32 / 16 rows), -> count re-read
#   (the arrival) 1.0 / 1.0, -> merged 8.0-8.5 (max 12.3) / 2.3-2.6, the merge at the end of ~105 of 132 programs;
#   32 rows: program time fit 15.5 us per segment (default 6.2), idle tail 25.5-26.9 us (10.7-11.6), split alone 187.3
#   us vs 165.3 + combine 10.1. FUSE stays off; the merge (a piece read back, 32 KB each, by one warpgroup) is the cost.
# - Session 20 (h4mla W1 at 1230905, same method, 21 replays; default 164.3 / 168.5 / 158.6 / 303.9 us, A/A +1.6 / +2.4 /
#   +0.0 / +2.1): FUSE with a merge that issues every load before its math and reads its own piece from shared memory
#   (SASS: a 2-piece merge's 16-byte loads all in flight) h16 s_q2 / h32 s_q1 / h16 s_q1 / s_k 8192 h32 s_q1 varlen
#   +22.6 / +20.0 / +1.2 / +26.6 us vs the one-pass merge's +17.8 / +18.0 / -0.3 / +23.5 (DIAG merge 9.0 vs 7.7 us at 32
#   rows): the merge's cost is not a serial load chain (removed); FUSE + OVERHEAD 3 +15.6 / +20.6 / +0.0 / +21.6,
#   OVERHEAD 1 worse. W2 (1515883): producer-side prefetch order (next query early, first block id first) within the
#   A/A spread (figures in mla_decode_ws). Nothing here changed.
# Session 21 (h4mla), s_k 4096 varlen budget and the combine overlapped with the tail; nothing here changed.
# - Budget (probe_mla_ws_timeline budget_line, DIAG stamps, W1 at f3051ee), per program: 16x2v start 5.3 + streaming
#   140.8 (62.7 tiles at 2.247 us) + epilogues 4.6 + switches 2.0 + idle at the end 9.8 = 162.5 us; 32x1f (fixed) 5.3 +
#   137.7 (64 tiles at 2.152: 128 programs share the bandwidth) + 2.7 + 0 + 3.5 = 149.2. The op (GPU clock, 8 calls per
#   graph): 16x2v 160.1 = split alone 154.2 + combine 5.9 (floor 143.8); one call per graph adds 4.6-7.4 us (W2 bench,
#   s20 final pass). The tail is the schedule's, not noise: the same programs end last in every rep (corr 0.98 by
#   program; fixed: per-program end std 1.2-1.4 us), those holding 3 segments incl. short whole sequences (a whole
#   segment costs ~3 us more than a piece by a DIAG fit), but cost-model fixes did not carry: OVERHEAD 4 +3.1 / +2.5 /
#   +1.4 us (32x1v / 16x2v / 16x1v, A/A +1.4 / +1.7 / +0.2; s_k 8192 +2.8) though the fit predicted a gain; an LPT /
#   sorted order (needs a sequence permutation in the kernels) modelled at <= 2 us (fewer split sequences, same tail):
#   not built.
# - COMBINE_SPIN reworked (TMA partials kept, one polling thread, deferred releases; mla_decode_ws): W2 (23d6340, GPU
#   clock, 8 calls per graph, 15 reps, default first and last) 32x1v / 16x2v / 16x1v varlen 165.3 / 160.8 / 156.5 us
#   -> -0.0 / -0.3 / -1.5, with COMBINE_ROWS 4 -1.6 / -2.1 / -2.0 (A/A +1.7 / +1.7 / 0.0); s_k 8192 varlen -2.3 / -2.3 /
#   -2.3 (A/A +1.9 / +1.9 / 0.0); fixed -1.0 / -1.1 / -1.3. But the same run's bench_mla rows (one call per graph, the
#   issue's figure) were +8.5 .. +23 us SLOWER with it (GPU clock, e.g. 16x2v 165.4 -> 185.1) and eager +350 .. +640 us
#   per call (cause not found): off. COMBINE_PDL (every combine program waits for the whole split grid at entry: no
#   merge overlaps the tail, only the launch is hidden) +2.8 .. +4.2 us on varlen, -0.5 .. -0.7 fixed in the same A/B.
# Session 22 (h1varlen), why the same programs end last on s_k 4096 varlen and what the gap to fixed lengths is (H200,
# probe_mla_ws_timeline: GPU clock, 8 calls per graph and one-call graphs, 15 interleaved reps, A/A in each run):
# - The DIAG build's late programs hold a whole sequence after another one's piece (16x2v: end+whole+start pieces
#   157.2 us vs end+start 153.3); lateness follows the work, not the SM (programs walking the spans in reverse,
#   --rev: per-span ends correlate 0.51 / 0.87-0.90, per-SM 0.23 / 0.06 at 16x2v / 32x1v; no GPC pattern). Charging
#   such sequences 1-3 tiles more in the balanced cut and cutting spans at floor(p·total/P) (WHOLE_COST / EVEN_CUT,
#   code at bc42466) evened the ends (DIAG tail 12.3 -> 6.4 us; plain build with start/end stamps only, --lite:
#   max - mean end 5.0-8.2 -> 4.4-6.5 us) but the op did not move: W1 (a6b26f2) 16x2v / 32x1v / 16x1v / 32x1@8192v
#   163.8 / 168.6 / 158.6 / 304.5 us -> -0.3..+0.4 / -0.6..+0.1 / 0.0..+0.9 / -0.5..+1.0 (A/A -0.4 / -0.6 / -0.1 /
#   0.0), one-call graphs the same; W2 (041b4a1) +0.3 / -0.1 / +0.6. The late programs' lateness is absorbed (the
#   others' ends free HBM bandwidth for them): removed.
# - The gap to fixed lengths is the split structure, not the tail. FIXED lengths through the balanced 132-program cut
#   (SCHED balanced: every sequence split, two segments per program) cost what varlen costs: W2 16x2f / 32x1f 150.6 /
#   149.3 -> 162.1 / 162.1 us (split alone +6.0 / +7.3, combine +5.5 / +5.4: 128 sequences to merge, ~12.6 MB of
#   16-bit partials read and out written after the split grid); 16x2v / 32x1v 163.7 / 168.6 (split 156.9 / 161.9,
#   combine +6.8 / +6.7). Not taken (W2): 128 programs (PARTS_PER_SM 0.969697) -0.3 .. +0.3 us; the packed walk on
#   varlen (FILL_TOL -1) +4.2 .. +13.1, filled (MIN_FIT 8) +0.8 .. +3.9; fixed packed +-0.7. W3 (da394eb) DIAG of
#   16x2f through the balanced cut: start 5.8-6.5 + streaming 2.24-2.26 us/tile + epilogues 4.4 + switches 1.8-1.9 per
#   program, as varlen 16x2v (4.7 / 2.0). bench_mla (W3, one call per graph, defaults unchanged): s_k 4096 varlen h16
#   s_q2 165.2 us = 3,716 GB/s, h32 s_q1 169.5 = 3,752 (target 3,800 missed); the other ten memory-bound cases
#   3,961-4,326.
# Session 19 (h1mla), the WSM kernel's sequence switches (globaltimer probe, H200 W1 at d91fd0f, h128 s_q1 s_k 4096
# fixed): 5.4-5.9 us of consumer query loads per sequence and a 10-11 us epilogue per unsplit sequence (its bf16 out
# stores were 2-byte: out strides not specialized, alignment unknown; fp32 partials 3.3-4.1 us), on ~2.0 us per
# 64-key tile. Knobs (mla_decode_wsm): QTMA (query tile by the TMA warp, loaded during the previous sequence's last
# value matmuls: query wait 5.5 -> 0.3 us), OVEC 2 (16-byte output stores: out strides passed in units of 8, each
# warp's block re-laid out to 8 values per thread; unsplit epilogue 11.3 -> 4.4 us), PART16 (16-bit partials, now
# also 16-byte stores; the combine reads half). H200 W2 (e0bd947, GPU clock, 8 calls per graph, 11 interleaved
# replays, the old default first and last: A/A -3.6 .. +5.6 us), old default -> these three, µs: h128 s_q1 s_k 4096
# fixed / varlen 316.6 -> 278.3 / 346.0 -> 295.7, s_k 8192 604.1 -> 542.1 / 638.3 -> 572.6; h128 s_q2 4096 593.3 ->
# 521.9 / 619.6 -> 538.1, 8192 1151.3 -> 1054.6 / 1268.7 -> 1147.4; h64 s_q2 4096 326.7 -> 286.0 / 333.3 -> 288.4,
# 8192 613.3 -> 555.2 / 691.5 -> 629.4; 64 rows h64 s_q1 4096 178.6 -> 161.3 / 217.5 -> 187.7, 8192 337.6 -> 310.8 /
# 366.0 -> 334.6; h32 s_q2 4096 181.0 -> 163.6 / 204.4 -> 182.3, 8192 331.7 -> 308.8 / 398.8 -> 361.9 (QTMA alone
# -3.5 .. -47 us; OVEC 1 (4-byte stores) or OVEC 2 with fp32 partials between). All correct (cosine difference
# ≤ 2.6e-6 vs fp32); wsm gpu tests 45 passed in that job. Measured and not taken (W1 at d91fd0f, A/A ≤ 2.3 us):
# SEQPF (lengths / split counts a sequence ahead) -2 .. +2 us; PART16 without OVEC +1.7 .. +12 us (2-byte stores);
# SCHED packed at 128 rows -4.4 .. +32.5 us; OVERHEAD 10 with the knobs -2.1 .. +1.9 us on varlen, OVERHEAD 2 +7 ..
# +12 us. W3 (db8c501, these knobs the default, same method): wsm gpu tests 46 passed, packed b128 tests 12 passed;
# the s18 default -> this one -8.4 .. -15.1 % on the 20 cases (e.g. h128 s_q1 s_k 4096 fixed 318.3 -> 276.5 us, 528
# TFLOP/s; h128 s_q2 8192 varlen 1279.3 -> 1163.9, 557); on top of it COMBINE_ROWS 8 / 16 and COMBINE_PDL -6.8 ..
# +7.4 us (A/A -4.1 .. +3.2): not taken; OVEC 1 +4 .. +57 us.
# Session 20 (h1mla), H200 W1 at 1230905 (probe_mla_ws_timeline --ab --split-alone: GPU clock, 8 calls per graph, 13
# interleaved replays, default first and last; every config checked against fp32 first, all correct, cosine difference
# <= 2.3e-6), b128 page 64 causal, us per call, default -> variant (A/A in brackets):
# - SCHED packed + FILL_TOL 3 (fixed lengths: whole sequences, no split; varlen falls back to the balanced cut): two
#   head tiles (h128 s_q1 / h64 s_q2) s_k 4096 282.1 -> 274.2 (-8.0) / 286.4 -> 277.1 (-9.3) [+0.9 / -1.7], s_k 8192
#   561.2 -> 557.7 / 563.8 -> 563.4 [+7.6 / +1.7]; four head tiles (h128 s_q2) 531.9 -> 534.8 (+2.9), 1065.5 ->
#   1095.0 (+29.5) [+0.8 / -5.7]: packing whole sequences needs 256 / 512 tiles per program against the balanced
#   cut's 253 / 501 (3.88 sequences per program), which the saved combine (split alone +4 us instead of +12) does not
#   repay. s19's "-4.4 .. +32.5 us" was measured before OVEC, with an 11 us unsplit epilogue. Taken for two head tiles
#   only (_WSM_TWO_TILES).
# - OTMA (mla_decode_wsm: out and 16-bit partials by TMA stores through the finished query buffer): DIAG timeline h128
#   s_q1 s_k 4096 fixed: unsplit epilogue 4.4 -> 2.05 us, gap between sequences ~1.5 -> 0.26 us, but the next query
#   load is exposed (first-tile wait 0.26 -> 1.02 us; fit 1.95 us per tile + 3.44 per segment); the whole op did not
#   move: fixed -1.2 / +0.2 / 0.0 / -0.5 / +5.4 / +19.6 us (h128 s_q1, h64 s_q2, h128 s_q2 at s_k 4096, then 8192),
#   varlen +1.1 / +2.3 / -0.4 / +0.4 / +5.0 / +7.2. Off.
# - OVERHEAD 3 / 2 (with OTMA) on varlen: -3.5 / -2.6, -1.3 / -1.8, -5.8 / -6.0, -6.9 / -4.3, +2.7 / +0.5, +13.8 /
#   +13.1 us against the default (A/A +0.7, +1.3, +0.2, +1.4, +5.1, +0.8); against OTMA alone -4.6 / -3.6 / -5.4 /
#   -7.3 / -2.3 / +6.6 (OVERHEAD 3). W2 at 1e2fb3b (same method, 11 replays, _WSM_TWO_TILES the default), OVERHEAD 3
#   alone, varlen h128 s_q1 / h64 s_q2 / h128 s_q2 at s_k 4096, then 8192: 299.1 -> 293.7 (-5.4), 287.6 -> 283.9
#   (-3.7), 541.6 -> 533.0 (-8.6), 563.7 -> 561.7 (-1.9), 617.1 -> 616.5 (-0.6), 1161.3 -> 1157.4 (-3.9) [A/A -0.2,
#   +0.8, +0.8, +3.9, +1.0, -1.7]: the balanced cut charged a sequence start 5 tiles (~10 us) where a segment costs
#   ~6 us (DIAG fit), so programs with two starts got too few tiles. W3 at 5acc840 (OVERHEAD 3 the default, same
#   method), OVERHEAD 5 against it: varlen in the order above +2.4 / +2.4 / +10.9 / +3.1 / +5.4 / +1.8 us [A/A +5.6 /
#   +1.2 / +5.3 / +3.5 / +2.1 / +0.2]; h128 s_q2 fixed (four head tiles, balanced) s_k 4096 / 8192 +2.7 / -4.1 [+1.1 /
#   +1.0]. Each run's gain is near its A/A spread, but 3 was faster on varlen in 17 of 18 measurements (W1-W3): 3 for
#   the 128-row class; fixed h128 s_q2 neutral. The same W2: two head tiles packed vs balanced, fixed, h128 s_q1 / h64
#   s_q2 at s_k 4096, then 8192: -9.9 / -9.2 / -7.5 / +0.8 us [A/A +2.1 / +0.6 / +0.9 / -3.7].
# - The combine's share (op minus split alone, same interleave): +10.2 .. +16.9 us on the balanced schedule (30-64
#   split sequences), +3.8 .. +5.0 us with nothing to merge (packed, fixed): the launch and the early-exit programs.
# Session 22 (h2wsm, probe_mla_wsm_intercept; budget and the losing knobs in mla_decode_wsm's docstring). SM1 2
# (warpgroup 1's softmax arithmetic while its P0·V runs) for the > 64-row class: H200 W4 at 236656e (GPU clock, 8
# calls per graph, 11 interleaved reps, fp32 check first), default -> SM1 2 [A/A], us: h128 s_q2 s_k 4096 fixed
# 531.8 -> 522.0 [+0.1], varlen 541.2 -> 536.2 [+0.0], 8192 fixed 1066.1 -> 1026.1 [+1.8], varlen 1190.4 -> 1153.9
# [+0.7]; two head tiles h128 s_q1 / h64 s_q2 4096 fixed -3.2 [+2.2] / -4.8 [+0.4]; 64 rows (h64 s_q1) +1.1 [+1.6]:
# not taken there. One run; the same job's bench_mla rows (one measurement each, not interleaved) spread +-5 %.
_WSM_KNOBS = dict(QTMA=True, OVEC=2, PART16=True)
_BIG_BATCH_WS: dict[int, dict] = {
    16: dict(SCHED="packed", FILL_TOL=3, QTMA=True, COMBINE_ROWS=8, **_SWITCH),
    32: dict(SCHED="packed", FILL_TOL=3, QTMA=True, COMBINE_ROWS=8, **_SWITCH),
    # > 32 rows: mla_decode_wsm's seesaw split kernel (H200 W2 at eca038b, every b128 case with h_q·s_q >= 64
    # faster, e.g. h128 s_q2 s_k 8192 1454 -> 1081 us; 64 rows with the packed schedule: 385 -> 334 us), with
    # _WSM_KNOBS since session 19.
    64: dict(SCHED="packed", FILL_TOL=3, WSM=True, **_WSM_KNOBS),
    # OVERHEAD 3: session 20 W1-W3, SM1 2: session 22 W4 (comments above _WSM_KNOBS)
    128: dict(WSM=True, OVERHEAD=3, SM1=2, **_WSM_KNOBS),
}
# 65-128 rows (two 64-row head tiles: h128 s_q1, h64 s_q2) at batch >= 64 on Hopper: the packed schedule (session 20 W1
# above; more head tiles keep the balanced cut).
_WSM_TWO_TILES = dict(SCHED="packed", FILL_TOL=3)


# Hopper, exactly 64 rows (TP2: 64 heads at s_q 1) with batch·rows ≤ _SMALL_64_UNITS (batch ≤ 8) also take
# _SMALL_TABLE (the 64-row Gluon config of _TUNED_WS before). h1mla s17 W2 (b33d927, bench_mla_small.py --heads 64
# --quick, split + combine graph µs, s_k 1024 / 4096), Gluon 64-row -> the table's entry (16-row tiles + PDL at
# batch·rows ≤ 128, else 32-row): b1 31.2 / 50.0 -> 14.5 / 21.5, b2 31.8 / 42.1 -> 22.7 / 24.6, b4 29.9 / 42.1 ->
# 19.1 / 29.6, b8 30.5 / 47.9 -> 21.8 / 48.0 (the other entry: b1 18.0 / 27.2, b2 19.8 / 26.5, b4 17.1 / 31.3,
# b8 21.9 / 53.7). Batches 9-16 not measured; other devices keep the rows > 64 rule.
_SMALL_64_UNITS = 512


def default_config(seqlen_q: int, num_heads: int, batch: int | None = None, hopper: bool = False) -> dict:
    """The launch config for s_q·h_q query rows (tuned table by rows class; a small batch of more than
    64 rows (on Hopper also exactly 64 rows up to batch 8) has its own path and table, keyed by batch·rows; on a
    Hopper GPU (hopper=True) the _TUNED_WS classes run the Gluon kernel)."""
    rows = seqlen_q * num_heads
    if batch is not None and (rows > 64 or (hopper and rows == 64 and batch * rows <= _SMALL_64_UNITS)):
        for max_units, cfg in _SMALL_TABLE:
            if batch * rows <= max_units:
                head_tiles = cdiv(rows, cfg["BLOCK_H"])
                return dict(cfg, NUM_SPLITS=max(1, _SMALL_PROGRAMS // (head_tiles * batch)))
    cls = _rows_class(rows)
    if hopper and cls in _TUNED_WS:
        cfg = dict(_TUNED_WS[cls])
        if batch is not None and batch >= _BIG_BATCH_MIN:
            cfg.update(_BIG_BATCH_WS.get(cls, {}))
            if cls == 128 and rows <= 128:
                cfg.update(_WSM_TWO_TILES)
        return cfg
    return dict(_TUNED[cls])


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
