"""Exercise 12: the gradient of the contrastive loss.

Training starts its backward pass here: how the loss of exercise 11 changes with each logit.
Derive it, write ``contrastive_loss_backward`` below, then check it from the repository root:

    minialign exercise check 12

The checker compares with minialign's hand-written backward and with torch's autograd. Read
first: docs/loss.md, "Both directions, averaged", and docs/training.md, "Backward passes,
llm.c style".
"""

import numpy as np


def contrastive_loss_backward(logits_per_text: np.ndarray) -> np.ndarray:  # [N, N] -> [N, N]
    """dL/dZ for L = (CE(Z) + CE(Z^T)) / 2, Z = logits_per_text (exercise 11, label smoothing 0.1).

    One direction first: for CE(Z) = mean over rows n of -sum_c q[n, c] log p[n, c], with
    p = softmax of each row of Z and the smoothed target q = 0.9 * [c == n] + 0.1 / N (each row
    of q sums to 1),

        dCE(Z)/dZ = (p - q) / N

    Then the image direction is the same function of Z^T: its gradient with respect to Z^T must be
    transposed back. And L averages the two.
    """
    raise NotImplementedError("exercise 12: write contrastive_loss_backward")
