"""Paged latent KV cache and its block allocator.

Each layer (plus each MTP layer) owns one tensor [num_blocks, page_size, 1, kv_lora_rank +
qk_rope_head_dim] -- FlashMLA's layout; a sequence's tokens live in the blocks listed in its row
of ``block_table``. Blocks are handed out from a free list; rolling back rejected speculative
tokens only shortens a sequence's length (no copies).
"""

from __future__ import annotations

import torch


class CacheFullError(RuntimeError):
    """The cache has no free block left for a sequence."""


class BlockAllocator:
    """Free-list allocator of cache block ids (0 … num_blocks-1)."""

    def __init__(self, num_blocks: int):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks={num_blocks} must be positive")
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise CacheFullError(f"need {n} cache blocks, only {len(self._free)} free of {self.num_blocks}")
        out = [self._free.pop() for _ in range(n)]
        return out

    def free(self, blocks: list[int]) -> None:
        self._free.extend(reversed(blocks))


class PagedLatentCache:
    """Per-layer latent caches plus per-sequence block lists.

    Args:
        num_layers: caches to allocate (decoder layers + MTP layers).
        num_blocks: blocks per layer.
        page_size: tokens per block (power of two; 64 by default as in FlashMLA).
        latent_dim: kv_lora_rank + qk_rope_head_dim (576 for DeepSeek-V3).
        dtype, device: cache storage.
    """

    def __init__(self, num_layers: int, num_blocks: int, page_size: int, latent_dim: int,
                 dtype: torch.dtype, device: torch.device):
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page_size={page_size} must be a power of two")
        self.page_size = page_size
        self.device = device
        # Empty (not zeroed): a slot is only read after it was written, and the attention kernels
        # mask slots beyond each sequence's length before the dot.
        self.layers = [
            torch.empty(num_blocks, page_size, 1, latent_dim, dtype=dtype, device=device) for _ in range(num_layers)
        ]
        self.num_blocks = num_blocks
        self.allocator = BlockAllocator(num_blocks)
        self.blocks: dict[int, list[int]] = {}
        # Bumped whenever a block list is dropped: holders of copies (the CUDA-graph block_table) re-send.
        self.epoch = 0

    def ensure_capacity(self, seq_id: int, num_tokens: int) -> None:
        """Give sequence ``seq_id`` enough blocks to hold ``num_tokens`` tokens."""
        have = self.blocks.setdefault(seq_id, [])
        need = -(-num_tokens // self.page_size) - len(have)
        if need > 0:
            have.extend(self.allocator.allocate(need))

    def release(self, seq_id: int) -> None:
        self.allocator.free(self.blocks.pop(seq_id, []))
        self.epoch += 1

    def reset(self) -> None:
        """Release every sequence (the tensors are kept, for reuse by the next ``generate`` call)."""
        for sid in list(self.blocks):
            self.release(sid)

    def slots(self, seq_id: int, start: int, end: int) -> list[int]:
        """Cache rows (block·page_size + offset) of token positions [start, end) of a sequence."""
        blocks = self.blocks[seq_id]
        ps = self.page_size
        return [blocks[p // ps] * ps + p % ps for p in range(start, end)]

    def slots_tensor(self, seq_id: int, start: int, end: int) -> torch.Tensor:
        """:meth:`slots` as a CPU int64 tensor, computed with tensor ops (a prompt's thousands of
        positions would cost milliseconds as a Python list turned into a tensor)."""
        blocks = torch.tensor(self.blocks[seq_id], dtype=torch.int64)
        pos = torch.arange(start, end, dtype=torch.int64)
        return blocks[pos // self.page_size] * self.page_size + pos % self.page_size

    def block_table(self, seq_ids: list[int]) -> torch.Tensor:
        """[len(seq_ids), max_blocks] int32, rows padded with 0 (never read past cache_seqlens)."""
        width = max(1, max(len(self.blocks[s]) for s in seq_ids))
        rows = [self.blocks[s] + [0] * (width - len(self.blocks[s])) for s in seq_ids]
        return torch.tensor(rows, dtype=torch.int32, device=self.device)
