"""PagedLatentCache / BlockAllocator bookkeeping on the CPU: released blocks go back to the free list and can be
handed out again. tester22 mutation #68: a release that dropped the block list without freeing it passed the CPU
suite (without CUDA graphs every generate call builds a fresh cache, so a freed block is never needed twice)."""

from __future__ import annotations

import pytest
import torch

from tritonseek.engine.kv_cache import CacheFullError, PagedLatentCache


def test_release_and_reset_return_blocks():
    cache = PagedLatentCache(1, 4, 16, 8, torch.float32, torch.device("cpu"))
    cache.ensure_capacity(0, 64)  # 4 pages: every block
    assert cache.allocator.num_free == 0 and sorted(cache.blocks[0]) == [0, 1, 2, 3]
    with pytest.raises(CacheFullError):
        cache.ensure_capacity(1, 1)
    epoch = cache.epoch
    cache.release(0)
    assert cache.allocator.num_free == 4 and cache.epoch > epoch  # holders of block-table copies re-send
    cache.ensure_capacity(1, 33)  # 3 pages, from the released blocks
    cache.ensure_capacity(2, 16)
    assert cache.allocator.num_free == 0 and sorted(cache.blocks[1] + cache.blocks[2]) == [0, 1, 2, 3]
    cache.reset()
    assert cache.allocator.num_free == 4 and cache.blocks == {}
