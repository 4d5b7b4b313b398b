"""kernels._utils.check_index_range: the id check behind every launcher's check_ids."""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels._utils import check_index_range


def test_names_entry_and_value():
    check_index_range("ids", torch.tensor([0, 3, -1]), 0, 4, skip_negative=True)
    with pytest.raises(ValueError, match=r"ids\[1\] = 4 is out of range: entries must be in \[0, 4\)"):
        check_index_range("ids", torch.tensor([0, 4]), 0, 4)
    with pytest.raises(ValueError, match=r"bt\[1, 1\] = -1 is out of range"):
        check_index_range("bt", torch.tensor([[0, 1], [2, -1]]), 0, 4)
    # entries outside `read` are not the kernel's business
    check_index_range("bt", torch.tensor([[0, 9], [1, 2]]), 0, 4, read=torch.tensor([[True, False], [True, True]]))


def test_int32_ids_against_bounds_past_int32():
    """A bound of 2^31 + 1 must not wrap when compared with int32 ids (a 2^31-key block table)."""
    check_index_range("cache_seqlens", torch.tensor([10, 2**31 - 1], dtype=torch.int32), 0, 2**31 + 1)
    with pytest.raises(ValueError, match=r"= -2147483648"):
        check_index_range("cache_seqlens", torch.tensor([-(2**31)], dtype=torch.int32), 0, 2**31 + 1)
