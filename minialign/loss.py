"""Similarity logits and ALIGN's contrastive loss, in NumPy.

Given a batch of N matching (image, text) pairs, both towers' embeddings are L2-normalised and
every text is scored against every image:

    logits_per_text[i, j] = <t_i, v_j> / temperature        [N_text, N_image]

Row i should put its mass on column i (its own image), and column j on row j. The loss is a
classification over the batch in both directions.

How transformers' ``align_loss`` (what minialign matches) differs from the paper's recipe:
- the paper *sums* the image-to-text and text-to-image losses; transformers takes their *mean*
  (half the loss, half the gradients -- the optimum is the same);
- the paper computes the softmax over embeddings gathered from all replicas (an effective batch
  of 16384), transformers over the local batch only;
- both use label smoothing 0.1 and a learned temperature that *divides* the cosine similarity
  (CLIP instead multiplies by a learned ``logit_scale = exp(s)``; 1/temperature plays that role).
"""

from __future__ import annotations

import numpy as np

LABEL_SMOOTHING = 0.1


def l2_normalize(x: np.ndarray) -> np.ndarray:  # [N, D] -> [N, D]
    """x / ||x||_2 along the last axis (as torch's ``x / x.norm(dim=-1, keepdim=True)``)."""
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True))


def log_softmax(x: np.ndarray) -> np.ndarray:  # [N, C] -> [N, C]
    """log(softmax(x)) = x - max - log(sum(exp(x - max))), stable for large logits."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, targets: np.ndarray, label_smoothing: float = 0.0) -> float:
    # [N, C], [N] int -> scalar
    """Mean cross-entropy with label smoothing, as ``torch.nn.functional.cross_entropy``:

        loss_n = -(1 - eps) * log p[n, y_n] - eps * mean_c log p[n, c]

    i.e. the target distribution puts 1 - eps + eps/C on the true class and eps/C elsewhere.
    """
    logp = log_softmax(logits.astype(np.float32))
    nll = -logp[np.arange(len(targets)), targets]
    smooth = -logp.mean(axis=-1)
    return float(np.mean((1 - label_smoothing) * nll + label_smoothing * smooth))


def align_loss(logits_per_text: np.ndarray) -> float:  # [N, N] -> scalar
    """transformers' ``align_loss``: label-smoothed cross-entropy over the texts' rows and over
    the images' rows (the transpose), averaged. The i-th text matches the i-th image."""
    targets = np.arange(len(logits_per_text))
    caption_loss = cross_entropy(logits_per_text, targets, LABEL_SMOOTHING)
    image_loss = cross_entropy(logits_per_text.T, targets, LABEL_SMOOTHING)
    return (caption_loss + image_loss) / 2.0
