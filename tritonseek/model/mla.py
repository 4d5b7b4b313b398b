"""Multi-head Latent Attention (DeepSeek-V2/V3) over a paged latent cache.

Prefill runs the non-absorbed form (q/k head dim qk_nope+qk_rope = 192, v head dim 128) and
writes each token's latent (kv_lora_rank normed compressed kv ‖ qk_rope_head_dim roped key) into
the cache. Decode runs the absorbed form: q_nope·W_UK against the cached latents, the output
times W_UV (DeepSeek-V3 inference/model.py ``attn_impl="absorb"``; FlashMLA's layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tritonseek.model.config import ModelConfig
from tritonseek.model.layers import FP8Act, FusedLinears, Linear, RMSNorm, RotaryEmbedding, apply_rotary_interleaved
from tritonseek.model.ops import Ops
from tritonseek.parallel import TP


@dataclass
class AttentionBatch:
    """Where a forward step's tokens sit in the paged latent cache.

    slot_mapping: [T] int64, cache row of each new token (block_id·page_size + offset; -1 = skip).
    Prefill (``is_prefill``): cu_seqlens [B+1] int32 over the flattened tokens, max_seqlen; the
    sequences have no earlier cached context.
    Decode: every sequence contributes ``seqlen_q`` tokens (1, or K+1 for MTP verification);
    block_table [B, max_blocks] int32; cache_seqlens [B] int32 = lengths after this step's writes;
    ``mla_metadata`` is the split schedule shared by all layers (triton backend).
    """

    is_prefill: bool
    slot_mapping: torch.Tensor
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0
    block_table: torch.Tensor | None = None
    cache_seqlens: torch.Tensor | None = None
    seqlen_q: int = 1
    mla_metadata: Any = None


class MLA(nn.Module):
    """DeepSeek MLA with HF parameter names (q_a_proj, q_a_layernorm, q_b_proj | q_proj,
    kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj)."""

    # decode on triton: W_UV product and o_proj's input quant as one kernel (mla_absorb_o_fp8) when
    # v_head_dim % 128 == 0; bit-equal to the two-launch path (absorb_o, then fp8_linear's quant)
    fuse_o_quant: bool = True

    def __init__(self, cfg: ModelConfig, *, fp8: bool, dtype: torch.dtype, ops: Ops, rope: RotaryEmbedding,
                 tp: TP | None = None):
        super().__init__()
        self.cfg = cfg
        self.ops = ops
        self.rope = rope
        # Tensor parallel: this rank's share of the heads (q_b/kv_b column-, o_proj row-parallel).
        ws = tp.world_size if tp is not None else 1
        if cfg.num_attention_heads % ws:
            raise ValueError(f"num_attention_heads={cfg.num_attention_heads} is not divisible by tp={ws}")
        self.num_heads = cfg.num_attention_heads // ws
        self.nope = cfg.qk_nope_head_dim
        self.rope_dim = cfg.qk_rope_head_dim
        self.kv_lora_rank = cfg.kv_lora_rank
        self.v_head_dim = cfg.v_head_dim
        self.softmax_scale = cfg.softmax_scale
        H, dq = cfg.num_attention_heads, cfg.qk_head_dim
        lin = dict(fp8=fp8, dtype=dtype, ops=ops)
        col = dict(lin, tp=tp, mode="col")
        if cfg.q_lora_rank is None:
            self.q_proj = Linear(cfg.hidden_size, H * dq, **col)
        else:
            self.q_a_proj = Linear(cfg.hidden_size, cfg.q_lora_rank, **lin)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps, ops)
            self.q_b_proj = Linear(cfg.q_lora_rank, H * dq, **col)
        self.kv_a_proj_with_mqa = Linear(cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim, **lin)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps, ops)
        self.kv_b_proj = Linear(cfg.kv_lora_rank, H * (self.nope + self.v_head_dim), **col)
        self.o_proj = Linear(H * self.v_head_dim, cfg.hidden_size, **lin, tp=tp, mode="row")
        # q_a_proj (or q_proj) ‖ kv_a_proj_with_mqa: one GEMM and one activation quant of x on triton
        # (V3: N = 1536 + 576 = 2112; the 12 + 5 scale blocks stack)
        self.q_kv_a = FusedLinears([self.q_proj if cfg.q_lora_rank is None else self.q_a_proj,
                                    self.kv_a_proj_with_mqa])
        self._w_uk: torch.Tensor | None = None
        self._w_uv: torch.Tensor | None = None
        self._absorbed_key: tuple | None = None

    def _kv_b_key(self, dtype: torch.dtype) -> tuple:
        # storage and version of kv_b_proj's tensors: an in-place update (load_state_dict into a loaded model)
        # left decode on the old W_UK / W_UV while prefill used the new weight (h2tester s26); inference tensors
        # carry no version counter (they cannot be changed outside inference mode)
        ts = (self.kv_b_proj.weight, getattr(self.kv_b_proj, "weight_scale_inv", None))
        return (dtype, *((t.data_ptr(), None if t.is_inference() else t._version) for t in ts if t is not None))

    def absorbed_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_UK [h, qk_nope, kv_lora_rank], W_UV [h, v_head_dim, kv_lora_rank]) from kv_b_proj, cached until
        kv_b_proj's weight (or scale) changes; a rebuild of the same dtype refills the cached tensors in place."""
        key = self._kv_b_key(dtype)
        if self._w_uk is None or self._absorbed_key != key:
            w = self.kv_b_proj.dense_weight(torch.float32)
            w = w.view(self.num_heads, self.nope + self.v_head_dim, self.kv_lora_rank)
            if (self._w_uk is not None and self._w_uk.dtype == dtype
                    and (torch.is_inference_mode_enabled() or not self._w_uk.is_inference())):
                self._w_uk.copy_(w[:, : self.nope])
                self._w_uv.copy_(w[:, self.nope :])
            else:
                self._w_uk = w[:, : self.nope].contiguous().to(dtype)
                self._w_uv = w[:, self.nope :].contiguous().to(dtype)
            self._absorbed_key = key
        return self._w_uk, self._w_uv

    def accepts_fp8(self) -> bool:
        """True when forward may take an :class:`FP8Act` x (triton, FP8 q_a‖kv_a fused and aliased)."""
        return self.q_kv_a.accepts_fp8(self.ops)

    def forward(self, x: torch.Tensor | FP8Act, positions: torch.Tensor, batch: AttentionBatch,
                kv_cache: torch.Tensor) -> torch.Tensor:
        """x [T, hidden] (or its :class:`FP8Act` when ``accepts_fp8``) → [T, hidden]; writes the T new
        latents into ``kv_cache`` [blocks, page, 1, 576].

        ``kv_cache=None`` (prefill only) skips the cache write: training and scoring need no cache.
        """
        T = x.shape[0]
        h = self.num_heads
        if self.ops.is_triton and x.dim() == 2 and self.q_kv_a.ready():
            q, kv = self.q_kv_a(x, self.ops)  # column views of one [T, N_q + 576] product
        else:
            q = self.q_proj(x) if hasattr(self, "q_proj") else self.q_a_proj(x)
            kv = self.kv_a_proj_with_mqa(x)
        if kv_cache is None and not batch.is_prefill:
            raise ValueError("decode needs the latent cache (kv_cache is None)")
        if self._fused_decode_prologue(batch, kv_cache, T):
            # decode on triton: q_a_layernorm + FP8 quant and kv_a_layernorm + k rope + cache write in one launch;
            # q_pe's rope happens inside mla_absorb_q (no separate rope pass)
            qb = self.q_b_proj
            cs = self.rope.cos_sin_cache(kv.device)
            qa_q, qa_s, _ = self.ops.mla_prologue_fp8(
                q, kv, self.q_a_layernorm.weight, self.q_a_layernorm.eps, positions, cs, self.kv_a_layernorm.weight,
                self.kv_a_layernorm.eps, kv_cache, batch.slot_mapping)
            q = qb.finish(self.ops.linear_fp8_input(qa_q, qa_s, qb.weight, qb.weight_scale_inv, x.dtype))
            q_nope, q_pe = q.view(T, h, self.nope + self.rope_dim).split([self.nope, self.rope_dim], dim=-1)
            w_uk, w_uv = self.absorbed_weights(x.dtype)
            qa = self.ops.mla_absorb_q(q_nope, w_uk, q_pe, kv_cache.dtype, positions=positions, cos_sin_cache=cs)
            return self._decode_attention(qa, batch, kv_cache, w_uv, T, x.dtype)
        if not hasattr(self, "q_proj"):
            qb = self.q_b_proj
            if self.ops.is_triton and qb.fp8 and q.shape[0] > 0:  # q_a_layernorm + FP8 quant: one kernel
                qa, _ = self.q_a_layernorm.forward_fp8(q)
                q = qb.finish(self.ops.linear_fp8_input(qa.q, qa.s, qb.weight, qb.weight_scale_inv, x.dtype))
            else:
                q = qb(self.q_a_layernorm(q))
        q = q.view(T, h, self.nope + self.rope_dim)
        q_nope, q_pe = q.split([self.nope, self.rope_dim], dim=-1)
        if self.ops.is_triton:
            # one kernel: rope(q_pe), rope(k_pe), kv_a_layernorm, latent-cache write (slot −1 skipped)
            q_pe, latent = self.ops.mla_rope_cache(
                q, kv, positions, self.rope.cos_sin_cache(x.device), self.kv_a_layernorm.weight,
                self.kv_a_layernorm.eps, kv_cache, batch.slot_mapping if kv_cache is not None else None,
            )
            kv_c, k_pe = latent.split([self.kv_lora_rank, self.rope_dim], dim=-1)
        else:
            kv_c, k_pe = kv.split([self.kv_lora_rank, self.rope_dim], dim=-1)
            kv_c = self.kv_a_layernorm(kv_c)
            cos, sin = self.rope.cos_sin(positions)
            q_pe = apply_rotary_interleaved(q_pe, cos, sin)
            k_pe = apply_rotary_interleaved(k_pe.unsqueeze(1), cos, sin).squeeze(1)
            if kv_cache is not None:
                latent = torch.cat([kv_c, k_pe], dim=-1).to(kv_cache.dtype)
                self.ops.write_latent_cache(kv_cache, latent, batch.slot_mapping)

        if batch.is_prefill:
            kvb = self.kv_b_proj(kv_c).view(T, h, self.nope + self.v_head_dim)
            k_nope, v = kvb.split([self.nope, self.v_head_dim], dim=-1)
            # nope and rope parts go in apart (no [T, h, 192] concatenations of q and k)
            o = self.ops.mla_prefill(q_nope, k_nope, v, batch.cu_seqlens, batch.max_seqlen, self.softmax_scale,
                                     q_pe, k_pe)
            return self.o_proj(o.reshape(T, h * self.v_head_dim).to(x.dtype))
        w_uk, w_uv = self.absorbed_weights(x.dtype)
        qa = self.ops.mla_absorb_q(q_nope, w_uk, q_pe, kv_cache.dtype)  # [q_nope·W_UK ‖ q_pe]
        return self._decode_attention(qa, batch, kv_cache, w_uv, T, x.dtype)

    def _fused_decode_prologue(self, batch: AttentionBatch, kv_cache, T: int) -> bool:
        """Decode on triton with q_lora and an FP8 q_b_proj (DeepSeek-V3): the one-launch prologue applies."""
        return (self.ops.is_triton and not batch.is_prefill and kv_cache is not None and T > 0
                and getattr(self, "q_b_proj", None) is not None and self.q_b_proj.fp8)

    def _decode_attention(self, qa, batch: AttentionBatch, kv_cache, w_uv, T: int, dtype) -> torch.Tensor:
        """Absorbed query qa [T, h, kv_lora + rope] → latent attention → W_UV → o_proj: [T, hidden]."""
        h = self.num_heads
        B = batch.cache_seqlens.shape[0]
        qa = qa.view(B, batch.seqlen_q, h, self.kv_lora_rank + self.rope_dim)
        o_lat, _ = self.ops.mla_decode(
            qa, kv_cache, batch.block_table, batch.cache_seqlens, self.softmax_scale, self.kv_lora_rank,
            batch.mla_metadata,
        )
        o_lat = o_lat.reshape(T, h, self.kv_lora_rank).to(dtype)
        op = self.o_proj
        if (self.fuse_o_quant and self.ops.is_triton and op.fp8 and T > 0 and self.v_head_dim % 128 == 0
                and self.ops._absorb_ok(16, self.kv_lora_rank, 16, 16)):
            # W_UV product + o_proj's FP8 activation quant in one kernel (no bf16 o, no separate quant launch)
            q, s = self.ops.mla_absorb_o_fp8(o_lat, w_uv)
            return op.finish(self.ops.linear_fp8_input(q, s, op.weight, op.weight_scale_inv, dtype))
        o = self.ops.mla_absorb_o(o_lat, w_uv)
        return op(o.reshape(T, h * self.v_head_dim).to(dtype))
