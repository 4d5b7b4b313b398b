"""Diagnostic probe (not a benchmark suite, no rows): raw FP8 wgmma throughput on Hopper without TMA.

    PYTHONPATH=. python benchmarks/probe_wgmma_fp8.py [--compile-only | --jobs N]   (N: parallel compiles first)

One persistent CTA per SM; WGS consumer warpgroups (warp_specialize partitions with the register split of
kernels/fp8_gemm_ws.py, an idle 1-warp partition standing in for its TMA producer) each loop over ITERS "K blocks"
of 4 wgmma m64nNk32 (e4m3, A [64, 128] and B [N, 128] resident in shared memory, filled once from random global
bytes). TFLOP/s = 2·64·N·128·ITERS·WGS·grid / t. Modes (per warpgroup; "promote" = acc += product · scale, the fp32
promotion once per 128-wide K block; odd blocks read a second B tile so identical wgmmas are not merged by CSE):
  0 chain: accumulate in the tensor core (use_acc), one wait per block (the ceiling without promotion);
  1 serial: fresh product (use_acc=False), wait(0), promote (one product set; WGS = 3 kernels);
  2 UNROLL2 (fp8_gemm_ws before session 15): issue block i, promote block i-1 under it, wait(0) for i;
  3 pipelined across the loop back-edge: issue i+1, wait(1) for i, promote i (ptxas serializes every wgmma, C7514);
  4 two blocks per iteration: issue i, issue i+1, wait(1), promote i, wait(0), promote i+1;
  6 PIPE (fp8_gemm_ws PIPE): two per iteration, i issued, the finished i-1 promoted under it, i+1 issued, wait(1),
    promote i under i+1, wait(0): only finished products cross the back-edge;
  7 mode 6 with four blocks per iteration (ptxas spills at n128).

H200, session 14 (run from gpu_jobs/ at tree d9c0efd, this code; one run, do_bench median):
    N    WGS  mode 0 (chain)   mode 1 (product + promotion)
    64   2    1705             1511
    128  2    1736             1385
    256  2    1746             -      (product + accumulator would need 256 registers)
    64   3    1713             1615
    128  3    1744             1452
So the wgmma shape does not limit the raw rate (n64 ≈ n128 ≈ n256), the wait-and-promote pattern alone caps a
warpgroup pair at ~1385-1450 with no memory traffic, and the GEMMs' ~1100 TFLOP/s (TMA ring, epilogue) lose about
as much again. Levers: fewer waits per promotion (two products in flight) and the memory side.

H200, session 15 (h4gemm W1, code 83320e7, one run, 1980 MHz; TFLOP/s):
    N    WGS  0 chain  1 serial  2 UNROLL2  3 across back-edge  4 two/iter  6 PIPE  7 PIPE×4
    128  2    1715     1309      1526       1338 (serialized)   1601        1590    1119 (spills)
    128  3    1706     1358      -          -                   -           -       -
    64   3    1668     1580      1463       -                   -           1509    1342
Two products in flight (modes 4/6) take a warpgroup pair from 1309 (serial) / 1526 (UNROLL2) to ~1600, 93% of the
chain; a product in flight across the back-edge costs what it saves (ptxas serializes, C7514). With three
warpgroups the serial n64 loop is already at 1580 (the third warpgroup fills the gaps), so PIPE there buys nothing
in the probe; in the GEMM the 192×64 tiles lose to their extra B traffic (fp8_gemm_ws).
"""

import argparse
import os
import sys
import time

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait


@gluon.jit
def _wg(a_ptr, b_ptr, s_ptr, out_ptr, iters, ROW0: gl.constexpr, N: gl.constexpr, MODE: gl.constexpr):
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N, 32])
    ld: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [4, 1], [1, 0])
    la: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, 128], gl.float8e4nv)
    lb: gl.constexpr = gl.NVMMASharedLayout.get_default_for([N, 128], gl.float8e4nv)
    r = gl.arange(0, 64, layout=gl.SliceLayout(1, ld))
    rb = gl.arange(0, N, layout=gl.SliceLayout(1, ld))
    c = gl.arange(0, 128, layout=gl.SliceLayout(0, ld))
    a = gl.load(a_ptr + (ROW0 + gl.expand_dims(r, 1)) * 128 + gl.expand_dims(c, 0))
    b = gl.load(b_ptr + gl.expand_dims(rb, 1) * 128 + gl.expand_dims(c, 0))
    a_s = gl.allocate_shared_memory(gl.float8e4nv, [64, 128], la, a)
    b_s = gl.allocate_shared_memory(gl.float8e4nv, [N, 128], lb, b)
    # a second B tile for the odd products: identical wgmmas with no side effect between them get merged (CSE)
    b_s2 = gl.allocate_shared_memory(gl.float8e4nv, [N, 128], lb, b)
    fence_async_shared()
    zero = gl.zeros([64, N], gl.float32, mma)
    acc = zero
    sc = gl.load(s_ptr + gl.arange(0, 64, layout=gl.SliceLayout(1, mma)))
    sc2 = gl.expand_dims(sc, 1)
    if MODE == 0:  # chain: accumulate in the tensor core, one wait per block
        for i in range(iters):
            acc = warpgroup_mma(a_s, b_s.permute((1, 0)), acc, use_acc=True, is_async=True)
            acc = warpgroup_mma_wait(0, deps=[acc])
    elif MODE == 1:  # serial: fresh product, wait, promote
        for i in range(iters):
            p = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
            p = warpgroup_mma_wait(0, deps=[p])
            acc += p * sc2
    elif MODE == 2:  # UNROLL2 of fp8_gemm_ws: issue block i, promote block i-1 under it, wait(0) for i
        p0 = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
        p0 = warpgroup_mma_wait(0, deps=[p0])
        for i in range(iters // 2):
            p1 = warpgroup_mma(a_s, b_s2.permute((1, 0)), zero, use_acc=False, is_async=True)
            acc += p0 * sc2
            p1 = warpgroup_mma_wait(0, deps=[p1])
            p0 = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
            acc += p1 * sc2
            p0 = warpgroup_mma_wait(0, deps=[p0])
        acc += p0 * sc2
    elif MODE == 3:  # pipelined across the back-edge: issue i+1, wait(1) for i, promote i (i+1 in flight)
        p0 = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
        for i in range(iters // 2):
            p1 = warpgroup_mma(a_s, b_s2.permute((1, 0)), zero, use_acc=False, is_async=True)
            p0 = warpgroup_mma_wait(1, deps=[p0])
            acc += p0 * sc2
            p0 = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
            p1 = warpgroup_mma_wait(1, deps=[p1])
            acc += p1 * sc2
        p0 = warpgroup_mma_wait(0, deps=[p0])
        acc += p0 * sc2
    elif MODE == 4:  # pipelined inside an iteration, 2 blocks: nothing in flight at the back-edge
        for i in range(iters // 2):
            p0 = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
            p1 = warpgroup_mma(a_s, b_s2.permute((1, 0)), zero, use_acc=False, is_async=True)
            p0 = warpgroup_mma_wait(1, deps=[p0])
            acc += p0 * sc2
            p1 = warpgroup_mma_wait(0, deps=[p1])
            acc += p1 * sc2
    elif MODE == 6:  # 2 blocks per iteration, two in flight, the last product waited but promoted under the
        # next iteration's first wgmma (only finished products cross the back-edge)
        p1 = warpgroup_mma_wait(0, deps=[warpgroup_mma(a_s, b_s2.permute((1, 0)), zero, use_acc=False,
                                                       is_async=True)])
        for i in range(iters // 2):
            acc, p1 = _pair(acc, p1, a_s, b_s, b_s2, zero, sc2, False)
            p1 = warpgroup_mma_wait(0, deps=[p1])
        acc += p1 * sc2
    else:  # MODE 7: MODE 6 with 4 blocks per iteration
        p1 = warpgroup_mma_wait(0, deps=[warpgroup_mma(a_s, b_s2.permute((1, 0)), zero, use_acc=False,
                                                       is_async=True)])
        for i in range(iters // 4):
            acc, p1 = _pair(acc, p1, a_s, b_s, b_s2, zero, sc2, False)
            acc, p1 = _pair(acc, p1, a_s, b_s, b_s2, zero, sc2, True)
            p1 = warpgroup_mma_wait(0, deps=[p1])
        acc += p1 * sc2
    tot = gl.sum(gl.sum(acc, 1), 0)
    gl.atomic_add(out_ptr, tot)


@gluon.jit
def _pair(acc, p1, a_s, b_s, b_s2, zero, sc2, P1_IN_FLIGHT: gl.constexpr):
    # modes 6/7: issue p0, promote p1 (waiting for it first when it is still in flight), issue the next p1, wait for
    # p0 and promote it; returns the new p1 in flight
    p0 = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
    if P1_IN_FLIGHT:
        p1 = warpgroup_mma_wait(1, deps=[p1])
    acc += p1 * sc2
    p1 = warpgroup_mma(a_s, b_s2.permute((1, 0)), zero, use_acc=False, is_async=True)
    p0 = warpgroup_mma_wait(1, deps=[p0])
    acc += p0 * sc2
    return acc, p1


@gluon.jit
def _idle(out_ptr):
    # stands in for the kernels' TMA producer warp, so the register split (setmaxnreg) matches fp8_gemm_ws
    pass


@gluon.jit(do_not_specialize=["iters"])
def _probe_kernel(a_ptr, b_ptr, s_ptr, out_ptr, iters, N: gl.constexpr, WGS: gl.constexpr, MODE: gl.constexpr,
                  num_warps: gl.constexpr):
    if WGS == 3:
        gl.warp_specialize([(_wg, (a_ptr, b_ptr, s_ptr, out_ptr, iters, 0, N, MODE)),
                            (_wg, (a_ptr, b_ptr, s_ptr, out_ptr, iters, 64, N, MODE)),
                            (_wg, (a_ptr, b_ptr, s_ptr, out_ptr, iters, 128, N, MODE)),
                            (_idle, (out_ptr,))], [4, 4, 1], [160, 160, 24])
    else:
        gl.warp_specialize([(_wg, (a_ptr, b_ptr, s_ptr, out_ptr, iters, 0, N, MODE)),
                            (_wg, (a_ptr, b_ptr, s_ptr, out_ptr, iters, 64, N, MODE)),
                            (_idle, (out_ptr,))], [4, 1], [232, 40])


# (N, WGS, MODE). Modes 2-7 hold two product sets (64 + 2·64 registers per thread at n128): with three warpgroups
# (160 registers each) only n64 fits. Session 14 measured modes 0/1 at n64/n128/n256 (docstring); n64 with three
# warpgroups stands for 192-row tiles whose 128 columns are issued as two n64 halves.
CASES = [(128, 2, m) for m in (0, 1, 2, 3, 4, 6, 7)] + [(128, 3, 0), (128, 3, 1)] + [(64, 3, m) for m in (0, 1, 2, 6, 7)]


def compile_only():
    """Compile every case for sm_90a (no GPU): wgmma count, and ptxas registers / spills / serialization."""
    import os
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    for n, w, m in CASES:
        sig = dict(a_ptr="*fp8e4nv", b_ptr="*fp8e4nv", s_ptr="*fp32", out_ptr="*fp32", iters="i32",
                   N="constexpr", WGS="constexpr", MODE="constexpr", num_warps="constexpr")
        k = triton.compile(GluonASTSource(_probe_kernel, sig, dict(N=n, WGS=w, MODE=m, num_warps=4)),
                           target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=168 if w == 2 else 128))
        ptx = k.asm["ptx"]
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "k.ptx"), "w") as f:
                f.write(ptx)
            r = subprocess.run([ptxas, "--gpu-name", "sm_90a", "-v", os.path.join(d, "k.ptx"), "-o",
                                os.path.join(d, "k.cubin")], capture_output=True, text=True)
        spills = re.findall(r"(\d+) bytes spill stores", r.stderr)
        print(f"N={n} WGS={w} MODE={m}: wgmma {ptx.count('wgmma.mma_async')}, spill stores {spills}, "
              f"serialized {'C7514' in r.stderr or 'C7515' in r.stderr}", flush=True)


def _warm(case):
    # child process: compile one case into Triton's disk cache (no launch), so the timed loop only loads it
    n, w, m = case
    dev = torch.device("cuda")
    a = torch.empty(256 * 128, dtype=torch.float8_e4m3fn, device=dev)
    s = torch.empty(64, device=dev)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    _probe_kernel.warmup(a, a, s, s, 10, N=n, WGS=w, MODE=m, num_warps=4, maxnreg=168 if w == 2 else 128,
                         grid=(sms,))
    return case


def precompile(jobs: int) -> None:
    import concurrent.futures as cf
    import multiprocessing as mp
    try:
        with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
            list(ex.map(_warm, CASES))
    except Exception as e:  # the timed loop compiles whatever is missing
        print(f"precompile failed ({type(e).__name__}: {str(e)[:200]}); compiling in the timed loop", flush=True)


def measure(jobs: int | None = None):
    """Time every case on the current GPU; ``jobs``: compile them first in that many processes (None: no).
    Exits 2 with one line when torch sees no CUDA GPU."""
    from tritonseek.benchrun import require_cuda

    require_cuda("probe_wgmma_fp8")
    if jobs is not None:
        t0 = time.time()
        precompile(jobs)
        print(f"precompiled {len(CASES)} cases in {time.time() - t0:.1f} s", flush=True)
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    g = torch.Generator(device=dev).manual_seed(0)
    bits = torch.randint(0, 256, (256 * 128 * 2,), dtype=torch.uint8, device=dev, generator=g)
    bits[(bits & 0x7F) == 0x7F] = 0x38
    a = bits[:192 * 128].view(torch.float8_e4m3fn)
    b = bits[192 * 128:192 * 128 + 256 * 128].view(torch.float8_e4m3fn)
    s = torch.rand(64, device=dev, generator=g) + 0.5
    out = torch.zeros(1, device=dev)
    iters = 2000  # a multiple of 4 (mode 7); modes 2, 3, 6, 7 run one block more than counted
    print("N  WGS mode   us      TFLOP/s   (mode 0: use_acc chain, 1: fresh product + fp32 promotion)")
    for n, w, m in CASES:
        kw = dict(N=n, WGS=w, MODE=m, num_warps=4, maxnreg=168 if w == 2 else 128)
        _probe_kernel[(sms,)](a, b, s, out, 10, **kw)
        torch.cuda.synchronize()
        ms = triton.testing.do_bench(lambda: _probe_kernel[(sms,)](a, b, s, out, iters, **kw), warmup=3, rep=40,
                                     return_mode="median")
        fl = 2 * 64 * n * 128 * iters * w * sms
        print(f"{n:<4} {w}   {m}   {ms * 1e3:9.1f} {fl / ms / 1e9:9.1f}", flush=True)


def main(argv=None):
    """Command line; ``argv`` None: sys.argv[1:]. Everything goes through argparse (session 18 also read sys.argv
    beside it, so "--compile", an abbreviation argparse accepts, ran the GPU loop, and "--jobs 0" reached the process
    pool). --help needs no GPU."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script: tritonseek
    from tritonseek.benchrun import positive_int

    ap = argparse.ArgumentParser(prog="probe_wgmma_fp8.py", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--compile-only", action="store_true", help="compile every case for sm_90a (no GPU needed)")
    mode.add_argument("--jobs", type=positive_int, metavar="N", help="compile the cases in N parallel processes first")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.compile_only:
        compile_only()
    else:
        measure(args.jobs)
    print(f"done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
