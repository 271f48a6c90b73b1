"""kernels/batchnorm_silu.py against a hand case, torch's batchnorm + SiLU and the reference ops.

The kernel runs on the GPU in float32 and bfloat16 when there is one, else on the CPU under
Triton's interpreter in float32 (see conftest.py). ``torch_bn_act`` is the torch reference the
benchmark times too.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TOLERANCES, assert_close
from minialign.backends import reference
from minialign.kernels._checks import KernelInputError
from minialign.kernels.batchnorm_silu import batchnorm_act, bn_scale_shift

# Kernel vs a float32 reference computed from the same (already rounded) input.
TOL = {
    # float32 in, float32 out: the same multiply-add and exp in a different order; a few ulps.
    torch.float32: TOLERANCES["float32"],
    # bfloat16 out: the kernel rounds once at the store (~4e-3 relative); the inputs are the
    # reference's inputs, so nothing else differs.
    torch.bfloat16: TOLERANCES["bfloat16"],
}
# hypothesis + the per-test kernel_dtype/kernel_device fixtures: they return constants, so
# reusing them across examples is safe.
FIXTURES_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def torch_bn_act(x_nchw, weight, bias, mean, var, eps, activation="silu", residual=None):
    # [B, C, H, W] (channels_last memory on the GPU), [C] x 4 -> [B, C, H, W]
    """The torch spelling: eval-mode F.batch_norm, then SiLU (or nothing), then + residual."""
    y = F.batch_norm(x_nchw, mean, var, weight, bias, training=False, eps=eps)
    if activation == "silu":
        y = F.silu(y)
    return y if residual is None else y + residual


def random_bn(C, seed, device="cpu"):
    """Non-trivial batchnorm parameters (not init defaults, which hide swapped or dropped terms)."""
    g = torch.Generator().manual_seed(seed)
    weight = 1 + 0.3 * torch.randn(C, generator=g)
    bias = torch.randn(C, generator=g)
    mean = torch.randn(C, generator=g)
    var = 0.5 + torch.rand(C, generator=g)
    return [t.to(device) for t in (weight, bias, mean, var)]


def test_hand_case(kernel_device):
    # weight [2, 1], bias [0, 1], mean [1, 0], var [3, 0], eps 1 -> scale [1, 1], shift [-1, 1].
    dev = kernel_device
    p = [torch.tensor(v, device=dev) for v in ([2.0, 1.0], [0.0, 1.0], [1.0, 0.0], [3.0, 0.0])]
    scale, shift = bn_scale_shift(*p, eps=1.0)
    assert_close(scale, [1.0, 1.0], atol=0, rtol=0)
    assert_close(shift, [-1.0, 1.0], atol=0, rtol=0)
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.0]], device=dev)  # z = [[0, 3], [-2, 1]]
    z = [[0.0, 3.0], [-2.0, 1.0]]
    silu = [[0.0, 3 / (1 + math.exp(-3))], [-2 / (1 + math.exp(2)), 1 / (1 + math.exp(-1))]]
    assert_close(batchnorm_act(x, scale, shift, activation=None), z, atol=0, rtol=0)
    assert_close(batchnorm_act(x, scale, shift), silu, atol=1e-6, rtol=1e-6)
    res = torch.tensor([[1.0, -1.0], [0.5, 2.0]], device=dev)
    expected = np.array(silu) + res.cpu().numpy()
    assert_close(batchnorm_act(x, scale, shift, residual=res), expected, atol=1e-6, rtol=1e-6)


@FIXTURES_OK
@given(
    b=st.sampled_from([1, 2]),
    h=st.sampled_from([1, 3, 5]),
    w=st.sampled_from([1, 2, 7]),
    # 1 and primes; 130 > BLOCK_C = 128 (two channel tiles, the second masked), with rows up to
    # 70 > BLOCK_ROWS = 32 for it (two row tiles).
    c=st.sampled_from([1, 3, 7, 13, 48, 130]),
    activation=st.sampled_from(["silu", None]),
    with_residual=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_matches_torch_and_the_reference(kernel_dtype, kernel_device, b, h, w, c, activation, with_residual, seed):
    g = torch.Generator().manual_seed(seed)
    eps = 1e-3
    weight, bias, mean, var = random_bn(c, seed)
    x = (3 * torch.randn(b, h, w, c, generator=g)).to(kernel_dtype)
    res = torch.randn(b, h, w, c, generator=g).to(kernel_dtype) if with_residual else None

    scale, shift = bn_scale_shift(*(t.to(kernel_device) for t in (weight, bias, mean, var)), eps)
    y = batchnorm_act(x.to(kernel_device), scale, shift, activation=activation,
                      residual=None if res is None else res.to(kernel_device))
    assert y.dtype == kernel_dtype and y.shape == x.shape

    # References in float32 on the CPU, from the same rounded inputs.
    xf, rf = x.float(), None if res is None else res.float()
    expected = torch_bn_act(xf.permute(0, 3, 1, 2), weight, bias, mean, var, eps, activation,
                            None if rf is None else rf.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert_close(y, expected, **TOL[kernel_dtype], name="vs torch")
    ref = reference.batch_norm(xf.numpy(), weight.numpy(), bias.numpy(), mean.numpy(), var.numpy(), eps)
    if activation == "silu":
        ref = reference.silu(ref)
    if rf is not None:
        ref = ref + rf.numpy()
    assert_close(y, ref, **TOL[kernel_dtype], name="vs the reference ops")


# The interpreter computes exp with NumPy, which warns when exp(1000) overflows to inf; the GPU does not.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_saturates_and_works_in_place(kernel_device):
    # silu(z) -> 0 for z << 0 (exp(-z) overflows to inf) and -> z for z >> 0; out=x overwrites x.
    x = torch.tensor([[-1000.0, -90.0, 0.0, 90.0, 1000.0]], device=kernel_device)
    ones, zeros = torch.ones(5, device=kernel_device), torch.zeros(5, device=kernel_device)
    y = batchnorm_act(x, ones, zeros, out=x)
    assert y is x
    assert_close(x, [[0.0, 0.0, 0.0, 90.0, 1000.0]], atol=1e-30, rtol=0)


def test_empty_input(kernel_device):
    x = torch.empty(0, 4, 4, 8, device=kernel_device)
    y = batchnorm_act(x, torch.ones(8, device=kernel_device), torch.zeros(8, device=kernel_device))
    assert y.shape == x.shape


def _args(dev, C=6):
    return torch.randn(2, 3, C, device=dev), torch.ones(C, device=dev), torch.zeros(C, device=dev)


@pytest.mark.parametrize("case, match", [
    ("noncontiguous", "x must be contiguous"),
    ("scale_C", r"scale must have shape \(6,\)"),
    ("shift_C", r"shift must have shape \(6,\)"),
    ("scale_dtype", "scale must have dtype"),
    ("x_dtype", "x must have dtype"),
    ("residual_shape", "residual must have shape"),
    ("residual_dtype", "residual must have dtype"),
    ("out_shape", "out must have shape"),
    ("activation", "activation must be one of"),
    ("device", "scale is on meta"),
    ("not_tensor", "scale must be a torch.Tensor"),
])
def test_bad_inputs(kernel_device, case, match):
    x, scale, shift = _args(kernel_device)
    kw = {}
    if case == "noncontiguous":
        x = torch.randn(2, 6, 3, device=kernel_device).transpose(1, 2)  # [2, 3, 6], channel stride 3
    elif case == "scale_C":
        scale = torch.ones(5, device=kernel_device)
    elif case == "shift_C":
        shift = torch.zeros(7, device=kernel_device)
    elif case == "scale_dtype":
        scale = scale.double()
    elif case == "x_dtype":
        x = x.to(torch.int32)
    elif case == "residual_shape":
        kw["residual"] = torch.randn(2, 4, 6, device=kernel_device)
    elif case == "residual_dtype":
        kw["residual"] = x.double()
    elif case == "out_shape":
        kw["out"] = torch.empty(2, 3, 7, device=kernel_device)
    elif case == "activation":
        kw["activation"] = "gelu"
    elif case == "device":
        scale = torch.ones(6, device="meta")
    elif case == "not_tensor":
        scale = [1.0] * 6
    with pytest.raises(KernelInputError, match=match):
        batchnorm_act(x, scale, shift, **kw)
