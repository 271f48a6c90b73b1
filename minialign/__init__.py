"""minialign: ALIGN (EfficientNet + BERT dual encoder, Jia et al. 2021) written to be read.

NumPy is the reference implementation; transformers' ALIGN is the compatibility target:
same config fields, same weight names, same outputs to float32 precision.
"""

from .checkpoint import CheckpointError
from .config import AlignConfig, AlignTextConfig, AlignVisionConfig, ConfigError
from .text_model import AlignTextModel, TextModelOutput

__version__ = "0.1.0"

__all__ = [
    "AlignConfig",
    "AlignTextConfig",
    "AlignTextModel",
    "AlignVisionConfig",
    "CheckpointError",
    "ConfigError",
    "TextModelOutput",
]
