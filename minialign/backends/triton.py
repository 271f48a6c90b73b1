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
| multi_head_attention   | ``kernels.attention`` (reads q, k, v in place as [B, heads, T, d]) |
| packed_attention       | ``kernels.attention_varlen`` (cu_seqlens; q, k, v read in place)   |
| pointwise_conv         | ``kernels.gemm`` (folded BN, SiLU, SE gate on A, residual)         |
| depthwise_conv2d       | ``kernels.depthwise_conv_bn_silu`` (also sums for the SE squeeze)  |
| squeeze_excite_gate    | ``kernels.se_gate``                                                |
| conv2d (the stem)      | torch: ``F.conv2d`` + SiLU                                         |
| embedding, add, tanh,  | torch                                                              |
| scatter_rows, pool     |                                                                    |

The stem is left to torch because it is a dense 3x3 conv on 3 input channels, run once per
image (under 1% of the tower's time on the CPU benchmark); embedding lookups, the pooler's tanh,
the packed text's scatter back into a padded batch and the final pooling are a few kilobytes per
sequence or image, once per forward.

A BERT layer is 7 launches, no torch op between them (``tests/test_text_launches.py`` counts
them): the Q, K, V projection (one GEMM; ``prepare_linears`` concatenated the three weights when
the model was built), attention (reading q, k and v as strided views of that GEMM's output), the
output projection, LayerNorm with the residual added in its prologue, the FFN's first GEMM with
GELU in its epilogue, its second GEMM, and LayerNorm with the residual again. A LayerNorm needs
the statistics of a whole 768-wide row, which a GEMM tile of 128 x 256 does not hold, so it stays
a launch of its own after each residual branch.

Under ``TRITON_INTERPRET=1`` the kernels run on the CPU in float32 (the interpreter emulates the
GPU with NumPy), which is how CI checks this backend against the NumPy one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..kernels._checks import INTERPRETED
from .contract import CONV_ACTIVATIONS, check_activation

# transformers' activation names -> the GEMM epilogue's; the others are applied by torch after the
# GEMM (relu).
_GEMM_ACTIVATIONS = {None: None, "gelu": "gelu", "gelu_new": "gelu_tanh", "silu": "silu", "swish": "silu"}


def _index_dtype(dtype):
    """int32 stays int32; every other integer (and bool) type becomes int64."""
    import torch

    return torch.int32 if dtype in (np.int32, torch.int32) else torch.int64


class ConcatenatedLinears(NamedTuple):
    """n linear layers of one input as one: what TritonOps.prepare_linears makes, once per model."""

    weight: Any  # [sum out_i, in]: the n weights one under the other
    bias: Any  # [sum out_i]
    sizes: tuple[int, ...]  # out_i: where each layer's columns of the output start and end


class TritonOps:
    """The ops for one device and dtype. See the module docstring for what runs where."""

    NAME = "triton"
    PACK_TEXT = True  # get_text_features runs a batch packed: see contract.Ops.PACK_TEXT

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
        dtype, int32 integers as int32 (the packed text's cu_seqlens, as the attention kernel
        reads them), other integers as int64."""
        import torch

        if isinstance(array, torch.Tensor):  # already a tensor (e.g. images on the GPU): move/cast only
            return array.to(self.device, self.dtype if array.is_floating_point() else _index_dtype(array.dtype))
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            return torch.tensor(array, dtype=torch.float32).to(self.device, self.dtype)  # a copy: a checkpoint is read-only
        return torch.tensor(array, dtype=_index_dtype(array.dtype)).to(self.device)

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

        # The kernel reads a residual of x's shape, or of its trailing axes in place (the
        # embeddings' positions [T, H], broadcast over B: no [B, T, H] copy).
        return layer_norm(x.contiguous(), weight, bias, eps, residual=residual.contiguous())

    def linear(self, x, weight, bias=None, activation: str | None = None):
        # [..., in], [out, in], [out] -> [..., out]
        import torch

        from ..kernels.gemm import gemm

        check_activation(activation)
        y = gemm(x.reshape(-1, x.shape[-1]), weight, bias=bias, activation=_GEMM_ACTIVATIONS.get(activation))
        if activation == "relu":
            y = torch.relu(y)
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
        top, bottom, left, right = padding
        y = F.conv2d(F.pad(self.nhwc_to_nchw(x), (left, right, top, bottom)), weight, bias, stride=stride)
        return self.nchw_to_nhwc(F.silu(y) if activation == "silu" else y)

    def pointwise_conv(self, x, weight, bias=None, *, activation=None, input_scale=None, residual=None):
        # [B, H, W, Cin], [Cout, Cin, 1, 1] -> [B, H, W, Cout]
        from ..kernels.gemm import gemm

        check_activation(activation, CONV_ACTIVATIONS)  # the GEMM would also take "gelu": refuse it here
        B, H, W, Cin = x.shape
        Cout = weight.shape[0]
        y = gemm(x.reshape(-1, Cin), weight, bias=bias, activation=activation,
                 residual=None if residual is None else residual.reshape(-1, Cout),
                 a_scale=input_scale, rows_per_image=None if input_scale is None else H * W)
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
        y, sums = depthwise_conv_bn_silu(x, weight, ones, shift, stride=stride, padding=tuple(int(p) for p in padding),
                                         activation=activation == "silu", return_sums=return_means)
        if not return_means:
            return y
        return y, sums / (y.shape[1] * y.shape[2])

    def squeeze_excite_gate(self, pooled, w_reduce, b_reduce, w_expand, b_expand):
        # [B, C] means -> [B, C] float32 gate
        from ..kernels.se_gate import se_gate

        return se_gate(pooled.float().contiguous(), 1, w_reduce, b_reduce, w_expand, b_expand)

    def global_pool(self, x, kind: str):
        # [B, H, W, C] -> [B, C], float32
        if kind not in ("mean", "max"):
            raise ValueError(f"kind must be 'mean' or 'max', got {kind!r}")
        x = x.float()
        return x.mean(dim=(1, 2)) if kind == "mean" else x.amax(dim=(1, 2))
