"""H200 probe: the Gluon MLA prefill kernels (mla_prefill_ws, its persistent variant, the tl kernel) and torch SDPA.

Run: PYTHONPATH=. [VARIANTS="ws wsP ws_aa"] python benchmarks/probe_prefill_ws.py OUT_DIR [--budget SECONDS]
1. correctness at the benchmark's shapes (128 heads, d_qk 192, d_v 128, equal lengths; bench_mla_prefill's cases):
   every variant's out (poisoned with NaN first) against the fp32 reference on 8 heads (‖out − ref‖/‖ref‖ ≤ 1e-2,
   bench_mla_prefill's check) and against the first variant on all heads;
2. time: per case one CUDA graph per variant (CALLS calls), replays interleaved over variants (each round visits
   every variant once, in a rotated order), GPU clock (CUDA events around the replay); median over rounds.
   "ws_aa" / "tl_aa" run "ws" / "tl" again (A/A control: the difference is the run's spread);
   env VARIANTS picks the variants (default "ws wsP wsP64 ws_aa": the s21 default, the persistent kernel with 128-
   and 64-key blocks, the A/A), CASES_ONLY the cases, ROUNDS the rounds, CALLS the calls per graph;
3. rows (suite mla_prefill_ab) to OUT_DIR/rows.jsonl, a table last.
FLOPs = Σ len²·h·(192 + 128) (causal half), as bench_mla_prefill.
"""

from __future__ import annotations

import sys

if __name__ != "__main__":
    raise ImportError("probe_prefill_ws.py is a script")

import json
import os
import statistics
import subprocess
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.timing import _capture  # noqa: E402
from tritonseek.kernels import mla_prefill as P  # noqa: E402
from tritonseek.kernels.reference.mla import mla_prefill_ref  # noqa: E402

out_dir = sys.argv[1]
budget = float(sys.argv[sys.argv.index("--budget") + 1]) if "--budget" in sys.argv else 150.0
T0 = time.time()
os.makedirs(out_dir, exist_ok=True)
rows_f = open(os.path.join(out_dir, "rows.jsonl"), "w")
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except Exception:  # noqa: BLE001
    commit = ""
commit = os.environ.get("COMMIT", os.environ.get("TRITONSEEK_COMMIT", commit)) or "unknown"
env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=__import__("triton").__version__,
           commit=commit, date=time.strftime("%Y-%m-%d"))
HEADS, SCALE = 128, 192**-0.5
CALLS = int(os.environ.get("CALLS", "2"))  # calls per graph replay
ROUNDS = int(os.environ.get("ROUNDS", "11"))
# bench_mla_prefill's five cases, then 8192 tokens as 16 × 512, 32 × 256 and 4 × 2048 (shorter prompts; s22)
CASES = [(8192, 1), (8192, 2), (8192, 8), (4096, 1), (16384, 4), (8192, 16), (8192, 32), (8192, 4)]
_WS = dict(GLUON=True, WS_BLOCK_N=128, WS_STAGES=2, PIPE=True)
ALL_VARIANTS = {
    "ws": dict(_WS, PERSIST=False),  # one program per (query block, head, sequence): the s21 default
    "ws_aa": dict(_WS, PERSIST=False),  # A/A control of "ws"
    "wsP": dict(_WS, PERSIST=True),  # persistent (mla_prefill_ws_persistent), 128-key blocks: the s22 default
    "wsP_aa": dict(_WS, PERSIST=True),  # A/A control of "wsP"
    "wsP64": dict(_WS, WS_BLOCK_N=64, WS_STAGES=3, PERSIST=True),
    "wsPd": dict(_WS, PERSIST=True, DIAG64=True),  # warpgroup 0's diagonal block as 64-key wgmmas
    "dflt": None,  # mla_prefill's default config: persistent, block shape by max_seqlen (persist_config)
    "ws128s": dict(_WS, PIPE=False, PERSIST=False),
    "ws64p": dict(_WS, WS_BLOCK_N=64, WS_STAGES=3, PERSIST=False),
    "ws64s": dict(_WS, WS_BLOCK_N=64, WS_STAGES=3, PIPE=False, PERSIST=False),
    "tl": dict(GLUON=False),
    "tl_aa": dict(GLUON=False),
}
# VARIANTS (space separated names, first = the one the others are checked against); CASES_ONLY ("8192x8 …")
VARIANTS = {n: ALL_VARIANTS[n] for n in os.environ.get("VARIANTS", "ws wsP wsP64 ws_aa").split()}
if os.environ.get("CASES_ONLY"):
    CASES = [tuple(int(x) for x in c.split("x")) for c in os.environ["CASES_ONLY"].split()]
FIRST = next(iter(VARIANTS))


def log(msg):
    print(f"[+{time.time() - T0:.0f}s] {msg}", flush=True)


def make(tokens, seqs):
    lens = [tokens // seqs] * seqs
    q = torch.randn(tokens, HEADS, 192, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(tokens, HEADS, 192, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(tokens, HEADS, 128, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0] + [sum(lens[: i + 1]) for i in range(seqs)], dtype=torch.int32, device="cuda")
    return lens, q, k, v, cu


def sdpa(q, k, v, lens, out_list):
    s = 0
    for n in lens:
        qs, ks, vs = (x[s:s + n].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        out_list.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=SCALE))
        s += n


results = []
bad = set()
for tokens, seqs in CASES:
    if time.time() - T0 > budget:
        log(f"out of time before {tokens}/{seqs}")
        break
    lens, q, k, v, cu = make(tokens, seqs)
    flops = sum(n * n for n in lens) * HEADS * (192 + 128)
    ref8 = mla_prefill_ref(q[:, :8].float(), k[:, :8].float(), v[:, :8].float(), cu, SCALE)
    outs = {}
    fns = {}
    for name, cfg in VARIANTS.items():
        if name in bad:
            continue
        o = torch.full((tokens, HEADS, 128), float("nan"), device="cuda", dtype=torch.bfloat16)
        try:
            t = time.time()
            P.mla_prefill(q, k, v, cu, max(lens), SCALE, out=o, config=cfg, check_ids=False)
            torch.cuda.synchronize()
            first_s = time.time() - t
        except Exception as e:  # noqa: BLE001
            log(f"{name} {tokens}/{seqs}: {type(e).__name__} {str(e)[:300]}")
            bad.add(name)
            continue
        rel = ((o[:, :8].float() - ref8).norm() / ref8.norm()).item()
        nan = bool(torch.isnan(o).any().item())
        outs[name] = o
        f = outs.get(FIRST)
        rel_1 = ((o.float() - f.float()).norm() / f.float().norm()).item() if f is not None else 0.0
        ok = rel <= 1e-2 and not nan and rel_1 <= 1e-2
        log(f"check {name} {tokens}/{seqs}: rel_ref8 {rel:.2e} rel_{FIRST} {rel_1:.2e} nan {nan} ok {ok} "
            f"(first call {first_s:.1f}s)")
        if not ok:
            bad.add(name)
            continue
        fns[name] = (lambda cfg=cfg, o=o: P.mla_prefill(q, k, v, cu, max(lens), SCALE, out=o, config=cfg,
                                                        check_ids=False))
    peer_out: list = []
    fns["sdpa"] = lambda: sdpa(q, k, v, lens, peer_out)
    graphs = {}
    for name, fn in fns.items():
        try:
            graphs[name] = _capture([fn] * CALLS)  # benchmarks.timing's warm-up + capture
        except Exception as e:  # noqa: BLE001
            log(f"graph {name}: {type(e).__name__} {str(e)[:200]}")
    peer_out.clear()
    times = {n: [] for n in graphs}
    names = list(graphs)
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for r in range(ROUNDS):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            st.record()
            graphs[n].replay()
            en.record()
            en.synchronize()
            times[n].append(st.elapsed_time(en) * 1000.0 / CALLS)
    med = {n: statistics.median(t) for n, t in times.items()}
    peer_us = med.get("sdpa", float("nan"))
    for n, us in med.items():
        ts = sorted(times[n])
        cfg_n = VARIANTS.get(n) if n != "dflt" else P.persist_config(P.default_config(192, 128), None, max(lens))
        row = dict(suite="mla_prefill_ab", case=dict(tokens=tokens, seqs=seqs), heads=HEADS, variant=n,
                   config=cfg_n, us=round(us, 2), tflops=round(flops / us / 1e6, 1), gbps=None,
                   peer="torch_sdpa", peer_us=round(peer_us, 2), ratio_vs_peer=round(peer_us / us, 3),
                   p10_us=round(ts[len(ts) // 10], 2), p90_us=round(ts[(9 * len(ts)) // 10], 2), rounds=ROUNDS,
                   calls_per_graph=CALLS, timing="gpu_clock_interleaved_graph", **env)
        rows_f.write(json.dumps(row) + "\n")
        rows_f.flush()
        results.append(row)
    log(f"{tokens}/{seqs}: " + "  ".join(f"{n} {med[n]:.0f}us {flops / med[n] / 1e6:.0f}TF" for n in names))
    del graphs, fns, outs, q, k, v
    torch.cuda.empty_cache()

print("\n# mla_prefill A/B (128 heads, d_qk 192, d_v 128; GPU clock, graph replays, median of "
      f"{ROUNDS} interleaved rounds; TFLOP/s [ratio to sdpa]; commit {commit})")
names = sorted({r["variant"] for r in results}, key=lambda n: list(VARIANTS).index(n) if n in VARIANTS else 99)
print(f"{'case':>10} " + " ".join(f"{n:>15}" for n in names) + f"  {'/' + FIRST + ' (each)':>24}")
for tokens, seqs in CASES:
    rs = {r["variant"]: r for r in results if r["case"] == dict(tokens=tokens, seqs=seqs)}
    if rs:
        cells = [f"{rs[n]['tflops']:>7.1f} [{rs[n]['ratio_vs_peer']:.3f}]" if n in rs else f"{'-':>15}"
                 for n in names]
        rel = " ".join(f"{n} {rs[FIRST]['us'] / rs[n]['us']:.3f}" for n in names if n in rs and FIRST in rs
                       and n not in (FIRST, "sdpa"))
        print(f"{tokens:>6}/{seqs:<3} " + " ".join(cells) + "  " + rel)
print(f"failed/incorrect variants: {sorted(bad) or 'none'}")
