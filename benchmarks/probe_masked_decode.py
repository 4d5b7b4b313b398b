"""Where does the T = 1 masked decode GEMM lose against a plain read of the same bytes? (issue 5, session 24)

    PYTHONPATH=. python benchmarks/probe_masked_decode.py [--budget-s 180] [--rounds 25] [--nk 7168x2048,4096x7168]
        [--variants def,def_aa,...] [--out rows.jsonl]

Cases: 256 experts, T tokens (--tokens; T = 1: 8 experts with masked_m = 1) each routed to 8 distinct experts as in
bench_moe's decode rows, max_active_groups min(256, 8T) (as the model launches it), (N, K) from --nk; --variants at
T = 1, --variants-multi at T > 1. Variants (``VARIANTS``): the launcher's default (``def``, twice: the A/A control
``def_aa``), the config it chose before K2 became its default at K = 7168 (``old``), configs (BLOCK_N, stages,
register cap), the default kernel with no K loop (``k0*``: its launch alone), the GEMM with in-kernel TMA
descriptors (``devdesc``), the GEMM over pre-tiled weights (``tiled*``: each weight TMA box one contiguous 16 KB),
two K blocks per stage on the usual layout (``k2*``), the fused SiLU·quant GEMM1 kernel reading b as w13 (``silu*``:
default, A/A, K2; their ratios are to ``silu``), the plain streaming read of the touched bytes (``read``,
bench_gemm_decode's kernel), that read with two unused host TMA descriptors and the GEMM's scalars as extra
parameters (``read_desc``), and empty kernels on the GEMM's grid (``empty``, ``empty_desc``).

* Correctness first: every GEMM variant (not k0) into a NaN-poisoned out, compared with the fp32 reference on the
  touched groups (calc_diff < 1e-3, finite), untouched groups still NaN. A failing variant is not timed.
* Timing, all variants interleaved (order rotated every round: each is first after the previous round's sync equally
  often), after --warm-s seconds of the kernels, three clocks per variant and round:
  ``graph``  = one-call graph replay from an idle GPU incl. the host launch (the events of timing.graph_replay_us,
               bench_moe's us_graph, but interleaved: in s24 W2 the suite's us_graph held ~7 µs of host time where
               this clock held ~1.5, for the GEMM and the read alike);
  ``device`` = the same replay queued behind a ~100 µs device sleep (host submission hidden; bench_moe's
               us_graph_device);
  ``kernel`` = the kernel's own duration from the profiler (graphs replayed back to back).
  Row fields: medians per clock, ``launch_gap`` = graph − device, ``ratio_to_base`` = the per-round median ratio to
  ``base`` (``def``, for silu variants ``silu``; rows before the silu variants: ``ratio_to_def``) per clock, GB/s
  of the touched weight bytes (+ scales, activations, outputs: bench_moe's wbytes) per clock.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_gemm_decode import stream_read_fn  # noqa: E402
from benchmarks.bench_grouped_ws import _rand_fp8  # noqa: E402

from tritonseek.benchrun import git_commit, name_list, out_file, positive_float, positive_int, require_cuda  # noqa: E402
from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked  # noqa: E402
from tritonseek.kernels.grouped_gemm_masked_decode import (launch_masked_devdesc, launch_masked_raw,  # noqa: E402
                                                           launch_masked_tiled, tile_weights)
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref  # noqa: E402
from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: E402

_SW = dict(BLOCK_M=16, SWAP_AB=True, num_warps=4)
# name → (kind, config or None = the launcher's own choice). kinds: gemm (launcher), raw0 (k0), devdesc, read,
# read_desc, empty, empty_desc. Configs per (N, K) where the default differs (the launcher's _decode_wave_config).
VARIANTS = {
    "def": ("gemm", None),
    "def_aa": ("gemm", None),
    "old": ("gemm_old", None),
    "n128s3r128": ("gemm", dict(_SW, BLOCK_N=128, num_stages=3, MAXNREG=128)),
    "n128s6": ("gemm", dict(_SW, BLOCK_N=128, num_stages=6)),
    "n64s3r72": ("gemm", dict(_SW, BLOCK_N=64, num_stages=3, MAXNREG=72)),
    "n64s3r80": ("gemm", dict(_SW, BLOCK_N=64, num_stages=3, MAXNREG=80)),
    "n64s4r96": ("gemm", dict(_SW, BLOCK_N=64, num_stages=4, MAXNREG=96)),
    "n64s4r128": ("gemm", dict(_SW, BLOCK_N=64, num_stages=4, MAXNREG=128)),
    "n64s5r128": ("gemm", dict(_SW, BLOCK_N=64, num_stages=5, MAXNREG=128)),
    "devdesc": ("devdesc", None),
    "tiled": ("tiled", None),
    "tiled_s4": ("tiled", dict(_SW, BLOCK_N=128, num_stages=4)),
    "silu": ("silu", None),
    "silu_aa": ("silu", None),
    "silu_k2": ("silu", dict(_SW, BLOCK_N=128, num_stages=3, K2=True)),
    "k2s2": ("k2", dict(_SW, BLOCK_N=128, num_stages=2)),
    "k2s3": ("k2", dict(_SW, BLOCK_N=128, num_stages=3)),
    "k2n64s2r96": ("k2", dict(_SW, BLOCK_N=64, num_stages=2, MAXNREG=96)),
    "k2n64s3r128": ("k2", dict(_SW, BLOCK_N=64, num_stages=3, MAXNREG=128)),
    "k0": ("raw0", None),
    "k0s1": ("raw0", dict(_SW, BLOCK_N=128, num_stages=1, MAXNREG=128)),
    "read": ("read", None),
    "read_desc": ("read_desc", None),
    "empty": ("empty", None),
    "empty_desc": ("empty_desc", None),
}


@triton.jit
def _empty_kernel(sink_ptr):
    if tl.program_id(0) == 0:
        tl.store(sink_ptr, 1)


@triton.jit
def _empty_desc_kernel(a_desc, b_desc, a_scale_ptr, b_scale_ptr, masked_m_ptr, out_ptr, b_ptr, sink_ptr,
                       M_max, N, E, nkb, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10):
    # the GEMM's parameter list (two host TMA descriptors by value + pointers + scalars), no work
    if tl.program_id(0) == 0:
        tl.store(sink_ptr, 1)


@triton.jit
def _read_desc_kernel(x_ptr, out_ptr, n, a_desc, b_desc, M_max, N, E, nkb, s0, s1, s2, s3, s4, s5,
                      BLOCK: tl.constexpr, ITERS: tl.constexpr):
    # bench_gemm_decode's streaming read, plus the GEMM's descriptors and scalars as unused parameters
    base = tl.program_id(0).to(tl.int64) * (BLOCK * ITERS)
    acc = tl.zeros((BLOCK,), dtype=tl.int32)
    for i in tl.static_range(ITERS):
        offs = base + i * BLOCK + tl.arange(0, BLOCK)
        acc ^= tl.load(x_ptr + offs, mask=offs < n, other=0)
    tl.store(out_ptr + tl.program_id(0), tl.xor_sum(acc, 0))


def _default_cfg(N, K, tiles):
    # the swapped decode config as the launcher adjusts it for the grid (grouped_gemm_masked._decode_wave_config):
    # what the launcher runs at T = 1 without a config; the config of the probe's own kernels at every T
    from tritonseek.kernels import grouped_gemm as GG
    from tritonseek.kernels.grouped_gemm_masked import _decode_wave_config

    return _decode_wave_config(dict(GG._MASKED_DECODE), tiles, GG._num_programs(torch.device("cuda")))


_TILED: dict = {}  # (b's address, shape) → its tiled copy (one at a time)


def build(name, kind, cfg, ops, mag, sink, em=1):
    a, a_s, b, bs, mm, out, touched = ops
    E, M_max, K = a.shape
    N = b.shape[1]
    dcfg = _default_cfg(N, K, mag * triton.cdiv(M_max, 16) * triton.cdiv(N, 128))
    if kind == "gemm":  # the public launcher as bench_moe's decode rows call it
        return lambda: grouped_fp8_gemm_masked(a, a_s, b, bs, mm, out=out, expected_m=em, max_active_groups=mag,
                                               config=cfg)
    if kind == "gemm_old":  # the launcher with the config its default was before K2 (s24): wave rule only
        from tritonseek.kernels import grouped_gemm as GG
        from tritonseek.kernels.grouped_gemm_masked import _decode_wave_config

        c = GG.get_config("masked", min(em, M_max), N, K)
        tiles = mag * triton.cdiv(M_max, c["BLOCK_M"]) * triton.cdiv(N, c["BLOCK_N"])
        c = _decode_wave_config(c, tiles, GG._num_programs(a.device))
        return lambda: grouped_fp8_gemm_masked(a, a_s, b, bs, mm, out=out, expected_m=em, max_active_groups=mag,
                                               config=c)
    if kind == "k2":
        return lambda: grouped_fp8_gemm_masked(a, a_s, b, bs, mm, out=out, config=dict(cfg, K2=True),
                                               max_active_groups=mag, kernel="tl")
    if kind == "silu":  # the model's GEMM1 kernel (b read as w13 [E, 2I, K]), plain launch, its default or cfg
        from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked_silu_quant

        return lambda: grouped_fp8_gemm_masked_silu_quant(a, a_s, b, bs, mm, expected_m=em, max_active_groups=mag,
                                                          config=cfg)
    if kind == "devdesc":
        return lambda: launch_masked_devdesc(a, a_s, b, bs, mm, out, mag, cfg or dcfg)
    if kind == "tiled":
        key = (b.data_ptr(), tuple(b.shape))
        if key not in _TILED:
            _TILED.clear()
            _TILED[key] = tile_weights(b)
        bt = _TILED[key]
        return lambda: launch_masked_tiled(a, a_s, bt, bs, mm, out, mag, cfg or dcfg)
    if kind == "raw0":
        return lambda: launch_masked_raw(a, a_s, b, bs, mm, out, mag, cfg or dcfg, num_k_blocks=0)
    grid = mag * triton.cdiv(M_max, 16) * triton.cdiv(N, dcfg["BLOCK_N"])
    if kind == "read":
        return stream_read_fn(b.view(-1)[:touched], sink)
    if kind == "empty":
        return lambda: _empty_kernel[(grid,)](sink)
    a_desc = TensorDescriptor(a, [E * M_max, K], [a.stride(1), 1], [16, 128])
    b_desc = TensorDescriptor(b, [E * N, K], [b.stride(1), 1], [128, 128])
    if kind == "empty_desc":
        return lambda: _empty_desc_kernel[(grid,)](a_desc, b_desc, a_s, bs, mm, out, b, sink, M_max, N, E,
                                                   K // 128, *range(3, 14))
    x = b.view(-1)[:touched].view(torch.int32)
    block, iters = 2048, 8
    rgrid = (triton.cdiv(x.numel(), block * iters),)
    return lambda: _read_desc_kernel[rgrid](x, sink, x.numel(), a_desc, b_desc, M_max, N, E, K // 128,
                                            *range(3, 9), BLOCK=block, ITERS=iters, num_warps=8)


def _capture(fn):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    return g


def clocks(fns: dict, rounds: int, t_end: float) -> dict:
    """name → dict(graph=[µs], device=[µs], kernel=[µs]) over interleaved rounds (see the module docstring)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    graphs = {n: _capture(f) for n, f in fns.items()}
    names = list(graphs)
    res = {n: dict(graph=[], device=[], kernel=[]) for n in names}
    ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
    for r in range(rounds):
        if time.time() > t_end:
            print(f"  rounds cut at {r} (budget)", flush=True)
            break
        k = r % len(names)  # rotated: every variant is first (after the previous round's sync) equally often
        order = names[k:] + names[:k]
        for n in order:  # idle GPU, host launch included
            st, en = ev(), ev()
            st.record()
            graphs[n].replay()
            en.record()
            en.synchronize()
            res[n]["graph"].append(st.elapsed_time(en) * 1000.0)
        pend = []
        for n in order:  # queued behind a device sleep
            st, en = ev(), ev()
            torch.cuda._sleep(200_000)
            st.record()
            graphs[n].replay()
            en.record()
            pend.append((n, st, en))
        torch.cuda.synchronize()
        for n, st, en in pend:
            res[n]["device"].append(st.elapsed_time(en) * 1000.0)
    krounds = min(10, max(1, len(res[names[0]]["graph"])))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for r in range(krounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                graphs[n].replay()
        torch.cuda.synchronize()
    recs = sorted([e for e in prof.events() if e.device_type == DeviceType.CUDA], key=lambda e: e.time_range.start)
    if len(recs) == krounds * len(names):
        i = 0
        for r in range(krounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                res[n]["kernel"].append(recs[i].time_range.elapsed_us())
                i += 1
    else:
        print(f"  profiler: {len(recs)} records for {krounds * len(names)} replays: kernel clock not attributed")
    del graphs
    return res


def compiled_info() -> list[str]:
    """One line per compiled variant of the probed kernels: shared memory, registers, spills (ptxas, from the
    loaded binaries), for the programs-per-SM arithmetic."""
    from tritonseek.kernels.grouped_gemm_masked import _grouped_fp8_masked_kernel
    from tritonseek.kernels.grouped_gemm_masked_decode import _masked_devdesc_kernel, _masked_tiled_kernel

    lines = []
    for fn in (_grouped_fp8_masked_kernel, _masked_devdesc_kernel, _masked_tiled_kernel,
               _read_desc_kernel, _empty_desc_kernel):
        try:
            for cache in fn.device_caches.values():
                for k in cache[0].values():
                    md = k.metadata
                    lines.append(f"  {fn.__name__}: warps {md.num_warps} stages {md.num_stages} maxnreg "
                                 f"{getattr(md, 'maxnreg', None)} shared {md.shared} regs {k.n_regs} "
                                 f"spills {k.n_spills}")
        except Exception as e:  # informational only
            lines.append(f"  {getattr(fn, '__name__', fn)}: no compile info ({type(e).__name__}: {e})")
    return lines


def _med(xs):
    return statistics.median(xs) if xs else None


def _case_tensors(T, N, K, gen, dev):
    """256 experts, T tokens each routed to 8 distinct experts (uniform, as bench_moe's decode rows): operands,
    masked_m (host and device), M_max = T."""
    G = 256
    picks = torch.stack([torch.randperm(G, generator=gen)[:8] for _ in range(T)])
    mm_h = torch.bincount(picks.flatten(), minlength=G).to(torch.int32)
    b = _rand_fp8((G, N, K), dev)
    bs = torch.rand(G, N // 128, K // 128, device=dev) * 1e-2 + 1e-3
    a = _rand_fp8((G, T, K), dev)
    a_s = torch.rand(G, T, K // 128, device=dev) * 1e-2 + 1e-3
    return a, a_s, b, bs, mm_h, mm_h.to(dev)


def _checked(names, ops, mag, em, ref, valid, sink, tag, bad):
    """name → fn for the variants that build, run and (GEMMs) match the reference: NaN-poisoned out, valid rows
    finite with calc_diff < 1e-3, every other row still NaN."""
    out = ops[5]
    fns = {}
    silu_ref = None
    for n in names:
        kind, cfg = VARIANTS[n]
        try:
            fn = build(n, kind, cfg, ops, mag, sink, em)
            if kind in ("gemm", "gemm_old", "devdesc", "tiled", "k2"):
                out.fill_(float("nan"))
                fn()
                torch.cuda.synchronize()
                got = out[valid].float()
                d = calc_diff(got, ref[valid])
                ok = bool(torch.isfinite(got).all()) and bool(torch.isnan(out[~valid].float()).all()) and d < 1e-3
                print(f"  {tag} {n}: calc_diff {d:.2e} {'ok' if ok else 'FAIL'}", flush=True)
                if not ok:
                    bad.append((tag, n))
                    continue
            elif kind == "silu":  # every silu variant gives the bits of the first one (same K loop order)
                q, sc = fn()
                torch.cuda.synchronize()
                v = valid
                ok = bool(torch.isfinite(sc[v]).all())
                if silu_ref is None:
                    silu_ref = (q[v].view(torch.uint8).clone(), sc[v].clone())
                else:
                    ok = ok and torch.equal(q[v].view(torch.uint8), silu_ref[0]) and torch.equal(sc[v], silu_ref[1])
                print(f"  {tag} {n}: {'ok' if ok else 'FAIL'} (bits of the first silu variant)", flush=True)
                if not ok:
                    bad.append((tag, n))
                    continue
            else:
                fn()
                torch.cuda.synchronize()
            fns[n] = fn
        except Exception as e:
            print(f"  {tag} {n} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            bad.append((tag, n))
    return fns


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-s", type=positive_float, default=180.0)
    p.add_argument("--rounds", type=positive_int, default=25)
    p.add_argument("--warm-s", type=float, default=6.0, help="seconds of the default GEMM before anything is timed")
    p.add_argument("--nk", default="7168x2048,4096x7168")
    p.add_argument("--tokens", default="1", help="token counts T (comma list)")
    p.add_argument("--variants", type=name_list(tuple(VARIANTS)), default=",".join(VARIANTS), help="at T = 1")
    p.add_argument("--variants-multi", type=name_list(tuple(VARIANTS)), default="def,def_aa,tiled,read",
                   help="at T > 1")
    p.add_argument("--out", type=out_file, default="masked_decode_rows.jsonl", help="JSON rows, appended")
    args = p.parse_args()
    require_cuda("probe_masked_decode")
    dev = torch.device("cuda")
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    t0 = time.time()
    t_end = t0 + args.budget_s
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    gen = torch.Generator(device="cpu").manual_seed(0)
    sink = torch.zeros(1 << 20, dtype=torch.int32, device=dev)
    table, bad = [], []
    nks = [tuple(int(v) for v in s.split("x")) for s in args.nk.split(",")]
    cases = [(int(T), N, K) for T in args.tokens.split(",") for N, K in nks]
    for ci, (T, N, K) in enumerate(cases):
        if time.time() > t_end - 10:
            print("skip (budget)", T, N, K)
            continue
        G = 256
        a, a_s, b, bs, mm_h, mm = _case_tensors(T, N, K, gen, dev)
        out = torch.empty(G, T, N, device=dev, dtype=torch.bfloat16)
        active = int((mm_h > 0).sum())
        rows = int(mm_h.sum())
        touched = active * N * K
        wbytes = active * (N * K + bs[0].numel() * 4) + rows * (K + 2 * N)  # bench_moe's decode bytes
        mag = min(G, 8 * T)
        em = max(1, int(mm_h.float().mean().item()))
        ops = (a, a_s, b, bs, mm, out, touched)
        ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
        valid = (torch.arange(T)[None, :] < mm_h[:, None]).to(dev)
        tag = f"T={T} ({N}, {K})"
        names = args.variants if T == 1 else args.variants_multi
        fns = _checked(names, ops, mag, em, ref, valid, sink, tag, bad)
        del ref
        warm_end = time.time() + (args.warm_s if ci == 0 else 0.5)  # clocks up (W1 started at 345 MHz)
        while time.time() < warm_end:
            for fn in fns.values():
                fn()
            torch.cuda.synchronize()
        share = (t_end - time.time()) / (len(cases) - ci)
        res = clocks(fns, args.rounds, time.time() + share - 6)
        for n, r in res.items():
            base = res.get("silu" if VARIANTS[n][0] == "silu" else "def")
            med = {c: _med(v) for c, v in r.items()}
            ratio = {c: round(_med([x / y for x, y in zip(r[c], base[c])]), 4) if base and r[c] and base[c] else None
                     for c in ("graph", "device", "kernel")}
            moves = VARIANTS[n][0] in ("gemm", "gemm_old", "devdesc", "tiled", "k2", "read", "read_desc", "silu")
            row = dict(suite="masked_decode_probe",
                       case=dict(groups=G, T=T, N=N, K=K, touched_experts=active, valid_rows=rows,
                                 max_active_groups=mag),
                       variant=n, kind=VARIANTS[n][0], config=VARIANTS[n][1],
                       us={c: round(v, 2) if v else None for c, v in med.items()},
                       launch_gap=round(med["graph"] - med["device"], 2) if med["graph"] and med["device"] else None,
                       ratio_to_base=ratio, base="silu" if VARIANTS[n][0] == "silu" else "def", rounds=len(r["graph"]),
                       gbps={c: round(wbytes / v / 1e3, 1) if v and moves else None for c, v in med.items()},
                       target_us=round(wbytes / (0.8 * 4.27e6), 2), **env)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            u = row["us"]
            table.append(f"T={T:<3} ({N},{K}) {n:>11} graph {u['graph'] or 0:8.2f} device {u['device'] or 0:8.2f} "
                         f"kernel {u['kernel'] or 0:8.2f}  gap {row['launch_gap'] or 0:5.2f}  ratio g/d/k "
                         f"{ratio['graph']}/{ratio['device']}/{ratio['kernel']}  target {row['target_us']}")
        del a, b, out, fns, ops
        _TILED.clear()
        torch.cuda.empty_cache()
    print("compiled kernels:")
    print("\n".join(compiled_info()))
    print(f"\nelapsed {time.time() - t0:.0f} s; medians in µs (target: graph ≤ target_us); ratio = per-round median "
          f"vs def")
    print("\n".join(table))
    if bad:
        print("FAILED / not timed:", bad)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
