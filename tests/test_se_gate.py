"""kernels/se_gate.py against a hand case, the gate formula in torch, minialign's reference
``squeeze_excite`` and transformers' ``AlignVisionSqueezeExciteLayer``.

``kernel_dtype`` is the dtype of the four weights (the model's dtype); the pixel sums and the
gate are float32 always. ``torch_se_gate`` is the torch reference the benchmark times too.

The kernel multiplies float32 values cut into three bfloat16 parts (kernels/se_gate.py); the
interpreter runs that cutting exactly as a GPU does and multiplies the parts in float32 where the
GPU's tensor cores multiply them in bfloat16, both exactly. So the CPU runs here check the GPU's
arithmetic, for bfloat16 and float16 weights too (``WEIGHT_DTYPES``): the interpreter loads and
converts them, it only cannot multiply them, and the kernel never asks it to.
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
from minialign.kernels import se_gate as se_gate_module
from minialign.kernels._checks import KernelInputError
from minialign.kernels.se_gate import se_gate

# The references use the same (rounded) weights converted to float32, and the kernel's products
# are as accurate as float32 dot products whatever the weights' dtype (the float32 operands are
# cut into bfloat16 parts exactly and the parts' products are exact in float32; no tf32 anywhere,
# on a GPU either), so one row fits all: two float32 dot products of up to a few thousand terms
# plus exp; errors are a few ulps of O(1) values.
TOL = TOLERANCES["float32"]
WEIGHT_DTYPES = [torch.float32, torch.bfloat16, torch.float16]  # the launcher's, on the CPU too
FIXTURES_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def torch_se_gate(sums, hw, w_r, b_r, w_e, b_e):
    # [B, C] float32, int, [S, C, 1, 1], [S], [C, S, 1, 1], [C] -> [B, C] float32
    """sigmoid(W_e silu(W_r (sums / hw) + b_r) + b_e), in float32."""
    m = sums / hw
    h = F.silu(F.linear(m, w_r.flatten(1).float(), b_r.float()))
    return torch.sigmoid(F.linear(h, w_e.flatten(1).float(), b_e.float()))


def random_se(C, S, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w_r = torch.randn(S, C, 1, 1, generator=g) / math.sqrt(C)
    b_r = 0.5 * torch.randn(S, generator=g)
    w_e = 2 * torch.randn(C, S, 1, 1, generator=g) / math.sqrt(S)
    b_e = 0.5 * torch.randn(C, generator=g)
    return [t.to(dtype) for t in (w_r, b_r, w_e, b_e)]


def test_hand_case(kernel_device):
    # m = sums / 2 = [1, 2]; z = 1*1 - 1*2 + 0.5 = -0.5; h = silu(-0.5); e = [2h + 0, 0*h + 1].
    dev = kernel_device
    sums = torch.tensor([[2.0, 4.0]], device=dev)
    w_r = torch.tensor([[1.0, -1.0]], device=dev).view(1, 2, 1, 1)
    b_r = torch.tensor([0.5], device=dev)
    w_e = torch.tensor([[2.0], [0.0]], device=dev).view(2, 1, 1, 1)
    b_e = torch.tensor([0.0, 1.0], device=dev)
    h = -0.5 / (1 + math.exp(0.5))
    expected = [[1 / (1 + math.exp(-2 * h)), 1 / (1 + math.exp(-1))]]
    assert_close(se_gate(sums, 2, w_r, b_r, w_e, b_e), expected, atol=1e-7, rtol=1e-6)
    # The same sums in three parts, as the depthwise kernel leaves them: [2, 4] = [1, 5] + [1, -2] + [0, 1].
    parts = torch.tensor([[[1.0, 5.0], [1.0, -2.0], [0.0, 1.0]]], device=dev)
    assert_close(se_gate(parts, 2, w_r, b_r, w_e, b_e), expected, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("weight_dtype", WEIGHT_DTYPES, ids=str)
def test_float32_accuracy_hand_case(kernel_device, weight_dtype):
    # m = sums / 2 = [1 + 2^-12, -1]; z = m0 + m1 = 2^-12; h = silu(z) = z / (1 + exp(-z)) =
    # 2^-13 (1 + 2^-13 - ...); e = [4096 h, 0]. bfloat16 (8 bits) and tf32 (11 bits) both round
    # 1 + 2^-12 to 1, which would make z = 0 and the first gate sigmoid(0) = 0.5 instead of
    # sigmoid(0.50006): the kernel's products must keep float32's 24 bits, in the expand's h too
    # (rounding h to bfloat16 gives e = 0.5 and moves the gate by 1.4e-5, 20 times the tolerance).
    dev = kernel_device
    sums = torch.tensor([[2 + 2.0**-11, -2.0]], device=dev)
    w_r = torch.tensor([[1.0, 1.0]], device=dev, dtype=weight_dtype).view(1, 2, 1, 1)
    b_r = torch.zeros(1, device=dev, dtype=weight_dtype)
    w_e = torch.tensor([[4096.0], [0.0]], device=dev, dtype=weight_dtype).view(2, 1, 1, 1)
    b_e = torch.zeros(2, device=dev, dtype=weight_dtype)
    z = 2.0**-12
    e = 4096 * z / (1 + math.exp(-z))
    expected = [[1 / (1 + math.exp(-e)), 0.5]]
    assert_close(se_gate(sums, 2, w_r, b_r, w_e, b_e), expected, atol=1e-7, rtol=1e-6)


def test_float32_weights_keep_their_24_bits(kernel_device):
    # The weights carry the small difference now: W_r m = (1 + 2^-20) - 1 = 2^-20, e = 2^20 h.
    dev = kernel_device
    sums = torch.tensor([[1.0, -1.0]], device=dev)
    w_r = torch.tensor([[1 + 2.0**-20, 1.0]], device=dev).view(1, 2, 1, 1)
    w_e = torch.tensor([[2.0**20], [0.0]], device=dev).view(2, 1, 1, 1)
    z = 2.0**-20
    e = 2.0**20 * z / (1 + math.exp(-z))
    gate = se_gate(sums, 1, w_r, torch.zeros(1, device=dev), w_e, torch.zeros(2, device=dev))
    assert_close(gate, [[1 / (1 + math.exp(-e)), 0.5]], atol=1e-7, rtol=1e-6)


# Shapes chosen for the tiling's edges (BLOCK_B = 16 images a program; see _config for the rest),
# with the launch's grid and the expand steps per program asserted so that each case keeps
# covering what it says. ``programs`` replaces PROGRAMS (108) to give small shapes several expand
# steps per program, and to keep align-base's widths to a few programs: the interpreter runs the
# programs one after another, and every program repeats the reduce over all of C.
@pytest.mark.parametrize("B, C, S, programs, grid, expand_steps", [
    # 2 image blocks, the second holding 1 image; C = 130: a C tail in the reduce (BLOCK_K 32 or
    # 64) and 3 channel ranges of 64, the last with 2 real channels; S = 33: BLOCK_S 64.
    (17, 130, 33, 108, (2, 3), 1),
    # 3 image blocks, the last holding 8; S = 5: BLOCK_S 16, BLOCK_C 64; 2 ranges of 2 expand
    # steps, the last step with 8 real channels.
    (40, 200, 5, 6, (3, 2), 2),
    # tiny: one image, one channel, one squeezed channel, all padded to 16
    (1, 1, 1, 108, (1, 1), 1),
    # align-base's most launched width (13 blocks): BLOCK_S 128, BLOCK_K divides C (no mask)
    (3, 2304, 96, 2, (1, 2), 36),
    # align-base's widest: BLOCK_S 256 (96 padded rows), BLOCK_C 16
    (2, 3840, 160, 3, (1, 3), 80),
])
@pytest.mark.parametrize("weight_dtype", WEIGHT_DTYPES, ids=str)
def test_tiling_edges(kernel_device, monkeypatch, weight_dtype, B, C, S, programs, grid, expand_steps):
    monkeypatch.setattr(se_gate_module, "PROGRAMS", programs)
    config = se_gate_module._config(B, C, S, weight_dtype == torch.bfloat16)
    assert (math.ceil(B / config["BLOCK_B"]), math.ceil(C / config["CHANNELS_PER_PROGRAM"])) == grid
    assert config["CHANNELS_PER_PROGRAM"] // config["BLOCK_C"] == expand_steps

    weights = random_se(C, S, seed=C + S, dtype=weight_dtype)
    hw = 49
    sums = hw * torch.randn(B, C, generator=torch.Generator().manual_seed(B))
    gate = se_gate(sums.to(kernel_device), hw, *(t.to(kernel_device) for t in weights))
    assert gate.dtype == torch.float32 and gate.shape == (B, C)
    assert_close(gate, torch_se_gate(sums, hw, *(t.float() for t in weights)), **TOL,
                 name=f"B={B} C={C} S={S} {weight_dtype}")


@FIXTURES_OK
@given(
    b=st.sampled_from([1, 2, 3]),
    # primes, and 130 > BLOCK_C for the larger S (several steps of both C loops, the last masked)
    c=st.sampled_from([1, 3, 7, 13, 37, 130]),
    # 160 = align-base's widest squeeze (BLOCK_S = 256, BLOCK_C = 16); 33 -> BLOCK_S = 64
    s=st.sampled_from([1, 2, 5, 33, 160]),
    hw=st.sampled_from([1, 9, 49]),
    # None: [B, C] sums; else [B, P, C] parts, as the depthwise kernel writes them (align-base: 9
    # on most maps, up to 288)
    parts=st.sampled_from([None, 1, 2, 9, 36]),
    seed=st.integers(0, 2**31),
)
def test_matches_torch_and_the_reference(kernel_dtype, kernel_device, b, c, s, hw, parts, seed):
    g = torch.Generator().manual_seed(seed)
    weights = random_se(c, s, seed, kernel_dtype)
    given_sums = (hw * torch.randn(b, c, generator=g) if parts is None
                  else hw / parts * torch.randn(b, parts, c, generator=g))
    sums = given_sums if parts is None else given_sums.double().sum(1).float()  # what the references take
    gate = se_gate(given_sums.to(kernel_device), hw, *(t.to(kernel_device) for t in weights))
    assert gate.dtype == torch.float32 and gate.shape == (b, c)

    w32 = [t.float() for t in weights]
    assert_close(gate, torch_se_gate(sums, hw, *w32), **TOL, name="vs torch")
    w_r, b_r, w_e, b_e = (t.numpy() for t in w32)
    ref = reference.sigmoid(reference.linear(reference.silu(reference.linear(sums.numpy() / hw, w_r[:, :, 0, 0], b_r)),
                                             w_e[:, :, 0, 0], b_e))
    assert_close(gate, ref, **TOL, name="vs the reference formula")


def test_gate_times_x_is_the_reference_squeeze_excite(kernel_device):
    # The block's output x * gate, from the pixel sums of x, equals minialign's squeeze_excite(x).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7, 24)).astype(np.float32)  # [B, H, W, C]
    w_r, b_r, w_e, b_e = (t.numpy() for t in random_se(24, 6, seed=1))
    sums = torch.from_numpy(x.sum(axis=(1, 2))).to(kernel_device)
    gate = se_gate(sums, 5 * 7, *(torch.from_numpy(t).to(kernel_device) for t in (w_r, b_r, w_e, b_e)))
    out = x * gate.cpu().numpy()[:, None, None, :]
    assert_close(out, reference.squeeze_excite(x, w_r, b_r, w_e, b_e), **TOL)


def test_matches_transformers_layer(kernel_device):
    from transformers import AlignVisionConfig
    from transformers.models.align.modeling_align import AlignVisionSqueezeExciteLayer

    from reference import randomize_

    # An expanded MBConv block: in_dim 16 -> expand_dim 96 channels, squeezed to 16 * 0.25 = 4.
    layer = randomize_(AlignVisionSqueezeExciteLayer(AlignVisionConfig(), in_dim=16, expand_dim=96, expand=True))
    x = torch.randn(2, 96, 5, 7)  # [B, C, H, W]
    with torch.no_grad():
        expected = layer(x)
    params = [p.detach().to(kernel_device) for p in
              (layer.reduce.weight, layer.reduce.bias, layer.expand.weight, layer.expand.bias)]
    gate = se_gate(x.sum(dim=(2, 3)).to(kernel_device), 5 * 7, *params)
    assert_close(x * gate.cpu()[:, :, None, None], expected, **TOL)


def _args(dev, B=2, C=6, S=3):
    return [torch.randn(B, C, device=dev), 4,
            torch.randn(S, C, 1, 1, device=dev), torch.randn(S, device=dev),
            torch.randn(C, S, 1, 1, device=dev), torch.randn(C, device=dev)]


@pytest.mark.parametrize("case, match", [
    ("sums_dtype", "sums must have dtype"),
    ("sums_ndim", r"sums must be \[B, C\] or \[B, parts, C\], got shape \(2, 6, 1, 1\)"),
    ("sums_noncontiguous", "sums must be contiguous"),
    ("hw_zero", "hw must be a positive int"),
    ("hw_float", "hw must be a positive int"),
    ("reduce_C", "reduce_weight has 5 input channels but sums has C=6"),
    ("expand_S", r"expand_weight must be \[C=6, S=3\]"),
    ("expand_C", r"expand_weight must be \[C=6, S=3\]"),
    ("weight_3x3", "reduce_weight must be a 1x1 conv weight"),
    ("reduce_bias", "reduce_bias must have shape"),
    ("expand_bias", "expand_bias must have shape"),
    ("weight_dtype_mismatch", "expand_weight must have dtype"),
    ("bias_dtype_mismatch", "reduce_bias must have dtype"),
    ("weight_int", "reduce_weight must have dtype"),
    ("S_too_large", "squeezed width S=513 is unsupported"),
    ("device", "reduce_weight is on meta"),
])
def test_bad_inputs(kernel_device, case, match):
    dev = kernel_device
    a = _args(dev)
    if case == "sums_dtype":
        a[0] = a[0].double()
    elif case == "sums_ndim":
        a[0] = a[0].view(2, 6, 1, 1)
    elif case == "sums_noncontiguous":
        a[0] = torch.randn(6, 2, device=dev).t()
    elif case == "hw_zero":
        a[1] = 0
    elif case == "hw_float":
        a[1] = 4.0
    elif case == "reduce_C":
        a[2] = torch.randn(3, 5, 1, 1, device=dev)
    elif case == "expand_S":
        a[4] = torch.randn(6, 4, 1, 1, device=dev)
    elif case == "expand_C":
        a[4] = torch.randn(5, 3, 1, 1, device=dev)
    elif case == "weight_3x3":
        a[2] = torch.randn(3, 6, 3, 3, device=dev)
    elif case == "reduce_bias":
        a[3] = torch.randn(4, device=dev)
    elif case == "expand_bias":
        a[5] = torch.randn(5, device=dev)
    elif case == "weight_dtype_mismatch":
        a[4] = a[4].half()
    elif case == "bias_dtype_mismatch":
        a[3] = a[3].half()
    elif case == "weight_int":
        a[2] = a[2].to(torch.int32)
    elif case == "S_too_large":
        a[2], a[4] = torch.randn(513, 6, 1, 1, device=dev), torch.randn(6, 513, 1, 1, device=dev)
    elif case == "device":
        a[2] = torch.randn(3, 6, 1, 1, device="meta")
    with pytest.raises(KernelInputError, match=match):
        se_gate(*a)


def test_parts_add_up_deterministically(kernel_device):
    """Parts as many as align-base's first block has (288 at C = 64), with a C tail (C = 130 is not
    a multiple of BLOCK_K): the gate is that of the parts' sum, the same bits on every run."""
    g = torch.Generator().manual_seed(3)
    weights = [t.to(kernel_device) for t in random_se(130, 5, seed=3)]
    parts = 49 / 288 * torch.randn(2, 288, 130, generator=g)
    gates = [se_gate(parts.to(kernel_device), 49, *weights) for _ in range(2)]
    assert torch.equal(gates[0], gates[1])
    assert_close(gates[0], torch_se_gate(parts.double().sum(1).float(), 49, *(t.cpu() for t in weights)), **TOL)


def test_offsets_past_int32_are_refused():
    # Meta tensors (shapes only, as the kernel lab's planning uses) reach the check without 8 GB.
    from minialign.kernels._checks import planning

    meta = dict(device="meta")
    B, C, S = 2**20, 2**11, 4
    args = [torch.empty(B, C, **meta), 1, torch.empty(S, C, 1, 1, **meta), torch.empty(S, **meta),
            torch.empty(C, S, 1, 1, **meta), torch.empty(C, **meta)]
    with planning(), pytest.raises(KernelInputError, match=r"have 2\*\*31 elements or more; split the batch"):
        se_gate(*args)
