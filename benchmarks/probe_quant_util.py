"""Kernel-free helpers of benchmarks/probe_quant_ab.py (moved out to keep it under ~600 lines; same functions,
which probe_quant_ab re-exports): planted inputs and byte comparisons, the torch-cast floor, bytes moved per
variant, PTX stats, and the interleaved rotated-set graph timing (event-timed and queued replays)."""

from __future__ import annotations

import json
import statistics

import torch

from benchmarks.timing import replay_ms, replay_ms_queued

PER = "per_token_group_quant_fp8"
SILU = "silu_mul_quant_fp8"


def planted(m, width, dev, seed):
    g = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn(m, width, device=dev, generator=g)
    x[:, 0] = 400.0  # scale 400/448 in group 0: the small negatives below round to ±0
    x[:, 1:64] = (torch.rand(m, 63, device=dev, generator=g) - 0.75) * 2e-3
    x[0, 64], x[1, 65] = -0.0, 0.0
    x[2, 200], x[3, 300], x[4, 129] = float("inf"), -float("inf"), float("nan")
    x[5, width - 1] = float("nan")  # the up half's last group under SiLU·mul
    return x.to(torch.bfloat16)


def same_bytes(a, b):
    """q or s of two launches equal byte for byte outside NaN, NaN at the same positions."""
    na, nb = torch.isnan(a.float()), torch.isnan(b.float())
    if not torch.equal(na, nb):
        return False
    va = a.contiguous().view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a.contiguous().view(torch.int32)
    vb = b.contiguous().view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b.contiguous().view(torch.int32)
    return torch.equal(va[~na], vb[~nb])


def cast_fn(op, x, q):
    """torch's elementwise cast into q (e4m3): x itself (per_token), or x [M, 2I] bf16 viewed as [M, I] fp32
    (SiLU·mul: the same bytes read and written per row as the quant, scales aside)."""
    src = x.view(torch.float32) if op == SILU else x
    return lambda: q.copy_(src)


def check_cast(op, x):
    q = torch.full((x.shape[0], x.shape[1] // 2 if op == SILU else x.shape[1]), float("nan"),
                   dtype=torch.float8_e4m3fn, device=x.device)
    cast_fn(op, x, q)()
    src = x.view(torch.float32) if op == SILU else x
    ref = src.float().to(torch.float8_e4m3fn)
    return "" if torch.equal(q.view(torch.uint8), ref.view(torch.uint8)) else "cast bytes differ"


def bytes_moved(op, name, m, k, g, programs=0):
    """Bytes a variant itself reads + writes per call (the suite formula counts the quant's)."""
    width = 2 * k if op == SILU else k
    if name.startswith("cast"):
        return m * width * 2 + m * k
    if name.startswith("read"):
        return m * width * 2 + 4 * programs
    if name.startswith("copy"):
        return 2 * ((m * width * 2 + m * k + 4 * m * g) // 2)
    return m * width * 2 + m * k + 4 * m * g


def ptx_stats(h):
    """Registers, spills and global-access counts of a compiled variant (vector widths, cache hints)."""
    try:
        lines = [ln for ln in h.asm["ptx"].splitlines() if "ld.global" in ln or "st.global" in ln]
        count = lambda *keys: sum(all(key in ln for key in keys) for ln in lines)  # noqa: E731
        return dict(regs=h.n_regs, spills=h.n_spills, ld=count("ld.global"), ld_v4=count("ld.global", ".v4"),
                    st=count("st.global"), st_v4=count("st.global", ".v4"), st_v2=count("st.global", ".v2"),
                    evict_first=count("evict_first"), st_cs=count("st.global.cs"))
    except Exception as e:  # a stats failure must not cost the timing
        return dict(ptx_error=f"{type(e).__name__}: {e}"[:120])


def time_round(graphs, order, reps=15, queued=None):
    """{name: per-call µs} of one round (median of `reps` event-timed replays); queued: a dict that also gets each
    name's per-call µs of queued replays (replay_ms_queued), timed right after its event-timed ones."""
    out = {}
    for name in order:
        g, n = graphs[name]
        out[name] = statistics.median(replay_ms(g, reps)) * 1000.0 / n
        if queued is not None:
            queued[name] = statistics.median(replay_ms_queued(g, reps)) * 1000.0 / n
    return out


def interleave(graphs, rounds, queued=None):
    """{name: [per-call µs of each round]}: a discarded warm-up round, then `rounds` rounds in rotated order;
    queued: a dict filled with {name: [per-call µs of the queued replays of each round]}."""
    names = list(graphs)
    per = {n: [] for n in names}
    if queued is not None:
        queued.update({n: [] for n in names})
    time_round(graphs, names)
    for r in range(rounds):
        q = {} if queued is not None else None
        for n, t in time_round(graphs, names[r % len(names):] + names[:r % len(names)], queued=q).items():
            per[n].append(t)
            if q is not None:
                queued[n].append(q[n])
    return per


def summary_rows(suite, case, per, env, rows, base="default", **extra):
    b = statistics.median(per[base])
    for n, ts in per.items():
        t = statistics.median(ts)
        row = dict(suite=suite, case=case, variant=n, us_graph=round(t, 3), us_min=round(min(ts), 3),
                   us_max=round(max(ts), 3), vs_base=round(b / t, 4), rounds=len(ts), **extra)
        row.update(env)
        rows.append(row)
        print(json.dumps(row), flush=True)
