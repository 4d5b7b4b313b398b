"""Benchmark suites ``moe_gate``, ``moe_permute``, ``grouped_gemm_contiguous``, ``grouped_gemm_masked``, ``moe_layer``
(issue 5).

    PYTHONPATH=. python benchmarks/bench_moe.py [--suites a,b] [--sweep] [--out rows.jsonl] [--budget-s 200]
    PYTHONPATH=. python benchmarks/bench_moe.py --dry   # tiny shapes on CPU (Triton's interpreter): checks the script

* Every timed kernel is first checked at the timed shape (NaN-poisoned outputs, reference compare);
  a sweep candidate that fails the check is never timed.
* ``us`` = eager median (triton.testing.do_bench), ``us_graph`` = median CUDA-graph replay;
  TFLOP/s and GB/s use the graph time. GEMM inputs are fresh random fp8 (never zeros).
* Peers in the same run: ``torch._grouped_mm`` bf16 (grouped GEMMs), the torch reference gate,
  argsort + index_select / index_add (permute / unpermute). ratio_vs_peer = peer_us / us (graph times
  where both have them; > 1 means ours is faster).
* Formulas: grouped GEMM TFLOP/s = 2·(valid rows)·N·K / t; decode masked GB/s = (weights of experts with
  masked_m > 0 + their scales + activations + outputs) / t; permute GB/s = (T·H + T·k·H)·bytes (+ scales) / t,
  unpermute GB/s = (T·k·H + T·H)·bytes / t (DeepEP / TransformerEngine style "bytes moved").
* ``grouped_gemm_contiguous`` (in bench_moe_grouped.py, with the helpers both grouped suites share): the kernel the
  model runs (model.moe_triton._contiguous_gemm: Gluon ws on Hopper), then the other kernel; ``kernel`` = ws / tl;
  GPU-clock interleaved timing with the peer as for the masked anchors. Rows before s20 timed the tl launcher only.
* ``grouped_gemm_masked`` anchors: the launcher as called (kernel="auto"; ``kernel`` = the kernel it ran), then the
  other kernel (tl / ws) as a second row; both kernels and the peer also timed interleaved on the GPU clock
  (``tflops_gpu``, ``gpu_ratio_vs``; --gpu-rounds). Decode cases pass max_active_groups as the model does (tl).
* ``moe_layer``: the model's MoE module (router GEMM + gate top-k, routed experts, shared expert) on the
  triton backend vs the same module on the reference backend (with FP8 activation rounding, so the outputs
  are comparable); TFLOP/s = 2·T·(k+1)·3·H·I / t (+ the router GEMM), GB/s = FP8 weights of the touched
  experts + shared expert + bf16 router weight / t.
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
    # it must be on before triton and the kernel modules load (without it every suite failed on CPU, exit 0)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_gemm_decode import stream_read_fn  # noqa: E402
from benchmarks.bench_moe_grouped import (CANDIDATES_LARGE, CANDIDATES_SMALL, NK, _anchor_gpu_clock,  # noqa: E402
                                         _sweep, _weights, bench_contiguous)
from benchmarks.bench_moe_layer import VARIANTS as LAYER_VARIANTS  # noqa: E402
from benchmarks.bench_moe_layer import bench_layer, graph_device_us, kernel_breakdown  # noqa: E402
from benchmarks.bench_moe_routing import bench_gate, bench_permute  # noqa: E402
from benchmarks.timing import graph_replay_us  # noqa: E402

from tritonseek.benchrun import (StagedRows, git_commit, write_json_kept, name_list, nonnegative_float, nonnegative_int, out_file,  # noqa: E402
                                 positive_float, positive_int, positive_int_list, require_cuda)
from tritonseek.kernels import grouped_gemm as GG
from tritonseek.kernels._utils import interpreter_active
from tritonseek.kernels.grouped_gemm_masked import tl_launch_config
from tritonseek.kernels.grouped_gemm_masked_choice import choose_masked_kernel
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref

COPY_TBPS = 4.27
# issue 5 targets (TFLOP/s) and our-H200 DeepGEMM anchors
MASKED_TARGET = {(1, 1024): (1156, 835), (2, 512): (1113, 835), (4, 256): (1002, 791)}

# decode streaming (≤ 16 rows per group). Swept at 045ab41 / ab11934 (T=1..16): swapped 16-row tiles (SWAP_AB)
# won every case; split K and stream-K schedules did not and were removed (see grouped_gemm._TUNED).
# None = the committed default (swapped, 6 stages).
CANDIDATES_DECODE = [
    None,
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, GROUP_M=8),  # the previous decode default
    dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=4, SWAP_AB=True),
    dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=5, SWAP_AB=True),
    dict(BLOCK_M=16, BLOCK_N=64, num_warps=4, num_stages=8, SWAP_AB=True),
    # 256 weight rows per program (half the programs, each twice as long: fewer pipeline fills and drains)
    dict(BLOCK_M=16, BLOCK_N=256, num_warps=4, num_stages=3, SWAP_AB=True),
    dict(BLOCK_M=16, BLOCK_N=256, num_warps=8, num_stages=3, SWAP_AB=True),
    # 4 programs per SM (3 stages, registers capped at 128: 0 spills): at T=1 (7168, 2048) all 448 programs
    # are resident at once (one wave) instead of 264 + 184
    dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=3, SWAP_AB=True, MAXNREG=128),
]


class Ctx:
    def __init__(self, args):
        self.args = args
        self.dry = args.dry
        self.dev = torch.device("cpu" if args.dry else "cuda")
        self.t_end = time.time() + args.budget_s
        self.rows: list[dict] = []
        self.out = None  # main's StagedRows for --out
        self._pending = None  # the last row made, not yet written (row / flush)
        self.winners: dict = {}
        self.env = dict(
            gpu="cpu-interpreter" if args.dry else torch.cuda.get_device_name(0), torch=torch.__version__,
            triton=triton.__version__, commit=git_commit(), dry=args.dry,
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    def time_left(self) -> float:
        return self.t_end - time.time()

    def sync(self):
        if not self.dry:
            torch.cuda.synchronize()

    def eager_us(self, fn) -> float:
        if self.dry:
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e6
        return triton.testing.do_bench(fn, warmup=5, rep=30, return_mode="median") * 1000.0

    def graph_us(self, fn, min_ms: float = 30.0) -> float | None:
        if self.dry:
            return None
        try:
            return graph_replay_us(fn if isinstance(fn, list) else [fn], min_ms)  # a list: µs per call
        except Exception as e:  # a capture failure is a finding, not a crash
            print(f"  graph capture failed: {type(e).__name__}: {e}")
            return None

    def row(self, suite, case, us, us_graph, *, tflops=None, gbps=None, peer=None, peer_us=None, **extra):
        t = us_graph if us_graph is not None else us
        r = dict(suite=suite, case=case, us=round(us, 2), us_graph=round(us_graph, 2) if us_graph else None,
                 tflops=round(tflops(t), 1) if tflops else None, gbps=round(gbps(t), 1) if gbps else None,
                 peer=peer, peer_us=round(peer_us, 2) if peer_us else None,
                 ratio_vs_peer=round(peer_us / t, 3) if peer_us else None, **extra, **self.env)
        self.rows.append(r)
        print("  ", json.dumps({k: v for k, v in r.items() if k not in self.env}))
        # A row lands when the next one is made or its suite ends (in OUT.partial when OUT exists: replaced at the
        # end), so fields a suite adds to the returned row (meets_target) reach the file: written at once, the
        # masked / contiguous / layer / permute rows of s20's final pass (65f2170) had no meets_target.
        self.flush()
        self._pending = r
        return r

    def flush(self):
        """Write the last row made (if any) to --out; main calls it after every suite, failed or not."""
        if self._pending is not None and self.out is not None:
            self.out.write(json.dumps(self._pending) + "\n")
        self._pending = None


# ------------------------------------------------------------------------------------------------


def _read_floor(cx, b, nbytes: int) -> dict:
    """A plain Triton streaming read (bench_gemm_decode's) of nbytes of the weights (the same byte count as the
    touched experts, read contiguously), timed as the GEMM is: one-call graph replay, device-side graph replay,
    profiler kernel time. What any kernel reading those bytes costs on this GPU."""
    sink = torch.empty(1 << 20, dtype=torch.int32, device=cx.dev)
    fn = stream_read_fn(b.view(-1)[:nbytes], sink)
    ug, ud = cx.graph_us(fn), graph_device_us(fn)
    bd = kernel_breakdown(fn) or {}
    uk = sum(v for n_, v in bd.items() if "stream_read" in n_)
    return dict(floor_us_graph=round(ug, 2) if ug else None, floor_us_device=round(ud, 2) if ud else None,
                floor_us_kernel=round(uk, 2) if uk else None)


def bench_masked(cx: Ctx):
    cases = []
    if cx.dry:
        cases = [("anchor", 2, 64, 256, 384, None), ("decode", 16, 1, 256, 384, None)]
    else:
        for (G, m), tgt in MASKED_TARGET.items():
            for i, (N, K) in enumerate(NK):
                cases.append(("anchor", G, m, N, K, tgt[i]))
        decode_nk = [tuple(int(v) for v in nk.split("x")) for nk in cx.args.decode_nk.split(",")]
        for T in [int(t) for t in cx.args.decode_tokens.split(",")]:
            for N, K in decode_nk:
                cases.append(("decode", 256, T, N, K, None))
        cases = [c for c in cases if c[0] in cx.args.masked_kinds.split(",")]
    gen = torch.Generator(device="cpu").manual_seed(0)
    for kind, G, m, N, K, tgt in cases:
        if cx.time_left() < 5:
            print("skip (budget)", kind, G, m, N, K)
            continue
        if kind == "anchor":
            M_max = m
            masked_m = torch.full((G,), m, dtype=torch.int32)
        else:
            T = m
            M_max = T
            # real routing: each of T tokens picks 8 distinct experts (uniform), so at most T·8 groups hold rows
            picks = torch.stack([torch.randperm(G, generator=gen)[:8] for _ in range(T)])
            masked_m = torch.bincount(picks.flatten(), minlength=G).to(torch.int32)
        masked_m_d = masked_m.to(cx.dev)
        b, bs = _weights(G, N, K, cx.dev)
        a = torch.randn(G, M_max, K, device=cx.dev).to(torch.float8_e4m3fn)
        a_s = torch.rand(G, M_max, K // 128, device=cx.dev) * 1e-2 + 1e-3
        out = torch.empty(G, M_max, N, device=cx.dev, dtype=torch.bfloat16)
        chk = [g for g in range(G) if masked_m[g] > 0][:4]
        refs = {g: grouped_fp8_gemm_masked_ref(a[g:g + 1], a_s[g:g + 1], b[g:g + 1], bs[g:g + 1], masked_m_d[g:g + 1],
                                               out_dtype=torch.float32) for g in chk}
        em = max(1, int(masked_m.float().mean().item()))
        # decode: programs only for the ≤ T·k groups that can hold rows, as the model launches it
        mag = min(G, T * 8) if kind == "decode" else None

        # the launcher as a user calls it (kernel="auto"; rows name the kernel that ran: auto_k); at the anchors the
        # other kernel too, as a second row (kernel= given explicitly), so the record shows both
        auto_k = choose_masked_kernel("auto", cx.dev, G, M_max, expected_m=em, out=out, max_active_groups=mag)
        kernels = [auto_k] + ([k for k in ("tl", "ws") if k != auto_k] if kind == "anchor" and not cx.dry else [])

        def run(cfg, kernel="auto"):
            if cfg is not None:  # the shared candidate lists carry contiguous-only keys the masked launcher rejects
                cfg = {k: v for k, v in cfg.items() if k not in ("GROUP_M", "GRID_MULT")}
            return GG.grouped_fp8_gemm_masked(a, a_s, b, bs, masked_m_d, out=out, expected_m=em, config=cfg,
                                              max_active_groups=mag, kernel=kernel)

        valid = torch.arange(M_max)[None, :] < masked_m[:, None]

        def check(cfg, kernel="auto"):
            out.fill_(float("nan"))
            run(cfg, kernel)
            cx.sync()
            d = 0.0
            good = bool(torch.isfinite(out[valid.to(cx.dev)]).all())  # every valid row of every group written
            for g, r in refs.items():
                mm = int(masked_m[g])
                o = out[g, :mm].float()
                good = good and bool(torch.isfinite(o).all())
                d = max(d, calc_diff(o, r[0, :mm]))
            return good and d < 1e-3, d

        if cx.dry:
            cands = CANDIDATES_SMALL[:1] if kind == "anchor" else CANDIDATES_DECODE[:3]
        elif kind == "decode":  # past 16 rows per slab: the default against the previous one only
            cands = (CANDIDATES_DECODE if M_max <= 16 else CANDIDATES_DECODE[:2]) if cx.args.sweep else [None]
            if cx.args.decode_cands and M_max <= 16:  # chosen candidates (indices), alternated decode_repeat times
                cands = [CANDIDATES_DECODE[int(i)] for i in cx.args.decode_cands.split(",")] * cx.args.decode_repeat
        elif em > 64:
            cands = [c for c in CANDIDATES_LARGE if not c.get("WS")] if cx.args.sweep else [None]
        else:
            cands = CANDIDATES_SMALL if cx.args.sweep else [None]
        print(f"masked {kind} G={G} m={m} N={N} K={K} (valid rows {int(masked_m.sum())}, expected_m {em})")
        if kind == "decode" and not cx.dry:
            # In the H200 runs at 045ab41 / ab11934 the first candidate timed in a T ≤ 8 case ran 7–15% slower
            # than when timed later; ~50 ms of untimed calls first (whether that removes it is not yet measured).
            t_warm = time.time() + 0.05
            for _ in range(200):
                run(None)
                if time.time() > t_warm:
                    break
            cx.sync()
        key = f"masked-decode,{T},{N},{K}" if kind == "decode" else f"masked,{N},{K},{GG._m_class(em)}"
        results = {}
        for kern in kernels:
            call = "auto" if kern == auto_k else kern
            res = _sweep(cx, [None] if kern == "ws" else cands, lambda c, k=call: run(c, k),
                         lambda c, k=call: check(c, k), key if kern == "tl" else None, device_time=kind == "decode")
            if res is not None:
                results[kern] = (call, *res)
        rows_valid = int(masked_m.sum())
        active = int((masked_m > 0).sum())
        flops = 2 * rows_valid * N * K
        wbytes = active * (N * K + bs[0].numel() * 4) + rows_valid * (K + 2 * N)
        peer = peer_us = gpu = None
        if kind == "anchor" and not cx.dry and results:
            a16 = a.to(torch.bfloat16)
            b16 = b.to(torch.bfloat16).transpose(1, 2)
            try:
                peer, peer_us = "torch._grouped_mm bf16 (3-D, all rows)", cx.graph_us(lambda: torch._grouped_mm(a16, b16))
            except Exception as e:
                print("  peer failed:", e)
            gpu = _anchor_gpu_clock(cx, {k: (lambda r=r: run(r[1], r[0])) for k, r in results.items()},
                                    (lambda: torch._grouped_mm(a16, b16)) if peer_us else None, flops)
            del a16, b16
        for kern, (call, cfg, us, ug, timings) in results.items():
            extra = dict(gpu.get(kern, {})) if gpu else {}
            if kind == "decode":  # [config, graph µs, eager µs, device-side graph µs]
                extra["candidates_us_graph"] = [[c or "default", round(g_, 2) if g_ else None, round(u, 1),
                                                 round(d_, 2) if d_ else None] for c, u, g_, d_ in timings]
                if not cx.dry:  # the GEMM kernel's own device time (no graph-launch overhead), from the profiler
                    bd = kernel_breakdown(lambda: run(cfg)) or {}
                    k_us = sum(v for n_, v in bd.items() if "grouped_fp8_masked" in n_)
                    extra["us_kernel"] = round(k_us, 2) if k_us else None
                    # four calls back to back in one graph (as in the decode step), time per call
                    g4 = cx.graph_us([lambda: run(cfg)] * 4)
                    extra["us_graph_4calls"] = round(g4, 2) if g4 else None
                    # one call's graph timed device side only (the host's submission latency excluded)
                    gd = graph_device_us(lambda: run(cfg))
                    extra["us_graph_device"] = round(gd, 2) if gd else None
                    extra.update(_read_floor(cx, b, int((masked_m > 0).sum()) * N * K))
            case = dict(groups=G, m_per_group=m, N=N, K=K)
            if kind == "decode":
                case = dict(groups=G, m_per_group=round(T * 8 / 256, 3), N=N, K=K, T=T, max_m=M_max,
                            valid_rows=rows_valid)
            if kern == "ws":
                from tritonseek.kernels.grouped_gemm_ws import grouped_ws_config
                cfg_used = grouped_ws_config("masked", em, N, K)
            else:
                # the config that ran: the launcher's default adjusted to the grid and K (not the table's entry)
                cfg_used = cfg or tl_launch_config(cx.dev, G, M_max, N, K, em, mag)
            r = cx.row("grouped_gemm_masked", case, us, ug, tflops=lambda t: flops / t / 1e6,
                       gbps=lambda t: wbytes / t / 1e3, peer=peer, peer_us=peer_us, kernel=kern,
                       launcher_kernel=call, config=cfg_used, max_active_groups=mag, correct=True,
                       target_tflops=tgt, target_gbps=0.8 * COPY_TBPS * 1000 if kind == "decode" else None,
                       gbps_kernel=round(wbytes / extra["us_kernel"] / 1e3, 1) if extra.get("us_kernel") else None,
                       gbps_graph_4calls=round(wbytes / extra["us_graph_4calls"] / 1e3, 1)
                       if extra.get("us_graph_4calls") else None,
                       gbps_device=round(wbytes / extra["us_graph_device"] / 1e3, 1)
                       if extra.get("us_graph_device") else None, **extra)
            if kind == "anchor":
                r["meets_target"] = bool(r["tflops"] and r["tflops"] >= tgt)
            else:
                r["meets_target"] = bool(r["gbps"] and r["gbps"] >= 0.8 * COPY_TBPS * 1000)
        del a, b, out
        if not cx.dry:
            torch.cuda.empty_cache()


SUITES = {"moe_gate": bench_gate, "moe_permute": bench_permute, "grouped_gemm_contiguous": bench_contiguous,
          "grouped_gemm_masked": bench_masked, "moe_layer": bench_layer}


def _nk_list(text: str) -> list[tuple[int, ...]]:
    nks = [positive_int_list(nk.replace("x", ",")) for nk in text.split(",")]
    if any(len(nk) != 2 for nk in nks):
        raise argparse.ArgumentTypeError(f"{text!r} is not NxK,NxK,...")
    return nks


def _cand_list(text: str) -> list[int]:
    idx = [int(i) if i.strip().isdigit() else -1 for i in text.split(",")]
    if any(not 0 <= i < len(CANDIDATES_DECODE) for i in idx):
        raise argparse.ArgumentTypeError(f"{text!r}: indices of CANDIDATES_DECODE (0..{len(CANDIDATES_DECODE) - 1})")
    return idx


def _check_lists(p, args) -> None:
    """The comma-list options the suites parse themselves, checked up front (a typo was a traceback mid-run)."""
    checks = dict(decode_tokens=positive_int_list, layer_tokens=positive_int_list, gate_tokens=positive_int_list,
                  router_tokens=positive_int_list, router_block_e=positive_int_list,
                  masked_kinds=name_list(("anchor", "decode")), permute_dtypes=name_list(("bf16", "fp8")),
                  layer_variants=name_list(LAYER_VARIANTS),
                  decode_nk=_nk_list, decode_cands=_cand_list)
    for name, check in checks.items():
        try:
            if getattr(args, name) or name != "decode_cands":  # an empty --decode-cands: the default
                check(getattr(args, name))
        except argparse.ArgumentTypeError as e:
            p.error(f"argument --{name.replace('_', '-')}: {e}")


def main():
    p = argparse.ArgumentParser(description="MoE benchmark suites (see the module docstring); exit 1 when a suite fails")
    p.add_argument("--suites", default=list(SUITES), type=name_list(SUITES), help="comma list of " + ", ".join(SUITES))
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--dry", action="store_true", help="tiny shapes on CPU through Triton's interpreter (turned on by "
                   "this flag); rows carry dry: true")
    p.add_argument("--masked-kinds", default="anchor,decode", help="grouped_gemm_masked cases: anchor and/or decode")
    p.add_argument("--decode-tokens", default="1,8,64,256", help="grouped_gemm_masked decode cases: token counts T")
    p.add_argument("--layer-tokens", default="1,64,4096", help="moe_layer token counts T")
    p.add_argument("--layer-variants", default="unfused,router,router+shared",
                   help="moe_layer decode fusions to time (bench_moe_layer.VARIANTS)")
    p.add_argument("--layer-breakdown-max-t", type=nonnegative_int, default=1, help="profiler breakdown for T up to this")
    p.add_argument("--layer-breakdown-variants", default="",
                   help="profiler breakdown only for these variants (default all; under PDL a kernel's time includes "
                        "its wait for the kernel before it)")
    p.add_argument("--layer-peer", type=int, choices=(0, 1), default=1, help="time the reference layer (1) or not (0)")
    p.add_argument("--router-block-e", default="8,16", help="moe_gate: fused-router BLOCK_E values timed at T=1")
    p.add_argument("--gate-tokens", default="1,64,4096", help="moe_gate: gate_topk token counts")
    p.add_argument("--router-tokens", default="1,8,64", help="moe_gate: fused-router token counts")
    p.add_argument("--permute-breakdown", type=int, choices=(0, 1), default=1, help="profiler breakdown of permute+unpermute")
    p.add_argument("--permute-dtypes", default="bf16,fp8", help="moe_permute: row dtypes")
    p.add_argument("--decode-nk", default="4096x7168,7168x2048", help="grouped_gemm_masked decode (N, K) shapes")
    p.add_argument("--decode-cands", default="", help="decode cases with ≤ 16 rows per slab: CANDIDATES_DECODE "
                   "indices to time (overrides --sweep there)")
    p.add_argument("--decode-repeat", type=positive_int, default=1, help="times the --decode-cands list is timed, in turn")
    p.add_argument("--gpu-rounds", type=nonnegative_int, default=40, help="grouped_gemm_masked anchors and "
                   "grouped_gemm_contiguous cases: rounds of interleaved GPU-clock graph replays of both kernels and the peer (0: off)")
    p.add_argument("--budget-s", type=positive_float, default=1e9)
    p.add_argument("--reserve-s", type=nonnegative_float, default=0.0, help="sweeps stop this long before the budget ends")
    p.add_argument("--out", default="moe_rows.jsonl", type=out_file,
                   help="JSON rows (default: %(default)s, in the current directory, --dry too); an existing OUT is "
                        "replaced when the run ends (rows go to OUT.partial meanwhile: an "
                        "interrupted run or one with a failed suite keeps the old OUT), a new one gets each row as it "
                        "is measured; a failed suite does not stop the others")
    p.add_argument("--winners", default="moe_winners.json", type=out_file,
                   help="the sweeps' winning configs (JSON; default: %(default)s, in the current directory); never "
                        "written by --dry (interpreter timings)")
    args = p.parse_args()
    _check_lists(p, args)
    if args.dry and not interpreter_active():
        p.error("--dry runs the kernels on CPU through Triton's interpreter, which was off when they were defined "
                f"(TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}); run with TRITON_INTERPRET=1")
    if not args.dry:
        require_cuda("bench_moe")
    torch.manual_seed(0)
    cx = Ctx(args)
    failed = []
    try:
        with StagedRows(args.out) as cx.out:
            for s in args.suites:
                print(f"== {s} (budget left {cx.time_left():.0f} s)", flush=True)
                try:
                    SUITES[s](cx)
                except Exception as e:
                    import traceback

                    traceback.print_exc()
                    print(f"suite {s} failed: {e}")
                    failed.append(s)
                finally:  # the suite's last row (a failed suite's rows too)
                    cx.flush()
            if failed:  # exit 1: an existing --out stays as it was, the rows measured are in OUT.partial
                cx.out.fail(f"failed suites: {', '.join(failed)}")
    finally:
        # an empty dict would replace an old winners file; an unfinished run writes .partial. A --dry run's winners
        # come from CPU-interpreter timings: never written (s19: they replaced ./moe_winners.json, rows said dry)
        if cx.winners and args.dry:
            print("--dry: the sweeps' winners are not written (CPU-interpreter timings)", file=sys.stderr)
        elif cx.winners:
            write_json_kept(args.winners, cx.winners, complete=sys.exc_info()[0] is None and not failed)
    print("\n%-24s %-52s %4s %9s %9s %8s %8s %8s %s" % ("suite", "case", "kern", "us", "us_graph", "TFLOP/s", "GB/s",
                                                        "ratio", "met (GPU-clock TFLOP/s)"))
    for r in cx.rows:
        print("%-24s %-52s %4s %9s %9s %8s %8s %8s %s" % (
            r["suite"], json.dumps(r["case"], separators=(",", ":"))[:52], r.get("kernel", ""), r["us"], r["us_graph"],
            r["tflops"], r["gbps"], r["ratio_vs_peer"],
            f"{r.get('meets_target', '')}" + (f" ({r['tflops_gpu']})" if r.get("tflops_gpu") else "")))
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
