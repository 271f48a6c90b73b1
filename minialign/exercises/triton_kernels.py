"""Exercises 15-16: two Triton kernels, a masked row softmax and a 3x3 depthwise convolution.

The student writes a kernel's body; the file's launcher (given) runs it on torch tensors. On a
machine without a CUDA GPU the checker runs it through Triton's CPU interpreter
(``TRITON_INTERPRET=1``, set before triton is first imported; float32 only, as in the test
suite). References: the reference backend's ``softmax`` with the attention mask's bias, and its
``depthwise_conv2d``; torch where installed.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

from ..backends import reference
from .checker import Case, Exercise, ExerciseSetupError, Mistake, torch_reference

F32 = np.float32


def _prepare() -> None:
    """Use Triton's interpreter where torch sees no CUDA GPU. It must be chosen before triton is
    imported; a process that imported triton for a GPU it does not have cannot check these."""
    import torch

    if torch.cuda.is_available():
        return
    if "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise ExerciseSetupError("there is no CUDA GPU and triton was imported without TRITON_INTERPRET=1: run the "
                                 "check in a fresh process (minialign exercise check sets it itself)")


def _on_device(fn, *args):
    """Call the student's launcher with the case's arrays as torch tensors on the kernel's device."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return fn(*(torch.from_numpy(np.ascontiguousarray(a)).to(device) if isinstance(a, np.ndarray) else a
                for a in args))


# -- 15 masked row softmax ---------------------------------------------------------------------------


def _softmax_reference(x, mask):
    # the attention's softmax: the bias of reference.attention_bias, 0 or float32 min, then softmax
    return reference.softmax(x + np.where(mask, F32(0), np.finfo(F32).min))


def _softmax_cases() -> list[Case]:
    rng = np.random.default_rng(15)

    def case(R, C, shift=0.0, note=""):
        x = (rng.standard_normal((R, C)) * 3 + shift).astype(F32)
        mask = rng.random((R, C)) < 0.7
        mask[np.arange(R), rng.integers(0, C, R)] = True  # at least one real key per row
        return Case(f"x [{R}, {C}]{note}", (x, mask))

    return [case(4, 7), case(3, 33, note=": C just past a power of two"), case(5, 1, note=": one key per row"),
            case(2, 16, note=": C a power of two"),
            case(6, 10, shift=100.0, note=": scores around 100 (exp(100) overflows float32)")]


def _softmax_lanes(x, mask, *, masked_value=-np.inf, lane_value=-np.inf, subtract_max=True):
    """The kernel's view: the row padded with lanes to BLOCK_C = next power of two >= C; the
    known mistakes give masked keys or the extra lanes another value, or skip the max."""
    R, C = x.shape
    block = 1 << (C - 1).bit_length()
    lanes = np.full((R, block), lane_value, np.float64)
    lanes[:, :C] = np.where(mask, x, masked_value)
    e = np.exp(lanes - lanes.max(axis=-1, keepdims=True) if subtract_max else lanes).astype(F32)
    return (e / e.sum(axis=-1, keepdims=True))[:, :C]


def _torch_softmax(x, mask):
    import torch

    t = torch.from_numpy(np.asarray(x, np.float64)).masked_fill(torch.from_numpy(~np.asarray(mask)), float("-inf"))
    return torch.softmax(t, dim=-1).numpy()


MASKED_SOFTMAX = Exercise(
    number="15", title="a masked row softmax in Triton", file="15_triton_masked_softmax.py",
    function="masked_softmax",
    teaches="a first Triton kernel: one program per row, lanes past the row's end, -inf for masked keys, the "
            "max subtracted",
    docs="kernels/writing-a-kernel.md",
    cases=_softmax_cases, reference=_softmax_reference,
    reference_name="minialign.backends.reference.softmax with the attention mask's bias",
    outputs=("out",), atol=1e-6, rtol=1e-5, tolerance="float32; the kernel's exp and the division may round "
                                                        "differently from NumPy's by an ulp or two",
    mistakes=(
        Mistake("the mask is forgotten: load the mask and set the scores of padded keys to -inf "
                "(tl.where(real, x, float('-inf'))) before the max",
                lambda x, mask: _softmax_lanes(x, np.ones_like(mask))),
        Mistake("a padded key's score must be -inf, not 0: exp(0 - m) is not 0, so it takes weight from the real keys",
                functools.partial(_softmax_lanes, masked_value=0.0, lane_value=0.0)),
        Mistake("lanes past the end of the row (cols >= C, when C is not a power of two) must count for nothing: "
                "load them with other=float('-inf'), not 0.0",
                functools.partial(_softmax_lanes, lane_value=0.0)),
        Mistake("subtract the row's max before tl.exp: exp of a score above ~88 overflows float32 to inf, and "
                "inf / inf is NaN", functools.partial(_softmax_lanes, subtract_max=False)),
    ),
    also=(torch_reference("torch.softmax over masked_fill(-inf) (float64)", _torch_softmax, 1e-6, 1e-5),),
    needs=("torch", "triton"), prepare=_prepare, call=_on_device, writes="masked_softmax_kernel",
)


# -- 16 3x3 depthwise convolution ----------------------------------------------------------------------


def _conv3x3_reference(x, weight):
    return reference.depthwise_conv2d(x, weight, 1, (1, 1, 1, 1))


def _conv3x3_cases() -> list[Case]:
    rng = np.random.default_rng(16)

    def case(B, H, W, C, note=""):
        return Case(f"x [{B}, {H}, {W}, {C}]{note}", (rng.standard_normal((B, H, W, C)).astype(F32),
                                                       rng.standard_normal((C, 1, 3, 3)).astype(F32)))

    return [case(1, 5, 7, 3, ": fewer channels than BLOCK_C"), case(2, 7, 4, 20, ": two channel blocks, the "
                                                                                  "last one partial"),
            case(1, 1, 1, 1, ": one pixel"), case(1, 6, 6, 17)]


def _conv3x3_raster_by_height(x, weight):
    """The mistake y = p // H, x = p % H (raster order over the wrong width), taps still masked by H and W."""
    B, H, W, C = x.shape
    out = np.zeros((B, H * W, C), F32)
    for p in range(H * W):
        y, x0 = divmod(p, H)
        for i in range(3):
            for j in range(3):
                yy, xx = y + i - 1, x0 + j - 1
                if 0 <= yy < H and 0 <= xx < W:
                    out[:, p] += x[:, yy, xx] * weight[:, 0, i, j]
    return out.reshape(B, H, W, C)


def _torch_conv3x3(x, weight):
    import torch

    t = torch.from_numpy(np.asarray(x, np.float64)).permute(0, 3, 1, 2)
    out = torch.nn.functional.conv2d(t, torch.from_numpy(np.asarray(weight, np.float64)), padding=1,
                                     groups=x.shape[-1])
    return out.permute(0, 2, 3, 1).numpy()


DEPTHWISE_CONV3X3 = Exercise(
    number="16", title="a 3x3 depthwise convolution in Triton", file="16_triton_depthwise_conv.py",
    function="depthwise_conv3x3",
    teaches="a 2-D tiled kernel: pixel tiles times channel blocks, nine masked tap loads for the zero padding, "
            "a float32 accumulator",
    docs="kernels/depthwise-conv.md#how-the-work-is-tiled",
    cases=_conv3x3_cases, reference=_conv3x3_reference,
    reference_name="minialign.backends.reference.depthwise_conv2d, padding 1",
    outputs=("out",), atol=1e-5, rtol=1e-5, tolerance="float32, sums of nine products in another order",
    mistakes=(
        Mistake("tap (i, j) of output pixel (y, x) reads input pixel (y + i - 1, x + j - 1): one pixel of padding "
                "on every side, so the taps are centred on the pixel",
                lambda x, weight: reference.depthwise_conv2d(x, weight, 1, (0, 2, 0, 2))),
        Mistake("no kernel flip: tap (i, j) multiplies w[i, j] (at w_ptr + (i*3 + j)*C + c), as in exercise 09",
                lambda x, weight: reference.depthwise_conv2d(x, np.ascontiguousarray(weight[:, :, ::-1, ::-1]), 1,
                                                             (1, 1, 1, 1))),
        Mistake("raster order over H*W: y = p // W and x = p % W (W, the width, is the row length)",
                _conv3x3_raster_by_height),
    ),
    also=(torch_reference("torch.nn.functional.conv2d with groups=C, padding 1 (float64)", _torch_conv3x3, 1e-5,
                          1e-5),),
    needs=("torch", "triton"), prepare=_prepare, call=_on_device, writes="depthwise_conv3x3_kernel",
)

EXERCISES = (MASKED_SOFTMAX, DEPTHWISE_CONV3X3)
