"""The Triton backend: the ops contract (``contract.py``) on torch tensors, through the kernels.

``AlignModel.from_pretrained(path, backend="triton", device="cuda", dtype="bfloat16")`` gives the
models a ``TritonOps`` instead of a NumPy backend module. The architecture is the same code; only
the arithmetic moves. Activations stay torch tensors on the device from the first op to the
last; the weights are converted once, when the model is built (``from_numpy``).

Where each op's work goes:

| op                     | runs on                                                            |
| ---------------------- | ------------------------------------------------------------------ |
| linear                 | ``kernels.gemm`` (bias and GELU in its epilogue)                   |
| linears (Q, K, V)      | ``kernels.gemm``, once, on the weights concatenated at build time  |
| layer_norm             | ``kernels.layer_norm``                                             |
| add_layer_norm         | ``kernels.layer_norm`` (residual path; a broadcast one in place)   |
| linear_add_layer_norm  | ``kernels.gemm`` (bias, residual and LayerNorm in its epilogue)    |
| multi_head_attention   | ``kernels.attention`` (reads q, k, v in place as [B, heads, T, d]) |
| packed_attention       | ``kernels.attention_varlen`` (cu_seqlens; q, k, v read in place)   |
| pointwise_conv         | ``kernels.gemm`` (folded BN, SiLU, SE gate on A, residual)         |
| depthwise_conv2d       | ``kernels.depthwise_conv_bn_silu`` (also partial sums: SE squeeze) |
| squeeze_excite_gate    | ``kernels.se_gate`` (adds the partial sums as it loads them)       |
| conv2d (the stem)      | torch: ``F.conv2d`` + SiLU                                         |
| embedding, add, tanh,  | torch                                                              |
| scatter_rows, pool     |                                                                    |

The stem is left to torch because it is a dense 3x3 conv on 3 input channels, run once per
image (under 1% of the tower's time on the CPU benchmark); embedding lookups, the pooler's tanh,
the packed text's scatter back into a padded batch and the final pooling are a few kilobytes per
sequence or image, once per forward.

A BERT layer is 5 launches, no torch op between them (``tests/test_text_launches.py`` counts
them): the Q, K, V projection (one GEMM; ``prepare_linears`` concatenated the three weights when
the model was built), attention (reading q, k and v as strided views of that GEMM's output), the
output projection with the residual and LayerNorm in its epilogue, the FFN's first GEMM with
GELU in its epilogue, and its second GEMM with the residual and LayerNorm again. A LayerNorm needs
the statistics of a whole 768-wide row, which no GEMM tile holds: each tile writes its rows and
their partial statistics, and the last tile of a block of rows to finish (an atomic counter per
block) combines them and normalises the rows (``kernels/gemm.py``, "LayerNorm epilogue").

Launches. At batch 64 many of the vision tower's kernels are predicted to run for about as long
as the host takes to launch them (the kernel lab's per-launch predictions beside
``benchmarks/host_overhead.py``), so every launch that is not arithmetic costs speed. Each
MBConv block is its kernels and nothing else: the expansion GEMM, the depthwise conv, the SE
gate, the projection GEMM (tests/test_launches.py counts them). What used to cost a torch kernel
per block and forward is made once instead, or not at all:

- ``prepare_weight`` (called by the towers when they are built) lays each depthwise filter out
  as the kernel reads it, float32 taps ``[k, k, C]``, casts its folded-batchnorm bias to the
  kernel's float32 shift, and makes the vector of ones the kernel's batchnorm scale is (the
  batchnorm is folded into the weights already);
- the squeeze's means stay the depthwise kernel's partial sums, one per (image, block of
  pixels, channel) in a buffer that needs no zeroing (each program writes its own part, no
  atomics), and ``se_gate`` adds the parts and divides by the pixel count inside its kernel
  (``PixelSums``: the backend's squeeze value, which the ops contract lets it keep opaque);
- the stem's channels-last input makes cuDNN write channels-last output, so no transpose follows
  it, and the zero padding it never reads is not materialised.

What is left is host time per launch, which ``cuda_graphs=True`` (``minialign/cuda_graphs.py``)
removes by replaying a captured forward.

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
from dataclasses import dataclass
from typing import Any, NamedTuple

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


def _index_dtype(dtype):
    """int32 stays int32; every other integer (and bool) type becomes int64."""
    import torch

    return torch.int32 if dtype in (np.int32, torch.int32) else torch.int64


class ConcatenatedLinears(NamedTuple):
    """n linear layers of one input as one: what TritonOps.prepare_linears makes, once per model."""

    weight: Any  # [sum out_i, in]: the n weights one under the other
    bias: Any  # [sum out_i]
    sizes: tuple[int, ...]  # out_i: where each layer's columns of the output start and end


@dataclass(frozen=True)
class PixelSums:
    """The squeeze's means as the depthwise kernel leaves them: per-(image, channel) sums over
    ``pixels`` pixels, in parts (one per block of pixels the kernel's programs cover).
    ``depthwise_conv2d(return_means=True)`` returns one instead of adding the parts and dividing
    (torch launches per block) because ``squeeze_excite_gate`` hands the parts and the pixel
    count to ``se_gate``, which adds and divides in its kernel: this is the backend's squeeze
    value of the ops contract (contract.Ops.depthwise_conv2d). ``to_numpy`` gives the means."""

    sums: object  # [B, parts, C] float32 torch tensor: the sum over pixels is sums.sum(1)
    pixels: int  # Ho * Wo

    def means(self):  # -> [B, C] float32
        return self.sums.sum(dim=1) / self.pixels


class TritonOps:
    """The ops for one device and dtype. See the module docstring for what runs where.

    ``cuda_graphs=True`` asks the towers to capture their forward as a CUDA graph per input shape
    and replay it (``minialign/cuda_graphs.py``; CUDA only, off by default)."""

    NAME = "triton"
    PACK_TEXT = True  # get_text_features runs a batch packed: see contract.Ops.PACK_TEXT
    cuda_graphs = False  # a class default: the kernel lab's PlanningOps does not run __init__

    def __init__(self, device: str | None = None, dtype: str = "float32", *, cuda_graphs: bool = False):
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
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device, got device={str(self.device)!r} "
                             "(a CUDA graph replays GPU work; on the CPU interpreter there is none to capture)")
        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        self.cuda_graphs = cuda_graphs

    # -- arrays in and out -------------------------------------------------------------------

    def from_numpy(self, array):
        """A NumPy array (or a torch tensor) as a tensor on the device: floats in the compute
        dtype, int32 integers as int32 (the packed text's cu_seqlens, as the attention kernel
        reads them), other integers as int64."""
        import torch

        if isinstance(array, torch.Tensor):  # already a tensor (e.g. images on the GPU): move/cast only
            return array.to(self.device, self.dtype if array.is_floating_point() else _index_dtype(array.dtype))
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            return torch.tensor(array, dtype=torch.float32).to(self.device, self.dtype)  # a copy: a checkpoint is read-only
        return torch.tensor(array, dtype=_index_dtype(array.dtype)).to(self.device)

    def prepare_weight(self, array, op: str, argument: str):
        """A weight as its kernel reads it, made once when the model is built (see the module
        docstring): a depthwise filter ``[C, 1, k, k]`` becomes float32 taps ``[k, k, C]``,
        handed back as a ``[C, 1, k, k]`` view of them (the launcher's own
        ``weight[:, 0].permute(1, 2, 0).float().contiguous()`` is then free, no copy), and its
        bias the kernel's float32 shift; every other weight is ``from_numpy``."""
        import torch

        if op != "depthwise_conv2d":
            return self.from_numpy(array)
        # float32 straight from the checkpoint's folded float32, never through bfloat16: the
        # kernel computes in float32 whatever the activations' dtype.
        weight = torch.tensor(np.asarray(array), dtype=torch.float32).to(self.device)
        if argument == "bias":
            return weight
        self._constant(1.0, weight.shape[0])  # the kernel's batchnorm scale, made now rather than in a forward
        taps = weight[:, 0].permute(1, 2, 0).contiguous()  # [C, 1, k, k] -> [k, k, C]
        return taps.permute(2, 0, 1).unsqueeze(1)  # [C, 1, k, k] again, as a view of the taps

    @functools.cached_property
    def _constants(self) -> dict:
        return {}  # (value, width) -> [width] float32 tensor

    def _constant(self, value: float, width: int):
        # [width] float32 filled with value, one tensor per (value, width) for the life of the ops
        import torch

        key = (value, width)
        if key not in self._constants:
            self._constants[key] = torch.full((width,), value, dtype=torch.float32, device=self.device)
        return self._constants[key]

    def to_numpy(self, x) -> np.ndarray:
        """A tensor (or ``PixelSums``: the means) as a float32 NumPy array on the CPU."""
        if isinstance(x, PixelSums):
            x = x.means()
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

        # The kernel reads a residual of x's shape, or of its trailing axes in place (the
        # embeddings' positions [T, H], broadcast over B: no [B, T, H] copy).
        return layer_norm(x.contiguous(), weight, bias, eps, residual=residual.contiguous())

    def linear_add_layer_norm(self, x, weight, bias, residual, norm_weight, norm_bias, eps: float):
        # [..., in], [H, in], [H], [..., H], [H], [H] -> [..., H]: one GEMM, LayerNorm in its epilogue
        from ..kernels.gemm import gemm

        H = weight.shape[0]
        y = gemm(x.reshape(-1, x.shape[-1]), weight, bias=bias, residual=residual.reshape(-1, H),
                 layer_norm=(norm_weight, norm_bias, eps))
        return y.reshape(*x.shape[:-1], H)

    def linear(self, x, weight, bias=None, activation: str | None = None):
        # [..., in], [out, in], [out] -> [..., out]
        from ..kernels.gemm import gemm

        check_activation(activation)
        fused = _GEMM_ACTIVATIONS.get(activation)
        y = gemm(x.reshape(-1, x.shape[-1]), weight, bias=bias, activation=fused)
        if activation not in _GEMM_ACTIVATIONS:  # not in the epilogue: a torch step after it
            y = _torch_activation(activation, y)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def prepare_linears(self, weights, biases) -> ConcatenatedLinears:
        # n x [out_i, in], n x [out_i] -> [sum out_i, in], [sum out_i]: once, when the model is built
        import torch

        return ConcatenatedLinears(torch.cat(list(weights)).contiguous(), torch.cat(list(biases)).contiguous(),
                                   tuple(w.shape[0] for w in weights))

    def linears(self, x, prepared: ConcatenatedLinears):
        # [..., in] -> n x [..., out_i]: one GEMM, the outputs strided views of its [..., sum out_i]
        y = self.linear(x, prepared.weight, prepared.bias)
        ends = np.cumsum(prepared.sizes).tolist()
        return tuple(y[..., end - size:end] for size, end in zip(prepared.sizes, ends))

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

    def packed_attention(self, q, k, v, cu_seqlens, max_seqlen: int, num_heads: int):
        # [N, H] x 3, [B + 1] int32, - -> [N, H]
        from ..kernels.attention import attention_varlen

        N, H = q.shape

        def heads(y):  # [N, H] -> [N, heads, d], a strided view, read in place by the kernel
            return y.view(N, num_heads, H // num_heads)

        return attention_varlen(heads(q), heads(k), heads(v), cu_seqlens, max_seqlen)

    def scatter_rows(self, x, index, num_rows: int):
        # [N, H], [N] int, R -> [R, H]
        return x.new_zeros((num_rows, x.shape[-1])).index_copy_(0, index, x)

    # -- vision ------------------------------------------------------------------------------

    def conv2d(self, x, weight, stride: int = 1, padding=(0, 0, 0, 0), *, bias=None, activation=None):
        # [B, H, W, Cin] -> [B, Ho, Wo, Cout]; torch, see the module docstring
        import torch.nn.functional as F

        check_activation(activation, CONV_ACTIVATIONS)
        x = self.nhwc_to_nchw(x)  # a view in channels-last memory: cuDNN writes its output channels-last too
        top, bottom, left, right = padding
        k = weight.shape[-1]
        bottom = _padding_read(x.shape[2], k, stride, top, bottom)
        right = _padding_read(x.shape[3], k, stride, left, right)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        y = F.conv2d(x, weight, bias, stride=stride)
        y = F.silu(y, inplace=True) if activation in _KERNEL_SILU else _torch_activation(activation, y)
        return self.nchw_to_nhwc(y)  # no copy when y is channels-last already

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
        # [B, H, W, C], [C, 1, k, k], [C] -> [B, Ho, Wo, C] (and PixelSums: [B, parts, C] float32 sums)
        import torch

        from ..kernels.depthwise_conv import depthwise_conv_bn_silu

        check_activation(activation, CONV_ACTIVATIONS)
        C = x.shape[-1]
        # The kernel's batchnorm is (scale, shift); folded into the weights, it is (1, bias).
        shift = self._constant(0.0, C) if bias is None else bias if bias.dtype == torch.float32 else bias.float()
        fused = activation is None or activation in _KERNEL_SILU  # the kernel's epilogue has SiLU only
        y, sums = depthwise_conv_bn_silu(x, weight, self._constant(1.0, C), shift, stride=stride,
                                         padding=tuple(int(p) for p in padding),
                                         activation=activation in _KERNEL_SILU, return_sums=return_means and fused)
        if not fused:  # the activation as a torch step, and the sums of its output
            y = _torch_activation(activation, y)
            sums = y.float().sum(dim=(1, 2)).unsqueeze(1) if return_means else None  # [B, 1, C]: one part
        return (y, PixelSums(sums, y.shape[1] * y.shape[2])) if return_means else y

    def squeeze_excite_gate(self, pooled, w_reduce, b_reduce, w_expand, b_expand, *, activation: str = "silu"):
        # [B, C] means (or PixelSums, this backend's squeeze) -> [B, C] float32 gate
        import torch

        from ..kernels.se_gate import se_gate

        check_activation(activation, none_ok=False)
        if activation in _KERNEL_SILU:
            if isinstance(pooled, PixelSums):  # the depthwise kernel's parts: se_gate adds them, divides by the pixels
                return se_gate(pooled.sums, pooled.pixels, w_reduce, b_reduce, w_expand, b_expand)
            return se_gate(pooled.float().contiguous(), 1, w_reduce, b_reduce, w_expand, b_expand)
        # Another activation: the gate's two small matrix products in torch, in float32.
        means = pooled.means() if isinstance(pooled, PixelSums) else pooled.float()
        hidden = _torch_activation(activation, means @ w_reduce.flatten(1).float().T + b_reduce.float())
        return torch.sigmoid(hidden @ w_expand.flatten(1).float().T + b_expand.float())

    def global_pool(self, x, kind: str):
        # [B, H, W, C] -> [B, C], float32
        import torch

        if kind not in ("mean", "max"):
            raise ValueError(f"kind must be 'mean' or 'max', got {kind!r}")
        if kind == "mean":
            return x.mean(dim=(1, 2), dtype=torch.float32)  # summed in float32, one kernel
        return x.amax(dim=(1, 2)).float()  # a max is exact in any dtype


def _padding_read(size: int, k: int, stride: int, before: int, after: int) -> int:
    """How much of ``after`` zero padding a k-wide, stride-s convolution reads. The windows stop
    at the last one that fits; rows past it are never read (the stem's bottom/right zero row on
    an odd-sized image: 289 + 1 -> 144 outputs, the same as from 289), so they need no copy."""
    padded = size + before + after
    last_read = (padded - k) // stride * stride + k  # rows [0, last_read) are read
    return max(0, after - (padded - last_read))
