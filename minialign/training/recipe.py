"""The ALIGN recipe behind ``minialign train``: align-nano on the synthetic alt-text dataset.

``run_training`` renders the data (``synthetic.py``), learns the vocabulary (``vocab.py``),
initialises the weights (``init_params``), and hands ``loop.train_loop`` the model's loss and
gradient (``gradients.forward_backward``) with the optimiser of ``optim.py``. The constants below
are the recipe; each says why it has its value, and ``docs/training.md`` has the runs behind them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import numpy as np

from ..checkpoint import CheckpointError
from ..config import AlignConfig, nano_config
from ..jsonfile import read_json_object
from ..validation import is_fraction, is_int
from .gradients import check_trainable, forward_backward
from .loop import STATE_FILE, Batch, ShuffledBatches, TrainingInterrupted, load_checkpoint, train_loop

CONFIGS = ("nano",)
IMAGE_SIZE = 48  # align-nano sees 48x48 images: 1.8x cheaper than 64x64; at 32x32 shapes were too small to learn
# ~20 s to render. A batch of 128 sees each about 6 times in a run: with 10,000 pairs seen 18
# times, held-out pairs fell the longer a varied recipe trained (it learned the seen pairs'
# conjunctions instead of shape and colour apart); 60,000 was undertrained in the budget
# (docs/training.md, "Drawn shapes in training").
TRAIN_EXAMPLES = 30_000
# Training images whose one object has a colour no caption names (synthetic.unnamed_rgb), captioned
# by shape only. Without them the vision tower ties each shape to the colours it saw it in and
# names a held-out "blue circle" a purple one (docs/training.md, "Shape learned together with colour").
UNNAMED_COLOUR_FRACTION = 0.6
# The share of training images drawn as people draw shapes (synthetic.generate's ``variety``: white,
# black, grey, pastel and saturated backgrounds, objects from 22% to 85% of the side drawn at 16 to
# 96 px, stretched canvases, hard edges, JPEG); the rest are the generator's plain images. With
# 1.0 the towers sat near chance for 700-900 steps and held-out pairs ended at 85%; the plain 30%
# shortens that and keeps them above 90% (docs/training.md, "Drawn shapes in training"). The
# held-out test split is always plain images, the evaluation every shipped model was scored on.
VARIETY = 0.7
# AdamW's decoupled decay for `minialign train`; AdamW and train_loop keep torch's default, 0.01.
# 0.3 raised held-out accuracy for both seeds compared (docs/training.md, "Runs on the way").
WEIGHT_DECAY = 0.3
TEST_EXAMPLES = 300  # 50 per held-out class
# Pairs per step. A step of 64 costs about half a step of 128 here, so the budget buys twice the
# steps: 2800 steps of 64 beat 1400 of 128 on every drawn-shapes column and on the held-out
# pairs, on torch and then in NumPy (docs/training-runs.md, "Drawn shapes in training").
BATCH_SIZE = 64
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

LOG_FILE = "train_log.jsonl"
# What marks a directory as holding a training run: a new run there would append to its log and
# overwrite its model, so run_training refuses it (a directory with only the vocabulary and
# run_args.json, left by a run stopped before its first step, is started afresh).
RUN_MARKERS = (LOG_FILE, "checkpoint", "model.safetensors")
# labels.json is the last file of a saved model: with it, the save finished (see run_training, step 5).
SAVED_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "labels.json")
# How a --resume mismatch names each recorded argument: as `minialign train` spells it where the
# command has the option; else as run_training does (only a Python caller sets it) or, for a
# constant of this file, as the constant.
ARG_NAMES = {"config": "--config", "steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
             "weight_decay": "--weight-decay", "unnamed_colour_fraction": "UNNAMED_COLOUR_FRACTION"}


def init_params(config: AlignConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random initial weights with the expected names and shapes, as transformers initialises them:
    linear and embedding weights ~ N(0, initializer_range^2) (0.02), biases 0, LayerNorm and
    batchnorm weight 1 / bias 0, running mean 0 / var 1, convolutions He-normal
    (N(0, 2 / fan_out), EfficientNet's choice for SiLU nets), temperature ``temperature_init_value``.
    """
    from ..align_model import AlignModel

    rng = np.random.default_rng(seed)
    std = config.text_config.initializer_range
    params = {}
    for name, shape in AlignModel.expected_shapes(config).items():
        leaf = name.rsplit(".", 1)[-1]
        if name == "temperature":
            value = np.full(shape, config.temperature_init_value)
        elif leaf in ("running_var",) or (leaf == "weight" and len(shape) == 1):  # norms' scale
            value = np.ones(shape)
        elif leaf in ("bias", "running_mean"):
            value = np.zeros(shape)
        elif len(shape) == 4:  # a convolution [Cout, Cin/groups, k, k]
            depthwise = shape[1] == 1  # each output channel is its own group: it fans out to 1 channel
            fan_out = (1 if depthwise else shape[0]) * shape[2] * shape[3]
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_out)
        else:
            value = rng.standard_normal(shape) * std
        params[name] = value.astype(np.float32)
    return params


def pixel_values(images: np.ndarray) -> np.ndarray:  # [B, H, W, 3] uint8 -> [B, 3, H, W] float32 in [-1, 1]
    """What ``image_processor()`` (below) gives for IMAGE_SIZE x IMAGE_SIZE images: x / 127.5 - 1, channels first."""
    from ..image_processing import rescale

    return np.ascontiguousarray(rescale(images, 1 / 127.5, offset=True).transpose(0, 3, 1, 2))


def image_processor():
    """The preprocessing ``run_training`` saves with the model: resize to IMAGE_SIZE x IMAGE_SIZE (no crop), pixels to [-1, 1]."""
    from ..image_processing import EfficientNetImageProcessor

    return EfficientNetImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=2, do_center_crop=False,
        rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False, include_top=False,
    )


def zero_shot_top1(model, tokenizer, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> float:
    """Top-1 accuracy of image -> text zero-shot classification with ``ZERO_SHOT_PROMPT`` per class.

    images [N, H, W, 3] uint8, labels [N] indices into ``class_names``. The predicted class is the
    argmax over classes of cos(image embedding, prompt embedding).
    """
    from ..loss import l2_normalize

    prompts = tokenizer([ZERO_SHOT_PROMPT.format(c) for c in class_names], padding="longest", return_tensors="np")
    text = l2_normalize(model.get_text_features(prompts["input_ids"], prompts["attention_mask"]))  # [C, P]
    predicted = []
    for s in range(0, len(images), EVAL_BATCH):
        image = l2_normalize(model.get_image_features(pixel_values(images[s:s + EVAL_BATCH])))  # [b, P]
        predicted.append(np.argmax(image @ text.T, axis=1))
    return float(np.mean(np.concatenate(predicted) == labels))


def _check_run_args(config, steps, batch_size, lr, weight_decay, seed, eval_every, train_examples) -> None:
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


def _check_out_dir(out_dir: str, checkpoint_dir: str, resume: bool) -> None:
    """Before any work: ``out_dir`` is a directory this run may write (created with its parents
    for a new run), and holds no training run (a new run) or a checkpoint to resume (``resume``)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} is a file, not a directory; choose another --out")
    resumable = os.path.isfile(os.path.join(checkpoint_dir, STATE_FILE))
    if resume and not resumable:
        raise FileNotFoundError(f"--resume: no training checkpoint in {checkpoint_dir}")
    found = [name for name in RUN_MARKERS if os.path.exists(os.path.join(out_dir, name))]
    if not resume and found:
        what = f"{out_dir} already holds a training run ({', '.join(found)})"
        if resumable:
            raise ValueError(f"{what}; pass --resume to continue it, or choose another --out")
        raise ValueError(f"{what} with no checkpoint to resume; choose another --out, or empty it to start again")
    try:
        os.makedirs(out_dir, exist_ok=True)  # as `mkdir -p`: the directory is the run's own
    except OSError as err:
        raise type(err)(f"cannot create --out {out_dir}: {err.strerror or err}; choose another --out") from None
    for directory in (out_dir, checkpoint_dir) if resume else (out_dir,):
        try:
            with tempfile.TemporaryFile(dir=directory):  # what writing says, not a guess from permission bits
                pass
        except OSError as err:
            hint = "--resume writes there" if resume else "choose another --out"
            raise type(err)(f"cannot write to {directory}: {err.strerror or err}; {hint}") from None


def _changed_args(first: dict[str, Any], now: dict[str, Any], warmup_given: bool) -> str:
    """The recorded arguments that differ, as "--steps: 1000 then, 500 now, ..."; a warmup derived
    from the steps is not named when the steps are."""
    changed = []
    for key, value in now.items():
        if first.get(key) == value or (key == "warmup" and not warmup_given and first.get("steps") != now["steps"]):
            continue
        changed.append(f"{ARG_NAMES.get(key, key)}: {first.get(key)} then, {value} now")
    return ", ".join(changed)


def _last_logged(log_path: str) -> tuple[float | None, dict[str, Any] | None]:
    """The last loss and the last evaluation in a training log, (None, None) where there are none."""
    loss = evaluation = None
    try:
        with open(log_path, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                loss = record.get("loss", loss)
                evaluation = record.get("eval", evaluation)
    except (OSError, ValueError):  # a log is a record for people; the model does not depend on it
        pass
    return loss, evaluation


def run_training(
    out_dir: str | os.PathLike,
    *,
    config: str = "nano",
    steps: int,
    batch_size: int = BATCH_SIZE,
    lr: float = 3e-3,
    seed: int = 0,
    eval_every: int | None = 100,
    resume: bool = False,
    warmup: int | None = None,
    weight_decay: float = WEIGHT_DECAY,
    max_grad_norm: float = 1.0,
    train_examples: int = TRAIN_EXAMPLES,
    test_examples: int = TEST_EXAMPLES,
    variety: float = VARIETY,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a tiny ALIGN on the synthetic dataset and save it in the hub layout into ``out_dir``.

    1. Render the training and held-out test splits (``minialign.synthetic``, IMAGE_SIZE x IMAGE_SIZE;
       ``variety`` of the training images drawn as people draw shapes, the test images plain).
    2. Learn a WordPiece vocabulary from the training captions; write vocab.txt + tokenizer_config.json.
    3. Build the ``config`` model config and initialise its weights with ``seed``.
    4. Train with ``train_loop``: batches of ``batch_size`` shuffled pairs, AdamW, warmup (default
       5% of ``steps``) + cosine; zero-shot top-1 on the held-out test pairs every ``eval_every``
       steps and at the end; metrics in ``train_log.jsonl``; a checkpoint in ``checkpoint/`` every
       ``CHECKPOINT_EVERY`` steps and at Ctrl-C (of the last finished step). ``resume=True``
       continues from that checkpoint (the arguments must be those of the first run, recorded in
       ``run_args.json``).
    5. Save config.json + model.safetensors, preprocessor_config.json, examples/*.png (held-out
       test images) and labels.json (all 36 class names), so ``minialign classify`` can use it.

    Before any work, ``out_dir`` is checked (``_check_out_dir``): created with its parents if
    missing; an error if it is a file or cannot be written, if a new run finds a training run
    there (``RUN_MARKERS``), or if ``resume`` finds no checkpoint or other arguments.

    Returns a summary: the output directory, steps, the step resumed from, final loss, the last
    evaluation, seconds, and ``already_done``: True when ``resume`` found the run trained to its
    last step and its model saved, in which case nothing was done (loss and evaluation are then
    the log's). Ctrl-C raises ``TrainingInterrupted`` (a KeyboardInterrupt) whose message says
    what was saved.
    """
    _check_run_args(config, steps, batch_size, lr, weight_decay, seed, eval_every, train_examples)
    if not is_fraction(variety):
        raise ValueError(f"variety must be a number in [0, 1], got {variety!r}")
    from PIL import Image

    from .. import synthetic
    from ..align_model import AlignModel
    from ..tokenizer import BertTokenizer
    from ..vocab import learn_wordpiece_vocab, write_vocab

    out_dir = os.fspath(out_dir)
    checkpoint_dir = os.path.join(out_dir, "checkpoint")
    log_path = os.path.join(out_dir, LOG_FILE)
    warmup_given, warmup = warmup is not None, steps // 20 if warmup is None else warmup
    run_args = {"config": config, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "warmup": warmup,
                "weight_decay": weight_decay, "max_grad_norm": max_grad_norm, "train_examples": train_examples,
                "unnamed_colour_fraction": UNNAMED_COLOUR_FRACTION, "variety": variety}
    run_args_path = os.path.join(out_dir, "run_args.json")
    _check_out_dir(out_dir, checkpoint_dir, resume)
    if resume:
        first = read_json_object(run_args_path, error=ValueError,
                                 not_found=f"--resume: {run_args_path} (the first run's arguments) not found")
        changed = _changed_args(first, run_args, warmup_given)
        if changed:
            raise ValueError(f"--resume needs the arguments of the first run ({changed})")
        trained = read_json_object(os.path.join(checkpoint_dir, STATE_FILE), error=CheckpointError).get("step")
        if trained == steps and all(os.path.isfile(os.path.join(out_dir, f)) for f in SAVED_MODEL_FILES):
            final_loss, evaluation = _last_logged(log_path)
            return {"out_dir": out_dir, "steps": steps, "resumed_from": steps, "final_loss": final_loss,
                    "eval": evaluation, "seconds": 0.0, "already_done": True}

    # 1-2. data and vocabulary
    train = synthetic.generate(train_examples, split="train", seed=seed, image_size=IMAGE_SIZE,
                               unnamed_colour_fraction=UNNAMED_COLOUR_FRACTION, variety=variety)
    test = synthetic.generate(test_examples, split="test", seed=seed, image_size=IMAGE_SIZE)  # plain: see VARIETY
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
    model_config = nano_config(tokenizer.vocab_size)
    check_trainable(model_config)  # a config this training cannot do fails here, not at step 1
    max_length = min(MAX_TEXT_LENGTH, model_config.text_config.max_position_embeddings)

    def make_batch(indices: np.ndarray) -> Batch:
        text = tokenizer([captions[i] for i in indices], padding="longest", truncation=True,
                         max_length=max_length, return_tensors="np")
        return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                "pixel_values": pixel_values(train_images[indices])}

    def loss_and_grads(params, batch):
        return forward_backward(params, model_config, batch["input_ids"], batch["attention_mask"],
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
        params, optimizer, start_step = init_params(model_config, seed), None, 0
        batches = ShuffledBatches(len(train), batch_size, make_batch, seed=[seed, 1])
    try:
        params, history = train_loop(
            params, loss_and_grads, batches, steps=steps, lr=lr, warmup=warmup, weight_decay=weight_decay,
            max_grad_norm=max_grad_norm, optimizer=optimizer, start_step=start_step,
            eval_fn=evaluate, eval_every=eval_every or None, log_path=log_path,
            checkpoint_dir=checkpoint_dir, checkpoint_every=CHECKPOINT_EVERY, progress=progress,
        )
    except TrainingInterrupted as stop:  # say it for `minialign train`: what is saved, and how to go on
        if stop.checkpoint_dir is not None:
            message = (f"checkpoint saved at step {stop.step} of {steps} in {checkpoint_dir}; "
                       "--resume continues from there")
        elif resume:  # no step since the checkpoint resumed from
            message = f"no step finished; {checkpoint_dir} is still at step {stop.step}; --resume continues from there"
        else:  # the vocabulary and run_args.json are no training run (RUN_MARKERS): the same command works
            message = "no step finished, nothing saved; the same command starts again"
        kept = checkpoint_dir if stop.checkpoint_dir is not None or resume else None
        raise TrainingInterrupted(message, step=stop.step, checkpoint_dir=kept) from None

    # 5. the model, in the hub layout, with what `minialign classify` needs
    # transformers' checkpoints also count the batches each batchnorm has seen (torch's
    # num_batches_tracked); write them so that transformers loads the model without a warning.
    counters = {name.replace("running_mean", "num_batches_tracked"): np.array(steps, dtype=np.int64)  # steps is the total, resumed or not
                for name in params if name.endswith("running_mean")}
    try:
        AlignModel(model_config, {**params, **counters}).save_pretrained(out_dir)
        image_processor().save_pretrained(out_dir)
        os.makedirs(os.path.join(out_dir, "examples"), exist_ok=True)
        saved: dict[int, int] = {}
        for e in test:
            if saved.get(e.label, 0) < EXAMPLE_IMAGES_PER_CLASS:
                saved[e.label] = saved.get(e.label, 0) + 1
                name = f"{e.class_name.replace(' ', '_')}_{saved[e.label]}.png"
                Image.fromarray(e.image).save(os.path.join(out_dir, "examples", name))
        with open(os.path.join(out_dir, "labels.json"), "w", encoding="utf-8") as fh:  # last: see SAVED_MODEL_FILES
            json.dump(class_names, fh, indent=1)
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"the model was not completely saved; its checkpoint at step {steps} is in "
                                  f"{checkpoint_dir}, and --resume finishes the save",
                                  step=steps, checkpoint_dir=checkpoint_dir) from None
    final_loss, evaluation = _last_logged(log_path) if not history else (None, None)
    return {
        "out_dir": out_dir,
        "steps": steps,
        "resumed_from": start_step if resume else None,
        "final_loss": history[-1]["loss"] if history else final_loss,
        "eval": next((r["eval"] for r in reversed(history) if "eval" in r), evaluation),
        "seconds": history[-1]["elapsed_s"] if history else 0.0,
        "already_done": False,
    }
