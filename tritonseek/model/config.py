"""Validated model configuration built from a Hugging Face ``config.json``.

Supports the DeepSeek-V3 architecture family: ``deepseek_v2`` (V2, V2-Lite), ``deepseek_v3``
(V3, R1, Moonlight) and ``kimi_k2``. Field names are the HF ones so a config round-trips.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SUPPORTED_MODEL_TYPES = ("deepseek_v2", "deepseek_v3", "kimi_k2")
SUPPORTED_SCORING = ("sigmoid", "softmax")
SUPPORTED_TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")


class ConfigError(ValueError):
    """A config.json value that tritonseek cannot run; the message names the field."""


@dataclass(frozen=True)
class RopeScaling:
    """YaRN parameters (DeepSeek-V3 ``rope_scaling`` with ``type: yarn``).

    From config.json: factor (a finite number >= 1) and original_max_position_embeddings (an int > 0) are required;
    beta_fast >= beta_slow > 0 and mscale, mscale_all_dim >= 0 are finite numbers, the defaults below when missing or
    null. Strings and bools are refused, not converted (ConfigError naming the field)."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0


@dataclass(frozen=True)
class QuantConfig:
    """Block-scaled FP8 checkpoint format (DeepSeek-V3 ``quantization_config``).

    scale_fmt: None (absent or null: fp32 activation scales, DeepSeek-V3/R1) or "ue8m0" (DeepSeek-V3.1: every
    activation-quant scale is rounded up to a power of two before quantizing, as its inference/kernel.py act_quant
    does; the model's :class:`~tritonseek.model.ops.Ops` follows it through ``Ops.for_config``)."""

    quant_method: str = "fp8"
    fmt: str = "e4m3"
    activation_scheme: str = "dynamic"
    weight_block_size: tuple[int, int] = (128, 128)
    scale_fmt: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a DeepSeek-V3-architecture model.

    Build with :meth:`from_dict` / :meth:`from_file`; both raise :class:`ConfigError` naming the
    field for a missing, unknown or unsupported value. Semantics follow DeepSeek-V3's
    ``inference/model.py`` ModelArgs and the HF ``DeepseekV3Config``.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    kv_lora_rank: int
    q_lora_rank: int | None
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    # MoE
    n_routed_experts: int | None = None
    n_shared_experts: int | None = None
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int | None = None
    first_k_dense_replace: int = 0
    moe_layer_freq: int = 1
    n_group: int = 1
    topk_group: int = 1
    topk_method: str = "greedy"
    scoring_func: str = "softmax"
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    # Multi-token prediction
    num_nextn_predict_layers: int = 0
    # Tokens / misc
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = False
    quantization_config: QuantConfig | None = None
    torch_dtype: str = "bfloat16"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    # ---------------------------------------------------------------- derived
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def is_moe(self) -> bool:
        return bool(self.n_routed_experts)

    @property
    def has_e_score_correction_bias(self) -> bool:
        return self.topk_method == "noaux_tc"

    def is_moe_layer(self, layer_idx: int) -> bool:
        """DeepSeek rule: MoE from ``first_k_dense_replace`` on, every ``moe_layer_freq``-th layer."""
        return (
            self.is_moe
            and layer_idx >= self.first_k_dense_replace
            and layer_idx % self.moe_layer_freq == 0
        )

    @property
    def softmax_scale(self) -> float:
        """qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN (DeepSeek-V3 MLA)."""
        scale = self.qk_head_dim**-0.5
        rs = self.rope_scaling
        if rs is not None and rs.mscale_all_dim and rs.factor > 1.0:
            m = yarn_mscale(rs.factor, rs.mscale_all_dim)
            scale = scale * m * m
        return scale

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if _is_int(self.eos_token_id):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read and validate ``config.json`` (a file, or a folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"config.json not found at {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a JSON object, got {type(raw).__name__}")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelConfig":
        """Validate an HF config dict. Unknown keys are kept in ``extra``; bad values raise."""
        if not isinstance(raw, dict):
            raise ConfigError("config must be a JSON object")
        mt = raw.get("model_type")
        if mt not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"model_type={mt!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}")
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for key in names - {"rope_scaling", "quantization_config", "extra", "torch_dtype", "rope_theta"}:
            if key in raw:
                kw[key] = raw[key]
        kw["torch_dtype"] = str(raw.get("torch_dtype") or raw.get("dtype") or "bfloat16")
        rope_theta, rope_scaling = _parse_rope(raw)
        kw["rope_theta"] = rope_theta
        kw["rope_scaling"] = rope_scaling
        kw["quantization_config"] = _parse_quant(raw.get("quantization_config"))
        kw["extra"] = {k: v for k, v in raw.items() if k not in names}
        for req in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "max_position_embeddings",
        ):
            if raw.get(req) is None:
                raise ConfigError(f"{req} is missing from config.json")
        kw.setdefault("q_lora_rank", None)
        if mt == "deepseek_v2":
            kw.setdefault("topk_method", "greedy")
            kw.setdefault("scoring_func", "softmax")
        else:
            kw.setdefault("topk_method", "noaux_tc")
            kw.setdefault("scoring_func", "sigmoid")
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first unsupported field."""
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                     "v_head_dim", "max_position_embeddings"):
            _positive_int(name, getattr(self, name))
        if self.q_lora_rank is not None:
            _positive_int("q_lora_rank", self.q_lora_rank)
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"qk_rope_head_dim={self.qk_rope_head_dim} must be even (RoPE pairs)")
        _positive_float("rms_norm_eps", self.rms_norm_eps)
        _positive_float("rope_theta", self.rope_theta)
        # used by the MoE router only, but a bad value is refused for a dense model too (never silently ignored):
        # NaN / <= 0 / "2.5" / null gave garbage or late errors, and the backends disagreed on 0
        _positive_float("routed_scaling_factor", self.routed_scaling_factor)
        if not isinstance(self.norm_topk_prob, bool):
            raise ConfigError(f"norm_topk_prob={self.norm_topk_prob!r} must be true or false")
        hidden_act = self.extra.get("hidden_act", "silu")
        if hidden_act != "silu":
            raise ConfigError(f"hidden_act={hidden_act!r} is not supported; DeepSeek models use 'silu'")
        if self.extra.get("attention_bias", False):
            raise ConfigError("attention_bias=true is not supported (DeepSeek MLA has no projection bias)")
        # transformers' DeepseekV3Config: false = the checkpoint's rope rows are in rotate-half order; the model
        # applies DeepSeek's interleaved rotation only, which gave logits 60-90 % off transformers' (h2tester s26)
        if self.extra.get("rope_interleave", True) is not True:
            raise ConfigError(f"rope_interleave={self.extra['rope_interleave']!r} is not supported: only true (DeepSeek's "
                              "interleaved RoPE layout, transformers' default)")
        if self.scoring_func not in SUPPORTED_SCORING:
            raise ConfigError(f"scoring_func={self.scoring_func!r} is not supported; expected {SUPPORTED_SCORING}")
        if self.topk_method not in SUPPORTED_TOPK_METHODS:
            raise ConfigError(f"topk_method={self.topk_method!r} is not supported; expected {SUPPORTED_TOPK_METHODS}")
        if self.is_moe:
            for name in ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"):
                _positive_int(name, getattr(self, name))
            if self.n_shared_experts is not None and (not _is_int(self.n_shared_experts) or self.n_shared_experts < 0):
                raise ConfigError(f"n_shared_experts={self.n_shared_experts!r} must be an int >= 0")
            _positive_int("n_group", self.n_group)
            _positive_int("topk_group", self.topk_group)
            _positive_int("moe_layer_freq", self.moe_layer_freq)
            if self.n_routed_experts % self.n_group:
                raise ConfigError(f"n_group={self.n_group} must divide n_routed_experts={self.n_routed_experts}")
            if self.topk_group > self.n_group:
                raise ConfigError(f"topk_group={self.topk_group} exceeds n_group={self.n_group}")
            grouped = self.topk_method != "greedy" and self.n_group > 1
            kept = self.topk_group * (self.n_routed_experts // self.n_group) if grouped else self.n_routed_experts
            if self.num_experts_per_tok > kept:
                raise ConfigError(
                    f"num_experts_per_tok={self.num_experts_per_tok} exceeds the {kept} experts in the kept groups"
                )
            if self.topk_method == "noaux_tc" and self.n_group > 1 and self.n_routed_experts // self.n_group < 2:
                raise ConfigError("noaux_tc group scores sum the top-2 experts: each group needs >= 2 experts")
        if not _is_int(self.first_k_dense_replace) or self.first_k_dense_replace < 0:
            raise ConfigError(f"first_k_dense_replace={self.first_k_dense_replace!r} must be an int >= 0")
        if not _is_int(self.num_nextn_predict_layers) or not 0 <= self.num_nextn_predict_layers <= 1:
            raise ConfigError(
                f"num_nextn_predict_layers={self.num_nextn_predict_layers!r} is not supported; expected 0 or 1"
            )
        for name in ("bos_token_id", "eos_token_id"):
            v = getattr(self, name)
            if not (v is None or _is_int(v) or isinstance(v, (list, tuple))):
                raise ConfigError(f"{name}={v!r} must be an int or a list of ints")
            for tid in ([] if v is None else [v] if _is_int(v) else v):
                if not _is_int(tid) or not 0 <= tid < self.vocab_size:
                    raise ConfigError(f"{name}={v!r} is outside the vocabulary (vocab_size={self.vocab_size})")
        if self.torch_dtype not in ("bfloat16", "float16", "float32", "torch.bfloat16", "torch.float32", "torch.float16"):
            raise ConfigError(f"torch_dtype={self.torch_dtype!r} is not supported")

    def to_dict(self) -> dict[str, Any]:
        """The HF ``config.json`` dict (rope_scaling/quantization_config in HF spelling)."""
        d = asdict(self)
        extra = d.pop("extra")
        if self.rope_scaling is not None:
            d["rope_scaling"] = {"type": "yarn", **asdict(self.rope_scaling)}
        if self.quantization_config is not None:
            q = asdict(self.quantization_config)
            q["weight_block_size"] = list(q["weight_block_size"])
            if q["scale_fmt"] is None:  # absent in the config it came from (HF V3 configs have no such key)
                del q["scale_fmt"]
            d["quantization_config"] = q
        return {**extra, **d}


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN attention magnitude correction: 0.1·mscale·ln(factor) + 1 (1 for factor ≤ 1)."""
    if factor <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(factor) + 1.0


def yarn_attention_factor(rs: RopeScaling | None) -> float:
    """YaRN's factor on RoPE's cos and sin: yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim).

    1.0 without rope_scaling, for factor ≤ 1, and whenever mscale == mscale_all_dim (every released DeepSeek / Kimi
    config). Follows DeepSeek's HF ``DeepseekV3YarnRotaryEmbedding`` (missing mscale = 1, mscale_all_dim = 0, the
    ``RopeScaling`` defaults); transformers' ``_compute_yarn_parameters`` agrees when both fields are given or both
    missing. It used to be left out: a yarn config with mscale != mscale_all_dim (or neither) gave logits 13-45 %
    off transformers' (h2tester s26)."""
    if rs is None or rs.factor <= 1.0:
        return 1.0
    return yarn_mscale(rs.factor, rs.mscale) / yarn_mscale(rs.factor, rs.mscale_all_dim)


def _is_int(value: Any) -> bool:
    """An integer field's value: a JSON integer, never a bool (true is an int to isinstance)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive integer")


def _positive_float(name: str, value: Any) -> None:
    # json.loads reads Infinity / NaN, and True is an int to isinstance: eps=true would normalise by
    # sqrt(var + 1) and eps=Infinity would zero every hidden state, both without an error.
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value <= 0):
        raise ConfigError(f"{name}={value!r} must be a finite number > 0")


def _parse_rope(raw: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    # transformers 5 writes `rope_parameters` (theta + scaling in one dict); older files write
    # `rope_theta` + `rope_scaling`. Accept both.
    params = raw.get("rope_parameters")
    scaling = raw.get("rope_scaling")
    theta = raw.get("rope_theta")
    if isinstance(params, dict):
        theta = params.get("rope_theta", theta)
        if scaling is None and params.get("rope_type", params.get("type", "default")) != "default":
            scaling = params
    theta = 10000.0 if theta is None else theta
    if scaling is None:
        return theta, None
    if not isinstance(scaling, dict):
        raise ConfigError(f"rope_scaling={scaling!r} must be an object or null")
    kind = scaling.get("type", scaling.get("rope_type"))
    if kind in (None, "default"):
        return theta, None
    if kind != "yarn":
        raise ConfigError(f"rope_scaling.type={kind!r} is not supported; only 'yarn' is")
    if "factor" not in scaling or scaling["factor"] is None:
        raise ConfigError("rope_scaling.factor is missing for yarn")
    ompe = scaling.get("original_max_position_embeddings")
    if ompe is None:
        raise ConfigError("rope_scaling.original_max_position_embeddings is missing for yarn")
    if not _is_int(ompe) or ompe <= 0:  # 0 was a "math domain error" when the RoPE table was built
        raise ConfigError(f"rope_scaling.original_max_position_embeddings={ompe!r} must be a positive integer")
    rs = RopeScaling(
        factor=_rope_float(scaling, "factor", None, 1.0, ">="),
        original_max_position_embeddings=ompe,
        beta_fast=_rope_float(scaling, "beta_fast", 32.0, 0.0, ">"),
        beta_slow=_rope_float(scaling, "beta_slow", 1.0, 0.0, ">"),
        mscale=_rope_float(scaling, "mscale", 1.0, 0.0, ">="),
        mscale_all_dim=_rope_float(scaling, "mscale_all_dim", 0.0, 0.0, ">="),
    )
    # beta_fast < beta_slow would run the ramp between the correction dims backwards; equal betas (Kimi-K2 ships
    # 1.0 / 1.0) make it a step, which rope_inv_freq handles as DeepSeek's code does (high = low + 0.001)
    if rs.beta_fast < rs.beta_slow:
        raise ConfigError(f"rope_scaling.beta_fast={rs.beta_fast} must be at least beta_slow={rs.beta_slow}")
    return theta, rs


def _rope_float(scaling: dict[str, Any], key: str, default: float | None, bound: float, op: str) -> float:
    """rope_scaling[key] as a float: a finite JSON number (not a bool, not a string) ``op`` bound; missing or null
    gives the default. A present 0 is checked like any value (it used to be replaced by the default)."""
    v = scaling.get(key)
    if v is None:
        return default
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or not (v >= bound if op == ">=" else v > bound):
        raise ConfigError(f"rope_scaling.{key}={v!r} must be a finite number {op} {bound:g}")
    return float(v)


def _parse_quant(q: Any) -> QuantConfig | None:
    if q is None:
        return None
    if not isinstance(q, dict):
        raise ConfigError("quantization_config must be an object")
    method = q.get("quant_method")
    if method != "fp8":
        raise ConfigError(f"quantization_config.quant_method={method!r} is not supported; only 'fp8' is")
    fmt = q.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise ConfigError(f"quantization_config.fmt={fmt!r} is not supported; only 'e4m3' is")
    block = q.get("weight_block_size", [128, 128])
    # a non-list (128, null) was a bare "'int' object is not iterable" naming no field
    if not isinstance(block, (list, tuple)) or list(block) != [128, 128]:
        raise ConfigError(f"quantization_config.weight_block_size={block!r} is not supported; only [128, 128] is")
    scheme = q.get("activation_scheme", "dynamic")
    if scheme != "dynamic":
        raise ConfigError(f"quantization_config.activation_scheme={scheme!r} is not supported; only 'dynamic' is")
    scale_fmt = q.get("scale_fmt")
    # DeepSeek-V3.1 adds "ue8m0" (power-of-two activation scales); an unknown format would quantize differently
    # from the checkpoint's own inference code, so it is refused rather than read as fp32 scales
    if scale_fmt is not None and scale_fmt != "ue8m0":
        raise ConfigError(f"quantization_config.scale_fmt={scale_fmt!r} is not supported; only 'ue8m0' (or null / "
                          "absent: fp32 scales) is")
    return QuantConfig(quant_method="fp8", fmt="e4m3", activation_scheme=scheme, weight_block_size=(128, 128),
                       scale_fmt=scale_fmt)
