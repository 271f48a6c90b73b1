"""``AlignProcessor``: the tokenizer and the image processor behind one call, as in transformers."""

from __future__ import annotations

import os

from .hub import resolve_model_dir
from .image_processing import EfficientNetImageProcessor
from .tokenizer import BatchEncoding, BertTokenizer


class AlignProcessor:
    """``processor(text=..., images=..., return_tensors="np")``.

    Text defaults are transformers' ``AlignProcessor``'s: padding to ``max_length`` 64 with
    truncation, so every caption costs 64 positions. Pass ``padding="longest"`` to pad only to
    the longest caption of the batch (same outputs for the real tokens, less work).
    """

    TEXT_DEFAULTS = {"padding": "max_length", "max_length": 64, "truncation": True}

    def __init__(self, image_processor: EfficientNetImageProcessor, tokenizer: BertTokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike) -> AlignProcessor:
        """From a hub-layout directory: vocab.txt, tokenizer_config.json, preprocessor_config.json."""
        directory = resolve_model_dir(path_or_id)
        return cls(EfficientNetImageProcessor.from_pretrained(directory), BertTokenizer.from_pretrained(directory))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def __call__(self, text=None, images=None, return_tensors: str | None = "np", **text_kwargs) -> BatchEncoding:
        if text is None and images is None:
            raise ValueError("AlignProcessor needs text=..., images=..., or both")
        out = BatchEncoding()
        if text is not None:
            if isinstance(text, (list, tuple)) and len(text) == 0:
                raise ValueError("text is an empty list; pass at least one string")
            if isinstance(text, str) and not text.strip():
                raise ValueError("text is an empty string; pass at least one word")
            out.update(self.tokenizer(text, return_tensors=return_tensors, **{**self.TEXT_DEFAULTS, **text_kwargs}))
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors))
        return out
