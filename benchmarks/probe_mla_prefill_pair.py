"""H200 probe: the MLA prefill kernels side by side — the persistent Gluon kernel's PAIR_MID schedule (issue 3, s23) and
its other block shapes, the one-program-per-block (s21) kernel, the tl kernel, mla_prefill's default config — and
torch SDPA (it replaced probe_prefill_ws.py in s23; that probe's cases are e.g. CASES="1x8192 2x4096 8x1024").

Run: PYTHONPATH=. python benchmarks/probe_mla_prefill_pair.py OUT_DIR [--budget SECONDS]
Env: VARIANTS (space-separated names of ``ALL``; the first is the one the others are checked against and divided
by), CASES ("24x341 8x1024 …": seqs × tokens each), ROUNDS, CALLS (calls per graph).
1. correctness, per case and variant: out NaN-poisoned first, then ‖out − ref‖/‖ref‖ ≤ 1e-2 against the fp32 reference
   on 8 heads, no NaN left, and ≤ 1e-2 against the first variant on all 128 heads; a failing variant is not timed;
2. time: one CUDA graph of CALLS calls per variant (benchmarks.timing._capture), replays interleaved (each round
   every variant once, rotated order), GPU clock (CUDA events around a replay), median over ROUNDS; "_aa" names run
   their twin again (A/A control: the difference between the two is the run's spread);
3. rows (suite mla_prefill_ab) to OUT_DIR/rows.jsonl; a table last: TFLOP/s [ratio to SDPA], then time of the
   first variant ÷ time of each.
FLOPs = Σ len²·h·(192 + 128) (causal half), as bench_mla_prefill.
"""

from __future__ import annotations

import sys

if __name__ != "__main__":
    raise ImportError("probe_mla_prefill_pair.py is a script")

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
budget = float(sys.argv[sys.argv.index("--budget") + 1]) if "--budget" in sys.argv else 120.0
T0 = time.time()
os.makedirs(out_dir, exist_ok=True)
commit = (os.environ.get("COMMIT") or os.environ.get("TRITONSEEK_COMMIT")
          or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
          or "unknown")
env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=__import__("triton").__version__,
           commit=commit, date=time.strftime("%Y-%m-%d"))
HEADS, SCALE = 128, 192**-0.5
CALLS = int(os.environ.get("CALLS", "2"))
ROUNDS = int(os.environ.get("ROUNDS", "21"))
CASES = [tuple(int(x) for x in c.split("x")) for c in
         os.environ.get("CASES", "24x341 13x630 40x300 8x1024 1x4096 1x8192").split()]
_P = dict(GLUON=True, WS_BLOCK_N=128, WS_STAGES=2, PIPE=True, PERSIST=True)
ALL = {
    "wsPm": dict(_P, PAIR_MID=True),  # persistent, 128-key blocks, middle blocks paired
    "wsPm_aa": dict(_P, PAIR_MID=True),  # A/A twin of wsPm
    "wsP": dict(_P),  # persistent, 128-key blocks, s22 schedule
    "wsPm64": dict(_P, WS_BLOCK_N=64, WS_STAGES=3, PAIR_MID=True),
    "wsP64": dict(_P, WS_BLOCK_N=64, WS_STAGES=3),
    "wsPmd": dict(_P, DIAG64=True, PAIR_MID=True),
    "ws": dict(_P, PERSIST=False),  # one program per (query block, head, sequence): s21's kernel
    "ws_aa": dict(_P, PERSIST=False),  # A/A twin of ws
    "wsP_aa": dict(_P),  # A/A twin of wsP
    "wsPd": dict(_P, DIAG64=True),  # warpgroup 0's diagonal block as 64-key wgmmas
    "ws128s": dict(_P, PIPE=False, PERSIST=False),  # s21's kernel without the next block's QKᵀ issued early
    "ws64p": dict(_P, WS_BLOCK_N=64, WS_STAGES=3, PERSIST=False),
    "ws64s": dict(_P, WS_BLOCK_N=64, WS_STAGES=3, PIPE=False, PERSIST=False),
    "tl": dict(GLUON=False),  # the tl kernel (the interpreter's and non-Hopper path)
    "tl_aa": dict(GLUON=False),
    "dflt": None,  # mla_prefill's default config (kernel and block shape by max_seqlen: persist_config)
    "dflt_aa": None,  # A/A twin of dflt
    "s22": "s22",  # s22's default: the one-program-per-block kernel at 257-384 tokens, no PAIR_MID
}


def s22_default(n_tok):
    # mla_prefill's default config before s23 (PAIR_MID off, 257-384 tokens on the one-program-per-block kernel)
    if 256 < n_tok <= 384:
        return dict(_P, PERSIST=False, PAIR_MID=False)
    return dict(P.persist_config(P.default_config(192, 128), None, n_tok), PAIR_MID=False)


VARIANTS = {n: ALL[n] for n in os.environ.get("VARIANTS", "wsPm wsP wsPm64 ws dflt wsPm_aa").split()}
FIRST = next(iter(VARIANTS))


def log(msg):
    print(f"[+{time.time() - T0:.0f}s] {msg}", flush=True)


def sdpa(q, k, v, lens, sink):
    s = 0
    for n in lens:
        qs, ks, vs = (x[s:s + n].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        sink.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=SCALE))
        s += n


rows_f = open(os.path.join(out_dir, "rows.jsonl"), "w")
results, bad = [], set()
for seqs, n_tok in CASES:
    if time.time() - T0 > budget:
        log(f"out of time before {seqs}x{n_tok}")
        break
    lens = [n_tok] * seqs
    tokens = seqs * n_tok
    q, k = (torch.randn(tokens, HEADS, 192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(tokens, HEADS, 128, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0] + [n_tok * (i + 1) for i in range(seqs)], dtype=torch.int32, device="cuda")
    flops = tokens * n_tok * HEADS * (192 + 128)
    ref8 = mla_prefill_ref(q[:, :8].float(), k[:, :8].float(), v[:, :8].float(), cu, SCALE)
    fns, first_out = {}, None
    for name, cfg in VARIANTS.items():
        if name in bad:
            continue
        cfg = s22_default(n_tok) if cfg == "s22" else cfg
        o = torch.full((tokens, HEADS, 128), float("nan"), device="cuda", dtype=torch.bfloat16)
        try:
            P.mla_prefill(q, k, v, cu, n_tok, SCALE, out=o, config=cfg, check_ids=False)
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001
            log(f"{name} {seqs}x{n_tok}: {type(e).__name__} {str(e)[:300]}")
            bad.add(name)
            continue
        rel = ((o[:, :8].float() - ref8).norm() / ref8.norm()).item()
        nan = bool(torch.isnan(o).any().item())
        first_out = o if first_out is None else first_out
        rel_1 = ((o.float() - first_out.float()).norm() / first_out.float().norm()).item()
        ok = rel <= 1e-2 and not nan and rel_1 <= 1e-2
        log(f"check {name} {seqs}x{n_tok}: rel_ref8 {rel:.2e} rel_first {rel_1:.2e} nan {nan} ok {ok}")
        if not ok:
            bad.add(name)
            continue
        fns[name] = lambda cfg=cfg, o=o, x=(q, k, v, cu): P.mla_prefill(*x, n_tok, SCALE, out=o, config=cfg,
                                                                      check_ids=False)
    sink: list = []
    fns["sdpa"] = lambda x=(q, k, v): sdpa(*x, lens, sink)
    graphs = {}
    for name, fn in fns.items():
        try:
            graphs[name] = _capture([fn] * CALLS)
        except Exception as e:  # noqa: BLE001
            log(f"graph {name}: {type(e).__name__} {str(e)[:200]}")
    sink.clear()
    names = list(graphs)
    times = {n: [] for n in names}
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for r in range(ROUNDS):
        for n in names[r % len(names):] + names[:r % len(names)]:
            st.record()
            graphs[n].replay()
            en.record()
            en.synchronize()
            times[n].append(st.elapsed_time(en) * 1000.0 / CALLS)
    med = {n: statistics.median(t) for n, t in times.items()}
    for n, us in med.items():
        ts = sorted(times[n])
        cfg_n = {"dflt": P.persist_config(P.default_config(192, 128), None, n_tok), "s22": s22_default(n_tok)}.get(
            n.removesuffix("_aa"), VARIANTS.get(n))
        row = dict(suite="mla_prefill_ab", case=dict(tokens=tokens, seqs=seqs), heads=HEADS, variant=n, config=cfg_n,
                   us=round(us, 2), tflops=round(flops / us / 1e6, 1), gbps=None, peer="torch_sdpa",
                   peer_us=round(med.get("sdpa", float("nan")), 2),
                   ratio_vs_peer=round(med.get("sdpa", float("nan")) / us, 3), p10_us=round(ts[len(ts) // 10], 2),
                   p90_us=round(ts[(9 * len(ts)) // 10], 2), rounds=ROUNDS, calls_per_graph=CALLS,
                   timing="gpu_clock_interleaved_graph", **env)
        rows_f.write(json.dumps(row) + "\n")
        rows_f.flush()
        results.append(row)
    log(f"{seqs}x{n_tok}: " + "  ".join(f"{n} {med[n]:.0f}us" for n in names))
    del graphs, fns, first_out, q, k, v
    torch.cuda.empty_cache()

print(f"\n# persistent MLA prefill PAIR_MID A/B (128 heads, d_qk 192, d_v 128; GPU clock, graph replays, median of "
      f"{ROUNDS} interleaved rounds; TFLOP/s [ratio to sdpa]; then time(each) / time({FIRST}): > 1 = {FIRST} faster; "
      f"commit {commit})")
names = [n for n in list(VARIANTS) + ["sdpa"] if any(r["variant"] == n for r in results)]
print(f"{'case':>9} " + " ".join(f"{n:>15}" for n in names))
for seqs, n_tok in CASES:
    rs = {r["variant"]: r for r in results if r["case"] == dict(tokens=seqs * n_tok, seqs=seqs)}
    if rs:
        cells = [f"{rs[n]['tflops']:>7.1f} [{rs[n]['ratio_vs_peer']:.3f}]" if n in rs else f"{'-':>15}" for n in names]
        rel = " ".join(f"{n} {rs[n]['us'] / rs[FIRST]['us']:.3f}" for n in names if n in rs and FIRST in rs
                       and n != FIRST)
        print(f"{seqs:>4}x{n_tok:<4} " + " ".join(cells) + "  " + rel)
print(f"failed/incorrect variants: {sorted(bad) or 'none'}")
