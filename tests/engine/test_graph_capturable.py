"""bf16 / fp32 MoE checkpoints under CUDA graphs (h2tester s26 F13): their routed experts run MoE.experts_reference,
whose per-expert token counts go to the host; the first decode capture then failed on the H200 with "Cannot copy
between CPU and CUDA tensors during CUDA graph capture" after the whole checkpoint had loaded. LLM now refuses that
combination up front, naming both ways out (quantize_fp8 / --quantize-fp8, enforce_eager / --eager)."""

from __future__ import annotations

import json

import pytest

from tritonseek import LLM
from tritonseek.engine import llm as llm_mod
from tritonseek.engine.llm import DEFAULT_MODEL_DIR, _check_graph_capturable
from tritonseek.model.config import ModelConfig


def _raw():
    return json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())


def test_unquantized_moe_is_refused_with_both_ways_out():
    raw = _raw()
    assert raw.get("quantization_config") and raw.get("n_routed_experts")  # the default model: FP8 MoE
    _check_graph_capturable(ModelConfig.from_dict(raw), False)  # FP8 experts: the Triton grouped GEMMs
    raw.pop("quantization_config")
    cfg = ModelConfig.from_dict(raw)
    with pytest.raises(ValueError, match="routed experts are not FP8") as e:
        _check_graph_capturable(cfg, False)
    assert "quantize_fp8=True (CLI --quantize-fp8" in str(e.value) and "enforce_eager=True (CLI --eager" in str(e.value)
    _check_graph_capturable(cfg, True)  # quantized at load: FP8 experts
    for key in ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts"):
        raw.pop(key, None)
    _check_graph_capturable(ModelConfig.from_dict(raw), False)  # dense: no expert loop


def test_llm_refuses_before_loading(tmp_path, monkeypatch):
    """The check runs on config.json alone, before any tensor is read: the folder here has no weights at all."""
    raw = _raw()
    raw.pop("quantization_config")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    monkeypatch.setattr(LLM, "uses_cuda_graphs", property(lambda self: True))  # CUDA + triton + graphs, on CPU
    loaded = []
    monkeypatch.setattr(llm_mod, "load_model", lambda *a, **k: loaded.append(1))
    with pytest.raises(ValueError, match="routed experts are not FP8"):
        LLM(str(tmp_path), device="cpu")
    assert not loaded


def test_cli_passes_quantize_fp8(monkeypatch):
    from typer.testing import CliRunner

    from tritonseek.cli import app

    seen = {}

    def fake_init(self, *args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(LLM, "__init__", fake_init)
    r = CliRunner().invoke(app, ["generate", "-p", "x", "--quantize-fp8"], catch_exceptions=False)
    assert r.exit_code == 2 and "stop here" in r.stderr and seen.get("quantize_fp8") is True
    seen.clear()
    CliRunner().invoke(app, ["generate", "-p", "x"], catch_exceptions=False)
    assert seen.get("quantize_fp8") is False
