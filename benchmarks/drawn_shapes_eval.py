"""Zero-shot accuracy on shapes drawn the way a user draws them, outside the training generator.

align-nano is scored in training on ``minialign/synthetic.py``'s own images. Here every one of the
36 classes is drawn by ``tests/drawn_shapes.py`` (independent Pillow code) in every condition of
a grid -- 7 backgrounds (white, black, light grey, dark grey, a pastel, a saturated colour of
another name, light noise) x 8 canvases (16 to 512 px square, 320x200, 200x320) x 3 object
sizes (30%, 55%, 85% of the short side) x JPEG q75 or not: 336 conditions, 12,096 images, each
at a seeded random position -- and classified as a user would: ``AlignProcessor`` resizes it to
48x48 (aspect not kept), the prompt is training's "a photo of a {}.", top-1 over the 36 classes.

The JSON holds top-1, shape-correct and colour-correct rates overall and per background, canvas,
object size, JPEG, held-out vs seen pair, shape, colour and edge kind (hard or anti-aliased), and
the most frequent mistakes. The project's target is >= 90% overall and >= 80% on every
background and size; tests/test_drawn_shapes.py guards today's levels on a reduced grid.

    python benchmarks/drawn_shapes_eval.py [--model align-nano] [--out benchmarks/results/drawn_shapes_align-nano.json]
    python benchmarks/drawn_shapes_eval.py --table benchmarks/results/drawn_shapes_align-nano.json   # docs tables
    python benchmarks/drawn_shapes_eval.py --sheet /tmp/drawn_sheet.png --only-sheet   # look at the images
"""

from __future__ import annotations

import os

# Before NumPy loads OpenBLAS, which reads it once (see benchmarks/common.py).
OPENBLAS_GIVEN = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import drawn_shapes as ds  # noqa: E402  (the tests' drawing routine and grid)
from common import machine, openblas_thread_timeout  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results", "drawn_shapes_align-nano.json")
TABLE_GROUPS = ("background", "canvas", "object_size", "jpeg", "pair", "shape", "colour", "edges")


def markdown_tables(result: dict) -> str:
    """One table per breakdown (top-1, shape, colour, n), then the most frequent mistakes."""
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    o = result["overall"]
    lines = [f"Overall: top-1 {pct(o['top1'])}%, shape {pct(o['shape'])}%, colour {pct(o['colour'])}% "
             f"({o['n']} images, {result['model']})", ""]
    for group in TABLE_GROUPS:
        lines += [f"| {group.replace('_', ' ')} | top-1 % | shape % | colour % | images |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {value} | {pct(r['top1'])} | {pct(r['shape'])} | {pct(r['colour'])} | {r['n']} |"
                  for value, r in result["per"][group].items()]
        lines.append("")
    for name, table in result["crossed_top1"].items():
        rows, cols = name.split(" x ")
        columns = list(dict.fromkeys(c for row in table.values() for c in row))
        lines += [f"| top-1 %, {rows.replace('_', ' ')} / {cols.replace('_', ' ')} | " + " | ".join(columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        lines += [f"| {r} | " + " | ".join(pct(row[c]) if c in row else "" for c in columns) + " |"
                  for r, row in table.items()]
        lines.append("")
    lines += ["| true shape | predicted shape | images |", "|---|---|---:|"]
    lines += [f"| {c['true']} | {c['predicted']} | {c['count']} |" for c in result["confusions"]["shape_to_shape"][:8]]
    lines += ["", "| true class | predicted | images |", "|---|---|---:|"]
    lines += [f"| {c['true']} | {c['predicted']} | {c['count']} |"
              for c in result["confusions"]["most_frequent_pairs"][:8]]
    return "\n".join(lines)


def contact_sheet(conditions, seed: int, path: str, per_row: int = 12, rows: int = 12, cell: int = 96) -> None:
    """A sample of the grid (a seeded choice of cases), each image fitted into a cell x cell tile
    (nearest-neighbour, so a 16 px canvas shows its pixels), on a mid-grey sheet."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    picks = [(conditions[int(rng.integers(len(conditions)))], int(rng.integers(len(ds.CLASSES))))
             for _ in range(per_row * rows)]
    sheet = Image.new("RGB", (per_row * (cell + 4) + 4, rows * (cell + 4) + 4), (128, 128, 128))
    for k, (condition, label) in enumerate(picks):
        image, _ = ds.draw_case(condition, label, seed)
        tile = Image.fromarray(image)
        scale = cell / max(tile.size)
        tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), Image.NEAREST)
        x, y = 4 + (k % per_row) * (cell + 4), 4 + (k // per_row) * (cell + 4)
        sheet.paste(tile, (x + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="align-nano", help="a model directory or the shipped model's name")
    parser.add_argument("--out", default=DEFAULT_OUT, help="write the JSON result here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", metavar="JSON", default=None,
                        help="measure nothing: print the markdown tables of a result file written by --out")
    parser.add_argument("--sheet", metavar="PNG", default=None, help="also save a contact sheet of 144 drawn images")
    parser.add_argument("--only-sheet", action="store_true", help="save the contact sheet, evaluate nothing")
    args = parser.parse_args()
    if args.table:
        with open(args.table, encoding="utf-8") as fh:
            print(markdown_tables(json.load(fh)))
        return

    conditions = ds.condition_grid()
    if args.sheet:
        contact_sheet(conditions, args.seed, args.sheet)
        if args.only_sheet:
            return

    from minialign import AlignModel, AlignProcessor
    from minialign.training import recipe

    model, processor = AlignModel.from_pretrained(args.model), AlignProcessor.from_pretrained(args.model)
    start = time.perf_counter()
    cases, predicted = ds.evaluate(model, processor, conditions, seed=args.seed)
    seconds = time.perf_counter() - start
    result = {
        "benchmark": "zero-shot top-1 on shapes drawn with Pillow (tests/drawn_shapes.py), 36 classes x 336 conditions",
        "model": args.model,
        "seed": args.seed,
        "grid": {"backgrounds": list(ds.BACKGROUNDS), "canvases": [list(c) for c in ds.CANVASES],
                 "object_sizes": ds.OBJECT_SIZES, "jpeg_quality": ds.JPEG_QUALITY, "conditions": len(conditions)},
        "prompt": recipe.ZERO_SHOT_PROMPT,
        "target": {"overall_top1": 0.90, "each_background_and_size_top1": 0.80},
        "seconds": seconds,
        "machine": machine(),
        "openblas_thread_timeout": openblas_thread_timeout(OPENBLAS_GIVEN),
        **ds.summarize(cases, predicted),
    }
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:  # not sorted (common.write_json sorts): tables keep the grid's order
            fh.write(json.dumps(result, indent=2) + "\n")
    print(markdown_tables(result))
    print(f"\n{len(cases)} images in {seconds:.1f} s; written to {args.out}")


if __name__ == "__main__":
    main()
