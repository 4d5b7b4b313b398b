"""Benchmark suite ``mtp_e2e`` (issue 6): what MTP speculative decoding buys end to end.

Run through ``benchmarks/bench_e2e.py --suite mtp_e2e`` (or ``bench_mtp.py --suite mtp_e2e``). Three
measurements, each reported per batch size and K:

1. **61-layer DeepSeek-V3, composed from measured parts** (case model ``deepseek-v3-61L``; ``v3-tiny-61L`` when
   the slice has ``--tiny`` widths, whose bytes and times say nothing about V3). On the
   V3-width slice, at batch B ∈ {1, 16, 64} and context 1024 (random latents), time (median CUDA-graph
   replay of each part, benchmarks/timing.py — what a graph-captured step pays; eager ``do_bench`` too,
   as ``parts_us_eager`` / ``speedup_eager``) with seqlen_q = 1 (plain decode) and seqlen_q = K+1
   (verification, bottom-right causal):
   one dense layer, one MoE layer, embed + final norm + lm_head + argmax, and the MTP draft step
   (enorm/hnorm + eh_proj + its MoE block + shared_head.norm + head + argmax; both heads' logits in bf16 and the
   Triton argmax, as the decode graph and ``greedy_draft_tokens`` run them). Then
   t_decode = 3·dense(1) + 58·moe(1) + head(1), t_verify = 3·dense(K+1) + 58·moe(K+1) + head(K+1),
   speedup = E[tokens/step] ÷ ((t_verify + K·t_draft(1)) / t_decode) with
   E = (1 − a^{K+1}) / (1 − a) for per-draft acceptance a — at a = 0.85 (DeepSeek's figure) and at
   the acceptances of the trained default model (its model card: 0.675 at K=1, 0.4535 at K=3, and the
   one measured by ``generate`` in this run, largest batch). ``speedup_engine_schedule`` uses what the engine
   actually runs per step: K−1 draft steps at seqlen 1 plus one MTP pass at seqlen K+1
   (``MTPDrafter.mtp_pass``) instead of K draft steps. Target: ≥ 1.8× at batch 1, a = 0.85.
   ``speedup_at_copy_rate``: the same speedup if every step ran at its byte floor (:func:`speedup_at_copy_rate`:
   bytes ÷ 4.27 TB/s; random routing, so a verify step of B·(K+1) tokens reads
   E·(1 − (1 − top_k/E)^{B(K+1)}) routed experts per MoE layer where a plain step reads E·(1 − (1 − top_k/E)^B)),
   with those floors (``copy_rate_floor_us``) and expert counts (``copy_rate_experts_per_moe_layer``). It is
   no upper bound: a measured speedup above it (8 of 12 61-layer rows at c3fabee) means the plain step runs
   further from its floor than the verify step does. Rows committed before this name carry the same three
   figures as ``speedup_ceiling_copy_rate``, ``ceiling_floor_us`` and ``ceiling_experts_per_moe_layer``.

Every row has ``dry``: true for a smoke run (``--tiny`` widths or no CUDA device; ``bench_mtp.py --dry``), whose
figures are no measurement of the model named.
2. **The 4-layer slice, directly** (``v3-slice-4L``), with the engine's own pieces
   (``MTPDrafter.draft`` → ``verify`` → ``mtp_pass``, host syncs included) against ``ModelRunner.decode``
   + ``sample``, wall clock. Random weights accept almost nothing, so two rows: the acceptance
   measured (≈ 0, honest) and an **oracle upper bound** (acceptance 1.0: the same measured step cost with
   tokens/step set to K+1, as if every draft were accepted — the verification cost does not depend on
   the outcome). A 4-layer model overstates the draft's share (the 1.85 GB head is read by every step).
3. **The trained default model** (``tritonseek-tiny``): ``LLM().generate`` greedy, ``ignore_eos``, with
   ``mtp=K`` vs without, decode tokens/s (first token excluded), its measured acceptance and
   tokens/step; the greedy outputs must be identical (``same_tokens``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import graph_replay_us  # noqa: E402
from tritonseek.engine.speculative import MTPDrafter, greedy_draft_tokens  # noqa: E402

DEEPSEEK_ACCEPTANCE = 0.85
V3_DENSE, V3_MOE = 3, 58  # DeepSeek-V3: first_k_dense_replace = 3 of 61 layers
CARD = Path(__file__).resolve().parent.parent / "tritonseek" / "data" / "default_model" / "tritonseek_model.json"
PROMPTS = [
    "def fibonacci(n):\n", "import os\nimport sys\n\n\ndef main():\n", "class Stack:\n    def __init__(self):\n",
    "for i in range(10):\n", "    def __repr__(self):\n        return", "# Copyright 2001 Python Software Foundation\n",
    "try:\n    import json\nexcept ImportError:\n", "def read_file(path):\n    with open(path) as f:\n",
]


def expected_tokens(a: float, k: int) -> float:
    """E[tokens per step] with per-draft acceptance a (i.i.d.): 1 + a + … + a^k."""
    return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def distinct_experts(n_tokens: int, n_routed: int, top_k: int) -> float:
    """E[routed experts hit] by n_tokens tokens each picking top_k of n_routed uniformly at random (independent
    tokens): n_routed·(1 − (1 − top_k/n_routed)^n_tokens)."""
    return n_routed * (1.0 - (1.0 - top_k / n_routed) ** n_tokens)


def floor_bytes(model, context: int) -> dict:
    """Byte counts of the parts :func:`speedup_at_copy_rate` composes, read off the model's own modules (stored
    dtypes, FP8 scales included): a dense layer's and a MoE layer's routing-independent bytes (attention linears,
    norms, dense MLP or router + shared expert), one routed expert, final norm + lm_head, the MTP draft step's
    routing-independent bytes (enorm/hnorm/eh_proj, its block, shared_head.norm + the shared head), the latent
    cache row of one token in one layer, the context, and the routing (n_routed, top_k)."""
    from benchmarks.v3_slice import expert_bytes, layer_static_bytes, linear_bytes
    from tritonseek.model.layers import Linear, RMSNorm
    from tritonseek.model.moe import MoE

    layers, cfg, mtp = model.model.layers, model.cfg, model.mtp[0]
    dense = next(l for l in layers if not isinstance(l.mlp, MoE))
    moe = next(l for l in layers if isinstance(l.mlp, MoE))
    head = model.model.norm.weight.numel() * model.model.norm.weight.element_size() + linear_bytes(model.lm_head)
    draft = layer_static_bytes(mtp.block)
    for name, mod in mtp.named_modules():
        if not name.startswith("block"):
            if isinstance(mod, Linear):
                draft += linear_bytes(mod)
            elif isinstance(mod, RMSNorm):
                draft += mod.weight.numel() * mod.weight.element_size()
    return dict(dense_static=layer_static_bytes(dense), moe_static=layer_static_bytes(moe), expert=expert_bytes(moe.mlp),
                head=head, draft_static=draft, kv_token_layer=(cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2,
                context=context, n_routed=cfg.n_routed_experts, top_k=cfg.num_experts_per_tok)


def speedup_at_copy_rate(nb: dict, batch: int, k: int, acceptance: float, n_dense: int = V3_DENSE, n_moe: int = V3_MOE,
                    copy_bps: float = 4.27e12) -> dict:
    """The composition's speedup with every step at its byte floor (t = bytes / copy_bps, H200 copy rate).

    With D(n) = distinct_experts(n) and kv(s) = batch·(context + s)·kv_token_layer (latent cache read per layer):
    decode = n_dense·(dense + kv(1)) + n_moe·(moe + D(B)·expert + kv(1)) + head;
    verify = the same with D(B·(K+1)) and kv(K+1); draft = draft_static (its head included) + D(B)·expert + kv(1);
    speedup = E[tokens/step](a, K) · t_decode / (t_verify + K·t_draft)  (the composition's formula).
    nb: :func:`floor_bytes`. Returns that speedup, the three floors (µs) and the expert counts. Not an upper
    bound on the measured speedup (the plain step may run further from its floor than the verify step).
    """
    def kv(s):
        return batch * (nb["context"] + s) * nb["kv_token_layer"]

    def step(n_tok, s):
        d = distinct_experts(n_tok, nb["n_routed"], nb["top_k"])
        return (n_dense * (nb["dense_static"] + kv(s)) + n_moe * (nb["moe_static"] + d * nb["expert"] + kv(s))
                + nb["head"]) / copy_bps * 1e6, d

    t_dec, d_dec = step(batch, 1)
    t_ver, d_ver = step(batch * (k + 1), k + 1)
    t_draft = (nb["draft_static"] + d_dec * nb["expert"] + kv(1)) / copy_bps * 1e6
    speedup = expected_tokens(acceptance, k) * t_dec / (t_ver + k * t_draft)
    return dict(speedup_at_copy_rate=round(speedup, 3),
                copy_rate_floor_us={"decode": round(t_dec, 1), "verify": round(t_ver, 1), "draft": round(t_draft, 1)},
                copy_rate_experts_per_moe_layer={"decode": round(d_dec, 2), "verify": round(d_ver, 2)})


def card_acceptance() -> dict[int, float]:
    info = json.loads(CARD.read_text()) if CARD.is_file() else {}
    return {k: info[f"mtp_acceptance_k{k}"] for k in (1, 2, 3, 4) if f"mtp_acceptance_k{k}" in info}


def time_parts(b, h, batch: int, context: int, s_qs: list[int]) -> tuple[dict, dict, str | None]:
    """µs of dense layer / MoE layer / head / MTP draft step at each seqlen_q.

    Returns (parts, parts_eager, graph_error): ``parts`` are CUDA-graph replay times
    (benchmarks/timing.py; what a graph-captured decode step pays) where every part could be
    captured, else the eager ``do_bench`` times; ``parts_eager`` always the eager ones.
    """
    model, cfg = h.model, h.cfg
    layers, caches, mtp = model.model.layers, h.cache.layers, model.mtp[0]
    mtp_cache = caches[cfg.num_hidden_layers]
    seqs = h.seqs(batch, context, extra=max(s_qs))
    gen = torch.Generator(device=b.dev).manual_seed(batch)
    out, out_eager = {}, {}
    graph_err = None if (b.cuda and model.ops.is_triton) else "not CUDA/triton"

    def t(fn) -> tuple[float, float | None]:
        nonlocal graph_err
        us = b.kernel_us(fn)
        ug = None
        if graph_err is None:
            try:
                ug = graph_replay_us(fn)
            except Exception as e:  # noqa: BLE001 - a part that cannot be captured: eager figures for all
                graph_err = f"{type(e).__name__}: {e}"[:300]
                print(f"  graph capture failed (eager parts used): {graph_err}", flush=True)
        model.ops._dense.clear()  # reference backend: its fp32 expert copies would not fit for every part
        return us, ug

    try:
        for s_q in s_qs:
            attn = h.runner.decode_batch(seqs, [context] * batch, s_q)
            T = batch * s_q
            x = torch.randn(T, cfg.hidden_size, generator=gen, device=b.dev).to(model.dtype)
            ids = torch.randint(2, cfg.vocab_size, (T,), generator=gen, device=b.dev)
            pos = (context + torch.arange(s_q, device=b.dev)).repeat(batch)
            res = dict(
                dense=t(lambda: layers[0](x, pos, attn, caches[0])),
                moe=t(lambda: layers[1](x, pos, attn, caches[1])),
                # as the decode graph runs them: bf16 logits (no fp32 copy) and the Triton argmax
                head=t(lambda: (model.model.embed_tokens(ids), model.ops.argmax(model.compute_logits(x, dtype=None)))),
                draft=t(lambda: greedy_draft_tokens(mtp, model.ops, mtp(ids, x, pos, attn, mtp_cache))),
            )
            out_eager[s_q] = {k: v[0] for k, v in res.items()}
            out[s_q] = {k: (v[1] if v[1] is not None else v[0]) for k, v in res.items()}
            print(f"mtp parts b={batch:<3} s_q={s_q}: " + "  ".join(
                f"{k} {v[0]:8.1f}us eager / {v[1] or float('nan'):8.1f}us graph" for k, v in res.items()), flush=True)
    finally:
        h.release(seqs)
    if graph_err is not None:
        out = out_eager
    return out, out_eager, graph_err


def slice_direct(b, h, batch: int, context: int, k: int) -> dict:
    """Engine pieces on the slice: plain decode+sample vs draft → verify → MTP pass (wall µs)."""
    model, cfg, runner = h.model, h.cfg, h.runner
    seqs = h.seqs(batch, context, extra=k + 1)
    try:
        drafter = MTPDrafter(runner, k)
        gen = torch.Generator(device=b.dev).manual_seed(7 + batch)
        h_last = torch.randn(batch, cfg.hidden_size, generator=gen, device=b.dev).to(model.dtype)
        first = torch.randint(2, cfg.vocab_size, (batch,), generator=gen, device=b.dev)
        reps = 5 if b.cuda else 1
        t_plain = b.wall_us(lambda: runner.sample(seqs, runner.decode(seqs)), reps=reps, warmup=1)
        accs: list[int] = []

        def step():
            starts = [s.num_tokens - 1 for s in seqs]
            drafts = drafter.draft(seqs, h_last, first, k)
            out, num_acc, th = drafter.verify(seqs, drafts)
            out.tolist()
            accs.extend(num_acc.tolist())
            drafter.mtp_pass(seqs, starts, out, num_acc, th)

        t_mtp = b.wall_us(step, reps=reps, warmup=1)
        return dict(t_plain=t_plain, t_mtp=t_mtp, acceptance=statistics.mean(accs) / k)
    finally:
        h.release(seqs)


def divergence(llm, outs, base_outs) -> list[dict]:
    """Where greedy outputs differ: per differing sequence the first differing position, and the
    teacher-forced logit margin there (``LLM.score`` on the common prefix) between the two tokens and
    between the top two. A margin near 0 is a near-tie that kernel rounding may flip; a large one is a bug."""
    info = []
    for i, (o, ob) in enumerate(zip(outs, base_outs)):
        a, c = ob.token_ids, o.token_ids
        if a == c:
            continue
        d = next((j for j in range(min(len(a), len(c))) if a[j] != c[j]), min(len(a), len(c)))
        row = dict(seq=i, pos=d)
        if d < min(len(a), len(c)):
            lg = llm.score(list(ob.prompt_token_ids) + a[:d])[-1].float()
            top2 = lg.topk(2).values
            row.update(margin=round(float(lg[a[d]] - lg[c[d]]), 4), top2_gap=round(float(top2[0] - top2[1]), 4))
        info.append(row)
    return info


class _PhaseTimer:
    """Wraps an MTPDrafter class so draft / verify / mtp_pass are timed (synchronised: profiling only)."""

    def __init__(self, base):
        timer = self
        self.t = {"draft": 0.0, "verify": 0.0, "mtp_pass": 0.0}

        class Timed(base):
            pass

        for name in self.t:
            orig = getattr(base, name)

            def wrapped(self_, *a, _orig=orig, _name=name, **kw):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                r = _orig(self_, *a, **kw)
                torch.cuda.synchronize()
                timer.t[_name] += time.perf_counter() - t0
                return r

            setattr(Timed, name, wrapped)
        self.cls = Timed


def default_model(b, batches: list[int], ks: list[int], max_new: int, res: dict | None = None) -> dict:
    """LLM().generate on the embedded trained model with mtp=K vs without → {(batch, k, variant): stats}.

    Variants on CUDA: ``graph_step`` (the engine default: ``LLM.graph_step = True``, each greedy MTP step one
    (bucket, K) graph replay and one device→host copy, engine/mtp_step.py) and ``graph_verify``
    (``graph_step = False``: verify forwards and the drafter's MTP forwards replay separate graphs, with eager
    verification and host syncs between them); ``eager_verify`` (no MTP graphs; 0.014–0.035× plain at c3fabee)
    runs on CPU only. The plain baseline
    is the engine default (CUDA-graph decode on CUDA). Greedy outputs must be identical; where they are
    not, :func:`divergence` says where and by what logit margin.
    """
    from tritonseek.engine import llm as llm_mod
    from tritonseek.engine.llm import LLM
    from tritonseek.engine.sampling_params import SamplingParams

    with torch.inference_mode(False):  # built as a user builds it (bench_e2e runs the suites in inference mode;
        llm = LLM(device=b.dev, backend=b.args.backend)  # building it there failed on the H200 at 86da816)
    variants = ["graph_step", "graph_verify"] if b.cuda else ["eager_verify"]
    sp = SamplingParams(max_new_tokens=max_new, ignore_eos=True)
    res = {} if res is None else res  # filled as cases finish (a caller may keep it if interrupted)
    for batch in batches:
        prompts = (PROMPTS * (batch // len(PROMPTS) + 1))[:batch]
        base_outs = None
        for k, variant in [(0, "plain")] + [(k, v) for v in variants for k in ks]:
            if b.over_budget(f"default model b={batch} k={k} {variant}"):
                continue
            llm.graph_verify = variant in ("graph_step", "graph_verify")
            llm.graph_step = variant == "graph_step"
            try:
                llm.generate(prompts, sp, mtp=k)  # compile / warm / capture
                best = None
                for _ in range(2 if b.cuda else 1):
                    outs = llm.generate(prompts, sp, mtp=k)
                    st = llm.last_stats
                    tps = (st.new_tokens - batch) / st.decode_s if st.decode_s > 0 else 0.0
                    if best is None or tps > best["tps"]:
                        best = dict(tps=tps, acceptance=st.extra.get("acceptance"),
                                    tokens_per_step=st.extra.get("tokens_per_step"), steps=st.decode_steps,
                                    graph_steps=st.extra.get("graph_steps"),
                                    step_ms=round(st.decode_s / max(st.decode_steps, 1) * 1e3, 4))
            except Exception as e:  # noqa: BLE001 - a failing variant is a finding
                print(f"default model b={batch} mtp={k} {variant} FAILED: {type(e).__name__}: {e}", flush=True)
                continue
            if k == 0:
                base_outs = outs
            best["same_tokens"] = [o.token_ids for o in outs] == [o.token_ids for o in base_outs]
            if not best["same_tokens"]:
                best["divergence"] = divergence(llm, outs, base_outs)
            if k and b.cuda and batch == batches[0] and variant != "graph_step":
                # where an MTP step's time goes (synchronised phases; one extra run, not the timed one; a
                # graph_step step has no phases: benchmarks/profile_mtp_step.py splits it into GPU and host time)
                pt = _PhaseTimer(llm_mod.MTPDrafter)
                orig_cls, llm_mod.MTPDrafter = llm_mod.MTPDrafter, pt.cls
                try:
                    llm.generate(prompts, sp, mtp=k)
                    st = llm.last_stats
                finally:
                    llm_mod.MTPDrafter = orig_cls
                n = max(st.decode_steps, 1)
                best["phase_ms_per_step"] = {name: round(v / n * 1e3, 3) for name, v in pt.t.items()}
                best["step_ms_phase_timed"] = round(st.decode_s / n * 1e3, 3)
            best["variant"] = variant
            res[(batch, k, variant)] = best
            print(f"default model b={batch:<3} mtp={k} {variant:<12}: {best['tps']:9.1f} decode tok/s  "
                  f"acc {best['acceptance']}  tok/step {best['tokens_per_step']}  same {best['same_tokens']}"
                  + (f"  divergence {best['divergence'][:4]}" if 'divergence' in best else "")
                  + f"  step {best['step_ms']} ms"
                  + (f"  phases ms/step {best['phase_ms_per_step']} of {best['step_ms_phase_timed']}"
                     if 'phase_ms_per_step' in best else ""), flush=True)
    return res


def default_model_rows(b, dm: dict, card: dict) -> None:
    """mtp_e2e rows of the trained default model: speedup = MTP decode tok/s ÷ plain decode tok/s."""
    for (batch, k, variant), r in dm.items():
        if k == 0 or (batch, 0, "plain") not in dm:
            continue
        base = dm[(batch, 0, "plain")]
        sp = r["tps"] / base["tps"] if base["tps"] else None
        b.row("mtp_e2e", {"model": "tritonseek-tiny", "batch": batch, "k": k, "acceptance": round(r["acceptance"], 4)},
              dry=not b.cuda, us=None, peer="generate without MTP (decode tok/s, engine default: CUDA-graph decode on CUDA)",
              peer_us=None, ratio_vs_peer=None if sp is None else round(sp, 3),
              speedup=None if sp is None else round(sp, 3), tokens_per_step=r["tokens_per_step"],
              tokens_per_s=round(r["tps"], 1), peer_tokens_per_s=round(base["tps"], 1), same_tokens=r["same_tokens"],
              divergence=r.get("divergence"), variant=variant, phase_ms_per_step=r.get("phase_ms_per_step"),
              step_ms=r.get("step_ms"), step_ms_phase_timed=r.get("step_ms_phase_timed"), card_acceptance=card.get(k),
              note=f"LLM().generate greedy, ignore_eos; MTP steps: {variant.replace('_', ' ')}")


def run_mtp_e2e(b, h) -> None:
    """Suite ``mtp_e2e``; ``b`` is bench_e2e's Bench, ``h`` its SliceHarness (V3-width slice + cache)."""
    a = b.args
    ks, ctx = a.mtp_ks, a.mtp_context
    s_qs = sorted({1} | {k + 1 for k in ks})
    parts, parts_eager, graph_errs, direct, dm = {}, {}, {}, {}, {}
    card = card_acceptance()
    nbytes = floor_bytes(h.model, ctx)
    dry = bool(a.tiny) or not b.cuda  # smoke run: no V3 figure

    # 1. 61-layer composition, written per batch as soon as its parts are measured (a job-level timeout keeps
    # the batches already done)
    def compose(p, k):
        t_dec = V3_DENSE * p[1]["dense"] + V3_MOE * p[1]["moe"] + p[1]["head"]
        q = p[k + 1]
        t_ver = V3_DENSE * q["dense"] + V3_MOE * q["moe"] + q["head"]
        return t_dec, t_ver, t_ver + k * p[1]["draft"], t_ver + (k - 1) * p[1]["draft"] + q["draft"]

    def emit(batch, sources):
        p = parts[batch]
        graphed = graph_errs[batch] is None
        for k in ks:
            t_dec, t_ver, t_step, t_eng = compose(p, k)
            e_dec, _, e_step, _ = compose(parts_eager[batch], k)
            for acc, source in sources(k):
                if acc is None:
                    continue
                E = expected_tokens(acc, k)
                sp = E * t_dec / t_step
                b.row("mtp_e2e", {"model": "v3-tiny-61L" if a.tiny else "deepseek-v3-61L", "batch": batch, "k": k,
                                  "acceptance": round(acc, 4)}, dry=dry,
                      us=round(t_step, 1), peer="plain decode step (61 layers, composed from measured parts)",
                      peer_us=round(t_dec, 1), ratio_vs_peer=round(sp, 3), speedup=round(sp, 3),
                      tokens_per_step=round(E, 3), speedup_engine_schedule=round(E * t_dec / t_eng, 3),
                      t_verify_us=round(t_ver, 1), acceptance_source=source, context=ctx,
                      parts_us={str(s): {n: round(v, 1) for n, v in d.items()} for s, d in p.items()},
                      parts_us_eager={str(s): {n: round(v, 1) for n, v in d.items()}
                                      for s, d in parts_eager[batch].items()},
                      speedup_eager=round(E * e_dec / e_step, 3), timer="graph replay" if graphed else "eager do_bench",
                      graph_error=graph_errs[batch],
                      target_speedup=1.8 if (batch == 1 and acc == DEEPSEEK_ACCEPTANCE) else None,
                      **speedup_at_copy_rate(nbytes, batch, k, acc),
                      note=("CUDA-graph replay" if graphed else "eager") + " part times scaled to 3 dense + 58 MoE")

    for batch in a.mtp_batches:
        if b.over_budget(f"mtp_e2e parts b={batch}"):
            break
        try:
            parts[batch], parts_eager[batch], graph_errs[batch] = time_parts(b, h, batch, ctx, s_qs)
        except Exception as e:  # noqa: BLE001
            print(f"mtp_e2e parts b={batch} FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        emit(batch, lambda k: [(DEEPSEEK_ACCEPTANCE, "DeepSeek-V3 report"),
                               (card.get(k), "default model card (held-out eval)")])
    if not a.no_default_model and not b.over_budget("mtp_e2e default model"):
        try:
            dm = default_model(b, a.dm_batches if b.cuda else [1], ks, a.dm_tokens if b.cuda else 12)
        except Exception as e:  # noqa: BLE001
            print(f"mtp_e2e default model FAILED: {type(e).__name__}: {e}", flush=True)
    measured = {}
    for (batch, k, variant), r in sorted(dm.items()):  # the largest batch (most prompts) wins
        if k and r["acceptance"] is not None:
            measured[k] = r["acceptance"]
    for batch in parts:
        emit(batch, lambda k: [(measured.get(k), "default model, generate in this run")])

    # 2. the slice, directly with the engine pieces
    direct_batches = [] if a.no_slice_direct else a.mtp_batches
    if not h.model.ops.is_triton:  # the reference densifies every expert it touches in fp32: small batches only
        direct_batches = [x for x in direct_batches if x <= 8]
    for batch in direct_batches:
        for k in ks:
            if b.over_budget(f"mtp_e2e slice direct b={batch} k={k}"):
                break
            try:
                d = direct[(batch, k)] = slice_direct(b, h, batch, ctx, k)
            except Exception as e:  # noqa: BLE001
                print(f"mtp_e2e slice direct b={batch} k={k} FAILED: {type(e).__name__}: {e}", flush=True)
                continue
            finally:
                h.model.ops._dense.clear()
            p = parts_eager.get(batch)  # the direct run is eager: compare with eager parts
            comp = None
            if p:
                n_moe = h.cfg.num_hidden_layers - 1
                t4 = p[1]["dense"] + n_moe * p[1]["moe"] + p[1]["head"]
                v4 = p[k + 1]["dense"] + n_moe * p[k + 1]["moe"] + p[k + 1]["head"]
                comp = round(expected_tokens(DEEPSEEK_ACCEPTANCE, k) * t4 / (v4 + k * p[1]["draft"]), 3)
            for acc, E, note in (
                (d["acceptance"], 1 + d["acceptance"] * k, "random weights: measured acceptance (greedy verify)"),
                (1.0, float(k + 1), "oracle upper bound: measured step cost, every draft counted as accepted"),
            ):
                sp = E * d["t_plain"] / d["t_mtp"]
                b.row("mtp_e2e", {"model": a.model_name, "batch": batch, "k": k, "acceptance": round(acc, 4)},
                      us=round(d["t_mtp"], 1), peer="ModelRunner.decode + sample (wall, same slice)",
                      peer_us=round(d["t_plain"], 1), ratio_vs_peer=round(sp, 3), speedup=round(sp, 3),
                      tokens_per_step=round(E, 3), oracle=acc == 1.0, context=ctx, dry=dry,
                      speedup_composed_4L_at_085=comp, note=note)
            print(f"mtp slice b={batch:<3} k={k}: plain {d['t_plain']/1e3:.2f} ms  mtp step {d['t_mtp']/1e3:.2f} ms  "
                  f"acc {d['acceptance']:.3f}", flush=True)

    # 3. the trained default model
    default_model_rows(b, dm, card)


def main(argv=None) -> None:
    """Only part 3 (the trained default model), without building the V3 slice:
    ``PYTHONPATH=. python benchmarks/mtp_e2e.py [--dm-batches 1,16,64] [--mtp-ks 1,3] [--dm-tokens 64] --out rows.jsonl``
    (other flags as in bench_e2e.py)."""
    from benchmarks.bench_e2e import Bench, parse_args, print_table
    from benchmarks.bench_mtp import git_commit

    import signal

    a = parse_args(["--suite", "mtp_e2e", *(argv if argv is not None else sys.argv[1:])])
    if a.commit == "unknown":
        a.commit = git_commit()
    b = Bench(a)

    def on_term(*_):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)  # `timeout` stops the run: keep the cases already measured
    dm: dict = {}
    try:
        with torch.inference_mode():
            default_model(b, a.dm_batches if b.cuda else [1], a.mtp_ks, a.dm_tokens if b.cuda else 12, res=dm)
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}): writing the {len(dm)} finished cases", flush=True)
    finally:
        default_model_rows(b, dm, card_acceptance())
        print_table(b)


if __name__ == "__main__":
    main()
