"""Training: AdamW, the learning-rate schedule, gradient clipping, checkpoints and the loop.

    batches ──► loss_and_grads(params, batch) ──► (loss, grads, buffers)
                     clip_grad_norm(grads, max_norm)           global L2 norm, scaled in place
                     AdamW.step(params, grads, lr_at(step))    params updated in place
                     clamp_temperature(params)                 keep 1/temperature <= 100
                     params[name] <- buffers[name]             batchnorm running statistics
                ──► one JSON line in the metrics log, the progress bar, eval and checkpoint every K steps

Everything here works on a flat ``{name: float32 array}`` dict and a generic ``loss_and_grads``
callable, so it is tested on a toy problem whose gradient is known (``tests/test_train.py``);
``run_training`` wires it to ALIGN's gradient (``minialign.training``) and the synthetic data.

Decisions
---------
- Weight decay (``no_decay``): none on arrays with fewer than 2 dimensions -- biases, LayerNorm
  and BatchNorm scales and shifts -- nor on the scalar ``temperature``. Decay pulls a weight
  towards 0; for a matrix or a conv kernel that limits its scale, which the next normalisation
  undoes anyway, but for a LayerNorm scale or the temperature 0 is a bad value, not a neutral
  one. Embedding tables (2-D) are decayed, as in nanoGPT. The rule is nanoGPT's ``dim >= 2``.
- Temperature: ALIGN learns it directly (``logits = cos / temperature``, transformers initialises
  it at ``temperature_init_value = 1.0``). After every step it is clamped to
  ``TEMPERATURE_RANGE = (0.01, 1.0)``. 0.01 is CLIP's cap on its logit scale (100): below it the
  softmax over a batch is nearly a hard max and one noisy caption gives huge gradients. 1.0 is
  the initial value: above it logits in [-1, 1] shrink further and the loss cannot tell pairs
  apart, so a larger temperature is never useful. Adam moves every parameter by about lr per
  step whatever its scale, which for a temperature of 0.07 and lr 3e-3 is 4% a step: in the
  first, noisy steps it climbed to 0.3 and flattened the logits. Its learning rate is therefore
  0.1x the others' (``LR_SCALE``); CLIP avoids the problem by learning log(1/temperature).
- Schedule (``lr_at``): linear warmup from 0, then a half cosine down to ``final_fraction`` of
  the peak at the last step.
- Clipping (``clip_grad_norm``): torch's ``clip_grad_norm_``: one L2 norm over every gradient,
  all scaled by ``max_norm / (norm + 1e-6)`` when that is below 1. A non-finite loss or norm
  stops the loop with ``FloatingPointError`` instead of writing NaN into every weight.
- Data order (``ShuffledBatches``): a fresh permutation per epoch from one NumPy generator; the
  incomplete last batch of an epoch is dropped so every batch has the same size.

Checkpoint format
-----------------
A directory written by ``save_checkpoint``::

    trainer_state.json               {"format": "minialign-train-checkpoint", "version": 1, "step": ...,
                                      "params_file": ..., "optimizer_file": ..., "optimizer": {hyperparameters},
                                      "rng_state": the data generator's bit_generator.state (JSON-able),
                                      "data_position": examples of the current epoch already used}
    params-00001200.safetensors      every entry of params (weights and batchnorm buffers), float32
    optimizer-00001200.safetensors   AdamW.state_dict(): "step" (int64 scalar), "exp_avg.<name>", "exp_avg_sq.<name>"

The weight files carry the step in their name and are written first; ``trainer_state.json`` is
then replaced atomically (``os.replace``) and names them, and only then are older files
deleted. A run killed at any moment leaves a consistent checkpoint: the old one or the new one.
Everything is stored exactly (float32 as float32, the generator state as JSON integers), so
training resumed from a checkpoint gives bit-identical weights to training without a break.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, read_safetensors, write_safetensors
from .config import read_json_object
from .retrieval import _progress

Batch = dict[str, np.ndarray]  # every value has the batch on axis 0
LossAndGrads = Callable[[dict[str, np.ndarray], Batch], tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]]

TEMPERATURE_RANGE = (0.01, 1.0)  # see "Temperature" above
LR_SCALE = {"temperature": 0.1}  # see "Temperature" above
LOG_KEYS = ("step", "loss", "lr", "grad_norm", "temperature", "examples_per_s", "elapsed_s")  # + "eval" when run

CHECKPOINT_FORMAT = "minialign-train-checkpoint"
STATE_FILE = "trainer_state.json"


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
# schedule, clipping, temperature
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


def clamp_temperature(params: dict[str, np.ndarray], bounds: tuple[float, float] = TEMPERATURE_RANGE) -> None:
    """Clamp ``params["temperature"]`` (if there is one) into ``bounds``, in place."""
    if "temperature" in params:
        np.clip(params["temperature"], *bounds, out=params["temperature"])


# ----------------------------------------------------------------------------------------------
# data order
# ----------------------------------------------------------------------------------------------


class ShuffledBatches:
    """Endless minibatches of ``n`` examples: ``make_batch(indices)`` for consecutive slices of a
    fresh random permutation of range(n) per epoch (the incomplete last slice is dropped).

    Resumable exactly: ``rng_state`` is the generator's state just *before* the current epoch's
    permutation was drawn, ``position`` how many examples of that permutation were used. Passing
    both back (as ``load_checkpoint`` returns them) redraws the same permutation and continues.
    """

    def __init__(self, n: int, batch_size: int, make_batch: Callable[[np.ndarray], Batch], *, seed=0,
                 rng_state: dict | None = None, position: int = 0):
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch size must be between 1 and the number of examples ({n}), got {batch_size}")
        self.n, self.batch_size, self.make_batch = n, batch_size, make_batch
        self.rng = np.random.default_rng(seed)
        if rng_state is not None:
            self.rng.bit_generator.state = rng_state
        self._new_epoch()
        self.position = position

    def _new_epoch(self) -> None:
        self.rng_state = self.rng.bit_generator.state
        self.order = self.rng.permutation(self.n)
        self.position = 0

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> Batch:
        if self.position + self.batch_size > self.n:
            self._new_epoch()
        indices = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.make_batch(indices)


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """What ``load_checkpoint`` gives back: everything needed to continue training exactly."""

    params: dict[str, np.ndarray]  # writable float32 copies
    optimizer: AdamW
    step: int  # updates done
    rng_state: dict | None  # ShuffledBatches.rng_state
    data_position: int  # ShuffledBatches.position


def save_checkpoint(directory: str | os.PathLike, params: Mapping[str, np.ndarray], optimizer: AdamW, step: int,
                    rng_state: dict | None = None, data_position: int = 0) -> None:
    """Write a checkpoint to ``directory`` (created if needed); see "Checkpoint format" above."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    params_file, optimizer_file = f"params-{step:08d}.safetensors", f"optimizer-{step:08d}.safetensors"
    write_safetensors(params, os.path.join(directory, params_file))
    write_safetensors(optimizer.state_dict(), os.path.join(directory, optimizer_file))
    state = {
        "format": CHECKPOINT_FORMAT, "version": 1, "step": int(step),
        "params_file": params_file, "optimizer_file": optimizer_file,
        "optimizer": {"name": "AdamW", **optimizer.hyperparameters()},
        "rng_state": rng_state, "data_position": int(data_position),
    }
    tmp = os.path.join(directory, STATE_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=1)
    os.replace(tmp, os.path.join(directory, STATE_FILE))  # the commit point
    for path in glob.glob(os.path.join(directory, "*-*.safetensors")):
        if os.path.basename(path) not in (params_file, optimizer_file):
            os.remove(path)


def load_checkpoint(directory: str | os.PathLike) -> TrainState:
    """Read a checkpoint written by ``save_checkpoint``."""
    path = os.path.join(os.fspath(directory), STATE_FILE)
    state = read_json_object(path, error=CheckpointError,
                             not_found=f"no training checkpoint in {directory} ({STATE_FILE} not found)")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a minialign training checkpoint")
    hyper = {k: state["optimizer"][k] for k in ("beta1", "beta2", "eps", "weight_decay", "lr_scale")}
    optimizer = AdamW(**hyper)
    optimizer.load_state_dict(read_safetensors(os.path.join(directory, state["optimizer_file"])))
    if optimizer.step_count != state["step"]:
        raise CheckpointError(f"{directory}: optimizer file is at step {optimizer.step_count}, "
                              f"{STATE_FILE} says {state['step']}")
    params = {name: np.array(a) for name, a in read_safetensors(os.path.join(directory, state["params_file"])).items()}
    return TrainState(params, optimizer, state["step"], state["rng_state"], state["data_position"])


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------


def _batch_size(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def _show(bar, postfix: dict[str, str]) -> None:
    """The running numbers on the progress bar: tqdm's postfix, or the plain stderr line's text."""
    if hasattr(bar, "set_postfix"):
        bar.set_postfix(postfix, refresh=False)
    else:
        bar.desc = "training " + " ".join(f"{k}={v}" for k, v in postfix.items())


def train_loop(
    params: Mapping[str, np.ndarray],
    loss_and_grads: LossAndGrads,
    batches: Iterator[Batch],
    *,
    steps: int,
    lr: float,
    warmup: int = 0,
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
    final_lr_fraction: float = 0.0,
    optimizer: AdamW | None = None,
    start_step: int = 0,
    eval_fn: Callable[[dict[str, np.ndarray]], dict[str, Any]] | None = None,
    eval_every: int | None = None,
    log_path: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Train ``params`` for updates ``start_step + 1 .. steps``; return (final params, history).

    loss_and_grads(params, batch) -> (loss, grads, buffers): grads for the trainable names (same
        shapes as the params), buffers (e.g. batchnorm running statistics) copied into params.
    batches: an iterator of batch dicts, every value with the batch on axis 0 (its length is the
        batch size in ``examples_per_s``). A ``ShuffledBatches`` also has its position saved in
        checkpoints.
    steps: the total number of updates, which the schedule ``lr_at(step, peak=lr, warmup, total=steps,
        final_fraction=final_lr_fraction)`` spans; a resumed run passes the same ``steps``.
    optimizer, start_step: to resume, ``load_checkpoint``'s optimizer and step (else a new
        ``AdamW(weight_decay=weight_decay)`` and 0).
    eval_fn(params) -> dict of results: run every ``eval_every`` steps and after the last one.
    log_path: JSON lines appended, one per step, with ``LOG_KEYS`` (temperature is null without
        such a parameter; elapsed_s counts from this call; examples_per_s is this step's batch
        over its wall time, data preparation included, eval and checkpointing not) and "eval"
        when it ran. The history holds the same dicts.
    checkpoint_dir: ``save_checkpoint`` every ``checkpoint_every`` steps and after the last one.

    The params given are copied, never modified.
    """
    optimizer = optimizer if optimizer is not None else AdamW(weight_decay=weight_decay, lr_scale=LR_SCALE)
    if optimizer.step_count != start_step:
        raise ValueError(f"the optimizer has made {optimizer.step_count} steps but start_step is {start_step}")
    params = {name: np.array(a) for name, a in params.items()}
    history: list[dict[str, Any]] = []
    bar = None  # made at the first batch, when the batch size is known: the bar counts examples
    start = time.perf_counter()
    try:
        for step in range(start_step + 1, steps + 1):
            tick = time.perf_counter()
            batch = next(batches)
            loss, grads, buffers = loss_and_grads(params, batch)
            grad_norm = clip_grad_norm(grads, math.inf if max_grad_norm is None else max_grad_norm)
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                raise FloatingPointError(f"step {step}: loss {loss}, gradient norm {grad_norm}; "
                                         "try a lower learning rate or max_grad_norm")
            step_lr = lr_at(step, peak=lr, warmup=warmup, total=steps, final_fraction=final_lr_fraction)
            optimizer.step(params, grads, step_lr)
            clamp_temperature(params)
            for name, value in buffers.items():
                np.copyto(params[name], value)
            n = _batch_size(batch)
            record = {
                "step": step, "loss": float(loss), "lr": step_lr, "grad_norm": grad_norm,
                "temperature": float(params["temperature"]) if "temperature" in params else None,
                "examples_per_s": n / (time.perf_counter() - tick),
                "elapsed_s": time.perf_counter() - start,
            }
            if eval_fn is not None and ((eval_every and step % eval_every == 0) or step == steps):
                record["eval"] = eval_fn(params)
            history.append(record)
            if log_path is not None:  # opened per line: a crash loses nothing, and the cost is nil next to a step
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(json.dumps(record) + "\n")
            if checkpoint_dir is not None and ((checkpoint_every and step % checkpoint_every == 0) or step == steps):
                data = (batches.rng_state, batches.position) if isinstance(batches, ShuffledBatches) else (None, step)
                save_checkpoint(checkpoint_dir, params, optimizer, step, *data)
            if bar is None:
                bar = _progress((steps - start_step) * n, "training", progress)
            postfix = {"loss": f"{loss:.4f}", "ex/s": f"{record['examples_per_s']:.1f}"}
            if record["temperature"] is not None:
                postfix["temp"] = f"{record['temperature']:.4f}"
            _show(bar, postfix)
            bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    return params, history


# ----------------------------------------------------------------------------------------------
# ALIGN on the synthetic dataset: `minialign train`
# ----------------------------------------------------------------------------------------------

CONFIGS = ("nano",)
IMAGE_SIZE = 48  # align-nano sees 48x48 images: 1.8x cheaper than 64x64; at 32x32 shapes were too small to learn
TRAIN_EXAMPLES = 10_000  # ~6 s to render; a batch of 128 sees each about once per 78 steps
# Training images whose one object has a colour no caption names (synthetic.unnamed_rgb), captioned
# by shape only. Without them the vision tower ties each shape to the colours it saw it in and
# names a held-out "blue circle" a purple one (docs/training.md, "Shape learned together with colour").
UNNAMED_COLOUR_FRACTION = 0.6
# AdamW's decoupled decay for `minialign train`; AdamW and train_loop keep torch's default, 0.01.
# 0.3 raised held-out accuracy for both seeds compared (docs/training.md, "Runs on the way").
WEIGHT_DECAY = 0.3
TEST_EXAMPLES = 300  # 50 per held-out class
# A cap the learner never reaches: it runs out of pairs at about 1,400 tokens on 10,000 captions.
# The WordPiece score merges rare pairs first (the digits of file names such as "photo_20200303")
# and the pieces of the most frequent words last: "red" and "circle" are among the last 200
# merges. The first cap, 1000, stopped before them, and the text tower read every colour and
# shape letter by letter ("o ##r ##a ##ng ##e c ##r ##oss").
VOCAB_SIZE = 4000
MAX_TEXT_LENGTH = 64  # tokens, [CLS] and [SEP] included (captions have at most 16 words)
ZERO_SHOT_PROMPT = "a photo of a {}."
EVAL_BATCH = 100  # images per forward pass during evaluation
CHECKPOINT_EVERY = 100
EXAMPLE_IMAGES_PER_CLASS = 1  # held-out test images saved to examples/ for `minialign classify`


def pixel_values(images: np.ndarray) -> np.ndarray:  # [B, H, W, 3] uint8 -> [B, 3, H, W] float32 in [-1, 1]
    """What ``image_processor()`` (below) gives for IMAGE_SIZE x IMAGE_SIZE images: x / 127.5 - 1, channels first."""
    from .image_processing import rescale

    return np.ascontiguousarray(rescale(images, 1 / 127.5, offset=True).transpose(0, 3, 1, 2))


def image_processor():
    """The preprocessing ``run_training`` saves with the model: resize to IMAGE_SIZE x IMAGE_SIZE (no crop), pixels to [-1, 1]."""
    from .image_processing import EfficientNetImageProcessor

    return EfficientNetImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=2, do_center_crop=False,
        rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False, include_top=False,
    )


def zero_shot_top1(model, tokenizer, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> float:
    """Top-1 accuracy of image -> text zero-shot classification with ``ZERO_SHOT_PROMPT`` per class.

    images [N, H, W, 3] uint8, labels [N] indices into ``class_names``. The predicted class is the
    argmax over classes of cos(image embedding, prompt embedding).
    """
    from .loss import l2_normalize

    prompts = tokenizer([ZERO_SHOT_PROMPT.format(c) for c in class_names], padding="longest", return_tensors="np")
    text = l2_normalize(model.get_text_features(prompts["input_ids"], prompts["attention_mask"]))  # [C, P]
    predicted = []
    for s in range(0, len(images), EVAL_BATCH):
        image = l2_normalize(model.get_image_features(pixel_values(images[s:s + EVAL_BATCH])))  # [b, P]
        predicted.append(np.argmax(image @ text.T, axis=1))
    return float(np.mean(np.concatenate(predicted) == labels))


def _check_run_args(config, steps, batch_size, lr, weight_decay, seed, eval_every, train_examples) -> None:
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r} (known: {', '.join(CONFIGS)})")
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not is_int(batch_size) or not 2 <= batch_size <= train_examples:
        raise ValueError(f"batch size must be between 2 (a contrastive loss needs negatives) and the "
                         f"number of training examples ({train_examples}), got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight decay must be a number >= 0, got {weight_decay!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if eval_every is not None and (not is_int(eval_every) or eval_every < 0):
        raise ValueError(f"eval-every must be an integer >= 0 (0: only at the end), got {eval_every!r}")


def run_training(
    out_dir: str | os.PathLike,
    *,
    config: str = "nano",
    steps: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    eval_every: int | None = 100,
    resume: bool = False,
    warmup: int | None = None,
    weight_decay: float = WEIGHT_DECAY,
    max_grad_norm: float = 1.0,
    train_examples: int = TRAIN_EXAMPLES,
    test_examples: int = TEST_EXAMPLES,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a tiny ALIGN on the synthetic dataset and save it in the hub layout into ``out_dir``.

    1. Render the training and held-out test splits (``minialign.synthetic``, IMAGE_SIZE x IMAGE_SIZE).
    2. Learn a WordPiece vocabulary from the training captions; write vocab.txt + tokenizer_config.json.
    3. Build the ``config`` model config and initialise its weights with ``seed``.
    4. Train with ``train_loop``: batches of ``batch_size`` shuffled pairs, AdamW, warmup (default
       5% of ``steps``) + cosine; zero-shot top-1 on the held-out test pairs every ``eval_every``
       steps and at the end; metrics in ``train_log.jsonl``; a checkpoint in ``checkpoint/`` every
       ``CHECKPOINT_EVERY`` steps. ``resume=True`` continues from that checkpoint (the arguments
       must be those of the first run, recorded in ``run_args.json``).
    5. Save config.json + model.safetensors, preprocessor_config.json, labels.json (all 36 class
       names) and examples/*.png (held-out test images), so ``minialign classify`` can use it.

    Returns a summary: the output directory, steps, final loss and the last evaluation.
    """
    _check_run_args(config, steps, batch_size, lr, weight_decay, seed, eval_every, train_examples)
    from PIL import Image

    from . import synthetic, training
    from .align_model import AlignModel
    from .tokenizer import BertTokenizer
    from .vocab import learn_wordpiece_vocab, write_vocab

    out_dir = os.fspath(out_dir)
    checkpoint_dir = os.path.join(out_dir, "checkpoint")
    warmup = steps // 20 if warmup is None else warmup
    run_args = {"config": config, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "warmup": warmup,
                "weight_decay": weight_decay, "max_grad_norm": max_grad_norm, "train_examples": train_examples,
                "unnamed_colour_fraction": UNNAMED_COLOUR_FRACTION}
    run_args_path = os.path.join(out_dir, "run_args.json")
    has_checkpoint = os.path.isfile(os.path.join(checkpoint_dir, STATE_FILE))
    if resume:
        if not has_checkpoint:
            raise FileNotFoundError(f"--resume: no training checkpoint in {checkpoint_dir}")
        with open(run_args_path, encoding="utf-8") as fh:
            first = json.load(fh)
        if first != run_args:
            changed = ", ".join(f"{k}: {first.get(k)!r} then, {v!r} now" for k, v in run_args.items() if first.get(k) != v)
            raise ValueError(f"--resume needs the arguments of the first run ({changed})")
    elif has_checkpoint:
        raise ValueError(f"{out_dir} already holds a training checkpoint; pass --resume or choose another --out")

    # 1-2. data and vocabulary
    train = synthetic.generate(train_examples, split="train", seed=seed, image_size=IMAGE_SIZE,
                               unnamed_colour_fraction=UNNAMED_COLOUR_FRACTION)
    test = synthetic.generate(test_examples, split="test", seed=seed, image_size=IMAGE_SIZE)
    train_images = np.stack([e.image for e in train])  # [N, 64, 64, 3] uint8
    captions = [e.caption for e in train]
    test_images, test_labels = np.stack([e.image for e in test]), np.array([e.label for e in test])
    class_names = [synthetic.class_name(shape, colour) for shape, colour in synthetic.all_classes()]
    if resume:
        tokenizer = BertTokenizer.from_pretrained(out_dir)
    else:
        tokenizer = write_vocab(learn_wordpiece_vocab(captions, VOCAB_SIZE), out_dir, model_max_length=MAX_TEXT_LENGTH)
        with open(run_args_path, "w", encoding="utf-8") as fh:
            json.dump(run_args, fh, indent=1)

    # 3. model
    model_config = training.nano_config(tokenizer.vocab_size)
    max_length = min(MAX_TEXT_LENGTH, model_config.text_config.max_position_embeddings)

    def make_batch(indices: np.ndarray) -> Batch:
        text = tokenizer([captions[i] for i in indices], padding="longest", truncation=True,
                         max_length=max_length, return_tensors="np")
        return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                "pixel_values": pixel_values(train_images[indices])}

    def loss_and_grads(params, batch):
        return training.forward_backward(params, model_config, batch["input_ids"], batch["attention_mask"],
                                         batch["pixel_values"])

    def evaluate(params) -> dict[str, float]:
        model = AlignModel(model_config, params)
        return {"zero_shot_top1": zero_shot_top1(model, tokenizer, test_images, test_labels, class_names),
                "chance": 1 / len(class_names)}

    # 4. training
    if resume:
        state = load_checkpoint(checkpoint_dir)
        params, optimizer, start_step = state.params, state.optimizer, state.step
        batches = ShuffledBatches(len(train), batch_size, make_batch, seed=[seed, 1],
                                  rng_state=state.rng_state, position=state.data_position)
    else:
        params, optimizer, start_step = training.init_params(model_config, seed), None, 0
        batches = ShuffledBatches(len(train), batch_size, make_batch, seed=[seed, 1])
    params, history = train_loop(
        params, loss_and_grads, batches, steps=steps, lr=lr, warmup=warmup, weight_decay=weight_decay,
        max_grad_norm=max_grad_norm, optimizer=optimizer, start_step=start_step,
        eval_fn=evaluate, eval_every=eval_every or None, log_path=os.path.join(out_dir, "train_log.jsonl"),
        checkpoint_dir=checkpoint_dir, checkpoint_every=CHECKPOINT_EVERY, progress=progress,
    )

    # 5. the model, in the hub layout, with what `minialign classify` needs
    # transformers' checkpoints also count the batches each batchnorm has seen (torch's
    # num_batches_tracked); write them so that transformers loads the model without a warning.
    counters = {name.replace("running_mean", "num_batches_tracked"): np.array(steps, dtype=np.int64)  # steps is the total, resumed or not
                for name in params if name.endswith("running_mean")}
    AlignModel(model_config, {**params, **counters}).save_pretrained(out_dir)
    image_processor().save_pretrained(out_dir)
    with open(os.path.join(out_dir, "labels.json"), "w", encoding="utf-8") as fh:
        json.dump(class_names, fh, indent=1)
    os.makedirs(os.path.join(out_dir, "examples"), exist_ok=True)
    saved: dict[int, int] = {}
    for e in test:
        if saved.get(e.label, 0) < EXAMPLE_IMAGES_PER_CLASS:
            saved[e.label] = saved.get(e.label, 0) + 1
            name = f"{e.class_name.replace(' ', '_')}_{saved[e.label]}.png"
            Image.fromarray(e.image).save(os.path.join(out_dir, "examples", name))
    return {
        "out_dir": out_dir,
        "steps": steps,
        "resumed_from": start_step if resume else None,
        "final_loss": history[-1]["loss"] if history else None,
        "eval": next((r["eval"] for r in reversed(history) if "eval" in r), None),
        "seconds": history[-1]["elapsed_s"] if history else 0.0,
    }
