"""MLA's absorbed W_UK / W_UV follow an in-place update of kv_b_proj (h2tester s26): they were cached once, so after
``load_state_dict`` into a loaded model (or any in-place change) decode ran on the old weight while prefill used the
new one. The cache is now keyed on the weight's (and scale's) version; an unchanged weight is not rebuilt."""

from __future__ import annotations

import torch

from tritonseek import LLM, SamplingParams
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.model.loader import load_model
from tritonseek.model.ops import Ops


def _scale_kv_b(model, factor):
    with torch.no_grad():
        for n, t in model.named_parameters():
            if "kv_b_proj.weight_scale_inv" in n:
                t.mul_(factor)


def test_absorbed_weights_follow_in_place_update():
    model = load_model(DEFAULT_MODEL_DIR, ops=Ops("reference"), dtype=torch.float32)
    attn = next(m for m in model.modules() if hasattr(m, "absorbed_weights"))  # the first layer's MLA
    uk, uv = attn.absorbed_weights(torch.float32)
    again = attn.absorbed_weights(torch.float32)
    assert again[0] is uk and again[1] is uv  # unchanged weight: the cached tensors, no rebuild
    before = uk.clone()
    with torch.no_grad():
        attn.kv_b_proj.weight_scale_inv.mul_(2.0)
    uk2, _ = attn.absorbed_weights(torch.float32)
    torch.testing.assert_close(uk2, 2.0 * before)


def test_decode_matches_a_fresh_model_after_in_place_update():
    params = SamplingParams(max_new_tokens=8)
    llm = LLM(device="cpu")
    llm.generate(["def f(x):"], params)  # builds the absorbed weights
    _scale_kv_b(llm.model, 3.0)
    fresh = LLM(device="cpu")
    _scale_kv_b(fresh.model, 3.0)
    want = fresh.generate(["def f(x):"], params)[0].token_ids
    assert llm.generate(["def f(x):"], params)[0].token_ids == want
