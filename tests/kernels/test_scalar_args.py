"""One rule for the launchers' scalar arguments (tester, session 20; ``tritonseek.kernels._utils``): integer
arguments take Python ints and numpy integers, float arguments ints, floats and numpy numbers, bool flags bools and
numpy bools; anything else (a bool for a number, a float for an int, a str, a 0-d tensor, 1 for a flag) is a
TypeError naming the argument and the type. Before: numpy ints were a ValueError blaming the value in some
launchers and accepted in others, flags were taken by truthiness ("yes", 1, tensor(False))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tritonseek.kernels import (gate_topk, get_mla_metadata, grouped_fp8_gemm_contiguous, mla_decode, mla_prefill,
                                moe_permute, per_block_quant_fp8, per_token_group_quant_fp8, router_gate_topk,
                                silu_mul_quant_fp8)
from tritonseek.kernels._utils import check_bool, check_config, check_int, check_real
from tritonseek.kernels.reference.moe import grouped_fp8_gemm_contiguous_ref

BAD_INTS = [True, np.bool_(True), 4.0, np.float32(4), "4", torch.tensor(4), None]
BAD_FLAGS = [1, 0, "yes", torch.tensor(False), None, 1.0]


def test_helpers():
    assert check_int("n", np.int32(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_real("x", np.float16(0.5)) == 0.5 and type(check_real("x", np.int8(2))) is float
    assert check_bool("f", np.bool_(True)) is True
    for bad in BAD_INTS:
        with pytest.raises(TypeError, match=f"^n must be an int, got {type(bad).__name__}"):
            check_int("n", bad)
    for bad in (True, np.bool_(False), "0.5", torch.tensor(0.5), None):
        with pytest.raises(TypeError, match="^x must be a float"):
            check_real("x", bad)
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match=f"^f must be a bool, got {type(bad).__name__}"):
            check_bool("f", bad)


def test_real_past_float_range_and_numpy_config_values():
    """check_real(10**400) was an OverflowError from math.isfinite (tester2 s20 #5); check_config refused np.False_
    for a bool key ("must be a bool") while numpy ints passed (#7); the copy holds Python values."""
    for big in (10**400, -10**400, 10**5000):
        with pytest.raises(ValueError, match="^x must be finite, got an int of .* bits"):
            check_real("x", big)
    spec = {"PDL": bool, "BLOCK_N": (64, 128), "S": range(1, 5), "R": float}
    got = check_config("config", {"PDL": np.False_, "BLOCK_N": np.int64(64), "S": np.int32(2), "R": np.float32(1.5)},
                       spec)
    assert got == {"PDL": False, "BLOCK_N": 64, "S": 2, "R": 1.5}
    assert [type(v) for v in got.values()] == [bool, int, int, float]
    for key, bad in (("PDL", np.int64(0)), ("PDL", 1), ("BLOCK_N", np.True_), ("S", np.float64(2)), ("S", True),
                     ("R", 10**400), ("R", np.True_)):
        with pytest.raises(ValueError, match=f"^config key {key}="):
            check_config("config", {key: bad}, spec)


def test_fp8_quant_group_and_block_size_and_ue8m0(device):
    x = torch.randn(3, 256, device=device)
    want = per_token_group_quant_fp8(x, 64, True)
    got = per_token_group_quant_fp8(x, group_size=np.int64(64), scale_ue8m0=np.bool_(True))
    assert all(torch.equal(a.float(), b.float()) for a, b in zip(got, want))
    for bad in BAD_INTS:
        with pytest.raises(TypeError, match="group_size must be an int"):
            per_token_group_quant_fp8(x, group_size=bad)
        with pytest.raises(TypeError, match="group_size must be an int"):
            silu_mul_quant_fp8(x, group_size=bad)
        with pytest.raises(TypeError, match="block_size must be an int"):
            per_block_quant_fp8(x, block_size=bad)
    for bad in BAD_FLAGS:  # "yes" / tensor(False) were taken by truthiness
        with pytest.raises(TypeError, match="scale_ue8m0 must be a bool"):
            per_token_group_quant_fp8(x, scale_ue8m0=bad)
        with pytest.raises(TypeError, match="scale_ue8m0 must be a bool"):
            silu_mul_quant_fp8(x, scale_ue8m0=bad)
    with pytest.raises(ValueError, match="group_size must be a power of two ≥ 16, got 48"):
        per_token_group_quant_fp8(x, group_size=np.int64(48))
    wq, ws = per_block_quant_fp8(x, block_size=np.int32(128))
    assert ws.shape == (1, 2)
    with pytest.raises(TypeError, match=r"rows_cfg\[1\] must be an int"):
        per_token_group_quant_fp8(x, rows_cfg=(4, True))


def test_gate_topk_scalars(device):
    logits = torch.randn(3, 8, device=device)
    kw = dict(top_k=2, n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5)
    want = gate_topk(logits, None, **kw)
    got = gate_topk(logits, None, top_k=np.int64(2), n_group=np.int32(2), topk_group=np.int8(1),
                    norm_topk_prob=np.bool_(True), routed_scaling_factor=np.float32(2.5))
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])
    for name in ("top_k", "n_group", "topk_group"):
        for bad in BAD_INTS:
            with pytest.raises(TypeError, match=f"{name} must be an int"):
                gate_topk(logits, None, **{**kw, name: bad})
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match="norm_topk_prob must be a bool"):
            gate_topk(logits, None, **{**kw, "norm_topk_prob": bad})
    x = torch.randn(2, 64, device=device).to(torch.bfloat16)
    w = torch.randn(8, 64, device=device).to(torch.bfloat16)
    ids = router_gate_topk(x, w, None, top_k=np.int64(2), shared_expert_id=np.int32(8))[1]
    assert ids.shape == (2, 3) and bool((ids[:, 2] == 8).all())
    for bad in (True, 8.0, torch.tensor(8)):
        with pytest.raises(TypeError, match="shared_expert_id must be an int"):
            router_gate_topk(x, w, None, top_k=2, shared_expert_id=bad)


def test_mla_prefill_scalars(device):
    q = torch.randn(6, 2, 32, device=device).to(torch.bfloat16)
    v = torch.randn(6, 2, 16, device=device).to(torch.bfloat16)
    cu = torch.tensor([0, 6], dtype=torch.int32, device=device)
    want = mla_prefill(q, q, v, cu, 6, 0.2, True)
    got = mla_prefill(q, q, v, cu, np.int64(6), np.float32(0.2), np.bool_(True))
    assert torch.equal(got, want)
    for bad in BAD_INTS:  # np.int64 and tensor(6) were "must be a non-negative int, got ..." (a ValueError)
        with pytest.raises(TypeError, match="max_seqlen must be an int"):
            mla_prefill(q, q, v, cu, bad, 0.2)
    for bad in BAD_FLAGS:  # causal was taken by truthiness
        with pytest.raises(TypeError, match="causal must be a bool"):
            mla_prefill(q, q, v, cu, 6, 0.2, bad)
    with pytest.raises(TypeError, match="softmax_scale must be a float"):
        mla_prefill(q, q, v, cu, 6, torch.tensor(0.2))


def test_int_arguments_accepted_alike_elsewhere(device):
    """The launchers that already took numpy integers keep doing so, and refuse the same things."""
    hid = torch.randn(4, 32, device=device)
    ids = torch.randint(0, 8, (4, 2), dtype=torch.int32, device=device)
    assert torch.equal(moe_permute(hid, ids, np.int32(8), 4)[2], moe_permute(hid, ids, 8, 4)[2])
    sl = torch.tensor([5, 9], dtype=torch.int32, device=device)
    assert get_mla_metadata(sl, 1, np.int32(4)).num_heads == 4
    q = torch.randn(2, 1, 4, 64, device=device).to(torch.bfloat16)
    kv = torch.randn(4, 16, 1, 64, device=device).to(torch.bfloat16)
    bt = torch.arange(4, dtype=torch.int32, device=device).view(2, 2)
    o, _ = mla_decode(q, kv, bt, sl, head_dim_v=np.int64(32), causal=np.bool_(True))
    assert o.shape == (2, 1, 4, 32)
    for bad in BAD_INTS:
        with pytest.raises(TypeError, match="num_experts must be an int"):
            moe_permute(hid, ids, bad, 4)
        with pytest.raises(TypeError, match="num_heads must be an int"):
            get_mla_metadata(sl, 1, bad)


def _contiguous_operands(device, E, N=64, M=128, K=128):
    a = torch.randn(M, K, device=device).to(torch.float8_e4m3fn)
    a_s = torch.ones(M, 1, device=device)
    b = torch.randn(E, N, K, device=device).to(torch.float8_e4m3fn)
    b_s = torch.ones(E, max(1, -(-N // 128)), 1, device=device)
    return a, a_s, b, b_s


def test_grouped_contiguous_check_alignment_flag_and_empty_sizes(device):
    a, a_s, b, b_s = _contiguous_operands(device, 2)
    mi = torch.zeros(128, dtype=torch.int32, device=device)
    for bad in BAD_FLAGS:  # check_alignment=1 was taken for True
        with pytest.raises(TypeError, match="check_alignment must be a bool"):
            grouped_fp8_gemm_contiguous(a, a_s, b, b_s, mi, check_alignment=bad)
    # E = 0 with every row padding (valid per the docstring): zeros like the reference, not Triton's
    # "AssertionError: shape must be positive"
    a, a_s, b, b_s = _contiguous_operands(device, 0)
    pad = torch.full((128,), -1, dtype=torch.int32, device=device)
    out = grouped_fp8_gemm_contiguous(a, a_s, b, b_s, pad, check_alignment=np.bool_(True))
    ref = grouped_fp8_gemm_contiguous_ref(a.cpu(), a_s.cpu(), b.cpu(), b_s.cpu(), pad.cpu())
    assert out.shape == ref.shape == (128, 64) and not out.float().any() and not ref.float().any()
    # N = 0 was refused as "b [E, N, K] must be K-contiguous with experts stacked densely"
    a, a_s, b, b_s = _contiguous_operands(device, 2, N=0)
    with pytest.raises(ValueError, match="b has N = 0"):
        grouped_fp8_gemm_contiguous(a, a_s, b, b_s, mi)


def test_philox_exp_noise_sizes(device):
    from tritonseek.kernels.sampling import philox_exp_noise

    seeds = torch.tensor([1, 2], device=device)
    assert torch.equal(philox_exp_noise(seeds, np.int64(2), np.int32(8)), philox_exp_noise(seeds, 2, 8))
    for bad in (True, 2.0, torch.tensor(2)):  # True was taken as 1
        with pytest.raises(TypeError, match="num_positions must be an int"):
            philox_exp_noise(seeds, bad, 8)
        with pytest.raises(TypeError, match="vocab_size must be an int"):
            philox_exp_noise(seeds, 2, bad)


def test_config_dicts_take_numpy_scalars_under_one_rule(device):
    """Config dicts follow the scalar rule (tester2 s20 #7): fp8_gemm_nt(config={"BLOCK_N": np.int64(64)}) passed
    check_config then was refused by the launcher ("must be a power of two ≥ 16, got np.int64(64)"); mla_prefill took
    {"num_stages": True} as 1 and refused np.int64 sizes; mla_absorb refused {"PDL": np.False_} / {"STAGES":
    np.int64(2)}. Numpy scalars are their Python values; a bool for a size is refused, naming the key."""
    from tritonseek.kernels import fp8_gemm_nt, mla_absorb_o, per_token_group_quant_fp8

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 256, generator=g).to(device)
    w = torch.randn(128, 256, generator=g).to(device)
    a, a_s = per_token_group_quant_fp8(x, 128)
    b, b_s = per_block_quant_fp8(w, 128)
    cfg = dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)
    want = fp8_gemm_nt(a, a_s, b, b_s, config=cfg)
    np_cfg = dict(BLOCK_M=np.int64(64), BLOCK_N=np.int64(64), num_warps=np.int32(4), num_stages=np.int8(2),
                  TMA_STORE=np.False_)
    assert torch.equal(fp8_gemm_nt(a, a_s, b, b_s, config=np_cfg), want)
    with pytest.raises(ValueError, match="config key BLOCK_N=True"):
        fp8_gemm_nt(a, a_s, b, b_s, config=dict(cfg, BLOCK_N=True))

    q = torch.randn(6, 2, 32, generator=g).to(torch.bfloat16).to(device)
    v = torch.randn(6, 2, 16, generator=g).to(torch.bfloat16).to(device)
    cu = torch.tensor([0, 6], dtype=torch.int32, device=device)
    pcfg = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1)
    want = mla_prefill(q, q, v, cu, 6, 0.2, config=pcfg)
    got = mla_prefill(q, q, v, cu, 6, 0.2, config=dict(BLOCK_M=np.int64(16), BLOCK_N=np.int32(16),
                                                       num_warps=np.int64(4), num_stages=np.uint8(1),
                                                       USE_TMA=np.False_))
    assert torch.equal(got, want)
    for key, bad in (("num_stages", True), ("num_warps", np.True_), ("BLOCK_M", 16.0), ("USE_TMA", 1),
                     ("WARP_SPECIALIZE", "no")):
        with pytest.raises(ValueError, match=f"config {key} must be"):
            mla_prefill(q, q, v, cu, 6, 0.2, config={key: bad})

    o_lat = torch.randn(5, 2, 128, generator=g).to(torch.bfloat16).to(device)
    w_uv = (torch.randn(2, 64, 128, generator=g) * 0.1).to(torch.bfloat16).to(device)
    want = mla_absorb_o(o_lat, w_uv, config=dict(PDL=False, STAGES=2, BLOCK_D=32))
    got = mla_absorb_o(o_lat, w_uv, config=dict(PDL=np.False_, STAGES=np.int64(2), BLOCK_D=np.int32(32)))
    assert torch.equal(got, want)
    for key, bad in (("PDL", np.int64(0)), ("STAGES", np.True_), ("STAGES", 2.0)):
        with pytest.raises(ValueError, match=f"config key {key}="):
            mla_absorb_o(o_lat, w_uv, config={key: bad})
    with pytest.raises(TypeError, match="config must be a dict"):
        mla_absorb_o(o_lat, w_uv, config="fast")

    # the masked grouped GEMMs' tl config and the router's config: the same
    from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked

    E, M, N, K = 2, 16, 128, 128
    ga = torch.randn(E, M, K, generator=g).to(torch.float8_e4m3fn).to(device)
    ga_s = (torch.rand(E, M, 1, generator=g) + 0.5).to(device)
    gb = torch.randn(E, N, K, generator=g).to(torch.float8_e4m3fn).to(device)
    gb_s = (torch.rand(E, 1, 1, generator=g) + 0.5).to(device)
    mm = torch.tensor([16, 5], dtype=torch.int32, device=device)
    tl_cfg = dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=2, SWAP_AB=True)
    want = grouped_fp8_gemm_masked(ga, ga_s, gb, gb_s, mm, config=tl_cfg)
    got = grouped_fp8_gemm_masked(ga, ga_s, gb, gb_s, mm, config={k: np.int64(v) if type(v) is int else np.bool_(v)
                                                                  for k, v in tl_cfg.items()})
    rows = torch.arange(M, device=device)[None, :] < mm[:, None]
    assert torch.equal(got[rows], want[rows])
    with pytest.raises(TypeError, match="config must be a dict"):
        grouped_fp8_gemm_masked(ga, ga_s, gb, gb_s, mm, config="fast")
    xr = torch.randn(2, 64, generator=g).to(torch.bfloat16).to(device)
    wr = torch.randn(8, 64, generator=g).to(torch.bfloat16).to(device)
    rcfg = dict(BLOCK_E=8, BLOCK_T=1, num_warps=4, PDL=False)
    want = router_gate_topk(xr, wr, None, top_k=2, config=rcfg)
    got = router_gate_topk(xr, wr, None, top_k=2, config=dict(BLOCK_E=np.int64(8), BLOCK_T=np.int32(1),
                                                               num_warps=np.int8(4), PDL=np.False_))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_reference_functions_follow_the_launchers_rule():
    """The references are the spec, yet took what the launchers refuse (tester2 s20 #10): gate_topk_ref
    routed_scaling_factor=True (as 1.0) / norm_topk_prob=1, rms_norm_ref eps=True, per_token_group_quant_fp8_ref
    group_size=True, moe_permute_ref num_experts=True. Numpy numbers stay accepted."""
    from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref, per_token_group_quant_fp8_ref
    from tritonseek.kernels.reference.moe import gate_topk_ref, moe_permute_ref
    from tritonseek.kernels.reference.norm import fused_add_rms_norm_ref, rms_norm_ref

    logits = torch.randn(3, 8)
    want = gate_topk_ref(logits, None, top_k=2, norm_topk_prob=True, routed_scaling_factor=2.5)
    got = gate_topk_ref(logits, None, top_k=2, norm_topk_prob=np.bool_(True), routed_scaling_factor=np.float32(2.5))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for bad in (True, "2.5", torch.tensor(2.5)):
        with pytest.raises(TypeError, match="routed_scaling_factor must be a float"):
            gate_topk_ref(logits, None, top_k=2, routed_scaling_factor=bad)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="routed_scaling_factor"):
            gate_topk_ref(logits, None, top_k=2, routed_scaling_factor=bad)
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match="norm_topk_prob must be a bool"):
            gate_topk_ref(logits, None, top_k=2, norm_topk_prob=bad)
    x, w = torch.randn(2, 16), torch.rand(16)
    assert torch.equal(rms_norm_ref(x, w, np.float32(1e-6)), rms_norm_ref(x, w, 1e-6))
    for bad in (True, "1e-6", None):
        with pytest.raises(TypeError, match="eps must be a float"):
            rms_norm_ref(x, w, bad)
        with pytest.raises(TypeError, match="eps must be a float"):
            fused_add_rms_norm_ref(x, x, w, bad)
    with pytest.raises(ValueError, match="eps"):
        rms_norm_ref(x, w, 0.0)
    xq = torch.randn(2, 256)
    assert torch.equal(per_token_group_quant_fp8_ref(xq, np.int64(128), np.True_)[1],
                       per_token_group_quant_fp8_ref(xq, 128, True)[1])
    for bad in BAD_INTS:
        with pytest.raises(TypeError, match="group_size must be an int"):
            per_token_group_quant_fp8_ref(xq, bad)
        with pytest.raises(TypeError, match="block_size must be an int"):
            per_block_quant_fp8_ref(xq, bad)
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match="scale_ue8m0 must be a bool"):
            per_token_group_quant_fp8_ref(xq, 128, bad)
    ids = torch.tensor([[0, 1], [1, -1]], dtype=torch.int32)
    want = moe_permute_ref(torch.randn(2, 4), ids, 2, 4)
    assert torch.equal(moe_permute_ref(torch.randn(2, 4), ids, np.int64(2), np.int32(4))[2], want[2])
    for bad in BAD_INTS:
        with pytest.raises(TypeError, match="num_experts must be an int"):
            moe_permute_ref(torch.randn(2, 4), ids, bad, 4)
    with pytest.raises(ValueError, match="block_m must be ≥ 1"):
        moe_permute_ref(torch.randn(2, 4), ids, 2, 0)
