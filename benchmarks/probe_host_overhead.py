"""Host (launch) time of one eager call of each public launcher on the model's hot path.

GPU (default): per case, a few warm-up calls (compile), then per repetition a long ``torch.cuda._sleep`` is queued
first and ``--calls`` back-to-back calls are timed with ``time.perf_counter``: while the sleep holds the stream
the kernels only queue, so the loop time is the host's (validation, config lookup, descriptors, Triton's launch
path, allocations). An event recorded right after the sleep must still be pending when the loop ends, else the
row says ``isolated: false`` (the loop waited on the GPU: a sync inside the launcher, or a full launch queue).

CPU (``--stub``): under TRITON_INTERPRET=1 with every kernel launch replaced by a no-op, the same loop times only
the launchers' own Python (the interpreter path: no Gluon, descriptors of the tl path); ``--profile`` prints the
cProfile top entries of each case.

``--tree DIR`` imports tritonseek from DIR (e.g. an older checkout unpacked under gpu_jobs/) so one job can time
two trees in alternating processes; rows (jsonl, ``--out``) carry ``tree`` and ``us_host`` (median per call over
the repetitions) and ``us_host_min``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
import types


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tree", default=None, help="import tritonseek from this directory")
    p.add_argument("--tag", default="new")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--stub", action="store_true", help="CPU: interpreter with kernel launches stubbed out")
    p.add_argument("--profile", action="store_true", help="with --stub: cProfile top entries per case")
    p.add_argument("--cases", default="", help="comma-separated case names (default all)")
    p.add_argument("--out", default=None, help="append rows (jsonl) here")
    p.add_argument("--deadline", type=float, default=0.0, help="skip remaining cases after this many seconds")
    p.add_argument("--warm", action="store_true", help="only run each case once (compile / fill the Triton cache)")
    p.add_argument("--shard", default="0/1", help="i/n: this process takes cases i, i+n, ... (parallel warm-up)")
    return p.parse_args()


ARGS = _parse()
if ARGS.stub:
    os.environ["TRITON_INTERPRET"] = "1"
if ARGS.tree:
    sys.path.insert(0, os.path.abspath(ARGS.tree))

import torch  # noqa: E402


def _stub_launches() -> None:
    """Every ``kernel[grid](...)`` of the interpreter returns at once (the launchers' Python is what is timed)."""
    from triton.runtime.interpreter import InterpretedFunction

    InterpretedFunction.run = lambda self, *a, **k: None


def _fp8(shape, dev, scale=0.5):
    return (torch.randn(shape, device=dev) * scale).to(torch.float8_e4m3fn)


def _scales(shape, dev):
    return torch.rand(shape, device=dev) * 0.01 + 0.001


VIEWS: dict = {}  # case -> the parts of its result that are defined (default: every tensor in it)


def _digest(name: str, res) -> list[int]:
    """Position-weighted sums of the raw bytes of the defined parts of a case's result: equal digests between two
    trees mean bit-identical results (the host-side changes must not change what the kernels compute)."""
    parts = VIEWS[name](res) if name in VIEWS else [r for r in (res if isinstance(res, tuple) else (res,))
                                                    if isinstance(r, torch.Tensor)]
    out = []
    for t in parts:
        b = t.contiguous().view(torch.uint8).reshape(-1).to(torch.int64)
        w = torch.arange(b.numel(), device=b.device, dtype=torch.int64) % 1000003 + 1
        out.append(int((b * w).sum()))
    return out


def build_cases(dev: torch.device) -> dict:
    """name -> zero-argument callable running one launcher call at a DeepSeek-V3 shape (inputs random)."""
    import tritonseek.kernels as K

    cases = {}

    def gemm(m, n, k):
        a, b = _fp8((m, k), dev), _fp8((n, k), dev)
        sa = _scales((k // 128 + (k % 128 > 0), m), dev).t()  # MN-major, as the quant kernel writes it
        sb = _scales(((n + 127) // 128, (k + 127) // 128), dev)
        return lambda: K.fp8_gemm_nt(a, sa, b, sb)

    cases["gemm_swapab_m8_7168x2048"] = gemm(8, 7168, 2048)
    cases["gemm_tl_m64_2112x7168"] = gemm(64, 2112, 7168)  # tl, split-K 7 + reduce
    cases["gemm_tl_m64_7168x2048"] = gemm(64, 7168, 2048)  # tl, one launch
    cases["gemm_ws_m128_32768x512"] = gemm(128, 32768, 512)  # Gluon ws
    cases["gemm_sk_m128_7168x16384"] = gemm(128, 7168, 16384)  # Gluon stream-K
    cases["gemm_ws_m4096_7168x2048"] = gemm(4096, 7168, 2048)  # Gluon ws

    x = torch.randn(128, 7168, device=dev, dtype=torch.bfloat16)
    cases["quant_128x7168"] = lambda: K.per_token_group_quant_fp8(x, 128)
    h = torch.randn(128, 4096, device=dev, dtype=torch.bfloat16)
    cases["silu_quant_128x4096"] = lambda: K.silu_mul_quant_fp8(h, 128)
    w = torch.randn(7168, device=dev, dtype=torch.bfloat16)
    cases["rms_norm_128x7168"] = lambda: K.rms_norm(x, w, 1e-6)

    # contiguous grouped GEMM: 8 experts x 256 rows, gate-up (N 4096, K 7168)
    E, rows, N, Kd = 8, 256, 4096, 7168
    ac, bc = _fp8((E * rows, Kd), dev), _fp8((E, N, Kd), dev)
    sac = _scales((Kd // 128, E * rows), dev).t()
    sbc = _scales((E, N // 128, Kd // 128), dev)
    mi = torch.arange(E, device=dev, dtype=torch.int32).repeat_interleave(rows)
    cases["grouped_contig_tl_8x256"] = lambda: K.grouped_fp8_gemm_contiguous(ac, sac, bc, sbc, mi)
    if dev.type == "cuda":
        cases["grouped_contig_ws_8x256"] = lambda: K.grouped_fp8_gemm_contiguous_ws(ac, sac, bc, sbc, mi)

    # masked grouped GEMM: 4 groups x 256 rows (masked_m 200), down (N 7168, K 2048)
    Em, Mm, Nm, Km = 4, 256, 7168, 2048
    am, bm = _fp8((Em, Mm, Km), dev), _fp8((Em, Nm, Km), dev)
    sam = _scales((Em, Mm, Km // 128), dev)
    sbm = _scales((Em, Nm // 128, Km // 128), dev)
    mm = torch.full((Em,), 200, device=dev, dtype=torch.int32)
    masked = K.grouped_fp8_gemm_masked
    if "kernel" in inspect.signature(masked).parameters:
        cases["grouped_masked_tl_4x256"] = lambda: masked(am, sam, bm, sbm, mm, kernel="tl")
        if dev.type == "cuda":
            cases["grouped_masked_ws_4x256"] = lambda: masked(am, sam, bm, sbm, mm, kernel="ws")
    else:  # trees before the kernel= dispatch (e.g. the session-20 start): the tl launcher, the ws one directly
        cases["grouped_masked_tl_4x256"] = lambda: masked(am, sam, bm, sbm, mm)
        if dev.type == "cuda":
            cases["grouped_masked_ws_4x256"] = lambda: K.grouped_fp8_gemm_masked_ws(am, sam, bm, sbm, mm)
    for name in ("grouped_masked_tl_4x256", "grouped_masked_ws_4x256"):
        VIEWS[name] = lambda out: [out[:, :200]]  # rows past masked_m are not written

    # MoE routing at T=128 tokens, 256 experts, top-8
    T, NE, top = 128, 256, 8
    logits = torch.randn(T, NE, device=dev)
    bias = torch.randn(NE, device=dev) * 0.1
    cases["gate_topk_128x256"] = lambda: K.gate_topk(logits, bias, top_k=top, n_group=8, topk_group=4,
                                                     routed_scaling_factor=2.5)
    wg = torch.randn(NE, 7168, device=dev, dtype=torch.bfloat16) * 0.02
    cases["router_gate_topk_128"] = lambda: K.router_gate_topk(x, wg, bias, top_k=top, n_group=8, topk_group=4,
                                                               routed_scaling_factor=2.5)
    ids = torch.stack([torch.randperm(NE, device=dev)[:top] for _ in range(T)]).to(torch.int32)
    xq, xs = _fp8((T, 7168), dev), _scales((T, 56), dev)
    cases["moe_permute_128"] = lambda: K.moe_permute(xq, ids, NE, 128, xs, graph_safe=True, check_ids=False)
    VIEWS["moe_permute_128"] = lambda res: [res[2], res[3]]  # m_indices, row_map (padding rows are not written)
    M_perm = T * top + NE * 127
    eo = torch.randn(M_perm, 7168, device=dev, dtype=torch.bfloat16)
    rmap = torch.randperm(T * top, device=dev).to(torch.int32).view(T, top)
    tw = torch.rand(T, top, device=dev)
    unpermute = K.moe_unpermute
    if isinstance(unpermute, types.ModuleType):  # trees before c0b2008 bound the submodule under the launcher's name
        unpermute = unpermute.moe_unpermute
    cases["moe_unpermute_128"] = lambda: unpermute(eo, rmap, tw, check_ids=False)

    # MLA decode: batch 64, s_q 1, 128 heads, page 64, s_k 4096 (metadata built once per step, as the model does)
    B, H, page, sk = 64, 128, 64, 4096
    nblk = sk // page
    q = torch.randn(B, 1, H, 576, device=dev, dtype=torch.bfloat16)
    kv = torch.randn(B * nblk, page, 1, 576, device=dev, dtype=torch.bfloat16)
    bt = torch.arange(B * nblk, device=dev, dtype=torch.int32).view(B, nblk)
    sl = torch.full((B,), sk, device=dev, dtype=torch.int32)
    md = K.get_mla_metadata(sl, 1, H, max_seqlen_k=sk)
    cases["get_mla_metadata_b64"] = lambda: K.get_mla_metadata(sl, 1, H, max_seqlen_k=sk)
    cases["mla_decode_b64_h128"] = lambda: K.mla_decode(q, kv, bt, sl, metadata=md, check_ids=False)

    # MLA prefill: 4 sequences x 256 tokens, 128 heads, d_qk 192 (nope 128 + rope 64 kept apart), d_v 128
    Tp, Hp = 1024, 128
    qn = torch.randn(Tp, Hp, 128, device=dev, dtype=torch.bfloat16)
    kn = torch.randn(Tp, Hp, 128, device=dev, dtype=torch.bfloat16)
    vp = torch.randn(Tp, Hp, 128, device=dev, dtype=torch.bfloat16)
    qpe = torch.randn(Tp, Hp, 64, device=dev, dtype=torch.bfloat16)
    kpe = torch.randn(Tp, 64, device=dev, dtype=torch.bfloat16)
    cu = torch.tensor([0, 256, 512, 768, 1024], device=dev, dtype=torch.int32)
    cases["mla_prefill_4x256_h128"] = lambda: K.mla_prefill(qn, kn, vp, cu, 256, 192 ** -0.5, q_pe=qpe, k_pe=kpe,
                                                            check_ids=False)
    return cases


def _time_gpu(fn, calls: int, reps: int) -> tuple[list[float], bool]:
    """Per-call host µs of each repetition, and whether every repetition stayed ahead of the GPU."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    est = (time.perf_counter() - t0) / 3  # s per call, kernels not queued behind anything
    torch.cuda.synchronize()
    cycles = int(max(0.005, 2.5 * est * calls) * 2.0e9)  # ≥ 2.5x the loop at ≤ 2 GHz
    per, isolated = [], True
    for _ in range(reps):
        torch.cuda._sleep(cycles)
        ev = torch.cuda.Event()
        ev.record()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        dt = time.perf_counter() - t0
        isolated &= not ev.query()
        per.append(dt / calls * 1e6)
        torch.cuda.synchronize()
    return per, isolated


def _time_cpu(fn, calls: int, reps: int) -> list[float]:
    for _ in range(3):
        fn()
    per = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per.append((time.perf_counter() - t0) / calls * 1e6)
    return per


def main() -> None:
    t_start = time.perf_counter()
    if ARGS.stub:
        _stub_launches()
        dev = torch.device("cpu")
    else:
        dev = torch.device("cuda")
    torch.manual_seed(0)
    cases = build_cases(dev)
    names = [c for c in ARGS.cases.split(",") if c] or list(cases)
    shard, nshard = (int(v) for v in ARGS.shard.split("/"))
    names = names[shard::nshard]
    import tritonseek

    rows = []
    for name in names:
        if ARGS.deadline and time.perf_counter() - t_start > ARGS.deadline:
            print(f"{ARGS.tag} {name}: skipped (deadline)", flush=True)
            continue
        fn = cases[name]
        if ARGS.warm:
            t0 = time.perf_counter()
            try:
                fn()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                print(f"{ARGS.tag} {name}: warm {time.perf_counter() - t0:.1f} s", flush=True)
            except Exception as e:
                print(f"{ARGS.tag} {name}: FAILED {type(e).__name__}: {e}", flush=True)
            continue
        try:
            digest = None
            if not ARGS.stub:
                res = fn()
                torch.cuda.synchronize()
                digest = _digest(name, res)
                del res
            if ARGS.stub:
                per, iso = _time_cpu(fn, ARGS.calls, ARGS.reps), True
            else:
                per, iso = _time_gpu(fn, ARGS.calls, ARGS.reps)
        except Exception as e:  # a case that fails must not hide the others
            print(f"{ARGS.tag} {name}: FAILED {type(e).__name__}: {e}", flush=True)
            continue
        row = dict(suite="host_overhead", case=name, tree=ARGS.tag, us_host=round(statistics.median(per), 2),
                   us_host_min=round(min(per), 2), reps=[round(v, 2) for v in per], calls=ARGS.calls,
                   isolated=iso, digest=digest, device="cpu-stub" if ARGS.stub else torch.cuda.get_device_name(),
                   tritonseek_path=os.path.dirname(tritonseek.__file__))
        rows.append(row)
        print(f"{ARGS.tag:>5} {name:<28} {row['us_host']:8.1f} us/call (min {row['us_host_min']:.1f})"
              f"{'' if iso else '  NOT ISOLATED'}", flush=True)
        if ARGS.profile:
            import cProfile
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            for _ in range(ARGS.calls):
                fn()
            pr.disable()
            pstats.Stats(pr).sort_stats("tottime").print_stats(14)
        if ARGS.out:
            with open(ARGS.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
