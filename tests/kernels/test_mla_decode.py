"""Paged MLA decode (Triton) against tritonseek.kernels.reference.mla.mla_decode_ref.

CPU runs go through the Triton interpreter with small latent dims (d_qk 80 = 64 latent ‖ 16 rope,
and 64 = 48 ‖ 16 to exercise a non-power-of-two head_dim_v); the ``gpu`` tests use DeepSeek's
576/512 at FlashMLA's shapes.

Tolerances: the reference runs in fp32 on the fp32-upcast inputs. The kernel rounds p to bf16
before the p·V dot (as FlashMLA does) and rounds out to bf16, each ≈ 2^-9 relative, so we use
FlashMLA's own check, cosine difference 1 − 2Σxy/Σ(x²+y²) ≤ 1e-5 (bf16 rounding alone gives
≈ 1e-6), plus |lse − lse_ref| ≤ 1e-3 (lse is an fp32 log-sum-exp of fp32-accumulated scores;
only the summation order differs, 1e-3 leaves room for the long GPU rows). Rows that see no key
must be exactly out = 0, lse = −inf.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels.mla_decode import default_config, get_mla_metadata, mla_decode
from tritonseek.kernels.reference.mla import mla_decode_ref


def cos_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    denom = (x * x + y * y).sum()
    if denom == 0:
        return 0.0
    return float(1 - 2 * (x * y).sum() / denom)


def make_case(device, batch, seqlen_q, num_heads, d_qk, dv, page, lens, gen, extra_blocks=3):
    """Random q / cache with a permuted block table; every slot no sequence owns is NaN."""
    max_blocks = max(1, -(-max(lens) // page)) + 1  # one spare column beyond the need
    num_blocks = batch * max_blocks + extra_blocks
    kv = torch.randn(num_blocks, page, 1, d_qk, generator=gen).to(torch.bfloat16)
    block_table = torch.randperm(num_blocks, generator=gen)[: batch * max_blocks].view(batch, max_blocks).int()
    used = torch.zeros(num_blocks * page, dtype=torch.bool)
    for i, n in enumerate(lens):
        pos = torch.arange(n)
        used[block_table[i, pos // page].long() * page + pos % page] = True
    kv.view(-1, d_qk)[~used] = float("nan")
    q = torch.randn(batch, seqlen_q, num_heads, d_qk, generator=gen).to(torch.bfloat16)
    cache_seqlens = torch.tensor(lens, dtype=torch.int32)
    return q.to(device), kv.to(device), block_table.to(device), cache_seqlens.to(device)


def check_against_ref(q, kv, block_table, cache_seqlens, dv, causal, num_sm=None, scale=None):
    batch, seqlen_q, num_heads, _ = q.shape
    md = get_mla_metadata(cache_seqlens, seqlen_q, num_heads, num_sm=num_sm)
    out = torch.full((batch, seqlen_q, num_heads, dv), float("nan"), dtype=q.dtype, device=q.device)
    o, lse = mla_decode(q, kv, block_table, cache_seqlens, softmax_scale=scale, causal=causal, head_dim_v=dv,
                        metadata=md, out=out)
    assert o.data_ptr() == out.data_ptr()
    ro, rlse = mla_decode_ref(q.float(), kv, block_table, cache_seqlens, softmax_scale=scale,
                              causal=causal, head_dim_v=dv)
    o, lse = assert_matches_ref(o, lse, ro, rlse)
    return o, lse, md


def assert_matches_ref(o, lse, ro, rlse):
    """The module's tolerances (cosine difference ≤ 1e-5, |Δlse| ≤ 1e-3), no NaN anywhere, and rows that see
    no key exactly out 0 / lse −inf. Returns out (fp32) and lse on the CPU."""
    o, lse, ro, rlse = o.float().cpu(), lse.cpu(), ro.cpu(), rlse.cpu()
    assert not torch.isnan(o).any(), "NaN reached out (poisoned buffer not fully written or cache NaN leaked)"
    assert not torch.isnan(lse).any()
    empty = torch.isinf(rlse)  # [b, h, s_q]: queries that see no key
    assert torch.equal(torch.isinf(lse) & (lse < 0), empty)
    assert torch.all(o.permute(0, 2, 1, 3)[empty] == 0)
    assert (lse[~empty] - rlse[~empty]).abs().max().item() <= 1e-3 if (~empty).any() else True
    assert cos_diff(o, ro) <= 1e-5
    return o, lse


# The device fixture only names cpu/cuda; it holds no state across examples.
_fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)


@_fixture_ok
@given(
    batch=st.integers(1, 4),
    seqlen_q=st.sampled_from([1, 2, 4]),
    num_heads=st.sampled_from([1, 3, 16]),
    page=st.sampled_from([1, 16, 64]),
    dims=st.sampled_from([(80, 64), (64, 48)]),
    causal=st.booleans(),
    num_sm=st.integers(1, 8),
    data=st.data(),
)
def test_decode_matches_reference(device, batch, seqlen_q, num_heads, page, dims, causal, num_sm, data):
    d_qk, dv = dims
    special = [0, 1, page, page + 1, 63, 64, 65]
    lens = data.draw(st.lists(st.one_of(st.sampled_from(special), st.integers(0, 150)), min_size=batch,
                              max_size=batch))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    case = make_case(device, batch, seqlen_q, num_heads, d_qk, dv, page, lens, gen)
    check_against_ref(*case, dv, causal, num_sm=num_sm)


@pytest.mark.parametrize("num_sm", [1, 8])
def test_decode_non_default_softmax_scale(device, num_sm):
    """softmax_scale reaches the split kernel (tester22 mutation #22: a launch that used the default d_qk^-0.5
    passed every CPU test, which all left softmax_scale None; the model passes qk_head_dim^-0.5·mscale², not the
    absorbed d_qk's). Lengths that split (num_sm 1: whole rows; 8: the 150-key row in pieces + combine)."""
    gen = torch.Generator().manual_seed(0)
    case = make_case(device, 4, 2, 3, 80, 64, 16, [150, 65, 1, 64], gen)
    check_against_ref(*case, 64, True, num_sm=num_sm, scale=0.37)


def test_one_long_row_many_short_balances_and_matches(device):
    """A long row is spread over many programs (several splits → combine); short rows stay whole."""
    gen = torch.Generator().manual_seed(1)
    lens = [1000, 1, 0, 5, 2]
    case = make_case(device, 5, 2, 3, 80, 64, 16, lens, gen)
    _, _, md = check_against_ref(*case, 64, True, num_sm=6)
    split = md.split.cpu()
    assert split[0, 1] > 1 and split[2, 1] == 0
    assert all(split[i, 1] == 1 for i in (1, 3, 4))


def test_steal_tail_spans_match_reference(device):
    """STEAL: the programs' spans + 5 tail spans (40 % of the work); off Hopper every span runs as its own program of
    the tl kernel, partial slots span + b, the combine over each sequence's spans: same results as the reference."""
    gen = torch.Generator().manual_seed(4)
    lens = [1000, 1, 0, 5, 2, 300]
    q, kv, bt, cs = make_case(device, 6, 2, 3, 80, 64, 16, lens, gen)
    cfg = dict(default_config(2, 3), STEAL=5, STEAL_PCT=40)
    md = get_mla_metadata(cs, 2, 3, num_sm=3, config=cfg)
    assert md.num_parts == md.num_programs + 5
    assert int((md.split[:, 0] + md.split[:, 1]).max()) > md.num_programs + 1  # pieces in at least two tail spans
    out = torch.full((6, 2, 3, 64), float("nan"), dtype=q.dtype, device=device)
    o, lse = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md, out=out)
    assert_matches_ref(o, lse, *mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=64))


def check_nan_query_rows(q, kv, bt, cs, dv, causal, nan_at, num_sm=None, config=None):
    """q with NaN at each (b, s, h, d) of nan_at: those query rows give out NaN and lse NaN in both the kernel and
    mla_decode_ref, unless the row sees no key (out 0, lse −inf kept); every other row as assert_matches_ref."""
    q = q.clone()
    for b, s_, h, d in nan_at:
        q[b, s_, h, d] = float("nan")
    batch, seqlen_q, num_heads, _ = q.shape
    md = get_mla_metadata(cs, seqlen_q, num_heads, num_sm=num_sm, config=config)
    out = torch.full((batch, seqlen_q, num_heads, dv), 7.0, dtype=q.dtype, device=q.device)  # neither NaN nor 0
    o, lse = mla_decode(q, kv, bt, cs, causal=causal, head_dim_v=dv, metadata=md, out=out)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, causal=causal, head_dim_v=dv)
    o, lse, ro, rlse = o.float().cpu(), lse.cpu(), ro.float().cpu(), rlse.cpu()
    nan_ref = torch.isnan(rlse)  # [b, h, s_q]
    assert nan_ref.any(), "no planted NaN reached a row that sees keys"
    for b, s_, h, _ in nan_at:
        assert nan_ref[b, h, s_] or rlse[b, h, s_] == float("-inf")
    assert torch.equal(torch.isnan(lse), nan_ref), "lse NaN rows differ from the reference"
    assert torch.isnan(o.permute(0, 2, 1, 3)[nan_ref]).all() and torch.isnan(ro.permute(0, 2, 1, 3)[nan_ref]).all()
    keep = ~nan_ref.permute(0, 2, 1)[..., None]  # the other rows: zeroed NaN rows in both, then the usual check
    assert_matches_ref(torch.where(keep, o, 0.0), lse.nan_to_num(0.0), torch.where(keep, ro, 0.0), rlse.nan_to_num(0.0))


# A NaN in a query row (tester, 1ee7e10): the kernel gave out NaN with lse −inf and the reference out 0 / lse
# −inf; both now give NaN / NaN. Row 1 of each case sees no key (seqlen 0): out 0, lse −inf stay.
_SMALL_CFG = dict(SMALL=True, BLOCK_H=16, BLOCK_N=16, NUM_SPLITS=4, MIN_TILES=1, num_warps=4, num_stages=2, USE_TMA=True)


# num_sm 2: the 200-key row is cut into pieces merged by the combine; _SMALL_CFG: the small-batch path
@pytest.mark.parametrize("num_sm,config", [(8, None), (2, None), (None, _SMALL_CFG)])
def test_nan_query_rows_give_nan_out_and_lse(device, num_sm, config):
    gen = torch.Generator().manual_seed(5)
    q, kv, bt, cs = make_case(device, 3, 2, 3, 80, 64, 16, [40, 0, 200], gen)
    check_nan_query_rows(q, kv, bt, cs, 64, True, [(0, 1, 2, 5), (1, 0, 0, 0), (2, 0, 1, 70)], num_sm=num_sm,
                         config=config)


def test_metadata_reused_across_calls_gives_same_result(device):
    gen = torch.Generator().manual_seed(2)
    q, kv, bt, cs = make_case(device, 3, 1, 4, 80, 64, 16, [40, 17, 90], gen)
    md = get_mla_metadata(cs, 1, 4, num_sm=4)
    o1, l1 = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md)
    o2, l2 = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md)
    assert torch.equal(o1, o2) and torch.equal(l1, l2)


def walk_schedule(sched, lens, bn):
    """Walk sched [[batch_begin, tile_begin, batch_end, tile_end], ...] as the split kernels do: {(b, tile):
    times covered}, {b: programs holding a piece of it}, tiles per program; asserts slots p + b are unique."""
    seen: dict[tuple[int, int], int] = {}
    parts_of: dict[int, list[int]] = {}
    work, slots = [], set()
    for p, (b0, t0, b1, t1) in enumerate(sched):
        w = 0
        for b in range(b0, min(b1, len(lens) - 1) + 1):
            nt = -(-lens[b] // bn)
            lo = t0 if b == b0 else 0
            hi = min(t1 if b == b1 else nt, nt)
            if lo < hi:
                parts_of.setdefault(b, []).append(p)
                assert p + b not in slots
                slots.add(p + b)
                w += hi - lo
            for t in range(lo, hi):
                seen[(b, t)] = seen.get((b, t), 0) + 1
        work.append(w)
    return seen, parts_of, work


@given(lens=st.lists(st.integers(0, 3000), min_size=1, max_size=40), num_sm=st.integers(1, 140),
       heads=st.sampled_from([1, 16, 64, 128]), seqlen_q=st.sampled_from([1, 2, 4]),
       min_span=st.sampled_from([None, 7, 10]), overhead=st.sampled_from([None, 0, 1]),
       steal=st.sampled_from([None, (3, 10), (40, 30)]))
def test_schedule_covers_every_tile_once(lens, num_sm, heads, seqlen_q, min_span, overhead, steal):
    """Pure schedule property: programs' spans tile every sequence exactly once; slots p + b are unique
    (also with a per-sequence overhead of 0 or 1 tile instead of the default 5, and with STEAL tail spans after
    the programs' spans: p then counts spans)."""
    from tritonseek.kernels.mla_decode import default_config

    cs = torch.tensor(lens, dtype=torch.int32)
    extra = {k: v for k, v in (("MIN_SPAN", min_span), ("OVERHEAD", overhead)) if v is not None}
    if steal:
        extra.update(STEAL=steal[0], STEAL_PCT=steal[1])
    # the scheduled kernels' config (batch·rows ≤ 1024 at > 64 rows defaults to the SMALL path: no schedule)
    cfg = dict(default_config(seqlen_q, heads), **extra)
    md = get_mla_metadata(cs, seqlen_q, heads, num_sm=num_sm, config=cfg)
    if steal:
        assert md.num_parts == md.num_programs + steal[0] and md.work_counter.abs().sum() == 0
    bn = md.config["BLOCK_N"]
    sched, split = md.sched.tolist(), md.split.tolist()
    seen, parts_of, _ = walk_schedule(sched, lens, bn)
    for b, n in enumerate(lens):
        nt = -(-n // bn)
        assert all(seen.get((b, t)) == 1 for t in range(nt))
        got = parts_of.get(b, [])
        assert split[b][1] == len(got)
        if got:
            assert got == list(range(split[b][0], split[b][0] + len(got)))
    assert sum(seen.values()) == sum(-(-n // bn) for n in lens)


def test_bad_inputs_raise(device):
    gen = torch.Generator().manual_seed(3)
    q, kv, bt, cs = make_case(device, 2, 1, 2, 80, 64, 16, [20, 30], gen)
    with pytest.raises(TypeError, match="q"):
        mla_decode(q.float(), kv, bt, cs, head_dim_v=64)
    with pytest.raises(TypeError, match="kv_cache"):
        mla_decode(q, kv.half(), bt, cs, head_dim_v=64)
    with pytest.raises(ValueError, match="kv_cache"):
        mla_decode(q, kv[..., :72].contiguous(), bt, cs, head_dim_v=64)
    with pytest.raises(TypeError, match="block_table"):
        mla_decode(q, kv, bt.long(), cs, head_dim_v=64)
    with pytest.raises(TypeError, match="cache_seqlens"):
        mla_decode(q, kv, bt, cs.long(), head_dim_v=64)
    with pytest.raises(ValueError, match="contiguous last dim"):
        mla_decode(q.transpose(-1, -2).contiguous().transpose(-1, -2), kv, bt, cs, head_dim_v=64)
    with pytest.raises(ValueError, match="holds only"):
        mla_decode(q, kv, bt[:, :1], cs, head_dim_v=64)  # 1 block × 16 < 30 keys
    with pytest.raises(ValueError, match="holds only"):  # the caller's host bound (the CUDA path)
        mla_decode(q, kv, bt[:, :1], cs, head_dim_v=64, metadata=get_mla_metadata(cs, 1, 2, max_seqlen_k=30))
    with pytest.raises(ValueError, match="power of two"):
        mla_decode(q, kv[:, :12].contiguous(), bt, cs, head_dim_v=64)
    with pytest.raises(ValueError, match="head_dim_v"):
        mla_decode(q, kv, bt, cs, head_dim_v=96)
    with pytest.raises(ValueError, match="metadata"):
        mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=get_mla_metadata(cs, 2, 2))
    with pytest.raises(ValueError, match="out"):
        mla_decode(q, kv, bt, cs, head_dim_v=64, out=torch.empty(2, 1, 2, 32, dtype=q.dtype, device=device))
    with pytest.raises(ValueError, match="batch"):
        mla_decode(q, kv, bt, cs[:1], head_dim_v=64)
    with pytest.raises(ValueError, match="cache_seqlens must be contiguous"):  # read at unit stride
        mla_decode(q, kv, bt, torch.stack([cs, cs], 1)[:, 0], head_dim_v=64)
    with pytest.raises(ValueError, match="cache_seqlens must be contiguous"):
        get_mla_metadata(torch.stack([cs, cs], 1)[:, 1], 1, 2)
    with pytest.raises(TypeError, match="check_ids"):
        mla_decode(q, kv, bt, cs, head_dim_v=64, check_ids=1)
    # × page 16 = 2^31 keys (int32 key positions); empty + expand: nothing is touched before the width check
    wide = torch.empty(1, 2**31 // 16, dtype=torch.int32, device=device).expand(2, -1)
    with pytest.raises(ValueError, match="2\\^31 keys"):
        mla_decode(q, kv, wide, cs, head_dim_v=64)


def test_out_of_range_ids_raise(device):
    """check_ids (default): a block id a sequence reads outside [0, num_blocks), or a negative length, raises
    naming the tensor, entry and value; ids in columns a sequence never reads are not checked (as the kernel)."""
    gen = torch.Generator().manual_seed(5)
    q, kv, bt, cs = make_case(device, 2, 1, 2, 80, 64, 16, [20, 30], gen)  # 2 pages each, 3 columns
    num_blocks = kv.shape[0]
    bad = bt.clone()
    bad[1, 1] = num_blocks
    with pytest.raises(ValueError, match=rf"block_table\[1, 1\] = {num_blocks} is out of range"):
        mla_decode(q, kv, bad, cs, head_dim_v=64)
    bad = bt.clone()
    bad[0, 0] = -1
    with pytest.raises(ValueError, match=r"block_table\[0, 0\] = -1 is out of range"):
        mla_decode(q, kv, bad, cs, head_dim_v=64)
    neg = cs.clone()
    neg[0] = -4
    with pytest.raises(ValueError, match=r"cache_seqlens\[0\] = -4 is out of range"):
        mla_decode(q, kv, bt, neg, head_dim_v=64, metadata=get_mla_metadata(cs, 1, 2))
    unread = bt.clone()
    unread[:, 2] = 10**6  # third column: past both sequences' pages, never read
    o, _ = mla_decode(q, kv, unread, cs, head_dim_v=64)
    assert torch.equal(o, mla_decode(q, kv, bt, cs, head_dim_v=64)[0])


@pytest.mark.gpu
def test_out_of_range_ids_raise_gpu(device):
    """The same on CUDA, where the check is the one device→host read check_ids costs."""
    test_out_of_range_ids_raise(device)



def test_metadata_config_validation():
    """get_mla_metadata(config=...): every key checked (ValueError naming it), unknown keys rejected."""
    from tritonseek.kernels.mla_decode import default_config

    cs = torch.tensor([20, 30], dtype=torch.int32)
    base = default_config(1, 2)
    bad = [("OVERHEAD", -9), ("BLOCK_H", 0), ("BLOCK_N", 48), ("SCHED", "pakced"), ("USE_TMA", 1),
           ("PARTS_PER_SM", 0), ("PARTS_PER_SM", True), ("num_warps", 3), ("num_stages", 2.0), ("MIN_SPAN", 0),
           ("GLUON", 1), ("WS_WGS", 3), ("CONSUMER_REGS", 233), ("COMBINE_ROWS", 3), ("FILL_TOL", "3")]
    for key, v in bad:
        with pytest.raises(ValueError, match=f"config key {key}="):
            get_mla_metadata(cs, 1, 2, config=dict(base, **{key: v}))
    with pytest.raises(ValueError, match="unknown key 'FOO'"):
        get_mla_metadata(cs, 1, 2, config=dict(base, FOO=1))
    for key in ("BLOCK_H", "BLOCK_N", "num_warps", "num_stages"):
        with pytest.raises(ValueError, match=f"missing the required key '{key}'"):
            get_mla_metadata(cs, 1, 2, config={k: v for k, v in base.items() if k != key})
    with pytest.raises(TypeError, match="config must be a dict"):
        get_mla_metadata(cs, 1, 2, config=[("BLOCK_H", 16)])
    with pytest.raises(ValueError, match="MIN_FIT"):
        get_mla_metadata(cs, 1, 2, config=dict(base, SCHED="packed", MIN_PIECE=8, MIN_FIT=4))


def test_default_configs_pass_the_config_check():
    from tritonseek.kernels.mla_decode import _TUNED, _TUNED_WS, default_config
    from tritonseek.kernels.mla_decode_small import check_mla_config
    from tritonseek.kernels.mla_decode_ws import ws_config

    cfgs = [default_config(s_q, h, b, hopper=hop) for s_q in (1, 2, 4) for h in (1, 16, 64, 128)
            for b in (None, 1, 8, 128) for hop in (False, True)] + list(_TUNED.values()) + list(_TUNED_WS.values())
    cfgs += [ws_config(s_q, h) for s_q in (1, 2) for h in (8, 16, 32, 64)]
    for cfg in cfgs:
        assert check_mla_config(cfg) == cfg


def test_scalar_args_validation():
    """Python scalars: type (bools are not ints) and range, TypeError/ValueError naming the argument."""
    cs = torch.tensor([20, 30], dtype=torch.int32)
    for kw, exc, name in [(dict(seqlen_q=1.5), TypeError, "seqlen_q"), (dict(seqlen_q=True), TypeError, "seqlen_q"),
                          (dict(seqlen_q=0), ValueError, "seqlen_q"), (dict(num_heads="2"), TypeError, "num_heads"),
                          (dict(num_sm=0), ValueError, "num_sm"), (dict(num_sm=-4), ValueError, "num_sm"),
                          (dict(num_sm=8.0), TypeError, "num_sm"), (dict(max_seqlen_k=30.5), TypeError, "max_seqlen_k"),
                          (dict(max_seqlen_k=-1), ValueError, "max_seqlen_k")]:
        args = dict(dict(seqlen_q=1, num_heads=2), **kw)
        with pytest.raises(exc, match=name):
            get_mla_metadata(cs, **args)
    q, kv, bt, cs = make_case("cpu", 2, 1, 2, 80, 64, 16, [20, 30], torch.Generator().manual_seed(3))
    for kw, exc, name in [(dict(head_dim_v=True), TypeError, "head_dim_v"),
                          (dict(head_dim_v=64.0), TypeError, "head_dim_v"),
                          (dict(head_dim_v=0), ValueError, "head_dim_v"),
                          (dict(softmax_scale="0.1"), TypeError, "softmax_scale"),
                          (dict(softmax_scale=float("nan")), ValueError, "softmax_scale"),
                          (dict(causal="no"), TypeError, "causal"), (dict(causal=1), TypeError, "causal")]:
        with pytest.raises(exc, match=name):
            mla_decode(q, kv, bt, cs, **dict(dict(head_dim_v=64), **kw))


# ----------------------------------------------------------------------------- real shapes (H200)
_REAL_HEADS, _REAL_SQ, _REAL_PAGES = [1, 3, 16, 64, 128], [1, 2, 4], [1, 16, 64, 256]

# Compiles one kernel config (TMA or pointer path) for the real-shape tests in a separate process,
# filling Triton's on-disk cache; the kernel specializes only on 16-divisibility of the strides, which
# every real-shape call shares.
_COMPILE_ONE = """
import json, sys, torch
from tritonseek.kernels.mla_decode import default_config, get_mla_metadata, mla_decode
h, s_q, page = map(int, sys.argv[1:4])
cfg = json.loads(sys.argv[4])
lens = torch.tensor([page + 1, 3 * page + 5], device="cuda", dtype=torch.int32)
nb = 8
kv = torch.randn(2 * nb, page, 1, 576, device="cuda", dtype=torch.bfloat16)
bt = torch.arange(2 * nb, device="cuda", dtype=torch.int32).view(2, nb)
q = torch.randn(2, s_q, h, 576, device="cuda", dtype=torch.bfloat16)
mla_decode(q, kv, bt, lens, metadata=get_mla_metadata(lens, s_q, h, config=cfg))
torch.cuda.synchronize()
"""
def _real_lens(page: int, batch: int) -> list[int]:
    """8 sequences (0, 1, page, page + 1, long ones); 2 = two of them; 12 = four more."""
    lens = [0, 1, page, page + 1, 4096, 777, 2049, 64 * 33 + 5]
    return {2: [4096, page + 1], 8: lens, 12: lens + [3000, 64, 4095, 129]}[batch]


def _real_batches(num_heads: int, page: int) -> tuple[int, ...]:
    # 128 heads at page 64: each table of default_config (16-row and 32-row small-batch tiles, big
    # batch) across s_q 1/2/4; else 8 sequences
    return (2, 8, 12) if (num_heads == 128 and page == 64) else (8,)


@pytest.fixture(scope="module")
def real_shape_kernels():
    """Compile the distinct kernels of test_decode_real_shapes in parallel processes (serially
    they take most of the file's GPU time); failures are left to the tests themselves to report."""
    import json
    import os
    import subprocess
    import sys

    if os.environ.get("TRITONSEEK_TEST_DEVICE", "") != "cuda":
        return

    from tritonseek.kernels.mla_decode import default_config

    reps = {}
    for h in _REAL_HEADS:
        for s_q in _REAL_SQ:
            for page in _REAL_PAGES:
                for batch in _real_batches(h, page):
                    cfg = default_config(s_q, h, batch, hopper=True)  # the H200 runs these (Gluon classes)
                    key = (tuple(sorted(cfg.items())), page >= cfg["BLOCK_N"])
                    reps.setdefault(key, (h, s_q, page, json.dumps(cfg)))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRITON_INTERPRET", None)
    procs = [subprocess.Popen([sys.executable, "-c", _COMPILE_ONE, *map(str, r)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for r in reps.values()]
    for p in procs:
        p.wait(timeout=300)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads", _REAL_HEADS)
@pytest.mark.parametrize("seqlen_q", _REAL_SQ)
@pytest.mark.parametrize("page", _REAL_PAGES)
def test_decode_real_shapes(device, real_shape_kernels, num_heads, seqlen_q, page):
    """FlashMLA's shapes on the device, 8 sequences; at 128 heads and page 64 also 2 and 12 (each of
    default_config's batch tables)."""
    if num_heads in (1, 3) and page != 64:
        pytest.skip("odd head counts checked at page 64 only")
    for batch in _real_batches(num_heads, page):
        gen = torch.Generator().manual_seed(num_heads * 100 + seqlen_q * 10 + page + batch)
        lens = _real_lens(page, batch)
        check_against_ref(*make_case(device, len(lens), seqlen_q, num_heads, 576, 512, page, lens, gen), 512, True)


@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,seqlen_q,batch", [(16, 1, 8), (128, 1, 2), (128, 2, 8), (128, 1, 12)])
def test_nan_query_rows_real_shapes(device, num_heads, seqlen_q, batch):
    """NaN query rows through the H200's default paths (Gluon split kernels, their combine, the small-batch
    path at batch 2): out NaN and lse NaN in those rows only; the seqlen-0 row keeps out 0 / lse −inf."""
    gen = torch.Generator().manual_seed(num_heads + seqlen_q + batch)
    lens = _real_lens(64, batch)
    case = make_case(device, batch, seqlen_q, num_heads, 576, 512, 64, lens, gen)
    nan_at = [(0, 0, 0, 0), (batch - 1, seqlen_q - 1, num_heads - 1, 575)] + ([(1, 0, 3, 100)] if batch > 2 else [])
    check_nan_query_rows(*case, 512, True, nan_at)


@pytest.mark.gpu
def test_decode_real_shapes_large_block_ids(device):
    """Block ids near the end of a large pool: offsets past 2^31 elements need int64 arithmetic."""
    page, d = 64, 576
    num_blocks = (2**31 // (page * d)) + 64  # pool of ~2.4 G elements (4.5 GB bf16)
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, 1, 16, d, generator=gen).to(torch.bfloat16).to(device)
    kv = torch.empty(num_blocks, page, 1, d, dtype=torch.bfloat16, device=device)
    bt = torch.tensor([[num_blocks - 1, num_blocks - 5], [num_blocks - 2, 0]], dtype=torch.int32, device=device)
    for b in bt.flatten().tolist():
        kv[b] = torch.randn(page, 1, d, generator=gen).to(torch.bfloat16).to(device)
    cs = torch.tensor([100, 64], dtype=torch.int32, device=device)
    o, lse = mla_decode(q, kv, bt, cs)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs)
    assert cos_diff(o.float().cpu(), ro.float().cpu()) <= 1e-5
    assert (lse - rlse).abs().max().item() <= 1e-3


@pytest.mark.gpu
def test_decode_path_never_syncs(device):
    """get_mla_metadata + mla_decode with check_ids=False (the model's decode call) issue no host sync (CUDA-graph
    capture of the decode step); the default id check is exactly one read-back, so it does sync."""
    gen = torch.Generator().manual_seed(11)
    q, kv, bt, cs = make_case(device, 4, 2, 16, 576, 512, 64, [0, 65, 700, 3000], gen)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        md = get_mla_metadata(cs, 2, 16)
        o, lse = mla_decode(q, kv, bt, cs, metadata=md, check_ids=False)
        with pytest.raises(RuntimeError, match="synchroniz"):
            mla_decode(q, kv, bt, cs, metadata=md)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs)
    assert cos_diff(o.float().cpu(), ro.float().cpu()) <= 1e-5


@pytest.mark.parametrize("block_h,extra", [(16, {}), (32, {}), (16, {"COMBINE_ROWS": 1})])
def test_several_head_tiles_match_reference(device, block_h, extra):
    """Rows (query position, head) cut into several head tiles (the grid's first axis) with splits;
    also with one row per combine program (the small-batch configs)."""
    gen = torch.Generator().manual_seed(block_h)
    lens = [300, 0, 65, 129]
    q, kv, bt, cs = make_case(device, len(lens), 2, 24, 80, 64, 16, lens, gen)  # 48 rows
    cfg = dict(BLOCK_H=block_h, BLOCK_N=32, num_warps=4, num_stages=3, PARTS_PER_SM=1, USE_TMA=True, **extra)
    md = get_mla_metadata(cs, 2, 24, num_sm=12, config=cfg)
    o, lse = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md)
    ro, rlse = mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=64)
    o, lse, ro, rlse = o.float().cpu(), lse.cpu(), ro.cpu(), rlse.cpu()
    fin = ~torch.isinf(rlse)
    assert torch.equal(torch.isinf(lse), ~fin) and (lse[fin] - rlse[fin]).abs().max().item() <= 1e-3
    assert cos_diff(o, ro) <= 1e-5 and not torch.isnan(o).any()
    assert md.split[0, 1].item() > 1  # the long row is split across programs


def test_min_span_gives_a_short_batch_few_long_splits():
    """b 1, 1024 keys, 128 heads on the 64-row config (2 head tiles, 66 programs each on 132 SMs):
    without a floor the row is cut into 16 one-tile splits; with MIN_SPAN 10 every split spans ≥ 10
    cost units, so 3 splits and the other programs get empty spans; big batches keep one span per program."""
    from tritonseek.kernels.mla_decode import default_config

    lens = torch.tensor([1024], dtype=torch.int32)
    assert get_mla_metadata(lens, 1, 128, num_sm=132, config=default_config(1, 128)).split.tolist() == [[5, 16]]
    cfg = dict(default_config(1, 128), MIN_SPAN=10)
    md = get_mla_metadata(lens, 1, 128, num_sm=132, config=cfg)
    assert md.num_parts == 66 and md.split.tolist() == [[0, 3]]
    sched = md.sched.tolist()
    assert all(b0 == 1 for b0, _, _, _ in sched[3:])  # past the batch: nothing to do
    big = get_mla_metadata(torch.full((128,), 4096, dtype=torch.int32), 1, 16, num_sm=132,
                           config=dict(default_config(1, 16), MIN_SPAN=10))
    busy = sum(b0 < 128 for b0, _, _, _ in big.sched.tolist())
    assert big.split[:, 1].max().item() <= 3 and busy >= big.num_parts - 2  # ⌈total/parts⌉ rounding only


def test_small_batch_default_config():
    """More than 64 rows on a small batch: the SMALL path (mla_decode_small) up to batch·rows 1024, 16-row
    tiles at ≤ 128 units, else 32-row, one row per combine program (H200 latency table); larger products
    and ≤ 64 rows keep the big-batch table."""
    from tritonseek.kernels.mla_decode import default_config

    lens1 = torch.tensor([1024], dtype=torch.int32)
    md = get_mla_metadata(lens1, 1, 128, num_sm=132)
    assert md.config == default_config(1, 128, 1) and md.config["BLOCK_H"] == 16 and md.config["SMALL"]
    assert md.config["COMBINE_ROWS"] == 1 and md.num_parts == 16  # 8 head tiles × 16 pieces = 128 programs
    assert default_config(1, 128, 2)["BLOCK_H"] == 32 and default_config(1, 128, 3)["BLOCK_H"] == 32
    assert default_config(2, 128, 4)["BLOCK_H"] == 32 and default_config(1, 128, 8)["BLOCK_H"] == 32
    assert default_config(2, 128, 8) == default_config(2, 128) and default_config(1, 128, 9)["BLOCK_H"] == 64
    assert default_config(1, 64, 1) == default_config(1, 64) and default_config(1, 16, 1) == default_config(1, 16)


@_fixture_ok
@given(lens=st.lists(st.one_of(st.integers(0, 5000), st.sampled_from([0, 1, 64, 65])), min_size=1, max_size=300),
       num_sm=st.integers(1, 300), heads=st.sampled_from([1, 16, 128]), min_span=st.sampled_from([None, 10]),
       overhead=st.sampled_from([None, 0]), steal=st.sampled_from([None, (7, 10), (300, 50)]))
def test_schedule_kernel_equals_torch_schedule(device, lens, num_sm, heads, min_span, overhead, steal):
    """The one-launch Triton schedule equals the torch-op reference exactly (several batch and part
    chunks: batch up to 300 > 128, parts up to 300 > 32; STEAL tail spans too)."""
    from tritonseek.kernels.mla_decode import _FIXED_OVERHEAD_TILES, default_config
    from tritonseek.kernels.reference.mla import mla_schedule_ref

    cfg = dict(default_config(1, heads), **({} if min_span is None else {"MIN_SPAN": min_span}))
    if overhead is not None:
        cfg["OVERHEAD"] = overhead
    if steal:
        cfg.update(STEAL=steal[0], STEAL_PCT=steal[1])
    cs = torch.tensor(lens, dtype=torch.int32, device=device)
    md = get_mla_metadata(cs, 1, heads, num_sm=num_sm, config=cfg)
    oh = cfg.get("OVERHEAD", _FIXED_OVERHEAD_TILES)
    sched, split = mla_schedule_ref(cs.cpu(), md.num_parts, cfg["BLOCK_N"], oh, min_span or 1, md.num_programs,
                                    steal[1] if steal else 0)
    assert torch.equal(md.sched.cpu(), sched) and torch.equal(md.split.cpu(), split)


@pytest.mark.gpu
def test_schedule_kernel_real_sizes(device):
    """The schedule kernel on the H200 at FlashMLA's batch (and larger) equals the torch reference."""
    from tritonseek.kernels.mla_decode import _FIXED_OVERHEAD_TILES
    from tritonseek.kernels.reference.mla import mla_schedule_ref

    gen = torch.Generator().manual_seed(5)
    cases = [[4096] * 128, torch.randint(1, 9000, (128,), generator=gen).tolist(), [1024],
             torch.randint(0, 3000, (1000,), generator=gen).tolist()]
    for lens in cases:
        for heads, s_q in ((16, 1), (16, 2), (128, 1)):
            cs = torch.tensor(lens, dtype=torch.int32, device=device)
            md = get_mla_metadata(cs, s_q, heads)
            if md.config.get("SMALL"):  # a small batch of many rows: mla_decode_small, no schedule
                continue
            if md.config.get("SCHED") == "packed":  # Hopper default at batch >= 64; its own reference test is
                # tests/kernels/test_mla_schedule.py: here the balanced kernel is the one under test
                md = get_mla_metadata(cs, s_q, heads, config={**md.config, "SCHED": "balanced"})
            oh = md.config.get("OVERHEAD", _FIXED_OVERHEAD_TILES)
            sched, split = mla_schedule_ref(cs.cpu(), md.num_parts, md.config["BLOCK_N"], oh, 1)
            assert torch.equal(md.sched.cpu(), sched) and torch.equal(md.split.cpu(), split)
