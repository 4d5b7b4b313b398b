"""Does the dense FP8 GEMM run the grouped anchors' own operands faster than the grouped kernels? (issue 5, s22)

    PYTHONPATH=. python benchmarks/probe_grouped_dense.py [--rounds 60] [--contig-rounds 15] [--out rows.jsonl]

A masked group of 1024 rows IS a dense 1024×N×K GEMM, and 4 × 8192 contiguous rows are close to a dense
32768×N×K one (one weight instead of four). The dense kernel (fp8_gemm_ws / fp8_gemm_ws_sk) meets all 18 DeepGEMM
anchors; the grouped ones miss three masked and both contiguous (4096, 7168) anchors. So, on ONE operand set per
case, every variant is checked against an fp32 reference first (NaN-poisoned outputs, calc_diff < 1e-3), then its
one-call CUDA graph is replayed ``--rounds`` times interleaved with the others (GPU clock, order reversed every round,
a device sleep before each replay: benchmarks/bench_grouped_ws._interleaved_gpu_us), with an A/A twin of the grouped
kernel as the noise floor. Variants:

* masked E × m (1×1024, 2×512 at (4096, 7168) and (7168, 2048)): ``ws`` (grouped_fp8_gemm_masked_ws, the default),
  ``ws_aa``; ``dense`` = fp8_gemm_nt on each group (its tuned GLUON entry: 128-row tiles on one program per SM);
  ``dense_sk`` = the stream-K kernel (one CTA per SM, DP + stream-K, SCALE_AHEAD, WAIT2 register merge) per group;
  ``cublas`` = torch scaled_mm block-scaled per group (the 2×512 variants launch E dense calls in one graph).
* contiguous 4 × 8192 / 8 × 4096 rows × (4096, 7168), 4 × 8192 × (7168, 2048) and the routed prefill layout
  (T = 4096 top-8 over 256 experts) × (4096, 7168): ``default``, ``aa`` and ``--contig-extra`` configs; at 4 × 8192
  (4096, 7168) also ``dense`` = fp8_gemm_nt on 32768×4096×7168 with expert 0's weight (wgs_for picks 192-row tiles
  there), ``dense_w2`` (128-row PIPE tiles, as the grouped kernel), ``dense_w3a`` (192-row tiles + SCALE_AHEAD),
  ``cublas``, and with ``--e1`` the grouped kernel with ONE expert over all rows (the dense problem).

Session 23 (h1grouped): --df adds the dense-form kernel (grouped_gemm_dense_form) to the contiguous cases and
``dense_w3`` (the dense 192-row kernel exactly as the dense form uses it: SCALE_AHEAD, plain tile coordinates).

Session 24 (h1df): --df-free adds ``df_free`` on the E × m layouts whose m is not a multiple of 192: the dense form on
the same operands with each expert's rows past its last full 192-row tile made padding (its short last tiles load and
compute nothing), TFLOP/s over its own valid rows: how much the short tiles cost. The table options SPLIT_TAIL /
PARTIAL_LAST go through --df-configs.

Session 22 (H200 W1-W3; grouped_gemm_ws docstring): the dense kernel 0.975 / 0.950 × the masked kernel's time at
1×1024, the dense 128-row kernel 0.95 × the contiguous one at 4 × 8192 (4096, 7168), the grouped kernel on one expert
1.000 × itself on four. W1-W3 also ran ROWS192 (contiguous 192-row tiles, removed; code in git at b13fd82).

Printed per case: each variant's median µs, TFLOP/s and median per-round ratio to the grouped default, plus the
shape's tiles, waves on 132 SMs and K blocks per tile. Rows: suite ``grouped_dense_probe``.
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

from tritonseek.benchrun import git_commit, out_file, positive_int, require_cuda  # noqa: E402
from tritonseek.kernels.fp8_gemm import fp8_gemm_nt  # noqa: E402
from tritonseek.kernels.fp8_gemm_ws import launch_fp8_gemm_ws  # noqa: E402
from tritonseek.kernels.fp8_gemm_ws_sk import launch_fp8_gemm_sk  # noqa: E402
from tritonseek.kernels.grouped_gemm_dense_form import (  # noqa: E402
    build_tile_table, grouped_fp8_gemm_contiguous_df, max_row_tiles)
from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_contiguous_ws, grouped_fp8_gemm_masked_ws  # noqa: E402
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref  # noqa: E402

NK = [(4096, 7168), (7168, 2048)]
MASKED = [(1, 1024), (2, 512)]
SMS = 132


def _cublas(a, a_s, b, bs):
    """torch scaled_mm block-scaled (cuBLAS) on one group: a [M, K] e4m3, a_s [M, KB] (made MN-major here),
    b [N, K], bs [NB, KB]; -> a function returning a fresh bf16 [M, N]."""
    from torch.nn.functional import ScalingType, scaled_mm

    a_mn = a_s.t().contiguous().t()
    bt, bst = b.t(), bs.contiguous().t()

    def f():
        return scaled_mm(a, bt, a_mn, ScalingType.BlockWise1x128, bst, ScalingType.BlockWise128x128,
                         output_dtype=torch.bfloat16)
    return f


def _ref_rows(a, a_s, b, bs, rows):
    """fp32 reference of rows ``rows`` of (a·a_s) @ (b·bs)ᵀ for one weight."""
    K = a.shape[1]
    N = b.shape[0]
    ad = a[rows].float() * a_s[rows].repeat_interleave(128, 1)[:, :K]
    bd = b.float() * bs.repeat_interleave(128, 0)[:N].repeat_interleave(128, 1)[:, :K]
    return ad @ bd.t()


def _ok(out, ref) -> tuple[bool, float]:
    d = calc_diff(out.float(), ref)
    return bool(torch.isfinite(out).all()) and d < 1e-3, d


def _masked_variants(E, m, N, K, dev, log):
    a = _rand_fp8((E, m, K), dev)
    a_s = torch.rand(E, m, K // 128, device=dev) * 1e-2 + 1e-3
    b = _rand_fp8((E, N, K), dev)
    bs = torch.rand(E, triton.cdiv(N, 128), triton.cdiv(K, 128), device=dev) * 1e-2 + 1e-3
    mm = torch.full((E,), m, dtype=torch.int32, device=dev)
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    runs = {}

    def add(name, make):
        out = torch.full((E, m, N), float("nan"), device=dev, dtype=torch.bfloat16)
        fn = make(out)
        res = fn()
        torch.cuda.synchronize()
        got = out if res is None else res
        ok, d = _ok(got, ref)
        log(f"  check {name:<9} E={E} m={m} N={N} K={K}: calc_diff {d:.2e} {'OK' if ok else 'FAIL (not timed)'}")
        if ok:
            runs[name] = fn

    def ws(out):
        return lambda: (grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out), None)[1]

    def dense(out):
        return lambda: [fp8_gemm_nt(a[g], a_s[g], b[g], bs[g], out=out[g]) for g in range(E)] and None

    def dense_sk(out):
        cfg = dict(SCALE_AHEAD=1, WAIT2=True)
        return lambda: [launch_fp8_gemm_sk(a[g], a_s[g], b[g], bs[g], out[g], cfg) for g in range(E)] and None

    def cublas(out):
        fs = [_cublas(a[g], a_s[g], b[g], bs[g]) for g in range(E)]
        return lambda: torch.stack([f() for f in fs])

    for name, make in (("ws", ws), ("ws_aa", ws), ("dense", dense), ("dense_sk", dense_sk), ("cublas", cublas)):
        try:
            add(name, make)
        except Exception as e:  # a variant that fails to compile or launch is a finding, not a crash
            log(f"  check {name:<9} E={E} m={m} N={N} K={K}: {type(e).__name__}: {str(e)[:300]}")
    return runs, 2 * E * m * N * K


# the dense form's s23 knobs (PREFETCH, PF_PROD, SMEM_TABLE, NO_TABLE, DIAG, BASE_PTR) were removed after W1-W6
DF_CONFIGS = {"df": None, "df_aa": None}
DF_E1_CONFIGS = {"df_e1": None}


def _contig_variants(layout, N, K, dev, log, with_dense, extra=None, e1=False, df=False, no_cublas=False,
                     df_configs=None, df_e1_configs=None, df_free=False):
    """layout "4x8192" / "8x4096" (DeepGEMM's) or "routed" (T = 4096 top-8 over 256 experts, 128-padded): the
    grouped default, its A/A twin, ``extra`` configs; with_dense: the dense variants on expert 0's weight.
    Every variant is checked on all rows (NaN-poisoned out, padding rows 0) against the fp32 reference."""
    from benchmarks.bench_grouped_ws import _routed_m_indices
    from tritonseek.kernels.reference.moe import grouped_fp8_gemm_contiguous_ref

    if layout == "routed":
        E = 256
        mi, _ = _routed_m_indices(4096, E, dev)
        M = mi.numel()
    else:
        E, m = (int(x) for x in layout.split("x"))
        M = E * m
        mi = (torch.arange(M, device=dev) // m).to(torch.int32)
    a = _rand_fp8((M, K), dev)
    a.view(torch.uint8)[mi < 0] = 0x7F  # NaN garbage in the padding rows must not leak
    a_s = (torch.rand(K // 128, M, device=dev) * 1e-2 + 1e-3).t()  # MN-major, as the quant kernel writes it
    b = _rand_fp8((E, N, K), dev)
    bs = torch.rand(E, triton.cdiv(N, 128), triton.cdiv(K, 128), device=dev) * 1e-2 + 1e-3
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    pad = mi < 0
    runs = {}

    def add(name, fn, want):
        if want is None:  # a timing-only variant (writes no output)
            fn()
            runs[name] = fn
            return
        fn.out.fill_(float("nan"))
        res = fn()
        torch.cuda.synchronize()
        got = fn.out if res is None else res
        vpad = getattr(fn, "pad", pad)  # a variant on its own layout (df_free) names its padding rows
        ok, d = _ok(got[~vpad], want[~vpad])
        ok = ok and bool((got[vpad] == 0).all())
        log(f"  check {name:<10} {layout} M={M} N={N} K={K}: calc_diff {d:.2e}, padding rows 0 "
            f"{bool((got[pad] == 0).all())} {'OK' if ok else 'FAIL (not timed)'}")
        if ok:
            runs[name] = fn

    def mk(f):
        out = torch.empty(M, N, device=dev, dtype=torch.bfloat16)

        def fn():
            f(out)
        fn.out = out
        return fn

    def grouped(cfg):
        return mk(lambda o: grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, out=o, config=cfg))

    variants = [("default", grouped(None), ref), ("aa", grouped(None), ref)]
    variants += [(name, grouped(cfg), ref) for name, cfg in (extra or {}).items()]
    if df:
        # the dense-form kernel (grouped_gemm_dense_form: the dense 192-row kernel over a device tile table)
        variants += [(name, mk(lambda o, c=c: grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, out=o, config=c)), ref)
                     for name, c in (df_configs or DF_CONFIGS).items()]
        # the tile table alone (three small tl kernels; part of every df variant's time), not checked
        tab = torch.empty(max_row_tiles(M) * 4 + 3 * triton.cdiv(M, 128) + 1, dtype=torch.int32, device=dev)
        variants.append(("df_table", mk(lambda o: build_tile_table(mi, M, tab)), None))
        if df_free and layout != "routed" and (M // E) % 192:
            # s24 bisection: the same operands with each expert's rows past its last full 192-row tile made padding
            # (m_indices -1): its short last tiles load and compute nothing (n_any 0), the full tiles are unchanged;
            # TFLOP/s over its own valid rows
            m = M // E
            keep = m // 192 * 192
            mi_f = torch.where(torch.arange(M, device=dev) % m < keep, mi, torch.full_like(mi, -1))
            fn = mk(lambda o: grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi_f, out=o))
            fn.pad, fn.flops = mi_f < 0, 2 * E * keep * N * K
            variants.append(("df_free", fn, ref))
    if with_dense or e1:
        dref = torch.cat([_ref_rows(a, a_s, b[0], bs[0], torch.arange(i, min(i + 4096, M), device=dev))
                          for i in range(0, M, 4096)])
    if e1:
        # the grouped kernel with ONE expert over all rows (b[0]): the dense problem in the grouped kernel
        mi1 = torch.zeros_like(mi)
        for name, cfg in (e1 if isinstance(e1, dict) else {"e1": None, "e1_sp": dict(SPECIALIZE=True)}).items():
            variants.append((name, mk(lambda o, cfg=cfg: grouped_fp8_gemm_contiguous_ws(a, a_s, b[:1], bs[:1], mi1,
                                                                                         out=o, config=cfg)), dref))
        if df:
            variants += [(name, mk(lambda o, c=c: grouped_fp8_gemm_contiguous_df(a, a_s, b[:1], bs[:1], mi1, out=o,
                                                                                config=c)), dref)
                         for name, c in (df_e1_configs or DF_E1_CONFIGS).items()]
    if with_dense:
        cub = _cublas(a, a_s, b[0], bs[0])

        def cub_fn():
            return cub()
        cub_fn.out = torch.empty(1, device=dev)
        variants += [
            ("dense", mk(lambda o: fp8_gemm_nt(a, a_s, b[0], bs[0], out=o)), dref),
            ("dense_w2", mk(lambda o: launch_fp8_gemm_ws(a, a_s, b[0], bs[0], o, dict(FAST_COORDS=True, WGS=2))), dref),
            ("dense_w3a", mk(lambda o: launch_fp8_gemm_ws(a, a_s, b[0], bs[0], o,
                                                          dict(FAST_COORDS=True, WGS=3, SCALE_AHEAD=1))), dref),
            # the exact dense configuration the dense-form kernel starts from (its tile coordinates: _tile_coords)
            ("dense_w3", mk(lambda o: launch_fp8_gemm_ws(a, a_s, b[0], bs[0], o, dict(WGS=3, SCALE_AHEAD=1))), dref),
        ] + ([] if no_cublas else [("cublas", cub_fn, dref)])
    for name, fn, want in variants:
        try:
            add(name, fn, want)
        except Exception as e:
            log(f"  check {name:<10} {layout} M={M} N={N} K={K}: {type(e).__name__}: {str(e)[:300]}")
    del ref
    return runs, 2 * int((~pad).sum()) * N * K, M


def _time(label, runs, first, flops, rounds, shape_note, case, env, log, rows, table):
    t0 = time.time()
    res = _interleaved_gpu_us(runs, rounds)
    med = {k: _median(v) for k, v in res.items()}
    fl = {k: getattr(runs[k], "flops", flops) for k in res}  # a variant on its own valid rows (df_free)
    ratio = {k: _median([x / y for x, y in zip(v, res[first])]) for k, v in res.items()}
    log(f"{label} [{shape_note}] ({time.time() - t0:.1f} s):")
    for k in res:
        p10, p90 = sorted(res[k])[len(res[k]) // 10], sorted(res[k])[len(res[k]) * 9 // 10]
        log(f"    {k:<10} {med[k]:9.2f} us {fl[k] / med[k] / 1e6:7.1f} TFLOP/s  ratio to {first} {ratio[k]:.4f} "
            f"(p10 {p10:.2f}, p90 {p90:.2f})")
        rows.append(dict(suite="grouped_dense_probe", case=case, variant=k, us_graph_gpu=round(med[k], 2),
                         tflops_gpu=round(fl[k] / med[k] / 1e6, 1), ratio_to_grouped=round(ratio[k], 4),
                         rounds=rounds, timing="gpu_clock_interleaved", **env))
    table.append(f"{label:<28} " + " | ".join(f"{k} {fl[k] / med[k] / 1e6:.0f} ({ratio[k]:.3f})" for k in res))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=positive_int, default=60)
    p.add_argument("--contig-rounds", type=positive_int, default=15)
    p.add_argument("--out", type=out_file, default=None, help="JSONL rows (suite grouped_dense_probe)")
    p.add_argument("--no-contig", action="store_true")
    p.add_argument("--no-masked", action="store_true")
    p.add_argument("--e1", action="store_true", help="at 4x8192 (4096, 7168) also the grouped kernel with one expert")
    p.add_argument("--e1-configs", type=json.loads, default=None,
                   help='with --e1: JSON {name: config} of the one-expert variants (default e1 / e1_sp)')
    p.add_argument("--contig-extra", type=json.loads, default=None,
                   help='JSON {"LAYOUT@NxK": {name: config}}: more contiguous variants, e.g. '
                        '\'{"4x8192@4096x7168": {"sp": {"SPECIALIZE": true}}}\'; the layouts not named run default / aa')
    p.add_argument("--contig-cases", default="4x8192@4096x7168,8x4096@4096x7168,4x8192@7168x2048,routed@4096x7168")
    p.add_argument("--no-dense", action="store_true", help="contiguous: leave out the dense variants")
    p.add_argument("--df", action="store_true", help="contiguous: add the dense-form kernel (df, df_aa, df_table = its "
                   "tile table alone; with --e1 df_e1 on one expert)")
    p.add_argument("--df-configs", type=json.loads, default=None,
                   help="with --df: JSON {name: config} of the dense-form variants per layout (default DF_CONFIGS)")
    p.add_argument("--df-e1-configs", type=json.loads, default=None,
                   help="with --df --e1: JSON {name: config} of the one-expert dense-form variants (default "
                        "DF_E1_CONFIGS; keys: grouped_gemm_dense_form.DF_CONFIG_SPEC)")
    p.add_argument("--no-cublas", action="store_true", help="contiguous: leave out the cuBLAS variant")
    p.add_argument("--df-free", action="store_true", help="with --df, on the E x m layouts with m % 192 != 0: df_free = "
                   "the dense form with each expert's rows past its last full 192-row tile made padding (s24)")
    args = p.parse_args()
    require_cuda("probe_grouped_dense.py")
    dev = torch.device("cuda")
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows, table = [], []
    t_start = time.time()

    def log(s):
        print(f"[+{time.time() - t_start:5.1f}s] {s}", flush=True)

    _warm_gpu(0.3)
    for E, m in ([] if args.no_masked else MASKED):
        for N, K in NK:
            runs, flops = _masked_variants(E, m, N, K, dev, log)
            if "ws" not in runs:
                log(f"masked {E}x{m} ({N}, {K}): the grouped default failed its check; not timed")
                continue
            tiles = E * triton.cdiv(m, 128) * triton.cdiv(N, 128)
            note = (f"{tiles} tiles of 128x128 = {tiles / SMS:.2f} waves on {SMS} SMs, {triton.cdiv(K, 128)} K blocks "
                    f"per tile; dense per group: {tiles // E} tiles")
            _time(f"masked {E}x{m} ({N}, {K})", runs, "ws", flops, args.rounds, note,
                  dict(layout="masked", groups=E, m_per_group=m, N=N, K=K), env, log, rows, table)
            del runs
            torch.cuda.empty_cache()
    if not args.no_contig:
        cases = []
        for c in args.contig_cases.split(","):
            layout, nk = c.split("@")
            N, K = (int(x) for x in nk.split("x"))
            cases.append((layout, N, K, c == "4x8192@4096x7168" and not args.no_dense))
        for layout, N, K, dense in cases:
            runs, flops, M = _contig_variants(layout, N, K, dev, log, dense,
                                              (args.contig_extra or {}).get(f"{layout}@{N}x{K}"),
                                              dense and args.e1 and (args.e1_configs or True), args.df,
                                              args.no_cublas, args.df_configs, args.df_e1_configs, args.df_free)
            if "default" in runs:
                r128, r192 = triton.cdiv(M, 128) * triton.cdiv(N, 128), triton.cdiv(M, 192) * triton.cdiv(N, 128)
                note = (f"128-row tiles {r128} = {r128 / SMS:.2f} waves; 192-row tiles {r192} = {r192 / SMS:.2f} "
                        f"waves; {triton.cdiv(K, 128)} K blocks per tile")
                _time(f"contiguous {layout} ({N}, {K})", runs, "default", flops, args.contig_rounds, note,
                      dict(layout="contiguous", groups=layout, M=M, N=N, K=K), env, log, rows, table)
            del runs
            torch.cuda.empty_cache()
    log("\n== summary: TFLOP/s (GPU-clock medians of interleaved graph replays) and (ratio of time to the grouped "
        "default; < 1 = faster) ==")
    for t in table:
        log(t)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
