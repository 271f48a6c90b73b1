"""``AlignProcessor``: the tokenizer and the image processor behind one call, as in transformers."""

from __future__ import annotations

import os
from typing import Any

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
    # The keys of a call's output, in the order it has them: the text's, then the images'.
    # (transformers' AlignProcessor.model_input_names lists the same four, the image's first.)
    model_input_names = (*BertTokenizer.model_input_names, *EfficientNetImageProcessor.model_input_names)
    # from_pretrained keywords that transformers takes and that change nothing here: there is one
    # tokenizer, whose ids are transformers' fast (Rust) tokenizer's.
    IGNORED_KEYWORDS = ("use_fast",)

    def __init__(self, image_processor: EfficientNetImageProcessor, tokenizer: BertTokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, **overrides: Any) -> AlignProcessor:
        """From a hub-layout directory: vocab.txt (or tokenizer.json), tokenizer_config.json,
        preprocessor_config.json (or transformers 5's processor_config.json).

        Keyword arguments override the saved settings, as in transformers: a tokenizer option
        (``BertTokenizer.OPTION_NAMES``: ``do_lower_case``, ``model_max_length``, ...) goes to the
        tokenizer, an image-processor option (``do_normalize``, ``size``, ...) to the image
        processor; ``use_fast`` is accepted and changes nothing. Any other keyword is a ValueError
        that names it and lists the options.
        """
        tokenizer_options = set(BertTokenizer.OPTION_NAMES)
        image_options = set(EfficientNetImageProcessor.option_names())
        unknown = sorted(set(overrides) - tokenizer_options - image_options - set(cls.IGNORED_KEYWORDS))
        if unknown:
            raise ValueError(
                f"AlignProcessor.from_pretrained: unknown keyword(s) {unknown}; the tokenizer's options are "
                f"{list(BertTokenizer.OPTION_NAMES)} and the image processor's {list(EfficientNetImageProcessor.option_names())}"
            )
        directory = resolve_model_dir(path_or_id)
        image_processor = EfficientNetImageProcessor.from_pretrained(
            directory, **{k: v for k, v in overrides.items() if k in image_options})
        tokenizer = BertTokenizer.from_pretrained(directory, **{k: v for k, v in overrides.items() if k in tokenizer_options})
        return cls(image_processor, tokenizer)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """preprocessor_config.json, vocab.txt and tokenizer_config.json, which transformers'
        ``AlignProcessor.from_pretrained`` reads as well."""
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

    # -- ids back to text: the tokenizer's, as in transformers -----------------------------------

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """``tokenizer.decode``: one sequence of ids -> text."""
        return self.tokenizer.decode(ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """``tokenizer.batch_decode``: each row of a list of id lists or a [B, T] array -> text."""
        return self.tokenizer.batch_decode(sequences, skip_special_tokens, clean_up_tokenization_spaces)
