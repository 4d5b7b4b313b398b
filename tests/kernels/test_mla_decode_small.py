"""Small-batch MLA decode path (kernels/mla_decode_small.py, configs with SMALL=True) against the reference.

CPU runs go through the Triton interpreter with small latent dims (d_qk 80 = 64 ‖ 16, and 64 = 48 ‖ 16
for a non-power-of-two head_dim_v); the ``gpu`` tests use DeepSeek's 576/512, 128 heads, page 64 at
batch 1-8, s_q 1/2/4, s_k up to 4096, a NaN-poisoned cache beyond every length and a NaN-poisoned out.

Tolerances as in test_mla_decode.py (FlashMLA's check): cosine difference ≤ 1e-5 against the fp32
reference (bf16 rounding of p before p·V and of out gives ≈ 1e-6) and |lse − lse_ref| ≤ 1e-3 (fp32
log-sum-exp, summation order differs); rows that see no key must be exactly out = 0, lse = −inf.
"""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.kernels.test_mla_decode import _fixture_ok, cos_diff, make_case
from tritonseek.kernels.mla_decode import default_config, get_mla_metadata, mla_decode
from tritonseek.kernels.reference.mla import mla_decode_ref


def small_cfg(block_h=16, block_n=16, splits=4, min_tiles=1, warps=4, stages=2, **kw):
    return dict(SMALL=True, BLOCK_H=block_h, BLOCK_N=block_n, NUM_SPLITS=splits, MIN_TILES=min_tiles,
                num_warps=warps, num_stages=stages, USE_TMA=True, **kw)


def run_and_check(q, kv, bt, cs, dv, causal, cfg, scale=None, repeats=1):
    batch, seqlen_q, num_heads, _ = q.shape
    md = get_mla_metadata(cs, seqlen_q, num_heads, config=cfg)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, softmax_scale=scale, causal=causal, head_dim_v=dv)
    ro, rlse = ro.cpu(), rlse.cpu()
    empty = torch.isinf(rlse)  # [b, h, s_q]: queries that see no key
    for _ in range(repeats):  # the arrival counters must be left at 0 for the next launch
        out = torch.full((batch, seqlen_q, num_heads, dv), float("nan"), dtype=q.dtype, device=q.device)
        o, lse = mla_decode(q, kv, bt, cs, softmax_scale=scale, causal=causal, head_dim_v=dv, metadata=md, out=out)
        o, lse = o.float().cpu(), lse.cpu()
        assert not torch.isnan(o).any(), "NaN reached out (poisoned buffer not fully written or cache NaN leaked)"
        assert not torch.isnan(lse).any()
        assert torch.equal(torch.isinf(lse) & (lse < 0), empty)
        assert torch.all(o.permute(0, 2, 1, 3)[empty] == 0)
        if (~empty).any():
            assert (lse[~empty] - rlse[~empty]).abs().max().item() <= 1e-3
        assert cos_diff(o, ro) <= 1e-5
    return md


@_fixture_ok
@given(
    batch=st.integers(1, 3),
    seqlen_q=st.sampled_from([1, 2, 4]),
    num_heads=st.sampled_from([3, 16, 20]),
    page=st.sampled_from([1, 16, 32]),
    dims=st.sampled_from([(80, 64), (64, 48)]),
    causal=st.booleans(),
    splits=st.sampled_from([1, 2, 3, 8]),
    min_tiles=st.sampled_from([1, 2]),
    combine_rows=st.sampled_from([1, 4]),
    data=st.data(),
)
def test_small_path_matches_reference(device, batch, seqlen_q, num_heads, page, dims, causal, splits, min_tiles,
                                      combine_rows, data):
    """Any even cut (1-8 pieces, a floor of 1-2 tiles per piece), 1 or 4 rows per combine program, every
    page size (TMA when page ≥ BLOCK_N, else gathers), lengths incl. 0, 1 and page/tile boundaries."""
    d_qk, dv = dims
    special = [0, 1, 15, 16, 17, page, page + 1]
    lens = data.draw(st.lists(st.one_of(st.sampled_from(special), st.integers(0, 90)), min_size=batch,
                              max_size=batch))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    case = make_case(device, batch, seqlen_q, num_heads, d_qk, dv, page, lens, gen)
    run_and_check(*case, dv, causal, small_cfg(splits=splits, min_tiles=min_tiles, COMBINE_ROWS=combine_rows))


def test_small_path_long_row_and_empty_rows(device):
    """One long row cut into every piece next to empty/short rows; the split table the kernel writes; the
    same metadata reused by a second launch (as every layer of a decode step does)."""
    gen = torch.Generator().manual_seed(5)
    lens = [150, 0, 1, 33]
    q, kv, bt, cs = make_case(device, 4, 2, 16, 80, 64, 16, lens, gen)
    md = run_and_check(q, kv, bt, cs, 64, True, small_cfg(block_h=32, splits=4), repeats=2)
    assert md.split[:, 1].tolist() == [4, 0, 1, 3]  # ⌈tiles/4⌉ tiles per piece: 10 → 3,3,3,1; 3 → 1,1,1
    assert md.split[:, 0].tolist() == [0, 3, 6, 9]  # slots b·(NUM_SPLITS − 1) + i + b = b·4 + i
    md = run_and_check(q, kv, bt, cs, 64, True, small_cfg(block_h=32, splits=4, min_tiles=2, COMBINE_ROWS=8))
    assert md.split[:, 1].tolist() == [4, 0, 1, 2]  # MIN_TILES 2: 3 tiles → 2,1


def test_small_path_non_default_softmax_scale(device):
    """softmax_scale reaches the small-batch split kernel (tester22 #22: no CPU test passed one)."""
    gen = torch.Generator().manual_seed(6)
    q, kv, bt, cs = make_case(device, 2, 2, 16, 80, 64, 16, [70, 33], gen)
    run_and_check(q, kv, bt, cs, 64, True, small_cfg(splits=3), scale=0.37)


def test_default_config_small_batch_entries_are_small_path():
    """128 heads: batch·rows ≤ 1024 (b1-8 at s_q 1, b1-4 at s_q 2, b1-2 at s_q 4) takes the SMALL path with
    ≤ 128 programs (16-row tiles at b1 s_q 1, else 32-row); larger products keep the scheduled kernels."""
    for s_q, batch in ((1, 1), (1, 4), (2, 2), (4, 1), (1, 8), (2, 4), (4, 2)):
        cfg = default_config(s_q, 128, batch)
        assert cfg.get("SMALL") is True
        assert cfg["NUM_SPLITS"] * batch * (s_q * 128 // cfg["BLOCK_H"]) <= 128
    assert default_config(1, 128, 1)["NUM_SPLITS"] == 16 and default_config(1, 128, 1)["BLOCK_H"] == 16
    for s_q, batch in ((2, 8), (4, 4), (1, 16), (1, 128)):
        assert not default_config(s_q, 128, batch).get("SMALL")
    assert not default_config(1, 16, 1).get("SMALL")  # ≤ 64 rows keep _TUNED
    # Hopper: exactly 64 rows (TP2's 64 heads at s_q 1) up to batch 8 take the table too (H200-measured)
    for batch in (1, 2, 4, 8):
        cfg = default_config(1, 64, batch, hopper=True)
        assert cfg.get("SMALL") is True and cfg["BLOCK_H"] == (16 if batch <= 2 else 32)
    assert not default_config(1, 64, 9, hopper=True).get("SMALL")
    assert not default_config(1, 64, 1).get("SMALL")  # other devices: rows > 64 only


def test_small_config_validation(device):
    gen = torch.Generator().manual_seed(6)
    q, kv, bt, cs = make_case(device, 1, 1, 16, 80, 64, 16, [20], gen)
    with pytest.raises(ValueError, match="NUM_SPLITS"):
        get_mla_metadata(cs, 1, 16, config=small_cfg(splits=0))
    with pytest.raises(ValueError, match="BLOCK_H"):
        get_mla_metadata(cs, 1, 16, config=small_cfg(block_h=24))
    with pytest.raises(ValueError, match="TRIGGER"):
        get_mla_metadata(cs, 1, 16, config=dict(small_cfg(), TRIGGER=3))
    with pytest.raises(ValueError, match="PDL"):
        get_mla_metadata(cs, 1, 16, config=dict(small_cfg(), PDL=1))
    with pytest.raises(ValueError, match="COMBINE_ROWS"):
        get_mla_metadata(cs, 1, 16, config=dict(small_cfg(), COMBINE_ROWS=3))
    with pytest.raises(ValueError, match="missing the required key 'NUM_SPLITS'"):
        get_mla_metadata(cs, 1, 16, config={k: v for k, v in small_cfg().items() if k != "NUM_SPLITS"})
    for key, v in (("MIN_TILES", True), ("NUM_SPLITS", 2.0), ("TRIGGER", True), ("SMALL", 1)):
        with pytest.raises(ValueError, match=f"config key {key}="):
            get_mla_metadata(cs, 1, 16, config=dict(small_cfg(), **{key: v}))


# ----------------------------------------------------------------------------- real shapes (H200)
_GPU_LENS = [1, 63, 64, 1024, 4096]


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 2, 4, 8])
@pytest.mark.parametrize("num_heads,seqlen_q", [(128, 1), (128, 2), (128, 4), (64, 1)])
def test_small_default_real_shapes(device, batch, num_heads, seqlen_q):
    """default_config at V3 width (128 heads, 576/512, page 64; 64 heads = TP2: Hopper's rule, the SMALL path up to
    batch 8): fixed lengths 1/63/64/1024/4096 and a varlen batch with a 0, NaN-poisoned
    cache beyond each length, two launches with the same metadata (batch·rows ≤ 1024 runs the SMALL path, larger
    products the scheduled kernels)."""
    if device.type != "cuda":
        pytest.skip("real shapes run on the GPU")
    gen = torch.Generator().manual_seed(100 * batch + seqlen_q)
    cases = [[n] * batch for n in _GPU_LENS]
    cases.append(([0] + [int(x) for x in torch.randint(1, 4097, (batch - 1,), generator=gen)]) if batch > 1
                 else [4000])
    for lens in cases:
        q, kv, bt, cs = make_case(device, batch, seqlen_q, num_heads, 576, 512, 64, lens, gen)
        cfg = default_config(seqlen_q, num_heads, batch, hopper=num_heads == 64)  # 128: the device-neutral rule
        assert cfg.get("SMALL") is True or num_heads == 128
        run_and_check(q, kv, bt, cs, 512, True, cfg, repeats=2)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", [
    small_cfg(16, 64, 16, 1, 8, 2, PDL=True, TRIGGER=2, COMBINE_PDL=True),
    small_cfg(32, 32, 8, 2, 4, 3, TRIGGER=1, COMBINE_ROWS=4)])
def test_small_configs_real_shapes(device, cfg):
    """Other SMALL configs at V3 width (every PDL option, MIN_TILES 2, BLOCK_N 32, 4 rows per combine
    program), b 2 varlen incl. 0 and 4096, s_q 2, and page 16 (gather path). The default configs at pages
    1/16/256 run in test_mla_decode.py::test_decode_real_shapes (128 heads, 8 sequences)."""
    if device.type != "cuda":
        pytest.skip("real shapes run on the GPU")
    gen = torch.Generator().manual_seed(7)
    for page, lens in ((64, [4096, 0]), (64, [777, 64]), (16, [1000, 65])):
        q, kv, bt, cs = make_case(device, 2, 2, 128, 576, 512, page, lens, gen)
        run_and_check(q, kv, bt, cs, 512, True, cfg, repeats=2)


def compile_small_sm90(cfg: dict, seqlen_q_causal: bool = True):
    """The SMALL split kernel at 576/512 (TMA descriptors) compiled for sm_90a on any machine (no GPU)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tritonseek.kernels.mla_decode_small as S

    bn = cfg["BLOCK_N"]
    sig = dict(q_ptr="*bf16", kv_ptr="*bf16", kn_desc=f"tensordesc<bf16[{bn}, 256]>",
               kr_desc=f"tensordesc<bf16[{bn}, 64]>", bt_ptr="*i32", seqlens_ptr="*i32", split_ptr="*i32",
               out_ptr="*bf16", lse_ptr="*fp32", opart_ptr="*fp32", lpart_ptr="*fp32")
    sig.update({n: "i32" for n in ("stride_qb", "stride_qs", "stride_qh", "stride_kvb", "stride_kvt", "stride_btb",
                                   "stride_ob", "stride_os", "stride_oh", "stride_lb", "stride_lh", "max_blocks",
                                   "num_heads", "seqlen_q", "d_qk", "head_dim_v")})
    sig.update(sm_scale_log2="fp32", page_shift="i32", num_splits="i32", min_tiles="i32")
    consts = dict(BLOCK_N=bn, BLOCK_H=cfg["BLOCK_H"], BLOCK_DV2=256, BLOCK_R=64, CAUSAL=seqlen_q_causal,
                  USE_TMA=True, DOT_FP32=False, NUM_STAGES=cfg["num_stages"], EVEN_D=True, PDL=cfg.get("PDL", False),
                  TRIGGER=cfg.get("TRIGGER", 0))
    sig.update({k: "constexpr" for k in consts})
    return triton.compile(ASTSource(S._mla_decode_small_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"]))


@pytest.mark.parametrize("cfg", [small_cfg(16, 64, 8, 1, 8, 2, PDL=True, TRIGGER=1), small_cfg(32, 64, 8, 1, 8, 2)])
def test_small_kernel_compiles_for_sm90(cfg):
    """The tl kernel compiles for sm_90a (the interpreter accepts code the GPU compiler rejects) with the
    TMA loads, the PDL wait / early trigger when asked for (the interpreter ignores both) and no spills."""
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report

    ptx = ptx_in_fresh_process(__name__, "compile_small_sm90", cfg)
    assert "cp.async.bulk.tensor" in ptx
    assert ("griddepcontrol.wait" in ptx) == bool(cfg.get("PDL"))
    assert ("griddepcontrol.launch_dependents" in ptx) == bool(cfg.get("TRIGGER"))
    rep = ptxas_report(ptx)
    spills = int(re.search(r"(\d+) bytes spill stores", rep).group(1))
    # 16-row tiles: spill-free; 32-row tiles (8 warps, two 32×256 fp32 accumulators): 240 bytes with
    # triton 3.6 (the scheduled kernel's 32-row config spills 456), bounded here so growth shows
    assert spills <= (0 if cfg["BLOCK_H"] == 16 else 256), rep


def compile_combine_pdl_sm90():
    """The combine kernel launched as a programmatic dependent (COMBINE_PDL), compiled for sm_90a."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tritonseek.kernels.mla_decode_tiles import _mla_combine_kernel

    sig = dict(split_ptr="*i32", out_ptr="*bf16", lse_ptr="*fp32", opart_ptr="*fp32", lpart_ptr="*fp32")
    sig.update({n: "i32" for n in ("stride_ob", "stride_os", "stride_oh", "stride_lb", "stride_lh", "num_heads",
                                   "seqlen_q", "head_dim_v")})
    consts = dict(BLOCK_ROWS=1, BLOCK_DVP=512, NUM_STAGES=3, PDL=True)
    sig.update({k: "constexpr" for k in consts})
    return triton.compile(ASTSource(_mla_combine_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4))


def test_combine_pdl_compiles_for_sm90():
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process

    ptx = ptx_in_fresh_process(__name__, "compile_combine_pdl_sm90")
    assert "griddepcontrol.wait" in ptx and "griddepcontrol.launch_dependents" in ptx
