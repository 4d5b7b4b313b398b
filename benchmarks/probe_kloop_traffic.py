"""Diagnostic probe (no rows): what limits the grouped / dense FP8 GEMMs' 128×128 K loop — shared-memory bandwidth,
L2 → SM traffic, the stage barriers, or the scale loads (issue 5; h3moe session 20).

    PYTHONPATH=. python benchmarks/probe_kloop_traffic.py [--compile-only | --jobs N] [--iters 4000] [--out DIR]

One persistent CTA per SM runs the K loop of one 128×128 tile for ``iters`` 128-wide K blocks, in the layout of the
grouped kernel's SPLIT config: two consumer warpgroups (rows 0-63 / 64-127, 232 registers) and one producer warp
(40 registers) filling a 4-stage ring of A [128, 128] + B [128, 128] e4m3 stages (32 KB each). Each variant adds one
thing to the one before it, so the per-block cost of each thing is a difference of two rows:

* resident:   wgmma operands resident in shared memory (filled once), no producer, no barrier: the K loop alone
              (the PIPE schedule of fp8_gemm_ws_loop: two products in flight, fp32 promotion per block);
* sync:       + the ring's barrier handshake (producer: wait empty, arrive ready; consumers: wait ready, release),
              no bytes moved;
* tma-unread: + TMA fills every stage (32 KB per block from an L2-resident source: every program its own 128 rows of
              A and B, cycling over SRC_BLOCKS = 4 K blocks), the wgmmas still read the resident tiles;
* ring:       the wgmmas read the stages themselves (the GEMM's data flow, without scale loads or epilogue);
* ring+scales: + the GEMM's per-block a_scale (per row) and b_scale loads from global memory;
* ring+tma16: ring + 16 KB more TMA per block into a side buffer nobody reads (more L2 → SM and smem-write traffic);
* ring+lds16: ring + the producer warp reads 16 KB more of shared memory per block (smem traffic only, no L2);
* sync+lds16: sync + the same 16 KB of reads (shared-memory reads beside the wgmmas, without TMA);
* chain-*:    the same with the wgmmas accumulating in the tensor core (use_acc, one wait per block, no promotion);
* X/2, X/4:   variant X on half / a quarter of the SMs (aggregate or per-SM limit of the TMA fill rate).

H200 W1 (h3moe s20, tree 1230905; cycles per K block, mean of two passes; TFLOP/s of the whole grid): resident 512.2
(1.000 of the tensor-core ideal), sync 521.0, tma-unread 628.8, ring 653.3, ring+scales 679.3, ring+tma16 1042.8,
ring+lds16 656.0, sync+lds16 519.9; chain-resident 512.1, chain-ring 645.4, chain-ring+tma16 1092.3, chain-ring+lds16
637.1. So the PIPE loop and its promotion cost nothing with resident operands, the barrier handshake ~9 cycles, 16 KB
more of ld.shared per block nothing (the hypothesis that shared-memory bandwidth limits the loop is refuted), and the
TMA fill ~50 B per SM cycle whether or not the wgmmas read it (32 KB / 629-653 cycles, 48 KB / 1043): the 128×128
tile needs 32 KB per 512 tensor cycles (64 B/clk), so it runs at ~0.78 of the tensor core — the GEMM's measured
660 cycles per block. W2 (1e2fb3b) repeated these within 1-7 % (the ring+tma16 pair 1088-1091) and added the
fraction-of-grid variants: ring/2 611.8 and ring/4 611.8, tma-unread/2 524-526 (vs 637-652 on every SM), ring+tma16/2
764-815 (vs 1088-1091): the fill limit is an aggregate one (all SMs loading: ~50 B per SM cycle; 66 SMs: ~62), which
TMA multicast within a 2-CTA cluster would relieve (not expressible in Triton 3.6's Gluon: grouped_gemm_ws docstring);
128×256 tiles (fewer bytes per FLOP) lost there through their K loops.
W3 (65b201d), stage count: on half the SMs ring 2 / 3 / 4 stages 806 / 690 / 612 cycles, tma-unread/2 2 stages 806
(4: 531), chain-ring/2 512 (the chain holds one stage at a time, the PIPE loop two): there the loop waits on the TMA
latency the stages do not cover; on all SMs ring 2 / 3 / 4 stages 800-845 / 692 / 655-686, chain-ring 650-663 (the
aggregate fill limit first). (2 stages: ptxas spills 16 bytes.)

Per K block the tensor core needs 512 SM cycles (two warpgroups × four m64n128k32 at 64 cycles). Shared-memory
traffic per block of the ring variant: wgmma reads A 16 KB + B 2 × 16 KB, TMA writes 32 KB = 80 KB (160 B per tensor
cycle against the ~128 B/clk usually quoted per SM). If that bandwidth is the limit, +16 KB of smem traffic per
block costs ~+128 cycles whether it comes by TMA or by ld.shared; if the L2 → SM path is, only the TMA form costs.

Measured per variant: kernel time (do_bench median) → TFLOP/s, and SM cycles per K block from %clock64 stamps
around each consumer warpgroup's loop (median over programs; so clock throttling under the 700 W cap does not enter
the cycle figure), the implied SM clock, and its ratio to the 512-cycle ideal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics as st
import sys
import time

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait,
)

NUM_STAGES = 4
SRC_BLOCKS = 4  # K blocks of the TMA source each program cycles over (17 MB for A and B over 132 programs: L2)

# name -> (TRAFFIC 0 none / 1 handshake / 2 TMA, READ_RING, EXTRA_TMA, EXTRA_LDS, SCALES, CHAIN[, grid divisor[,
# stages]])
VARIANTS = {
    "resident": (0, 0, 0, 0, 0, 0),
    "sync": (1, 0, 0, 0, 0, 0),
    "tma-unread": (2, 0, 0, 0, 0, 0),
    "ring": (2, 1, 0, 0, 0, 0),
    "ring+scales": (2, 1, 0, 0, 1, 0),
    "ring+tma16": (2, 1, 1, 0, 0, 0),
    "ring+lds16": (2, 1, 0, 1, 0, 0),
    "sync+lds16": (1, 0, 0, 1, 0, 0),
    "chain-resident": (0, 0, 0, 0, 0, 1),
    "chain-ring": (2, 1, 0, 0, 0, 1),
    "chain-ring+tma16": (2, 1, 1, 0, 0, 1),
    "chain-ring+lds16": (2, 1, 0, 1, 0, 1),
    # the same loops on 1/2 and 1/4 of the SMs (grid = SMs // 2, // 4): if the TMA fill rate is an aggregate limit
    # (L2 output, crossbar), fewer loading SMs each get more of it and their cycles per block fall toward 512; if it
    # is a per-SM limit (the SM's L2 -> shared memory ingress), they stay where they are
    "ring/2": (2, 1, 0, 0, 0, 0, 2),
    "ring/4": (2, 1, 0, 0, 0, 0, 4),
    "tma-unread/2": (2, 0, 0, 0, 0, 0, 2),
    "ring+tma16/2": (2, 1, 1, 0, 0, 0, 2),
    # stage count (W3): does the K loop wait on the TMA's latency (fewer stages slower, more faster) — on all SMs and
    # on half of them (where the real ring took 612 cycles against 525 unread)
    "ring/2 ns2": (2, 1, 0, 0, 0, 0, 2, 2),
    "ring/2 ns3": (2, 1, 0, 0, 0, 0, 2, 3),
    "tma-unread/2 ns2": (2, 0, 0, 0, 0, 0, 2, 2),
    "chain-ring/2": (2, 1, 0, 0, 0, 1, 2),
    "ring ns2": (2, 1, 0, 0, 0, 0, 1, 2),
    "ring ns3": (2, 1, 0, 0, 0, 0, 1, 3),
}


@gluon.jit
def _clock():
    return gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)


@gluon.jit
def _ops(a_bufs, b_bufs, res_a, res_b, s, ROW0: gl.constexpr, READ_RING: gl.constexpr):
    # the wgmma operands of a block: stage s's rows of the ring, or resident tile pair s % 2 (indexed at run time
    # like the ring, so ptxas does not hoist fixed descriptors out of the loop: it spilled when it did)
    if READ_RING:
        return a_bufs.index(s).slice(ROW0, 64, dim=0), b_bufs.index(s).permute((1, 0))
    else:
        return res_a.index(s % 2).slice(ROW0, 64, dim=0), res_b.index(s % 2).permute((1, 0))


@gluon.jit
def _consumer(a_bufs, b_bufs, res_a, res_b, ready, empty, sa_ptr, sb_ptr, stamps_ptr, out_ptr, iters,
              ROW0: gl.constexpr, SYNC: gl.constexpr, READ_RING: gl.constexpr, SCALES: gl.constexpr,
              CHAIN: gl.constexpr, NS: gl.constexpr):
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 32])
    rows: gl.constexpr = gl.SliceLayout(1, mma)
    zero = gl.zeros([64, 128], gl.float32, mma)
    rm = ROW0 + gl.arange(0, 64, layout=rows)
    sa_ptrs = sa_ptr + rm * 64  # a_scale [128, 64] fp32 (row-major; block kb at column kb % 64)
    sc = gl.load(sa_ptrs)
    scale0 = sc
    acc = zero
    prod = zero
    it = 0
    t0 = _clock()
    if CHAIN:
        for i in range(iters):
            s = it % NS
            if SYNC:
                mbarrier.wait(ready.index(s), (it // NS) & 1)
            a_op, b_op = _ops(a_bufs, b_bufs, res_a, res_b, s, ROW0, READ_RING)
            acc = warpgroup_mma(a_op, b_op, acc, use_acc=True, is_async=True)
            acc = warpgroup_mma_wait(0, deps=[acc])
            if SYNC:
                mbarrier.arrive(empty.index(s))
            it += 1
    else:
        # fp8_gemm_ws_loop._k_loop's PIPE schedule: issue kb (promote the finished kb-1 under it), issue kb+1,
        # wait(1) for kb and promote it under kb+1, wait(0) for kb+1
        for j in range(iters // 2):
            s0 = it % NS
            s1 = (it + 1) % NS
            scale1 = sc
            if SCALES:
                kb = (2 * j) % 64
                scale1 = gl.load(sa_ptrs + kb) * gl.load(sb_ptr + kb)
            if SYNC:
                mbarrier.wait(ready.index(s0), (it // NS) & 1)
            a0, b0 = _ops(a_bufs, b_bufs, res_a, res_b, s0, ROW0, READ_RING)
            p1 = warpgroup_mma(a0, b0, zero, use_acc=False, is_async=True)
            acc += prod * gl.expand_dims(scale0, 1)
            if SCALES:
                kb1 = (2 * j + 1) % 64
                scale0 = gl.load(sa_ptrs + kb1) * gl.load(sb_ptr + kb1)
            if SYNC:
                mbarrier.wait(ready.index(s1), ((it + 1) // NS) & 1)
            a1, b1 = _ops(a_bufs, b_bufs, res_a, res_b, s1, ROW0, READ_RING)
            prod = warpgroup_mma(a1, b1, zero, use_acc=False, is_async=True)
            p1 = warpgroup_mma_wait(1, deps=[p1])
            if SYNC:
                mbarrier.arrive(empty.index(s0))
            acc += p1 * gl.expand_dims(scale1, 1)
            prod = warpgroup_mma_wait(0, deps=[prod])
            if SYNC:
                mbarrier.arrive(empty.index(s1))
            it += 2
        acc += prod * gl.expand_dims(scale0, 1)
    t1 = _clock()
    row = stamps_ptr + gl.program_id(0).to(gl.int64) * 4 + (ROW0 // 64) * 2
    gl.store(row, t0)
    gl.store(row + 1, t1)
    # keep the products live: one float per warpgroup
    gl.atomic_add(out_ptr, gl.sum(gl.sum(acc, 1), 0))


@gluon.jit
def _producer(a_desc, b_desc, a_bufs, b_bufs, x_buf, l_buf, ready, empty, out_ptr, iters, TRAFFIC: gl.constexpr,
              EXTRA_TMA: gl.constexpr, EXTRA_LDS: gl.constexpr, NS: gl.constexpr, SRC: gl.constexpr):
    # one warp: per block wait for the stage's release, then TMA its 32 KB (TRAFFIC 2; EXTRA_TMA: + 16 KB into x_buf)
    # or only arrive (TRAFFIC 1); EXTRA_LDS: then read 16 KB of l_buf (int32 [16, 128], twice) in 16 loads of 1 KB
    lds: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [1, 1], [1, 0])
    x = gl.zeros([2, 128], gl.int32, lds)
    row = gl.program_id(0) * 128
    nbytes: gl.constexpr = a_desc.block_type.nbytes * (2 + EXTRA_TMA)
    if TRAFFIC > 0:
        for i in range(iters):
            s = i % NS
            mbarrier.wait(empty.index(s), ((i // NS) & 1) ^ 1)
            bar = ready.index(s)
            if TRAFFIC == 2:
                kb = i % SRC
                mbarrier.expect(bar, nbytes)
                tma.async_copy_global_to_shared(a_desc, [row, kb * 128], bar, a_bufs.index(s))
                tma.async_copy_global_to_shared(b_desc, [row, kb * 128], bar, b_bufs.index(s))
                if EXTRA_TMA:
                    tma.async_copy_global_to_shared(a_desc, [row, ((i + 1) % SRC) * 128], bar, x_buf)
            else:
                mbarrier.arrive(bar)
            if EXTRA_LDS:
                for r in gl.static_range(16):
                    x = x ^ l_buf.slice(2 * (r % 8), 2, dim=0).load(lds)
    if EXTRA_LDS:
        gl.atomic_add(out_ptr + 1, gl.sum(gl.sum(x, 1), 0).to(gl.float32))


@gluon.jit(do_not_specialize=["iters"])
def _traffic_kernel(a_desc, b_desc, a_ptr, sa_ptr, sb_ptr, stamps_ptr, out_ptr, iters, TRAFFIC: gl.constexpr,
                    READ_RING: gl.constexpr, EXTRA_TMA: gl.constexpr, EXTRA_LDS: gl.constexpr, SCALES: gl.constexpr,
                    CHAIN: gl.constexpr, NS: gl.constexpr, SRC: gl.constexpr, num_warps: gl.constexpr):
    # a_desc / b_desc: [programs·128, SRC·128] e4m3, box [128, 128]; a_ptr: A's bytes (resident tiles' fill);
    # sa_ptr [128, 64] fp32, sb_ptr [64] fp32; stamps [programs, 4] int64; out [2] fp32 (sink)
    smem: gl.constexpr = a_desc.layout
    a_bufs = gl.allocate_shared_memory(gl.float8e4nv, [NS, 128, 128], smem)
    b_bufs = gl.allocate_shared_memory(gl.float8e4nv, [NS, 128, 128], smem)
    x_buf = gl.allocate_shared_memory(gl.float8e4nv, [128, 128], smem)
    l_buf = gl.allocate_shared_memory(gl.int32, [16, 128], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    ld: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [4, 1], [1, 0])
    r = gl.arange(0, 128, layout=gl.SliceLayout(1, ld))
    c = gl.arange(0, 128, layout=gl.SliceLayout(0, ld))
    offs = gl.expand_dims(r, 1) * (SRC * 128) + gl.expand_dims(c, 0)
    res_a = gl.allocate_shared_memory(gl.float8e4nv, [2, 128, 128], smem)
    res_b = gl.allocate_shared_memory(gl.float8e4nv, [2, 128, 128], smem)
    for i in gl.static_range(2):
        res_a.index(i).store(gl.load(a_ptr + i * 64 + offs))
        res_b.index(i).store(gl.load(a_ptr + 128 + i * 64 + offs))
    ready = gl.allocate_shared_memory(gl.int64, [NS, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NS, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NS):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    fence_async_shared()
    SYNC: gl.constexpr = TRAFFIC > 0
    gl.warp_specialize([
        (_consumer, (a_bufs, b_bufs, res_a, res_b, ready, empty, sa_ptr, sb_ptr, stamps_ptr, out_ptr, iters,
                     0, SYNC, READ_RING, SCALES, CHAIN, NS)),
        (_consumer, (a_bufs, b_bufs, res_a, res_b, ready, empty, sa_ptr, sb_ptr, stamps_ptr, out_ptr, iters,
                     64, SYNC, READ_RING, SCALES, CHAIN, NS)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, x_buf, l_buf, ready, empty, out_ptr, iters, TRAFFIC, EXTRA_TMA,
                     EXTRA_LDS, NS, SRC)),
    ], [4, 1], [232, 40])


def _flags(name: str) -> dict:
    v = VARIANTS[name]
    t, rr, xt, xl, sc, ch = v[:6]
    return dict(TRAFFIC=t, READ_RING=rr, EXTRA_TMA=xt, EXTRA_LDS=xl, SCALES=sc, CHAIN=ch,
                NS=v[7] if len(v) > 7 else NUM_STAGES,
                SRC=SRC_BLOCKS, num_warps=4)


def compile_variant(name: str):
    """The sm_90a build of one variant (triton.compile, no GPU); run it where TRITON_INTERPRET is unset."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    from tritonseek.kernels.fp8_gemm_ws import _smem_layout
    lay = _smem_layout([128, 128], gl.float8e4nv)
    desc_ty = f"tensordesc<fp8e4nv[128, 128],{lay!r}>"
    f = _flags(name)
    sig = dict(a_desc=desc_ty, b_desc=desc_ty, a_ptr="*fp8e4nv", sa_ptr="*fp32", sb_ptr="*fp32",
               stamps_ptr="*i64", out_ptr="*fp32", iters="i32", **{k: "constexpr" for k in f})
    return triton.compile(GluonASTSource(_traffic_kernel, sig, f), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4, maxnreg=168))


def build_report(name: str, ptx: str) -> dict:
    """wgmma / TMA-load counts of a variant's PTX and ptxas's spill / serialization report."""
    import re
    import subprocess
    import tempfile

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "k.ptx"), "w") as fh:
            fh.write(ptx)
        r = subprocess.run([ptxas, "--gpu-name", "sm_90a", "-v", os.path.join(d, "k.ptx"), "-o",
                            os.path.join(d, "k.cubin")], capture_output=True, text=True)
    return dict(name=name, wgmma=ptx.count("wgmma.mma_async"), tma=ptx.count("cp.async.bulk.tensor"),
                spills=re.findall(r"(\d+) bytes spill stores", r.stderr),
                serialized="C7514" in r.stderr or "C7515" in r.stderr, rc=r.returncode)


def compile_only(names=None) -> list[dict]:
    """Compile the variants (default all) for sm_90a (no GPU): prints and returns build_report of each."""
    found = []
    for name in names or VARIANTS:
        r = build_report(name, compile_variant(name).asm["ptx"])
        found.append(r)
        print(f"{name:18s} wgmma {r['wgmma']}  tma {r['tma']}  spill stores {r['spills']}  serialized "
              f"{r['serialized']}  rc {r['rc']}", flush=True)
    return found


class _Inputs:
    def __init__(self, dev, sms):
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        from tritonseek.kernels.fp8_gemm_ws import _smem_layout
        g = torch.Generator(device=dev).manual_seed(0)
        rows, cols = sms * 128, SRC_BLOCKS * 128

        def fp8(shape):
            bits = torch.randint(0, 256, shape, dtype=torch.uint8, device=dev, generator=g)
            bits[(bits & 0x7F) >= 0x78] = 0x38  # no NaN / huge values: the sums stay finite
            return bits.view(torch.float8_e4m3fn)
        self.a, self.b = fp8((rows, cols)), fp8((rows, cols))
        lay = _smem_layout([128, 128], gl.float8e4nv)
        self.a_desc = TensorDescriptor(self.a, [rows, cols], [cols, 1], [128, 128], lay)
        self.b_desc = TensorDescriptor(self.b, [rows, cols], [cols, 1], [128, 128], lay)
        self.sa = torch.rand(128, 64, device=dev, generator=g) + 0.5
        self.sb = torch.rand(64, device=dev, generator=g) + 0.5
        self.stamps = torch.zeros(sms, 4, dtype=torch.int64, device=dev)
        self.out = torch.zeros(2, device=dev)
        self.sms = sms

    def grid(self, name: str) -> int:
        v = VARIANTS[name]
        return self.sms // (v[6] if len(v) > 6 else 1)

    def launch(self, name: str, iters: int):
        _traffic_kernel[(self.grid(name),)](self.a_desc, self.b_desc, self.a, self.sa, self.sb, self.stamps, self.out, iters,
                                     maxnreg=168, **_flags(name))


def _warm(name):
    # child process: compile one variant into Triton's disk cache
    dev = torch.device("cuda")
    x = _Inputs(dev, torch.cuda.get_device_properties(0).multi_processor_count)
    x.launch(name, 4)
    torch.cuda.synchronize()
    return name


def measure(iters: int, jobs: int | None, out_dir: str | None, names: list[str] | None = None) -> list[dict]:
    """Time the variants (``names``, default all; do_bench median) and read their clock64 stamps; returns one dict per
    variant and pass."""
    names = list(names or VARIANTS)
    from tritonseek.benchrun import require_cuda

    require_cuda("probe_kloop_traffic")
    if jobs:
        import concurrent.futures as cf
        import multiprocessing as mp
        t0 = time.time()
        try:
            with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
                list(ex.map(_warm, names))
        except Exception as e:  # the loop below compiles whatever is missing
            print(f"precompile failed ({type(e).__name__}: {str(e)[:300]})", flush=True)
        print(f"precompiled {len(names)} variants in {time.time() - t0:.1f} s", flush=True)
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    x = _Inputs(dev, sms)
    rows = []
    import datetime

    from tritonseek.benchrun import git_commit
    env = dict(suite="kloop_traffic_probe", gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
               triton=triton.__version__, commit=git_commit(),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    print(f"{'variant':18s} {'us':>9s} {'TFLOP/s':>8s} {'cyc/blk':>8s} {'p10':>6s} {'p90':>6s} {'MHz':>6s} {'ideal/cyc':>9s}")
    for rnd in range(2):  # two passes in order and reversed: clock drift shows as a difference between them
        for name in (names if rnd == 0 else names[::-1]):
            try:
                x.launch(name, 8)
                torch.cuda.synchronize()
                ms = triton.testing.do_bench(lambda: x.launch(name, iters), warmup=5, rep=60, return_mode="median")
                x.stamps.zero_()
                x.launch(name, iters)
                torch.cuda.synchronize()
            except Exception as e:
                print(f"{name:18s} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            grid = x.grid(name)
            st_ = x.stamps[:grid].cpu()
            cyc = ((st_[:, 1] - st_[:, 0]).tolist() + (st_[:, 3] - st_[:, 2]).tolist())
            cyc = sorted(c / iters for c in cyc)
            med = st.median(cyc)
            tf = 2 * 128 * 128 * 128 * iters * grid / (ms * 1e-3) / 1e12
            mhz = med * iters / (ms * 1e3)  # cycles of one warpgroup's loop over the kernel time: a lower bound
            row = dict(variant=name, round=rnd, iters=iters, us=round(ms * 1e3, 2), tflops=round(tf, 1),
                       cycles_per_block=round(med, 1), p10=round(cyc[len(cyc) // 10], 1),
                       p90=round(cyc[9 * len(cyc) // 10], 1), mhz_est=round(mhz, 0), frac_ideal=round(512 / med, 3),
                       grid=grid, **env)
            rows.append(row)
            print(f"{name:18s} {row['us']:9.1f} {tf:8.1f} {med:8.1f} {row['p10']:6.1f} {row['p90']:6.1f} "
                  f"{mhz:6.0f} {512 / med:9.3f}", flush=True)
    if out_dir:
        with open(os.path.join(out_dir, "kloop_traffic.jsonl"), "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    # summary: mean of the two passes per variant
    print("\nsummary (mean of both passes): variant, cycles per K block, TFLOP/s")
    for name in names:
        rs = [r for r in rows if r["variant"] == name]
        if rs:
            print(f"  {name:18s} {st.mean(r['cycles_per_block'] for r in rs):7.1f}  "
                  f"{st.mean(r['tflops'] for r in rs):7.1f}")
    return rows


def main(argv=None):
    """Command line; --help and --compile-only need no GPU."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tritonseek.benchrun import positive_int

    ap = argparse.ArgumentParser(prog="probe_kloop_traffic.py", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--compile-only", action="store_true", help="compile every variant for sm_90a (no GPU needed)")
    mode.add_argument("--jobs", type=positive_int, metavar="N", help="compile the variants in N processes first")
    ap.add_argument("--iters", type=positive_int, default=4000, help="K blocks per program (even)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None, metavar="NAME",
                    help="time only these variants (default all; names in VARIANTS)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for kloop_traffic.jsonl")
    args = ap.parse_args(argv)
    if args.iters % 2:
        ap.error("--iters must be even")
    t0 = time.time()
    if args.compile_only:
        compile_only()
    else:
        measure(args.iters, args.jobs, args.out, args.variants)
    print(f"done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
