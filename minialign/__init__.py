"""minialign: ALIGN (EfficientNet + BERT dual encoder, Jia et al. 2021) written to be read.

Plain NumPy is the reference (``minialign.backends.reference``), the lesson every faster backend
is checked against; transformers' ALIGN is the compatibility target:
same config fields, same weight names, same outputs to float32 precision.
"""

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
