"""A DeepSeek-V3-width model slice with random FP8 weights, built on the device from a seed.

    from benchmarks.v3_slice import v3_config, build_slice
    model = build_slice(v3_config(), backend="triton", device="cuda", seed=0)

Shapes follow DeepSeek-V3's ``config.json`` (hidden 7168, 128 heads, q_lora 1536, kv_lora 512,
qk_nope 128, qk_rope 64, v 128, 256 routed experts top-8 in 8 groups keep 4 (noaux_tc, sigmoid,
normalized, × 2.5), moe_intermediate 2048, 1 shared expert, dense intermediate 18432, vocab 129280,
YaRN factor 40 over 4096 positions, block-FP8 linears) cut to ``num_layers`` decoder layers
(``first_k_dense_replace`` = 1: one dense + the rest MoE) plus the MTP layer. ``tiny=True`` keeps
every structural feature at small widths for CPU development of the benchmarks.

Weights are random, never zeros: FP8 weights are N(0, 0.5²) cast to e4m3 with 128×128 block scales
U(0.5, 1.5)·2/√fan_in (so W ≈ N(0, 1/fan_in) and activations stay O(1)); bf16 linears
N(0, 1/fan_in); norm weights 1 + N(0, 0.05²); embeddings N(0, 0.02²); router N(0, 1/hidden) with an
fp32 correction bias N(0, 0.01²). As in a real checkpoint load the MTP layer's ``embed_tokens`` and
``shared_head.head`` hold the main model's embedding and lm_head (here: the same tensors).
"""

from __future__ import annotations

if __name__ == "__main__":  # a module of other scripts, not a benchmark of its own
    import sys

    print("v3_slice.py builds the V3-width slice of bench_e2e.py / bench_e2e_tp.py / check_v3_parity.py: run one of those")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import math

import torch

from tritonseek.model.config import ModelConfig
from tritonseek.model.layers import FP8_BLOCK, Linear, RMSNorm, VocabParallelEmbedding
from tritonseek.model.model import DeepseekForCausalLM
from tritonseek.model.moe import MoE
from tritonseek.model.ops import Ops


def v3_config(num_layers: int = 4, *, tiny: bool = False, mtp: bool = True) -> ModelConfig:
    """DeepSeek-V3's hyper-parameters with ``num_layers`` decoder layers (1 dense + MoE) and 1 MTP layer."""
    raw = {
        "model_type": "deepseek_v3",
        "vocab_size": 129280,
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_hidden_layers": num_layers,
        "num_nextn_predict_layers": 1 if mtp else 0,
        "num_attention_heads": 128,
        "n_shared_experts": 1,
        "n_routed_experts": 256,
        "num_experts_per_tok": 8,
        "n_group": 8,
        "topk_group": 4,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 163840,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
        },
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128],
        },
    }
    if tiny:
        raw.update(
            vocab_size=1024, hidden_size=256, intermediate_size=512, moe_intermediate_size=128,
            num_attention_heads=4, n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
            q_lora_rank=128, kv_lora_rank=128, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
            max_position_embeddings=16384,
        )
    return ModelConfig.from_dict(raw)


@torch.no_grad()
def _fill_fp8_(weight: torch.Tensor, scale: torch.Tensor, fan_in: int, gen: torch.Generator) -> None:
    """weight (e4m3, [.., out, in]) ← N(0, 0.5²) rows chunk by chunk; scale ← U(0.5, 1.5)·2/√fan_in."""
    w2d = weight.view(-1, weight.shape[-1])
    rows = max(1, (1 << 26) // weight.shape[-1])  # ~64M elements of bf16 scratch per chunk
    for r0 in range(0, w2d.shape[0], rows):
        chunk = w2d[r0 : r0 + rows]
        tmp = torch.empty(chunk.shape, dtype=torch.bfloat16, device=weight.device)
        tmp.normal_(0.0, 0.5, generator=gen)
        chunk.copy_(tmp.to(torch.float8_e4m3fn))
    scale.uniform_(0.5, 1.5, generator=gen).mul_(2.0 / math.sqrt(fan_in))


@torch.no_grad()
def fill_random_(model: DeepseekForCausalLM, seed: int = 0) -> None:
    """Overwrite every parameter of ``model`` with seeded random values (see module docstring)."""
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    cfg = model.cfg
    # The MTP layer's embedding and head are the main model's (copies in a checkpoint): share them.
    for layer in model.mtp:
        layer.embed_tokens.weight = model.model.embed_tokens.weight
        layer.shared_head.head.weight = model.lm_head.weight
    done: set[int] = set()

    def once(t: torch.Tensor) -> bool:
        if id(t) in done:
            return False
        done.add(id(t))
        return True

    for mod in model.modules():
        if isinstance(mod, Linear):
            if not once(mod.weight):
                continue
            if mod.fp8:
                _fill_fp8_(mod.weight.data, mod.weight_scale_inv.data, mod.in_features, gen)
            else:
                mod.weight.data.normal_(0.0, 1.0 / math.sqrt(mod.in_features), generator=gen)
        elif isinstance(mod, RMSNorm):
            mod.weight.data.normal_(1.0, 0.05, generator=gen)
        elif isinstance(mod, (torch.nn.Embedding, VocabParallelEmbedding)):
            if once(mod.weight):
                mod.weight.data.normal_(0.0, 0.02, generator=gen)
        elif isinstance(mod, MoE):
            H, I = cfg.hidden_size, cfg.moe_intermediate_size
            mod.gate.weight.data.normal_(0.0, 1.0 / math.sqrt(H), generator=gen)
            if mod.gate.e_score_correction_bias is not None:
                mod.gate.e_score_correction_bias.data.normal_(0.0, 0.01, generator=gen)
            if mod.w13_scale_inv is not None:
                _fill_fp8_(mod.w13.data, mod.w13_scale_inv.data, H, gen)
                _fill_fp8_(mod.w2.data, mod.w2_scale_inv.data, I, gen)
            else:
                mod.w13.data.normal_(0.0, 1.0 / math.sqrt(H), generator=gen)
                mod.w2.data.normal_(0.0, 1.0 / math.sqrt(I), generator=gen)
    for name, p in model.named_parameters():
        if p.dtype == torch.float8_e4m3fn:
            continue
        if not torch.isfinite(p).all():
            raise RuntimeError(f"random fill left non-finite values in {name}")


def build_slice(cfg: ModelConfig | None = None, *, backend: str = "triton", device: str | torch.device = "cuda",
                dtype: torch.dtype = torch.bfloat16, seed: int = 0, fp8: bool = True, tp=None) -> DeepseekForCausalLM:
    """Construct :class:`DeepseekForCausalLM` directly on ``device`` and fill it from ``seed``.

    Returns the model in eval mode holding ``Ops(backend)``. ~53 GB on the device at V3 widths with
    4 layers + MTP (FP8 experts 45 GB, bf16 embedding + lm_head 3.7 GB). ``tp`` (``tritonseek.parallel.TP``):
    only this rank's shard is built and filled (each rank's random values differ; call
    ``parallel.broadcast_replicated_`` so the unsharded parameters match across ranks).
    """
    cfg = cfg or v3_config()
    if fp8 and cfg.moe_intermediate_size % FP8_BLOCK:
        raise ValueError(f"moe_intermediate_size={cfg.moe_intermediate_size} must be a multiple of {FP8_BLOCK}")
    with torch.device(device):
        model = DeepseekForCausalLM(cfg, Ops(backend), dtype=dtype, fp8=fp8, with_mtp=True, tp=tp)
    fill_random_(model, seed)
    return model.eval()


# ------------------------------------------------------------------------------ byte accounting
def linear_bytes(lin: Linear) -> int:
    """Bytes of one linear's stored weight (+ fp32 block scales when FP8)."""
    n = lin.weight.numel() * lin.weight.element_size()
    if lin.weight_scale_inv is not None:
        n += lin.weight_scale_inv.numel() * 4
    return n


def expert_bytes(moe: MoE) -> int:
    """Bytes one routed expert's gate/up/down weights (+ scales) occupy."""
    n = (moe.w13[0].numel() + moe.w2[0].numel()) * moe.w13.element_size()
    if moe.w13_scale_inv is not None:
        n += (moe.w13_scale_inv[0].numel() + moe.w2_scale_inv[0].numel()) * 4
    return n


def layer_static_bytes(layer) -> int:
    """Bytes a decode step reads from a decoder layer regardless of routing: attention linears (kv_b_proj at its
    stored FP8 size, the minimum), norms, dense MLP or gate + shared experts."""
    n = 0
    for mod in layer.modules():
        if isinstance(mod, Linear):
            n += linear_bytes(mod)
        elif isinstance(mod, RMSNorm):
            n += mod.weight.numel() * mod.weight.element_size()
    if isinstance(layer.mlp, MoE):
        g = layer.mlp.gate
        n += g.weight.numel() * g.weight.element_size()
        if g.e_score_correction_bias is not None:
            n += g.e_score_correction_bias.numel() * 4
    return n
