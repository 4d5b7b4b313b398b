"""Triton decode-path sampler: temperature, top-k/top-p filtering and exponential-race sampling.

Design (memory-bound; a vocabulary row of 129280 fp32 logits is 517 KB):
  1. (only when filtering is asked for) ``kernels.sampling_filter.launch_thresholds``: the kept set of
     top-k and of top-p is {x / T >= t} for one value t per row, found exactly by a split histogram
     pass and a candidate sort (see that module), with a one-program radix select as the fallback.
  2. ``_row_stats_kernel`` (grid rows × splits, the row streamed in BLOCK chunks): per split the
     online max/argmax, the online softmax sum and the exponential race argmax_i (s_i − log E_i),
     which equals argmax_i p_i / E_i since p_i ∝ exp(s_i).
  3. ``_sample_combine_kernel`` (one program per row): reduces the split partials to the token.
Low temperatures: the max, the softmax sums and the race work on the logits x themselves, never on x / T: the
sums take exp((x − m) / T) with m the running max, and the race compares the scores exp((x_i − m) / T) / E_i
(rescaled by exp((m_old − m_new) / T) when a lane's max grows, the factor the sums use): differences of nearby
logits are exact in fp32, so at T = 1e-5 with logits ~100 (x / T ~ 1e7, whose fp32 ulp is 1) the noise is not
rounded away. One exponential per element serves the sum and the race (exp(−|x − m| / T) is either the element's
weight or the lane's rescale), and the race in exp form takes no log of E. The Philox race is bound by instructions,
not bytes (Philox4x32-10 + −log U per element; 0.6-0.9 TB/s on the H200 in the log form): its sm_90a loop body is
653 instructions per 8 elements a thread (BLOCK 1024, 4 warps) against 866 in the previous log form.
A split's race partial is T·log of its best score = (x_w − m_split) + T·g_w (g = −log E), which the combine shifts
by m_split − m_row. Only the top-k/top-p thresholds are defined on s = x / T (as in the reference).
No host synchronisation anywhere (graph-capturable); split counts depend on shapes only.
``tritonseek.kernels.spec_verify`` reuses kernels 1–2 for rejection sampling.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import (check_int, check_no_overlap, check_runnable_device, check_tensor, is_int_arg,
                                      is_real_arg)
from tritonseek.kernels.sampling_filter import (  # noqa: F401 - _sm_count/arrival_counters re-exported
    THRESH_CONFIG,
    _INTERP_BLOCK,
    _sm_count,
    arrival_counters,
    launch_thresholds,
)


# --------------------------------------------------------------------------------------------
# Launch configuration (no autotuner: split counts must be shape-only so graphs stay valid).
# Tuned on the H200 (bench_mtp.py --sweep, 2026-11-29, commit 9df3ac6; geometric mean of CUDA-graph
# times at (B, K) = (1, 1), (16, 3), (64, 3), every candidate first checked exact against the
# reference): greedy (1024, 4, 8) 19.7 µs vs 20.9 for the untuned (2048, 4, 6); sample (2048, 4, 6)
# 35.7 µs vs 42.0 for (1024, 4, 6). The spread among the 12 greedy candidates was only 19.7–22.5 µs:
# the B = 1 cases are launch-bound (~8 µs) and B = 64, K = 3 reaches ~2.8 TB/s. The interpreter uses
# small blocks (fast tests).
# --------------------------------------------------------------------------------------------
# "sample" re-tuned for the exp-form race (session 15 W1, tree 74b3e9d, verify_rejection with Philox noise, K3,
# rotating-buffer graph timing, variants interleaved): (2048, 8, 2) 121.2 / 34.8 / 8.76 us at B64 / B16 / B1 vs
# (2048, 4, 6) 163.4 / 51.1 / 9.37 (183 registers at 4 warps: 2 programs of 4 warps per SM, 3 waves) and
# (1024, 4, 5) 128.7 / 37.4 / 10.49; the kernels before the low-temperature fix 149.3 / 44.8 / 9.75, the log-form
# race 211.5 / 64.8 / 11.74.
STATS_CONFIGS = {
    # mode: (BLOCK, num_warps, programs per SM)
    "greedy": (1024, 4, 8),
    "sample": (2048, 8, 2),
}
# (min rows, config) per mode: launches of at least that many rows use the config instead (the last match wins).
# Session 15 W2 (tree f7e1111, Philox K3/K1 rotating, configs interleaved): at B64 K1 (128 rows, 2 splits a row)
# (2048, 16, 2) 65.5 us vs 74.0 for (2048, 8, 2); at B64 K3 (256 rows, one split) 124.2 vs 122.2, B16 K3 36.4 vs
# 35.3, B1 K3 9.56 vs 8.80 — so 16 warps only for 128-255 rows.
STATS_CONFIGS_BY_ROWS: dict[str, tuple[tuple[int, tuple[int, int, int]], ...]] = {
    "sample": ((128, (2048, 16, 2)), (256, (2048, 8, 2))),
}


def stats_config(mode: str, rows: int) -> tuple[int, int, int]:
    """(BLOCK, num_warps, programs per SM) of ``_row_stats_kernel`` in ``mode`` for a launch of ``rows`` rows."""
    cfg = STATS_CONFIGS[mode]
    for min_rows, c in STATS_CONFIGS_BY_ROWS.get(mode, ()):
        if rows >= min_rows:
            cfg = c
    return cfg


def stats_launch_config(mode: str, rows: int, V: int, device: torch.device,
                        override: tuple[int, int, int] | None = None) -> tuple[int, int, int, int]:
    """(BLOCK, num_warps, num_splits, split_len) for streaming ``rows`` rows of length V."""
    if device.type != "cuda":
        block, warps, per_sm, sms = _INTERP_BLOCK, 4, 4, 2  # 8 "slots": several splits in CPU tests
    else:
        block, warps, per_sm = override or stats_config(mode, rows)
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    chunks = triton.cdiv(V, block)
    # as many splits as fit in ONE wave of per_sm programs per SM (floor: a second, partial wave of
    # equal-sized programs would cost a whole extra program time)
    splits = max(1, min(chunks, (per_sm * sms) // rows))
    split_len = triton.cdiv(chunks, splits) * block
    splits = triton.cdiv(V, split_len)
    return block, warps, splits, split_len


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _philox_exp(seeds_ptr, b, j, V, off, BLOCK: tl.constexpr):
    # Exp(1) noise of elements off … off+BLOCK−1 of row (b, j), off a multiple of 4: −log(U), U uniform in
    # [0, 1) from one Philox4x32-10 call per 4 elements — element i takes output i % 4 of counter
    # j·ceil(V/4) + i // 4 under key seeds[b] (U = 0, probability ~1e-9, gives E = inf: that token cannot win).
    seed = tl.load(seeds_ptr + b)
    c = j * ((V + 3) // 4) + off // 4 + tl.arange(0, BLOCK // 4)
    u0, u1, u2, u3 = tl.rand4x(seed, c)
    u = tl.reshape(tl.join(tl.join(u0, u2), tl.join(u1, u3)), [BLOCK])  # [c, 2, 2] → element 4c + r ← u_r
    return -tl.log(u)


@triton.jit
def _philox_noise_kernel(seeds_ptr, out_ptr, V, NJ, BLOCK: tl.constexpr):
    # out [B, NJ, V] fp32 contiguous; program (b * NJ + j, chunk)
    row = tl.program_id(0)
    b = row // NJ
    j = row % NJ
    off = tl.program_id(1) * BLOCK
    offs = off + tl.arange(0, BLOCK)
    e = _philox_exp(seeds_ptr, b, j, V, off, BLOCK)
    tl.store(out_ptr + row.to(tl.int64) * V + offs, e, mask=offs < V)


@triton.jit
def _row_stats_kernel(
    logits_ptr, noise_ptr, seeds_ptr, draft_ptr, temperature_ptr, thresh_ptr, done_ptr,
    part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr, part_ridx_ptr,
    V, NJ, split_len, num_splits,
    stride_lb, stride_lj, stride_nb, stride_nj, stride_db,
    GREEDY: tl.constexpr, HAS_THRESH: tl.constexpr, HAS_DONE: tl.constexpr, NEED_SUM: tl.constexpr,
    RACE_MODE: tl.constexpr, PHILOX: tl.constexpr, BLOCK: tl.constexpr,
):
    # logits  [B, NJ, V] float, last stride 1; row = b * NJ + j, split = program_id(1)
    # noise   [B, NJ, V] fp32 Exp(1), last stride 1 (read only when the race runs), or with PHILOX
    #         generated in registers, one Philox4x32 call per 4 elements (see _philox_exp, philox_exp_noise)
    # draft   [B, NJ - 1] int (RACE_MODE 1: the race of row j < NJ - 1 excludes draft[b, j])
    # thresh  [B * NJ] fp32 filter threshold on s = x / T (HAS_THRESH)
    # done    [B * NJ] int32 (HAS_DONE): rows with 2 already have their partials at split 0 (written
    #         from the filter's candidates): their programs read nothing, split 0 stores nothing and
    #         the other splits store neutral partials (max -inf, sum 0, race -inf)
    # part_*  [B * NJ, num_splits]: max m of the kept x (x with s = x / T below thresh → -inf), sum exp((x - m) / T),
    #         first argmax, race value T·log(exp((x_w - m) / T) / E_w) = (x_w - m) + T·g_w of the split's winner w
    #         (g = -log E; see the module docstring) and w. GREEDY: only max/argmax.
    # RACE_MODE: 0 none, 1 every row (excluding the draft token when j < NJ - 1), 2 last row only.
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // NJ
    j = row % NJ
    start = split * split_len
    end = tl.minimum(start + split_len, V)
    write = split >= 0
    if HAS_DONE:
        done = tl.load(done_ptr + row) == 2
        end = tl.where(done, start, end)
        write = ~(done & (split == 0))
    row_ptr = logits_ptr + b.to(tl.int64) * stride_lb + j.to(tl.int64) * stride_lj
    noise_row = noise_ptr + b.to(tl.int64) * stride_nb + j.to(tl.int64) * stride_nj

    # lane-wise accumulators (one cross-warp reduction after the loop, none per chunk, so the
    # loads of consecutive chunks stay in flight): running max m_lane / first index, online sum of
    # exp((x - m_lane) / T), and the race score exp((x_w - m_lane) / T) / E_w of the lane's winner w with its index
    # (both rescaled by exp((m_old - m_new) / T) when the lane's max grows).
    big = 2147483647
    m_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    i_vec = tl.full([BLOCK], big, tl.int32)
    l_vec = tl.zeros([BLOCK], tl.float32)
    r_vec = tl.zeros([BLOCK], tl.float32)
    ri_vec = tl.full([BLOCK], big, tl.int32)
    if GREEDY:
        temp = 1.0
        do_race = False
    else:
        temp = tl.load(temperature_ptr + b)
        do_race = temp > 0
        # T above 1e30 (+inf too, a tensor entry) acts as 1e30 (the reference's rule): 1 / inf = 0 made (-inf) * 0
        # NaN and T * log(score) infinite, and the row sampled id 2^31 - 1 (tester23 #4)
        temp = tl.where(temp > 0, tl.minimum(temp, 1e30), 1.0)
    # T below ~3e-39 would give inf (0 * inf = NaN)
    inv_t = tl.minimum(1.0 / temp, 3.4028234663852886e38)
    if RACE_MODE == 0:
        do_race = False
    if RACE_MODE == 2:
        do_race = do_race & (j == NJ - 1)
    excl = -1
    if RACE_MODE == 1:
        has_draft = j < NJ - 1
        excl = tl.load(draft_ptr + b.to(tl.int64) * stride_db + tl.where(has_draft, j, 0), mask=has_draft,
                       other=-1).to(tl.int64)
        excl = tl.where((excl >= 0) & (excl < V), excl, -1).to(tl.int32)  # out-of-range drafts exclude nothing
    thr = float("-inf")
    if HAS_THRESH:
        thr = tl.load(thresh_ptr + row)
    race_end = tl.where(do_race, end, 0)  # noise is read only where the race runs

    for off in range(start, end, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        msk = offs < end
        x = tl.load(row_ptr + offs, mask=msk, other=float("-inf")).to(tl.float32)
        x = tl.where(x != x, float("inf"), x)  # NaN counts as the largest value (torch.argmax's order)
        if not GREEDY:
            if HAS_THRESH:
                x = tl.where(x / temp >= thr, x, float("-inf"))  # the filter is defined on s = x / T
        grow = x > m_vec  # strict: each lane keeps its first maximum
        if NEED_SUM or RACE_MODE != 0:
            # one exponential per element: f = exp((min(x, m) - max(x, m)) / T) is the element's weight
            # exp((x - m_new) / T) when x <= m, else the rescale exp((m_old - m_new) / T) of the lane's sum and score
            # (-inf - -inf would be NaN: a lane at -inf takes m_new = 0 there, f = 0)
            m_new = tl.maximum(m_vec, x)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            f = tl.exp((tl.minimum(m_vec, x) - m_safe) * inv_t)
            alpha = tl.where(grow, f, 1.0)
            w = tl.where(grow, 1.0, f)
            if NEED_SUM:
                l_vec = l_vec * alpha + w
            if RACE_MODE != 0:
                if PHILOX:
                    e = _philox_exp(seeds_ptr, b, j, V, off, BLOCK)
                else:
                    e = tl.load(noise_row + offs, mask=offs < race_end, other=1.0)
                # race score p / E up to the lane's common factor; the race in exp form needs no log of E
                # (p underflowing to 0 only drops tokens more than 87·T below the lane max, which cannot win:
                # E <= 22.2 for U >= 2^-32). Strict >: the first of equals stays; a score of 0 never wins.
                cand = w / e
                if RACE_MODE == 1:
                    cand = tl.where(offs == excl, 0.0, cand)
                r_vec = r_vec * alpha
                win = cand > r_vec
                ri_vec = tl.where(win, offs, ri_vec)
                r_vec = tl.where(win, cand, r_vec)
        i_vec = tl.where(grow, offs, i_vec)
        m_vec = tl.maximum(m_vec, x)

    m = tl.max(m_vec, axis=0)
    idx = tl.min(tl.where(m_vec == m, i_vec, big), axis=0)  # lowest index among the lanes' maxima
    idx = tl.where(idx == big, start, idx)  # all -inf (or empty): the split's first index (argmax gives 0)
    if NEED_SUM or RACE_MODE != 0:
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        lane_scale = tl.exp((m_vec - m_safe) * inv_t)  # lane max -> split max
    if NEED_SUM:
        lsum = tl.sum(l_vec * lane_scale, axis=0)
    if RACE_MODE != 0:
        r_vec = r_vec * lane_scale
        rmax = tl.max(r_vec, axis=0)
        ridx = tl.min(tl.where(r_vec == rmax, ri_vec, big), axis=0)
        ridx = tl.where(ridx == big, start, ridx)
        # stored in the log form the combine and the filter's settle kernel use: T·log(score) = (x_w - m) + T·g_w.
        # A split with no race candidate has score 0 → -inf: written as a select, not as log(0), which the CPU
        # interpreter (numpy) reports as a divide-by-zero warning; the same values (NaN still propagates, T > 0)
        rmax = tl.where(rmax == 0.0, float("-inf"), temp * tl.log(tl.where(rmax == 0.0, 1.0, rmax)))

    p = row.to(tl.int64) * num_splits + split
    tl.store(part_max_ptr + p, m, mask=write)
    tl.store(part_idx_ptr + p, idx, mask=write)
    if NEED_SUM:
        tl.store(part_sum_ptr + p, lsum, mask=write)
    if RACE_MODE != 0:
        tl.store(part_race_ptr + p, rmax, mask=write)
        tl.store(part_ridx_ptr + p, ridx, mask=write)


@triton.jit
def _sample_combine_kernel(
    temperature_ptr, part_max_ptr, part_idx_ptr, part_race_ptr, part_ridx_ptr, out_ptr,
    num_splits, SPLITS: tl.constexpr, GREEDY: tl.constexpr = False,
):
    # part_* [B, num_splits] from _row_stats_kernel (NJ = 1); out [B] int64 token ids
    # GREEDY: every row takes the argmax (temperature and race partials unread). A split's race value is
    # relative to its max: + (m_split - m_row) puts every split on the row's scale.
    row = tl.program_id(0)
    offs = tl.arange(0, SPLITS)
    msk = offs < num_splits
    base = row.to(tl.int64) * num_splits
    big = 2147483647
    ms = tl.load(part_max_ptr + base + offs, mask=msk, other=float("-inf"))
    ids = tl.load(part_idx_ptr + base + offs, mask=msk, other=big)
    mx = tl.max(ms, axis=0)
    greedy = tl.min(tl.where((ms == mx) & msk, ids, big), axis=0)
    if GREEDY:
        tl.store(out_ptr + row, greedy.to(tl.int64))
    else:
        rs = tl.load(part_race_ptr + base + offs, mask=msk, other=float("-inf")) + (ms - mx)
        rids = tl.load(part_ridx_ptr + base + offs, mask=msk, other=big)
        rmx = tl.max(rs, axis=0)
        race = tl.min(tl.where((rs == rmx) & msk, rids, big), axis=0)
        temp = tl.load(temperature_ptr + row)
        # a sampled row whose max is +inf (a NaN or +inf logit) or -inf (all -inf) has no softmax: token 0, as the
        # reference's argmax over its NaN probabilities gives
        race = tl.where(tl.abs(mx) < float("inf"), race, 0)
        tl.store(out_ptr + row, tl.where(temp > 0, race, greedy).to(tl.int64))


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------
def _host_scalar(name: str, v, is_int: bool):
    """A host scalar for a [B] per-row parameter: an int (numpy integers too) for top_k, a float (ints and numpy
    numbers too) for temperature / top_p; a bool or any other non-tensor is a TypeError naming the argument."""
    if is_int_arg(v) if is_int else is_real_arg(v):
        return int(v) if is_int else float(v)
    kind = "an int or a [B] int32 tensor" if is_int else "a float or a [B] float32 tensor"
    raise TypeError(f"{name} must be {kind}, got {type(v).__name__} {v!r}")


def _row_params(B: int, device: torch.device, temperature, top_k, top_p):
    """(temperature, top_k, top_p) as [B] tensors on ``device``: host scalars (the rule of ``kernels._utils``:
    numpy numbers accepted, bools refused) validated and broadcast, tensors checked for dtype/shape/device/contiguity
    only (checking their values would need a device-to-host sync; ``sample`` documents what out-of-range values do)."""
    if not isinstance(temperature, torch.Tensor):
        temperature = _host_scalar("temperature", temperature, False)
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature={temperature!r} must be a finite number >= 0 (0 = greedy)")
        temperature = torch.full((B,), float(temperature), dtype=torch.float32, device=device)
    if top_k is not None and not isinstance(top_k, torch.Tensor):
        top_k = _host_scalar("top_k", top_k, True)
        if top_k < 0:
            raise ValueError(f"top_k={top_k!r} must be an int >= 0 (0 = off)")
        top_k = torch.full((B,), min(top_k, 2**31 - 1), dtype=torch.int32, device=device)
    if top_p is not None and not isinstance(top_p, torch.Tensor):
        top_p = _host_scalar("top_p", top_p, False)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p={top_p!r} must be in (0, 1] (1 = off)")
        top_p = torch.full((B,), float(top_p), dtype=torch.float32, device=device)
    for name, t, dt in (("temperature", temperature, torch.float32), ("top_k", top_k, torch.int32),
                        ("top_p", top_p, torch.float32)):
        if t is None:
            continue
        if t.dim() != 1:
            # a 0-d tensor (torch.tensor(0.9)) was "top_p must be 1-D": say what is accepted instead (h5 s21)
            host = "a Python int" if dt == torch.int32 else "a Python float"
            raise ValueError(f"{name} must be a 1-D [{B}] {dt} tensor (one value per row) or {host} (every row), "
                             f"got a {t.dim()}-D tensor of shape {tuple(t.shape)}")
        check_tensor(name, t, dtype=dt, device=device)
        if t.shape[0] != B or t.stride(0) != 1:
            raise ValueError(f"{name} must be a contiguous [{B}] tensor, got shape {tuple(t.shape)} "
                             f"and strides {t.stride()}")
    return temperature, top_k, top_p


def _check_vocab(name: str, V: int) -> None:
    if V < 1:
        raise ValueError(f"{name} must have a vocabulary dimension V >= 1, got V = {V}")


def _check_logits(logits) -> tuple[int, int, torch.device]:
    """(B, V, device) of [B, V] float logits with a contiguous last dim and V >= 1 on a runnable device."""
    check_tensor("logits", logits, dtype=(torch.float32, torch.bfloat16, torch.float16), ndim=2)
    check_runnable_device("logits", logits)
    B, V = logits.shape
    if logits.stride(1) != 1:
        raise ValueError(f"logits must have a contiguous last dim, got strides {logits.stride()}")
    _check_vocab("logits", V)
    return B, V, logits.device


def _token_out(out, B: int, dev: torch.device) -> torch.Tensor:
    if out is None:
        return torch.empty(B, dtype=torch.int64, device=dev)
    if not isinstance(out, torch.Tensor):  # before out.shape: out=5 was an AttributeError (tester 2, s19)
        raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
    if out.shape != (B,) or out.dtype != torch.int64 or out.device != dev or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous [{B}] int64 tensor on {dev} (the kernel writes at unit stride)")
    return out


def check_config(config, unroll: bool = False) -> tuple[int, ...] | None:
    """A launch-config override (None = the default plan), returned as a tuple of Python ints (None stays None): a
    tuple or list (BLOCK, num_warps, programs per SM[, UNROLL when ``unroll``]) of ints or numpy integers (not bools,
    not floats: the scalar rule of ``kernels._utils``), BLOCK a power of two in [16, 65536] (the Philox noise takes 4
    elements per call), num_warps a power of two in [1, 32], programs per SM and UNROLL >= 1. TypeError for another
    type, ValueError for a bad length or value. Checked on every device (the CPU interpreter ignores it)."""
    if config is None:
        return None
    what = "(BLOCK, num_warps, programs per SM" + ("[, UNROLL])" if unroll else ")")
    if not isinstance(config, (tuple, list)) or not all(is_int_arg(v) for v in config):
        raise TypeError(f"config={config!r} must be a tuple of ints (not bools or floats) {what}")
    config = tuple(int(v) for v in config)  # numpy integers -> int, so the launch sees plain Python ints
    if len(config) not in ((3, 4) if unroll else (3,)):
        raise ValueError(f"config={config!r} must have {'3 or 4' if unroll else '3'} entries {what}")
    block, warps = config[:2]
    if not 16 <= block <= 65536 or block & (block - 1):
        raise ValueError(f"config={config!r}: BLOCK must be a power of two in [16, 65536]")
    if warps not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"config={config!r}: num_warps must be a power of two in [1, 32]")
    if min(config[2:]) < 1:
        raise ValueError(f"config={config!r}: programs per SM{' and UNROLL' if unroll else ''} must be >= 1")
    return config


def _check_seeds(seeds, B: int, device: torch.device) -> None:
    if seeds is None:
        raise ValueError("exp_noise is None: pass seeds ([B] int64 device tensor) for in-kernel Philox noise")
    check_tensor("seeds", seeds, dtype=torch.int64, ndim=1, device=device)
    if seeds.shape[0] != B or seeds.stride(0) != 1:
        raise ValueError(f"seeds must be a contiguous [{B}] int64 tensor, got shape {tuple(seeds.shape)}")


def philox_exp_noise(seeds: torch.Tensor, num_positions: int, vocab_size: int) -> torch.Tensor:
    """E[b, j, i] = −log U, U = output i mod 4 of Philox4x32-10 (``tl.rand4x``) at counter j·⌈V/4⌉ + ⌊i/4⌋ under
    key seeds[b]: the Exp(1) noise that the seeds mode of ``sample``/``verify_rejection`` makes in registers,
    written out (for tests and the references).

    seeds: [B] int64 on CUDA (CPU under TRITON_INTERPRET=1). Returns [B, num_positions, vocab_size] fp32.
    num_positions, vocab_size: ints (numpy integers too; a bool, float or tensor is a TypeError naming it).
    Requires num_positions·vocab_size < 2^31. Raises ValueError/TypeError on bad arguments.
    """
    check_tensor("seeds", seeds, dtype=torch.int64, ndim=1)
    check_runnable_device("seeds", seeds)
    num_positions, vocab_size = check_int("num_positions", num_positions), check_int("vocab_size", vocab_size)
    if num_positions < 1 or vocab_size < 1 or num_positions * vocab_size >= 2**31:
        raise ValueError(f"need 1 <= num_positions*vocab_size < 2^31, got {num_positions}*{vocab_size}")
    B = seeds.shape[0]
    out = torch.empty(B, num_positions, vocab_size, dtype=torch.float32, device=seeds.device)
    if B == 0:
        return out
    block = _INTERP_BLOCK if seeds.device.type != "cuda" else 1024
    _philox_noise_kernel[(B * num_positions, triton.cdiv(vocab_size, block))](
        seeds.contiguous(), out, vocab_size, num_positions, BLOCK=block)
    return out


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                      *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k then top-p filter: out_i = x_i if kept else -inf (kept = {x >= t}, t found by radix select).

    logits: [B, V] fp32/bf16/fp16 on CUDA (CPU under TRITON_INTERPRET=1), last dim contiguous, V >= 1.
    top_k: [B] int32 (0 or >= V = off), an int (every row), or None. top_p: [B] fp32 in (0, 1] (>= 1 = off),
    a float (every row), or None. Tensor values are not checked (a host sync): top_k < 0 acts as 0, top_p
    <= 0 keeps the top token(s), NaN top_p is off. out: optional [B, V] fp32 buffer; it may be fp32 logits itself
    (an in-place filter: the thresholds are found before anything is written, then each element is written from
    itself), any other overlap with logits is unsupported (torch.where refuses a partial one). Returns [B, V] fp32
    (ties at the threshold are all kept; the top token is always kept; NaN logits are never kept). B = 0
    gives an empty result. Raises ValueError/TypeError naming a bad argument (bad host scalars too).
    Semantics: vLLM ``apply_top_k_top_p`` (top-k first, then top-p over the renormalised survivors);
    reference ``apply_top_k_top_p_ref``.
    """
    check_tensor("logits", logits, dtype=(torch.float32, torch.bfloat16, torch.float16), ndim=2)
    check_runnable_device("logits", logits)
    if logits.stride(1) != 1:
        raise ValueError(f"logits must have a contiguous last dim, got strides {logits.stride()}")
    B, V = logits.shape
    _check_vocab("logits", V)
    ones = torch.ones(B, dtype=torch.float32, device=logits.device)  # filter on x itself (T = 1)
    _, top_k, top_p = _row_params(B, logits.device, ones, top_k, top_p)
    if out is None:
        out = torch.empty(B, V, dtype=torch.float32, device=logits.device)
    elif not isinstance(out, torch.Tensor):  # before out.shape: out=5 was an AttributeError (tester 2, s19)
        raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
    elif out.shape != (B, V) or out.dtype != torch.float32 or out.device != logits.device:
        raise ValueError(f"out must be a [{B}, {V}] fp32 tensor on {logits.device}")
    else:
        check_no_overlap("out", out)
    if B == 0:
        return out
    thresh, _ = launch_thresholds(logits[:, None, :], ones, top_k, top_p)
    x = logits.float()
    if thresh is None:
        out.copy_(x)
    else:
        torch.where(x >= thresh[:, None], x, torch.full_like(x, float("-inf")), out=out)
    return out


def launch_row_stats(logits3, noise3, draft, temperature, top_k=None, top_p=None, *, mode: str, need_sum: bool,
                     race_mode: int, config: tuple[int, int, int] | None = None, seeds=None):
    """Filter thresholds (when top_k/top_p are given: ``launch_thresholds``, whose fast path also writes
    the partials of the rows it settles) then _row_stats_kernel over logits3 [B, NJ, V]; return
    (num_splits, part_max, part_sum, part_idx, part_race, part_ridx, thresh) with partials
    [B * NJ, num_splits] and thresh [B * NJ] fp32 or None."""
    B, NJ, V = logits3.shape
    rows = B * NJ
    dev = logits3.device
    block, warps, splits, split_len = stats_launch_config(mode, rows, V, dev, config)
    part_max = torch.empty(rows, splits, dtype=torch.float32, device=dev)
    part_idx = torch.empty(rows, splits, dtype=torch.int32, device=dev)
    part_sum = torch.empty(rows, splits, dtype=torch.float32, device=dev) if need_sum else part_max
    if race_mode:
        part_race = torch.empty(rows, splits, dtype=torch.float32, device=dev)
        part_ridx = torch.empty(rows, splits, dtype=torch.int32, device=dev)
    else:
        part_race, part_ridx = part_max, part_idx
    noise3 = noise3 if noise3 is not None else logits3
    draft_t = draft if draft is not None else part_idx
    temp = temperature if temperature is not None else part_max
    thresh, done = launch_thresholds(
        logits3, temperature, top_k, top_p,
        stats=(part_max, part_sum, part_idx, part_race, part_ridx, need_sum, race_mode,
               None if noise3 is logits3 else noise3, seeds, draft))
    _row_stats_kernel[(rows, splits)](
        logits3, noise3, seeds if seeds is not None else part_idx, draft_t, temp,
        thresh if thresh is not None else part_max, done if done is not None else part_idx,
        part_max, part_sum, part_idx, part_race, part_ridx,
        V, NJ, split_len, splits,
        logits3.stride(0), logits3.stride(1), noise3.stride(0), noise3.stride(1),
        draft_t.stride(0) if draft_t.dim() == 2 else 0,
        GREEDY=mode == "greedy", HAS_THRESH=thresh is not None, HAS_DONE=done is not None, NEED_SUM=need_sum,
        RACE_MODE=race_mode, PHILOX=seeds is not None, BLOCK=block, num_warps=warps,
    )
    return splits, part_max, part_sum, part_idx, part_race, part_ridx, thresh


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
           top_p: torch.Tensor | None, exp_noise: torch.Tensor | None, *, seeds: torch.Tensor | None = None,
           out: torch.Tensor | None = None, config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """token = argmax(x) if T == 0 else argmax_i softmax(top_k_top_p(x / T))_i / E_i (exponential race).

    logits: [B, V] fp32/bf16/fp16 on CUDA (CPU under TRITON_INTERPRET=1), last dim contiguous, V >= 1.
    temperature: [B] fp32 >= 0 (0 = greedy, lowest id on ties) or a float. top_k: [B] int32 (0 = off), an
    int, or None. top_p: [B] fp32 in (0, 1] (1 = off), a float, or None. A host float may be an int or numpy
    number, a host int a numpy integer; a bool (or a float top_k) is a TypeError. Tensor values are not checked (a
    host sync): temperature <= 0 or NaN → greedy row, temperature > 1e30 (+inf too) → 1e30 (uniform over the kept
    tokens), top_k < 0 → off, top_p <= 0 → top token(s), top_p NaN → off, as in the reference. Non-finite logits: a NaN counts as the largest value and greedy rows
    return the first NaN or +inf (the reference, torch.argmax, returns the first NaN: the two differ on a
    row holding +inf before a NaN); as in the reference, a sampled row whose max is not finite (a NaN or +inf
    logit, or every logit -inf) has no softmax and returns token 0 (with top-k/top-p, also a row where x / T
    overflows fp32, since the filter is defined on x / T); an all -inf greedy row returns 0.
    exp_noise: [B, V] fp32 i.i.d. Exp(1) > 0 from a seeded generator, last dim contiguous (rows with T == 0
    are not read); or None with seeds: [B] int64 on the device, the noise then made in registers by Philox,
    equal to ``philox_exp_noise(seeds, 1, V)[:, 0]`` (change the seeds every step; no noise tensor is written
    or read); giving both exp_noise and seeds raises ValueError. out: optional [B] int64 buffer, not aliasing the
    inputs (not checked).
    config: optional (BLOCK, num_warps, programs per SM) override (benchmark sweeps): ints, BLOCK a power of two
    in [16, 65536], num_warps a power of two in [1, 32], programs per SM >= 1 (``check_config``).
    Low temperatures are exact to fp32 rounding of the logit differences: the softmax is exp((x − max) / T)
    (the max subtracted from x before dividing, as the reference does), so T = 1e-5 on logits ~100 samples
    near ties in proportion (x / T itself would round to the fp32 ulp of 1e7, which is 1). The top-k/top-p
    kept set is still decided on x / T in fp32, as the reference does: at such temperatures the top-p masses
    of near-tied tokens are those of the rounded x / T (the sampling among the kept tokens is exact).
    Returns tokens [B] int64 (empty for B = 0). No host synchronisation (CUDA-graph safe).
    Raises ValueError/TypeError naming a bad argument (V = 0, bad host scalars, exp_noise with seeds, config).
    Semantics: vLLM Sampler; reference ``sample_ref``.
    """
    B, V, dev = _check_logits(logits)
    temperature, top_k, top_p = _row_params(B, dev, temperature, top_k, top_p)
    config = check_config(config)
    if exp_noise is None:
        _check_seeds(seeds, B, dev)
    elif seeds is not None:
        raise ValueError("pass exp_noise or seeds, not both (exp_noise would silently win)")
    else:
        check_tensor("exp_noise", exp_noise, dtype=torch.float32, ndim=2, device=dev)
        if exp_noise.shape != (B, V) or exp_noise.stride(1) != 1:
            raise ValueError(f"exp_noise must be [{B}, {V}] with a contiguous last dim, got {tuple(exp_noise.shape)}")
        seeds = None
    out = _token_out(out, B, dev)
    if B == 0:
        return out
    logits3 = logits[:, None, :]
    splits, pmax, _, pidx, prace, pridx, _ = launch_row_stats(
        logits3, None if exp_noise is None else exp_noise[:, None, :], None, temperature, top_k, top_p,
        mode="sample", need_sum=False, race_mode=2, config=config, seeds=seeds)
    _sample_combine_kernel[(B,)](temperature, pmax, pidx, prace, pridx, out, splits,
                                 SPLITS=triton.next_power_of_2(splits), num_warps=1)
    return out


def argmax(logits: torch.Tensor, *, out: torch.Tensor | None = None,
           config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """token_b = argmax_i logits[b, i], the lowest id among equal maxima (greedy decoding).

    logits: [B, V] fp32/bf16/fp16 on CUDA (CPU under TRITON_INTERPRET=1), last dim contiguous, V >= 1; read
    as is (no fp32 copy). A NaN counts as the largest value (the first NaN or +inf wins; torch.argmax: the
    first NaN); an all -inf row gives 0. out: optional [B] int64 buffer, not aliasing logits (not checked).
    config: optional (BLOCK, num_warps, programs per SM) of the split-row pass, checked as in ``sample``.
    Returns [B] int64 (empty for B = 0). Two launches (split-row max/argmax, combine), no host synchronisation
    (CUDA-graph safe). Raises ValueError/TypeError naming a bad
    argument. Semantics: torch.argmax(logits, dim=-1).
    """
    B, V, dev = _check_logits(logits)
    config = check_config(config)
    out = _token_out(out, B, dev)
    if B == 0:
        return out
    splits, pmax, _, pidx, _, _, _ = launch_row_stats(logits[:, None, :], None, None, None, mode="greedy",
                                                      need_sum=False, race_mode=0, config=config)
    _sample_combine_kernel[(B,)](pmax, pmax, pidx, pmax, pidx, out, splits,
                                 SPLITS=triton.next_power_of_2(splits), GREEDY=True, num_warps=1)
    return out
