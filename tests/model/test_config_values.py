"""config.json / generation_config.json values that must be refused (tester, session 20), on the embedded default
model's config: a ConfigError naming the field (ValueError naming the file for generation_config.json), never a
silent default, a coerced string or a late error."""

from __future__ import annotations

import json

import pytest
import torch

from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.model.config import ConfigError, ModelConfig

BASE = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
YARN = BASE["rope_scaling"]


def _with(**changes):
    raw = json.loads(json.dumps(BASE))
    raw.update(changes)
    return raw


@pytest.mark.parametrize("field,value", [
    # the MoE router's scalars: NaN / <= 0 / null / a string gave garbage, exit 0 or a late error
    ("routed_scaling_factor", float("nan")), ("routed_scaling_factor", float("inf")), ("routed_scaling_factor", -2.5),
    ("routed_scaling_factor", 0), ("routed_scaling_factor", None), ("routed_scaling_factor", "2.5"),
    ("routed_scaling_factor", True),
    ("norm_topk_prob", "yes"), ("norm_topk_prob", None), ("norm_topk_prob", 1),
    # integer fields: a bool is no integer (n_routed_experts: true was already refused; these were not)
    ("first_k_dense_replace", True), ("num_nextn_predict_layers", True), ("n_shared_experts", True),
    ("eos_token_id", True), ("eos_token_id", [1, False]), ("bos_token_id", False), ("eos_token_id", "1"),
])
def test_bad_field_is_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_dict(_with(**{field: value}))


@pytest.mark.parametrize("key,value", [
    ("factor", float("nan")), ("factor", float("inf")), ("factor", "4"), ("factor", True), ("factor", 0.5),
    ("original_max_position_embeddings", 0), ("original_max_position_embeddings", -512),
    ("original_max_position_embeddings", "512"), ("original_max_position_embeddings", 512.0),
    ("original_max_position_embeddings", True),
    ("beta_fast", 0), ("beta_slow", 0), ("beta_fast", float("nan")), ("beta_slow", "1"),
    ("mscale", "1"), ("mscale", -5.0), ("mscale", float("inf")), ("mscale_all_dim", -1.0), ("mscale_all_dim", "1"),
])
def test_bad_rope_scaling_field_is_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=f"rope_scaling.{key}"):
        ModelConfig.from_dict(_with(rope_scaling={**YARN, key: value}))


def test_rope_scaling_betas_in_order():
    with pytest.raises(ConfigError, match="beta_fast"):
        ModelConfig.from_dict(_with(rope_scaling={**YARN, "beta_fast": 1, "beta_slow": 32}))


def test_kimi_k2_rope_scaling_equal_betas_is_accepted():
    """Kimi-K2's released config has beta_fast = beta_slow = 1.0: it was refused ("must be greater than beta_slow",
    tester2 s20 #1). Equal betas make the YaRN ramp a step: each frequency is either kept or divided by factor."""
    from tritonseek.model.layers import rope_inv_freq

    k2 = {"beta_fast": 1.0, "beta_slow": 1.0, "factor": 32.0, "mscale": 1.0, "mscale_all_dim": 1.0,
          "original_max_position_embeddings": 4096, "type": "yarn"}
    cfg = ModelConfig.from_dict(_with(rope_scaling=k2))
    rs = cfg.rope_scaling
    assert (rs.beta_fast, rs.beta_slow, rs.factor, rs.original_max_position_embeddings) == (1.0, 1.0, 32.0, 4096)
    inv = rope_inv_freq(cfg)
    dim = cfg.qk_rope_head_dim
    plain = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    ratio = plain / inv
    assert bool(torch.isfinite(inv).all())
    kept, divided = torch.isclose(ratio, torch.tensor(1.0)), torch.isclose(ratio, torch.tensor(32.0))
    assert bool((kept | divided).all()) and bool(kept[0]) and bool(divided[-1])


def test_rope_scaling_missing_or_null_optional_fields_take_the_defaults():
    for absent in ({}, {"beta_fast": None, "beta_slow": None, "mscale": None, "mscale_all_dim": None}):
        rs = ModelConfig.from_dict(_with(rope_scaling={"type": "yarn", "factor": 4, "original_max_position_embeddings":
                                                       512, **absent})).rope_scaling
        assert (rs.factor, rs.beta_fast, rs.beta_slow, rs.mscale, rs.mscale_all_dim) == (4.0, 32.0, 1.0, 1.0, 0.0)
    rs = ModelConfig.from_dict(_with(rope_scaling={**YARN, "mscale": 0, "mscale_all_dim": 0})).rope_scaling
    assert rs.mscale == 0.0 and rs.mscale_all_dim == 0.0  # a present 0 is kept (it was replaced by the default)
    with pytest.raises(ConfigError, match="rope_scaling.factor is missing"):
        ModelConfig.from_dict(_with(rope_scaling={"type": "yarn", "original_max_position_embeddings": 512}))


def test_default_config_is_accepted_as_is():
    cfg = ModelConfig.from_dict(BASE)
    assert cfg.routed_scaling_factor == 2.5 and cfg.norm_topk_prob is True and cfg.eos_token_ids == (1,)


@pytest.mark.parametrize("eos", [99999, -1, [1, 4096], True])
def test_generation_config_eos_outside_the_vocabulary_is_refused(tmp_path, eos):
    """generation_config.json's eos_token_id was added to the stop ids unchecked (the same id in config.json is
    refused); now the same rule, a ValueError naming the file and the field."""
    from tritonseek import LLM

    for f in DEFAULT_MODEL_DIR.iterdir():
        if f.name != "generation_config.json":
            (tmp_path / f.name).symlink_to(f)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    with pytest.raises(ValueError, match="generation_config.json.*eos_token_id"):
        LLM(str(tmp_path))


@pytest.mark.parametrize("content", [[{"eos_token_id": 1}], "1", 5, None])
def test_generation_config_not_an_object_is_refused(tmp_path, content):
    """A generation_config.json holding a JSON list (or another non-object) was ignored silently, while config.json's
    is refused (tester2 s20 #10): a ConfigError naming the file."""
    from tritonseek import LLM

    for f in DEFAULT_MODEL_DIR.iterdir():
        if f.name != "generation_config.json":
            (tmp_path / f.name).symlink_to(f)
    (tmp_path / "generation_config.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError, match="generation_config.json must hold a JSON object"):
        LLM(str(tmp_path))
