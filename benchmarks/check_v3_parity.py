"""Diagnostic (rows suite ``v3_parity``): triton vs reference backend at DeepSeek-V3 widths, op by op,
layer by layer and for the whole slice — is a kernel wrong at real shapes, or is the logits gap of the
random-weight slice expected?

    PYTHONPATH=. python benchmarks/check_v3_parity.py [--out rows.jsonl] [--batch 4] [--context 1024]
        [--tiny --device cpu]      # --tiny: same code at small widths (CPU, Triton interpreter)

The slice is ``benchmarks/v3_slice.py`` (4 layers: 1 dense + 3 MoE, random block-FP8 weights, random
latent cache). One decode forward (seqlen_q 1, then seqlen_q 4 = MTP K=3 verification) runs on the
triton backend while every ``Ops`` call and every ``MoE.experts`` call is recorded with its real
inputs. Each recorded call is then re-run on both backends on the *same* inputs:

* ``fp8_linear`` per projection (M, N, K), plus fresh N(0,1) inputs at M = 64 and the fused
  q_a + kv_a shape N = 2112, K = 7168 (random weight): rel = ‖triton − ref‖/‖ref‖ against the
  reference with FP8-rounded activations (``Ops("reference", fp8_activations=True)``: the triton
  backend's arithmetic); ``act_rounding_rel`` = the same reference without activation rounding vs with
  it (the size of the FP8 activation effect, not a bug).
* ``mla_decode`` at 128 heads, real q and the cache (out and lse); ``mla_prefill`` at 128 heads
  (fresh inputs, 2 sequences); ``gate_topk`` (256 experts, 8 groups keep 4): id-set agreement per token
  and weight error on agreeing tokens; ``moe_experts`` (``moe_experts_triton`` vs the reference loop).
* Each layer on both backends from the same input (rel error of the output and of the update
  out − x), the full slice's logits (cos diff = 1 − 2Σxy/Σ(x²+y²), argmax agreement) against the
  reference with and without FP8 activations, the hidden state's RMS after every layer, and
  sensitivity probes: the reference itself re-run on its input perturbed by 4e-3 relative noise (one
  bf16 ulp; per layer, per MoE call and for the whole slice). If that alone moves the result as much as
  the backend switch, the gap is amplification of rounding (FP8 re-rounding of nearly equal
  activations, routing flips), not a kernel.

A single kernel whose rel error at real shapes is far above bf16 output rounding (~4e-3) is flagged
``suspect``; a composite (MoE experts, layer) when it also exceeds twice the reference's own sensitivity. Rows go to ``--out`` as they are made; a verdict table is printed last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.v3_slice import _fill_fp8_, build_slice, v3_config  # noqa: E402
from tritonseek.benchrun import (git_commit, int_at_least, nonnegative_int, out_file, positive_int, require_cuda,  # noqa: E402
                                 positive_int_list)
from tritonseek.engine.kv_cache import PagedLatentCache  # noqa: E402
from tritonseek.engine.runner import ModelRunner, Sequence  # noqa: E402
from tritonseek.engine.sampling_params import SamplingParams  # noqa: E402
from tritonseek.kernels.reference.fp8 import (  # noqa: E402
    dequant_block_fp8_ref,
    dequant_token_group_fp8_ref,
    per_token_group_quant_fp8_ref,
)
from tritonseek.kernels.reference.mla import mla_decode_ref, mla_prefill_ref  # noqa: E402
from tritonseek.kernels.reference.moe import gate_topk_ref  # noqa: E402
from tritonseek.model.moe import MoE  # noqa: E402

PAGE = 64
SUSPECT_REL = 2e-2  # ≫ bf16 output rounding (2^-9 ≈ 2e-3 per element): a real-shape kernel bug, not rounding


SENS_DRAWS = 4  # perturbation draws per layer check
PERTURB = 4e-3  # relative input noise of the sensitivity probes: ~one bf16 ulp (2^-8), the size of per-op rounding


def perturb(x: torch.Tensor, eps: float = PERTURB, seed: int = 3) -> torch.Tensor:
    """x·(1 + eps·n), n ~ N(0,1) seeded: what the reference does with an input off by rounding-level noise."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    return (x.float() * (1 + eps * torch.randn(x.shape, device=x.device, generator=g))).to(x.dtype)


def suspect(err: float, sensitivity: float) -> bool:
    """A composite (MoE, layer) is suspect when triton-vs-reference exceeds both the absolute bar and twice what
    the reference itself moves under rounding-level input noise (FP8 re-rounding amplifies tiny differences)."""
    return err > SUSPECT_REL and err > 2 * sensitivity


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def cos_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(1 - 2 * (a * b).sum() / (a * a + b * b).sum())


def _triton_version() -> str:
    try:
        import triton

        return triton.__version__
    except Exception:  # noqa: BLE001
        return "none"


class Harness:
    """The slice, a paged latent cache of random latents (scattered pages) and a runner."""

    def __init__(self, model, dev: torch.device, max_tokens: int, seed: int = 1):
        cfg = model.cfg
        self.model, self.cfg, self.dev = model, cfg, dev
        blocks = max_tokens // PAGE + 8
        self.cache = PagedLatentCache(model.num_cache_layers, blocks, PAGE, cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                                      model.dtype, dev)
        gen = torch.Generator(device=dev).manual_seed(seed)
        for t in self.cache.layers:  # random latents: real-looking data, never zeros
            t.normal_(0.0, 1.0, generator=gen)
        self.cache.allocator._free = torch.randperm(blocks, generator=torch.Generator().manual_seed(seed)).tolist()
        self.runner = ModelRunner(model, self.cache, dev)
        self._next = 0

    def seqs(self, batch: int, context: int, extra: int) -> list[Sequence]:
        out = []
        for _ in range(batch):
            s = Sequence(self._next, "", [2] * context, SamplingParams(max_new_tokens=1 << 20), None)
            s.out_ids.append(3)
            self._next += 1
            out.append(s)
            self.cache.ensure_capacity(s.seq_id, context + extra)
        return out

    def release(self, seqs):
        for s in seqs:
            self.cache.release(s.seq_id)


def run_layer(layer, x, pos, attn, cache) -> torch.Tensor:
    """The whole residual stream after ``layer`` from the whole stream x (layers may return (out, residual))."""
    y = layer(x, pos, attn, cache)
    return y[0] + y[1] if isinstance(y, tuple) else y


class Run:
    """Row sink + environment."""

    def __init__(self, args):
        self.args = args
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self.env = dict(
            gpu=torch.cuda.get_device_name() if self.cuda else "cpu", torch=torch.__version__, triton=_triton_version(),
            commit=git_commit(), dry=not self.cuda,
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    def row(self, what: str, case: dict, **fields) -> dict:
        r = {"suite": "v3_parity", "case": {"what": what, **case}, "us": None, "tflops": None, "gbps": None,
             "peer": "reference backend, fp8_activations=True", "peer_us": None, "ratio_vs_peer": None}
        r.update({k: (float(f"{v:.4g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in fields.items()})
        r.update(self.env, model=self.args.model_name)
        self.rows.append(r)
        if self.args.out:
            with open(self.args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
        shown = {k: r[k] for k in fields if not isinstance(r[k], (list, dict))}
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {what:<14} {case}  {shown}", flush=True)
        return r


# ------------------------------------------------------------------------------------ recording
class Recorder:
    """Record the inputs of every hot-path call of one forward (instance-level wrappers; undo() removes them)."""

    def __init__(self, model):
        self.model, self.ops = model, model.ops
        self.calls: list[tuple[str, tuple, dict]] = []
        self._undo = []
        for name in ("linear", "mla_decode", "gate_topk"):
            orig = getattr(self.ops, name)

            def wrapped(*a, _orig=orig, _name=name, **kw):
                self.calls.append((_name, a, kw))
                return _orig(*a, **kw)

            setattr(self.ops, name, wrapped)
            self._undo.append(lambda _n=name: delattr(self.ops, _n))
        for layer in model.model.layers:
            if isinstance(layer.mlp, MoE):
                moe = layer.mlp
                orig_e = moe.experts

                def ewrapped(x, w, ids, *a, _orig=orig_e, _moe=moe, **kw):
                    self.calls.append(("moe_experts", (x, w, ids, _moe), {}))
                    return _orig(x, w, ids, *a, **kw)

                moe.experts = ewrapped
                self._undo.append(lambda _m=moe: delattr(_m, "experts"))

    def undo(self):
        for u in self._undo:
            u()


def set_backend(model, backend: str, fp8_act: bool = True):
    model.ops.backend = backend
    model.ops.fp8_activations = fp8_act


# ------------------------------------------------------------------------------------ op checks
def ref_linear(x2: torch.Tensor, w_deq: torch.Tensor, fp8_act: bool) -> torch.Tensor:
    if fp8_act:
        x2 = dequant_token_group_fp8_ref(*per_token_group_quant_fp8_ref(x2)).to(x2.dtype)
    return x2.float() @ w_deq.t()


def check_linear(run: Run, x, weight, scale, label: str, seen: set):
    from tritonseek.kernels.fp8_gemm import fp8_linear

    x2 = x.reshape(-1, x.shape[-1])
    M, N, K = x2.shape[0], weight.shape[0], weight.shape[1]
    if (M, N, K) in seen:
        return
    seen.add((M, N, K))
    w_deq = dequant_block_fp8_ref(weight, scale, dtype=torch.float32)
    t = fp8_linear(x2, weight, scale).float()
    r = ref_linear(x2, w_deq, True)
    p = ref_linear(x2, w_deq, False)
    e = rel(t, r)
    run.row("fp8_linear", {"M": M, "N": N, "K": K, "proj": label, "input": "model" if label != "fresh" else "randn"},
            rel_err=e, act_rounding_rel=rel(p, r), out_rms=float(r.pow(2).mean().sqrt()),
            finite=bool(torch.isfinite(t).all()), suspect=e > SUSPECT_REL)


def check_mla_decode(run: Run, a, kw, s_q_label):
    from tritonseek.kernels.mla_decode import mla_decode

    q, kv_cache, block_table, cache_seqlens, softmax_scale, head_dim_v, _meta = a
    o_t, l_t = mla_decode(q, kv_cache, block_table, cache_seqlens, softmax_scale=softmax_scale, causal=True,
                          head_dim_v=head_dim_v)
    o_r, l_r = mla_decode_ref(q, kv_cache, block_table, cache_seqlens, softmax_scale=softmax_scale, causal=True,
                              head_dim_v=head_dim_v)
    e = rel(o_t, o_r)
    # how peaked is the attention? (max softmax prob, mean over heads): peaked → small q changes move the output
    run.row("mla_decode", {"batch": q.shape[0], "s_q": q.shape[1], "h_q": q.shape[2],
                           "s_k": int(cache_seqlens.max()), "input": s_q_label},
            rel_err=e, lse_maxdiff=float((l_t - l_r).abs().max()), q_rms=float(q.float().pow(2).mean().sqrt()),
            lse_mean=float(l_r.float().mean()), suspect=e > SUSPECT_REL)


def check_gate(run: Run, a, kw):
    from tritonseek.kernels.moe_routing import gate_topk

    logits, bias = a
    w_t, i_t = gate_topk(logits, bias, **kw)
    w_r, i_r = gate_topk_ref(logits, bias, **kw)
    st, ot = i_t.long().sort(-1)
    sr, orr = i_r.long().sort(-1)
    same = (st == sr).all(-1)
    werr = rel(w_t.gather(-1, ot)[same], w_r.gather(-1, orr)[same]) if same.any() else float("nan")
    # margin between the 8th and 9th biased score: how close routing is to a flip
    run.row("gate_topk", {"T": logits.shape[0], "E": logits.shape[1], "n_group": kw["n_group"],
                          "topk_group": kw["topk_group"]},
            ids_agree=float(same.float().mean()), weights_rel_err=werr, suspect=(not bool(same.all())) or werr > 1e-4)


def check_moe(run: Run, model, a, layer_idx: int):
    from tritonseek.model.moe_triton import moe_experts_triton

    x, w, ids, moe = a
    set_backend(model, "triton")
    t = moe_experts_triton(x, w, ids, moe)
    set_backend(model, "reference", True)
    r = moe.experts_reference(x, w, ids)
    sens = rel(moe.experts_reference(perturb(x), w, ids), r)
    set_backend(model, "reference", False)
    p = moe.experts_reference(x, w, ids)
    set_backend(model, "triton")
    model.ops._dense.clear()
    e = rel(t, r)
    run.row("moe_experts", {"T": x.shape[0], "layer": layer_idx, "experts_hit": int(torch.unique(ids).numel())},
            rel_err=e, act_rounding_rel=rel(p, r), ref_sensitivity_rel=sens, suspect=suspect(e, sens))


def check_prefill(run: Run, cfg, dev, lens=(700, 324)):
    from tritonseek.kernels.mla_prefill import mla_prefill

    g = torch.Generator(device=dev).manual_seed(5)
    T, h = sum(lens), cfg.num_attention_heads
    dqk, dv = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim
    q = torch.randn(T, h, dqk, generator=g, device=dev).to(torch.bfloat16)
    k = torch.randn(T, h, dqk, generator=g, device=dev).to(torch.bfloat16)
    v = torch.randn(T, h, dv, generator=g, device=dev).to(torch.bfloat16)
    cu = torch.tensor([0, lens[0], T], dtype=torch.int32, device=dev)
    o_t = mla_prefill(q, k, v, cu, max(lens), cfg.softmax_scale, causal=True)
    o_r = mla_prefill_ref(q, k, v, cu, cfg.softmax_scale, causal=True)
    e = rel(o_t, o_r)
    run.row("mla_prefill", {"tokens": T, "seqs": len(lens), "h_q": h}, rel_err=e, suspect=e > SUSPECT_REL)


# ------------------------------------------------------------------------------------ model checks
def decode_inputs(h: Harness, batch: int, context: int, s_q: int, seed: int):
    seqs = h.seqs(batch, context, extra=s_q)
    attn = h.runner.decode_batch(seqs, [context] * batch, s_q)
    g = torch.Generator(device=h.dev).manual_seed(seed)
    ids = torch.randint(2, h.cfg.vocab_size, (batch * s_q,), generator=g, device=h.dev)
    pos = (context + torch.arange(s_q, device=h.dev)).repeat(batch)
    return seqs, attn, ids, pos


def forward_layers(model, x, pos, attn, caches):
    """Embedding output x → (stream after each layer, logits, each layer's input); clears the reference's dense
    copies per layer."""
    hs, ins = [], []
    for i, layer in enumerate(model.model.layers):
        ins.append(x)
        x = run_layer(layer, x, pos, attn, caches[i])
        model.ops._dense.clear()
        hs.append(x)
    return hs, model.compute_logits(x), ins


def rms(t: torch.Tensor) -> float:
    return float(t.float().pow(2).mean().sqrt())


def check_model(run: Run, model, h: Harness, batch: int, context: int, s_q: int):
    caches = h.cache.layers
    seqs, attn, ids, pos = decode_inputs(h, batch, context, s_q, seed=11 + s_q)
    try:
        x0 = model.model.embed_tokens(ids)
        set_backend(model, "triton")
        rec = Recorder(model)
        try:
            _, _, layer_inputs = forward_layers(model, x0, pos, attn, caches)
        finally:
            rec.undo()
        label = f"model s_q={s_q}"
        # --- ops on the recorded inputs
        seen: set = set()
        names = {}
        for layer in list(model.model.layers):
            for n, m in layer.named_modules():
                if getattr(m, "weight_scale_inv", None) is not None and hasattr(m, "in_features"):
                    names[m.weight.data_ptr()] = n
        moe_i = 0
        moe_layers = [i for i, l in enumerate(model.model.layers) if isinstance(l.mlp, MoE)]
        for name, a, kw in rec.calls:
            if name == "linear" and a[2] is not None:
                check_linear(run, a[0], a[1], a[2], names.get(a[1].data_ptr(), "?"), seen)
            elif name == "mla_decode":
                check_mla_decode(run, a, kw, label)
            elif name == "gate_topk":
                check_gate(run, a, kw)
            elif name == "moe_experts":
                check_moe(run, model, a, moe_layers[moe_i % len(moe_layers)])
                moe_i += 1
        # --- each layer from the same (triton-run) input
        for i, layer in enumerate(model.model.layers):
            xi = layer_inputs[i]
            routes: list[torch.Tensor] = []
            is_moe = isinstance(layer.mlp, MoE)
            if is_moe:
                orig_route = layer.mlp.route

                def rwrapped(x, _o=orig_route):
                    w, ii = _o(x)
                    routes.append(ii.long().sort(-1)[0])
                    return w, ii

                layer.mlp.route = rwrapped
            try:
                set_backend(model, "triton")
                yt = run_layer(layer, xi, pos, attn, caches[i])
                set_backend(model, "reference", True)
                yr = run_layer(layer, xi, pos, attn, caches[i])
                # the reference's own spread under rounding-level input noise, over several draws (a routing
                # flip is a discrete event: one draw may or may not hit one)
                sens = []
                for seed in range(3, 3 + SENS_DRAWS):
                    xp = perturb(xi, seed=seed)
                    sens.append(rel(run_layer(layer, xp, pos, attn, caches[i]) - xp, yr - xi))
            finally:
                if is_moe:
                    del layer.mlp.route
            model.ops._dense.clear()
            set_backend(model, "triton")
            e_upd = rel(yt - xi, yr - xi)
            agree = None
            if len(routes) >= 2:  # triton run, reference run, perturbed reference runs
                agree = [round(float((r == routes[1]).all(-1).float().mean()), 3) for r in routes[:1] + routes[2:]]
            run.row("layer", {"layer": i, "kind": "moe" if is_moe else "dense", "batch": batch,
                              "s_q": s_q, "context": context},
                    rel_err=rel(yt, yr), update_rel_err=e_upd, ref_sensitivity_rel=max(sens),
                    ref_sensitivity_draws=[round(x, 4) for x in sens], in_rms=rms(xi), update_rms=rms(yr - xi),
                    route_agree_triton_then_perturbed=agree, suspect=suspect(e_upd, max(sens)))
        # --- the whole slice: triton vs reference (fp8 activations / plain), per-layer RMS, routing, sensitivity
        routes = {}

        def route_probe(tag):
            recs = []
            for i in moe_layers:
                m = model.model.layers[i].mlp
                orig = m.route

                def wr(x, _o=orig, _i=i):
                    w, ii = _o(x)
                    recs.append((_i, ii.long().sort(-1)[0]))
                    return w, ii

                m.route = wr
            routes[tag] = recs

        def unprobe():
            for i in moe_layers:
                del model.model.layers[i].mlp.route

        out = {}
        for tag, backend, fp8a, xin in (
            ("triton", "triton", True, x0),
            ("ref_fp8act", "reference", True, x0),
            ("ref_plain", "reference", False, x0),
            ("ref_fp8act_perturbed", "reference", True, perturb(x0)),
        ):
            set_backend(model, backend, fp8a)
            route_probe(tag)
            try:
                out[tag] = forward_layers(model, xin, pos, attn, caches)
            finally:
                unprobe()
                set_backend(model, "triton")
        base_hs, base_lg, _ = out["ref_fp8act"]
        for tag in ("triton", "ref_plain", "ref_fp8act_perturbed"):
            hs, lg, _ = out[tag]
            agree_routes = [float((a[1] == b[1]).all(-1).float().mean())
                            for a, b in zip(routes[tag], routes["ref_fp8act"])]
            run.row("model", {"batch": batch, "s_q": s_q, "context": context, "layers": len(hs), "vs": tag},
                    logits_cos_diff=cos_diff(lg, base_lg), logits_rel_err=rel(lg, base_lg),
                    argmax_agree=float((lg.argmax(-1) == base_lg.argmax(-1)).float().mean()),
                    hidden_rel_err_per_layer=[round(rel(a, b), 4) for a, b in zip(hs, base_hs)],
                    route_agree_per_moe_layer=agree_routes,
                    hidden_rms_per_layer=[round(rms(t), 3) for t in hs],
                    ref_hidden_rms_per_layer=[round(rms(t), 3) for t in base_hs],
                    embed_rms=rms(x0), logits_rms=rms(base_lg),
                    top2_gap_mean=float((base_lg.topk(2, -1)[0].diff(dim=-1).abs()).mean()),
                    logits_std=float(base_lg.float().std()))
    finally:
        h.release(seqs)
        model.ops._dense.clear()


def check_fresh_linears(run: Run, model, dev):
    """Every projection shape at M = 64 with N(0,1) inputs, plus the fused q_a+kv_a shape (2112 × 7168)."""
    g = torch.Generator(device=dev).manual_seed(9)
    seen: set = set()
    shapes = {}
    for layer in list(model.model.layers)[:2]:
        for n, m in layer.named_modules():
            if getattr(m, "weight_scale_inv", None) is not None and hasattr(m, "in_features"):
                shapes.setdefault((m.out_features, m.in_features), (n, m.weight, m.weight_scale_inv))
    cfg = model.cfg
    N, K = cfg.q_lora_rank + cfg.kv_lora_rank + cfg.qk_rope_head_dim, cfg.hidden_size
    w = torch.empty(N, K, dtype=torch.float8_e4m3fn, device=dev)
    s = torch.empty(-(-N // 128), -(-K // 128), dtype=torch.float32, device=dev)
    _fill_fp8_(w, s, K, g)
    shapes[(N, K)] = ("fused_qa_kva", w, s)
    for M in (1, 64):
        for (N, K), (n, w, s) in shapes.items():
            x = torch.randn(M, K, generator=g, device=dev).to(torch.bfloat16)
            try:
                check_linear(run, x, w, s, "fresh", seen)
            except Exception as e:  # noqa: BLE001 - a shape the kernel rejects is a finding; keep going
                run.row("fp8_linear", {"M": M, "N": N, "K": K, "proj": n, "input": "randn"},
                        error=f"{type(e).__name__}: {e}"[:300], suspect=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--device", default="cuda",
                   help="torch device; a CPU run must ask for it (--tiny --device cpu): without a GPU the default "
                        "is refused at once instead of building the full-width slice on the CPU")
    p.add_argument("--layers", type=int_at_least(2), default=4, help="decoder layers of the slice (1 dense + MoE)")
    p.add_argument("--batch", type=positive_int, default=4)
    p.add_argument("--context", type=positive_int, default=1024)
    p.add_argument("--s-q", default="1,4", type=positive_int_list, help="decode seqlen_q values (4 = MTP K=3 verification)")
    p.add_argument("--out", default=None, type=out_file)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    a = p.parse_args(argv)
    a.model_name = "v3-slice-tiny" if a.tiny else f"v3-slice-{a.layers}L"
    a.s_qs = list(a.s_q)
    return a


def summary(run: Run):
    print(f"\n=== v3_parity summary ({run.env['gpu']}, {run.env['commit']}, {time.perf_counter() - run.t0:.0f}s) ===")
    worst: dict[str, dict] = {}
    for r in run.rows:
        w = r["case"]["what"]
        key = "rel_err" if "rel_err" in r else None
        if w in ("fp8_linear", "mla_decode", "mla_prefill", "moe_experts", "layer") and key:
            val = r["update_rel_err"] if w == "layer" else r["rel_err"]
            if w not in worst or val > worst[w]["val"]:
                worst[w] = dict(val=val, case=r["case"], suspect=r.get("suspect"))
        elif w == "gate_topk":
            if w not in worst or r["ids_agree"] < worst[w]["val"]:
                worst[w] = dict(val=r["ids_agree"], case=r["case"], suspect=r.get("suspect"))
    for r in run.rows:
        if r["case"]["what"] in ("layer", "moe_experts"):
            c = r["case"]
            err = r.get("update_rel_err", r["rel_err"])
            print(f"{c['what']:<12} layer {c['layer']} {c.get('kind', ''):<5} s_q={c.get('s_q', '-')} T={c.get('T', '-')}: "
                  f"triton vs ref {err:.3e}   ref vs ref(input ±{PERTURB:g}) {r.get('ref_sensitivity_draws') or r['ref_sensitivity_rel']}"
                  f"  routes agree (triton, perturbed…) {r.get('route_agree_triton_then_perturbed')}  "
                  f"{'SUSPECT' if r['suspect'] else 'ok'}")
    for w, d in worst.items():
        metric = "ids_agree(min)" if w == "gate_topk" else ("update_rel(max)" if w == "layer" else "rel_err(max)")
        print(f"{w:<12} {metric:<16} {d['val']:.3e}  {'SUSPECT' if d['suspect'] else 'ok'}  {d['case']}")
    for r in run.rows:
        if r["case"]["what"] == "model":
            c = r["case"]
            print(f"model s_q={c['s_q']} {c['vs']:<22} vs ref_fp8act: cos_diff {r['logits_cos_diff']:.3e} "
                  f"argmax {r['argmax_agree']:.2f} hidden rel/layer {r['hidden_rel_err_per_layer']} "
                  f"routes {[round(x, 2) for x in r['route_agree_per_moe_layer']]}")
            if c["vs"] == "triton":
                print(f"   hidden RMS per layer (triton) {r['hidden_rms_per_layer']} (ref) {r['ref_hidden_rms_per_layer']}; "
                      f"embed RMS {r['embed_rms']}, logits RMS {r['logits_rms']}, mean top1-top2 gap {r['top2_gap_mean']}")


def main(argv=None):
    a = parse_args(argv)
    if a.device.startswith("cuda"):
        require_cuda("check_v3_parity")
    run = Run(a)
    model = build_slice(v3_config(a.layers, tiny=a.tiny), backend="triton", device=a.device, seed=a.seed)
    model.ops.fp8_activations = True  # affects the reference backend only
    max_tokens = a.batch * -(-(a.context + max(a.s_qs) + 8) // PAGE) * PAGE
    h = Harness(model, run.dev, max_tokens)
    cfg = model.cfg
    print(f"built {a.model_name}; softmax_scale {cfg.softmax_scale:.4f}", flush=True)
    with torch.inference_mode():
        # quick op-level checks first (they include the explicit shapes: fused 2112×7168, prefill at 128 heads)
        for fn in (lambda: check_fresh_linears(run, model, run.dev),
                   lambda: check_prefill(run, cfg, run.dev, (700, 324) if not a.tiny else (40, 24))):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - keep the rest of the diagnosis
                print(f"check FAILED: {type(e).__name__}: {e}", flush=True)
                run.row("error", {}, error=f"{type(e).__name__}: {e}"[:400])
        for s_q in a.s_qs:
            try:
                check_model(run, model, h, a.batch, a.context, s_q)
            except Exception as e:  # noqa: BLE001
                print(f"model check s_q={s_q} FAILED: {type(e).__name__}: {e}", flush=True)
                run.row("error", {"s_q": s_q}, error=f"{type(e).__name__}: {e}"[:400])
    summary(run)


if __name__ == "__main__":
    main()
