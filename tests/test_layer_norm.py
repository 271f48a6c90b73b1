"""kernels/layer_norm.py against a hand case, torch's F.layer_norm and minialign's reference op.

``torch_add_layer_norm`` is the torch reference the benchmark times too.
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
from minialign.kernels.layer_norm import layer_norm

# Kernel vs a float32 reference computed from the same (already rounded) inputs.
TOL = {
    # float32: sums of up to 4096 terms in a different order (tree vs sequential), a few ulps
    # of O(1) normalised values.
    torch.float32: TOLERANCES["float32"],
    # bfloat16 out: one rounding at the store (~4e-3 relative, outputs up to ~4 in size).
    torch.bfloat16: TOLERANCES["bfloat16"],
}
FIXTURES_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def torch_add_layer_norm(x, weight, bias, eps, residual=None):
    # [..., H], [H], [H] -> [..., H]
    """The torch spelling: x + residual, then F.layer_norm over the last axis."""
    v = x if residual is None else x + residual
    return F.layer_norm(v, (v.shape[-1],), weight, bias, eps)


def test_hand_case(kernel_device):
    # [1, 2, 3]: mean 2, var 2/3 -> [-sqrt(1.5), 0, sqrt(1.5)]; then * weight + bias.
    dev = kernel_device
    x = torch.tensor([[1.0, 2.0, 3.0]], device=dev)
    ones, zeros = torch.ones(3, device=dev), torch.zeros(3, device=dev)
    s = math.sqrt(1.5)
    assert_close(layer_norm(x, ones, zeros, 0.0), [[-s, 0.0, s]], atol=1e-6, rtol=0)
    w, b = torch.tensor([2.0, 1.0, -1.0], device=dev), torch.tensor([0.0, 1.0, 0.5], device=dev)
    assert_close(layer_norm(x, w, b, 0.0), [[-2 * s, 1.0, 0.5 - s]], atol=1e-6, rtol=0)
    # The residual is added before normalising: [0, 2, 4] + [1, 0, -1] = [1, 2, 3] again.
    x0, r = torch.tensor([[0.0, 2.0, 4.0]], device=dev), torch.tensor([[1.0, 0.0, -1.0]], device=dev)
    assert_close(layer_norm(x0, ones, zeros, 0.0, residual=r), [[-s, 0.0, s]], atol=1e-6, rtol=0)


@FIXTURES_OK
@given(
    rows=st.sampled_from([(1,), (3,), (2, 5)]),
    # 1 (var 0: y = bias), primes, a power of two, BERT's 768 (BLOCK_H 1024, masked), 1000
    h=st.sampled_from([1, 2, 7, 17, 128, 257, 768, 1000]),
    eps=st.sampled_from([1e-12, 1e-5, 1e-3, 0.5]),
    with_residual=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_matches_torch_and_the_reference(kernel_dtype, kernel_device, rows, h, eps, with_residual, seed):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(*rows, h, generator=g) + 1.5).to(kernel_dtype)  # not centred
    res = torch.randn(*rows, h, generator=g).to(kernel_dtype) if with_residual else None
    w = 1 + 0.3 * torch.randn(h, generator=g)
    b = torch.randn(h, generator=g)
    y = layer_norm(x.to(kernel_device), w.to(kernel_device), b.to(kernel_device), eps,
                   residual=None if res is None else res.to(kernel_device))
    assert y.dtype == kernel_dtype and y.shape == x.shape

    v = x.float() if res is None else x.float() + res.float()  # the kernel adds in float32
    assert_close(y, torch_add_layer_norm(v, w, b, eps), **TOL[kernel_dtype], name="vs torch")
    ref = reference.layer_norm(v.numpy(), w.numpy(), b.numpy(), eps)
    assert_close(y, ref, **TOL[kernel_dtype], name="vs reference op")


def test_a_residual_broadcast_over_the_batch_is_read_in_place(kernel_dtype, kernel_device):
    # BERT's embeddings: x [B, T, H] plus the positions [T, H], the same for every row of the batch.
    g = torch.Generator().manual_seed(1)
    x, positions = torch.randn(3, 5, 96, generator=g).to(kernel_dtype), torch.randn(5, 96, generator=g).to(kernel_dtype)
    w, b = 1 + 0.3 * torch.randn(96, generator=g), torch.randn(96, generator=g)
    y = layer_norm(x.to(kernel_device), w.to(kernel_device), b.to(kernel_device), 1e-12,
                   residual=positions.to(kernel_device))
    expected = torch_add_layer_norm(x.float(), w, b, 1e-12, residual=positions.float())  # torch broadcasts
    assert_close(y, expected, **TOL[kernel_dtype])


def test_weights_in_the_input_dtype(kernel_dtype, kernel_device):
    # A bfloat16 model keeps its LayerNorm weights in bfloat16; the kernel reads them as float32.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 96, generator=g).to(kernel_dtype)
    w, b = (1 + 0.3 * torch.randn(96, generator=g)).to(kernel_dtype), torch.randn(96, generator=g).to(kernel_dtype)
    y = layer_norm(x.to(kernel_device), w.to(kernel_device), b.to(kernel_device), 1e-12)
    expected = torch_add_layer_norm(x.float(), w.float(), b.float(), 1e-12)
    assert_close(y, expected, **TOL[kernel_dtype])


@pytest.mark.parametrize("with_residual", [False, True])
def test_large_mean(kernel_dtype, kernel_device, with_residual):
    # Mean 300, spread 1: the two-pass variance stays accurate where E[v^2] - E[v]^2 would cancel
    # (float32 ulp at 300 is 3e-5; the one-pass formula is off by ~1e-2 here). Compared with an
    # exact float64 computation from the same (rounded) inputs. With a residual the 300 is split
    # between x and r, and the large mean appears only in the float32 sum inside the kernel.
    rng = np.random.default_rng(0)
    if with_residual:
        x = torch.from_numpy(150 + rng.standard_normal((4, 768))).to(kernel_dtype)
        r = torch.from_numpy(150 + rng.standard_normal((4, 768))).to(kernel_dtype)
        v = x.double() + r.double()
    else:
        x, r = torch.from_numpy(300 + rng.standard_normal((4, 768))).to(kernel_dtype), None
        v = x.double()
    exact = (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + 1e-12)
    ones, zeros = torch.ones(768, device=kernel_device), torch.zeros(768, device=kernel_device)
    y = layer_norm(x.to(kernel_device), ones, zeros, 1e-12, residual=None if r is None else r.to(kernel_device))
    atol = 2e-4 if kernel_dtype == torch.float32 else TOL[torch.bfloat16]["atol"]
    assert_close(y, exact, atol=atol, rtol=0 if kernel_dtype == torch.float32 else TOL[torch.bfloat16]["rtol"])


def test_largest_row(kernel_device):
    # H = 4096 = MAX_H: BLOCK_H 4096, no masking, 8 warps on the GPU.
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(2, 4096, generator=g), torch.randn(4096, generator=g), torch.randn(4096, generator=g)
    y = layer_norm(x.to(kernel_device), w.to(kernel_device), b.to(kernel_device), 1e-5)
    assert_close(y, torch_add_layer_norm(x, w, b, 1e-5), **TOL[torch.float32])


def test_empty_input(kernel_device):
    dev = kernel_device
    x, w, b = torch.empty(0, 8, device=dev), torch.ones(8, device=dev), torch.zeros(8, device=dev)
    assert layer_norm(x, w, b, 1e-5).shape == (0, 8)


@pytest.mark.parametrize("case, match", [
    ("noncontiguous", "x must be contiguous"),
    ("x_dtype", "x must have dtype"),
    ("H_too_large", "H=4097 is unsupported"),
    ("H_zero", "H=0 is unsupported"),
    ("weight_H", r"weight must have shape \(6,\)"),
    ("bias_H", r"bias must have shape \(6,\)"),
    ("weight_dtype", "weight must have dtype"),
    ("bias_dtype", "bias must have dtype"),
    ("residual_shape", "residual must have x's shape"),
    ("residual_not_trailing", r"residual must have x's shape \(2, 3, 6\) or its trailing axes"),
    ("residual_dtype", "residual must have dtype"),
    ("eps_negative", "eps must be a real number >= 0"),
    ("eps_none", "eps must be a real number >= 0"),
    ("device", "weight is on meta"),
])
def test_bad_inputs(kernel_device, case, match):
    dev = kernel_device
    x, w, b, eps, kw = torch.randn(3, 6, device=dev), torch.ones(6, device=dev), torch.zeros(6, device=dev), 1e-5, {}
    if case == "noncontiguous":
        x = torch.randn(6, 3, device=dev).t()
    elif case == "x_dtype":
        x = x.to(torch.int64)
    elif case == "H_too_large":
        x, w, b = torch.randn(1, 4097, device=dev), torch.ones(4097, device=dev), torch.zeros(4097, device=dev)
    elif case == "H_zero":
        x = torch.randn(3, 0, device=dev)
    elif case == "weight_H":
        w = torch.ones(5, device=dev)
    elif case == "bias_H":
        b = torch.zeros(7, device=dev)
    elif case == "weight_dtype":
        w = w.double()  # neither float32 nor x's dtype
    elif case == "bias_dtype":
        b = b.half()  # must match weight's dtype
    elif case == "residual_shape":
        kw["residual"] = torch.randn(3, 7, device=dev)
    elif case == "residual_not_trailing":
        x, kw["residual"] = torch.randn(2, 3, 6, device=dev), torch.randn(2, 6, device=dev)  # [B, H]: not [T, H]
    elif case == "residual_dtype":
        kw["residual"] = torch.randn(3, 6, device=dev).double()
    elif case == "eps_negative":
        eps = -1e-5
    elif case == "eps_none":
        eps = None
    elif case == "device":
        w = torch.ones(6, device="meta")
    with pytest.raises(KernelInputError, match=match):
        layer_norm(x, w, b, eps, **kw)
