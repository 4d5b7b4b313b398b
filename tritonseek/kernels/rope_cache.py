"""MLA's per-token prologue in one launch: interleaved RoPE on q_pe and k_pe, RMSNorm of the
compressed kv, and the write of the latent row [kv_lora_rank normed kv ‖ qk_rope_head_dim roped
k_pe] into the paged latent cache.

It replaces, per layer and step, the cos/sin computation, two rotary passes (each ~8 torch ops),
the kv_a_layernorm (~8 ops), the concatenation and the cache scatter. cos/sin come from a
per-position table built once by the model with torch (``cos_sin_cache``), so the angles are
bit-identical to the model's YaRN frequencies; the kernel only gathers row ``positions[t]``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import check_runnable_device, check_tensor, interpreter_active
from tritonseek.kernels.norm import round_to_bf16

_FLOAT_IN = (torch.bfloat16, torch.float16, torch.float32)


def _rope_cache_config(num_heads: int, kv_lora_rank: int) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_C, num_warps): ≤ 16 heads per program so the q rotation of 128 heads spreads
    over 8 programs (one program for all 128 heads ran ~16 µs on the H200: latency-bound), plus one
    program per token for the latent row."""
    block_h = min(16, max(1, triton.next_power_of_2(num_heads)))
    block_c = max(16, triton.next_power_of_2(kv_lora_rank))
    return block_h, block_c, 4


@triton.jit
def _rotate(x, cos, sin, SHAPE0: tl.constexpr, ROPE: tl.constexpr, EXACT_BF16: tl.constexpr):
    # x: [SHAPE0, ROPE] fp32 holding interleaved pairs (x[2i], x[2i+1]); cos/sin: [1, ROPE/2]
    # → [SHAPE0, ROPE] fp32 with each pair rotated by angle i
    x0, x1 = tl.split(tl.reshape(x, [SHAPE0, ROPE // 2, 2]))
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    y = tl.reshape(tl.join(y0, y1), [SHAPE0, ROPE])
    if EXACT_BF16:
        y = round_to_bf16(y)
    return y


@triton.jit
def _mla_rope_cache_kernel(
    q_ptr, kv_ptr, pos_ptr, cs_ptr, w_ptr, qo_ptr, lat_ptr, cache_ptr, slot_ptr,
    H, stride_qt, stride_qh, q_pe_offset, stride_kvt, stride_qot, stride_qoh, stride_lt,
    stride_cb, stride_cp, eps,
    KV_LORA: tl.constexpr, ROPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
    PAGE_SIZE: tl.constexpr, WRITE_CACHE: tl.constexpr, EXACT_BF16: tl.constexpr,
):
    # q: [T, H, *] with q_pe at columns [q_pe_offset, q_pe_offset + ROPE); kv: [T, KV_LORA + ROPE]
    # positions: [T] int64; cos_sin_cache: [max_pos, ROPE] fp32 = (cos ‖ sin), ROPE/2 each
    # q_pe_out: [T, H, ROPE]; latent: [T, KV_LORA + ROPE]; kv_cache: [blocks, PAGE_SIZE, 1, KV_LORA + ROPE]
    # slot_mapping: [T] int64, −1 = no cache write.
    # program (t, j): j < cdiv(H, BLOCK_H) rotates heads [j·BLOCK_H, (j+1)·BLOCK_H) of token t's q_pe;
    # j = cdiv(H, BLOCK_H) builds token t's latent row (kv norm + k_pe rotation) and writes the cache.
    HALF: tl.constexpr = ROPE // 2
    t = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    i = tl.arange(0, HALF)
    cos = tl.load(cs_ptr + pos * ROPE + i)[None, :]
    sin = tl.load(cs_ptr + pos * ROPE + HALF + i)[None, :]
    r = tl.arange(0, ROPE)
    if j * BLOCK_H < H:
        hs = j * BLOCK_H + tl.arange(0, BLOCK_H)
        hmask = (hs < H)[:, None]
        q = tl.load(q_ptr + t * stride_qt + hs[:, None] * stride_qh + q_pe_offset + r[None, :], mask=hmask,
                    other=0.0).to(tl.float32)
        y = _rotate(q, cos, sin, BLOCK_H, ROPE, EXACT_BF16)
        tl.store(qo_ptr + t * stride_qot + hs[:, None] * stride_qoh + r[None, :], y.to(qo_ptr.dtype.element_ty),
                 mask=hmask)
    else:
        # compressed kv: RMSNorm over KV_LORA columns
        c = tl.arange(0, BLOCK_C)
        cmask = c < KV_LORA
        kvc = tl.load(kv_ptr + t * stride_kvt + c, mask=cmask, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt_rn(tl.sum(kvc * kvc, axis=0) / KV_LORA + eps)
        w = tl.load(w_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        kvn = (kvc * rstd) * w
        if EXACT_BF16:
            kvn = round_to_bf16(kvn)
        kvn = kvn.to(lat_ptr.dtype.element_ty)
        tl.store(lat_ptr + t * stride_lt + c, kvn, mask=cmask)
        # k_pe (one row)
        k = tl.load(kv_ptr + t * stride_kvt + KV_LORA + r).to(tl.float32)[None, :]
        kr = _rotate(k, cos, sin, 1, ROPE, EXACT_BF16).to(lat_ptr.dtype.element_ty)
        tl.store(lat_ptr + t * stride_lt + KV_LORA + r[None, :], kr)
        if WRITE_CACHE:
            slot = tl.load(slot_ptr + t)
            keep = slot >= 0
            base = cache_ptr + (slot // PAGE_SIZE) * stride_cb + (slot % PAGE_SIZE) * stride_cp
            ty = cache_ptr.dtype.element_ty
            tl.store(base + c, kvn.to(ty), mask=cmask & keep)
            tl.store(base + KV_LORA + r[None, :], kr.to(ty), mask=keep & (r < ROPE)[None, :])


def mla_rope_cache(
    q: torch.Tensor, kv: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
    kv_norm_weight: torch.Tensor, eps: float, kv_cache: torch.Tensor | None, slot_mapping: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q_pe' = rope(q_pe), latent = [rms_norm(kv_c)·w ‖ rope(k_pe)]; kv_cache.view(-1, d)[slot] = latent.

    rope rotates interleaved pairs (x[2i], x[2i+1]) by angle i: (x0·cos − x1·sin, x0·sin + x1·cos)
    with cos/sin = cos_sin_cache[positions[t]], in fp32, rounded once to the output dtype.
    q: [T, num_heads, qk_nope_head_dim + qk_rope_head_dim] bf16/fp16/fp32, last dim contiguous
    (q_pe = the last qk_rope_head_dim columns). kv: [T, kv_lora_rank + qk_rope_head_dim] same dtype
    (kv_a_proj_with_mqa output: compressed kv ‖ k_pe), last dim contiguous. positions: [T] int64.
    cos_sin_cache: [max_positions, qk_rope_head_dim] fp32 contiguous = (cos ‖ sin) of each position's
    YaRN angles (positions must be < max_positions; not checked on the device). kv_norm_weight:
    [kv_lora_rank] any float dtype (kv_a_layernorm); eps > 0. kv_cache: [num_blocks, page_size, 1,
    kv_lora_rank + qk_rope_head_dim] (bf16 in DeepSeek; page_size a power of two, last dim
    contiguous) or None for no cache write; slot_mapping: [T] int64 (block_id·page_size + offset,
    −1 = skip, e.g. CUDA-graph padding rows) or None with kv_cache None.
    Returns (q_pe [T, num_heads, qk_rope_head_dim] q.dtype, latent [T, kv_lora_rank +
    qk_rope_head_dim] kv.dtype); the cache row is latent cast to kv_cache.dtype.
    Raises TypeError (dtype) or ValueError (shape, device, layout, eps).
    Semantics: DeepSeek-V3 inference/model.py MLA (apply_rotary_emb, kv_norm) + vLLM
    ``concat_and_cache_mla``.
    """
    check_tensor("q", q, dtype=_FLOAT_IN, ndim=3)
    check_runnable_device("q", q)
    dev = q.device
    check_tensor("kv", kv, dtype=q.dtype, ndim=2, device=dev)
    check_tensor("positions", positions, dtype=torch.int64, ndim=1, device=dev)
    check_tensor("cos_sin_cache", cos_sin_cache, dtype=torch.float32, ndim=2, device=dev)
    check_tensor("kv_norm_weight", kv_norm_weight, dtype=_FLOAT_IN, ndim=1, device=dev)
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    T, H, dq = q.shape
    rope = cos_sin_cache.shape[1]
    kv_lora = kv_norm_weight.shape[0]
    if rope < 2 or rope & (rope - 1):
        raise ValueError(f"cos_sin_cache's width (qk_rope_head_dim) must be a power of two ≥ 2, got {rope}")
    if not cos_sin_cache.is_contiguous():
        raise ValueError("cos_sin_cache must be contiguous")
    if dq < rope:
        raise ValueError(f"q's head dim {dq} is smaller than qk_rope_head_dim {rope}")
    if kv.shape != (T, kv_lora + rope):
        raise ValueError(f"kv must be [T={T}, kv_lora_rank {kv_lora} + qk_rope_head_dim {rope}], "
                         f"got {tuple(kv.shape)}")
    if positions.shape[0] != T:
        raise ValueError(f"positions has {positions.shape[0]} entries, q {T} rows")
    if q.stride(2) != 1 or kv.stride(1) != 1:
        raise ValueError(f"q and kv need a contiguous last dim, strides {q.stride()} {kv.stride()}")
    if kv_cache is not None:
        check_tensor("kv_cache", kv_cache, dtype=_FLOAT_IN, ndim=4, device=dev)
        check_tensor("slot_mapping", slot_mapping, dtype=torch.int64, ndim=1, device=dev)
        _, page_size, one, d = kv_cache.shape
        if one != 1 or d != kv_lora + rope:
            raise ValueError(f"kv_cache must be [num_blocks, page_size, 1, {kv_lora + rope}], got {tuple(kv_cache.shape)}")
        if page_size < 1 or page_size & (page_size - 1):
            raise ValueError(f"kv_cache page_size must be a power of two, got {page_size}")
        if kv_cache.stride(-1) != 1:
            raise ValueError(f"kv_cache needs a contiguous last dim, strides {kv_cache.stride()}")
        if slot_mapping.shape[0] != T:
            raise ValueError(f"slot_mapping has {slot_mapping.shape[0]} entries, q {T} rows")
    elif slot_mapping is not None:
        raise ValueError("slot_mapping given without kv_cache")
    q_pe = torch.empty((T, H, rope), dtype=q.dtype, device=dev)
    latent = torch.empty((T, kv_lora + rope), dtype=kv.dtype, device=dev)
    if T == 0:
        return q_pe, latent
    block_h, block_c, warps = _rope_cache_config(H, kv_lora)
    write = kv_cache is not None
    _mla_rope_cache_kernel[(T, triton.cdiv(H, block_h) + 1)](
        q, kv, positions, cos_sin_cache, kv_norm_weight, q_pe, latent,
        kv_cache if write else latent, slot_mapping if write else positions,
        H, q.stride(0), q.stride(1), dq - rope, kv.stride(0), q_pe.stride(0), q_pe.stride(1), latent.stride(0),
        kv_cache.stride(0) if write else 0, kv_cache.stride(1) if write else 0, float(eps),
        KV_LORA=kv_lora, ROPE=rope, BLOCK_H=block_h, BLOCK_C=block_c,
        PAGE_SIZE=kv_cache.shape[1] if write else 1, WRITE_CACHE=write,
        EXACT_BF16=interpreter_active() and q.dtype == torch.bfloat16, num_warps=warps,
    )
    return q_pe, latent
