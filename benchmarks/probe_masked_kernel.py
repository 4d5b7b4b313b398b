"""Which kernel should ``grouped_fp8_gemm_masked(kernel="auto")`` run: the ``tl`` kernel or the Gluon ``ws`` one?

    PYTHONPATH=. python benchmarks/probe_masked_kernel.py [--budget-s 170] [--rounds 40] [--out rows.jsonl]

* Correctness first, through the public launcher (kernel="tl" and kernel="ws"): at DeepGEMM's 6 masked anchor shapes
  (1×1024, 2×512, 4×256 groups × rows, (N, K) ∈ {(4096, 7168), (7168, 2048)}), each with masked_m = M_max and with
  random partial masked_m (a group at 0): NaN-poisoned out, valid rows finite, calc_diff < 1e-3 against the fp32
  reference, rows past masked_m still NaN. A kernel that fails a check is not timed at that shape.
* Then, per case (the anchors, then rows per group M_max ∈ ``--rows`` × groups ∈ ``--groups``, masked_m = M_max):
  one-call CUDA graphs of tl, ws, tl again (the A/A control) and the peer ``torch._grouped_mm`` bf16 (3-D, all rows)
  replayed ``--rounds`` times interleaved (order reversed every round), each replay behind a ~50 µs device sleep,
  timed on the GPU clock (bench_grouped_ws._interleaved_gpu_us: the host's launch latency is not timed; the H200's
  power-cap clock swings fall on every kernel alike). Row fields: each kernel's median µs and TFLOP/s
  (2·rows·N·K / t), ``ws_over_tl`` = median per-round ratio ws/tl (< 1: ws faster), ``aa`` = tl-again/tl (the noise
  floor), the peer's µs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_grouped_ws import _interleaved_gpu_us, _median, _rand_fp8, _warm_gpu  # noqa: E402

from tritonseek.benchrun import (git_commit, out_file, positive_float, positive_int,  # noqa: E402
                                 positive_int_list, require_cuda)
from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked  # noqa: E402
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref  # noqa: E402

NK = [(4096, 7168), (7168, 2048)]
ANCHORS = [(1, 1024), (2, 512), (4, 256)]


def _operands(G, M, N, K, dev):
    a = _rand_fp8((G, M, K), dev)
    a_s = torch.rand(G, M, triton.cdiv(K, 128), device=dev) * 1e-2 + 1e-3
    b = _rand_fp8((G, N, K), dev)
    bs = torch.rand(G, triton.cdiv(N, 128), triton.cdiv(K, 128), device=dev) * 1e-2 + 1e-3
    return a, a_s, b, bs


def _check(kernel, a, a_s, b, bs, mm, ref) -> tuple[bool, float]:
    """NaN-poisoned out; valid rows finite and close to ref, rows past masked_m untouched."""
    G, M, _ = a.shape
    out = torch.full((G, M, b.shape[1]), float("nan"), device=a.device, dtype=torch.bfloat16)
    grouped_fp8_gemm_masked(a, a_s, b, bs, mm, out=out, kernel=kernel)
    torch.cuda.synchronize()
    valid = torch.arange(M, device=a.device)[None, :] < mm[:, None]
    d = calc_diff(out[valid].float(), ref[valid]) if bool(valid.any()) else 0.0
    ok = bool(torch.isfinite(out[valid]).all()) and bool(torch.isnan(out[~valid].float()).all()) and d < 1e-3
    return ok, d


def _check_logged(kernel, a, a_s, b, bs, mm, ref) -> tuple[bool, float]:
    """_check, with a kernel that raises reported (one line) and counted as failed."""
    try:
        return _check(kernel, a, a_s, b, bs, mm, ref)
    except Exception as e:
        print(f"  {kernel} failed: {type(e).__name__}: {str(e)[:300]}")
        return False, float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-s", type=positive_float, default=170.0)
    p.add_argument("--rounds", type=positive_int, default=40)
    p.add_argument("--rows", type=positive_int_list, default=[16, 32, 64, 128, 256, 512],
                   help="M_max (= masked_m) values of the sweep")
    p.add_argument("--groups", type=positive_int_list, default=[1, 4, 16], help="group counts of the sweep")
    p.add_argument("--out", type=out_file, default="masked_kernel_rows.jsonl", help="JSON rows, appended")
    args = p.parse_args()
    require_cuda("probe_masked_kernel")
    dev = torch.device("cuda")
    t_end = time.time() + args.budget_s
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    gen = torch.Generator(device="cpu").manual_seed(5)
    bad: set = set()  # (kernel, G, M, N, K) that failed a check: never timed
    print("== correctness at the anchors (launcher, kernel=tl / ws)", flush=True)
    for G, M in ANCHORS:
        for N, K in NK:
            a, a_s, b, bs = _operands(G, M, N, K, dev)
            full = torch.full((G,), M, dtype=torch.int32, device=dev)
            part = torch.randint(0, M + 1, (G,), generator=gen, dtype=torch.int32).to(dev)
            part[0] = min(int(part[0]), M - 37)  # a partial last 128-row tile
            if G > 1:
                part[1] = 0  # an empty group
            for mm in (full, part):
                ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
                for kernel in ("tl", "ws"):
                    ok, d = _check_logged(kernel, a, a_s, b, bs, mm, ref)
                    print(f"  {G}x{M} N={N} K={K} masked_m={mm.tolist()} {kernel}: calc_diff {d:.2e} "
                          f"{'ok' if ok else 'FAIL'}", flush=True)
                    if not ok:
                        bad.add((kernel, G, M, N, K))
                del ref
            del a, a_s, b, bs
    _warm_gpu(0.5)
    cases = [("anchor", G, M, N, K) for G, M in ANCHORS for N, K in NK]
    cases += [("sweep", G, M, N, K) for M in args.rows for G in args.groups for N, K in NK]
    table = []
    print("== interleaved GPU-clock timing", flush=True)
    for kind, G, M, N, K in cases:
        if time.time() > t_end - 3:
            print("skip (budget)", kind, G, M, N, K)
            continue
        a, a_s, b, bs = _operands(G, M, N, K, dev)
        mm = torch.full((G,), M, dtype=torch.int32, device=dev)
        out = torch.empty(G, M, N, device=dev, dtype=torch.bfloat16)
        if kind == "sweep":  # the sweep's own check (full masked_m), same rule as the anchors'
            ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
            for kernel in ("tl", "ws"):
                ok, d = _check_logged(kernel, a, a_s, b, bs, mm, ref)
                if not ok:
                    print(f"  {G}x{M} N={N} K={K} {kernel}: calc_diff {d:.2e} FAIL, not timed")
                    bad.add((kernel, G, M, N, K))
            del ref
        fns = {}
        for name, kernel in (("tl", "tl"), ("ws", "ws"), ("tl_again", "tl")):
            if (kernel, G, M, N, K) not in bad:
                fns[name] = (lambda kernel=kernel: grouped_fp8_gemm_masked(a, a_s, b, bs, mm, out=out, kernel=kernel))
        a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16).transpose(1, 2)
        fns["peer"] = lambda: torch._grouped_mm(a16, b16)
        try:
            res = _interleaved_gpu_us(fns, args.rounds)
        except Exception as e:  # a capture failure is a finding, not a crash
            print(f"  {kind} {G}x{M} N={N} K={K}: timing failed: {type(e).__name__}: {e}")
            continue
        flops = 2 * G * M * N * K
        med = {k: _median(v) for k, v in res.items()}
        ratio = (lambda x, y: round(_median([p / q for p, q in zip(res[x], res[y])]), 4)
                 if x in res and y in res else None)
        r = dict(suite="masked_kernel_choice", case=dict(groups=G, m_per_group=M, N=N, K=K), kind=kind,
                 us_gpu={k: round(v, 2) for k, v in med.items()},
                 tflops_gpu={k: round(flops / v / 1e6, 1) for k, v in med.items()},
                 ws_over_tl=ratio("ws", "tl"), aa=ratio("tl_again", "tl"), rounds=args.rounds,
                 peer="torch._grouped_mm bf16 (3-D, all rows)", **env)
        print("  ", json.dumps({k: v for k, v in r.items() if k not in env}), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(r) + "\n")
        tf = r["tflops_gpu"]
        table.append(f"{kind:>6} {G:>3}x{M:<5} {N:>5} {K:>5} tl {tf.get('tl', 0):7.1f} ws {tf.get('ws', 0):7.1f} "
                     f"peer {tf.get('peer', 0):7.1f} TFLOP/s  ws/tl {r['ws_over_tl']}  A/A {r['aa']}")
        del a, a_s, b, bs, out, a16, b16
        torch.cuda.empty_cache()
    head = "  kind   GxM_max     N     K   GPU-clock TFLOP/s (median of interleaved graph replays)"
    print("\n".join(["", head] + table))
    if bad:
        print("FAILED checks:", sorted(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
