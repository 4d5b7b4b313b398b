"""Timing shared by the benchmark scripts: CUDA-graph replay of a kernel call (the decode step
runs its kernels as graph replays, so this is the time that counts for small kernels)."""

from __future__ import annotations

if __name__ == "__main__":  # a module of other scripts, not a benchmark of its own
    import sys

    print("timing.py holds the timers of the benchmark scripts (benchmarks/bench_*.py): nothing to run here")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import statistics

import torch


def graph_replay_us(fns, min_ms: float = 30.0, max_reps: int = 100) -> float:
    """Median replay time in µs of one CUDA graph holding one call of each fn, divided by len(fns).

    fns: a callable or a list of callables (several calls amortise the replay's launch cost). The
    calls run once on a side stream first so compilation and allocations happen outside capture.
    The repetition count targets ~min_ms of GPU time (5 … max_reps). Capture errors propagate.
    """
    fns = list(fns) if isinstance(fns, (list, tuple)) else [fns]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    g.replay()
    torch.cuda.synchronize()
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    st.record()
    g.replay()
    en.record()
    en.synchronize()
    reps = int(min(max_reps, max(5, min_ms / max(st.elapsed_time(en), 1e-3))))
    times = []
    for _ in range(reps):
        st.record()
        g.replay()
        en.record()
        en.synchronize()
        times.append(st.elapsed_time(en))
    del g
    return statistics.median(times) * 1000.0 / len(fns)
