"""Grouped block-scaled FP8 GEMMs for the MoE experts (DeepGEMM m_grouped contiguous / masked semantics).

out[m, n] = Σ_kb a_scale[m, kb] · b_scale[g, n // 128, kb] · Σ_{k in block kb} a[m, k] · b[g, n, k],
g = the expert of row m (contiguous: m_indices[m]; masked: the group the row sits in).

Tile design (same machinery as kernels/fp8_gemm.py): A and B tiles arrive through TMA tensor
descriptors (K contiguous, "NT"), BLOCK_K = 128 = the scale granularity, and each K step makes
a fresh fp32 tensor-core product that is promoted into the fp32 accumulator with
a_scale (per row) × b_scale (per 128 columns). B is viewed as one [E·N, K] matrix, so a tile
of expert g starts at row g·N; rows a tile reads past N (tails) only feed output columns that are
never stored.

* contiguous: a [M, K] holds the experts' segments back to back, each a multiple of the
  alignment (128 rows, ``M_ALIGNMENT``); one tile = one expert, taken as the max of the tile's
  m_indices. Tiles whose rows are all padding (−1) run no K loop and store zeros; rows whose
  m_indices disagree with the tile's expert (a misaligned layout) are stored as NaN, never as
  another expert's product. Persistent grid (one program per SM, tiles strided, GROUP_M swizzle).
* masked: a [E, M_max, K] with masked_m [E] valid rows per group, for decode under CUDA graphs: its
  kernels and launcher live in grouped_gemm_masked.py (``grouped_fp8_gemm_masked`` is importable from
  here too); it shares this module's ``_fp8_tile`` K loop, config table and input checks.
"""

from __future__ import annotations


import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels._utils import check_bool, check_config, check_index_range, check_runnable_device, check_tensor
from tritonseek.kernels._host import cdiv, sm_count_at

BLOCK_K = 128
M_ALIGNMENT = 128  # segment alignment the contiguous layout must honour (moe_permute block_m)
_OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# Winning configs from the H200 sweeps (benchmarks/bench_moe.py --sweep), keyed by (layout, N, K, M class).
# Fields: BLOCK_M, BLOCK_N, num_warps, num_stages, GROUP_M, GRID_MULT (contiguous: persistent programs per SM).
# Sweep at commit 03b7b8e (every candidate checked first; contiguous ranked by eager time, masked by CUDA-graph
# replay), confirmed in the runs at 36ecc83 / 3373930:
# * contiguous anchors (4×8192, 8×4096): (4096, 7168) 128×128 / 8 warps / 4 stages (2156–2216 µs; 64-row tiles
#   with 2–3 programs per SM 2376–2812, warp-specialized K loop 2022–2384, inconsistent); (7168, 2048) 64×128 /
#   4 warps / 4 stages / 2 per SM 1196–1252 µs against 1264–1298 for 128×128.
# * contiguous, the model's prefill layout (T=4096 top-8 over 256 experts, 128-aligned segments, M/E ≈ 191 =
#   class "mid"): at (4096, 7168) 128×128 took 3790–4070 µs against 4805 for 64×128 / 2 per SM, so "mid" uses
#   128×128 for both shapes ((7168, 2048) was not measured on that layout).
# * masked anchors (1×1024, 2×512, 4×256): (4096, 7168) 128×128 / 8 warps / 4 stages (70.6–73.0 µs, others
#   74–90); (7168, 2048) 64×128 / 4 warps / 3 stages (41.5–44.3 µs against 49.4–51.0 for 128×128).
# * masked decode (256 experts, T ∈ {1, 8, 64, 256}): 64×128 / 4 warps / 3 stages best or within 1% except
#   T=256 (4 stages 1% faster); T=8: 380 / 179 µs against 428 / 201 with 4 stages.
# * masked decode, class "decode" (≤ 4 rows per group on average: the model's masked layout, T ≤ 128): swapped
#   16-row tiles (SWAP_AB) / 4 warps / 5–6 stages against the 64×128 tiles above, graph replay, real top-8 routing
#   over 256 experts, (4096, 7168) / (7168, 2048), run at ab11934 (candidates of the same run, neither timed
#   first: at T ≤ 8 the first candidate timed in a case ran 7–15% slower in both runs, at T ≥ 16 not — cause
#   not identified — so the 045ab41 sweep, where the 64×128 tiles went first, overstates the gain): T=1 65.0 / 43.7 µs vs 66.7 / 47.7; T=2 119.0 / 70.2 vs 133.6 / 72.8;
#   T=4 213.1 / 119.4 vs 227.6 / 123.0; T=8 399.7 / 192.6 vs (eager 409) / 197.3; T=16 (7168, 2048) 350.8 vs
#   362.9; T=64 / 128 3–4% (eager). 6 stages (the default) against 4: equal or better in 5 of 6 cases at 045ab41.
#   Split K (2–8 programs per tile, last arrival sums the partials) and stream-K (2–3 persistent programs per
#   SM, equal K-step ranges) never won (T=1 (4096, 7168) 66.5–71 µs) and were removed (code at f837a2e): what
#   cost at T=1 was the 64-row activation boxes (1 useful row; 243 registers → 2 CTAs per SM), not a tail.
_BIG_N_SMALL_K = dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=4, GROUP_M=8, GRID_MULT=2)
_BASE = dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=4, GROUP_M=8)
_MASKED_64 = dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, GROUP_M=8)
_MASKED_DECODE = dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=6, SWAP_AB=True)
_TUNED: dict[tuple[str, int, int, str], dict] = {
    **{("contiguous", 4096, 7168, c): _BASE for c in ("mid", "large")},
    ("contiguous", 7168, 2048, "mid"): _BASE,
    ("contiguous", 7168, 2048, "large"): _BIG_N_SMALL_K,
    **{("masked", 4096, 7168, c): _BASE for c in ("mid", "large")},
    **{("masked", 7168, 2048, c): _MASKED_64 for c in ("mid", "large")},
    ("masked", 4096, 7168, "small"): _MASKED_64,
    ("masked", 7168, 2048, "small"): _MASKED_64,
}


def _m_class(m_per_group: int) -> str:
    if m_per_group <= 4:
        return "decode"
    return "small" if m_per_group <= 64 else ("mid" if m_per_group <= 512 else "large")


def get_config(layout: str, m_per_group: int, n: int, k: int) -> dict:
    """Launch config: the tuned entry for (layout, N, K, M class), else a heuristic.

    Contiguous configs always use BLOCK_M ∈ {64, 128} (a divisor of M_ALIGNMENT).
    """
    hit = _TUNED.get((layout, n, k, _m_class(m_per_group)))
    if hit is not None:
        cfg = dict(hit)
    elif layout == "masked" and m_per_group <= 4:
        cfg = dict(_MASKED_DECODE)
    elif layout == "masked" and m_per_group <= 64:
        cfg = dict(_MASKED_64)
    else:
        cfg = dict(_BASE)
    if layout == "masked":
        cfg.pop("GROUP_M", None)  # the masked kernels have no grouped tile order (they reject the key)
    return cfg


_num_sms = sm_count_at  # SMs of a CUDA device index (cached once per index in _host)


def _num_programs(device: torch.device) -> int:
    if device.type != "cuda":
        return 3  # interpreter: a small persistent grid still exercises the multi-tile loop
    return _num_sms(device.index if device.index is not None else torch.cuda.current_device())


@triton.jit
def _fp8_tile(
    a_desc, b_desc, a_row, b_row, sa_ptrs, sb_ptrs, sa_mask0, sb_mask0, row_ok, sb_mask, kb_lo, kb_hi,
    stride_ask, stride_bsk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP_AB: tl.constexpr, WS: tl.constexpr,
    STAGES: tl.constexpr = None,
):
    # One fp32 tile over K blocks [kb_lo, kb_hi) (both layouts): a rows from a_row, weight rows from b_row;
    # the scales of K block kb+1 are loaded while block kb is multiplied (never between two MMAs).
    # sa_mask0 / sb_mask0 guard the first scale loads, row_ok / sb_mask the later ones.
    # SWAP_AB: the tile is [BLOCK_N, BLOCK_M] = b·aᵀ (weight rows fill the tensor-core M dimension, the
    # few token rows are its N dimension). WS: Triton warp specialization of the K loop.
    sa = tl.load(sa_ptrs + kb_lo * stride_ask, mask=sa_mask0, other=0.0)
    sb = tl.load(sb_ptrs + kb_lo * stride_bsk, mask=sb_mask0, other=0.0)
    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in tl.range(kb_lo, kb_hi, num_stages=STAGES, warp_specialize=WS):
        a = a_desc.load([a_row, kb * BLOCK_K])
        b = b_desc.load([b_row, kb * BLOCK_K])
        more = kb + 1 < kb_hi
        sa_next = tl.load(sa_ptrs + (kb + 1) * stride_ask, mask=row_ok & more, other=0.0)
        sb_next = tl.load(sb_ptrs + (kb + 1) * stride_bsk, mask=sb_mask & more, other=0.0)
        if SWAP_AB:
            blk = tl.dot(b, a.T)
            if BLOCK_N <= 128:
                acc += blk * (sa * sb)[None, :]
            else:
                acc += blk * (sb[:, None] * sa[None, :])
        else:
            blk = tl.dot(a, b.T)
            if BLOCK_N <= 128:
                acc += blk * (sa * sb)[:, None]
            else:
                acc += blk * (sa[:, None] * sb[None, :])
        sa = sa_next
        sb = sb_next
    return acc


@triton.jit
def _grouped_fp8_contiguous_kernel(
    a_desc, b_desc, a_scale_ptr, b_scale_ptr, m_indices_ptr, out_ptr,
    M, N, E, num_k_blocks,
    stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, stride_om, stride_on,
    NUM_PROGRAMS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, FLATTEN: tl.constexpr, WS: tl.constexpr,
):
    # a_desc:  TMA over a [M, K] e4m3 (K contiguous), box [BLOCK_M, BLOCK_K]
    # b_desc:  TMA over b viewed [E*N, K] e4m3, box [BLOCK_N, BLOCK_K]
    # a_scale: [M, KB] fp32 (stride_asm, stride_ask); b_scale: [E, NB, KB] fp32 (stride_bse/bsn/bsk)
    # m_indices: [M] int32, −1 = padding; out: [M, N] (stride_om, stride_on)
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_tiles = num_pid_m * num_pid_n
    for tile_id in tl.range(pid, num_tiles, NUM_PROGRAMS, flatten=FLATTEN):
        group_id = tile_id // (GROUP_M * num_pid_n)
        first_m = group_id * GROUP_M
        group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + (tile_id % group_rows)
        pid_n = (tile_id % (GROUP_M * num_pid_n)) // group_rows
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        rm = off_m + tl.arange(0, BLOCK_M)
        rn = off_n + tl.arange(0, BLOCK_N)
        mi = tl.load(m_indices_ptr + rm, mask=rm < M, other=-1)
        expert = tl.max(mi, axis=0)
        ok = (expert >= 0) & (expert < E)
        k_hi = tl.where(ok, num_k_blocks, 0)  # an all-padding tile runs no K loop
        ge = tl.where(ok, expert, 0).to(tl.int64)
        b_row = (ge * N + off_n).to(tl.int32)
        row_ok = mi == expert
        sa_ptrs = a_scale_ptr + rm * stride_asm
        if BLOCK_N <= 128:
            sb_ptrs = b_scale_ptr + ge * stride_bse + (off_n // 128) * stride_bsn
            sb_mask = ok
        else:
            sb_ptrs = b_scale_ptr + ge * stride_bse + (rn // 128) * stride_bsn
            sb_mask = ok & (rn < N)
        acc = _fp8_tile(a_desc, b_desc, off_m, b_row, sa_ptrs, sb_ptrs, row_ok & ok, sb_mask, row_ok, sb_mask, 0, k_hi,
                        stride_ask, stride_bsk, BLOCK_M, BLOCK_N, BLOCK_K, False, WS)
        # padding rows → 0; rows of another expert than the tile's (misaligned layout) → NaN
        acc = tl.where(row_ok[:, None] & ok, acc, tl.where((mi < 0)[:, None], 0.0, float("nan")))
        o_ptrs = out_ptr + rm.to(tl.int64)[:, None] * stride_om + rn[None, :] * stride_on
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _check_b(b: torch.Tensor, b_scale: torch.Tensor, device: torch.device) -> tuple[int, int, int]:
    check_tensor("b", b, dtype=torch.float8_e4m3fn, ndim=3, device=device)
    check_tensor("b_scale", b_scale, dtype=torch.float32, ndim=3, device=device)
    E, N, K = b.shape
    if N == 0:  # (its strides are arbitrary: it was refused as "must be K-contiguous", tester s20)
        raise ValueError("b has N = 0 (no output columns); a GEMM needs N >= 1")
    if b.stride(2) != 1 or b.stride(0) != N * b.stride(1):
        raise ValueError(f"b [E, N, K] must be K-contiguous with experts stacked densely, got strides {b.stride()}")
    if K == 0:
        raise ValueError("b has K = 0 (no reduction dimension); a GEMM needs K >= 1")
    if b.stride(1) % 16 or b.data_ptr() % 16:
        raise ValueError(f"b needs a 16-byte aligned base and row stride for TMA (K % 16 == 0), got strides {b.stride()}")
    want = (E, cdiv(N, 128), cdiv(K, BLOCK_K))
    if tuple(b_scale.shape) != want:
        raise ValueError(f"b_scale must be [E, ceil(N/128), ceil(K/128)] = {want}, got {tuple(b_scale.shape)}")
    return E, N, K


# Keys and values a caller's ``grouped_fp8_gemm_contiguous(config=...)`` may hold (GRID_MULT = persistent programs
# per SM: 0 or less launched an empty grid, leaving ``out`` unwritten; GROUP_M 0 divided by zero in the tile order)
CONTIGUOUS_CONFIG_SPEC: dict = dict(
    BLOCK_M=(16, 32, 64, 128), BLOCK_N=(16, 32, 64, 128, 256), num_warps=(1, 2, 4, 8, 16), num_stages=range(1, 9),
    GROUP_M=range(1, 1025), GRID_MULT=range(1, 65), FLATTEN=bool, WS=bool,
)


def _check_cfg(cfg: dict, contiguous: bool, keys: tuple[str, ...] = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")) -> None:
    """A caller's launch config: every key present as a positive int, tile sizes and warps powers of two."""
    for key in keys:
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (key != "num_stages" and v & (v - 1)):
            raise ValueError(f"config[{key!r}] must be a positive int{'' if key == 'num_stages' else ' power of two'}, "
                             f"got {v!r} (config {cfg!r})")
    if "BLOCK_N" not in keys:
        return
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    if bn > 128 and bn % 128 or bn < 128 and 128 % bn:
        raise ValueError(f"config BLOCK_N={bn} must divide or be a multiple of 128")
    if contiguous and M_ALIGNMENT % bm:
        raise ValueError(f"config BLOCK_M={bm} must divide the contiguous alignment {M_ALIGNMENT}")


def check_contiguous_operands(a, a_scale, b, b_scale, m_indices, out_dtype, out):
    """Validate the contiguous layout's operands (shared by the tl and Gluon launchers; ``a`` already
    checked as a 2-D e4m3 tensor) and allocate ``out`` when None. Returns (E, N, K, M, out)."""
    dev = a.device
    check_tensor("a_scale", a_scale, dtype=torch.float32, ndim=2, device=dev)
    check_tensor("m_indices", m_indices, dtype=torch.int32, ndim=1, device=dev)
    if out_dtype not in _OUT_DTYPES:
        raise TypeError(f"out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}")
    E, N, K = _check_b(b, b_scale, dev)
    M = a.shape[0]
    if a.shape[1] != K:
        raise ValueError(f"a is [M, K] = {tuple(a.shape)}; K must match b [E, N, K] = {tuple(b.shape)}")
    if a.stride(1) != 1 or a.stride(0) % 16 or a.data_ptr() % 16:
        raise ValueError(f"a must be row-major with 16-byte aligned rows for TMA, got strides {a.stride()}")
    kb = cdiv(K, BLOCK_K)
    if tuple(a_scale.shape) != (M, kb):
        raise ValueError(f"a_scale must be [M, ceil(K/128)] = {(M, kb)}, got {tuple(a_scale.shape)}")
    if m_indices.shape[0] != M or m_indices.stride(0) != 1:
        raise ValueError(f"m_indices must be a contiguous [{M}] int32 tensor, got {tuple(m_indices.shape)}")
    if dev.type == "cpu":  # ids in [−1, E): free to check here (no device sync); on CUDA only with check_alignment
        check_index_range("m_indices", m_indices, -1, E)
    if out is None:
        out = torch.empty(M, N, dtype=out_dtype, device=dev)
    else:
        check_tensor("out", out, dtype=out_dtype, ndim=2, device=dev, output=True)
        if tuple(out.shape) != (M, N):
            raise ValueError(f"out must be [M, N] = {(M, N)}, got {tuple(out.shape)}")
    return E, N, K, M, out


def check_contiguous_alignment(m_indices: torch.Tensor, E: int) -> None:
    """check_alignment=True of the contiguous launchers (one host sync): ids in [−1, E) and every
    M_ALIGNMENT-row tile holding rows of at most one expert."""
    M = m_indices.shape[0]
    if M == 0:
        return
    check_index_range("m_indices", m_indices, -1, E)
    mi = m_indices.long().cpu()
    pad = (-M) % M_ALIGNMENT
    tiles = torch.cat([mi, mi.new_full((pad,), -1)]).view(-1, M_ALIGNMENT)
    top = tiles.max(dim=1, keepdim=True).values
    if ((tiles != top) & (tiles >= 0)).any():
        raise ValueError(f"m_indices segments are not aligned to {M_ALIGNMENT} rows (a tile mixes experts)")


def grouped_fp8_gemm_contiguous(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    m_indices: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    out: torch.Tensor | None = None,
    check_alignment: bool = False,
    config: dict | None = None,
) -> torch.Tensor:
    """out[m] = (a[m]·a_scale[m]) @ (b[g]·b_scale[g])ᵀ with g = m_indices[m]; 0 where m_indices[m] = −1.

    a: [M, K] float8_e4m3fn, row-major (16-byte aligned rows, K % 16 == 0): the experts' rows back to
        back, each expert's segment starting at a multiple of 128 rows (``M_ALIGNMENT``, = moe_permute's block_m).
    a_scale: [M, ceil(K/128)] fp32 1×128 group scales, any strides (MN-major is fastest).
    b: [E, N, K] float8_e4m3fn, K-contiguous; b_scale: [E, ceil(N/128), ceil(K/128)] fp32 (128×128 blocks).
    m_indices: [M] int32 expert of each row, −1 = padding (output row 0; its a/a_scale rows, NaN or not,
        never reach another row); E = 0 (no experts, every row padding) gives out all zeros without a launch.
        A 128-row tile holding rows of several experts is computed for the largest expert id among them and
        writes NaN into the rows of the others, whatever their counts (never another expert's product); ``check_alignment=True`` instead raises ValueError after one host sync.
        Ids outside [−1, E) raise ValueError naming m_indices on the CPU (always) and with check_alignment;
        unchecked on CUDA (no sync), where an id ≥ E makes its tile's rows NaN and an id < −1 is stored as
        padding (0).
    out: optional [M, N] out_dtype destination; out_dtype ∈ {bf16, fp16, fp32}. out must not alias the inputs
        (not checked: a destination overlapping an input may give wrong results).
    config: optional launch-config override (BLOCK_M, BLOCK_N, num_warps, num_stages required; GROUP_M, FLATTEN,
        GRID_MULT = persistent programs per SM, WS = Triton warp specialization of the K loop; values as in
        ``CONTIGUOUS_CONFIG_SPEC``).
    check_alignment: a bool (or numpy bool); 1, "yes" or a tensor is a TypeError.
    Returns out [M, N]. Raises TypeError (dtypes, a config that is not a dict, a non-bool check_alignment) /
    ValueError (shapes incl. N = 0 or K = 0, layout, device, alignment, an unknown config key or a value outside
    its rule).
    Semantics: DeepGEMM m_grouped_fp8_gemm_nt_contiguous.
    """
    check_tensor("a", a, dtype=torch.float8_e4m3fn, ndim=2)
    check_runnable_device("a", a)
    E, N, K, M, out = check_contiguous_operands(a, a_scale, b, b_scale, m_indices, out_dtype, out)
    dev = a.device
    kb = cdiv(K, BLOCK_K)
    if check_bool("check_alignment", check_alignment):
        check_contiguous_alignment(m_indices, E)
    if M == 0:
        return out
    if E == 0:  # no experts: every row is padding (ids must be −1: checked on the CPU), as the reference gives
        return out.zero_()
    if config is not None:
        cfg = check_config("config", config, CONTIGUOUS_CONFIG_SPEC, ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"))
    else:
        cfg = get_config("contiguous", M // max(E, 1), N, K)
    _check_cfg(cfg, True)
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    a_desc = TensorDescriptor(a, [M, K], [a.stride(0), 1], [bm, BLOCK_K])
    b_desc = TensorDescriptor(b, [E * N, K], [b.stride(1), 1], [bn, BLOCK_K])
    tiles = cdiv(M, bm) * cdiv(N, bn)
    grid = min(_num_programs(dev) * int(cfg.get("GRID_MULT", 1)), tiles)
    _grouped_fp8_contiguous_kernel[(grid,)](
        a_desc, b_desc, a_scale, b_scale, m_indices, out,
        M, N, E, kb,
        a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1), b_scale.stride(2),
        out.stride(0), out.stride(1),
        NUM_PROGRAMS=grid, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=BLOCK_K, GROUP_M=cfg.get("GROUP_M", 8),
        FLATTEN=bool(cfg.get("FLATTEN", False)), WS=bool(cfg.get("WS", False)), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


def __getattr__(name: str):
    # the masked layout lives in grouped_gemm_masked.py (imported lazily: it imports this module)
    if name == "grouped_fp8_gemm_masked":
        from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked

        return grouped_fp8_gemm_masked
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["grouped_fp8_gemm_contiguous", "grouped_fp8_gemm_masked", "get_config", "M_ALIGNMENT"]
