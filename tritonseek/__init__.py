"""tritonseek: DeepSeek-V3-architecture inference with Triton kernels.

Public entry points:
  * ``tritonseek.LLM`` / ``tritonseek.SamplingParams`` -- offline generation (vLLM-style).
  * ``tritonseek.kernels`` -- the kernel launchers and their plain-PyTorch references.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import tritonseek.kernels` does not pull in the model/engine layers.
    if name in ("LLM", "SamplingParams", "RequestOutput"):
        from tritonseek.engine import llm

        return getattr(llm, name)
    raise AttributeError(name)
