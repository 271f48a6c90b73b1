"""Exercise 11: ALIGN's contrastive loss, with label smoothing.

N images and their N captions: every caption is scored against every image, and each should
pick its own partner, in both directions. Write ``contrastive_loss`` below, then check it from
the repository root:

    minialign exercise check 11

Read first: docs/loss.md, "From embeddings to an N x N matrix", "Cross-entropy with label
smoothing" and "Both directions, averaged".
"""

import numpy as np


def contrastive_loss(text_embeds: np.ndarray, image_embeds: np.ndarray, temperature: float):
    # [N, D], [N, D], float -> (loss, caption_loss, image_loss), three floats
    """transformers' align_loss on the pair's logits (caption i goes with image i), and its two halves:

        t, v = text_embeds and image_embeds, each row divided by its L2 norm
        Z    = t v^T / temperature                                    [N, N]: logits_per_text
        CE(Z) = mean over rows n of  -(1 - eps) log p[n, n] - eps * mean_c log p[n, c],
                p = softmax of each row of Z, eps = 0.1 (torch's label smoothing)
        caption_loss = CE(Z)          each caption picks its image among the N
        image_loss   = CE(Z^T)        each image picks its caption among the N
        loss = (caption_loss + image_loss) / 2

    (Compute log p as Z - max - log(sum(exp(Z - max))) per row, so large logits do not overflow.)
    Returns (loss, caption_loss, image_loss).
    """
    eps = 0.1
    t = text_embeds / np.linalg.norm(text_embeds, axis=-1, keepdims=True)
    v = image_embeds / np.linalg.norm(image_embeds, axis=-1, keepdims=True)
    z = t @ v.T / temperature

    def cross_entropy(logits):  # row n's target is column n
        shifted = logits - logits.max(axis=-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        nll = -np.diag(logp)
        smooth = -logp.mean(axis=-1)
        return np.mean((1 - eps) * nll + eps * smooth)

    caption_loss, image_loss = float(cross_entropy(z)), float(cross_entropy(z.T))
    return (caption_loss + image_loss) / 2, caption_loss, image_loss
