"""``out=`` of a wrong type in the sampling launchers (tester 2, s19): ``apply_top_k_top_p(x, 5, 0.9, out=5)`` read
``out.shape`` first and ended in an AttributeError; ``sample`` / ``argmax`` did the same. Now a TypeError naming
``out``, before any work; a tensor out is still taken."""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels.sampling import apply_top_k_top_p, argmax, sample


@pytest.mark.parametrize("bad", [5, "out", [0.0, 1.0], 2.5])
def test_out_of_the_wrong_type_is_a_type_error_naming_out(device, bad):
    x = torch.randn(2, 40, device=device)
    with pytest.raises(TypeError, match=f"out must be a torch.Tensor or None, got {type(bad).__name__}"):
        apply_top_k_top_p(x, 5, 0.9, out=bad)
    with pytest.raises(TypeError, match="out must be a torch.Tensor or None"):
        argmax(x, out=bad)
    with pytest.raises(TypeError, match="out must be a torch.Tensor or None"):
        sample(x, torch.zeros(2, device=device), None, None, None, seeds=torch.zeros(2, dtype=torch.int64, device=device),
               out=bad)


def test_a_tensor_out_is_still_written(device):
    x = torch.randn(2, 40, device=device)
    out = torch.empty(2, 40, device=device)
    assert apply_top_k_top_p(x, 5, None, out=out) is out
    assert (out > float("-inf")).sum(dim=1).tolist() == [5, 5]
    tok = torch.empty(2, dtype=torch.int64, device=device)
    assert argmax(x, out=tok) is tok and tok.tolist() == x.argmax(dim=1).tolist()


def test_apply_top_k_top_p_in_place_on_fp32_logits(device):
    """The docstring allows out=logits (fp32): the result equals the out-of-place one."""
    x = torch.randn(3, 50, device=device)
    want = apply_top_k_top_p(x, 7, 0.8)
    assert apply_top_k_top_p(x, 7, 0.8, out=x) is x and torch.equal(x, want)
