"""How many kernels one vision forward launches on the Triton backend, exactly.

At batch 64 many of the tower's kernels run for less time than the host takes to launch them, so
a launch that does no arithmetic of the model's costs speed (minialign/backends/triton.py's
docstring). Counted here (tests/launches.py), on the interpreter, for one forward of a small
EfficientNet with both kinds of block, with the image already on the backend's device:

per MBConv block
    Triton: expansion GEMM (blocks with expand_ratio != 1), depthwise conv + BN + SiLU + the
            squeeze's sums, SE gate, projection GEMM (with the gate on its input and the
            residual in its epilogue): 4 launches, 3 without expansion.
    torch:  none. The depthwise kernel writes the squeeze's sums in parts, one per program,
            into a torch.empty buffer (an allocation, no launch: nothing to zero), and se_gate
            adds the parts and divides by the pixel count itself; the depthwise taps, the
            batchnorm's scale of ones and the float32 shift are prepared when the model is
            built.
once per forward, torch
    clone         the NCHW input to channels-last (nchw_to_nhwc);
    convolution   the stem's 3x3 conv with its folded-batchnorm bias (cuDNN on a GPU, which
                  also adds the bias in a kernel of its own);
    silu_         the stem's SiLU, in place;
    mean          the final pooling, accumulated in float32;
    constant_pad_nd  the stem's bottom/right zero padding, only for even image sizes: for odd
                  ones (align-base's 289) the conv never reads it.

Text-tower launches are counted in tests/test_text_launches.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("triton", reason="the triton backend needs the triton package (the dev extra installs it)")

from launches import counting  # noqa: E402
from minialign.backends import get_ops  # noqa: E402
from minialign.config import AlignVisionConfig  # noqa: E402
from minialign.vision_model import AlignVisionModel  # noqa: E402

# 7 blocks: the first without expansion, stride-2 blocks, residual blocks, kernel sizes 3 and 5.
CONFIG = AlignVisionConfig(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=64)


def _model() -> AlignVisionModel:
    # Counts do not depend on the weights' values: random ones, positive variances.
    rng = np.random.default_rng(0)
    params = {name: rng.uniform(0.5, 1.5, shape).astype(np.float32)
              for name, shape in AlignVisionModel.expected_shapes(CONFIG).items()}
    return AlignVisionModel(CONFIG, params, ops=get_ops("triton"))


@pytest.mark.parametrize("size, pads", [(33, False), (32, True)], ids=["odd-size", "even-size"])
def test_vision_forward_launches(size, pads):
    import torch

    model = _model()
    blocks = len(model.blocks)
    expanding = sum(b.expand for b in model.blocks)
    assert (blocks, expanding) == (7, 6)  # the config covers both kinds of block
    pixels = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, size, size), np.float32))
    pixels = pixels.to(model.ops.device)
    model(pixels)  # first forward: compiles the kernels' specialisations on a GPU
    with counting() as launched:
        model(pixels)
    assert dict(launched.triton) == {
        "_gemm_epilogue_kernel": blocks + expanding,  # projection in every block, expansion in most
        "_depthwise_conv_bn_silu_kernel": blocks,
        "_se_gate_kernel": blocks,
    }
    assert dict(launched.torch) == {  # once per forward, none per block
        "clone": 1, "convolution": 1, "silu_": 1, "mean": 1,
        **({"constant_pad_nd": 1} if pads else {}),
    }
    fixed = 4 + pads
    assert launched.total == 4 * expanding + 3 * (blocks - expanding) + fixed


def test_weights_are_prepared_once_not_per_forward():
    """The depthwise taps are float32 [k, k, C] already (the launcher's permute and cast are free
    views), and the constants the kernels take are made when the model is built."""
    import torch

    model = _model()
    for b in model.blocks:
        name = f"encoder.blocks.{b.index}.depthwise_conv.depthwise_conv."
        weight, bias = model.tensors[name + "weight"], model.tensors[name + "bias"]
        assert weight.shape == (b.expand_dim, 1, b.kernel_size, b.kernel_size)
        taps = weight[:, 0].permute(1, 2, 0)
        assert taps.dtype == torch.float32 and taps.is_contiguous()  # the launcher's .float().contiguous(): no copy
        assert bias.dtype == torch.float32
        np.testing.assert_array_equal(weight.numpy(), model.fold_batch_norms()[name + "weight"])
    constants = {key: id(tensor) for key, tensor in model.ops._constants.items()}
    assert (1.0, model.blocks[-1].expand_dim) in constants  # the batchnorm scale of ones, per width
    model(torch.zeros(1, 3, 33, 33))
    assert {key: id(tensor) for key, tensor in model.ops._constants.items()} == constants  # none made in a forward
