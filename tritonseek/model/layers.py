"""Building blocks of the DeepSeek model: RMSNorm, YaRN RoPE, FP8/dense Linear, gated MLP.

Each layer holds parameters under the Hugging Face key names; the arithmetic that a kernel issue
replaces goes through :class:`tritonseek.model.ops.Ops` so the backend swap stays local.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from typing import NamedTuple

from tritonseek.kernels.reference.rope import rotary_interleaved_ref
from tritonseek.model.config import ModelConfig, yarn_attention_factor
from tritonseek.model.ops import Ops
from tritonseek.parallel import TP

FP8_BLOCK = 128


class FP8Act(NamedTuple):
    """An activation already quantized per 1×128 group: q [T, K] e4m3, s [T, K/128] fp32 (MN-major), and
    the dtype the unquantized activation had (the output dtype of the GEMM that reads it). Made by the
    fused RMSNorm + quant kernels for consumers that only feed it to FP8 GEMMs (``accepts_fp8``)."""

    q: torch.Tensor
    s: torch.Tensor
    dtype: torch.dtype

    @property
    def shape(self) -> torch.Size:
        return self.q.shape

    @property
    def device(self) -> torch.device:
        return self.q.device

    def dim(self) -> int:
        return self.q.dim()


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) · weight, computed in fp32 (DeepSeek-V3 RMSNorm).

    With ``ops`` on the triton backend it runs one fused kernel (``tritonseek.kernels.norm``);
    otherwise the torch code below, which is the spec.
    """

    def __init__(self, dim: int, eps: float = 1e-6, ops: Ops | None = None):
        super().__init__()
        self.eps = eps
        self.ops = ops
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)

    def _fused(self, x: torch.Tensor) -> bool:
        return self.ops is not None and self.ops.is_triton and x.dim() == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused(x):
            return self.ops.rms_norm(x, self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h = x + residual → (norm(h), h): the pre-norm residual stream step, one kernel on triton."""
        if self._fused(x):
            return self.ops.fused_add_rms_norm(x, residual, self.weight, self.eps)
        h = x + residual
        return self(h), h

    def forward_fp8(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[FP8Act, torch.Tensor]:
        """(FP8 quant of norm(h), h) with h = x (+ residual): one kernel on triton (the same q/s as norm
        then ``per_token_group_quant_fp8``); for consumers that ``accepts_fp8``."""
        if residual is None:
            q, s = self.ops.rms_norm_quant(x, self.weight, self.eps)
            return FP8Act(q, s, x.dtype), x
        q, s, h = self.ops.fused_add_rms_norm_quant(x, residual, self.weight, self.eps)
        return FP8Act(q, s, x.dtype), h


class Linear(nn.Module):
    """y = x·Wᵀ with W either dense (``weight``) or block-FP8 (``weight`` e4m3 + ``weight_scale_inv``).

    weight: [out_features, in_features]; weight_scale_inv: [ceil(out/128), ceil(in/128)] fp32, one
    scale per 128×128 block such that W ≈ weight · scale_inv (DeepSeek-V3 checkpoint format).

    Tensor parallel (``tp`` with more than one rank): ``mode="col"`` keeps this rank's slice of the
    output rows, ``mode="row"`` its slice of the input columns and all-reduces the output,
    ``mode="vocab"`` is column-parallel with the outputs gathered (the LM head). ``shard`` =
    (dim, start, end) of the checkpoint tensor this rank holds. An FP8 column-parallel shard whose rows
    are off the 128-row block grid holds the enclosing whole blocks (``shard`` widened to them, their
    scales unchanged) and ``finish`` keeps its own ``out_slice`` of the product: the same FP8 GEMM as one
    process (a few rows computed twice; only small models are off the grid). A row-parallel shard off
    the grid is held dense (the loader dequantizes it).
    """

    def __init__(self, in_features: int, out_features: int, *, fp8: bool, dtype: torch.dtype, ops: Ops,
                 tp: TP | None = None, mode: str | None = None):
        super().__init__()
        self.tp = tp if tp is not None and tp.enabled and mode else None
        self.mode = mode if self.tp else None
        self.shard = None
        self.out_slice: tuple[int, int] | None = None  # (lo, hi) columns of the product this rank keeps
        if self.tp is not None:
            dim = 1 if mode == "row" else 0
            full = in_features if dim == 1 else out_features
            start, end = self.tp.split(full, "in_features" if dim == 1 else "out_features")
            on_grid = start % FP8_BLOCK == 0 and (end - start) % FP8_BLOCK == 0
            if fp8 and mode == "col" and not on_grid:  # hold the enclosing FP8 blocks, keep our rows of the product
                a0, a1 = start // FP8_BLOCK * FP8_BLOCK, min(math.ceil(end / FP8_BLOCK) * FP8_BLOCK, full)
                self.out_slice = (start - a0, end - a0)
                start, end, on_grid = a0, a1, True
            self.shard = (dim, start, end)
            if dim == 1:
                in_features = end - start
            else:
                out_features = end - start
            fp8 = fp8 and on_grid
        self.in_features = in_features
        self.out_features = out_features
        self.fp8 = fp8
        self.ops = ops
        wdtype = torch.float8_e4m3fn if fp8 else dtype
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=wdtype), requires_grad=False)
        if fp8:
            sshape = (math.ceil(out_features / FP8_BLOCK), math.ceil(in_features / FP8_BLOCK))
            self.weight_scale_inv = nn.Parameter(torch.empty(sshape, dtype=torch.float32), requires_grad=False)
        else:
            self.register_parameter("weight_scale_inv", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.ops.linear(x, self.weight, self.weight_scale_inv))

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        """The tensor-parallel collective on this layer's local product y (all-reduce for "row",
        gather for "vocab"; identity otherwise)."""
        if self.mode == "row":
            y = self.tp.all_reduce(y)
        elif self.mode == "vocab":
            y = self.tp.all_gather_last(y)
        elif self.out_slice is not None:
            y = y[..., self.out_slice[0] : self.out_slice[1]].contiguous()
        return y

    def dense_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W (this rank's rows: ``out_slice`` applied) as a dense tensor (dequantized for FP8)."""
        if self.fp8:
            w = self.ops.dequant_block_fp8(self.weight, self.weight_scale_inv, dtype)
        else:
            w = self.weight.to(dtype)
        return w if self.out_slice is None else w[self.out_slice[0] : self.out_slice[1]]

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, fp8={self.fp8}"


class FusedLinears:
    """Linears that read the same input, stored as row blocks of one weight so one GEMM (and one
    activation quant) serves them all: y = x·[W_0; W_1; …]ᵀ = [y_0 ‖ y_1 ‖ …].

    At construction each Linear's ``weight`` (and FP8 ``weight_scale_inv``) is re-pointed at a row
    slice of one tensor, so the HF parameter names, the loader's in-place fills and ``state_dict`` are
    unchanged. Fusable when the linears share in_features, dtype and FP8-ness, none is a row-parallel or
    vocab layer (those run a collective on their own output) or keeps an ``out_slice``, and (FP8) every out_features but the last
    is a multiple of 128 (the scale blocks then stack). ``ready()`` re-checks the aliasing (a later
    ``.to()`` or ``param.data = …`` breaks it; callers then run the linears one by one).
    """

    def __init__(self, linears: list[Linear]):
        first = linears[0]
        self.linears = linears
        self.sizes = [lin.out_features for lin in linears]
        self.weight = self.scale = None
        ok = (len({(lin.in_features, lin.fp8, lin.weight.dtype, lin.weight.device) for lin in linears}) == 1
              and all(lin.mode in (None, "col") and lin.out_slice is None for lin in linears)
              and not (first.fp8 and any(n % FP8_BLOCK for n in self.sizes[:-1])))
        if not ok:
            return
        self.weight = torch.empty(sum(self.sizes), first.in_features, dtype=first.weight.dtype,
                                  device=first.weight.device)
        if first.fp8:
            kb = first.weight_scale_inv.shape[1]
            self.scale = torch.empty(sum(lin.weight_scale_inv.shape[0] for lin in linears), kb,
                                     dtype=first.weight_scale_inv.dtype, device=first.weight.device)
        row = srow = 0
        for lin in linears:
            n = lin.out_features
            lin.weight = nn.Parameter(self.weight[row : row + n], requires_grad=False)
            row += n
            if self.scale is not None:
                nb = lin.weight_scale_inv.shape[0]
                lin.weight_scale_inv = nn.Parameter(self.scale[srow : srow + nb], requires_grad=False)
                srow += nb

    def ready(self) -> bool:
        """True while every linear's parameters still alias the fused tensors."""
        if self.weight is None:
            return False
        row_bytes = self.weight.stride(0) * self.weight.element_size()
        row = srow = 0
        for lin in self.linears:
            if lin.weight.data_ptr() != self.weight.data_ptr() + row * row_bytes:
                return False
            row += lin.out_features
            if self.scale is not None:
                if lin.weight_scale_inv.data_ptr() != self.scale[srow:].data_ptr():
                    return False
                srow += lin.weight_scale_inv.shape[0]
        return True

    def __call__(self, x: torch.Tensor | FP8Act, ops: Ops) -> list[torch.Tensor]:
        """x [T, K] (or its :class:`FP8Act`, FP8 weights) → [y_0, y_1, …], each [T, N_i], column views of
        one [T, ΣN] output."""
        if isinstance(x, FP8Act):
            y = ops.linear_fp8_input(x.q, x.s, self.weight, self.scale, x.dtype)
        else:
            y = ops.linear(x, self.weight, self.scale)
        return list(y.split(self.sizes, dim=-1))

    def accepts_fp8(self, ops: Ops) -> bool:
        """True when an :class:`FP8Act` input can replace x (triton backend, FP8 weights, aliasing intact)."""
        return ops.is_triton and self.scale is not None and self.ready()


class MLP(nn.Module):
    """down(silu(gate(x)) · up(x)): DeepSeek's dense MLP and shared experts.

    On the triton backend gate and up run as one GEMM (:class:`FusedLinears`, [gate ‖ up] rows) and,
    with FP8 weights, SiLU·mul + the FP8 quant of the down projection's input are one kernel
    (``silu_mul_quant_fp8``, fp32 SiLU·mul): three launches for the MLP. The reference backend runs
    the three linears one by one (the spec).
    """

    def __init__(self, dim: int, inter: int, *, fp8: bool, dtype: torch.dtype, ops: Ops, tp: TP | None = None):
        super().__init__()
        self.ops = ops
        self.gate_proj = Linear(dim, inter, fp8=fp8, dtype=dtype, ops=ops, tp=tp, mode="col")
        self.up_proj = Linear(dim, inter, fp8=fp8, dtype=dtype, ops=ops, tp=tp, mode="col")
        self.down_proj = Linear(inter, dim, fp8=fp8, dtype=dtype, ops=ops, tp=tp, mode="row")
        self.gate_up = FusedLinears([self.gate_proj, self.up_proj])

    def accepts_fp8(self) -> bool:
        """True when forward may take an :class:`FP8Act` (the fused-quant RMSNorm's output)."""
        return self.down_proj.fp8 and self.gate_up.accepts_fp8(self.ops)

    def forward(self, x: torch.Tensor | FP8Act) -> torch.Tensor:
        return self.down_proj.finish(self.partial(x))

    def partial(self, x: torch.Tensor | FP8Act) -> torch.Tensor:
        """This rank's share of forward(x): the row-parallel down projection's local product before its
        all-reduce (= forward(x) without tensor parallelism). The MoE folds the shared expert's share into
        its one all-reduce with it."""
        down = self.down_proj
        if self.ops.is_triton and x.dim() == 2 and self.gate_up.ready():
            if isinstance(x, FP8Act):  # [T, 2·I] = [gate ‖ up] from the pre-quantized input
                gu = self.ops.linear_fp8_input(x.q, x.s, self.gate_up.weight, self.gate_up.scale, x.dtype)
            else:
                gu = self.ops.linear(x, self.gate_up.weight, self.gate_up.scale)
            if down.fp8 and self.gate_up.scale is not None and x.shape[0] > 0:
                h_q, h_s = self.ops.silu_mul_quant(gu)
                return self.ops.linear_fp8_input(h_q, h_s, down.weight, down.weight_scale_inv, x.dtype)
            g, u = gu.split(self.gate_up.sizes, dim=-1)
            return self.ops.linear(F.silu(g) * u, down.weight, down.weight_scale_inv)
        return self.ops.linear(F.silu(self.gate_proj(x)) * self.up_proj(x), down.weight, down.weight_scale_inv)


class VocabParallelEmbedding(nn.Module):
    """Embedding whose rows (vocabulary) are split across tensor-parallel ranks; the lookups are
    summed with one all-reduce (each id lives on exactly one rank). ``weight``: [V_local, hidden]."""

    def __init__(self, vocab: int, dim: int, dtype: torch.dtype, tp: TP | None):
        super().__init__()
        self.tp = tp if tp is not None and tp.enabled else None
        self.start, self.end = self.tp.split(vocab, "vocab_size") if self.tp else (0, vocab)
        self.shard = (0, self.start, self.end) if self.tp else None
        self.weight = nn.Parameter(torch.empty(self.end - self.start, dim, dtype=dtype), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp is None:
            return F.embedding(ids, self.weight)
        local = ids - self.start
        outside = (local < 0) | (local >= self.end - self.start)
        e = F.embedding(local.masked_fill(outside, 0), self.weight)
        e = e.masked_fill(outside.unsqueeze(-1), 0)
        return self.tp.all_reduce(e)


# ---------------------------------------------------------------------------------------- RoPE
def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Per-pair inverse frequencies [qk_rope_head_dim/2] fp32, YaRN-corrected when configured.

    Follows DeepSeek-V3 ``precompute_freqs_cis``: frequencies between the beta_fast/beta_slow
    correction dims are blended linearly between the original and the ``factor``-interpolated ones.
    HF applies YaRN whenever ``rope_scaling`` is yarn; so do we (the official code does so only when
    the serving length exceeds the original one, which is the case for every released config).
    """
    dim = cfg.qk_rope_head_dim
    base = cfg.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    rs = cfg.rope_scaling
    if rs is None or rs.factor <= 1.0:
        return freqs

    def correction_dim(num_rotations: float) -> float:
        return dim * math.log(rs.original_max_position_embeddings / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(rs.beta_fast)), 0)
    high = min(math.ceil(correction_dim(rs.beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    smooth = 1 - ramp
    return freqs / rs.factor * (1 - smooth) + freqs * smooth


class RotaryEmbedding(nn.Module):
    """cos/sin table [max_position_embeddings, rope_dim/2] fp32 for interleaved RoPE.

    Under YaRN both are scaled by ``yarn_attention_factor`` (1.0, skipped, unless mscale != mscale_all_dim), as HF's
    DeepSeek rotary embedding does: q_pe and k_pe (cached rotated) both carry it, so the rope part of the scores
    carries its square."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_positions = cfg.max_position_embeddings
        self.attention_factor = yarn_attention_factor(cfg.rope_scaling)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self._cos_sin_cache: torch.Tensor | None = None

    def _scaled(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.attention_factor == 1.0 else t * self.attention_factor

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] int64 → (cos, sin) each [T, rope_dim/2] fp32 (× the YaRN attention factor)."""
        angles = positions.to(torch.float32)[:, None] * self.inv_freq.to(positions.device)[None, :]
        return self._scaled(angles.cos()), self._scaled(angles.sin())

    def cos_sin_cache(self, device: torch.device) -> torch.Tensor:
        """[max_position_embeddings, rope_dim] fp32 = (cos ‖ sin) of every position, built once per
        device with the same fp32 product as :meth:`cos_sin` (the fused kernels gather its rows)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        t = self._cos_sin_cache
        if t is None or t.device != device:
            angles = (torch.arange(self.max_positions, dtype=torch.float32, device=device)[:, None]
                      * self.inv_freq.to(device)[None, :])
            t = self._cos_sin_cache = self._scaled(torch.cat([angles.cos(), angles.sin()], dim=-1)).contiguous()
        return t


# Rotation of interleaved pairs (x[2i], x[2i+1]) by angle i (DeepSeek's complex formulation); the
# reference kernel is the model's own code on the reference backend.
apply_rotary_interleaved = rotary_interleaved_ref
