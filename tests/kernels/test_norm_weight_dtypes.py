"""The norm weights' dtypes as the docstrings state them (h2tester s25 F3): "weight: [N] any float dtype" was written
on rms_norm / fused_add_rms_norm / their _quant_fp8 forms and on mla_rope_cache / mla_prologue_fp8's norm weights, but
the launchers take bf16 / fp16 / fp32 only (an fp64 or fp8 weight is a TypeError naming it). The docstrings say so."""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels import norm, rope_cache
from tritonseek.kernels.reference.norm import rms_norm_ref

DOCS = [norm.rms_norm, norm.fused_add_rms_norm, norm.rms_norm_quant_fp8, norm.fused_add_rms_norm_quant_fp8,
        rope_cache.mla_rope_cache, rope_cache.mla_prologue_fp8]


@pytest.mark.parametrize("fn", DOCS, ids=lambda f: f.__name__)
def test_docstring_names_the_accepted_weight_dtypes(fn):
    assert "any float dtype" not in fn.__doc__
    assert "bf16/fp16/fp32" in fn.__doc__


@pytest.mark.parametrize("wdtype", [torch.float64, torch.float8_e4m3fn])
def test_other_weight_dtypes_are_a_type_error_naming_weight(wdtype):
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="weight must have dtype"):
        norm.rms_norm(x, torch.rand(64).to(wdtype), 1e-6)


@pytest.mark.parametrize("wdtype", [torch.bfloat16, torch.float16, torch.float32])
def test_accepted_weight_dtypes_match_the_reference(wdtype):
    # bf16 output of an fp32 computation: one rounding apart at most (2**-7 relative)
    x, w = torch.randn(3, 64, dtype=torch.bfloat16), (1 + 0.1 * torch.randn(64)).to(wdtype)
    torch.testing.assert_close(norm.rms_norm(x, w, 1e-6), rms_norm_ref(x, w, 1e-6), rtol=2**-7, atol=1e-6)
