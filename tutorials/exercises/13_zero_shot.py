"""Exercise 13: a zero-shot classifier with a prompt ensemble.

ALIGN classifies an image against label names it was never trained on: each label becomes a few
sentences ("a photo of a {label}.", "a drawing of a {label}.", ...), the text tower embeds them,
and the image is scored against every label. Write ``zero_shot_probs`` below, then check it from
the repository root:

    minialign exercise check 13

Read first: docs/zero-shot.md, "What the pipeline computes" and "Prompt ensembles".
"""

import numpy as np


def zero_shot_probs(image_embeds: np.ndarray, template_embeds: np.ndarray, temperature: float) -> np.ndarray:
    # [B, D], [L, K, D], float -> [B, L]
    """The probability of each of L labels for each of B images.

    template_embeds[l, k] is the text embedding of label l written with template k (not
    normalised). With normalise(u) = u / ||u|| along the last axis:

        c_l     = normalise(mean over k of normalise(template_embeds[l, k]))       [L, D]
        v_b     = normalise(image_embeds[b])                                        [B, D]
        probs_b = softmax over l of  <v_b, c_l> / temperature                       [B, L]
    """
    raise NotImplementedError("exercise 13: write zero_shot_probs")
