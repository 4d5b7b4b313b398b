"""WHOLE_COST: the balanced split-KV cut with an extra charge on sequences that lie whole inside one program
(issue 3, s_k 4096 varlen on the Gluon split kernel; session 22).

Why: H200 DIAG stamps (s21 W1 at f3051ee, b128 s_k 4096 varlen h16 s_q2, the balanced fallback of the packed
schedule, OVERHEAD 2) put the same programs last in every rep: those holding a whole sequence after a piece of the
previous one (segments end-piece, whole, start-piece). Per program (two reps, µs end; tiles): E+S 153.3 (63),
M (one middle piece) 152.9 (65), W+S 150.9 (61), E+W+S 157.2 (61), E+W+W 162.5 (61: the grid's last). Relative to
its tiles (2.23 µs each) a start piece costs ~2.7 µs, a whole sequence that is not the program's first segment
~7.4 µs (its first-tile wait, masked last tile, unsplit bf16 epilogue, switch), but the cut charges both OVERHEAD
(2 tiles = 4.5 µs). Charging every sequence more (OVERHEAD 4, s21) lost: it also moves tiles onto the programs
without a sequence start (M, E), which were not late.

Rule (``mla_schedule_whole_ref``; device: ``_balanced_schedule`` with WHOLE_ITERS): cut with OVERHEAD; a sequence
whose first and last tiles fall in the same program, after a piece of another sequence there (a whole sequence that
starts its program cost 9.8 µs against 8.2 for an end piece: OVERHEAD covers it), gets overhead OVERHEAD + whole;
recut; ``iters`` such rounds,
then the final cut (whole status can change with the cut: a heuristic fixed-point, not an optimum). Only the
balanced fallback of SCHED="packed" (varied batches) changes; packed results (fixed lengths) are untouched.

``schedule_whole`` recomputes an ``MLAMetadata``'s schedule in place this way (probe / A/B use; ``get_mla_metadata``
does not read a WHOLE_COST key yet: wiring it is one call there, left to the owner of mla_decode.py).
"""

from __future__ import annotations

import torch

from tritonseek.kernels._host import next_pow2
from tritonseek.kernels._utils import interpreter_active
from tritonseek.kernels.mla_decode_config import _PACKED_CAPS, _packed_args
from tritonseek.kernels.mla_decode_tiles import _mla_schedule_packed_kernel
from tritonseek.kernels.reference.mla import _packed_place, mla_schedule_packed_ref


def _falls_back(nt: list[int], num_parts: int, seg: int, split_cost: int, min_piece: int, min_fit: int,
                fill_tol: int, num_candidates: int = _PACKED_CAPS) -> bool:
    # mla_schedule_packed_ref's rule: the packed cap more than fill_tol % over the filled walk's → balanced cut
    if fill_tol < 0:
        return False
    total = sum(n + seg for n in nt if n > 0)
    lb = max(-(-total // num_parts), seg + split_cost + min_piece, 1)
    step = max(1, -(-((max(nt) if nt else 0) + seg) // (num_candidates - 1)))

    def programs(cap, mf):
        p = fill = 0
        for n in nt:
            if n > 0:
                moved, _, k, fill = _packed_place(n, cap, fill, seg, split_cost, min_piece, mf)
                p += int(moved) + k
        return p + 1

    caps = [lb + i * step for i in range(num_candidates)]
    cap = next((c for c in caps if programs(c, min_fit) <= num_parts), caps[-1])
    cap_fill = next((c for c in caps if programs(c, min_piece) <= num_parts), caps[-1])
    return cap * 100 > cap_fill * (100 + fill_tol)


def balanced_whole_ref(cache_seqlens: torch.Tensor, num_parts: int, block_n: int, overhead: int, min_span: int,
                       whole: int, iters: int, even: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The balanced cut (``reference.mla.mla_schedule_ref`` without STEAL) with whole sequences charged ``whole``
    more: sched [num_parts, 4] and split [batch, 2] int32 in that format (see the module docstring for the rule).
    even: program p's span is [⌊p·total/num_parts⌋, ⌊(p+1)·total/num_parts⌋) (min_span ignored) instead of
    [p·per, (p+1)·per) with per = max(⌈total/num_parts⌉, min_span).
    cache_seqlens [batch] int; num_parts ≥ 1, block_n ≥ 1, overhead ≥ 0, min_span ≥ 1, whole ≥ 0, iters ≥ 0 ints."""
    lens = [max(int(x), 0) for x in cache_seqlens.tolist()]
    nt = [-(-x // block_n) for x in lens]
    batch = len(nt)
    ovh = [overhead] * batch

    def cut(ovh):
        end, acc = [], 0
        for n, o in zip(nt, ovh):
            acc += n + o if n > 0 else 0
            end.append(acc)
        per = max(-(-acc // num_parts), min_span)
        t0 = min(per * num_parts, acc)
        small = max(acc - t0, 1)
        if even:
            return end, acc, (lambda x: ((x + 1) * num_parts + acc - 1) // max(acc, 1) - 1), \
                (lambda p: p * acc // num_parts)
        # as mla_schedule_ref's (positions past the programs' spans: an empty sequence at the end)
        return end, acc, (lambda x: x // per if x < t0 else num_parts + (x - t0) // small), (lambda p: p * per)

    for _ in range(iters):
        end, _, span_of, span_start = cut(ovh)
        # whole in one program p and not its first segment (p's span starts before the sequence's cost)
        ovh = [overhead + (whole if n > 0 and span_of(e - n) == span_of(e - 1) and span_start(span_of(e - n)) < e - n - o
                           else 0) for n, e, o in zip(nt, end, ovh)]
    end, total, span_of, span_start = cut(ovh)

    split = []
    for n, o, e in zip(nt, ovh, end):
        first = span_of(e - n if n > 0 else e + o)
        split.append([first, span_of(e - 1) - first + 1 if n > 0 else 0])
    cuts = []
    for p in range(num_parts + 1):
        pos = min(span_start(p), total)
        b = sum(1 for e in end if e <= pos)
        cuts.append((b, max(pos - (end[b] - nt[b]), 0) if b < batch else 0))
    sched = [[*cuts[p], *cuts[p + 1]] for p in range(num_parts)]
    return torch.tensor(sched, dtype=torch.int32).view(num_parts, 4), torch.tensor(split, dtype=torch.int32).view(batch, 2)


def mla_schedule_whole_ref(cache_seqlens: torch.Tensor, num_parts: int, cfg: dict, whole: int,
                           iters: int, even: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``schedule_whole`` computes for an ``mla_decode`` config with SCHED="packed" (its FILL_TOL rule and
    the balanced fallback with whole sequences charged ``whole`` more): (sched [num_parts, 4], split [batch, 2])."""
    seg, split_cost, min_piece, min_fit, fill_tol = _packed_args(cfg)
    overhead, min_span = int(cfg.get("OVERHEAD", 5)), int(cfg.get("MIN_SPAN", 1))
    block_n = int(cfg["BLOCK_N"])
    nt = [-(-max(int(x), 0) // block_n) for x in cache_seqlens.tolist()]
    if _falls_back(nt, num_parts, seg, split_cost, min_piece, min_fit, fill_tol):
        return balanced_whole_ref(cache_seqlens, num_parts, block_n, overhead, min_span, whole if iters else 0,
                                  iters if whole else 0, even)
    return mla_schedule_packed_ref(cache_seqlens, num_parts, block_n, seg, split_cost, min_piece, min_fit, fill_tol,
                                   overhead, min_span)


def schedule_whole(metadata, cache_seqlens: torch.Tensor, whole: int, iters: int = 2, even: bool = False) -> None:
    """Recompute ``metadata.sched`` / ``metadata.split`` (an ``MLAMetadata`` from ``get_mla_metadata`` for these
    cache_seqlens) in place with whole sequences charged ``whole`` more tiles in the balanced fallback
    (``iters`` rounds; see the module docstring); one launch of the packed schedule kernel, on the device, no host
    sync. even: the fallback's spans cut at ⌊p·total/programs⌋ (no remainder program; needs MIN_SPAN 1). whole = 0
    or iters = 0 without even reproduce ``get_mla_metadata``'s schedule.
    Raises ValueError: a config that is not SCHED="packed", or with STEAL / SMALL, or MIN_SPAN > 1 with even; whole or
    iters not an int ≥ 0 (iters ≤ 8); cache_seqlens not the metadata's batch on a CUDA device or under the
    interpreter.
    """
    cfg = metadata.config
    if cfg.get("SCHED") != "packed" or cfg.get("STEAL") or cfg.get("SMALL"):
        raise ValueError(f"schedule_whole needs a SCHED='packed' config without STEAL/SMALL, got {cfg}")
    if even and int(cfg.get("MIN_SPAN", 1)) != 1:
        raise ValueError(f"schedule_whole(even=True) needs MIN_SPAN 1, got {cfg.get('MIN_SPAN')}")
    for name, v, hi in (("whole", whole, 4096), ("iters", iters, 8)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise ValueError(f"{name} must be an int in 0..{hi}, got {v!r}")
    batch = metadata.split.shape[0]
    if cache_seqlens.shape != (batch,) or cache_seqlens.dtype != torch.int32:
        raise ValueError(f"cache_seqlens must be [{batch}] int32 (the metadata's batch), got "
                         f"{tuple(cache_seqlens.shape)} {cache_seqlens.dtype}")
    if not (cache_seqlens.device.type == "cuda" or interpreter_active()) or batch == 0:
        raise ValueError("schedule_whole runs the schedule kernel: a CUDA tensor (or the interpreter) and batch ≥ 1")
    dev = cache_seqlens.device
    num_parts = metadata.num_parts
    end = torch.empty(batch, dtype=torch.int64, device=dev)
    ws = torch.empty(2 * batch * _PACKED_CAPS + 3 * batch, dtype=torch.int32, device=dev)
    _mla_schedule_packed_kernel[(1,)](
        cache_seqlens, metadata.sched, metadata.split, ws, end, batch, num_parts, *_packed_args(cfg),
        int(cfg.get("OVERHEAD", 5)), int(cfg.get("MIN_SPAN", 1)), batch.bit_length(), num_parts, 0,
        BLOCK_N=int(cfg["BLOCK_N"]), BLOCK_B=min(128, max(16, next_pow2(batch))), BLOCK_C=_PACKED_CAPS,
        BLOCK_P=min(1024, max(16, next_pow2(num_parts + 1))), UNROLL=16, whole=whole,
        WHOLE_ITERS=iters if whole else 0, EVEN_CUT=bool(even), num_warps=4,
    )
