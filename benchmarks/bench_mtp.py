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
  clean L2), and greedy rows carry floors: an empty launch and a plain streaming read of the same bytes.
* ``rejection_topk_topp_philox``: filters with in-register Philox noise.
* Correctness: every timed config (sweep candidates included) first reproduces the reference's
  tokens and counts exactly on fresh inputs; a failing config is never timed.
* ``--sweep``: (BLOCK, num_warps, programs per SM) candidates of the streaming kernel per mode; the
  winners (geometric mean of graph times over three cases) are printed — copy them into
  ``STATS_CONFIGS`` in tritonseek/kernels/sampling.py.
* ``mtp_e2e`` lives in benchmarks/mtp_e2e.py (run by bench_e2e.py); ``--suite mtp_e2e`` here
  forwards to it (see :func:`run_mtp_e2e_suite`).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import sys
import time

import torch
import triton
import triton.language as tl

from tritonseek.kernels import sampling as S
from tritonseek.kernels import sampling_filter as F
from tritonseek.kernels.reference.sampling import sample_ref
from tritonseek.kernels.reference.spec import verify_greedy_ref, verify_rejection_ref
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
GREEDY_SWEEP = [(1024, 4, 8, 2), (512, 4, 16, 4), (1024, 4, 8, 4), (1024, 4, 12, 4), (2048, 4, 8, 2)]
SWEEP_CASES = [(1, 1), (16, 3), (64, 3)]
DEVICE = "cuda"
OPS = ("greedy", "greedy_2launch", "rejection", "rejection_philox", "rejection_topk_topp", "rejection_topk_topp_philox",
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


def greedy_two_launch(drafts, x):
    """The previous verify_greedy (until dfab5d2): split streaming kernel + a separate combine launch."""
    B, K = drafts.shape
    out = torch.empty(B, K + 1, dtype=torch.int64, device=x.device)
    n = torch.empty(B, dtype=torch.int32, device=x.device)
    splits, pmax, psum, pidx, prace, pridx, _ = S.launch_row_stats(x, None, None, None, mode="greedy",
                                                                   need_sum=False, race_mode=0)
    SV._verify_combine_kernel[(B,)](drafts, drafts, x, pmax, pmax, pmax, pmax, psum, pidx, prace, pridx, out, n,
                                    x.shape[2], splits, drafts.stride(0), 0, 0, x.stride(0), x.stride(1), 0,
                                    out.stride(0), K=K, GREEDY=True, ONE_HOT=True, HAS_THRESH=False,
                                    SPLITS=triton.next_power_of_2(splits), num_warps=1)
    return out, n


@triton.jit
def _read_floor_kernel(x_ptr, out_ptr, N, per_prog, BLOCK: tl.constexpr):
    # the practical floor of a streaming read: program p sums x[p*per_prog : (p+1)*per_prog] (2 chunks in flight)
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * per_prog
    end = tl.minimum(start + per_prog, N)
    acc = tl.zeros([BLOCK], tl.float32)
    for off in range(start, end, 2 * BLOCK):
        o0 = off + tl.arange(0, BLOCK)
        o1 = o0 + BLOCK
        a = tl.load(x_ptr + o0, mask=o0 < end, other=0.0, eviction_policy="evict_first")
        b = tl.load(x_ptr + o1, mask=o1 < end, other=0.0, eviction_policy="evict_first")
        acc += a + b
    tl.store(out_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _empty_kernel(out_ptr):
    tl.store(out_ptr, 1.0)


def floors(B: int, K: int) -> dict:
    """Graph-timed floors of a case: one empty launch, and one tuned-by-hand read of the same logits bytes."""
    x = torch.randn(B * (K + 1) * VOCAB, device=DEVICE)
    n = x.numel()
    progs = 8 * torch.cuda.get_device_properties(0).multi_processor_count
    per = triton.cdiv(triton.cdiv(n, progs), 2048) * 2048
    grid = triton.cdiv(n, per)
    out = torch.empty(grid, device=DEVICE)
    ref = x.view(grid, -1).sum(1) if n % per == 0 else None
    _read_floor_kernel[(grid,)](x, out, n, per, BLOCK=1024, num_warps=4)
    if ref is not None:
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-2)
    launch = graph_us(lambda: _empty_kernel[(1,)](out))
    read = graph_us(lambda: _read_floor_kernel[(grid,)](x, out, n, per, BLOCK=1024, num_warps=4))
    read_rf = graph_us_readflush(lambda: _read_floor_kernel[(grid,)](x, out, n, per, BLOCK=1024, num_warps=4))
    return dict(floor_launch_us=round(launch, 2), floor_read_us=round(read, 2),
                floor_read_gbps=round(n * 4 / read / 1e3, 1), floor_read_us_readflush=round(read_rf, 2))


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
    if op == "greedy_2launch":
        return lambda: greedy_two_launch(c["drafts"], c["x"])
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
                c = make_case(B, K, VOCAB, 11, op)
                ts.append(graph_us(kernel_fn(op, c, cfg)) or eager_us(kernel_fn(op, c, cfg)))
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
                       config=list(SV.GREEDY_CONFIG if op == "greedy" else
                                   S.STATS_CONFIGS["greedy" if op.startswith("greedy") else "sample"]), **env)
            if DEVICE == "cuda" and op in ("greedy", "rejection_topk_topp", "rejection_topk_topp_philox"):
                ug_rf = graph_us_readflush(kf)
                row.update(us_graph_readflush=round(ug_rf, 2), gbps_readflush=round(logits_bytes / ug_rf / 1e3, 1))
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


def run_sampler(env, rows, out_f, deadline):
    bench_ops(env, rows, out_f, deadline, "sampler", ("sample", "sample_philox", "sample_topk_topp"),
              [(B, 0) for B in BATCHES])


def compile_check() -> int:
    """Compile every kernel variant for sm_90a with ptxas (no GPU needed; run WITHOUT TRITON_INTERPRET).

    Catches what the interpreter lets through (loop-carried type changes, constexpr misuse) and
    prints registers/spills per variant. Returns the number of variants that failed.
    """
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tritonseek.kernels import spec_verify as SV

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    failures = 0

    def comp(fn, sig: dict, consts: dict, warps: int, div: tuple = ()) -> None:
        nonlocal failures
        names = list(sig) + list(consts)
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in div}  # as the launcher specializes
        src = ASTSource(fn, {**sig, **{k: "constexpr" for k in consts}}, consts, attrs)
        try:
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
        except Exception as e:  # noqa: BLE001 - report every failing variant
            failures += 1
            print(f"FAIL {fn.__name__} {consts}: {type(e).__name__}: {str(e)[-800:]}", flush=True)
            return
        info = ""
        if os.path.exists(ptxas):
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(k.asm["ptx"])
            r = subprocess.run([ptxas, "--gpu-name", "sm_90a", "-v", f.name, "-o", os.devnull],
                               capture_output=True, text=True)
            os.unlink(f.name)
            info = " ".join(re.sub(r".*ptxas info\s*:\s*", "", ln) for ln in r.stderr.splitlines()
                            if "Used" in ln or "spill" in ln)
        print(f"ok   {fn.__name__} {consts} warps={warps} | {info}", flush=True)

    fp, i32, i64p = "*fp32", "i32", "*i64"
    stats = dict(logits_ptr=fp, noise_ptr=fp, seeds_ptr=i64p, draft_ptr=i64p, temperature_ptr=fp, thresh_ptr=fp,
                 done_ptr="*i32", part_max_ptr=fp, part_sum_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp, part_ridx_ptr="*i32",
                 V=i32, NJ=i32, split_len=i32, num_splits=i32, stride_lb=i32, stride_lj=i32, stride_nb=i32,
                 stride_nj=i32, stride_db=i32)
    div = ("logits_ptr", "noise_ptr", "V", "split_len", "stride_lb", "stride_lj", "stride_nb", "stride_nj")
    for greedy, thresh, need_sum, race, philox in [(True, False, False, 0, False), (False, False, False, 2, False),
                                                   (False, True, True, 1, False), (False, False, True, 1, True),
                                                   (False, True, True, 2, False), (False, False, False, 2, True)]:
        block, warps, _ = S.STATS_CONFIGS["greedy" if greedy else "sample"]
        comp(S._row_stats_kernel, stats, dict(GREEDY=greedy, HAS_THRESH=thresh, HAS_DONE=thresh, NEED_SUM=need_sum,
                                              RACE_MODE=race,
                                              PHILOX=philox, BLOCK=block), warps, div)
    thr = dict(logits_ptr=fp, temperature_ptr=fp, top_k_ptr="*i32", top_p_ptr=fp, thresh_ptr=fp, need_ptr="*i32",
               V=i32, NJ=i32, stride_lb=i32, stride_lj=i32)
    for hk, hp in [(True, True), (True, False), (False, True)]:
        comp(F._topk_topp_threshold_kernel, thr, dict(HAS_TOP_K=hk, HAS_TOP_P=hp, BLOCK=F.THRESH_CONFIG[0]),
             F.THRESH_CONFIG[1])
    fblock, fwarps, _ = F.FILTER_CONFIG
    fdiv = ("logits_ptr", "V", "split_len", "stride_lb", "stride_lj")
    common = dict(logits_ptr=fp, temperature_ptr=fp, top_k_ptr="*i32", top_p_ptr=fp)
    shape = dict(V=i32, NJ=i32, split_len=i32, num_splits=i32, stride_lb=i32, stride_lj=i32)
    for hk, hp in [(True, True), (False, True), (True, False)]:
        flags = dict(HAS_TOP_K=hk, HAS_TOP_P=hp)
        comp(F._filter_max_kernel, {**common, "part_m_ptr": fp, "part_l_ptr": fp, "sketch_ptr": fp, "V": i32,
                                    "NJ": i32, "split_len": i32, "num_splits": i32, "sketch_stride": i32,
                                    "stride_lb": i32, "stride_lj": i32},
             dict(**flags, G=1024, BLOCK=fblock), fwarps, fdiv)
        comp(F._filter_pivot_kernel, {"temperature_ptr": fp, "top_k_ptr": "*i32", "top_p_ptr": fp, "part_m_ptr": fp,
                                      "part_l_ptr": fp, "sketch_ptr": fp, "rowstat_ptr": fp, "pivot_ptr": "*i32",
                                      "V": i32, "num_splits": i32, "n_sketch": i32, "sketch_stride": i32, "NJ": i32},
             dict(**flags, SPLITS=128, SK=F.FILTER_SKETCH), F.SETTLE_WARPS)
        comp(F._filter_gather_kernel,
             {**common, "part_m_ptr": fp, "rowstat_ptr": fp, "pivot_ptr": "*i32", "cand_ptr": fp,
              "cidx_ptr": "*i32", "ccount_ptr": "*i32", **shape},
             dict(**flags, CAP=F.FILTER_CAP, BLOCK=F.GATHER_CONFIG[0]), F.GATHER_CONFIG[1], fdiv)
        for race, philox in ((1, hp), (2, not hp)):
            comp(F._filter_settle_kernel,
                 {"temperature_ptr": fp, "top_k_ptr": "*i32", "top_p_ptr": fp, "rowstat_ptr": fp, "pivot_ptr": "*i32",
                  "cand_ptr": fp, "cidx_ptr": "*i32",
                  "ccount_ptr": "*i32", "thresh_ptr": fp, "need_ptr": "*i32", "noise_ptr": fp, "seeds_ptr": i64p,
                  "draft_ptr": i64p, "part_max_ptr": fp, "part_sum_ptr": fp, "part_idx_ptr": "*i32",
                  "part_race_ptr": fp, "part_ridx_ptr": "*i32", "V": i32, "NJ": i32, "stride_nb": i32,
                  "stride_nj": i32, "stride_db": i32, "stats_splits": i32},
                 dict(**flags, CAP=F.FILTER_CAP, SMALL=F.FILTER_SMALL, STATS=True, NEED_SUM=race == 1,
                      RACE_MODE=race, PHILOX=philox), F.SETTLE_WARPS)
    comp(S._sample_combine_kernel, dict(temperature_ptr=fp, part_max_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp,
                                        part_ridx_ptr="*i32", out_ptr=i64p, num_splits=i32), dict(SPLITS=128), 1)
    comp(S._philox_noise_kernel, dict(seeds_ptr=i64p, out_ptr=fp, V=i32, NJ=i32), dict(BLOCK=1024), 4)
    greedy = dict(logits_ptr=fp, draft_ptr=i64p, part_max_ptr=fp, part_idx_ptr="*i32", count_ptr="*i32",
                  out_ptr=i64p, num_acc_ptr="*i32", V=i32, split_len=i32, num_splits=i32, stride_lb=i32,
                  stride_lj=i32, stride_db=i32, stride_ob=i32)
    block, warps, _, unroll = SV.GREEDY_CONFIG
    for K in (1, 3):
        comp(SV._greedy_verify_kernel, greedy, dict(K=K, SPLITS=128, BLOCK=block, UNROLL=unroll), warps,
             ("logits_ptr", "V", "split_len", "stride_lb", "stride_lj"))
    comb = dict(draft_ptr=i64p, draft_probs_ptr=fp, logits_ptr=fp, temperature_ptr=fp, thresh_ptr=fp, uniforms_ptr=fp,
                part_max_ptr=fp, part_sum_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp, part_ridx_ptr="*i32",
                out_ptr=i64p, num_acc_ptr="*i32", V=i32, num_splits=i32, stride_db=i32, stride_qb=i32,
                stride_qj=i32, stride_lb=i32, stride_lj=i32, stride_ub=i32, stride_ob=i32)
    for K, greedy, one_hot, thresh_on in [(1, True, True, False), (4, True, True, False), (3, False, True, True),
                                          (4, False, False, False), (1, False, True, False)]:
        comp(SV._verify_combine_kernel, comb, dict(K=K, GREEDY=greedy, ONE_HOT=one_hot, HAS_THRESH=thresh_on,
                                                   SPLITS=128), 1)
    res = dict(logits_ptr=fp, noise_ptr=fp, seeds_ptr=i64p, draft_probs_ptr=fp, temperature_ptr=fp, thresh_ptr=fp,
               part_max_ptr=fp, part_sum_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp, part_ridx_ptr="*i32",
               V=i32, K=i32, split_len=i32, num_splits=i32, stride_lb=i32, stride_lj=i32, stride_nb=i32,
               stride_nj=i32, stride_qb=i32, stride_qj=i32)
    for thresh_on, philox in [(False, False), (True, True)]:
        block, warps, _ = S.STATS_CONFIGS["sample"]
        comp(SV._residual_race_kernel, res, dict(HAS_THRESH=thresh_on, PHILOX=philox, SPLITS=128, BLOCK=block),
             warps, div)
    print(f"compile check: {failures} failure(s)", flush=True)
    return failures


def run_mtp_e2e_suite(argv: list[str]) -> None:
    """The ``mtp_e2e`` suite: forwards to benchmarks/bench_e2e.py (which imports benchmarks/mtp_e2e.py)."""
    import runpy

    sys.argv = [os.path.join(os.path.dirname(__file__), "bench_e2e.py"), "--suite", "mtp_e2e", *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--suite", default="spec_verify,sampler", help="comma list of spec_verify, sampler, mtp_e2e")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--sweep-modes", default="greedy,sample", help="comma list of greedy, sample")
    p.add_argument("--warm-greedy", default=None, metavar="I/N",
                   help="compile (and check) greedy sweep candidates i, i+N, ... on the sweep cases, no timing")
    p.add_argument("--warm-ops", default=None, help="comma list of ops: compile and check every case, no timing")
    p.add_argument("--ops", default=None, help="comma list of spec_verify ops (default: all)")
    p.add_argument("--sweep-s", type=float, default=None, help="seconds for the sweep (default 35%% of --budget-s)")
    p.add_argument("--out", default="mtp_rows.jsonl")
    p.add_argument("--budget-s", type=float, default=1e9, help="stop starting new cases after this many seconds")
    p.add_argument("--dry", action="store_true", help="CPU smoke run under TRITON_INTERPRET=1, tiny shapes")
    p.add_argument("--compile-check", action="store_true",
                   help="compile every kernel variant for sm_90a (no GPU needed; unset TRITON_INTERPRET)")
    args, rest = p.parse_known_args()
    if args.compile_check:
        sys.exit(1 if compile_check() else 0)
    if args.dry:
        global DEVICE, VOCAB, BATCHES, SWEEP_CANDIDATES, SWEEP_CASES
        DEVICE, VOCAB, BATCHES = "cpu", 300, (1, 3)
        SWEEP_CANDIDATES, SWEEP_CASES = SWEEP_CANDIDATES[:2], [(1, 1)]
    if args.warm_greedy:
        i, n = (int(v) for v in args.warm_greedy.split("/"))
        for cfg in GREEDY_SWEEP[i::n]:
            ok = all(check("greedy", B, K, cfg, 3) for B, K in SWEEP_CASES)
            print(f"warm greedy {cfg}: ok={ok}", flush=True)
        return
    if args.warm_ops:
        for op in args.warm_ops.split(","):
            cases = [(B, 0) for B in BATCHES] if op.startswith("sample") else [(B, K) for K in KS for B in BATCHES]
            ok = all(check(op, B, K, None, 1000 + B * 10 + K) for B, K in cases)
            print(f"warm {op}: ok={ok}", flush=True)
        return
    suites = args.suite.split(",")
    if args.ops:
        global OPS
        OPS = tuple(args.ops.split(","))
    if "mtp_e2e" in suites:
        run_mtp_e2e_suite(rest)
        suites.remove("mtp_e2e")
        if not suites:
            return
    t0 = time.time()
    deadline = t0 + args.budget_s
    env = dict(gpu=torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu-interpreter",
               torch=torch.__version__, triton=triton.__version__,
               commit=os.environ.get("TRITONSEEK_COMMIT", "unknown"),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows = []
    with open(args.out, "w") as out_f:
        if args.sweep:
            sweep(t0 + (args.sweep_s if args.sweep_s is not None else 0.35 * args.budget_s),
                  tuple(args.sweep_modes.split(",")))
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
              + (f"  read-flush {r['us_graph_readflush']} us {r['gbps_readflush']} GB/s"
                 if "us_graph_readflush" in r else "")
              + (f"  floors: launch {r['floor_launch_us']} us, read {r['floor_read_us']} us "
                 f"({r['floor_read_gbps']} GB/s; read-flush {r['floor_read_us_readflush']} us)"
                 if "floor_read_us" in r else ""))


if __name__ == "__main__":
    main()
