"""Benchmark suites ``mla_decode`` and ``mla_prefill`` (issue 3).

    PYTHONPATH=. python benchmarks/bench_mla.py [--sweep] [--suite all|mla_decode|mla_prefill]
        [--out rows.jsonl] [--winners winners.json] [--budget-s 300]

* ``mla_decode``: FlashMLA's own configuration — batch 128, s_k ∈ {4096, 8192} (fixed, and varlen with lengths ~
  N(s_k, s_k/2) clamped ≥ s_q as in FlashMLA's test), h_q ∈ {16, 32, 64, 128}, s_q ∈ {1, 2}, page 64, causal; d_qk
  576, head_dim_v 512, block ids a random permutation. FLOPs = 2·s_q·Σs_k·h_q·(576+512); bytes = (Σs_k·576 +
  b·s_q·h_q·576 + b·s_q·h_q·512)·2. The timed op is the whole ``mla_decode`` (split kernel + combine) with this step's
  metadata computed once outside (as every layer reuses it); ``metadata_us`` times ``get_mla_metadata``. Targets:
  h_q·s_q ≤ 32 → ≥ 3800 GB/s; h_q·s_q ≥ 128 → ≥ 600 TFLOP/s; every case ≥ 3× the peer.
* ``mla_prefill``: varlen causal attention, 128 heads, d_qk 192, d_v 128, {tokens, seqs} with equal lengths; FLOPs = Σ
  len²·h·(192+128) (causal half of 2·len²·h·(d_qk+d_v)). Target: ≥ 60% of the bf16 matrix rate (677 TFLOP/s measured
  by torch GEMM on our H200 → 406) at 8k-token prompts.
* Peers in the same run: decode — the plain-torch absorbed attention (gather the pages, bmm, masked fp32 softmax,
  bmm); prefill — ``torch.nn.functional.scaled_dot_product_attention`` per sequence.
* Timing: ``us`` eager median (triton.testing.do_bench), ``us_graph`` median CUDA-graph replay; tflops/gbps from
  us_graph; decode also ``us_graph_gpu`` / ``gbps_gpu``: the same replay on the GPU clock (queued behind a device
  sleep, so the host's graph launch is not timed). The decode caches (0.6–1.2 GB) are far larger than the 50 MB L2.
* Correctness of every measured config: cosine difference ≤ 1e-5 and |Δlse| ≤ 1e-3 against the fp32 reference
  (decode); rel. error ≤ 1e-2 on 8 heads against the fp32 reference (prefill).
* ``--sweep``: candidate configs per rows class are checked, then timed; the fastest correct one is used for the suite
  and written to ``--winners`` (copy into the kernels' ``_TUNED``). Candidates are compiled in parallel worker
  processes first (Triton's disk cache is shared).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

if __name__ == "__main__" and any(a in ("--d", "--dr", "--dry") for a in sys.argv[1:]):
    # --dry runs the kernels on CPU through Triton's interpreter, which @triton.jit reads when a kernel is defined:
    # it must be on before triton and the kernel modules load
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import bench_mla_prefill as PF  # noqa: E402 (suite mla_prefill)
from benchmarks.mla_decode_case import (D_QK, D_V, PAGE, check_decode, cos_diff, make_decode_case,  # noqa: E402, F401
                                        ref_rows, torch_peer_decode)
from benchmarks.timing import graph_replay_us, graph_time_gpu_us  # noqa: E402

from tritonseek.benchrun import (StagedRows, git_commit, out_file, positive_float, positive_int, require_cuda,  # noqa: E402
                                 write_json_kept)
from tritonseek.kernels import mla_decode as D
from tritonseek.kernels import mla_prefill as P
from tritonseek.kernels.reference.mla import mla_decode_ref

BATCH = 128
DEVICE = "cuda"
MATRIX_RATE = 677.0  # bf16 torch GEMM TFLOP/s measured on our H200 (GPU.md)

def _c(bh, bn, st, parts, warps=4, tma=True, ws=False):
    return dict(BLOCK_H=bh, BLOCK_N=bn, num_warps=warps, num_stages=st, PARTS_PER_SM=parts, USE_TMA=tma,
                WARP_SPECIALIZE=ws)


# Run 1 (commit ced8f6e) swept BLOCK_N 32/64, TMA on/off, 1-2 parts per SM: TMA won everywhere. Run 2 (2648088) tried
# 16-row cache steps, 2-3 parts/SM and warp specialization: no gain except 32 rows padded to a 64-row wgmma tile. Run
# 3 (8aa2ed4): 8 warps on the mma.sync tiles helped 32 rows only. Run 4 (e1423bb, b 128, s_k 4096, µs): TRANSPOSED 16
# rows 213 (4 warps) / 262 (8) vs 199 base; 32 rows 302 / 313 vs 268 base; LOOKAHEAD 64 rows 420 (BLOCK_N 32) / 795
# (64, 1 stage) / 677 (16) vs 332 base, 128 rows 791 vs 604: all slower. ptxas showed the mma.sync loops
# single-buffered: the block-table load ahead of each tile takes a pipeline stage, so 2 tile buffers need num_stages
# 5. Run 5 tries that (TMA and 16-byte pointer gathers) and fewer programs (128 = one per sequence at batch 128).
N128 = 128.5 / 132  # PARTS_PER_SM giving 128 programs on the H200's 132 SMs (int() rounds down)
# Run 5 (75f123d): 5 stages won for 16 rows (176 vs 199 µs) and 32 rows (241 vs 270); 16-byte pointer gathers 198; 128
# programs 214 / 262 / 337 / 620: slower. Run 6: head tiles of one part are now launched side by side (grid (head
# tiles, parts)), so 32 and 64 rows may run as 16/32-row tiles sharing L2.
DECODE_CANDIDATES = {
    16: [_c(16, 32, 5, 2), _c(16, 64, 5, 1)],
    32: [_c(32, 64, 5, 1, warps=8), _c(16, 32, 5, 2), _c(32, 32, 5, 1, warps=8)],
    64: [_c(64, 64, 2, 1, warps=8), _c(32, 64, 5, 1, warps=8), _c(16, 32, 5, 2)],
}
DECODE_CANDIDATES[128] = DECODE_CANDIDATES[64]  # rows > 64: same kernels, several head tiles
SWEEP_CASE = {16: (16, 1), 32: (32, 1), 64: (64, 1), 128: (128, 1)}  # rows class → (h_q, s_q), s_k 4096
DECODE_SK = (4096, 8192)
rows_class = D._rows_class  # s_q·h_q → 16 / 32 / 64 / 128, the tables' key


def graph_time_us(fn, min_ms: float = 30.0) -> float:
    """Median replay time of a CUDA graph holding one call of fn."""
    return graph_replay_us([fn], min_ms)


def eager_time_us(fn) -> float:
    return triton.testing.do_bench(fn, warmup=5, rep=30, return_mode="median") * 1000.0


PF.graph_time_us, PF.eager_time_us = graph_time_us, eager_time_us  # the prefill suite times the same way


# ----------------------------------------------------------------------------------------- decode
def decode_lens(s_k: int, s_q: int, varlen: bool) -> list[int]:
    if not varlen:
        return [s_k] * BATCH
    g = torch.Generator().manual_seed(s_k * 10 + s_q)
    x = torch.normal(float(s_k), s_k / 2, (BATCH,), generator=g)
    return [max(int(v), s_q) for v in x.tolist()]


def make_decode(h: int, s_q: int, lens: list[int], device=None):
    """A BATCH-sequence case (mla_decode_case.make_decode_case): BATCH is read at call time (the precompile
    workers lower it)."""
    return make_decode_case(BATCH, h, s_q, lens, device or DEVICE)


def run_decode(q, kv, bt, cs, cfg, out):
    md = D.get_mla_metadata(cs, q.shape[1], q.shape[2], config=cfg)
    fn = lambda: D.mla_decode(q, kv, bt, cs, D_QK**-0.5, True, D_V, metadata=md, out=out, check_ids=False)  # noqa: E731
    return md, fn


def _precompile_worker(kind: str, cfg: dict, h: int, s_q: int) -> str:
    """Compile one candidate in a fresh process (fills Triton's shared disk cache)."""
    try:
        torch.cuda.set_device(0)
        if kind == "decode":
            lens = [PAGE * 3 + 5] * 4 + [PAGE * 2]
            global BATCH
            BATCH = len(lens)
            q, kv, bt, cs = make_decode(h, s_q, lens)
            out = torch.empty(BATCH, s_q, h, D_V, dtype=q.dtype, device=DEVICE)
            _, fn = run_decode(q, kv, bt, cs, cfg, out)
            fn()
        else:
            lens = [200, 70]
            t = sum(lens)
            q = torch.randn(t, 2, 192, device=DEVICE, dtype=torch.bfloat16)
            v = torch.randn(t, 2, 128, device=DEVICE, dtype=torch.bfloat16)
            cu = torch.tensor([0, 200, 270], dtype=torch.int32, device=DEVICE)
            P.mla_prefill(q, q, v, cu, 200, 0.1, config=cfg)
        torch.cuda.synchronize()
        return "ok"
    except Exception as e:  # reported, the candidate is then skipped in the sweep
        return f"{type(e).__name__}: {str(e)[:200]}"


PRECOMPILE_TIMEOUT_S = 120.0


def precompile(tasks) -> None:
    import multiprocessing as mp

    t0 = time.time()
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(len(tasks), 14)) as pool:
        try:
            res = pool.starmap_async(_precompile_worker, tasks).get(timeout=PRECOMPILE_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 — a hung compile: go on, the sweep compiles what is left
            print(f"precompile stopped: {type(e).__name__}", flush=True)
            pool.terminate()
            return
    bad = [(t[1], r) for t, r in zip(tasks, res) if r != "ok"]
    print(f"precompiled {len(tasks)} variants in {time.time() - t0:.0f}s; failures: {bad}", flush=True)


def precompile_suite(winners: dict) -> None:
    """Compile the configs the suite will run (winners, else the committed tables) in parallel."""
    tasks = [("prefill", winners.get("prefill_192x128") or P.default_config(192, 128), 0, 0)]
    for cls, (h, s_q) in SWEEP_CASE.items():
        tasks.append(("decode", winners.get(f"decode_{cls}") or D.default_config(s_q, h), h, s_q))
    if DEVICE == "cuda":
        precompile(tasks)


def precompile_all(prefill: bool = True) -> None:
    tasks = [("prefill", c, 0, 0) for c in PF.PREFILL_CANDIDATES] if prefill else []
    for cls, cands in DECODE_CANDIDATES.items():
        h, s_q = SWEEP_CASE[cls]
        if cls != 128:
            tasks += [("decode", c, h, s_q) for c in cands]
    if DEVICE == "cuda":
        precompile(tasks)


def _cache_keys(jit_fn) -> set:
    try:
        return {(dev, k) for dev, c in jit_fn.device_caches.items() for k in c[0]}
    except Exception:  # noqa: BLE001 — Triton internals; stats are informational
        return set()


def kernel_stats(jit_fn, before: set) -> str:
    """Registers / spill bytes / shared memory of the kernels compiled since ``before`` (cache snapshot)."""
    out = []
    try:
        for dev, c in jit_fn.device_caches.items():
            for k, ker in c[0].items():
                if (dev, k) not in before:
                    ker._init_handles()
                    out.append(f"regs {ker.n_regs} spills {ker.n_spills} smem {ker.metadata.shared}")
    except Exception as e:  # noqa: BLE001
        out.append(f"stats unavailable ({type(e).__name__})")
    return "; ".join(out) or "cached"


def sweep_decode(winners: dict, deadline: float) -> None:
    for cls, cands in DECODE_CANDIDATES.items():
        if time.time() > deadline:
            print(f"sweep: out of time before class {cls}", flush=True)
            break
        h, s_q = SWEEP_CASE[cls]
        lens = decode_lens(DECODE_SK[0], s_q, False)
        q, kv, bt, cs = make_decode(h, s_q, lens)
        ref = mla_decode_ref(q.float(), kv, bt, cs, causal=True, head_dim_v=D_V)
        best = None
        for cfg in cands:
            out = torch.full((BATCH, s_q, h, D_V), float("nan"), dtype=q.dtype, device=DEVICE)
            before = _cache_keys(D._mla_decode_kernel)
            try:
                md, fn = run_decode(q, kv, bt, cs, cfg, out)
                o, lse = fn()
                cd, dl, ok = check_decode(o, lse, ref)
                t = graph_time_us(fn, 15.0) if ok else float("nan")
            except Exception as e:  # noqa: BLE001 — a config that fails to compile/launch is skipped
                print(f"  class {cls} {cfg}: {type(e).__name__} {str(e)[:120]}", flush=True)
                continue
            nbytes = (BATCH * DECODE_SK[0] * D_QK + BATCH * s_q * h * (D_QK + D_V)) * 2
            flops = 2 * s_q * BATCH * DECODE_SK[0] * h * (D_QK + D_V)
            print(f"  class {cls} h{h} s_q{s_q} {cfg}: cos {cd:.1e} dlse {dl:.1e} ok {ok} {t:.1f} us "
                  f"{nbytes / t / 1e3:.0f} GB/s {flops / t / 1e6:.0f} TFLOP/s | "
                  f"{kernel_stats(D._mla_decode_kernel, before)}", flush=True)
            if ok and (best is None or t < best[0]):
                best = (t, cfg)
        if best is not None:
            winners[f"decode_{cls}"] = best[1]
        del q, kv, bt, cs, ref
        torch.cuda.empty_cache()


MAX_ROWS = 10**9  # --max-rows: only cases with h_q·s_q ≤ this (e.g. 32 = the memory-bound ones)


def bench_decode(env, rows, out_f, winners, deadline):
    for s_k in DECODE_SK:
        try:
            _bench_decode_sk(env, rows, out_f, winners, deadline, s_k)
        except Exception as e:  # noqa: BLE001 — report and go on with the other s_k
            print(f"decode s_k {s_k} failed: {type(e).__name__} {str(e)[:300]}", flush=True)
            torch.cuda.empty_cache()


def _bench_decode_sk(env, rows, out_f, winners, deadline, s_k):
    for h in (16, 32, 64, 128):
        for s_q in (1, 2):
            for varlen in (False, True):
                if h * s_q > MAX_ROWS or (ONLY_HS and f"{h}x{s_q}" not in ONLY_HS):
                    continue
                if ONLY_VARLEN is not None and varlen != ONLY_VARLEN:
                    continue
                if time.time() > deadline:
                    print(f"decode: out of time at s_k {s_k} h {h} s_q {s_q} varlen {varlen}", flush=True)
                    return
                cls = rows_class(h * s_q)
                # no winner (sweep skipped or every candidate failed): the committed table
                # (the Hopper table, Gluon, where mla_decode would use it: as the library's default)
                hop = DEVICE == "cuda" and D._hopper_device(torch.device(DEVICE))
                cfg = winners.get(f"decode_{cls}") or (D.default_config(s_q, h, BATCH, hopper=hop) if not winners
                                                       else dict(DECODE_CANDIDATES[cls][0]))
                lens = decode_lens(s_k, s_q, varlen)
                q, kv, bt, cs = make_decode(h, s_q, lens)
                out = torch.full((BATCH, s_q, h, D_V), float("nan"), dtype=q.dtype, device=DEVICE)
                md, fn = run_decode(q, kv, bt, cs, cfg, out)
                o, lse = fn()
                idx = ref_rows(cs)  # the full fp32 reference costs seconds per case at batch 128
                ref = mla_decode_ref(q[idx].float(), kv, bt[idx], cs[idx], causal=True, head_dim_v=D_V)
                cd, dl, ok = check_decode(o, lse, ref, idx)
                ok = ok and not torch.isnan(o).any().item()
                del ref
                us = eager_time_us(fn)
                us_g = graph_time_us(fn)
                us_gpu = graph_time_gpu_us(fn) if DEVICE == "cuda" else float("nan")
                md_us = graph_time_us(lambda: D.get_mla_metadata(cs, s_q, h, config=cfg), 5.0)
                peer = lambda: torch_peer_decode(q, kv, bt, cs, max(lens), D_QK**-0.5)  # noqa: E731
                pcd, peer_us, peer_g = float("nan"), float("nan"), float("nan")
                if not NO_PEER:
                    po, plse = peer()
                    pcd = cos_diff(po.float(), o.float())
                    peer_us = eager_time_us(peer)
                    try:
                        peer_g = graph_time_us(peer, 10.0)
                    except Exception:  # noqa: BLE001
                        peer_g = peer_us
                    del po, plse
                sk_sum = sum(lens)
                flops = 2 * s_q * sk_sum * h * (D_QK + D_V)
                nbytes = (sk_sum * D_QK + BATCH * s_q * h * D_QK + BATCH * s_q * h * D_V) * 2
                row = dict(suite="mla_decode",
                           case=dict(batch=BATCH, s_k=s_k, h_q=h, s_q=s_q, page_size=PAGE, varlen=varlen),
                           us=round(us, 2), us_graph=round(us_g, 2), tflops=round(flops / us_g / 1e6, 1),
                           gbps=round(nbytes / us_g / 1e3, 1), peer="torch_absorbed", peer_us=round(peer_g, 2),
                           peer_us_eager=round(peer_us, 2), ratio_vs_peer=round(peer_g / us_g, 3),
                           metadata_us=round(md_us, 2), cos_diff=cd, lse_maxdiff=dl, correct=ok,
                           peer_cos_diff=pcd, config=cfg, num_parts=md.num_parts,
                           us_graph_gpu=round(us_gpu, 2), gbps_gpu=round(nbytes / us_gpu / 1e3, 1), **env)
                row["kernel"] = "gluon_ws" if cfg.get("GLUON") and D._use_gluon(
                    cfg, q, kv, D_V, cfg["BLOCK_N"], cfg["BLOCK_H"]) else "tl"
                rows.append(row)
                out_f.write(json.dumps(row) + "\n")
                out_f.flush()
                print(f"decode s_k {s_k} h {h} s_q {s_q} varlen {varlen}: {us_g:.1f} us (eager {us:.1f}, GPU clock "
                      f"{us_gpu:.1f} = {row['gbps_gpu']} GB/s) {row['gbps']} GB/s {row['tflops']} TFLOP/s peer {peer_g:.1f} us ok {ok} cos {cd:.1e}",
                      flush=True)
                if h * s_q <= GLUON_MAX_ROWS and (GLUON_VARIANT and row["kernel"] == "tl" or GLUON_EXTRA):
                    for over in ([{}] if GLUON_VARIANT and row["kernel"] == "tl" else []) + GLUON_EXTRA:
                        _gluon_variant_row(env, rows, out_f, row, q, kv, bt, cs, lens, idx, s_q, h, nbytes, flops,
                                           over)
                del q, kv, bt, cs, out, o, lse
                torch.cuda.empty_cache()


GLUON_VARIANT = False  # --gluon: also time the warp-specialized Gluon split kernel (mla_decode_ws) per case
GLUON_MAX_ROWS = 256  # rows (h_q·s_q) up to which the Gluon variant runs (all of FlashMLA's cases)
ONLY_HS: tuple[str, ...] = ()  # --hs: decode cases "h_qxs_q" only
GLUON_EXTRA: list[dict] = []  # --gluon-extra: more Gluon rows per case with these config overrides (any kernel)
NO_PEER = False  # --no-peer: skip the torch peer (variant runs; peer fields NaN)
ONLY_VARLEN: bool | None = None  # --varlen 0/1: fixed or varlen lengths only


def _gluon_variant_row(env, rows, out_f, tl_row, q, kv, bt, cs, lens, idx, s_q, h, nbytes, flops, over=None):
    """The same case on mla_decode_ws (Gluon TMA producer warp + wgmma consumer warpgroup), peer figures
    copied from the tl row of the same run; over: config overrides of this variant (--gluon-extra)."""
    from tritonseek.kernels.mla_decode_ws import mla_decode_ws, ws_config

    try:
        # the library's own Hopper default for this batch (the big-batch schedule and knobs), else the Gluon table
        cfg = D.default_config(s_q, h, BATCH, hopper=True)
        if not cfg.get("GLUON"):
            cfg = dict(D._TUNED_WS.get(rows_class(h * s_q)) or ws_config(s_q, h), GLUON=True)
        cfg.update(over or {})
        md = D.get_mla_metadata(cs, s_q, h, config=cfg)
        out = torch.full_like(q[..., :D_V], float("nan"))
        fn = lambda: mla_decode_ws(q, kv, bt, cs, D_QK**-0.5, True, D_V, metadata=md, out=out)  # noqa: E731
        o, lse = fn()
        ref = mla_decode_ref(q[idx].float(), kv, bt[idx], cs[idx], causal=True, head_dim_v=D_V)
        cd, dl, ok = check_decode(o, lse, ref, idx)
        ok = ok and not torch.isnan(o).any().item()
        us = eager_time_us(fn)
        us_g = graph_time_us(fn)
        us_gpu = graph_time_gpu_us(fn) if DEVICE == "cuda" else float("nan")
        # the two launches alone (split kernel, combine kernel), same metadata and buffers
        lse_b = torch.empty(q.shape[0], h, s_q, dtype=torch.float32, device=q.device)
        sp, cb = D._launches(q, kv, bt, cs, D_QK**-0.5, True, D_V, md, out, lse_b)
        # COMBINE_SPIN: the combine waits for the split's per-sequence counters, so neither is timed alone
        # (FUSE: the split kernel merges, the combine launch is empty)
        split_us, comb_us = ((float("nan"), float("nan")) if cfg.get("COMBINE_SPIN") else (graph_time_us(sp, 10.0), 0.0)
                             if cfg.get("FUSE") else (graph_time_us(sp, 10.0), graph_time_us(cb, 5.0)))
        n_split = int((md.split[:, 1] > 1).sum().item())
    except Exception as e:  # noqa: BLE001 — report and go on
        print(f"  gluon_ws h {h} s_q {s_q}: {type(e).__name__} {str(e)[:300]}", flush=True)
        return
    row = dict(tl_row, us=round(us, 2), us_graph=round(us_g, 2), tflops=round(flops / us_g / 1e6, 1),
               gbps=round(nbytes / us_g / 1e3, 1), ratio_vs_peer=round(tl_row["peer_us"] / us_g, 3),
               cos_diff=cd, lse_maxdiff=dl, correct=ok, config=cfg, num_parts=md.num_parts, kernel="gluon_ws",
               tl_us_graph=tl_row["us_graph"], variant=json.dumps(over or {}, sort_keys=True),
               split_us_graph=round(split_us, 2), combine_us_graph=round(comb_us, 2), split_seqs=n_split,
               us_graph_gpu=round(us_gpu, 2), gbps_gpu=round(nbytes / us_gpu / 1e3, 1),
               metadata_us=round(graph_time_us(lambda: D.get_mla_metadata(cs, s_q, h, config=cfg), 5.0), 2))
    rows.append(row)
    out_f.write(json.dumps(row) + "\n")
    out_f.flush()
    print(f"  gluon_ws {row['variant']}: {us_g:.1f} us (eager {us:.1f}, GPU clock {us_gpu:.1f}) {row['gbps']} GB/s  base {tl_row['us_graph']:.1f} us "
          f"split {split_us:.1f} combine {comb_us:.1f} ({n_split} split seqs) ok {ok} cos {cd:.1e} lse {dl:.1e}", flush=True)


# --------------------------------------------------------------------------------------- metadata
METADATA_REPS = 20  # calls per CUDA graph for the amortised figure (the replay's own launch cost shared)


def bench_metadata(env, rows, out_f):
    """``get_mla_metadata`` alone at batch 128 for every decode case's lengths and rows class, on its default
    Hopper config (packed at batch >= 64 for <= 64 rows, with the balanced fallback) and with SCHED=balanced:
    one call per graph replay (``us``, as the suite's metadata_us) and METADATA_REPS calls per replay
    (``us_amortized``: per call). Peer: the same balanced schedule as torch ops (reference.mla.mla_schedule_ref)
    on the device, one call per replay."""
    from tritonseek.kernels.reference.mla import mla_schedule_ref

    hop = DEVICE == "cuda" and D._hopper_device(torch.device(DEVICE))
    for s_k in DECODE_SK:
        for h, s_q in ((16, 1), (16, 2), (32, 1), (64, 1), (128, 1)):
            for varlen in (False, True):
                lens = decode_lens(s_k, s_q, varlen)
                cs = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
                base = D.default_config(s_q, h, BATCH, hopper=hop)
                for sched in dict.fromkeys((base.get("SCHED", "balanced"), "balanced")):
                    cfg = dict(base, SCHED=sched)
                    md = D.get_mla_metadata(cs, s_q, h, config=cfg)
                    fn = lambda: D.get_mla_metadata(cs, s_q, h, config=cfg)  # noqa: E731
                    us = graph_time_us(fn, 5.0)
                    us_am = graph_replay_us([fn] * METADATA_REPS, 5.0)
                    oh = cfg.get("OVERHEAD", D._FIXED_OVERHEAD_TILES)
                    peer = lambda: mla_schedule_ref(cs, md.num_parts, cfg["BLOCK_N"], oh, 1)  # noqa: E731
                    peer_us = graph_time_us(peer, 5.0)
                    n_split = int((md.split[:, 1] > 1).sum().item())
                    row = dict(suite="mla_metadata", case=dict(batch=BATCH, s_k=s_k, h_q=h, s_q=s_q, varlen=varlen,
                                                               sched=sched),
                               us=round(us, 2), us_amortized=round(us_am, 2), tflops=None, gbps=None,
                               peer="torch_schedule_ref_balanced", peer_us=round(peer_us, 2),
                               ratio_vs_peer=round(peer_us / us, 3), num_parts=md.num_parts, split_seqs=n_split,
                               config=cfg, **env)
                    rows.append(row)
                    out_f.write(json.dumps(row) + "\n")
                    out_f.flush()
                    print(f"metadata s_k {s_k} h {h} s_q {s_q} varlen {varlen} {sched}: {us:.2f} us per replay, "
                          f"{us_am:.2f} us per call ({METADATA_REPS} per replay), torch balanced {peer_us:.1f} us, "
                          f"{md.num_parts} parts, {n_split} split seqs", flush=True)


def _dry_mode() -> None:
    """Tiny CPU run of the whole script (interpreter): catches script bugs before spending GPU time."""
    global DEVICE, BATCH, DECODE_SK, graph_time_us, eager_time_us, graph_replay_us
    DEVICE, BATCH, DECODE_SK, PF.DEVICE, PF.PREFILL_HEADS = "cpu", 2, (64,), "cpu", 2
    PF.PREFILL_CASES = [(128, 1), (128, 2)]
    for k in DECODE_CANDIDATES:
        DECODE_CANDIDATES[k] = DECODE_CANDIDATES[k][:2]
    del PF.PREFILL_CANDIDATES[2:]

    def _once(fn, *a, **kw):
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e6

    graph_time_us = eager_time_us = PF.graph_time_us = PF.eager_time_us = _once  # noqa: F811
    graph_replay_us = lambda fns, *a, **kw: _once(lambda: [f() for f in fns]) / len(fns)  # noqa: E731, F811
    torch.cuda.get_device_name = lambda *a: "cpu-dry"


def _hs_case(text: str) -> str:
    """--hs: h_qxs_q, e.g. 16x1 (a typo matched no case: a silent run without decode rows)."""
    h, _, s_q = text.partition("x")
    positive_int(h), positive_int(s_q)
    return f"{int(h)}x{int(s_q)}"


def _json_object(text: str) -> dict:
    try:
        v = json.loads(text)
    except ValueError:
        v = None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
    return v


def main():
    global BATCH
    p = argparse.ArgumentParser(description="MLA decode / prefill benchmark suites (see the module docstring).")
    p.add_argument("--suite", default="all", choices=["all", "mla_decode", "mla_prefill", "none"])
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--out", default="mla_rows.jsonl", type=out_file,
                   help="JSON rows; an existing OUT is replaced when the run ends (rows go to OUT.partial meanwhile: an "
                        "interrupted or failed run keeps the old OUT), a new one gets each row as it is measured")
    p.add_argument("--winners", default="mla_winners.json", type=out_file,
                   help="the sweep's winning configs (JSON); never written by --dry (interpreter timings)")
    p.add_argument("--budget-s", type=positive_float, default=1e9, help="stop starting new work after this many seconds")
    p.add_argument("--dry", action="store_true", help="CPU smoke run through Triton's interpreter (turned on by this "
                   "flag), tiny shapes; rows carry dry: true")
    p.add_argument("--sweep-only", action="store_true", help="precompile + sweeps, no suite rows")
    p.add_argument("--precompile", action="store_true", help="compile the suite's configs in parallel first")
    p.add_argument("--max-rows", type=positive_int, default=10**9, help="decode cases with h_q·s_q ≤ this only")
    p.add_argument("--gluon", action="store_true", help="decode: also a row per case from mla_decode_ws (Hopper)")
    p.add_argument("--sk", type=positive_int, nargs="*", help="decode: these s_k only (default 4096 8192)")
    p.add_argument("--hs", nargs="*", default=(), type=_hs_case, help="decode: these h_qxs_q cases only, e.g. 16x1 32x1")
    p.add_argument("--varlen", type=int, choices=[0, 1], help="decode: fixed (0) or varlen (1) lengths only")
    p.add_argument("--gluon-extra", nargs="*", default=(), type=_json_object, help='decode: extra Gluon variants, JSON overrides each')
    p.add_argument("--no-peer", action="store_true", help="decode: skip the torch peer")
    p.add_argument("--batch", type=positive_int, default=BATCH, help="decode/metadata batch (FlashMLA's: 128)")
    p.add_argument("--metadata", action="store_true", help="get_mla_metadata timings (suite mla_metadata) first")
    args = p.parse_args()
    global MAX_ROWS, GLUON_VARIANT, DECODE_SK, ONLY_HS, ONLY_VARLEN, GLUON_EXTRA, NO_PEER
    NO_PEER = args.no_peer
    BATCH = args.batch
    MAX_ROWS = args.max_rows
    GLUON_VARIANT = args.gluon
    ONLY_HS = tuple(args.hs)
    GLUON_EXTRA = list(args.gluon_extra)
    ONLY_VARLEN = None if args.varlen is None else bool(args.varlen)
    if args.sk:
        DECODE_SK = tuple(args.sk)
    if args.dry and not D.interpreter_active():
        p.error("--dry runs the kernels on CPU through Triton's interpreter, which was off when they were defined "
                f"(TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}); run with TRITON_INTERPRET=1")
    if args.dry:
        _dry_mode()
    else:
        require_cuda("bench_mla")
    t0 = time.time()
    deadline = t0 + args.budget_s
    global PRECOMPILE_TIMEOUT_S
    PRECOMPILE_TIMEOUT_S = min(PRECOMPILE_TIMEOUT_S, 0.7 * args.budget_s)
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), dry=args.dry,
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows, winners = [], {}
    do_dec = args.suite in ("all", "mla_decode")
    do_pre = args.suite in ("all", "mla_prefill")
    with StagedRows(args.out) as out_f:
        try:
            if args.sweep:
                precompile_all(prefill=do_pre)
            f_dec, f_pre = (0.85, 0.97) if args.sweep_only else (0.3, 0.45)
            if args.sweep and do_dec:
                sweep_decode(winners, t0 + f_dec * args.budget_s)
            if args.sweep and do_pre:
                PF.sweep_prefill(winners, t0 + f_pre * args.budget_s)
            print(f"winners: {json.dumps(winners)}  ({time.time() - t0:.0f}s)", flush=True)
            if args.precompile and not args.sweep and not args.sweep_only:
                precompile_suite(winners)
            if winners and not args.dry:  # the sweep finished: its winners replace the old file
                write_json_kept(args.winners, winners, complete=True)
            if args.metadata:
                bench_metadata(env, rows, out_f)
            if do_pre and not args.sweep_only:
                PF.bench_prefill(env, rows, out_f, winners, t0 + 0.6 * args.budget_s)
            if do_dec and not args.sweep_only:
                bench_decode(env, rows, out_f, winners, deadline)
        finally:
            # an empty dict would replace an old winners file; an unfinished run writes .partial. A --dry sweep's
            # winners come from CPU-interpreter timings: never written (s19: bench_moe's replaced the real file)
            if winners and args.dry:
                print("--dry: the sweep's winners are not written (CPU-interpreter timings)", file=sys.stderr)
            elif winners:
                write_json_kept(args.winners, winners, complete=sys.exc_info()[0] is None)
    print(f"\n{'case':44s} {'us_g':>8s} {'GB/s':>7s} {'TFLOP/s':>8s} {'peer_us':>8s} {'x peer':>6s} target  met ok")
    for r in rows:
        c = r["case"]
        if r["suite"] == "mla_metadata":
            continue
        if r["suite"] == "mla_decode":
            name = (f"dec s_k{c['s_k']} h{c['h_q']} s_q{c['s_q']}{' var' if c['varlen'] else ''}"
                    f"{' gluon' if r.get('kernel') == 'gluon_ws' else ''}"
                    f"{' ' + r['variant'] if r.get('variant', '{}') != '{}' else ''}")
            rq = c["h_q"] * c["s_q"]
            if rq <= 32:
                tgt, met = "3800GB/s", r["gbps"] >= 3800
            elif rq >= 128:
                tgt, met = "600TF", r["tflops"] >= 600
            else:
                tgt, met = "-", None
        else:
            name = f"prefill tokens{c['tokens']} seqs{c['seqs']}"
            tgt, met = "406TF", r["tflops"] >= 0.6 * MATRIX_RATE
        met3 = r["ratio_vs_peer"] >= 3
        print(f"{name:44s} {r['us_graph']:8.1f} {r['gbps'] or 0:7.0f} {r['tflops']:8.1f} {r['peer_us']:8.1f} "
              f"{r['ratio_vs_peer']:6.2f} {tgt:7s} {met}/{met3} {r['correct']}"
              + (f"  GPU clock {r['us_graph_gpu']:.1f} us {r['gbps_gpu']:.0f} GB/s" if r.get("us_graph_gpu") else ""))
    print(f"total {time.time() - t0:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
