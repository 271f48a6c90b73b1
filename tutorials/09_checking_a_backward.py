# %% [markdown]
# # 9. Checking a backward pass by finite differences
#
# minialign trains with backward passes written by hand (`minialign/training/backward.py`); the
# derivations are on docs/backprop.md. A derivation can be wrong in ways that still train a
# little, so each one is checked against numbers that need no derivation at all: nudge one
# input, run the forward again, see how the loss moves. This tutorial does that for LayerNorm,
# then breaks the derivation on purpose twice and looks at the error each mistake leaves.
#
# LayerNorm over the last axis, with $\hat x = (x - \mu) / \sigma$ and $\sigma = \sqrt{\mathrm{var}(x) + \epsilon}$:
#
# $$y = \gamma \odot \hat x + \beta, \qquad
#   \frac{\partial L}{\partial x} = \frac{1}{\sigma}\Big(g - \overline{g} - \hat x\,\overline{g \hat x}\Big), \quad g = \gamma \odot \frac{\partial L}{\partial y}$$
#
# where a bar is the mean over the normalised axis. The three terms are the three ways $x$
# reaches $y$: directly, through the mean, and through the variance.

# %%
import numpy as np

from minialign.training import backward as bw

rng = np.random.default_rng(0)
N, H, EPS = 4, 8, 1e-5
x = rng.standard_normal((N, H))  # float64 here: the finite differences need the precision
gamma = 1 + 0.1 * rng.standard_normal(H)
beta = 0.1 * rng.standard_normal(H)
dy = rng.standard_normal((N, H))  # the upstream gradient dL/dy


def loss(x, gamma, beta):
    """A scalar whose gradient with respect to y is exactly dy: L = sum(y * dy)."""
    y, _ = bw.layer_norm_forward(x, gamma, beta, EPS)
    return float(np.sum(y * dy))


_, cache = bw.layer_norm_forward(x, gamma, beta, EPS)
dx, dgamma, dbeta = bw.layer_norm_backward(dy, cache)
print("dx", dx.shape, "dgamma", dgamma.shape, "dbeta", dbeta.shape)

# %% [markdown]
# The central difference $\big(L(x + h e_i) - L(x - h e_i)\big) / 2h$ estimates
# $\partial L / \partial x_i$ with an error of order $h^2$ (the $h^2$ term of the Taylor series
# cancels between the two sides), one pair of forward passes per entry. Compare with the
# analytic gradient by the relative error $\max|a - n| / \max|n|$.


# %%
def numeric_grad(f, array, h=1e-5):
    """dL/d(array) entry by entry, by central differences (array is modified and restored)."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        keep = array[i]
        array[i] = keep + h
        up = f()
        array[i] = keep - h
        down = f()
        array[i] = keep
        grad[i] = (up - down) / (2 * h)
    return grad


def rel_error(analytic, numeric):
    return float(np.max(np.abs(analytic - numeric)) / np.max(np.abs(numeric)))


numeric = {
    "dx": numeric_grad(lambda: loss(x, gamma, beta), x),
    "dgamma": numeric_grad(lambda: loss(x, gamma, beta), gamma),
    "dbeta": numeric_grad(lambda: loss(x, gamma, beta), beta),
}
for name, analytic in [("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)]:
    print(f"{name:7} relative error {rel_error(analytic, numeric[name]):.1e}")
assert all(rel_error(a, numeric[n]) < 1e-7 for n, a in [("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)])

# %% [markdown]
# Agreement to about $10^{-11}$: float64 rounding in the differences, nothing else. Now two
# derivations a student might write. The first forgets that every $x_i$ moves the mean
# (drops $-\overline{g}$); the second forgets that it moves the variance (drops
# $-\hat x\,\overline{g\hat x}$).

# %%
x_hat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + EPS)
rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + EPS)
g = dy * gamma
wrong = {
    "no mean path": rstd * (g - x_hat * np.mean(g * x_hat, -1, keepdims=True)),
    "no variance path": rstd * (g - np.mean(g, -1, keepdims=True)),
}
for name, candidate in wrong.items():
    print(f"{name:17} relative error {rel_error(candidate, numeric['dx']):.2f}")
    assert rel_error(candidate, numeric["dx"]) > 1e-2

# %% [markdown]
# A wrong path is not a rounding error: the relative error is of order one, far above the
# $10^{-11}$ of the right formula, so the check cannot miss it. Each mistake also breaks an
# invariant you can test without finite differences. LayerNorm's output does not change when
# the same number is added to a whole row of $x$, and (up to $\epsilon$) not when a row is
# scaled, so the true $dx$ is orthogonal to both directions: each row of $dx$ sums to 0, and so
# does each row of $dx \odot \hat x$. Each wrong derivation breaks one of the two.

# %%
print("per row:            sum(dx)                  sum(dx * x_hat)")
for name, candidate in [("correct", dx), *wrong.items()]:
    shift, scale = candidate.sum(-1), (candidate * x_hat).sum(-1)
    print(f"{name:17} {np.array2string(np.abs(shift), precision=3, suppress_small=True):24} "
          f"{np.array2string(np.abs(scale), precision=3, suppress_small=True)}")

# %% [markdown]
# In float32, what training runs in, the same check needs care with $h$: too small and the
# difference $L(x + h) - L(x - h)$ drowns in rounding (about $10^{-7} L / h$), too large and the
# $h^2$ truncation term shows. The error is smallest in between; `tests/test_backward.py` avoids
# the question by comparing with torch's autograd instead, at float32 tolerances.

# %%
for dtype in (np.float64, np.float32):
    xs, gs, bs = x.astype(dtype), gamma.astype(dtype), beta.astype(dtype)
    _, c = bw.layer_norm_forward(xs, gs, bs, EPS)
    analytic = bw.layer_norm_backward(dy.astype(dtype), c)[0]
    errors = []
    for h in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6):
        f = lambda: float(np.sum(bw.layer_norm_forward(xs, gs, bs, EPS)[0].astype(np.float64) * dy))  # noqa: E731
        errors.append(f"h={h:g}: {rel_error(analytic, numeric_grad(f, xs, dtype(h))):.0e}")
    print(np.dtype(dtype).name, " ".join(errors))
