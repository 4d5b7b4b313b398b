"""fp8_gemm_nt_sk (stream-K Gluon kernel) against tritonseek.kernels.reference.fp8.

Gluon has no interpreter, so on the CPU this file (a) compiles the kernel for sm_90a (Triton's compiler + ptxas, no
GPU) and checks wgmma, TMA, the fix-up's acq_rel atomics, per-warpgroup named barriers, no spills and no serialized
wgmmas; (b) checks a host model of the kernel's schedule arithmetic (every (tile, K block) iteration owned by exactly
one CTA, the partial-slot and owner formulas the fix-up reads); (c) checks the launcher's and fp8_gemm_nt's config
errors. The numerical properties run on the H200 (gpu marker): random shapes, N/K/M tails, NaN-poisoned outputs,
determinism across calls and CUDA-graph replays (the arrival counters re-arm themselves).

Tolerance: DeepGEMM's calc_diff = 1 − 2Σxy / Σ(x² + y²) < 1e-3 against the dequantized fp32 product (both sides see
the same fp8 inputs and scales; what remains is fp32 summation order and output rounding, ≈ 4e-6 for bf16; a dropped
or doubled K block or a partial summed into the wrong tile gives ≳ 1e-2).
"""

from __future__ import annotations

import re

import pytest
import torch
import triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report
from tests.kernels.test_fp8_gemm_ws import _check_gpu as _check_ws
from tests.kernels.test_fp8_gemm_ws import _cpu_operands, _gpu_operands, calc_diff
from tritonseek.kernels import fp8_gemm_ws_sk as S
from tritonseek.kernels.fp8_gemm_ws_sk import fp8_gemm_nt_sk
from tritonseek.kernels.reference.fp8 import fp8_gemm_nt_ref

_fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)


def compile_sk_sm90(overrides: dict | None = None, out_dtype: str = "bf16"):
    """Compile the stream-K kernel for sm_90a on any machine (no GPU), every constexpr given; returns the kernel."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from tritonseek.kernels import fp8_gemm_ws as W

    cfg = S.sk_config(overrides)
    bn, bk = cfg["BLOCK_N"], S.BLOCK_K
    la = W._smem_layout([128, bk], gl.float8e4nv)
    lb = W._smem_layout([bn, bk], gl.float8e4nv)
    tma_store = cfg["TMA_STORE"] and out_dtype != "fp32"
    lc = W._smem_layout([64, bn], W._GL_DTYPES[{"bf16": torch.bfloat16, "fp16": torch.float16}[out_dtype]]
                        if tma_store else gl.float32)
    sig = dict(a_desc=f"tensordesc<fp8e4nv[128, {bk}],{la!r}>", b_desc=f"tensordesc<fp8e4nv[{bn}, {bk}],{lb!r}>",
               c_desc=f"tensordesc<{out_dtype}[64, {bn}],{lc!r}>" if tma_store else "constexpr", c_ptr=f"*{out_dtype}", ws_ptr="*fp32", cnt_ptr="*i32", a_scale_ptr="*fp32", b_scale_ptr="*fp32")
    sig.update({name: "i32" for name in ("M", "N", "num_k_blocks", "stride_asm", "stride_ask", "stride_bsn",
                                         "stride_bsk", "stride_cm", "stride_cn", "num_programs", "dp_tiles")})
    consts = dict(BLOCK_M=128, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg["GROUP_M"], NUM_STAGES=cfg["NUM_STAGES"],
                  PRODUCER_REGS=cfg["PRODUCER_REGS"], CONSUMER_REGS=cfg["CONSUMER_REGS"], UNROLL2=cfg["UNROLL2"],
                  PIPE=cfg["PIPE"], PIPE0=cfg["PIPE0"] and cfg["PIPE"], TMA_STORE=tma_store,
                  PART_BLOCKED=cfg["PART_BLOCKED"], SCALE_AHEAD=cfg["SCALE_AHEAD"] if cfg["PIPE"] else 0, WAIT2=cfg["WAIT2"],
                  num_warps=4)
    sig.update({name: "constexpr" for name in consts})
    if not tma_store:
        consts["c_desc"] = None
    # 16-byte aligned pointers and leading dims, as the launcher's real arguments are specialized
    names = list(sig)
    attrs = {(names.index(name),): [["tt.divisibility", 16]]
             for name in ("c_ptr", "ws_ptr", "cnt_ptr", "a_scale_ptr", "b_scale_ptr", "stride_cm", "M", "N")}
    return triton.compile(GluonASTSource(S._fp8_gemm_sk_kernel, sig, consts, attrs), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4, maxnreg=W._MAXNREG))


def test_sk_compiles_for_sm90_without_spills():
    ptx = ptx_in_fresh_process(__name__, "compile_sk_sm90", None, "bf16")
    # default: PIPE0 K loop (two issue sites in the loop + the odd tail) × 4 k32 steps, one K loop per warpgroup
    # (data-parallel and stream-K segments share it: two copies spilled)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 3 * 4 * 2
    assert "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier" in ptx  # TMA loads
    assert ptx.count("cp.async.bulk.tensor.2d.global.shared::cta") == 2  # whole tiles: a TMA store per warpgroup
    # fix-up: one predicated increment per warpgroup (not one per thread: 128 same-address atomics per warpgroup cost
    # 15-30 µs per M = 128 launch, H200 W1 → W2), every thread's acquire re-read
    atoms = re.findall(r"@%p\d+ atom.global.gpu.acq_rel.add.u32", ptx)
    assert len(atoms) == 2 and ptx.count("atom.") == 2 and "ld.acquire.gpu.global.u32" in ptx
    # PART_BLOCKED: partials stored and merged as 16-byte vectors (the accumulator layout gave 4-byte accesses)
    assert ptx.count("st.global.v4.b32") >= 2 * 16 and ptx.count("ld.global.cg.v4.b32") + ptx.count(
        "ld.global.relaxed.gpu.v4.b32") + ptx.count("ld.relaxed.gpu.global.v4.b32") >= 2 * 16, "partials not vectorized"
    # each warpgroup synchronizes only itself (a named barrier of 128 threads; bar 0 = the default partition's)
    assert re.search(r"bar.sync\s+0, 128;", ptx) and re.search(r"bar.sync\s+[1-9], 128;", ptx)
    report = ptxas_report(ptx)
    assert "C7514" not in report and "serialized" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(s == ("0", "0") for s in spills), report


def test_sk_wait2_compiles_without_spills():
    # WAIT2: the waiter polls with acquire loads (a loop) and re-arms with a plain store; the first contributor keeps
    # the one acq_rel increment per warpgroup; no spills
    ptx = ptx_in_fresh_process(__name__, "compile_sk_sm90", dict(GRID=112, SCALE_AHEAD=1, WAIT2=True), "bf16")
    assert len(re.findall(r"@%p\d+ atom.global.gpu.acq_rel.add.u32", ptx)) == 2
    assert ptx.count("ld.acquire.gpu.global.u32") >= 4  # arrive's re-read + the waiter's first poll and loop, x2
    report = ptxas_report(ptx)
    assert "C7514" not in report and "serialized" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(s == ("0", "0") for s in spills), report


# ---------------------------------------------------------------- host model of the schedule arithmetic

def _start(p, ctas, total):
    return p * total // ctas


def _owner(x, ctas, total):
    return ((x + 1) * ctas + total - 1) // total - 1


def _segments(p, ctas, tiles, kb, dp_tiles):
    """CTA p's segments (tile, u, k_lo, k_hi) as _sk_range / _sk_segment_at compute them."""
    total = (tiles - dp_tiles) * kb
    start, end = _start(p, ctas, total), _start(p + 1, ctas, total)
    u0, n_dp = start // kb, dp_tiles // ctas
    out = []
    for j in range(n_dp + (end + kb - 1) // kb - u0):
        dp = int(j < n_dp)
        u = u0 + j - n_dp
        t = dp * (p + j * ctas) + (1 - dp) * (dp_tiles + u)
        out.append((t, u, (1 - dp) * max(start - u * kb, 0), dp * kb + (1 - dp) * min(end - u * kb, kb)))
    return out


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 5000), n=st.integers(1, 20000), kb=st.integers(1, 200), sms=st.integers(1, 140),
       dp=st.booleans())
def test_sk_schedule_covers_every_iteration_once(m, n, kb, sms, dp):
    ctas, dp_tiles = S.sk_grid(m, n, kb * 128, 128, sms, 0, dp)
    tiles = triton.cdiv(m, 128) * triton.cdiv(n, 128)
    assert 1 <= ctas <= sms and dp_tiles % ctas == 0 and 0 <= dp_tiles <= tiles
    if dp_tiles:
        assert ctas <= tiles - dp_tiles < 2 * ctas  # the stream-K range holds one to two waves of tiles
    total = (tiles - dp_tiles) * kb
    seen = {}
    slots = {}
    for p in range(ctas):
        segs = _segments(p, ctas, tiles, kb, dp_tiles)
        assert all(k_lo < k_hi for _, _, k_lo, k_hi in segs)  # every segment does work (≥ 1 iteration per CTA)
        partial = [s for s in segs if s[3] - s[2] < kb]
        for i, (t, u, k_lo, k_hi) in enumerate(segs):
            for x in range(k_lo, k_hi):
                assert (t, x) not in seen
                seen[(t, x)] = p
            if k_hi - k_lo < kb:
                # the kernel's slot: 2p + (u != u0); only a CTA's first or last stream-K segment can be partial
                slot = p * 2 + int(u != _start(p, ctas, total) // kb)
                assert slot not in slots
                slots[slot] = (t, p)
        assert len(partial) <= 2
    assert len(seen) == tiles * kb  # every (tile, K block) exactly once
    # the fix-up's view of a partial tile: contributors first..last (owners of its first and last iteration), each
    # CTA's slot 2p + (u != its first stream-K tile) holding that tile
    for u in range(tiles - dp_tiles):
        first, last = _owner(u * kb, ctas, total), _owner(u * kb + kb - 1, ctas, total)
        owners = sorted({seen[(dp_tiles + u, x)] for x in range(kb)})
        assert owners == list(range(first, last + 1))
        if last > first:
            for p in owners:
                assert slots[p * 2 + int(u != _start(p, ctas, total) // kb)] == (dp_tiles + u, p)


# ---------------------------------------------------------------- errors (every device)

def test_sk_config_errors():
    for bad, key in ((dict(BOGUS=1), "BOGUS"), (dict(BLOCK_N=256), "BLOCK_N"), (dict(NUM_STAGES=1), "NUM_STAGES"),
                     (dict(NUM_STAGES=7), "NUM_STAGES"), (dict(GRID=-1), "GRID"), (dict(DP=1), "DP"),
                     (dict(BLOCK_N=128.0), "BLOCK_N"), (dict(NUM_STAGES=6), "PART_BLOCKED")):
        with pytest.raises(ValueError, match=key):
            S.sk_config(bad)
    with pytest.raises(TypeError):
        S.sk_config([("BLOCK_N", 64)])
    assert S.sk_config(dict(BLOCK_N=64, NUM_STAGES=7, PART_BLOCKED=False))["NUM_STAGES"] == 7  # 7 × 24 KB fits
    with pytest.raises(ValueError, match="SCALE_AHEAD=1 needs PIPE"):  # the serial loop would ignore it (s19)
        S.sk_config(dict(SCALE_AHEAD=1, PIPE=False))
    assert S.sk_config(dict(SCALE_AHEAD=1))["SCALE_AHEAD"] == 1
    assert S.sk_config(dict(NUM_STAGES=6, PART_BLOCKED=False))["NUM_STAGES"] == 6
    with pytest.raises(ValueError, match="WAIT2"):
        S.sk_config(dict(WAIT2=1))
    assert S.sk_config(None)["WAIT2"] is False  # off unless asked for


def test_sk_wait2_only_where_it_applies():
    # WAIT2 is compiled in only with every CTA resident and more than one K block (one K block: no split tile, and
    # that specialization of its branch failed to compile on the H200, W3 at 9fd8acf)
    on = S.sk_config(dict(WAIT2=True))
    assert S.wait2_active(on, 112, 128, 132) and S.wait2_active(on, 132, 2, 132)
    assert not S.wait2_active(on, 133, 128, 132) and not S.wait2_active(on, 112, 1, 132)
    assert not S.wait2_active(S.sk_config(None), 112, 128, 132)


def test_sk_rejects_non_cuda_and_bad_config():
    a, a_s, b, b_s = _cpu_operands(8, 256, 256)
    with pytest.raises(ValueError, match="CUDA") as e:
        fp8_gemm_nt_sk(a, a_s, b, b_s)
    # the message names the launcher called (it named fp8_gemm_nt_ws: a fresh-user tester's #6, session 20)
    assert "fp8_gemm_nt_sk is a Gluon kernel" in str(e.value) and "fp8_gemm_nt_ws" not in str(e.value)
    with pytest.raises(ValueError, match="GRID"):
        fp8_gemm_nt_sk(a, a_s, b, b_s, config=dict(GRID=0.5))
    with pytest.raises(ValueError, match="b_scale"):
        fp8_gemm_nt_sk(a, a_s, b, b_s[:1])


def test_fp8_gemm_nt_stream_k_entry_checked():
    from tritonseek.kernels import fp8_gemm as G

    base = dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3)
    for gluon, key in ((dict(STREAM_K=True, WGS=2), "WGS"), (dict(STREAM_K=True, NUM_STAGES=9), "NUM_STAGES"),
                       (dict(STREAM_K=1), "STREAM_K"), (dict(STREAM_K=True, MIN_M=-1), "MIN_M")):
        with pytest.raises(ValueError, match=key):
            G._check_user_config(dict(base, GLUON=gluon), 128, 7168, 16384)
    G._check_user_config(dict(base, GLUON=dict(STREAM_K=True, NUM_STAGES=4, MIN_M=64)), 128, 7168, 16384)
    G._check_user_config(dict(base, GLUON=dict(STREAM_K=False, SPLIT=True)), 128, 7168, 16384)  # the ws kernel
    # the interpreter runs the entry's tl keys (an entry stays a valid tl config)
    a, a_s, b, b_s = _cpu_operands(70, 256, 384)
    out = G.fp8_gemm_nt(a, a_s, b, b_s, config=dict(base, SPLIT_K=1, GLUON=dict(STREAM_K=True)))
    assert calc_diff(out.float(), fp8_gemm_nt_ref(a, a_s, b, b_s, out_dtype=torch.float32)) < 1e-3


# ---------------------------------------------------------------- GPU (H200) properties

def _check_gpu(m, n, k, device, seed, config=None, out_dtype=torch.bfloat16, out_stride_pad=0):
    # NaN-poisoned out (and, with out_stride_pad, the padding beside it), calc_diff < 1e-3; returns out
    return _check_ws(m, n, k, device, seed, config, out_dtype, out_stride_pad, fn=fp8_gemm_nt_sk)


# GRID 7 / 11 / 3: few CTAs, so one CTA's range spans many tiles (whole middle tiles stored directly, partial head and
# tail) and a tile may have several contributors; GRID 1000: more CTAs than SMs (several segments per tile)
_GPU_CONFIGS = [None, dict(BLOCK_N=64, NUM_STAGES=6), dict(NUM_STAGES=6, PART_BLOCKED=False), dict(PIPE0=False),
                dict(PIPE=False), dict(GRID=7),
                dict(GRID=11, BLOCK_N=64, DP=False), dict(GRID=1000), dict(GRID=3, NUM_STAGES=3), dict(GROUP_M=1),
                dict(GRID=5, TMA_STORE=False), dict(GRID=7, SCALE_AHEAD=1), dict(GRID=7, WAIT2=True),
                dict(GRID=34, WAIT2=True)]


@pytest.mark.gpu
@settings(_fixture_ok, max_examples=min(10, settings.default.max_examples))
@given(m=st.integers(1, 700), n=st.integers(1, 900), kb16=st.integers(1, 200), config=st.sampled_from(_GPU_CONFIGS),
       out_dtype=st.sampled_from([torch.bfloat16, torch.bfloat16, torch.float32, torch.float16]),
       seed=st.integers(0, 2**31 - 1))
def test_sk_matches_reference_gpu(device, m, n, kb16, config, out_dtype, seed):
    _check_gpu(m, n, 16 * kb16, device, seed, config, out_dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k,pad", [(128, 7168, 16384, 0), (100, 300, 1040, 3), (1, 2112, 7168, 0),
                                       (129, 384, 256, 0), (64, 576, 128, 0), (128, 7168, 2048, 8),
                                       (4096, 7168, 2048, 0), (4096, 2112, 7168, 0), (333, 4096, 7168, 5)])
@pytest.mark.parametrize("cfg", [None, dict(BLOCK_N=64), dict(DP=False), dict(PART_BLOCKED=False, NUM_STAGES=6),
                                 dict(GRID=112, SCALE_AHEAD=1), dict(GRID=112, SCALE_AHEAD=1, WAIT2=True)],
                         ids=["default", "n64", "nodp", "mma_parts", "g112_ahead1", "g112_wait2"])
def test_sk_tails_and_real_shapes_gpu(device, m, n, k, pad, cfg):
    # N = 2112 / 300 / 576: a part-empty last column tile; K = 1040 (8.1 blocks), 128 (one block: every CTA takes
    # whole tiles or single iterations); M = 4096: DP + stream-K (data-parallel waves, then the split remainder)
    _check_gpu(m, n, k, device, seed=m + n + k, config=cfg, out_stride_pad=pad)


def _assert_graph_replays_equal(a, a_s, b, b_s, cfg, expected, replays=3):
    """fp8_gemm_nt_sk captured once in a CUDA graph, replayed `replays` times into a NaN-filled out: each replay
    gives `expected` bit for bit (the arrival counters re-arm themselves, so a replay cannot see a stale count)."""
    out = torch.full_like(expected, float("nan"))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fp8_gemm_nt_sk(a, a_s, b, b_s, out=out, config=cfg)
    for _ in range(replays):
        out.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k,cfg", [(128, 7168, 16384, None), (200, 1000, 4096, dict(GRID=7))])
def test_sk_deterministic_and_graph_safe_gpu(device, m, n, k, cfg):
    # bit-identical across eager calls and CUDA-graph replays (partials summed in CTA order; counters re-armed)
    a, a_s, b, b_s = _gpu_operands(m, n, k, device, seed=7)
    first = _check_gpu(m, n, k, device, seed=7, config=cfg)
    again = fp8_gemm_nt_sk(a, a_s, b, b_s, config=cfg)
    _assert_graph_replays_equal(a, a_s, b, b_s, cfg, first)
    assert torch.equal(again, first)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k,grid", [(128, 7168, 16384, 112), (200, 1000, 4096, 7), (129, 384, 1040, 34),
                                        (64, 576, 2048, 11)])
def test_sk_wait2_bit_identical_gpu(device, m, n, k, grid):
    # WAIT2 (the second of two contributors merges in registers) sums the same two partials in the same order as the
    # general merge: bit-identical output (tiles of three or more contributors keep the general path), also under
    # CUDA-graph replay (its waiter re-arms the counter)
    a, a_s, b, b_s = _gpu_operands(m, n, k, device, seed=11)
    base = fp8_gemm_nt_sk(a, a_s, b, b_s, config=dict(GRID=grid, SCALE_AHEAD=1))
    cfg = dict(GRID=grid, SCALE_AHEAD=1, WAIT2=True)
    first = _check_gpu(m, n, k, device, seed=11, config=cfg)
    assert torch.equal(first, base)
    _assert_graph_replays_equal(a, a_s, b, b_s, cfg, base)


@pytest.mark.gpu
def test_fp8_gemm_nt_stream_k_entry_gpu(device):
    # fp8_gemm_nt dispatches a GLUON entry with STREAM_K=True to this kernel: the committed 128×7168×16384 entry
    # (112 CTAs) through the library's own choice, and the same tile with 4 stages on 132 CTAs
    from tritonseek.kernels import fp8_gemm as G

    m, n, k = 128, 7168, 16384
    a, a_s, b, b_s = _gpu_operands(m, n, k, device, seed=3)
    assert G.get_config(m, n, k, G._num_sms(0))["GLUON"].get("STREAM_K")
    ref = fp8_gemm_nt_ref(a, a_s, b, b_s, out_dtype=torch.float32)
    for cfg in (None, dict(G._TUNED[("128", n, k)], GLUON=dict(STREAM_K=True, NUM_STAGES=4))):
        out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device=device)
        G.fp8_gemm_nt(a, a_s, b, b_s, out=out, config=cfg)
        torch.cuda.synchronize()
        assert not torch.isnan(out).any()
        assert calc_diff(out.float(), ref) < 1e-3
