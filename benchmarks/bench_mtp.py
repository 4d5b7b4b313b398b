"""Benchmark suites of MTP speculative decoding (issue 6): ``spec_verify`` (+ ``sampler``), ``mtp_e2e``.

    PYTHONPATH=. python benchmarks/bench_mtp.py [--suite spec_verify,sampler] [--sweep] [--out rows.jsonl]
        [--budget-s 120]

* ``spec_verify``: the verification kernels at B ∈ {1, 16, 64}, K ∈ {1, 3}, vocab 129280, fp32
  target logits [B, K+1, V] (fresh ``randn``, never zeros), ops ``greedy`` (verify_greedy),
  ``rejection`` (verify_rejection, one-hot drafts as MTP gives, T = 1, no filters) and
  ``rejection_topk_topp`` (same with top_k = 50, top_p = 0.9: adds the threshold passes of
  kernels/sampling_filter.py) and ``rejection_topk_topp_radix`` (the same through the previous
  one-program-per-row radix select, for before/after in one run).
  ``gbps`` = logits bytes B·(K+1)·V·4 / us_graph (the issue's measure); rejection also reads the
  same number of bytes of Exp(1) noise, so ``gbps_total`` counts both. Target: ≥ 80% of 4.27 TB/s
  (3416 GB/s) on the logits read and ≥ 3× the peer. ``rejection_philox`` makes the noise in
  registers (``seeds=``; the peer is the reference fed the same noise materialised), so it reads
  the logits only.
* ``sampler``: ``sample`` at B ∈ {1, 16, 64}, V 129280, T = 1, with and without top-k/top-p.
* Peer (same run): the plain-torch references (``verify_greedy_ref``, ``verify_rejection_ref``,
  ``sample_ref``) — top-k/top-p in the reference is the usual sort + cumsum.
* Timing: ``us`` = eager median, ``us_graph`` = median CUDA-graph replay, both through
  ``triton.testing.do_bench`` (which flushes the 50 MB L2 with a 256 MB write before every call, so
  small cases are not served from L2). gbps from us_graph. That write flush leaves up to 50 MB of
  dirty lines whose write-back the timed kernel pays (~12 us at 4.27 TB/s); ``us_graph_readflush`` /
  ``gbps_readflush`` (greedy and filtered ops) time the same graph after a 256 MB READ flush (cold,
  clean L2). ``us_graph_rotating`` / ``gbps_rotating``: one graph of n back-to-back calls, each on its own
  fresh inputs (n·bytes >= 4x the L2), median replay / n: no L2 hits, no flush write-back (see
  :func:`rotating_us`). Greedy rows carry floors: an empty launch and a plain streaming read of the
  same bytes under the same three timings.
* ``rejection_topk_topp_philox``: filters with in-register Philox noise.
* Correctness: every timed config (sweep candidates included) first reproduces the reference's
  tokens and counts exactly on fresh inputs; a failing config is never timed.
* ``--sweep``: (BLOCK, num_warps, programs per SM) candidates of the streaming kernel per mode; the
  winners (geometric mean of rotating-buffer times over three cases) are printed — copy them into
  ``STATS_CONFIGS`` in tritonseek/kernels/sampling.py (greedy: ``GREEDY_CONFIG`` in spec_verify.py).
* ``--ab 'cfg;cfg;...'``: greedy configs side by side on all six cases (``--ab-cases '64,1;16,1'``: those only),
  interleaved repetitions (rows with median and spread); ``--floor-sweep``: the plain streaming read's rotating
  time per config (the ceiling). ``--batches``, ``--ops``, ``--sampler-ops`` narrow the suites.
* Before/after on one GPU: run this script a second time with PYTHONPATH pointing at a copy of an older
  ``tritonseek`` (it uses only the launchers' public signatures); its rows carry that copy's commit.
* ``mtp_e2e`` lives in benchmarks/mtp_e2e.py (run by bench_e2e.py); ``--suite mtp_e2e`` here
  forwards to it (see :func:`run_mtp_e2e_suite`) with ``--out``: its rows are written there first, the other
  suites' rows appended after them. Rows carry ``commit`` (:func:`git_commit`) and ``dry`` (true for ``--dry``:
  CPU interpreter, tiny shapes, no figure of the GPU). Every suite writes only to ``--out`` (``tritonseek bench`` appends the
  file to benchmarks/results/<gpu>.jsonl).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import statistics
import sys
import time

if __name__ == "__main__" and any(a in ("--d", "--dr", "--dry") for a in sys.argv[1:]):
    # --dry runs the kernels on CPU, through Triton's interpreter, which @triton.jit reads when a kernel is defined:
    # it must be on before triton and the kernel modules load (without it the run failed in its first kernel call)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import triton
import triton.language as tl

from tritonseek.kernels import sampling as S
from tritonseek.kernels import sampling_filter as F
from tritonseek.kernels.reference.sampling import sample_ref
from tritonseek.kernels.reference.spec import verify_greedy_ref, verify_rejection_ref
from tritonseek.benchrun import (RowsFile, StagedRows, git_commit, name_list, nonnegative_float, out_file,  # noqa: F401
                                 positive_float, positive_int_list, require_cuda)  # git_commit: also mtp_e2e's
from tritonseek.kernels import spec_verify as SV
from tritonseek.kernels.spec_verify import verify_greedy, verify_rejection

VOCAB = 129280
BATCHES = (1, 16, 64)
KS = (1, 3)
COPY_GBPS = 4270.0
TARGET_GBPS = 0.8 * COPY_GBPS
SWEEP_CANDIDATES = [(1024, 4, 6), (2048, 4, 6), (1024, 4, 4), (2048, 8, 3), (4096, 8, 2), (1024, 4, 8),
                    (2048, 4, 8), (4096, 8, 4), (2048, 8, 6), (1024, 2, 12), (512, 2, 16), (4096, 4, 4),
                    (2048, 4, 12), (1024, 4, 12), (4096, 8, 6)]
# swept at b6a78f2 on the H200 (W1): (1024, 4, 8, 2) best geomean 17.9 us, (512, 4, 16, 4) 18.0, 8 others 18.2-20.0
GREEDY_SWEEP = [(1024, 4, 8, 2), (2048, 4, 8, 1), (2048, 4, 8, 2), (1024, 4, 8, 4), (512, 4, 16, 4), (1024, 4, 4, 4),
                (2048, 8, 4, 2), (4096, 8, 8, 1)]
SWEEP_CASES = [(1, 1), (16, 3), (64, 3)]
DEVICE = "cuda"
OPS = ("greedy", "rejection", "rejection_philox", "rejection_topk_topp", "rejection_topk_topp_philox",
       "rejection_topk_topp_radix")


# ----------------------------------------------------------------------------------------- timing
def eager_us(fn) -> float:
    if DEVICE != "cuda":  # --dry: one timed call
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e6
    return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median") * 1000.0


def capture(fn):
    """A CUDA graph holding one call of fn (warmed up on a side stream), or None if fn cannot be captured."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        torch.cuda.synchronize()
        return g
    except Exception as e:  # noqa: BLE001 - report and fall back to eager numbers
        print(f"  graph capture failed: {type(e).__name__}: {e}", flush=True)
        torch.cuda.synchronize()
        return None


def graph_us(fn) -> float | None:
    """Median replay time of a CUDA graph holding one call of fn (None if fn cannot be captured)."""
    if DEVICE != "cuda":
        return None
    g = capture(fn)
    if g is None:
        return None
    t = triton.testing.do_bench(g.replay, warmup=5, rep=25, return_mode="median") * 1000.0
    del g
    return t


@triton.jit
def _read_floor_kernel(x_ptr, out_ptr, N, per_prog, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
    # the practical floor of a streaming read: program p sums x[p*per_prog : (p+1)*per_prog] (UNROLL chunks
    # of BLOCK in flight per iteration)
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * per_prog
    end = tl.minimum(start + per_prog, N)
    acc = tl.zeros([BLOCK], tl.float32)
    for off in range(start, end, UNROLL * BLOCK):
        for u in tl.static_range(UNROLL):
            o = off + u * BLOCK + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + o, mask=o < end, other=0.0, eviction_policy="evict_first")
    tl.store(out_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _empty_kernel(out_ptr):
    tl.store(out_ptr, 1.0)


def read_floor_fn(x: torch.Tensor, cfg=(1024, 4, 8, 2)):
    """A call of the hand-written streaming read of x (cfg = BLOCK, num_warps, programs per SM, UNROLL)."""
    block, warps, per_sm, unroll = cfg
    n = x.numel()
    progs = per_sm * torch.cuda.get_device_properties(0).multi_processor_count
    per = triton.cdiv(triton.cdiv(n, progs), block * unroll) * block * unroll
    grid = triton.cdiv(n, per)
    out = torch.empty(grid, device=x.device)
    return lambda: _read_floor_kernel[(grid,)](x, out, n, per, BLOCK=block, UNROLL=unroll, num_warps=warps)


def floors(B: int, K: int, cfg=(1024, 4, 8, 2)) -> dict:
    """Floors of a case: one empty launch (graph), and the hand-written read of the same bytes: do_bench graph,
    read flush, and rotating over fresh buffers (as ``rotating_us``)."""
    nbytes = B * (K + 1) * VOCAB * 4
    x = torch.randn(nbytes // 4, device=DEVICE)
    out = torch.empty(1, device=DEVICE)
    launch = graph_us(lambda: _empty_kernel[(1,)](out))
    read = graph_us(read_floor_fn(x, cfg))
    read_rf = graph_us_readflush(read_floor_fn(x, cfg))
    n = max(2, min(256, math.ceil(4 * L2_BYTES / nbytes)))
    xs = [torch.randn(nbytes // 4, device=DEVICE) for _ in range(n)]
    rot = replay_us([read_floor_fn(v, cfg) for v in xs])
    return dict(floor_launch_us=round(launch, 2), floor_read_us=round(read, 2),
                floor_read_gbps=round(nbytes / read / 1e3, 1), floor_read_us_readflush=round(read_rf, 2),
                floor_read_us_rotating=round(rot, 2), floor_read_gbps_rotating=round(nbytes / rot / 1e3, 1))


def graph_us_readflush(fn, n: int = 40) -> float | None:
    """Median replay time of fn's CUDA graph when L2 is emptied by READING 256 MB before each replay.

    do_bench flushes L2 by writing 256 MB of zeros, so a memory-bound kernel timed after it also pays the
    write-back of up to 50 MB of dirty lines (about 12 us at 4.27 TB/s); a read flush leaves clean lines
    (cold L2, nothing to write back). Both are reported: ``us_graph`` (do_bench) and this one.
    """
    if DEVICE != "cuda":
        return None
    g = capture(fn)
    if g is None:
        return None
    buf = torch.randn(64 * 1024 * 1024, device=DEVICE)
    sink = torch.empty((), device=DEVICE)
    ts = []
    for _ in range(n):
        torch.sum(buf, dim=0, out=sink)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) * 1000.0)
    del g, buf
    return sorted(ts)[n // 2]


L2_BYTES = 60 * 2**20  # H200 L2 (50 MB on the die map; the brief's 60 MB bound is used for the rotation size)


def rotating_us(op: str, B: int, K: int, config=None, reps: int = 10) -> tuple[float | None, int]:
    """(us per call, buffers): one CUDA graph holding n calls of op, each on its own fresh inputs (logits, and
    noise where read), n so that the inputs total >= 4x the L2; replayed ``reps`` times after 2 warm replays,
    median replay time / n. No call finds its inputs in L2 and no flush's write-back is timed: this is the
    back-to-back cost of the op as a decode graph would run it (each node's launch gap included)."""
    if DEVICE != "cuda":
        return None, 0
    per = B * (K + 1) * VOCAB * 4 * (1 if op.startswith("greedy") or op.endswith("philox") else 2)
    n = max(2, min(256, math.ceil(4 * L2_BYTES / per)))
    cases = [make_case(B, K, VOCAB, 900 + i, op) for i in range(n)]
    t = replay_us([kernel_fn(op, c, config) for c in cases], reps)
    del cases
    return t, n


def replay_us(fns, reps: int = 10) -> float | None:
    """Median over ``reps`` replays of one CUDA graph holding every call in fns (in order), per call, in us."""
    g = capture(lambda: [f() for f in fns])
    if g is None:
        return None
    for _ in range(2):
        g.replay()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) * 1000.0 / len(fns))
    del g
    return sorted(ts)[reps // 2]


# ----------------------------------------------------------------------------------------- inputs
def make_case(B: int, K: int, V: int, seed: int, op: str):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(B, K + 1, V, device=DEVICE, generator=g)
    am = x.argmax(-1)
    drafts = torch.randint(0, V, (B, K), device=DEVICE, generator=g)
    n = torch.randint(0, K + 1, (B,), device=DEVICE, generator=g)
    pos = torch.arange(K, device=DEVICE)
    drafts = torch.where(pos[None] < n[:, None], am[:, :K], drafts)  # a mix of accept lengths
    temperature = torch.ones(B, device=DEVICE)
    top_k = top_p = None
    if "topk_topp" in op:
        top_k = torch.full((B,), 50, dtype=torch.int32, device=DEVICE)
        top_p = torch.full((B,), 0.9, device=DEVICE)
    uniforms = torch.rand(B, K, device=DEVICE, generator=g)
    seeds = torch.randint(0, 2**40, (B,), device=DEVICE, generator=g)
    if op.endswith("philox"):
        noise = S.philox_exp_noise(seeds, K + 1, V)  # what the kernel makes in registers (for the reference)
    else:
        noise = torch.empty(B, K + 1, V, device=DEVICE).exponential_(generator=g)
    return dict(x=x, drafts=drafts, temperature=temperature, top_k=top_k, top_p=top_p, uniforms=uniforms,
                noise=noise, seeds=seeds)


def kernel_fn(op: str, c: dict, config=None):
    if op == "greedy":
        return lambda: verify_greedy(c["drafts"], c["x"], config=config)
    philox = op.endswith("philox")
    if op == "rejection_topk_topp_radix":  # the previous filter: one-program radix select only

        def radix():
            fast = S.launch_thresholds
            S.launch_thresholds = functools.partial(F.launch_thresholds, fast=False)
            try:
                return verify_rejection(c["drafts"], None, c["x"], c["temperature"], c["top_k"], c["top_p"],
                                        c["uniforms"], c["noise"], config=config)
            finally:
                S.launch_thresholds = fast
        return radix
    if op.startswith("rejection"):
        return lambda: verify_rejection(c["drafts"], None, c["x"], c["temperature"], c["top_k"], c["top_p"],
                                        c["uniforms"], None if philox else c["noise"],
                                        seeds=c["seeds"] if philox else None, config=config)
    if op.startswith("sample"):
        return lambda: S.sample(c["x"][:, 0], c["temperature"], c["top_k"], c["top_p"],
                                None if philox else c["noise"][:, 0], seeds=c["seeds"] if philox else None,
                                config=config)
    raise ValueError(op)


def ref_fn(op: str, c: dict):
    if op.startswith("greedy"):
        return lambda: verify_greedy_ref(c["drafts"], c["x"])
    if op.startswith("rejection"):
        return lambda: verify_rejection_ref(c["drafts"], None, c["x"], c["temperature"], c["top_k"], c["top_p"],
                                            c["uniforms"], c["noise"])
    return lambda: sample_ref(c["x"][:, 0], c["temperature"], c["top_k"], c["top_p"], c["noise"][:, 0])


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(torch.equal(u, v) for u, v in zip(a, b))
    return torch.equal(a, b)


def check(op: str, B: int, K: int, config, seed: int) -> bool:
    """Fresh inputs; the kernel must reproduce the reference exactly."""
    c = make_case(B, K, VOCAB, seed, op)
    ok = same(kernel_fn(op, c, config)(), ref_fn(op, c)())
    if not ok:
        print(f"  MISMATCH op={op} B={B} K={K} config={config}", flush=True)
    return ok


# ----------------------------------------------------------------------------------------- suites
def greedy_ab(env, out_f, configs, reps: int = 3, deadline: float = 1e18, cases=None) -> None:
    """Greedy configs side by side on every (B, K) case (or ``cases``): rotating-buffer times, the configs
    interleaved ``reps`` times (so clock drift hits them alike), each config checked exact first; one row per
    (case, config) with the median and the spread, and the winner per case printed."""
    for B, K in cases or [(B, K) for K in KS for B in BATCHES]:
        if True:
            if time.time() > deadline:
                print(f"  ab: budget reached before B={B} K={K}", flush=True)
                return
            ok = {cfg: check("greedy", B, K, cfg, 77 + B + K) for cfg in configs}
            ts = {cfg: [] for cfg in configs if ok[cfg]}
            for _ in range(reps):
                for cfg in ts:
                    ts[cfg].append(rotating_us("greedy", B, K, cfg)[0])
            nbytes = B * (K + 1) * VOCAB * 4
            for cfg, v in ts.items():
                med = statistics.median(v)
                row = dict(suite="spec_verify", case=dict(batch=B, k=K, vocab=VOCAB, op="greedy"), us=None,
                           us_graph=None, tflops=None, gbps=round(nbytes / med / 1e3, 1), peer=None, peer_us=None,
                           ratio_vs_peer=None, us_graph_rotating=round(med, 2), gbps_rotating=round(nbytes / med / 1e3, 1),
                           rotating_spread_us=[round(min(v), 2), round(max(v), 2)], config=list(cfg), correct=True,
                           target_gbps=TARGET_GBPS, note="greedy config A/B, rotating-buffer graph timing", **env)
                out_f.write(json.dumps(row) + "\n")
            out_f.flush()
            best = min(ts, key=lambda c: statistics.median(ts[c]))
            print(f"  ab B={B} K={K}: " + "  ".join(f"{c}: {statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"
                                                  for c, v in ts.items()) + f"  -> {best}", flush=True)


def sweep(deadline: float, modes=("greedy", "sample")) -> dict:
    winners = {}
    t0 = time.time()
    for n, mode in enumerate(modes):
        op = "greedy" if mode == "greedy" else "rejection"
        scores = {}
        mode_deadline = t0 + (deadline - t0) * (n + 1) / len(modes)  # each mode gets its share of the sweep time
        for cfg in (GREEDY_SWEEP if mode == "greedy" else SWEEP_CANDIDATES):
            if time.time() > mode_deadline:
                print(f"  sweep {mode}: time up before {cfg}", flush=True)
                break
            if not all(check(op, B, K, cfg, 7 + B + K) for B, K in SWEEP_CASES):
                continue
            ts = []
            for B, K in SWEEP_CASES:
                ts.append(rotating_us(op, B, K, cfg)[0])
            scores[cfg] = math.exp(sum(math.log(t) for t in ts) / len(ts))
            print(f"  sweep {mode} {cfg}: " + " ".join(f"{t:.1f}" for t in ts) + f" us  geo {scores[cfg]:.2f}",
                  flush=True)
        if scores:
            best = min(scores, key=scores.get)
            winners[mode] = best
            if mode == "greedy":
                SV.GREEDY_CONFIG = best
            else:
                S.STATS_CONFIGS[mode] = best
    print(f"winners: {json.dumps({k: list(v) for k, v in winners.items()})}", flush=True)
    return winners


FLOOR_SWEEP = [(1024, 4, 8, 2), (2048, 4, 8, 2), (1024, 4, 8, 4), (4096, 8, 8, 1)]


def floor_sweep(cases=((16, 3), (64, 3))) -> None:
    """Rotating-buffer time of the hand-written streaming read per (BLOCK, warps, programs per SM, UNROLL):
    what this GPU delivers to a plain read of the verify's bytes (the ceiling for the greedy kernel)."""
    for cfg in FLOOR_SWEEP:
        ts = []
        for B, K in cases:
            nbytes = B * (K + 1) * VOCAB * 4
            n = max(2, math.ceil(4 * L2_BYTES / nbytes))
            xs = [torch.randn(nbytes // 4, device=DEVICE) for _ in range(n)]
            t = replay_us([read_floor_fn(v, cfg) for v in xs])
            ts.append(f"B{B}K{K} {t:.2f} us {nbytes / t / 1e3:.0f} GB/s")
            del xs
        print(f"  floor {cfg}: " + ", ".join(ts), flush=True)


def bench_ops(env, rows, out_f, deadline, suite: str, ops, cases):
    for op in ops:
        for B, K in cases:
            if time.time() > deadline:
                print(f"  budget reached: skipping {suite} {op} B={B} K={K}", flush=True)
                continue
            ok = check(op, B, K, None, 1000 + B * 10 + K)
            c = make_case(B, K, VOCAB, 5 + B + K, op)
            kf, rf = kernel_fn(op, c), ref_fn(op, c)
            us, ug = eager_us(kf), graph_us(kf)
            peer_e, peer_g = eager_us(rf), graph_us(rf)
            t = ug if ug is not None else us
            peer_t = peer_g if peer_g is not None else peer_e
            nj = K + 1 if suite == "spec_verify" else 1
            logits_bytes = B * nj * VOCAB * 4
            noise_bytes = 0 if op.startswith("greedy") or op.endswith("philox") else logits_bytes
            case = dict(batch=B, k=K, vocab=VOCAB, op=op) if suite == "spec_verify" else dict(
                batch=B, vocab=VOCAB, op=op)
            row = dict(suite=suite, case=case, us=round(us, 2), us_graph=None if ug is None else round(ug, 2),
                       tflops=None, gbps=round(logits_bytes / t / 1e3, 1),
                       gbps_total=round((logits_bytes + noise_bytes) / t / 1e3, 1),
                       peer="torch_reference", peer_us=round(peer_t, 2), ratio_vs_peer=round(peer_t / t, 3),
                       peer_us_eager=round(peer_e, 2), target_gbps=TARGET_GBPS, correct=ok,
                       config=list(SV.greedy_config(B * (K + 1)) if op == "greedy" else
                                   S.stats_config("greedy" if op.startswith("greedy") else "sample", B * nj)), **env)
            if DEVICE == "cuda" and op in ("greedy", "rejection_topk_topp", "rejection_topk_topp_philox"):
                ug_rf = graph_us_readflush(kf)
                row.update(us_graph_readflush=round(ug_rf, 2), gbps_readflush=round(logits_bytes / ug_rf / 1e3, 1))
            if DEVICE == "cuda":
                ur, nbuf = rotating_us(op, B, K)
                if ur is not None:
                    row.update(us_graph_rotating=round(ur, 2), gbps_rotating=round(logits_bytes / ur / 1e3, 1),
                               rotating_buffers=nbuf)
            if op == "greedy" and DEVICE == "cuda":
                row.update(floors(B, K))
            rows.append(row)
            out_f.write(json.dumps(row) + "\n")
            out_f.flush()
            print(f"  {suite} {op} B={B} K={K}: {t:.1f} us graph ({us:.1f} eager), {row['gbps']} GB/s, "
                  f"peer {peer_t:.1f} us, x{row['ratio_vs_peer']}, correct={ok}", flush=True)


def run_spec_verify(env, rows, out_f, deadline):
    cases = [(B, K) for K in KS for B in BATCHES]
    bench_ops(env, rows, out_f, deadline, "spec_verify",
              OPS, cases)


SAMPLER_OPS = ("sample", "sample_philox", "sample_topk_topp")


def run_sampler(env, rows, out_f, deadline):
    bench_ops(env, rows, out_f, deadline, "sampler", SAMPLER_OPS, [(B, 0) for B in BATCHES])


def _file_state(path: str):
    """(inode, size, mtime) of path, None when absent: tells whether a suite wrote the file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def run_mtp_e2e_suite(argv: list[str]) -> None:
    """The ``mtp_e2e`` suite: forwards to benchmarks/bench_e2e.py (which imports benchmarks/mtp_e2e.py)."""
    import runpy

    sys.argv = [os.path.join(os.path.dirname(__file__), "bench_e2e.py"), "--suite", "mtp_e2e", *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


def _slice_of(text: str) -> tuple[int, int]:
    """--warm-greedy "I/N": candidates I, I+N, ... (0 <= I < N); a bad value failed after the imports as a traceback."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return i, n


def main():
    global DEVICE, VOCAB, BATCHES, KS, SWEEP_CANDIDATES, SWEEP_CASES, OPS, SAMPLER_OPS
    p = argparse.ArgumentParser()
    p.add_argument("--suite", default="spec_verify,sampler", type=name_list(("spec_verify", "sampler", "mtp_e2e")), help="comma list of spec_verify, sampler, mtp_e2e")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--floor-sweep", action="store_true", help="rotating read floor per streaming config")
    p.add_argument("--ab", default=None, help="greedy configs to compare on every case, e.g. '1024,4,8,2;2048,8,4,2'")
    p.add_argument("--ab-cases", default=None, help="(B, K) cases of --ab, e.g. '64,1;64,3' (default: all six)")
    p.add_argument("--batches", default=None, type=positive_int_list, help="comma list of batch sizes of the suites (default 1,16,64)")
    p.add_argument("--ks", default=None, type=positive_int_list, help="comma list of K of the spec_verify suite (default 1,3)")
    p.add_argument("--sweep-modes", default="greedy,sample", type=name_list(("greedy", "sample")), help="comma list of greedy, sample")
    p.add_argument("--warm-greedy", default=None, metavar="I/N", type=_slice_of,
                   help="compile (and check) greedy sweep candidates i, i+N, ... on the sweep cases, no timing")
    p.add_argument("--warm-ops", default=None, type=name_list(OPS + SAMPLER_OPS), help="comma list of ops: compile and check every case, no timing")
    p.add_argument("--ops", default=None, type=name_list(OPS), help="comma list of spec_verify ops (default: all)")
    p.add_argument("--sampler-ops", default=None, type=name_list(SAMPLER_OPS), help="comma list of sampler ops (default: all three)")
    p.add_argument("--sweep-s", type=nonnegative_float, default=None, help="seconds for the sweep (default 35%% of --budget-s)")
    p.add_argument("--out", default="mtp_rows.jsonl", type=out_file,
                   help="JSON rows; an existing OUT is replaced when the run ends (rows go to OUT.partial meanwhile: an "
                        "interrupted or failed run keeps the old OUT), a new one gets each row as it is measured")
    p.add_argument("--budget-s", type=positive_float, default=1e9, help="stop starting new cases after this many seconds")
    p.add_argument("--dry", action="store_true", help="CPU smoke run through Triton's interpreter (turned on by this flag), tiny shapes")
    p.add_argument("--compile-check", action="store_true",
                   help="compile every kernel variant for sm_90a (no GPU needed; unset TRITON_INTERPRET)")
    p.add_argument("--no-ptxas-report", action="store_true",
                   help="--compile-check without the per-variant ptxas -v registers/spills lines (faster)")
    args, rest = p.parse_known_args()
    if args.dry and type(_empty_kernel).__name__ != "InterpretedFunction":
        p.error("--dry runs the kernels on CPU through Triton's interpreter, which was off when they were defined "
                f"(TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}); run with TRITON_INTERPRET=1")
    if args.compile_check:
        from mtp_compile_check import compile_check  # benchmarks/ is on sys.path when run as a script

        sys.exit(1 if compile_check(ptxas_report=not args.no_ptxas_report) else 0)
    if not args.dry:
        require_cuda("bench_mtp")
    if args.dry:
        DEVICE, VOCAB, BATCHES = "cpu", 300, (1, 3)
        SWEEP_CANDIDATES, SWEEP_CASES = SWEEP_CANDIDATES[:2], [(1, 1)]
    if args.warm_greedy:
        i, n = args.warm_greedy
        for cfg in GREEDY_SWEEP[i::n]:
            ok = all(check("greedy", B, K, cfg, 3) for B, K in SWEEP_CASES)
            print(f"warm greedy {cfg}: ok={ok}", flush=True)
        return
    if args.warm_ops:
        for op in args.warm_ops:
            cases = [(B, 0) for B in BATCHES] if op.startswith("sample") else [(B, K) for K in KS for B in BATCHES]
            ok = all(check(op, B, K, None, 1000 + B * 10 + K) for B, K in cases)
            print(f"warm {op}: ok={ok}", flush=True)
        return
    suites = list(args.suite)
    if args.batches:
        BATCHES = args.batches
    if args.ks:
        KS = args.ks
    if args.ops:
        OPS = tuple(args.ops)
    if args.sampler_ops:
        SAMPLER_OPS = tuple(args.sampler_ops)
    mode = "w"
    if "mtp_e2e" in suites:  # its rows go to --out too (they stayed on the device before); later suites append
        before = _file_state(args.out)
        run_mtp_e2e_suite([*rest, *(["--tiny", "--device", "cpu"] if args.dry else []), "--out", args.out,
                           *([] if any(x.startswith("--commit") for x in rest) else ["--commit", git_commit()]),
                           *(["--budget-s", str(args.budget_s)] if args.budget_s < 1e9 else [])])
        suites.remove("mtp_e2e")
        mode = "a" if _file_state(args.out) != before else "w"  # append to its rows, never to an untouched old file
        if not suites:
            return
    t0 = time.time()
    deadline = t0 + args.budget_s
    env = dict(gpu=torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu-interpreter",
               torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), dry=args.dry,
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows = []
    # opened at the first row. "w": over an existing file rows go to OUT.partial, which replaces OUT only when the run
    # ends without an exception (session 18: RowsFile "w" emptied the old file at the first row, so Ctrl-C / SIGTERM
    # lost it); "a": appends to the rows mtp_e2e wrote in this run
    with (StagedRows(args.out) if mode == "w" else RowsFile(args.out, "a")) as out_f:
        if args.floor_sweep:
            floor_sweep()
        if args.ab:
            greedy_ab(env, out_f, [tuple(int(v) for v in c.split(",")) for c in args.ab.split(";")], deadline=deadline,
                      cases=[tuple(int(v) for v in c.split(",")) for c in args.ab_cases.split(";")]
                      if args.ab_cases else None)
        if args.sweep:
            sweep(t0 + (args.sweep_s if args.sweep_s is not None else 0.35 * args.budget_s),
                  tuple(args.sweep_modes))
        if "spec_verify" in suites:
            run_spec_verify(env, rows, out_f, deadline)
        if "sampler" in suites:
            run_sampler(env, rows, out_f, deadline)
    print(f"\n{'suite/op':28s} {'B':>3s} {'K':>2s} {'us_g':>8s} {'us':>8s} {'GB/s':>7s} {'peer_us':>9s} "
          f"{'x peer':>7s} {'>=80%':>5s} {'>=3x':>5s} ok")
    for r in rows:
        c = r["case"]
        t = r["us_graph"] if r["us_graph"] is not None else r["us"]
        print(f"{r['suite'] + '/' + c['op']:28s} {c['batch']:3d} {c.get('k', 0):2d} {t:8.1f} {r['us']:8.1f} "
              f"{r['gbps']:7.0f} {r['peer_us']:9.1f} {r['ratio_vs_peer']:7.2f} {str(r['gbps'] >= TARGET_GBPS):>5s} "
              f"{str(r['ratio_vs_peer'] >= 3):>5s} {r['correct']}"
              + (f"  rotating {r['us_graph_rotating']} us {r['gbps_rotating']} GB/s"
                 if "us_graph_rotating" in r else "")
              + (f"  read-flush {r['us_graph_readflush']} us {r['gbps_readflush']} GB/s"
                 if "us_graph_readflush" in r else "")
              + (f"  floors: launch {r['floor_launch_us']} us, read {r['floor_read_us']} us "
                 f"({r['floor_read_gbps']} GB/s; read-flush {r['floor_read_us_readflush']} us; rotating "
                 f"{r['floor_read_us_rotating']} us = {r['floor_read_gbps_rotating']} GB/s)"
                 if "floor_read_us" in r else ""))


if __name__ == "__main__":
    main()
