"""The text tower: BERT, as transformers' ``AlignTextModel`` (= ``BertModel``) computes it.

    input_ids [B, T] ──► word + position + token-type embeddings ──► LayerNorm ──► x [B, T, H]
    x ──► N x encoder layer:
            a = LayerNorm(x + Wo · MultiHeadAttention(x, mask))          (post-norm, as BERT)
            x = LayerNorm(a + W2 · act(W1 · a))
    last_hidden_state = x [B, T, H];  pooler_output = tanh(Wp · x[:, 0]) [B, H]

ALIGN's text embedding is the [CLS] row of ``last_hidden_state`` passed through
``text_projection`` (in ``AlignModel``), not ``pooler_output``; the pooler is kept because the
checkpoint has it and transformers returns it.

Packed (``model(..., packed=True)``). A padded batch computes every pad token through every layer
only for the attention mask to ignore it. Packed, the model keeps the real tokens alone, as
``[N, H]`` rows with the sequences one after another (``pack``; FlashAttention's varlen layout):

    [B, T] ids, mask ──► pack: the real tokens' ids, token types and positions [N],
                         cu_seqlens [B + 1] (sequence b is rows cu_seqlens[b] .. cu_seqlens[b + 1])
    embeddings [N, H] ──► every encoder layer, each op on rows; attention per sequence
                          (ops.packed_attention) ──► x [N, H]
    last_hidden_state = x scattered back into [B, T, H] (zeros at the padding)
    pooler_output = tanh(Wp · x[cu_seqlens[:-1]])   each sequence's first token, its [CLS]

A token's position is its column in the padded batch, as the padded path gives it (0, 1, 2, ...
restarting with each sequence under the tokenizer's right padding), so every real token's
output equals the padded path's whatever the padding: a padded key has attention weight exactly 0
there. Only the padding's own outputs differ (zeros here; the padded path computes something for
them that no one reads).

Weights are looked up by their transformers names (``encoder.layer.3.attention.self.query.weight``),
so this file and ``transformers/models/align/modeling_align.py`` can be read side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends import get_ops
from .backends.contract import Array, Ops
from .config import AlignTextConfig
from .cuda_graphs import graphs_for
from .modeling import PretrainedModel


@dataclass
class TextModelOutput:
    last_hidden_state: np.ndarray  # [B, T, H]
    pooler_output: np.ndarray  # [B, H]
    hidden_states: tuple[np.ndarray, ...] | None = None  # N + 1 of [B, T, H]: embeddings, then each layer
    attentions: tuple[np.ndarray, ...] | None = None  # N of [B, heads, T, T]


@dataclass(frozen=True)
class PackedBatch:
    """The real tokens of a padded batch, one row each, the sequences one after another: what
    ``AlignTextModel.pack`` makes. The arrays are the backend's."""

    input_ids: Array  # [N]: sequence 0's tokens, then sequence 1's, ...
    token_type_ids: Array  # [N]
    position_ids: Array  # [N]: each token's column in the padded batch
    cu_seqlens: Array  # [B + 1] int32: sequence b is rows cu_seqlens[b] .. cu_seqlens[b + 1]
    max_seqlen: int  # the longest sequence
    first_token: Array  # [B]: each sequence's first row (its [CLS]), cu_seqlens[:-1]
    padded_index: Array  # [N]: where each row goes back in the padded batch, b * T + t
    shape: tuple[int, int]  # (B, T): the padded batch's


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
        # Made once here too: the positions 0 .. P-1 (a forward slices the first T), and each
        # layer's query, key and value projections in the form ops.linears takes them (the Triton
        # backend concatenates the three into one [3H, H] weight: one GEMM instead of three).
        self.position_ids = ops.from_numpy(np.arange(config.max_position_embeddings))  # [P]
        self.qkv = []
        for i in range(config.num_hidden_layers):
            pre = f"encoder.layer.{i}.attention.self."
            names = [pre + name for name in ("query", "key", "value")]
            self.qkv.append(ops.prepare_linears(tuple(self.tensors[n + ".weight"] for n in names),
                                                tuple(self.tensors[n + ".bias"] for n in names)))
        # encode's CUDA graphs, captured and replayed per input shape when the backend asks for
        # them (minialign/cuda_graphs.py; the padded path only); None otherwise.
        self.graphs = graphs_for(self.encode, ops)

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

    def embeddings(self, input_ids: np.ndarray, token_type_ids: np.ndarray, position_ids=None) -> np.ndarray:
        # [B, T] int, [B, T] int -> [B, T, H]   (packed: [N] int, [N] int, [N] int -> [N, H])
        """Sum of word, position and token-type embeddings, then LayerNorm.

        Positions are 0..T-1 for every row, padded or not: padding is handled by the attention
        mask, not by the embeddings (as in BERT). A packed batch gives each token's own position.
        """
        p, ops = self.tensors, self.ops
        if position_ids is None:
            position_ids = self.position_ids[:input_ids.shape[-1]]  # [T]: the same positions for every row
        x = ops.add(ops.embedding(input_ids, p["embeddings.word_embeddings.weight"]),  # [B, T, H]
                    ops.embedding(token_type_ids, p["embeddings.token_type_embeddings.weight"]))
        positions = ops.embedding(position_ids, p["embeddings.position_embeddings.weight"])  # [T, H], broadcast over B
        return ops.add_layer_norm(x, positions, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"],
                                  self.config.layer_norm_eps)

    def self_attention(self, i: int, x: np.ndarray, attention_mask, output_attentions: bool):
        # [B, T, H], [B, T] -> ([B, T, H], [B, heads, T, T] or None)   (packed: [N, H], PackedBatch)
        """Multi-head self-attention: project to q, k, v (the three linears of ``self.qkv[i]``),
        then attend per head with padded keys masked (ops.multi_head_attention splits H into
        heads x head_dim and merges them back), or, packed, per sequence."""
        ops, heads = self.ops, self.config.num_attention_heads
        q, k, v = ops.linears(x, self.qkv[i])  # query, key, value
        if isinstance(attention_mask, PackedBatch):
            return ops.packed_attention(q, k, v, attention_mask.cu_seqlens, attention_mask.max_seqlen, heads), None
        return ops.multi_head_attention(q, k, v, attention_mask, heads, return_probs=output_attentions)

    def encoder_layer(self, i: int, x: np.ndarray, attention_mask, output_attentions: bool = False):
        # [B, T, H], [B, T] -> ([B, T, H], [B, heads, T, T] or None)   (packed: [N, H], PackedBatch)
        """One post-norm transformer layer (dropout is training-only and omitted). ``attention_mask``
        is the [B, T] mask of a padded ``x``, or the ``PackedBatch`` a packed ``x`` came from."""
        p, ops, eps = self.tensors, self.ops, self.config.layer_norm_eps
        pre = f"encoder.layer.{i}."
        context, probs = self.self_attention(i, x, attention_mask, output_attentions)
        a = ops.linear_add_layer_norm(  # LayerNorm(W_o context + b_o + x)  [B, T, H]
            context, p[pre + "attention.output.dense.weight"], p[pre + "attention.output.dense.bias"], x,
            p[pre + "attention.output.LayerNorm.weight"], p[pre + "attention.output.LayerNorm.bias"], eps)
        h = ops.linear(a, p[pre + "intermediate.dense.weight"], p[pre + "intermediate.dense.bias"],
                       activation=self.config.hidden_act)  # [B, T, I]
        out = ops.linear_add_layer_norm(  # LayerNorm(W_2 h + b_2 + a)  [B, T, H]
            h, p[pre + "output.dense.weight"], p[pre + "output.dense.bias"], a,
            p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], eps)
        return out, probs

    def pooler(self, x: np.ndarray) -> np.ndarray:
        # [B, T, H] -> [B, H]
        """tanh(W x[:, 0] + b): BERT's sentence vector, from the [CLS] position."""
        return self.pooler_head(x[:, 0])

    def pooler_head(self, first: np.ndarray) -> np.ndarray:
        # [B, H] -> [B, H]
        """tanh(W first + b), ``first`` each sequence's [CLS] state."""
        p = self.tensors
        return self.ops.tanh(self.ops.linear(first, p["pooler.dense.weight"], p["pooler.dense.bias"]))

    def encoder(self, x, attention_mask, output_attentions: bool = False):
        # [B, T, H], [B, T] -> ([B, T, H], layers + 1 hidden states, layers attentions)   (packed: [N, H], PackedBatch)
        """Every encoder layer in turn; also returns each layer's input and output and attention
        probabilities (None unless ``output_attentions``)."""
        hidden_states, attentions = [x], []
        for i in range(self.config.num_hidden_layers):
            x, probs = self.encoder_layer(i, x, attention_mask, output_attentions)
            hidden_states.append(x)
            attentions.append(probs)
        return x, hidden_states, attentions

    # -- packed ------------------------------------------------------------------------------

    def pack(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> PackedBatch:
        # [B, T] int x 3 (checked, NumPy) -> PackedBatch of N = attention_mask.sum() tokens
        """The real tokens (``attention_mask != 0``) of a batch, in order, the sequences one after
        another; any padding pattern. Done on the host: the inputs are NumPy there anyway."""
        B, T = input_ids.shape
        real = attention_mask != 0
        lengths = real.sum(axis=1)  # [B]
        if not lengths.all():
            empty = int(np.flatnonzero(lengths == 0)[0])
            raise ValueError(f"attention_mask[{empty}] is all 0: a packed batch needs at least one real token per "
                             "sequence (its first is the [CLS] the pooler reads); run it padded (packed=False)")
        rows, cols = np.nonzero(real)  # [N] each: row-major, so sequence 0's tokens come first, in order
        cu_seqlens = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)  # [B + 1]
        ops = self.ops
        return PackedBatch(
            input_ids=ops.from_numpy(input_ids[rows, cols]), token_type_ids=ops.from_numpy(token_type_ids[rows, cols]),
            position_ids=ops.from_numpy(cols), cu_seqlens=ops.from_numpy(cu_seqlens), max_seqlen=int(lengths.max()),
            first_token=ops.from_numpy(cu_seqlens[:-1].astype(np.int64)), padded_index=ops.from_numpy(rows * T + cols),
            shape=(B, T))

    def unpack(self, x, batch: PackedBatch):
        # [N, H] -> [B, T, H]
        """Packed rows back into the padded batch, zeros at the padding."""
        B, T = batch.shape
        return self.ops.scatter_rows(x, batch.padded_index, B * T).reshape(B, T, x.shape[-1])

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        *,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        packed: bool = False,
    ) -> TextModelOutput:
        """The outputs of a padded batch. ``packed=True`` computes the real tokens only (module
        docstring): the same outputs at every real token, zeros at the padding, and the pooler
        reads each sequence's first real token; no attention probabilities. The outputs' flags
        default (None) to the config's ``output_hidden_states`` / ``output_attentions``."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        checked = self.check_inputs(input_ids, attention_mask, token_type_ids)
        if packed:
            if output_attentions:
                raise ValueError("packed=True returns no attention probabilities (each sequence's would be its "
                                 "own size); use packed=False with output_attentions=True")
            batch = self.pack(*checked)
            x, hidden_states, _ = self.encoder(self.embeddings(batch.input_ids, batch.token_type_ids,
                                                               batch.position_ids), batch)
            return TextModelOutput(
                last_hidden_state=self.unpack(x, batch),
                pooler_output=self.pooler_head(self.ops.embedding(batch.first_token, x)),
                hidden_states=tuple(self.unpack(h, batch) for h in hidden_states) if output_hidden_states else None,
            )
        input_ids, attention_mask, token_type_ids = (self.ops.from_numpy(a) for a in checked)
        if not (output_hidden_states or output_attentions):
            encode = self.encode if self.graphs is None else self.graphs
            return TextModelOutput(*encode(input_ids, attention_mask, token_type_ids))
        x, hidden_states, attentions = self.encoder(self.embeddings(input_ids, token_type_ids), attention_mask,
                                                    output_attentions)
        return TextModelOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x),
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def encode(self, input_ids, attention_mask, token_type_ids):
        # [B, T] x 3 backend arrays -> ([B, T, H], [B, H])
        """The padded forward's two outputs from the backend's arrays (``__call__`` checks the
        inputs first): what a CUDA graph captures, since it keeps only its final outputs."""
        x, _, _ = self.encoder(self.embeddings(input_ids, token_type_ids), attention_mask)
        return x, self.pooler(x)

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
