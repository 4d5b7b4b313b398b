"""Length-aware split-KV schedule (get_mla_metadata SCHED="packed") against its reference, and decode on it.

CPU: the device schedule kernel (interpreter) equals ``mla_schedule_packed_ref`` exactly (integers); the
reference's own properties (every tile of every sequence covered once in order, split counts and slots
consistent, equal lengths with batch ≤ programs → one program per sequence, no program over the cap);
mla_decode on the packed schedule against the fp32 reference (cosine difference ≤ 1e-5, |Δlse| ≤ 1e-3:
test_mla_decode.py's tolerances, justified there). GPU (gpu marker): the schedule at batch 128 and the
Gluon decode at FlashMLA's shapes on it (b128, s_k 4096/8192, fixed and varlen with 0-length rows, NaN
in every unused cache slot).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernels.test_mla_decode import _fixture_ok, assert_matches_ref, make_case, walk_schedule
from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
from tritonseek.kernels.reference.mla import mla_decode_ref, mla_schedule_packed_ref, mla_schedule_ref

BN = 64


def _cfg(num_parts: int, num_sm: int = 8, **kw) -> dict:
    return dict(BLOCK_H=16, BLOCK_N=BN, num_warps=4, num_stages=3, PARTS_PER_SM=num_parts / num_sm, SCHED="packed",
                **kw)


_lens = st.lists(st.one_of(st.integers(0, 6000), st.sampled_from([0, 1, 64, 65, 4096])), min_size=1, max_size=160)
_knobs = dict(seg=st.integers(0, 3), split=st.integers(0, 8), min_piece=st.integers(1, 8),
              min_fit=st.sampled_from([None, 0, 16, 1 << 20]), fill_tol=st.sampled_from([-1, 0, 3, 50]))


@settings(max_examples=60)
@given(lens=_lens, num_parts=st.integers(1, 140), **_knobs)
def test_packed_reference_covers_every_tile_once(lens, num_parts, seg, split, min_piece, min_fit, fill_tol):
    """Every tile of every sequence in exactly one program, sequences' programs consecutive, split[b] =
    (first program, count) with count 0 for an empty sequence, slots p + b unique."""
    min_fit = min_piece if min_fit is None else max(min_fit, min_piece)
    sched, spl = mla_schedule_packed_ref(torch.tensor(lens, dtype=torch.int32), num_parts, BN, seg, split,
                                         min_piece, min_fit, fill_tol)
    assert sched.shape == (num_parts, 4) and spl.shape == (len(lens), 2)
    sched, spl = sched.tolist(), spl.tolist()
    seen, parts_of, _ = walk_schedule(sched, lens, BN)
    for b, n in enumerate(lens):
        assert all(seen.get((b, t)) == 1 for t in range(-(-n // BN)))
        got = parts_of.get(b, [])
        assert spl[b][1] == len(got)
        if got:
            assert got == list(range(spl[b][0], spl[b][0] + len(got)))
    assert sum(seen.values()) == sum(-(-n // BN) for n in lens)
    assert sched[0][:2] == [0, 0]
    for p in range(num_parts - 1):
        assert sched[p][2:] == sched[p + 1][:2] or sched[p + 1][:2] == [len(lens), 0]


@settings(max_examples=30)
@given(batch=st.integers(1, 140), n=st.integers(1, 9000), extra=st.integers(0, 20), seg=st.integers(0, 3),
       split=st.integers(1, 8))
def test_packed_equal_lengths_one_program_per_sequence(batch, n, extra, seg, split):
    """Equal lengths and batch ≤ programs: no sequence is split (no partials, no combine work), one
    sequence per program, the rest of the programs empty (the point of the length-aware schedule), unless
    the spare programs are enough to split every sequence for less than its whole cost."""
    num_parts = batch + extra
    sched, spl = mla_schedule_packed_ref(torch.full((batch,), n, dtype=torch.int32), num_parts, BN, seg, split, 4,
                                         1 << 20)
    nt = -(-n // BN)
    # a cap below nt + seg splits every sequence: total cost ≥ batch·(nt + 2·seg + 2·split) > num_parts·cap
    if batch * (seg + 2 * split) >= extra * (nt + seg):
        assert spl[:, 1].tolist() == [1] * batch
        if nt >= seg + split + 4:  # too long for two to share a program (short ones are packed)
            assert spl[:, 0].tolist() == list(range(batch))


@settings(max_examples=30)
@given(lens=_lens, num_parts=st.integers(1, 140), fill_tol=st.sampled_from([0, 3, 50]))
def test_fill_tol_picks_the_packed_or_the_balanced_schedule(lens, num_parts, fill_tol):
    """FILL_TOL ≥ 0 gives exactly the packed walk's schedule or the balanced one (mla_schedule_ref)."""
    cs = torch.tensor(lens, dtype=torch.int32)
    got = mla_schedule_packed_ref(cs, num_parts, BN, 1, 2, 4, 1 << 20, fill_tol, 5, 1)
    packed = mla_schedule_packed_ref(cs, num_parts, BN, 1, 2, 4, 1 << 20)
    balanced = mla_schedule_ref(cs, num_parts, BN, 5, 1)
    assert any(torch.equal(got[0], w[0]) and torch.equal(got[1], w[1]) for w in (packed, balanced))


def test_fill_tol_on_the_benchmark_batches():
    """b128 on 132 programs: equal lengths stay packed (one sequence per program, nothing split); the
    benchmark's varlen draw N(4096, 2048) gets the balanced schedule (packing it needs a cap ~20% over
    filling's)."""
    eq = mla_schedule_packed_ref(torch.full((128,), 4096, dtype=torch.int32), 132, BN, 1, 2, 4, 1 << 20, 3)
    assert eq[1][:, 1].tolist() == [1] * 128
    var = torch.tensor(_bench_lens(4096, 1, True), dtype=torch.int32)
    got = mla_schedule_packed_ref(var, 132, BN, 1, 2, 4, 1 << 20, 3)
    assert torch.equal(got[0], mla_schedule_ref(var, 132, BN, 5, 1)[0])


@settings(max_examples=40)
@given(lens=_lens, num_parts=st.integers(1, 140), seg=st.integers(0, 3), split=st.integers(0, 8),
       min_piece=st.integers(1, 8))
def test_packed_programs_within_the_largest_cap(lens, num_parts, seg, split, min_piece):
    """With MIN_FIT above every length the largest candidate cap (≥ lb + max tiles + seg) always fits
    the batch into the programs, so no program's cost (tiles + seg per piece + split per piece of a
    split sequence) exceeds it: nothing overflows into the last program."""
    sched, spl = mla_schedule_packed_ref(torch.tensor(lens, dtype=torch.int32), num_parts, BN, seg, split,
                                         min_piece, 1 << 20)
    _, parts_of, work = walk_schedule(sched.tolist(), lens, BN)
    nt = [-(-n // BN) for n in lens]
    lb = max(-(-sum(t + seg for t in nt if t) // num_parts), seg + split + min_piece, 1)
    largest = lb + 63 * max(1, -(-(max(nt) + seg) // 63))
    cost = list(work)
    for ps in parts_of.values():
        for p in ps:
            cost[p] += seg + (split if len(ps) > 1 else 0)
    assert max(cost) <= largest


@settings(_fixture_ok, max_examples=8)
@given(lens=st.lists(st.one_of(st.integers(0, 3000), st.sampled_from([0, 1, 64, 65])), min_size=1, max_size=150),
       num_parts=st.integers(1, 40), **_knobs)
def test_packed_kernel_equals_reference(device, lens, num_parts, seg, split, min_piece, min_fit, fill_tol):
    """The device schedule kernel gives the reference's integers exactly (batches over 128: two chunks)."""
    min_fit = min_piece if min_fit is None else max(min_fit, min_piece)
    cs = torch.tensor(lens, dtype=torch.int32, device=device)
    md = get_mla_metadata(cs, 1, 16, num_sm=8, config=_cfg(num_parts, SEG_COST=seg, SPLIT_COST=split,
                                                          MIN_PIECE=min_piece, MIN_FIT=min_fit, FILL_TOL=fill_tol))
    assert md.num_parts == num_parts
    rs, rsp = mla_schedule_packed_ref(cs.cpu(), num_parts, BN, seg, split, min_piece, min_fit, fill_tol)
    assert torch.equal(md.sched.cpu(), rs)
    assert torch.equal(md.split.cpu(), rsp)


def test_packed_kernel_real_sizes(device):
    """Real sizes through the interpreter (and on the GPU with the gpu device): batch 128 on the H200's 132
    programs with the benchmark's lengths (0- and 1-length rows in varlen; FILL_TOL 3, the default: s_k 4096
    fixed stays packed, varlen takes the balanced fallback; s_k 8192 varlen packed with FILL_TOL off), and lengths
    near 2³¹ (int32 tile counts, walk quotients ≥ 2²¹): the kernel gives the reference's integers."""
    cases = [(_bench_lens(4096, 1, False), 132, 3), (_bench_lens(4096, 1, True), 132, 3),
             (_bench_lens(8192, 1, True), 132, -1), ([2**31 - 1, 0, 5, 70000, 2**31 - 64], 3, -1),
             ([2**31 - 1, 2**30], 1, 3), ([2**31 - 1] * 4, 6, -1)]
    for lens, parts, fill_tol in cases:
        cs = torch.tensor(lens, dtype=torch.int32, device=device)
        md = get_mla_metadata(cs, 1, 16, num_sm=132, config=_cfg(parts, 132, FILL_TOL=fill_tol))
        rs, rsp = mla_schedule_packed_ref(cs.cpu(), parts, BN, 1, 2, 4, 1 << 20, fill_tol)
        assert torch.equal(md.sched.cpu(), rs) and torch.equal(md.split.cpu(), rsp), (len(lens), parts)


def test_packed_bad_knobs_raise():
    cs = torch.tensor([5, 70], dtype=torch.int32)
    with pytest.raises(ValueError, match="MIN_PIECE"):
        get_mla_metadata(cs, 1, 16, config=_cfg(4, MIN_PIECE=0))
    with pytest.raises(ValueError, match="MIN_FIT"):
        get_mla_metadata(cs, 1, 16, config=_cfg(4, MIN_PIECE=4, MIN_FIT=2))


@settings(_fixture_ok, max_examples=6)
@given(lens=st.lists(st.one_of(st.integers(0, 300), st.sampled_from([0, 1, 16, 17])), min_size=1, max_size=6),
       num_parts=st.integers(1, 6), seqlen_q=st.sampled_from([1, 2]), num_heads=st.sampled_from([1, 3, 16]),
       min_fit=st.sampled_from([1, 1 << 20]), seed=st.integers(0, 2**16))
def test_decode_on_packed_schedule_matches_reference(device, lens, num_parts, seqlen_q, num_heads, min_fit, seed):
    """mla_decode (tl kernel, interpreter) on the packed schedule: whole and split sequences, empty ones
    (out 0, lse −inf), NaN in every unused cache slot and a NaN-poisoned out buffer."""
    gen = torch.Generator().manual_seed(seed)
    page = 16
    q, kv, bt, cs = make_case(device, len(lens), seqlen_q, num_heads, 80, 64, page, lens, gen)
    cfg = dict(BLOCK_H=16, BLOCK_N=16, num_warps=4, num_stages=2, PARTS_PER_SM=num_parts / 8, SCHED="packed",
               MIN_PIECE=1, MIN_FIT=min_fit)
    md = get_mla_metadata(cs, seqlen_q, num_heads, num_sm=8, config=cfg)
    out = torch.full((len(lens), seqlen_q, num_heads, 64), float("nan"), dtype=q.dtype, device=device)
    o, lse = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md, out=out)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=64)
    assert_matches_ref(o, lse, ro, rlse)


# ----------------------------------------------------------------------------- H200 (gpu marker)

def _bench_lens(s_k: int, s_q: int, varlen: bool, batch: int = 128) -> list[int]:
    """benchmarks/bench_mla.py's lengths (N(s_k, s_k/2) clamped ≥ s_q when varlen), plus 0-length rows."""
    if not varlen:
        return [s_k] * batch
    g = torch.Generator().manual_seed(s_k * 10 + s_q)
    lens = [max(int(v), s_q) for v in torch.normal(float(s_k), s_k / 2, (batch,), generator=g).tolist()]
    lens[3] = lens[77] = 0
    lens[5] = 1
    return lens


def _device_case(device, lens, s_q, h, page=64, seed=0):
    """make_case built on the device (batch 128 × 8k keys is slow on the host): NaN in every unused slot."""
    g = torch.Generator(device=device).manual_seed(seed)
    batch, max_blocks = len(lens), max(1, -(-max(lens) // page)) + 1
    num_blocks = batch * max_blocks + 5
    kv = torch.randn(num_blocks, page, 1, 576, device=device, dtype=torch.bfloat16, generator=g)
    bt = torch.randperm(num_blocks, device=device, generator=g)[: batch * max_blocks].view(batch, max_blocks).int()
    cs = torch.tensor(lens, dtype=torch.int32, device=device)
    pos = torch.arange(max_blocks * page, device=device)
    rows = (bt[:, pos // page].long() * page + pos % page)[pos[None, :] < cs[:, None].long()]
    used = torch.zeros(num_blocks * page, dtype=torch.bool, device=device)
    used[rows] = True
    kv.view(-1, 576)[~used] = float("nan")
    q = torch.randn(batch, s_q, h, 576, device=device, dtype=torch.bfloat16, generator=g)
    return q, kv, bt, cs


@pytest.mark.gpu
@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("s_k", [4096, 8192])
def test_packed_schedule_kernel_real_sizes_gpu(device, s_k, varlen):
    """Batch 128 on the H200's own program count: the device kernel gives the reference's schedule."""
    from tritonseek.kernels.mla_decode import default_config

    cs = torch.tensor(_bench_lens(s_k, 1, varlen), dtype=torch.int32, device=device)
    for h, s_q in ((16, 1), (32, 1), (64, 1), (128, 2)):
        cfg = dict(default_config(s_q, h, 128, hopper=True), SCHED="packed")
        md = get_mla_metadata(cs, s_q, h, config=cfg)
        rs, rsp = mla_schedule_packed_ref(cs.cpu(), md.num_parts, BN, *[cfg.get(k, v) for k, v in
                                                                       _packed_defaults().items()],
                                          cfg.get("OVERHEAD", 5), cfg.get("MIN_SPAN", 1))
        assert torch.equal(md.sched.cpu(), rs) and torch.equal(md.split.cpu(), rsp)


def _packed_defaults():
    from tritonseek.kernels.mla_decode import _PACKED_DEFAULT

    return _PACKED_DEFAULT


_REAL = [(4096, v, h, s_q) for v in (False, True) for h, s_q in ((16, 1), (16, 2), (32, 1), (64, 1))] + [
    (8192, v, h, 1) for v in (False, True) for h in (16, 32)]


@pytest.mark.gpu
@pytest.mark.parametrize("s_k,varlen,h,s_q", _REAL)
def test_decode_packed_real_shapes_gpu(device, s_k, varlen, h, s_q):
    """FlashMLA's b128 cases (varlen with 0- and 1-length rows) through mla_decode's default Hopper config
    on the packed schedule (Gluon split kernel): out and lse against the fp32 reference, out poisoned."""
    from tritonseek.kernels.mla_decode import default_config

    lens = _bench_lens(s_k, s_q, varlen)
    q, kv, bt, cs = _device_case(device, lens, s_q, h, seed=s_k + h + s_q + varlen)
    md = get_mla_metadata(cs, s_q, h, config=dict(default_config(s_q, h, 128, hopper=True), SCHED="packed"))
    out = torch.full((128, s_q, h, 512), float("nan"), dtype=q.dtype, device=device)
    o, lse = mla_decode(q, kv, bt, cs, metadata=md, out=out)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=512)
    assert_matches_ref(o, lse, ro, rlse)


def test_big_batch_default_on_hopper_only():
    """The Hopper default for ≤ 32 rows at batch ≥ 64 is the packed schedule with the balanced fallback and the
    query prefetch (64 rows: the schedule only); smaller batches, more rows and non-Hopper devices keep their
    tables."""
    from tritonseek.kernels.mla_decode import default_config

    for h, s_q in ((16, 1), (16, 2), (32, 1)):
        cfg = default_config(s_q, h, 128, hopper=True)
        assert (cfg.get("SCHED"), cfg.get("FILL_TOL"), cfg.get("QTMA")) == ("packed", 3, True)
        for other in (default_config(s_q, h, 8, hopper=True), default_config(s_q, h, 128), default_config(s_q, h)):
            assert "SCHED" not in other and "QTMA" not in other
    cfg = default_config(1, 64, 128, hopper=True)  # 64 rows: mla_decode_wsm (its own QTMA since s19), packed
    assert (cfg.get("SCHED"), cfg.get("FILL_TOL"), cfg.get("QTMA"), cfg.get("WSM")) == ("packed", 3, True, True)
    # more than 64 rows: two head tiles (65-128 rows) packed too (session 20), more head tiles the balanced cut
    assert default_config(1, 128, 128, hopper=True).get("SCHED") == "packed"
    assert "SCHED" not in default_config(2, 128, 128, hopper=True)


def compile_schedule_sm90(packed: bool):
    """The schedule kernel get_mla_metadata launches (packed: the length-aware one with its balanced fallback;
    else the balanced one) at batch 128 and 132 programs, compiled for sm_90a."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tritonseek.kernels.mla_decode_tiles as T

    i = "i32"
    sig = dict(lens_ptr="*i32", sched_ptr="*i32", split_ptr="*i32")
    consts = dict(BLOCK_N=64, BLOCK_B=128, BLOCK_P=256)
    if packed:
        sig.update(ws_ptr="*i32", end_ptr="*i64", batch=i, num_parts=i, seg_cost=i, split_cost=i, min_piece=i,
                   min_fit=i, fill_tol=i, overhead=i, min_span=i, log_batch=i, n_spans=i, tail_pct=i)
        consts.update(BLOCK_C=64, UNROLL=16)
        fn = T._mla_schedule_packed_kernel
    else:
        sig.update(end_ptr="*i64", batch=i, num_parts=i, overhead=i, min_span=i, log_batch=i, num_progs=i, tail_pct=i)
        fn = T._mla_schedule_kernel
    sig.update({k: "constexpr" for k in consts})
    return triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))


@pytest.mark.parametrize("packed", [True, False])
def test_schedule_kernels_compile_for_sm90(packed):
    """The GPU compiler takes both schedule kernels (the interpreter accepts more): no spills (ptxas sm_90a)."""
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

    ptx = ptx_in_fresh_process(__name__, "compile_schedule_sm90", packed)
    assert spill_store_bytes(ptxas_report(ptx)) == [0]
