"""MLA decode: where the time goes (split kernel / combine / schedule) and small-batch latency.

    PYTHONPATH=. python benchmarks/bench_mla_small.py [--part all|membound|latency] [--out rows.jsonl]
        [--budget-s 90] [--dry]

* ``membound``: FlashMLA's memory-bound cases at batch 128, s_k 4096, page 64 (h_q·s_q ≤ 32:
  h16 s_q1, h16 s_q2, h32 s_q1; fixed lengths and bench_mla's varlen draw) for each candidate config
  in ``MEMBOUND_VARIANTS``.
* ``latency``: the end-to-end decode shape of DeepSeek-V3 at TP1 — 128 heads (``--heads 64``: TP2), s_q 1 and 2
  (MTP verification), batch 1-8, context 1k/4k — for each config in ``LATENCY_VARIANTS``.
* Every row: the whole op (split + combine) as a CUDA-graph replay (``us_graph``, the time that counts
  in the decode step), each launch alone (``split_us``, ``combine_us``), ``metadata_us``
  (get_mla_metadata, once per step for all layers), correctness (cosine difference ≤ 1e-5 and
  |Δlse| ≤ 1e-3 against the fp32 reference on up to 8 sequences, NaN-poisoned out), and the plain-torch
  absorbed peer. Bytes and FLOPs as in bench_mla.py (suite ``mla_decode``, same case keys).
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
    # it must be on before triton and the kernel modules load (without it every variant failed: "0 active drivers")
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.mla_decode_case import D_QK, D_V, PAGE, cos_diff, make_decode_case, torch_peer_decode  # noqa: E402
from benchmarks.timing import graph_replay_us  # noqa: E402

from tritonseek.benchrun import (StagedRows, git_commit, name_list, out_file, positive_float, positive_int,  # noqa: E402
                                 require_cuda)
from tritonseek.kernels import mla_decode as D  # noqa: E402
from tritonseek.kernels.reference.mla import mla_decode_ref  # noqa: E402

DEVICE = "cuda"
QUICK = False  # --quick: only the whole op's graph time (sweeps)
CHAIN = False  # --chain (with --quick): also the op + mla_absorb_o as one graph (PDL hand-off)


def _c(bh, bn, warps, stages, parts, **kw):
    return dict(BLOCK_H=bh, BLOCK_N=bn, num_warps=warps, num_stages=stages, PARTS_PER_SM=parts, USE_TMA=True, **kw)


# name → config. None = the committed big-batch table for the rows class (as before session 3);
# {"_auto": True} = default_config(s_q, h_q, batch) (with the small-batch table);
# {"_default_plus": {...}} = the big-batch table plus keys.
N128, N256 = 128.5 / 132, 256.5 / 132  # PARTS_PER_SM giving 128 / 256 programs on 132 SMs
MEMBOUND_VARIANTS = {
    "default": None,
    "oh2": {"_default_plus": {"OVERHEAD": 2}},  # per-sequence cost the scheduler charges (default 5 tiles)
    "oh9": {"_default_plus": {"OVERHEAD": 9}},
    "oh14": {"_default_plus": {"OVERHEAD": 14}},
    "m16_256parts_oh0": _c(16, 32, 4, 5, N256, OVERHEAD=0),  # fixed lengths: 2 programs per sequence
}
MEMBOUND_CASES = [(16, 1, False), (16, 1, True), (16, 2, False), (32, 1, False), (32, 1, True)]  # b128, s_k 4096
# The small-batch table before session 14 (scheduled tl kernel + combine kernel), for old-vs-new rows.
OLD_SMALL = [(256, _c(16, 32, 4, 5, 2, COMBINE_ROWS=1)), (1024, _c(32, 64, 8, 5, 1, COMBINE_ROWS=1))]


def _s(bh, bn, warps, stages, programs, **kw):
    """A SMALL-path config (mla_decode_small) whose NUM_SPLITS gives ~programs programs for the case."""
    return dict(dict(SMALL=True, BLOCK_H=bh, BLOCK_N=bn, num_warps=warps, num_stages=stages, USE_TMA=True,
                     COMBINE_ROWS=1, _target_programs=programs), **kw)


# Session 14 W1 (1c9a20b) also ran the combine merged into the split kernel's last program per (sequence,
# head tile), at 64-256 programs with 16/32/64-row tiles: slower everywhere (b1 s_k 1024 19.2-62 µs vs 14.0).
LATENCY_VARIANTS = {
    "old": {"_old": True},  # OLD_SMALL, else the big-batch default (Gluon on Hopper)
    "auto": {"_auto": True},  # default_config now
    "U16_P128": _s(16, 64, 8, 2, 128),
    "U16_P128_cpdl": _s(16, 64, 8, 2, 128, TRIGGER=2, COMBINE_PDL=True),
    "U16_P128_cpdl1": _s(16, 64, 8, 2, 128, TRIGGER=1, COMBINE_PDL=True),
    "U16_P128_all": _s(16, 64, 8, 2, 128, PDL=True, TRIGGER=2, COMBINE_PDL=True),
    "U16_P96": _s(16, 64, 8, 2, 96),
    "U16_P192": _s(16, 64, 8, 2, 192),
    "U16_P128_mt2": _s(16, 64, 8, 2, 128, MIN_TILES=2),
    "U16n32_P128": _s(16, 32, 4, 3, 128),
    "U32_P128": _s(32, 64, 8, 2, 128),
    "U32_P128_cpdl1": _s(32, 64, 8, 2, 128, TRIGGER=1, COMBINE_PDL=True),
    "U32_P256": _s(32, 64, 8, 2, 256),
    "U16_P128_cr4": _s(16, 64, 8, 2, 128, COMBINE_ROWS=4),
}
# Session 3 W1/W2 also ran: PDL combine, TRANSPOSED tiles, 64-row/32-key tiles, MIN_SPAN 8/10, fused
# combine in the split kernel, register-capped 2×8-warp programs: all slower (see mla_decode._TUNED*).
LATENCY_CASES = ([(b, s_k, s_q) for s_q in (1, 2) for s_k in (1024, 4096) for b in (1, 2, 4, 8)]
                 + [(b, s_k, 4) for s_k in (1024, 4096) for b in (1, 2)])  # s_q 4: MTP verify with 3 drafts


def graph_us(fn, min_ms=10.0):
    return graph_replay_us([fn], min_ms)


def measure(q, kv, bt, cs, cfg, timer):
    """One config on one case: correctness, then graph times of the op and of its parts."""
    b, s_q, h, _ = q.shape
    hopper = D._hopper_device(q.device)
    if cfg is not None and cfg.get("_old"):
        cfg = next((dict(c) for bound, c in OLD_SMALL if b * s_q * h <= bound and s_q * h > 64),
                   D.default_config(s_q, h, None, hopper=hopper))
    elif cfg is not None and cfg.get("_auto"):
        cfg = D.default_config(s_q, h, b, hopper=hopper)
    elif cfg is not None and "_target_programs" in cfg:
        cfg = dict(cfg)
        tiles = triton.cdiv(s_q * h, cfg["BLOCK_H"]) * b
        cfg["NUM_SPLITS"] = max(1, min(64, cfg.pop("_target_programs") // tiles))
    elif cfg is None or "_default_plus" in cfg:  # the big-batch table, optionally with overrides
        cfg = dict(D.default_config(s_q, h), **(cfg or {}).get("_default_plus", {}))
    else:
        cfg = dict(cfg)
    md = D.get_mla_metadata(cs, s_q, h, config=cfg)
    out = torch.full((b, s_q, h, D_V), float("nan"), dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h, s_q, dtype=torch.float32, device=q.device)
    split, combine = D._launches(q, kv, bt, cs, D_QK**-0.5, True, D_V, md, out, lse)
    split()
    combine()
    idx = sorted(set(range(min(7, b))) | {int(torch.argmax(cs).item())})
    ro, rlse = mla_decode_ref(q[idx].float(), kv, bt[idx], cs[idx], causal=True, head_dim_v=D_V)
    cd = cos_diff(out[idx].float(), ro.float())
    dl = (lse[idx] - rlse).abs().max().item()
    ok = cd <= 1e-5 and dl <= 1e-3 and not torch.isnan(out).any().item()

    def whole():
        split()
        combine()

    if QUICK:
        t = dict(us_graph=timer(whole), split_us=float("nan"), combine_us=float("nan"), metadata_us=float("nan"))
        if CHAIN:  # the op followed by the decode step's next kernel (W_UV absorb, PDL on Hopper)
            from tritonseek.kernels.mla_absorb import mla_absorb_o

            w_uv = torch.randn(h, 128, D_V, device=q.device, dtype=q.dtype) * 0.05
            o_abs = torch.empty(b * s_q, h, 128, device=q.device, dtype=q.dtype)

            def chain():
                whole()
                mla_absorb_o(out.view(b * s_q, h, D_V), w_uv, o_abs)

            t["chain_us"] = timer(chain)
            t["absorb_us"] = timer(lambda: mla_absorb_o(out.view(b * s_q, h, D_V), w_uv, o_abs))
    else:
        t = dict(us_graph=timer(whole), split_us=timer(split), combine_us=timer(combine),
                 metadata_us=timer(lambda: D.get_mla_metadata(cs, s_q, h, config=cfg)))
    splits = md.split[:, 1].float() if not cfg.get("SMALL") or not cfg.get("FUSED", True) else torch.zeros(1)
    return dict(t, cos_diff=cd, lse_maxdiff=dl, correct=ok, config=cfg, num_parts=md.num_parts,
                mean_splits=round(splits.mean().item(), 2), max_splits=int(splits.max().item()))


def run_cases(cases, variants, env, out_f, rows, deadline, timer, device, tag):
    for batch, s_k, h, s_q, varlen in cases:
        if time.time() > deadline:
            print(f"{tag}: out of time before b{batch} s_k{s_k} h{h} s_q{s_q}", flush=True)
            return
        if varlen:  # bench_mla's lengths ~ N(s_k, s_k/2) clamped ≥ s_q (FlashMLA's test), same seed
            g = torch.Generator().manual_seed(s_k * 10 + s_q)
            lens = [max(int(v), s_q) for v in torch.normal(float(s_k), s_k / 2, (batch,), generator=g).tolist()]
        else:
            lens = [s_k] * batch
        q, kv, bt, cs = make_decode_case(batch, h, s_q, lens, device)
        peer = lambda: torch_peer_decode(q, kv, bt, cs, max(lens), D_QK**-0.5)  # noqa: E731
        try:
            peer_us = timer(peer)
        except Exception as e:  # noqa: BLE001 — the peer is informative only
            print(f"  peer failed: {type(e).__name__}", flush=True)
            peer_us = float("nan")
        sk_sum = sum(lens)
        nbytes = (sk_sum * D_QK + batch * s_q * h * (D_QK + D_V)) * 2
        flops = 2 * s_q * sk_sum * h * (D_QK + D_V)
        for name, cfg in variants.items():
            if time.time() > deadline:
                break
            try:
                m = measure(q, kv, bt, cs, cfg, timer)
            except Exception as e:  # noqa: BLE001 — a failing variant is reported, the others go on
                print(f"  {tag} b{batch} s_k{s_k} h{h} s_q{s_q} {name}: {type(e).__name__} {str(e)[:200]}",
                      flush=True)
                continue
            us = m["us_graph"]
            row = dict(suite="mla_decode", case=dict(batch=batch, s_k=s_k, h_q=h, s_q=s_q, page_size=PAGE,
                                                     varlen=varlen),
                       variant=name, us=None, tflops=round(flops / us / 1e6, 1), gbps=round(nbytes / us / 1e3, 1),
                       peer="torch_absorbed", peer_us=round(peer_us, 2), ratio_vs_peer=round(peer_us / us, 3),
                       **{k: (round(v, 2) if isinstance(v, float) and k.endswith("us") else v) for k, v in m.items()},
                       **env)
            rows.append(row)
            out_f.write(json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}) + "\n")
            out_f.flush()
            print(f"{tag} b{batch:3d} s_k{s_k} h{h} s_q{s_q}{' var' if varlen else ''} {name:22s} {us:8.1f} us (split {m['split_us']:.1f} "
                  f"combine {m['combine_us']:.1f} md {m['metadata_us']:.1f}) {row['gbps']:7.0f} GB/s "
                  f"parts {m['num_parts']} splits {m['mean_splits']}/{m['max_splits']} ok {m['correct']} "
                  f"cos {m['cos_diff']:.1e}", flush=True)
        del q, kv, bt, cs
        if device == "cuda":
            torch.cuda.empty_cache()


def _compile_configs(variants) -> list[dict]:
    """The distinct launch configs the latency variants resolve to (for the parallel precompile)."""
    hop = dict(hopper=True)
    out = []
    for cfg in variants:
        if cfg is None or "_default_plus" in cfg:
            continue
        if cfg.get("_old"):
            out += [c for _, c in OLD_SMALL] + [D.default_config(s_q, 128, None, **hop) for s_q in (1, 2, 4)]
        elif cfg.get("_auto"):
            out += [D.default_config(s_q, 128, b, **hop) for s_q in (1, 2, 4) for b in (1, 2, 4, 8)]
        elif "_target_programs" in cfg:
            out.append(dict({k: v for k, v in cfg.items() if k != "_target_programs"}, NUM_SPLITS=2))
        else:
            out.append(cfg)
    return out


def precompile_variants(variants) -> None:
    """Compile each distinct split-kernel config in parallel processes (fills Triton's disk cache)."""
    from benchmarks import bench_mla as B

    seen, tasks = set(), []
    for cfg in _compile_configs(variants):
        key = tuple(sorted((k, v) for k, v in cfg.items() if k not in ("MIN_SPAN", "PARTS_PER_SM", "NUM_SPLITS")))
        if key not in seen:
            seen.add(key)
            tasks.append(("decode", cfg, 128, 1))
    B.PRECOMPILE_TIMEOUT_S = 45.0  # a hung compile must not eat the run
    B.precompile(tasks)


@triton.jit
def _noop_kernel(x_ptr):
    pass


def launch_floor(env, out_f, rows) -> None:
    """Graph replay of 1 and 2 empty kernels: the fixed cost under every us_graph figure here."""
    x = torch.zeros(1, device="cuda")

    def one():
        _noop_kernel[(1,)](x)

    for n in (1, 2, 1, 2):  # the first replays of the run also warm the timing path: keep the second pair
        us = graph_replay_us([lambda: [one() for _ in range(n)]], 10.0)
        row = dict(suite="mla_decode_floor", case=dict(kernels=n), us=None, us_graph=round(us, 2), **env)
        rows.append(row)
        out_f.write(json.dumps(row) + "\n")
        print(f"floor: graph of {n} empty kernel(s) {us:.2f} us", flush=True)


def _latency_cases(text: str) -> list[tuple[int, int, int]]:
    """``--cases``: b:s_k:s_q,... with b, s_k, s_q >= 1."""
    cases = []
    for c in text.split(","):
        parts = c.split(":")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"{c!r} is not b:s_k:s_q")
        cases.append(tuple(positive_int(x) for x in parts))
    return cases


def main():
    global DEVICE
    p = argparse.ArgumentParser(description="MLA decode time breakdown and small-batch latency (see the module docstring)")
    p.add_argument("--part", default="all", choices=["all", "membound", "latency"])
    p.add_argument("--out", default="mla_small_rows.jsonl", type=out_file,
                   help="JSON rows; an existing OUT is replaced when the run ends (rows go to OUT.partial meanwhile: an "
                        "interrupted or failed run keeps the old OUT), a new one gets each row as it is measured")
    p.add_argument("--budget-s", type=positive_float, default=1e9)
    p.add_argument("--dry", action="store_true", help="tiny CPU run through Triton's interpreter (turned on by this "
                   "flag); PDL / TRIGGER / COMBINE_PDL are off there (no griddepcontrol on CPU): those rows run the "
                   "same kernels without them")
    p.add_argument("--quick", action="store_true", help="time only the whole op (no per-launch / metadata times)")
    p.add_argument("--chain", action="store_true", help="--quick plus the op followed by mla_absorb_o in one graph")
    p.add_argument("--variants", default=None, type=name_list(LATENCY_VARIANTS), help="comma-separated LATENCY_VARIANTS names (default: all)")
    p.add_argument("--cases", default=None, type=_latency_cases,
                   help="latency cases as b:s_k:s_q,... (default: LATENCY_CASES)")
    p.add_argument("--heads", type=positive_int, default=128, help="latency cases' h_q (128 = TP1, 64 = TP2)")
    args = p.parse_args()
    global QUICK, CHAIN
    QUICK = args.quick or args.chain
    CHAIN = args.chain
    lat_all = {k: v for k, v in LATENCY_VARIANTS.items() if not args.variants or k in args.variants}
    lat_list = args.cases or LATENCY_CASES
    t0 = time.time()
    deadline = t0 + args.budget_s
    if args.dry and not D.interpreter_active():
        p.error("--dry runs the kernels on CPU through Triton's interpreter, which was off when they were defined "
                f"(TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}); run with TRITON_INTERPRET=1")
    if not args.dry:
        require_cuda("bench_mla_small")
    if args.dry:
        DEVICE = "cpu"

        def timer(fn):
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e6

        gpu = "cpu-dry"
        mem_cases = [(2, 128, 16, 1, True)]
        lat_cases = [(1, 128, args.heads, 1, False)]
        mem_var = dict(list(MEMBOUND_VARIANTS.items())[:2])
        lat_var = lat_all if args.variants else dict(list(LATENCY_VARIANTS.items())[:2])
    else:
        timer = graph_us
        gpu = torch.cuda.get_device_name(0)
        mem_cases = [(128, 4096, h, s_q, v) for h, s_q, v in MEMBOUND_CASES]
        lat_cases = [(b, s_k, args.heads, s_q, False) for b, s_k, s_q in lat_list]
        mem_var, lat_var = MEMBOUND_VARIANTS, lat_all
        precompile_variants(list(lat_var.values()) + (list(mem_var.values()) if args.part != "latency" else []))
        print(f"precompile done ({time.time() - t0:.0f}s)", flush=True)
    env = dict(gpu=gpu, torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), dry=args.dry,
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows = []
    with StagedRows(args.out) as out_f:
        if not args.dry:
            launch_floor(env, out_f, rows)
        if args.part in ("all", "latency"):
            run_cases(lat_cases, lat_var, env, out_f, rows, deadline, timer, DEVICE, "lat")
        if args.part in ("all", "membound"):
            run_cases(mem_cases, mem_var, env, out_f, rows, deadline, timer, DEVICE, "mem")
    print(f"\n{'case':30s} {'variant':24s} {'us_g':>8s} {'split':>7s} {'comb':>6s} {'md':>5s} {'GB/s':>6s} ok")
    for r in rows:
        if r["suite"] != "mla_decode":
            continue
        c = r["case"]
        name = f"b{c['batch']} s_k{c['s_k']} h{c['h_q']} s_q{c['s_q']}{' var' if c['varlen'] else ''}"
        print(f"{name:30s} {r['variant']:24s} {r['us_graph']:8.1f} "
              f"{r['split_us']:7.1f} {r['combine_us']:6.1f} {r['metadata_us']:5.1f} {r['gbps']:6.0f} {r['correct']}"
              + (f" chain {r['chain_us']:.1f} (absorb {r['absorb_us']:.1f})" if "chain_us" in r else ""))
    print(f"total {time.time() - t0:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
