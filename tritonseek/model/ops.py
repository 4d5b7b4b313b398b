"""The model's kernel table: one object per backend, passed down explicitly (never a global).

``Ops("reference")`` runs every hot path through the plain-PyTorch references in
``tritonseek.kernels.reference`` (the executable spec; works on any device). ``Ops("triton")``
runs the Triton launchers in ``tritonseek.kernels`` (CUDA, or CPU under ``TRITON_INTERPRET=1``).
Each method has the signature of the kernel it stands for, so swapping a backend is local.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BACKENDS = ("triton", "reference")


class Ops:
    """Dispatch table for the model's hot paths.

    Args:
        backend: "triton" or "reference".
        fp8_activations: reference only: FP8-round the input of every FP8 linear (see the comment below).
        scale_ue8m0: every activation quant of the model (triton: fp8_linear's, the fused RMSNorm / SiLU·mul /
            MoE permute / masked-GEMM / MLA absorb quants; reference: the same ops, and the linears' rounding under
            fp8_activations) rounds its 1×128 scales up to a power of two before quantizing: DeepSeek-V3.1's
            ``quantization_config.scale_fmt: "ue8m0"`` (its inference/kernel.py act_quant). A bool, off by default;
            the model sets it from its config through :meth:`for_config`.
    Raises:
        ValueError: unknown backend. TypeError: scale_ue8m0 not a bool.
    """

    def __init__(self, backend: str, *, fp8_activations: bool = False, scale_ue8m0: bool = False):
        from tritonseek.kernels._utils import check_bool

        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
        self.backend = backend
        self.scale_ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
        # Reference only: round activations to FP8 per 1×128 group before FP8 linears, as the
        # triton backend (and DeepSeek's act_quant + fp8_gemm path) does. Off by default so the
        # reference stays comparable with transformers on dequantized weights.
        self.fp8_activations = fp8_activations
        # Reference backend: dense fp32 copies of FP8 weights, made on first use. Dequantizing is
        # deterministic, so x.float() @ cached_wᵀ gives exactly fp8_linear_ref's numbers without
        # re-expanding the 128×128 scales on every call (which dominated CPU decode time).
        self._dense: dict[tuple, tuple[tuple, torch.Tensor]] = {}  # (ptrs, shape) → (versions, dense weight)

    @property
    def is_triton(self) -> bool:
        return self.backend == "triton"

    def __repr__(self) -> str:
        return f"Ops({self.backend!r}{', scale_ue8m0=True' if self.scale_ue8m0 else ''})"

    def for_config(self, cfg) -> "Ops":
        """This table with ``scale_ue8m0`` as the model config asks (``cfg.quantization_config.scale_fmt ==
        "ue8m0"``; no quantization_config or no scale_fmt: plain fp32 scales): self when it already matches, else a
        copy (same backend, fp8_activations and dense-weight cache), so one Ops can serve models of both formats."""
        q = getattr(cfg, "quantization_config", None)
        want = q is not None and getattr(q, "scale_fmt", None) == "ue8m0"
        if want == self.scale_ue8m0:
            return self
        other = Ops(self.backend, fp8_activations=self.fp8_activations, scale_ue8m0=want)
        other._dense = self._dense
        return other

    def _act_quant_ref(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from tritonseek.kernels.reference.fp8 import per_token_group_quant_fp8_ref

        return per_token_group_quant_fp8_ref(x2, 128, self.scale_ue8m0)

    # ------------------------------------------------------------------ linear layers
    def linear(self, x: torch.Tensor, weight: torch.Tensor, weight_scale_inv: torch.Tensor | None) -> torch.Tensor:
        """y = x·Wᵀ; FP8 weights (e4m3 + 128×128 weight_scale_inv) go through the block-FP8 path."""
        if weight_scale_inv is None:
            return F.linear(x, weight.to(x.dtype))
        if self.is_triton:
            if self.scale_ue8m0 and x.shape[-1] == weight.shape[-1] and x.shape[-1] % 16 == 0:
                return self._fp8_linear_ue8m0(x, weight, weight_scale_inv)
            from tritonseek.kernels.fp8_gemm import fp8_linear

            return fp8_linear(x, weight, weight_scale_inv)
        if self.fp8_activations:
            from tritonseek.kernels.reference.fp8 import dequant_token_group_fp8_ref

            x2 = x.reshape(-1, x.shape[-1])
            x = dequant_token_group_fp8_ref(*self._act_quant_ref(x2)).to(x.dtype).reshape(x.shape)
        # keyed on storage + version (a view such as an expert's w13[e] shares its base's counter): an in-place update
        # (load_state_dict into a loaded model) kept the old dense copy and gave the old outputs (h2tester s26);
        # inference tensors have no counter (they cannot change outside inference mode)
        key = (weight.data_ptr(), tuple(weight.shape), weight_scale_inv.data_ptr())
        ver = tuple(None if t.is_inference() else t._version for t in (weight, weight_scale_inv))
        hit = self._dense.get(key)
        if hit is None or hit[0] != ver:
            hit = self._dense[key] = (ver, self.dequant_block_fp8(weight, weight_scale_inv, torch.float32))
        return (x.float() @ hit[1].t()).to(x.dtype)

    @staticmethod
    def _fp8_linear_ue8m0(x, weight, weight_scale_inv):
        # fp8_linear's steps with UE8M0 activation scales (fp8_linear has no scale-format switch); an x whose K does
        # not fit the weight (or the GEMM's 16-byte rows) takes fp8_linear itself, for its error naming x
        from tritonseek.kernels.fp8_gemm import fp8_gemm_nt
        from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8

        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        if x2.shape[0] == 0:
            return x.new_empty((*lead, weight.shape[0]))
        x_q, x_s = per_token_group_quant_fp8(x2, 128, scale_ue8m0=True)
        return fp8_gemm_nt(x_q, x_s, weight, weight_scale_inv, out_dtype=x.dtype).reshape(*lead, weight.shape[0])

    def linear_fp8_input(self, x_q: torch.Tensor, x_scale: torch.Tensor, weight: torch.Tensor,
                         weight_scale_inv: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        """y = (x_q ⊙ x_scale)·Wᵀ for an input already quantized per 1×128 group (x_q [T, K] e4m3,
        x_scale [T, K/128] fp32), W block-FP8; y [T, N] out_dtype."""
        if self.is_triton:
            from tritonseek.kernels.fp8_gemm import fp8_gemm_nt

            return fp8_gemm_nt(x_q, x_scale, weight, weight_scale_inv, out_dtype=out_dtype)
        from tritonseek.kernels.reference.fp8 import dequant_token_group_fp8_ref

        return self.linear(dequant_token_group_fp8_ref(x_q, x_scale).to(out_dtype), weight, weight_scale_inv)

    def silu_mul_quant(self, gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h = silu(gate)·up in fp32 for gate_up = [gate ‖ up] [T, 2·I], quantized per 1×128 group →
        (h_q [T, I] e4m3, h_scale [T, I/128] fp32)."""
        if self.is_triton:
            from tritonseek.kernels.fp8_quant import silu_mul_quant_fp8

            return silu_mul_quant_fp8(gate_up, 128, self.scale_ue8m0)
        g, u = gate_up.float().chunk(2, dim=-1)
        return self._act_quant_ref(F.silu(g) * u)

    def dequant_block_fp8(self, weight: torch.Tensor, scale_inv: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        from tritonseek.kernels.reference.fp8 import dequant_block_fp8_ref

        return dequant_block_fp8_ref(weight, scale_inv, dtype=dtype)

    def quantize_block_fp8(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.is_triton and weight.is_cuda:
            from tritonseek.kernels.fp8_quant import per_block_quant_fp8

            return per_block_quant_fp8(weight)
        from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref

        return per_block_quant_fp8_ref(weight)

    # ------------------------------------------------------------------ attention
    def mla_decode(self, q, kv_cache, block_table, cache_seqlens, softmax_scale, head_dim_v, metadata=None):
        """Absorbed MLA over the paged latent cache (FlashMLA semantics); returns (out, lse)."""
        if self.is_triton:
            from tritonseek.kernels.mla_decode import mla_decode

            return mla_decode(
                q, kv_cache, block_table, cache_seqlens, softmax_scale=softmax_scale, causal=True,
                head_dim_v=head_dim_v, metadata=metadata, check_ids=False,  # engine-built ids: no sync per layer
            )
        from tritonseek.kernels.reference.mla import mla_decode_ref

        return mla_decode_ref(
            q, kv_cache, block_table, cache_seqlens, softmax_scale=softmax_scale, causal=True, head_dim_v=head_dim_v
        )

    def mla_metadata(self, cache_seqlens: torch.Tensor, seqlen_q: int, num_heads: int):
        """Split-KV schedule computed once per decode step and shared by every layer (None on reference)."""
        if not self.is_triton:
            return None
        from tritonseek.kernels.mla_decode import get_mla_metadata

        return get_mla_metadata(cache_seqlens, seqlen_q, num_heads)

    def mla_prefill(self, q_nope, k_nope, v, cu_seqlens, max_seqlen, softmax_scale, q_pe, k_pe):
        """Varlen causal attention of the non-absorbed MLA prefill; q·kᵀ = q_nope·k_nopeᵀ + q_pe·k_peᵀ.

        q_nope, k_nope [T, h, nope], v [T, h, v_head_dim] (strided views of the projections are fine),
        q_pe [T, h, rope], k_pe [T, rope] (one rope key per token, shared by the heads)."""
        if self.is_triton:
            from tritonseek.kernels.mla_prefill import mla_prefill

            return mla_prefill(q_nope, k_nope, v, cu_seqlens, max_seqlen, softmax_scale, causal=True,
                               q_pe=q_pe, k_pe=k_pe, check_ids=False)  # engine-built offsets: no sync per layer
        from tritonseek.kernels.reference.mla import mla_prefill_ref

        T, h = q_nope.shape[:2]
        q = torch.cat([q_nope, q_pe], dim=-1)
        k = torch.cat([k_nope, k_pe.unsqueeze(1).expand(T, h, k_pe.shape[-1])], dim=-1)
        return mla_prefill_ref(q, k, v, cu_seqlens, softmax_scale, causal=True)

    def write_latent_cache(self, kv_cache, latent, slot_mapping) -> None:
        """kv_cache.view(-1, d)[slot_mapping] = latent, in place; slot -1 skipped."""
        if self.is_triton:
            from tritonseek.kernels.mla_prefill import write_latent_cache

            # the engine's allocator built the slots; a range check would cost a sync per layer
            write_latent_cache(kv_cache, latent, slot_mapping, check_ids=False)
            return
        from tritonseek.kernels.reference.mla import write_latent_cache_ref

        write_latent_cache_ref(kv_cache, latent, slot_mapping)

    def mla_absorb_q(self, q_nope, w_uk, q_pe, out_dtype, positions=None, cos_sin_cache=None):
        """Absorbed query [q_nope·W_UK per head ‖ q_pe] → [T, h, kv_lora_rank + rope] in out_dtype; with
        positions + cos_sin_cache, q_pe is un-roped and rotated first (interleaved RoPE, as mla_rope_cache).
        Triton for power-of-two widths ≥ 16 (DeepSeek's); other widths take the torch einsum."""
        if self.is_triton and self._absorb_ok(q_nope.shape[-1], w_uk.shape[-1], q_pe.shape[-1], 16):
            from tritonseek.kernels.mla_absorb import mla_absorb_q

            return mla_absorb_q(q_nope, w_uk, q_pe, out_dtype=out_dtype, positions=positions,
                                cos_sin_cache=cos_sin_cache, check_ids=False)  # engine-built positions
        if positions is not None:
            from tritonseek.kernels.reference.rope import rotary_interleaved_ref

            cs = cos_sin_cache[positions]
            half = cs.shape[1] // 2
            q_pe = rotary_interleaved_ref(q_pe, cs[:, :half], cs[:, half:])
        return torch.cat([torch.einsum("thd,hdc->thc", q_nope, w_uk), q_pe], dim=-1).to(out_dtype)

    def mla_absorb_o(self, o_lat, w_uv):
        """Per-head value up-projection o = o_lat·W_UVᵀ: [T, h, kv_lora_rank] → [T, h, v_head_dim]."""
        if self.is_triton and self._absorb_ok(16, o_lat.shape[-1], 16, w_uv.shape[1]):
            from tritonseek.kernels.mla_absorb import mla_absorb_o

            return mla_absorb_o(o_lat, w_uv)
        return torch.einsum("thc,hdc->thd", o_lat, w_uv)

    def mla_absorb_o_fp8(self, o_lat, w_uv):
        """o_proj's FP8 input straight from the W_UV product: (q [T, h·v] e4m3, s [T, h·v/128] fp32 MN-major) =
        per-token-group quant of mla_absorb_o(o_lat, w_uv); one kernel on triton (v_head_dim % 128 == 0)."""
        if self.is_triton:
            from tritonseek.kernels.mla_absorb import mla_absorb_o_fp8

            return mla_absorb_o_fp8(o_lat, w_uv, scale_ue8m0=self.scale_ue8m0)
        o = self.mla_absorb_o(o_lat, w_uv)
        return self._act_quant_ref(o.reshape(o.shape[0], -1))

    @staticmethod
    def _absorb_ok(nope, kv_lora, rope, v_dim) -> bool:
        from tritonseek.kernels.mla_absorb import mla_absorb_supported

        return mla_absorb_supported(nope, kv_lora, rope, v_dim)

    # ------------------------------------------------------------------ small fused ops (decode path)
    def rms_norm(self, x, weight, eps):
        """y = x / sqrt(mean(x²) + eps) · weight in fp32, rounded to x.dtype; x [T, N]."""
        if self.is_triton:
            from tritonseek.kernels.norm import rms_norm

            return rms_norm(x, weight, eps)
        from tritonseek.kernels.reference.norm import rms_norm_ref

        return rms_norm_ref(x, weight, eps)

    def rms_norm_quant(self, x, weight, eps):
        """(q, s) = per-token-group FP8 quant (1×128) of rms_norm(x) rounded to x.dtype; one kernel on triton."""
        if self.is_triton:
            from tritonseek.kernels.norm import rms_norm_quant_fp8

            return rms_norm_quant_fp8(x, weight, eps, scale_ue8m0=self.scale_ue8m0)
        return self._act_quant_ref(self.rms_norm(x, weight, eps))

    def fused_add_rms_norm_quant(self, x, residual, weight, eps):
        """h = x + residual; returns (q, s, h) with (q, s) the FP8 group quant of rms_norm(h); one kernel on triton."""
        if self.is_triton:
            from tritonseek.kernels.norm import fused_add_rms_norm_quant_fp8

            return fused_add_rms_norm_quant_fp8(x, residual, weight, eps, scale_ue8m0=self.scale_ue8m0)
        y, h = self.fused_add_rms_norm(x, residual, weight, eps)
        return (*self._act_quant_ref(y), h)

    def fused_add_rms_norm(self, x, residual, weight, eps):
        """h = x + residual; returns (rms_norm(h), h); x, residual [T, N]."""
        if self.is_triton:
            from tritonseek.kernels.norm import fused_add_rms_norm

            return fused_add_rms_norm(x, residual, weight, eps)
        from tritonseek.kernels.reference.norm import fused_add_rms_norm_ref

        return fused_add_rms_norm_ref(x, residual, weight, eps)

    def mla_rope_cache(self, q, kv, positions, cos_sin_cache, kv_norm_weight, eps, kv_cache, slot_mapping):
        """MLA prologue: (rope(q_pe), latent = [rms_norm(kv_c) ‖ rope(k_pe)]), latent written at slot_mapping."""
        if self.is_triton:
            from tritonseek.kernels.rope_cache import mla_rope_cache

            return mla_rope_cache(q, kv, positions, cos_sin_cache, kv_norm_weight, eps, kv_cache, slot_mapping,
                                  check_ids=False)  # engine-built ids (see write_latent_cache)
        from tritonseek.kernels.reference.rope import mla_rope_cache_ref

        return mla_rope_cache_ref(q, kv, positions, cos_sin_cache, kv_norm_weight, eps, kv_cache, slot_mapping)

    def mla_prologue_fp8(self, q_a, kv, q_norm_weight, q_eps, positions, cos_sin_cache, kv_norm_weight, eps,
                         kv_cache, slot_mapping):
        """MLA decode prologue: ((q, s) = FP8 group quant of rms_norm(q_a), latent = [rms_norm(kv_c) ‖
        rope(k_pe)]) with the latent written at slot_mapping; one kernel on triton (q's rope: mla_absorb_q).
        With scale_ue8m0 the q scales are powers of two, as rms_norm_quant's."""
        if self.is_triton:
            from tritonseek.kernels.rope_cache import mla_prologue_fp8

            return mla_prologue_fp8(q_a, kv, q_norm_weight, q_eps, positions, cos_sin_cache, kv_norm_weight, eps,
                                    kv_cache, slot_mapping, check_ids=False,  # engine-built ids
                                    scale_ue8m0=self.scale_ue8m0)
        from tritonseek.kernels.reference.rope import mla_rope_cache_ref

        q, s = self.rms_norm_quant(q_a, q_norm_weight, q_eps)
        # (kv as a one-head "q": its rotated k_pe is discarded; only the latent is used)
        _, latent = mla_rope_cache_ref(kv[:, None, :], kv, positions, cos_sin_cache, kv_norm_weight, eps,
                                       kv_cache, slot_mapping)
        return q, s, latent

    # ------------------------------------------------------------------ MoE
    def gate_topk(self, logits, bias, *, top_k, n_group, topk_group, scoring_func, topk_method,
                  norm_topk_prob, routed_scaling_factor):
        """Router scores → (topk_weights [T, k] fp32, topk_ids [T, k] int32), DeepSeek-V3 Gate semantics."""
        kw = dict(
            top_k=top_k, n_group=n_group, topk_group=topk_group, scoring_func=scoring_func,
            topk_method=topk_method, norm_topk_prob=norm_topk_prob, routed_scaling_factor=routed_scaling_factor,
        )
        if self.is_triton:
            from tritonseek.kernels.moe_routing import gate_topk

            return gate_topk(logits, bias, **kw)
        from tritonseek.kernels.reference.moe import gate_topk_ref

        return gate_topk_ref(logits, bias, **kw)

    # ------------------------------------------------------------------ sampling
    def argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy token of each row: the first (lowest-id) maximum of logits [B, V] → [B] int64.

        Triton: ``tritonseek.kernels.sampling.argmax`` (split-row max/argmax + combine, two launches, no
        host sync: graph-safe; logits of any float dtype read as is). Reference: ``torch.argmax``."""
        if not self.is_triton:
            return logits.argmax(dim=-1)
        from tritonseek.kernels.sampling import argmax

        return argmax(logits)

    def sample(self, logits, temperature, top_k, top_p, exp_noise):
        """Temperature / top-k / top-p sampling by the exponential race; temperature 0 → argmax."""
        if self.is_triton:
            from tritonseek.kernels.sampling import sample

            return sample(logits, temperature, top_k, top_p, exp_noise)
        from tritonseek.kernels.reference.sampling import sample_ref

        return sample_ref(logits, temperature, top_k, top_p, exp_noise)

    def verify_greedy(self, draft_tokens, target_logits):
        """Greedy verification → (output_tokens [B, K+1] padded −1, num_accepted [B] int32)."""
        if self.is_triton:
            from tritonseek.kernels.spec_verify import verify_greedy

            return verify_greedy(draft_tokens, target_logits)
        from tritonseek.kernels.reference.spec import verify_greedy_ref

        return verify_greedy_ref(draft_tokens, target_logits)

    def verify(self, draft_tokens, target_logits, temperature, top_k, top_p, uniforms, exp_noise):
        """Speculative verification → (output_tokens [B, K+1] padded −1, num_accepted [B] int32).

        Rejection sampling with one-hot (greedy MTP) drafts; rows with temperature 0 verify greedily.
        """
        if self.is_triton:
            from tritonseek.kernels.spec_verify import verify_rejection

            return verify_rejection(draft_tokens, None, target_logits, temperature, top_k, top_p, uniforms, exp_noise)
        from tritonseek.kernels.reference.spec import verify_rejection_ref

        return verify_rejection_ref(draft_tokens, None, target_logits, temperature, top_k, top_p, uniforms, exp_noise)
