"""minialign: ALIGN (EfficientNet + BERT dual encoder, Jia et al. 2021) written to be read.

Plain NumPy is the reference (``minialign.backends.reference``), the lesson every faster backend
is checked against; transformers' ALIGN is the compatibility target:
same config fields, same weight names, same outputs to float32 precision.

The public names below are imported on first use (PEP 562): ``import minialign`` alone loads
no NumPy, so that the ``minialign`` command can tune OpenBLAS before NumPy starts it (see
``__main__.py``), and ``minialign --version`` answers at once.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "AlignModel": "align_model", "AlignOutput": "align_model",
    "CheckpointError": "checkpoint",
    "AlignConfig": "config", "AlignTextConfig": "config", "AlignVisionConfig": "config", "ConfigError": "config",
    "EfficientNetImageProcessor": "image_processing", "ImageInputError": "image_processing",
    "ZeroShotImageClassificationPipeline": "pipelines", "pipeline": "pipelines",
    "AlignProcessor": "processing",
    "AlignTextModel": "text_model", "TextModelOutput": "text_model",
    "BertTokenizer": "tokenizer",
    "AlignVisionModel": "vision_model", "VisionModelOutput": "vision_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # the next access is a plain attribute
        return value
    raise AttributeError(f"module 'minialign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
