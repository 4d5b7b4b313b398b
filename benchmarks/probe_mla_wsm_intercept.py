"""Where the per-op intercept of the WSM MLA decode split kernel goes, and whether its KV tiles wait on HBM (issue 3,
compute-bound cases: h_q·s_q ≥ 128; 64 rows run the same kernel).

    PYTHONPATH=. python benchmarks/probe_mla_wsm_intercept.py [--out DIR] [--cases 128x2@4096 128x1@4096 ...]
        [--variants '{}' '{"table": "shared"}' '{"EPI_OVERLAP": true}' ...] [--reps 11] [--diag-reps 3]

Each case is bench_mla.py's b128 page-64 fixed-length input (same seed and lengths); a "v" after it (128x2@4096v)
takes bench_mla's varlen lengths instead (the shared table then covers the longest sequence's pages). A variant is a
JSON object of ``mla_decode`` config overrides plus one probe key, ``table``: "normal" (bench_mla's random block
table) or "shared" (every sequence reads sequence 0's pages: 64 pages = 4.7 MB at s_k 4096, L2-resident, while the
work, schedule and masking stay the same), to tell a per-tile cost of HBM latency from one of the matmuls. Per variant:
1. correctness: the whole op into a NaN-poisoned out, against the fp32 reference (bench_mla's 16 sequences) on that
   variant's own table; a variant that fails is reported and left out of the timing;
2. DIAG timeline (``launch_split_wsm(diag=...)``, warpgroup 0's %globaltimer stamps) of the split kernel: per program,
   start (kernel start → first query tile ready), streaming (query ready → last value matmul of the segment, per tile),
   epilogues (→ rows written), switches (rows written → next query ready), idle (→ the last program's end); first
   segments and later ones apart (the first tiles of the grid start together, from HBM);
3. timing on the GPU clock: a CUDA graph of 8 back-to-back calls of the op and one of 8 split launches alone, every
   replay behind a ~0.5 ms device sleep (host launch latency not in the events), all variants interleaved replay by
   replay, the first variant again last (A/A); µs per call (median), rows to DIR/intercept.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics as st
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_mla import BATCH, D_QK, D_V, check_decode, decode_lens, make_decode, ref_rows  # noqa: E402
from benchmarks.timing import _capture  # noqa: E402

from tritonseek.benchrun import git_commit, nonnegative_int, out_dir, positive_int, require_cuda  # noqa: E402
from tritonseek.kernels import mla_decode as D  # noqa: E402
from tritonseek.kernels import mla_decode_wsm as M  # noqa: E402

CALLS = 8  # op calls per graph (a decode step's layers run back to back)


def _case(text: str) -> tuple[int, int, int, bool]:
    """H_QxS_Q[@S_K][v] → (h_q, s_q, s_k, varlen): fixed lengths, or with v bench_mla's varlen lengths around s_k."""
    varlen = text.endswith("v")
    hs, _, sk = text.rstrip("v").partition("@")
    try:
        h, s_q = (int(x) for x in hs.split("x"))
        s_k = int(sk or 4096)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not H_QxS_Q[@S_K][v] (e.g. 128x2@4096, 128x2@8192v)") from None
    if min(h, s_q, s_k) <= 0 or h * s_q < 64:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive and h_q·s_q ≥ 64 (the WSM classes)")
    return h, s_q, s_k, varlen


def _variant(text: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--variants: {text!r} is not JSON ({e})") from None
    if not isinstance(v, dict) or v.get("table", "normal") not in ("normal", "shared"):
        raise argparse.ArgumentTypeError(f"--variants: {text!r} must be a JSON object; table 'normal' or 'shared'")
    return v


def budget(sched, lens, d) -> dict:
    """One rep's DIAG stamps d [programs, 128] → mean per program (µs) of start, streaming, epilogues, switches and
    idle (they sum to the kernel's span), tiles and segments per program, and per-tile time of first / later
    segments (median over programs)."""
    g = d[:, :64].double() / 1e3
    # intervals inside a program from its %clock64 stamps (cycle-exact; %globaltimer ticks in ~0.26 µs steps), in µs
    # at that program's own cycles per µs over its span; start and idle (across programs) from %globaltimer
    c = d[:, 64:].double()
    rate = (c[:, 1] - c[:, 0]) / (g[:, 1] - g[:, 0]).clamp(min=1e-3)
    act = g[:, 0] > 0
    t0, t_end = float(g[act, 0].min()), float(g[act, 1].max())
    n_tiles = [(x + 63) // 64 for x in lens]
    parts, tiles, nsegs, tile_first, tile_next, epis, sws, mhz, gaps, ends = [], [], [], [], [], [], [], [], [], []
    for p in range(d.shape[0]):
        b0, k0, b1, k1 = (int(x) for x in sched[p % sched.shape[0]])
        segs = [hi - lo for b in range(b0, min(b1, len(lens) - 1) + 1)
                for lo, hi in [(k0 if b == b0 else 0, min(k1 if b == b1 else n_tiles[b], n_tiles[b]))] if hi > lo]
        if not act[p] or not segs:
            continue
        n = min(len(segs), 8)  # the stamps hold 8 segments
        r = float(rate[p])
        # start, query ready, done, written (µs on the program's clock, from its first stamp)
        s = [[float(c[p, 2 + 5 * j + i] - c[p, 0]) / r + float(g[p, 0]) for i in range(4)] for j in range(n)]
        end = float(c[p, 1] - c[p, 0]) / r + float(g[p, 0])
        parts.append((s[0][1] - t0, sum(x[2] - x[1] for x in s), sum(x[3] - x[2] for x in s),
                      sum(s[j][1] - s[j - 1][3] for j in range(1, n)), t_end - float(g[p, 1]), end - s[n - 1][3]))
        mhz.append(r)
        tiles.append(sum(segs[:n]))
        nsegs.append(len(segs))
        tile_first.append((s[0][2] - s[0][1]) / segs[0])
        tile_next += [(s[j][2] - s[j][1]) / segs[j] for j in range(1, n) if segs[j] >= 8]
        epis += [x[3] - x[2] for x in s]
        sws += [s[j][1] - s[j - 1][3] for j in range(1, n)]
        gaps += [s[j][0] - s[j - 1][3] for j in range(1, n)]  # rows written -> the next segment's start stamp
        ends.append((p, float(g[p, 1]) - t0, len(segs), sum(segs), int(d[p, 63]), segs[0]))
    m = [sum(x) / len(parts) for x in zip(*parts)]
    return dict(start=m[0], streaming=m[1], epilogues=m[2], switches=m[3], idle=m[4], after_last=m[5],
                span=t_end - t0, tiles=sum(tiles) / len(tiles), segments=sum(nsegs) / len(nsegs),
                us_per_tile=m[1] * len(tiles) / sum(tiles), tile_first=st.median(tile_first),
                tile_next=st.median(tile_next) if tile_next else float("nan"), epi_median=st.median(epis),
                switch_median=st.median(sws) if sws else float("nan"), sm_mhz=st.median(mhz),
                gap_median=st.median(gaps) if gaps else float("nan"), **_tail(ends))


def _tail(ends) -> dict:
    """What the programs that end last have in common: (program row, end µs, segments, tiles, SM id, first segment
    tiles) → mean end by segment count and by head tile, and the 8 last programs."""
    by_seg, by_ht = {}, {}
    n_rows = len(ends)
    for p, e, ns, _, _, _ in ends:
        by_seg.setdefault(ns, []).append(e)
        by_ht.setdefault(p * 4 // max(1, n_rows), []).append(e)
    last = sorted(ends, key=lambda x: -x[1])[:8]
    return dict(end_by_segments={k: round(sum(v) / len(v), 1) for k, v in sorted(by_seg.items())},
                end_by_row_quarter={k: round(sum(v) / len(v), 1) for k, v in sorted(by_ht.items())},
                last_programs=[(p, round(e, 1), ns, nt, sm, f) for p, e, ns, nt, sm, f in last])


def _graph(fn):
    # one CUDA graph of CALLS calls of fn (benchmarks.timing._capture: warm-up on a side stream, capture, one replay)
    return _capture([fn] * CALLS)


def _diag_runs(name, label, idx, q, kv, bt, cs, md, cfg, lens, out, lse, o_ref, reps, out_dir) -> dict:
    """DIAG: reps stamped split runs (none for reps 0) → the median budget (printed), raw stamps saved. Their out must
    match the plain build's on the unsplit sequences, whose rows the split kernel writes itself."""
    if reps == 0:
        return {}
    scale = D_QK**-0.5
    rows = q.shape[1] * q.shape[2]
    opart = torch.empty(md.num_parts + BATCH, rows, D_V, dtype=q.dtype if cfg.get("PART16") else torch.float32,
                        device=q.device)
    lpart = torch.empty(md.num_parts + BATCH, rows, dtype=torch.float32, device=q.device)
    diag = torch.zeros(-(-rows // 64) * md.num_parts, 128, dtype=torch.int64, device=q.device)
    buds, stamps = [], []
    unsplit = (md.split[:, 1] == 1).nonzero().flatten()
    for _ in range(reps):
        diag.zero_()
        out.fill_(float("nan"))
        M.launch_split_wsm(q, kv, bt, cs, scale, True, md, out, lse, opart, lpart, diag=diag)
        torch.cuda.synchronize()
        stamps.append(diag.cpu().clone())
        buds.append(budget(md.sched.cpu(), lens, stamps[-1]))
    same = bool(torch.equal(out[unsplit], o_ref[unsplit]))
    b = {k: st.median(x[k] for x in buds) for k in buds[0] if isinstance(buds[0][k], float)}
    torch.save(dict(case=name, variant=label, lens=lens, sched=md.sched.cpu(), split=md.split.cpu(), stamps=stamps),
               os.path.join(out_dir, f"stamps_{name}_{idx}.pt"))
    print(f"    tail (last rep): by segments {buds[-1]['end_by_segments']}, by row quarter (head tile) "
          f"{buds[-1]['end_by_row_quarter']}; last (row, end, segs, tiles, SM, first seg tiles) "
          f"{buds[-1]['last_programs']}", flush=True)
    print(f"    DIAG ({reps} reps, median; stamped == plain on {unsplit.numel()} unsplit seqs: {same}): "
          f"start {b['start']:.1f} + streaming {b['streaming']:.1f} ({b['tiles']:.1f} tiles, "
          f"{b['us_per_tile']:.3f} us/tile; first segment {b['tile_first']:.3f}, later {b['tile_next']:.3f}) + "
          f"epilogues {b['epilogues']:.1f} (median {b['epi_median']:.2f}) + switches {b['switches']:.1f} "
          f"(median {b['switch_median']:.2f}, of it rows written -> next start {b['gap_median']:.2f}) + end "
          f"{b['after_last']:.2f} + idle {b['idle']:.1f} = span {b['span']:.1f} us; segments {b['segments']:.2f}; "
          f"SM clock {b['sm_mhz']:.0f} MHz", flush=True)
    return b


def run_case(name, variants, reps, diag_reps, out_dir, env) -> list[str]:
    h, s_q, s_k, varlen = _case(name)
    lens = decode_lens(s_k, s_q, varlen)
    q, kv, bt_norm, cs = make_decode(h, s_q, lens)
    tables = dict(normal=bt_norm, shared=bt_norm[:1].expand_as(bt_norm).contiguous())
    idx = ref_rows(cs)
    from tritonseek.kernels.reference.mla import mla_decode_ref

    refs = {}
    scale = D_QK**-0.5
    built, failed = [], []
    for v in variants:
        label = json.dumps(v, sort_keys=True)
        over = {k: x for k, x in v.items() if k != "table"}
        kind = v.get("table", "normal")
        bt = tables[kind]
        t_c = time.time()
        try:
            if kind not in refs:
                refs[kind] = mla_decode_ref(q[idx].float(), kv, bt[idx], cs[idx], causal=True, head_dim_v=D_V)
            cfg = dict(D.default_config(s_q, h, BATCH, hopper=True), **over)
            md = D.get_mla_metadata(cs, s_q, h, config=cfg)
            out = torch.full((BATCH, s_q, h, D_V), float("nan"), dtype=q.dtype, device=q.device)
            lse = torch.empty(BATCH, h, s_q, dtype=torch.float32, device=q.device)
            fn = lambda bt=bt, md=md, out=out: D.mla_decode(q, kv, bt, cs, scale, True, D_V, metadata=md,  # noqa: E731
                                                             out=out, check_ids=False)
            o, lse_o = fn()
            cd, dl, ok = check_decode(o, lse_o, refs[kind], idx)
            o_ref = o.clone()
            print(f"  {name} {label}: compile + check {time.time() - t_c:.1f} s, ok {ok} cos {cd:.1e} lse {dl:.1e}",
                  flush=True)
            if not ok:
                failed.append(label)
                continue
            sp, _ = D._launches(q, kv, bt, cs, scale, True, D_V, md, out, lse)
            b = _diag_runs(name, label, len(built), q, kv, bt, cs, md, cfg, lens, out, lse, o_ref, diag_reps, out_dir)
            fn()
            torch.cuda.synchronize()
            built.append(dict(label=label, graphs=[_graph(fn), _graph(sp)], keep=(md, out, lse),
                              ok=(ok, cd, dl), budget=b, split_seqs=int((md.split[:, 1] > 1).sum())))
        except Exception as e:  # noqa: BLE001
            print(f"  {name} {label}: failed {type(e).__name__}: {str(e)[:400]}", flush=True)
            failed.append(label)
    if not built:
        return failed
    built.append(dict(built[0], label=built[0]["label"] + " (A/A)"))
    ev = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(2)]
          for _ in built]
    times = [[[], []] for _ in built]
    for _ in range(reps):
        for i, v in enumerate(built):
            for j, g in enumerate(v["graphs"]):
                torch.cuda._sleep(1_000_000)
                ev[i][j][0].record()
                g.replay()
                ev[i][j][1].record()
        torch.cuda.synchronize()
        for i in range(len(built)):
            for j in range(2):
                times[i][j].append(ev[i][j][0].elapsed_time(ev[i][j][1]) * 1000.0 / CALLS)
    flops = 2 * s_q * sum(lens) * h * (D_QK + D_V)
    base = st.median(times[0][0])
    os.makedirs(out_dir, exist_ok=True)  # --out names a folder that may not exist yet
    with open(os.path.join(out_dir, "intercept.jsonl"), "a") as f:
        for v, (t_op, t_sp) in zip(built, times):
            us, sp_us = st.median(t_op), st.median(t_sp)
            ok, cd, dl = v["ok"]
            row = dict(suite="mla_decode_wsm_intercept", case=dict(batch=BATCH, s_k=s_k, h_q=h, s_q=s_q, page_size=64,
                                                                    varlen=varlen),
                       variant=v["label"], us_per_call=round(us, 2), us_min=round(min(t_op), 2),
                       us_max=round(max(t_op), 2), split_us=round(sp_us, 2), tflops=round(flops / us / 1e6, 1),
                       calls_per_graph=CALLS, reps=reps, correct=ok, cos_diff=cd, lse_maxdiff=dl,
                       split_seqs=v["split_seqs"], diag={k: round(x, 3) for k, x in v["budget"].items()}, **env)
            f.write(json.dumps(row) + "\n")
            print(f"ab {name:10s} {us:7.1f} us/call ({min(t_op):.1f}-{max(t_op):.1f}) {row['tflops']:6.1f} TFLOP/s "
                  f"{us - base:+6.1f}  split {sp_us:6.1f} (combine {us - sp_us:+5.1f})  {v['label']}", flush=True)
    return failed


def main() -> int:
    """Exit status 0 when every case and variant ran, 1 when any failed (the others still run), 2 for bad options or
    no GPU."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."), type=out_dir, help="output FOLDER (default $OUT or .)")
    ap.add_argument("--cases", nargs="+", type=str, default=["128x2@4096", "128x1@4096"])
    ap.add_argument("--variants", nargs="+", type=_variant, default=[{}, {"table": "shared"}])
    ap.add_argument("--reps", type=positive_int, default=11)
    ap.add_argument("--diag-reps", type=nonnegative_int, default=3, help="DIAG stamped runs per variant (0: none)")
    args = ap.parse_args()
    for c in args.cases:
        _case(c)
    require_cuda("probe_mla_wsm_intercept")
    import triton

    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    failed = []
    for name in args.cases:
        try:
            failed += [f"{name} {x}" for x in run_case(name, args.variants, args.reps, args.diag_reps, args.out, env)]
        except Exception as e:  # noqa: BLE001
            print(f"{name} failed: {type(e).__name__}: {str(e)[:400]}", flush=True)
            failed.append(name)
        torch.cuda.empty_cache()
    if failed:
        print("failed: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
