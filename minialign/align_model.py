"""ALIGN, the dual encoder: both towers, the text projection and the temperature.

    texts  ──► AlignTextModel ──► last_hidden_state[:, 0]  (the [CLS] row, [B_t, 768])
                                   ──► text_projection (768 -> 640) ──► L2-normalise ──► t [B_t, 640]
    images ──► AlignVisionModel ──► pooler_output [B_i, 640] ──► L2-normalise ──► v [B_i, 640]

    logits_per_text = t v^T / temperature     [B_t, B_i];   logits_per_image = its transpose

The image tower's 640 pooled channels *are* the embedding (no image projection); the text side
is projected from the [CLS] state, not from BERT's tanh pooler (which the checkpoint still has).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends import get_ops
from .backends.contract import Ops
from .config import AlignConfig, ConfigError
from .loss import align_loss, l2_normalize
from .modeling import PretrainedModel
from .text_model import AlignTextModel, TextModelOutput
from .vision_model import AlignVisionModel, VisionModelOutput, round_filters


TEXT_BUCKET = 64  # texts per bucket in get_text_features


@dataclass
class AlignOutput:
    loss: float | None  # only with return_loss=True
    logits_per_image: np.ndarray  # [B_i, B_t]
    logits_per_text: np.ndarray  # [B_t, B_i]
    text_embeds: np.ndarray  # [B_t, P], L2-normalised
    image_embeds: np.ndarray  # [B_i, P], L2-normalised
    text_model_output: TextModelOutput
    vision_model_output: VisionModelOutput


class AlignModel(PretrainedModel):
    """``model(input_ids, pixel_values, attention_mask=None, token_type_ids=None, return_loss=False)``."""

    config_class = AlignConfig
    architecture = "AlignModel"
    ignorable_keys = tuple("text_model." + k for k in AlignTextModel.ignorable_keys)

    def __init__(self, config: AlignConfig, params, *, strict: bool = True, ops: Ops | None = None):
        image_dim = round_filters(config.vision_config, config.vision_config.out_channels[-1])
        if config.projection_dim != image_dim:
            raise ConfigError(
                f"AlignConfig.projection_dim={config.projection_dim} but the image embedding has {image_dim} "
                "channels (the vision tower's last width); text and image embeddings must have the same size"
            )
        super().__init__(config, params, strict=strict)
        self.ops = ops = get_ops() if ops is None else ops
        self.tensors = {name: ops.from_numpy(self.params[name]) for name in ("text_projection.weight", "text_projection.bias")}
        state = {**self.params, **self.passthrough}
        sub = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
        self.text_model = AlignTextModel(config.text_config, sub("text_model."), strict=strict, ops=ops)
        self.vision_model = AlignVisionModel(config.vision_config, sub("vision_model."), strict=strict, ops=ops)

    @classmethod
    def expected_shapes(cls, config: AlignConfig) -> dict[str, tuple[int, ...]]:
        shapes = {"text_model." + k: s for k, s in AlignTextModel.expected_shapes(config.text_config).items()}
        shapes.update({"vision_model." + k: s for k, s in AlignVisionModel.expected_shapes(config.vision_config).items()})
        shapes["text_projection.weight"] = (config.projection_dim, config.text_config.hidden_size)
        shapes["text_projection.bias"] = (config.projection_dim,)
        shapes["temperature"] = ()
        return shapes

    @property
    def temperature(self) -> float:
        return float(self.params["temperature"])

    # -- features ----------------------------------------------------------------------------

    def get_text_features(self, input_ids, attention_mask=None, token_type_ids=None, *,
                          bucket_size: int = TEXT_BUCKET, packed: bool | None = None) -> np.ndarray:
        # [B, T] ints -> [B, P], not normalised
        """The projected [CLS] state: text_projection(last_hidden_state[:, 0]).

        Pad tokens cost nothing, in one of two ways:

        - ``packed=True``: the whole batch runs as one packed forward (``AlignTextModel.pack``):
          the real tokens only, attention per text. The default on the Triton backend
          (``ops.PACK_TEXT``), where each kernel launch costs and one set of launches takes every
          text, however ragged. Each text's [CLS] is its first real token. A text with no real token
          (an all-0 mask row) is an error.
        - ``packed=False``: the texts are sorted by real length and run in buckets of up to
          ``bucket_size``, each cut to its longest text. The default on the NumPy backends, and
          on the Triton one with ``cuda_graphs=True`` (a bucket's shape repeats, so its forward is
          captured once and replayed; a packed batch's token count differs from call to call):
          for any mask the [CLS] is column 0, and an all-0 mask row runs.

        A padded key gets exactly zero attention weight, so either way the result is that of the
        padded batch, up to float32 rounding (the matrix products have other shapes). With
        AlignProcessor's default padding to 64 tokens and captions of ~10, that is most of the text
        tower's work saved. Unpacked, batches that are not right-padded (a mask with a 0 before a 1)
        run as they are.
        """
        ids, mask, types = self.text_model.check_inputs(input_ids, attention_mask, token_type_ids)
        if packed is None:
            packed = self.ops.PACK_TEXT and self.text_model.graphs is None
        if packed:
            text = self.text_model
            batch = text.pack(ids, mask, types)
            x, _, _ = text.encoder(text.embeddings(batch.input_ids, batch.token_type_ids, batch.position_ids), batch)
            return self._project(self.ops.embedding(batch.first_token, x))  # [N, H] -> each text's [CLS] row
        lengths = mask.sum(axis=1)
        right_padded = np.array_equal(mask != 0, np.arange(mask.shape[1]) < lengths[:, None])
        if not right_padded:
            return self._project_text(self.text_model(ids, mask, types))
        features = np.empty((len(ids), self.config.projection_dim), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")  # [B]: shortest first
        for start in range(0, len(order), bucket_size):
            rows = order[start:start + bucket_size]
            T = max(1, int(lengths[rows].max()))
            features[rows] = self._project_text(self.text_model(ids[rows, :T], mask[rows, :T], types[rows, :T]))
        return features

    def get_image_features(self, pixel_values) -> np.ndarray:
        # [B, 3, H, W] -> [B, P], not normalised
        """The vision tower's pooled output."""
        return self.ops.to_numpy(self.vision_model(pixel_values).pooler_output)

    def _project_text(self, out: TextModelOutput) -> np.ndarray:
        # last_hidden_state [B, T, H] -> [B, P] NumPy
        return self._project(out.last_hidden_state[:, 0])

    def _project(self, first: np.ndarray) -> np.ndarray:
        # [B, H] backend array (each text's [CLS] state) -> [B, P] NumPy: what follows (normalising,
        # logits, loss) is a few hundred numbers per text, done in NumPy whatever the backend.
        p = self.tensors
        return self.ops.to_numpy(self.ops.linear(first, p["text_projection.weight"], p["text_projection.bias"]))

    def logits(self, text_embeds: np.ndarray, image_embeds: np.ndarray) -> np.ndarray:
        # [B_t, P], [B_i, P] (normalised) -> [B_t, B_i]
        """Cosine similarities divided by the learned temperature."""
        return (text_embeds @ image_embeds.T) / self.params["temperature"]

    def __call__(self, input_ids, pixel_values, attention_mask=None, token_type_ids=None, *,
                 return_loss: bool = False, output_hidden_states: bool | None = None,
                 output_attentions: bool | None = None) -> AlignOutput:
        """``output_hidden_states`` / ``output_attentions`` None leave it to each tower's config, as
        transformers' AlignModel does (the joint config's own flags are not read, there either)."""
        vision = self.vision_model(pixel_values, output_hidden_states=output_hidden_states)
        text = self.text_model(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states,
                               output_attentions=output_attentions)
        image_embeds = l2_normalize(self.ops.to_numpy(vision.pooler_output))
        text_embeds = l2_normalize(self._project_text(text))
        logits_per_text = self.logits(text_embeds, image_embeds)
        loss = None
        if return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise ValueError(
                    f"return_loss needs as many texts as images (pair i is text i with image i); got "
                    f"{logits_per_text.shape[0]} texts and {logits_per_text.shape[1]} images"
                )
            loss = align_loss(logits_per_text)
        return AlignOutput(
            loss=loss,
            logits_per_image=logits_per_text.T,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text,
            vision_model_output=vision,
        )
