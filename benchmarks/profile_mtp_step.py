"""Where an MTP step's time goes on the trained default model (issue 6): plain decode vs MTP, per step.

For each batch size and K, ``LLM().generate`` (greedy, ignore_eos) in four modes — ``plain`` (graph decode),
``stepwise`` (``graph_step = False``: K−1 draft replays, verify replay, eager verification kernel, ``.tolist()``,
MTP-pass replay), ``fused_sync`` (``graph_step = True``, ``MTPStepGraphs.lookahead = False``: one (bucket, K)
graph replay and one device→host copy per step, read before the next launch) and ``fused`` (the engine default:
lookahead on, step t+1 launched before step t is read) — and reports per decode step:

- ``wall_ms``: decode wall time ÷ steps (what tokens/s sees);
- ``gpu_ms``: GPU busy time ÷ steps (sum of kernel and memcpy times in a torch.profiler trace of one run);
- ``host_gap_ms`` = wall − gpu: time the GPU waits on the host (Python bookkeeping, launches, syncs);
- per step counts of host→device / device→host copies, stream / event / device synchronisations, graph
  launches and eager kernel launches (CUDA runtime calls in the trace);
- ``replay_ms``: the bare device time of the step's graph(s) replayed back to back (CUDA events, 50 replays:
  plain = the decode graph; fused_sync = the step graph; stepwise: not measured, several graphs plus eager work).

``PYTHONPATH=. python benchmarks/profile_mtp_step.py --batches 1,16 --ks 1,3 --tokens 64 --out prof.json``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.mtp_e2e import PROMPTS  # noqa: E402

RUNTIME = {  # CUDA runtime / driver call names → count keys
    "cudaMemcpyAsync": "memcpy", "cudaStreamSynchronize": "stream_sync", "cudaEventSynchronize": "event_sync",
    "cudaDeviceSynchronize": "device_sync", "cudaGraphLaunch": "graph_launch", "cudaLaunchKernel": "kernel_launch",
    "cuLaunchKernel": "kernel_launch", "cuLaunchKernelEx": "kernel_launch", "cudaLaunchKernelExC": "kernel_launch",
}


def _profile(llm, prompts, sp, k: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        llm.generate(prompts, sp, mtp=k)
    steps = max(llm.last_stats.decode_steps, 1)
    counts: dict[str, float] = {}
    gpu_us = 0.0
    for e in prof.key_averages():
        key = RUNTIME.get(e.key)
        if key:
            counts[key] = counts.get(key, 0) + e.count
        dev = getattr(e, "device_type", None)
        if dev is not None and "CUDA" in str(dev):
            gpu_us += getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0)
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    return dict(gpu_ms_run=gpu_us / 1e3, per_step_counts={k_: round(v / steps, 2) for k_, v in sorted(counts.items())},
                top_host=[(e.key[:48], round(e.self_cpu_time_total / steps, 1), round(e.count / steps, 2)) for e in top])


def _replay_ms(graph, n: int = 50, reset=None) -> float:
    if reset is not None:
        reset()
    for _ in range(2):
        graph.replay()
    if reset is not None:
        reset()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        graph.replay()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / n


def run(batches, ks, tokens, inference: bool = False) -> list[dict]:
    from tritonseek.engine.llm import LLM
    from tritonseek.engine.sampling_params import SamplingParams

    llm = LLM(device="cuda")  # built outside inference mode, as a user builds it
    sp = SamplingParams(max_new_tokens=tokens, ignore_eos=True)
    rows = []
    with torch.inference_mode(inference):  # generate as the CLI calls it (False), or as mtp_e2e does (True)
        for batch in batches:
            rows += _run_batch(llm, batch, ks, sp)
    return rows


def _run_batch(llm, batch: int, ks, sp) -> list[dict]:
    from tritonseek.engine import mtp_step

    rows = []
    prompts = (PROMPTS * (batch // len(PROMPTS) + 1))[:batch]
    modes = [("plain", 0, False)] + [(m, k, m != "stepwise") for k in ks for m in ("stepwise", "fused_sync", "fused")]
    for mode, k, fused in modes:
        llm.graph_verify, llm.graph_step = True, fused
        mtp_step.MTPStepGraphs.lookahead = mode == "fused"
        llm.generate(prompts, sp, mtp=k)  # compile / capture
        best = None
        for _ in range(2):
            t0 = time.perf_counter()
            llm.generate(prompts, sp, mtp=k)
            st = llm.last_stats
            r = dict(wall_ms=st.decode_s / max(st.decode_steps, 1) * 1e3, steps=st.decode_steps,
                     tps=(st.new_tokens - batch) / st.decode_s, generate_s=time.perf_counter() - t0,
                     acceptance=st.extra.get("acceptance"), tokens_per_step=st.extra.get("tokens_per_step"))
            best = r if best is None or r["tps"] > best["tps"] else best
        p = _profile(llm, prompts, sp, k)
        steps = max(llm.last_stats.decode_steps, 1)
        best.update(gpu_ms=p["gpu_ms_run"] / steps, per_step_counts=p["per_step_counts"], top_host=p["top_host"])
        best["host_gap_ms"] = best["wall_ms"] - best["gpu_ms"]
        replay = None
        if mode == "plain":
            replay = _replay_ms(llm._graphs.graph(batch, 1))
        elif mode == "fused_sync":
            sg = mtp_step._STEP_GRAPHS.get(llm._graphs)
            g = sg._graphs.get((sg.bucket(batch), k)) if sg is not None else None
            # a step graph advances its positions: restart them at 0 (the last launch's block-table rows stay;
            # 2 + 16 replays of ≤ 4 positions stay inside each row's allocated pages)
            replay = _replay_ms(g, 16, sg.pos0.zero_) if g is not None else None
        best.update(mode=mode, batch=batch, k=k, replay_ms=replay)
        rows.append(best)
        print(f"b={batch:<3} k={k} {mode:<10}: wall {best['wall_ms']:.3f} ms/step  gpu {best['gpu_ms']:.3f}  "
              f"host gap {best['host_gap_ms']:.3f}  replay {replay if replay is None else round(replay, 4)}  "
              f"{best['tps']:9.1f} tok/s  acc {best['acceptance']}  counts/step {best['per_step_counts']}",
              flush=True)
        print("    top host ops (us/step, calls/step): " + "; ".join(f"{a} {b_} {c}" for a, b_, c in best["top_host"][:8]),
              flush=True)
    return rows


def main(argv=None) -> None:
    from tritonseek.benchrun import out_file, positive_int, positive_int_list, require_cuda

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16", type=positive_int_list)
    ap.add_argument("--ks", default="1,3", type=positive_int_list)
    ap.add_argument("--tokens", type=positive_int, default=64)
    ap.add_argument("--out", default=None, type=out_file)
    ap.add_argument("--inference-mode", action="store_true", help="call generate inside torch.inference_mode()")
    a = ap.parse_args(argv)
    require_cuda("profile_mtp_step")
    rows = run(list(a.batches), list(a.ks), a.tokens, a.inference_mode)
    base = {r["batch"]: r for r in rows if r["mode"] == "plain"}
    print("\n batch  k  mode        wall ms  gpu ms  host gap  replay ms  tok/s     vs plain")
    for r in rows:
        vs = r["tps"] / base[r["batch"]]["tps"] if r["batch"] in base else float("nan")
        rp = "-" if r["replay_ms"] is None else f"{r['replay_ms']:.4f}"
        print(f" {r['batch']:>5} {r['k']:>2}  {r['mode']:<10} {r['wall_ms']:7.3f} {r['gpu_ms']:7.3f} {r['host_gap_ms']:9.3f}"
              f"  {rp:>9}  {r['tps']:9.1f} {vs:6.3f}x")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
    main()
