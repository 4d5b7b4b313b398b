"""Where the time of the Gluon MLA decode split kernel goes, per program (issue 3, s_k 4096 varlen at 32 rows).

    PYTHONPATH=. python benchmarks/probe_mla_ws_timeline.py [--out DIR] [--cases 32x1v 16x2v ...] [--reps 5]
    PYTHONPATH=. python benchmarks/probe_mla_ws_timeline.py --ab '{...}' '{...}' [--cases 32x1v 32x1@8192f ...]
    PYTHONPATH=. python benchmarks/probe_mla_ws_timeline.py --rev [--cases 16x2v 32x1v]  # lateness: work or SM?

Runs ``mla_decode_ws``'s split kernel (``mla_decode_wsm``'s for a WSM config, > 32 rows) with DIAG stamps (``launch_split_ws(diag=...)``: %globaltimer and %clock64
at the consumer's program start/end, every segment's start, first tile ready, last tile done and stores done, and
the producer's first TMA of each segment) on bench_mla.py's b128 page-64 inputs (same lengths and seed), checks
that the stamped build writes the same out as the plain one, and prints per case: program end spread (idle tail
of the grid), per-segment prologue / per-tile / epilogue costs by segment kind, and the split / combine graph
times of the plain build. Raw stamps go to DIR/timeline_<case>.pt.

--ab: the whole ``mla_decode`` (split + combine) of each config (JSON overrides of the default config; "{}" = the
default) on each case, checked against the fp32 reference (bench_mla's 16 sequences), then timed on the GPU's own
clock: a CUDA graph of 8 back-to-back calls (as the layers of a decode step run), each replay queued behind a
~0.5 ms device sleep so the host's launch latency is not inside the events (a busy host shares this GPU machine),
configs interleaved replay by replay; µs per call (median), rows to DIR/ab.jsonl. A config that fails to build or
to match the reference is reported and left out (the others still run). --split-alone: also a graph of 8 split-kernel
launches alone per config, timed in the same interleave (the row's split_us; the op minus it is the combine's share). --single: also a graph of ONE call per config (as bench_mla times it: the
launch of a lone graph included), row field single_us; --graph-calls N ...: graphs of N calls (graphN_us); --eager: 8
calls launched from Python (eager_us). Probe key HOLD (not an mla_decode config key): COMBINE_SPIN with every combine
program waiting for the split grid at its end (mla_decode_tiles._mla_combine_kernel SPIN_EARLY_EXIT False).
--rev (timeline mode): each case also with program p running span num_parts − 1 − p (launch_split_ws rev_pids):
programs land on SMs in launch order, so the work moves to other SMs; prints whether the per-span end times of the
two runs agree (lateness follows the work) or the per-SM ones do (it follows the SM).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_mla import BATCH, D_QK, D_V, decode_lens, graph_time_us, make_decode  # noqa: E402
from benchmarks.timing import _capture  # noqa: E402

from tritonseek.benchrun import git_commit, json_object, out_dir, positive_int, require_cuda  # noqa: E402
from tritonseek.kernels import mla_decode as D  # noqa: E402
from tritonseek.kernels import mla_decode_ws as W  # noqa: E402
from tritonseek.kernels import mla_decode_wsm as M  # noqa: E402
from tritonseek.kernels.mla_decode_small import MLA_CONFIG_SPEC  # noqa: E402


def _case(name: str) -> tuple[int, int, int, bool]:
    hs, v = name.rstrip("vf"), name.endswith("v")
    sk = 4096
    if "@" in hs:
        hs, sk = hs.split("@")[0], int(hs.split("@")[1])
    h, s_q = (int(x) for x in hs.split("x"))
    return h, s_q, int(sk), v


def _case_arg(text: str) -> str:
    """argparse type of --cases: H_QxS_Q[@S_K][v|f] (v: varlen lengths, f or nothing: fixed), positive ints."""
    try:
        h, s_q, s_k, _ = _case(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not H_QxS_Q[@S_K][v|f] (e.g. 32x1v, 32x1@8192f)") from None
    if min(h, s_q, s_k) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return text


# --cfg / --ab: JSON overrides of mla_decode's config, checked against its spec before any GPU work (s19: {"OVEC": 3}
# ended in a traceback, a --cfg that was not JSON in a failed case per case and exit 0)
# HOLD: this probe's own key (_Hold: every COMBINE_SPIN combine program waits for the split grid), not a config key
_config_arg = json_object(dict(MLA_CONFIG_SPEC, HOLD=bool), "mla_decode config overrides (+ HOLD)")


def _metadata(cs, s_q, h, over: dict, **extra):
    """(metadata, config) for the default config + extra + over."""
    cfg = dict(D.default_config(s_q, h, BATCH, hopper=True), **extra)
    cfg.update(over)
    return D.get_mla_metadata(cs, s_q, h, config=cfg), cfg


def run_case(name: str, reps: int, out_dir: str, overrides: dict, rev: bool = False, lite: bool = False) -> str:
    """Timeline of one case (rev: programs walk the spans in reverse, stamp rows put back in span order; lite: only
    program start / end stamps, launch_split_ws(diag_lite=True)); returns the path of the saved stamps."""
    h, s_q, s_k, varlen = _case(name)
    lens = decode_lens(s_k, s_q, varlen)
    q, kv, bt, cs = make_decode(h, s_q, lens)
    # COMBINE_SPIN off: the stamped split runs below are not followed by their spinning combine
    md, cfg = _metadata(cs, s_q, h, overrides, COMBINE_SPIN=False)
    scale = D_QK**-0.5
    rows = s_q * h
    out = torch.full((BATCH, s_q, h, D_V), float("nan"), dtype=q.dtype, device=q.device)
    lse = torch.empty(BATCH, h, s_q, dtype=torch.float32, device=q.device)
    opart = torch.empty(md.num_parts + BATCH, rows, D_V, dtype=q.dtype if cfg.get("PART16") else torch.float32,
                        device=q.device)
    lpart = torch.empty(md.num_parts + BATCH, rows, dtype=torch.float32, device=q.device)
    sp, cb = D._launches(q, kv, bt, cs, scale, True, D_V, md, out, lse)
    sp()
    cb()
    ref_out = out.clone()
    # WSM (> 32 rows, mla_decode_wsm): one stamp row per (head tile, part), warpgroup 0's stamps
    wsm = bool(cfg.get("WSM"))
    head_tiles = -(-rows // 64) if wsm else 1
    diag = torch.zeros(head_tiles * md.num_parts, 128, dtype=torch.int64, device=q.device)
    stamps = []
    for _ in range(reps):
        diag.zero_()
        out.fill_(float("nan"))
        if wsm:
            M.launch_split_wsm(q, kv, bt, cs, scale, True, md, out, lse, opart, lpart, diag=diag)
        else:
            W.launch_split_ws(q, kv, bt, cs, scale, True, md, out, lse, opart, lpart, diag=diag, rev_pids=rev,
                              diag_lite=lite)
        torch.cuda.synchronize()
        # rev: row p holds the stamps of span num_parts − 1 − p; flipped, row = span as without rev
        stamps.append(diag.cpu().flip(0).clone() if rev and not wsm else diag.cpu().clone())
    # the stamped build's result, through the same combine, must equal the plain build's (FUSE: the split kernel
    # merged; there is no combine launch to time)
    fused = not wsm and W.fuse_combine(md, q, out, opart)
    if not fused:
        _combine(md, out, lse, opart, lpart)
    torch.cuda.synchronize()
    same = bool(torch.equal(out, ref_out))
    split_us = graph_time_us(sp, 10.0)
    comb_us = 0.0 if fused else graph_time_us(cb, 5.0)
    both_us = split_us if fused else graph_time_us(lambda: (sp(), cb()), 10.0)
    tag = name + ("_" + "_".join(f"{k}{v}" for k, v in sorted(overrides.items())) if overrides else "") + \
        ("_rev" if rev else "") + ("_lite" if lite else "")
    path = os.path.join(out_dir, f"timeline_{tag}.pt")
    torch.save(dict(name=name, lens=lens, sched=md.sched.cpu(), split=md.split.cpu(), stamps=stamps, cfg=cfg,
                    split_us=split_us, comb_us=comb_us, both_us=both_us, rev=rev), path)
    if lite and not wsm:
        lite_summary(tag, lens, md.sched.cpu(), stamps, split_us, comb_us, both_us, same)
        return path
    # a stamp row per (head tile, part): row r follows schedule row r % num_parts
    summarize(tag, lens, md.sched.cpu().repeat(head_tiles, 1), md.split.cpu(), stamps, split_us, comb_us, both_us, same,
              steal=md.num_programs is not None and not cfg.get("STEAL_WAVE"))
    if fused:
        fuse_breakdown(tag, stamps)
    return path


def _segment_kinds(lens, sched) -> list[str]:
    """Per schedule row, its segments as letters: W whole sequence, S a sequence's first piece, E its last, M a middle
    piece (e.g. "EWS": the end of one sequence, a whole one, the start of the next)."""
    n_tiles = [(x + 63) // 64 for x in lens]
    out = []
    for b0, k0, b1, k1 in sched.tolist():
        kinds = ""
        for b in range(b0, min(b1, len(lens) - 1) + 1):
            lo, hi = (k0 if b == b0 else 0), min(k1 if b == b1 else n_tiles[b], n_tiles[b])
            if hi > lo:
                kinds += "W" if hi - lo == n_tiles[b] else "S" if lo == 0 else "E" if hi == n_tiles[b] else "M"
        out.append(kinds)
    return out


def lite_summary(name, lens, sched, stamps, split_us, comb_us, both_us, same):
    """Program start / end stamps only (diag_lite): per rep the kernel span, the end spread (max end − mean end of
    the programs with work) and the latest programs; the mean end per segment pattern (_segment_kinds); the
    correlation of the programs' ends between reps (1: the same programs are late every time)."""
    import statistics as st

    kinds = _segment_kinds(lens, sched)
    print(f"== {name} (start/end stamps only): graph split {split_us:.1f} us, combine {comb_us:.1f}, both {both_us:.1f};"
          f" stamped out == plain: {same}")
    ends = []
    for r, d in enumerate(stamps[1:] or stamps):
        g = d[:, :2].double()
        act = (g[:, 0] > 0) & torch.tensor([bool(k) for k in kinds])
        t0 = g[act, 0].min()
        e = torch.where(act, (g[:, 1] - t0) / 1e3, torch.nan)
        ends.append(e)
        w = e[act]
        print(f"  rep {r}: span {float(w.max()):.1f} us, end min/median/max {float(w.min()):.1f} / {float(w.median()):.1f}"
              f" / {float(w.max()):.1f}, max - mean {float(w.max() - w.mean()):.1f} us; latest programs "
              f"{[int(i) for i in torch.argsort(e.nan_to_num(0))[-5:]]}")
    mean_end = torch.stack(ends).nanmean(0)
    by = {}
    for k, t in zip(kinds, mean_end.tolist()):
        if k and t == t:
            by.setdefault(k, []).append(t)
    print("  mean end by segment pattern: " + ", ".join(f"{k} {st.mean(v):.1f} (n {len(v)}, max {max(v):.1f})"
                                                       for k, v in sorted(by.items(), key=lambda x: -len(x[1]))))
    if len(ends) > 1:
        a, b = ends[0], ends[1]
        ok = ~(a.isnan() | b.isnan())
        print(f"  ends correlate between reps {float(torch.corrcoef(torch.stack([a[ok], b[ok]]))[0, 1]):.2f}")


def work_or_sm(path_a: str, path_b: str) -> None:
    """Two timelines of the same case and schedule whose programs ran on different SMs (plain / --rev): per-span
    program ends (µs from the kernel start, mean over the reps after the first) correlated by span (the same work)
    and by SM id (the same SM, different work); and the spread of the per-SM residual (end minus the span's mean)."""
    import statistics as st

    ends, sms = [], []
    for path in (path_a, path_b):
        d = torch.load(path, weights_only=False)
        e, sm = [], None
        for x in d["stamps"][1:] or d["stamps"]:
            g = x[:, :64].double()
            act = g[:, 0] > 0
            t0 = g[act, 0].min()
            e.append(torch.where(act, (g[:, 1] - t0) / 1e3, torch.nan))
            sm = x[:, 63]
        ends.append(torch.stack(e).mean(0))
        sms.append(sm)
    ok = ~(ends[0].isnan() | ends[1].isnan()) & (ends[0] > 0.5 * ends[0].nanmean())  # spans with work
    a, b = ends[0][ok], ends[1][ok]
    by_span = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    # by SM: the end of whatever span ran on SM s in run A vs in run B
    ea = {int(s): float(t) for s, t, k in zip(sms[0], ends[0], ok) if k}
    eb = {int(s): float(t) for s, t, k in zip(sms[1], ends[1], ok) if k}
    common = sorted(set(ea) & set(eb))
    by_sm = float(torch.corrcoef(torch.tensor([[ea[s] for s in common], [eb[s] for s in common]]))[0, 1])
    res = [ea[s] - float((a.mean())) for s in common]
    print(f"  work or SM ({os.path.basename(path_a)} vs {os.path.basename(path_b)}): program ends correlate by span "
          f"{by_span:.2f}, by SM {by_sm:.2f} over {len(common)} SMs; end spread (std) {st.pstdev(res):.2f} us; "
          f"latest 5 spans A {[int(i) for i in torch.argsort(ends[0].nan_to_num(0))[-5:]]} B "
          f"{[int(i) for i in torch.argsort(ends[1].nan_to_num(0))[-5:]]}")


def fuse_breakdown(name, stamps):
    """FUSE (DIAG stamps of _part_release / the consumer, the program's last split piece): tiles done -> partial stored
    (56) -> count re-read (57) -> merged (58), split by whether that piece merged (slot 59; segment index at 60)."""
    import statistics as st

    for r, d in enumerate(stamps[-2:]):
        g = d[:, :64].double()
        t0 = g[:, 0][g[:, 0] > 0].min()
        ends = (g[:, 1] - t0) / 1e3
        for merged in (1, 0):
            rows = [p for p in range(d.shape[0]) if g[p, 58] > 0 and int(d[p, 59]) == merged]
            if not rows:
                continue
            done = [float(g[p, 2 + 5 * int(d[p, 60]) + 2]) for p in rows]
            store = [(float(g[p, 56]) - t) / 1e3 for p, t in zip(rows, done)]
            arrive = [float(g[p, 57] - g[p, 56]) / 1e3 for p in rows]
            merge = [float(g[p, 58] - g[p, 57]) / 1e3 for p in rows]
            after = [float(g[p, 1] - g[p, 58]) / 1e3 for p in rows]
            at = [float((g[p, 58] - t0) / 1e3) for p in rows]
            print(f"  FUSE rep {r} {name} last split piece {'merged' if merged else 'not merged'} n {len(rows)}: tiles done"
                  f" -> stored {st.median(store):.2f} (max {max(store):.2f}) us, -> count re-read {st.median(arrive):.2f}"
                  f" (max {max(arrive):.2f}), -> merged {st.median(merge):.2f} (max {max(merge):.2f}), -> program end "
                  f"{st.median(after):.2f}; at {st.median(at):.1f} us (program end median {float(ends[ends > 0].median()):.1f})")


def _combine(md, out, lse, opart, lpart):
    batch, s_q, h, dv = out.shape
    grid = (batch, -(-(s_q * h) // 4))
    D._mla_combine_kernel[grid](md.split, out, lse, opart, lpart, out.stride(0), out.stride(1), out.stride(2),
                                lse.stride(0), lse.stride(1), h, s_q, dv, BLOCK_ROWS=4, BLOCK_DVP=dv, NUM_STAGES=3,
                                PDL=False, num_warps=4)


def summarize(name, lens, sched, split, stamps, split_us, comb_us, both_us, same, steal=False):
    """steal (tail spans claimed in the kernel): a program's stamps cover its own span and the tail spans it took
    (ids at [56..62]): only the end spread and the spans taken per program are printed."""
    import statistics as st

    if steal:
        for r, d in enumerate(stamps[-2:]):
            g = d[:, :64].double()
            act = g[:, 0] > 0
            t0 = g[act, 0].min()
            e = (g[act, 1] - t0) / 1e3
            taken = (d[act, 56:63] > 0).sum(1)
            print(f"== {name} (STEAL): graph split {split_us:.1f} us, combine {comb_us:.1f}, both {both_us:.1f}; stamped "
                  f"out == plain: {same}; rep {r}: end min/med/max {e.min():.1f} / {e.median():.1f} / {e.max():.1f} us, "
                  f"idle tail {e.max() - e.mean():.1f} us; tail spans taken per program (incl. the sentinel): "
                  f"{sorted(taken.tolist())[::16]}")
        return

    n_tiles = [(x + 63) // 64 for x in lens]
    print(f"== {name}: graph split {split_us:.1f} us, combine {comb_us:.1f}, both {both_us:.1f}; stamped out == plain: "
          f"{same}; programs {sched.shape[0]}, split sequences {int((split[:, 1] > 1).sum())}")
    for r, d in enumerate(stamps[-2:]):
        g = d[:, :64].double()
        t0 = g[:, 0][g[:, 0] > 0].min()
        starts = (g[:, 0] - t0) / 1e3
        ends = (g[:, 1] - t0) / 1e3
        act = g[:, 0] > 0
        e = ends[act]
        print(f"  rep {r}: program start max {starts[act].max():.2f} us; end min/med/max {e.min():.1f} / {e.median():.1f}"
              f" / {e.max():.1f} us; idle tail (max end - mean end) {e.max() - e.mean():.1f} us; "
              f"SM ids distinct {len(set(d[act, 63].tolist()))}")
        segs = {"pro": [], "tile": [], "epi": [], "gap": [], "wait1": [], "pfirst": []}
        by_kind = {}
        for p in range(d.shape[0]):
            if not act[p]:
                continue
            b0, k0, b1, k1 = (int(x) for x in sched[p])
            j, prev_end = 0, g[p, 0]
            for b in range(b0, b1 + 1):
                if b >= len(lens):
                    break
                lo = k0 if b == b0 else 0
                hi = min(k1 if b == b1 else n_tiles[b], n_tiles[b])
                if lo >= hi or j >= 8:
                    continue
                s0, f, le, sd = (g[p, 2 + 5 * j + i] for i in range(4))
                nt = hi - lo
                kind = ("whole" if nt == n_tiles[b] else "piece") + ("/first" if j == 0 else "/next")
                pro = (f - s0) / 1e3
                tile = (le - f) / 1e3 / nt
                epi = (sd - le) / 1e3
                gap = (s0 - prev_end) / 1e3
                by_kind.setdefault(kind, []).append((pro, tile, epi, gap, nt))
                pf = g[p, 48 + j]
                segs["pfirst"].append(float((f - pf) / 1e3) if pf > 0 else float("nan"))
                prev_end = sd
                j += 1
        for kind, v in sorted(by_kind.items()):
            pro, tile, epi, gap, nt = zip(*v)
            print(f"    {kind:12s} n {len(v):3d}: first-tile wait {st.median(pro):.2f} (max {max(pro):.2f}) us, "
                  f"per tile {st.median(tile):.3f} us, epilogue {st.median(epi):.2f} (max {max(epi):.2f}), "
                  f"gap before {st.median(gap):.2f} us, tiles median {st.median(nt)}")
        pf = [x for x in segs["pfirst"] if x == x]
        if pf:
            print(f"    first tile ready - producer's first TMA of the segment: median {st.median(pf):.2f} us")
    for r, d in enumerate(stamps[-2:]):
        print(f"    rep {r} " + budget_line(lens, sched, d))
    # spread of program time against its assigned tiles and segments (last rep)
    d = stamps[-1]
    g = d[:, :64].double()
    rowsum = []
    for p in range(d.shape[0]):
        if g[p, 0] <= 0:
            continue
        b0, k0, b1, k1 = (int(x) for x in sched[p])
        tiles, nseg = 0, 0
        for b in range(b0, min(b1, len(lens) - 1) + 1):
            lo = k0 if b == b0 else 0
            hi = min(k1 if b == b1 else n_tiles[b], n_tiles[b])
            if hi > lo:
                tiles += hi - lo
                nseg += 1
        rowsum.append((float(g[p, 1] - g[p, 0]) / 1e3, tiles, nseg))
    pw = [float(d[p, 45]) / max(1, t) for p, (_, t, _) in zip(range(d.shape[0]), rowsum)]
    pi = [float(d[p, 46]) / max(1, t) for p, (_, t, _) in zip(range(d.shape[0]), rowsum)]
    if pw:
        import statistics as st

        print(f"    producer per tile: waiting for a free stage median {st.median(pw):.0f} cycles, free stage -> TMA "
              f"issued median {st.median(pi):.0f} cycles (max {max(pi):.0f})")
    rowsum.sort()
    print("    slowest programs (us, tiles, segments):", [(round(a, 1), b, c) for a, b, c in rowsum[-5:]])
    print("    fastest programs (us, tiles, segments):", [(round(a, 1), b, c) for a, b, c in rowsum[:3]])
    # least squares: time = a·tiles + c·segments + e
    A = torch.tensor([[t, s, 1.0] for _, t, s in rowsum], dtype=torch.float64)
    y = torch.tensor([a for a, _, _ in rowsum], dtype=torch.float64)
    sol = torch.linalg.lstsq(A, y[:, None]).solution.flatten().tolist()
    print(f"    fit: program us = {sol[0]:.3f}·tiles + {sol[1]:.2f}·segments + {sol[2]:.2f}")


def budget_line(lens, sched, d) -> str:
    """Where a program's time goes, averaged over the programs with work (one rep's DIAG stamps d, schedule sched):
    start (kernel start -> its first tile ready: launch skew, prologue, first TMA latency), streaming (first tile
    ready -> last tile done, per segment), epilogues (last tile done -> stored), switches (stored -> the next
    segment's first tile ready) and idle (program end -> the last program's end); they sum to the kernel's span."""
    g = d[:, :64].double() / 1e3
    act = g[:, 0] > 0
    t0, t_end = float(g[act, 0].min()), float(g[act, 1].max())
    n_tiles = [(x + 63) // 64 for x in lens]
    parts, tiles, nsegs = [], [], []
    for p in range(d.shape[0]):
        b0, k0, b1, k1 = (int(x) for x in sched[p])
        segs = [hi - lo for b in range(b0, min(b1, len(lens) - 1) + 1)
                for lo, hi in [(k0 if b == b0 else 0, min(k1 if b == b1 else n_tiles[b], n_tiles[b]))] if hi > lo]
        if not act[p] or not segs:
            continue
        n = min(len(segs), 8)  # stamps hold 8 segments
        s = [[float(g[p, 2 + 5 * j + i]) for i in range(4)] for j in range(n)]  # start, first ready, done, stored
        parts.append((s[0][1] - t0, sum(x[2] - x[1] for x in s), sum(x[3] - x[2] for x in s),
                      sum(s[j][1] - s[j - 1][3] for j in range(1, n)), t_end - s[n - 1][3]))
        tiles.append(sum(segs))
        nsegs.append(len(segs))
    m = [sum(x) / len(parts) for x in zip(*parts)]
    return (f"budget per program (mean of {len(parts)}): start {m[0]:.1f} + streaming {m[1]:.1f} ({sum(tiles) / len(tiles):.1f}"
            f" tiles, {m[1] * len(tiles) / sum(tiles):.3f} us/tile) + epilogues {m[2]:.1f} + switches {m[3]:.1f} + idle "
            f"{m[4]:.1f} = kernel span {t_end - t0:.1f} us; segments {sum(nsegs) / len(nsegs):.2f}")


def _graph_of(calls: int, fn):
    # one CUDA graph of `calls` calls of fn (benchmarks.timing._capture: warm-up on a side stream, capture, one replay)
    return _capture([fn] * calls)


class _Hold:
    """mla_decode's combine kernel with SPIN_EARLY_EXIT=False (with COMBINE_SPIN every program waits for the split grid
    at its end, as session 16 had it; mla_decode_tiles._mla_combine_kernel): the probe's HOLD key swaps it in around
    that config's launches."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        launch = self.kernel[grid]
        return lambda *a, **kw: launch(*a, **dict(kw, SPIN_EARLY_EXIT=False))


def _held(fn, hold: bool):
    """fn with mla_decode's combine kernel swapped for _Hold while it runs (hold: the HOLD key), else fn."""
    if not hold:
        return fn

    def run():
        orig = D._mla_combine_kernel
        D._mla_combine_kernel = _Hold(orig)
        try:
            return fn()
        finally:
            D._mla_combine_kernel = orig
    return run


def _ab_case(name: str, cfgs: list[dict], reps: int, out_dir: str, env: dict, split_alone: bool = False,
             single: bool = False, graph_calls: tuple = (), eager: bool = False) -> None:
    import json
    import statistics as st

    from benchmarks.bench_mla import check_decode, ref_rows
    from tritonseek.kernels.reference.mla import mla_decode_ref

    h, s_q, s_k, varlen = _case(name)
    lens = decode_lens(s_k, s_q, varlen)
    q, kv, bt, cs = make_decode(h, s_q, lens)
    idx = ref_rows(cs)
    ref = mla_decode_ref(q[idx].float(), kv, bt[idx], cs[idx], causal=True, head_dim_v=D_V)
    calls = 8
    # per config: [(label, calls, replay)]: "g8" (8 calls per graph), "split" (8 split launches), "g1" (one call),
    # "g<n>" (graph_calls), "eager" (8 calls launched from Python); each timed on the GPU clock, µs per call
    timed, oks, keep, used = [], [], [], []  # keep: each graph's metadata and out (the graph does not own them)
    for over in cfgs:
        t_cfg = time.time()
        hold = bool(over.get("HOLD"))
        try:
            md, cfg = _metadata(cs, s_q, h, {k: v for k, v in over.items() if k != "HOLD"})
            out = torch.full((BATCH, s_q, h, D_V), float("nan"), dtype=q.dtype, device=q.device)
            fn = _held(lambda md=md, out=out: D.mla_decode(q, kv, bt, cs, D_QK**-0.5, True, D_V, metadata=md,
                                                            out=out, check_ids=False), hold)
            o, lse = fn()
            cd, dl, ok = check_decode(o, lse, ref, idx)
            print(f"  {name} {json.dumps(over, sort_keys=True)}: first call (compile) + check {time.time() - t_cfg:.1f} "
                  f"s, ok {ok}", flush=True)
            if not ok:
                continue
            fn()
            torch.cuda.synchronize()
            items = [("g8", calls, _graph_of(calls, fn).replay)]
            if split_alone:
                lse2 = torch.empty(BATCH, h, s_q, dtype=torch.float32, device=q.device)
                sp, _ = D._launches(q, kv, bt, cs, D_QK**-0.5, True, D_V, md, out, lse2)
                items.append(("split", calls, _graph_of(calls, sp).replay))
                keep.append((sp, lse2))
            if single:
                items.append(("g1", 1, _graph_of(1, fn).replay))
            for n in graph_calls:
                items.append((f"g{n}", n, _graph_of(n, fn).replay))
            if eager:
                items.append(("eager", calls, lambda fn=fn: [fn() for _ in range(calls)]))
        except Exception as e:  # noqa: BLE001
            print(f"  {name} {json.dumps(over, sort_keys=True)}: failed {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        oks.append((ok, cd, dl))
        timed.append(items)
        keep.append((md, out))
        used.append(over)
    cfgs = used
    if not cfgs:
        raise RuntimeError("no config built and matched the reference")
    times = [[[] for _ in items] for items in timed]
    ev = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in items]
          for items in timed]
    for _ in range(reps):
        for i, items in enumerate(timed):
            for j, (_, _, replay) in enumerate(items):
                torch.cuda._sleep(1_000_000)
                ev[i][j][0].record()
                replay()
                ev[i][j][1].record()
        torch.cuda.synchronize()
        for i, items in enumerate(timed):
            for j, (_, n, _) in enumerate(items):
                times[i][j].append(ev[i][j][0].elapsed_time(ev[i][j][1]) * 1000.0 / n)
    nbytes = (sum(lens) * D_QK + BATCH * s_q * h * D_QK + BATCH * s_q * h * D_V) * 2
    flops = 2 * s_q * sum(lens) * h * (D_QK + D_V)  # FlashMLA's count (issue 3)
    base = st.median(times[0][0])
    with open(os.path.join(out_dir, "ab.jsonl"), "a") as f:
        for over, items, tt, (ok, cd, dl) in zip(cfgs, timed, times, oks):
            med = {label: st.median(t) for (label, _, _), t in zip(items, tt)}
            t = tt[0]
            us = med["g8"]
            row = dict(suite="mla_decode_ab", case=dict(batch=BATCH, s_k=s_k, h_q=h, s_q=s_q, page_size=64,
                                                          varlen=varlen),
                       variant=json.dumps(over, sort_keys=True), us_per_call=round(us, 2),
                       us_min=round(min(t), 2), us_max=round(max(t), 2), gbps=round(nbytes / us / 1e3, 1),
                       tflops=round(flops / us / 1e6, 1),
                       calls_per_graph=calls, reps=reps, correct=ok, cos_diff=cd, lse_maxdiff=dl, **env)
            txt = ""
            if "split" in med:
                row["split_us"] = round(med["split"], 2)
                txt += f" split {med['split']:6.1f} (combine {us - med['split']:+5.1f})"
            if "g1" in med:
                row["single_us"] = round(med["g1"], 2)
                row["single_gbps"] = round(nbytes / med["g1"] / 1e3, 1)
                txt += f" single {med['g1']:6.1f} ({row['single_gbps']:.0f} GB/s)"
            for n in graph_calls:
                row[f"graph{n}_us"] = round(med[f"g{n}"], 2)
                txt += f" g{n} {med[f'g{n}']:6.1f}"
            if "eager" in med:
                row["eager_us"] = round(med["eager"], 2)
                txt += f" eager {med['eager']:6.1f}"
            f.write(json.dumps(row) + "\n")
            print(f"ab {name:10s} {us:7.1f} us/call ({min(t):.1f}-{max(t):.1f}) {row['tflops']:6.1f} TFLOP/s "
                  f"{us - base:+6.1f}{txt} ok {ok} cos {cd:.1e}  {row['variant']}", flush=True)
    del timed, keep


def main() -> int:
    """Exit status: 0 when every case ran, 1 when any failed (each failure is printed and the others still run), 2 for
    a bad option or no GPU."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."), type=out_dir,
                    help="output FOLDER (a file in the bench_*.py scripts), default $OUT or .; created if only its "
                         "last part is missing")
    ap.add_argument("--cases", nargs="+", type=_case_arg, default=["32x1v", "16x2v", "16x1v", "32x1f"])
    ap.add_argument("--reps", type=positive_int, default=5)
    ap.add_argument("--split-alone", action="store_true",
                    help="A/B mode: also time each config's split kernel alone (8 launches per graph)")
    ap.add_argument("--single", action="store_true",
                    help="A/B mode: also time a graph of one call per config (bench_mla's figure, launch included)")
    ap.add_argument("--graph-calls", nargs="*", type=positive_int, default=(),
                    help="A/B mode: also graphs of these numbers of calls (µs per call; a per-graph cost shows as "
                         "a 1/n term)")
    ap.add_argument("--eager", action="store_true", help="A/B mode: also 8 calls launched from Python (GPU clock)")
    ap.add_argument("--rev", action="store_true",
                    help="timeline mode: each case also with the spans walked by the programs in reverse (work vs SM)")
    ap.add_argument("--lite", action="store_true",
                    help="timeline mode: program start/end stamps only (the full DIAG build runs ~8 us longer)")
    ap.add_argument("--cfg", default={}, type=_config_arg, help="JSON config overrides (mla_decode config keys)")
    # nargs="+": a bare --ab (no config) silently ran timeline mode (tester 2, s19)
    ap.add_argument("--ab", nargs="+", type=_config_arg,
                    help="A/B mode: JSON config overrides, one or more, one per config ('{}' = default)")
    args = ap.parse_args()
    require_cuda("probe_mla_ws_timeline")
    os.makedirs(args.out, exist_ok=True)
    import datetime

    failed = []
    if args.ab:
        import triton

        env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                   commit=git_commit(),
                   date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        for name in args.cases:
            try:
                _ab_case(name, list(args.ab), args.reps, args.out, env, args.split_alone, args.single,
                         tuple(args.graph_calls), args.eager)
            except Exception as e:  # noqa: BLE001
                print(f"ab {name} failed: {type(e).__name__}: {str(e)[:400]}", flush=True)
                failed.append(name)
            torch.cuda.empty_cache()
    else:
        for name in args.cases:
            try:
                lite = {"lite": True} if args.lite else {}  # (tests stub run_case with the four arguments)
                path = run_case(name, args.reps, args.out, args.cfg, **lite)
                if args.rev:
                    work_or_sm(path, run_case(name, args.reps, args.out, args.cfg, rev=True, **lite))
            except Exception as e:  # noqa: BLE001
                print(f"{name} failed: {type(e).__name__}: {str(e)[:400]}", flush=True)
                failed.append(name)
            torch.cuda.empty_cache()
    if failed:
        print(f"failed cases: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
