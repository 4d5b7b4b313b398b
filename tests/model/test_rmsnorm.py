"""The model's RMSNorm torch path (the CPU reference backend; layers.RMSNorm without triton ops) against the norm
reference (tritonseek.kernels.reference.norm), where eps matters: activations whose mean square is near eps.
tester22 mutation #53: eps moved outside the sqrt in this path passed the parity tests (eps 1e-6 against O(1)
activations changes the output by ~1e-6 relative, under their tolerance); the kernel twin is tested in test_norm."""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels.reference.norm import fused_add_rms_norm_ref, rms_norm_ref
from tritonseek.model.layers import RMSNorm


@pytest.mark.parametrize("scale", [1e-3, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_rmsnorm_matches_reference_near_eps(scale, dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 64, generator=g) * scale).to(dtype)  # scale 1e-3: mean(x²) ~ 1e-6 = eps
    r = (torch.randn(4, 64, generator=g) * scale).to(dtype)
    norm = RMSNorm(64, eps=1e-6)
    norm.weight.data = torch.randn(64, generator=g)
    tol = dict(rtol=1e-6, atol=0) if dtype == torch.float32 else dict(rtol=2**-8, atol=0)
    torch.testing.assert_close(norm(x), rms_norm_ref(x, norm.weight, 1e-6), **tol)
    y, h = norm.add_forward(x, r)
    y_ref, h_ref = fused_add_rms_norm_ref(x, r, norm.weight, 1e-6)
    assert torch.equal(h, h_ref)
    torch.testing.assert_close(y, y_ref, **tol)
