"""Train the embedded default model: a tiny DeepSeek-V3-architecture LM with one MTP layer.

    python examples/train_tiny.py --out tritonseek/data/default_model [--minutes 6] [--device cuda]

Everything goes through tritonseek's own reference model code with plain PyTorch autograd: MLA
with q_lora and interleaved YaRN RoPE, a dense first layer (first_k_dense_replace = 1), MoE with
sigmoid scores + e_score_correction_bias updated by DeepSeek-V3's auxiliary-loss-free rule
(bias_i += γ·sign(mean load − load_i) after each step, γ = 1e-3), group-limited routing
(4 groups, 2 kept), a shared expert, and the MTP layer trained jointly with loss weight λ = 0.3
(DeepSeek-V3 report §2.2 / §4.2). Corpus: the running interpreter's standard-library source,
split into train / held-out files (seeded); tokenizer: byte-level BPE, 4096 tokens.

Hyper-parameters (all flags): AdamW lr 2e-3 (β 0.9/0.95, wd 0.1), 100 warm-up steps then cosine
to 10%, batch 32 × 512 tokens, bf16 autocast on CUDA, fp32 on CPU, seed 0, stopping after
``--minutes`` of wall time or ``--steps`` steps. The result is written in the HF DeepSeek-V3
layout with 128×128 block-FP8 linears; a bf16 copy can be kept with ``--bf16-out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_default_model import (  # noqa: E402
    TINY_CONFIG, corpus_files, random_state_dict, split_record, train_tokenizer, write_checkpoint,
)

from tritonseek.model.config import ModelConfig  # noqa: E402
from tritonseek.model.loader import checkpoint_targets  # noqa: E402
from tritonseek.model.mla import AttentionBatch  # noqa: E402
from tritonseek.model.model import DeepseekForCausalLM  # noqa: E402
from tritonseek.model.moe import MoE  # noqa: E402
from tritonseek.model.ops import Ops  # noqa: E402

MTP_LAMBDA = 0.3
BIAS_GAMMA = 1e-3


def encode_files(tok, files: list[Path], eos: int) -> torch.Tensor:
    texts = []
    for p in files:
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    ids: list[int] = []
    for enc in tok.encode_batch(texts):  # parallel in the tokenizers library
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.int64)


def build_model(cfg: ModelConfig, device: torch.device, seed: int) -> DeepseekForCausalLM:
    """Dense (bf16-free) trainable model initialised from the seeded random state dict."""
    with torch.device(device):
        model = DeepseekForCausalLM(cfg, Ops("reference"), dtype=torch.float32, fp8=False, with_mtp=True)
    sd = random_state_dict(TINY_CONFIG, seed)
    for key, tgt in checkpoint_targets(model).items():
        dest = tgt.param.data if tgt.index is None else tgt.param.data[tgt.index]
        dest.copy_(sd[key].float())
    for p in model.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        if isinstance(m, MoE) and m.gate.e_score_correction_bias is not None:
            m.gate.e_score_correction_bias.requires_grad_(False)  # updated by the balancing rule, not SGD
    # DeepSeek-V3 shares the embedding and the output head between the main model and the MTP layer.
    mtp = model.mtp[0]
    mtp.embed_tokens.weight = model.model.embed_tokens.weight
    mtp.shared_head.head.weight = model.lm_head.weight
    return model


def losses(model: DeepseekForCausalLM, batch_ids: torch.Tensor):
    """batch_ids [B, S+2] → (main next-token loss, MTP next-next-token loss), mean over tokens."""
    B, S2 = batch_ids.shape
    S = S2 - 2
    dev = batch_ids.device
    inp = batch_ids[:, :S].reshape(-1)
    pos = torch.arange(S, device=dev).repeat(B)
    cu = torch.arange(0, (B + 1) * S, S, dtype=torch.int32, device=dev)
    att = AttentionBatch(True, torch.full((B * S,), -1, dtype=torch.int64, device=dev), cu_seqlens=cu, max_seqlen=S)
    kv = [None] * model.num_cache_layers
    h = model(inp, pos, att, kv)
    main = F.cross_entropy(model.compute_logits(h), batch_ids[:, 1:S + 1].reshape(-1))
    # MTP: position i sees h_i (pre final norm) and token t_{i+1}, predicts t_{i+2}.
    mtp = model.mtp[0]
    hm = mtp(batch_ids[:, 1:S + 1].reshape(-1), h, pos, att, None)
    mtp_loss = F.cross_entropy(mtp.logits(hm), batch_ids[:, 2:S + 2].reshape(-1))
    return main, mtp_loss


@torch.no_grad()
def update_routing_bias(model: DeepseekForCausalLM) -> None:
    for m in model.modules():
        if isinstance(m, MoE) and getattr(m, "last_topk_ids", None) is not None:
            load = torch.bincount(m.last_topk_ids.flatten().long(), minlength=m.cfg.n_routed_experts).float()
            m.gate.e_score_correction_bias += BIAS_GAMMA * torch.sign(load.mean() - load)


def export_state_dict(model: DeepseekForCausalLM) -> dict[str, torch.Tensor]:
    """HF DeepSeek-V3 keys (per-expert), bf16 weights, fp32 routing bias; MTP embed/head as copies."""
    out = {}
    for key, tgt in checkpoint_targets(model).items():
        t = tgt.param.data if tgt.index is None else tgt.param.data[tgt.index]
        t = t.detach().float().cpu()
        out[key] = t if key.endswith("e_score_correction_bias") else t.to(torch.bfloat16)
    # The MTP layer's embedding/head are tied to the main model's in training (so named_parameters
    # lists them once); the DeepSeek-V3 layout stores them again under the MTP layer's index.
    L = model.cfg.num_hidden_layers
    out[f"model.layers.{L}.embed_tokens.weight"] = out["model.embed_tokens.weight"].clone()
    out[f"model.layers.{L}.shared_head.head.weight"] = out["lm_head.weight"].clone()
    return out


@torch.no_grad()
def held_out_bits_per_byte(model, ids: torch.Tensor, n_bytes_per_token: float, S: int, device) -> float:
    model.eval()
    n = (len(ids) - 2) // S
    windows = ids[: n * S + 2]
    total, count = 0.0, 0
    for i in range(0, n, 16):
        rows = [windows[j * S: j * S + S + 2] for j in range(i, min(n, i + 16))]
        b = torch.stack(rows).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            main, _ = losses(model, b)
        total += main.item() * len(rows) * S
        count += len(rows) * S
    model.train()
    return total / count / math.log(2) / n_bytes_per_token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bf16-out", type=Path, default=None, help="also write the bf16 checkpoint here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True

    t0 = time.time()
    train_files, held_files = corpus_files(args.seed)
    tok = train_tokenizer(train_files, TINY_CONFIG["vocab_size"])
    eos = TINY_CONFIG["eos_token_id"]
    train_ids = encode_files(tok, train_files, eos)
    held_ids = encode_files(tok, held_files, eos)
    held_bytes = sum(len(p.read_bytes()) for p in held_files)
    bytes_per_token = held_bytes / len(held_ids)
    print(f"corpus: {len(train_ids)} train / {len(held_ids)} held-out tokens, {bytes_per_token:.2f} bytes/token, "
          f"tokenizer {time.time() - t0:.0f}s", flush=True)
    unigram = torch.bincount(train_ids, minlength=TINY_CONFIG["vocab_size"]).float() + 1
    unigram_bpb = (-(unigram / unigram.sum()).log()[held_ids].mean().item()) / math.log(2) / bytes_per_token

    cfg = ModelConfig.from_dict(TINY_CONFIG)
    model = build_model(cfg, device, args.seed).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(args.seed)
    train_ids_dev = train_ids.to(device)
    S, B = args.seq, args.batch
    est_steps = args.steps
    start = time.time()
    step = 0
    while step < args.steps and time.time() - start < args.minutes * 60:
        frac = step / max(est_steps, 1)
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train_ids) - S - 2, (B,), generator=g)
        batch = torch.stack([train_ids_dev[s: s + S + 2] for s in starts.tolist()])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            main, mtp_loss = losses(model, batch)
            loss = main + MTP_LAMBDA * mtp_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        update_routing_bias(model)
        step += 1
        if step == 20:  # calibrate the cosine schedule to the wall-clock budget
            per_step = (time.time() - start) / step
            est_steps = min(args.steps, int(args.minutes * 60 / per_step))
        if step % 100 == 0 or step == 1:
            print(f"step {step}/{est_steps} loss {main.item():.3f} mtp {mtp_loss.item():.3f} lr {lr:.2e} "
                  f"{time.time() - start:.0f}s", flush=True)
    train_s = time.time() - start
    bpb = held_out_bits_per_byte(model, held_ids[:200_000], bytes_per_token, S, device)
    print(f"held-out {bpb:.3f} bits/byte (unigram baseline {unigram_bpb:.3f}); {step} steps in {train_s:.0f}s", flush=True)

    sd = export_state_dict(model)
    card = {
        "name": "tritonseek-tiny", "trained": True, "seed": args.seed, "steps": step, "train_seconds": round(train_s),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "tokens_seen": step * B * S, "batch": B, "seq": S, "lr": args.lr, "mtp_lambda": MTP_LAMBDA,
        "bias_gamma": BIAS_GAMMA, "data": "CPython standard library source (*.py, test dirs excluded), 95/5 file split",
        "held_out_bits_per_byte": round(bpb, 4), "unigram_bits_per_byte": round(unigram_bpb, 4),
        "note": "embedded default model: tiny DeepSeek-V3-architecture model trained on Python's standard library",
        **split_record(held_files),  # eval_tiny checks its held-out files are these
    }
    write_checkpoint(args.out, TINY_CONFIG, sd, tok, card)
    if args.bf16_out:
        from safetensors.torch import save_file

        args.bf16_out.mkdir(parents=True, exist_ok=True)
        cfg_bf16 = {k: v for k, v in TINY_CONFIG.items() if k != "quantization_config"}
        (args.bf16_out / "config.json").write_text(json.dumps(cfg_bf16, indent=2))
        save_file(sd, str(args.bf16_out / "model.safetensors"), metadata={"format": "pt"})
        for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            (args.bf16_out / f).write_bytes((args.out / f).read_bytes())
    print(json.dumps(card), flush=True)


if __name__ == "__main__":
    main()
