"""mla_decode with a metadata cut for other cache_seqlens (tester23 #5): with check_ids (the default), a length above
the one the schedule was cut for raises instead of returning garbage (out up to 2.7e38, lse +inf); metadata from
the same lengths, or from longer ones' bound, still runs."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.test_mla_decode import make_case
from tritonseek.kernels.mla_decode import get_mla_metadata, mla_decode
from tritonseek.kernels.reference.mla import mla_decode_ref


def test_metadata_cut_for_shorter_lengths_is_refused(device):
    gen = torch.Generator().manual_seed(5)
    q, kv, bt, cs = make_case(device, 3, 1, 4, 96, 64, 16, [37, 0, 64], gen)
    # max_seqlen_k given: on CUDA get_mla_metadata reads nothing back, so the bound is the caller's (on the CPU it is
    # the lengths' max either way)
    short = get_mla_metadata(torch.tensor([1, 1, 1], dtype=torch.int32, device=device), 1, 4, max_seqlen_k=1)
    with pytest.raises(ValueError, match=r"^cache_seqlens\[0\] = 37 is out of range.*metadata was cut for "
                                         r"cache_seqlens of at most 1"):
        mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=short)
    ro, _ = mla_decode_ref(q.float(), kv, bt, cs, head_dim_v=64)
    for md in (get_mla_metadata(cs, 1, 4), None):  # the lengths' own metadata (given, or made by mla_decode)
        o, _ = mla_decode(q, kv, bt, cs, head_dim_v=64, metadata=md)
        assert torch.isfinite(o).all()
        assert (o.float().cpu() - ro.cpu()).abs().max() < 2e-2
    with pytest.raises(ValueError, match=r"cache_seqlens\[2\] = 64 is out of range: entries must be in \[0, 41\)"):
        mla_decode(q, kv, bt, cs, head_dim_v=64,
                   metadata=get_mla_metadata(torch.tensor([40, 0, 40], dtype=torch.int32, device=device), 1, 4,
                                             max_seqlen_k=40))
