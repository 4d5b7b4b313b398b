"""eps of the RMSNorm launchers (tester 2, s19): eps=True was taken as 1, eps=inf gave an all-zero output, and
eps="x" was a ValueError. Now the shared rule (``check_positive_float``, as rope_cache): a finite number > 0, a
bool or str is a TypeError, inf / nan / 0 / negatives a ValueError, each naming eps."""

from __future__ import annotations

import math

import pytest
import torch

from tritonseek.kernels.norm import fused_add_rms_norm, fused_add_rms_norm_quant_fp8, rms_norm, rms_norm_quant_fp8


def _calls(device):
    x = torch.randn(2, 128, device=device)
    r = torch.randn(2, 128, device=device)
    w = torch.ones(128, device=device)
    return [lambda eps: rms_norm(x, w, eps), lambda eps: fused_add_rms_norm(x, r, w, eps),
            lambda eps: rms_norm_quant_fp8(x, w, eps), lambda eps: fused_add_rms_norm_quant_fp8(x, r, w, eps)]


@pytest.mark.parametrize("eps, err", [(True, TypeError), (False, TypeError), ("x", TypeError), ("1e-6", TypeError),
                                      (None, TypeError), (math.inf, ValueError), (math.nan, ValueError),
                                      (0.0, ValueError), (-1e-6, ValueError)])
def test_bad_eps_names_eps(device, eps, err):
    for call in _calls(device):
        with pytest.raises(err, match="eps"):
            call(eps)


def test_good_eps_still_runs(device):
    x = torch.randn(2, 128, device=device)
    w = torch.ones(128, device=device)
    for eps in (1e-6, 1, 0.5):  # an int is a number too
        y = rms_norm(x, w, eps)
        want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
