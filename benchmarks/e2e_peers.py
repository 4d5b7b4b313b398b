"""Peers of the ``e2e_decode`` suite that need their own model: transformers' DeepseekV3ForCausalLM (eager,
bf16, the slice's weights dequantized) and a DeepSeek-V2-Lite-shaped random-FP8 model.

``hf_from_slice(model)`` builds ``transformers.DeepseekV3ForCausalLM`` with the slice's hyper-parameters
on the slice's device in bf16 and copies every weight (FP8 linears and experts dequantized with their
128×128 block scales; the router's fp32 correction bias kept). ``hf_decode_us`` prefills a random
context through it (DynamicCache) and times one more decode step (the cache is cropped back after
each step, so every timed step sees the same context).
"""

from __future__ import annotations

if __name__ == "__main__":  # a module of other scripts, not a benchmark of its own (it printed nothing, exit 0)
    import sys

    print("e2e_peers.py holds the hf_peer, v2lite and e2e_generate suites of bench_e2e.py: run"
          "  PYTHONPATH=. python benchmarks/bench_e2e.py --suite hf_peer,v2lite,e2e_generate")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import re
import statistics
import time

import torch

from tritonseek.model.layers import Linear


def hf_config(cfg):
    """transformers.DeepseekV3Config with the slice's hyper-parameters (attention: eager)."""
    import transformers

    rs = cfg.rope_scaling
    rope = None if rs is None else {
        "type": "yarn", "rope_type": "yarn", "factor": rs.factor,
        "original_max_position_embeddings": rs.original_max_position_embeddings, "beta_fast": rs.beta_fast,
        "beta_slow": rs.beta_slow, "mscale": rs.mscale, "mscale_all_dim": rs.mscale_all_dim,
    }
    return transformers.DeepseekV3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        moe_intermediate_size=cfg.moe_intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_attention_heads,
        n_shared_experts=cfg.n_shared_experts, n_routed_experts=cfg.n_routed_experts,
        num_experts_per_tok=cfg.num_experts_per_tok, n_group=cfg.n_group, topk_group=cfg.topk_group,
        first_k_dense_replace=cfg.first_k_dense_replace, kv_lora_rank=cfg.kv_lora_rank, q_lora_rank=cfg.q_lora_rank,
        qk_nope_head_dim=cfg.qk_nope_head_dim, qk_rope_head_dim=cfg.qk_rope_head_dim, v_head_dim=cfg.v_head_dim,
        max_position_embeddings=cfg.max_position_embeddings, routed_scaling_factor=cfg.routed_scaling_factor,
        norm_topk_prob=cfg.norm_topk_prob, rope_scaling=rope, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
        bos_token_id=0, eos_token_id=1, attn_implementation="eager", tie_word_embeddings=False,
    )


@torch.no_grad()
def hf_from_slice(model, dtype: torch.dtype = torch.bfloat16):
    """transformers DeepseekV3ForCausalLM holding ``model``'s weights (dequantized) in ``dtype``, eval mode.

    Raises KeyError naming an HF parameter with no source in the slice.
    """
    import transformers

    dev = next(model.parameters()).device
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            hf = transformers.DeepseekV3ForCausalLM(hf_config(model.cfg))
    finally:
        torch.set_default_dtype(prev)
    ours = dict(model.named_parameters())
    for name, p in hf.named_parameters():
        m = re.match(r"(.*)\.experts\.(gate_up_proj|down_proj)$", name)
        if m:
            moe = model.get_submodule(m.group(1))
            w, s = (moe.w13, moe.w13_scale_inv) if m.group(2) == "gate_up_proj" else (moe.w2, moe.w2_scale_inv)
            for e in range(w.shape[0]):  # per expert: the dequantized temporary stays small
                p[e].copy_(_dense(model, w[e], s[e] if s is not None else None, p.dtype))
            continue
        m = re.match(r"(.*)\.experts\.(\d+)\.(gate|up|down)_proj\.weight$", name)  # older per-expert layout
        if m:
            moe, e, which = model.get_submodule(m.group(1)), int(m.group(2)), m.group(3)
            w, s = (moe.w2, moe.w2_scale_inv) if which == "down" else (moe.w13, moe.w13_scale_inv)
            full = _dense(model, w[e], s[e] if s is not None else None, torch.float32)
            I = model.cfg.moe_intermediate_size
            full = full[:I] if which == "gate" else full[I:] if which == "up" else full
            p.copy_(full.to(p.dtype))
            continue
        if name.endswith(".weight"):
            mod_name = name[: -len(".weight")]
            try:
                mod = model.get_submodule(mod_name)
            except AttributeError:
                mod = None
            if isinstance(mod, Linear):
                p.copy_(mod.dense_weight(torch.float32).to(p.dtype))
                continue
        if name not in ours:
            raise KeyError(f"transformers parameter {name} {tuple(p.shape)} has no source in the slice")
        p.copy_(ours[name].to(p.dtype))
    for name, buf in hf.named_buffers():
        if name.endswith("e_score_correction_bias"):
            buf.copy_(model.get_submodule(name.rsplit(".", 1)[0]).e_score_correction_bias)
    return hf.eval()


def _dense(model, w, s, dtype):
    if s is None:
        return w.to(dtype)
    return model.ops.dequant_block_fp8(w, s, torch.float32).to(dtype)


@torch.no_grad()
def hf_decode_us(hf, batch: int, context: int, reps: int = 10, seed: int = 0) -> tuple[float, torch.Tensor]:
    """Median wall µs of one transformers decode step (batch new tokens after a ``context``-token prefill).

    Returns (µs, the step's logits [batch, vocab] fp32).
    """
    dev = next(hf.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    V = hf.config.vocab_size
    ids = torch.randint(2, V, (batch, context), device=dev, generator=g)
    out = hf(input_ids=ids, use_cache=True, logits_to_keep=1)
    past = out.past_key_values
    step_ids = torch.randint(2, V, (batch, 1), device=dev, generator=g)

    def step():
        o = hf(input_ids=step_ids, past_key_values=past, use_cache=True)
        past.crop(-1)  # drop the step token again (negative = tokens to remove, in every 4.x/5.x version)
        return o.logits[:, -1].float()

    logits = step()
    step()
    ts = []
    for _ in range(reps):
        _sync(dev)
        t = time.perf_counter()
        step()
        _sync(dev)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6, logits


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ------------------------------------------------------------------------------------- V2-Lite
def v2_lite_config(num_layers: int = 27, *, tiny: bool = False):
    """DeepSeek-V2-Lite's hyper-parameters (HF ``deepseek-ai/DeepSeek-V2-Lite`` config.json) as FP8."""
    from tritonseek.model.config import ModelConfig

    raw = {
        "model_type": "deepseek_v2", "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "num_hidden_layers": num_layers, "num_nextn_predict_layers": 0,
        "num_attention_heads": 16, "n_shared_experts": 2, "n_routed_experts": 64, "num_experts_per_tok": 6,
        "n_group": 1, "topk_group": 1, "topk_method": "greedy", "scoring_func": "softmax", "norm_topk_prob": False,
        "routed_scaling_factor": 1.0, "first_k_dense_replace": 1, "moe_layer_freq": 1, "q_lora_rank": None,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "hidden_act": "silu", "max_position_embeddings": 163840, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
                         "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                "weight_block_size": [128, 128]},
    }
    if tiny:
        raw.update(vocab_size=1024, hidden_size=256, intermediate_size=384, moe_intermediate_size=128,
                   num_attention_heads=4, n_routed_experts=16, num_experts_per_tok=4, kv_lora_rank=128,
                   qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, max_position_embeddings=16384)
    return ModelConfig.from_dict(raw)


# ------------------------------------------------------------------------------------- runners
def free_experts(model) -> None:
    """Drop the routed experts' weights of ``model`` (the bulk of its memory); the model cannot run after."""
    from tritonseek.model.moe import MoE

    for mod in model.modules():
        if isinstance(mod, MoE):
            for name in ("w13", "w2"):
                p = getattr(mod, name)
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)


def run_hf_peer(b, h, batches: list[int], contexts: list[int]) -> None:
    """transformers eager bf16 on the slice's weights: one ``e2e_decode`` row per (batch, context) with model
    ``transformers-<slice>``, and the matching tritonseek row gets it as its peer. Frees the slice's experts
    first (both models do not fit beside each other with room to run), so this runs after every slice suite."""
    import transformers

    name = b.args.model_name
    if h.graphs is not None:
        h.graphs.close()
    t = time.perf_counter()
    try:
        hf = hf_from_slice(h.model)
    except Exception as e:  # noqa: BLE001 - a failing peer is a finding, not a crash
        print(f"transformers peer: build failed: {type(e).__name__}: {e}", flush=True)
        b.row("e2e_decode", {"model": f"transformers-{name}", "batch": batches[0], "context": contexts[0]},
              backend="transformers", error=f"{type(e).__name__}: {e}"[:500])
        return
    free_experts(h.model)
    if b.cuda:
        torch.cuda.empty_cache()
    impl = getattr(hf.config, "_experts_implementation", None)
    print(f"transformers {transformers.__version__} peer built in {time.perf_counter() - t:.1f}s "
          f"(attention eager, experts {impl}); peak {b.peak_gb()} GB", flush=True)
    for ctx in contexts:
        for bs in batches:
            if b.over_budget(f"transformers peer b={bs} ctx={ctx}"):
                return
            case = {"model": f"transformers-{name}", "batch": bs, "context": ctx}
            try:
                b.reset_peak()
                us, logits = hf_decode_us(hf, bs, ctx, reps=5 if b.cuda else 1)
                ours = b.find("e2e_decode", {"model": name, "batch": bs, "context": ctx})
                ours_us = ours["us"] if ours else None
                b.row("e2e_decode", case, us=round(us, 2), tokens_per_s=round(bs / us * 1e6, 1), backend="transformers",
                      transformers_version=transformers.__version__, hf_attn_implementation="eager",
                      hf_experts_implementation=impl, dtype="bfloat16", logits_finite=bool(torch.isfinite(logits).all()),
                      peak_mem_gb=b.peak_gb(), tritonseek_us=ours_us,
                      tritonseek_speedup=round(us / ours_us, 2) if ours_us else None)
                if ours is not None:
                    target = {1: 5.0, 8: 4.0}.get(bs)
                    ours.update(reference_peer_us=ours.get("peer_us"), reference_ratio_vs_peer=ours.get("ratio_vs_peer"),
                                peer=f"transformers {transformers.__version__} DeepseekV3ForCausalLM, attention eager, "
                                     f"experts {impl}, bf16, same weights dequantized (same run)",
                                peer_us=round(us, 2), ratio_vs_peer=round(us / ours_us, 2), target_ratio_vs_peer=target)
                    b.flush()
                print(f"transformers b={bs:<3} ctx={ctx:<5} {us/1e3:8.2f} ms  (tritonseek {ours_us} us: "
                      f"{round(us / ours_us, 2) if ours_us else None}x faster)", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"transformers peer b={bs} ctx={ctx} FAILED: {type(e).__name__}: {e}", flush=True)
                b.row("e2e_decode", case, backend="transformers", error=f"{type(e).__name__}: {e}"[:500])
            finally:
                if b.cuda:
                    torch.cuda.empty_cache()
    del hf


def run_generate(b, batches: list[int], new_tokens: int = 128, mtps: tuple[int, ...] = (0, 3)) -> None:
    """Suite ``e2e_generate``: ``LLM.generate`` on the embedded default model (greedy, ``ignore_eos``), CUDA
    graphs (the default) against ``enforce_eager=True``, plain and with MTP. One row per (batch, mtp): ``us`` =
    decode wall time per step with graphs, ``us_eager`` the same eagerly, decode tokens/s of both, and
    whether both produced the same tokens. Each configuration runs once untimed first (compile, capture)."""
    from tritonseek import LLM, SamplingParams

    llm = LLM(device=b.dev)
    p = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    base = ["def fibonacci(n):", "import os\nimport sys\n", "class Config:", "for i in range(10):\n    x ="]
    for bs in batches:
        prompts = [base[i % len(base)] + "#" * (i // len(base)) for i in range(bs)]
        for mtp in mtps:
            if b.over_budget(f"e2e_generate b={bs} mtp={mtp}"):
                return
            case = {"model": "tritonseek-default", "batch": bs, "mtp": mtp, "new_tokens": new_tokens}
            try:
                got = {}
                for mode in ("eager", "graphs"):
                    llm.enforce_eager = mode == "eager"
                    llm.generate(prompts, p, mtp=mtp)
                    outs = llm.generate(prompts, p, mtp=mtp)
                    st = llm.last_stats
                    decoded = st.new_tokens - bs  # the first token of each prompt comes from the prefill
                    got[mode] = dict(us=st.decode_s / max(st.decode_steps, 1) * 1e6, tps=decoded / max(st.decode_s, 1e-9),
                                     tokens=[o.token_ids for o in outs], steps=st.decode_steps,
                                     graph_steps=st.extra.get("graph_steps"), acceptance=st.extra.get("acceptance"))
                g, e = got["graphs"], got["eager"]
                b.row("e2e_generate", case, us=round(g["us"], 2), us_eager=round(e["us"], 2),
                      tokens_per_s=round(g["tps"], 1), tokens_per_s_eager=round(e["tps"], 1),
                      speedup_vs_eager=round(e["us"] / g["us"], 2), same_tokens=g["tokens"] == e["tokens"],
                      decode_steps=g["steps"], graph_steps=g["graph_steps"], acceptance=g["acceptance"],
                      backend=llm.backend, uses_cuda_graphs=llm.uses_cuda_graphs or None,
                      dry=not b.cuda)  # the default model itself, also under --tiny: real figures on a GPU
                print(f"e2e_generate b={bs:<3} mtp={mtp} graphs {g['us']:8.1f} us/step {g['tps']:9.1f} tok/s | eager "
                      f"{e['us']:8.1f} us/step {e['tps']:9.1f} tok/s | same tokens {g['tokens'] == e['tokens']}", flush=True)
            except Exception as ex:  # noqa: BLE001
                print(f"e2e_generate b={bs} mtp={mtp} FAILED: {type(ex).__name__}: {ex}", flush=True)
                b.row("e2e_generate", case, backend=llm.backend, error=f"{type(ex).__name__}: {ex}"[:500])
    llm.enforce_eager = False
