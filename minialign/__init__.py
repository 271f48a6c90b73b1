"""minialign: ALIGN (EfficientNet + BERT dual encoder, Jia et al. 2021) written to be read.

NumPy is the reference implementation; transformers' ALIGN is the compatibility target:
same config fields, same weight names, same outputs to float32 precision.
"""

import os as _os
import sys as _sys

if "numpy" not in _sys.modules:
    # OpenBLAS reads this once, when NumPy loads it. After each matrix product its idle threads
    # spin for ~0.1 s by default and keep a core busy that minialign's elementwise threads need;
    # 2^16 cycles (~25 us) makes the vision tower ~12% faster on 2 cores. It changes no result,
    # and a value the user has set wins. See "threads for elementwise work" in layers.py.
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

from .align_model import AlignModel, AlignOutput
from .checkpoint import CheckpointError
from .config import AlignConfig, AlignTextConfig, AlignVisionConfig, ConfigError
from .image_processing import EfficientNetImageProcessor, ImageInputError
from .pipeline import ZeroShotImageClassificationPipeline, pipeline
from .processing import AlignProcessor
from .text_model import AlignTextModel, TextModelOutput
from .tokenizer import BertTokenizer
from .vision_model import AlignVisionModel, VisionModelOutput

__version__ = "0.1.0"

__all__ = [
    "AlignConfig",
    "AlignModel",
    "AlignOutput",
    "AlignProcessor",
    "AlignTextConfig",
    "AlignTextModel",
    "AlignVisionConfig",
    "AlignVisionModel",
    "BertTokenizer",
    "CheckpointError",
    "ConfigError",
    "EfficientNetImageProcessor",
    "ImageInputError",
    "TextModelOutput",
    "VisionModelOutput",
    "ZeroShotImageClassificationPipeline",
    "pipeline",
]
