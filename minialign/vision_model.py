"""The vision tower: EfficientNet (B7 scaling in align-base), as transformers' ``AlignVisionModel``.

    pixel_values [B, 3, H, W] ──► stem: pad right/bottom, 3x3 conv stride 2, BN, SiLU
      ──► 55 MBConv blocks (align-base), each:
            [expand 1x1 conv + BN + SiLU]        (only when expand_ratio != 1)
            depthwise k x k conv + BN + SiLU     (k = 3 or 5; stride 1 or 2)
            squeeze-excitation                   (channel gate from the image mean, SiLU inside)
            project 1x1 conv + BN                (no activation: a "linear bottleneck")
            [+ block input]                      (only where transformers adds it, see below)
      ──► mean (or max) over space ──► pooler_output [B, 640]

Every SiLU above is ``config.hidden_act`` ("swish" in every ALIGN checkpoint; transformers' four
uses of it are these four); the squeeze-excitation's gate is always a sigmoid.

ALIGN drops EfficientNet's top 1x1 conv (``hidden_dim``) and classifier: the image embedding is
the pooled output of the last block (640 channels for align-base). transformers still reads
``hidden_dim``, as its pooling window (see ``_check_pooling_window``).

Inside, activations are channels-last [B, H, W, C]: a 1x1 convolution is then one matrix product
over contiguous rows of channels, and a depthwise tap a per-channel vector broadcast over the
last axis. The public
interface takes and returns NCHW like transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .backends import get_ops
from .backends.contract import Ops, Padding
from .backends.reference import fold_batch_norm
from .config import AlignVisionConfig
from .cuda_graphs import graphs_for
from .modeling import PretrainedModel
from .training import backward as bw


def round_filters(config: AlignVisionConfig, num_channels: int) -> int:
    """Scale a B0 channel count by ``width_coefficient`` and round to a multiple of
    ``depth_divisor`` (never rounding down by more than 10%). align-base: 32 -> 64, 320 -> 640."""
    divisor = config.depth_divisor
    scaled = num_channels * config.width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(config: AlignVisionConfig, repeats: int) -> int:
    """Scale a B0 stage's block count by ``depth_coefficient``, rounding up (3.1 * 4 -> 13)."""
    return int(math.ceil(config.depth_coefficient * repeats))


@dataclass(frozen=True)
class BlockSpec:
    """Everything that varies between MBConv blocks, derived from the config as transformers does."""

    index: int
    in_dim: int
    out_dim: int
    expand_dim: int  # in_dim * expand_ratio: the width of the depthwise conv
    se_dim: int  # squeeze-excitation bottleneck: int(in_dim * squeeze_expansion_ratio), at least 1
    kernel_size: int
    stride: int
    expand: bool  # has the expansion 1x1 conv (expand_ratio != 1)
    residual: bool  # adds the block input to its output
    adjust_padding: bool  # stride-2 padding on the right/bottom only (see depthwise_padding)


def block_specs(config: AlignVisionConfig) -> list[BlockSpec]:
    """The blocks in order. The first block of each stage takes the stage's stride and input
    width; its repeats have stride 1 and keep the width.

    Residuals: transformers adds the block input only for blocks that are *not* the first of
    their stage (and have stride 1). The first block of a stage never gets one, even where
    input and output widths match -- the original EfficientNet would add it there. We follow
    transformers, since its checkpoints were converted for that graph.
    """
    specs = []
    for stage in range(len(config.in_channels)):
        stage_in = round_filters(config, config.in_channels[stage])
        out_dim = round_filters(config, config.out_channels[stage])
        for j in range(round_repeats(config, config.num_block_repeats[stage])):
            in_dim = stage_in if j == 0 else out_dim
            stride = config.strides[stage] if j == 0 else 1
            ratio = config.expand_ratios[stage]
            index = len(specs)
            specs.append(BlockSpec(
                index=index,
                in_dim=in_dim,
                out_dim=out_dim,
                expand_dim=in_dim * ratio,
                se_dim=max(1, int(in_dim * config.squeeze_expansion_ratio)),
                kernel_size=config.kernel_sizes[stage],
                stride=stride,
                expand=ratio != 1,
                residual=j > 0 and stride == 1,
                adjust_padding=index not in config.depthwise_padding,
            ))
    return specs


def depthwise_padding(kernel_size: int, stride: int, adjust: bool) -> Padding:
    """Padding before a depthwise conv, as transformers applies it.

    - stride 1: torch's "same" padding, k - 1 zeros per axis, the odd one (for an even k) at the
      bottom/right: k // 2 on each side for the usual odd k.
    - stride 2: ``correct_pad``: with ``adjust`` (the default for every block not listed in
      ``config.depthwise_padding``) k//2 - 1 on the top/left and k//2 on the bottom/right;
      without it, k//2 on every side.

    Why it matters: the TensorFlow original pads stride-2 convs like Keras' ``correct_pad``,
    which for an odd input size is symmetric. transformers' right/bottom-heavy padding turns the
    stem's 289x289 input into 144x144 (TF: 145x145) and the last map into 9x9 (TF: 10x10). The
    converted checkpoints are what users load, so minialign matches transformers, not TF.
    """
    half = kernel_size // 2
    if stride == 1:
        before = (kernel_size - 1) // 2
        return (before, kernel_size - 1 - before, before, kernel_size - 1 - before)
    if adjust:
        return (half - 1, half, half - 1, half)
    return (half, half, half, half)


# The stem pads one zero row at the bottom and one column at the right, then convolves 3x3 with
# stride 2 and no padding (transformers' ZeroPad2d((0, 1, 0, 1)); see depthwise_padding for TF).
STEM_PADDING: Padding = (0, 1, 0, 1)


def _check_fits(shape: tuple[int, ...], padding: Padding, b: BlockSpec) -> None:
    """A clear error instead of an empty feature map when the input image is too small."""
    top, bottom, left, right = padding
    height, width = shape[1] + top + bottom, shape[2] + left + right
    if min(height, width) < b.kernel_size:
        raise ValueError(
            f"the input image is too small for this model: block {b.index} gets a {shape[1]}x{shape[2]} "
            f"feature map ({height}x{width} padded), smaller than its {b.kernel_size}x{b.kernel_size} "
            "kernel; use a larger image (align-base expects 289x289)"
        )


def _check_pooling_window(shape: tuple[int, ...], window: int) -> None:
    """transformers pools the last map with a ``hidden_dim`` x ``hidden_dim`` window
    (``nn.AvgPool2d(hidden_dim, ceil_mode=True)``, or MaxPool2d): one window, the whole map, when
    the map fits in it, several otherwise, and then its reshape to [B, C] fails. minialign pools
    the whole map, so it refuses the second case too, saying why."""
    if max(shape[1], shape[2]) > window:
        raise ValueError(
            f"the last feature map is {shape[1]}x{shape[2]}, larger than the pooling window hidden_dim={window}: "
            "transformers' ALIGN pools with a hidden_dim-wide window and cannot reduce this map to one vector; "
            "use a smaller image or a config with a larger hidden_dim"
        )


@dataclass
class VisionModelOutput:
    last_hidden_state: np.ndarray  # [B, C_last, h, w], NCHW like transformers
    pooler_output: np.ndarray  # [B, C_last]
    hidden_states: tuple[np.ndarray, ...] | None = None  # stem output, then each block's, NCHW


def _bn_names(prefix: str) -> list[str]:
    return [f"{prefix}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]


# The squeeze-excitation weights of a block, in the argument order of the SE ops.
SE_WEIGHTS = tuple(f"squeeze_excite.{name}" for name in ("reduce.weight", "reduce.bias", "expand.weight", "expand.bias"))
SE_ARGUMENTS = ("w_reduce", "b_reduce", "w_expand", "b_expand")  # their names in ops.squeeze_excite_gate


@dataclass
class StemCaches:
    """What the stem's training forward keeps for its backward, by layer (see ``stem_train``)."""

    conv: tuple
    bn: tuple
    act: np.ndarray


@dataclass
class BlockCaches:
    """What one block's training forward keeps for its backward, by layer (see ``block_train``);
    the expansion's three are None in a block without expansion."""

    expand_conv: tuple | None = None
    expand_bn: tuple | None = None
    expand_act: np.ndarray | None = None
    depthwise_conv: tuple | None = None
    depthwise_bn: tuple | None = None
    depthwise_act: np.ndarray | None = None
    squeeze_excite: tuple | None = None
    project_conv: tuple | None = None
    project_bn: tuple | None = None


class AlignVisionModel(PretrainedModel):
    """EfficientNet encoder + spatial pooling. ``model(pixel_values)`` with NCHW float input."""

    config_class = AlignVisionConfig
    architecture = "AlignVisionModel"
    checkpoint_prefixes = ("vision_model.",)

    def __init__(self, config: AlignVisionConfig, params, *, strict: bool = True, ops: Ops | None = None):
        super().__init__(config, params, strict=strict)
        self.ops = ops = get_ops() if ops is None else ops  # the backend; see AlignTextModel
        self.blocks = block_specs(config)
        # The weights the architecture reads, as the backend's arrays, prepared once for the op
        # that reads each (ops.prepare_weight: a kernel's layout, a cast): every convolution with
        # its batchnorm folded in, and the squeeze-excitation weights as they are.
        weights = {**self.params, **self.fold_batch_norms()}
        self.tensors = {name: ops.prepare_weight(weights[name], op, argument)
                        for name, (op, argument) in self.weight_uses().items()}
        # encode's CUDA graphs, captured and replayed per input shape when the backend asks for
        # them (minialign/cuda_graphs.py); None otherwise.
        self.graphs = graphs_for(self.encode, ops)

    @classmethod
    def expected_shapes(cls, config: AlignVisionConfig) -> dict[str, tuple[int, ...]]:
        stem = round_filters(config, 32)
        shapes = {"embeddings.convolution.weight": (stem, config.num_channels, 3, 3)}
        shapes.update({name: (stem,) for name in _bn_names("embeddings.batchnorm")})
        for b in block_specs(config):
            p = f"encoder.blocks.{b.index}."
            if b.expand:
                shapes[p + "expansion.expand_conv.weight"] = (b.expand_dim, b.in_dim, 1, 1)
                shapes.update({n: (b.expand_dim,) for n in _bn_names(p + "expansion.expand_bn")})
            shapes[p + "depthwise_conv.depthwise_conv.weight"] = (b.expand_dim, 1, b.kernel_size, b.kernel_size)
            shapes.update({n: (b.expand_dim,) for n in _bn_names(p + "depthwise_conv.depthwise_norm")})
            shapes[p + "squeeze_excite.reduce.weight"] = (b.se_dim, b.expand_dim, 1, 1)
            shapes[p + "squeeze_excite.reduce.bias"] = (b.se_dim,)
            shapes[p + "squeeze_excite.expand.weight"] = (b.expand_dim, b.se_dim, 1, 1)
            shapes[p + "squeeze_excite.expand.bias"] = (b.expand_dim,)
            shapes[p + "projection.project_conv.weight"] = (b.out_dim, b.expand_dim, 1, 1)
            shapes.update({n: (b.out_dim,) for n in _bn_names(p + "projection.project_bn")})
        return shapes

    # -- batchnorm folded into the convolutions, once ------------------------------------------

    def convolutions(self) -> dict[str, tuple[str, str]]:
        """``{conv name: (its batchnorm's name, the op that runs it)}``, stem first, in order."""
        convs = {"embeddings.convolution": ("embeddings.batchnorm", "conv2d")}
        for b in self.blocks:
            p = f"encoder.blocks.{b.index}."
            if b.expand:
                convs[p + "expansion.expand_conv"] = (p + "expansion.expand_bn", "pointwise_conv")
            convs[p + "depthwise_conv.depthwise_conv"] = (p + "depthwise_conv.depthwise_norm", "depthwise_conv2d")
            convs[p + "projection.project_conv"] = (p + "projection.project_bn", "pointwise_conv")
        return convs

    def weight_uses(self) -> dict[str, tuple[str, str]]:
        """``{weight name: (op, argument)}``: which op reads each weight the architecture uses, as
        which argument (what ``ops.prepare_weight`` prepares it for)."""
        uses = {}
        for conv, (_, op) in self.convolutions().items():
            uses[conv + ".weight"], uses[conv + ".bias"] = (op, "weight"), (op, "bias")
        for b in self.blocks:
            for name, argument in zip(SE_WEIGHTS, SE_ARGUMENTS):
                uses[f"encoder.blocks.{b.index}.{name}"] = ("squeeze_excite_gate", argument)
        return uses

    def fold_batch_norms(self) -> dict[str, np.ndarray]:
        """Every convolution's weight with the batchnorm after it folded in (``fold_batch_norm``),
        and the bias that the batchnorm leaves: ``{"<conv name>.weight": ..., "<conv name>.bias": ...}``.

        Eval-mode batchnorm is a fixed per-channel affine map, so folding it once here takes a
        pass over the activation out of every convolution. It is weight preparation, not an op: it
        runs once, in NumPy, on the checkpoint's arrays, for every backend. ``self.params`` keeps
        the checkpoint's weights as they are (for save_pretrained and the parity report).
        """
        folded = {}
        for conv, (bn, _) in self.convolutions().items():
            weight, bias = fold_batch_norm(
                self.params[conv + ".weight"], *(self.params[n] for n in _bn_names(bn)), self.config.batch_norm_eps
            )
            folded[conv + ".weight"], folded[conv + ".bias"] = weight, bias
        return folded

    # -- the architecture --------------------------------------------------------------------

    def stem(self, x: np.ndarray) -> np.ndarray:
        # [B, H, W, 3] -> [B, floor(H/2), floor(W/2), C0]  (pad 1 right/bottom, 3x3 stride 2: 289 -> 144)
        """Pad right/bottom by one, 3x3 conv with stride 2, batchnorm (folded), SiLU (hidden_act)."""
        w = self.tensors
        return self.ops.conv2d(x, w["embeddings.convolution.weight"], stride=2, padding=STEM_PADDING,
                               bias=w["embeddings.convolution.bias"], activation=self.config.hidden_act)

    def block(self, b: BlockSpec, x: np.ndarray) -> np.ndarray:
        # [B, H, W, in_dim] -> [B, H / stride, W / stride, out_dim]
        """One MBConv block (inverted residual with squeeze-excitation), in four fused ops:

            h = silu(bn(expand_conv(x)))                    [B, H, W, expand_dim]   (if expanding)
            h = silu(bn(depthwise_conv(h))), s = mean(h)    [B, H', W', expand_dim], [B, expand_dim]
            g = squeeze_excite_gate(s)                      [B, expand_dim]
            out = bn(project_conv(h * g)) (+ x)             [B, H', W', out_dim]

        Each bn is folded into its conv's weight and bias (fold_batch_norms); each silu is
        config.hidden_act, in the SE gate too.
        """
        w, ops, act = self.tensors, self.ops, self.config.hidden_act
        pre = f"encoder.blocks.{b.index}."
        h = x
        if b.expand:  # widen: in_dim -> in_dim * expand_ratio
            conv = pre + "expansion.expand_conv"
            h = ops.pointwise_conv(h, w[conv + ".weight"], w[conv + ".bias"], activation=act)
        padding = depthwise_padding(b.kernel_size, b.stride, b.adjust_padding)
        _check_fits(h.shape, padding, b)
        conv = pre + "depthwise_conv.depthwise_conv"
        h, means = ops.depthwise_conv2d(h, w[conv + ".weight"], b.stride, padding, bias=w[conv + ".bias"],
                                        activation=act, return_means=True)
        gate = ops.squeeze_excite_gate(means, *(w[pre + name] for name in SE_WEIGHTS), activation=act)
        # Drop-connect (config.drop_connect_rate) is a training-time dropout on the branch before
        # the residual add (per element in transformers, per sample in TensorFlow; see
        # docs/conventions.md); inference never drops anything, so there is nothing to do.
        conv = pre + "projection.project_conv"  # narrow: -> out_dim, no activation
        return ops.pointwise_conv(h, w[conv + ".weight"], w[conv + ".bias"], input_scale=gate,
                                  residual=x if b.residual else None)

    # -- training mode: the same stem and blocks, batchnorm on the batch's statistics ---------------
    # `minialign train` runs the stem and blocks above with batchnorm in training mode: each batch
    # is normalised with its own mean and variance, which also move the running statistics, so
    # the batchnorms cannot be folded into the convolutions. Each step is a forward/backward pair
    # of training/backward.py on the checkpoint's own weights (self.params, unfolded), and keeps
    # its cache under the layer's name for the backward, which walks the same steps in reverse.

    def _batch_norm_train(self, name: str, x: np.ndarray, momentum: float, buffers: dict):
        # [B, H, W, C] -> ([B, H, W, C], cache); buffers[name.running_*] <- the updated statistics
        p = self.params
        out, cache, buffers[name + ".running_mean"], buffers[name + ".running_var"] = bw.batch_norm_forward(
            x, p[name + ".weight"], p[name + ".bias"], p[name + ".running_mean"], p[name + ".running_var"],
            self.config.batch_norm_eps, momentum=momentum)
        return out, cache

    def stem_train(self, x: np.ndarray, momentum: float, buffers: dict) -> tuple[np.ndarray, StemCaches]:
        # [B, H, W, 3] -> [B, floor(H/2), floor(W/2), C0], as ``stem`` with a training-mode batchnorm
        h, conv = bw.conv2d_forward(x, self.params["embeddings.convolution.weight"], 2, STEM_PADDING)
        h, bn = self._batch_norm_train("embeddings.batchnorm", h, momentum, buffers)
        h, act = bw.activation_pair(self.config.hidden_act)[0](h)
        return h, StemCaches(conv, bn, act)

    def stem_train_backward(self, dout: np.ndarray, caches: StemCaches, grads: dict) -> None:
        # [B, Ho, Wo, C0] -> the stem's weight gradients, into grads
        dh = bw.activation_pair(self.config.hidden_act)[1](dout, caches.act)
        dh, grads["embeddings.batchnorm.weight"], grads["embeddings.batchnorm.bias"] = \
            bw.batch_norm_backward(dh, caches.bn)
        _, grads["embeddings.convolution.weight"], _ = bw.conv2d_backward(dh, caches.conv)

    def block_train(self, b: BlockSpec, x: np.ndarray, momentum: float, buffers: dict) -> tuple[np.ndarray, BlockCaches]:
        # [B, H, W, in_dim] -> [B, H / stride, W / stride, out_dim], as ``block`` with training-mode batchnorms
        """``block``'s four steps, each conv followed by its own batchnorm and the SE as one layer:

            h = silu(bn(expand_conv(x)))                  (if expanding)
            h = silu(bn(depthwise_conv(h)))
            h = squeeze_excite(h)                          = h * sigmoid(W_e silu(W_r mean(h) + b_r) + b_e)
            out = bn(project_conv(h)) (+ x)
        """
        p, pre = self.params, f"encoder.blocks.{b.index}."
        act_forward = bw.activation_pair(self.config.hidden_act)[0]  # SiLU in ALIGN
        caches = BlockCaches()
        h = x
        if b.expand:
            h, caches.expand_conv = bw.pointwise_conv_forward(h, p[pre + "expansion.expand_conv.weight"])
            h, caches.expand_bn = self._batch_norm_train(pre + "expansion.expand_bn", h, momentum, buffers)
            h, caches.expand_act = act_forward(h)
        h, caches.depthwise_conv = bw.depthwise_conv2d_forward(
            h, p[pre + "depthwise_conv.depthwise_conv.weight"], b.stride,
            depthwise_padding(b.kernel_size, b.stride, b.adjust_padding))
        h, caches.depthwise_bn = self._batch_norm_train(pre + "depthwise_conv.depthwise_norm", h, momentum, buffers)
        h, caches.depthwise_act = act_forward(h)
        h, caches.squeeze_excite = bw.squeeze_excite_forward(h, *(p[pre + name] for name in SE_WEIGHTS),
                                                             activation=self.config.hidden_act)
        h, caches.project_conv = bw.pointwise_conv_forward(h, p[pre + "projection.project_conv.weight"])
        h, caches.project_bn = self._batch_norm_train(pre + "projection.project_bn", h, momentum, buffers)
        return (h + x if b.residual else h), caches

    def block_train_backward(self, b: BlockSpec, dout: np.ndarray, caches: BlockCaches, grads: dict) -> np.ndarray:
        # [B, H', W', out_dim] -> [B, H, W, in_dim]; the block's weight gradients into grads
        """``block_train`` in reverse; the skip connection adds ``dout`` to the input's gradient."""
        pre = f"encoder.blocks.{b.index}."
        dh, grads[pre + "projection.project_bn.weight"], grads[pre + "projection.project_bn.bias"] = \
            bw.batch_norm_backward(dout, caches.project_bn)
        dh, _, grads[pre + "projection.project_conv.weight"], _ = bw.pointwise_conv_backward(dh, caches.project_conv)
        dh, *se_grads = bw.squeeze_excite_backward(dh, caches.squeeze_excite)
        grads.update((pre + name, g) for name, g in zip(SE_WEIGHTS, se_grads))
        act_backward = bw.activation_pair(self.config.hidden_act)[1]
        dh = act_backward(dh, caches.depthwise_act)
        dh, grads[pre + "depthwise_conv.depthwise_norm.weight"], grads[pre + "depthwise_conv.depthwise_norm.bias"] = \
            bw.batch_norm_backward(dh, caches.depthwise_bn)
        dh, grads[pre + "depthwise_conv.depthwise_conv.weight"], _ = bw.depthwise_conv2d_backward(dh, caches.depthwise_conv)
        if b.expand:
            dh = act_backward(dh, caches.expand_act)
            dh, grads[pre + "expansion.expand_bn.weight"], grads[pre + "expansion.expand_bn.bias"] = \
                bw.batch_norm_backward(dh, caches.expand_bn)
            dh, _, grads[pre + "expansion.expand_conv.weight"], _ = bw.pointwise_conv_backward(dh, caches.expand_conv)
        return dh + dout if b.residual else dh

    def encode(self, pixel_values, hidden_states: list | None = None):
        # [B, C, H, W] backend array -> ([B, h, w, C_last] channels-last, [B, C_last] float32)
        """The stem, the blocks and the pooling, on the backend's arrays (``__call__`` checks the
        input first). With a list for ``hidden_states``, each block's output is appended to it
        (the stem's first), channels-last."""
        ops = self.ops
        x = self.stem(ops.nchw_to_nhwc(pixel_values))
        if hidden_states is not None:
            hidden_states.append(x)  # like transformers: the stem output first
        for b in self.blocks:
            x = self.block(b, x)
            if hidden_states is not None:
                hidden_states.append(x)
        return x, ops.global_pool(x, self.config.pooling_type)

    def __call__(self, pixel_values, *, output_hidden_states: bool | None = None) -> VisionModelOutput:
        """``output_hidden_states`` None means the config's (``config.output_hidden_states``)."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        x = self.check_inputs(pixel_values)
        if output_hidden_states:  # eager: a CUDA graph keeps only its final outputs
            hidden: list = []
            last, pooled = self.encode(x, hidden)
        else:
            last, pooled = self.encode(x) if self.graphs is None else self.graphs(x)
        _check_pooling_window(tuple(last.shape), self.config.hidden_dim)
        return VisionModelOutput(
            last_hidden_state=self.ops.nhwc_to_nchw(last),
            pooler_output=pooled,
            hidden_states=tuple(self.ops.nhwc_to_nchw(h) for h in hidden) if output_hidden_states else None,
        )

    def check_inputs(self, pixel_values):
        """[B, C, H, W] floating point with C = num_channels, as the backend's array; clear errors
        otherwise. The backend's own arrays (e.g. images already on the GPU) pass as they are."""
        x = self.ops.from_numpy(pixel_values)
        if x.ndim != 4:
            raise ValueError(
                f"pixel_values must have 4 dimensions [batch, channels, height, width], found shape {tuple(x.shape)}"
            )
        if not self.ops.is_floating_point(x):
            raise ValueError(
                f"pixel_values must be floating point (the image processor's output), found dtype {x.dtype}"
            )
        if x.shape[1] != self.config.num_channels:
            hint = " (channels-last input? pass [B, C, H, W])" if x.shape[-1] == self.config.num_channels else ""
            raise ValueError(
                f"pixel_values has {x.shape[1]} channels at axis 1, the model expects "
                f"num_channels={self.config.num_channels}{hint}; shape {tuple(x.shape)}"
            )
        if 0 in x.shape:
            raise ValueError(f"pixel_values is empty (shape {tuple(x.shape)})")
        return x
