"""Diagnostic probe (issue 4, session 21): how fast can the 128×7168×16384 stream-K GEMM's loads run without its math?

    PYTHONPATH=. python benchmarks/probe_fp8_gemm_stream.py [--rounds 20] [--variants a,b] [--rows FILE]

The stream-K kernel (fp8_gemm_ws_sk, GRID 112) streams B (7168 × 16384 e4m3 = 117 MB, from HBM) and A (128 × 16384,
2 MB, L2-resident after its first read) at ~2.6 TB/s of B, about 60 % of the H200's HBM. This kernel keeps the GEMM's
data flow and drops the wgmmas: the same producer warp (fp8_gemm_ws_sk._sk_producer's loop: CTA p of P takes the
iterations [p·T // P, (p+1)·T // P) of the T = tiles · K-blocks (tile, K block) iterations, tile-major, each K block's
A box [128, 128] and B box [128, 128] into a NUM_STAGES ring, optional PF_AHEAD L2 prefetch of the B rows through the
GEMM's own helper) and one consumer warpgroup that waits for each stage and releases it, either at once (HOLD 0: the
memory system alone) or after modelling the tensor core (HOLD cycles per K block, one block at a time: a block starts
when its stage has landed and the previous block is done; the GEMM's ideal is 512 cycles per 128×128×128 block).

So, per variant: kernel µs (GPU clock, CUDA-graph replays of one launch per rotated B set, interleaved with the other
variants), the B rate (117 MB / µs) and all bytes moved into shared memory per µs. If the loads alone (HOLD 0) run at
~2.6 TB/s with 112 CTAs, the access pattern limits the GEMM; if they run much faster, the limit is the interplay with
the math (the stages a CTA keeps in flight while its wgmmas hold two).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tritonseek.benchrun import git_commit, out_file, positive_int, require_cuda  # noqa: E402
from tritonseek.kernels.fp8_gemm_ws import _MAXNREG, _smem_layout  # noqa: E402
from tritonseek.kernels.fp8_gemm_ws_loop import _tile_k_loop  # noqa: E402

M, N, K = 128, 7168, 16384
BLOCK = 128

# name -> (CTAs, NUM_STAGES, LOAD_A, HOLD cycles per K block, PF_AHEAD, PF_CHUNK)
VARIANTS = {
    "s56": (56, 4, 1, 0, 0, 1),
    "s112": (112, 4, 1, 0, 0, 1),
    "s132": (132, 4, 1, 0, 0, 1),
    "s112-bonly": (112, 4, 0, 0, 0, 1),
    "s112-ns6": (112, 6, 1, 0, 0, 1),
    "s112-pf8c2": (112, 4, 1, 0, 8, 2),
    "h56": (56, 4, 1, 512, 0, 1),
    "h112": (112, 4, 1, 512, 0, 1),
    "h112-ns6": (112, 6, 1, 512, 0, 1),
    "h112-pf8c2": (112, 4, 1, 512, 8, 2),
    "h112-pf16c4": (112, 4, 1, 512, 16, 4),
    "h132": (132, 4, 1, 512, 0, 1),
}
# name -> ("loop", CTAs, STORE_PART, NUM_STAGES, SCALE_AHEAD): the stream-K CTA's K loops without the fix-up
# (_gemm_loop_kernel); ("full", WAIT2): the library's GEMM (committed entry), for the fix-up's share by difference
GEMM_VARIANTS = {
    "L56": ("loop", 56, False, 4, 1),
    "L112": ("loop", 112, False, 4, 1),
    "L112+part": ("loop", 112, True, 4, 1),
    "L112-ns6": ("loop", 112, False, 6, 1),
    "L112-sa0": ("loop", 112, False, 4, 0),
    "L132": ("loop", 132, False, 4, 1),
    "full": ("full", False),
    "full-wait2": ("full", True),
}


@gluon.jit
def _prefetch_rows_l2(b_ptr, row0, N, stride_bn, K, kb0, kb_end, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                      PF_CHUNK: gl.constexpr):
    # the PF_AHEAD knob of fp8_gemm_ws_sk at ee07cbd (removed after W1, where it lost 1.6-5.5x): L2 bulk prefetch
    # (cp.async.bulk.prefetch, one per row: 128 TMA-unit operations per K block) of K blocks
    # [kb0, min(kb0 + PF_CHUNK, kb_end)) of rows [row0, row0 + BLOCK_N)
    lanes: gl.constexpr = gl.BlockedLayout([BLOCK_N // 32], [32], [1], [0])
    rows = gl.minimum(row0 + gl.arange(0, BLOCK_N, layout=lanes), N - 1)
    lo = kb0 * BLOCK_K
    nbytes = gl.minimum(gl.minimum(kb0 + PF_CHUNK, kb_end) * BLOCK_K, K) - lo
    if nbytes > 0:
        ptrs = b_ptr + rows.to(gl.int64) * stride_bn + lo
        gl.inline_asm_elementwise("cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0;", "=r,l,r",
                                  [ptrs, gl.full([BLOCK_N], 0, gl.int32, lanes) + nbytes], dtype=gl.int32,
                                  is_pure=False, pack=1)


@gluon.jit
def _clock():
    return gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)


@gluon.jit
def _consumer(ready, empty, stamps_ptr, num_programs, total, HOLD: gl.constexpr, NUM_STAGES: gl.constexpr):
    # wait for each of this CTA's stages and release it; HOLD > 0: a block "runs" HOLD cycles from max(its arrival,
    # the previous block's end), its stage released at its end (one block at a time, as the tensor core)
    pid = gl.program_id(0)
    start = (pid.to(gl.int64) * total // num_programs).to(gl.int32)
    end = ((pid + 1).to(gl.int64) * total // num_programs).to(gl.int32)
    t0 = _clock()
    busy = t0
    for it in range(end - start):
        s = it % NUM_STAGES
        mbarrier.wait(ready.index(s), (it // NUM_STAGES) & 1)
        if HOLD > 0:
            busy = gl.maximum(_clock(), busy) + HOLD
            while _clock() < busy:
                pass
        mbarrier.arrive(empty.index(s))
    t1 = _clock()
    gl.store(stamps_ptr + pid * 2, t0)
    gl.store(stamps_ptr + pid * 2 + 1, t1)


@gluon.jit
def _producer(a_desc, b_desc, a_bufs, b_bufs, ready, empty, b_ptr, num_programs, total, num_k_blocks,
              LOAD_A: gl.constexpr, NUM_STAGES: gl.constexpr, PF_AHEAD: gl.constexpr, PF_CHUNK: gl.constexpr):
    # fp8_gemm_ws_sk._sk_producer's loop for M = 128 (one row of tiles, tile t = column tile t)
    pid = gl.program_id(0)
    start = (pid.to(gl.int64) * total // num_programs).to(gl.int32)
    end = ((pid + 1).to(gl.int64) * total // num_programs).to(gl.int32)
    stage_bytes: gl.constexpr = a_desc.block_type.nbytes * LOAD_A + b_desc.block_type.nbytes
    it = 0
    for t in range(start // num_k_blocks, (end + num_k_blocks - 1) // num_k_blocks):
        k_lo = gl.maximum(start - t * num_k_blocks, 0)
        k_hi = gl.minimum(end - t * num_k_blocks, num_k_blocks)
        if PF_AHEAD > 0:
            for kp in range(k_lo, gl.minimum(k_lo + PF_AHEAD, k_hi), PF_CHUNK):
                _prefetch_rows_l2(b_ptr, t * 128, 7168, 16384, 16384, kp, k_hi, 128, 128, PF_CHUNK)
        for kb in range(k_lo, k_hi):
            s = it % NUM_STAGES
            mbarrier.wait(empty.index(s), ((it // NUM_STAGES) & 1) ^ 1)
            bar = ready.index(s)
            mbarrier.expect(bar, stage_bytes)
            if LOAD_A:
                tma.async_copy_global_to_shared(a_desc, [0, kb * 128], bar, a_bufs.index(s))
            tma.async_copy_global_to_shared(b_desc, [t * 128, kb * 128], bar, b_bufs.index(s))
            if PF_AHEAD > 0:
                if (kb - k_lo) % PF_CHUNK == 0:
                    _prefetch_rows_l2(b_ptr, t * 128, 7168, 16384, 16384, kb + PF_AHEAD, k_hi, 128, 128, PF_CHUNK)
            it += 1


@gluon.jit
def _ring(a_desc, b_desc, NUM_STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
    # the TMA ring of both probe kernels: NUM_STAGES A and B tiles (the descriptors' boxes and layouts), a ready
    # barrier per stage (one arrival: the producer's expect) and an empty one (CONSUMERS arrivals: each consumer
    # partition releases the stage)
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [NUM_STAGES] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES] + b_desc.block_type.shape, b_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=CONSUMERS)
    return a_bufs, b_bufs, ready, empty


@gluon.jit
def _stream_kernel(a_desc, b_desc, b_ptr, stamps_ptr, num_programs, total, num_k_blocks, LOAD_A: gl.constexpr,
                   NUM_STAGES: gl.constexpr, HOLD: gl.constexpr, PF_AHEAD: gl.constexpr, PF_CHUNK: gl.constexpr,
                   num_warps: gl.constexpr):
    # a_desc: a [128, K] e4m3, box [128, 128]; b_desc: b [N, K] e4m3, box [128, 128]; b_ptr: b (prefetches);
    # stamps: int64 [num_programs, 2] consumer clock64 at loop entry / exit
    a_bufs, b_bufs, ready, empty = _ring(a_desc, b_desc, NUM_STAGES, 1)
    gl.warp_specialize([
        (_consumer, (ready, empty, stamps_ptr, num_programs, total, HOLD, NUM_STAGES)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, b_ptr, num_programs, total, num_k_blocks, LOAD_A,
                     NUM_STAGES, PF_AHEAD, PF_CHUNK)),
    ], [1], [48])


@gluon.jit
def _gemm_consumer(a_bufs, b_bufs, ready, empty, a_scale_ptr, b_scale_ptr, ws_ptr, sink_ptr, stamps_ptr, num_programs,
                   total, num_k_blocks, ROW0: gl.constexpr, NUM_STAGES: gl.constexpr, STORE_PART: gl.constexpr,
                   SCALE_AHEAD: gl.constexpr):
    # the stream-K kernel's consumer warpgroup without its fix-up: fp8_gemm_ws_loop._tile_k_loop (PIPE0 + SCALE_AHEAD,
    # the committed entry's loop) over this CTA's segments on the real operands and scales (a_scale [128, KB] with
    # strides (1, 128), b_scale [56, KB] row-major); then STORE_PART: the fp32 partial stored as the fix-up's first
    # step does (blocked layout, 16-byte stores; no arrival, no merge), else only a sum (keeps the products live)
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 32])
    rows: gl.constexpr = gl.SliceLayout(1, mma)
    zero = gl.zeros([64, 128], gl.float32, mma)
    zero_rows = gl.zeros([64], gl.float32, rows)
    pid = gl.program_id(0)
    start = (pid.to(gl.int64) * total // num_programs).to(gl.int32)
    end = ((pid + 1).to(gl.int64) * total // num_programs).to(gl.int32)
    t0 = _clock()
    it = 0
    sink = gl.zeros([64], gl.float32, rows)
    for t in range(start // num_k_blocks, (end + num_k_blocks - 1) // num_k_blocks):
        k_lo = gl.maximum(start - t * num_k_blocks, 0)
        k_hi = gl.minimum(end - t * num_k_blocks, num_k_blocks)
        rm = ROW0 + gl.arange(0, 64, layout=rows)
        sa_ptrs = a_scale_ptr + rm + k_lo * 128
        sb_ptr = b_scale_ptr + t * num_k_blocks + k_lo
        acc, it = _tile_k_loop(it, k_hi - k_lo, zero, zero_rows, a_bufs, b_bufs, ready, empty, sa_ptrs, rm < 128,
                               sb_ptr, 128, 1, ROW0, 64, 128, NUM_STAGES, True, True, False, True, SCALE_AHEAD)
        if STORE_PART:
            part_layout: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [4, 1], [1, 0])
            part = gl.convert_layout(acc, part_layout)
            lr = ROW0 + gl.arange(0, 64, layout=gl.SliceLayout(1, part_layout))
            piece = gl.expand_dims(lr * 128, 1) + gl.expand_dims(gl.arange(0, 128, layout=gl.SliceLayout(0, part_layout)), 0)
            slot = pid * 2 + (t != start // num_k_blocks).to(gl.int32)
            gl.store(ws_ptr + slot.to(gl.int64) * (128 * 128) + piece, part)
        else:
            sink += gl.sum(acc, 1)
    t1 = _clock()
    gl.store(stamps_ptr + pid * 4 + ROW0 // 32, t0)
    gl.store(stamps_ptr + pid * 4 + ROW0 // 32 + 1, t1)
    if not STORE_PART:
        gl.store(sink_ptr + pid * 128 + ROW0 + gl.arange(0, 64, layout=rows), sink)


@gluon.jit
def _gemm_loop_kernel(a_desc, b_desc, a_scale_ptr, b_scale_ptr, ws_ptr, sink_ptr, stamps_ptr, num_programs, total,
                      num_k_blocks, NUM_STAGES: gl.constexpr, STORE_PART: gl.constexpr, SCALE_AHEAD: gl.constexpr,
                      num_warps: gl.constexpr):
    # fp8_gemm_ws_sk's CTA (two consumer warpgroups, one producer warp, 232 / 48 registers) at M = 128 without the
    # fix-up: the K loops' time with the real wgmmas, scales and ring. stamps: int64 [num_programs, 4] (per warpgroup
    # clock64 at loop entry / exit); sink: fp32 [num_programs, 128]; ws: fp32 [2 · num_programs, 128, 128]
    a_bufs, b_bufs, ready, empty = _ring(a_desc, b_desc, NUM_STAGES, 2)
    gl.warp_specialize([
        (_gemm_consumer, (a_bufs, b_bufs, ready, empty, a_scale_ptr, b_scale_ptr, ws_ptr, sink_ptr, stamps_ptr,
                          num_programs, total, num_k_blocks, 0, NUM_STAGES, STORE_PART, SCALE_AHEAD)),
        (_gemm_consumer, (a_bufs, b_bufs, ready, empty, a_scale_ptr, b_scale_ptr, ws_ptr, sink_ptr, stamps_ptr,
                          num_programs, total, num_k_blocks, 64, NUM_STAGES, STORE_PART, SCALE_AHEAD)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, a_scale_ptr, num_programs, total, num_k_blocks, 1,
                     NUM_STAGES, 0, 1)),
    ], [4, 1], [232, 48])


def launch_gemm_loop(a, a_s, b, b_s, ws, sink, stamps, ctas, store_part, stages, scale_ahead):
    lay = _smem_layout([BLOCK, BLOCK], gl.float8e4nv)
    a_desc = TensorDescriptor(a, [M, K], [K, 1], [BLOCK, BLOCK], lay)
    b_desc = TensorDescriptor(b, [N, K], [K, 1], [BLOCK, BLOCK], lay)
    kb = K // BLOCK
    _gemm_loop_kernel[(ctas,)](a_desc, b_desc, a_s, b_s, ws, sink, stamps, ctas, (N // BLOCK) * kb, kb,
                               NUM_STAGES=stages, STORE_PART=store_part, SCALE_AHEAD=scale_ahead, num_warps=4,
                               maxnreg=_MAXNREG)


def launch(a, b, stamps, ctas, stages, load_a, hold, pf_ahead, pf_chunk):
    lay = _smem_layout([BLOCK, BLOCK], gl.float8e4nv)
    a_desc = TensorDescriptor(a, [M, K], [K, 1], [BLOCK, BLOCK], lay)
    b_desc = TensorDescriptor(b, [N, K], [K, 1], [BLOCK, BLOCK], lay)
    kb = K // BLOCK
    _stream_kernel[(ctas,)](a_desc, b_desc, b, stamps, ctas, (N // BLOCK) * kb, kb, LOAD_A=load_a,
                            NUM_STAGES=stages, HOLD=hold, PF_AHEAD=pf_ahead, PF_CHUNK=pf_chunk, num_warps=4)


def _full_gemm(wait2: bool):
    """The library's GEMM at the committed 128×7168×16384 entry (fix-up included), WAIT2 on or off."""
    from tritonseek.kernels import fp8_gemm as G

    cfg = dict(G.get_config(M, N, K, G._num_sms(0)))
    cfg["GLUON"] = dict(cfg["GLUON"], WAIT2=wait2)
    return lambda a, a_s, b, b_s, out: G.fp8_gemm_nt(a, a_s, b, b_s, out=out, config=cfg)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=positive_int, default=20)
    p.add_argument("--variants", default=",".join(list(VARIANTS) + list(GEMM_VARIANTS)))
    p.add_argument("--rows", default="", type=out_file, help="append one JSON row per variant")
    args = p.parse_args()
    require_cuda("probe_fp8_gemm_stream")
    from benchmarks.bench_grouped_ws import _interleaved_gpu_us
    from benchmarks.fp8_gemm_timing import calc_diff
    from tritonseek.kernels.reference.fp8 import fp8_gemm_nt_ref

    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS and v not in GEMM_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS) + list(GEMM_VARIANTS)}")
    dev = torch.device("cuda")
    kb = K // BLOCK
    # two rotated B sets (2 × 117 MB > the 50 MB L2) with random bytes (no zeros), one A; positive random scales,
    # a_scale outer-dim-major (strides (1, M)) as the suite passes it
    a = (torch.randn(M, K, device=dev) * 0.5).to(torch.float8_e4m3fn)
    a_s = (torch.rand(kb, M, device=dev) + 0.5).t()
    bs = [(torch.randn(N, K, device=dev) * 0.5).to(torch.float8_e4m3fn) for _ in range(2)]
    b_ss = [torch.rand(N // BLOCK, kb, device=dev) + 0.5 for _ in range(2)]
    outs = [torch.empty(M, N, dtype=torch.bfloat16, device=dev) for _ in range(2)]
    stamps, sides, ws, sink = {}, {}, {}, {}
    for v in names:
        if v in VARIANTS:
            stamps[v] = torch.zeros(VARIANTS[v][0], 2, dtype=torch.int64, device=dev)
            sides[v] = lambda v=v: [launch(a, b, stamps[v], *VARIANTS[v]) for b in bs]
        elif GEMM_VARIANTS[v][0] == "loop":
            ctas, store, stages, sa = GEMM_VARIANTS[v][1:]
            stamps[v] = torch.zeros(ctas, 4, dtype=torch.int64, device=dev)
            ws[v] = torch.zeros(2 * ctas, 128, 128, dtype=torch.float32, device=dev)
            sink[v] = torch.zeros(ctas, 128, dtype=torch.float32, device=dev)
            sides[v] = lambda v=v, c=ctas, st=store, ns=stages, sa=sa: [
                launch_gemm_loop(a, a_s, b, b_s, ws[v], sink[v], stamps[v], c, st, ns, sa) for b, b_s in zip(bs, b_ss)]
        else:
            f = _full_gemm(GEMM_VARIANTS[v][1])
            sides[v] = lambda f=f: [f(a, a_s, b, b_s, o) for b, b_s, o in zip(bs, b_ss, outs)]
    ref = None
    for v in names:  # compile + one checked run each (a hang or fault here names the variant)
        if v in ws and GEMM_VARIANTS[v][2]:
            ws[v].fill_(float("nan"))
        for o in outs:
            o.fill_(float("nan"))
        sides[v]()
        torch.cuda.synchronize()
        note = ""
        if v in stamps:
            st = stamps[v]
            assert bool((st[:, 1] > st[:, 0]).all()), f"{v}: a CTA did not run its loop"
        if v in GEMM_VARIANTS:
            if ref is None:
                ref = fp8_gemm_nt_ref(a, a_s, bs[-1], b_ss[-1], out_dtype=torch.float32)
            if GEMM_VARIANTS[v][0] == "full":
                note = f"calc_diff {calc_diff(outs[-1].float(), ref):.2e}"
                assert not torch.isnan(outs[-1]).any() and calc_diff(outs[-1].float(), ref) < 1e-3, v
            elif GEMM_VARIANTS[v][2] and GEMM_VARIANTS[v][1] == 112:
                # 112 CTAs: CTA 2t holds tile t's first K half, CTA 2t+1 its second, each in its slot 0
                tiles = (ws[v][0::4] + ws[v][2::4]).permute(1, 0, 2).reshape(M, N)
                note = f"partials calc_diff {calc_diff(tiles, ref):.2e}"
                assert calc_diff(tiles, ref) < 1e-3, v
        print(f"  {v}: compiled and ran {note}", flush=True)
    res = _interleaved_gpu_us(sides, args.rounds, 100_000)
    commit = git_commit()
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__, commit=commit,
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    b_bytes = N * K
    print(f"{'variant':>14} {'CTAs':>4} {'st':>2} {'A':>1} {'hold':>4} {'pf':>5} {'us':>8} {'B TB/s':>7} "
          f"{'all TB/s':>8} {'cyc/blk':>7}")
    for v in names:
        if v in VARIANTS:
            ctas, stages, load_a, hold, pfa, pfc = VARIANTS[v]
        else:
            loop = GEMM_VARIANTS[v][0] == "loop"
            ctas, stages, load_a, hold, pfa, pfc = (GEMM_VARIANTS[v][1] if loop else 112,
                                                    GEMM_VARIANTS[v][3] if loop else 4, 1, -1, 0, 1)
        us = statistics.median(t / len(bs) for t in res[v])
        moved = b_bytes * (2 if load_a else 1)  # A boxes: as many bytes as B (every tile reads all of A)
        cyc = float("nan")
        if v in stamps:  # consumer cycles per K block (last launch's stamps, median over CTAs and warpgroups)
            st = stamps[v].cpu().view(ctas, -1, 2)
            iters = (N // BLOCK) * kb / ctas
            cyc = statistics.median(((st[:, :, 1] - st[:, :, 0]).double() / iters).flatten().tolist())
        row = dict(suite="fp8_gemm_stream_probe", case=dict(M=M, N=N, K=K), variant=v, ctas=ctas, stages=stages,
                   load_a=bool(load_a), hold_cycles=hold, pf_ahead=pfa, pf_chunk=pfc,
                   kind=GEMM_VARIANTS[v][0] if v in GEMM_VARIANTS else "loads", us=round(us, 2),
                   b_tbps=round(b_bytes / us / 1e6, 3), all_tbps=round(moved / us / 1e6, 3),
                   cycles_per_block=round(cyc, 1), p10_us=round(sorted(res[v])[len(res[v]) // 10] / len(bs), 2),
                   p90_us=round(sorted(res[v])[len(res[v]) * 9 // 10] / len(bs), 2), rounds=args.rounds,
                   timing="gpu_clock_interleaved", **env)
        print(f"{v:>14} {ctas:>4} {stages:>2} {load_a:>1} {hold:>4} {f'{pfa}/{pfc}':>5} {us:8.2f} "
              f"{row['b_tbps']:7.3f} {row['all_tbps']:8.3f} {cyc:7.1f}", flush=True)
        if args.rows:
            with open(args.rows, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
