"""Reference models from transformers with random but non-trivial weights.

transformers initialises LayerNorm to weight 1 / bias 0 and batchnorm to mean 0 / var 1; a bug
that swaps weight and bias, drops a normalisation or misreads eps is invisible with those
values. Every parameter and buffer that carries state is therefore redrawn here.
"""

from __future__ import annotations

import numpy as np


def randomize_(model, seed: int = 0, scale: float = 0.5):
    """Redraw every parameter of a torch model in place and put it in eval mode.

    Weights ~ N(0, scale^2 / fan_in)-ish (so activations stay O(1) through deep stacks), norm
    weights ~ 1 + N(0, 0.2^2), biases ~ N(0, 0.1^2); batchnorm running stats random, var > 0.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or name.endswith(("bn.weight", "_bn.weight")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(scale * torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5 * 2)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):  # a step counter; must survive a round trip
                b.fill_(1000 + seed)
    return model.eval()


def text_model(seed: int = 0, **config):
    """A transformers AlignTextModel with the given config fields and random weights."""
    from transformers import AlignTextConfig, AlignTextModel

    model = AlignTextModel(AlignTextConfig(**config))
    model.config._attn_implementation = "eager"  # the reference attention; also returns probs
    return randomize_(model, seed)


# A small English WordPiece vocabulary: the special tokens, whole words for common captions, and
# every lower-case letter and digit on its own and as a "##" continuation, so that any ASCII
# word tokenizes (into several pieces when it is not listed).
CAPTION_WORDS = (
    "a an the of on in with and photo picture image this is red green blue yellow black white "
    "small large big dog cat car bird tree house man woman child ball circle square triangle star "
    "sitting running standing street beach field park near next to . , !"
).split()


def english_vocab() -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return specials + list(dict.fromkeys(CAPTION_WORDS + list(letters) + ["##" + c for c in letters]))


def align_checkpoint(directory, *, seed: int = 0, temperature: float = 0.07, text=None, vision=None,
                     projection_dim: int = 640):
    """Write a complete hub-layout ALIGN directory with random non-trivial weights.

    config.json + model.safetensors from transformers' AlignModel, vocab.txt + tokenizer_config.json
    and align-base's preprocessor_config.json. ``text`` / ``vision`` are config overrides (the
    vocabulary size is set to the vocabulary's). Returns the transformers model (eval mode).
    """
    import json
    import os

    import torch
    from transformers import AlignConfig, AlignModel

    vocab = english_vocab()
    config = AlignConfig(text_config={**(text or {}), "vocab_size": len(vocab)}, vision_config=vision or {},
                         projection_dim=projection_dim)
    model = randomize_(AlignModel(config), seed=seed)
    with torch.no_grad():
        model.temperature.fill_(temperature)
    model.save_pretrained(directory)
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(vocab) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64}, fh)
    from minialign import EfficientNetImageProcessor

    EfficientNetImageProcessor.align_base().save_pretrained(directory)
    return model


def tiny_align_checkpoint(directory, *, seed: int = 2):
    """The smallest ALIGN the command-line tests run end to end: a 1-layer BERT of width 16 and a
    width-0.1 EfficientNet, 32-d embeddings, temperature 0.05 (sharp enough for ranked scores)."""
    return align_checkpoint(
        directory, seed=seed, temperature=0.05, projection_dim=32,
        text=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24),
        vision=dict(width_coefficient=0.1, depth_coefficient=0.2, hidden_dim=32),
    )
