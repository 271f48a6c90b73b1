"""The text tower: BERT, as transformers' ``AlignTextModel`` (= ``BertModel``) computes it.

    input_ids [B, T] ──► word + position + token-type embeddings ──► LayerNorm ──► x [B, T, H]
    x ──► N x encoder layer:
            a = LayerNorm(x + Wo · MultiHeadAttention(x, mask))          (post-norm, as BERT)
            x = LayerNorm(a + W2 · act(W1 · a))
    last_hidden_state = x [B, T, H];  pooler_output = tanh(Wp · x[:, 0]) [B, H]

ALIGN's text embedding is the [CLS] row of ``last_hidden_state`` passed through
``text_projection`` (in ``AlignModel``), not ``pooler_output``; the pooler is kept because the
checkpoint has it and transformers returns it.

Weights are looked up by their transformers names (``encoder.layer.3.attention.self.query.weight``),
so this file and ``transformers/models/align/modeling_align.py`` can be read side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends import get_ops
from .backends.contract import Ops
from .config import AlignTextConfig
from .modeling import PretrainedModel


@dataclass
class TextModelOutput:
    last_hidden_state: np.ndarray  # [B, T, H]
    pooler_output: np.ndarray  # [B, H]
    hidden_states: tuple[np.ndarray, ...] | None = None  # N + 1 of [B, T, H]: embeddings, then each layer
    attentions: tuple[np.ndarray, ...] | None = None  # N of [B, heads, T, T]


class AlignTextModel(PretrainedModel):
    """BERT encoder + pooler. ``model(input_ids, attention_mask, token_type_ids)``."""

    config_class = AlignTextConfig
    architecture = "AlignTextModel"
    checkpoint_prefixes = ("text_model.", "bert.")
    # Old transformers versions saved these constant buffers (arange / zeros); nothing to load.
    ignorable_keys = ("embeddings.position_ids", "embeddings.token_type_ids")

    def __init__(self, config: AlignTextConfig, params, *, strict: bool = True, ops: Ops | None = None):
        super().__init__(config, params, strict=strict)
        # The backend: what does the arithmetic (the fast NumPy one unless told otherwise); the
        # architecture below is written once, against the ops contract. The weights are
        # converted to the backend's arrays once, here (for NumPy they stay as they are).
        self.ops = ops = get_ops() if ops is None else ops
        self.tensors = {name: ops.from_numpy(array) for name, array in self.params.items()}

    @classmethod
    def expected_shapes(cls, config: AlignTextConfig) -> dict[str, tuple[int, ...]]:
        H, I = config.hidden_size, config.intermediate_size
        shapes = {
            "embeddings.word_embeddings.weight": (config.vocab_size, H),
            "embeddings.position_embeddings.weight": (config.max_position_embeddings, H),
            "embeddings.token_type_embeddings.weight": (config.type_vocab_size, H),
            "embeddings.LayerNorm.weight": (H,),
            "embeddings.LayerNorm.bias": (H,),
        }
        for i in range(config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
                shapes[p + name + ".weight"] = (H, H)
                shapes[p + name + ".bias"] = (H,)
            shapes[p + "intermediate.dense.weight"] = (I, H)
            shapes[p + "intermediate.dense.bias"] = (I,)
            shapes[p + "output.dense.weight"] = (H, I)
            shapes[p + "output.dense.bias"] = (H,)
            for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
                shapes[p + norm + ".weight"] = (H,)
                shapes[p + norm + ".bias"] = (H,)
        shapes["pooler.dense.weight"] = (H, H)
        shapes["pooler.dense.bias"] = (H,)
        return shapes

    # -- the architecture --------------------------------------------------------------------

    def embeddings(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        # [B, T] int, [B, T] int -> [B, T, H]
        """Sum of word, position and token-type embeddings, then LayerNorm.

        Positions are 0..T-1 for every row, padded or not: padding is handled by the attention
        mask, not by the embeddings (as in BERT).
        """
        p, ops, T = self.tensors, self.ops, input_ids.shape[1]
        position_ids = ops.from_numpy(np.arange(T))  # [T]: the same positions for every row
        x = ops.add(ops.embedding(input_ids, p["embeddings.word_embeddings.weight"]),  # [B, T, H]
                    ops.embedding(token_type_ids, p["embeddings.token_type_embeddings.weight"]))
        positions = ops.embedding(position_ids, p["embeddings.position_embeddings.weight"])  # [T, H], broadcast over B
        return ops.add_layer_norm(x, positions, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"],
                                  self.config.layer_norm_eps)

    def self_attention(self, i: int, x: np.ndarray, attention_mask, output_attentions: bool):
        # [B, T, H], [B, T] -> ([B, T, H], [B, heads, T, T] or None)
        """Multi-head self-attention: project to q, k, v, then attend per head with padded keys
        masked (ops.multi_head_attention splits H into heads x head_dim and merges them back)."""
        p, ops = self.tensors, self.ops
        pre = f"encoder.layer.{i}.attention.self."
        q, k, v = (ops.linear(x, p[pre + name + ".weight"], p[pre + name + ".bias"]) for name in ("query", "key", "value"))
        return ops.multi_head_attention(q, k, v, attention_mask, self.config.num_attention_heads,
                                        return_probs=output_attentions)

    def encoder_layer(self, i: int, x: np.ndarray, attention_mask, output_attentions: bool = False):
        # [B, T, H], [B, T] -> ([B, T, H], [B, heads, T, T] or None)
        """One post-norm transformer layer (dropout is training-only and omitted)."""
        p, ops, eps = self.tensors, self.ops, self.config.layer_norm_eps
        pre = f"encoder.layer.{i}."
        context, probs = self.self_attention(i, x, attention_mask, output_attentions)
        attn = ops.linear(context, p[pre + "attention.output.dense.weight"], p[pre + "attention.output.dense.bias"])
        a = ops.add_layer_norm(attn, x, p[pre + "attention.output.LayerNorm.weight"],
                               p[pre + "attention.output.LayerNorm.bias"], eps)  # LayerNorm(attn + x) [B, T, H]
        h = ops.linear(a, p[pre + "intermediate.dense.weight"], p[pre + "intermediate.dense.bias"],
                       activation=self.config.hidden_act)  # [B, T, I]
        out = ops.linear(h, p[pre + "output.dense.weight"], p[pre + "output.dense.bias"])  # [B, T, H]
        return ops.add_layer_norm(out, a, p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], eps), probs

    def pooler(self, x: np.ndarray) -> np.ndarray:
        # [B, T, H] -> [B, H]
        """tanh(W x[:, 0] + b): BERT's sentence vector, from the [CLS] position."""
        p = self.tensors
        return self.ops.tanh(self.ops.linear(x[:, 0], p["pooler.dense.weight"], p["pooler.dense.bias"]))

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        *,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> TextModelOutput:
        """The outputs' flags default (None) to the config's ``output_hidden_states`` / ``output_attentions``."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        checked = self.check_inputs(input_ids, attention_mask, token_type_ids)
        input_ids, attention_mask, token_type_ids = (self.ops.from_numpy(a) for a in checked)
        x = self.embeddings(input_ids, token_type_ids)
        hidden_states, attentions = [x], []
        for i in range(self.config.num_hidden_layers):
            x, probs = self.encoder_layer(i, x, attention_mask, output_attentions)
            hidden_states.append(x)
            attentions.append(probs)
        return TextModelOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x),
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    # -- input checks ------------------------------------------------------------------------

    def check_inputs(self, input_ids, attention_mask, token_type_ids):
        """Validate and normalise the inputs; every problem is a ValueError naming the input."""
        c = self.config
        input_ids = _as_int_matrix(input_ids, "input_ids")
        B, T = input_ids.shape
        if B == 0 or T == 0:
            raise ValueError(f"input_ids is empty (shape {input_ids.shape}); need at least one token in one sequence")
        if T > c.max_position_embeddings:
            raise ValueError(
                f"input_ids has {T} tokens per sequence, more than max_position_embeddings="
                f"{c.max_position_embeddings}; truncate the text (e.g. tokenizer(..., truncation=True, max_length=...))"
            )
        _check_range(input_ids, c.vocab_size, "input_ids", "vocab_size")
        attention_mask = _companion(attention_mask, input_ids, "attention_mask", 2, "2 (values must be 0 or 1)", 1)
        token_type_ids = _companion(token_type_ids, input_ids, "token_type_ids", c.type_vocab_size, "type_vocab_size", 0)
        return input_ids, attention_mask, token_type_ids


def _as_int_matrix(x, name: str) -> np.ndarray:
    """[B, T] integers, from an array or a list of equal-length lists."""
    try:
        arr = np.asarray(x)
    except ValueError:  # ragged lists
        raise ValueError(f"{name} must be a rectangular [batch, seq_len] array; pad the sequences "
                         "(e.g. tokenizer(..., padding=True))") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions [batch, seq_len], found shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, found dtype {arr.dtype}")
    return arr


def _companion(x, input_ids: np.ndarray, name: str, upper: int, upper_name: str, default: int) -> np.ndarray:
    """An optional [B, T] input that goes with input_ids (mask, token types): filled with
    ``default`` when None, else checked for shape and range."""
    if x is None:
        return np.full(input_ids.shape, default, dtype=np.int64)
    x = _as_int_matrix(x, name)
    if x.shape != input_ids.shape:
        raise ValueError(f"{name} has shape {x.shape}, input_ids has {input_ids.shape}")
    _check_range(x, upper, name, upper_name)
    return x


def _check_range(x: np.ndarray, upper: int, name: str, upper_name: str) -> None:
    bad = (x < 0) | (x >= upper)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}[{where[0]}, {where[1]}] = {int(x[where])} is out of range: must be in [0, {upper}) "
            f"({upper_name}); {int(bad.sum())} value(s) out of range"
        )
