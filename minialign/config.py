"""Model configurations, field for field the same as transformers' ALIGN configs.

A ``config.json`` written by transformers for ``kakaobrain/align-base`` loads here, and one
written here loads in transformers. The defaults below *are* align-base: a BERT-base text tower
and an EfficientNet-B7-shaped vision tower (width 2.0, depth 3.1) projected to 640 dimensions.

Reading rules (the same for all three classes):
- every field has transformers' default, so a missing field takes it, as in transformers;
- a field of the wrong type is a ``ConfigError`` naming the field, the expected and found type;
- unknown keys (``transformers_version``, ``architectures``, BERT's ``use_cache`` ...) are kept in
  ``extra`` and written back out unchanged, but never used; the constructor keeps unknown
  keywords the same way (transformers' testers pass ``is_decoder=False``);
- a ``model_type`` that is not this class's (or ``bert`` for the text tower) is an error, so that
  a CLIP or preprocessor config is not silently read as ALIGN with defaults;
- a value that transformers accepts and minialign does not implement (``return_dict=False``, an
  activation with learned weights) is a ``ConfigError`` naming the field and what it supports.

``TRANSFORMERS_FIELDS`` lists every field of transformers' three configs and what minialign does
with it; tests/test_config.py enumerates transformers' fields and fails on one missing there.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .backends.contract import ACTIVATION_NAMES, LEARNED_ACTIVATIONS
from .jsonfile import read_json_object


class ConfigError(ValueError):
    """A config.json (or dict) that does not describe a model minialign can build."""


def _type_ok(value: Any, annotation: Any) -> bool:
    """True when ``value`` fits a field annotation such as ``int``, ``float | None`` or ``list[int]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arm) for arm in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:  # JSON has no int/bool distinction problem, but Python does: True is an int
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:  # an integer literal in JSON (e.g. "dropout": 0) is a fine float
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _config_class(cls):
    """``@dataclass``, with a constructor that keeps unknown keywords in ``extra``, as ``from_dict``
    keeps unknown keys: transformers' configs take any keyword and store it. A keyword that looks
    like a misspelt field is kept too, with a warning that names the field it resembles."""
    cls = dataclass(cls)
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        unknown = {k: kwargs.pop(k) for k in list(kwargs) if k not in names and k != "extra"}
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.85)
            if close:
                warnings.warn(f"{cls.__name__}: unknown field {key!r} kept in extra and not used; "
                              f"did you mean {close[0]!r}?", stacklevel=2)
        unknown = {k: v for k, v in unknown.items() if k not in cls._derived_keys and k != "model_type"}
        if unknown:
            kwargs["extra"] = {**kwargs.get("extra", {}), **unknown}
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def _check_activation(owner: str, name: str) -> None:
    """A hidden_act that no backend implements is a ConfigError naming it and the accepted names."""
    if name in ACTIVATION_NAMES:
        return
    why = " has learned weights, which ALIGN checkpoints do not carry;" if name in LEARNED_ACTIVATIONS else \
        " is not an activation minialign implements;"
    raise ConfigError(f"{owner}.hidden_act {name!r}{why} use one of transformers' names {list(ACTIVATION_NAMES)}")


@dataclass
class _Config:
    """Shared reading, checking and writing. Subclasses declare fields with transformers' defaults."""

    model_type: ClassVar[str] = ""
    # Keys transformers derives or adds itself; accepted on reading and not kept in ``extra``.
    _derived_keys: ClassVar[frozenset[str]] = frozenset()

    # transformers' output switches, shared by every config: the default of a model call's
    # output_hidden_states / output_attentions when the call does not say. Outputs are always
    # objects with named fields (transformers' return_dict=True); tuples are not offered.
    output_hidden_states: bool = field(default=False, kw_only=True)
    output_attentions: bool = field(default=False, kw_only=True)
    return_dict: bool = field(default=True, kw_only=True)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if not _type_ok(value, hints[f.name]):
                raise ConfigError(
                    f"{type(self).__name__}.{f.name}: expected {hints[f.name]}, found {value!r} "
                    f"of type {type(value).__name__}"
                )
            if isinstance(value, tuple):  # JSON gives lists; keep one spelling
                setattr(self, f.name, list(value))
            elif hints[f.name] is float and isinstance(value, int):
                setattr(self, f.name, float(value))
        if not self.return_dict:
            raise ConfigError(f"{type(self).__name__}.return_dict=False (tuple outputs) is not supported: minialign's "
                              "models return output objects; use return_dict=True")
        self.validate()

    def validate(self) -> None:
        """Checks between fields; overridden where a model has some."""

    # -- dict / json -------------------------------------------------------------------------

    @classmethod
    def _accepted_model_types(cls) -> tuple[str, ...]:
        return (cls.model_type,)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a dict, found {type(data).__name__}")
        model_type = data.get("model_type", cls.model_type)
        if model_type not in cls._accepted_model_types():
            raise ConfigError(
                f"{cls.__name__}: model_type {model_type!r} is not one of {cls._accepted_model_types()}"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {
            k: v
            for k, v in data.items()
            if k not in names and k not in cls._derived_keys and k != "model_type"
        }
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        data = read_json_object(path, error=ConfigError, not_found=f"config file not found: {path}")
        if "model_type" not in data:
            raise ConfigError(
                f"{path}: missing required field 'model_type' (expected {cls._accepted_model_types()}); "
                "every config.json written by transformers has one"
            )
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    # The AlignConfig field that holds this config when it is one tower's ("text_config" ...), so
    # that the tower's config also loads from a full ALIGN config.json, as in transformers.
    align_config_key: ClassVar[str | None] = None

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike):
        """Read ``directory/config.json`` (or the file itself when given a path to a .json). A
        tower's config given a full ALIGN config.json (``model_type`` "align") reads its part of
        it (``text_config`` or ``vision_config``), as transformers does."""
        path = os.fspath(directory)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if cls.align_config_key is not None:
            data = read_json_object(path, error=ConfigError, not_found=f"config file not found: {path}")
            if data.get("model_type") == AlignConfig.model_type:
                try:
                    return getattr(AlignConfig.from_dict(data), cls.align_config_key)
                except ConfigError as err:
                    raise ConfigError(f"{path}: {err}") from None
        return cls.from_json_file(path)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as fh:
            fh.write(self.to_json_string())


@_config_class
class AlignTextConfig(_Config):
    """The BERT text tower. Defaults: BERT-base uncased, as in align-base."""

    model_type: ClassVar[str] = "align_text_model"
    align_config_key: ClassVar[str] = "text_config"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact erf GELU, as BERT was trained
    hidden_dropout_prob: float = 0.1  # training only; inference ignores dropout
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12  # BERT's TF value; torch's LayerNorm default would be 1e-5
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    SUPPORTED_ACTIVATIONS: ClassVar[tuple[str, ...]] = ACTIVATION_NAMES  # what every backend takes

    @classmethod
    def _accepted_model_types(cls) -> tuple[str, ...]:
        # The text tower *is* BERT: a plain BERT config.json describes it completely.
        return (cls.model_type, "bert")

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        config = super().from_dict(data)
        kind = data.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ConfigError(
                f"AlignTextConfig: position_embedding_type {kind!r} is not supported "
                "(ALIGN's BERT uses learned absolute positions)"
            )
        return config

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"AlignTextConfig.{name} must be >= 1, found {getattr(self, name)}")
        if self.num_hidden_layers < 0:
            raise ConfigError(f"AlignTextConfig.num_hidden_layers must be >= 0, found {self.num_hidden_layers}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"AlignTextConfig: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        _check_activation("AlignTextConfig", self.hidden_act)


@_config_class
class AlignVisionConfig(_Config):
    """The EfficientNet vision tower. Defaults: EfficientNet-B7 scaling, as in align-base.

    The seven per-stage lists describe EfficientNet-B0's stages; ``width_coefficient`` and
    ``depth_coefficient`` scale channels and repeats (see ``round_filters`` / ``round_repeats``
    in the vision tower).
    """

    model_type: ClassVar[str] = "align_vision_model"
    align_config_key: ClassVar[str] = "vision_config"
    SUPPORTED_ACTIVATIONS: ClassVar[tuple[str, ...]] = ACTIVATION_NAMES  # what every backend takes
    # transformers stores the derived block count; we recompute it from the repeats.
    _derived_keys: ClassVar[frozenset[str]] = frozenset({"num_hidden_layers"})

    num_channels: int = 3
    image_size: int | list[int] = 600
    width_coefficient: float = 2.0
    depth_coefficient: float = 3.1
    depth_divisor: int = 8
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 3, 5, 3, 5, 5, 3])
    in_channels: list[int] = field(default_factory=lambda: [32, 16, 24, 40, 80, 112, 192])
    out_channels: list[int] = field(default_factory=lambda: [16, 24, 40, 80, 112, 192, 320])
    depthwise_padding: list[int] = field(default_factory=list)  # block indices with "valid" padding
    strides: list[int] = field(default_factory=lambda: [1, 2, 2, 2, 1, 2, 1])
    num_block_repeats: list[int] = field(default_factory=lambda: [1, 2, 2, 3, 3, 4, 1])
    expand_ratios: list[int] = field(default_factory=lambda: [1, 6, 6, 6, 6, 6, 6])
    squeeze_expansion_ratio: float = 0.25
    hidden_act: str = "swish"  # swish == SiLU; after the stem, expansion, depthwise conv and in the SE
    hidden_dim: int = 2560  # EfficientNet's top-conv width; transformers' ALIGN uses it as the pooling window
    pooling_type: str = "mean"
    initializer_range: float = 0.02
    batch_norm_eps: float = 0.001  # TF's default, not torch's 1e-5
    batch_norm_momentum: float = 0.99  # TF convention (weight of the old value); torch's is 1 - this
    drop_connect_rate: float = 0.2  # stochastic depth, training only

    @property
    def num_hidden_layers(self) -> int:
        """Number of MBConv blocks: 55 for align-base (depth 3.1 applied to B0's 16 blocks)."""
        return sum(math.ceil(self.depth_coefficient * n) for n in self.num_block_repeats)

    def validate(self) -> None:
        lists = ("kernel_sizes", "in_channels", "out_channels", "strides", "num_block_repeats", "expand_ratios")
        lengths = {name: len(getattr(self, name)) for name in lists}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"AlignVisionConfig: the per-stage lists differ in length: {lengths}")
        if self.pooling_type not in ("mean", "max"):
            raise ConfigError(f"AlignVisionConfig.pooling_type must be 'mean' or 'max', found {self.pooling_type!r}")
        _check_activation("AlignVisionConfig", self.hidden_act)
        if any(s not in (1, 2) for s in self.strides):
            # transformers pads a stride-2 conv itself and gives every other stride padding="same",
            # which torch refuses for strided convolutions.
            raise ConfigError(f"AlignVisionConfig.strides must each be 1 or 2, found {self.strides}")
        if any(k < 1 or (k < 2 and s == 2) for k, s in zip(self.kernel_sizes, self.strides)):
            # A 1x1 depthwise conv of stride 2 gets padding -1 from transformers' correct_pad (a crop).
            raise ConfigError(f"AlignVisionConfig.kernel_sizes must be >= 1, and >= 2 in a stage of stride 2; "
                              f"found kernel_sizes {self.kernel_sizes} with strides {self.strides}")
        for name in ("num_channels", "depth_divisor", "hidden_dim"):  # a size, a divisor, a pooling window
            if getattr(self, name) < 1:
                raise ConfigError(f"AlignVisionConfig.{name} must be >= 1, found {getattr(self, name)}")
        if any(r < 1 for r in self.expand_ratios):
            raise ConfigError(f"AlignVisionConfig.expand_ratios must all be >= 1, found {self.expand_ratios}")


@_config_class
class AlignConfig(_Config):
    """The dual encoder: both towers, the text projection and the temperature."""

    model_type: ClassVar[str] = "align"

    text_config: AlignTextConfig = field(default_factory=AlignTextConfig)
    vision_config: AlignVisionConfig = field(default_factory=AlignVisionConfig)
    projection_dim: int = 640
    temperature_init_value: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        # Nested configs may arrive as dicts (from JSON) or as None (transformers' "use defaults").
        if self.text_config is None:
            self.text_config = AlignTextConfig()
        elif isinstance(self.text_config, dict):
            self.text_config = AlignTextConfig.from_dict(self.text_config)
        if self.vision_config is None:
            self.vision_config = AlignVisionConfig()
        elif isinstance(self.vision_config, dict):
            self.vision_config = AlignVisionConfig.from_dict(self.vision_config)
        super().__post_init__()

    def validate(self) -> None:
        if self.projection_dim < 1:
            raise ConfigError(f"AlignConfig.projection_dim must be >= 1, found {self.projection_dim}")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["text_config"] = self.text_config.to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        return out


def nano_config(vocab_size: int) -> AlignConfig:
    """align-nano: a 2-layer BERT (hidden 64) and a 4-block EfficientNet for 48x48 images.

    Sized to train on 2 CPU cores in minutes. The vision tower keeps EfficientNet's first four
    stages at width 1.0, one block each (stem 32 -> 16 -> 24 -> 40 -> 80 channels, strides
    2, 1, 2, 2, 2: a 48x48 image ends as a 3x3 map), so the embedding has 80 dimensions. The
    temperature starts at CLIP's 0.07 rather than transformers' 1.0: with logits in [-1, 1] a
    temperature of 1 gives the loss almost no signal, and a short run cannot afford to wait
    for it to fall.
    """
    text = AlignTextConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    vision = AlignVisionConfig(image_size=48, width_coefficient=1.0, depth_coefficient=1.0,
                               kernel_sizes=[3, 3, 5, 3], in_channels=[32, 16, 24, 40],
                               out_channels=[16, 24, 40, 80], strides=[1, 2, 2, 2], num_block_repeats=[1, 1, 1, 1],
                               expand_ratios=[1, 4, 4, 4], hidden_dim=320, drop_connect_rate=0.0)
    return AlignConfig(text_config=text, vision_config=vision, projection_dim=80, temperature_init_value=0.07)


# -- every field of transformers' configs, and what minialign does with it ---------------------------

# What a field is to minialign:
MODEL = "model"  # shapes what the towers compute; every value transformers builds is built here
OUTPUTS = "outputs"  # the default of a call's output flag (return_dict=False is refused)
TRAINING = "training"  # read only by training (init, dropout, batchnorm momentum), not by inference
KEPT = "kept"  # bookkeeping transformers writes: kept in ``extra`` and written back, never read
NO_EFFECT = "no effect"  # changes no output of transformers' ALIGN either (heads, chunking); kept in ``extra``
DERIVED = "derived"  # computed from other fields (and checked, for model_type)

_COMMON = {
    "transformers_version": KEPT, "architectures": KEPT, "_name_or_path": KEPT, "dtype": KEPT,
    "model_type": DERIVED, "output_hidden_states": OUTPUTS, "output_attentions": OUTPUTS, "return_dict": OUTPUTS,
    "chunk_size_feed_forward": NO_EFFECT, "is_encoder_decoder": NO_EFFECT, "id2label": NO_EFFECT,
    "label2id": NO_EFFECT, "problem_type": NO_EFFECT,
}
TRANSFORMERS_FIELDS: dict[str, dict[str, str]] = {
    "AlignTextConfig": {
        **_COMMON, **dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                    "intermediate_size", "hidden_act", "max_position_embeddings", "type_vocab_size",
                                    "layer_norm_eps"), MODEL),
        # pad_token_id: transformers' nn.Embedding(padding_idx=...) zeroes that row at init and
        # keeps its gradient at 0; minialign reads neither (the row is in the checkpoint).
        **dict.fromkeys(("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"), TRAINING),
        **dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id"), NO_EFFECT),
    },
    "AlignVisionConfig": {
        **_COMMON, **dict.fromkeys(("num_channels", "width_coefficient", "depth_coefficient", "depth_divisor",
                                    "kernel_sizes", "in_channels", "out_channels", "depthwise_padding", "strides",
                                    "num_block_repeats", "expand_ratios", "squeeze_expansion_ratio", "hidden_act",
                                    "hidden_dim", "pooling_type", "batch_norm_eps"), MODEL),
        **dict.fromkeys(("initializer_range", "batch_norm_momentum", "drop_connect_rate"), TRAINING),
        "image_size": NO_EFFECT,  # the processor decides the input size; transformers' model never reads it
        "num_hidden_layers": DERIVED,
    },
    "AlignConfig": {
        **_COMMON, **dict.fromkeys(("text_config", "vision_config", "projection_dim"), MODEL),
        **dict.fromkeys(("temperature_init_value", "initializer_range"), TRAINING),
    },
}
