"""Exercise 08: batchnorm folded into the convolution before it.

In inference a batchnorm is a fixed affine map per channel, so it can disappear into the
convolution that feeds it: the model does this once, when it is built. Write
``fold_batch_norm`` below, then check it from the repository root:

    minialign exercise check 08

Read first: docs/vision-tower.md, "How the code runs a block: four fused ops".
"""

import numpy as np


def fold_batch_norm(conv_weight: np.ndarray, weight: np.ndarray, bias: np.ndarray, running_mean: np.ndarray,
                    running_var: np.ndarray, eps: float):
    # [Cout, Cin, k, k], [Cout] x 4, float -> ([Cout, Cin, k, k], [Cout])
    """The weight and bias of one convolution that computes batch_norm(conv(x, conv_weight)).

    An eval-mode batchnorm maps each output channel o of the convolution as

        bn(z)[o] = (z[o] - running_mean[o]) / sqrt(running_var[o] + eps) * weight[o] + bias[o]
                 = z[o] * scale[o] + shift[o]

    with scale = weight / sqrt(running_var + eps) and shift = bias - running_mean * scale; and
    z[o] * scale[o] is the convolution with output channel o's filter multiplied by scale[o].
    Works for any conv weight [Cout, Cin/groups, k, k] (a depthwise one is [C, 1, k, k]).

    Returns (the folded conv weight, the folded bias).
    """
    scale = weight / np.sqrt(running_var + eps)  # [Cout]
    shift = bias - running_mean * scale
    return conv_weight * scale[:, None, None, None], shift
