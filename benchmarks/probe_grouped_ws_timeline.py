"""Where the fixed cost of the Gluon masked grouped FP8 GEMM goes, per program (issue 5, DeepGEMM's masked shapes).

    PYTHONPATH=. python benchmarks/probe_grouped_ws_timeline.py [--cases 1x1024@4096x7168 ...] [--reps 10]
                                                                 [--ab 60] [--ab-cfgs '{"NUM_STAGES": 6}' ...]
                                                                 [--timeline-cfgs '{}' ...] [--out DIR]

1. Checks, at each case's real shape, the default build, the DIAG build (grouped_fp8_gemm_masked_ws(diag=...)) and
   every --ab-cfgs config against the fp32 reference (calc_diff < 1e-3, NaN-poisoned out fully written) and the DIAG
   build's out bitwise against the default's.
2. Timeline of the DIAG build of each --timeline-cfgs config (one whose out differs bitwise from the default's gets
   none): a CUDA graph [stamp kernel] → [DIAG GEMM] → [stamp kernel] (the stamp kernels write %globaltimer), replayed
   --reps times behind a device sleep; per program the DIAG_SLOTS stamps (grouped_gemm_ws_parts): launch gap (first
   program entry − the stamp before), entry spread, entry → barriers → producer schedule → first stage landed → each
   tile's K loop → epilogue → end (from %clock64 at the program's SM clock), the end spread (idle tail of the grid)
   and the exit gap. Raw stamps go to DIR/timeline_<case>[_<config keys>].pt.
3. --ab N: GPU-clock A/B (benchmarks/bench_grouped_ws._interleaved_gpu_us: one-call graphs replayed N times each,
   interleaved, each behind a ~50 µs device sleep): the default, the default again (A/A), each --ab-cfgs config, the
   DIAG build (its perturbation), the same kernel with masked_m = 0 (launch + prologue + exit: no tile runs), with
   K = 128 (every tile, one K block), the stamp kernel alone, and the peer (torch._grouped_mm bf16, 3-D). Prints each
   one's median µs and median per-round ratio to the default; rows to DIR/ab.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics as st
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_grouped_ws import _interleaved_gpu_us, _median, _operands, _warm_gpu  # noqa: E402

from tritonseek.benchrun import (git_commit, json_object, nonnegative_float, nonnegative_int, out_dir,  # noqa: E402
                                 positive_int)
from tritonseek.kernels import grouped_gemm_ws as GW  # noqa: E402
from tritonseek.kernels.grouped_gemm_ws_parts import DIAG_SLOTS as S  # noqa: E402
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref  # noqa: E402


@triton.jit
def _now_kernel(ptr):
    t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
    tl.store(ptr, t)


def _case(name: str) -> tuple[int, int, int, int]:
    gm, nk = name.split("@")
    E, m = (int(x) for x in gm.split("x"))
    N, K = (int(x) for x in nk.split("x"))
    return E, m, N, K


def _case_arg(text: str) -> str:
    """argparse type of --cases: GROUPSxROWS@NxK with positive ints, K a multiple of 128 (the K=128 probe)."""
    try:
        E, m, N, K = _case(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not GROUPSxROWS@NxK (e.g. 1x1024@4096x7168)") from None
    if min(E, m, N, K) <= 0 or K % 128:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive and K a multiple of 128")
    return text


# argparse type of --ab-cfgs / --timeline-cfgs: a JSON object of grouped_ws_config overrides, keys and values checked
# against the launcher's spec before any GPU work (s19: {"STAGGER": -5} and {"EARLY_TMA": 1} failed inside the run)
_config_arg = json_object(GW.GROUPED_WS_CONFIG_SPEC, "grouped_ws_config overrides")


def _masked_inputs(E, m, N, K, dev):
    a, a_s2, b, bs = _operands(E * m, E, N, K, dev)
    return a.view(E, m, K), a_s2.contiguous().view(E, m, K // 128), b, bs, torch.full((E,), m, dtype=torch.int32,
                                                                                      device=dev)


def _programs(E, m, N, cfg):
    tiles = E * triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"])
    return GW._programs(torch.empty(1, device="cuda"), tiles, cfg)


def summarize(name: str, stamps: list[torch.Tensor], marks: list[tuple[int, int]], plain_us: float | None) -> dict:
    """Per-rep medians over programs of the timeline's intervals (µs), then the median over reps. Intervals inside a
    program come from %clock64 (its SM's cycles) at the program's mean SM clock (cycles over globaltimer ns from entry
    to end: %globaltimer advances in 256 ns steps on the H200, W1); the launch / exit gaps and the spreads across
    programs from %globaltimer."""
    c0, cs = S["cons"], S["cons_stride"]
    per_rep = []
    for d, (t_before, t_after) in zip(stamps, marks):
        act = d[:, S["entry"]] > 0
        g, ck = d[act, :64].double(), d[act, 64:].double()
        t0 = g[:, S["entry"]].min()
        e0, e1 = c0 + S["cons_end"], c0 + cs + S["cons_end"]
        last = torch.where(g[:, e1] > g[:, e0], torch.full_like(g[:, 0], e1), torch.full_like(g[:, 0], e0)).long()
        g_end, ck_end = g.gather(1, last[:, None])[:, 0], ck.gather(1, last[:, None])[:, 0]
        ghz = (ck_end - ck[:, S["entry"]]) / (g_end - g[:, S["entry"]]).clamp(min=1)  # cycles per ns

        def at(slot):  # µs from the program's entry, by its SM clock (NaN where not stamped)
            v = (ck[:, slot] - ck[:, S["entry"]]) / ghz / 1e3
            return torch.where(ck[:, slot] > 0, v, torch.full_like(v, float("nan")))

        def med(x):
            x = x[~torch.isnan(x)]
            return float(x.median()) if x.numel() else None

        r = dict(launch_gap=float(g[:, S["entry"]].min() - t_before) / 1e3,
                 entry_spread=float(g[:, S["entry"]].max() - t0) / 1e3,
                 span=float(g_end.max() - t0) / 1e3, exit_gap=float(t_after - g_end.max()) / 1e3,
                 end_spread=float(g_end.max() - g_end.median()) / 1e3,
                 bars=med(at(S["bars"])), prod_start=med(at(S["prod_start"])),
                 prod_sched=med(at(S["prod_sched"])), prod_tile0=med(at(S["prod_tile"])),
                 cons_start=med(at(c0 + S["cons_start"])), cons_sched=med(at(c0 + S["cons_sched"])),
                 landed=med(at(c0 + S["cons_landed"])), landed_p90=float(at(c0 + S["cons_landed"]).nanquantile(0.9)),
                 prog_time=med(at(int(last[0]))), sm_mhz=float(ghz.median()) * 1e3)
        kl, ep = [], []
        for i in range(8):
            kd = at(c0 + S["cons_kdone"] + i)
            if med(kd) is None:
                break
            prev = at(c0 + S["cons_landed"]) if i == 0 else at(c0 + S["cons_epi"] + i - 1)
            kl.append(med(kd - prev))
            ep.append(med(at(c0 + S["cons_epi"] + i) - kd))
        r["kloop"], r["epi"] = kl, ep
        # how long after the first warpgroup the second ends its K loop, per tile (a lag near the epilogue time puts
        # each warpgroup's epilogue under the other's wgmmas)
        r["wg1_lag"] = [med(at(c0 + cs + S["cons_kdone"] + i) - at(c0 + S["cons_kdone"] + i)) for i in range(len(kl))]
        r["last_epi_to_end"] = med(at(c0 + S["cons_end"]) - at(c0 + S["cons_epi"] + len(kl) - 1)) if kl else None
        per_rep.append(r)
    out = {}
    for k in per_rep[0]:
        v = [r[k] for r in per_rep]
        if isinstance(v[0], list):
            n = min(len(x) for x in v)
            out[k] = [round(st.median([x[i] for x in v if x[i] is not None]), 3) if any(x[i] is not None for x in v)
                      else None for i in range(n)]
        elif any(x is None for x in v):
            out[k] = None
        else:
            out[k] = round(st.median(v), 3)
    print(f"== {name} timeline (µs, median over {len(per_rep)} reps of per-program medians); plain graph {plain_us}")
    print(f"   launch gap {out['launch_gap']}  entry spread {out['entry_spread']}  span (first entry → last end) "
          f"{out['span']}  exit gap {out['exit_gap']}  end spread (max - median end) {out['end_spread']}")
    print(f"   per program from its entry (its clock64): barriers {out['bars']}  producer start {out['prod_start']}  "
          f"schedule {out['prod_sched']}  tile 0 requested {out['prod_tile0']}  consumer "
          f"start {out['cons_start']}  table {out['cons_sched']}  first stage landed {out['landed']} (p90 "
          f"{out['landed_p90']})")
    print(f"   K loop per tile {out['kloop']}  epilogue per tile {out['epi']}  warpgroup 1 K loop end - warpgroup 0's "
          f"{out['wg1_lag']}  last epilogue → end "
          f"{out['last_epi_to_end']}  program time {out['prog_time']}  SM MHz {out['sm_mhz']}")
    return out


def run_case(name: str, args, env: dict) -> None:
    dev = torch.device("cuda")
    E, m, N, K = _case(name)
    a, a_s, b, bs, mm = _masked_inputs(E, m, N, K, dev)
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    out = torch.empty(E, m, N, device=dev, dtype=torch.bfloat16)
    cfg0 = GW.grouped_ws_config("masked", m, N, K)
    grid = _programs(E, m, N, cfg0)
    diag = torch.zeros(grid, 128, dtype=torch.int64, device=dev)
    flops = 2 * E * m * N * K
    cfgs = {"default": {}, "A/A": {}}
    for j, c in enumerate(args.ab_cfgs):
        cfgs[json.dumps(c, sort_keys=True)] = c

    def gemm(cfg, o=out, d=None, mmv=mm, aa=a, aas=a_s):
        return lambda: GW.grouped_fp8_gemm_masked_ws(aa, aas, b, bs, mmv, out=o, config=cfg or None, diag=d)

    def check(fn, label):
        out.fill_(float("nan"))
        fn()
        torch.cuda.synchronize()
        dd = calc_diff(out.float(), ref)
        ok = bool(torch.isfinite(out).all()) and dd < 1e-3
        print(f"  {name} {label}: calc_diff {dd:.2e} {'ok' if ok else 'WRONG'}")
        return ok, out.clone()

    ok0, plain_out = check(gemm({}), "default")
    fns = {}
    if ok0:
        for k, c in cfgs.items():
            if k == "A/A" or check(gemm(c), k)[0]:
                fns[k] = gemm(c)
    okd, diag_out = check(gemm({}, d=diag), "DIAG")
    same = bool(torch.equal(diag_out, plain_out))
    print(f"  {name} DIAG out == default out: {same}")
    if okd:
        fns["DIAG"] = gemm({}, d=diag)
    # the same kernel with no rows (launch + prologue + exit) and with one K block per tile
    mm0 = torch.zeros_like(mm)
    fns["masked_m=0"] = gemm({}, mmv=mm0)
    a1, a_s1, b1, bs1, _ = _masked_inputs(E, m, N, 128, dev)
    o1 = torch.empty(E, m, N, device=dev, dtype=torch.bfloat16)
    fns["K=128"] = lambda: GW.grouped_fp8_gemm_masked_ws(a1, a_s1, b1, bs1, mm, out=o1)
    o1.fill_(float("nan"))
    fns["K=128"]()
    d1 = calc_diff(o1.float(), grouped_fp8_gemm_masked_ref(a1, a_s1, b1, bs1, mm, out_dtype=torch.float32))
    print(f"  {name} K=128: calc_diff {d1:.2e} {'ok' if d1 < 1e-3 and bool(torch.isfinite(o1).all()) else 'WRONG'}")
    now = torch.zeros(2, dtype=torch.int64, device=dev)
    _now_kernel[(1,)](now)  # both specializations (16-byte aligned or not) compiled before any capture
    _now_kernel[(1,)](now[1:])
    fns["stamp kernel"] = lambda: _now_kernel[(1,)](now)
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16).transpose(1, 2)
    fns["peer"] = lambda: torch._grouped_mm(a16, b16)

    # timeline of the DIAG build of each --timeline-cfgs config
    for tcfg in args.timeline_cfgs:
        if tcfg:
            okt, tout = check(gemm(tcfg, d=diag), f"DIAG {json.dumps(tcfg, sort_keys=True)}")
            if not (okt and bool(torch.equal(tout, plain_out))):
                print(f"  {name} DIAG {tcfg}: wrong or not bitwise the default's out, no timeline")
                continue
        _timeline(name, args, gemm(tcfg, d=diag), diag, now, grid, cfg0, tcfg, same, env)
    res = None
    if args.ab:
        res = _interleaved_gpu_us(fns, args.ab)
        base = res["default"]
        print(f"  {name} A/B on the GPU clock, {args.ab} interleaved rounds (µs median, ratio to default, p10/p90):")
        rows = []
        for k, v in res.items():
            ratio = _median([x / y for x, y in zip(v, base)])
            sv = sorted(v)
            print(f"    {k:>28}: {_median(v):8.2f} us  ratio {ratio:.4f}  p10 {sv[len(sv) // 10]:.2f} "
                  f"p90 {sv[len(sv) * 9 // 10]:.2f}" + (f"  {flops / _median(v) / 1e6:.1f} TFLOP/s"
                                                         if k not in ("masked_m=0", "K=128", "stamp kernel") else ""))
            rows.append(dict(suite="grouped_gemm_masked_probe", case=dict(groups=E, m_per_group=m, N=N, K=K), what=k,
                             us_gpu=round(_median(v), 3), ratio_to_default=round(ratio, 4), rounds=args.ab, **env))
        with open(os.path.join(args.out, "ab.jsonl"), "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


def _timeline(name, args, run, diag, now, grid, cfg0, tcfg, same, env) -> None:
    """--reps replays of the graph [stamp] → [DIAG GEMM] → [stamp]; summary printed, raw stamps saved."""
    stamps, marks = [], []
    run()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        _now_kernel[(1,)](now[0:])
        run()
        _now_kernel[(1,)](now[1:])
    for r in range(args.reps + 3):
        diag.zero_()
        torch.cuda._sleep(100_000)
        g.replay()
        torch.cuda.synchronize()
        if r >= 3:
            stamps.append(diag.cpu().clone())
            marks.append((int(now[0]), int(now[1])))
    del g
    label = name + (" " + json.dumps(tcfg, sort_keys=True) if tcfg else "")
    summ = summarize(label, stamps, marks, None)
    tag = name.replace("@", "_") + ("_" + "_".join(k for k in sorted(tcfg)) if tcfg else "")
    torch.save(dict(name=name, cfg=dict(cfg0, **tcfg), stamps=stamps, marks=marks, grid=grid, summary=summ),
               os.path.join(args.out, f"timeline_{tag}.pt"))
    with open(os.path.join(args.out, "timeline.jsonl"), "a") as f:
        f.write(json.dumps(dict(case=name, config=tcfg, grid=grid, summary=summ, diag_same=same, **env)) + "\n")


def main():
    p = argparse.ArgumentParser(description="DIAG timeline + GPU-clock A/B of the masked warp-specialized grouped FP8 "
                                "GEMM (see the module docstring); appends to DIR/ab.jsonl and DIR/timeline.jsonl")
    p.add_argument("--cases", nargs="+", type=_case_arg,
                   default=["1x1024@4096x7168", "1x1024@7168x2048", "4x256@4096x7168"])
    p.add_argument("--reps", type=positive_int, default=10, help="timeline replays per config")
    p.add_argument("--ab", type=nonnegative_int, default=60, help="interleaved A/B rounds (0: no A/B)")
    p.add_argument("--ab-cfgs", nargs="*", type=_config_arg, default=[],
                   help="configs (grouped_ws_config overrides, JSON) timed against the default")
    p.add_argument("--timeline-cfgs", nargs="*", type=_config_arg, default=[{}],
                   help="configs whose DIAG build gets a timeline ({} = the default)")
    p.add_argument("--out", default=os.environ.get("OUT", "."), type=out_dir,
                   help="output FOLDER (a file in the bench_*.py scripts), default $OUT or .; created if only its "
                        "last part is missing")
    p.add_argument("--warm-s", type=nonnegative_float, default=0.5, help="seconds of GPU warm-up first")
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.exit(2, "probe_grouped_ws_timeline: needs a CUDA (Hopper) GPU\n")
    os.makedirs(args.out, exist_ok=True)
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _warm_gpu(args.warm_s)
    for c in args.cases:
        run_case(c, args, env)


if __name__ == "__main__":
    main()
