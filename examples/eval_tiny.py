"""Evaluate the tiny default model: held-out loss, MTP acceptance, FP8 vs bf16 agreement.

    python examples/eval_tiny.py --model tritonseek/data/default_model [--bf16 PATH] [--device cuda]

Prints one JSON object:
  held_out_bits_per_byte  teacher-forced loss of the FP8 checkpoint on held-out stdlib files
  mtp_acceptance_k1/_k3   greedy speculative acceptance from ``LLM.generate(..., mtp=K)`` on
                          held-out prompts (fraction of drafted tokens accepted)
  fp8_vs_bf16_agreement   fraction of 1,000 held-out positions where the FP8 and bf16 models'
                          greedy next tokens agree (teacher-forced), when --bf16 is given
  held_out_split          "same" when this interpreter's held-out files are the training run's (the card's
                          python and held_out_files_sha256), else "differs: ..." / "unknown: ..." (a warning
                          too): the split shuffles the running Python's stdlib files, so another version's
                          "held-out" files are partly training files
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_default_model import corpus_files, split_check, split_record  # noqa: E402

from tritonseek import LLM, SamplingParams  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--bf16", type=Path, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    llm = LLM(args.model, device=args.device, backend="reference")
    _, held = corpus_files(args.seed)
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in held]
    ids = [llm.tokenizer.encode(t, add_bos=False) for t in texts]
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tok = sum(len(x) for x in ids)
    res: dict = {"model": str(args.model)}
    card_path = args.model / "tritonseek_model.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    # the split is the running interpreter's: on another Python the "held-out" files include training files
    res["held_out_split"] = split_check(card, split_record(held))
    if res["held_out_split"] != "same":
        print(f"warning: held-out split {res['held_out_split']}", file=sys.stderr)

    # held-out loss on 512-token windows
    nll, count = 0.0, 0
    for seq in ids:
        for s in range(0, len(seq) - 1, 512):
            w = seq[s: s + 513]
            if len(w) < 2:
                continue
            lg = llm.score(w[:-1])
            nll += torch.nn.functional.cross_entropy(lg, torch.tensor(w[1:], device=lg.device), reduction="sum").item()
            count += len(w) - 1
        if count > 100_000:
            break
    res["held_out_bits_per_byte"] = round(nll / count / math.log(2) / (n_bytes / n_tok), 4)
    res["held_out_tokens"] = count

    # MTP acceptance, greedy, on held-out prompts of 48 tokens
    g = torch.Generator().manual_seed(args.seed)
    prompts = []
    for seq in ids:
        if len(seq) > 200 and len(prompts) < args.prompts:
            s = int(torch.randint(0, len(seq) - 100, (1,), generator=g))
            prompts.append(llm.tokenizer.decode(seq[s: s + 48]))
    p = SamplingParams(max_new_tokens=64, ignore_eos=True)
    for k in (1, 3):
        llm.generate(prompts, p, mtp=k)
        res[f"mtp_acceptance_k{k}"] = round(llm.last_stats.extra["acceptance"], 4)
        res[f"mtp_tokens_per_step_k{k}"] = round(llm.last_stats.extra["tokens_per_step"], 3)

    if args.bf16 is not None:
        ref = LLM(args.bf16, device=args.device, backend="reference")
        agree, total = 0, 0
        for seq in ids:
            w = seq[:256]
            if len(w) < 16:
                continue
            a = llm.score(w).argmax(-1)
            b = ref.score(w).argmax(-1)
            take = min(len(w), 1000 - total)
            agree += (a[:take] == b[:take]).sum().item()
            total += take
            if total >= 1000:
                break
        res["fp8_vs_bf16_agreement"] = round(agree / total, 4)
        res["agreement_positions"] = total
    print(json.dumps(res))


if __name__ == "__main__":
    main()
