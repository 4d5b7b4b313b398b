"""fp8_linear names its own parameter for a bad weight_scale_inv (h2tester s26): the error came from fp8_gemm_nt and
named "b_scale", which fp8_linear's caller never passed (as tester23 #3 found for "a")."""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels.fp8_gemm import fp8_gemm_nt, fp8_linear
from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8
from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref


def _w():
    g = torch.Generator().manual_seed(0)
    return per_block_quant_fp8_ref(torch.randn(200, 384, generator=g))  # N tail: 2 row blocks, 3 K blocks


@pytest.mark.parametrize("bad,err,match", [
    (lambda s: s[:, :1], ValueError, r"weight_scale_inv must be \[ceil\(N/128\), ceil\(K/128\)\] = \(2, 3\)"),
    (lambda s: s.t(), ValueError, r"weight_scale_inv must be \[ceil\(N/128\), ceil\(K/128\)\]"),
    (lambda s: s.flatten(), ValueError, "weight_scale_inv must be 2-D"),
    (lambda s: s.bfloat16(), TypeError, "weight_scale_inv must have dtype torch.float32"),
    (lambda s: s.tolist(), TypeError, "weight_scale_inv must be a torch.Tensor"),
])
def test_bad_weight_scale_inv_is_named(bad, err, match):
    w, s = _w()
    x = torch.randn(3, 384, dtype=torch.bfloat16)
    with pytest.raises(err, match=match):
        fp8_linear(x, w, bad(s))
    with pytest.raises(err, match=match):  # also without rows to compute (it returned before any check)
        fp8_linear(x[:0], w, bad(s))


def test_good_weight_scale_inv_is_the_quant_then_gemm():
    w, s = _w()
    x = torch.randn(3, 384, dtype=torch.bfloat16)
    torch.testing.assert_close(fp8_linear(x, w, s), fp8_gemm_nt(*per_token_group_quant_fp8(x), w, s), rtol=0, atol=0)
