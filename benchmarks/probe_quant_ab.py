"""Probe (issue 4, s21): launch variants of the per-token-group FP8 quant kernels at the suite's large shapes.

    PYTHONPATH=. python benchmarks/probe_quant_ab.py [--out rows.jsonl] [--rounds 11] [--cases all|large]

1. Correctness at the real shape, NaN-poisoned outputs: the committed launch against the torch reference on the
   GPU (per-token: bytes as tests/kernels/test_fp8_quant._assert_same_bytes; SiLU·mul: scales within 1e-6, q within
   one e4m3 code), then every variant against the committed launch byte for byte (q and scales; NaN by position);
   a variant that differs is not timed, and every row carries the committed launch's reference check.
   The input has −0, small negatives that round to ±0, ±inf and NaN planted in a few groups.
2. Timing: one CUDA graph per variant holding one call per rotated input set (the suite's set count: their bytes
   exceed ~200 MB, 4× the L2), replayed interleaved: each round times every variant (rotated order) as the median
   of 15 replays (CUDA events, GPU clock); a variant's figure is the median over rounds, with min/max as spread.
   "default" = the committed launch, "off" = every knob off (the launch before s21); each twice (…_AA) is the A/A
   control. "copy" = ``dst.copy_(src)`` moving the same bytes (read + write) per call, graphed the same way: the
   ceiling at this size. GB/s = (M·width·2 + M·K + 4·M·G) / t, as the suite.
3. Pairs (per_token quant → the fp8_gemm_nt reading q, M = 4096): whether streaming stores of q cost the GEMM; every
   variant's GEMM output is checked bit for bit against the all-off launch's.
W1 (cfabe8e) and W2 (23d6340) also timed a persistent grid, PDL launches, other ROWS / GPP launches and the decode
MLP chain; those knobs lost and were removed (figures in fp8_quant's knob record; this probe with them at 23a7ad0).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.timing import _capture, replay_ms  # noqa: E402
from tritonseek.benchrun import git_commit, require_cuda  # noqa: E402
from tritonseek.kernels import fp8_quant  # noqa: E402
from tritonseek.kernels.reference.fp8 import per_token_group_quant_fp8_ref, silu_mul_quant_fp8_ref  # noqa: E402

PER = "per_token_group_quant_fp8"
SILU = "silu_mul_quant_fp8"
LARGE = [(PER, 4096, 2048), (PER, 4096, 7168), (SILU, 4096, 2048), (SILU, 4096, 18432)]
SMALL = [(PER, 64, 2048), (PER, 64, 7168), (SILU, 64, 2048), (SILU, 64, 18432)]

# name → (rows_cfg or None = committed, knobs or None = committed): the committed default (streaming per_token at
# M ≥ 1024) against all-off and each half of the streaming hints (W2)
NAMED = {
    "default": (None, None), "default_AA": (None, None), "off": (None, {}), "off_AA": (None, {}),
    "loads": (None, dict(stream_loads=True)), "stores": (None, dict(stream_stores=True)),
    "stream": (None, dict(stream_loads=True, stream_stores=True)),
}
VARIANTS = {PER: ["default", "default_AA", "off", "off_AA", "loads", "stores"],
            SILU: ["default", "default_AA", "loads", "stores", "stream"]}
SMALL_VARIANTS = ["default", "default_AA", "stream"]
# quant → the FP8 GEMM that reads q (M = 4096, a DeepGEMM N×K whose K is the quant's width): does a streaming store
# of q cost the GEMM its L2 hits? (N, K) per case; the GEMM's weight is shared by the sets, as in a layer
PAIRS = [(4096, 7168, 4096), (4096, 2048, 7168)]
PAIR_VARIANTS = ["default", "default_AA", "off", "off_AA", "loads"]


def call(op, x, rc, knobs):
    k = x.shape[1] // 2 if op == SILU else x.shape[1]
    return fp8_quant._launch_group_quant_h(x, k, k if op == SILU else 0, 128, False, op == SILU, rc, knobs)


def planted(m, width, dev, seed):
    g = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn(m, width, device=dev, generator=g)
    x[:, 0] = 400.0  # scale 400/448 in group 0: the small negatives below round to ±0
    x[:, 1:64] = (torch.rand(m, 63, device=dev, generator=g) - 0.75) * 2e-3
    x[0, 64], x[1, 65] = -0.0, 0.0
    x[2, 200], x[3, 300], x[4, 129] = float("inf"), -float("inf"), float("nan")
    x[5, width - 1] = float("nan")  # the up half's last group under SiLU·mul
    return x.to(torch.bfloat16)


def same_bytes(a, b):
    """q or s of two launches equal byte for byte outside NaN, NaN at the same positions."""
    na, nb = torch.isnan(a.float()), torch.isnan(b.float())
    if not torch.equal(na, nb):
        return False
    va = a.contiguous().view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a.contiguous().view(torch.int32)
    vb = b.contiguous().view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b.contiguous().view(torch.int32)
    return torch.equal(va[~na], vb[~nb])


def check_base_vs_ref(op, x, q, s):
    """The committed launch against the torch reference (on the GPU): per-token bytes with ≤ 1 per million one code
    apart (same sign), SiLU·mul scales rtol 1e-6 and q within one code; NaN by position."""
    q_ref, s_ref = (per_token_group_quant_fp8_ref if op == PER else silu_mul_quant_fp8_ref)(x)
    nan, nan_ref = torch.isnan(q.float()), torch.isnan(q_ref.float())
    if not torch.equal(nan, nan_ref) or not torch.equal(torch.isnan(s), torch.isnan(s_ref)):
        return "NaN positions differ"
    b, rb = q.view(torch.uint8)[~nan].to(torch.int16), q_ref.view(torch.uint8)[~nan].to(torch.int16)
    fin = torch.isfinite(s_ref)
    if op == PER:
        diff = b != rb
        if not torch.equal(b & 0x80, rb & 0x80) or int(diff.sum()) > b.numel() // 1_000_000:
            return f"{int(diff.sum())} bytes differ, sign bits differ {int(((b ^ rb) & 0x80).ne(0).sum())}"
        if not torch.equal(s[fin], s_ref[fin]):
            return "scales differ"
    else:
        if ((b & 0x7F) - (rb & 0x7F)).abs().max() > 1 or not torch.allclose(s[fin], s_ref[fin], rtol=1e-6, atol=0):
            return "beyond one code / scale rtol"
    return ""


def ptx_stats(h):
    """Registers, spills and global-access counts of a compiled variant (vector widths, cache hints)."""
    try:
        lines = [ln for ln in h.asm["ptx"].splitlines() if "ld.global" in ln or "st.global" in ln]
        count = lambda *keys: sum(all(key in ln for key in keys) for ln in lines)  # noqa: E731
        return dict(regs=h.n_regs, spills=h.n_spills, ld=count("ld.global"), ld_v4=count("ld.global", ".v4"),
                    st=count("st.global"), st_v4=count("st.global", ".v4"), st_v2=count("st.global", ".v2"),
                    evict_first=count("evict_first"), st_cs=count("st.global.cs"))
    except Exception as e:  # a stats failure must not cost the timing
        return dict(ptx_error=f"{type(e).__name__}: {e}"[:120])


def time_round(graphs, order, reps=15):
    out = {}
    for name in order:
        g, n = graphs[name]
        out[name] = statistics.median(replay_ms(g, reps)) * 1000.0 / n
    return out


def interleave(graphs, rounds):
    """{name: [per-call µs of each round]}: a discarded warm-up round, then `rounds` rounds in rotated order."""
    names = list(graphs)
    per = {n: [] for n in names}
    time_round(graphs, names)
    for r in range(rounds):
        for n, t in time_round(graphs, names[r % len(names):] + names[:r % len(names)]).items():
            per[n].append(t)
    return per


def summary_rows(suite, case, per, env, rows, base="default", **extra):
    b = statistics.median(per[base])
    for n, ts in per.items():
        t = statistics.median(ts)
        row = dict(suite=suite, case=case, variant=n, us_graph=round(t, 3), us_min=round(min(ts), 3),
                   us_max=round(max(ts), 3), vs_base=round(b / t, 4), rounds=len(ts), **extra)
        row.update(env)
        rows.append(row)
        print(json.dumps(row), flush=True)


def run_pair(m, k, n, rounds, env, rows):
    """per_token quant of x [m, k] then fp8_gemm_nt(q, s, W [n, k]) per rotated set; outputs of every variant equal
    to the all-off launch's bit for bit (checked after a replay)."""
    from tritonseek.kernels.fp8_gemm import fp8_gemm_nt
    from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref

    dev = torch.device("cuda")
    w, ws = per_block_quant_fp8_ref(torch.randn(n, k, device=dev) * 0.05)
    n_sets = int(min(16, max(2, math.ceil(200e6 / (m * k * 3 + m * n * 2)))))
    xs = [torch.randn(m, k, device=dev, dtype=torch.bfloat16) for _ in range(n_sets)]
    outs = {v: [torch.full((m, n), float("nan"), device=dev, dtype=torch.bfloat16) for _ in xs] for v in PAIR_VARIANTS}

    def step(x, out, kn):
        q, sc, _ = call(PER, x, None, kn)
        fp8_gemm_nt(q, sc, w, ws, out=out)

    graphs = {v: (_capture([lambda x=x, o=o, kn=NAMED[v][1]: step(x, o, kn) for x, o in zip(xs, outs[v])]), n_sets)
              for v in PAIR_VARIANTS}
    for v in PAIR_VARIANTS:
        graphs[v][0].replay()
    torch.cuda.synchronize()
    ok = {v: all(torch.equal(a, b) for a, b in zip(outs[v], outs["off"])) for v in PAIR_VARIANTS}
    print(f"check pair quant {m}x{k} -> gemm N={n}: {ok}", flush=True)
    graphs = {v: g for v, g in graphs.items() if ok[v]}
    summary_rows("fp8_quant_probe_pair", dict(op=PER, M=m, K=k, gemm_N=n), interleave(graphs, rounds), env, rows,
                 n_input_sets=n_sets, note="graph of (quant, fp8_gemm_nt) per set; us per pair")


def run_case(op, m, k, names, rounds, env, rows):
    dev = torch.device("cuda")
    width = 2 * k if op == SILU else k
    g = math.ceil(k / 128)
    nbytes = m * width * 2 + m * k + 4 * m * g
    n_sets = int(min(16, max(2, math.ceil(200e6 / nbytes))))
    variants = [(n, *NAMED[n]) for n in (names or VARIANTS[op])]
    # 1. correctness, NaN-poisoned outputs (fp8_quant.torch.empty → NaN-filled)
    from tests.kernels.poison import PoisonTorch
    x = planted(m, width, dev, m + k)
    real_torch = fp8_quant.torch
    fp8_quant.torch = PoisonTorch()
    ok, stats = {}, {}
    try:
        q0, s0, _ = call(op, x, None, {})  # all knobs off: what W1 checked against the reference
        err = check_base_vs_ref(op, x, q0, s0)
        print(f"check {op} {m}x{k} base vs torch reference: {err or 'OK'}", flush=True)
        for name, rc, kn in variants:
            try:
                q, s, h = call(op, x, rc, kn)
                torch.cuda.synchronize()
                good = same_bytes(q, q0) and same_bytes(s, s0)
                stats[name] = ptx_stats(h)
                ok[name] = good
                print(f"  check {name:12s} {'OK' if good else 'MISMATCH'} {stats[name]}", flush=True)
            except Exception as e:
                ok[name] = False
                print(f"  FAIL {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
    finally:
        fp8_quant.torch = real_torch
    # 2. timing
    xs = [torch.randn(m, width, device=dev, dtype=torch.bfloat16) for _ in range(n_sets)]
    half = nbytes // 2
    srcs = [torch.empty(half, dtype=torch.uint8, device=dev).random_() for _ in range(n_sets)]
    dsts = [torch.empty_like(t) for t in srcs]
    graphs = {}
    for name, rc, kn in variants:
        if ok.get(name):
            graphs[name] = (_capture([lambda x=x, rc=rc, kn=kn: call(op, x, rc, kn) for x in xs]), n_sets)
    graphs["copy"] = (_capture([lambda s=s, d=d: d.copy_(s) for s, d in zip(srcs, dsts)]), n_sets)
    if m >= 1024 and "default" in graphs:
        # the same calls twice per graph (sets rotate, so the second pass still misses L2): how much of the
        # per-call time is the graph's own launch, which the suite spreads over n_sets calls only
        graphs["default_2x"] = (_capture([lambda x=x: call(op, x, None, None) for x in xs + xs]), 2 * n_sets)
        graphs["copy_2x"] = (_capture([lambda s=s, d=d: d.copy_(s) for s, d in zip(srcs + srcs, dsts + dsts)]),
                             2 * n_sets)
    per = interleave(graphs, rounds)
    names_t = list(graphs)
    base = statistics.median(per["default"]) if "default" in per else None
    for n in names_t:
        t = statistics.median(per[n])
        row = dict(suite="fp8_quant_probe", case=dict(op=op, M=m, K=k), variant=n, us_graph=round(t, 3),
                   us_min=round(min(per[n]), 3), us_max=round(max(per[n]), 3), gbps=round(nbytes / t / 1e3, 1),
                   vs_base=round(base / t, 4) if base else None, n_input_sets=n_sets, rounds=rounds,
                   bytes_per_call=nbytes, checked=ok.get(n, n.startswith("copy") or n == "default_2x"),
                   base_vs_reference=err or "OK")
        v = next((v for v in variants if v[0] == n), None)
        if v is not None:
            kn = v[2] if v[2] is not None else fp8_quant._default_knobs(m, op == SILU)
            row.update(rows_cfg=list(v[1]) if v[1] else list(fp8_quant._quant_config(m, op == SILU)), knobs=kn,
                       ptx=stats.get(n))
        elif n.startswith("copy"):
            row["note"] = "dst.copy_(src), same bytes read+written per call"
        if n.endswith("_2x"):
            row["note"] = row.get("note", "committed launch") + "; each set twice per graph (2·n_input_sets calls)"
        row.update(env)
        rows.append(row)
        print(json.dumps(row), flush=True)
    del graphs, xs, srcs, dsts
    torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="probe_quant_rows.jsonl")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--cases", choices=["all", "large"], default="all")
    p.add_argument("--variants", default="", help="comma-separated variant names (default: all)")
    args = p.parse_args()
    require_cuda("probe_quant_ab")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a job's `timeout`: still write the rows measured
    import datetime

    import triton
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    names = [s for s in args.variants.split(",") if s]
    rows = []
    try:
        for op, m, k in LARGE:
            run_case(op, m, k, names, args.rounds, env, rows)
        if args.cases == "all":
            for op, m, k in SMALL:
                run_case(op, m, k, SMALL_VARIANTS, args.rounds, env, rows)
            for case in PAIRS:
                try:  # a failing pair is reported; the others still run
                    run_pair(*case, args.rounds, env, rows)
                except Exception as e:
                    print(f"FAIL run_pair{case}: {type(e).__name__}: {str(e)[:300]}", flush=True)
    finally:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print("\n%-28s %-5s %-6s %-14s %9s %9s %9s %8s %7s" % ("op", "M", "K", "variant", "us", "min", "max", "GB/s",
                                                               "vs_base"))
        for r in rows:
            c = r["case"]
            kind = "+gemm" if r["suite"] == "fp8_quant_probe_pair" else ""
            print("%-28s %-5d %-6s %-14s %9.3f %9.3f %9.3f %8s %7s" % (
                c["op"][:22] + kind, c["M"], c["K"], r["variant"], r["us_graph"], r["us_min"],
                r["us_max"], r.get("gbps", "-"), r["vs_base"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
