"""The optimiser and its schedule, on a flat ``{name: float32 array}`` dict: AdamW, the
learning-rate schedule and gradient clipping. Nothing here knows about ALIGN.

Decisions
---------
- Weight decay (``no_decay``): none on arrays with fewer than 2 dimensions -- biases, LayerNorm
  and BatchNorm scales and shifts -- nor on the scalar ``temperature``. Decay pulls a weight
  towards 0; for a matrix or a conv kernel that limits its scale, which the next normalisation
  undoes anyway, but for a LayerNorm scale or the temperature 0 is a bad value, not a neutral
  one. Embedding tables (2-D) are decayed, as in nanoGPT. The rule is nanoGPT's ``dim >= 2``.
- Schedule (``lr_at``): linear warmup from 0, then a half cosine down to ``final_fraction`` of
  the peak at the last step.
- Clipping (``clip_grad_norm``): torch's ``clip_grad_norm_``: one L2 norm over every gradient,
  all scaled by ``max_norm / (norm + 1e-6)`` when that is below 1. A non-finite loss or norm
  stops the loop with ``FloatingPointError`` instead of writing NaN into every weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ..checkpoint import CheckpointError

# ----------------------------------------------------------------------------------------------
# the optimiser
# ----------------------------------------------------------------------------------------------


def no_decay(name: str, array: np.ndarray) -> bool:
    """True for parameters that get no weight decay: biases and norm scales (< 2 dims), the temperature."""
    return array.ndim < 2 or name == "temperature"


class AdamW:
    """AdamW (Loshchilov & Hutter 2019, "Decoupled weight decay regularization"), as torch.optim.AdamW.

    At step t = 1, 2, ... with learning rate lr, for every parameter p with gradient g:

        p <- p * (1 - lr * weight_decay)                  decoupled decay (skipped where no_decay(name, p))
        m <- beta1 * m + (1 - beta1) * g                  first moment, m_0 = 0
        v <- beta2 * v + (1 - beta2) * g^2                second moment, v_0 = 0
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The decay is applied to p directly, not added to g (which Adam would rescale per coordinate):
    that is the "decoupled" of AdamW. Parameters are updated in place and must be writable float32
    arrays; only names present in ``grads`` are touched. Moments are created (zero) the first time
    a name is seen.
    """

    def __init__(self, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01,
                 no_decay: Callable[[str, np.ndarray], bool] = no_decay, lr_scale: Mapping[str, float] | None = None):
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1 and eps > 0 and weight_decay >= 0):
            raise ValueError(f"AdamW: need 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0; got beta1={beta1}, "
                             f"beta2={beta2}, eps={eps}, weight_decay={weight_decay}")
        self.beta1, self.beta2, self.eps, self.weight_decay = float(beta1), float(beta2), float(eps), float(weight_decay)
        self.no_decay = no_decay
        self.lr_scale = dict(lr_scale or {})  # name -> multiplier of lr for that parameter (default 1)
        self.step_count = 0
        self.exp_avg: dict[str, np.ndarray] = {}  # m
        self.exp_avg_sq: dict[str, np.ndarray] = {}  # v

    def hyperparameters(self) -> dict[str, float]:
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps, "weight_decay": self.weight_decay,
                "lr_scale": self.lr_scale}

    def step(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray], lr: float) -> None:
        self.step_count += 1
        t = self.step_count
        step_size = lr / (1 - self.beta1**t)  # the bias corrections of m and v
        bias_correction2_sqrt = math.sqrt(1 - self.beta2**t)
        for name, g in grads.items():
            p = params[name]
            if p.dtype != np.float32 or not p.flags.writeable:
                raise TypeError(f"AdamW: parameter {name!r} must be a writable float32 array, "
                                f"got {p.dtype}{'' if p.flags.writeable else ' (read-only)'}")
            if g.shape != p.shape:
                raise ValueError(f"AdamW: gradient of {name!r} has shape {g.shape}, the parameter {p.shape}")
            g = np.asarray(g, dtype=np.float32)
            if name not in self.exp_avg:
                self.exp_avg[name] = np.zeros_like(p)
                self.exp_avg_sq[name] = np.zeros_like(p)
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            scale = self.lr_scale.get(name, 1.0)
            if self.weight_decay and not self.no_decay(name, p):
                p *= np.float32(1 - lr * scale * self.weight_decay)
            m += np.float32(1 - self.beta1) * (g - m)  # = beta1 * m + (1 - beta1) * g (torch's lerp)
            v *= np.float32(self.beta2)
            v += np.float32(1 - self.beta2) * g * g
            denom = np.sqrt(v) / np.float32(bias_correction2_sqrt) + np.float32(self.eps)
            p -= np.float32(step_size * scale) * m / denom

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays, safetensors-ready: "step" (int64 scalar), "exp_avg.<name>", "exp_avg_sq.<name>"."""
        state = {"step": np.array(self.step_count, dtype=np.int64)}
        state.update({f"exp_avg.{name}": m for name, m in self.exp_avg.items()})
        state.update({f"exp_avg_sq.{name}": v for name, v in self.exp_avg_sq.items()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """The inverse of ``state_dict`` (arrays are copied: loaded ones may be read-only memory maps)."""
        self.step_count = int(state["step"])
        self.exp_avg = {k[len("exp_avg."):]: np.array(a, dtype=np.float32) for k, a in state.items()
                        if k.startswith("exp_avg.")}
        self.exp_avg_sq = {k[len("exp_avg_sq."):]: np.array(a, dtype=np.float32) for k, a in state.items()
                           if k.startswith("exp_avg_sq.")}
        if self.exp_avg.keys() != self.exp_avg_sq.keys():
            raise CheckpointError("optimizer state: exp_avg and exp_avg_sq name different parameters")


# ----------------------------------------------------------------------------------------------
# schedule and clipping
# ----------------------------------------------------------------------------------------------


def lr_at(step: int, *, peak: float, warmup: int, total: int, final_fraction: float = 0.0) -> float:
    """The learning rate of the ``step``-th update (1-based): linear warmup, then cosine decay.

        step <= warmup           peak * step / warmup                     (0 at step 0, peak at step = warmup)
        warmup < step <= total   final + (peak - final) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2
        step > total             final                                    where final = final_fraction * peak

    Half-way through the decay the rate is (peak + final) / 2; the last update (step = total) uses
    ``final``. With warmup = 0 the first update already decays a little from peak.
    """
    if not (total >= 1 and 0 <= warmup <= total):
        raise ValueError(f"lr_at: need total >= 1 and 0 <= warmup <= total, got warmup={warmup}, total={total}")
    final = final_fraction * peak
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    if step >= total:
        return final
    progress = (step - warmup) / (total - warmup)  # (0, 1)
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient in place so their global L2 norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: norm = sqrt(sum of every squared entry of every
    gradient); when ``max_norm / (norm + 1e-6) < 1`` every gradient is multiplied by it. A
    non-finite norm is returned as is, with the gradients untouched.
    """
    total = math.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads.values()))
    scale = max_norm / (total + 1e-6)
    if math.isfinite(total) and scale < 1:
        for g in grads.values():
            g *= np.float32(scale)
    return total
