"""The EfficientNet image processor: images in, ``pixel_values`` [B, 3, H, W] float32 out.

Option for option, default for default and number for number the same as transformers'
``EfficientNetImageProcessorPil`` (transformers/models/efficientnet/image_processing_pil_efficientnet.py
with its base ``PilBackend`` in image_processing_backends.py and the helpers in image_transforms.py).
A ``preprocessor_config.json`` written by transformers loads here, and one written here loads there.

Per image, in this order (each step only when its ``do_*`` option is on):

    load        path / PIL image / array        -> [h, w, 3]  uint8 (float arrays: see below)
    resize      Pillow, to size (height, width) -> [346, 346, 3]   aspect ratio not kept
    center_crop zero-pad if the crop is larger  -> [289, 289, 3]
    rescale     x * rescale_factor  (- 1 if rescale_offset)       float32
    normalize   (x - image_mean) / image_std
    include_top x / image_std          (a second division by std, EfficientNet's classifier input)
    transpose                                   -> [3, 289, 289]
    stack over the batch                        -> [B, 3, 289, 289]

align-base (``EfficientNetImageProcessor.align_base()``): bilinear resize to 346x346, center
crop 289x289, ``x / 127.5 - 1`` so pixels lie in [-1, 1], no normalisation, include_top off.
The class defaults are transformers' EfficientNet-B7 classifier settings (bicubic, no crop,
x / 255, normalise with 0.5 / 0.5, include_top on), which are *not* ALIGN's.

Pillow does the resampling (so results are bit-for-bit transformers'); everything else is NumPy.

Decisions where transformers' image processor alone would pass a bad image on or is ambiguous:

- Colour: every image becomes RGB the way ``transformers.image_utils.load_image`` (and so every
  transformers pipeline) does it: ``PIL.ImageOps.exif_transpose`` then ``image.convert("RGB")``.
  Grayscale is replicated, alpha is dropped (not blended), palettes are looked up, CMYK/YCbCr/...
  are converted by Pillow. With ``do_convert_rgb=True`` alpha is instead composited onto white, as
  transformers' ``convert_to_rgb`` does for that option.
- 16-bit, 32-bit integer and float images (PIL modes "I;16", "I", "F"; a 16-bit grayscale PNG
  opens as "I;16") are *not* clipped to 0..255 as ``convert("RGB")`` would do (a full-range
  16-bit image would come out mostly white, silently). They follow transformers' image processor,
  which takes such an image as an array: values that are all integers in 0..255 are pixels (then
  every transformers path agrees); other integers are refused, naming the mode and range, with the
  fix (convert to 8 bits; for 16 bits ``>> 8``). An in-memory "F" image follows the float-array
  rule below; an "F" *file* must hold 0..255 integers, since a file cannot say it is pre-scaled.
  16-bit RGB(A) PNGs need nothing: Pillow reads them as 8-bit RGB(A), top byte kept.
- Multi-frame files (animated GIF / PNG, multi-page TIFF): the first frame, as load_image.
- Arrays are channels-last only: [H, W] or [H, W, C] with C in 1 (gray), 2 (gray + alpha),
  3 (RGB), 4 (RGBA). transformers guesses channels-first for shapes like (3, 4, 3); we do not
  guess. Pass ``input_data_format="channels_first"`` for [C, H, W] arrays.
- Integer arrays must hold 0..255 (any integer dtype; bool is refused). Float arrays follow
  transformers' rule for handing floats to Pillow (``_rescale_for_pil_conversion``): when the
  image is resized, floats that are all integers in 0..255 are pixel values; otherwise floats all
  in [0, 1] are multiplied by 255, truncated to uint8, resized and divided by 255 again; anything
  else is an error. Without a resize, floats go through unquantised. Note that such [0, 1] floats
  are then *still* multiplied by ``rescale_factor`` (transformers does the same): pass
  ``do_rescale=False`` for them. A warning says so.
- NaN / inf, zero-size images, unreadable, truncated, empty or non-image files, directories,
  missing paths, broken or looping symbolic links are errors naming the input (its list index and
  path): ``ImageInputError`` (a ValueError), or ``FileNotFoundError`` for a missing file. URLs and
  base64 strings are not fetched or decoded.
- Size: Pillow's decompression-bomb limit is kept (PIL.Image.MAX_IMAGE_PIXELS is left alone).
  Over 2 * MAX_IMAGE_PIXELS pixels (about 179 million by default: 14000x14000 is over it) is
  ``ImageTooLargeError`` (an ImageInputError, and still a ``PIL.Image.DecompressionBombError``)
  naming the file, its pixel count, the limit and how to raise it. Between MAX_IMAGE_PIXELS and
  twice that Pillow reads the image and warns; that warning, like every other warning Pillow gives
  while reading a file (corrupt EXIF ...), is issued again as one warning naming the file.
- Output: always one float32 array [B, 3, H, W], also for ``return_tensors=None`` (transformers
  gives a list of arrays there). Images of different final sizes (possible only with
  ``do_resize=False`` and ``do_center_crop=False``) cannot be stacked and are an error.
- ``size`` and ``crop_size`` take the {"height", "width"} form (an int means a square, a pair
  means (height, width)), the only form EfficientNet and ALIGN checkpoints use; transformers'
  ``shortest_edge`` / ``max_height`` forms are refused with a clear error.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps

from .config import ConfigError
from .jsonfile import read_json_object
from .validation import is_int

# transformers' IMAGENET_STANDARD_MEAN / _STD: the EfficientNet classifier default, not ALIGN's.
IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]

# Pillow's resampling filters by their integer code (PIL.Image.Resampling; transformers'
# PILImageResampling uses the same numbers in preprocessor_config.json).
RESAMPLING = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

# The image_processor_type values that describe this processor (the PIL, torchvision and legacy names).
_PROCESSOR_TYPES = ("EfficientNetImageProcessor", "EfficientNetImageProcessorPil", "EfficientNetImageProcessorFast")

CONFIG_NAME = "preprocessor_config.json"
# transformers 5's AlignProcessor.save_pretrained writes the image processor's options here, under
# "image_processor", instead of into preprocessor_config.json.
PROCESSOR_CONFIG_NAME = "processor_config.json"


class ImageInputError(ValueError):
    """An image that cannot be processed: unreadable, truncated, empty, wrong shape/dtype/values."""


class ImageTooLargeError(ImageInputError, Image.DecompressionBombError):
    """A file over Pillow's decompression-bomb limit: an ImageInputError that is still Pillow's type."""


class BatchFeature(dict):
    """The processor's output: a dict, also readable by attribute (``out.pixel_values``), as in transformers."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# -- step 1: load one input as [h, w, 3] ------------------------------------------------------

# One band of 16-bit or 32-bit integers or 32-bit floats: values Pillow's convert("RGB") clips.
_WIDE_KIND = {"I": "32-bit integer", "F": "32-bit float"}


def _is_wide(mode: str) -> bool:
    return mode in _WIDE_KIND or mode.startswith("I;16")  # I;16, I;16L, I;16B, I;16N


def _wide_to_rgb(image: Image.Image, label: str, from_file: bool) -> np.ndarray:
    """Mode I;16 / I / F image -> [h, w, 3] uint8 (or float32 for an in-memory float image).

    transformers' image processor reads these as arrays: integers must be 0..255 pixels (it refuses
    the rest; convert("RGB") would clip them, silently). Floats follow the float-array rule, except
    that a file's floats must be 0..255 integers too (a file cannot say it is already rescaled).
    """
    values = np.asarray(image)  # [h, w] uint16 / int32 / float32
    kind = _WIDE_KIND.get(image.mode, "16-bit")
    floating = np.issubdtype(values.dtype, np.floating)
    if floating and not np.isfinite(values).all():
        raise ImageInputError(f"{label}: the {kind} image (PIL mode {image.mode!r}) contains NaN or inf")
    low, high = values.min(), values.max()
    if floating and not from_file:
        return _array_to_rgb(values, label, do_convert_rgb=False, channels_first=False)  # transformers' float rule
    if (np.round(values) == values).all() and 0 <= low and high <= 255:
        return np.repeat(values.astype(np.uint8)[:, :, None], 3, axis=2)  # [h, w] -> [h, w, 3]
    found = f"in [{low:.4g}, {high:.4g}]" if floating else f"{low}..{high}"
    how = ", e.g. Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))" if kind == "16-bit" else ""
    raise ImageInputError(
        f"{label}: a {kind} image (PIL mode {image.mode!r}) with values {found}, not 0..255 pixels; minialign "
        f"does not guess their scale (transformers' load_image would clip them to 0..255): convert it to "
        f"8 bits first{how}"
    )


def _pil_to_rgb(image: Image.Image, label: str, do_convert_rgb: bool, from_file: bool = False) -> np.ndarray:
    """PIL image of any mode -> [h, w, 3] uint8, the way transformers' ``load_image`` converts it.

    (Modes I;16 / I / F: see ``_wide_to_rgb``, which may give float32.)
    """
    try:
        image.load()  # decode now: a lazily opened, truncated file fails here, not in resize
    except Exception as err:  # PIL decoders raise OSError, SyntaxError, EOFError, struct.error ...
        raise ImageInputError(f"{label}: cannot decode the image: {err}") from err
    if image.width == 0 or image.height == 0:
        raise ImageInputError(f"{label}: zero-size image ({image.width}x{image.height} pixels)")
    try:
        # Turn the pixels upright when a camera stored an EXIF orientation tag (load_image does too).
        image = ImageOps.exif_transpose(image)
    except Exception as err:
        raise ImageInputError(f"{label}: cannot apply its EXIF orientation: {err}") from err
    if _is_wide(image.mode):
        return _wide_to_rgb(image, label, from_file)
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if image.mode == "P" and isinstance(image.info.get("transparency"), bytes):
        # A palette with an alpha per entry (PNG's tRNS): P -> RGB straight would warn that it
        # "should be converted to RGBA"; through RGBA gives the same colours, quietly.
        image = image.convert("RGBA")
    try:
        if do_convert_rgb and has_alpha:
            # transformers' convert_to_rgb: composite onto an opaque white background.
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            rgb = image.convert("RGB")  # load_image's rule: Pillow's own conversion; alpha is dropped
    except ValueError as err:  # e.g. "conversion from La to RGB not supported"
        raise ImageInputError(f"{label}: cannot convert a mode {image.mode!r} image to RGB: {err}") from err
    return np.asarray(rgb)  # [h, w, 3] uint8


def _reissue_warnings(caught: list[warnings.WarningMessage], label: str, size: tuple[int, int] | None) -> None:
    """The warnings caught while reading one image, issued again naming it: one line per category."""
    bombs = [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    if bombs and size is not None and Image.MAX_IMAGE_PIXELS is not None:
        width, height = size
        warnings.warn(
            f"{label}: {width}x{height} = {width * height:,} pixels, more than PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS:,} (Pillow's warning limit for possible decompression bombs); read anyway, "
            f"as Pillow does up to {2 * Image.MAX_IMAGE_PIXELS:,} pixels",
            Image.DecompressionBombWarning,
        )
        caught = [w for w in caught if w not in bombs]
    by_category: dict[type[Warning], dict[str, None]] = {}  # category -> messages, once each, in order
    for w in caught:
        by_category.setdefault(w.category, {})[" ".join(str(w.message).split())] = None
    for category, messages in by_category.items():
        warnings.warn(f"{label}: {'; '.join(messages)}", category)


def _open_file(path: str | os.PathLike, label: str, do_convert_rgb: bool) -> np.ndarray:
    """Image file -> [h, w, 3] uint8; every failure names the file, and so does every warning."""
    path = os.fspath(path)
    label = f"{label} ({path!r})"
    if os.path.isdir(path):
        raise ImageInputError(f"{label}: is a directory, not an image file")
    # Pillow warns through the warnings module (decompression-bomb range, corrupt EXIF ...): catch
    # them here so they can be issued again naming the file. (catch_warnings is process-wide: do
    # not read images from several threads at once and expect other threads' warnings to show.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(path) as image:  # refuses decompression bombs (> 2 * MAX_IMAGE_PIXELS)
                size = image.size
                pixels = _pil_to_rgb(image, label, do_convert_rgb, from_file=True)
        except FileNotFoundError:
            if os.path.islink(path):
                raise FileNotFoundError(
                    f"{label}: no such image file (a symbolic link to {os.readlink(path)!r}, which does not exist)"
                ) from None
            raise FileNotFoundError(f"{label}: no such image file") from None
        except Image.DecompressionBombError as err:
            # Keep Pillow's refusal and its limit; say which file, how big, and how to get past it.
            found = re.search(r"\((\d+) pixels\)", str(err))
            pixels = f"{int(found[1]):,} pixels" if found else "too many pixels"
            raise ImageTooLargeError(
                f"{label}: {pixels}, over Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS:,} for one image "
                "(2 * PIL.Image.MAX_IMAGE_PIXELS), refused as a possible decompression bomb; if you trust the "
                "file, raise the limit before processing (PIL.Image.MAX_IMAGE_PIXELS = None removes it), or "
                "save a smaller copy: the processor resizes it anyway"
            ) from None
        except Image.UnidentifiedImageError:  # an OSError: before the OSError case
            if os.path.getsize(path) == 0:
                raise ImageInputError(f"{label}: empty file (0 bytes), not an image") from None
            raise ImageInputError(f"{label}: not an image file Pillow can read (unknown format)") from None
        except ImageInputError:
            raise
        except OSError as err:
            if err.errno is not None:  # from the system: permission denied, a symbolic-link loop ...
                raise ImageInputError(f"{label}: cannot open the file: {err.strerror or err}") from None
            raise ImageInputError(f"{label}: cannot read the file as an image: {err}") from err  # from Pillow
        except Exception as err:  # Pillow's parsers also raise ValueError, SyntaxError, struct.error ...
            raise ImageInputError(f"{label}: cannot read the file as an image: {err}") from err
    _reissue_warnings(caught, label, size)
    return pixels


def _over_white(color: np.ndarray, alpha: np.ndarray, label: str) -> np.ndarray:
    """Composite onto white: [h, w, c], [h, w, 1] -> [h, w, c], same dtype (transformers' convert_to_rgb)."""
    if color.dtype == np.uint8:
        a = alpha / 255.0  # [h, w, 1] float64 in [0, 1]
        return np.round(a * color + (1 - a) * 255).astype(np.uint8)
    if alpha.min() < 0 or alpha.max() > 1 or color.min() < 0 or color.max() > 1:
        raise ImageInputError(
            f"{label}: do_convert_rgb composites float images only when colour and alpha lie in [0, 1]; "
            f"found values in [{min(color.min(), alpha.min())}, {max(color.max(), alpha.max())}]"
        )
    return (alpha * color + (1 - alpha) * 1.0).astype(color.dtype)


def _array_to_rgb(array: np.ndarray, label: str, do_convert_rgb: bool, channels_first: bool) -> np.ndarray:
    """[h, w] or [h, w, c] array, c in 1..4 -> [h, w, 3] uint8 or float (checked: shape, dtype, values)."""
    if array.ndim not in (2, 3):
        raise ImageInputError(
            f"{label}: expected an array of shape [H, W] or [H, W, C] (channels last), found shape "
            f"{array.shape}; pass a list of arrays for a batch"
        )
    if array.ndim == 3 and channels_first:
        array = np.moveaxis(array, 0, -1)  # [c, h, w] -> [h, w, c]
    if array.ndim == 2:
        array = array[:, :, None]  # [h, w] -> [h, w, 1]
    height, width, channels = array.shape
    if channels not in (1, 2, 3, 4):
        hint = ""
        if array.shape[0] in (1, 2, 3, 4) and not channels_first:
            hint = ' (channels first? pass input_data_format="channels_first" or transpose to [H, W, C])'
        raise ImageInputError(
            f"{label}: expected [H, W, C] with C = 1, 2, 3 or 4 channels, found shape {array.shape}{hint}"
        )
    if height == 0 or width == 0:
        raise ImageInputError(f"{label}: zero-size image (array of shape {array.shape})")

    # dtype: uint8 as is; other integers if they hold 0..255; floats if finite.
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.dtype == np.bool_ or not numeric:
        raise ImageInputError(
            f"{label}: unsupported dtype {array.dtype}; expected uint8 (0..255), another integer type "
            "holding 0..255, or float"
        )
    if np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageInputError(
                f"{label}: integer pixels must lie in 0..255, found {low}..{high} ({array.dtype}); "
                "scale 16-bit images to 8 bits first"
            )
        array = array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageInputError(f"{label}: the float image contains NaN or inf")
        if array.dtype == np.float16:
            array = array.astype(np.float32)  # exact; keeps float16 rounding out of the arithmetic

    # Channels -> RGB, matching PIL's convert("RGB") from L / LA / RGB / RGBA.
    if channels == 1:
        return np.repeat(array, 3, axis=2)  # [h, w, 1] -> [h, w, 3]: gray replicated
    if channels == 2:
        gray, alpha = array[:, :, :1], array[:, :, 1:]  # [h, w, 1] each
        if do_convert_rgb:
            gray = _over_white(gray, alpha, label)
        return np.repeat(gray, 3, axis=2)  # [h, w, 3]
    if channels == 4:
        rgb, alpha = array[:, :, :3], array[:, :, 3:]  # [h, w, 3], [h, w, 1]
        return _over_white(rgb, alpha, label) if do_convert_rgb else rgb
    return array  # [h, w, 3]


def load_image(
    image: Any, *, label: str = "image", do_convert_rgb: bool = False, channels_first: bool = False
) -> np.ndarray:
    """One input (path, PIL image or array) -> [h, w, 3] uint8, or float for float arrays / "F" images."""
    if isinstance(image, (str, os.PathLike)):
        return _open_file(image, label, do_convert_rgb)
    if isinstance(image, Image.Image):
        with warnings.catch_warnings(record=True) as caught:  # Pillow's warnings, named (see _open_file)
            warnings.simplefilter("always")
            pixels = _pil_to_rgb(image, label, do_convert_rgb)
        _reissue_warnings(caught, label, image.size)
        return pixels
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, label, do_convert_rgb, channels_first)
    raise TypeError(
        f"{label}: expected a file path, a PIL.Image.Image or a NumPy array [H, W(, C)], found "
        f"{type(image).__name__} (torch tensors: pass tensor.permute(1, 2, 0).numpy())"
    )


# -- steps 2 to 5: resize, crop, rescale, normalise -------------------------------------------


def _float_to_uint8(image: np.ndarray, label: str) -> tuple[np.ndarray, bool]:
    """[h, w, 3] float -> ([h, w, 3] uint8, whether it was a [0, 1] image that was scaled by 255).

    Pillow resamples 8-bit images, so floats are handed over as uint8 by transformers' rule
    (image_transforms._rescale_for_pil_conversion), copied step for step for identical numbers:
    integer-valued floats are pixel values; otherwise [0, 1] floats are scaled by 255. Both
    casts truncate (199.9999 -> 199), as transformers' do.
    """
    with np.errstate(invalid="ignore"):
        integer_valued = np.allclose(image, image.astype(int))
    if integer_valued:
        if image.min() < 0 or image.max() > 255:
            raise ImageInputError(
                f"{label}: integer-valued float pixels must lie in 0..255 to be resized, found "
                f"[{image.min()}, {image.max()}]"
            )
        return image.astype(np.uint8), False
    if image.min() >= 0 and image.max() <= 1:
        scaled = (image.astype(np.float64) * 255).astype(np.float32)  # transformers' rescale(x, 255)
        return scaled.astype(np.uint8), True
    raise ImageInputError(
        f"{label}: float pixels must be integers in 0..255 or lie in [0, 1] to be resized, found "
        f"[{image.min()}, {image.max()}]"
    )


def resize(image: np.ndarray, height: int, width: int, resample: int, label: str = "image") -> np.ndarray:
    """[h, w, 3] -> [height, width, 3] with Pillow's filter ``resample``; aspect ratio not kept.

    uint8 in, uint8 out. Float in: see ``_float_to_uint8``; [0, 1] images come back as float32 in [0, 1].
    """
    if image.dtype != np.uint8:
        pixels, scaled = _float_to_uint8(image, label)  # [h, w, 3] uint8
        out = resize(pixels, height, width, resample, label)  # [height, width, 3] uint8
        # Back to [0, 1]: transformers multiplies by 1/255 (in float64) rather than dividing by 255.
        return (out.astype(np.float64) * (1 / 255)).astype(np.float32) if scaled else out
    pil = Image.fromarray(np.ascontiguousarray(image))  # [h, w, 3] uint8 -> mode "RGB"
    pil = pil.resize((width, height), resample=resample)  # PIL sizes are (width, height)
    return np.asarray(pil)  # [height, width, 3] uint8


def _crop_or_pad_1d(length: int, crop: int) -> tuple[int, int, int]:
    """One axis of transformers' center_crop: (start in the image, zeros before, zeros after)."""
    if crop <= length:
        return (length - crop) // 2, 0, 0  # odd difference: one more row/column off the end
    before = math.ceil((crop - length) / 2)  # too small: pad, the odd zero row/column before
    return 0, before, crop - length - before


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """[h, w, 3] -> [height, width, 3]: the centred window; zero-padded where the image is smaller."""
    h, w, _ = image.shape
    top, pad_top, pad_bottom = _crop_or_pad_1d(h, height)
    left, pad_left, pad_right = _crop_or_pad_1d(w, width)
    image = image[top : top + height, left : left + width]  # [min(h, height), min(w, width), 3]
    # Zeros are pixel value 0 (black), padded before rescale: align-base sees them as -1.
    return np.pad(image, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)))  # [height, width, 3]


def rescale(image: np.ndarray, factor: float, offset: bool) -> np.ndarray:
    """[H, W, 3] any dtype -> [H, W, 3] float32: x * factor, minus 1 when ``offset``.

    align-base: factor 1/127.5 with offset maps 0..255 to [-1, 1]. The product is taken in float64
    and rounded once to float32, then 1 is subtracted in float32, as in transformers.
    """
    out = (image.astype(np.float64) * factor).astype(np.float32)
    return out - np.float32(1) if offset else out


def normalize(image: np.ndarray, mean: float | list[float], std: float | list[float]) -> np.ndarray:
    """[H, W, 3] float32 -> [H, W, 3] float32: (x - mean) / std per channel (scalars broadcast)."""
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float32), (3,))  # [3]
    std = np.broadcast_to(np.asarray(std, dtype=np.float32), (3,))  # [3]
    return (image - mean) / std


def _is_unit_float(image: np.ndarray) -> bool:
    """A float image that transformers' rule treats as already scaled to [0, 1]."""
    if image.dtype == np.uint8:
        return False
    with np.errstate(invalid="ignore"):
        if np.allclose(image, image.astype(int)):
            return False
    return bool(image.min() >= 0 and image.max() <= 1)


# -- the processor ----------------------------------------------------------------------------


def _bad(name: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{name} must be {expected}, found {value!r} ({type(value).__name__})")


def _is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)


def _size_dict(name: str, value: Any) -> dict[str, int]:
    """int n -> n x n; (height, width) -> dict; {"height", "width"} -> checked copy."""
    if is_int(value):
        value = {"height": value, "width": value}
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        value = {"height": value[0], "width": value[1]}
    if not isinstance(value, dict) or set(value) != {"height", "width"}:
        raise _bad(name, 'an int, a (height, width) pair or {"height": int, "width": int} '
                   "(minialign does not support shortest_edge / max_height sizes)", value)
    if not all(is_int(v) and v > 0 for v in value.values()):
        raise _bad(name, "positive integers for height and width", value)
    return {"height": int(value["height"]), "width": int(value["width"])}


def _per_channel(name: str, value: Any, nonzero: bool = False) -> float | list[float]:
    """A float or a list of 3 floats (one per RGB channel)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 3 or not all(_is_number(v) for v in value):
            raise _bad(name, "a number or a list of 3 numbers (R, G, B)", value)
        value = [float(v) for v in value]
    elif _is_number(value):
        value = float(value)
    else:
        raise _bad(name, "a number or a list of 3 numbers (R, G, B)", value)
    if nonzero and 0.0 in np.atleast_1d(value):
        raise _bad(name, "non-zero (it divides)", value)
    return value


@dataclass
class EfficientNetImageProcessor:
    """transformers' EfficientNetImageProcessor (PIL backend) in NumPy: same options, same defaults.

    ``processor(images)`` -> ``{"pixel_values": float32 [B, 3, H, W]}``. The defaults are
    transformers' class defaults (the EfficientNet-B7 classifier); ``align_base()`` gives ALIGN's.
    A ``None`` option means "the default", as it does in transformers.
    """

    do_resize: bool = True
    size: dict[str, int] = field(default_factory=lambda: {"height": 346, "width": 346})
    resample: int = 3  # PIL bicubic; align-base uses 2 (bilinear), the filter of its TF original
    do_center_crop: bool = False
    crop_size: dict[str, int] = field(default_factory=lambda: {"height": 289, "width": 289})
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    rescale_offset: bool = False  # True: x * rescale_factor - 1 (1/127.5 then maps 0..255 to [-1, 1])
    do_normalize: bool = True
    image_mean: float | list[float] = field(default_factory=lambda: list(IMAGENET_STANDARD_MEAN))
    image_std: float | list[float] = field(default_factory=lambda: list(IMAGENET_STANDARD_STD))
    include_top: bool = True  # divide by image_std once more (after any normalisation)
    do_convert_rgb: bool | None = None  # None/False: PIL convert("RGB"); True: alpha onto white
    # Unknown keys from a preprocessor_config.json (processor_class, do_pad ...): kept, written
    # back by save_pretrained, never used.
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    model_input_names: ClassVar[tuple[str, ...]] = ("pixel_values",)  # what __call__ returns
    _BOOLS: ClassVar[tuple[str, ...]] = (
        "do_resize", "do_center_crop", "do_rescale", "rescale_offset", "do_normalize", "include_top",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "extra" and getattr(self, f.name) is None:  # None means the class default
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                setattr(self, f.name, default)
        for name in self._BOOLS:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise _bad(name, "true or false", getattr(self, name))
            setattr(self, name, bool(getattr(self, name)))
        if self.do_convert_rgb is not None and not isinstance(self.do_convert_rgb, (bool, np.bool_)):
            raise _bad("do_convert_rgb", "true, false or null", self.do_convert_rgb)
        self.size = _size_dict("size", self.size)
        self.crop_size = _size_dict("crop_size", self.crop_size)
        if not is_int(self.resample) or int(self.resample) not in RESAMPLING:
            raise _bad("resample", f"a PIL resampling code {RESAMPLING}", self.resample)
        self.resample = int(self.resample)
        if not _is_number(self.rescale_factor):
            raise _bad("rescale_factor", "a finite number", self.rescale_factor)
        self.rescale_factor = float(self.rescale_factor)
        self.image_mean = _per_channel("image_mean", self.image_mean)
        self.image_std = _per_channel("image_std", self.image_std, nonzero=True)
        if not isinstance(self.extra, dict):
            raise _bad("extra", "a dict", self.extra)

    @classmethod
    def align_base(cls) -> EfficientNetImageProcessor:
        """kakaobrain/align-base's settings (transformers' convert_align_tf_to_hf.py)."""
        return cls(
            resample=2,  # bilinear
            size={"height": 346, "width": 346},
            do_center_crop=True,
            crop_size={"height": 289, "width": 289},
            rescale_factor=1 / 127.5,
            rescale_offset=True,  # pixels in [-1, 1]
            do_normalize=False,
            include_top=False,
        )

    # -- processing ---------------------------------------------------------------------------

    def __call__(
        self, images: Any, return_tensors: str | None = None, *, input_data_format: str | None = None, **options: Any
    ) -> BatchFeature:
        """images -> BatchFeature(pixel_values=float32 [B, 3, H, W]).

        images: a path (str / PathLike), PIL image or [H, W(, C)] array, or a list of them; a single
            image gives B = 1.
        return_tensors: "np" or None; both give the same NumPy array.
        input_data_format: None / "channels_last" (arrays are [H, W, C]) or "channels_first" ([C, H, W]).
        options: per-call overrides of any option, e.g. ``do_center_crop=False``.
        """
        if return_tensors not in (None, "np"):
            raise ValueError(
                f"return_tensors={return_tensors!r}: minialign returns NumPy arrays only (None or 'np'); "
                "wrap the result with torch.from_numpy if you need a tensor"
            )
        if input_data_format not in (None, "channels_last", "channels_first"):
            raise ValueError(
                f"input_data_format must be 'channels_last' or 'channels_first', found {input_data_format!r}"
            )
        opts = dataclasses.replace(self, **options) if options else self

        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ImageInputError("no images: got an empty list")
            labelled = [(f"images[{i}]", image) for i, image in enumerate(images)]
        else:
            labelled = [("image", images)]

        pixel_values = []
        for label, image in labelled:
            pixels = load_image(
                image, label=label, do_convert_rgb=bool(opts.do_convert_rgb),
                channels_first=input_data_format == "channels_first",
            )  # [h, w, 3] uint8 (or float)
            if opts.do_rescale and _is_unit_float(pixels):
                warnings.warn(
                    f"{label}: float pixels in [0, 1] look already rescaled, yet do_rescale multiplies them by "
                    f"rescale_factor={opts.rescale_factor} (as transformers does); pass do_rescale=False",
                    stacklevel=2,
                )
            pixel_values.append(opts._process(pixels, label))  # [3, H, W] float32

        shapes = {p.shape for p in pixel_values}
        if len(shapes) > 1:
            raise ImageInputError(
                f"the processed images differ in size ({sorted(shapes)}) and cannot be stacked into one "
                "batch; enable do_resize or do_center_crop, or process them one at a time"
            )
        return BatchFeature(pixel_values=np.stack(pixel_values))  # [B, 3, H, W] float32

    preprocess = __call__  # transformers' other name for it

    def _process(self, image: np.ndarray, label: str) -> np.ndarray:
        """[h, w, 3] uint8 or float -> [3, H, W] float32, the steps of EfficientNet's _preprocess."""
        if self.do_resize:
            image = resize(image, self.size["height"], self.size["width"], self.resample, label)  # [346, 346, 3]
        if self.do_center_crop:
            image = center_crop(image, self.crop_size["height"], self.crop_size["width"])  # [289, 289, 3]
        if self.do_rescale:
            image = rescale(image, self.rescale_factor, self.rescale_offset)  # float32
        else:
            image = image.astype(np.float32)
        if self.do_normalize:
            image = normalize(image, self.image_mean, self.image_std)
        if self.include_top:
            image = normalize(image, 0.0, self.image_std)  # x / std, as transformers' include_top
        return np.ascontiguousarray(image.transpose(2, 0, 1))  # [H, W, 3] -> [3, H, W]

    # -- preprocessor_config.json -------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EfficientNetImageProcessor:
        """Options from a preprocessor_config.json dict; unknown keys go to ``extra``."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected a JSON object of options, found {type(data).__name__}")
        kind = data.get("image_processor_type", "EfficientNetImageProcessor")
        if kind not in _PROCESSOR_TYPES:
            raise ConfigError(
                f"image_processor_type {kind!r} is not an EfficientNet image processor {_PROCESSOR_TYPES}"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: copy.deepcopy(v) for k, v in data.items() if k not in names and k != "image_processor_type"}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The preprocessor_config.json dict transformers writes (do_convert_rgb left out while None)."""
        out = copy.deepcopy(self.extra)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and not (f.name == "do_convert_rgb" and value is None):
                out[f.name] = copy.deepcopy(value)
        out["image_processor_type"] = "EfficientNetImageProcessor"
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options (``do_resize``, ``size``, ...): what ``from_pretrained`` and a call override."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> EfficientNetImageProcessor:
        """Read ``directory/preprocessor_config.json`` (or the .json file itself); ``directory`` may
        also name a model shipped with minialign (``"align-nano"``) or a cached hub id. A
        directory written by transformers 5's ``AlignProcessor.save_pretrained`` has no
        preprocessor_config.json: the options are then ``processor_config.json``'s
        ``"image_processor"``. Keyword arguments override the file's options, as in transformers;
        one that is not an option is a ConfigError naming it."""
        unknown = sorted(set(overrides) - set(cls.option_names()))
        if unknown:
            raise ConfigError(f"EfficientNetImageProcessor.from_pretrained: unknown option(s) {unknown}; "
                              f"the options are {list(cls.option_names())}")
        path = os.fspath(directory)
        if not os.path.isfile(path):
            from .hub import resolve_model_dir

            directory = resolve_model_dir(path)
            path = os.path.join(directory, CONFIG_NAME)
            joint = os.path.join(directory, PROCESSOR_CONFIG_NAME)
            if not os.path.isfile(path) and os.path.isfile(joint):
                data = read_json_object(joint, error=ConfigError)
                if not isinstance(data.get("image_processor"), dict):
                    raise ConfigError(f"{joint}: no 'image_processor' object, and no {CONFIG_NAME} beside it")
                return cls._from_file_data(data["image_processor"], f"{joint} (image_processor)", overrides)
        data = read_json_object(path, error=ConfigError, not_found=f"image processor config not found: {path}")
        return cls._from_file_data(data, path, overrides)

    @classmethod
    def _from_file_data(cls, data: dict[str, Any], where: str, overrides: dict[str, Any]) -> EfficientNetImageProcessor:
        try:
            return cls.from_dict({**data, **overrides})
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write ``directory/preprocessor_config.json``; returns its path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json_string())
        return path

