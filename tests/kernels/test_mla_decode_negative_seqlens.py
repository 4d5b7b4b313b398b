"""mla_decode with a negative cache_seqlens entry (h2tester s26): the error said "entries must be in [0, 2);
metadata was cut for cache_seqlens of at most 1 (get_mla_metadata of other cache_seqlens?...)" although no
metadata was passed (mla_decode computed it from these very lengths). A negative length is reported as such; a
length above the metadata's bound still names the metadata (tester23 #5, test_mla_decode_metadata)."""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode


def _inputs():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 1, 4, 64, generator=g).to(torch.bfloat16)
    kv = torch.randn(12, 16, 1, 64, generator=g).to(torch.bfloat16)
    bt = torch.arange(12, dtype=torch.int32).view(3, 4)
    return q, kv, bt


@pytest.mark.parametrize("with_metadata", [False, True])
def test_negative_length_does_not_blame_metadata(with_metadata):
    q, kv, bt = _inputs()
    lens = torch.tensor([-1, 1, 1], dtype=torch.int32)
    md = get_mla_metadata(lens, 1, 4) if with_metadata else None
    with pytest.raises(ValueError, match=r"cache_seqlens\[0\] = -1 is out of range") as e:
        mla_decode(q, kv, bt, lens, head_dim_v=32, metadata=md)
    assert "metadata" not in str(e.value)


def test_length_above_metadata_bound_still_names_metadata():
    q, kv, bt = _inputs()
    md = get_mla_metadata(torch.tensor([5, 1, 1], dtype=torch.int32), 1, 4)
    with pytest.raises(ValueError, match="metadata was cut for cache_seqlens of at most 5"):
        mla_decode(q, kv, bt, torch.tensor([40, 1, 1], dtype=torch.int32), head_dim_v=32, metadata=md)
