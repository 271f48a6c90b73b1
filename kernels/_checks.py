"""Argument checks shared by every kernel launcher.

A Triton kernel reads raw pointers: handed a tensor of the wrong dtype, layout or device it
computes garbage or faults, silently. Launchers therefore check everything first and raise a
``KernelInputError`` that names the argument, what was expected and what was found.
"""

from __future__ import annotations

import contextlib
import contextvars
import os


class KernelInputError(ValueError):
    """A kernel launcher got a tensor it cannot run on."""


# Under TRITON_INTERPRET=1 (CI has no GPU) kernels run on CPU tensors, in float32 only: the
# interpreter emulates the GPU with NumPy, which has no bfloat16.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

# The kernel lab (plan.py) runs the launchers on meta tensors (shapes only) while Triton's JIT
# records each launch and stops before compiling it: meta tensors pass the device check there.
_PLANNING = contextvars.ContextVar("planning", default=False)


@contextlib.contextmanager
def planning():
    """Within: launchers accept meta tensors (plan.recording, where nothing is launched)."""
    token = _PLANNING.set(True)
    try:
        yield
    finally:
        _PLANNING.reset(token)


def check_tensor(name: str, t, *, ndim: int | None = None, dtypes=None, device=None, contiguous: bool = False,
                 last_dim_contiguous: bool = False, shape: tuple | None = None) -> None:
    """Raise KernelInputError unless ``t`` is a torch tensor matching every given requirement.

    ``shape`` may contain None for "any size" in that position.
    """
    import torch

    if not isinstance(t, torch.Tensor):
        raise KernelInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.ndim != ndim:
        raise KernelInputError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if shape is not None:
        if len(shape) != t.ndim or any(s is not None and s != d for s, d in zip(shape, t.shape)):
            want = tuple("*" if s is None else s for s in shape)
            raise KernelInputError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise KernelInputError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if device is not None and t.device != device:
        raise KernelInputError(f"{name} is on {t.device}, the other inputs are on {device}")
    if not INTERPRETED and t.device.type != "cuda" and not (_PLANNING.get() and t.device.type == "meta"):
        raise KernelInputError(f"{name} is on {t.device}; Triton kernels need CUDA tensors "
                               "(or TRITON_INTERPRET=1 to run them on the CPU)")
    if contiguous and not t.is_contiguous():
        raise KernelInputError(f"{name} must be contiguous (got strides {t.stride()}); call .contiguous() first")
    if last_dim_contiguous and t.ndim and t.stride(-1) != 1:
        raise KernelInputError(f"{name} must have a contiguous last dimension (got strides {t.stride()})")
