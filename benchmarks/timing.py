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
    g = _capture(fns)
    reps = int(min(max_reps, max(5, min_ms / max(replay_ms(g, 1)[0], 1e-3))))
    times = replay_ms(g, reps)
    del g
    return statistics.median(times) * 1000.0 / len(fns)


def replay_ms(graph: "torch.cuda.CUDAGraph", reps: int) -> list[float]:
    """CUDA-event ms of each of `reps` replays of graph, one after the other, each waited for before the next is
    launched (so each time includes the replay's launch on an idle GPU)."""
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        st.record()
        graph.replay()
        en.record()
        en.synchronize()
        times.append(st.elapsed_time(en))
    return times


def replay_ms_queued(graph: "torch.cuda.CUDAGraph", reps: int) -> list[float]:
    """GPU-clock ms of each of `reps` replays, each queued behind a ~0.5 ms device sleep: its kernels start right
    after the start event, so the graph's launch from an idle GPU (inside replay_ms's times) is left out."""
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        torch.cuda._sleep(1_000_000)
        a.record()
        graph.replay()
        b.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) for a, b in ev]


def _capture(fns) -> "torch.cuda.CUDAGraph":
    # each fn once on a side stream (compilation, allocations), then one graph holding one call of each
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
    return g


def _gpu_records(prof) -> list:
    # the profiler's device-side records (kernels, memsets, copies), in start order
    from torch.autograd import DeviceType

    recs = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    return sorted(recs, key=lambda e: e.time_range.start)


def kernel_time_us(fns, reps: int = 20, flush_l2: bool = True) -> float:
    """Median over ``reps`` replays of the summed device durations (µs) of the kernels in one CUDA graph holding one
    call of each fn, divided by len(fns), read from the CUDA profiler's records (``torch.profiler``, Kineto/CUPTI).

    This is a kernel time: it leaves out the graph's launch latency (~4-5 µs from an idle GPU on the H200, which
    ``graph_replay_us`` includes) and the gaps between the graph's kernels. DeepGEMM's tests time their kernels from
    profiler kernel durations too (its ``bench_kineto``, with an optional L2 flush), so this is the like-for-like
    figure for anchors given as kernel times; report it beside ``graph_replay_us``, never instead of it, and time
    the peer with it too.

    Not yet trusted on its own (H200, session 19): it differs from ``graph_replay_us`` by more than the launch
    latency at large sizes, in both directions — a 1 GiB copy read 843.7 vs 779.5 µs (slower), cuBLAS block-scaled
    4096×7168×16384 read ~9 % faster (1265 vs 1157 TFLOP/s) and ours ~4 % faster; the L2 flush between replays
    changes the power state the kernel starts in under the 700 W cap. Read it as a second view.

    flush_l2: before every replay, zero a 256 MB buffer (outside the graph, so outside the summed records): no
    replay finds its operands in the 50 MB L2 from the previous one. Raises RuntimeError when the records do not
    split into reps equal groups (a graph whose kernel count varies between replays, or a profiler that dropped
    records), rather than guessing which record belongs to which replay.
    """
    from torch.profiler import ProfilerActivity, profile

    fns = list(fns) if isinstance(fns, (list, tuple)) else [fns]
    g = _capture(fns)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        g.replay()
        torch.cuda.synchronize()
    per_replay = len(_gpu_records(prof))
    if per_replay == 0:
        raise RuntimeError("kernel_time_us: the profiler recorded no device activity for one graph replay")
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda") if flush_l2 else None
    if flush is not None:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            flush.zero_()
            torch.cuda.synchronize()
        per_flush = len(_gpu_records(prof))
    else:
        per_flush = 0
    for _ in range(3):
        if flush is not None:
            flush.zero_()
        g.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            if flush is not None:
                flush.zero_()
            g.replay()
        torch.cuda.synchronize()
    recs = _gpu_records(prof)
    group = per_flush + per_replay
    if len(recs) != reps * group:
        raise RuntimeError(f"kernel_time_us: {len(recs)} device records for {reps} replays of {per_replay} "
                           f"(+{per_flush} flush) records each; cannot attribute them")
    sums = [sum(e.time_range.elapsed_us() for e in recs[i * group + per_flush:(i + 1) * group])
            for i in range(reps)]
    del g
    return statistics.median(sums) / len(fns)


def graph_time_gpu_us(fn, reps: int = 25) -> float:
    """Median GPU-clock time of one CUDA-graph replay of fn: each replay is queued behind a ~0.5 ms device sleep,
    so the host's graph launch (inside ``us_graph``: its events start on an idle GPU) is not timed; a decode step
    replays every layer's calls inside one graph."""
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    return sorted(replay_ms_queued(g, reps))[reps // 2] * 1000.0
