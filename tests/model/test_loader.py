"""Checkpoint loader: sharded files with scales in another shard, MTP weights, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.model.tiny import build_hf_model, save_checkpoint
from tritonseek.model.config import ConfigError, ModelConfig
from tritonseek.model.loader import CheckpointError, load_model
from tritonseek.model.ops import Ops

REF = Ops("reference")


@pytest.fixture(scope="module")
def fp8_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp8mtp")
    save_checkpoint(build_hf_model("v3", seed=4), folder, fp8=True, mtp=True)
    return folder


def _shard(folder, out, split_scale_from_weight=True):
    """Rewrite a single-file checkpoint as 3 shards + index; every scale lands in another shard than its weight."""
    sd = load_file(str(folder / "model.safetensors"))
    keys = sorted(sd)
    shards = [{}, {}, {}]
    for i, k in enumerate(k for k in keys if not k.endswith("weight_scale_inv")):
        shards[i % 3][k] = sd[k]
    where = {k: i for i, s in enumerate(shards) for k in s}
    for k in keys:
        if k.endswith("weight_scale_inv"):
            w = where[k[: -len("_scale_inv")]]
            shards[(w + 1) % 3 if split_scale_from_weight else w][k] = sd[k]
    out.mkdir(exist_ok=True)
    weight_map = {}
    for i, s in enumerate(shards):
        name = f"model-{i + 1:05d}-of-00003.safetensors"
        save_file(s, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in s})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (out / "config.json").write_text((folder / "config.json").read_text())
    return out


def _edited_copy(src, dst, edit) -> None:
    """Write src's checkpoint into dst with ``edit(state_dict)`` applied (and the same config.json)."""
    sd = load_file(str(src / "model.safetensors"))
    edit(sd)
    save_file(sd, str(dst / "model.safetensors"))
    (dst / "config.json").write_text((src / "config.json").read_text())


def test_sharded_with_scales_in_other_shards_equals_single_file(fp8_ckpt, tmp_path):
    single = load_model(fp8_ckpt, ops=REF)
    sharded = load_model(_shard(fp8_ckpt, tmp_path / "sharded"), ops=REF)
    a, b = single.state_dict(), sharded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].float(), b[k].float()), k


def test_ragged_scale_shapes_are_ceil_sized(fp8_ckpt):
    m = load_model(fp8_ckpt, ops=REF)
    attn = m.model.layers[0].self_attn
    # kv_a_proj_with_mqa: [kv_lora 64 + rope 16, hidden 192] → scale [ceil(80/128), ceil(192/128)] = [1, 2]
    assert tuple(attn.kv_a_proj_with_mqa.weight_scale_inv.shape) == (1, 2)
    assert attn.kv_a_proj_with_mqa.weight.dtype == torch.float8_e4m3fn


def test_mtp_weights_land_in_mtp_module(fp8_ckpt):
    m = load_model(fp8_ckpt, ops=REF)
    sd = load_file(str(fp8_ckpt / "model.safetensors"))
    L = m.cfg.num_hidden_layers
    assert len(m.mtp) == 1
    mtp = m.mtp[0]
    assert torch.equal(mtp.eh_proj.weight, sd[f"model.layers.{L}.eh_proj.weight"])
    assert torch.equal(mtp.block.self_attn.q_a_proj.weight.float(), sd[f"model.layers.{L}.self_attn.q_a_proj.weight"].float())
    assert torch.equal(mtp.block.mlp.w2[3].float(), sd[f"model.layers.{L}.mlp.experts.3.down_proj.weight"].float())
    assert torch.equal(mtp.embed_tokens.weight, m.model.embed_tokens.weight)
    # experts are stacked: up_proj rows follow gate_proj rows in w13
    I = m.cfg.moe_intermediate_size
    up = sd["model.layers.1.mlp.experts.5.up_proj.weight"]
    assert torch.equal(m.model.layers[1].mlp.w13[5, I:].float(), up.float())


def test_missing_key_names_key_and_folder(fp8_ckpt, tmp_path):
    def edit(sd):
        del sd["model.layers.1.mlp.experts.2.up_proj.weight"]

    _edited_copy(fp8_ckpt, tmp_path, edit)
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.experts\.2\.up_proj\.weight'"):
        load_model(tmp_path, ops=REF)


def test_fp8_weight_without_scale_is_rejected(fp8_ckpt, tmp_path):
    def edit(sd):
        del sd["model.layers.0.self_attn.o_proj.weight_scale_inv"]

    _edited_copy(fp8_ckpt, tmp_path, edit)
    with pytest.raises(CheckpointError, match="o_proj.weight_scale_inv"):
        load_model(tmp_path, ops=REF)


def test_wrong_shape_names_key_and_file(fp8_ckpt, tmp_path):
    def edit(sd):
        sd["model.norm.weight"] = torch.ones(7)

    _edited_copy(fp8_ckpt, tmp_path, edit)
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' in model\.safetensors has shape \(7,\)"):
        load_model(tmp_path, ops=REF)


def test_unexpected_key(fp8_ckpt, tmp_path):
    def edit(sd):
        sd["model.layers.0.self_attn.extra.weight"] = torch.ones(3)

    _edited_copy(fp8_ckpt, tmp_path, edit)
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.self_attn.extra.weight'"):
        load_model(tmp_path, ops=REF)


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_file_is_a_clear_error(fp8_ckpt, tmp_path, cut):
    data = (fp8_ckpt / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: int(len(data) * cut)])
    (tmp_path / "config.json").write_text((fp8_ckpt / "config.json").read_text())
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_model(tmp_path, ops=REF)


def test_corrupted_header(fp8_ckpt, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    (tmp_path / "config.json").write_text((fp8_ckpt / "config.json").read_text())
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_model(tmp_path, ops=REF)


def test_bf16_checkpoint_quantized_at_load(tmp_path):
    hf = build_hf_model("v2", seed=5)
    save_checkpoint(hf, tmp_path)
    dense = load_model(tmp_path, ops=REF)
    quant = load_model(tmp_path, ops=REF, quantize_fp8=True)
    assert not dense.fp8 and quant.fp8
    lin = quant.model.layers[0].self_attn.o_proj
    assert lin.weight.dtype == torch.float8_e4m3fn
    w = dense.model.layers[0].self_attn.o_proj.weight
    err = (lin.dense_weight() - w).norm() / w.norm()
    assert err < 0.05  # e4m3 keeps 3 mantissa bits: per-element error ≤ 2^-4 relative


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("model_type", "llama", "model_type"),
        ("scoring_func", "relu", "scoring_func"),
        ("topk_method", "best", "topk_method"),
        ("n_group", 3, "n_group"),
        ("topk_group", 9, "topk_group"),
        ("hidden_act", "gelu", "hidden_act"),
        ("kv_lora_rank", 0, "kv_lora_rank"),
        ("quantization_config", {"quant_method": "awq"}, "quant_method"),
        ("quantization_config", {"quant_method": "fp8", "weight_block_size": [64, 64]}, "weight_block_size"),
        ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_scaling"),
        ("num_nextn_predict_layers", 3, "num_nextn_predict_layers"),
        ("eos_token_id", 99999, "eos_token_id"),
        ("bos_token_id", -1, "bos_token_id"),
        ("rms_norm_eps", True, "rms_norm_eps"),
        ("rms_norm_eps", float("inf"), "rms_norm_eps"),
        ("rms_norm_eps", float("nan"), "rms_norm_eps"),
        ("rms_norm_eps", "1e-6", "rms_norm_eps"),
        ("rope_theta", True, "rope_theta"),
        ("rope_theta", float("inf"), "rope_theta"),
    ],
)
def test_config_rejects_unsupported_values(field, value, match):
    raw = build_hf_model("v3", seed=0).config.to_dict()
    raw[field] = value
    if field == "rope_scaling":
        raw.pop("rope_parameters", None)
    if field == "rope_theta" and isinstance(raw.get("rope_parameters"), dict):
        raw["rope_parameters"] = {**raw["rope_parameters"], "rope_theta": value}  # it wins over rope_theta
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict(raw)


def test_config_model_families():
    v2 = ModelConfig.from_dict(build_hf_model("v2", seed=0).config.to_dict())
    assert v2.q_lora_rank is None and v2.scoring_func == "softmax" and v2.topk_method == "greedy"
    v3 = ModelConfig.from_dict(build_hf_model("v3", seed=0).config.to_dict())
    assert v3.scoring_func == "sigmoid" and v3.topk_method == "noaux_tc" and v3.rope_scaling.factor == 4.0
    kimi = ModelConfig.from_dict({**v3.to_dict(), "model_type": "kimi_k2", "n_group": 1, "topk_group": 1})
    assert kimi.model_type == "kimi_k2"


@pytest.mark.parametrize("key", ["model.norm.weight", "model.layers.0.self_attn.o_proj.weight",
                                 "model.layers.0.self_attn.o_proj.weight_scale_inv"])
def test_nan_in_a_tensor_is_refused(fp8_ckpt, tmp_path, key):
    def edit(sd):
        t = sd[key].clone()
        if t.dtype == torch.float8_e4m3fn:
            t.view(torch.uint8).view(-1)[3] = 0x7F  # an e4m3fn NaN
        else:
            t.view(-1)[0] = float("nan")
        sd[key] = t

    _edited_copy(fp8_ckpt, tmp_path, edit)
    with pytest.raises(CheckpointError, match=f"'{key}' in model.safetensors holds NaN"):
        load_model(tmp_path, ops=REF)
