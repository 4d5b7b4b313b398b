"""Model runner: turns a list of sequences into one prefill or decode step over the paged cache.

Prefill flattens all prompts into one varlen batch (cu_seqlens); decode feeds each live
sequence's newest token(s). Sampling draws each request's randomness from its own seeded
generator, so a prompt's output does not depend on which other prompts share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tritonseek.engine.kv_cache import PagedLatentCache
from tritonseek.engine.sampling_params import SamplingParams
from tritonseek.engine.tokenizer import TextStream
from tritonseek.model.mla import AttentionBatch
from tritonseek.model.model import DeepseekForCausalLM


@dataclass
class Sequence:
    """One request in flight."""

    seq_id: int
    prompt: str
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator | None
    stream: TextStream | None = None
    out_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.out_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def last_token(self) -> int:
        return self.out_ids[-1] if self.out_ids else self.prompt_ids[-1]


class ModelRunner:
    """Owns the cache of one ``generate`` call and runs steps of the model on it."""

    def __init__(self, model: DeepseekForCausalLM, cache: PagedLatentCache, device: torch.device):
        self.model = model
        self.cache = cache
        self.device = device
        self.vocab_size = model.cfg.vocab_size

    def _tensor(self, data, dtype) -> torch.Tensor:
        return torch.tensor(data, dtype=dtype, device=self.device)

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence]) -> torch.Tensor:
        """Run every prompt through the model; returns logits of each prompt's last token [B, V] fp32."""
        ids, pos, slots, cu = [], [], [], [0]
        for s in seqs:
            n = len(s.prompt_ids)
            self.cache.ensure_capacity(s.seq_id, n)
            ids.extend(s.prompt_ids)
            pos.extend(range(n))
            slots.extend(self.cache.slots(s.seq_id, 0, n))
            cu.append(cu[-1] + n)
        batch = AttentionBatch(
            is_prefill=True,
            slot_mapping=self._tensor(slots, torch.int64),
            cu_seqlens=self._tensor(cu, torch.int32),
            max_seqlen=max(len(s.prompt_ids) for s in seqs),
        )
        hidden = self.model(self._tensor(ids, torch.int64), self._tensor(pos, torch.int64), batch, self.cache.layers)
        last = self._tensor([c - 1 for c in cu[1:]], torch.int64)
        return self.model.compute_logits(hidden[last])

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """Feed each sequence's newest token; returns next-token logits [B, V] fp32."""
        ids, pos, slots = [], [], []
        for s in seqs:
            p = s.num_tokens - 1  # the newest token is not in the cache yet
            self.cache.ensure_capacity(s.seq_id, p + 1)
            ids.append(s.last_token)
            pos.append(p)
            slots.extend(self.cache.slots(s.seq_id, p, p + 1))
        seq_ids = [s.seq_id for s in seqs]
        cache_seqlens = self._tensor([s.num_tokens for s in seqs], torch.int32)
        ops = self.model.ops
        batch = AttentionBatch(
            is_prefill=False,
            slot_mapping=self._tensor(slots, torch.int64),
            block_table=self.cache.block_table(seq_ids),
            cache_seqlens=cache_seqlens,
            seqlen_q=1,
            mla_metadata=ops.mla_metadata(cache_seqlens, 1, self.model.cfg.num_attention_heads),
        )
        hidden = self.model(self._tensor(ids, torch.int64), self._tensor(pos, torch.int64), batch, self.cache.layers)
        return self.model.compute_logits(hidden)

    def sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Pick one token per sequence with its own SamplingParams and generator."""
        B, V = logits.shape
        temperature = self._tensor([float(s.params.temperature) for s in seqs], torch.float32)
        top_k = self._tensor([s.params.top_k for s in seqs], torch.int32)
        top_p = self._tensor([float(s.params.top_p) for s in seqs], torch.float32)
        noise = torch.ones(B, V, dtype=torch.float32, device=self.device)
        for i, s in enumerate(seqs):
            if s.params.temperature > 0:
                noise[i].exponential_(generator=s.generator)
        tokens = self.model.ops.sample(logits.float(), temperature, top_k, top_p, noise)
        return tokens.tolist()
