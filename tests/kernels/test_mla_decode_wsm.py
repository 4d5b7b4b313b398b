"""mla_decode's WSM split kernel (kernels/mla_decode_wsm.py: Gluon, queries on the wgmma M side, the seesaw
schedule of two consumer warpgroups) against the fp32 reference.

Gluon has no interpreter, so on the CPU this file compiles the kernel for sm_90a with Triton's compiler and
ptxas (no GPU) and checks what the design relies on: m64n64k16 score wgmmas and m64n256k16 value wgmmas, TMA
loads, asynchronous (never serialized) wgmmas and at most a few local-memory accesses in the per-tile loops;
and that a WSM config falls back to the tl kernel where Gluon cannot run. The numerical properties run on the
H200 (gpu marker) at DeepSeek's 576/512 layout.

Tolerances as in test_mla_decode.py (FlashMLA's check): cosine difference ≤ 1e-5 against the fp32
reference (p and out are rounded to bf16, ≈ 2^-9 each), |lse − lse_ref| ≤ 1e-3, rows that see no key
exactly out = 0 and lse = −inf, and no NaN anywhere (outputs start NaN-poisoned; unused cache slots are NaN);
per query row a cosine difference ≤ 1e-4 (a wrong half of the value columns would hide in the global figure).
"""

from __future__ import annotations

import re

import pytest
import torch

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, sass_of, spill_store_bytes


def compile_sm90(stages: int = 2, causal: bool = True, consumer_regs: int = 240, producer_regs: int = 24,
                 qtma: bool = True, seqpf: bool = False, part16: bool = True, diag: bool = False,
                 ovec: int = 2, otma: bool = False, sm1: int = 0):
    """Compile the WSM split kernel for sm_90a on any machine (Triton's compiler, no GPU); returns the kernel.
    qtma / seqpf / ovec / otma / sm1: the QTMA / SEQPF / OVEC / OTMA / SM1 knobs (OTMA: out and, with part16, the
    partials by TMA stores; needs qtma); part16: 16-bit partials; diag: the DIAG stamps; the
    defaults are mla_decode's default WSM config (mla_decode_config._WSM_KNOBS)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from tritonseek.kernels import mla_decode_wsm as M
    from tritonseek.kernels.mla_decode_ws import smem_layout

    box = smem_layout([64, 64], gl.bfloat16)
    sig = dict(q_ptr="*bf16", c_desc=f"tensordesc<bf16[64, 64],{box!r}>", bt_ptr="*i32", seqlens_ptr="*i32",
               sched_ptr="*i32", split_ptr="*i32", out_ptr="*bf16", lse_ptr="*fp32",
               opart_ptr="*bf16" if part16 else "*fp32", lpart_ptr="*fp32")
    sig.update({n: "i32" for n in ("stride_qb", "stride_qs", "stride_qh", "stride_btb", "stride_ob", "stride_os",
                                   "stride_oh", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads",
                                   "seqlen_q", "page_shift")})
    sig["sm_scale_log2"] = "fp32"
    consts = dict(NUM_STAGES=stages, CAUSAL=causal, PRODUCER_REGS=producer_regs, CONSUMER_REGS=consumer_regs)
    if qtma:
        qbox = smem_layout([64, 512], gl.bfloat16)
        sig["qd_lat"] = f"tensordesc<bf16[64, 512],{qbox!r}>"
        sig["qd_rope"] = f"tensordesc<bf16[64, 64],{box!r}>"
    else:
        consts.update(qd_lat=None, qd_rope=None)
    consts.update(QTMA=qtma, SEQPF=seqpf, DIAG=diag, OVEC=ovec, OTMA=otma, PART_TMA=otma and part16,
                  SM1=sm1)
    if otma:
        obox = smem_layout([64, 256], gl.bfloat16)
        sig["od_desc"] = f"tensordesc<bf16[64, 256],{obox!r}>"
        if part16:
            sig["pd_desc"] = f"tensordesc<bf16[64, 256],{obox!r}>"
        else:
            consts["pd_desc"] = None
    else:
        consts.update(od_desc=None, pd_desc=None)
    if diag:
        sig["diag_ptr"] = "*i64"
    else:
        consts["diag_ptr"] = None
    sig.update({n: "constexpr" for n in consts})
    # the JIT's specialization of 16-byte-aligned pointers (what a real launch gets), so stores vectorize as there
    names = M._mla_decode_wsm_kernel.arg_names
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    src = GluonASTSource(M._mla_decode_wsm_kernel, sig, consts, attrs)
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
    """PTX, ptxas report and tile loops of the default config (causal), compiled in a child process (~10-30 s)."""
    ptx = ptx_in_fresh_process(__name__, "compile_sm90")
    return ptx, ptxas_report(ptx), _tile_loops(ptx)


def test_wsm_compiles_for_sm90(sm90_wsm):
    ptx, report, loops = sm90_wsm
    # each warpgroup's whole-tile S = Q·Kᵀ at N = 64 keys: 512/16 + 64/16 = 36 k-steps; two value matmuls per
    # pair of tiles (its own P from registers, the other's from shared memory), 4 k-steps each at N = 256
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16") == 2 * 36
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16") == 2 * 8
    # TMA: a tile as 9 [64, 64] boxes (8 latent + rope), each on its own barrier; QTMA: the query tile as 9 more
    # (the [64, 512] latent box issued as 8 [64, 64] copies of the 128-byte swizzle, + rope)
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier") == 9 + 9
    # wgmmas stay asynchronous (C7512: serialized when an accumulator is in flight across a branch or a wait)
    assert "C7514" not in report and "C7512" not in report and "serialized" not in report, report
    assert "C7508" not in report, report  # setmaxnreg honoured
    # ptxas spills per-sequence addresses (consumers capped at 240 registers; seen: 96-160 bytes); the per-tile loops
    # (one per consumer warpgroup) hold at most 6 local-memory accesses (seen 1 and 5; ~4000 cycles per pair of tiles)
    assert all(x <= 1024 for x in spill_store_bytes(report)), report
    assert len(loops) == 2
    for loop in loops:
        assert sum(("LDL" in x) or ("STL" in x) for x in loop) <= 6
        assert sum("HGMMA.64x64x16" in x for x in loop) == 36
        assert sum("HGMMA.64x256x16" in x for x in loop) == 8
    # OVEC 2 + PART16: out and partials by 16-byte stores (2-byte st.global.b16 before: strides of unknown alignment)
    assert "st.global.b16" not in ptx and ptx.count("st.global.v4.b32") >= 32 + 32


@pytest.mark.parametrize("knobs", [dict(qtma=False, ovec=0, part16=False), dict(seqpf=True, diag=True), dict(ovec=1),
                                   dict(part16=False), dict(otma=True), dict(otma=True, part16=False),
                                   dict(sm1=1), dict(sm1=2)],
                         ids=["pre_s19", "seqpf_diag", "ovec1", "fp32_partials", "otma", "otma_fp32_partials",
                              "sm1_before", "sm1_during"])
def test_wsm_knobs_compile_for_sm90(knobs):
    """Other builds than the default (QTMA + OVEC 2 + PART16): the one before them (no QTMA: the consumers load the
    query rows; 2-byte out stores), SEQPF with the DIAG stamps, OVEC 1 (4-byte bf16-pair stores), fp32 partials
    (their 8-byte stores kept under OVEC 2), OTMA (out and 16-bit partials by TMA stores: no 16-byte register stores
    left; fp32 partials still 8-byte stores): the same wgmmas, never serialized, the query TMA boxes when QTMA, at
    most 6 local-memory accesses per tile loop (seen 0-5; the pre-s19 build 0-2; SM1 1: 6 and 5, reloads of one
    spilled address). SM1 1 / 2 (warpgroup 1's softmax before / during its P0·V) keep one value-wgmma site per operand
    source: P1 is carried past P0·V in registers, not a second copy of the code."""
    full = {**dict(qtma=True, seqpf=False, part16=True, diag=False, ovec=2, otma=False, sm1=0), **knobs}
    args = (2, True, 240, 24, full["qtma"], full["seqpf"], full["part16"], full["diag"], full["ovec"], full["otma"],
            full["sm1"])
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", *args)
    report = ptxas_report(ptx)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16") == 2 * 36
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16") == 2 * 8
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier") == 9 + (9 if full["qtma"] else 0)
    assert "C7514" not in report and "C7512" not in report and "serialized" not in report, report
    assert "C7508" not in report, report
    assert all(x <= 1024 for x in spill_store_bytes(report)), report
    loops = _tile_loops(ptx)
    assert len(loops) == 2
    for loop in loops:
        assert sum(("LDL" in x) or ("STL" in x) for x in loop) <= 6
        assert sum("HGMMA.64x64x16" in x for x in loop) == 36
    stores = ptx.count("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group")
    if full["otma"]:
        # one TMA store site per warpgroup for out, one more for 16-bit partials (each warp issues one [64, 64] box)
        assert stores == (4 if full["part16"] else 2) and "st.global.b16" not in ptx
        assert ptx.count("st.global.v4.b32") == 0
        if not full["part16"]:
            assert ptx.count("st.global.v2.b32") >= 128
        return
    assert stores == 0
    if full["ovec"] == 0:
        assert ptx.count("st.global.b16") >= 256  # out strides of unknown alignment: 2-byte stores
    elif full["ovec"] == 1:
        assert "st.global.b16" not in ptx and ptx.count("st.global.b32") >= 128
    elif full["part16"]:
        assert "st.global.b16" not in ptx and ptx.count("st.global.v4.b32") >= 32 + 32
    else:  # 16-byte out stores, 8-byte fp32 partial stores
        assert ptx.count("st.global.v4.b32") >= 32 and ptx.count("st.global.v2.b32") >= 128


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
def test_wsm_real_shapes_gpu(device, num_heads, seqlen_q, page):
    """Lengths 0, 1, 64, 65, 4096 and ragged ones (NaN in every unused slot), permuted blocks; 48 heads × 2 =
    96 rows: the second head tile holds 32 rows of this sequence and 32 past rows_total (never stored)."""
    gen = torch.Generator().manual_seed(num_heads * 100 + seqlen_q * 10 + page)
    lens = [0, 1, 64, 65, 4096, 777, 2049, 64 * 33 + 5]
    from tests.kernels.test_mla_decode import make_case

    _check_wsm(*make_case(device, len(lens), seqlen_q, num_heads, 576, 512, page, lens, gen))


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(64, 1), (128, 2)])
@pytest.mark.parametrize("sched", ["balanced", "packed"])
def test_wsm_several_sequences_per_program_gpu(device, num_heads, seqlen_q, sched):
    """4 programs per head tile: each walks several sequences (query reload and row-sum exchange barriers at
    every switch, split and unsplit sequences, empty ones in between), causal on and off."""
    from tests.kernels.test_mla_decode import make_case

    gen = torch.Generator().manual_seed(num_heads + seqlen_q + len(sched))
    lens = [0, 1, 64, 65, 4096, 777, 2049, 0, 300, 1, 5000, 130]
    case = make_case(device, len(lens), seqlen_q, num_heads, 576, 512, 64, lens, gen)
    _check_wsm(*case, num_sm=4, SCHED=sched, FILL_TOL=3)
    _check_wsm(*case, num_sm=4, causal=False, SCHED=sched)


# on top of wsm_config's defaults (QTMA, OVEC 2, PART16): the build before them, SEQPF, 4-byte stores, fp32 partials,
# OTMA (TMA stores of out and 16-bit partials; 48 heads × 2 = 96 rows: not taken, the register stores)
_KNOBS = [dict(QTMA=False, OVEC=0, PART16=False), dict(SEQPF=True), dict(OVEC=1), dict(PART16=False), dict(OTMA=True),
          dict(OTMA=True, PART16=False), dict(SM1=1), dict(SM1=2), dict(SM1=2, QTMA=False, OVEC=0, PART16=False)]


@pytest.mark.gpu
@pytest.mark.parametrize("knobs", _KNOBS, ids=lambda k: "+".join(f"{a}{int(v)}" for a, v in k.items()))
@pytest.mark.parametrize("num_heads,seqlen_q", [(64, 1), (128, 2), (48, 2)])
def test_wsm_knobs_gpu(device, knobs, num_heads, seqlen_q):
    """QTMA (query tile by the TMA warp), SEQPF (lengths / split counts loaded a sequence ahead), PART16 (16-bit
    partials): several sequences per program (4 SMs: query tiles reloaded at every switch, split and unsplit and
    empty sequences), causal on and off, balanced and packed schedules; 48 heads × 2: the second head tile's TMA
    rows 32-63 are the next sequence's queries (never stored), the last sequence's past the end of q (zero-filled)."""
    from tests.kernels.test_mla_decode import make_case

    gen = torch.Generator().manual_seed(num_heads * 3 + seqlen_q + len(knobs))
    lens = [0, 1, 64, 65, 4096, 777, 2049, 0, 300, 1, 5000, 130]
    case = make_case(device, len(lens), seqlen_q, num_heads, 576, 512, 64, lens, gen)
    _check_wsm(*case, num_sm=4, **knobs)
    _check_wsm(*case, num_sm=4, causal=False, SCHED="packed", FILL_TOL=3, **knobs)


@pytest.mark.gpu
@pytest.mark.parametrize("row", [520, 516])
def test_wsm_ovec_strided_out_gpu(device, row):
    """OVEC with an out buffer whose rows are 520 values apart (strides multiples of 8: the vector path on a
    non-contiguous out) or 516 (not: the 2-byte store path); the gap columns stay untouched."""
    from tests.kernels.test_mla_decode import assert_matches_ref, make_case
    from tritonseek.kernels import mla_decode_wsm as M
    from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
    from tritonseek.kernels.reference.mla import mla_decode_ref

    gen = torch.Generator().manual_seed(row)
    lens = [70, 4096, 1, 0, 640, 2000]
    q, kv, bt, cs = make_case(device, len(lens), 2, 64, 576, 512, 64, lens, gen)
    wide = torch.full((len(lens), 2, 64, row), float("nan"), dtype=q.dtype, device=device)
    wide[..., 512:] = 7.0
    md = get_mla_metadata(cs, 2, 64, num_sm=4, config=dict(M.wsm_config(2, 64), QTMA=True, OVEC=2))
    o, lse = mla_decode(q, kv, bt, cs, metadata=md, out=wide[..., :512])
    assert_matches_ref(o, lse, *mla_decode_ref(q.float(), kv, bt, cs))
    assert (wide[..., 512:] == 7.0).all()


@pytest.mark.gpu
def test_wsm_qtma_falls_back_for_a_strided_q_gpu(device):
    """QTMA with a q that is not contiguous (a slice of a wider tensor): the consumers load the rows instead."""
    from tests.kernels.test_mla_decode import make_case

    gen = torch.Generator().manual_seed(5)
    lens = [70, 4096, 1, 0, 640]
    q, kv, bt, cs = make_case(device, len(lens), 1, 128, 576, 512, 64, lens, gen)
    wide = torch.randn(len(lens), 1, 256, 576, dtype=q.dtype, device=device)
    wide[:, :, ::2] = q
    _check_wsm(wide[:, :, ::2], kv, bt, cs, num_sm=4, QTMA=True, SEQPF=True)


@pytest.mark.gpu
def test_wsm_diag_stamps_gpu(device):
    """The DIAG build writes the same out as the plain one and stamps every program (start ≤ end)."""
    from tests.kernels.test_mla_decode import make_case
    from tritonseek.kernels import mla_decode_wsm as M
    from tritonseek.kernels.mla_decode import _launches, get_mla_metadata

    gen = torch.Generator().manual_seed(8)
    lens = [900, 64, 0, 1, 2000, 130]
    q, kv, bt, cs = make_case(device, len(lens), 2, 64, 576, 512, 64, lens, gen)
    md = get_mla_metadata(cs, 2, 64, num_sm=4, config=M.wsm_config(2, 64))
    out = torch.full((len(lens), 2, 64, 512), float("nan"), dtype=q.dtype, device=device)
    lse = torch.empty(len(lens), 64, 2, dtype=torch.float32, device=device)
    split, combine = _launches(q, kv, bt, cs, 576**-0.5, True, 512, md, out, lse)
    split()
    combine()
    plain = out.clone()
    opart = torch.empty(md.num_parts + len(lens), 128, 512, dtype=q.dtype, device=device)  # PART16
    lpart = torch.empty(md.num_parts + len(lens), 128, dtype=torch.float32, device=device)
    diag = torch.zeros(2 * md.num_parts, 128, dtype=torch.int64, device=device)
    out.fill_(float("nan"))
    M.launch_split_wsm(q, kv, bt, cs, 576**-0.5, True, md, out, lse, opart, lpart, diag=diag)
    torch.cuda.synchronize()
    unsplit = md.split[:, 1].cpu() == 1  # sequences the split kernel writes itself
    assert torch.equal(out[unsplit.to(device)], plain[unsplit.to(device)])
    d = diag.cpu()
    assert (d[:, 0] > 0).all() and (d[:, 1] >= d[:, 0]).all()
    with pytest.raises(ValueError, match="diag"):
        M.launch_split_wsm(q, kv, bt, cs, 576**-0.5, True, md, out, lse, opart, lpart, diag=diag[:1])


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q", [(64, 1), (32, 2), (64, 2), (128, 1), (128, 2)])
@pytest.mark.parametrize("knobs", [{}, dict(OTMA=True), dict(OTMA=True, SCHED="packed", FILL_TOL=3),
                                   dict(SM1=2), dict(SM1=2, SCHED="packed", FILL_TOL=3)],
                         ids=["default", "otma", "otma_packed", "sm1_during", "sm1_during_packed"])
def test_wsm_batch128_gpu(device, num_heads, seqlen_q, knobs):
    """Batch 128, ragged lengths with zeros, the device's own program count (FlashMLA's benchmark shape class);
    also with OTMA (TMA stores of out and partials) on the balanced and the packed schedule."""
    from tests.kernels.test_mla_decode import make_case

    gen = torch.Generator().manual_seed(num_heads * 7 + seqlen_q)
    lens = torch.randint(0, 1200, (128,), generator=gen).tolist()  # host randn time of the cache
    lens[1] = lens[50] = 0
    lens[2], lens[3] = 1, 64
    _check_wsm(*make_case(device, 128, seqlen_q, num_heads, 576, 512, 64, lens, gen, extra_blocks=8), **knobs)


@pytest.mark.gpu
@pytest.mark.parametrize("knobs", [{}, dict(QTMA=False, OVEC=0, PART16=False), dict(OTMA=True), dict(SM1=2)],
                         ids=["default", "no_knobs", "otma", "sm1_during"])
def test_wsm_graph_replay_follows_lengths_gpu(device, knobs):
    """Metadata + the WSM split + combine captured in one CUDA graph; new cache_seqlens written in place before
    a replay give the reference results for the new lengths (the default knobs: the query descriptor captured
    with the graph)."""
    from tests.kernels.test_mla_decode import assert_matches_ref, make_case
    from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
    from tritonseek.kernels.mla_decode_wsm import wsm_config
    from tritonseek.kernels.reference.mla import mla_decode_ref

    gen = torch.Generator().manual_seed(23)
    q, kv, bt, cs = make_case(device, 6, 2, 64, 576, 512, 64, [900, 64, 0, 1, 2000, 130], gen)
    out = torch.empty(6, 2, 64, 512, dtype=q.dtype, device=device)

    def step():
        md = get_mla_metadata(cs, 2, 64, config=dict(wsm_config(2, 64), **knobs), max_seqlen_k=2000)
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
@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("num_heads,seqlen_q", [(128, 1), (64, 2)])
def test_wsm_two_tiles_default_b128_gpu(device, num_heads, seqlen_q, varlen):
    """mla_decode's own default (get_mla_metadata without a config) for two 64-row head tiles at batch 128, s_k 4096,
    page 64: fixed lengths on the packed schedule (no sequence split: nothing for the combine), bench-like varlen
    lengths with 0- and 1-length rows on its balanced fallback (split sequences); against the fp32 reference, out
    NaN-poisoned, NaN in every unused cache slot."""
    if device.type != "cuda":
        pytest.skip("the Hopper default at batch 128 (the interpreter would take hours)")
    from tests.kernels.test_mla_decode import assert_matches_ref
    from tests.kernels.test_mla_schedule import _bench_lens, _device_case
    from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
    from tritonseek.kernels.reference.mla import mla_decode_ref

    lens = _bench_lens(4096, seqlen_q, varlen)
    q, kv, bt, cs = _device_case(device, lens, seqlen_q, num_heads, seed=num_heads + seqlen_q + varlen)
    md = get_mla_metadata(cs, seqlen_q, num_heads)
    assert md.config.get("WSM") and md.config.get("SCHED") == "packed"
    splits = md.split[:, 1].cpu()
    assert bool((splits > 1).any()) == varlen  # fixed: whole sequences; varlen: the balanced fallback's cut
    out = torch.full((128, seqlen_q, num_heads, 512), float("nan"), dtype=q.dtype, device=device)
    o, lse = mla_decode(q, kv, bt, cs, metadata=md, out=out)
    assert_matches_ref(o, lse, *mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=512))


def test_wsm_is_the_big_batch_default_above_32_rows():
    """On Hopper at batch ≥ 64, every rows class above 32 runs the WSM kernel (64 rows and two head tiles on the packed
    schedule); smaller batches and ≤ 32 rows keep their tables (not measured with it)."""
    from tritonseek.kernels.mla_decode import default_config

    for s_q, h in ((1, 64), (2, 32), (2, 64), (1, 128), (2, 128), (4, 64)):
        cfg = default_config(s_q, h, 128, hopper=True)
        assert cfg.get("WSM") is True and cfg["BLOCK_H"] == 64 and cfg.get("WS_WGS") == 2, (s_q, h, cfg)
    assert default_config(1, 64, 128, hopper=True)["SCHED"] == "packed"
    # two 64-row head tiles (65-128 rows): packed with the balanced fallback (session 20 W1); four: balanced
    for s_q, h in ((1, 128), (2, 64), (1, 96), (4, 32)):
        assert (default_config(s_q, h, 128, hopper=True).get("SCHED"),
                default_config(s_q, h, 128, hopper=True).get("FILL_TOL")) == ("packed", 3), (s_q, h)
    for s_q, h in ((2, 128), (4, 64), (2, 96)):
        assert "SCHED" not in default_config(s_q, h, 128, hopper=True), (s_q, h)
    # the balanced cut (and the packed schedule's fallback) of > 64 rows charges 3 tiles per sequence (session 20)
    for s_q, h in ((1, 128), (2, 64), (2, 128)):
        assert default_config(s_q, h, 128, hopper=True)["OVERHEAD"] == 3
        # warpgroup 1's softmax during its P0·V above 64 rows (session 22 W4); 64 rows keep the default order
        assert default_config(s_q, h, 128, hopper=True)["SM1"] == 2
    assert default_config(1, 64, 128, hopper=True).get("SM1", 0) == 0
    assert "SCHED" not in default_config(1, 128, 128, hopper=False)
    assert not default_config(1, 16, 128, hopper=True).get("WSM")
    assert not default_config(1, 128, 32, hopper=True).get("WSM")
    assert not default_config(1, 128, 128, hopper=False).get("WSM")


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_wsm_fp16_gpu(device, causal):
    """fp16 query and cache (the kernel's other dtype; P rounded to fp16): ragged lengths, NaN in unused slots."""
    from tests.kernels.test_mla_decode import make_case

    gen = torch.Generator().manual_seed(31 + causal)
    lens = [0, 1, 64, 65, 4096, 777, 2049, 130]
    q, kv, bt, cs = make_case(device, len(lens), 2, 64, 576, 512, 64, lens, gen)
    _check_wsm(q.half(), kv.half(), bt, cs, causal=causal)


@pytest.mark.gpu
def test_wsm_rejects_other_tiles_gpu(device):
    """A WSM config with BLOCK_H 32 is not this kernel's layout: the launcher raises instead of computing."""
    from tests.kernels.test_mla_decode import make_case
    from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
    from tritonseek.kernels.mla_decode_wsm import wsm_config

    q, kv, bt, cs = make_case(device, 2, 1, 64, 576, 512, 64, [70, 5], torch.Generator().manual_seed(2))
    md = get_mla_metadata(cs, 1, 64, config=dict(wsm_config(1, 64), BLOCK_H=32, WS_WGS=1))
    with pytest.raises(ValueError, match="BLOCK_H"):
        mla_decode(q, kv, bt, cs, metadata=md)
