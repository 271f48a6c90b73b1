# %% [markdown]
# # 3. One MBConv block by hand
#
# EfficientNet is a stack of MBConv blocks: widen with a 1x1 conv, filter each channel with its
# own k x k kernel (depthwise), reweight channels with squeeze-excitation, narrow with a 1x1
# conv, add the input back. This tutorial computes block 1 of the embedded model from its
# checkpoint weights with plain NumPy loops and products -- batchnorm as written in the paper,
# not folded -- and checks it against `AlignVisionModel.block` (minialign/vision_model.py), which
# runs the same block as four fused ops. See docs/vision-tower.md for the walkthrough.

# %%
import numpy as np

from minialign import AlignModel, synthetic, train
from minialign.pipeline import default_model_dir
from minialign.vision_model import depthwise_padding

vision = AlignModel.from_pretrained(default_model_dir()).vision_model
spec = vision.blocks[1]
print(spec)
image = synthetic.generate(1, split="test", seed=0, image_size=train.IMAGE_SIZE)[0].image
x = vision.stem(vision.ops.nchw_to_nhwc(train.pixel_values(image[None])))  # [1, H, W, C], channels last
x = vision.block(vision.blocks[0], x)  # the input of block 1
p = {k[len(f"encoder.blocks.{spec.index}."):]: v for k, v in vision.params.items()
     if k.startswith(f"encoder.blocks.{spec.index}.")}
print("input", x.shape, "->", "expanded to", spec.expand_dim, "channels, output", spec.out_dim)

# %% [markdown]
# Batchnorm in inference uses the running statistics; SiLU is x * sigmoid(x).

# %%
def batch_norm(h, name, eps=vision.config.batch_norm_eps):
    return (h - p[f"{name}.running_mean"]) / np.sqrt(p[f"{name}.running_var"] + eps) * p[f"{name}.weight"] + p[f"{name}.bias"]


def silu(h):
    return h / (1 + np.exp(-h))


def conv1x1(h, name):  # the same [Cin] -> [Cout] linear map at every pixel
    return h @ p[f"{name}.weight"][:, :, 0, 0].T


# %% [markdown]
# 1. Expand, 2. depthwise k x k with its padding (asymmetric before a stride-2 conv, as
# transformers pads), 3. squeeze-excitation, 4. project (no activation), 5. residual if any.

# %%
h = silu(batch_norm(conv1x1(x, "expansion.expand_conv"), "expansion.expand_bn"))
top, bottom, left, right = depthwise_padding(spec.kernel_size, spec.stride, spec.adjust_padding)
padded = np.pad(h, ((0, 0), (top, bottom), (left, right), (0, 0)))
k, s = spec.kernel_size, spec.stride
Ho, Wo = (padded.shape[1] - k) // s + 1, (padded.shape[2] - k) // s + 1
w = p["depthwise_conv.depthwise_conv.weight"][:, 0]  # [C, k, k]: one filter per channel
d = np.zeros((1, Ho, Wo, h.shape[-1]), np.float32)
for i in range(k):  # the k*k taps, each a strided slab times a per-channel weight
    for j in range(k):
        d += padded[:, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s, :] * w[:, i, j]
h = silu(batch_norm(d, "depthwise_conv.depthwise_norm"))
squeezed = h.mean(axis=(1, 2))  # [1, C]
hidden = silu(squeezed @ p["squeeze_excite.reduce.weight"][:, :, 0, 0].T + p["squeeze_excite.reduce.bias"])
gate = 1 / (1 + np.exp(-(hidden @ p["squeeze_excite.expand.weight"][:, :, 0, 0].T + p["squeeze_excite.expand.bias"])))
h = h * gate[:, None, None, :]
out = batch_norm(conv1x1(h, "projection.project_conv"), "projection.project_bn")
if spec.residual:
    out = out + x
print("gate for the first 8 channels:", np.round(gate[0, :8], 2))

# %%
expected = vision.block(spec, x)
print("max difference from the fused block:", float(np.abs(out - expected).max()))
assert out.shape == expected.shape and np.allclose(out, expected, atol=1e-4)
