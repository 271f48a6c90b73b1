"""minialign: ALIGN (EfficientNet + BERT dual encoder, Jia et al. 2021) written to be read.

NumPy is the reference implementation; transformers' ALIGN is the compatibility target:
same config fields, same weight names, same outputs to float32 precision.
"""

from .align_model import AlignModel, AlignOutput
from .checkpoint import CheckpointError
from .image_processing import EfficientNetImageProcessor, ImageInputError
from .processing import AlignProcessor
from .tokenizer import BertTokenizer
from .config import AlignConfig, AlignTextConfig, AlignVisionConfig, ConfigError
from .text_model import AlignTextModel, TextModelOutput
from .vision_model import AlignVisionModel, VisionModelOutput

__version__ = "0.1.0"

__all__ = [
    "AlignModel",
    "AlignOutput",
    "AlignProcessor",
    "AlignConfig",
    "AlignTextConfig",
    "AlignTextModel",
    "AlignVisionConfig",
    "AlignVisionModel",
    "BertTokenizer",
    "EfficientNetImageProcessor",
    "ImageInputError",
    "CheckpointError",
    "ConfigError",
    "TextModelOutput",
    "VisionModelOutput",
]
