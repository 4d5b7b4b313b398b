"""The activation-quant part of suite ``fp8_gemm`` (rows ``suite: "fp8_quant"``), run by benchmarks/bench_fp8_gemm.py
(``--skip-quant`` leaves it out, ``--skip-gemm`` runs it alone, ``--sweep`` also times QUANT_ROWS launch configs).

* Cases: per_token_group_quant_fp8 at M ∈ {64, 4096} × K ∈ {2048, 7168}; silu_mul_quant_fp8 at M ∈ {64, 4096} ×
  I ∈ {2048, 18432} (x = [M, 2·I] bf16). Fresh torch.randn inputs, rotated over enough sets (2-16) that their bytes
  exceed ~200 MB (4× the L2).
* Check: scales equal the torch reference (rtol 1e-6) and q within 32 (fp32 values) of it; a config that fails is
  reported and not timed.
* ``us_graph`` (the suite's figure): median CUDA-graph replay of one call per input set ÷ calls, each replay waited for
  from an idle GPU (fp8_gemm_timing.graph_time_us); ``us``: eager median; GB/s = (M·width·2 + M·K + 4·M·G) / us_graph
  (bf16 in, e4m3 out, fp32 scales); ``target_gbps`` = 80 % of the 4.27 TB/s copy (issue 4); ``meets_target`` =
  gbps ≥ target_gbps; peer = the torch reference, graphed the same way.
* ``us_queued`` / ``gbps_queued`` (rows from s26 on): the same graph's replays each queued behind a device sleep
  (timing.replay_ms_queued), so the graph's launch from an idle GPU is left out: a second view on the GPU clock,
  never instead of ``us_graph``. The launch is spread over the n_sets calls only (8 at 4096×2048: the same calls twice
  per graph read 0.42 / 0.72 µs less per call for per_token / SiLU·mul at 2048, probe_quant_ab s21 W2 ``default_2x``),
  which is one reason a ``dst.copy_`` of the same bytes reads ~2.9-3.0 TB/s in ``us_graph`` (probe_quant_ab's copy
  rows), not 4.27.
* ``knobs``: what the committed launch sets for the op's M and K (fp8_quant._default_knobs; {} = none, as rows before
  s21); ``rows_cfg``: its (ROWS, num_warps, GROUPS) launch.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # a module of another script, not a benchmark of its own
    print("bench_fp8_quant_suite.py holds bench_fp8_gemm.py's activation-quant rows: run"
          "  PYTHONPATH=. python benchmarks/bench_fp8_gemm.py --skip-gemm [--sweep]")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402

from benchmarks.fp8_gemm_timing import eager_time_us, graph_time_us  # noqa: E402
from benchmarks.timing import _capture, replay_ms_queued  # noqa: E402
from tritonseek.kernels import fp8_quant  # noqa: E402
from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8, silu_mul_quant_fp8  # noqa: E402
from tritonseek.kernels.reference.fp8 import per_token_group_quant_fp8_ref, silu_mul_quant_fp8_ref  # noqa: E402

QUANT_ROWS = [(16, 4), (8, 4, 4), (16, 4, 4), (16, 8, 4), (4, 4, 8)]
QUANT_CASES = [("per_token_group_quant_fp8", m, k) for m in (64, 4096) for k in (2048, 7168)] + [
    ("silu_mul_quant_fp8", m, i) for m in (64, 4096) for i in (2048, 18432)
]


def bench_quant(args, env, rows):
    """Append one ``fp8_quant`` row per QUANT_CASES entry to ``rows`` (args.sweep: the fastest correct QUANT_ROWS
    config; else the library's committed launch); env = the run's gpu/torch/triton/commit/date fields."""
    dev = torch.device("cuda")
    for op, m, k in QUANT_CASES:
        width = 2 * k if op.startswith("silu") else k
        g = triton.cdiv(k, 128)
        nbytes = m * width * 2 + m * k + 4 * m * g
        n_sets = int(min(16, max(2, math.ceil(200e6 / nbytes))))
        xs = [torch.randn(m, width, device=dev, dtype=torch.bfloat16) for _ in range(n_sets)]
        kern = per_token_group_quant_fp8 if op.startswith("per") else silu_mul_quant_fp8
        ref_fn = per_token_group_quant_fp8_ref if op.startswith("per") else silu_mul_quant_fp8_ref
        q_ref, s_ref = ref_fn(xs[0])
        best = None
        for rc in QUANT_ROWS if args.sweep else [None]:  # None: the library's committed choice
            try:
                q, s = kern(xs[0], rows_cfg=rc)
                ok = torch.allclose(s, s_ref, rtol=1e-6, atol=0) and (q.float() - q_ref.float()).abs().max().item() <= 32
                if not ok:
                    print(f"  REJECT quant {op} {m}x{k} {rc}", flush=True)
                    continue
                t = graph_time_us([lambda x=x, rc=rc: kern(x, rows_cfg=rc) for x in xs], 20.0)
                if best is None or t < best[0]:
                    best = (t, rc)
            except Exception as e:
                print(f"  FAIL quant {op} {rc}: {type(e).__name__}: {str(e)[:200]}", flush=True)
        if best is None:
            continue
        t, rc = best
        g = _capture([lambda x=x: kern(x, rows_cfg=rc) for x in xs])
        t_queued = statistics.median(replay_ms_queued(g, 40)) * 1000.0 / len(xs)
        del g
        peer_us = graph_time_us([lambda x=x: ref_fn(x) for x in xs])
        row = dict(suite="fp8_quant", case=dict(op=op, M=m, K=k), us=round(eager_time_us([lambda x=x: kern(x, rows_cfg=rc) for x in xs]), 2),
                   us_graph=round(t, 2), tflops=None, gbps=round(nbytes / t / 1e3, 1), rows_cfg=list(rc or fp8_quant._quant_config(m, op.startswith("silu"))),
                   peer="torch_reference", peer_us=round(peer_us, 2), ratio_vs_peer=round(peer_us / t, 3),
                   target_gbps=round(0.8 * 4270, 1),
                   knobs={key: v for key, v in fp8_quant._resolve_knobs(None, m, op.startswith("silu"), k).items()
                          if v != fp8_quant._KNOB_DEFAULTS[key]})
        row["meets_target"] = row["gbps"] >= row["target_gbps"]
        row.update(us_queued=round(t_queued, 2), gbps_queued=round(nbytes / t_queued / 1e3, 1))
        row.update(env)
        rows.append(row)
        print(json.dumps(row), flush=True)


def print_quant(rows) -> None:
    """The table lines of the fp8_quant rows in ``rows`` (others skipped)."""
    for r in rows:
        if r["suite"] == "fp8_quant":
            print("quant %-26s M=%-5d K=%-6d %8.2f us %8.1f GB/s (torch ref %.1f us) | GPU clock %s us %s GB/s" % (
                r["case"]["op"], r["case"]["M"], r["case"]["K"], r["us_graph"], r["gbps"], r["peer_us"],
                r.get("us_queued", "-"), r.get("gbps_queued", "-")))
