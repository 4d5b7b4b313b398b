"""Tiny random DeepSeek checkpoints written by transformers' ``save_pretrained`` (test fixtures).

Two families: a DeepseekV3 config with every V3 feature (q_lora, sigmoid + correction bias,
n_group > topk_group > 1, shared expert, first_k_dense_replace ≥ 1, YaRN) and a DeepseekV2 one
(no q_lora, softmax, greedy routing). ``fp8=True`` rewrites the linears as 128×128 block FP8 with
``weight_scale_inv`` and returns the HF model with the *dequantized* weights for comparison.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

V3_KW = dict(
    vocab_size=320, hidden_size=192, intermediate_size=256, moe_intermediate_size=128, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=3,
    n_group=4, topk_group=2, first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=96, qk_nope_head_dim=32,
    qk_rope_head_dim=16, v_head_dim=32, max_position_embeddings=512, routed_scaling_factor=2.5, norm_topk_prob=True,
    rope_scaling={"type": "yarn", "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
                  "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    bos_token_id=0, eos_token_id=1, attn_implementation="eager",
)
V2_KW = dict(
    vocab_size=320, hidden_size=160, intermediate_size=224, moe_intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, n_shared_experts=2, n_routed_experts=8, num_experts_per_tok=2,
    n_group=1, topk_group=1, topk_method="greedy", first_k_dense_replace=1, kv_lora_rank=48, q_lora_rank=None,
    qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, max_position_embeddings=512, routed_scaling_factor=1.0,
    norm_topk_prob=False, bos_token_id=0, eos_token_id=1, attn_implementation="eager",
)

# Linears that DeepSeek's FP8 checkpoints store in block FP8 (not the gate, norms, embedding, head).
FP8_SUFFIXES = ("q_a_proj.weight", "q_b_proj.weight", "q_proj.weight", "kv_a_proj_with_mqa.weight", "kv_b_proj.weight",
                "o_proj.weight", "gate_proj.weight", "up_proj.weight", "down_proj.weight")


def build_hf_model(kind: str, seed: int = 0, **overrides):
    """A transformers DeepseekV3/V2 model with random (seeded) weights, fp32, eval mode."""
    import transformers

    torch.manual_seed(seed)
    if kind == "v3":
        cfg = transformers.DeepseekV3Config(**{**V3_KW, **overrides})
        model = transformers.DeepseekV3ForCausalLM(cfg)
    elif kind == "v2":
        cfg = transformers.DeepseekV2Config(**{**V2_KW, **overrides})
        model = transformers.DeepseekV2ForCausalLM(cfg)
    else:
        raise ValueError(kind)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))
    return model.eval()


def save_checkpoint(model, folder: Path, *, fp8: bool = False, mtp: bool = False) -> Path:
    """save_pretrained into ``folder``; optionally quantize to block FP8 and/or add a random MTP layer.

    With fp8, the HF model's weights are replaced in place by their dequantized FP8 values (through
    a dequantized copy of the checkpoint loaded back with ``from_pretrained``, so HF's own key
    conversion -- e.g. stacked experts -- applies), making it the exact reference for the FP8 files.
    """
    from tritonseek.kernels.reference.fp8 import dequant_block_fp8_ref, per_block_quant_fp8_ref

    folder = Path(folder)
    model.save_pretrained(folder)
    path = folder / "model.safetensors"
    sd = load_file(str(path))
    cfgd = json.loads((folder / "config.json").read_text())
    if mtp:
        sd.update(_random_mtp_tensors(sd, cfgd))
    if fp8:
        deq = {}
        for k in list(sd):
            if k.endswith(FP8_SUFFIXES):
                q, s = per_block_quant_fp8_ref(sd[k].float())
                sd[k] = q
                sd[k[: -len("weight")] + "weight_scale_inv"] = s
                deq[k] = dequant_block_fp8_ref(q, s)
        tmp = folder / "_dequantized"
        tmp.mkdir(exist_ok=True)
        (tmp / "config.json").write_text((folder / "config.json").read_text())
        save_file({**load_file(str(path)), **deq}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        ref = type(model).from_pretrained(tmp, attn_implementation="eager", dtype=torch.float32)
        model.load_state_dict(ref.state_dict())
        shutil.rmtree(tmp)
        cfgd["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                       "weight_block_size": [128, 128]}
    cfgd["num_nextn_predict_layers"] = 1 if mtp else 0
    (folder / "config.json").write_text(json.dumps(cfgd, indent=2))
    save_file(sd, str(path), metadata={"format": "pt"})
    return folder


def _random_mtp_tensors(sd: dict, cfgd: dict) -> dict:
    """MTP layer keys (index num_hidden_layers) copying the last decoder layer's shapes."""
    L = cfgd["num_hidden_layers"]
    g = torch.Generator().manual_seed(123)
    out = {}
    for k, v in sd.items():
        pre = f"model.layers.{L - 1}."
        if k.startswith(pre):
            out[f"model.layers.{L}." + k[len(pre):]] = torch.randn(v.shape, generator=g) / (v.shape[-1] ** 0.5)
    H = cfgd["hidden_size"]
    for n in ("enorm", "hnorm"):
        out[f"model.layers.{L}.{n}.weight"] = torch.ones(H)
    out[f"model.layers.{L}.shared_head.norm.weight"] = torch.ones(H)
    out[f"model.layers.{L}.eh_proj.weight"] = torch.randn(H, 2 * H, generator=g) / (2 * H) ** 0.5
    out[f"model.layers.{L}.embed_tokens.weight"] = sd["model.embed_tokens.weight"].clone()
    out[f"model.layers.{L}.shared_head.head.weight"] = sd["lm_head.weight"].clone()
    return out
