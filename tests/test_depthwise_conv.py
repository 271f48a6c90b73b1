"""The fused depthwise conv + batchnorm + SiLU kernel against torch and against the reference ops.

The torch reference (``torch_depthwise_bn_silu``) is the eager channels_last graph the vision
tower runs in transformers: ZeroPad2d for the asymmetric stride-2 padding, a grouped conv2d, an
eval-mode batch_norm with the checkpoint's four tensors, SiLU, then the spatial mean that
squeeze-excitation takes. The benchmark imports it, so both compare against the same thing.
Tests compute it on the CPU in float64 from the kernel's own (possibly bfloat16) inputs: the only
difference left is the kernel's float32 accumulation and its one rounding on store.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TOLERANCES, assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import seeds, small_sizes

from minialign.backends import reference
from minialign.kernels._checks import KernelInputError
from minialign.kernels.depthwise_conv import depthwise_conv_bn_silu
from minialign.vision_model import depthwise_padding

# Tolerances for y, per dtype of x (and y), with the reason.
Y_TOLERANCES = {
    # <= 25 products summed in float32 in another order, then BN and exp: a few float32 ulps of
    # values that are O(10) at most here.
    torch.float32: TOLERANCES["float32"],
    # The kernel accumulates in float32 and rounds once on store: one bfloat16 rounding.
    torch.bfloat16: TOLERANCES["bfloat16"],
    torch.float16: TOLERANCES["float16"],
}
# The spatial sums are float32 in every dtype (summed before the output is rounded), in parts, one
# per program of an image; the tests compare the mean, sums.sum(1) / (Ho * Wo), which is what
# squeeze-excitation uses, and each part over Ho * Wo likewise. A float32 sum in another order than
# float64's: the error is a few float32 ulps of max |y|.
MEAN_TOLERANCE = dict(atol=1e-5, rtol=1e-5)

# (stride, adjust) as vision_model.depthwise_padding takes them: stride 1 is always "same".
PADDING_KINDS = {"s1 same": (1, False), "s2 adjust": (2, True), "s2 symmetric": (2, False)}


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------


def torch_depthwise_bn_silu(x, weight, bn, *, stride, padding, activation=True, with_mean=True):
    # [B, H, W, C], [C, 1, k, k], bn dict -> [B, Ho, Wo, C], [B, C] or None
    """silu(batch_norm(depthwise_conv(pad(x)))) in torch, channels_last, as transformers runs it.

    ``x`` is NHWC; its NCHW view x.permute(0, 3, 1, 2) is a channels_last tensor, which is what
    torch's convolution sees. ``bn`` holds the checkpoint's tensors (weight, bias, running_mean,
    running_var) and eps. Returns the NHWC view of the output and its mean over space.
    """
    top, bottom, left, right = padding
    h = x.permute(0, 3, 1, 2)  # NCHW view of channels_last memory
    if top == bottom and left == right:
        h = F.conv2d(h, weight, stride=stride, padding=(top, left), groups=h.shape[1])
    else:  # transformers: nn.ZeroPad2d(correct_pad) before a "valid" conv
        h = F.conv2d(F.pad(h, (left, right, top, bottom)), weight, stride=stride, groups=h.shape[1])
    h = F.batch_norm(h, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], training=False, eps=bn["eps"])
    if activation:
        h = F.silu(h)
    return h.permute(0, 2, 3, 1), (h.mean(dim=(2, 3)) if with_mean else None)


def fold_batch_norm(bn):
    # bn dict -> [C], [C] float32
    """Eval batchnorm as x * scale + shift: scale = weight / sqrt(var + eps), shift = bias - mean * scale."""
    scale = bn["weight"].double() / torch.sqrt(bn["running_var"].double() + bn["eps"])
    shift = bn["bias"].double() - bn["running_mean"].double() * scale
    return scale.float().contiguous(), shift.float().contiguous()


def random_case(seed, B, H, W, C, k, *, dtype=torch.float32, device="cpu", offset=0.0):
    """x [B, H, W, C] (in dtype), weight [C, 1, k, k] (in dtype) and non-trivial batchnorm tensors.

    Batchnorm statistics are random (not mean 0 / var 1), or a bug that drops them would pass.
    The weight scale keeps the conv output O(1) so that SiLU sees both of its regimes.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H, W, C, generator=gen) * 2 + offset
    weight = torch.randn(C, 1, k, k, generator=gen) / k
    bn = dict(weight=1 + 0.2 * torch.randn(C, generator=gen), bias=0.3 * torch.randn(C, generator=gen),
              running_mean=0.5 * torch.randn(C, generator=gen), running_var=0.5 + torch.rand(C, generator=gen),
              eps=1e-3)
    bn = {n: (v.to(device) if torch.is_tensor(v) else v) for n, v in bn.items()}
    return x.to(device, dtype), weight.to(device, dtype), bn


def part_pixels(Ho: int, Wo: int, C: int, k: int, stride: int) -> torch.Tensor:
    # -> [P, Ho, Wo] float64 of 0/1
    """Which output pixels each part of the sums covers: part p is program p's BLOCK_R patches of
    ROWS x RUN pixels, consecutive in raster order over the map's patches (the kernel's
    docstring), as the launcher's tiling (``_block_sizes``, forced by some tests) lays them."""
    import minialign.kernels.depthwise_conv as depthwise_conv

    rows, run, block_r, _, _ = depthwise_conv._block_sizes(Ho, Wo, C, k, stride)
    per_row, patches = -(-Wo // run), -(-Ho // rows) * -(-Wo // run)
    parts = torch.zeros(-(-patches // block_r), Ho, Wo, dtype=torch.float64)
    for patch in range(patches):
        y0, x0 = patch // per_row * rows, patch % per_row * run
        parts[patch // block_r, y0:y0 + rows, x0:x0 + run] = 1  # slicing clips at the map's edge
    return parts


def check_against_references(x, weight, bn, *, stride, padding, activation=True):
    """Run the kernel and compare y and sums with torch (float64, CPU) and with the reference ops:
    the sums' total, and each of their parts."""
    scale, shift = fold_batch_norm(bn)
    y, sums = depthwise_conv_bn_silu(x, weight, scale, shift, stride=stride, padding=padding, activation=activation)
    B, Ho, Wo, C = y.shape
    tol = Y_TOLERANCES[x.dtype]

    x64, w64 = x.detach().cpu().double(), weight.detach().cpu().double()
    bn64 = {n: (v.cpu().double() if torch.is_tensor(v) else v) for n, v in bn.items()}
    y_ref, mean_ref = torch_depthwise_bn_silu(x64, w64, bn64, stride=stride, padding=padding, activation=activation)
    assert_close(y, y_ref, **tol, name="y vs torch")
    assert_close(sums.sum(1) / (Ho * Wo), mean_ref, **MEAN_TOLERANCE, name="sums.sum(1) / (Ho*Wo) vs torch mean")
    parts = torch.einsum("phw,bhwc->bpc", part_pixels(Ho, Wo, C, weight.shape[-1], stride), y_ref)
    assert sums.shape == parts.shape, (tuple(sums.shape), tuple(parts.shape))
    assert_close(sums / (Ho * Wo), parts / (Ho * Wo), **MEAN_TOLERANCE, name="each part / (Ho*Wo) vs torch")

    # The reference ops this kernel replaces, in float32 on the same (rounded) inputs.
    npf = {n: (v.cpu().float().numpy() if torch.is_tensor(v) else v) for n, v in bn.items()}
    h = reference.depthwise_conv2d(x.cpu().float().numpy(), weight.cpu().float().numpy(), stride, padding)
    h = reference.batch_norm(h, npf["weight"], npf["bias"], npf["running_mean"], npf["running_var"], npf["eps"])
    if activation:
        h = reference.silu(h)
    assert_close(y, h, **tol, name="y vs the reference ops")
    assert_close(sums.sum(1) / (Ho * Wo), h.mean(axis=(1, 2)), **MEAN_TOLERANCE,
                 name="sums.sum(1) / (Ho*Wo) vs the reference mean")
    return y, sums


# ----------------------------------------------------------------------------------------------
# a hand-computed case
# ----------------------------------------------------------------------------------------------


def test_hand_computed_box_filter(kernel_device):
    # One 3x3 image 1..9 and an all-ones 3x3 filter: each output is the sum of its in-image
    # neighbours (zeros outside). BN is the identity and there is no activation.
    x = torch.arange(1.0, 10.0).reshape(1, 3, 3, 1).to(kernel_device)
    w = torch.ones(1, 1, 3, 3, device=kernel_device)
    one, zero = torch.ones(1, device=kernel_device), torch.zeros(1, device=kernel_device)

    y, sums = depthwise_conv_bn_silu(x, w, one, zero, stride=1, padding=(1, 1, 1, 1), activation=False)
    expected = [[12, 21, 16],  # 1+2+4+5, 1+2+3+4+5+6, 2+3+5+6
                [27, 45, 33],
                [24, 39, 28]]
    assert y[0, :, :, 0].tolist() == expected
    # A 3-wide map is one patch a row and a program a patch here (one channel): three parts, the
    # rows' sums, which add up to 245.
    assert sums.tolist() == [[[12 + 21 + 16], [27 + 45 + 33], [24 + 39 + 28]]]

    # Stride 2, symmetric padding: the four corners. With transformers' adjusted padding
    # (0, 1, 0, 1) the single output's window is the whole image.
    y, _ = depthwise_conv_bn_silu(x, w, one, zero, stride=2, padding=(1, 1, 1, 1), activation=False)
    assert y[0, :, :, 0].tolist() == [[12, 16], [24, 28]]
    y, _ = depthwise_conv_bn_silu(x, w, one, zero, stride=2, padding=(0, 1, 0, 1), activation=False)
    assert y[0, :, :, 0].tolist() == [[45]]

    # BN then SiLU on the centre: z = 45 * 0.1 - 4 = 0.5; silu(0.5) = 0.5 / (1 + e^-0.5).
    y, sums = depthwise_conv_bn_silu(x, w, one * 0.1, zero - 4, stride=2, padding=(0, 1, 0, 1))
    assert y.item() == pytest.approx(0.5 / (1 + np.exp(-0.5)), rel=1e-6)
    assert sums.shape == (1, 1, 1) and sums.item() == pytest.approx(y.item(), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# against torch and NumPy
# ----------------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw):
    """k, stride/padding as the vision tower uses them, and an input the padded kernel fits."""
    k = draw(st.sampled_from([3, 5]))
    stride, adjust = PADDING_KINDS[draw(st.sampled_from(sorted(PADDING_KINDS)))]
    padding = depthwise_padding(k, stride, adjust)
    H = draw(small_sizes.filter(lambda h: h + padding[0] + padding[1] >= k))
    W = draw(small_sizes.filter(lambda w: w + padding[2] + padding[3] >= k))
    return dict(k=k, stride=stride, padding=padding, B=draw(st.sampled_from([1, 2])), H=H, W=W,
                C=draw(st.sampled_from([1, 3, 5, 8, 13])), activation=draw(st.booleans()),
                offset=draw(st.sampled_from([0.0, 1.0, -2.5])), seed=draw(seeds))


@settings(suppress_health_check=[*settings.default.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(case=conv_cases())
def test_matches_torch_and_the_reference(case, kernel_dtype, kernel_device):
    x, w, bn = random_case(case["seed"], case["B"], case["H"], case["W"], case["C"], case["k"],
                           dtype=kernel_dtype, device=kernel_device, offset=case["offset"])
    check_against_references(x, w, bn, stride=case["stride"], padding=case["padding"], activation=case["activation"])


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("kind", sorted(PADDING_KINDS))
@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (2, 3), (4, 4)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_tiny_maps(k, kind, hw, kernel_dtype, kernel_device):
    """Maps no larger than the kernel: most taps fall in the padding. 1x1 and even sizes."""
    stride, adjust = PADDING_KINDS[kind]
    padding = depthwise_padding(k, stride, adjust)
    H, W = hw
    if H + padding[0] + padding[1] < k or W + padding[2] + padding[3] < k:
        with pytest.raises(KernelInputError, match="smaller than the"):
            depthwise_conv_bn_silu(*random_case(0, 1, H, W, 3, k, device=kernel_device)[:2],
                                   torch.ones(3, device=kernel_device), torch.zeros(3, device=kernel_device),
                                   stride=stride, padding=padding)
        return
    x, w, bn = random_case(1, 1, H, W, 3, k, dtype=kernel_dtype, device=kernel_device)
    check_against_references(x, w, bn, stride=stride, padding=padding)


@pytest.mark.parametrize("B, H, W, C, k, kind", [
    (2, 9, 9, 70, 3, "s1 same"),  # 3 pixel tiles x 2 channel blocks (the second 6/64 full) x 2 images
    (1, 19, 18, 70, 5, "s2 adjust"),  # 9x9 output: 3 pixel tiles, odd/even input sizes
])
def test_several_tiles(B, H, W, C, k, kind, kernel_dtype, kernel_device):
    """Tiles that end inside a row, masked channels, and sums added from several programs."""
    stride, adjust = PADDING_KINDS[kind]
    x, w, bn = random_case(2, B, H, W, C, k, dtype=kernel_dtype, device=kernel_device, offset=1.0)
    check_against_references(x, w, bn, stride=stride, padding=depthwise_padding(k, stride, adjust))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype, kernel_device):
    """bfloat16 / float16 in and out; runs under the interpreter too (it has no fixture dtype for them)."""
    x, w, bn = random_case(3, 2, 7, 6, 5, 5, dtype=dtype, device=kernel_device)
    y, sums = check_against_references(x, w, bn, stride=1, padding=(2, 2, 2, 2))
    assert y.dtype == dtype and sums.dtype == torch.float32


def test_sums_are_deterministic(kernel_device):
    """Each part is written by one program, with no atomics: two runs give the same bits (and
    the parts need no zeroed buffer: the launcher allocates them with torch.empty)."""
    x, w, bn = random_case(5, 2, 17, 16, 70, 3, device=kernel_device, offset=1.0)
    scale, shift = fold_batch_norm(bn)
    runs = [depthwise_conv_bn_silu(x, w, scale, shift, stride=1, padding=(1, 1, 1, 1))[1] for _ in range(2)]
    assert runs[0].shape[1] > 1  # several parts per image
    assert torch.equal(runs[0], runs[1])


def test_options_and_weight_dtype(kernel_device):
    """return_sums=False gives None; activation=False is conv + BN; the weight's dtype is free."""
    x, w, bn = random_case(4, 1, 5, 7, 3, 3, device=kernel_device)
    scale, shift = fold_batch_norm(bn)
    y, sums = depthwise_conv_bn_silu(x, w, scale, shift, stride=1, padding=(1, 1, 1, 1), return_sums=False)
    assert sums is None
    y64, _ = depthwise_conv_bn_silu(x, w.double(), scale, shift, stride=1, padding=(1, 1, 1, 1))
    assert torch.equal(y, y64)  # float64 weights are cast to the same float32 taps
    check_against_references(x, w, bn, stride=1, padding=(1, 1, 1, 1), activation=False)


# ----------------------------------------------------------------------------------------------
# the patches: each thread computes a ROWS x RUN patch of outputs from input rows loaded once
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("H, W, k, kind", [
    (13, 11, 3, "s1 same"),  # Wo = 11: RUN = 6, the second patch of a row crosses the right edge
    (6, 13, 5, "s1 same"),  # Wo = 13: RUN = 7 crosses it; ROWS = 2 patches, 3 of them down the map
    (9, 15, 5, "s1 same"),  # an odd height: 5x5 keeps ROWS = 1
    (17, 17, 5, "s2 adjust"),  # 9x9 output from an odd input, transformers' padding (1, 2, 1, 2)
    (17, 17, 5, "s2 symmetric"),  # the same with (2, 2, 2, 2): another 9x9
    (14, 26, 3, "s2 adjust"),  # even input, (0, 1, 0, 1): 7x13, a patch of 7 crossing the edge
    (14, 26, 3, "s2 symmetric"),  # (1, 1, 1, 1): 7x13
    (3, 4, 3, "s1 same"),  # a map narrower than the shortest run of 5
])
def test_patch_edges(H, W, k, kind, kernel_dtype, kernel_device):
    """The launcher's own tiling on maps whose patches do and do not fit exactly."""
    stride, adjust = PADDING_KINDS[kind]
    x, w, bn = random_case(6, 1, H, W, 8, k, dtype=kernel_dtype, device=kernel_device, offset=0.5)
    check_against_references(x, w, bn, stride=stride, padding=depthwise_padding(k, stride, adjust))


# (ROWS, RUN, BLOCK_R, BLOCK_C, num_warps), forced in place of _block_sizes' choice, and the
# input (H, W) each is tried on: odd sizes, so that patches cross the right and bottom edges.
TILINGS = {
    "run wider than the map": ((1, 9, 2, 8, 1), (9, 5)),
    "2 x 4 patches": ((2, 4, 4, 4, 1), (7, 9)),
    "3 x 5 patches, patches past the map": ((3, 5, 4, 8, 1), (9, 7)),
    "2 x 3, channels past C": ((2, 3, 1, 16, 1), (7, 9)),
}


@pytest.mark.parametrize("tiling", sorted(TILINGS))
@pytest.mark.parametrize("k, kind", [(3, "s1 same"), (5, "s1 same"), (3, "s2 adjust"), (5, "s2 symmetric")])
def test_every_tiling_gives_the_same_output(tiling, k, kind, kernel_dtype, kernel_device, monkeypatch):
    """Whatever the tiling, the output is torch's: patches that cross the right and bottom edges
    of the map, runs wider than it, channels past C (C = 6), programs with patches past its end."""
    import minialign.kernels.depthwise_conv as depthwise_conv

    sizes, (H, W) = TILINGS[tiling]
    monkeypatch.setattr(depthwise_conv, "_block_sizes", lambda *shape: sizes)
    stride, adjust = PADDING_KINDS[kind]
    x, w, bn = random_case(7, 1, H, W, 6, k, dtype=kernel_dtype, device=kernel_device)
    check_against_references(x, w, bn, stride=stride, padding=depthwise_padding(k, stride, adjust))


@pytest.mark.parametrize("tiling", [None, (2, 3, 2, 8, 1), (1, 6, 1, 8, 1)], ids=["launcher", "2x3", "1x6"])
@pytest.mark.parametrize("k, kind", [(3, "s1 same"), (5, "s1 same"), (3, "s2 adjust"), (3, "s2 symmetric"),
                                     (5, "s2 adjust"), (5, "s2 symmetric")])
def test_exact_tilings_read_nothing_outside_the_image(tiling, k, kind, kernel_device, monkeypatch):
    """When the patches tile the map exactly (as on align-base's maps) the kernel loads the middle
    rows and columns of a patch's window without a mask, and stores without one. x sits in the
    middle of a buffer of NaN: a load outside the image would put a NaN into the output. 12 x 12
    inputs give 12 x 12 (stride 1) or 6 x 6 (stride 2) maps, which every tiling here divides."""
    import minialign.kernels.depthwise_conv as depthwise_conv

    if tiling is not None:
        monkeypatch.setattr(depthwise_conv, "_block_sizes", lambda *shape: tiling)
    stride, adjust = PADDING_KINDS[kind]
    x, w, bn = random_case(8, 1, 12, 12, 8, k, device=kernel_device, offset=1.0)
    guard = 4 * x[0].numel()  # more than any window reaches past the image
    buffer = torch.full((guard + x.numel() + guard,), float("nan"), device=kernel_device)
    buffer[guard:guard + x.numel()] = x.flatten()
    inside = buffer[guard:guard + x.numel()].view(x.shape)
    y, sums = check_against_references(inside, w, bn, stride=stride, padding=depthwise_padding(k, stride, adjust))
    assert not y.isnan().any() and not sums.isnan().any()


@pytest.mark.parametrize("C, shifted", [(8, False), (70, False), (7, False), (8, True)])
def test_bfloat16_channel_pairs(C, shifted, kernel_device):
    """bfloat16 with an even C is loaded two channels per 32-bit word (the odd channel is the word's
    top half, the even one its bottom half moved up); C = 70 leaves 6 of the second block's 64
    channels; C = 7, and an x that starts 2 bytes into a word (a view one element into its
    storage), are loaded one channel at a time. Runs under the interpreter too."""
    x, w, bn = random_case(9, 2, 9, 10, C, 3, dtype=torch.bfloat16, device=kernel_device)
    if shifted:
        storage = torch.empty(x.numel() + 1, dtype=x.dtype, device=kernel_device)
        storage[1:] = x.flatten()
        x = storage[1:].view(x.shape)
    for stride, adjust in ((1, False), (2, True)):
        check_against_references(x, w, bn, stride=stride, padding=depthwise_padding(3, stride, adjust))


# align-base's depthwise maps at its 289-pixel input: (Ho, Wo, C, k, stride), as the kernel lab
# (benchmarks/results/kernel_report.json) lists them.
ALIGN_BASE_MAPS = [(144, 144, 64, 3, 1), (144, 144, 32, 3, 1), (72, 72, 192, 3, 2), (72, 72, 288, 3, 1),
                   (36, 36, 288, 5, 2), (36, 36, 480, 5, 1), (18, 18, 480, 3, 2), (18, 18, 960, 3, 1),
                   (18, 18, 960, 5, 1), (18, 18, 1344, 5, 1), (9, 9, 1344, 5, 2), (9, 9, 2304, 5, 1),
                   (9, 9, 2304, 3, 1), (9, 9, 3840, 3, 1)]


@pytest.mark.parametrize("Ho, Wo, C, k, stride", ALIGN_BASE_MAPS)
def test_align_base_maps_are_tiled_exactly(Ho, Wo, C, k, stride):
    """On every align-base map the patches tile the map and the programs the patches (no output
    masks, no idle patch), with 4 channels per thread and at most 4 warps."""
    from minialign.kernels.depthwise_conv import _block_sizes

    rows, run, block_r, block_c, num_warps = _block_sizes(Ho, Wo, C, k, stride)
    assert Ho % rows == 0 and Wo % run == 0 and (Ho // rows) * (Wo // run) % block_r == 0
    assert block_r * block_c == 4 * 32 * num_warps and num_warps in (1, 2, 4)
    assert rows * run * 4 <= 72  # float32 accumulators per thread


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def _good_args(device, C=4, k=3):
    x = torch.randn(2, 6, 5, C, device=device)
    return x, torch.randn(C, 1, k, k, device=device), torch.ones(C, device=device), torch.zeros(C, device=device)


@pytest.mark.parametrize("k", [1, 4, 7])
def test_rejects_unsupported_kernel_size(k, kernel_device):
    x, _, scale, shift = _good_args(kernel_device)
    w = torch.randn(4, 1, k, k, device=kernel_device)
    with pytest.raises(KernelInputError, match=r"k in \(3, 5\)"):
        depthwise_conv_bn_silu(x, w, scale, shift, stride=1, padding=(0, 0, 0, 0))


@pytest.mark.parametrize("stride", [0, 3])
def test_rejects_unsupported_stride(stride, kernel_device):
    x, w, scale, shift = _good_args(kernel_device)
    with pytest.raises(KernelInputError, match="stride must be one of"):
        depthwise_conv_bn_silu(x, w, scale, shift, stride=stride, padding=(1, 1, 1, 1))


@pytest.mark.parametrize("padding", [(1, 1, 1), (-1, 1, 1, 1), (3, 0, 0, 0), (1.0, 1, 1, 1)])
def test_rejects_bad_padding(padding, kernel_device):
    x, w, scale, shift = _good_args(kernel_device)
    with pytest.raises(KernelInputError, match="padding must be"):
        depthwise_conv_bn_silu(x, w, scale, shift, stride=1, padding=padding)


def test_rejects_non_contiguous_and_nchw(kernel_device):
    x, w, scale, shift = _good_args(kernel_device)
    with pytest.raises(KernelInputError, match="must be contiguous"):
        depthwise_conv_bn_silu(x[:, :, ::2], w, scale, shift, stride=1, padding=(1, 1, 1, 1))
    with pytest.raises(KernelInputError, match="must be contiguous"):
        depthwise_conv_bn_silu(x.transpose(1, 2), w, scale, shift, stride=1, padding=(1, 1, 1, 1))
    nchw = x.permute(0, 3, 1, 2)  # channels_last memory, NCHW shape: say how to pass it
    with pytest.raises(KernelInputError, match=r"channels_last memory format.*permute\(0, 2, 3, 1\)"):
        depthwise_conv_bn_silu(nchw, w, scale, shift, stride=1, padding=(1, 1, 1, 1))
    with pytest.raises(KernelInputError, match="4 dimensions"):
        depthwise_conv_bn_silu(x[0], w, scale, shift, stride=1, padding=(1, 1, 1, 1))


@pytest.mark.parametrize("shape", [(5, 1, 3, 3), (4, 2, 3, 3), (4, 1, 3, 5), (4, 3, 3)])
def test_rejects_weight_shape_mismatch(shape, kernel_device):
    x, _, scale, shift = _good_args(kernel_device)
    with pytest.raises(KernelInputError, match="weight must"):
        depthwise_conv_bn_silu(x, torch.randn(shape, device=kernel_device), scale, shift,
                               stride=1, padding=(1, 1, 1, 1))


def test_rejects_bad_dtypes_and_shapes(kernel_device):
    x, w, scale, shift = _good_args(kernel_device)
    pad = dict(stride=1, padding=(1, 1, 1, 1))
    with pytest.raises(KernelInputError, match="x must have dtype"):
        depthwise_conv_bn_silu(x.double(), w, scale, shift, **pad)
    with pytest.raises(KernelInputError, match="x must have dtype"):
        depthwise_conv_bn_silu(x.int(), w, scale, shift, **pad)
    with pytest.raises(KernelInputError, match="weight must have dtype"):
        depthwise_conv_bn_silu(x, w.int(), scale, shift, **pad)
    with pytest.raises(KernelInputError, match="scale must have dtype"):
        depthwise_conv_bn_silu(x, w, scale.bfloat16(), shift, **pad)
    with pytest.raises(KernelInputError, match="shift must have shape"):
        depthwise_conv_bn_silu(x, w, scale, torch.zeros(5, device=kernel_device), **pad)
    with pytest.raises(KernelInputError, match="smaller than the 5x5 kernel"):
        depthwise_conv_bn_silu(x[:, :1].contiguous(), torch.randn(4, 1, 5, 5, device=kernel_device), scale, shift,
                               stride=2, padding=(1, 2, 1, 2))


def test_rejects_wrong_device(kernel_device, monkeypatch):
    x, w, scale, shift = _good_args(kernel_device)
    pad = dict(stride=1, padding=(1, 1, 1, 1))
    with pytest.raises(KernelInputError, match="scale is on meta"):
        depthwise_conv_bn_silu(x, w, scale.to("meta"), shift, **pad)
    with pytest.raises(KernelInputError, match="weight is on meta"):
        depthwise_conv_bn_silu(x, w.to("meta"), scale, shift, **pad)
    # CPU tensors without the interpreter: the check that stops a GPU kernel reading host memory.
    import minialign.kernels._checks as checks

    monkeypatch.setattr(checks, "INTERPRETED", False)
    with pytest.raises(KernelInputError, match="need CUDA tensors"):
        depthwise_conv_bn_silu(*(t.cpu() for t in (x, w, scale, shift)), **pad)
