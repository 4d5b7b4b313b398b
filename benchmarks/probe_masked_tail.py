"""What is a perfect last wave worth to the masked grouped FP8 GEMM (issue 5)? A probe, no kernel change.

    PYTHONPATH=. python benchmarks/probe_masked_tail.py [--rounds 100] [--out rows.jsonl]

The masked DeepGEMM anchors leave SMs idle: at (N, K) = (7168, 2048) 448 tiles of 128×128 run as 112 programs × 4
tiles (BALANCE; 20 SMs idle), at (4096, 7168) 256 tiles as 128 × 2 (4 idle). Split-K of the last wave (stream-K
style) could spread that work over all 132 SMs, but only pays if a program's K loop does not slow down when more
SMs load at once (session 20: the loop is bound by the TMA fill of shared memory, an aggregate limit).

* Correctness of the committed default first (grouped_fp8_gemm_masked_ws, no config): the six anchors against the
  fp32 reference (NaN-poisoned out, calc_diff < 1e-3); edge masked_m 0 / 1 / 127 / 128 / 129 / M_max and empty
  groups (rows past masked_m still NaN); two launches bitwise equal; a CUDA graph replayed after masked_m changed
  in place equals an eager launch with the new masked_m.
* Scaling at equal work per program (1 group × 1024 rows, GPU-clock interleaved graph replays, A/A control):
  ``base`` (the anchor) against ``n132``, the same K with N widened so the tiles fill every SM with the same tiles
  per program (4224 = 33 n-tiles: 264 = 132 × 2; 8448: 528 = 132 × 4). Ratio n132/base ≈ 1: a program's time does
  not depend on how many SMs load, so the idle SMs are a real prize; ≈ tiles(n132)/tiles(base) (1.031 / 1.179):
  the aggregate fill is the limit and no rebalancing helps. ``unbal`` = BALANCE off (132 programs, the last wave
  partly empty); at (7168, 2048) also 1×768 (336 tiles = 112 × 3) and 1×896 (392 = 131 × 3): one round less.
* ``--ab '{"name": {config}, ...}'``: those masked ws configs checked as above, then A/B'd against the default and an
  A/A twin at the six anchors (session 21 W2 ran TAIL_SK, the split-K tail, this way: 1.03-1.06 × the default's time at
  (7168, 2048); removed, code in git at 81f0300).
* A perfect tail (zero-cost fix-up) is estimated as F + (T(n132) − F) · tiles(base) / tiles(n132), F = 7.5 µs of
  per-launch fixed cost (session 18's K sweep); printed with the prize T(base) − that.
* The fix-up's own floor (``_fixup_probe``, a plain Triton kernel): 132 programs in pairs, the lower program of a pair
  stores a 128×128 fp32 partial and releases a flag, the higher one waits for it (acquire), adds the partial and
  stores bf16, then re-arms the flag (the waiter is the later-dispatched program: no deadlock without
  co-residency). Against the same kernel storing only the bf16 tile, GPU clock, interleaved: the difference is what
  a pairwise split-K tail adds to the critical path besides its K loop.

Measured (H200, session 21 W1 at f3051ee, 100 rounds): n132/base 1.012 at (4096, 7168) and 1.040 at (7168, 2048) (A/A
1.003 / 1.011), perfect-tail prize ~1.2 % / ~8.8 %; 1×768 and 1×896 at (7168, 2048) (3 rounds on 112 / 131 SMs) 0.822 /
0.834 of the anchor; the fix-up floor +3.6 µs (104 programs) / +4.1 µs (132) over a 5.8 µs store-only kernel. W2 at
23d6340: the split-K tail itself lost (grouped_gemm_ws docstring, session 21).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_grouped_ws import _interleaved_gpu_us, _median, _rand_fp8, _warm_gpu  # noqa: E402

from tritonseek.benchrun import git_commit, out_file, positive_int, require_cuda  # noqa: E402
from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_masked_ws  # noqa: E402
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref  # noqa: E402

NK = [(4096, 7168), (7168, 2048)]
ANCHORS = [(1, 1024), (2, 512), (4, 256)]
FIXED_US = 7.5  # per-launch fixed cost (session 18 K sweep: 7.5 µs + 857 ns per K block at 1×1024, N = 4096)


@triton.jit
def _fixup_probe(ws_ptr, flag_ptr, out_ptr, WAIT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    # ws: [pairs, BM, BN] fp32 partials; flag: [pairs] int32, 0 between launches; out: [pairs, BM, BN] bf16
    pid = tl.program_id(0)
    pair = pid // 2
    offs = tl.arange(0, BM)[:, None] * BN + tl.arange(0, BN)[None, :]
    acc = (offs % 61 + pid % 2).to(tl.float32) * 0.5  # stands in for a tile's accumulator (sums exact in bf16)
    base = pair.to(tl.int64) * BM * BN
    if WAIT:
        if pid % 2 == 0:
            tl.store(ws_ptr + base + offs, acc)
            tl.debug_barrier()  # every thread's partial before the (single) release
            tl.atomic_xchg(flag_ptr + pair, 1, sem="release")
        else:
            while tl.atomic_add(flag_ptr + pair, 0, sem="acquire") == 0:
                pass
            tl.debug_barrier()
            part = tl.load(ws_ptr + base + offs, cache_modifier=".cg")
            tl.debug_barrier()
            tl.atomic_xchg(flag_ptr + pair, 0)  # re-arm for the next launch / graph replay
            tl.store(out_ptr + base + offs, (acc + part).to(tl.bfloat16))
    else:
        if pid % 2 == 1:
            tl.store(out_ptr + base + offs, acc.to(tl.bfloat16))


def _fixup_runs(programs: int, dev):
    """(with fix-up, store only) launch functions of _fixup_probe over ``programs`` programs (128×128 tiles); the
    fix-up's result is checked once (acc of the waiter + partial of its pair)."""
    pairs, BM, BN = programs // 2, 128, 128
    ws = torch.empty(pairs, BM, BN, device=dev, dtype=torch.float32)
    flag = torch.zeros(pairs, device=dev, dtype=torch.int32)
    out = torch.empty(pairs, BM, BN, device=dev, dtype=torch.bfloat16)

    def fix():
        _fixup_probe[(2 * pairs,)](ws, flag, out, WAIT=True, BM=BM, BN=BN, num_warps=8)

    def plain():
        _fixup_probe[(2 * pairs,)](ws, flag, out, WAIT=False, BM=BM, BN=BN, num_warps=8)
    out.fill_(float("nan"))
    fix()
    torch.cuda.synchronize()
    offs = torch.arange(BM * BN, device=dev, dtype=torch.float32).view(BM, BN)
    want = ((offs % 61 + 1) * 0.5 + (offs % 61) * 0.5).to(torch.bfloat16).expand(pairs, BM, BN)
    if not torch.equal(out, want) or int(flag.abs().sum()) != 0:
        raise RuntimeError("fix-up probe: wrong sums or flags not re-armed")
    return fix, plain


def _operands(E, M_max, N, K, dev):
    a = _rand_fp8((E, M_max, K), dev)
    a_s = torch.rand(E, M_max, K // 128, device=dev) * 1e-2 + 1e-3
    b = _rand_fp8((E, N, K), dev)
    bs = torch.rand(E, triton.cdiv(N, 128), triton.cdiv(K, 128), device=dev) * 1e-2 + 1e-3
    return a, a_s, b, bs


def _check(E, M_max, N, K, masked, dev, log, config=None) -> bool:
    """NaN-poisoned launch vs the fp32 reference, rows past masked_m untouched, a second launch bitwise equal, a
    graph replay after masked_m changed in place equal to an eager launch with the new values."""
    a, a_s, b, bs = _operands(E, M_max, N, K, dev)
    mm = torch.tensor(masked, dtype=torch.int32, device=dev)
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    outs = []
    for _ in range(2):
        out = torch.full((E, M_max, N), float("nan"), device=dev, dtype=torch.bfloat16)
        grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=config)
        outs.append(out)
    torch.cuda.synchronize()
    rows = torch.arange(M_max, device=dev)[None, :] < mm[:, None]  # [E, M_max] valid rows
    o = outs[0].float()
    valid_finite = bool(torch.isfinite(o[rows]).all())
    past_nan = bool(torch.isnan(o[~rows]).all())
    d = calc_diff(o[rows], ref[rows]) if bool(rows.any()) else 0.0
    same = torch.equal(outs[0].view(torch.int16), outs[1].view(torch.int16))
    # graph replay with changed masked_m (no stale state between replays)
    g_out = torch.full_like(outs[0], float("nan"))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=g_out, config=config)
    new = [min(M_max, (v * 7 + 37) % (M_max + 1)) for v in masked]
    mm.copy_(torch.tensor(new, dtype=torch.int32))
    g_out.fill_(float("nan"))
    g.replay()
    e_out = torch.full_like(outs[0], float("nan"))
    grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=e_out, config=config)
    torch.cuda.synchronize()
    graph_ok = torch.equal(g_out.view(torch.int16), e_out.view(torch.int16))
    del g
    ok = valid_finite and past_nan and d < 1e-3 and same and graph_ok
    log(f"check {config or 'default'} E={E} M_max={M_max} N={N} K={K} masked_m={masked} -> {new}: calc_diff {d:.2e}, "
        f"valid finite "
        f"{valid_finite}, rows past masked_m NaN {past_nan}, bitwise repeat {same}, graph replay {graph_ok}: "
        f"{'OK' if ok else 'FAIL'}")
    return ok


def _runner(E, M_max, N, K, dev, config=None):
    a, a_s, b, bs = _operands(E, M_max, N, K, dev)
    mm = torch.full((E,), M_max, dtype=torch.int32, device=dev)
    out = torch.empty(E, M_max, N, device=dev, dtype=torch.bfloat16)
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    out.fill_(float("nan"))
    grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=config)
    torch.cuda.synchronize()
    d = calc_diff(out.float(), ref)
    if not (bool(torch.isfinite(out).all()) and d < 1e-3):
        raise RuntimeError(f"wrong result E={E} M_max={M_max} N={N} K={K} config={config}: calc_diff {d:.2e}")
    del ref

    def run():
        return grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=config)
    return run, 2 * E * M_max * N * K, E * triton.cdiv(M_max, 128) * triton.cdiv(N, 128)


def _same_operand_runs(E, M_max, N, K, dev, configs: dict):
    """name -> launch fn of each config on ONE set of operands (own out buffer each), every config checked first
    (NaN-poisoned out, finite, calc_diff < 1e-3)."""
    a, a_s, b, bs = _operands(E, M_max, N, K, dev)
    mm = torch.full((E,), M_max, dtype=torch.int32, device=dev)
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    runs = {}
    for name, cfg in configs.items():
        out = torch.full((E, M_max, N), float("nan"), device=dev, dtype=torch.bfloat16)
        grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=cfg)
        torch.cuda.synchronize()
        d = calc_diff(out.float(), ref)
        if not (bool(torch.isfinite(out).all()) and d < 1e-3):
            raise RuntimeError(f"wrong result E={E} M_max={M_max} N={N} K={K} config={cfg}: calc_diff {d:.2e}")

        def run(cfg=cfg, out=out):
            return grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=cfg)
        runs[name] = run
    return runs


def _ab_anchors(configs: dict, rounds: int, env: dict, log, rows: list, table: list) -> None:
    """GPU-clock interleaved A/B of ``configs`` (name -> config dict) against the default and an A/A twin of it at the
    six anchors, one operand set per anchor; rows with each config's median and median per-round ratio."""
    dev = torch.device("cuda")
    for E, m in ANCHORS:
        for N, K in NK:
            cfgs = dict(default=None, aa=None, **configs)
            runs = _same_operand_runs(E, m, N, K, dev, cfgs)
            res = _interleaved_gpu_us(runs, rounds)
            flops = 2 * E * m * N * K
            med = {k: _median(v) for k, v in res.items()}
            ratio = {k: _median([x / y for x, y in zip(v, res["default"])]) for k, v in res.items()}
            case = dict(groups=E, m_per_group=m, N=N, K=K)
            log(f"A/B {E}x{m} ({N}, {K}): " + ", ".join(f"{k} {med[k]:.2f} us ({flops / med[k] / 1e6:.1f} TFLOP/s) "
                                                       f"x{ratio[k]:.4f}" for k in res))
            table.append(f"{E}x{m} ({N}, {K}) default {flops / med['default'] / 1e6:7.1f} TFLOP/s | "
                         + " | ".join(f"{k} x{ratio[k]:.4f}" for k in res if k != "default"))
            for k in res:
                rows.append(dict(suite="grouped_gemm_masked_ab", case=case, variant=k, config=cfgs[k], kernel="ws",
                                 us_graph_gpu=round(med[k], 2), tflops_gpu=round(flops / med[k] / 1e6, 1),
                                 ratio_to_default=round(ratio[k], 4), rounds=rounds, timing="gpu_clock_interleaved",
                                 **env))
            del runs
            torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=positive_int, default=100)
    p.add_argument("--out", type=out_file, default=None,
                   help="JSONL rows (suites grouped_gemm_masked_tail; grouped_gemm_masked_ab with --ab)")
    p.add_argument("--ab", type=json.loads, default=None,
                   help='JSON object name -> masked ws config: checked like the default (edges, graph replay, bitwise '
                        'repeat), then A/B against the default and an A/A twin at the six anchors, e.g. '
                        '\'{"s6": {"NUM_STAGES": 6}}\'')
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling and fix-up probes")
    args = p.parse_args()
    if args.ab is not None and not (isinstance(args.ab, dict) and all(isinstance(v, dict) for v in args.ab.values())):
        p.error("--ab must be a JSON object of name -> config object")
    require_cuda("probe_masked_tail.py")
    dev = torch.device("cuda")
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    lines, rows = [], []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    # ---- correctness of the committed default at real shapes
    ok = True
    for cfg in list(args.ab.values()) if args.ab else [None]:  # --ab: only the configs under test
        for E, m in ANCHORS:
            for N, K in NK:
                ok &= _check(E, m, N, K, [m] * E, dev, log, cfg)
        ok &= _check(8, 256, 7168, 2048, [0, 1, 127, 128, 129, 256, 0, 255], dev, log, cfg)
        ok &= _check(4, 384, 4096, 7168, [129, 0, 384, 1], dev, log, cfg)
        ok &= _check(3, 128, 4096, 7168, [0, 0, 0], dev, log, cfg)
        ok &= _check(1, 1024, 7168, 2048, [100], dev, log, cfg)  # 56 tiles: a last wave < half the SMs
    log(f"correctness: {'ALL OK' if ok else 'FAILURES'}")

    _warm_gpu(0.5)
    table = []
    if args.ab:
        if not ok:
            log("A/B skipped: a check failed")
        else:
            _ab_anchors(args.ab, args.rounds, env, log, rows, table)
    # ---- scaling at equal work per program, and A/A, GPU clock
    for N, K in ([] if args.no_scaling else NK):
        wide = 4224 if N == 4096 else 8448
        fns, meta = {}, {}
        for name, (E, M, n, cfg) in dict(base=(1, 1024, N, None), aa=(1, 1024, N, None), n132=(1, 1024, wide, None),
                                         unbal=(1, 1024, N, dict(BALANCE=False))).items():
            fns[name], flops, tiles = _runner(E, M, n, K, dev, cfg)
            meta[name] = (flops, tiles, dict(groups=E, m_per_group=M, N=n, K=K), cfg)
        if N == 7168:
            for name, M in (("m768", 768), ("m896", 896)):
                fns[name], flops, tiles = _runner(1, M, N, K, dev)
                meta[name] = (flops, tiles, dict(groups=1, m_per_group=M, N=N, K=K), None)
        for E, m in ANCHORS[1:]:
            for tag in ("", "_aa"):
                fns[f"{E}x{m}{tag}"], flops, tiles = _runner(E, m, N, K, dev)
                meta[f"{E}x{m}{tag}"] = (flops, tiles, dict(groups=E, m_per_group=m, N=N, K=K), None)
        res = _interleaved_gpu_us(fns, args.rounds)
        med = {k: _median(v) for k, v in res.items()}
        ratio = {k: _median([x / y for x, y in zip(v, res["base"])]) for k, v in res.items()}
        for k in fns:
            flops, tiles, case, cfg = meta[k]
            log(f"(N, K) = ({N}, {K}) {k:>8} {str(case):<58} tiles {tiles:4d}: {med[k]:7.2f} us "
                f"{flops / med[k] / 1e6:7.1f} TFLOP/s, ratio to base {ratio[k]:.4f}")
            rows.append(dict(suite="grouped_gemm_masked_tail", case=case, variant=k, config=cfg, tiles=tiles,
                         us_graph_gpu=round(med[k], 2), tflops_gpu=round(flops / med[k] / 1e6, 1),
                         ratio_to_base=round(ratio[k], 4), rounds=args.rounds, timing="gpu_clock_interleaved",
                         kernel="ws", **env))
        for E, m in ANCHORS[1:]:  # the other anchors' own A/A
            r2 = _median([x / y for x, y in zip(res[f"{E}x{m}_aa"], res[f"{E}x{m}"])])
            log(f"(N, K) = ({N}, {K}) {E}x{m} A/A ratio {r2:.4f}")
        tb, tw = meta["base"][1], meta["n132"][1]
        perfect = FIXED_US + (med["n132"] - FIXED_US) * tb / tw
        table.append(f"({N}, {K}) 1x1024: base {med['base']:.2f} us, A/A {ratio['aa']:.4f}, n132/base "
                     f"{ratio['n132']:.4f} (equal work per program; aggregate-bound would read {tw / tb:.3f}), "
                     f"unbal {ratio['unbal']:.4f}; perfect tail ~{perfect:.2f} us = prize "
                     f"{100 * (1 - perfect / med['base']):.1f} %"
                     + (f"; 1x768 {ratio['m768']:.4f}, 1x896 {ratio['m896']:.4f}" if N == 7168 else ""))
        del fns
        torch.cuda.empty_cache()
    # ---- the pairwise fix-up's floor
    for progs in (() if args.no_scaling else (104, 132)):
        try:
            fix, plain = _fixup_runs(progs, dev)
            res = _interleaved_gpu_us(dict(plain=plain, fix=fix, plain_aa=plain), args.rounds)
        except Exception as e:  # a failing probe is a finding; keep the rows above
            log(f"fix-up probe {progs} programs failed: {type(e).__name__}: {str(e)[:400]}")
            continue
        mp, mf, ma = (_median(res[k]) for k in ("plain", "fix", "plain_aa"))
        log(f"fix-up probe {progs} programs ({progs // 2} pairs, 128x128 fp32 partials): store-only {mp:.2f} us, "
            f"with fix-up {mf:.2f} us (+{mf - mp:.2f}), A/A {ma:.2f} us")
        table.append(f"pairwise fix-up floor, {progs} programs: +{mf - mp:.2f} us over a store-only tile "
                     f"({mp:.2f} -> {mf:.2f} us; A/A {ma:.2f})")
        rows.append(dict(suite="grouped_gemm_masked_tail", case=dict(programs=progs, BM=128, BN=128),
                         variant="fixup_probe", us_store_only=round(mp, 2), us_fixup=round(mf, 2),
                         us_store_only_aa=round(ma, 2), rounds=args.rounds, timing="gpu_clock_interleaved", **env))
    log("\n== summary (GPU-clock medians of interleaved graph replays) ==")
    for t in table:
        log(t)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
