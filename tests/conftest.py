"""Test set-up: run Triton kernels through the CPU interpreter when no GPU is present.

TRITON_INTERPRET must be set before triton is imported anywhere, so this happens at the top of
the root conftest, before torch (which may import triton) is imported.
"""

import os

if os.environ.get("TRITONSEEK_TEST_DEVICE", "") != "cuda":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# CI has 2 cores and the interpreter is slow: few, small examples, no deadline.
settings.register_profile(
    "ci",
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)
settings.register_profile(
    "gpu",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def device() -> torch.device:
    """The device kernel tests run on: cuda when TRITONSEEK_TEST_DEVICE=cuda, else cpu (interpreter)."""
    if os.environ.get("TRITONSEEK_TEST_DEVICE", "") == "cuda":
        return torch.device("cuda")
    return torch.device("cpu")
