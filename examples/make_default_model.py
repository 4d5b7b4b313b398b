"""The embedded default checkpoint's layout: config, tokenizer, FP8 export (used by train_tiny.py).

Run alone it writes the same layout with seeded *random* weights (a quick stand-in for tests):

    python examples/make_default_model.py --out /tmp/tiny_random [--seed 0]

What it writes, in the HF DeepSeek-V3 layout: config.json (deepseek_v3, FP8 quantization_config,
one MTP layer), model.safetensors (e4m3 linears + weight_scale_inv, the MTP layer at index
num_hidden_layers with its own embed/head copies), tokenizer.json + tokenizer_config.json (a
byte-level BPE trained with `tokenizers` on the running interpreter's standard-library source),
generation_config.json and tritonseek_model.json (the model card tritonseek prints).

The shipped default (tritonseek/data/default_model) is trained by examples/train_tiny.py, which
reuses this file's config, corpus, tokenizer and export functions.
"""

from __future__ import annotations

import argparse
import json
import random
import sysconfig
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tritonseek.kernels.reference.fp8 import per_block_quant_fp8_ref

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜pad｜>"

TINY_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 512,
    "moe_intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_nextn_predict_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_shared_experts": 1,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
    "n_group": 4,
    "topk_group": 2,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "q_lora_rank": 128,
    "kv_lora_rank": 128,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "attention_bias": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128]},
}

FP8_SUFFIXES = ("q_a_proj.weight", "q_b_proj.weight", "kv_a_proj_with_mqa.weight", "kv_b_proj.weight",
                "o_proj.weight", "gate_proj.weight", "up_proj.weight", "down_proj.weight")


def corpus_files(seed: int = 0, held_out: float = 0.05) -> tuple[list[Path], list[Path]]:
    """The running interpreter's standard-library .py files, split (seeded) into train / held-out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
    random.Random(seed).shuffle(files)
    n = max(1, int(len(files) * held_out))
    return files[n:], files[:n]


def split_record(held: list[Path]) -> dict:
    """What identifies the held-out split, for the model card: the interpreter's major.minor version and a hash of
    the held-out files' stdlib-relative paths. The split is a seeded shuffle of the *running* interpreter's file list,
    so on another Python version eval_tiny's "held-out" files are a different set, partly training files (h2tester
    s25: 1.14 bits/byte on 3.11 against the card's 1.33, with no word)."""
    import hashlib
    import sys

    root = Path(sysconfig.get_paths()["stdlib"])
    names = "\n".join(sorted(str(p.relative_to(root)) for p in held))
    return {"python": f"{sys.version_info[0]}.{sys.version_info[1]}",
            "held_out_files_sha256": hashlib.sha256(names.encode()).hexdigest()[:16]}


def split_check(card: dict, current: dict) -> str:
    """"same" when the card's split record equals ``current`` (split_record of this interpreter), "differs: ..."
    when it does not (the held-out figures are then not held out), "unknown: ..." when the card records none."""
    if "held_out_files_sha256" not in card and "python" not in card:
        return "unknown: the model card records no split (python, held_out_files_sha256); the embedded default was " \
               "trained on CPython 3.12 (its README)"
    diff = [f"{k} {card[k]} (card) vs {current[k]} (here)" for k in ("python", "held_out_files_sha256")
            if k in card and card[k] != current[k]]
    return "differs: " + "; ".join(diff) if diff else "same"


def train_tokenizer(files: list[Path], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (the DeepSeek-V3 tokenizer's kind) trained with the `tokenizers` library."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)

    def texts():
        for p in files:
            try:
                yield p.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue

    tok.train_from_iterator(texts(), trainer=trainer)
    return tok


def write_tokenizer(tok: Tokenizer, out: Path) -> None:
    tok.save(str(out / "tokenizer.json"))
    chat = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}# User: {{ m['content'] }}\n"
            "{% else %}{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}# Assistant:\n{% endif %}")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "add_bos_token": True, "add_eos_token": False, "model_max_length": TINY_CONFIG["max_position_embeddings"],
        "chat_template": chat,
    }, indent=2, ensure_ascii=False))


def random_state_dict(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights under the HF DeepSeek-V3 keys (bf16; scales 1/sqrt(fan_in))."""
    g = torch.Generator().manual_seed(seed)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    h, dn, dr, dv = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    ql, kl = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    E, I, Id = cfg["n_routed_experts"], cfg["moe_intermediate_size"], cfg["intermediate_size"]

    def w(*shape):
        return (torch.randn(*shape, generator=g) / shape[-1] ** 0.5).to(torch.bfloat16)

    def ones(n):
        return torch.ones(n, dtype=torch.bfloat16)

    def layer(p: str, moe: bool) -> dict:
        d = {
            f"{p}.input_layernorm.weight": ones(H), f"{p}.post_attention_layernorm.weight": ones(H),
            f"{p}.self_attn.q_a_proj.weight": w(ql, H), f"{p}.self_attn.q_a_layernorm.weight": ones(ql),
            f"{p}.self_attn.q_b_proj.weight": w(h * (dn + dr), ql),
            f"{p}.self_attn.kv_a_proj_with_mqa.weight": w(kl + dr, H), f"{p}.self_attn.kv_a_layernorm.weight": ones(kl),
            f"{p}.self_attn.kv_b_proj.weight": w(h * (dn + dv), kl), f"{p}.self_attn.o_proj.weight": w(H, h * dv),
        }
        if moe:
            d[f"{p}.mlp.gate.weight"] = w(E, H)
            d[f"{p}.mlp.gate.e_score_correction_bias"] = torch.zeros(E, dtype=torch.float32)
            for e in range(E):
                for n, shape in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
                    d[f"{p}.mlp.experts.{e}.{n}.weight"] = w(*shape)
            Is = I * cfg["n_shared_experts"]
            for n, shape in (("gate_proj", (Is, H)), ("up_proj", (Is, H)), ("down_proj", (H, Is))):
                d[f"{p}.mlp.shared_experts.{n}.weight"] = w(*shape)
        else:
            for n, shape in (("gate_proj", (Id, H)), ("up_proj", (Id, H)), ("down_proj", (H, Id))):
                d[f"{p}.mlp.{n}.weight"] = w(*shape)
        return d

    L = cfg["num_hidden_layers"]
    sd = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": ones(H), "lm_head.weight": w(V, H)}
    for i in range(L):
        sd.update(layer(f"model.layers.{i}", i >= cfg["first_k_dense_replace"]))
    m = f"model.layers.{L}"
    sd.update(layer(m, True))
    sd.update({f"{m}.enorm.weight": ones(H), f"{m}.hnorm.weight": ones(H), f"{m}.eh_proj.weight": w(H, 2 * H),
               f"{m}.shared_head.norm.weight": ones(H),
               f"{m}.embed_tokens.weight": sd["model.embed_tokens.weight"].clone(),
               f"{m}.shared_head.head.weight": sd["lm_head.weight"].clone()})
    return sd


def quantize_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Linears → e4m3 + weight_scale_inv (128×128 blocks); everything else unchanged."""
    out = {}
    for k, v in sd.items():
        if k.endswith(FP8_SUFFIXES):
            q, s = per_block_quant_fp8_ref(v.float())
            out[k], out[k[: -len("weight")] + "weight_scale_inv"] = q, s
        else:
            out[k] = v.contiguous()
    return out


def write_checkpoint(out: Path, cfg: dict, sd: dict[str, torch.Tensor], tok: Tokenizer, card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(quantize_state_dict(sd), str(out / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(tok, out)
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"], "do_sample": False}, indent=2))
    (out / "tritonseek_model.json").write_text(json.dumps(card, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train, _ = corpus_files(args.seed)
    tok = train_tokenizer(train, TINY_CONFIG["vocab_size"])
    assert tok.token_to_id(BOS) == TINY_CONFIG["bos_token_id"] and tok.token_to_id(EOS) == TINY_CONFIG["eos_token_id"]
    sd = random_state_dict(TINY_CONFIG, args.seed)
    card = {"name": "tritonseek-tiny-random", "trained": False, "seed": args.seed,
            "note": "embedded default model: random (seeded) weights, so its text is noise; pass --model PATH for a real checkpoint"}
    write_checkpoint(args.out, TINY_CONFIG, sd, tok, card)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
