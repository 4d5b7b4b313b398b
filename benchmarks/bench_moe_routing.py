"""Suites ``moe_gate`` and ``moe_permute`` of bench_moe.py (split out of it): the gate top-k and the fused
decode router, token permute / unpermute at T=4096. Formulas and peers: see bench_moe.py's docstring.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # a module of another script, not a benchmark of its own
    print("bench_moe_routing.py holds bench_moe.py's moe_gate and moe_permute suites: run"
          "  PYTHONPATH=. python benchmarks/bench_moe.py --suites moe_gate,moe_permute [--dry]")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import torch
import torch.nn.functional as F

from benchmarks.bench_moe_layer import graph_device_us, kernel_breakdown
from benchmarks.timing import graph_replay_us
from tritonseek.kernels import moe_routing as MR
from tritonseek.kernels.moe_routing import gate_topk, moe_permute, moe_unpermute
from tritonseek.kernels.reference.moe import gate_topk_ref, moe_permute_ref, moe_unpermute_ref


def bench_gate(cx):
    E = 256
    kw = dict(top_k=8, n_group=8, topk_group=4, scoring_func="sigmoid", topk_method="noaux_tc",
              norm_topk_prob=True, routed_scaling_factor=2.5)
    for T in ([1, 5] if cx.dry else [int(t) for t in cx.args.gate_tokens.split(",") if t]):
        logits = torch.randn(T, E, device=cx.dev)
        bias = torch.randn(E, device=cx.dev) * 0.1
        w, ids = gate_topk(logits, bias, **kw)
        wr, idr = gate_topk_ref(logits, bias, **kw)
        same = (ids == idr).all(1)
        werr = (w[same] - wr[same]).abs().max().item() if same.any() else 0.0
        print(f"gate T={T}: rows with identical ids {int(same.sum())}/{T}, max |dw| {werr:.2e}")
        ok = bool(same.float().mean() > 0.99 and werr < 1e-5)
        us = cx.eager_us(lambda: gate_topk(logits, bias, **kw))
        ug = cx.graph_us(lambda: gate_topk(logits, bias, **kw))
        pus = cx.eager_us(lambda: gate_topk_ref(logits, bias, **kw))
        pug = cx.graph_us(lambda: gate_topk_ref(logits, bias, **kw))
        cx.row("moe_gate", dict(T=T, E=E), us, ug, gbps=lambda t: T * E * 4 / t / 1e3, peer="torch reference",
               peer_us=pug if (pug and ug) else pus, correct=ok)
    # the decode router: x·Wᵀ (bf16 weight, fp32 sums) + top-k in one launch, against the previous path
    # (fp32 GEMV through F.linear on the fp32-held weight, then gate_topk) in the same run
    H = 256 if cx.dry else 7168
    W = (torch.randn(E, H, device=cx.dev) * 0.02).to(torch.bfloat16)
    W32 = W.float()
    bias = torch.randn(E, device=cx.dev) * 0.05
    for T in ([1, 9] if cx.dry else [int(t) for t in cx.args.router_tokens.split(",") if t]):
        if cx.time_left() < 5:
            break
        x = torch.randn(T, H, device=cx.dev).to(torch.bfloat16)
        w, ids = MR.router_gate_topk(x, W, bias, **kw)
        wr, idr = gate_topk_ref(F.linear(x.float(), W32), bias, **kw)
        same = (ids.sort(1).values == idr.sort(1).values).all(1)
        ok = bool(same.all())
        print(f"router T={T}: rows with the reference's expert set {int(same.sum())}/{T}")
        us = cx.eager_us(lambda: MR.router_gate_topk(x, W, bias, **kw))
        ug = cx.graph_us(lambda: MR.router_gate_topk(x, W, bias, **kw))
        prev = lambda: gate_topk(F.linear(x.float(), W32), bias, **kw)  # noqa: E731
        pus, pug = cx.eager_us(prev), cx.graph_us(prev)
        extra = {}
        if T == 1 and not cx.dry:  # experts per program (448 / 224 / 112 programs arriving on one counter)
            for be in (int(v) for v in cx.args.router_block_e.split(",") if v):
                cfg = dict(BLOCK_E=be)
                w2_, ids2 = MR.router_gate_topk(x, W, bias, config=cfg, **kw)
                good = bool(torch.equal(ids2, ids))
                g2 = cx.graph_us(lambda: MR.router_gate_topk(x, W, bias, config=cfg, **kw)) if good else None
                extra[f"us_graph_block_e{be}"] = round(g2, 2) if g2 else ("WRONG" if not good else None)
            print(f"  router T=1 BLOCK_E sweep (graph us): {extra}")
        cx.row("moe_gate", dict(T=T, E=E, H=H, op="router_gate_topk"), us, ug, gbps=lambda t: E * H * 2 / t / 1e3,
               peer="fp32 F.linear + gate_topk (previous decode path)", peer_us=pug if (pug and ug) else pus,
               correct=ok, floor_us=round(E * H * 2 / 4.27e6, 2), **extra)


def _routing(T, k, E, dev):
    scores = torch.rand(T, E, device=dev)
    return scores.topk(k, dim=1).indices.to(torch.int32)


def _flag_ab(flag: str, names: tuple[str, str], pair_us) -> dict:
    """{names[0]: µs with moe_routing.<flag> = False, names[1]: with True}: pair_us() (one graph replay of
    permute + unpermute, None when it could not be timed) × 2, as the pair's rows; the flag is True afterwards
    (both flags' committed default)."""
    ab = {}
    for on in (False, True):
        setattr(MR, flag, on)
        g1 = pair_us()
        ab[names[on]] = round(g1 * 2, 2) if g1 else None
    setattr(MR, flag, True)
    return ab


def bench_permute(cx):
    T, k, E, H, bm = (64, 4, 16, 256, 16) if cx.dry else (4096, 8, 256, 7168, 128)
    ids = _routing(T, k, E, cx.dev)
    w = torch.rand(T, k, device=cx.dev)
    for dt in cx.args.permute_dtypes.split(","):
        x = torch.randn(T, H, device=cx.dev)
        scale = None
        if dt == "fp8":
            x = x.to(torch.float8_e4m3fn)
            scale = (torch.rand(H // 128, T, device=cx.dev) + 0.5).t()
        else:
            x = x.to(torch.bfloat16)
        ref = moe_permute_ref(x, ids, E, bm, scale)
        out = moe_permute(x, ids, E, bm, scale)
        v = ref[2] >= 0
        ok = (torch.equal(out[2], ref[2]) and torch.equal(out[3], ref[3])
              and torch.equal(out[0][v].view(torch.uint8), ref[0][v].view(torch.uint8)))
        if scale is not None:
            ok = ok and torch.equal(out[1][v], ref[1][v])
        y = torch.randn(ref[0].shape[0], H, device=cx.dev).to(torch.bfloat16)
        y[~v] = float("nan")
        o = moe_unpermute(y, out[3], w)
        o_ref = moe_unpermute_ref(y, ref[3], w)
        ok_u = bool(torch.isfinite(o).all()) and bool(torch.allclose(o.float(), o_ref.float(), rtol=1e-2, atol=1e-2))
        print(f"permute {dt}: permute exact {ok}, unpermute ok {ok_u}")
        eb = x.element_size()
        sbytes = (T + T * k) * (H // 128) * 4 if scale is not None else 0
        p_bytes = (T * H + T * k * H) * eb + sbytes
        u_bytes = (T * k * H + T * H) * 2

        def perm():
            return moe_permute(x, ids, E, bm, scale, graph_safe=True, check_ids=False)  # time the kernels, no sync

        row_map = perm()[3]

        def unperm():
            return moe_unpermute(y, row_map, w, check_ids=False)

        # peer: argsort + index_select for permute, index_add for unpermute (plain torch)
        def perm_peer():
            order = torch.argsort(ids.flatten(), stable=True)
            xs = x.view(torch.uint8) if dt == "fp8" else x
            r = xs.index_select(0, order // k)
            if scale is not None:
                scale.index_select(0, order // k)
            return r

        order = torch.argsort(ids.flatten(), stable=True)
        y_valid = y[v][: T * k] if v.sum() >= T * k else torch.randn(T * k, H, device=cx.dev).to(torch.bfloat16)
        w_sorted = w.flatten()[order]

        def unperm_peer():
            outp = torch.zeros(T, H, device=cx.dev, dtype=torch.bfloat16)
            outp.index_add_(0, order // k, y_valid * w_sorted[:, None].to(torch.bfloat16))
            return outp

        res = {}
        for name, fn, pfn, nbytes in (("permute", perm, perm_peer, p_bytes), ("unpermute", unperm, unperm_peer, u_bytes)):
            us, ug = cx.eager_us(fn), cx.graph_us(fn)
            pus, pug = cx.eager_us(pfn), cx.graph_us(pfn)
            res[name] = (us, ug, pus, pug)
            cx.row("moe_permute", dict(T=T, k=k, H=H, dtype=dt, op=name), us, ug, gbps=lambda t, b=nbytes: b / t / 1e3,
                   peer="torch argsort+index_select / index_add", peer_us=pug if (pug and ug) else pus,
                   correct=ok and ok_u)
        us = res["permute"][0] + res["unpermute"][0]
        ug_sum = (res["permute"][1] + res["unpermute"][1]) if res["permute"][1] and res["unpermute"][1] else None
        # the pair as it runs in a step: ONE graph holding the permute then the unpermute (the sum of two
        # separately replayed graphs counts the replay's launch latency twice); the peer the same way
        ug = cx.graph_us([perm, unperm])
        ug = ug * 2 if ug else ug_sum
        pug = cx.graph_us([perm_peer, unperm_peer])
        pu = pug * 2 if (pug and ug) else res["permute"][2] + res["unpermute"][2]
        extra = {}
        pair_us = lambda: cx.graph_us([perm, unperm])  # noqa: E731
        if scale is not None and not cx.dry:  # A/B: scales stored by the row copy vs a separate gather kernel
            ab = _flag_ab("FUSED_SCALE_COPY", ("scale_gather_kernel", "fused_scale_copy"), pair_us)
            extra["us_graph_scale_variants"] = ab
            print(f"  permute+unpermute fp8, one graph: {ab}")
        if not cx.dry:  # A/B: the permute's kernel chain as programmatic dependent launches (default) or plain
            ab = _flag_ab("PDL_CHAIN", ("plain_launches", "pdl_chain"), pair_us)
            extra["us_graph_pdl_variants"] = ab
            print(f"  permute+unpermute {dt}, one graph: {ab}")
        if not cx.dry:  # the pair's graph timed device side only (host submission latency excluded)
            ud = graph_device_us(lambda: (perm(), unperm()))
            extra["us_graph_device"] = round(ud, 2) if ud else None
            extra["gbps_device"] = round((p_bytes + u_bytes) / ud / 1e3, 1) if ud else None
        if not cx.dry:  # A/B: token-ordered scatter permute vs destination-ordered gather (PERMUTE_GATHER), each
            # checked first, then alternated 3 times (differences of ~1% are about one run's spread), median each
            ab = {"gather": [], "scatter": []}
            default = MR.PERMUTE_GATHER
            for on in (False, True):
                MR.PERMUTE_GATHER = {**default, x.element_size(): on}
                o_ = moe_permute(x, ids, E, bm, scale)
                good = (torch.equal(o_[2], ref[2]) and (scale is None or torch.equal(o_[1][v], ref[1][v]))
                        and torch.equal(o_[0][v].view(torch.uint8), ref[0][v].view(torch.uint8)))
                print(f"  permute {dt} {'gather' if on else 'scatter'}: exact {good}")
                if not good:
                    ab["gather" if on else "scatter"] = None
            for _ in range(3):
                for on in (False, True):
                    if ab["gather" if on else "scatter"] is None:
                        continue
                    MR.PERMUTE_GATHER = {**default, x.element_size(): on}
                    g1 = cx.graph_us([perm, unperm])
                    if g1:
                        ab["gather" if on else "scatter"].append(round(g1 * 2, 2))
            MR.PERMUTE_GATHER = default
            extra["us_graph_permute_variants"] = {k_: sorted(v_)[len(v_) // 2] if v_ else None for k_, v_ in ab.items()}
            extra["us_graph_permute_variants_all"] = ab
            print(f"  permute+unpermute {dt}, one graph, permute gather / scatter: {ab}")
        if cx.args.sweep:  # (BLOCK_H, warps, rows) → one-graph µs, GB/s of each checked candidate
            extra["copy_sweep_us_graph"] = _sweep_copy(cx, dt, x, ids, E, bm, scale, y, w, o_ref, ref, v,
                                                       p_bytes + u_bytes)
        r = cx.row("moe_permute", dict(T=T, k=k, H=H, dtype=dt, op="permute+unpermute"), us, ug,
                   gbps=lambda t: (p_bytes + u_bytes) / t / 1e3, peer="torch argsort+index_select / index_add",
                   peer_us=pu, correct=ok and ok_u, target_gbps=3400, target_ratio=3.0,
                   graph_method="one graph: permute then unpermute", us_graph_sum_separate=round(ug_sum, 2)
                   if ug_sum else None, fused_scale_copy=MR.FUSED_SCALE_COPY if scale is not None else None,
                   **extra)
        if not cx.dry and cx.args.permute_breakdown:
            r["breakdown_us"] = kernel_breakdown(lambda: (perm(), unperm()))
            print("   breakdown:", r["breakdown_us"])
        r["meets_target"] = bool(r["gbps"] >= 3400 and (r["ratio_vs_peer"] or 0) >= 3.0)


# (BLOCK_H elements, num_warps, tokens per program)
# (the H200 sweep at 7d06960 over (1024, 4) (2048, 4) (1024, 2) (2048, 8) (512, 2), one token each: 245.9-251.5 µs
# fp8 / 296.9-300.0 bf16, within 1% except 512 columns)
COPY_CANDIDATES = [(1024, 4, 1), (1024, 4, 2), (1024, 4, 4), (2048, 4, 2), (2048, 8, 4)]


def _sweep_copy(cx, dt, x, ids, E, bm, scale, y, w, o_ref, ref, v, nbytes):
    """Row-copy / weighted-sum block sizes for permute+unpermute (checked, then timed as one graph)."""
    default, rows_default = MR._copy_config, MR.COPY_ROWS
    res = []
    try:
        for c in COPY_CANDIDATES:
            if cx.time_left() < max(3.0, cx.args.reserve_s):  # (a fixed 20 s skipped the whole sweep in a 19 s budget)
                break
            MR._copy_config = lambda H, eb, c=c: c[:2] if eb < 4 else default(H, eb)  # row copy only (unpermute: eb 4)
            MR.COPY_ROWS = {1: c[2], 2: c[2], 4: c[2]}
            out = MR.moe_permute(x, ids, E, bm, scale, graph_safe=True)
            o = MR.moe_unpermute(y, ref[3], w)
            good = (torch.equal(out[0][:v.numel()][v].view(torch.uint8), ref[0][v].view(torch.uint8))
                    and (scale is None or torch.equal(out[1][:v.numel()][v], ref[1][v]))
                    and bool(torch.allclose(o.float(), o_ref.float(), rtol=1e-2, atol=1e-2)))
            if not good:
                print(f"  copy cfg {c}: WRONG, not timed")
                continue
            fns = [lambda: MR.moe_permute(x, ids, E, bm, scale, graph_safe=True, check_ids=False),
                   lambda: MR.moe_unpermute(y, out[3], w, check_ids=False)]
            ug = None if cx.dry else graph_replay_us(fns, 30.0)
            ug = ug * 2 if ug else cx.eager_us(lambda: [f() for f in fns])
            print(f"  copy cfg {c} {dt}: permute+unpermute graph {ug:.1f} us = {nbytes / ug / 1e3:.0f} GB/s")
            res.append([list(c), round(ug, 2), round(nbytes / ug / 1e3, 1)])
    finally:
        MR._copy_config, MR.COPY_ROWS = default, rows_default
    return res
