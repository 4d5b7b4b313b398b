"""Where the fixed cost of the Gluon masked grouped FP8 GEMM goes, per program (issue 5, DeepGEMM's masked shapes).

    PYTHONPATH=. python benchmarks/probe_grouped_ws_timeline.py [--cases 1x1024@4096x7168 ...] [--reps 10]
                                                                 [--ab 60] [--ab-cfgs '{"PF_DESC": true}' ...]
                                                                 [--out DIR]

1. Checks, at each case's real shape, the default build, the DIAG build (grouped_fp8_gemm_masked_ws(diag=...)) and
   every --ab-cfgs config against the fp32 reference (calc_diff < 1e-3, NaN-poisoned out fully written) and the DIAG
   build's out bitwise against the default's.
2. Timeline: a CUDA graph [stamp kernel] → [DIAG GEMM] → [stamp kernel] (the stamp kernels write %globaltimer),
   replayed --reps times behind a device sleep; per program the DIAG_SLOTS stamps (grouped_gemm_ws_parts): launch gap
   (first program entry − the stamp before), entry spread, entry → barriers → producer schedule → first stage landed
   → each tile's K loop → epilogue → end, the end spread (idle tail of the grid) and the exit gap; SM clock per
   program from %clock64 / %globaltimer over its K loops. Raw stamps go to DIR/timeline_<case>.pt.
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

from tritonseek.benchrun import git_commit  # noqa: E402
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


def _masked_inputs(E, m, N, K, dev):
    a, a_s2, b, bs = _operands(E * m, E, N, K, dev)
    return a.view(E, m, K), a_s2.contiguous().view(E, m, K // 128), b, bs, torch.full((E,), m, dtype=torch.int32,
                                                                                      device=dev)


def _programs(E, m, N, cfg):
    tiles = E * triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"])
    return GW._programs(torch.empty(1, device="cuda"), tiles, cfg)


def summarize(name: str, stamps: list[torch.Tensor], marks: list[tuple[int, int]], plain_us: float | None) -> dict:
    """Per-rep medians over programs of the timeline's intervals (µs), then the median over reps."""
    c0, cs = S["cons"], S["cons_stride"]
    per_rep = []
    for d, (t_before, t_after) in zip(stamps, marks):
        g = d[:, :64].double()
        ck = d[:, 64:].double()
        act = g[:, S["entry"]] > 0
        g, ck = g[act], ck[act]
        t0 = g[:, S["entry"]].min()
        ent = g[:, S["entry"]]
        ends = torch.stack([g[:, c0 + c * cs + S["cons_end"]] for c in (0, 1)], 1).max(1).values
        ends = torch.where(ends > 0, ends, g[:, c0 + S["cons_end"]])
        r = dict(launch_gap=float(t0 - t_before) / 1e3, entry_spread=float(ent.max() - t0) / 1e3,
                 span=float(ends.max() - t0) / 1e3, exit_gap=float(t_after - ends.max()) / 1e3,
                 end_spread=float(ends.max() - ends.median()) / 1e3, end_min=float(ends.min() - t0) / 1e3,
                 bars=float((g[:, S["bars"]] - ent).median()) / 1e3,
                 prod_start=float((g[:, S["prod_start"]] - ent).median()) / 1e3,
                 prod_sched=float((g[:, S["prod_sched"]] - ent).median()) / 1e3,
                 prod_tile0_done=float((g[:, S["prod_tile_done"]] - ent).median()) / 1e3,
                 cons_start=float((g[:, c0 + S["cons_start"]] - ent).median()) / 1e3,
                 cons_sched=float((g[:, c0 + S["cons_sched"]] - ent).median()) / 1e3,
                 landed=float((g[:, c0 + S["cons_landed"]] - ent).median()) / 1e3,
                 landed_max=float((g[:, c0 + S["cons_landed"]] - t0).max()) / 1e3,
                 prog_time=float((ends - ent).median()) / 1e3)
        # tiles of consumer 0: K loop i = kdone_i - (landed for i = 0, else epi_{i-1}); epilogue i = epi_i - kdone_i
        kl, ep, mhz = [], [], []
        for i in range(8):
            kd = g[:, c0 + S["cons_kdone"] + i]
            if not bool((kd > 0).any()):
                break
            prev = g[:, c0 + S["cons_landed"]] if i == 0 else g[:, c0 + S["cons_epi"] + i - 1]
            ok = kd > 0
            kl.append(float((kd - prev)[ok].median()) / 1e3)
            ep.append(float((g[:, c0 + S["cons_epi"] + i] - kd)[ok].median()) / 1e3)
            if i == 0:
                dk = ck[:, c0 + S["cons_kdone"]] - ck[:, c0 + S["cons_landed"]]
                dt = g[:, c0 + S["cons_kdone"]] - g[:, c0 + S["cons_landed"]]
                mhz.append(float((dk / dt.clamp(min=1))[ok].median()) * 1e3)
        r["kloop"], r["epi"] = kl, ep
        r["sm_mhz_tile0"] = mhz[0] if mhz else None
        r["last_epi_to_end"] = float((g[:, c0 + S["cons_end"]] - g[:, c0 + S["cons_epi"] + len(kl) - 1]).median()) / 1e3 \
            if kl else None
        per_rep.append(r)
    out = {}
    for k in per_rep[0]:
        v = [r[k] for r in per_rep]
        if isinstance(v[0], list):
            n = min(len(x) for x in v)
            out[k] = [round(st.median([x[i] for x in v]), 3) for i in range(n)]
        elif v[0] is None:
            out[k] = None
        else:
            out[k] = round(st.median(v), 3)
    print(f"== {name} timeline (µs, median over {len(per_rep)} reps of per-program medians); plain graph {plain_us}")
    print(f"   launch gap {out['launch_gap']}  entry spread {out['entry_spread']}  span (first entry → last end) "
          f"{out['span']}  exit gap {out['exit_gap']}  end spread (max - median end) {out['end_spread']}  "
          f"first end {out['end_min']}")
    print(f"   per program from its entry: barriers {out['bars']}  producer start {out['prod_start']}  schedule "
          f"{out['prod_sched']}  consumer start {out['cons_start']}  table {out['cons_sched']}  first stage landed "
          f"{out['landed']} (latest program, from the first entry: {out['landed_max']})  producer tile 0 issued "
          f"{out['prod_tile0_done']}")
    print(f"   K loop per tile {out['kloop']}  epilogue per tile {out['epi']}  last epilogue → end "
          f"{out['last_epi_to_end']}  program time {out['prog_time']}  SM MHz (tile 0) {out['sm_mhz_tile0']}")
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

    # timeline of the DIAG build
    stamps, marks = [], []
    if okd:
        run = gemm({}, d=diag)
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
    plain_us = round(_median(res["default"]), 2) if res else None
    if stamps:
        summ = summarize(name, stamps, marks, plain_us)
        torch.save(dict(name=name, stamps=stamps, marks=marks, grid=grid, cfg=cfg0, summary=summ,
                        ab={k: v for k, v in res.items()} if res else None),
                   os.path.join(args.out, f"timeline_{name.replace('@', '_')}.pt"))
        with open(os.path.join(args.out, "timeline.jsonl"), "a") as f:
            f.write(json.dumps(dict(case=name, grid=grid, summary=summ, plain_us_gpu=plain_us, diag_same=same,
                                    **env)) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", nargs="+", default=["1x1024@4096x7168", "1x1024@7168x2048", "4x256@4096x7168"])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--ab", type=int, default=60)
    p.add_argument("--ab-cfgs", nargs="*", type=json.loads, default=[{"PF_DESC": True}])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--warm-s", type=float, default=0.5)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _warm_gpu(args.warm_s)
    for c in args.cases:
        run_case(c, args, env)


if __name__ == "__main__":
    main()
