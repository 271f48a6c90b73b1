"""A synthetic "noisy web alt-text" dataset: coloured shapes and the captions the web would give them.

ALIGN (Jia et al. 2021) trains on ~1.8 billion image / alt-text pairs scraped from the web with
only simple frequency-based filtering: the paper's point is that scale beats cleaning. Its alt
texts are short, often incomplete ("circle"), full of junk ("IMG_2041.jpg", "free download",
"stock photo ... for sale"), use many words for one thing (crimson, scarlet, cherry red) and are
sometimes simply the text of another picture. This module makes a tiny world with the same kind
of noise, small enough to train a tiny ALIGN on 2 CPU cores in minutes:

    image    64x64 RGB, one object (sometimes a second, smaller one) on a grey-ish background,
             or (``variety``) drawn as people draw shapes: any background, any size, stretched,
             hard-edged, JPEG-compressed
    caption  alt-text-like, lower-case ASCII, at most 16 words: "photo of a small crimson disc",
             "img_2041.jpg red circle", "circle", "red circle and blue star", ...
    label    (shape, colour) of the main object: SHAPES x COLOURS = 36 classes

Compositional zero-shot transfer. ``HELD_OUT`` names 6 (shape, colour) pairs, one per shape and
one per colour, that never appear in the training split -- neither as the main object nor as the
second one, in no caption and no image -- while every shape and every colour on its own appears
in training with 5 partners each. The test split shows only held-out pairs. A model that
classifies a "blue circle" correctly having seen blue things and circles, but never a blue
circle, has learned "blue" and "circle" as separate concepts and composes them: the property
that lets ALIGN / CLIP classify zero-shot with prompts it never saw as captions.

The noise knobs (module constants unless said otherwise):

- ``wrong_caption_fraction`` (argument of ``generate``, default 0.05): that fraction of training
  examples gets the caption of another random image, one that mentions neither the shape nor the
  colour of this image's main object. ``Example.correct_caption`` records it.
- ``two_object_fraction`` (argument, default 0.15): a second, smaller object; its caption may
  describe both ("red circle and blue star") or only the main one.
- ``unnamed_colour_fraction`` (argument, default 0): that fraction of training examples shows
  one object in a colour that has no name here (lime, teal, magenta, pink, ...: ``UNNAMED_HUES``),
  captioned by its shape only ("star icon"). The web has stars of every colour, and most alt
  texts do not say which. They are what teaches a model that a star is a star whatever its
  colour; without them a small vision tower learns "star" only in the colours it saw stars in
  (``docs/training.md``). ``Example.colour`` is None for them.
- ``ATTRIBUTES``: how often a caption names both attributes, only the shape, or only the colour.
- ``SYNONYM_RATE``: how often a synonym replaces the canonical word (``SYNONYMS``).
- ``FILLER_RATE`` / ``JUNK_RATE``: unrelated words ("royalty free", "hd") and file-name junk
  ("dsc_0042", "final_v2") added before or after the description.
- Images: size 42-60% of the side (30-45% for the main one of two objects), position, rotation,
  colour jitter of +-12 per channel, backgrounds that are plain, gradient or lightly noisy grey
  tints, never close to an object colour (every object colour is saturated, every background
  almost grey).
- ``variety`` (argument, default 0): that fraction of the images looks like what a person draws
  with a paint program or Pillow instead: white, black, grey, pastel or saturated backgrounds,
  sometimes textured, always at least 90 (RGB distance) from every object on them and never of
  the held-out colour of an object's shape (no circle on blue: ``shows_held_out_colour``); one
  object from 22% to 85% of the side, anywhere; the scene stretched by up to 1.65x either way, as
  a non-square canvas is by the processor's resize to a square; drawn at 16 to 96 pixels and
  resized to ``image_size`` as the processor resizes a file (``VARIED_RESOLUTION``); hard edges
  in 30% of them and a JPEG round trip (quality 30-94, at the drawn size) in 30%. The captions do
  not change: the web's alt text rarely describes the background.

The levels are set for a model that must learn in 15 minutes on 2 CPU cores (about 180,000
pairs seen). The first version had 35% synonyms, 30% one-attribute captions, 10% wrong captions,
25% two-object images and single objects from 35% of the side; align-nano then learned the
training pairs themselves only to 60-80% in that budget, and objects under 42% of the side
(17-20 pixels at 48x48) were its most frequent shape errors. ``docs/training.md`` has the runs.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``(seed, split)``, so a seed
gives the same examples on every machine. Rendering uses Pillow, drawn at 2x and box-filtered
down (anti-aliased edges); 10,000 64x64 training examples take about 6 s of one core.
"""

from __future__ import annotations

import colorsys
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .validation import is_fraction, is_int

# ----------------------------------------------------------------------------------------------
# the world: shapes, colours, classes
# ----------------------------------------------------------------------------------------------

# Six shapes that stay distinct at 64x64 under the rotations below (a square never turns into a
# diamond, a cross never into an x).
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart")

# Six saturated colours, pairwise at least ~90 apart in RGB (red-orange and orange-yellow are the
# closest) and at least ~100 from the grey axis, where every background lies.
COLOURS = {
    "red": (220, 30, 35),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 30),
    "purple": (140, 50, 195),
    "orange": (245, 130, 20),
}

# Never seen in training. One per shape and one per colour (a permutation, i.e. a Latin
# "diagonal"), so that every shape and every colour keeps 5 of its 6 partners in training and
# the held-out pairs are 1/6 of all 36 classes.
HELD_OUT = (
    ("circle", "blue"),
    ("square", "yellow"),
    ("triangle", "purple"),
    ("star", "green"),
    ("cross", "orange"),
    ("heart", "red"),
)

SPLITS = ("train", "test", "test_seen")


def class_name(shape: str, colour: str) -> str:
    """("circle", "red") -> "red circle": the canonical text of a class, e.g. for zero-shot prompts."""
    return f"{colour} {shape}"


def all_classes() -> list[tuple[str, str]]:
    """All 36 (shape, colour) pairs, shape-major, in a fixed order (a class index is a position here)."""
    return [(shape, colour) for shape in SHAPES for colour in COLOURS]


def held_out_classes() -> list[tuple[str, str]]:
    """The 6 pairs of ``HELD_OUT``, in ``all_classes()`` order: the test split's labels."""
    return [pair for pair in all_classes() if pair in HELD_OUT]


def train_classes() -> list[tuple[str, str]]:
    """The 30 pairs the training split draws its objects from (all but ``HELD_OUT``)."""
    return [pair for pair in all_classes() if pair not in HELD_OUT]


def classes(split: str) -> list[tuple[str, str]]:
    """The pairs whose main objects a split shows: train / test_seen -> train_classes(), test -> held-out."""
    _check_split(split)
    return held_out_classes() if split == "test" else train_classes()


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------

# Degrees of rotation each shape may get: small for the square and the cross so they keep their
# identity (45 degrees would make them a diamond and an x), the star's full period (72 degrees).
MAX_ROTATION = {"circle": 0.0, "square": 12.0, "triangle": 15.0, "star": 36.0, "cross": 15.0, "heart": 15.0}

COLOUR_JITTER = 12  # each object's RGB is its colour + uniform integers in [-12, 12] per channel
_SUPERSAMPLE = 2  # draw at 2x, box-filter down: anti-aliased edges at little cost


def _fit_box(points: np.ndarray) -> np.ndarray:  # [k, 2] -> [k, 2]
    """Centre an outline's bounding box on 0 and scale it so the box is [-1, 1] on its longer side."""
    centre = (points.max(axis=0) + points.min(axis=0)) / 2
    points = points - centre
    return points / np.abs(points).max()


def _regular_star(points: int, inner: float) -> np.ndarray:  # -> [2 * points, 2]
    """Alternating outer (radius 1) and inner vertices, the first one pointing up (y grows down)."""
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _heart() -> np.ndarray:  # -> [64, 2]
    """The classic heart curve x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t (flipped: y down)."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y], axis=1)


_ARM = 0.32  # half-width of the cross's arms, in units of its half-size
# Each polygon shape as an outline in image orientation (x right, y down), its bounding box [-1, 1].
# The circle is drawn as an ellipse; its "outline" only serves the placement arithmetic.
OUTLINES = {
    "circle": np.array([[-1.0, -1.0], [1.0, 1.0]]),
    "square": np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),
    "triangle": _fit_box(np.array([[0.0, -math.sqrt(3) / 2], [1.0, math.sqrt(3) / 2], [-1.0, math.sqrt(3) / 2]])),
    "star": _fit_box(_regular_star(5, inner=0.45)),
    "cross": np.array([
        [-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM],
        [_ARM, 1], [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM], [-_ARM, -_ARM],
    ], dtype=float),
    "heart": _fit_box(_heart()),
}


@dataclass(frozen=True)
class SceneObject:
    """One shape in an image. Geometry is in fractions of the image side, so any image_size works.

    ``size`` is the side of the (unrotated) bounding box, ``(x, y)`` its centre (x right, y down),
    ``rotation`` in degrees (counter-clockwise on screen), ``rgb`` the colour actually drawn
    (``COLOURS[colour]`` plus jitter; ``None`` draws the exact colour). ``colour=None`` is a
    colour with no name (``unnamed_rgb``), which then needs its ``rgb``.
    """

    shape: str
    colour: str | None
    size: float
    x: float = 0.5
    y: float = 0.5
    rotation: float = 0.0
    rgb: tuple[int, int, int] | None = None
    # Width / height of the drawn shape relative to its true proportions: what a non-square canvas
    # becomes after the processor's resize to a square (a circle on a 320x200 canvas is a wide ellipse).
    aspect: float = 1.0

    def __post_init__(self) -> None:
        if self.shape not in OUTLINES:
            raise ValueError(f"shape must be one of {SHAPES}, found {self.shape!r}")
        if self.colour is None:
            if self.rgb is None:
                raise ValueError("an object of no named colour (colour=None) needs its rgb")
        elif self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {tuple(COLOURS)} or None, found {self.colour!r}")
        if not 0 < self.size <= 1:
            raise ValueError(f"size must lie in (0, 1] (a fraction of the image side), found {self.size!r}")

    def outline(self) -> np.ndarray:  # -> [k, 2], in fractions of the image side
        """The rotated outline placed in the image (for the circle: its bounding box corners)."""
        return _extent(self.shape, self.rotation, self.size, self.aspect) + (self.x, self.y)


def _extent(shape: str, rotation: float, size: float, aspect: float = 1.0) -> np.ndarray:  # -> [k, 2]
    """The outline of an object of ``size`` centred at the origin, rotated, then stretched by
    ``aspect`` (x by sqrt(aspect), y by 1 / sqrt(aspect): the area stays)."""
    stretch = np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)])
    return _rotated(shape, rotation) * (size / 2) * stretch


def _rotated(shape: str, degrees: float) -> np.ndarray:  # -> [k, 2]
    """``OUTLINES[shape]`` turned counter-clockwise on screen (y points down):
    [x', y'] = [x cos a + y sin a, -x sin a + y cos a]. The circle is never turned."""
    points = OUTLINES[shape]
    if shape == "circle" or not degrees:
        return points
    a = math.radians(degrees)
    return points @ np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


@dataclass(frozen=True)
class Background:
    """An almost grey background: ``rgb`` (a tinted grey), a linear ``gradient`` of that many pixel
    values from one side to the other along ``angle`` degrees, and Gaussian ``noise`` (std, clipped
    at 3 std). ``gradient=0, noise=0`` is a plain background."""

    rgb: tuple[float, float, float]
    gradient: float = 0.0
    angle: float = 0.0
    noise: float = 0.0

    @property
    def dark(self) -> bool:
        return sum(self.rgb) / 3 < 128


# Background levels: dark greys or light greys, each channel tinted by at most +-10; a gradient
# shifts all channels alike (no colour), noise is grey-ish and small. So every background pixel
# stays far (>~60) from every object colour, which all lie >~100 off the grey axis.
_DARK_LEVELS, _LIGHT_LEVELS = (40.0, 90.0), (150.0, 220.0)
_TINT = 10.0
_GRADIENT_RATE, _GRADIENT_RANGE = 0.4, (15.0, 50.0)
_NOISE_RATE, _NOISE_RANGE = 0.4, (2.0, 5.0)


def random_background(rng: np.random.Generator) -> Background:
    """Draw a background: dark grey (35%) or light grey (65%), sometimes a gradient, sometimes noise."""
    low, high = _DARK_LEVELS if rng.random() < 0.35 else _LIGHT_LEVELS
    level = rng.uniform(low, high)
    rgb = tuple(float(level + t) for t in rng.uniform(-_TINT, _TINT, 3))
    gradient = rng.uniform(*_GRADIENT_RANGE) if rng.random() < _GRADIENT_RATE else 0.0
    angle = rng.uniform(0, 360)
    noise = rng.uniform(*_NOISE_RANGE) if rng.random() < _NOISE_RATE else 0.0
    return Background(rgb=rgb, gradient=float(gradient), angle=float(angle), noise=float(noise))


# The backgrounds a person draws on without thinking, for the ``variety`` share of the examples
# (``generate``): white and black, greys of every level, pastels, saturated colours, and light
# texture over any of these. Each background keeps a distance of at least _MIN_CONTRAST (in RGB)
# from every object on it, so that no object vanishes into its background. At 90 the generator
# never put orange on yellow (86 apart), and a model trained so read 7% of orange shapes on
# yellow right; 80 lets that pair in. A NumPy run at 50 sat on its plateau until step 1900 where
# the run at 80 left it by step 800 (docs/training-runs.md, "Drawn shapes in training").
VARIED_BACKGROUNDS = {"white": 0.2, "black": 0.15, "grey": 0.15, "pastel": 0.2, "saturated": 0.2, "textured": 0.1}
_MIN_CONTRAST = 80.0
_TEXTURE_NOISE = (8.0, 20.0)
_BACKGROUND_TRIES = 20


def varied_background(rng: np.random.Generator, objects: Sequence[SceneObject]) -> Background:
    """A background of ``VARIED_BACKGROUNDS``' kinds, at least _MIN_CONTRAST from every object's colour
    and not of a held-out colour for any object's shape (``shows_held_out_colour``): redrawn within
    its kind until it is, then any white or black that is far enough."""
    kinds = list(VARIED_BACKGROUNDS)
    kind = kinds[int(rng.choice(len(kinds), p=list(VARIED_BACKGROUNDS.values())))]
    noise = float(rng.uniform(*_TEXTURE_NOISE)) if kind == "textured" else 0.0
    if kind == "textured":
        kind = ("grey", "pastel")[int(rng.integers(2))]
    shapes = [o.shape for o in objects]
    for _ in range(_BACKGROUND_TRIES):
        rgb = _background_rgb(kind, rng)
        if min(math.dist(rgb, o.rgb) for o in objects) >= _MIN_CONTRAST and not shows_held_out_colour(rgb, shapes):
            return Background(rgb=rgb, noise=noise)
    farthest = max(((255.0,) * 3, (0.0,) * 3), key=lambda c: min(math.dist(c, o.rgb) for o in objects))
    return Background(rgb=farthest, noise=noise)


# A background shows a named colour when it is at least this saturated and this close in hue.
_HUE_SATURATION, _HUE_DEGREES = 0.08, 30.0
_HELD_OUT_HUES = {shape: colorsys.rgb_to_hsv(*(c / 255 for c in COLOURS[colour]))[0] for shape, colour in HELD_OUT}


def shows_held_out_colour(rgb: Sequence[float], shapes: Sequence[str]) -> bool:
    """Whether a background of ``rgb`` shows the held-out colour of one of ``shapes``.

    A held-out pair stays out of training altogether: a circle on a blue (or light blue) ground
    shows blue and a circle together while its caption names another colour, which teaches that
    blue beside a circle is *not* a blue circle, the opposite of the test.
    """
    hue, saturation, _ = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if saturation < _HUE_SATURATION:
        return False
    return any(abs((hue - _HELD_OUT_HUES[shape] + 0.5) % 1 - 0.5) * 360 < _HUE_DEGREES
               for shape in shapes if shape in _HELD_OUT_HUES)


def _background_rgb(kind: str, rng: np.random.Generator) -> tuple[float, float, float]:
    if kind == "white":
        return (float(rng.uniform(235, 255)),) * 3
    if kind == "black":
        return (float(rng.uniform(0, 25)),) * 3
    if kind == "grey":
        return (float(rng.uniform(25, 235)),) * 3
    saturation, value = ((0.1, 0.35), (0.85, 1.0)) if kind == "pastel" else ((0.5, 1.0), (0.4, 1.0))
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return tuple(255.0 * c for c in rgb)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:  # [H, W, 3] uint8 -> [H, W, 3] uint8
    """The image as a JPEG of ``quality`` would give it back: blocky, with colour bleeding at edges."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@lru_cache(maxsize=8)
def _unit_grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:  # -> [H, W], [H, W] in [-0.5, 0.5]
    c = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size - 0.5
    return np.meshgrid(c, c, indexing="xy")  # u varies along x (columns), v along y (rows)


@lru_cache(maxsize=8)
def _noise_texture(image_size: int) -> np.ndarray:  # -> [4 H, 4 W, 3] float32, N(0, 1) clipped at +-3
    """A fixed field of Gaussian noise that images crop at random offsets: drawing 3 H W normals
    per image would be the most expensive step of generation; a crop costs nothing."""
    noise = np.random.default_rng(20210611).standard_normal((4 * image_size, 4 * image_size, 3), dtype=np.float32)
    return np.clip(noise, -3, 3)


def _paint_background(background: Background, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Background -> [H, W, 3] uint8."""
    rgb = np.asarray(background.rgb, dtype=np.float32)  # [3]
    if not background.gradient and not background.noise:  # plain: the common case, made cheap
        return np.broadcast_to(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), (image_size, image_size, 3))
    out = np.empty((image_size, image_size, 3), dtype=np.float32)
    out[:] = rgb
    if background.gradient:
        u, v = _unit_grid(image_size)
        a = math.radians(background.angle)
        ramp = (math.cos(a) * u + math.sin(a) * v) * np.float32(background.gradient)  # [H, W]
        out += ramp[:, :, None]
    if background.noise:
        top, left = rng.integers(3 * image_size, size=2)
        noise = _noise_texture(image_size)[top : top + image_size, left : left + image_size]  # [H, W, 3]
        out += noise * np.float32(background.noise)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _check_image_size(image_size) -> None:
    if not is_int(image_size) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, found {image_size!r}")


def render(
    objects: Sequence[SceneObject],
    *,
    image_size: int = 64,
    background: Background | None = None,
    rng: np.random.Generator | None = None,
    hard_edges: bool = False,
) -> np.ndarray:  # -> [image_size, image_size, 3] uint8
    """Draw ``objects`` (in order, later ones on top) on ``background``.

    ``rng`` draws the background's noise (and the background itself when ``background`` is None);
    without one, ``default_rng(0)``. Each object is drawn as a white-on-black mask at 2x, reduced
    by a 2x2 box filter (so an edge pixel gets the covered fraction) and pasted in its colour
    through that mask: interior pixels are exactly ``object.rgb``. ``hard_edges`` draws the mask at
    1x instead: every pixel all object or all background, as a drawing program without
    anti-aliasing makes it.
    """
    _check_image_size(image_size)
    rng = np.random.default_rng(0) if rng is None else rng
    background = random_background(rng) if background is None else background
    canvas = Image.fromarray(_paint_background(background, image_size, rng))
    scale = 1 if hard_edges else _SUPERSAMPLE
    big = image_size * scale
    for obj in objects:
        mask = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(mask)
        points = obj.outline() * big  # [k, 2] in supersampled pixels
        if obj.shape == "circle":
            draw.ellipse([*points[0], *points[1]], fill=255)
        else:
            draw.polygon(points.ravel().tolist(), fill=255)  # flat [x0, y0, x1, y1, ...]
        rgb = COLOURS[obj.colour] if obj.rgb is None else obj.rgb
        canvas.paste(tuple(int(c) for c in rgb), mask=mask.reduce(scale) if scale > 1 else mask)
    return np.asarray(canvas)


def contact_sheet(images: Sequence[np.ndarray], columns: int = 8, gap: int = 2) -> np.ndarray:
    """[N] x [H, W, 3] uint8 -> one [rows * (H + gap), columns * (W + gap), 3] grid, for eyeballing."""
    h, w, _ = images[0].shape
    rows = -(-len(images) // columns)
    sheet = np.full((rows * (h + gap), columns * (w + gap), 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    return sheet


# ----------------------------------------------------------------------------------------------
# placing objects
# ----------------------------------------------------------------------------------------------

# Sizes (bounding-box side / image side): one object fills 42-60% of the side; with two, the main
# one 30-45% and the second 20-30%, so that both fit side by side.
_SINGLE_SIZE, _MAIN_SIZE, _SECOND_SIZE = (0.42, 0.60), (0.30, 0.45), (0.20, 0.30)
_PLACEMENT_TRIES = 12  # candidate positions for a second object; the one farthest from the first wins
# The ``variety`` images (generate): one object from 22% of the side (10 pixels at 48x48) to 85%,
# a canvas aspect ratio of up to e^0.5 = 1.65 either way, hard edges in 30% of them and a JPEG
# round trip (quality 30-94) in 30%.
_VARIED_SIZE = (0.22, 0.85)
VARIED_ASPECT = 0.5
HARD_EDGE_RATE = 0.3
JPEG_RATE, JPEG_QUALITY = 0.3, (30, 95)
# The side, in pixels, a ``variety`` scene is drawn at before it is resized to ``image_size`` (with
# the processor's bilinear filter): log-uniform from a 16 px icon, blurred when it is scaled up, to
# a 96 px drawing, as smooth as any larger one once scaled down. JPEG applies at the drawn size,
# as it does to a file. (None: drawn at ``image_size`` directly.)
VARIED_RESOLUTION: tuple[int, int] | None = (16, 96)


# Hues (degrees) of the colours no caption names: lime, teal to cyan, magenta to pink. Each band
# keeps >= 30 degrees of hue from every named colour (red 358, orange 29, yellow 53, green 129,
# blue 227, purple 277), so an unnamed object never looks like a named one: no "blue" circle
# sneaks into training as a sky-blue one.
UNNAMED_HUES = ((85.0, 99.0), (160.0, 196.0), (307.0, 328.0))


def unnamed_rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour with no name here: a hue from ``UNNAMED_HUES``, saturation and value in [0.6, 1]."""
    low, high = UNNAMED_HUES[int(rng.integers(len(UNNAMED_HUES)))]
    rgb = colorsys.hsv_to_rgb(rng.uniform(low, high) / 360, rng.uniform(0.6, 1), rng.uniform(0.6, 1))
    return tuple(round(255 * c) for c in rgb)


def _jittered_rgb(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)
    return tuple(min(255, max(0, c + int(j))) for c, j in zip(COLOURS[colour], jitter))


def _place(shape: str, colour: str | None, size: float, rng: np.random.Generator, tries: int = 1,
           away_from: SceneObject | None = None, aspect: float = 1.0) -> SceneObject:
    """An object at a random position where its rotated outline lies fully inside the image.

    With ``away_from``, ``tries`` positions are drawn and the one whose centre is farthest from
    that object's wins (the second object of an image, which the main one is drawn over).
    """
    rotation = float(rng.uniform(-MAX_ROTATION[shape], MAX_ROTATION[shape]))
    rgb = unnamed_rgb(rng) if colour is None else _jittered_rgb(colour, rng)
    # The outline at the origin gives how far the object reaches left/right/up/down of its centre.
    at_origin = _extent(shape, rotation, size, aspect)  # [k, 2]
    # [2] each: the allowed centres per axis (never empty for sizes <= 0.6 and these rotations)
    low, high = -at_origin.min(axis=0), 1 - at_origin.max(axis=0)
    # An object wider than the image on an axis (a large one, stretched or turned) is centred
    # there and runs off both edges a little, as a close-up does. (Drawing 0.5 + 0 * u keeps the
    # random stream of the objects that fit.)
    fits = low <= high
    centres = np.where(fits, rng.uniform(np.where(fits, low, 0.5), np.where(fits, high, 0.5), (tries, 2)), 0.5)
    best = 0
    if away_from is not None:
        best = int(np.argmax(np.hypot(centres[:, 0] - away_from.x, centres[:, 1] - away_from.y)))
    x, y = centres[best]
    return SceneObject(shape, colour, size, float(x), float(y), rotation, rgb, aspect)


# ----------------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------------

# Every way a caption may name a shape or a colour; the canonical name is always first. No form
# is a word of another entry, of the templates, fillers or background words below, so
# ``mentions`` can read the attributes back from any caption.
SYNONYMS = {
    "circle": ("circle", "disc", "disk", "dot", "round shape"),
    "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "triangular shape", "wedge", "pyramid"),
    "star": ("star", "star shape", "five pointed star", "pentagram"),
    "cross": ("cross", "plus", "plus sign", "plus symbol"),
    "heart": ("heart", "heart shape", "love heart", "valentine heart"),
    "red": ("red", "crimson", "scarlet", "cherry red"),
    "green": ("green", "emerald", "grass green", "jade"),
    "blue": ("blue", "azure", "cobalt", "royal blue"),
    "yellow": ("yellow", "golden", "lemon", "canary yellow"),
    "purple": ("purple", "violet", "plum", "lavender"),
    "orange": ("orange", "amber", "tangerine", "pumpkin"),
}

SYNONYM_RATE = 0.2  # how often a synonym (uniformly one of the others) replaces the canonical word
# What a caption of one object names: both attributes, only the shape, only the colour.
ATTRIBUTES = {"both": 0.80, "shape": 0.10, "colour": 0.10}
SIZE_WORD_RATE = 0.3  # "small" / "large" before a clearly small or large object
FILLER_RATE = 0.25  # one or two unrelated words before or after
JUNK_RATE = 0.2  # a file-name-like token before or after
TWO_OBJECT_CAPTION_RATE = 0.65  # a two-object image's caption names both objects (else the main one)
MAX_CAPTION_WORDS = 16

_SMALL_WORDS, _LARGE_WORDS = ("small", "little", "tiny"), ("large", "big", "huge")
_BACKGROUND_WORDS = {
    True: ("dark", "dark grey", "dark gray", "black", "charcoal"),  # dark backgrounds
    False: ("light", "light grey", "light gray", "white", "grey", "gray", "pale"),  # light backgrounds
}
_GRADIENT_WORDS, _NOISE_WORDS = ("gradient", "soft gradient"), ("textured", "grainy", "noisy")

# {np}: the noun phrase ("small crimson disc"); {shape}, {colour}: single words; {bg}: background.
_BOTH_TEMPLATES = (
    "{np}", "{np}", "{np}", "a {np}", "a {np}", "a {np} on a {bg} background", "{np} on {bg} background",
    "photo of a {np}", "picture of a {np}", "stock photo {np} for sale", "{np} icon", "{np} vector illustration",
    "{np} clipart", "image may contain: {np}", "close up of a {np}", "{np}, {bg} background",
    "{np} - free download", "the {shape} is {colour}", "{shape} in {colour}", "{colour} colored {shape}",
    "{shape} ({colour})", "{shape}, {colour}", "my favourite {np}", "{np} isolated on {bg}",
    "{colour} {shape} sticker", "cute {np} drawing", "just a {np}", "{np} !!",
)
_SHAPE_TEMPLATES = (
    "{np}", "{np}", "a {np}", "{np} icon", "{np} on {bg} background", "photo of a {np}", "{np} symbol",
    "the {np}", "{np} clipart", "simple {np}", "{np} sign on {bg}",
)
_COLOUR_TEMPLATES = (
    "{colour}", "{colour}", "{colour} on {bg} background", "something {colour}", "shades of {colour}",
    "{colour} aesthetic", "{colour} color", "all {colour}", "{colour} wallpaper", "{colour} thing",
    "{colour} and {bg}",
)
# {x}: one object's noun phrase, {y}: the other's.
_PAIR_TEMPLATES = (
    "{x} and {y}", "a {x} and a {y}", "{x} next to a {y}", "a {x} with a {y}", "{x} and {y} on {bg} background",
    "two shapes: {x} and {y}", "{x}, {y}", "{x} beside a {y}", "{x} + {y}",
)
_FILLERS = (
    "hd", "free", "new", "cute", "simple", "royalty free", "high quality", "wallpaper", "aesthetic",
    "for sale", "print", "design", "minimal", "art", "2019", "2021", "shop now", "best seller",
    "limited edition", "vector", "illustration", "logo", "pattern", "kids", "diy", "sale",
)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]  # faster than rng.choice on a tuple


def _word(name: str, rng: np.random.Generator) -> str:
    """The canonical word, or (SYNONYM_RATE of the time) one of its synonyms."""
    forms = SYNONYMS[name]
    return _pick(rng, forms[1:]) if rng.random() < SYNONYM_RATE else forms[0]


def _junk(rng: np.random.Generator) -> str:
    """A file-name-like token: "img_2041.jpg", "dsc_0042", "final_v2", ... (lower case)."""
    d = int(rng.integers(10_000))
    kind = int(rng.integers(9))
    return (
        f"img_{d:04d}.jpg", f"dsc_{d:04d}", f"img-{d}.png", f"final_v{d % 9 + 1}", f"untitled-{d % 20}",
        f"photo_20{d % 25:02d}{d % 12 + 1:02d}{d % 28 + 1:02d}", f"image{d % 100}.png", f"p{d:04d}.jpeg",
        f"screenshot_{d:04d}",
    )[kind]


def _size_word(obj: SceneObject, single: bool, rng: np.random.Generator) -> str:
    """ "small" / "large" (or a synonym) when the object is clearly so for its kind of image, else ""."""
    if rng.random() >= SIZE_WORD_RATE:
        return ""
    small, large = (0.47, 0.55) if single else (0.25, 0.40)
    if obj.size < small:
        return _pick(rng, _SMALL_WORDS)
    return _pick(rng, _LARGE_WORDS) if obj.size > large else ""


def _background_word(background: Background, rng: np.random.Generator) -> str:
    options = _BACKGROUND_WORDS[background.dark]
    if background.gradient:
        options += _GRADIENT_WORDS
    if background.noise:
        options += _NOISE_WORDS
    return _pick(rng, options)


def _noun_phrase(obj: SceneObject, attributes: str, single: bool, rng: np.random.Generator) -> str:
    """ "small crimson disc" / "disc" / "crimson": the object's words, per ``attributes``."""
    colour = _word(obj.colour, rng) if attributes in ("both", "colour") else ""
    shape = _word(obj.shape, rng) if attributes in ("both", "shape") else ""
    size = _size_word(obj, single, rng) if shape else ""
    return " ".join(w for w in (size, colour, shape) if w)


def _draw_attributes(rng: np.random.Generator) -> str:
    u = rng.random()
    if u < ATTRIBUTES["both"]:
        return "both"
    return "shape" if u < ATTRIBUTES["both"] + ATTRIBUTES["shape"] else "colour"


def _one_object_caption(obj: SceneObject, background: Background, rng: np.random.Generator) -> str:
    attributes = "shape" if obj.colour is None else _draw_attributes(rng)  # an unnamed colour has no word
    template = _pick(rng, {"both": _BOTH_TEMPLATES, "shape": _SHAPE_TEMPLATES, "colour": _COLOUR_TEMPLATES}[attributes])
    return template.format(
        np=_noun_phrase(obj, attributes, single=True, rng=rng),
        shape=_word(obj.shape, rng),
        colour=_word(obj.colour, rng) if obj.colour is not None else "",  # (no shape template uses it)
        bg=_background_word(background, rng),
    )


def _two_object_caption(main: SceneObject, second: SceneObject, background: Background,
                        rng: np.random.Generator) -> str:
    # The main object usually with both attributes, the second one more often with its shape only.
    x = _noun_phrase(main, "both" if rng.random() < 0.85 else "shape", single=False, rng=rng)
    y = _noun_phrase(second, "both" if rng.random() < 0.7 else "shape", single=False, rng=rng)
    if rng.random() < 0.3:  # the web does not put the main object first
        x, y = y, x
    return _pick(rng, _PAIR_TEMPLATES).format(x=x, y=y, bg=_background_word(background, rng))


_ARTICLE = re.compile(r"\ba (?=[aeiou])")


def caption_for(objects: Sequence[SceneObject], background: Background, rng: np.random.Generator) -> str:
    """A noisy alt-text for an image of ``objects`` (the main one first) on ``background``.

    A template with the objects' words (canonical or synonyms, sometimes only the shape or only the
    colour), then maybe filler words and a file-name token before or after; "a" -> "an" before a
    vowel; at most MAX_CAPTION_WORDS words (longer ones are cut, which no template combination
    reaches today). Always names the shape or the colour of the main object.
    """
    if len(objects) >= 2 and rng.random() < TWO_OBJECT_CAPTION_RATE:
        text = _two_object_caption(objects[0], objects[1], background, rng)
    else:
        text = _one_object_caption(objects[0], background, rng)
    if rng.random() < FILLER_RATE:
        filler = " ".join(_pick(rng, _FILLERS) for _ in range(1 + int(rng.random() < 0.3)))
        text = f"{filler} {text}" if rng.random() < 0.5 else f"{text} {filler}"
    if rng.random() < JUNK_RATE:
        junk = _junk(rng)
        text = f"{junk} {text}" if rng.random() < 0.5 else f"{text} {junk}"
    text = _ARTICLE.sub("an ", text)
    return " ".join(text.split()[:MAX_CAPTION_WORDS])


def _mention_pattern(names: Sequence[str]) -> tuple[re.Pattern, dict[str, str]]:
    form_to_name = {form: name for name in names for form in SYNONYMS[name]}
    forms = sorted(form_to_name, key=len, reverse=True)  # longest first: "cherry red" before "red"
    return re.compile(r"\b(" + "|".join(re.escape(f) for f in forms) + r")\b"), form_to_name


_SHAPE_MENTIONS = _mention_pattern(SHAPES)
_COLOUR_MENTIONS = _mention_pattern(tuple(COLOURS))


def mentions(caption: str) -> tuple[set[str], set[str]]:
    """The canonical shapes and colours a caption names, through any ``SYNONYMS`` form.

    "small crimson disc and blue star" -> ({"circle", "star"}, {"red", "blue"}).
    """
    found = []
    for pattern, form_to_name in (_SHAPE_MENTIONS, _COLOUR_MENTIONS):
        found.append({form_to_name[m] for m in pattern.findall(caption)})
    return found[0], found[1]


# ----------------------------------------------------------------------------------------------
# the dataset
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)  # compared by identity: == on the image arrays would be ambiguous
class Example:
    """One image / alt-text pair. ``shape`` and ``colour`` are the main object's: the zero-shot label.

    ``objects`` lists what was drawn, the main object first (then the second one, if any);
    ``correct_caption`` is False when the caption belongs to another image. ``colour`` is None
    for an object of no named colour (training only: such an image has no zero-shot label).
    """

    image: np.ndarray  # [H, W, 3] uint8
    caption: str
    shape: str
    colour: str | None
    correct_caption: bool = True
    objects: tuple[SceneObject, ...] = field(default=(), repr=False)
    background: Background | None = field(default=None, repr=False)

    @property
    def class_name(self) -> str:
        self._check_named()
        return class_name(self.shape, self.colour)

    @property
    def label(self) -> int:
        """Index of (shape, colour) in ``all_classes()``."""
        self._check_named()
        return SHAPES.index(self.shape) * len(COLOURS) + list(COLOURS).index(self.colour)

    def _check_named(self) -> None:
        if self.colour is None:
            raise ValueError(f"this {self.shape} has a colour with no name, so it belongs to no class")


_WRONG_CAPTION_TRIES = 50  # random other images tried for a wrong caption before giving up


def _check_split(split) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, found {split!r}")


def _check_fraction(name: str, value) -> None:
    if not is_fraction(value):
        raise ValueError(f"{name} must be a number in [0, 1], found {value!r}")


def _swap_captions(examples: list[Example], fraction: float, rng: np.random.Generator) -> None:
    """Give round(fraction * n) random examples the caption of another one that names neither
    their main shape nor their main colour (so a wrong caption is wrong, not a lucky match)."""
    n = len(examples)
    chosen = np.sort(rng.choice(n, size=round(fraction * n), replace=False)) if n else []
    originals = [e.caption for e in examples]
    named: dict[int, tuple[set[str], set[str]]] = {}
    for i in chosen:
        for _ in range(_WRONG_CAPTION_TRIES):
            j = int(rng.integers(n))
            if j not in named:
                named[j] = mentions(originals[j])
            shapes, colours = named[j]
            if j != i and examples[i].shape not in shapes and examples[i].colour not in colours:
                examples[i].caption, examples[i].correct_caption = originals[j], False
                break  # (no such j in 50 tries -- only with a handful of examples: keep the caption)


def generate(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    image_size: int = 64,
    two_object_fraction: float = 0.15,
    wrong_caption_fraction: float = 0.05,
    unnamed_colour_fraction: float = 0.0,
    variety: float = 0.0,
) -> list[Example]:
    """``n`` examples of ``split``, the same ones for the same arguments.

    split="train": main and second objects from ``train_classes()``. split="test": main object
    from ``HELD_OUT``; split="test_seen": from ``train_classes()``. In training, an
    ``unnamed_colour_fraction`` of the examples keep their pair's shape but draw it alone, in an
    unnamed colour, with a shape-only caption. The test splits are clean: no second object, no
    unnamed colours and no wrong captions (those fractions are ignored), though captions are as
    noisy as in training otherwise. Main classes are balanced: each split's pairs in turn, in a
    random order, so n = 600 test examples hold 100 of each held-out pair.

    ``variety`` (in every split): that fraction of the images is drawn as people draw shapes,
    not as the grey-background images above: a background of any kind (``varied_background``),
    one object from _VARIED_SIZE of the side (small to filling the frame), the whole scene
    stretched as a non-square canvas is by the processor's resize (``VARIED_ASPECT``), sometimes
    hard edges (``HARD_EDGE_RATE``) and sometimes a JPEG round trip (``JPEG_RATE``, ``JPEG_QUALITY``).
    ``variety=0`` draws exactly what earlier versions drew, from the same random stream.
    """
    _check_split(split)
    if not is_int(n) or n < 0:
        raise ValueError(f"n must be an int >= 0, found {n!r}")
    _check_image_size(image_size)
    _check_fraction("two_object_fraction", two_object_fraction)
    _check_fraction("wrong_caption_fraction", wrong_caption_fraction)
    _check_fraction("unnamed_colour_fraction", unnamed_colour_fraction)
    _check_fraction("variety", variety)
    if split != "train":
        two_object_fraction = wrong_caption_fraction = unnamed_colour_fraction = 0.0

    rng = np.random.default_rng([seed, SPLITS.index(split)])
    pairs = classes(split)
    second_pairs = train_classes()
    main_ids = rng.permutation(np.resize(np.arange(len(pairs)), n))  # balanced over the split's pairs
    examples = []
    for pair_id in main_ids:
        shape, colour = pairs[pair_id]
        varied = bool(variety) and rng.random() < variety
        aspect = math.exp(rng.uniform(-VARIED_ASPECT, VARIED_ASPECT)) if varied else 1.0
        single_size = _VARIED_SIZE if varied else _SINGLE_SIZE
        if unnamed_colour_fraction and rng.random() < unnamed_colour_fraction:
            colour = None
            objects = (_place(shape, None, rng.uniform(*single_size), rng, aspect=aspect),)
        elif rng.random() < two_object_fraction:
            main = _place(shape, colour, rng.uniform(*_MAIN_SIZE), rng, aspect=aspect)
            second_pair = (shape, colour)
            while second_pair == (shape, colour):  # another class: no "red circle and red circle"
                second_pair = second_pairs[int(rng.integers(len(second_pairs)))]
            second = _place(*second_pair, rng.uniform(*_SECOND_SIZE), rng, _PLACEMENT_TRIES, away_from=main,
                            aspect=aspect)
            objects = (main, second)
        else:
            objects = (_place(shape, colour, rng.uniform(*single_size), rng, aspect=aspect),)
        background = varied_background(rng, objects) if varied else random_background(rng)
        drawn_size = image_size
        if varied and VARIED_RESOLUTION:
            drawn_size = round(math.exp(rng.uniform(*np.log(VARIED_RESOLUTION))))
        # The main object is drawn last, on top: it is always fully visible.
        image = render(objects[::-1], image_size=drawn_size,
                       background=background, rng=rng, hard_edges=varied and rng.random() < HARD_EDGE_RATE)
        if varied and rng.random() < JPEG_RATE:
            image = jpeg_round_trip(image, int(rng.integers(*JPEG_QUALITY)))
        if image.shape[0] != image_size:
            image = np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR))
        caption = caption_for(objects, background, rng)
        examples.append(Example(image, caption, shape, colour, True, objects, background))
    _swap_captions(examples, wrong_caption_fraction, rng)
    return examples


if __name__ == "__main__":  # python -m minialign.synthetic [out.png]: a look at 32 training examples
    import sys

    sample = generate(32, seed=0)
    for k, e in enumerate(sample):
        print(f"{k:2d} {e.class_name:16s} {'  ' if e.correct_caption else 'W '}{e.caption}")
    if len(sys.argv) > 1:
        Image.fromarray(contact_sheet([e.image for e in sample])).save(sys.argv[1])
