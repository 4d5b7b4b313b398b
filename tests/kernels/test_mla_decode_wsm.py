"""mla_decode's WSM split kernel (kernels/mla_decode_wsm.py: Gluon, queries on the wgmma M side, two consumer
warpgroups sharing each 64-key tile) against the fp32 reference.

Gluon has no interpreter, so on the CPU this file compiles the kernel for sm_90a with Triton's compiler and
ptxas (no GPU) and checks what the design relies on: m64n32k16 score wgmmas and m64n256k16 value wgmmas,
TMA loads, asynchronous wgmmas and no spills in the per-tile loop; and that a WSM config falls back to the
tl kernel where Gluon cannot run. The numerical properties run on the H200 (gpu marker) at DeepSeek's
576/512 layout.

Tolerances as in test_mla_decode.py (FlashMLA's check): cosine difference ≤ 1e-5 against the fp32
reference (p and out are rounded to bf16, ≈ 2^-9 each), |lse − lse_ref| ≤ 1e-3, rows that see no key
exactly out = 0 and lse = −inf, and no NaN anywhere (outputs start NaN-poisoned; unused cache slots are NaN).
"""

from __future__ import annotations

import re

import pytest
import torch

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, sass_of, spill_store_bytes


def compile_sm90(stages: int = 2, causal: bool = True, consumer_regs: int = 240, producer_regs: int = 24,
                 one_sync: bool = False, seesaw: bool = False, early: bool = False):
    """Compile the WSM split kernel for sm_90a on any machine (Triton's compiler, no GPU); returns the kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from tritonseek.kernels import mla_decode_wsm as M
    from tritonseek.kernels.mla_decode_ws import smem_layout

    lv = smem_layout([64, 512], gl.bfloat16)
    lr = smem_layout([64, 64], gl.bfloat16)
    sig = dict(q_ptr="*bf16", v_desc=f"tensordesc<bf16[64, 512],{lv!r}>", r_desc=f"tensordesc<bf16[64, 64],{lr!r}>",
               bt_ptr="*i32", seqlens_ptr="*i32", sched_ptr="*i32", split_ptr="*i32",
               out_ptr="*bf16", lse_ptr="*fp32", opart_ptr="*fp32", lpart_ptr="*fp32")
    sig.update({n: "i32" for n in ("stride_qb", "stride_qs", "stride_qh", "stride_btb", "stride_ob", "stride_os",
                                   "stride_oh", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads",
                                   "seqlen_q", "page_shift")})
    sig["sm_scale_log2"] = "fp32"
    consts = dict(NUM_STAGES=stages, CAUSAL=causal, PRODUCER_REGS=producer_regs, CONSUMER_REGS=consumer_regs,
                  ONE_SYNC=one_sync)
    sig.update({n: "constexpr" for n in consts})
    kernel = M._mla_decode_wsm_kernel
    if seesaw:  # one [64, 64] box descriptor; no ONE_SYNC knob
        from tritonseek.kernels.mla_decode_seesaw import _mla_decode_seesaw_kernel as kernel

        del sig["v_desc"], sig["r_desc"], sig["ONE_SYNC"], consts["ONE_SYNC"]
        sig["EARLY"], consts["EARLY"] = "constexpr", early
        sig = dict(q_ptr=sig.pop("q_ptr"), c_desc=f"tensordesc<bf16[64, 64],{lr!r}>", **sig)
    src = GluonASTSource(kernel, sig, consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=M._MAXNREG))


def _tile_loops(ptx: str) -> list[list[str]]:
    """SASS of the innermost loops (backward branches) holding a value wgmma (HGMMA.64x256): the per-tile loops."""
    sass = sass_of(ptx)
    addr = {}
    for i, line in enumerate(sass):
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/", line)
        if m:
            addr[int(m.group(1), 16)] = i
    spans = []
    for i, line in enumerate(sass):
        m = re.search(r"@!?P\d BRA\s+0x([0-9a-f]+)", line)  # a loop's back edge (wait retries end unpredicated)
        if m and int(m.group(1), 16) in addr and addr[int(m.group(1), 16)] < i:
            start = addr[int(m.group(1), 16)]
            if any("HGMMA.64x256" in x for x in sass[start:i]):
                spans.append((start, i))
    inner = [(a, b) for a, b in spans if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans)]
    return [sass[a:b + 1] for a, b in inner]


@pytest.fixture(scope="module")
def sm90_wsm():
    """PTX, ptxas report and tile loops of the three schedules (WSM_SYNC 2 / 1 / 0 = seesaw; causal), compiled in
    parallel child processes (~10-30 s of one core each)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(sync):  # -1: the seesaw with SEESAW_EARLY
        ptx = ptx_in_fresh_process(__name__, "compile_sm90", 2, True, 240, 24, sync == 1, sync <= 0, sync < 0)
        return ptx, ptxas_report(ptx), _tile_loops(ptx)

    with ThreadPoolExecutor(4) as ex:
        futs = {v: ex.submit(one, v) for v in (0, 1, 2, -1)}
        return {v: f.result() for v, f in futs.items()}


@pytest.mark.parametrize("sync", [2, 1, 0, -1])
def test_wsm_compiles_for_sm90(sm90_wsm, sync):
    ptx, report, loops = sm90_wsm[sync]
    if sync > 0:
        # per consumer warpgroup: S = Q·K_wᵀ as 512/16 + 64/16 = 36 k-steps at N = 32 keys; O_w += P·V_w as two
        # K = 32 halves (one per warpgroup's P) of 2 k-steps each at N = 256 value columns
        n_s, n_o = "m64n32k16", 4
    else:
        # seesaw: each warpgroup's whole-tile S at N = 64 (36 k-steps), two value matmuls per pair of 4 k-steps
        # (SEESAW_EARLY: warpgroup 1's P0 matmul also in the one-tile branch)
        n_s, n_o = "m64n64k16", 8
    assert ptx.count(f"wgmma.mma_async.sync.aligned.{n_s}.f32.bf16.bf16") == 2 * 36
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16") == 2 * n_o + (4 if sync < 0 else 0)
    # TMA: 8 latent messages of 64 columns (128-byte swizzle) and the rope box (seesaw: 9 [64, 64] boxes)
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier") == 9
    assert "C7514" not in report and "C7512" not in report and "serialized" not in report, report  # async wgmma
    assert "C7508" not in report, report  # setmaxnreg honoured
    # ptxas spills per-sequence addresses of the warpgroups (capped at 240 registers; seen: 156-164 bytes); the
    # per-tile loops (one per consumer warpgroup) hold at most 2 local-memory accesses (seen 0, 0-2, 2)
    assert all(x <= 1024 for x in spill_store_bytes(report)), report
    assert len(loops) == 2
    for loop in loops:
        assert sum(("LDL" in x) or ("STL" in x) for x in loop) <= (0 if sync == 2 else 3)
        assert sum(f"HGMMA.64x{n_s[4:6]}x16" in x for x in loop) == 36
    assert sorted(sum("HGMMA.64x256x16" in x for x in loop) for loop in loops) == [n_o, n_o + (4 if sync < 0 else 0)]


def test_wsm_config_is_checked_and_falls_back_on_the_interpreter(device):
    """A WSM config is a valid mla_decode config; where Gluon cannot run (the CPU interpreter, d_qk 80) the tl
    kernel runs it (BLOCK_H 64) and matches the reference."""
    if device.type == "cuda":
        pytest.skip("interpreter fallback")
    from tests.kernels.test_mla_decode import assert_matches_ref, make_case
    from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
    from tritonseek.kernels.mla_decode_wsm import wsm_config
    from tritonseek.kernels.reference.mla import mla_decode_ref

    gen = torch.Generator().manual_seed(11)
    q, kv, bt, cs = make_case(device, 2, 2, 32, 80, 64, 64, [0, 70], gen)
    md = get_mla_metadata(cs, 2, 32, num_sm=2, config=wsm_config(2, 32))
    out = torch.full((2, 2, 32, 64), float("nan"), dtype=q.dtype)
    o, lse = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md, out=out)
    assert_matches_ref(o, lse, *mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=64))
    with pytest.raises(ValueError, match="WSM"):
        get_mla_metadata(cs, 2, 32, config=dict(wsm_config(2, 32), WSM="yes"))


# ----------------------------------------------------------------------------- H200 (gpu marker)

def _check_wsm(q, kv, bt, cs, causal=True, num_sm=None, **overrides):
    """mla_decode with a WSM config vs the fp32 reference (module tolerances), and per query row: cosine
    difference ≤ 1e-4 (a wrong half of the value columns or a wrong row would hide in the global figure)."""
    from tests.kernels.test_mla_decode import assert_matches_ref
    from tritonseek.kernels import mla_decode_wsm as M
    from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
    from tritonseek.kernels.reference.mla import mla_decode_ref

    batch, s_q, h, _ = q.shape
    md = get_mla_metadata(cs, s_q, h, num_sm=num_sm, config=dict(M.wsm_config(s_q, h), **overrides))
    out = torch.full((batch, s_q, h, 512), float("nan"), dtype=q.dtype, device=q.device)
    calls = [0]  # the dispatch must have run this kernel (not mla_decode_ws's or the tl one)
    real = M.launch_split_wsm

    def counted(*a):
        calls[0] += 1
        return real(*a)

    M.launch_split_wsm = counted
    try:
        o, lse = mla_decode(q, kv, bt, cs, causal=causal, metadata=md, out=out)
    finally:
        M.launch_split_wsm = real
    assert calls[0] == 1
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, causal=causal, head_dim_v=512)
    o, lse = assert_matches_ref(o, lse, ro, rlse)
    ro = ro.cpu().double().reshape(-1, 512)
    od = o.double().reshape(-1, 512)
    den = (od * od + ro * ro).sum(1)
    row_cd = torch.where(den > 0, 1 - 2 * (od * ro).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))
    assert row_cd.max().item() <= 1e-4, row_cd.max().item()
    return o, lse


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(64, 1), (128, 1), (64, 2), (128, 2), (32, 2), (16, 4), (64, 4),
                                                (48, 2)])
@pytest.mark.parametrize("page", [64, 256])
@pytest.mark.parametrize("sync", [0, 1, 2])
def test_wsm_real_shapes_gpu(device, num_heads, seqlen_q, page, sync):
    """Lengths 0, 1, 64, 65, 4096 and ragged ones (NaN in every unused slot), permuted blocks; 48 heads × 2 =
    96 rows: the second head tile holds 32 rows of this sequence and 32 past rows_total (never stored)."""
    gen = torch.Generator().manual_seed(num_heads * 100 + seqlen_q * 10 + page)
    lens = [0, 1, 64, 65, 4096, 777, 2049, 64 * 33 + 5]
    from tests.kernels.test_mla_decode import make_case

    _check_wsm(*make_case(device, len(lens), seqlen_q, num_heads, 576, 512, page, lens, gen), WSM_SYNC=sync)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(64, 1), (128, 2)])
@pytest.mark.parametrize("sched", ["balanced", "packed"])
@pytest.mark.parametrize("sync", [0, 1, 2])
def test_wsm_several_sequences_per_program_gpu(device, num_heads, seqlen_q, sched, sync):
    """4 programs per head tile: each walks several sequences (query reload and row-sum exchange barriers at
    every switch, split and unsplit sequences, empty ones in between), causal on and off."""
    from tests.kernels.test_mla_decode import make_case

    gen = torch.Generator().manual_seed(num_heads + seqlen_q + len(sched))
    lens = [0, 1, 64, 65, 4096, 777, 2049, 0, 300, 1, 5000, 130]
    case = make_case(device, len(lens), seqlen_q, num_heads, 576, 512, 64, lens, gen)
    _check_wsm(*case, num_sm=4, SCHED=sched, FILL_TOL=3, WSM_SYNC=sync)
    _check_wsm(*case, num_sm=4, causal=False, SCHED=sched, WSM_SYNC=sync)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(64, 1), (32, 2), (64, 2), (128, 1), (128, 2)])
@pytest.mark.parametrize("sync", [0, 1, 2])
def test_wsm_batch128_gpu(device, num_heads, seqlen_q, sync):
    """Batch 128, ragged lengths with zeros, the device's own program count (FlashMLA's benchmark shape class)."""
    from tests.kernels.test_mla_decode import make_case

    gen = torch.Generator().manual_seed(num_heads * 7 + seqlen_q)
    lens = torch.randint(0, 1200, (128,), generator=gen).tolist()  # host randn time of the cache
    lens[1] = lens[50] = 0
    lens[2], lens[3] = 1, 64
    _check_wsm(*make_case(device, 128, seqlen_q, num_heads, 576, 512, 64, lens, gen, extra_blocks=8), WSM_SYNC=sync)


@pytest.mark.gpu
@pytest.mark.parametrize("sync", [0, 1, 2])
def test_wsm_graph_replay_follows_lengths_gpu(device, sync):
    """Metadata + the WSM split + combine captured in one CUDA graph; new cache_seqlens written in place before
    a replay give the reference results for the new lengths."""
    from tests.kernels.test_mla_decode import assert_matches_ref, make_case
    from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
    from tritonseek.kernels.mla_decode_wsm import wsm_config
    from tritonseek.kernels.reference.mla import mla_decode_ref

    gen = torch.Generator().manual_seed(23)
    q, kv, bt, cs = make_case(device, 6, 2, 64, 576, 512, 64, [900, 64, 0, 1, 2000, 130], gen)
    out = torch.empty(6, 2, 64, 512, dtype=q.dtype, device=device)

    def step():
        md = get_mla_metadata(cs, 2, 64, config=dict(wsm_config(2, 64), WSM_SYNC=sync), max_seqlen_k=2000)
        return mla_decode(q, kv, bt, cs, metadata=md, out=out, check_ids=False)

    step()  # compiled outside the capture
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        lse = step()[1]
    # shorter lengths written in place (every slot past the old lengths is NaN, so are the new tails), then out
    # poisoned: the replay must follow the new lengths and write every element
    cs.copy_(torch.tensor([5, 63, 0, 0, 1999, 65], dtype=torch.int32))
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert_matches_ref(out, lse, *mla_decode_ref(q.float(), kv, bt, cs))


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q,page", [(64, 1, 64), (128, 2, 64), (48, 2, 256), (16, 4, 64)])
def test_wsm_seesaw_early_gpu(device, num_heads, seqlen_q, page):
    """SEESAW_EARLY (warpgroup 1's softmax before its value matmuls, P0 rescaled in registers): ragged lengths with
    0 / 1 / 64 / 65 (odd tile counts: the one-tile pair), several sequences per program on both schedules, causal
    on and off."""
    from tests.kernels.test_mla_decode import make_case

    gen = torch.Generator().manual_seed(num_heads * 3 + seqlen_q + page)
    lens = [0, 1, 64, 65, 4096, 777, 2049, 0, 300, 1, 5000, 130]
    case = make_case(device, len(lens), seqlen_q, num_heads, 576, 512, page, lens, gen)
    _check_wsm(*case, WSM_SYNC=0, SEESAW_EARLY=True)
    _check_wsm(*case, num_sm=4, WSM_SYNC=0, SEESAW_EARLY=True, SCHED="packed", FILL_TOL=3)
    _check_wsm(*case, num_sm=4, causal=False, WSM_SYNC=0, SEESAW_EARLY=True)
