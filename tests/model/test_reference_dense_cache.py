"""The reference backend's dense copies of FP8 weights follow in-place updates (h2tester s26): Ops.linear cached the
dequantized weight by storage address only, so after an in-place change of the weights (load_state_dict into a
loaded model) generation kept producing the old tokens."""

from __future__ import annotations

import torch

from tritonseek import LLM, SamplingParams
from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref
from tritonseek.model.ops import Ops


def test_linear_follows_in_place_scale_update_and_reuses_otherwise():
    g = torch.Generator().manual_seed(0)
    w, s = per_block_quant_fp8_ref(torch.randn(200, 256, generator=g))
    x = torch.randn(3, 256, generator=g)
    ops = Ops("reference")
    y = ops.linear(x, w, s)
    (entry,) = ops._dense.values()
    ops.linear(x, w, s)
    assert next(iter(ops._dense.values()))[1] is entry[1]  # unchanged weight: the cached copy
    with torch.no_grad():
        s.mul_(2.0)
    torch.testing.assert_close(ops.linear(x, w, s), 2.0 * y)
    assert len(ops._dense) == 1  # replaced, not accumulated
    expert_w, expert_s = torch.stack([w, w]), torch.stack([s, s])  # views of a stacked base (the MoE experts)
    y0 = ops.linear(x, expert_w[0], expert_s[0])
    with torch.no_grad():
        expert_s.mul_(0.5)
    torch.testing.assert_close(ops.linear(x, expert_w[0], expert_s[0]), 0.5 * y0)


def test_generate_follows_in_place_weight_update():
    params = SamplingParams(max_new_tokens=8)

    def shrink(model):
        with torch.no_grad():
            for n, t in model.named_parameters():
                if n.endswith("weight_scale_inv"):
                    t.mul_(0.0).add_(1e-3)

    llm = LLM(device="cpu")
    llm.generate(["def f(x):"], params)  # fills the dense cache
    shrink(llm.model)
    fresh = LLM(device="cpu")
    shrink(fresh.model)
    want = fresh.generate(["def f(x):"], params)[0].token_ids
    assert llm.generate(["def f(x):"], params)[0].token_ids == want
