"""The shipped default checkpoint: valid config, loads, deterministic, transformers agrees, in the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tritonseek import LLM, SamplingParams
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.kernels.reference.fp8 import dequant_block_fp8_ref
from tritonseek.model.config import ModelConfig
from tritonseek.model.loader import load_model
from tritonseek.model.ops import Ops

ROOT = Path(__file__).resolve().parents[2]


def test_config_validates_and_has_every_v3_feature():
    cfg = ModelConfig.from_file(DEFAULT_MODEL_DIR)
    assert cfg.model_type == "deepseek_v3" and cfg.q_lora_rank and cfg.rope_scaling is not None
    assert cfg.first_k_dense_replace >= 1 and cfg.n_group > cfg.topk_group > 1 and cfg.n_shared_experts >= 1
    assert cfg.scoring_func == "sigmoid" and cfg.topk_method == "noaux_tc" and cfg.num_nextn_predict_layers == 1
    assert cfg.quantization_config is not None and cfg.quantization_config.weight_block_size == (128, 128)
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert size <= 12_000_000


def test_loads_with_mtp_and_fp8_weights():
    m = load_model(DEFAULT_MODEL_DIR, ops=Ops("reference"))
    assert len(m.mtp) == 1 and m.fp8
    assert m.model.layers[0].self_attn.q_a_proj.weight.dtype == torch.float8_e4m3fn


def test_seeded_generation_is_deterministic_and_code_like():
    llm = LLM()
    p = SamplingParams(temperature=0.7, top_p=0.95, seed=11, max_new_tokens=24)
    a = llm.generate("def fibonacci(n):", p)[0]
    b = llm.generate("def fibonacci(n):", p)[0]
    assert a.token_ids == b.token_ids
    greedy = llm.generate("def fibonacci(n):", SamplingParams(max_new_tokens=24))[0].text
    assert any(tok in greedy for tok in ("return", "\n    ", "(", ":"))


def test_transformers_agrees_on_dequantized_weights(tmp_path):
    import transformers

    sd = load_file(str(DEFAULT_MODEL_DIR / "model.safetensors"))
    cfg = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    L = cfg["num_hidden_layers"]
    out = {}
    for k, v in sd.items():
        if k.startswith(f"model.layers.{L}.") or k.endswith("weight_scale_inv"):
            continue  # HF has no MTP layer; scales are folded in below
        if v.dtype == torch.float8_e4m3fn:
            v = dequant_block_fp8_ref(v, sd[k[: -len("weight")] + "weight_scale_inv"])
        out[k] = v.float()
    save_file(out, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    hf_cfg = {k: v for k, v in cfg.items() if k != "quantization_config"}
    hf_cfg["num_nextn_predict_layers"] = 0
    (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
    hf = transformers.DeepseekV3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    ours = load_model(DEFAULT_MODEL_DIR, ops=Ops("reference"), dtype=torch.float32)
    from tests.model.test_parity import prefill_logits, rel_err

    from tritonseek.engine.tokenizer import TextTokenizer

    tok = TextTokenizer(DEFAULT_MODEL_DIR)
    seq = tok.encode("import os\n\ndef main(argv):\n    for arg in argv:\n        print(arg)\n")
    got = prefill_logits(ours, [seq])[0]
    with torch.no_grad():
        want = hf(torch.tensor([seq])).logits[0].float()
    err = rel_err(got, want)
    print(f"default model vs transformers: rel_err={err:.2e}")
    assert err <= 1e-4


@pytest.mark.slow
def test_wheel_contains_the_default_model(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("tritonseek-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert f"tritonseek/data/default_model/{f}" in names
