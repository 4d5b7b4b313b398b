"""DeepSeek-V3-architecture causal LM (V2/V2-Lite/V3/R1/Kimi-K2) with its MTP layer.

Module names mirror the HF checkpoint keys (``model.embed_tokens``, ``model.layers.N.…``,
``model.norm``, ``lm_head``); the MTP layer (checkpoint index ``num_hidden_layers``) lives in
``mtp[0]``. The forward pass takes flattened tokens plus an :class:`AttentionBatch`, in the style of
vLLM / nano-vllm, so prefill and decode of many sequences share one code path.
"""

from __future__ import annotations

import torch
from torch import nn

from tritonseek.model.config import ModelConfig
from tritonseek.model.layers import MLP, Linear, RMSNorm, RotaryEmbedding, VocabParallelEmbedding
from tritonseek.model.mla import MLA, AttentionBatch
from tritonseek.model.moe import MoE
from tritonseek.model.ops import Ops
from tritonseek.parallel import TP


class DecoderLayer(nn.Module):
    """Pre-norm block: h = x + MLA(norm(x)); out = h + FFN(norm(h)), FFN dense or MoE by layer index.

    On the triton backend with FP8 weights a norm whose output only feeds FP8 GEMMs (MLA's q_a‖kv_a,
    the dense MLP's gate‖up) runs fused with the activation quant (``RMSNorm.forward_fp8``): the same
    q/s as norm then quant, one kernel and no bf16 normed tensor."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, fp8: bool, dtype: torch.dtype, ops: Ops,
                 rope: RotaryEmbedding, tp: TP | None = None):
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)
        self.self_attn = MLA(cfg, fp8=fp8, dtype=dtype, ops=ops, rope=rope, tp=tp)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)
        if cfg.is_moe_layer(layer_idx):
            self.mlp = MoE(cfg, fp8=fp8, dtype=dtype, ops=ops, tp=tp)
        else:
            self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, fp8=fp8, dtype=dtype, ops=ops, tp=tp)

    def forward(self, x, positions, batch: AttentionBatch, kv_cache, residual=None):
        """(x, residual) → (out, residual'): the block's output is out + residual' (vLLM-style split,
        so each residual add fuses into the next RMSNorm). ``residual=None``: x is the whole stream."""
        if x.dim() == 2 and self.self_attn.accepts_fp8():  # norm (+ add) and the FP8 quant: one kernel
            normed, residual = self.input_layernorm.forward_fp8(x, residual)
        elif residual is None:
            residual, normed = x, self.input_layernorm(x)
        else:
            normed, residual = self.input_layernorm.add_forward(x, residual)
        a = self.self_attn(normed, positions, batch, kv_cache)
        if isinstance(self.mlp, MLP) and self.mlp.accepts_fp8():
            normed, residual = self.post_attention_layernorm.forward_fp8(a, residual)
        else:
            normed, residual = self.post_attention_layernorm.add_forward(a, residual)
        return self.mlp(normed), residual


class SharedHead(nn.Module):
    """MTP output head: ``shared_head.norm`` then ``shared_head.head`` (same weights as lm_head)."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, ops: Ops, tp: TP | None = None):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)
        self.head = Linear(cfg.hidden_size, cfg.vocab_size, fp8=False, dtype=dtype, ops=ops, tp=tp, mode="vocab")


class MTPLayer(nn.Module):
    """DeepSeek-V3 multi-token-prediction module (checkpoint layer index ``num_hidden_layers``).

    h' = block(eh_proj([enorm(embed(t_{i+1})) ; hnorm(h_i)])); logits = head(shared_head.norm(h')).
    ``embed_tokens`` and ``shared_head.head`` are stored in the checkpoint as copies of the main
    model's embedding and lm_head.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, fp8: bool, dtype: torch.dtype, ops: Ops,
                 rope: RotaryEmbedding, tp: TP | None = None):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, dtype, tp)
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)
        self.eh_proj = Linear(2 * cfg.hidden_size, cfg.hidden_size, fp8=False, dtype=dtype, ops=ops)
        self.block = DecoderLayer(cfg, layer_idx, fp8=fp8, dtype=dtype, ops=ops, rope=rope, tp=tp)
        self.shared_head = SharedHead(cfg, dtype, ops, tp)

    def forward(self, input_ids, hidden, positions, batch: AttentionBatch, kv_cache) -> torch.Tensor:
        """input_ids [T] (the token after each position), hidden [T, H] → MTP hidden [T, H] (pre shared_head.norm)."""
        e = self.enorm(self.embed_tokens(input_ids))
        x = self.eh_proj(torch.cat([e, self.hnorm(hidden)], dim=-1))
        out, residual = self.block(x, positions, batch, kv_cache)
        return out + residual

    def logits(self, mtp_hidden: torch.Tensor) -> torch.Tensor:
        return self.shared_head.head(self.shared_head.norm(mtp_hidden)).float()


class _Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig, *, fp8: bool, dtype: torch.dtype, ops: Ops, rope: RotaryEmbedding,
                 tp: TP | None = None):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, dtype, tp)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, i, fp8=fp8, dtype=dtype, ops=ops, rope=rope, tp=tp) for i in range(cfg.num_hidden_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)


class DeepseekForCausalLM(nn.Module):
    """The whole model.

    Args:
        cfg: validated :class:`ModelConfig`.
        ops: the kernel backend (:class:`Ops`), held explicitly.
        dtype: activation / dense-weight dtype (bf16 on CUDA, fp32 on CPU by default in the loader).
        fp8: linears hold block-FP8 weights (+ weight_scale_inv) instead of dense ones.
        with_mtp: build the MTP layer(s) (``cfg.num_nextn_predict_layers``).
        tp: tensor/expert-parallel place of this process (:mod:`tritonseek.parallel`); None = one process.
    """

    def __init__(self, cfg: ModelConfig, ops: Ops, *, dtype: torch.dtype = torch.float32, fp8: bool = False,
                 with_mtp: bool = True, tp: TP | None = None):
        super().__init__()
        self.cfg = cfg
        # the kernel table with this config's activation-scale format (scale_fmt "ue8m0": power-of-two scales)
        ops = ops.for_config(cfg)
        self.ops = ops
        self.dtype = dtype
        self.fp8 = fp8
        self.rope = RotaryEmbedding(cfg)
        self.tp = tp
        self.model = _Backbone(cfg, fp8=fp8, dtype=dtype, ops=ops, rope=self.rope, tp=tp)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, fp8=False, dtype=dtype, ops=ops, tp=tp, mode="vocab")
        n_mtp = cfg.num_nextn_predict_layers if with_mtp else 0
        self.mtp = nn.ModuleList(
            MTPLayer(cfg, cfg.num_hidden_layers + i, fp8=fp8, dtype=dtype, ops=ops, rope=self.rope, tp=tp)
            for i in range(n_mtp)
        )

    @property
    def num_cache_layers(self) -> int:
        """Latent caches needed: one per decoder layer plus one per MTP layer."""
        return self.cfg.num_hidden_layers + len(self.mtp)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: AttentionBatch,
                kv_caches: list[torch.Tensor]) -> torch.Tensor:
        """input_ids/positions [T] int64 → last decoder layer's output [T, hidden] (before ``model.norm``).

        Positions are not range-checked here (that would sync the host every step): the engine
        rejects prompt + max_new_tokens > max_position_embeddings before any work.
        """
        x, residual = self._decode_layers(input_ids, positions, batch, kv_caches)
        return x if residual is None else x + residual

    def forward_normed(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: AttentionBatch,
                       kv_caches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` plus ``model.norm``: (hidden [T, hidden] pre-norm, norm(hidden) [T, hidden]), the
        last residual add fused into the final RMSNorm (one kernel on triton; same numbers as
        ``forward`` then ``model.norm``). The decode graphs use it: logits = lm_head(normed)."""
        x, residual = self._decode_layers(input_ids, positions, batch, kv_caches)
        if residual is None:
            return x, self.model.norm(x)
        normed, hidden = self.model.norm.add_forward(x, residual)
        return hidden, normed

    def _decode_layers(self, input_ids, positions, batch, kv_caches):
        x = self.model.embed_tokens(input_ids)
        residual = None
        for i, layer in enumerate(self.model.layers):
            x, residual = layer(x, positions, batch, kv_caches[i], residual)
        return x, residual

    def compute_logits(self, hidden: torch.Tensor, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """hidden [T, hidden] (pre-norm, from :meth:`forward`) → logits lm_head(norm(h)) [T, vocab] in
        ``dtype`` (fp32 by default; None: the model's dtype as lm_head computes it, no fp32 copy)."""
        logits = self.lm_head(self.model.norm(hidden))
        return logits if dtype is None else logits.to(dtype)
