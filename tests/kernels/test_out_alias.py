"""Outputs that alias the inputs (tester 2, s19). ``moe_unpermute(eo, rm.flip(0), w, out=eo[:T])`` was accepted
and the result was wrong (programs overwrote expert rows other programs still had to read): out's memory span may
not meet an input's (ValueError naming out and the input), except out *being* shared_output (the in-place update
each program does for its own elements). ``write_latent_cache`` / ``mla_rope_cache`` write kv_cache in place and
took an expand()-ed cache whose rows share memory: refused like an overlapping out=.
"""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels._utils import check_no_alias
from tritonseek.kernels.mla_prefill import write_latent_cache
from tritonseek.kernels.moe_combine import moe_unpermute
from tritonseek.kernels.reference.moe import moe_unpermute_ref
from tritonseek.kernels.reference.rope import cos_sin_cache_ref
from tritonseek.kernels.rope_cache import mla_prologue_fp8, mla_rope_cache


def _moe(device, T=4, M=8, H=32):
    g = torch.Generator().manual_seed(0)
    eo = torch.randn(M, H, generator=g).to(device)
    rm = torch.stack([torch.arange(T), torch.arange(T) + T]).t().contiguous().to(torch.int32).to(device)
    w = torch.rand(T, 2, generator=g).to(device)
    return eo, rm, w


def test_moe_unpermute_refuses_out_inside_expert_out(device):
    eo, rm, w = _moe(device)
    T = rm.shape[0]
    before = eo.clone()
    with pytest.raises(ValueError, match="out shares memory with expert_out: out must not alias the inputs"):
        moe_unpermute(eo, rm.flip(0).contiguous(), w, out=eo[:T])  # the tester's call
    with pytest.raises(ValueError, match="out shares memory with expert_out"):
        moe_unpermute(eo, rm, w, out=eo[T:, :])  # a disjoint-looking tail of the same buffer is still read
    assert torch.equal(eo, before)  # refused before any launch
    shared = torch.randn(T, eo.shape[1], device=device)
    big = torch.zeros(T + 1, eo.shape[1], device=device)
    big[1:] = shared
    with pytest.raises(ValueError, match="out shares memory with shared_output"):
        moe_unpermute(eo, rm, w, big[1:], out=big[:-1])  # shifted by a row: a partial overlap


def test_moe_unpermute_out_may_be_shared_output_itself(device):
    """The one legitimate alias: out is shared_output (same view), each element read then written by one program."""
    eo, rm, w = _moe(device)
    shared = torch.randn(rm.shape[0], eo.shape[1], device=device)
    want = moe_unpermute_ref(eo.cpu(), rm.cpu(), w.cpu(), shared.cpu())
    separate = torch.empty_like(shared)
    torch.testing.assert_close(moe_unpermute(eo, rm, w, shared, out=separate).cpu(), want)
    got = moe_unpermute(eo, rm, w, shared, out=shared)
    assert got.data_ptr() == shared.data_ptr()
    torch.testing.assert_close(got.cpu(), want)


def test_check_no_alias_spans():
    buf = torch.zeros(10, 4)
    check_no_alias("out", buf[:5], x=buf[5:], y=None, z=torch.zeros(3))  # adjacent, not overlapping
    check_no_alias("out", buf[:0], x=buf)  # empty
    with pytest.raises(ValueError, match="out shares memory with x"):
        check_no_alias("out", buf[4:6], x=buf[5:])
    with pytest.raises(ValueError, match="out shares memory with x"):
        check_no_alias("out", buf[:, 0], x=buf[:, 1])  # interleaved columns: refused (conservative)
    with pytest.raises(ValueError, match="out shares memory with x"):
        check_no_alias("out", buf.view(torch.int32)[:2], x=buf[1:2])  # other dtype, same bytes
    check_no_alias("out", buf[2:4], ("x",), x=buf[2:4])  # the same view, allowed for an in-place input
    with pytest.raises(ValueError, match="out shares memory with x"):
        check_no_alias("out", buf[2:4], ("x",), x=buf[2:5])  # not the same view: refused
    with pytest.raises(ValueError, match="out shares memory with y"):
        check_no_alias("out", buf[2:4], ("x",), y=buf[2:4])  # the same view of an input not in same_ok

def _latent(device, T=3, kv_lora=16, rope=8):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(T, 2, 8 + rope, generator=g).to(device)
    kv = torch.randn(T, kv_lora + rope, generator=g).to(device)
    pos = torch.arange(T).to(device)
    cs = cos_sin_cache_ref(1.0 / (10000 ** (torch.arange(0, rope, 2, dtype=torch.float32) / rope)), 16).to(device)
    w = torch.randn(kv_lora, generator=g).to(device)
    slots = torch.arange(T, dtype=torch.int64).to(device)
    return q, kv, pos, cs, w, slots


def test_latent_cache_writers_refuse_an_expanded_cache(device):
    q, kv, pos, cs, w, slots = _latent(device)
    d = kv.shape[1]
    shared_rows = torch.zeros(1, 16, 1, d, device=device).expand(4, 16, 1, d)  # the tester's cache
    with pytest.raises(ValueError, match="kv_cache has elements that share memory"):
        write_latent_cache(shared_rows, kv, slots)
    with pytest.raises(ValueError, match="kv_cache has elements that share memory"):
        mla_rope_cache(q, kv, pos, cs, w, 1e-6, shared_rows, slots)
    q_a = torch.randn(kv.shape[0], 128, device=device)
    with pytest.raises(ValueError, match="kv_cache has elements that share memory"):
        mla_prologue_fp8(q_a, kv, torch.ones(128, device=device), 1e-6, pos, cs, w, 1e-6, shared_rows, slots)
    cache = torch.zeros(4, 16, 1, d, device=device)  # a real cache is accepted and written
    write_latent_cache(cache, kv, slots)
    assert torch.equal(cache.view(-1, d)[: kv.shape[0]].cpu(), kv.cpu())
    mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache, slots)


def _verify_inputs(device, B=3, K=3, V=50):
    g = torch.Generator().manual_seed(1)
    tl = torch.randn(B, K + 1, V, generator=g)
    d = torch.randint(0, V, (B, K), generator=g)
    d[0] = tl[0, :K].argmax(-1)
    return d.to(device), tl.to(device)


def test_verify_outputs_may_not_alias_each_other_or_the_inputs(device):
    """tester22 #7: an out_num_accepted viewed over out_tokens was accepted and both came back corrupted; an
    out_tokens laid over the seeds (or any input) was accepted (on the GPU row 0's program overwrites rows 1-2's
    seeds before they are read). Each is a ValueError naming the outputs and the input now."""
    from tritonseek.kernels.spec_verify import verify_greedy, verify_rejection

    B, K = 3, 3
    d, tl = _verify_inputs(device, B, K)
    ob = torch.empty(B, K + 1, dtype=torch.int64, device=device)
    na = ob.view(torch.int32).view(-1)[:B]
    with pytest.raises(ValueError, match="out_num_accepted shares memory with out_tokens"):
        verify_greedy(d, tl, out_tokens=ob, out_num_accepted=na)
    buf = torch.zeros(B * (K + 1), dtype=torch.int64, device=device)
    buf[:B * K] = d.reshape(-1)
    with pytest.raises(ValueError, match="out_tokens shares memory with draft_tokens"):
        verify_greedy(buf[:B * K].view(B, K), tl, out_tokens=buf.view(B, K + 1))
    u = torch.rand(B, K, device=device)
    temp = torch.ones(B, device=device)
    with pytest.raises(ValueError, match="out_num_accepted shares memory with out_tokens"):
        verify_rejection(d, None, tl, temp, None, None, u, None, seeds=torch.arange(B, device=device),
                         out_tokens=ob, out_num_accepted=na)
    sb = torch.zeros(B * (K + 1), dtype=torch.int64, device=device)
    sb[:B] = torch.arange(B) + 5
    with pytest.raises(ValueError, match="out_tokens shares memory with seeds"):
        verify_rejection(d, None, tl, temp, None, None, u, None, seeds=sb[:B], out_tokens=sb.view(B, K + 1))
    with pytest.raises(ValueError, match="out_num_accepted shares memory with temperature"):
        verify_rejection(d, None, tl, temp, None, None, u, None, seeds=torch.arange(B, device=device),
                         out_num_accepted=temp.view(torch.int32))
    # separate buffers still work, and give what fresh outputs give
    want = verify_greedy(d, tl)
    got = verify_greedy(d, tl, out_tokens=torch.empty_like(ob), out_num_accepted=torch.empty_like(na))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
