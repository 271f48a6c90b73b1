"""Shapes as a person draws them with Pillow: the evaluation of align-nano outside its training world.

align-nano learned from ``minialign/synthetic.py``: 48x48 (64x64 rendered) images, one object of
42-60% of the side on an almost grey background. A user's first test is rather a red circle drawn
with ``ImageDraw`` on white, at 16 or 512 pixels. This module draws such images with code of its
own -- it shares only the names and RGB values of ``synthetic`` (SHAPES, COLOURS, HELD_OUT,
class_name), none of its rendering -- so that the evaluation does not inherit the generator's
habits (outlines, supersampling, backgrounds, placement):

    draw_shape(shape, rgb, canvas=(w, h), size=0.55, centre=(0.5, 0.5), background=...)
        -> [h, w, 3] uint8: one filled shape on a background

    circle    ``ellipse`` of the size x size box
    square    the box, as a polygon (so that it can be turned a little)
    triangle  equilateral, pointing up: width = size, height = size * sqrt(3) / 2
    star      5 points, outer radius size / 2, inner radius 0.382 of it (the pentagram's)
    cross     a plus sign: two bars of width size / 3 over the whole box
    heart     two circles of radius 0.27 size and a triangle below them, width = size

``size`` is a fraction of the canvas's short side; ``centre`` a fraction of (width, height). Every
shape lies inside its size x size box around the centre. The shape is drawn with ImageDraw as a
mask at 4x -- LANCZOS-reduced for anti-aliased edges, box-filtered and thresholded at 1/2 for
hard ones -- and painted over the background in the exact colour: inside the shape every pixel
is ``rgb``, away from it every pixel is the background. Edges are right to within about 1/4
pixel (Pillow truncates coordinates to whole pixels of the 4x drawing and fills inclusively).

``condition_grid()`` lists the conditions of the evaluation (background x canvas x object size x
JPEG round trip); ``iter_cases`` draws every class in each one, seeded per (condition, class) so
that the JPEG and no-JPEG versions of an image are the same drawing; ``evaluate`` runs the model
the way a user does (``AlignProcessor`` resizes each image to 48x48, aspect not kept) in batches;
``summarize`` turns the predictions into the rates the benchmark writes
(``benchmarks/drawn_shapes_eval.py``) and the test guards (``tests/test_drawn_shapes.py``).
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from minialign.synthetic import COLOURS, HELD_OUT, SHAPES, class_name

# ----------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------

SUPERSAMPLE = 4  # the mask is drawn at 4x, then reduced (LANCZOS, or box filter + threshold)
STAR_INNER = 0.382  # inner / outer radius of a regular pentagram: sin(18) / sin(54)
CROSS_BAR = 1 / 3  # width of each bar of the plus sign, as a fraction of its size
HEART_RADIUS, HEART_OFFSET = 0.27, 0.23  # the heart's circles: radius and centre's x offset, times size
HEART_DEPTH = 0.95  # the heart's point, below its top, times size

# Backgrounds. Plain ones are RGB triples; "pastel", "saturated" and "noise" are drawn per image.
PLAIN_BACKGROUNDS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "light grey": (200, 200, 200),
    "dark grey": (64, 64, 64),
}
# A pastel of each named colour: a background picks one of another hue than the object's.
PASTELS = {
    "red": (255, 205, 210),
    "green": (200, 240, 200),
    "blue": (195, 215, 250),
    "yellow": (255, 248, 200),
    "purple": (225, 210, 245),
    "orange": (255, 222, 190),
}
NOISE_LEVEL, NOISE_STD = 225.0, 18.0  # "light noise": grey-ish paper, mean 225, per-pixel std ~18
BACKGROUNDS = (*PLAIN_BACKGROUNDS, "pastel", "saturated", "noise")


def shape_outline(shape: str, box: float, cx: float, cy: float, rotation: float = 0.0):
    """The shape in pixel coordinates (x right, y down) inside a box x box square centred on (cx, cy).

    Returns a list of ("polygon", [(x, y), ...]) and ("ellipse", (x0, y0, x1, y1)) parts whose union
    is the shape. ``rotation`` (degrees, counter-clockwise on screen) turns the polygon parts about
    (cx, cy); a circle or the heart's round lobes turn with their centres.
    """
    h = box / 2

    def turn(x: float, y: float) -> tuple[float, float]:
        a = math.radians(rotation)
        dx, dy = x - cx, y - cy
        return (cx + dx * math.cos(a) + dy * math.sin(a), cy - dx * math.sin(a) + dy * math.cos(a))

    def polygon(points):
        return ("polygon", [turn(x, y) for x, y in points])

    if shape == "circle":
        return [("ellipse", (cx - h, cy - h, cx + h, cy + h))]
    if shape == "square":
        return [polygon([(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)])]
    if shape == "triangle":
        height = box * math.sqrt(3) / 2
        top, bottom = cy - height / 2, cy + height / 2
        return [polygon([(cx, top), (cx + h, bottom), (cx - h, bottom)])]
    if shape == "star":
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5  # the first point straight up
        radii = np.where(np.arange(10) % 2 == 0, h, h * STAR_INNER)
        return [polygon(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles)))]
    if shape == "cross":
        w = box * CROSS_BAR / 2
        return [polygon([(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + h), (cx - w, cy + h)]),
                polygon([(cx - h, cy - w), (cx + h, cy - w), (cx + h, cy + w), (cx - h, cy + w)])]
    if shape == "heart":
        r, dx = HEART_RADIUS * box, HEART_OFFSET * box
        top = cy - HEART_DEPTH * box / 2
        parts = []
        for side in (-1, 1):
            x, y = turn(cx + side * dx, top + r)
            parts.append(("ellipse", (x - r, y - r, x + r, y + r)))
        parts.append(polygon([(cx - h, top + r), (cx + h, top + r), (cx, top + HEART_DEPTH * box)]))
        return parts
    raise ValueError(f"shape must be one of {SHAPES}, found {shape!r}")


def shape_mask(shape: str, canvas: tuple[int, int], size: float, centre: tuple[float, float] = (0.5, 0.5),
               rotation: float = 0.0, antialias: bool = True) -> np.ndarray:  # -> [h, w] float32 in [0, 1]
    """Coverage of each pixel by the shape: 1 inside, 0 outside.

    The shape is drawn with ImageDraw at SUPERSAMPLE x the canvas, then reduced: with LANCZOS for
    anti-aliased edges (coverage in between on the outline), or with a box filter and a threshold
    at 1/2 for hard edges (a pixel is in when at least half of it is), so both kinds have the same
    geometry to within a quarter pixel.
    """
    width, height = canvas
    mask = np.zeros((height, width), dtype=np.float32)
    crop, (x0, y0) = _mask_window(shape, canvas, size, centre, rotation, antialias)
    mask[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return mask


_WINDOW_MARGIN = 4  # output pixels around the shape's box: more than LANCZOS's reach (3) at any scale


def _mask_window(shape, canvas, size, centre, rotation, antialias):  # -> [h', w'] float32, (x0, y0)
    """shape_mask on the window of the canvas that holds the shape (the rest is 0): a 16 px shape
    on a 512 px canvas costs a 24 px window, not the canvas, at 4x."""
    width, height = canvas
    s = SUPERSAMPLE
    a = math.radians(rotation)
    reach = size * min(width, height) / 2 * (abs(math.cos(a)) + abs(math.sin(a)))  # half the turned box
    cx, cy = centre[0] * width, centre[1] * height
    x0, y0 = max(0, math.floor(cx - reach) - _WINDOW_MARGIN), max(0, math.floor(cy - reach) - _WINDOW_MARGIN)
    x1, y1 = min(width, math.ceil(cx + reach) + _WINDOW_MARGIN), min(height, math.ceil(cy + reach) + _WINDOW_MARGIN)
    big = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(big)
    # In the window's supersampled pixels: x -> (x - x0) * s.
    for kind, geometry in shape_outline(shape, size * min(width, height) * s, (cx - x0) * s, (cy - y0) * s, rotation):
        # Pillow truncates coordinates to whole (supersampled) pixels and fills inclusively: the
        # shapes are right to within a quarter of an output pixel, the polygons up to that much
        # larger on the top and left.
        if kind == "ellipse":  # an inclusive box: the continuous box [u0, u1) is pixels u0 .. u1 - 1
            u0, v0, u1, v1 = geometry
            draw.ellipse([math.floor(t + 0.5) for t in (u0, v0, u1 - 1, v1 - 1)], fill=255)
        else:  # pixel i's centre is at i in Pillow's coordinates, at i + 1/2 in continuous ones
            draw.polygon([(u - 0.5, v - 0.5) for u, v in geometry], fill=255)
    if antialias:
        crop = np.asarray(big.resize((x1 - x0, y1 - y0), Image.LANCZOS), dtype=np.float32) / 255
    else:
        crop = (np.asarray(big.resize((x1 - x0, y1 - y0), Image.BOX)) >= 128).astype(np.float32)
    return crop, (x0, y0)


def background_image(kind: str, canvas: tuple[int, int], rng: np.random.Generator,
                     object_colour: str | None = None) -> np.ndarray:  # -> [h, w, 3] uint8
    """A background of ``kind`` (one of BACKGROUNDS). "pastel" and "saturated" pick, with ``rng``,
    a hue other than ``object_colour``'s (saturated: another named colour's exact RGB); "noise"
    is a light grey with per-pixel Gaussian noise (a little colour in it too)."""
    width, height = canvas
    others = [c for c in COLOURS if c != object_colour]
    if kind in PLAIN_BACKGROUNDS:
        rgb = PLAIN_BACKGROUNDS[kind]
    elif kind == "pastel":
        rgb = PASTELS[others[int(rng.integers(len(others)))]]
    elif kind == "saturated":
        rgb = COLOURS[others[int(rng.integers(len(others)))]]
    elif kind == "noise":
        grey = rng.standard_normal((height, width, 1)) * NOISE_STD
        tint = rng.standard_normal((height, width, 3)) * (NOISE_STD / 3)
        return np.clip(NOISE_LEVEL + grey + tint + 0.5, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"background must be one of {BACKGROUNDS}, found {kind!r}")
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (height, width, 3)).copy()


def draw_shape(shape: str, rgb: tuple[int, int, int], canvas: tuple[int, int], size: float,
               centre: tuple[float, float] = (0.5, 0.5), background=(255, 255, 255), rotation: float = 0.0,
               antialias: bool = True) -> np.ndarray:  # -> [h, w, 3] uint8
    """One filled ``shape`` of colour ``rgb`` painted over ``background`` (an [h, w, 3] image or an RGB).

    pixel = background * (1 - coverage) + rgb * coverage, rounded: exactly ``rgb`` where the shape
    covers the pixel, exactly the background where it does not touch it.
    """
    width, height = canvas
    if not 0 < size <= 1:
        raise ValueError(f"size must lie in (0, 1] (a fraction of the short side), found {size!r}")
    base = np.asarray(background, dtype=np.float32)
    if base.ndim == 1:
        base = np.broadcast_to(base, (height, width, 3))
    if base.shape != (height, width, 3):
        raise ValueError(f"background must be [{height}, {width}, 3] for canvas {canvas}, found {base.shape}")
    alpha, (x0, y0) = _mask_window(shape, canvas, size, centre, rotation, antialias)  # [h', w']
    window = (slice(y0, y0 + alpha.shape[0]), slice(x0, x0 + alpha.shape[1]))
    alpha = alpha[:, :, None]
    out = np.clip(np.rint(base), 0, 255).astype(np.uint8)  # (a copy: the background is not changed)
    blend = base[window] * (1 - alpha) + np.asarray(rgb, dtype=np.float32) * alpha
    out[window] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out


def jpeg_round_trip(image: np.ndarray, quality: int = 75) -> np.ndarray:  # [h, w, 3] uint8 -> same
    """Save as JPEG (Pillow's defaults: 4:2:0 chroma subsampling) and read back."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


# ----------------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------------

CANVASES = ((16, 16), (32, 32), (48, 48), (96, 96), (224, 224), (512, 512), (320, 200), (200, 320))
OBJECT_SIZES = {"small": 0.30, "medium": 0.55, "large": 0.85}  # fractions of the short side
JPEG_QUALITY = 75
# Objects in the exact COLOURS RGB, no jitter (training jitters each channel by up to 12).
SQUARE_TILT = 10.0  # a square is turned by up to +-10 degrees, as a hand-placed square might be
CLASSES = [(shape, colour) for shape in SHAPES for colour in COLOURS]  # shape-major, as synthetic.all_classes()
CLASS_NAMES = [class_name(shape, colour) for shape, colour in CLASSES]


@dataclass(frozen=True)
class Condition:
    background: str
    canvas: tuple[int, int]  # (width, height)
    size: str  # a key of OBJECT_SIZES
    jpeg: bool

    @property
    def canvas_name(self) -> str:
        width, height = self.canvas
        return str(width) if width == height else f"{width}x{height}"


def condition_grid(backgrounds=BACKGROUNDS, canvases=CANVASES, sizes=tuple(OBJECT_SIZES),
                   jpeg=(False, True)) -> list[Condition]:
    """Every combination, in a fixed order (the full evaluation: 7 x 8 x 3 x 2 = 336 conditions)."""
    return [Condition(b, c, s, j) for b in backgrounds for c in canvases for s in sizes for j in jpeg]


@dataclass(frozen=True)
class Case:
    """How one image of the grid was drawn (the image itself is not kept: 512x512 ones add up)."""

    condition: Condition
    label: int  # index into CLASSES
    centre: tuple[float, float]  # fractions of (width, height)
    rotation: float  # degrees
    antialias: bool


def _drawing(condition: Condition, label: int, seed: int):  # -> [h, w, 3] uint8, centre, rotation, antialias
    """Class ``label`` drawn for ``condition``, before any JPEG round trip. Random choices (position,
    the square's tilt, hard or anti-aliased edges, the pastel / saturated hue, the noise) come from
    a generator seeded by (seed, background, canvas, size, label): the JPEG flag is left out, so
    the JPEG and no-JPEG versions of a case are one drawing."""
    shape, colour = CLASSES[label]
    key = [seed, BACKGROUNDS.index(condition.background), *condition.canvas,
           list(OBJECT_SIZES).index(condition.size), label]
    rng = np.random.default_rng(key)
    size = OBJECT_SIZES[condition.size]
    width, height = condition.canvas
    rotation = float(rng.uniform(-SQUARE_TILT, SQUARE_TILT)) if shape == "square" else 0.0
    # The centre anywhere that keeps the (turned) shape 2% of the short side, and at least one
    # pixel, inside the canvas; a large square turned by 10 degrees cannot be (its corners reach
    # 0.49 of the side): centred.
    a = math.radians(rotation)
    short = min(width, height)
    margin = size / 2 * (abs(math.cos(a)) + abs(math.sin(a))) * short + max(0.02 * short, 1.0)
    centre = tuple(float(rng.uniform(low, 1 - low)) for low in (min(margin / side, 0.5) for side in (width, height)))
    antialias = bool(rng.random() < 0.5)
    background = background_image(condition.background, condition.canvas, rng, colour)
    image = draw_shape(shape, COLOURS[colour], condition.canvas, size, centre, background, rotation, antialias)
    return image, centre, rotation, antialias


def draw_case(condition: Condition, label: int, seed: int = 0) -> tuple[np.ndarray, Case]:
    """Class ``label`` drawn in ``condition``: the [h, w, 3] uint8 image and its Case."""
    image, centre, rotation, antialias = _drawing(condition, label, seed)
    if condition.jpeg:
        image = jpeg_round_trip(image, JPEG_QUALITY)
    return image, Case(condition, label, centre, rotation, antialias)


def iter_cases(conditions, labels=None, seed: int = 0):
    """(image, Case) for every class (or ``labels``) in every condition. Conditions that differ only
    in the JPEG flag share one drawing, drawn once; the order is by (background, canvas, size),
    then label, then JPEG flag."""
    labels = range(len(CLASSES)) if labels is None else labels
    groups: dict[tuple, list[Condition]] = {}
    for c in conditions:
        groups.setdefault((c.background, c.canvas, c.size), []).append(c)
    for group in groups.values():
        for label in labels:
            image, centre, rotation, antialias = _drawing(group[0], label, seed)
            for c in group:
                case = Case(c, label, centre, rotation, antialias)
                yield (jpeg_round_trip(image, JPEG_QUALITY) if c.jpeg else image), case


# ----------------------------------------------------------------------------------------------
# the model, as a user runs it
# ----------------------------------------------------------------------------------------------


def prompt_embeddings(model, processor) -> np.ndarray:  # -> [36, P], unit rows
    """The 36 class prompts (the training evaluation's ZERO_SHOT_PROMPT) through the text tower, once."""
    from minialign.loss import l2_normalize
    from minialign.training.recipe import ZERO_SHOT_PROMPT

    tokens = processor.tokenizer([ZERO_SHOT_PROMPT.format(c) for c in CLASS_NAMES], padding="longest",
                                 return_tensors="np")
    return l2_normalize(model.get_text_features(tokens["input_ids"], tokens["attention_mask"]))


def predict(model, processor, images, text: np.ndarray | None = None, batch: int = 256) -> np.ndarray:  # -> [N] int
    """Zero-shot class of each image (any size): ``processor`` resizes it to the model's 48x48 (aspect
    not kept, as at inference), the argmax of cos(image embedding, prompt embedding) over CLASSES."""
    from minialign.loss import l2_normalize

    text = prompt_embeddings(model, processor) if text is None else text
    predicted = []
    for s in range(0, len(images), batch):
        pixels = processor(images=list(images[s:s + batch]))["pixel_values"]  # [b, 3, 48, 48]
        predicted.append(np.argmax(l2_normalize(model.get_image_features(pixels)) @ text.T, axis=1))
    return np.concatenate(predicted) if predicted else np.zeros(0, dtype=int)


def evaluate(model, processor, conditions, labels=None, seed: int = 0, batch: int = 256):  # -> list[Case], [N]
    """Draw the grid and classify it, ``batch`` images at a time (only one batch of images is held)."""
    text = prompt_embeddings(model, processor)
    cases, images, predicted = [], [], []
    for image, case in iter_cases(conditions, labels, seed):
        cases.append(case)
        images.append(image)
        if len(images) == batch:
            predicted.append(predict(model, processor, images, text, batch))
            images = []
    predicted.append(predict(model, processor, images, text, batch))
    return cases, np.concatenate(predicted)


# ----------------------------------------------------------------------------------------------
# the rates
# ----------------------------------------------------------------------------------------------

GROUPS = {  # name -> the value of a Case that the rates are broken down by
    "background": lambda c: c.condition.background,
    "canvas": lambda c: c.condition.canvas_name,
    "object_size": lambda c: c.condition.size,
    "jpeg": lambda c: "jpeg q75" if c.condition.jpeg else "no jpeg",
    "pair": lambda c: "held out" if CLASSES[c.label] in HELD_OUT else "seen",
    "shape": lambda c: CLASSES[c.label][0],
    "colour": lambda c: CLASSES[c.label][1],
    "edges": lambda c: "anti-aliased" if c.antialias else "hard",
}


def _rates(true: np.ndarray, predicted: np.ndarray) -> dict:
    """top-1, shape-correct and colour-correct rates of labels ``true`` vs ``predicted`` ([n] each)."""
    n_colours = len(COLOURS)  # CLASSES is shape-major: label = shape * 6 + colour
    return {
        "n": int(len(true)),
        "top1": float(np.mean(true == predicted)),
        "shape": float(np.mean(true // n_colours == predicted // n_colours)),
        "colour": float(np.mean(true % n_colours == predicted % n_colours)),
    }


CROSSED = (("object_size", "canvas"), ("object_size", "shape"), ("background", "object_size"))


def summarize(cases: list[Case], predicted: np.ndarray, top_confusions: int = 15) -> dict:
    """Rates overall and per value of every GROUPS entry, top-1 per pair of values of the CROSSED
    groups ("object_size x canvas": {"small": {"16": 0.1, ...}, ...}), and the most frequent mistakes."""
    true = np.array([c.label for c in cases])
    predicted = np.asarray(predicted)
    values = {group: np.array([key(c) for c in cases]) for group, key in GROUPS.items()}
    result = {"overall": _rates(true, predicted), "per": {}, "crossed_top1": {}}
    for group, v in values.items():
        result["per"][group] = {x: _rates(true[v == x], predicted[v == x])
                                for x in dict.fromkeys(v.tolist())}  # first-seen order
    for rows, cols in CROSSED:
        table = result["crossed_top1"][f"{rows} x {cols}"] = {}
        for r in dict.fromkeys(values[rows].tolist()):
            for c in dict.fromkeys(values[cols].tolist()):
                chosen = (values[rows] == r) & (values[cols] == c)
                if chosen.any():
                    table.setdefault(r, {})[c] = float(np.mean(true[chosen] == predicted[chosen]))
    wrong = true != predicted
    pairs = Counter(zip(true[wrong].tolist(), predicted[wrong].tolist()))
    shapes = Counter((CLASSES[t][0], CLASSES[p][0]) for t, p in zip(true[wrong], predicted[wrong])
                     if CLASSES[t][0] != CLASSES[p][0])
    labels = Counter(predicted[wrong].tolist())
    result["confusions"] = {
        "wrong": int(wrong.sum()),
        "most_frequent_wrong_labels": [{"label": CLASS_NAMES[p], "count": n}
                                       for p, n in labels.most_common(top_confusions)],
        "most_frequent_pairs": [{"true": CLASS_NAMES[t], "predicted": CLASS_NAMES[p], "count": n}
                                for (t, p), n in pairs.most_common(top_confusions)],
        "shape_to_shape": [{"true": t, "predicted": p, "count": n} for (t, p), n in shapes.most_common(top_confusions)],
    }
    return result
