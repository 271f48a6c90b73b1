"""The synthetic noisy alt-text dataset: the world's vocabulary, the held-out split, images, captions.

The statistics are measured on 2000 examples of one fixed seed, so every number below is the same
on every run; the tolerances say how far from the setting a fresh seed could fall.
"""

from __future__ import annotations

import colorsys
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

from minialign import synthetic
from minialign.synthetic import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    SYNONYMS,
    Background,
    SceneObject,
    all_classes,
    class_name,
    classes,
    generate,
    held_out_classes,
    mentions,
    render,
    train_classes,
)

N_STATS = 2000
# An object pixel is its colour + jitter of at most 12 per channel: within sqrt(3) * 12 ~ 21 of
# the nominal RGB (more only at anti-aliased edges). Backgrounds stay > 60 from every colour.
NEAR = 30.0
FAR = 45.0


@pytest.fixture(scope="module")
def train() -> list[synthetic.Example]:
    return generate(N_STATS, seed=7, two_object_fraction=0.5)


def distance_to(image: np.ndarray, rgb) -> np.ndarray:  # [H, W, 3] uint8 -> [H, W] float
    return np.linalg.norm(image.astype(np.float64) - np.asarray(rgb, dtype=np.float64), axis=-1)


# -- the world ---------------------------------------------------------------------------------


def test_vocabulary():
    assert len(SHAPES) >= 6 and len(COLOURS) >= 6
    assert len(all_classes()) == len(SHAPES) * len(COLOURS) >= 20
    assert class_name("circle", "red") == "red circle"
    # Colours pairwise distinct by a wide margin (red-orange, orange-yellow are the closest, ~90).
    rgbs = np.array(list(COLOURS.values()), dtype=float)
    pairwise = np.linalg.norm(rgbs[:, None] - rgbs[None], axis=-1)[np.triu_indices(len(rgbs), 1)]
    assert pairwise.min() > 80


def test_held_out_is_one_pair_per_shape_and_colour():
    assert sorted(s for s, _ in HELD_OUT) == sorted(SHAPES)
    assert sorted(c for _, c in HELD_OUT) == sorted(COLOURS)
    assert set(held_out_classes()) == set(HELD_OUT)
    assert set(train_classes()) | set(held_out_classes()) == set(all_classes())
    assert not set(train_classes()) & set(held_out_classes())
    assert classes("test") == held_out_classes()
    assert classes("train") == classes("test_seen") == train_classes()


def test_synonyms_canonical_first_and_unambiguous():
    assert set(SYNONYMS) == set(SHAPES) | set(COLOURS)
    forms = [form for name in SYNONYMS for form in SYNONYMS[name]]
    assert len(forms) == len(set(forms)), "a form names two things"
    for name, options in SYNONYMS.items():
        assert options[0] == name
        for form in options:  # each form reads back as its own name and nothing else
            expected = ({name}, set()) if name in SHAPES else (set(), {name})
            assert mentions(form) == expected, form


def test_mentions_reads_two_objects_and_synonyms():
    assert mentions("small crimson disc and blue star") == ({"circle", "star"}, {"red", "blue"})
    assert mentions("background img_2041.jpg") == (set(), set())  # no "round" inside "background"


# -- determinism -------------------------------------------------------------------------------


def test_same_seed_same_examples_other_seed_different():
    a, b, c = generate(40, seed=3), generate(40, seed=3), generate(40, seed=4)
    assert [e.caption for e in a] == [e.caption for e in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert [e.caption for e in a] != [e.caption for e in c]
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c))


# -- splits ------------------------------------------------------------------------------------


def test_train_never_shows_a_held_out_pair(train):
    held_out = set(HELD_OUT)
    for e in train:
        assert (e.shape, e.colour) == (e.objects[0].shape, e.objects[0].colour)
        for obj in e.objects:
            assert (obj.shape, obj.colour) not in held_out
    assert {e.shape for e in train} == set(SHAPES)
    assert {e.colour for e in train} == set(COLOURS)
    # The second object too sees every shape and colour, and some images have one.
    seconds = [e.objects[1] for e in train if len(e.objects) == 2]
    assert 0.4 < len(seconds) / len(train) < 0.6
    assert {o.shape for o in seconds} == set(SHAPES) and {o.colour for o in seconds} == set(COLOURS)


@given(seed=seeds, split=st.sampled_from(["test", "test_seen"]))
def test_test_splits_are_clean_and_balanced(seed, split):
    examples = generate(24, split=split, seed=seed, two_object_fraction=1.0, wrong_caption_fraction=1.0)
    counts = Counter((e.shape, e.colour) for e in examples)
    assert set(counts) <= set(classes(split))
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced over the split's pairs
    assert all(len(e.objects) == 1 and e.correct_caption for e in examples)
    assert all(e.label == all_classes().index((e.shape, e.colour)) for e in examples)


def test_test_split_covers_every_held_out_pair():
    examples = generate(60, split="test", seed=0)
    assert Counter((e.shape, e.colour) for e in examples) == {pair: 10 for pair in HELD_OUT}


# -- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [16, 33, 64])  # the smallest allowed, odd, the default
def test_image_dtype_and_shape(image_size):
    for e in generate(5, seed=1, image_size=image_size, two_object_fraction=0.5):
        assert e.image.dtype == np.uint8 and e.image.shape == (image_size, image_size, 3)


def test_main_colour_present_and_background_far_from_every_colour(train):
    for e in train[:300]:
        main = e.objects[0]
        assert max(abs(a - b) for a, b in zip(main.rgb, COLOURS[e.colour])) <= synthetic.COLOUR_JITTER
        # The main object (drawn on top, >= 30% of the side, >= ~100 pixels even for a star) shows.
        assert (distance_to(e.image, COLOURS[e.colour]) < NEAR).sum() >= 60, e
        # The same background without objects is nowhere near any object colour.
        empty = render([], image_size=64, background=e.background, rng=np.random.default_rng(0))
        for rgb in COLOURS.values():
            assert distance_to(empty, rgb).min() > FAR


def test_backgrounds_at_their_extremes_stay_far_from_every_colour():
    # Darkest and lightest levels, full tint, full gradient, strongest noise (clipped at 3 std).
    for level in (40.0 - 10, 90.0 + 10, 150.0 - 10, 220.0 + 10):
        for tint in ((10, -10, -10), (-10, 10, -10), (-10, -10, 10), (10, 10, -10), (10, -10, 10), (-10, 10, 10)):
            background = Background(tuple(level + t for t in tint), gradient=50.0, angle=30.0, noise=5.0)
            image = render([], background=background, rng=np.random.default_rng(1))
            for rgb in COLOURS.values():
                assert distance_to(image, rgb).min() > FAR, (background, rgb)


@given(
    shape=st.sampled_from(SHAPES),
    colour=st.sampled_from(list(COLOURS)),
    size=st.floats(0.3, 0.6),
    rotation=st.floats(-36, 36),
)
def test_render_one_object_covers_about_its_area(shape, colour, size, rotation):
    """Hand-checkable: a centred object's pixels in its exact colour ~ its polygon's area."""
    obj = SceneObject(shape, colour, size, 0.5, 0.5, rotation)
    image = render([obj], background=Background((128.0, 128.0, 128.0)))
    covered = (distance_to(image, COLOURS[colour]) < 1).sum()
    half = size * 64 / 2  # pixels
    if shape == "circle":
        area, perimeter = np.pi * half**2, 2 * np.pi * half
    else:
        points = synthetic.OUTLINES[shape] * half  # [k, 2] pixels
        x, y = points.T
        area = abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2  # shoelace formula
        perimeter = np.linalg.norm(points - np.roll(points, 1, axis=0), axis=1).sum()
    # Pixels the edge crosses are blends, not the exact colour (about one per unit of perimeter,
    # up to sqrt(2) diagonally); Pillow's fill includes the boundary row of sub-pixels, which
    # adds up to half a pixel per unit of an axis-aligned edge (measured: -0.45 .. +0.46).
    assert area - 1.5 * perimeter <= covered <= area + 0.6 * perimeter + 1


# -- captions ----------------------------------------------------------------------------------


def test_wrong_caption_fraction_near_the_setting(train):
    wrong = [e for e in train if not e.correct_caption]
    # Exactly round(0.05 * 2000) = 100 (the default) are chosen; a swap is skipped only when 50
    # random tries find no other caption free of the image's words (practically never at
    # n = 2000): +-0.5%.
    assert abs(len(wrong) / len(train) - 0.05) <= 0.005
    for e in wrong:  # a wrong caption names neither the main shape nor the main colour
        shapes, colours = mentions(e.caption)
        assert e.shape not in shapes and e.colour not in colours, e.caption
    assert all(e.correct_caption for e in generate(50, seed=0, wrong_caption_fraction=0.0))


def test_correct_captions_name_the_main_object(train):
    for e in train:
        if not e.correct_caption:
            continue
        shapes, colours = mentions(e.caption)
        assert e.shape in shapes or e.colour in colours, e.caption
        if len(e.objects) == 1:  # names nothing that is not in the image
            assert shapes <= {e.shape} and colours <= {e.colour}, e.caption
        else:
            assert shapes <= {o.shape for o in e.objects} and colours <= {o.colour for o in e.objects}


def test_captions_are_short_lower_case_ascii(train):
    for e in train:
        assert re.fullmatch(r"[a-z0-9 .,:;!?()+_\-]+", e.caption), e.caption
        assert 1 <= len(e.caption.split()) <= synthetic.MAX_CAPTION_WORDS
        assert e.caption == e.caption.strip() and "  " not in e.caption


def test_caption_noise_statistics(train):
    correct = [e for e in train if e.correct_caption]
    named = [mentions(e.caption) for e in correct]
    no_colour = np.mean([e.colour not in colours for e, (_, colours) in zip(correct, named)])
    no_shape = np.mean([e.shape not in shapes for e, (shapes, _) in zip(correct, named)])
    # Settings: 10% shape only and 10% colour only per described object (fewer for two objects).
    assert 0.05 < no_colour < 0.2 and 0.04 < no_shape < 0.2
    captions = [e.caption for e in train]
    assert len(set(captions)) > 0.5 * len(captions)
    # Templates: captions with every attribute word, file name and number replaced by a slot.
    words = sorted((f for forms in SYNONYMS.values() for f in forms), key=len, reverse=True)
    attribute = re.compile(r"\b(" + "|".join(words) + r")\b")
    skeletons = {re.sub(r"\S*\d\S*", "#", attribute.sub("@", c)) for c in captions}
    assert len(skeletons) > 200
    # Synonyms are used, the canonical word most; junk and two-object captions occur.
    assert 0.4 < np.mean([bool(re.search(r"\b(" + "|".join(SHAPES) + r")\b", c)) for c in captions]) < 0.95
    assert any(re.search(r"\b(crimson|scarlet|cherry red)\b", c) for c in captions)
    assert 0.1 < np.mean([bool(re.search(r"\d", c)) for c in captions]) < 0.5
    assert any(len(mentions(c)[0]) == 2 for c in captions)


# -- objects of no named colour ----------------------------------------------------------------


def _hue_distance(a: float, b: float) -> float:  # degrees around the colour wheel
    return min(abs(a - b) % 360, 360 - abs(a - b) % 360)


def test_unnamed_colours_stay_30_degrees_of_hue_from_every_named_one():
    named_hues = [360 * colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for rgb in COLOURS.values()]
    rng = np.random.default_rng(0)
    for _ in range(2000):
        h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in synthetic.unnamed_rgb(rng)))
        assert min(_hue_distance(360 * h, n) for n in named_hues) >= 29.5  # (rounding to integer RGB)
        assert s >= 0.59 and v >= 0.59  # saturated: far from the grey backgrounds


def test_unnamed_colour_examples():
    examples = generate(600, seed=3, unnamed_colour_fraction=0.4)
    unnamed = [e for e in examples if e.colour is None]
    assert 0.33 < len(unnamed) / len(examples) < 0.47
    assert {e.shape for e in unnamed} == set(SHAPES)
    for e in unnamed:
        assert len(e.objects) == 1 and e.objects[0].colour is None
        if e.correct_caption:  # named by its shape (some synonym), never by a colour
            shapes, colours = mentions(e.caption)
            assert shapes == {e.shape} and not colours, e.caption
        with pytest.raises(ValueError, match="no name"):
            _ = e.label
    # The others are the usual examples: no held-out pair, named colours.
    assert all((e.shape, e.colour) not in set(HELD_OUT) for e in examples if e.colour is not None)


def test_test_splits_have_no_unnamed_colours():
    for split in ("test", "test_seen"):
        assert all(e.colour is not None for e in generate(30, split=split, seed=5, unnamed_colour_fraction=1.0))


# -- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "validation"}, "split must be one of ('train', 'test', 'test_seen'), found 'validation'"),
        ({"n": -1}, "n must be an int >= 0, found -1"),
        ({"n": 2.5}, "n must be an int >= 0, found 2.5"),
        ({"image_size": 8}, "image_size must be an int >= 16, found 8"),
        ({"two_object_fraction": 1.5}, "two_object_fraction must be a number in [0, 1], found 1.5"),
        ({"wrong_caption_fraction": -0.1}, "wrong_caption_fraction must be a number in [0, 1], found -0.1"),
        ({"wrong_caption_fraction": float("nan")}, "wrong_caption_fraction must be a number in [0, 1], found nan"),
        ({"unnamed_colour_fraction": 2}, "unnamed_colour_fraction must be a number in [0, 1], found 2"),
        ({"variety": -1}, "variety must be a number in [0, 1], found -1"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = {"n": 2, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(**kwargs)


def test_bad_objects():
    with pytest.raises(ValueError, match=re.escape("shape must be one of")):
        SceneObject("hexagon", "red", 0.5)
    with pytest.raises(ValueError, match=re.escape("colour must be one of")):
        SceneObject("circle", "pink", 0.5)
    with pytest.raises(ValueError, match=re.escape("no named colour (colour=None) needs its rgb")):
        SceneObject("circle", None, 0.5)
    with pytest.raises(ValueError, match=re.escape("size must lie in (0, 1]")):
        SceneObject("circle", "red", 0.0)
    with pytest.raises(ValueError, match=re.escape("split must be one of")):
        classes("val")
    with pytest.raises(ValueError, match=re.escape("image_size must be an int >= 16, found 12")):
        render([], image_size=12)


def test_zero_examples():
    assert generate(0) == []


# -- the variety of what people draw -------------------------------------------------------------


def test_variety_zero_draws_what_earlier_versions_drew():
    """The knob draws nothing from the random stream when it is 0: same images, same captions."""
    for a, b in zip(generate(40, seed=3, unnamed_colour_fraction=0.5), generate(40, seed=3, unnamed_colour_fraction=0.5,
                                                                                 variety=0.0)):
        assert np.array_equal(a.image, b.image) and a.caption == b.caption


def test_varied_images_cover_every_background_kind_size_and_stretch():
    examples = generate(600, seed=5, image_size=48, variety=1.0)
    sizes = [e.objects[0].size for e in examples if len(e.objects) == 1]
    assert min(sizes) < 0.3 and max(sizes) > 0.75  # small to filling the frame
    aspects = [e.objects[0].aspect for e in examples]
    assert min(aspects) < 0.7 and max(aspects) > 1.4  # canvases wider and taller than square
    levels = [np.mean(e.background.rgb) for e in examples]
    assert min(levels) < 25 and max(levels) > 235  # black and white
    saturation = [colorsys.rgb_to_hsv(*(c / 255 for c in e.background.rgb))[1] for e in examples]
    assert max(saturation) > 0.8 and np.mean(np.array(saturation) > 0.1) > 0.3  # colours, not only greys


@given(seed=seeds)
def test_a_varied_background_keeps_its_distance_from_every_object(seed):
    rng = np.random.default_rng(seed)
    objects = [SceneObject(synthetic.SHAPES[int(rng.integers(6))], None, 0.3,
                           rgb=tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(2)]
    background = synthetic.varied_background(rng, objects)
    assert min(np.linalg.norm(np.subtract(background.rgb, o.rgb)) for o in objects) >= synthetic._MIN_CONTRAST


def test_what_shows_a_held_out_colour():
    """A background that names the held-out colour of a shape it carries: saturated or pastel, not grey."""
    blue, pale_blue = COLOURS["blue"], (195, 215, 250)
    assert synthetic.shows_held_out_colour(blue, ["circle"])  # ("circle", "blue") is held out
    assert synthetic.shows_held_out_colour(pale_blue, ["circle"])
    assert not synthetic.shows_held_out_colour(blue, ["square"])  # blue squares are seen pairs
    assert not synthetic.shows_held_out_colour((255, 255, 255), ["circle"])
    assert not synthetic.shows_held_out_colour((128, 128, 128), ["circle"])
    assert synthetic.shows_held_out_colour(COLOURS["yellow"], ["star", "square"])  # either object counts


@given(seed=seeds)
def test_a_varied_background_never_shows_a_held_out_pair(seed):
    rng = np.random.default_rng(seed)
    for shape, _ in synthetic.HELD_OUT:
        obj = SceneObject(shape, None, 0.3, rgb=synthetic.unnamed_rgb(rng))
        background = synthetic.varied_background(rng, [obj])
        assert not synthetic.shows_held_out_colour(background.rgb, [shape]), (shape, background.rgb)


def test_varied_scenes_are_drawn_small_and_resized_as_a_file_is(monkeypatch):
    """Drawn at 16 px and resized to 48, a scene is an upscaled icon: bilinear between the 16 px
    samples, so along a row it bends only every third pixel; drawn at 96 and resized down, its
    edges are sharp. Measured by the mean |second difference| along rows."""
    def roughness(resolution) -> float:
        monkeypatch.setattr(synthetic, "VARIED_RESOLUTION", resolution)
        images = np.stack([e.image for e in generate(60, seed=4, image_size=48, variety=1.0)]).astype(float)
        return float(np.abs(np.diff(images, n=2, axis=2)).mean())

    assert roughness((16, 16)) < 0.6 * roughness((96, 96))
    monkeypatch.setattr(synthetic, "VARIED_RESOLUTION", (16, 96))
    assert all(e.image.shape == (48, 48, 3) for e in generate(20, seed=4, image_size=48, variety=1.0))


def test_hard_edges_and_jpeg():
    obj = SceneObject("circle", "red", 0.5)
    plain = Background(rgb=(255.0, 255.0, 255.0))
    hard = render([obj], image_size=32, background=plain, hard_edges=True)
    soft = render([obj], image_size=32, background=plain)
    colours = {tuple(p) for p in hard.reshape(-1, 3)}
    assert colours == {(255, 255, 255), COLOURS["red"]}  # every pixel all object or all background
    assert len({tuple(p) for p in soft.reshape(-1, 3)}) > 2  # anti-aliased edge pixels in between
    jpeg = synthetic.jpeg_round_trip(soft, 40)
    assert jpeg.shape == soft.shape and jpeg.dtype == np.uint8 and not np.array_equal(jpeg, soft)
    assert np.abs(jpeg.astype(int) - soft).mean() < 10  # the same picture, with its artefacts


def test_a_stretched_object_keeps_its_area_and_widens():
    wide = SceneObject("square", "blue", 0.4, aspect=2.0).outline()
    width, height = np.ptp(wide, axis=0)
    assert width / height == pytest.approx(2.0) and width * height == pytest.approx(0.4 * 0.4)
