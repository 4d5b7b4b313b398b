"""Timing, input and peer helpers of the ``fp8_gemm`` suite (benchmarks/bench_fp8_gemm.py), shared with
probe_fp8_gemm_ab.py and bench_gemm_decode.py; moved out of bench_fp8_gemm.py (670 lines) to keep it under ~600.
Same functions, same row fields; bench_fp8_gemm re-exports them under their old names.

* ``graph_time_us`` (the measurement): median CUDA-graph replay over one launch per rotated input set;
  ``eager_time_us``: triton.testing.do_bench median; ``kernel_fields``: profiler kernel durations, a second view
  marked ``kernel_time_unverified``.
* ``make_sets``: fresh random fp8 operands quantized by the reference, rotated so their bytes exceed the L2.
* ``peer_fn``: cuBLAS block-scaled FP8 (``scaled_mm``), b zero-padded to a multiple of 128 rows where it rejects N.
* ``calc_diff``: DeepGEMM's 1 - cosine-like similarity (0 = equal).
"""

from __future__ import annotations

import math

import torch
import triton

from benchmarks.timing import graph_replay_us
from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref, per_token_group_quant_fp8_ref


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    return float(1 - 2 * (x * y).sum() / (x * x + y * y).sum())


def graph_time_us(fns, min_ms: float = 40.0) -> float:
    """Median replay time of a CUDA graph holding one call of each fn, divided by len(fns)."""
    return graph_replay_us(fns, min_ms, max_reps=200)


def eager_time_us(fns, rep_ms: int = 40) -> float:
    """Median µs of one eager call (launched from Python, host overhead included), cycling through fns (rotated
    inputs) under triton.testing.do_bench with rep_ms of repetitions."""
    i = [0]

    def step():
        fns[i[0] % len(fns)]()
        i[0] += 1

    return triton.testing.do_bench(step, warmup=10, rep=rep_ms, return_mode="median") * 1000.0


def kernel_fields(fns, pfns, flop: float) -> dict:
    """us_kernel / tflops_kernel (ours) and peer_us_kernel / peer_tflops_kernel / ratio_vs_peer_kernel: profiler kernel
    durations per call, L2 flushed before each replay (benchmarks.timing.kernel_time_us; the anchors' way of timing),
    beside the graph-replay fields, which stay as they are; a failure is noted in the row, not raised. Every row with
    these fields carries ``kernel_time_unverified: true``: kernel_time_us is not trusted on its own (its docstring: it
    disagrees with graph replay by more than the launch latency at large shapes, both ways, on the H200)."""
    try:
        from benchmarks.timing import kernel_time_us

        out = dict(us_kernel=round(kernel_time_us(fns), 2), kernel_time_unverified=True)
        out["tflops_kernel"] = round(flop / out["us_kernel"] / 1e6, 1)
        if pfns:
            out["peer_us_kernel"] = round(kernel_time_us(pfns), 2)
            out["peer_tflops_kernel"] = round(flop / out["peer_us_kernel"] / 1e6, 1)
            out["ratio_vs_peer_kernel"] = round(out["peer_us_kernel"] / out["us_kernel"], 3)
        return out
    except Exception as e:  # the profiler path is new on the device: report, keep the row
        print(f"  kernel_time_us failed: {type(e).__name__}: {e}", flush=True)
        return dict(kernel_time_note=f"{type(e).__name__}: {str(e)[:200]}")


def make_sets(m, n, k, device, target_bytes=200e6, max_sets=12):
    per = m * k + n * k + 2 * m * n
    n_sets = int(min(max_sets, max(2, math.ceil(target_bytes / per))))
    sets = []
    for _ in range(n_sets):
        a_q, a_s = per_token_group_quant_fp8_ref(torch.randn(m, k, device=device))
        b_q, b_s = per_block_quant_fp8_ref(torch.randn(n, k, device=device) * 0.05)
        sets.append((a_q, a_s.t().contiguous().t(), b_q, b_s, torch.empty(m, n, dtype=torch.bfloat16, device=device)))
    return sets


def peer_fn(a_q, a_s, b_q, b_s, n):
    """cuBLAS block-scaled FP8 (scaled_mm), with b zero-padded to a multiple of 128 rows if needed."""
    from torch.nn.functional import ScalingType, scaled_mm

    pad = (-n) % 128 if n % 128 else 0
    if pad:
        b_q = torch.cat([b_q, torch.zeros(pad, b_q.shape[1], dtype=b_q.dtype, device=b_q.device)])
        b_s = torch.cat([b_s, torch.ones(1, b_s.shape[1], dtype=b_s.dtype, device=b_s.device)])[: b_q.shape[0] // 128]
    b_s = b_s.contiguous()
    bt, bst = b_q.t(), b_s.t()

    def f():
        return scaled_mm(a_q, bt, a_s, ScalingType.BlockWise1x128, bst, ScalingType.BlockWise128x128,
                         output_dtype=torch.bfloat16)

    return f, pad
