"""mla_decode_ws (Gluon, warp-specialized MLA decode split kernel) against the fp32 reference.

Gluon has no interpreter, so on the CPU this file (a) compiles the kernel for sm_90a with Triton's own
compiler and ptxas (no GPU) and checks what the design relies on: bf16 wgmma with keys on the M side
(m64nBLOCK_H), TMA loads, and no register spills inside the per-tile loop; (b) checks the launcher's
errors and that a GLUON config falls back to the tl kernel where Gluon cannot run (interpreter). The
numerical properties run on the H200 (gpu marker) at DeepSeek's 576/512 layout.

Tolerances as in test_mla_decode.py (FlashMLA's check): cosine difference ≤ 1e-5 against the fp32
reference (p and out are rounded to bf16, ≈ 2^-9 each), |lse − lse_ref| ≤ 1e-3, rows that see no key
exactly out = 0 and lse = −inf, and no NaN anywhere (outputs start NaN-poisoned; unused cache slots are
NaN).
"""

from __future__ import annotations

import re

import pytest
import torch

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report
from tests.kernels.test_mla_decode import cos_diff, make_case
from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
from tritonseek.kernels.reference.mla import mla_decode_ref


def compile_sm90(block_h: int, stages: int = 2, causal: bool = True, defer_l: bool = True, wgs: int = 1,
                 pipe: bool = False, consumer_regs: int = 232, producer_regs: int = 40, qtma: bool = False,
                 trigger: bool = False, diag: bool = False, seqpf: bool = False,
                 btpf: bool = False, count: bool = False, otma: bool = False, part_tma: bool = False,
                 fuse: bool = False, steal: bool = False, rotate: bool = False, rev: bool = False,
                 diag_lite: bool = False):
    """Compile the kernel for sm_90a on any machine (Triton's compiler, no GPU); returns the kernel. rev: the
    diagnostic REV_PIDS (programs walk the spans in reverse; probe_mla_ws_timeline --rev)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from tritonseek.kernels import mla_decode_ws as W

    lv = W.smem_layout([64, 512], gl.bfloat16)
    lr = W.smem_layout([64, 64], gl.bfloat16)
    qv, qr = W.smem_layout([block_h, 512], gl.bfloat16), W.smem_layout([block_h, 64], gl.bfloat16)
    sig = dict(q_ptr="*bf16", v_desc=f"tensordesc<bf16[64, 512],{lv!r}>", r_desc=f"tensordesc<bf16[64, 64],{lr!r}>",
               qd_lat=f"tensordesc<bf16[{block_h}, 512],{qv!r}>" if qtma else "constexpr",
               qd_rope=f"tensordesc<bf16[{block_h}, 64],{qr!r}>" if qtma else "constexpr", bt_ptr="*i32", seqlens_ptr="*i32", sched_ptr="*i32", split_ptr="*i32",
               out_ptr="*bf16", lse_ptr="*fp32", opart_ptr="*bf16" if fuse or part_tma else "*fp32",
               lpart_ptr="*fp32")
    sig.update({n: "i32" for n in ("stride_qb", "stride_qs", "stride_qh", "stride_btb", "stride_ob", "stride_os",
                                   "stride_oh", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads",
                                   "seqlen_q", "page_shift", "num_spans")})
    sig["sm_scale_log2"] = "fp32"
    consts = dict(BLOCK_H=block_h, NUM_STAGES=stages, CAUSAL=causal, PRODUCER_REGS=producer_regs, DEFER_L=defer_l,
                  WGS=wgs, CONSUMER_REGS=consumer_regs, PIPE=pipe, QTMA=qtma, TRIGGER=trigger, DIAG=diag, SEQPF=seqpf,
                  BTPF=btpf, COUNT=count, OTMA=otma, PART_TMA=part_tma, FUSE=fuse, STEAL=steal, ROTATE=rotate,
                  REV_PIDS=rev, DIAG_LITE=diag_lite)
    if steal:
        sig["work_ptr"] = "*i32"
    else:
        consts["work_ptr"] = None
    if otma:
        sig["od_desc"] = sig["pd_desc"] = f"tensordesc<bf16[{block_h}, 512],{qv!r}>"
    else:
        consts.update(od_desc=None, pd_desc=None)
    if diag or diag_lite:
        sig["diag_ptr"] = "*i64"
    else:
        consts["diag_ptr"] = None
    if count or fuse:
        sig["cnt_ptr"] = "*i32"
    else:
        consts["cnt_ptr"] = None
    if not qtma:
        consts.update(qd_lat=None, qd_rope=None)
    sig.update({n: "constexpr" for n in consts})
    src = GluonASTSource(W._mla_decode_ws_kernel, sig, consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4, **({"maxnreg": W._MAXNREG_2WG} if wgs == 2 else {})))


def _hot_loops(ptx: str) -> list[list[str]]:
    """SASS of each consumer's per-tile loop (from its last ready-barrier wait to its stage release), via the
    cuobjdump that ships with Triton."""
    import os
    import subprocess
    import tempfile

    import triton

    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "k.ptx"), "w") as f:
            f.write(ptx)
        subprocess.run([os.path.join(bindir, "ptxas"), "--gpu-name", "sm_90a", os.path.join(d, "k.ptx"), "-o",
                        os.path.join(d, "k.cubin")], check=True, capture_output=True)
        sass = subprocess.run([os.path.join(bindir, "cuobjdump"), "-sass", os.path.join(d, "k.cubin")], check=True,
                              capture_output=True, text=True).stdout.splitlines()
    loops = []
    for end in [i for i, line in enumerate(sass) if "ARRIVE.TRANS64.A1T0" in line]:
        start = max(i for i, line in enumerate(sass[:end]) if "TRYWAIT" in line)
        loops.append(sass[start:end])
    return loops


# (rows, warpgroups, QTMA, knobs, STEAL, FUSE): 32 rows with the query prefetch (its two buffers fill 225.9 KB of shared
# memory), with and without the switch knobs (BTPF, SEQPF, OTMA with 16-bit partials: with them = the batch ≥ 64
# default, mla_decode._SWITCH), with them and STEAL (tail spans claimed in the kernel), with them and FUSE (16 and 32
# rows: the fused combine), 16 rows without (the small-batch default)
_COMPILED = [(16, 1, False, False, False, False), (32, 1, True, False, False, False),
             (64, 2, False, False, False, False), (32, 1, True, True, False, False), (32, 1, True, True, True, False), (32, 1, True, True, False, True),
             (16, 1, True, True, False, True)]


@pytest.fixture(scope="module")
def sm90_ptx():
    """PTX of the three configs, compiled in parallel child processes (each ~10-25 s of one core)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(k):
        # the 64-row config with PIPE and the 240/24 register split (232/40 left 4 spill accesses per tile)
        ptx = ptx_in_fresh_process(__name__, "compile_sm90", k[0], 2, True, True, k[1], k[1] == 2,
                                   *((240, 24) if k[1] == 2 else (232, 40)), k[2],
                                   *((False, False, True, True, False, True, True, k[5], k[4]) if k[3] else ()))
        return ptx, ptxas_report(ptx), _hot_loops(ptx)

    with ThreadPoolExecutor(len(_COMPILED)) as ex:
        futs = {k: ex.submit(one, k) for k in _COMPILED}
        return {k: f.result() for k, f in futs.items()}


@pytest.mark.parametrize("block_h,wgs,qtma,knobs,steal,fuse", _COMPILED)
def test_ws_compiles_for_sm90(sm90_ptx, block_h, wgs, qtma, knobs, steal, fuse):
    ptx, report, loops = sm90_ptx[(block_h, wgs, qtma, knobs, steal, fuse)]
    rows = block_h // wgs
    # per consumer warpgroup: Sᵀ = K·Qᵀ 512/16 + 64/16 = 36 k-steps; Oᵀ = Vᵀ·Pᵀ 8 M-blocks × 4 k-steps
    # (PIPE, the 64-row config here: one more Sᵀ issue site, the sequence's first tile before the loop)
    sites = 36 + 32 + (36 if wgs == 2 else 0)
    # (QTMA: the consumer's sequence body is unrolled twice, one copy per query buffer)
    assert ptx.count(f"wgmma.mma_async.sync.aligned.m64n{rows}k16.f32.bf16.bf16") == sites * wgs * (1 + qtma)
    # TMA: the 512-wide latent box goes as 8 messages of 64 columns (128-byte swizzle), the rope box as 1; QTMA:
    # the query rows the same way
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier") == 9 * (1 + qtma)
    # OTMA (knobs): out and the 16-bit partials by TMA stores, 2 messages per warp at 2 sites per copy (FUSE: out
    # only; a split sequence's piece goes by generic stores, which the arrival's release orders)
    assert ptx.count("cp.async.bulk.tensor.2d.global.shared") == (4 if fuse else 8 if knobs else 0)
    assert "C7514" not in report and "serialized" not in report, report  # wgmmas stay asynchronous
    # ptxas spills some per-sequence prologue/epilogue values (32 rows: ~40 registers of addresses; two
    # warpgroups capped at 240 registers: more); the per-tile loops hold at most one local-memory access
    # (seen: 0 at 16/32 rows on one warpgroup, 1 + 0 on two with PIPE).
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill stores", report)]
    # (FUSE at 16 rows: 4 bytes, outside the per-tile loop, session 18's merge as much as this one's)
    assert all(x <= {16: 16 if fuse else 0, 32: 256, 64: 1024}[block_h] for x in spills), report
    # STEAL: one ticket per span (a lane-0 atomic), handed over by a 2-barrier slot (two more wait → arrive pieces)
    assert ptx.count("atom.relaxed.gpu.global.add.u32") == int(steal)
    loops = [x for x in loops if sum("HGMMA.64x" in y for y in x)] if steal else loops
    if fuse:
        # FUSE: ONE arrival per warpgroup and piece (a predicated acq_rel atomic between warpgroup bar.syncs, one site
        # per loop copy), every thread's acquire re-read; no per-thread acq_rel atomics (session 18's arrival)
        assert ptx.count("atom.global.gpu.acq_rel.add.u32") == 2 and "atom.acq_rel.gpu" not in ptx
        assert ptx.count("ld.acquire.gpu.global.u32") == 2
        assert re.search(r"@%p\d+ atom\.global\.gpu\.acq_rel\.add\.u32", ptx)
        # the per-tile loop (a slice holding no other release) of each copy is spill-free; the other slices run on
        # to the query-buffer release through the piece's store, arrival and merge (per sequence, not per tile)
        tiles = [x for x in loops if not any("ARRIVE.TRANS64.A1T0" in y for y in x)]
        assert len(tiles) == 2 and all(not any(("LDL" in y) or ("STL" in y) for y in x) for x in tiles)
        assert all(sum("HGMMA.64x" in y for y in x) == 36 + 32 for x in loops)
        return
    # QTMA: two loop copies, each seen twice (up to the stage release and up to the query-buffer release)
    assert len(loops) == wgs * (4 if qtma else 1)
    for loop in loops:
        assert sum(("LDL" in x) or ("STL" in x) for x in loop) <= (0 if wgs == 1 and not qtma else 1)
        assert sum("HGMMA.64x" in x for x in loop) == 36 + 32


def compile_combine_sm90(spin: bool):
    """The combine kernel (mla_decode_tiles._mla_combine_kernel, tl) compiled for sm_90a without a GPU, as
    mla_decode launches it after a 32-row Gluon split (16-bit partials, 8 rows per program)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tritonseek.kernels.mla_decode_tiles import _mla_combine_kernel

    sig = dict(split_ptr="*i32", out_ptr="*bf16", lse_ptr="*fp32", opart_ptr="*bf16", lpart_ptr="*fp32",
               **{n: "i32" for n in ("stride_ob", "stride_os", "stride_oh", "stride_lb", "stride_lh", "num_heads",
                                     "seqlen_q", "head_dim_v")})
    consts = dict(BLOCK_ROWS=8, BLOCK_DVP=512, NUM_STAGES=3, PDL=False, SPIN=spin, SPIN_THREADS=128,
                  SPIN_LIMIT=1 << 22, SPIN_EARLY_EXIT=True)
    if spin:
        sig["cnt_ptr"] = "*i32"
    else:
        consts["cnt_ptr"] = None
    sig.update({n: "constexpr" for n in consts})
    return triton.compile(ASTSource(_mla_combine_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4))


def test_spin_release_orders_tma_partials_sm90():
    """COMBINE_SPIN with TMA-stored 16-bit partials (the batch ≥ 64 knobs + COUNT, 32 rows): a piece's release is
    deferred to the next segment's start (one site per loop copy) or the span's end (one site), and every release is
    one asm block that first waits for the thread's TMA stores to complete (cp.async.bulk.wait_group without .read),
    fences them from the async proxy, then red.release.gpu; no release right after a store; the per-tile loops stay
    as spill-free as without COUNT. The combine polls with one thread (relaxed loads + nanosleep, then
    fence.acq_rel.gpu, then bar.sync), not with a per-thread acquire loop. (Ordering on the device: the spin gpu
    tests.)"""
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", 32, 2, True, True, 1, False, 232, 40, True, True, False,
                               True, True, True, True, True, False, False)
    rel = re.findall(r"cp\.async\.bulk\.wait_group 0; fence\.proxy\.async\.global; red\.release\.gpu\.global\.add\.s32",
                     ptx)
    assert len(rel) == 3 and ptx.count("red.release.gpu") == 3, (len(rel), ptx.count("red.release.gpu"))
    # the per-tile loops as in test_ws_compiles_for_sm90's QTMA configs (seen: 0 / 1 / 0 / 1, as without COUNT)
    for loop in _hot_loops(ptx):
        assert sum(("LDL" in x) or ("STL" in x) for x in loop) <= 1
    cptx = ptx_in_fresh_process(__name__, "compile_combine_sm90", True)
    assert cptx.count("ld.relaxed.gpu.global.b32") == 1 and "ld.acquire" not in cptx
    assert cptx.count("nanosleep") == 1 and cptx.count("fence.acq_rel.gpu") == 1
    j = cptx.index("fence.acq_rel.gpu")
    assert "bar.sync" in cptx[j:j + 400]
    assert "griddepcontrol.wait" in cptx  # the grid never completes before the split kernel
    assert "ld.relaxed" not in ptx_in_fresh_process(__name__, "compile_combine_sm90", False)


def test_ws_rejects_non_cuda():
    from tritonseek.kernels.mla_decode_ws import mla_decode_ws

    gen = torch.Generator().manual_seed(0)
    q, kv, bt, cs = make_case("cpu", 2, 1, 16, 576, 512, 64, [5, 70], gen)
    with pytest.raises(ValueError, match="CUDA"):
        mla_decode_ws(q, kv, bt, cs)


def test_gluon_config_falls_back_to_tl_on_the_interpreter(device):
    """A GLUON=True config (ws_config) runs the tl kernel where Gluon cannot (CPU interpreter, small dims)."""
    if device.type == "cuda":
        pytest.skip("interpreter fallback")
    from tritonseek.kernels.mla_decode_ws import ws_config

    gen = torch.Generator().manual_seed(3)
    lens = [0, 65, 130]
    q, kv, bt, cs = make_case(device, 3, 2, 8, 80, 64, 64, lens, gen)
    md = get_mla_metadata(cs, 2, 8, num_sm=4, config=ws_config(2, 8))
    o, lse = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=64)
    assert cos_diff(o.float(), ro) <= 1e-5
    assert torch.equal(torch.isinf(lse), torch.isinf(rlse))


# ----------------------------------------------------------------------------- H200 (gpu marker)

def _check_ws(q, kv, bt, cs, causal=True, num_sm=None, via_dispatch=False, **overrides):
    from tritonseek.kernels.mla_decode_ws import fuse_combine, mla_decode_ws, ws_config

    batch, s_q, h, _ = q.shape
    md = get_mla_metadata(cs, s_q, h, num_sm=num_sm, config=dict(ws_config(s_q, h), **overrides))
    out = torch.full((batch, s_q, h, 512), float("nan"), dtype=q.dtype, device=q.device)
    # FUSE on a q / out it applies to: the split kernel merges, no combine kernel runs
    assert fuse_combine(md, q, out) == bool(overrides.get("FUSE") and q.is_contiguous() and s_q * h in (16, 32))
    if via_dispatch:
        o, lse = mla_decode(q, kv, bt, cs, causal=causal, metadata=md, out=out)
    else:
        o, lse = mla_decode_ws(q, kv, bt, cs, causal=causal, metadata=md, out=out)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, causal=causal, head_dim_v=512)
    o, lse, ro, rlse = o.float().cpu(), lse.cpu(), ro.cpu(), rlse.cpu()
    assert not torch.isnan(o).any(), "NaN reached out (poisoned buffer not fully written or cache NaN leaked)"
    assert not torch.isnan(lse).any()
    empty = torch.isinf(rlse)
    assert torch.equal(torch.isinf(lse) & (lse < 0), empty)
    assert torch.all(o.permute(0, 2, 1, 3)[empty] == 0)
    if (~empty).any():
        assert (lse[~empty] - rlse[~empty]).abs().max().item() <= 1e-3
    assert cos_diff(o, ro) <= 1e-5
    if md.counters is not None:  # COMBINE_SPIN / FUSE: every piece counter zeroed again for the next call
        assert int(md.counters.abs().sum()) == 0
    return o, lse


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads", [16, 32, 64, 128])
@pytest.mark.parametrize("seqlen_q", [1, 2])
@pytest.mark.parametrize("page", [64, 256])
def test_ws_real_shapes_gpu(device, num_heads, seqlen_q, page):
    """Lengths 0, 1, page, page + 1, 4096 and ragged ones (NaN in every unused slot), permuted blocks."""
    gen = torch.Generator().manual_seed(num_heads * 100 + seqlen_q * 10 + page)
    lens = [0, 1, page, page + 1, 4096, 777, 2049, 64 * 33 + 5]
    _check_ws(*make_case(device, len(lens), seqlen_q, num_heads, 576, 512, page, lens, gen))


@pytest.mark.gpu
@pytest.mark.parametrize("batch,num_heads,seqlen_q", [(1, 16, 1), (1, 32, 1), (4, 16, 2), (128, 16, 1),
                                                      (128, 32, 1), (128, 16, 2)])
def test_ws_batches_varlen_gpu(device, batch, num_heads, seqlen_q):
    """Batch 1..128 with random lengths (some 0) on the device's real schedule (all SMs)."""
    gen = torch.Generator().manual_seed(batch * 7 + num_heads + seqlen_q)
    lens = torch.randint(0, 3000 if batch <= 4 else 1200, (batch,), generator=gen).tolist()  # host randn time
    if batch > 2:
        lens[1] = 0
    lens[0] = max(lens[0], 1)
    _check_ws(*make_case(device, batch, seqlen_q, num_heads, 576, 512, 64, lens, gen, extra_blocks=8))


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 1), (16, 2), (64, 1)])
def test_ws_per_tile_row_sums_gpu(device, num_heads, seqlen_q):
    """DEFER_L off (row sums reduced across the warpgroup every tile) gives the reference results."""
    gen = torch.Generator().manual_seed(num_heads + seqlen_q)
    lens = [0, 1, 64, 65, 4096, 777]
    _check_ws(*make_case(device, len(lens), seqlen_q, num_heads, 576, 512, 64, lens, gen), DEFER_L=False)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 1), (32, 1), (64, 1), (128, 2)])
def test_ws_pipelined_scores_gpu(device, num_heads, seqlen_q):
    """PIPE (the next tile's scores issued before this tile's softmax) gives the reference results, with
    tails, empty rows, one-tile rows, page 128 and causal off."""
    gen = torch.Generator().manual_seed(num_heads * 3 + seqlen_q)
    lens = [0, 1, 64, 65, 4096, 777, 200, 129]
    _check_ws(*make_case(device, len(lens), seqlen_q, num_heads, 576, 512, 64, lens, gen), PIPE=True)
    _check_ws(*make_case(device, 4, seqlen_q, num_heads, 576, 512, 128, [3000, 128, 1, 129], gen), PIPE=True,
              causal=False)


@pytest.mark.gpu
def test_ws_not_causal_and_dispatch_gpu(device):
    """causal=False, and mla_decode with a GLUON config (the dispatch path) gives the same results."""
    gen = torch.Generator().manual_seed(5)
    lens = [3, 64, 65, 1000]
    case = make_case(device, 4, 2, 16, 576, 512, 64, lens, gen)
    _check_ws(*case, causal=False)
    o1, l1 = _check_ws(*case, causal=True)
    o2, l2 = _check_ws(*case, causal=True, via_dispatch=True)
    assert torch.equal(o1, o2) and torch.equal(l1, l2)


@pytest.mark.gpu
def test_ws_graph_replay_follows_lengths_gpu(device):
    """Metadata + the Gluon split + combine captured in one CUDA graph; new cache_seqlens written in place
    before a replay give the reference results for the new lengths (no host sync, fixed grid)."""
    from tritonseek.kernels.mla_decode_ws import mla_decode_ws, ws_config

    gen = torch.Generator().manual_seed(17)
    q, kv, bt, cs = make_case(device, 6, 2, 16, 576, 512, 64, [900, 64, 0, 1, 2000, 130], gen)
    cfg = ws_config(2, 16)
    out = torch.empty(6, 2, 16, 512, dtype=q.dtype, device=device)

    def step():
        md = get_mla_metadata(cs, 2, 16, config=cfg, max_seqlen_k=2000)
        return mla_decode_ws(q, kv, bt, cs, metadata=md, out=out)

    step()  # compile outside capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        _, lse = step()
    cs.copy_(torch.tensor([5, 63, 0, 0, 1999, 65], dtype=torch.int32))  # ≤ the old ones: slots past those are NaN
    _replay_and_check(g, out, lse, q, kv, bt, cs)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 1), (16, 2), (32, 1), (3, 1), (8, 3)])
@pytest.mark.parametrize("sched", ["balanced", "packed"])
def test_ws_query_tma_gpu(device, num_heads, seqlen_q, sched):
    """QTMA (the producer TMAs each sequence's query rows into one of two buffers): ragged lengths with 0s,
    several sequences per program (4 programs) on both schedules, row counts below the tile (its other rows
    are the next sequence's, or zero-filled past the end of q, and never stored)."""
    gen = torch.Generator().manual_seed(num_heads * 10 + seqlen_q)
    lens = [0, 1, 64, 65, 4096, 777, 2049, 64 * 33 + 5, 0, 300, 1, 5000]
    case = make_case(device, len(lens), seqlen_q, num_heads, 576, 512, 64, lens, gen)
    _check_ws(*case, num_sm=4, QTMA=True, SCHED=sched, FILL_TOL=3)
    q, kv, bt, cs = case  # a non-contiguous q takes the register path (QTMA needs q's rows contiguous)
    wide = torch.zeros(*q.shape[:3], 640, dtype=q.dtype, device=device)
    wide[..., :576] = q
    _check_ws(wide[..., :576], kv, bt, cs, num_sm=4, QTMA=True)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 1), (32, 1)])
def test_ws_query_tma_batch128_gpu(device, num_heads, seqlen_q):
    """QTMA on the device's own program count at batch 128 (ragged, some 0), balanced schedule."""
    gen = torch.Generator().manual_seed(num_heads + 7)
    lens = torch.randint(0, 1200, (128,), generator=gen).tolist()
    lens[1] = lens[50] = 0
    _check_ws(*make_case(device, 128, seqlen_q, num_heads, 576, 512, 64, lens, gen, extra_blocks=8), QTMA=True)


# mla_decode._SWITCH's kernel knobs with the big-batch schedule and query prefetch (the batch >= 64 default)
_ALL = dict(BTPF=True, SEQPF=True, OTMA=True, PART16=True, SCHED="packed", FILL_TOL=3, QTMA=True)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 1), (16, 2), (32, 1), (3, 1), (8, 3)])
@pytest.mark.parametrize("combine", ["kernel", "spin", "fuse"])
def test_ws_prefetch_and_spin_combine_gpu(device, num_heads, seqlen_q, combine):
    """BTPF (block ids one tile ahead), SEQPF (next length ahead), PART16 (16-bit partials: one more bf16 rounding
    of a split sequence's output, inside the cos-diff 1e-5 bound, lse untouched) and OTMA (out / 16-bit partials by
    TMA stores from the finished query buffer; 3 and 24 rows: fewer rows than the tile, so the register stores),
    alone, with COMBINE_SPIN (the combine waits per sequence on counters the split kernel releases; partials
    then from registers) and with FUSE (no combine kernel: the program counting a sequence's last piece merges its
    partials, empty sequences written by the split kernel; leading 0 = program 0's extra walk): ragged lengths with 0s,
    1, page ± 1 on 4 programs (several sequences and splits per program), pages 64 and 256 (several tiles per
    page), the same call 3 times (the combine zeroes its counters for the next call), one 6000-key sequence cut
    into many pieces on 8 programs, and the benchmark's batch-128 N(4096, 2048) lengths on all SMs."""
    if combine != "kernel" and num_heads * seqlen_q not in (16, 32):
        pytest.skip("COMBINE_SPIN / FUSE checked on the tile-filling row counts")
    cfg = dict(_ALL, COMBINE_SPIN=combine == "spin", FUSE=combine == "fuse")
    gen = torch.Generator().manual_seed(num_heads * 10 + seqlen_q)
    lens = [0, 1, 64, 65, 4096, 777, 2049, 64 * 33 + 5, 0, 300, 1, 5000]
    for page in (64, 256):
        case = make_case(device, len(lens), seqlen_q, num_heads, 576, 512, page, lens, gen)
        for _ in range(3):
            _check_ws(*case, num_sm=4, **cfg)
    # one long sequence cut into many pieces (8 programs): FUSE's merge over n_split > 2 pieces
    case = make_case(device, 5, seqlen_q, num_heads, 576, 512, 64, [6000, 3, 0, 700, 65], gen)
    for _ in range(2):
        _check_ws(*case, num_sm=8, **cfg)
    if num_heads * seqlen_q in (16, 32):  # the benchmark's shape
        lens = [max(int(x), seqlen_q) for x in torch.normal(4096.0, 2048.0, (128,), generator=gen).tolist()]
        lens[7] = 0
        _check_ws(*_device_case(device, seqlen_q, num_heads, lens, seed=num_heads), **cfg)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 1), (32, 1), (16, 2)])
@pytest.mark.parametrize("programs", [2, 3, 5, 7])
def test_fuse_merge_pieces_gpu(device, num_heads, seqlen_q, programs):
    """FUSE's merge (_merge_parts) over 2 to 6 pieces: a 5000-key sequence next to short ones on 2-7 programs (one
    piece per program), 3 calls on the same metadata (counters re-armed), NaN in unused slots; checks of _check_ws."""
    from tritonseek.kernels.mla_decode_ws import ws_config

    gen = torch.Generator().manual_seed(programs * 7 + num_heads)
    case = make_case(device, 5, seqlen_q, num_heads, 576, 512, 64, [5000, 3, 0, 130, 65], gen)
    md = get_mla_metadata(case[3], seqlen_q, num_heads, num_sm=programs,
                          config=dict(ws_config(seqlen_q, num_heads), **dict(_ALL, FUSE=True)))
    assert int(md.split[0, 1]) >= min(programs, 5)  # the long sequence is cut into one piece per program (7: 6)
    for _ in range(3):
        _check_ws(*case, num_sm=programs, **dict(_ALL, FUSE=True))


def _replay_and_check(g, out, lse, q, kv, bt, cs):
    """Replay graph g (which writes out / lse) and compare them with the reference on the current cache_seqlens cs."""
    g.replay()
    torch.cuda.synchronize()
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs)
    assert cos_diff(out.float().cpu(), ro.cpu()) <= 1e-5
    empty = torch.isinf(rlse.cpu())
    assert torch.equal(torch.isinf(lse.cpu()), empty)
    assert (lse.cpu()[~empty] - rlse.cpu()[~empty]).abs().max().item() <= 1e-3


def _device_case(device, seqlen_q, num_heads, lens, seed, page=64):
    """make_case built on the device (batch 128 × ~4096 keys is 1.3 GB of cache: too slow on the host)."""
    g = torch.Generator(device=device).manual_seed(seed)
    batch, max_blocks = len(lens), -(-max(lens) // page) + 1
    num_blocks = batch * max_blocks
    kv = torch.randn(num_blocks, page, 1, 576, generator=g, device=device, dtype=torch.bfloat16)
    bt = torch.randperm(num_blocks, generator=g, device=device).view(batch, max_blocks).int()
    cs = torch.tensor(lens, dtype=torch.int32, device=device)
    pos = torch.arange(max_blocks * page, device=device)
    unused = pos[None, :] >= cs[:, None]  # [batch, keys] slots past each length: NaN
    rows = bt.long()[:, pos // page] * page + pos % page
    kv.view(-1, 576)[rows[unused]] = float("nan")
    q = torch.randn(batch, seqlen_q, num_heads, 576, generator=g, device=device, dtype=torch.bfloat16)
    return q, kv, bt, cs


@pytest.mark.gpu
@pytest.mark.parametrize("combine", ["kernel", "spin", "fuse", "fuse_rotate"])
def test_ws_spin_combine_graph_replay_gpu(device, combine):
    """The batch >= 64 knobs (_ALL: BTPF, SEQPF, OTMA, PART16, packed schedule, QTMA), alone, with COMBINE_SPIN or FUSE,
    inside a CUDA graph with the metadata kernel and two calls on it (two layers): replays with new lengths (written
    in place) and repeated replays of the same lengths all give the reference results (spin counters zeroed)."""
    from tritonseek.kernels.mla_decode_ws import ws_config

    _graph_two_layers(device, dict(ws_config(1, 32), **_ALL, COMBINE_SPIN=combine == "spin",
                                   FUSE=combine.startswith("fuse"), ROTATE=combine == "fuse_rotate"), 23)


def _graph_two_layers(device, cfg, seed):
    """get_mla_metadata + two mla_decode_ws calls on it (two layers) in one CUDA graph (8 sequences, 6 programs, 32
    rows), replayed twice on each of two new length sets (written in place), each replay against the reference."""
    from tritonseek.kernels.mla_decode_ws import mla_decode_ws

    gen = torch.Generator().manual_seed(seed)
    lens = [900, 64, 0, 1, 2000, 130, 4000, 3000]
    q, kv, bt, cs = make_case(device, len(lens), 1, 32, 576, 512, 64, lens, gen)
    out = torch.empty(len(lens), 1, 32, 512, dtype=q.dtype, device=device)

    def step():
        md = get_mla_metadata(cs, 1, 32, num_sm=6, config=cfg, max_seqlen_k=4000)
        o1, _ = mla_decode_ws(q, kv, bt, cs, metadata=md, out=out)
        return mla_decode_ws(q, kv, bt, cs, metadata=md, out=o1)  # a second layer on the same metadata

    step()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        _, lse = step()
    # new lengths never above the ones the cache was filled for (slots past those are NaN; s16's first version gave
    # sequence 2 one such key here, and the reference read the same NaN: the "failures" of W3/W4/the final pass)
    for new in ([5, 63, 0, 0, 1999, 65, 3999, 2999], [899, 64, 0, 1, 2000, 130, 4000, 3000]):
        cs.copy_(torch.tensor(new, dtype=torch.int32))
        for _ in range(2):
            out.fill_(float("nan"))
            _replay_and_check(g, out, lse, q, kv, bt, cs)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 1), (16, 2), (32, 1)])
def test_default_big_batch_gpu(device, num_heads, seqlen_q):
    """mla_decode's own default at batch 128 (mla_decode._BIG_BATCH_WS: packed/balanced schedule, QTMA and the
    _SWITCH knobs) on the benchmark's N(4096, 2048) lengths (one 0), NaN in every unused slot, called twice on the
    same metadata; 32 sequences against the reference."""
    _check_big_batch(device, num_heads, seqlen_q, None)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 2), (32, 1)])
@pytest.mark.parametrize("steal", [(132, 8, False), (66, 4, False), (132, 8, True)])
def test_steal_big_batch_gpu(device, num_heads, seqlen_q, steal):
    """The batch-128 default with STEAL tail spans (the tail claimed by the programs in the kernel, or with
    STEAL_WAVE as a second wave of programs): same checks as the default; the ticket counters re-armed (0)."""
    _check_big_batch(device, num_heads, seqlen_q, dict(STEAL=steal[0], STEAL_PCT=steal[1], STEAL_WAVE=steal[2]))


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(16, 1), (16, 2), (32, 1)])
@pytest.mark.parametrize("over", [dict(FUSE=True, ROTATE=True), dict(ROTATE=True), dict(FUSE=True)])
def test_rotate_big_batch_gpu(device, num_heads, seqlen_q, over):
    """The batch-128 default with ROTATE (each span's last sequence piece first) and / or FUSE (the split kernel
    merges the split sequences, no combine kernel): same checks as the default (FUSE's counters re-armed)."""
    _check_big_batch(device, num_heads, seqlen_q, over)


def _check_big_batch(device, num_heads, seqlen_q, over):
    from tritonseek.kernels.mla_decode import _SWITCH, default_config

    gen = torch.Generator().manual_seed(num_heads + seqlen_q)
    lens = [max(int(x), seqlen_q) for x in torch.normal(4096.0, 2048.0, (128,), generator=gen).tolist()]
    lens[3] = 0
    q, kv, bt, cs = _device_case(device, seqlen_q, num_heads, lens, seed=num_heads + seqlen_q)
    cfg = None if over is None else dict(default_config(seqlen_q, num_heads, 128, hopper=True), **over)
    md = get_mla_metadata(cs, seqlen_q, num_heads, config=cfg)
    assert all(md.config.get(k) == v for k, v in _SWITCH.items())
    idx = list(range(31)) + [max(range(128), key=lambda i: lens[i])]
    ro, rlse = mla_decode_ref(q[idx].float(), kv, bt[idx], cs[idx])
    for _ in range(2):
        out = torch.full((128, seqlen_q, num_heads, 512), float("nan"), dtype=q.dtype, device=device)
        o, lse = mla_decode(q, kv, bt, cs, metadata=md, out=out, check_ids=False)
        assert not torch.isnan(o).any() and not torch.isnan(lse).any()
        o, lse = o[idx].float().cpu(), lse[idx].cpu()
        empty = torch.isinf(rlse.cpu())
        assert torch.equal(torch.isinf(lse) & (lse < 0), empty)
        assert (lse[~empty] - rlse.cpu()[~empty]).abs().max().item() <= 1e-3
        assert cos_diff(o, ro.cpu()) <= 1e-5
        if md.work_counter is not None:
            assert int(md.work_counter.abs().sum()) == 0  # STEAL: the last ticket's taker re-armed the counter
    if md.counters is not None:
        assert int(md.counters.abs().sum()) == 0  # every combine program zeroed its sequence's counters


@pytest.mark.gpu
@pytest.mark.parametrize("sched", ["balanced", "packed"])
def test_ws_steal_graph_replay_gpu(device, sched):
    """STEAL (8 tail spans, 30 % of the work, 6 programs) with the batch >= 64 knobs inside a CUDA graph with the
    metadata kernel and two calls on it (two layers): replays with new lengths and repeated replays give the
    reference results (each launch re-arms its ticket counter; the packed schedule leaves the tail spans empty)."""
    from tritonseek.kernels.mla_decode_ws import ws_config

    _graph_two_layers(device, dict(ws_config(1, 32), **dict(_ALL, SCHED=sched), STEAL=8, STEAL_PCT=30), 29)
