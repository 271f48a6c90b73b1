"""Exercise 07: one BERT layer.

The text tower is a stack of these. Build one from the ops (exercises 03, 04 and 06 wrote three
of them; the project's versions are imported below), then check it from the repository root:

    minialign exercise check 07

Read first: docs/text-tower.md, "The encoder layer: post-norm" (tutorials/02_one_bert_layer.py
does the same on the embedded model; try without it first).
"""

import numpy as np

from minialign.backends.reference import gelu, layer_norm, linear, softmax


def bert_layer(x: np.ndarray, attention_mask: np.ndarray, params: dict, num_heads: int, eps: float) -> np.ndarray:
    # [B, T, H], [B, T] of {0, 1}, {name: array}, int, float -> [B, T, H]
    """One post-norm encoder layer, as transformers' BertLayer computes it (no dropout):

        q, k, v = linear(x, W, b) for "attention.self.query", ".key", ".value"      [B, T, H]
        split the heads: [B, T, H] -> [B, T, heads, d] -> [B, heads, T, d], d = H / heads
        context = softmax(q k^T / sqrt(d) + mask bias) v     per head (exercise 06)
        merge the heads: [B, heads, T, d] -> [B, T, heads, d] -> [B, T, H]
        a   = LayerNorm(linear(context, "attention.output.dense") + x)     "attention.output.LayerNorm"
        h   = gelu(linear(a, "intermediate.dense"))                         [B, T, I]
        out = LayerNorm(linear(h, "output.dense") + a)                       "output.LayerNorm"

    ``params`` holds the layer's weights by transformers' names, without the "encoder.layer.N."
    prefix: params["attention.self.query.weight"] is [H, H] (stored [out, in]: linear computes
    x W^T + b), params["attention.self.query.bias"] is [H], and so on; "intermediate.dense" is
    [I, H], "output.dense" [H, I], and the two LayerNorms have a "weight" and a "bias" of [H].
    The mask bias is 0 for a real token (mask 1) and np.finfo(np.float32).min for padding.
    """
    B, T, H = x.shape
    d = H // num_heads

    def dense(name, y):
        return linear(y, params[name + ".weight"], params[name + ".bias"])

    def norm(name, y):
        return layer_norm(y, params[name + ".weight"], params[name + ".bias"], eps)

    def split_heads(y):  # [B, T, H] -> [B, heads, T, d]
        return y.reshape(B, T, num_heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split_heads(dense(f"attention.self.{name}", x)) for name in ("query", "key", "value"))
    bias = np.where(attention_mask == 1, 0.0, np.finfo(np.float32).min).astype(np.float32)
    probs = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias[:, None, None, :])  # [B, heads, T, T]
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H)  # heads merged back
    a = norm("attention.output.LayerNorm", dense("attention.output.dense", context) + x)
    h = gelu(dense("intermediate.dense", a))
    return norm("output.LayerNorm", dense("output.dense", h) + a)
