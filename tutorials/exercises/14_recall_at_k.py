"""Exercise 14: recall@K for retrieval, both ways.

How a retrieval model is scored: does the right image come up in the first K results for a
caption, and does some caption of an image come up in its first K? Write ``recall_at_k`` below,
then check it from the repository root:

    minialign exercise check 14

Read first: docs/retrieval.md, "Recall@K".
"""

import numpy as np


def recall_at_k(scores: np.ndarray, text_to_image: np.ndarray, k: int) -> tuple[float, float]:
    # [T, I] float, [T] int, int -> (float, float)
    """CLIP_benchmark's recall@k from a caption-by-image score matrix.

    scores[t, i] is the similarity of caption t and image i; text_to_image[t] is the image caption
    t describes (an image may have several captions; every image has at least one). Ranks are
    0-based: order a query's candidates by score, highest first, equal scores by index, lower
    first; a candidate is in the top k when its rank is < k (every candidate, when k is larger
    than their number).

        image_retrieval_recall = fraction of captions t whose image text_to_image[t] is in the
                                 top k of row scores[t, :]
        text_retrieval_recall  = fraction of images i with ANY of their captions in the top k
                                 of column scores[:, i]

    Returns (image_retrieval_recall, text_retrieval_recall).
    """
    raise NotImplementedError("exercise 14: write recall_at_k")
