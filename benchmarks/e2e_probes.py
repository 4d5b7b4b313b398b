"""Probes of the decode step used by ``bench_e2e.py``: bare CUDA-graph replay time, the host syncs a call
makes (``torch.cuda.set_sync_debug_mode``), and per-kernel device-time shares (``torch.profiler``)."""

from __future__ import annotations

if __name__ == "__main__":  # a module of other scripts, not a benchmark of its own (it printed nothing, exit 0)
    import sys

    print("e2e_probes.py holds the decode-step probes (graph replay time, host syncs, kernel shares) of bench_e2e.py"
          " / bench_e2e_tp.py: run one of those")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import statistics

import torch

from benchmarks.timing import replay_ms


def replay_us(graph, reps: int = 20) -> float:
    """Median CUDA-event µs of ``graph.replay()`` (two warm-up replays first)."""
    for _ in range(2):
        graph.replay()
    return statistics.median(replay_ms(graph, reps)) * 1000.0


def sync_sites(fn) -> list[str]:
    """Run fn under ``torch.cuda.set_sync_debug_mode("warn")``; returns the distinct host syncs it made, each as
    its innermost tritonseek/benchmarks frames (``path:line func``, innermost last)."""
    import traceback
    import warnings

    sites: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-1]
                  if "/tritonseek/" in f.filename or "/benchmarks/" in f.filename]
        where = " <- ".join(f"{f.filename.split('/')[-2]}/{f.filename.split('/')[-1]}:{f.lineno} {f.name}"
                            for f in reversed(frames[-3:]))
        if where not in sites:
            sites.append(where)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return sites


def kernel_shares(fn, top: int = 25) -> list[dict]:
    """Device time per kernel name of one call of fn (torch.profiler, CUDA activity), largest first.

    Each entry: name (≤ 90 chars), us (summed over calls), count, share of the step's summed kernel
    time, kind: "triton" (tritonseek kernels: names ``_…_kernel``) or "torch" (ATen / cuBLAS / copies).
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    evs = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = getattr(e, "cuda_time_total", 0)
        if t > 0:
            evs.append((e.key, float(t), int(e.count)))
    total = sum(t for _, t, _ in evs) or 1.0
    evs.sort(key=lambda x: -x[1])
    return [{"name": k[:90], "us": round(t, 1), "count": c, "share": round(t / total, 4),
             "kind": "triton" if k.startswith("_") and "kernel" in k else "torch"} for k, t, c in evs[:top]] + [
        {"name": "TOTAL", "us": round(total, 1), "count": sum(c for *_, c in evs), "share": 1.0, "kind": "all",
         "triton_share": round(sum(t for k, t, _ in evs if k.startswith("_") and "kernel" in k) / total, 4)}]


def timeline_gaps(fn, top: int = 10, min_gap_us: float = 20.0) -> dict:
    """Where the GPU idles during one call of fn (torch.profiler with CPU and CUDA activity).

    Returns span_us (first kernel start → last kernel end), busy_us (Σ kernel/memcpy/memset durations),
    idle_us (span − busy, counting only gaps ≥ min_gap_us), syncs (host runtime calls that wait on the
    device: cudaStreamSynchronize / cudaDeviceSynchronize / cudaEventSynchronize, and device→host
    copies) and the ``top`` largest gaps: {us, at_us (from the first kernel), before, after}. The
    profiler's own launch overhead stretches host-bound gaps; compare with the unprofiled wall time.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    dev, host_waits = [], []
    for e in prof.events():
        name = e.name
        kind = str(getattr(e, "device_type", ""))
        start = e.time_range.start
        dur = e.time_range.end - e.time_range.start
        if "CUDA" in kind and dur > 0:
            dev.append((start, dur, name))
        elif "Synchronize" in name or "DtoH" in name:
            host_waits.append(name)
    dev.sort()
    if not dev:
        return {"span_us": 0.0, "busy_us": 0.0, "idle_us": 0.0, "syncs": host_waits, "gaps": []}
    t0 = dev[0][0]
    gaps = []
    for (s0, d0, n0), (s1, _, n1) in zip(dev, dev[1:]):
        g = s1 - (s0 + d0)
        if g >= min_gap_us:
            gaps.append({"us": round(g, 1), "at_us": round(s0 + d0 - t0, 1), "before": n0[:60], "after": n1[:60]})
    span = max(s + d for s, d, _ in dev) - t0
    busy = sum(d for _, d, _ in dev)
    gaps.sort(key=lambda x: -x["us"])
    return {"span_us": round(span, 1), "busy_us": round(busy, 1), "idle_us": round(sum(g["us"] for g in gaps), 1),
            "kernels": len(dev), "syncs": sorted(set(host_waits)), "gaps": gaps[:top]}
