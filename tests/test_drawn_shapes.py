"""The drawn-shapes evaluation (tests/drawn_shapes.py): first the drawing routine itself -- its
pixels where the geometry says, the colour exact inside, the background as asked, the sizes
right -- then the shipped model on a reduced grid of the conditions, as a regression guard.

The full grid (336 conditions, 12,096 images) is benchmarks/drawn_shapes_eval.py; its result is
benchmarks/results/drawn_shapes_align-nano.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import drawn_shapes as ds
from minialign.synthetic import COLOURS, SHAPES

RGB = (10, 200, 30)  # not a named colour: any exact colour must come through exactly

# ----------------------------------------------------------------------------------------------
# the drawing routine
# ----------------------------------------------------------------------------------------------


def test_a_hand_computed_square():
    """A 10 px square (size 0.5 of 20 px) centred, hard edges: rows and columns 5..14, nothing else."""
    image = ds.draw_shape("square", RGB, canvas=(20, 20), size=0.5, background=(255, 255, 255), antialias=False)
    expected = np.full((20, 20, 3), 255, dtype=np.uint8)
    expected[5:15, 5:15] = RGB
    np.testing.assert_array_equal(image, expected)


def _inside(parts, x: np.ndarray, y: np.ndarray) -> np.ndarray:  # points [n] -> [n] bool
    """Point-in-shape for shape_outline's parts, written apart from Pillow: the ellipse equation,
    and the crossing-number rule for the polygons (the star is not convex)."""
    hit = np.zeros(x.shape, dtype=bool)
    for kind, geometry in parts:
        if kind == "ellipse":
            x0, y0, x1, y1 = geometry
            rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
            hit |= ((x - (x0 + rx)) / rx) ** 2 + ((y - (y0 + ry)) / ry) ** 2 <= 1
        else:
            inside = np.zeros(x.shape, dtype=bool)
            points = list(geometry)
            for (xa, ya), (xb, yb) in zip(points, points[1:] + points[:1]):
                crosses = (ya > y) != (yb > y)
                with np.errstate(divide="ignore", invalid="ignore"):
                    x_at = xa + (y - ya) * (xb - xa) / (yb - ya)
                inside ^= crosses & (x < x_at)
            hit |= inside
    return hit


def _coverage(shape, canvas, size, centre, rotation, samples: int = 8) -> np.ndarray:  # -> [h, w] in [0, 1]
    """Fraction of each pixel inside the shape, from samples x samples points per pixel."""
    width, height = canvas
    parts = ds.shape_outline(shape, size * min(width, height), centre[0] * width, centre[1] * height, rotation)
    offsets = (np.arange(samples) + 0.5) / samples
    x = (np.arange(width)[:, None] + offsets).reshape(-1)  # [w * samples]
    y = (np.arange(height)[:, None] + offsets).reshape(-1)  # [h * samples]
    xx, yy = np.meshgrid(x, y)
    hit = _inside(parts, xx.reshape(-1), yy.reshape(-1)).reshape(height * samples, width * samples)
    return hit.reshape(height, samples, width, samples).mean(axis=(1, 3))


# (shape, canvas, size, centre, rotation): each shape, off centre, on a non-square canvas; the
# square turned as in the grid; small shapes where a pixel is a large part of them.
GEOMETRY_CASES = [
    *[(shape, (96, 64), 0.6, (0.45, 0.55), 0.0) for shape in SHAPES],
    ("square", (64, 64), 0.5, (0.5, 0.5), 9.0),
    ("star", (24, 24), 0.7, (0.5, 0.5), 0.0),
    ("heart", (17, 23), 0.8, (0.5, 0.5), 0.0),  # odd sizes
]


@pytest.mark.parametrize("shape, canvas, size, centre, rotation", GEOMETRY_CASES)
def test_the_mask_covers_what_the_geometry_says(shape, canvas, size, centre, rotation):
    """Against an independent coverage (16 x 16 samples per pixel of shape_outline's geometry).

    Pillow truncates the 4x drawing's coordinates to whole pixels and fills inclusively, so edges
    may sit up to about 1/4 of an output pixel off, and a 4x4 box counts coverage in steps of 1/4
    along an edge (0.4 becomes a tie at 0.5): a hard-edged pixel is in when at least half of it
    is, except where the true coverage lies within 0.4 of that half. The anti-aliased mask follows
    the coverage to within that and LANCZOS's ringing, which is not a box filter.
    """
    truth = _coverage(shape, canvas, size, centre, rotation, samples=16)
    hard = ds.shape_mask(shape, canvas, size, centre, rotation, antialias=False)
    clear = (truth <= 0.1) | (truth >= 0.9)
    np.testing.assert_array_equal(hard[clear], (truth[clear] >= 0.5).astype(np.float32))
    edge = (truth > 0) & (truth < 1)
    soft = ds.shape_mask(shape, canvas, size, centre, rotation, antialias=True)
    assert np.abs(soft - truth).max() < 0.5
    assert np.abs(soft - truth)[edge].mean() < 0.2


# Areas as fractions of the size x size box, by hand (R = outer radius = 1/2, r = 0.382 R).
AREAS = {
    "circle": math.pi / 4,
    "square": 1.0,
    "triangle": math.sqrt(3) / 4,
    "star": 5 * 0.5 * (0.5 * ds.STAR_INNER) * math.sin(math.radians(36)),  # 10 triangles R, r, 36 degrees
    "cross": 2 * ds.CROSS_BAR - ds.CROSS_BAR**2,  # two bars, the centre counted once
}


@pytest.mark.parametrize("shape", list(AREAS))
@pytest.mark.parametrize("antialias", [False, True])
def test_areas_by_hand(shape, antialias):
    """A 120 px shape, off the pixel grid: the outline's quarter pixel is < 2% of the area."""
    side = 120
    mask = ds.shape_mask(shape, (200, 200), side / 200, centre=(0.5013, 0.4987), antialias=antialias)
    assert mask.sum() / side**2 == pytest.approx(AREAS[shape], rel=0.02)


# Extents of each shape in its size x size box (width, height), by hand.
EXTENTS = {
    "circle": (1.0, 1.0),
    "square": (1.0, 1.0),
    "triangle": (1.0, math.sqrt(3) / 2),
    "star": (2 * 0.5 * math.cos(math.radians(18)), 0.5 * (1 + math.cos(math.radians(36)))),
    "cross": (1.0, 1.0),
    "heart": (1.0, ds.HEART_DEPTH),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_spans_its_box_and_is_upright(shape):
    side = 100
    mask = ds.shape_mask(shape, (160, 160), side / 160, antialias=False)  # box: pixels 30 .. 129
    rows, cols = np.nonzero(mask)
    width, height = EXTENTS[shape]
    assert cols.max() - cols.min() + 1 == pytest.approx(width * side, abs=1.5)
    assert rows.max() - rows.min() + 1 == pytest.approx(height * side, abs=1.5)
    assert 30 <= cols.min() and cols.max() <= 129 and 30 <= rows.min() and rows.max() <= 129
    box = mask[:, 30:130]
    assert np.sum(box != box[:, ::-1]) < 0.02 * box.sum()  # symmetric left-right (but for Pillow's 1/4 px)
    if shape == "triangle":  # points up: the top row is short, the bottom row full
        assert mask[rows.min()].sum() < 0.1 * side and mask[rows.max()].sum() > 0.9 * side
    if shape == "heart":  # the point at the bottom, two lobes at the top
        assert mask[rows.max()].sum() < 0.1 * side
        assert mask[rows.min() + 5, 80] == 0 and mask[rows.min() + 5, 55] == 1


def _far_from_edge(mask: np.ndarray, value: float, reach: int = 3) -> np.ndarray:  # [h, w] -> [h, w] bool
    """Pixels whose (2 reach + 1)^2 neighbourhood in the hard mask is all ``value``."""
    padded = np.pad(mask, reach, mode="edge")
    window = sliding_window_view(padded, (2 * reach + 1, 2 * reach + 1))
    return np.all(window == value, axis=(2, 3))


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_colour_is_exact_inside_and_the_background_untouched_outside(shape, antialias, rng):
    """3 pixels from the outline (LANCZOS rings up to 2 pixels out) the object is exactly its
    colour and the background -- here a noise texture -- exactly what was passed in."""
    canvas = (90, 70)
    background = ds.background_image("noise", canvas, rng)
    image = ds.draw_shape(shape, RGB, canvas, 0.7, (0.52, 0.48), background, rotation=0.0, antialias=antialias)
    hard = ds.shape_mask(shape, canvas, 0.7, (0.52, 0.48), antialias=False)
    inside, outside = _far_from_edge(hard, 1.0), _far_from_edge(hard, 0.0)
    assert inside.sum() > 150 and outside.sum() > 2000  # (the star's narrow arms leave ~190 inside)
    assert np.all(image[inside] == RGB)
    np.testing.assert_array_equal(image[outside], background[outside])
    assert image.dtype == np.uint8 and image.shape == (70, 90, 3)


@pytest.mark.parametrize("kind", list(ds.PLAIN_BACKGROUNDS))
def test_plain_backgrounds_are_exact(kind, rng):
    image = ds.background_image(kind, (40, 30), rng, "red")
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    assert np.all(image == ds.PLAIN_BACKGROUNDS[kind])


@pytest.mark.parametrize("colour", list(COLOURS))
def test_coloured_backgrounds_avoid_the_objects_colour(colour):
    """Over many draws: a pastel or a saturated named colour of every other hue, never the object's."""
    pastels, saturated = set(), set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        pastels.add(tuple(ds.background_image("pastel", (8, 8), rng, colour)[0, 0]))
        saturated.add(tuple(ds.background_image("saturated", (8, 8), rng, colour)[0, 0]))
    assert pastels == {v for c, v in ds.PASTELS.items() if c != colour}
    assert saturated == {v for c, v in COLOURS.items() if c != colour}


def test_the_noise_background_is_light_and_textured(rng):
    image = ds.background_image("noise", (200, 100), rng).astype(float)
    assert image.shape == (100, 200, 3)
    assert abs(image.mean() - ds.NOISE_LEVEL) < 2
    assert 15 < image.std() < 25  # sqrt(18^2 + 6^2) = 19
    assert np.abs(np.diff(image, axis=1)).mean() > 10  # per-pixel texture, not a gradient
    assert image.min() >= 120  # light everywhere


@pytest.mark.parametrize("canvas, size, expected_side", [((320, 200), 0.5, 100), ((200, 320), 0.5, 100),
                                                         ((16, 16), 0.3, 4.8), ((512, 512), 0.85, 435.2)])
def test_the_object_size_is_a_fraction_of_the_short_side(canvas, size, expected_side):
    image = ds.draw_shape("square", RGB, canvas, size, background=(0, 0, 0), antialias=False)
    assert image.shape == (canvas[1], canvas[0], 3)
    covered = np.all(image == RGB, axis=2)
    assert np.sqrt(covered.sum()) == pytest.approx(expected_side, abs=1)


def test_the_grid_and_its_seeding():
    grid = ds.condition_grid()
    assert len(grid) == 7 * 8 * 3 * 2 == len(set(grid))
    condition = ds.Condition("pastel", (320, 200), "small", jpeg=False)
    a, case_a = ds.draw_case(condition, label=9)
    b, case_b = ds.draw_case(condition, label=9)
    np.testing.assert_array_equal(a, b)  # deterministic
    c, case_c = ds.draw_case(ds.Condition("pastel", (320, 200), "small", jpeg=True), label=9)
    assert case_c.centre == case_a.centre and case_c.antialias == case_a.antialias  # one drawing, then JPEG
    assert 0 < np.abs(a.astype(int) - c).mean() < 3
    d, case_d = ds.draw_case(condition, label=9, seed=1)
    assert case_d.centre != case_a.centre
    # iter_cases gives the same images as draw_case, and draws each JPEG pair once.
    pairs = list(ds.iter_cases([condition, ds.Condition("pastel", (320, 200), "small", jpeg=True)], labels=[9]))
    np.testing.assert_array_equal(pairs[0][0], a)
    np.testing.assert_array_equal(pairs[1][0], c)


def test_every_drawn_object_lies_inside_its_canvas():
    """The position is drawn so the (turned) shape stays 2% of the short side (at least a pixel)
    from the border: no border pixel is even half covered. Only the large square turned by up to 10 degrees cannot
    be placed so, and is centred (its corners may cross the border by 1% of the side)."""
    for condition in ds.condition_grid(backgrounds=("black",), jpeg=(False,)):
        for label in range(0, 36, 5):
            image, case = ds.draw_case(condition, label)
            shape, colour = ds.CLASSES[label]
            assert np.any(np.all(image == COLOURS[colour], axis=2))  # the exact colour is there
            if condition.size == "large" and shape == "square":
                continue  # (turned by more than ~4 degrees, it is centred, and its corners may cross)
            brightest = image.max(axis=2)  # on black, [h, w]
            border = np.concatenate([brightest[0], brightest[-1], brightest[:, 0], brightest[:, -1]])
            assert border.max() < max(COLOURS[colour]) / 2, (condition, label)


# ----------------------------------------------------------------------------------------------
# the shipped model on a reduced grid
# ----------------------------------------------------------------------------------------------

# 4 canvases (the smallest, the model's own 48, a photo-like 224, a non-square one) without JPEG,
# every background and object size, plus the JPEG round trip at 48: 105 conditions, 3,780 images,
# about 12 s on 2 cores.
REDUCED_GRID = (ds.condition_grid(canvases=((16, 16), (48, 48), (224, 224), (320, 200)), jpeg=(False,))
                + ds.condition_grid(canvases=((48, 48),), jpeg=(True,)))
GUARDED = ("background", "canvas", "object_size")


@dataclass(frozen=True)
class Bars:
    """Lowest top-1 allowed: ``overall``, and ``each`` on every value of the GUARDED groups."""

    overall: float
    each: float


# The project's target: >= 90% overall and >= 80% on every background and object size (and
# canvas). The shipped align-nano meets it here (measured December 2026: overall 95.8%;
# backgrounds 96.9-98.7% but saturated 84.3%; canvases 93.5-97.9%; object sizes 91.7-98.8%) and on
# the full grid (94.7%, saturated 81.5%: benchmarks/results/drawn_shapes_align-nano.json).
BARS = Bars(overall=0.90, each=0.80)


@pytest.fixture(scope="module")
def nano():
    from minialign import AlignModel, AlignProcessor

    return AlignModel.from_pretrained("align-nano"), AlignProcessor.from_pretrained("align-nano")


@pytest.fixture(scope="module")
def reduced_grid_result(nano):
    cases, predicted = ds.evaluate(*nano, REDUCED_GRID)
    return cases, predicted, ds.summarize(cases, predicted)


def test_predict_scores_as_training_does(nano):
    """On 48x48 images the processor's resize is the identity: the evaluation's top-1 is
    recipe.zero_shot_top1's (training's metric, on its pixel_values shortcut)."""
    from minialign.training import recipe

    model, processor = nano
    drawn = list(ds.iter_cases(ds.condition_grid(backgrounds=("white", "dark grey"), canvases=((48, 48),),
                                                 jpeg=(False,))))
    images, labels = np.stack([image for image, _ in drawn]), np.array([case.label for _, case in drawn])
    ours = np.mean(ds.predict(model, processor, list(images)) == labels)
    assert ours == recipe.zero_shot_top1(model, processor.tokenizer, images, labels, ds.CLASS_NAMES)


def test_the_drawings_are_what_the_model_knows_in_its_own_conditions(reduced_grid_result):
    """Plain backgrounds, 48 px, medium size, no JPEG -- closest to training's images: the model
    must recognise the drawings there, or the drawing routine is wrong."""
    cases, predicted, _ = reduced_grid_result
    chosen = [i for i, c in enumerate(cases) if c.condition.background in ds.PLAIN_BACKGROUNDS
              and c.condition.canvas == (48, 48) and c.condition.size == "medium" and not c.condition.jpeg]
    assert len(chosen) == 4 * 36
    assert np.mean(predicted[chosen] == np.array([cases[i].label for i in chosen])) >= 0.93


def test_zero_shot_top1_on_drawn_shapes_keeps_its_level(reduced_grid_result):
    _, _, result = reduced_grid_result
    failures = []
    if result["overall"]["top1"] < BARS.overall:
        failures.append(f"overall {result['overall']['top1']:.3f} < {BARS.overall}")
    for group in GUARDED:
        for value, rates in result["per"][group].items():
            if rates["top1"] < BARS.each:
                failures.append(f"{group}={value} {rates['top1']:.3f} < {BARS.each}")
    assert not failures, "; ".join(failures)


def test_the_committed_full_grid_result_matches_the_grid_and_prints_its_tables():
    """benchmarks/results/drawn_shapes_align-nano.json covers today's grid (rerun the benchmark
    after changing it) and ``--table`` prints its tables."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.join(os.path.dirname(__file__), "..")
    path = os.path.join(root, "benchmarks", "results", "drawn_shapes_align-nano.json")
    with open(path, encoding="utf-8") as fh:
        result = json.load(fh)
    grid = ds.condition_grid()
    assert result["grid"]["conditions"] == len(grid) and result["overall"]["n"] == len(grid) * len(ds.CLASSES)
    assert result["grid"]["backgrounds"] == list(ds.BACKGROUNDS)
    assert result["grid"]["canvases"] == [list(c) for c in ds.CANVASES]
    assert result["grid"]["object_sizes"] == ds.OBJECT_SIZES
    for group, per in result["per"].items():
        assert sum(r["n"] for r in per.values()) == result["overall"]["n"], group
        assert all(0 <= r[k] <= 1 for r in per.values() for k in ("top1", "shape", "colour"))
    table = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "drawn_shapes_eval.py"), "--table", path],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-2000:]
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"Overall: top-1 {100 * result['overall']['top1']:.1f}%")
    assert "| background | top-1 % | shape % | colour % | images |" in lines
    white = result["per"]["background"]["white"]
    assert f"| white | {100 * white['top1']:.1f} | {100 * white['shape']:.1f} | {100 * white['colour']:.1f} | 1728 |" in lines
