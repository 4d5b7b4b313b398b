"""Same-process A/B of two fp8_gemm_nt configs at the suite's 40 ms timing, in A-B-B-A-A-B order (H200 runs drift
by ~10 % and the 40 ms passes run into the power cap, so both sides see the same GPU state), plus the per-tile
fixed cost fit (--k-sweep: M = 4096, N = 7168, K = 512 … 8192, 1792 tiles of 128×128 at every K; us(K) =
fixed + slope · K/128, ours (128×128 PIPE0 tiles) and cuBLAS block-scaled).

    PYTHONPATH=. python benchmarks/probe_fp8_gemm_ab.py [--shapes 4096:7168:2048,...] [--b '{"BLOCK_N": 128}'] [--k-sweep]

A = the committed config (fp8_gemm.get_config), B = the committed tl config with GLUON = --b (Gluon overrides,
default: the plain 128×128 PIPE0 tiles, i.e. the committed kernel without WIDE). Each side is checked first
(NaN-poisoned out, calc_diff < 1e-3 against the fp32 reference). Prints one JSON line per shape and round.

--gpu-ab N (session 18; the method of bench_grouped_ws.py --ab): the committed config, every --variant NAME=GLUON-JSON
(the committed tl config with that GLUON entry, e.g. '{"STREAM_K": true}') and cuBLAS block-scaled are each captured
as one CUDA graph of one call per rotated input set, then replayed N rounds interleaved (order reversed every round),
every replay queued behind a device sleep and timed on the GPU clock (host launch latency outside the events;
--sustained: no sleeps, after as many warm-up rounds, so the sides run power-capped as in the suite's passes). Prints
per shape each side's median µs / TFLOP/s and its median per-round ratio to the committed config; --rows FILE appends
one JSON row per shape and side.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_fp8_gemm import calc_diff, check_gluon_variant, graph_time_us, make_sets, peer_fn  # noqa: E402

from tritonseek.benchrun import (git_commit, int_tuple_list, nonnegative_int, out_file, positive_int,  # noqa: E402
                                 require_cuda)
from tritonseek.kernels import fp8_gemm as G  # noqa: E402
from tritonseek.kernels.reference.fp8 import fp8_gemm_nt_ref  # noqa: E402


# "@s17" as a variant / --b: the session-17 table's GLUON entry of the shape (M ≤ 128: tl split-K except two Gluon
# 128-row entries; the stream-K entries replaced them in session 18), else the committed one
_S17_GLUON = {(128, 32768, 512): dict(BLOCK_N=128, NUM_STAGES=4, WGS=2), (128, 7168, 2048): dict(BLOCK_N=64, NUM_STAGES=6, WGS=2)}


def _variant_gluon(v, m, n, k, committed):
    if v != "@s17":
        return v
    if G._m_class(m) == "128":
        return _S17_GLUON.get((128, n, k))
    return committed.get("GLUON")


def _fns(sets, cfg):
    return [lambda s=s: G.fp8_gemm_nt(s[0], s[1], s[2], s[3], out=s[4], config=cfg) for s in sets]


def ab(m, n, k, b_gluon, rounds):
    sets = make_sets(m, n, k, torch.device("cuda"))
    a_q, a_s, b_q, b_s, _ = sets[0]
    ref = fp8_gemm_nt_ref(a_q, a_s, b_q, b_s, out_dtype=torch.float32)
    cfg_a = dict(G.get_config(m, n, k, G._num_sms(0)))
    b_gluon = _variant_gluon(b_gluon, m, n, k, cfg_a)
    cfg_b = dict({key: v for key, v in cfg_a.items() if key != "GLUON"}, GLUON=b_gluon)
    for name, cfg in (("A", cfg_a), ("B", cfg_b)):
        out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
        G.fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out, config=cfg)
        d = calc_diff(out.float(), ref)
        if torch.isnan(out).any().item() or not d < 1e-3:
            print(json.dumps(dict(case=[m, n, k], side=name, config=cfg, rejected=True, calc_diff=d)), flush=True)
            return
    times = {"A": [], "B": []}
    for side in "ABBAAB"[: 2 * rounds]:
        times[side].append(graph_time_us(_fns(sets, cfg_a if side == "A" else cfg_b), 40.0))
    flop = 2 * m * n * k
    ta, tb = statistics.median(times["A"]), statistics.median(times["B"])
    print(json.dumps(dict(case=[m, n, k], a=cfg_a.get("GLUON"), b=b_gluon, a_us=[round(t, 2) for t in times["A"]],
                          b_us=[round(t, 2) for t in times["B"]], a_median_us=round(ta, 2), b_median_us=round(tb, 2),
                          a_tflops=round(flop / ta / 1e6, 1), b_tflops=round(flop / tb / 1e6, 1),
                          a_faster_by=round(tb / ta - 1, 4))), flush=True)


def k_sweep():
    m, n, fits = 4096, 7168, {"ours": [], "cublas": []}
    for k in (512, 1024, 2048, 4096, 8192):
        sets = make_sets(m, n, k, torch.device("cuda"))
        pf = [peer_fn(s[0], s[1], s[2], s[3], n)[0] for s in sets]
        cfg = dict(G._default_config(m, n, k, G._num_sms(0)), GLUON=dict(SPLIT=True, UNROLL2=True))  # 128×128 PIPE0
        t = min(graph_time_us(_fns(sets, cfg), 10.0) for _ in range(2))
        p = min(graph_time_us(pf, 10.0) for _ in range(2))
        fits["ours"].append((k / 128, t))
        fits["cublas"].append((k / 128, p))
        print(json.dumps(dict(K=k, ours_us=round(t, 2), cublas_us=round(p, 2))), flush=True)
    for name, pts in fits.items():
        xs, ys = zip(*pts)
        slope = statistics.linear_regression(xs, ys).slope
        fixed = statistics.mean(ys) - slope * statistics.mean(xs)
        print(f"fit {name}: {fixed:.2f} us fixed + {slope:.3f} us per K block (14 waves: {fixed / 14:.3f} us per tile, "
              f"{slope / 14 * 1000:.1f} ns per tile-K-block)", flush=True)


def _check(sets, ref, cfg) -> float | None:
    """calc_diff of one NaN-poisoned call of cfg on set 0, None if any output stayed unwritten."""
    a_q, a_s, b_q, b_s, _ = sets[0]
    out = torch.full(sets[0][4].shape, float("nan"), dtype=torch.bfloat16, device="cuda")
    G.fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out, config=cfg)
    torch.cuda.synchronize()
    return None if torch.isnan(out).any().item() else calc_diff(out.float(), ref)


def gpu_ab(m, n, k, variants: dict, rounds: int, rows_path: str, commit: str, sleep_cycles: int = 200_000,
           sustained: bool = False):
    """Interleaved GPU-clock A/B (see the module docstring) of the committed config, the variants and cuBLAS.
    sustained: no device sleep between replays, after as many unrecorded warm-up rounds, so every side is timed in the
    power-capped state of the suite's back-to-back 40 ms passes (the sleeps let the GPU cool between replays)."""
    from benchmarks.bench_grouped_ws import _interleaved_gpu_us  # h3moe's timer (session 17), one graph per side
    sets = make_sets(m, n, k, torch.device("cuda"))
    a_q, a_s, b_q, b_s, _ = sets[0]
    ref = fp8_gemm_nt_ref(a_q, a_s, b_q, b_s, out_dtype=torch.float32)
    committed = dict(G.get_config(m, n, k, G._num_sms(0)))
    cfgs = {"committed": committed}
    for name, gluon in variants.items():
        cfgs[name] = dict({key: v for key, v in committed.items() if key != "GLUON"},
                          GLUON=_variant_gluon(gluon, m, n, k, committed))
    runs, diffs = {}, {}
    for name, cfg in cfgs.items():
        try:
            d = _check(sets, ref, cfg)
        except Exception as e:  # a launch failure is a finding, not a crash
            print(json.dumps(dict(case=[m, n, k], side=name, error=f"{type(e).__name__}: {e}"[:300])), flush=True)
            continue
        diffs[name] = d
        if d is None or not d < 1e-3:
            print(json.dumps(dict(case=[m, n, k], side=name, config=cfg, rejected=True, calc_diff=d)), flush=True)
            continue
        runs[name] = _fns(sets, cfg)
    if n % 128 == 0:
        runs["cublas"] = [peer_fn(s[0], s[1], s[2], s[3], n)[0] for s in sets]
    # one graph per side holding one call per input set (rotated so L2 does not hold the weights), per-call µs
    sides = {name: (lambda fs=fs: [f() for f in fs]) for name, fs in runs.items()}
    try:
        if sustained:
            sleep_cycles = 0
            _interleaved_gpu_us(sides, rounds, 0)  # warm-up into the power cap, not recorded
        res = _interleaved_gpu_us(sides, rounds, sleep_cycles)
    except Exception as e:  # a capture failure is a finding, not a crash
        print(json.dumps(dict(case=[m, n, k], error=f"{type(e).__name__}: {e}"[:300])), flush=True)
        return
    names = list(res)
    us = {name: [t / len(sets) for t in res[name]] for name in names}
    flop, nbytes = 2 * m * n * k, m * k + n * k + 2 * m * n
    base = us.get("committed")
    peer = statistics.median(us["cublas"]) if "cublas" in us else None
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__, commit=commit,
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    for name in names:
        med = statistics.median(us[name])
        ratio = statistics.median([x / y for x, y in zip(us[name], base)]) if base else None
        row = dict(suite="fp8_gemm_ab", case=dict(M=m, N=n, K=k), variant=name, config=cfgs.get(name),
                   us=round(med, 2), tflops=round(flop / med / 1e6, 1), gbps=round(nbytes / med / 1e3, 1),
                   peer="cublas_scaled_mm_blockwise" if peer else None, peer_us=round(peer, 2) if peer else None,
                   ratio_vs_peer=round(peer / med, 3) if peer else None,
                   ratio_to_committed=round(ratio, 4) if ratio else None,
                   p10_us=round(sorted(us[name])[len(us[name]) // 10], 2),
                   p90_us=round(sorted(us[name])[len(us[name]) * 9 // 10], 2), rounds=rounds, n_sets=len(sets),
                   calc_diff=diffs.get(name),
                   timing="gpu_clock_interleaved_sustained" if sustained else "gpu_clock_interleaved", **env)
        mode = " sustained" if sustained else ""
        print(f"  gpu-ab{mode} {m}x{n}x{k} {name:>12}: {med:8.2f} us {flop / med / 1e6:7.1f} TFLOP/s ratio "
              f"{(ratio or 0):.4f} (p10 {row['p10_us']}, p90 {row['p90_us']})", flush=True)
        if rows_path:
            with open(rows_path, "a") as f:
                f.write(json.dumps(row) + "\n")


def gluon_value(text: str):
    """argparse type of --b and --variant's value: "@s17", JSON null (the tl twin) or a JSON object of Gluon overrides
    (keys and values checked as bench_fp8_gemm's --variants), so a typo is one line before any GPU work (tester 2,
    s19: a JSONDecodeError traceback)."""
    if text == "@s17":
        return text
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f'{text!r} is not "@s17", null or a JSON object of Gluon overrides') from None
    if v is not None:
        if not isinstance(v, dict):
            raise argparse.ArgumentTypeError(f'{text!r} is not "@s17", null or a JSON object of Gluon overrides')
        try:
            check_gluon_variant(v)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(f"{text}: {e}") from None
    return v


def named_variant(text: str) -> tuple[str, object]:
    """argparse type of --variant: NAME=VALUE, VALUE as :func:`gluon_value`."""
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name.strip(), gluon_value(value)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096:7168:16384,4096:4096:7168,4096:7168:2048", type=int_tuple_list(3),
                   help="M:N:K[,M:N:K...]")
    p.add_argument("--b", default='{"SPLIT": true, "UNROLL2": true}', type=gluon_value)
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--k-sweep", action="store_true")
    p.add_argument("--gpu-ab", type=nonnegative_int, default=0,
                   help="N interleaved GPU-clock rounds (replaces the 40 ms A/B)")
    p.add_argument("--variant", action="append", default=[], type=named_variant,
                   help="NAME=GLUON-JSON (or NAME=@s17, NAME=null), with --gpu-ab (repeatable)")
    p.add_argument("--rows", default="", type=out_file, help="with --gpu-ab: append JSON rows here")
    p.add_argument("--sustained", action="store_true",
                   help="with --gpu-ab: replays back to back (no device sleep) after N warm-up rounds: the "
                        "power-capped state of the suite's 40 ms passes")
    args = p.parse_args()
    require_cuda("probe_fp8_gemm_ab")
    commit = git_commit()
    variants = dict(args.variant)
    for shape in args.shapes:
        if args.gpu_ab:
            gpu_ab(*shape, variants, args.gpu_ab, args.rows, commit, sustained=args.sustained)
        else:
            ab(*shape, args.b, args.rounds)
    if args.k_sweep:
        k_sweep()


if __name__ == "__main__":
    main()
