"""Backends: the objects that supply the ops a model's architecture calls.

The architecture (text_model.py, vision_model.py) is written once, against the ops contract of
``contract.py`` (``ops.linear``, ``ops.depthwise_conv2d``, ...). A backend supplies them:

- ``"reference"``: ``minialign.backends.reference``, the plain math in NumPy -- the lesson, and
  what every other backend is tested against. Slow, but usable.
- ``"numpy"`` (the default): ``minialign.backends.numpy``, the same math made fast on the CPU.
- ``"triton"``: a ``minialign.backends.triton.TritonOps``, whose ops run the hand-written Triton
  kernels of ``minialign.kernels`` on torch tensors (CUDA, or the CPU under TRITON_INTERPRET=1).
"""

from __future__ import annotations

from . import numpy as numpy_ops
from . import reference
from .contract import Ops

BACKENDS = ("numpy", "reference", "triton")
DEFAULT_BACKEND = "numpy"
DTYPES = ("float32", "bfloat16")


def get_ops(backend: str = DEFAULT_BACKEND, *, device: str | None = None, dtype: str = "float32",
            cuda_graphs: bool = False) -> Ops:
    """The ops for ``backend``, computing in ``dtype`` on ``device``.

    ``device``, ``dtype`` and ``cuda_graphs`` only mean something for "triton" (device defaults to
    "cuda", or "cpu" under TRITON_INTERPRET=1; dtype "float32" or "bfloat16"; ``cuda_graphs``
    replays each tower's forward as a CUDA graph, see ``minialign.cuda_graphs``); the NumPy
    backends compute in float32 on the CPU.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if backend in ("numpy", "reference"):
        if device not in (None, "cpu") or dtype != "float32":
            raise ValueError(f"the {backend} backend computes in float32 on the CPU; got device={device!r}, "
                             f"dtype={dtype!r} (use backend='triton' for a GPU or bfloat16)")
        if cuda_graphs:
            raise ValueError(f"cuda_graphs=True needs backend='triton' on a CUDA GPU, not the {backend} backend")
        return numpy_ops if backend == "numpy" else reference
    try:
        import torch  # noqa: F401  (the Triton backend's arrays; imported only when asked for)
        import triton  # noqa: F401
    except ImportError as error:
        raise ValueError(f"backend='triton' needs torch and triton ({error.name} is not installed): "
                         "pip install 'minialign[gpu]'") from None
    from .triton import TritonOps

    return TritonOps(device=device, dtype=dtype, cuda_graphs=cuda_graphs)
