"""AlignProcessor's public surface against transformers' AlignProcessor on the same files.

The setting is transformers' own processor test's (tests/models/align/test_processing_align.py):
a 15-token WordPiece vocabulary and an image processor resizing to 20x20 with CLIP's mean and
std. Both processors load the same directory; their outputs, decoded strings and settings must
agree, and each must read what the other saves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import assert_close
from minialign import AlignProcessor

VOCAB = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ",",
         "low", "lowest"]
IMAGE_PROCESSOR = {"do_resize": True, "size": 20, "do_normalize": True,
                   "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
TEXTS = ["lower newer", "Want, WANTED un running", "lowest"]
PIXELS = 1e-5  # float32 pixels through the same Pillow resize: rounding of the last steps only


@pytest.fixture
def directory(tmp_path):
    """The test's files, with the class names a hub directory carries (transformers' from_pretrained
    finds its classes by them)."""
    (tmp_path / "vocab.txt").write_text("".join(token + "\n" for token in VOCAB))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({**IMAGE_PROCESSOR, "image_processor_type": "EfficientNetImageProcessor"}))
    return tmp_path


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)]


def _theirs(path, **kwargs):
    from transformers import AlignProcessor as HFAlignProcessor

    return HFAlignProcessor.from_pretrained(path, **kwargs)


def _assert_same_outputs(ours, theirs, texts=TEXTS):
    a = ours(text=texts, images=_images())
    b = theirs(text=texts, images=_images(), return_tensors="np")
    assert list(a) == list(b), (list(a), list(b))  # the same keys in the same order
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert_close(a["pixel_values"], b["pixel_values"], atol=PIXELS, rtol=0, name="pixel_values")


def test_outputs_match_transformers(directory):
    ours, theirs = AlignProcessor.from_pretrained(directory), _theirs(directory)
    _assert_same_outputs(ours, theirs)
    with pytest.raises(ValueError, match="needs text=..., images=..., or both"):
        ours()


def test_model_input_names_are_the_output_keys(directory):
    ours, theirs = AlignProcessor.from_pretrained(directory), _theirs(directory)
    assert ours.model_input_names == tuple(ours(text=TEXTS[:1], images=_images()))
    assert ours.model_input_names == ("input_ids", "token_type_ids", "attention_mask", "pixel_values")
    assert set(ours.model_input_names) == set(theirs.model_input_names)  # theirs lists pixel_values first


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_and_batch_decode_match_transformers(directory, skip_special_tokens):
    ours, theirs = AlignProcessor.from_pretrained(directory), _theirs(directory)
    predicted = [[1, 4, 5, 8, 1, 0, 8], [3, 4, 3, 1, 1, 8, 9], [1, 5, 6, 7, 12, 13, 2, 3]]
    for ids in predicted:
        assert ours.decode(ids, skip_special_tokens=skip_special_tokens) == \
            theirs.decode(ids, skip_special_tokens=skip_special_tokens)
    assert ours.batch_decode(predicted[:2], skip_special_tokens=skip_special_tokens) == \
        theirs.batch_decode(predicted[:2], skip_special_tokens=skip_special_tokens)
    encoded = ours(text=TEXTS)["input_ids"]  # a [B, 64] array, padding and all
    assert ours.batch_decode(encoded, skip_special_tokens=skip_special_tokens) == \
        theirs.batch_decode(encoded, skip_special_tokens=skip_special_tokens)


OVERRIDES = [
    dict(do_normalize=False),
    dict(size={"height": 16, "width": 24}, do_center_crop=True, crop_size=12, resample=2),
    dict(do_lower_case=False, model_max_length=12),
    dict(do_rescale=False, include_top=False, do_lower_case=False, strip_accents=True, use_fast=True),
]


@pytest.mark.parametrize("overrides", OVERRIDES)
def test_from_pretrained_keywords_override_the_saved_settings(directory, overrides):
    """As transformers: a tokenizer option goes to the tokenizer, an image-processor option to the
    image processor, over what the files say."""
    ours, theirs = AlignProcessor.from_pretrained(directory, **overrides), _theirs(directory, **overrides)
    for key, value in overrides.items():
        if key == "use_fast":
            continue
        owner = "tokenizer" if hasattr(ours.tokenizer, key) else "image_processor"
        mine = getattr(getattr(ours, owner), key)
        if key in ("size", "crop_size"):
            assert mine == {k: v for k, v in dict(getattr(theirs.image_processor, key)).items() if v is not None}
        else:
            assert mine == getattr(getattr(theirs, owner), key), key
    _assert_same_outputs(ours, theirs, texts=["WANT Lowest"])
    if overrides.get("model_max_length"):  # truncation falls back on it: a long text is cut the same
        long = ["want " * 20]
        a, b = ours.tokenizer(long, truncation=True), theirs.tokenizer(long, truncation=True)
        assert a["input_ids"] == b["input_ids"] and len(a["input_ids"][0]) == 12


def test_unknown_keywords_are_an_error_naming_them(directory):
    with pytest.raises(ValueError, match=r"AlignProcessor.from_pretrained: unknown keyword\(s\) \['bos_token', "
                                         r"'padding_value'\]; the tokenizer's options are \['do_lower_case'"):
        AlignProcessor.from_pretrained(directory, bos_token="(BOS)", padding_value=1.0, do_normalize=False)
    with pytest.raises(ValueError, match=r"image processor's \[.*'do_normalize'"):
        AlignProcessor.from_pretrained(directory, do_normalise=False)


@pytest.mark.parametrize("overrides", [{}, dict(do_lower_case=False, do_normalize=False, model_max_length=40)])
def test_what_minialign_saves_transformers_reads(directory, tmp_path_factory, overrides):
    ours = AlignProcessor.from_pretrained(directory, **overrides)
    saved = tmp_path_factory.mktemp("saved")
    ours.save_pretrained(saved)
    theirs = _theirs(saved)
    _assert_same_outputs(ours, theirs, texts=["WANT Lowest", "un, runn"])
    assert theirs.tokenizer.do_lower_case == ours.tokenizer.do_lower_case
    assert theirs.tokenizer.model_max_length == ours.tokenizer.model_max_length
    assert AlignProcessor.from_pretrained(saved).image_processor == ours.image_processor


def test_what_transformers_saves_minialign_reads(directory, tmp_path_factory):
    """transformers 5 saves a processor as processor_config.json (the image processor's options
    nested) and tokenizer.json, with no vocab.txt or preprocessor_config.json."""
    theirs = _theirs(directory, do_lower_case=False, do_normalize=False)
    saved = tmp_path_factory.mktemp("saved-by-transformers")
    theirs.save_pretrained(saved)
    assert not (saved / "vocab.txt").exists() and not (saved / "preprocessor_config.json").exists()
    ours = AlignProcessor.from_pretrained(saved)
    assert ours.tokenizer.get_vocab() == theirs.tokenizer.get_vocab()
    assert ours.tokenizer.do_lower_case is False and ours.image_processor.do_normalize is False
    _assert_same_outputs(ours, _theirs(saved), texts=["WANT Lowest", "un, runn"])
