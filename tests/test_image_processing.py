"""The EfficientNet image processor against transformers' PIL backend (EfficientNetImageProcessorPil).

Hand-computed cases first, then parity on generated images: tiny, odd, non-square and huge
sizes, every PIL mode, uint8 / integer / float arrays, align-base's settings and hypothesis-drawn
options; then preprocessor_config.json both ways, then every kind of bad input.

Where our processor converts an input to RGB and transformers' image processor on its own would
not (it passes 1-, 2- and 4-channel images through to the model), transformers is given the
input converted the way its ``load_image`` does it: ``img.convert("RGB")``.
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageFile
from transformers import EfficientNetImageProcessorPil
from transformers.image_utils import load_image as hf_load_image

from helpers import TOLERANCES, assert_close
from minialign.config import ConfigError
from minialign.image_processing import (
    EfficientNetImageProcessor,
    ImageInputError,
    ImageTooLargeError,
    center_crop,
)
from strategies import seeds

# Pillow resamples for both sides, so pixel values agree exactly; 1e-5 is the bound.
# Drawn options (rescale_factor 2, std 0.1, include_top) reach |x| ~ 5e4, where float32 itself
# only resolves ~4e-3: there the float32 row (rtol 1e-5) applies.
PARITY = dict(atol=1e-5, rtol=0.0)
F32 = TOLERANCES["float32"]

# The options transformers' class is built with; everything but image_processor_type / extra.
OPTION_NAMES = (
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
    "rescale_offset", "do_normalize", "image_mean", "image_std", "include_top", "do_convert_rgb",
)


def options_of(processor: EfficientNetImageProcessor) -> dict:
    return {name: getattr(processor, name) for name in OPTION_NAMES}


def transformers_pixels(images, processor: EfficientNetImageProcessor, **call_kwargs) -> np.ndarray:
    """pixel_values from transformers' PIL-backend processor built with the same options."""
    reference = EfficientNetImageProcessorPil(**options_of(processor))
    return reference(images, return_tensors="np", **call_kwargs)["pixel_values"]


def random_rgb(rng, height: int, width: int) -> np.ndarray:  # -> [height, width, 3] uint8
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


WIDE_DTYPES = {"I;16": np.uint16, "I": np.int32, "F": np.float32}  # PIL mode -> the array dtype it holds


def image_in_mode(mode: str, rng, height: int = 13, width: int = 17) -> Image.Image:
    """A random image in a PIL mode, with values that exercise that mode's conversion to RGB."""
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width)).astype(bool))
    if mode in WIDE_DTYPES:  # 16-bit, 32-bit, float: 0..255 integers, the values they are accepted with
        return Image.fromarray(rng.integers(0, 256, (height, width)).astype(WIDE_DTYPES[mode]))
    if mode in ("P", "P+transparency", "PA"):
        image = Image.frombytes("P", (width, height), rng.integers(0, 256, height * width, dtype=np.uint8).tobytes())
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        if mode == "P+transparency":
            image.info["transparency"] = 7
        return image.convert("PA") if mode == "PA" else image
    bands = len(Image.new(mode, (1, 1)).getbands())  # 8 bits per band: L, LA, RGB, RGBA, CMYK ...
    data = rng.integers(0, 256, height * width * bands, dtype=np.uint8).tobytes()
    return Image.frombytes(mode, (width, height), data)


# -- hand-computed cases ----------------------------------------------------------------------


def test_align_rescale_hand_values():
    # align-base without resize/crop: x / 127.5 - 1, so 0 -> -1, 51 -> -0.6, 204 -> 0.6, 255 -> 1.
    image = np.array([[[0, 51, 204], [255, 0, 0]]], dtype=np.uint8)  # [1, 2, 3]
    processor = EfficientNetImageProcessor.align_base()
    out = processor(image, do_resize=False, do_center_crop=False)["pixel_values"]
    assert out.shape == (1, 3, 1, 2) and out.dtype == np.float32
    assert_close(out[0, :, 0, 0], [-1.0, -0.6, 0.6], atol=1e-7, rtol=0)
    assert_close(out[0, :, 0, 1], [1.0, -1.0, -1.0], atol=1e-7, rtol=0)


def test_normalize_and_include_top_hand_values():
    # Class defaults without resize: ((x / 255 - 0.5) / 0.5) / 0.5; include_top divides by std again.
    image = np.array([[[0, 255, 51]]], dtype=np.uint8)
    out = EfficientNetImageProcessor(do_resize=False)(image)["pixel_values"][0, :, 0, 0]
    assert_close(out, [-2.0, 2.0, -1.2], atol=1e-6, rtol=0)
    out = EfficientNetImageProcessor(do_resize=False, include_top=False)(image)["pixel_values"][0, :, 0, 0]
    assert_close(out, [-1.0, 1.0, -0.6], atol=1e-6, rtol=0)
    out = EfficientNetImageProcessor(do_resize=False, do_normalize=False)(image)["pixel_values"][0, :, 0, 0]
    assert_close(out, [0.0, 2.0, 0.4], atol=1e-6, rtol=0)  # include_top alone: x / 255 / 0.5


def test_center_crop_hand_values():
    image = np.arange(5 * 4).reshape(5, 4, 1).repeat(3, axis=2)  # [5, 4, 3], rows 0..4
    # Crop 3x2 from 5x4: offsets (5-3)//2 = 1 and (4-2)//2 = 1.
    assert center_crop(image, 3, 2)[:, :, 0].tolist() == [[5, 6], [9, 10], [13, 14]]
    # Crop 2x3 from 5x4: odd differences leave the extra row/column at the end: offsets 1 and 0.
    assert center_crop(image, 2, 3)[:, :, 0].tolist() == [[4, 5, 6], [8, 9, 10]]
    # Crop 4x7 from 2x3 (larger): zero-pad, the odd zero before: rows 1 + 2 + 1, cols 2 + 3 + 2.
    small = np.array([[1, 2, 3], [4, 5, 6]]).reshape(2, 3, 1).repeat(3, axis=2)
    assert center_crop(small, 4, 7)[:, :, 0].tolist() == [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 2, 3, 0, 0],
        [0, 0, 4, 5, 6, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
    # Crop 5x4: rows 2 + 2 + 1; one column to add, ceil(1 / 2) = 1 goes before.
    assert center_crop(small, 5, 4)[:, :, 0].tolist() == [
        [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3], [0, 4, 5, 6], [0, 0, 0, 0],
    ]


# -- settings ---------------------------------------------------------------------------------


def test_align_base_settings():
    p = EfficientNetImageProcessor.align_base()
    assert (p.do_resize, p.size, p.resample) == (True, {"height": 346, "width": 346}, 2)  # 2 = bilinear
    assert (p.do_center_crop, p.crop_size) == (True, {"height": 289, "width": 289})
    assert (p.do_rescale, p.rescale_offset) == (True, True)
    assert p.rescale_factor == 1 / 127.5
    assert (p.do_normalize, p.include_top) == (False, False)
    # 0 and 255 land on -1 and 1; the output is 289x289.
    out = p([np.zeros((500, 400, 3), np.uint8), np.full((30, 30, 3), 255, np.uint8)])["pixel_values"]
    assert out.shape == (2, 3, 289, 289)
    assert (out[0] == -1).all() and (out[1] == 1).all()


def test_defaults_are_transformers_class_defaults():
    ours, theirs = EfficientNetImageProcessor(), EfficientNetImageProcessorPil()
    for name in OPTION_NAMES:
        expected = getattr(theirs, name)
        if name in ("size", "crop_size"):
            expected = {"height": expected.height, "width": expected.width}
        elif isinstance(expected, tuple):
            expected = list(expected)
        elif name == "resample":
            expected = int(expected)
        assert getattr(ours, name) == expected, name


# -- parity: sizes, modes, arrays -------------------------------------------------------------

SIZES = [
    (1, 1),  # one pixel
    (2, 3),  # tiny, non-square
    (3, 2),
    (7, 5),  # odd
    (289, 289),  # the crop size: resize still runs
    (346, 346),  # the resize size: PIL copies
    (345, 347),  # one off each way
    (480, 640),  # landscape photo
    (2000, 3000),  # huge
]


@pytest.mark.parametrize("height, width", SIZES)
def test_align_base_parity_over_sizes(height, width, rng):
    processor = EfficientNetImageProcessor.align_base()
    pixels = random_rgb(rng, height, width)
    expected = transformers_pixels(Image.fromarray(pixels), processor)
    assert_close(processor(Image.fromarray(pixels))["pixel_values"], expected, **PARITY, name="PIL input")
    assert_close(processor(pixels)["pixel_values"], expected, **PARITY, name="uint8 array input")


MODES = ["1", "L", "LA", "P", "P+transparency", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
         "LAB", "HSV", "I;16", "I", "F"]


@pytest.mark.parametrize("mode", MODES)
def test_every_pil_mode_converts_like_load_image(mode, rng):
    processor = EfficientNetImageProcessor.align_base()
    image = image_in_mode(mode, rng)
    expected = transformers_pixels(image.convert("RGB"), processor)
    assert_close(processor(image)["pixel_values"], expected, **PARITY, name=mode)


def test_sixteen_bit_pixels_are_0_to_255_or_refused_never_clipped():
    # transformers' processor reads a 16-bit image as an array: 0..255 values are pixels ...
    processor = EfficientNetImageProcessor.align_base()
    image = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint16))
    out = processor(image, do_resize=False, do_center_crop=False)["pixel_values"]
    assert_close(out[0, 0, 0], np.array([0, 100, 255]) / 127.5 - 1, atol=1e-6, rtol=0)
    # ... and larger ones are refused (load_image's convert("RGB") would clip 256 and 65535 to 255).
    image = Image.fromarray(np.array([[0, 100, 255, 256, 65535]], dtype=np.uint16))
    with pytest.raises(ImageInputError, match=r"image: a 16-bit image \(PIL mode 'I;16'\) with values 0..65535.*>> 8"):
        processor(image)
    with pytest.raises(ImageInputError, match=r"32-bit integer image \(PIL mode 'I'\) with values -1..3"):
        processor(Image.fromarray(np.array([[-1, 3]], dtype=np.int32)))
    with pytest.raises(ImageInputError, match=r"32-bit float image \(PIL mode 'F'\) contains NaN"):
        processor(Image.fromarray(np.array([[np.nan, 3]], dtype=np.float32)))


def test_float_images_follow_the_float_array_rule(rng):
    # An in-memory mode "F" image is what transformers' processor sees: a float array (gray).
    processor = EfficientNetImageProcessor.align_base()
    unit = rng.uniform(0, 1, (9, 14)).astype(np.float32)  # [h, w] in [0, 1]: transformers scales by 255 to resize
    expected = transformers_pixels(np.repeat(unit[:, :, None], 3, axis=2), processor, input_data_format="channels_last")
    with pytest.warns(UserWarning, match=r"look already rescaled"):
        assert_close(processor(Image.fromarray(unit))["pixel_values"], expected, **PARITY, name="F in [0, 1]")
    with pytest.raises(ImageInputError, match=r"float pixels must be integers in 0..255 or lie in \[0, 1\]"):
        processor(Image.fromarray(unit * 300))


@pytest.mark.parametrize(
    "shape",
    [(9, 14), (9, 14, 1), (9, 14, 2), (9, 14, 3), (9, 14, 4), (1, 1, 3), (3, 4, 3)],  # (3, 4, 3): HWC, not CHW
)
def test_uint8_arrays_convert_like_pil(shape, rng):
    processor = EfficientNetImageProcessor.align_base()
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    as_pil = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)  # L/LA/RGB/RGBA
    expected = transformers_pixels(as_pil.convert("RGB"), processor)
    assert_close(processor(array)["pixel_values"], expected, **PARITY, name=str(shape))


def test_integer_arrays_in_range_and_channels_first(rng):
    processor = EfficientNetImageProcessor.align_base()
    array = random_rgb(rng, 11, 6)
    expected = processor(array)["pixel_values"]
    assert_close(processor(array.astype(np.int64))["pixel_values"], expected, atol=0, rtol=0, name="int64")
    chw = np.ascontiguousarray(array.transpose(2, 0, 1))  # [3, 11, 6]
    out = processor(chw, input_data_format="channels_first")["pixel_values"]
    assert_close(out, expected, atol=0, rtol=0, name="channels_first")


def test_float_arrays_follow_transformers_rule(rng):
    processor = EfficientNetImageProcessor.align_base()
    pixels = random_rgb(rng, 23, 19)
    hwc = dict(input_data_format="channels_last")
    # Integer-valued floats are pixel values: the same as uint8.
    as_float = pixels.astype(np.float32)
    expected = transformers_pixels(as_float, processor, **hwc)
    assert_close(processor(as_float)["pixel_values"], expected, **PARITY, name="integer-valued float")
    assert_close(processor(pixels)["pixel_values"], expected, **PARITY, name="uint8 vs float")
    # [0, 1] floats: quantised to uint8 for the resize; transformers then still multiplies by
    # rescale_factor, so do_rescale=False is the right call for them (and we warn otherwise).
    unit = rng.uniform(0, 1, (23, 19, 3)).astype(np.float32)
    no_rescale = EfficientNetImageProcessor.align_base()
    no_rescale.do_rescale = False
    out = no_rescale(unit)["pixel_values"]
    assert_close(out, transformers_pixels(unit, no_rescale, **hwc), **PARITY, name="[0, 1] float")
    assert 0 <= out.min() and out.max() <= 1
    with pytest.warns(UserWarning, match="do_rescale=False"):
        out = processor(unit)["pixel_values"]
    assert_close(out, transformers_pixels(unit, processor, **hwc), **PARITY, name="[0, 1] float, rescaled again")
    # Without a resize floats are not quantised: any finite values go through, also float64.
    raw = rng.uniform(-10, 300, (5, 4, 3))  # float64
    out = processor(raw, do_resize=False, do_center_crop=False)["pixel_values"]
    assert_close(out, transformers_pixels(raw, EfficientNetImageProcessor(**{
        **options_of(processor), "do_resize": False, "do_center_crop": False}), **hwc), **F32, name="float64")


@st.composite
def processor_options(draw):
    """Any combination of options, sizes small enough for a quick test; crops may exceed the image."""
    per_channel = lambda lo, hi: st.one_of(  # noqa: E731
        st.floats(lo, hi), st.lists(st.floats(lo, hi), min_size=3, max_size=3)
    )
    return dict(
        do_resize=draw(st.booleans()),
        size={"height": draw(st.integers(1, 24)), "width": draw(st.integers(1, 24))},
        resample=draw(st.sampled_from([0, 1, 2, 3, 4, 5])),  # nearest lanczos bilinear bicubic box hamming
        do_center_crop=draw(st.booleans()),
        crop_size={"height": draw(st.integers(1, 30)), "width": draw(st.integers(1, 30))},
        do_rescale=draw(st.booleans()),
        rescale_factor=draw(st.sampled_from([1 / 255, 1 / 127.5, 0.01, 2.0])),
        rescale_offset=draw(st.booleans()),
        do_normalize=draw(st.booleans()),
        image_mean=draw(per_channel(-1.0, 1.0)),
        image_std=draw(per_channel(0.1, 2.0)),
        include_top=draw(st.booleans()),
        do_convert_rgb=draw(st.sampled_from([None, False, True])),
    )


INPUT_KINDS = [
    "RGB", "L", "RGBA", "P", "CMYK", "I;16",  # PIL modes
    "uint8 HWC", "uint8 HW", "uint8 RGBA", "float 0..255", "float 0..1",  # arrays
]


@given(
    options=processor_options(),
    kind=st.sampled_from(INPUT_KINDS),
    height=st.sampled_from([1, 2, 5, 16, 31]),
    width=st.sampled_from([1, 3, 8, 17]),
    seed=seeds,
)
def test_drawn_options_and_inputs_match_transformers(options, kind, height, width, seed):
    rng = np.random.default_rng(seed)
    processor = EfficientNetImageProcessor(**options)
    call = {}
    if kind in ("uint8 HWC", "uint8 HW", "uint8 RGBA", "float 0..255", "float 0..1"):
        channels = {"uint8 HW": None, "uint8 RGBA": 4}.get(kind, 3)
        shape = (height, width) if channels is None else (height, width, channels)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        if kind == "float 0..255":
            image = image.astype(np.float32)
        elif kind == "float 0..1":
            image = rng.uniform(0, 1, shape).astype(np.float32)
        reference_input, call = image, dict(input_data_format="channels_last")
        if kind == "uint8 HW" or (kind == "uint8 RGBA" and not options["do_convert_rgb"]):
            reference_input, call = Image.fromarray(image).convert("RGB"), {}  # transformers would not convert
    else:
        image = image_in_mode(kind, rng, height, width)
        # do_convert_rgb=True: transformers converts (alpha onto white) itself; else load_image's rule.
        reference_input = image if options["do_convert_rgb"] else image.convert("RGB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the [0, 1]-float warning; the numbers are what is tested
        ours = processor(image)["pixel_values"]
    assert_close(ours, transformers_pixels(reference_input, processor, **call), **F32, name=f"{kind} {options}")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "P+transparency"])
def test_do_convert_rgb_composites_alpha_onto_white(mode, rng):
    processor = EfficientNetImageProcessor.align_base()
    processor.do_convert_rgb = True
    image = image_in_mode(mode, rng)
    assert_close(processor(image)["pixel_values"], transformers_pixels(image, processor), **PARITY, name=mode)
    # Arrays with alpha: the same blend in NumPy, as transformers' convert_to_rgb does for arrays.
    rgba = rng.integers(0, 256, (12, 7, 4), dtype=np.uint8)
    expected = transformers_pixels(rgba, processor, input_data_format="channels_last")
    assert_close(processor(rgba)["pixel_values"], expected, **PARITY, name="uint8 RGBA array")
    gray_alpha = rgba[:, :, [0, 3]]  # [12, 7, 2]: transformers cannot take it; compare with gray RGBA
    gray_rgba = rgba[:, :, [0, 0, 0, 3]]
    assert_close(processor(gray_alpha)["pixel_values"], processor(gray_rgba)["pixel_values"], atol=0, rtol=0)


# -- files and batches ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_files_follow_load_image_including_exif_orientation(suffix, tmp_path, rng):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(random_rgb(rng, 40, 60)).save(path, exif=exif)
    processor = EfficientNetImageProcessor.align_base()
    expected = transformers_pixels(hf_load_image(str(path)), processor)  # exif_transpose + convert("RGB")
    for source in (str(path), path, Image.open(path)):
        assert_close(processor(source)["pixel_values"], expected, **PARITY, name=type(source).__name__)
    upright = processor(path, do_resize=False, do_center_crop=False)["pixel_values"]
    assert upright.shape == (1, 3, 60, 40)  # turned: 40x60 stored, 60x40 displayed


def test_batch_of_mixed_inputs(tmp_path, rng):
    processor = EfficientNetImageProcessor.align_base()
    path = tmp_path / "a.png"
    Image.fromarray(random_rgb(rng, 30, 50)).save(path)
    inputs = [path, Image.fromarray(random_rgb(rng, 7, 3)), random_rgb(rng, 400, 300), image_in_mode("L", rng)]
    batch = processor(inputs)
    assert batch.pixel_values is batch["pixel_values"]
    assert batch["pixel_values"].shape == (4, 3, 289, 289) and batch["pixel_values"].dtype == np.float32
    for i, one in enumerate(inputs):
        assert_close(batch["pixel_values"][i], processor(one)["pixel_values"][0], atol=0, rtol=0, name=f"images[{i}]")
    # return_tensors: None and "np" give the same array; other frameworks are refused.
    assert_close(processor(inputs, return_tensors="np")["pixel_values"], batch["pixel_values"], atol=0, rtol=0)
    with pytest.raises(ValueError, match="NumPy arrays only"):
        processor(inputs, return_tensors="pt")


# -- preprocessor_config.json -----------------------------------------------------------------


@given(options=processor_options())
def test_saved_config_loads_in_transformers_with_the_same_settings(options, tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    EfficientNetImageProcessor(**options).save_pretrained(directory)
    theirs = EfficientNetImageProcessorPil.from_pretrained(directory)
    # transformers' own to_dict of what it loaded == what it would write for the same options.
    assert theirs.to_dict() == EfficientNetImageProcessorPil(**options).to_dict()
    reloaded = EfficientNetImageProcessor.from_pretrained(directory)
    assert reloaded == EfficientNetImageProcessor(**options)


def test_transformers_config_loads_here(tmp_path, rng):
    theirs = EfficientNetImageProcessorPil(
        do_center_crop=True, rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False,
        include_top=False, resample=Image.Resampling.BILINEAR, foo=3,
    )
    theirs.save_pretrained(tmp_path)
    ours = EfficientNetImageProcessor.from_pretrained(tmp_path)
    assert ours == EfficientNetImageProcessor.align_base()
    assert ours.extra == {"foo": 3}  # unknown keys kept ...
    ours.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "preprocessor_config.json").read_text())["foo"] == 3  # ... and written back
    assert EfficientNetImageProcessor.from_pretrained(tmp_path / "preprocessor_config.json") == ours  # the file itself
    image = Image.fromarray(random_rgb(rng, 50, 70))
    assert_close(ours(image)["pixel_values"], theirs(image, return_tensors="np")["pixel_values"], **PARITY)


def test_config_null_means_default_and_int_sizes(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": None, "size": 300, "crop_size": [200, 100], "rescale_factor": 1})
    )
    p = EfficientNetImageProcessor.from_pretrained(tmp_path)
    assert p.image_mean == [0.5, 0.5, 0.5]
    assert p.size == {"height": 300, "width": 300} and p.crop_size == {"height": 200, "width": 100}
    assert p.rescale_factor == 1.0 and isinstance(p.rescale_factor, float)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"do_resize": "yes"}, r"do_resize must be true or false, found 'yes'"),
        ({"size": {"shortest_edge": 300}}, r"size must be .*shortest_edge"),
        ({"crop_size": {"height": 0, "width": 3}}, r"crop_size must be positive"),
        ({"resample": 7}, r"resample must be a PIL resampling code"),
        ({"resample": "bilinear"}, r"resample must be"),
        ({"rescale_factor": "0.5"}, r"rescale_factor must be a finite number"),
        ({"image_mean": [0.5, 0.5]}, r"image_mean must be a number or a list of 3"),
        ({"image_std": [0.5, 0.0, 0.5]}, r"image_std must be non-zero"),
        ({"do_convert_rgb": 1}, r"do_convert_rgb must be true, false or null"),
        ({"image_processor_type": "CLIPImageProcessor"}, r"not an EfficientNet image processor"),
        ([1, 2], r"expected a JSON object"),
    ],
)
def test_config_errors_name_the_file_and_key(content, match, tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=match) as info:
        EfficientNetImageProcessor.from_pretrained(tmp_path)
    assert str(path) in str(info.value)


def test_config_file_missing_or_not_json(tmp_path):
    with pytest.raises(ConfigError, match="image processor config not found: .*preprocessor_config.json"):
        EfficientNetImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="preprocessor_config.json is not valid JSON"):
        EfficientNetImageProcessor.from_pretrained(tmp_path)


def test_bad_options_in_code():
    with pytest.raises(ConfigError, match="do_center_crop must be true or false"):
        EfficientNetImageProcessor(do_center_crop="no")
    with pytest.raises(ConfigError, match="size must be"):
        EfficientNetImageProcessor.align_base()(np.zeros((2, 2, 3), np.uint8), size={"longest_edge": 9})
    with pytest.raises(TypeError, match="not_an_option"):
        EfficientNetImageProcessor(not_an_option=1)


# -- bad inputs -------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file_is_refused_naming_it(fmt, suffix, tmp_path, rng):
    data = encoded(Image.fromarray(random_rgb(rng, 64, 80)), fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    processor = EfficientNetImageProcessor.align_base()
    with pytest.raises(ImageInputError, match=rf"images\[1\] \('.*cut\{suffix}'\).*truncated"):
        processor([random_rgb(rng, 4, 4), path])
    with pytest.raises(ImageInputError, match="truncated"):  # opened lazily by the caller: fails here too
        processor(Image.open(path))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never switched on to get past it


def test_unreadable_missing_and_directory_paths(tmp_path):
    processor = EfficientNetImageProcessor.align_base()
    text = tmp_path / "notes.png"
    text.write_text("this is not a PNG")
    with pytest.raises(ImageInputError, match=r"image \('.*notes\.png'\): not an image file Pillow can read"):
        processor(str(text))
    with pytest.raises(FileNotFoundError, match=r"image \('.*missing\.jpg'\): no such image file"):
        processor(tmp_path / "missing.jpg")
    with pytest.raises(ImageInputError, match="is a directory, not an image file"):
        processor(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"empty\.png'\): empty file \(0 bytes\)"):
        processor(tmp_path / "empty.png")


def test_decompression_bomb_stays_refused(tmp_path, rng, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(random_rgb(rng, 64, 64)).save(path)  # 4096 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # refused above 2 * 1000
    with pytest.raises(ImageTooLargeError, match=r"images\[0\] \('.*bomb\.png'\): 4,096 pixels, over Pillow's limit "
                       r"of 2,000 .*decompression bomb.*PIL\.Image\.MAX_IMAGE_PIXELS = None") as info:
        EfficientNetImageProcessor.align_base()([path])
    assert isinstance(info.value, ImageInputError) and isinstance(info.value, Image.DecompressionBombError)
    assert Image.MAX_IMAGE_PIXELS == 1000  # not raised by us


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((0, 5, 3), np.uint8), r"images\[1\]: zero-size image \(array of shape \(0, 5, 3\)\)"),
        (np.zeros((4, 0), np.uint8), r"images\[1\]: zero-size"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"images\[1\]: expected an array of shape \[H, W\] or .*\(2, 4, 4, 3\)"),
        (np.zeros(7, np.uint8), r"found shape \(7,\)"),
        (np.zeros((6, 6, 5), np.uint8), r"C = 1, 2, 3 or 4 channels, found shape \(6, 6, 5\)"),
        (np.zeros((3, 64, 64), np.uint8), r"channels first\? pass input_data_format"),
        (np.zeros((4, 4, 3), bool), r"unsupported dtype bool"),
        (np.zeros((4, 4, 3), np.complex64), r"unsupported dtype complex64"),
        (np.zeros((4, 4, 3), object), r"unsupported dtype object"),
        (np.full((4, 4, 3), 1000, np.uint16), r"integer pixels must lie in 0..255, found 1000..1000 \(uint16\)"),
        (np.full((4, 4, 3), -1, np.int32), r"integer pixels must lie in 0..255"),
        (np.array([[[0.5, np.nan, 0.1]]], np.float32), r"images\[1\]: the float image contains NaN or inf"),
        (np.array([[[0.5, np.inf, 0.1]]]), r"NaN or inf"),
        (np.full((4, 4, 3), 300.5, np.float32), r"float pixels must be integers in 0..255 or lie in \[0, 1\]"),
        (np.full((4, 4, 3), 256.0, np.float32), r"integer-valued float pixels must lie in 0..255"),
    ],
)
def test_bad_arrays_are_refused_naming_the_input(array, match):
    with pytest.raises(ImageInputError, match=match):
        EfficientNetImageProcessor.align_base()([np.zeros((2, 2, 3), np.uint8), array])


def test_other_bad_inputs():
    processor = EfficientNetImageProcessor.align_base()
    with pytest.raises(ImageInputError, match="empty list"):
        processor([])
    with pytest.raises(ImageInputError, match=r"image: zero-size image \(0x4 pixels\)"):
        processor(Image.new("RGB", (0, 4)))
    with pytest.raises(ImageInputError, match=r"images\[0\]: cannot convert a mode 'La' image to RGB"):
        processor([Image.new("La", (3, 3))])
    with pytest.raises(TypeError, match=r"images\[1\]: expected a file path, a PIL.Image.Image or a NumPy array"):
        processor([np.zeros((2, 2, 3), np.uint8), 5])
    with pytest.raises(ValueError, match="input_data_format"):
        processor(np.zeros((2, 2, 3), np.uint8), input_data_format="CHW")
    # Different final sizes cannot share a batch.
    with pytest.raises(ImageInputError, match="cannot be stacked"):
        processor([np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2, 3), np.uint8)], do_resize=False, do_center_crop=False)


def test_pixel_range_is_minus_one_to_one_for_align_base(rng):
    # A property users rely on: align-base pixels lie in [-1, 1] for any uint8 input.
    out = EfficientNetImageProcessor.align_base()([random_rgb(rng, 50, 90), image_in_mode("CMYK", rng)])["pixel_values"]
    assert -1.0 <= out.min() and out.max() <= 1.0
