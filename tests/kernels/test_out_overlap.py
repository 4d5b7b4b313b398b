"""Launchers refuse an ``out=`` whose elements share memory (tester, s19): an expand()/as_strided() destination
made the kernels race on one location and return whichever store came last. Each case passes inputs that are
valid apart from out (the same out, freshly allocated, is accepted), so the ValueError comes from the overlap
check and names ``out``."""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels._utils import check_no_overlap, has_internal_overlap
from tritonseek.kernels.fp8_gemm import fp8_gemm_nt
from tritonseek.kernels.grouped_gemm import grouped_fp8_gemm_contiguous
from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
from tritonseek.kernels.moe_combine import moe_unpermute
from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref, per_token_group_quant_fp8_ref
from tritonseek.kernels.sampling import apply_top_k_top_p

_MSG = "out has elements that share memory"


def _overlapping(shape, dtype, device, how):
    """A [shape] view whose elements alias: ``expand`` (stride 0 in dim 0) or ``as_strided`` (stride 1 in
    every dim, so (i, j) and (i + 1, j − 1) meet)."""
    if how == "expand":
        return torch.empty((1,) + tuple(shape[1:]), dtype=dtype, device=device).expand(*shape)
    return torch.empty(sum(shape), dtype=dtype, device=device).as_strided(shape, (1,) * len(shape))


def test_has_internal_overlap():
    buf = torch.empty(8, 512)
    for t in (buf, buf[:, :256], buf.t(), buf[:, ::2], buf[::2, :256].t(), buf[:, None, :128],
              torch.empty(3, 1).expand(3, 1), torch.empty(0, 4).expand(0, 4), torch.empty(5)[:1].expand(1)):
        assert not has_internal_overlap(t), (t.shape, t.stride())
    for t in (_overlapping((4, 256), torch.float32, "cpu", "expand"), _overlapping((4, 256), torch.float32, "cpu", ""),
              buf.as_strided((4, 64), (64, 2)), buf.as_strided((2, 3, 4), (12, 4, 2)), buf[:, :1].expand(8, 3)):
        assert has_internal_overlap(t), (t.shape, t.stride())
    with pytest.raises(ValueError, match="my_out has elements that share memory"):
        check_no_overlap("my_out", buf[:1].expand(2, 512))


@pytest.mark.parametrize("how", ["expand", "as_strided"])
def test_fp8_gemm_rejects_overlapping_out(device, how):
    g = torch.Generator().manual_seed(0)
    a, a_s = per_token_group_quant_fp8_ref(torch.randn(4, 128, generator=g))
    b, b_s = per_block_quant_fp8_ref(torch.randn(256, 128, generator=g))
    a, a_s, b, b_s = a.to(device), a_s.t().contiguous().t().to(device), b.to(device), b_s.to(device)
    with pytest.raises(ValueError, match=_MSG):
        fp8_gemm_nt(a, a_s, b, b_s, out=_overlapping((4, 256), torch.bfloat16, device, how))
    out = torch.empty(4, 256, dtype=torch.bfloat16, device=device)
    assert fp8_gemm_nt(a, a_s, b, b_s, out=out).data_ptr() == out.data_ptr()


def test_grouped_contiguous_rejects_overlapping_out(device):
    g = torch.Generator().manual_seed(1)
    a, a_s = per_token_group_quant_fp8_ref(torch.randn(128, 128, generator=g))
    b, b_s = per_block_quant_fp8_ref(torch.randn(128, 128, generator=g))
    a, a_s = a.to(device), a_s.t().contiguous().t().to(device)
    b, b_s = b[None].to(device), b_s[None].to(device)
    m_indices = torch.zeros(128, dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match=_MSG):
        grouped_fp8_gemm_contiguous(a, a_s, b, b_s, m_indices, out=_overlapping((128, 128), torch.bfloat16, device,
                                                                                "expand"))


@pytest.mark.parametrize("how", ["expand", "as_strided"])
def test_mla_decode_rejects_overlapping_out(device, how):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 1, 2, 80, generator=g).to(torch.bfloat16).to(device)
    kv = torch.randn(4, 16, 1, 80, generator=g).to(torch.bfloat16).to(device)
    bt = torch.arange(4, dtype=torch.int32, device=device).view(2, 2)
    cs = torch.tensor([20, 30], dtype=torch.int32, device=device)
    md = get_mla_metadata(cs, 1, 2)
    with pytest.raises(ValueError, match=_MSG):
        mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md, out=_overlapping((2, 1, 2, 64), q.dtype, device, how))


def test_moe_unpermute_rejects_overlapping_out(device):
    expert_out = torch.randn(6, 32, device=device)
    row_map = torch.tensor([[0, 1], [2, 3], [4, 5]], dtype=torch.int32, device=device)
    w = torch.rand(3, 2, device=device)
    with pytest.raises(ValueError, match=_MSG):
        moe_unpermute(expert_out, row_map, w, out=_overlapping((3, 32), torch.float32, device, "expand"))


def test_apply_top_k_top_p_rejects_overlapping_out(device):
    logits = torch.randn(3, 40, device=device)
    with pytest.raises(ValueError, match=_MSG):
        apply_top_k_top_p(logits, 5, None, out=_overlapping((3, 40), torch.float32, device, "expand"))
