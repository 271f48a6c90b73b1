"""The ops contract: every op the architecture calls, with its shapes and dtypes.

``text_model.py`` and ``vision_model.py`` are written once, against an ``ops`` object; they call
nothing else on activations. A backend is anything that has every member of ``Ops`` below:

- ``"reference"``: the module ``minialign.backends.reference`` -- the plain math, the lesson;
- ``"numpy"``: the module ``minialign.backends.numpy`` -- the same math made fast on the CPU;
- ``"triton"``: a ``minialign.backends.triton.TritonOps`` -- the Triton kernels on torch tensors.

``Array`` is the backend's own array type: a NumPy ``ndarray`` (float32, or int64 for ids) for
the first two, a torch tensor (float32 or bfloat16) for Triton. Shapes follow the signatures'
comments: ``B`` batch, ``T`` tokens, ``H`` hidden size, ``heads`` attention heads, vision
activations channels-last ``[B, H, W, C]``. Weights keep transformers' layouts (a linear weight
``[out, in]``, a convolution ``[Cout, Cin, k, k]``, a depthwise one ``[C, 1, k, k]``).

Fused ops are part of the contract when the architecture calls them and a fast backend has a
kernel for them; the reference writes each as the literal composition (``add_layer_norm`` is
``layer_norm(x + residual)``, ``linear_add_layer_norm`` is ``add_layer_norm(linear(x, W, b),
residual)``, ``linears`` is one ``linear`` per weight, ``pointwise_conv``'s
``input_scale`` is the squeeze-excitation product ``x * gate``), so a reader sees the math and a
kernel sees the fusion.

Weights in another form. A fused op may want its weights laid out differently from the
checkpoint (BERT's query, key and value projections as one ``[3H, H]`` matrix, so that the three
are one matrix product). The model asks the backend for that form once, when it is built
(``prepare_linears``), keeps what it gets, and hands it to the op at every forward; the reference
keeps the weights as they are, a fast backend concatenates them. Nothing is rearranged per forward.

Packed text. ``packed_attention`` and ``scatter_rows`` serve the text tower's packed mode
(``AlignTextModel(..., packed=True)``): only the real tokens of a batch, ``[N, H]`` rows with the
sequences one after another (FlashAttention's varlen layout: ``cu_seqlens [B + 1]``, sequence b
is rows ``cu_seqlens[b] .. cu_seqlens[b + 1]``), so no pad token is computed; ``scatter_rows``
puts the rows back into a padded batch at the end. ``PACK_TEXT`` says whether
``AlignModel.get_text_features`` packs by default.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

Array = Any  # the backend's array type (numpy.ndarray, torch.Tensor)
Padding = tuple[int, int, int, int]  # (top, bottom, left, right) zeros around H and W

# The activation names a layer accepts (config.hidden_act), in transformers' spelling: every
# entry of transformers' ACT2FN table that is a fixed elementwise function. Every backend accepts
# all of them, after a linear layer and after a convolution alike (transformers' EfficientNet
# applies hidden_act after the stem, the expansion and the depthwise conv, and inside the
# squeeze-excitation); the reference defines each one (reference.ACTIVATIONS). Several names
# are one function under two spellings (swish = silu, gelu_python = gelu, the tanh GELUs).
ACTIVATION_NAMES = (
    "gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_accurate", "gelu_fast",
    "gelu_10", "quick_gelu", "relu", "relu2", "relu6", "leaky_relu", "silu", "swish", "hardswish", "mish",
    "tanh", "sigmoid", "laplace", "sqrtsoftplus", "linear",
)
# ACT2FN entries that are modules with learned weights of their own (a checkpoint would carry
# them under ...intermediate_act_fn.weight); no ALIGN checkpoint has them and minialign has no
# place for them, so a config naming one is refused with this reason.
LEARNED_ACTIVATIONS = ("prelu", "xielu")
# What a convolution's epilogue accepts: the same names, or nothing.
CONV_ACTIVATIONS = (None, *ACTIVATION_NAMES)


def check_activation(activation: str | None, allowed=ACTIVATION_NAMES, *, none_ok: bool = True) -> None:
    """Raise a ValueError naming ``activation`` and the accepted names unless it is one of them."""
    if (activation is None and none_ok) or activation in allowed:
        return
    why = " (it has learned weights, which ALIGN checkpoints do not carry)" if activation in LEARNED_ACTIVATIONS else ""
    raise ValueError(f"activation {activation!r} is not supported{why}; use one of {sorted(a for a in allowed if a)}"
                     + (" or None" if none_ok else ""))


@runtime_checkable
class Ops(Protocol):
    """What a backend supplies. Each method's first line states its shapes."""

    NAME: str  # "reference", "numpy" or "triton": what from_pretrained(..., backend=...) calls it
    # Whether get_text_features runs the text tower packed unless told otherwise: True where each
    # kernel launch costs and one set of launches takes a whole ragged batch (Triton); False on the
    # CPU backends, whose length buckets keep their features exactly what they were for any mask
    # (docs/backends.md, "Padding costs nothing").
    PACK_TEXT: bool

    # -- arrays in and out ---------------------------------------------------------------------

    def from_numpy(self, array: Any) -> Array:
        """A NumPy array, nested lists, or an array this backend already holds, as this backend's
        array: floats in the compute dtype, integers as integers."""

    def to_numpy(self, x: Array) -> np.ndarray:
        """This backend's array as a NumPy array (float32 for floats)."""

    def prepare_weight(self, array: Any, op: str, argument: str) -> Array:
        """A weight (a NumPy array, batchnorm already folded in) as this backend's array, in the
        form that ``op`` reads as its ``argument``: ``("depthwise_conv2d", "weight")``,
        ``("pointwise_conv", "bias")``, ... The towers call it once per weight when they are built
        and pass what it returns to ``op`` in every forward, so a backend lays out or casts a
        weight for its kernel once, not per call. The NumPy backends read every weight as the
        checkpoint stores it: for them it is ``from_numpy``."""

    def is_floating_point(self, x: Array) -> bool:
        """True when ``x`` holds floating-point numbers (what the input checks ask of pixels)."""

    def nchw_to_nhwc(self, x: Array) -> Array:  # [B, C, H, W] -> [B, H, W, C]
        """Channels-first images (the model's interface) to channels-last (its inside)."""

    def nhwc_to_nchw(self, x: Array) -> Array:  # [B, H, W, C] -> [B, C, H, W]
        """Back to channels-first, for the outputs."""

    # -- text ------------------------------------------------------------------------------------

    def embedding(self, ids: Array, table: Array) -> Array:  # [...] int, [V, H] -> [..., H]
        """out[..., :] = table[ids[...], :]."""

    def add(self, x: Array, y: Array) -> Array:  # [...], [...] -> [...]
        """x + y (the embeddings' sum)."""

    def layer_norm(self, x: Array, weight: Array, bias: Array, eps: float) -> Array:  # [..., H], [H], [H] -> [..., H]
        """(x - mean) / sqrt(var + eps) * weight + bias over the last axis."""

    def add_layer_norm(self, x: Array, residual: Array, weight: Array, bias: Array,
                       eps: float) -> Array:  # [..., H], [..., H], [H], [H] -> [..., H]
        """layer_norm(x + residual): BERT's post-norm residual connection."""

    def linear_add_layer_norm(self, x: Array, weight: Array, bias: Array, residual: Array, norm_weight: Array,
                              norm_bias: Array, eps: float) -> Array:
        # [..., in], [H, in], [H], [..., H], [H], [H] -> [..., H]
        """add_layer_norm(linear(x, weight, bias), residual, norm_weight, norm_bias, eps): the end of
        each BERT sublayer (transformers' BertSelfOutput / BertOutput, dropout aside)."""

    def linear(self, x: Array, weight: Array, bias: Array | None = None,
               activation: str | None = None) -> Array:  # [..., in], [out, in], [out] -> [..., out]
        """act(x W^T + b), ``activation`` None or one of ACTIVATION_NAMES."""

    def prepare_linears(self, weights: tuple[Array, ...], biases: tuple[Array, ...]) -> Any:
        # n x [out_i, in], n x [out_i] -> what linears() reads
        """The weights of n linear layers that read the same input, in the form ``linears`` takes
        them. Called once per group when the model is built, never per forward."""

    def linears(self, x: Array, prepared: Any) -> tuple[Array, ...]:  # [..., in] -> n x [..., out_i]
        """(linear(x, W_1, b_1), ..., linear(x, W_n, b_n)) for ``prepared = prepare_linears(W, b)``:
        BERT's query, key and value projections. The outputs may be views of one array."""

    def multi_head_attention(self, q: Array, k: Array, v: Array, attention_mask: Array, num_heads: int, *,
                             return_probs: bool = False) -> tuple[Array, Array | None]:
        # [B, T, H] x 3, [B, T] of {0, 1} -> ([B, T, H], [B, heads, T, T] or None)
        """softmax(q k^T / sqrt(d) + mask bias) v per head (d = H / heads), heads merged back."""

    def packed_attention(self, q: Array, k: Array, v: Array, cu_seqlens: Array, max_seqlen: int,
                         num_heads: int) -> Array:
        # [N, H] x 3, [B + 1] int, - -> [N, H]
        """multi_head_attention of each sequence on its own, rows ``cu_seqlens[b] .. cu_seqlens[b + 1]``
        (every token real, no mask); ``max_seqlen`` is the longest sequence."""

    def scatter_rows(self, x: Array, index: Array, num_rows: int) -> Array:  # [N, H], [N] int, R -> [R, H]
        """out = zeros([R, H]); out[index[i]] = x[i]: packed rows back to their places in a
        padded batch (``index`` distinct, in [0, R))."""

    def tanh(self, x: Array) -> Array:  # [...] -> [...]
        """tanh(x) (the BERT pooler)."""

    # -- vision ----------------------------------------------------------------------------------

    def conv2d(self, x: Array, weight: Array, stride: int = 1, padding: Padding = (0, 0, 0, 0), *,
               bias: Array | None = None, activation: str | None = None) -> Array:
        # [B, H, W, Cin], [Cout, Cin, k, k], [Cout] -> [B, Ho, Wo, Cout]
        """act(conv(pad(x), W) + b): the stem's dense convolution."""

    def pointwise_conv(self, x: Array, weight: Array, bias: Array | None = None, *, activation: str | None = None,
                       input_scale: Array | None = None, residual: Array | None = None) -> Array:
        # [B, H, W, Cin], [Cout, Cin, 1, 1], [Cout], -, [B, Cin], [B, H, W, Cout] -> [B, H, W, Cout]
        """act((x * input_scale) W^T + b) + residual at every pixel: a 1x1 convolution, with the
        squeeze-excitation gate as ``input_scale`` and the block's skip as ``residual``."""

    def depthwise_conv2d(self, x: Array, weight: Array, stride: int = 1, padding: Padding = (0, 0, 0, 0), *,
                         bias: Array | None = None, activation: str | None = None,
                         return_means: bool = False) -> Array | tuple[Array, Any]:
        # [B, H, W, C], [C, 1, k, k], [C] -> [B, Ho, Wo, C] (and the squeeze: [B, C] means with return_means)
        """act(per-channel k x k conv of pad(x) + b), and with ``return_means`` also its mean
        over pixels (the squeeze of the squeeze-excitation that follows).

        The squeeze goes from here to this backend's ``squeeze_excite_gate`` and nowhere else,
        so a backend may hand it over in a form of its own: the NumPy backends return the
        ``[B, C]`` float32 means; the Triton backend the depthwise kernel's partial sums and
        the pixel count (``triton.PixelSums``), which its SE gate kernel adds and divides, so
        that nothing runs between the two kernels. Whatever the form, ``to_numpy`` of it is
        the ``[B, C]`` float32 means."""

    def squeeze_excite_gate(self, pooled: Any, w_reduce: Array, b_reduce: Array, w_expand: Array,
                            b_expand: Array, *, activation: str = "silu") -> Array:
        # [B, C], [S, C, 1, 1], [S], [C, S, 1, 1], [C] -> [B, C]
        """sigmoid(W_e act(W_r s + b_r) + b_e): one factor in (0, 1) per image and channel; ``act``
        is the tower's hidden_act (SiLU in every ALIGN checkpoint), one of ACTIVATION_NAMES.
        ``pooled`` is s: ``[B, C]`` means, or the squeeze as this backend's ``depthwise_conv2d``
        returned it."""

    def global_pool(self, x: Array, kind: str) -> Array:  # [B, H, W, C] -> [B, C] float32
        """Mean (``kind="mean"``) or max over all pixels."""


OP_NAMES = tuple(name for name in Ops.__dict__ if not name.startswith("_") and callable(Ops.__dict__[name]))


def missing_ops(ops: Any) -> list[str]:
    """The members of the contract that ``ops`` lacks (empty for a complete backend)."""
    return [name for name in ("NAME", "PACK_TEXT", *OP_NAMES) if not hasattr(ops, name)]
