# %% [markdown]
# # 7. Training a tiny ALIGN
#
# The embedded model was trained by `minialign train`. This tutorial runs the same recipe
# (`recipe.run_training`, with the constants of `minialign/training/recipe.py`) in Python, at a
# size a student can wait for: 900 steps of 128 pairs, where the shipped run takes 2800 of 64. Noisy
# alt-text about coloured shapes, most of them drawn the way people draw shapes
# (`minialign.synthetic`), a learned WordPiece vocabulary, hand-written backward passes, AdamW.
# Then it classifies held-out (shape, colour) pairs zero-shot. Fewer steps than this leave the
# model on its plateau near chance (the log shows it): the varied images make the first few
# hundred steps slow. At this size batches of 128 leave it sooner than batches of 64: 1600 steps
# of 64, the same minutes, ended on it (docs/training.md, "The tutorial's size").
#
# About 8 minutes on 2 cores. What to expect at this size, and what the last cell checks, is in
# the constants below and in docs/training.md ("The tutorial's size"); the checked floor sits
# well below the expected value because another machine's rounding moves where a run lands.
# `MINIALIGN_TUTORIAL_FAST=1` (what CI sets) trains 3 steps on 64 examples instead, enough to run
# every line.

# %%
import json
import os
import tempfile

from minialign import synthetic
from minialign.training import recipe

STEPS, BATCH, EXAMPLES = 900, 128, recipe.TRAIN_EXAMPLES
EXPECTED = 0.773  # held-out top-1 of this size's run on the development machine (benchmarks/results/tutorial_07/)
FLOOR = 0.30  # what the last cell checks: a short run's landing varies, more so on its plateau
fast = os.environ.get("MINIALIGN_TUTORIAL_FAST") == "1"
if fast:
    STEPS, BATCH, EXAMPLES = 3, 8, 64
out = tempfile.mkdtemp(prefix="align-tiny-")

# %% [markdown]
# What the model learns from: a few training pairs, noise included. Some objects have a colour
# no caption names (lime, teal, pink, ...): their captions name the shape only.

# %%
for e in synthetic.generate(8, split="train", seed=0, image_size=recipe.IMAGE_SIZE,
                            unnamed_colour_fraction=recipe.UNNAMED_COLOUR_FRACTION, variety=recipe.VARIETY):
    what = e.class_name if e.colour is not None else f"{e.shape} (unnamed)"
    print(f"{what:18} {'ok   ' if e.correct_caption else 'WRONG'} {e.caption!r}")

# %% [markdown]
# Train. Every step: forward and backward through both towers (`training.forward_backward`),
# clip the gradient norm, an AdamW step; a line of metrics goes to `train_log.jsonl`, with the
# held-out top-1 every 100 steps (chance is 2.8%). For several hundred steps the loss hardly
# moves and top-1 stays near chance: the towers have not yet agreed on what a colour is. Then
# it climbs.

# %%
summary = recipe.run_training(out, steps=STEPS, batch_size=BATCH, eval_every=0 if fast else 100,
                             train_examples=EXAMPLES, test_examples=60 if fast else recipe.TEST_EXAMPLES,
                             progress=not fast)
print(json.dumps(summary, indent=1))

# %% [markdown]
# The log, and the model in the hub layout: `minialign classify --model` works on it.

# %%
with open(os.path.join(out, "train_log.jsonl")) as fh:
    log = [json.loads(line) for line in fh]
for row in log[:: max(1, len(log) // 8)]:
    print(f"step {row['step']:4}  loss {row['loss']:.3f}  temperature {row['temperature']:.3f}")
print(sorted(os.listdir(out)))
top1 = summary["eval"]["zero_shot_top1"]
if fast:
    print(f"held-out top-1 {top1:.1%} after {STEPS} steps (the fast run only checks that every line runs)")
else:
    print(f"held-out top-1 {top1:.1%}; expected about {EXPECTED:.0%} at this size")
    assert top1 >= FLOOR, f"held-out top-1 {top1:.1%} is below the {FLOOR:.0%} this size reaches"
