"""Training ALIGN in NumPy: the whole model's forward and backward pass, llm.c style.

``forward_backward(params, config, input_ids, attention_mask, pixel_values)`` returns the
contrastive loss of a batch of (caption, image) pairs, the gradient of every parameter, and the
batchnorm running statistics updated from the batch. It walks the same architecture as
``AlignTextModel`` / ``AlignVisionModel`` (the same ``block_specs``, paddings and weight names)
through the layer pairs of ``backward.py``:

    forward:  keep each layer's cache on a list, in order
    backward: pop the caches in reverse and hand each layer the gradient of its output

Two things differ from inference, which is why this is its own walk through the model rather
than an ops backend for the inference code:

- Batchnorm runs in training mode (the batch's statistics, running statistics updated), so it
  cannot be folded into the convolutions as ``AlignVisionModel`` does.
- Dropout and drop-connect are off: minialign trains without them (a tiny model on clean
  synthetic data does not overfit in the steps it gets), and so does the gradient test against
  transformers (``hidden_dropout_prob = attention_probs_dropout_prob = drop_connect_rate = 0``).

The BERT pooler is not on the loss's path (ALIGN projects the [CLS] state, not the pooler), so
its parameters get no gradient and are left out of ``grads``.
"""

from __future__ import annotations

import numpy as np

from . import backward as bw
from . import layers
from .config import AlignConfig, AlignTextConfig, AlignVisionConfig
from .vision_model import STEM_PADDING, block_specs, depthwise_padding

# -- configuration and initialisation ----------------------------------------------------------


def nano_config(vocab_size: int) -> AlignConfig:
    """align-nano: a 2-layer BERT (hidden 64) and a 4-block EfficientNet for 48x48 images.

    Sized to train on 2 CPU cores in minutes. The vision tower keeps EfficientNet's first four
    stages at width 1.0, one block each (stem 32 -> 16 -> 24 -> 40 -> 80 channels, strides
    2, 1, 2, 2, 2: a 48x48 image ends as a 3x3 map), so the embedding has 80 dimensions. The
    temperature starts at CLIP's 0.07 rather than transformers' 1.0: with logits in [-1, 1] a
    temperature of 1 gives the loss almost no signal, and a short run cannot afford to wait
    for it to fall.
    """
    text = AlignTextConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    vision = AlignVisionConfig(image_size=48, width_coefficient=1.0, depth_coefficient=1.0,
                               kernel_sizes=[3, 3, 5, 3], in_channels=[32, 16, 24, 40],
                               out_channels=[16, 24, 40, 80], strides=[1, 2, 2, 2], num_block_repeats=[1, 1, 1, 1],
                               expand_ratios=[1, 4, 4, 4], hidden_dim=320, drop_connect_rate=0.0)
    return AlignConfig(text_config=text, vision_config=vision, projection_dim=80, temperature_init_value=0.07)


def init_params(config: AlignConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random initial weights with the expected names and shapes, as transformers initialises them:
    linear and embedding weights ~ N(0, initializer_range^2) (0.02), biases 0, LayerNorm and
    batchnorm weight 1 / bias 0, running mean 0 / var 1, convolutions He-normal
    (N(0, 2 / fan_out), EfficientNet's choice for SiLU nets), temperature ``temperature_init_value``.
    """
    from .align_model import AlignModel

    rng = np.random.default_rng(seed)
    std = config.text_config.initializer_range
    params = {}
    for name, shape in AlignModel.expected_shapes(config).items():
        leaf = name.rsplit(".", 1)[-1]
        if name == "temperature":
            value = np.full(shape, config.temperature_init_value)
        elif leaf in ("running_var",) or (leaf == "weight" and len(shape) == 1):  # norms' scale
            value = np.ones(shape)
        elif leaf in ("bias", "running_mean"):
            value = np.zeros(shape)
        elif len(shape) == 4:  # a convolution [Cout, Cin/groups, k, k]
            depthwise = shape[1] == 1  # each output channel is its own group: it fans out to 1 channel
            fan_out = (1 if depthwise else shape[0]) * shape[2] * shape[3]
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_out)
        else:
            value = rng.standard_normal(shape) * std
        params[name] = value.astype(np.float32)
    return params


# -- the forward and backward pass -------------------------------------------------------------


class _Tape:
    """Caches of the forward, popped by the backward in reverse order."""

    def __init__(self):
        self.entries: list[tuple] = []

    def push(self, entry) -> None:
        self.entries.append(entry)

    def pop(self):
        return self.entries.pop()


def _check_no_dropout(config: AlignConfig) -> None:
    """Refuse a config that asks for dropout or drop-connect: training here runs without them
    (module docstring), and ignoring a non-zero rate would train a different model than asked."""
    rates = {"text_config.hidden_dropout_prob": config.text_config.hidden_dropout_prob,
             "text_config.attention_probs_dropout_prob": config.text_config.attention_probs_dropout_prob,
             "vision_config.drop_connect_rate": config.vision_config.drop_connect_rate}
    asked = {name: rate for name, rate in rates.items() if rate}
    if asked:
        raise ValueError("minialign trains without dropout and drop-connect; set these to 0: "
                         + ", ".join(f"{name}={rate}" for name, rate in asked.items()))


def forward_backward(params: dict[str, np.ndarray], config: AlignConfig, input_ids, attention_mask, pixel_values,
                     *, bn_momentum: float = 0.1) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ALIGN loss of a batch of B (caption i, image i) pairs, its gradients, and the updated
    batchnorm running statistics.

    Args:
        params: ``{transformers weight name: float32 array}`` (e.g. ``init_params``).
        input_ids, attention_mask: [B, T] ints; pixel_values: [B, 3, H, W] float32.
        bn_momentum: running-statistics momentum in torch's convention (the new batch's weight);
            see ``backward.batch_norm_forward`` for TF's and transformers' conventions.

    Returns:
        ``(loss, grads, buffers)``: the scalar loss; ``grads[name]`` for every parameter on the
        loss's path (all but the BERT pooler and the batchnorm running statistics); ``buffers``
        the new running_mean / running_var arrays by name.
    """
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
    pixel_values = np.asarray(pixel_values, dtype=np.float32)
    if input_ids.shape[0] != pixel_values.shape[0]:
        raise ValueError(f"need as many captions as images: input_ids has {input_ids.shape[0]} rows, "
                         f"pixel_values {pixel_values.shape[0]}")
    if input_ids.shape[1] > config.text_config.max_position_embeddings:
        raise ValueError(f"input_ids has {input_ids.shape[1]} tokens per caption, more than max_position_embeddings="
                         f"{config.text_config.max_position_embeddings}; tokenize with truncation=True")
    _check_no_dropout(config)
    tape, grads, buffers = _Tape(), {}, {}
    text = _text_forward(params, config.text_config, input_ids, attention_mask, tape)  # [B, P]
    image = _vision_forward(params, config.vision_config, pixel_values, tape, buffers, bn_momentum)  # [B, P]
    text_embeds, t_cache = bw.l2_normalize_forward(text)
    image_embeds, i_cache = bw.l2_normalize_forward(image)
    logits, logit_cache = bw.align_logits_forward(text_embeds, image_embeds, params["temperature"])
    loss, loss_cache = bw.align_loss_forward(logits)

    dlogits = bw.align_loss_backward(1.0, loss_cache)
    dtext_embeds, dimage_embeds, grads["temperature"] = bw.align_logits_backward(dlogits, logit_cache)
    _vision_backward(params, config.vision_config, bw.l2_normalize_backward(dimage_embeds, i_cache), tape, grads)
    _text_backward(params, config.text_config, bw.l2_normalize_backward(dtext_embeds, t_cache), tape, grads)
    assert not tape.entries, "every cache is used once"
    grads["temperature"] = np.asarray(grads["temperature"], dtype=np.float32).reshape(params["temperature"].shape)
    return float(loss), grads, buffers


# -- text tower --------------------------------------------------------------------------------


def _text_forward(p, c: AlignTextConfig, input_ids, attention_mask, tape: _Tape) -> np.ndarray:
    # [B, T] -> [B, P]: the projected [CLS] state (AlignModel._project_text)
    B, T = input_ids.shape
    pre = "text_model."
    word, word_cache = bw.embedding_forward(input_ids, p[pre + "embeddings.word_embeddings.weight"])
    types, type_cache = bw.embedding_forward(np.zeros_like(input_ids), p[pre + "embeddings.token_type_embeddings.weight"])
    x = word + types + p[pre + "embeddings.position_embeddings.weight"][:T]
    x, ln_cache = bw.layer_norm_forward(x, p[pre + "embeddings.LayerNorm.weight"], p[pre + "embeddings.LayerNorm.bias"],
                                        c.layer_norm_eps)
    tape.push((word_cache, type_cache, ln_cache, T))
    bias = layers.attention_bias(attention_mask)  # [B, 1, 1, T]
    heads, d = c.num_attention_heads, c.head_dim
    for i in range(c.num_hidden_layers):
        lp = f"{pre}encoder.layer.{i}."
        qkv, caches = [], []
        for name in ("query", "key", "value"):
            y, cache = bw.linear_forward(x, p[lp + f"attention.self.{name}.weight"], p[lp + f"attention.self.{name}.bias"])
            qkv.append(y.reshape(B, T, heads, d).transpose(0, 2, 1, 3))  # [B, heads, T, d]
            caches.append(cache)
        context, attn_cache = bw.attention_forward(*qkv, bias)
        context = context.transpose(0, 2, 1, 3).reshape(B, T, heads * d)
        attn, out_cache = bw.linear_forward(context, p[lp + "attention.output.dense.weight"],
                                            p[lp + "attention.output.dense.bias"])
        a, ln1_cache = bw.layer_norm_forward(attn + x, p[lp + "attention.output.LayerNorm.weight"],
                                             p[lp + "attention.output.LayerNorm.bias"], c.layer_norm_eps)
        h, inter_cache = bw.linear_forward(a, p[lp + "intermediate.dense.weight"], p[lp + "intermediate.dense.bias"])
        h, act_cache = _activation_forward(c.hidden_act, h)
        out, down_cache = bw.linear_forward(h, p[lp + "output.dense.weight"], p[lp + "output.dense.bias"])
        x, ln2_cache = bw.layer_norm_forward(out + a, p[lp + "output.LayerNorm.weight"], p[lp + "output.LayerNorm.bias"],
                                             c.layer_norm_eps)
        tape.push((caches, attn_cache, out_cache, ln1_cache, inter_cache, act_cache, down_cache, ln2_cache))
    projected, proj_cache = bw.linear_forward(x[:, 0], p["text_projection.weight"], p["text_projection.bias"])
    tape.push((proj_cache, x.shape))
    return projected


def _activation_forward(name: str, x):
    if name == "gelu":
        return bw.gelu_forward(x)
    if name in ("silu", "swish"):
        return bw.silu_forward(x)
    raise ValueError(f"training supports hidden_act 'gelu' or 'silu', got {name!r}")


def _activation_backward(name: str, dout, cache):
    return bw.gelu_backward(dout, cache) if name == "gelu" else bw.silu_backward(dout, cache)


def _text_backward(p, c: AlignTextConfig, dprojected, tape: _Tape, grads) -> None:
    pre = "text_model."
    proj_cache, x_shape = tape.pop()
    dcls, grads["text_projection.weight"], grads["text_projection.bias"] = bw.linear_backward(dprojected, proj_cache)
    dx = np.zeros(x_shape, dtype=np.float32)
    dx[:, 0] = dcls  # only the [CLS] row reaches the loss
    B, T, H = x_shape
    heads, d = c.num_attention_heads, c.head_dim
    for i in reversed(range(c.num_hidden_layers)):
        lp = f"{pre}encoder.layer.{i}."
        caches, attn_cache, out_cache, ln1_cache, inter_cache, act_cache, down_cache, ln2_cache = tape.pop()
        dsum, grads[lp + "output.LayerNorm.weight"], grads[lp + "output.LayerNorm.bias"] = \
            bw.layer_norm_backward(dx, ln2_cache)  # d(out + a)
        dh, grads[lp + "output.dense.weight"], grads[lp + "output.dense.bias"] = bw.linear_backward(dsum, down_cache)
        dh = _activation_backward(c.hidden_act, dh, act_cache)
        da, grads[lp + "intermediate.dense.weight"], grads[lp + "intermediate.dense.bias"] = \
            bw.linear_backward(dh, inter_cache)
        da = da + dsum  # a reaches the output through the MLP and the residual
        dsum1, grads[lp + "attention.output.LayerNorm.weight"], grads[lp + "attention.output.LayerNorm.bias"] = \
            bw.layer_norm_backward(da, ln1_cache)  # d(attn + x)
        dcontext, grads[lp + "attention.output.dense.weight"], grads[lp + "attention.output.dense.bias"] = \
            bw.linear_backward(dsum1, out_cache)
        dcontext = dcontext.reshape(B, T, heads, d).transpose(0, 2, 1, 3)  # [B, heads, T, d]
        dqkv = bw.attention_backward(dcontext, attn_cache)
        dx = dsum1.copy()  # the residual path
        for name, dy, cache in zip(("query", "key", "value"), dqkv, caches):
            dy = dy.transpose(0, 2, 1, 3).reshape(B, T, H)
            dxi, grads[lp + f"attention.self.{name}.weight"], grads[lp + f"attention.self.{name}.bias"] = \
                bw.linear_backward(dy, cache)
            dx += dxi
    word_cache, type_cache, ln_cache, T = tape.pop()
    dx, grads[pre + "embeddings.LayerNorm.weight"], grads[pre + "embeddings.LayerNorm.bias"] = \
        bw.layer_norm_backward(dx, ln_cache)
    grads[pre + "embeddings.word_embeddings.weight"] = bw.embedding_backward(dx, word_cache)
    grads[pre + "embeddings.token_type_embeddings.weight"] = bw.embedding_backward(dx, type_cache)
    dpos = np.zeros_like(p[pre + "embeddings.position_embeddings.weight"])
    dpos[:T] = dx.sum(axis=0)
    grads[pre + "embeddings.position_embeddings.weight"] = dpos


# -- vision tower ------------------------------------------------------------------------------


def _bn_forward(p, name: str, x, eps: float, momentum: float, buffers, tape_list: list):
    out, cache, buffers[name + ".running_mean"], buffers[name + ".running_var"] = bw.batch_norm_forward(
        x, p[name + ".weight"], p[name + ".bias"], p[name + ".running_mean"], p[name + ".running_var"], eps,
        momentum=momentum)
    tape_list.append(cache)
    return out


def _vision_forward(p, c: AlignVisionConfig, pixel_values, tape: _Tape, buffers, momentum: float) -> np.ndarray:
    # [B, 3, H, W] -> [B, P]: the pooled output of the last block
    pre, eps = "vision_model.", c.batch_norm_eps
    x = np.ascontiguousarray(pixel_values.transpose(0, 2, 3, 1))  # NCHW -> NHWC
    caches = []
    x, cache = bw.conv2d_forward(x, p[pre + "embeddings.convolution.weight"], 2, STEM_PADDING)
    caches.append(cache)
    x = _bn_forward(p, pre + "embeddings.batchnorm", x, eps, momentum, buffers, caches)
    x, cache = bw.silu_forward(x)
    caches.append(cache)
    tape.push(caches)
    for b in block_specs(c):
        bp, caches = f"{pre}encoder.blocks.{b.index}.", []
        h = x
        if b.expand:
            h, cache = bw.pointwise_conv_forward(h, p[bp + "expansion.expand_conv.weight"])
            caches.append(cache)
            h = _bn_forward(p, bp + "expansion.expand_bn", h, eps, momentum, buffers, caches)
            h, cache = bw.silu_forward(h)
            caches.append(cache)
        h, cache = bw.depthwise_conv2d_forward(h, p[bp + "depthwise_conv.depthwise_conv.weight"], b.stride,
                                               depthwise_padding(b.kernel_size, b.stride, b.adjust_padding))
        caches.append(cache)
        h = _bn_forward(p, bp + "depthwise_conv.depthwise_norm", h, eps, momentum, buffers, caches)
        h, cache = bw.silu_forward(h)
        caches.append(cache)
        se = bp + "squeeze_excite."
        h, cache = bw.squeeze_excite_forward(h, p[se + "reduce.weight"], p[se + "reduce.bias"],
                                             p[se + "expand.weight"], p[se + "expand.bias"])
        caches.append(cache)
        h, cache = bw.pointwise_conv_forward(h, p[bp + "projection.project_conv.weight"])
        caches.append(cache)
        h = _bn_forward(p, bp + "projection.project_bn", h, eps, momentum, buffers, caches)
        x = h + x if b.residual else h
        tape.push(caches)
    pooled, cache = bw.global_pool_forward(x, c.pooling_type)
    if c.pooling_type != "mean":
        raise ValueError(f"training supports pooling_type 'mean', got {c.pooling_type!r}")
    tape.push(cache)
    return pooled


def _vision_backward(p, c: AlignVisionConfig, dpooled, tape: _Tape, grads) -> None:
    pre = "vision_model."
    dx = bw.global_pool_backward(dpooled, tape.pop())
    for b in reversed(block_specs(c)):
        bp, caches = f"{pre}encoder.blocks.{b.index}.", tape.pop()
        dresidual = dx if b.residual else None
        dh, grads[bp + "projection.project_bn.weight"], grads[bp + "projection.project_bn.bias"] = \
            bw.batch_norm_backward(dx, caches.pop())
        dh, _, grads[bp + "projection.project_conv.weight"], _ = bw.pointwise_conv_backward(dh, caches.pop())
        se = bp + "squeeze_excite."
        dh, *g = bw.squeeze_excite_backward(dh, caches.pop())
        for name, gi in zip(("reduce.weight", "reduce.bias", "expand.weight", "expand.bias"), g):
            grads[se + name] = gi
        dh = bw.silu_backward(dh, caches.pop())
        dh, grads[bp + "depthwise_conv.depthwise_norm.weight"], grads[bp + "depthwise_conv.depthwise_norm.bias"] = \
            bw.batch_norm_backward(dh, caches.pop())
        dh, grads[bp + "depthwise_conv.depthwise_conv.weight"], _ = bw.depthwise_conv2d_backward(dh, caches.pop())
        if b.expand:
            dh = bw.silu_backward(dh, caches.pop())
            dh, grads[bp + "expansion.expand_bn.weight"], grads[bp + "expansion.expand_bn.bias"] = \
                bw.batch_norm_backward(dh, caches.pop())
            dh, _, grads[bp + "expansion.expand_conv.weight"], _ = bw.pointwise_conv_backward(dh, caches.pop())
        assert not caches
        dx = dh + dresidual if dresidual is not None else dh
    caches = tape.pop()
    dx = bw.silu_backward(dx, caches.pop())
    dx, grads[pre + "embeddings.batchnorm.weight"], grads[pre + "embeddings.batchnorm.bias"] = \
        bw.batch_norm_backward(dx, caches.pop())
    _, grads[pre + "embeddings.convolution.weight"], _ = bw.conv2d_backward(dx, caches.pop())
