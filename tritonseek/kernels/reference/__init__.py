"""Plain-PyTorch references of every kernel: the executable specification.

One module per kernel family: fp8, mla, mla_absorb, moe, norm, rope, sampling, spec, and spec_step (the engine's
speculative-step kernels); each Triton kernel in ``tritonseek.kernels`` is tested against the function of the same
name with a ``_ref`` suffix.
"""
