"""WHOLE_COST schedule (kernels/mla_schedule_whole.py: the balanced fallback of SCHED="packed" with sequences that
lie whole inside one program charged more) against its reference, and decode on it.

CPU: the reference's properties (every tile of every sequence covered once in order, split counts and slots
consistent; whole = 0 is mla_schedule_ref; a whole sequence's program gets fewer tiles); the device schedule kernel
(interpreter) equals the reference exactly (integers); mla_decode (tl kernel, interpreter) on it against the fp32
reference (cosine difference ≤ 1e-5, |Δlse| ≤ 1e-3: test_mla_decode.py's tolerances, justified there).
GPU (gpu marker): the schedule at batch 128 on the H200's programs and the Gluon decode on it at FlashMLA's varlen
shapes (0- and 1-length rows, NaN in every unused cache slot, out poisoned).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernels.test_mla_decode import _fixture_ok, assert_matches_ref, make_case, walk_schedule
from tests.kernels.test_mla_schedule import _bench_lens, _device_case
from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
from tritonseek.kernels.mla_schedule_whole import balanced_whole_ref, mla_schedule_whole_ref, schedule_whole
from tritonseek.kernels.reference.mla import mla_decode_ref, mla_schedule_ref

BN = 64
_lens = st.lists(st.one_of(st.integers(0, 6000), st.sampled_from([0, 1, 64, 65, 4096])), min_size=1, max_size=160)


def _cfg(num_parts: int, num_sm: int = 8, **kw) -> dict:
    return dict(dict(BLOCK_H=16, BLOCK_N=BN, num_warps=4, num_stages=3, PARTS_PER_SM=num_parts / num_sm, SCHED="packed",
                     FILL_TOL=3, OVERHEAD=2), **kw)


@settings(max_examples=60)
@given(lens=_lens, num_parts=st.integers(1, 140), overhead=st.integers(0, 6), whole=st.integers(0, 6),
       iters=st.integers(0, 4))
def test_whole_reference_covers_every_tile_once(lens, num_parts, overhead, whole, iters):
    """Every tile of every sequence in exactly one program, a sequence's programs consecutive and counted by
    split[b], slots p + b unique; whole = 0 or iters = 0 is the plain balanced cut."""
    cs = torch.tensor(lens, dtype=torch.int32)
    sched, spl = balanced_whole_ref(cs, num_parts, BN, overhead, 1, whole, iters)
    assert sched.shape == (num_parts, 4) and spl.shape == (len(lens), 2)
    if whole == 0 or iters == 0:
        rs, rsp = mla_schedule_ref(cs, num_parts, BN, overhead, 1)
        assert torch.equal(sched, rs) and torch.equal(spl, rsp)
    sched, spl = sched.tolist(), spl.tolist()
    seen, parts_of, _ = walk_schedule(sched, lens, BN)
    slots = set()
    for b, n in enumerate(lens):
        assert all(seen.get((b, t)) == 1 for t in range(-(-n // BN)))
        got = parts_of.get(b, [])
        assert spl[b][1] == len(got)
        if got:
            assert got == list(range(spl[b][0], spl[b][0] + len(got)))
            assert not slots & {p + b for p in got}
            slots |= {p + b for p in got}
    assert sum(seen.values()) == sum(-(-n // BN) for n in lens)


def test_whole_sequence_program_gets_fewer_tiles():
    """Tiles [10, 2, 10, 10, 10] on 5 programs, overhead 2 (costs 12, 4, 12, 12, 12; per 11): the plain cut gives
    program 1 the last tile of sequence 0, sequence 1 whole and 4 tiles of sequence 2 (a whole sequence after a
    piece); charged 3 more for that (one round), program 1 keeps one tile of sequence 2 and the others take the
    rest. A whole sequence that starts its program (sequence 0 in program 0) is not charged."""
    nt = [10, 2, 10, 10, 10]
    cs = torch.tensor([t * BN for t in nt], dtype=torch.int32)

    def segments(sched):
        return [[(b, min(k1 if b == b1 else nt[b], nt[b]) - (k0 if b == b0 else 0)) for b in range(b0, min(b1, 4) + 1)
                 if min(k1 if b == b1 else nt[b], nt[b]) > (k0 if b == b0 else 0)] for b0, k0, b1, k1 in sched.tolist()]

    assert segments(mla_schedule_ref(cs, 5, BN, 2, 1)[0]) == [
        [(0, 9)], [(0, 1), (1, 2), (2, 4)], [(2, 6), (3, 3)], [(3, 7), (4, 2)], [(4, 8)]]
    assert segments(balanced_whole_ref(cs, 5, BN, 2, 1, 3, 1)[0]) == [
        [(0, 9)], [(0, 1), (1, 2), (2, 1)], [(2, 9)], [(3, 10)], [(4, 10)]]


@settings(_fixture_ok, max_examples=8)
@given(lens=st.lists(st.one_of(st.integers(0, 4000), st.sampled_from([0, 1, 64, 65])), min_size=1, max_size=150),
       num_parts=st.integers(1, 40), whole=st.integers(0, 5), iters=st.integers(1, 3),
       fill_tol=st.sampled_from([-1, 0, 3]))
def test_whole_kernel_equals_reference(device, lens, num_parts, whole, iters, fill_tol):
    """schedule_whole's device kernel gives mla_schedule_whole_ref's integers (the packed result where the FILL_TOL
    rule keeps it, the charged balanced cut where it falls back); whole = 0 leaves get_mla_metadata's schedule."""
    cs = torch.tensor(lens, dtype=torch.int32, device=device)
    cfg = _cfg(num_parts, FILL_TOL=fill_tol)
    md = get_mla_metadata(cs, 1, 16, num_sm=8, config=cfg)
    s0, p0 = md.sched.clone(), md.split.clone()
    schedule_whole(md, cs, 0, iters)
    assert torch.equal(md.sched, s0) and torch.equal(md.split, p0)
    schedule_whole(md, cs, whole, iters)
    rs, rsp = mla_schedule_whole_ref(cs.cpu(), num_parts, cfg, whole, iters)
    assert torch.equal(md.sched.cpu(), rs) and torch.equal(md.split.cpu(), rsp)


def test_whole_kernel_benchmark_batches(device):
    """bench_mla's b128 varlen lengths (s_k 4096 / 8192, 0- and 1-length rows) on 132 programs: the balanced
    fallback, charged, equals the reference, and differs from the plain cut."""
    for s_k in (4096, 8192):
        cs = torch.tensor(_bench_lens(s_k, 1, True), dtype=torch.int32, device=device)
        cfg = _cfg(132, 132)
        md = get_mla_metadata(cs, 1, 16, num_sm=132, config=cfg)
        plain = md.sched.clone()
        schedule_whole(md, cs, 2, 2)
        rs, rsp = mla_schedule_whole_ref(cs.cpu(), 132, cfg, 2, 2)
        assert torch.equal(md.sched.cpu(), rs) and torch.equal(md.split.cpu(), rsp)
        assert not torch.equal(plain, md.sched)


def test_schedule_whole_bad_args_raise():
    cs = torch.tensor([5, 70], dtype=torch.int32)
    md = get_mla_metadata(cs, 1, 16, num_sm=8, config=_cfg(4))
    with pytest.raises(ValueError, match="whole"):
        schedule_whole(md, cs, -1)
    with pytest.raises(ValueError, match="iters"):
        schedule_whole(md, cs, 2, 9)
    with pytest.raises(ValueError, match="cache_seqlens"):
        schedule_whole(md, cs[:1], 2)
    bal = get_mla_metadata(cs, 1, 16, num_sm=8, config=dict(_cfg(4), SCHED="balanced"))
    with pytest.raises(ValueError, match="packed"):
        schedule_whole(bal, cs, 2)


@settings(_fixture_ok, max_examples=5)
@given(lens=st.lists(st.one_of(st.integers(0, 300), st.sampled_from([0, 1, 16, 17])), min_size=2, max_size=6),
       num_parts=st.integers(2, 6), seqlen_q=st.sampled_from([1, 2]), num_heads=st.sampled_from([1, 3, 16]),
       whole=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_decode_on_whole_schedule_matches_reference(device, lens, num_parts, seqlen_q, num_heads, whole, seed):
    """mla_decode (tl kernel, interpreter) on the charged schedule (FILL_TOL 0 with OVERHEAD 2: mostly the
    balanced fallback): whole and split sequences, empty ones, NaN in unused cache slots and in out."""
    gen = torch.Generator().manual_seed(seed)
    q, kv, bt, cs = make_case(device, len(lens), seqlen_q, num_heads, 80, 64, 16, lens, gen)
    cfg = dict(BLOCK_H=16, BLOCK_N=16, num_warps=4, num_stages=2, PARTS_PER_SM=num_parts / 8, SCHED="packed",
               FILL_TOL=0, OVERHEAD=2)
    md = get_mla_metadata(cs, seqlen_q, num_heads, num_sm=8, config=cfg)
    schedule_whole(md, cs, whole, 2)
    out = torch.full((len(lens), seqlen_q, num_heads, 64), float("nan"), dtype=q.dtype, device=device)
    o, lse = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md, out=out)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=64)
    assert_matches_ref(o, lse, ro, rlse)


# ----------------------------------------------------------------------------- H200 (gpu marker)

@pytest.mark.gpu
@pytest.mark.parametrize("s_k,h,s_q", [(4096, 16, 2), (4096, 32, 1), (4096, 16, 1), (8192, 32, 1)])
@pytest.mark.parametrize("whole", [1, 2, 3])
def test_decode_whole_real_shapes_gpu(device, s_k, h, s_q, whole):
    """FlashMLA's b128 varlen cases (0- and 1-length rows) through mla_decode's default Hopper config with the
    charged schedule (Gluon split kernel): the schedule equals the reference; out and lse against fp32, out
    poisoned."""
    from tritonseek.kernels.mla_decode import default_config

    lens = _bench_lens(s_k, s_q, True)
    q, kv, bt, cs = _device_case(device, lens, s_q, h, seed=s_k + h + s_q + whole)
    cfg = default_config(s_q, h, 128, hopper=True)
    md = get_mla_metadata(cs, s_q, h, config=cfg)
    schedule_whole(md, cs, whole, 2)
    rs, rsp = mla_schedule_whole_ref(cs.cpu(), md.num_parts, cfg, whole, 2)
    assert torch.equal(md.sched.cpu(), rs) and torch.equal(md.split.cpu(), rsp)
    out = torch.full((128, s_q, h, 512), float("nan"), dtype=q.dtype, device=device)
    o, lse = mla_decode(q, kv, bt, cs, metadata=md, out=out)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=512)
    assert_matches_ref(o, lse, ro, rlse)
