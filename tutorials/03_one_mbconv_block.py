# %% [markdown]
# # 3. One MBConv block from the reference ops
#
# EfficientNet is a stack of MBConv blocks: widen with a 1x1 conv, filter each channel with its
# own k x k kernel (depthwise), reweight channels with squeeze-excitation, narrow with a 1x1
# conv, add the input back. This tutorial builds block 1 of the embedded model from its
# checkpoint weights with the reference ops (`minialign/backends/reference.py`: the plain math,
# one short NumPy function per op) -- batchnorm as written in the paper, not folded -- and checks
# it against `AlignVisionModel.block` (minialign/vision_model.py), which runs the same block as
# four fused ops with every batchnorm folded into its convolution, and, when transformers is
# installed, against transformers' block on the same checkpoint. See docs/vision-tower.md for
# the walkthrough.

# %%
import importlib.util

import numpy as np

from minialign import AlignModel, synthetic
from minialign.backends import reference
from minialign.pipelines import default_model_dir
from minialign.training import recipe
from minialign.vision_model import depthwise_padding

vision = AlignModel.from_pretrained(default_model_dir()).vision_model
spec = vision.blocks[1]
print(spec)
image = synthetic.generate(1, split="test", seed=0, image_size=recipe.IMAGE_SIZE)[0].image
pixels = recipe.pixel_values(image[None])  # [1, 3, H, W], channels first like transformers
x = vision.stem(vision.ops.nchw_to_nhwc(pixels))  # [1, H, W, C], channels last
x = vision.block(vision.blocks[0], x)  # the input of block 1
p = {k[len(f"encoder.blocks.{spec.index}."):]: v for k, v in vision.params.items()
     if k.startswith(f"encoder.blocks.{spec.index}.")}
print("input", x.shape, "->", "expanded to", spec.expand_dim, "channels, output", spec.out_dim)

# %% [markdown]
# Batchnorm in inference uses the running statistics (`reference.batch_norm`); SiLU is
# x * sigmoid(x) (`reference.silu`).

# %%
def batch_norm(h, name, eps=vision.config.batch_norm_eps):  # [..., C] -> [..., C]
    return reference.batch_norm(h, p[f"{name}.weight"], p[f"{name}.bias"], p[f"{name}.running_mean"],
                                p[f"{name}.running_var"], eps)


# %% [markdown]
# 1. Expand: a 1x1 conv (`reference.pointwise_conv`, the same linear map at every pixel).
# 2. Depthwise k x k with its padding (asymmetric before a stride-2 conv, as transformers pads):
#    `reference.depthwise_conv2d` adds up the k*k taps, each a strided slab of the padded input
#    times a per-channel weight.
# 3. Squeeze-excitation: the channel means of the image, two tiny fully-connected layers, a
#    sigmoid gate per channel (`reference.squeeze_excite`).
# 4. Project (no activation), 5. add the input back if the shapes allow.

# %%
h = reference.silu(batch_norm(reference.pointwise_conv(x, p["expansion.expand_conv.weight"]), "expansion.expand_bn"))
padding = depthwise_padding(spec.kernel_size, spec.stride, spec.adjust_padding)  # (top, bottom, left, right)
h = reference.depthwise_conv2d(h, p["depthwise_conv.depthwise_conv.weight"], spec.stride, padding)
h = reference.silu(batch_norm(h, "depthwise_conv.depthwise_norm"))
se = [p[f"squeeze_excite.{name}"] for name in ("reduce.weight", "reduce.bias", "expand.weight", "expand.bias")]
gate = reference.squeeze_excite_gate(h.mean(axis=(1, 2)), *se)  # [1, C]: what squeeze_excite multiplies by
h = reference.squeeze_excite(h, *se)
out = batch_norm(reference.pointwise_conv(h, p["projection.project_conv.weight"]), "projection.project_bn")
if spec.residual:
    out = out + x
print("gate for the first 8 channels:", np.round(gate[0, :8], 2))

# %% [markdown]
# The model's block: the same math, with each batchnorm folded into the conv before it
# (`reference.fold_batch_norm`), the SiLU in the convs' epilogues, the channel means taken by the
# depthwise conv and the gate applied inside the projection conv. Only float32 rounding differs.

# %%
expected = vision.block(spec, x)
print(f"max difference from the fused block ({vision.ops.NAME} backend):", float(np.abs(out - expected).max()))
assert out.shape == expected.shape and np.allclose(out, expected, atol=1e-4)

# %% [markdown]
# transformers' vision tower on the same image: its hidden states are the stem's output and then
# each block's, channels first, so block 1's output is `hidden_states[2]`.

# %%
if importlib.util.find_spec("transformers") is None:
    print("transformers is not installed: skipping the comparison with it (pip install -e '.[dev]')")
else:
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    theirs = transformers.AlignModel.from_pretrained(default_model_dir()).eval()
    with torch.no_grad():
        hidden = theirs.vision_model(pixel_values=torch.from_numpy(pixels), output_hidden_states=True).hidden_states
    block_1 = hidden[2].numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC
    print("max difference from transformers' block 1:", float(np.abs(out - block_1).max()))
    assert out.shape == block_1.shape and np.allclose(out, block_1, atol=1e-4)
