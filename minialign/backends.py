"""Choosing a backend: the object that supplies the ops a model's architecture calls.

The architecture (text_model.py, vision_model.py) is written once, against names like
``ops.linear`` or ``ops.depthwise_conv2d``. A backend supplies them:

- ``"numpy"``: the module ``minialign.layers`` itself -- the reference, on the CPU.
- ``"triton"``: a ``minialign.triton_ops.TritonOps``, whose ops run the hand-written Triton
  kernels of ``minialign.kernels`` on torch tensors (CUDA, or the CPU under TRITON_INTERPRET=1).
"""

from __future__ import annotations

from . import layers

BACKENDS = ("numpy", "triton")
DTYPES = ("float32", "bfloat16")


def get_ops(backend: str = "numpy", *, device: str | None = None, dtype: str = "float32"):
    """The ops for ``backend``, computing in ``dtype`` on ``device``.

    ``device`` and ``dtype`` only mean something for "triton" (device defaults to "cuda", or "cpu"
    under TRITON_INTERPRET=1; dtype "float32" or "bfloat16"); NumPy computes in float32 on the CPU.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if backend == "numpy":
        if device not in (None, "cpu") or dtype != "float32":
            raise ValueError(f"the numpy backend computes in float32 on the CPU; got device={device!r}, "
                             f"dtype={dtype!r} (use backend='triton' for a GPU or bfloat16)")
        return layers
    from .triton_ops import TritonOps  # imports torch and triton: only when asked for

    return TritonOps(device=device, dtype=dtype)
