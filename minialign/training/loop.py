"""The training loop: batches in, updates out, with a metrics log, checkpoints and resuming.

    batches ──► loss_and_grads(params, batch) ──► (loss, grads, buffers)
                     clip_grad_norm(grads, max_norm)           global L2 norm, scaled in place
                     AdamW.step(params, grads, lr_at(step))    params updated in place
                     clamp_temperature(params)                 keep 1/temperature <= 100
                     params[name] <- buffers[name]             batchnorm running statistics
                ──► one JSON line in the metrics log, the progress bar, eval and checkpoint every K steps
    Ctrl-C  ──► checkpoint of the last finished step, then ``TrainingInterrupted`` (a KeyboardInterrupt)

Everything here works on a flat ``{name: float32 array}`` dict and a generic ``loss_and_grads``
callable, so it is tested on a toy problem whose gradient is known (``tests/test_train.py``);
``recipe.run_training`` wires it to ALIGN's gradient (``gradients.py``) and the synthetic data.
The one ALIGN parameter it knows by name is the contrastive temperature.

Decisions
---------
- Temperature: ALIGN learns it directly (``logits = cos / temperature``, transformers initialises
  it at ``temperature_init_value = 1.0``). After every step it is clamped to
  ``TEMPERATURE_RANGE = (0.01, 1.0)``. 0.01 is CLIP's cap on its logit scale (100): below it the
  softmax over a batch is nearly a hard max and one noisy caption gives huge gradients. 1.0 is
  the initial value: above it logits in [-1, 1] shrink further and the loss cannot tell pairs
  apart, so a larger temperature is never useful. Adam moves every parameter by about lr per
  step whatever its scale, which for a temperature of 0.07 and lr 3e-3 is 4% a step: in the
  first, noisy steps it climbed to 0.3 and flattened the logits. Its learning rate is therefore
  0.1x the others' (``LR_SCALE``); CLIP avoids the problem by learning log(1/temperature).
- Data order (``ShuffledBatches``): a fresh permutation per epoch from one NumPy generator; the
  incomplete last batch of an epoch is dropped so every batch has the same size.
- Ctrl-C: the loop saves the last *finished* step and raises ``TrainingInterrupted``, so resuming
  stays bit-identical. A step is finished once its update is in place; the update itself (AdamW
  on every tensor, the clamp, the buffers) runs with Ctrl-C held back until its end
  (``_interrupts_held``), so an interrupt never leaves the weights half-updated. The data state
  saved is the one recorded at the end of that step: the next step's ``next(batches)`` has already
  moved the position on, perhaps into a new epoch. An interrupt during the evaluation or the log
  line of a step still counts the step as finished; its log line is written (without "eval").


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

import contextlib
import glob
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checkpoint import CheckpointError, read_safetensors, write_safetensors
from ..jsonfile import read_json_object
from ..progress import progress as progress_bar
from .optim import AdamW, clip_grad_norm, lr_at

Batch = dict[str, np.ndarray]  # every value has the batch on axis 0
LossAndGrads = Callable[[dict[str, np.ndarray], Batch], tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]]

TEMPERATURE_RANGE = (0.01, 1.0)  # see "Temperature" above
LR_SCALE = {"temperature": 0.1}  # see "Temperature" above
LOG_KEYS = ("step", "loss", "lr", "grad_norm", "temperature", "examples_per_s", "elapsed_s")  # + "eval" when run

CHECKPOINT_FORMAT = "minialign-train-checkpoint"
STATE_FILE = "trainer_state.json"


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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``train_loop``, raised after the loop saved what it could.

    step: the updates finished (``start_step`` when none finished in this call).
    checkpoint_dir: the directory holding a checkpoint of ``step``, or None when none was saved
        (no ``checkpoint_dir`` was given, or no step finished since ``start_step``).
    str(): one line for the user: what was saved, and where.
    """

    def __init__(self, message: str, *, step: int, checkpoint_dir: str | None):
        super().__init__(message)
        self.step, self.checkpoint_dir = step, checkpoint_dir


@contextlib.contextmanager
def _interrupts_held():
    """Ctrl-C inside the block takes effect when the block ends, not in the middle of it.

    Only where Python delivers SIGINT (the main thread) to a Python handler (usually
    ``signal.default_int_handler``, which raises KeyboardInterrupt); elsewhere the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread() or not callable(signal.getsignal(signal.SIGINT)):
        yield
        return
    received = []
    handler = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
    if received:
        handler(signal.SIGINT, received[0])  # the signal, delivered now


def _data_state(batches: Iterator[Batch], step: int) -> tuple[dict | None, int]:
    """(rng_state, data_position) for ``save_checkpoint``: a ``ShuffledBatches``' place, else (None, step)."""
    return (batches.rng_state, batches.position) if isinstance(batches, ShuffledBatches) else (None, step)


def _append_line(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Opened per line: a crash loses nothing, and the cost is nil next to a step."""
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def _batch_size(batch: Batch) -> int:
    return len(next(iter(batch.values())))


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

    Ctrl-C (KeyboardInterrupt): the last finished step is checkpointed (when there is a
    ``checkpoint_dir`` and a step finished in this call), its log line written, and
    ``TrainingInterrupted`` raised; see "Ctrl-C" above.

    The params given are copied, never modified.
    """
    optimizer = optimizer if optimizer is not None else AdamW(weight_decay=weight_decay, lr_scale=LR_SCALE)
    if optimizer.step_count != start_step:
        raise ValueError(f"the optimizer has made {optimizer.step_count} steps but start_step is {start_step}")
    params = {name: np.array(a) for name, a in params.items()}
    history: list[dict[str, Any]] = []
    bar = None  # made at the first batch, when the batch size is known: the bar counts examples
    done, data_state = start_step, _data_state(batches, start_step)  # the last finished step, the data after it
    saved = None  # the step of the last checkpoint written by this call
    unlogged = None  # the record of step `done` until its log line is written
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
            with _interrupts_held():  # all of the update or none of it
                optimizer.step(params, grads, step_lr)
                clamp_temperature(params)
                for name, value in buffers.items():
                    np.copyto(params[name], value)
                done, data_state = step, _data_state(batches, step)
            n = _batch_size(batch)
            record = unlogged = {
                "step": step, "loss": float(loss), "lr": step_lr, "grad_norm": grad_norm,
                "temperature": float(params["temperature"]) if "temperature" in params else None,
                "examples_per_s": n / (time.perf_counter() - tick),
                "elapsed_s": time.perf_counter() - start,
            }
            if eval_fn is not None and ((eval_every and step % eval_every == 0) or step == steps):
                record["eval"] = eval_fn(params)
            history.append(record)
            with _interrupts_held():  # the line, once
                if log_path is not None:
                    _append_line(log_path, record)
                unlogged = None
            if checkpoint_dir is not None and ((checkpoint_every and step % checkpoint_every == 0) or step == steps):
                save_checkpoint(checkpoint_dir, params, optimizer, step, *data_state)
                saved = step
            if bar is None:
                bar = progress_bar((steps - start_step) * n, "training", unit="ex", enabled=progress)
            postfix = {"loss": f"{loss:.4f}", "ex/s": f"{record['examples_per_s']:.1f}"}
            if record["temperature"] is not None:
                postfix["temp"] = f"{record['temperature']:.4f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(n)
    except KeyboardInterrupt:
        if unlogged is not None and log_path is not None:
            _append_line(log_path, unlogged)
        if checkpoint_dir is not None and saved != done and done > start_step:
            save_checkpoint(checkpoint_dir, params, optimizer, done, *data_state)
            saved = done
        if saved == done:
            where = os.fspath(checkpoint_dir)
            message = f"checkpoint saved at step {done} of {steps} in {where}"
        else:
            where = None
            message = (f"step {done + 1} of {steps} did not finish, nothing saved" if done == start_step else
                       f"stopped after step {done} of {steps}, nothing saved (no checkpoint_dir)")
        raise TrainingInterrupted(message, step=done, checkpoint_dir=where) from None
    finally:
        if bar is not None:
            bar.close()
    return params, history
