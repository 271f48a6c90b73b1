# %% [markdown]
# # 7. Training a tiny ALIGN
#
# The embedded model was trained by `minialign train`. This tutorial runs the same training in
# Python for a few hundred steps: noisy alt-text about coloured shapes (`minialign.synthetic`),
# a learned WordPiece vocabulary, hand-written backward passes, AdamW. Then it classifies
# held-out (shape, colour) pairs zero-shot. See docs/training.md.
#
# About 3 minutes on 2 cores. `MINIALIGN_TUTORIAL_FAST=1` (what CI sets) trains 3 steps on 64
# examples instead, enough to run every line.

# %%
import json
import os
import tempfile

from minialign import synthetic
from minialign.training import recipe

fast = os.environ.get("MINIALIGN_TUTORIAL_FAST") == "1"
steps, examples = (3, 64) if fast else (600, 10_000)
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
# clip the gradient norm, an AdamW step; a line of metrics goes to `train_log.jsonl`.

# %%
summary = recipe.run_training(out, steps=steps, batch_size=64 if not fast else 8, lr=3e-3,
                             eval_every=200 if not fast else 0, train_examples=examples,
                             test_examples=60 if fast else 300, progress=not fast)
print(json.dumps(summary, indent=1))

# %% [markdown]
# The log, and the model in the hub layout: `minialign classify --model` works on it.

# %%
with open(os.path.join(out, "train_log.jsonl")) as fh:
    log = [json.loads(line) for line in fh]
for row in log[:: max(1, len(log) // 5)]:
    print(f"step {row['step']:4}  loss {row['loss']:.3f}  temperature {row['temperature']:.3f}")
print(sorted(os.listdir(out)))
assert summary["eval"] is not None and 0 <= summary["eval"]["zero_shot_top1"] <= 1
