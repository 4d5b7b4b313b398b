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
+ combine CUDA-graph latency). The tables and the dispatch rule ``default_config`` live in mla_decode_config.py
(re-exported here).
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import (check_bool, check_index_range, check_int, check_real, check_runnable_device,
                                       check_tensor, interpreter_active, is_pow2)
from tritonseek.kernels._host import capability_at, cdiv, next_pow2, sm_count_at
from tritonseek.kernels.mla_decode_tiles import (
    _mla_combine_kernel,
    _mla_schedule_kernel,
    _mla_schedule_packed_kernel,
    cache_tiles,
)
from tritonseek.kernels.mla_decode_small import _attend_span, _store_rows, check_mla_config
from tritonseek.kernels.mla_decode_config import (  # noqa: F401 (re-exported: the public import path of the tables)
    _BIG_BATCH_MIN,
    _BIG_BATCH_WS,
    _FIXED_OVERHEAD_TILES,
    _MIN_SPAN_DEFAULT,
    _PACKED_CAPS,
    _PACKED_DEFAULT,
    _SMALL_BASE,
    _SMALL_PROGRAMS,
    _SMALL_TABLE,
    _SWITCH,
    _TUNED,
    _TUNED_WS,
    SWITCH_KNOBS,
    _packed_args,
    _rows_class,
    default_config,
)
from tritonseek.kernels.reference.mla import mla_schedule_packed_ref, mla_schedule_ref

def _is_hopper(index: int) -> bool:
    return capability_at(index)[0] == 9


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
    # STEAL (mla_decode_ws): programs of the Gluon split kernel's grid (num_parts − num_programs tail spans are
    # taken through work_counter, [1] int32 zero, re-armed by the kernel itself); None: one program per span
    num_programs: int | None = None
    work_counter: torch.Tensor | None = None


_num_sms = sm_count_at  # SMs of a CUDA device index (cached once per index in _host)


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
    computed on the device in the same way (the fallback decided there too: no host sync). Config STEAL=K (with
    STEAL_PCT, default 10): K tail spans after the programs' spans (the programs' spans cover (100 − STEAL_PCT) % of
    the balanced cost, the tail spans the rest; the packed walk leaves them empty); num_parts then counts spans,
    num_programs the programs and work_counter holds the ticket counters the Gluon split kernel takes them with.
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
    head_tiles = cdiv(seqlen_q * num_heads, cfg["BLOCK_H"])
    num_parts = max(1, int(cfg.get("PARTS_PER_SM", 1) * num_sm) // head_tiles)
    # STEAL: STEAL tail spans after the num_progs programs' spans, STEAL_PCT % of the cost (mla_decode_ws takes
    # them dynamically; every other split kernel runs one program per span)
    num_progs, n_tail = num_parts, int(cfg.get("STEAL", 0))
    tail_pct = int(cfg.get("STEAL_PCT", 10)) if n_tail else 0
    num_parts += n_tail
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
        block_b = min(128, max(16, next_pow2(batch)))
        # every cut position in one pass (each a binary search over the sequences: dependent loads)
        block_p = min(1024, max(16, next_pow2(num_parts + 1)))
        if packed:
            ws = torch.empty(2 * batch * _PACKED_CAPS + 3 * batch, dtype=torch.int32, device=dev)
            _mla_schedule_packed_kernel[(1,)](
                cache_seqlens, sched, split, ws, end, batch, num_progs, *pk, overhead, min_span, batch.bit_length(),
                num_parts, tail_pct,
                BLOCK_N=cfg["BLOCK_N"], BLOCK_B=block_b, BLOCK_C=_PACKED_CAPS,
                BLOCK_P=block_p, UNROLL=16, num_warps=4,
            )
        else:
            _mla_schedule_kernel[(1,)](
                cache_seqlens, sched, split, end, batch, num_parts, overhead, min_span, batch.bit_length(), num_progs,
                tail_pct,
                BLOCK_N=cfg["BLOCK_N"], BLOCK_B=block_b,
                BLOCK_P=block_p, num_warps=4,
            )
    elif dev.type == "cuda" or interpreter_active():
        if batch == 0:
            sched.zero_()
    elif packed and not n_tail:  # plain CPU tensors without the interpreter: the reference walk
        sched, split = mla_schedule_packed_ref(cache_seqlens, num_parts, cfg["BLOCK_N"], *pk, overhead, min_span)
    else:  # plain CPU tensors without the interpreter: the same schedule in torch ops (STEAL: balanced)
        sched, split = mla_schedule_ref(cache_seqlens, num_parts, cfg["BLOCK_N"], overhead, min_span, num_progs,
                                        tail_pct)
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
    work = torch.zeros(head_tiles, dtype=torch.int32, device=dev) if n_tail else None  # one counter per head tile
    return MLAMetadata(sched, split, num_parts, seqlen_q, num_heads, cfg, max_len, counters,
                       num_progs if n_tail else None, work)


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
    grid = (cdiv(rows, block_h), metadata.num_parts)

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
    combine_grid = (batch, cdiv(rows, block_rows))

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
    when None). out: optional [batch, seqlen_q, num_heads, head_dim_v] q.dtype buffer;
    out must not alias the inputs (not checked: a destination overlapping an input may give wrong results).
    Returns out [batch, seqlen_q, num_heads, head_dim_v] q.dtype and lse [batch, num_heads, seqlen_q]
    fp32 (natural log). A query that sees no key (cache_seqlens 0) gets out = 0 and lse = −inf; a query
    row with a NaN score (NaN/inf in it or in a key it sees) gets out = NaN and lse = NaN (as mla_decode_ref).
    Ids: cache_seqlens[b] must be in 0..max_blocks·page_size and the block ids block_table[b,
    :⌈cache_seqlens[b]/page_size⌉] in 0..num_blocks−1 (entries past them are never read). check_ids (default True)
    checks both with one device→host read (a sync; skipped while a CUDA graph is being captured); with
    check_ids=False (the model's decode step: the engine builds them) nothing is read back and out-of-range ids
    are undefined behaviour (out-of-bounds reads, garbage or a crash). metadata must come from these
    cache_seqlens (not checked, except that with check_ids a length above the one metadata was cut for raises).
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
    causal = check_bool("causal", causal)  # a numpy bool → bool (the kernels take it as a constexpr)
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
        # the same one read-back also checks the lengths against the metadata's bound: metadata cut for shorter
        # cache_seqlens (another step's) gave garbage (out ~1e38, lse inf) with no error (tester23 #5)
        bound = capacity if metadata.max_seqlen_k is None else metadata.max_seqlen_k
        try:
            check_index_range("cache_seqlens", cache_seqlens, 0, bound + 1)
        except ValueError as e:
            # a negative length is wrong whatever metadata says: blaming it (with no metadata passed, too) misled
            # (h2tester s26); the extra read happens on this error path only
            if bound == capacity or int(cache_seqlens.min()) < 0:
                raise
            raise ValueError(f"{e}; metadata was cut for cache_seqlens of at most {bound} (get_mla_metadata of other "
                             "cache_seqlens? compute it from these)") from None
        pages = (cache_seqlens.long() + page_size - 1) // page_size
        read = torch.arange(block_table.shape[1], device=dev)[None, :] < pages[:, None]
        check_index_range("block_table", block_table, 0, num_blocks, read=read)
    if out is None:
        out = torch.empty(batch, seqlen_q, num_heads, head_dim_v, dtype=q.dtype, device=dev)
    else:
        check_tensor("out", out, dtype=q.dtype, ndim=4, device=dev, output=True)
        if tuple(out.shape) != (batch, seqlen_q, num_heads, head_dim_v) or out.stride(-1) != 1:
            raise ValueError(f"out must be [{batch}, {seqlen_q}, {num_heads}, {head_dim_v}] with a contiguous "
                             f"last dim, got {tuple(out.shape)} strides {out.stride()}")
    lse = torch.empty(batch, num_heads, seqlen_q, dtype=torch.float32, device=dev)
    split_launch, combine_launch = _launches(q, kv_cache, block_table, cache_seqlens, scale, causal, head_dim_v,
                                             metadata, out, lse)
    split_launch()
    combine_launch()
    return out, lse
