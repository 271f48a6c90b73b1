# %% [markdown]
# # 2. One BERT layer from the reference ops
#
# The text tower is a stack of post-norm transformer layers. This tutorial builds one of them
# from the embedded model's weights with the reference ops (`minialign/backends/reference.py`:
# the plain math, one short NumPy function per op) and checks the result twice: against the
# model's own layer (`AlignTextModel.encoder_layer` in minialign/text_model.py, which runs the
# fast NumPy backend) and, when transformers is installed, against transformers' layer 0 on the
# same checkpoint. See docs/text-tower.md for the walkthrough.

# %%
import importlib.util

import numpy as np

from minialign import AlignModel
from minialign.backends import reference
from minialign.pipelines import default_model_dir
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


def w(name):  # the layer's weights, named as in the checkpoint (and in transformers)
    return p[f"encoder.layer.0.{name}.weight"], p[f"encoder.layer.0.{name}.bias"]


# %% [markdown]
# Self-attention: project to queries, keys and values (`reference.linear`: x W^T + b, the weight
# stored [out, in] as in torch), split H into heads, score every query against every key, mask
# the padding, softmax, mix the values (`reference.attention`), merge the heads.

# %%
def split(y):  # [B, T, H] -> [B, heads, T, d]
    return y.reshape(B, T, heads, d).transpose(0, 2, 1, 3)


q, k, v = (split(reference.linear(x, *w(f"attention.self.{n}"))) for n in ("query", "key", "value"))
# attention_bias: 0 for a real key, float32 min for a padded one, so that its softmax weight is 0
context, probs = reference.attention(q, k, v, reference.attention_bias(mask))  # [B, heads, T, d], [B, heads, T, T]
context = context.transpose(0, 2, 1, 3).reshape(B, T, H)  # heads merged back
print("attention of [CLS] in text 1, head 0:", np.round(probs[1, 0, 0], 2))

# %% [markdown]
# Then the residual + LayerNorm, the feed-forward network with GELU (exact, with erf:
# `reference.gelu`), and another residual + LayerNorm (post-norm: the normalisation comes after
# each residual add).

# %%
eps = text.config.layer_norm_eps
a = reference.layer_norm(reference.linear(context, *w("attention.output.dense")) + x,
                         *w("attention.output.LayerNorm"), eps)  # [B, T, H]
h = reference.gelu(reference.linear(a, *w("intermediate.dense")))  # [B, T, I]
out = reference.layer_norm(reference.linear(h, *w("output.dense")) + a, *w("output.LayerNorm"), eps)  # [B, T, H]

# %% [markdown]
# The model's own layer calls the same ops, through its backend (`text.ops`, the fast NumPy
# backend by default: one large matrix product per linear, GELU in cache-sized blocks, the
# residual add fused into the LayerNorm). Only float32 rounding may differ.

# %%
expected, _ = text.encoder_layer(0, x, mask)
print(f"max difference from minialign's layer ({text.ops.NAME} backend):", float(np.abs(out - expected).max()))
assert np.allclose(out, expected, atol=1e-4)

# %% [markdown]
# transformers' BERT layer on the same checkpoint: its hidden state after layer 0. Padding
# positions are compared too (a padded query still attends to the real keys).

# %%
if importlib.util.find_spec("transformers") is None:
    print("transformers is not installed: skipping the comparison with it (pip install -e '.[dev]')")
else:
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    theirs = transformers.AlignModel.from_pretrained(default_model_dir(), attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = theirs.text_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                   token_type_ids=torch.zeros_like(torch.from_numpy(ids)),
                                   output_hidden_states=True).hidden_states
    print("max difference from transformers' layer 0:", float(np.abs(out - hidden[1].numpy()).max()))
    assert np.allclose(out, hidden[1].numpy(), atol=1e-4)
