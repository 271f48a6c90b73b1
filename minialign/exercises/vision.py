"""Exercises 08-10: the vision side, one MBConv block's pieces.

References: ``backends/reference.py`` (``fold_batch_norm``, ``depthwise_conv2d``,
``squeeze_excite``) and, where installed, torch's own fusion helper and grouped convolution.
"""

from __future__ import annotations

import functools

import numpy as np

from ..backends import reference
from .checker import Case, Exercise, Mistake, torch_reference

F32 = np.float32


# -- 08 batchnorm folded into the convolution before it --------------------------------------------


def _fold_cases() -> list[Case]:
    rng = np.random.default_rng(8)

    def case(name, shape, eps):
        C = shape[0]
        conv = rng.standard_normal(shape).astype(F32)
        weight, bias, mean = (rng.standard_normal(C).astype(F32) for _ in range(3))
        var = (rng.uniform(0.5, 2.0, C) * rng.choice([1e-4, 1.0], C)).astype(F32)  # some channels with var ~ eps
        return Case(name, (conv, weight, bias, mean, var, eps))

    return [case("a 3x3 conv [5, 3, 3, 3], eps 1e-3", (5, 3, 3, 3), 1e-3),
            case("a depthwise 5x5 conv [7, 1, 5, 5], eps 1e-3", (7, 1, 5, 5), 1e-3),
            case("a 1x1 conv [4, 6, 1, 1], eps 1e-5", (4, 6, 1, 1), 1e-5),
            case("[3, 2, 3, 3]: Cout = k, so a scale on the wrong axis broadcasts silently", (3, 2, 3, 3), 1e-3)]


def _fold_variant(conv_weight, weight, bias, running_mean, running_var, eps, *, axis=0, eps_inside=True, sqrt=True,
                  shift_scaled=True):
    std = (np.sqrt(running_var + F32(eps)) if eps_inside else np.sqrt(running_var) + F32(eps)) if sqrt \
        else running_var + F32(eps)
    scale = weight / std
    shift = bias - running_mean * scale if shift_scaled else bias - running_mean
    scaled = conv_weight * scale[:, None, None, None] if axis == 0 else conv_weight * scale
    return scaled, shift


def _torch_fold(conv_weight, weight, bias, running_mean, running_var, eps):
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    t = [torch.from_numpy(np.asarray(a, np.float64)) for a in (conv_weight, running_mean, running_var, weight, bias)]
    w, b = fuse_conv_bn_weights(t[0], None, t[1], t[2], eps, t[3], t[4])
    return w.detach().numpy(), b.detach().numpy()


FOLD_BATCH_NORM = Exercise(
    number="08", title="batchnorm folded into a convolution", file="08_fold_batch_norm.py",
    function="fold_batch_norm",
    teaches="why an inference batchnorm costs nothing: scaling a conv's output channel is scaling its filter",
    docs="vision-tower.md#how-the-code-runs-a-block-four-fused-ops",
    cases=_fold_cases, reference=reference.fold_batch_norm,
    reference_name="minialign.backends.reference.fold_batch_norm",
    outputs=("conv_weight", "conv_bias"), atol=1e-5, rtol=1e-5, tolerance="float32, a few operations per element",
    mistakes=(
        Mistake("scale each OUTPUT channel's filter: conv_weight [Cout, Cin, k, k] times scale[:, None, None, None]; "
                "a plain `conv_weight * scale` broadcasts scale over the last axis (the kernel's columns)",
                functools.partial(_fold_variant, axis=-1), raises=True),
        Mistake("eps goes INSIDE the square root: scale = weight / sqrt(running_var + eps)",
                functools.partial(_fold_variant, eps_inside=False)),
        Mistake("running_var is a variance: divide by its square root, sqrt(running_var + eps)",
                functools.partial(_fold_variant, sqrt=False)),
        Mistake("the mean is subtracted BEFORE the scale: shift = bias - running_mean * scale",
                functools.partial(_fold_variant, shift_scaled=False)),
    ),
    also=(torch_reference("torch.nn.utils.fusion.fuse_conv_bn_weights (float64)", _torch_fold, 1e-5, 1e-5),),
)


# -- 09 a depthwise convolution, by loops ------------------------------------------------------------


def _depthwise_cases() -> list[Case]:
    rng = np.random.default_rng(9)

    def case(B, H, W, C, k, stride, padding):
        x = rng.standard_normal((B, H, W, C)).astype(F32)
        w = rng.standard_normal((C, 1, k, k)).astype(F32)
        return Case(f"x [{B}, {H}, {W}, {C}], {k}x{k}, stride {stride}, padding {padding}", (x, w, stride, padding))

    return [case(1, 5, 7, 3, 3, 1, (1, 1, 1, 1)),
            case(2, 9, 6, 5, 5, 2, (1, 2, 1, 2)),  # transformers' correct_pad for k=5, stride 2
            case(1, 8, 8, 2, 3, 2, (0, 1, 0, 1)),  # correct_pad for k=3, stride 2: bottom/right only
            case(1, 6, 5, 4, 3, 1, (0, 0, 0, 0)),
            case(2, 1, 1, 1, 3, 1, (1, 1, 1, 1))]


def _depthwise_variant(x, weight, stride, padding, *, flip=False, transpose=False, swap_sides=False,
                       ignore_stride=False, no_plus_one=False):
    if flip:
        weight = weight[:, :, ::-1, ::-1]
    if transpose:
        weight = weight.transpose(0, 1, 3, 2)
    if swap_sides:
        top, bottom, left, right = padding
        padding = (bottom, top, right, left)
    out = reference.depthwise_conv2d(x, np.ascontiguousarray(weight), 1 if ignore_stride else stride, padding)
    if no_plus_one:  # (Hp - k) // s output rows instead of (Hp - k) // s + 1
        out = out[:, :-1, :-1]
    return out


def _torch_depthwise(x, weight, stride, padding):
    import torch

    top, bottom, left, right = padding
    t = torch.from_numpy(np.asarray(x, np.float64)).permute(0, 3, 1, 2)
    t = torch.nn.functional.pad(t, (left, right, top, bottom))
    out = torch.nn.functional.conv2d(t, torch.from_numpy(np.asarray(weight, np.float64)), stride=stride,
                                     groups=x.shape[-1])
    return out.permute(0, 2, 3, 1).numpy()


DEPTHWISE_CONV = Exercise(
    number="09", title="a depthwise convolution, by loops", file="09_depthwise_conv.py", function="depthwise_conv2d",
    teaches="what a depthwise conv computes, index by index: padding (top, bottom, left, right), stride, output "
            "size, no kernel flip",
    docs="kernels/depthwise-conv.md#what-it-computes",
    cases=_depthwise_cases, reference=reference.depthwise_conv2d,
    reference_name="minialign.backends.reference.depthwise_conv2d",
    outputs=("out",), atol=1e-5, rtol=1e-5, tolerance="float32, sums of at most 25 products",
    mistakes=(
        Mistake("no kernel flip: a deep-learning convolution is a cross-correlation, "
                "out[y, x] = sum_ij x_pad[y*s + i, x*s + j] * weight[c, 0, i, j]",
                functools.partial(_depthwise_variant, flip=True)),
        Mistake("weight[c, 0, i, j]: i runs down the rows (y), j along the columns (x)",
                functools.partial(_depthwise_variant, transpose=True)),
        Mistake("padding is (top, bottom, left, right): stride-2 layers pad more at the bottom and the right",
                functools.partial(_depthwise_variant, swap_sides=True)),
        Mistake("the output has Ho = (H + top + bottom - k) // stride + 1 rows (and the same for Wo): the input "
                "position of output (y, x) is (y*stride + i, x*stride + j)",
                functools.partial(_depthwise_variant, ignore_stride=True)),
        Mistake("Ho = (H + top + bottom - k) // stride + 1: the + 1 counts the first window",
                functools.partial(_depthwise_variant, no_plus_one=True)),
    ),
    also=(torch_reference("torch.nn.functional.conv2d with groups=C (float64)", _torch_depthwise, 1e-5, 1e-5),),
)


# -- 10 squeeze-excitation -----------------------------------------------------------------------------


def _se_cases() -> list[Case]:
    rng = np.random.default_rng(10)

    def case(B, H, W, C, S):
        x = (rng.standard_normal((B, H, W, C)) + rng.standard_normal(C)).astype(F32)  # channel means differ
        params = (rng.standard_normal((S, C, 1, 1)).astype(F32), rng.standard_normal(S).astype(F32),
                  rng.standard_normal((C, S, 1, 1)).astype(F32), rng.standard_normal(C).astype(F32))
        return Case(f"x [{B}, {H}, {W}, {C}], bottleneck S={S}", (x, *params))

    return [case(2, 5, 7, 6, 3), case(1, 3, 3, 11, 2), case(3, 1, 1, 4, 1), case(2, 9, 4, 8, 5)]


def _se_variant(x, w_reduce, b_reduce, w_expand, b_expand, *, pool="mean", inner=reference.silu,
                outer=reference.sigmoid):
    s = x.mean(axis=(1, 2)) if pool == "mean" else x.sum(axis=(1, 2))
    hidden = inner(reference.linear(s, w_reduce[:, :, 0, 0], b_reduce))
    gate = outer(reference.linear(hidden, w_expand[:, :, 0, 0], b_expand))
    return x * gate[:, None, None, :]


SQUEEZE_EXCITE = Exercise(
    number="10", title="squeeze-excitation", file="10_squeeze_excite.py", function="squeeze_excite",
    teaches="a per-channel gate computed from the whole image: the squeeze (mean over space), the bottleneck, "
            "the sigmoid",
    docs="vision-tower.md#one-mbconv-block",
    cases=_se_cases, reference=reference.squeeze_excite, reference_name="minialign.backends.reference.squeeze_excite",
    outputs=("out",), atol=1e-5, rtol=1e-5, tolerance="float32, two small matrix products",
    mistakes=(
        Mistake("the squeeze is the MEAN over the pixels (axes 1 and 2), not the sum",
                functools.partial(_se_variant, pool="sum")),
        Mistake("the bottleneck's activation is SiLU, x * sigmoid(x), not ReLU",
                functools.partial(_se_variant, inner=reference.relu)),
        Mistake("the gate is sigmoid(...), a factor in (0, 1) per channel: the sigmoid is missing",
                functools.partial(_se_variant, outer=lambda a: a)),
        Mistake("SiLU inside (after W_r), sigmoid outside (after W_e): they are swapped",
                functools.partial(_se_variant, inner=reference.sigmoid, outer=reference.silu)),
    ),
)

EXERCISES = (FOLD_BATCH_NORM, DEPTHWISE_CONV, SQUEEZE_EXCITE)
