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
    return model.eval()


def text_model(seed: int = 0, **config):
    """A transformers AlignTextModel with the given config fields and random weights."""
    from transformers import AlignTextConfig, AlignTextModel

    model = AlignTextModel(AlignTextConfig(**config))
    model.config._attn_implementation = "eager"  # the reference attention; also returns probs
    return randomize_(model, seed)
