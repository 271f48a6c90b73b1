# %% [markdown]
# # 2. One BERT layer by hand
#
# The text tower is a stack of post-norm transformer layers. This tutorial computes one of them
# with nothing but NumPy matrix products, from the embedded model's weights, and checks the
# result against `AlignTextModel.encoder_layer` (minialign/text_model.py). See
# docs/text-tower.md for the walkthrough.

# %%
import numpy as np

from minialign import AlignModel
from minialign.pipeline import default_model_dir
from minialign.tokenizer import BertTokenizer

model = AlignModel.from_pretrained(default_model_dir())
text, p = model.text_model, model.text_model.params
tokenizer = BertTokenizer.from_pretrained(default_model_dir())
batch = tokenizer(["a small red circle", "blue star"], padding="longest")
ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
x = text.embeddings(ids, np.zeros_like(ids))  # [B, T, H]: the input of layer 0
B, T, H = x.shape
heads = text.config.num_attention_heads
d = H // heads
print(f"B={B} texts, T={T} tokens, H={H} = {heads} heads x {d}")

# %% [markdown]
# Self-attention: project to queries, keys and values, split H into heads, score every query
# against every key, mask the padding, softmax, mix the values, merge the heads.

# %%
def dense(x, name):  # x W^T + b, the weight stored [out, in] as in torch
    return x @ p[f"encoder.layer.0.{name}.weight"].T + p[f"encoder.layer.0.{name}.bias"]


def split(y):  # [B, T, H] -> [B, heads, T, d]
    return y.reshape(B, T, heads, d).transpose(0, 2, 1, 3)


q, k, v = (split(dense(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)  # [B, heads, T, T]
scores = np.where(mask[:, None, None, :] == 1, scores, -np.inf)  # padded keys: weight 0
probs = np.exp(scores - scores.max(-1, keepdims=True))
probs /= probs.sum(-1, keepdims=True)
context = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
print("attention of [CLS] in text 1, head 0:", np.round(probs[1, 0, 0], 2))

# %% [markdown]
# Then the residual + LayerNorm, the feed-forward network with GELU, and another
# residual + LayerNorm (post-norm: the normalisation comes after each residual add).

# %%
from math import erf, sqrt


def layer_norm(x, name, eps=text.config.layer_norm_eps):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p[f"encoder.layer.0.{name}.weight"] + p[f"encoder.layer.0.{name}.bias"]


gelu = np.vectorize(lambda z: 0.5 * z * (1 + erf(z / sqrt(2))))  # slow but plain
a = layer_norm(dense(context, "attention.output.dense") + x, "attention.output.LayerNorm")
out = layer_norm(dense(gelu(dense(a, "intermediate.dense")), "output.dense") + a, "output.LayerNorm")

# %%
expected, _ = text.encoder_layer(0, x, mask)
print("max difference from minialign's layer:", float(np.abs(out - expected).max()))
assert np.allclose(out, expected, atol=1e-4)
