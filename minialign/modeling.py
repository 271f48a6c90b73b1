"""What every minialign model shares: weights held under their transformers names, and loading
and saving in the transformers directory layout.

A model is a config plus a flat ``params`` dict ``{transformers weight name: float32 array}``.
Subclasses say which names and shapes their config implies (``expected_shapes``) and which
prefixes a checkpoint may put in front of them (``checkpoint_prefixes``); this base class does
the rest, so each model's file contains only its architecture.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from .backends import DEFAULT_BACKEND, get_ops
from .checkpoint import check_state_dict, load_state_dict, strip_prefix, write_safetensors
from .config import _Config
from .hub import resolve_model_dir


class PretrainedModel:
    config_class: ClassVar[type[_Config]]
    # The class name transformers records in config.json's "architectures".
    architecture: ClassVar[str]
    # Prefixes a checkpoint may put before our names: a standalone tower saves none, the full
    # AlignModel saves "text_model." / "vision_model.", BertFor* heads save "bert.".
    checkpoint_prefixes: ClassVar[tuple[str, ...]] = ()
    # Names that may appear in checkpoints but hold no learned state (buffers old versions saved).
    ignorable_keys: ClassVar[tuple[str, ...]] = ()
    # Bookkeeping tensors that inference never reads but transformers expects back: BatchNorm's
    # num_batches_tracked step counter. Kept exactly as loaded (int64) and written back on save.
    passthrough_suffixes: ClassVar[tuple[str, ...]] = (".num_batches_tracked",)

    def __init__(self, config: _Config, params: Mapping[str, np.ndarray], *, strict: bool = True):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.passthrough = {k: np.asarray(v) for k, v in params.items() if k.endswith(self.passthrough_suffixes)}
        params = {k: v for k, v in params.items() if not k.endswith(self.passthrough_suffixes)}
        self.params = check_state_dict(
            params, self.expected_shapes(config), strict=strict, ignorable=self.ignorable_keys,
            source=f"weights for {type(self).__name__}",
        )

    @classmethod
    def expected_shapes(cls, config) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, strict: bool = True, backend: str = DEFAULT_BACKEND,
                        device: str | None = None, dtype: str = "float32", cuda_graphs: bool = False):
        """Load a model saved by transformers' ``save_pretrained`` (or by ours) from a directory, the
        name of a model shipped with minialign (``"align-nano"``) or a hub id in the local Hugging
        Face cache (``minialign.hub``), to run on ``backend`` ("numpy", "reference" or "triton"; see
        ``minialign.backends.get_ops``; ``cuda_graphs=True``, triton on CUDA only: replay each
        tower's forward as a CUDA graph per input shape, ``minialign.cuda_graphs``)."""
        ops = get_ops(backend, device=device, dtype=dtype, cuda_graphs=cuda_graphs)  # first: a bad backend fails before any loading
        directory = resolve_model_dir(directory)
        config = cls.config_class.from_pretrained(directory)  # a tower's: its part of a full ALIGN config.json
        state = load_state_dict(directory)
        return cls(config, cls._select_weights(state), strict=strict, ops=ops)

    @classmethod
    def _select_weights(cls, state: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Strip the first known prefix that the checkpoint uses, if any."""
        for prefix in cls.checkpoint_prefixes:
            if any(name.startswith(prefix) for name in state):
                return strip_prefix(state, prefix)
        return state

    # -- saving ------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` that transformers' ``from_pretrained`` reads."""
        os.makedirs(directory, exist_ok=True)
        config = self.config.to_dict()
        config["architectures"] = [self.architecture]
        type(self.config).from_dict(config).save_pretrained(directory)
        write_safetensors({**self.params, **self.passthrough}, os.path.join(directory, "model.safetensors"))

    def num_parameters(self) -> int:
        return sum(int(np.prod(a.shape)) for a in self.params.values())
