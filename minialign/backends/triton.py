"""The Triton backend: the ops contract (``contract.py``) on torch tensors, through the kernels.

``AlignModel.from_pretrained(path, backend="triton", device="cuda", dtype="bfloat16")`` gives the
models a ``TritonOps`` instead of a NumPy backend module. The architecture is the same code; only
the arithmetic moves. Activations stay torch tensors on the device from the first op to the
last; the weights are converted once, when the model is built (``from_numpy``).

Where each op's work goes:

| op                     | runs on                                                            |
| ---------------------- | ------------------------------------------------------------------ |
| linear                 | ``kernels.gemm`` (bias and GELU in its epilogue)                   |
| layer_norm             | ``kernels.layer_norm``                                             |
| add_layer_norm         | ``kernels.layer_norm`` (its residual path)                         |
| multi_head_attention   | ``kernels.attention`` (reads q, k, v in place as [B, heads, T, d]) |
| pointwise_conv         | ``kernels.gemm`` (folded BN, SiLU, SE gate on A, residual)         |
| depthwise_conv2d       | ``kernels.depthwise_conv_bn_silu`` (also sums for the SE squeeze)  |
| squeeze_excite_gate    | ``kernels.se_gate``                                                |
| conv2d (the stem)      | torch: ``F.conv2d`` + SiLU                                         |
| embedding, add, tanh,  | torch                                                              |
| pool                   |                                                                    |

The stem is left to torch because it is a dense 3x3 conv on 3 input channels, run once per
image (under 1% of the tower's time on the CPU benchmark); embedding lookups, the pooler's tanh
and the final pooling are a few kilobytes per sequence or image.

Activations (``config.hidden_act``, every name of ``contract.ACTIVATION_NAMES``):

| activation                                   | runs in                                              |
| -------------------------------------------- | ---------------------------------------------------- |
| gelu, gelu_python                            | the GEMM epilogue (``"gelu"``); torch after the stem |
| gelu_new and the other tanh GELUs            | the GEMM epilogue (``"gelu_tanh"``); torch elsewhere |
| silu, swish                                  | every epilogue: GEMM, depthwise conv, SE gate        |
| every other name (relu, tanh, mish, ...)     | a separate torch elementwise step, in float32, after |
|                                              | the GEMM / conv (and the SE gate in torch)           |

Under ``TRITON_INTERPRET=1`` the kernels run on the CPU in float32 (the interpreter emulates the
GPU with NumPy), which is how CI checks this backend against the NumPy one.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..kernels._checks import INTERPRETED
from .contract import CONV_ACTIVATIONS, check_activation

# transformers' activation names -> the GEMM epilogue's (kernels.gemm.ACTIVATIONS); every other
# name runs after the GEMM as a torch elementwise step (_torch_activation).
_GEMM_ACTIVATIONS = {None: None, "gelu": "gelu", "gelu_python": "gelu", "silu": "silu", "swish": "silu",
                     **dict.fromkeys(("gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_accurate",
                                      "gelu_fast"), "gelu_tanh")}
# What the depthwise-conv and squeeze-excitation kernels fuse: SiLU, EfficientNet's activation.
_KERNEL_SILU = ("silu", "swish")


def _torch_activation(activation: str | None, y):
    """``activation`` (a name of contract.ACTIVATION_NAMES, or None) applied to ``y`` by torch, in
    float32 (as the kernels' epilogues compute), returned in ``y``'s dtype: the step after a GEMM
    or convolution whose epilogue does not have that activation (the formulas: reference.py)."""
    if activation is None or activation == "linear":
        return y
    return _torch_activation_functions()[activation](y.float()).to(y.dtype)


@functools.cache
def _torch_activation_functions() -> dict:
    import torch
    import torch.nn.functional as F

    gelu_tanh = functools.partial(F.gelu, approximate="tanh")
    return {
        "gelu": F.gelu, "gelu_python": F.gelu, "gelu_10": lambda t: F.gelu(t).clamp(-10, 10),
        "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t), "relu": F.relu, "relu2": lambda t: F.relu(t) ** 2,
        "relu6": F.relu6, "leaky_relu": F.leaky_relu, "silu": F.silu, "swish": F.silu, "hardswish": F.hardswish,
        "mish": F.mish, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "sqrtsoftplus": lambda t: F.softplus(t).sqrt(),
        "laplace": lambda t: 0.5 * (1 + torch.erf((t - 0.707107) / (0.282095 * math.sqrt(2)))),
        **dict.fromkeys(("gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_accurate", "gelu_fast"), gelu_tanh),
    }


class TritonOps:
    """The ops for one device and dtype. See the module docstring for what runs where."""

    NAME = "triton"

    def __init__(self, device: str | None = None, dtype: str = "float32"):
        import torch

        if device is None:
            device = "cpu" if INTERPRETED else "cuda"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("the triton backend needs a CUDA GPU (torch.cuda.is_available() is False); "
                             "without one, set TRITON_INTERPRET=1 to run the kernels on the CPU (slowly), "
                             "or use backend='numpy'")
        if self.device.type == "cpu" and not INTERPRETED:
            raise ValueError("the triton backend runs on the CPU only under the Triton interpreter: set "
                             "TRITON_INTERPRET=1 before importing minialign, or use a CUDA device")
        if INTERPRETED and dtype != "float32":
            raise ValueError(f"dtype={dtype!r}: under TRITON_INTERPRET=1 the kernels run in float32 only")
        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

    # -- arrays in and out -------------------------------------------------------------------

    def from_numpy(self, array):
        """A NumPy array (or a torch tensor) as a tensor on the device: floats in the compute
        dtype, integers as int64."""
        import torch

        if isinstance(array, torch.Tensor):  # already a tensor (e.g. images on the GPU): move/cast only
            return array.to(self.device, self.dtype if array.is_floating_point() else torch.int64)
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            return torch.tensor(array, dtype=torch.float32).to(self.device, self.dtype)  # a copy: a checkpoint is read-only
        return torch.tensor(array, dtype=torch.int64).to(self.device)

    def to_numpy(self, x) -> np.ndarray:
        """A tensor as a float32 NumPy array on the CPU."""
        return x.detach().float().cpu().numpy()

    def is_floating_point(self, x) -> bool:
        return x.is_floating_point()

    def nchw_to_nhwc(self, x):
        return x.permute(0, 2, 3, 1).contiguous()

    def nhwc_to_nchw(self, x):
        return x.permute(0, 3, 1, 2)  # a view

    # -- text --------------------------------------------------------------------------------

    def embedding(self, ids, table):
        return table[ids]

    def add(self, x, y):
        return x + y

    def layer_norm(self, x, weight, bias, eps: float):
        from ..kernels.layer_norm import layer_norm

        return layer_norm(x.contiguous(), weight, bias, eps)

    def add_layer_norm(self, x, residual, weight, bias, eps: float):
        from ..kernels.layer_norm import layer_norm

        # The kernel reads a residual of x's shape; the positions' [T, H] is broadcast over B first.
        return layer_norm(x.contiguous(), weight, bias, eps, residual=residual.expand_as(x).contiguous())

    def linear(self, x, weight, bias=None, activation: str | None = None):
        # [..., in], [out, in], [out] -> [..., out]
        from ..kernels.gemm import gemm

        check_activation(activation)
        fused = _GEMM_ACTIVATIONS.get(activation)
        y = gemm(x.reshape(-1, x.shape[-1]), weight, bias=bias, activation=fused)
        if activation not in _GEMM_ACTIVATIONS:  # not in the epilogue: a torch step after it
            y = _torch_activation(activation, y)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def tanh(self, x):
        import torch

        return torch.tanh(x)

    def multi_head_attention(self, q, k, v, attention_mask, num_heads: int, *, return_probs: bool = False):
        # [B, T, H] x 3, [B, T] -> ([B, T, H], None)
        from ..kernels.attention import attention

        if return_probs:
            raise ValueError("the triton backend's fused attention never stores the attention probabilities; "
                             "use backend='numpy' for output_attentions=True")
        B, T, H = q.shape

        def heads(y):  # [B, T, H] -> [B, heads, T, d], a strided view, read in place by the kernel
            return y.view(B, T, num_heads, H // num_heads).permute(0, 2, 1, 3)

        return attention(heads(q), heads(k), heads(v), attention_mask), None

    # -- vision ------------------------------------------------------------------------------

    def conv2d(self, x, weight, stride: int = 1, padding=(0, 0, 0, 0), *, bias=None, activation=None):
        # [B, H, W, Cin] -> [B, Ho, Wo, Cout]; torch, see the module docstring
        import torch.nn.functional as F

        check_activation(activation, CONV_ACTIVATIONS)
        top, bottom, left, right = padding
        y = F.conv2d(F.pad(self.nhwc_to_nchw(x), (left, right, top, bottom)), weight, bias, stride=stride)
        return self.nchw_to_nhwc(_torch_activation(activation, y))

    def pointwise_conv(self, x, weight, bias=None, *, activation=None, input_scale=None, residual=None):
        # [B, H, W, Cin], [Cout, Cin, 1, 1] -> [B, H, W, Cout]
        from ..kernels.gemm import gemm

        check_activation(activation, CONV_ACTIVATIONS)
        B, H, W, Cin = x.shape
        Cout = weight.shape[0]
        fused = activation in _GEMM_ACTIVATIONS
        residual = None if residual is None else residual.reshape(-1, Cout)
        y = gemm(x.reshape(-1, Cin), weight, bias=bias, activation=_GEMM_ACTIVATIONS.get(activation),
                 residual=residual if fused else None,  # the residual comes after the activation
                 a_scale=input_scale, rows_per_image=None if input_scale is None else H * W)
        if not fused:
            y = _torch_activation(activation, y)
            y = y if residual is None else y + residual
        return y.reshape(B, H, W, Cout)

    def depthwise_conv2d(self, x, weight, stride: int = 1, padding=(0, 0, 0, 0), *, bias=None,
                         activation=None, return_means: bool = False):
        # [B, H, W, C], [C, 1, k, k], [C] -> [B, Ho, Wo, C] (and [B, C] float32 means)
        import torch

        from ..kernels.depthwise_conv import depthwise_conv_bn_silu

        check_activation(activation, CONV_ACTIVATIONS)
        C = x.shape[-1]
        ones = torch.ones(C, device=x.device, dtype=torch.float32)  # the batchnorm is folded already
        shift = torch.zeros_like(ones) if bias is None else bias.float()
        fused = activation is None or activation in _KERNEL_SILU  # the kernel's epilogue has SiLU only
        y, sums = depthwise_conv_bn_silu(x, weight, ones, shift, stride=stride, padding=tuple(int(p) for p in padding),
                                         activation=activation in _KERNEL_SILU, return_sums=return_means and fused)
        if not fused:  # the activation as a torch step, and the means of its output
            y = _torch_activation(activation, y)
            sums = y.float().sum(dim=(1, 2)) if return_means else None
        if not return_means:
            return y
        return y, sums / (y.shape[1] * y.shape[2])

    def squeeze_excite_gate(self, pooled, w_reduce, b_reduce, w_expand, b_expand, *, activation: str = "silu"):
        # [B, C] means -> [B, C] float32 gate
        import torch

        from ..kernels.se_gate import se_gate

        check_activation(activation, none_ok=False)
        if activation in _KERNEL_SILU:
            return se_gate(pooled.float().contiguous(), 1, w_reduce, b_reduce, w_expand, b_expand)
        # Another activation: the gate's two small matrix products in torch, in float32.
        hidden = _torch_activation(activation, pooled.float() @ w_reduce.flatten(1).float().T + b_reduce.float())
        return torch.sigmoid(hidden @ w_expand.flatten(1).float().T + b_expand.float())

    def global_pool(self, x, kind: str):
        # [B, H, W, C] -> [B, C], float32
        if kind not in ("mean", "max"):
            raise ValueError(f"kind must be 'mean' or 'max', got {kind!r}")
        x = x.float()
        return x.mean(dim=(1, 2)) if kind == "mean" else x.amax(dim=(1, 2))
