"""Benchmark suite ``e2e_tp`` (issue 9): the DeepSeek-V3-width slice at TP2/EP2 against TP1, decode steps.

    PYTHONPATH=. python benchmarks/bench_e2e_tp.py [--out rows.jsonl] [--batches 1,64] [--context 1024]
        [--layers 4] [--reps 50] [--budget-s 150]

Needs two CUDA GPUs. The script spawns two processes (NCCL, one GPU each, NVLink multicast off:
``parallel.spawn``). Rank 0 first builds the whole slice (``benchmarks/v3_slice.py``: 1 dense +
3 MoE layers + MTP, random block-FP8 weights made on the device) and times TP1, while rank 1 builds its
shard; then rank 0 frees it and builds its own shard. At TP2 each rank holds half the heads (q_b/kv_b
column-, o_proj row-parallel), half the dense/shared-expert columns, 128 of the 256 experts (EP2) and half
the vocabulary; the replicated parameters (norms, router, q_a/kv_a) are broadcast from rank 0 so both ranks
route alike, as with one checkpoint.

One decode step = embed → layers → final norm → lm_head → argmax, captured as a CUDA graph by the engine's
``DecodeGraphs`` (on each rank, with its all-reduces/gathers inside), sequences already at ``--context``
tokens in a random latent cache with scattered pages (``SliceHarness``, as ``e2e_decode``). Per case:

* ``us`` = ``us_step``: median CUDA-event time of the bare graph replay on rank 0 (both ranks replay in
  lockstep, the same count; ``us_rank_max`` is the larger of the two ranks' medians); ``tokens_per_s`` =
  batch / us; ``tp1_us`` / ``speedup`` = the TP1 step of the same run and TP1 us ÷ TP2 us.
* ``comm_us``: the same collectives as the step (recorded from one eager step: op, shape, dtype), alone
  in one CUDA graph on random buffers, replayed in lockstep — the communication cost without the skew
  between ranks; ``comm_share`` = comm_us / us. ``nccl_kernel_us``: the summed NCCL kernel time inside a
  step replay (torch.profiler over back-to-back replays, the first dropped, median), which also counts the
  time a kernel waits for the other rank; ``nccl_kernel_share`` = that / (it + the other kernels' time);
  ``step_kernels``: the other kernels by time per replay (``profile_step``).
* ``us_eager``: the same step launched eagerly (fixed-count CUDA-event median, host launch work included);
  ``graph_speedup`` = us_eager / us.
* correctness first: the graph's tokens equal the eager step's (``graph_argmax_agreement``), the logits are
  finite, and both ranks emit the same tokens (``ranks_agree``).

Rows (rank 0) go to ``--out`` as they are measured; a short table is printed last.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.e2e_harness import Bench, SliceHarness, _r  # noqa: E402
from benchmarks.e2e_probes import replay_us  # noqa: E402
from benchmarks.timing import graph_replay_us  # noqa: E402
from benchmarks.v3_slice import build_slice, v3_config  # noqa: E402
from tritonseek.benchrun import (git_commit, int_at_least, out_file, positive_float, positive_int, require_cuda,  # noqa: E402
                                 positive_int_list)
from tritonseek.parallel import TP, broadcast_replicated_, shutdown, spawn  # noqa: E402

SUITE = "e2e_tp"


class CollectiveRecorder:
    """Records (op, shape, dtype) of every TP collective while active (patches the TP class's methods)."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, torch.dtype]] = []

    def __enter__(self):
        self._orig = (TP.all_reduce, TP.all_gather_last)
        ar, ag = self._orig
        rec = self.calls

        def all_reduce(tp, x):
            if tp.enabled:
                rec.append(("all_reduce", tuple(x.shape), x.dtype))
            return ar(tp, x)

        def all_gather_last(tp, x):
            if tp.enabled:
                rec.append(("all_gather_last", tuple(x.shape), x.dtype))
            return ag(tp, x)

        TP.all_reduce, TP.all_gather_last = all_reduce, all_gather_last
        return self

    def __exit__(self, *exc):
        TP.all_reduce, TP.all_gather_last = self._orig


def comm_graph_us(tp: TP, calls, dev, reps: int) -> float:
    """Replay µs of one CUDA graph holding exactly ``calls`` (the step's collectives) on random buffers."""
    bufs = [torch.randn(shape, device=dev).to(dtype) for _, shape, dtype in calls]

    def run():
        for (op, _, _), b in zip(calls, bufs):
            getattr(tp, op)(b)

    # min_ms huge: exactly max_reps timed replays on every rank (lockstep: a rank replaying more would hang)
    return graph_replay_us(run, min_ms=1e12, max_reps=reps)


def fixed_reps_us(fn, reps: int) -> float:
    """Median CUDA-event µs of fn over exactly ``reps`` calls after one warm-up (host launch work included).
    A fixed count on every rank: collectives inside fn pair up (an adaptive count could differ and hang)."""
    fn()
    torch.cuda.synchronize()
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        st.record()
        fn()
        en.record()
        en.synchronize()
        times.append(st.elapsed_time(en) * 1000.0)
    return statistics.median(times)


def profile_step(g, n_coll: int, replays: int = 6) -> dict:
    """Kernel times inside ``replays`` back-to-back replays of graph g (torch.profiler, CUDA activity), the first
    replay dropped (it absorbs the ranks' skew in starting the profiler: a kernel waiting for the other rank
    counts its wait). nccl_us: median over replays of the summed NCCL kernel time (n_coll kernels a replay,
    waits for the slower rank included); kernel_sum_us: the other kernels' time per replay; top: the
    non-NCCL kernels by time per replay (PDL kernels include their wait for the one before them)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        g.replay()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(replays):
                g.replay()
            torch.cuda.synchronize()
        ev = sorted((e.time_range.start, e.time_range.end - e.time_range.start, e.name) for e in prof.events()
                    if "CUDA" in str(getattr(e, "device_type", "")) and e.time_range.end > e.time_range.start)
    except Exception as e:  # noqa: BLE001 - a diagnostic
        print(f"  profile failed: {type(e).__name__}: {e}", flush=True)
        return {"nccl_us": None, "kernel_sum_us": None, "top": []}
    nccl = [d for _, d, n in ev if "nccl" in n.lower()]
    nccl_us = None
    if n_coll and len(nccl) == n_coll * replays:
        nccl_us = statistics.median(sum(nccl[i * n_coll:(i + 1) * n_coll]) for i in range(1, replays))
    # every replay launches the same kernels: drop the first replay's share (the first 1/replays of them)
    other = [(s, d, n) for s, d, n in ev if "nccl" not in n.lower()]
    per = len(other) // replays
    agg: dict[str, list] = {}
    for _, d, n in other[per:per * replays]:
        a = agg.setdefault(n[:90], [0.0, 0])
        a[0] += d / (replays - 1)
        a[1] += 1
    top = sorted(({"name": k, "us": round(v[0], 1), "count": v[1] // (replays - 1)} for k, v in agg.items()),
                 key=lambda x: -x["us"])
    return {"nccl_us": nccl_us, "kernel_sum_us": sum(x["us"] for x in top), "top": top[:40]}


def decode_case(b: Bench, h: SliceHarness, tp: TP, batch: int, context: int) -> dict:
    """One decode step at (batch, context): correctness checks, graph replay time, communication."""
    model, runner, dev = h.model, h.runner, b.dev
    seqs = h.seqs(batch, context, extra=8)
    ids = [s.seq_id for s in seqs]
    last = [s.last_token for s in seqs]
    attn = runner.decode_batch(seqs, [context] * batch, 1)
    with torch.inference_mode(), CollectiveRecorder() as rec:
        ids_t = torch.tensor(last, dtype=torch.int64, device=dev)
        pos = torch.full((batch,), context, dtype=torch.int64, device=dev)
        _, normed = model.forward_normed(ids_t, pos, attn, h.cache.layers)
        tok_eager = model.ops.argmax(model.lm_head(normed))

    def eager_step():
        with torch.inference_mode():
            _, nrm = model.forward_normed(ids_t, pos, attn, h.cache.layers)
            return model.ops.argmax(model.lm_head(nrm))

    us_eager = fixed_reps_us(eager_step, b.args.eager_reps)
    tok_graph, logits = h.graphs.step(ids, last, [context] * batch)
    agree = float((tok_graph == tok_eager).float().mean())
    finite = bool(torch.isfinite(logits).all())
    ranks_agree = None
    if tp.enabled:
        allt = torch.empty((tp.world_size, batch), dtype=tok_graph.dtype, device=dev)
        dist.all_gather_into_tensor(allt, tok_graph.contiguous())
        ranks_agree = bool((allt == allt[0]).all())
    g = h.graphs.graph(batch)
    us = replay_us(g, b.args.reps)
    us_max = us
    comm_us = nccl_us = kernel_sum = None
    if tp.enabled:
        t = torch.tensor([us], dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        us_max = float(t)
        comm_us = comm_graph_us(tp, rec.calls, dev, b.args.reps)
    prof = profile_step(g, len(rec.calls))
    nccl_us, kernel_sum = prof["nccl_us"], prof["kernel_sum_us"]
    for e in prof["top"][:12]:
        print(f"    [rank {tp.rank} tp={tp.world_size} b={batch}] {e['us']:8.1f} us x{e['count']:<3} {e['name']}")
    h.release(seqs)
    row = dict(
        case={"model": b.args.model_name, "tp": tp.world_size, "ep": tp.world_size, "batch": batch,
              "context": context},
        us=_r(us), us_step=_r(us), us_rank_max=_r(us_max), tokens_per_s=_r(batch / us * 1e6, 1),
        us_eager=_r(us_eager), graph_speedup=_r(us_eager / us, 2),
        comm_us=_r(comm_us), comm_share=_r(comm_us / us, 4) if comm_us is not None else None,
        comm_method="the step's collectives (recorded op/shape/dtype) alone in one CUDA graph, lockstep replay"
        if comm_us is not None else None,
        nccl_kernel_us=_r(nccl_us), step_kernel_sum_us=_r(kernel_sum), step_kernels=prof["top"],
        nccl_kernel_share=_r(nccl_us / (kernel_sum + nccl_us), 4) if nccl_us is not None and kernel_sum else None,
        collectives=[[op, list(shape), str(dt).replace("torch.", "")] for op, shape, dt in rec.calls] or None,
        graph_argmax_agreement=agree, logits_finite=finite, ranks_agree=ranks_agree, timer="graph replay",
    )
    print(f"{SUITE} tp={tp.world_size} b={batch:<3} ctx={context}: {us:9.1f} us (rank max {us_max:.1f})  "
          f"{batch / us * 1e6:9.1f} tok/s  eager {us_eager:.1f} us  comm {row['comm_us']} us ({row['comm_share']})  nccl kernels "
          f"{row['nccl_kernel_us']} us  agree {agree} finite {finite} ranks {ranks_agree}", flush=True)
    return row


def run_config(b: Bench, tp: TP, cfg) -> list[dict]:
    """Build the slice (this rank's shard under TP), time every batch, free it."""
    t0 = time.perf_counter()
    model = build_slice(cfg, backend="triton", device=b.dev, seed=0, tp=tp if tp.enabled else None)
    n_bcast = broadcast_replicated_(model, tp)
    torch.cuda.synchronize()
    gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    print(f"[rank {tp.rank}] built tp={tp.world_size} slice in {time.perf_counter() - t0:.1f}s: {gb:.2f} GB of "
          f"weights ({n_bcast} replicated tensors broadcast)", flush=True)
    a = b.args
    b.model = model
    h = SliceHarness(b, model, max(a.batches) * (a.context + 8) + 64 * 64, max_context=a.context,
                     max_batch=max(a.batches))
    rows = []
    try:
        for bs in a.batches:
            rows.append(decode_case(b, h, tp, bs, a.context))
    finally:
        h.close()
        del h, model
        b.model = None
        torch.cuda.empty_cache()
    return rows


def worker(rank: int, world: int, init_file: str, argv: list[str]) -> None:
    a = parse_args(argv)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=a.nccl_timeout_s), device_id=torch.device("cuda", rank))
    a.device = f"cuda:{rank}"
    if rank:
        a.out = None  # rank 0 writes the rows, each as soon as it is measured
    b = Bench(a)
    cfg = v3_config(a.layers)
    try:
        tp1 = {}
        if rank == 0:  # rank 1 builds its shard meanwhile and waits in the first broadcast
            for r in run_config(b, TP(), cfg):
                case = r.pop("case")
                tp1[case["batch"]] = b.row(SUITE, case, **r)
        for r in run_config(b, TP(rank, world), cfg):
            case = r.pop("case")
            one = tp1.get(case["batch"])
            if rank == 0:
                b.row(SUITE, case, **r, tp1_us=one["us"] if one else None,
                      tp1_tokens_per_s=one["tokens_per_s"] if one else None,
                      speedup=_r(one["us"] / r["us"], 3) if one else None)
        if rank == 0:
            print_table(b.rows)
    finally:
        shutdown()


def print_table(rows: list[dict]) -> None:
    print(f"\n=== {SUITE} summary ===")
    print(f"{'tp':>3} {'batch':>5} {'ctx':>5} {'us/step':>9} {'tok/s':>10} {'comm_us':>8} {'share':>6} "
          f"{'nccl_us':>8} {'tp1_us':>9} {'speedup':>7}")
    for r in rows:
        c = r["case"]
        print(f"{c['tp']:>3} {c['batch']:>5} {c['context']:>5} {r['us']:>9} {r['tokens_per_s']:>10} "
              f"{str(r.get('comm_us')):>8} {str(r.get('comm_share')):>6} {str(r.get('nccl_kernel_us')):>8} "
              f"{str(r.get('tp1_us')):>9} {str(r.get('speedup')):>7}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, type=out_file, help="JSON-lines file for the rows")
    p.add_argument("--batches", default="1,64", type=lambda t: list(positive_int_list(t)))
    p.add_argument("--context", type=positive_int, default=1024)
    p.add_argument("--layers", type=int_at_least(2), default=4, help="decoder layers of the slice (1 dense + the rest MoE)")
    p.add_argument("--reps", type=positive_int, default=50, help="graph replays per median (the same on every rank)")
    p.add_argument("--eager-reps", type=positive_int, default=10, help="timed eager steps per median (no graph)")
    p.add_argument("--budget-s", type=positive_float, default=150.0, help="the spawned workers are killed after this")
    p.add_argument("--nccl-timeout-s", type=positive_float, default=240.0)
    p.add_argument("--commit", default=None, help="commit the rows carry (default: TRITONSEEK_COMMIT, else git HEAD)")
    a, unknown = p.parse_known_args(argv)
    a.commit = a.commit or git_commit()
    if unknown:  # `tritonseek bench` passes TRITONSEEK_BENCH_ARGS to every suite; the e2e ones are not ours
        print(f"{SUITE}: ignoring arguments {unknown}", flush=True)
    a.model_name = f"v3-slice-{a.layers}L"
    a.eager, a.backend, a.tiny = False, "triton", False
    return a


def main(argv=None) -> None:
    import tempfile

    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    require_cuda("bench_e2e_tp")  # no GPU at all: exit 2; one GPU: the skip below (exit 0) keeps `tritonseek bench` going
    n = torch.cuda.device_count()
    if n < 2:  # `tritonseek bench` runs every suite: a one-GPU machine skips this one
        print(f"{SUITE}: skipped, needs 2 CUDA GPUs and {n} are visible", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        spawn(worker, (2, os.path.join(tmp, "init"), argv), 2, a.budget_s)


if __name__ == "__main__":
    main()
