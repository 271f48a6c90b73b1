"""The whole model's loss and gradient, llm.c style: ``forward_backward``.

``forward_backward(params, config, input_ids, attention_mask, pixel_values)`` returns the
contrastive loss of a batch of (caption, image) pairs, the gradient of every parameter, and the
batchnorm running statistics updated from the batch. Each layer is a forward/backward pair of
``backward.py``; the architecture is walked once, by the model classes themselves:

- **Text tower**: ``AlignTextModel``'s own forward, run on ``RecordingOps``, an ops backend that
  computes each op with its pair and records it on a tape. Replaying the tape in reverse from
  the gradient of the [CLS] state gives the gradient of every weight the forward touched.
- **Vision tower**: ``AlignVisionModel.stem_train`` / ``block_train`` and their backwards, beside
  the inference stem and block in ``vision_model.py``. Batchnorm runs in training mode there (the
  batch's statistics, running statistics updated), so it cannot be folded into the convolutions
  the way inference does, and the walk keeps each layer's cache by name.
- **Projection, logits, loss**: the pairs of ``backward.py``, here.

Dropout and drop-connect are off: minialign trains without them (a tiny model on clean
synthetic data does not overfit in the steps it gets), and so does the gradient test against
transformers (``hidden_dropout_prob = attention_probs_dropout_prob = drop_connect_rate = 0``).

The BERT pooler is not on the loss's path (ALIGN projects the [CLS] state, not the pooler), so
its parameters get no gradient and are left out of ``grads``.
"""

from __future__ import annotations

import numpy as np

from ..backends import numpy as fast
from ..config import AlignConfig
from ..text_model import AlignTextModel
from ..vision_model import AlignVisionModel
from . import backward as bw


class RecordingOps:
    """The text ops of the contract on the fast NumPy backend, recorded for the backward pass.

    Each op runs through its forward/backward pair of ``backward.py`` and appends to ``tape``
    its output, its differentiable inputs and how to turn the output's gradient into theirs.
    ``backward(seeds)`` replays the tape in reverse. Arrays are told apart by identity (the tape
    holds every one of them, so no id is reused meanwhile): this is why the architecture applies
    only contract ops to activations -- a ``+`` or a slice outside them would cut the chain.
    The vision tower trains through its own training-mode walk, so its ops are not here.
    """

    NAME = "recording"
    from_numpy = staticmethod(fast.from_numpy)
    to_numpy = staticmethod(fast.to_numpy)
    is_floating_point = staticmethod(fast.is_floating_point)

    def __init__(self):
        self.tape: list[tuple] = []  # (output, inputs, backward function), in forward order

    def _record(self, out, inputs, backward):
        self.tape.append((out, inputs, backward))
        return out

    def embedding(self, ids, table):
        out, cache = bw.embedding_forward(ids, table)
        return self._record(out, (table,), lambda d: (bw.embedding_backward(d, cache),))

    def add(self, x, y):
        out, cache = bw.add_forward(x, y)
        return self._record(out, (x, y), lambda d: bw.add_backward(d, cache))

    def layer_norm(self, x, weight, bias, eps):
        out, cache = bw.layer_norm_forward(x, weight, bias, eps)
        return self._record(out, (x, weight, bias), lambda d: bw.layer_norm_backward(d, cache))

    def add_layer_norm(self, x, residual, weight, bias, eps):
        out, cache = bw.add_layer_norm_forward(x, residual, weight, bias, eps)
        return self._record(out, (x, residual, weight, bias), lambda d: bw.add_layer_norm_backward(d, cache))

    def linear_add_layer_norm(self, x, weight, bias, residual, norm_weight, norm_bias, eps):
        # two records, as the reference composes it: the linear, then LayerNorm of the sum
        return self.add_layer_norm(self.linear(x, weight, bias), residual, norm_weight, norm_bias, eps)

    def linear(self, x, weight, bias=None, activation=None):
        y, cache = bw.linear_forward(x, weight, bias)
        self._record(y, (x, weight, bias), lambda d: bw.linear_backward(d, cache))
        if activation is None:
            return y
        forward, backward = bw.activation_pair(activation)
        out, act_cache = forward(y)
        return self._record(out, (y,), lambda d: (backward(d, act_cache),))

    prepare_linears = staticmethod(fast.prepare_linears)  # the weights as they are: their gradients by identity

    def linears(self, x, prepared):
        return tuple(self.linear(x, weight, bias) for weight, bias in prepared)

    def multi_head_attention(self, q, k, v, attention_mask, num_heads, *, return_probs=False):
        out, cache = bw.multi_head_attention_forward(q, k, v, attention_mask, num_heads)
        return self._record(out, (q, k, v), lambda d: bw.multi_head_attention_backward(d, cache)), None

    def tanh(self, x):
        out, cache = bw.tanh_forward(x)
        return self._record(out, (x,), lambda d: (bw.tanh_backward(d, cache),))

    def backward(self, seeds: list[tuple[np.ndarray, np.ndarray]]) -> dict[int, np.ndarray]:
        """The gradient of every recorded array on the path to the seeds, by ``id(array)``.

        ``seeds`` pairs an output with dL/d(output). Walking the tape backwards, each entry's
        output gradient is complete when it is reached (every use of an array comes after it
        was made), and is handed to the entry's backward; entries that no seed depends on
        (the pooler) are skipped. Gradients reaching one array from several uses add up.
        """
        grads = {id(array): grad for array, grad in seeds}
        for out, inputs, backward in reversed(self.tape):
            dout = grads.pop(id(out), None)
            if dout is None:
                continue
            for x, dx in zip(inputs, backward(dout)):
                if x is not None and dx is not None:
                    grads[id(x)] = grads[id(x)] + dx if id(x) in grads else dx
        return grads


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


def _check_activations(config: AlignConfig) -> None:
    """Refuse, before any work, a config whose activation has no backward pass here (backward.py's
    ACTIVATION_PAIRS: the GELUs, SiLU, ReLU, ReLU6, tanh, sigmoid; not mish, hardswish, ...)."""
    for name, act in (("text_config.hidden_act", config.text_config.hidden_act),
                      ("vision_config.hidden_act", config.vision_config.hidden_act)):
        if act not in bw.ACTIVATION_PAIRS:
            raise ValueError(f"{name}={act!r}: minialign can run this activation but has no backward pass for it, "
                             f"so it cannot train the model; activations it can train: {sorted(bw.ACTIVATION_PAIRS)}")


def check_trainable(config: AlignConfig) -> None:
    """A ValueError naming the field, before any work, when ``config`` asks for something this
    training does not do: dropout, an activation without a backward pass, max pooling."""
    _check_no_dropout(config)
    _check_activations(config)
    if config.vision_config.pooling_type != "mean":
        raise ValueError(f"training supports pooling_type 'mean', got {config.vision_config.pooling_type!r}")


def forward_backward(params: dict[str, np.ndarray], config: AlignConfig, input_ids, attention_mask, pixel_values,
                     *, bn_momentum: float = 0.1) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ALIGN loss of a batch of B (caption i, image i) pairs, its gradients, and the updated
    batchnorm running statistics.

    Args:
        params: ``{transformers weight name: float32 array}`` (e.g. ``recipe.init_params``).
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
    check_trainable(config)

    def tower(prefix: str) -> dict[str, np.ndarray]:
        return {name[len(prefix):]: array for name, array in params.items() if name.startswith(prefix)}

    # forward: the text tower's own forward, recorded; the vision tower's training-mode walk
    recorder = RecordingOps()
    text_model = AlignTextModel(config.text_config, tower("text_model."), ops=recorder)
    hidden = text_model(input_ids, attention_mask).last_hidden_state  # [B, T, H]
    text, projection = bw.linear_forward(hidden[:, 0], params["text_projection.weight"],
                                         params["text_projection.bias"])  # [B, P], the [CLS] row projected
    vision_model = AlignVisionModel(config.vision_config, tower("vision_model."), ops=fast)
    vision_buffers: dict[str, np.ndarray] = {}
    x, stem = vision_model.stem_train(fast.nchw_to_nhwc(pixel_values), bn_momentum, vision_buffers)
    blocks = []
    for b in vision_model.blocks:
        x, caches = vision_model.block_train(b, x, bn_momentum, vision_buffers)
        blocks.append(caches)
    image, pool = bw.global_pool_forward(x, "mean")  # [B, P]
    text_embeds, text_norm = bw.l2_normalize_forward(text)
    image_embeds, image_norm = bw.l2_normalize_forward(image)
    logits, logit_cache = bw.align_logits_forward(text_embeds, image_embeds, params["temperature"])
    loss, loss_cache = bw.align_loss_forward(logits)

    # backward, in the reverse order
    grads: dict[str, np.ndarray] = {}
    dlogits = bw.align_loss_backward(1.0, loss_cache)
    dtext_embeds, dimage_embeds, dtemperature = bw.align_logits_backward(dlogits, logit_cache)
    grads["temperature"] = np.asarray(dtemperature, dtype=np.float32).reshape(params["temperature"].shape)

    vision_grads: dict[str, np.ndarray] = {}
    dx = bw.global_pool_backward(bw.l2_normalize_backward(dimage_embeds, image_norm), pool)
    for b, caches in zip(reversed(vision_model.blocks), reversed(blocks)):
        dx = vision_model.block_train_backward(b, dx, caches, vision_grads)
    vision_model.stem_train_backward(dx, stem, vision_grads)

    dcls, grads["text_projection.weight"], grads["text_projection.bias"] = \
        bw.linear_backward(bw.l2_normalize_backward(dtext_embeds, text_norm), projection)
    dhidden = np.zeros_like(hidden)
    dhidden[:, 0] = dcls  # only the [CLS] row reaches the loss
    by_id = recorder.backward([(hidden, dhidden)])
    grads.update(("text_model." + name, by_id[id(tensor)]) for name, tensor in text_model.tensors.items()
                 if id(tensor) in by_id)
    grads.update(("vision_model." + name, g) for name, g in vision_grads.items())
    buffers = {"vision_model." + name: value for name, value in vision_buffers.items()}
    return float(loss), grads, buffers
