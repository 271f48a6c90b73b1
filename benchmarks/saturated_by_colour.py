"""Top-1 of a model on the drawn shapes' saturated backgrounds, per (object colour, background colour).

The drawn-shapes evaluation (benchmarks/drawn_shapes_eval.py) reports saturated backgrounds as one
rate; this splits it by the pair of named colours, to see which pairs a model misses (a pair the
generator never draws, such as two colours closer than its contrast floor, shows up here).
Canvases 32, 96 and 224, no JPEG, seed 0; the background's colour is read from the image's corner.

    python benchmarks/saturated_by_colour.py MODEL_DIR --out MODEL_DIR/saturated_by_colour.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import drawn_shapes as ds  # noqa: E402  (the tests' drawing routine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model directory or the shipped model's name")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from minialign import AlignModel, AlignProcessor

    model, processor = AlignModel.from_pretrained(args.model), AlignProcessor.from_pretrained(args.model)
    conditions = ds.condition_grid(backgrounds=("saturated",), canvases=((32, 32), (96, 96), (224, 224)), jpeg=(False,))
    images, cases = zip(*ds.iter_cases(conditions))
    predicted = ds.predict(model, processor, images, ds.prompt_embeddings(model, processor))
    name_of = {rgb: name for name, rgb in ds.COLOURS.items()}
    right: dict[str, dict[str, list[bool]]] = {}
    for image, case, p in zip(images, cases, predicted):
        background = name_of[tuple(int(v) for v in image[0, 0])]
        right.setdefault(ds.CLASSES[case.label][1], {}).setdefault(background, []).append(bool(p == case.label))
    table = {obj: {bg: float(np.mean(r)) for bg, r in row.items()} for obj, row in right.items()}
    with open(args.out, "w") as fh:
        json.dump({"model": args.model, "conditions": len(conditions), "top1_by_object_then_background": table}, fh,
                  indent=1)
    for obj, row in table.items():
        print(f"{obj:7s}", " ".join(f"{bg}={v:.2f}" for bg, v in row.items()))


if __name__ == "__main__":
    main()
