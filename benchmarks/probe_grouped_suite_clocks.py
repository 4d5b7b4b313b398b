"""Do the grouped_gemm_contiguous suite's timings agree with the GPU clock, per kernel? (issue 5, session 24, h1df)

    PYTHONPATH=. python benchmarks/probe_grouped_suite_clocks.py [--reps 5] [--out rows.jsonl]

In H200 s24 W2 (tree 25aabfa) the suite timed the contiguous (7168, 2048) cases far slower as a one-call graph
(``us_graph``: graph_replay_us, each replay launched on an idle GPU and waited for) than on the GPU clock (interleaved
replays behind a device sleep): 4×8192 902 vs 849 µs, 8×4096 975 vs 853 µs, while (4096, 7168) agreed (1491 / 1514
vs 1502 / 1517). This probe times the same kernels on the suite's own operands (bench_moe_grouped's ``_weights``,
randn activations, MN-major scales) by every method, ``--reps`` times in rotated order, in one process:

* ``eager``: triton.testing.do_bench(warmup 5, rep 30) median (the suite's ``us``);
* ``graph``: benchmarks.timing.graph_replay_us(min_ms 30) (the suite's ``us_graph``);
* ``gpu``: one-call graph replays behind a device sleep (bench_grouped_ws._interleaved_gpu_us, 20 rounds);
* ``sustained``: ~150 ms of back-to-back replays of the one-call graph, µs per call (prefill-like steady state under
  the 700 W cap);
* ``table``: the dense form's tile table alone (build_tile_table, three small kernels) by ``graph`` and ``gpu``.

Variants: ``default`` (grouped_fp8_gemm_contiguous_ws as the model calls it: the dense form where
``_dense_form_pays``, SPLIT_TAIL from 4096 rows per expert), ``ws128`` (config DENSE_FORM False: the 128-row
kernel), ``df_nosplit`` (the dense form with SPLIT_TAIL off). Every variant is checked first against the fp32
reference on sampled rows of every expert (NaN-poisoned out, calc_diff < 1e-3); a failing one is not timed. The SM
clock and power (nvidia-smi) are printed after each case's rep. Rows: suite ``grouped_suite_clocks``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_grouped_ws import _interleaved_gpu_us, _median  # noqa: E402
from benchmarks.bench_moe_grouped import _weights  # noqa: E402
from benchmarks.timing import graph_replay_us  # noqa: E402

from tritonseek.benchrun import git_commit, out_file, positive_int, require_cuda  # noqa: E402
from tritonseek.kernels.grouped_gemm_dense_form import (  # noqa: E402
    build_tile_table, grouped_fp8_gemm_contiguous_df, max_row_tiles)
from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_contiguous_ws  # noqa: E402
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_contiguous_ref  # noqa: E402

CASES = [(8, 4096, 7168, 2048), (4, 8192, 7168, 2048), (8, 4096, 4096, 7168)]


def _smi() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu",
                               "--format=csv,noheader", "-i", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]],
                              capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception as e:  # the clock read is context, not a result
        return f"nvidia-smi: {type(e).__name__}"


def _sustained_us(fn, ms: float = 150.0) -> float:
    """µs per call over ~ms of back-to-back replays of a one-call graph of fn (no host sync in between)."""
    fn()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    st.record()
    g.replay()
    en.record()
    en.synchronize()
    n = int(min(1000, max(5, ms / max(st.elapsed_time(en), 1e-3))))
    st.record()
    for _ in range(n):
        g.replay()
    en.record()
    en.synchronize()
    del g
    return st.elapsed_time(en) * 1000.0 / n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=positive_int, default=5)
    p.add_argument("--out", type=out_file, default=None, help="JSONL rows (suite grouped_suite_clocks)")
    args = p.parse_args()
    require_cuda("probe_grouped_suite_clocks.py")
    dev = torch.device("cuda")
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    t0 = time.time()

    def log(s):
        print(f"[+{time.time() - t0:5.1f}s] {s}", flush=True)

    rows, summary = [], []
    torch.manual_seed(0)
    for G, m, N, K in CASES:
        M = G * m
        mi = (torch.arange(M, device=dev) // m).to(torch.int32)
        a = torch.randn(M, K, device=dev).to(torch.float8_e4m3fn)
        a_s = (torch.rand(K // 128, M, device=dev) * 1e-2 + 1e-3).t()
        b, bs = _weights(G, N, K, dev)
        rows_chk = torch.cat([torch.arange(g * m, g * m + 256, device=dev) for g in range(G)]
                             + [torch.arange(g * m + m - 256, g * m + m, device=dev) for g in range(G)])
        ref = grouped_fp8_gemm_contiguous_ref(a[rows_chk], a_s[rows_chk], b, bs, mi[rows_chk],
                                              out_dtype=torch.float32)
        out = torch.empty(M, N, device=dev, dtype=torch.bfloat16)
        tab = torch.empty(max_row_tiles(M) * 4 + 3 * triton.cdiv(M, 128) + 1, dtype=torch.int32, device=dev)
        fns = {
            "default": lambda: grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, out=out),
            "ws128": lambda: grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, out=out,
                                                            config=dict(DENSE_FORM=False)),
            "df_nosplit": lambda: grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, out=out,
                                                                 config=dict(SPLIT_TAIL=False)),
        }
        label = f"{G}x{m} ({N}, {K})"
        ok = {}
        for name, fn in fns.items():
            out.fill_(float("nan"))
            fn()
            torch.cuda.synchronize()
            d = calc_diff(out[rows_chk].float(), ref)
            good = bool(torch.isfinite(out).all()) and d < 1e-3
            log(f"  check {name:<10} {label}: calc_diff {d:.2e} {'OK' if good else 'FAIL (not timed)'}")
            if good:
                ok[name] = fn
        flops = 2 * M * N * K
        res = {(n, k): [] for n in ok for k in ("eager", "graph", "gpu", "sustained")}
        names = list(ok)
        for r in range(args.reps):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                fn = ok[n]
                res[(n, "eager")].append(triton.testing.do_bench(fn, warmup=5, rep=30, return_mode="median") * 1e3)
                res[(n, "graph")].append(graph_replay_us([fn], 30.0))
                res[(n, "gpu")].append(_median(_interleaved_gpu_us({n: fn}, 20)[n]))
                res[(n, "sustained")].append(_sustained_us(fn))
            log(f"  {label} rep {r} order {order}: " + " | ".join(
                f"{n} e {res[(n, 'eager')][-1]:.0f} g {res[(n, 'graph')][-1]:.0f} c {res[(n, 'gpu')][-1]:.0f} "
                f"s {res[(n, 'sustained')][-1]:.0f}" for n in names) + f" | smi {_smi()}")
        tg = graph_replay_us([lambda: build_tile_table(mi, M, tab)], 5.0)
        tc = _median(_interleaved_gpu_us({"t": lambda: build_tile_table(mi, M, tab)}, 20)["t"])
        log(f"{label}: table alone graph {tg:.1f} us, gpu clock {tc:.1f} us")
        for n in names:
            med = {k: _median(res[(n, k)]) for k in ("eager", "graph", "gpu", "sustained")}
            line = (f"{label:<18} {n:<10} " + "  ".join(f"{k} {med[k]:8.1f} us {flops / med[k] / 1e6:7.1f}"
                                                        for k in med))
            summary.append(line)
            rows.append(dict(suite="grouped_suite_clocks", case=dict(groups=G, m_per_group=m, N=N, K=K), variant=n,
                             us={k: round(v, 2) for k, v in med.items()},
                             tflops={k: round(flops / v / 1e6, 1) for k, v in med.items()},
                             samples={k: [round(x, 1) for x in res[(n, k)]] for k in med}, reps=args.reps,
                             table_us=dict(graph=round(tg, 2), gpu=round(tc, 2)), **env))
        fns = ok = a = b = out = ref = None  # free the case's operands before the next
        torch.cuda.empty_cache()
    log("\n== medians over reps: µs and TFLOP/s by method (eager = suite us, graph = suite us_graph, gpu = GPU "
        "clock behind a sleep, sustained = back-to-back replays) ==")
    for line in summary:
        log(line)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
