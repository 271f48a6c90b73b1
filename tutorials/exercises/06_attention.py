"""Exercise 06: masked scaled-dot-product attention.

The heart of every BERT layer: each query mixes the values of the keys it matches, padded keys
excluded. Write ``attention`` below, then check it from the repository root:

    minialign exercise check 06

Read first: docs/text-tower.md, "Attention with an additive mask bias".
"""

import numpy as np


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    # [B, h, T, d], [B, h, S, d], [B, h, S, d], [B, S] of {0, 1} -> [B, h, T, d]
    """For every sequence b and head: scores of the T queries against the S keys, a softmax over
    the keys with the padded ones masked, then the weighted sum of the values:

        scores = q k^T / sqrt(d) + bias                      [B, h, T, S]
        bias[b, s] = 0 where attention_mask[b, s] == 1 (a real token),
                     np.finfo(np.float32).min where it is 0 (padding)
        P   = softmax(scores) over the last axis (the keys)   [B, h, T, S]
        out = P v                                             [B, h, T, d]

    Every sequence has at least one real token. (Subtract each row's max before the exp.)
    """
    raise NotImplementedError("exercise 06: write attention")
