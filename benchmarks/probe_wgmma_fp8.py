"""Diagnostic probe (not a benchmark suite, no rows): raw FP8 wgmma throughput on Hopper without TMA.

    PYTHONPATH=. python benchmarks/probe_wgmma_fp8.py [--compile-only]

One persistent CTA per SM; WGS consumer warpgroups (warp_specialize partitions with the register split of
kernels/fp8_gemm_ws.py, an idle 1-warp partition standing in for its TMA producer) each loop over ITERS "K blocks"
of 4 wgmma m64nNk32 (e4m3, A [64, 128] and B [N, 128] resident in shared memory, filled once from random global
bytes). MODE 0: accumulate in the tensor core (use_acc chain, one wait per block); MODE 1: the Gluon GEMMs' pattern
with one product set: per block a fresh product (use_acc=False), wait(0), then acc += product * scale (the fp32
promotion). TFLOP/s = 2·64·N·128·ITERS·WGS·grid / t.

H200, session 14 (run from gpu_jobs/ at tree d9c0efd, this code; one run, do_bench median):
    N    WGS  mode 0 (chain)   mode 1 (product + promotion)
    64   2    1705             1511
    128  2    1736             1385
    256  2    1746             -      (product + accumulator would need 256 registers)
    64   3    1713             1615
    128  3    1744             1452
So the wgmma shape does not limit the raw rate (n64 ≈ n128 ≈ n256), the wait-and-promote pattern alone caps a
warpgroup pair at ~1385-1450 with no memory traffic, and the GEMMs' ~1100 TFLOP/s (TMA ring, epilogue) lose about
as much again. Levers: fewer waits per promotion (two products in flight: UNROLL2 in fp8_gemm_ws, not probed here)
and the memory side.
"""

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
    fence_async_shared()
    zero = gl.zeros([64, N], gl.float32, mma)
    acc = zero
    sc = gl.load(s_ptr + gl.arange(0, 64, layout=gl.SliceLayout(1, mma)))
    for i in range(iters):
        if MODE == 0:
            acc = warpgroup_mma(a_s, b_s.permute((1, 0)), acc, use_acc=True, is_async=True)
            acc = warpgroup_mma_wait(0, deps=[acc])
        else:
            p = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
            p = warpgroup_mma_wait(0, deps=[p])
            acc += p * gl.expand_dims(sc, 1)
    tot = gl.sum(gl.sum(acc, 1), 0)
    gl.atomic_add(out_ptr, tot)


@gluon.jit
def _idle(out_ptr):
    # stands in for the kernels' TMA producer warp, so the register split (setmaxnreg) matches fp8_gemm_ws
    pass


@gluon.jit
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


CASES = [(n, w, m) for m in (0, 1) for w in (2, 3) for n in (64, 128, 256)
         if not (m == 1 and n == 256) and not (w == 3 and n == 256)]


def compile_only():
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    for n, w, m in CASES:
        sig = dict(a_ptr="*fp8e4nv", b_ptr="*fp8e4nv", s_ptr="*fp32", out_ptr="*fp32", iters="i32",
                   N="constexpr", WGS="constexpr", MODE="constexpr", num_warps="constexpr")
        k = triton.compile(GluonASTSource(_probe_kernel, sig, dict(N=n, WGS=w, MODE=m, num_warps=4)),
                           target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=168 if w == 2 else 128))
        ptx = k.asm["ptx"]
        print(n, w, m, ptx.count("wgmma.mma_async"), ptx.count("setmaxnreg"), flush=True)


def main():
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    g = torch.Generator(device=dev).manual_seed(0)
    bits = torch.randint(0, 256, (256 * 128 * 2,), dtype=torch.uint8, device=dev, generator=g)
    bits[(bits & 0x7F) == 0x7F] = 0x38
    a = bits[:192 * 128].view(torch.float8_e4m3fn)
    b = bits[192 * 128:192 * 128 + 256 * 128].view(torch.float8_e4m3fn)
    s = torch.rand(64, device=dev, generator=g) + 0.5
    out = torch.zeros(1, device=dev)
    iters = 4000
    print("N  WGS mode   us      TFLOP/s   (mode 0: use_acc chain, 1: fresh product + fp32 promotion)")
    for n, w, m in CASES:
        kw = dict(N=n, WGS=w, MODE=m, num_warps=4, maxnreg=168 if w == 2 else 128)
        _probe_kernel[(sms,)](a, b, s, out, 10, **kw)
        torch.cuda.synchronize()
        ms = triton.testing.do_bench(lambda: _probe_kernel[(sms,)](a, b, s, out, iters, **kw), warmup=3, rep=40,
                                     return_mode="median")
        fl = 2 * 64 * n * 128 * iters * w * sms
        print(f"{n:<4} {w}   {m}   {ms * 1e3:9.1f} {fl / ms / 1e9:9.1f}", flush=True)


if __name__ == "__main__":
    t0 = time.time()
    compile_only() if "--compile-only" in sys.argv else main()
    print(f"done in {time.time() - t0:.1f} s")
