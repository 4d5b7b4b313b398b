"""spec_step_inputs / spec_step_finish (the whole-step MTP graph's device bookkeeping) against their references.

Integer outputs, so the comparison is exact. Outputs are poisoned with a sentinel first: every element must be
written. Edge cases: one row, rows across two programs (block of 32), dummy rows (B < b), q = 1 (K = 0 step,
no num_accepted), positions on page boundaries (page size 1).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels.reference.spec_step import spec_step_finish_ref, spec_step_inputs_ref
from tritonseek.kernels.spec_step import spec_step_finish, spec_step_inputs

POISON = -7777


def _inputs(b, q, page, live, seed, device):
    g = torch.Generator().manual_seed(seed)
    max_blocks = 1 + (600 + q) // page
    pos0 = torch.randint(0, 600, (b + 3,), generator=g)
    bt = torch.randint(0, 5000, (b + 2, max_blocks), generator=g, dtype=torch.int32)
    meta = torch.tensor([live, 0, 0, 0], dtype=torch.int32)
    last = torch.randint(0, 4096, (b + 1,), generator=g)
    first = torch.randint(0, 4096, (b + 1,), generator=g)
    return [t.to(device) for t in (pos0, meta, bt, last, first)]


def _outputs(b, q, device):
    n = b * q
    return [torch.full((n,), POISON, dtype=d, device=device)
            for d in (torch.int64, torch.int64, torch.int64, torch.int64, torch.int32, torch.int64)]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(b=st.sampled_from([1, 3, 33]), q=st.integers(1, 5), page=st.sampled_from([1, 16, 64]), data=st.data(),
       seed=st.integers(0, 2**16))
def test_spec_step_inputs_matches_reference(device, b, q, page, data, seed):
    live = data.draw(st.integers(0, b), label="live rows")
    pos0, meta, bt, last, first = _inputs(b, q, page, live, seed, device)
    got, ref = _outputs(b, q, device), _outputs(b, q, device)
    spec_step_inputs(pos0, meta, bt, last, first, b, q, page, *got)
    spec_step_inputs_ref(pos0, meta, bt, last, first, b, q, page, *ref)
    ids_written = torch.zeros(b, q, dtype=torch.bool)
    ids_written[:, : min(q, 2)] = True  # columns >= 2 are the later drafts' (written by the graph)
    for name, x, y in zip(("pos", "slots", "pos_t", "slots_t", "lens_t", "ids"), got, ref):
        x, y = x.cpu(), y.cpu()
        if name == "ids":
            x, y = x.view(b, q)[ids_written], y.view(b, q)[ids_written]
        assert (x != POISON).all(), name
        assert torch.equal(x, y), name
    s = got[1].cpu().view(b, q)
    assert (s[live:] == -1).all() and (s[:live] >= 0).all()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(b=st.sampled_from([1, 3, 33]), q=st.integers(1, 5), seed=st.integers(0, 2**16), with_acc=st.booleans())
def test_spec_step_finish_matches_reference(device, b, q, seed, with_acc):
    g = torch.Generator().manual_seed(seed)
    acc = torch.randint(0, q, (b,), generator=g, dtype=torch.int32)
    if not with_acc:
        acc.zero_()
    out = torch.randint(0, 4096, (b, q), generator=g)
    out[torch.arange(q)[None, :] > acc[:, None].long()] = -1  # padded past the emitted run
    state = [torch.randint(0, 4096, (b + 2,), generator=g), torch.randint(0, 600, (b + 2,), generator=g)]
    runs = []
    for fn in (spec_step_finish, spec_step_finish_ref):
        last, pos0 = (t.clone().to(device) for t in state)
        res = torch.full((b * (q + 1) + 2,), POISON, dtype=torch.int64, device=device)
        ids = torch.full((b * q,), POISON, dtype=torch.int64, device=device)
        sel = torch.full((b,), POISON, dtype=torch.int64, device=device)
        fn(out.to(device), acc.to(device) if with_acc else None, b, q, res, last, pos0, ids, sel)
        runs.append([t.cpu() for t in (res, last, pos0, ids, sel)])
    for name, x, y in zip(("res", "last", "pos0", "ids", "sel"), *runs):
        assert torch.equal(x, y), name
    res, last, pos0, ids, sel = runs[0]
    assert (res[: b * (q + 1)] != POISON).all() and (res[b * (q + 1):] == POISON).all()
    assert (ids != POISON).all() and (ids >= 0).all() and (sel != POISON).all()
    assert torch.equal(last[b:], state[0][b:]) and torch.equal(pos0[b:], state[1][b:])  # rows >= b untouched


def test_spec_step_rejects_bad_arguments(device):
    pos0, meta, bt, last, first = _inputs(2, 2, 16, 2, 0, device)
    outs = _outputs(2, 2, device)
    with pytest.raises(TypeError, match="pos0"):
        spec_step_inputs(pos0.int(), meta, bt, last, first, 2, 2, 16, *outs)
    with pytest.raises(ValueError, match="ids"):
        spec_step_inputs(pos0, meta, bt, last, first, 2, 2, 16, *outs[:5], outs[5][:3])
    with pytest.raises(ValueError, match="out must be"):
        res = torch.zeros(6, dtype=torch.int64, device=device)
        spec_step_finish(torch.zeros(2, 3, dtype=torch.int64, device=device), None, 2, 2, res, last, pos0, outs[2],
                         outs[3])


@pytest.mark.gpu
@pytest.mark.parametrize("b, q", [(1, 2), (16, 4), (128, 5)])
def test_spec_step_gpu_real_shapes(device, b, q):
    # the engine's shapes (batch buckets up to 128, K ≤ 4), V3 page size 64, inside a CUDA graph replay
    if device.type != "cuda":
        pytest.skip("needs TRITONSEEK_TEST_DEVICE=cuda")
    pos0, meta, bt, last, first = _inputs(b, q, 64, max(1, b - 3), b, device)
    got, ref = _outputs(b, q, device), _outputs(b, q, device)
    spec_step_inputs(pos0, meta, bt, last, first, b, q, 64, *got)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        spec_step_inputs(pos0, meta, bt, last, first, b, q, 64, *got)
    for t in got:
        t.fill_(POISON)
    graph.replay()
    spec_step_inputs_ref(pos0, meta, bt, last, first, b, q, 64, *ref)
    for x, y in zip(got[:5], ref[:5]):
        assert torch.equal(x, y)
