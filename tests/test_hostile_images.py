"""Image files as a new user hands them over: every PIL mode, odd sizes, broken files, odd paths.

Each case is one file (or path) that goes through the Python API (``processor(path)``) and the
command (``minialign classify PATH --labels dog cat``), and must end one of three ways:

- ``ok``: the pixels equal transformers' for the same file (its ``load_image``, then its PIL-backend
  processor) or, where stated, a hand-known picture; the command classifies it, stderr stays empty;
- ``warn``: as ok, plus one warning naming the file (one ``warning:`` line from the command);
- ``error``: an error naming the file (ImageInputError, FileNotFoundError for a missing file); the
  command exits 2 with exactly one line on stderr, naming the file.

Never a traceback, never a raw Pillow warning, never a silently wrong picture.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from transformers import EfficientNetImageProcessorPil
from transformers.image_utils import load_image as hf_load_image

import reference
from helpers import assert_close
from minialign.cli import main
from minialign.image_processing import EfficientNetImageProcessor, ImageInputError

PARITY = dict(atol=1e-5, rtol=0.0)  # Pillow resamples for both sides: the same pixels
PROCESSOR = EfficientNetImageProcessor.align_base()  # what reference.align_checkpoint saves for the command


def rgb(height: int = 13, width: int = 17, seed: int = 0) -> np.ndarray:  # -> [height, width, 3] uint8
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def gray(values, dtype, height: int = 13, width: int = 17, seed: int = 0) -> np.ndarray:  # -> [height, width]
    """Random pixels drawn from ``values`` (a (low, high) range, or a callable of an rng)."""
    rng = np.random.default_rng(seed)
    if callable(values):
        return values(rng, (height, width)).astype(dtype)
    return rng.integers(values[0], values[1], (height, width)).astype(dtype)


def in_mode(mode: str, height: int = 13, width: int = 17) -> Image.Image:
    """A random 8-bit-per-band image in ``mode`` (L, LA, RGB, RGBA, CMYK, YCbCr, LAB)."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    data = np.random.default_rng(1).integers(0, 256, height * width * bands, dtype=np.uint8).tobytes()
    return Image.frombytes(mode, (width, height), data)


def palette(transparency=None, height: int = 13, width: int = 17) -> Image.Image:
    """A mode "P" image; ``transparency``: a palette index (int) or per-entry alphas (bytes), as PNG's tRNS."""
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 16, (height, width), dtype=np.uint8), "L").convert("P")
    image.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tobytes())
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB, nor a header without pixels).

    color_type 0: gray, 2: RGB; ``rows``: the filtered scanlines (filter byte 0 + samples), or
    None for a file that stops after its header.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    pixels = chunk(b"IDAT", zlib.compress(rows)) if rows is not None else b""
    return b"\x89PNG\r\n\x1a\n" + header + pixels + chunk(b"IEND", b"")


def rgb16_png(pixels8: np.ndarray) -> bytes:
    """[h, w, 3] uint8 -> a 16-bit RGB PNG holding pixels8 * 257 (so 255 -> 65535, full scale)."""
    wide = pixels8.astype(">u2") * 257  # [h, w, 3] big-endian, as PNG stores them
    rows = b"".join(b"\x00" + row.tobytes() for row in wide)
    return png_bytes(pixels8.shape[1], pixels8.shape[0], 16, 2, rows)


# -- the cases --------------------------------------------------------------------------------


@dataclass
class Case:
    build: Callable[[Path], Path]  # directory -> the path to hand over
    outcome: str  # "ok", "warn" or "error"
    pattern: str = ""  # a regex the error / warning message must hold (besides the path)
    picture: np.ndarray | None = None  # ok: the 8-bit RGB picture it must equal (else: transformers')
    max_pixels: int | None = None  # PIL.Image.MAX_IMAGE_PIXELS for this case (to reach the bomb limits)


def saved(name: str, make: Callable[[], Image.Image], **params) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        path = directory / name
        make().save(path, **params)
        return path

    return build


def written(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        path = directory / name
        path.write_bytes(data() if callable(data) else data)
        return path

    return build


def encoded(image: Image.Image, fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def animated(name: str, **params) -> Callable[[Path], Path]:
    """Two frames, red then blue: the first frame is the picture (as transformers' load_image reads it)."""
    def build(directory: Path) -> Path:
        red, blue = (Image.new("RGB", (8, 6), color) for color in ((255, 0, 0), (0, 0, 255)))
        path = directory / name
        red.save(path, save_all=True, append_images=[blue], **params)
        return path

    return build


def directory_path(directory: Path) -> Path:
    (directory / "photos.png").mkdir()
    return directory / "photos.png"


def symlink_loop(directory: Path) -> Path:
    os.symlink("loop.png", directory / "loop.png")  # points at itself
    return directory / "loop.png"


def dangling_symlink(directory: Path) -> Path:
    os.symlink("gone.png", directory / "link.png")
    return directory / "link.png"


def unreadable(directory: Path) -> Path:
    path = directory / "secret.png"
    Image.fromarray(rgb()).save(path)
    path.chmod(0)
    if os.access(path, os.R_OK):
        path.chmod(0o644)
        pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reads here, "
                    "so an unreadable file cannot be made")
    return path


def spaces_and_unicode(directory: Path) -> Path:
    (directory / "my photos").mkdir()
    path = directory / "my photos" / "été 猫 ü.png"
    Image.fromarray(rgb()).save(path)
    return path


RED = np.tile(np.array([255, 0, 0], np.uint8), (6, 8, 1))  # [6, 8, 3]: the first frame of animated()
SIXTEEN = rgb(9, 11, seed=3)  # the 8-bit picture inside the 16-bit RGB PNG

CASES = {
    # every PIL mode a file can hold (HSV cannot be saved by Pillow: tested in memory in test_image_processing)
    "mode 1": Case(saved("bits.png", lambda: Image.fromarray(gray((0, 2), bool))), "ok"),
    "mode L": Case(saved("gray.png", lambda: in_mode("L")), "ok"),
    "mode LA": Case(saved("gray-alpha.png", lambda: in_mode("LA")), "ok"),
    "mode P": Case(saved("palette.png", palette), "ok"),
    "mode P, one transparent index": Case(saved("palette-trns.png", lambda: palette(3)), "ok"),
    "mode P, tRNS alphas": Case(saved("palette-alphas.png", lambda: palette(bytes(range(0, 256, 16)))), "ok"),
    "mode P GIF with transparency": Case(saved("palette.gif", lambda: palette(3)), "ok"),
    "mode RGB PNG": Case(saved("rgb.png", lambda: Image.fromarray(rgb())), "ok"),
    "mode RGB JPEG": Case(saved("rgb.jpg", lambda: Image.fromarray(rgb())), "ok"),
    "mode RGBA": Case(saved("rgba.png", lambda: in_mode("RGBA")), "ok"),
    "mode CMYK JPEG": Case(saved("cmyk.jpg", lambda: in_mode("CMYK")), "ok"),
    "mode CMYK TIFF": Case(saved("cmyk.tif", lambda: in_mode("CMYK")), "ok"),
    "mode YCbCr TIFF": Case(saved("ycbcr.tif", lambda: in_mode("YCbCr")), "ok"),
    "mode LAB TIFF": Case(saved("lab.tif", lambda: in_mode("LAB")), "ok"),
    # 16-bit, 32-bit and float files: accepted where every value is a 0..255 pixel (then every
    # transformers path agrees), refused otherwise; never clipped to white as convert("RGB") does.
    "mode I;16 PNG, values 0..255": Case(saved("gray16-low.png", lambda: Image.fromarray(gray((0, 256), np.uint16))), "ok"),
    "mode I;16 PNG, full range": Case(
        saved("gray16.png", lambda: Image.fromarray(gray(lambda r, s: np.linspace(0, 65535, s[1]) + np.zeros(s), np.uint16))),
        "error", r"16-bit .*mode 'I;16'.* 0\.\.65535, not 0\.\.255 .*>> 8"),
    "mode I TIFF, values 0..255": Case(saved("int32-low.tif", lambda: Image.fromarray(gray((0, 256), np.int32))), "ok"),
    "mode I TIFF, negative": Case(
        saved("int32.tif", lambda: Image.fromarray(gray((-50, 600), np.int32))), "error", r"mode 'I'.* -\d+\.\.\d+"),
    "mode F TIFF, integer values 0..255": Case(
        saved("float-int.tif", lambda: Image.fromarray(gray((0, 256), np.float32))), "ok"),
    "mode F TIFF, values in [0, 1]": Case(
        saved("float-unit.tif", lambda: Image.fromarray(gray(lambda r, s: r.uniform(0, 1, s), np.float32))), "error",
        r"mode 'F'.*\[0\.0\d*, 0\.9\d*\]"),
    "mode F TIFF, NaN": Case(
        saved("float-nan.tif", lambda: Image.fromarray(np.full((4, 4), np.nan, np.float32))), "error", r"NaN"),
    "16-bit RGB PNG": Case(written("rgb16.png", lambda: rgb16_png(SIXTEEN)), "ok", picture=SIXTEEN),
    # odd sizes and formats
    "1x1": Case(saved("one.png", lambda: Image.fromarray(rgb(1, 1))), "ok"),
    "1x3000": Case(saved("row.png", lambda: Image.fromarray(rgb(1, 3000))), "ok"),
    "3000x1": Case(saved("column.png", lambda: Image.fromarray(rgb(3000, 1))), "ok"),
    "1x1 GIF": Case(saved("dot.gif", lambda: Image.new("P", (1, 1))), "ok"),
    "animated GIF": Case(animated("anim.gif"), "ok", picture=RED),
    "animated PNG": Case(animated("anim.png"), "ok", picture=RED),
    "JPEG named .png": Case(saved("really-a-jpeg.png", lambda: Image.fromarray(rgb()), format="JPEG"), "ok"),
    "corrupt EXIF": Case(saved("exif.jpg", lambda: Image.fromarray(rgb()), exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff"),
                         "warn", r"Corrupt EXIF"),
    # broken files
    "truncated PNG": Case(written("cut.png", lambda: encoded(Image.fromarray(rgb(64, 80)), "PNG")[:600]),
                          "error", r"cannot decode the image: image file is truncated"),
    "truncated JPEG": Case(written("cut.jpg", lambda: encoded(Image.fromarray(rgb(64, 80)), "JPEG")[:600]),
                           "error", r"cannot read the file as an image: Truncated File Read"),
    "JPEG cut in its pixels": Case(written("cut-late.jpg", lambda: encoded(Image.fromarray(rgb(64, 80)), "JPEG")[:-200]),
                                   "error", r"cannot decode the image: image file is truncated"),
    "zero-byte file": Case(written("empty.png", b""), "error", r"empty file"),
    "text named .png": Case(written("notes.png", b"these are my notes, not a picture\n"), "error",
                            r"not an image file Pillow can read"),
    # paths
    "directory": Case(directory_path, "error", r"is a directory"),
    "missing file": Case(lambda d: d / "missing.png", "error", r"no such image file"),
    "dangling symlink": Case(dangling_symlink, "error", r"no such image file .*symbolic link"),
    "symlink loop": Case(symlink_loop, "error", r"symbolic links"),
    "no read permission": Case(unreadable, "error", r"[Pp]ermission denied"),
    "spaces and unicode": Case(spaces_and_unicode, "ok"),
    # Pillow's decompression-bomb limits: refused above 2 * MAX_IMAGE_PIXELS, warned above it
    "14000x14000 (header only)": Case(
        written("huge.png", png_bytes(14000, 14000, 8, 2, None)), "error",
        r"196,000,000 pixels.*178,956,970.*PIL\.Image\.MAX_IMAGE_PIXELS"),
    "over the bomb error limit": Case(
        saved("bomb.png", lambda: Image.fromarray(rgb(64, 64))), "error",
        r"4,096 pixels.*2,000 .*PIL\.Image\.MAX_IMAGE_PIXELS", max_pixels=1000),
    "in the bomb warning range": Case(
        saved("big.png", lambda: Image.fromarray(rgb(40, 40))), "warn",
        r"1,600 pixels.*PIL\.Image\.MAX_IMAGE_PIXELS = 1,000", max_pixels=1000),
}
IDS = list(CASES)


@pytest.fixture(params=IDS)
def case(request, tmp_path, monkeypatch):
    """(name, Case, path): the case built in a fresh directory, with its MAX_IMAGE_PIXELS set."""
    spec = CASES[request.param]
    path = spec.build(tmp_path)
    if spec.max_pixels is not None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", spec.max_pixels)
    return request.param, spec, path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile-model")
    reference.tiny_align_checkpoint(directory, seed=2)
    return str(directory)


def expected_pixels(spec: Case, path: Path) -> np.ndarray:
    """transformers' pixel_values for the file (or for the stated picture): load_image, then its processor."""
    hf = EfficientNetImageProcessorPil(
        do_resize=True, size=PROCESSOR.size, resample=PROCESSOR.resample, do_center_crop=True,
        crop_size=PROCESSOR.crop_size, rescale_factor=PROCESSOR.rescale_factor, rescale_offset=True,
        do_normalize=False, include_top=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own warnings on transformers' side are not ours to judge
        image = Image.fromarray(spec.picture) if spec.picture is not None else hf_load_image(str(path))
    return hf(image, return_tensors="np")["pixel_values"]


def without(path: Path, message: str) -> str:
    """The message less the path: the test's directory name holds the case's name ("truncated" ...)."""
    return message.replace(str(path), "PATH")


def test_python_api(case):
    name, spec, path = case
    if spec.outcome == "error":
        with pytest.raises((ImageInputError, FileNotFoundError)) as info:
            PROCESSOR(path)
        message = str(info.value)
        assert str(path) in message and re.search(spec.pattern, without(path, message)), message
        assert "\n" not in message
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = PROCESSOR(path)["pixel_values"]
    if spec.outcome == "ok":
        assert [str(w.message) for w in caught] == []
    else:
        assert len(caught) == 1, [str(w.message) for w in caught]
        message = str(caught[0].message)
        assert str(path) in message and re.search(spec.pattern, without(path, message)), message
    assert_close(pixels, expected_pixels(spec, path), **PARITY, name=name)


def test_command(case, checkpoint, capsys):
    name, spec, path = case
    code = main(["classify", str(path), "--labels", "dog", "cat", "--model", checkpoint])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    if spec.outcome == "error":
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("minialign classify: error: ") and str(path) in lines[0], err
        assert re.search(spec.pattern, without(path, lines[0])), err
        return
    assert code == 0, err
    assert out.splitlines()[0] == str(path) and len(out.splitlines()) == 3
    if spec.outcome == "ok":
        assert err == ""
    else:
        assert len(lines) == 1 and lines[0].startswith("minialign classify: warning: ") and str(path) in lines[0], err
        assert re.search(spec.pattern, without(path, lines[0])), err


def test_unreadable_file_simulated(tmp_path, monkeypatch, checkpoint, capsys):
    """"no read permission" skips as root (chmod does not stop root): here Pillow's open fails as it
    would for any other user, so the message and the command's one line are checked everywhere."""
    path = tmp_path / "secret.png"
    Image.fromarray(rgb()).save(path)

    def refuse(fp, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(fp))

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageInputError, match=r"\('.*secret\.png'\): cannot open the file: Permission denied$"):
        PROCESSOR(path)
    assert main(["classify", str(path), "--labels", "dog", "cat", "--model", checkpoint]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and lines[0].endswith("cannot open the file: Permission denied")
