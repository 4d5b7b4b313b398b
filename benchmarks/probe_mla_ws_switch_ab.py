"""A/B of mla_decode_ws's module switches and config overrides on the H200 (issue 3: b128 page 64, s_k 4096 / 8192).

    PYTHONPATH=. python benchmarks/probe_mla_ws_switch_ab.py [--out DIR] [--cases 32x1v 16x2v 16x1v 32x1@8192v]
        [--variants default sw:QUERY_EARLY default] [--reps 21] [--timeline 32x1v] [--timeline-variants default ...]

Whole ``mla_decode`` calls (split + combine; FUSE: the split alone), as probe_mla_ws_timeline.py --ab: every variant
checked against the fp32 reference first (bench_mla's 16 sequences, out NaN-poisoned, twice on the same metadata) and
again after the timed replays (counters re-armed), then a CUDA graph of 8 back-to-back calls per variant, replays
interleaved variant by variant, each behind a ~1 ms device sleep, timed by CUDA events (the GPU's clock); µs per call
(median). A variant is ``default`` (mla_decode's batch-128 default) or ``fuse`` (FUSE on), then ``+KEY=VALUE`` config
overrides (VALUE JSON) and ``+sw:NAME`` module switches of mla_decode_ws set True for that variant (QUERY_EARLY,
BT_FIRST; read when a call is launched and captured); list ``default`` first and last for an A/A control.
--timeline: DIAG globaltimer stamps (probe_mla_ws_timeline.run_case) of each --timeline-variants variant.
Rows (suite mla_decode_ab) go to DIR/ab.jsonl. (Session 20 W1 ran this file as probe_mla_fuse_ab.py at 1230905.)
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
from benchmarks.probe_mla_ws_timeline import _case, _case_arg, run_case  # noqa: E402

from tritonseek.benchrun import git_commit, out_dir, positive_int, require_cuda  # noqa: E402
from tritonseek.kernels import mla_decode as D  # noqa: E402
from tritonseek.kernels import mla_decode_ws as W  # noqa: E402
from tritonseek.kernels.mla_decode_small import check_mla_config  # noqa: E402
from tritonseek.kernels.reference.mla import mla_decode_ref  # noqa: E402

_BASE = {"default": {}, "fuse": {"FUSE": True}}
_SWITCHES = ("QUERY_EARLY", "BT_FIRST")  # mla_decode_ws module switches a variant may turn on


def _variant(text: str) -> tuple[str, dict, tuple]:
    """argparse type of --variants: NAME[+KEY=VALUE|+sw:SWITCH ...], NAME one of _BASE, VALUE a JSON value."""
    name, *over = text.split("+")
    if name not in _BASE:
        raise argparse.ArgumentTypeError(f"{text!r}: variant name must be one of {', '.join(_BASE)}")
    cfg, sws = dict(_BASE[name]), []
    for kv in over:
        if kv.startswith("sw:"):
            if kv[3:] not in _SWITCHES:
                raise argparse.ArgumentTypeError(f"{text!r}: switch must be one of {', '.join(_SWITCHES)}")
            sws.append(kv[3:])
            continue
        k, sep, v = kv.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{text!r}: {kv!r} is not KEY=VALUE or sw:SWITCH")
        try:
            cfg[k] = json.loads(v)
        except json.JSONDecodeError:
            raise argparse.ArgumentTypeError(f"{text!r}: {v!r} is not a JSON value") from None
    try:
        check_mla_config(dict(BLOCK_H=32, BLOCK_N=64, num_warps=8, num_stages=5, **cfg))
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    return text, cfg, tuple(sws)


def _set_switches(on: tuple) -> None:
    for name in _SWITCHES:
        setattr(W, name, name in on)


def ab_case(name: str, variants: list, reps: int, out: str, env: dict) -> None:
    h, s_q, s_k, varlen = _case(name)
    lens = decode_lens(s_k, s_q, varlen)
    q, kv, bt, cs = make_decode(h, s_q, lens)
    idx = ref_rows(cs)
    ref = mla_decode_ref(q[idx].float(), kv, bt[idx], cs[idx], causal=True, head_dim_v=D_V)
    calls = 8
    graphs, checks, keep = [], [], []
    try:
        for label, over, sws in variants:
            _set_switches(sws)
            cfg = dict(D.default_config(s_q, h, BATCH, hopper=True), **over)
            md = D.get_mla_metadata(cs, s_q, h, config=cfg)
            o_buf = torch.full((BATCH, s_q, h, D_V), float("nan"), dtype=q.dtype, device=q.device)
            fn = lambda md=md, o_buf=o_buf: D.mla_decode(q, kv, bt, cs, D_QK**-0.5, True, D_V, metadata=md,  # noqa: E731
                                                         out=o_buf, check_ids=False)
            t0 = time.time()
            res = []
            for _ in range(2):  # twice on the same metadata: FUSE's counters must have been re-armed by the first
                o_buf.fill_(float("nan"))
                o, lse = fn()
                res.append(check_decode(o, lse, ref, idx))
            ok = all(r[2] for r in res)
            fused = W.fuse_combine(md, q, o_buf)
            if md.counters is not None:
                torch.cuda.synchronize()
                ok = ok and int(md.counters.abs().sum()) == 0
            checks.append((ok, max(r[0] for r in res), max(r[1] for r in res), fused))
            print(f"  {name} {label}: compile + 2 checked calls {time.time() - t0:.1f} s, ok {ok}, fused {fused}, "
                  f"cos {checks[-1][1]:.1e}, lse {checks[-1][2]:.1e}", flush=True)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(calls):
                    last = fn()
            g.replay()
            torch.cuda.synchronize()
            graphs.append(g)
            keep.append((md, last))
    finally:
        _set_switches(())
    times = [[] for _ in variants]
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in variants]
    for _ in range(reps):
        for i, g in enumerate(graphs):
            torch.cuda._sleep(1_000_000)
            ev[i][0].record()
            g.replay()
            ev[i][1].record()
        torch.cuda.synchronize()
        for i in range(len(variants)):
            times[i].append(ev[i][0].elapsed_time(ev[i][1]) * 1000.0 / calls)
    # after the timed replays: each graph's last call's out / lse against the reference again, counters re-armed
    for i, (md, (o, lse)) in enumerate(keep):
        ok_after = check_decode(o, lse, ref, idx)[2] and (md.counters is None or int(md.counters.abs().sum()) == 0)
        checks[i] = (checks[i][0] and ok_after,) + checks[i][1:]
    nbytes = (sum(lens) * D_QK + BATCH * s_q * h * D_QK + BATCH * s_q * h * D_V) * 2
    base = st.median(times[0])
    with open(os.path.join(out, "ab.jsonl"), "a") as f:
        for (label, over, sws), t, (ok, cd, dl, fused) in zip(variants, times, checks):
            us = st.median(t)
            row = dict(suite="mla_decode_ab", case=dict(batch=BATCH, s_k=s_k, h_q=h, s_q=s_q, page_size=64,
                                                          varlen=varlen),
                       variant=label, overrides=over, switches=list(sws), fused=fused, us_per_call=round(us, 2),
                       us_min=round(min(t), 2), us_max=round(max(t), 2), gbps=round(nbytes / us / 1e3, 1),
                       calls_per_graph=calls, reps=reps, correct=ok, cos_diff=cd, lse_maxdiff=dl, **env)
            f.write(json.dumps(row) + "\n")
            print(f"ab {name:10s} {us:7.1f} us/call ({min(t):.1f}-{max(t):.1f}) {row['gbps']:7.1f} GB/s "
                  f"{us - base:+6.1f} ok {ok} cos {cd:.1e}  {label}", flush=True)
    del graphs, keep


def main() -> int:
    """Exit status: 0 when every case ran and every variant was correct, 1 otherwise, 2 for a bad option or no GPU."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."), type=out_dir, help="output FOLDER, default $OUT or .")
    ap.add_argument("--cases", nargs="*", type=_case_arg, default=["16x1v", "16x2v", "32x1v", "32x1@8192v"])
    ap.add_argument("--variants", nargs="+", type=_variant,
                    default=[_variant(x) for x in ("default", "default+sw:QUERY_EARLY", "default")])
    ap.add_argument("--reps", type=positive_int, default=21)
    ap.add_argument("--timeline", nargs="*", type=_case_arg, default=[])
    ap.add_argument("--timeline-variants", nargs="+", type=_variant, default=[_variant("default")])
    args = ap.parse_args()
    require_cuda("probe_mla_ws_switch_ab")
    os.makedirs(args.out, exist_ok=True)
    import triton

    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    failed = []
    for name in args.cases:
        try:
            ab_case(name, list(args.variants), args.reps, args.out, env)
        except Exception as e:  # noqa: BLE001
            print(f"ab {name} failed: {type(e).__name__}: {str(e)[:400]}", flush=True)
            failed.append(name)
        torch.cuda.empty_cache()
    for name in args.timeline:
        for label, over, sws in args.timeline_variants:
            _set_switches(sws)
            print(f"-- timeline {name} {label}", flush=True)
            try:
                run_case(name, 3, args.out, over)
                tag = name + ("_" + "_".join(f"{k}{v}" for k, v in sorted(over.items())) if over else "")
                src = os.path.join(args.out, f"timeline_{tag}.pt")  # kept per variant (run_case names it by config)
                if os.path.exists(src):
                    os.replace(src, os.path.join(args.out, f"timeline_{tag}_{'_'.join(sws) or 'plain'}.pt"))
            except Exception as e:  # noqa: BLE001
                print(f"timeline {name} {label} failed: {type(e).__name__}: {str(e)[:400]}", flush=True)
                failed.append(name)
            finally:
                _set_switches(())
            torch.cuda.empty_cache()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
