"""Argument errors of the sampling and gate launchers follow the scalar rule of ``kernels._utils`` (h5 s21, from
session 20's testers): numpy integers inside sampling's tuple ``config`` are ints (they were a TypeError); a non-str
``scoring_func`` / ``topk_method`` is a TypeError naming it (scoring_func=True was a ValueError blaming the value);
a 0-d tensor for a per-row parameter says what is accepted (it said only "must be 1-D"); spec_step's b / q /
page_size follow the int rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tritonseek.kernels import gate_topk, mla_rope_cache, router_gate_topk
from tritonseek.kernels.reference.moe import gate_topk_ref
from tritonseek.kernels.reference.spec_step import spec_step_inputs_ref
from tritonseek.kernels.sampling import apply_top_k_top_p, argmax, check_config, sample
from tritonseek.kernels.spec_step import spec_step_finish, spec_step_inputs
from tritonseek.kernels.spec_verify import verify_greedy, verify_rejection


def test_sampling_config_takes_numpy_ints_as_ints():
    got = check_config((np.int64(1024), np.int32(4), np.int8(8)))
    assert got == (1024, 4, 8) and all(type(v) is int for v in got)
    got = check_config([np.int64(256), 2, np.uint16(1), np.int64(2)], unroll=True)
    assert got == (256, 2, 1, 2) and all(type(v) is int for v in got)
    assert check_config(None) is None
    for bad in ((1024, 4, True), (1024, np.bool_(True), 8), (1024.0, 4, 8), (np.float32(1024), 4, 8),
                (1024, 4, "8"), (1024, 4, torch.tensor(8)), "1024,4,8", 1024):
        with pytest.raises(TypeError, match="^config="):
            check_config(bad)
    for bad in ((np.int64(1000), 4, 8), (1024, np.int64(3), 8), (1024, 4, np.int64(0)), (1024, 4)):
        with pytest.raises(ValueError, match="^config="):
            check_config(bad)


def test_launchers_run_with_a_numpy_config(device):
    logits = torch.randn(3, 300, device=device)
    want = torch.argmax(logits, dim=-1)
    cfg = (np.int64(256), np.int64(4), np.int64(2))
    assert torch.equal(argmax(logits, config=cfg), want)
    temp = torch.zeros(3, device=device)  # greedy rows: the noise is not read
    assert torch.equal(sample(logits, temp, None, None, torch.ones(3, 300, device=device), config=cfg), want)
    drafts = want[:, None].clone()
    toks, n = verify_greedy(drafts, torch.stack([logits, logits], dim=1), config=cfg + (np.int64(1),))
    assert n.tolist() == [1, 1, 1] and torch.equal(toks[:, 0], want)


@pytest.mark.parametrize("name,bad", [("scoring_func", True), ("scoring_func", 1), ("scoring_func", None),
                                      ("scoring_func", torch.tensor(1)), ("topk_method", True),
                                      ("topk_method", ["greedy"])])
def test_gate_string_settings_of_another_type_are_a_type_error(device, name, bad):
    logits = torch.randn(2, 8, device=device)
    kw = dict(top_k=2, n_group=1, topk_group=1, **{name: bad})
    for fn in (gate_topk, gate_topk_ref):
        with pytest.raises(TypeError, match=f"^{name} must be a str, got {type(bad).__name__}"):
            fn(logits, None, **kw)
    with pytest.raises(ValueError, match="^scoring_func must be one of"):
        gate_topk(logits, None, top_k=2, scoring_func="relu")


@pytest.mark.parametrize("name", ["temperature", "top_k", "top_p"])
def test_zero_d_per_row_tensor_says_what_is_accepted(device, name):
    logits = torch.randn(2, 64, device=device)
    noise = torch.ones(2, 64, device=device)
    zero_d = torch.tensor(5, dtype=torch.int32) if name == "top_k" else torch.tensor(0.9)
    host = "a Python int" if name == "top_k" else "a Python float"
    kw = dict(temperature=torch.ones(2, device=device), top_k=None, top_p=None)
    kw[name] = zero_d.to(device)
    msg = rf"^{name} must be a 1-D \[2\] torch\.\w+ tensor \(one value per row\) or {host} \(every row\), got a 0-D " \
          rf"tensor of shape \(\)"
    with pytest.raises(ValueError, match=msg):
        sample(logits, kw["temperature"], kw["top_k"], kw["top_p"], noise)
    if name != "temperature":
        with pytest.raises(ValueError, match=msg):
            apply_top_k_top_p(logits, kw["top_k"], kw["top_p"])
    kw[name] = zero_d.reshape(1, 1).expand(2, 1).to(device)  # 2-D: same message, its shape
    with pytest.raises(ValueError, match=rf"^{name} must be a 1-D .* got a 2-D tensor of shape \(2, 1\)"):
        sample(logits, kw["temperature"], kw["top_k"], kw["top_p"], noise)


def test_spec_step_row_counts_follow_the_scalar_rule(device):
    """b=True ran as b=1 and np.int64 / 2.0 were a ValueError blaming the value (h5 s21): ints and numpy integers
    are taken, anything else is a TypeError naming b / q / page_size."""
    b, q = 3, 2
    pos0 = torch.arange(b, device=device) * 5
    meta = torch.tensor([b], dtype=torch.int32, device=device)
    bt = torch.arange(b * 4, dtype=torch.int32, device=device).view(b, 4)
    last, first = torch.arange(b, device=device), torch.arange(b, device=device) + 10

    def outs():
        return [torch.zeros(b * q, dtype=torch.int32 if i == 4 else torch.int64, device=device) for i in range(6)]

    want, got = outs(), outs()
    spec_step_inputs_ref(pos0, meta, bt, last, first, b, q, 16, *want)
    spec_step_inputs(pos0, meta, bt, last, first, np.int64(b), np.int32(q), np.int16(16), *got)
    assert all(torch.equal(x, y) for x, y in zip(got, want))
    for name, bad in [(n, v) for n in ("b", "q", "page_size") for v in (True, 2.0, np.float32(2), "2", None,
                                                                        torch.tensor(2))]:
        kw = {**dict(b=b, q=q, page_size=16), name: bad}
        with pytest.raises(TypeError, match=f"^{name} must be an int, got {type(bad).__name__}"):
            spec_step_inputs(pos0, meta, bt, last, first, kw["b"], kw["q"], kw["page_size"], *outs())
    with pytest.raises(ValueError, match="^q must be in 1..8, got 9"):
        spec_step_inputs(pos0, meta, bt, last, first, b, 9, 16, *outs())
    out = torch.zeros(b, q, dtype=torch.int64, device=device)
    bufs = [torch.zeros(b * (q + 1), dtype=torch.int64, device=device), last.clone(), pos0.clone(),
            torch.zeros(b * q, dtype=torch.int64, device=device), torch.zeros(b, dtype=torch.int64, device=device)]
    spec_step_finish(out, None, np.int64(b), np.int64(q), *bufs)
    for bad in (True, None, 3.0):
        with pytest.raises(TypeError, match=f"^b must be an int, got {type(bad).__name__}"):
            spec_step_finish(out, None, bad, q, *bufs)


def test_router_config_errors_name_the_key(device):
    """router_gate_topk(config="fast") was a ValueError (a wrong type is a TypeError under the scalar rule) and a bad
    value's message named no key (h5 s21)."""
    x = torch.randn(2, 64, device=device).to(torch.bfloat16)
    w = torch.randn(8, 64, device=device).to(torch.bfloat16)
    for bad in ("fast", [("BLOCK_E", 8)], 8):
        with pytest.raises(TypeError, match=f"^config must be a dict or None, got {type(bad).__name__}"):
            router_gate_topk(x, w, None, top_k=2, config=bad)
    for key, bad in (("BLOCK_E", 6), ("num_warps", 32), ("PDL", 1), ("BLOCK_T", np.float32(2)), ("BLOCK", 8)):
        with pytest.raises(ValueError, match=f"^config key {key}="):
            router_gate_topk(x, w, None, top_k=2, config={key: bad})


def test_verify_outputs_with_shared_elements_are_refused(device):
    """verify_greedy / verify_rejection took an expand()-ed out_tokens and returned the last row's result in every
    row (tester21 #4); a non-tensor out was an AttributeError."""
    torch.manual_seed(1)
    B, K, V = 2, 3, 50
    tl_ = torch.randn(B, K + 1, V, device=device)
    d = torch.randint(0, V, (B, K), device=device)
    d[0] = tl_[0, :K].argmax(-1)
    want = verify_greedy(d, tl_)
    ok = torch.full((B, K + 1), -7, dtype=torch.int64, device=device)
    got = verify_greedy(d, tl_, out_tokens=ok)
    assert got[0] is ok and torch.equal(ok, want[0]) and torch.equal(got[1], want[1])
    shared = torch.full((1, K + 1), -7, dtype=torch.int64, device=device).expand(B, K + 1)
    uniforms = torch.rand(B, K, device=device)
    noise = torch.ones(B, K + 1, V, device=device)
    with pytest.raises(ValueError, match="^out_tokens has elements that share memory"):
        verify_greedy(d, tl_, out_tokens=shared)
    with pytest.raises(ValueError, match="^out_tokens has elements that share memory"):
        verify_rejection(d, None, tl_, 1.0, None, None, uniforms, noise, out_tokens=shared)
    for kw in (dict(out_tokens=5), dict(out_num_accepted=[0, 0])):
        name = next(iter(kw))
        with pytest.raises(TypeError, match=f"^{name} must be a torch.Tensor or None, got {type(kw[name]).__name__}"):
            verify_greedy(d, tl_, **kw)


def test_rope_cache_short_kv_norm_weight_is_named(device):
    """A kv_norm_weight of 31 entries (kv_lora_rank 32) was reported as "kv must be [T=3, kv_lora_rank 31 + ...],
    got (3, 48)", blaming the right kv (tester21 #8)."""
    q = torch.randn(3, 2, 48, device=device)
    kv = torch.randn(3, 48, device=device)
    pos = torch.arange(3, device=device)
    cs = torch.randn(8, 16, device=device)
    w = torch.ones(32, device=device)
    mla_rope_cache(q, kv, pos, cs, w, 1e-6, None, None)
    with pytest.raises(ValueError, match=r"^kv has 48 columns, but kv_norm_weight has 31 entries .* with this kv, "
                                         r"kv_norm_weight must be \[32\]"):
        mla_rope_cache(q, kv, pos, cs, w[:31], 1e-6, None, None)
    with pytest.raises(ValueError, match="^kv has 2 rows, q 3"):
        mla_rope_cache(q, kv[:2], pos, cs, w, 1e-6, None, None)


def test_zero_d_tensor_where_a_row_tensor_is_expected_is_named(device):
    """check_tensor said "seeds must be 1-D, got shape ()" for a scalar tensor; it names the 0-d tensor now, and
    the dimension count of any other wrong shape (h5 s21)."""
    from tritonseek.kernels._utils import check_tensor

    with pytest.raises(ValueError, match=r"^seeds must be 1-D, got a 0-d \(scalar\) tensor, shape \(\)$"):
        sample(torch.randn(2, 64, device=device), 1.0, None, None, None, seeds=torch.tensor(3, device=device))
    with pytest.raises(ValueError, match=r"^x must be 2-D, got a 3-D tensor of shape \(1, 2, 3\)$"):
        check_tensor("x", torch.zeros(1, 2, 3), ndim=2)
