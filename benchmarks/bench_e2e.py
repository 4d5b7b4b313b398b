"""End-to-end benchmark suites ``e2e_decode``, ``e2e_prefill`` (issue 8) and ``mtp_e2e`` (issue 6).

    PYTHONPATH=. python benchmarks/bench_e2e.py [--suite e2e_decode,e2e_prefill,mtp_e2e,hf_peer,v2lite] [--out rows.jsonl]
        [--budget-s 240] [--tiny --device cpu --backend reference]   # --tiny: same code at small widths (CPU dev)

The model is a DeepSeek-V3-width slice (``benchmarks/v3_slice.py``: 4 layers = 1 dense + 3 MoE, plus
the MTP layer; random block-FP8 weights made on the device from a seed). The latent cache is filled
with random latents and each sequence's length is set directly (no prefill needed to reach a context);
block ids come from a shuffled free list, so pages are scattered as in a long-running server.

* ``e2e_decode`` — batch ∈ {1, 8, 32, 128} × context ∈ {1024, 4096}: one decode step = embed → 4
  layers → final norm → lm_head → argmax, captured as a CUDA graph (``tritonseek.engine.cuda_graph``,
  the engine's default on CUDA; ``--eager`` skips it). ``us`` = ``us_graph`` = median CUDA-event time
  of the bare graph replay; ``us_eager`` = the same step launched eagerly (median of
  ``triton.testing.do_bench``); ``us_engine`` = wall-clock median of ``ModelRunner.decode_step``
  (static-buffer fill from one pinned host buffer + replay + the tokens' ``.tolist()``); ``us_verify_graph``
  = {K+1: bare replay µs of the MTP verify step with K drafts} at batch ≤ --verify-max-batch;
  ``us_engine_eager`` = the eager engine step (``sample(decode(...))``: batch tensors from Python lists).
  Roofline = bytes the step must read / 4.27 TB/s: every attention linear (kv_b_proj at its FP8
  size), norms, the dense MLP, each MoE layer's router + shared expert + the routed experts actually
  hit (unique ``topk_ids`` of this step, counted in an untimed probe), lm_head, the B embedding rows
  and the KV cache (Σ (context+1)·576·2 B per layer). ``vs_roofline`` = us ÷ roofline_us (target ≤ 1.3
  at batch 1). ``us_61layer_est`` = us + 2·t_dense + 55·t_moe (each layer timed alone in the same
  step state as a CUDA-graph replay of one layer forward; eager ``do_bench`` if its capture fails). Peer in the same run: tritonseek's reference backend (same weights, same model object, the
  shared ``Ops`` switched) at batch 1 and 8; transformers' eager figures from issue 8 (8.2 ms / 18.1 ms,
  measured earlier on this H200, not in this run) are attached as ``transformers_issue_us``.
* ``e2e_prefill`` — one 4096-token prompt through ``ModelRunner.prefill`` (non-absorbed MLA prefill,
  latent-cache writes, MoE contiguous grouped GEMMs). FLOPs = 2·T·(linear weights a token touches:
  attention, dense MLP or top-k + shared experts) + causal attention 2·Σ L(L+1)/2·h·(192+128) per layer
  + the last token's lm_head. ``fp8_rate_frac`` = TFLOP/s ÷ 1138 (cuBLAS block-scaled FP8 on this H200,
  GPU.md); target ≥ 0.5. ``us`` is the eager prefill (what ``generate`` runs); ``us_graph`` the same
  prompt through ``PrefillGraphs`` (one CUDA-graph replay, MoE at its sync-free bound layout; host
  fill + upload included) with ``fp8_rate_frac_graph``, ``us_graph_replay`` the bare replay.
* ``mtp_e2e`` — see :func:`run_mtp_e2e`.
* ``e2e_generate`` — ``LLM.generate`` on the embedded default model, CUDA graphs vs ``enforce_eager``,
  without and with MTP (K = 3): decode µs/step and tokens/s of both, same-tokens flag
  (``benchmarks/e2e_peers.run_generate``).
* ``hf_peer`` — transformers' DeepseekV3ForCausalLM (attention eager, bf16, the slice's weights
  dequantized; ``benchmarks/e2e_peers.py``) at --hf-batches × --hf-contexts: its own ``e2e_decode`` rows
  (model ``transformers-v3-slice-4L``) and the peer of the matching tritonseek rows (targets ≥ 5× at
  batch 1, ≥ 4× at batch 8). Frees the slice's experts, so it runs after the other slice suites.
* ``v2lite`` — ``e2e_decode`` rows of a DeepSeek-V2-Lite-shaped random-FP8 model (27 layers, hidden
  2048, 16 heads, no q_lora, 64 experts top-6 softmax greedy, 2 shared) at --v2-batches × --v2-context,
  built after the slice is freed.

Device run (one call, ~3–4 min; ``--quick`` for ~2 min)::

    set -o pipefail; PYTHONUNBUFFERED=1 TRITONSEEK_COMMIT=<sha> PYTHONPATH=. timeout 290 \
        python benchmarks/bench_e2e.py --out $OUT/e2e_rows.jsonl --budget-s 230 2>&1 | tee $OUT/log.txt

If every triton ``e2e_decode`` case fails (the error text is kept in the error rows), the model falls
back to the reference backend for the rest of the run; every row carries ``backend``.

Every row is written to ``--out`` as soon as it is measured (a timeout keeps what was done), and a
short table is printed last. ``--budget-s`` skips the remaining (lower-priority) sections when the
script has run that long; skipped sections are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.mtp_e2e import run_mtp_e2e  # noqa: E402
from benchmarks.e2e_peers import run_generate, run_hf_peer, v2_lite_config  # noqa: E402
from benchmarks.e2e_harness import PAGE, Bench, SliceHarness, _r  # noqa: E402
from benchmarks.e2e_probes import kernel_shares, replay_us, sync_sites  # noqa: E402
from benchmarks.timing import graph_replay_us  # noqa: E402
from benchmarks.v3_slice import build_slice, expert_bytes, layer_static_bytes, linear_bytes, v3_config  # noqa: E402
from tritonseek.benchrun import (git_commit, int_at_least, name_list, nonnegative_int, out_file, require_cuda,  # noqa: E402
                                 positive_float, positive_int, positive_int_list)
from tritonseek.engine.runner import Sequence  # noqa: E402
from tritonseek.engine.sampling_params import SamplingParams  # noqa: E402
from tritonseek.model.moe import MoE  # noqa: E402

HBM_BPS = 4.27e12  # H200 device-to-device copy (GPU.md)
FP8_RATE_TFLOPS = 1138.0  # cuBLAS block-scaled FP8 8192³ on this H200 (GPU.md)
TRANSFORMERS_ISSUE_US = {1: 8200.0, 8: 18100.0}  # issue 8: transformers 5.17 eager bf16, same slice


def record_routing(model):
    """Wrap each MoE.route to keep this forward's topk_ids; returns (records list, undo)."""
    recs: list[tuple[int, torch.Tensor]] = []
    mods = [(i, l.mlp) for i, l in enumerate(model.model.layers) if isinstance(l.mlp, MoE)]
    for i, m in mods:
        orig = m.route

        def wrapped(x, *args, _orig=orig, _i=i, **kw):
            w, ids = _orig(x, *args, **kw)
            # routed experts only: a shared_slot route appends the shared expert (id E) as a last column
            recs.append((_i, ids[:, :-1] if kw.get("shared_slot") else ids))
            return w, ids

        m.route = wrapped

    def undo():
        for _, m in mods:
            del m.route

    return recs, undo


def static_decode_bytes(model) -> int:
    n = sum(layer_static_bytes(l) for l in model.model.layers)
    n += model.model.norm.weight.numel() * 4 + linear_bytes(model.lm_head)
    return n


def use_backend(model, name: str) -> str:
    """Switch the model's shared Ops to backend ``name``; returns the previous one."""
    prev = model.ops.backend
    model.ops.backend = name
    return prev


# ------------------------------------------------------------------------------------- e2e_decode
def run_layer(layer, state, pos, attn, cache):
    """One decoder layer on state = (x, residual); layers returning one tensor (no split residual) give (out, None)."""
    x, res = state
    out = layer(x, pos, attn, cache) if res is None else layer(x, pos, attn, cache, res)
    return out if isinstance(out, tuple) else (out, None)


def decode_case(b: Bench, h: SliceHarness, batch: int, context: int) -> dict:
    model, runner, cfg = h.model, h.runner, h.cfg
    seqs = h.seqs(batch, context, extra=8)  # room for verify steps of up to 7 tokens
    b.reset_peak()
    ids = torch.tensor([s.last_token for s in seqs], dtype=torch.int64, device=b.dev)
    pos = torch.full((batch,), context, dtype=torch.int64, device=b.dev)
    attn = runner.decode_batch(seqs, [context] * batch, 1)
    caches = h.cache.layers

    def step():  # the graph's step, launched eagerly: final add+norm fused, bf16 logits, Triton argmax
        _, normed = model.forward_normed(ids, pos, attn, caches)
        return model.ops.argmax(model.lm_head(normed))

    # untimed probe: layer inputs, routed experts hit, logits for the correctness check
    recs, undo = record_routing(model)
    with torch.inference_mode():
        xs = [(model.model.embed_tokens(ids), None)]  # (x, residual) entering each layer
        for i, layer in enumerate(model.model.layers):
            xs.append(run_layer(layer, xs[-1], pos, attn, caches[i]))
        x, res = xs[-1]
        logits = model.compute_logits(x if res is None else x + res)
    undo()
    finite = bool(torch.isfinite(logits).all())
    uniq = [int(torch.unique(ids_).numel()) for _, ids_ in recs]
    moe0 = next(l.mlp for l in model.model.layers if isinstance(l.mlp, MoE))
    kv_bytes = batch * (context + 1) * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2 * cfg.num_hidden_layers
    bytes_ = static_decode_bytes(model) + sum(uniq) * expert_bytes(moe0) + kv_bytes + batch * cfg.hidden_size * 2
    roof_us = bytes_ / HBM_BPS * 1e6

    us_eager = b.kernel_us(step)
    us_engine_eager = b.wall_us(lambda: h.eager_runner.sample(seqs, h.eager_runner.decode(seqs)),
                                reps=5 if b.cuda else 2)
    us_graph = us_engine = graph_err = None
    us_verify: dict[str, float] = {}
    audit = {}
    if b.cuda and not h.audited:  # once: which host syncs an eager step makes (the graph path must make none)
        h.audited = True
        # self-test: the detector must see a known sync, else an empty list means nothing
        audit["sync_detector_ok"] = bool(sync_sites(lambda: torch.ones(1, device=b.dev).sum().item()))
        audit["eager_step_syncs"] = sync_sites(step)
        audit["eager_engine_step_syncs"] = sync_sites(lambda: h.eager_runner.sample(seqs, h.eager_runner.decode(seqs)))
        try:
            audit["kernel_shares"] = kernel_shares(step)
            for e in audit["kernel_shares"]:
                print(f"    {e['kind']:6s} {e['share']*100:5.1f}% {e['us']:9.1f} us x{e['count']:<4} {e['name']}")
        except Exception as e:  # noqa: BLE001 - the profile is a diagnostic
            print(f"  kernel profile failed: {type(e).__name__}: {e}", flush=True)
        print(f"  sync detector self-test: {'ok' if audit['sync_detector_ok'] else 'FAILED (lists below mean nothing)'}")
        for k in ("eager_step_syncs", "eager_engine_step_syncs"):
            print(f"  {k}: {len(audit[k])}" + "".join(f"\n    {x}" for x in audit[k]), flush=True)
    layer_timer = "eager do_bench"
    t_dense = t_moe = None
    if h.graphs is not None:
        try:
            tok_eager = logits.argmax(-1)
            tok_graph, _ = h.graphs.step([s.seq_id for s in seqs], [s.last_token for s in seqs], [context] * batch)
            graph_agree = float((tok_graph == tok_eager).float().mean())
            us_graph = replay_us(h.graphs.graph(batch))
            if "eager_step_syncs" in audit:
                audit["graph_step_syncs"] = sync_sites(
                    lambda: h.graphs.step([s.seq_id for s in seqs], [s.last_token for s in seqs], [context] * batch))
                print(f"  graph_step_syncs: {audit['graph_step_syncs']}", flush=True)
                try:  # the same breakdown from one graph replay (CUPTI traces graph kernels too)
                    gk = kernel_shares(h.graphs.graph(batch).replay, top=40)
                    for e in gk[:-1]:
                        print(f"    graph {e['kind']:6s} {e['share']*100:5.1f}% {e['us']:9.1f} us x{e['count']:<4} {e['name']}")
                    audit["graph_kernel_shares"] = gk
                    audit["graph_kernel_total_us"] = gk[-1]["us"]
                    audit["graph_kernel_triton_share"] = gk[-1]["triton_share"]
                    print(f"  graph replay: kernels sum {gk[-1]['us']} us, triton share {gk[-1]['triton_share']}")
                except Exception as e:  # noqa: BLE001
                    print(f"  graph kernel profile failed: {type(e).__name__}: {e}", flush=True)
            us_engine = b.wall_us(lambda: runner.decode_step(seqs), reps=10)
            if batch <= b.args.verify_max_batch:  # MTP verify steps (K+1 tokens per sequence) as graph replays
                for k in b.args.verify_ks:
                    drafts = torch.randint(2, cfg.vocab_size, (batch, k + 1), device=b.dev)
                    h.graphs.step_tokens([s.seq_id for s in seqs], drafts, [context] * batch)
                    us_verify[str(k + 1)] = _r(replay_us(h.graphs.graph(batch, k + 1)))
            t_dense = graph_replay_us(lambda: run_layer(model.model.layers[0], xs[0], pos, attn, caches[0]))
            t_moe = graph_replay_us(lambda: run_layer(model.model.layers[1], xs[1], pos, attn, caches[1]))
            layer_timer = "graph replay"
        except Exception as e:  # noqa: BLE001 - keep the eager figures, report why graphs failed
            graph_err = f"{type(e).__name__}: {e}"[:400]
            print(f"  graph path failed at b={batch} ctx={context}: {graph_err}", flush=True)
    if t_dense is None:
        t_dense = b.kernel_us(lambda: run_layer(model.model.layers[0], xs[0], pos, attn, caches[0]))
        t_moe = b.kernel_us(lambda: run_layer(model.model.layers[1], xs[1], pos, attn, caches[1]))
    us = us_graph if us_graph is not None else us_eager
    peak = b.peak_gb()
    model.ops._dense.clear()  # reference backend only: its dense fp32 copies of the experts hit
    # 61-layer estimate: the slice has 1 dense + 3 MoE; DeepSeek-V3 has 3 dense + 58 MoE.
    n_moe = sum(isinstance(l.mlp, MoE) for l in model.model.layers)
    n_dense = cfg.num_hidden_layers - n_moe
    v3 = b.args.model_name.startswith("v3-slice")  # the 61-layer extrapolation is DeepSeek-V3's
    us61 = us + (3 - n_dense) * t_dense + (58 - n_moe) * t_moe if v3 else None
    per_moe_bytes = layer_static_bytes(model.model.layers[1]) + (sum(uniq) / max(len(uniq), 1)) * expert_bytes(moe0)
    kv_layer = kv_bytes / cfg.num_hidden_layers
    roof61 = None if not v3 else (bytes_ + (3 - n_dense) * (layer_static_bytes(model.model.layers[0]) + kv_layer)
              + (58 - n_moe) * (per_moe_bytes + kv_layer)) / HBM_BPS * 1e6

    h.release(seqs)
    row = b.row(
        "e2e_decode", {"model": b.args.model_name, "batch": batch, "context": context},
        us=_r(us), us_graph=_r(us_graph), us_eager=_r(us_eager), us_engine=_r(us_engine),
        us_engine_eager=_r(us_engine_eager), graph_error=graph_err, **audit,
        graph_argmax_agreement=graph_agree if us_graph is not None else None, layer_timer=layer_timer,
        us_verify_graph=us_verify or None,
        gbps=_r(bytes_ / us / 1e3, 1),
        tokens_per_s=_r(batch / us * 1e6, 1), vs_roofline=_r(us / roof_us, 3), roofline_us=_r(roof_us),
        roofline_bytes=int(bytes_), experts_hit=uniq, t_dense_layer_us=_r(t_dense), t_moe_layer_us=_r(t_moe),
        us_61layer_est=_r(us61), roofline_61layer_us=_r(roof61), peak_mem_gb=peak, logits_finite=finite,
        transformers_issue_us=TRANSFORMERS_ISSUE_US.get(batch) if b.args.model_name == "v3-slice-4L" else None,
        target_vs_roofline=1.3 if batch == 1 else None,
    )
    print(f"e2e_decode b={batch:<4} ctx={context:<5} {us/1e3:8.2f} ms  {row['tokens_per_s']:9.1f} tok/s  "
          f"roof {roof_us/1e3:6.2f} ms (x{row['vs_roofline']})  eager {us_eager/1e3:7.2f} ms  engine "
          f"{row['us_engine']} / eager {row['us_engine_eager']} us  verify {us_verify}  peak {peak} GB  experts {uniq}",
          flush=True)
    return row


def run_decode(b: Bench, h: SliceHarness):
    a = b.args
    for ctx in a.contexts:
        for bs in a.batches:
            if b.over_budget(f"e2e_decode b={bs} ctx={ctx}"):
                return
            try:
                decode_case(b, h, bs, ctx)
            except Exception as e:  # noqa: BLE001
                import traceback

                print(f"e2e_decode b={bs} ctx={ctx} FAILED: {type(e).__name__}: {e}", flush=True)
                traceback.print_exc(limit=-6)
                b.row("e2e_decode", {"model": a.model_name, "batch": bs, "context": ctx},
                      error=f"{type(e).__name__}: {e}"[:500])


def peer_case(b: Bench, h: SliceHarness, batch: int, context: int) -> None:
    """Time the reference backend on a measured e2e_decode case and add it to that row as the peer."""
    model, runner = h.model, h.runner
    row = b.find("e2e_decode", {"model": b.args.model_name, "batch": batch, "context": context})
    if row is None:
        return
    seqs = h.seqs(batch, context, extra=1)
    ids = torch.tensor([s.last_token for s in seqs], dtype=torch.int64, device=b.dev)
    pos = torch.full((batch,), context, dtype=torch.int64, device=b.dev)
    caches = h.cache.layers
    prev = model.ops.backend
    try:
        attn = runner.decode_batch(seqs, [context] * batch, 1)
        logits = model.compute_logits(model(ids, pos, attn, caches))
        use_backend(model, "reference")
        attn_ref = runner.decode_batch(seqs, [context] * batch, 1)
        lref = model.compute_logits(model(ids, pos, attn_ref, caches))
        x, y = lref.double(), logits.double()
        cos = float(1 - 2 * (x * y).sum() / (x * x + y * y).sum())
        agree = float((lref.argmax(-1) == logits.argmax(-1)).float().mean())
        peer_us = b.kernel_us(lambda: model.compute_logits(model(ids, pos, attn_ref, caches)).argmax(-1))
        row.update(peer="tritonseek reference backend (eager, same weights)", peer_us=_r(peer_us),
                   ratio_vs_peer=_r(peer_us / row["us"]), peer_logits_cos_diff=float(f"{cos:.3g}"),
                   peer_argmax_agreement=agree)
        b.flush()
        print(f"e2e_decode peer b={batch:<4} ctx={context:<5} reference {peer_us/1e3:8.2f} ms "
              f"(triton {row['ratio_vs_peer']}x faster)  logits cos diff {cos:.2e}  argmax agree {agree:.2f}", flush=True)
    except Exception as e:  # noqa: BLE001 - a failing peer is a finding, not a crash
        print(f"  reference peer failed at b={batch} ctx={context}: {type(e).__name__}: {e}", flush=True)
    finally:
        use_backend(model, prev)
        model.ops._dense.clear()  # the reference's dense fp32 copies of the experts it touched (tens of GB)
        h.release(seqs)
        if b.cuda:
            torch.cuda.empty_cache()


def run_decode_peers(b: Bench, h: SliceHarness):
    for ctx in b.args.contexts:
        for bs in b.args.peer_batches:
            row = b.find("e2e_decode", {"model": b.args.model_name, "batch": bs, "context": ctx})
            if row is None or row.get("peer_us") is not None:
                continue
            if b.over_budget(f"e2e_decode peer b={bs} ctx={ctx}"):
                return
            peer_case(b, h, bs, ctx)


# ------------------------------------------------------------------------------------ e2e_prefill
def prefill_flops(model, lens: list[int]) -> float:
    cfg = model.cfg
    T = sum(lens)
    macs_tok = 0
    for layer in model.model.layers:
        attn = layer.self_attn
        macs_tok += sum(m.in_features * m.out_features for m in attn.modules() if hasattr(m, "in_features"))
        if isinstance(layer.mlp, MoE):
            I, H = cfg.moe_intermediate_size, cfg.hidden_size
            macs_tok += 3 * H * I * (cfg.num_experts_per_tok + (cfg.n_shared_experts or 0))
        else:
            macs_tok += 3 * cfg.hidden_size * cfg.intermediate_size
    attn_flops = sum(L * (L + 1) / 2 for L in lens) * cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim) * 2
    return 2.0 * T * macs_tok + attn_flops * cfg.num_hidden_layers + 2.0 * len(lens) * cfg.hidden_size * cfg.vocab_size


def run_prefill(b: Bench, h: SliceHarness):
    for tokens in b.args.prefill_tokens:
        if b.over_budget(f"e2e_prefill {tokens}"):
            return
        g = torch.Generator().manual_seed(tokens)
        s = Sequence(10**6 + tokens, "", torch.randint(2, h.cfg.vocab_size, (tokens,), generator=g).tolist(),
                     SamplingParams(), None)
        try:
            b.reset_peak()
            with torch.inference_mode():
                logits = h.runner.prefill([s])[0]
            finite = bool(torch.isfinite(logits).all())
            us = b.kernel_us(lambda: h.runner.prefill([s])) if b.cuda else b.wall_us(lambda: h.runner.prefill([s]), 1, 0)
            fl = prefill_flops(h.model, [tokens])
            tf = fl / us / 1e6
            graph = prefill_graph_case(b, h, s, logits) if b.cuda and h.model.ops.is_triton else {}
            row = b.row("e2e_prefill", {"model": b.args.model_name, "tokens": tokens}, us=_r(us), tflops=_r(tf, 1),
                        tokens_per_s=_r(tokens / us * 1e6, 1), fp8_rate_frac=_r(tf / FP8_RATE_TFLOPS, 3),
                        target_fp8_rate_frac=0.5, flops=fl, peak_mem_gb=b.peak_gb(), logits_finite=finite,
                        peer="none in this run (reference prefill would densify all 256 experts × 3 layers in fp32)",
                        **graph)
            if graph.get("us_graph"):
                row["fp8_rate_frac_graph"] = _r(fl / graph["us_graph"] / 1e6 / FP8_RATE_TFLOPS, 3)
                b.flush()
            print(f"e2e_prefill T={tokens} {us/1e3:8.2f} ms {row['tokens_per_s']:10.1f} tok/s {tf:7.1f} TFLOP/s "
                  f"({row['fp8_rate_frac']} of FP8 rate) peak {row['peak_mem_gb']} GB  graph {graph}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"e2e_prefill T={tokens} FAILED: {type(e).__name__}: {e}", flush=True)
            b.row("e2e_prefill", {"model": b.args.model_name, "tokens": tokens}, error=f"{type(e).__name__}: {e}"[:500])
        finally:
            h.cache.release(s.seq_id)


def prefill_graph_case(b: Bench, h: SliceHarness, s: Sequence, eager_logits) -> dict:
    """The same prefill through ``PrefillGraphs`` (one bucket of exactly the prompt's tokens): ``us_graph`` =
    do_bench of ``ModelRunner.prefill`` (host fill + one upload + replay), ``us_graph_replay`` = the bare
    replay, logits vs the eager ones. Errors are kept in the row (the eager figure stands)."""
    from tritonseek.engine.cuda_graph import PrefillGraphs
    from tritonseek.engine.runner import ModelRunner

    n = len(s.prompt_ids)
    pg = None
    try:
        pg = PrefillGraphs(h.model, h.cache, buckets=(n,), max_seqs=1)
        runner = ModelRunner(h.model, h.cache, b.dev, prefill_graphs=pg)
        lg = runner.prefill([s])[0]
        rel = float((lg - eager_logits).norm() / eager_logits.norm())
        same = bool((lg.argmax(-1) == eager_logits.argmax(-1)).all())
        us_g = b.kernel_us(lambda: runner.prefill([s]))
        us_r = b.kernel_us(pg._graphs[n][0].replay)
        return dict(us_graph=_r(us_g), us_graph_replay=_r(us_r), graph_logits_rel_diff=float(f"{rel:.3g}"),
                    graph_same_argmax=same, graph_capture_s=_r(pg.capture_s), peak_mem_gb_graph=b.peak_gb())
    except Exception as e:  # noqa: BLE001 - the graph path is a finding, not a crash
        return dict(graph_error=f"{type(e).__name__}: {e}"[:400])
    finally:
        if pg is not None:
            pg.close()
        if b.cuda:
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ main
SUITES = ("e2e_decode", "e2e_prefill", "mtp_e2e", "e2e_generate", "hf_peer", "v2lite")


def _ints(text: str) -> list[int]:
    """A comma list of integers >= 1 (a list: the suites concatenate them with lists)."""
    return list(positive_int_list(text))


def _ints_or_none(text: str) -> list[int]:
    """_ints, or an empty list for "" (options whose section is skipped when empty, e.g. --peer-batches "")."""
    return _ints(text) if text.strip() else []


def parse_args(argv=None):
    """Every option checked by argparse (session 18: --out in a missing folder failed after the slice was built and
    measured, --budget-s nan never stopped, --layers 1 / --batches 0 / a bogus --suite reached the GPU code or ran
    nothing): a bad value is one line naming the option, exit 2, before any GPU work."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default=list(SUITES), type=name_list(SUITES), help="comma list of " + ", ".join(SUITES))
    p.add_argument("--tiny", action="store_true", help="small widths (CPU development of the same code)")
    p.add_argument("--device", default="cuda",
                   help="torch device; a CPU run must ask for it (--tiny --device cpu): without a GPU the default "
                        "is refused at once instead of building the full-width slice on the CPU")
    p.add_argument("--backend", default=None, choices=("triton", "reference"), help="default: triton on CUDA")
    p.add_argument("--layers", type=int_at_least(2), default=4, help="decoder layers of the slice (1 dense + MoE)")
    p.add_argument("--batches", default="1,8,32,128", type=_ints)
    p.add_argument("--contexts", default="1024,4096", type=_ints)
    p.add_argument("--peer-batches", default="1,8", type=_ints_or_none, help="'' for no reference-backend peer")
    p.add_argument("--prefill-tokens", default="4096", type=_ints)
    p.add_argument("--mtp-batches", default="1,16,64", type=_ints)
    p.add_argument("--mtp-context", type=positive_int, default=1024)
    p.add_argument("--mtp-ks", default="1,3", type=_ints)
    p.add_argument("--no-default-model", action="store_true", help="mtp_e2e: skip the trained default model")
    p.add_argument("--dm-batches", default="1,16", type=_ints_or_none, help="mtp_e2e: default-model generate batch sizes")
    p.add_argument("--dm-tokens", type=positive_int, default=128, help="mtp_e2e: default-model max_new_tokens")
    p.add_argument("--no-slice-direct", action="store_true", help="mtp_e2e: skip the engine-pieces run on the slice")
    p.add_argument("--quick", action="store_true",
                   help="short device run: context 4096 only, peer at batch 1, default model at batch 1 "
                        "(64 tokens), no slice-direct MTP run")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--no-fallback", action="store_true",
                   help="e2e_decode: when every triton case fails, do not rerun the cases on the reference backend")
    p.add_argument("--eager", action="store_true", help="e2e_decode: no CUDA graphs (eager step only)")
    p.add_argument("--verify-ks", default="1,3", type=_ints_or_none,
                   help="e2e_decode: MTP verify graphs (K+1 tokens) timed at these K ('' for none)")
    p.add_argument("--verify-max-batch", type=nonnegative_int, default=8, help="e2e_decode: largest batch timing verify graphs")
    p.add_argument("--gen-batches", default="1,16", type=_ints_or_none, help="e2e_generate: default-model generate batch sizes")
    p.add_argument("--gen-tokens", type=positive_int, default=128, help="e2e_generate: max_new_tokens")
    p.add_argument("--hf-batches", default="1,8", type=_ints_or_none, help="hf_peer suite: transformers eager bf16 batch sizes")
    p.add_argument("--hf-contexts", default="1024", type=_ints_or_none,
                   help="hf_peer suite: contexts (prefilled through transformers)")
    p.add_argument("--v2-batches", default="1,4,16,64", type=_ints, help="v2lite suite: batch sizes")
    p.add_argument("--v2-context", type=positive_int, default=1024, help="v2lite suite: context")
    p.add_argument("--out", default=None, type=out_file, help="JSON-lines file, rewritten (atomically) after each row")
    p.add_argument("--budget-s", type=positive_float, default=240.0)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--commit", default=None, help="commit the rows carry (default: TRITONSEEK_COMMIT, else git HEAD)")
    a = p.parse_args(argv)
    a.commit = a.commit or git_commit()
    if a.quick:
        a.contexts, a.peer_batches, a.dm_batches, a.dm_tokens, a.no_slice_direct = [4096], [1], [1], 64, True
    a.suites = a.suite
    a.backend = a.backend or ("triton" if a.device.startswith("cuda") else "reference")
    a.model_name = "v3-slice-tiny" if a.tiny else f"v3-slice-{a.layers}L"
    return a


def pages(batch: int, tokens: int) -> int:
    """Cache tokens ``batch`` sequences of ``tokens`` take (each rounds up to whole pages)."""
    return batch * -(-tokens // PAGE) * PAGE


def run_v2lite(b: Bench) -> None:
    """``e2e_decode`` rows of a DeepSeek-V2-Lite-shaped model (27 layers, random FP8) at --v2-batches × --v2-context."""
    a = b.args
    t = time.perf_counter()
    model = build_slice(v2_lite_config(3 if a.tiny else 27, tiny=a.tiny), backend=a.backend, device=a.device, seed=a.seed)
    b.sync()
    b.model = model
    a.model_name = "v2-lite-tiny" if a.tiny else "v2-lite-27L"
    print(f"built {a.model_name} ({a.backend}) in {time.perf_counter() - t:.1f}s; "
          f"{sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9:.2f} GB of weights", flush=True)
    h = SliceHarness(b, model, pages(max(a.v2_batches), a.v2_context + 8), max_context=a.v2_context,
                     max_batch=max(a.v2_batches))
    a.batches, a.contexts = a.v2_batches, [a.v2_context]
    run_decode(b, h)


def main(argv=None):
    a = parse_args(argv)
    if a.device.startswith("cuda"):
        require_cuda("bench_e2e")
    b = Bench(a)
    torch.manual_seed(a.seed)
    t = time.perf_counter()
    model = build_slice(v3_config(a.layers, tiny=a.tiny), backend=a.backend, device=a.device, seed=a.seed)
    b.sync()
    b.model = model
    print(f"built {a.model_name} ({a.backend}) in {time.perf_counter() - t:.1f}s; "
          f"{sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9:.2f} GB of weights; "
          f"peak {b.peak_gb()} GB", flush=True)
    max_tokens = max(pages(max(a.batches), max(a.contexts) + 8), pages(max(a.mtp_batches), a.mtp_context + 8),
                     pages(1, max(a.prefill_tokens) + 8))
    h = SliceHarness(b, model, max_tokens, max_context=max(a.contexts + [a.mtp_context]),
                     max_batch=max(a.batches) if "e2e_decode" in a.suites else 0)
    with torch.inference_mode():
        if "e2e_decode" in a.suites:
            run_decode(b, h)
            if (not any(r["suite"] == "e2e_decode" and not r.get("error") for r in b.rows) and model.ops.is_triton
                    and not a.no_fallback):
                # the triton backend failed at these widths: keep the run useful with the reference backend
                print("e2e_decode: every triton case failed; falling back to the reference backend", flush=True)
                use_backend(model, "reference")
                a.batches, a.no_peer = a.peer_batches, True
                run_decode(b, h)
            if not a.no_peer and a.peer_batches:  # early correctness check at real shapes: triton vs reference
                peer_case(b, h, a.peer_batches[0], a.contexts[0])
        if "mtp_e2e" in a.suites:
            run_mtp_e2e(b, h)
        if "e2e_prefill" in a.suites:
            run_prefill(b, h)
        if "e2e_decode" in a.suites and not a.no_peer:
            run_decode_peers(b, h)
        if "e2e_generate" in a.suites:
            run_generate(b, a.gen_batches, a.gen_tokens)
        if "hf_peer" in a.suites and not b.over_budget("transformers peer"):
            run_hf_peer(b, h, a.hf_batches, a.hf_contexts)  # frees the slice's experts: last use of the slice
        if "v2lite" in a.suites and not b.over_budget("v2-lite"):
            h.close()
            del h, model
            b.model = None
            if b.cuda:
                torch.cuda.empty_cache()
            run_v2lite(b)
    print_table(b)


def print_table(b: Bench):
    print("\n=== summary (%s, %s, %.0fs) ===" % (b.env["gpu"], b.env["commit"], b.elapsed()))
    for r in b.rows:
        c = r["case"]
        if r.get("error"):
            print(f"{r['suite']:12s} {c} ERROR {r['error'][:120]}")
        elif r["suite"] == "e2e_decode":
            g = "graph" if r.get("us_graph") is not None else "eager"
            if r["backend"] == "transformers":
                print(f"e2e_decode  [transformers] b={c['batch']:<4} ctx={c['context']:<5} {r['us']/1e3:8.2f} ms "
                      f"(tritonseek {r.get('tritonseek_speedup')}x faster)")
                continue
            print(f"e2e_decode  [{r['backend']}/{g}] b={c['batch']:<4} ctx={c['context']:<5} {r['us']/1e3:8.2f} ms "
                  f"(eager {r.get('us_eager', 0)/1e3:.2f}) {r['tokens_per_s']:9.1f} tok/s  x{r['vs_roofline']} roofline  "
                  f"61L~{r['us_61layer_est']/1e3 if r.get('us_61layer_est') else float('nan'):.1f} ms  engine {r.get('us_engine')} us  peer {r['peer_us']} "
                  f"({r['ratio_vs_peer']}x)")
        elif r["suite"] == "e2e_prefill":
            print(f"e2e_prefill T={c['tokens']} {r['us']/1e3:8.2f} ms {r['tokens_per_s']:9.1f} tok/s {r['tflops']} TFLOP/s")
        elif r["suite"] == "e2e_generate":
            print(f"e2e_generate b={c['batch']:<3} mtp={c['mtp']} graphs {r['us']:8.1f} us/step {r['tokens_per_s']:9.1f} tok/s "
                  f"eager {r['us_eager']:8.1f} us/step ({r['speedup_vs_eager']}x)  same tokens {r['same_tokens']}")
        elif r["suite"] == "mtp_e2e":
            print(f"mtp_e2e [{r['backend']}] {c['model']:<16} b={c['batch']:<3} k={c['k']} a={c['acceptance']:<6} "
                  f"tok/step {r.get('tokens_per_step')}  speedup {r.get('speedup')}"
                  + (f" (at copy rate {r['speedup_at_copy_rate']})" if "speedup_at_copy_rate" in r else "")
                  + f"  {r.get('note', '')[:60]}")
    if b.skipped:
        print("skipped (budget):", "; ".join(b.skipped))


if __name__ == "__main__":
    main()
