"""Plain-PyTorch references of every kernel: the executable specification.

One module per kernel family (mla, fp8, moe, sampling, spec); each Triton kernel in
``tritonseek.kernels`` is tested against the function of the same name with a ``_ref`` suffix.
"""
