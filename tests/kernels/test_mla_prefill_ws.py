"""The Gluon MLA prefill kernel (``mla_prefill_ws``: TMA producer warp, two wgmma consumer warpgroups) and its
persistent variant (``mla_prefill_ws_persistent``, config PERSIST=True: the same checks, plus grids of 1-7 programs
so one program walks many items, odd and even query-block counts, and 16 heads; knobs DIAG64, PAIR_MID).

CPU: Gluon has no interpreter, so the CPU tests compile the kernel for sm_90a (Triton's compiler and the ptxas it
ships; no GPU) and check what the H200 needs from it (wgmma, TMA loads, no register spills at the 240-register
consumer budget), check the config keys, and that ``mla_prefill`` with ``GLUON=True`` runs the tl kernel where the
Gluon one cannot (CPU, other head dims).
GPU (``gpu`` marker, H200): against the fp32 reference at DeepSeek's 128 nope ‖ 64 rope / v 128, 1 and 128 heads,
ragged lengths incl. 1 and lengths that are not multiples of the 128-row / 64- or 128-key blocks, every launch knob
combination in ``_VARIANTS``; out poisoned with NaN (every row of a sequence written, rows of no sequence left NaN)
and q/k/v rows of no sequence poisoned with NaN (masked keys and zeroed value rows keep them out).
Tolerances as test_mla_prefill: the reference runs in fp32 on the same bf16 inputs, p and out are rounded to bf16
(≈ 2^-9 each): ‖out − ref‖/‖ref‖ ≤ 1e-2 and |out − ref| ≤ 2e-2 + 2e-2·|ref| elementwise.
"""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels.mla_prefill import mla_prefill
from tritonseek.kernels.reference.mla import mla_prefill_ref

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

# (WS_BLOCK_N, WS_STAGES, PIPE): the knob combinations the H200 job times
_VARIANTS = [(128, 2, True), (128, 2, False), (64, 3, True), (64, 3, False)]


def compile_sm90(bn: int = 128, stages: int = 2, pipe: bool = True, causal: bool = True, consumer_regs: int = 240,
                 producer_regs: int = 24):
    """Compile the kernel for sm_90a on any machine (no GPU); returns the compiled kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from tritonseek.kernels import mla_prefill_ws as W
    from tritonseek.kernels._host import nvmma_layout

    def desc(rows, cols):
        return f"tensordesc<bf16[{rows}, {cols}],{nvmma_layout([rows, cols], gl.bfloat16)!r}>"

    sig = dict(q1_desc=desc(64, 128), q2_desc=desc(64, 64), k1_desc=desc(bn, 128), k2_desc=desc(bn, 64),
               v_desc=desc(bn, 128), cu_ptr="*i32", out_ptr="*bf16")
    sig.update({n: "i32" for n in ("stride_ot", "stride_oh", "hs_q1", "hs_q2", "hs_k1", "hs_k2", "hs_v",
                                   "num_m_blocks")})
    sig["scale_log2"] = "fp32"
    consts = dict(BLOCK_N=bn, NUM_STAGES=stages, CAUSAL=causal, PIPE=pipe, CONSUMER_REGS=consumer_regs,
                  PRODUCER_REGS=producer_regs)
    sig.update({n: "constexpr" for n in consts})
    return triton.compile(GluonASTSource(W._mla_prefill_ws_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4, maxnreg=W._MAXNREG))


@pytest.mark.parametrize("bn,stages,pipe", [(128, 2, True), (64, 3, False)])
def test_ws_compiles_for_sm90(bn, stages, pipe):
    # compiled in a child process that never ran the interpreter (this session's conftest turned it on)
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", bn, stages, pipe)
    # per consumer warpgroup: 2 score wgmmas + 1 P·V wgmma per key block (PIPE peels the first/last block)
    assert ptx.count("wgmma.mma_async") >= 6
    assert "cp.async.bulk.tensor" in ptx  # TMA loads
    assert max(spill_store_bytes(ptxas_report(ptx))) == 0


def test_ws_config_keys_checked(device="cpu"):
    q = torch.randn(4, 1, 48).to(torch.bfloat16)
    v = torch.randn(4, 1, 32).to(torch.bfloat16)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="GLUON"):
        mla_prefill(q, q, v, cu, 4, 0.1, config=dict(GLUON="yes"))
    with pytest.raises(ValueError, match="WS_STAGES"):
        mla_prefill(q, q, v, cu, 4, 0.1, config=dict(GLUON=True, WS_STAGES=0))
    with pytest.raises(ValueError, match="PIPE"):
        mla_prefill(q, q, v, cu, 4, 0.1, config=dict(PIPE=1))


def test_ws_falls_back_to_tl_kernel_on_cpu(device="cpu"):
    """GLUON=True where the Gluon kernel cannot run (the interpreter; head dims other than 128 ‖ 64 / 128): the tl
    kernel's result."""
    gen = torch.Generator().manual_seed(3)
    lens = [5, 17]
    q = torch.randn(22, 2, 48, generator=gen).to(torch.bfloat16)
    k = torch.randn(22, 2, 48, generator=gen).to(torch.bfloat16)
    v = torch.randn(22, 2, 32, generator=gen).to(torch.bfloat16)
    cu = torch.tensor([0, 5, 22], dtype=torch.int32)
    a = mla_prefill(q, k, v, cu, max(lens), 0.2, config=dict(GLUON=True))
    b = mla_prefill(q, k, v, cu, max(lens), 0.2)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- real shapes (H200)
def _ws_check(device, lens, heads, variant, split: bool, seed: int, pad: int = 37, extra: dict | None = None):
    from tritonseek.kernels import mla_prefill_ws as W

    bn, stages, pipe = variant
    # drawn on the device: a CPU generator took seconds per 128-head case (s23 W1/W2: the -m gpu run of this file
    # outgrew a 105-s budget)
    gen = torch.Generator(device=device).manual_seed(seed)
    total = sum(lens)
    rows = total + pad  # tokens of no sequence after the last one: NaN in q/k/v, never written in out
    rnd = lambda *shape: torch.randn(*shape, generator=gen, device=device).to(torch.bfloat16)  # noqa: E731
    q_full, kvb, q_pe, k_pe = rnd(rows, heads, 192), rnd(rows, heads, 256), rnd(rows, heads, 64), rnd(rows, 64)
    for t in (q_full, kvb, q_pe, k_pe):
        t[total:] = float("nan")
    v = kvb[..., 128:]
    if split:  # the model's operands: strided views, one rope key per token shared by the heads
        q1, k1 = q_full[..., :128], kvb[..., :128]
        args, kw = (q1, k1, v), dict(q_pe=q_pe, k_pe=k_pe)
        q_ref = torch.cat([q1, q_pe], -1)
        k_ref = torch.cat([k1, k_pe.unsqueeze(1).expand(rows, heads, 64)], -1)
    else:
        k = torch.cat([kvb[..., :128], k_pe.unsqueeze(1).expand(rows, heads, 64)], -1).contiguous()
        args, kw = (q_full, k, v), {}
        q_ref, k_ref = q_full, k
    # the Gluon kernel really takes these operands (not the tl fallback)
    p1, p2, r1, r2 = (q1, q_pe, k1, k_pe) if split else (q_full[..., :128], q_full[..., 128:], k[..., :128],
                                                          k[..., 128:])
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    out = torch.full((rows, heads, 128), float("nan"), dtype=torch.bfloat16, device=device)
    assert W.ws_supported(p1, p2, r1, r2, v, out, 192**-0.5)
    # PERSIST=False unless extra says otherwise: the one-program-per-block kernel (the default config is persistent)
    cfg = dict(dict(GLUON=True, WS_BLOCK_N=bn, WS_STAGES=stages, PIPE=pipe, PERSIST=False), **(extra or {}))
    mla_prefill(*args, cu, max(lens), 192**-0.5, out=out, config=cfg, **kw)
    ref = mla_prefill_ref(q_ref[:total].float(), k_ref[:total].float(), v[:total].float(), cu, 192**-0.5).cpu()
    o = out.float().cpu()
    assert torch.isnan(o[total:]).all(), "a row of no sequence was written"
    o = o[:total]
    assert not torch.isnan(o).any(), "some output row was never written (or NaN leaked in)"
    rel = ((o - ref).norm() / ref.norm()).item()
    assert rel <= 1e-2, rel
    assert torch.all((o - ref).abs() <= 2e-2 + 2e-2 * ref.abs())


@pytest.mark.gpu
@pytest.mark.parametrize("variant", _VARIANTS, ids=["ws128p", "ws128s", "ws64p", "ws64s"])
@pytest.mark.parametrize("lens,heads", [([1], 1), ([1, 37, 128, 129, 300, 64, 1000, 65], 1),
                                        ([4096], 1), ([1, 777, 64, 129, 2000], 128), ([1000] * 4, 128)])
@pytest.mark.parametrize("split", [False, True])
def test_ws_real_shapes(device, lens, heads, variant, split):
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        pytest.skip("the Gluon kernel runs on sm_90 only")
    _ws_check(device, lens, heads, variant, split, seed=len(lens) * 100 + heads)


def test_ws_public_launcher_refuses_cpu(device="cpu"):
    from tritonseek.kernels.mla_prefill_ws import mla_prefill_ws

    q = torch.randn(4, 1, 192).to(torch.bfloat16)
    v = torch.randn(4, 1, 128).to(torch.bfloat16)
    with pytest.raises(ValueError, match="sm_90"):
        mla_prefill_ws(q, q, v, torch.tensor([0, 4], dtype=torch.int32), 4, 0.1)


@pytest.mark.gpu
def test_ws_public_launcher_real_shapes(device):
    """mla_prefill_ws with its default knobs; other head dims are refused, not silently run by the tl kernel."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        pytest.skip("the Gluon kernel runs on sm_90 only")
    from tritonseek.kernels.mla_prefill_ws import mla_prefill_ws

    gen = torch.Generator().manual_seed(5)
    lens = [1, 300, 2049]
    q, k = (torch.randn(sum(lens), 16, 192, generator=gen).to(torch.bfloat16).to(device) for _ in range(2))
    v = torch.randn(sum(lens), 16, 128, generator=gen).to(torch.bfloat16).to(device)
    cu = torch.tensor([0, 1, 301, 2350], dtype=torch.int32, device=device)
    o = mla_prefill_ws(q, k, v, cu, max(lens), 192**-0.5).float().cpu()
    ref = mla_prefill_ref(q.float(), k.float(), v.float(), cu, 192**-0.5).cpu()
    assert ((o - ref).norm() / ref.norm()).item() <= 1e-2
    with pytest.raises(ValueError, match="128 nope"):
        mla_prefill_ws(q[..., :96], k[..., :96], v, cu, max(lens), 192**-0.5)


# ----------------------------------------------------------------------------- persistent variant (PERSIST=True)
def compile_sm90_persistent(bn: int = 128, stages: int = 2, diag64: bool = False, causal: bool = True,
                            consumer_regs: int = 240, producer_regs: int = 24, pair: bool = False):
    """Compile mla_prefill_ws_persistent's kernel for sm_90a on any machine (no GPU); returns the compiled kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from tritonseek.kernels import mla_prefill_ws_persistent as WP
    from tritonseek.kernels._host import nvmma_layout

    def desc(rows, cols):
        return f"tensordesc<bf16[{rows}, {cols}],{nvmma_layout([rows, cols], gl.bfloat16)!r}>"

    sig = dict(q1_desc=desc(64, 128), q2_desc=desc(64, 64), k1_desc=desc(bn, 128), k2_desc=desc(bn, 64),
               v_desc=desc(bn, 128), cu_ptr="*i32", out_ptr="*bf16")
    sig.update({n: "i32" for n in ("stride_ot", "stride_oh", "hs_q1", "hs_q2", "hs_k1", "hs_k2", "hs_v", "num_m",
                                   "num_heads", "units")})
    sig["scale_log2"] = "fp32"
    consts = dict(BLOCK_N=bn, NUM_STAGES=stages, CAUSAL=causal, DIAG64=diag64, PAIR=pair,
                  CONSUMER_REGS=consumer_regs, PRODUCER_REGS=producer_regs)
    sig.update({n: "constexpr" for n in consts})
    return triton.compile(GluonASTSource(WP._mla_prefill_ws_persistent_kernel, sig, consts),
                          target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=WP._MAXNREG))


@pytest.mark.parametrize("bn,stages,diag64,pair", [(128, 2, False, False), (64, 3, False, False), (128, 2, True, False),
                                                   (128, 2, False, True), (64, 3, False, True), (128, 2, True, True)])
def test_ws_persistent_compiles_for_sm90(bn, stages, diag64, pair):
    ptx = ptx_in_fresh_process(__name__, "compile_sm90_persistent", bn, stages, diag64, True, 240, 24, pair)
    assert ptx.count("wgmma.mma_async") >= 6
    assert "cp.async.bulk.tensor" in ptx
    assert max(spill_store_bytes(ptxas_report(ptx))) == 0


def test_ws_persistent_config_and_cpu_fallback(device="cpu"):
    """PERSIST, DIAG64 and PAIR_MID must be bools; on the CPU (no Gluon) GLUON + PERSIST runs the tl kernel (its
    result)."""
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(22, 2, 48, generator=gen).to(torch.bfloat16)
    k = torch.randn(22, 2, 48, generator=gen).to(torch.bfloat16)
    v = torch.randn(22, 2, 32, generator=gen).to(torch.bfloat16)
    cu = torch.tensor([0, 5, 22], dtype=torch.int32)
    with pytest.raises(ValueError, match="PERSIST"):
        mla_prefill(q, k, v, cu, 17, 0.2, config=dict(GLUON=True, PERSIST=1))
    with pytest.raises(ValueError, match="DIAG64"):
        mla_prefill(q, k, v, cu, 17, 0.2, config=dict(GLUON=True, PERSIST=True, DIAG64="on"))
    with pytest.raises(ValueError, match="PAIR_MID"):
        mla_prefill(q, k, v, cu, 17, 0.2, config=dict(GLUON=True, PERSIST=True, PAIR_MID=1))
    a = mla_prefill(q, k, v, cu, 17, 0.2, config=dict(GLUON=True, PERSIST=True))
    assert torch.equal(a, mla_prefill(q, k, v, cu, 17, 0.2))


_PERSIST_LENS = [
    ([1], 1, None), ([1, 37, 128, 129, 300, 64, 1000, 65], 1, None), ([1, 37, 128, 129, 300, 64, 1000, 65], 1, 1),
    ([4096], 1, 3), ([1, 777, 64, 129, 2000], 128, None), ([1, 777, 64, 129, 2000], 16, 7), ([1000] * 4, 128, None),
    ([384] * 3 + [1], 16, 5)]
# odd query-block counts (341 / 630 tokens: 3 / 5 blocks) for PAIR_MID; with 1 head and 5 sequences an odd number of
# (head, sequence)s: the last pair is cut short
_PAIR_LENS = [([341] * 5, 1, 3), ([630, 1, 341, 300, 630], 1, 2), ([341, 1, 630, 300], 16, None),
              ([341] * 24, 16, None), ([630] * 13, 16, 7)]


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [(128, 2, True, {}), (64, 3, True, {}), (128, 2, True, dict(DIAG64=True)),
                                     (128, 2, True, dict(PAIR_MID=True)), (64, 3, True, dict(PAIR_MID=True)),
                                     (128, 2, True, dict(DIAG64=True, PAIR_MID=True))],
                         ids=["p128", "p64", "p128d", "p128m", "p64m", "p128dm"])
@pytest.mark.parametrize("lens,heads,programs", _PERSIST_LENS + _PAIR_LENS)
@pytest.mark.parametrize("split", [False, True])
def test_ws_persistent_real_shapes(device, lens, heads, programs, variant, split, monkeypatch):
    """PERSIST=True against the fp32 reference (out NaN-poisoned, q/k/v rows past the last sequence NaN); programs:
    the grid size (None: the SM count), small ones walk many items per program (ring and query-buffer phases carried
    across items: 4096 tokens on 3 programs = 16 units each). The odd-count lengths (_PAIR_LENS) with PAIR_MID only,
    and the strided (split) operands only with 128-key PAIR_MID: the schedule does not depend on them."""
    if (lens, heads, programs) in _PAIR_LENS and ("PAIR_MID" not in variant[3] or (split and variant[0] != 128)):
        pytest.skip("covered by the other PAIR_MID variants")
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        pytest.skip("the Gluon kernel runs on sm_90 only")
    if programs is not None:
        from tritonseek.kernels import mla_prefill_ws_persistent as WP

        monkeypatch.setattr(WP, "cuda_sm_count", lambda dev: programs)
    _ws_check(device, lens, heads, variant[:3], split, seed=len(lens) * 10 + heads, extra=dict(PERSIST=True,
                                                                                             **variant[3]))


@pytest.mark.gpu
def test_ws_persistent_smem_checked(device):
    """Three stages of 128-key blocks need 288 KB of shared memory, DIAG64 needs 128-key blocks: ValueErrors."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        pytest.skip("the Gluon kernel runs on sm_90 only")
    q = torch.randn(300, 2, 192, device=device).to(torch.bfloat16)
    v = torch.randn(300, 2, 128, device=device).to(torch.bfloat16)
    cu = torch.tensor([0, 300], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="shared memory"):
        mla_prefill(q, q, v, cu, 300, 0.1, config=dict(GLUON=True, PERSIST=True, WS_STAGES=3, WS_BLOCK_N=128))
    with pytest.raises(ValueError, match="DIAG64"):
        mla_prefill(q, q, v, cu, 300, 0.1, config=dict(GLUON=True, PERSIST=True, DIAG64=True, WS_BLOCK_N=64))


def test_persist_config_by_length():
    """The default config's persistent block shape follows max_seqlen (mla_prefill._PERSIST_BY_LENGTH); a caller's
    block knobs are left alone."""
    from tritonseek.kernels.mla_prefill import _PERSIST_BY_LENGTH, default_config, persist_config

    cfg = default_config(192, 128)
    longest = max(b for b, _ in _PERSIST_BY_LENGTH)
    assert persist_config(cfg, None, longest + 1) == cfg
    for bound, over in _PERSIST_BY_LENGTH:
        got = persist_config(cfg, None, bound)
        assert all(got[k] == v for k, v in over.items())
    assert persist_config(cfg, dict(WS_BLOCK_N=128), 1) == cfg
    assert persist_config(cfg, dict(DIAG64=False), 1) == cfg
    assert persist_config(cfg, dict(PERSIST=True), 300) == cfg
    assert persist_config(cfg, dict(PAIR_MID=True), 300) == cfg
    got = persist_config(cfg, None, 300)  # 3 query blocks: PAIR_MID (the default config's) with DIAG64 (s23)
    assert got["PERSIST"] and got["PAIR_MID"] and got["DIAG64"]


@pytest.mark.gpu
@pytest.mark.parametrize("lens", [[1, 200, 256, 37], [300, 5, 1], [300, 512, 17, 1], [640, 1, 129],
                                  [341] * 5 + [1], [630, 600, 1, 513]])
def test_ws_persistent_default_by_length(device, lens):
    """mla_prefill with the default config (kernel and block shape by max_seqlen) against the fp32 reference."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        pytest.skip("the Gluon kernel runs on sm_90 only")
    gen = torch.Generator().manual_seed(sum(lens))
    total = sum(lens)
    q, k = (torch.randn(total, 16, 192, generator=gen).to(torch.bfloat16).to(device) for _ in range(2))
    v = torch.randn(total, 16, 128, generator=gen).to(torch.bfloat16).to(device)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    out = torch.full((total, 16, 128), float("nan"), dtype=torch.bfloat16, device=device)
    mla_prefill(q, k, v, cu, max(lens), 192**-0.5, out=out)
    ref = mla_prefill_ref(q.float(), k.float(), v.float(), cu, 192**-0.5).cpu()
    o = out.float().cpu()
    assert not torch.isnan(o).any()
    assert ((o - ref).norm() / ref.norm()).item() <= 1e-2
    assert torch.all((o - ref).abs() <= 2e-2 + 2e-2 * ref.abs())
